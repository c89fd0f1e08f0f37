#!/usr/bin/env bash
# Rebuild contracts/out/*.json (ABI + bytecode) from contracts/*.sol with the pinned npm solc, offline once
# contracts/node_modules is installed. Pass --check to only verify that the committed artifacts are fresh.
set -euo pipefail
cd "$(dirname "$0")/../contracts"
if [ ! -f node_modules/solc/package.json ]; then
  npm ci --no-audit --no-fund --prefer-offline >&2
fi
exec node build.js "$@"
