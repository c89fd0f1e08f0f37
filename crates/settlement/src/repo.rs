//! The `paid_sessions` and `settlements` tables (`migrations/0002_paid_sessions.sql`) on either backend of
//! [`confab_store::Db`]. Ending a paid session writes its outbox row in the same transaction, so a session
//! that ended is always settled eventually, whatever crashes in between.
//!
//! Each query is written once and run on whichever pool the `Db` holds (`on_db!`), so the SQL is what both
//! PostgreSQL and SQLite speak. Ids (UUID v7) and timestamps come from the application.

use chrono::{DateTime, SubsecRound, Utc};
use confab_store::{Db, StoreError};
use uuid::Uuid;

use crate::{
    client::{EndedSession, Settled},
    outbox::{Settlement, SettlementState, Update},
    Address, TxHash, U256,
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
    /// `pending`, `submitted`, `settled`, `ended_elsewhere` or `failed`.
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
}

/// The columns of [`SettlementRecord`], in a `SELECT` list.
macro_rules! cols {
    () => {
        "id, paid_session_id, tutor_address, chain_session_id, state, attempts, next_attempt_at, last_error, \
         tx_hash, block_number, gas_used, gas_price_wei, duration_s, total_paid, chain_ended_at, created_at, \
         updated_at, finished_at"
    };
}

/// The database's timestamp precision (microseconds), so values read back compare equal.
fn db_time(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// Record a paid session that started; returns its id. [`RepoError::TutorBusy`] if the tutor has one open.
pub async fn start_paid_session(
    db: &Db,
    new: &NewPaidSession,
    now: DateTime<Utc>,
) -> Result<Uuid, RepoError> {
    const SQL: &str = "INSERT INTO paid_sessions (id, room_id, chain_session_id, student_address, tutor_address, \
                       language_id, started_at, ended_at, end_reason) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL)";
    let id = Uuid::now_v7();
    let result = on_db!(db, |pool| {
        sqlx::query(SQL)
            .bind(id)
            .bind(&new.room_id)
            .bind(new.chain_session_id.map(|s| s.to_string()))
            .bind(new.student.to_checksum(None))
            .bind(new.tutor.to_checksum(None))
            .bind(i64::from(new.language))
            .bind(db_time(now))
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    });
    match result {
        Ok(_) => Ok(id),
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

/// End a paid session and write its settlement (state `pending`, due now) in one transaction. Idempotent:
/// `None` when the session was already ended (or does not exist), and no second settlement is written.
pub async fn end_paid_session(
    db: &Db,
    paid_session_id: Uuid,
    reason: EndReason,
    now: DateTime<Utc>,
) -> Result<Option<Uuid>, RepoError> {
    const END: &str = "UPDATE paid_sessions SET ended_at = $2, end_reason = $3 \
                       WHERE id = $1 AND ended_at IS NULL RETURNING tutor_address, chain_session_id";
    const OUTBOX: &str =
        "INSERT INTO settlements (id, paid_session_id, tutor_address, chain_session_id, state, \
                          attempts, next_attempt_at, created_at, updated_at) \
                          VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5, $5)";
    let now = db_time(now);
    let id = Uuid::now_v7();
    let ended: Option<(String, Option<String>)> = on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let ended: Option<(String, Option<String>)> = sqlx::query_as(END)
            .bind(paid_session_id)
            .bind(now)
            .bind(reason.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if let Some((tutor, chain_id)) = &ended {
            sqlx::query(OUTBOX)
                .bind(id)
                .bind(paid_session_id)
                .bind(tutor)
                .bind(chain_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok::<_, sqlx::Error>(ended)
    })?;
    Ok(ended.map(|_| id))
}

/// Settlements the worker should attempt now (`pending` or `submitted`, due by `now`), oldest due first.
pub async fn due_settlements(
    db: &Db,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Settlement>, RepoError> {
    const SQL: &str = concat!(
        "SELECT ",
        cols!(),
        " FROM settlements WHERE state IN ('pending', 'submitted') AND next_attempt_at <= $1 \
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

/// Record that our transaction was accepted by the node, before waiting for its receipt.
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

/// Store the outcome of an attempt.
pub async fn record_update(
    db: &Db,
    id: Uuid,
    update: &Update,
    now: DateTime<Utc>,
) -> Result<(), RepoError> {
    const SQL: &str = "UPDATE settlements SET state = $2, attempts = $3, next_attempt_at = $4, last_error = $5, \
         tx_hash = COALESCE($6, tx_hash), block_number = $7, gas_used = $8, gas_price_wei = $9, duration_s = $10, \
         total_paid = $11, chain_ended_at = $12, chain_session_id = COALESCE(chain_session_id, $13), \
         updated_at = $14, finished_at = $15 WHERE id = $1";
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
        _ => {}
    }
    let reason = match &update.state {
        SettlementState::Failed { reason } => Some(reason.clone()),
        _ => update.last_error.clone(),
    };
    let finished = update.state.is_terminal().then_some(now);
    on_db!(db, |pool| {
        sqlx::query(SQL)
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
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(())
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
            "submitted" => SettlementState::Submitted {
                tx_hash: tx_hash
                    .ok_or_else(|| RepoError::Corrupt("submitted without tx_hash".into()))?,
            },
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
