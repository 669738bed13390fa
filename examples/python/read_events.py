#!/usr/bin/env python3
"""read_events.py - reads Loanwire's loan events from Kafka with stock
libraries (PyPI: confluent-kafka, fastavro) and prints each as one line of
JSON.

Loanwire writes Avro single-object encoding: C3 01, the writer schema's
CRC-64-AVRO fingerprint (8 bytes, little-endian), then the datum. fastavro has
no single-object reader, so this takes the 10-byte header apart itself, picks
the writer schema by its fingerprint among every LoanEvent version under the
schemas folder (schemas/ and schemas/v1/), and lets fastavro resolve that
writer to the current (reader) schema: events of an older writer get the
reader's defaults (null for v2's annual_income_fen and term_months).

    python3 read_events.py BROKERS TOPIC SCHEMAS_DIR [LIMIT]

Reads every partition from its beginning to the end it has at the start (or
LIMIT events), then exits: 0 when every record decoded, 1 when some did not
(each named on stderr with partition and offset), 2 on usage. A service would
subscribe with a group.id instead and keep polling.
"""
import io
import json
import os
import sys

import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

LOAN_EVENT = "loanwire.v1.LoanEvent"
MAGIC = b"\xc3\x01"
HEADER = 10  # C3 01 + 8-byte fingerprint


def plain(schema):
    """The schema without logicalType, so timestamp-millis stays epoch ms (as in
    Loanwire's JSON form) instead of a datetime. The fingerprint is unchanged:
    the canonical form leaves logicalType out."""
    if isinstance(schema, dict):
        return {k: plain(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [plain(s) for s in schema]
    return schema


def load_versions(folder):
    """{wire fingerprint (8 bytes): parsed schema} for every LoanEvent version."""
    versions = {}
    for root, _, names in os.walk(folder):
        for name in sorted(names):
            if not name.endswith(".avsc"):
                continue
            with open(os.path.join(root, name)) as f:
                schema = parse_schema(plain(json.load(f)))
            if schema.get("name") != LOAN_EVENT:
                continue
            # fastavro prints the fingerprint as hex in wire order
            fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))
            versions[fp] = schema
    return versions


def main():
    if len(sys.argv) not in (4, 5):
        print("usage: read_events.py BROKERS TOPIC SCHEMAS_DIR [LIMIT]", file=sys.stderr)
        return 2
    brokers, topic, folder = sys.argv[1:4]
    limit = int(sys.argv[4]) if len(sys.argv) == 5 else None
    with open(os.path.join(folder, "LoanEvent.avsc")) as f:
        reader = parse_schema(plain(json.load(f)))
    writers = load_versions(folder)

    c = Consumer({"bootstrap.servers": brokers, "group.id": "loanwire-read-events",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    parts = c.list_topics(topic, timeout=30).topics[topic].partitions
    ends = {}
    for p in parts:
        low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
        if high > low:
            ends[p] = high
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    bad = printed = 0
    while ends and (limit is None or printed < limit):
        m = c.poll(1.0)
        if m is None or m.error():
            continue  # partition EOF, or nothing yet
        if m.partition() not in ends or m.offset() >= ends[m.partition()]:
            continue  # written after we started
        value = m.value()
        writer = writers.get(value[2:HEADER]) if value[:2] == MAGIC else None
        if writer is None:
            print(f"{topic}/{m.partition()}@{m.offset()}: not single-object Avro of a known "
                  f"LoanEvent version", file=sys.stderr)
            bad += 1
        else:
            try:
                buf = io.BytesIO(value[HEADER:])
                event = fastavro.schemaless_reader(buf, writer, reader)
                if buf.read(1):
                    raise ValueError("bytes left after the datum")
                print(json.dumps(event, ensure_ascii=False, separators=(",", ":")))
                printed += 1
            except Exception as e:  # noqa: BLE001 - a bad record is reported, not fatal
                print(f"{topic}/{m.partition()}@{m.offset()}: {e}", file=sys.stderr)
                bad += 1
        if m.offset() + 1 >= ends[m.partition()]:
            del ends[m.partition()]
    c.close()
    sys.stdout.flush()
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
