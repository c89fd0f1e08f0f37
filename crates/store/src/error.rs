//! The one error type of every database operation, and the mapping from sqlx errors to it.

/// What went wrong in a database operation.
///
/// Callers branch on the variant: [`StoreError::Unavailable`] is transient (tell the user
/// "could not save, try again" and let them resend: inserts are idempotent), the others are
/// final answers for this request.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is too busy right now: connection refused or lost,
    /// pool acquire timeout, operation timeout, PostgreSQL shutting down or out of connections,
    /// SQLite busy/locked or out of disk. Retryable; nothing was acknowledged. (A write whose commit
    /// raced the failure may still have been stored: a resend with the same client message id
    /// returns it instead of storing it twice.)
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// No message with this id in this room.
    #[error("message not found")]
    NotFound,
    /// The message exists but belongs to another user: only its author may edit or delete it.
    #[error("only the author may change this message")]
    NotAuthor,
    /// The message was deleted; a tombstone cannot be edited or deleted again.
    #[error("message was deleted")]
    Deleted,
    /// The client message id is already used in this room by another user's message. The new
    /// message was not stored; the client should send it under a fresh id.
    #[error("client message id already used by another user in this room")]
    ClientMsgIdTaken,
    /// A call cannot move from its current status to the requested one (see
    /// [`CallStatus`](crate::CallStatus)); typically a race the other side already won.
    #[error("call cannot go from {from} to {to}")]
    InvalidTransition {
        /// The call's status when the change was attempted.
        from: crate::CallStatus,
        /// The status asked for.
        to: crate::CallStatus,
    },
    /// The database URL or options could not be parsed or applied (start-up configuration error).
    #[error("invalid database configuration: {0}")]
    Config(String),
    /// Applying the migrations failed (schema out of step with the code, or a broken migration).
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Any other database error: a bug or a schema mismatch, not fixed by retrying.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl StoreError {
    /// Whether retrying the same request later may succeed (only [`StoreError::Unavailable`]).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// Classifies a sqlx error as [`StoreError::Unavailable`] (transient: connection, protocol,
    /// pool, server shutting down, SQLite busy) or [`StoreError::Database`] (anything else).
    pub fn from_sqlx(err: sqlx::Error) -> Self {
        if is_transient(&err) {
            StoreError::Unavailable(err)
        } else {
            StoreError::Database(err)
        }
    }
}

/// PostgreSQL SQLSTATEs that mean "the server cannot serve this now", besides class 08
/// (connection exception): admin/crash shutdown, cannot connect now, too many connections,
/// serialization failure, deadlock.
const PG_TRANSIENT_STATES: &[&str] = &["57P01", "57P02", "57P03", "53300", "40001", "40P01"];

/// SQLite primary result codes that mean "storage unavailable now": BUSY, LOCKED, IOERR, FULL,
/// CANTOPEN. sqlx reports extended codes; the primary code is the low byte.
const SQLITE_TRANSIENT_CODES: &[i64] = &[5, 6, 10, 13, 14];

fn is_transient(err: &sqlx::Error) -> bool {
    use sqlx::Error as E;
    match err {
        // A protocol error is the connection's, not the query's: the peer answered the
        // handshake with garbage (a proxy or a server going down mid-connect; seen as
        // "unexpected response from SSLRequest" while a link to PostgreSQL was cut).
        E::PoolTimedOut
        | E::PoolClosed
        | E::Io(_)
        | E::Tls(_)
        | E::WorkerCrashed
        | E::Protocol(_) => true,
        E::Database(db) => {
            if db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some()
            {
                db.code()
                    .is_some_and(|c| c.starts_with("08") || PG_TRANSIENT_STATES.contains(&&*c))
            } else if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                db.code()
                    .and_then(|c| c.parse::<i64>().ok())
                    .is_some_and(|c| SQLITE_TRANSIENT_CODES.contains(&(c & 0xff)))
            } else {
                false
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_faults_are_retryable_and_query_faults_are_not() {
        for transient in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::Protocol("unexpected response from SSLRequest: 0x00".into()),
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        ] {
            assert!(StoreError::from_sqlx(transient).is_retryable());
        }
        assert!(!StoreError::from_sqlx(sqlx::Error::RowNotFound).is_retryable());
        assert!(!StoreError::from_sqlx(sqlx::Error::ColumnNotFound("x".into())).is_retryable());
    }
}
