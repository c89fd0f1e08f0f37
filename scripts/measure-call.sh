#!/usr/bin/env bash
# Call-quality figures for docs/performance.md: starts a confab server (binary $CONFAB_BIN, default
# the debug build) on free ports with the given extra arguments, opens N headless Chromium pages in
# one room and prints, over the last WINDOW seconds of SECONDS: frames decoded per second per remote
# video, packets delivered / packets sent, the longest gaps, and the server's CPU µs per forwarded
# packet.
#   bash scripts/measure-call.sh [pages=3] [seconds=60] [window=30] [-- server args...]
# e.g. bash scripts/measure-call.sh 3 60 30 -- --public-ip 127.0.0.1
set -euo pipefail
cd "$(dirname "$0")/.."
PAGES="${1:-3}"; SECONDS_="${2:-60}"; WINDOW="${3:-30}"
shift $(( $# < 3 ? $# : 3 )); [ "${1:-}" = "--" ] && shift
BIN="${CONFAB_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/confab/target}/debug/confab}"
PORT="$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
DATA="$(mktemp -d)"
"$BIN" serve --listen "127.0.0.1:$PORT" --media-port 0 --data-dir "$DATA" --static-dir static "$@" \
    >"$DATA/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; cp "$DATA/server.log" target/measure-call-server.log 2>/dev/null; rm -rf "$DATA"' EXIT
mkdir -p target
for _ in $(seq 1 300); do
    node -e 'fetch(process.argv[1]).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))' "http://127.0.0.1:$PORT/healthz" && break
    sleep 0.1
done
CONFAB_URL="http://127.0.0.1:$PORT" CONFAB_PID="$SERVER" node tests/browser/measure-call.mjs "$PAGES" "$SECONDS_" "$WINDOW"
