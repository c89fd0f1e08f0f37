//! Chat: messages arrive on a participant's `chat` DataChannel, are validated, rate-limited,
//! stored (and only then acknowledged and relayed), and replayed to whoever joins later.
//!
//! Runs inside each participant's signaling session task, so a slow or unavailable database
//! delays only that participant's chat — never media, never anybody else.

use confab_protocol::chat::{ChatClientMessage, ChatMessage, ChatServerMessage};
use confab_sfu::{ParticipantId, RoomId, SfuHandle};
use confab_store::{
    ChatText, ClientMsgId, Db, InsertOutcome, InvalidInput, MessageType, NewMessage, RateLimit,
    RateLimited, RateLimiter, StoreError, StoredMessage, Uuid,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The DataChannel label chat uses.
pub const CHAT_LABEL: &str = "chat";
/// Messages replayed on join.
pub const HISTORY_ON_JOIN: u32 = 50;
/// Largest history part sent in one DataChannel message, bytes.
const HISTORY_PART_BYTES: usize = 32 * 1024;

/// Shared chat dependencies (cheap to clone).
#[derive(Clone)]
pub struct ChatService {
    db: Db,
    sfu: SfuHandle,
    /// One budget per user (token subject) for every chat operation — send, edit, delete,
    /// history — across all the user's sockets ([`RateLimit::CHAT`]).
    limiters: Budgets,
    /// Join and leave lines per room ([`SYSTEM_LINES`]): past it they are skipped, so churn
    /// cannot fill a room's history or its participants' chat channels.
    system_lines: Budgets,
}

/// Token buckets by key (a user, a room).
type Budgets = Arc<Mutex<HashMap<String, RateLimiter>>>;

/// Join and leave lines a room's chat gets: 20 at once (a study group arriving), then one
/// every 3 s.
pub const SYSTEM_LINES: RateLimit = RateLimit {
    messages: 20,
    per: std::time::Duration::from_secs(60),
    burst: 20,
};

/// Most users with a chat budget kept; past it, full (idle) budgets are forgotten (no loss).
const MAX_CHAT_BUDGETS: usize = 10_000;

/// One participant's chat state, owned by its session.
pub struct ChatParticipant {
    /// The room.
    pub room: RoomId,
    /// Who, in the media plane.
    pub participant: ParticipantId,
    /// Stable user id (JWT `sub`): authorship of edits and deletes.
    pub user_id: String,
    /// Display name.
    pub user_name: String,
}

impl ChatParticipant {
    /// Chat state for a participant who just joined.
    pub fn new(
        room: RoomId,
        participant: ParticipantId,
        user_id: String,
        user_name: String,
    ) -> Self {
        Self {
            room,
            participant,
            user_id,
            user_name,
        }
    }
}

/// The wire form of a stored message.
pub fn wire(m: &StoredMessage) -> ChatMessage {
    ChatMessage {
        id: m.id.to_string(),
        user_id: m.user_id.clone(),
        user_name: m.user_name.clone(),
        text: m.text.clone(),
        message_type: m.message_type.as_str().to_owned(),
        client_msg_id: m.client_msg_id.clone(),
        created_at: m.created_at.to_rfc3339(),
        edited_at: m.is_edited().then(|| m.updated_at.to_rfc3339()),
        deleted: m.is_deleted(),
    }
}

/// The chat error code for a store error (the only such mapping). Only
/// [`StoreError::Unavailable`] is `chat_unavailable`, which clients retry; any other database
/// error is `internal` (retrying would fail the same way).
pub fn store_error_code(e: &StoreError) -> &'static str {
    match e {
        StoreError::Unavailable(_) => "chat_unavailable",
        StoreError::NotFound => "not_found",
        StoreError::NotAuthor => "not_author",
        StoreError::Deleted => "deleted",
        StoreError::ClientMsgIdTaken => "bad_request",
        _ => "internal",
    }
}

/// What a client is told of a store error: never the database's own text (it names tables,
/// constraints, the server's version). The error itself is logged.
fn store_error_message(what: &str, e: &StoreError) -> String {
    match e {
        StoreError::Unavailable(_) => {
            tracing::warn!(error = %e, "{what}: database unavailable");
            format!("{what}: the chat is unavailable right now")
        }
        StoreError::NotFound
        | StoreError::NotAuthor
        | StoreError::Deleted
        | StoreError::ClientMsgIdTaken => format!("{what}: {e}"),
        _ => {
            tracing::error!(error = %e, "{what}: database error");
            format!("{what}: internal error")
        }
    }
}

fn input_error_code(e: &InvalidInput) -> &'static str {
    match e {
        InvalidInput::Empty => "empty",
        InvalidInput::TooLong { .. } => "too_long",
        _ => "bad_request",
    }
}

fn json(m: &ChatServerMessage) -> String {
    serde_json::to_string(m).expect("serializable")
}

impl ChatService {
    /// A chat service over `db`, relaying through `sfu`.
    pub fn new(db: Db, sfu: SfuHandle) -> Self {
        Self {
            db,
            sfu,
            limiters: Arc::default(),
            system_lines: Arc::default(),
        }
    }

    /// Takes one event from `key`'s bucket in `budgets` (shaped `limit`) at `now`. Errors: how
    /// long until the next one is allowed.
    fn acquire(
        budgets: &Budgets,
        limit: RateLimit,
        key: &str,
        now: Instant,
    ) -> Result<(), RateLimited> {
        let mut all = budgets.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() >= MAX_CHAT_BUDGETS && !all.contains_key(key) {
            all.retain(|_, l| l.available(now) < limit.burst);
        }
        all.entry(key.to_owned())
            .or_insert_with(|| RateLimiter::new(limit, now))
            .try_acquire(now)
    }

    /// Refuses a chat operation past `p`'s budget with `rate_limited`; `true` when refused.
    async fn limited(&self, p: &ChatParticipant, client_msg_id: Option<String>) -> bool {
        match Self::acquire(&self.limiters, RateLimit::CHAT, &p.user_id, Instant::now()) {
            Ok(()) => false,
            Err(limited) => {
                let msg = format!(
                    "too many chat actions; retry in {} ms",
                    limited.retry_after.as_millis()
                );
                self.error(p, "rate_limited", msg, client_msg_id).await;
                true
            }
        }
    }

    /// The database (for REST history).
    pub fn db(&self) -> &Db {
        &self.db
    }

    async fn to_participant(&self, p: &ChatParticipant, m: &ChatServerMessage) {
        self.sfu
            .send_data(p.participant, CHAT_LABEL.into(), json(m))
            .await;
    }

    async fn error(
        &self,
        p: &ChatParticipant,
        code: &str,
        message: String,
        client_msg_id: Option<String>,
    ) {
        self.to_participant(
            p,
            &ChatServerMessage::Error {
                code: code.into(),
                message,
                client_msg_id,
            },
        )
        .await;
    }

    /// The latest `limit` messages of `room` (older than `before` if given), oldest first, in
    /// wire form, and whether older ones exist. Errors: the store's (`Unavailable` when down).
    pub async fn history_page(
        &self,
        room: &RoomId,
        before: Option<Uuid>,
        limit: u32,
    ) -> Result<(Vec<ChatMessage>, bool), StoreError> {
        // One more than asked tells whether there are older ones.
        let mut messages = self
            .db
            .history(room.as_str(), before, limit.saturating_add(1))
            .await?;
        let has_more = messages.len() > limit as usize;
        if has_more {
            messages.remove(0);
        }
        Ok((messages.iter().map(wire).collect(), has_more))
    }

    /// Sends the latest messages (the chat channel just opened), in parts of at most ~32 KiB.
    pub async fn send_history(&self, p: &ChatParticipant, before: Option<Uuid>, limit: u32) {
        match self.history_page(&p.room, before, limit).await {
            Ok((messages, has_more)) => {
                let mut part: Vec<ChatMessage> = Vec::new();
                let mut size = 0;
                let total = messages.len();
                for (i, w) in messages.into_iter().enumerate() {
                    size += w.text.len() + 256;
                    part.push(w);
                    let last = i + 1 == total;
                    if size >= HISTORY_PART_BYTES || last {
                        let msg = ChatServerMessage::History {
                            messages: std::mem::take(&mut part),
                            has_more,
                            done: last,
                        };
                        self.to_participant(p, &msg).await;
                        size = 0;
                    }
                }
                if total == 0 {
                    self.to_participant(
                        p,
                        &ChatServerMessage::History {
                            messages: vec![],
                            has_more: false,
                            done: true,
                        },
                    )
                    .await;
                }
            }
            Err(e) => {
                self.error(
                    p,
                    store_error_code(&e),
                    store_error_message("chat history unavailable", &e),
                    None,
                )
                .await
            }
        }
    }

    /// Stores a system message (joins, leaves) and relays it to the room.
    pub async fn system(&self, p: &ChatParticipant, text: String) {
        self.system_in(p.room.clone(), p.user_name.clone(), text)
            .await;
    }

    /// [`Self::system`] on a task of its own, for a caller on the join path: the database write
    /// (5–50 ms on SQLite) must not hold back the subscribe offer queued behind it. A "left"
    /// line written right after may then be stored first.
    pub fn system_in_background(&self, p: &ChatParticipant, text: String) {
        let me = self.clone();
        let (room, user_name) = (p.room.clone(), p.user_name.clone());
        tokio::spawn(async move { me.system_in(room, user_name, text).await });
    }

    async fn system_in(&self, room: RoomId, user_name: String, text: String) {
        if Self::acquire(
            &self.system_lines,
            SYSTEM_LINES,
            room.as_str(),
            Instant::now(),
        )
        .is_err()
        {
            tracing::debug!(%room, "join/leave line skipped: the room churns");
            return;
        }
        let Ok(text) = ChatText::parse(text) else {
            return;
        };
        let msg = NewMessage {
            room_id: room.to_string(),
            user_id: "system".into(),
            user_name,
            text,
            message_type: MessageType::System,
            client_msg_id: ClientMsgId::generate(),
        };
        match self.db.insert_message(msg).await {
            Ok((stored, _)) => {
                let m = json(&ChatServerMessage::Message {
                    message: wire(&stored),
                });
                self.sfu
                    .broadcast_data(room, None, CHAT_LABEL.into(), m)
                    .await;
            }
            Err(e) => tracing::warn!(%room, "system message not stored: {e}"),
        }
    }

    /// Handles one text message from the participant's chat channel.
    pub async fn on_message(&self, p: &mut ChatParticipant, raw: &str) {
        let msg = match serde_json::from_str::<ChatClientMessage>(raw) {
            Ok(m) => m,
            Err(e) => {
                return self
                    .error(p, "bad_json", format!("invalid chat message: {e}"), None)
                    .await
            }
        };
        match msg {
            ChatClientMessage::Send {
                client_msg_id,
                text,
            } => {
                let cid = match ClientMsgId::parse(client_msg_id.clone()) {
                    Ok(c) => c,
                    Err(e) => {
                        return self
                            .error(p, "bad_request", e.to_string(), Some(client_msg_id))
                            .await
                    }
                };
                let text = match ChatText::parse(text) {
                    Ok(t) => t,
                    Err(e) => {
                        return self
                            .error(p, input_error_code(&e), e.to_string(), Some(client_msg_id))
                            .await
                    }
                };
                if self.limited(p, Some(client_msg_id.clone())).await {
                    return;
                }
                let new = NewMessage {
                    room_id: p.room.to_string(),
                    user_id: p.user_id.clone(),
                    user_name: p.user_name.clone(),
                    text,
                    message_type: MessageType::Text,
                    client_msg_id: cid,
                };
                match self.db.insert_message(new).await {
                    Ok((stored, outcome)) => {
                        let message = wire(&stored);
                        // Committed: now acknowledge, and relay (a duplicate was relayed before).
                        self.to_participant(
                            p,
                            &ChatServerMessage::Ack {
                                client_msg_id,
                                message: message.clone(),
                            },
                        )
                        .await;
                        if outcome == InsertOutcome::Inserted {
                            let m = json(&ChatServerMessage::Message { message });
                            self.sfu
                                .broadcast_data(
                                    p.room.clone(),
                                    Some(p.participant),
                                    CHAT_LABEL.into(),
                                    m,
                                )
                                .await;
                        }
                    }
                    Err(e) => {
                        self.error(
                            p,
                            store_error_code(&e),
                            store_error_message("message not stored", &e),
                            Some(client_msg_id),
                        )
                        .await
                    }
                }
            }
            ChatClientMessage::Edit { id, text } => {
                if self.limited(p, None).await {
                    return;
                }
                let Ok(id) = Uuid::parse_str(&id) else {
                    return self
                        .error(p, "bad_request", "id is not a message id".into(), None)
                        .await;
                };
                let text = match ChatText::parse(text) {
                    Ok(t) => t,
                    Err(e) => {
                        return self
                            .error(p, input_error_code(&e), e.to_string(), None)
                            .await
                    }
                };
                match self
                    .db
                    .edit_message(p.room.as_str(), id, &p.user_id, text)
                    .await
                {
                    Ok(m) => {
                        let m = json(&ChatServerMessage::Edited { message: wire(&m) });
                        self.sfu
                            .broadcast_data(p.room.clone(), None, CHAT_LABEL.into(), m)
                            .await;
                    }
                    Err(e) => {
                        let msg = store_error_message("message not edited", &e);
                        self.error(p, store_error_code(&e), msg, None).await
                    }
                }
            }
            ChatClientMessage::Delete { id } => {
                if self.limited(p, None).await {
                    return;
                }
                let Ok(uuid) = Uuid::parse_str(&id) else {
                    return self
                        .error(p, "bad_request", "id is not a message id".into(), None)
                        .await;
                };
                match self
                    .db
                    .delete_message(p.room.as_str(), uuid, &p.user_id)
                    .await
                {
                    Ok(_) => {
                        let m = json(&ChatServerMessage::Deleted { id });
                        self.sfu
                            .broadcast_data(p.room.clone(), None, CHAT_LABEL.into(), m)
                            .await;
                    }
                    Err(e) => {
                        let msg = store_error_message("message not deleted", &e);
                        self.error(p, store_error_code(&e), msg, None).await
                    }
                }
            }
            ChatClientMessage::History { before, limit } => {
                if self.limited(p, None).await {
                    return;
                }
                let before = match before.as_deref().map(Uuid::parse_str) {
                    Some(Ok(u)) => Some(u),
                    Some(Err(_)) => {
                        return self
                            .error(p, "bad_request", "before is not a message id".into(), None)
                            .await
                    }
                    None => None,
                };
                self.send_history(p, before, limit.unwrap_or(HISTORY_ON_JOIN).clamp(1, 200))
                    .await;
            }
        }
    }
}
