#!/usr/bin/env bash
# install-deps.sh - install everything Loanwire needs on a fresh Debian 12
# machine, as root, without input; then fetch the Kafka broker from Maven
# Central into the cache. Idempotent and quiet when there is nothing to do.
#
#   ./deploy/install-deps.sh            # packages + Python test peers + Kafka
#   LOANWIRE_SKIP_KAFKA=1 ...           # packages only
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=deploy/lib.sh
. "$here/lib.sh"

packages=(
  build-essential cmake pkg-config clang libclang-rt-14-dev
  librdkafka-dev libavro-dev libhiredis-dev libjansson-dev libmicrohttpd-dev
  libcmocka-dev libssl-dev
  redis-server redis-tools kcat
  openjdk-17-jre-headless openjdk-17-jdk-headless maven
  python3 python3-pip curl procps
  help2man libsystemd-dev systemd man-db
  stunnel4 openssl
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
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

# Python peers used only by tests (independent Avro implementation) and by
# schemas/READING.md's Python recipe (fastavro, confluent-kafka).
py_missing=()
python3 -c 'import fastavro' 2>/dev/null || py_missing+=(fastavro)
python3 -c 'import confluent_kafka' 2>/dev/null || py_missing+=(confluent-kafka)
if [ ${#py_missing[@]} -gt 0 ]; then
  lw_say "installing Python test peers: ${py_missing[*]}"
  python3 -m pip install -q --disable-pip-version-check "${py_missing[@]}" 2>/dev/null ||
    python3 -m pip install -q --disable-pip-version-check --break-system-packages "${py_missing[@]}"
fi

if [ -z "${LOANWIRE_SKIP_KAFKA:-}" ] && [ -z "${KAFKA_HOME:-}" ] && [ -z "${LOANWIRE_BOOTSTRAP:-}" ]; then
  lw_kafka_fetch
fi
