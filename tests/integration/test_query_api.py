#!/usr/bin/env python3
"""test_query_api.py - loanwire-query against the real Redis (and, for the
exposure documents, the real pipeline through Kafka).

Part A, the HTTP layer (Redis DB 9, flushed; alert stream and consumer
metric hashes written here in the contract format):
  status codes 200 / 400 / 401 (+ WWW-Authenticate) / 404 / 405 / 413;
  /v1/alerts equal to the stream (order, limit, since paging, rule filter);
  /metrics parsed by a strict Prometheus text parser: own figures, no consumer hashes;
  start-up refuses a token file readable by others; --borrower exit codes.
Part B, the exposure documents: loanwire-gen -> loanwire-produce (topic of
this run) -> loanwire-exposure --until-caught-up (DB 9), then for a sample
of borrowers every loan in the API answer equals the last-sequence event of
that loan in the generated JSONL (computed here, independently), and the
totals equal the sums over those loans.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

BIN = os.environ.get("LW_BIN_DIR", "build/bin")
TMP = os.environ.get("LW_TMP_DIR", "/tmp")
REDIS = os.environ.get("LOANWIRE_REDIS", "redis://127.0.0.1:6379")
BOOT = os.environ.get("LOANWIRE_BOOTSTRAP", "127.0.0.1:9092")
DB = 9
UNIQ = "%d-%d" % (os.getpid(), int(time.time()))
TOKEN = "t0k-%s-%s" % (UNIQ, "Zq8rLmW3xY0pVbNd")  # >= 22 characters: 128 bits
failures = []


def fail_server(name, where, why):
    print("FAIL: %s is not reachable at %s (%s).\n"
          "      Start the stack with ./deploy/stack.sh up (or run ./tests/run.sh),\n"
          "      or point LOANWIRE_BOOTSTRAP / LOANWIRE_REDIS at running servers."
          % (name, where, why), file=sys.stderr)
    sys.exit(1)


def redis_hostport():
    u = REDIS[len("redis://"):] if REDIS.startswith("redis://") else REDIS
    u = u.split("@")[-1].split("/")[0]
    host, _, port = u.rpartition(":")
    return (host or "127.0.0.1"), int(port or 6379)


RHOST, RPORT = redis_hostport()
RURL = "redis://%s:%d/%d" % (RHOST, RPORT, DB)


def rcli(*args, check=True):
    p = subprocess.run(["redis-cli", "-h", RHOST, "-p", str(RPORT), "-n", str(DB)] + list(args),
                       capture_output=True, text=True, timeout=30)
    if check and p.returncode != 0:
        raise RuntimeError("redis-cli %s: %s" % (args, p.stderr))
    return p.stdout


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, tokens, extra=()):
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(dir=TMP, prefix="query-", suffix=".log",
                                               delete=False)
        self.p = subprocess.Popen([os.path.join(BIN, "loanwire-query"), "--redis", RURL,
                                   "--listen", "127.0.0.1:%d" % self.port, "--tokens", tokens,
                                   *extra],
                                  stderr=self.log)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.p.poll() is not None:
                    break
                time.sleep(0.1)
        raise RuntimeError("loanwire-query did not start: " + open(self.log.name).read())

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        rc = self.p.wait(timeout=20)
        return rc, open(self.log.name).read()


def http(port, path, method="GET", token=TOKEN, body=None, headers=None):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method,
                                 data=body)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


# ---- Prometheus text format, strictly ------------------------------------
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(r"^(%s)(\{(?:%s)(?:,%s)*\})? (-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|NaN|[+-]Inf)$"
                    % (NAME, LABEL, LABEL))


def parse_prometheus(text):
    """Returns {(name, frozenset(labels)): value}; raises on any malformed line,
    a sample without its TYPE, a TYPE after samples, or a repeated series."""
    types, helps, out, seen_names = {}, {}, {}, []
    if not text.endswith("\n"):
        raise ValueError("text does not end with a newline")
    for n, line in enumerate(text.split("\n")[:-1], 1):
        if line.startswith("# HELP "):
            parts = line.split(" ", 3)
            if len(parts) < 4 or not re.fullmatch(NAME, parts[2]) or parts[2] in helps:
                raise ValueError("line %d: bad HELP" % n)
            helps[parts[2]] = parts[3]
        elif line.startswith("# TYPE "):
            parts = line.split(" ")
            if (len(parts) != 4 or parts[3] not in ("counter", "gauge", "untyped", "summary",
                                                    "histogram") or parts[2] in types
                    or parts[2] in seen_names):
                raise ValueError("line %d: bad TYPE" % n)
            types[parts[2]] = parts[3]
        elif line.startswith("#"):
            continue
        else:
            m = SAMPLE.match(line)
            if not m:
                raise ValueError("line %d: not a sample: %r" % (n, line))
            name = m.group(1)
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name not in types and types.get(base) in ("histogram", "summary"):
                name_ok = True
            else:
                name_ok = name in types
            if not name_ok:
                raise ValueError("line %d: %s has no TYPE" % (n, name))
            labels = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                          m.group(2) or ""))
            if (name, labels) in out:
                raise ValueError("line %d: repeated series" % n)
            seen_names.append(name)
            out[(name, labels)] = float(m.group(3))
            if types.get(name) == "counter" and ("." in m.group(3)):
                raise ValueError("line %d: counter %s is not an integer" % (n, name))
    return out


def xadd(a):
    return rcli("XADD", "lw:alerts", "*", "alert_id", a["alert_id"], "borrower_id",
                a["borrower_id"], "rule_id", a["rule_id"], "severity", a["severity"],
                "platform_id", a["trigger_platform_id"], "lender_id", a["trigger_lender_id"],
                "json", json.dumps(a, separators=(",", ":"))).strip()


def mk_alert(i, rule):
    return {"alert_id": "q%s-%03d" % (UNIQ, i), "borrower_id": ("B%021d" % i),
            "rule_id": rule, "rule_version": 1, "severity": "WARNING",
            "reason": "r%d" % i, "total_outstanding_fen": 1000 * i, "active_lenders": 2,
            "active_loans": 3, "window_count": 0, "window_ms": 0, "annual_income_fen": None,
            "limit": 5, "trigger_event_id": "e%d" % i, "trigger_platform_id": "JD",
            "trigger_lender_id": "BANK", "raised_at": 1767225600000 + i}


def part_a(port, tokens_ok, tmpdir):
    # --- status codes ---
    st, hd, body = http(port, "/healthz", token=None)
    check(st == 200 and json.loads(body) == {"status": "up"}, "healthz 200 without token")
    st, hd, body = http(port, "/healthz")
    check(st == 200 and json.loads(body)["status"] == "up"
          and isinstance(json.loads(body)["redis_rtt_us"], int), "healthz 200 with the round trip")
    bid = "A" * 22
    st, hd, _ = http(port, "/v1/borrowers/%s/exposure?purpose=LOAN_APPROVAL" % bid, token=None)
    check(st == 401 and hd.get("WWW-Authenticate", "").startswith("Bearer"),
          "exposure without token: 401 + WWW-Authenticate: Bearer")
    st, _, _ = http(port, "/v1/alerts", token="wrong-token-but-long-enough-0123")
    check(st == 401, "alerts with a wrong token: 401")
    st, _, _ = http(port, "/v1/borrowers/%s/exposure?purpose=LOAN_APPROVAL" % bid)
    check(st == 404, "unknown borrower: 404")
    for bad in ["short", "A" * 23, "A" * 21 + "=", "A" * 21 + "%21"]:
        st, _, body = http(port, "/v1/borrowers/%s/exposure?purpose=LOAN_APPROVAL" % bad)
        check(st == 400 and "borrower_id" in body, "malformed id %r: 400" % bad)
    # "/" is the dashboard (test_dashboard.py), no longer an unknown path.
    for path in ["/v2", "/v1", "/v1/borrowers/%s" % bid, "/v1/borrowers/%s/exposure/x" % bid,
                 "/healthz/x"]:
        st, _, _ = http(port, path)
        check(st == 404, "unknown path %s: 404" % path)
    st, hd, _ = http(port, "/v1/alerts", method="POST", body=b"{}")
    check(st == 405 and "GET" in hd.get("Allow", ""), "POST: 405 with Allow: GET")
    st, _, _ = http(port, "/healthz", method="DELETE")
    check(st == 405, "DELETE: 405")
    st, _, _ = http(port, "/v1/alerts", method="GET", body=b"x" * 100)
    check(st == 413, "GET with a body: 413")
    for q in ["limit=0", "limit=1001", "limit=x", "since=abc", "rule=a%20b", "bogus=1"]:
        st, _, _ = http(port, "/v1/alerts?" + q)
        check(st == 400, "/v1/alerts?%s: 400" % q)
    st, _, _ = http(port, "/v1/alerts?limit=1&x=" + "a" * 3000)
    check(st in (400, 414), "over-long request URI refused (%d)" % st)

    # --- /v1/alerts against the stream ---
    alerts = [mk_alert(i, ["balance_cap", "stacking_7d"][i % 3 == 0]) for i in range(250)]
    sids = [xadd(a) for a in alerts]
    st, _, body = http(port, "/v1/alerts")
    got = json.loads(body)
    check(st == 200 and [a["alert_id"] for a in got] == [a["alert_id"] for a in alerts[-100:]],
          "/v1/alerts: the newest 100 by default, oldest first")
    check(all(g["stream_id"] == s for g, s in zip(got, sids[-100:])), "/v1/alerts: stream ids")
    strip = [{k: v for k, v in g.items() if k != "stream_id"} for g in got]
    check(strip == alerts[-100:], "/v1/alerts: objects equal what was written")
    st, _, body = http(port, "/v1/alerts?limit=1000")
    check(len(json.loads(body)) == 250, "/v1/alerts?limit=1000 returns all 250")
    # Paging with since=<stream id> (exclusive) walks the whole stream once.
    pages, since = [], "0"
    while True:
        st, _, body = http(port, "/v1/alerts?limit=70&since=%s" % since)
        page = json.loads(body)
        if not page:
            break
        pages += [a["alert_id"] for a in page]
        since = page[-1]["stream_id"]
        if "-" not in since:
            break
    check(pages == [a["alert_id"] for a in alerts], "/v1/alerts paging by since=stream id")
    ms = int(sids[200].split("-")[0])
    st, _, body = http(port, "/v1/alerts?limit=1000&since=%d" % ms)
    want = [a["alert_id"] for a, s in zip(alerts, sids) if int(s.split("-")[0]) >= ms]
    check([a["alert_id"] for a in json.loads(body)] == want, "/v1/alerts?since=<ms> inclusive")
    st, _, body = http(port, "/v1/alerts?rule=stacking_7d&limit=1000")
    want = [a["alert_id"] for a in alerts if a["rule_id"] == "stacking_7d"]
    check([a["alert_id"] for a in json.loads(body)] == want, "/v1/alerts?rule= filters")

    # --- /metrics: the query's own figures; consumer hashes are not read ---
    rcli("HSET", "lw:metrics:c1", "events_applied", "100", "dead_letters", "2")
    rcli("SADD", "lw:metrics:consumers", "c1")  # a consumer's "who is running" view
    st, hd, body = http(port, "/metrics", token=None)
    check(st == 200 and hd.get("Content-Type", "").startswith("text/plain"),
          "/metrics 200 text/plain without token")
    try:
        m = parse_prometheus(body)
        check(True, "/metrics parses as Prometheus text (strict)")
    except ValueError as e:
        check(False, "/metrics parses as Prometheus text: %s" % e)
        m = {}
    L = lambda **kw: frozenset(kw.items())
    check(not any(k[0].startswith(("loanwire_events_", "loanwire_consumer", "loanwire_dead_"))
                  for k in m), "/metrics no longer sums the consumers' hashes")
    check(any(k[0] == "loanwire_build_info" and dict(k[1]).get("program") == "loanwire-query"
              for k in m), "/metrics has loanwire_build_info")
    check(m.get(("loanwire_query_request_duration_seconds_count", L())) is not None
          and m.get(("loanwire_query_request_duration_seconds_count", L())) >= 6,
          "/metrics has the request latency histogram")
    check(m.get(("loanwire_query_requests_total", L(code="401"))) >= 2
          and m.get(("loanwire_query_requests_total", L(code="404"))) >= 6,
          "own request counts by status")

    # --- start-up and one-off checks ---
    open_tok = os.path.join(tmpdir, "tokens-open")
    with open(open_tok, "w") as fp:
        fp.write(TOKEN + "\n")
    os.chmod(open_tok, 0o644)
    p = subprocess.run([os.path.join(BIN, "loanwire-query"), "--redis", RURL, "--listen",
                        "127.0.0.1:%d" % free_port(), "--tokens", open_tok],
                       capture_output=True, text=True, timeout=20)
    check(p.returncode != 0 and "chmod 600" in p.stderr,
          "a token file readable by others is refused at start")
    p = subprocess.run([os.path.join(BIN, "loanwire-query"), "--redis", RURL, "--borrower",
                        "bad"], capture_output=True, text=True, timeout=20)
    check(p.returncode == 2, "--borrower with a malformed id exits 2")
    p = subprocess.run([os.path.join(BIN, "loanwire-query"), "--redis", RURL, "--borrower",
                        "Z" * 22], capture_output=True, text=True, timeout=20)
    check(p.returncode == 3, "--borrower unknown exits 3")


def independent_loans(jsonl):
    """Per borrower, per (platform_id, loan_id): the event with the highest
    sequence (the state after applying them in any order)."""
    loans = {}
    for line in open(jsonl):
        e = json.loads(line)
        if e.get("event_type") == "APPLICATION":
            continue
        k = (e["platform_id"], e["loan_id"])
        b = loans.setdefault(e["borrower_id"], {})
        if k not in b or e["sequence"] > b[k]["sequence"]:
            b[k] = e
    return loans


def subscriber_matches_stream(alerts_topic):
    """loanwire-alerts prints exactly the alerts loanwire-exposure published:
    the stream's alert_ids, from the stream and from the Kafka topic."""
    out = rcli("--csv", "XRANGE", "lw:alerts", "-", "+")
    ids = re.findall(r'"alert_id","([^"]+)"', out)
    check(len(ids) > 0, "the pipeline raised alerts (%d in the stream)" % len(ids))
    alerts = os.path.join(BIN, "loanwire-alerts")
    p = subprocess.run([alerts, "--source", "redis", "--redis", RURL, "--group", "q-sub",
                        "--from-beginning", "--json"], capture_output=True, text=True, timeout=120)
    got = [json.loads(l)["alert_id"] for l in p.stdout.splitlines()]
    check(p.returncode == 0 and got == ids, "loanwire-alerts --source redis prints the stream's "
          "%d alerts exactly (got %d)" % (len(ids), len(got)))
    p = subprocess.run([alerts, "--brokers", BOOT, "--topic", alerts_topic, "--group",
                        "q-sub-" + UNIQ, "--from-beginning", "--json"], capture_output=True,
                       text=True, timeout=120)
    got = [json.loads(l)["alert_id"] for l in p.stdout.splitlines()]
    check(p.returncode == 0 and sorted(got) == sorted(ids) and len(set(got)) == len(got),
          "loanwire-alerts (Kafka) prints the stream's %d alerts, each once (got %d)"
          % (len(ids), len(got)))


def part_b(port, tmpdir):
    exp = os.path.join(BIN, "loanwire-exposure")
    h = subprocess.run([exp, "--help"], capture_output=True, text=True, timeout=20)
    if "--until-caught-up" not in h.stdout + h.stderr:
        check(False, "loanwire-exposure --help offers --until-caught-up (needed for part B)")
        return
    topic = "lw-test-query-ev-" + UNIQ
    jsonl = os.path.join(tmpdir, "events.jsonl")
    subprocess.run([os.path.join(BIN, "loanwire-gen"), "--seed", "7", "--borrowers", "300",
                    "--events", "4000", "--over-borrowers", "10", "-o", jsonl],
                   check=True, capture_output=True, timeout=300)
    p = subprocess.run([os.path.join(BIN, "loanwire-produce"), "-b", BOOT, "-t", topic, "-q",
                        "-r", os.path.join(tmpdir, "rejects"), jsonl], capture_output=True,
                       text=True, timeout=300)
    check(p.returncode == 0, "loanwire-produce delivered the feed%s"
          % ("" if p.returncode == 0 else " (%s)" % p.stderr[-200:]))
    alerts_topic = "lw-test-query-al-" + UNIQ
    p = subprocess.run([exp, "--brokers", BOOT, "--topic", topic, "--redis", RURL, "--group",
                        "lw-test-query-" + UNIQ, "--alerts-topic", alerts_topic, "--dlq-topic",
                        "lw-test-query-dlq-" + UNIQ, "--from-beginning", "--until-caught-up",
                        "--status", "0"], capture_output=True, text=True, timeout=600)
    check(p.returncode == 0, "loanwire-exposure --until-caught-up exit 0%s"
          % ("" if p.returncode == 0 else " (%s)" % p.stderr[-300:]))
    subscriber_matches_stream(alerts_topic)
    want = independent_loans(jsonl)
    sample = sorted(want)[::max(1, len(want) // 40)]
    bad = []
    for bid in sample:
        st, _, body = http(port, "/v1/borrowers/%s/exposure?purpose=LOAN_APPROVAL" % bid)
        if st != 200:
            bad.append((bid, "status %d" % st))
            continue
        doc = json.loads(body)
        got = {(l["platform_id"], l["loan_id"]): l for l in doc["loans"]}
        if set(got) != set(want[bid]):
            bad.append((bid, "loan set differs"))
            continue
        for k, e in want[bid].items():
            l = got[k]
            for f in ("lender_id", "product", "sequence", "outstanding_fen", "days_past_due",
                      "past_due_fen"):
                if l[f] != e.get(f, l[f] if f == "past_due_fen" else None):
                    bad.append((bid, "%s %s: %r != %r" % (k, f, l[f], e.get(f))))
            if l["updated_at"] != e["occurred_at"]:
                bad.append((bid, "%s updated_at" % (k,)))
        active = [l for l in doc["loans"] if l["status"] in ("ACTIVE", "DELINQUENT")]
        if doc["total_outstanding_fen"] != sum(l["outstanding_fen"] for l in active):
            bad.append((bid, "total_outstanding_fen"))
        if doc["active_loans"] != len(active):
            bad.append((bid, "active_loans"))
        if doc["active_lenders"] != len({l["lender_id"] for l in active}):
            bad.append((bid, "active_lenders"))
        if doc["as_of"] < max(e["occurred_at"] for e in want[bid].values()):
            bad.append((bid, "as_of"))
        for w in ("24h", "7d", "30d"):
            if set(doc["windows"][w]) != {"new_loans", "applications", "distinct_lenders"}:
                bad.append((bid, "windows %s" % w))
        cli = subprocess.run([os.path.join(BIN, "loanwire-query"), "--redis", RURL, "--borrower",
                              bid], capture_output=True, text=True, timeout=20)
        if cli.returncode != 0 or json.loads(cli.stdout) != doc:
            bad.append((bid, "--borrower output differs from the endpoint"))
    check(not bad, "exposure of %d sampled borrowers matches the JSONL %s"
          % (len(sample), bad[:5]))


def main():
    try:
        socket.create_connection((RHOST, RPORT), timeout=3).close()
    except OSError as e:
        fail_server("Redis", REDIS, str(e))
    p = subprocess.run(["kcat", "-b", BOOT, "-L", "-m", "10"], capture_output=True, text=True,
                       timeout=30)
    if p.returncode != 0:
        fail_server("Kafka", BOOT, p.stderr.strip()[:200])
    rcli("FLUSHDB")
    with tempfile.TemporaryDirectory(dir=TMP) as td:
        tokens = os.path.join(td, "tokens")
        with open(tokens, "w") as fp:
            fp.write("# test tokens\n\nother-token-7fQ2mX9kLp4RtV8w\n%s\n" % TOKEN)
        os.chmod(tokens, 0o600)
        srv = Server(tokens)
        try:
            part_a(srv.port, tokens, td)
            rcli("FLUSHDB")
            part_b(srv.port, td)
        finally:
            rc, log = srv.stop()
        check(rc == 0, "loanwire-query exits 0 on SIGTERM")
        lines = [l for l in log.splitlines() if l.startswith("ACCESS ")]
        check(len(lines) >= 30 and all(re.match(r'^ACCESS 127\.0\.0\.1 "\w+ [^ ?]*" \d{3} \d+ \d+us', l)
                                       for l in lines), "one access line per request")
        check(TOKEN not in log, "the token never appears in the log")
        # --log-format json: every line, the access lines too, is one JSON object
        srv = Server(tokens, ["--log-format", "json"])
        try:
            http(srv.port, "/healthz", token=None)
            http(srv.port, "/v1/borrowers/nope/exposure?purpose=LOAN_APPROVAL")
        finally:
            rc, log = srv.stop()
        objs = []
        for l in log.splitlines():
            try:
                objs.append(json.loads(l))
            except ValueError:
                check(False, "--log-format json: a line that is not JSON: %r" % l)
        acc = [o for o in objs if o.get("msg") == "access"]
        check(rc == 0 and len(acc) == 2 and acc[0].get("path") == "/healthz"
              and acc[0].get("status") == "200" and acc[1].get("status") == "400"
              and all(o.get("client") == "127.0.0.1" and o.get("took_us", "").isdigit()
                      for o in acc), "--log-format json: access lines as JSON: %r" % acc)
        check(TOKEN not in log, "the token never appears in the JSON log")
    rcli("FLUSHDB")
    if failures:
        print("%d check(s) failed:" % len(failures), file=sys.stderr)
        for f in failures:
            print("  " + f, file=sys.stderr)
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
