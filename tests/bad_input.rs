//! Bad input never crashes or corrupts: each gets an `error` with a stable code, the socket and
//! the room keep working for everyone else.

mod common;

use common::{eventually, spawn_app};
use confab_client::{Client, SyntheticTrack};
use confab_protocol::{CandidateMsg, ClientMessage, ErrorCode, ServerMessage, Source, Target};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

async fn expect_error(c: &mut Client, code: ErrorCode) {
    let ev = c
        .wait_event(WAIT, |e| matches!(e, ServerMessage::Error { .. }))
        .await;
    match ev {
        Some(ServerMessage::Error { code: got, message }) => {
            assert_eq!(got, code, "error code (message: {message})");
            assert!(!message.is_empty(), "errors carry a human message");
        }
        other => panic!("expected error {code:?}, got {other:?}"),
    }
}

async fn expect_pong(c: &mut Client) {
    c.send(&ClientMessage::Ping { ts: Some(42.0) })
        .await
        .unwrap();
    let ev = c
        .wait_event(WAIT, |e| matches!(e, ServerMessage::Pong { .. }))
        .await;
    assert_eq!(
        ev,
        Some(ServerMessage::Pong { ts: Some(42.0) }),
        "the socket still answers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_get_error_codes_and_the_room_keeps_working() {
    let app = spawn_app(3).await;
    let room = format!("bad-{}", uuid::Uuid::new_v4().simple());
    // Two well-behaved participants exchanging media.
    let mut a = Client::join(&app.ws_url("a"), &room, "a").await.unwrap();
    a.publish(&[(Source::Camera, SyntheticTrack::video())])
        .await
        .unwrap();
    let mut b = Client::join(&app.ws_url("b"), &room, "b").await.unwrap();
    b.publish(&[(Source::Microphone, SyntheticTrack::audio())])
        .await
        .unwrap();
    assert!(
        eventually(WAIT, || b.remote_tracks().iter().any(|t| t
            .stats
            .lock()
            .unwrap()
            .received
            > 10))
        .await
    );

    // A third one misbehaves on its own socket.
    let mut m = Client::join(&app.ws_url("m"), &room, "m").await.unwrap();
    m.send_raw("{not json").await.unwrap();
    expect_error(&mut m, ErrorCode::BadJson).await;
    m.send_raw(r#"{"type":"teleport"}"#).await.unwrap();
    expect_error(&mut m, ErrorCode::UnknownType).await;
    m.send_raw(r#"{"type":"publish_offer"}"#).await.unwrap();
    expect_error(&mut m, ErrorCode::BadJson).await;
    m.send(&ClientMessage::PublishOffer {
        sdp: "v=0\r\n".repeat(14_000),
        tracks: vec![],
    })
    .await
    .unwrap();
    expect_error(&mut m, ErrorCode::SdpTooLarge).await;
    m.send(&ClientMessage::PublishOffer {
        sdp: "this is no sdp".into(),
        tracks: vec![],
    })
    .await
    .unwrap();
    expect_error(&mut m, ErrorCode::InvalidSdp).await;
    m.send(&ClientMessage::Candidate {
        target: Target::Publisher,
        candidate: CandidateMsg {
            candidate: "candidate:bogus".into(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
        },
    })
    .await
    .unwrap();
    expect_error(&mut m, ErrorCode::InvalidCandidate).await;
    m.send(&ClientMessage::SubscribeAnswer { sdp: "v=0".into() })
        .await
        .unwrap();
    expect_error(&mut m, ErrorCode::NegotiationFailed).await;
    m.send(&ClientMessage::Join {
        room: room.clone(),
        name: "again".into(),
    })
    .await
    .unwrap();
    expect_error(&mut m, ErrorCode::AlreadyJoined).await;
    expect_pong(&mut m).await;

    // The room is full (capacity 3): a fourth is refused with room_full, and may retry elsewhere.
    match Client::join(&app.ws_url("d"), &room, "d").await {
        Err(confab_client::ClientError::Refused { code, .. }) => {
            assert_eq!(code, ErrorCode::RoomFull)
        }
        Err(e) => panic!("expected room_full, got {e}"),
        Ok(_) => panic!("a full room admitted a fourth participant"),
    }

    // Media between the others never stopped.
    let before: u64 = b
        .remote_tracks()
        .iter()
        .map(|t| t.stats.lock().unwrap().received)
        .sum();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after: u64 = b
        .remote_tracks()
        .iter()
        .map(|t| t.stats.lock().unwrap().received)
        .sum();
    assert!(after > before, "media keeps flowing: {before} -> {after}");
    assert!(
        eventually(WAIT, || a.remote_tracks().iter().any(|t| t
            .stats
            .lock()
            .unwrap()
            .received
            > 10))
        .await
    );
    expect_pong(&mut a).await;
    m.leave().await;
    a.leave().await;
    b.leave().await;
}

#[tokio::test]
async fn messages_before_join_and_invalid_room_names_are_refused() {
    let app = spawn_app(16).await;
    // Join with an invalid room id: refused, the socket stays usable for a valid join.
    let err = Client::join(&app.ws_url("x"), "no spaces allowed", "x")
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(
            err,
            confab_client::ClientError::Refused {
                code: ErrorCode::InvalidRoom,
                ..
            }
        ),
        "{err}"
    );
    let err = Client::join(&app.ws_url("x"), "ok-room", "")
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(
            err,
            confab_client::ClientError::Refused {
                code: ErrorCode::InvalidName,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_websocket_without_a_valid_token_is_refused_before_the_upgrade() {
    let app = spawn_app(16).await;
    for url in [
        format!("ws://{}/ws", app.addr),
        format!("ws://{}/ws?token=garbage", app.addr),
        format!(
            "ws://{}/ws?token={}",
            app.addr,
            confab::auth::TokenAuthority::new("another-secret-entirely-xxxxxxxx".to_owned().into())
                .mint("u", "u", 60, None)
        ),
    ] {
        match tokio_tungstenite::connect_async(&url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 401, "{url}")
            }
            other => panic!("{url}: expected HTTP 401, got {:?}", other.map(|_| ())),
        }
    }
}

/// Replies and errors echo a request's `request_id` (a short string or an integer), so a client
/// can match them; others are not echoed and do not break anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_and_errors_echo_the_request_id() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let app = spawn_app(3).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(app.ws_url("rid"))
        .await
        .unwrap();
    let mut ask = async |text: &str, want: &str| -> serde_json::Value {
        ws.send(Message::text(text)).await.unwrap();
        tokio::time::timeout(WAIT, async {
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Text(t) = m {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == want {
                        return v;
                    }
                }
            }
            panic!("socket closed")
        })
        .await
        .expect("answered")
    };
    let v = ask(r#"{"type":"ping","ts":1,"request_id":"r-1"}"#, "pong").await;
    assert_eq!(v["request_id"], "r-1");
    let v = ask(r#"{"type":"bogus","request_id":7}"#, "error").await;
    assert_eq!(
        (v["code"].as_str(), v["request_id"].as_i64()),
        (Some("unknown_type"), Some(7))
    );
    let v = ask(
        r#"{"type":"mute","source":"camera","muted":true,"request_id":"m"}"#,
        "error",
    )
    .await;
    assert_eq!(
        (v["code"].as_str(), v["request_id"].as_str()),
        (Some("not_joined"), Some("m"))
    );
    let v = ask(
        r#"{"type":"join","room":"rid-room","name":"R","request_id":"j"}"#,
        "joined",
    )
    .await;
    assert_eq!(v["request_id"], "j");
    let long = "x".repeat(65);
    let v = ask(
        &format!(r#"{{"type":"ping","ts":2,"request_id":"{long}"}}"#),
        "pong",
    )
    .await;
    assert!(
        v.get("request_id").is_none(),
        "a request id over 64 bytes is not echoed"
    );
    let v = ask(r#"{"type":"ping","ts":3,"request_id":{"a":1}}"#, "pong").await;
    assert!(v.get("request_id").is_none(), "an object is not echoed");
}
