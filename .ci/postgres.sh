#!/usr/bin/env bash
# A local PostgreSQL server for the tuning tests (tests/test_tuning.py reads CUSTOM_SAC_TEST_POSTGRES_URL).
#
#   eval "$(bash .ci/postgres.sh)"
#
# Installs Debian's postgresql package when no server is there, starts a cluster listening on 127.0.0.1 (as the
# postgres user, via pg_ctlcluster, or pg_ctl where the Debian wrappers are missing), creates a login role and a
# database, and prints `export ...` lines on stdout; everything else goes to stderr. Safe to run again: an
# installed package, a running server, the role and the database are all reused. Needs root, no stdin.
# The password is not in the URL: it is exported separately (tests hand it to workers as PGPASSWORD), as a user's
# would come from the environment or ~/.pgpass.
#
#   bash .ci/postgres.sh restart     # pg_ctl restart (fast shutdown: open sessions are cut)
#   bash .ci/postgres.sh stop        # pg_ctl stop; run the script again to start the server
#
# are for the test of tuning workers that outlive a database restart.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

ROLE=${CUSTOM_SAC_PG_ROLE:-custom_sac}
DB=${CUSTOM_SAC_PG_DB:-custom_sac_test}
PASSWORD=${CUSTOM_SAC_PG_PASSWORD:-custom_sac_test}
log() { echo "postgres.sh: $*" >&2; }
as_postgres() { runuser -u postgres -- "$@"; }

if [ "$(id -u)" != 0 ]; then
    log "run as root (it installs and starts a server)"; exit 1
fi
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    log "installing postgresql"
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2 </dev/null
fi
VERSION=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
BIN=/usr/lib/postgresql/$VERSION/bin

if command -v pg_ctlcluster >/dev/null && command -v pg_lsclusters >/dev/null; then
    # Debian's wrappers: one cluster per version, configured to listen on localhost.
    if ! pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main"' | grep -q .; then
        log "creating cluster $VERSION/main"
        pg_createcluster "$VERSION" main >&2
    fi
    PORT=$(pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" {print $3}')
    if ! pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" {print $4}' | grep -q online; then
        log "starting cluster $VERSION/main on port $PORT"
        pg_ctlcluster "$VERSION" main start >&2
    fi
    DATA=$(pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" {print $6}')
    LOGFILE=$(pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" {print $7}')
    SOCKET_DIR=/var/run/postgresql
else
    # Plain pg_ctl: a data directory of our own, listening on 127.0.0.1 only.
    PORT=${CUSTOM_SAC_PG_PORT:-5432}
    DATA=/var/lib/postgresql/custom_sac_ci
    SOCKET_DIR=/tmp
    LOGFILE=$DATA/server.log
    if [ ! -s "$DATA/PG_VERSION" ]; then
        log "initdb $DATA"
        install -d -o postgres -g postgres "$DATA"
        as_postgres "$BIN/initdb" -D "$DATA" -A scram-sha-256 --auth-local=peer -U postgres >&2
    fi
    if ! as_postgres "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
        log "starting server on 127.0.0.1:$PORT"
        as_postgres "$BIN/pg_ctl" -D "$DATA" -l "$LOGFILE" -w \
            -o "-p $PORT -c listen_addresses=127.0.0.1 -k $SOCKET_DIR" start >&2
    fi
fi

if [ "${1:-}" = restart ] || [ "${1:-}" = stop ]; then
    log "pg_ctl $1 ($DATA)"
    # -l: the server's output goes to its log, not to this script's stderr, which a caller may be reading to its end
    as_postgres "$BIN/pg_ctl" -D "$DATA" -l "$LOGFILE" -w -m fast "$1" >&2
    exit 0
fi

psql_postgres() { as_postgres psql -h "$SOCKET_DIR" -p "$PORT" -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
for _ in $(seq 30); do  # a freshly started server may need a moment to accept connections
    psql_postgres -c "SELECT 1" >/dev/null 2>&1 && break
    sleep 1
done
if [ "$(psql_postgres -c "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != 1 ]; then
    log "creating role $ROLE"
    psql_postgres -c "CREATE ROLE $ROLE LOGIN" >&2
fi
psql_postgres -c "ALTER ROLE $ROLE WITH LOGIN PASSWORD '$PASSWORD'" >&2
if [ "$(psql_postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
    log "creating database $DB"
    psql_postgres -c "CREATE DATABASE $DB OWNER $ROLE" >&2
fi
# Prove the URL works over TCP before handing it out.
PGPASSWORD=$PASSWORD psql "postgresql://$ROLE@127.0.0.1:$PORT/$DB" -v ON_ERROR_STOP=1 -qtAc "SELECT 1" >/dev/null
log "ready: postgresql://$ROLE@127.0.0.1:$PORT/$DB"
echo "export CUSTOM_SAC_TEST_POSTGRES_URL=postgresql://$ROLE@127.0.0.1:$PORT/$DB"
echo "export CUSTOM_SAC_TEST_POSTGRES_PASSWORD=$PASSWORD"
