#!/usr/bin/env python3
"""test_interop.py - loanwire-avro against fastavro, an independent Avro
implementation (PyPI package fastavro):

  * our Parsing Canonical Form and CRC-64-AVRO fingerprint equal fastavro's for
    every schema under schemas/ and for the Avro specification's examples;
  * what we encode, fastavro decodes (schemaless_reader after the 10-byte
    header, whose fingerprint must be fastavro's) to the same values;
  * what fastavro encodes (current and v1 schemas), we decode;
  * an old v1 reader (fastavro with schemas/v1 as reader schema) reads what we
    write with the current schema;
  * bad input makes loanwire-avro exit non-zero naming the field.

Needs LW_BIN_DIR (set by ctest) and LW_SOURCE_DIR. Prints 'N passed, N failed'.
"""
import io
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import fastavro
    from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form
except ImportError:
    print("test_interop: the Python package fastavro is missing: python3 -m pip install fastavro")
    print("0 passed, 1 failed")
    sys.exit(1)

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("LW_SOURCE_DIR", os.path.join(HERE, "..", ".."))
BIN = os.environ.get("LW_BIN_DIR", os.path.join(SRC, "build", "bin"))
AVRO = os.path.join(BIN, "loanwire-avro")
SCHEMAS = os.path.join(SRC, "schemas")

passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what)


def run(args, data=b""):
    p = subprocess.run([AVRO] + args, input=data, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def load(path):
    with open(path) as f:
        return json.load(f)


def fp_hex(schema_json):
    return fingerprint(to_parsing_canonical_form(parse_schema(schema_json)), "CRC-64-AVRO")


# ---- Canonical forms and fingerprints -------------------------------------

SPEC_EXAMPLES = [
    "int", "null", "boolean", "long", "float", "double", "bytes", "string",
    {"type": "int"},
    {"type": "long", "logicalType": "timestamp-millis"},
    {"type": "fixed", "name": "Foo", "size": 16},
    {"type": "fixed", "name": "Foo", "namespace": "x.y", "size": 16, "aliases": ["Bar"]},
    {"type": "enum", "name": "Suit", "doc": "cards",
     "symbols": ["SPADES", "HEARTS", "DIAMONDS", "CLUBS"]},
    {"type": "array", "items": "long"},
    {"type": "map", "values": {"type": "array", "items": "string"}},
    ["null", "string", {"type": "fixed", "name": "MD5", "size": 16}],
    {"type": "record", "name": "LongList", "aliases": ["LinkedLongs"],
     "fields": [{"name": "value", "type": "long"},
                {"name": "next", "type": ["null", "LongList"], "default": None}]},
    {"type": "record", "name": "Outer", "namespace": "org.example", "doc": "d",
     "fields": [
         {"name": "inner", "type": {"type": "record", "name": "Inner",
                                    "fields": [{"name": "x", "type": "int", "doc": "x"}]}},
         {"name": "other", "type": {"type": "record", "name": "com.other.Thing",
                                    "fields": [{"name": "e", "type": {
                                        "type": "enum", "name": "E", "symbols": ["A"]}}]}},
         {"name": "again", "type": "Inner"},
         {"name": "e2", "type": "com.other.E"},
         {"name": "m", "type": {"type": "map", "values": "Inner"}, "order": "descending"},
     ]},
    {"type": "record", "name": "R", "namespace": "a", "fields": [
        {"name": "f", "type": {"type": "fixed", "name": "F", "namespace": "b", "size": 4}},
        {"name": "g", "type": "b.F"}]},
]


def canonical_checks(tmp):
    files = []
    for root, _, names in os.walk(SCHEMAS):
        files += [os.path.join(root, n) for n in sorted(names) if n.endswith(".avsc")]
    check(len(files) >= 3, "schemas/ holds at least LoanEvent, v1/LoanEvent and the alert")
    for i, s in enumerate(SPEC_EXAMPLES):
        path = os.path.join(tmp, "spec%d.avsc" % i)
        with open(path, "w") as f:
            json.dump(s, f)
        files.append(path)
    for path in files:
        schema = load(path)
        want_pcf = to_parsing_canonical_form(parse_schema(schema))
        rc, out, err = run(["canonical", path])
        check(rc == 0 and out.decode().rstrip("\n") == want_pcf,
              "canonical form of %s: ours %r, fastavro %r %s" % (path, out, want_pcf, err))
        rc, out, err = run(["fingerprint", path])
        check(rc == 0 and out.decode().strip() == fp_hex(schema),
              "fingerprint of %s: ours %r, fastavro %s %s" % (path, out, fp_hex(schema), err))


# ---- Records both ways ----------------------------------------------------

TYPES = ["APPLICATION", "CREDIT_LINE", "DRAWDOWN", "REPAYMENT", "DELINQUENCY", "WRITE_OFF",
         "CLOSURE", "CORRECTION"]


def event(i, t):
    return {
        "event_id": "ev-%d" % i, "event_type": t,
        "platform_id": "plat-%d" % i, "lender_id": "bank.%d" % (i * 7),
        "borrower_id": "ABCDEFGHIJKLMNOPQRSTU%s" % "-_0a"[i % 4], "loan_id": "L/%d" % i,
        "product": ["REVOLVING", "INSTALLMENT", "OTHER"][i % 3], "sequence": 1 + i * 99991,
        "occurred_at": 1600000000000 + i * 86400000,
        "amount_fen": 0 if t in ("APPLICATION",) and i % 2 else 100 * (i + 1),
        "outstanding_fen": 0 if t in ("APPLICATION", "CLOSURE") else 10**13 - i,
        "credit_limit_fen": 5000000 if t == "CREDIT_LINE" else i,
        "days_past_due": 30 * i if t == "DELINQUENCY" else 0,
        "past_due_fen": 1234 * i, "currency": ["CNY", "HKD", "USD"][i % 3],
        "annual_income_fen": None if i % 2 else 12000000 + i,
        "term_months": None if i % 3 else 12 * (i % 5 + 1),
    }


def plain(schema):
    """The schema without logicalType, so fastavro hands back the raw long
    (ms since the epoch) as our JSON form does, not a datetime."""
    if isinstance(schema, dict):
        return {k: plain(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [plain(v) for v in schema]
    return schema


def header_and_datum(blob):
    return blob[:2], blob[2:10].hex(), blob[10:]


def record_checks():
    cur = load(os.path.join(SCHEMAS, "LoanEvent.avsc"))
    v1 = load(os.path.join(SCHEMAS, "v1", "LoanEvent.avsc"))
    alert = load(os.path.join(SCHEMAS, "OverIndebtednessAlert.avsc"))
    pcur, pv1, palert = (parse_schema(plain(s)) for s in (cur, v1, alert))
    events = [event(i, t) for i, t in enumerate(TYPES)]

    for ev in events:
        rc, blob, err = run(["encode"], json.dumps(ev).encode())
        check(rc == 0, "encode %s: %s" % (ev["event_type"], err))
        if rc:
            continue
        magic, fp, datum = header_and_datum(blob)
        check(magic == b"\xc3\x01", "marker C3 01")
        check(fp == fp_hex(cur), "header fingerprint %s is fastavro's %s" % (fp, fp_hex(cur)))
        got = fastavro.schemaless_reader(io.BytesIO(datum), pcur)
        check(got == ev, "fastavro decodes what we encode: %r != %r" % (got, ev))
        # An old consumer: fastavro with the v1 schema as reader.
        old = fastavro.schemaless_reader(io.BytesIO(datum), pcur, pv1)
        want_old = {k: v for k, v in ev.items() if k not in ("annual_income_fen", "term_months")}
        check(old == want_old, "v1 reader reads v2 data: %r" % (old,))
        # And fastavro's own encoding is byte-identical and decodes back.
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, pcur, ev)
        check(buf.getvalue() == datum, "same bytes as fastavro for %s" % ev["event_type"])
        rc, out, err = run(["decode"], blob)
        check(rc == 0 and json.loads(out) == ev, "decode our own: %s %s" % (out, err))

    # fastavro writes (v1 and current), we read.
    for ev in events:
        for schema, parsed in ((cur, pcur), (v1, pv1)):
            buf = io.BytesIO()
            rec = ev if schema is cur else {k: v for k, v in ev.items()
                                            if k not in ("annual_income_fen", "term_months")}
            fastavro.schemaless_writer(buf, parsed, rec)
            blob = b"\xc3\x01" + bytes.fromhex(fp_hex(schema)) + buf.getvalue()
            rc, out, err = run(["decode"], blob)
            want = dict(rec)
            want.setdefault("annual_income_fen", None)
            want.setdefault("term_months", None)
            check(rc == 0 and json.loads(out) == want,
                  "decode fastavro-written %s record: %s %s" %
                  ("current" if schema is cur else "v1", out, err))

    # Batch mode: JSON Lines in, length-framed records out, and back.
    lines = "\n".join(json.dumps(e) for e in events).encode() + b"\n"
    rc, framed, err = run(["encode", "--lines"], lines)
    check(rc == 0, "encode --lines: %s" % err)
    pos, n = 0, 0
    while pos < len(framed):
        (ln,) = struct.unpack(">I", framed[pos:pos + 4])
        rec = fastavro.schemaless_reader(io.BytesIO(framed[pos + 14:pos + 4 + ln]), pcur)
        check(rec == events[n], "framed record %d" % n)
        pos += 4 + ln
        n += 1
    check(n == len(events), "encode --lines wrote %d records" % n)
    rc, out, err = run(["decode", "--lines"], framed)
    got = [json.loads(l) for l in out.decode().splitlines()]
    check(rc == 0 and got == events, "decode --lines: %s" % err)

    # Encoding with the v1 schema gives what fastavro writes with v1.
    rc, blob, err = run(["encode", "--schema", "v1"], json.dumps(events[2]).encode())
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, pv1, events[2])
    check(rc == 0 and blob == b"\xc3\x01" + bytes.fromhex(fp_hex(v1)) + buf.getvalue(),
          "encode --schema v1 equals fastavro with v1: %s" % err)

    # Alerts.
    al = {"alert_id": "al-1", "borrower_id": "ABCDEFGHIJKLMNOPQRSTUV", "rule_id": "balance_cap",
          "rule_version": 2, "severity": "CRITICAL", "reason": "over cap \u4e2d\u6587 \"q\"",
          "total_outstanding_fen": 31000000, "active_lenders": 3, "active_loans": 5,
          "window_count": 0, "window_ms": 0, "annual_income_fen": None, "limit": 30000000,
          "trigger_event_id": "ev-9", "trigger_platform_id": "p", "trigger_lender_id": "l",
          "raised_at": 1700000000000}
    rc, blob, err = run(["encode", "--schema", "alert"], json.dumps(al).encode())
    check(rc == 0 and blob[2:10].hex() == fp_hex(alert), "encode alert: %s" % err)
    if rc == 0:
        check(fastavro.schemaless_reader(io.BytesIO(blob[10:]), palert) == al, "fastavro reads alert")
        rc, out, err = run(["decode"], blob)
        check(rc == 0 and json.loads(out) == al, "decode alert (kind found by fingerprint)")


def error_checks():
    good = event(3, "REPAYMENT")
    bad = dict(good, amount_fen=1.5)
    rc, _, err = run(["encode"], json.dumps(bad).encode())
    check(rc != 0 and "amount_fen" in err, "float amount refused naming the field: %s" % err)
    bad = dict(good, amount_fen=-5)
    rc, _, err = run(["encode"], json.dumps(bad).encode())
    check(rc != 0 and "amount_fen" in err and "negative" in err, "negative amount: %s" % err)
    rc, blob, err = run(["encode"], json.dumps(good).encode())
    rc, _, err = run(["decode"], blob[:-1])
    check(rc != 0 and "truncated" in err.lower(), "truncated record: %s" % err)
    rc, _, err = run(["decode"], blob + b"\x00")
    check(rc != 0 and "trailing" in err.lower(), "trailing byte: %s" % err)
    rc, _, err = run(["decode"], b"\xc3\x01" + b"\x00" * 8 + blob[10:])
    check(rc != 0 and "fingerprint" in err.lower(), "unknown fingerprint: %s" % err)
    rc, out, _ = run(["--help"])
    check(rc == 0 and b"--lines" in out, "--help documents --lines")
    rc, _, _ = run(["bogus"])
    check(rc != 0, "unknown command fails")


def main():
    if not os.access(AVRO, os.X_OK):
        print("test_interop: %s not built (set LW_BIN_DIR)" % AVRO)
        print("0 passed, 1 failed")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        canonical_checks(tmp)
    record_checks()
    error_checks()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
