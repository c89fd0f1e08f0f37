//! `https://` endpoints: a delivery to a receiver whose certificate the system trusts arrives,
//! signed; one to a receiver with an unknown certificate is never acknowledged and stays pending
//! with the TLS failure as its last error. Its own test binary: it points `SSL_CERT_FILE` (the
//! trust roots rustls-platform-verifier loads on Linux) at the trusted receiver's certificate.

mod receiver;

use std::time::Duration;

use confab_store::{Db, DbOptions, WebhookEvent};
use confab_webhooks::{Backoff, Settings, WebhookSecret};
use receiver::{Mode, Receiver};

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_endpoint_is_delivered_when_its_certificate_is_trusted_and_never_otherwise() {
    let (trusted, pem) = Receiver::start_tls(Mode::Up(Duration::ZERO), SECRET).await;
    let (unknown, _) = Receiver::start_tls(Mode::Up(Duration::ZERO), SECRET).await;
    let roots = std::env::temp_dir().join(format!("confab-wh-roots-{}.pem", std::process::id()));
    std::fs::write(&roots, pem).unwrap();
    // The only test in this binary, and no HTTP client exists yet.
    std::env::set_var("SSL_CERT_FILE", &roots);

    let db = Db::connect("sqlite::memory:", &DbOptions::default())
        .await
        .unwrap();
    let settings = Settings {
        urls: vec![trusted.url("/hooks"), unknown.url("/hooks")],
        secret: Some(WebhookSecret::parse(SECRET).unwrap()),
        timeout: Some(Duration::from_secs(2)),
        backoff: Some(Backoff {
            initial: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
            jitter: 0.2,
        }),
        ..Settings::default()
    };
    let (_hooks, worker) = confab_webhooks::start(&db, settings).await.unwrap();
    let e = WebhookEvent::new(
        "room_started",
        serde_json::json!({"room": "tls"}),
        chrono::Utc::now(),
    );
    assert_eq!(db.enqueue_webhook(&e).await.unwrap(), 2);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows = db.webhook_deliveries().await.unwrap();
        let delivered = rows.iter().filter(|r| r.state == "delivered").count();
        let failed = rows
            .iter()
            .filter(|r| r.state == "pending" && r.attempts >= 3)
            .count();
        if delivered == 1 && failed == 1 {
            let pending = rows.iter().find(|r| r.state == "pending").unwrap();
            let why = pending.last_error.clone().unwrap_or_default();
            assert!(
                why.to_ascii_lowercase().contains("certificate"),
                "the unknown certificate is the failure: {why}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = trusted.acknowledged("/hooks");
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        std::slice::from_ref(&e.id)
    );
    assert!(
        trusted.received().iter().all(|r| r.verified),
        "signed over TLS"
    );
    assert!(
        unknown.received().is_empty(),
        "no request reached the receiver with the unknown certificate"
    );
    worker.shutdown().await;
    let _ = std::fs::remove_file(&roots);
}
