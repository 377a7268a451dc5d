#!/usr/bin/env bash
# Fetch, start and stop a real single-node Apache Kafka broker (KRaft, combined mode) on 127.0.0.1.
#
#   deploy/kafka.sh start   # idempotent: fetches jars once, formats storage once, waits until ready
#   deploy/kafka.sh stop
#   deploy/kafka.sh status
#
# Environment: KAFKA_PORT (default 9092), KAFKA_CONTROLLER_PORT (default 9093),
# KAFKA_DATA_DIR (default deploy/.run/kafka), KAFKA_START_TIMEOUT_S (default 120).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=deploy/proc.sh
. "$here/proc.sh"
root="$(cd "$here/.." && pwd)"
port="${KAFKA_PORT:-9092}"
cport="${KAFKA_CONTROLLER_PORT:-9093}"
run_dir="${KAFKA_DATA_DIR:-$here/.run/kafka}"
jars="$here/kafka/.jars"
pid_file="$run_dir/kafka.pid"
log_file="$run_dir/kafka.log"
timeout_s="${KAFKA_START_TIMEOUT_S:-120}"
cluster_id="Y29ycmlkb3ItY2x1c3Rlcg"   # fixed: a re-format of the same dir is a no-op

fetch() {
  if [ -f "$jars/.complete" ]; then return; fi
  echo "kafka: resolving broker jars from Maven Central" >&2
  rm -rf "$jars"
  (cd "$here/kafka" && mvn -q -B dependency:copy-dependencies -DoutputDirectory=.jars -DincludeScope=runtime)
  touch "$jars/.complete"
}

# Ours: alive and this server (its command line names our files); see deploy/proc.sh.
running() { pid_runs "$pid_file" "$run_dir/server.properties"; }
alive() { pid_alive "$pid_file"; }

ready() {
  # Ready means a real Kafka client can fetch cluster metadata, not just that the port is open.
  "$root/.venv/bin/python" "$here/kafka/ready.py" "$port" >/dev/null 2>&1
}

start() {
  fetch
  mkdir -p "$run_dir/data"
  if running && ready; then echo "kafka: already running on 127.0.0.1:$port"; return; fi
  local t0=$SECONDS
  if running; then
    echo "kafka: already starting; waiting for it" >&2  # never a second broker on the same files
  else
    for p in "$port" "$cport"; do
      if port_in_use "$p"; then
        # Someone else's server: "ready" against it would send the tests' topics there.
        echo "kafka: 127.0.0.1:$p is taken by a process that is not ours ($pid_file); stop it or set KAFKA_PORT / KAFKA_CONTROLLER_PORT" >&2
        exit 1
      fi
    done
    launch
  fi
  until alive && ready; do
    if ! alive; then echo "kafka: process exited; see $log_file" >&2; tail -20 "$log_file" >&2; exit 1; fi
    if (( SECONDS - t0 > timeout_s )); then
      echo "kafka: not ready after ${timeout_s}s; stopped it; see $log_file" >&2
      stop >/dev/null
      exit 1
    fi
    sleep 1
  done
  echo "kafka: ready on 127.0.0.1:$port after $((SECONDS - t0))s"
}

launch() {
  cat > "$run_dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$run_dir/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
PROPS
  local cp="$jars/*"
  local jopts=(-Xms256m -Xmx512m -Dlog4j.configuration="file:$here/kafka/log4j.properties")
  java "${jopts[@]}" -cp "$cp" kafka.tools.StorageTool format -t "$cluster_id" \
    -c "$run_dir/server.properties" --ignore-formatted >>"$log_file" 2>&1
  nohup java "${jopts[@]}" -cp "$cp" kafka.Kafka "$run_dir/server.properties" >>"$log_file" 2>&1 &
  echo $! > "$pid_file"
}

stop() {
  if running; then
    local pid; pid="$(cat "$pid_file")"
    kill "$pid"
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
    echo "kafka: stopped"
  else
    echo "kafka: not running"
  fi
  rm -f "$pid_file"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running && ready; then echo "kafka: running"; else echo "kafka: down"; exit 1; fi ;;
  fetch) fetch ;;
  *) echo "usage: $0 start|stop|status|fetch" >&2; exit 2 ;;
esac
