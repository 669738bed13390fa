#!/usr/bin/env python3
"""test_exposure_metrics.py - loanwire-exposure's own /metrics, /healthz and
/readyz (--metrics-listen), and the maxmemory-policy check of every program
that talks to Redis, against the real Kafka and Redis of tests/run.sh.

  metrics    a consumer on a fresh topic: /readyz 503 before it has
             partitions, 200 after; events produced while it runs; counters
             scraped every 0.2 s never go back; consumed and applied end equal
             to the events produced; lag per partition ends at 0; build_info
             and librdkafka's gauges (broker rtt, cgrp state, partition lag,
             fetchq) present; the text parses strictly; /healthz 200
  eviction   CONFIG SET maxmemory-policy allkeys-lru (volatile-lru too):
             loanwire-exposure, loanwire-query and loanwire-alerts --source
             redis exit 1 naming the policy and --allow-eviction; with
             --allow-eviction each runs; the policy is restored afterwards
  acl        an ACL user denied CONFIG: the policy comes from INFO memory; denied
             INFO too: exit 1 saying which grant is missing; --allow-eviction runs
  cluster    (LOANWIRE_REDIS_CLUSTER) one master set to allkeys-lru: the
             exposure refuses and names that master; restored afterwards

Fails loudly when Kafka or Redis is missing; every process it starts, it stops.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from lwtest import BIN, BOOT, TMP, check, die, finish, require_kafka, run, topics_cmd  # noqa: E402

REDIS = os.environ.get("LOANWIRE_REDIS", "redis://127.0.0.1:6379")
CLUSTER = os.environ.get("LOANWIRE_REDIS_CLUSTER", "")
N_EVENTS = 6000


def host_port(url):
    m = re.match(r"redis://(?:[^@]*@)?([^:/]+):(\d+)", url)
    if not m:
        die(f"cannot parse Redis URL {url}")
    return m.group(1), int(m.group(2))


def rcli(port, *args, host="127.0.0.1"):
    r = run(["redis-cli", "-h", host, "-p", str(port), *args])
    if r.returncode != 0:
        die(f"redis-cli -p {port} {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip()


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers.get("Content-Type", "")


LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse(text):
    """Strict enough: every sample's family has HELP and TYPE before it."""
    typed, out = set(), {}
    for ln in text.splitlines():
        if ln.startswith("# HELP "):
            continue
        if ln.startswith("# TYPE "):
            typed.add(ln.split()[2])
            continue
        m = LINE.match(ln)
        if not m:
            raise ValueError(f"bad line {ln!r}")
        name = m.group(1)
        fam = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in typed and fam not in typed:
            raise ValueError(f"{name} has no TYPE before it")
        labels, rest = {}, m.group(3) or ""
        while rest:
            lm = LABEL.match(rest)
            if not lm:
                raise ValueError(f"bad labels in {ln!r}")
            labels[lm.group(1)] = lm.group(2)
            rest = rest[lm.end():]
        out[(name, frozenset(labels.items()))] = float(m.group(4))
    return out


def series(m, name):
    return {k[1]: v for k, v in m.items() if k[0] == name}


def one(m, name):
    s = series(m, name)
    return next(iter(s.values())) if len(s) == 1 else None


class Proc:
    def __init__(self, args, name):
        self.log = os.path.join(TMP, f"{name}-{os.getpid()}.log")
        self.fp = open(self.log, "w")
        self.p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.fp)

    def text(self):
        with open(self.log) as f:
            return f.read()

    def wait_log(self, pattern, secs=20):
        end = time.time() + secs
        while time.time() < end:
            m = re.search(pattern, self.text())
            if m:
                return m
            if self.p.poll() is not None:
                return re.search(pattern, self.text())
            time.sleep(0.05)
        return None

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.fp.close()
        return self.p.returncode


def part_metrics(topic):
    exp = Proc([f"{BIN}/loanwire-exposure", "-b", BOOT, "-t", topic, "--alerts-topic",
                topic + ".alerts", "--dlq-topic", topic + ".dlq", "--redis", REDIS, "-g",
                f"g-metrics-{os.getpid()}", "--metrics-listen", "127.0.0.1:0",
                "--no-alert-stream", "-X", "statistics.interval.ms=500"], "exp-metrics")
    try:
        m = exp.wait_log(r"metrics on http://\S+ \(port (\d+)\)")
        if not m:
            die("loanwire-exposure did not start its metrics listener:\n" + exp.text()[-2000:])
        port = int(m.group(1))
        st, body, _ = get(port, "/readyz")
        check("readyz 503 before any partition is assigned", st == 503, f"{st} {body}")
        st, body, _ = get(port, "/healthz")
        check("healthz 200 while starting", st == 200, f"{st} {body}")
        if not exp.wait_log(r"assigned \d+ partition", 30):
            die("the consumer got no partition:\n" + exp.text()[-2000:])
        gen = subprocess.Popen([f"{BIN}/loanwire-gen", "--kafka", "-b", BOOT, "-t", topic,
                                "-n", str(N_EVENTS), "--seed", str(100000 + os.getpid())],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        prev, scrapes, back, last = {}, 0, [], {}
        end = time.time() + 90
        while time.time() < end:
            st, body, ctype = get(port, "/metrics")
            if st != 200:
                check("/metrics answers 200", False, f"{st} {body[:200]}")
                break
            try:
                last = parse(body)
            except ValueError as e:
                check("/metrics parses as Prometheus text", False, str(e))
                break
            scrapes += 1
            for k, v in last.items():
                if k[0].endswith("_total") and k in prev and v < prev[k]:
                    back.append((k, prev[k], v))
            prev = last
            lags = series(last, "loanwire_exposure_consumer_lag")
            if (gen.poll() is not None and
                    one(last, "loanwire_exposure_events_consumed_total") == N_EVENTS and
                    len(lags) == 6 and all(v == 0 for v in lags.values()) and
                    series(last, "loanwire_rdkafka_partition_consumer_lag")):
                break
            time.sleep(0.2)
        gen_err = gen.communicate()[1]
        check("loanwire-gen produced the feed", gen.returncode == 0, gen_err[-500:])
        check("the text parsed on every scrape", scrapes > 3, f"{scrapes} scrapes")
        check("content type is Prometheus text 0.0.4", "version=0.0.4" in ctype, ctype)
        check("no counter went back across scrapes", not back, str(back[:3]))
        consumed = one(last, "loanwire_exposure_events_consumed_total")
        applied = one(last, "loanwire_exposure_events_applied_total")
        dup = one(last, "loanwire_exposure_events_duplicate_total")
        check("events consumed equal the events produced", consumed == N_EVENTS,
              f"{consumed} != {N_EVENTS}")
        stale = one(last, "loanwire_exposure_events_stale_total")
        dead = sum(series(last, "loanwire_exposure_dead_letters_total").values())
        check("applied + duplicate + stale + dead letters equal the events produced",
              None not in (applied, dup, stale) and applied + dup + stale + dead == N_EVENTS,
              f"{applied} + {dup} + {stale} + {dead}")
        check("a fresh feed (its own seed) is applied", applied and applied > N_EVENTS // 2,
              f"{applied}")
        lags = series(last, "loanwire_exposure_consumer_lag")
        check("lag of each of the 6 partitions goes to 0",
              len(lags) == 6 and all(v == 0 for v in lags.values()), str(lags))
        check("partitions_assigned 6", one(last, "loanwire_exposure_partitions_assigned") == 6)
        bi = series(last, "loanwire_build_info")
        check("loanwire_build_info{version=...} 1",
              len(bi) == 1 and dict(next(iter(bi))).get("version") and
              next(iter(bi.values())) == 1, str(bi))
        alerts = series(last, "loanwire_exposure_alerts_total")
        check("alerts by rule present and some fired", alerts and sum(alerts.values()) > 0,
              str(alerts))
        for fam in ("loanwire_rdkafka_broker_rtt_avg_seconds", "loanwire_rdkafka_cgrp_state",
                    "loanwire_rdkafka_partition_consumer_lag",
                    "loanwire_rdkafka_partition_fetchq_messages",
                    "loanwire_rdkafka_broker_outbuf_requests"):
            check(f"librdkafka gauge {fam} present", bool(series(last, fam)))
        cg = series(last, "loanwire_rdkafka_cgrp_state")
        check("cgrp state is up", any(dict(k).get("state") == "up" for k in cg), str(cg))
        st, body, _ = get(port, "/readyz")
        check("readyz 200 once assigned and caught up", st == 200, f"{st} {body}")
        st, body, _ = get(port, "/healthz")
        check("healthz 200", st == 200, f"{st} {body}")
        st, _, _ = get(port, "/nope")
        check("unknown path 404", st == 404)
    finally:
        rc = exp.stop()
    check("loanwire-exposure exits 0 on SIGTERM", rc == 0, exp.text()[-1500:])
    ts = re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO loanwire-exposure: ", exp.text())
    check("log lines start with an RFC 3339 UTC timestamp", bool(ts), exp.text()[:200])


def refused(args, name, policy):
    r = run(args, timeout=60)
    check(f"{name} refuses {policy}: exit 1", r.returncode == 1, f"rc {r.returncode} {r.stderr[-600:]}")
    check(f"{name} says why and how", f"maxmemory-policy is {policy}" in r.stderr and
          "--allow-eviction" in r.stderr, r.stderr[-600:])


def part_eviction(topic, rport):
    orig = rcli(rport, "CONFIG", "GET", "maxmemory-policy").splitlines()[-1]
    common = ["-b", BOOT, "-t", topic, "--alerts-topic", topic + ".alerts", "--dlq-topic",
              topic + ".dlq", "--redis", REDIS, "-g", f"g-evict-{os.getpid()}"]
    exp = [f"{BIN}/loanwire-exposure", *common, "--exit-on-idle", "2", "--no-alert-stream"]
    qry = [f"{BIN}/loanwire-query", "--redis", REDIS, "--no-auth", "--listen", "127.0.0.1:0"]
    alr = [f"{BIN}/loanwire-alerts", "--source", "redis", "--redis", REDIS, "--json"]
    try:
        for policy in ("allkeys-lru", "volatile-lru"):
            rcli(rport, "CONFIG", "SET", "maxmemory-policy", policy)
            refused(exp, "loanwire-exposure", policy)
            refused(qry, "loanwire-query", policy)
            refused(alr, "loanwire-alerts --source redis", policy)
        rcli(rport, "CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
        r = run(exp + ["--allow-eviction", "--log-format", "json"], timeout=120)
        check("--allow-eviction: loanwire-exposure runs and exits 0", r.returncode == 0,
              r.stderr[-800:])
        check("--allow-eviction: it warns, as JSON", '"level":"warn"' in r.stderr and
              "allkeys-lru" in r.stderr and r.stderr.lstrip().startswith('{"time":"'),
              r.stderr[:400])
        q = Proc(qry + ["--allow-eviction"], "qry-evict")
        up = q.wait_log(r"listening on", 20)
        rc = q.stop()
        check("--allow-eviction: loanwire-query starts and stops cleanly", up and rc == 0,
              q.text()[-800:])
        r = run(alr + ["--allow-eviction"], timeout=60)
        check("--allow-eviction: loanwire-alerts --source redis runs", r.returncode == 0,
              r.stderr[-600:])
        r = run([f"{BIN}/loanwire-alerts", "--source", "kafka", "-b", BOOT, "-t",
                 topic + ".alerts", "-n", "1", "--json"], timeout=60)
        check("loanwire-alerts --source kafka does not read Redis's policy",
              "maxmemory-policy" not in r.stderr, r.stderr[-400:])
    finally:
        rcli(rport, "CONFIG", "SET", "maxmemory-policy", orig)
    check("the policy is restored", rcli(rport, "CONFIG", "GET", "maxmemory-policy")
          .splitlines()[-1] == orig)


def part_acl(rport):
    """CONFIG denied: INFO memory is read instead; both denied: a clear refusal."""
    host, _ = host_port(REDIS)
    user, pw = f"lwevict{os.getpid()}", "s3cret-evict"
    url = f"redis://{user}:{pw}@{host}:{rport}"
    alr = [f"{BIN}/loanwire-alerts", "--source", "redis", "--redis", url, "--json"]
    try:
        rcli(rport, "ACL", "SETUSER", user, "reset", "on", ">" + pw, "~*", "&*", "+@all",
             "-config")
        r = run(alr, timeout=60)
        check("CONFIG denied by ACL: the policy is read from INFO memory (runs)",
              r.returncode == 0, r.stderr[-600:])
        # INFO cluster stays allowed: every program needs it to tell a cluster from one Redis
        rcli(rport, "ACL", "SETUSER", user, "-info", "+info|cluster")
        r = run(alr, timeout=60)
        check("CONFIG and INFO denied: exit 1", r.returncode == 1, r.stderr[-600:])
        check("CONFIG and INFO denied: says which grants are missing",
              "cannot read maxmemory-policy" in r.stderr and "+config|get" in r.stderr and
              "--allow-eviction" in r.stderr, r.stderr[-600:])
        r = run(alr + ["--allow-eviction"], timeout=60)
        check("CONFIG and INFO denied, --allow-eviction: runs", r.returncode == 0,
              r.stderr[-600:])
    finally:
        rcli(rport, "ACL", "DELUSER", user)


def part_cluster(topic):
    host, port = host_port(CLUSTER)
    masters = [ln.split()[1].split("@")[0] for ln in rcli(port, "CLUSTER", "NODES").splitlines()
               if "master" in ln.split()[2] and "fail" not in ln.split()[2]]
    check("the cluster has 3 masters or more", len(masters) >= 3, str(masters))
    victim = masters[-1]
    vport = int(victim.rsplit(":", 1)[1])
    orig = rcli(vport, "CONFIG", "GET", "maxmemory-policy").splitlines()[-1]
    args = [f"{BIN}/loanwire-exposure", "-b", BOOT, "-t", topic, "--redis", CLUSTER,
            "-g", f"g-evict-cl-{os.getpid()}", "--exit-on-idle", "1"]
    try:
        rcli(vport, "CONFIG", "SET", "maxmemory-policy", "allkeys-lfu")
        r = run(args, timeout=60)
        check("cluster: one evicting master makes the exposure refuse (exit 1)",
              r.returncode == 1, r.stderr[-600:])
        check("cluster: the message names that master and its policy",
              f":{vport}: maxmemory-policy is allkeys-lfu" in r.stderr, r.stderr[-600:])
    finally:
        rcli(vport, "CONFIG", "SET", "maxmemory-policy", orig)


def main():
    host, rport = host_port(REDIS)
    try:
        socket.create_connection((host, rport), timeout=3).close()
    except OSError as e:
        die(f"Redis is not reachable at {REDIS} (LOANWIRE_REDIS): {e}; start ./deploy/stack.sh up")
    require_kafka()
    if not CLUSTER:
        die("LOANWIRE_REDIS_CLUSTER is not set: run through ./tests/run.sh")
    topic = f"lwtest.metrics.{os.getpid()}"
    r = topics_cmd("create", topic)
    if r.returncode != 0:
        die(f"loanwire-topics create: {r.stderr[-500:]}")
    try:
        part_metrics(topic)
        part_eviction(topic, rport)
        part_acl(rport)
        part_cluster(topic)
    finally:
        topics_cmd("delete", topic)
    finish()


if __name__ == "__main__":
    main()
