#!/usr/bin/env bash
# run.sh - Loanwire's benchmarks beside the raw limits of Kafka and Redis, in one run.
#
#   ./bench/run.sh              full run (~2,000,000 events; about 10-20 minutes)
#   ./bench/run.sh --quick      smoke run (seconds a step; proves the scripts work)
#   ./bench/run.sh [--quick] --build DIR    use (and incrementally build) DIR/bin
#   ./bench/run.sh --head       benchmark the committed HEAD: exported (git archive) to
#                               bench/.src and built there, others' uncommitted work left out
#   ./bench/run.sh --head --publish BENCHMARKS.md   the release figures: also written into
#                               BENCHMARKS.md (between its results markers)
#   extra arguments go to bench/bench.py (e.g. --steps 1,2 --events 500000 --keep)
#
# Starts a private stack (Kafka 49092/49093, Redis 46379, folder bench/.stack; override
# with LW_BENCH_KAFKA_PORT / LW_BENCH_CONTROLLER_PORT / LW_BENCH_REDIS_PORT /
# LW_BENCH_STACK_DIR — never the LOANWIRE_* of the caller's stack, since the bench stack
# is wiped), and for step 6 a Redis Cluster of 3 masters with a replica each
# (127.0.0.1:21001-21006, bus 31001+, below the ephemeral ports; bench/.stack-cluster; LW_BENCH_CLUSTER_PORT /
# LW_BENCH_CLUSTER_BUS_PORT / LW_BENCH_CLUSTER_DIR), both fresh each run, so a test or
# demo stack is left alone; stops them at the end, also on failure or Ctrl-C. Programs: build/bin, built (RelWithDebInfo) if
# missing. Writes the markdown table to bench/results/latest.md and the measured figures to
# bench/results/figures.json (--quick: figures-quick.json; merged by name; `python3 bench/capacity.py` turns them into
# SCALE.md). Steps 7 (retention) and 8 (memory model at 1,000,000 borrowers) are in the
# full run; --quick runs them small. No time is asserted;
# exits non-zero when a step fails or a count does not match.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

quick=()
build=build
src=$root
head=0
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=(--quick) ;;
    --build) build=$2; shift ;;
    --head) head=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e 's/^# \{0,1\}//' -e '/^set -euo/d'; exit 0 ;;
    *) args+=("$1") ;;
  esac
  shift
done

step() { printf '\n==> %s\n' "$*" >&2; }

export LOANWIRE_STACK_DIR=${LW_BENCH_STACK_DIR:-$root/bench/.stack}
export LOANWIRE_KAFKA_PORT=${LW_BENCH_KAFKA_PORT:-49092}
export LOANWIRE_CONTROLLER_PORT=${LW_BENCH_CONTROLLER_PORT:-49093}
export LOANWIRE_REDIS_PORT=${LW_BENCH_REDIS_PORT:-46379}
unset LOANWIRE_BOOTSTRAP LOANWIRE_REDIS

if [ "$head" = 1 ]; then
  step "exporting HEAD ($(git rev-parse --short HEAD)) to bench/.src"
  rm -rf bench/.src && mkdir -p bench/.src
  git archive HEAD | tar -x -C bench/.src
  src=$root/bench/.src
  build=$src/build
fi

progs="loanwire-gen loanwire-produce loanwire-topics loanwire-exposure loanwire-exposure-bench loanwire-avro loanwire-query"
have_all() { for p in $progs; do [ -x "$build/bin/$p" ] || return 1; done; }
if [ "$build" != build ] || ! have_all; then
  step "building in $build/ (RelWithDebInfo)"
  [ -f "$build/CMakeCache.txt" ] || cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$build" -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
fi
have_all || { echo "error: programs missing in $build/bin after the build" >&2; exit 1; }
for t in kcat redis-cli python3; do
  command -v "$t" >/dev/null || { echo "error: $t not found (./deploy/install-deps.sh)" >&2; exit 1; }
done

# Step 6's Redis Cluster (3 masters, 1 replica each), a stack of its own.
cluster_dir=${LW_BENCH_CLUSTER_DIR:-$root/bench/.stack-cluster}
cluster_port=${LW_BENCH_CLUSTER_PORT:-21001}
cluster_bus=${LW_BENCH_CLUSTER_BUS_PORT:-31001}
cluster_stack() {
  env -u LOANWIRE_REDIS -u LOANWIRE_BOOTSTRAP LOANWIRE_STACK_DIR="$cluster_dir" \
      LOANWIRE_REDIS_PORT="$cluster_port" LOANWIRE_REDIS_BUS_PORT="$cluster_bus" \
      ./deploy/stack.sh "$@"
}

started=0
stop_stack() {
  local rc=$?
  if [ "$started" = 1 ]; then
    step "stopping the bench stack"
    ./deploy/stack.sh down || true
    cluster_stack down >/dev/null 2>&1 || true
  fi
  exit $rc
}
trap stop_stack EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "starting a fresh bench stack (Kafka 127.0.0.1:$LOANWIRE_KAFKA_PORT, Redis 127.0.0.1:$LOANWIRE_REDIS_PORT, $LOANWIRE_STACK_DIR)"
./deploy/stack.sh down >/dev/null 2>&1 || true
rm -rf "$LOANWIRE_STACK_DIR"
started=1
./deploy/stack.sh up
eval "$(./deploy/stack.sh env)"
step "starting a fresh bench Redis Cluster (127.0.0.1:$cluster_port+, $cluster_dir)"
cluster_stack down >/dev/null 2>&1 || true
rm -rf "$cluster_dir"
cluster_stack up --redis-cluster 3 --kafka-brokers 0

# Step 10's unrecorded look-up: loanwire-query as it was before issue 20 made every
# look-up a recorded inquiry (the parent of the commit that added CreditInquiry.avsc;
# LW_BENCH_LOOKUP_BASE=REV for another), exported and built in bench/.base.
base_bin=()
base_rev=${LW_BENCH_LOOKUP_BASE:-}
if [ -z "$base_rev" ]; then
  first=$(git log --diff-filter=A --format=%H -- schemas/CreditInquiry.avsc 2>/dev/null | tail -1)
  [ -z "$first" ] || base_rev=$first^
fi
if [ -n "$base_rev" ] && git rev-parse --verify -q "$base_rev" >/dev/null; then
  step "building loanwire-query of $(git rev-parse --short "$base_rev") in bench/.base (step 10's unrecorded look-up)"
  rm -rf bench/.base && mkdir -p bench/.base/src
  git archive "$base_rev" | tar -x -C bench/.base/src
  cmake -S bench/.base/src -B bench/.base/build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build bench/.base/build -j"$(nproc 2>/dev/null || echo 2)" --target loanwire-query --target loanwire-exposure-bench >/dev/null
  base_bin=(--lookup-base-bin "$root/bench/.base/build/bin")
fi

mkdir -p bench/results
# A smoke run's figures (CI runs one) stay beside the committed ones, never in them:
# capacity.py plans from figures.json.
figures=figures.json
[ ${#quick[@]} -eq 0 ] || figures=figures-quick.json
step "running the benchmarks${quick:+ (quick)}"
python3 bench/bench.py "${quick[@]}" --bin "$build/bin" --root "$src" \
  --bootstrap "$LOANWIRE_BOOTSTRAP" --redis "$LOANWIRE_REDIS" --stack-dir "$LOANWIRE_STACK_DIR" \
  --cluster "redis://127.0.0.1:$cluster_port" --cluster-stack-dir "$cluster_dir" \
  --work "$root/bench/.work" --out "$root/bench/results/latest.md" \
  --figures "$root/bench/results/$figures" "${base_bin[@]}" "${args[@]}"
