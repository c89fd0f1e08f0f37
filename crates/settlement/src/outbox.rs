//! The settlement outbox as a state machine, without I/O: what a settlement row may be, what the worker does
//! next with it, and how the result of an attempt changes it. The repository ([`crate::repo`]) stores it; the
//! worker ([`crate::worker`]) drives it.
//!
//! ```text
//!   Pending ──check chain, sign, store──▶ Signed{tx} ──broadcast, receipt──▶ Settled
//!      │          ▲                         │   │  └────────────────────────▶ EndedElsewhere (our tx lost a race)
//!      │          └──tx proven dead─────────┘   └─retry: rebroadcast the same tx, never a new one
//!      ├──chain shows it over─────────────────────────────────────────────────▶ EndedElsewhere
//!      └──permanent error─────────────────────────────────────────────────────▶ Failed   (also from Signed)
//!   transient error: same state, attempts + 1, next attempt after the back-off delay, forever
//! ```
//!
//! `Submitted{tx_hash}` is a row sent before signed transactions were stored (hash only): it is rechecked by
//! hash and, if the node no longer knows it, signed anew. Rows no longer go there.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    backoff::Backoff,
    client::{EndOutcome, EndedSession, Settled, SignedTx},
    error::ChainError,
    Address, TxHash, U256,
};

/// Where a settlement stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettlementState {
    /// Written with the end of the paid session; nothing sent yet.
    Pending,
    /// `endSession` is signed and stored (column state `submitted`, with `raw_tx`); it may or may not have
    /// reached the node. Every retry rebroadcasts exactly this transaction.
    Signed(SignedTx),
    /// A row from before signed transactions were stored: `endSession` was accepted with this hash, the raw
    /// transaction is unknown. Its outcome is not known yet.
    Submitted {
        /// Our transaction.
        tx_hash: TxHash,
    },
    /// Terminal: our transaction ended the session.
    Settled(Settled),
    /// Terminal: the chain showed the session already over (the student or tutor ended it, or a transaction of
    /// ours whose hash was lost in a crash). `ended` is the contract's record when the session id is known.
    EndedElsewhere {
        /// `sessionHistory(id)`.
        ended: Option<EndedSession>,
    },
    /// Terminal: a permanent error (transient ones are retried forever). Needs an operator.
    Failed {
        /// The last error, for people.
        reason: String,
    },
}

impl SettlementState {
    /// The `settlements.state` column value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Signed(_) | Self::Submitted { .. } => "submitted",
            Self::Settled(_) => "settled",
            Self::EndedElsewhere { .. } => "ended_elsewhere",
            Self::Failed { .. } => "failed",
        }
    }

    /// Whether the worker is done with it.
    pub fn is_terminal(&self) -> bool {
        !matches!(
            self,
            Self::Pending | Self::Signed(_) | Self::Submitted { .. }
        )
    }
}

/// One outbox row in domain form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// The row's id (UUID v7).
    pub id: Uuid,
    /// The paid session this settles.
    pub paid_session_id: Uuid,
    /// Whose session to end (`endSession(tutor)`).
    pub tutor: Address,
    /// The contract's session id, when known: guards against ending a newer session of the same tutor.
    pub chain_session_id: Option<U256>,
    /// Where it stands.
    pub state: SettlementState,
    /// Consecutive failed attempts so far (unbounded: transient failures are retried forever).
    pub attempts: u32,
    /// Not to be attempted before this instant.
    pub next_attempt_at: DateTime<Utc>,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
}

/// What one attempt must do, decided from the state alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    /// Check the chain, dry-run, sign, store, broadcast.
    Submit,
    /// Look up the stored transaction's receipt, else broadcast it again; sign anew only if it is proven dead.
    Rebroadcast(SignedTx),
    /// Look up our earlier transaction first; send again only if the node no longer knows it.
    Recheck(TxHash),
    /// Terminal: nothing to do.
    Nothing,
}

/// The new values of a row after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// New state.
    pub state: SettlementState,
    /// New count of consecutive failed attempts.
    pub attempts: u32,
    /// Earliest next attempt (unchanged meaning for terminal states: the time of the update).
    pub next_attempt_at: DateTime<Utc>,
    /// The error of this attempt, if it failed.
    pub last_error: Option<String>,
}

impl Settlement {
    /// What the next attempt does.
    pub fn next_step(&self) -> NextStep {
        match &self.state {
            SettlementState::Pending => NextStep::Submit,
            SettlementState::Signed(tx) => NextStep::Rebroadcast(tx.clone()),
            SettlementState::Submitted { tx_hash } => NextStep::Recheck(*tx_hash),
            _ => NextStep::Nothing,
        }
    }

    /// The row after an attempt that ended with `result`, at `now`. `sample` is the uniform `[0, 1)` jitter
    /// sample for the back-off (see [`Backoff::delay`]). The current state must already include a `Signed`
    /// recorded during the attempt: a transient failure keeps it, so the retry rebroadcasts that transaction.
    pub fn after_attempt(
        &self,
        result: Result<EndOutcome, &ChainError>,
        now: DateTime<Utc>,
        policy: &Backoff,
        sample: f64,
    ) -> Update {
        let done = |state| Update {
            state,
            attempts: self.attempts,
            next_attempt_at: now,
            last_error: None,
        };
        match result {
            Ok(EndOutcome::Settled(settled)) => done(SettlementState::Settled(settled)),
            Ok(EndOutcome::AlreadyEnded { ended }) => {
                done(SettlementState::EndedElsewhere { ended })
            }
            Err(err) if !err.is_transient() => Update {
                state: SettlementState::Failed {
                    reason: err.to_string(),
                },
                attempts: self.attempts + 1,
                next_attempt_at: now,
                last_error: Some(err.to_string()),
            },
            Err(err) => {
                let attempts = self.attempts.saturating_add(1);
                Update {
                    state: self.state.clone(),
                    attempts,
                    next_attempt_at: now + to_chrono(policy.delay(attempts, sample)),
                    last_error: Some(err.to_string()),
                }
            }
        }
    }

    /// This settlement with `update` applied.
    pub fn apply(mut self, update: Update) -> Self {
        self.state = update.state;
        self.attempts = update.attempts;
        self.next_attempt_at = update.next_attempt_at;
        self.last_error = update.last_error;
        self
    }
}

fn to_chrono(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Settlement {
        Settlement {
            id: Uuid::now_v7(),
            paid_session_id: Uuid::now_v7(),
            tutor: Address::repeat_byte(2),
            chain_session_id: Some(U256::from(7)),
            state: SettlementState::Pending,
            attempts: 0,
            next_attempt_at: DateTime::UNIX_EPOCH,
            last_error: None,
        }
    }

    fn policy() -> Backoff {
        Backoff {
            initial: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            multiplier: 2,
            jitter: 0.0,
        }
    }

    fn settled() -> Settled {
        Settled {
            tx_hash: TxHash::repeat_byte(9),
            block: 5,
            gas_used: 175_000,
            effective_gas_price_wei: 1,
            session_id: U256::from(7),
            duration_s: 30,
            total_paid: U256::from(30_000),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn a_pending_settlement_submits_and_a_submitted_one_rechecks_its_transaction() {
        let s = pending();
        assert_eq!(s.next_step(), NextStep::Submit);
        let s = Settlement {
            state: SettlementState::Submitted {
                tx_hash: TxHash::repeat_byte(1),
            },
            ..s
        };
        assert_eq!(s.next_step(), NextStep::Recheck(TxHash::repeat_byte(1)));
        let s = Settlement {
            state: SettlementState::Failed { reason: "x".into() },
            ..s
        };
        assert_eq!(s.next_step(), NextStep::Nothing);
    }

    #[test]
    fn success_and_already_ended_are_terminal_and_clear_the_error() {
        let s = Settlement {
            attempts: 2,
            last_error: Some("down".into()),
            ..pending()
        };
        let u = s.after_attempt(Ok(EndOutcome::Settled(settled())), now(), &policy(), 0.5);
        assert_eq!(u.state, SettlementState::Settled(settled()));
        assert!(u.state.is_terminal() && u.last_error.is_none());
        let u = s.after_attempt(
            Ok(EndOutcome::AlreadyEnded { ended: None }),
            now(),
            &policy(),
            0.5,
        );
        assert_eq!(u.state.as_str(), "ended_elsewhere");
    }

    fn signed() -> SignedTx {
        SignedTx {
            hash: TxHash::repeat_byte(3),
            nonce: 4,
            raw: vec![1, 2, 3].into(),
        }
    }

    #[test]
    fn a_signed_settlement_rebroadcasts_its_stored_transaction() {
        let s = Settlement {
            state: SettlementState::Signed(signed()),
            ..pending()
        };
        assert_eq!(s.next_step(), NextStep::Rebroadcast(signed()));
        assert_eq!(s.state.as_str(), "submitted");
        assert!(!s.state.is_terminal());
    }

    #[test]
    fn a_transient_error_keeps_the_signed_transaction_and_backs_off_forever_up_to_the_cap() {
        let err = ChainError::Unreachable("connection refused".into());
        let mut s = Settlement {
            state: SettlementState::Signed(signed()),
            ..pending()
        };
        let mut delays = vec![];
        for _ in 0..100 {
            let u = s.after_attempt(Err(&err), now(), &policy(), 0.0);
            s = s.apply(u);
            assert_eq!(s.state, SettlementState::Signed(signed()));
            delays.push((s.next_attempt_at - now()).num_seconds());
        }
        assert_eq!(delays[..5], [1, 2, 4, 8, 8]);
        assert!(delays.iter().all(|d| *d <= 8));
        assert_eq!(s.attempts, 100);
        assert!(s
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("connection refused")));
    }

    #[test]
    fn a_permanent_error_fails_at_once() {
        let err = ChainError::Reverted {
            reason: "Caller is not the student, tutor nor owner".into(),
        };
        let u = pending().after_attempt(Err(&err), now(), &policy(), 0.0);
        assert!(
            matches!(u.state, SettlementState::Failed { ref reason } if reason.contains("Caller is not"))
        );
        assert_eq!(u.attempts, 1);
    }
}
