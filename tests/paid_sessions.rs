//! Paid sessions end on chain, exactly once: against a real anvil with the LangDAO contract, the
//! student starts a session on chain, joins a room through the server, and the session ends each
//! of the four ways (End, both parties leaving on purpose, a disconnect past the grace period,
//! missed heartbeats); the tutor is paid and `SessionEnded` is recorded. A reconnect within the
//! grace period does not end it, and neither does a dropped socket before the grace ends. A room
//! runs one paid session at a time. A chain outage delays settlement (retries, visible in
//! `/metrics`) without losing or doubling it; so does a crash of the server between the outbox row
//! and the receipt. LangDAO's `/api/webrtc-events` work.

mod common;
mod paid_common;

use common::{CuttableProxy, TestApp};
use confab_client::Client;
use confab_protocol::{ClientMessage, ServerMessage};
use confab_settlement::{Address, U256};
use paid_common::chainkit::{
    self,
    chain::{Chain, SPANISH, STUDENT, TUTOR},
};
use paid_common::{addr, init_env, report_started, room, API_SECRET, WAIT};
use std::time::{Duration, Instant};

async fn app_for(chain: &Chain, rpc: Option<String>, grace_s: u64, heartbeat_s: u64) -> TestApp {
    paid_common::paid_app(chain, rpc, |a| {
        a.paid_grace_s = grace_s;
        a.paid_heartbeat_timeout_s = heartbeat_s;
        a.settlement_retry_ms = 200;
    })
    .await
}

async fn join(app: &TestApp, room: &str, who: usize) -> Client {
    paid_common::join_as(app, &addr(who), &format!("user{who}"), room).await
}

async fn status(app: &TestApp, room: &str) -> serde_json::Value {
    app.get_json(&format!("/api/rooms/{room}/paid-session"), "observer")
        .await
}

/// Polls the room's settlement until it is final; returns the status.
async fn settled(app: &TestApp, room: &str, within: Duration) -> serde_json::Value {
    let token = app.tokens.mint("observer", "observer", 60, None);
    paid_common::settlement_final(&format!("http://{}", app.addr), &token, room, within).await
}

async fn session_ended_events(chain: &Chain) -> usize {
    session_ended_total_paid(chain).await.len()
}

/// `totalPaid` of every `SessionEnded` the contract emitted, read from the chain's logs (the event's
/// data is `abi.encode(duration, totalPaid)`).
async fn session_ended_total_paid(chain: &Chain) -> Vec<U256> {
    use alloy::providers::Provider;
    use alloy::sol_types::SolEvent;
    let topic = confab_settlement::bindings::LangDAO::SessionEnded::SIGNATURE_HASH;
    let filter = serde_json::json!({"address": chain.dao, "fromBlock": "0x0", "toBlock": "latest", "topics": [topic]});
    let logs: Vec<serde_json::Value> = chain
        .student
        .raw_request("eth_getLogs".into(), [filter])
        .await
        .unwrap();
    logs.iter()
        .map(|l| {
            let data = l["data"].as_str().unwrap().trim_start_matches("0x");
            U256::from_str_radix(&data[64..128], 16).unwrap()
        })
        .collect()
}

/// The tutor's tokens, in the wallet and deposited in the contract.
async fn tutor_funds(chain: &Chain) -> U256 {
    chain.token_balance(chainkit::address(TUTOR)).await
        + chain.deposited(chainkit::address(TUTOR)).await
}

/// Polls `/metrics` until it has `line` (a whole line, e.g. `confab_settlements_open 1`).
async fn metrics_show(app: &TestApp, line: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let text = app.metrics_text().await;
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/metrics never showed {line:?}:\n{}",
            text.lines()
                .filter(|l| l.starts_with("confab_settle"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A participant on a bare WebSocket (no media), joined to `room` as account `who`: dropping it
/// cuts the connection without a `leave`, as a closed laptop lid or a lost network does.
async fn join_bare(
    app: &TestApp,
    room: &str,
    who: usize,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let token = app
        .tokens
        .mint(&addr(who), &format!("user{who}"), 600, None);
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?token={token}", app.addr))
            .await
            .expect("websocket");
    let join = serde_json::json!({"type": "join", "room": room, "name": format!("user{who}")});
    ws.send(Message::Text(join.to_string().into()))
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                if serde_json::from_str::<serde_json::Value>(&t).unwrap()["type"] == "joined" {
                    return;
                }
            }
        }
        panic!("socket closed before joined");
    })
    .await
    .expect("joined in time");
    ws
}

/// A cuttable proxy in front of the chain's JSON-RPC.
async fn rpc_proxy(chain: &Chain) -> CuttableProxy {
    CuttableProxy::start(paid_common::rpc_addr(chain)).await
}

/// A fresh chain and server (grace and heartbeat timeout in s), a session started on chain, the
/// student and the tutor in a new room, and the session reported:
/// `(chain, app, room, student, tutor, paid session id)`.
async fn paid_room(
    grace_s: u64,
    heartbeat_s: u64,
) -> (Chain, TestApp, String, Client, Client, String) {
    let chain = Chain::deploy().await;
    let app = app_for(&chain, None, grace_s, heartbeat_s).await;
    chain.start_session().await;
    let room = room();
    let mut student = join(&app, &room, STUDENT).await;
    let tutor = join(&app, &room, TUTOR).await;
    let id = report_started(&mut student).await;
    (chain, app, room, student, tutor, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_button_ends_the_session_on_chain_and_pays_the_tutor() {
    // The student's startSession escrows only the student's funds: the tutor's are untouched.
    let (chain, app, room, mut student, mut tutor, id) = paid_room(30, 120).await;
    // The tutor is told at once (pushed, no polling); the student, who asked, only once.
    let pushed = tutor
        .wait_event(WAIT, |e| matches!(e, ServerMessage::PaidSession { .. }))
        .await;
    assert!(
        matches!(&pushed, Some(ServerMessage::PaidSession { session }) if session.id == id),
        "{pushed:?}"
    );
    let again = student
        .wait_event(Duration::from_millis(500), |e| {
            matches!(e, ServerMessage::PaidSession { .. })
        })
        .await;
    assert!(
        again.is_none(),
        "a second paid_session for the student: {again:?}"
    );
    let tutor_before = chain.token_balance(chainkit::address(TUTOR)).await
        + chain.deposited(chainkit::address(TUTOR)).await;
    let s = status(&app, &room).await;
    assert_eq!(s["running"], true);
    // The page is told where to start sessions: this contract, on anvil's chain.
    assert_eq!(s["contract"], chain.dao.to_checksum(None), "{s}");
    assert_eq!(s["chain_id"], 31337, "{s}");
    chainkit::advance_time(&chain.wallet(0), 60).await;

    tutor.send(&ClientMessage::EndSession).await.unwrap();
    let ended = student
        .wait_event(WAIT, |e| {
            matches!(e, ServerMessage::PaidSessionEnded { .. })
        })
        .await;
    assert_eq!(
        ended,
        Some(ServerMessage::PaidSessionEnded {
            id: id.clone(),
            reason: "participant_ended".into()
        })
    );
    let s = settled(&app, &room, WAIT).await;
    assert_eq!(s["settlement"]["state"], "settled", "{s}");
    assert_eq!(s["session"]["end_reason"], "participant_ended");
    let paid: U256 = s["settlement"]["total_paid"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        paid >= U256::from(60 * chainkit::chain::RATE),
        "at least 60 s billed: {paid}"
    );
    let tutor_after = chain.token_balance(chainkit::address(TUTOR)).await
        + chain.deposited(chainkit::address(TUTOR)).await;
    assert_eq!(
        tutor_after - tutor_before,
        paid,
        "the tutor received what SessionEnded says"
    );
    assert_eq!(session_ended_events(&chain).await, 1);
    println!("End button: settled {s}");
    student.leave().await;
    tutor.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_both_parties_leave_on_purpose_the_session_settles_at_once_not_after_the_grace() {
    // The 30 s grace is the default: a settlement within seconds proves nobody waited for it.
    let (chain, app, room, student, tutor, id) = paid_room(30, 120).await;
    let tutor_before = tutor_funds(&chain).await;
    chainkit::advance_time(&chain.wallet(0), 60).await;

    student.leave().await;
    // The student alone leaving closes nothing: the tutor is still in the room.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        status(&app, &room).await["running"],
        true,
        "one party leaving does not end the session"
    );
    tutor.leave().await;
    let closed = Instant::now();
    let s = settled(&app, &room, WAIT).await;
    let took = closed.elapsed();
    assert_eq!(s["settlement"]["state"], "settled", "{s}");
    assert!(
        took < Duration::from_secs(8),
        "settled {took:?} after the room closed: the 30 s grace was waited for"
    );
    assert_eq!(s["session"]["id"], id);
    assert_eq!(s["session"]["end_reason"], "participant_ended", "{s}");
    let paid = session_ended_total_paid(&chain).await;
    assert_eq!(paid.len(), 1, "exactly one SessionEnded");
    assert!(
        paid[0] >= U256::from(60 * chainkit::chain::RATE),
        "at least 60 s billed: {}",
        paid[0]
    );
    assert_eq!(
        tutor_funds(&chain).await - tutor_before,
        paid[0],
        "the tutor received SessionEnded.totalPaid"
    );
    assert_eq!(s["settlement"]["total_paid"], paid[0].to_string());
    println!("both left: settled {took:?} after the room closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_without_leave_still_waits_for_the_grace_period() {
    const GRACE: Duration = Duration::from_secs(4);
    let chain = Chain::deploy().await;
    let app = app_for(&chain, None, GRACE.as_secs(), 120).await;
    chain.start_session().await;
    let room = room();
    let mut student = join(&app, &room, STUDENT).await;
    let tutor = join_bare(&app, &room, TUTOR).await;
    report_started(&mut student).await;

    // The tutor's connection is cut (no `leave`), then the student leaves on purpose: the tutor
    // may still come back, so this is not a closed room.
    drop(tutor);
    let cut = Instant::now();
    student.leave().await;
    tokio::time::sleep(GRACE / 2).await;
    let s = status(&app, &room).await;
    assert_eq!(
        s["running"],
        true,
        "ended {:?} after a dropped socket, before the {GRACE:?} grace: {s}",
        cut.elapsed()
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    let s = loop {
        let s = status(&app, &room).await;
        if s["running"] == false {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "never ended: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let after = cut.elapsed();
    assert!(
        after >= GRACE - Duration::from_millis(300),
        "ended {after:?} after the cut, before the {GRACE:?} grace"
    );
    assert_eq!(s["session"]["end_reason"], "disconnected", "{s}");
    let s = settled(&app, &room, WAIT).await;
    assert_eq!(s["settlement"]["state"], "settled", "{s}");
    assert_eq!(session_ended_events(&chain).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_paid_session_in_a_busy_room_is_refused_and_the_first_still_settles() {
    let (chain, app, room, mut student, tutor, id) = paid_room(30, 120).await;
    // A real second session on chain, with another tutor: without the rule it would be accepted
    // and replace the first, which would then never be settled.
    let tutor2 = chain.new_tutor().await;
    chain.start_session_with(tutor2).await;
    let started = |tutor: String| ClientMessage::SessionStarted {
        tutor,
        language: SPANISH,
    };
    let answer = |e: &ServerMessage| {
        matches!(
            e,
            ServerMessage::PaidSession { .. } | ServerMessage::Error { .. }
        )
    };

    student
        .send(&started(tutor2.to_checksum(None)))
        .await
        .unwrap();
    let r = student.wait_event(WAIT, answer).await;
    assert!(
        matches!(
            &r,
            Some(ServerMessage::Error {
                code: confab_protocol::ErrorCode::PaidSessionRunning,
                ..
            })
        ),
        "{r:?}"
    );
    // The same refusal over REST, from another backend.
    let r = common::http()
        .post(format!("http://{}/api/sessions", app.addr))
        .bearer_auth(API_SECRET)
        .json(&serde_json::json!({"room": room, "student": addr(STUDENT), "tutor": tutor2.to_checksum(None), "language": SPANISH}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "paid_session_running", "{body}");
    // The very same start again is a resend, answered with the running session.
    student.send(&started(addr(TUTOR))).await.unwrap();
    let r = student.wait_event(WAIT, answer).await;
    assert!(
        matches!(&r, Some(ServerMessage::PaidSession { session }) if session.id == id),
        "{r:?}"
    );
    let s = status(&app, &room).await;
    assert_eq!(
        (&s["running"], &s["session"]["id"]),
        (&serde_json::json!(true), &serde_json::json!(id)),
        "the first session is untouched: {s}"
    );

    // The first ends and settles.
    tutor.send(&ClientMessage::EndSession).await.unwrap();
    let s = settled(&app, &room, WAIT).await;
    assert_eq!(s["settlement"]["state"], "settled", "{s}");
    assert_eq!(s["session"]["id"], id);
    assert_eq!(session_ended_events(&chain).await, 1);

    // Now the room is free: the second session starts, and ends and settles in turn.
    student
        .send(&started(tutor2.to_checksum(None)))
        .await
        .unwrap();
    let second = match student.wait_event(WAIT, answer).await {
        Some(ServerMessage::PaidSession { session }) => session,
        other => panic!("expected paid_session after the first ended, got {other:?}"),
    };
    assert_ne!(second.id, id);
    assert_eq!(second.tutor, tutor2.to_checksum(None));
    student.send(&ClientMessage::EndSession).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = status(&app, &room).await;
        if s["session"]["id"] == second.id && s["settlement"]["state"] == "settled" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "second not settled: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(session_ended_events(&chain).await, 2);
    student.leave().await;
    tutor.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_ends_the_session_after_the_grace_period_but_a_quick_reconnect_does_not() {
    let (chain, app, room, mut student, tutor, _) = paid_room(2, 120).await;

    // The tutor drops and is back within the grace period: still running.
    tutor.leave().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let tutor = join(&app, &room, TUTOR).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        status(&app, &room).await["running"],
        true,
        "a reconnect within the grace period keeps the session"
    );

    // Now the tutor goes for good.
    tutor.leave().await;
    let ended = student
        .wait_event(WAIT, |e| {
            matches!(e, ServerMessage::PaidSessionEnded { .. })
        })
        .await;
    assert!(
        matches!(ended, Some(ServerMessage::PaidSessionEnded { reason, .. }) if reason == "disconnected")
    );
    let s = settled(&app, &room, WAIT).await;
    assert_eq!(s["settlement"]["state"], "settled", "{s}");
    assert_eq!(session_ended_events(&chain).await, 1);
    student.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_heartbeats_end_the_session() {
    let (_chain, app, room, mut student, tutor, _) = paid_room(30, 2).await;
    // Nobody sends a heartbeat (ping) for 2 s.
    let ended = student
        .wait_event(WAIT, |e| {
            matches!(e, ServerMessage::PaidSessionEnded { .. })
        })
        .await;
    assert!(
        matches!(&ended, Some(ServerMessage::PaidSessionEnded { reason, .. }) if reason == "heartbeat_timeout"),
        "{ended:?}"
    );
    let s = settled(&app, &room, WAIT).await;
    assert_eq!(s["settlement"]["state"], "settled", "{s}");
    student.leave().await;
    tutor.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_outage_delays_settlement_with_retries_and_settles_exactly_once() {
    let chain = Chain::deploy().await;
    let proxy = rpc_proxy(&chain).await;
    let app = app_for(&chain, Some(format!("http://{}", proxy.addr)), 30, 120).await;
    chain.start_session().await;
    let room = room();
    let mut student = join(&app, &room, STUDENT).await;
    report_started(&mut student).await;

    proxy.cut().await;
    student.send(&ClientMessage::EndSession).await.unwrap();
    // Retries pile up while the chain is down.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = status(&app, &room).await;
        if s["settlement"]["attempts"].as_i64().unwrap_or(0) >= 2 {
            assert_eq!(s["settlement"]["state"], "pending", "{s}");
            assert!(
                s["settlement"]["last_error"]
                    .as_str()
                    .is_some_and(|e| !e.is_empty()),
                "{s}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no retries seen: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The open settlement is visible to an operator.
    metrics_show(&app, "confab_settlements_open 1", WAIT).await;
    metrics_show(&app, "confab_settlements_set_aside 0", WAIT).await;
    let oldest: f64 = app
        .metrics_text()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("confab_settlement_oldest_open_seconds "))
        .expect("the oldest-open gauge")
        .parse()
        .unwrap();
    assert!(oldest > 0.0, "the open settlement has an age: {oldest}");
    proxy.restore();
    let s = settled(&app, &room, Duration::from_secs(60)).await;
    assert_eq!(s["settlement"]["state"], "settled", "{s}");
    metrics_show(&app, "confab_settlements_open 0", WAIT).await;
    assert_eq!(
        session_ended_events(&chain).await,
        1,
        "exactly one endSession"
    );
    student.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_outbox_row_and_the_receipt_still_settles_exactly_once() {
    init_env();
    let chain = Chain::deploy().await;
    let proxy = rpc_proxy(&chain).await;
    let data_dir = std::env::temp_dir().join(format!("confab-crash-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&data_dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = |rpc: String| {
        std::process::Command::new(env!("CARGO_BIN_EXE_confab"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--media-port",
                "0",
                "--public-ip",
                "127.0.0.1",
            ])
            .arg("--data-dir")
            .arg(&data_dir)
            .env("CHAIN_RPC_URL", rpc)
            .env("CONFAB_CONTRACT_ADDRESS", chain.dao.to_checksum(None))
            .env("CONFAB_SETTLEMENT_RETRY_MS", "200")
            // The killed server may hold the row's lease (mid-attempt): the next one takes it
            // over once the lease runs out, not after the default 5 min.
            .env("CONFAB_SETTLEMENT_LEASE_S", "5")
            .env("CONFAB_JWT_SECRET", "crash-test-secret-0123456789abcdef")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start confab")
    };
    let wait_up = || async {
        for _ in 0..200 {
            if common::http()
                .get(format!("http://127.0.0.1:{port}/healthz"))
                .send()
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server did not come up");
    };
    let tokens =
        confab::auth::TokenAuthority::new("crash-test-secret-0123456789abcdef".to_owned().into());
    chain.start_session().await;
    let mut server = start(format!("http://{}", proxy.addr));
    wait_up().await;
    let room = room();
    let url = format!(
        "ws://127.0.0.1:{port}/ws?token={}",
        tokens.mint(&addr(STUDENT), "student", 600, None)
    );
    let mut student = Client::join(&url, &room, "student").await.unwrap();
    report_started(&mut student).await;
    proxy.cut().await;
    student.send(&ClientMessage::EndSession).await.unwrap();
    let ended = student
        .wait_event(WAIT, |e| {
            matches!(e, ServerMessage::PaidSessionEnded { .. })
        })
        .await;
    assert!(ended.is_some(), "the end is stored (outbox row written)");
    // Crash: no graceful shutdown, no flush.
    server.kill().unwrap();
    server.wait().unwrap();
    assert_eq!(
        session_ended_events(&chain).await,
        0,
        "nothing was mined before the crash"
    );
    proxy.restore();
    let mut server = start(format!("http://{}", proxy.addr));
    wait_up().await;
    let token = tokens.mint("observer", "observer", 60, None);
    let base = format!("http://127.0.0.1:{port}");
    let s = paid_common::settlement_final(&base, &token, &room, Duration::from_secs(60)).await;
    assert_eq!(
        s["settlement"]["state"], "settled",
        "not settled after restart: {s}"
    );
    assert_eq!(
        session_ended_events(&chain).await,
        1,
        "exactly one endSession mined across the crash"
    );
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn langdao_webrtc_events_are_accepted_with_the_same_meaning() {
    let chain = Chain::deploy().await;
    let app = app_for(&chain, None, 30, 120).await;
    chain.start_session().await;
    let room = room();
    let mut student = join(&app, &room, STUDENT).await;
    report_started(&mut student).await;
    let http = common::http();
    let url = format!("http://{}/api/webrtc-events", app.addr);
    let post = |body: serde_json::Value, secret: &'static str| {
        http.post(&url).bearer_auth(secret).json(&body).send()
    };
    // Heartbeat and a disconnect are accepted for a running session.
    let r = post(serde_json::json!({"type": "session-heartbeat", "sessionId": room, "userAddress": addr(STUDENT)}), API_SECRET).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = post(serde_json::json!({"type": "user-disconnected", "sessionId": room, "userRole": "tutor", "reason": "tab closed"}), API_SECRET).await.unwrap();
    assert_eq!(r.status(), 200);
    // Bad secret, malformed body, unknown session, unknown type.
    let r = post(
        serde_json::json!({"type": "session-heartbeat", "sessionId": room}),
        "wrong-secret-wrong-secret-wrong!",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(&url)
        .bearer_auth(API_SECRET)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = post(
        serde_json::json!({"type": "session-heartbeat", "sessionId": "no-such-room"}),
        API_SECRET,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    let r = post(
        serde_json::json!({"type": "teleport", "sessionId": room}),
        API_SECRET,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    // session-ended ends it, once.
    let r = post(serde_json::json!({"type": "session-ended", "sessionId": room, "endedBy": "student", "userAddress": addr(STUDENT)}), API_SECRET).await.unwrap();
    assert_eq!(r.status(), 200);
    let ended = student
        .wait_event(WAIT, |e| {
            matches!(e, ServerMessage::PaidSessionEnded { .. })
        })
        .await;
    assert!(
        matches!(ended, Some(ServerMessage::PaidSessionEnded { reason, .. }) if reason == "participant_ended")
    );
    let s = settled(&app, &room, WAIT).await;
    assert_eq!(s["settlement"]["state"], "settled");
    let r = post(
        serde_json::json!({"type": "session-ended", "sessionId": room, "endedBy": "tutor"}),
        API_SECRET,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404, "an ended session is no longer running");
    assert_eq!(session_ended_events(&chain).await, 1);

    // POST /api/sessions: a second session, declared by another backend, checked against the chain.
    let r = http
        .post(format!("http://{}/api/sessions", app.addr))
        .bearer_auth(API_SECRET)
        .json(&serde_json::json!({"room": "backend-room", "student": addr(STUDENT), "tutor": addr(TUTOR), "language": SPANISH}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "no active session on chain any more");
    let _: Address = chainkit::address(TUTOR);
    student.leave().await;
}

#[tokio::test]
async fn without_chain_settings_paid_sessions_are_refused_clearly() {
    let app = common::spawn_app(16).await;
    let room = room();
    let mut c = join(&app, &room, STUDENT).await;
    c.send(&ClientMessage::SessionStarted {
        tutor: addr(TUTOR),
        language: 1,
    })
    .await
    .unwrap();
    let e = c
        .wait_event(WAIT, |e| matches!(e, ServerMessage::Error { .. }))
        .await;
    assert!(
        matches!(
            e,
            Some(ServerMessage::Error {
                code: confab_protocol::ErrorCode::PaidSessionsDisabled,
                ..
            })
        ),
        "{e:?}"
    );
    c.leave().await;
}
