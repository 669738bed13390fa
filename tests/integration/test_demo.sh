#!/usr/bin/env bash
# test_demo.sh - ./deploy/demo.sh runs to completion against the running
# stack and its report shows alerts of every default rule, every produced
# event consumed and accounted for (applied, duplicate or unchanged, out of
# order, dead letter), and a flagged borrower's exposure from the API.
set -uo pipefail
src=${LW_SOURCE_DIR:?run through ctest}
out=${LW_TMP_DIR:-/tmp}/demo.out
pass=0 fail=0
check() { if eval "$2"; then echo "ok   $1"; pass=$((pass + 1)); else echo "FAIL $1"; fail=$((fail + 1)); fi; }

redis-cli -u "${LOANWIRE_REDIS:-redis://127.0.0.1:6379}" ping >/dev/null 2>&1 ||
  { echo "FAIL: Redis is not reachable at ${LOANWIRE_REDIS:-redis://127.0.0.1:6379}; start it with ./deploy/stack.sh up"; exit 1; }

LOANWIRE_BUILD_DIR=${LW_BUILD_DIR:-$src/build} LOANWIRE_QUERY_PORT=${LW_DEMO_PORT:-18080} \
  timeout 600 "$src/deploy/demo.sh" --seconds 20 --rate 1000 >"$out" 2>&1
rc=$?
check "demo exits 0 (got $rc)" '[ $rc = 0 ]'
report=$(sed -n '/==> report/,$p' "$out")
for rule in income_cap multi_lender stacking borrow_while_delinquent; do
  n=$(printf '%s\n' "$report" | awk -v r="$rule" '$1 == r { print $2 }')
  check "report shows $rule alerts (${n:-none})" '[ "${n:-0}" -gt 0 ]'
done
field() { printf '%s\n' "$report" | awk -v k="$1" 'index($0, k) { print $NF; exit }'; }
produced=$(field "events produced")
consumed=$(field "events consumed")
applied=$(field "applied")
dups=$(field "duplicates or no change")
ooo=$(field "out of order")
dead=$(field "dead letters")
check "events consumed ($consumed) = produced ($produced)" '[ -n "$produced" ] && [ "$consumed" = "$produced" ]'
check "applied + duplicates + out of order + dead letters ($applied + $dups + $ooo + $dead) = consumed" \
  '[ -n "$applied" ] && [ "$applied" -gt 0 ] && [ $((applied + dups + ooo + dead)) = "$consumed" ]'
check "report shows a flagged borrower's exposure JSON" 'printf "%s" "$report" | grep -q "\"total_outstanding_fen\""'
check "live alerts were shown on the terminal stream" 'grep -qE "(WARNING|CRITICAL) +[a-z_]+ " "$out"'
[ $fail = 0 ] || tail -n 60 "$out"
echo "$pass passed, $fail failed"
[ $fail = 0 ]
