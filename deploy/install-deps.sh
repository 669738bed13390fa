#!/usr/bin/env bash
# install-deps.sh - install everything Loanwire needs on a fresh Debian 12
# machine, as root, without input; then fetch the Kafka broker from Maven
# Central into the cache. Idempotent and quiet when there is nothing to do.
#
#   ./deploy/install-deps.sh            # packages + Python test peers + Kafka
#   LOANWIRE_SKIP_KAFKA=1 ...           # packages only
#   ./deploy/install-deps.sh --check    # install nothing: name what is missing
#   ./deploy/install-deps.sh --help     # this text
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=deploy/lib.sh
. "$here/lib.sh"

case "${1:-}" in
  "" | --check) ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "install-deps.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
esac

# Each Debian package with what proves it is there (cmd:NAME on PATH,
# pc:MODULE for pkg-config, file:GLOB, py:MODULE for python3), so that
# --check names the package behind a missing tool instead of leaving a
# CMake or linker trace to decode.
deps=(
  "build-essential cmd:cc" "cmake cmd:cmake" "pkg-config cmd:pkg-config" "clang cmd:clang"
  "libclang-rt-14-dev file:/usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a"
  "librdkafka-dev pc:rdkafka" "libavro-dev pc:avro-c" "libhiredis-dev pc:hiredis"
  "libjansson-dev pc:jansson" "libmicrohttpd-dev pc:libmicrohttpd" "libcmocka-dev pc:cmocka"
  "libssl-dev pc:libcrypto"
  "redis-server cmd:redis-server" "redis-tools cmd:redis-cli" "kcat cmd:kcat"
  "openjdk-17-jre-headless cmd:java" "openjdk-17-jdk-headless cmd:javac" "maven cmd:mvn"
  "python3 cmd:python3" "python3-pip py:pip" "curl cmd:curl" "procps cmd:pkill"
  "help2man cmd:help2man" "libsystemd-dev pc:libsystemd" "systemd cmd:systemd-analyze"
  "man-db cmd:man" "stunnel4 cmd:stunnel4" "openssl cmd:openssl"
  "npm cmd:npm" "chromium cmd:chromium" "chromium-driver cmd:chromedriver" "wrk cmd:wrk"
)

# Whether what a probe names is there (a command, a pkg-config module, ...).
probe_ok() {
  case "$1" in
    cmd:*) command -v "${1#cmd:}" >/dev/null 2>&1 ;;
    pc:*) pkg-config --exists "${1#pc:}" 2>/dev/null ;;
    file:*) compgen -G "${1#file:}" >/dev/null ;;
    py:*) python3 -c "import ${1#py:}" 2>/dev/null ;;
  esac
}

# Probes every dependency; prints one line per missing one, naming its package.
check_deps() {
  local d pkg probe bad=0
  for d in "${deps[@]}"; do
    pkg=${d%% *} probe=${d#* }
    probe_ok "$probe" ||
      { lw_say "missing: ${probe#*:} (Debian package $pkg: apt-get install $pkg)"; bad=1; }
  done
  local m
  for m in fastavro confluent_kafka selenium; do
    python3 -c "import $m" 2>/dev/null ||
      { lw_say "missing: python module $m (PyPI: python3 -m pip install ${m//_/-})"; bad=1; }
  done
  [ -f "$LW_UPLOT_DIR/dist/uPlot.iife.min.js" ] ||
    { lw_say "missing: uPlot in $LW_UPLOT_DIR (npm; ./deploy/install-deps.sh fetches it)"; bad=1; }
  return $bad
}
if [ "${1:-}" = --check ]; then
  check_deps || lw_die "dependencies missing (./deploy/install-deps.sh as root installs them all)"
  exit 0
fi

# A package is installed unless Debian has it or its tool is already there by
# another way: the image's Node.js and npm come from NodeSource, and Debian's
# npm conflicts with them ("held broken packages"), so asking for it would fail.
missing=()
for d in "${deps[@]}"; do
  p=${d%% *}
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    probe_ok "${d#* }" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    lw_die "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
  fi
  lw_say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts redis-server as a service on install; the stack runs its own.
  if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now redis-server >/dev/null 2>&1 || true
  fi
  service redis-server stop >/dev/null 2>&1 || true
fi

# Python peers used only by tests (independent Avro implementation, the
# dashboard's browser test) and by schemas/READING.md's Python recipe
# (fastavro, confluent-kafka).
py_missing=()
python3 -c 'import fastavro' 2>/dev/null || py_missing+=(fastavro)
python3 -c 'import confluent_kafka' 2>/dev/null || py_missing+=(confluent-kafka)
# Selenium drives Debian's chromium (through chromium-driver) in test_dashboard.py.
python3 -c 'import selenium' 2>/dev/null || py_missing+=(selenium)
if [ ${#py_missing[@]} -gt 0 ]; then
  lw_say "installing Python test peers: ${py_missing[*]}"
  python3 -m pip install -q --disable-pip-version-check "${py_missing[@]}" 2>/dev/null ||
    python3 -m pip install -q --disable-pip-version-check --break-system-packages "${py_missing[@]}"
fi

# The dashboard's charting library, served by loanwire-query (no CDN).
lw_uplot_fetch

if [ -z "${LOANWIRE_SKIP_KAFKA:-}" ] && [ -z "${KAFKA_HOME:-}" ] && [ -z "${LOANWIRE_BOOTSTRAP:-}" ]; then
  lw_kafka_fetch
fi
