//! Presence and 1:1 calls through real WebSocket clients against the real server, on SQLite and
//! on the test PostgreSQL: ring, accept, hang up; reject; cancel; busy; offline; no answer; a
//! side whose socket drops; and the call records behind each (`GET /api/calls`).

mod common;

use std::time::Duration;

use common::TestApp;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(5);

/// A lobby socket of one user: every message it got, in order.
struct Ws {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    got: Vec<Value>,
}

impl Ws {
    async fn open(app: &TestApp, user: &str) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(app.ws_url(user))
            .await
            .expect("the socket opens");
        Ws { ws, got: vec![] }
    }

    async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    /// The next message of type `t` (earlier ones of other types are kept in `got`).
    async fn expect(&mut self, t: &str) -> Value {
        self.try_expect(t, WAIT)
            .await
            .unwrap_or_else(|| panic!("no {t} within {WAIT:?}; got {:?}", self.got))
    }

    async fn try_expect(&mut self, t: &str, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            if let Ok(Message::Text(text)) = next {
                let v: Value = serde_json::from_str(&text).unwrap();
                self.got.push(v.clone());
                if v["type"] == t {
                    return Some(v);
                }
            }
        }
    }

    /// Sends `v` and returns the next message of type `t`.
    async fn ask(&mut self, v: Value, t: &str) -> Value {
        self.send(v).await;
        self.expect(t).await
    }
}

/// Alice rings Bob: her `call_ringing` (after his `call_incoming` arrived).
async fn ring(alice: &mut Ws, bob: &mut Ws) -> Value {
    let ringing = alice
        .ask(
            json!({"type": "call_invite", "callee": "bob"}),
            "call_ringing",
        )
        .await;
    let incoming = bob.expect("call_incoming").await;
    assert_eq!(incoming["call_id"], ringing["call_id"]);
    ringing
}

async fn calls_of(app: &TestApp, user: &str) -> Vec<Value> {
    let v = app.get_json("/api/calls", user).await;
    v["calls"].as_array().cloned().unwrap_or_default()
}

async fn the_whole_call_flow(app: TestApp) {
    let mut alice = Ws::open(&app, "alice").await;
    let mut bob = Ws::open(&app, "bob").await;
    let mut carol = Ws::open(&app, "carol").await;

    // Presence: carol sees both online and available; alice's own entry is left out of hers.
    let snap = carol
        .ask(json!({"type": "watch_presence"}), "presence_snapshot")
        .await;
    let ids: Vec<&str> = snap["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alice", "bob"]);
    assert!(snap["users"]
        .as_array()
        .unwrap()
        .iter()
        .all(|u| u["available"] == true));
    let snap = alice
        .ask(json!({"type": "watch_presence"}), "presence_snapshot")
        .await;
    assert!(snap["users"]
        .as_array()
        .unwrap()
        .iter()
        .all(|u| u["user_id"] != "alice"));
    let rest = app.get_json("/api/presence", "observer").await;
    assert_eq!(rest["users"].as_array().unwrap().len(), 3, "{rest}");

    // Ring, accept, hang up.
    let ringing = alice
        .ask(
            json!({"type": "call_invite", "callee": "bob"}),
            "call_ringing",
        )
        .await;
    let call = ringing["call_id"].as_str().unwrap().to_owned();
    assert_eq!(ringing["callee"], "bob");
    let incoming = bob.expect("call_incoming").await;
    assert_eq!(incoming["call_id"], call.as_str());
    assert_eq!(incoming["caller"], "alice");
    assert_eq!(incoming["caller_name"], "alice");
    // Both are now busy for the others.
    for who in ["alice", "bob"] {
        let p = loop {
            let p = carol.expect("presence").await;
            if p["user"]["user_id"] == who {
                break p;
            }
        };
        assert_eq!(p["user"]["available"], false, "{p}");
        assert_eq!(p["online"], true);
    }
    let accepted = bob
        .ask(
            json!({"type": "call_accept", "call_id": call}),
            "call_accepted",
        )
        .await;
    let room = accepted["room"].as_str().unwrap().to_owned();
    assert!(room.starts_with("call-"), "{room}");
    assert_eq!(alice.expect("call_accepted").await["room"], room.as_str());
    // Only the callee may accept, and only once.
    let e = alice
        .ask(json!({"type": "call_accept", "call_id": call}), "error")
        .await;
    assert_eq!(e["code"], "call_not_found");
    // A third party ringing someone in a call gets `busy` at once.
    let busy = carol
        .ask(
            json!({"type": "call_invite", "callee": "alice"}),
            "call_ended",
        )
        .await;
    assert_eq!(
        (busy["status"].as_str(), busy["reason"].as_str()),
        (Some("rejected"), Some("busy"))
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ended = alice
        .ask(
            json!({"type": "call_hangup", "call_id": call}),
            "call_ended",
        )
        .await;
    assert_eq!(ended["status"], "ended");
    assert_eq!(ended["reason"], "hangup");
    assert_eq!(ended["by"], "alice");
    assert!(ended["duration_s"].as_u64().unwrap() >= 1, "{ended}");
    assert_eq!(bob.expect("call_ended").await["reason"], "hangup");

    // Leaving the call's room ends the call too: both join it (real webrtc-rs peers) and bob
    // leaves.
    let c = ring(&mut alice, &mut bob).await;
    let a = bob
        .ask(
            json!({"type": "call_accept", "call_id": c["call_id"]}),
            "call_accepted",
        )
        .await;
    alice.expect("call_accepted").await;
    let room2 = a["room"].as_str().unwrap();
    let alice_media = confab_client::Client::join(&app.ws_url("alice"), room2, "Alice")
        .await
        .expect("alice joins the call room");
    let bob_media = confab_client::Client::join(&app.ws_url("bob"), room2, "Bob")
        .await
        .expect("bob joins the call room");
    bob_media.leave().await;
    let r = alice.expect("call_ended").await;
    assert_eq!(
        (r["status"].as_str(), r["reason"].as_str(), r["by"].as_str()),
        (Some("ended"), Some("hangup"), Some("bob"))
    );
    bob.expect("call_ended").await;
    alice_media.leave().await;

    // Reject.
    let c = ring(&mut alice, &mut bob).await;
    let r = bob
        .ask(
            json!({"type": "call_reject", "call_id": c["call_id"]}),
            "call_ended",
        )
        .await;
    assert_eq!(
        (r["status"].as_str(), r["reason"].as_str()),
        (Some("rejected"), Some("rejected"))
    );
    assert_eq!(alice.expect("call_ended").await["status"], "rejected");

    // Cancel.
    let c = ring(&mut alice, &mut bob).await;
    let r = alice
        .ask(
            json!({"type": "call_cancel", "call_id": c["call_id"]}),
            "call_ended",
        )
        .await;
    assert_eq!(
        (r["status"].as_str(), r["reason"].as_str()),
        (Some("missed"), Some("cancelled"))
    );
    assert_eq!(bob.expect("call_ended").await["reason"], "cancelled");

    // No answer: the ring timeout of this server is 1 s.
    let c = ring(&mut alice, &mut bob).await;
    let r = alice.expect("call_ended").await;
    assert_eq!(r["call_id"], c["call_id"]);
    assert_eq!(
        (r["status"].as_str(), r["reason"].as_str()),
        (Some("missed"), Some("no_answer"))
    );

    // The callee's only socket drops while it rings.
    let c = ring(&mut alice, &mut bob).await;
    drop(bob);
    let r = alice.expect("call_ended").await;
    assert_eq!(r["call_id"], c["call_id"]);
    assert_eq!(r["reason"], "callee_gone");
    let p = loop {
        let p = carol.expect("presence").await;
        if p["user"]["user_id"] == "bob" && p["online"] == false {
            break p;
        }
    };
    assert_eq!(p["user"]["available"], false);

    // Offline callee, yourself, nobody.
    let r = alice
        .ask(
            json!({"type": "call_invite", "callee": "bob"}),
            "call_ended",
        )
        .await;
    assert_eq!(
        (r["status"].as_str(), r["reason"].as_str()),
        (Some("missed"), Some("offline"))
    );
    let e = alice
        .ask(json!({"type": "call_invite", "callee": "alice"}), "error")
        .await;
    assert_eq!(e["code"], "invalid_callee");
    let e = alice
        .ask(json!({"type": "call_invite", "callee": ""}), "error")
        .await;
    assert_eq!(e["code"], "invalid_callee");
    let e = alice
        .ask(
            json!({"type": "call_hangup", "call_id": "not-a-call"}),
            "error",
        )
        .await;
    assert_eq!(e["code"], "call_not_found");

    // The records: alice's eight calls, newest first, each with its outcome.
    let mut records = vec![];
    for _ in 0..50 {
        records = calls_of(&app, "alice").await;
        if records
            .first()
            .is_some_and(|c| c["end_reason"] == "offline")
            && records.iter().all(|c| c["ended_at"].is_string())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outcomes: Vec<(&str, &str)> = records
        .iter()
        .map(|c| {
            (
                c["status"].as_str().unwrap(),
                c["end_reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("missed", "offline"),
            ("missed", "callee_gone"),
            ("missed", "no_answer"),
            ("missed", "cancelled"),
            ("rejected", "rejected"),
            ("ended", "hangup"),
            ("rejected", "busy"),
            ("ended", "hangup"),
        ],
        "{records:?}"
    );
    let answered = &records[7];
    assert_eq!(
        (answered["caller"].as_str(), answered["callee"].as_str()),
        (Some("alice"), Some("bob"))
    );
    assert_eq!(answered["room"], room.as_str());
    assert!(answered["duration_s"].as_u64().unwrap() >= 1, "{answered}");
    // Paged: two at a time.
    let page = app.get_json("/api/calls?limit=2", "alice").await;
    assert_eq!(page["has_more"], true);
    let last = page["calls"][1]["id"].as_str().unwrap();
    let next = app
        .get_json(&format!("/api/calls?limit=2&before={last}"), "alice")
        .await;
    assert_eq!(next["calls"][0]["end_reason"], "no_answer");
    // Bob's history has the calls he was part of, not carol's busy one... which rang alice.
    let bobs = calls_of(&app, "bob").await;
    assert_eq!(bobs.len(), 7);
    drop((alice, carol));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_ring_answer_refuse_and_end_with_their_records_on_sqlite() {
    let app = common::spawn_app_with(|a| a.call_ring_timeout_s = 1).await;
    the_whole_call_flow(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_ring_answer_refuse_and_end_with_their_records_on_postgresql() {
    let (url, name) = common::fresh_pg_database(None).await;
    let app = common::spawn_app_with(|a| {
        a.call_ring_timeout_s = 1;
        a.database_url = Some(url);
    })
    .await;
    the_whole_call_flow(app).await;
    common::drop_pg_database(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_call_history_need_a_token() {
    let app = common::spawn_app(4).await;
    for path in ["/api/presence", "/api/calls"] {
        let r = common::http()
            .get(format!("http://{}{path}", app.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = common::http()
            .get(format!("http://{}{path}", app.addr))
            .bearer_auth("not-a-token")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = common::http()
        .get(format!("http://{}/api/calls?before=nope", app.addr))
        .bearer_auth(app.tokens.mint("u", "u", 60, None))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_pairs_two_searchers_never_oneself_never_the_same_partner_twice_in_a_row() {
    let app = common::spawn_app(4).await;
    let mut a = Ws::open(&app, "ann").await;
    let mut a2 = Ws::open(&app, "ann").await; // Ann's second tab
    let mut b = Ws::open(&app, "ben").await;
    let mut c = Ws::open(&app, "cy").await;
    let mut d = Ws::open(&app, "dee").await;
    let start = json!({"type": "match_start"});

    a.ask(start.clone(), "match_waiting").await;
    // Ann's other tab is not a partner for Ann.
    a2.ask(start.clone(), "match_waiting").await;
    let found = b.ask(start.clone(), "match_found").await;
    assert_eq!(found["partner"], "ann");
    assert_eq!(found["partner_name"], "ann");
    let theirs = a2.expect("match_found").await;
    assert_eq!(theirs["partner"], "ben");
    assert_eq!(theirs["room"], found["room"]);
    assert!(found["room"].as_str().unwrap().starts_with("match-"));

    // Again: Ann and Ben are not paired twice in a row; Cy takes Ann, Dee takes Ben.
    a.ask(start.clone(), "match_waiting").await;
    b.ask(start.clone(), "match_waiting").await;
    let f = c.ask(start.clone(), "match_found").await;
    assert_eq!(f["partner"], "ann");
    assert_eq!(a.expect("match_found").await["partner"], "cy");
    let f = d.ask(start.clone(), "match_found").await;
    assert_eq!(f["partner"], "ben");
    assert_eq!(b.expect("match_found").await["partner"], "dee");

    // Leaving the queue is immediate: nobody is paired with a user who left it.
    a.ask(start.clone(), "match_waiting").await;
    a.ask(json!({"type": "match_stop"}), "match_stopped").await;
    b.ask(start.clone(), "match_waiting").await;
    assert!(
        a.try_expect("match_found", Duration::from_millis(500))
            .await
            .is_none(),
        "Ann left the queue"
    );
    // A socket that closes leaves the queue too.
    drop(b);
    let mut e = Ws::open(&app, "eve").await;
    e.ask(start.clone(), "match_waiting").await;
}
