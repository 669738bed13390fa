#!/usr/bin/env python3
"""test_kafka_grow.py - partitions added to the events topic mid-feed, on the
3-broker Kafka ./tests/run.sh starts (LOANWIRE_KAFKA_CLUSTER; see
test_kafka_cluster.py, whose helpers this uses), Redis DBs 6 and 9.

Half the feed, `loanwire-topics add-partitions` 3 -> 8, the rest: most
borrowers now have their old events on one partition and their new ones on
another (checked from the topic). Then every borrower must equal the
independent model (consumers/README.md, "Adding partitions"):

  caught up      the procedure consumers/README.md recommends: the first
                 half consumed to lag 0, then the grow, then the rest with
                 two consumers
  one consumer   grown mid-feed: reads the two partitions of a borrower
                 interleaved, so a borrower's events arrive out of order
                 across the switch (a loan's DRAWDOWN before its
                 CREDIT_LINE: the window entry is dated by the CREDIT_LINE)
  two consumers  grown mid-feed, one group: the two partitions of a borrower
                 held by different consumers, both writing the borrower
                 (write.lua's compare refuses the later write, which is
                 retried: no lost update); no alert id twice on the stream
                 or the alerts topic
  retention      one consumer, grown mid-feed, default retention: a loan's
                 first event read more than --retain-ended behind the
                 borrower's newest is refused as stale (it may be a pruned
                 loan's), so such a loan is missing - the one defect left,
                 which no order-free rule can tell from a pruned loan's late
                 event; every borrower without such a dead letter (beyond the
                 ones the caught-up run has too) must still be exact

The mid-feed one- and two-consumer runs use --retain-ended off
--retain-negative off and the model without retention, so that the last
defect cannot hide anything else; `retention` checks it stays the only one.
"""
import collections
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_kafka_cluster as k3  # noqa: E402

e2e, check, TMP = k3.e2e, k3.check, k3.TMP


def wait_partitions(topic, n, timeout=60):
    """Every broker's metadata shows n partitions: add-partitions returns when
    the broker it asked does, and a producer started before the others learn
    it would still place every key on the old partitions."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        counts = []
        for b in k3.CLUSTER.split(","):
            md = subprocess.run(["kcat", "-b", b, "-L", "-t", topic, "-m", "5"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            counts.append(sum(1 for l in md.stdout.splitlines()
                              if l.strip().startswith("partition ")))
        if counts == [n] * len(counts):
            return True
        time.sleep(0.2)
    return check(False, f"brokers still show {counts} partitions of {topic}, want {n}")


def moved(topic, what):
    parts = collections.defaultdict(set)
    for p, e in k3.topic_events(topic):
        parts[e["borrower_id"]].add(p)
    n = sum(1 for s in parts.values() if len(s) > 1)
    print(f"{what}: {n} of {len(parts)} borrowers have events on two partitions")
    check(n > len(parts) // 3, f"{what}: only {n} of {len(parts)} borrowers moved")


RETAIN_OFF = ["--retain-ended", "off", "--retain-negative", "off"]


def stale_loans(dlq):
    """{borrower: {loan ids}} of the events dead-lettered as stale (retention)."""
    p = subprocess.run(["kcat", "-C", "-b", k3.CLUSTER, "-t", dlq, "-e", "-q", "-f", "%k\t%h\n"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=60)
    out = collections.defaultdict(set)
    for line in p.stdout.splitlines():
        bid, _, hdrs = line.partition("\t")
        m = re.search(r"lw-error=stale: an event for loan (\S+),", hdrs)
        if m:
            out[bid].add(m.group(1))
    return out


def wait_log(f, pattern, what, timeout=60):
    return k3.wait_log(f, pattern, timeout) or \
        check(False, f"{what}: no /{pattern}/ in its log after {timeout} s")


def two_consumers(tag, a, b, kept):
    """Both members of the group hold partitions before any event is there
    (stopped with SIGSTOP meanwhile), then the feed is produced and grown
    under them: when they resume, both read the backlog at once, so a
    borrower's old partition and new one are read by the two concurrently.
    (Started after the feed, one member took the whole topic before the
    group gave the other any partition, and nothing was written twice.)"""
    topic = f"lw-k3-grow2-{tag}"
    k3.create(topic, 3)
    r = e2e.Redis(9)
    r.cmd("FLUSHDB")
    group = f"g-k3-grow2-{tag}"
    logs = [open(os.path.join(TMP, f"k3-grow-c{i}-{tag}.log"), "w+") for i in (1, 2)]
    cs = [e2e.spawn(topic, group, 9, topic + ".alerts", ["--batch", "100", *RETAIN_OFF], f)
          for f in logs]
    for i, f in enumerate(logs):
        wait_log(f, r"assigned [1-9]\d* partition", f"consumer {i + 1}")
    for c in cs:
        c.send_signal(signal.SIGSTOP)
    k3.produce_file(topic, a)
    g = k3.topics("add-partitions", "--events-topic", topic, "--partitions", "8")
    check(g.returncode == 0 and "from 3 to 8" in g.stdout, f"add-partitions: {g.stdout}")
    wait_partitions(topic, 8)
    k3.produce_file(topic, b)
    for c in cs:
        c.send_signal(signal.SIGCONT)
    time.sleep(8)
    # one after the other: a member stopped mid-rebalance cannot commit, and
    # its last alerts would be published twice (consumers/README.md)
    for c in cs:
        c.send_signal(signal.SIGTERM)
        check(c.wait(timeout=60) == 0, "a consumer did not stop cleanly")
    err = e2e.exposure(topic, group, 9, topic + ".alerts", RETAIN_OFF, timeout=300)
    retried, consumed = 0, []
    for text in [f.seek(0) or f.read() for f in logs] + [err]:
        m = re.search(r"stopped after .*? consumed (\d+) .*"
                      r"borrowers retried \(changed by another writer\) (\d+)", text)
        consumed.append(int(m.group(1)) if m else None)
        retried += int(m.group(2)) if m else 0
    for f in logs:
        f.close()
        os.unlink(f.name)
    print(f"partitions added mid-feed, two consumers: events consumed {consumed[0]} and "
          f"{consumed[1]} (then {consumed[2]} to catch up); {retried} borrower writes refused "
          "(changed since read) and retried")
    check(all(consumed[:2]), "partitions added mid-feed, two consumers: one consumer read nothing")
    e2e.states_equal(e2e.read_state(r), kept, "partitions added mid-feed, two consumers")
    print(f"partitions added mid-feed, two consumers: {len(kept)} borrowers compared with the model")
    k3.no_dup_alerts(r, topic + ".alerts", "partitions added mid-feed, two consumers")
    r.cmd("FLUSHDB")


def t_grow(tag, events, in_order_stale):
    topic = f"lw-k3-grow-{tag}"
    k3.create(topic, 3)
    half = len(events) // 2
    a, b = os.path.join(TMP, f"k3-grow-a-{tag}.jsonl"), os.path.join(TMP, f"k3-grow-b-{tag}.jsonl")
    k3.write_jsonl(events[:half], a)
    k3.write_jsonl(events[half:], b)
    k3.produce_file(topic, a)
    g = k3.topics("add-partitions", "--events-topic", topic, "--partitions", "8")
    check(g.returncode == 0 and "from 3 to 8" in g.stdout, f"add-partitions: {g.stdout}")
    wait_partitions(topic, 8)
    k3.produce_file(topic, b)
    moved(topic, "grow mid-feed")
    kept = e2e.model(events, None, None)
    # one consumer: the partitions' events interleave in any order
    r6 = e2e.Redis(6)
    r6.cmd("FLUSHDB")
    err = e2e.exposure(topic, f"g-k3-grow1-{tag}", 6, topic + ".alerts1", RETAIN_OFF, timeout=300)
    check(" out-of-order " in err, "one consumer: no out-of-order line in the summary")
    e2e.states_equal(e2e.read_state(r6), kept, "partitions added mid-feed, one consumer")
    print(f"partitions added mid-feed, one consumer: {len(kept)} borrowers compared with the model")
    r6.cmd("FLUSHDB")
    two_consumers(tag, a, b, kept)
    # default retention: the stale refusal is the one order-dependent defect left
    e2e.exposure(topic, f"g-k3-grow3-{tag}", 6, topic + ".alerts3", timeout=300)
    got, want = e2e.read_state(r6), e2e.model(events)
    late = {bid for bid, loans in stale_loans(topic + ".dlq").items()
            if not loans <= in_order_stale.get(bid, set())}
    e2e.states_equal({k: v for k, v in got.items() if k not in late},
                     {k: v for k, v in want.items() if k not in late},
                     "partitions added mid-feed, default retention, but for late stale refusals")
    wrong = sum(1 for k in late if got.get(k) != want.get(k))
    print(f"partitions added mid-feed, default retention: {len(late)} borrowers had an event "
          f"refused as stale that partition order applies, {wrong} of them differ from the "
          f"model (a loan missing); the other {len(want) - len(late)} exact")
    r6.cmd("FLUSHDB")
    for f in (a, b):
        os.unlink(f)


def t_grow_caught_up(tag, events):
    """The documented procedure: the consumers catch up before the grow."""
    topic = f"lw-k3-growc-{tag}"
    k3.create(topic, 3)
    half = len(events) // 2
    a, b = os.path.join(TMP, f"k3-growc-a-{tag}.jsonl"), os.path.join(TMP, f"k3-growc-b-{tag}.jsonl")
    k3.write_jsonl(events[:half], a)
    k3.write_jsonl(events[half:], b)
    r = e2e.Redis(6)
    r.cmd("FLUSHDB")
    group = f"g-k3-growc-{tag}"
    k3.produce_file(topic, a)
    e2e.exposure(topic, group, 6, topic + ".alerts", timeout=300)
    g = k3.topics("add-partitions", "--events-topic", topic, "--partitions", "8")
    check(g.returncode == 0 and "from 3 to 8" in g.stdout, f"add-partitions: {g.stdout}")
    wait_partitions(topic, 8)
    k3.produce_file(topic, b)
    moved(topic, "grow after catching up")
    c1 = e2e.spawn(topic, group, 6, topic + ".alerts", ["--batch", "100"])
    c2 = e2e.spawn(topic, group, 6, topic + ".alerts", ["--batch", "100"])
    time.sleep(6)
    for c in (c1, c2):
        c.send_signal(signal.SIGTERM)
        check(c.wait(timeout=60) == 0, "a consumer did not stop cleanly")
    e2e.exposure(topic, group, 6, topic + ".alerts", timeout=300)
    k3.exact(r, events, "partitions added after the consumers caught up, two consumers")
    for f in (a, b):
        os.unlink(f)
    return stale_loans(topic + ".dlq")


def main():
    k3.require_cluster()
    tag = f"{os.getpid()}-{int(time.time())}"
    feed = os.path.join(TMP, f"k3-grow-feed-{tag}.jsonl")
    events = k3.gen(16, 2000, 30000, feed)
    in_order_stale = t_grow_caught_up(tag, events)
    t_grow(tag, events, in_order_stale)
    for db in (6, 9):
        e2e.Redis(db).cmd("FLUSHDB")
    os.unlink(feed)
    if e2e.FAILED:
        print("FAILED:", len(e2e.FAILED), "checks")
        sys.exit(1)
    print("all add-partitions checks passed")


if __name__ == "__main__":
    main()
