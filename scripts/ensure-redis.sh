#!/usr/bin/env bash
# Makes sure a Redis answers on 127.0.0.1:6379 (the multi-node test shares it; the server itself
# needs Redis only with --redis-url). An already running one is used as is; otherwise Debian's
# redis-server is installed when missing and started in the background, keeping nothing on disk.
set -euo pipefail
answers() { (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && head -c 5 <&3 | grep -q PONG) 2>/dev/null; }
if answers; then
    exit 0
fi
if ! command -v redis-server >/dev/null 2>&1; then
    echo "ensure-redis: installing redis-server"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
echo "ensure-redis: starting redis-server on 127.0.0.1:6379"
redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --daemonize yes >/dev/null
for _ in $(seq 1 50); do
    if answers; then exit 0; fi
    sleep 0.1
done
echo "ensure-redis: Redis did not come up on 127.0.0.1:6379" >&2
exit 1
