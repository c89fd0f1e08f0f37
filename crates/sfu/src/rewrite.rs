//! Per-hop RTP rewriting for one forwarded track towards one subscriber.
//!
//! Every subscriber leg is its own RTP session (RFC 3550): the SFU picks the SSRC it sends
//! with, the subscriber's SDP answer decides the payload type numbers and header-extension ids
//! (RFC 8285), and the subscriber must see one continuous sequence-number and timestamp space
//! even when the publisher's stream restarts (a new SSRC after a renegotiation) or when the
//! forwarder drops packets (waiting for a keyframe). [`RtpRewriter`] owns that state. It is pure
//! (no I/O, time passed in) and allocation-free per packet.

use crate::codec::{is_keyframe_start, vp8_ids, vp8_write_ids, CodecFamily, Vp8Ids};
use bytes::{Bytes, BytesMut};
use rtc::rtp::header::Header;
use std::time::Instant;

/// What to do with one packet after [`RtpRewriter::rewrite`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The header was rewritten in place; send it.
    Forward,
    /// Video, and the subscriber has not been given a keyframe yet: drop (the caller requests
    /// one from the publisher, throttled).
    WaitingForKeyframe,
    /// The payload type has no equivalent on the subscriber's leg: drop.
    UnmappedPayloadType,
}

/// Marks a payload type whose mapping has not been resolved yet.
const PT_UNKNOWN: u8 = 0xff;
/// Marks a payload type the subscriber did not negotiate.
const PT_NONE: u8 = 0xfe;

/// Rewriting state of one (published track → subscriber) forwarding.
#[derive(Debug)]
pub struct RtpRewriter {
    /// The SSRC this leg sends with, chosen by the SFU (unique per subscriber transport).
    out_ssrc: u32,
    codec: CodecFamily,
    /// RTP clock rate of the codec, Hz (90 000 video, 48 000 Opus).
    clock_rate: u32,
    /// Publisher payload type → subscriber payload type, [`PT_UNKNOWN`] or [`PT_NONE`].
    pt_map: [u8; 128],
    /// Publisher header-extension id → subscriber id; 0 drops the extension.
    ext_map: [u8; 256],
    /// The subscriber's id of the `sdes:mid` extension and the mid value of this leg.
    mid_ext: Option<(u8, Bytes)>,
    /// `None` until the first packet is forwarded.
    state: Option<SeqState>,
    /// The last [`Self::rewrite`] forwarded a packet that advanced the sequence (for
    /// [`Self::undo_forward`]).
    last_advanced: bool,
    waiting_for_keyframe: bool,
    /// VP8 picture-id and TL0PICIDX continuity across source switches (simulcast layers).
    vp8: Option<Vp8State>,
    /// What [`Self::rewrite_payload`] must write into the packet just rewritten.
    vp8_pending: Option<(Vp8Ids, u16, u8)>,
}

/// Offsets that map one source's VP8 picture ids (and TL0PICIDX) into the leg's continuous
/// space (RFC 7741 section 4.2; RFC 9626 calls picture-id gaps a loss).
#[derive(Debug, Clone, Copy)]
struct Vp8State {
    in_ssrc: u32,
    pic_offset: u16,
    tl0_offset: u8,
    last_out_pic: Option<u16>,
    last_out_tl0: Option<u8>,
}

#[derive(Debug, Clone, Copy)]
struct SeqState {
    in_ssrc: u32,
    seq_offset: u16,
    ts_offset: u32,
    last_out_seq: u16,
    last_out_ts: u32,
    last_out_at: Instant,
}

impl RtpRewriter {
    /// A rewriter sending with `out_ssrc`. `clock_rate` in Hz.
    pub fn new(out_ssrc: u32, codec: CodecFamily, clock_rate: u32) -> Self {
        Self {
            out_ssrc,
            codec,
            clock_rate: clock_rate.max(1),
            pt_map: [PT_UNKNOWN; 128],
            ext_map: [0; 256],
            mid_ext: None,
            state: None,
            last_advanced: false,
            waiting_for_keyframe: codec.needs_keyframe(),
            vp8: None,
            vp8_pending: None,
        }
    }

    /// The payload to send for the packet [`Self::rewrite`] just forwarded: `None` to send it
    /// unchanged (the common case: no source switch yet, so no picture-id offset), else a copy
    /// with the VP8 picture id and TL0PICIDX moved into this leg's continuous space (one
    /// allocation per packet on a leg that switched simulcast layers).
    pub fn rewrite_payload(&mut self, payload: &Bytes) -> Option<Bytes> {
        let (ids, pic, tl0) = self.vp8_pending.take()?;
        let mut b = BytesMut::from(&payload[..]);
        vp8_write_ids(&mut b, &ids, pic, tl0);
        Some(b.freeze())
    }

    /// The VP8 picture id and TL0PICIDX [`Self::rewrite_payload`] will write into the packet
    /// just rewritten (`None`: its payload goes out as received).
    pub fn vp8_rewrite(&self) -> Option<(u16, u8)> {
        self.vp8_pending.map(|(_, pic, tl0)| (pic, tl0))
    }

    /// The leg's `sdes:mid` extension: its id on the subscriber leg and this leg's mid value.
    pub fn mid_extension(&self) -> Option<(u8, &Bytes)> {
        self.mid_ext.as_ref().map(|(id, mid)| (*id, mid))
    }

    /// VP8: the leg's picture id and TL0PICIDX for this packet, continuing after the last ones
    /// sent when the source changed (a simulcast layer switch starts on a keyframe).
    fn map_vp8(&mut self, ssrc: u32, payload: &[u8]) {
        self.vp8_pending = None;
        let ids = vp8_ids(payload);
        let Some((_, wide, in_pic)) = ids.picture_id else {
            return;
        };
        let in_tl0 = ids.tl0picidx.map(|(_, t)| t);
        let mask: u16 = if wide { 0x7fff } else { 0x7f };
        let st = match self.vp8 {
            Some(s) if s.in_ssrc == ssrc => s,
            Some(prev) => Vp8State {
                in_ssrc: ssrc,
                pic_offset: prev
                    .last_out_pic
                    .map_or(0, |l| l.wrapping_add(1).wrapping_sub(in_pic) & mask),
                tl0_offset: match (prev.last_out_tl0, in_tl0) {
                    (Some(l), Some(t)) => l.wrapping_add(1).wrapping_sub(t),
                    _ => 0,
                },
                ..prev
            },
            None => Vp8State {
                in_ssrc: ssrc,
                pic_offset: 0,
                tl0_offset: 0,
                last_out_pic: None,
                last_out_tl0: None,
            },
        };
        let out_pic = in_pic.wrapping_add(st.pic_offset) & mask;
        let out_tl0 = in_tl0.map(|t| t.wrapping_add(st.tl0_offset));
        let newer = |last: Option<u16>| {
            last.is_none_or(|l| {
                let d = out_pic.wrapping_sub(l) & mask;
                d != 0 && d < mask / 2
            })
        };
        self.vp8 = Some(Vp8State {
            last_out_pic: if newer(st.last_out_pic) {
                Some(out_pic)
            } else {
                st.last_out_pic
            },
            last_out_tl0: out_tl0.or(st.last_out_tl0),
            ..st
        });
        if st.pic_offset != 0 || st.tl0_offset != 0 {
            self.vp8_pending = Some((ids, out_pic, out_tl0.unwrap_or(0)));
        }
    }

    /// The codec family of this leg (its keyframe rules).
    pub fn codec(&self) -> CodecFamily {
        self.codec
    }

    /// The SSRC this leg sends with.
    pub fn out_ssrc(&self) -> u32 {
        self.out_ssrc
    }

    /// Whether payload type `pt` of the publisher still needs [`Self::set_payload_type`].
    pub fn payload_type_unresolved(&self, pt: u8) -> bool {
        self.pt_map[(pt & 0x7f) as usize] == PT_UNKNOWN
    }

    /// Records that publisher payload type `from` is sent as `to` (`None`: not negotiated).
    pub fn set_payload_type(&mut self, from: u8, to: Option<u8>) {
        self.pt_map[(from & 0x7f) as usize] = to.map_or(PT_NONE, |t| t & 0x7f);
    }

    /// Forgets payload type and extension mappings (after either side renegotiated).
    pub fn reset_mappings(&mut self) {
        self.pt_map = [PT_UNKNOWN; 128];
        self.ext_map = [0; 256];
        self.mid_ext = None;
    }

    /// Maps publisher extension id `from` to subscriber id `to` (matched by URI by the caller).
    pub fn set_extension(&mut self, from: u8, to: u8) {
        self.ext_map[from as usize] = to;
    }

    /// Sets the `sdes:mid` extension (RFC 8843 section 15) of this leg: its id on the
    /// subscriber leg and this leg's mid value. The publisher's mid is replaced by it.
    pub fn set_mid_extension(&mut self, id: u8, mid: &str) {
        self.mid_ext = Some((id, Bytes::copy_from_slice(mid.as_bytes())));
    }

    /// Asks for a fresh start at the next keyframe (video only), e.g. after packets to this
    /// subscriber were dropped.
    pub fn request_resync(&mut self) {
        if self.codec.needs_keyframe() {
            self.waiting_for_keyframe = true;
        }
    }

    /// Whether the leg is waiting for a keyframe before it forwards anything.
    pub fn waiting_for_keyframe(&self) -> bool {
        self.waiting_for_keyframe
    }

    /// Rewrites `header` in place for this leg. `payload` is the RTP payload (for keyframe
    /// detection); `now` the arrival time (to space timestamps across a source switch).
    ///
    /// A dropped packet shifts the sequence offset so that the subscriber sees no gap (a gap
    /// would make it send NACKs for packets that were never meant for it).
    pub fn rewrite(&mut self, header: &mut Header, payload: &[u8], now: Instant) -> Verdict {
        let out_pt = self.pt_map[(header.payload_type & 0x7f) as usize];
        if out_pt == PT_NONE || out_pt == PT_UNKNOWN {
            self.absorb_drop(header);
            return Verdict::UnmappedPayloadType;
        }
        if self.waiting_for_keyframe {
            if !is_keyframe_start(self.codec, payload) {
                self.absorb_drop(header);
                return Verdict::WaitingForKeyframe;
            }
            self.waiting_for_keyframe = false;
        }

        let state = match self.state {
            Some(s) if s.in_ssrc == header.ssrc => s,
            Some(prev) => {
                // Source switch: continue right after what the subscriber saw last.
                let elapsed_ms = now.saturating_duration_since(prev.last_out_at).as_millis() as u64;
                let ts_gap = ((elapsed_ms * self.clock_rate as u64) / 1000).max(1) as u32;
                SeqState {
                    in_ssrc: header.ssrc,
                    seq_offset: prev
                        .last_out_seq
                        .wrapping_add(1)
                        .wrapping_sub(header.sequence_number),
                    ts_offset: prev
                        .last_out_ts
                        .wrapping_add(ts_gap)
                        .wrapping_sub(header.timestamp),
                    ..prev
                }
            }
            None => SeqState {
                in_ssrc: header.ssrc,
                // Start at a random point of the sequence space (RFC 3550 section 5.1).
                seq_offset: rand::random::<u16>().wrapping_sub(header.sequence_number),
                ts_offset: rand::random::<u32>().wrapping_sub(header.timestamp),
                last_out_seq: 0,
                last_out_ts: 0,
                last_out_at: now,
            },
        };

        let out_seq = header.sequence_number.wrapping_add(state.seq_offset);
        let out_ts = header.timestamp.wrapping_add(state.ts_offset);
        // Only move forward: a retransmission (older sequence number) keeps the high mark.
        let newer = self.state.is_none()
            || out_seq.wrapping_sub(state.last_out_seq) < 0x8000
            || state.in_ssrc != self.state.map_or(0, |s| s.in_ssrc);
        self.last_advanced = newer;
        self.state = Some(SeqState {
            last_out_seq: if newer { out_seq } else { state.last_out_seq },
            last_out_ts: if newer { out_ts } else { state.last_out_ts },
            last_out_at: if newer { now } else { state.last_out_at },
            ..state
        });

        if self.codec == CodecFamily::Vp8 {
            self.map_vp8(header.ssrc, payload);
        }
        header.ssrc = self.out_ssrc;
        header.payload_type = out_pt;
        header.sequence_number = out_seq;
        header.timestamp = out_ts;
        self.rewrite_extensions(header);
        Verdict::Forward
    }

    /// The caller will not send this packet to the subscriber (its transport cannot send): the
    /// leg's sequence numbers skip nothing, and video restarts on a keyframe, so the receiver
    /// never waits for a packet nobody will repair.
    pub fn skip(&mut self, header: &Header) {
        self.absorb_drop(header);
        self.request_resync();
    }

    /// The packet just rewritten with [`Verdict::Forward`] was not sent after all (the
    /// transport refused it): take its sequence number back, and restart video on a keyframe.
    pub fn undo_forward(&mut self) {
        if let Some(s) = self.state.as_mut() {
            s.seq_offset = s.seq_offset.wrapping_sub(1);
            if self.last_advanced {
                s.last_out_seq = s.last_out_seq.wrapping_sub(1);
            }
        }
        self.last_advanced = false;
        self.request_resync();
    }

    fn absorb_drop(&mut self, header: &Header) {
        if let Some(s) = self.state.as_mut() {
            if s.in_ssrc == header.ssrc {
                s.seq_offset = s.seq_offset.wrapping_sub(1);
            }
        }
    }

    fn rewrite_extensions(&mut self, header: &mut Header) {
        if !header.extension {
            return;
        }
        let mut any_dropped = false;
        // The leg's mid cannot be written in place (another length, or the publisher's packet
        // carries the extension more than once): every copy goes, the leg's mid is set once.
        let mut mid_rewrite = false;
        let mut mid_seen = false;
        for ext in header.extensions.iter_mut() {
            let to = self.ext_map[ext.id as usize];
            // Id 0 is never a valid extension id (RFC 8285 section 4.2): it marks a drop.
            ext.id = to;
            if to == 0 {
                any_dropped = true;
                continue;
            }
            if let Some((mid_id, mid)) = &self.mid_ext {
                if *mid_id == to {
                    if ext.payload.len() == mid.len() && !mid_seen {
                        ext.payload = mid.clone();
                    } else {
                        mid_rewrite = true;
                    }
                    mid_seen = true;
                }
            }
        }
        if any_dropped {
            header.extensions.retain(|e| e.id != 0);
        }
        if mid_rewrite {
            if let Some((mid_id, mid)) = self.mid_ext.clone() {
                header.extensions.retain(|e| e.id != mid_id);
                let _ = header.set_extension(mid_id, mid);
            }
        }
        // Marshalling pads the extension block to 32 bits by itself; a stale padding count
        // from the publisher's packet would only make `marshal_size` disagree with it.
        header.extensions_padding = 0;
        if header.extensions.is_empty() {
            header.extension = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtp::header::Extension;
    use std::time::Duration;

    fn header(ssrc: u32, seq: u16, ts: u32, pt: u8) -> Header {
        Header {
            version: 2,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            ..Default::default()
        }
    }

    fn audio() -> RtpRewriter {
        let mut r = RtpRewriter::new(7, CodecFamily::Opus, 48_000);
        r.set_payload_type(111, Some(109));
        r
    }

    #[test]
    fn ssrc_and_payload_type_are_rewritten_and_sequence_stays_contiguous() {
        let mut r = audio();
        let now = Instant::now();
        let mut h1 = header(1, 100, 1000, 111);
        assert_eq!(r.rewrite(&mut h1, &[], now), Verdict::Forward);
        let mut h2 = header(1, 101, 1960, 111);
        assert_eq!(r.rewrite(&mut h2, &[], now), Verdict::Forward);
        assert_eq!((h1.ssrc, h1.payload_type), (7, 109));
        assert_eq!(h2.sequence_number, h1.sequence_number.wrapping_add(1));
        assert_eq!(h2.timestamp, h1.timestamp.wrapping_add(960));
    }

    #[test]
    fn a_source_switch_continues_the_subscribers_sequence_and_timestamp() {
        let mut r = audio();
        let t0 = Instant::now();
        let mut a = header(1, 500, 90_000, 111);
        r.rewrite(&mut a, &[], t0);
        let mut b = header(2, 7, 5, 111);
        r.rewrite(&mut b, &[], t0 + Duration::from_millis(20));
        assert_eq!(b.sequence_number, a.sequence_number.wrapping_add(1));
        assert_eq!(
            b.timestamp,
            a.timestamp.wrapping_add(960),
            "20 ms at 48 kHz"
        );
        assert_eq!(b.ssrc, 7);
    }

    #[test]
    fn video_waits_for_a_keyframe_and_drops_leave_no_sequence_gap() {
        let mut r = RtpRewriter::new(9, CodecFamily::Vp8, 90_000);
        r.set_payload_type(96, Some(100));
        let now = Instant::now();
        let delta = [0x10, 0x01];
        let key = [0x10, 0x00];
        assert_eq!(
            r.rewrite(&mut header(1, 1, 0, 96), &delta, now),
            Verdict::WaitingForKeyframe
        );
        let mut k = header(1, 2, 3000, 96);
        assert_eq!(r.rewrite(&mut k, &key, now), Verdict::Forward);
        r.request_resync();
        assert_eq!(
            r.rewrite(&mut header(1, 3, 6000, 96), &delta, now),
            Verdict::WaitingForKeyframe
        );
        let mut k2 = header(1, 4, 9000, 96);
        assert_eq!(r.rewrite(&mut k2, &key, now), Verdict::Forward);
        assert_eq!(
            k2.sequence_number,
            k.sequence_number.wrapping_add(1),
            "the dropped packet left no gap"
        );
    }

    /// A VP8 packet with a 15-bit picture id and TL0PICIDX (keyframe or not).
    fn vp8(pic: u16, tl0: u8, key: bool) -> Bytes {
        Bytes::from(vec![
            0x90,
            0xc0,
            0x80 | (pic >> 8) as u8,
            pic as u8,
            tl0,
            if key { 0x00 } else { 0x01 },
        ])
    }

    fn ids_of(p: &[u8]) -> (u16, u8) {
        let ids = vp8_ids(p);
        (ids.picture_id.unwrap().2, ids.tl0picidx.unwrap().1)
    }

    #[test]
    fn a_simulcast_layer_switch_keeps_vp8_picture_ids_and_tl0picidx_continuous() {
        let mut r = RtpRewriter::new(9, CodecFamily::Vp8, 90_000);
        r.set_payload_type(96, Some(100));
        let now = Instant::now();
        // Layer A (ssrc 1): picture ids 100, 101; sent unchanged (no offset, no copy).
        for (seq, pic) in [(10u16, 100u16), (11, 101)] {
            let p = vp8(pic, 5, pic == 100);
            assert_eq!(
                r.rewrite(&mut header(1, seq, 0, 96), &p, now),
                Verdict::Forward
            );
            assert_eq!(r.rewrite_payload(&p), None);
        }
        // Switch to layer B (ssrc 2) on its keyframe, whose ids are elsewhere entirely.
        let p = vp8(30_000, 77, true);
        assert_eq!(
            r.rewrite(&mut header(2, 500, 0, 96), &p, now),
            Verdict::Forward
        );
        let out = r.rewrite_payload(&p).expect("rewritten");
        assert_eq!(ids_of(&out), (102, 6), "continues after 101 and TL0 5");
        let p = vp8(30_001, 77, false);
        r.rewrite(&mut header(2, 501, 0, 96), &p, now);
        assert_eq!(ids_of(&r.rewrite_payload(&p).unwrap()), (103, 6));
        // Back to layer A: still continuous, across the 15-bit wrap too.
        let p = vp8(0x7fff, 9, true);
        r.rewrite(&mut header(1, 12, 0, 96), &p, now);
        assert_eq!(ids_of(&r.rewrite_payload(&p).unwrap()), (104, 7));
        let p = vp8(0, 9, false);
        r.rewrite(&mut header(1, 13, 0, 96), &p, now);
        assert_eq!(ids_of(&r.rewrite_payload(&p).unwrap()), (105, 7));
    }

    #[test]
    fn skipped_and_unsent_packets_leave_no_gap_and_video_resumes_on_a_keyframe() {
        let mut r = RtpRewriter::new(9, CodecFamily::Vp8, 90_000);
        r.set_payload_type(96, Some(100));
        let now = Instant::now();
        let delta = [0x10, 0x01];
        let key = [0x10, 0x00];
        let mut k = header(1, 10, 0, 96);
        assert_eq!(r.rewrite(&mut k, &key, now), Verdict::Forward);
        let mut d = header(1, 11, 3000, 96);
        assert_eq!(r.rewrite(&mut d, &delta, now), Verdict::Forward);
        // Packet 12 is skipped (transport not sending), 13 is rewritten but the write fails.
        r.skip(&header(1, 12, 6000, 96));
        assert!(r.waiting_for_keyframe());
        let mut k2 = header(1, 13, 9000, 96);
        assert_eq!(r.rewrite(&mut k2, &key, now), Verdict::Forward);
        r.undo_forward();
        assert_eq!(
            r.rewrite(&mut header(1, 14, 12000, 96), &delta, now),
            Verdict::WaitingForKeyframe
        );
        let mut k3 = header(1, 15, 15000, 96);
        assert_eq!(r.rewrite(&mut k3, &key, now), Verdict::Forward);
        assert_eq!(
            k3.sequence_number,
            d.sequence_number.wrapping_add(1),
            "the subscriber sees 11 then 15 as consecutive"
        );
    }

    #[test]
    fn unnegotiated_payload_types_are_dropped() {
        let mut r = audio();
        r.set_payload_type(0, None);
        assert_eq!(
            r.rewrite(&mut header(1, 1, 0, 0), &[], Instant::now()),
            Verdict::UnmappedPayloadType
        );
        assert_eq!(
            r.rewrite(&mut header(1, 1, 0, 8), &[], Instant::now()),
            Verdict::UnmappedPayloadType
        );
        assert!(r.payload_type_unresolved(8));
    }

    #[test]
    fn extension_ids_are_translated_and_unknown_ones_removed() {
        let mut r = audio();
        r.set_extension(1, 4); // e.g. ssrc-audio-level: 1 on the publisher, 4 on the subscriber
        r.set_extension(3, 9); // sdes:mid
        r.set_mid_extension(9, "7");
        let mut h = header(1, 1, 0, 111);
        h.extension = true;
        h.extension_profile = 0xBEDE;
        h.extensions = vec![
            Extension {
                id: 1,
                payload: Bytes::from_static(&[0x80]),
            },
            Extension {
                id: 2,
                payload: Bytes::from_static(&[0, 1]),
            }, // transport-cc: dropped
            Extension {
                id: 3,
                payload: Bytes::from_static(b"0"),
            },
        ];
        assert_eq!(r.rewrite(&mut h, &[], Instant::now()), Verdict::Forward);
        let ids: Vec<u8> = h.extensions.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![4, 9]);
        assert_eq!(h.extensions[1].payload.as_ref(), b"7");
    }
}
