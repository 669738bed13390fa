#!/usr/bin/env python3
"""test_exposure_fencing.py - zombie fencing never stalls an honest consumer.

Against the real broker and Redis (consumers/README.md, "Zombie fencing"):

  two topics   topic A and topic B share every borrower (B's feed is another
               seed's, its borrower ids mapped onto A's), same partition count,
               so a borrower sits on partition k of both. A is consumed across
               two epochs, then B from epoch 1 into the same Redis DB: both
               catch up and every borrower equals the model of A + B. (Before
               fence stamps named the topic, B was fenced on every partition
               and stalled forever.)
  lost keys    the lw:epoch:* keys are deleted (as a restore from a backup
               would lose them) and more of A is produced: the next run starts
               at epoch 1 below the stamps, finds its epoch keys still its own,
               raises them above the stamps, reads again, and catches up
               exactly. It never hangs.
  zombie       a newer owner is simulated (the epoch keys INCRed under a
               running consumer, whose group never rebalances): its writes are
               fenced, and with --stall-timeout 3 it exits non-zero with an
               error naming the partition instead of holding it forever; the
               state keeps nothing it wrote after the fence.

Needs what test_exposure_e2e.py needs (its helpers are used); Redis DBs 10-11.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_exposure_e2e as e2e  # noqa: E402

BIN, BOOT, TMP = e2e.BIN, e2e.BOOT, e2e.TMP
check = e2e.check


def gen(seed, borrowers, n, out):
    e2e.run([os.path.join(BIN, "loanwire-gen"), "--seed", str(seed), "--borrowers",
             str(borrowers), "--over-borrowers", "5", "-n", str(n), "--out", out])
    return [json.loads(l) for l in open(out) if l.strip()]


def produce(topic, events, path):
    with open(path, "w") as f:
        for e in events:
            f.write(json.dumps(e) + "\n")
    e2e.run([os.path.join(BIN, "loanwire-produce"), "-b", BOOT, "-t", topic, "-q", path])


def epoch_keys(r, topic):
    return {k.decode(): int(r.cmd("GET", k)) for k in r.cmd("KEYS", f"lw:epoch:{topic}:*")}


def main():
    e2e.Redis(0)  # fails loudly, naming the server
    k = subprocess.run(["kcat", "-b", BOOT, "-L", "-m", "10"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    if k.returncode != 0:
        e2e.fail_server("Kafka", BOOT, k.stderr.strip()[-200:])

    tag = f"{os.getpid()}-{int(time.time())}"
    ta, tb = f"lw-test-fence-a-{tag}", f"lw-test-fence-b-{tag}"
    e2e.create_topics(ta, 3)
    e2e.create_topics(tb, 3)
    fa = gen(7, 1500, 24000, os.path.join(TMP, f"fence-a-{tag}.jsonl"))
    fb = gen(9, 1500, 12000, os.path.join(TMP, f"fence-b-{tag}.jsonl"))
    # B's borrowers become A's: same ids, so the same partition number in both topics
    amap = sorted({e["borrower_id"] for e in fa})
    bids = sorted({e["borrower_id"] for e in fb})
    check(len(amap) >= len(bids), "feed A has fewer borrowers than feed B")
    to_a = dict(zip(bids, amap))
    for e in fb:
        e["borrower_id"] = to_a[e["borrower_id"]]
    a1, a1b, a2 = fa[:10000], fa[10000:16000], fa[16000:]

    r = e2e.Redis(11)
    r.cmd("FLUSHDB")
    db = 11

    # ---- A across two epochs (the second writes too, so stamps carry epoch 2) ----
    produce(ta, a1, os.path.join(TMP, f"fence-a1-{tag}.jsonl"))
    e2e.exposure(ta, f"g-a-{tag}", db, ta + ".alerts")
    produce(ta, a1b, os.path.join(TMP, f"fence-a1b-{tag}.jsonl"))
    e2e.exposure(ta, f"g-a-{tag}", db, ta + ".alerts")
    ek = epoch_keys(r, ta)
    check(len(ek) == 3 and all(v == 2 for v in ek.values()), f"A's epochs after two runs: {ek}")
    e2e.states_equal(e2e.read_state(r), e2e.model(a1 + a1b), "A over two epochs vs the model")

    # ---- the epoch keys lost (a restore), more of A ------------------------------
    for key in ek:
        r.cmd("DEL", key)
    produce(ta, a2, os.path.join(TMP, f"fence-a2-{tag}.jsonl"))
    t0 = time.time()
    log = e2e.exposure(ta, f"g-a-{tag}", db, ta + ".alerts", ["--stall-timeout", "60"],
                       timeout=120)
    print(f"lost epoch keys: caught up in {time.time() - t0:.1f} s")
    check("raised to" in log, "the run below the stamps did not raise its epoch keys")
    ek = epoch_keys(r, ta)
    check(all(v >= 3 for v in ek.values()), f"A's epoch keys not raised above the stamps: {ek}")
    e2e.states_equal(e2e.read_state(r), e2e.model(fa), "A after lost epoch keys vs the model")

    # ---- B from epoch 1 into the same Redis ---------------------------------------
    produce(tb, fb, os.path.join(TMP, f"fence-b-{tag}.jsonl"))
    t0 = time.time()
    log = e2e.exposure(tb, f"g-b-{tag}", db, tb + ".alerts", ["--stall-timeout", "60"],
                       timeout=120)
    print(f"second topic: caught up in {time.time() - t0:.1f} s")
    check(" fenced (" not in log, "topic B was fenced by topic A's stamps")
    check(all(v == 1 for v in epoch_keys(r, tb).values()), "B's epoch keys are not 1")
    e2e.states_equal(e2e.read_state(r), e2e.model(fa + fb), "A + B vs the model of both feeds")

    # ---- a true zombie: fenced, and it stops rather than stall ----------------------
    r10 = e2e.Redis(10)
    r10.cmd("FLUSHDB")
    tz = f"lw-test-fence-z-{tag}"
    e2e.create_topics(tz, 3)
    produce(tz, a1[:4000], os.path.join(TMP, f"fence-z1-{tag}.jsonl"))
    logf = open(os.path.join(TMP, f"fence-zombie-{tag}.log"), "w+")
    p = e2e.spawn(tz, f"g-z-{tag}", 10, tz + ".alerts", ["--stall-timeout", "3"], log=logf)
    deadline = time.time() + 60
    while len(epoch_keys(r10, tz)) < 3 or r10.cmd("DBSIZE") < 500:
        check(time.time() < deadline, "the zombie-to-be never applied its first events")
        if time.time() > deadline:
            break
        time.sleep(0.1)
    time.sleep(1)
    before = e2e.snapshot(r10)
    for key in epoch_keys(r10, tz):
        r10.cmd("INCR", key)  # a newer owner, as far as Redis can tell
    produce(tz, a1[4000:8000], os.path.join(TMP, f"fence-z2-{tag}.jsonl"))
    # while it waits for a rebalance that never comes, its metrics say so
    seen_fenced, rc, deadline = 0, None, time.time() + 60
    while rc is None and time.time() < deadline:
        for key in r10.cmd("KEYS", f"lw:metrics:*:{p.pid}"):
            v = r10.cmd("HGET", key, "partitions_fenced")
            seen_fenced = max(seen_fenced, int(v or 0))
        rc = p.poll()
        time.sleep(0.2)
    if rc is None:
        p.kill()
    check(seen_fenced >= 1, "the metrics never showed a fenced partition (partitions_fenced)")
    logf.seek(0)
    zlog = logf.read()
    check(rc is not None and rc != 0, f"the fenced consumer did not stop with an error (rc {rc})")
    check("fenced for 3 s but still assigned" in zlog, "no error naming the stalled partition")
    check("owns it now" in zlog, "the consumer did not tell a newer owner from a lost key")
    check(e2e.snapshot(r10) == before, "the fenced consumer changed borrowers after the fence")

    for d in (10, 11):
        e2e.Redis(d).cmd("FLUSHDB")
    if e2e.FAILED:
        print("FAILED:", len(e2e.FAILED), "checks")
        sys.exit(1)
    print("all fencing checks passed")


if __name__ == "__main__":
    main()
