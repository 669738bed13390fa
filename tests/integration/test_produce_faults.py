#!/usr/bin/env python3
"""test_produce_faults.py - loanwire-produce while the broker goes away.

  1. broker stopped while producing and started again within
     message.timeout.ms: every event delivered exactly once (no duplicate, none
     missing), each borrower's events in input order, exit 0;
  2. broker stopped and never back within message.timeout.ms=10000: every
     event not acknowledged is reported (failed == sent - delivered, each one in
     the rejects file with its reason, as JSON), exit status 1.

Stops and starts the broker with $LW_SOURCE_DIR/deploy/stack.sh kafka-stop /
kafka-start (the stack named by LOANWIRE_STACK_DIR and the port variables);
the broker is started again at the end even when a check fails.
"""
import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.environ.get("LW_SOURCE_DIR", "."), "tests", "support"))
from lwtest import (BIN, BOOT, PARTITIONS, SRC, TMP, check, die, finish,  # noqa: E402
                    kafka_answers, produce_summary, run, topics_cmd)


STACK = os.path.join(SRC, "deploy", "stack.sh")


def kafka_stop():
    r = run(["bash", STACK, "kafka-stop"])
    if r.returncode != 0:
        die(f"stack.sh kafka-stop failed: {r.stderr}")
    if kafka_answers():
        die(f"Kafka at {BOOT} still answers after stack.sh kafka-stop: this test needs the "
            f"stack's own broker (LOANWIRE_STACK_DIR / LOANWIRE_KAFKA_PORT), not an external one")


def kafka_start():
    r = run(["bash", STACK, "kafka-start"], timeout=300)
    if r.returncode != 0 or not kafka_answers():
        die(f"stack.sh kafka-start failed: {r.stderr[-500:]}")


def new_topic(tag):
    t = f"lwtest.faults.{tag}.{os.getpid()}.{int(time.time() * 1000)}"
    r = topics_cmd("create", t)
    if r.returncode != 0:
        die(f"loanwire-topics create {t}: {r.stderr}")
    return t


def readback(topic):
    out = []
    for p in range(PARTITIONS):
        raw = subprocess.run(["kcat", "-C", "-b", BOOT, "-t", topic, "-p", str(p), "-o",
                              "beginning", "-e", "-q", "-f", "%R%s"], capture_output=True)
        if raw.returncode != 0:
            die(f"kcat read {topic}/{p}: {raw.stderr.decode()[:300]}")
        dec = subprocess.run([f"{BIN}/loanwire-avro", "decode", "--lines"], input=raw.stdout,
                             capture_output=True)
        if dec.returncode != 0:
            die(f"loanwire-avro decode: {dec.stderr.decode()[:300]}")
        out += [(p, json.loads(x)) for x in dec.stdout.decode().splitlines() if x]
    return out


def borrower(i):
    return base64.urlsafe_b64encode(hashlib.sha256(f"f{i}".encode()).digest()[:16]) \
        .rstrip(b"=").decode()


def make_events(n, n_borrowers):
    seqs = {}
    out = []
    for i in range(n):
        b = (i * 7919) % n_borrowers
        seqs[b] = seqs.get(b, 0) + 1
        out.append({"event_id": f"f-{i}", "event_type": "DRAWDOWN", "platform_id": "jd",
                    "lender_id": "bank", "borrower_id": borrower(b), "loan_id": f"l{b}",
                    "product": "REVOLVING", "sequence": seqs[b],
                    "occurred_at": 1735689600000 + i, "amount_fen": 100 + i,
                    "outstanding_fen": 1000 + i, "credit_limit_fen": 5000000,
                    "days_past_due": 0, "past_due_fen": 0, "currency": "CNY"})
    return out


def produce_paced(topic, events, seconds, extra, rejects, on_progress):
    """Feeds events to loanwire-produce's stdin evenly over `seconds`; calls
    on_progress(fraction) as it goes. Returns (exit status, stderr)."""
    p = subprocess.Popen([f"{BIN}/loanwire-produce", "-b", BOOT, "-t", topic, "--rejects",
                          rejects] + extra + ["-"], stdin=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    err = []
    t = threading.Thread(target=lambda: err.append(p.stderr.read()))
    t.start()
    start = time.monotonic()
    chunk = max(1, len(events) // 100)
    for k in range(0, len(events), chunk):
        p.stdin.write("".join(json.dumps(e) + "\n" for e in events[k:k + chunk]))
        p.stdin.flush()
        on_progress(k / len(events))
        delay = start + seconds * (k + chunk) / len(events) - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    p.stdin.close()
    try:
        p.wait(timeout=400)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    t.join()
    return p.returncode, "".join(err)


def order_ok(events, got):
    want = {}
    for e in events:
        want.setdefault(e["borrower_id"], []).append(e["event_id"])
    have = {}
    for _, ev in got:  # readback is partition by partition, offset order
        have.setdefault(ev["borrower_id"], []).append(ev["event_id"])
    return all(have.get(b, []) == ids for b, ids in want.items() if ids and b in have)


def test_restart(work, topics):
    topic = new_topic("restart")
    topics.append(topic)
    events = make_events(20000, 500)
    state = {"stopped": False}

    def on_progress(frac):
        if frac >= 0.3 and not state["stopped"]:
            state["stopped"] = True
            kafka_stop()
            time.sleep(3)
            # start again in the background while the producer keeps reading
            state["starter"] = threading.Thread(target=kafka_start)
            state["starter"].start()

    rc, err = produce_paced(topic, events, 6, ["-X", "message.timeout.ms=180000"],
                            os.path.join(work, "restart.rejects"), on_progress)
    if "starter" in state:
        state["starter"].join()
    check("restart: broker was stopped mid-run", state["stopped"])
    check("restart: exit 0", rc == 0, f"rc={rc} {err[-600:]}")
    s = produce_summary(err)
    print(f"     restart summary: {s}")
    check("restart: all delivered, none failed",
          s is not None and s["sent"] == len(events) and s["delivered"] == len(events)
          and s["failed"] == 0, str(s))
    got = readback(topic)
    ids = [ev["event_id"] for _, ev in got]
    check("restart: every event in the topic exactly once",
          len(ids) == len(events) and set(ids) == {e["event_id"] for e in events},
          f"{len(ids)} read, {len(set(ids))} distinct, {len(events)} sent")
    check("restart: each borrower's events in input order", order_ok(events, got))


def test_never_back(work, topics):
    topic = new_topic("gone")
    topics.append(topic)
    events = make_events(6000, 300)
    rejects = os.path.join(work, "gone.rejects")
    state = {"stopped": False}

    def on_progress(frac):
        if frac >= 0.4 and not state["stopped"]:
            state["stopped"] = True
            kafka_stop()

    try:
        rc, err = produce_paced(topic, events, 3, ["-X", "message.timeout.ms=10000"], rejects,
                                on_progress)
    finally:
        kafka_start()
    s = produce_summary(err)
    print(f"     gone summary: {s}")
    check("gone: exit status 1", rc == 1, f"rc={rc} {err[-600:]}")
    check("gone: summary present", s is not None, err[-300:])
    if not s:
        return
    check("gone: some delivered before the stop, some failed after",
          s["delivered"] > 0 and s["failed"] > 0, str(s))
    check("gone: failed == sent - delivered", s["failed"] == s["sent"] - s["delivered"]
          and s["sent"] == len(events), str(s))
    lines = open(rejects).read().splitlines() if os.path.exists(rejects) else []
    comments = [x for x in lines if x.startswith("# ")]
    bodies = [json.loads(x) for x in lines if x and not x.startswith("#")]
    check("gone: every failed event in the rejects file, with its reason",
          len(bodies) == s["failed"] and len(comments) == s["failed"]
          and all("delivery: not delivered:" in c for c in comments), f"{len(bodies)} entries")
    src = {e["event_id"]: e for e in events}
    check("gone: rejected events are the input events, intact",
          all(src.get(b["event_id"]) == {k: v for k, v in b.items()
                                         if v is not None or k in src[b["event_id"]]}
              for b in bodies))
    got = readback(topic)
    got_ids = {ev["event_id"] for _, ev in got}
    failed_ids = {b["event_id"] for b in bodies}
    check("gone: every event is in the topic or in the rejects file",
          got_ids | failed_ids == set(src), f"{len(set(src) - got_ids - failed_ids)} lost")
    check("gone: at least every acknowledged event is in the topic",
          len(got_ids - failed_ids) >= s["delivered"] and len(got) == len(got_ids),
          f"{len(got_ids)} in topic, {s['delivered']} delivered")


def main():
    if not kafka_answers():
        die(f"Kafka is not reachable at {BOOT} (LOANWIRE_BOOTSTRAP); "
            f"start it with ./deploy/stack.sh up")
    work = tempfile.mkdtemp(prefix="test_produce_faults.", dir=TMP)
    topics = []
    try:
        test_restart(work, topics)
        test_never_back(work, topics)
    finally:
        if not kafka_answers():
            run(["bash", STACK, "kafka-start"], timeout=300)
        for t in topics:
            topics_cmd("delete", t)
    finish()


if __name__ == "__main__":
    main()
