#!/usr/bin/env bash
# Interop test with an independent WebRTC stack: two werift peers (pure TypeScript WebRTC on Node.js)
# call each other through the real confab server (tests/werift/call.mjs), with a client written from
# docs/protocol.md alone (tests/werift/client.mjs): a measured window of $WERIFT_SECONDS (default 60)
# of Opus + VP8 RTP both ways, a resume after an abruptly dropped socket, and a leave. werift skips
# loopback addresses when it gathers, so the server runs on its defaults (every interface announced).
# Installs Node.js and npm when missing and the pinned packages (npm ci) when node_modules is missing
# or older than package-lock.json. Exit code: the test's.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${CONFAB_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/confab/target}/debug/confab}"
[ -x "$BIN" ] || { echo "test-werift: no server binary at $BIN (cargo build first)" >&2; exit 1; }
missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    echo "test-werift: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -d tests/werift/node_modules/werift ] || [ ! -d tests/werift/node_modules/ws ] \
    || [ tests/werift/package-lock.json -nt tests/werift/node_modules/.package-lock.json ]; then
    echo "test-werift: npm ci in tests/werift"
    (cd tests/werift && npm ci --no-audit --no-fund --prefer-offline >/dev/null)
fi
PORT="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
DATA="$(mktemp -d)"
"$BIN" serve --listen "127.0.0.1:$PORT" --media-port 0 --data-dir "$DATA" --static-dir static >"$DATA/server.log" 2>&1 &
SERVER=$!
cleanup() { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT
for _ in $(seq 1 300); do
    node -e 'fetch(process.argv[1],{signal:AbortSignal.timeout(1000)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))' "http://127.0.0.1:$PORT/healthz" 2>/dev/null && break
    kill -0 "$SERVER" 2>/dev/null || { echo "test-werift: server exited"; tail -50 "$DATA/server.log"; exit 1; }
    sleep 0.1
done
SECONDS_WINDOW="${WERIFT_SECONDS:-60}"
status=0
WERIFT_SECONDS="$SECONDS_WINDOW" timeout "$((SECONDS_WINDOW + 150))" node tests/werift/call.mjs "http://127.0.0.1:$PORT" || status=$?
if [ "$status" -ne 0 ]; then
    echo "test-werift: failed; server log tail:"
    tail -60 "$DATA/server.log"
fi
exit "$status"
