#!/usr/bin/env bash
# deploy/repair-borrower.sh [options] BORROWER_ID - rebuild one borrower's
# exposure from the loan-events topic, without the events the pipeline now
# refuses.
#
# What it mends: a borrower "poisoned" by an event dated far ahead (a
# platform's clock or unit bug, seconds for milliseconds) that was applied
# before loanwire-exposure had its --max-future bound. Windows and rules run
# on event time relative to the borrower's latest event, so after such an
# event every real application looked 70 years old: counted as "duplicate or
# no change", no stacking alert, `as_of` in the future. Nothing the consumer
# applies later moves the time back; the state must be rebuilt.
#
# How, in this order (so that no event is lost while it runs):
#   1. DEL b:{ID} a:{ID} in Redis: the state and the alert hash; events the
#      consumer applies from now on start from an empty state. Done twice,
#      --settle SECS apart (default 2): a batch the consumer had read before
#      the first DEL may write the old state back once;
#   2. read every event of the borrower from the topic (kcat, all partitions or
#      --partition P; the borrower's events are in one) and decode them
#      (loanwire-avro decode --lines) to JSON Lines;
#   3. produce them again (loanwire-produce): the mis-dated ones are rejected
#      now, with their reason, into the rejects file; the consumer applies the
#      rest to the empty state. Events applied twice (those that arrived
#      during steps 1-2) are duplicates by the sequence rule and the windows'
#      ids, and the order does not matter (consumers/README.md).
# Then it waits (up to --wait SECS) for the consumer to write the borrower
# again, and says so. Check the result with loanwire-query (`as_of`).
#
# Side effects, by design: the borrower's alerts are raised again when their
# trigger events are applied again, with the same alert_id (deterministic), so
# subscribers drop them as repeats; other consumer groups of the topic see the
# events twice (duplicates for them). Events past the topic's retention cannot
# be read back: rebuild from your archive then.
#
# Options:
#   -b, --brokers LIST   Kafka (default $LOANWIRE_BOOTSTRAP or 127.0.0.1:9092)
#   -t, --topic NAME     loan events (default loanwire.loan-events)
#   -p, --partition P    read only this partition (default: all)
#   --redis URL          Redis (default $LOANWIRE_REDIS or redis://127.0.0.1:6379);
#                        on Redis Cluster any node's URL (redis-cli -c follows)
#   --bin DIR            loanwire-avro and loanwire-produce (default: build/bin
#                        beside this script when built, else $PATH)
#   --rejects FILE       where the rejected events go (default ./repair-ID.rejects)
#   --settle SECS        pause between the two DELs (default 2)
#   --wait SECS          wait this long for the state to come back (default 60; 0: don't)
#   --dry-run            print the borrower's events as JSON Lines, change nothing
# Exit status: 0 repaired (or dry run), 1 failed, 2 usage.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
brokers=${LOANWIRE_BOOTSTRAP:-127.0.0.1:9092}
topic=loanwire.loan-events
redis=${LOANWIRE_REDIS:-redis://127.0.0.1:6379}
bin=
part=
rejects=
wait_s=60
settle=2
dry=0
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e 's/^# \{0,1\}//' -e '/^set -euo/d'; }
while [ $# -gt 0 ]; do
    case "$1" in
    -b | --brokers) brokers=$2; shift 2 ;;
    -t | --topic) topic=$2; shift 2 ;;
    -p | --partition) part=$2; shift 2 ;;
    --redis) redis=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --rejects) rejects=$2; shift 2 ;;
    --wait) wait_s=$2; shift 2 ;;
    --settle) settle=$2; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "repair-borrower: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
    esac
done
[ $# -eq 1 ] || { echo "usage: $0 [options] BORROWER_ID (see --help)" >&2; exit 2; }
bid=$1
[[ "$bid" =~ ^[A-Za-z0-9_-]{22}$ ]] ||
    { echo "repair-borrower: '$bid' is not a borrower id (22 base64url characters)" >&2; exit 2; }
[[ "$wait_s" =~ ^[0-9]+$ ]] || { echo "repair-borrower: bad --wait '$wait_s'" >&2; exit 2; }
[[ "$settle" =~ ^[0-9]+$ ]] || { echo "repair-borrower: bad --settle '$settle'" >&2; exit 2; }
if [ -z "$bin" ]; then
    if [ -x "$here/../build/bin/loanwire-produce" ]; then bin=$here/../build/bin; else bin=; fi
fi
avro=${bin:+$bin/}loanwire-avro
produce=${bin:+$bin/}loanwire-produce
for tool in kcat redis-cli "$avro" "$produce"; do
    command -v "$tool" >/dev/null || { echo "repair-borrower: $tool not found" >&2; exit 1; }
done
rejects=${rejects:-repair-$bid.rejects}
rcli=(redis-cli -c -u "$redis")
events=$(mktemp)
trap 'rm -f "$events"' EXIT

dump() {
    kcat -C -b "$brokers" -t "$topic" ${part:+-p "$part"} -o beginning -e -q -f '%R%s' |
        "$avro" decode --lines | grep -F "\"borrower_id\":\"$bid\"" || true
}

if [ $dry = 1 ]; then
    dump
    exit 0
fi
before=$("${rcli[@]}" --no-auth-warning EXISTS "b:{$bid}")
"${rcli[@]}" --no-auth-warning DEL "b:{$bid}" "a:{$bid}" >/dev/null
sleep "$settle"
"${rcli[@]}" --no-auth-warning DEL "b:{$bid}" "a:{$bid}" >/dev/null
dump >"$events"
n=$(wc -l <"$events")
echo "repair-borrower: $bid: state deleted (it existed: $before); $n events read back from $topic"
[ "$n" -gt 0 ] || { echo "repair-borrower: no events of $bid in $topic: nothing to rebuild" >&2; exit 1; }
rc=0
"$produce" -b "$brokers" -t "$topic" -r "$rejects" "$events" || rc=$?
if [ -s "$rejects" ]; then
    echo "repair-borrower: rejected again (not applied), see $rejects:"
    grep '^#' "$rejects" | sed 's/^/  /'
fi
[ $rc = 0 ] || { echo "repair-borrower: loanwire-produce failed ($rc)" >&2; exit 1; }
[ "$wait_s" = 0 ] && exit 0
# the state is back once the consumer applied the events again
for ((i = 0; i < wait_s * 2; i++)); do
    if [ "$("${rcli[@]}" --no-auth-warning EXISTS "b:{$bid}")" = 1 ]; then
        echo "repair-borrower: $bid is back in Redis: the consumer is applying its events"
        exit 0
    fi
    sleep 0.5
done
echo "repair-borrower: $bid not rebuilt after ${wait_s}s: is loanwire-exposure running?" >&2
exit 1
