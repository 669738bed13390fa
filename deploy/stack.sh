#!/usr/bin/env bash
# stack.sh - a real local Kafka (KRaft, single node) and Redis, on 127.0.0.1.
#
#   ./deploy/stack.sh up        start what is not running; wait until it answers
#   ./deploy/stack.sh down      stop what `up` started (by recorded pid)
#   ./deploy/stack.sh status    what runs, where
#   ./deploy/stack.sh env       export lines for the current stack (eval them)
#   ./deploy/stack.sh kafka-stop | kafka-start | redis-restart   (fault tests)
#
# Environment:
#   LOANWIRE_STACK_DIR      data, logs and pids (default: <repo>/.stack)
#   LOANWIRE_KAFKA_PORT     broker port (9092); LOANWIRE_CONTROLLER_PORT (port+1)
#   LOANWIRE_REDIS_PORT     Redis port (6379)
#   LOANWIRE_KAFKA_HEAP     broker heap (512m)
#   KAFKA_HOME              run this installed Kafka distribution instead
#   LOANWIRE_BOOTSTRAP      use this existing Kafka cluster; start no broker
#   LOANWIRE_REDIS          use this existing Redis (redis://host:port); start none
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=deploy/lib.sh
. "$here/lib.sh"

kdir=$LW_STACK_DIR/kafka
rdir=$LW_STACK_DIR/redis
mkdir -p "$LW_STACK_DIR"

# The addresses `env` prints point at this stack's own servers; only other
# addresses in LOANWIRE_BOOTSTRAP / LOANWIRE_REDIS mean "external, start none".
own_bootstrap=127.0.0.1:$LW_KAFKA_PORT
own_redis=redis://127.0.0.1:$LW_REDIS_PORT
[ "${LOANWIRE_BOOTSTRAP:-}" = "$own_bootstrap" ] && unset LOANWIRE_BOOTSTRAP
[ "${LOANWIRE_REDIS:-}" = "$own_redis" ] && unset LOANWIRE_REDIS
bootstrap() { echo "${LOANWIRE_BOOTSTRAP:-$own_bootstrap}"; }
redis_url() { echo "${LOANWIRE_REDIS:-$own_redis}"; }

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
  kcat -b "127.0.0.1:$LW_KAFKA_PORT" -L -m 2 >/dev/null 2>&1
}

kafka_up() {
  if [ -n "${LOANWIRE_BOOTSTRAP:-}" ]; then
    lw_say "kafka: using existing cluster $LOANWIRE_BOOTSTRAP"
    return 0
  fi
  if pid_alive "$kdir/pid"; then
    kafka_answers || wait_for kafka 60 kafka_answers || lw_die "kafka (pid $(cat "$kdir/pid")) does not answer"
    return 0
  fi
  port_open "$LW_KAFKA_PORT" && lw_die "port $LW_KAFKA_PORT is taken by another process (set LOANWIRE_KAFKA_PORT)"
  [ -n "${KAFKA_HOME:-}" ] || lw_kafka_fetch
  command -v java >/dev/null || lw_die "java not found (./deploy/install-deps.sh installs it)"
  mkdir -p "$kdir/data"
  sed -e "s|@PORT@|$LW_KAFKA_PORT|g" -e "s|@CONTROLLER_PORT@|$LW_CONTROLLER_PORT|g" \
      -e "s|@DATA@|$kdir/data|g" "$LW_ROOT/deploy/kafka/server.properties.in" >"$kdir/server.properties"
  local cp; cp=$(kafka_classpath)
  local jopts=(-Xms"$LW_KAFKA_HEAP" -Xmx"$LW_KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
               -Djava.awt.headless=true -Dlog4j.configuration="file:$LW_ROOT/deploy/kafka/log4j.properties"
               -Dkafka.logs.dir="$kdir")
  if [ ! -f "$kdir/data/meta.properties" ]; then
    local cluster_id
    cluster_id=$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    java "${jopts[@]}" -cp "$cp" kafka.tools.StorageTool format -t "$cluster_id" \
        -c "$kdir/server.properties" >"$kdir/format.log" 2>&1 ||
        { cat "$kdir/format.log" >&2; lw_die "kafka: formatting storage failed"; }
  fi
  lw_say "kafka: starting $LW_KAFKA_VERSION on 127.0.0.1:$LW_KAFKA_PORT"
  nohup setsid java "${jopts[@]}" -cp "$cp" kafka.Kafka "$kdir/server.properties" \
      >"$kdir/kafka.log" 2>&1 </dev/null &
  echo $! >"$kdir/pid"
  if ! wait_for kafka 90 kafka_answers; then
    tail -n 30 "$kdir/kafka.log" >&2
    lw_die "kafka did not answer on 127.0.0.1:$LW_KAFKA_PORT within 90 s (log: $kdir/kafka.log)"
  fi
}

kafka_down() {
  [ -n "${LOANWIRE_BOOTSTRAP:-}" ] && return 0
  stop_pid kafka "$kdir/pid" 60
}

# ---- Redis ------------------------------------------------------------------

redis_answers() {
  [ "$(redis-cli -h 127.0.0.1 -p "$LW_REDIS_PORT" ping 2>/dev/null)" = PONG ]
}

# The server persists with AOF (appendfsync everysec) under the stack folder.
redis_up() {
  if [ -n "${LOANWIRE_REDIS:-}" ]; then
    lw_say "redis: using existing server $LOANWIRE_REDIS"
    return 0
  fi
  if pid_alive "$rdir/pid"; then
    wait_for redis 20 redis_answers || lw_die "redis (pid $(cat "$rdir/pid")) does not answer"
    return 0
  fi
  port_open "$LW_REDIS_PORT" && lw_die "port $LW_REDIS_PORT is taken by another process (set LOANWIRE_REDIS_PORT)"
  command -v redis-server >/dev/null || lw_die "redis-server not found (./deploy/install-deps.sh installs it)"
  mkdir -p "$rdir"
  lw_say "redis: starting on 127.0.0.1:$LW_REDIS_PORT"
  redis-server --bind 127.0.0.1 --port "$LW_REDIS_PORT" --dir "$rdir" \
      --appendonly yes --appendfsync everysec --save "" \
      --daemonize yes --pidfile "$rdir/pid" --logfile "$rdir/redis.log" \
      --protected-mode yes >/dev/null
  if ! wait_for redis 20 redis_answers; then
    tail -n 20 "$rdir/redis.log" >&2
    lw_die "redis did not answer on 127.0.0.1:$LW_REDIS_PORT"
  fi
}

redis_down() {
  [ -n "${LOANWIRE_REDIS:-}" ] && return 0
  if pid_alive "$rdir/pid"; then
    # SHUTDOWN fsyncs the AOF, so a clean stop loses nothing acknowledged.
    redis-cli -h 127.0.0.1 -p "$LW_REDIS_PORT" shutdown >/dev/null 2>&1 || true
  fi
  stop_pid redis "$rdir/pid" 20
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

status() {
  local rc=0
  if [ -n "${LOANWIRE_BOOTSTRAP:-}" ]; then
    echo "kafka: external $LOANWIRE_BOOTSTRAP"
  elif pid_alive "$kdir/pid" && kafka_answers; then
    echo "kafka: up, pid $(cat "$kdir/pid"), bootstrap $(bootstrap)"
  else
    echo "kafka: down"; rc=3
  fi
  if [ -n "${LOANWIRE_REDIS:-}" ]; then
    echo "redis: external $LOANWIRE_REDIS"
  elif pid_alive "$rdir/pid" && redis_answers; then
    echo "redis: up, pid $(cat "$rdir/pid"), url $(redis_url)"
  else
    echo "redis: down"; rc=3
  fi
  return $rc
}

print_env() {
  echo "export LOANWIRE_BOOTSTRAP=$(bootstrap)"
  echo "export LOANWIRE_REDIS=$(redis_url)"
}

case "${1:-}" in
  up)
    redis_up
    kafka_up
    echo "Kafka bootstrap: $(bootstrap)"
    echo "Redis URL:       $(redis_url)"
    ;;
  down)
    kafka_down
    redis_down
    ;;
  status) status ;;
  env) print_env ;;
  kafka-stop) kafka_down ;;
  kafka-start) kafka_up ;;
  redis-restart) redis_down; redis_up ;;
  -h | --help | help)
    sed -n '2,/^set -euo/p' "$0" | sed -e 's/^# \{0,1\}//' -e '/^set -euo/d'
    ;;
  *)
    echo "usage: $0 up|down|status|env|kafka-stop|kafka-start|redis-restart" >&2
    exit 2
    ;;
esac
