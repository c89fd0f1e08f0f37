#!/usr/bin/env bash
# Long fuzzing run: every fuzz target (`fuzz_*` tests in `tests/fuzz_*.rs` of each crate,
# harness in crates/fuzz) for SECONDS each (default 300), two targets at a time (the machine's
# two cores), then one line per target: executions, seconds, executions per second and how
# often each outcome was reached (`confab_fuzz::hit`, the stand-in for coverage: stable Rust
# has no coverage-guided engine).
#
#   bash scripts/fuzz.sh [SECONDS]
#
# The test suite (`scripts/test.sh`) runs the same targets for 2 s each. A failure prints the
# shrunk input and `FUZZ_CASE=<seed>` to replay it; byte inputs are also saved under
# $CARGO_TARGET_DIR/fuzz-failures/ (copy one into the target's corpus directory once fixed:
# every corpus file is replayed on every run). FUZZ_SEED fixes the master seed.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-300}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/confab/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
run="$CARGO_TARGET_DIR/fuzz-run-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$run"

echo "fuzz.sh: building the fuzz targets (target dir $CARGO_TARGET_DIR)"
cargo test --workspace --test 'fuzz_*' --no-run 2>"$run/build.log" ||
    { cat "$run/build.log"; exit 1; }
# One job per target: `<test binary> <target>`.
sed -nE 's/^ *Executable [^ ]+ \((.*)\)$/\1/p' "$run/build.log" | while read -r bin; do
    "$bin" --list --format terse | sed -nE "s|^(fuzz_[a-z0-9_]+): test\$|$bin \\1|p"
done >"$run/jobs"
n=$(wc -l <"$run/jobs")
echo "fuzz.sh: $n targets, ${secs} s each, two at a time (about $(( (n + 1) / 2 * secs / 60 )) min); logs in $run"

status=0
FUZZ_SECONDS="$secs" FUZZ_STATS="$run/stats" RUN="$run" xargs -P 2 -L 1 \
    sh -c '"$0" --exact "$1" --test-threads=1 --nocapture >"$RUN/$1.log" 2>&1 || { echo "FAILED: $1 (see $RUN/$1.log)"; exit 1; }' \
    <"$run/jobs" || status=$?

echo
printf '%-28s %14s %8s %10s  %s\n' target executions seconds 'execs/s' outcomes
touch "$run/stats"
sed -E 's/^fuzz-stats target=([^ ]+) executions=([0-9]+) seconds=([0-9.]+) execs_per_s=([0-9]+) seed=([^ ]+) outcomes=\[(.*)\]$/\1 \2 \3 \4 \6/' "$run/stats" |
    sort | while read -r target execs s rate outcomes; do
        printf '%-28s %14s %8s %10s  %s\n' "$target" "$execs" "$s" "$rate" "$outcomes"
    done
total=$(awk -F'executions=' '{split($2, a, " "); t += a[1]} END {print t + 0}' "$run/stats")
echo "total executions: $total"
if [ "$status" -ne 0 ]; then
    echo "fuzz.sh: FAILURES:"
    grep -hE "fuzz target .* (failed|fails|aborted)|^replay:|^saved as" "$run"/*.log || true
fi
exit "$status"
