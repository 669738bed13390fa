#!/usr/bin/env python3
"""test_windows.py - rule windows of 1 hour, 24 hours and 90 days in one pack (issue 20),
each checked at its edge in event time, through Kafka, loanwire-exposure and Redis.

Three stacking rules (stack_1h, stack_24h, stack_90d, 2 distinct lenders each). For each
window W two borrowers get two applications from two lenders: one W - 1 ms apart (in the
window: stack_W fires, and every longer window's rule too), one exactly W apart (out of it:
stack_W stays quiet, the longer ones fire). A 90-day window needs its entries kept 90 days:
the default pack would have pruned the first application after 30.
"""
import base64
import hashlib
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("LW_SOURCE_DIR", "."), "tests", "support"))
from lwtest import (BIN, BOOT, TMP, check, die, finish, require_kafka, run,  # noqa: E402
                    topics_cmd)

REDIS = os.environ.get("LOANWIRE_REDIS", "redis://127.0.0.1:6379")
UNIQ = "%d-%d" % (os.getpid(), int(time.time() * 1000))
HOUR = 3600000
DAY = 24 * HOUR
WINDOWS = (("stack_1h", HOUR), ("stack_24h", DAY), ("stack_90d", 90 * DAY))


def bid_of(tag):
    return base64.urlsafe_b64encode(hashlib.md5((UNIQ + tag).encode()).digest())[:22].decode()


def app(bid, n, lender, at):
    return json.dumps({
        "event_id": "w-%s-%d" % (bid, n), "event_type": "APPLICATION", "platform_id": "P",
        "lender_id": lender, "borrower_id": bid, "loan_id": "A-%d" % n,
        "product": "INSTALLMENT", "sequence": 1, "occurred_at": at, "amount_fen": 0,
        "outstanding_fen": 0, "credit_limit_fen": 0, "days_past_due": 0, "past_due_fen": 0,
        "currency": "CNY", "annual_income_fen": None, "term_months": 12})


def main():
    require_kafka()
    topic = "lwtest.windows." + UNIQ
    r = topics_cmd("create", topic)
    if r.returncode != 0:
        die("loanwire-topics create: " + r.stderr)
    t0 = int(time.time() * 1000) - 120 * DAY
    lines, cases = [], []
    for k, (rule, w) in enumerate(WINDOWS):
        for inside in (True, False):
            bid = bid_of("%s-%s" % (rule, inside))
            lines.append(app(bid, 1, "lender-a", t0))
            lines.append(app(bid, 2, "lender-b", t0 + w - (1 if inside else 0)))
            # fires: window k when inside, and every longer window either way
            want = {WINDOWS[j][0] for j in range(3) if j > k or (j == k and inside)}
            cases.append((rule, inside, bid, want))
    feed = os.path.join(TMP, "windows-%s.jsonl" % UNIQ)
    rules = os.path.join(TMP, "windows-%s.rules" % UNIQ)
    with open(feed, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(rules, "w") as f:
        for rule, w in WINDOWS:
            f.write("%s 1 WARNING kind=stacking min_lenders=2 window=%dms\n" % (rule, w))
    try:
        r = run([os.path.join(BIN, "loanwire-produce"), "-b", BOOT, "-t", topic, "-q", feed],
                timeout=120)
        check("produce: %d applications delivered" % len(lines), r.returncode == 0, r.stderr)
        r = run([os.path.join(BIN, "loanwire-exposure"), "-b", BOOT, "-t", topic,
                 "--alerts-topic", topic + ".alerts", "--dlq-topic", topic + ".dlq",
                 "--inquiries-topic", topic + ".inq", "-g", topic, "--redis", REDIS,
                 "--rules", rules, "--from-beginning", "--until-caught-up", "--status", "0"],
                timeout=300)
        check("loanwire-exposure caught up", r.returncode == 0, r.stderr[-500:])
        for rule, inside, bid, want in cases:
            q = run([os.path.join(BIN, "loanwire-query"), "--redis", REDIS, "--borrower", bid],
                    timeout=30)
            doc = json.loads(q.stdout) if q.returncode == 0 else {}
            got = {a["rule_id"] for a in doc.get("open_alerts", [])}
            check("%s: second application %s the window (%s): open %s" % (
                rule, "1 ms inside" if inside else "exactly at the edge of", bid,
                sorted(got)), got == want, "want %s" % sorted(want))
    finally:
        topics_cmd("delete", topic)
        for p in (feed, rules):
            if os.path.exists(p):
                os.unlink(p)
    finish()


if __name__ == "__main__":
    main()
