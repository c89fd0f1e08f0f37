//! The server under test: a `confab` child process the generator starts itself, or a remote
//! server given by URL; and the [`Probe`] that reads the server's own accounting (CPU time and
//! resident memory of the server process, the media plane's counters from `/metrics`).

use std::collections::HashMap;
use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on Linux for every
/// architecture this runs on).
const CLOCK_TICKS_PER_S: f64 = 100.0;

/// How long a started server has to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A `confab serve` child process on 127.0.0.1, killed (and its data dir removed) on drop.
pub struct LocalServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The server's process id (for `/proc`).
    pub pid: u32,
    data_dir: PathBuf,
}

/// Finds the `confab` binary: `explicit`, else `$CONFAB_BIN`, else next to this executable (or
/// one directory up, where test binaries in `deps/` have it).
pub fn find_server_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    if let Some(p) = std::env::var_os("CONFAB_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent();
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let candidate = d.join("confab");
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent();
    }
    anyhow::bail!(
        "the confab binary was not found next to {} (build it, or set CONFAB_BIN)",
        exe.display()
    )
}

impl LocalServer {
    /// Starts `bin serve` on an OS-chosen HTTP and media port with a fresh data dir, and waits
    /// until it prints its address. `max_participants` is the per-room limit.
    pub async fn start(bin: &Path, max_participants: usize) -> anyhow::Result<Self> {
        let data_dir =
            std::env::temp_dir().join(format!("confab-bench-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&data_dir)?;
        // The benchmark needs no browser client: a placeholder keeps the server independent of
        // the state of static/.
        let static_dir = data_dir.join("static");
        std::fs::create_dir_all(&static_dir)?;
        std::fs::write(
            static_dir.join("index.html"),
            "<!doctype html><title>confab-bench</title>\n",
        )?;
        let log = std::env::var("CONFAB_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into());
        let mut command = Command::new(bin);
        // The server dies with the generator even when the generator is killed (no orphaned
        // server holding ports after a CI timeout).
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec here.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--media-port",
                "0",
                "--public-ip",
                "127.0.0.1",
            ])
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--static-dir")
            .arg(&static_dir)
            .arg("--max-participants")
            .arg(max_participants.clamp(2, 100).to_string())
            // Every simulated participant comes from this one machine: per-address and
            // per-user admission limits would measure themselves, not forwarding.
            .args(["--max-sockets-per-ip", "0", "--joins-per-ip-per-min", "0"])
            .env("RUST_LOG", log)
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {}: {e}", bin.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped");
        // A thread reads the server's stdout: it hands over the address line, then keeps
        // draining so the pipe never fills and blocks the server; it ends when the server does.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("open http://").nth(1) {
                    let addr = rest.split('/').next().unwrap_or_default().to_owned();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(format!("http://{addr}"));
                    }
                }
            }
        });
        let base = match tokio::time::timeout(START_TIMEOUT, rx).await {
            Ok(Ok(base)) => base,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("the server did not print its address within {START_TIMEOUT:?}");
            }
        };
        Ok(Self {
            child,
            base,
            pid,
            data_dir,
        })
    }

    /// Stops the server (SIGKILL; it holds nothing that needs a clean shutdown here).
    pub async fn stop(self) {
        drop(self);
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// One reading of the server's accounting.
#[derive(Debug, Clone, Default)]
pub struct ServerSample {
    /// User + system CPU time of the server process, µs.
    pub cpu_us: Option<f64>,
    /// Resident memory, bytes.
    pub rss_bytes: Option<u64>,
    /// CPU time of the server's media threads (`confab-media-<i>`, every worker) alone, µs (local servers only).
    pub media_thread_cpu_us: Option<f64>,
    /// Every `/metrics` series (`name{labels}` → value); empty if the scrape failed.
    pub metrics: HashMap<String, f64>,
}

impl ServerSample {
    /// A series' value, 0 if absent.
    pub fn get(&self, series: &str) -> f64 {
        self.metrics.get(series).copied().unwrap_or(0.0)
    }
}

/// Reads a server's accounting: `/proc/<pid>` for a local child, `/metrics` for the counters
/// (and for CPU and memory of a remote server, from its `process_*` series).
pub struct Probe {
    base: String,
    pid: Option<u32>,
    http: reqwest::Client,
}

impl Probe {
    /// A probe for the server at `base`, with `pid` when it runs on this machine.
    pub fn new(base: &str, pid: Option<u32>) -> Self {
        // reqwest's rustls has no provider of its own in this workspace: ring, once per process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("http client");
        Self {
            base: base.trim_end_matches('/').to_owned(),
            pid,
            http,
        }
    }

    /// Reads everything once.
    pub async fn sample(&self) -> ServerSample {
        let metrics = self.scrape().await.unwrap_or_default();
        let (mut cpu_us, mut rss_bytes, mut media_thread_cpu_us) = (None, None, None);
        if let Some(pid) = self.pid {
            if let Some((c, r)) = proc_usage(pid) {
                cpu_us = Some(c);
                rss_bytes = Some(r);
            }
            media_thread_cpu_us = thread_cpu_us(pid, MEDIA_THREAD);
        }
        if cpu_us.is_none() {
            cpu_us = metrics.get("process_cpu_seconds_total").map(|s| s * 1e6);
        }
        if rss_bytes.is_none() {
            rss_bytes = metrics
                .get("process_resident_memory_bytes")
                .map(|b| *b as u64);
        }
        ServerSample {
            cpu_us,
            rss_bytes,
            media_thread_cpu_us,
            metrics,
        }
    }

    async fn scrape(&self) -> Option<HashMap<String, f64>> {
        let resp = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        Some(parse_prometheus_text(&resp.text().await.ok()?))
    }
}

/// `(cpu µs, resident bytes)` of process `pid`.
pub fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command name: field 3 (state) is index 0, so utime (14) is 11 and stime (15) 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((
        (utime + stime) as f64 / CLOCK_TICKS_PER_S * 1e6,
        rss_kib * 1024,
    ))
}

/// Open file descriptors of process `pid` (entries of `/proc/<pid>/fd`; needs the same user or
/// root).
pub fn proc_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// Name prefix of the server's media worker threads (`confab-media-<i>`, `src/app.rs`).
const MEDIA_THREAD: &str = "confab-media";

/// CPU µs of the threads of process `pid` whose name starts with `prefix`
/// (`/proc/<pid>/task/*/comm`), summed; `None` when there is none.
pub fn thread_cpu_us(pid: u32, prefix: &str) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = None;
    for t in tasks.flatten().take(4096) {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.trim().starts_with(prefix) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = fields
            .get(11)
            .and_then(|u| u.parse::<u64>().ok())
            .zip(fields.get(12).and_then(|s| s.parse::<u64>().ok()));
        if let Some((user, system)) = ticks {
            *total.get_or_insert(0.0) += (user + system) as f64 / CLOCK_TICKS_PER_S * 1e6;
        }
    }
    total
}

/// Busy CPU time of the whole machine so far, µs (`/proc/stat`: all but idle and iowait).
pub fn machine_busy_us() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7).unwrap_or(&0);
    Some(busy as f64 / CLOCK_TICKS_PER_S * 1e6)
}

/// Parses the Prometheus text format into `series → value` (comments skipped).
pub fn parse_prometheus_text(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.trim().to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Quantile `q` (0–1) of the server's per-packet processing time between two samples, µs,
/// interpolated within the histogram bucket it falls in.
pub fn processing_quantile_us(before: &ServerSample, after: &ServerSample, q: f64) -> Option<f64> {
    let prefix = "confab_packet_processing_seconds_bucket{le=\"";
    let mut buckets: Vec<(f64, f64)> = after
        .metrics
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix(prefix)?.strip_suffix("\"}")?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, v - before.metrics.get(k).copied().unwrap_or(0.0)))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lo_bound, mut lo_count) = (0.0, 0.0);
    for (bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lo_bound * 1e6);
            }
            let frac = if count > lo_count {
                (rank - lo_count) / (count - lo_count)
            } else {
                1.0
            };
            return Some((lo_bound + (bound - lo_bound) * frac) * 1e6);
        }
        lo_bound = bound;
        lo_count = count;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_parses_and_histogram_quantiles_interpolate() {
        let before = ServerSample::default();
        let after = ServerSample {
            metrics: parse_prometheus_text(
                "# HELP x y\nconfab_rtp_forwarded_packets_total 10\n\
                 confab_packet_processing_seconds_bucket{le=\"0.000001\"} 0\n\
                 confab_packet_processing_seconds_bucket{le=\"0.000002\"} 100\n\
                 confab_packet_processing_seconds_bucket{le=\"+Inf\"} 100\n",
            ),
            ..Default::default()
        };
        assert_eq!(after.get("confab_rtp_forwarded_packets_total"), 10.0);
        let p50 = processing_quantile_us(&before, &after, 0.5).unwrap();
        assert!((p50 - 1.5).abs() < 1e-9, "{p50}");
    }

    #[test]
    fn this_process_has_cpu_time_memory_and_open_files() {
        let (cpu, rss) = proc_usage(std::process::id()).expect("/proc readable");
        assert!(cpu >= 0.0 && rss > 0);
        assert!(proc_fds(std::process::id()).expect("/proc/<pid>/fd readable") >= 3);
    }
}
