# Sourced by .ci/run (and usable by hand): start a throwaway PostgreSQL on a free port
# on 127.0.0.1 and export DIGEST_TEST_POSTGRES; `pg_stop` stops it and removes its files.
# PostgreSQL refuses to run as root, so as root the cluster runs as the postgres user.
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$PGBIN" ]; then
    apt-get update -q && apt-get install -y -q --no-install-recommends postgresql
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
PGROOT=$(mktemp -d /tmp/digest-pg.XXXXXX)
PGPORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
if [ "$(id -u)" = 0 ]; then
    chown postgres "$PGROOT"
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi
as_pg "$PGBIN/initdb" -D "$PGROOT/data" -A trust -U postgres >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$PGROOT/data" -l "$PGROOT/log" -w -o \
    "-p $PGPORT -k $PGROOT -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
    start >/dev/null
export DIGEST_TEST_POSTGRES="postgresql+psycopg://postgres@127.0.0.1:$PGPORT/postgres"
pg_stop() {
    as_pg "$PGBIN/pg_ctl" -D "$PGROOT/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PGROOT"
}
