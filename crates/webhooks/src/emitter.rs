//! Room and participant events. Their state lives in memory (the media plane), so there is no
//! transaction to join: the signaling layer reports each join and leave through an [`Emitter`]
//! (non-blocking), and one writer task turns them into outbox rows — `room_started` before a
//! room's first `participant_joined`, `room_finished` after its last `participant_left` — and, in
//! LangDAO mode, `user-disconnected` and periodic `session-heartbeat` bodies for rooms that carry
//! a running paid session.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use confab_store::{Db, StoreError, WebhookEvent};
use serde_json::json;
use tokio::sync::{mpsc, Notify};
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
    /// Whether a LangDAO endpoint is configured (then `user-disconnected` and heartbeats are written).
    pub langdao: bool,
    /// How often a `session-heartbeat` is written per party present in a room with a running paid
    /// session (LangDAO mode); each expires undelivered after twice this.
    pub heartbeat_every: Duration,
}

/// Starts the writer task on `db` and returns its emitter. `wake` is poked after each write (the
/// delivery worker's waker). The task ends when every emitter clone is dropped.
pub fn spawn_writer(
    db: Db,
    config: WriterConfig,
    wake: Arc<Notify>,
) -> (Emitter, tokio::task::JoinHandle<()>) {
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
    (emitter, tokio::spawn(writer.run(rx)))
}

/// Owns the room occupancy as reported (room → participant → user).
struct Writer {
    db: Db,
    config: WriterConfig,
    wake: Arc<Notify>,
    rooms: HashMap<String, BTreeMap<String, String>>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Activity>) {
        let mut tick = tokio::time::interval(self.config.heartbeat_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                a = rx.recv() => match a {
                    Some(a) => self.handle(a).await,
                    None => break,
                },
                _ = tick.tick(), if self.config.langdao => self.heartbeats().await,
            }
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
                if !self.rooms.contains_key(&room) {
                    self.write(WebhookEvent::new(
                        "room_started",
                        json!({ "room": room }),
                        at,
                    ))
                    .await;
                }
                self.rooms
                    .entry(room.clone())
                    .or_default()
                    .insert(participant.clone(), user.clone());
                let data = json!({"room": room, "participant_id": participant, "user_id": user, "name": name});
                self.write(WebhookEvent::new("participant_joined", data, at))
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
                let data = json!({"room": room, "participant_id": participant, "user_id": user,
                                  "name": name, "reason": reason.as_str()});
                let mut event = WebhookEvent::new("participant_left", data, at);
                if self.config.langdao {
                    if let Some(role) = self.role_of(&room, &user).await {
                        let why = match reason {
                            LeaveReason::Disconnected => "connection-closed",
                            other => other.as_str(),
                        };
                        event = event.with_langdao(
                            "user-disconnected",
                            json!({"type": "user-disconnected", "sessionId": room, "userAddress": user,
                                   "userRole": role, "reason": why, "timestamp": at.timestamp_millis()}),
                        );
                    }
                }
                self.write(event).await;
                let now_empty = self.rooms.get_mut(&room).is_some_and(|p| {
                    p.remove(&participant);
                    p.is_empty()
                });
                if now_empty {
                    self.rooms.remove(&room);
                    self.write(WebhookEvent::new(
                        "room_finished",
                        json!({ "room": room }),
                        at,
                    ))
                    .await;
                }
            }
        }
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

    /// Writes one event, retrying while the database is unavailable (the queue fills meanwhile and
    /// later events are dropped and counted); an event the database refuses is logged and dropped.
    async fn write(&self, event: WebhookEvent) {
        let mut wait = Duration::from_millis(100);
        loop {
            match self.db.enqueue_webhook(&event).await {
                Ok(n) => {
                    if n > 0 {
                        self.wake.notify_one();
                    }
                    return;
                }
                Err(e) if e.is_retryable() => {
                    debug!(error = %e, event = %event.id, "database unavailable; retrying the webhook event");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(WRITE_RETRY_MAX);
                }
                Err(e) => {
                    warn!(error = %e, event = %event.id, "webhook event could not be written; dropped");
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
