#!/usr/bin/env python3
"""test_capacity.py - bench/capacity.py on a fixture results folder, no servers.

  1. Every figure of the plan is recomputed here by hand from the fixture's figures and
     the default assumptions, and must match the generated JSON and appear in SCALE.md.
  2. The inputs move the plan: twice the borrowers, twice the Redis memory.
  3. A missing figure is refused (exit 1) with the figure's name and the bench step that
     measures it; nothing is written.
"""
import json
import math
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CAP = os.path.join(ROOT, "bench", "capacity.py")
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


FIG = {
    "event_avro_bytes": 230,
    "kafka_broker_us_per_event": 3.0,
    "exposure_us_per_event": 4.0,
    "redis_us_per_event": 10.0,
    "bytes_per_borrower_2y_retained": 380.0,
    "bytes_per_borrower_2y_kept": 400.0,
}


def run(d, *extra):
    out = os.path.join(d, "SCALE.md")
    js = os.path.join(d, "plan.json")
    for f in (out, js):
        if os.path.exists(f):
            os.unlink(f)
    p = subprocess.run([sys.executable, CAP, "--results", d, "--out", out, "--json", js] +
                       list(extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    plan = json.load(open(js)) if os.path.exists(js) else None
    md = open(out).read() if os.path.exists(out) else ""
    return p, plan, md


with tempfile.TemporaryDirectory() as d:
    figs = {k: {"value": v, "how": "fixture", "quick": False, "at": "2026-12-04T00:00:00Z"}
            for k, v in FIG.items()}
    figs["memsim_1000000"] = {"value": {"borrowers": 1000000, "used_memory": 390000000,
                                        "predicted": 380000000.0, "events": 1, "seconds": 1},
                              "how": "fixture"}
    json.dump(figs, open(os.path.join(d, "figures.json"), "w"))
    p, plan, md = run(d)
    check(p.returncode == 0, "capacity.py exits 0 on a complete results folder (%s)" %
          p.stderr.strip())
    # 1. by hand, with the defaults: 1.2e9 borrowers, 100k/s, 10x, 3 years, RF 3
    peak = 1e6
    ev = 230 + 70
    kept = 100000 * 365.25 * 86400 * 3
    disk_tb = kept * ev * 1.05 * 3 / 0.7 / 1e12
    by_disk = math.ceil(disk_tb / 48)
    nic = peak * ev * (1 + 2 * 2 + 1)
    by_net = math.ceil(nic * 8 / (25e9 * 0.5))
    by_cpu = math.ceil(peak * 3.0 * 3 / 1e6 / 0.6 / 32)
    brokers = max(3, by_disk, by_net, by_cpu)
    procs = math.ceil(peak * 4.0 / 1e6 / 0.6)
    by_size = math.ceil(kept * ev * 1.05 / 2e12)  # <= 2 TB of records a partition
    parts = math.ceil(max(procs * 2, by_size) / brokers) * brokers
    data = 1.2e9 * 380
    shards = max(3, math.ceil(data / 25e9), math.ceil(peak * 10.0 / 1e6 / 0.6))
    ram = data * 2 * 1.5 / 1e9
    if plan:
        check(abs(plan["kafka_disk_tb"] - disk_tb) < 1e-6 * disk_tb,
              "Kafka disk %.1f TB = events kept x (Avro + overhead) x 1.05 x RF / fill" %
              disk_tb)
        check(plan["kafka_brokers"] == brokers, "brokers %d (by disk %d, net %d, cpu %d)" % (
            brokers, by_disk, by_net, by_cpu))
        check(plan["consumer_processes"] == procs, "consumer processes %d" % procs)
        check(plan["kafka_partitions"] == parts, "partitions %d (by size %d)" % (parts, by_size))
        check(plan["redis_shards"] == shards, "Redis shards %d" % shards)
        check(abs(plan["redis_ram_total_gb"] - ram) < 1e-6 * ram, "Redis RAM %.0f GB" % ram)
    for text in ("{:,} partitions".format(parts), "{:,} brokers".format(brokers),
                 "{:,} shards".format(shards), "| 1,000,000 |", "do not edit",
                 "Assumptions", "not 10 million"):
        check(text in md, "SCALE.md says %r" % text)

    # 2. twice the borrowers: twice the state
    p2, plan2, _ = run(d, "--borrowers", "2.4e9")
    check(p2.returncode == 0 and plan2 and plan and
          abs(plan2["redis_ram_total_gb"] - 2 * plan["redis_ram_total_gb"]) < 1e-6 * ram,
          "2.4e9 borrowers: twice the Redis RAM")
    check(plan2 and plan and plan2["kafka_disk_tb"] == plan["kafka_disk_tb"],
          "2.4e9 borrowers: the same Kafka disk")

    # 3. a figure missing
    del figs["redis_us_per_event"]
    json.dump(figs, open(os.path.join(d, "figures.json"), "w"))
    p3, plan3, md3 = run(d)
    check(p3.returncode == 1, "a missing figure: exit 1 (got %d)" % p3.returncode)
    check("redis_us_per_event" in p3.stderr and "step 2" in p3.stderr,
          "the error names the figure and its bench step: %s" % p3.stderr.strip())
    check(plan3 is None and md3 == "", "nothing written when a figure is missing")

print("%d failure(s)" % len(failures))
sys.exit(1 if failures else 0)
