//! A participant's event mailbox: the media plane's [`SfuEvent`]s on their way to the
//! participant's signaling session.
//!
//! Most events a participant receives are caused by others (a neighbour's mute toggle, the
//! active speakers, the layers subscribers want). A plain bounded queue lets noisy neighbours
//! fill it, and removing whoever's queue fills punishes the wrong participant. So:
//!
//! - **State events coalesce**: an event that only says what some state is now replaces a queued
//!   one about the same subject that the session has not taken yet ([`SfuEvent::TrackMuted`]
//!   per track, [`SfuEvent::ActiveSpeakers`], [`SfuEvent::PublisherLayers`] and
//!   [`SfuEvent::PublisherPaused`] per source). However fast a neighbour toggles, a reader holds
//!   at most one pending mute event per track, and it carries the latest state.
//! - **A backlog is the reader's own fault**: [`EventSender::send`] refuses with
//!   [`Backlog::Stalled`] only when the oldest queued event has waited [`STALLED_AFTER`] (the
//!   session stopped reading for seconds), or with [`Backlog::Full`] past the memory bound
//!   [`MAX_QUEUED`]. Others' noise alone cannot reach either: what it adds coalesces.
//! - Nothing else is dropped: every event a participant that stays is sent arrives, in order.
//!
//! One short lock per participant, held only to push or pop; no global lock. Signaling rate, not
//! per packet.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::api::SfuEvent;

/// The session has not taken the oldest queued event for this long: it stopped reading, and the
/// participant is removed ([`Backlog::Stalled`]). A session that awaits a slow call for a
/// moment is far below it.
pub const STALLED_AFTER: Duration = Duration::from_secs(10);

/// Most events queued for one participant (memory bound; events that coalesce never get near
/// it: at most one per track or source).
pub const MAX_QUEUED: usize = 4096;

/// Why [`EventSender::send`] refused an event: the participant must be removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backlog {
    /// The oldest queued event waited [`STALLED_AFTER`]: the session stopped reading.
    Stalled,
    /// [`MAX_QUEUED`] events wait.
    Full,
    /// The receiving session is gone.
    Closed,
}

struct State {
    queue: VecDeque<(Instant, SfuEvent)>,
    receiver_gone: bool,
    sender_gone: bool,
}

struct Shared {
    state: Mutex<State>,
    notify: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves a consistent queue (push/pop only).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The media plane's end: held by the participant (one sender per mailbox).
pub struct EventSender {
    shared: Arc<Shared>,
}

/// The signaling session's end.
pub struct EventReceiver {
    shared: Arc<Shared>,
}

/// A new mailbox.
pub fn mailbox() -> (EventSender, EventReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            receiver_gone: false,
            sender_gone: false,
        }),
        notify: Notify::new(),
    });
    (
        EventSender {
            shared: Arc::clone(&shared),
        },
        EventReceiver { shared },
    )
}

/// Whether `queued` says the same kind of state about the same subject as `ev`, so that `ev`
/// replaces it.
fn supersedes(ev: &SfuEvent, queued: &SfuEvent) -> bool {
    match (ev, queued) {
        (SfuEvent::TrackMuted { track: a, .. }, SfuEvent::TrackMuted { track: b, .. }) => a == b,
        (SfuEvent::ActiveSpeakers(_), SfuEvent::ActiveSpeakers(_)) => true,
        (
            SfuEvent::PublisherLayers { source: a, .. },
            SfuEvent::PublisherLayers { source: b, .. },
        ) => a == b,
        (
            SfuEvent::PublisherPaused { source: a, .. },
            SfuEvent::PublisherPaused { source: b, .. },
        ) => a == b,
        _ => false,
    }
}

/// Whether `queued` is an event about `ev`'s subject that must stay ordered before it (a track
/// published or unpublished before its mute state changed): the search for an event to
/// replace stops there.
fn orders_before(ev: &SfuEvent, queued: &SfuEvent) -> bool {
    match (ev, queued) {
        (SfuEvent::TrackMuted { track, .. }, SfuEvent::TrackPublished(info)) => &info.id == track,
        (SfuEvent::TrackMuted { track, .. }, SfuEvent::TrackUnpublished(t)) => t == track,
        _ => false,
    }
}

impl EventSender {
    /// Queues `ev` (queued at `now`), replacing a pending event it supersedes (see the module
    /// docs). Errors: [`Backlog`] — the participant must be removed; `ev` is dropped.
    pub fn send(&self, ev: SfuEvent, now: Instant) -> Result<(), Backlog> {
        let mut s = self.shared.lock();
        if s.receiver_gone {
            return Err(Backlog::Closed);
        }
        if let Some((at, _)) = s.queue.front() {
            if now.saturating_duration_since(*at) >= STALLED_AFTER {
                return Err(Backlog::Stalled);
            }
        }
        let len = s.queue.len();
        let slot = s
            .queue
            .iter_mut()
            .rev()
            .take_while(|(_, q)| !orders_before(&ev, q))
            .find(|(_, q)| supersedes(&ev, q));
        match slot {
            // Keeps its place (and age): the reader sees the latest state where it would have
            // seen the first.
            Some((_, q)) => *q = ev,
            None if len >= MAX_QUEUED => return Err(Backlog::Full),
            None => s.queue.push_back((now, ev)),
        }
        drop(s);
        self.shared.notify.notify_one();
        Ok(())
    }

    /// Events waiting now.
    pub fn len(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for EventSender {
    fn drop(&mut self) {
        self.shared.lock().sender_gone = true;
        self.shared.notify.notify_one();
    }
}

impl std::fmt::Debug for EventSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSender")
            .field("queued", &self.len())
            .finish()
    }
}

impl EventReceiver {
    /// The next event; `None` once the sender is gone and everything queued was taken.
    /// Cancel-safe (an event is taken only when this returns it).
    pub async fn recv(&mut self) -> Option<SfuEvent> {
        loop {
            {
                let mut s = self.shared.lock();
                if let Some((_, ev)) = s.queue.pop_front() {
                    return Some(ev);
                }
                if s.sender_gone {
                    return None;
                }
            }
            // A notification between the check and here is kept as a permit.
            self.shared.notify.notified().await;
        }
    }

    /// The next event if one waits now.
    pub fn try_recv(&mut self) -> Option<SfuEvent> {
        self.shared.lock().queue.pop_front().map(|(_, ev)| ev)
    }
}

impl Drop for EventReceiver {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.receiver_gone = true;
        s.queue.clear();
    }
}

impl std::fmt::Debug for EventReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReceiver").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CloseReason;
    use crate::ids::{ParticipantId, TrackId, TrackSource};

    fn muted(track: &TrackId, muted: bool) -> SfuEvent {
        SfuEvent::TrackMuted {
            track: track.clone(),
            source: TrackSource::Microphone,
            muted,
        }
    }

    #[test]
    fn a_neighbours_mute_flood_leaves_one_event_per_track_with_the_latest_state() {
        let (tx, mut rx) = mailbox();
        let now = Instant::now();
        let a = TrackId {
            participant: ParticipantId(rand::random()),
            mid: "0".into(),
        };
        let b = TrackId {
            participant: ParticipantId(rand::random()),
            mid: "1".into(),
        };
        tx.send(
            SfuEvent::ParticipantLeft(ParticipantId(rand::random())),
            now,
        )
        .unwrap();
        for i in 0..10_000 {
            tx.send(muted(&a, i % 2 == 0), now).unwrap();
            tx.send(muted(&b, i % 3 == 0), now).unwrap();
        }
        assert_eq!(tx.len(), 3, "one event per track, after what came first");
        assert!(matches!(rx.try_recv(), Some(SfuEvent::ParticipantLeft(_))));
        assert!(matches!(
            rx.try_recv(),
            Some(SfuEvent::TrackMuted { muted: false, .. })
        ));
        assert!(matches!(
            rx.try_recv(),
            Some(SfuEvent::TrackMuted { muted: true, .. })
        ));
        assert!(rx.try_recv().is_none());
    }

    #[test]
    fn a_mute_after_the_tracks_publication_is_not_moved_before_it() {
        let (tx, mut rx) = mailbox();
        let now = Instant::now();
        let a = TrackId {
            participant: ParticipantId(rand::random()),
            mid: "0".into(),
        };
        tx.send(muted(&a, true), now).unwrap();
        tx.send(SfuEvent::TrackUnpublished(a.clone()), now).unwrap();
        tx.send(muted(&a, false), now).unwrap();
        assert_eq!(tx.len(), 3);
        assert!(matches!(
            rx.try_recv(),
            Some(SfuEvent::TrackMuted { muted: true, .. })
        ));
        assert!(matches!(rx.try_recv(), Some(SfuEvent::TrackUnpublished(_))));
        assert!(matches!(
            rx.try_recv(),
            Some(SfuEvent::TrackMuted { muted: false, .. })
        ));
    }

    #[test]
    fn only_a_reader_that_stopped_reading_for_seconds_is_refused() {
        let (tx, mut rx) = mailbox();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        for i in 0..100 {
            tx.send(
                SfuEvent::ParticipantLeft(ParticipantId(rand::random())),
                at(i / 20),
            )
            .unwrap();
        }
        // A reader that drains keeps its mailbox young.
        while rx.try_recv().is_some() {}
        tx.send(SfuEvent::RoomLocked(true), at(9)).unwrap();
        tx.send(SfuEvent::RoomLocked(false), at(18)).unwrap();
        assert_eq!(
            tx.send(SfuEvent::RoomLocked(true), at(19)),
            Err(Backlog::Stalled),
            "the oldest event waited 10 s"
        );
        drop(rx);
        assert_eq!(
            tx.send(SfuEvent::RoomLocked(true), at(19)),
            Err(Backlog::Closed)
        );
    }

    #[test]
    fn the_memory_bound_holds_for_events_that_do_not_coalesce() {
        let (tx, _rx) = mailbox();
        let now = Instant::now();
        for _ in 0..MAX_QUEUED {
            tx.send(
                SfuEvent::ParticipantLeft(ParticipantId(rand::random())),
                now,
            )
            .unwrap();
        }
        assert_eq!(
            tx.send(
                SfuEvent::ParticipantLeft(ParticipantId(rand::random())),
                now
            ),
            Err(Backlog::Full)
        );
    }

    #[tokio::test]
    async fn the_reader_wakes_for_an_event_and_ends_after_the_last_one() {
        let (tx, mut rx) = mailbox();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(ev) = rx.recv().await {
                got.push(ev);
            }
            got
        });
        tokio::task::yield_now().await;
        tx.send(SfuEvent::RoomLocked(true), Instant::now()).unwrap();
        tx.send(SfuEvent::Closed(CloseReason::Resumed), Instant::now())
            .unwrap();
        drop(tx);
        let got = reader.await.unwrap();
        assert_eq!(got.len(), 2);
    }
}
