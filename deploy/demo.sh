#!/usr/bin/env bash
# demo.sh - Loanwire end to end on this machine, the main job on a fresh one:
# installs what is missing, builds, starts Kafka + Redis, creates the topics,
# runs a live multi-platform feed (loanwire-gen) into Kafka, keeps every
# borrower's exposure in Redis (loanwire-exposure), shows the alerts as they
# are raised (loanwire-alerts), then prints a short report: events applied,
# borrowers, alerts by rule, and the exposure of one flagged borrower as the
# HTTP API (loanwire-query) returns it. Stops everything it started.
#
#   ./deploy/demo.sh                    about a minute at 1000 events/s
#   ./deploy/demo.sh --seconds 20 --rate 2000
#   ./deploy/demo.sh --keep-running     leave stack and services up; print how to query
#
# Environment: as deploy/stack.sh (LOANWIRE_BOOTSTRAP, LOANWIRE_REDIS, ports,
# LOANWIRE_STACK_DIR); LOANWIRE_QUERY_PORT (8080); LOANWIRE_BUILD_DIR (build).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

seconds=60
rate=1000
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --keep-running) keep=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e 's/^# \{0,1\}//' -e '/^set -euo/d'; exit 0 ;;
    *) echo "demo.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
build=${LOANWIRE_BUILD_DIR:-$root/build}
bin=$build/bin
qport=${LOANWIRE_QUERY_PORT:-8080}

step "installing what is missing"
./deploy/install-deps.sh

step "building into $build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc 2>/dev/null || echo 2)" >/dev/null

# Stop only what this run started: the stack if it was down, and our programs.
stack_was_up=0
./deploy/stack.sh status >/dev/null 2>&1 && stack_was_up=1
pids=()
cleanup() {
  local rc=$?
  if [ $keep = 1 ] && [ $rc = 0 ]; then return; fi
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ $stack_was_up = 0 ]; then ./deploy/stack.sh down >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "starting Kafka and Redis"
./deploy/stack.sh up
eval "$(./deploy/stack.sh env)"
run=${LOANWIRE_STACK_DIR:-$root/.stack}/demo
mkdir -p "$run"
seed=$(date +%s) # a new feed each run, so state from an earlier demo never masks this one
tag=demo-$seed

step "creating topics"
"$bin/loanwire-topics" create

step "starting loanwire-exposure and loanwire-query (port $qport)"
"$bin/loanwire-exposure" --consumer-id "$tag" --status 10 2>"$run/exposure.log" &
pids+=($!)
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
(umask 077 && echo "$token" >"$run/tokens")
"$bin/loanwire-query" --listen "127.0.0.1:$qport" --tokens "$run/tokens" 2>"$run/query.log" &
pids+=($!)
# Alerts of this run only: new stream groups start at the end of the stream.
"$bin/loanwire-alerts" --source redis --group "$tag-report" --follow --json \
  >"$run/alerts.jsonl" 2>"$run/alerts.log" &
pids+=($!)
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$qport/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -sf "http://127.0.0.1:$qport/healthz" >/dev/null || { tail "$run/query.log" >&2; exit 1; }

step "live feed: loanwire-gen --kafka --rate $rate for ${seconds}s; alerts as they are raised:"
"$bin/loanwire-gen" --kafka --seed "$seed" --borrowers 20000 --rate "$rate" --duration "$seconds" \
  2>"$run/gen.log" &
gen=$!
pids+=($gen)
"$bin/loanwire-alerts" --source redis --group "$tag-screen" --follow --text &
screen=$!
pids+=($screen)
gen_rc=0
wait $gen || gen_rc=$?
[ $gen_rc = 0 ] || { cat "$run/gen.log" >&2; echo "demo: loanwire-gen failed ($gen_rc)" >&2; exit 1; }

# Wait until the consumer has applied the whole feed (lag 0 in its metrics).
produced=$(sed -n 's/.*delivered \([0-9]*\).*/\1/p' "$run/gen.log" | tail -n 1)
for _ in $(seq 150); do
  lag=$(redis-cli -u "$LOANWIRE_REDIS" hget "lw:metrics:$tag" lag_total 2>/dev/null || echo "")
  [ "$lag" = 0 ] && break
  sleep 0.2
done
sleep 1.5 # one more metrics period, and the subscribers print the last alerts
kill -TERM "$screen" 2>/dev/null || true

metric() { curl -s "http://127.0.0.1:$qport/metrics" | awk -v m="$1" '$1 == m { s += $2 } END { print s + 0 }'; }
step "report"
m() { redis-cli -u "$LOANWIRE_REDIS" hget "lw:metrics:$tag" "$1"; }
consumed=$(m events_consumed)
applied=$(m events_applied)
dups=$(m duplicates)
ooo=$(m out_of_order)
dead=$(m dead_letters)
borrowers=$(redis-cli -u "$LOANWIRE_REDIS" --scan --pattern 'b:{*' | wc -l)
printf '  events produced (delivered)  %s\n' "${produced:-?}"
printf '  events consumed              %s\n' "${consumed:-?}"
# "applied" counts events that changed a state; a repeat, or an event that
# changes nothing (an application already out of the window), is a duplicate
printf '    applied                    %s\n' "${applied:-?}"
printf '    duplicates or no change    %s\n' "${dups:-0}"
printf '    out of order               %s\n' "${ooo:-0}"
printf '    dead letters               %s\n' "${dead:-0}"
printf '  borrowers in Redis           %s\n' "$borrowers"
printf '  alerts raised, by rule:\n'
grep -o '"rule_id":"[^"]*"' "$run/alerts.jsonl" | cut -d'"' -f4 | sort | uniq -c |
  awk '{ printf "    %-26s %s\n", $2, $1 }'
flagged=$(grep -o '"borrower_id":"[^"]*"' "$run/alerts.jsonl" | cut -d'"' -f4 | sort | uniq -c |
  sort -rn | awk 'NR == 1 { print $2 }')
if [ -n "$flagged" ]; then
  printf '\n  exposure of flagged borrower %s (GET /v1/borrowers/%s/exposure):\n' "$flagged" "$flagged"
  curl -sf -H "Authorization: Bearer $token" \
    "http://127.0.0.1:$qport/v1/borrowers/$flagged/exposure?purpose=LOAN_APPROVAL" | python3 -m json.tool | sed 's/^/    /'
else
  echo "  no alerts were raised" >&2
  exit 1
fi

if [ $keep = 1 ]; then
  cat <<EOT

Left running (stop with: kill ${pids[*]}; ./deploy/stack.sh down):
  Kafka     $LOANWIRE_BOOTSTRAP       Redis  $LOANWIRE_REDIS
  API       curl -H "Authorization: Bearer \$(cat $run/tokens)" http://127.0.0.1:$qport/v1/borrowers/$flagged/exposure?purpose=LOAN_APPROVAL
            curl http://127.0.0.1:$qport/metrics
  alerts    $bin/loanwire-alerts --source redis --from-beginning --group mine
  more feed $bin/loanwire-gen --kafka --rate 500 --duration 60 --seed $((seed + 1))
EOT
fi
