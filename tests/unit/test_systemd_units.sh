#!/usr/bin/env bash
# test_systemd_units.sh - deploy/systemd/*.service pass `systemd-analyze
# verify` without a running systemd (a container has none): the tree is
# installed under a scratch root (cmake --install --prefix ROOT/usr/local,
# with the host's system units copied beside it so the default dependencies
# resolve) and verified with --root, so ExecStart=/usr/local/bin/... must name
# an installed, executable program. Any warning counts as a failure (verify
# only fails on some errors; an unknown key is a warning). Also: Type=notify,
# EnvironmentFile=, a restart policy and the hardening settings are there,
# `systemd-analyze security --offline` rates each unit at most 2.0, and the
# options of the example environment files parse.
set -uo pipefail
src=${LW_SOURCE_DIR:?run through ctest}
build=${LW_BUILD_DIR:?run through ctest}
tmp=$(mktemp -d "${LW_TMP_DIR:-/tmp}/units.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
check() { if eval "$2"; then echo "ok   $1"; pass=$((pass + 1)); else echo "FAIL $1"; fail=$((fail + 1)); fi; }
# grep reading all its input: `cmd | grep -q` can kill cmd with SIGPIPE, which
# pipefail then reports as a failure
has() { grep "$@" >/dev/null; }

command -v systemd-analyze >/dev/null ||
  { echo "FAIL: systemd-analyze is missing (Debian package systemd; ./deploy/install-deps.sh installs it)"; exit 1; }
[ -d /usr/lib/systemd/system ] || { echo "FAIL: /usr/lib/systemd/system is missing (package systemd)"; exit 1; }

root=$tmp/root
cmake --install "$build" --prefix "$root/usr/local" >"$tmp/install.log" 2>&1
check "cmake --install into the scratch root" '[ $? = 0 ]'
mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd" "$root/etc/loanwire"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
units=$(cd "$src/deploy/systemd" && ls *.service)
check "deploy/systemd holds loanwire-exposure@.service and loanwire-query.service" \
  '[ "$(echo $units)" = "loanwire-exposure@.service loanwire-query.service" ]'
for u in $units; do
  check "$u installed under share/loanwire/systemd" 'cmp -s "$src/deploy/systemd/$u" "$root/usr/local/share/loanwire/systemd/$u"'
  cp "$src/deploy/systemd/$u" "$root/etc/systemd/system/"
done

for name in loanwire-exposure@1.service loanwire-query.service; do
  systemd-analyze verify --man=no --root="$root" "$name" >"$tmp/verify.out" 2>&1
  rc=$?
  check "systemd-analyze verify $name: exit 0, no warning (rc $rc: $(head -c 300 "$tmp/verify.out"))" \
    '[ $rc = 0 ] && [ ! -s "$tmp/verify.out" ]'
  systemd-analyze security --offline=yes --root="$root" "$name" >"$tmp/sec.out" 2>&1
  score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' "$tmp/sec.out")
  check "systemd-analyze security rates $name at most 2.0 (got ${score:-nothing})" \
    '[ -n "$score" ] && awk -v s="$score" "BEGIN { exit !(s <= 2.0) }"'
done

# The same check fails when the program is not there (the test can fail).
mv "$root/usr/local/bin/loanwire-query" "$tmp/q"
systemd-analyze verify --man=no --root="$root" loanwire-query.service >"$tmp/verify.out" 2>&1
check "verify fails when ExecStart's program is missing" '[ $? != 0 ] && grep -q "not executable" "$tmp/verify.out"'
mv "$tmp/q" "$root/usr/local/bin/loanwire-query"

for u in $units; do
  f=$src/deploy/systemd/$u
  for kv in "Type=notify" "NotifyAccess=main" "Restart=on-failure" "DynamicUser=yes" \
            "ProtectSystem=strict" "NoNewPrivileges=yes" "ProtectHome=yes" "PrivateTmp=yes" \
            "CapabilityBoundingSet=" "SystemCallFilter=@system-service"; do
    check "$u sets $kv" 'grep -qx "$kv" "$f"'
  done
  check "$u reads an EnvironmentFile= under /etc/loanwire" 'grep -q "^EnvironmentFile=/etc/loanwire/" "$f"'
  check "$u runs a program under /usr/local/bin" 'grep -q "^ExecStart=/usr/local/bin/loanwire-" "$f"'
  check "$u says where READY=1 is sent" 'grep -q "READY=1" "$f" && grep -q "sd_notify" "$f"'
done

# The example environment files' options are options the programs take (double
# quotes, which systemd and the shell read alike).
set -a
. "$src/deploy/systemd/exposure.env"
. "$src/deploy/systemd/exposure-1.env"
. "$src/deploy/systemd/query.env"
set +a
# shellcheck disable=SC2086 # the options are a word list, as systemd splits $VAR
"$build/bin/loanwire-exposure" --consumer-id h-1 --status 60 $LOANWIRE_EXPOSURE_OPTS $LOANWIRE_INSTANCE_OPTS --print-script >/dev/null 2>"$tmp/err"
check "exposure.env's LOANWIRE_EXPOSURE_OPTS and exposure-1.env's LOANWIRE_INSTANCE_OPTS parse ($(head -c 200 "$tmp/err"))" '[ $? = 0 ]'
check "the exposure unit passes the instance's options, and exposure-1.env a --metrics-listen" \
  'grep -q "^ExecStart=.*\$LOANWIRE_INSTANCE_OPTS" "$src/deploy/systemd/loanwire-exposure@.service" && case "$LOANWIRE_INSTANCE_OPTS" in *--metrics-listen*) true;; *) false;; esac'
check "query.env's LOANWIRE_QUERY_OPTS are documented options" \
  'for o in $LOANWIRE_QUERY_OPTS; do case $o in --*) "$build/bin/loanwire-query" --help | has -- "$o " || exit 1;; esac; done'

echo "$pass passed, $fail failed"
[ $fail = 0 ]
