//! What one run measures ([`RunReport`]), what a sweep finds ([`Capacity`]), the whole file
//! written as JSON ([`Report`]) and the terminal table.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Percentiles of a sample set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples behind the figures.
    pub samples: usize,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `v` (sorted in place).
    pub fn of(v: &mut [f64]) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Self {
            samples: v.len(),
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: v[v.len() - 1],
        }
    }
}

/// One point of a run's timeline (one second).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Seconds since the run started.
    pub t_s: f64,
    /// Phase: `ramp`, `warmup` or `measure`.
    pub phase: String,
    /// Participants joined so far.
    pub participants: usize,
    /// Packets forwarded per second by the server (its counter), or received by the clients
    /// if the server has no `/metrics`.
    pub forwarded_pps: f64,
    /// Server CPU, percent of one core.
    pub server_cpu_percent: f64,
    /// Server CPU per forwarded packet, µs.
    pub server_cpu_us_per_packet: Option<f64>,
    /// End-to-end latency of the packets received in that second, ms.
    pub latency_p50_ms: f64,
    /// Same, 99th percentile.
    pub latency_p99_ms: f64,
}

/// The figures of one run at one load, over its measurement window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunReport {
    /// Rooms.
    pub rooms: usize,
    /// Participants per room.
    pub participants_per_room: usize,
    /// Participants that joined and published.
    pub participants: usize,
    /// Joins or publishes that failed.
    pub failed_joins: usize,
    /// Video bitrate per publisher, kbit/s (0: no video).
    pub video_kbps: u32,
    /// Audio bitrate per publisher, kbit/s (0: no audio).
    pub audio_kbps: u32,
    /// Video went out as three simulcast layers (`--simulcast`).
    #[serde(default)]
    pub simulcast: bool,
    /// The tile width every subscriber reported, px (`--tile-width`).
    #[serde(default)]
    pub tile_width: Option<u32>,
    /// What one participant received on average, kbit/s (forwarded bits per second over the
    /// participants; RTP header + payload).
    #[serde(default)]
    pub received_kbps_per_participant: f64,
    /// Length of the measurement window, s.
    pub window_s: f64,
    /// Packets forwarded per second (server counter).
    pub forwarded_packets_per_s: f64,
    /// RTP packets the server received from publishers per second (server counter; every
    /// simulcast layer they send).
    #[serde(default)]
    pub server_received_packets_per_s: f64,
    /// Bits forwarded per second (server counter; RTP header + payload).
    pub forwarded_bits_per_s: f64,
    /// Packets received per second by all clients together.
    pub received_packets_per_s: f64,
    /// Server CPU time per forwarded packet, µs (server process accounting).
    pub server_cpu_us_per_packet: Option<f64>,
    /// Server CPU, percent of one core.
    pub server_cpu_percent: Option<f64>,
    /// CPU of the server's media threads alone (every worker's) per forwarded packet, µs (local servers).
    pub media_thread_cpu_us_per_packet: Option<f64>,
    /// Per media worker, in index order: (forwarded packets per second, percent of the window
    /// the worker spent on received datagrams), from `confab_worker_*{worker}` in `/metrics`.
    /// Empty for a server without those series.
    #[serde(default)]
    pub media_workers: Vec<(f64, f64)>,
    /// The generator's own CPU (this process: all clients), percent of one core.
    pub generator_cpu_percent: Option<f64>,
    /// CPU used on this machine by everything but the server and the generator during the
    /// window, percent of one core (other work disturbs latency figures: check it).
    pub other_cpu_percent: Option<f64>,
    /// Packets lost between publisher and subscriber, percent of those expected.
    pub loss_percent: f64,
    /// Packets received out of order.
    pub out_of_order: u64,
    /// Payloads that arrived damaged.
    pub corrupted: u64,
    /// End-to-end latency (publisher's send timestamp → subscriber's receive), ms.
    pub latency_ms: Percentiles,
    /// Server time per received datagram (its histogram), µs: p50, p99.
    pub server_processing_us_p50: Option<f64>,
    /// See `server_processing_us_p50`.
    pub server_processing_us_p99: Option<f64>,
    /// Socket open → first media packet received, ms (participants who joined a room where
    /// someone already published).
    pub join_ms: Percentiles,
    /// Join steps, ms: socket open → `joined` (token, WebSocket, join).
    pub join_signaling_ms: Percentiles,
    /// Join steps, ms: `joined` → publisher transport connected (offer/answer, ICE, DTLS).
    pub join_publish_ms: Percentiles,
    /// Join steps, ms: publisher connected → first media packet received (subscribe
    /// offer/answer, the subscriber transport's ICE and DTLS, first packet).
    pub join_first_media_ms: Percentiles,
    /// Participants that never received a packet.
    pub joined_without_media: usize,
    /// Server resident memory before the first join, MiB.
    pub server_rss_idle_mib: Option<f64>,
    /// Server resident memory at steady state, MiB.
    pub server_rss_mib: Option<f64>,
    /// (steady − idle) / participants, KiB.
    pub server_memory_per_participant_kib: Option<f64>,
    /// Drops the server counted during the window, by cause.
    pub server_drops: BTreeMap<String, u64>,
    /// Keyframe requests (PLI) the server sent during the window.
    pub server_plis_sent: u64,
    /// One point per second.
    pub timeline: Vec<TimelinePoint>,
}

impl RunReport {
    /// Whether this load is within the sweep's quality bounds.
    pub fn within(&self, max_loss_percent: f64, max_p99_ms: f64) -> bool {
        self.participants > 0
            && self.failed_joins == 0
            && self.joined_without_media == 0
            && self.loss_percent <= max_loss_percent
            && self.latency_ms.p99 <= max_p99_ms
    }
}

/// The largest load of one room size that stayed within bounds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Capacity {
    /// Participants per room (2: 1:1 calls).
    pub participants_per_room: usize,
    /// Most rooms that passed (0: even the first level failed).
    pub rooms: usize,
    /// Participants at that level.
    pub participants: usize,
    /// Packets forwarded per second at that level.
    pub forwarded_packets_per_s: f64,
    /// Why the sweep stopped.
    pub stopped_because: String,
}

/// The JSON file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// `confab-bench`.
    pub tool: String,
    /// `run` or `sweep`.
    pub mode: String,
    /// The server: `local` (started by the generator) or its URL.
    pub target: String,
    /// Signaling driver (`confab`).
    pub driver: String,
    /// Unix time of the start, s.
    pub started_at_unix_s: u64,
    /// Logical CPUs of this machine (server and generator share them when local).
    pub cpus: usize,
    /// One entry per load level.
    pub runs: Vec<RunReport>,
    /// Sweep results, one per room size.
    pub capacity: Vec<Capacity>,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

/// The terminal table: one line per run.
pub fn table(report: &Report) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{:>5} {:>4} {:>5} {:>9} {:>8} {:>8} {:>6} {:>6} {:>6} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>6}\n",
        "rooms", "size", "peers", "fwd pkt/s", "fwd Mb/s", "µs/pkt", "cpu%", "gen%", "oth%", "loss%", "lat p50", "lat p95",
        "lat p99", "srv p99", "join50", "join99", "KiB/peer", "drops"
    ));
    for r in &report.runs {
        let drops: u64 = r.server_drops.values().sum();
        s.push_str(&format!(
            "{:>5} {:>4} {:>5} {:>9.0} {:>8.2} {:>8} {:>6} {:>6} {:>6} {:>6.2} {:>7.2} {:>7.2} {:>7.2} {:>7} {:>7.0} {:>7.0} {:>8} {:>6}\n",
            r.rooms,
            r.participants_per_room,
            r.participants,
            r.forwarded_packets_per_s,
            r.forwarded_bits_per_s / 1e6,
            opt(r.server_cpu_us_per_packet, 2),
            opt(r.server_cpu_percent, 0),
            opt(r.generator_cpu_percent, 0),
            opt(r.other_cpu_percent, 0),
            r.loss_percent,
            r.latency_ms.p50,
            r.latency_ms.p95,
            r.latency_ms.p99,
            opt(r.server_processing_us_p99.map(|u| u / 1000.0), 2),
            r.join_ms.p50,
            r.join_ms.p99,
            opt(r.server_memory_per_participant_kib, 0),
            drops,
        ));
    }
    for r in &report.runs {
        s.push_str(&format!(
            "{}x{}: {:.0} kbit/s received per participant; the server received {:.0} pkt/s; video {}, tiles {}\n",
            r.rooms,
            r.participants_per_room,
            r.received_kbps_per_participant,
            r.server_received_packets_per_s,
            if r.simulcast {
                "in 3 simulcast layers"
            } else {
                "in one stream"
            },
            r.tile_width
                .map_or("not reported".to_owned(), |w| format!("{w} px wide")),
        ));
    }
    for r in &report.runs {
        if r.media_workers.is_empty() {
            continue;
        }
        let each: Vec<String> = r
            .media_workers
            .iter()
            .enumerate()
            .map(|(i, (pps, busy))| format!("#{i} {pps:.0} pkt/s, busy {busy:.0} %"))
            .collect();
        s.push_str(&format!(
            "{}x{}: {} media workers: {}\n",
            r.rooms,
            r.participants_per_room,
            r.media_workers.len(),
            each.join("; ")
        ));
    }
    s.push_str("(latencies in ms; srv p99 = the server's own per-datagram processing time, ms; µs/pkt = server CPU per forwarded packet; cpu% / gen% / oth% = server / generator / everything else's CPU, % of one core)\n");
    for c in &report.capacity {
        s.push_str(&format!(
            "capacity, {}-person rooms: {} rooms = {} participants, {:.0} forwarded pkt/s (stopped: {})\n",
            c.participants_per_room, c.rooms, c.participants, c.forwarded_packets_per_s, c.stopped_because
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!(
            (p.p50, p.p95, p.p99, p.max, p.samples),
            (50.0, 95.0, 99.0, 100.0, 100)
        );
        assert_eq!(Percentiles::of(&mut []).samples, 0);
    }
}
