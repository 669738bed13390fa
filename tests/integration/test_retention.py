#!/usr/bin/env python3
"""test_retention.py - retention of ended loans through the real broker and Redis
(issue 16 item 4; consumers/README.md, "Retention of ended loans").

A loanwire-gen feed spanning well over a year of event time (from 2024-06-01, so no event
is ahead of the clock) for 80 borrowers, plus, for
borrowers whose closed loan has left the state, a redelivered copy of that loan's opening
event (same event id and sequence, an old balance) at the end of the topic. Each pass has
its own consumer group and Redis DB:

  default   loanwire-exposure with its defaults (90d / 5y): every borrower's state equals the
            independent model (test_exposure_e2e.model with retention), the late events are
            dead-lettered as stale and open nothing; some closed loans did leave (the test
            would prove nothing otherwise), and every borrower's totals, active loans,
            lenders and past due equal those of the model without retention
  replay    FLUSHDB and a new group from the beginning: the same state strings, field for
            field (the fence stamp aside), and the same alert hashes
  off       --retain-ended off --retain-negative off: the model without retention (today's
            behaviour), the late events then duplicates or out of order
  short     --retain-ended 30d --retain-negative 400d: the model with those periods

Uses Redis DBs 6 and 7 of $LOANWIRE_REDIS (flushed) and topics lw-test-retain-*.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_exposure_e2e as e2e  # noqa: E402

BIN, TMP, BOOT = e2e.BIN, e2e.TMP, e2e.BOOT
DAY = 86400000


def totals(st):
    return {b: (s["total"], s["active"], s["lenders"], s["platforms"], s["past_due"])
            for b, s in st.items()}


def main():
    e2e.Redis(0)  # fails loudly, naming the server
    tag = "%d-%d" % (os.getpid(), int(time.time()))
    topic = f"lw-test-retain-{tag}"
    e2e.create_topics(topic, 2)
    feed = os.path.join(TMP, f"retain-feed-{tag}.jsonl")
    e2e.run([os.path.join(BIN, "loanwire-gen"), "--seed", "5", "--borrowers", "80",
             "--over-borrowers", "5", "-n", "5000", "--start", "2024-06-01", "--out", feed])
    events = [json.loads(l) for l in open(feed) if l.strip()]
    span = (max(e["occurred_at"] for e in events) - min(e["occurred_at"] for e in events)) / DAY
    e2e.check(span > 365, f"the feed spans {span:.0f} days, want > 365")
    kept = e2e.model(events, None, None)
    want = e2e.model(events)
    # late copies of the opening events of closed loans the model pruned
    first, late = {}, []
    for e in events:
        if e["event_type"] != "APPLICATION":
            first.setdefault((e["borrower_id"], e["platform_id"] + ":" + e["loan_id"]), e)
    for (bid, lk), e in first.items():
        if lk in kept[bid]["loans"] and lk not in want[bid]["loans"] and \
                kept[bid]["loans"][lk][6] == 4:
            late.append(e)
    late = late[:10]
    e2e.check(len(late) >= 3, f"only {len(late)} pruned closed loans to redeliver")
    allev = events + late
    with open(feed, "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in allev)
    e2e.run([os.path.join(BIN, "loanwire-produce"), "-b", BOOT, "-t", topic, "-q", feed])
    kept = e2e.model(allev, None, None)
    want = e2e.model(allev)
    pruned = sum(len(kept[b]["loans"]) - len(want[b]["loans"]) for b in want)
    e2e.check(pruned > 0, "no loan left the model's state: the feed proves nothing")
    e2e.check(totals(kept) == totals(want), "the model's totals differ with retention")
    print(f"feed: {len(allev)} events over {span:.0f} days, {len(want)} borrowers; "
          f"{pruned} ended loans leave; {len(late)} late events of pruned loans")

    r = e2e.Redis(6)
    # default periods
    r.cmd("FLUSHDB")
    err = e2e.exposure(topic, f"g-retain-def-{tag}", 6, topic + ".alerts")
    got = e2e.read_state(r)
    e2e.states_equal(got, want, "defaults vs the model with retention")
    e2e.check(totals(got) == totals(kept), "totals differ from the model without retention")
    for e in late:
        e2e.check(e["platform_id"] + ":" + e["loan_id"] not in got[e["borrower_id"]]["loans"],
                  f"late event reopened loan {e['loan_id']}")
    nstale = err.count("stale: an event for loan")
    e2e.check(nstale >= len(late), f"{nstale} stale dead letters logged, want >= {len(late)}")
    print(f"ok   defaults: states equal the model, {nstale} stale events dead-lettered, "
          "totals as without retention")
    snap = e2e.snapshot(r)

    # replay from the beginning: the same state
    r.cmd("FLUSHDB")
    e2e.exposure(topic, f"g-retain-replay-{tag}", 6, topic + ".alerts")
    e2e.check(e2e.snapshot(r) == snap, "a replay from the beginning gave another state")
    print("ok   replay from the beginning: the same state strings and alert hashes")

    # retention off: today's state
    r7 = e2e.Redis(7)
    r7.cmd("FLUSHDB")
    e2e.exposure(topic, f"g-retain-off-{tag}", 7, topic + ".alerts",
                 ["--retain-ended", "off", "--retain-negative", "off"])
    e2e.states_equal(e2e.read_state(r7), kept, "retention off vs the model without it")
    print("ok   --retain-ended off: every ended loan kept")

    # shorter periods
    r7.cmd("FLUSHDB")
    e2e.exposure(topic, f"g-retain-short-{tag}", 7, topic + ".alerts",
                 ["--retain-ended", "30d", "--retain-negative", "400d"])
    short = e2e.model(allev, 30 * DAY, 400 * DAY)
    e2e.states_equal(e2e.read_state(r7), short, "30d / 400d vs the model")
    print("ok   --retain-ended 30d --retain-negative 400d: as the model")
    r.cmd("FLUSHDB")
    r7.cmd("FLUSHDB")
    os.unlink(feed)
    if e2e.FAILED:
        print("FAILED:", len(e2e.FAILED), "checks")
        sys.exit(1)
    print("all retention checks passed")


if __name__ == "__main__":
    main()
