//! Fuzz targets for the ufrag/STUN routing path (`routing.rs`): what decides which transport a
//! datagram belongs to (`looks_like_stun`, `BindingRequest::parse`/`verify`/`nominating`), the
//! route table, and per-transport path selection and consent (`IcePaths`). Stable Rust, run by
//! `cargo test` for `FUZZ_SECONDS` each (see `crates/fuzz`); seeds in `tests/fuzz/stun`
//! (Chromium 156's own binding requests and response, RFC 5769's sample request).

use confab_fuzz::proptest;
use confab_fuzz::proptest::collection::vec;
use confab_fuzz::proptest::prelude::*;
use confab_fuzz::{fuzz, fuzz_bytes, hit};
use confab_sfu::routing::{
    looks_like_stun, udp_tuple, BindingRequest, ConsentState, Heard, IcePaths, RouteTable,
    TransportKey, CONSENT_TIMEOUT, DISCONNECTED_AFTER, MAX_PATHS, ROUTE_IDLE,
};
use confab_sfu::{ParticipantId, TransportRole};
use rtc::shared::FiveTuple;
use rtc::stun::attributes::{AttrType, ATTR_PRIORITY, ATTR_USERNAME, ATTR_USE_CANDIDATE};
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{Message, Setter, TransactionId, BINDING_REQUEST};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const STUN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz/stun");

/// The ICE passwords of the seeds: the two Chromium 156 peers of the captured call (`a=ice-pwd`
/// of their descriptions), and RFC 5769 section 2.1's.
const PASSWORDS: [&str; 3] = [
    "2hIdurAPys6RV+xemgY9kiow",
    "3U4njfuZ3kH0U9gsKKm9hhgj",
    "VOkJxbRl1RmTxUk/WvJxBt",
];

const STUN_DICT: &[&[u8]] = &[
    &[0x00, 0x01],
    &[0x01, 0x01],
    &[0x21, 0x12, 0xa4, 0x42],
    &[0x00, 0x06, 0x00, 0x09],
    &[0x00, 0x08, 0x00, 0x14],
    &[0x80, 0x28, 0x00, 0x04],
    &[0x00, 0x25, 0x00, 0x00],
    &[0x80, 0x2a, 0x00, 0x08],
    &[0xc0, 0x57, 0x00, 0x04],
    &[0xff, 0xff],
    b":",
];

fn crypto() -> &'static dyn rtc::crypto::RTCCrypto {
    static PROVIDER: OnceLock<Arc<dyn rtc::crypto::RTCCryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| rtc::crypto::default_provider().expect("rtc's crypto provider"))
        .crypto()
}

/// The seeds are what they claim: Chromium's checks and RFC 5769's request verify with their
/// passwords (and only with them).
#[test]
fn stun_seeds_are_real_binding_requests() {
    let read = |n: &str| std::fs::read(format!("{STUN}/{n}")).unwrap();
    for (file, pwd, ufrag, nominate) in [
        (
            "chromium156-check-from-controlled-agent.bin",
            PASSWORDS[0],
            "CzmH",
            false,
        ),
        (
            "chromium156-nomination-to-controlled-agent.bin",
            PASSWORDS[1],
            "Kd8d",
            true,
        ),
        ("rfc5769-sample-request.bin", PASSWORDS[2], "evtj", false),
    ] {
        let mut r = BindingRequest::parse(&read(file)).expect(file);
        assert_eq!(r.local_ufrag, ufrag, "{file}");
        assert_eq!(r.use_candidate, nominate, "{file}");
        assert!(r.verify(pwd), "{file} verifies");
        for other in PASSWORDS.iter().filter(|p| **p != pwd) {
            assert!(!r.verify(other), "{file} with another password");
        }
    }
    assert!(BindingRequest::parse(&read("chromium156-binding-success.bin")).is_none());
}

/// Checks a parsed request's nomination: a binding request for the same ufrag, with
/// USE-CANDIDATE, that verifies with `pwd`.
fn check_nomination(r: &BindingRequest, pwd: &str) {
    let n = r
        .nominating(pwd)
        .expect("a parsed request can be nominated");
    let mut again = BindingRequest::parse(&n).expect("the nomination parses");
    assert_eq!(again.local_ufrag, r.local_ufrag);
    assert!(again.use_candidate);
    assert!(again.verify(pwd), "the nomination verifies");
    FINGERPRINT
        .check(&{
            let mut m = Message::new();
            m.unmarshal_binary(&n).unwrap();
            m
        })
        .expect("the nomination's FINGERPRINT");
}

/// Any datagram: `looks_like_stun` and `BindingRequest::parse` never panic (nor read past the
/// datagram); what parses is a STUN binding request (RFC 8489 section 5: type 0x0001, magic
/// cookie) whose USERNAME has a `:`; verifying it with any password never panics; its
/// nomination parses, keeps the ufrag, carries USE-CANDIDATE and verifies.
#[test]
fn fuzz_stun_datagram() {
    fuzz_bytes("stun_datagram", STUN, STUN_DICT, 1500, |d| {
        let stun = looks_like_stun(d);
        assert_eq!(stun, d.first().is_some_and(|b| *b < 4));
        // Exactly the datagram's bytes, so a read past it would be a panic here.
        let exact: Box<[u8]> = d.into();
        let Some(mut r) = BindingRequest::parse(&exact) else {
            hit("not_a_request");
            return;
        };
        hit("parsed");
        assert!(stun && d.len() >= 20);
        assert_eq!(&d[..2], &[0x00, 0x01]);
        assert_eq!(&d[4..8], &[0x21, 0x12, 0xa4, 0x42]);
        if r.use_candidate {
            hit("use_candidate");
        }
        let mut verified = None;
        for pwd in PASSWORDS {
            if r.verify(pwd) {
                hit("verified");
                assert!(verified.is_none(), "verifies with two passwords");
                verified = Some(pwd);
            }
        }
        check_nomination(&r, verified.unwrap_or(PASSWORDS[0]));
    });
}

/// A binding request as a peer builds it.
#[derive(Debug, Clone)]
struct Request {
    local_ufrag: String,
    remote_ufrag: String,
    pwd: String,
    transaction: [u8; 12],
    priority: u32,
    nominate: bool,
    /// Other attributes (type, value), before PRIORITY.
    extra: Vec<(u16, Vec<u8>)>,
    /// Flip these bits of the byte at this position (taken modulo the bytes that
    /// MESSAGE-INTEGRITY covers).
    tamper: Option<(usize, u8)>,
}

impl Request {
    /// The encoded request, and where its MESSAGE-INTEGRITY attribute starts.
    fn encode(&self) -> (Vec<u8>, usize) {
        let mut m = Message::new();
        m.build(&[
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId(self.transaction)),
        ])
        .unwrap();
        m.add(
            ATTR_USERNAME,
            format!("{}:{}", self.local_ufrag, self.remote_ufrag).as_bytes(),
        );
        for (t, v) in &self.extra {
            m.add(AttrType(*t), v);
        }
        m.add(ATTR_PRIORITY, &self.priority.to_be_bytes());
        if self.nominate {
            m.add(ATTR_USE_CANDIDATE, &[]);
        }
        let mi_at = m.raw.len();
        MessageIntegrity::new_short_term_integrity_with_provider(self.pwd.clone(), crypto())
            .add_to(&mut m)
            .unwrap();
        FINGERPRINT.add_to(&mut m).unwrap();
        (m.raw, mi_at)
    }
}

fn ice_chars(n: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
    // RFC 8839 section 5.4: ice-char = ALPHA / DIGIT / "+" / "/".
    proptest::string::string_regex(&format!("[A-Za-z0-9+/]{{{},{}}}", n.start(), n.end())).unwrap()
}

fn request() -> impl Strategy<Value = Request> {
    // Attribute types a peer may add: comprehension-optional ones (GOOG-NETWORK-INFO,
    // ICE-CONTROLLING/CONTROLLED, SOFTWARE) and unknown ones; not the ones the server reads.
    let extra_type = prop_oneof![
        Just(0xc057u16),
        Just(0x802a),
        Just(0x8029),
        Just(0x8022),
        (0x8030u16..0xffff),
        (0x0030u16..0x7fff),
    ];
    (
        ice_chars(4..=32),
        ice_chars(4..=32),
        ice_chars(22..=40),
        any::<[u8; 12]>(),
        any::<u32>(),
        any::<bool>(),
        vec((extra_type, vec(any::<u8>(), 0..24)), 0..4),
        proptest::option::weighted(0.5, (any::<usize>(), 1u8..=255)),
    )
        .prop_map(
            |(local_ufrag, remote_ufrag, pwd, transaction, priority, nominate, extra, tamper)| {
                Request {
                    local_ufrag,
                    remote_ufrag,
                    pwd,
                    transaction,
                    priority,
                    nominate,
                    extra,
                    tamper,
                }
            },
        )
}

/// A binding request signed with the transport's password is routed by its ufrag and verifies
/// with that password only; with any byte that MESSAGE-INTEGRITY covers altered, it never
/// verifies (a forged check can neither learn a route nor refresh consent).
#[test]
fn fuzz_stun_signed() {
    fuzz("stun_signed", request(), |req| {
        let (mut raw, mi_at) = req.encode();
        if let Some((at, bits)) = req.tamper {
            // Every byte before MESSAGE-INTEGRITY but the header's length field: the check
            // sets that field itself (RFC 8489 section 14.5), so a length cut short by a
            // multiple of 4 only drops FINGERPRINT from what is parsed.
            let at = match at % (mi_at - 2) {
                a if a < 2 => a,
                a => a + 2,
            };
            raw[at] ^= bits;
            hit("tampered");
            if let Some(mut r) = BindingRequest::parse(&raw) {
                hit("tampered_parsed");
                assert!(
                    !r.verify(&req.pwd),
                    "byte {at} altered, yet MESSAGE-INTEGRITY verifies"
                );
            }
            return;
        }
        let mut r = BindingRequest::parse(&raw).expect("a well-formed request parses");
        assert_eq!(r.local_ufrag, req.local_ufrag);
        assert_eq!(r.use_candidate, req.nominate);
        assert!(r.verify(&req.pwd));
        assert!(!r.verify(&format!("{}x", req.pwd)));
        check_nomination(&r, &req.pwd);
        hit("verified");
    });
}

// ------------------------------------------------------------------------- paths and routes

fn tuple(i: u8) -> FiveTuple {
    udp_tuple(
        "192.0.2.1:7882".parse().unwrap(),
        std::net::SocketAddr::from(([198, 51, 100, i], 50_000 + u16::from(i))),
    )
}

#[derive(Debug, Clone)]
enum PathOp {
    /// A datagram on path `i`, `ms` later.
    Datagram(u8, Heard, u32),
    Poll(u32),
    Expire(u32),
    Start(u32),
}

fn heard() -> impl Strategy<Value = Heard> {
    prop_oneof![
        3 => any::<bool>().prop_map(|nominate| Heard::Check { nominate }),
        3 => Just(Heard::Data),
        1 => Just(Heard::OtherStun),
    ]
}

fn ms() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => 0u32..300,
        3 => 0u32..6_000,
        1 => 0u32..40_000,
    ]
}

/// `IcePaths` under any datagrams and clock: at most `MAX_PATHS` distinct paths, the media
/// destination is always one of them, a switch goes to where the media now goes, an evicted
/// path is gone and never the destination; consent is `failed` only 30 s after the last
/// authenticated check (or after ICE started without one), `disconnected` only 13 s after
/// the last datagram; `failed` is final; and `poll` changes nothing before `next_deadline`.
#[test]
fn fuzz_ice_paths() {
    let op = prop_oneof![
        10 => (0u8..12, heard(), ms()).prop_map(|(i, h, t)| PathOp::Datagram(i, h, t)),
        4 => ms().prop_map(PathOp::Poll),
        1 => ms().prop_map(PathOp::Expire),
        1 => ms().prop_map(PathOp::Start),
    ];
    fuzz("ice_paths", vec(op, 1..120), |ops| {
        let mut p = IcePaths::new();
        let mut now = Instant::now();
        let mut started: Option<Instant> = None;
        let mut last_check: Option<Instant> = None;
        let mut last_heard: Option<Instant> = None;
        let mut was_failed = false;
        for op in ops {
            let deadline = p.next_deadline();
            match op {
                PathOp::Datagram(i, h, t) => {
                    now += Duration::from_millis(u64::from(t));
                    let before = p.state();
                    let u = p.on_datagram(tuple(i), h, now);
                    last_heard = Some(now);
                    if matches!(h, Heard::Check { .. }) {
                        last_check = Some(now);
                    }
                    if let Some(s) = u.switched_to {
                        hit("switched");
                        assert_eq!(p.destination(), Some(s));
                        assert_eq!(s, tuple(i));
                    }
                    if let Some(e) = u.evicted {
                        hit("evicted");
                        assert_ne!(p.destination(), Some(e));
                        assert!(p.paths().all(|t| t != e));
                    }
                    if let Some(s) = u.state {
                        hit("revived");
                        assert_eq!(s, ConsentState::Connected);
                        assert_eq!(p.state(), s);
                        assert!(matches!(
                            before,
                            ConsentState::Checking | ConsentState::Disconnected
                        ));
                    }
                }
                PathOp::Poll(t) => {
                    now += Duration::from_millis(u64::from(t));
                    let before = p.state();
                    let changed = p.poll(now);
                    // Known and accepted: a check that came before ICE started (the client's
                    // checks can overtake its answer) leaves `checking` with consent already
                    // given; `next_deadline` still says the 30 s timeout, and the next
                    // datagram (or any earlier poll) moves it to `connected`.
                    let pre_start_check = before == ConsentState::Checking && last_check.is_some();
                    if pre_start_check {
                        hit("pre_start_check");
                    }
                    if !pre_start_check && deadline.is_none_or(|d| now < d) {
                        assert_eq!(
                            changed, None,
                            "state {before:?} changed before its deadline {deadline:?}"
                        );
                    }
                    match changed {
                        Some(ConsentState::Failed) => {
                            hit("failed");
                            let since = last_check.or(started).expect("a failure has a start");
                            assert!(now.duration_since(since) >= CONSENT_TIMEOUT);
                            assert_eq!(p.destination(), None);
                        }
                        Some(ConsentState::Disconnected) => {
                            hit("disconnected");
                            assert!(
                                now.duration_since(last_heard.expect("heard once"))
                                    >= DISCONNECTED_AFTER
                            );
                        }
                        Some(s) => {
                            hit("connected");
                            assert_eq!(s, ConsentState::Connected);
                        }
                        None => {}
                    }
                }
                PathOp::Expire(t) => {
                    now += Duration::from_millis(u64::from(t));
                    p.expire(now);
                }
                PathOp::Start(t) => {
                    now += Duration::from_millis(u64::from(t));
                    p.start(now);
                    started = started.or(Some(now));
                }
            }
            if was_failed {
                assert_eq!(p.state(), ConsentState::Failed, "failed is final");
            }
            was_failed = p.state() == ConsentState::Failed;
            if started.is_none() {
                assert_eq!(p.state(), ConsentState::New);
            }
            let paths: Vec<FiveTuple> = p.paths().collect();
            assert!(paths.len() <= MAX_PATHS);
            for (k, a) in paths.iter().enumerate() {
                assert!(!paths[k + 1..].contains(a), "a path listed twice");
            }
            if let Some(d) = p.destination() {
                assert!(paths.contains(&d), "the destination is a known path");
            }
        }
    });
}

#[derive(Debug, Clone)]
enum RouteOp {
    Learn(u8, u8, u32),
    Lookup(u8, u32),
    Forget(u8),
    ForgetParticipant(u8),
    Expire(u32),
}

/// `RouteTable` against a model: a lookup finds exactly the transport learnt last for that
/// 5-tuple, unless it was forgotten, its participant left, or it was idle for `ROUTE_IDLE`
/// (a lookup refreshes it).
#[test]
fn fuzz_route_table() {
    let op = prop_oneof![
        4 => (0u8..16, 0u8..4, ms()).prop_map(|(t, k, m)| RouteOp::Learn(t, k, m)),
        6 => (0u8..16, ms()).prop_map(|(t, m)| RouteOp::Lookup(t, m)),
        1 => (0u8..16).prop_map(RouteOp::Forget),
        1 => (0u8..4).prop_map(RouteOp::ForgetParticipant),
        2 => ms().prop_map(RouteOp::Expire),
    ];
    let key = |k: u8| TransportKey {
        participant: ParticipantId(u64::from(k / 2)),
        role: if k % 2 == 0 {
            TransportRole::Publisher
        } else {
            TransportRole::Subscriber
        },
    };
    fuzz("route_table", vec(op, 1..200), |ops| {
        let mut table = RouteTable::default();
        let mut model: HashMap<u8, (TransportKey, Instant)> = HashMap::new();
        let mut now = Instant::now();
        for op in ops {
            match op {
                RouteOp::Learn(t, k, m) => {
                    now += Duration::from_millis(u64::from(m));
                    assert!(table.learn(tuple(t), key(k), now));
                    model.insert(t, (key(k), now));
                }
                RouteOp::Lookup(t, m) => {
                    now += Duration::from_millis(u64::from(m));
                    let got = table.lookup(&tuple(t), now);
                    // The table drops idle routes only when told to expire them.
                    assert_eq!(got, model.get(&t).map(|(k, _)| *k));
                    if let Some(e) = model.get_mut(&t) {
                        hit("found");
                        e.1 = now;
                    }
                }
                RouteOp::Forget(t) => {
                    table.forget(&tuple(t));
                    model.remove(&t);
                }
                RouteOp::ForgetParticipant(p) => {
                    table.forget_participant(ParticipantId(u64::from(p)));
                    model.retain(|_, (k, _)| k.participant != ParticipantId(u64::from(p)));
                }
                RouteOp::Expire(m) => {
                    now += Duration::from_millis(u64::from(m));
                    table.expire(now);
                    model.retain(|_, (_, at)| now.duration_since(*at) < ROUTE_IDLE);
                }
            }
            assert_eq!(table.len(), model.len());
            assert_eq!(table.is_empty(), model.is_empty());
        }
    });
}
