//! The subscriber transport's offer/answer state machine (RFC 8829 section 3.2 roles: the server
//! always offers on this transport, the client always answers, so there is no glare).
//!
//! The room asks for a (re)negotiation whenever the set of forwarded tracks changes; the machine
//! decides whether an offer may go out now or must wait for the answer to the one in flight
//! (one offer at a time, never a second before the first is answered).

use std::time::{Duration, Instant};

/// How long the server waits for a `subscribe_answer` before it sends the same offer again.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// State of one subscriber transport's negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NegotiationState {
    /// No offer in flight.
    Stable,
    /// An offer was sent at `since`; `again` records that tracks changed meanwhile, so another
    /// offer must follow the answer.
    AwaitingAnswer {
        /// When the offer went out.
        since: Instant,
        /// Whether a new offer is needed once this one is answered.
        again: bool,
    },
}

/// An answer arrived while no offer was in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no subscribe offer is awaiting an answer")]
pub struct NoOfferPending;

impl NegotiationState {
    /// Tracks changed. Returns `true` when the caller must create and send an offer now (and
    /// the state is then `AwaitingAnswer`); `false` when one is in flight (it is queued).
    pub fn request_offer(&mut self, now: Instant) -> bool {
        match self {
            Self::Stable => {
                *self = Self::AwaitingAnswer {
                    since: now,
                    again: false,
                };
                true
            }
            Self::AwaitingAnswer { again, .. } => {
                *again = true;
                false
            }
        }
    }

    /// The client answered. Returns whether another offer must be sent now (the state is then
    /// `AwaitingAnswer` again). Error: [`NoOfferPending`].
    pub fn answer_received(&mut self, now: Instant) -> Result<bool, NoOfferPending> {
        match *self {
            Self::Stable => Err(NoOfferPending),
            Self::AwaitingAnswer { again: false, .. } => {
                *self = Self::Stable;
                Ok(false)
            }
            Self::AwaitingAnswer { again: true, .. } => {
                *self = Self::AwaitingAnswer {
                    since: now,
                    again: false,
                };
                Ok(true)
            }
        }
    }

    /// When the offer in flight times out, if any.
    pub fn deadline(&self) -> Option<Instant> {
        match self {
            Self::Stable => None,
            Self::AwaitingAnswer { since, .. } => Some(*since + ANSWER_TIMEOUT),
        }
    }

    /// Called when [`Self::deadline`] passed: returns `true` when the caller must send the
    /// offer in flight again (the state restarts its clock; changes queued meanwhile still get
    /// their offer after the answer).
    pub fn timed_out(&mut self, now: Instant) -> bool {
        match *self {
            Self::AwaitingAnswer { since, again } if since + ANSWER_TIMEOUT <= now => {
                *self = Self::AwaitingAnswer { since: now, again };
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_offer_at_a_time_and_changes_meanwhile_cause_exactly_one_more() {
        let t = Instant::now();
        let mut n = NegotiationState::Stable;
        assert!(n.request_offer(t));
        assert!(!n.request_offer(t));
        assert!(!n.request_offer(t));
        assert_eq!(
            n.answer_received(t),
            Ok(true),
            "changes while waiting: offer again"
        );
        assert_eq!(n.answer_received(t), Ok(false));
        assert_eq!(n, NegotiationState::Stable);
    }

    #[test]
    fn an_answer_without_an_offer_is_refused() {
        let mut n = NegotiationState::Stable;
        assert_eq!(n.answer_received(Instant::now()), Err(NoOfferPending));
    }

    #[test]
    fn an_unanswered_offer_times_out_and_is_resent() {
        let t = Instant::now();
        let mut n = NegotiationState::Stable;
        n.request_offer(t);
        assert!(!n.timed_out(t + Duration::from_secs(1)));
        assert!(n.timed_out(t + ANSWER_TIMEOUT));
        assert_eq!(n.deadline(), Some(t + ANSWER_TIMEOUT + ANSWER_TIMEOUT));
    }
}
