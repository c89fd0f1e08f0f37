//! Room and participant events. Their state lives in memory (the media plane), so there is no
//! transaction to join: the signaling layer reports each join and leave through an [`Emitter`]
//! (non-blocking), and one writer task turns them into outbox rows — `room_started` before a
//! room's first `participant_joined`, `room_finished` after its last `participant_left` — and, in
//! LangDAO mode, `user-disconnected` and periodic `session-heartbeat` bodies for rooms that carry
//! a running paid session.
//!
//! Who is present is also kept in the database (`webhook_presence`, per `--node-id`), written in
//! the same transaction as each join's and leave's outbox rows. So a room's `room_started` and
//! `room_finished` pair up across crashes: [`recover`] (run at start-up, before anyone can join)
//! reports everyone the node's previous run left recorded as left (reason `closed`) and their
//! rooms finished. At a clean shutdown the writer first writes every event already queued
//! ([`WriterTask::shutdown`]).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use confab_store::PresenceRow;
use confab_store::{Db, StoreError, WebhookEvent};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::{debug, warn};

/// Capacity of the queue between the signaling sessions and the writer task. When it is full
/// (the database is down or slow for long), the event is dropped — never waited for: media and
/// signaling do not stall on webhooks — and counted in [`Emitter::dropped`], with a warning.
pub const EMIT_QUEUE: usize = 4096;

/// Longest the writer waits between two tries of one event while the database is unavailable.
const WRITE_RETRY_MAX: Duration = Duration::from_secs(5);

/// Why a participant left (the `reason` of `participant_left`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// The client sent `leave`.
    Left,
    /// Its connection was lost and it did not resume within the grace period.
    Disconnected,
    /// The server removed it (transport failure, shutdown, an internal error).
    Closed,
}

impl LeaveReason {
    /// The wire value: `left`, `disconnected` or `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Left => "left",
            Self::Disconnected => "disconnected",
            Self::Closed => "closed",
        }
    }
}

/// A join or a leave, with the time it happened.
#[derive(Debug)]
enum Activity {
    Joined {
        room: String,
        participant: String,
        user: String,
        name: String,
        at: DateTime<Utc>,
    },
    Left {
        room: String,
        participant: String,
        user: String,
        name: String,
        reason: LeaveReason,
        at: DateTime<Utc>,
    },
}

/// The signaling layer's handle: cheap to clone, never blocks. A disabled emitter (no webhook
/// settings) does nothing.
#[derive(Debug, Clone)]
pub struct Emitter {
    tx: Option<mpsc::Sender<Activity>>,
    dropped: Arc<AtomicU64>,
}

impl Emitter {
    /// An emitter that reports nothing (webhooks off).
    pub fn disabled() -> Self {
        Self {
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// `participant` (the media plane's id) of `user` (the token subject), shown as `name`,
    /// joined `room`.
    pub fn participant_joined(&self, room: &str, participant: &str, user: &str, name: &str) {
        self.send(Activity::Joined {
            room: room.to_owned(),
            participant: participant.to_owned(),
            user: user.to_owned(),
            name: name.to_owned(),
            at: Utc::now(),
        });
    }

    /// `participant` left `room` for `reason` (report it once, when it is gone for good: not when
    /// its socket drops and it may still resume).
    pub fn participant_left(
        &self,
        room: &str,
        participant: &str,
        user: &str,
        name: &str,
        reason: LeaveReason,
    ) {
        self.send(Activity::Left {
            room: room.to_owned(),
            participant: participant.to_owned(),
            user: user.to_owned(),
            name: name.to_owned(),
            reason,
            at: Utc::now(),
        });
    }

    /// Events dropped so far because the queue was full (a counter for `/metrics`).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn send(&self, a: Activity) {
        let Some(tx) = &self.tx else { return };
        if let Err(e) = tx.try_send(a) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if matches!(e, mpsc::error::TrySendError::Full(_)) && (n == 1 || n % 100 == 0) {
                warn!(
                    dropped_total = n,
                    "webhook event queue full: room/participant event dropped"
                );
            }
        }
    }
}

/// Settings of the writer task.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// This server's name in `webhook_presence` (`--node-id`): servers sharing a database need
    /// distinct ones, and a restarted server must keep its own to finish the rooms it left open.
    pub node: String,
    /// Whether a LangDAO endpoint is configured (then `user-disconnected` and heartbeats are written).
    pub langdao: bool,
    /// How often a `session-heartbeat` is written per party present in a room with a running paid
    /// session (LangDAO mode); each expires undelivered after twice this.
    pub heartbeat_every: Duration,
}

/// Starts the writer task on `db` and returns its emitter and the task. `wake` is poked after
/// each write (the delivery worker's waker). The task ends when every emitter clone is dropped or
/// at [`WriterTask::shutdown`].
pub fn spawn_writer(db: Db, config: WriterConfig, wake: Arc<Notify>) -> (Emitter, WriterTask) {
    let (tx, rx) = mpsc::channel(EMIT_QUEUE);
    let emitter = Emitter {
        tx: Some(tx),
        dropped: Arc::new(AtomicU64::new(0)),
    };
    let writer = Writer {
        db,
        config,
        wake,
        rooms: HashMap::new(),
    };
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(writer.run(rx, stop_rx));
    (
        emitter,
        WriterTask {
            stop: stop_tx,
            task,
        },
    )
}

/// Longest a clean shutdown waits for the writer to write the events already queued (the
/// database may be down; what is not written then is reported by the next start's [`recover`]).
pub const WRITER_DRAIN: Duration = Duration::from_secs(5);

/// The running writer task.
#[derive(Debug)]
pub struct WriterTask {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl WriterTask {
    /// Stop taking events, write the ones already queued (for at most [`WRITER_DRAIN`]) and end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(WRITER_DRAIN, &mut task).await.is_err() {
            warn!("webhook writer still busy after {WRITER_DRAIN:?}: the rest is reported at the next start");
            task.abort();
        }
    }
}

/// Start-up pass: everyone `config.node`'s previous run left recorded in `webhook_presence` is
/// reported left (reason `closed`, now) and each of their rooms finished, and forgotten. Run it
/// before the node takes joins. Returns how many participants it reported. Errors: the
/// database's (the server should not start without it, as for the endpoint table).
pub async fn recover(db: &Db, config: &WriterConfig) -> Result<usize, StoreError> {
    let rows = db.presence_of_node(&config.node).await?;
    let writer = Writer {
        db: db.clone(),
        config: config.clone(),
        wake: Arc::new(Notify::new()),
        rooms: HashMap::new(),
    };
    let now = Utc::now();
    for r in &rows {
        let (left, finished) = writer
            .leave_events(
                &r.room_id,
                &r.participant_id,
                &r.user_id,
                &r.name,
                LeaveReason::Closed,
                now,
            )
            .await;
        db.presence_leave(
            &config.node,
            &r.room_id,
            &r.participant_id,
            &left,
            &finished,
        )
        .await?;
    }
    if !rows.is_empty() {
        warn!(
            participants = rows.len(),
            node = %config.node,
            "rooms left open by this node's previous run reported finished"
        );
    }
    Ok(rows.len())
}

/// Owns this run's room occupancy as reported (room → participant → user), for heartbeats.
struct Writer {
    db: Db,
    config: WriterConfig,
    wake: Arc<Notify>,
    rooms: HashMap<String, BTreeMap<String, String>>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Activity>, mut stop: oneshot::Receiver<()>) {
        let mut tick = tokio::time::interval(self.config.heartbeat_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                a = rx.recv() => match a {
                    Some(a) => self.handle(a).await,
                    None => return,
                },
                _ = &mut stop => break,
                _ = tick.tick(), if self.config.langdao => self.heartbeats().await,
            }
        }
        // Shutdown: take nothing new, write what is queued.
        rx.close();
        while let Some(a) = rx.recv().await {
            self.handle(a).await;
        }
    }

    async fn handle(&mut self, a: Activity) {
        match a {
            Activity::Joined {
                room,
                participant,
                user,
                name,
                at,
            } => {
                let started = WebhookEvent::new("room_started", json!({ "room": room }), at);
                let data = json!({"room": room, "participant_id": participant, "user_id": user, "name": name});
                let joined = WebhookEvent::new("participant_joined", data, at);
                self.rooms
                    .entry(room.clone())
                    .or_default()
                    .insert(participant.clone(), user.clone());
                let row = PresenceRow {
                    node_id: self.config.node.clone(),
                    room_id: room,
                    participant_id: participant,
                    user_id: user,
                    name,
                    joined_at: at,
                };
                self.retrying(&joined.id, || {
                    self.db.presence_join(&row, &started, &joined)
                })
                .await;
            }
            Activity::Left {
                room,
                participant,
                user,
                name,
                reason,
                at,
            } => {
                let (left, finished) = self
                    .leave_events(&room, &participant, &user, &name, reason, at)
                    .await;
                let node = self.config.node.as_str();
                self.retrying(&left.id, || {
                    self.db
                        .presence_leave(node, &room, &participant, &left, &finished)
                })
                .await;
                if self.rooms.get_mut(&room).is_some_and(|p| {
                    p.remove(&participant);
                    p.is_empty()
                }) {
                    self.rooms.remove(&room);
                }
            }
        }
    }

    /// The `participant_left` event (with its LangDAO `user-disconnected` body when the user is a
    /// party of the room's running paid session) and the room's `room_finished` event.
    async fn leave_events(
        &self,
        room: &str,
        participant: &str,
        user: &str,
        name: &str,
        reason: LeaveReason,
        at: DateTime<Utc>,
    ) -> (WebhookEvent, WebhookEvent) {
        let data = json!({"room": room, "participant_id": participant, "user_id": user,
                          "name": name, "reason": reason.as_str()});
        let mut left = WebhookEvent::new("participant_left", data, at);
        if self.config.langdao {
            if let Some(role) = self.role_of(room, user).await {
                let why = match reason {
                    LeaveReason::Disconnected => "connection-closed",
                    other => other.as_str(),
                };
                left = left.with_langdao(
                    "user-disconnected",
                    json!({"type": "user-disconnected", "sessionId": room, "userAddress": user,
                           "userRole": role, "reason": why, "timestamp": at.timestamp_millis()}),
                );
            }
        }
        let finished = WebhookEvent::new("room_finished", json!({ "room": room }), at);
        (left, finished)
    }

    /// One `session-heartbeat` per party present in each room with a running paid session.
    async fn heartbeats(&mut self) {
        let now = Utc::now();
        let expires =
            now + chrono::TimeDelta::from_std(self.config.heartbeat_every * 2).unwrap_or_default();
        let mut events = Vec::new();
        for (room, present) in &self.rooms {
            let Ok(Some((student, tutor))) = open_paid_session(&self.db, room).await else {
                continue;
            };
            for user in present.values() {
                let role = if user.eq_ignore_ascii_case(&student) {
                    "student"
                } else if user.eq_ignore_ascii_case(&tutor) {
                    "tutor"
                } else {
                    continue;
                };
                let body = json!({"type": "session-heartbeat", "sessionId": room, "userAddress": user,
                                  "userRole": role, "timestamp": now.timestamp_millis()});
                events.push(
                    WebhookEvent::langdao_only("session-heartbeat", body, now).expiring_at(expires),
                );
            }
        }
        for e in events {
            self.write(e).await;
        }
    }

    /// `student` or `tutor` when `user` is a party of the room's running paid session.
    async fn role_of(&self, room: &str, user: &str) -> Option<&'static str> {
        let (student, tutor) = open_paid_session(&self.db, room).await.ok()??;
        if user.eq_ignore_ascii_case(&student) {
            Some("student")
        } else if user.eq_ignore_ascii_case(&tutor) {
            Some("tutor")
        } else {
            None
        }
    }

    /// Writes one event (see [`retrying`](Self::retrying)).
    async fn write(&self, event: WebhookEvent) {
        self.retrying(&event.id, || self.db.enqueue_webhook(&event))
            .await;
    }

    /// Runs the write `op` (idempotent), retrying while the database is unavailable (the queue
    /// fills meanwhile and later events are dropped and counted); a write the database refuses is
    /// logged and dropped. `event` names it in logs. Pokes the delivery worker after a write.
    async fn retrying<T, F, Fut>(&self, event: &str, op: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut wait = Duration::from_millis(100);
        loop {
            match op().await {
                Ok(_) => {
                    self.wake.notify_one();
                    return;
                }
                Err(e) if e.is_retryable() => {
                    debug!(error = %e, event, "database unavailable; retrying the webhook event");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(WRITE_RETRY_MAX);
                }
                Err(e) => {
                    warn!(error = %e, event, "webhook event could not be written; dropped");
                    return;
                }
            }
        }
    }
}

/// The parties `(student, tutor)` of the running paid session in `room`, if any.
async fn open_paid_session(db: &Db, room: &str) -> Result<Option<(String, String)>, StoreError> {
    const SQL: &str = "SELECT student_address, tutor_address FROM paid_sessions \
                       WHERE room_id = $1 AND ended_at IS NULL ORDER BY started_at DESC LIMIT 1";
    let row = match db {
        Db::Postgres(p) => sqlx::query_as(SQL).bind(room).fetch_optional(p).await,
        Db::Sqlite(p) => sqlx::query_as(SQL).bind(room).fetch_optional(p).await,
    };
    row.map_err(StoreError::from_sqlx)
}
