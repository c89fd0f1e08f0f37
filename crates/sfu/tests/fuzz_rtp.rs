//! Fuzz targets for what the media plane does with RTP it receives: codec inspection
//! (`codec.rs`: keyframe detection, VP8 descriptors), per-leg rewriting (`rewrite.rs`) and loss
//! repair (`retransmit.rs`). Stable Rust, run by `cargo test` for `FUZZ_SECONDS` each (see
//! `crates/fuzz`); payload seeds in `tests/fuzz/payload` (RFC 7741/9628/6184 packetization of
//! frames Chromium 156's encoders produced, see its README).

use bytes::Bytes;
use confab_fuzz::proptest;
use confab_fuzz::proptest::collection::vec;
use confab_fuzz::proptest::prelude::*;
use confab_fuzz::{corpus, fuzz, fuzz_bytes, hit, mutated, Input};
use confab_sfu::codec::{
    is_keyframe_start, vp8_ids, vp8_keyframe_size, vp8_write_ids, CodecFamily,
};
use confab_sfu::retransmit::{
    rebuild, CachedPacket, NackAnswer, PacketCache, Resendable, SentLog, SentPacket,
    MAX_RETRANSMIT_AGE, RETRANSMIT_BURST, RETRANSMIT_HOLDOFF,
};
use confab_sfu::rewrite::{RtpRewriter, Verdict};
use confab_sfu::MediaKind;
use rtc::rtp::header::{Extension, Header};
use rtc::shared::marshal::{Marshal, Unmarshal};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const PAYLOADS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz/payload");

const CODECS: [CodecFamily; 5] = [
    CodecFamily::Opus,
    CodecFamily::Vp8,
    CodecFamily::Vp9,
    CodecFamily::H264,
    CodecFamily::Other,
];

/// Payload descriptor bytes and NAL headers worth inserting.
const PAYLOAD_DICT: &[&[u8]] = &[
    &[0x90, 0x80],
    &[0x90, 0xe0],
    &[0x80, 0xff],
    &[0x9d, 0x01, 0x2a],
    &[0x78, 0x00, 0x00],
    &[0x7c, 0x85],
    &[0x18, 0xff, 0xff],
    &[0xff, 0xff],
];

/// Checks `vp8_ids` on `p`, then that writing ids back where it found them and reading again
/// gives the written values (masked to the field width) and changes nothing else.
fn check_vp8_ids(p: &[u8], pic: u16, tl0: u8) {
    let ids = vp8_ids(p);
    if let Some((at, wide, v)) = ids.picture_id {
        hit("vp8_picture_id");
        assert!(at + usize::from(wide) < p.len(), "picture id inside {p:?}");
        assert!(v <= if wide { 0x7fff } else { 0x7f });
    }
    if let Some((at, _)) = ids.tl0picidx {
        hit("vp8_tl0picidx");
        assert!(at < p.len());
        if let Some((pat, wide, _)) = ids.picture_id {
            assert!(
                at > pat + usize::from(wide),
                "TL0PICIDX after the picture id"
            );
        }
    }
    let mut q = p.to_vec();
    vp8_write_ids(&mut q, &ids, pic, tl0);
    let again = vp8_ids(&q);
    assert_eq!(
        again.picture_id.map(|(a, w, _)| (a, w)),
        ids.picture_id.map(|(a, w, _)| (a, w)),
        "same layout after writing"
    );
    if let Some((_, wide, v)) = again.picture_id {
        assert_eq!(v, pic & if wide { 0x7fff } else { 0x7f });
    }
    if let Some((at, v)) = again.tl0picidx {
        assert_eq!(Some(at), ids.tl0picidx.map(|(a, _)| a));
        assert_eq!(v, tl0);
    }
    // Nothing but the id bytes changed.
    let mut touched = vec![false; p.len()];
    if let Some((at, wide, _)) = ids.picture_id {
        touched[at] = true;
        if wide {
            touched[at + 1] = true;
        }
    }
    if let Some((at, _)) = ids.tl0picidx {
        touched[at] = true;
    }
    for (i, (a, b)) in p.iter().zip(&q).enumerate() {
        if !touched[i] {
            assert_eq!(a, b, "byte {i} changed");
        }
    }
    // Rewriting ids never changes what the packet is.
    assert_eq!(
        is_keyframe_start(CodecFamily::Vp8, p),
        is_keyframe_start(CodecFamily::Vp8, &q)
    );
}

/// Any RTP payload, for every codec: keyframe detection never panics and agrees with
/// `vp8_keyframe_size`; VP8 descriptor ids stay inside the payload and round-trip through
/// `vp8_write_ids`.
#[test]
fn fuzz_codec_payload() {
    fuzz_bytes("codec_payload", PAYLOADS, PAYLOAD_DICT, 1500, |p| {
        for codec in CODECS {
            let key = is_keyframe_start(codec, p);
            if !codec.needs_keyframe() {
                assert!(key, "{codec:?} never waits");
            } else if key {
                hit(match codec {
                    CodecFamily::Vp8 => "vp8_key",
                    CodecFamily::Vp9 => "vp9_key",
                    _ => "h264_key",
                });
            }
        }
        if let Some((w, h)) = vp8_keyframe_size(p) {
            hit("vp8_size");
            assert!(is_keyframe_start(CodecFamily::Vp8, p));
            assert!(w <= 0x3fff && h <= 0x3fff);
        }
        let n = p.len();
        check_vp8_ids(p, n as u16 ^ 0x5a5a, n as u8);
    });
}

// ------------------------------------------------------------------------- RtpRewriter

const SSRCS: [u32; 3] = [0x1111_1111, 0x2222_2222, 0x3333_3333];
const OUT_SSRC: u32 = 0xabcd_0001;

fn payloads() -> BoxedStrategy<Vec<u8>> {
    mutated(corpus(PAYLOADS), PAYLOAD_DICT, 1200)
}

/// An RTP header as `rtc` parses it from a publisher's packet: one-byte (ids 1–14, 1–16
/// bytes) or two-byte (ids 1–255, 0–255 bytes) extensions.
fn header() -> impl Strategy<Value = Header> {
    let one_byte = vec((1u8..=14, vec(any::<u8>(), 1..=16)), 0..5).prop_map(|e| (0xBEDE, e));
    let two_byte = vec((1u8..=255, vec(any::<u8>(), 0..=32)), 0..5).prop_map(|e| (0x1000, e));
    (
        0..SSRCS.len(),
        any::<u16>(),
        any::<u32>(),
        prop_oneof![3 => Just(96u8), 1 => Just(97u8), 2 => Just(111u8), 1 => 0u8..128],
        any::<bool>(),
        prop_oneof![one_byte, two_byte],
    )
        .prop_map(|(s, seq, ts, pt, marker, (profile, ext))| Header {
            version: 2,
            marker,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc: SSRCS[s],
            extension: !ext.is_empty(),
            extension_profile: profile,
            extensions: ext
                .into_iter()
                .map(|(id, p)| Extension {
                    id,
                    payload: Bytes::from(p),
                })
                .collect(),
            ..Default::default()
        })
}

#[derive(Debug, Clone)]
enum Op {
    Packet(Header, Vec<u8>),
    Skip(Header),
    Undo,
    Resync,
    /// Publisher payload type → subscriber one (`None`: not negotiated).
    SetPt(u8, Option<u8>),
    /// Publisher extension id → subscriber id (1–14: what the server's own offer negotiates).
    SetExt(u8, u8),
    SetMid(u8, String),
    Reset,
    Wait(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (header(), payloads()).prop_map(|(h, p)| Op::Packet(h, p)),
        1 => header().prop_map(Op::Skip),
        1 => Just(Op::Undo),
        1 => Just(Op::Resync),
        3 => (prop_oneof![Just(96u8), Just(97u8), Just(111u8), any::<u8>()], proptest::option::of(0u8..128))
            .prop_map(|(f, t)| Op::SetPt(f, t)),
        3 => (any::<u8>(), 1u8..=14).prop_map(|(f, t)| Op::SetExt(f, t)),
        1 => (1u8..=14, "[0-9a-z]{1,16}").prop_map(|(id, mid)| Op::SetMid(id, mid)),
        1 => Just(Op::Reset),
        2 => any::<u16>().prop_map(Op::Wait),
    ]
}

fn codec() -> impl Strategy<Value = CodecFamily> {
    proptest::sample::select(CODECS.to_vec())
}

/// Any sequence of packets (any order, sources, payload types, extensions, payloads) and
/// control calls: never panics; what is forwarded carries the leg's SSRC, the mapped payload
/// type, only mapped extension ids (the leg's mid where the `sdes:mid` extension goes), and
/// marshals and parses back; a rewritten payload keeps its length and carries the ids
/// announced by `vp8_rewrite`; a leg waiting for a keyframe forwards only a keyframe start.
#[test]
fn fuzz_rewriter_ops() {
    fuzz(
        "rewriter_ops",
        (
            codec(),
            // The mappings negotiation usually leaves: the common payload types and a few
            // extensions mapped before the first packet.
            proptest::option::weighted(0.8, (100u8..128, 100u8..128, 100u8..128)),
            vec((1u8..=14, 1u8..=14), 0..6),
            vec(op(), 1..64),
        ),
        |(codec, pts, exts, ops)| {
            let mut rw = RtpRewriter::new(OUT_SSRC, codec, 90_000);
            let mut pt_map: HashMap<u8, Option<u8>> = HashMap::new();
            let mut ext_map: HashMap<u8, u8> = HashMap::new();
            let mut mid: Option<(u8, String)> = None;
            let mut now = Instant::now();
            if let Some((a, b, c)) = pts {
                for (from, to) in [(96, a), (97, b), (111, c)] {
                    rw.set_payload_type(from, Some(to));
                    pt_map.insert(from, Some(to));
                }
            }
            for (from, to) in exts {
                rw.set_extension(from, to);
                ext_map.insert(from, to);
            }
            for op in ops {
                match op {
                    Op::Packet(mut h, payload) => {
                        let before = h.clone();
                        let waiting = rw.waiting_for_keyframe();
                        let verdict = rw.rewrite(&mut h, &payload, now);
                        let mapped = pt_map.get(&(before.payload_type & 0x7f)).copied().flatten();
                        match verdict {
                            Verdict::UnmappedPayloadType => {
                                hit("unmapped");
                                assert!(mapped.is_none());
                                continue;
                            }
                            Verdict::WaitingForKeyframe => {
                                hit("waiting");
                                assert!(codec.needs_keyframe() && waiting);
                                assert!(!is_keyframe_start(codec, &payload));
                                continue;
                            }
                            Verdict::Forward => hit("forward"),
                        }
                        assert!(!waiting || is_keyframe_start(codec, &payload));
                        assert!(!rw.waiting_for_keyframe());
                        assert_eq!(h.ssrc, OUT_SSRC);
                        assert_eq!(Some(h.payload_type), mapped);
                        assert_eq!(h.marker, before.marker);
                        assert_eq!(h.extension, !h.extensions.is_empty());
                        for e in &h.extensions {
                            assert_ne!(e.id, 0);
                            let from_map = before
                                .extensions
                                .iter()
                                .any(|b| ext_map.get(&b.id) == Some(&e.id));
                            let is_mid = mid.as_ref().is_some_and(|(id, _)| *id == e.id);
                            assert!(from_map || is_mid, "extension {} was not mapped", e.id);
                            if let Some((id, m)) = &mid {
                                if *id == e.id {
                                    assert_eq!(&e.payload[..], m.as_bytes(), "the leg's mid");
                                }
                            }
                        }
                        if before.extension_profile == 0xBEDE {
                            let raw = h.marshal().expect("a forwarded header marshals");
                            let back = Header::unmarshal(&mut &raw[..]).expect("and parses");
                            assert_eq!(back.ssrc, h.ssrc);
                            assert_eq!(back.sequence_number, h.sequence_number);
                            assert_eq!(back.timestamp, h.timestamp);
                            assert_eq!(back.payload_type, h.payload_type);
                            assert_eq!(back.extensions, h.extensions);
                        }
                        let announced = rw.vp8_rewrite();
                        let payload = Bytes::from(payload);
                        match rw.rewrite_payload(&payload) {
                            Some(out) => {
                                hit("payload_rewritten");
                                assert_eq!(codec, CodecFamily::Vp8);
                                assert_eq!(out.len(), payload.len());
                                let (pic, _) = announced.expect("announced");
                                let ids = vp8_ids(&out);
                                if let Some((_, wide, v)) = ids.picture_id {
                                    assert_eq!(v, pic & if wide { 0x7fff } else { 0x7f });
                                }
                            }
                            None => assert!(announced.is_none()),
                        }
                    }
                    Op::Skip(h) => rw.skip(&h),
                    Op::Undo => rw.undo_forward(),
                    Op::Resync => {
                        rw.request_resync();
                        assert_eq!(rw.waiting_for_keyframe(), codec.needs_keyframe());
                    }
                    Op::SetPt(from, to) => {
                        rw.set_payload_type(from, to);
                        pt_map.insert(from & 0x7f, to.map(|t| t & 0x7f));
                        assert!(!rw.payload_type_unresolved(from));
                    }
                    Op::SetExt(from, to) => {
                        rw.set_extension(from, to);
                        ext_map.insert(from, to);
                    }
                    Op::SetMid(id, m) => {
                        rw.set_mid_extension(id, &m);
                        mid = Some((id, m));
                    }
                    Op::Reset => {
                        rw.reset_mappings();
                        pt_map.clear();
                        ext_map.clear();
                        mid = None;
                    }
                    Op::Wait(ms) => now += Duration::from_millis(u64::from(ms)),
                }
            }
        },
    );
}

/// Regression (`rewriter_ops`, long run): a publisher's packet carrying the `sdes:mid`
/// extension three times, two of the leg's mid length and one not, went out with the
/// publisher's bytes still in one mid extension.
#[test]
fn regress_a_repeated_mid_extension_leaves_only_the_legs_mid() {
    let mut rw = RtpRewriter::new(OUT_SSRC, CodecFamily::Opus, 48_000);
    rw.set_payload_type(96, Some(100));
    rw.set_extension(3, 1);
    rw.set_mid_extension(1, "a");
    let ext = |p: &'static [u8]| Extension {
        id: 3,
        payload: Bytes::from_static(p),
    };
    let mut h = Header {
        version: 2,
        payload_type: 96,
        ssrc: SSRCS[0],
        extension: true,
        extension_profile: 0xBEDE,
        extensions: vec![ext(b"\0"), ext(b"\0"), ext(b"\0\0")],
        ..Default::default()
    };
    assert_eq!(
        rw.rewrite(&mut h, &[0xfc], Instant::now()),
        Verdict::Forward
    );
    assert_eq!(
        h.extensions,
        vec![Extension {
            id: 1,
            payload: Bytes::from_static(b"a")
        }]
    );
}

/// One event of [`fuzz_rewriter_streams`]: a packet of source `src` (its next sequence
/// number, a new frame), or a control call.
#[derive(Debug, Clone)]
enum Ev {
    /// Source, keyframe start or not, payload type negotiated or not, RTP ticks since the
    /// source's previous packet.
    Packet(usize, bool, bool, u16),
    /// The next packet of the source is not sent (`RtpRewriter::skip`).
    Skip(usize),
    /// The packet just forwarded was not sent after all.
    Undo,
    Resync,
    Wait(u16),
}

/// Sources sending in order (each its own consecutive sequence numbers, frame after frame),
/// interleaved at random, with drops (unnegotiated payload type, waiting for a keyframe,
/// skips, undone sends) and source switches: the subscriber sees consecutive sequence numbers
/// (no gap, no repeat), timestamps that never go back and move forward at a switch, and
/// (VP8) picture ids that increase.
#[test]
fn fuzz_rewriter_streams() {
    let key = vp8_frame(true);
    let delta = vp8_frame(false);
    let ev = prop_oneof![
        12 => (0..SSRCS.len(), any::<bool>(), proptest::bool::weighted(0.9), 0u16..6000)
            .prop_map(|(s, k, m, t)| Ev::Packet(s, k, m, t)),
        1 => (0..SSRCS.len()).prop_map(Ev::Skip),
        1 => Just(Ev::Undo),
        1 => Just(Ev::Resync),
        2 => any::<u16>().prop_map(Ev::Wait),
    ];
    fuzz(
        "rewriter_streams",
        (
            prop_oneof![
                Just(CodecFamily::Vp8),
                Just(CodecFamily::Opus),
                Just(CodecFamily::H264)
            ],
            [any::<u16>(), any::<u16>(), any::<u16>()],
            [any::<u32>(), any::<u32>(), any::<u32>()],
            [any::<u16>(), any::<u16>(), any::<u16>()],
            vec(ev, 1..200),
        ),
        |(codec, mut seq, mut ts, mut pic, evs)| {
            let mut rw = RtpRewriter::new(OUT_SSRC, codec, 90_000);
            rw.set_payload_type(96, Some(100));
            rw.set_payload_type(127, None);
            let mut now = Instant::now();
            // (seq, ts, picture id, source) of the packets the subscriber got.
            let mut sent: Vec<(u16, u32, Option<u16>, usize)> = Vec::new();
            let mut last_forwarded: Option<(u16, u32, Option<u16>, usize)> = None;
            for ev in evs {
                match ev {
                    Ev::Packet(s, keyframe, mapped, ticks) => {
                        ts[s] = ts[s].wrapping_add(u32::from(ticks));
                        pic[s] = pic[s].wrapping_add(1) & 0x7fff;
                        let payload = match codec {
                            CodecFamily::Vp8 => {
                                let mut p = if keyframe { key.clone() } else { delta.clone() };
                                p[2] = 0x80 | (pic[s] >> 8) as u8;
                                p[3] = pic[s] as u8;
                                p
                            }
                            // IDR slice / non-IDR slice.
                            CodecFamily::H264 => {
                                vec![if keyframe { 0x65 } else { 0x41 }, 0x88, 0x80]
                            }
                            _ => vec![0xfc, 0xff, 0xfe],
                        };
                        let mut h = Header {
                            version: 2,
                            payload_type: if mapped { 96 } else { 127 },
                            sequence_number: seq[s],
                            timestamp: ts[s],
                            ssrc: SSRCS[s],
                            ..Default::default()
                        };
                        seq[s] = seq[s].wrapping_add(1);
                        if rw.rewrite(&mut h, &payload, now) != Verdict::Forward {
                            last_forwarded = None;
                            continue;
                        }
                        let p = Bytes::from(payload);
                        let out = rw.rewrite_payload(&p).unwrap_or(p);
                        let out_pic = (codec == CodecFamily::Vp8)
                            .then(|| vp8_ids(&out).picture_id.map(|(_, _, v)| v))
                            .flatten();
                        let this = (h.sequence_number, h.timestamp, out_pic, s);
                        if let Some(&(pseq, pts, ppic, psrc)) = sent.last() {
                            hit(if psrc == s { "same_source" } else { "switch" });
                            assert_eq!(this.0, pseq.wrapping_add(1), "consecutive after {sent:?}");
                            let dt = this.1.wrapping_sub(pts) as i32;
                            assert!(dt >= 0, "timestamp went back by {dt}");
                            if psrc != s {
                                assert!(dt > 0, "a switch moves the timestamp forward");
                            }
                            if let (Some(a), Some(b)) = (ppic, out_pic) {
                                let d = b.wrapping_sub(a) & 0x7fff;
                                assert!((1..0x4000).contains(&d), "picture id {a} then {b}");
                            }
                        }
                        sent.push(this);
                        last_forwarded = Some(this);
                    }
                    Ev::Skip(s) => {
                        let h = Header {
                            version: 2,
                            payload_type: 96,
                            sequence_number: seq[s],
                            timestamp: ts[s],
                            ssrc: SSRCS[s],
                            ..Default::default()
                        };
                        seq[s] = seq[s].wrapping_add(1);
                        pic[s] = pic[s].wrapping_add(1) & 0x7fff;
                        rw.skip(&h);
                        last_forwarded = None;
                    }
                    Ev::Undo => {
                        // Only right after a forward, as the worker does.
                        if let Some(f) = last_forwarded.take() {
                            rw.undo_forward();
                            assert_eq!(sent.pop(), Some(f));
                            hit("undo");
                        }
                    }
                    Ev::Resync => {
                        rw.request_resync();
                        last_forwarded = None;
                    }
                    Ev::Wait(ms) => now += Duration::from_millis(u64::from(ms)),
                }
            }
        },
    );
}

/// A VP8 payload of Chromium's (15-bit picture id at bytes 2–3).
fn vp8_frame(key: bool) -> Vec<u8> {
    let name = if key {
        "vp8-key-pictureid15.bin"
    } else {
        "vp8-delta-start.bin"
    };
    let p = std::fs::read(format!("{PAYLOADS}/{name}")).expect("seed");
    assert_eq!(is_keyframe_start(CodecFamily::Vp8, &p), key);
    assert!(matches!(vp8_ids(&p).picture_id, Some((2, true, _))));
    p
}

// ------------------------------------------------------------------------- retransmit

#[derive(Debug, Clone)]
enum RtxOp {
    /// The source's next packet into the cache (its sequence number jumps by the second
    /// field when that is over 250: a restarted stream), marker.
    Cache(usize, u16, bool),
    /// Look up a packet that many before the source's latest.
    Get(usize, u16),
    /// The downtrack sent its next packet (the out sequence number jumps by the first field
    /// when it is over 250: a new leg) for source packet (source, seq).
    Record(u16, usize, u16, Option<(u16, u8)>),
    /// The subscriber NACKs `n` packets from `back` before the latest one sent (a generic NACK
    /// names up to 17); `resend`: the caller sends each answered one again.
    Nack(u16, u8, bool),
    Wait(u16),
}

/// What the model remembers of one sent packet: (out seq, source SSRC, source seq, out ts,
/// out pt, vp8), when first sent, when last sent again, whether NACKed.
type Sent = (
    (u16, u32, u16, u32, u8, Option<(u16, u8)>),
    Instant,
    Option<Instant>,
    bool,
);

/// `PacketCache` and `SentLog` under any sequence of packets, NACKs and time: a cached packet
/// is returned only for its own stream and sequence number, and is the latest one stored
/// there; a NACK is answered exactly by the module's rules (unknown, stale after
/// `MAX_RETRANSMIT_AGE`, resting for `RETRANSMIT_HOLDOFF`, over the credit of
/// `RETRANSMIT_BURST` plus half a packet per packet forwarded); the rebuilt packet is the one
/// the subscriber missed, and marshals.
#[test]
fn fuzz_retransmit() {
    fuzz(
        "retransmit",
        (
            prop_oneof![Just(MediaKind::Audio), Just(MediaKind::Video)],
            any::<u16>(),
            vec(
                prop_oneof![
                    4 => (prop_oneof![5 => 0usize..4, 1 => 0usize..6], 0u16..260, any::<bool>()).prop_map(|(s, q, m)| RtxOp::Cache(s, q, m)),
                    3 => (0usize..6, prop_oneof![3 => 0u16..64, 1 => 0u16..300]).prop_map(|(s, q)| RtxOp::Get(s, q)),
                    8 => (0u16..260, 0usize..6, any::<u16>(), proptest::option::of((0u16..0x8000, any::<u8>())))
                        .prop_map(|(o, s, q, v)| RtxOp::Record(o, s, q, v)),
                    8 => (prop_oneof![3 => 0u16..48, 1 => 0u16..400], 1u8..=17, proptest::bool::weighted(0.9)).prop_map(|(o, n, r)| RtxOp::Nack(o, n, r)),
                    2 => prop_oneof![9 => 0u16..30, 1 => 0u16..1500].prop_map(RtxOp::Wait),
                ],
                1..400,
            ),
        ),
        |(kind, base, ops)| {
            let mut last_out = base;
            let cap = match kind {
                MediaKind::Audio => 64usize,
                MediaKind::Video => 256,
            };
            let ssrc = |s: usize| 0x5000 + s as u32;
            let mut last_cached = [base; 6];
            let mut now = Instant::now();
            let mut cache = PacketCache::new(kind);
            let mut cached: HashMap<(u32, u16), u64> = HashMap::new();
            let mut next_payload = 0u64;
            let mut log = SentLog::new(kind);
            let mut slots: Vec<Option<Sent>> = vec![None; cap];
            // Half packets of retransmission allowed.
            let mut credit = 2 * RETRANSMIT_BURST;
            for op in ops {
                match op {
                    RtxOp::Cache(s, jump, marker) => {
                        last_cached[s] =
                            last_cached[s].wrapping_add(if jump > 250 { jump * 89 } else { 1 });
                        let q = last_cached[s];
                        next_payload += 1;
                        let h = Header {
                            version: 2,
                            ssrc: ssrc(s),
                            sequence_number: q,
                            marker,
                            ..Default::default()
                        };
                        cache.insert(&h, &Bytes::from(next_payload.to_be_bytes().to_vec()), now);
                        cached.insert((ssrc(s), q), next_payload);
                        let got = cache.get(ssrc(s), q).expect("just stored");
                        assert_eq!(got.marker, marker);
                    }
                    RtxOp::Get(s, back) => {
                        let q = last_cached[s].wrapping_sub(back);
                        if let Some(p) = cache.get(ssrc(s), q) {
                            hit("cache_hit");
                            assert_eq!(p.seq, q);
                            let id = u64::from_be_bytes(p.payload[..].try_into().unwrap());
                            assert_eq!(
                                Some(&id),
                                cached.get(&(ssrc(s), q)),
                                "the latest packet stored there"
                            );
                        }
                    }
                    RtxOp::Record(jump, s, q, vp8) => {
                        last_out = last_out.wrapping_add(if jump > 250 { jump * 97 } else { 1 });
                        let o = last_out;
                        let out = (o, u32::from(q).wrapping_mul(3000), 100u8);
                        log.record((ssrc(s), q), out, vp8, now);
                        credit = (credit + 1).min(2 * RETRANSMIT_BURST);
                        slots[usize::from(o) % cap] =
                            Some(((o, ssrc(s), q, out.1, out.2, vp8), now, None, false));
                    }
                    RtxOp::Nack(back, n, resend) => {
                        for k in 0..u16::from(n) {
                            let o = last_out.wrapping_sub(back).wrapping_add(k);
                            let mut first = false;
                            let answer = log.on_nack(o, now, Resendable::All, &mut first);
                            let slot = &mut slots[usize::from(o) % cap];
                            let known = slot.as_mut().filter(|s| s.0 .0 == o);
                            let expected = match &known {
                                None => NackAnswer::Unknown,
                                Some((_, at, _, _))
                                    if now.duration_since(*at) > MAX_RETRANSMIT_AGE =>
                                {
                                    NackAnswer::Stale
                                }
                                Some((_, _, Some(r), _))
                                    if now.duration_since(*r) < RETRANSMIT_HOLDOFF =>
                                {
                                    NackAnswer::Resting
                                }
                                Some(_) if credit < 2 => NackAnswer::OverBudget,
                                Some(_) => NackAnswer::Resend(SentPacket::default()),
                            };
                            hit(match answer {
                                NackAnswer::Resend(_) => "resend",
                                NackAnswer::Unknown => "unknown",
                                NackAnswer::Stale => "stale",
                                NackAnswer::Resting => "resting",
                                NackAnswer::OverBudget => "over_budget",
                                // Every packet is resendable: never superseded.
                                NackAnswer::Superseded => unreachable!("no simulcast layer"),
                            });
                            let Some(known) = known else {
                                assert_eq!(answer, NackAnswer::Unknown);
                                continue;
                            };
                            assert_eq!(first, !known.3, "first NACK of {o}");
                            known.3 = true;
                            let NackAnswer::Resend(p) = answer else {
                                assert_eq!(answer, expected);
                                continue;
                            };
                            assert!(
                                matches!(expected, NackAnswer::Resend(_)),
                                "expected {expected:?}"
                            );
                            assert_eq!(
                                (p.out_seq, p.src_ssrc, p.src_seq, p.out_ts, p.out_pt, p.vp8),
                                known.0
                            );
                            if !resend {
                                continue;
                            }
                            log.resent(o, now);
                            credit = credit.saturating_sub(2);
                            known.2 = Some(now);
                            // What goes out: the source packet as the subscriber saw it.
                            let src = CachedPacket {
                                seq: p.src_seq,
                                marker: true,
                                payload: Bytes::from_static(&[
                                    0x90, 0xe0, 0x80, 0x01, 0x07, 0x20, 0x10, 0x02, 0x9d, 0x01,
                                    0x2a,
                                ]),
                            };
                            let mid = Bytes::from_static(b"1");
                            let pkt = rebuild(&p, &src, OUT_SSRC, Some((4, &mid)));
                            assert_eq!(pkt.header.sequence_number, p.out_seq);
                            assert_eq!(pkt.header.timestamp, p.out_ts);
                            assert_eq!(pkt.header.payload_type, p.out_pt);
                            assert_eq!(pkt.header.ssrc, OUT_SSRC);
                            assert_eq!(pkt.payload.len(), src.payload.len());
                            if let Some((pic, tl0)) = p.vp8 {
                                let ids = vp8_ids(&pkt.payload);
                                assert_eq!(ids.picture_id.map(|(_, _, v)| v), Some(pic & 0x7fff));
                                assert_eq!(ids.tl0picidx.map(|(_, t)| t), Some(tl0));
                            } else {
                                assert_eq!(pkt.payload, src.payload);
                            }
                            pkt.marshal().expect("a rebuilt packet marshals");
                        }
                    }
                    RtxOp::Wait(ms) => now += Duration::from_millis(u64::from(ms)),
                }
            }
        },
    );
}

// ------------------------------------------------------------------------- RTCP feedback

/// RTCP compound packets as a subscriber sends them (after SRTCP decryption): what the
/// server reads of them (`Room::answer_nacks`, PLI/FIR relay, REMB, receiver reports).
fn rtcp_seeds() -> Vec<Vec<u8>> {
    use rtc::rtcp::packet::Packet;
    use rtc::rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
    use rtc::rtcp::receiver_report::ReceiverReport;
    use rtc::rtcp::reception_report::ReceptionReport;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
    let rr = || -> Box<dyn Packet> {
        Box::new(ReceiverReport {
            ssrc: 1,
            reports: vec![ReceptionReport {
                ssrc: OUT_SSRC,
                fraction_lost: 12,
                total_lost: 40,
                ..Default::default()
            }],
            ..Default::default()
        })
    };
    let compounds: Vec<Vec<Box<dyn Packet>>> = vec![
        vec![
            rr(),
            Box::new(TransportLayerNack {
                sender_ssrc: 1,
                media_ssrc: OUT_SSRC,
                nacks: vec![
                    NackPair {
                        packet_id: 1000,
                        lost_packets: 0b1010_0000_0000_0001,
                    },
                    NackPair {
                        packet_id: 65530,
                        lost_packets: 0xffff,
                    },
                ],
            }),
        ],
        vec![
            rr(),
            Box::new(PictureLossIndication {
                sender_ssrc: 1,
                media_ssrc: OUT_SSRC,
            }),
        ],
        vec![
            rr(),
            Box::new(FullIntraRequest {
                sender_ssrc: 1,
                media_ssrc: OUT_SSRC,
                fir: vec![FirEntry {
                    ssrc: OUT_SSRC,
                    sequence_number: 7,
                }],
            }),
        ],
        vec![
            rr(),
            Box::new(ReceiverEstimatedMaximumBitrate {
                sender_ssrc: 1,
                bitrate: 1_500_000.0,
                ssrcs: vec![OUT_SSRC, OUT_SSRC + 1],
            }),
        ],
    ];
    compounds
        .iter()
        .map(|c| rtc::rtcp::packet::marshal(c).expect("seed").to_vec())
        .collect()
}

/// Any (decrypted) RTCP from a subscriber: `rtc`'s parser never panics, a generic NACK pair
/// names at most 17 packets, and the NACKs are answered by a `SentLog` without panicking.
#[test]
fn fuzz_rtcp_feedback() {
    use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
    const DICT: &[&[u8]] = &[
        &[0x81, 0xcd],
        &[0x81, 0xce],
        &[0x84, 0xce],
        &[0x8f, 0xce],
        &[0x81, 0xc9],
        &[0x80, 0xc8],
        b"REMB",
        &[0xff, 0xff],
    ];
    let input = mutated(rtcp_seeds(), DICT, 1500).prop_map(Input);
    fuzz("rtcp_feedback", input, |raw| {
        let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut &raw.0[..]) else {
            hit("refused");
            return;
        };
        hit("parsed");
        let now = Instant::now();
        let mut log = SentLog::new(MediaKind::Video);
        for seq in 0..300u16 {
            log.record((1, seq), (seq.wrapping_add(900), 0, 96), None, now);
        }
        for p in &packets {
            if let Some(nack) = p.as_any().downcast_ref::<TransportLayerNack>() {
                hit("nack");
                for pair in &nack.nacks {
                    let list = pair.packet_list();
                    assert!(list.len() <= 17, "a NACK pair names at most 17 packets");
                    for seq in list {
                        let mut first = false;
                        let _ = log.on_nack(seq, now, Resendable::Layer(1), &mut first);
                    }
                }
            }
            if let Some(remb) = p.as_any().downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                hit("remb");
                let _ = remb.bitrate as u64;
            }
        }
        // What `rtc` parsed, it can write again.
        let _ = rtc::rtcp::packet::marshal(&packets);
    });
}
