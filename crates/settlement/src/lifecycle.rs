//! When a room's paid session ends (DESIGN.md section 6), as a pure state machine the room task drives: a
//! participant presses End (at once), every party has left on purpose (at once: the room is closed), a
//! participant disconnects or leaves and does not come back within the grace period, or a participant sends no
//! heartbeat for the heartbeat timeout. Time is passed in, so tests need no clock.
//!
//! A deliberate leave and a disconnect differ only while someone is still missing: both start the grace period
//! for that party, but once the last party present leaves on purpose nobody is waited for, while a lost
//! connection is always given the grace period to come back (a network blip must not end a paid call).
//!
//! The room feeds [`PaidSessionTracker::on_event`] and arms one timer at [`PaidSessionTracker::next_deadline`],
//! calling [`PaidSessionTracker::poll`] when it fires. The first `Some(reason)` is the end: record it with
//! [`crate::repo::end_paid_session`] and wake the settlement worker.

use std::time::{Duration, Instant};

use crate::repo::EndReason;

/// The two parties of a paid session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// Pays.
    Student,
    /// Is paid.
    Tutor,
}

/// How long absences are tolerated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndPolicy {
    /// A disconnected party has this long to come back.
    pub disconnect_grace: Duration,
    /// A connected party that sends no heartbeat for this long is treated as gone.
    pub heartbeat_timeout: Duration,
}

impl Default for EndPolicy {
    /// 30 s grace, 2 min heartbeat timeout.
    fn default() -> Self {
        Self {
            disconnect_grace: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(120),
        }
    }
}

/// What the room saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceEvent {
    /// A party pressed End.
    EndPressed(Party),
    /// A party left on purpose (`leave`, the Leave button): when every party has, the session ends at once, as
    /// [`EndReason::ParticipantEnded`] (the parties ended it; the `end_reason` column has no other value for
    /// it); otherwise this party has the grace period to come back, as after a disconnect.
    Left(Party),
    /// A party's connection closed (socket lost, participant gone past the resume grace): the party has the
    /// grace period to come back.
    Disconnected(Party),
    /// A party (re)connected.
    Connected(Party),
    /// A heartbeat from a party.
    Heartbeat(Party),
}

/// One party's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    /// Connected; last heartbeat (or connection) at this instant.
    Here { last_seen: Instant },
    /// Disconnected since this instant.
    Away { since: Instant },
    /// Left on purpose since this instant (or disconnected since then and then left).
    Left { since: Instant },
}

/// Decides when a paid session ends. Once it has ended it stays ended.
#[derive(Debug, Clone)]
pub struct PaidSessionTracker {
    /// Time limits.
    policy: EndPolicy,
    /// Student, tutor.
    parties: [Presence; 2],
    /// Set once, by the first end condition.
    ended: Option<EndReason>,
}

impl PaidSessionTracker {
    /// A session that starts at `now` with both parties connected.
    pub fn new(policy: EndPolicy, now: Instant) -> Self {
        let here = Presence::Here { last_seen: now };
        Self {
            policy,
            parties: [here, here],
            ended: None,
        }
    }

    /// Why it ended, if it has.
    pub fn ended(&self) -> Option<EndReason> {
        self.ended
    }

    /// Apply an event seen at `now`; returns the end reason if the session ends now (only once).
    pub fn on_event(&mut self, event: PresenceEvent, now: Instant) -> Option<EndReason> {
        if self.ended.is_some() {
            return None;
        }
        if let Some(reason) = self.expired(now) {
            return self.end(reason);
        }
        match event {
            PresenceEvent::EndPressed(_) => return self.end(EndReason::ParticipantEnded),
            PresenceEvent::Left(p) => {
                let since = match self.parties[idx(p)] {
                    Presence::Here { .. } => now,
                    Presence::Away { since } | Presence::Left { since } => since,
                };
                self.parties[idx(p)] = Presence::Left { since };
                if self
                    .parties
                    .iter()
                    .all(|p| matches!(p, Presence::Left { .. }))
                {
                    // The room is closed on purpose: ending it is what every party asked for.
                    return self.end(EndReason::ParticipantEnded);
                }
            }
            PresenceEvent::Disconnected(p) => {
                if matches!(self.parties[idx(p)], Presence::Here { .. }) {
                    self.parties[idx(p)] = Presence::Away { since: now };
                }
            }
            PresenceEvent::Connected(p) | PresenceEvent::Heartbeat(p) => {
                self.parties[idx(p)] = Presence::Here { last_seen: now };
            }
        }
        None
    }

    /// Check the deadlines at `now`; returns the end reason if one passed (only once).
    pub fn poll(&mut self, now: Instant) -> Option<EndReason> {
        if self.ended.is_some() {
            return None;
        }
        let reason = self.expired(now)?;
        self.end(reason)
    }

    /// The earliest instant at which [`poll`](Self::poll) may end the session; `None` once ended.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.ended.is_some() {
            return None;
        }
        self.parties.iter().map(|p| self.deadline(p).0).min()
    }

    fn deadline(&self, presence: &Presence) -> (Instant, EndReason) {
        match *presence {
            Presence::Here { last_seen } => (
                last_seen + self.policy.heartbeat_timeout,
                EndReason::HeartbeatTimeout,
            ),
            Presence::Away { since } | Presence::Left { since } => (
                since + self.policy.disconnect_grace,
                EndReason::Disconnected,
            ),
        }
    }

    fn expired(&self, now: Instant) -> Option<EndReason> {
        self.parties
            .iter()
            .map(|p| self.deadline(p))
            .filter(|(at, _)| *at <= now)
            .min_by_key(|(at, _)| *at)
            .map(|(_, reason)| reason)
    }

    fn end(&mut self, reason: EndReason) -> Option<EndReason> {
        self.ended = Some(reason);
        Some(reason)
    }
}

fn idx(p: Party) -> usize {
    match p {
        Party::Student => 0,
        Party::Tutor => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn start() -> (PaidSessionTracker, Instant) {
        let t0 = Instant::now();
        (PaidSessionTracker::new(EndPolicy::default(), t0), t0)
    }

    #[test]
    fn pressing_end_ends_at_once_and_only_once() {
        let (mut t, t0) = start();
        assert_eq!(
            t.on_event(PresenceEvent::EndPressed(Party::Tutor), t0 + S),
            Some(EndReason::ParticipantEnded)
        );
        assert_eq!(
            t.on_event(PresenceEvent::EndPressed(Party::Student), t0 + 2 * S),
            None
        );
        assert_eq!(t.poll(t0 + 1000 * S), None);
        assert_eq!(
            (t.ended(), t.next_deadline()),
            (Some(EndReason::ParticipantEnded), None)
        );
    }

    #[test]
    fn a_party_back_within_the_grace_period_keeps_the_session() {
        let (mut t, t0) = start();
        t.on_event(PresenceEvent::Disconnected(Party::Student), t0 + 10 * S);
        assert_eq!(t.next_deadline(), Some(t0 + 40 * S));
        assert_eq!(t.poll(t0 + 39 * S), None);
        assert_eq!(
            t.on_event(PresenceEvent::Connected(Party::Student), t0 + 39 * S),
            None
        );
        assert_eq!(t.poll(t0 + 41 * S), None);
    }

    #[test]
    fn a_party_gone_past_the_grace_period_ends_it_as_disconnected() {
        let (mut t, t0) = start();
        t.on_event(PresenceEvent::Disconnected(Party::Tutor), t0 + 10 * S);
        // A second close (another tab) does not restart the grace period.
        t.on_event(PresenceEvent::Disconnected(Party::Tutor), t0 + 20 * S);
        assert_eq!(t.poll(t0 + 40 * S), Some(EndReason::Disconnected));
    }

    #[test]
    fn silence_past_the_heartbeat_timeout_ends_it_even_while_connected() {
        let (mut t, t0) = start();
        t.on_event(PresenceEvent::Heartbeat(Party::Tutor), t0 + 100 * S);
        assert_eq!(
            t.next_deadline(),
            Some(t0 + 120 * S),
            "the student has been silent since the start"
        );
        assert_eq!(t.poll(t0 + 119 * S), None);
        assert_eq!(t.poll(t0 + 120 * S), Some(EndReason::HeartbeatTimeout));
    }

    #[test]
    fn every_party_leaving_on_purpose_ends_it_at_once() {
        let (mut t, t0) = start();
        assert_eq!(
            t.on_event(PresenceEvent::Left(Party::Student), t0 + S),
            None,
            "the tutor is still there"
        );
        assert_eq!(
            t.on_event(PresenceEvent::Left(Party::Tutor), t0 + 2 * S),
            Some(EndReason::ParticipantEnded),
            "the room is closed: no grace period"
        );
        assert_eq!((t.poll(t0 + 1000 * S), t.next_deadline()), (None, None));
    }

    #[test]
    fn a_party_that_left_alone_has_the_grace_period_to_come_back() {
        let (mut t, t0) = start();
        t.on_event(PresenceEvent::Left(Party::Tutor), t0 + 10 * S);
        assert_eq!(t.next_deadline(), Some(t0 + 40 * S));
        assert_eq!(t.poll(t0 + 39 * S), None);
        t.on_event(PresenceEvent::Connected(Party::Tutor), t0 + 39 * S);
        assert_eq!(t.poll(t0 + 41 * S), None, "back in time");
        t.on_event(PresenceEvent::Left(Party::Tutor), t0 + 50 * S);
        assert_eq!(t.poll(t0 + 80 * S), Some(EndReason::Disconnected));
    }

    #[test]
    fn a_leave_while_the_other_party_is_only_disconnected_still_waits_for_the_grace_period() {
        let (mut t, t0) = start();
        t.on_event(PresenceEvent::Disconnected(Party::Student), t0 + 10 * S);
        assert_eq!(
            t.on_event(PresenceEvent::Left(Party::Tutor), t0 + 11 * S),
            None,
            "the student may come back"
        );
        assert_eq!(t.next_deadline(), Some(t0 + 40 * S));
        assert_eq!(t.poll(t0 + 39 * S), None);
        assert_eq!(t.poll(t0 + 40 * S), Some(EndReason::Disconnected));
    }

    #[test]
    fn a_disconnect_then_a_leave_of_the_same_party_keeps_the_first_instant() {
        let (mut t, t0) = start();
        t.on_event(PresenceEvent::Disconnected(Party::Tutor), t0 + 10 * S);
        // The tutor's leave arrives later (another backend's report): the grace still runs from the disconnect.
        t.on_event(PresenceEvent::Left(Party::Tutor), t0 + 20 * S);
        assert_eq!(t.next_deadline(), Some(t0 + 40 * S));
        // Then the student leaves on purpose too: everyone has, so it ends at once.
        assert_eq!(
            t.on_event(PresenceEvent::Left(Party::Student), t0 + 21 * S),
            Some(EndReason::ParticipantEnded)
        );
    }

    #[test]
    fn a_rejoin_before_the_last_party_leaves_keeps_the_session() {
        let (mut t, t0) = start();
        t.on_event(PresenceEvent::Left(Party::Student), t0 + S);
        t.on_event(PresenceEvent::Connected(Party::Student), t0 + 2 * S);
        assert_eq!(
            t.on_event(PresenceEvent::Left(Party::Tutor), t0 + 3 * S),
            None,
            "the student is back in the room"
        );
    }

    #[test]
    fn an_event_arriving_after_a_missed_deadline_still_ends_the_session() {
        let (mut t, t0) = start();
        t.on_event(PresenceEvent::Disconnected(Party::Student), t0);
        // The timer fired late: a reconnect after the grace period does not revive the session.
        assert_eq!(
            t.on_event(PresenceEvent::Connected(Party::Student), t0 + 31 * S),
            Some(EndReason::Disconnected)
        );
    }
}
