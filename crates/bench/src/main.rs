//! `confab-bench`: `run` one load, `sweep` rising loads to find capacity, or `soak` (churn
//! rooms for a while, then check the server returned to its starting state). See the crate docs
//! and docs/performance.md.

use clap::{Args, Parser, Subcommand};
use confab_bench::run::LoadSpec;
use confab_bench::soak::{bench_soak, SoakSpec};
use confab_bench::{bench_run, bench_sweep, report, Setup, SweepSpec};
use std::path::PathBuf;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// Load generator and benchmark for confab.
#[derive(Debug, Parser)]
#[command(name = "confab-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// One run at one load.
    Run {
        #[command(flatten)]
        common: Common,
        /// Rooms.
        #[arg(long, default_value_t = 1)]
        rooms: usize,
        /// Participants per room.
        #[arg(long, default_value_t = 2)]
        participants: usize,
    },
    /// Raise the load until loss or p99 latency passes its bound, per room size.
    Sweep {
        #[command(flatten)]
        common: Common,
        /// Room sizes, comma-separated (2 = 1:1 calls).
        #[arg(long, value_delimiter = ',', default_value = "2,4,10")]
        sizes: Vec<usize>,
        /// Most participants in one level (the generator's own CPU limit).
        #[arg(long, default_value_t = 40)]
        max_participants: usize,
        /// Loss bound, percent.
        #[arg(long, default_value_t = 1.0)]
        max_loss: f64,
        /// p99 latency bound, ms.
        #[arg(long, default_value_t = 50.0)]
        max_p99_ms: f64,
        /// Rooms grow by this factor per level (at least one more room).
        #[arg(long, default_value_t = 2.0)]
        growth: f64,
        /// Wait for other processes to go quiet before each level, and repeat disturbed levels.
        #[arg(long)]
        wait_quiet: bool,
    },
    /// Keep rooms churning (joins, leaves, mute toggles, chat messages) for a while, let them
    /// empty, and check that the server's memory, file descriptors, tasks, routes, subscriber
    /// m-lines, rooms and participants came back to where they started (exit status 1 if not).
    Soak(SoakArgs),
}

#[derive(Debug, Args)]
struct SoakArgs {
    /// A running server (`http://host:port`): then only its /metrics is read (no /proc);
    /// default: start `confab serve` on 127.0.0.1.
    #[arg(long)]
    target: Option<String>,
    /// The confab binary for a local server (default: next to confab-bench, or $CONFAB_BIN).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// How long the rooms churn, seconds (the initial fill included).
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Rooms.
    #[arg(long, default_value_t = 3)]
    rooms: usize,
    /// Most participants per room (the rooms first fill to this).
    #[arg(long, default_value_t = 4)]
    participants: usize,
    /// Fewest participants a room is churned down to (0: rooms empty, close and reopen).
    #[arg(long, default_value_t = 0)]
    min_participants: usize,
    /// Joins per second while the rooms first fill.
    #[arg(long, default_value_t = 4.0)]
    ramp: f64,
    /// Each room sees a join or a leave about this often, seconds.
    #[arg(long, default_value_t = 3.0)]
    join_leave_every: f64,
    /// Each room sees a mute toggle about this often, seconds.
    #[arg(long, default_value_t = 4.0)]
    mute_every: f64,
    /// Each room sees a chat message about this often, seconds.
    #[arg(long, default_value_t = 2.0)]
    chat_every: f64,
    /// Wait at least this long after the rooms emptied before the end reading, seconds.
    #[arg(long, default_value_t = 5.0)]
    settle: f64,
    /// Keep reading until every rule holds, at most this long after the rooms emptied, seconds.
    #[arg(long, default_value_t = 30.0)]
    settle_max: f64,
    /// Read the server this often, seconds.
    #[arg(long, default_value_t = 1.0)]
    sample_every: f64,
    /// Video bitrate per publisher, kbit/s (0: no video).
    #[arg(long, default_value_t = 300)]
    video_kbps: u32,
    /// Audio bitrate per publisher, kbit/s (0: no audio).
    #[arg(long, default_value_t = 32)]
    audio_kbps: u32,
    /// Video packets per second per publisher.
    #[arg(long, default_value_t = 30)]
    video_pps: u32,
    /// Audio packets per second per publisher.
    #[arg(long, default_value_t = 50)]
    audio_pps: u32,
    /// Resident memory may end this many percent above the start …
    #[arg(long, default_value_t = 10.0)]
    rss_tolerance: f64,
    /// … plus this many MiB (allocator noise).
    #[arg(long, default_value_t = 4.0)]
    rss_slack_mib: f64,
    /// Open file descriptors may end this many above the start (database pool connections).
    #[arg(long, default_value_t = 8)]
    fd_slack: u64,
    /// Seed of the churn's choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// No warm-up cycle: judge memory and file descriptors against the server before any join
    /// (what grows once at first use then counts against the allowance).
    #[arg(long)]
    no_warmup: bool,
    /// How long the warm-up cycle holds the full rooms, seconds.
    #[arg(long, default_value_t = 3.0)]
    warmup_hold: f64,
    /// Output directory for soak.json.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

impl SoakArgs {
    fn spec(&self) -> SoakSpec {
        SoakSpec {
            duration_s: self.duration.max(1.0),
            rooms: self.rooms.max(1),
            max_per_room: self.participants.max(1),
            min_per_room: self.min_participants,
            ramp_per_s: self.ramp.max(0.1),
            join_leave_every_s: self.join_leave_every.max(0.05),
            mute_every_s: self.mute_every.max(0.05),
            chat_every_s: self.chat_every.max(0.05),
            settle_s: self.settle.max(0.0),
            settle_max_s: self.settle_max.max(self.settle),
            sample_every_s: self.sample_every.max(0.2),
            video_kbps: self.video_kbps,
            audio_kbps: self.audio_kbps,
            video_pps: self.video_pps,
            audio_pps: self.audio_pps,
            rss_tolerance_percent: self.rss_tolerance.max(0.0),
            rss_slack_mib: self.rss_slack_mib.max(0.0),
            fd_slack: self.fd_slack,
            seed: self.seed,
            warmup: !self.no_warmup,
            warmup_hold_s: self.warmup_hold.max(0.0),
        }
    }
}

#[derive(Debug, Args)]
struct Common {
    /// A running server (`http://host:port`); default: start `confab serve` on 127.0.0.1 per run.
    #[arg(long)]
    target: Option<String>,
    /// The confab binary for local runs (default: next to confab-bench, or $CONFAB_BIN).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Video bitrate per publisher, kbit/s (0: no video).
    #[arg(long, default_value_t = 800)]
    video_kbps: u32,
    /// Audio bitrate per publisher, kbit/s (0: no audio).
    #[arg(long, default_value_t = 64)]
    audio_kbps: u32,
    /// Video packets per second per publisher (raised if a packet would exceed the MTU).
    #[arg(long, default_value_t = 100)]
    video_pps: u32,
    /// Audio packets per second per publisher.
    #[arg(long, default_value_t = 50)]
    audio_pps: u32,
    /// Measurement window, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Settling time after the last join, seconds.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Joins started per second.
    #[arg(long, default_value_t = 5.0)]
    ramp: f64,
    /// Publish video as three simulcast layers (l, m, h: 10 %, 33 % and 100 % of the packet
    /// rate), as the browser client does.
    #[arg(long)]
    simulcast: bool,
    /// Every subscriber reports each remote video tile as this many px wide (`track_settings`);
    /// with `--simulcast`, 320 gets the low layer, as in a grid of small tiles.
    #[arg(long)]
    tile_width: Option<u32>,
    /// Output directory for report.json and chart.svg.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

impl Common {
    fn setup(&self) -> Setup {
        Setup {
            target: self.target.clone(),
            server_bin: self.server_bin.clone(),
            out_dir: self.out.clone(),
            quiet: self.quiet,
        }
    }
    fn load(&self, rooms: usize, per_room: usize) -> LoadSpec {
        LoadSpec {
            rooms: rooms.max(1),
            per_room: per_room.max(1),
            video_kbps: self.video_kbps,
            audio_kbps: self.audio_kbps,
            video_pps: self.video_pps,
            audio_pps: self.audio_pps,
            warmup: Duration::from_secs_f64(self.warmup.max(0.0)),
            duration: Duration::from_secs_f64(self.duration.max(1.0)),
            ramp_per_s: self.ramp.max(0.1),
            simulcast: self.simulcast,
            tile_width: self.tile_width,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("error")),
        )
        .init();
    let cli = Cli::parse();
    let (report, out) = match cli.command {
        Cmd::Soak(args) => {
            let setup = Setup {
                target: args.target.clone(),
                server_bin: args.server_bin.clone(),
                out_dir: args.out.clone(),
                quiet: args.quiet,
            };
            let report = bench_soak(&setup, &args.spec()).await?;
            print!("{}", confab_bench::soak::table(&report));
            println!("wrote {}", args.out.join("soak.json").display());
            if !report.passed {
                std::process::exit(1);
            }
            return Ok(());
        }
        Cmd::Run {
            common,
            rooms,
            participants,
        } => (
            bench_run(&common.setup(), &common.load(rooms, participants)).await?,
            common.out,
        ),
        Cmd::Sweep {
            common,
            sizes,
            max_participants,
            max_loss,
            max_p99_ms,
            growth,
            wait_quiet,
        } => {
            let sweep = SweepSpec {
                sizes,
                max_participants,
                max_loss_percent: max_loss,
                max_p99_ms,
                growth: growth.max(1.0),
                wait_quiet,
            };
            (
                bench_sweep(&common.setup(), &common.load(1, 2), &sweep).await?,
                common.out,
            )
        }
    };
    print!("{}", report::table(&report));
    println!(
        "wrote {} and {}",
        out.join("report.json").display(),
        out.join("chart.svg").display()
    );
    Ok(())
}
