#!/usr/bin/env python3
"""test_produce.py - loanwire-produce against the real broker.

Scenarios:
  1. a mixed file of valid and invalid lines: every line ends delivered or in
     the rejects file (unchanged, after a "# file:line: field: reason" comment);
     the summary and the exit status say so (0; 3 with --strict);
  2. what was produced reads back from the topic (kcat + loanwire-avro decode)
     as exactly the input, keyed by borrower_id, every borrower on one
     partition, in input order; raw national ids pseudonymised with --id-key
     match an independent HMAC-SHA256 computed here; no header by default,
     an lw-sent-us header (µs during the run) on every message with --stamp;
  3. --dry-run sends nothing; a rejects file fed back in is read as input;
  4. SIGINT while reading stdin: summary printed, exit 130, whatever was sent
     was delivered.

Needs LOANWIRE_BOOTSTRAP (./deploy/stack.sh up), LW_BIN_DIR, LW_SOURCE_DIR.
Topics are unique per run and deleted at the end.
"""
import base64
import hashlib
import hmac
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.environ.get("LW_SOURCE_DIR", "."), "tests", "support"))
from lwtest import (BIN, BOOT, PARTITIONS, TMP, check, die, finish,  # noqa: E402
                    produce_summary, require_kafka, run, topics_cmd)


def new_topic(tag):
    t = f"lwtest.produce.{tag}.{os.getpid()}.{int(time.time() * 1000)}"
    r = topics_cmd("create", t)
    if r.returncode != 0:
        die(f"loanwire-topics create {t}: {r.stderr}")
    return t


def readback(topic):
    """[(partition, offset, key, event dict)] in partition order, then offset order."""
    out = []
    for p in range(PARTITIONS):
        meta = run(["kcat", "-C", "-b", BOOT, "-t", topic, "-p", str(p), "-o", "beginning",
                    "-e", "-q", "-f", "%k\t%o\t%h\n"])
        if meta.returncode != 0:
            die(f"kcat read {topic}/{p}: {meta.stderr}")
        raw = subprocess.run(["kcat", "-C", "-b", BOOT, "-t", topic, "-p", str(p), "-o",
                              "beginning", "-e", "-q", "-f", "%R%s"], capture_output=True)
        dec = subprocess.run([f"{BIN}/loanwire-avro", "decode", "--lines"], input=raw.stdout,
                             capture_output=True)
        if dec.returncode != 0:
            die(f"loanwire-avro decode: {dec.stderr.decode()[:300]}")
        metas = [m.split("\t") for m in meta.stdout.splitlines() if m]
        evs = [json.loads(x) for x in dec.stdout.decode().splitlines() if x]
        if len(metas) != len(evs):
            die(f"partition {p}: {len(metas)} keys but {len(evs)} decoded events")
        for (k, off, hdr), ev in zip(metas, evs):
            out.append((p, int(off), k, ev, hdr))
    return out


# ---- test data -----------------------------------------------------------------

PRC_W = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]


def prc_id(rng):
    body = "110105" + f"{rng.randrange(1950, 2000)}{rng.randrange(1, 13):02d}" \
        f"{rng.randrange(1, 29):02d}{rng.randrange(0, 1000):03d}"
    c = (12 - sum(int(d) * w for d, w in zip(body, PRC_W)) % 11) % 11
    return body + ("X" if c == 10 else str(c))


def bad_prc_id(rng):
    good = prc_id(rng)
    last = "0" if good[-1] != "0" else "1"
    return good[:-1] + last


KEY_HEX = "".join(f"{(i * 37 + 11) % 256:02x}" for i in range(32))


def pseudonym(raw):
    norm = raw.replace(" ", "").replace("-", "").upper()
    mac = hmac.new(bytes.fromhex(KEY_HEX), norm.encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def borrower(i):
    return base64.urlsafe_b64encode(hashlib.sha256(f"b{i}".encode()).digest()[:16]) \
        .rstrip(b"=").decode()


def event(i, b, seq, typ="DRAWDOWN"):
    ev = {"event_id": f"ev-{i}", "event_type": typ, "platform_id": "webank",
          "lender_id": f"bank-{b % 3}", "borrower_id": borrower(b), "loan_id": f"loan-{b}",
          "product": "INSTALLMENT", "sequence": seq, "occurred_at": 1735689600000 + i * 1000,
          "amount_fen": 10000 + i, "outstanding_fen": 500000 + i, "credit_limit_fen": 0,
          "days_past_due": 0, "past_due_fen": 0, "currency": "CNY",
          "annual_income_fen": 12000000 if i % 2 else None,
          "term_months": 12 if i % 3 else None}
    if typ == "REPAYMENT":
        ev["amount_fen"] = 500 + i
    return ev


def dumps(ev):
    return json.dumps(ev, separators=(",", ":"), ensure_ascii=False)


def make_mixed(rng, n_valid=400, n_borrowers=40):
    """Lines plus, for each, (kind, expected dict or expected field)."""
    seqs = {}
    valid = []
    for i in range(n_valid):
        b = rng.randrange(n_borrowers)
        seqs[b] = seqs.get(b, 0) + 1
        ev = event(i, b, seqs[b], "REPAYMENT" if i % 5 == 4 else "DRAWDOWN")
        if i % 40 == 7:  # a raw national id, formatted the way people type them
            raw = prc_id(rng)
            shown = raw[:6] + "-" + raw[6:14] + " " + raw[14:].lower()
            del ev["borrower_id"]
            ev["national_id"] = shown
            line = dumps(ev)
            exp = dict(ev)
            del exp["national_id"]
            exp["borrower_id"] = pseudonym(raw)
        else:
            line = dumps(ev)
            exp = ev
        valid.append((line, exp))
    base = event(9999, 0, 1)
    invalid = [
        ("this is not json", ""),
        (dumps(base)[:-20], ""),
        (dumps({**base, "event_id": "bad-neg", "amount_fen": -5}), "amount_fen"),
        (dumps({**base, "event_id": "bad-unknown", "colour": "red"}), "colour"),
        (dumps({**base, "event_id": "bad-bid", "borrower_id": "short"}), "borrower_id"),
        (dumps({**{k: v for k, v in base.items() if k != "borrower_id"},
                "event_id": "bad-nid", "national_id": bad_prc_id(rng)}), "national_id"),
        (dumps({**base, "event_id": "bad-zero", "amount_fen": 0}), "amount_fen"),
        (dumps({**base, "event_id": "bad-cur", "currency": "XXX"}), "currency"),
        (dumps({**base, "event_id": "bad-seq", "sequence": 0}), "sequence"),
        (dumps({**base, "event_id": "bad-type", "event_type": "LOTTERY"}), "event_type"),
        ('{"event_id":"bad-float","amount_fen":1.5}', "amount_fen"),
        (dumps({**base, "event_id": "bad-missing-loan", "loan_id": ""}), "loan_id"),
    ]
    lines = []
    kinds = []
    vi = 0
    for k, (line, field) in enumerate(invalid):
        # spread the bad lines through the file
        while vi < (k + 1) * len(valid) // (len(invalid) + 1):
            lines.append(valid[vi][0])
            kinds.append(("valid", valid[vi][1]))
            vi += 1
        lines.append(line)
        kinds.append(("invalid", field))
    while vi < len(valid):
        lines.append(valid[vi][0])
        kinds.append(("valid", valid[vi][1]))
        vi += 1
    return lines, kinds


def write_key(d):
    path = os.path.join(d, "id.key")
    with open(path, "w") as f:
        f.write(KEY_HEX + "\n")
    os.chmod(path, 0o600)
    return path


def parse_rejects(path):
    """[(source, line number, reason, raw line)] from a rejects file."""
    out = []
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    i = 0
    while i < len(lines):
        m = re.match(r"^# (.*):(\d+): (.*)$", lines[i])
        if not m or i + 1 >= len(lines):
            die(f"rejects file {path}: bad entry at line {i + 1}: {lines[i][:100]}")
        out.append((m.group(1), int(m.group(2)), m.group(3), lines[i + 1]))
        i += 2
    return out


def norm(ev):
    """JSON form with absent optional fields written as null."""
    out = dict(ev)
    for k in ("annual_income_fen", "term_months"):
        out.setdefault(k, None)
    return out


# ---- scenarios -------------------------------------------------------------------


def test_mixed_and_readback(work, rng, topics):
    lines, kinds = make_mixed(rng)
    src = os.path.join(work, "mixed.jsonl")
    with open(src, "w") as f:
        f.write("# a comment line, skipped\n\n")
        for line in lines:
            f.write(line + "\n")
    key = write_key(work)
    topic = new_topic("mixed")
    topics.append(topic)
    n_valid = sum(1 for k in kinds if k[0] == "valid")
    n_bad = len(kinds) - n_valid

    r = run([f"{BIN}/loanwire-produce", "-b", BOOT, "-t", topic, "--id-key", key, src])
    check("mixed: exit 0 when every valid line is delivered", r.returncode == 0,
          f"rc={r.returncode} stderr={r.stderr[-500:]}")
    s = produce_summary(r.stderr)
    check("mixed: summary line present", s is not None, r.stderr[-300:])
    if s:
        check("mixed: summary counts", s == {"read": len(lines), "rejected": n_bad,
                                             "sent": n_valid, "delivered": n_valid,
                                             "failed": 0}, str(s))
    for k, (kind, field) in enumerate(kinds):
        if kind == "invalid":
            lineno = k + 3  # after the comment and the blank line
            want = f"{src}:{lineno}: {field}" if field else f"{src}:{lineno}: "
            check(f"mixed: stderr names {src}:{lineno} {field}", want in r.stderr)
    rej = parse_rejects(src + ".rejects")
    bad_lines = [lines[k] for k, kk in enumerate(kinds) if kk[0] == "invalid"]
    check("mixed: rejects file holds exactly the bad lines, unchanged",
          [x[3] for x in rej] == bad_lines, f"{len(rej)} entries vs {len(bad_lines)}")
    ok_fields = True
    for (srcname, lineno, reason, raw), (k, kk) in zip(
            rej, [(k, kk) for k, kk in enumerate(kinds) if kk[0] == "invalid"]):
        if srcname != src or lineno != k + 3 or (kk[1] and not reason.startswith(kk[1] + ":")):
            ok_fields = False
            print(f"     rejects entry {srcname}:{lineno}: {reason} (expected line {k + 3}, "
                  f"field {kk[1]!r})")
    check("mixed: each reject names its file, line and field", ok_fields)

    # Read back: exactly the valid events, keyed by borrower, one partition each, in order.
    got = readback(topic)
    expected = [norm(kk[1]) for kk in kinds if kk[0] == "valid"]
    check("readback: as many events as valid lines", len(got) == len(expected),
          f"{len(got)} vs {len(expected)}")
    by_id = {e["event_id"]: e for e in expected}
    same = all(norm(ev) == by_id.get(ev["event_id"]) for _, _, _, ev, _ in got)
    check("readback: every event decodes to exactly its input line", same)
    check("readback: no event twice",
          len({ev["event_id"] for _, _, _, ev, _ in got}) == len(got))
    check("readback: key is borrower_id", all(k == ev["borrower_id"] for _, _, k, ev, _ in got))
    check("readback: no header without --stamp", all(h == "" for _, _, _, _, h in got),
          repr([h for _, _, _, _, h in got if h][:3]))
    parts = {}
    for p, _, _, ev, _ in got:
        parts.setdefault(ev["borrower_id"], set()).add(p)
    check("readback: every borrower on one partition", all(len(v) == 1 for v in parts.values()))
    order_in = {}
    for e in expected:
        order_in.setdefault(e["borrower_id"], []).append(e["event_id"])
    order_out = {}
    for _, _, _, ev, _ in sorted(got, key=lambda x: (x[0], x[1])):
        order_out.setdefault(ev["borrower_id"], []).append(ev["event_id"])
    check("readback: each borrower's events in input order", order_in == order_out)
    nid_ids = {kk[1]["event_id"] for k, kk in enumerate(kinds)
               if kk[0] == "valid" and '"national_id"' in lines[k]}
    got_by_id = {ev["event_id"]: ev for _, _, _, ev, _ in got}
    check("readback: national ids pseudonymised as HMAC-SHA256-128 (computed here)",
          len(nid_ids) > 0 and all(nid in got_by_id and got_by_id[nid]["borrower_id"] ==
                                   by_id[nid]["borrower_id"] for nid in nid_ids),
          f"{len(nid_ids)} national_id lines")

    # --strict: same file, rejects now fail the run (exit 3) though all was delivered.
    # --stamp: every message carries lw-sent-us, wall-clock microseconds at send.
    topic2 = new_topic("strict")
    topics.append(topic2)
    t0_us = int(time.time() * 1e6)
    r = run([f"{BIN}/loanwire-produce", "-b", BOOT, "-t", topic2, "--id-key", key, "--strict",
             "--stamp", "--rejects", os.path.join(work, "strict.rejects"), src])
    t1_us = int(time.time() * 1e6)
    check("strict: exit 3 when lines were rejected", r.returncode == 3, f"rc={r.returncode}")
    check("strict: --rejects FILE used",
          len(parse_rejects(os.path.join(work, "strict.rejects"))) == n_bad)
    got2 = readback(topic2)
    stamps = [re.fullmatch(r"lw-sent-us=(\d{16})", h) for _, _, _, _, h in got2]
    check("--stamp: lw-sent-us header on every message", len(got2) == n_valid and all(stamps),
          f"{len(got2)} messages, headers {[h for _, _, _, _, h in got2][:3]}")
    check("--stamp: lw-sent-us is the wall clock during the run (µs)",
          all(m and t0_us <= int(m.group(1)) <= t1_us for m in stamps),
          f"[{t0_us}, {t1_us}] vs {[m.group(1) for m in stamps[:3] if m]}")

    # Without --id-key the national_id lines are refused too, with that reason.
    r = run([f"{BIN}/loanwire-produce", "-b", BOOT, "-t", topic2, "--dry-run",
             "--rejects", os.path.join(work, "nokey.rejects"), src])
    n_nid = sum(1 for k, kk in enumerate(kinds)
                if kk[0] == "valid" and '"national_id"' in lines[k])
    rej = parse_rejects(os.path.join(work, "nokey.rejects"))
    check("no key: national_id lines refused, naming the field",
          sum(1 for x in rej if x[2].startswith("national_id: raw national id")) == n_nid
          and n_nid > 0, f"{len(rej)} rejects")
    check("dry run: exit 0, says valid count", r.returncode == 0
          and f"valid {n_valid - n_nid} (dry run)" in r.stderr, r.stderr[-300:])

    # The rejects file feeds back as input: comments skipped, the bad lines read again.
    r = run([f"{BIN}/loanwire-produce", "--dry-run", "--rejects",
             os.path.join(work, "again.rejects"), src + ".rejects"])
    check("feed back: rejects file reads as its bad lines only",
          f"read {n_bad}, rejected {n_bad}, valid 0" in r.stderr, r.stderr[-300:])


def test_sigint(work, topics):
    topic = new_topic("sigint")
    topics.append(topic)
    rejects = os.path.join(work, "sigint.rejects")
    p = subprocess.Popen([f"{BIN}/loanwire-produce", "-b", BOOT, "-t", topic, "--rejects",
                          rejects, "-"], stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    for i in range(200):
        p.stdin.write(dumps(event(i, i % 17, i // 17 + 1)) + "\n")
    p.stdin.flush()
    time.sleep(2)  # stdin stays open: the producer waits for more
    p.send_signal(signal.SIGINT)
    try:
        _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
    check("sigint: exit 130", p.returncode == 130, f"rc={p.returncode} {err[-300:]}")
    s = produce_summary(err)
    check("sigint: summary printed, all 200 read and delivered",
          s is not None and s["read"] == 200 and s["delivered"] == 200 and s["failed"] == 0,
          str(s))
    check("sigint: topic holds the 200 events", len(readback(topic)) == 200)


def test_cli_errors(work):
    r = run([f"{BIN}/loanwire-produce", "--help"])
    check("cli: --help exits 0 and documents exit status",
          r.returncode == 0 and "Exit status" in r.stdout)
    r = run([f"{BIN}/loanwire-produce", "--no-such-option"])
    check("cli: bad option exits 2", r.returncode == 2)
    r = run([f"{BIN}/loanwire-produce", "-b", BOOT, os.path.join(work, "missing.jsonl")])
    check("cli: unreadable input exits 2", r.returncode == 2 and "missing.jsonl" in r.stderr)
    loose = os.path.join(work, "loose.key")
    with open(loose, "w") as f:
        f.write(KEY_HEX + "\n")
    os.chmod(loose, 0o644)
    r = run([f"{BIN}/loanwire-produce", "--dry-run", "--id-key", loose, "/dev/null"])
    check("cli: key readable by others refused (exit 2)",
          r.returncode == 2 and "group or others" in r.stderr, r.stderr)
    r = run([f"{BIN}/loanwire-produce", "-X", "no.such.prop=1", "/dev/null"])
    check("cli: bad -X property exits 2", r.returncode == 2 and "no.such.prop" in r.stderr)


def main():
    require_kafka()
    rng = random.Random(20240601)
    work = tempfile.mkdtemp(prefix="test_produce.", dir=TMP)
    topics = []
    try:
        test_cli_errors(work)
        test_mixed_and_readback(work, rng, topics)
        test_sigint(work, topics)
    finally:
        for t in topics:
            topics_cmd("delete", t)
    finish()


if __name__ == "__main__":
    main()
