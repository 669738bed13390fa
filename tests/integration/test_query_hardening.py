#!/usr/bin/env python3
"""test_query_hardening.py - loanwire-query against hostile clients, real Redis (DB 8).

Each part is a fault of issue 21 that this test found before its fix:
  metrics    /metrics makes no SCAN (INFO commandstats after CONFIG RESETSTAT,
             20,000 keys in the database): one SMEMBERS and one HGETALL per
             registered consumer; an expired consumer leaves the registry.
Fails loudly when Redis is not there; every server it starts, it stops.
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
DB = 8
TOKEN = "hardening-token-%08d-0123456789abcdef" % os.getpid()
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    sys.stdout.flush()
    if not cond:
        failures.append(what)


def hostport():
    u = REDIS[len("redis://"):] if REDIS.startswith("redis://") else REDIS
    u = u.split("@")[-1].split("/")[0]
    host, _, port = u.rpartition(":")
    return (host or "127.0.0.1"), int(port or 6379)


RHOST, RPORT = hostport()
RURL = "redis://%s:%d/%d" % (RHOST, RPORT, DB)


def rcli(*args):
    p = subprocess.run(["redis-cli", "-h", RHOST, "-p", str(RPORT), "-n", str(DB)] + list(args),
                       capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError("redis-cli %s: %s" % (args, p.stderr))
    return p.stdout


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, tokens, extra=(), redis=RURL):
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(dir=TMP, prefix="query-h-", suffix=".log",
                                               delete=False)
        self.p = subprocess.Popen([os.path.join(BIN, "loanwire-query"), "--redis", redis,
                                   "--listen", "127.0.0.1:%d" % self.port, "--tokens", tokens]
                                  + list(extra), stderr=self.log)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.p.poll() is not None:
                    break
                time.sleep(0.1)
        self.p.kill()
        raise RuntimeError("loanwire-query did not start: " + open(self.log.name).read())

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait()
        text = open(self.log.name).read()
        os.unlink(self.log.name)
        return rc, text


def http(port, path, token=TOKEN, timeout=10):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path))
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def commandstats():
    out = {}
    for line in rcli("INFO", "commandstats").splitlines():
        m = re.match(r"cmdstat_([a-z|]+):calls=(\d+)", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def part_metrics(srv):
    rcli("EVAL", "for i = 1, 20000 do redis.call('SET', 'filler:' .. i, 'x') end", "0")
    rcli("HSET", "lw:metrics:c1", "events_applied", "100", "dead_letters", "2")
    rcli("HSET", "lw:metrics:c2", "events_applied", "23")
    rcli("SADD", "lw:metrics:consumers", "c1", "c2", "gone")  # gone: its hash expired
    rcli("CONFIG", "RESETSTAT")
    st, body = http(srv.port, "/metrics", token=None)
    stats = commandstats()
    check(st == 200 and "loanwire_events_applied_total 123" in body,
          "/metrics sums the registered consumers (%d)" % st)
    check("loanwire_consumers 2" in body, "/metrics counts 2 live consumers")
    check(stats.get("scan", 0) == 0 and stats.get("keys", 0) == 0,
          "/metrics made no SCAN or KEYS (scan calls: %d)" % stats.get("scan", 0))
    check(stats.get("hgetall", 0) == 3 and stats.get("smembers", 0) == 1,
          "/metrics: one SMEMBERS, one HGETALL per registered consumer (%s)"
          % {k: v for k, v in stats.items() if k not in ("info", "config|resetstat")})
    members = set(rcli("SMEMBERS", "lw:metrics:consumers").split())
    check(members == {"c1", "c2"}, "an expired consumer left the registry (%s)" % members)


def main():
    try:
        socket.create_connection((RHOST, RPORT), timeout=3).close()
    except OSError as e:
        print("FAIL: Redis is not reachable at %s (%s); start it with ./deploy/stack.sh up"
              % (REDIS, e), file=sys.stderr)
        sys.exit(1)
    rcli("FLUSHDB")
    with tempfile.TemporaryDirectory(dir=TMP) as td:
        tokens = os.path.join(td, "tokens")
        with open(tokens, "w") as fp:
            fp.write(TOKEN + "\n")
        os.chmod(tokens, 0o600)
        srv = Server(tokens)
        try:
            part_metrics(srv)
        finally:
            rc, log = srv.stop()
        check(rc == 0, "loanwire-query exits 0 on SIGTERM")
    rcli("FLUSHDB")
    if failures:
        print("%d check(s) failed:" % len(failures), file=sys.stderr)
        for f in failures:
            print("  " + f, file=sys.stderr)
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
