#!/usr/bin/env bash
# tests/fuzz/run.sh [SECONDS] - build the libFuzzer targets with clang in their
# own folder (build-fuzz/ under the repo, or $LW_FUZZ_BUILD_DIR) and run each.
#
# Without SECONDS (CI, tests/run.sh): the decoders (decode, json, rcluster,
# state) 30 s each, the others (redis_url, id, route, tokens, rules, apply,
# state_read) 15 s each. With SECONDS: every target that long (a longer hunt).
#
# Seeds: the decoders' corpus is made here by loanwire-avro and a state
# encoder; the other targets start from the minimised corpus kept in the repo
# (tests/fuzz/corpus/<target>/, with the crashers found so far as regress-*
# inputs), copied to the build folder so a run never writes into the repo.
# A crash leaves its input as build-fuzz/crash-*: add it to the target's
# corpus as regress-<what> once fixed.
# Exits non-zero if a target crashes or finds a disagreement.
set -euo pipefail
secs=${1:-}
case "$secs" in *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2;; esac
old_secs=${secs:-30}
new_secs=${secs:-15}
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${LW_FUZZ_BUILD_DIR:-$src/build-fuzz}
command -v clang >/dev/null ||
    { echo "fuzz: clang not found (Debian package clang; ./deploy/install-deps.sh installs it)" >&2; exit 1; }
rt=$(clang -print-file-name=libclang_rt.fuzzer-x86_64.a 2>/dev/null)
[ -f "$rt" ] || rt=$(clang -print-resource-dir 2>/dev/null)/lib/linux/libclang_rt.fuzzer-x86_64.a
[ -f "$rt" ] || { echo "fuzz: clang's libFuzzer and sanitizer runtimes are missing (Debian package" \
    "libclang-rt-14-dev; ./deploy/install-deps.sh installs it)" >&2; exit 1; }
# Everything with ASan+UBSan; the library also with coverage so libFuzzer can steer.
CC=clang cmake -S "$src" -B "$build" -DLW_FUZZ=ON -DLW_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_FLAGS=-fsanitize=fuzzer-no-link >/dev/null
new_targets="fuzz_redis_url fuzz_id fuzz_route fuzz_tokens fuzz_rules fuzz_snapshot"
cmake --build "$build" -j2 --target fuzz_decode fuzz_json fuzz_rcluster fuzz_state $new_targets \
    loanwire-avro >/dev/null

corpus=$build/fuzz-corpus
mkdir -p "$corpus/decode" "$corpus/json" "$corpus/state" "$corpus/rcluster"
fix=$src/tests/support/fixtures
cp "$fix"/*.avro "$corpus/decode/"
cp "$fix"/*.json "$corpus/json/"
i=0
for t in APPLICATION CREDIT_LINE DRAWDOWN REPAYMENT DELINQUENCY WRITE_OFF CLOSURE CORRECTION; do
    j="{\"event_id\":\"e$i\",\"event_type\":\"$t\",\"platform_id\":\"p\",\"lender_id\":\"l\",\"borrower_id\":\"ABCDEFGHIJKLMNOPQRSTUV\",\"loan_id\":\"L$i\",\"product\":\"OTHER\",\"sequence\":$((i+1)),\"occurred_at\":1700000000000,\"amount_fen\":1$i,\"outstanding_fen\":0,\"credit_limit_fen\":5,\"days_past_due\":$i,\"past_due_fen\":0,\"term_months\":$((i+1))}"
    echo "$j" > "$corpus/json/seed$i.json"
    echo "$j" | "$build/bin/loanwire-avro" encode --no-validate > "$corpus/decode/seed$i.avro"
    echo "$j" | "$build/bin/loanwire-avro" encode --no-validate --schema v1 > "$corpus/decode/seed$i.v1.avro"
    i=$((i+1))
done
# borrower state strings (layout version 5, consumers/README.md; 4, 3 and 2 are
# still read): none, two loans + income + two window entries + two open rules
# (ids 5 and 9 of lw:strings), and the same in the older layouts' mask
python3 - "$corpus/state" <<'PY'
import sys
def uv(x):
    b = bytearray()
    while x >= 0x80:
        b.append(x & 0x7F | 0x80)
        x >>= 7
    return bytes(b + bytes([x]))
t = 1767225600000
def state(loans, win, inc, version=4):
    b = bytes([version]) + uv(4) + uv(7) + uv(t)
    b += uv(2 * 2 + 1) + uv(5) + uv(9) if version == 4 else uv(1 | 4 | 1 << 32)
    b += uv(2 * len(loans) + (1 if inc else 0)) + uv(len(win))
    b += uv(inc) + uv(86400000) if inc else b""
    for pid, lid, loan, sd, nums in loans:
        b += uv(pid) + uv(lid) + bytes([len(loan)]) + loan + uv(sd) + b"".join(uv(x) for x in nums)
    for d, idh, lh in win:
        b += uv(d) + idh.to_bytes(6, "little") + lh.to_bytes(4, "little")
    return b
two = ([(1, 2, b"HB-1", 0 | 1 << 3 | 64 | 3 << 7, [3, 150000, 500000, 3600000]),
        (3, 3, b"WLD-77", 2 | 32, [1, 0, 7, 0])],
       [(1000, 0x123456789ABC, 0xDEADBEEF), (5000, 0x0F0F0F0F0F0F | 1, 7)], 36000000)
open(sys.argv[1] + "/empty", "wb").write(state([], [], None))
open(sys.argv[1] + "/two", "wb").write(state(*two))
open(sys.argv[1] + "/two.v3", "wb").write(state(*two, version=3))
open(sys.argv[1] + "/two.v2", "wb").write(state(*two, version=2))
PY
for t in $new_targets; do
    rm -rf "$corpus/${t#fuzz_}"
    mkdir -p "$corpus/${t#fuzz_}"
    cp "$src/tests/fuzz/corpus/${t#fuzz_}"/* "$corpus/${t#fuzz_}/"
done
# Redis replies the cluster client reads: a CLUSTER SLOTS map, redirects, errors.
printf '*2\r\n*3\r\n:0\r\n:8191\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$1\r\na\r\n*4\r\n:8192\r\n:16383\r\n*2\r\n$0\r\n\r\n:7001\r\n*2\r\n$1\r\n?\r\n:7002\r\n' >"$corpus/rcluster/slots"
printf -- '-MOVED 3999 127.0.0.1:6381\r\n-ASK 12 ::1:7002\r\n-TRYAGAIN x\r\n' >"$corpus/rcluster/redirects"
printf '*3\r\n$3\r\nSET\r\n$6\r\nb:{42}\r\n$1\r\nv\r\n' >"$corpus/rcluster/command"
rc=0
for t in fuzz_decode fuzz_json fuzz_rcluster fuzz_state $new_targets; do
    case " $new_targets " in *" $t "*) s=$new_secs;; *) s=$old_secs;; esac
    echo "fuzz: $t for ${s}s"
    (cd "$build" && "./bin/$t" -max_total_time="$s" -print_final_stats=1 "$corpus/${t#fuzz_}" \
        2>"$build/$t.log") || { echo "fuzz: $t FAILED, see $build/$t.log"; tail -30 "$build/$t.log"; rc=1; }
    grep -E "stat::number_of_executed_units|Done" "$build/$t.log" | tail -2 || true
done

# The state code (issue 21): lw_bstate_apply() with the rules, and reading +
# summing a state as loanwire-query does. Seeds: the minimised corpus kept in
# tests/fuzz/corpus/<target>/ (crashers found are added there as regression
# inputs), copied so that a run does not grow the repository's copy.
cmake --build "$build" -j2 --target fuzz_apply fuzz_state_read >/dev/null
for t in fuzz_apply fuzz_state_read; do
    rm -rf "$corpus/$t" && mkdir -p "$corpus/$t" && cp "$src/tests/fuzz/corpus/$t"/* "$corpus/$t/"
    echo "fuzz: $t for ${new_secs}s"
    (cd "$build" && "./bin/$t" -max_total_time="$new_secs" -print_final_stats=1 "$corpus/$t" \
        2>"$build/$t.log") || { echo "fuzz: $t FAILED, see $build/$t.log"; tail -30 "$build/$t.log"; rc=1; }
    grep -E "stat::number_of_executed_units|Done" "$build/$t.log" | tail -2 || true
done
exit $rc
