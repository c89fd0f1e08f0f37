//! The outbox and its delivery worker against a real receiver, on SQLite and on the test PostgreSQL
//! (127.0.0.1:5432, trust auth; a throwaway database per test).

mod receiver;

use std::{collections::BTreeSet, time::Duration};

use confab_store::{Db, DbOptions, EndpointKind, WebhookEvent};
use confab_webhooks::{
    Backoff, DeliveryConfig, DeliveryWorker, LeaveReason, Settings, WebhookSecret,
};
use receiver::{wait_for, Mode, Receiver};

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn pg_admin_url() -> String {
    std::env::var("CONFAB_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh database on the test PostgreSQL: (URL, name).
async fn fresh_pg() -> (String, String) {
    use sqlx::Connection;
    let admin = pg_admin_url();
    let name = format!("confab_wh_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("the test PostgreSQL answers");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create database");
    let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap();
    (format!("{base}/{name}"), name)
}

async fn drop_pg(name: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
}

fn fast() -> Backoff {
    Backoff {
        initial: Duration::from_millis(50),
        max_delay: Duration::from_millis(400),
        jitter: 0.2,
    }
}

/// Down, then up: every event arrives, each id once after deduplication, every signature verifies.
async fn outage_then_recovery(db: Db) {
    let rx = Receiver::start(Mode::Down, SECRET).await;
    let settings = Settings {
        urls: vec![rx.url("/hooks")],
        secret: Some(WebhookSecret::parse(SECRET).unwrap()),
        timeout: Some(Duration::from_secs(2)),
        backoff: Some(fast()),
        ..Settings::default()
    };
    let (hooks, worker) = confab_webhooks::start(&db, settings).await.expect("start");
    let mut expected = BTreeSet::new();
    for i in 0..20 {
        let e = WebhookEvent::new(
            "paid_session_started",
            serde_json::json!({ "n": i }),
            chrono::Utc::now(),
        );
        expected.insert(e.id.clone());
        assert_eq!(
            db.enqueue_webhook(&e).await.unwrap(),
            1,
            "one row per endpoint"
        );
    }
    let emitter = hooks.emitter();
    emitter.participant_joined("room-a", "p1", "alice", "Alice");
    emitter.participant_joined("room-a", "p2", "bob", "Bob");
    emitter.participant_left("room-a", "p1", "alice", "Alice", LeaveReason::Left);
    emitter.participant_left("room-a", "p2", "bob", "Bob", LeaveReason::Disconnected);
    // 20 + room_started, 2 joined, 2 left, room_finished.
    wait_for(
        "the room events to be written",
        Duration::from_secs(10),
        async || db.webhook_deliveries().await.unwrap().len() == 26,
    )
    .await;
    // While the receiver is down: attempts are made and fail, nothing is marked delivered.
    wait_for(
        "failed attempts during the outage",
        Duration::from_secs(10),
        async || {
            let rows = db.webhook_deliveries().await.unwrap();
            rows.iter().all(|r| r.attempts >= 2)
        },
    )
    .await;
    let rows = db.webhook_deliveries().await.unwrap();
    assert!(rows
        .iter()
        .all(|r| r.state == "pending" && r.last_error.as_deref() == Some("HTTP 503")));
    assert!(rx.acknowledged("/hooks").is_empty());
    let backlog = hooks.backlog().unwrap();
    wait_for(
        "the backlog to be measured",
        Duration::from_secs(5),
        async || {
            backlog
                .latest()
                .is_some_and(|b| b.pending == 26 && b.oldest_pending_since.is_some())
        },
    )
    .await;

    rx.set_mode(Mode::Up(Duration::ZERO));
    wait_for(
        "every delivery to be acknowledged",
        Duration::from_secs(30),
        async || {
            db.webhook_deliveries()
                .await
                .unwrap()
                .iter()
                .all(|r| r.state == "delivered")
        },
    )
    .await;
    let got = rx.acknowledged("/hooks");
    for id in &expected {
        assert!(got.contains_key(id), "event {id} never arrived");
    }
    assert_eq!(
        got.len(),
        26,
        "each event once after deduplication, none extra"
    );
    assert!(
        rx.received().iter().all(|r| r.verified),
        "every signature verifies"
    );
    let types: Vec<String> = got
        .values()
        .map(|b| {
            serde_json::from_str::<serde_json::Value>(b).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for t in [
        "room_started",
        "participant_joined",
        "participant_left",
        "room_finished",
    ] {
        assert!(types.iter().any(|x| x == t), "{t} delivered");
    }
    let left: Vec<serde_json::Value> = got
        .values()
        .map(|b| serde_json::from_str::<serde_json::Value>(b).unwrap())
        .filter(|v| v["type"] == "participant_left")
        .collect();
    assert!(left
        .iter()
        .any(|v| v["data"]["reason"] == "disconnected" && v["data"]["user_id"] == "bob"));
    assert!(left
        .iter()
        .all(|v| v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z'))));
    assert_eq!(hooks.dropped_events(), 0);
    wait_for("the backlog to drain", Duration::from_secs(5), async || {
        backlog.latest().is_some_and(|b| b.pending == 0)
    })
    .await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_receiver_outage_every_event_arrives_once_signed_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("confab-wh-{}", uuid::Uuid::new_v4()));
    let db = Db::connect(dir.join("t.db").to_str().unwrap(), &DbOptions::default())
        .await
        .unwrap();
    outage_then_recovery(db.clone()).await;
    db.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_receiver_outage_every_event_arrives_once_signed_on_postgresql() {
    let (url, name) = fresh_pg().await;
    let db = Db::connect(&url, &DbOptions::default()).await.unwrap();
    outage_then_recovery(db.clone()).await;
    db.close().await;
    drop_pg(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_postgresql_never_post_the_same_row_at_once() {
    let (url, name) = fresh_pg().await;
    let opts = DbOptions::default();
    // Two servers: two pools on one database.
    let (a, b) = (
        Db::connect(&url, &opts).await.unwrap(),
        Db::connect(&url, &opts).await.unwrap(),
    );
    // Slow answers keep rows in flight long enough for the other worker to try to take them.
    let rx = Receiver::start(Mode::Up(Duration::from_millis(150)), SECRET).await;
    a.sync_webhook_endpoints(
        &[(rx.url("/hooks"), EndpointKind::Standard)],
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let mut expected = BTreeSet::new();
    for i in 0..80 {
        let e = WebhookEvent::new(
            "room_started",
            serde_json::json!({ "room": format!("r{i}") }),
            chrono::Utc::now(),
        );
        expected.insert(e.id.clone());
        a.enqueue_webhook(&e).await.unwrap();
    }
    let config = |batch| {
        let mut c = DeliveryConfig::new(
            vec![(rx.url("/hooks"), EndpointKind::Standard)],
            WebhookSecret::parse(SECRET).unwrap(),
        );
        c.batch = batch;
        c.idle_poll = Duration::from_millis(20);
        c.backoff = fast();
        c
    };
    let wa = DeliveryWorker::new(a.clone(), config(8)).unwrap();
    let wb = DeliveryWorker::new(b.clone(), config(8)).unwrap();
    let (ida, idb) = (wa.id().to_owned(), wb.id().to_owned());
    let (stop_a, stop_b) = (
        tokio::sync::oneshot::channel::<()>(),
        tokio::sync::oneshot::channel::<()>(),
    );
    let ta = tokio::spawn(wa.run(async move {
        let _ = stop_a.1.await;
    }));
    let tb = tokio::spawn(wb.run(async move {
        let _ = stop_b.1.await;
    }));
    wait_for("every row delivered", Duration::from_secs(60), async || {
        a.webhook_deliveries()
            .await
            .unwrap()
            .iter()
            .all(|r| r.state == "delivered")
    })
    .await;
    let _ = stop_a.0.send(());
    let _ = stop_b.0.send(());
    let _ = (ta.await, tb.await);

    let overlaps = rx.overlaps();
    assert!(
        overlaps.is_empty(),
        "{} rows posted twice at once, e.g. {:?}",
        overlaps.len(),
        overlaps.iter().take(3).collect::<Vec<_>>()
    );
    let received = rx.received();
    // Nothing failed, so no lease ran out: each row was posted exactly once.
    assert_eq!(received.len(), 80, "each row posted once");
    assert_eq!(rx.ids_seen("/hooks"), expected);
    let rows = a.webhook_deliveries().await.unwrap();
    let by_a = rows
        .iter()
        .filter(|r| r.leased_by.as_deref() == Some(&ida))
        .count();
    let by_b = rows
        .iter()
        .filter(|r| r.leased_by.as_deref() == Some(&idb))
        .count();
    assert_eq!(by_a + by_b, 80);
    assert!(
        by_a > 0 && by_b > 0,
        "both workers took part ({by_a} / {by_b})"
    );
    a.close().await;
    b.close().await;
    drop_pg(&name).await;
}

#[tokio::test]
async fn an_endpoint_without_a_secret_or_with_another_scheme_is_refused_at_start() {
    let db = Db::connect("sqlite::memory:", &DbOptions::default())
        .await
        .unwrap();
    let no_secret = Settings {
        urls: vec!["http://127.0.0.1:9/".into()],
        ..Settings::default()
    };
    assert!(confab_webhooks::start(&db, no_secret).await.is_err());
    let ftp = Settings {
        urls: vec!["ftp://example.com/".into()],
        secret: Some(WebhookSecret::parse(SECRET).unwrap()),
        ..Settings::default()
    };
    assert!(confab_webhooks::start(&db, ftp).await.is_err());
    // Webhooks off: nothing is written for an event.
    let (hooks, worker) = confab_webhooks::start(&db, Settings::default())
        .await
        .unwrap();
    assert!(hooks.backlog().is_none());
    let e = WebhookEvent::new("room_started", serde_json::json!({}), chrono::Utc::now());
    assert_eq!(db.enqueue_webhook(&e).await.unwrap(), 0);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn langdao_mode_posts_session_ended_user_disconnected_and_heartbeats_to_its_url_only() {
    use confab_settlement::{repo, Address, EndReason, NewPaidSession};
    let db = Db::connect("sqlite::memory:", &DbOptions::default())
        .await
        .unwrap();
    let rx = Receiver::start(Mode::Up(Duration::ZERO), SECRET).await;
    let settings = Settings {
        urls: vec![rx.url("/hooks")],
        langdao_events_url: Some(rx.url("/api/webrtc-events")),
        secret: Some(WebhookSecret::parse(SECRET).unwrap()),
        backoff: Some(fast()),
        heartbeat_every: Some(Duration::from_millis(200)),
        ..Settings::default()
    };
    let (hooks, worker) = confab_webhooks::start(&db, settings).await.unwrap();
    let (student, tutor) = (Address::repeat_byte(0x11), Address::repeat_byte(0x22));
    let (s, t) = (student.to_checksum(None), tutor.to_checksum(None));
    let paid = repo::start_paid_session(
        &db,
        &NewPaidSession {
            room_id: "lang-room".into(),
            student,
            tutor,
            language: 3,
            chain_session_id: None,
        },
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let emitter = hooks.emitter();
    emitter.participant_joined("lang-room", "p1", &s, "Student");
    emitter.participant_joined("lang-room", "p2", &t, "Tutor");
    let langdao = |kind: &str| -> Vec<serde_json::Value> {
        rx.acknowledged("/api/webrtc-events")
            .values()
            .map(|b| serde_json::from_str::<serde_json::Value>(b).unwrap())
            .filter(|v| v["type"] == kind)
            .collect()
    };
    wait_for(
        "heartbeats from both parties",
        Duration::from_secs(10),
        async || {
            let hb = langdao("session-heartbeat");
            hb.iter().any(|v| v["userRole"] == "student")
                && hb.iter().any(|v| v["userRole"] == "tutor")
        },
    )
    .await;
    emitter.participant_left("lang-room", "p1", &s, "Student", LeaveReason::Disconnected);
    wait_for("user-disconnected", Duration::from_secs(10), async || {
        !langdao("user-disconnected").is_empty()
    })
    .await;
    let d = &langdao("user-disconnected")[0];
    assert_eq!(
        (d["sessionId"].as_str(), d["userAddress"].as_str()),
        (Some("lang-room"), Some(s.as_str()))
    );
    assert_eq!(
        (d["userRole"].as_str(), d["reason"].as_str()),
        (Some("student"), Some("connection-closed"))
    );
    repo::end_paid_session(&db, paid, EndReason::Disconnected, chrono::Utc::now())
        .await
        .unwrap()
        .expect("ended");
    wait_for("session-ended", Duration::from_secs(10), async || {
        !langdao("session-ended").is_empty()
    })
    .await;
    let e = &langdao("session-ended")[0];
    assert_eq!(e["sessionId"], "lang-room");
    assert_eq!(e["tutorAddress"], t.as_str());
    assert!(e["timestamp"].is_i64());
    // The standard endpoint got the standard events and none of LangDAO's bodies.
    let standard: Vec<serde_json::Value> = rx
        .acknowledged("/hooks")
        .values()
        .map(|b| serde_json::from_str::<serde_json::Value>(b).unwrap())
        .collect();
    for t in [
        "paid_session_started",
        "paid_session_ended",
        "participant_left",
    ] {
        assert!(
            standard.iter().any(|v| v["type"] == t),
            "{t} on the standard endpoint"
        );
    }
    assert!(standard.iter().all(|v| v["data"].is_object()));
    // session-ended and paid_session_ended are one event: one id.
    let ended_ids: Vec<String> = rx
        .received()
        .into_iter()
        .filter(|r| r.body.contains("session-ended") || r.body.contains("paid_session_ended"))
        .map(|r| r.id)
        .collect();
    assert!(ended_ids.windows(2).all(|w| w[0] == w[1]) && ended_ids.len() >= 2);
    assert!(rx.received().iter().all(|r| r.verified));
    worker.shutdown().await;
}
