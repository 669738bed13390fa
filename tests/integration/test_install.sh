#!/usr/bin/env bash
# test_install.sh - `cmake --install` into a temporary prefix gives a tree a
# platform can build against: every program (each answering --version with
# the project's version), a man page per program, the shared
# libloanwire-producer exporting its LW_API functions and hiding the rest,
# the headers, a relocatable loanwire-producer.pc, the rules file and every
# schema version. examples/producer.c is then compiled with
# `pkg-config --cflags --libs loanwire-producer` alone (nothing from the
# source or build tree), run against the real broker with a few generated
# events, and the topic must hold exactly those events (read back with kcat
# and loanwire-avro decode --lines).
set -uo pipefail
src=${LW_SOURCE_DIR:?run through ctest}
build=${LW_BUILD_DIR:?run through ctest}
tmp=$(mktemp -d "${LW_TMP_DIR:-/tmp}/install.XXXXXX")
boot=${LOANWIRE_BOOTSTRAP:-127.0.0.1:9092}
topic=lw.test.install.$$
pass=0 fail=0
check() { if eval "$2"; then echo "ok   $1"; pass=$((pass + 1)); else echo "FAIL $1"; fail=$((fail + 1)); fi; }
# grep reading all its input: `cmd | grep -q` can kill cmd with SIGPIPE, which
# pipefail then reports as a failure
has() { grep "$@" >/dev/null; }
cleanup() {
  "$build/bin/loanwire-topics" delete -b "$boot" -t "$topic" --alerts-topic "$topic.a" \
    --dlq-topic "$topic.d" --inquiries-topic "$topic.i" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT

kcat -b "$boot" -L -m 10 >/dev/null 2>&1 ||
  { echo "FAIL: Kafka is not reachable at $boot (LOANWIRE_BOOTSTRAP); start it with ./deploy/stack.sh up"; exit 1; }

version=$(sed -n 's/^project(loanwire VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
check "project version read from CMakeLists.txt ($version)" '[ -n "$version" ]'

P=$tmp/prefix
cmake --install "$build" --prefix "$P" >"$tmp/install.log" 2>&1
rc=$?
check "cmake --install exits 0 (got $rc)" '[ $rc = 0 ]'

programs="loanwire-produce loanwire-gen loanwire-id loanwire-avro loanwire-topics
  loanwire-exposure loanwire-alerts loanwire-query loanwire-exposure-bench"
for prog in $programs; do
  out=$("$P/bin/$prog" --version 2>&1)
  check "$prog installed, --version prints '$prog $version' (got '$out')" '[ "$out" = "$prog $version" ]'
  page=$P/share/man/man1/$prog.1
  check "man page $prog.1 from --help (NAME, and --help documented)" \
    '[ -s "$page" ] && grep -qF "$prog \\- " "$page" && grep -q "help" "$page"'
  check "man page $prog.1 renders with the version" \
    'MANWIDTH=100 man -l "$page" 2>/dev/null | tail -n 1 | has "Loanwire $version"'
done
n_bin=$(ls "$P/bin" | grep -c '^loanwire-')
n_man=$(ls "$P/share/man/man1" | grep -c '^loanwire-.*\.1$')
check "one man page per installed program ($n_man pages, $n_bin programs)" '[ "$n_bin" = "$n_man" ]'

for h in producer codec error event id json validate api version; do
  check "header include/loanwire/$h.h" '[ -f "$P/include/loanwire/$h.h" ]'
done
check "version.h says $version" 'grep -q "define LW_VERSION  *\"$version\"" "$P/include/loanwire/version.h"'
check "rules file share/loanwire/rules.default" 'cmp -s "$P/share/loanwire/rules.default" "$src/consumers/exposure/rules.default"'
for f in index.html app.js app.css favicon.svg; do
  check "dashboard file share/loanwire/web/$f" 'cmp -s "$P/share/loanwire/web/$f" "$src/consumers/query/web/$f"'
done
check "uPlot (npm) installed beside the dashboard, with its licence" \
  '[ -s "$P/share/loanwire/web/vendor/uPlot.iife.min.js" ] && [ -s "$P/share/loanwire/web/vendor/uPlot.min.css" ] && [ -s "$P/share/loanwire/web/vendor/LICENSE" ]'
for s in $(cd "$src/schemas" && find . -name '*.avsc'); do
  check "schema $s installed" 'cmp -s "$P/share/loanwire/schemas/$s" "$src/schemas/$s"'
done

lib=$(ls "$P"/lib*/libloanwire-producer.so 2>/dev/null | head -n1)
check "shared libloanwire-producer.so installed" '[ -n "$lib" ] && [ -L "$lib" ]'
pc=$(ls "$P"/lib*/pkgconfig/loanwire-producer.pc 2>/dev/null | head -n1)
check "loanwire-producer.pc installed" '[ -n "$pc" ]'
if [ -n "$lib" ]; then
  syms=$(nm -D --defined-only "$lib" | awk '{print $3}')
  for s in lw_producer_new lw_producer_send lw_producer_flush lw_event_from_json lw_id_pseudonymise \
           lw_codec_decode_event lw_err2str; do
    check "exports $s" 'printf "%s\n" "$syms" | has -x "$s"'
  done
  # internal helpers stay hidden (visibility hidden by default)
  for s in lw_conf_load_file lw_log lw_avro_tool_main lw_redis_connect; do
    check "hides $s" '! printf "%s\n" "$syms" | has -x "$s"'
  done
  check "exports nothing but lw_* API" '[ -z "$(printf "%s\n" "$syms" | grep -v "^lw_")" ]'
  check "a platform's library needs no Redis client (no libhiredis among its NEEDED)" \
    'readelf -d "$lib" | has "NEEDED.*librdkafka" && ! readelf -d "$lib" | has "NEEDED.*hiredis"'
  check "SONAME carries the major version" \
    'readelf -d "$lib" | has "SONAME.*libloanwire-producer\.so\.${version%%.*}\]"'
fi

export PKG_CONFIG_PATH=$(dirname "${pc:-/nonexistent/x}")
pcv=$(pkg-config --modversion loanwire-producer 2>&1)
check "pkg-config --modversion = $version (got $pcv)" '[ "$pcv" = "$version" ]'
flags=$(pkg-config --cflags --libs loanwire-producer 2>&1)
paths=$(printf '%s\n' $flags | sed -n 's/^-[IL]//p' | grep -v '^/usr/include')
check "pkg-config's -I and -L point into the prefix only ($(printf '%s ' $paths))" \
  '[ -n "$paths" ] && [ -z "$(printf "%s\n" "$paths" | grep -v "^$P/")" ]'

# Build the example as a platform would: a copy outside the tree, pkg-config only.
cp "$src/examples/producer.c" "$tmp/producer.c"
san=()
grep -q '^LW_SANITIZE:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null &&
  san=(-fsanitize=address,undefined -fno-omit-frame-pointer)
# shellcheck disable=SC2086 # pkg-config output is a word list
(cd "$tmp" && cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror "${san[@]}" -o producer producer.c \
  $(pkg-config --cflags --libs loanwire-producer)) >"$tmp/cc.log" 2>&1
rc=$?
check "examples/producer.c builds with pkg-config --cflags --libs loanwire-producer (rc $rc)" '[ $rc = 0 ]'
[ $rc = 0 ] || cat "$tmp/cc.log"
check "the example loads libloanwire-producer from the prefix" \
  'LD_LIBRARY_PATH=$(dirname "$lib") ldd "$tmp/producer" | has "libloanwire-producer.so.* => $P"'

# Run it against the broker: N generated events in, the same N on the topic.
"$build/bin/loanwire-topics" create -b "$boot" -t "$topic" --alerts-topic "$topic.a" \
  --dlq-topic "$topic.d" --inquiries-topic "$topic.i" --partitions 3 >/dev/null 2>&1
check "test topic $topic created" '[ $? = 0 ]'
n=25
"$build/bin/loanwire-gen" --events $n --seed $$ >"$tmp/in.jsonl" 2>/dev/null
LD_LIBRARY_PATH=$(dirname "$lib") timeout 60 "$tmp/producer" "$boot" "$topic" \
  <"$tmp/in.jsonl" >"$tmp/out.txt" 2>"$tmp/err.txt"
rc=$?
check "the example exits 0 (got $rc)" '[ $rc = 0 ]'
[ $rc = 0 ] || cat "$tmp/err.txt"
got=$(grep -c '^offset [0-9]*:[0-9]* ' "$tmp/out.txt")
check "the example reports $n deliveries (got $got)" '[ "$got" = $n ]'
kcat -C -b "$boot" -t "$topic" -e -q -f '%R%s' 2>/dev/null |
  "$build/bin/loanwire-avro" decode --lines >"$tmp/topic.jsonl" 2>"$tmp/decode.err"
check "the topic decodes" '[ $? = 0 ] && [ ! -s "$tmp/decode.err" ]'
check "the topic holds exactly the $n events sent ($(wc -l <"$tmp/topic.jsonl") records)" \
  'diff <(sort "$tmp/in.jsonl") <(sort "$tmp/topic.jsonl") >"$tmp/diff.txt"'
[ -s "$tmp/diff.txt" ] && head -n 10 "$tmp/diff.txt"

echo "$pass passed, $fail failed"
[ $fail = 0 ]
