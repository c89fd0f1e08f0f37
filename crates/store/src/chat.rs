//! The chat repository: methods on [`Db`] over the `chat_messages` table
//! (`migrations/0001_chat_messages.sql`).
//!
//! Order: message ids are UUID v7 generated here, so they sort by creation time (monotonic within
//! the process); history and paging order by id. A message is acknowledged (an `Ok` returned) only
//! after its row is committed. Deleting keeps the row as a tombstone with the text blanked.

use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use crate::domain::{ChatText, ClientMsgId, MessageType};
use crate::{Db, StoreError};

/// Most messages one [`Db::history`] call returns; larger limits are capped to this.
pub const HISTORY_MAX_LIMIT: u32 = 200;

/// A message to store, already parsed.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The room it was sent in (the server's room id, as text).
    pub room_id: String,
    /// The author's stable user id (the one edit/delete are checked against).
    pub user_id: String,
    /// The author's display name at the time of sending.
    pub user_name: String,
    /// The text.
    pub text: ChatText,
    /// What kind of message it is.
    pub message_type: MessageType,
    /// The sender's id for it, unique per room: a resend under the same id is not stored twice.
    pub client_msg_id: ClientMsgId,
}

/// A message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Server id: UUID v7, sorts by creation time.
    pub id: Uuid,
    /// The room it belongs to.
    pub room_id: String,
    /// The author's user id.
    pub user_id: String,
    /// The author's display name when sending.
    pub user_name: String,
    /// The text; empty for a deleted message (a tombstone).
    pub text: String,
    /// What kind of message it is.
    pub message_type: MessageType,
    /// The sender's id for it.
    pub client_msg_id: String,
    /// When the server stored it (UTC, microsecond precision).
    pub created_at: DateTime<Utc>,
    /// Last edit or deletion; equals `created_at` if never changed.
    pub updated_at: DateTime<Utc>,
    /// When it was deleted; `Some` makes this a tombstone (render "message deleted").
    pub deleted_at: Option<DateTime<Utc>>,
}

impl StoredMessage {
    /// Whether this is a tombstone of a deleted message.
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }

    /// Whether the text was edited after sending (and the message is not deleted).
    pub fn is_edited(&self) -> bool {
        self.deleted_at.is_none() && self.updated_at != self.created_at
    }
}

/// Whether [`Db::insert_message`] stored a new row or found the one a previous send stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// A new row was stored: broadcast it to the room.
    Inserted,
    /// A resend: the message was already stored (same id and timestamp returned). Acknowledge it
    /// again to the sender; do not broadcast it a second time.
    Duplicate,
}

/// The row shape shared by both backends.
#[derive(sqlx::FromRow)]
struct MessageRow {
    id: Uuid,
    room_id: String,
    user_id: String,
    user_name: String,
    message: String,
    message_type: String,
    client_msg_id: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
}

impl TryFrom<MessageRow> for StoredMessage {
    type Error = StoreError;

    fn try_from(row: MessageRow) -> Result<Self, StoreError> {
        let message_type = MessageType::parse(&row.message_type)
            .map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))?;
        let text = if row.deleted_at.is_some() {
            String::new()
        } else {
            row.message
        };
        Ok(StoredMessage {
            id: row.id,
            room_id: row.room_id,
            user_id: row.user_id,
            user_name: row.user_name,
            text,
            message_type,
            client_msg_id: row.client_msg_id,
            created_at: row.created_at,
            updated_at: row.updated_at,
            deleted_at: row.deleted_at,
        })
    }
}

/// The columns of [`MessageRow`], in a `SELECT`/`RETURNING` list.
macro_rules! cols {
    () => {
        "id, room_id, user_id, user_name, message, message_type, client_msg_id, \
         created_at, updated_at, deleted_at"
    };
}

const INSERT: &str = concat!(
    "INSERT INTO chat_messages (id, room_id, user_id, user_name, message, message_type, \
     client_msg_id, created_at, updated_at, deleted_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, NULL) \
     ON CONFLICT (room_id, client_msg_id) DO NOTHING RETURNING ",
    cols!()
);
const BY_CLIENT_MSG_ID: &str = concat!(
    "SELECT ",
    cols!(),
    " FROM chat_messages WHERE room_id = $1 AND client_msg_id = $2"
);
const BY_ID: &str = concat!(
    "SELECT ",
    cols!(),
    " FROM chat_messages WHERE room_id = $1 AND id = $2"
);
const LATEST: &str = concat!(
    "SELECT ",
    cols!(),
    " FROM chat_messages WHERE room_id = $1 ORDER BY id DESC LIMIT $2"
);
const BEFORE: &str = concat!(
    "SELECT ",
    cols!(),
    " FROM chat_messages WHERE room_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
);
const EDIT: &str = concat!(
    "UPDATE chat_messages SET message = $4, updated_at = $5 \
     WHERE room_id = $1 AND id = $2 AND user_id = $3 AND deleted_at IS NULL RETURNING ",
    cols!()
);
const DELETE: &str = concat!(
    "UPDATE chat_messages SET message = '', updated_at = $4, deleted_at = $4 \
     WHERE room_id = $1 AND id = $2 AND user_id = $3 AND deleted_at IS NULL RETURNING ",
    cols!()
);

/// Now, truncated to what PostgreSQL stores (microseconds), so a value returned before and after
/// a round trip through the database is the same.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn into_messages(rows: Vec<MessageRow>) -> Result<Vec<StoredMessage>, StoreError> {
    rows.into_iter().map(StoredMessage::try_from).collect()
}

impl Db {
    /// Stores a message, idempotently on (`room_id`, `client_msg_id`).
    ///
    /// Returns the stored row and whether it is new. A resend by the same author returns the row
    /// the first send stored (same server id and `created_at`) with [`InsertOutcome::Duplicate`];
    /// there is never a second row. `Ok` means the row is committed: acknowledge it then.
    ///
    /// # Errors
    /// [`StoreError::ClientMsgIdTaken`] if another user's message in the room has this client
    /// message id; [`StoreError::Unavailable`] if the database is unreachable (safe to resend).
    pub async fn insert_message(
        &self,
        msg: NewMessage,
    ) -> Result<(StoredMessage, InsertOutcome), StoreError> {
        self.run(async {
            let id = Uuid::now_v7();
            let at = now();
            let inserted: Option<MessageRow> = on_db!(self, |pool| {
                sqlx::query_as(INSERT)
                    .bind(id)
                    .bind(&msg.room_id)
                    .bind(&msg.user_id)
                    .bind(&msg.user_name)
                    .bind(msg.text.as_str())
                    .bind(msg.message_type.as_str())
                    .bind(msg.client_msg_id.as_str())
                    .bind(at)
                    .fetch_optional(pool)
                    .await
            })
            .map_err(StoreError::from_sqlx)?;
            if let Some(row) = inserted {
                return Ok((row.try_into()?, InsertOutcome::Inserted));
            }
            // The unique key was taken: by our own earlier send, or by someone else's message.
            let existing: Option<MessageRow> = on_db!(self, |pool| {
                sqlx::query_as(BY_CLIENT_MSG_ID)
                    .bind(&msg.room_id)
                    .bind(msg.client_msg_id.as_str())
                    .fetch_optional(pool)
                    .await
            })
            .map_err(StoreError::from_sqlx)?;
            // Rows are never removed, so a conflicting row is still there.
            let existing: StoredMessage = existing.ok_or(StoreError::NotFound)?.try_into()?;
            if existing.user_id != msg.user_id {
                return Err(StoreError::ClientMsgIdTaken);
            }
            Ok((existing, InsertOutcome::Duplicate))
        })
        .await
    }

    /// The latest messages of a room, oldest first.
    ///
    /// Returns at most `limit` (capped at [`HISTORY_MAX_LIMIT`]) messages; with `before`, only
    /// messages strictly older than the message with that id (for paging back: pass the id of the
    /// oldest message the client has). Deleted messages come as tombstones (`deleted_at` set, text
    /// empty). An unknown room gives an empty list.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the database is unreachable.
    pub async fn history(
        &self,
        room_id: &str,
        before: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let limit = i64::from(limit.min(HISTORY_MAX_LIMIT));
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.run(async {
            let rows: Vec<MessageRow> = match before {
                None => on_db!(self, |pool| {
                    sqlx::query_as(LATEST)
                        .bind(room_id)
                        .bind(limit)
                        .fetch_all(pool)
                        .await
                }),
                Some(before) => on_db!(self, |pool| {
                    sqlx::query_as(BEFORE)
                        .bind(room_id)
                        .bind(before)
                        .bind(limit)
                        .fetch_all(pool)
                        .await
                }),
            }
            .map_err(StoreError::from_sqlx)?;
            let mut messages = into_messages(rows)?;
            messages.reverse();
            Ok(messages)
        })
        .await
    }

    /// One message of a room by id (a tombstone if deleted).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if the room has no such message; [`StoreError::Unavailable`].
    pub async fn message(&self, room_id: &str, id: Uuid) -> Result<StoredMessage, StoreError> {
        self.run(self.find(room_id, id)).await
    }

    /// Replaces the text of a message; only its author may. Returns the updated message
    /// (`updated_at` moved, `created_at` and position unchanged).
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::NotAuthor`], [`StoreError::Deleted`],
    /// [`StoreError::Unavailable`].
    pub async fn edit_message(
        &self,
        room_id: &str,
        id: Uuid,
        user_id: &str,
        text: ChatText,
    ) -> Result<StoredMessage, StoreError> {
        self.run(async {
            let updated: Option<MessageRow> = on_db!(self, |pool| {
                sqlx::query_as(EDIT)
                    .bind(room_id)
                    .bind(id)
                    .bind(user_id)
                    .bind(text.as_str())
                    .bind(now())
                    .fetch_optional(pool)
                    .await
            })
            .map_err(StoreError::from_sqlx)?;
            match updated {
                Some(row) => row.try_into(),
                None => Err(self.why_unchanged(room_id, id, user_id).await),
            }
        })
        .await
    }

    /// Deletes a message, leaving a tombstone (text blanked, `deleted_at` set); only its author
    /// may. Returns the tombstone.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::NotAuthor`], [`StoreError::Deleted`] (already
    /// deleted), [`StoreError::Unavailable`].
    pub async fn delete_message(
        &self,
        room_id: &str,
        id: Uuid,
        user_id: &str,
    ) -> Result<StoredMessage, StoreError> {
        self.run(async {
            let deleted: Option<MessageRow> = on_db!(self, |pool| {
                sqlx::query_as(DELETE)
                    .bind(room_id)
                    .bind(id)
                    .bind(user_id)
                    .bind(now())
                    .fetch_optional(pool)
                    .await
            })
            .map_err(StoreError::from_sqlx)?;
            match deleted {
                Some(row) => row.try_into(),
                None => Err(self.why_unchanged(room_id, id, user_id).await),
            }
        })
        .await
    }

    async fn find(&self, room_id: &str, id: Uuid) -> Result<StoredMessage, StoreError> {
        let row: Option<MessageRow> = on_db!(self, |pool| {
            sqlx::query_as(BY_ID)
                .bind(room_id)
                .bind(id)
                .fetch_optional(pool)
                .await
        })
        .map_err(StoreError::from_sqlx)?;
        row.ok_or(StoreError::NotFound)?.try_into()
    }

    /// Why a guarded update of (`room_id`, `id`) by `user_id` matched no row. Authors never change
    /// and deletions are final, so the answer cannot go stale between the update and this read.
    async fn why_unchanged(&self, room_id: &str, id: Uuid, user_id: &str) -> StoreError {
        match self.find(room_id, id).await {
            Ok(m) if m.user_id != user_id => StoreError::NotAuthor,
            Ok(_) => StoreError::Deleted,
            Err(e) => e,
        }
    }
}
