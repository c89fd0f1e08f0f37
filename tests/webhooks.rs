//! Webhooks end to end with the real `confab` binary on the test PostgreSQL: room and participant
//! events from real joins and leaves survive a `kill -9` of the server while their deliveries are
//! failing and in flight, and arrive (each id once after deduplication, signed) once the receiver
//! is back.

#[path = "../crates/webhooks/tests/receiver/mod.rs"]
mod receiver;

mod common;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use confab::auth::TokenAuthority;
use confab_client::Client;
use receiver::{wait_for, Mode, Receiver};

const SECRET: &str = "whsec_CQxIJgKrMKe1QbSvzTVBEZckXI9Um0cdCjd4LuZ2jHs=";

/// The server as a child process; killed (SIGKILL) on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `confab` on port 0 with `db_url`, `data_dir` and webhooks to `hook_url`; returns once it
/// prints its address.
fn start_server(db_url: &str, data_dir: &Path, hook_url: &str) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_confab"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--media-port",
            "0",
            "--media-tcp-port",
            "0",
        ])
        .args(["--public-ip", "127.0.0.1", "--database-url", db_url])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--webhook-url", hook_url, "--webhook-timeout-ms", "1000"])
        .args(["--webhook-retry-ms", "100", "--webhook-retry-max-ms", "500"])
        .env("CONFAB_WEBHOOK_SECRET", SECRET)
        .env_remove("CONFAB_WEBHOOK_URLS")
        .env_remove("CONFAB_LANGDAO_EVENTS_URL")
        .env("RUST_LOG", "warn,confab_webhooks=info")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the confab binary starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.split("open http://").nth(1) {
                let _ = tx.send(rest.split('/').next().unwrap_or_default().to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server prints its address")
        .parse()
        .expect("an address");
    Server { child, addr }
}

async fn rows(pg: &sqlx::PgPool) -> Vec<(String, String, i64)> {
    sqlx::query_as("SELECT event_id, state, attempts FROM webhook_outbox ORDER BY event_id")
        .fetch_all(pg)
        .await
        .expect("read the outbox")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_while_deliveries_fail_and_hang_loses_no_webhook() {
    let (db_url, db_name) = common::fresh_pg_database(None).await;
    let data_dir = std::env::temp_dir().join(format!("confab-wh-it-{}", uuid::Uuid::new_v4()));
    let rx = Receiver::start(Mode::Down, SECRET).await;
    let hook = rx.url("/hooks");
    let pg = sqlx::PgPool::connect(&db_url).await.unwrap();

    let server = start_server(&db_url, &data_dir, &hook);
    let secret = std::fs::read_to_string(data_dir.join("jwt-secret")).unwrap();
    let tokens = TokenAuthority::new(secret.trim().to_owned().into());
    let ws = |user: &str| {
        format!(
            "ws://{}/ws?token={}",
            server.addr,
            tokens.mint(user, user, 600, None)
        )
    };
    let alice = Client::join(&ws("alice"), "kill-room", "Alice")
        .await
        .expect("alice joins");
    let bob = Client::join(&ws("bob"), "kill-room", "Bob")
        .await
        .expect("bob joins");
    alice.leave().await;
    bob.leave().await;
    // room_started, two participant_joined, two participant_left, room_finished.
    wait_for(
        "six events written and failing",
        Duration::from_secs(20),
        async || {
            let r = rows(&pg).await;
            r.len() == 6
                && r.iter()
                    .all(|(_, state, attempts)| state == "pending" && *attempts >= 1)
        },
    )
    .await;
    // Now deliveries hang mid-request: kill the server while they are in flight.
    let before = rx.received().len();
    rx.set_mode(Mode::Hang);
    wait_for(
        "a delivery in flight",
        Duration::from_secs(10),
        async || rx.received().len() > before,
    )
    .await;
    drop(server); // SIGKILL
    let written: Vec<String> = rows(&pg).await.into_iter().map(|(id, _, _)| id).collect();
    assert_eq!(written.len(), 6);
    assert!(
        rx.acknowledged("/hooks").is_empty(),
        "nothing was acknowledged before the crash"
    );

    rx.set_mode(Mode::Up(Duration::ZERO));
    let _server = start_server(&db_url, &data_dir, &hook);
    wait_for(
        "every row delivered after the restart",
        Duration::from_secs(30),
        async || {
            rows(&pg)
                .await
                .iter()
                .all(|(_, state, _)| state == "delivered")
        },
    )
    .await;
    let got = rx.acknowledged("/hooks");
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        written,
        "each written event arrived, once after deduplication"
    );
    assert!(
        rx.received().iter().all(|r| r.verified),
        "every signature verifies"
    );
    let mut types: BTreeMap<String, usize> = BTreeMap::new();
    for body in got.values() {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["data"]["room"], "kill-room");
        *types
            .entry(v["type"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = [
        ("participant_joined", 2),
        ("participant_left", 2),
        ("room_finished", 1),
        ("room_started", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_owned(), n))
    .collect();
    assert_eq!(types, expected);
    pg.close().await;
    drop(_server);
    common::drop_pg_database(&db_name).await;
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// `(type, data.reason, data.participant_id)` of the acknowledged standard bodies, in event order.
fn acked(rx: &Receiver) -> Vec<(String, String, String)> {
    let mut v: Vec<(String, serde_json::Value)> = rx
        .acknowledged("/hooks")
        .into_iter()
        .map(|(id, body)| (id, serde_json::from_str(&body).unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0)); // ids are UUID v7: time order
    v.into_iter()
        .map(|(_, b)| {
            let s = |k: &str| b["data"][k].as_str().unwrap_or_default().to_owned();
            (
                b["type"].as_str().unwrap().to_owned(),
                s("reason"),
                s("participant_id"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_open_at_a_kill_9_is_finished_by_the_next_start_and_a_clean_stop_finishes_its_rooms()
{
    let (db_url, db_name) = common::fresh_pg_database(None).await;
    let data_dir = std::env::temp_dir().join(format!("confab-wh-open-{}", uuid::Uuid::new_v4()));
    let rx = Receiver::start(Mode::Up(Duration::ZERO), SECRET).await;
    let hook = rx.url("/hooks");
    let types = |rx: &Receiver| -> Vec<String> { acked(rx).into_iter().map(|t| t.0).collect() };

    let server = start_server(&db_url, &data_dir, &hook);
    let secret = std::fs::read_to_string(data_dir.join("jwt-secret")).unwrap();
    let tokens = TokenAuthority::new(secret.trim().to_owned().into());
    let ws = |addr: SocketAddr, user: &str| {
        format!(
            "ws://{addr}/ws?token={}",
            tokens.mint(user, user, 600, None)
        )
    };
    let alice = Client::join(&ws(server.addr, "alice"), "open-room", "Alice")
        .await
        .expect("alice joins");
    let bob = Client::join(&ws(server.addr, "bob"), "open-room", "Bob")
        .await
        .expect("bob joins");
    wait_for("the joins delivered", Duration::from_secs(20), async || {
        types(&rx) == ["room_started", "participant_joined", "participant_joined"]
    })
    .await;
    drop(server); // SIGKILL with both in the room
    drop((alice, bob));

    // The next start of the same node reports the room it left open.
    let server = start_server(&db_url, &data_dir, &hook);
    wait_for(
        "the open room finished",
        Duration::from_secs(20),
        async || acked(&rx).len() == 6,
    )
    .await;
    let got = acked(&rx);
    assert_eq!(
        got[3..]
            .iter()
            .map(|t| (t.0.as_str(), t.1.as_str()))
            .collect::<Vec<_>>(),
        [
            ("participant_left", "closed"),
            ("participant_left", "closed"),
            ("room_finished", "")
        ],
        "both participants left, then the room finished: {got:?}"
    );
    let joined: std::collections::BTreeSet<&str> = got[1..3].iter().map(|t| t.2.as_str()).collect();
    let left: std::collections::BTreeSet<&str> = got[3..5].iter().map(|t| t.2.as_str()).collect();
    assert_eq!(
        joined, left,
        "the participants who joined are the ones reported left"
    );

    // The same room opens again after the old one finished; a clean stop (SIGTERM) then finishes
    // it before the process exits.
    let carol = Client::join(&ws(server.addr, "carol"), "open-room", "Carol")
        .await
        .expect("carol joins");
    wait_for(
        "carol's join delivered",
        Duration::from_secs(20),
        async || acked(&rx).len() == 8,
    )
    .await;
    assert_eq!(&types(&rx)[6..], ["room_started", "participant_joined"]);
    let mut server = server;
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::spawn_blocking(move || {
        let s = server.child.wait();
        (s, server)
    })
    .await
    .unwrap();
    assert!(status.0.is_ok());
    drop(carol);
    let pg = sqlx::PgPool::connect(&db_url).await.unwrap();
    let written: Vec<(String,)> =
        sqlx::query_as("SELECT event_type FROM webhook_outbox ORDER BY event_id")
            .fetch_all(&pg)
            .await
            .unwrap();
    let written: Vec<&str> = written.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(
        &written[8..],
        ["participant_left", "room_finished"],
        "the clean stop wrote carol's leave and the room's end before exiting"
    );
    let presence: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM webhook_presence")
        .fetch_one(&pg)
        .await
        .unwrap();
    assert_eq!(
        presence.0, 0,
        "nobody is recorded present after the clean stop"
    );
    pg.close().await;
    common::drop_pg_database(&db_name).await;
    let _ = std::fs::remove_dir_all(&data_dir);
}
