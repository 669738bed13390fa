"""Issue 21 item 13: one mis-dated event, and the repair of a borrower it poisoned.

A generated feed for 30 borrowers goes to a 1-partition topic, with one APPLICATION dated
2096 (occurred_at 4000000000000, a platform's unit bug) for one borrower B in the middle,
produced as raw bytes (loanwire-produce refuses it now). Three checks:

1. the consumer as it is now dead-letters the 2096 event ("ahead of the clock") and every
   borrower matches the independent model of the good events (test_exposure_e2e.model);
2. a consumer without the bound (--max-future 0, as loanwire-exposure was before) applies
   it: B's time is 2096 and B's windows no longer match the model (poisoned);
3. deploy/repair-borrower.sh B (DEL, read B's events back from the topic, produce them
   again: the 2096 line is rejected with its reason) and the consumer with its default
   bound rebuild B: every borrower matches the model again.

Uses Redis DB 8 of $LOANWIRE_REDIS (flushed) and topics lw-test-repair-*.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_exposure_e2e as e2e  # noqa: E402

BIN, SRC, TMP, BOOT = e2e.BIN, e2e.SRC, e2e.TMP, e2e.BOOT
DB = 8
FUTURE = 4000000000000


def main():
    tag = "%d-%d" % (os.getpid(), int(time.time()))
    topic = f"lw-test-repair-{tag}"
    e2e.create_topic(topic, 1)
    e2e.create_topic(topic + ".dlq", 1)
    feed = os.path.join(TMP, f"repair-feed-{tag}.jsonl")
    e2e.run([os.path.join(BIN, "loanwire-gen"), "--seed", "11", "--borrowers", "30",
             "--over-borrowers", "10", "-n", "400", "--out", feed])
    good = [json.loads(l) for l in open(feed) if l.strip()]
    want = e2e.model(good)
    # B: a borrower with applications, so its windows show the damage
    apps = {}
    for e in good:
        if e["event_type"] == "APPLICATION":
            apps[e["borrower_id"]] = apps.get(e["borrower_id"], 0) + 1
    bid = max(apps, key=apps.get)
    first = next(e for e in good if e["borrower_id"] == bid and e["event_type"] == "APPLICATION")
    bad = dict(first)
    bad["event_id"] = first["event_id"] + "-2096"
    bad["loan_id"] = first["loan_id"] + "-2096"
    bad["occurred_at"] = FUTURE
    half = len(good) // 2
    with open(feed + ".a", "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in good[:half])
    with open(feed + ".b", "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in good[half:])
    e2e.run([os.path.join(BIN, "loanwire-produce"), "-b", BOOT, "-t", topic, "-q", feed + ".a"])
    raw = os.path.join(TMP, f"repair-2096-{tag}.bin")
    open(raw, "wb").write(e2e.avro_encode_unchecked(bad))
    e2e.run(["kcat", "-P", "-b", BOOT, "-t", topic, "-k", bid, raw])
    e2e.run([os.path.join(BIN, "loanwire-produce"), "-b", BOOT, "-t", topic, "-q", feed + ".b"])
    # the producer refuses such a line itself, with its reason
    rej = os.path.join(TMP, f"repair-rej-{tag}.jsonl")
    with open(feed + ".bad", "w") as f:
        f.write(json.dumps(bad) + "\n")
    e2e.run([os.path.join(BIN, "loanwire-produce"), "-n", "-q", "-r", rej, feed + ".bad"])
    e2e.check("ahead of the clock" in open(rej).read(),
              "loanwire-produce did not reject the line dated 2096 for its time")

    r = e2e.Redis(DB)
    # 1. today's consumer: a dead letter, the state as the model says
    r.cmd("FLUSHDB")
    err = e2e.exposure(topic, f"g-repair-now-{tag}", DB, topic + ".alerts")
    e2e.check("ahead of the clock" in err, "the 2096 event was not dead-lettered for its time")
    e2e.states_equal(e2e.read_state(r), want, "bounded consumer")
    print("ok   bounded consumer: 2096 event dead-lettered, states match the model")

    # 2. without the bound (the consumer before this fix): B is poisoned
    r.cmd("FLUSHDB")
    e2e.exposure(topic, f"g-repair-old-{tag}", DB, topic + ".alerts", ["--max-future", "0"])
    got = e2e.read_state(r)
    e2e.check(got[bid]["t"] == FUTURE, f"B's time is {got[bid]['t']}, want {FUTURE} (poisoned)")
    e2e.check(got[bid] != want[bid], "B unexpectedly matches the model while poisoned")
    others = {k: v for k, v in got.items() if k != bid}
    e2e.states_equal(others, {k: v for k, v in want.items() if k != bid}, "others unharmed")
    print("ok   unbounded consumer: borrower", bid, "poisoned (as_of 2096)")

    # 3. the repair, then the same group goes on with the bound back
    rejects = os.path.join(TMP, f"repair-{tag}.rejects")
    host, port = e2e.redis_hostport()
    e2e.run([os.path.join(SRC, "deploy", "repair-borrower.sh"), "-b", BOOT, "-t", topic,
             "--redis", f"redis://{host}:{port}/{DB}", "--bin", BIN, "--rejects", rejects,
             "--settle", "0", "--wait", "0", bid])
    e2e.check("ahead of the clock" in open(rejects).read(),
              "repair: the 2096 event was not rejected again")
    e2e.exposure(topic, f"g-repair-old-{tag}", DB, topic + ".alerts")
    e2e.states_equal(e2e.read_state(r), want, "after the repair")
    print("ok   repaired: borrower", bid, "matches the model again")
    r.cmd("FLUSHDB")
    for f in (feed, feed + ".a", feed + ".b", feed + ".bad", raw, rej, rejects):
        if os.path.exists(f):
            os.unlink(f)
    if e2e.FAILED:
        print("FAILED:", len(e2e.FAILED), "checks")
        sys.exit(1)


if __name__ == "__main__":
    main()
