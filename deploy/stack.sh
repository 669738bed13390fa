#!/usr/bin/env bash
# stack.sh - a real local Kafka (KRaft) and Redis on 127.0.0.1: one broker and
# one Redis by default, or a Kafka cluster and a Redis Cluster on request.
#
#   ./deploy/stack.sh up [--redis-cluster N] [--kafka-brokers M]
#                           start what is not running; wait until it answers.
#                           --redis-cluster N: a Redis Cluster of N masters (N >= 3),
#                             each with one replica (2N redis-server processes);
#                           --kafka-brokers M: M KRaft brokers, each also a
#                             controller voter (1 is the default; 0: no Kafka,
#                             a Redis-only stack beside another stack's broker).
#                           The shape and ports are recorded in the stack folder,
#                           so every other command needs no flags.
#   ./deploy/stack.sh down      stop what `up` started (by recorded pid)
#   ./deploy/stack.sh status    what runs, where
#   ./deploy/stack.sh env       export lines for the current stack (eval them)
#   ./deploy/stack.sh pids      one line per process: NAME PID PORT
#                               (redis-1.., kafka-1..; PID "-" when it is down)
#   ./deploy/stack.sh kill NAME     kill -9 one process (fault tests)
#   ./deploy/stack.sh start NAME    start it again with its own data and config
#   ./deploy/stack.sh kafka-stop | kafka-start | redis-restart   (fault tests)
#
# Ports: Redis node i listens on LOANWIRE_REDIS_PORT + i - 1, its cluster bus
# on LOANWIRE_REDIS_BUS_PORT + i - 1 (default: Redis port + 10000; keep it
# below 32768, Linux's ephemeral range, where an outgoing connection can hold
# it); Kafka broker i on LOANWIRE_KAFKA_PORT + 2(i - 1) and its controller on
# LOANWIRE_CONTROLLER_PORT + 2(i - 1), so one broker keeps its usual ports.
#
# Environment:
#   LOANWIRE_STACK_DIR      data, logs and pids (default: <repo>/.stack)
#   LOANWIRE_KAFKA_PORT     broker port (9092); LOANWIRE_CONTROLLER_PORT (port+1)
#   LOANWIRE_REDIS_PORT     Redis port (6379)
#   LOANWIRE_REDIS_BUS_PORT cluster bus port of the first node (Redis port + 10000)
#   LOANWIRE_REDIS_NODE_TIMEOUT  cluster-node-timeout in ms (3000): how long a
#                           dead master takes to be failed over
#   LOANWIRE_KAFKA_HEAP     heap of each broker (512m)
#   KAFKA_HOME              run this installed Kafka distribution instead
#   LOANWIRE_BOOTSTRAP      use this existing Kafka cluster; start no broker
#   LOANWIRE_REDIS          use this existing Redis (redis://host:port); start none
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=deploy/lib.sh
. "$here/lib.sh"

mkdir -p "$LW_STACK_DIR"
shape_file=$LW_STACK_DIR/shape

# The shape: redis_cluster=0 is one plain Redis; kafka_brokers=1 one broker.
# Commands other than `up` read it, with the ports, from the stack folder, so a
# test can drive a second stack by its folder alone.
redis_cluster=0
kafka_brokers=1
if [ "${1:-}" != up ] && [ -f "$shape_file" ]; then
  # shellcheck disable=SC1090
  . "$shape_file"
  LW_REDIS_PORT=$redis_port
  LW_KAFKA_PORT=$kafka_port
  LW_CONTROLLER_PORT=$controller_port
  LW_REDIS_BUS_PORT=${bus_port:-$((redis_port + 10000))}
fi
LW_REDIS_BUS_PORT=${LW_REDIS_BUS_PORT:-${LOANWIRE_REDIS_BUS_PORT:-$((LW_REDIS_PORT + 10000))}}
node_timeout=${LOANWIRE_REDIS_NODE_TIMEOUT:-3000}

redis_nodes() { if [ "$redis_cluster" -gt 0 ]; then echo $((redis_cluster * 2)); else echo 1; fi; }
redis_port_of() { echo $((LW_REDIS_PORT + $1 - 1)); }
bus_port_of() { echo $((LW_REDIS_BUS_PORT + $1 - 1)); }
kafka_port_of() { echo $((LW_KAFKA_PORT + 2 * ($1 - 1))); }
controller_port_of() { echo $((LW_CONTROLLER_PORT + 2 * ($1 - 1))); }
# One broker and one Redis keep the folders they always had.
redis_dir_of() { if [ "$redis_cluster" -gt 0 ]; then echo "$LW_STACK_DIR/redis-$1"; else echo "$LW_STACK_DIR/redis"; fi; }
kafka_dir_of() { if [ "$kafka_brokers" -gt 1 ]; then echo "$LW_STACK_DIR/kafka-$1"; else echo "$LW_STACK_DIR/kafka"; fi; }
# Names in messages: "kafka"/"redis" for a single server, as always; pids says kafka-1/redis-1.
kafka_name() { if [ "$kafka_brokers" -gt 1 ]; then echo "kafka-$1"; else echo kafka; fi; }
redis_name() { if [ "$redis_cluster" -gt 0 ]; then echo "redis-$1"; else echo redis; fi; }

own_bootstrap() {
  local i s=
  for ((i = 1; i <= kafka_brokers; i++)); do s="$s${s:+,}127.0.0.1:$(kafka_port_of "$i")"; done
  echo "$s"
}
own_redis=redis://127.0.0.1:$(redis_port_of 1)
bootstrap() { echo "${LOANWIRE_BOOTSTRAP:-$(own_bootstrap)}"; }
redis_url() { echo "${LOANWIRE_REDIS:-$own_redis}"; }

# The addresses `env` prints point at this stack's own servers; only other
# addresses in LOANWIRE_BOOTSTRAP / LOANWIRE_REDIS mean "external, start none".
forget_own_addresses() {
  local i
  [ "$kafka_brokers" -gt 0 ] && [ "${LOANWIRE_BOOTSTRAP:-}" = "$(own_bootstrap)" ] && unset LOANWIRE_BOOTSTRAP
  for ((i = 1; i <= $(redis_nodes); i++)); do
    [ "${LOANWIRE_REDIS:-}" = "redis://127.0.0.1:$(redis_port_of "$i")" ] && unset LOANWIRE_REDIS
  done
  return 0
}
forget_own_addresses

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits for a condition, showing what it waits for; gives up after $2 seconds.
wait_for() {
  local what=$1 secs=$2; shift 2
  local i=0
  until "$@"; do
    i=$((i + 1))
    [ $i -le $((secs * 5)) ] || return 1
    sleep 0.2
  done
  return 0
}

# ---- Kafka ------------------------------------------------------------------

kafka_classpath() {
  if [ -n "${KAFKA_HOME:-}" ]; then echo "$KAFKA_HOME/libs/*"; else echo "$LW_KAFKA_LIBS/*"; fi
}

kafka_answers() {
  kcat -b "127.0.0.1:$(kafka_port_of "${1:-1}")" -L -m 2 >/dev/null 2>&1
}

# Every broker is registered (metadata lists them all), so topics created next
# can have replication factor kafka_brokers.
kafka_all_registered() {
  local n
  n=$(kcat -b "$(own_bootstrap)" -L -m 2 2>/dev/null | sed -n 's/^ *\([0-9]*\) brokers:.*/\1/p' | head -n 1)
  [ "${n:-0}" -ge "$kafka_brokers" ]
}

# Writes broker i's server.properties. One broker: the single-node template as
# always. Several: every broker is also a controller and the voters are all of
# them (static quorum). On a 2-core machine three more JVMs as dedicated
# controllers would cost ~1.5 GB and CPU for nothing a test needs; a 3-voter
# combined quorum still survives the kill -9 of any one node (2 of 3 remain).
kafka_write_config() {
  local i=$1 d; d=$(kafka_dir_of "$i")
  mkdir -p "$d/data"
  if [ "$kafka_brokers" -le 1 ]; then
    sed -e "s|@PORT@|$(kafka_port_of 1)|g" -e "s|@CONTROLLER_PORT@|$(controller_port_of 1)|g" \
        -e "s|@DATA@|$d/data|g" "$LW_ROOT/deploy/kafka/server.properties.in" >"$d/server.properties"
    return 0
  fi
  local j voters= rf=$kafka_brokers
  [ "$rf" -le 3 ] || rf=3
  local isr=$((rf > 1 ? rf - 1 : 1))
  for ((j = 1; j <= kafka_brokers; j++)); do
    voters="$voters${voters:+,}$j@127.0.0.1:$(controller_port_of "$j")"
  done
  sed -e "s|@NODE_ID@|$i|g" -e "s|@PORT@|$(kafka_port_of "$i")|g" \
      -e "s|@CONTROLLER_PORT@|$(controller_port_of "$i")|g" -e "s|@VOTERS@|$voters|g" \
      -e "s|@RF@|$rf|g" -e "s|@MIN_ISR@|$isr|g" -e "s|@DATA@|$d/data|g" \
      "$LW_ROOT/deploy/kafka/server-cluster.properties.in" >"$d/server.properties"
}

kafka_jopts() {
  local d=$1
  echo "-Xms$LW_KAFKA_HEAP -Xmx$LW_KAFKA_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20" \
       "-Djava.awt.headless=true -Dlog4j.configuration=file:$LW_ROOT/deploy/kafka/log4j.properties" \
       "-Dkafka.logs.dir=$d"
}

# Formats broker i's storage once; all brokers of a cluster share one id.
kafka_format() {
  local i=$1 cluster_id=$2 d; d=$(kafka_dir_of "$i")
  [ -f "$d/data/meta.properties" ] && return 0
  # shellcheck disable=SC2046
  java $(kafka_jopts "$d") -cp "$(kafka_classpath)" kafka.tools.StorageTool format -t "$cluster_id" \
      -c "$d/server.properties" >"$d/format.log" 2>&1 ||
      { cat "$d/format.log" >&2; lw_die "$(kafka_name "$i"): formatting storage failed"; }
}

# Starts broker i (its config and storage exist) without waiting.
kafka_spawn() {
  local i=$1 d; d=$(kafka_dir_of "$i")
  local port; port=$(kafka_port_of "$i")
  port_open "$port" && lw_die "port $port is taken by another process (set LOANWIRE_KAFKA_PORT)"
  lw_say "$(kafka_name "$i"): starting $LW_KAFKA_VERSION on 127.0.0.1:$port"
  # shellcheck disable=SC2046
  nohup setsid java $(kafka_jopts "$d") -cp "$(kafka_classpath)" kafka.Kafka "$d/server.properties" \
      >"$d/kafka.log" 2>&1 </dev/null &
  echo $! >"$d/pid"
}

# Answers, or has died (no use waiting for a JVM that exited at start).
kafka_answers_or_died() {
  kafka_answers "$1" || ! pid_alive "$(kafka_dir_of "$1")/pid"
}

kafka_wait() {
  local i=$1 secs=$2 d; d=$(kafka_dir_of "$i")
  if ! wait_for kafka "$secs" kafka_answers_or_died "$i" || ! kafka_answers "$i"; then
    tail -n 30 "$d/kafka.log" >&2
    lw_die "$(kafka_name "$i") did not answer on 127.0.0.1:$(kafka_port_of "$i") within $secs s (log: $d/kafka.log)"
  fi
}

kafka_up() {
  if [ -n "${LOANWIRE_BOOTSTRAP:-}" ]; then
    lw_say "kafka: using existing cluster $LOANWIRE_BOOTSTRAP"
    return 0
  fi
  [ "$kafka_brokers" -gt 0 ] || return 0
  [ -n "${KAFKA_HOME:-}" ] || lw_kafka_fetch
  command -v java >/dev/null || lw_die "java not found (./deploy/install-deps.sh installs it)"
  local i cluster_id= started=()
  for ((i = 1; i <= kafka_brokers; i++)); do
    local d; d=$(kafka_dir_of "$i")
    if pid_alive "$d/pid"; then continue; fi
    kafka_write_config "$i"
    if [ ! -f "$d/data/meta.properties" ]; then
      [ -n "$cluster_id" ] || [ ! -f "$LW_STACK_DIR/kafka-cluster-id" ] ||
        cluster_id=$(cat "$LW_STACK_DIR/kafka-cluster-id")
      if [ -z "$cluster_id" ]; then
        cluster_id=$(java -cp "$(kafka_classpath)" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
        echo "$cluster_id" >"$LW_STACK_DIR/kafka-cluster-id"
      fi
      kafka_format "$i" "$cluster_id"
    fi
    kafka_spawn "$i"
    started+=("$i")
  done
  # A quorum of several voters elects its leader only once a majority runs, so
  # all are started before any is waited for.
  for ((i = 1; i <= kafka_brokers; i++)); do
    kafka_answers "$i" || kafka_wait "$i" 90
  done
  if [ "$kafka_brokers" -gt 1 ] && ! wait_for kafka 60 kafka_all_registered; then
    lw_die "kafka: not all $kafka_brokers brokers registered within 60 s"
  fi
}

kafka_down() {
  [ -n "${LOANWIRE_BOOTSTRAP:-}" ] && return 0
  [ "$kafka_brokers" -gt 0 ] || return 0
  if [ "$kafka_brokers" -le 1 ]; then
    stop_pid kafka "$(kafka_dir_of 1)/pid" 60
    return 0
  fi
  # All at once: stopped one by one, the last brokers lose the controller
  # majority and wait out their controlled shutdown until killed.
  local i
  for ((i = kafka_brokers; i >= 1; i--)); do
    stop_pid "kafka-$i" "$(kafka_dir_of "$i")/pid" 60 &
  done
  wait
}

# ---- Redis ------------------------------------------------------------------

redis_answers() {
  [ "$(redis-cli -h 127.0.0.1 -p "$(redis_port_of "${1:-1}")" ping 2>/dev/null)" = PONG ]
}

# Starts Redis node i and waits until it answers. It persists with AOF
# (appendfsync everysec) under the stack folder; a cluster node also keeps its
# nodes.conf there, so a restarted node rejoins the cluster it knew.
redis_spawn() {
  local i=$1 d; d=$(redis_dir_of "$i")
  local port; port=$(redis_port_of "$i")
  port_open "$port" && lw_die "port $port is taken by another process (set LOANWIRE_REDIS_PORT)"
  command -v redis-server >/dev/null || lw_die "redis-server not found (./deploy/install-deps.sh installs it)"
  mkdir -p "$d"
  local cluster=()
  if [ "$redis_cluster" -gt 0 ]; then
    local bus; bus=$(bus_port_of "$i")
    port_open "$bus" && lw_die "cluster bus port $bus is taken by another process (set LOANWIRE_REDIS_BUS_PORT)"
    cluster=(--cluster-enabled yes --cluster-config-file nodes.conf
             --cluster-node-timeout "$node_timeout" --cluster-port "$bus")
  fi
  lw_say "$(redis_name "$i"): starting on 127.0.0.1:$port"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$d" \
      --appendonly yes --appendfsync everysec --save "" \
      --daemonize yes --pidfile "$d/pid" --logfile "$d/redis.log" \
      --protected-mode yes "${cluster[@]}" >/dev/null
  if ! wait_for redis 20 redis_answers "$i"; then
    tail -n 20 "$d/redis.log" >&2
    lw_die "$(redis_name "$i") did not answer on 127.0.0.1:$port"
  fi
}

cluster_info() { redis-cli -h 127.0.0.1 -p "$(redis_port_of "$1")" cluster info 2>/dev/null | tr -d '\r'; }

# Every node sees the whole cluster (state ok, all 16384 slots served), and
# every replica has finished its first sync: until then WAIT 1 cannot succeed
# and a master's failure could not be failed over.
redis_cluster_ok() {
  local i info
  for ((i = 1; i <= $(redis_nodes); i++)); do
    info=$(cluster_info "$i")
    grep -qx 'cluster_state:ok' <<<"$info" || return 1
    grep -qx 'cluster_slots_ok:16384' <<<"$info" || return 1
    grep -qx "cluster_known_nodes:$(redis_nodes)" <<<"$info" || return 1
    info=$(redis-cli -h 127.0.0.1 -p "$(redis_port_of "$i")" info replication 2>/dev/null | tr -d '\r')
    if grep -qx 'role:master' <<<"$info"; then
      grep -q '^slave0:.*state=online' <<<"$info" || return 1
    else
      grep -qx 'master_link_status:up' <<<"$info" || return 1
      grep -qx 'master_sync_in_progress:0' <<<"$info" || return 1
    fi
  done
}

redis_up() {
  if [ -n "${LOANWIRE_REDIS:-}" ]; then
    lw_say "redis: using existing server $LOANWIRE_REDIS"
    return 0
  fi
  local i
  for ((i = 1; i <= $(redis_nodes); i++)); do
    if pid_alive "$(redis_dir_of "$i")/pid"; then
      wait_for redis 20 redis_answers "$i" || lw_die "$(redis_name "$i") (pid $(cat "$(redis_dir_of "$i")/pid")) does not answer"
    else
      redis_spawn "$i"
    fi
  done
  [ "$redis_cluster" -gt 0 ] || return 0
  # Created once: a node that knows only itself and serves no slot is new.
  if grep -qx 'cluster_known_nodes:1' <<<"$(cluster_info 1)" &&
     grep -qx 'cluster_slots_assigned:0' <<<"$(cluster_info 1)"; then
    local addrs=()
    for ((i = 1; i <= $(redis_nodes); i++)); do addrs+=("127.0.0.1:$(redis_port_of "$i")"); done
    lw_say "redis: creating a cluster of $redis_cluster masters, one replica each"
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes \
        >"$LW_STACK_DIR/redis-cluster-create.log" 2>&1 ||
        { cat "$LW_STACK_DIR/redis-cluster-create.log" >&2; lw_die "redis-cli --cluster create failed"; }
  fi
  wait_for redis 60 redis_cluster_ok ||
      { cluster_info 1 >&2; lw_die "redis cluster not ok (all slots served, all nodes known, replicas in sync) within 60 s"; }
}

redis_down() {
  [ -n "${LOANWIRE_REDIS:-}" ] && return 0
  local i
  for ((i = $(redis_nodes); i >= 1; i--)); do
    local d; d=$(redis_dir_of "$i")
    if pid_alive "$d/pid"; then
      # SHUTDOWN fsyncs the AOF, so a clean stop loses nothing acknowledged.
      redis-cli -h 127.0.0.1 -p "$(redis_port_of "$i")" shutdown >/dev/null 2>&1 || true
    fi
    if [ "$redis_cluster" -gt 0 ]; then
      stop_pid "redis-$i" "$d/pid" 20
    else
      stop_pid redis "$d/pid" 20
    fi
  done
}

# ---- Process control ----------------------------------------------------------

# Stops the process recorded in a pid file: TERM, then KILL after $3 seconds.
stop_pid() {
  local name=$1 pidfile=$2 secs=$3
  [ -f "$pidfile" ] || return 0
  local pid; pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    lw_say "$name: stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt $((secs * 5)) ]; do sleep 0.2; i=$((i + 1)); done
    if kill -0 "$pid" 2>/dev/null; then
      lw_say "$name: did not stop in ${secs}s, killing"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

# Every process of the stack as "NAME PIDFILE PORT", for pids, kill and start.
processes() {
  local i
  if [ -z "${LOANWIRE_REDIS:-}" ]; then
    for ((i = 1; i <= $(redis_nodes); i++)); do
      echo "redis-$i $(redis_dir_of "$i")/pid $(redis_port_of "$i")"
    done
  fi
  if [ -z "${LOANWIRE_BOOTSTRAP:-}" ]; then
    for ((i = 1; i <= kafka_brokers; i++)); do
      echo "kafka-$i $(kafka_dir_of "$i")/pid $(kafka_port_of "$i")"
    done
  fi
}

print_pids() {
  local name pidfile port
  while read -r name pidfile port; do
    if pid_alive "$pidfile"; then echo "$name $(cat "$pidfile") $port"; else echo "$name - $port"; fi
  done < <(processes)
}

# kill -9 one process by name: a crash, not a stop (fault tests).
kill_one() {
  local want=${1:-} name pidfile port
  [ -n "$want" ] || lw_die "usage: stack.sh kill NAME (see stack.sh pids)"
  while read -r name pidfile port; do
    [ "$name" = "$want" ] || continue
    pid_alive "$pidfile" || lw_die "$name is not running"
    lw_say "$name: kill -9 $(cat "$pidfile")"
    kill -KILL "$(cat "$pidfile")"
    local i=0
    while pid_alive "$pidfile" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    return 0
  done < <(processes)
  lw_die "no process named $want in this stack (see stack.sh pids)"
}

start_one() {
  local want=${1:-} name pidfile port
  [ -n "$want" ] || lw_die "usage: stack.sh start NAME (see stack.sh pids)"
  while read -r name pidfile port; do
    [ "$name" = "$want" ] || continue
    pid_alive "$pidfile" && { lw_say "$name is already running"; return 0; }
    local i=${name#*-}
    case $name in
      redis-*) redis_spawn "$i" ;;
      kafka-*)
        [ -n "${KAFKA_HOME:-}" ] || lw_kafka_fetch
        kafka_write_config "$i"; kafka_spawn "$i"; kafka_wait "$i" 90 ;;
    esac
    return 0
  done < <(processes)
  lw_die "no process named $want in this stack (see stack.sh pids)"
}

status() {
  local rc=0 i
  if [ -n "${LOANWIRE_BOOTSTRAP:-}" ]; then
    echo "kafka: external $LOANWIRE_BOOTSTRAP"
  elif [ "$kafka_brokers" -eq 0 ]; then
    echo "kafka: none in this stack"
  elif [ "$kafka_brokers" -le 1 ]; then
    if pid_alive "$(kafka_dir_of 1)/pid" && kafka_answers 1; then
      echo "kafka: up, pid $(cat "$(kafka_dir_of 1)/pid"), bootstrap $(bootstrap)"
    else
      echo "kafka: down"; rc=3
    fi
  else
    for ((i = 1; i <= kafka_brokers; i++)); do
      local d; d=$(kafka_dir_of "$i")
      if pid_alive "$d/pid" && kafka_answers "$i"; then
        echo "kafka-$i: up, pid $(cat "$d/pid"), 127.0.0.1:$(kafka_port_of "$i")"
      else
        echo "kafka-$i: down"; rc=3
      fi
    done
    echo "kafka: bootstrap $(bootstrap)"
  fi
  if [ -n "${LOANWIRE_REDIS:-}" ]; then
    echo "redis: external $LOANWIRE_REDIS"
  elif [ "$redis_cluster" -eq 0 ]; then
    if pid_alive "$(redis_dir_of 1)/pid" && redis_answers 1; then
      echo "redis: up, pid $(cat "$(redis_dir_of 1)/pid"), url $(redis_url)"
    else
      echo "redis: down"; rc=3
    fi
  else
    for ((i = 1; i <= $(redis_nodes); i++)); do
      local d; d=$(redis_dir_of "$i")
      if pid_alive "$d/pid" && redis_answers "$i"; then
        echo "redis-$i: up, pid $(cat "$d/pid"), 127.0.0.1:$(redis_port_of "$i"), $(redis-cli -p "$(redis_port_of "$i")" role 2>/dev/null | head -n 1)"
      else
        echo "redis-$i: down"; rc=3
      fi
    done
    echo "redis: cluster of $redis_cluster masters, $(cluster_info 1 | grep '^cluster_state:' || echo 'cluster_state:unknown'), url $(redis_url)"
  fi
  return $rc
}

print_env() {
  [ "$kafka_brokers" -eq 0 ] && [ -z "${LOANWIRE_BOOTSTRAP:-}" ] ||
    echo "export LOANWIRE_BOOTSTRAP=$(bootstrap)"
  echo "export LOANWIRE_REDIS=$(redis_url)"
}

# Something of the recorded shape still runs.
anything_running() {
  local name pidfile port
  while read -r name pidfile port; do
    pid_alive "$pidfile" && return 0
  done < <(processes)
  return 1
}

# Parses up's flags; refuses to change the shape of a stack that runs.
choose_shape() {
  local want_redis=0 want_kafka=1
  while [ $# -gt 0 ]; do
    case $1 in
      --redis-cluster) want_redis=${2:-}; shift 2 || lw_die "--redis-cluster needs a number" ;;
      --kafka-brokers) want_kafka=${2:-}; shift 2 || lw_die "--kafka-brokers needs a number" ;;
      *) lw_die "unknown option for up: $1" ;;
    esac
  done
  [[ $want_redis =~ ^[0-9]+$ ]] && { [ "$want_redis" -eq 0 ] || [ "$want_redis" -ge 3 ]; } ||
    lw_die "--redis-cluster needs a number of masters >= 3 (Redis Cluster's minimum)"
  [[ $want_kafka =~ ^[0-9]+$ ]] || lw_die "--kafka-brokers needs a number (0: no Kafka)"
  if [ -f "$shape_file" ]; then
    # shellcheck disable=SC1090
    . "$shape_file"
    local old_rp=$LW_REDIS_PORT old_kp=$LW_KAFKA_PORT old_cp=$LW_CONTROLLER_PORT
    LW_REDIS_PORT=$redis_port LW_KAFKA_PORT=$kafka_port LW_CONTROLLER_PORT=$controller_port
    if anything_running; then
      [ "$redis_cluster" = "$want_redis" ] && [ "$kafka_brokers" = "$want_kafka" ] &&
        [ "$redis_port" = "$old_rp" ] && [ "$kafka_port" = "$old_kp" ] ||
        lw_die "the stack in $LW_STACK_DIR runs with another shape or ports (redis_cluster=$redis_cluster kafka_brokers=$kafka_brokers, redis port $redis_port, kafka port $kafka_port); run down first"
    fi
    LW_REDIS_PORT=$old_rp LW_KAFKA_PORT=$old_kp LW_CONTROLLER_PORT=$old_cp
  fi
  redis_cluster=$want_redis
  kafka_brokers=$want_kafka
  own_redis=redis://127.0.0.1:$(redis_port_of 1)
  cat >"$shape_file" <<EOF
redis_cluster=$redis_cluster
kafka_brokers=$kafka_brokers
redis_port=$LW_REDIS_PORT
kafka_port=$LW_KAFKA_PORT
controller_port=$LW_CONTROLLER_PORT
bus_port=$LW_REDIS_BUS_PORT
EOF
  forget_own_addresses
}

case "${1:-}" in
  up)
    shift
    choose_shape "$@"
    redis_up
    kafka_up
    [ "$kafka_brokers" -eq 0 ] && [ -z "${LOANWIRE_BOOTSTRAP:-}" ] || echo "Kafka bootstrap: $(bootstrap)"
    echo "Redis URL:       $(redis_url)"
    ;;
  down)
    kafka_down
    redis_down
    ;;
  status) status ;;
  env) print_env ;;
  pids) print_pids ;;
  kill) kill_one "${2:-}" ;;
  start) start_one "${2:-}" ;;
  kafka-stop) kafka_down ;;
  kafka-start) kafka_up ;;
  redis-restart) redis_down; redis_up ;;
  -h | --help | help)
    sed -n '2,/^set -euo/p' "$0" | sed -e 's/^# \{0,1\}//' -e '/^set -euo/d'
    ;;
  *)
    echo "usage: $0 up [--redis-cluster N] [--kafka-brokers M]|down|status|env|pids|kill NAME|start NAME|kafka-stop|kafka-start|redis-restart" >&2
    exit 2
    ;;
esac
