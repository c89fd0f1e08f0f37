//! Limits on the signaling entry point: a socket that never joins (nor uses presence, calls or
//! matching) is closed after 10 s with `join_timeout`, while a lobby socket stays;
//! `--max-total-participants` refuses joins past it with `server_full`, and admits again once
//! someone leaves; a participant whose publisher never connects is removed (`connect_timeout`);
//! and one client opening 500 sockets and flooding joins from its own address cannot keep a
//! neighbour from getting a token, joining and exchanging media.

mod common;

use std::time::Duration;

use confab_client::{Client, ClientError, SyntheticTrack};
use confab_protocol::{ErrorCode, ServerMessage, Source};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_whose_publisher_never_connects_is_removed_and_its_place_freed() {
    let app = common::spawn_app_with(|a| {
        a.connect_timeout_s = 3;
        a.max_participants = 2;
    })
    .await;
    let mut ghost = Client::join(&app.ws_url("ghost"), "ghost-room", "Ghost")
        .await
        .expect("ghost joins");
    let mut real = Client::join(&app.ws_url("real"), "ghost-room", "Real")
        .await
        .expect("real joins");
    real.publish(&[(Source::Microphone, SyntheticTrack::audio())])
        .await
        .expect("real publishes");
    // The room is full until the ghost goes.
    match Client::join(&app.ws_url("third"), "ghost-room", "Third").await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, ErrorCode::RoomFull),
        other => panic!("a third participant: {:?}", other.map(|_| ())),
    }
    assert!(
        told_connect_timeout(&mut ghost).await,
        "the ghost is told connect_timeout"
    );
    let mut third = Client::join(&app.ws_url("third"), "ghost-room", "Third")
        .await
        .expect("the freed place admits a third");
    // The third never publishes either, and goes the same way; the participant that connected
    // stays, well past the timeout.
    assert!(
        told_connect_timeout(&mut third).await,
        "the third is told connect_timeout"
    );
    assert_eq!(app.metric("confab_participants").await, 1.0);
    assert_eq!(app.metric("confab_connect_timeouts_total").await, 2.0);
    real.leave().await;
}

/// Whether `c` gets `connect_timeout` within 8 s.
async fn told_connect_timeout(c: &mut Client) -> bool {
    c.wait_event(Duration::from_secs(8), |m| {
        matches!(
            m,
            ServerMessage::Error {
                code: ErrorCode::ConnectTimeout,
                ..
            }
        )
    })
    .await
    .is_some()
}

/// Opens a signaling socket from `source` (an address of the loopback network other than the
/// server's, so the server sees another client): the upgrade's HTTP status on refusal.
async fn open_from(
    source: std::net::IpAddr,
    url: &str,
    server: std::net::SocketAddr,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    Option<tokio_tungstenite::tungstenite::http::StatusCode>,
> {
    let socket = tokio::net::TcpSocket::new_v4().map_err(|_| None)?;
    socket
        .bind(std::net::SocketAddr::new(source, 0))
        .map_err(|_| None)?;
    let stream = socket.connect(server).await.map_err(|_| None)?;
    match tokio_tungstenite::client_async(url, stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(Some(r.status())),
        Err(_) => Err(None),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_500_sockets_and_a_join_flood_cannot_keep_its_neighbours_out() {
    let app = common::spawn_app_with(|a| {
        a.resume_grace_s = 2;
        a.connect_timeout_s = 5;
    })
    .await;
    let abuser_ip: std::net::IpAddr = "127.0.0.2".parse().unwrap();

    // The abuser takes as many guest identities as its address is given (20 at once, then 429).
    confab_store::ensure_crypto_provider();
    let from_abuser = reqwest::Client::builder()
        .local_address(abuser_ip)
        .build()
        .unwrap();
    let mut tokens = Vec::new();
    let mut guest_refusals = 0;
    for k in 0..40 {
        let r = from_abuser
            .post(format!("http://{}/api/guests", app.addr))
            .json(&json!({"name": format!("bot{k}")}))
            .send()
            .await
            .expect("POST /api/guests");
        if r.status().as_u16() == 429 {
            guest_refusals += 1;
            continue;
        }
        let v: Value = r.json().await.expect("JSON");
        tokens.push(v["token"].as_str().expect("token").to_owned());
    }
    println!(
        "abuser: {} guest tokens, {guest_refusals} refused",
        tokens.len()
    );
    assert!(
        tokens.len() <= 21 && guest_refusals >= 19,
        "{} tokens",
        tokens.len()
    );

    // 500 sockets at once from the abuser's address, spread over its identities: the server
    // keeps at most its per-address budget (64) open and refuses the rest at the upgrade (429).
    let attempts: Vec<_> = (0..500)
        .map(|k| {
            let url = format!("ws://{}/ws?token={}", app.addr, tokens[k % tokens.len()]);
            let addr = app.addr;
            tokio::spawn(async move { open_from(abuser_ip, &url, addr).await })
        })
        .collect();
    let mut open = Vec::new();
    let mut refused = 0;
    for a in attempts {
        match a.await.unwrap() {
            Ok(ws) => open.push(ws),
            Err(Some(status)) => {
                assert_eq!(status.as_u16(), 429);
                refused += 1;
            }
            Err(None) => panic!("a socket attempt failed without an HTTP answer"),
        }
    }
    println!(
        "abuser: {} sockets open, {refused} refused with 429",
        open.len()
    );
    assert!(
        (8..=64).contains(&open.len()),
        "{} sockets open",
        open.len()
    );
    assert_eq!(open.len() + refused, 500);

    // The open sockets flood: half join fresh rooms (and never connect a transport), half send
    // `resume` with made-up credentials, as fast as the per-socket message budget lets them.
    let flood = tokio::spawn(async move {
        let mut codes = std::collections::BTreeMap::<String, u32>::new();
        for round in 0..40 {
            for (k, ws) in open.iter_mut().enumerate() {
                let m = if k % 2 == 0 {
                    json!({"type": "join", "room": format!("flood-{round}-{k}"), "name": "x"})
                } else {
                    json!({"type": "resume", "participant_id": "p1", "resume_token": format!("{round:032x}")})
                };
                let _ = ws.send(Message::text(m.to_string())).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            for ws in open.iter_mut() {
                while let Ok(Some(Ok(Message::Text(t)))) =
                    tokio::time::timeout(Duration::from_millis(5), ws.next()).await
                {
                    let v: Value = serde_json::from_str(&t).unwrap_or_default();
                    let key = match v["type"].as_str() {
                        Some("error") => v["code"].as_str().unwrap_or("?").to_owned(),
                        Some(other) => other.to_owned(),
                        None => "?".into(),
                    };
                    *codes.entry(key).or_default() += 1;
                }
            }
        }
        (open, codes)
    });

    // Meanwhile two neighbours on another address get guest tokens, join and publish.
    let mut neighbours = Vec::new();
    for name in ["Ada", "Bo"] {
        let r: Value = common::http()
            .post(format!("http://{}/api/guests", app.addr))
            .json(&json!({"name": name}))
            .send()
            .await
            .expect("POST /api/guests")
            .json()
            .await
            .expect("JSON");
        let token = r["token"].as_str().expect("a guest token");
        let ws = format!("ws://{}/ws?token={token}", app.addr);
        let mut c = Client::join(&ws, "neighbours", name)
            .await
            .expect("a neighbour joins during the flood");
        c.publish(&common::av())
            .await
            .expect("a neighbour publishes");
        neighbours.push(c);
    }
    let ids: Vec<String> = neighbours
        .iter()
        .map(|c| c.participant_id.clone())
        .collect();
    assert!(
        common::eventually(Duration::from_secs(20), || {
            common::received_from(&neighbours[0], &ids[1]).len() == 2
                && common::received_from(&neighbours[1], &ids[0]).len() == 2
        })
        .await,
        "each neighbour receives the other's two tracks"
    );
    // A 20 s window, while the flood goes on: packets received against packets sent.
    let window = Duration::from_secs(20);
    let before: Vec<Vec<u64>> = (0..2)
        .map(|i| {
            common::received_from(&neighbours[i], &ids[1 - i])
                .iter()
                .map(|t| t.stats.lock().unwrap().received)
                .collect()
        })
        .collect();
    tokio::time::sleep(window).await;
    for i in 0..2 {
        for (t, b) in common::received_from(&neighbours[i], &ids[1 - i])
            .iter()
            .zip(&before[i])
        {
            let s = t.stats.lock().unwrap().clone();
            let spec = if t.video {
                SyntheticTrack::video()
            } else {
                SyntheticTrack::audio()
            };
            let sent = f64::from(spec.packets_per_s) * window.as_secs_f64();
            let got = (s.received - b) as f64;
            println!(
                "{} <- {} {}: {got} of ~{sent} packets in {window:?}, loss {:.2} %, longest gap {} ms",
                ids[i],
                ids[1 - i],
                if t.video { "video" } else { "audio" },
                s.loss() * 100.0,
                s.max_gap_us / 1000
            );
            assert!(got >= 0.95 * sent, "{got} of ~{sent} packets");
            assert!(s.loss() < 0.01, "loss {:.3}", s.loss());
            assert!(
                s.max_gap_us < 1_000_000,
                "a gap of {} ms",
                s.max_gap_us / 1000
            );
        }
    }
    let (open, codes) = flood.await.unwrap();
    println!("answers to the abuser's joins: {codes:?}");
    assert!(
        codes.get("rate_limited").copied().unwrap_or(0) > 0,
        "the join flood was rate limited: {codes:?}"
    );
    assert!(
        codes.get("joined").copied().unwrap_or(0) <= 64,
        "joins past the budgets: {codes:?}"
    );

    // Everyone goes: the abuser's sockets close, the neighbours leave; the abuser's joined
    // participants, which never connected, are gone within the connect timeout plus the grace.
    drop(open);
    for c in neighbours {
        c.leave().await;
    }
    let mut gauges = (f64::NAN, f64::NAN, f64::NAN);
    for _ in 0..100 {
        gauges = (
            app.metric("confab_participants").await,
            app.metric("confab_rooms").await,
            app.metric("confab_signaling_sockets").await,
        );
        if gauges == (0.0, 0.0, 0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        gauges,
        (0.0, 0.0, 0.0),
        "participants, rooms, sockets after everyone left"
    );
}
