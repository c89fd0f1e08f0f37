//! Active speaker detection from the publishers' own audio levels.
//!
//! Every Opus packet a browser sends carries the level of the audio it holds in the
//! `ssrc-audio-level` header extension (RFC 6464 section 3: one byte, the top bit a voice
//! activity flag, the lower 7 bits the level in -dBov, 0 the loudest and 127 silence). The
//! server never decodes audio: it reads that byte per packet into a [`LevelMeter`] (two adds, no
//! allocation) and, every [`TICK`], a room's [`SpeakerDetector`] turns the meters into an
//! ordered, debounced list of who is speaking, the way LiveKit and mediasoup's
//! `AudioLevelObserver` do:
//!
//! - A packet is *voiced* when its level is at or above [`SPEECH_LEVEL_DBOV`] (-40 dBov).
//! - Each tick, a participant's *activity* moves toward the share of its packets that were
//!   voiced in that tick (an exponential average, weight [`SMOOTHING`]); a muted or silent
//!   microphone (no packets, or all at 127) counts as 0, and a muted track's activity is reset.
//! - Someone becomes active at an activity of [`ENTER`] (about 0.5 s of continuous speech) and
//!   stops being active below [`LEAVE`] (about 1.5 s after they stop): short pauses between
//!   words do not make the list flap.
//! - The list is ordered loudest (most active) first; the first place changes hands only when
//!   the newcomer's activity is [`DOMINANCE_MARGIN`] above the current first's, or the current
//!   first stops speaking.
//! - A changed list is announced at most once per [`MIN_ANNOUNCE_INTERVAL`] (a change held back
//!   goes out at the next tick allowed).

use crate::ids::ParticipantId;
use std::time::{Duration, Instant};

/// How often a room's detector turns the meters into a list.
pub const TICK: Duration = Duration::from_millis(250);
/// Loudest level in -dBov that still counts as silence (RFC 6464 levels: 0 = 0 dBov, the
/// loudest; 127 = -127 dBov or below): packets at -40 dBov or louder are voiced.
pub const SPEECH_LEVEL_DBOV: u8 = 40;
/// Weight of the newest tick in the activity average (0..1).
pub const SMOOTHING: f32 = 0.3;
/// Activity (0..1) at which a participant becomes an active speaker.
pub const ENTER: f32 = 0.45;
/// Activity below which an active speaker stops being one.
pub const LEAVE: f32 = 0.15;
/// How far above the current first speaker's activity a newcomer must be to take first place.
pub const DOMINANCE_MARGIN: f32 = 0.2;
/// Least time between two announcements of the list.
pub const MIN_ANNOUNCE_INTERVAL: Duration = Duration::from_millis(500);
/// Most speakers one announcement lists.
pub const MAX_SPEAKERS: usize = 3;

/// One audio track's levels since the last tick. `observe` is on the forwarding path: no
/// allocation, no branch beyond the threshold.
#[derive(Debug, Default, Clone, Copy)]
pub struct LevelMeter {
    packets: u32,
    voiced: u32,
    /// Sum over the voiced packets of their loudness, 127 - level.
    loudness: u32,
}

impl LevelMeter {
    /// One packet's `ssrc-audio-level` byte (RFC 6464 section 3; the V flag is ignored: browsers
    /// set it from their own voice activity detection, which is off in many).
    pub fn observe(&mut self, byte: u8) {
        let level = byte & 0x7f;
        self.packets += 1;
        if level <= SPEECH_LEVEL_DBOV {
            self.voiced += 1;
            self.loudness += u32::from(127 - level);
        }
    }

    /// The share of voiced packets (0..1) and their mean loudness (0..1, 1 = 0 dBov) since the
    /// last call, which starts a new window.
    pub fn take(&mut self) -> (f32, f32) {
        let m = std::mem::take(self);
        if m.packets == 0 {
            return (0.0, 0.0);
        }
        let share = m.voiced as f32 / m.packets as f32;
        let loudness = if m.voiced == 0 {
            0.0
        } else {
            m.loudness as f32 / m.voiced as f32 / 127.0
        };
        (share, loudness)
    }
}

/// One participant's smoothed state.
#[derive(Debug, Clone, Copy)]
struct Speaker {
    id: ParticipantId,
    activity: f32,
    loudness: f32,
    active: bool,
}

/// A room's active-speaker list. Owned by the room; no I/O.
#[derive(Debug)]
pub struct SpeakerDetector {
    speakers: Vec<Speaker>,
    announced: Vec<ParticipantId>,
    last_announce: Option<Instant>,
    next_tick: Instant,
}

/// One speaker in an announcement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActiveSpeaker {
    /// Who.
    pub participant: ParticipantId,
    /// Smoothed loudness of their voiced packets, 0..1 (1 = 0 dBov, 0 = -127 dBov).
    pub level: f32,
}

impl SpeakerDetector {
    /// A detector whose first tick is one [`TICK`] after `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            speakers: Vec::new(),
            announced: Vec::new(),
            last_announce: None,
            next_tick: now + TICK,
        }
    }

    /// When [`Self::tick`] is due.
    pub fn deadline(&self) -> Instant {
        self.next_tick
    }

    /// Takes one window: `window` gives, for every participant now in the room, its meter's
    /// [`LevelMeter::take`] (`None` when its microphone is muted or it publishes none). Returns
    /// the new list when it changed and may be announced now (at most [`MAX_SPEAKERS`], first
    /// the dominant speaker); `Some(vec![])` when the last speaker stopped.
    pub fn tick(
        &mut self,
        now: Instant,
        window: impl IntoIterator<Item = (ParticipantId, Option<(f32, f32)>)>,
    ) -> Option<Vec<ActiveSpeaker>> {
        self.next_tick = now + TICK;
        let mut seen: Vec<ParticipantId> = Vec::new();
        for (id, obs) in window {
            seen.push(id);
            let i = match self.speakers.iter().position(|s| s.id == id) {
                Some(i) => i,
                None => {
                    self.speakers.push(Speaker {
                        id,
                        activity: 0.0,
                        loudness: 0.0,
                        active: false,
                    });
                    self.speakers.len() - 1
                }
            };
            let s = &mut self.speakers[i];
            match obs {
                None => {
                    s.activity = 0.0;
                    s.active = false;
                }
                Some((share, loudness)) => {
                    s.activity += SMOOTHING * (share - s.activity);
                    if share > 0.0 {
                        s.loudness += SMOOTHING * (loudness - s.loudness);
                    }
                    if !s.active && s.activity >= ENTER {
                        s.active = true;
                    } else if s.active && s.activity < LEAVE {
                        s.active = false;
                    }
                }
            }
        }
        self.speakers.retain(|s| seen.contains(&s.id));
        let mut active: Vec<Speaker> = self.speakers.iter().filter(|s| s.active).copied().collect();
        active.sort_by(|a, b| b.activity.total_cmp(&a.activity));
        // Keep the first speaker first unless someone clearly took over.
        if let Some(first) = self.announced.first() {
            if let Some(pos) = active.iter().position(|s| s.id == *first) {
                if active[0].activity < active[pos].activity + DOMINANCE_MARGIN {
                    let keep = active.remove(pos);
                    active.insert(0, keep);
                }
            }
        }
        active.truncate(MAX_SPEAKERS);
        let ids: Vec<ParticipantId> = active.iter().map(|s| s.id).collect();
        if ids == self.announced {
            return None;
        }
        if self
            .last_announce
            .is_some_and(|t| now.saturating_duration_since(t) < MIN_ANNOUNCE_INTERVAL)
        {
            return None;
        }
        self.announced = ids;
        self.last_announce = Some(now);
        Some(
            active
                .iter()
                .map(|s| ActiveSpeaker {
                    participant: s.id,
                    level: s.loudness.clamp(0.0, 1.0),
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> ParticipantId {
        ParticipantId(n)
    }

    /// A window of 12 packets (250 ms of 20 ms Opus frames... rounded) at `level` -dBov.
    fn window(level: u8) -> Option<(f32, f32)> {
        let mut m = LevelMeter::default();
        for _ in 0..12 {
            m.observe(level);
        }
        Some(m.take())
    }

    /// Runs `ticks` ticks with the given levels (None: muted); returns every announcement.
    fn run(
        d: &mut SpeakerDetector,
        now: &mut Instant,
        ticks: usize,
        levels: &[(u64, Option<u8>)],
    ) -> Vec<Vec<u64>> {
        let mut out = Vec::new();
        for _ in 0..ticks {
            *now += TICK;
            let w: Vec<_> = levels
                .iter()
                .map(|(p, l)| (id(*p), l.and_then(window)))
                .collect();
            if let Some(list) = d.tick(*now, w) {
                out.push(list.iter().map(|s| s.participant.0).collect());
            }
        }
        out
    }

    #[test]
    fn the_meter_counts_voiced_packets_and_their_loudness() {
        let mut m = LevelMeter::default();
        m.observe(0x80 | 20); // V flag set, -20 dBov: voiced
        m.observe(127); // silence
        m.observe(60); // background noise
        m.observe(40); // at the threshold: voiced
        let (share, loudness) = m.take();
        assert_eq!(share, 0.5);
        assert!((loudness - (107.0 + 87.0) / 2.0 / 127.0).abs() < 1e-6);
        assert_eq!(m.take(), (0.0, 0.0), "take starts a new window");
    }

    #[test]
    fn a_speaker_becomes_active_within_a_second_and_leaves_within_two_after_stopping() {
        let mut now = Instant::now();
        let mut d = SpeakerDetector::new(now);
        // Ada speaks, Bob is silent.
        let got = run(&mut d, &mut now, 4, &[(1, Some(20)), (2, Some(127))]);
        assert_eq!(got, vec![vec![1]], "Ada within 4 ticks (1 s)");
        // A pause of one tick between words changes nothing.
        assert!(run(&mut d, &mut now, 1, &[(1, Some(127)), (2, Some(127))]).is_empty());
        assert!(run(&mut d, &mut now, 4, &[(1, Some(20)), (2, Some(127))]).is_empty());
        // Ada stops: she leaves the list within 8 ticks (2 s), once.
        let got = run(&mut d, &mut now, 8, &[(1, Some(127)), (2, Some(127))]);
        assert_eq!(got, vec![Vec::<u64>::new()]);
    }

    #[test]
    fn background_noise_and_muted_microphones_never_count() {
        let mut now = Instant::now();
        let mut d = SpeakerDetector::new(now);
        let got = run(&mut d, &mut now, 20, &[(1, Some(55)), (2, None)]);
        assert!(got.is_empty(), "{got:?}");
        // Muting drops a speaker at the next tick (after the announcement interval).
        run(&mut d, &mut now, 4, &[(1, Some(10)), (2, None)]);
        let got = run(&mut d, &mut now, 2, &[(1, None), (2, None)]);
        assert_eq!(got, vec![Vec::<u64>::new()]);
    }

    #[test]
    fn the_first_place_changes_only_when_someone_clearly_takes_over() {
        let mut now = Instant::now();
        let mut d = SpeakerDetector::new(now);
        run(&mut d, &mut now, 8, &[(1, Some(20)), (2, Some(127))]);
        // Bob starts too while Ada goes on: he is listed second, she stays first.
        let got = run(&mut d, &mut now, 8, &[(1, Some(20)), (2, Some(20))]);
        assert_eq!(got, vec![vec![1, 2]]);
        // Ada stops: Bob takes first place, Ada leaves the list.
        let got = run(&mut d, &mut now, 12, &[(1, Some(127)), (2, Some(20))]);
        assert_eq!(got.last(), Some(&vec![2]), "{got:?}");
    }

    #[test]
    fn announcements_are_at_least_the_interval_apart_and_participants_who_left_are_dropped() {
        let mut now = Instant::now();
        let mut d = SpeakerDetector::new(now);
        let mut last: Option<Instant> = None;
        // Alternating speech every tick for 10 s: any announcement respects the interval.
        for i in 0..40 {
            now += TICK;
            let (a, b) = if i % 4 < 2 { (20, 127) } else { (127, 20) };
            let w = vec![(id(1), window(a)), (id(2), window(b))];
            if d.tick(now, w).is_some() {
                if let Some(l) = last {
                    assert!(now - l >= MIN_ANNOUNCE_INTERVAL);
                }
                last = Some(now);
            }
        }
        // Everyone leaves: the list empties.
        run(&mut d, &mut now, 4, &[(3, Some(127))]);
        assert!(d.announced.is_empty());
        assert_eq!(d.speakers.len(), 1);
    }
}
