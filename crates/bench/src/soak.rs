//! A soak ([`soak`]): rooms churn for a set time — participants join and leave, toggle mute,
//! send chat messages on the DataChannel — then every participant leaves, and a few seconds
//! later the server must be back where it started. The server is read at the start (up, nobody
//! joined yet), after a warm-up cycle (`warm`: every room filled once and emptied; on by
//! default), all along (the peak: each quantity's largest reading) and at the end (the rooms
//! emptied):
//!
//! | quantity | local server | remote server (`--target`) | end rule |
//! |---|---|---|---|
//! | resident memory, KiB | `/proc/<pid>/status` `VmRSS` | `process_resident_memory_bytes` | ≤ warm × (1 + `rss_tolerance_percent` %) + `rss_slack_mib` |
//! | open file descriptors | entries of `/proc/<pid>/fd` | `confab_open_fds` | ≤ warm + `fd_slack` |
//! | live tokio tasks | `confab_tasks_alive` | same | ≤ start |
//! | ICE routes | `confab_routes` | same | ≤ start |
//! | subscriber m-lines | `confab_subscriber_mlines` | same | ≤ start |
//! | rooms, participants | `confab_rooms`, `confab_participants` | same | ≤ start |
//! | signaling sockets | `confab_signaling_sockets` | same | ≤ start |
//!
//! Why memory and descriptors have a warm baseline (without a warm-up, `--no-warmup`, they are
//! judged against the start): the first joins grow the server once, and that stays. Measured
//! with the debug build, 3 rooms × 4: `VmRSS` 20.0 → 33.7 MiB after a first 20 s soak, of which
//! `RssFile` +5.7 MiB (code of the WebRTC stack paged in from the binary) and `RssAnon` +7.9 MiB
//! (allocator arenas keep freed memory, `malloc_trim` gave back 5 MiB of it; the database pool's
//! connections and their page caches); a second identical soak on the same server added
//! 0.25 MiB. A leak keeps growing past `warm`; the relative and absolute allowances are for
//! allocator noise. File descriptors: the database pool opens connections at first use and
//! keeps them idle for minutes (SQLite in WAL mode: the database and its `-wal` file per
//! connection, one shared `-shm`).
//!
//! The signaling sessions are `spawn_local` tasks of the HTTP workers, which tokio's task count
//! leaves out: the signaling-socket count stands for them.
//!
//! Against a remote server there is no `/proc` to read: everything comes from its `/metrics`,
//! and other users of that server move the figures too.

use crate::driver::{ConfabDriver, Driver, Participant};
use crate::progress::Progress;
use crate::run::{synthetic, JOIN_TIMEOUT};
use crate::server::{find_server_binary, proc_fds, LocalServer, Probe};
use crate::Setup;
use confab_client::SyntheticTrack;
use confab_protocol::Source;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// What a soak does and how its end state is judged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SoakSpec {
    /// How long the rooms churn, s (from the first join; the initial fill counts).
    pub duration_s: f64,
    /// Rooms.
    pub rooms: usize,
    /// Most participants in one room.
    pub max_per_room: usize,
    /// Fewest participants a room is churned down to (0: rooms empty, close and open again
    /// under a new name).
    pub min_per_room: usize,
    /// Joins started per second while the rooms first fill to `max_per_room`.
    pub ramp_per_s: f64,
    /// Each room sees a join or a leave about this often, s.
    pub join_leave_every_s: f64,
    /// Each room sees a mute toggle (camera or microphone of a random participant) about this
    /// often, s.
    pub mute_every_s: f64,
    /// Each room sees a chat message from a random participant about this often, s (the
    /// server's chat budget is 10 messages per 10 s per user).
    pub chat_every_s: f64,
    /// Wait at least this long after the last leave before the end reading, s.
    pub settle_s: f64,
    /// Keep reading, once a second, until every end rule holds or this long after the last
    /// leave, s; the last reading is the end.
    pub settle_max_s: f64,
    /// Read the server this often, s.
    pub sample_every_s: f64,
    /// Video bitrate per publisher, kbit/s (0: no video).
    pub video_kbps: u32,
    /// Audio bitrate per publisher, kbit/s (0: no audio).
    pub audio_kbps: u32,
    /// Video packets per second per publisher.
    pub video_pps: u32,
    /// Audio packets per second per publisher.
    pub audio_pps: u32,
    /// Resident memory may end this many percent above the start …
    pub rss_tolerance_percent: f64,
    /// … plus this many MiB (allocator noise: see the module docs).
    pub rss_slack_mib: f64,
    /// Open file descriptors may end this many above the start (see the module docs).
    pub fd_slack: u64,
    /// Seed of the churn's choices (which room, who leaves, mute or unmute).
    pub seed: u64,
    /// Before the churn, fill every room once, hold it, empty it, and judge memory and file
    /// descriptors against the idle server after that (`warm`) rather than before any join:
    /// what grows once at first use is not a leak (see the module docs).
    pub warmup: bool,
    /// How long the warm-up holds the full rooms, s.
    pub warmup_hold_s: f64,
}

impl Default for SoakSpec {
    fn default() -> Self {
        Self {
            duration_s: 60.0,
            rooms: 3,
            max_per_room: 4,
            min_per_room: 0,
            ramp_per_s: 4.0,
            join_leave_every_s: 3.0,
            mute_every_s: 4.0,
            chat_every_s: 2.0,
            settle_s: 5.0,
            settle_max_s: 30.0,
            sample_every_s: 1.0,
            video_kbps: 300,
            audio_kbps: 32,
            video_pps: 30,
            audio_pps: 50,
            rss_tolerance_percent: 10.0,
            rss_slack_mib: 4.0,
            fd_slack: 8,
            seed: 1,
            warmup: true,
            warmup_hold_s: 3.0,
        }
    }
}

impl SoakSpec {
    /// What each participant publishes.
    pub fn tracks(&self) -> Vec<(Source, SyntheticTrack)> {
        let mut t = Vec::new();
        if self.video_kbps > 0 {
            t.push((
                Source::Camera,
                synthetic(true, self.video_kbps, self.video_pps),
            ));
        }
        if self.audio_kbps > 0 {
            t.push((
                Source::Microphone,
                synthetic(false, self.audio_kbps, self.audio_pps),
            ));
        }
        t
    }
}

/// One reading of the server; `None`: not available (a series the server does not export, or
/// `/proc` not readable).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SoakSample {
    /// Seconds since the soak started (the start reading is at 0).
    pub t_s: f64,
    /// `start`, `churn`, `leave` or `settle`.
    pub phase: String,
    /// Resident memory of the server process, KiB.
    pub rss_kib: Option<u64>,
    /// Its anonymous part (`RssAnon`: heap, stacks; not code paged in from the binary), KiB;
    /// local servers only, not judged (it tells allocator growth from code paged in).
    #[serde(default)]
    pub rss_anon_kib: Option<u64>,
    /// File descriptors the server process has open.
    pub open_fds: Option<u64>,
    /// Tokio tasks alive in the server (`confab_tasks_alive`).
    pub tasks_alive: Option<u64>,
    /// ICE routes in the media core's route table (`confab_routes`).
    pub routes: Option<u64>,
    /// m-lines of the subscriber transports' latest offers (`confab_subscriber_mlines`).
    pub subscriber_mlines: Option<u64>,
    /// Rooms open (`confab_rooms`).
    pub rooms: Option<u64>,
    /// Participants connected (`confab_participants`).
    pub participants: Option<u64>,
    /// Signaling WebSockets open (`confab_signaling_sockets`).
    pub signaling_sockets: Option<u64>,
    /// Participants the generator had joined at that moment.
    pub clients: usize,
}

/// The quantities a soak judges, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    /// Resident memory, KiB.
    RssKib,
    /// Open file descriptors.
    OpenFds,
    /// Live tokio tasks.
    TasksAlive,
    /// ICE routes.
    Routes,
    /// Subscriber m-lines.
    SubscriberMlines,
    /// Rooms.
    Rooms,
    /// Participants.
    Participants,
    /// Signaling sockets.
    SignalingSockets,
}

impl Quantity {
    /// Every quantity, in table order.
    pub const ALL: [Quantity; 8] = [
        Quantity::RssKib,
        Quantity::OpenFds,
        Quantity::TasksAlive,
        Quantity::Routes,
        Quantity::SubscriberMlines,
        Quantity::Rooms,
        Quantity::Participants,
        Quantity::SignalingSockets,
    ];

    /// Its name in the table and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Quantity::RssKib => "rss_kib",
            Quantity::OpenFds => "open_fds",
            Quantity::TasksAlive => "tasks_alive",
            Quantity::Routes => "routes",
            Quantity::SubscriberMlines => "subscriber_mlines",
            Quantity::Rooms => "rooms",
            Quantity::Participants => "participants",
            Quantity::SignalingSockets => "signaling_sockets",
        }
    }

    /// Its value in `s`.
    pub fn of(self, s: &SoakSample) -> Option<u64> {
        match self {
            Quantity::RssKib => s.rss_kib,
            Quantity::OpenFds => s.open_fds,
            Quantity::TasksAlive => s.tasks_alive,
            Quantity::Routes => s.routes,
            Quantity::SubscriberMlines => s.subscriber_mlines,
            Quantity::Rooms => s.rooms,
            Quantity::Participants => s.participants,
            Quantity::SignalingSockets => s.signaling_sockets,
        }
    }

    /// Whether it grows once, at first use, and stays (memory: code paged in, allocator arenas,
    /// caches; descriptors: the database pool's connections): judged against the warm baseline.
    pub fn grows_once(self) -> bool {
        matches!(self, Quantity::RssKib | Quantity::OpenFds)
    }

    /// The largest end value allowed after `start`, and the rule in words.
    pub fn limit(self, start: u64, spec: &SoakSpec) -> (u64, String) {
        match self {
            Quantity::RssKib => (
                (start as f64 * (1.0 + spec.rss_tolerance_percent / 100.0)
                    + spec.rss_slack_mib * 1024.0) as u64,
                format!(
                    "≤ start + {} % + {} MiB",
                    spec.rss_tolerance_percent, spec.rss_slack_mib
                ),
            ),
            Quantity::OpenFds => (
                start + spec.fd_slack,
                format!("≤ start + {}", spec.fd_slack),
            ),
            _ => (start, "≤ start".to_owned()),
        }
    }
}

/// The end-state verdict on one quantity.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SoakCheck {
    /// [`Quantity::name`].
    pub quantity: String,
    /// At the start.
    pub start: Option<u64>,
    /// After the warm-up cycle (none without one).
    pub warm: Option<u64>,
    /// The largest reading.
    pub peak: Option<u64>,
    /// At the end.
    pub end: Option<u64>,
    /// What the end is judged against: `start`, or `warm` (memory and descriptors, after a
    /// warm-up cycle).
    pub baseline: String,
    /// The largest end value allowed.
    pub limit: Option<u64>,
    /// The rule, in words.
    pub rule: String,
    /// `ok`, `FAIL`, or `not measured` (no start or end reading: the check is not made).
    pub status: String,
}

/// What the generator did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SoakActivity {
    /// Joins that completed (joined and published).
    pub joins: u64,
    /// Joins that failed or timed out.
    pub failed_joins: u64,
    /// Leaves (during the churn and at the end).
    pub leaves: u64,
    /// Times a room was opened: a join into a room nobody was in (a new room name each time).
    pub rooms_opened: u64,
    /// Mute toggles sent.
    pub mute_toggles: u64,
    /// Chat messages sent.
    pub chats_sent: u64,
    /// Chat messages the server acknowledged (stored).
    pub chat_acks: u64,
    /// Chat sends skipped because the participant's chat channel was not open yet.
    pub chats_skipped: u64,
    /// Mute or chat operations that failed or took more than 2 s.
    pub op_errors: u64,
    /// Most participants the generator had joined at once.
    pub peak_clients: usize,
    /// Media packets the participants received, in all (media flowed through the churn).
    pub received_packets: u64,
}

/// The soak's JSON file (`soak.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SoakReport {
    /// `confab-bench`.
    pub tool: String,
    /// `soak`.
    pub mode: String,
    /// `local` (started by the generator) or the server's URL.
    pub target: String,
    /// Where the figures come from.
    pub source: String,
    /// Unix time of the start, s.
    pub started_at_unix_s: u64,
    /// Logical CPUs of this machine.
    pub cpus: usize,
    /// What was asked.
    pub spec: Option<SoakSpec>,
    /// What the generator did.
    pub activity: SoakActivity,
    /// After the server was up, before any join.
    pub start: SoakSample,
    /// After the warm-up cycle (every room filled once and emptied), if there was one.
    pub warm: Option<SoakSample>,
    /// Each quantity's largest reading (taken at different moments).
    pub peak: SoakSample,
    /// After the rooms emptied and settled.
    pub end: SoakSample,
    /// Seconds from the last leave to the end reading.
    pub settle_s: f64,
    /// One verdict per quantity.
    pub checks: Vec<SoakCheck>,
    /// Every end rule held (quantities not measured do not count).
    pub passed: bool,
    /// Every reading, in order.
    pub timeline: Vec<SoakSample>,
}

/// Runs a soak against the server of `setup` (started here unless `setup.target`), writes
/// `soak.json` into `setup.out_dir` and returns the report (check [`SoakReport::passed`]).
pub async fn bench_soak(setup: &Setup, spec: &SoakSpec) -> anyhow::Result<SoakReport> {
    let progress = Progress::new(setup.quiet);
    let tag = format!("{}", std::process::id());
    let mut report = match &setup.target {
        Some(base) => {
            let driver: Arc<dyn Driver> = Arc::new(ConfabDriver::with_keep_alive(base, false));
            let mut r = soak(driver, &Probe::new(base, None), None, spec, &tag, &progress).await;
            r.target = base.clone();
            r.source = "remote: the server's /metrics only (no /proc here): memory from \
                        process_resident_memory_bytes, file descriptors from confab_open_fds; \
                        other users of the server move the figures too"
                .into();
            r
        }
        None => {
            let bin = find_server_binary(setup.server_bin.as_deref())?;
            // Headroom over the room size: a leave is still being processed when the next join
            // of the churn arrives.
            let server = LocalServer::start(&bin, (spec.max_per_room * 2).clamp(2, 100)).await?;
            let driver: Arc<dyn Driver> =
                Arc::new(ConfabDriver::with_keep_alive(&server.base, false));
            let probe = Probe::new(&server.base, Some(server.pid));
            let mut r = soak(driver, &probe, Some(server.pid), spec, &tag, &progress).await;
            server.stop().await;
            r.target = "local".into();
            r.source = "local: /proc/<pid> for memory (VmRSS) and file descriptors (fd/), \
                        the server's /metrics for the rest"
                .into();
            r
        }
    };
    report.tool = "confab-bench".into();
    report.mode = "soak".into();
    report.cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    write_soak(&setup.out_dir, &report)?;
    Ok(report)
}

/// Writes `soak.json` into `dir`.
pub fn write_soak(dir: &Path, report: &SoakReport) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("soak.json"), serde_json::to_string_pretty(report)?)?;
    Ok(())
}

/// A small deterministic generator for the churn's choices (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

struct Member {
    name: String,
    p: Box<dyn Participant>,
    camera_muted: bool,
    mic_muted: bool,
    chats: u64,
}

#[derive(Default)]
struct RoomState {
    /// Bumped each time the room empties: the next join opens a room under a new name.
    generation: u64,
    members: Vec<Member>,
    pending: usize,
}

impl RoomState {
    fn occupancy(&self) -> usize {
        self.members.len() + self.pending
    }
}

/// `(room index, generation, participant name, the join's outcome)`.
type JoinOutcome = (usize, u64, String, Result<Box<dyn Participant>, String>);

/// The churn's state: the rooms as the generator sees them, joins under way, leaves under way.
struct Churn {
    driver: Arc<dyn Driver>,
    tracks: Arc<Vec<(Source, SyntheticTrack)>>,
    tag: String,
    rooms: Vec<RoomState>,
    joins: JoinSet<JoinOutcome>,
    leaving: JoinSet<()>,
    rng: Rng,
    next_name: u64,
    activity: SoakActivity,
}

impl Churn {
    fn clients(&self) -> usize {
        self.rooms.iter().map(|r| r.members.len()).sum()
    }

    fn spawn_join(&mut self, r: usize) {
        let room = &mut self.rooms[r];
        if room.occupancy() == 0 {
            self.activity.rooms_opened += 1;
        }
        room.pending += 1;
        let generation = room.generation;
        let room_name = format!("soak-{}-{r}-{generation}", self.tag);
        let name = format!("s{}", self.next_name);
        self.next_name += 1;
        let driver = self.driver.clone();
        let tracks = self.tracks.clone();
        self.joins.spawn(async move {
            let res =
                tokio::time::timeout(JOIN_TIMEOUT, driver.join(&room_name, &name, &tracks)).await;
            let res = match res {
                Ok(Ok(p)) => Ok(p),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".to_owned()),
            };
            (r, generation, name, res)
        });
    }

    fn on_joined(&mut self, outcome: JoinOutcome) {
        let (r, generation, name, res) = outcome;
        let room = &mut self.rooms[r];
        room.pending = room.pending.saturating_sub(1);
        match res {
            Ok(p) if room.generation == generation => {
                self.activity.joins += 1;
                room.members.push(Member {
                    name,
                    p,
                    camera_muted: false,
                    mic_muted: false,
                    chats: 0,
                });
            }
            Ok(p) => {
                // Cannot happen (a room with a join under way does not count as empty), but a
                // participant is never dropped without leaving.
                self.activity.joins += 1;
                self.leave_now(p);
            }
            Err(e) => {
                self.activity.failed_joins += 1;
                tracing::warn!("soak join failed: {e}");
            }
        }
        self.close_if_empty(r);
    }

    fn close_if_empty(&mut self, r: usize) {
        if self.rooms[r].occupancy() == 0 {
            self.rooms[r].generation += 1;
        }
    }

    fn leave_now(&mut self, p: Box<dyn Participant>) {
        self.activity.received_packets += p
            .remote_tracks()
            .iter()
            .map(|t| t.stats.lock().map(|s| s.received).unwrap_or(0))
            .sum::<u64>();
        self.activity.leaves += 1;
        self.leaving.spawn(p.leave());
    }

    async fn leave_member(&mut self, r: usize, i: usize) {
        let mut m = self.rooms[r].members.swap_remove(i);
        self.activity.chat_acks += m.p.drain().await;
        tracing::debug!("soak: {} leaves after {} chat messages", m.name, m.chats);
        self.leave_now(m.p);
        self.close_if_empty(r);
    }

    /// One join or leave in a random room, keeping it within `min..=max`.
    async fn join_or_leave(&mut self, spec: &SoakSpec) {
        let r = self.rng.below(self.rooms.len());
        let occ = self.rooms[r].occupancy();
        let members = self.rooms[r].members.len();
        let join = if occ >= spec.max_per_room {
            false
        } else if occ <= spec.min_per_room || members == 0 {
            true
        } else {
            self.rng.coin()
        };
        if join {
            self.spawn_join(r);
        } else if members > 0 {
            let i = self.rng.below(members);
            self.leave_member(r, i).await;
        }
    }

    /// A random member of a random room that has one.
    fn pick(&mut self) -> Option<(usize, usize)> {
        let with: Vec<usize> = (0..self.rooms.len())
            .filter(|r| !self.rooms[*r].members.is_empty())
            .collect();
        if with.is_empty() {
            return None;
        }
        let r = with[self.rng.below(with.len())];
        let i = self.rng.below(self.rooms[r].members.len());
        Some((r, i))
    }

    async fn toggle_mute(&mut self) {
        let sources: Vec<Source> = self.tracks.iter().map(|(s, _)| *s).collect();
        if sources.is_empty() {
            return;
        }
        let Some((r, i)) = self.pick() else { return };
        let source = sources[self.rng.below(sources.len())];
        let m = &mut self.rooms[r].members[i];
        let flag = match source {
            Source::Microphone => &mut m.mic_muted,
            _ => &mut m.camera_muted,
        };
        *flag = !*flag;
        let muted = *flag;
        match tokio::time::timeout(OP_TIMEOUT, m.p.mute(source, muted)).await {
            Ok(Ok(true)) => self.activity.mute_toggles += 1,
            Ok(Ok(false)) => {}
            _ => self.activity.op_errors += 1,
        }
    }

    async fn chat(&mut self) {
        let Some((r, i)) = self.pick() else { return };
        let m = &mut self.rooms[r].members[i];
        m.chats += 1;
        let id = format!("{}-{}", m.name, m.chats);
        let text = format!("soak message {} from {}", m.chats, m.name);
        match tokio::time::timeout(OP_TIMEOUT, m.p.chat(&id, &text)).await {
            Ok(Ok(true)) => self.activity.chats_sent += 1,
            Ok(Ok(false)) => self.activity.chats_skipped += 1,
            _ => self.activity.op_errors += 1,
        }
    }

    async fn drain_all(&mut self) {
        for room in &mut self.rooms {
            for m in &mut room.members {
                self.activity.chat_acks += m.p.drain().await;
            }
        }
    }
}

/// Longest a mute or chat operation may take before it counts as an error.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the start waits for the idle server's task and descriptor counts to hold still.
const START_STABLE_WAIT: Duration = Duration::from_secs(10);

/// Consecutive failed scrapes after which the soak stops (the server is gone or hung).
const MAX_SCRAPE_FAILURES: u32 = 10;

async fn read(
    probe: &Probe,
    pid: Option<u32>,
    t0: Instant,
    phase: &str,
    clients: usize,
) -> SoakSample {
    let s = probe.sample().await;
    let m = |k: &str| s.metrics.get(k).map(|v| *v as u64);
    SoakSample {
        t_s: t0.elapsed().as_secs_f64(),
        phase: phase.to_owned(),
        // Local: VmRSS from /proc/<pid>/status; remote: process_resident_memory_bytes.
        rss_kib: s.rss_bytes.map(|b| b / 1024),
        rss_anon_kib: pid.and_then(rss_anon_kib),
        open_fds: match pid {
            Some(pid) => proc_fds(pid),
            None => m("confab_open_fds"),
        },
        tasks_alive: m("confab_tasks_alive"),
        routes: m("confab_routes"),
        subscriber_mlines: m("confab_subscriber_mlines"),
        rooms: m("confab_rooms"),
        participants: m("confab_participants"),
        signaling_sockets: m("confab_signaling_sockets"),
        clients,
    }
}

/// `RssAnon` of process `pid`, KiB.
fn rss_anon_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("RssAnon:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The verdicts on `end`: memory and file descriptors against `warm` when there is one (the
/// idle server after the warm-up cycle), everything else against `start`.
pub fn judge(
    spec: &SoakSpec,
    start: &SoakSample,
    warm: Option<&SoakSample>,
    peak: &SoakSample,
    end: &SoakSample,
) -> Vec<SoakCheck> {
    Quantity::ALL
        .iter()
        .map(|q| {
            let (baseline, base) = match (q.grows_once(), warm) {
                (true, Some(w)) => ("warm", q.of(w)),
                _ => ("start", q.of(start)),
            };
            let e = q.of(end);
            let (limit, rule) = match base {
                Some(b) => {
                    let (l, r) = q.limit(b, spec);
                    (Some(l), r)
                }
                None => (None, q.limit(0, spec).1),
            };
            let status = match (e, limit) {
                (Some(e), Some(l)) if e <= l => "ok",
                (Some(_), Some(_)) => "FAIL",
                _ => "not measured",
            };
            SoakCheck {
                quantity: q.name().to_owned(),
                start: q.of(start),
                warm: warm.and_then(|w| q.of(w)),
                peak: q.of(peak),
                end: e,
                baseline: baseline.to_owned(),
                limit,
                rule: rule.replace("start", baseline),
                status: status.to_owned(),
            }
        })
        .collect()
}

fn all_ok(checks: &[SoakCheck]) -> bool {
    checks.iter().all(|c| c.status != "FAIL")
}

/// Each quantity's largest reading over `samples`.
fn peak_of(samples: &[SoakSample]) -> SoakSample {
    let max = |f: fn(&SoakSample) -> Option<u64>| samples.iter().filter_map(f).max();
    SoakSample {
        t_s: samples.last().map_or(0.0, |s| s.t_s),
        phase: "peak".into(),
        rss_kib: max(|s| s.rss_kib),
        rss_anon_kib: max(|s| s.rss_anon_kib),
        open_fds: max(|s| s.open_fds),
        tasks_alive: max(|s| s.tasks_alive),
        routes: max(|s| s.routes),
        subscriber_mlines: max(|s| s.subscriber_mlines),
        rooms: max(|s| s.rooms),
        participants: max(|s| s.participants),
        signaling_sockets: max(|s| s.signaling_sockets),
        clients: samples.iter().map(|s| s.clients).max().unwrap_or(0),
    }
}

/// How long a phase of [`drive`] lasts.
#[derive(Clone, Copy)]
enum Until {
    /// Until this instant (the churn).
    At(Instant),
    /// Until the rooms are full and this long after (the warm-up), at most until the instant.
    FullThen(Duration, Instant),
}

/// Everything a phase needs to read the server and show progress.
struct Reader<'a> {
    probe: &'a Probe,
    pid: Option<u32>,
    t0: Instant,
    progress: &'a Progress,
    expected_s: f64,
    timeline: Vec<SoakSample>,
    scrape_failures: u32,
}

impl Reader<'_> {
    async fn read(&mut self, phase: &str, churn: &Churn) -> SoakSample {
        let s = read(self.probe, self.pid, self.t0, phase, churn.clients()).await;
        self.scrape_failures = if s.participants.is_none() {
            self.scrape_failures + 1
        } else {
            0
        };
        self.progress.draw(
            "soak",
            self.t0.elapsed().as_secs_f64() / self.expected_s,
            phase,
            &status_line(&s, &churn.activity),
        );
        self.timeline.push(s.clone());
        s
    }
}

/// Fills the rooms to their maximum (at the ramp rate), then, with `churn_on`, joins and leaves
/// at random; mute toggles and chat messages all along; one reading per `sample_every`. Returns
/// `Err` when the server stopped answering.
async fn drive(
    churn: &mut Churn,
    spec: &SoakSpec,
    reader: &mut Reader<'_>,
    phase: &str,
    churn_on: bool,
    until: Until,
) -> Result<(), String> {
    let rooms = churn.rooms.len();
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
    let every = |s: f64| {
        let mut i = tokio::time::interval(secs(s.max(0.05) / rooms as f64));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    };
    let mut ramp = tokio::time::interval(secs(1.0 / spec.ramp_per_s.max(0.1)));
    let mut join_leave = every(spec.join_leave_every_s);
    let mut mute = every(spec.mute_every_s);
    let mut chat = every(spec.chat_every_s);
    let mut tick = tokio::time::interval(secs(spec.sample_every_s.max(0.2)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut filling = true;
    let mut end = match until {
        Until::At(t) => t,
        Until::FullThen(_, cap) => cap,
    };
    let mut full_at: Option<Instant> = None;
    loop {
        if let Until::FullThen(hold, cap) = until {
            if full_at.is_none() && !filling && churn.joins.is_empty() {
                let now = Instant::now();
                full_at = Some(now);
                end = (now + hold).min(cap);
            }
        }
        tokio::select! {
            _ = ramp.tick(), if filling => {
                match (0..rooms).find(|r| churn.rooms[*r].occupancy() < spec.max_per_room) {
                    Some(r) => churn.spawn_join(r),
                    None => filling = false,
                }
            }
            _ = join_leave.tick(), if churn_on && !filling => churn.join_or_leave(spec).await,
            _ = mute.tick() => churn.toggle_mute().await,
            _ = chat.tick() => churn.chat().await,
            Some(res) = churn.joins.join_next(), if !churn.joins.is_empty() => {
                match res {
                    Ok(outcome) => churn.on_joined(outcome),
                    Err(e) => {
                        churn.activity.failed_joins += 1;
                        tracing::warn!("soak join task failed: {e}");
                    }
                }
            }
            Some(_) = churn.leaving.join_next(), if !churn.leaving.is_empty() => {}
            _ = tick.tick() => {
                churn.drain_all().await;
                let clients = churn.clients();
                churn.activity.peak_clients = churn.activity.peak_clients.max(clients);
                reader.read(phase, churn).await;
                if reader.scrape_failures >= MAX_SCRAPE_FAILURES {
                    return Err(format!(
                        "the server did not answer /metrics {MAX_SCRAPE_FAILURES} times in a row"
                    ));
                }
                if Instant::now() >= end {
                    return Ok(());
                }
            }
        }
    }
}

/// Lets the rooms empty: joins under way finish (bounded), then everyone leaves; waits for the
/// leaves (bounded). Returns when the last leave finished.
async fn empty_rooms(churn: &mut Churn) -> Instant {
    let _ = tokio::time::timeout(JOIN_TIMEOUT, async {
        while let Some(res) = churn.joins.join_next().await {
            match res {
                Ok(outcome) => churn.on_joined(outcome),
                Err(_) => churn.activity.failed_joins += 1,
            }
        }
    })
    .await;
    churn.joins.abort_all();
    for r in 0..churn.rooms.len() {
        while let Some(last) = churn.rooms[r].members.len().checked_sub(1) {
            churn.leave_member(r, last).await;
        }
        // Any pending join was aborted above.
        churn.rooms[r].pending = 0;
        churn.close_if_empty(r);
    }
    let leave_wait = tokio::time::timeout(Duration::from_secs(30), async {
        while churn.leaving.join_next().await.is_some() {}
    })
    .await;
    if leave_wait.is_err() {
        tracing::warn!("soak: some leaves did not finish within 30 s");
    }
    churn.leaving.abort_all();
    Instant::now()
}

/// Reads once a second from the rooms' emptying on: at least `settle_s`, then until `done`
/// holds for the reading, at most `settle_max_s`. Returns the last reading.
async fn settle(
    churn: &Churn,
    spec: &SoakSpec,
    reader: &mut Reader<'_>,
    phase: &str,
    left_at: Instant,
    done: impl Fn(&SoakSample) -> bool,
) -> SoakSample {
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
    let (min, max) = (
        secs(spec.settle_s),
        secs(spec.settle_max_s.max(spec.settle_s)),
    );
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let s = reader.read(phase, churn).await;
        let waited = left_at.elapsed();
        if waited >= max || (waited >= min && done(&s)) {
            return s;
        }
    }
}

/// The soak itself, against the server behind `driver` and `probe` (`pid`: the local server's
/// process, for `/proc`). `tag` keeps room names unique across soaks on one server.
///
/// Phases: the start reading (the idle server); with `spec.warmup`, one cycle that fills every
/// room, holds it `warmup_hold_s` and empties it, then the `warm` reading; the churn for
/// `duration_s`; the rooms empty; the end reading after `settle_s` (or later, see
/// [`SoakSpec::settle_max_s`]).
pub async fn soak(
    driver: Arc<dyn Driver>,
    probe: &Probe,
    pid: Option<u32>,
    spec: &SoakSpec,
    tag: &str,
    progress: &Progress,
) -> SoakReport {
    let started_at_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));

    // The start: the idle server, once its task and descriptor counts hold still for two
    // readings (its HTTP workers may still be starting; the first scrape opens a connection).
    let t0 = Instant::now();
    let mut start = read(probe, pid, t0, "start", 0).await;
    let stable_by = Instant::now() + START_STABLE_WAIT;
    while Instant::now() < stable_by {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let again = read(probe, pid, t0, "start", 0).await;
        let still = again.tasks_alive == start.tasks_alive && again.open_fds == start.open_fds;
        start = again;
        if still {
            break;
        }
    }
    start.t_s = 0.0;

    let rooms = spec.rooms.max(1);
    let max = spec.max_per_room.max(1);
    let spec = SoakSpec {
        rooms,
        max_per_room: max,
        min_per_room: spec.min_per_room.min(max),
        ..spec.clone()
    };
    let fill_s = (rooms * max) as f64 / spec.ramp_per_s.max(0.1);
    let mut reader = Reader {
        probe,
        pid,
        t0: Instant::now(),
        progress,
        expected_s: spec.duration_s.max(1.0)
            + spec.settle_s
            + 5.0
            + if spec.warmup {
                fill_s + spec.warmup_hold_s + spec.settle_s + 5.0
            } else {
                0.0
            },
        timeline: vec![start.clone()],
        scrape_failures: 0,
    };
    let mut churn = Churn {
        driver,
        tracks: Arc::new(spec.tracks()),
        tag: tag.to_owned(),
        rooms: (0..rooms).map(|_| RoomState::default()).collect(),
        joins: JoinSet::new(),
        leaving: JoinSet::new(),
        rng: Rng::new(spec.seed),
        next_name: 0,
        activity: SoakActivity::default(),
    };
    let mut aborted: Option<String> = None;

    // Warm-up: one full cycle, so that what the server grows once (code paged in from the
    // binary, allocator arenas, the database pool's connections and caches) is in the baseline
    // memory and descriptors are judged against.
    let mut warm = None;
    if spec.warmup {
        let cap = Instant::now() + secs(fill_s) + JOIN_TIMEOUT + secs(spec.warmup_hold_s);
        let r = drive(
            &mut churn,
            &spec,
            &mut reader,
            "warmup",
            false,
            Until::FullThen(secs(spec.warmup_hold_s), cap),
        )
        .await;
        if let Err(why) = r {
            aborted = Some(why);
        }
        let left_at = empty_rooms(&mut churn).await;
        let back = |s: &SoakSample| {
            [
                Quantity::TasksAlive,
                Quantity::Routes,
                Quantity::SubscriberMlines,
                Quantity::Rooms,
                Quantity::Participants,
                Quantity::SignalingSockets,
            ]
            .iter()
            .all(|q| q.of(s) <= q.of(&start))
        };
        let mut w = settle(&churn, &spec, &mut reader, "warmup", left_at, back).await;
        w.phase = "warm".into();
        warm = Some(w);
    }

    if aborted.is_none() {
        let churn_end = Instant::now() + secs(spec.duration_s.max(1.0));
        if let Err(why) = drive(
            &mut churn,
            &spec,
            &mut reader,
            "churn",
            true,
            Until::At(churn_end),
        )
        .await
        {
            aborted = Some(why);
        }
    }
    let left_at = empty_rooms(&mut churn).await;
    reader.read("leave", &churn).await;
    let peak_until = reader.timeline.len();
    let mut end = settle(&churn, &spec, &mut reader, "settle", left_at, |s| {
        all_ok(&judge(&spec, &start, warm.as_ref(), &start, s))
    })
    .await;
    progress.finish();
    let settle_s = left_at.elapsed().as_secs_f64();
    end.phase = "end".into();
    let peak = peak_of(&reader.timeline[..peak_until]);
    let checks = judge(&spec, &start, warm.as_ref(), &peak, &end);
    let mut passed = all_ok(&checks);
    if let Some(why) = aborted {
        tracing::error!("soak stopped early: {why}");
        passed = false;
    }
    SoakReport {
        started_at_unix_s,
        spec: Some(spec),
        activity: churn.activity,
        start,
        warm,
        peak,
        end,
        settle_s,
        checks,
        passed,
        timeline: reader.timeline,
        ..Default::default()
    }
}

fn status_line(s: &SoakSample, a: &SoakActivity) -> String {
    let o = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    format!(
        "clients {} | rooms {} | parts {} | rss {} KiB | fds {} | tasks {} | routes {} | m-lines {} | joins {} leaves {} chats {}",
        s.clients,
        o(s.rooms),
        o(s.participants),
        o(s.rss_kib),
        o(s.open_fds),
        o(s.tasks_alive),
        o(s.routes),
        o(s.subscriber_mlines),
        a.joins,
        a.leaves,
        a.chats_sent
    )
}

/// The terminal table: start, warm, peak and end of every quantity, the limit and the verdict.
pub fn table(r: &SoakReport) -> String {
    let o = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    let mut s = format!(
        "{:<18} {:>10} {:>10} {:>10} {:>10} {:>10}  {:<6} rule\n",
        "quantity", "start", "warm", "peak", "end", "limit", "status"
    );
    for c in &r.checks {
        s.push_str(&format!(
            "{:<18} {:>10} {:>10} {:>10} {:>10} {:>10}  {:<6} {}\n",
            c.quantity,
            o(c.start),
            o(c.warm),
            o(c.peak),
            o(c.end),
            o(c.limit),
            c.status,
            c.rule
        ));
    }
    if r.start.rss_anon_kib.is_some() {
        s.push_str(&format!(
            "{:<18} {:>10} {:>10} {:>10} {:>10} {:>10}  {:<6} not judged (RssAnon: heap and stacks, without code paged in)\n",
            "rss_anon_kib",
            o(r.start.rss_anon_kib),
            o(r.warm.as_ref().and_then(|w| w.rss_anon_kib)),
            o(r.peak.rss_anon_kib),
            o(r.end.rss_anon_kib),
            "-",
            "info"
        ));
    }
    let a = &r.activity;
    s.push_str(&format!(
        "activity: {} joins ({} failed), {} leaves, {} rooms opened, {} mute toggles, {} chat messages sent ({} acked, {} skipped: channel not open), {} operation errors, at most {} participants at once, {} media packets received\n",
        a.joins, a.failed_joins, a.leaves, a.rooms_opened, a.mute_toggles, a.chats_sent, a.chat_acks,
        a.chats_skipped, a.op_errors, a.peak_clients, a.received_packets
    ));
    s.push_str(&format!(
        "end read {:.1} s after the last leave; figures: {}\n",
        r.settle_s, r.source
    ));
    s.push_str(
        "start: the idle server before any join; warm: idle again after one warm-up cycle (every room filled and emptied); peak: each quantity's largest reading; rss in KiB.\n\
         Memory and descriptors are judged against warm when there was a warm-up: the first joins page in code and grow allocator arenas, database connections and caches once (not a leak); a leak keeps growing past warm. The allowance (10 % + a few MiB by default) is for allocator noise. The HTTP workers' spawn_local tasks, one per signaling session, are not in tasks_alive: signaling_sockets stands for them.\n",
    );
    s.push_str(if r.passed {
        "soak: PASSED (every quantity back within its limit)\n"
    } else {
        "soak: FAILED (see the FAIL lines)\n"
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rss: u64, fds: u64, tasks: u64, parts: u64) -> SoakSample {
        SoakSample {
            rss_kib: Some(rss),
            open_fds: Some(fds),
            tasks_alive: Some(tasks),
            routes: Some(0),
            subscriber_mlines: Some(0),
            rooms: Some(0),
            participants: Some(parts),
            signaling_sockets: None,
            ..Default::default()
        }
    }

    #[test]
    fn the_end_is_judged_against_the_start_with_the_memory_and_fd_allowances() {
        let spec = SoakSpec {
            rss_tolerance_percent: 10.0,
            rss_slack_mib: 4.0,
            fd_slack: 5,
            ..SoakSpec::default()
        };
        let start = sample(20_000, 30, 12, 0);
        // 20 000 × 1.1 + 4 MiB = 26 096 KiB.
        let fine = sample(26_096, 35, 12, 0);
        let checks = judge(&spec, &start, None, &fine, &fine);
        assert!(all_ok(&checks), "{checks:?}");
        assert_eq!(checks[0].limit, Some(26_096));
        assert_eq!(checks[7].status, "not measured");

        let leaky = sample(26_097, 36, 13, 1);
        let checks = judge(&spec, &start, None, &leaky, &leaky);
        let failed: Vec<&str> = checks
            .iter()
            .filter(|c| c.status == "FAIL")
            .map(|c| c.quantity.as_str())
            .collect();
        assert_eq!(
            failed,
            ["rss_kib", "open_fds", "tasks_alive", "participants"]
        );
        assert!(table(&SoakReport {
            checks,
            ..Default::default()
        })
        .contains("FAIL"));

        // After a warm-up, memory and descriptors are judged against the warm reading, the
        // rest still against the start.
        let warm = sample(30_000, 40, 12, 0);
        let end = sample(30_500, 41, 12, 0);
        let checks = judge(&spec, &start, Some(&warm), &end, &end);
        assert!(all_ok(&checks), "{checks:?}");
        assert_eq!(
            (checks[0].baseline.as_str(), checks[2].baseline.as_str()),
            ("warm", "start")
        );
        assert_eq!(checks[1].limit, Some(45));
    }

    #[test]
    fn the_peak_is_each_quantitys_largest_reading() {
        let p = peak_of(&[sample(10, 5, 3, 0), sample(8, 9, 2, 4), sample(9, 4, 7, 1)]);
        assert_eq!(
            (p.rss_kib, p.open_fds, p.tasks_alive, p.participants),
            (Some(10), Some(9), Some(7), Some(4))
        );
    }

    #[test]
    fn the_churn_generator_is_deterministic_and_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            let x = a.below(5);
            assert_eq!(x, b.below(5));
            assert!(x < 5);
        }
    }
}
