//! Synthetic media: payload construction and per-track receive statistics.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// What a synthetic track sends.
#[derive(Debug, Clone, Copy)]
pub struct SyntheticTrack {
    /// Video (VP8-like) or audio (Opus-like).
    pub video: bool,
    /// Packets per second.
    pub packets_per_s: u32,
    /// Payload size, bytes (at least 14).
    pub payload_bytes: usize,
    /// Every how many packets a video keyframe starts (VP8 `P=0`).
    pub keyframe_every: u32,
    /// Video only: publish three simulcast layers (RIDs [`SIMULCAST_RIDS`], RFC 8853), each on
    /// its own SSRC with the MID and RID header extensions on every packet; layer `i` sends
    /// [`SIMULCAST_SHARES`]`[i]` of `packets_per_s` (at least 10), the top layer all of it.
    pub simulcast: bool,
}

/// The RIDs of a simulcast track's layers, lowest first (as the browser client names them).
pub const SIMULCAST_RIDS: [&str; 3] = ["l", "m", "h"];
/// Each layer's share of the track's packet rate (Chromium's default caps, 150 / 500 /
/// 1 500 kbit/s, are in about this ratio).
pub const SIMULCAST_SHARES: [f64; 3] = [0.1, 0.33, 1.0];

impl SyntheticTrack {
    /// ~50 pps Opus-like audio, 160-byte payloads (≈64 kbps).
    pub fn audio() -> Self {
        Self {
            video: false,
            packets_per_s: 50,
            payload_bytes: 160,
            keyframe_every: 1,
            simulcast: false,
        }
    }
    /// ~100 pps VP8-like video, 1000-byte payloads (≈800 kbps), a keyframe every 2 s.
    pub fn video() -> Self {
        Self {
            video: true,
            packets_per_s: 100,
            payload_bytes: 1000,
            keyframe_every: 200,
            simulcast: false,
        }
    }
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Payload building and checking.
pub mod payload {
    /// Builds packet `counter` of a track into `out` (cleared first).
    pub fn build(
        video: bool,
        keyframe: bool,
        counter: u32,
        sent_at_us: u64,
        size: usize,
        out: &mut Vec<u8>,
    ) {
        out.clear();
        if video {
            // VP8 payload descriptor (RFC 7741): S=1, PID=0; then the frame header's P bit.
            out.push(0x10);
            out.push(if keyframe { 0x00 } else { 0x01 });
        }
        out.extend_from_slice(&counter.to_be_bytes());
        out.extend_from_slice(&sent_at_us.to_be_bytes());
        let base = out.len();
        while out.len() < size.max(base) {
            let i = out.len() - base;
            out.push(counter.wrapping_add(i as u32) as u8);
        }
    }

    /// Parses a payload: `(counter, sent_at_us, intact)`.
    pub fn parse(video: bool, p: &[u8]) -> Option<(u32, u64, bool)> {
        let off = if video { 2 } else { 0 };
        let c = u32::from_be_bytes(p.get(off..off + 4)?.try_into().ok()?);
        let t = u64::from_be_bytes(p.get(off + 4..off + 12)?.try_into().ok()?);
        let base = off + 12;
        let intact = p[base..]
            .iter()
            .enumerate()
            .all(|(i, b)| *b == c.wrapping_add(i as u32) as u8);
        Some((c, t, intact))
    }
}

/// Receive statistics of one remote track.
#[derive(Debug, Clone, Default)]
pub struct TrackStats {
    /// Packets received.
    pub received: u64,
    /// First counter seen.
    pub first: Option<u32>,
    /// Highest counter seen.
    pub last: Option<u32>,
    /// Packets whose counter was not above the previous one.
    pub out_of_order: u64,
    /// Packets whose payload did not match the pattern.
    pub corrupted: u64,
    /// One-way latency samples, µs (sender clock = receiver clock on one machine).
    pub latencies_us: Vec<u32>,
    /// When the first packet arrived (µs since epoch).
    pub first_at_us: Option<u64>,
    /// When the latest packet arrived (µs since epoch).
    pub last_at_us: Option<u64>,
    /// The longest time between two consecutive arrivals, µs (a stall of the track).
    pub max_gap_us: u64,
    /// Times the packets changed from one simulcast layer to another (the counter's layer,
    /// [`LAYER_SHIFT`]); loss and order count within a layer: `first` and `last` restart there.
    pub layer_switches: u64,
}

/// A synthetic packet's counter carries its simulcast layer (0 = lowest, or one stream) in the
/// bits from this one up, and the packet's number in that layer below (2^24 packets: 46 h at
/// 100 packets/s).
pub const LAYER_SHIFT: u32 = 24;

impl TrackStats {
    /// Fraction of packets lost between the first and last counter seen (0.0–1.0).
    pub fn loss(&self) -> f64 {
        match (self.first, self.last) {
            (Some(f), Some(l)) if l >= f => {
                let expected = (l - f) as f64 + 1.0;
                ((expected - self.received as f64) / expected).max(0.0)
            }
            _ => 0.0,
        }
    }
}

/// Statistics of one remote track, shared between the reading task and the test.
#[derive(Debug, Default)]
pub struct RemoteTrackStats {
    /// The remote participant (`a=msid` stream id).
    pub participant: String,
    /// The remote track id.
    pub track: String,
    /// Video or audio.
    pub video: bool,
    /// The numbers.
    pub stats: Mutex<TrackStats>,
    /// Whether the track ended (`OnEnded`).
    pub ended: std::sync::atomic::AtomicBool,
}

impl RemoteTrackStats {
    pub(crate) fn record(&self, payload: &[u8]) {
        let now = now_us();
        let mut s = self.stats.lock().expect("stats lock");
        s.received += 1;
        s.first_at_us.get_or_insert(now);
        if let Some(prev) = s.last_at_us {
            s.max_gap_us = s.max_gap_us.max(now.saturating_sub(prev));
        }
        s.last_at_us = Some(now);
        match payload::parse(self.video, payload) {
            Some((c, t, intact)) => {
                if !intact {
                    s.corrupted += 1;
                }
                if s.first.is_none() {
                    s.first = Some(c);
                }
                if s.last.is_some_and(|l| l >> LAYER_SHIFT != c >> LAYER_SHIFT) {
                    // Another layer: count from here as if every packet so far had come in
                    // this layer's numbering, so `loss()` covers the gaps within layers only.
                    s.layer_switches += 1;
                    s.first = Some(c.wrapping_sub((s.received - 1) as u32));
                    s.last = Some(c);
                } else {
                    match s.last {
                        Some(l) if c <= l => s.out_of_order += 1,
                        _ => s.last = Some(c),
                    }
                }
                if s.latencies_us.len() < 100_000 {
                    s.latencies_us
                        .push(now.saturating_sub(t).min(u32::MAX as u64) as u32);
                }
            }
            None => s.corrupted += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_corruption_is_seen() {
        let mut b = Vec::new();
        payload::build(true, true, 7, 123, 100, &mut b);
        assert_eq!(b.len(), 100);
        assert_eq!(payload::parse(true, &b), Some((7, 123, true)));
        b[50] ^= 0xff;
        assert_eq!(payload::parse(true, &b).map(|p| p.2), Some(false));
    }

    #[test]
    fn loss_counts_the_gaps_between_first_and_last() {
        let s = TrackStats {
            received: 9,
            first: Some(10),
            last: Some(19),
            ..Default::default()
        };
        assert!((s.loss() - 0.1).abs() < 1e-9);
    }

    #[test]
    fn a_switch_of_simulcast_layer_is_no_loss_and_gaps_within_a_layer_are() {
        let t = RemoteTrackStats {
            participant: "p1".into(),
            track: "p1-1".into(),
            video: true,
            stats: Mutex::default(),
            ended: Default::default(),
        };
        let mut b = Vec::new();
        let mut send = |c: u32| {
            payload::build(true, false, c, now_us(), 40, &mut b);
            t.record(&b);
        };
        // The top layer (2) from its packet 500, then the low layer (0) from its packet 50,
        // which skips its packet 53.
        (500..510).for_each(|n| send(2 << LAYER_SHIFT | n));
        (50..53).chain(54..60).for_each(&mut send);
        let s = t.stats.lock().unwrap();
        assert_eq!((s.layer_switches, s.out_of_order), (1, 0));
        assert_eq!(s.received, 19);
        assert!((s.loss() - 0.05).abs() < 1e-9, "one of 20: {}", s.loss());
    }
}
