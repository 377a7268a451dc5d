#!/usr/bin/env bash
# A three-node Apache Kafka cluster on 127.0.0.1 (KRaft; every node a combined broker+controller),
# from the same Maven jars as deploy/kafka.sh. The fault suite and the cluster benchmark use it;
# the single node (deploy/kafka.sh) stays the default for the main suite.
#
#   deploy/kafka-cluster.sh start          # idempotent: fetch jars, format three data dirs, wait for 3 brokers
#   deploy/kafka-cluster.sh stop           # stop every node (SIGTERM, then SIGKILL after 30 s)
#   deploy/kafka-cluster.sh status
#   deploy/kafka-cluster.sh bootstrap      # print the bootstrap servers
#   deploy/kafka-cluster.sh kill N         # SIGKILL node N (1..3): a crash
#   deploy/kafka-cluster.sh stop-node N    # SIGTERM node N and wait: a controlled shutdown
#   deploy/kafka-cluster.sh start-node N   # (re)start node N on its data dir and wait until it serves
#
# Environment: KAFKA_CLUSTER_PORT (default 19092: brokers on 19092-19094, controllers on 19192-19194),
# KAFKA_CLUSTER_DIR (default deploy/.run/kafka-cluster), KAFKA_START_TIMEOUT_S (default 120).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
base="${KAFKA_CLUSTER_PORT:-19092}"
run_dir="${KAFKA_CLUSTER_DIR:-$here/.run/kafka-cluster}"
jars="$here/kafka/.jars"
timeout_s="${KAFKA_START_TIMEOUT_S:-120}"
cluster_id="Y29ycmlkb3ItdGhyZWUtbm9k"   # fixed: re-formatting the same dirs is a no-op
nodes=(1 2 3)

broker_port() { echo $((base + $1 - 1)); }
controller_port() { echo $((base + 100 + $1 - 1)); }
node_dir() { echo "$run_dir/node$1"; }
pid_file() { echo "$(node_dir "$1")/kafka.pid"; }
bootstrap() {
  local out=() n
  for n in "${nodes[@]}"; do out+=("127.0.0.1:$(broker_port "$n")"); done
  (IFS=,; echo "${out[*]}")
}

running() { local f; f="$(pid_file "$1")"; [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }

# Ready means a real Kafka client sees at least $1 brokers in the cluster metadata, through node $2.
brokers_ready() {
  "$root/.venv/bin/python" "$here/kafka/ready.py" "$(broker_port "$2")" "$1" >/dev/null 2>&1
}

configure() {
  local n=$1 dir voters="" m
  dir="$(node_dir "$n")"
  mkdir -p "$dir/data"
  for m in "${nodes[@]}"; do voters+="${voters:+,}$m@127.0.0.1:$(controller_port "$m")"; done
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$(broker_port "$n"),CONTROLLER://127.0.0.1:$(controller_port "$n")
advertised.listeners=PLAINTEXT://127.0.0.1:$(broker_port "$n")
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
unclean.leader.election.enable=false
PROPS
}

jopts() { echo "-Xms128m -Xmx384m -XX:+UseSerialGC -Dlog4j.configuration=file:$here/kafka/log4j.properties"; }

launch() {
  local n=$1 dir
  dir="$(node_dir "$n")"
  if running "$n"; then return; fi
  configure "$n"
  # shellcheck disable=SC2046
  java $(jopts "$n") -cp "$jars/*" kafka.tools.StorageTool format -t "$cluster_id" \
    -c "$dir/server.properties" --ignore-formatted >>"$dir/kafka.log" 2>&1
  # shellcheck disable=SC2046
  nohup java $(jopts "$n") -cp "$jars/*" kafka.Kafka "$dir/server.properties" >>"$dir/kafka.log" 2>&1 &
  echo $! > "$(pid_file "$n")"
}

wait_ready() {  # $1 = how many brokers, $2 = through which node
  local t0=$SECONDS
  until brokers_ready "$1" "$2"; do
    if ! running "$2"; then echo "kafka-cluster: node $2 exited; see $(node_dir "$2")/kafka.log" >&2; tail -20 "$(node_dir "$2")/kafka.log" >&2; exit 1; fi
    if (( SECONDS - t0 > timeout_s )); then echo "kafka-cluster: not ready after ${timeout_s}s" >&2; exit 1; fi
    sleep 1
  done
}

start() {
  "$here/kafka.sh" fetch
  local n t0=$SECONDS
  if running 1 && running 2 && running 3 && brokers_ready 3 1; then echo "kafka-cluster: already running on $(bootstrap)"; return; fi
  for n in "${nodes[@]}"; do launch "$n"; done   # together: the controllers need a quorum to elect
  wait_ready 3 1
  echo "kafka-cluster: 3 brokers ready on $(bootstrap) after $((SECONDS - t0))s"
}

stop_node() {
  local n=$1 pid
  if running "$n"; then
    pid="$(cat "$(pid_file "$n")")"
    kill "$pid"
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$(pid_file "$n")"
}

check_node() { case "${1:-}" in 1|2|3) ;; *) echo "node must be 1, 2 or 3" >&2; exit 2 ;; esac; }

case "${1:-}" in
  start) start ;;
  stop)  # all nodes at once: one by one, each would wait for the others to take over its partitions
    for n in "${nodes[@]}"; do stop_node "$n" & done; wait; echo "kafka-cluster: stopped" ;;
  status) if running 1 && running 2 && running 3 && brokers_ready 3 1; then echo "kafka-cluster: running"; else echo "kafka-cluster: down"; exit 1; fi ;;
  bootstrap) bootstrap ;;
  kill) check_node "${2:-}"; if running "$2"; then kill -9 "$(cat "$(pid_file "$2")")"; fi; rm -f "$(pid_file "$2")" ;;
  stop-node) check_node "${2:-}"; stop_node "$2" ;;
  start-node) check_node "${2:-}"; launch "$2"; wait_ready 3 "$2" ;;
  *) echo "usage: $0 start|stop|status|bootstrap|kill N|stop-node N|start-node N" >&2; exit 2 ;;
esac
