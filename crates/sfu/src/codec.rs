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

/// Where a VP8 payload descriptor (RFC 7741 section 4.2) carries its picture id and TL0PICIDX,
/// and their values: what a forwarder rewrites so that a subscriber switched from one simulcast
/// layer to another sees one continuous picture-id space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Ids {
    /// `(byte offset, 15-bit (M=1) or 7-bit, value)` of the picture id, when present.
    pub picture_id: Option<(usize, bool, u16)>,
    /// `(byte offset, value)` of TL0PICIDX, when present.
    pub tl0picidx: Option<(usize, u8)>,
}

/// Reads the picture id and TL0PICIDX of a VP8 payload descriptor (RFC 7741 section 4.2); both
/// `None` when absent or the payload is too short.
pub fn vp8_ids(p: &[u8]) -> Vp8Ids {
    let mut out = Vp8Ids::default();
    let Some(&b0) = p.first() else { return out };
    if b0 & 0x80 == 0 {
        return out;
    }
    let Some(&x) = p.get(1) else { return out };
    let mut i = 2;
    if x & 0x80 != 0 {
        let Some(&hi) = p.get(i) else { return out };
        if hi & 0x80 != 0 {
            let Some(&lo) = p.get(i + 1) else { return out };
            out.picture_id = Some((i, true, (u16::from(hi & 0x7f) << 8) | u16::from(lo)));
            i += 2;
        } else {
            out.picture_id = Some((i, false, u16::from(hi)));
            i += 1;
        }
    }
    if x & 0x40 != 0 {
        if let Some(&t) = p.get(i) {
            out.tl0picidx = Some((i, t));
        }
    }
    out
}

/// Writes `picture_id` and `tl0picidx` where [`vp8_ids`] found them in `p` (the same payload,
/// copied): a 7-bit picture id keeps its width (the value wraps at 128).
pub fn vp8_write_ids(p: &mut [u8], ids: &Vp8Ids, picture_id: u16, tl0picidx: u8) {
    if let Some((at, wide, _)) = ids.picture_id {
        if wide && at + 1 < p.len() {
            p[at] = 0x80 | ((picture_id >> 8) as u8 & 0x7f);
            p[at + 1] = picture_id as u8;
        } else if !wide && at < p.len() {
            p[at] = picture_id as u8 & 0x7f;
        }
    }
    if let Some((at, _)) = ids.tl0picidx {
        if at < p.len() {
            p[at] = tl0picidx;
        }
    }
}

/// The frame size of a VP8 keyframe's first packet (RFC 6386 section 9.1: after the 3-byte
/// frame tag, the start code `9d 01 2a`, then 14-bit width and height, little-endian), or
/// `None` when `p` is not one.
pub fn vp8_keyframe_size(p: &[u8]) -> Option<(u16, u16)> {
    if !vp8_keyframe(p) {
        return None;
    }
    let b0 = p[0];
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let x = *p.get(1)?;
        i = 2;
        if x & 0x80 != 0 {
            i += if p.get(i)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    let h = p.get(i..i + 10)?;
    if h[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([h[6], h[7]]) & 0x3fff;
    let ht = u16::from_le_bytes([h[8], h[9]]) & 0x3fff;
    Some((w, ht))
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
    fn vp8_picture_id_and_tl0picidx_are_read_and_rewritten_in_place() {
        // X=1, S=1; I=1, L=1, T=1; 15-bit picture id 0x1234; TL0PICIDX 7; TID byte; frame.
        let mut p = vec![0x90, 0xe0, 0x80 | 0x12, 0x34, 7, 0x40, 0x00];
        let ids = vp8_ids(&p);
        assert_eq!(ids.picture_id, Some((2, true, 0x1234)));
        assert_eq!(ids.tl0picidx, Some((4, 7)));
        vp8_write_ids(&mut p, &ids, 0x7fff, 200);
        assert_eq!(p, vec![0x90, 0xe0, 0xff, 0xff, 200, 0x40, 0x00]);
        // 7-bit picture id, no TL0PICIDX.
        let mut q = vec![0x90, 0x80, 0x05, 0x00];
        let ids = vp8_ids(&q);
        assert_eq!(ids.picture_id, Some((2, false, 5)));
        vp8_write_ids(&mut q, &ids, 130, 0);
        assert_eq!(q[2], 2, "wraps at 128");
        // No X: nothing to rewrite; truncated descriptors read as absent.
        assert_eq!(vp8_ids(&[0x10, 0x00]), Vp8Ids::default());
        assert_eq!(vp8_ids(&[0x90, 0x80]).picture_id, None);
    }

    #[test]
    fn a_vp8_keyframe_tells_its_size() {
        // Descriptor (X, I 15-bit), frame tag with P=0, start code, 640 x 360.
        let mut p = vec![0x90, 0x80, 0x80, 0x01, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        p.extend_from_slice(&640u16.to_le_bytes());
        p.extend_from_slice(&360u16.to_le_bytes());
        assert_eq!(vp8_keyframe_size(&p), Some((640, 360)));
        p[4] |= 1; // an interframe
        assert_eq!(vp8_keyframe_size(&p), None);
        assert_eq!(vp8_keyframe_size(&[0x10, 0x00, 0x00]), None);
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
