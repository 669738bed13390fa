#!/usr/bin/env python3
"""bench.py - Loanwire's benchmarks, each measured beside the raw limit of the part it is
built on, in the same run, on the same stack.

bench/run.sh starts the stack and calls this; run it directly only against a stack that is
already up (it FLUSHALLs the Redis it is given and creates topics on the Kafka it is given).

  1 producer   loanwire-produce (validate + encode + deliver) vs kcat with pre-encoded
               messages of the same size, same acks/idempotence/linger
  2 catch-up   loanwire-exposure --until-caught-up on step 1's topic, totals checked
               against an independent model; vs redis-cli --pipe of the same RESP commands
  3 latency    paced loanwire-gen --kafka with loanwire-exposure following live
               (--latency-out: producer hand-over -> Redis acknowledged)
  4 memory     Redis bytes per borrower with about three active loans each
  5 scale-out  the same topic with two loanwire-exposure processes in one group
  6 cluster    the same on a Redis Cluster of 3 masters
  7 retention  Redis bytes per borrower after 2 simulated years of loanwire-gen history,
               with ended loans kept for ever (today's state) and with the default
               retention (90 d settled, 5 y negative); totals checked equal
  8 memsim     the memory model checked: step 7's retained states copied to
               --memsim-borrowers borrowers through the real store, used_memory vs
               borrowers x step 7's bytes per borrower
  9 reconcile  loanwire-reconcile over a 1M-loan snapshot of one platform, plain and
               --full, on one Redis and on the cluster: loans reconciled per second
  10 inquiries the exposure look-up (wrk -t2 -c64, one borrower) with every look-up
               recorded as a credit inquiry on Kafka, beside the same look-up unrecorded
               (loanwire-query built from before issue 20, --lookup-base-bin); and the
               state string's bytes per borrower with 30-day vs 90-day rule windows

Measured figures also go to --figures (JSON, merged by key, each with when and how it
was measured): bench/capacity.py computes SCALE.md from them.

Every step checks its counts; a mismatch is a failure (exit 1). Times are printed, never
asserted. Progress goes to stderr, the markdown report to --out and stdout.
"""
import argparse
import datetime
import json
import os
import random
import re
import signal
import statistics
import string
import struct
import subprocess
import sys
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
T0 = time.monotonic()


class BenchError(Exception):
    pass


def say(msg):
    print("[%6.1fs] %s" % (time.monotonic() - T0, msg), file=sys.stderr, flush=True)


def fmt_int(n):
    return "{:,}".format(int(n))


def fmt_rate(r):
    return "{:,.0f}".format(r) if r is not None else "n/a"


# ---- Small Redis client (RESP over a socket; only what the checks need) ---------------

class Redis:
    def __init__(self, host, port):
        import socket
        self.s = socket.create_connection((host, port))
        self.f = self.s.makefile("rb")

    @staticmethod
    def enc(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def read(self):
        line = self.f.readline()
        if not line:
            raise BenchError("redis closed the connection")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest
        if t == b":":
            return int(rest)
        if t == b"-":
            raise BenchError("redis error: " + rest.decode(errors="replace"))
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2]
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise BenchError("redis: bad reply %r" % line)

    def cmd(self, *args):
        self.s.sendall(self.enc(args))
        return self.read()

    def info(self, section):
        txt = self.cmd("INFO", section).decode()
        d = {}
        for ln in txt.split("\r\n"):
            if ":" in ln and not ln.startswith("#"):
                k, v = ln.split(":", 1)
                d[k] = v
        return d


# ---- CPU sampling of the processes that matter -----------------------------------------

def proc_ticks(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return int(parts[11]) + int(parts[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


def machine_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), v[3] + v[4]  # total, idle + iowait


class CpuSampler:
    """Average and peak (per 1 s) CPU% of named processes while a step runs."""

    def __init__(self, fixed):
        self.fixed = dict(fixed)  # name -> pid
        self.extra = {}
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.first, self.last, self.peak, self.final = {}, {}, {}, {}
        self.th = None

    def add(self, name, pid):
        """A process just started by us: its CPU time so far is ~0."""
        with self.lock:
            self.extra[name] = pid
            self.first[name] = (time.monotonic(), 0)

    def _pids(self):
        with self.lock:
            d = dict(self.fixed)
            d.update(self.extra)
        return d

    def _sample(self):
        now = time.monotonic()
        for name, pid in self._pids().items():
            t = proc_ticks(pid)
            if t is None:
                continue
            if name not in self.first:
                self.first[name] = (now, t)
            prev = self.last.get(name)
            if prev and now - prev[0] >= 0.9:
                pct = 100.0 * (t - prev[1]) / CLK_TCK / (now - prev[0])
                self.peak[name] = max(self.peak.get(name, 0.0), pct)
                self.last[name] = (now, t)
            elif not prev:
                self.last[name] = (now, t)
            self.final[name] = (now, t)

    def _run(self):
        while not self.stop_ev.wait(0.25):
            self._sample()

    def __enter__(self):
        self.t_start = time.monotonic()
        self.m_start = machine_ticks()
        self._sample()
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        self.th.join()
        self._sample()
        self.wall = time.monotonic() - self.t_start
        m_end = machine_ticks()
        dt, di = m_end[0] - self.m_start[0], m_end[1] - self.m_start[1]
        self.machine_busy = 100.0 * (dt - di) / dt * os.cpu_count() if dt > 0 else 0.0
        return False

    def summary(self):
        """{name: (avg% over the step, peak% over 1 s)}; 100% = one core."""
        res = {}
        for name, (t1, k1) in self.first.items():
            # a process that ended before the first sample (a --quick step) counts as 0
            t2, k2 = self.final.get(name, (t1, k1))
            res[name] = (100.0 * (k2 - k1) / CLK_TCK / max(self.wall, 1e-3),
                         self.peak.get(name, 0.0))
        return res

    def us_per(self, name_prefix, n):
        """CPU microseconds per event spent by the processes whose name starts so."""
        tot = sum(a for k, (a, _) in self.summary().items() if k.startswith(name_prefix))
        return tot / 100.0 * self.wall * 1e6 / max(n, 1)

    def text(self):
        s = self.summary()
        parts = ["%s %.0f%% (peak %.0f%%)" % (n, a, p) for n, (a, p) in sorted(s.items())]
        others = max(0.0, self.machine_busy - sum(a for a, _ in s.values()))
        parts.append("everything else on the machine %.0f%%; machine %.0f%% of %d00%%" % (
            others, self.machine_busy, os.cpu_count()))
        return ", ".join(parts)


# ---- The bench ------------------------------------------------------------------------

class Bench:
    def __init__(self, a):
        self.a = a
        self.bin = a.bin
        self.bs = a.bootstrap
        self.rhost, self.rport = a.redis.split("//")[-1].split("/")[0].split(":")
        self.rport = int(self.rport)
        self.url = "redis://%s:%d" % (self.rhost, self.rport)
        self.r = Redis(self.rhost, self.rport)
        self.work = a.work
        os.makedirs(self.work, exist_ok=True)
        self.run_id = time.strftime("%Y%m%d%H%M%S")
        self.rows = []     # (step, what, ours, raw, ratio, target, met)
        self.notes = []    # free text lines for the report
        self.failed = []
        self.fixed_pids = {}
        for name, sub in (("kafka(java)", "kafka/pid"), ("redis-server", "redis/pid")):
            p = os.path.join(a.stack_dir, sub) if a.stack_dir else None
            if p and os.path.exists(p):
                self.fixed_pids[name] = int(open(p).read().strip())
        self.feed = os.path.join(self.work, "feed.jsonl")
        self.model = None
        self.fig = {}      # figure name -> value, for --figures (bench/capacity.py)

    def figure(self, name, value, how):
        self.fig[name] = {"value": value, "how": how, "quick": bool(self.a.quick),
                          "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    # -- helpers --

    def prog(self, name):
        return os.path.join(self.bin, name)

    def run(self, args, log=None, check=True, **kw):
        say("$ " + " ".join(args) if len(" ".join(args)) < 200 else "$ " + args[0] + " ...")
        out = open(log, "wb") if log else subprocess.DEVNULL
        try:
            rc = subprocess.call(args, stdout=kw.pop("stdout", out), stderr=out, **kw)
        finally:
            if log:
                out.close()
        if check and rc != 0:
            tail = open(log, errors="replace").read()[-1500:] if log else ""
            raise BenchError("%s exited %d\n%s" % (os.path.basename(args[0]), rc, tail))
        return rc

    @staticmethod
    def exited(p, cpu):
        """p.poll(), but first the CPU sampler reads the ended process (still a zombie)."""
        if p.returncode is None and cpu is not None:
            try:
                if os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                    cpu._sample()
            except ChildProcessError:
                pass
        return p.poll() is not None

    def wait_progress(self, procs, what, progress=None, period=5.0, timeout=3600, cpu=None):
        """Waits for every process, printing elapsed time and progress() every period."""
        start = time.monotonic()
        nxt = start + period
        while not all([self.exited(p, cpu) for p in procs]):
            time.sleep(0.05)
            now = time.monotonic()
            if now - start > timeout:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
                raise BenchError("%s: still running after %d s, killed" % (what, timeout))
            if now >= nxt:
                nxt += period
                extra = ""
                if progress:
                    try:
                        extra = " " + progress()
                    except Exception as e:  # progress is cosmetic
                        extra = " (%s)" % e
                say("  %s: %.0f s%s" % (what, now - start, extra))
        return time.monotonic() - start

    def topic_create(self, name, parts=6):
        self.run([self.prog("loanwire-topics"), "create", "-b", self.bs, "--partitions",
                  str(parts), "--events-topic", name, "--alerts-topic", name + ".alerts",
                  "--dlq-topic", name + ".dlq", "--inquiries-topic", name + ".inq"],
                 log=os.path.join(self.work, "topics.log"))

    def end_offsets(self, topic, parts=6):
        total = 0
        for p in range(parts):
            out = subprocess.run(["kcat", "-b", self.bs, "-Q", "-t", "%s:%d:-1" % (topic, p)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
            m = re.search(rb"offset (-?\d+)", out.stdout)
            if not m:
                raise BenchError("kcat -Q %s:%d: %s" % (topic, p, out.stderr.decode()[-300:]))
            total += int(m.group(1))
        return total

    def row(self, step, what, ours, raw="", ratio="", target="", met=""):
        self.rows.append((step, what, ours, raw, ratio, target, met))

    def exposure_args(self, topic, group, cid, extra=(), url=None):
        return [self.prog("loanwire-exposure"), "--brokers", self.bs, "--topic", topic,
                "--alerts-topic", topic + ".alerts", "--dlq-topic", topic + ".dlq",
                "--inquiries-topic", topic + ".inq", "--redis", url or self.url, "--group", group, "--consumer-id", cid,
                "--status", "5"] + list(extra)

    def redis_applied(self, cids):
        n = 0
        for cid in cids:
            h = self.r.cmd("HGETALL", "lw:metrics:" + cid) or []
            d = dict(zip(h[0::2], h[1::2]))
            for k in (b"events_consumed", b"consumed", b"events_applied"):
                if k in d:
                    n += int(d[k])
                    break
        return n

    @staticmethod
    def steady_rate(log):
        """Mean of the consumer's per-second status lines (--status 1), the first and the
        last left out (group join, the tail); None when the run was too short."""
        r = [int(x) for x in re.findall(r"loanwire-exposure: (\d+) ev/s",
                                         open(log, errors="replace").read())]
        return statistics.mean(r[1:-1]) if len(r) > 2 else None

    @staticmethod
    def check_applied(stats, n, nproc):
        """One consumer on an empty Redis applies every event of the feed once, or
        dead-letters it; with two, a rebalance may repeat some (duplicates)."""
        applied = sum(s.get("applied", 0) for s in stats)
        dead = sum(s.get("dead letters", 0) for s in stats)
        if (applied + dead != n) if nproc == 1 else (applied + dead < n):
            raise BenchError("consumers applied %d and dead-lettered %d of %d events" % (
                applied, dead, n))

    @staticmethod
    def parse_stopped(log):
        """'stopped after X s: consumed N applied N duplicates ...' -> dict."""
        txt = open(log, errors="replace").read()
        m = re.findall(r"stopped after [\d.]+ s: (.*)", txt)
        if not m:
            raise BenchError("no summary line in %s:\n%s" % (log, txt[-1500:]))
        # "...; inquiries consumed N applied N duplicates N; borrowers retried (...) N":
        # a later part's counters are named by its first words, so the inquiries'
        # "applied" does not overwrite the events' (it did: "applied 0" in step 2)
        d = {}
        for i, part in enumerate(m[-1].split(";")):
            part = re.sub(r"\([^)]*\)", "", part) if i else part
            prefix = ""
            for k, v in re.findall(r"([a-z][a-z -]*?) (\d+)", part):
                k = k.strip()
                if i and not prefix:
                    prefix = k.split(" ")[0] + " "
                    k = k.split(" ", 1)[1] if " " in k else k
                d[prefix + k] = int(v)
        return d

    # -- model ---------------------------------------------------------------------------

    def build_model(self):
        """Every borrower's total outstanding and active loans, from the JSON feed, by the
        same rules the bureau applies (latest sequence per loan wins; applications hold no
        balance; WRITE_OFF / CLOSURE end a loan; active = outstanding > 0)."""
        say("model: reading %s" % self.feed)
        loans = {}
        n = 0
        with open(self.feed) as f:
            for line in f:
                e = json.loads(line)
                n += 1
                b = e["borrower_id"]
                bl = loans.get(b)
                if bl is None:
                    bl = loans[b] = {}
                if e["event_type"] == "APPLICATION":
                    continue
                lk = e["platform_id"] + ":" + e["loan_id"]
                old = bl.get(lk)
                if old is not None and e["sequence"] <= old[0]:
                    continue
                et = e["event_type"]
                live = et not in ("WRITE_OFF", "CLOSURE") and e["outstanding_fen"] > 0
                bl[lk] = (e["sequence"], e["outstanding_fen"] if live else 0, live)
                if n % 500000 == 0:
                    say("  model: %s events" % fmt_int(n))
        self.model = {b: (sum(x[1] for x in bl.values()), sum(1 for x in bl.values() if x[2]))
                      for b, bl in loans.items()}
        self.model_events = n
        say("model: %s events, %s borrowers, total outstanding %s fen" % (
            fmt_int(n), fmt_int(len(self.model)), fmt_int(sum(v[0] for v in self.model.values()))))

    def query_server(self):
        """A loanwire-query HTTP server on a free port (no tokens) -> (process, port)."""
        log = os.path.join(self.work, "query.log")
        p = subprocess.Popen([self.prog("loanwire-query"), "--redis", self.url, "--listen",
                              "127.0.0.1:0", "--no-auth", "--threads", "2", "--brokers",
                              self.bs, "--inquiries-topic", "lwbench.checks.inquiries"],
                             stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
        t_end = time.monotonic() + 20
        while time.monotonic() < t_end:
            m = re.search(rb"listening on [\d.]+:(\d+)", open(log, "rb").read())
            if m:
                return p, int(m.group(1))
            if p.poll() is not None:
                break
            time.sleep(0.05)
        p.kill()
        raise BenchError("loanwire-query did not start: " + open(log, errors="replace").read())

    def http_totals(self, bids):
        """(total outstanding, active loans) of each borrower through the HTTP API,
        keep-alive connections in parallel; a missing borrower is an error. Every
        look-up is recorded on Kafka before it is answered (issue 20), ~3 ms each, so
        two connections took 150-163 s for 100,000 borrowers; sixteen share the
        producer's batches."""
        import http.client
        proc, port = self.query_server()
        res, errs = {}, []

        def worker(part):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for bid in part:
                c.request("GET", "/v1/borrowers/%s/exposure?purpose=LOAN_APPROVAL" % bid)
                r = c.getresponse()
                body = r.read()
                if r.status != 200:
                    errs.append("%s: HTTP %d %s" % (bid, r.status, body[:200]))
                    continue
                j = json.loads(body)
                res[bid] = (j["total_outstanding_fen"], j["active_loans"])
            c.close()

        try:
            nconn = 16
            ths = [threading.Thread(target=worker, args=(bids[k::nconn],)) for k in range(nconn)]
            for t in ths:
                t.start()
            for t in ths:
                t.join()
        finally:
            proc.terminate()
            proc.wait()
        if errs:
            raise BenchError("loanwire-query HTTP: " + "; ".join(errs[:5]))
        return res

    def verify_state(self, what, sample=None, full=True):
        """Compares Redis with the model through lw_state_read only (the layout is the
        consumer's business): a sample of borrowers with `loanwire-query --borrower`, and,
        when full, every borrower through loanwire-query's HTTP API."""
        if sample is None:
            sample = self.a.sample
        bids = sorted(self.model)
        rnd = random.Random(7)
        pick = rnd.sample(bids, min(sample, len(bids)))
        bad = []
        for bid in pick:
            p = subprocess.run([self.prog("loanwire-query"), "--redis", self.url, "--borrower",
                                bid], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if p.returncode != 0:
                bad.append("%s: loanwire-query exit %d %s" % (bid, p.returncode,
                                                               p.stderr.decode()[-200:]))
                continue
            j = json.loads(p.stdout)
            want = self.model[bid]
            got = (j["total_outstanding_fen"], j["active_loans"])
            if got != want:
                bad.append("%s: redis total/active %s, model %s" % (bid, got, want))
        msg = "%s: state exact (%d sampled borrowers via loanwire-query --borrower" % (
            what, len(pick))
        if full and not bad:
            t0 = time.monotonic()
            got = self.http_totals(bids)
            for bid in bids:
                if got[bid] != self.model[bid]:
                    bad.append("%s: redis total/active %s, model %s" % (bid, got[bid],
                                                                         self.model[bid]))
            total = sum(v[0] for v in got.values())
            msg += "; all %s borrowers via its HTTP API, sum %s fen, %.0f s" % (
                fmt_int(len(bids)), fmt_int(total), time.monotonic() - t0)
        if bad:
            raise BenchError("%s: state differs from the model:\n  %s" % (what,
                                                                           "\n  ".join(bad[:10])))
        msg += ")"
        say(msg)
        return msg

    # -- step 1: producer ----------------------------------------------------------------

    def step_producer(self):
        a = self.a
        n = a.events
        say("==> [1/6] producer: generating %s events (%s borrowers) to a file (not timed)" % (
            fmt_int(n), fmt_int(a.borrowers)))
        self.run([self.prog("loanwire-gen"), "--events", str(n), "--borrowers",
                  str(a.borrowers), "-o", self.feed], log=os.path.join(self.work, "gen.log"))
        self.build_model()
        if self.model_events != n:
            raise BenchError("feed has %d events, asked for %d" % (self.model_events, n))

        # Average single-object Avro record size, from real records.
        sample = os.path.join(self.work, "sample.jsonl")
        with open(self.feed) as f, open(sample, "w") as o:
            for i, line in enumerate(f):
                if i >= 20000:
                    break
                o.write(line)
        p = subprocess.run([self.prog("loanwire-avro"), "encode", "--lines"],
                           stdin=open(sample, "rb"), stdout=subprocess.PIPE, check=True)
        b, i, sizes = p.stdout, 0, []
        while i < len(b):
            ln = struct.unpack(">I", b[i:i + 4])[0]
            sizes.append(ln)
            i += 4 + ln
        size = round(statistics.mean(sizes))
        self.avg_size = size
        say("producer: average single-object Avro record %d bytes (%d records)" % (
            size, len(sizes)))

        # kcat input: the feed's own keys (22-char borrower ids, so the same partitions),
        # printable payloads of the average size.
        kin = os.path.join(self.work, "kcat.in")
        rnd = random.Random(1)
        alphabet = string.ascii_letters + string.digits
        pool = ["".join(rnd.choice(alphabet) for _ in range(size)) for _ in range(4096)]
        key_re = re.compile(r'"borrower_id":"([^"]*)"')
        with open(self.feed) as f, open(kin, "w") as o:
            for i, line in enumerate(f):
                o.write(key_re.search(line).group(1) + "\t" + pool[i & 4095] + "\n")

        # Same settings as the Loanwire producer's defaults (producers/README.md).
        kconf = ["-X", "acks=all", "-X", "enable.idempotence=true", "-X", "linger.ms=5",
                 "-X", "batch.num.messages=10000", "-X", "compression.codec=none",
                 "-X", "queue.buffering.max.messages=200000", "-X",
                 "partitioner=murmur2_random"]

        # Warm the broker (idempotence PID coordinator, metadata, and the JIT: a cold broker
        # spent ~2x the CPU per record on the first million) so neither run pays it; without
        # this the first run (ours) met a cold JVM and the second a warm one.
        warm = "bench.warm." + self.run_id
        self.topic_create(warm)
        with open(kin, "rb") as f:
            warm_in = b"".join(line for _, line in zip(range(min(n, 500000)), f))
        subprocess.run(["kcat", "-P", "-b", self.bs, "-t", warm, "-K", "\t"] + kconf,
                       input=warm_in, check=True, stderr=subprocess.DEVNULL)
        del warm_in

        def one(name, topic, args, stdin, linger):
            """One timed run into a fresh topic; returns (events/s, client µs, broker µs)."""
            say("producer: %s -> %s (%s events, linger.ms=%d)" % (name, topic, fmt_int(n), linger))
            log = os.path.join(self.work, name + ".log")
            with CpuSampler(self.fixed_pids) as cpu:
                t0 = time.monotonic()
                proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(log, "wb"),
                                        stdin=open(stdin, "rb") if stdin else subprocess.DEVNULL)
                cpu.add(name, proc.pid)
                self.wait_progress([proc], name, lambda t=topic: "%s in topic" % fmt_int(
                    self.end_offsets(t)), cpu=cpu)
                dt = time.monotonic() - t0
            if proc.returncode != 0:
                raise BenchError("%s exited %d: %s" % (
                    name, proc.returncode, open(log, errors="replace").read()[-800:]))
            got = self.end_offsets(topic)
            if got != n:
                raise BenchError("%s: %d messages in %s, expected %d" % (name, got, topic, n))
            say("producer: %s %s events in %.2f s = %s events/s; CPU: %s" % (
                name, fmt_int(n), dt, fmt_rate(n / dt), cpu.text()))
            self.notes.append("Producer, %s, linger.ms=%d: %.2f s = %s events/s; CPU %s." % (
                name, linger, dt, fmt_rate(n / dt), cpu.text()))
            return n / dt, cpu.us_per(name, n), cpu.us_per("kafka", n)

        def pair(linger, rounds):
            """loanwire-produce and kcat, both with linger.ms=linger, each into fresh topics,
            rounds times, the order swapped every round: the broker's JIT keeps warming and
            a 2-s run moves with it, so neither program always meets the colder broker.
            Returns ours' first topic and, per program, the medians of the runs."""
            kc = [("linger.ms=%d" % linger if x == "linger.ms=5" else x) for x in kconf]
            ours_x = [] if linger == 5 else ["-X", "linger.ms=%d" % linger]
            runs, first = {"loanwire-produce": [], "kcat": []}, None
            for r in range(rounds):
                sfx = ("" if linger == 5 else ".linger%d" % linger) + ".r%d" % (r + 1)
                ours_t = "bench.events%s.%s" % (sfx, self.run_id)
                raw_t = "bench.kcat%s.%s" % (sfx, self.run_id)
                self.topic_create(ours_t)
                self.topic_create(raw_t)
                first = first or ours_t
                both = [("loanwire-produce", ours_t,
                         [self.prog("loanwire-produce"), "-b", self.bs, "-t", ours_t] + ours_x +
                         ["-r", os.path.join(self.work, "rejects.jsonl"), self.feed], None),
                        ("kcat", raw_t,
                         ["kcat", "-P", "-b", self.bs, "-t", raw_t, "-K", "\t"] + kc, kin)]
                for name, topic, args, stdin in (both if r % 2 == 0 else both[::-1]):
                    runs[name].append(one(name, topic, args, stdin, linger))
            med = {k: tuple(statistics.median(x[i] for x in v) for i in range(3))
                   for k, v in runs.items()}
            spread = {k: "%s-%s" % (fmt_rate(min(x[0] for x in v)), fmt_rate(max(x[0] for x in v)))
                      for k, v in runs.items()}
            return first, med, spread

        rounds = 1 if a.quick else 3
        self.events_topic, med, spread = pair(5, rounds)
        ours, raw = med["loanwire-produce"][0], med["kcat"][0]
        self.figure("event_avro_bytes", size, "mean single-object Avro record of %d feed "
                    "events (loanwire-avro encode)" % len(sizes))
        self.figure("produce_client_us_per_event", med["loanwire-produce"][1],
                    "loanwire-produce CPU per event, %d events, linger.ms=5" % n)
        self.figure("kafka_broker_us_per_event", med["loanwire-produce"][2],
                    "Kafka broker (one, RF 1) CPU per event while loanwire-produce sends")
        ratio = ours / raw
        what = "events/s, %s events (%d-byte records)" % (fmt_int(n), size)
        if rounds > 1:
            what += ", median of %d runs each, order alternated" % rounds
        self.row("1 producer", what, fmt_rate(ours), fmt_rate(raw) + " (kcat)", "%.2f" % ratio,
                 "ratio >= 0.7", "yes" if ratio >= 0.7 else "no")
        if rounds > 1:
            self.row("1 producer", "range of the %d runs" % rounds, spread["loanwire-produce"],
                     spread["kcat"] + " (kcat)", "", "", "")
        self.row("1 producer", "CPU per event: client / broker (contention-free cost)",
                 "%.1f / %.1f µs" % med["loanwire-produce"][1:],
                 "%.1f / %.1f µs (kcat)" % med["kcat"][1:], "", "", "")
        if not a.quick:
            # The same with linger.ms=20 for both: larger batches, fewer requests for the
            # broker; not the default, which keeps the latency budget (step 3).
            _, med, _ = pair(20, rounds)
            ours, raw = med["loanwire-produce"][0], med["kcat"][0]
            self.row("1 producer", "events/s with linger.ms=20 for both (not the default), "
                     "median of %d runs each" % rounds,
                     fmt_rate(ours), fmt_rate(raw) + " (kcat)", "%.2f" % (ours / raw), "", "")
            self.row("1 producer", "CPU per event with linger.ms=20: client / broker",
                     "%.1f / %.1f µs" % med["loanwire-produce"][1:],
                     "%.1f / %.1f µs (kcat)" % med["kcat"][1:], "", "", "")

    # -- step 2: consumer catch-up -------------------------------------------------------

    def warm_fetch(self):
        """A fresh broker creates __consumer_offsets at the first group join and serves its
        first fetches with a cold JIT: seconds that are the broker's, not the consumer's (a
        run without this spent its first 5 s at 31k events/s, then 277k). So once per run, a
        throw-away kcat group reads step 1's warm-up topic first, untimed, as step 1 warms
        the produce path."""
        if getattr(self, "fetch_warmed", False):
            return
        warm = "bench.warm." + self.run_id
        cnt = min(self.a.events, 200000)
        t0 = time.monotonic()
        subprocess.run(["kcat", "-b", self.bs, "-G", warm + ".group", "-X",
                        "auto.offset.reset=earliest", "-c", str(cnt), "-q", warm],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
                       check=True)
        say("catch-up: broker warmed for consumers (a kcat group read %s records of %s, "
            "%.1f s, untimed)" % (fmt_int(cnt), warm, time.monotonic() - t0))
        self.fetch_warmed = True

    def wait_quiet(self, what, below=10.0, timeout=30.0):
        """Waits until the broker and Redis have used < below % of a core for a whole
        second (at most timeout s): step 1 leaves the broker busy for a while (it used
        ~38 % of a core during one catch-up and ~1 % during the raw replay right after),
        and that work is not the step's to pay. Returns the seconds waited."""
        t0 = time.monotonic()
        pids = dict(self.fixed_pids)
        while True:
            before = {k: proc_ticks(p) for k, p in pids.items()}
            time.sleep(1.0)
            after = {k: proc_ticks(p) for k, p in pids.items()}
            busy = {k: 100.0 * (after[k] - before[k]) / CLK_TCK for k in pids
                    if before[k] is not None and after[k] is not None}
            waited = time.monotonic() - t0
            if all(v < below for v in busy.values()) or waited >= timeout:
                say("%s: waited %.0f s for a quiet stack (%s)" % (
                    what, waited, ", ".join("%s %.0f%%" % kv for kv in sorted(busy.items()))))
                return waited

    def catchup(self, nproc, label):
        """Fresh group, empty Redis, nproc consumers --until-caught-up on step 1's topic."""
        n = self.a.events
        self.warm_fetch()
        self.r.cmd("FLUSHALL")
        self.wait_quiet("catch-up")
        base_mem = int(self.r.info("memory")["used_memory"])
        group = "bench-%s-%s" % (label, self.run_id)
        cids = ["bench-%s-%d" % (label, i) for i in range(nproc)]
        procs, logs = [], []
        with CpuSampler(self.fixed_pids) as cpu:
            t0 = time.monotonic()
            for cid in cids:
                log = os.path.join(self.work, "exposure-%s.log" % cid)
                logs.append(log)
                p = subprocess.Popen(self.exposure_args(self.events_topic, group, cid,
                                                        ["--from-beginning",
                                                         "--until-caught-up",
                                                         "--status", "1"]),
                                     stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
                procs.append(p)
                cpu.add("loanwire-exposure" + ("" if nproc == 1 else "#%d" % (len(procs))),
                        p.pid)
            self.wait_progress(procs, "%d consumer(s)" % nproc,
                               lambda: "%s applied" % fmt_int(self.redis_applied(cids)),
                               cpu=cpu)
            dt = time.monotonic() - t0
        for p, log in zip(procs, logs):
            if p.returncode != 0:
                raise BenchError("loanwire-exposure exited %d: %s" % (
                    p.returncode, open(log, errors="replace").read()[-1200:]))
        stats = [self.parse_stopped(log) for log in logs]
        consumed = sum(s.get("consumed", 0) for s in stats)
        if consumed < n:
            raise BenchError("consumers consumed %d events, the topic has %d" % (consumed, n))
        self.check_applied(stats, n, nproc)
        mem = int(self.r.info("memory")["used_memory"]) - base_mem
        say("%d consumer(s): %s events in %.2f s = %s events/s; CPU: %s" % (
            nproc, fmt_int(n), dt, fmt_rate(n / dt), cpu.text()))
        return n / dt, dt, cpu, stats, mem

    def step_catchup(self):
        n = self.a.events
        say("==> [2/6] consumer catch-up: %s events, 1 loanwire-exposure, empty Redis" %
            fmt_int(n))
        rate, dt, cpu, stats, mem = self.catchup(1, "c1")
        self.c1 = (rate, dt, cpu)
        msg = self.verify_state("catch-up")
        self.notes.append("Catch-up, 1 consumer: %.2f s (%s); %s. CPU %s." % (
            dt, ", ".join("%s %d" % kv for kv in stats[0].items()), msg, cpu.text()))
        # Memory of the real pipeline's state for this feed (alert stream excluded).
        stream = self.r.cmd("MEMORY", "USAGE", "lw:alerts") or 0
        nb = len(self.model)
        act = sum(v[1] for v in self.model.values()) / nb
        self.pipeline_mem = ((mem - stream) / nb, act, nb)

        # The raw Redis limit for the same commands: the exact RESP the consumer's store
        # sends for this feed (loanwire-exposure-bench --dump drives the store as the
        # consumer does, in batches of 2000 like its --batch default, each batch read and
        # applied while the previous one's write is in flight: the epoch and state reads,
        # the string-id calls and the MULTI/EXEC writes with the same keys and arguments),
        # replayed by redis-cli --pipe as fast as Redis takes it. (redis-benchmark cannot
        # send them: each borrower's state is a binary argument computed from the feed.)
        dump = os.path.join(self.work, "resp.dump")
        self.r.cmd("FLUSHALL")
        p = subprocess.run([self.prog("loanwire-exposure-bench"), "--redis", self.url,
                            "--dump", dump, self.feed], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        m = re.search(rb"(\d+) events in .*\n.*sha ([0-9a-f]{40})", p.stdout)
        if p.returncode != 0 or not m or int(m.group(1)) != n:
            raise BenchError("loanwire-exposure-bench --dump: %s %s" % (p.stdout[-300:],
                                                                       p.stderr[-300:]))
        script = subprocess.run([self.prog("loanwire-exposure"), "--print-script"],
                                stdout=subprocess.PIPE, check=True).stdout
        self.r.cmd("FLUSHALL")
        sha = self.r.cmd("SCRIPT", "LOAD", script).decode()
        if sha != m.group(2).decode():
            raise BenchError("script sha %s, the dump uses %s" % (sha, m.group(2).decode()))
        self.r.cmd("CONFIG", "RESETSTAT")
        self.wait_quiet("raw Redis")
        say("raw Redis: redis-cli --pipe < %s (%.0f MB, %s events)" % (
            dump, os.path.getsize(dump) / 1e6, fmt_int(n)))
        with CpuSampler(self.fixed_pids) as rcpu:
            t0 = time.monotonic()
            p = subprocess.Popen(["redis-cli", "-h", self.rhost, "-p", str(self.rport),
                                  "--pipe"], stdin=open(dump, "rb"), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT)
            rcpu.add("redis-cli", p.pid)
            out = p.communicate()[0].decode(errors="replace")
            rdt = time.monotonic() - t0
        mm = re.search(r"errors: (\d+), replies: (\d+)", out)
        if p.returncode != 0 or not mm or int(mm.group(1)) != 0:
            raise BenchError("redis-cli --pipe: " + out[-600:])
        raw = n / rdt
        stats = self.r.info("commandstats")

        def calls(cmd):
            cs = stats.get("cmdstat_" + cmd, "")
            return int(re.search(r"calls=(\d+)", cs).group(1)) if cs else 0
        os.unlink(dump)
        say("raw Redis: %s events in %.2f s = %s events/s (%s MGET, %s MSET in %s MULTI/EXEC, "
            "%s EVAL, 0 errors); CPU: %s" % (
                fmt_int(n), rdt, fmt_rate(raw), fmt_int(calls("mget")), fmt_int(calls("mset")),
                fmt_int(calls("exec")), fmt_int(calls("eval")), rcpu.text()))
        vmsg = self.verify_state("raw replay", sample=min(self.a.sample, 100), full=False)
        self.notes.append(
            "Raw Redis: `loanwire-exposure-bench --dump` wrote the RESP the store sends for "
            "the feed in batches of 2000, driven as the consumer drives it (%s MGETs: a "
            "batch's epochs, and its borrowers' states 64 to a call, none for a borrower of "
            "the write in flight; %s MULTI/EXEC "
            "writes holding %s MSETs, %s HSETs and %s XADDs; %s EVALs: string ids and "
            "cleared alerts moved to ~rule); `redis-cli --pipe` replayed it into an empty "
            "Redis: %.2f s, %s events/s, 0 errors; %s; CPU %s." % (
                fmt_int(calls("mget")), fmt_int(calls("exec")), fmt_int(calls("mset")),
                fmt_int(calls("hset")), fmt_int(calls("xadd")), fmt_int(calls("eval")), rdt,
                fmt_rate(raw), vmsg, rcpu.text()))
        nb = n
        self.r.cmd("FLUSHALL")
        ours_us = cpu.us_per("redis-server", n)
        raw_us = rcpu.us_per("redis-server", nb)
        self.redis_us = (ours_us, raw_us)
        ratio = rate / raw
        self.row("2 catch-up", "events/s, %s events from Kafka to Redis, 1 consumer, totals "
                 "exact" % fmt_int(n), fmt_rate(rate),
                 fmt_rate(raw) + " (redis-cli --pipe of the same commands)",
                 "%.2f" % ratio, "ratio >= 0.8; >= 150,000/s",
                 "ratio %s; absolute %s" % ("yes" if ratio >= 0.8 else "no",
                                            "yes" if rate >= 150000 else "no"))
        steady = self.steady_rate(os.path.join(self.work, "exposure-bench-c1-0.log"))
        if steady:
            self.row("2 catch-up", "steady rate: mean of the consumer's per-second status lines "
                     "(first and last left out; not the target's measure)", fmt_rate(steady),
                     fmt_rate(raw), "%.2f" % (steady / raw), "", "")
        self.row("2 catch-up", "redis-server CPU per event (=> ceiling of one Redis core)",
                 "%.1f µs (%s/s)" % (ours_us, fmt_rate(1e6 / ours_us) if ours_us else "?"),
                 "%.1f µs (%s/s)" % (raw_us, fmt_rate(1e6 / raw_us) if raw_us else "?"),
                 "", "", "")
        self.row("2 catch-up", "loanwire-exposure CPU per event", "%.1f µs" % cpu.us_per(
            "loanwire-exposure", n), "", "", "", "")
        self.figure("exposure_us_per_event", cpu.us_per("loanwire-exposure", n),
                    "loanwire-exposure CPU per event, catch-up of %d events" % n)
        self.figure("redis_us_per_event", ours_us,
                    "redis-server CPU per event, same catch-up (one Redis)")
        self.figure("exposure_events_per_s", rate, "1 consumer catch-up into one Redis")

    # -- step 3: latency -----------------------------------------------------------------

    def step_latency(self):
        if not self.a.quick and getattr(self, "c1", None) and self.a.rates[-1][0] > 0.6 * self.c1[0]:
            # A live feed shares the machine with its producer and the broker, so it cannot
            # be followed at the catch-up rate: the last rate becomes 60% of step 2's rate.
            top = max(1000, int(0.6 * self.c1[0]) // 1000 * 1000)
            self.notes.append("Latency: %s/s is beyond what this machine can follow live "
                              "(catch-up alone: %s/s in step 2); the third feed runs at %s/s "
                              "(60%% of it) instead." % (
                                  fmt_int(self.a.rates[-1][0]), fmt_rate(self.c1[0]),
                                  fmt_int(top)))
            self.a.rates[-1] = (top, self.a.rates[-1][1])
        say("==> [3/6] end-to-end latency: paced feeds %s" % ", ".join(
            "%s/s for %d s" % (fmt_int(r), d) for r, d in self.a.rates))
        helptxt = subprocess.run([self.prog("loanwire-exposure"), "--help"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout
        has_lat = b"--latency-out" in helptxt
        if not has_lat:
            self.notes.append("Latency: this loanwire-exposure has no --latency-out; the paced "
                              "runs were made and counted, without latency figures.")
        runs = [(r, d, False) for r, d in self.a.rates] + [self.a.steady + (True,)]
        for rate, dur, steady in runs:
            topic = "bench.lat%d%s.%s" % (rate, "s" if steady else "", self.run_id)
            self.topic_create(topic)
            self.r.cmd("FLUSHALL")
            lat = os.path.join(self.work, "latency-%d.json" % rate)
            if os.path.exists(lat):
                os.unlink(lat)
            log = os.path.join(self.work, "exposure-lat%d.log" % rate)
            extra = ["--exit-on-idle", "3"] + (["--latency-out", lat] if has_lat else [])
            cid = "bench-lat%d" % rate
            cons = subprocess.Popen(self.exposure_args(topic, "bench-lat-%s" % self.run_id,
                                                       cid, extra),
                                    stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
            # Only feed once the consumer holds its partitions, so no event waits on the
            # group join.
            t_end = time.monotonic() + 60
            while b"assigned" not in open(log, "rb").read():
                if cons.poll() is not None or time.monotonic() > t_end:
                    cons.kill()
                    raise BenchError("latency consumer not assigned: " +
                                     open(log, errors="replace").read()[-800:])
                time.sleep(0.1)
            # The consumer needs a moment after the assignment before its first fetch of
            # each partition (offsets, epochs): warm-up events, applied but not timed, keep
            # that start-up out of the figures.
            warm = self.warm_consumer(topic, cid, cons, log)
            glog = os.path.join(self.work, "gen-lat%d.log" % rate)
            with CpuSampler(self.fixed_pids) as cpu:
                cpu.add("loanwire-exposure", cons.pid)
                t0 = time.monotonic()
                if not steady:
                    gen = subprocess.Popen([self.prog("loanwire-gen"), "--kafka", "-b",
                                            self.bs, "-t", topic, "--borrowers",
                                            str(self.a.borrowers), "--rate", str(rate),
                                            "--duration", str(dur), "--events", "0"],
                                           stdout=subprocess.DEVNULL, stderr=open(glog, "wb"))
                    cpu.add("loanwire-gen", gen.pid)
                else:
                    # The same feed through a producer that is already running and has sent
                    # one event to the topic (so its metadata and producer id are there):
                    # JSON from loanwire-gen --rate piped into loanwire-produce.
                    warm_line = self.warm_event(99, timed=True)
                    sh = ('set -o pipefail; (printf "%%s\\n" "$W"; sleep 2; exec "$G" '
                          '--borrowers %d --rate %d --duration %d --events 0) | '
                          '"$P" -b %s -t %s -q --stamp -r %s -') % (
                              self.a.borrowers, rate, dur, self.bs, topic,
                              os.path.join(self.work, "lat-rejects.jsonl"))
                    gen = subprocess.Popen(["bash", "-c", sh], env=dict(
                        os.environ, W=warm_line, G=self.prog("loanwire-gen"),
                        P=self.prog("loanwire-produce")),
                        stdout=subprocess.DEVNULL, stderr=open(glog, "wb"))
                self.wait_progress([gen], "feed %s/s" % fmt_int(rate),
                                   lambda: "%s applied" % fmt_int(self.redis_applied([cid])),
                                   cpu=cpu)
                gen_dt = time.monotonic() - t0 - (2 if steady else 0)
                self.wait_progress([cons], "consumer draining", timeout=600, cpu=cpu)
            if gen.returncode != 0:
                raise BenchError("loanwire-gen exited %d: %s" % (
                    gen.returncode, open(glog, errors="replace").read()[-800:]))
            if cons.returncode != 0:
                raise BenchError("loanwire-exposure exited %d: %s" % (
                    cons.returncode, open(log, errors="replace").read()[-800:]))
            produced = self.end_offsets(topic)
            st = self.parse_stopped(log)
            produced -= warm
            if st.get("consumed", -1) != produced + warm:
                raise BenchError("latency %d/s: %d produced, consumer consumed %s" % (
                    rate, produced, st.get("consumed")))
            achieved = produced / gen_dt
            if steady:
                self.notes.append(
                    "Latency, steady state (%s/s): `(one event; sleep 2; loanwire-gen --rate %d "
                    "--duration %d) | loanwire-produce -`: the producer is up and knows the topic "
                    "before the paced feed starts; the one early event is timed too (it is "
                    "in the max)." % (fmt_int(rate), rate, dur))
            say("latency %s/s: %s events in %.1f s (%s/s achieved), all consumed; CPU: %s" % (
                fmt_int(rate), fmt_int(produced), gen_dt, fmt_rate(achieved), cpu.text()))
            self.notes.append("Latency feed %s/s: %s events over %.1f s (%s/s achieved), "
                              "%d alerts; CPU %s." % (fmt_int(rate), fmt_int(produced), gen_dt,
                                                      fmt_rate(achieved), st.get("alerts", 0),
                                                      cpu.text()))
            if not has_lat:
                self.row("3 latency", "%s/s paced, %s events" % (fmt_int(rate),
                                                                   fmt_int(produced)),
                         "n/a (no --latency-out)", "", "", "", "")
                continue
            if not os.path.exists(lat):
                raise BenchError("latency %d/s: %s was not written" % (rate, lat))
            j = json.load(open(lat))
            for kind, label in (("state", "state visible"), ("alert", "alert in stream")):
                s = j.get(kind) or {}
                if kind == "state" and s.get("count") != produced:
                    raise BenchError("latency %d/s: %s samples, %d events" % (
                        rate, s.get("count"), produced))
                if not s.get("count"):
                    self.row("3 latency", "%s/s (%s/s achieved): %s" % (
                        fmt_int(rate), fmt_rate(achieved), label), "no samples", "", "", "", "")
                    continue
                behind = s.get("p50_us", 0) > 1000000
                self.row("3 latency", "%s/s (%s/s achieved)%s: %s, %s samples%s" % (
                    fmt_int(rate), fmt_rate(achieved),
                    ", producer warm (steady state)" if steady else
                    ", loanwire-gen --kafka", label, fmt_int(s["count"]),
                    " -- NOT sustained, the consumer fell behind" if behind else ""),
                    "p50 %s / p99 %s / p99.9 %s / max %s" % tuple(
                        self.ms(s.get(k)) for k in ("p50_us", "p99_us", "p999_us", "max_us")),
                    "", "", "", "")

    @staticmethod
    def warm_event(p, timed=False):
        bid = ("WARMUP%d" % p).ljust(22, "W")
        return ('{"event_id":"WARMUP-00000000-%d","event_type":"APPLICATION","platform_id":'
                '"WARMUP","lender_id":"WARMUP","borrower_id":"%s","loan_id":'
                '"WU-00000000-%d","product":"INSTALLMENT","sequence":1,"occurred_at":'
                '1767225600000,"amount_fen":100000,"outstanding_fen":0,"credit_limit_fen":0,'
                '"days_past_due":0,"past_due_fen":0,"currency":"CNY","annual_income_fen":'
                'null,"term_months":12}' % (p, bid, p))

    def warm_consumer(self, topic, cid, cons, log, parts=6):
        """One warm-up event per partition, without the lw-sent-us header (applied, never
        timed); returns once the consumer has taken them all."""
        t0 = time.monotonic()
        for p in range(parts):
            bid = ("WARMUP%d" % p).ljust(22, "W")
            ev = self.warm_event(p)
            path = os.path.join(self.work, "warmup.avro")
            with open(path, "wb") as f:
                subprocess.run([self.prog("loanwire-avro"), "encode"], input=ev.encode(),
                               stdout=f, check=True)
            subprocess.run(["kcat", "-P", "-b", self.bs, "-t", topic, "-p", str(p), "-k", bid,
                            path], check=True)
        while self.redis_applied([cid]) < parts:
            if cons.poll() is not None or time.monotonic() - t0 > 60:
                raise BenchError("latency consumer never consumed the warm-up events: " +
                                 open(log, errors="replace").read()[-800:])
            time.sleep(0.05)
        say("latency: consumer took the %d warm-up events (one per partition) within %.2f s "
            "(metrics refresh ~1 s)" % (parts, time.monotonic() - t0))
        return parts

    @staticmethod
    def ms(us):
        return "n/a" if us is None else "%.1f ms" % (us / 1000.0) if us >= 10000 else \
            "%.2f ms" % (us / 1000.0)

    # -- step 4: memory ------------------------------------------------------------------

    def step_memory(self):
        say("==> [4/6] memory: %s borrowers x 3 active loans through the consumer's store"
            % fmt_int(self.a.mem_borrowers))
        script = subprocess.run([self.prog("loanwire-exposure"), "--print-script"],
                                stdout=subprocess.PIPE, check=True).stdout
        lpv = self.r.cmd("CONFIG", "GET", "hash-max-listpack-value")[1].decode()
        for n, recent, label in (
                (self.a.mem_borrowers, False, "loans opened > 30 d ago (steady state)"),
                (self.a.mem_borrowers_recent, True, "all 3 opened in the last 30 d")):
            per, usage, enc, dt = self.memory_load(script, n, recent)
            say("memory: %s: %.0f bytes per borrower (used_memory delta), MEMORY USAGE %s, "
                "%s, %.0f s" % (label, per, usage, enc, dt))
            self.row("4 memory", "Redis bytes per borrower, %s borrowers x 3 active loans, %s"
                     % (fmt_int(n), label), "%.0f" % per,
                     "MEMORY USAGE of one borrower's keys: %s (%s)" % (usage, enc), "",
                     "<= 200" if not recent else "",
                     ("yes" if per <= 200 else "no") if not recent else "")
            if not recent:
                self.figure("redis_bytes_per_borrower_3_loans", per,
                            "used_memory delta / %d borrowers x 3 active loans" % n)
            self.notes.append(
                "Memory, %s: %s borrowers, %d loan events each (3 DRAWDOWNs%s) applied through "
                "the consumer's store without Kafka (`loanwire-exposure-bench`), "
                "%.0f s; 50 borrowers checked through loanwire-query; Redis "
                "hash-max-listpack-value %s." % (label, fmt_int(n), 3 if recent else 4,
                                                 "" if recent else " + a REPAYMENT today",
                                                 dt, lpv))
        if getattr(self, "pipeline_mem", None):
            pm, act, nb = self.pipeline_mem
            self.row("4 memory", "real pipeline state after step 2 (%s borrowers, %.1f "
                     "active loans avg; closed loans kept; alert stream excluded)" % (
                         fmt_int(nb), act), "%.0f" % pm, "", "", "", "")
        self.r.cmd("FLUSHALL")

    def memory_load(self, script, n, recent):
        """Loads n borrowers with 3 active instalment loans each (ALIPAY, WEBANK, JD; ids of
        the feed's lengths) as loan events through the consumer's real store
        (loanwire-exposure-bench, no Kafka); returns (bytes per borrower by INFO used_memory
        delta, MEMORY USAGE of a sample key, its encoding, seconds)."""
        import base64
        import hashlib
        self.r.cmd("FLUSHALL")
        self.r.cmd("SCRIPT", "LOAD", script)
        time.sleep(0.2)
        base = int(self.r.info("memory")["used_memory"])
        day = 86400000
        now = 1775000000000
        plats = (("ALIPAY", "JB", "BANK-CMB"), ("WEBANK", "WLDI", "WEBANK"),
                 ("JD", "JT", "JD-MICRO"))
        opened = (-10 * day, -5 * day, -1 * day) if recent else (-200 * day, -120 * day,
                                                                  -45 * day)

        def bid_of(i):
            return base64.urlsafe_b64encode(hashlib.md5(b"%d" % i).digest())[:22].decode()

        def expect(i):
            return sum(1500000 + j * 100000 - (0 if recent or j else 50000) for j in range(3))

        def ev(eid, et, pid, lender, bid, lid, seq, at, amount, out):
            return ('{"event_id":"%s","event_type":"%s","platform_id":"%s","lender_id":"%s",'
                    '"borrower_id":"%s","loan_id":"%s","product":"INSTALLMENT","sequence":%d,'
                    '"occurred_at":%d,"amount_fen":%d,"outstanding_fen":%d,'
                    '"credit_limit_fen":0,"days_past_due":0,"past_due_fen":0,"currency":"CNY",'
                    '"annual_income_fen":null,"term_months":12}\n' % (
                        eid, et, pid, lender, bid, lid, seq, at, amount, out))

        per_file = 250000  # borrowers per loanwire-exposure-bench run (it reads all first)
        t0 = time.monotonic()
        applied = 0
        for start in range(0, n, per_file):
            path = os.path.join(self.work, "memory.jsonl")
            lines = 0
            with open(path, "w") as f:
                for i in range(start, min(n, start + per_file)):
                    bid = bid_of(i)
                    for j, (pid, pre, lender) in enumerate(plats):
                        amt = 1500000 + j * 100000
                        f.write(ev("%s-7e57be9c-%d" % (pid, 6 * i + j), "DRAWDOWN", pid, lender,
                                   bid, "%s-7e57be9c-%d" % (pre, 3 * i + j), 2,
                                   now + opened[j], amt, amt))
                    lines += 3
                    if not recent:
                        # A repayment today on the first loan: the borrower's time moves on
                        # and the window entries of the old openings are pruned.
                        f.write(ev("ALIPAY-7e57be9c-%d" % (6 * i + 5), "REPAYMENT", "ALIPAY",
                                   "BANK-CMB", bid, "JB-7e57be9c-%d" % (3 * i), 3, now, 50000,
                                   1450000))
                        lines += 1
            p = subprocess.run([self.prog("loanwire-exposure-bench"), "--redis", self.url,
                                path], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            m = re.search(rb"(\d+) events in .* applied (\d+)", p.stdout)
            if p.returncode != 0 or not m or int(m.group(1)) != lines or \
                    int(m.group(2)) != lines:
                raise BenchError("memory load: %d events written, loanwire-exposure-bench: "
                                 "%s %s" % (lines, p.stdout[-300:], p.stderr[-300:]))
            applied += lines
            os.unlink(path)
            say("  memory load: %s / %s borrowers (%s events applied)" % (
                fmt_int(min(n, start + per_file)), fmt_int(n), fmt_int(applied)))
        dt = time.monotonic() - t0
        self.r.cmd("DEL", "lw:alerts")
        time.sleep(0.2)
        used = int(self.r.info("memory")["used_memory"]) - base
        rnd = random.Random(3)
        usage = []
        for i in rnd.sample(range(n), min(50, n)):
            q = subprocess.run([self.prog("loanwire-query"), "--redis", self.url, "--borrower",
                                bid_of(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            j = json.loads(q.stdout) if q.returncode == 0 else {}
            if j.get("active_loans") != 3 or j.get("total_outstanding_fen") != expect(i):
                raise BenchError("memory load: borrower %s reads %s, expected 3 active loans, "
                                 "%d fen" % (bid_of(i), q.stdout[:300], expect(i)))
        # MEMORY USAGE of the keys that hold a borrower (whatever the layout calls them): the
        # last one, whose ids are the longest, like most of the million.
        keys, cur = [], b"0"
        while True:
            cur, ks = self.r.cmd("SCAN", cur, "MATCH", "*%s*" % bid_of(n - 1), "COUNT", 100000)
            keys += ks
            if cur == b"0":
                break
        for k in keys:
            usage.append(self.r.cmd("MEMORY", "USAGE", k, "SAMPLES", 0))
        enc_name = "/".join(self.r.cmd("OBJECT", "ENCODING", k).decode() for k in keys)
        self.r.cmd("FLUSHALL")
        return used / n, "%d" % sum(usage), enc_name or "?", dt

    # -- step 7: retention ---------------------------------------------------------------

    DAY = 86400000
    GEN_START = 1767225600000  # loanwire-gen's default --start, 2026-01-01T00:00:00Z

    def history_feed(self, borrowers, days=730):
        """loanwire-gen's feed for `borrowers` borrowers cut at `days` of event time (the
        generator runs on until told; ~65 events a borrower make 2 years); returns
        (path, events, borrower ids)."""
        raw = os.path.join(self.work, "history.raw.jsonl")
        path = os.path.join(self.work, "history.jsonl")
        self.run([self.prog("loanwire-gen"), "--borrowers", str(borrowers), "--events",
                  str(110 * borrowers), "-o", raw], log=os.path.join(self.work, "gen-hist.log"))
        end = self.GEN_START + days * self.DAY
        n, last, bids = 0, 0, set()
        pat = re.compile(r'"occurred_at":(\d+)')
        bpat = re.compile(r'"borrower_id":"([^"]+)"')
        with open(raw) as f, open(path, "w") as o:
            for line in f:
                t = int(pat.search(line).group(1))
                if t >= end:
                    continue
                o.write(line)
                n += 1
                last = max(last, t)
                bids.add(bpat.search(line).group(1))
        os.unlink(raw)
        if last < end - 30 * self.DAY:
            raise BenchError("history feed reaches only %.0f days" % (
                (last - self.GEN_START) / self.DAY))
        return path, n, sorted(bids)

    def bench_load(self, feed, extra=()):
        """FLUSHALL, then the feed through loanwire-exposure-bench; returns (used_memory
        delta without the alert stream, counts dict)."""
        script = subprocess.run([self.prog("loanwire-exposure"), "--print-script"],
                                stdout=subprocess.PIPE, check=True).stdout
        self.r.cmd("FLUSHALL")
        self.r.cmd("SCRIPT", "LOAD", script)
        time.sleep(0.2)
        base = int(self.r.info("memory")["used_memory"])
        p = subprocess.run([self.prog("loanwire-exposure-bench"), "--redis", self.url] +
                           list(extra) + [feed], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        m = re.search(rb"(\d+) events in .* applied (\d+) dup (\d+) ooo (\d+) fenced (\d+) "
                      rb"alerts (\d+) refused (\d+)", p.stdout)
        if p.returncode != 0 or not m:
            raise BenchError("loanwire-exposure-bench %s: %s %s" % (
                " ".join(extra), p.stdout[-300:], p.stderr[-300:]))
        self.r.cmd("DEL", "lw:alerts")
        time.sleep(0.2)
        used = int(self.r.info("memory")["used_memory"]) - base
        c = dict(zip(("events", "applied", "dup", "ooo", "fenced", "alerts", "refused"),
                     (int(x) for x in m.groups())))
        return used, c

    def query(self, bid):
        q = subprocess.run([self.prog("loanwire-query"), "--redis", self.url, "--borrower",
                            bid], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if q.returncode != 0:
            raise BenchError("loanwire-query --borrower %s: exit %d %s" % (
                bid, q.returncode, q.stderr[-200:]))
        return json.loads(q.stdout)

    def step_retention(self):
        nb = self.a.ret_borrowers
        say("==> [7/8] retention: %s borrowers, 2 simulated years of loanwire-gen history"
            % fmt_int(nb))
        feed, n, bids = self.history_feed(nb)
        rnd = random.Random(7)
        sample = rnd.sample(bids, min(self.a.sample, len(bids)))
        res = {}
        for label, extra in (("kept for ever (today)", ["--retain-ended", "off",
                                                        "--retain-negative", "off"]),
                             ("retention 90d / 5y (default)", [])):
            used, c = self.bench_load(feed, extra)
            got = {b: self.query(b) for b in sample}
            loans = statistics.mean(len(j.get("loans", [])) for j in got.values())
            res[label] = (used / len(bids), c, got, loans)
            say("retention: %s: %.0f bytes per borrower, %.2f loans held (sample), %s" % (
                label, used / len(bids), loans, c))
        (l0, (b0, c0, g0, n0)), (l1, (b1, c1, g1, n1)) = res.items()
        # Retention drops ended loans only: every total and active count the same.
        for b in sample:
            for k in ("total_outstanding_fen", "active_loans", "active_lenders",
                      "past_due_fen"):
                if g0[b].get(k) != g1[b].get(k):
                    raise BenchError("retention changed %s of borrower %s: %s -> %s" % (
                        k, b, g0[b].get(k), g1[b].get(k)))
        if c0["applied"] != c1["applied"] or c1["refused"] != c0["refused"]:
            raise BenchError("retention changed what was applied: %s vs %s" % (c0, c1))
        for label, (per, c, _, loans) in res.items():
            self.row("7 retention", "Redis bytes per borrower after 2 simulated years "
                     "(%s borrowers, %s events), ended loans %s" % (fmt_int(len(bids)),
                                                                     fmt_int(n), label),
                     "%.0f" % per, "%.2f loans held (sample of %d)" % (loans, len(sample)),
                     "", "", "")
        self.notes.append(
            "Retention: loanwire-gen --borrowers %d cut at 730 days of event time (%s events), "
            "applied through loanwire-exposure-bench twice into an empty Redis (alert stream "
            "excluded): %s %.0f bytes per borrower, %s %.0f; %d sampled borrowers' totals, "
            "active loans and lenders identical in both; applied %d both times." % (
                nb, fmt_int(n), l0, b0, l1, b1, len(sample), c0["applied"]))
        self.figure("bytes_per_borrower_2y_kept", b0, "used_memory delta / %d borrowers after "
                    "2 simulated years (%d events), ended loans kept" % (len(bids), n))
        self.figure("bytes_per_borrower_2y_retained", b1, "the same with --retain-ended 90d "
                    "--retain-negative 5y (defaults)")
        # step 8's templates, read while the retained states are in Redis
        self.retained = (self.templates(feed, bids), b1)
        self.r.cmd("FLUSHALL")

    # -- step 8: the memory model, checked ----------------------------------------------

    def step_memsim(self):
        if not getattr(self, "retained", None):
            self.step_retention()
        tmpl, per = self.retained
        tmpl = self.templates_checked(tmpl)
        sizes = [int(x) for x in str(self.a.memsim_borrowers).split(",") if x]
        say("==> [8/8] memsim: step 7's retained states copied to %s borrowers" %
            ", ".join(fmt_int(x) for x in sizes))
        for m in sizes:
            used, dt, ev = self.memsim_load(tmpl, m)
            pred = m * per
            err = (used - pred) / pred
            say("memsim: %s borrowers: used_memory %.0f MB, model %.0f MB (%+.1f %%), %.0f s"
                % (fmt_int(m), used / 1e6, pred / 1e6, 100 * err, dt))
            self.row("8 memsim", "Redis used_memory, %s borrowers with 2-year retained state "
                     "(%s events through the real store)" % (fmt_int(m), fmt_int(ev)),
                     "%.0f MB (%.0f B/borrower)" % (used / 1e6, used / m),
                     "model %.0f MB (%.0f B x borrowers)" % (pred / 1e6, per),
                     "%.3f" % (used / pred), "", "")
            self.figure("memsim_%d" % m, {"borrowers": m, "used_memory": used,
                                          "predicted": pred, "events": ev, "seconds": dt},
                        "templated load through loanwire-exposure-bench vs borrowers x "
                        "bytes_per_borrower_2y_retained")
        self.r.cmd("FLUSHALL")

    def templates_checked(self, tmpl):
        """Each template applied once under a scratch id, its key sizes compared with its
        borrower's: a reduced template can raise an alert its whole feed never raised (a
        DELINQUENCY read right after the DRAWDOWN, without the steps between: seen once in
        10M copies); such a borrower's template becomes its whole feed."""
        def tid(k):
            return "tpl%019d" % k
        for attempt in (1, 2):
            self.r.cmd("FLUSHALL")
            path = os.path.join(self.work, "memsim-templates.jsonl")
            with open(path, "w") as f:
                for k, (b, evs) in enumerate(tmpl):
                    for line in evs:
                        f.write(line.replace(b, tid(k)))
            p = subprocess.run([self.prog("loanwire-exposure-bench"), "--redis", self.url,
                                path], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            os.unlink(path)
            if p.returncode != 0:
                raise BenchError("memsim templates: loanwire-exposure-bench: %s %s" % (
                    p.stdout[-300:], p.stderr[-300:]))
            bad = [k for k, (b, _) in enumerate(tmpl)
                   if self.r.cmd("STRLEN", "b:{%s}" % tid(k)) != self.tref[b]["_strlen"]
                   or self.r.cmd("HLEN", "a:{%s}" % tid(k)) != self.tref[b]["_hlen"]]
            self.r.cmd("FLUSHALL")
            if not bad:
                return tmpl
            if attempt == 2:
                raise BenchError("memsim: %d templates differ from their borrowers even as "
                                 "whole feeds (first: %s)" % (len(bad), tmpl[bad[0]][0]))
            say("memsim: %d of %d reduced templates differ from their borrowers; their whole "
                "feeds instead" % (len(bad), len(tmpl)))
            tmpl = [(b, self.tfull[b]) if k in set(bad) else (b, evs)
                    for k, (b, evs) in enumerate(tmpl)]
        return tmpl

    def templates(self, feed, bids):
        """Per borrower of step 7, the events that rebuild its retained state through the
        real store (not a copy of its bytes). A borrower with an alert hash (a:{id}: only
        its whole feed rebuilds that history), or whose latest declared income came with an
        event of a loan since pruned, gets all its events; any other, for each loan it
        still holds (by loanwire-query), the loan's first and last events (the first opens
        it as in the feed; its window entry is pruned as time moves on), its latest event
        with an income, and its applications in the last 30 days. Also records each
        template's key sizes, to check the copies by."""
        held, self.tref, self.tfull, full = {}, {}, {}, set()
        for b in bids:
            j = self.query(b)
            ak = "a:{%s}" % b
            j["_strlen"] = self.r.cmd("STRLEN", "b:{%s}" % b)
            j["_hlen"] = self.r.cmd("HLEN", ak)
            self.tref[b] = j
            if self.r.cmd("EXISTS", ak):
                full.add(b)
            held[b] = ({(l["platform_id"], l["loan_id"]) for l in j.get("loans", [])},
                       j.get("as_of", 0))
        evs = {b: [] for b in bids}
        with open(feed) as f:
            for line in f:
                e = json.loads(line)
                evs[e["borrower_id"]].append((e, line))
        out = []
        for b in bids:
            keys, asof = held[b]
            first, last, pick, income = {}, {}, [], None
            for e, line in evs[b]:
                k = (e["platform_id"], e["loan_id"])
                app = e["event_type"] == "APPLICATION"
                if e.get("annual_income_fen") is not None:
                    income = (e, line)
                if app:
                    if e["occurred_at"] > asof - 30 * self.DAY:
                        pick.append(line)
                elif k in keys:
                    first.setdefault(k, line)
                    last[k] = line
            if income and income[0]["event_type"] != "APPLICATION" and \
                    (income[0]["platform_id"], income[0]["loan_id"]) not in keys:
                full.add(b)
            self.tfull[b] = [line for _, line in evs[b]]
            if b in full:
                out.append((b, self.tfull[b]))
                continue
            want = set(pick) | set(first.values()) | set(last.values())
            if income:
                want.add(income[1])
            out.append((b, [line for _, line in evs[b] if line in want]))
        return out

    def memsim_load(self, tmpl, m):
        """m borrowers, borrower i a copy of template i % len(tmpl) under its own id, through
        loanwire-exposure-bench in files of 200,000 borrowers; returns (used_memory delta,
        seconds, events). 200 copies are checked against their templates by loanwire-query."""
        import base64
        import hashlib
        script = subprocess.run([self.prog("loanwire-exposure"), "--print-script"],
                                stdout=subprocess.PIPE, check=True).stdout
        self.r.cmd("FLUSHALL")
        self.r.cmd("SCRIPT", "LOAD", script)
        time.sleep(0.2)
        base = int(self.r.info("memory")["used_memory"])

        def bid_of(i):
            return base64.urlsafe_b64encode(hashlib.md5(b"sim%d" % i).digest())[:22].decode()
        t0 = time.monotonic()
        events = 0
        path = os.path.join(self.work, "memsim.jsonl")
        for start in range(0, m, 200000):
            lines = 0
            with open(path, "w") as f:
                for i in range(start, min(m, start + 200000)):
                    b, evs = tmpl[i % len(tmpl)]
                    nb = bid_of(i)
                    for line in evs:
                        f.write(line.replace(b, nb))
                    lines += len(evs)
            p = subprocess.run([self.prog("loanwire-exposure-bench"), "--redis", self.url,
                                path], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            mm = re.search(rb"(\d+) events in .* refused (\d+)", p.stdout)
            if p.returncode != 0 or not mm or int(mm.group(1)) != lines or int(mm.group(2)):
                raise BenchError("memsim load: %d events, loanwire-exposure-bench: %s %s" % (
                    lines, p.stdout[-300:], p.stderr[-300:]))
            events += lines
            say("  memsim load: %s / %s borrowers (%s events)" % (
                fmt_int(min(m, start + 200000)), fmt_int(m), fmt_int(events)))
        os.unlink(path)
        dt = time.monotonic() - t0
        self.r.cmd("DEL", "lw:alerts")
        time.sleep(0.2)
        used = int(self.r.info("memory")["used_memory"]) - base
        # copies read back like their templates (same totals, same loans held)
        for i in random.Random(8).sample(range(m), min(200, m)):
            b = tmpl[i % len(tmpl)][0]
            j = self.query(bid_of(i))
            ref = self.tref[b]
            for k in ("total_outstanding_fen", "active_loans"):
                if j.get(k) != ref.get(k):
                    raise BenchError("memsim: copy %s of %s: %s %s, template %s" % (
                        bid_of(i), b, k, j.get(k), ref.get(k)))
            nb = bid_of(i)
            if self.r.cmd("STRLEN", "b:{%s}" % nb) != ref["_strlen"] or \
                    self.r.cmd("HLEN", "a:{%s}" % nb) != ref["_hlen"]:
                raise BenchError("memsim: copy %s of %s: state %d bytes / %d alerts, template "
                                 "%d / %d" % (nb, b, self.r.cmd("STRLEN", "b:{%s}" % nb),
                                              self.r.cmd("HLEN", "a:{%s}" % nb),
                                              ref["_strlen"], ref["_hlen"]))
            if len(j.get("loans", [])) != len(ref.get("loans", [])):
                raise BenchError("memsim: copy %s of %s holds %d loans, template %d" % (
                    bid_of(i), b, len(j.get("loans", [])), len(ref.get("loans", []))))
        return used, dt, events

    # -- step 10: recorded inquiries ---------------------------------------------------------

    @staticmethod
    def mk_event(eid, et, pid, lender, bid, lid, seq, at, amount, out):
        return ('{"event_id":"%s","event_type":"%s","platform_id":"%s","lender_id":"%s",'
                '"borrower_id":"%s","loan_id":"%s","product":"INSTALLMENT","sequence":%d,'
                '"occurred_at":%d,"amount_fen":%d,"outstanding_fen":%d,'
                '"credit_limit_fen":0,"days_past_due":0,"past_due_fen":0,"currency":"CNY",'
                '"annual_income_fen":null,"term_months":12}\n' % (
                    eid, et, pid, lender, bid, lid, seq, at, amount, out))

    def wrk(self, url, secs):
        """wrk -t2 -c64 -> (requests/s, p99 ms, requests, non-2xx)."""
        out = subprocess.run(["wrk", "-t2", "-c64", "-d%ds" % secs, "--latency", url],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=secs + 60)
        txt = out.stdout.decode()
        rps = re.search(r"Requests/sec:\s+([\d.]+)", txt)
        p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", txt)
        n = re.search(r"(\d+) requests in", txt)
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", txt)
        if out.returncode != 0 or not rps or not p99 or not n:
            raise BenchError("wrk %s: %s %s" % (url, txt[-400:], out.stderr.decode()[-300:]))
        ms = float(p99.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
        return float(rps.group(1)), ms, int(n.group(1)), int(bad.group(1)) if bad else 0

    def query_on(self, binary, extra):
        log = os.path.join(self.work, "query-%s.log" % os.path.basename(os.path.dirname(binary)))
        p = subprocess.Popen([binary, "--redis", self.url, "--listen", "127.0.0.1:0",
                              "--no-auth"] + extra, stdout=subprocess.DEVNULL,
                             stderr=open(log, "wb"))
        t_end = time.monotonic() + 20
        while time.monotonic() < t_end:
            m = re.search(rb"listening on [\d.]+:(\d+)", open(log, "rb").read())
            if m:
                return p, int(m.group(1))
            if p.poll() is not None:
                break
            time.sleep(0.05)
        p.kill()
        raise BenchError("%s did not start: %s" % (binary, open(log, errors="replace").read()))

    def step_inquiries(self):
        a = self.a
        secs = 5 if a.quick else 20
        # Untimed wrk first, the same for both servers. 10 s, not 2: the bench's Kafka
        # broker is minutes old, and its JIT was still compiling the produce path
        # during a recorded run (measured: the broker's CPU per recorded look-up went
        # 60, 28, 43, 30, 13, 10 us over six 8-s runs after a broker restart).
        warm = a.lookup_warmup if a.lookup_warmup is not None else (2 if a.quick else 10)
        say("==> [10] inquiries: look-up recorded vs unrecorded (wrk -t2 -c64, %d s each "
            "after %d s untimed)" % (secs, warm))
        self.r.cmd("FLUSHALL")
        bid = "InqBenchBorrower000000"
        now = int(time.time() * 1000)
        path = os.path.join(self.work, "inq.jsonl")
        with open(path, "w") as f:
            for j, (pid, lender) in enumerate((("ALIPAY", "BANK-CMB"), ("WEBANK", "WEBANK"),
                                               ("JD", "JD-MICRO"))):
                f.write(self.mk_event("inq-bench-%d" % j, "DRAWDOWN", pid, lender, bid,
                                      "L-%d" % j, 1, now - (j + 1) * 86400000, 1000000,
                                      1000000))
        # loaded by the older store when there is one (layout 4, which both servers
        # read), so both answer the same borrower state
        loader = self.prog("loanwire-exposure-bench")
        if a.lookup_base_bin and os.path.exists(os.path.join(a.lookup_base_bin,
                                                             "loanwire-exposure-bench")):
            loader = os.path.join(a.lookup_base_bin, "loanwire-exposure-bench")
        self.run([loader, "--redis", self.url, path],
                 log=os.path.join(self.work, "inq-load.log"))
        topic = "lwbench.inq.%d" % int(time.time())
        self.run([self.prog("loanwire-topics"), "create", "-b", self.bs, "--partitions", "6",
                  "--events-topic", topic, "--alerts-topic", topic + ".alerts", "--dlq-topic",
                  topic + ".dlq", "--inquiries-topic", topic + ".inq"],
                 log=os.path.join(self.work, "topics.log"))
        for _ in range(40):  # the new partitions' leaders, as the broker tells kcat
            try:
                self.end_offsets(topic + ".inq")
                break
            except BenchError:
                time.sleep(0.5)
        url_path = "/v1/borrowers/%s/exposure?purpose=LOAN_APPROVAL" % bid
        res = {}
        for label, binary, extra in (
                ("unrecorded", a.lookup_base_bin and os.path.join(a.lookup_base_bin,
                                                                  "loanwire-query"), []),
                ("recorded", self.prog("loanwire-query"),
                 ["--brokers", self.bs, "--inquiries-topic", topic + ".inq"])):
            if not binary:
                say("  no --lookup-base-bin: the unrecorded rate is not measured")
                continue
            before = self.end_offsets(topic + ".inq")
            p, port = self.query_on(binary, extra)
            try:
                if warm > 0:
                    self.wrk("http://127.0.0.1:%d%s" % (port, url_path), warm)
                before = self.end_offsets(topic + ".inq")
                res[label] = self.wrk("http://127.0.0.1:%d%s" % (port, url_path), secs)
            finally:
                p.terminate()
                p.wait()
            rec = self.end_offsets(topic + ".inq") - before
            rps, p99, n, bad = res[label]
            if bad:
                raise BenchError("look-up %s: %d of %d answers were not 2xx" % (label, bad, n))
            if label == "recorded" and rec < n:
                raise BenchError("look-up recorded: %d answered, only %d inquiries on the "
                                 "topic" % (n, rec))
            say("  look-up %s: %.0f req/s, p99 %.2f ms, %d requests, %d inquiries recorded" % (
                label, rps, p99, n, rec))
        if "recorded" in res:
            rps, p99, n, _ = res["recorded"]
            base = res.get("unrecorded")
            ratio = rps / base[0] if base else None
            self.row("10 inquiries", "exposure look-up, every one recorded on Kafka (wrk -t2 "
                     "-c64, one borrower); p99 %.1f ms%s" % (
                         p99, "; unrecorded p99 %.1f ms" % base[1] if base else ""),
                     fmt_rate(rps), fmt_rate(base[0]) if base else "",
                     "%.2f" % ratio if ratio else "", ">= 0.7x, p99 <= 20 ms",
                     ("yes" if ratio >= 0.7 and p99 <= 20 else "no") if ratio else "")
        os.unlink(path)
        self.inquiry_memory()
        self.r.cmd("FLUSHALL")

    def inquiry_memory(self):
        """Bytes of the state string per borrower when a 90-day window keeps what the
        default pack (windows up to 30 days) prunes: each borrower has 3 loans and 9
        applications from distinct lenders, one every 10 days over 90 days; consumed by
        loanwire-exposure once with the default pack, once with a stacking_90d rule."""
        n = 500 if self.a.quick else 20000
        now = int(time.time() * 1000)
        path = os.path.join(self.work, "inqmem.jsonl")
        rules90 = os.path.join(self.work, "rules90")
        with open(os.path.join(self.a.root, "consumers/exposure/rules.default")) as f:
            default_rules = f.read()
        with open(rules90, "w") as f:
            f.write(default_rules + "stacking_90d 1 WARNING kind=stacking min_lenders=12 "
                    "window=90d\n")
        import base64
        import hashlib
        with open(path, "w") as f:
            for i in range(n):
                bid = base64.urlsafe_b64encode(hashlib.md5(b"m%d" % i).digest())[:22].decode()
                for j in range(3):
                    f.write(self.mk_event("m-%d-l%d" % (i, j), "DRAWDOWN", "ALIPAY", "L%d" % j,
                                          bid, "LN-%d-%d" % (i, j), 1,
                                          now - 100 * 86400000 + j, 100000, 100000))
                for k in range(9):
                    f.write(self.mk_event("m-%d-a%d" % (i, k), "APPLICATION", "WEBANK",
                                          "APPL-%d" % k, bid, "AP-%d-%d" % (i, k), 1,
                                          now - (85 - 10 * k) * 86400000, 0, 0))
        out = []
        for label, extra in (("default pack (windows <= 30 d)", []),
                             ("with a 90-day stacking rule", ["--rules", rules90])):
            self.r.cmd("FLUSHALL")
            topic = "lwbench.inqmem.%d" % int(time.time() * 1000)
            self.topic_create(topic, 3)
            self.run([self.prog("loanwire-produce"), "-b", self.bs, "-t", topic, "-q", path],
                     log=os.path.join(self.work, "inqmem-produce.log"))
            self.run(self.exposure_args(topic, topic, "inqmem", ["--from-beginning",
                                                                 "--until-caught-up"] + extra),
                     log=os.path.join(self.work, "inqmem-exposure.log"))
            total, keys, cur = 0, 0, b"0"
            while True:
                cur, ks = self.r.cmd("SCAN", cur, "MATCH", "b:*", "COUNT", 10000)
                for k in ks:
                    total += int(self.r.cmd("STRLEN", k))
                    keys += 1
                if cur == b"0":
                    break
            if keys != n:
                raise BenchError("inquiry memory: %d borrower states, expected %d" % (keys, n))
            out.append(total / keys)
            say("  state string, %s: %.1f bytes per borrower (%d borrowers)" % (
                label, total / keys, keys))
        os.unlink(path)
        self.row("10 inquiries", "state string bytes per borrower, 3 loans + 9 applications "
                 "over 90 d (%s borrowers): default pack (30 d kept) vs a 90-day window" %
                 fmt_int(n), "%.0f / %.0f" % (out[0], out[1]), "", "+%.0f" % (out[1] - out[0]))

    # -- step 5: scale-out ---------------------------------------------------------------

    def step_scaleout(self):
        n = self.a.events
        say("==> [5/6] scale-out: 2 loanwire-exposure processes in one group, %s events" %
            fmt_int(n))
        rate, dt, cpu, stats, _ = self.catchup(2, "c2")
        msg = self.verify_state("scale-out (2 consumers)", sample=min(self.a.sample, 200))
        self.notes.append("Scale-out, 2 consumers: %.2f s (%s); %s. CPU %s." % (
            dt, "; ".join(", ".join("%s %d" % kv for kv in s.items()) for s in stats), msg,
            cpu.text()))
        r1 = self.c1[0] if getattr(self, "c1", None) else None
        c1txt = self.c1[2].text() if r1 else ""
        sat = self.saturation(cpu)
        self.scale = (r1, rate, c1txt, cpu.text(), sat)
        self.row("5 scale-out", "events/s, 2 consumers in one group (vs 1 in step 2), totals "
                 "exact", fmt_rate(rate), fmt_rate(r1) + " (1 consumer)",
                 "%.2f" % (rate / r1) if r1 else "", "", sat)
        us1 = self.c1[2].us_per("redis-server", n) if r1 else 0
        self.row("5 scale-out", "redis-server / loanwire-exposure CPU per event, 2 consumers",
                 "%.1f / %.1f µs" % (cpu.us_per("redis-server", n),
                                     cpu.us_per("loanwire-exposure", n)),
                 "%.1f / %.1f µs (1 consumer)" % (us1, self.c1[2].us_per("loanwire-exposure", n))
                 if r1 else "", "", "", "")
        self.r.cmd("FLUSHALL")

    # -- step 6: the same catch-up on a Redis Cluster --

    def cluster_masters(self):
        """(host, port) of every master of the bench cluster, from CLUSTER SLOTS."""
        h, p = self.a.cluster.split("//")[-1].split("/")[0].split(":")
        slots = Redis(h, int(p)).cmd("CLUSTER", "SLOTS")
        return sorted({(r[2][0].decode(), int(r[2][1])) for r in slots})

    def cluster_catchup(self, nproc, label, extra=()):
        """nproc consumers --until-caught-up on step 1's topic into the flushed cluster; CPU
        of the consumers and of every redis-server of the cluster (masters and replicas)."""
        n = self.a.events
        masters = self.cluster_masters()
        for h, p in masters:
            Redis(h, p).cmd("FLUSHALL")
        self.wait_quiet("cluster catch-up")
        pids = {}
        env = {k: v for k, v in os.environ.items()
               if k not in ("LOANWIRE_REDIS", "LOANWIRE_BOOTSTRAP", "LOANWIRE_REDIS_PORT")}
        env["LOANWIRE_STACK_DIR"] = self.a.cluster_stack_dir or ""
        for line in subprocess.run(["bash", os.path.join(self.a.root, "deploy", "stack.sh"),
                                    "pids"], env=env, stdout=subprocess.PIPE,
                                   text=True).stdout.split("\n"):
            f = line.split()
            if len(f) == 3 and f[0].startswith("redis-") and f[1].isdigit():
                pids["redis-server " + f[0]] = int(f[1])
        group = "bench-%s-%s" % (label, self.run_id)
        cids = ["bench-%s-%d" % (label, i) for i in range(nproc)]
        procs, logs = [], []
        if not pids:
            raise BenchError("stack.sh pids named no redis-server of the cluster (%s)" %
                             self.a.cluster_stack_dir)
        with CpuSampler(dict(self.fixed_pids, **pids)) as cpu:
            t0, wall0 = time.monotonic(), time.time()
            for cid in cids:
                log = os.path.join(self.work, "exposure-%s.log" % cid)
                logs.append(log)
                p = subprocess.Popen(self.exposure_args(self.events_topic, group, cid,
                                                        ["--from-beginning", "--until-caught-up",
                                                         "--status", "1"] + list(extra),
                                                        url=self.a.cluster),
                                     stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
                procs.append(p)
                cpu.add("loanwire-exposure" + ("" if nproc == 1 else "#%d" % len(procs)), p.pid)
            self.wait_progress(procs, "%d consumer(s) on the cluster" % nproc, cpu=cpu)
            dt = time.monotonic() - t0
        for p, log in zip(procs, logs):
            if p.returncode != 0:
                raise BenchError("loanwire-exposure (cluster) exited %d: %s" % (
                    p.returncode, open(log, errors="replace").read()[-1200:]))
        stats = [self.parse_stopped(log) for log in logs]
        consumed = sum(s.get("consumed", 0) for s in stats)
        if consumed < n:
            raise BenchError("cluster consumers consumed %d events, the topic has %d" % (
                consumed, n))
        self.check_applied(stats, n, nproc)
        keys = sum(Redis(h, p).cmd("DBSIZE") for h, p in masters)
        say("cluster, %d consumer(s)%s: %s events in %.2f s = %s events/s; %d keys; CPU: %s" % (
            nproc, " " + " ".join(extra) if extra else "", fmt_int(n), dt, fmt_rate(n / dt),
            keys, cpu.text()))
        formed, before = self.group_formed(logs, wall0)
        after = None
        if formed is not None:
            after = (n - before) / (dt - formed)
            say("cluster, %d consumer(s): every member assigned %.2f s after the start, by when "
                "%s events were applied (status lines); from then on %s events/s" % (
                    nproc, formed, fmt_int(before), fmt_rate(after)))
        return n / dt, dt, cpu, formed, after

    @staticmethod
    def group_formed(logs, wall0):
        """When the last consumer of a group got its first partitions (seconds after wall0,
        from the logs' timestamps), and the events applied by then as the status lines tell
        (each consumer's last one at or before that moment; a lower bound, off by at most a
        status period of the consumers that had partitions earlier). None when a log lacks
        an assignment."""
        def at(line):
            t = datetime.datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f")
            return t.replace(tzinfo=datetime.timezone.utc).timestamp() - wall0
        stamp = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z .*loanwire-exposure: "
        lines = [[l for l in open(log, errors="replace").read().splitlines()
                  if re.match(stamp, l)] for log in logs]
        firsts = [next((at(l) for l in ls if re.search(r": assigned \d+ partition", l)), None)
                  for ls in lines]
        if None in firsts:
            return None, 0
        formed, before = max(firsts), 0
        for ls in lines:
            counts = [int(m.group(1)) for l in ls
                      for m in [re.search(r": \d+ ev/s +applied (\d+) ", l)]
                      if m and at(l) <= formed]
            before += counts[-1] if counts else 0
        return formed, before

    def step_cluster(self):
        n = self.a.events
        if not self.a.cluster:
            raise BenchError("step 6 needs --cluster (bench/run.sh starts one)")
        say("==> [6/6] Redis Cluster (3 masters, 1 replica each): catch-up of %s events with 1 "
            "and 2 consumers, and with --wait-replicas 1" % fmt_int(n))
        r1, dt1, cpu1, f1, a1 = self.cluster_catchup(1, "k1")
        r2, dt2, _, f2, a2 = self.cluster_catchup(2, "k2")
        rw, dtw, _, _, _ = self.cluster_catchup(1, "kw", ["--wait-replicas", "1",
                                                          "--wait-timeout", "5000"])
        single = self.c1[0] if getattr(self, "c1", None) else None
        us_c = cpu1.us_per("loanwire-exposure", n)
        us_r = cpu1.us_per("redis-server", n)
        self.notes.append("Cluster catch-up: 1 consumer %.2f s, 2 consumers %.2f s, 1 consumer "
                          "with WAIT %.2f s. CPU (1 consumer) %s." % (dt1, dt2, dtw, cpu1.text()))
        self.row("6 cluster", "catch-up events/s, 3-master cluster, 1 consumer (vs one Redis, "
                 "step 2)", fmt_rate(r1), fmt_rate(single) + " (one Redis)" if single else "",
                 "%.2f" % (r1 / single) if single else "", "≥ 0.8",
                 ("yes" if r1 >= 0.8 * single else "no") if single else "")
        self.row("6 cluster", "catch-up events/s, 2 consumers in one group (vs 1)",
                 fmt_rate(r2), fmt_rate(r1) + " (1 consumer)", "%.2f" % (r2 / r1), "≥ 1.0",
                 "yes" if r2 >= r1 else "no")
        if a1 is not None and a2 is not None:
            # librdkafka 2.0 rejoins ~2 s after a SyncGroup answered "rebalance in
            # progress", which two consumers started together meet about half the time
            self.row("6 cluster", "the same from when every member had partitions (group "
                     "formed after %.2f / %.2f s; events the status lines show applied "
                     "before it counted out)"
                     % (f2, f1), fmt_rate(a2), fmt_rate(a1) + " (1 consumer)",
                     "%.2f" % (a2 / a1), "", "")
        self.row("6 cluster", "CPU µs per event: loanwire-exposure / all redis-server (1 consumer)",
                 "%.2f / %.2f µs" % (us_c, us_r), "", "", "consumer ≤ 2.1 µs",
                 "yes" if us_c <= 2.1 else "no")
        self.row("6 cluster", "catch-up events/s with --wait-replicas 1 (WAIT per batch)",
                 fmt_rate(rw), fmt_rate(r1) + " (no WAIT)", "%.2f" % (rw / r1), "", "")
        # the default batch's trade (BENCHMARKS.md "Batch size on a cluster"), on request
        for b in [int(x) for x in (self.a.cluster_batches or "").split(",") if x.strip()]:
            rb, _, cpub, _, _ = self.cluster_catchup(1, "kb%d" % b, ["--batch", str(b)])
            self.row("6 cluster", "catch-up events/s at --batch %s, 1 consumer; CPU µs per "
                     "event loanwire-exposure / all redis-server" % fmt_int(b),
                     "%s; %.2f / %.2f µs" % (fmt_rate(rb), cpub.us_per("loanwire-exposure", n),
                                             cpub.us_per("redis-server", n)),
                     fmt_rate(r1) + " (default batch)", "%.2f" % (rb / r1), "", "")

    # -- step 9: reconciliation ----------------------------------------------------------

    def step_reconcile(self):
        """loanwire-reconcile over a snapshot of n loans of one platform (one loan per
        borrower, built through the consumer's store without Kafka), with 10 planted
        balance mismatches; plain and --full, on one Redis and on the cluster."""
        n = self.a.recon_loans
        say("==> [9] reconciliation: a %s-loan snapshot of ALIPAY against the bureau"
            % fmt_int(n))
        targets = [("one Redis", self.url, self.r.cmd)]
        if self.a.cluster:
            targets.append(("cluster", self.a.cluster, None))
        for label, url, _ in targets:
            if label == "one Redis":
                self.r.cmd("FLUSHALL")
            else:
                self.cluster_flushall()
            snap, dt_load = self.recon_load(url, n)
            for full in (False, True):
                args = [self.prog("loanwire-reconcile"), "--redis", url, "--platform", "ALIPAY"]
                args += ["--full"] if full else []
                t0 = time.monotonic()
                p = subprocess.run(args + [snap], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                dt = time.monotonic() - t0
                kinds = [json.loads(l)["kind"] for l in p.stdout.splitlines()]
                if p.returncode != 1 or kinds != ["balance_mismatch"] * 10:
                    raise BenchError("reconcile %s%s: exit %d, %d discrepancies %s (want 10 "
                                     "balance_mismatch): %s" % (
                                         label, " --full" if full else "", p.returncode,
                                         len(kinds), sorted(set(kinds)), p.stderr[-400:]))
                m = re.search(rb"took ([0-9.]+) MiB", p.stderr)
                say("reconcile %s%s: %s loans in %.2f s: %s loans/s%s" % (
                    label, " --full" if full else "", fmt_int(n), dt, fmt_rate(n / dt),
                    ", loan set %s MiB" % m.group(1).decode() if m else ""))
                self.row("7 reconcile", "loans reconciled per second, %s-loan snapshot, %s%s"
                         % (fmt_int(n), label, ", --full (+ SCAN of every borrower)"
                            if full else ""), fmt_rate(n / dt), "", "", "", "")
            self.notes.append(
                "Reconciliation (%s): %s borrowers with one ALIPAY loan each (DRAWDOWN + "
                "REPAYMENT) loaded through `loanwire-exposure-bench` in %.0f s; the snapshot "
                "has all of them, 10 with a balance 1 fen off (each reported). Rate = "
                "loans / wall time of the whole program, connection and summary included."
                % (label, fmt_int(n), dt_load))
            os.unlink(snap)
        self.r.cmd("FLUSHALL")
        if self.a.cluster:
            self.cluster_flushall()

    def cluster_flushall(self):
        hp = self.a.cluster[len("redis://"):].split("/")[0]
        host, _, port = hp.partition(":")
        seed = Redis(host, int(port))
        for row in seed.cmd("CLUSTER", "SLOTS"):
            Redis(row[2][0].decode(), int(row[2][1])).cmd("FLUSHALL")

    def recon_load(self, url, n):
        """n borrowers, one ALIPAY instalment loan each, through loanwire-exposure-bench; the
        platform's snapshot of them (10 balances 1 fen off); (snapshot path, seconds)."""
        import base64
        import hashlib
        now = 1775000000000
        day = 86400000
        snap = os.path.join(self.work, "recon-snapshot.jsonl")
        per_file = 250000
        t0 = time.monotonic()
        plant = set(range(0, n, max(1, n // 10))[:10])
        with open(snap, "w") as sf:
            for start in range(0, n, per_file):
                path = os.path.join(self.work, "recon.jsonl")
                lines = 0
                with open(path, "w") as f:
                    for i in range(start, min(n, start + per_file)):
                        bid = base64.urlsafe_b64encode(
                            hashlib.md5(b"r%d" % i).digest())[:22].decode()
                        lid = "JB-2ec0cb1e-%d" % i
                        for seq, et, at, amt, out in ((1, "DRAWDOWN", now - 40 * day, 1500000,
                                                       1500000),
                                                      (2, "REPAYMENT", now, 50000, 1450000)):
                            f.write('{"event_id":"ALIPAY-2ec0cb1e-%d-%d","event_type":"%s",'
                                    '"platform_id":"ALIPAY","lender_id":"BANK-CMB",'
                                    '"borrower_id":"%s","loan_id":"%s","product":"INSTALLMENT",'
                                    '"sequence":%d,"occurred_at":%d,"amount_fen":%d,'
                                    '"outstanding_fen":%d,"credit_limit_fen":0,'
                                    '"days_past_due":0,"past_due_fen":0,"currency":"CNY",'
                                    '"annual_income_fen":null,"term_months":12}\n' % (
                                        i, seq, et, bid, lid, seq, at, amt, out))
                            lines += 1
                        sf.write('{"platform_id":"ALIPAY","loan_id":"%s","borrower_id":"%s",'
                                 '"sequence":2,"outstanding_fen":%d}\n' % (
                                     lid, bid, 1450000 + (1 if i in plant else 0)))
                p = subprocess.run([self.prog("loanwire-exposure-bench"), "--redis", url, path],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                m = re.search(rb"(\d+) events in .* applied (\d+)", p.stdout)
                if p.returncode != 0 or not m or int(m.group(2)) != lines:
                    raise BenchError("reconcile load: %d events written, loanwire-exposure-bench:"
                                     " %s %s" % (lines, p.stdout[-300:], p.stderr[-300:]))
                os.unlink(path)
                say("  reconcile load: %s / %s borrowers" % (fmt_int(min(n, start + per_file)),
                                                            fmt_int(n)))
        return snap, time.monotonic() - t0

    @staticmethod
    def saturation(cpu):
        s = cpu.summary()
        top = max(s.items(), key=lambda kv: kv[1][0]) if s else ("?", (0, 0))
        busy = cpu.machine_busy
        ncpu = os.cpu_count()
        if busy >= 90 * ncpu:
            return "machine CPU saturated (%.0f%% of %d00%%); top: %s %.0f%%" % (
                busy, ncpu, top[0], top[1][0])
        return "top: %s %.0f%% of a core; machine %.0f%% of %d00%%" % (
            top[0], top[1][0], busy, ncpu)

    # -- report --------------------------------------------------------------------------

    def report(self, wall):
        a = self.a
        lines = ["# Loanwire benchmark results (%s run, %s)" % (
            "quick" if a.quick else "full", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())),
            "", "| step | what | Loanwire | raw limit (same run) | ratio | target | met |",
            "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            lines.append("| " + " | ".join(str(x) for x in r) + " |")
        lines += ["", "Whole run: %.0f s. Machine: %s." % (wall, machine_line()),
                  "Versions: %s." % versions(self.a, self.bin), ""]
        if self.failed:
            lines += ["**FAILED:** " + "; ".join(self.failed), ""]
        lines += ["## Details", ""] + ["- " + n if not n.startswith("Memory") else n
                                        for n in self.notes]
        return "\n".join(lines) + "\n"


def first_line(args, pat=None):
    try:
        out = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             timeout=20).stdout.decode(errors="replace")
    except (OSError, subprocess.SubprocessError):
        return "?"
    if pat:
        m = re.search(pat, out)
        return m.group(1) if m else "?"
    return out.splitlines()[0].strip() if out else "?"


def versions(a, bindir):
    kafka = "?"
    try:
        pom = open(os.path.join(a.root, "deploy/kafka/pom.xml")).read()
        kafka = re.search(r"<kafka.version>(.*?)</kafka.version>", pom).group(1)
    except (OSError, AttributeError):
        pass
    cache = os.path.join(bindir, "..", "CMakeCache.txt")
    btype = "?"
    try:
        m = re.search(r"CMAKE_BUILD_TYPE:STRING=(.*)", open(cache).read())
        btype = m.group(1) or "default (RelWithDebInfo)"
    except (OSError, AttributeError):
        pass
    return ("Kafka %s (KRaft, one broker, Java %s), Redis %s, librdkafka %s, kcat %s, "
            "redis-cli %s, gcc %s, kernel %s, Python %s; build %s" % (
                kafka, first_line(["java", "-version"], r'version "([^"]+)"'),
                first_line(["redis-server", "--version"], r"v=(\S+)"),
                first_line(["kcat", "-V"], r"librdkafka (\S+)"),
                first_line(["kcat", "-V"], r"Version (\S+)"),
                first_line(["redis-cli", "--version"], r"redis-cli (\S+)"),
                first_line(["gcc", "-dumpfullversion"]), os.uname().release,
                sys.version.split()[0], btype))


def machine_line():
    model = "?"
    try:
        for ln in open("/proc/cpuinfo"):
            if ln.startswith("model name"):
                model = ln.split(":", 1)[1].strip()
                break
        mem = int(open("/proc/meminfo").readline().split()[1]) // 1024 // 1024
        load = open("/proc/loadavg").read().split()[:3]
    except OSError:
        mem, load = 0, ["?"] * 3
    return "%d cores (%s), %d GiB, load average %s at the end" % (
        os.cpu_count(), model, mem, " ".join(load))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run, a few seconds a step")
    ap.add_argument("--bin", required=True, help="folder with the loanwire-* programs")
    ap.add_argument("--root", required=True, help="repository root")
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--redis", required=True, help="redis://HOST:PORT (FLUSHALLed!)")
    ap.add_argument("--stack-dir", help="stack folder (for the kafka / redis pids)")
    ap.add_argument("--work", required=True, help="scratch folder for generated files")
    ap.add_argument("--out", help="write the markdown report here too")
    ap.add_argument("--events", type=int, help="N (default 2,000,000; quick 20,000)")
    ap.add_argument("--borrowers", type=int, help="feed population (100,000; quick 2,000)")
    ap.add_argument("--mem-borrowers", type=int, help="step 4 (1,000,000; quick 10,000)")
    ap.add_argument("--mem-borrowers-recent", type=int,
                    help="step 4, loans all opened in the last 30 days (200,000; quick 5,000)")
    ap.add_argument("--recon-loans", type=int, help="step 9 snapshot (1,000,000; quick 20,000)")
    ap.add_argument("--steps", default="1,2,3,4,5,6,7,8,9,10", help="steps to run (2, 5 and 6 need "
                    "1; 6 needs --cluster; 8 runs 7 first)")
    ap.add_argument("--cluster", help="redis://HOST:PORT of a Redis Cluster node (step 6; "
                    "FLUSHALLed!)")
    ap.add_argument("--cluster-stack-dir", help="its stack folder (for the redis pids)")
    ap.add_argument("--cluster-batches", help="step 6 also: one consumer's catch-up at each of "
                    "these --batch sizes, comma-separated (e.g. 20000,50000,100000,200000)")
    ap.add_argument("--ret-borrowers", type=int, help="step 7 population (5,000; quick 500)")
    ap.add_argument("--memsim-borrowers", help="step 8 sizes, comma-separated (1000000; quick "
                    "20000)")
    ap.add_argument("--figures", help="merge the measured figures into this JSON file "
                    "(bench/results/figures.json; bench/capacity.py reads it)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--lookup-base-bin", help="step 10: folder with a loanwire-query from "
                    "before issue 20 (no inquiry recorded): the unrecorded look-up rate")
    ap.add_argument("--lookup-warmup", type=int, help="step 10: seconds of untimed wrk "
                    "before each timed look-up run (10; quick 2)")
    ap.add_argument("--publish", metavar="MD", help="on success, put the report into MD "
                    "between its results:begin / results:end markers (BENCHMARKS.md)")
    a = ap.parse_args()
    q = a.quick
    a.events = a.events or (20000 if q else 2000000)
    a.borrowers = a.borrowers or (2000 if q else 100000)
    a.mem_borrowers = a.mem_borrowers or (10000 if q else 1000000)
    a.mem_borrowers_recent = a.mem_borrowers_recent or (5000 if q else 200000)
    a.recon_loans = a.recon_loans or (20000 if q else 1000000)
    a.rates = [(1000, 3)] if q else [(1000, 30), (10000, 20), (50000, 20)]
    a.steady = (1000, 3) if q else (10000, 20)
    a.sample = 200 if q else 300
    a.ret_borrowers = a.ret_borrowers or (500 if q else 5000)
    a.memsim_borrowers = a.memsim_borrowers or ("20000" if q else "1000000")
    steps = {int(s) for s in a.steps.split(",") if s}
    if steps & {2, 5, 6}:
        steps.add(1)  # they consume step 1's topic and model

    b = Bench(a)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.monotonic()
    rc = 0
    try:
        for k, fn in ((1, b.step_producer), (2, b.step_catchup), (3, b.step_latency),
                      (4, b.step_memory), (5, b.step_scaleout), (6, b.step_cluster),
                      (7, b.step_retention), (8, b.step_memsim), (9, b.step_reconcile),
                      (10, b.step_inquiries)):
            if k in steps:
                fn()
    except BenchError as e:
        say("FAILED: %s" % e)
        b.failed.append(str(e).splitlines()[0])
        rc = 1
    except (OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
        say("FAILED: %s: %s" % (type(e).__name__, e))
        b.failed.append("%s: %s" % (type(e).__name__, e))
        rc = 1
    except KeyboardInterrupt:
        say("interrupted")
        b.failed.append("interrupted")
        rc = 130
    finally:
        if not a.keep:
            for f in ("feed.jsonl", "kcat.in", "sample.jsonl"):
                try:
                    os.unlink(os.path.join(a.work, f))
                except OSError:
                    pass
    if a.figures and b.fig:
        merge_figures(a.figures, b.fig)
        say("figures merged into %s" % a.figures)
    rep = b.report(time.monotonic() - t0)
    print(rep)
    if a.out:
        with open(a.out, "w") as f:
            f.write(rep)
        say("report written to %s" % a.out)
    if a.publish and rc == 0:
        publish(a.publish, rep)
        say("report published into %s" % a.publish)
    return rc


def merge_figures(path, fig):
    """Figures measured now replace the same names in path; others stay (a run of some
    steps keeps the rest). A --quick figure never replaces a full run's: CI's smoke run
    would otherwise overwrite the committed figures that capacity.py plans from.
    Written whole to a temporary file, then renamed."""
    try:
        old = json.load(open(path))
    except (OSError, ValueError):
        old = {}
    for name, v in fig.items():
        kept = old.get(name)
        if (isinstance(v, dict) and v.get("quick") and isinstance(kept, dict)
                and not kept.get("quick")):
            continue
        old[name] = v
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(old, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def publish(path, rep):
    txt = open(path).read()
    m = re.search(r"(<!-- results:begin[^\n]*-->\n)(.*?)(<!-- results:end -->)", txt, re.S)
    if not m:
        raise SystemExit("%s has no results:begin / results:end markers" % path)
    body = rep.split("\n", 1)[1].lstrip("\n")  # without the report's own title
    body = body.replace("\n## Details", "\n### Details")
    with open(path, "w") as f:
        f.write(txt[:m.start(2)] + rep.split("\n", 1)[0].replace("# ", "Run: ") + "\n\n" +
                body + txt[m.start(3):])


if __name__ == "__main__":
    sys.exit(main())
