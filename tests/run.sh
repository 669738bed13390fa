#!/usr/bin/env bash
# run.sh - the whole test suite, on a fresh machine or a developer's:
# installs what is missing, builds from clean folders (normal with -Werror,
# and ASan+UBSan), starts a private stack (Kafka + Redis on their own ports
# and folder, so a running demo stack is left alone), runs every test through
# ctest, fuzzes every target briefly, and stops what it started, also on
# failure or Ctrl-C. Exits non-zero on any failure. Beside that stack it runs a
# Redis Cluster of 3 masters with a replica each (fresh every run, Redis only,
# ports from LOANWIRE_TEST_CLUSTER_PORT, 17001, cluster bus ports + 10000, under
# .stack-test-cluster/) for the tests that need one (LOANWIRE_REDIS_CLUSTER),
# and a Kafka cluster of 3 KRaft brokers (fresh every run, Kafka only, brokers
# on LOANWIRE_TEST_KAFKA_CLUSTER_PORT (default 19292) + 0, 2, 4, controllers one
# above each, under .stack-test-kafka3/) for the tests that need one
# (LOANWIRE_KAFKA_CLUSTER, LOANWIRE_KAFKA_CLUSTER_STACK_DIR).
#
#   ./tests/run.sh              everything
#   LW_TEST_QUICK=1 ./tests/run.sh   skip the sanitizer build and fuzzing
#   ctest arguments after --, e.g. ./tests/run.sh -- -R produce
#   ./tests/run.sh --help      this text
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
ctest_args=()
case "${1:-}" in
  "") ;;
  --) shift; ctest_args=("$@") ;;
  -h|--help) usage; exit 0 ;;
  *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
esac
jobs=$(nproc 2>/dev/null || echo 2)

step() { printf '\n==> %s\n' "$*" >&2; }

# A stack of its own: ports and folder apart from the default (demo) stack.
export LOANWIRE_STACK_DIR=${LOANWIRE_STACK_DIR:-$root/.stack-test}
export LOANWIRE_KAFKA_PORT=${LOANWIRE_KAFKA_PORT:-19092}
export LOANWIRE_CONTROLLER_PORT=${LOANWIRE_CONTROLLER_PORT:-19093}
export LOANWIRE_REDIS_PORT=${LOANWIRE_REDIS_PORT:-16379}
unset LOANWIRE_BOOTSTRAP LOANWIRE_REDIS
cluster_dir=$root/.stack-test-cluster
cluster_port=${LOANWIRE_TEST_CLUSTER_PORT:-17001}
# The cluster stack is driven by its folder (stack.sh records shape and ports there).
cluster_stack() {
  env -u LOANWIRE_REDIS -u LOANWIRE_BOOTSTRAP LOANWIRE_STACK_DIR="$cluster_dir" \
      LOANWIRE_REDIS_PORT="$cluster_port" ./deploy/stack.sh "$@"
}
kafka3_dir=$root/.stack-test-kafka3
kafka3_port=${LOANWIRE_TEST_KAFKA_CLUSTER_PORT:-19292}
# Kafka only: LOANWIRE_REDIS names the main stack's Redis, so it starts none.
kafka3_stack() {
  env -u LOANWIRE_BOOTSTRAP LOANWIRE_STACK_DIR="$kafka3_dir" \
      LOANWIRE_KAFKA_PORT="$kafka3_port" LOANWIRE_CONTROLLER_PORT=$((kafka3_port + 1)) \
      LOANWIRE_REDIS="redis://127.0.0.1:$LOANWIRE_REDIS_PORT" \
      LOANWIRE_REDIS_PORT=$((kafka3_port + 7)) ./deploy/stack.sh "$@"
}

step "installing dependencies"
./deploy/install-deps.sh
# A tool still missing (no root, a failed install) is named with its Debian
# package here, not left to surface as a CMake or linker trace later.
./deploy/install-deps.sh --check

step "building (clean, -Werror) in build/"
rm -rf build
cmake -S . -B build -DLW_WERROR=ON >/dev/null
cmake --build build -j"$jobs"

started=0
cluster_started=0
kafka3_started=0
stop_stack() {
  if [ "$kafka3_started" = 1 ]; then
    step "stopping the test Kafka cluster"
    kafka3_stack down || true
  fi
  if [ "$started" = 1 ]; then
    step "stopping the test stack"
    ./deploy/stack.sh down || true
  fi
  if [ "$cluster_started" = 1 ]; then
    step "stopping the test Redis Cluster"
    cluster_stack down || true
  fi
}
trap stop_stack EXIT
trap 'exit 130' INT TERM

step "starting the test stack"
started=1
./deploy/stack.sh up
eval "$(./deploy/stack.sh env)"

step "starting a fresh test Redis Cluster (3 masters, 3 replicas) on 127.0.0.1:$cluster_port+"
cluster_started=1
[ ! -f "$cluster_dir/shape" ] || cluster_stack down || true
rm -rf "$cluster_dir"
cluster_stack up --redis-cluster 3 --kafka-brokers 0
export LOANWIRE_REDIS_CLUSTER=redis://127.0.0.1:$cluster_port
export LOANWIRE_REDIS_CLUSTER_STACK_DIR=$cluster_dir

step "starting a fresh test Kafka cluster (3 KRaft brokers) on 127.0.0.1:$kafka3_port+"
kafka3_started=1
[ ! -f "$kafka3_dir/shape" ] || kafka3_stack down || true
rm -rf "$kafka3_dir"
kafka3_stack up --kafka-brokers 3
export LOANWIRE_KAFKA_CLUSTER="127.0.0.1:$kafka3_port,127.0.0.1:$((kafka3_port + 2)),127.0.0.1:$((kafka3_port + 4))"
export LOANWIRE_KAFKA_CLUSTER_STACK_DIR=$kafka3_dir

step "running every test (ctest)"
rc=0
(cd build && ctest --output-on-failure --timeout 900 "${ctest_args[@]}") || rc=1

if [ -z "${LW_TEST_QUICK:-}" ] && [ ${#ctest_args[@]} -eq 0 ]; then
  step "building with ASan+UBSan in build-asan/ and running the unit tests under them"
  rm -rf build-asan
  cmake -S . -B build-asan -DLW_SANITIZE=ON -DLW_WERROR=ON >/dev/null
  cmake --build build-asan -j"$jobs"
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
      UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      ctest --output-on-failure -L unit) || rc=1

  if [ -x tests/fuzz/run.sh ]; then
    step "fuzzing every target briefly (the decoders 30 s, the others 15 s)"
    tests/fuzz/run.sh ${LW_FUZZ_SECONDS:+"$LW_FUZZ_SECONDS"} || rc=1
  fi
  if [ -x bench/run.sh ]; then
    step "benchmark scripts smoke run (bench/run.sh --quick; no time is asserted)"
    bench/run.sh --quick || rc=1 # on its own stack (ports and folder)
  fi
fi

if [ $rc -ne 0 ]; then
  step "FAILED"
else
  step "all tests passed"
fi
exit $rc
