//! Secrets, tokens and SDP never reach the log: the real `confab` binary runs a whole paid call
//! at `RUST_LOG=debug` (two participants join with tokens in the WebSocket URL, publish audio and
//! video through SDP offer/answer, chat, the student starts a paid session checked on chain, a
//! backend posts a LangDAO event with the API secret, the tutor ends it and the backend wallet
//! signs `endSession`); then everything the process printed is searched for the token secret,
//! the API secret, the wallet key, both access tokens, and SDP.

mod common;
mod paid_common;

use confab_client::Client;
use confab_protocol::{ClientMessage, ServerMessage};
use paid_common::chainkit::{
    self,
    chain::{Chain, STUDENT, TUTOR},
};
use paid_common::{addr, report_started, room, WAIT};
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const JWT_SECRET: &str = "log-test-jwt-secret-7f3a9c1e5b2d8f4a6c0e";
const API_SECRET: &str = "log-test-api-secret-2b7d4f9a1c6e3b8d5f0a";

/// Collects every line `r` prints into `into`.
fn collect(r: impl std::io::Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            into.lock().unwrap().push(line);
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_paid_call_at_debug_level_logs_no_secret_token_or_sdp() {
    let chain = Chain::deploy().await;
    chain.start_session().await;
    let data_dir = std::env::temp_dir().join(format!("confab-logs-{}", uuid::Uuid::new_v4()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--media-port", "0", "--public-ip", "127.0.0.1"])
        .arg("--data-dir")
        .arg(&data_dir)
        .env("RUST_LOG", "debug")
        .env("CHAIN_RPC_URL", &chain.anvil.url)
        .env("CONFAB_CONTRACT_ADDRESS", chain.dao.to_checksum(None))
        .env("CONFAB_WALLET_KEY", chainkit::KEYS[0])
        .env("CONFAB_API_SECRET", API_SECRET)
        .env("CONFAB_JWT_SECRET", JWT_SECRET)
        .env_remove("DATABASE_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start confab");
    let log = Arc::new(Mutex::new(Vec::new()));
    collect(server.stdout.take().unwrap(), Arc::clone(&log));
    collect(server.stderr.take().unwrap(), Arc::clone(&log));
    let base = format!("http://127.0.0.1:{port}");
    let http = common::http();
    let mut up = false;
    for _ in 0..200 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "server did not come up: {:?}", log.lock().unwrap());

    let tokens = confab::auth::TokenAuthority::new(JWT_SECRET.to_owned().into());
    let student_token = tokens.mint(&addr(STUDENT), "student", 600, None);
    let tutor_token = tokens.mint(&addr(TUTOR), "tutor", 600, None);
    let room = room();
    let ws = |t: &str| format!("ws://127.0.0.1:{port}/ws?token={t}");
    let mut student = Client::join(&ws(&student_token), &room, "student")
        .await
        .expect("student joins");
    let mut tutor = Client::join(&ws(&tutor_token), &room, "tutor")
        .await
        .expect("tutor joins");
    student.publish(&common::av()).await.expect("publish");
    tutor.publish(&common::av()).await.expect("publish");
    let (s_id, t_id) = (student.participant_id.clone(), tutor.participant_id.clone());
    assert!(
        common::eventually(Duration::from_secs(30), || {
            let got = |c: &Client, from: &str| {
                common::received_from(c, from)
                    .iter()
                    .map(|t| t.stats.lock().unwrap().received)
                    .sum::<u64>()
            };
            got(&student, &t_id) >= 100 && got(&tutor, &s_id) >= 100
        })
        .await,
        "media flows both ways"
    );
    student.chat_ready(WAIT).await.expect("chat channel");
    student
        .chat_send(&confab_protocol::chat::ChatClientMessage::Send {
            client_msg_id: "m1".into(),
            text: "hola".into(),
        })
        .await
        .expect("chat");

    report_started(&mut student).await;
    let r = http
        .post(format!("{base}/api/webrtc-events"))
        .bearer_auth(API_SECRET)
        .json(&serde_json::json!({"type": "session-heartbeat", "sessionId": room, "userAddress": addr(STUDENT)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the backend's event is accepted");
    // A wrong API secret and a wrong token are refused, and must not be echoed either.
    let r = http
        .post(format!("{base}/api/webrtc-events"))
        .bearer_auth("wrong-secret-wrong-secret-wrong-secret")
        .json(&serde_json::json!({"type": "session-heartbeat", "sessionId": room, "userAddress": addr(STUDENT)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(Client::join(&ws("not.a.token"), &room, "x").await.is_err());

    tutor.send(&ClientMessage::EndSession).await.unwrap();
    let ended = tutor
        .wait_event(WAIT, |e| {
            matches!(e, ServerMessage::PaidSessionEnded { .. })
        })
        .await;
    assert!(ended.is_some(), "the session ends");
    // The wallet signs endSession: wait until it is settled on chain.
    let observer = tokens.mint("observer", "observer", 60, None);
    let s = paid_common::settlement_final(&base, &observer, &room, Duration::from_secs(60)).await;
    assert_eq!(s["settlement"]["state"], "settled", "not settled: {s}");
    student.leave().await;
    tutor.leave().await;
    // A graceful stop, so the shutdown path logs too.
    let _ = std::process::Command::new("kill")
        .arg(server.id().to_string())
        .status();
    let _ = tokio::task::spawn_blocking(move || server.wait()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = std::fs::remove_dir_all(&data_dir);

    let log = log.lock().unwrap().join("\n");
    let lines = log.lines().count();
    println!("{lines} log lines at debug level");
    assert!(
        log.contains("joined") && lines > 50,
        "the log is the real one: {lines} lines"
    );
    let key = chainkit::KEYS[0];
    let forbidden: [(&str, &str); 10] = [
        ("the token secret", JWT_SECRET),
        ("the API secret", API_SECRET),
        ("the wallet key", key),
        ("the wallet key without 0x", key.trim_start_matches("0x")),
        ("the student's token", &student_token),
        ("the tutor's token", &tutor_token),
        ("a refused secret", "wrong-secret-wrong-secret"),
        ("SDP (an ICE password)", "a=ice-pwd"),
        ("SDP (a DTLS fingerprint)", "a=fingerprint"),
        ("SDP (a session line)", "o=- "),
    ];
    for (what, needle) in forbidden {
        if let Some(line) = log.lines().find(|l| l.contains(needle)) {
            panic!("{what} is in the log: {}", &line[..line.len().min(300)]);
        }
    }
}
