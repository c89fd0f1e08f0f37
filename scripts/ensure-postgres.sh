#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:$PORT and that user `postgres` can log in
# there without a password (trust auth), as confab's store tests expect
# (postgres://postgres@127.0.0.1:5432/postgres).
#
# Idempotent. Quiet when everything is already in place; otherwise prints what it did.
# - A server already answering on the port is never touched (not restarted, not reconfigured):
#   if it refuses a password-less login the script says so and fails.
# - Otherwise (Debian, as root): installs the `postgresql` package if missing, creates the
#   cluster if missing, allows trust auth on localhost in the pg_hba.conf of that cluster (only a
#   cluster this script creates or starts), starts it, and waits for it.
#
# Environment (for trying the script on a throwaway cluster):
#   CONFAB_PG_PORT     port to ensure (default 5432)
#   CONFAB_PG_CLUSTER  Debian cluster name to create/start if nothing answers (default main)
set -euo pipefail

PORT="${CONFAB_PG_PORT:-5432}"
CLUSTER="${CONFAB_PG_CLUSTER:-main}"
HBA_MARK="# confab: trust on localhost for tests (added by scripts/ensure-postgres.sh)"

say() { echo "ensure-postgres: $*"; }
die() { echo "ensure-postgres: error: $*" >&2; exit 1; }

can_login() {
    psql -h 127.0.0.1 -p "$PORT" -U postgres -w -d postgres -tAc 'SELECT 1' >/dev/null 2>&1
}

if command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p "$PORT"; then
    can_login && exit 0
    die "a server answers on 127.0.0.1:$PORT but refuses a password-less login as postgres;" \
        "it is not this script's to reconfigure (set CONFAB_TEST_PG_URL to a URL that works)"
fi

[ "$(id -u)" -eq 0 ] || die "nothing answers on 127.0.0.1:$PORT; run as root to install/start PostgreSQL"

# Set when this script installed the server or created the cluster: then the cluster is ours to
# configure even if the package's maintainer scripts already started it.
OURS=0

if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ ! -d /usr/lib/postgresql ]; then
    say "installing the postgresql package"
    OURS=1
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q postgresql >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; } \
        || die "apt-get install postgresql failed"
fi

VERSION="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
[ -n "$VERSION" ] || die "no PostgreSQL version under /usr/lib/postgresql"
CONF_DIR="/etc/postgresql/$VERSION/$CLUSTER"

cluster_status() {
    # pg_lsclusters columns: Ver Cluster Port Status Owner Data-directory Log-file
    pg_lsclusters -h | awk -v v="$VERSION" -v c="$CLUSTER" '$1 == v && $2 == c { print $3, $4 }'
}

if [ -z "$(cluster_status)" ]; then
    say "creating cluster $VERSION/$CLUSTER on port $PORT"
    OURS=1
    pg_createcluster "$VERSION" "$CLUSTER" -p "$PORT" -- --auth-host=trust --auth-local=trust >/dev/null
fi

read -r CLUSTER_PORT CLUSTER_STATE <<<"$(cluster_status)"
[ "$CLUSTER_PORT" = "$PORT" ] \
    || die "cluster $VERSION/$CLUSTER is configured for port $CLUSTER_PORT, not $PORT; not changing it"

if [ "$CLUSTER_STATE" = "online" ] && [ "$OURS" -eq 0 ]; then
    # Running before this script came, yet 127.0.0.1:$PORT did not answer: not ours to reconfigure.
    die "cluster $VERSION/$CLUSTER is online but 127.0.0.1:$PORT does not answer;" \
        "check listen_addresses in $CONF_DIR/postgresql.conf"
fi

# The cluster is down or was just made by this script: make localhost trust auth work.
HBA="$CONF_DIR/pg_hba.conf"
if ! grep -qF "$HBA_MARK" "$HBA"; then
    say "allowing trust auth on localhost in $HBA"
    # pg_hba.conf is first-match: these lines go on top.
    {
        echo "$HBA_MARK"
        echo "local all all trust"
        echo "host  all all 127.0.0.1/32 trust"
        echo "host  all all ::1/128 trust"
        echo
        cat "$HBA"
    } >"$HBA.confab-new"
    chown --reference="$HBA" "$HBA.confab-new"
    chmod --reference="$HBA" "$HBA.confab-new"
    mv "$HBA.confab-new" "$HBA"
fi

if [ "$CLUSTER_STATE" = "online" ]; then
    say "reloading cluster $VERSION/$CLUSTER (started by the package install)"
    pg_ctlcluster --skip-systemctl-redirect "$VERSION" "$CLUSTER" reload
else
    say "starting cluster $VERSION/$CLUSTER"
    pg_ctlcluster --skip-systemctl-redirect "$VERSION" "$CLUSTER" start
fi

for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p "$PORT" && break
    sleep 0.5
done
pg_isready -q -h 127.0.0.1 -p "$PORT" || die "cluster started but 127.0.0.1:$PORT does not answer after 30 s"
can_login || die "127.0.0.1:$PORT answers but refuses a password-less login as postgres"
say "PostgreSQL $VERSION ready on 127.0.0.1:$PORT (user postgres, trust auth)"
