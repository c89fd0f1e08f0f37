#!/usr/bin/env bash
# Idempotent: what the browser tests need on a fresh Debian machine. Quiet when all is there.
#  - Debian's Chromium (/usr/bin/chromium); never a downloaded browser build.
#  - Node.js and npm, then `npm ci` in tests/browser (playwright-core only).
#  - iproute2 and iptables: the ICE path-switch test builds its own network namespace.
#  - coturn: the TURN test runs a real TURN server (an operator's, handed out with --ice-server).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v turnserver >/dev/null 2>&1 || missing+=(coturn)
if [ ${#missing[@]} -gt 0 ]; then
    echo "browser-deps: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -d tests/browser/node_modules/playwright-core ] || [ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ]; then
    echo "browser-deps: npm ci in tests/browser"
    (cd tests/browser && npm ci --no-audit --no-fund --prefer-offline >/dev/null)
fi
