//! The webhook outbox (`migrations/0005_webhooks.sql`): the endpoints events go to and one row per
//! (event, endpoint) until a 2xx acknowledges it.
//!
//! Writers build a [`WebhookEvent`] and either call [`Db::enqueue_webhook`] (its own transaction) or,
//! to commit the event with the state it reports, [`WebhookWriter::enqueue_webhook`] on the
//! connection of their own transaction (`&mut *tx`). Either way one statement fans the event out to
//! every enabled endpoint of the right kind; with no endpoint enabled nothing is written.
//!
//! The delivery worker (crate `confab-webhooks`) leases due rows with [`Db::claim_webhooks`] (on
//! PostgreSQL `FOR UPDATE SKIP LOCKED`: two workers never hold the same row while its lease runs),
//! and records each attempt with [`Db::webhook_delivered`] / [`Db::webhook_failed`], which apply
//! only while the row is still leased to that worker.

use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use crate::{Db, StoreError};

/// The kind of an endpoint: which body it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointKind {
    /// Standard Webhooks bodies `{"type", "timestamp", "data"}` for every event.
    Standard,
    /// LangDAO's `/api/webrtc-events` bodies, only for the events that have one.
    Langdao,
}

impl EndpointKind {
    /// The `kind` column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Langdao => "langdao",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "standard" => Some(Self::Standard),
            "langdao" => Some(Self::Langdao),
            _ => None,
        }
    }
}

/// An endpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Row id (deliveries refer to it).
    pub id: Uuid,
    /// Where bodies are posted.
    pub url: String,
    /// Which bodies it gets.
    pub kind: EndpointKind,
    /// Whether new events are fanned out to it and its deliveries are worked.
    pub enabled: bool,
}

/// One event to fan out, with its body per endpoint kind. Build it with [`WebhookEvent::new`]
/// (standard body) and optionally [`WebhookEvent::with_langdao`], or [`WebhookEvent::langdao_only`].
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    /// `msg_<uuid v7, 32 hex digits>`: unique per event, the `webhook-id` header.
    pub id: String,
    /// `(type, body)` for standard endpoints; `None`: standard endpoints do not get it.
    pub standard: Option<(String, String)>,
    /// `(type, body)` for LangDAO endpoints; `None`: they do not get it.
    pub langdao: Option<(String, String)>,
    /// When it happened (the row's `created_at`; the standard body's `timestamp`).
    pub at: DateTime<Utc>,
    /// Past this it is no longer delivered (marked `expired`); `None`: never expires.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A fresh event id: `msg_` and a UUID v7 in 32 hex digits (time-ordered, unique).
pub fn new_event_id() -> String {
    format!("msg_{}", Uuid::now_v7().simple())
}

/// The standard body: `{"type": event_type, "timestamp": RFC 3339 UTC with milliseconds, "data": data}`.
pub fn standard_body(event_type: &str, at: DateTime<Utc>, data: serde_json::Value) -> String {
    serde_json::json!({
        "type": event_type,
        "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": data,
    })
    .to_string()
}

impl WebhookEvent {
    /// An event for standard endpoints (see [`standard_body`]), happening at `at`.
    pub fn new(event_type: &str, data: serde_json::Value, at: DateTime<Utc>) -> Self {
        Self {
            id: new_event_id(),
            standard: Some((event_type.to_owned(), standard_body(event_type, at, data))),
            langdao: None,
            at: db_time(at),
            expires_at: None,
        }
    }

    /// An event only LangDAO endpoints get: `body` is posted as is (its `type` field is `langdao_type`).
    pub fn langdao_only(langdao_type: &str, body: serde_json::Value, at: DateTime<Utc>) -> Self {
        Self {
            id: new_event_id(),
            standard: None,
            langdao: Some((langdao_type.to_owned(), body.to_string())),
            at: db_time(at),
            expires_at: None,
        }
    }

    /// Also send LangDAO endpoints `body` (type `langdao_type`) for this event, under the same id.
    pub fn with_langdao(mut self, langdao_type: &str, body: serde_json::Value) -> Self {
        self.langdao = Some((langdao_type.to_owned(), body.to_string()));
        self
    }

    /// Drop the event undelivered once `t` has passed (for heartbeats, which mean nothing late).
    pub fn expiring_at(mut self, t: DateTime<Utc>) -> Self {
        self.expires_at = Some(db_time(t));
        self
    }
}

/// The database's timestamp precision (microseconds), so values read back compare equal.
fn db_time(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// One statement: a row per enabled endpoint that has a body for this event.
const ENQUEUE: &str = "INSERT INTO webhook_outbox (event_id, endpoint_id, event_type, body, state, attempts, \
     next_attempt_at, expires_at, created_at, updated_at) \
     SELECT $1, id, CASE WHEN kind = 'langdao' THEN $4 ELSE $2 END, CASE WHEN kind = 'langdao' THEN $5 ELSE $3 END, \
     'pending', 0, $6, $7, $6, $6 FROM webhook_endpoints WHERE enabled = TRUE \
     AND ((kind = 'standard' AND $3 IS NOT NULL) OR (kind = 'langdao' AND $5 IS NOT NULL)) \
     ON CONFLICT (event_id, endpoint_id) DO NOTHING";

/// Writing a [`WebhookEvent`] on a connection the caller holds, typically inside its own
/// transaction (`tx.enqueue_webhook(&ev)` on `&mut *tx`), so the event commits or rolls back with
/// the state it reports. Implemented for both backends' connections.
pub trait WebhookWriter {
    /// Fan `event` out to the enabled endpoints; returns how many rows were written (0 when no
    /// endpoint wants it). Errors: the database's.
    fn enqueue_webhook(
        &mut self,
        event: &WebhookEvent,
    ) -> impl std::future::Future<Output = Result<u64, sqlx::Error>> + Send;
}

macro_rules! impl_writer {
    ($conn:ty) => {
        impl WebhookWriter for $conn {
            async fn enqueue_webhook(&mut self, event: &WebhookEvent) -> Result<u64, sqlx::Error> {
                let (st, sb) = split(&event.standard);
                let (lt, lb) = split(&event.langdao);
                sqlx::query(ENQUEUE)
                    .bind(&event.id)
                    .bind(st)
                    .bind(sb)
                    .bind(lt)
                    .bind(lb)
                    .bind(event.at)
                    .bind(event.expires_at)
                    .execute(&mut *self)
                    .await
                    .map(|r| r.rows_affected())
            }
        }
    };
}

impl_writer!(sqlx::PgConnection);
impl_writer!(sqlx::SqliteConnection);

fn split(p: &Option<(String, String)>) -> (Option<&str>, Option<&str>) {
    match p {
        Some((t, b)) => (Some(t.as_str()), Some(b.as_str())),
        None => (None, None),
    }
}

/// A delivery leased to a worker by [`Db::claim_webhooks`].
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Delivery {
    /// The event id (`webhook-id`).
    pub event_id: String,
    /// The endpoint it goes to (look its URL up in [`Db::webhook_endpoints`]).
    pub endpoint_id: Uuid,
    /// The body's type (standard or LangDAO name).
    pub event_type: String,
    /// The exact body to post.
    pub body: String,
    /// Failed attempts so far.
    pub attempts: i64,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
}

/// A delivery row with every column, for people and tests.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeliveryRecord {
    /// The event id.
    pub event_id: String,
    /// The endpoint.
    pub endpoint_id: Uuid,
    /// The body's type.
    pub event_type: String,
    /// The body.
    pub body: String,
    /// `pending`, `delivered` or `expired`.
    pub state: String,
    /// Failed attempts.
    pub attempts: i64,
    /// Earliest next attempt.
    pub next_attempt_at: DateTime<Utc>,
    /// The last failure (HTTP status or transport error).
    pub last_error: Option<String>,
    /// The worker holding (or last holding) the row.
    pub leased_by: Option<String>,
    /// Until when its lease holds.
    pub lease_until: Option<DateTime<Utc>>,
    /// When it stops being worth delivering.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When a 2xx came back.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// The open part of the outbox at one instant, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookBacklog {
    /// When it was measured.
    pub measured_at: DateTime<Utc>,
    /// Deliveries not yet acknowledged (`pending`) to enabled endpoints.
    pub pending: u64,
    /// When the oldest of those events happened; `None` when nothing is pending.
    pub oldest_pending_since: Option<DateTime<Utc>>,
}

impl WebhookBacklog {
    /// How long the oldest pending delivery has waited at `now`; zero when none is pending.
    pub fn oldest_pending_age(&self, now: DateTime<Utc>) -> std::time::Duration {
        self.oldest_pending_since
            .and_then(|t| (now - t).to_std().ok())
            .unwrap_or_default()
    }
}

const DELIVERY_COLS: &str =
    "event_id, endpoint_id, event_type, body, state, attempts, next_attempt_at, \
     last_error, leased_by, lease_until, expires_at, created_at, updated_at, delivered_at";

impl Db {
    /// Write `event` for every enabled endpoint that wants it, in its own transaction. Returns
    /// the number of rows written. Errors: [`StoreError`] (retry on `Unavailable`).
    pub async fn enqueue_webhook(&self, event: &WebhookEvent) -> Result<u64, StoreError> {
        self.run(async {
            on_db!(self, |pool| {
                async {
                    let mut conn = pool.acquire().await?;
                    conn.enqueue_webhook(event).await
                }
                .await
            })
            .map_err(StoreError::from_sqlx)
        })
        .await
    }

    /// Make `wanted` the enabled endpoints (inserting new ones) and disable every other, in one
    /// transaction; returns all endpoints. Called by each server at start-up with its settings.
    pub async fn sync_webhook_endpoints(
        &self,
        wanted: &[(String, EndpointKind)],
        now: DateTime<Utc>,
    ) -> Result<Vec<Endpoint>, StoreError> {
        const OFF: &str =
            "UPDATE webhook_endpoints SET enabled = FALSE, updated_at = $1 WHERE enabled = TRUE";
        const ADD: &str =
            "INSERT INTO webhook_endpoints (id, url, kind, enabled, created_at, updated_at) \
             VALUES ($1, $2, $3, TRUE, $4, $4) ON CONFLICT (url, kind) DO NOTHING";
        const ON: &str =
            "UPDATE webhook_endpoints SET enabled = TRUE, updated_at = $3 WHERE url = $1 AND kind = $2";
        let now = db_time(now);
        self.run(async {
            on_db!(self, |pool| {
                async {
                    let mut tx = pool.begin().await?;
                    sqlx::query(OFF).bind(now).execute(&mut *tx).await?;
                    for (url, kind) in wanted {
                        sqlx::query(ADD)
                            .bind(Uuid::now_v7())
                            .bind(url)
                            .bind(kind.as_str())
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                        sqlx::query(ON)
                            .bind(url)
                            .bind(kind.as_str())
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await
                }
                .await
            })
            .map_err(StoreError::from_sqlx)
        })
        .await?;
        self.webhook_endpoints().await
    }

    /// Every endpoint, enabled or not.
    pub async fn webhook_endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        const SQL: &str = "SELECT id, url, kind, enabled FROM webhook_endpoints ORDER BY id";
        let rows: Vec<(Uuid, String, String, bool)> = self
            .run(async {
                on_db!(self, |pool| sqlx::query_as(SQL).fetch_all(pool).await)
                    .map_err(StoreError::from_sqlx)
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, url, kind, enabled)| {
                EndpointKind::parse(&kind).map(|kind| Endpoint {
                    id,
                    url,
                    kind,
                    enabled,
                })
            })
            .collect())
    }

    /// Mark pending deliveries whose `expires_at` has passed (and that nobody holds) `expired`.
    /// Returns how many.
    pub async fn expire_webhooks(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        const SQL: &str = "UPDATE webhook_outbox SET state = 'expired', updated_at = $1 \
             WHERE state = 'pending' AND expires_at IS NOT NULL AND expires_at <= $1 \
             AND (lease_until IS NULL OR lease_until <= $1)";
        let now = db_time(now);
        self.run(async {
            on_db!(self, |pool| sqlx::query(SQL)
                .bind(now)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()))
            .map_err(StoreError::from_sqlx)
        })
        .await
    }

    /// Lease up to `limit` due deliveries (pending, due by `now`, to an enabled endpoint, lease
    /// free or run out) to `worker` until `lease_until`, oldest due first. On PostgreSQL the rows
    /// are picked `FOR UPDATE SKIP LOCKED` (a row another worker is claiming is skipped, not
    /// waited for); SQLite serialises writers, so the same `UPDATE` is atomic there.
    pub async fn claim_webhooks(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        const DUE: &str =
            "SELECT event_id, endpoint_id FROM webhook_outbox WHERE state = 'pending' \
             AND next_attempt_at <= $3 AND (lease_until IS NULL OR lease_until <= $3) \
             AND endpoint_id IN (SELECT id FROM webhook_endpoints WHERE enabled = TRUE) \
             ORDER BY next_attempt_at, event_id LIMIT $4";
        let pg = format!(
            "UPDATE webhook_outbox SET leased_by = $1, lease_until = $2 WHERE (event_id, endpoint_id) IN \
             ({DUE} FOR UPDATE SKIP LOCKED) \
             RETURNING event_id, endpoint_id, event_type, body, attempts, created_at"
        );
        let sqlite = format!(
            "UPDATE webhook_outbox SET leased_by = $1, lease_until = $2 WHERE (event_id, endpoint_id) IN \
             ({DUE}) RETURNING event_id, endpoint_id, event_type, body, attempts, created_at"
        );
        let sql = match self {
            Db::Postgres(_) => pg,
            Db::Sqlite(_) => sqlite,
        };
        let (now, until) = (db_time(now), db_time(lease_until));
        let mut rows: Vec<Delivery> = self
            .run(async {
                on_db!(self, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(worker)
                    .bind(until)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(pool)
                    .await)
                .map_err(StoreError::from_sqlx)
            })
            .await?;
        rows.sort_by(|a, b| (a.created_at, &a.event_id).cmp(&(b.created_at, &b.event_id)));
        Ok(rows)
    }

    /// Record a 2xx for a delivery `worker` holds: `delivered`, lease released. `false`: the row
    /// is no longer leased to `worker` (its lease ran out and another worker took it).
    pub async fn webhook_delivered(
        &self,
        event_id: &str,
        endpoint_id: Uuid,
        worker: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        const SQL: &str =
            "UPDATE webhook_outbox SET state = 'delivered', delivered_at = $4, updated_at = $4, \
             last_error = NULL, lease_until = NULL \
             WHERE event_id = $1 AND endpoint_id = $2 AND leased_by = $3 AND state = 'pending'";
        let now = db_time(now);
        self.run(async {
            on_db!(self, |pool| sqlx::query(SQL)
                .bind(event_id)
                .bind(endpoint_id)
                .bind(worker)
                .bind(now)
                .execute(pool)
                .await
                .map(|r| r.rows_affected() > 0))
            .map_err(StoreError::from_sqlx)
        })
        .await
    }

    /// Record a failed attempt for a delivery `worker` holds: `attempts` failures so far, next
    /// try at `next_attempt_at`, `error` kept; lease released. `false` as for
    /// [`webhook_delivered`](Self::webhook_delivered).
    #[allow(clippy::too_many_arguments)]
    pub async fn webhook_failed(
        &self,
        event_id: &str,
        endpoint_id: Uuid,
        worker: &str,
        attempts: i64,
        next_attempt_at: DateTime<Utc>,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        const SQL: &str =
            "UPDATE webhook_outbox SET attempts = $4, next_attempt_at = $5, last_error = $6, \
             updated_at = $7, lease_until = NULL \
             WHERE event_id = $1 AND endpoint_id = $2 AND leased_by = $3 AND state = 'pending'";
        self.run(async {
            on_db!(self, |pool| sqlx::query(SQL)
                .bind(event_id)
                .bind(endpoint_id)
                .bind(worker)
                .bind(attempts)
                .bind(db_time(next_attempt_at))
                .bind(error)
                .bind(db_time(now))
                .execute(pool)
                .await
                .map(|r| r.rows_affected() > 0))
            .map_err(StoreError::from_sqlx)
        })
        .await
    }

    /// Release every lease `worker` holds (clean shutdown). Returns how many.
    pub async fn release_webhook_leases(&self, worker: &str) -> Result<u64, StoreError> {
        const SQL: &str = "UPDATE webhook_outbox SET lease_until = NULL \
             WHERE leased_by = $1 AND lease_until IS NOT NULL";
        self.run(async {
            on_db!(self, |pool| sqlx::query(SQL)
                .bind(worker)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()))
            .map_err(StoreError::from_sqlx)
        })
        .await
    }

    /// Measure the [`WebhookBacklog`] at `now` (one aggregate query).
    pub async fn webhook_backlog(&self, now: DateTime<Utc>) -> Result<WebhookBacklog, StoreError> {
        const SQL: &str =
            "SELECT COUNT(*), MIN(created_at) FROM webhook_outbox WHERE state = 'pending' \
             AND endpoint_id IN (SELECT id FROM webhook_endpoints WHERE enabled = TRUE)";
        let (pending, oldest): (i64, Option<DateTime<Utc>>) = self
            .run(async {
                on_db!(self, |pool| sqlx::query_as(SQL).fetch_one(pool).await)
                    .map_err(StoreError::from_sqlx)
            })
            .await?;
        Ok(WebhookBacklog {
            measured_at: now,
            pending: u64::try_from(pending).unwrap_or_default(),
            oldest_pending_since: oldest,
        })
    }

    /// Delete delivered and expired rows last changed before `before` (retention). Returns how many.
    pub async fn prune_webhooks(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        const SQL: &str =
            "DELETE FROM webhook_outbox WHERE state IN ('delivered', 'expired') AND updated_at < $1";
        self.run(async {
            on_db!(self, |pool| sqlx::query(SQL)
                .bind(db_time(before))
                .execute(pool)
                .await
                .map(|r| r.rows_affected()))
            .map_err(StoreError::from_sqlx)
        })
        .await
    }

    /// Every delivery row, oldest event first (for people and tests).
    pub async fn webhook_deliveries(&self) -> Result<Vec<DeliveryRecord>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLS} FROM webhook_outbox ORDER BY created_at, event_id, endpoint_id"
        );
        self.run(async {
            on_db!(self, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(pool)
                .await)
            .map_err(StoreError::from_sqlx)
        })
        .await
    }
}

/// A participant present in a room, as the room-event writer recorded it
/// (`migrations/0006_webhook_presence.sql`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PresenceRow {
    /// The server hosting the room (`--node-id`).
    pub node_id: String,
    /// The room.
    pub room_id: String,
    /// The media plane's participant id.
    pub participant_id: String,
    /// The token subject.
    pub user_id: String,
    /// The display name.
    pub name: String,
    /// When it joined.
    pub joined_at: DateTime<Utc>,
}

impl Db {
    /// Record `p` present and write its `joined` event, and `room_started` first when `p` is the
    /// only participant of its room on its node: one transaction. Returns whether the room
    /// started. Idempotent: run again after an unclear failure (same events, same ids) it writes
    /// nothing twice. Errors: [`StoreError`] (retry on `Unavailable`).
    pub async fn presence_join(
        &self,
        p: &PresenceRow,
        room_started: &WebhookEvent,
        joined: &WebhookEvent,
    ) -> Result<bool, StoreError> {
        const OTHERS: &str = "SELECT COUNT(*) FROM webhook_presence \
             WHERE node_id = $1 AND room_id = $2 AND participant_id <> $3";
        const ADD: &str = "INSERT INTO webhook_presence \
             (node_id, room_id, participant_id, user_id, name, joined_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (node_id, room_id, participant_id) DO NOTHING";
        self.run(async {
            on_db!(self, |pool| {
                async {
                    let mut tx = pool.begin().await?;
                    let (others,): (i64,) = sqlx::query_as(OTHERS)
                        .bind(&p.node_id)
                        .bind(&p.room_id)
                        .bind(&p.participant_id)
                        .fetch_one(&mut *tx)
                        .await?;
                    if others == 0 {
                        (*tx).enqueue_webhook(room_started).await?;
                    }
                    sqlx::query(ADD)
                        .bind(&p.node_id)
                        .bind(&p.room_id)
                        .bind(&p.participant_id)
                        .bind(&p.user_id)
                        .bind(&p.name)
                        .bind(db_time(p.joined_at))
                        .execute(&mut *tx)
                        .await?;
                    (*tx).enqueue_webhook(joined).await?;
                    tx.commit().await?;
                    Ok(others == 0)
                }
                .await
            })
            .map_err(StoreError::from_sqlx)
        })
        .await
    }

    /// Forget `participant` of `room` on `node` and write its `left` event, then `room_finished`
    /// when nobody of that room is left on the node: one transaction. Returns whether the room
    /// finished. A participant never recorded (its join was lost) still gets its `left` event.
    /// Idempotent like [`presence_join`](Self::presence_join).
    pub async fn presence_leave(
        &self,
        node: &str,
        room: &str,
        participant: &str,
        left: &WebhookEvent,
        room_finished: &WebhookEvent,
    ) -> Result<bool, StoreError> {
        const DEL: &str = "DELETE FROM webhook_presence \
             WHERE node_id = $1 AND room_id = $2 AND participant_id = $3";
        const REST: &str =
            "SELECT COUNT(*) FROM webhook_presence WHERE node_id = $1 AND room_id = $2";
        self.run(async {
            on_db!(self, |pool| {
                async {
                    let mut tx = pool.begin().await?;
                    sqlx::query(DEL)
                        .bind(node)
                        .bind(room)
                        .bind(participant)
                        .execute(&mut *tx)
                        .await?;
                    (*tx).enqueue_webhook(left).await?;
                    let (rest,): (i64,) = sqlx::query_as(REST)
                        .bind(node)
                        .bind(room)
                        .fetch_one(&mut *tx)
                        .await?;
                    if rest == 0 {
                        (*tx).enqueue_webhook(room_finished).await?;
                    }
                    tx.commit().await?;
                    Ok(rest == 0)
                }
                .await
            })
            .map_err(StoreError::from_sqlx)
        })
        .await
    }

    /// Everyone recorded present on `node`, by room then join time (a start-up reads what the
    /// node's previous run left open).
    pub async fn presence_of_node(&self, node: &str) -> Result<Vec<PresenceRow>, StoreError> {
        const SQL: &str = "SELECT node_id, room_id, participant_id, user_id, name, joined_at \
             FROM webhook_presence WHERE node_id = $1 ORDER BY room_id, joined_at, participant_id";
        self.run(async {
            on_db!(self, |pool| sqlx::query_as(SQL)
                .bind(node)
                .fetch_all(pool)
                .await)
            .map_err(StoreError::from_sqlx)
        })
        .await
    }
}
