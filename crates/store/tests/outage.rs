//! PostgreSQL outages, staged with a TCP proxy of the test's own in front of the shared server
//! (the shared server itself is never touched). The proxy can refuse (connections cut, port
//! closed: a crashed or restarting server) or blackhole (connections stay open, nothing gets
//! through: a network partition), and be restored.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use common::{msg, pg_base_url, with_host_port, Backend, TestDb};
use confab_store::{Db, DbOptions, InsertOutcome, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::timeout;

/// Pool acquire timeout used through the proxy: small, so an outage is reported quickly.
const ACQUIRE_TIMEOUT_MS: u64 = 500;

/// Longest an operation may take to report an outage: the operation bound (3 × acquire timeout)
/// plus scheduling slack.
const REPORT_WITHIN: Duration = Duration::from_millis(3 * ACQUIRE_TIMEOUT_MS + 1_000);

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forward everything.
    Up,
    /// Connections stay open but no byte is forwarded until the mode changes.
    Blackhole,
    /// All connections closed and the port closed (connects are refused).
    Down,
}

/// A TCP proxy on 127.0.0.1:`port` forwarding to `upstream`; stops when dropped.
struct Proxy {
    port: u16,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mode, rx) = watch::channel(Mode::Up);
        let task = tokio::spawn(run_proxy(listener, port, upstream, rx));
        Proxy { port, mode, task }
    }

    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.mode.send_replace(Mode::Down);
        self.task.abort();
    }
}

async fn run_proxy(
    first: TcpListener,
    port: u16,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
) {
    let mut listener = Some(first);
    let mut holder: Option<tokio::net::TcpSocket> = None;
    loop {
        // While down, the port is closed.
        if mode.wait_for(|m| *m != Mode::Down).await.is_err() {
            return;
        }
        drop(holder.take());
        let l = match listener.take() {
            Some(l) => l,
            None => match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => l,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        loop {
            tokio::select! {
                accepted = l.accept() => {
                    if let Ok((client, _)) = accepted {
                        tokio::spawn(pipe(client, upstream, mode.clone()));
                    }
                }
                changed = mode.changed() => {
                    if changed.is_err() { return; }
                    if *mode.borrow_and_update() == Mode::Down { break; } // drops the listener
                }
            }
        }
        // Keep the port bound but not listening while down: connects are refused, and no other
        // test's socket can take the port meanwhile (it did once, and answered the client).
        holder = tokio::net::TcpSocket::new_v4().ok().and_then(|s| {
            let _ = s.set_reuseaddr(true);
            s.bind(SocketAddr::from(([127, 0, 0, 1], port)))
                .ok()
                .map(|_| s)
        });
    }
}

/// Forwards one connection both ways until either side closes or the proxy goes down.
async fn pipe(client: TcpStream, upstream: SocketAddr, mode: watch::Receiver<Mode>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::select! {
        _ = pump(cr, sw, mode.clone()) => {}
        _ = pump(sr, cw, mode) => {}
    }
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut down = mode.clone();
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = down.wait_for(|m| *m == Mode::Down) => return,
        };
        // Hold the bytes while blackholed; drop the connection if the proxy goes down.
        match mode.wait_for(|m| *m != Mode::Blackhole).await.map(|m| *m) {
            Ok(Mode::Up) => {}
            _ => return,
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A fresh database on the shared server, reached directly and through a proxy.
struct Setup {
    tdb: TestDb,
    proxy: Proxy,
    /// Through the proxy, with a small acquire timeout.
    db: Db,
    /// Straight to the server, for checking what was stored.
    direct: Db,
}

async fn setup() -> Setup {
    let tdb = TestDb::create(Backend::Postgres).await;
    let opts = sqlx::postgres::PgConnectOptions::from_str(&pg_base_url()).unwrap();
    let upstream: SocketAddr = tokio::net::lookup_host((opts.get_host(), opts.get_port()))
        .await
        .unwrap()
        .next()
        .expect("PostgreSQL host resolves");
    let proxy = Proxy::start(upstream).await;
    let small = DbOptions {
        max_connections: 3,
        acquire_timeout_ms: ACQUIRE_TIMEOUT_MS,
        ..DbOptions::default()
    };
    let db = common::connect_with(&with_host_port(&tdb.url, proxy.port), &small).await;
    let direct = tdb.connect().await;
    Setup {
        tdb,
        proxy,
        db,
        direct,
    }
}

impl Setup {
    async fn teardown(self) {
        drop(self.proxy);
        timeout(Duration::from_secs(10), self.db.close()).await.ok();
        timeout(Duration::from_secs(10), self.direct.close())
            .await
            .ok();
        self.tdb.teardown().await;
    }
}

/// Sends until one insert succeeds or `within` passes.
async fn insert_until_ok(db: &Db, cid: &str, within: Duration) -> InsertOutcome {
    let deadline = Instant::now() + within;
    loop {
        match timeout(
            REPORT_WITHIN,
            db.insert_message(msg("r1", "alice", cid, cid)),
        )
        .await
        {
            Ok(Ok((_, outcome))) => return outcome,
            Ok(Err(e)) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(Err(e)) => panic!("{cid}: still failing after {within:?}: {e}"),
            Err(_) => panic!("{cid}: an insert hung past {REPORT_WITHIN:?}"),
        }
    }
}

/// Inserts `cid` and expects an `Unavailable` error within [`REPORT_WITHIN`].
async fn expect_unavailable(db: &Db, cid: &str) {
    let started = Instant::now();
    let result = timeout(
        REPORT_WITHIN,
        db.insert_message(msg("r1", "alice", cid, cid)),
    )
    .await
    .unwrap_or_else(|_| panic!("{cid}: no answer within {REPORT_WITHIN:?} during the outage"));
    match result {
        Err(StoreError::Unavailable(e)) => {
            eprintln!("{cid}: Unavailable after {:?}: {e}", started.elapsed());
        }
        other => panic!("{cid}: expected Unavailable during the outage, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_database_reports_unavailable_quickly_and_recovers_without_losing_acked_messages()
{
    let s = setup().await;
    let run = async {
        assert_eq!(
            insert_until_ok(&s.db, "before", Duration::ZERO).await,
            InsertOutcome::Inserted
        );

        // A writer that keeps sending through the outage, recording what was acknowledged.
        let writer_db = s.db.clone();
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let writer = tokio::spawn(async move {
            let (mut acked, mut failed) = (Vec::new(), Vec::new());
            for i in 0.. {
                if *stop_rx.borrow_and_update() {
                    break;
                }
                let cid = format!("w{i}");
                match writer_db
                    .insert_message(msg("r1", "alice", &cid, &cid))
                    .await
                {
                    Ok(_) => acked.push(cid),
                    Err(e) if e.is_retryable() => failed.push(cid),
                    Err(e) => panic!("{cid}: not an outage error: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (acked, failed)
        });

        tokio::time::sleep(Duration::from_millis(200)).await;
        s.proxy.set(Mode::Down);
        expect_unavailable(&s.db, "during-1").await;
        expect_unavailable(&s.db, "during-2").await;

        s.proxy.set(Mode::Up);
        // The pool reconnects on the next acquire; give it one acquire timeout of slack.
        let restored = Instant::now();
        insert_until_ok(&s.db, "after", Duration::from_secs(5)).await;
        eprintln!(
            "first insert after restore succeeded after {:?}",
            restored.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop_tx.send_replace(true);
        let (acked, failed) = timeout(Duration::from_secs(20), writer)
            .await
            .unwrap()
            .unwrap();
        assert!(!failed.is_empty(), "the writer should have seen the outage");
        eprintln!(
            "writer: {} acknowledged, {} refused",
            acked.len(),
            failed.len()
        );

        // The failed sends, resent under their ids, are stored now, each once.
        for cid in ["during-1", "during-2"]
            .iter()
            .map(|c| c.to_string())
            .chain(failed.clone())
        {
            insert_until_ok(&s.db, &cid, Duration::from_secs(5)).await;
        }

        let history = s.direct.history("r1", None, 200).await.unwrap();
        let stored: Vec<&str> = history.iter().map(|m| m.client_msg_id.as_str()).collect();
        let unique: HashSet<&str> = stored.iter().copied().collect();
        assert_eq!(unique.len(), stored.len(), "a message was stored twice");
        for cid in acked
            .iter()
            .chain(&failed)
            .map(String::as_str)
            .chain(["before", "after"])
        {
            assert!(
                unique.contains(cid),
                "{cid} was acknowledged but is missing"
            );
        }
        assert_eq!(stored.len(), acked.len() + failed.len() + 4);
    };
    let outcome = timeout(Duration::from_secs(90), run).await;
    s.teardown().await;
    outcome.expect("outage test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_database_reports_unavailable_within_the_operation_bound_and_recovers() {
    let s = setup().await;
    let run = async {
        insert_until_ok(&s.db, "before", Duration::ZERO).await;
        s.proxy.set(Mode::Blackhole);
        expect_unavailable(&s.db, "during").await;
        s.proxy.set(Mode::Up);
        insert_until_ok(&s.db, "after", Duration::from_secs(10)).await;
        // Whether or not "during" reached the database before the partition, a resend makes it
        // stored exactly once.
        insert_until_ok(&s.db, "during", Duration::from_secs(10)).await;
        let history = s.direct.history("r1", None, 50).await.unwrap();
        let mut cids: Vec<&str> = history.iter().map(|m| m.client_msg_id.as_str()).collect();
        cids.sort_unstable();
        assert_eq!(cids, ["after", "before", "during"]);
    };
    let outcome = timeout(Duration::from_secs(90), run).await;
    s.teardown().await;
    outcome.expect("blackhole test timed out");
}
