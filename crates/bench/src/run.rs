//! One run at one load: join the participants at the ramp rate, let media settle, measure a
//! window, then leave. Every phase is bounded in time; every loop in count.

use crate::driver::{Driver, Participant};
use crate::progress::Progress;
use crate::report::{Percentiles, RunReport, TimelinePoint};
use crate::server::{processing_quantile_us, Probe, ServerSample};
use confab_client::{RemoteTrackStats, SyntheticTrack};
use confab_protocol::Source;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Longest a single join + publish may take before it counts as failed.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest synthetic payload, bytes (stays under a 1200-byte MTU with headers and SRTP tag).
const MAX_PAYLOAD: usize = 1100;

/// Smallest payload the synthetic format allows (codec prefix, counter, timestamp).
const MIN_PAYLOAD: usize = 16;

/// The load of one run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Rooms.
    pub rooms: usize,
    /// Participants per room; each publishes and receives everyone else.
    pub per_room: usize,
    /// Video bitrate per publisher, kbit/s (0: no video).
    pub video_kbps: u32,
    /// Audio bitrate per publisher, kbit/s (0: no audio).
    pub audio_kbps: u32,
    /// Video packets per second per publisher (raised if the payload would exceed the MTU).
    pub video_pps: u32,
    /// Audio packets per second per publisher.
    pub audio_pps: u32,
    /// Time after the last join before measuring.
    pub warmup: Duration,
    /// The measurement window.
    pub duration: Duration,
    /// Joins started per second.
    pub ramp_per_s: f64,
    /// Publish video as three simulcast layers (RIDs l, m, h at 10 %, 33 % and 100 % of the
    /// packet rate; see `confab_client::SyntheticTrack::simulcast`).
    pub simulcast: bool,
    /// Every subscriber reports each remote video as this many px wide (`track_settings`), as a
    /// grid of small tiles would; `None`: no report.
    pub tile_width: Option<u32>,
}

impl LoadSpec {
    /// What each participant publishes.
    pub fn tracks(&self) -> Vec<(Source, SyntheticTrack)> {
        let mut t = Vec::new();
        if self.video_kbps > 0 {
            let mut video = synthetic(true, self.video_kbps, self.video_pps);
            video.simulcast = self.simulcast;
            t.push((Source::Camera, video));
        }
        if self.audio_kbps > 0 {
            t.push((
                Source::Microphone,
                synthetic(false, self.audio_kbps, self.audio_pps),
            ));
        }
        t
    }

    /// Participants in all.
    pub fn participants(&self) -> usize {
        self.rooms * self.per_room
    }
}

/// A synthetic track at `kbps` and `pps` (pps raised so a payload fits `MAX_PAYLOAD`, 1100 bytes).
pub fn synthetic(video: bool, kbps: u32, pps: u32) -> SyntheticTrack {
    let bytes_per_s = kbps as usize * 1000 / 8;
    let pps = (pps.max(1) as usize).max(bytes_per_s.div_ceil(MAX_PAYLOAD));
    SyntheticTrack {
        video,
        packets_per_s: pps as u32,
        payload_bytes: (bytes_per_s / pps).clamp(MIN_PAYLOAD, MAX_PAYLOAD),
        keyframe_every: (pps as u32 * 2).max(1),
        simulcast: false,
    }
}

/// What a join task returns: index in its room, when its socket opened (µs), the participant.
type JoinOutcome = (usize, u64, Result<Box<dyn Participant>, String>);

struct Joined {
    index_in_room: usize,
    t_open_us: u64,
    p: Box<dyn Participant>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Ramp,
    Warmup,
    Measure,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Ramp => "ramp",
            Phase::Warmup => "warmup",
            Phase::Measure => "measure",
        }
    }
}

/// Reads new receive statistics from every track, once per second.
#[derive(Default)]
struct Sampler {
    /// Per track (keyed by its address): latency samples already read.
    cursors: HashMap<usize, usize>,
    /// Per track: `(received, highest counter)` when the window opened.
    marks: HashMap<usize, (u64, u32)>,
    /// Latencies received inside the window, ms.
    window: Vec<f64>,
}

fn key(t: &Arc<RemoteTrackStats>) -> usize {
    Arc::as_ptr(t) as usize
}

impl Sampler {
    /// Reads what arrived since the last call: `(latencies of this second in ms, packets
    /// received in all)`.
    fn collect(&mut self, parts: &[Joined], in_window: bool) -> (Vec<f64>, u64) {
        let mut second = Vec::new();
        let mut received = 0;
        for j in parts {
            for t in j.p.remote_tracks() {
                let s = t.stats.lock().expect("stats lock");
                received += s.received;
                let cur = self.cursors.entry(key(&t)).or_insert(0);
                let new = s.latencies_us.get(*cur..).unwrap_or_default();
                second.extend(new.iter().map(|us| *us as f64 / 1000.0));
                *cur = s.latencies_us.len();
            }
        }
        if in_window {
            self.window.extend_from_slice(&second);
        }
        (second, received)
    }

    /// Opens the window: remembers where every track stands.
    fn mark(&mut self, parts: &[Joined]) {
        for j in parts {
            for t in j.p.remote_tracks() {
                let s = t.stats.lock().expect("stats lock");
                if let Some(last) = s.last {
                    self.marks.insert(key(&t), (s.received, last));
                }
            }
        }
    }

    /// Closes the window: `(expected, received, out of order, corrupted)` over every track.
    fn loss(&self, parts: &[Joined]) -> (u64, u64, u64, u64) {
        let (mut expected, mut received, mut ooo, mut bad) = (0u64, 0u64, 0u64, 0u64);
        for j in parts {
            for t in j.p.remote_tracks() {
                let s = t.stats.lock().expect("stats lock");
                ooo += s.out_of_order;
                bad += s.corrupted;
                let (Some(first), Some(last)) = (s.first, s.last) else {
                    continue;
                };
                let (r0, l0) = self
                    .marks
                    .get(&key(&t))
                    .copied()
                    .unwrap_or((0, first.wrapping_sub(1)));
                let exp = last.wrapping_sub(l0) as u64;
                let got = s.received.saturating_sub(r0);
                expected += exp.max(got);
                received += got;
            }
        }
        (expected, received, ooo, bad)
    }
}

fn delta(a: &ServerSample, b: &ServerSample, series: &str) -> f64 {
    (b.get(series) - a.get(series)).max(0.0)
}

/// Runs one load level against the server behind `driver` and `probe`. `tag` keeps room names
/// unique across runs on one server.
pub async fn run_level(
    driver: Arc<dyn Driver>,
    probe: &Probe,
    spec: &LoadSpec,
    tag: &str,
    progress: &Progress,
) -> RunReport {
    let total = spec.participants();
    let tracks = Arc::new(spec.tracks());
    let idle = probe.sample().await;
    let started = Instant::now();
    let ramp_period = Duration::from_secs_f64(1.0 / spec.ramp_per_s.max(0.01));
    let ramp_deadline = started + ramp_period * total as u32 + JOIN_TIMEOUT;
    let expected_s = (ramp_period * total as u32 + spec.warmup + spec.duration)
        .as_secs_f64()
        .max(1.0);
    let label = format!("{}×{}", spec.rooms, spec.per_room);

    let mut joins: JoinSet<JoinOutcome> = JoinSet::new();
    let mut parts: Vec<Joined> = Vec::new();
    let mut failed = 0usize;
    let mut spawned = 0usize;
    let mut ramp = tokio::time::interval(ramp_period);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut phase = Phase::Ramp;
    let mut phase_end = ramp_deadline;
    let mut sampler = Sampler::default();
    let mut prev = idle.clone();
    let mut prev_t = Instant::now();
    let mut prev_received = 0u64;
    let mut window_start: Option<(ServerSample, Instant, u64)> = None;
    let mut gen_start: Option<(f64, u64)> = None;
    let mut machine_start: Option<f64> = None;
    let mut timeline = Vec::new();
    // Bounded: the ramp, the join timeout, warm-up and window, plus a minute of slack.
    let hard_stop = ramp_deadline + spec.warmup + spec.duration + Duration::from_secs(60);

    let (end, end_t, end_received) = loop {
        tokio::select! {
            _ = ramp.tick(), if spawned < total => {
                let k = spawned;
                spawned += 1;
                let room = format!("bench-{tag}-{}", k % spec.rooms);
                let index_in_room = k / spec.rooms;
                let name = format!("b{k}");
                let driver = driver.clone();
                let tracks = tracks.clone();
                joins.spawn(async move {
                    let t_open_us = crate::now_us();
                    let r = tokio::time::timeout(JOIN_TIMEOUT, driver.join(&room, &name, &tracks)).await;
                    let r = match r {
                        Ok(Ok(p)) => Ok(p),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("timed out".to_owned()),
                    };
                    (index_in_room, t_open_us, r)
                });
            }
            Some(res) = joins.join_next(), if !joins.is_empty() => match res {
                Ok((index_in_room, t_open_us, Ok(p))) => parts.push(Joined { index_in_room, t_open_us, p }),
                Ok((_, _, Err(e))) => {
                    failed += 1;
                    tracing::warn!("join failed: {e}");
                }
                Err(e) => {
                    failed += 1;
                    tracing::warn!("join task failed: {e}");
                }
            },
            _ = tick.tick() => {
                let now = Instant::now();
                let s = probe.sample().await;
                let (lat, received) = sampler.collect(&parts, phase == Phase::Measure);
                let dt = now.duration_since(prev_t).as_secs_f64().max(1e-3);
                let fwd = if s.metrics.is_empty() {
                    received.saturating_sub(prev_received) as f64
                } else {
                    delta(&prev, &s, "confab_rtp_forwarded_packets_total")
                };
                let cpu = match (prev.cpu_us, s.cpu_us) { (Some(a), Some(b)) => b - a, _ => 0.0 };
                let mut lat_sorted = lat;
                let p = Percentiles::of(&mut lat_sorted);
                timeline.push(TimelinePoint {
                    t_s: now.duration_since(started).as_secs_f64(),
                    phase: phase.name().to_owned(),
                    participants: parts.len(),
                    forwarded_pps: fwd / dt,
                    server_cpu_percent: cpu / dt / 1e4,
                    server_cpu_us_per_packet: (fwd > 0.0).then(|| cpu / fwd),
                    latency_p50_ms: p.p50,
                    latency_p99_ms: p.p99,
                });
                progress.draw(
                    &label,
                    now.duration_since(started).as_secs_f64() / expected_s,
                    phase.name(),
                    &format!(
                        "joined {}/{} failed {} | fwd {:.0} pkt/s | server cpu {:.0} % | p99 {:.1} ms",
                        parts.len(), total, failed, fwd / dt, cpu / dt / 1e4, p.p99
                    ),
                );
                prev = s.clone();
                prev_t = now;
                prev_received = received;
                match phase {
                    Phase::Ramp if (spawned == total && joins.is_empty()) || now >= phase_end => {
                        failed += joins.len();
                        joins.abort_all();
                        spawned = total;
                        phase = Phase::Warmup;
                        phase_end = now + spec.warmup;
                    }
                    Phase::Warmup if now >= phase_end => {
                        gen_start = crate::server::proc_usage(std::process::id());
                        machine_start = crate::server::machine_busy_us();
                        sampler.mark(&parts);
                        window_start = Some((s, now, received));
                        phase = Phase::Measure;
                        phase_end = now + spec.duration;
                    }
                    Phase::Measure if now >= phase_end => break (s, now, received),
                    _ if now >= hard_stop => break (s, now, received),
                    _ => {}
                }
            }
        }
    };
    progress.finish();

    let (start, start_t, start_received) = window_start.unwrap_or((idle.clone(), started, 0));
    let window_s = end_t.duration_since(start_t).as_secs_f64().max(1e-3);
    let received_pkts = end_received.saturating_sub(start_received) as f64;
    let fwd = if end.metrics.is_empty() {
        received_pkts
    } else {
        delta(&start, &end, "confab_rtp_forwarded_packets_total")
    };
    let bytes = delta(&start, &end, "confab_rtp_forwarded_bytes_total");
    let rtp_in = delta(&start, &end, "confab_rtp_received_packets_total");
    let cpu_us = match (start.cpu_us, end.cpu_us) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let (expected, got, out_of_order, corrupted) = sampler.loss(&parts);
    let gen_cpu_us = match (gen_start, crate::server::proc_usage(std::process::id())) {
        (Some((a, _)), Some((b, _))) => Some(b - a),
        _ => None,
    };
    let target_is_local = end.media_thread_cpu_us.is_some();
    let mut latency = std::mem::take(&mut sampler.window);
    let mut joins_ms = Vec::new();
    let (mut step_sig, mut step_pub, mut step_media) = (Vec::new(), Vec::new(), Vec::new());
    let mut without_media = 0;
    let ms = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1000.0;
    for j in &parts {
        let first =
            j.p.remote_tracks()
                .iter()
                .filter_map(|t| t.stats.lock().expect("stats lock").first_at_us)
                .min();
        let steps = j.p.steps();
        match first {
            Some(f) if j.index_in_room > 0 => {
                joins_ms.push(ms(j.t_open_us, f));
                if steps.joined_us > 0 && steps.published_us > 0 {
                    step_sig.push(ms(j.t_open_us, steps.joined_us));
                    step_pub.push(ms(steps.joined_us, steps.published_us));
                    step_media.push(ms(steps.published_us, f));
                }
            }
            Some(_) => {}
            None if spec.per_room > 1 => without_media += 1,
            None => {}
        }
    }
    let mut drops = std::collections::BTreeMap::new();
    for k in end.metrics.keys() {
        if let Some(cause) = k
            .strip_prefix("confab_drops_total{cause=\"")
            .and_then(|c| c.strip_suffix("\"}"))
        {
            drops.insert(cause.to_owned(), delta(&start, &end, k) as u64);
        }
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let per_participant = match (idle.rss_bytes, end.rss_bytes) {
        (Some(a), Some(b)) if !parts.is_empty() => {
            Some((b as f64 - a as f64) / 1024.0 / parts.len() as f64)
        }
        _ => None,
    };
    let report = RunReport {
        rooms: spec.rooms,
        participants_per_room: spec.per_room,
        participants: parts.len(),
        failed_joins: failed,
        video_kbps: spec.video_kbps,
        audio_kbps: spec.audio_kbps,
        simulcast: spec.simulcast,
        tile_width: spec.tile_width,
        received_kbps_per_participant: if parts.is_empty() {
            0.0
        } else {
            bytes * 8.0 / window_s / 1000.0 / parts.len() as f64
        },
        window_s,
        forwarded_packets_per_s: fwd / window_s,
        server_received_packets_per_s: rtp_in / window_s,
        forwarded_bits_per_s: bytes * 8.0 / window_s,
        received_packets_per_s: received_pkts / window_s,
        server_cpu_us_per_packet: cpu_us.filter(|_| fwd > 0.0).map(|c| c / fwd),
        server_cpu_percent: cpu_us.map(|c| c / window_s / 1e4),
        media_thread_cpu_us_per_packet: match (start.media_thread_cpu_us, end.media_thread_cpu_us) {
            (Some(a), Some(b)) if fwd > 0.0 => Some((b - a) / fwd),
            _ => None,
        },
        media_workers: (0..)
            .map_while(|i| {
                let key = |name: &str| format!("{name}{{worker=\"{i}\"}}");
                let fwd = key("confab_worker_rtp_forwarded_packets_total");
                let busy = key("confab_worker_processing_seconds_total");
                end.metrics.contains_key(&fwd).then(|| {
                    (
                        delta(&start, &end, &fwd) / window_s,
                        delta(&start, &end, &busy) * 100.0 / window_s,
                    )
                })
            })
            .collect(),
        generator_cpu_percent: gen_cpu_us.map(|g| g / window_s / 1e4),
        other_cpu_percent: match (
            machine_start,
            crate::server::machine_busy_us(),
            cpu_us,
            gen_cpu_us,
        ) {
            (Some(a), Some(b), Some(s), Some(g)) if target_is_local => {
                Some(((b - a) - s - g).max(0.0) / window_s / 1e4)
            }
            _ => None,
        },
        loss_percent: if expected > 0 {
            (expected - got.min(expected)) as f64 * 100.0 / expected as f64
        } else {
            0.0
        },
        out_of_order,
        corrupted,
        latency_ms: Percentiles::of(&mut latency),
        server_processing_us_p50: processing_quantile_us(&start, &end, 0.50),
        server_processing_us_p99: processing_quantile_us(&start, &end, 0.99),
        join_ms: Percentiles::of(&mut joins_ms),
        join_signaling_ms: Percentiles::of(&mut step_sig),
        join_publish_ms: Percentiles::of(&mut step_pub),
        join_first_media_ms: Percentiles::of(&mut step_media),
        joined_without_media: without_media,
        server_rss_idle_mib: idle.rss_bytes.map(mib),
        server_rss_mib: end.rss_bytes.map(mib),
        server_memory_per_participant_kib: per_participant,
        server_drops: drops,
        server_plis_sent: delta(&start, &end, "confab_plis_sent_total") as u64,
        timeline,
    };

    // Leave, all at once, bounded.
    let mut leaving = JoinSet::new();
    for j in parts {
        leaving.spawn(j.p.leave());
    }
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while leaving.join_next().await.is_some() {}
    })
    .await;
    leaving.abort_all();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_tracks_hit_the_bitrate_and_fit_the_mtu() {
        let v = synthetic(true, 800, 100);
        assert_eq!((v.packets_per_s, v.payload_bytes), (100, 1000));
        let big = synthetic(true, 2500, 100);
        assert!(
            big.payload_bytes <= MAX_PAYLOAD && big.packets_per_s >= 285,
            "{big:?}"
        );
        let a = synthetic(false, 64, 50);
        assert_eq!((a.packets_per_s, a.payload_bytes), (50, 160));
    }
}
