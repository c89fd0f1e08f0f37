//! Presence and 1:1 calls (issue 11, docs/protocol.md "Presence and calls").
//!
//! One task owns who is online (user → their signaling sockets) and the live calls; signaling
//! sessions talk to it through a [`CallService`] handle. A user is **online** while at least one
//! of their sockets is open (a lobby socket that never joins a room counts) and **available**
//! while online and in no live call. A call rings every socket of the callee, is answered,
//! refused, cancelled, or missed after the ring timeout, and ends on a hang-up, when either side
//! leaves the call's room for good (a `leave`: `hangup`; a lost connection not resumed:
//! `disconnected`), or when either side has no socket left. Each call is a row of `calls` (`crates/store/src/calls.rs`), moved through
//! its states with the store's compare-and-set by one writer task, in order; a write the database
//! refuses while it is down is retried for about a minute (the call itself goes on: media does
//! not wait on the database), but a call cannot be placed while the database is down
//! (`unavailable`).
//!
//! Events to sockets go through a bounded queue per socket ([`SOCKET_QUEUE`]); a socket too slow
//! to take them loses the excess (it sees the state again with `watch_presence`), never the
//! others' events.

use std::collections::HashMap;
use std::time::Duration;

use confab_protocol::{ErrorCode, PresenceMsg, ServerMessage};
use confab_store::{CallStatus, Db, NewCall, StoreError, Uuid};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// Default ring timeout: an unanswered call ends as `missed`/`no_answer` after this.
pub const RING_TIMEOUT: Duration = Duration::from_secs(30);

/// Events queued per socket before the excess is dropped.
pub const SOCKET_QUEUE: usize = 64;

/// Users whose last match partner is remembered (kept across reconnects, so a reload does not
/// pair the same two again); past it the memory starts afresh.
pub const LAST_PARTNERS: usize = 100_000;

/// Longest user id `call_invite` accepts, bytes.
pub const MAX_USER_ID: usize = 128;

/// What a side does to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallAction {
    /// `call_accept` (callee, ringing).
    Accept,
    /// `call_reject` (callee, ringing).
    Reject,
    /// `call_cancel` (caller, ringing).
    Cancel,
    /// `call_hangup` (either; while ringing a cancel or a reject).
    Hangup,
}

/// A socket's registration: its id, and the queue of presence and call events for it.
#[derive(Debug)]
pub struct Registration {
    /// This socket's id (unique per process).
    pub socket: u64,
    /// Events for this socket.
    pub events: mpsc::Receiver<ServerMessage>,
}

/// Handle to the presence and call task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CallService {
    tx: mpsc::Sender<Cmd>,
}

#[derive(Debug)]
enum Cmd {
    Connect {
        user: String,
        name: String,
        reply: oneshot::Sender<Registration>,
    },
    Disconnect {
        user: String,
        socket: u64,
    },
    Watch {
        user: String,
        socket: u64,
        reply: oneshot::Sender<Vec<PresenceMsg>>,
    },
    Online {
        reply: oneshot::Sender<Vec<PresenceMsg>>,
    },
    Invite {
        user: String,
        socket: u64,
        callee: String,
        reply: oneshot::Sender<ServerMessage>,
    },
    Act {
        user: String,
        socket: u64,
        call: String,
        action: CallAction,
        reply: oneshot::Sender<ServerMessage>,
    },
    RingTimeout {
        call: Uuid,
    },
    LeftRoom {
        user: String,
        room: String,
        on_purpose: bool,
    },
    Match {
        user: String,
        socket: u64,
        start: bool,
        reply: oneshot::Sender<ServerMessage>,
    },
}

impl CallService {
    /// Starts the task on `db`; calls ring for `ring_timeout`.
    pub fn spawn(db: Db, ring_timeout: Duration) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        let (records, pending) = mpsc::channel(RECORD_QUEUE);
        tokio::spawn(write_records(db.clone(), pending));
        let task = Task {
            db,
            records,
            ring_timeout,
            tx: tx.downgrade(),
            users: HashMap::new(),
            calls: HashMap::new(),
            next_socket: 1,
            queue: std::collections::VecDeque::new(),
            last_partner: HashMap::new(),
        };
        tokio::spawn(task.run(rx));
        Self { tx }
    }

    /// Registers a socket of `user` (shown as `name`); `None` once the task has stopped.
    pub async fn connect(&self, user: &str, name: &str) -> Option<Registration> {
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Connect {
            user: user.to_owned(),
            name: name.to_owned(),
            reply,
        };
        self.tx.send(cmd).await.ok()?;
        rx.await.ok()
    }

    /// The socket closed (its user goes offline with their last socket; their live call ends).
    pub async fn disconnect(&self, user: &str, socket: u64) {
        let _ = self
            .tx
            .send(Cmd::Disconnect {
                user: user.to_owned(),
                socket,
            })
            .await;
    }

    /// `watch_presence`: the answer (`presence_snapshot`); the socket then gets `presence`
    /// events.
    pub async fn watch(&self, user: &str, socket: u64) -> ServerMessage {
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Watch {
            user: user.to_owned(),
            socket,
            reply,
        };
        match self.ask(cmd, rx).await {
            Some(users) => ServerMessage::PresenceSnapshot { users },
            None => stopped(),
        }
    }

    /// Everyone online, by user id (`GET /api/presence`).
    pub async fn online(&self) -> Vec<PresenceMsg> {
        let (reply, rx) = oneshot::channel();
        self.ask(Cmd::Online { reply }, rx)
            .await
            .unwrap_or_default()
    }

    /// `user` left `room` for good (`on_purpose`: sent `leave`; else its connection was lost and
    /// not resumed): when that is the room of their answered call, the call ends (`hangup` or
    /// `disconnected`).
    pub async fn left_room(&self, user: &str, room: &str, on_purpose: bool) {
        let _ = self
            .tx
            .send(Cmd::LeftRoom {
                user: user.to_owned(),
                room: room.to_owned(),
                on_purpose,
            })
            .await;
    }

    /// `match_start` (`start`) or `match_stop` from `socket` of `user`: the answer for that socket.
    pub async fn matching(&self, user: &str, socket: u64, start: bool) -> ServerMessage {
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Match {
            user: user.to_owned(),
            socket,
            start,
            reply,
        };
        self.ask(cmd, rx).await.unwrap_or_else(stopped)
    }

    /// `call_invite` from `socket` of `user`: the answer for that socket.
    pub async fn invite(&self, user: &str, socket: u64, callee: &str) -> ServerMessage {
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Invite {
            user: user.to_owned(),
            socket,
            callee: callee.to_owned(),
            reply,
        };
        self.ask(cmd, rx).await.unwrap_or_else(stopped)
    }

    /// `call_accept` / `call_reject` / `call_cancel` / `call_hangup`: the answer for that socket.
    pub async fn act(
        &self,
        user: &str,
        socket: u64,
        call: &str,
        action: CallAction,
    ) -> ServerMessage {
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Act {
            user: user.to_owned(),
            socket,
            call: call.to_owned(),
            action,
            reply,
        };
        self.ask(cmd, rx).await.unwrap_or_else(stopped)
    }

    async fn ask<T>(&self, cmd: Cmd, rx: oneshot::Receiver<T>) -> Option<T> {
        self.tx.send(cmd).await.ok()?;
        rx.await.ok()
    }
}

fn stopped() -> ServerMessage {
    ServerMessage::error(ErrorCode::Internal, "calls are not available")
}

struct Socket {
    events: mpsc::Sender<ServerMessage>,
    watching: bool,
}

struct User {
    name: String,
    sockets: HashMap<u64, Socket>,
    /// The live call this user is a side of.
    call: Option<Uuid>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ringing,
    Ongoing,
}

struct Live {
    room: String,
    caller: String,
    callee: String,
    phase: Phase,
    answered: Option<tokio::time::Instant>,
}

/// Call-record writes waiting for the database before new ones are dropped (and logged).
const RECORD_QUEUE: usize = 4096;

/// Applies call-record transitions in the order they were decided.
async fn write_records(db: Db, mut rx: mpsc::Receiver<(Uuid, CallStatus, Option<String>)>) {
    while let Some((id, to, reason)) = rx.recv().await {
        let mut wait = Duration::from_millis(200);
        let mut tries = 0;
        loop {
            match db.transition_call(id, to, reason.as_deref()).await {
                Ok(_) => break,
                Err(StoreError::Unavailable(e)) if tries < 10 => {
                    tries += 1;
                    debug!(call = %id, error = %e, "call record not written yet; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
                Err(e) => {
                    warn!(call = %id, to = to.as_str(), error = %e, "call record not moved");
                    break;
                }
            }
        }
    }
}

struct Task {
    db: Db,
    records: mpsc::Sender<(Uuid, CallStatus, Option<String>)>,
    ring_timeout: Duration,
    tx: mpsc::WeakSender<Cmd>,
    users: HashMap<String, User>,
    calls: HashMap<Uuid, Live>,
    next_socket: u64,
    /// Users waiting to be paired, oldest first: (user, the socket that asked).
    queue: std::collections::VecDeque<(String, u64)>,
    /// Each user's partner of their last match (never paired twice in a row).
    last_partner: HashMap<String, String>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        while let Some(cmd) = rx.recv().await {
            self.handle(cmd).await;
        }
    }

    async fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Connect { user, name, reply } => {
                let socket = self.next_socket;
                self.next_socket += 1;
                let (tx, rx) = mpsc::channel(SOCKET_QUEUE);
                let came_online = !self.users.contains_key(&user);
                let u = self.users.entry(user.clone()).or_insert_with(|| User {
                    name: name.clone(),
                    sockets: HashMap::new(),
                    call: None,
                });
                u.sockets.insert(
                    socket,
                    Socket {
                        events: tx,
                        watching: false,
                    },
                );
                let _ = reply.send(Registration { socket, events: rx });
                if came_online {
                    self.announce(&user, true);
                }
            }
            Cmd::Disconnect { user, socket } => {
                let Some(u) = self.users.get_mut(&user) else {
                    return;
                };
                u.sockets.remove(&socket);
                let empty = u.sockets.is_empty();
                self.queue.retain(|(_, s)| *s != socket);
                if !empty {
                    return;
                }
                let Some(u) = self.users.get(&user) else {
                    return;
                };
                if let Some(call) = u.call {
                    self.gone(call, &user).await;
                }
                self.announce(&user, false);
                self.users.remove(&user);
            }
            Cmd::Watch {
                user,
                socket,
                reply,
            } => {
                if let Some(s) = self
                    .users
                    .get_mut(&user)
                    .and_then(|u| u.sockets.get_mut(&socket))
                {
                    s.watching = true;
                }
                let mut all = self.online();
                all.retain(|p| p.user_id != user);
                let _ = reply.send(all);
            }
            Cmd::Online { reply } => {
                let _ = reply.send(self.online());
            }
            Cmd::Invite {
                user,
                socket,
                callee,
                reply,
            } => {
                let answer = self.invite(&user, socket, &callee).await;
                let _ = reply.send(answer);
            }
            Cmd::Act {
                user,
                socket,
                call,
                action,
                reply,
            } => {
                let answer = self.act(&user, socket, &call, action).await;
                let _ = reply.send(answer);
            }
            Cmd::Match {
                user,
                socket,
                start,
                reply,
            } => {
                let answer = if start {
                    self.match_start(&user, socket)
                } else {
                    self.queue.retain(|(u, _)| *u != user);
                    ServerMessage::MatchStopped
                };
                let _ = reply.send(answer);
            }
            Cmd::LeftRoom {
                user,
                room,
                on_purpose,
            } => {
                let call = self.users.get(&user).and_then(|u| u.call);
                if let Some(id) = call.filter(|id| {
                    self.calls
                        .get(id)
                        .is_some_and(|c| c.phase == Phase::Ongoing && c.room == room)
                }) {
                    let reason = if on_purpose { "hangup" } else { "disconnected" };
                    self.finish(id, CallStatus::Ended, reason, Some(&user), None)
                        .await;
                }
            }
            Cmd::RingTimeout { call } => {
                if self
                    .calls
                    .get(&call)
                    .is_some_and(|c| c.phase == Phase::Ringing)
                {
                    self.finish(call, CallStatus::Missed, "no_answer", None, None)
                        .await;
                }
            }
        }
    }

    fn online(&self) -> Vec<PresenceMsg> {
        let mut all: Vec<PresenceMsg> = self
            .users
            .iter()
            .map(|(id, u)| PresenceMsg {
                user_id: id.clone(),
                name: u.name.clone(),
                available: u.call.is_none(),
            })
            .collect();
        all.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        all
    }

    /// Tells every watching socket of other users that `user` is `online` (with its availability).
    fn announce(&self, user: &str, online: bool) {
        let Some(u) = self.users.get(user) else {
            return;
        };
        let m = ServerMessage::Presence {
            user: PresenceMsg {
                user_id: user.to_owned(),
                name: u.name.clone(),
                available: online && u.call.is_none(),
            },
            online,
        };
        for (id, other) in &self.users {
            if id == user {
                continue;
            }
            for s in other.sockets.values().filter(|s| s.watching) {
                let _ = s.events.try_send(m.clone());
            }
        }
    }

    /// Sends `m` to every socket of `user` but `except`.
    fn tell(&self, user: &str, m: &ServerMessage, except: Option<u64>) {
        if let Some(u) = self.users.get(user) {
            for (id, s) in &u.sockets {
                if Some(*id) != except {
                    let _ = s.events.try_send(m.clone());
                }
            }
        }
    }

    /// Pairs `user` with the longest-waiting eligible user (not themselves, not the partner of
    /// either's last match), or queues them.
    fn match_start(&mut self, user: &str, socket: u64) -> ServerMessage {
        if self.users.get(user).is_some_and(|u| u.call.is_some()) {
            return ServerMessage::error(ErrorCode::InCall, "you are in a call: hang up first");
        }
        if let Some(entry) = self.queue.iter_mut().find(|(u, _)| u == user) {
            entry.1 = socket;
            return ServerMessage::MatchWaiting;
        }
        let eligible = |other: &str| {
            other != user
                && self.last_partner.get(user).map(String::as_str) != Some(other)
                && self.last_partner.get(other).map(String::as_str) != Some(user)
        };
        let Some(at) = self.queue.iter().position(|(u, _)| eligible(u)) else {
            self.queue.push_back((user.to_owned(), socket));
            return ServerMessage::MatchWaiting;
        };
        let Some((partner, partner_socket)) = self.queue.remove(at) else {
            return ServerMessage::MatchWaiting;
        };
        let room = format!("match-{}", Uuid::new_v4().simple());
        let name_of = |u: &str| {
            self.users
                .get(u)
                .map(|x| x.name.clone())
                .unwrap_or_default()
        };
        let to_partner = ServerMessage::MatchFound {
            room: room.clone(),
            partner: user.to_owned(),
            partner_name: name_of(user),
        };
        let to_user = ServerMessage::MatchFound {
            room,
            partner: partner.clone(),
            partner_name: name_of(&partner),
        };
        if let Some(s) = self
            .users
            .get(&partner)
            .and_then(|u| u.sockets.get(&partner_socket))
        {
            let _ = s.events.try_send(to_partner);
        }
        if self.last_partner.len() >= LAST_PARTNERS {
            // Bounded memory: forgetting every last partner at once is rare and harmless.
            self.last_partner.clear();
        }
        self.last_partner.insert(user.to_owned(), partner.clone());
        self.last_partner.insert(partner, user.to_owned());
        to_user
    }

    async fn invite(&mut self, caller: &str, socket: u64, callee: &str) -> ServerMessage {
        let callee = callee.trim();
        if callee.is_empty() || callee.len() > MAX_USER_ID || callee == caller {
            return ServerMessage::error(
                ErrorCode::InvalidCallee,
                "call_invite needs another user's id (1-128 bytes)",
            );
        }
        if self.users.get(caller).is_some_and(|u| u.call.is_some()) {
            return ServerMessage::error(ErrorCode::InCall, "you are in a call: hang up first");
        }
        let room = format!("call-{}", Uuid::new_v4().simple());
        let record = NewCall {
            room_id: room.clone(),
            caller_id: caller.to_owned(),
            callee_id: callee.to_owned(),
        };
        let created = match self.db.create_call(record).await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "call not placed: the database did not take its record");
                return ServerMessage::error(
                    ErrorCode::Unavailable,
                    "the call could not be recorded; try again",
                );
            }
        };
        let call_id = created.id.to_string();
        let ended = |status: CallStatus, reason: &str| ServerMessage::CallEnded {
            call_id: call_id.clone(),
            status: status.as_str().to_owned(),
            reason: reason.to_owned(),
            by: None,
            duration_s: None,
        };
        let Some(target) = self.users.get(callee) else {
            self.record(created.id, CallStatus::Missed, Some("offline"));
            return ended(CallStatus::Missed, "offline");
        };
        if target.call.is_some() {
            self.record(created.id, CallStatus::Rejected, Some("busy"));
            return ended(CallStatus::Rejected, "busy");
        }
        let caller_name = self
            .users
            .get(caller)
            .map(|u| u.name.clone())
            .unwrap_or_default();
        self.record(created.id, CallStatus::Ringing, None);
        self.calls.insert(
            created.id,
            Live {
                room,
                caller: caller.to_owned(),
                callee: callee.to_owned(),
                phase: Phase::Ringing,
                answered: None,
            },
        );
        for side in [caller, callee] {
            if let Some(u) = self.users.get_mut(side) {
                u.call = Some(created.id);
            }
        }
        self.announce(caller, true);
        self.announce(callee, true);
        self.tell(
            callee,
            &ServerMessage::CallIncoming {
                call_id: call_id.clone(),
                caller: caller.to_owned(),
                caller_name,
            },
            None,
        );
        let ringing = ServerMessage::CallRinging {
            call_id,
            callee: callee.to_owned(),
        };
        self.tell(caller, &ringing, Some(socket));
        if let Some(tx) = self.tx.upgrade() {
            let (timeout, call) = (self.ring_timeout, created.id);
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                let _ = tx.send(Cmd::RingTimeout { call }).await;
            });
        }
        info!(call = %created.id, "call ringing");
        ringing
    }

    async fn act(
        &mut self,
        user: &str,
        socket: u64,
        call: &str,
        action: CallAction,
    ) -> ServerMessage {
        let not_found = || {
            ServerMessage::error(
                ErrorCode::CallNotFound,
                "no call of yours with that id allows this now",
            )
        };
        let Ok(id) = Uuid::parse_str(call) else {
            return not_found();
        };
        let Some(live) = self.calls.get(&id) else {
            return not_found();
        };
        let is_caller = live.caller == user;
        let is_callee = live.callee == user;
        let done = match (action, live.phase, is_caller, is_callee) {
            (CallAction::Accept, Phase::Ringing, _, true) => {
                return self.accept(id, socket).await;
            }
            (CallAction::Reject, Phase::Ringing, _, true)
            | (CallAction::Hangup, Phase::Ringing, false, true) => {
                (CallStatus::Rejected, "rejected")
            }
            (CallAction::Cancel, Phase::Ringing, true, _)
            | (CallAction::Hangup, Phase::Ringing, true, _) => (CallStatus::Missed, "cancelled"),
            (CallAction::Hangup, Phase::Ongoing, true, _)
            | (CallAction::Hangup, Phase::Ongoing, _, true) => (CallStatus::Ended, "hangup"),
            _ => return not_found(),
        };
        self.finish(id, done.0, done.1, Some(user), Some((user, socket)))
            .await
            .unwrap_or_else(not_found)
    }

    async fn accept(&mut self, id: Uuid, socket: u64) -> ServerMessage {
        let Some(live) = self.calls.get_mut(&id) else {
            return ServerMessage::error(ErrorCode::CallNotFound, "the call is over");
        };
        live.phase = Phase::Ongoing;
        live.answered = Some(tokio::time::Instant::now());
        let (caller, callee) = (live.caller.clone(), live.callee.clone());
        let m = ServerMessage::CallAccepted {
            call_id: id.to_string(),
            room: live.room.clone(),
        };
        self.record(id, CallStatus::Ongoing, None);
        self.tell(&caller, &m, None);
        self.tell(&callee, &m, Some(socket));
        info!(call = %id, "call answered");
        m
    }

    /// Ends live call `id` as `status`/`reason`, tells both sides (but `answering`'s socket, which
    /// gets the message as the return value) and frees them.
    async fn finish(
        &mut self,
        id: Uuid,
        status: CallStatus,
        reason: &str,
        by: Option<&str>,
        answering: Option<(&str, u64)>,
    ) -> Option<ServerMessage> {
        let live = self.calls.remove(&id)?;
        self.record(id, status, Some(reason));
        let m = ServerMessage::CallEnded {
            call_id: id.to_string(),
            status: status.as_str().to_owned(),
            reason: reason.to_owned(),
            by: by.map(str::to_owned),
            duration_s: live.answered.map(|t| t.elapsed().as_secs()),
        };
        for side in [&live.caller, &live.callee] {
            if let Some(u) = self.users.get_mut(side.as_str()) {
                if u.call == Some(id) {
                    u.call = None;
                }
            }
            let except = answering.filter(|(u, _)| u == side).map(|(_, s)| s);
            self.tell(side, &m, except);
            self.announce(side, true);
        }
        info!(call = %id, status = status.as_str(), reason, "call over");
        Some(m)
    }

    /// `user` has no socket left while a side of call `id`.
    async fn gone(&mut self, id: Uuid, user: &str) {
        let Some(live) = self.calls.get(&id) else {
            return;
        };
        let (status, reason) = match live.phase {
            Phase::Ongoing => (CallStatus::Ended, "disconnected"),
            Phase::Ringing if live.caller == user => (CallStatus::Missed, "caller_gone"),
            Phase::Ringing => (CallStatus::Missed, "callee_gone"),
        };
        self.finish(id, status, reason, Some(user), None).await;
    }

    /// Queues the move of call `id`'s record to `to` (see [`write_records`]).
    fn record(&self, id: Uuid, to: CallStatus, reason: Option<&str>) {
        if self
            .records
            .try_send((id, to, reason.map(str::to_owned)))
            .is_err()
        {
            warn!(call = %id, to = to.as_str(), "call record queue full: record left behind");
        }
    }
}
