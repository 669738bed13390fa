#!/usr/bin/env python3
"""rebalance_pause.py - the pause a running loanwire-exposure sees when a
second member joins its group, under eager and cooperative rebalancing.

For each strategy (eager: -X partition.assignment.strategy=range; cooperative:
loanwire-exposure's default cooperative-sticky), on a fresh 6-partition topic:
consumer 1 starts and takes all 6 partitions; then loanwire-produce --stamp
sends a steady feed (RATE events/s, fed through stdin in 50 ms slices);
consumer 1 runs alone for WARM s; consumer 2 joins; after
STAY s more consumer 1 stops and writes --latency-out. Consumer 1's
event-to-state latency (Redis ack minus the send stamp) is the pause it saw:
with eager rebalancing every partition stops from the revocation until the new
assignment is fetching again, so its maximum is the stop; with cooperative
only the partitions handed over stop, so its maximum stays near the steady
figure. Consumer 1's log lines are timed as they arrive, and the time from
its revocation to its next assignment is printed too (eager: it holds
nothing meanwhile; cooperative: it keeps its other partitions). Prints one line per strategy and writes bench/results/rebalance-pause.json.

  LOANWIRE_BOOTSTRAP, LOANWIRE_REDIS (DB 5 is flushed) name the servers.
  python3 bench/rebalance_pause.py [--rate 2000] [--warm 5] [--stay 12] [--runs 1]
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("LW_BIN_DIR", os.path.join(ROOT, "build", "bin"))
BOOT = os.environ.get("LOANWIRE_BOOTSTRAP", "127.0.0.1:9092")
REDIS = os.environ.get("LOANWIRE_REDIS", "redis://127.0.0.1:6379").rstrip("/")
DB = 5


def sh(args):
    return subprocess.run(args, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def feeder(proc, lines, rate, stop):
    step = max(1, rate // 20)
    i = 0
    t = time.monotonic()
    while not stop.is_set() and i < len(lines):
        proc.stdin.write("".join(lines[i:i + step]))
        proc.stdin.flush()
        i += step
        t += 0.05
        time.sleep(max(0.0, t - time.monotonic()))
    proc.stdin.close()


def stamp_lines(pipe, path):
    """Copies a consumer's stderr to path, each line after its arrival time."""
    t0 = time.monotonic()
    with open(path, "w") as f:
        for line in pipe:
            f.write(f"{time.monotonic() - t0:.3f} {line}")
            f.flush()


def idle_gaps(path):
    """Seconds from each revocation to the next assignment: how long consumer 1
    held nothing (eager) or only what it kept (cooperative)."""
    gaps, since = [], None
    for line in open(path):
        t, _, msg = line.partition(" ")
        if "revoked" in msg:
            since = float(t)
        elif "assigned" in msg and since is not None:
            gaps.append(round(float(t) - since, 3))
            since = None
    return gaps


def consumer(topic, group, strategy, lat, log):
    host = REDIS.split("://", 1)[1].split("/")[0]
    args = [os.path.join(BIN, "loanwire-exposure"), "--brokers", BOOT, "--topic", topic,
            "--group", group, "--alerts-topic", topic + ".alerts", "--dlq-topic", topic + ".dlq",
            "--redis", f"redis://{host}/{DB}", "--status", "1", "--batch", "500"]
    if lat:
        args += ["--latency-out", lat]
    if strategy == "eager":
        args += ["-X", "partition.assignment.strategy=range"]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    th = threading.Thread(target=stamp_lines, args=(p.stderr, log), daemon=True)
    th.start()
    return p, th


def one(strategy, a, lines, tag):
    topic = f"lw-bench-pause-{strategy}-{tag}"
    sh([os.path.join(BIN, "loanwire-topics"), "create", "-b", BOOT, "--events-topic", topic,
        "--alerts-topic", topic + ".alerts", "--dlq-topic", topic + ".dlq", "--partitions", "6"])
    sh(["redis-cli", "-u", f"{REDIS}/{DB}", "FLUSHDB"])
    lat = os.path.join(a.tmp, f"pause-{strategy}-{tag}.json")
    logs = [os.path.join(a.tmp, f"pause-{strategy}-{tag}-{i}.log") for i in (1, 2)]
    prod = subprocess.Popen([os.path.join(BIN, "loanwire-produce"), "-b", BOOT, "-t", topic,
                             "--stamp", "-q", "-r", os.path.join(a.tmp, "pause.rejects"), "-"],
                            stdin=subprocess.PIPE, text=True)
    stop = threading.Event()
    th = threading.Thread(target=feeder, args=(prod, lines, a.rate, stop))
    group = f"g-pause-{strategy}-{tag}"
    c1, t1 = consumer(topic, group, strategy, lat, logs[0])
    # the feed starts once consumer 1 holds its partitions, so the group's
    # first join (group.initial.rebalance.delay.ms) is not counted as a pause
    deadline = time.time() + 60
    while time.time() < deadline and (not os.path.exists(logs[0]) or
                                      "assigned 6" not in open(logs[0]).read()):
        time.sleep(0.05)
    th.start()
    time.sleep(a.warm)
    joined = time.time()
    c2, t2 = consumer(topic, group, strategy, None, logs[1])
    time.sleep(a.stay)
    c1.send_signal(signal.SIGTERM)
    c1.wait(timeout=60)
    c2.send_signal(signal.SIGTERM)
    c2.wait(timeout=60)
    stop.set()
    th.join()
    prod.wait(timeout=60)
    t1.join(10)
    t2.join(10)
    st = json.load(open(lat))["state"]
    gaps = idle_gaps(logs[0])
    print(f"{strategy:12s} consumer 1: {st['count']} events applied, latency p50 "
          f"{st['p50_us'] / 1000:.1f} ms, p99 {st['p99_us'] / 1000:.1f} ms, max "
          f"{st['max_us'] / 1000:.1f} ms; revocation to next assignment {gaps[:1]} s "
          f"(consumer 2 joined at +{a.warm} s)", flush=True)
    return {"strategy": strategy, "events": st["count"], "p50_us": st["p50_us"],
            "p99_us": st["p99_us"], "p999_us": st["p999_us"], "max_us": st["max_us"],
            "revoke_to_assign_s": gaps[:1], "joined_unix": joined}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=int, default=2000, help="events/s sent (default 2000)")
    ap.add_argument("--warm", type=float, default=5, help="s before consumer 2 joins")
    ap.add_argument("--stay", type=float, default=12, help="s after it joins")
    ap.add_argument("--runs", type=int, default=1, help="runs per strategy")
    ap.add_argument("--tmp", default=os.environ.get("LW_TMP_DIR", "/tmp"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results",
                                                  "rebalance-pause.json"))
    a = ap.parse_args()
    n = int(a.rate * (a.warm + a.stay + 5))
    feed = os.path.join(a.tmp, "pause-feed.jsonl")
    sh([os.path.join(BIN, "loanwire-gen"), "--seed", "3", "--borrowers", "20000", "-n", str(n),
        "--out", feed])
    # loanwire-gen dates events from 2026-01-01; the consumer measures send-to-state only
    lines = open(feed).readlines()
    tag = f"{os.getpid()}-{int(time.time())}"
    res = []
    for r in range(a.runs):
        for strategy in ("eager", "cooperative"):
            res.append(one(strategy, a, lines, f"{tag}-{r}"))
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"rate": a.rate, "warm_s": a.warm, "stay_s": a.stay, "bootstrap": BOOT,
                   "runs": res}, f, indent=1)
    print("wrote", a.out)


if __name__ == "__main__":
    sys.exit(main())
