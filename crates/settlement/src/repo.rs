//! The `paid_sessions` and `settlements` tables (`migrations/0002_paid_sessions.sql`,
//! `migrations/0004_settlement_leases_signed_tx.sql`) on either backend of [`confab_store::Db`]. Ending a paid
//! session writes its outbox row in the same transaction, so a session that ended is always settled eventually,
//! whatever crashes in between.
//!
//! Several workers (several servers on one PostgreSQL) share the outbox: [`claim_due_settlements`] leases due
//! rows to one worker (`FOR UPDATE SKIP LOCKED` on PostgreSQL; on SQLite, whose writers are serialised, the
//! same `UPDATE` without it), and every later write of an attempt ([`store_signed`], [`record_update`]) only
//! applies while the row is still leased to that worker. A row that cannot be read is set aside
//! ([`set_aside`]) rather than failing the whole batch.
//!
//! Starting and ending a paid session and finishing a settlement also write their webhook event
//! (`webhook_events.rs`) into `webhook_outbox` in the same transaction, so what other backends are told
//! is exactly what was committed.
//!
//! Each query is written once and run on whichever pool the `Db` holds (`on_db!`), so the SQL is what both
//! PostgreSQL and SQLite speak. Ids (UUID v7) and timestamps come from the application.

use chrono::{DateTime, SubsecRound, Utc};
use confab_store::{Db, StoreError, WebhookWriter};
use uuid::Uuid;

use crate::{
    client::{EndedSession, Settled, SignedTx},
    outbox::{Settlement, SettlementState, Update},
    webhook_events, Address, TxHash, U256,
};

/// Runs `$body` with `$pool` bound to the native pool of `$db` (expanded once per backend).
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            Db::Postgres($pool) => $body,
            Db::Sqlite($pool) => $body,
        }
    };
}

/// Why a repository call failed.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The database failed; [`StoreError::is_retryable`] says whether to try again.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The tutor already has an open paid session (the contract allows one at a time).
    #[error("the tutor already has an open paid session")]
    TutorBusy,
    /// A stored value does not parse (address, hash, number): a bug or a manual edit.
    #[error("corrupt settlement data: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for RepoError {
    fn from(err: sqlx::Error) -> Self {
        Self::Store(StoreError::from_sqlx(err))
    }
}

/// Why a paid session ended (the `end_reason` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// A participant pressed End.
    ParticipantEnded,
    /// A participant disconnected and did not come back within the grace period.
    Disconnected,
    /// No heartbeat within the timeout.
    HeartbeatTimeout,
    /// The server shut down.
    Shutdown,
}

impl EndReason {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ParticipantEnded => "participant_ended",
            Self::Disconnected => "disconnected",
            Self::HeartbeatTimeout => "heartbeat_timeout",
            Self::Shutdown => "shutdown",
        }
    }
}

/// A paid session to record when it starts.
#[derive(Debug, Clone)]
pub struct NewPaidSession {
    /// The room it runs in.
    pub room_id: String,
    /// Who pays.
    pub student: Address,
    /// Who is paid.
    pub tutor: Address,
    /// The contract's language id.
    pub language: u8,
    /// The contract's session id, if already known (from `SessionStarted`).
    pub chain_session_id: Option<U256>,
}

/// A settlement row with every column, for people and tests (the worker uses [`Settlement`]).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SettlementRecord {
    /// Row id.
    pub id: Uuid,
    /// The paid session it settles.
    pub paid_session_id: Uuid,
    /// Checksummed tutor address.
    pub tutor_address: String,
    /// The contract's session id, decimal.
    pub chain_session_id: Option<String>,
    /// `pending`, `submitted` (signed and stored, maybe broadcast), `settled`, `ended_elsewhere` or `failed`.
    pub state: String,
    /// Consecutive failed attempts.
    pub attempts: i64,
    /// Earliest next attempt.
    pub next_attempt_at: DateTime<Utc>,
    /// Error of the last failed attempt (or the reason of `failed`).
    pub last_error: Option<String>,
    /// Our transaction, once sent.
    pub tx_hash: Option<String>,
    /// Block of our successful transaction.
    pub block_number: Option<i64>,
    /// Gas used by our successful transaction.
    pub gas_used: Option<i64>,
    /// Its effective gas price, wei, decimal.
    pub gas_price_wei: Option<String>,
    /// Billed seconds.
    pub duration_s: Option<i64>,
    /// Token units paid to the tutor, decimal.
    pub total_paid: Option<String>,
    /// Block timestamp of the end when it ended elsewhere, unix seconds.
    pub chain_ended_at: Option<i64>,
    /// Row written (= paid session ended).
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it reached a terminal state.
    pub finished_at: Option<DateTime<Utc>>,
    /// The signed `endSession` (EIP-2718 envelope, `0x` hex), stored before its first broadcast.
    pub raw_tx: Option<String>,
    /// The nonce of `raw_tx`.
    pub tx_nonce: Option<i64>,
    /// The worker that claimed the row last.
    pub leased_by: Option<String>,
    /// Until when that worker's claim holds (NULL once it recorded its attempt).
    pub lease_until: Option<DateTime<Utc>>,
    /// When the row was set aside because it could not be read; the worker skips it while set.
    pub set_aside_at: Option<DateTime<Utc>>,
    /// Why it was set aside (the decoding error).
    pub set_aside_reason: Option<String>,
    /// When the row was reported (logged) as open for too long.
    pub overdue_warned_at: Option<DateTime<Utc>>,
}

/// The columns of [`SettlementRecord`], in a `SELECT` list.
macro_rules! cols {
    () => {
        "id, paid_session_id, tutor_address, chain_session_id, state, attempts, next_attempt_at, last_error, \
         tx_hash, block_number, gas_used, gas_price_wei, duration_s, total_paid, chain_ended_at, created_at, \
         updated_at, finished_at, raw_tx, tx_nonce, leased_by, lease_until, set_aside_at, set_aside_reason, \
         overdue_warned_at"
    };
}

/// The database's timestamp precision (microseconds), so values read back compare equal.
fn db_time(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// Record a paid session that started; returns its id. [`RepoError::TutorBusy`] if the tutor has one open.
/// Writes the `paid_session_started` webhook event in the same transaction.
pub async fn start_paid_session(
    db: &Db,
    new: &NewPaidSession,
    now: DateTime<Utc>,
) -> Result<Uuid, RepoError> {
    const SQL: &str = "INSERT INTO paid_sessions (id, room_id, chain_session_id, student_address, tutor_address, \
                       language_id, started_at, ended_at, end_reason) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL)";
    let id = Uuid::now_v7();
    let now = db_time(now);
    let (student, tutor) = (new.student.to_checksum(None), new.tutor.to_checksum(None));
    let chain_id = new.chain_session_id.map(|s| s.to_string());
    let event = webhook_events::paid_session_started(
        id,
        &new.room_id,
        &student,
        &tutor,
        new.language,
        chain_id.as_deref(),
        now,
    );
    let result = on_db!(db, |pool| {
        async {
            let mut tx = pool.begin().await?;
            sqlx::query(SQL)
                .bind(id)
                .bind(&new.room_id)
                .bind(&chain_id)
                .bind(&student)
                .bind(&tutor)
                .bind(i64::from(new.language))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.enqueue_webhook(&event).await?;
            tx.commit().await
        }
        .await
    });
    match result {
        Ok(()) => Ok(id),
        Err(e)
            if e.as_database_error()
                .is_some_and(|d| d.is_unique_violation()) =>
        {
            Err(RepoError::TutorBusy)
        }
        Err(e) => Err(e.into()),
    }
}

/// Record the contract's session id of a paid session once `SessionStarted` is known.
pub async fn set_chain_session_id(
    db: &Db,
    paid_session_id: Uuid,
    chain_session_id: U256,
) -> Result<(), RepoError> {
    const SQL: &str = "UPDATE paid_sessions SET chain_session_id = $2 WHERE id = $1";
    on_db!(db, |pool| sqlx::query(SQL)
        .bind(paid_session_id)
        .bind(chain_session_id.to_string())
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// A paid session as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PaidSessionRecord {
    /// Row id.
    pub id: Uuid,
    /// The room it runs in.
    pub room_id: String,
    /// The contract's session id, decimal.
    pub chain_session_id: Option<String>,
    /// Checksummed student address.
    pub student_address: String,
    /// Checksummed tutor address.
    pub tutor_address: String,
    /// The contract's language id.
    pub language_id: i64,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended (None while running).
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it ended.
    pub end_reason: Option<String>,
}

const PAID_COLS: &str =
    "id, room_id, chain_session_id, student_address, tutor_address, language_id, started_at, ended_at, end_reason";

/// Paid sessions that have not ended (to resume tracking them after a restart).
pub async fn open_paid_sessions(db: &Db) -> Result<Vec<PaidSessionRecord>, RepoError> {
    let sql =
        format!("SELECT {PAID_COLS} FROM paid_sessions WHERE ended_at IS NULL ORDER BY started_at");
    Ok(on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await)?)
}

/// The most recent paid session of a room, running or ended.
pub async fn latest_paid_session(
    db: &Db,
    room_id: &str,
) -> Result<Option<PaidSessionRecord>, RepoError> {
    let sql = format!(
        "SELECT {PAID_COLS} FROM paid_sessions WHERE room_id = $1 ORDER BY started_at DESC, id DESC LIMIT 1"
    );
    Ok(on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(room_id)
        .fetch_optional(pool)
        .await)?)
}

/// End a paid session and write its settlement (state `pending`, due now) in one transaction, with the
/// `paid_session_ended` webhook event. Idempotent: `None` when the session was already ended (or does not
/// exist), and no second settlement (or event) is written.
pub async fn end_paid_session(
    db: &Db,
    paid_session_id: Uuid,
    reason: EndReason,
    now: DateTime<Utc>,
) -> Result<Option<Uuid>, RepoError> {
    const END: &str = "UPDATE paid_sessions SET ended_at = $2, end_reason = $3 \
                       WHERE id = $1 AND ended_at IS NULL \
                       RETURNING tutor_address, chain_session_id, room_id, student_address, started_at";
    const OUTBOX: &str =
        "INSERT INTO settlements (id, paid_session_id, tutor_address, chain_session_id, state, \
                          attempts, next_attempt_at, created_at, updated_at) \
                          VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5, $5)";
    type Ended = (String, Option<String>, String, String, DateTime<Utc>);
    let now = db_time(now);
    let id = Uuid::now_v7();
    let ended: Option<Ended> = on_db!(db, |pool| {
        async {
            let mut tx = pool.begin().await?;
            let ended: Option<Ended> = sqlx::query_as(END)
                .bind(paid_session_id)
                .bind(now)
                .bind(reason.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            if let Some((tutor, chain_id, room, student, started_at)) = &ended {
                sqlx::query(OUTBOX)
                    .bind(id)
                    .bind(paid_session_id)
                    .bind(tutor)
                    .bind(chain_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let event = webhook_events::paid_session_ended(
                    &webhook_events::Ended {
                        id: paid_session_id,
                        room,
                        student,
                        tutor,
                        chain_session_id: chain_id.as_deref(),
                        started_at: *started_at,
                        reason: reason.as_str(),
                        settlement_id: id,
                    },
                    now,
                );
                tx.enqueue_webhook(&event).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(ended)
        }
        .await
    })?;
    Ok(ended.map(|_| id))
}

/// Settlements due by `now` (`pending` or `submitted`, not set aside, not leased), oldest due first, without
/// claiming them: a read-only view for people and tests. Fails on a row that does not decode; the worker uses
/// [`claim_due_settlements`], which sets such a row aside instead.
pub async fn due_settlements(
    db: &Db,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Settlement>, RepoError> {
    const SQL: &str = concat!(
        "SELECT ",
        cols!(),
        " FROM settlements WHERE state IN ('pending', 'submitted') AND set_aside_at IS NULL \
         AND next_attempt_at <= $1 AND (lease_until IS NULL OR lease_until <= $1) \
         ORDER BY next_attempt_at, id LIMIT $2"
    );
    let rows: Vec<SettlementRecord> = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(db_time(now))
        .bind(limit)
        .fetch_all(pool)
        .await)?;
    rows.into_iter().map(|r| r.to_settlement()).collect()
}

/// The settlement of a paid session, if it has ended.
pub async fn settlement_of(
    db: &Db,
    paid_session_id: Uuid,
) -> Result<Option<SettlementRecord>, RepoError> {
    const SQL: &str = concat!(
        "SELECT ",
        cols!(),
        " FROM settlements WHERE paid_session_id = $1"
    );
    Ok(on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(paid_session_id)
        .fetch_optional(pool)
        .await)?)
}

/// What [`claim_due_settlements`] took.
#[derive(Debug, Default)]
pub struct Claimed {
    /// Rows now leased to the caller, oldest due first.
    pub due: Vec<Settlement>,
    /// Rows that did not decode and were set aside instead: `(id, error)`. Not leased.
    pub set_aside: Vec<(Uuid, String)>,
}

impl Claimed {
    /// Rows taken in all (worked or set aside).
    pub fn len(&self) -> usize {
        self.due.len() + self.set_aside.len()
    }

    /// Whether nothing was due.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Lease up to `limit` due settlements (`pending` or `submitted`, due by `now`, not set aside, lease free or run
/// out) to `worker` until `lease_until`, and read them. Two workers never get the same row while its lease holds:
/// on PostgreSQL the rows are picked with `FOR UPDATE SKIP LOCKED` (a row another worker is claiming is
/// skipped, not waited for); SQLite serialises writers, so the same `UPDATE` is atomic there.
///
/// A claimed row that does not decode (a corrupt value: a bug or a manual edit) is set aside with its error
/// ([`set_aside`]) and reported in [`Claimed::set_aside`]; the other rows are returned as usual, so one bad row
/// never stalls the outbox. Errors: the database failing ([`RepoError::Store`]).
pub async fn claim_due_settlements(
    db: &Db,
    worker: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> Result<Claimed, RepoError> {
    const PG: &str = "UPDATE settlements SET leased_by = $1, lease_until = $2 WHERE id IN (\
         SELECT id FROM settlements WHERE state IN ('pending', 'submitted') AND set_aside_at IS NULL \
         AND next_attempt_at <= $3 AND (lease_until IS NULL OR lease_until <= $3) \
         ORDER BY next_attempt_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING id";
    const SQLITE: &str = "UPDATE settlements SET leased_by = $1, lease_until = $2 WHERE id IN (\
         SELECT id FROM settlements WHERE state IN ('pending', 'submitted') AND set_aside_at IS NULL \
         AND next_attempt_at <= $3 AND (lease_until IS NULL OR lease_until <= $3) \
         ORDER BY next_attempt_at, id LIMIT $4) RETURNING id";
    let now = db_time(now);
    let ids: Vec<(Uuid,)> = match db {
        Db::Postgres(pool) => {
            sqlx::query_as(PG)
                .bind(worker)
                .bind(db_time(lease_until))
                .bind(now)
                .bind(limit)
                .fetch_all(pool)
                .await?
        }
        Db::Sqlite(pool) => {
            sqlx::query_as(SQLITE)
                .bind(worker)
                .bind(db_time(lease_until))
                .bind(now)
                .bind(limit)
                .fetch_all(pool)
                .await?
        }
    };
    let mut claimed = Claimed::default();
    for (id,) in ids {
        match read_settlement(db, id).await? {
            Ok(settlement) => claimed.due.push(settlement),
            Err(reason) => {
                set_aside(db, id, &reason, now).await?;
                claimed.set_aside.push((id, reason));
            }
        }
    }
    claimed.due.sort_by_key(|a| (a.next_attempt_at, a.id));
    Ok(claimed)
}

/// One settlement row in domain form; the inner `Err` is why it does not decode (column type or value).
async fn read_settlement(db: &Db, id: Uuid) -> Result<Result<Settlement, String>, RepoError> {
    const SQL: &str = concat!("SELECT ", cols!(), " FROM settlements WHERE id = $1");
    let row: Result<Option<SettlementRecord>, sqlx::Error> = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(id)
        .fetch_optional(pool)
        .await);
    match row {
        Ok(Some(record)) => Ok(record.to_settlement().map_err(|e| e.to_string())),
        Ok(None) => Ok(Err("row vanished while claimed".into())),
        Err(
            e @ (sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::TypeNotFound { .. }),
        ) => Ok(Err(format!("row does not decode: {e}"))),
        Err(e) => Err(e.into()),
    }
}

/// Set a settlement aside: the worker skips it from now on (its lease is dropped, its state and data are kept
/// for an operator). `reason` is stored in `set_aside_reason`. See [`release_set_aside`].
pub async fn set_aside(
    db: &Db,
    id: Uuid,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), RepoError> {
    const SQL: &str =
        "UPDATE settlements SET set_aside_at = $2, set_aside_reason = $3, lease_until = NULL \
                       WHERE id = $1";
    on_db!(db, |pool| sqlx::query(SQL)
        .bind(id)
        .bind(db_time(now))
        .bind(reason)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Put a set-aside settlement back into the outbox (after an operator repaired the row); due at once. Returns
/// whether the row was set aside.
pub async fn release_set_aside(db: &Db, id: Uuid, now: DateTime<Utc>) -> Result<bool, RepoError> {
    const SQL: &str = "UPDATE settlements SET set_aside_at = NULL, set_aside_reason = NULL, next_attempt_at = $2, \
                       updated_at = $2 WHERE id = $1 AND set_aside_at IS NOT NULL";
    let n = on_db!(db, |pool| sqlx::query(SQL)
        .bind(id)
        .bind(db_time(now))
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

/// Store a signed `endSession` (hash, nonce, raw envelope; state `submitted`) before it is broadcast, replacing
/// any earlier one (a transaction proven dead). Applies only while the row is leased to `worker`: `false` means
/// another worker took the row over, and the transaction must not be broadcast.
pub async fn store_signed(
    db: &Db,
    id: Uuid,
    worker: &str,
    signed: &SignedTx,
    now: DateTime<Utc>,
) -> Result<bool, RepoError> {
    const SQL: &str = "UPDATE settlements SET state = 'submitted', tx_hash = $3, tx_nonce = $4, raw_tx = $5, \
                       updated_at = $6 WHERE id = $1 AND leased_by = $2 AND state IN ('pending', 'submitted')";
    let n = on_db!(db, |pool| sqlx::query(SQL)
        .bind(id)
        .bind(worker)
        .bind(signed.hash.to_string())
        .bind(to_i64(signed.nonce))
        .bind(signed.raw_hex())
        .bind(db_time(now))
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

/// Release every lease `worker` holds (on a clean shutdown, so another worker or the restarted server need not
/// wait for them to run out). Returns how many were released.
pub async fn release_leases(db: &Db, worker: &str) -> Result<u64, RepoError> {
    const SQL: &str = "UPDATE settlements SET lease_until = NULL WHERE leased_by = $1 AND lease_until IS NOT NULL";
    Ok(on_db!(db, |pool| sqlx::query(SQL)
        .bind(worker)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?)
}

/// The open part of the outbox at one instant, for metrics: one aggregate query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// When it was measured.
    pub measured_at: DateTime<Utc>,
    /// The threshold `overdue` was counted with.
    pub overdue_after: std::time::Duration,
    /// Settlements not yet finished (`pending` or `submitted`) and not set aside.
    pub open: u64,
    /// Of those, how many have been open (since their paid session ended) for longer than `overdue_after`.
    pub overdue: u64,
    /// When the oldest open settlement was written (its paid session ended); `None` when none is open.
    pub oldest_open_since: Option<DateTime<Utc>>,
    /// Settlements set aside because they do not decode (open, but skipped until an operator repairs them).
    pub set_aside: u64,
}

impl Backlog {
    /// How long the oldest open settlement has been waiting at `now`, zero when none is.
    pub fn oldest_open_age(&self, now: DateTime<Utc>) -> std::time::Duration {
        self.oldest_open_since
            .and_then(|t| (now - t).to_std().ok())
            .unwrap_or_default()
    }
}

/// Measure the [`Backlog`] at `now` with the given overdue threshold.
pub async fn backlog(
    db: &Db,
    now: DateTime<Utc>,
    overdue_after: std::time::Duration,
) -> Result<Backlog, RepoError> {
    const SQL: &str = "SELECT \
         COALESCE(SUM(CASE WHEN set_aside_at IS NULL THEN 1 ELSE 0 END), 0), \
         COALESCE(SUM(CASE WHEN set_aside_at IS NULL AND created_at <= $1 THEN 1 ELSE 0 END), 0), \
         MIN(CASE WHEN set_aside_at IS NULL THEN created_at END), \
         COALESCE(SUM(CASE WHEN set_aside_at IS NULL THEN 0 ELSE 1 END), 0) \
         FROM settlements WHERE state IN ('pending', 'submitted')";
    let since = db_time(now - to_chrono(overdue_after));
    let (open, overdue, oldest, set_aside): (i64, i64, Option<DateTime<Utc>>, i64) =
        on_db!(db, |pool| sqlx::query_as(SQL)
            .bind(since)
            .fetch_one(pool)
            .await)?;
    let count = |n: i64| u64::try_from(n).unwrap_or_default();
    Ok(Backlog {
        measured_at: now,
        overdue_after,
        open: count(open),
        overdue: count(overdue),
        oldest_open_since: oldest,
        set_aside: count(set_aside),
    })
}

/// A settlement open for longer than the threshold, reported once by [`take_newly_overdue`].
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OverdueSettlement {
    /// Row id.
    pub id: Uuid,
    /// The paid session it settles.
    pub paid_session_id: Uuid,
    /// `pending` or `submitted`.
    pub state: String,
    /// Consecutive failed attempts so far.
    pub attempts: i64,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// When it was written (the paid session ended).
    pub created_at: DateTime<Utc>,
}

/// Open settlements written before `now - overdue_after` that were never reported, marked as reported now and
/// returned: each row is returned once (also across workers sharing the database), so the caller logs it once.
pub async fn take_newly_overdue(
    db: &Db,
    now: DateTime<Utc>,
    overdue_after: std::time::Duration,
) -> Result<Vec<OverdueSettlement>, RepoError> {
    const SQL: &str =
        "UPDATE settlements SET overdue_warned_at = $2 WHERE state IN ('pending', 'submitted') \
         AND set_aside_at IS NULL AND overdue_warned_at IS NULL AND created_at <= $1 \
         RETURNING id, paid_session_id, state, attempts, last_error, created_at";
    let since = db_time(now - to_chrono(overdue_after));
    Ok(on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(since)
        .bind(db_time(now))
        .fetch_all(pool)
        .await)?)
}

fn to_chrono(d: std::time::Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

/// Record a transaction hash without its raw transaction (state `submitted`): how rows were written before
/// signed transactions were stored. Kept for tools and tests that recreate such a row; the worker uses
/// [`store_signed`].
pub async fn mark_submitted(
    db: &Db,
    id: Uuid,
    tx_hash: TxHash,
    now: DateTime<Utc>,
) -> Result<(), RepoError> {
    const SQL: &str =
        "UPDATE settlements SET state = 'submitted', tx_hash = $2, updated_at = $3 WHERE id = $1";
    on_db!(db, |pool| sqlx::query(SQL)
        .bind(id)
        .bind(tx_hash.to_string())
        .bind(db_time(now))
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Store the outcome of an attempt by `worker` and release its lease. Applies only while the row is leased to
/// `worker`; `false` means another worker took it over (the lease ran out) and this outcome was not stored.
/// A final state (`settled`, `ended_elsewhere`, `failed`) writes the `settlement_confirmed` or
/// `settlement_failed` webhook event in the same transaction.
pub async fn record_update(
    db: &Db,
    id: Uuid,
    worker: &str,
    update: &Update,
    now: DateTime<Utc>,
) -> Result<bool, RepoError> {
    const SQL: &str = "UPDATE settlements SET state = $2, attempts = $3, next_attempt_at = $4, last_error = $5, \
         tx_hash = COALESCE($6, tx_hash), block_number = $7, gas_used = $8, gas_price_wei = $9, duration_s = $10, \
         total_paid = $11, chain_ended_at = $12, chain_session_id = COALESCE(chain_session_id, $13), \
         updated_at = $14, finished_at = $15, lease_until = NULL WHERE id = $1 AND leased_by = $16";
    let now = db_time(now);
    let (
        mut tx_hash,
        mut block,
        mut gas,
        mut price,
        mut duration,
        mut paid,
        mut ended_at,
        mut session,
    ) = (None, None, None, None, None, None, None, None);
    match &update.state {
        SettlementState::Settled(s) => {
            tx_hash = Some(s.tx_hash.to_string());
            block = Some(to_i64(s.block));
            gas = Some(to_i64(s.gas_used));
            price = Some(s.effective_gas_price_wei.to_string());
            duration = Some(to_i64(s.duration_s));
            paid = Some(s.total_paid.to_string());
            session = Some(s.session_id.to_string());
        }
        SettlementState::EndedElsewhere { ended: Some(e) } => {
            duration = Some(to_i64(e.duration_s));
            paid = Some(e.total_paid.to_string());
            ended_at = Some(to_i64(e.ended_at));
            session = Some(e.session_id.to_string());
        }
        SettlementState::Submitted { tx_hash: h } => tx_hash = Some(h.to_string()),
        SettlementState::Signed(signed) => tx_hash = Some(signed.hash.to_string()),
        _ => {}
    }
    let reason = match &update.state {
        SettlementState::Failed { reason } => Some(reason.clone()),
        _ => update.last_error.clone(),
    };
    let finished = update.state.is_terminal().then_some(now);
    const ROOM: &str = "SELECT p.room_id, s.paid_session_id, s.tutor_address, s.tx_hash, s.chain_session_id \
                        FROM settlements s JOIN paid_sessions p ON p.id = s.paid_session_id WHERE s.id = $1";
    type Row = (String, Uuid, String, Option<String>, Option<String>);
    let n = on_db!(db, |pool| {
        async {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(SQL)
                .bind(id)
                .bind(update.state.as_str())
                .bind(i64::from(update.attempts))
                .bind(db_time(update.next_attempt_at))
                .bind(&reason)
                .bind(&tx_hash)
                .bind(block)
                .bind(gas)
                .bind(&price)
                .bind(duration)
                .bind(&paid)
                .bind(ended_at)
                .bind(&session)
                .bind(now)
                .bind(finished)
                .bind(worker)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n > 0 && finished.is_some() {
                let row: Option<Row> = sqlx::query_as(ROOM)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some((room, paid_session_id, tutor, stored_hash, chain_id)) = &row {
                    let event = webhook_events::settlement_finished(
                        &webhook_events::Finished {
                            settlement_id: id,
                            paid_session_id: *paid_session_id,
                            room,
                            tutor,
                            state: update.state.as_str(),
                            tx_hash: stored_hash.as_deref(),
                            chain_session_id: chain_id.as_deref(),
                            duration_s: duration,
                            total_paid: paid.as_deref(),
                            error: reason.as_deref(),
                        },
                        now,
                    );
                    if let Some(event) = event {
                        tx.enqueue_webhook(&event).await?;
                    }
                }
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(n)
        }
        .await
    })?;
    Ok(n > 0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn parse<T: std::str::FromStr>(what: &str, value: &str) -> Result<T, RepoError> {
    value
        .parse()
        .map_err(|_| RepoError::Corrupt(format!("{what} {value:?}")))
}

impl SettlementRecord {
    /// The domain form the outbox state machine works on.
    pub fn to_settlement(&self) -> Result<Settlement, RepoError> {
        let session_id = self
            .chain_session_id
            .as_deref()
            .map(|s| parse::<U256>("session id", s))
            .transpose()?;
        let tx_hash = self
            .tx_hash
            .as_deref()
            .map(|h| parse::<TxHash>("tx hash", h))
            .transpose()?;
        let u64_of = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok()).unwrap_or_default();
        let paid = self
            .total_paid
            .as_deref()
            .map(|p| parse::<U256>("amount", p))
            .transpose()?;
        let state = match self.state.as_str() {
            "pending" => SettlementState::Pending,
            "submitted" => {
                let tx_hash = tx_hash
                    .ok_or_else(|| RepoError::Corrupt("submitted without tx_hash".into()))?;
                match (&self.raw_tx, self.tx_nonce) {
                    (Some(raw), Some(nonce)) => {
                        let nonce = u64::try_from(nonce)
                            .map_err(|_| RepoError::Corrupt(format!("tx nonce {nonce}")))?;
                        SettlementState::Signed(
                            SignedTx::from_stored(tx_hash, nonce, raw)
                                .map_err(RepoError::Corrupt)?,
                        )
                    }
                    (None, None) => SettlementState::Submitted { tx_hash },
                    _ => return Err(RepoError::Corrupt("raw_tx without tx_nonce".into())),
                }
            }
            "settled" => SettlementState::Settled(Settled {
                tx_hash: tx_hash
                    .ok_or_else(|| RepoError::Corrupt("settled without tx_hash".into()))?,
                block: u64_of(self.block_number),
                gas_used: u64_of(self.gas_used),
                effective_gas_price_wei: match self.gas_price_wei.as_deref() {
                    Some(p) => parse("gas price", p)?,
                    None => 0,
                },
                session_id: session_id.unwrap_or_default(),
                duration_s: u64_of(self.duration_s),
                total_paid: paid.unwrap_or_default(),
            }),
            "ended_elsewhere" => SettlementState::EndedElsewhere {
                ended: match (session_id, paid, self.duration_s) {
                    (Some(session_id), Some(total_paid), Some(_)) => Some(EndedSession {
                        session_id,
                        duration_s: u64_of(self.duration_s),
                        total_paid,
                        ended_at: u64_of(self.chain_ended_at),
                    }),
                    _ => None,
                },
            },
            "failed" => SettlementState::Failed {
                reason: self.last_error.clone().unwrap_or_default(),
            },
            other => return Err(RepoError::Corrupt(format!("state {other:?}"))),
        };
        Ok(Settlement {
            id: self.id,
            paid_session_id: self.paid_session_id,
            tutor: parse("tutor address", &self.tutor_address)?,
            chain_session_id: session_id,
            state,
            attempts: u32::try_from(self.attempts).unwrap_or(u32::MAX),
            next_attempt_at: self.next_attempt_at,
            last_error: self.last_error.clone(),
        })
    }
}
