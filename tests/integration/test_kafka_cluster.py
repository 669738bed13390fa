#!/usr/bin/env python3
"""test_kafka_cluster.py - Loanwire on a 3-broker Kafka (issue 16), real servers.

The cluster is the one ./tests/run.sh starts once beside its single-broker
stack (./deploy/stack.sh up --kafka-brokers 3, own ports and folder):
LOANWIRE_KAFKA_CLUSTER is its bootstrap list and LOANWIRE_KAFKA_CLUSTER_STACK_DIR
its stack folder (brokers are killed with `stack.sh kill kafka-N` = kill -9 and
brought back with `start`). Redis is the suite's (LOANWIRE_REDIS), DBs 7-8.

  topics      `loanwire-topics create` gives RF 3 on every partition (read back
              with kcat -L, not with our own tool) and min.insync.replicas=2
  leader -9   the leader of partition 0 is killed -9 while loanwire-produce
              sends (fed slowly through stdin), and restarted: every event is
              in the topic exactly once, in feed order per borrower
  broker -9   another broker is killed -9 while loanwire-exposure consumes:
              every borrower equals the independent model
  coop        a second consumer joins and leaves mid-run: both logs show
              incremental (cooperative) revocations, every borrower exact, no
              alert id twice on the alerts topic nor on the lw:alerts stream

Adding partitions is test_kafka_grow.py (these helpers, the same cluster).

A missing cluster or Redis fails the test, naming it; nothing is skipped.
"""
import collections
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

CLUSTER = os.environ.get("LOANWIRE_KAFKA_CLUSTER", "")
STACK_DIR = os.environ.get("LOANWIRE_KAFKA_CLUSTER_STACK_DIR", "")
if CLUSTER:
    os.environ["LOANWIRE_BOOTSTRAP"] = CLUSTER  # the e2e helpers read it at import
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_exposure_e2e as e2e  # noqa: E402

BIN, SRC, TMP = e2e.BIN, e2e.SRC, e2e.TMP
check = e2e.check


def stack(*args):
    env = dict(os.environ, LOANWIRE_STACK_DIR=STACK_DIR)
    env.pop("LOANWIRE_BOOTSTRAP", None)
    return subprocess.run(["bash", os.path.join(SRC, "deploy", "stack.sh"), *args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=300)


def topics(*args):
    return subprocess.run([os.path.join(BIN, "loanwire-topics"), "-b", CLUSTER, *args],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=120)


def create(topic, parts):
    r = topics("create", "--events-topic", topic, "--alerts-topic", topic + ".alerts",
               "--dlq-topic", topic + ".dlq", "--partitions", str(parts))
    check(r.returncode == 0, f"create {topic}: {r.stdout[-500:]}")
    return r.stdout


def kcat_meta(topic):
    return subprocess.run(["kcat", "-b", CLUSTER, "-L", "-t", topic, "-m", "10"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True).stdout


def leader_of(topic, part, timeout=30):
    """The broker id leading the partition; None when none is known within timeout.
    Asked right after the topic was created, the metadata may not list the partition
    or its leader yet (it did not once, in CI), so this asks again until it does."""
    deadline = time.time() + timeout
    while True:
        for line in kcat_meta(topic).splitlines():
            w = line.split()
            if len(w) > 3 and w[0] == "partition" and w[1] == f"{part}," and w[2] == "leader":
                leader = int(w[3].rstrip(","))
                if leader > 0:
                    return leader
        if time.time() >= deadline:
            return None
        time.sleep(0.5)


def wait_isr(topic, want=3, timeout=120):
    """Every partition back to `want` in-sync replicas (a restarted broker caught up)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        isrs = [l for l in kcat_meta(topic).splitlines() if "isrs:" in l]
        if isrs and all(len(l.split("isrs:")[1].strip().split(",")) == want for l in isrs):
            return True
        time.sleep(0.5)
    return False


def gen(seed, borrowers, n, out):
    e2e.run([os.path.join(BIN, "loanwire-gen"), "--seed", str(seed), "--borrowers",
             str(borrowers), "--over-borrowers", "5", "-n", str(n), "--out", out])
    return [json.loads(l) for l in open(out) if l.strip()]


def produce_file(topic, path):
    e2e.run([os.path.join(BIN, "loanwire-produce"), "-b", CLUSTER, "-t", topic, "-q", path])


def write_jsonl(events, path):
    with open(path, "w") as f:
        for e in events:
            f.write(json.dumps(e) + "\n")


def topic_events(topic):
    """(partition, decoded event) of every message, in partition order."""
    import fastavro
    schema = fastavro.parse_schema(json.load(open(os.path.join(SRC, "schemas",
                                                               "LoanEvent.avsc"))))
    p = subprocess.run(["kcat", "-C", "-b", CLUSTER, "-t", topic, "-e", "-q", "-f",
                        "%p %S %s\n"], stdout=subprocess.PIPE, timeout=120)
    out, data, i = [], p.stdout, 0
    while i < len(data):
        sp1 = data.index(b" ", i)
        sp2 = data.index(b" ", sp1 + 1)
        part, n = int(data[i:sp1]), int(data[sp1 + 1:sp2])
        payload = data[sp2 + 1:sp2 + 1 + n]
        i = sp2 + 1 + n + 1
        out.append((part, fastavro.schemaless_reader(io.BytesIO(payload[10:]), schema)))
    return out


def per_borrower(events):
    d = collections.defaultdict(list)
    for e in events:
        d[e["borrower_id"]].append(e["event_id"])
    return d


def exact(r, events, what):
    got = e2e.read_state(r)
    want = e2e.model(events)
    e2e.states_equal(got, want, what)
    print(f"{what}: {len(got)} borrowers compared with the model")


def no_dup_alerts(r, alerts_topic, what):
    ids, _ = e2e.stream_alerts(r)
    check(len(ids) > 0, f"{what}: no alert raised at all")
    check(len(ids) == len(set(ids)), f"{what}: an alert id twice on the lw:alerts stream")
    kids = e2e.kafka_alert_ids(alerts_topic)
    check(len(kids) == len(set(kids)),
          f"{what}: {len(kids) - len(set(kids))} alert ids twice on {alerts_topic}")
    check(set(kids) == set(ids), f"{what}: Kafka alert ids != stream ids")
    print(f"{what}: {len(ids)} alerts, each once on the stream and on the topic")


def t_topics(tag):
    topic = f"lw-k3-topics-{tag}"
    out = create(topic, 6)
    check("replication factor 3, min.insync.replicas=2 (3 brokers)" in out,
          f"create did not say what it chose: {out}")
    md = kcat_meta(topic)
    reps = [l for l in md.splitlines() if "replicas:" in l]
    counts = [len(l.split("replicas:")[1].split("isrs:")[0].strip().rstrip(",").split(","))
              for l in reps]
    check(len(reps) == 6 and counts == [3] * 6, f"not 3 replicas on every partition: {reps}")
    d = topics("describe", "--events-topic", topic, "--alerts-topic", topic + ".alerts",
               "--dlq-topic", topic + ".dlq").stdout
    for t in (topic, topic + ".alerts", topic + ".dlq"):
        check(f"{t} config min.insync.replicas=2" in d, f"{t}: min.insync.replicas not 2: {d}")
    print("topics: RF 3 and min.insync.replicas=2 on all three topics")


def t_leader_kill(tag, events):
    topic = f"lw-k3-prod-{tag}"
    create(topic, 6)
    victim = leader_of(topic, 0)
    check(victim in (1, 2, 3), f"no leader for partition 0: {victim}")
    prod = subprocess.Popen([os.path.join(BIN, "loanwire-produce"), "-b", CLUSTER, "-t", topic,
                             "-r", os.path.join(TMP, f"k3-rejects-{tag}.jsonl"), "-"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    # fed in slices so the kill lands mid-stream: ~4 s of sending
    step = max(1, len(events) // 40)
    killed = False
    for i in range(0, len(events), step):
        prod.stdin.write("".join(json.dumps(e) + "\n" for e in events[i:i + step]))
        prod.stdin.flush()
        time.sleep(0.1)
        if not killed and i >= len(events) // 4:
            r = stack("kill", f"kafka-{victim}")
            check(r.returncode == 0, f"stack.sh kill kafka-{victim}: {r.stdout}")
            killed = True
        if killed and i >= (3 * len(events)) // 4 and victim:
            r = stack("start", f"kafka-{victim}")
            check(r.returncode == 0, f"stack.sh start kafka-{victim}: {r.stdout[-500:]}")
            victim = None
    prod.stdin.close()
    rc = prod.wait(timeout=300)
    err = prod.stderr.read()
    check(rc == 0, f"loanwire-produce exit {rc}: {err[-800:]}")
    if victim:
        stack("start", f"kafka-{victim}")
    check(wait_isr(topic), "replicas did not catch up after the restart")
    got = [e for _, e in topic_events(topic)]
    ids = [e["event_id"] for e in got]
    check(len(ids) == len(events) and len(set(ids)) == len(events),
          f"{len(ids)} messages, {len(set(ids))} distinct, {len(events)} sent")
    check(per_borrower(got) == per_borrower(events), "per-borrower order differs from the feed")
    print(f"leader -9: {len(ids)} events in the topic, each once, in order per borrower")
    return topic


def t_broker_kill(tag, topic, events):
    r = e2e.Redis(7)
    r.cmd("FLUSHDB")
    logf = open(os.path.join(TMP, f"k3-consume-{tag}.log"), "w+")
    p = e2e.spawn(topic, f"g-k3-kill-{tag}", 7, topic + ".alerts",
                  ["--batch", "200", "--until-caught-up"], log=logf)
    deadline = time.time() + 60
    while r.cmd("DBSIZE") < 500 and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    # "another broker": not the coordinator-agnostic choice of partition 0's leader
    victim = [b for b in (1, 2, 3) if b != leader_of(topic, 0)][0]
    k = stack("kill", f"kafka-{victim}")
    check(k.returncode == 0, f"stack.sh kill kafka-{victim}: {k.stdout}")
    check(p.poll() is None, "the consumer finished before the broker was killed (feed too small)")
    rc = p.wait(timeout=300)
    logf.seek(0)
    log = logf.read()
    check(rc == 0, f"loanwire-exposure exit {rc}: {log[-1500:]}")
    s = stack("start", f"kafka-{victim}")
    check(s.returncode == 0, f"stack.sh start kafka-{victim}: {s.stdout[-500:]}")
    exact(r, events, f"broker kafka-{victim} -9 while consuming")
    check(wait_isr(topic), "replicas did not catch up after the restart")


def t_coop(tag, topic, events):
    r = e2e.Redis(8)
    r.cmd("FLUSHDB")
    group, alerts = f"g-k3-coop-{tag}", topic + ".alerts-coop"
    la = open(os.path.join(TMP, f"k3-coop-a-{tag}.log"), "w+")
    lb = open(os.path.join(TMP, f"k3-coop-b-{tag}.log"), "w+")
    a = e2e.spawn(topic, group, 8, alerts, ["--batch", "100"], log=la)
    deadline = time.time() + 60
    while r.cmd("DBSIZE") < 300 and time.time() < deadline:
        time.sleep(0.05)
    b = e2e.spawn(topic, group, 8, alerts, ["--batch", "100"], log=lb)
    # the second phase of a cooperative rebalance (the revoked partitions
    # handed over) waits for a heartbeat: up to heartbeat.interval.ms (3 s)
    check(wait_log(lb, r"assigned [1-9]", 30), "consumer 2 never got a partition")
    time.sleep(1)
    b.send_signal(signal.SIGTERM)
    check(b.wait(timeout=60) == 0, "the second consumer did not stop cleanly")
    # consumer 1 takes them back before it stops (stopping mid-rebalance
    # cannot commit: ILLEGAL_GENERATION, and the next run redoes its events)
    check(wait_log(la, r"assigned [1-9][\s\S]*assigned [1-9]", 30),
          "consumer 1 never took the partitions back")
    a.send_signal(signal.SIGTERM)
    check(a.wait(timeout=60) == 0, "the first consumer did not stop cleanly")
    e2e.exposure(topic, group, 8, alerts, timeout=300)
    la.seek(0)
    lb.seek(0)
    loga, logb = la.read(), lb.read()
    check("(incremental)" in loga, "consumer 1 never gave partitions up incrementally")
    check("assigned" in logb and "(incremental)" in logb,
          "consumer 2 was not assigned partitions, or did not leave incrementally")
    exact(r, events, "cooperative join and leave")
    no_dup_alerts(r, alerts, "cooperative join and leave")


def wait_log(f, pattern, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        f.seek(0)
        if re.search(pattern, f.read()):
            return True
        time.sleep(0.2)
    return False


def require_cluster():
    if not CLUSTER or not STACK_DIR:
        print("FAIL: LOANWIRE_KAFKA_CLUSTER / LOANWIRE_KAFKA_CLUSTER_STACK_DIR unset: this test "
              "needs the 3-broker Kafka that ./tests/run.sh starts (./deploy/stack.sh up "
              "--kafka-brokers 3)")
        sys.exit(1)
    k = subprocess.run(["kcat", "-b", CLUSTER, "-L", "-m", "10"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if k.returncode != 0 or " 3 brokers:" not in k.stdout:
        e2e.fail_server("a 3-broker Kafka", CLUSTER, (k.stderr or k.stdout).strip()[-200:])
    e2e.Redis(0)  # fails loudly, naming the server


def main():
    require_cluster()
    tag = f"{os.getpid()}-{int(time.time())}"
    feed = os.path.join(TMP, f"k3-feed-{tag}.jsonl")
    events = gen(16, 2000, 30000, feed)
    t_topics(tag)
    topic = t_leader_kill(tag, events)
    t_broker_kill(tag, topic, events)
    t_coop(tag, topic, events)
    for db in (7, 8):
        e2e.Redis(db).cmd("FLUSHDB")
    os.unlink(feed)
    if e2e.FAILED:
        print("FAILED:", len(e2e.FAILED), "checks")
        sys.exit(1)
    print("all 3-broker checks passed")


if __name__ == "__main__":
    random.seed(16)
    main()
