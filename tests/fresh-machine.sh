#!/usr/bin/env bash
# fresh-machine.sh - prove that deploy/install-deps.sh is enough on a new
# machine: build a clean Debian 12 root from Debian's own packages (this
# machine's apt sources, mmdebstrap --variant=minbase: no compiler, no Java,
# no Python), copy the working tree into it, and inside it run
# deploy/install-deps.sh, the build (-Werror), the unit tests and a short
# fuzz run of every target. A package that only this machine has (installed
# by hand once, or part of the image) makes it fail here, where CI would.
#
#   ./tests/fresh-machine.sh            install + build + unit tests + fuzz 5 s each
#   ./tests/fresh-machine.sh --full     ./tests/run.sh inside the root instead
#                                       (Kafka and Redis too; much slower)
#   ./tests/fresh-machine.sh --keep     keep the root afterwards (printed)
#   ./tests/fresh-machine.sh --head     the committed HEAD instead of the work tree
#
# Slow (downloads and installs ~1 GB of packages), so it runs outside CI:
# run it before you resolve an issue that changes dependencies or build
# scripts. Needs root (chroot, mounts); installs mmdebstrap if missing.
# Exits non-zero when any step fails; the root is removed unless --keep.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

full=0 keep=0 head=0
for a in "$@"; do
  case "$a" in
    --full) full=1 ;;
    --keep) keep=1 ;;
    --head) head=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e 's/^# \{0,1\}//' -e '/^set -euo/d'; exit 0 ;;
    *) echo "fresh-machine.sh: unknown argument '$a' (see --help)" >&2; exit 2 ;;
  esac
done

step() { printf '\n==> [%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf 'fresh-machine.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (mmdebstrap, chroot and mounts)"
[ -f /etc/apt/sources.list.d/debian.sources ] || [ -f /etc/apt/sources.list ] ||
  die "no apt sources on this machine to build the root from"
if ! command -v mmdebstrap >/dev/null; then
  step "installing mmdebstrap (Debian package mmdebstrap) on this machine"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
fi

start=$(date +%s)
fresh=$(mktemp -d /var/tmp/loanwire-fresh.XXXXXX)
mounted=()
cleanup() {
  local m
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
  if [ "$keep" = 1 ]; then
    echo "fresh-machine.sh: root kept at $fresh" >&2
  else
    rm -rf --one-file-system "$fresh"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The same sources this machine uses (deb822 or one-line form), so the root
# gets exactly what CI's apt-get would.
step "building a clean Debian 12 (bookworm, minbase) root in $fresh"
sources=()
[ -f /etc/apt/sources.list.d/debian.sources ] && sources+=(/etc/apt/sources.list.d/debian.sources)
[ -s /etc/apt/sources.list ] && sources+=(/etc/apt/sources.list)
mmdebstrap --variant=minbase --include=ca-certificates --quiet bookworm "$fresh" "${sources[@]}" ||
  die "mmdebstrap failed"

step "copying the $([ "$head" = 1 ] && echo "committed HEAD" || echo "work tree") into /src"
mkdir -p "$fresh/src"
if [ "$head" = 1 ]; then
  git archive HEAD | tar -x -C "$fresh/src"
else
  git ls-files -z --cached --others --exclude-standard |
    tar --null -T - --ignore-failed-read -cf - | tar -x -C "$fresh/src"
fi
cp /etc/resolv.conf "$fresh/etc/resolv.conf"
# This machine's trust anchors (a network that inspects TLS to the package
# registries brings its own CA): the root reaches PyPI and Maven Central as
# CI's machine does, no more.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$fresh/usr/local/share/ca-certificates/"
  chroot "$fresh" update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates failed in the root"
fi

for m in proc sys dev dev/pts; do
  mkdir -p "$fresh/$m"
  case "$m" in
    proc) mount -t proc proc "$fresh/proc" ;;
    *) mount --rbind "/$m" "$fresh/$m" && mount --make-rslave "$fresh/$m" ;;
  esac
  mounted+=("$fresh/$m")
done

# Inside: only what Debian installed plus what the project's scripts install.
if [ "$full" = 1 ]; then
  inside='./tests/run.sh'
else
  inside='set -e
    ./deploy/install-deps.sh
    echo "==> building (-Werror)" >&2
    cmake -S . -B build -DLW_WERROR=ON >/dev/null
    cmake --build build -j"$(nproc)" >/dev/null
    echo "==> unit tests" >&2
    (cd build && ctest --output-on-failure -L unit)
    echo "==> fuzzing every target briefly" >&2
    tests/fuzz/run.sh 5'
fi
step "running inside the root: $(echo "$inside" | tr -s ' \n' ' ' | cut -c1-100)"
rc=0
chroot "$fresh" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  LANG=C.UTF-8 CI=true SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  PIP_CERT=/etc/ssl/certs/ca-certificates.crt REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \ LOANWIRE_KAFKA_PORT=45092 LOANWIRE_CONTROLLER_PORT=45093 LOANWIRE_REDIS_PORT=45379 \
  bash -c "cd /src && $inside" || rc=$?

secs=$(($(date +%s) - start))
if [ $rc -eq 0 ]; then
  step "fresh machine: PASSED in $((secs / 60)) min $((secs % 60)) s"
else
  step "fresh machine: FAILED (exit $rc) after $((secs / 60)) min $((secs % 60)) s"
fi
exit $rc
