//! # confab-bench: load generator and benchmark
//!
//! webrtc-rs clients (`confab-client`) join rooms on a confab server, publish pre-built
//! VP8-like and Opus-like RTP (no encoder: each payload carries a counter and the send time)
//! and subscribe to everyone else. One **run** ([`run::run_level`]) ramps the joins, warms up,
//! measures a window and leaves; a **sweep** ([`bench_sweep`]) repeats runs at rising load until loss
//! or p99 latency passes its bound, per room size.
//!
//! Figures come from two sides and are never mixed up: the server's own accounting (CPU time
//! and resident memory of the server *process* from `/proc/<pid>`, or from its `/metrics`
//! when remote; forwarded packets, bytes and drops from `/metrics`) and the clients' receive
//! statistics (loss, order, latency, join time). The generator's own CPU is not the server's:
//! on a small machine the generator is usually what limits the load (see docs/performance.md).
//!
//! A **soak** ([`soak::bench_soak`]) keeps rooms churning (joins, leaves, mute toggles, chat)
//! for a set time, lets them empty, and checks that the server's memory, file descriptors,
//! tasks, routes, subscriber m-lines, rooms and participants came back to where they started.
//!
//! Signaling is behind [`driver::Driver`], so a WHIP/WHEP driver can measure other servers.
//! Outputs: a table on stdout, `report.json`, and `chart.svg` (latency and CPU against load);
//! a soak writes `soak.json`.

#![warn(missing_docs)]

pub mod chart;
pub mod driver;
pub mod progress;
pub mod report;
pub mod run;
pub mod server;
pub mod soak;

use driver::{ConfabDriver, Driver};
use progress::Progress;
use report::{Capacity, Report, RunReport};
use run::{run_level, LoadSpec};
use server::{find_server_binary, LocalServer, Probe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Microseconds since the Unix epoch (the clock the synthetic payloads carry).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Where the server is and how results are written.
#[derive(Debug, Clone)]
pub struct Setup {
    /// `http://host:port` of a running server; `None`: start `confab serve` locally per run.
    pub target: Option<String>,
    /// The `confab` binary for local runs (default: next to this one, or `$CONFAB_BIN`).
    pub server_bin: Option<PathBuf>,
    /// Directory for `report.json` and `chart.svg`.
    pub out_dir: PathBuf,
    /// No progress bar.
    pub quiet: bool,
}

/// Bounds and extent of a sweep.
#[derive(Debug, Clone)]
pub struct SweepSpec {
    /// Room sizes to sweep (e.g. 2, 4, 10).
    pub sizes: Vec<usize>,
    /// Stop a size before exceeding this many participants (the generator's own limit).
    pub max_participants: usize,
    /// Loss bound, percent.
    pub max_loss_percent: f64,
    /// p99 latency bound, ms.
    pub max_p99_ms: f64,
    /// Each level has about this many times the rooms of the previous one (at least one more).
    pub growth: f64,
    /// Before each level, wait (up to [`QUIET_WAIT`]) until other processes use less than
    /// [`QUIET_CPU_PERCENT`] of one core, and repeat a level (up to [`LEVEL_RETRIES`] times) when
    /// they used more than that during its window: figures from a shared machine stay clean.
    pub wait_quiet: bool,
}

/// How long a sweep waits for the machine to become quiet before a level.
pub const QUIET_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// CPU of other processes (percent of one core) under which the machine counts as quiet.
pub const QUIET_CPU_PERCENT: f64 = 25.0;

/// Times a disturbed level is run again.
pub const LEVEL_RETRIES: usize = 2;

/// Waits until everything on the machine together uses less than [`QUIET_CPU_PERCENT`] of one
/// core over 3 s (checked every 3 s, at most `max`). Returns whether it became quiet.
pub async fn wait_until_quiet(max: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + max;
    while std::time::Instant::now() < deadline {
        let a = server::machine_busy_us();
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        match (a, server::machine_busy_us()) {
            (Some(a), Some(b)) if (b - a) / 3e6 * 100.0 < QUIET_CPU_PERCENT => return true,
            (None, _) | (_, None) => return true,
            _ => {}
        }
    }
    false
}

/// One run at `load`; writes the outputs and returns the report.
pub async fn bench_run(setup: &Setup, load: &LoadSpec) -> anyhow::Result<Report> {
    let mut report = new_report(setup, "run");
    let progress = Progress::new(setup.quiet);
    report
        .runs
        .push(one_level(setup, load, "r", &progress).await?);
    write_outputs(setup, &report)?;
    Ok(report)
}

/// A sweep: per room size, raise the number of rooms until a bound is passed or the generator
/// limit is reached; the capacity is the last level within bounds.
pub async fn bench_sweep(
    setup: &Setup,
    base: &LoadSpec,
    sweep: &SweepSpec,
) -> anyhow::Result<Report> {
    let mut report = new_report(setup, "sweep");
    let progress = Progress::new(setup.quiet);
    for (si, &size) in sweep.sizes.iter().enumerate() {
        let mut cap = Capacity {
            participants_per_room: size,
            stopped_because: "no level ran".into(),
            ..Default::default()
        };
        let mut rooms = 1usize;
        for level in 0..64 {
            if rooms * size > sweep.max_participants {
                cap.stopped_because = format!(
                    "generator limit: next level ({} participants) above --max-participants {}",
                    rooms * size,
                    sweep.max_participants
                );
                break;
            }
            let load = LoadSpec {
                rooms,
                per_room: size,
                ..base.clone()
            };
            let mut r = RunReport::default();
            for attempt in 0..=LEVEL_RETRIES {
                if sweep.wait_quiet && !wait_until_quiet(QUIET_WAIT).await {
                    tracing::warn!(
                        "the machine did not become quiet within {QUIET_WAIT:?}; measuring anyway"
                    );
                }
                r = one_level(setup, &load, &format!("s{si}l{level}a{attempt}"), &progress).await?;
                let disturbed = r.other_cpu_percent.is_some_and(|o| o > QUIET_CPU_PERCENT);
                if !(sweep.wait_quiet && disturbed) {
                    break;
                }
                tracing::warn!(
                    "level {rooms}x{size} disturbed by other processes ({:?} %); again",
                    r.other_cpu_percent
                );
            }
            let ok = r.within(sweep.max_loss_percent, sweep.max_p99_ms);
            let why = why_not(&r, sweep);
            report.runs.push(r.clone());
            if !ok {
                cap.stopped_because = why;
                break;
            }
            cap.rooms = rooms;
            cap.participants = r.participants;
            cap.forwarded_packets_per_s = r.forwarded_packets_per_s;
            rooms = ((rooms as f64 * sweep.growth).ceil() as usize).max(rooms + 1);
        }
        report.capacity.push(cap);
        write_outputs(setup, &report)?;
    }
    write_outputs(setup, &report)?;
    Ok(report)
}

fn why_not(r: &RunReport, s: &SweepSpec) -> String {
    if r.failed_joins > 0 {
        format!("{} joins failed", r.failed_joins)
    } else if r.joined_without_media > 0 {
        format!("{} participants received no media", r.joined_without_media)
    } else if r.loss_percent > s.max_loss_percent {
        format!("loss {:.2} % > {} %", r.loss_percent, s.max_loss_percent)
    } else {
        format!(
            "p99 latency {:.1} ms > {} ms",
            r.latency_ms.p99, s.max_p99_ms
        )
    }
}

async fn one_level(
    setup: &Setup,
    load: &LoadSpec,
    tag: &str,
    progress: &Progress,
) -> anyhow::Result<RunReport> {
    let tag = format!("{tag}-{}", std::process::id());
    match &setup.target {
        Some(base) => {
            let driver: Arc<dyn Driver> =
                Arc::new(ConfabDriver::new(base).with_tile_width(load.tile_width));
            Ok(run_level(driver, &Probe::new(base, None), load, &tag, progress).await)
        }
        None => {
            let bin = find_server_binary(setup.server_bin.as_deref())?;
            let server = LocalServer::start(&bin, load.per_room.max(2)).await?;
            let driver: Arc<dyn Driver> =
                Arc::new(ConfabDriver::new(&server.base).with_tile_width(load.tile_width));
            let r = run_level(
                driver,
                &Probe::new(&server.base, Some(server.pid)),
                load,
                &tag,
                progress,
            )
            .await;
            server.stop().await;
            Ok(r)
        }
    }
}

fn new_report(setup: &Setup, mode: &str) -> Report {
    Report {
        tool: "confab-bench".into(),
        mode: mode.into(),
        target: setup.target.clone().unwrap_or_else(|| "local".into()),
        driver: "confab".into(),
        started_at_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        runs: vec![],
        capacity: vec![],
    }
}

/// Writes `report.json` and `chart.svg` into the output directory.
pub fn write_outputs(setup: &Setup, report: &Report) -> anyhow::Result<()> {
    write_to(&setup.out_dir, report)
}

fn write_to(dir: &Path, report: &Report) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    std::fs::write(dir.join("chart.svg"), chart::for_report(report))?;
    Ok(())
}
