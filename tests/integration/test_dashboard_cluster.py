#!/usr/bin/env python3
"""test_dashboard_cluster.py - loanwire-query's live feed (/v1/alerts/stream and the
dashboard's chart numbers) on a real Redis Cluster (LOANWIRE_REDIS_CLUSTER).

On a cluster the alerts are on one stream per hash slot, lw:alerts:{TAG}; the feed
merges them. Entries are written here with XADD into the streams of slots spread over
every master, as loanwire-exposure writes them (fields alert_id, rule_id, json):

  backfill   entries recorded before loanwire-query started are counted in
             /v1/dashboard/stats (alerts per minute, by rule) and never sent live
  live       entries recorded while a client follows /v1/alerts/stream arrive exactly
             once each, in (entry id, slot) order, with "id: <ms>-<seq>:<slot>" and the
             alert JSON (plus stream_id) as data, within seconds
  rate       the consumers' events_per_s from their metrics hash (routed to its slot)
             shows in the stats

Fails loudly (never skips) when LOANWIRE_REDIS_CLUSTER is unset.
"""
import json
import os
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_exposure_cluster as tc  # noqa: E402
import test_exposure_e2e as e2e  # noqa: E402
import test_readers_cluster as rd  # noqa: E402

TMP = e2e.TMP
CLUSTER = os.environ.get("LOANWIRE_REDIS_CLUSTER", "")
check = e2e.check


def slot_tags(n):
    """{slot: tag} for the first slots met: the tag is the smallest decimal number whose
    string hashes to the slot (lw_rcluster_slot_tag), so lw:alerts:{tag} is its stream."""
    tags = {}
    i = 0
    while len(tags) < n:
        s = tc.crc16(str(i).encode()) % 16384
        tags.setdefault(s, str(i))
        i += 1
    return tags


def xadd(cl, slot, tag, aid, rule):
    al = {"alert_id": aid, "rule_id": rule, "severity": "WARNING", "borrower_id": "x" * 22}
    eid = cl.cmd("XADD", f"lw:alerts:{{{tag}}}", "*", "alert_id", aid, "rule_id", rule,
                 "json", json.dumps(al))
    return eid.decode()


class Follower(threading.Thread):
    def __init__(self, port):
        super().__init__(daemon=True)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/alerts/stream")
        req.add_header("Authorization", "Bearer " + rd.TOKEN)
        self.r = urllib.request.urlopen(req, timeout=60)
        self.events = []  # (id, data)
        self.hello = threading.Event()

    def run(self):
        cur = {}
        try:
            for raw in self.r:
                ln = raw.decode().rstrip("\n")
                if ln.startswith("retry:"):
                    self.hello.set()
                if ln.startswith("id: "):
                    cur["id"] = ln[4:]
                elif ln.startswith("data: "):
                    cur["data"] = json.loads(ln[6:])
                elif ln == "" and cur:
                    self.events.append((cur.get("id"), cur.get("data")))
                    cur = {}
        except (OSError, ValueError):
            pass


def main():
    if not CLUSTER:
        e2e.fail_server("Redis Cluster", "LOANWIRE_REDIS_CLUSTER",
                        "not set: ./tests/run.sh starts one")
    cl = tc.Cluster(CLUSTER)
    cl.refresh()
    cl.flushall()
    tags = slot_tags(3000)
    by_master = {}
    for s, t in sorted(tags.items()):
        by_master.setdefault(cl.map[s], []).append((s, t))
    check(len(by_master) >= 3, f"slots on {len(by_master)} masters, want 3")
    slots = [st for m in sorted(by_master) for st in by_master[m][:4]]  # 4 slots a master

    # before the server: counted, not sent
    for i, (s, t) in enumerate(slots[:5]):
        xadd(cl, s, t, f"pre-{i}", "feed_pre")
    cl.cmd("SADD", "lw:metrics:consumers", "dash-cl")
    cl.cmd("HSET", "lw:metrics:dash-cl", "events_per_s", "4321")

    tag = f"{os.getpid()}-{int(time.time())}"
    tokens = os.path.join(TMP, f"dash-cl-tokens-{tag}")
    with open(tokens, "w") as fp:
        fp.write(rd.TOKEN + "\n")
    os.chmod(tokens, 0o600)
    srv = rd.Server(CLUSTER, tokens)
    try:
        fol = Follower(srv.port)
        fol.start()
        check(fol.hello.wait(10), "no hello line on /v1/alerts/stream")
        time.sleep(1.5)  # the feed's first poll is past the backfill
        want = []
        for i in range(36):
            s, t = slots[i % len(slots)]
            eid = xadd(cl, s, t, f"live-{i}", "feed_live" if i % 2 else "feed_live2")
            want.append(((int(eid.split("-")[0]), int(eid.split("-")[1]), s), f"live-{i}", eid))
            time.sleep(0.02)
        want.sort()
        deadline = time.time() + 15
        while time.time() < deadline and len(fol.events) < len(want):
            time.sleep(0.1)
        time.sleep(1.5)  # nothing more, nothing twice
        got = [d.get("alert_id") for _, d in fol.events if d]
        check(got == [w[1] for w in want],
              f"live feed: got {len(got)} alerts {got[:8]}..., want {len(want)} in (id, slot) "
              f"order {[w[1] for w in want][:8]}...")
        for (sid, d), w in zip(fol.events, want):
            check(sid == f"{w[2]}:{w[0][2]}" and d.get("stream_id") == sid,
                  f"event id {sid} / stream_id {d.get('stream_id')}, want {w[2]}:{w[0][2]}")
        check(not any(a.startswith("pre-") for a in got), "an alert from before was sent live")
        # the stats: backfilled and live counts, the consumers' rate
        deadline = time.time() + 10
        st = {}
        while time.time() < deadline:
            code, body = srv.get("/v1/dashboard/stats")
            st = json.loads(body) if code == 200 else {}
            per = st.get("alerts_per_minute", {})
            if sum(per.get("feed_pre", [])) == 5 and st.get("events_per_s") and \
                    st["events_per_s"][-1] == 4321:
                break
            time.sleep(0.5)
        per = st.get("alerts_per_minute", {})
        check(sum(per.get("feed_pre", [])) == 5, f"backfill counts: {per.get('feed_pre')}")
        check(sum(per.get("feed_live", [])) + sum(per.get("feed_live2", [])) == 36,
              f"live counts: {per.get('feed_live')} {per.get('feed_live2')}")
        check(bool(st.get("events_per_s")) and st["events_per_s"][-1] == 4321,
              f"consumers' rate: {st.get('events_per_s', [])[-3:]}")
    finally:
        rc, log = srv.stop()
    check(rc == 0, f"loanwire-query exit {rc}")
    check("ERROR" not in log and "dashboard feed" not in log,
          "loanwire-query logged: " + log[-800:])
    cl.flushall()
    os.unlink(tokens)
    if e2e.FAILED:
        print(f"FAILED: {len(e2e.FAILED)} check(s)")
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
