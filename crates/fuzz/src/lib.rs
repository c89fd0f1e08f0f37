//! # confab-fuzz: fuzzing on stable Rust, as ordinary `cargo test` tests
//!
//! The fuzz targets live next to the parsers they exercise, as `tests/fuzz_*.rs` of the crate
//! that owns each parser; this crate is what they share (a dev-dependency only). It is built on
//! [proptest]: a target is a proptest strategy (usually "take a checked-in seed and mutate it")
//! and a property, run again and again until a time budget is spent:
//!
//! - [`fuzz`] runs one property for [`budget`] (`FUZZ_SECONDS`, default
//!   [`DEFAULT_SECONDS`]): each case gets its own RNG seed, so a failure names the one case to
//!   replay (`FUZZ_CASE=<seed>`), and proptest shrinks it to a minimal input first.
//! - [`fuzz_bytes`] first replays every file of a target's corpus directory unchanged (the
//!   seeds, and any crashing input kept as a regression), then fuzzes with
//!   [`mutated`] seeds.
//! - [`mutated`] is the byte-level mutator (bit flips, interesting values, inserted and
//!   deleted ranges, dictionary tokens, splices between seeds, line operations for text
//!   protocols), so inputs stay close to real traffic and get past the first checks of a parser.
//!
//! Without a coverage-guided engine (libFuzzer needs a nightly toolchain) the corpus does the
//! guiding: seeds are real inputs (a Chromium SDP offer, Chromium's STUN checks, real codec
//! payloads), and the properties are checked on every execution. [`hit`] counts outcomes (which
//! branch of a parser an input reached), a cheap stand-in for coverage in the report.
//!
//! Environment:
//! - `FUZZ_SECONDS`: the budget of each target, seconds (fractions allowed).
//! - `FUZZ_SEED`: the master seed (default: random, printed in the report line).
//! - `FUZZ_CASE`: run only this case seed (from a failure message), once.
//! - `FUZZ_STATS`: a file to which each target appends its report line.

#![warn(missing_docs)]

use proptest::sample::Index;
use proptest::strategy::{BoxedStrategy, Strategy};
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The proptest the targets write their strategies with (the same version as the harness).
pub use proptest;

/// Budget of one target when `FUZZ_SECONDS` is not set, seconds: what the test suite (CI) spends.
pub const DEFAULT_SECONDS: f64 = 2.0;

/// Longest time proptest may spend shrinking one failure before it reports the input it has.
const MAX_SHRINK: Duration = Duration::from_secs(60);

/// The time budget of one target: `FUZZ_SECONDS` (a positive number of seconds) or
/// [`DEFAULT_SECONDS`].
pub fn budget() -> Duration {
    let secs = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(DEFAULT_SECONDS);
    Duration::from_secs_f64(secs)
}

/// The files of a corpus directory, sorted by name (hidden files and `README*` skipped), as
/// `(path, bytes)`. Panics when the directory is missing or holds no file: a target without
/// seeds is a mistake.
pub fn corpus_files(dir: impl AsRef<Path>) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = dir.as_ref();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("corpus directory {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && !name.starts_with("README")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

/// The contents of [`corpus_files`].
pub fn corpus(dir: impl AsRef<Path>) -> Vec<Vec<u8>> {
    corpus_files(dir).into_iter().map(|(_, b)| b).collect()
}

thread_local! {
    static HITS: RefCell<BTreeMap<&'static str, u64>> = const { RefCell::new(BTreeMap::new()) };
}

/// Counts one execution that reached `outcome` (e.g. `"ok"`, `"bad_json"`): the report line
/// of the running target lists how often each was reached.
pub fn hit(outcome: &'static str) {
    HITS.with(|h| *h.borrow_mut().entry(outcome).or_default() += 1);
}

/// What one target did: executions, time spent, the master seed and the outcome counts.
#[derive(Debug, Clone)]
pub struct Report {
    /// The target's name.
    pub target: String,
    /// Inputs executed (the corpus replay included; shrinking steps not).
    pub executions: u64,
    /// Wall time spent.
    pub elapsed: Duration,
    /// The master seed (`FUZZ_SEED` replays the same sequence of cases).
    pub seed: u64,
    /// [`hit`] counts.
    pub hits: BTreeMap<&'static str, u64>,
}

impl Report {
    fn line(&self) -> String {
        let hits: Vec<String> = self.hits.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "fuzz-stats target={} executions={} seconds={:.1} execs_per_s={:.0} seed={:#x} outcomes=[{}]",
            self.target,
            self.executions,
            self.elapsed.as_secs_f64(),
            self.executions as f64 / self.elapsed.as_secs_f64().max(1e-9),
            self.seed,
            hits.join(" ")
        )
    }

    fn publish(&self) {
        let line = self.line();
        println!("{line}");
        if let Ok(path) = std::env::var("FUZZ_STATS") {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(f, "{line}");
            }
        }
    }
}

/// SplitMix64: the stream of per-case seeds drawn from the master seed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

fn runner(case_seed: u64) -> TestRunner {
    let mut seed = [0u8; 16];
    seed[..8].copy_from_slice(&case_seed.to_le_bytes());
    seed[8..].copy_from_slice(&(!case_seed).rotate_left(17).to_le_bytes());
    let config = Config {
        cases: 1,
        failure_persistence: None,
        max_shrink_time: MAX_SHRINK.as_millis() as u32,
        max_shrink_iters: 100_000,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::XorShift, &seed))
}

/// Runs `test` on values of `strategy` until [`budget`] is spent (at least once), then prints
/// (and appends to `FUZZ_STATS`) a report line. A failing case (a panic in `test`, including a
/// failed assertion) is shrunk and reported with its case seed; the test then panics.
pub fn fuzz<S>(target: &str, strategy: S, test: impl Fn(S::Value)) -> Report
where
    S: Strategy,
    S::Value: Debug,
{
    fuzz_with(target, strategy, test, 0, Instant::now(), None)
}

/// Says where a failing input was saved (for [`fuzz_bytes`]).
type OnFailure<'a, V> = Option<&'a dyn Fn(u64, &V) -> String>;

fn fuzz_with<S>(
    target: &str,
    strategy: S,
    test: impl Fn(S::Value),
    replayed: u64,
    start: Instant,
    on_failure: OnFailure<'_, S::Value>,
) -> Report
where
    S: Strategy,
    S::Value: Debug,
{
    let run = |case_seed: u64| {
        let mut runner = runner(case_seed);
        let tree = match strategy.new_tree(&mut runner) {
            Ok(t) => t,
            Err(why) => panic!("fuzz target `{target}`: no input could be generated: {why}"),
        };
        match runner.run_one(tree, |v| {
            test(v);
            Ok(())
        }) {
            Ok(_) => {}
            Err(TestError::Fail(why, value)) => {
                let saved = on_failure.map_or_else(String::new, |f| f(case_seed, &value));
                panic!(
                    "fuzz target `{target}` failed: {why}\nminimal failing input: {value:#?}{saved}\n\
                     replay: FUZZ_CASE={case_seed:#x} cargo test --test <this file> {target}"
                )
            }
            Err(TestError::Abort(why)) => panic!("fuzz target `{target}` aborted: {why}"),
        }
    };
    HITS.with(|h| h.borrow_mut().clear());
    if let Some(case) = env_u64("FUZZ_CASE") {
        run(case);
        return Report {
            target: target.to_owned(),
            executions: 1,
            elapsed: start.elapsed(),
            seed: case,
            hits: HITS.with(|h| h.borrow().clone()),
        };
    }
    let budget = budget();
    let seed = env_u64("FUZZ_SEED").unwrap_or_else(random_seed);
    let mut seeds = SplitMix(seed);
    let mut executions = replayed;
    loop {
        run(seeds.next());
        executions += 1;
        if start.elapsed() >= budget {
            break;
        }
    }
    let report = Report {
        target: target.to_owned(),
        executions,
        elapsed: start.elapsed(),
        seed,
        hits: HITS.with(|h| h.borrow().clone()),
    };
    report.publish();
    report
}

/// A byte-input target: replays every file of `corpus_dir` unchanged (the seeds and the kept
/// crashing inputs), then runs `test` on [`mutated`] seeds (at most `max_len` bytes, with
/// `dict` tokens) until [`budget`] is spent. Returns the report (see [`fuzz`]).
pub fn fuzz_bytes(
    target: &str,
    corpus_dir: impl AsRef<Path>,
    dict: &'static [&'static [u8]],
    max_len: usize,
    test: impl Fn(&[u8]),
) -> Report {
    let start = Instant::now();
    let files = corpus_files(corpus_dir);
    for (path, bytes) in &files {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(bytes)));
        if r.is_err() {
            panic!(
                "fuzz target `{target}` fails on corpus file {}",
                path.display()
            );
        }
    }
    let seeds: Vec<Vec<u8>> = files.into_iter().map(|(_, b)| b).collect();
    let replayed = seeds.len() as u64;
    fuzz_with(
        target,
        mutated(seeds, dict, max_len).prop_map(Input),
        |b: Input| test(&b.0),
        replayed,
        start,
        Some(&|seed, b: &Input| {
            save_failure(target, seed, &b.0).map_or_else(String::new, |p| {
                format!(
                    "\nsaved as {} (add it to the corpus as a regression once fixed)",
                    p.display()
                )
            })
        }),
    )
}

/// A byte input, shown escaped (`b"..."`, with its length) in failure messages.
#[derive(Clone)]
pub struct Input(
    /// The bytes.
    pub Vec<u8>,
);

impl Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes: b\"{}\"", self.0.len(), self.0.escape_ascii())
    }
}

/// Where a failing byte input is saved: `$CARGO_TARGET_DIR/fuzz-failures` (default
/// `target/fuzz-failures`), `<target>-<case seed>.bin`.
fn save_failure(target: &str, case_seed: u64, bytes: &[u8]) -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
        .join("fuzz-failures");
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(format!("{target}-{case_seed:x}.bin"));
    std::fs::write(&path, bytes).ok()?;
    Some(path)
}

/// Interesting values to overwrite with (boundaries of 8-, 16- and 32-bit fields).
const INTERESTING: [u32; 14] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
];

/// One edit [`mutated`] applies to a seed. Positions are [`Index`]es (a fraction of whatever
/// length the input has when the edit is applied).
#[derive(Clone, Debug)]
pub enum Mutation {
    /// Flip bit `n % 8` of the byte at the index.
    FlipBit(Index, u8),
    /// Overwrite the byte.
    SetByte(Index, u8),
    /// Add a small signed value to the byte.
    Add(Index, i8),
    /// Overwrite with an interesting value (`which`: value, width 1/2/4, endianness).
    Interesting(Index, u8),
    /// Insert bytes.
    Insert(Index, Vec<u8>),
    /// Delete up to `n` bytes.
    Delete(Index, u8),
    /// Copy up to `n` bytes from the first index to the second (inserted).
    Duplicate(Index, u8, Index),
    /// Cut the input there.
    Truncate(Index),
    /// Insert (`true`) or overwrite with a dictionary token.
    Token(Index, Index, bool),
    /// Insert a range of another seed.
    Splice(Index, Index, u16, Index),
    /// Delete one line (text protocols: SDP, JSON lines).
    DeleteLine(Index),
    /// Repeat one line.
    DuplicateLine(Index),
    /// Swap two lines.
    SwapLines(Index, Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    use proptest::prelude::*;
    prop_oneof![
        3 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        1 => (any::<Index>(), any::<i8>()).prop_map(|(i, d)| Mutation::Add(i, d)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, w)| Mutation::Interesting(i, w)),
        2 => (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (any::<Index>(), 1..64u8).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => (any::<Index>(), 1..64u8, any::<Index>())
            .prop_map(|(i, n, j)| Mutation::Duplicate(i, n, j)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        3 => (any::<Index>(), any::<Index>(), any::<bool>())
            .prop_map(|(i, t, ins)| Mutation::Token(i, t, ins)),
        1 => (any::<Index>(), any::<Index>(), 1..512u16, any::<Index>())
            .prop_map(|(s, f, n, at)| Mutation::Splice(s, f, n, at)),
        2 => any::<Index>().prop_map(Mutation::DeleteLine),
        1 => any::<Index>().prop_map(Mutation::DuplicateLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
    ]
}

/// Byte ranges of the lines of `b` (each with its `\n`).
fn lines(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in b.iter().enumerate() {
        if *c == b'\n' {
            out.push((start, i + 1));
            start = i + 1;
        }
    }
    if start < b.len() {
        out.push((start, b.len()));
    }
    out
}

/// Applies `m` to `b`; `seeds` and `dict` feed splices and tokens.
pub fn apply(b: &mut Vec<u8>, m: &Mutation, seeds: &[Vec<u8>], dict: &[&[u8]]) {
    let at = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len) };
    match m {
        Mutation::FlipBit(i, n) if !b.is_empty() => {
            let p = at(i, b.len());
            b[p] ^= 1 << (n % 8);
        }
        Mutation::SetByte(i, v) if !b.is_empty() => {
            let p = at(i, b.len());
            b[p] = *v;
        }
        Mutation::Add(i, d) if !b.is_empty() => {
            let p = at(i, b.len());
            b[p] = b[p].wrapping_add(*d as u8);
        }
        Mutation::Interesting(i, w) if !b.is_empty() => {
            let v = INTERESTING[usize::from(*w) % INTERESTING.len()];
            let width = [1usize, 2, 4][usize::from(*w / 16) % 3];
            let bytes = if w & 0x80 != 0 {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            };
            let bytes = if w & 0x80 != 0 {
                &bytes[..width]
            } else {
                &bytes[4 - width..]
            };
            let p = at(i, b.len());
            for (k, x) in bytes.iter().enumerate() {
                if let Some(slot) = b.get_mut(p + k) {
                    *slot = *x;
                }
            }
        }
        Mutation::Insert(i, v) => {
            let p = at(i, b.len() + 1);
            b.splice(p..p, v.iter().copied());
        }
        Mutation::Delete(i, n) if !b.is_empty() => {
            let p = at(i, b.len());
            let end = (p + usize::from(*n)).min(b.len());
            b.drain(p..end);
        }
        Mutation::Duplicate(i, n, j) if !b.is_empty() => {
            let p = at(i, b.len());
            let end = (p + usize::from(*n)).min(b.len());
            let chunk = b[p..end].to_vec();
            let q = at(j, b.len() + 1);
            b.splice(q..q, chunk);
        }
        Mutation::Truncate(i) => {
            let p = at(i, b.len() + 1);
            b.truncate(p);
        }
        Mutation::Token(i, t, insert) if !dict.is_empty() => {
            let tok = dict[t.index(dict.len())];
            let p = at(i, b.len() + 1);
            if *insert {
                b.splice(p..p, tok.iter().copied());
            } else {
                let end = (p + tok.len()).min(b.len());
                b.splice(p..end, tok.iter().copied());
            }
        }
        Mutation::Splice(s, f, n, to) if !seeds.is_empty() => {
            let other = &seeds[s.index(seeds.len())];
            if !other.is_empty() {
                let from = f.index(other.len());
                let end = (from + usize::from(*n)).min(other.len());
                let q = at(to, b.len() + 1);
                b.splice(q..q, other[from..end].iter().copied());
            }
        }
        Mutation::DeleteLine(i) => {
            let ls = lines(b);
            if !ls.is_empty() {
                let (s, e) = ls[i.index(ls.len())];
                b.drain(s..e);
            }
        }
        Mutation::DuplicateLine(i) => {
            let ls = lines(b);
            if !ls.is_empty() {
                let (s, e) = ls[i.index(ls.len())];
                let line = b[s..e].to_vec();
                b.splice(e..e, line);
            }
        }
        Mutation::SwapLines(x, y) => {
            let ls = lines(b);
            if ls.len() >= 2 {
                let (a, c) = (ls[x.index(ls.len())], ls[y.index(ls.len())]);
                let (first, second) = if a.0 <= c.0 { (a, c) } else { (c, a) };
                if first != second {
                    let mut out = Vec::with_capacity(b.len());
                    out.extend_from_slice(&b[..first.0]);
                    out.extend_from_slice(&b[second.0..second.1]);
                    out.extend_from_slice(&b[first.1..second.0]);
                    out.extend_from_slice(&b[first.0..first.1]);
                    out.extend_from_slice(&b[second.1..]);
                    *b = out;
                }
            }
        }
        _ => {}
    }
}

/// Inputs near the seeds: mostly a seed with 1 to 8 [`Mutation`]s applied (then cut to
/// `max_len` bytes), sometimes a seed unchanged, sometimes random bytes. Shrinks towards
/// fewer mutations. Panics when `seeds` is empty.
pub fn mutated(
    seeds: Vec<Vec<u8>>,
    dict: &'static [&'static [u8]],
    max_len: usize,
) -> BoxedStrategy<Vec<u8>> {
    use proptest::prelude::*;
    assert!(!seeds.is_empty(), "mutated() needs at least one seed");
    let seeds = Arc::new(seeds);
    let n = seeds.len();
    let edits = {
        let seeds = Arc::clone(&seeds);
        (
            0..n,
            prop_oneof![
                4 => proptest::collection::vec(mutation(), 1..4),
                2 => proptest::collection::vec(mutation(), 4..9),
                1 => proptest::collection::vec(mutation(), 9..33),
            ],
        )
            .prop_map(move |(s, ms)| {
                let mut b = seeds[s].clone();
                for m in &ms {
                    apply(&mut b, m, &seeds, dict);
                }
                b.truncate(max_len);
                b
            })
    };
    let unchanged = {
        let seeds = Arc::clone(&seeds);
        (0..n).prop_map(move |s| seeds[s].clone())
    };
    prop_oneof![
        16 => edits,
        1 => unchanged,
        1 => proptest::collection::vec(any::<u8>(), 0..(max_len.clamp(1, 256))),
    ]
    .boxed()
}

/// `b` as text the way a WebSocket or DataChannel text message would carry it: valid UTF-8 as
/// is, anything else with invalid sequences replaced (U+FFFD).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;

    #[test]
    fn mutations_apply_to_empty_and_short_inputs_without_panicking() {
        const DICT: &[&[u8]] = &[b"tok", b""];
        let seeds = vec![b"a\nbc\n".to_vec(), Vec::new()];
        let mut runner = TestRunner::deterministic();
        for i in 0..5000 {
            let m = mutation().new_tree(&mut runner).unwrap().current();
            let mut b = seeds[i % 2].clone();
            apply(&mut b, &m, &seeds, DICT);
            apply(&mut b, &m, &[], &[]);
        }
    }

    #[test]
    fn lines_cover_the_input() {
        assert_eq!(lines(b"a\nbc"), vec![(0, 2), (2, 4)]);
        assert_eq!(lines(b""), vec![]);
    }
}
