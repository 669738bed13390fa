#!/usr/bin/env python3
"""capacity.py - the national capacity plan (SCALE.md), computed from the figures the bench
measured (bench/results/figures.json, written by bench/bench.py --figures), never typed.

  python3 bench/capacity.py                       # bench/results -> SCALE.md
  python3 bench/capacity.py --results DIR --out FILE [--json FILE]

The load (--borrowers, --avg-rate, --peak-factor, --retention-years) and every planning
assumption (hardware per node, utilisation targets, overheads) are options with defaults;
all of them are printed in the generated file beside the measured figures they combine
with, so a reader can redo any number. What is measured on this machine (CPU µs per
event, bytes per borrower, bytes per event) is taken as it is: a production core is
usually faster than this shared 2-core test machine, so the core counts are on the safe
side.

Exit status: 0 written, 1 a figure is missing or unusable (named), 2 usage error.
"""
import argparse
import json
import math
import os
import sys
import time

GB = 1e9
TB = 1e12
YEAR_S = 365.25 * 86400

# The figures this plan needs, by the bench step that measures each.
NEEDED = {
    "event_avro_bytes": "step 1 (producer)",
    "kafka_broker_us_per_event": "step 1 (producer)",
    "exposure_us_per_event": "step 2 (catch-up)",
    "redis_us_per_event": "step 2 (catch-up)",
    "bytes_per_borrower_2y_retained": "step 7 (retention)",
}


class PlanError(Exception):
    pass


def load_figures(results):
    path = os.path.join(results, "figures.json")
    try:
        fig = json.load(open(path))
    except OSError as e:
        raise PlanError("%s: %s (run bench/run.sh, which writes it)" % (path, e.strerror))
    except ValueError as e:
        raise PlanError("%s: not JSON: %s" % (path, e))
    for k, step in NEEDED.items():
        v = fig.get(k, {}).get("value") if isinstance(fig.get(k), dict) else None
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
            raise PlanError("%s: figure %s missing or not a positive number (measured by "
                            "bench %s)" % (path, k, step))
    return fig


def val(fig, k):
    return float(fig[k]["value"])


def plan(fig, a):
    """Every figure of the plan from the measured figures and the assumptions in a."""
    p = {}
    avg = a.avg_rate
    peak = a.avg_rate * a.peak_factor
    ev_bytes = val(fig, "event_avro_bytes") + a.record_overhead
    p["event_bytes_on_disk"] = ev_bytes
    p["peak_rate"] = peak

    # Kafka disk: every event kept retention_years, RF copies, plus the alert and
    # dead-letter topics (a share), disks filled to at most disk_fill.
    events_kept = avg * YEAR_S * a.retention_years
    logical = events_kept * ev_bytes * (1 + a.side_topics)
    p["kafka_events_kept"] = events_kept
    p["kafka_logical_tb"] = logical / TB
    p["kafka_disk_tb"] = logical * a.rf / a.disk_fill / TB
    # Brokers: the most of disk, network and CPU.
    by_disk = math.ceil(p["kafka_disk_tb"] / a.broker_disk_tb)
    ingress = peak * ev_bytes  # producers -> leaders, bytes/s
    # a broker's NIC carries its share of: ingress, replication out (RF-1) and in (RF-1),
    # and consumer fetches (consumer_groups)
    nic_bytes = ingress * (1 + 2 * (a.rf - 1) + a.consumer_groups)
    by_net = math.ceil(nic_bytes * 8 / (a.broker_nic_gbit * 1e9 * a.nic_util))
    broker_cores = peak * val(fig, "kafka_broker_us_per_event") * a.rf / 1e6 / a.cpu_util
    by_cpu = math.ceil(broker_cores / a.broker_cores)
    p["kafka_brokers_by"] = {"disk": by_disk, "network": by_net, "cpu": by_cpu}
    p["kafka_brokers"] = max(3, by_disk, by_net, by_cpu)
    p["kafka_broker_cores_needed"] = broker_cores

    # Consumers: CPU µs per event at the peak, each process one core at cpu_util.
    cons_cores = peak * val(fig, "exposure_us_per_event") / 1e6 / a.cpu_util
    p["consumer_cores"] = math.ceil(cons_cores)
    p["consumer_processes"] = math.ceil(cons_cores)
    # Partitions: one consumer process per partition at most, and room to grow
    # partition_growth times without add-partitions (which moves keys).
    # ... and none longer than partition_max_tb (a replica moved or rebuilt after a
    # broker loss copies a whole partition).
    by_cons = math.ceil(p["consumer_processes"] * a.partition_growth)
    by_size = math.ceil(logical / (a.partition_max_tb * TB))
    p["kafka_partitions_by"] = {"consumers": by_cons, "size": by_size}
    parts = max(by_cons, by_size)
    parts = int(math.ceil(parts / p["kafka_brokers"]) * p["kafka_brokers"])
    p["kafka_partitions"] = parts

    # Redis Cluster: RAM from bytes per borrower (retained state), a replica each,
    # headroom for fork copy-on-write, fragmentation and growth; shards from the most
    # of memory per shard and CPU per shard.
    bpb = val(fig, "bytes_per_borrower_2y_retained")
    data = a.borrowers * bpb
    p["redis_data_gb"] = data / GB
    by_mem = math.ceil(data / (a.shard_data_gb * GB))
    redis_cores = peak * val(fig, "redis_us_per_event") / 1e6 / a.cpu_util
    by_rcpu = math.ceil(redis_cores)
    p["redis_cores_needed"] = redis_cores
    p["redis_shards_by"] = {"memory": by_mem, "cpu": by_rcpu}
    p["redis_shards"] = max(3, by_mem, by_rcpu)
    p["redis_ram_per_node_gb"] = data / p["redis_shards"] * a.redis_headroom / GB
    p["redis_ram_total_gb"] = data * (1 + a.redis_replicas) * a.redis_headroom / GB
    p["redis_nodes"] = p["redis_shards"] * (1 + a.redis_replicas)

    # Network: Kafka as above; consumer <-> Redis: a borrower's state read and written
    # per event (bounded by its bytes in Redis), and the replica stream.
    p["kafka_ingress_gbit_peak"] = ingress * 8 / 1e9
    p["kafka_cluster_gbit_peak"] = nic_bytes * 8 / 1e9
    redis_bytes = peak * (2 * bpb + a.redis_cmd_overhead)
    p["redis_gbit_peak"] = redis_bytes * (1 + a.redis_replicas) * 8 / 1e9
    return p


# What each input drives first, and what to change when it doubles.
LEVERS = [
    ("borrowers", "borrowers", "Redis memory: add shards (CLUSTER ADDSLOTS / "
     "reshard while serving); Kafka and consumers do not move"),
    ("avg_rate", "average events/s (and so the peak)", "consumer processes first (up to one "
     "per partition), then Redis shards by CPU, then Kafka disk and brokers"),
    ("retention_years", "topic retention", "Kafka disk only: more or larger disks per "
     "broker, or tiered storage; nothing else moves"),
    ("event_avro_bytes", "bytes per event", "Kafka disk and network: brokers by disk, "
     "and compression (zstd) before more brokers"),
    ("exposure_us_per_event", "consumer CPU per event", "consumer processes and cores; "
     "partitions when processes pass them (add-partitions moves keys: plan ahead)"),
    ("bytes_per_borrower_2y_retained", "bytes per borrower", "Redis memory: a shorter "
     "--retain-ended first (settled loans), then shards"),
]


def doubled(fig, a):
    base = plan(fig, a)
    out = []
    for key, what, first in LEVERS:
        a2 = argparse.Namespace(**vars(a))
        f2 = json.loads(json.dumps(fig))
        if hasattr(a2, key):
            setattr(a2, key, getattr(a2, key) * 2)
        else:
            f2[key]["value"] = f2[key]["value"] * 2
        p2 = plan(f2, a2)
        moved = []
        for k in ("kafka_brokers", "kafka_partitions", "kafka_disk_tb", "consumer_processes",
                  "redis_shards", "redis_ram_total_gb", "kafka_cluster_gbit_peak",
                  "redis_gbit_peak"):
            if abs(p2[k] - base[k]) > 1e-9:
                moved.append("%s %s -> %s" % (k, fmt(base[k]), fmt(p2[k])))
        out.append((what, moved, first))
    return out


def fmt(x):
    if isinstance(x, int):
        return "{:,}".format(x)
    if abs(x) >= 100:
        return "{:,.0f}".format(x)
    return "%.2f" % x


def render(fig, a, p, src):
    L = []
    w = L.append
    w("# SCALE.md — the national capacity plan")
    w("")
    w("<!-- generated by bench/capacity.py from %s on %s; do not edit by hand: rerun "
      "`python3 bench/capacity.py` after bench/run.sh -->" % (
          src, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
    w("")
    w("Every number below is computed by `bench/capacity.py` from the figures the bench "
      "measured on this machine (`bench/results/figures.json`) and the stated inputs and "
      "assumptions. Change an assumption with its option and rerun; never edit a number.")
    w("")
    w("## Inputs")
    w("")
    w("| input | value |")
    w("|---|---|")
    w("| borrowers | %s |" % fmt(int(a.borrowers)))
    w("| average events/s | %s |" % fmt(int(a.avg_rate)))
    w("| peak factor (Double 11) | %g× → %s events/s |" % (a.peak_factor, fmt(int(p["peak_rate"]))))
    w("| topic retention | %g years |" % a.retention_years)
    w("")
    w("## Measured figures used (bench/results/figures.json)")
    w("")
    w("| figure | value | how measured | when | quick run? |")
    w("|---|---|---|---|---|")
    for k in sorted(fig):
        f = fig[k]
        v = f.get("value")
        vs = json.dumps(v) if isinstance(v, dict) else fmt(v) if isinstance(v, (int, float)) \
            else str(v)
        w("| %s | %s | %s | %s | %s |" % (k, vs, f.get("how", ""), f.get("at", ""),
                                          "yes" if f.get("quick") else "no"))
    w("")
    w("## Assumptions")
    w("")
    for line in assumptions(a, p):
        w("- " + line)
    w("")
    w("## The plan")
    w("")
    w("| part | figure | how |")
    w("|---|---|---|")
    w("| Kafka | %s partitions | the most of: %s consumer processes × %g growth room = %s, "
      "and %s TB of records ÷ %g TB a partition = %s; rounded up to a multiple of the "
      "brokers |" % (fmt(p["kafka_partitions"]), fmt(p["consumer_processes"]),
                     a.partition_growth, fmt(p["kafka_partitions_by"]["consumers"]),
                     fmt(p["kafka_logical_tb"]), a.partition_max_tb,
                     fmt(p["kafka_partitions_by"]["size"])))
    w("| Kafka | %s brokers | the most of: by disk %s, by network %s, by CPU %s (at least 3) |"
      % (fmt(p["kafka_brokers"]), fmt(p["kafka_brokers_by"]["disk"]),
         fmt(p["kafka_brokers_by"]["network"]), fmt(p["kafka_brokers_by"]["cpu"])))
    w("| Kafka | %s TB disk (%s TB of records) | %s events kept × %s bytes × (1 + %g side "
      "topics) × RF %d ÷ %g fill |" % (
          fmt(p["kafka_disk_tb"]), fmt(p["kafka_logical_tb"]), fmt(p["kafka_events_kept"]),
          fmt(p["event_bytes_on_disk"]), a.side_topics, a.rf, a.disk_fill))
    w("| consumers | %s processes, %s cores | peak × exposure µs/event ÷ %g utilisation, one "
      "core a process |" % (fmt(p["consumer_processes"]), fmt(p["consumer_cores"]), a.cpu_util))
    w("| Redis Cluster | %s shards (%s nodes with %d replica(s) each) | the most of: by memory "
      "%s (≤ %g GB data a shard), by CPU %s (peak × redis µs/event ÷ %g) |" % (
          fmt(p["redis_shards"]), fmt(p["redis_nodes"]), a.redis_replicas,
          fmt(p["redis_shards_by"]["memory"]), a.shard_data_gb, fmt(p["redis_shards_by"]["cpu"]),
          a.cpu_util))
    w("| Redis Cluster | %s GB RAM in all, %s GB a node | %s GB of state (borrowers × bytes "
      "per borrower) × (1 + %d replicas) × %g headroom |" % (
          fmt(p["redis_ram_total_gb"]), fmt(p["redis_ram_per_node_gb"]), fmt(p["redis_data_gb"]),
          a.redis_replicas, a.redis_headroom))
    w("| network | %s Gbit/s producer ingress at peak; %s Gbit/s across the Kafka cluster | "
      "ingress × (1 + 2×(RF−1) replication + %d consumer group(s)) |" % (
          fmt(p["kafka_ingress_gbit_peak"]), fmt(p["kafka_cluster_gbit_peak"]),
          a.consumer_groups))
    w("| network | %s Gbit/s consumers ↔ Redis at peak | peak × (2 × bytes per borrower + %d "
      "bytes of command) × (1 + replicas) |" % (fmt(p["redis_gbit_peak"]), a.redis_cmd_overhead))
    w("")
    if a.retention_years < a.negative_years:
        w("**Caveat:** %g years of topic retention is shorter than the %g years negative "
          "records stay in borrower state (`--retain-negative`): a rebuild of the state from "
          "the topic alone would lose write-offs that ended %g to %g years before. Either keep "
          "the topic %g years (disk × %.2f: %s TB) or rely on Redis persistence and backups "
          "for them (consumers/README.md, \"Retention of ended loans\")." % (
              a.retention_years, a.negative_years, a.retention_years, a.negative_years,
              a.negative_years, a.negative_years / a.retention_years,
              fmt(p["kafka_disk_tb"] * a.negative_years / a.retention_years)))
        w("")
    w("## When a figure doubles: what to change first")
    w("")
    w("| input doubled | plan figures that move | change first |")
    w("|---|---|---|")
    for what, moved, first in doubled(fig, a):
        w("| %s | %s | %s |" % (what, "; ".join(moved) or "none", first))
    w("")
    sims = sorted((k for k in fig if k.startswith("memsim_")),
                  key=lambda k: fig[k]["value"]["borrowers"])
    w("## The memory model, checked by simulation")
    w("")
    if not sims:
        w("No simulation in the results (bench step 8 not run).")
    else:
        w("Bench step 8 rebuilt step 7's retained borrower states (2 simulated years, "
          "retention defaults) for N borrowers through the real store "
          "(`loanwire-exposure-bench` into an empty Redis) and read INFO used_memory; the "
          "model predicts N × bytes per borrower.")
        w("")
        w("| borrowers | events applied | measured used_memory | model | measured ÷ model |")
        w("|---|---|---|---|---|")
        for k in sims:
            s = fig[k]["value"]
            w("| %s | %s | %s MB | %s MB | %.3f |" % (
                fmt(int(s["borrowers"])), fmt(int(s["events"])), fmt(s["used_memory"] / 1e6),
                fmt(s["predicted"] / 1e6), s["used_memory"] / s["predicted"]))
        biggest = fig[sims[-1]]["value"]
        ratio = biggest["used_memory"] / biggest["predicted"]
        w("")
        w("At %s borrowers the store used %.1f %% %s than the model. Extrapolated to %s "
          "borrowers with that ratio: %s GB of state before replicas and headroom (the "
          "plan uses the model's %s GB)." % (
              fmt(int(biggest["borrowers"])), abs(ratio - 1) * 100,
              "more" if ratio > 1 else "less", fmt(int(a.borrowers)),
              fmt(p["redis_data_gb"] * ratio), fmt(p["redis_data_gb"])))
        if biggest["borrowers"] < 10e6:
            w("")
            w("The simulation ran at %s borrowers, not 10 million: on this shared, loaded "
              "2-core machine a load of %s borrowers took %.0f s, and 10 million did not fit the "
              "time available. Not verified here: that the ratio holds at a shard's size "
              "(~%s borrowers a shard in this plan). What can change it is Redis's main "
              "dict, whose bucket array (8 bytes a slot) is sized to the next power of two "
              "of the key count: between 8 and 16 bytes a key at any size, so up to ~16 "
              "bytes a borrower either way." % (
                  " and ".join(fmt(int(fig[k]["value"]["borrowers"])) for k in sims),
                  fmt(int(fig[sims[0]]["value"]["borrowers"])),
                  fig[sims[0]]["value"].get("seconds", 0),
                  fmt(int(a.borrowers / p["redis_shards"]))))
    w("")
    return "\n".join(L) + "\n"


def assumptions(a, p):
    return [
        "Event size on disk = the bench's mean single-object Avro record + %d bytes of Kafka "
        "record overhead (22-byte key, the lw-sent-us header, varint lengths, batch header "
        "share); no compression (zstd would shrink it)." % a.record_overhead,
        "Alert and dead-letter topics add %g %% to the event topic's bytes." % (
            100 * a.side_topics),
        "Replication factor %d, min.insync.replicas 2; disks filled to at most %g %%." % (
            a.rf, 100 * a.disk_fill),
        "A broker: %g TB of usable disk, %d cores, a %g Gbit/s NIC used to %g %%." % (
            a.broker_disk_tb, a.broker_cores, a.broker_nic_gbit, 100 * a.nic_util),
        "Broker CPU per event = the bench's single broker (RF 1) cost × RF (each replica "
        "writes it once more).",
        "%d consumer group(s) read the event topic (loanwire-exposure; more readers add "
        "network, not disk)." % a.consumer_groups,
        "Cores run at most %g %% busy at the peak; a consumer process is one core (it "
        "applies events on one thread); CPU µs per event measured on this 2-core machine, taken as "
        "is." % (100 * a.cpu_util),
        "Partitions: %g× the consumer processes at the peak, so the group can grow that "
        "much before `loanwire-topics add-partitions` (which moves keys to other "
        "partitions), and at most %g TB of records a partition (a replica rebuilt after "
        "a broker loss copies a whole partition)." % (a.partition_growth, a.partition_max_tb),
        "Redis: bytes per borrower from 2 simulated years with retention (90 d settled, 5 y "
        "negative), alert hashes included; ≤ %g GB of data a shard (fork and full resync "
        "stay short); %d replica(s) a shard; %g× headroom (fork copy-on-write, "
        "fragmentation, growth)." % (a.shard_data_gb, a.redis_replicas, a.redis_headroom),
        "Redis CPU per event from the single-Redis catch-up; a shard's master is one core. "
        "On a Redis Cluster the bench's step 6 measured more per event (BENCHMARKS.md); with "
        "these inputs CPU binds only at %.1f× the measured cost (memory binds first)." % (
            p["redis_shards_by"]["memory"] / max(1e-9, p["redis_cores_needed"])),
        "Consumer ↔ Redis traffic per event: the borrower's state read and written, bounded "
        "by its bytes in Redis, + %d bytes of command framing." % a.redis_cmd_overhead,
    ]


def main(argv=None):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=os.path.join(root, "bench", "results"),
                    help="folder with figures.json (default bench/results)")
    ap.add_argument("--out", default=os.path.join(root, "SCALE.md"), help="default SCALE.md")
    ap.add_argument("--json", help="also write the plan's figures as JSON here")
    g = ap.add_argument_group("load")
    g.add_argument("--borrowers", type=float, default=1.2e9)
    g.add_argument("--avg-rate", type=float, default=100000, help="events/s on average")
    g.add_argument("--peak-factor", type=float, default=10)
    g.add_argument("--retention-years", type=float, default=3)
    g.add_argument("--negative-years", type=float, default=5,
                   help="loanwire-exposure --retain-negative, in years (default 5)")
    g = ap.add_argument_group("assumptions")
    g.add_argument("--rf", type=int, default=3)
    g.add_argument("--record-overhead", type=int, default=70)
    g.add_argument("--side-topics", type=float, default=0.05)
    g.add_argument("--disk-fill", type=float, default=0.7)
    g.add_argument("--broker-disk-tb", type=float, default=48)
    g.add_argument("--broker-cores", type=int, default=32)
    g.add_argument("--broker-nic-gbit", type=float, default=25)
    g.add_argument("--nic-util", type=float, default=0.5)
    g.add_argument("--consumer-groups", type=int, default=1)
    g.add_argument("--cpu-util", type=float, default=0.6)
    g.add_argument("--partition-growth", type=float, default=2)
    g.add_argument("--partition-max-tb", type=float, default=2)
    g.add_argument("--shard-data-gb", type=float, default=25)
    g.add_argument("--redis-replicas", type=int, default=1)
    g.add_argument("--redis-headroom", type=float, default=1.5)
    g.add_argument("--redis-cmd-overhead", type=int, default=100)
    a = ap.parse_args(argv)
    for k in ("borrowers", "avg_rate", "peak_factor", "retention_years", "disk_fill",
              "broker_disk_tb", "broker_nic_gbit", "nic_util", "cpu_util", "shard_data_gb",
              "redis_headroom", "partition_growth", "partition_max_tb"):
        if not getattr(a, k) > 0:
            ap.error("--%s must be > 0" % k.replace("_", "-"))
    try:
        fig = load_figures(a.results)
        p = plan(fig, a)
    except PlanError as e:
        print("capacity.py: %s" % e, file=sys.stderr)
        return 1
    src = os.path.relpath(os.path.join(a.results, "figures.json"), root) \
        if os.path.abspath(a.results).startswith(root) else os.path.join(a.results,
                                                                         "figures.json")
    with open(a.out, "w") as f:
        f.write(render(fig, a, p, src))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(p, f, indent=1, sort_keys=True)
            f.write("\n")
    print("capacity.py: %s written (%s brokers, %s partitions, %s consumer processes, %s "
          "Redis shards)" % (a.out, fmt(p["kafka_brokers"]), fmt(p["kafka_partitions"]),
                             fmt(p["consumer_processes"]), fmt(p["redis_shards"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
