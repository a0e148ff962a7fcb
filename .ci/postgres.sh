# shellcheck shell=bash
# start_postgres: a throw-away PostgreSQL cluster on 127.0.0.1 for the tests; exports
# ONLINECA_TEST_PG_URL.  stop_postgres: stops it and removes its files.  Used by .ci/run and
# by developers (source .ci/postgres.sh; start_postgres).
PG_BIN=""
for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && PG_BIN="$d"; done
[ -n "$PG_BIN" ] || PG_BIN="$(dirname "$(command -v initdb)")"

start_postgres() {
  PG_DIR="$(mktemp -d /tmp/onlineca-pg.XXXXXX)"
  PG_PORT="${PG_PORT:-$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')}"
  local run_as=()
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$PG_DIR"
    run_as=(runuser -u postgres --)
  fi
  # The postgres user may not be allowed into the caller's directory: run from the cluster's own.
  pushd "$PG_DIR" >/dev/null
  "${run_as[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U onlineca --auth=trust -E UTF8 --no-locale >/dev/null
  "${run_as[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
      -o "-h 127.0.0.1 -p $PG_PORT -k $PG_DIR -c fsync=off -c max_connections=200" start >/dev/null
  "${run_as[@]}" "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U onlineca onlineca_test
  popd >/dev/null
  export ONLINECA_TEST_PG_URL="postgresql+psycopg://onlineca@127.0.0.1:$PG_PORT/onlineca_test"
  export PG_DIR PG_PORT
  echo "== PostgreSQL on 127.0.0.1:$PG_PORT"
}

stop_postgres() {
  [ -n "${PG_DIR:-}" ] || return 0
  local run_as=()
  [ "$(id -u)" = 0 ] && run_as=(runuser -u postgres --)
  (cd "$PG_DIR" && "${run_as[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast stop >/dev/null 2>&1) || true
  rm -rf "$PG_DIR"
}
