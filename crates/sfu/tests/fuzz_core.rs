//! End-to-end fuzz target of the media plane's network inputs, through the sans-IO [`Core`]
//! exactly as the signaling layer and the media worker drive it: a participant joins and
//! publishes (Chromium 156's offer, or a mutation of it: `validate_track_list`,
//! `keep_learnt_layers` on renegotiation, `rtc`'s SDP parser and offer/answer), trickles
//! candidates (the RFC 8839 syntax check, then `rtc`'s candidate parser), and datagrams arrive
//! on the media socket: binding requests signed with the transport's real ICE password (the
//! ufrag routing path and consent), tampered ones, and mutated captures of everything else a
//! browser sends (DTLS, SRTP, SRTCP: `rtc`'s DTLS stack behind a learnt route). Stable Rust,
//! run by `cargo test` for `FUZZ_SECONDS` (see `crates/fuzz`).
//!
//! Properties: nothing panics (the core's per-participant panic guard would hide it, so
//! `participant_panics` must stay 0); refusals are the documented errors; a datagram from a
//! 5-tuple that never sent an authenticated check is dropped as unroutable, one from a
//! 5-tuple that did (within `ROUTE_IDLE`) is routed; nothing but `rtc`'s connectivity checks is
//! ever sent to a 5-tuple that never authenticated, and a tampered check is never answered.

use bytes::BytesMut;
use confab_fuzz::proptest;
use confab_fuzz::proptest::collection::vec;
use confab_fuzz::proptest::prelude::*;
use confab_fuzz::{corpus, fuzz, hit, mutated, text, Input};
use confab_sfu::peer::IceCredentials;
use confab_sfu::routing::{udp_tuple, ROUTE_IDLE};
use confab_sfu::{
    mailbox, Core, LocalCandidates, ParticipantId, PublishTrack, RoomId, SfuError, SfuMetrics,
    TrackSource, TransportRole,
};
use rtc::shared::FiveTuple;
use rtc::stun::attributes::{
    AttrType, ATTR_ICE_CONTROLLING, ATTR_PRIORITY, ATTR_USERNAME, ATTR_USE_CANDIDATE,
};
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{Message, Setter, TransactionId, BINDING_REQUEST};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const FUZZ: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz");
const SERVER: &str = "192.0.2.1:7882";

fn crypto() -> &'static dyn rtc::crypto::RTCCrypto {
    static PROVIDER: OnceLock<Arc<dyn rtc::crypto::RTCCryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| rtc::crypto::default_provider().expect("rtc's crypto provider"))
        .crypto()
}

/// Client 5-tuples: 0–7 send authenticated checks (and then anything), 8–15 never
/// authenticate.
fn tuple(i: u8) -> FiveTuple {
    udp_tuple(
        SERVER.parse().unwrap(),
        SocketAddr::from(([198, 51, 100, 10 + i], 40_000 + u16::from(i))),
    )
}

const DATAGRAM_DICT: &[&[u8]] = &[
    &[0x16, 0xfe, 0xfd],
    &[0x16, 0xfe, 0xff],
    &[0x17, 0xfe, 0xfd],
    &[0x80, 0x60],
    &[0x90, 0xe0],
    &[0x80, 0xc8],
    &[0x81, 0xcd],
    &[0x21, 0x12, 0xa4, 0x42],
    &[0xff, 0xff],
];

const CANDIDATE_DICT: &[&[u8]] = &[
    b"candidate:",
    b" typ host",
    b" typ srflx raddr 0.0.0.0 rport 0",
    b" typ relay",
    b" tcptype passive",
    b" udp ",
    b" tcp ",
    b" 65536 ",
    b" 4294967296 ",
    b".local",
    b"::ffff:127.0.0.1",
    b"[::1]",
    b" ",
];

#[derive(Debug, Clone)]
enum CoreOp {
    /// An authenticated binding request (with the server's real credentials) from tuple `0..8`;
    /// with `tamper`, one byte MESSAGE-INTEGRITY covers is altered and it comes from `8..16`.
    Check {
        from: u8,
        nominate: bool,
        controlling: u64,
        extra: Vec<(u16, Vec<u8>)>,
        tamper: Option<(usize, u8)>,
    },
    /// Any other datagram (mutated captures) from any tuple.
    Datagram(u8, Input),
    /// A trickled candidate for the publisher (`true`) or subscriber transport.
    Candidate(bool, Input, Option<String>, Option<u16>),
    /// A new publisher offer (renegotiation) with its track list.
    Offer(Input, Vec<(String, u8)>),
    /// A subscribe answer.
    Answer(Input),
    /// Time passes (timers fire).
    Wait(u32),
}

fn source(s: u8) -> TrackSource {
    match s % 3 {
        0 => TrackSource::Microphone,
        1 => TrackSource::Camera,
        _ => TrackSource::Screen,
    }
}

fn ops() -> impl Strategy<Value = Vec<CoreOp>> {
    let datagrams = {
        let mut seeds = corpus(format!("{FUZZ}/datagram"));
        seeds.extend(corpus(format!("{FUZZ}/stun")));
        mutated(seeds, DATAGRAM_DICT, 1500).prop_map(Input)
    };
    let candidates =
        mutated(corpus(format!("{FUZZ}/candidate")), CANDIDATE_DICT, 700).prop_map(Input);
    let sdps = mutated(
        corpus(format!("{FUZZ}/sdp")),
        &[b"\r\n", b"a=rid:"],
        64 * 1024,
    )
    .prop_map(Input);
    let check = (
        0u8..8,
        any::<bool>(),
        any::<u64>(),
        vec(
            (
                prop_oneof![Just(0xc057u16), 0x8030u16..0xffff],
                vec(any::<u8>(), 0..12),
            ),
            0..3,
        ),
        proptest::option::weighted(0.2, (any::<usize>(), 1u8..=255)),
    )
        .prop_map(
            |(from, nominate, controlling, extra, tamper)| CoreOp::Check {
                from,
                nominate,
                controlling,
                extra,
                tamper,
            },
        );
    // A renegotiation: the same offer again (its simulcast layers are kept), another of
    // Chromium's, or a mutation; the track list as the page sends it, or anything.
    let renegotiation = prop_oneof![
        2 => proptest::sample::select(corpus(format!("{FUZZ}/sdp"))).prop_map(Input),
        3 => sdps.clone(),
    ];
    let tracks = prop_oneof![
        3 => Just(vec![("0".to_owned(), 0u8), ("1".to_owned(), 1u8)]),
        1 => vec(("[0-9]{1,2}", any::<u8>()), 0..4),
    ];
    let op = prop_oneof![
        6 => check,
        8 => (prop_oneof![3 => 0u8..8, 1 => 8u8..16], datagrams).prop_map(|(t, d)| CoreOp::Datagram(t, d)),
        3 => (any::<bool>(), candidates, proptest::option::of("[0-9]{1,2}"), proptest::option::of(0u16..4))
            .prop_map(|(p, c, m, i)| CoreOp::Candidate(p, c, m, i)),
        2 => (renegotiation, tracks).prop_map(|(s, t)| CoreOp::Offer(s, t)),
        1 => sdps.prop_map(CoreOp::Answer),
        2 => prop_oneof![0u32..100, 0u32..25_000].prop_map(CoreOp::Wait),
    ];
    vec(op, 1..24)
}

/// A binding request as Chromium sends it to the server (it is the controlling agent).
fn check(
    creds: &IceCredentials,
    client_ufrag: &str,
    nominate: bool,
    controlling: u64,
    extra: &[(u16, Vec<u8>)],
    transaction: [u8; 12],
) -> (Vec<u8>, usize) {
    let mut m = Message::new();
    m.build(&[
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId(transaction)),
    ])
    .unwrap();
    m.add(
        ATTR_USERNAME,
        format!("{}:{client_ufrag}", creds.ufrag).as_bytes(),
    );
    for (t, v) in extra {
        m.add(AttrType(*t), v);
    }
    m.add(ATTR_ICE_CONTROLLING, &controlling.to_be_bytes());
    if nominate {
        m.add(ATTR_USE_CANDIDATE, &[]);
    }
    m.add(ATTR_PRIORITY, &1_845_501_695u32.to_be_bytes());
    let mi_at = m.raw.len();
    MessageIntegrity::new_short_term_integrity_with_provider(creds.pwd.clone(), crypto())
        .add_to(&mut m)
        .unwrap();
    FINGERPRINT.add_to(&mut m).unwrap();
    (m.raw, mi_at)
}

fn allowed(e: &SfuError) -> bool {
    matches!(
        e,
        SfuError::InvalidSdp(_)
            | SfuError::InvalidCandidate(_)
            | SfuError::NegotiationFailed(_)
            | SfuError::UnknownParticipant
    )
}

/// A participant publishes a (possibly mutated) Chromium offer, then any sequence of checks,
/// datagrams, candidates, renegotiations, answers and time: see the module docs.
#[test]
fn fuzz_core() {
    let offer =
        text(&std::fs::read(format!("{FUZZ}/sdp/chromium156-offer-simulcast.sdp")).expect("seed"));
    let first_offer = prop_oneof![
        4 => Just(Input(offer.clone().into_bytes())),
        1 => mutated(vec![offer.into_bytes()], &[b"\r\n", b"a=rid:", b"a=msid:"], 64 * 1024).prop_map(Input),
    ];
    fuzz("core", (first_offer, ops()), |(first_offer, ops)| {
        let metrics = Arc::new(SfuMetrics::default());
        let (tx, _rx) = tokio::sync::broadcast::channel(64);
        let mut now = Instant::now();
        let local = LocalCandidates {
            udp: vec![SERVER.parse().unwrap()],
            tcp: vec![],
        };
        let mut core = Core::new(local, 4, metrics.clone(), tx, now);
        let (events, _events_rx) = mailbox();
        let info = core
            .join(
                RoomId::parse("fuzz").unwrap(),
                "Ada".into(),
                "user-ada".into(),
                events,
                now,
            )
            .expect("join");
        let pid: ParticipantId = info.participant;
        let tracks = vec![
            PublishTrack {
                mid: "0".into(),
                source: TrackSource::Microphone,
            },
            PublishTrack {
                mid: "1".into(),
                source: TrackSource::Camera,
            },
        ];
        // The server's credentials (from its answer) and the client's ufrag (from its offer):
        // a check's USERNAME is `<server ufrag>:<client ufrag>` (RFC 8445 section 7.2.2).
        let mut client_ufrag = IceCredentials::from_sdp(&text(&first_offer.0)).map(|c| c.ufrag);
        let mut creds = match core.publish_offer(pid, text(&first_offer.0), tracks, now) {
            Ok(answer) => {
                hit("published");
                Some(IceCredentials::from_sdp(&answer).expect("an answer has ICE credentials"))
            }
            Err(e) => {
                hit("first_offer_refused");
                assert!(allowed(&e), "{e:?}");
                None
            }
        };
        let mut authenticated = [false; 16];
        let mut last_seen: [Option<Instant>; 16] = [None; 16];
        let mut transaction = 0u64;
        for op in ops {
            match op {
                CoreOp::Check {
                    from,
                    nominate,
                    controlling,
                    extra,
                    tamper,
                } => {
                    let (Some(c), Some(client)) = (&creds, &client_ufrag) else {
                        continue;
                    };
                    transaction += 1;
                    let mut tid = [0u8; 12];
                    tid[4..].copy_from_slice(&transaction.to_be_bytes());
                    let (mut raw, mi_at) = check(c, client, nominate, controlling, &extra, tid);
                    let from = match tamper {
                        Some((at, bits)) => {
                            // Not the length field (see fuzz_ice.rs).
                            let at = match at % (mi_at - 2) {
                                a if a < 2 => a,
                                a => a + 2,
                            };
                            raw[at] ^= bits;
                            8 + from
                        }
                        None => from,
                    };
                    let genuine = tamper.is_none() && present(&core);
                    if genuine {
                        authenticated[usize::from(from)] = true;
                        last_seen[usize::from(from)] = Some(now);
                    }
                    core.handle_datagram(tuple(from), BytesMut::from(&raw[..]), now);
                    let answered = settle(&mut core, now, &authenticated).iter().any(|t| {
                        t.remote == tuple(from).peer_addr
                            && t.data.len() >= 20
                            && t.data[..2] == [0x01, 0x01]
                            && t.data[8..20] == tid
                    });
                    if genuine {
                        hit(if answered { "check_answered" } else { "check" });
                    } else if tamper.is_some() {
                        hit("tampered");
                        assert!(!answered, "a tampered check is not answered");
                    }
                }
                CoreOp::Datagram(from, data) => {
                    let f = usize::from(from);
                    let unroutable = || metrics.drops_unroutable.load(Ordering::Relaxed);
                    let before = unroutable();
                    // Routed: a 5-tuple that authenticated, heard from within `ROUTE_IDLE`,
                    // of a participant still there.
                    let routable = authenticated[f]
                        && last_seen[f].is_some_and(|at| now.duration_since(at) < ROUTE_IDLE)
                        && present(&core);
                    core.handle_datagram(tuple(from), BytesMut::from(&data.0[..]), now);
                    if !authenticated[f] {
                        hit("datagram_unroutable");
                        assert_eq!(unroutable(), before + 1, "a stranger's datagram is dropped");
                    } else if routable {
                        hit("datagram_routed");
                        assert_eq!(unroutable(), before, "a learnt 5-tuple is routed");
                        last_seen[f] = Some(now);
                    }
                }
                CoreOp::Candidate(publisher, c, mid, index) => {
                    let role = if publisher {
                        TransportRole::Publisher
                    } else {
                        TransportRole::Subscriber
                    };
                    match core.add_candidate(pid, role, text(&c.0), mid, index, now) {
                        Ok(()) => hit("candidate_ok"),
                        Err(e) => {
                            hit("candidate_refused");
                            assert!(allowed(&e), "{e:?}");
                        }
                    }
                }
                CoreOp::Offer(sdp, tracks) => {
                    let tracks = tracks
                        .into_iter()
                        .map(|(mid, s)| PublishTrack {
                            mid,
                            source: source(s),
                        })
                        .collect();
                    match core.publish_offer(pid, text(&sdp.0), tracks, now) {
                        Ok(answer) => {
                            hit("renegotiated");
                            if let Some(c) = IceCredentials::from_sdp(&text(&sdp.0)) {
                                client_ufrag = Some(c.ufrag);
                            }
                            if let Some(c) = IceCredentials::from_sdp(&answer) {
                                creds = Some(c);
                            }
                        }
                        Err(e) => {
                            hit("offer_refused");
                            assert!(allowed(&e), "{e:?}");
                        }
                    }
                }
                CoreOp::Answer(sdp) => {
                    if let Err(e) = core.subscribe_answer(pid, text(&sdp.0), now) {
                        hit("answer_refused");
                        assert!(allowed(&e), "{e:?}");
                    }
                }
                CoreOp::Wait(ms) => {
                    now += Duration::from_millis(u64::from(ms));
                    core.handle_timeout(now);
                }
            }
            settle(&mut core, now, &authenticated);
            assert_eq!(
                metrics.participant_panics.load(Ordering::Relaxed),
                0,
                "a panic inside the core (its message is printed above)"
            );
        }
    });
}

/// Whether the participant is still in its room (not removed for a failed or timed-out
/// transport).
fn present(core: &Core) -> bool {
    core.snapshot(None)
        .iter()
        .any(|r| !r.participants.is_empty())
}

/// Runs the core as the media worker does (drain its output, then fire the timers that are
/// due at `now`) until it is idle; returns what it sent, each checked by [`check_transmit`].
fn settle(core: &mut Core, now: Instant, authenticated: &[bool; 16]) -> Vec<confab_sfu::Transmit> {
    let mut out = Vec::new();
    for _ in 0..16 {
        while let Some(t) = core.poll_transmit() {
            check_transmit(&t, authenticated);
            out.push(t);
        }
        if core.poll_timeout().is_none_or(|d| d > now) {
            break;
        }
        core.handle_timeout(now);
    }
    out
}

/// Nothing goes to a 5-tuple that never sent an authenticated check: no binding request, binding
/// response, DTLS, SRTP, SRTCP or DataChannel data. (`rtc`'s ICE agent, when a client's answer
/// makes it the controlling one, checks the candidates a client names; the core drops those,
/// since an ICE-lite agent performs no checks, RFC 8445 section 2.5.)
fn check_transmit(t: &confab_sfu::Transmit, authenticated: &[bool; 16]) {
    hit("transmit");
    let known = (0..16u8).find(|i| tuple(*i).peer_addr == t.remote);
    assert!(
        known.is_some_and(|i| authenticated[usize::from(i)]),
        "sent to {} that never authenticated: {:02x?}",
        t.remote,
        &t.data[..t.data.len().min(48)]
    );
}
