#!/usr/bin/env bash
# Browser tests: starts the real confab server on free ports, runs `node --test tests/browser/`
# (headless Debian Chromium with fake camera and microphone) against it, stops the server.
# Exit code: the tests'. On failure the server log's tail is printed. Arguments, if any, name
# the test files to run instead of all of tests/browser/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/browser-deps.sh
# langdao.test.mjs starts its own anvil: install it now rather than inside a test's timeout.
bash scripts/ensure-anvil.sh >/dev/null
BIN="${CONFAB_BIN:-${CARGO_TARGET_DIR:-target}/debug/confab}"
[ -x "$BIN" ] || { echo "test-browser: no server binary at $BIN (cargo build first)" >&2; exit 1; }
BIN="$(realpath "$BIN")"  # restart.test.mjs starts its own server from it
# Node is installed by browser-deps.sh; a fresh Debian has neither python3 nor curl.
PORT="$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
DATA="$(mktemp -d)"
LOG="$DATA/server.log"
mkdir -p target
"$BIN" serve --listen "127.0.0.1:$PORT" --media-port 0 --public-ip 127.0.0.1 --data-dir "$DATA" \
    --static-dir static >"$LOG" 2>&1 &
SERVER=$!
cleanup() {
    kill "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    rm -rf "$DATA"
}
trap cleanup EXIT
for _ in $(seq 1 300); do
    if node -e 'fetch(process.argv[1]).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))' "http://127.0.0.1:$PORT/healthz"; then break; fi
    kill -0 "$SERVER" 2>/dev/null || { echo "test-browser: server exited"; tail -50 "$LOG"; exit 1; }
    sleep 0.1
done
status=0
# One browser test file at a time (each drives several Chromium pages); Node 18 (Debian 12)
# lacks the flag and runs one file per spare core anyway.
CONCURRENCY=""
if node --test-concurrency=1 -e 0 >/dev/null 2>&1; then CONCURRENCY="--test-concurrency=1"; fi
CONFAB_URL="http://127.0.0.1:$PORT" CONFAB_BIN="$BIN" CONFAB_DATA_DIR="$DATA" node --test $CONCURRENCY "${@:-tests/browser/}" || status=$?
if [ "$status" -ne 0 ]; then
    echo "test-browser: failed; server log tail:"
    tail -80 "$LOG"
fi
exit "$status"
