#!/usr/bin/env python3
"""test_exposure_cluster.py - loanwire-exposure on a real Redis Cluster.

The URL of any node is enough (LOANWIRE_REDIS_CLUSTER; ./tests/run.sh starts a
3-master cluster with a replica each). One generated feed on a 4-partition
topic, then, each on a flushed cluster:

  clean      one consumer to the end: every borrower equals the independent
             model of test_exposure_e2e.py; the per-slot alert streams hold
             each alert id once, the same ids as the Kafka alerts topic
  replay     a second group over the same state changes nothing
  reshard    500 slots move between masters mid catch-up (redis-cli --cluster
             reshard: MIGRATE, ASK, MOVED): every borrower exact
  failover   kill -9 of a master mid catch-up, with --wait-replicas 1: its
             replica takes over, the consumer rides through, every borrower
             exact, no alert id twice on the streams, the Kafka ids the clean
             run's (none lost)
  zombie     two owners of the same partitions (two groups): the newer one's
             stamps fence the older, which stops with an error after
             --stall-timeout instead of writing on; the state is exact

A small RESP client, CRC16 slot routing and the state decoder here keep the
checks independent of the C code. Needs what test_exposure_e2e.py needs, plus
LOANWIRE_REDIS_CLUSTER and LOANWIRE_REDIS_CLUSTER_STACK_DIR (fails loudly
without them).
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_exposure_e2e as e2e  # noqa: E402

BIN, BOOT, TMP, SRC = e2e.BIN, e2e.BOOT, e2e.TMP, e2e.SRC
CLUSTER = os.environ.get("LOANWIRE_REDIS_CLUSTER", "")
CLUSTER_DIR = os.environ.get("LOANWIRE_REDIS_CLUSTER_STACK_DIR", "")
check = e2e.check


# ---- A Redis Cluster client: CRC16 slots, MOVED/ASK -------------------------------

def crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = (crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def keyslot(key):
    key = key if isinstance(key, bytes) else str(key).encode()
    s = key.find(b"{")
    if s >= 0:
        e = key.find(b"}", s + 1)
        if e > s + 1:
            key = key[s + 1:e]
    return crc16(key) % 16384


class Conn(e2e.Redis):
    def __init__(self, host, port):
        try:
            self.s = socket.create_connection((host, port), timeout=30)
        except OSError as ex:
            e2e.fail_server("Redis Cluster node", f"{host}:{port}", str(ex))
        self.f = self.s.makefile("rb")


class Cluster:
    def __init__(self, url):
        hp = url[len("redis://"):] if url.startswith("redis://") else url
        host, _, port = hp.split("/")[0].partition(":")
        self.seed = (host or "127.0.0.1", int(port or 6379))
        self.conns = {}
        self.refresh()

    def conn(self, host, port):
        if (host, port) not in self.conns:
            self.conns[(host, port)] = Conn(host, port)
        return self.conns[(host, port)]

    def refresh(self):
        for hp in [self.seed] + list(self.conns):
            try:
                slots = self.conn(*hp).cmd("CLUSTER", "SLOTS")
                break
            except (OSError, RuntimeError, ConnectionError):
                self.conns.pop(hp, None)
        else:
            raise ConnectionError("no cluster node answers")
        self.map = [None] * 16384
        self.masters = set()
        for r in slots:
            m = (r[2][0].decode(), r[2][1])
            self.masters.add(m)
            for s in range(r[0], r[1] + 1):
                self.map[s] = m

    def cmd(self, *args):
        node = self.map[keyslot(args[1])]
        for _ in range(20):
            try:
                return self.conn(*node).cmd(*args)
            except RuntimeError as ex:
                msg = str(ex)
                if msg.startswith("MOVED"):
                    h, _, p = msg.split()[2].rpartition(":")
                    node = (h, int(p))
                    self.refresh()
                elif msg.startswith("ASK"):
                    h, _, p = msg.split()[2].rpartition(":")
                    c = self.conn(h, int(p))
                    c.cmd("ASKING")
                    return c.cmd(*args)
                elif msg.startswith(("TRYAGAIN", "CLUSTERDOWN", "LOADING")):
                    time.sleep(0.2)
                else:
                    raise
            except (OSError, ConnectionError):
                self.conns.pop(node, None)
                time.sleep(0.5)
                self.refresh()
                node = self.map[keyslot(args[1])]
        raise RuntimeError("gave up on %r" % (args,))

    def scan(self, pattern):
        keys = []
        for m in sorted(self.masters):
            cur = b"0"
            while True:
                cur, ks = self.conn(*m).cmd("SCAN", cur, "MATCH", pattern, "COUNT", 1000)
                keys += ks
                if cur == b"0":
                    break
        return keys

    def flushall(self):
        for m in sorted(self.masters):
            self.conn(*m).cmd("FLUSHALL")

    def stream_alerts(self):
        """(ids, {id: json}) of every per-slot stream lw:alerts:{TAG}, by entry time."""
        ents = []
        for key in self.scan("lw:alerts:{*}"):
            for eid, fv in self.cmd("XRANGE", key, "-", "+"):
                d = dict(zip(fv[0::2], fv[1::2]))
                ms, _, seq = eid.partition(b"-")
                ents.append(((int(ms), int(seq)), d[b"alert_id"].decode(), d[b"json"]))
        ents.sort()
        return [e[1] for e in ents], {e[1]: e[2] for e in ents}


# ---- Programs -----------------------------------------------------------------

def exposure_args(topic, group, alerts, extra=()):
    return [os.path.join(BIN, "loanwire-exposure"), "--brokers", BOOT, "--topic", topic,
            "--group", group, "--alerts-topic", alerts, "--dlq-topic", topic + ".dlq",
            "--redis", CLUSTER, "--status", "1", "-X", "topic.metadata.refresh.interval.ms=1000",
            *extra]


def exposure(topic, group, alerts, extra=(), timeout=180):
    p = subprocess.run(exposure_args(topic, group, alerts, ["--until-caught-up", *extra]),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    if p.returncode != 0:
        print(p.stderr[-3000:])
    check(p.returncode == 0, f"loanwire-exposure exit {p.returncode}")
    return p.stderr


def spawn(topic, group, alerts, extra=(), log=None):
    return subprocess.Popen(exposure_args(topic, group, alerts, extra),
                            stdout=subprocess.DEVNULL, stderr=log or subprocess.DEVNULL)


def stack(*args):
    env = {k: v for k, v in os.environ.items() if k not in ("LOANWIRE_REDIS", "LOANWIRE_BOOTSTRAP")}
    env["LOANWIRE_STACK_DIR"] = CLUSTER_DIR
    return subprocess.run(["bash", os.path.join(SRC, "deploy", "stack.sh"), *args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def dbsize(cl):
    return sum(cl.conn(*m).cmd("DBSIZE") for m in cl.masters)


def wait_for_keys(cl, n, secs=60):
    deadline = time.time() + secs
    while dbsize(cl) < n:
        if time.time() > deadline:
            return False
        time.sleep(0.05)
    return True


def replicas_online(cl, secs=60):
    """Waits until every master has a replica online (WAIT 1 can be met)."""
    deadline = time.time() + secs
    while time.time() < deadline:
        try:
            cl.refresh()
            ok = True
            for m in cl.masters:
                info = cl.conn(*m).cmd("INFO", "replication").decode()
                online = [ln for ln in info.splitlines()
                          if ln.startswith("slave") and "state=online" in ln]
                ok = ok and len(online) >= 1
            if ok:
                return True
        except (OSError, RuntimeError, ConnectionError):
            pass
        time.sleep(0.5)
    return False


def fresh(cl, what):
    cl.refresh()
    cl.flushall()
    print(f"{what}:")


def state_of(cl):
    return e2e.read_state(cl)


def main():
    if not CLUSTER or not CLUSTER_DIR:
        e2e.fail_server("Redis Cluster", "LOANWIRE_REDIS_CLUSTER / LOANWIRE_REDIS_CLUSTER_STACK_DIR",
                        "not set: ./tests/run.sh starts one, or ./deploy/stack.sh up "
                        "--redis-cluster 3")
    cl = Cluster(CLUSTER)
    check(len(cl.masters) >= 3, f"want a cluster of 3 masters, found {len(cl.masters)}")
    k = subprocess.run(["kcat", "-b", BOOT, "-L", "-m", "10"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    if k.returncode != 0:
        e2e.fail_server("Kafka", BOOT, k.stderr.strip()[-200:])

    tag = f"{os.getpid()}-{int(time.time())}"
    topic = f"lw-test-cl-{tag}"
    feed = os.path.join(TMP, f"cluster-feed-{tag}.jsonl")
    e2e.create_topics(topic)
    e2e.run([os.path.join(BIN, "loanwire-gen"), "--seed", "7", "--borrowers", "3000",
             "--over-borrowers", "5", "-n", "60000", "--out", feed])
    e2e.run([os.path.join(BIN, "loanwire-produce"), "-b", BOOT, "-t", topic, "-q", feed])
    events = [json.loads(line) for line in open(feed) if line.strip()]
    want = e2e.model(events)

    # ---- clean, and a replay over it ----------------------------------------------
    fresh(cl, "clean")
    t0 = time.time()
    log = exposure(topic, f"g-clean-{tag}", topic + ".alerts")
    check("Redis Cluster at" in log, "the consumer did not detect the cluster")
    got = state_of(cl)
    print(f"  {len(got)} borrowers in {time.time() - t0:.1f} s")
    e2e.states_equal(got, want, "cluster clean run vs independent model")
    clean = e2e.snapshot(cl)
    ids, jsons = cl.stream_alerts()
    check(len(ids) > 0, "the feed raised no alert on the streams")
    check(len(ids) == len(set(ids)), "an alert id twice on the streams")
    kids = e2e.kafka_alert_ids(topic + ".alerts")
    check(set(kids) == set(ids), f"Kafka alert ids ({len(set(kids))}) != stream ids ({len(ids)})")
    per_master = [cl.conn(*m).cmd("DBSIZE") for m in sorted(cl.masters)]
    check(all(n > 0 for n in per_master), f"borrowers not spread over the masters: {per_master}")
    log = exposure(topic, f"g-replay-{tag}", topic + ".alerts2", ["--from-beginning"])
    check(e2e.snapshot(cl) == clean, "a replay changed the state")
    check("applied 0 " in log, "the replay applied events")

    # ---- reshard mid catch-up -------------------------------------------------------
    fresh(cl, "reshard")
    nodes = cl.conn(*sorted(cl.masters)[0]).cmd("CLUSTER", "MYID").decode()
    other = cl.conn(*sorted(cl.masters)[1]).cmd("CLUSTER", "MYID").decode()
    p = spawn(topic, f"g-reshard-{tag}", topic + ".alerts3", ["--batch", "300",
              "--until-caught-up"])
    check(wait_for_keys(cl, 300), "the consumer wrote nothing before the reshard")
    seed = "%s:%d" % cl.seed
    rs = subprocess.run(["redis-cli", "--cluster", "reshard", seed, "--cluster-from", nodes,
                         "--cluster-to", other, "--cluster-slots", "500", "--cluster-yes",
                         "--cluster-pipeline", "50"], stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True, timeout=120)
    check(rs.returncode == 0, "redis-cli --cluster reshard failed: " + rs.stdout[-500:])
    check(p.wait(timeout=180) == 0, "the consumer failed across the reshard")
    cl.refresh()
    e2e.states_equal(state_of(cl), want, "after a reshard mid-run")

    # ---- kill -9 a master mid catch-up ------------------------------------------------
    fresh(cl, "failover")
    check(replicas_online(cl), "a master of the test cluster has no replica online")
    logf = open(os.path.join(TMP, f"cluster-failover-{tag}.log"), "w+")
    p = spawn(topic, f"g-fo-{tag}", topic + ".alerts4", ["--batch", "300", "--wait-replicas",
              "1", "--wait-timeout", "2000", "--until-caught-up"], log=logf)
    check(wait_for_keys(cl, 1000), "the consumer wrote nothing before the kill")
    victim = None
    pids = stack("pids").stdout.split()
    host, port = sorted(cl.masters)[2]
    for i in range(0, len(pids) - 2, 3):
        if pids[i + 2] == str(port):
            victim = pids[i]
    check(victim is not None, f"no stack.sh pids line for the master on port {port}")
    k9 = stack("kill", victim)
    check(k9.returncode == 0, "stack.sh kill failed: " + k9.stdout[-300:])
    # its replica takes over (cluster-node-timeout 3 s); the shard has no replica
    # left, so WAIT 1 holds the consumer (nothing acknowledged, no offset moves)
    # until the dead node is back, as a supervisor would restart it, now a replica
    time.sleep(6)
    st = stack("start", victim)
    check(st.returncode == 0, "stack.sh start failed: " + st.stdout[-300:])
    check(replicas_online(cl, 90), "the restarted node did not come back as a replica")
    try:
        rc = p.wait(timeout=240)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = None
    logf.seek(0)
    flog = logf.read()
    if rc != 0:
        print(flog[-3000:])
    check(rc == 0, f"the consumer did not survive the master's death (exit {rc})")
    check("replicas" in flog, "the consumer never waited for a replica (kill too late?)")
    cl.refresh()
    e2e.states_equal(state_of(cl), want, "after kill -9 of a master")
    fids, _ = cl.stream_alerts()
    check(len(fids) == len(set(fids)), "an alert id twice on the streams after the failover")
    kids = e2e.kafka_alert_ids(topic + ".alerts4")
    check(set(kids) == set(ids), f"alerts lost or new across the failover: Kafka has "
          f"{len(set(kids))} distinct ids, the clean run {len(set(ids))}")
    check(set(fids) == set(ids), "the streams lost alerts across the failover")

    # ---- a zombie: two owners of the same partitions ------------------------------------
    fresh(cl, "zombie")
    tz = f"lw-test-clz-{tag}"
    e2e.create_topics(tz)
    half = len(events) // 2
    zfeed = os.path.join(TMP, f"cluster-z-{tag}.jsonl")
    with open(zfeed, "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in events[:half])
    e2e.run([os.path.join(BIN, "loanwire-produce"), "-b", BOOT, "-t", tz, "-q", zfeed])
    zlogf = open(os.path.join(TMP, f"cluster-zombie-{tag}.log"), "w+")
    old = spawn(tz, f"g-old-{tag}", tz + ".alerts", ["--stall-timeout", "3"], log=zlogf)
    check(wait_for_keys(cl, 2000), "the older owner wrote nothing")
    time.sleep(2)
    # the older owner stalls (a pause past its turn, as a GC or a frozen VM)
    old.send_signal(signal.SIGSTOP)
    with open(zfeed, "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in events[half:])
    e2e.run([os.path.join(BIN, "loanwire-produce"), "-b", BOOT, "-t", tz, "-q", zfeed])
    # the newer owner (epoch 2) takes everything, stamping the borrowers it changes
    exposure(tz, f"g-new-{tag}", tz + ".alerts2")
    before = e2e.snapshot(cl)
    old.send_signal(signal.SIGCONT)
    try:
        zrc = old.wait(timeout=90)
    except subprocess.TimeoutExpired:
        old.send_signal(signal.SIGKILL)
        zrc = None
    zlogf.seek(0)
    zlog = zlogf.read()
    check(zrc is not None and zrc != 0, f"the older owner did not stop with an error (rc {zrc})")
    check("owns it now" in zlog, "the older owner did not see the newer epoch")
    check("fenced for 3 s but still assigned" in zlog, "no error naming the stalled partition")
    check(e2e.snapshot(cl) == before, "the older owner changed borrowers after the newer one")
    e2e.states_equal(state_of(cl), want, "after a zombie on the cluster")

    cl.flushall()
    os.unlink(feed)
    os.unlink(zfeed)
    if e2e.FAILED:
        print("FAILED:", len(e2e.FAILED), "checks")
        sys.exit(1)
    print("all cluster end-to-end checks passed")


if __name__ == "__main__":
    main()
