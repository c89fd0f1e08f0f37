//! Fuzz targets for the signaling WebSocket's JSON (`parse_client_message`, `request_id`,
//! `reply_text`) and the chat DataChannel's JSON (`ChatClientMessage`). Stable Rust, run by
//! `cargo test` for `FUZZ_SECONDS` each (see `crates/fuzz`); seeds in `tests/fuzz/signaling` and
//! `tests/fuzz/chat` (real messages, the SDPs from Chromium 156).

use confab_fuzz::proptest;
use confab_fuzz::proptest::collection::vec;
use confab_fuzz::proptest::prelude::*;
use confab_fuzz::{fuzz, fuzz_bytes, hit, text};
use confab_protocol::chat::ChatClientMessage;
use confab_protocol::*;

const DICT: &[&[u8]] = &[
    b"\"type\":",
    b"\"join\"",
    b"\"publish_offer\"",
    b"\"track_settings\"",
    b"\"candidate\"",
    b"\"request_id\":",
    b"\"sdp\":",
    b"null",
    b"true",
    b"[]",
    b"{}",
    b"\"\"",
    b"-1",
    b"1e309",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"0.1",
    b"\\u0000",
    b"\\ud800",
    b"\"\\\"",
    b",",
    b":",
];

/// The wire tag of each client message.
fn tag(m: &ClientMessage) -> &'static str {
    m.type_name()
}

/// Every tag [`tag`] gives.
const TAGS: [&str; 23] = ClientMessage::TYPES;

/// The error code the protocol documents for a rejected text frame (`docs/protocol.md`):
/// `unknown_type` for a JSON object whose string `type` names no client message, `bad_json`
/// for everything else (not JSON, not an object, no string `type`, a known type whose fields
/// are wrong).
fn expected_error(text: &str) -> ErrorCode {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(o)) => match o.get("type").and_then(|t| t.as_str()) {
            Some(t) if !TAGS.contains(&t) => ErrorCode::UnknownType,
            _ => ErrorCode::BadJson,
        },
        _ => ErrorCode::BadJson,
    }
}

/// `a` and `b` are the same message. A `ping`'s `ts` may differ in its last bits: serde_json
/// parses decimal numbers with more than 15 significant digits (and subnormal ones) to within
/// an ULP or two unless its `float_roundtrip` feature is on (harmless for an echoed timestamp).
fn same(a: &ClientMessage, b: &ClientMessage) -> bool {
    match (a, b) {
        (ClientMessage::Ping { ts: Some(x) }, ClientMessage::Ping { ts: Some(y) }) => {
            // At most 2 ULP apart (subnormal numbers included).
            x.is_sign_negative() == y.is_sign_negative() && x.to_bits().abs_diff(y.to_bits()) <= 2
        }
        _ => a == b,
    }
}

fn check_request_id(text: &str) {
    let Some(id) = request_id(text) else {
        return;
    };
    hit("request_id");
    match &id {
        serde_json::Value::String(s) => assert!(s.len() <= MAX_REQUEST_ID, "{id}"),
        serde_json::Value::Number(n) => assert!(n.is_i64() || n.is_u64(), "{id}"),
        other => panic!("request_id {other} is neither a short string nor an integer"),
    }
    // The reply echoes it verbatim.
    let reply = reply_text(&ServerMessage::Pong { ts: None }, Some(&id));
    let v: serde_json::Value = serde_json::from_str(&reply).expect("reply_text gives JSON");
    assert_eq!(v["request_id"], id);
    assert_eq!(v["type"], "pong");
}

/// Any text frame: parsing never panics; a parsed message serializes and parses back to
/// itself; a rejected one gets the documented error code; `request_id` is a short string or
/// an integer and is echoed verbatim by `reply_text`.
#[test]
fn fuzz_signaling_text() {
    fuzz_bytes(
        "signaling_text",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz/signaling"),
        DICT,
        MAX_FRAME_BYTES,
        |b| {
            let text = text(b);
            check_request_id(&text);
            match parse_client_message(&text) {
                Ok(m) => {
                    hit(tag(&m));
                    let again = serde_json::to_string(&m).expect("serializable");
                    let back = parse_client_message(&again);
                    assert!(
                        back.as_ref().is_ok_and(|b| same(b, &m)),
                        "round trip of {again}: {back:?}"
                    );
                }
                Err((code, message)) => {
                    hit(if code == ErrorCode::UnknownType {
                        "unknown_type"
                    } else {
                        "bad_json"
                    });
                    assert!(!message.is_empty());
                    assert_eq!(
                        code,
                        expected_error(&text),
                        "error code of {text:?} ({message})"
                    );
                }
            }
        },
    );
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9_-]{0,12}",
        1 => vec(any::<char>(), 0..24).prop_map(String::from_iter),
    ]
}

fn source() -> impl Strategy<Value = Source> {
    prop_oneof![
        Just(Source::Microphone),
        Just(Source::Camera),
        Just(Source::Screen)
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Audio), Just(Kind::Video)]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![Just(Target::Publisher), Just(Target::Subscriber)]
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    use ClientMessage as M;
    prop_oneof![
        (any_text(), any_text()).prop_map(|(room, name)| M::Join { room, name }),
        (
            any_text(),
            vec(
                (any_text(), kind(), source()).prop_map(|(mid, kind, source)| PublishTrackMsg {
                    mid,
                    kind,
                    source
                }),
                0..4
            )
        )
            .prop_map(|(sdp, tracks)| M::PublishOffer { sdp, tracks }),
        any_text().prop_map(|sdp| M::SubscribeAnswer { sdp }),
        (
            target(),
            any_text(),
            proptest::option::of(any_text()),
            any::<Option<u16>>()
        )
            .prop_map(|(target, c, sdp_mid, sdp_mline_index)| M::Candidate {
                target,
                candidate: CandidateMsg {
                    candidate: c,
                    sdp_mid,
                    sdp_mline_index
                }
            }),
        (source(), any::<bool>()).prop_map(|(source, muted)| M::Mute { source, muted }),
        (
            any_text(),
            any::<bool>(),
            any::<Option<u32>>(),
            any::<Option<u32>>()
        )
            .prop_map(|(track_id, enabled, width, height)| M::TrackSettings {
                track_id,
                enabled,
                width,
                height
            }),
        (any_text(), any::<u8>())
            .prop_map(|(tutor, language)| M::SessionStarted { tutor, language }),
        Just(M::EndSession),
        (any_text(), any_text()).prop_map(|(participant_id, resume_token)| M::Resume {
            participant_id,
            resume_token
        }),
        target().prop_map(|target| M::RestartIce { target }),
        Just(M::Leave),
        Just(M::WatchPresence),
        any_text().prop_map(|callee| M::CallInvite { callee }),
        any_text().prop_map(|call_id| M::CallAccept { call_id }),
        any_text().prop_map(|call_id| M::CallReject { call_id }),
        any_text().prop_map(|call_id| M::CallCancel { call_id }),
        any_text().prop_map(|call_id| M::CallHangup { call_id }),
        (any_text(), source()).prop_map(|(participant_id, source)| M::HostMute {
            participant_id,
            source
        }),
        any_text().prop_map(|participant_id| M::HostRemove { participant_id }),
        any::<bool>().prop_map(|locked| M::HostLock { locked }),
        Just(M::MatchStart),
        Just(M::MatchStop),
        // Finite timestamps (NaN and infinities are not JSON numbers); the page sends
        // `Date.now()` or `performance.now()`.
        proptest::option::of(prop_oneof![
            (0u64..1 << 53).prop_map(|n| n as f64),
            (0u64..1 << 53).prop_map(|n| n as f64 / 1000.0),
            proptest::num::f64::NORMAL | proptest::num::f64::ZERO | proptest::num::f64::SUBNORMAL
        ])
        .prop_map(|ts| M::Ping { ts }),
    ]
}

/// Every client message, written as a client would (with or without a `request_id`, fields in
/// any order): parses back to itself, with its `request_id`; the same JSON with the fields
/// of its type taken away one at a time is refused as `bad_json`, never `unknown_type`.
#[test]
fn fuzz_client_message_round_trip() {
    fuzz(
        "client_message_round_trip",
        (
            client_message(),
            proptest::option::of(prop_oneof![
                "[ -~]{0,64}".prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<u64>().prop_map(serde_json::Value::from),
            ]),
            any::<bool>(),
        ),
        |(m, rid, reverse)| {
            assert!(TAGS.contains(&tag(&m)));
            let mut v = serde_json::to_value(&m).expect("serializable");
            assert_eq!(v["type"], tag(&m), "the wire tag of {m:?}");
            let o = v.as_object_mut().expect("an object");
            if let Some(rid) = &rid {
                o.insert("request_id".into(), rid.clone());
            }
            let mut fields: Vec<(String, serde_json::Value)> =
                o.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            if reverse {
                fields.reverse();
            }
            let text = serde_json::Value::Object(fields.iter().cloned().collect()).to_string();
            hit(tag(&m));
            let back = parse_client_message(&text);
            assert!(back.as_ref().is_ok_and(|b| same(b, &m)), "{text}: {back:?}");
            assert_eq!(request_id(&text), rid, "{text}");
            // Each required field removed: a known type with missing fields is `bad_json`.
            for (i, (k, _)) in fields.iter().enumerate() {
                if k == "type" || k == "request_id" {
                    continue;
                }
                let without: serde_json::Map<String, serde_json::Value> = fields
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, f)| f.clone())
                    .collect();
                let text = serde_json::Value::Object(without).to_string();
                if let Err((code, _)) = parse_client_message(&text) {
                    assert_eq!(code, ErrorCode::BadJson, "{text}");
                }
            }
        },
    );
}

/// Any chat DataChannel text: parsing never panics, and what parses serializes and parses back
/// to itself.
#[test]
fn fuzz_chat_json() {
    fuzz_bytes(
        "chat_json",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz/chat"),
        DICT,
        64 * 1024,
        |b| {
            let text = text(b);
            match serde_json::from_str::<ChatClientMessage>(&text) {
                Ok(m) => {
                    hit(match m {
                        ChatClientMessage::Send { .. } => "send",
                        ChatClientMessage::Edit { .. } => "edit",
                        ChatClientMessage::Delete { .. } => "delete",
                        ChatClientMessage::History { .. } => "history",
                    });
                    let again = serde_json::to_string(&m).expect("serializable");
                    let back: ChatClientMessage = serde_json::from_str(&again).expect("parses");
                    assert_eq!(back, m);
                }
                Err(_) => hit("rejected"),
            }
        },
    );
}
