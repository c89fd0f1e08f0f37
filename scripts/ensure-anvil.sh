#!/usr/bin/env bash
# Idempotent: install contracts/node_modules (npm ci) if the anvil package is missing, then print the absolute
# path of the anvil binary on stdout (and nothing else there). Used by the settlement tests.
set -euo pipefail
cd "$(dirname "$0")/../contracts"
BIN="$PWD/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
if [ ! -x "$BIN" ]; then
  npm ci --no-audit --no-fund --prefer-offline >&2
fi
[ -x "$BIN" ] || { echo "anvil binary not found at $BIN after npm ci" >&2; exit 1; }
echo "$BIN"
