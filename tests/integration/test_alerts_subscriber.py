#!/usr/bin/env python3
"""test_alerts_subscriber.py - loanwire-alerts against the real Kafka and Redis.

Alerts are made here (known content), written to the Redis stream in the
contract format (fields alert_id, borrower_id, rule_id, severity,
platform_id, lender_id, json) and to a Kafka topic of this run as
single-object Avro (loanwire-avro encode --schema alert, produced with kcat,
key = borrower_id). Then, for each source:
  - two runs of one group (--count N, then the rest) print every alert once:
    union = all, intersection = empty, order kept per key/stream;
  - a third run prints nothing and exits 0 (caught up);
  - --rule X prints all of X and only X; --severity / --platform / --lender;
  - Kafka: a redelivered alert (same alert_id twice on the topic) prints once,
    also when --count ends the first run right on its first copy;
    a record that is not an alert is skipped without stopping the run;
  - Redis: entries a crashed reader left pending are printed by the next run;
    --follow prints new entries and on SIGTERM acknowledges them, exits 0.
Uses Redis DB 9 (flushed) and topics/groups unique to the run.
"""
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time

BIN = os.environ.get("LW_BIN_DIR", "build/bin")
TMP = os.environ.get("LW_TMP_DIR", "/tmp")
REDIS = os.environ.get("LOANWIRE_REDIS", "redis://127.0.0.1:6379")
BOOT = os.environ.get("LOANWIRE_BOOTSTRAP", "127.0.0.1:9092")
DB = 9
UNIQ = "%d-%d" % (os.getpid(), int(time.time()))
failures = []


def fail_server(name, where, why):
    print("FAIL: %s is not reachable at %s (%s).\n"
          "      Start the stack with ./deploy/stack.sh up (or run ./tests/run.sh),\n"
          "      or point LOANWIRE_BOOTSTRAP / LOANWIRE_REDIS at running servers."
          % (name, where, why), file=sys.stderr)
    sys.exit(1)


def redis_hostport():
    u = REDIS[len("redis://"):] if REDIS.startswith("redis://") else REDIS
    u = u.split("@")[-1].split("/")[0]
    host, _, port = u.rpartition(":")
    return (host or "127.0.0.1"), int(port or 6379)


RHOST, RPORT = redis_hostport()
RURL = "redis://%s:%d/%d" % (RHOST, RPORT, DB)


def rcli(*args, check=True):
    p = subprocess.run(["redis-cli", "-h", RHOST, "-p", str(RPORT), "-n", str(DB)] + list(args),
                       capture_output=True, text=True, timeout=30)
    if check and p.returncode != 0:
        raise RuntimeError("redis-cli %s: %s" % (args, p.stderr))
    return p.stdout


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def require_servers():
    try:
        socket.create_connection((RHOST, RPORT), timeout=3).close()
    except OSError as e:
        fail_server("Redis", REDIS, str(e))
    if rcli("PING", check=False).strip() != "PONG":
        fail_server("Redis", REDIS, "no PONG")
    p = subprocess.run(["kcat", "-b", BOOT, "-L", "-m", "10"], capture_output=True, text=True,
                       timeout=30)
    if p.returncode != 0:
        fail_server("Kafka", BOOT, p.stderr.strip()[:200])


RULES = ["balance_cap", "stacking_7d", "delinquent_borrowing"]
SEVS = ["INFO", "WARNING", "CRITICAL"]
PLATS = ["ALIPAY", "WEBANK", "JD"]
LENDERS = ["BANK-A", "BANK-B"]
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def make_alerts(n, seed, tag):
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        bid = "".join(rnd.choice(B64) for _ in range(22))
        rule = RULES[i % len(RULES)]
        out.append({
            "alert_id": "%s-%04d" % (tag, i),
            "borrower_id": bid,
            "rule_id": rule,
            "rule_version": 1,
            "severity": SEVS[rnd.randrange(3)],
            "reason": "test alert %d for %s" % (i, rule),
            "total_outstanding_fen": rnd.randrange(0, 10 ** 9),
            "active_lenders": rnd.randrange(1, 9),
            "active_loans": rnd.randrange(1, 20),
            "window_count": rnd.randrange(0, 9),
            "window_ms": 604800000,
            "annual_income_fen": rnd.choice([None, 12000000]),
            "limit": 30000000,
            "trigger_event_id": "ev-%s-%d" % (tag, i),
            "trigger_platform_id": PLATS[rnd.randrange(3)],
            "trigger_lender_id": LENDERS[rnd.randrange(2)],
            "raised_at": 1767225600000 + i * 1000,
        })
    return out


def xadd(a):
    rcli("XADD", "lw:alerts", "*", "alert_id", a["alert_id"], "borrower_id", a["borrower_id"],
         "rule_id", a["rule_id"], "severity", a["severity"], "platform_id",
         a["trigger_platform_id"], "lender_id", a["trigger_lender_id"], "json",
         json.dumps(a, separators=(",", ":")))


def run_alerts(args, timeout=120):
    p = subprocess.run([os.path.join(BIN, "loanwire-alerts")] + args, capture_output=True,
                       text=True, timeout=timeout)
    ids = []
    for line in p.stdout.splitlines():
        try:
            ids.append(json.loads(line)["alert_id"])
        except (ValueError, KeyError):
            check(False, "output line is an alert as JSON: %r" % line[:120])
    return p.returncode, ids, p.stderr


def two_runs(src_args, all_ids, label, n_first):
    rc1, a, e1 = run_alerts(src_args + ["--from-beginning", "--count", str(n_first)])
    check(rc1 == 0, "%s: first run exit 0 (%s)" % (label, e1.strip()[-300:]))
    check(len(a) == n_first, "%s: first run printed --count %d (got %d)" % (label, n_first, len(a)))
    rc2, b, e2 = run_alerts(src_args)
    check(rc2 == 0, "%s: second run exit 0 (%s)" % (label, e2.strip()[-300:]))
    check(set(a) & set(b) == set(), "%s: no alert printed by both runs" % label)
    check(sorted(a + b) == sorted(all_ids),
          "%s: both runs together print every alert exactly once (%d+%d of %d)"
          % (label, len(a), len(b), len(all_ids)))
    rc3, c, _ = run_alerts(src_args)
    check(rc3 == 0 and c == [], "%s: a third run is caught up and prints nothing" % label)
    return a + b


def filters(src_args, alerts, label):
    by = {a["alert_id"]: a for a in alerts}
    cases = [
        (["--rule", "stacking_7d"], lambda a: a["rule_id"] == "stacking_7d"),
        (["--rule", "balance_cap,delinquent_borrowing"],
         lambda a: a["rule_id"] in ("balance_cap", "delinquent_borrowing")),
        (["--severity", "WARNING"], lambda a: a["severity"] in ("WARNING", "CRITICAL")),
        (["--severity", "=WARNING"], lambda a: a["severity"] == "WARNING"),
        (["--platform", "JD", "--lender", "BANK-A"],
         lambda a: a["trigger_platform_id"] == "JD" and a["trigger_lender_id"] == "BANK-A"),
        (["--borrower", alerts[0]["borrower_id"]],
         lambda a: a["borrower_id"] == alerts[0]["borrower_id"]),
    ]
    for i, (fargs, pred) in enumerate(cases):
        want = sorted(a["alert_id"] for a in alerts if pred(a))
        rc, got, err = run_alerts(src_args(i) + ["--from-beginning"] + fargs)
        check(rc == 0 and sorted(got) == want and all(pred(by[g]) for g in got),
              "%s: %s prints exactly the %d matching alerts (got %d)"
              % (label, " ".join(fargs), len(want), len(got)))


def test_redis():
    rcli("FLUSHDB")
    alerts = make_alerts(30, 1, "r" + UNIQ)
    for a in alerts:
        xadd(a)
    ids = [a["alert_id"] for a in alerts]
    src = ["--source", "redis", "--redis", RURL, "--json"]
    got = two_runs(src + ["--group", "g-main"], ids, "redis", 12)
    check(got == ids, "redis: printed in stream order")
    filters(lambda i: src + ["--group", "g-filter-%d" % i], alerts, "redis")

    # A reader that crashed after XREADGROUP, before XACK: the next run of
    # that consumer prints those entries first, then the rest.
    rcli("XGROUP", "CREATE", "lw:alerts", "g-crash", "0")
    rcli("XREADGROUP", "GROUP", "g-crash", "loanwire-alerts", "COUNT", "5", "STREAMS",
         "lw:alerts", ">")
    rc, got, err = run_alerts(src + ["--group", "g-crash"])
    check(rc == 0 and got == ids, "redis: pending entries of a crashed run are printed (%d)"
          % len(got))
    pend = rcli("XPENDING", "lw:alerts", "g-crash").split()
    check(pend and pend[0] == "0", "redis: nothing left pending after the run")

    # --follow: new entries appear live; SIGTERM acknowledges and exits 0.
    rc, got, _ = run_alerts(src + ["--group", "g-follow"])  # creates the group at the end
    check(rc == 0 and got == [], "redis: a new group without --from-beginning starts at the end")
    live = make_alerts(5, 2, "live" + UNIQ)
    p = subprocess.Popen([os.path.join(BIN, "loanwire-alerts")] + src +
                         ["--group", "g-follow", "--follow"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    for a in live:
        xadd(a)
    seen = []
    deadline = time.time() + 20
    while len(seen) < 5 and time.time() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        seen.append(json.loads(line)["alert_id"])
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=20)
    check(p.returncode == 0, "redis: --follow exits 0 on SIGTERM (rc %s)" % p.returncode)
    check(seen == [a["alert_id"] for a in live], "redis: --follow printed the 5 live alerts")
    pend = rcli("XPENDING", "lw:alerts", "g-follow").split()
    check(pend and pend[0] == "0", "redis: --follow acknowledged what it printed")


def kafka_produce(topic, alerts, tmpdir, dup_every=0):
    """Encodes each alert and produces it keyed by borrower; every dup_every-th
    alert is produced twice (a redelivery)."""
    n = 0
    for i, a in enumerate(alerts):
        enc = subprocess.run([os.path.join(BIN, "loanwire-avro"), "encode", "--schema", "alert"],
                             input=json.dumps(a).encode(), capture_output=True, timeout=30)
        if enc.returncode != 0:
            raise RuntimeError("loanwire-avro encode: %s" % enc.stderr.decode())
        f = os.path.join(tmpdir, "a%d.avro" % i)
        with open(f, "wb") as fp:
            fp.write(enc.stdout)
        files = [f, f] if dup_every and i % dup_every == 0 else [f]
        p = subprocess.run(["kcat", "-P", "-b", BOOT, "-t", topic, "-k", a["borrower_id"]] + files,
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError("kcat -P: %s" % p.stderr)
        n += len(files)
    return n


def test_kafka():
    topic = "lw-test-alerts-" + UNIQ
    alerts = make_alerts(30, 3, "k" + UNIQ)
    with tempfile.TemporaryDirectory(dir=TMP) as td:
        kafka_produce(topic, alerts, td, dup_every=7)
        # A record that is not an alert must not stop the subscriber.
        junk = os.path.join(td, "junk")
        with open(junk, "wb") as fp:
            fp.write(b"not avro at all")
        subprocess.run(["kcat", "-P", "-b", BOOT, "-t", topic, "-k", "junk", junk], check=True,
                       capture_output=True, timeout=60)
    ids = [a["alert_id"] for a in alerts]
    src = ["--brokers", BOOT, "--topic", topic, "--json"]
    got = two_runs(src + ["--group", "g-main-" + UNIQ], ids, "kafka", 10)
    # Per borrower (= per partition) the order is the produce order.
    pos = {i: n for n, i in enumerate(got)}
    by_b = {}
    for a in alerts:
        by_b.setdefault(a["borrower_id"], []).append(a["alert_id"])
    check(all([pos[i] for i in l] == sorted(pos[i] for i in l) for l in by_b.values()),
          "kafka: per borrower in produce order")
    filters(lambda i: src + ["--group", "g-filter-%d-%s" % (i, UNIQ)], alerts, "kafka")


def test_kafka_count_boundary():
    """--count ends right on an alert whose redelivery is next in the partition:
    the next run must not print it again (its set of seen ids starts empty)."""
    topic = "lw-test-alerts-b-" + UNIQ
    alerts = make_alerts(3, 5, "kb" + UNIQ)
    for a in alerts:
        a["borrower_id"] = alerts[0]["borrower_id"]  # one key: one partition, in order
    with tempfile.TemporaryDirectory(dir=TMP) as td:
        files = []
        for i, a in enumerate(alerts):
            enc = subprocess.run([os.path.join(BIN, "loanwire-avro"), "encode", "--schema",
                                  "alert"], input=json.dumps(a).encode(), capture_output=True,
                                 timeout=30)
            if enc.returncode != 0:
                raise RuntimeError("loanwire-avro encode: %s" % enc.stderr.decode())
            files.append(os.path.join(td, "b%d.avro" % i))
            with open(files[-1], "wb") as fp:
                fp.write(enc.stdout)
        # a0, a1, a1 (redelivery), a2
        p = subprocess.run(["kcat", "-P", "-b", BOOT, "-t", topic, "-k", alerts[0]["borrower_id"],
                            files[0], files[1], files[1], files[2]], capture_output=True,
                           text=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError("kcat -P: %s" % p.stderr)
    ids = [a["alert_id"] for a in alerts]
    src = ["--brokers", BOOT, "--topic", topic, "--json", "--group", "g-bound-" + UNIQ]
    rc1, a, e1 = run_alerts(src + ["--from-beginning", "--count", "2"])
    check(rc1 == 0 and a == ids[:2], "kafka boundary: first run prints the first 2 (%s)" % a)
    rc2, b, e2 = run_alerts(src)
    check(rc2 == 0 and b == ids[2:],
          "kafka boundary: the redelivery right after --count is not printed again (%s %s)"
          % (b, e2.strip()[-200:]))


def main():
    require_servers()
    test_redis()
    test_kafka()
    test_kafka_count_boundary()
    rcli("FLUSHDB")
    if failures:
        print("%d check(s) failed:" % len(failures), file=sys.stderr)
        for f in failures:
            print("  " + f, file=sys.stderr)
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
