//! 1:1 call records: methods on [`Db`] over the `calls` table (`migrations/0003_calls.sql`).
//!
//! A call moves through [`CallStatus`]; [`Db::transition_call`] is a compare-and-set on the
//! current status, so two racing updates (say, "answered" and "timed out") cannot both win.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use crate::{Db, StoreError};

/// Where a call is in its life. Transitions (anything else is refused):
///
/// ```text
/// pending ──► ringing ──► ongoing ──► ended
///    │           │  ╲
///    │           │   ╰──► rejected
///    │           ╰──────► missed
///    ╰──► ongoing | rejected | missed   (answered/refused before the ring was recorded)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallStatus {
    /// Created by the caller; the callee has not been reached yet.
    Pending,
    /// The callee is being notified.
    Ringing,
    /// The callee answered; media may flow.
    Ongoing,
    /// An answered call finished (terminal).
    Ended,
    /// The callee declined (terminal).
    Rejected,
    /// Never answered: no answer in time, callee offline, or the caller gave up (terminal).
    Missed,
}

impl CallStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [CallStatus; 6] = [
        CallStatus::Pending,
        CallStatus::Ringing,
        CallStatus::Ongoing,
        CallStatus::Ended,
        CallStatus::Rejected,
        CallStatus::Missed,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Pending => "pending",
            CallStatus::Ringing => "ringing",
            CallStatus::Ongoing => "ongoing",
            CallStatus::Ended => "ended",
            CallStatus::Rejected => "rejected",
            CallStatus::Missed => "missed",
        }
    }

    /// Parses a stored name; `None` for anything else.
    pub fn parse(s: &str) -> Option<CallStatus> {
        CallStatus::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether the call is over (no transition leaves this status).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            CallStatus::Ended | CallStatus::Rejected | CallStatus::Missed
        )
    }

    /// The statuses a call may move to `self` from.
    pub fn predecessors(self) -> &'static [CallStatus] {
        use CallStatus::*;
        match self {
            Pending => &[],
            Ringing => &[Pending],
            Ongoing | Rejected | Missed => &[Pending, Ringing],
            Ended => &[Ongoing],
        }
    }

    /// Whether a call in status `self` may move to `to`.
    pub fn can_become(self, to: CallStatus) -> bool {
        to.predecessors().contains(&self)
    }
}

impl fmt::Display for CallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A call to record.
#[derive(Debug, Clone)]
pub struct NewCall {
    /// The room the call takes place in.
    pub room_id: String,
    /// Who placed the call (user id).
    pub caller_id: String,
    /// Who is called (user id).
    pub callee_id: String,
}

/// A call as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// Server id: UUID v7, sorts by creation time.
    pub id: Uuid,
    /// The room of the call.
    pub room_id: String,
    /// Who placed it.
    pub caller_id: String,
    /// Who was called.
    pub callee_id: String,
    /// Where it is in its life.
    pub status: CallStatus,
    /// When it was placed (UTC, microsecond precision).
    pub created_at: DateTime<Utc>,
    /// Last status change.
    pub updated_at: DateTime<Utc>,
    /// When it was answered (became ongoing).
    pub answered_at: Option<DateTime<Utc>>,
    /// When it reached a terminal status.
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it ended, as the server put it (`hangup`, `timeout`, …).
    pub end_reason: Option<String>,
}

impl CallRecord {
    /// How long the answered part lasted: from answer to end (`None` if never answered or not
    /// over yet).
    pub fn duration(&self) -> Option<Duration> {
        (self.ended_at? - self.answered_at?).to_std().ok()
    }
}

#[derive(sqlx::FromRow)]
struct CallRow {
    id: Uuid,
    room_id: String,
    caller_id: String,
    callee_id: String,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    answered_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    end_reason: Option<String>,
}

impl TryFrom<CallRow> for CallRecord {
    type Error = StoreError;

    fn try_from(row: CallRow) -> Result<Self, StoreError> {
        let status = CallStatus::parse(&row.status).ok_or_else(|| {
            StoreError::Database(sqlx::Error::Decode(
                format!("unknown call status {:?}", row.status).into(),
            ))
        })?;
        Ok(CallRecord {
            id: row.id,
            room_id: row.room_id,
            caller_id: row.caller_id,
            callee_id: row.callee_id,
            status,
            created_at: row.created_at,
            updated_at: row.updated_at,
            answered_at: row.answered_at,
            ended_at: row.ended_at,
            end_reason: row.end_reason,
        })
    }
}

macro_rules! call_cols {
    () => {
        "id, room_id, caller_id, callee_id, status, created_at, updated_at, answered_at, \
         ended_at, end_reason"
    };
}

const INSERT_CALL: &str = concat!(
    "INSERT INTO calls (id, room_id, caller_id, callee_id, status, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, 'pending', $5, $5) RETURNING ",
    call_cols!()
);
const CALL_BY_ID: &str = concat!("SELECT ", call_cols!(), " FROM calls WHERE id = $1");
/// `$5`/`$6` are the allowed current statuses (the same one twice when there is one).
const TRANSITION: &str = concat!(
    "UPDATE calls SET status = $2, updated_at = $3, \
     answered_at = COALESCE($4, answered_at), ended_at = COALESCE($7, ended_at), \
     end_reason = COALESCE($8, end_reason) \
     WHERE id = $1 AND status IN ($5, $6) RETURNING ",
    call_cols!()
);
const CALLS_OF_USER: &str = concat!(
    "SELECT ",
    call_cols!(),
    " FROM calls WHERE (caller_id = $1 OR callee_id = $1) AND ($3 IS NULL OR id < $3) \
     ORDER BY id DESC LIMIT $2"
);

/// Most records one [`Db::calls_of_user`] call returns.
pub const CALLS_MAX_LIMIT: u32 = 200;

impl Db {
    /// Records a new call in status [`CallStatus::Pending`].
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the database is unreachable.
    pub async fn create_call(&self, call: NewCall) -> Result<CallRecord, StoreError> {
        self.run(async {
            let row: CallRow = on_db!(self, |pool| {
                sqlx::query_as(INSERT_CALL)
                    .bind(Uuid::now_v7())
                    .bind(&call.room_id)
                    .bind(&call.caller_id)
                    .bind(&call.callee_id)
                    .bind(Utc::now().trunc_subsecs(6))
                    .fetch_one(pool)
                    .await
            })
            .map_err(StoreError::from_sqlx)?;
            row.try_into()
        })
        .await
    }

    /// One call by id.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::Unavailable`].
    pub async fn call(&self, id: Uuid) -> Result<CallRecord, StoreError> {
        self.run(self.find_call(id)).await
    }

    /// Moves a call to status `to` (setting `answered_at` on [`CallStatus::Ongoing`], `ended_at`
    /// and `end_reason` on a terminal status). Atomic: it applies only if the call is, at that
    /// moment, in a status allowed to become `to`. Moving a call to the status it already has
    /// changes nothing and returns it (so a retried request is harmless).
    ///
    /// # Errors
    /// [`StoreError::InvalidTransition`] if the current status cannot become `to`;
    /// [`StoreError::NotFound`]; [`StoreError::Unavailable`].
    pub async fn transition_call(
        &self,
        id: Uuid,
        to: CallStatus,
        end_reason: Option<&str>,
    ) -> Result<CallRecord, StoreError> {
        let from = to.predecessors();
        let Some(&first) = from.first() else {
            // Nothing becomes pending: only report what the call is.
            let current = self.call(id).await?;
            return if current.status == to {
                Ok(current)
            } else {
                Err(StoreError::InvalidTransition {
                    from: current.status,
                    to,
                })
            };
        };
        let second = from.get(1).copied().unwrap_or(first);
        self.run(async {
            let at = Utc::now().trunc_subsecs(6);
            let answered_at = (to == CallStatus::Ongoing).then_some(at);
            let ended_at = to.is_terminal().then_some(at);
            let reason = end_reason.filter(|_| to.is_terminal());
            let row: Option<CallRow> = on_db!(self, |pool| {
                sqlx::query_as(TRANSITION)
                    .bind(id)
                    .bind(to.as_str())
                    .bind(at)
                    .bind(answered_at)
                    .bind(first.as_str())
                    .bind(second.as_str())
                    .bind(ended_at)
                    .bind(reason)
                    .fetch_optional(pool)
                    .await
            })
            .map_err(StoreError::from_sqlx)?;
            match row {
                Some(row) => row.try_into(),
                None => {
                    let current = self.find_call(id).await?;
                    if current.status == to {
                        Ok(current)
                    } else {
                        Err(StoreError::InvalidTransition {
                            from: current.status,
                            to,
                        })
                    }
                }
            }
        })
        .await
    }

    /// A user's calls (placed or received), newest first, at most `limit` (capped at
    /// [`CALLS_MAX_LIMIT`]), only those placed before call `before` when given (the next page).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn calls_of_user(
        &self,
        user_id: &str,
        limit: u32,
        before: Option<Uuid>,
    ) -> Result<Vec<CallRecord>, StoreError> {
        let limit = i64::from(limit.min(CALLS_MAX_LIMIT));
        self.run(async {
            let rows: Vec<CallRow> = on_db!(self, |pool| {
                sqlx::query_as(CALLS_OF_USER)
                    .bind(user_id)
                    .bind(limit)
                    .bind(before)
                    .fetch_all(pool)
                    .await
            })
            .map_err(StoreError::from_sqlx)?;
            rows.into_iter().map(CallRecord::try_from).collect()
        })
        .await
    }

    async fn find_call(&self, id: Uuid) -> Result<CallRecord, StoreError> {
        let row: Option<CallRow> = on_db!(self, |pool| {
            sqlx::query_as(CALL_BY_ID)
                .bind(id)
                .fetch_optional(pool)
                .await
        })
        .map_err(StoreError::from_sqlx)?;
        row.ok_or(StoreError::NotFound)?.try_into()
    }
}

#[cfg(test)]
mod tests {
    use super::CallStatus::{self, *};

    #[test]
    fn status_names_round_trip() {
        for s in CallStatus::ALL {
            assert_eq!(CallStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(CallStatus::parse("busy"), None);
    }

    #[test]
    fn only_the_drawn_transitions_are_allowed() {
        let allowed = [
            (Pending, Ringing),
            (Pending, Ongoing),
            (Pending, Rejected),
            (Pending, Missed),
            (Ringing, Ongoing),
            (Ringing, Rejected),
            (Ringing, Missed),
            (Ongoing, Ended),
        ];
        for from in CallStatus::ALL {
            for to in CallStatus::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} → {to}"
                );
            }
        }
    }

    #[test]
    fn terminal_statuses_lead_nowhere() {
        for from in CallStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            assert!(CallStatus::ALL.iter().all(|&to| !from.can_become(to)));
        }
    }
}
