//! Test support: a fresh database per test on each backend, and helpers to build messages.
//!
//! PostgreSQL: a uniquely named database (`confab_test_<uuid>`) on the shared server
//! (`CONFAB_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`), dropped after
//! the test. SQLite: a file in a fresh temporary directory, removed after the test.
#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use confab_store::{ChatText, ClientMsgId, Db, DbOptions, MessageType, NewMessage, Uuid};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// Upper bound on one test body on one backend.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Upper bound on creating or dropping a test database.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// The two backends every test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const BOTH: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

/// The shared PostgreSQL server's URL (a maintenance database on it).
pub fn pg_base_url() -> String {
    std::env::var("CONFAB_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `url` with its database (path) replaced by `database`; the query string is kept.
pub fn with_database(url: &str, database: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let authority_start = head.find("://").map_or(0, |i| i + 3);
    let prefix = match head[authority_start..].find('/') {
        Some(slash) => &head[..authority_start + slash],
        None => head,
    };
    match query {
        Some(q) => format!("{prefix}/{database}?{q}"),
        None => format!("{prefix}/{database}"),
    }
}

/// `url` pointing at `127.0.0.1:port` instead of its host and port (user, path and query kept).
pub fn with_host_port(url: &str, port: u16) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let authority = &url[start..end];
    let userinfo = authority.rfind('@').map_or("", |at| &authority[..=at]);
    format!("{}{userinfo}127.0.0.1:{port}{}", &url[..start], &url[end..])
}

/// A database made for one test; call [`TestDb::teardown`] when done.
pub struct TestDb {
    pub backend: Backend,
    /// URL of the fresh database.
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    SqliteDir(PathBuf),
    PgDatabase(String),
}

impl TestDb {
    /// Creates an empty database (not yet migrated: `Db::connect` does that).
    pub async fn create(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("confab-store-{}", Uuid::new_v4()));
                // `Db::connect` creates the directory and the file.
                let url = format!("sqlite://{}", dir.join("chat.db").display());
                TestDb {
                    backend,
                    url,
                    cleanup: Cleanup::SqliteDir(dir),
                }
            }
            Backend::Postgres => {
                let name = format!("confab_test_{}", Uuid::new_v4().simple());
                admin(&format!("CREATE DATABASE {name}")).await;
                let url = with_database(&pg_base_url(), &name);
                TestDb {
                    backend,
                    url,
                    cleanup: Cleanup::PgDatabase(name),
                }
            }
        }
    }

    /// Connects (and migrates) with test-sized pool options.
    pub async fn connect(&self) -> Db {
        connect_with(&self.url, &test_options()).await
    }

    /// Drops the database (PostgreSQL, forcing off leftover sessions) or removes the file.
    pub async fn teardown(self) {
        match self.cleanup {
            Cleanup::SqliteDir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::PgDatabase(name) => {
                admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
            }
        }
    }
}

/// Small pool, short timeouts: a broken database fails a test fast instead of hanging it.
pub fn test_options() -> DbOptions {
    DbOptions {
        max_connections: 5,
        acquire_timeout_ms: 5_000,
        ..DbOptions::default()
    }
}

pub async fn connect_with(url: &str, opts: &DbOptions) -> Db {
    tokio::time::timeout(SETUP_TIMEOUT, Db::connect(url, opts))
        .await
        .unwrap_or_else(|_| panic!("connecting to {url} timed out"))
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// Runs one statement on the shared server's maintenance database.
async fn admin(sql: &str) {
    let url = pg_base_url();
    let run = async {
        let mut conn = PgConnection::connect(&url).await?;
        sqlx::query(AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await?;
        conn.close().await
    };
    tokio::time::timeout(SETUP_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("{sql}: timed out on {url}"))
        .unwrap_or_else(|e| panic!("{sql}: {e} (is PostgreSQL up? scripts/ensure-postgres.sh)"));
}

/// Runs `test` against a fresh, migrated database on each backend in turn, under
/// [`TEST_TIMEOUT`], cleaning up even when the test panics (then re-raising the panic).
pub async fn on_both_backends<F, Fut>(test: F)
where
    F: Fn(Db) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    for backend in BOTH {
        let tdb = TestDb::create(backend).await;
        let db = tdb.connect().await;
        let outcome = tokio::time::timeout(TEST_TIMEOUT, tokio::spawn(test(db.clone()))).await;
        tokio::time::timeout(SETUP_TIMEOUT, db.close()).await.ok();
        tdb.teardown().await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(join)) if join.is_panic() => {
                eprintln!("test failed on {backend:?}");
                std::panic::resume_unwind(join.into_panic());
            }
            Ok(Err(join)) => panic!("{backend:?}: test task failed: {join}"),
            Err(_) => panic!("{backend:?}: test timed out after {TEST_TIMEOUT:?}"),
        }
    }
}

/// A text message from `user` in `room` with client message id `cid`.
pub fn msg(room: &str, user: &str, cid: &str, text: &str) -> NewMessage {
    NewMessage {
        room_id: room.to_owned(),
        user_id: user.to_owned(),
        user_name: format!("{user} (name)"),
        text: ChatText::parse(text).expect("test text is valid"),
        message_type: MessageType::Text,
        client_msg_id: ClientMsgId::parse(cid).expect("test client id is valid"),
    }
}
