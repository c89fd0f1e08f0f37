//! Server-wide limits on the signaling entry point: a socket that never joins (nor uses presence,
//! calls or matching) is closed after 10 s with `join_timeout`, while a lobby socket stays; and
//! `--max-total-participants` refuses joins past it with `server_full`, and admits again once
//! someone leaves.

mod common;

use std::time::Duration;

use confab_client::{Client, ClientError};
use confab_protocol::ErrorCode;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_never_joins_is_closed_after_10_s_but_a_lobby_socket_stays() {
    let app = common::spawn_app(4).await;
    let (mut idle, _) = tokio_tungstenite::connect_async(app.ws_url("idle"))
        .await
        .unwrap();
    let (mut lobby, _) = tokio_tungstenite::connect_async(app.ws_url("lobby"))
        .await
        .unwrap();
    lobby
        .send(Message::text(json!({"type": "watch_presence"}).to_string()))
        .await
        .unwrap();
    let opened = tokio::time::Instant::now();

    // The idle socket: an error with its code, then the close, 10 s after it opened.
    let mut code = None;
    let mut closed = false;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(15), idle.next()).await {
        match m {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "error" {
                    code = v["code"].as_str().map(str::to_owned);
                }
            }
            Ok(Message::Close(_)) | Err(_) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    let after = opened.elapsed();
    assert_eq!(code.as_deref(), Some("join_timeout"));
    assert!(closed, "the idle socket was closed");
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(13)).contains(&after),
        "closed {after:?} after opening"
    );

    // The lobby socket still answers.
    lobby
        .send(Message::text(json!({"type": "ping", "ts": 1}).to_string()))
        .await
        .unwrap();
    let pong = loop {
        let m = tokio::time::timeout(Duration::from_secs(5), lobby.next())
            .await
            .expect("an answer")
            .expect("open")
            .expect("a frame");
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "pong" {
                break v;
            }
        }
    };
    assert_eq!(pong["ts"].as_f64(), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_past_the_server_wide_cap_get_server_full_until_someone_leaves() {
    let app = common::spawn_app_with(|a| a.max_total_participants = 2).await;
    let a = Client::join(&app.ws_url("a"), "cap-1", "A")
        .await
        .expect("a");
    let b = Client::join(&app.ws_url("b"), "cap-2", "B")
        .await
        .expect("b");
    match Client::join(&app.ws_url("c"), "cap-3", "C").await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, ErrorCode::ServerFull),
        other => panic!("a third participant: {:?}", other.map(|_| ())),
    }
    a.leave().await;
    let mut admitted = None;
    for _ in 0..50 {
        match Client::join(&app.ws_url("c"), "cap-3", "C").await {
            Ok(c) => {
                admitted = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(admitted.is_some(), "admitted once a participant left");
    b.leave().await;
}
