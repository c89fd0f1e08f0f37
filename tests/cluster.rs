//! Two nodes of one deployment: two `confab` processes sharing this machine's Redis
//! (127.0.0.1:6379) and one PostgreSQL database, each with its own node id and URL. A client
//! that asks the wrong node for a room is answered `redirect` with the hosting node's URL,
//! follows it and joins the same room as the participant already there; a room nobody hosts
//! opens where it is asked for; and when the hosting node is killed, its room is free on the
//! other node once the keys expire (`--cluster-ttl-s`).

mod common;

use common::{drop_pg_database, fresh_pg_database};
use confab_client::Client;
use futures_util::{SinkExt, StreamExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const JWT_SECRET: &str = "cluster-test-jwt-secret-0123456789abcdef";
const TTL_S: u64 = 3;

/// A node: its process and base URL.
struct Node {
    child: Child,
    base: String,
    data_dir: std::path::PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts node `id` against `db`; returns once `/readyz` answers 200.
async fn start(id: &str, db: &str) -> Node {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let data_dir = std::env::temp_dir().join(format!("confab-cluster-{id}"));
    let child = Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--media-port", "0", "--public-ip", "127.0.0.1"])
        .args(["--node-id", id, "--node-url", &base])
        .args(["--cluster-ttl-s", &TTL_S.to_string()])
        .arg("--data-dir")
        .arg(&data_dir)
        .env("REDIS_URL", "redis://127.0.0.1:6379/0")
        .env("DATABASE_URL", db)
        .env("CONFAB_JWT_SECRET", JWT_SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start confab");
    let node = Node {
        child,
        base,
        data_dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = common::http()
            .get(format!("{}/readyz", node.base))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok {
            return node;
        }
        assert!(Instant::now() < deadline, "node {id} never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The WebSocket URL of the node at `base` with a token for `user`.
fn ws(base: &str, user: &str) -> String {
    let tokens = confab::auth::TokenAuthority::new(JWT_SECRET.to_owned().into());
    format!(
        "{}/ws?token={}",
        base.replacen("http", "ws", 1),
        tokens.mint(user, user, 600, None)
    )
}

/// Sends `join room` on a bare socket to the node at `base`; returns the first `joined`,
/// `redirect` or `error` answer.
async fn ask(base: &str, room: &str, user: &str) -> serde_json::Value {
    let (mut socket, _) = tokio_tungstenite::connect_async(ws(base, user))
        .await
        .expect("websocket");
    let join = serde_json::json!({"type": "join", "room": room, "name": user});
    socket
        .send(Message::Text(join.to_string().into()))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(m)) = socket.next().await {
            if let Message::Text(t) = m {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if matches!(v["type"].as_str(), Some("joined" | "redirect" | "error")) {
                    return v;
                }
            }
        }
        panic!("socket closed before an answer to join");
    })
    .await
    .expect("an answer to join");
    let _ = socket.close(None).await;
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_on_the_wrong_node_is_redirected_and_a_dead_nodes_rooms_are_freed() {
    let (db, db_name) = fresh_pg_database(None).await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let a = start(&format!("a-{run}"), &db).await;
    let b = start(&format!("b-{run}"), &db).await;
    let room = format!("cluster-{run}");

    // Ada opens the room on node A.
    let ada = Client::join(&ws(&a.base, "ada"), &room, "ada")
        .await
        .expect("Ada joins on A");

    // Bob asks node B: redirected to A, follows, and is in Ada's room.
    let answer = ask(&b.base, &room, "bob").await;
    assert_eq!(answer["type"], "redirect", "B sends Bob to A: {answer}");
    assert_eq!(answer["url"], a.base.as_str(), "{answer}");
    assert_eq!(answer["room"], room.as_str());
    let url = answer["url"].as_str().unwrap();
    let bob = Client::join(&ws(url, "bob"), &room, "bob")
        .await
        .expect("Bob joins where he was sent");
    let others = match &bob.joined {
        confab_protocol::ServerMessage::Joined { participants, .. } => participants.clone(),
        other => panic!("not joined: {other:?}"),
    };
    assert!(
        others
            .iter()
            .any(|p| p.id == ada.participant_id && p.name == "ada"),
        "Bob is in the same room as Ada: {others:?}"
    );

    // A room nobody hosts opens where it is asked for.
    let other = format!("cluster-other-{run}");
    let answer = ask(&b.base, &other, "cy").await;
    assert_eq!(answer["type"], "joined", "a free room opens on B: {answer}");

    // Node A dies: its room is B's once A's keys expire.
    drop(ada);
    drop(bob);
    drop(a);
    let killed = Instant::now();
    let freed = loop {
        let answer = ask(&b.base, &room, "dan").await;
        if answer["type"] == "joined" {
            break killed.elapsed();
        }
        assert_eq!(answer["type"], "redirect", "{answer}");
        assert!(
            killed.elapsed() < Duration::from_secs(TTL_S + 5),
            "the dead node's room is still claimed after {:?}",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!("room free on B {freed:?} after A was killed (ttl {TTL_S} s)");
    assert!(
        freed <= Duration::from_secs(TTL_S + 2),
        "freed within the TTL: {freed:?}"
    );
    drop(b);
    drop_pg_database(&db_name).await;
}
