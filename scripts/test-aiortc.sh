#!/usr/bin/env bash
# Interop test with an independent WebRTC stack: two aiortc peers (Python) call each other through
# the real confab server for a minute (tests/aiortc/consent_call.py), then one peer's WebSocket drops
# abruptly and it resumes (docs/protocol.md, Resume) while media keeps flowing both ways, and it
# leaves. aiortc checks ICE consent every 5 s (RFC 7675) and skips loopback addresses, so the server
# runs on its defaults (every interface announced). Installs python3 + venv when missing and the
# pinned packages into a venv reused between runs ($CONFAB_AIORTC_VENV, default
# ~/.cache/confab/aiortc-venv). Exit code: the test's.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${CONFAB_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/confab/target}/debug/confab}"
[ -x "$BIN" ] || { echo "test-aiortc: no server binary at $BIN (cargo build first)" >&2; exit 1; }
if ! command -v python3 >/dev/null 2>&1 || ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    echo "test-aiortc: installing python3 and python3-venv"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
fi
VENV="${CONFAB_AIORTC_VENV:-$HOME/.cache/confab/aiortc-venv}"
REQ=tests/aiortc/requirements.txt
if [ ! -x "$VENV/bin/python" ] || ! cmp -s "$REQ" "$VENV/requirements.txt"; then
    echo "test-aiortc: installing aiortc into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
    cp "$REQ" "$VENV/requirements.txt"
fi
PORT="$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
DATA="$(mktemp -d)"
"$BIN" serve --listen "127.0.0.1:$PORT" --media-port 0 --data-dir "$DATA" --static-dir static >"$DATA/server.log" 2>&1 &
SERVER=$!
cleanup() { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT
for _ in $(seq 1 300); do
    "$VENV/bin/python" -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "http://127.0.0.1:$PORT/healthz" 2>/dev/null && break
    kill -0 "$SERVER" 2>/dev/null || { echo "test-aiortc: server exited"; tail -50 "$DATA/server.log"; exit 1; }
    sleep 0.1
done
status=0
timeout 240 "$VENV/bin/python" tests/aiortc/consent_call.py "http://127.0.0.1:$PORT" "${AIORTC_SECONDS:-60}" || status=$?
if [ "$status" -ne 0 ]; then
    echo "test-aiortc: failed; server log tail:"
    tail -60 "$DATA/server.log"
fi
exit "$status"
