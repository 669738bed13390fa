#!/usr/bin/env bash
# test_cli.sh - the command-line contract every program keeps, without
# servers: `--version` and `-V` print "PROGRAM VERSION" with the version of
# project(loanwire VERSION ...) in CMakeLists.txt; every program that talks to
# Kafka documents and accepts kcat's -b/--brokers, -t/--topic, -F/--config and
# -X (a missing -F file is an error naming the file, which proves the option
# reached the configuration); loanwire-produce's id key is -I and kcat's -k
# is refused; every program's --help states its exit status.
set -uo pipefail
src=${LW_SOURCE_DIR:?run through ctest}
bin=${LW_BIN_DIR:?run through ctest}
tmp=$(mktemp -d "${LW_TMP_DIR:-/tmp}/cli.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
check() { if eval "$2"; then echo "ok   $1"; pass=$((pass + 1)); else echo "FAIL $1"; fail=$((fail + 1)); fi; }
# grep reading all its input: `cmd | grep -q` can kill cmd with SIGPIPE, which
# pipefail then reports as a failure
has() { grep "$@" >/dev/null; }
# an unreachable broker: nothing may need it before the -F file is read
dead=127.0.0.1:1

version=$(sed -n 's/^project(loanwire VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
check "project version read from CMakeLists.txt ($version)" '[ -n "$version" ]'

programs="loanwire-produce loanwire-gen loanwire-id loanwire-avro loanwire-topics
  loanwire-exposure loanwire-alerts loanwire-query loanwire-exposure-bench"
for p in $programs; do
  for opt in --version -V; do
    out=$("$bin/$p" $opt 2>&1)
    rc=$?
    check "$p $opt prints '$p $version' and exits 0 (got '$out', rc $rc)" \
      '[ "$out" = "$p $version" ] && [ $rc = 0 ]'
  done
  check "$p --help states the exit status" '"$bin/$p" --help | has -i "exit status"'
  check "$p --help documents --version" '"$bin/$p" --help | has -- "-V, --version"'
done

for p in loanwire-produce loanwire-gen loanwire-topics loanwire-exposure loanwire-alerts; do
  help=$("$bin/$p" --help)
  for opt in "-b, --brokers" "-t, --topic" "-F, --config" "-X key=value"; do
    check "$p --help documents '$opt'" 'printf "%s" "$help" | has -i -- "$opt"'
  done
done

# -F and --config reach the configuration: a missing file is named in the error.
run_f() { # name expected-rc command...
  local name=$1 want=$2
  shift 2
  "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
  local rc=$?
  check "$name: exit $want naming the missing file (rc $rc: $(head -c 120 "$tmp/err"))" \
    '[ $rc = $want ] && grep -q "$tmp/missing.properties" "$tmp/err"'
}
for opt in -F --config; do
  run_f "loanwire-produce $opt" 2 "$bin/loanwire-produce" -b $dead -t t $opt "$tmp/missing.properties" /dev/null
  run_f "loanwire-gen $opt" 2 "$bin/loanwire-gen" --kafka -b $dead -t t $opt "$tmp/missing.properties" --events 1
  run_f "loanwire-topics $opt" 2 "$bin/loanwire-topics" -b $dead -t t $opt "$tmp/missing.properties" list
  run_f "loanwire-alerts $opt" 1 "$bin/loanwire-alerts" -b $dead -t t $opt "$tmp/missing.properties"
done
# loanwire-exposure connects to Redis before it reads the Kafka settings, so
# here only the parse is checked (test_systemd.sh runs it with -F against the stack)
"$bin/loanwire-exposure" -b $dead -g grp -t t -F "$tmp/missing.properties" -X client.id=x \
  --print-script >"$tmp/out" 2>"$tmp/err"
check "loanwire-exposure accepts -b -g -t -F -X" '[ $? = 0 ] && grep -q "local" "$tmp/out"'
"$bin/loanwire-exposure" --brokers $dead --group grp --topic t --config "$tmp/missing.properties" \
  --print-script >/dev/null 2>&1
check "loanwire-exposure accepts --brokers --group --topic --config" '[ $? = 0 ]'
check "loanwire-exposure --help lists exit codes 0, 1 and 2" \
  '"$bin/loanwire-exposure" --help | tr "\n" " " | has "Exit status: 0 .*; 1 .*; 2 usage error"'
# a number out of range is a usage error that gives the range; --batch takes up
# to LW_BATCH_MAX (1,000,000) and no less than 1
for b in 0 1000001; do
  "$bin/loanwire-exposure" --batch $b --print-script >/dev/null 2>"$tmp/err"
  rc=$?
  check "loanwire-exposure --batch $b: exit 2 naming the range (rc $rc)" \
    '[ $rc = 2 ] && has -F "for --batch (1..1000000)" "$tmp/err"'
done
"$bin/loanwire-exposure" -b $dead --batch 1000000 --print-script >/dev/null 2>&1
check "loanwire-exposure --batch 1000000 is accepted" '[ $? = 0 ]'

# loanwire-produce: the id key is -I (--id-key unchanged); -k is refused
printf '%064x\n' 7 >"$tmp/id.key"
chmod 600 "$tmp/id.key"
printf '%s\n' '{"event_id":"e1","event_type":"APPLICATION","platform_id":"P","lender_id":"L","national_id":"110101199003074477","loan_id":"l1","product":"INSTALLMENT","sequence":1,"occurred_at":1767225600000,"amount_fen":100,"outstanding_fen":0,"credit_limit_fen":0,"days_past_due":0,"past_due_fen":0,"currency":"CNY"}' >"$tmp/raw.jsonl"
for opt in -I --id-key; do
  "$bin/loanwire-produce" --dry-run --strict $opt "$tmp/id.key" -r "$tmp/rej" "$tmp/raw.jsonl" >"$tmp/out" 2>"$tmp/err"
  rc=$?
  check "loanwire-produce $opt pseudonymises a national_id (dry run, rc $rc)" \
    '[ $rc = 0 ] && grep -q "rejected 0" "$tmp/err"'
done
"$bin/loanwire-produce" --dry-run --strict -r "$tmp/rej" "$tmp/raw.jsonl" >/dev/null 2>&1
check "without the key that line is refused (the check above can fail)" '[ $? = 3 ]'
"$bin/loanwire-produce" --dry-run -k "$tmp/id.key" "$tmp/raw.jsonl" >"$tmp/out" 2>"$tmp/err"
check "loanwire-produce -k is refused as usage (exit 2)" '[ $? = 2 ] && grep -q "invalid option" "$tmp/err"'

# loanwire-avro decode knows CreditInquiry records (the frame built here by hand:
# C3 01, the schema's fingerprint in wire order, then the Avro datum)
fp=$("$bin/loanwire-avro" fingerprint "$src/schemas/CreditInquiry.avsc")
python3 - "$fp" >"$tmp/inq.bin" <<'PY'
import sys
def zz(n):
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)
def s(t):
    return zz(len(t)) + t.encode()
rec = (b"\xc3\x01" + bytes.fromhex(sys.argv[1]) + s("0123456789abcdef0123456789abcdef")
       + s("abcdefghijklmnopqrstu_") + s("bank-042") + zz(3) + zz(1767225600123))
sys.stdout.buffer.write(rec)
PY
"$bin/loanwire-avro" decode <"$tmp/inq.bin" >"$tmp/out" 2>"$tmp/err"
check "loanwire-avro decode prints a CreditInquiry ($(head -c 300 "$tmp/out" "$tmp/err"))" \
  '[ $? = 0 ] && python3 -c "import json,sys; j=json.load(open(sys.argv[1])); sys.exit(not (j[\"institution_id\"] == \"bank-042\" and j[\"purpose\"] == \"POST_LOAN_MANAGEMENT\" and j[\"inquired_at\"] == 1767225600123 and j[\"borrower_id\"] == \"abcdefghijklmnopqrstu_\"))" "$tmp/out"'

# The scripts an operator runs keep the same contract: --help prints usage and
# exits 0 without doing anything (tests/run.sh once took --help as a run and
# wiped build/), an unknown argument exits 2.
for sc in tests/run.sh deploy/install-deps.sh .ci/run deploy/stack.sh deploy/demo.sh \
  bench/run.sh tests/fresh-machine.sh; do
  out=$(timeout 20 "$src/$sc" --help 2>&1)
  rc=$?
  check "$sc --help prints usage and exits 0 (rc $rc)" '[ $rc = 0 ] && printf "%s" "$out" | has -i "usage\|$(basename "$sc")"'
done
for sc in tests/run.sh deploy/install-deps.sh .ci/run; do
  timeout 20 "$src/$sc" --no-such-option >/dev/null 2>"$tmp/err"
  rc=$?
  check "$sc --no-such-option exits 2 naming it (rc $rc)" '[ $rc = 2 ] && grep -q -- "--no-such-option" "$tmp/err"'
done

echo "$pass passed, $fail failed"
[ $fail = 0 ]
