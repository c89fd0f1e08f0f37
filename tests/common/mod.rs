//! The real server on port 0, for the integration tests (one per test).

#![allow(dead_code)]

use confab::auth::TokenAuthority;
use confab::config::ServeArgs;
use confab::Application;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A reqwest client (the process's rustls crypto provider installed first: reqwest is built
/// without one, see `confab_store::ensure_crypto_provider`).
pub fn http() -> reqwest::Client {
    confab_store::ensure_crypto_provider();
    reqwest::Client::new()
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub tokens: TokenAuthority,
    pub data_dir: PathBuf,
}

impl TestApp {
    /// A WebSocket URL with a fresh token for `user`.
    pub fn ws_url(&self, user: &str) -> String {
        format!(
            "ws://{}/ws?token={}",
            self.addr,
            self.tokens.mint(user, user, 600, None)
        )
    }
}

impl TestApp {
    /// `GET path` on the server with a fresh token for `user`, as JSON.
    pub async fn get_json(&self, path: &str, user: &str) -> serde_json::Value {
        http()
            .get(format!("http://{}{path}", self.addr))
            .bearer_auth(self.tokens.mint(user, user, 60, None))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("a JSON body")
    }
}

impl TestApp {
    /// The value of an unlabelled metric in `GET /metrics` (panics when it is missing).
    pub async fn metric(&self, name: &str) -> f64 {
        self.metrics_text()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics"))
    }

    /// The whole `GET /metrics` text.
    pub async fn metrics_text(&self) -> String {
        http()
            .get(format!("http://{}/metrics", self.addr))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

pub async fn spawn_app(max_participants: usize) -> TestApp {
    spawn_app_with_db(max_participants, None).await
}

/// The server with `database_url` (None: SQLite in its data dir).
pub async fn spawn_app_with_db(max_participants: usize, database_url: Option<String>) -> TestApp {
    spawn_app_with(|a| {
        a.max_participants = max_participants;
        a.database_url = database_url;
    })
    .await
}

/// The server with settings adjusted by `adjust`.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut ServeArgs)) -> TestApp {
    let data_dir = std::env::temp_dir().join(format!("confab-test-{}", uuid::Uuid::new_v4()));
    let mut args = ServeArgs {
        config: None,
        log_format: Default::default(),
        listen: "127.0.0.1:0".parse().unwrap(),
        media_port: 0,
        media_tcp_port: Some(0),
        resume_grace_s: 20,
        public_ip: vec!["127.0.0.1".parse().unwrap()],
        data_dir: data_dir.clone(),
        static_dir: None,
        max_participants: 16,
        media_workers: None,
        database_url: None,
        db_max_connections: 5,
        db_acquire_timeout_ms: 1000,
        chain_rpc_url: None,
        contract_address: None,
        paid_grace_s: 30,
        paid_heartbeat_timeout_s: 120,
        settlement_retry_ms: 2000,
        settlement_overdue_after_s: 600,
        settlement_lease_s: 300,
        tls: confab::tls::TlsMode::Off,
        tls_cert: None,
        tls_key: None,
        ice_servers: vec![],
        turn_secret_file: None,
        turn_ttl_s: 86_400,
        public_origin: None,
        webhooks: Default::default(),
        call_ring_timeout_s: 30,
        max_total_participants: 1000,
        max_sockets_per_ip: 64,
        max_sockets_per_user: 8,
        joins_per_ip_per_min: 120,
        joins_per_user_per_min: 20,
        connect_timeout_s: 20,
        redis_url: None,
        node_url: None,
        cluster_ttl_s: 10,
    };
    adjust(&mut args);
    let app = Application::build(args).await.expect("the server builds");
    let addr = app.http_addr();
    tokio::spawn(app.run_until_stopped());
    let secret =
        std::fs::read_to_string(data_dir.join("jwt-secret")).expect("secret written at start");
    TestApp {
        addr,
        tokens: TokenAuthority::new(secret.trim().to_owned().into()),
        data_dir,
    }
}

/// A synthetic camera (VP8) and microphone (Opus) to publish.
pub fn av() -> Vec<(confab_protocol::Source, confab_client::SyntheticTrack)> {
    vec![
        (
            confab_protocol::Source::Camera,
            confab_client::SyntheticTrack::video(),
        ),
        (
            confab_protocol::Source::Microphone,
            confab_client::SyntheticTrack::audio(),
        ),
    ]
}

/// The tracks `c` receives from `participant`.
pub fn received_from(
    c: &confab_client::Client,
    participant: &str,
) -> Vec<std::sync::Arc<confab_client::RemoteTrackStats>> {
    c.remote_tracks()
        .into_iter()
        .filter(|t| t.participant == participant)
        .collect()
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The PostgreSQL the tests use (`CONFAB_TEST_PG_URL`, default the local one).
pub fn pg_admin_url() -> String {
    std::env::var("CONFAB_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Creates a fresh database on the test PostgreSQL and returns its URL (through `via`, a
/// `host:port` to connect to instead of the server itself, e.g. a proxy).
pub async fn fresh_pg_database(via: Option<SocketAddr>) -> (String, String) {
    use sqlx::Connection;
    let admin = pg_admin_url();
    let name = format!("confab_it_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("the test PostgreSQL answers (scripts/ensure-postgres.sh)");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create database");
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .unwrap_or(admin.clone());
    let url = match via {
        Some(addr) => {
            let (scheme_user, _) = base.rsplit_once('@').expect("user@host in the URL");
            format!("{scheme_user}@{addr}/{name}")
        }
        None => format!("{base}/{name}"),
    };
    (url, name)
}

/// Drops a database made by [`fresh_pg_database`].
pub async fn drop_pg_database(name: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
}

/// A TCP proxy in front of a server that the test can cut (refuse and reset every connection)
/// and restore, to simulate an outage without touching the shared server.
pub struct CuttableProxy {
    pub addr: SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl CuttableProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let generation = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (up2, gen2) = (up.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let my_gen = gen2.load(Ordering::SeqCst);
                let gen3 = gen2.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
                    let watch = async {
                        while gen3.load(Ordering::SeqCst) == my_gen {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! { _ = copy => {}, _ = watch => {} }
                });
            }
        });
        Self {
            addr,
            up,
            generation,
        }
    }

    /// Cuts every open connection and refuses new ones.
    pub async fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Every pipe notices within 20 ms.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Packets `c` received so far from `participant`: (audio, video).
pub fn received_av(c: &confab_client::Client, participant: &str) -> (u64, u64) {
    let mut out = (0, 0);
    for t in received_from(c, participant) {
        let n = t.stats.lock().unwrap().received;
        if t.video {
            out.1 += n;
        } else {
            out.0 += n;
        }
    }
    out
}

/// `names` join `room` on `app` and publish a camera and a microphone ([`av`]); returns once each
/// has received 50 audio and 50 video packets from every other: the clients and their
/// participant ids, in `names`' order.
pub async fn call_of(
    app: &TestApp,
    room: &str,
    names: &[&str],
) -> (Vec<confab_client::Client>, Vec<String>) {
    let mut calls = Vec::new();
    for name in names {
        let mut c = confab_client::Client::join(&app.ws_url(name), room, name)
            .await
            .expect("join");
        c.publish(&av()).await.expect("publish");
        calls.push(c);
    }
    let ids: Vec<String> = calls.iter().map(|c| c.participant_id.clone()).collect();
    let flowing = eventually(Duration::from_secs(30), || {
        calls.iter().enumerate().all(|(i, c)| {
            ids.iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .all(|(_, id)| {
                    let (a, v) = received_av(c, id);
                    a.min(v) >= 50
                })
        })
    })
    .await;
    assert!(flowing, "{names:?} receive each other");
    (calls, ids)
}

/// One `ping` on each of `clients` in turn; returns the slowest `pong`. Panics when one takes
/// over 5 s.
pub async fn slowest_pong(clients: &mut [confab_client::Client]) -> Duration {
    let mut slowest = Duration::ZERO;
    for c in clients {
        let t = std::time::Instant::now();
        c.send(&confab_protocol::ClientMessage::Ping { ts: None })
            .await
            .unwrap();
        let pong = c
            .wait_event(Duration::from_secs(5), |m| {
                matches!(m, confab_protocol::ServerMessage::Pong { .. })
            })
            .await;
        assert!(pong.is_some(), "no pong within 5 s");
        slowest = slowest.max(t.elapsed());
    }
    slowest
}
