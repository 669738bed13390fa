#!/usr/bin/env python3
"""test_reconcile.py - loanwire-reconcile against a bureau built from real events.

A generated feed goes loanwire-gen -> loanwire-produce -> Kafka -> loanwire-exposure
into the single Redis (database 5) and, in a second pass, into the Redis Cluster
(LOANWIRE_REDIS_CLUSTER, any node). The platform's truth is computed here from the
feed itself (each loan's event of highest sequence), independently of the bureau.
On each:

  clean      the snapshot of the platform's open loans: exit 0, no output, with and
             without --full, from a file and from stdin
  bad input  a decimal amount, another platform's line, a missing field: exit 2,
             each named on stderr by line and field; the good lines still compared
  usage      no --platform, two files, an unreadable file, no Redis: exit 2
  planted    late events produced through Kafka after the snapshot was "taken" (a
             REPAYMENT: bureau_ahead; a CLOSURE: missing_at_bureau, the bureau's
             side CLOSED), and snapshot lines edited (an unknown loan:
             missing_at_bureau with bureau null; outstanding + 100:
             balance_mismatch; a later sequence: bureau_behind; an active loan
             left out: unknown_to_platform with --full only): exactly the planted
             (kind, loan) pairs come out, with the values on both sides; exit 1

Fails loudly (never skips) when a server or LOANWIRE_REDIS_CLUSTER is missing.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_exposure_cluster as tc  # noqa: E402
import test_exposure_e2e as e2e  # noqa: E402

BIN, BOOT, TMP = e2e.BIN, e2e.BOOT, e2e.TMP
CLUSTER = os.environ.get("LOANWIRE_REDIS_CLUSTER", "")
DB = 5
P = "ALIPAY"
check = e2e.check
RECON = os.path.join(BIN, "loanwire-reconcile")


def truth(events):
    """(borrower, loan_id) -> the platform's latest event of each loan of P."""
    t = {}
    for e in events:
        if e["platform_id"] != P or e["event_type"] == "APPLICATION":
            continue
        k = (e["borrower_id"], e["loan_id"])
        if k not in t or e["sequence"] > t[k]["sequence"]:
            t[k] = e
    return t


def is_open(e):
    return e["event_type"] not in ("CLOSURE", "WRITE_OFF")


def snap_line(bid, loan, seq, out):
    return json.dumps({"platform_id": P, "loan_id": loan, "borrower_id": bid, "sequence": seq,
                       "outstanding_fen": out}) + "\n"


def write(path, lines):
    with open(path, "w") as f:
        f.writelines(lines)
    return path


def reconcile(args, stdin=None):
    p = subprocess.run([RECON, *args], input=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    out = []
    for ln in p.stdout.splitlines():
        try:
            out.append(json.loads(ln))
        except ValueError:
            check(False, f"stdout line is not JSON: {ln!r}")
    return p.returncode, out, p.stderr


def late(last, etype, seq, outstanding, tag):
    e = dict(last)
    e["event_id"] = f"{last['event_id']}-recon-{tag}"
    e["event_type"] = etype
    e["sequence"] = seq
    e["occurred_at"] = last["occurred_at"] + 60000
    e["outstanding_fen"] = outstanding
    e["amount_fen"] = max(1, last["outstanding_fen"] - outstanding)
    if etype == "CLOSURE":
        e["days_past_due"] = 0
        e["past_due_fen"] = 0
    return e


def scenario(what, url, apply_feed, apply_late, snaps):
    print(f"{what}: {url}")
    apply_feed()
    clean, bad, planted, want, want_full = snaps
    # clean
    rc, out, err = reconcile(["--redis", url, "--platform", P, clean])
    check(rc == 0 and out == [], f"{what}: clean snapshot: exit {rc}, {len(out)} discrepancies "
          f"(want 0, none): {out[:3]} {err[-500:]}")
    check("0 discrepancies" in err, f"{what}: clean: summary on stderr: {err[-300:]}")
    rc, out, err = reconcile(["--redis", url, "--platform", P, "--full", clean])
    check(rc == 0 and out == [], f"{what}: clean --full: exit {rc}, {out[:3]} {err[-500:]}")
    rc, out, err = reconcile(["--redis", url, "--platform", P, "-"], stdin=open(clean).read())
    check(rc == 0 and out == [], f"{what}: clean from stdin: exit {rc}, {out[:3]}")
    # bad lines: named, counted, exit 2; the good lines still compared
    rc, out, err = reconcile(["--redis", url, "--platform", P, bad])
    check(rc == 2, f"{what}: bad lines: exit {rc}, want 2")
    check(out == [], f"{what}: bad lines: the good lines are clean, got {out[:3]}")
    for frag in (":2: outstanding_fen: must be a JSON integer, not a decimal",
                 ":4: platform_id: 'JD' is not the platform reconciled",
                 ":6: sequence: missing", "3 rejected"):
        check(frag in err, f"{what}: bad lines: stderr lacks {frag!r}: {err[-800:]}")
    # planted
    apply_late()
    for full, w in ((False, want), (True, want_full)):
        args = ["--redis", url, "--platform", P] + (["--full"] if full else []) + [planted]
        rc, out, err = reconcile(args)
        got = sorted((d["kind"], d["loan_id"]) for d in out)
        check(got == sorted(w), f"{what}: planted{' --full' if full else ''}: got {got}, "
              f"want {sorted(w)}; {err[-500:]}")
        check(rc == 1, f"{what}: planted: exit {rc}, want 1")
        for d in out:
            check(d["platform_id"] == P and len(d["borrower_id"]) == 22,
                  f"{what}: discrepancy names platform and borrower: {d}")
        # the values of each run are checked by the caller (check_values)
        yield (full, {(d["kind"], d["loan_id"]): d for d in out}, err)


def main():
    e2e.Redis(0)  # fail loudly, naming the server
    k = subprocess.run(["kcat", "-b", BOOT, "-L", "-m", "10"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    if k.returncode != 0:
        e2e.fail_server("Kafka", BOOT, k.stderr.strip()[-200:])
    if not CLUSTER:
        e2e.fail_server("Redis Cluster", "LOANWIRE_REDIS_CLUSTER",
                        "not set: ./tests/run.sh starts one")
    tag = f"{os.getpid()}-{int(time.time())}"
    topic, late_topic = f"lw-test-recon-{tag}", f"lw-test-recon-late-{tag}"
    e2e.create_topics(topic, 2)
    e2e.create_topic(late_topic, 1)
    e2e.create_topic(late_topic + ".dlq", 1)
    feed = os.path.join(TMP, f"recon-feed-{tag}.jsonl")
    e2e.run([os.path.join(BIN, "loanwire-gen"), "--seed", "21", "--borrowers", "400",
             "-n", "4000", "--out", feed])
    e2e.run([os.path.join(BIN, "loanwire-produce"), "-b", BOOT, "-t", topic, "-q", feed])
    events = [json.loads(l) for l in open(feed) if l.strip()]
    t = truth(events)
    open_loans = sorted(k for k, e in t.items() if is_open(e))
    active = [k for k in open_loans if t[k]["outstanding_fen"] > 2]
    print(f"feed: {len(events)} events; {P}: {len(t)} loans, {len(open_loans)} open, "
          f"{len(active)} active")
    if len(active) < 6:
        check(False, f"the feed has too few active loans of {P} ({len(active)})")
        return
    W, Z, Y, X, V = active[:5]
    ghost = (active[5][0], "recon-ghost-loan")

    clean_lines = [snap_line(b, l, t[(b, l)]["sequence"], t[(b, l)]["outstanding_fen"])
                   for b, l in open_loans]
    clean = write(os.path.join(TMP, f"recon-clean-{tag}.jsonl"), clean_lines)
    bad_lines = clean_lines[:6]
    bad_lines[1] = json.dumps(dict(json.loads(clean_lines[1]), outstanding_fen=12.5)) + "\n"
    bad_lines[3] = json.dumps(dict(json.loads(clean_lines[3]), platform_id="JD")) + "\n"
    d5 = json.loads(clean_lines[5])
    del d5["sequence"]
    bad_lines[5] = json.dumps(d5) + "\n"
    bad = write(os.path.join(TMP, f"recon-bad-{tag}.jsonl"), bad_lines)

    # planted: the platform's snapshot, taken before the late events
    lines = []
    for b, l in open_loans:
        e = t[(b, l)]
        seq, out = e["sequence"], e["outstanding_fen"]
        if (b, l) == W:
            out += 100
        elif (b, l) == Z:
            seq, out = seq + 1, out - 1
        elif (b, l) == X:
            seq = seq + 1  # open at the platform at the sequence the bureau closed it
        elif (b, l) == V:
            continue
        lines.append(snap_line(b, l, seq, out))
    lines.insert(len(lines) // 2, snap_line(ghost[0], ghost[1], 3, 5000))
    planted = write(os.path.join(TMP, f"recon-planted-{tag}.jsonl"), lines)
    lfeed = write(os.path.join(TMP, f"recon-late-{tag}.jsonl"), [
        json.dumps(late(t[Y], "REPAYMENT", t[Y]["sequence"] + 1, t[Y]["outstanding_fen"] - 1,
                        "y")) + "\n",
        json.dumps(late(t[X], "CLOSURE", t[X]["sequence"] + 1, 0, "x")) + "\n"])
    rej = os.path.join(TMP, f"recon-late-rej-{tag}.jsonl")
    e2e.run([os.path.join(BIN, "loanwire-produce"), "-b", BOOT, "-t", late_topic, "-q",
             "-r", rej, lfeed])
    check(not os.path.exists(rej) or os.path.getsize(rej) == 0,
          f"late events rejected: {open(rej).read() if os.path.exists(rej) else ''}")
    want = [("balance_mismatch", W[1]), ("bureau_behind", Z[1]), ("bureau_ahead", Y[1]),
            ("missing_at_bureau", X[1]), ("missing_at_bureau", ghost[1])]
    want_full = want + [("unknown_to_platform", V[1])]
    snaps = (clean, bad, planted, want, want_full)

    # usage errors: exit 2
    host, port = e2e.redis_hostport()
    single = f"redis://{host}:{port}/{DB}"
    for args, why in (([clean], "no --platform"),
                      (["--platform", P, clean, clean], "two files"),
                      (["--platform", P, os.path.join(TMP, "no-such-snapshot.jsonl")], "no file"),
                      (["--platform", P, "--batch", "0", clean], "--batch 0"),
                      (["--platform", P, "--bogus", clean], "unknown option")):
        rc, out, err = reconcile(["--redis", single, *args])
        check(rc == 2 and out == [], f"usage: {why}: exit {rc}, want 2: {err[-300:]}")
    rc, out, err = reconcile(["--redis", "redis://127.0.0.1:1", "--platform", P, clean])
    check(rc == 2 and "Redis" in err, f"usage: no Redis: exit {rc}, want 2: {err[-300:]}")

    def check_values(what, runs):
        for full, by, err in runs:
            d = by.get(("balance_mismatch", W[1]))
            if d:
                check(d["platform"]["outstanding_fen"] == d["bureau"]["outstanding_fen"] + 100
                      and d["platform"]["sequence"] == d["bureau"]["sequence"],
                      f"{what}: balance_mismatch values: {d}")
            d = by.get(("bureau_ahead", Y[1]))
            if d:
                check(d["bureau"]["sequence"] == t[Y]["sequence"] + 1 and
                      d["platform"]["sequence"] == t[Y]["sequence"],
                      f"{what}: bureau_ahead values: {d}")
            d = by.get(("bureau_behind", Z[1]))
            if d:
                check(d["bureau"]["sequence"] + 1 == d["platform"]["sequence"],
                      f"{what}: bureau_behind values: {d}")
            d = by.get(("missing_at_bureau", X[1]))
            if d:
                check(d["bureau"]["status"] == "CLOSED", f"{what}: closed at the bureau: {d}")
            d = by.get(("missing_at_bureau", ghost[1]))
            if d:
                check(d["bureau"] is None and d["platform"]["outstanding_fen"] == 5000,
                      f"{what}: unknown loan: {d}")
            d = by.get(("unknown_to_platform", V[1]))
            if full:
                check(d is not None and d["platform"] is None and
                      d["bureau"]["outstanding_fen"] == t[V]["outstanding_fen"] and
                      "line" not in d, f"{what}: unknown_to_platform values: {d}")
                check("--full:" in err and "scanned" in err, f"{what}: --full summary: {err}")

    # single Redis
    r = e2e.Redis(DB)
    r.cmd("FLUSHDB")
    check_values("single", scenario(
        "single", single,
        lambda: e2e.exposure(topic, f"recon-s-{tag}", DB, topic + ".alerts"),
        lambda: e2e.exposure(late_topic, f"recon-sl-{tag}", DB, late_topic + ".a"),
        snaps))

    # Redis Cluster
    cl = tc.Cluster(CLUSTER)
    cl.flushall()
    check_values("cluster", scenario(
        "cluster", CLUSTER,
        lambda: tc.exposure(topic, f"recon-c-{tag}", topic + ".alerts"),
        lambda: tc.exposure(late_topic, f"recon-cl-{tag}", late_topic + ".a"),
        snaps))

    for p in (feed, clean, bad, planted, lfeed):
        os.unlink(p)
    if e2e.FAILED:
        print(f"FAILED: {len(e2e.FAILED)} check(s)")
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
