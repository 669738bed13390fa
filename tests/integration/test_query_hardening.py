#!/usr/bin/env python3
"""test_query_hardening.py - loanwire-query against hostile clients, real Redis (DB 8).

Each part is a fault of issue 21 that this test found before its fix:
  slowloris  1000 connections from 50 loopback addresses (127.0.0.2-51), each
             holding a partial request and sending a header line every second:
             with the default limits a real client (127.0.0.1) is still
             answered within 3 s, again and again (before: a cap of 1000 left
             it waiting); with --max-per-ip 20 --header-timeout 3 one address
             keeps only 20 connections, and a trickling connection is closed
             by the server within the header deadline, bytes or not.
  http       a NUL inside a header value is refused (400), not cut (the token
             before it used to authenticate); HTTP/1.1 without Host is 400;
             /healthz without a token says only {"status":"up"} or
             {"status":"down"} (no Redis address, no error text); a token
             file holding a token under 128 bits is refused at start.
  render     a loan whose loan id and lender name are not UTF-8 is in the
             exposure answer with those escaped (as \\xNN), never dropped while the
             totals count it; the log says which borrower.
  metrics    /metrics reads nothing from Redis (INFO commandstats after CONFIG RESETSTAT,
             20,000 keys in the database) and shows none of the consumers' hashes.
Fails loudly when Redis is not there; every server it starts, it stops.
"""
import errno
import json
import os
import re
import resource
import select
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


SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"


def slow_open(port, src, n, timeout=5):
    """n sockets from address src, each having sent a partial request; those
    the server closed or refused within timeout are closed here and not
    returned."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.bind((src, 0))
        err = s.connect_ex(("127.0.0.1", port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            continue
        socks.append(s)
    deadline = time.time() + timeout
    pending = list(socks)
    while pending and time.time() < deadline:
        _, w, _ = select.select([], pending, [], 0.2)
        for s in w:
            pending.remove(s)
    for s in pending:
        socks.remove(s)
        s.close()
    live = []
    for s in socks:
        try:
            s.send(SLOW_HEAD)
            live.append(s)
        except OSError:
            s.close()
    return live


def still_open(socks):
    """The sockets the server has not closed (no EOF, no reset); the others
    are closed here."""
    live = []
    for s in socks:
        try:
            r, _, _ = select.select([s], [], [], 0)
            if r and s.recv(1024) == b"":
                raise OSError("closed by the server")
            live.append(s)
        except OSError:
            s.close()
    return live


def trickle(socks, i):
    """One header line on every socket (a slowloris client's heartbeat)."""
    live = []
    for s in socks:
        try:
            s.send(b"X-Slow-%d: %d\r\n" % (i, i))
            live.append(s)
        except OSError:
            s.close()
    return still_open(live)


def served(port, timeout=3.0):
    t0 = time.time()
    try:
        st, _ = http(port, "/healthz", token=None, timeout=timeout)
    except (OSError, urllib.error.URLError):
        return False, time.time() - t0
    return st in (200, 503), time.time() - t0


def part_slowloris(tokens):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    # Default limits, 1000 slow connections from 50 addresses, 20 each.
    srv = Server(tokens)
    socks = []
    try:
        for a in range(2, 52):
            socks += slow_open(srv.port, "127.0.0.%d" % a, 20)
        check(len(socks) >= 950, "1000 slow connections opened (%d held)" % len(socks))
        ok = []
        for i in range(5):
            socks = trickle(socks, i)
            good, dt = served(srv.port)
            ok.append(good)
            print("     real client: %s in %.2f s, %d slow connections open"
                  % ("answered" if good else "NOT answered", dt, len(socks)))
            time.sleep(1)
        check(all(ok), "a real client is answered within 3 s while the slow connections are "
              "open (%s)" % ok)
    finally:
        for s in socks:
            s.close()
        rc, log = srv.stop()
    check(rc == 0, "server exits 0 after the slow clients")

    # Tight limits: per-address cap and the header deadline.
    srv = Server(tokens, ["--max-per-ip", "20", "--header-timeout", "3", "--max-connections",
                          "500"])
    socks = []
    try:
        socks = slow_open(srv.port, "127.0.0.60", 100)
        time.sleep(0.5)
        socks = still_open(socks)
        check(len(socks) == 20, "--max-per-ip 20: one address keeps 20 of 100 connections "
              "(%d)" % len(socks))
        good, dt = served(srv.port)
        check(good, "another address is answered meanwhile (%.2f s)" % dt)
        t0 = time.time()
        while socks and time.time() - t0 < 8:
            socks = trickle(socks, int(time.time() - t0))
            time.sleep(0.5)
        gone = time.time() - t0
        check(not socks and 2.0 <= gone <= 5.0,
              "--header-timeout 3: connections still sending header lines are closed after "
              "~3 s (%d left after %.1f s)" % (len(socks), gone))
        good, dt = served(srv.port)
        check(good, "a real client is answered after the deadline purge (%.2f s)" % dt)
    finally:
        for s in socks:
            s.close()
        rc, log = srv.stop()
    check(rc == 0, "server exits 0")
    check(log.count("\n") < 400, "the refused connections did not flood the log (%d lines)"
          % log.count("\n"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def raw(port, data, timeout=5):
    """Sends data as it is; (status, body) of the answer."""
    c = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        c.sendall(data)
        buf = b""
        while True:
            d = c.recv(65536)
            if not d:
                break
            buf += d
    finally:
        c.close()
    head, _, body = buf.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return (int(m.group(1)) if m else 0), body.decode(errors="replace")


def part_http(tokens, td):
    srv = Server(tokens)
    try:
        auth = b"Authorization: Bearer " + TOKEN.encode()
        st, _ = raw(srv.port, b"GET /v1/alerts HTTP/1.1\r\nHost: x\r\n" + auth
                    + b"\r\nConnection: close\r\n\r\n")
        check(st == 200, "control: the token authenticates (%d)" % st)
        st, body = raw(srv.port, b"GET /v1/alerts HTTP/1.1\r\nHost: x\r\n" + auth
                       + b"\x00junk\r\nConnection: close\r\n\r\n")
        check(st == 400, "Authorization: Bearer <token>\\0junk is refused with 400 (%d %s)"
              % (st, body))
        st, _ = raw(srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: b\x00\r\n"
                    b"Connection: close\r\n\r\n")
        check(st == 400, "a NUL at the end of any header value: 400 (%d)" % st)
        st, _ = raw(srv.port, b"GET /healthz HTTP/1.1\nHost:x\nConnection:close\n\n")
        check(st == 200, "bare LF line ends and no space after ':' are fine (%d)" % st)
        st, body = raw(srv.port, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        check(st == 400 and "Host" in body, "HTTP/1.1 without Host: 400 (%d %s)" % (st, body))
        st, _ = raw(srv.port, b"GET /healthz HTTP/1.0\r\n\r\n")
        check(st == 200, "HTTP/1.0 without Host: 200 (%d)" % st)
        st, body = http(srv.port, "/healthz", token=None)
        check(st == 200 and json.loads(body) == {"status": "up"},
              "/healthz without a token: only {\"status\":\"up\"} (%s)" % body)
        st, body = http(srv.port, "/healthz")
        check(st == 200 and json.loads(body)["status"] == "up"
              and isinstance(json.loads(body).get("redis_rtt_us"), int),
              "/healthz with a token: up and the Redis round trip (%s)" % body)
    finally:
        srv.stop()
    # Redis down: a port nothing listens on.
    dead = free_port()
    srv = Server(tokens, redis="redis://127.0.0.1:%d/0" % dead)
    try:
        st, body = http(srv.port, "/healthz", token=None)
        check(st == 503 and json.loads(body) == {"status": "down"},
              "/healthz without a token, Redis down: only {\"status\":\"down\"} (%d %s)"
              % (st, body))
        st, body = http(srv.port, "/healthz")
        check(st == 503 and json.loads(body)["status"] == "down" and str(dead) in body,
              "/healthz with a token, Redis down: the error is shown (%s)" % body)
    finally:
        srv.stop()
    # A weak token is refused at start.
    weak = os.path.join(td, "tokens-weak")
    with open(weak, "w") as fp:
        fp.write(TOKEN + "\n" + "t0k-12345\n")
    os.chmod(weak, 0o600)
    p = subprocess.Popen([os.path.join(BIN, "loanwire-query"), "--redis", RURL, "--listen",
                          "127.0.0.1:%d" % free_port(), "--tokens", weak],
                         stderr=subprocess.PIPE, text=True)
    try:
        _, err = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:  # it started: the weak token was taken
        p.kill()
        _, err = p.communicate()
    check(p.returncode not in (0, -9) and ":2: token too weak" in err and "t0k-12345" not in err,
          "a token of 9 characters is refused at start (%s)" % err.strip()[-200:])


def uv(x):
    b = bytearray()
    while x >= 0x80:
        b.append(x & 0x7F | 0x80)
        x >>= 7
    return bytes(b + bytes([x]))


def state_v2(loans, t=1767225600000):
    """A borrower state string, layout version 2 (consumers/README.md), no
    income, no window entries, no open alerts. loans: (platform string id,
    lender string id, loan id bytes, sequence, outstanding)."""
    b = bytes([2]) + uv(0) + uv(0) + uv(t) + uv(0) + uv(2 * len(loans)) + uv(0)
    for pid, lid, loan, seq, out in loans:
        b += uv(pid) + uv(lid) + bytes([len(loan)]) + loan + uv(0 | 1 << 3) + uv(seq) + uv(out)
        b += uv(0)  # updated_at = t
    return b


def redis_raw(*args):
    """One command with binary arguments, over a socket (redis-cli would mangle them)."""
    c = socket.create_connection((RHOST, RPORT), timeout=10)
    try:
        for cmd in ([b"SELECT", str(DB).encode()], list(args)):
            c.sendall(b"*%d\r\n" % len(cmd) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a)
                                                      for a in cmd))
            r = c.recv(4096)
            if r.startswith(b"-"):
                raise RuntimeError("redis %r: %r" % (cmd[0], r))
    finally:
        c.close()


def part_render(srv):
    bid = "RenderTestBorrower0001"
    redis_raw(b"HSET", b"lw:strings", b"i:1", b"JD", b"i:2", b"BANK\xff\xfe", b"i:3", b"ANT")
    st = state_v2([(1, 2, b"L-\xc3\x28-1", 5, 1000), (3, 3, b"OK-2", 2, 500)])
    redis_raw(b"SET", b"b:{%s}" % bid.encode(), st)
    code, body = http(srv.port, "/v1/borrowers/%s/exposure?purpose=LOAN_APPROVAL" % bid)
    doc = json.loads(body) if code == 200 else {}
    loans = {l["loan_id"]: l for l in doc.get("loans", [])}
    check(code == 200 and len(loans) == 2,
          "both loans are in the answer (%d, %d loans: %s)" % (code, len(loans), body[:300]))
    check(doc.get("total_outstanding_fen") == 1500 and doc.get("active_loans") == 2
          and sum(l["outstanding_fen"] for l in loans.values()) == 1500,
          "the totals equal the loans listed")
    bad = loans.get("L-\\xc3(-1", {})
    check(bad.get("lender_id") == "BANK\\xff\\xfe" and bad.get("platform_id") == "JD",
          "invalid bytes rendered as \\xNN (%s)" % bad)
    check(loans.get("OK-2", {}).get("lender_id") == "ANT", "a valid loan is untouched")


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
    rcli("SADD", "lw:metrics:consumers", "c1", "gone")
    rcli("CONFIG", "RESETSTAT")
    st, body = http(srv.port, "/metrics", token=None)
    stats = commandstats()
    check(st == 200 and "loanwire_query_requests_total" in body
          and "loanwire_events_applied_total" not in body,
          "/metrics shows the query's own figures, not the consumers' hashes (%d)" % st)
    # a request thread's first connection SELECTs its database: setup, not a read
    cmds = {k: v for k, v in stats.items()
            if k not in ("info", "config|resetstat", "select", "auth", "ping")}
    check(not cmds, "/metrics sent no command to Redis (%s)" % cmds)


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
        part_http(tokens, td)
        part_slowloris(tokens)
        srv = Server(tokens)
        try:
            part_render(srv)
            part_metrics(srv)
        finally:
            rc, log = srv.stop()
        check(rc == 0, "loanwire-query exits 0 on SIGTERM")
        check("RenderTestBorrower0001: loan 0 has a platform, loan or lender id that is not "
              "UTF-8" in log, "the escaped loan is logged with its borrower")
    rcli("FLUSHDB")
    if failures:
        print("%d check(s) failed:" % len(failures), file=sys.stderr)
        for f in failures:
            print("  " + f, file=sys.stderr)
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
