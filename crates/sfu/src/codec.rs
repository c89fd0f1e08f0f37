//! Codec knowledge the forwarder needs: which codecs the server negotiates, and whether an RTP
//! payload starts a keyframe (so a new subscriber, or one that lost packets, can be started
//! cleanly instead of being fed undecodable deltas).

/// The codec of a forwarded stream, as far as the forwarder cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodecFamily {
    /// Opus audio (RFC 7587): every packet is independently decodable.
    Opus,
    /// VP8 (RFC 7741).
    Vp8,
    /// VP9 (RFC 9628).
    Vp9,
    /// H.264 (RFC 6184).
    H264,
    /// Anything else: forwarded without keyframe gating.
    Other,
}

impl CodecFamily {
    /// Classifies a MIME type such as `video/VP8` (case-insensitive).
    pub fn from_mime(mime: &str) -> Self {
        let sub = mime.rsplit('/').next().unwrap_or("");
        if sub.eq_ignore_ascii_case("opus") {
            Self::Opus
        } else if sub.eq_ignore_ascii_case("vp8") {
            Self::Vp8
        } else if sub.eq_ignore_ascii_case("vp9") {
            Self::Vp9
        } else if sub.eq_ignore_ascii_case("h264") {
            Self::H264
        } else {
            Self::Other
        }
    }

    /// Whether the forwarder must wait for a keyframe before it starts a subscriber.
    pub fn needs_keyframe(self) -> bool {
        matches!(self, Self::Vp8 | Self::Vp9 | Self::H264)
    }
}

/// Whether `payload` (the RTP payload, after the RTP header) is the first packet of a keyframe.
///
/// - VP8 (RFC 7741 section 4.2/4.3): start of partition 0 (`S=1`, `PID=0`) and the VP8 frame
///   header's inverse key frame bit `P` is 0.
/// - VP9 (RFC 9628 section 4.2): `B=1` (start of frame) and `P=0` (not inter-predicted).
/// - H.264 (RFC 6184 section 5): an IDR slice (NAL type 5) or SPS (7), alone, inside a STAP-A
///   (24) or at the start of a FU-A (28).
///
/// Opus and unknown codecs return `true` (every packet is a fine starting point).
pub fn is_keyframe_start(codec: CodecFamily, payload: &[u8]) -> bool {
    match codec {
        CodecFamily::Vp8 => vp8_keyframe(payload),
        CodecFamily::Vp9 => vp9_keyframe(payload),
        CodecFamily::H264 => h264_keyframe(payload),
        CodecFamily::Opus | CodecFamily::Other => true,
    }
}

fn vp8_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let extended = b0 & 0x80 != 0;
    let start = b0 & 0x10 != 0;
    let pid = b0 & 0x07;
    if !start || pid != 0 {
        return false;
    }
    let mut i = 1;
    if extended {
        let Some(&x) = p.get(i) else { return false };
        i += 1;
        if x & 0x80 != 0 {
            // I: PictureID, 7 or 15 bits.
            let Some(&pic) = p.get(i) else { return false };
            i += if pic & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // L: TL0PICIDX
        }
        if x & 0x20 != 0 || x & 0x10 != 0 {
            i += 1; // T/K: TID/KEYIDX byte
        }
    }
    p.get(i).is_some_and(|h| h & 0x01 == 0)
}

fn vp9_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let inter_predicted = b0 & 0x40 != 0;
    let begin = b0 & 0x08 != 0;
    begin && !inter_predicted
}

fn h264_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    match b0 & 0x1f {
        5 | 7 => true,
        24 => {
            // STAP-A: [hdr][size16][nal]...
            let mut i = 1;
            while i + 2 < p.len() {
                let size = u16::from_be_bytes([p[i], p[i + 1]]) as usize;
                let nal = p[i + 2] & 0x1f;
                if nal == 5 || nal == 7 {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        28 => p
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && (fu & 0x1f == 5 || fu & 0x1f == 7)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframe_is_detected_with_and_without_extensions() {
        // S=1, PID=0, no X; VP8 header byte with P=0.
        assert!(is_keyframe_start(CodecFamily::Vp8, &[0x10, 0x00]));
        // P=1: an interframe.
        assert!(!is_keyframe_start(CodecFamily::Vp8, &[0x10, 0x01]));
        // X=1, I=1 with a 15-bit picture id, then the frame header.
        assert!(is_keyframe_start(
            CodecFamily::Vp8,
            &[0x90, 0x80, 0x81, 0x23, 0x00]
        ));
        // Not the start of a partition.
        assert!(!is_keyframe_start(CodecFamily::Vp8, &[0x00, 0x00]));
        assert!(!is_keyframe_start(CodecFamily::Vp8, &[]));
    }

    #[test]
    fn h264_idr_sps_stap_and_fu_a_starts_are_keyframes() {
        assert!(is_keyframe_start(CodecFamily::H264, &[0x65]));
        assert!(is_keyframe_start(CodecFamily::H264, &[0x67]));
        assert!(!is_keyframe_start(CodecFamily::H264, &[0x41]));
        assert!(is_keyframe_start(
            CodecFamily::H264,
            &[0x78, 0x00, 0x01, 0x67, 0x00, 0x01, 0x68]
        ));
        assert!(is_keyframe_start(CodecFamily::H264, &[0x7c, 0x85]));
        assert!(!is_keyframe_start(CodecFamily::H264, &[0x7c, 0x05]));
    }

    #[test]
    fn vp9_start_of_non_predicted_frame_is_a_keyframe() {
        assert!(is_keyframe_start(CodecFamily::Vp9, &[0x08]));
        assert!(!is_keyframe_start(CodecFamily::Vp9, &[0x48]));
    }

    #[test]
    fn audio_never_waits() {
        assert!(is_keyframe_start(CodecFamily::Opus, &[]));
        assert!(!CodecFamily::from_mime("audio/opus").needs_keyframe());
        assert!(CodecFamily::from_mime("video/vp8").needs_keyframe());
    }
}
