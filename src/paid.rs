//! Paid sessions (LangDAO): which room carries one, when it ends, and handing the end to the
//! settlement outbox.
//!
//! One owner task ([`spawn`]) holds every running paid session (at most one per room: a second
//! start is refused with [`PaidError::RoomBusy`]) and its [`PaidSessionTracker`] (End pressed, or
//! every party left on purpose → at once; a party disconnected or gone longer than the grace
//! period; no heartbeat for the heartbeat timeout). Signaling sessions and the REST API reach it through a
//! [`PaidHandle`]. Ending writes the session's end and its settlement row in one database
//! transaction ([`repo::end_paid_session`]) and wakes the [`confab_settlement::SettlementWorker`], the wallet's only
//! sender, which calls `endSession(tutor)` on chain, retrying until the chain confirms. An end the
//! database refused is retried by this task until it is stored: nothing is lost. After a restart
//! the running sessions are read back from the database with both parties absent, so they end
//! after the grace period unless the parties come back.

use chrono::Utc;
use confab_settlement::repo::{self, PaidSessionRecord};
use confab_settlement::{
    Address, ChainClient, EndPolicy, EndReason, NewPaidSession, PaidSessionTracker, Party,
    PresenceEvent, RepoError, SettlementRecord, U256,
};
use confab_sfu::RoomId;
use confab_store::{Db, Uuid};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tracing::{debug, info, warn};

/// Capacity of the command queue; senders wait when it is full.
pub const PAID_COMMANDS: usize = 256;
/// Capacity of the ended-session broadcast (signaling sessions filter by room); a lagging
/// session misses old notices, the REST status stays authoritative.
pub const PAID_EVENTS: usize = 256;
/// How often an end the database refused is retried.
const END_RETRY: Duration = Duration::from_secs(1);
/// Longest a start waits for the chain's `activeSessions` answer: past it the start is refused
/// with [`PaidError::ChainUnavailable`] (the student may send it again).
pub const CHAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a paid-session request was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PaidError {
    /// The chain shows no active session of this tutor with this student.
    #[error("no active session of this tutor with this student on chain")]
    NotOnChain,
    /// The chain did not answer.
    #[error("the chain did not answer: {0}")]
    ChainUnavailable(String),
    /// The tutor already has a paid session running in another room.
    #[error("the tutor already has a paid session running")]
    TutorBusy,
    /// The room already carries a running paid session (of other parties, or another language);
    /// it must end before another starts there.
    #[error("this room already has a paid session running; end it first")]
    RoomBusy,
    /// Not an Ethereum address.
    #[error("not an address: {0}")]
    BadAddress(String),
    /// The database did not answer.
    #[error("the database did not answer: {0}")]
    Unavailable(String),
    /// The task stopped.
    #[error("paid sessions stopped")]
    Stopped,
}

impl PaidError {
    /// The text a client is shown: the refusal itself, but for an outage (chain, database) a
    /// generic sentence: the chain's or the database's own text (URLs, SQL) is logged here,
    /// never sent.
    pub fn client_message(&self) -> String {
        match self {
            PaidError::ChainUnavailable(_) | PaidError::Unavailable(_) | PaidError::Stopped => {
                warn!(error = %self, "paid sessions unavailable");
                match self {
                    PaidError::ChainUnavailable(_) => {
                        "the chain did not answer; retry in a moment".into()
                    }
                    _ => "paid sessions are unavailable right now; retry later".into(),
                }
            }
            _ => self.to_string(),
        }
    }
}

/// A running paid session, as reported to clients.
#[derive(Debug, Clone)]
pub struct PaidInfo {
    /// Database id.
    pub id: Uuid,
    /// The room.
    pub room: String,
    /// Student.
    pub student: Address,
    /// Tutor.
    pub tutor: Address,
    /// Language id.
    pub language: u8,
    /// Contract session id.
    pub chain_session_id: U256,
    /// Token units per second.
    pub rate_per_second: U256,
    /// Start on chain, Unix seconds.
    pub started_at: u64,
}

/// A paid session ended in `room`.
#[derive(Debug, Clone)]
pub struct PaidEnded {
    /// The room.
    pub room: String,
    /// Database id.
    pub id: Uuid,
    /// Why.
    pub reason: EndReason,
}

/// A paid session started or ended: what signaling sessions tell their clients.
#[derive(Debug, Clone)]
pub enum PaidEvent {
    /// A session started (from a party's `session_started` or another backend's
    /// `POST /api/sessions`): its parties in the room get `paid_session`.
    Started(PaidInfo),
    /// A session ended: everyone in the room gets `paid_session_ended`.
    Ended(PaidEnded),
}

/// What a participant did, as far as a paid session cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Joined (or rejoined) the room.
    Joined,
    /// Lost its connection (or was removed by the server): it may come back within the grace
    /// period.
    Left,
    /// Left on purpose (`leave`): once every party has, the session ends at once.
    LeftOnPurpose,
    /// A heartbeat.
    Heartbeat,
    /// Pressed End.
    EndPressed,
}

enum Command {
    Start {
        room: String,
        student: Address,
        tutor: Address,
        language: u8,
        reply: oneshot::Sender<Result<PaidInfo, PaidError>>,
    },
    Presence {
        room: String,
        who: Who,
        what: Presence,
        reply: Option<oneshot::Sender<bool>>,
    },
    Current {
        room: String,
        reply: oneshot::Sender<Option<PaidInfo>>,
    },
}

/// Who did it: a user id (token `sub`, matched against the addresses) or a declared role.
#[derive(Debug, Clone)]
pub enum Who {
    /// A token subject; it counts when it is the student's or the tutor's address.
    User(String),
    /// A party named by another backend.
    Party(Party),
}

/// A cheap handle to the paid-session task.
#[derive(Clone)]
pub struct PaidHandle {
    tx: mpsc::Sender<Command>,
    events: broadcast::Sender<PaidEvent>,
    db: Db,
}

/// The LangDAO contract the server settles on and its chain's id, for the room page (which must
/// send `startSession` to the same contract on the same chain). Cheap to clone.
#[derive(Debug, Clone)]
pub struct ChainInfo {
    /// The contract's address.
    pub contract: Address,
    chain_id: Arc<std::sync::OnceLock<u64>>,
}

impl ChainInfo {
    /// Starts asking `client`'s node for the chain id in the background (every 5 s until it
    /// answers: the chain may be down at start-up) and returns at once.
    pub fn learn(client: ChainClient) -> Self {
        let info = Self {
            contract: client.contract_address(),
            chain_id: Arc::new(std::sync::OnceLock::new()),
        };
        let cell = info.chain_id.clone();
        tokio::spawn(async move {
            loop {
                match client.chain_id().await {
                    Ok(id) => {
                        let _ = cell.set(id);
                        return;
                    }
                    Err(e) => {
                        debug!(error = %e, "chain id not known yet; asking again in 5 s");
                        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                    }
                }
            }
        });
        info
    }

    /// The chain id (EIP-155), once the node has told it.
    pub fn chain_id(&self) -> Option<u64> {
        self.chain_id.get().copied()
    }
}

/// Parses `0x…` (any case).
pub fn parse_address(s: &str) -> Result<Address, PaidError> {
    s.trim()
        .parse::<Address>()
        .map_err(|_| PaidError::BadAddress(s.to_owned()))
}

impl PaidHandle {
    /// Starts tracking a paid session the student started on chain. The same start again (same
    /// student, tutor and language) while it runs answers the running session; any other start in
    /// a room with a running session is refused with [`PaidError::RoomBusy`]. Errors: [`PaidError`].
    pub async fn start(
        &self,
        room: &RoomId,
        student: Address,
        tutor: Address,
        language: u8,
    ) -> Result<PaidInfo, PaidError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Start {
            room: room.to_string(),
            student,
            tutor,
            language,
            reply,
        };
        self.tx.send(cmd).await.map_err(|_| PaidError::Stopped)?;
        rx.await.map_err(|_| PaidError::Stopped)?
    }

    /// Reports presence; does nothing for rooms without a paid session or non-parties. A
    /// heartbeat never waits: when the task's queue is full it is dropped (the next one comes
    /// soon). Other reports wait for room in the queue, which the task drains without awaiting
    /// any I/O (chain and database calls run beside it), so this is brief.
    pub async fn presence(&self, room: &RoomId, user: &str, what: Presence) {
        let cmd = Command::Presence {
            room: room.to_string(),
            who: Who::User(user.to_owned()),
            what,
            reply: None,
        };
        if what == Presence::Heartbeat {
            if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(cmd) {
                warn!(room = %room, "paid-session task busy: heartbeat dropped");
            }
        } else {
            let _ = self.tx.send(cmd).await;
        }
    }

    /// Reports presence of a party named by another backend; `false` when the room has no paid
    /// session.
    pub async fn presence_of(&self, room: &str, who: Who, what: Presence) -> bool {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(Command::Presence {
                room: room.to_owned(),
                who,
                what,
                reply: Some(reply),
            })
            .await
            .is_err()
        {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// The room's running paid session.
    pub async fn current(&self, room: &str) -> Option<PaidInfo> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Current {
                room: room.to_owned(),
                reply,
            })
            .await
            .ok()?;
        rx.await.ok().flatten()
    }

    /// The room's latest paid session and its settlement, from the database.
    pub async fn latest(
        &self,
        room: &str,
    ) -> Result<Option<(PaidSessionRecord, Option<SettlementRecord>)>, PaidError> {
        let unavailable = |e: RepoError| PaidError::Unavailable(e.to_string());
        let Some(p) = repo::latest_paid_session(&self.db, room)
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let s = repo::settlement_of(&self.db, p.id)
            .await
            .map_err(unavailable)?;
        Ok(Some((p, s)))
    }

    /// Started- and ended-session notices (for signaling sessions to tell their clients).
    pub fn subscribe(&self) -> broadcast::Receiver<PaidEvent> {
        self.events.subscribe()
    }
}

struct Running {
    info: PaidInfo,
    tracker: PaidSessionTracker,
}

struct Task {
    db: Db,
    chain: ChainClient,
    policy: EndPolicy,
    waker: Arc<Notify>,
    events: broadcast::Sender<PaidEvent>,
    running: HashMap<String, Running>,
    /// Starts being checked on chain and stored, beside the task: the start asked for and
    /// everyone waiting for its answer (a resend of the same start waits for the first).
    starting: HashMap<String, Starting>,
    /// Ends decided but not yet stored (database down): retried.
    unsaved: Vec<PaidEnded>,
    /// Ends being stored now, beside the task.
    storing: bool,
    /// Where the work done beside the task reports back.
    done_tx: mpsc::UnboundedSender<Done>,
}

struct Starting {
    key: (Address, Address, u8),
    waiters: Vec<oneshot::Sender<Result<PaidInfo, PaidError>>>,
}

/// The result of chain or database work the task started beside itself (it never awaits I/O
/// in its command loop, so presence and heartbeats of every room are handled meanwhile).
enum Done {
    Started {
        room: String,
        result: Result<PaidInfo, PaidError>,
    },
    Stored {
        stored: Vec<PaidEnded>,
        failed: Vec<PaidEnded>,
    },
}

/// Starts the paid-session task. `chain` is a read-only client (checks `activeSessions`);
/// `waker` wakes the settlement worker. Resumes the sessions left running in the database.
pub async fn spawn(
    db: Db,
    chain: ChainClient,
    policy: EndPolicy,
    waker: Arc<Notify>,
) -> Result<PaidHandle, PaidError> {
    let (tx, rx) = mpsc::channel(PAID_COMMANDS);
    let (events, _) = broadcast::channel(PAID_EVENTS);
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let mut task = Task {
        db: db.clone(),
        chain,
        policy,
        waker,
        events: events.clone(),
        running: HashMap::new(),
        starting: HashMap::new(),
        unsaved: vec![],
        storing: false,
        done_tx,
    };
    let open = repo::open_paid_sessions(&db)
        .await
        .map_err(|e| PaidError::Unavailable(e.to_string()))?;
    let now = Instant::now();
    for p in open {
        let (Ok(student), Ok(tutor)) = (
            parse_address(&p.student_address),
            parse_address(&p.tutor_address),
        ) else {
            continue;
        };
        let mut tracker = PaidSessionTracker::new(policy, now);
        tracker.on_event(PresenceEvent::Disconnected(Party::Student), now);
        tracker.on_event(PresenceEvent::Disconnected(Party::Tutor), now);
        info!(room = %p.room_id, id = %p.id, "resuming a paid session after restart: both parties have the grace period to return");
        let info = PaidInfo {
            id: p.id,
            room: p.room_id.clone(),
            student,
            tutor,
            language: p.language_id as u8,
            chain_session_id: p
                .chain_session_id
                .as_deref()
                .and_then(|s| s.parse().ok())
                .unwrap_or_default(),
            rate_per_second: U256::ZERO,
            started_at: p.started_at.timestamp().max(0) as u64,
        };
        task.running.insert(p.room_id, Running { info, tracker });
    }
    tokio::spawn(task.run(rx, done_rx));
    Ok(PaidHandle { tx, events, db })
}

impl Task {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        mut done_rx: mpsc::UnboundedReceiver<Done>,
    ) {
        let mut retry_at: Option<Instant> = None;
        loop {
            if self.unsaved.is_empty() || self.storing {
                retry_at = None;
            } else if retry_at.is_none() {
                retry_at = Some(Instant::now() + END_RETRY);
            }
            let deadline = self
                .running
                .values()
                .filter_map(|r| r.tracker.next_deadline())
                .chain(retry_at)
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd),
                    None => return,
                },
                Some(done) = done_rx.recv() => self.on_done(done),
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            let now = Instant::now();
            let ended: Vec<(String, EndReason)> = self
                .running
                .iter_mut()
                .filter_map(|(room, r)| r.tracker.poll(now).map(|reason| (room.clone(), reason)))
                .collect();
            for (room, reason) in ended {
                self.end(&room, reason);
            }
            if retry_at.is_some_and(|t| t <= now) {
                retry_at = None;
                self.store_unsaved();
            }
        }
    }

    fn party(r: &Running, who: &Who) -> Option<Party> {
        match who {
            Who::Party(p) => Some(*p),
            Who::User(u) => {
                let a = parse_address(u).ok()?;
                if a == r.info.student {
                    Some(Party::Student)
                } else if a == r.info.tutor {
                    Some(Party::Tutor)
                } else {
                    None
                }
            }
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Start {
                room,
                student,
                tutor,
                language,
                reply,
            } => self.start(room, (student, tutor, language), reply),
            Command::Presence {
                room,
                who,
                what,
                reply,
            } => {
                let now = Instant::now();
                let mut ended = None;
                let known = match self.running.get_mut(&room) {
                    Some(r) => {
                        if let Some(party) = Self::party(r, &who) {
                            let ev = match what {
                                Presence::Joined => PresenceEvent::Connected(party),
                                Presence::Left => PresenceEvent::Disconnected(party),
                                Presence::LeftOnPurpose => PresenceEvent::Left(party),
                                Presence::Heartbeat => PresenceEvent::Heartbeat(party),
                                Presence::EndPressed => PresenceEvent::EndPressed(party),
                            };
                            ended = r.tracker.on_event(ev, now);
                        }
                        true
                    }
                    None => false,
                };
                if let Some(reason) = ended {
                    self.end(&room, reason);
                }
                if let Some(reply) = reply {
                    let _ = reply.send(known);
                }
            }
            Command::Current { room, reply } => {
                let _ = reply.send(self.running.get(&room).map(|r| r.info.clone()));
            }
        }
    }

    /// Starts tracking `room`'s paid session `key` (student, tutor, language): answered at once
    /// when it runs (or the room is busy), else checked on chain and stored beside the task,
    /// which answers `reply` when that is done ([`Done::Started`]).
    fn start(
        &mut self,
        room: String,
        key: (Address, Address, u8),
        reply: oneshot::Sender<Result<PaidInfo, PaidError>>,
    ) {
        let (student, tutor, language) = key;
        if let Some(r) = self.running.get(&room) {
            let _ = reply.send(
                if r.info.student == student && r.info.tutor == tutor && r.info.language == language
                {
                    Ok(r.info.clone()) // a resend: already tracked
                } else {
                    // Replacing it would leave the running one unsettled: one paid session per room.
                    Err(PaidError::RoomBusy)
                },
            );
            return;
        }
        if let Some(s) = self.starting.get_mut(&room) {
            if s.key == key {
                s.waiters.push(reply);
            } else {
                let _ = reply.send(Err(PaidError::RoomBusy));
            }
            return;
        }
        self.starting.insert(
            room.clone(),
            Starting {
                key,
                waiters: vec![reply],
            },
        );
        let (chain, db, done) = (self.chain.clone(), self.db.clone(), self.done_tx.clone());
        tokio::spawn(async move {
            let result = check_and_store(&chain, &db, &room, key).await;
            let _ = done.send(Done::Started { room, result });
        });
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Started { room, result } => {
                let Some(starting) = self.starting.remove(&room) else {
                    return;
                };
                if let Ok(info) = &result {
                    info!(room = %room, id = %info.id, tutor = %info.tutor, "paid session started");
                    let _ = self.events.send(PaidEvent::Started(info.clone()));
                    self.running.insert(
                        room,
                        Running {
                            info: info.clone(),
                            tracker: PaidSessionTracker::new(self.policy, Instant::now()),
                        },
                    );
                }
                for w in starting.waiters {
                    let _ = w.send(result.clone());
                }
            }
            Done::Stored { stored, failed } => {
                self.storing = false;
                for e in stored {
                    self.waker.notify_one();
                    let _ = self.events.send(PaidEvent::Ended(e));
                }
                for e in &failed {
                    warn!(id = %e.id, "paid session end not stored yet (retrying)");
                }
                self.unsaved.extend(failed);
            }
        }
    }

    fn end(&mut self, room: &str, reason: EndReason) {
        let Some(r) = self.running.remove(room) else {
            return;
        };
        info!(room, id = %r.info.id, reason = reason.as_str(), "paid session ended");
        self.unsaved.push(PaidEnded {
            room: room.to_owned(),
            id: r.info.id,
            reason,
        });
        self.store_unsaved();
    }

    /// Stores the ends not stored yet, beside the task (one batch at a time); what fails comes
    /// back to `unsaved` and is retried after [`END_RETRY`].
    fn store_unsaved(&mut self) {
        if self.storing || self.unsaved.is_empty() {
            return;
        }
        self.storing = true;
        let batch = std::mem::take(&mut self.unsaved);
        let (db, done) = (self.db.clone(), self.done_tx.clone());
        tokio::spawn(async move {
            let mut stored = Vec::new();
            let mut failed = Vec::new();
            for e in batch {
                match repo::end_paid_session(&db, e.id, e.reason, Utc::now()).await {
                    Ok(_) => stored.push(e),
                    Err(err) => {
                        warn!(id = %e.id, "paid session end not stored: {err}");
                        failed.push(e);
                    }
                }
            }
            let _ = done.send(Done::Stored { stored, failed });
        });
    }
}

/// Checks on chain that `tutor` has an active session with `student` (within [`CHAIN_TIMEOUT`])
/// and stores the new paid session. Errors: [`PaidError::ChainUnavailable`],
/// [`PaidError::NotOnChain`], [`PaidError::TutorBusy`], [`PaidError::Unavailable`].
async fn check_and_store(
    chain: &ChainClient,
    db: &Db,
    room: &str,
    (student, tutor, language): (Address, Address, u8),
) -> Result<PaidInfo, PaidError> {
    let active = tokio::time::timeout(CHAIN_TIMEOUT, chain.active_session(tutor))
        .await
        .map_err(|_| PaidError::ChainUnavailable("no answer in time".into()))?
        .map_err(|e| PaidError::ChainUnavailable(e.to_string()))?
        .filter(|a| a.student == student)
        .ok_or(PaidError::NotOnChain)?;
    let new = NewPaidSession {
        room_id: room.to_owned(),
        student,
        tutor,
        language,
        chain_session_id: Some(active.session_id),
    };
    let id = match repo::start_paid_session(db, &new, Utc::now()).await {
        Ok(id) => id,
        Err(RepoError::TutorBusy) => return Err(PaidError::TutorBusy),
        Err(e) => return Err(PaidError::Unavailable(e.to_string())),
    };
    Ok(PaidInfo {
        id,
        room: room.to_owned(),
        student,
        tutor,
        language,
        chain_session_id: active.session_id,
        rate_per_second: active.rate_per_second,
        started_at: active.start_time,
    })
}
