#!/usr/bin/env bash
# test_stack_kafka3.sh - the contract of `./deploy/stack.sh up --kafka-brokers 3`
# that the Kafka-cluster work relies on: three KRaft brokers on 127.0.0.1 in a
# stack folder of their own, `env` naming all three, `pids` one `kafka-N PID
# PORT` line each, topics replicated 3 ways with min.insync.replicas=2 by
# default, and a broker killed with `kill NAME` (kill -9) and brought back with
# `start NAME` while acks=all writes go on: every message is in the topic once.
#
# Its own ports (LOANWIRE_TEST_KAFKA3_PORT, default 19192: brokers 19192, 19194,
# 19196, controllers one above each) and folder ($LW_TMP_DIR/stack-kafka3); no
# Redis of its own (LOANWIRE_REDIS, the suite's, counts as external). Stops
# what it started, also on failure.
set -uo pipefail
src=${LW_SOURCE_DIR:?run through ctest}
port=${LOANWIRE_TEST_KAFKA3_PORT:-19192}
export LOANWIRE_STACK_DIR=${LW_TMP_DIR:-/tmp}/stack-kafka3
export LOANWIRE_KAFKA_PORT=$port LOANWIRE_CONTROLLER_PORT=$((port + 1))
# LOANWIRE_REDIS names another server than this stack's own port, so it starts no Redis.
export LOANWIRE_REDIS=${LOANWIRE_REDIS:-redis://127.0.0.1:6379}
export LOANWIRE_REDIS_PORT=$((port + 7))
unset LOANWIRE_BOOTSTRAP
stack() { "$src/deploy/stack.sh" "$@"; }
pass=0 fail=0
check() { if eval "$2"; then echo "ok   $1"; pass=$((pass + 1)); else echo "FAIL $1"; fail=$((fail + 1)); fi; }
trap 'stack down >/dev/null 2>&1' EXIT

rm -rf "$LOANWIRE_STACK_DIR"
if ! timeout 300 "$src/deploy/stack.sh" up --kafka-brokers 3 >"${LOANWIRE_STACK_DIR}.up.log" 2>&1; then
  tail -n 40 "${LOANWIRE_STACK_DIR}.up.log"
  echo "FAIL: stack.sh up --kafka-brokers 3"
  exit 1
fi
boot=$(stack env | sed -n 's/^export LOANWIRE_BOOTSTRAP=//p')
want="127.0.0.1:$port,127.0.0.1:$((port + 2)),127.0.0.1:$((port + 4))"
check "env gives all three brokers ($boot)" '[ "$boot" = "$want" ]'
pids=$(stack pids)
check "pids: one kafka-N PID PORT line per broker" \
  '[ "$(printf "%s\n" "$pids" | grep -cE "^kafka-[123] [0-9]+ $port|^kafka-[123] [0-9]+ $((port + 2))|^kafka-[123] [0-9]+ $((port + 4))")" = 3 ]'
# (grep -q reads only part of a pipe: matched against captured text, since pipefail is on)
meta=$(kcat -b "$boot" -L -m 5 2>/dev/null)
check "metadata lists 3 brokers" 'grep -q "^ 3 brokers:" <<<"$meta"'

topic=lw-kafka3-$$
seq 1 3000 | awk '{ print "k" $1 % 50 ":" $1 }' |
  kcat -P -b "$boot" -t "$topic" -K: -X acks=all -X enable.idempotence=true 2>/dev/null
md=$(kcat -b "$boot" -L -t "$topic" -m 5 2>/dev/null)
reps=$(grep "replicas:" <<<"$md")
check "an auto-created topic has 3 replicas on every partition" \
  '[ -n "$reps" ] && ! grep -v "replicas: [0-9],[0-9],[0-9]," <<<"$reps" >/dev/null'
cfg=$(grep -E "^(default.replication.factor|min.insync.replicas)=" \
  "$LOANWIRE_STACK_DIR/kafka-1/server.properties" | tr '\n' ' ')
check "brokers default to RF 3, min.insync.replicas=2 ($cfg)" \
  '[ "$cfg" = "default.replication.factor=3 min.insync.replicas=2 " ]'

# kill -9 a broker mid-write, then bring it back; acks=all + idempotence: each message once.
(seq 3001 9000 | awk '{ print "k" $1 % 50 ":" $1; if ($1 % 1500 == 0) system("sleep 0.5") }' |
  kcat -P -b "$boot" -t "$topic" -K: -X acks=all -X enable.idempotence=true 2>/dev/null) &
writer=$!
sleep 1
stack kill kafka-2 >/dev/null 2>&1
pids=$(stack pids)
check "kill kafka-2: pids shows it down" 'grep -qx "kafka-2 - $((port + 2))" <<<"$pids"'
wait $writer
wrc=$?
check "writes went on with a broker down (kcat exit $wrc)" '[ $wrc = 0 ]'
stack start kafka-2 >/dev/null 2>&1
pids=$(stack pids)
check "start kafka-2: it runs again" 'grep -qE "^kafka-2 [0-9]+ $((port + 2))$" <<<"$pids"'
n=$(kcat -C -b "$boot" -t "$topic" -e -q -f '%s\n' 2>/dev/null | sort -n | uniq | wc -l)
total=$(kcat -C -b "$boot" -t "$topic" -e -q -f '%s\n' 2>/dev/null | wc -l)
check "every message once: $n distinct of $total read, 9000 written" '[ "$n" = 9000 ] && [ "$total" = 9000 ]'

stack down >/dev/null 2>&1
pids=$(stack pids)
check "down stops all three" '! grep -qE "^kafka-[123] [0-9]+ " <<<"$pids"'
trap - EXIT
echo "$pass passed, $fail failed"
[ $fail = 0 ]
