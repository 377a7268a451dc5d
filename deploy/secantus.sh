#!/usr/bin/env bash
# Build, start and stop SecantusDB's secantusd-rs on 127.0.0.1: the MongoDB-wire test server
# (WiredTiger storage, reports MongoDB 8.2, real query planner). A test tool only (GPL-2.0): never
# shipped, never imported by Corridor's code. Compose and production run mongod.
#
#   deploy/secantus.sh start   # idempotent: builds once per machine and version, waits until it answers
#   deploy/secantus.sh stop
#   deploy/secantus.sh status
#   deploy/secantus.sh build   # only the build (cargo install from crates.io, ~10 min on 2 cores)
#
# Environment: SECANTUS_PORT (default 27017), SECANTUS_DATA_DIR (default deploy/.run/secantus),
# SECANTUS_CACHE_SIZE (default 1G), SECANTUS_START_TIMEOUT_S (default 60), CORRIDOR_CACHE_DIR
# (default ~/.cache/corridor): the binary lives there, outside the clone, keyed by version, so a
# fresh clone on a machine that built it once starts at once.
# Durability as mongod's: the server runs with --sync-on-commit (WiredTiger fsyncs its log at every
# commit). Without it, it acknowledges a `j: true` write before the log reaches the file (its
# --help calls this "the writeConcern j:true durability gap"): measured here, ten kill -9s of a
# server taking journaled inserts lost 923 of 18,392 acknowledged writes (30-190 per kill); with
# it, 0 of 8,914. The fault suite kills the store, and its consumers commit Kafka offsets on the
# store's word. SECANTUS_SYNC_ON_COMMIT=0 turns it off (the main suite's store tests ran no slower
# with it on: 37 s vs 43 s).
set -euo pipefail

version="0.5.3-beta.196"   # pinned: the crate is a beta and its planner output is what the tests read
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=deploy/proc.sh
. "$here/proc.sh"
root="$(cd "$here/.." && pwd)"
port="${SECANTUS_PORT:-27017}"
run_dir="${SECANTUS_DATA_DIR:-$here/.run/secantus}"
cache="${CORRIDOR_CACHE_DIR:-$HOME/.cache/corridor}/secantus/$version"
bin="$cache/bin/secantusd-rs"
pid_file="$run_dir/secantus.pid"
log_file="$run_dir/secantus.log"
timeout_s="${SECANTUS_START_TIMEOUT_S:-60}"

build() {
  if [ -x "$bin" ]; then return; fi
  command -v cargo >/dev/null || { echo "secantus: cargo not found (install Rust with rustup)" >&2; exit 1; }
  mkdir -p "$(dirname "$cache")"
  # One build at a time per machine (two clones starting at once wait for the first).
  exec 9>"$cache.lock"
  flock 9
  if [ -x "$bin" ]; then return; fi
  echo "secantus: building secantus-mdb $version with cargo (once per machine; about 10 minutes)" >&2
  local tmp="$cache.tmp.$$"
  rm -rf "$tmp"
  # The crate declares rust-version 1.98; it builds with the installed 1.95 (measured), so the
  # declaration is overridden rather than a toolchain downloaded.
  cargo install secantus-mdb --version "$version" --locked --ignore-rust-version --root "$tmp" \
    >"$cache.build.log" 2>&1 || { echo "secantus: build failed; see $cache.build.log" >&2; tail -20 "$cache.build.log" >&2; exit 1; }
  rm -rf "$cache" && mv "$tmp" "$cache"
  echo "secantus: built $bin" >&2
}

# Ours: alive and this server (its command line names our files); see deploy/proc.sh.
running() { pid_runs "$pid_file" "$run_dir/data"; }
alive() { pid_alive "$pid_file"; }

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
  if running && ready; then echo "secantus: already running on 127.0.0.1:$port"; return; fi
  local t0=$SECONDS
  if running; then
    echo "secantus: already starting; waiting for it" >&2  # never a second server on the same files
  elif port_in_use "$port"; then
    # Someone else's server (a developer's mongod): "ready" against it would put the tests'
    # databases there.
    echo "secantus: 127.0.0.1:$port is taken by a process that is not ours ($pid_file); stop it or set SECANTUS_PORT" >&2
    exit 1
  else
    local durability=()
    if [ "${SECANTUS_SYNC_ON_COMMIT:-1}" = "1" ]; then durability=(--sync-on-commit); fi
    nohup "$bin" --port "$port" --storage-path "$run_dir/data" --cache-size "${SECANTUS_CACHE_SIZE:-1G}" \
      "${durability[@]}" >>"$log_file" 2>&1 &
    echo $! > "$pid_file"
  fi
  until alive && ready; do
    if ! alive; then echo "secantus: process exited; see $log_file" >&2; tail -20 "$log_file" >&2; exit 1; fi
    if (( SECONDS - t0 > timeout_s )); then
      echo "secantus: not ready after ${timeout_s}s; stopped it; see $log_file" >&2
      stop >/dev/null
      exit 1
    fi
    sleep 0.5
  done
  echo "secantus: ready on 127.0.0.1:$port after $((SECONDS - t0))s"
}

stop() {
  if running; then
    local pid; pid="$(cat "$pid_file")"
    kill "$pid"
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
    echo "secantus: stopped"
  else
    echo "secantus: not running"
  fi
  rm -f "$pid_file"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running && ready; then echo "secantus: running"; else echo "secantus: down"; exit 1; fi ;;
  build) build ;;
  *) echo "usage: $0 start|stop|status|build" >&2; exit 2 ;;
esac
