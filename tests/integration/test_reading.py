#!/usr/bin/env python3
"""test_reading.py - schemas/READING.md's three recipes (Java with Apache
Avro's BinaryMessageDecoder, Python with fastavro, shell with kcat and
loanwire-avro) run as written against the real broker.

A fresh topic gets events of both writer versions: v2 (current) ones through
loanwire-produce, v1 ones encoded by `loanwire-avro encode --schema v1` and
produced as they are (keyed by borrower id, as Loanwire's producer keys).
Each recipe block of READING.md (the fenced block after a
`<!-- recipe: NAME -->` line) runs with BROKERS and TOPIC set, from the
source folder, with build/bin first on PATH, and must print exactly the
produced events: v2 ones as they were sent, v1 ones with null
annual_income_fen and term_months. A second topic holding one event and one
record of an unknown fingerprint must make every recipe exit non-zero and
still print the good event. The Java build runs offline (`mvn -o`) when the
local Maven repository already has everything, else it fetches once.
"""
import json
import os
import re
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("LW_SOURCE_DIR", "."), "tests", "support"))
from lwtest import BIN, BOOT, SRC, check, die, finish, require_kafka, run  # noqa: E402

try:
    from confluent_kafka import Producer
except ImportError:
    die("the Python package confluent-kafka is missing (./deploy/install-deps.sh installs it)")

READING = os.path.join(SRC, "schemas", "READING.md")
V2_ONLY = ("annual_income_fen", "term_months")


def recipes():
    """{name: shell text} of READING.md's recipe blocks."""
    text = open(READING).read()
    return {m.group(1): m.group(2) for m in
            re.finditer(r"<!-- recipe: ([\w-]+) -->\n```sh\n(.*?)```", text, re.S)}


def recipe_env(topic):
    return dict(os.environ, BROKERS=BOOT, TOPIC=topic,
                PATH=os.path.abspath(BIN) + os.pathsep + os.environ.get("PATH", ""))


def run_recipe(block, topic, timeout=300):
    t = time.monotonic()
    p = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=SRC, env=recipe_env(topic),
                       capture_output=True, text=True, timeout=timeout)
    return p, time.monotonic() - t


def create_topic(topic, partitions):
    r = run([f"{BIN}/loanwire-topics", "create", "-b", BOOT, "-t", topic, "--alerts-topic",
             topic + ".alerts", "--dlq-topic", topic + ".dlq", "--inquiries-topic", topic + ".inq", "--partitions", str(partitions),
             "--alerts-partitions", "1"], timeout=120)
    check(f"topic {topic} created", r.returncode == 0, r.stdout + r.stderr)


def delete_topic(topic):
    run([f"{BIN}/loanwire-topics", "delete", "-b", BOOT, "-t", topic, "--alerts-topic",
         topic + ".alerts", "--dlq-topic", topic + ".dlq", "--inquiries-topic", topic + ".inq"], timeout=120)


def frames(data):
    """Splits `loanwire-avro encode --lines` output (4-byte big-endian lengths)."""
    out, i = [], 0
    while i < len(data):
        (n,) = struct.unpack(">I", data[i:i + 4])
        out.append(data[i + 4:i + 4 + n])
        i += 4 + n
    return out


def produce_raw(topic, records):
    """[(key, value bytes)] onto topic as they are; True when all were delivered."""
    p = Producer({"bootstrap.servers": BOOT, "enable.idempotence": True})
    failed = []
    for k, v in records:
        p.produce(topic, key=k.encode(), value=v,
                  on_delivery=lambda err, msg: failed.append(err) if err else None)
    left = p.flush(30)
    return left == 0 and not failed


def encode_v1(events):
    """The events without v2's fields, encoded with the v1 writer schema."""
    text = "".join(json.dumps({k: v for k, v in e.items() if k not in V2_ONLY}) + "\n"
                   for e in events)
    r = subprocess.run([f"{BIN}/loanwire-avro", "encode", "--schema", "v1", "--lines"],
                       input=text.encode(), capture_output=True, timeout=60)
    check("v1 records encoded", r.returncode == 0, r.stderr.decode()[:300])
    recs = frames(r.stdout)
    check(f"{len(events)} v1 records, each with the v1 fingerprint",
          len(recs) == len(events)
          and all(x[:10] == bytes.fromhex("c301702bdff02611cbfa") for x in recs))
    return recs


def canon(objs):
    return sorted(json.dumps(o, sort_keys=True, ensure_ascii=False) for o in objs)


def parse_lines(text):
    out = []
    for line in text.splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"unparsable line": line})
    return out


def build_java(block):
    """The java-build recipe offline first; online (once) when that fails."""
    offline = block.replace("mvn ", "mvn -o ", 1)
    p, secs = run_recipe(offline, "-")
    if p.returncode == 0:
        return p, secs, "offline"
    for attempt in range(3):
        p, secs = run_recipe(block, "-", timeout=900)
        if p.returncode == 0:
            return p, secs, "fetched"
        time.sleep(5)
    return p, secs, "failed"


def main():
    require_kafka()
    blocks = recipes()
    check("READING.md has the java-build, java, python and shell recipes",
          {"java-build", "java", "python", "shell"} <= set(blocks), str(sorted(blocks)))
    for name in ("java", "python", "shell"):
        check(f"the {name} recipe reads $BROKERS and $TOPIC",
              '"$BROKERS"' in blocks.get(name, "") and '"$TOPIC"' in blocks.get(name, ""))

    p, secs, how = build_java(blocks.get("java-build", "false"))
    check(f"java-build recipe ({how}, {secs:.1f} s)", p.returncode == 0,
          (p.stdout + p.stderr)[-1500:])

    stamp = f"{os.getpid()}.{int(time.time() * 1000)}"
    topic, bad_topic = f"lwtest.reading.{stamp}", f"lwtest.reading.bad.{stamp}"
    try:
        create_topic(topic, 3)
        create_topic(bad_topic, 1)
        # v2 events through Loanwire's producer
        feed = os.path.join(os.environ.get("LW_TMP_DIR", "/tmp"), f"reading.{stamp}.jsonl")
        r = run([f"{BIN}/loanwire-gen", "--events", "30", "--seed", str(os.getpid()), "-o", feed])
        check("gen: 30 events", r.returncode == 0, r.stderr)
        v2 = [json.loads(line) for line in open(feed)]
        os.unlink(feed)
        r = run([f"{BIN}/loanwire-produce", "-b", BOOT, "-t", topic, "-q", "-"],
                input="".join(json.dumps(e) + "\n" for e in v2[:20]), timeout=120)
        check("loanwire-produce: 20 v2 events delivered", r.returncode == 0, r.stderr)
        # v1 events as an older producer wrote them
        old = v2[20:]
        check("v1 records delivered",
              produce_raw(topic, [(e["borrower_id"], rec) for e, rec in zip(old, encode_v1(old))]))
        want = v2[:20] + [dict(e, annual_income_fen=None, term_months=None) for e in old]
        check("the feed has v2 events whose v2 fields are set (the v1 check can fail)",
              any(e["annual_income_fen"] is not None for e in v2[:20])
              and any(e["annual_income_fen"] is not None for e in old))

        # the bad topic: one good v2 record, then one of an unknown fingerprint
        good = json.dumps(v2[0]) + "\n"
        enc = subprocess.run([f"{BIN}/loanwire-avro", "encode"], input=good.encode(),
                             capture_output=True, timeout=60).stdout
        unknown = b"\xc3\x01" + bytes(8) + enc[10:]
        check("bad topic filled", produce_raw(bad_topic, [("k", enc), ("k", unknown)]))

        for name in ("java", "python", "shell"):
            block = blocks.get(name, "false")
            p, secs = run_recipe(block, topic)
            got = parse_lines(p.stdout)
            check(f"{name} recipe exits 0 ({secs:.1f} s)", p.returncode == 0, p.stderr[-800:])
            check(f"{name} recipe prints the {len(want)} produced events, v1 ones with nulls "
                  f"(got {len(got)})", canon(got) == canon(want),
                  "\n".join(sorted(set(canon(got)) ^ set(canon(want)))[:4]))
            check(f"{name} recipe keeps the field order of the schema",
                  bool(got) and list(got[0]) == list(want[0]), str(list(got[0]) if got else []))
            p, secs = run_recipe(block, bad_topic)
            got = parse_lines(p.stdout)
            check(f"{name} recipe on an unknown fingerprint: non-zero exit, the good event "
                  f"printed, the bad one named on stderr ({secs:.1f} s)",
                  p.returncode != 0 and canon(got) == canon([v2[0]]) and p.stderr.strip() != "",
                  f"rc {p.returncode} out {p.stdout[:200]} err {p.stderr[-300:]}")
    finally:
        delete_topic(topic)
        delete_topic(bad_topic)
    finish()


if __name__ == "__main__":
    main()
