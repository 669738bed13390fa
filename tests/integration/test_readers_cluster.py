#!/usr/bin/env python3
"""test_readers_cluster.py - the readers (loanwire-query, loanwire-alerts --source
redis) on a real Redis Cluster, given the URL of one node.

One generated feed is applied twice by loanwire-exposure: into the cluster
(LOANWIRE_REDIS_CLUSTER, any node) and into database 7 of the single Redis
(LOANWIRE_REDIS). Then:

  borrower   `loanwire-query --redis <another node> --borrower ID` prints the same
             bytes as against the single Redis, for a sample of borrowers and every
             flagged one of them; an unknown borrower exits 3 on both
  http       the API on the cluster: the same exposure JSON; /healthz up (PING on
             every master); /metrics answers with the query's own figures
  alerts     /v1/alerts paged with since=<stream_id> returns every alert id of every
             per-slot stream exactly once, in (entry id, slot) order, as an
             independent reader (SCAN + XRANGE here) sees them; no since: the newest
             `limit`; rule=: only that rule, the newest of it
  follow     loanwire-alerts --source redis --follow on the cluster prints exactly
             the alerts raised while it follows (a second feed), in entry-id order;
             without --follow and --from-beginning it prints every alert; --group is
             refused with a pointer to --source kafka
  failover   kill -9 of the master of a flagged borrower while the API serves: it
             answers 503 at worst, then the same JSON from the promoted replica;
             /healthz comes back up; /v1/alerts still lists every alert in order

Fails loudly (never skips) when LOANWIRE_REDIS_CLUSTER is unset.
"""
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_exposure_cluster as tc  # noqa: E402
import test_exposure_e2e as e2e  # noqa: E402

BIN, BOOT, TMP = e2e.BIN, e2e.BOOT, e2e.TMP
CLUSTER = os.environ.get("LOANWIRE_REDIS_CLUSTER", "")
DB = 7
TOKEN = "readers-cluster-token-Zq83kLmN2pVx"
check = e2e.check


def single_url():
    host, port = e2e.redis_hostport()
    return f"redis://{host}:{port}/{DB}"


def query_borrower(url, bid):
    p = subprocess.run([os.path.join(BIN, "loanwire-query"), "--redis", url, "--borrower", bid],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


class Server:
    def __init__(self, url, tokens):
        self.port = tc_free_port()
        self.log = open(os.path.join(TMP, f"readers-query-{os.getpid()}.log"), "w+")
        self.p = subprocess.Popen([os.path.join(BIN, "loanwire-query"), "--redis", url,
                                   "--listen", f"127.0.0.1:{self.port}", "--tokens", tokens],
                                  stderr=self.log)
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                if self.get("/healthz")[0] in (200, 503):
                    return
            except OSError:
                pass
            if self.p.poll() is not None:
                break
            time.sleep(0.1)
        self.log.seek(0)
        raise RuntimeError("loanwire-query did not start: " + self.log.read())

    def get(self, path, token=TOKEN):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if token:
            req.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as ex:
            return ex.code, ex.read().decode()

    def stop(self):
        self.p.terminate()
        rc = self.p.wait(timeout=20)
        self.log.seek(0)
        return rc, self.log.read()


def tc_free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cluster_streams(cl):
    """Every entry of every per-slot stream: [((ms, seq, slot), alert_id, rule_id)], sorted."""
    ents = []
    for key in cl.scan("lw:alerts:{*}"):
        slot = tc.keyslot(key)
        for eid, fv in cl.cmd("XRANGE", key, "-", "+"):
            d = dict(zip(fv[0::2], fv[1::2]))
            ms, _, seq = eid.partition(b"-")
            ents.append(((int(ms), int(seq), slot), d[b"alert_id"].decode(),
                         d[b"rule_id"].decode()))
    ents.sort()
    return ents


def other_node(cl):
    """A node's URL other than the seed: any node must do."""
    for h, p in sorted(cl.masters):
        if (h, p) != cl.seed:
            return f"redis://{h}:{p}"
    return CLUSTER


def alerts_pages(srv, limit, rule=None):
    """Every alert through /v1/alerts, paging with since=<last stream_id>."""
    out, since = [], "0"
    for _ in range(10000):
        q = f"/v1/alerts?since={since}&limit={limit}" + (f"&rule={rule}" if rule else "")
        st, body = srv.get(q)
        if not check(st == 200, f"GET {q}: {st} {body[:200]}"):
            return out
        page = json.loads(body)
        out += page
        if len(page) < limit:
            return out
        since = page[-1]["stream_id"]
    return out


def sid_key(stream_id):
    """(ms, seq, slot) of a cluster stream_id "<ms>-<seq>:<slot>"."""
    eid, _, slot = stream_id.partition(":")
    ms, _, seq = eid.partition("-")
    return int(ms), int(seq), int(slot)


def alerts_cmd(*extra):
    return [os.path.join(BIN, "loanwire-alerts"), "--source", "redis", "--redis", CLUSTER,
            "--json", *extra]


def main():
    if not CLUSTER:
        e2e.fail_server("Redis Cluster", "LOANWIRE_REDIS_CLUSTER",
                        "not set: ./tests/run.sh starts one, or ./deploy/stack.sh up "
                        "--redis-cluster 3 and export LOANWIRE_REDIS_CLUSTER=redis://HOST:PORT")
    cl = tc.Cluster(CLUSTER)
    check(len(cl.masters) >= 3, f"want a cluster of 3 masters, found {len(cl.masters)}")
    single = e2e.Redis(DB)
    k = subprocess.run(["kcat", "-b", BOOT, "-L", "-m", "10"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    if k.returncode != 0:
        e2e.fail_server("Kafka", BOOT, k.stderr.strip()[-200:])

    tag = f"{os.getpid()}-{int(time.time())}"
    topic = f"lw-test-rd-{tag}"
    feed = os.path.join(TMP, f"readers-feed-{tag}.jsonl")
    e2e.create_topics(topic)
    e2e.run([os.path.join(BIN, "loanwire-gen"), "--seed", "11", "--borrowers", "2000",
             "--over-borrowers", "5", "-n", "30000", "--out", feed])
    e2e.run([os.path.join(BIN, "loanwire-produce"), "-b", BOOT, "-t", topic, "-q", feed])
    events = [json.loads(line) for line in open(feed) if line.strip()]

    cl.flushall()
    single.cmd("FLUSHDB")
    cid = f"readers-{tag}"
    log = tc.exposure(topic, f"g-rd-cl-{tag}", topic + ".alerts", ["--consumer-id", cid])
    check("Redis Cluster at" in log, "the consumer did not detect the cluster")

    tokens = os.path.join(TMP, f"readers-tokens-{tag}")
    with open(tokens, "w") as fp:
        fp.write(TOKEN + "\n")
    os.chmod(tokens, 0o600)
    srv = Server(other_node(cl), tokens)
    try:
        # ---- /metrics and /healthz ---------------------------------------------------
        # (the consumer's counters are its own endpoint's: test_exposure_metrics.py)
        print("http: metrics, healthz")
        st, text = srv.get("/metrics", token=None)
        check(st == 200, f"/metrics on the cluster: {st} {text[:200]}")
        check("loanwire_build_info{" in text and "loanwire_events_consumed_total" not in text,
              "/metrics: the query's own figures only")
        st, body = srv.get("/healthz")
        h = json.loads(body) if st in (200, 503) else {}
        check(st == 200 and h.get("status") == "up" and "redis_rtt_us" in h,
              f"/healthz on the cluster: {st} {body}")

        # ---- the same feed into the single Redis --------------------------------------
        e2e.exposure(topic, f"g-rd-single-{tag}", DB, topic + ".alerts-single")

        # ---- --borrower: the same bytes on both ---------------------------------------
        print("borrower: cluster vs single Redis")
        bids = sorted({ev["borrower_id"] for ev in events})
        flagged = sorted({b.decode() for b in (single.cmd("KEYS", "a:{*}") or [])})
        flagged = [f[3:-1] for f in flagged]
        check(len(flagged) > 0, "the feed flagged no borrower")
        rnd = random.Random(5)
        sample = rnd.sample(bids, 40) + rnd.sample(flagged, min(40, len(flagged)))
        node = other_node(cl)
        same = 0
        for bid in sample:
            rc_c, out_c, err_c = query_borrower(node, bid)
            rc_s, out_s, err_s = query_borrower(single_url(), bid)
            check(rc_c == 0 and rc_s == 0, f"--borrower {bid}: exit {rc_c} / {rc_s}: "
                  f"{err_c.strip()[-200:]} / {err_s.strip()[-200:]}")
            if check(out_c == out_s, f"--borrower {bid}: cluster and single Redis differ:\n"
                     f"  {out_c[:300]}\n  {out_s[:300]}"):
                same += 1
            st, body = srv.get(f"/v1/borrowers/{bid}/exposure?purpose=LOAN_APPROVAL")
            check(st == 200 and body == out_s.rstrip("\n"),
                  f"HTTP exposure of {bid} on the cluster: {st} {body[:200]}")
        with_alerts = sum(1 for b in sample if json.loads(
            query_borrower(node, b)[1] or "{}").get("open_alerts"))
        check(with_alerts > 0, "no sampled borrower had an open alert")
        print(f"  {same} of {len(sample)} identical ({with_alerts} with open alerts)")
        unknown = "A" * 22
        check(query_borrower(node, unknown)[0] == 3, "unknown borrower on the cluster: not exit 3")
        check(srv.get(f"/v1/borrowers/{unknown}/exposure?purpose=LOAN_APPROVAL")[0] == 404, "unknown borrower: not 404")

        # ---- /v1/alerts: the per-slot streams merged --------------------------------
        print("alerts: /v1/alerts over the per-slot streams")
        truth = cluster_streams(cl)
        check(len(truth) > 100, f"only {len(truth)} alerts on the streams")
        check(len({t[0][2] for t in truth}) > 50, "the alerts sit in few slots")
        got = alerts_pages(srv, 97)  # a page size that splits ties at random places
        ids = [a["alert_id"] for a in got]
        check(len(ids) == len(set(ids)), "/v1/alerts gave an alert id twice")
        check(ids == [t[1] for t in truth],
              f"/v1/alerts paged: {len(ids)} alerts, the streams hold {len(truth)}, or the order "
              "differs from (entry id, slot)")
        keys = [sid_key(a["stream_id"]) for a in got]
        check(keys == sorted(keys) and keys == [t[0] for t in truth],
              "/v1/alerts stream_ids are not the entries' (id, slot) in order")
        st, newest_body = srv.get("/v1/alerts?limit=100")
        newest = json.loads(newest_body) if st == 200 else []
        check(st == 200, f"/v1/alerts?limit=100: {st} {newest_body[:200]}")
        check([a["alert_id"] for a in newest] == [t[1] for t in truth[-100:]],
              "/v1/alerts without since: not the newest 100, oldest first")
        # the watermark: an entry above every master's clock (as one that a master
        # with a faster clock just wrote) is not shown yet, so a client paging past
        # it cannot miss an older entry another master records next
        key = cl.scan("lw:alerts:{*}")[0]
        eid0, fv0 = cl.cmd("XRANGE", key, "-", "+", "COUNT", 1)[0]
        fut = "%d-0" % (int(time.time() * 1000) + 600000)
        cl.cmd("XADD", key, fut, *fv0)  # a copy of an entry, 10 minutes ahead
        st_w, body_w = srv.get("/v1/alerts?limit=5")
        check(st_w == 200 and f'"{fut}:' not in body_w,
              "/v1/alerts showed an entry above the watermark")
        check(fut not in [a["stream_id"].partition(":")[0] for a in alerts_pages(srv, 1000)],
              "/v1/alerts paged showed an entry above the watermark")
        cl.cmd("XDEL", key, fut)

        # the worker threads merge at the same time: every answer the same
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(8) as ex:
            answers = list(ex.map(lambda _: srv.get("/v1/alerts?limit=100"), range(24)))
        check(all(a == (200, newest_body) for a in answers),
              "concurrent /v1/alerts calls gave different answers")
        rule = truth[len(truth) // 2][2]
        st, body = srv.get(f"/v1/alerts?rule={rule}&limit=50")
        want = [t[1] for t in truth if t[2] == rule][-50:]
        check(st == 200 and [a["alert_id"] for a in json.loads(body)] == want,
              f"/v1/alerts?rule={rule}: not the newest 50 of that rule")
        ids_rule = [a["alert_id"] for a in alerts_pages(srv, 1000, rule)]
        check(ids_rule == [t[1] for t in truth if t[2] == rule],
              f"/v1/alerts?rule={rule} paged: not every alert of the rule in order")

        # ---- kill -9 the master of a flagged borrower: the API rides the failover ----
        print("failover: kill -9 of a master while the API serves")
        check(tc.replicas_online(cl), "a master of the test cluster has no replica online")
        # not the master the checks here connect to first (cl.seed)
        bid = next(b for b in flagged if cl.map[tc.keyslot(f"b:{{{b}}}")] != cl.seed)
        want_json = query_borrower(single_url(), bid)[1].rstrip("\n")
        host, port = cl.map[tc.keyslot(f"b:{{{bid}}}")]
        pids = tc.stack("pids").stdout.split()
        victim = next((pids[i] for i in range(0, len(pids) - 2, 3) if pids[i + 2] == str(port)),
                      None)
        check(victim is not None, f"no stack.sh pids line for the master on port {port}")
        k9 = tc.stack("kill", victim)
        check(k9.returncode == 0, "stack.sh kill failed: " + k9.stdout[-300:])
        t0 = time.time()
        st, body = 0, ""
        while time.time() - t0 < 40:
            st, body = srv.get(f"/v1/borrowers/{bid}/exposure?purpose=LOAN_APPROVAL")
            if st == 200:
                break
            check(st == 503, f"during the failover: {st} {body[:200]}")
        print(f"  answered again after {time.time() - t0:.1f} s")
        check(st == 200 and body == want_json, f"after the failover: {st} {body[:200]}")
        # every worker thread's map predates the failover: each must say up now
        health = [srv.get("/healthz")[0] for _ in range(12)]
        check(health == [200] * 12, f"/healthz after the failover: {health}")
        cl.refresh()
        check([a["alert_id"] for a in alerts_pages(srv, 1000)] == [t[1] for t in truth],
              "/v1/alerts after the failover: not every alert in order")
        st2 = tc.stack("start", victim)
        check(st2.returncode == 0, "stack.sh start failed: " + st2.stdout[-300:])
        check(tc.replicas_online(cl, 90), "the restarted node did not come back as a replica")
    finally:
        rc, qlog = srv.stop()
    check(rc == 0, f"loanwire-query exit {rc}")
    check("ERROR" not in qlog, "loanwire-query logged an error: " + qlog[-500:])

    # ---- loanwire-alerts on the cluster ------------------------------------------------
    print("follow: loanwire-alerts --source redis on the cluster")
    p = subprocess.run(alerts_cmd("--group", "g1"), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=60)
    check(p.returncode == 1 and "--source kafka" in p.stderr,
          f"--group on a cluster: exit {p.returncode}, {p.stderr.strip()[-300:]}")
    p = subprocess.run(alerts_cmd("--from-beginning"), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    check(p.returncode == 0, f"loanwire-alerts --from-beginning: exit {p.returncode} "
          f"{p.stderr[-300:]}")
    printed = [json.loads(line)["alert_id"] for line in p.stdout.splitlines() if line.strip()]
    check(printed == [t[1] for t in truth],
          f"--from-beginning printed {len(printed)} alerts, the streams hold {len(truth)}, "
          "or not in (entry id, slot) order")

    before = {t[1] for t in cluster_streams(cl)}
    out = open(os.path.join(TMP, f"readers-follow-{tag}.out"), "w+")
    errf = open(os.path.join(TMP, f"readers-follow-{tag}.err"), "w+")
    f = subprocess.Popen(alerts_cmd("--follow"), stdout=out, stderr=errf)
    try:
        deadline = time.time() + 20
        while time.time() < deadline and "polling" not in open(errf.name).read():
            time.sleep(0.1)
        check("polling" in open(errf.name).read(), "loanwire-alerts never started following")
        feed2 = os.path.join(TMP, f"readers-feed2-{tag}.jsonl")
        e2e.run([os.path.join(BIN, "loanwire-gen"), "--seed", "12", "--borrowers", "800",
                 "--over-borrowers", "5", "-n", "8000", "--out", feed2])
        e2e.run([os.path.join(BIN, "loanwire-produce"), "-b", BOOT, "-t", topic, "-q", feed2])
        tc.exposure(topic, f"g-rd-cl-{tag}", topic + ".alerts")
        after = cluster_streams(cl)
        new = [t for t in after if t[1] not in before]
        check(len(new) > 0, "the second feed raised no alert")
        deadline = time.time() + 30
        lines = []
        while time.time() < deadline:
            out.seek(0)
            lines = [ln for ln in out.read().splitlines() if ln.strip()]
            if len(lines) >= len(new):
                time.sleep(1.5)  # anything extra would show by now
                out.seek(0)
                lines = [ln for ln in out.read().splitlines() if ln.strip()]
                break
            time.sleep(0.2)
        got = [json.loads(ln)["alert_id"] for ln in lines]
        check(got == [t[1] for t in new],
              f"--follow printed {len(got)} alerts, {len(new)} were raised while it followed "
              "(or not in entry-id order)")
    finally:
        f.terminate()
        rc = f.wait(timeout=20)
    check(rc == 0, f"loanwire-alerts --follow exit {rc}: {open(errf.name).read()[-500:]}")

    if e2e.FAILED:
        print(f"FAILED: {len(e2e.FAILED)} check(s)")
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
