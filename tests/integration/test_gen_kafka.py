#!/usr/bin/env python3
"""test_gen_kafka.py - loanwire-gen against the real broker.

Scenarios:
  1. command line: --help names every option; bad values and conflicting
     options exit 2 with a message;
  2. --kafka --events 5000 into a fresh topic: exactly 5000 messages read back
     (kcat), keyed by borrower_id, every borrower on one partition, and they
     decode (loanwire-avro) to exactly the JSON feed of the same seed, in
     per-partition order;
  3. a paced live feed (--rate, no event bound) stopped with SIGINT: exit 0,
     a summary, and what it reports delivered is what the topic holds;
  4. --duration ends a paced feed by itself, everything delivered.

Needs LOANWIRE_BOOTSTRAP (./deploy/stack.sh up), LW_BIN_DIR. Topics are unique
per run and deleted at the end. Speeds are never asserted.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("LW_SOURCE_DIR", "."), "tests", "support"))
from lwtest import (BIN, BOOT, PARTITIONS, check, die, finish,  # noqa: E402
                    require_kafka, run, topics_cmd)


GEN = f"{BIN}/loanwire-gen"

def new_topic(tag, topics):
    t = f"lwtest.gen.{tag}.{os.getpid()}.{int(time.time() * 1000)}"
    r = topics_cmd("create", t)
    if r.returncode != 0:
        die(f"loanwire-topics create {t}: {r.stderr}")
    topics.append(t)
    return t


def read_keys(topic, expect=None):
    """[(partition, key)] of every message, via kcat. A message acknowledged an
    instant ago may not be visible to a fetch yet: while fewer than `expect`
    come back, read again (up to ~10 s); more than `expect` is never waited."""
    for _ in range(20):
        out = read_keys_once(topic)
        if expect is None or len(out) >= expect:
            break
        time.sleep(0.5)
    return out


def read_keys_once(topic):
    out = []
    for p in range(PARTITIONS):
        r = run(["kcat", "-C", "-b", BOOT, "-t", topic, "-p", str(p), "-o", "beginning",
                 "-e", "-q", "-f", "%k\n"])
        if r.returncode != 0:
            die(f"kcat read {topic}/{p}: {r.stderr}")
        out += [(p, k) for k in r.stdout.splitlines() if k]
    return out


def read_events(topic):
    """{partition: [event dict, ...]} decoded with loanwire-avro."""
    out = {}
    for p in range(PARTITIONS):
        raw = subprocess.run(["kcat", "-C", "-b", BOOT, "-t", topic, "-p", str(p), "-o",
                              "beginning", "-e", "-q", "-f", "%R%s"], capture_output=True)
        if raw.returncode != 0:
            die(f"kcat read {topic}/{p}: {raw.stderr.decode()[:300]}")
        dec = subprocess.run([f"{BIN}/loanwire-avro", "decode", "--lines"], input=raw.stdout,
                             capture_output=True)
        if dec.returncode != 0:
            die(f"loanwire-avro decode: {dec.stderr.decode()[:300]}")
        out[p] = [json.loads(x) for x in dec.stdout.decode().splitlines() if x]
    return out


def summary_delivered(stderr):
    m = re.search(r"delivered (\d+), failed (\d+)", stderr)
    return (int(m.group(1)), int(m.group(2))) if m else (None, None)


# ---- scenarios -------------------------------------------------------------------


def test_cli():
    r = run([GEN, "--help"])
    check("--help exits 0", r.returncode == 0, r.stderr)
    for opt in ["--seed", "--borrowers", "--platforms", "--over-borrowers", "--start",
                "--ramp-days", "--id-key", "--events", "--duration", "--rate", "--out",
                "--kafka", "--brokers", "--topic", "--config", "-X"]:
        check(f"--help documents {opt}", opt in r.stdout)
    for args, what in [(["--borrowers", "0"], "--borrowers"),
                       (["--over-borrowers", "101"], "--over-borrowers"),
                       (["--start", "2026-02-30"], "--start"),
                       (["--rate", "abc"], "--rate"),
                       (["--kafka", "--out", "/dev/null"], "--kafka"),
                       (["--topic", "x"], "--kafka"),
                       (["--nonsense"], "unknown option")]:
        r = run([GEN] + args + ["--events", "1"])
        check(f"{' '.join(args)} refused with exit 2", r.returncode == 2 and what in r.stderr,
              f"rc={r.returncode} {r.stderr.strip()[:200]}")


def test_count_and_content(topics):
    t = new_topic("count", topics)
    seed = str(os.getpid())
    args = ["--events", "5000", "--seed", seed, "--borrowers", "2000"]
    r = run([GEN, "--kafka", "--brokers", BOOT, "--topic", t] + args, timeout=300)
    check("gen --kafka --events 5000 exits 0", r.returncode == 0, r.stderr[-500:])
    delivered, nfail = summary_delivered(r.stderr)
    check("summary says 5000 delivered, 0 failed", (delivered, nfail) == (5000, 0), r.stderr)

    keys = read_keys(t, 5000)
    check("kcat reads back exactly 5000 messages", len(keys) == 5000, f"got {len(keys)}")
    parts = {}
    for p, k in keys:
        parts.setdefault(k, set()).add(p)
    check("every key is a 22-character borrower id",
          all(re.fullmatch(r"[A-Za-z0-9_-]{22}", k) for k in parts), "")
    check("every borrower on one partition", all(len(v) == 1 for v in parts.values()), "")

    # The same options without --kafka give the same events, in the same order
    # per partition (per borrower, hence per loan).
    j = run([GEN] + args, timeout=300)
    check("same feed as JSON exits 0", j.returncode == 0, j.stderr[-300:])
    feed = [json.loads(x) for x in j.stdout.splitlines() if x]
    check("JSON feed has 5000 events", len(feed) == 5000, f"got {len(feed)}")
    decoded = read_events(t)
    part_of = {k: next(iter(v)) for k, v in parts.items()}
    expect = {}
    for ev in feed:
        expect.setdefault(part_of.get(ev["borrower_id"], -1), []).append(ev)
    same = all(decoded.get(p, []) == expect.get(p, []) for p in range(PARTITIONS))
    check("topic content equals the JSON feed, per partition in order",
          same and -1 not in expect, "")
    ids = {ev["event_id"] for evs in decoded.values() for ev in evs}
    check("5000 distinct event ids", len(ids) == 5000, f"got {len(ids)}")


def test_sigint(topics):
    t = new_topic("sigint", topics)
    p = subprocess.Popen([GEN, "--kafka", "--brokers", BOOT, "--topic", t, "--events", "0",
                          "--rate", "500", "--seed", "5"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    p.send_signal(signal.SIGINT)
    try:
        out, err = p.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        p.kill()
        die("loanwire-gen did not stop within 90 s of SIGINT")
    check("SIGINT: exit 0", p.returncode == 0, f"rc={p.returncode} {err[-300:]}")
    check("SIGINT: summary printed", "by type:" in err and "stopped by signal" in err, err)
    delivered, nfail = summary_delivered(err)
    check("SIGINT: something was produced, nothing failed",
          delivered is not None and delivered > 0 and nfail == 0, err)
    n = len(read_keys(t, delivered))
    check("SIGINT: topic holds what was reported delivered", n == delivered,
          f"topic {n}, delivered {delivered}")


def test_duration(topics):
    t = new_topic("duration", topics)
    t0 = time.monotonic()
    r = run([GEN, "--kafka", "--brokers", BOOT, "--topic", t, "--duration", "2", "--rate",
             "1000", "--seed", "6"], timeout=120)
    took = time.monotonic() - t0
    check("--duration 2: exit 0", r.returncode == 0, r.stderr[-300:])
    check("--duration 2: stops by itself (within 60 s)", took < 60, f"{took:.1f}s")
    delivered, nfail = summary_delivered(r.stderr)
    n = len(read_keys(t, delivered))
    check("--duration: topic holds what was reported delivered",
          delivered is not None and delivered > 0 and nfail == 0 and n == delivered,
          f"topic {n}, delivered {delivered}, failed {nfail}")


def main():
    if not os.access(GEN, os.X_OK):
        die(f"{GEN} not built (LW_BIN_DIR={BIN})")
    require_kafka()
    topics = []
    try:
        test_cli()
        test_count_and_content(topics)
        test_sigint(topics)
        test_duration(topics)
    finally:
        for t in topics:
            topics_cmd("delete", t)
    finish()


if __name__ == "__main__":
    main()
