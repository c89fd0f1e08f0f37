//! Liveness and readiness probes (`src/http/health.rs`): a healthy server answers both; with its
//! PostgreSQL cut (a proxy in front of the shared instance, which is never touched) `/readyz`
//! answers 503 naming the database while `/healthz` stays 200, and both are 200 again once the
//! database is back; probes past their per-address budget are refused with `rate_limited`.

mod common;

use common::{drop_pg_database, fresh_pg_database, http, spawn_app, spawn_app_with, CuttableProxy};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// `GET path` → (status, JSON body).
async fn probe(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let r = http()
        .get(format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the probe answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// Polls `path` every 200 ms until it answers `status`; returns the body and how long it took.
async fn until(
    addr: SocketAddr,
    path: &str,
    status: u16,
    within: Duration,
) -> (serde_json::Value, Duration) {
    let t = Instant::now();
    loop {
        let (s, body) = probe(addr, path).await;
        if s == status {
            return (body, t.elapsed());
        }
        assert!(
            t.elapsed() < within,
            "{path} never answered {status}: last {s} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_healthy_server_is_live_and_ready() {
    let app = spawn_app(16).await;
    let (status, health) = probe(app.addr, "/healthz").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok");
    assert!(
        health["media_beat_ms"].as_u64().is_some_and(|ms| ms < 5000),
        "the media worker's loop turns: {health}"
    );
    let (status, ready) = probe(app.addr, "/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["database"], "ok");
    assert_eq!(ready["checks"]["media"], "ok");
    assert_eq!(
        ready["checks"]["settlement"], "off",
        "no chain settings: no settlement worker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_database_down_and_back_while_liveness_stays() {
    let pg: SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let proxy = CuttableProxy::start(pg).await;
    let (db_url, db_name) = fresh_pg_database(Some(proxy.addr)).await;
    let app = spawn_app_with(move |a| a.database_url = Some(db_url)).await;
    until(app.addr, "/readyz", 200, Duration::from_secs(10)).await;

    proxy.cut().await;
    let (body, after) = until(app.addr, "/readyz", 503, Duration::from_secs(10)).await;
    println!("/readyz 503 {after:?} after the cut: {body}");
    assert_eq!(body["status"], "not_ready");
    assert_ne!(
        body["checks"]["database"], "ok",
        "the database is named: {body}"
    );
    assert_eq!(
        body["checks"]["media"], "ok",
        "only the database is down: {body}"
    );
    assert!(
        !body.to_string().contains("5432") && !body.to_string().contains("postgres"),
        "no connection details in the answer: {body}"
    );
    let (status, health) = probe(app.addr, "/healthz").await;
    assert_eq!(
        status, 200,
        "the process is alive without its database: {health}"
    );

    proxy.restore();
    let (body, after) = until(app.addr, "/readyz", 200, Duration::from_secs(15)).await;
    println!("/readyz 200 {after:?} after the restore: {body}");
    assert_eq!(body["checks"]["database"], "ok");
    drop(proxy);
    drop_pg_database(&db_name).await;
}

#[tokio::test]
async fn probes_past_their_budget_are_refused() {
    let app = spawn_app(16).await;
    let mut refused = 0;
    let mut last = serde_json::Value::Null;
    for _ in 0..300 {
        let (status, body) = probe(app.addr, "/healthz").await;
        if status == 429 {
            refused += 1;
            last = body;
        }
    }
    println!("{refused} of 300 refused; {last}");
    assert!(refused > 0, "a flood of probes is limited");
    assert_eq!(last["code"], "rate_limited", "{last}");
}
