//! Connecting: the [`Db`] enum over the two native pools, its options, migrations, and the
//! per-operation time bound every repository method runs under.

use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::StoreError;

/// The repository's `migrations/` folder, embedded at compile time (see `build.rs`).
static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// A connection pool to PostgreSQL or SQLite. Clone it freely: clones share the pool.
///
/// The variants are public so a module of this crate can reach backend-specific features
/// (e.g. a transaction); repository methods use the crate-internal `on_db!` macro instead.
#[derive(Debug, Clone)]
pub enum Db {
    /// PostgreSQL (production).
    Postgres(PgPool),
    /// A SQLite file (zero-setup default), in WAL mode with foreign keys on.
    Sqlite(SqlitePool),
}

/// Which database a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

/// Pool and timing options for [`Db::connect`].
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// Most connections the pool opens. SQLite serializes writers anyway; a few are enough there.
    pub max_connections: u32,
    /// How long, in milliseconds, an operation waits for a pooled connection (including connecting
    /// and reconnecting) before failing with [`StoreError::Unavailable`]. Also bounds `connect`.
    /// A whole repository operation (acquire + queries) is bounded by three times this value, so
    /// a network that swallows packets without closing the connection also ends in `Unavailable`.
    pub acquire_timeout_ms: u64,
    /// SQLite only: how long, in milliseconds, a statement waits for another writer's lock.
    pub sqlite_busy_timeout_ms: u64,
}

impl Default for DbOptions {
    /// 10 connections, 3 s acquire timeout (9 s per operation), 5 s SQLite busy timeout.
    fn default() -> Self {
        DbOptions {
            max_connections: 10,
            acquire_timeout_ms: 3_000,
            sqlite_busy_timeout_ms: 5_000,
        }
    }
}

/// The bound on one whole repository operation: the pool's acquire timeout times
/// [`OP_TIMEOUT_FACTOR`] (the pool keeps the acquire timeout, so `Db` needs no extra field).
fn op_timeout(db: &Db) -> Duration {
    let acquire = match db {
        Db::Postgres(p) => p.options().get_acquire_timeout(),
        Db::Sqlite(p) => p.options().get_acquire_timeout(),
    };
    acquire.saturating_mul(OP_TIMEOUT_FACTOR)
}

/// Operation bound as a multiple of the acquire timeout; see [`DbOptions::acquire_timeout_ms`].
const OP_TIMEOUT_FACTOR: u32 = 3;

impl Db {
    /// Connects to `url` and applies pending migrations.
    ///
    /// - `postgres://…` or `postgresql://…`: PostgreSQL (TLS via rustls if the URL asks for it).
    /// - `sqlite://path`, `sqlite:path` or a bare file path: a SQLite file, created (with its
    ///   parent directory) if missing, WAL journal, `synchronous=FULL`, foreign keys on, busy
    ///   timeout from `opts`. `sqlite::memory:` gives a private in-memory database on a single
    ///   connection (lost on close; for tests).
    ///
    /// # Errors
    /// [`StoreError::Config`] for a malformed URL, [`StoreError::Unavailable`] if the database
    /// cannot be reached within `acquire_timeout_ms`, [`StoreError::Migrate`] if migrating fails.
    pub async fn connect(url: &str, opts: &DbOptions) -> Result<Db, StoreError> {
        let acquire_timeout = Duration::from_millis(opts.acquire_timeout_ms);
        let db = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let connect = PgConnectOptions::from_str(url)
                .map_err(|e| StoreError::Config(format!("bad PostgreSQL URL: {e}")))?
                .application_name("confab");
            let pool = PgPoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(acquire_timeout)
                .connect_with(connect)
                .await
                .map_err(StoreError::from_sqlx)?;
            Db::Postgres(pool)
        } else {
            // synchronous=FULL (not NORMAL): in WAL mode NORMAL may lose the last commits on
            // power loss, and a message is acknowledged as stored once committed.
            let connect = sqlite_options(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_millis(opts.sqlite_busy_timeout_ms));
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            if let Some(dir) = connect
                .get_filename()
                .parent()
                .filter(|d| !in_memory && !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Config(format!("cannot create directory {}: {e}", dir.display()))
                })?;
            }
            let pool = if in_memory {
                // Each connection would get its own empty in-memory database: keep exactly one,
                // forever (for tests and throwaway runs).
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
            } else {
                SqlitePoolOptions::new().max_connections(opts.max_connections)
            };
            let pool = pool
                .acquire_timeout(acquire_timeout)
                .connect_with(connect)
                .await
                .map_err(StoreError::from_sqlx)?;
            Db::Sqlite(pool)
        };
        on_db!(&db, |pool| MIGRATOR.run(pool).await)?;
        tracing::info!(backend = ?db.backend(), "database connected and migrated");
        Ok(db)
    }

    /// Which backend this pool talks to.
    pub fn backend(&self) -> Backend {
        match self {
            Db::Postgres(_) => Backend::Postgres,
            Db::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Checks that the database answers (`SELECT 1`) within the operation bound; for `/healthz`
    /// and readiness probes.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if it does not.
    pub async fn health_check(&self) -> Result<(), StoreError> {
        self.run(async {
            on_db!(self, |pool| {
                sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
            })
            .map_err(StoreError::from_sqlx)
        })
        .await
    }

    /// Closes the pool: waits for checked-out connections to come back, then closes them all.
    /// Call on shutdown (for SQLite this also checkpoints the WAL).
    pub async fn close(&self) {
        on_db!(self, |pool| pool.close().await)
    }

    /// Runs one repository operation under the per-operation time bound, mapping sqlx errors.
    pub(crate) async fn run<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let bound = op_timeout(self);
        match tokio::time::timeout(bound, op).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(sqlx::Error::Io(
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "database operation timed out after {} ms",
                        bound.as_millis()
                    ),
                ),
            ))),
        }
    }
}

/// Parses `sqlite://path`, `sqlite:path` or a bare path into connect options.
fn sqlite_options(url: &str) -> Result<SqliteConnectOptions, StoreError> {
    if url.starts_with("sqlite:") {
        SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("bad SQLite URL: {e}")))
    } else if url.contains("://") {
        Err(StoreError::Config(format!(
            "unsupported database URL scheme in {url:?}: use postgres://, sqlite:// or a file path"
        )))
    } else {
        Ok(SqliteConnectOptions::new().filename(Path::new(url)))
    }
}
