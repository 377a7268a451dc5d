#!/usr/bin/env bash
# Build, start and stop FerretDB 1.24 (SQLite handler) on 127.0.0.1: a real MongoDB-wire server.
#
#   deploy/ferretdb.sh start   # idempotent: builds once (Go module proxy), waits until it answers
#   deploy/ferretdb.sh stop
#   deploy/ferretdb.sh status
#
# Environment: FERRETDB_PORT (default 27017), FERRETDB_DATA_DIR (default deploy/.run/ferretdb),
# FERRETDB_START_TIMEOUT_S (default 60). GOCACHE is left to Go so rebuilds are fast.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
port="${FERRETDB_PORT:-27017}"
run_dir="${FERRETDB_DATA_DIR:-$here/.run/ferretdb}"
bin="$here/ferretdb/.bin/ferretdb"
pid_file="$run_dir/ferretdb.pid"
log_file="$run_dir/ferretdb.log"
timeout_s="${FERRETDB_START_TIMEOUT_S:-60}"

build() {
  if [ -x "$bin" ] && [ "$bin" -nt "$here/ferretdb/go.sum" ] && [ "$bin" -nt "$here/ferretdb/main.go" ]; then return; fi
  echo "ferretdb: building (go build, CGO_ENABLED=0)" >&2
  (cd "$here/ferretdb" && CGO_ENABLED=0 go build -mod=mod -o .bin/ferretdb .)
}

running() { [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; }

ready() {
  # Ready means a real driver round-trip (ping and a write), not just an open port.
  "$root/.venv/bin/python" - "$port" <<'PY' >/dev/null 2>&1
import sys
from pymongo import MongoClient
c = MongoClient(f"mongodb://127.0.0.1:{sys.argv[1]}/", serverSelectionTimeoutMS=2000)
c.admin.command("ping")
c["corridor_ready"]["probe"].replace_one({"_id": 1}, {"_id": 1}, upsert=True)
c.close()
PY
}

start() {
  build
  mkdir -p "$run_dir/data"
  if running && ready; then echo "ferretdb: already running on 127.0.0.1:$port"; return; fi
  local t0=$SECONDS
  nohup "$bin" -listen "127.0.0.1:$port" -data "$run_dir/data" >>"$log_file" 2>&1 &
  echo $! > "$pid_file"
  until ready; do
    if ! running; then echo "ferretdb: process exited; see $log_file" >&2; tail -20 "$log_file" >&2; exit 1; fi
    if (( SECONDS - t0 > timeout_s )); then echo "ferretdb: not ready after ${timeout_s}s; see $log_file" >&2; exit 1; fi
    sleep 0.5
  done
  echo "ferretdb: ready on 127.0.0.1:$port after $((SECONDS - t0))s"
}

stop() {
  if running; then
    local pid; pid="$(cat "$pid_file")"
    kill "$pid"
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
    echo "ferretdb: stopped"
  else
    echo "ferretdb: not running"
  fi
  rm -f "$pid_file"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running && ready; then echo "ferretdb: running"; else echo "ferretdb: down"; exit 1; fi ;;
  build) build ;;
  *) echo "usage: $0 start|stop|status|build" >&2; exit 2 ;;
esac
