#!/usr/bin/env python3
"""test_redis_auth.py - Redis credentials against the real Redis (issue 21 item 6).

The test makes its own ACL user (ACL SETUSER, removed at the end) whose password
holds '@', ':', '/' and '%', and then:
  - loanwire-query --borrower and the server connect with
    redis://USER:PERCENT-ENCODED-PASSWORD@host:port/9 (AUTH user password);
    before, the user was dropped and AUTH went to the default user;
  - a wrong password gets 503 from /healthz, with no detail;
  - neither the start-up log of loanwire-query nor that of loanwire-exposure,
    nor a URL parse error, shows the password (raw or percent-encoded).
Fails loudly when Redis (or, for the consumer's log line, Kafka) is not there.
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

BIN = os.environ.get("LW_BIN_DIR", "build/bin")
TMP = os.environ.get("LW_TMP_DIR", "/tmp")
REDIS = os.environ.get("LOANWIRE_REDIS", "redis://127.0.0.1:6379")
BOOT = os.environ.get("LOANWIRE_BOOTSTRAP", "127.0.0.1:9092")
DB = 9
USER = "lwtest-%d" % os.getpid()
PASSWORD = "Pw@x:y/z%%q-%d" % os.getpid()
ENC = urllib.parse.quote(PASSWORD, safe="")
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def hostport():
    u = REDIS[len("redis://"):] if REDIS.startswith("redis://") else REDIS
    u = u.split("@")[-1].split("/")[0]
    host, _, port = u.rpartition(":")
    return (host or "127.0.0.1"), int(port or 6379)


RHOST, RPORT = hostport()


def rcli(*args):
    p = subprocess.run(["redis-cli", "-h", RHOST, "-p", str(RPORT)] + list(args),
                       capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError("redis-cli %s: %s" % (args, p.stderr))
    return p.stdout.strip()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def secret_in(text):
    return PASSWORD in text or ENC in text or ENC.lower() in text


def healthz(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def query_server(url, log, tokens):
    port = free_port()
    p = subprocess.Popen([os.path.join(BIN, "loanwire-query"), "--redis", url, "--listen",
                          "127.0.0.1:%d" % port, "--tokens", tokens], stderr=log)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return p, port
        except OSError:
            if p.poll() is not None:
                break
            time.sleep(0.1)
    p.kill()
    raise RuntimeError("loanwire-query did not start")


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def main():
    try:
        socket.create_connection((RHOST, RPORT), timeout=3).close()
    except OSError as e:
        print("FAIL: Redis is not reachable at %s (%s); start it with ./deploy/stack.sh up"
              % (REDIS, e), file=sys.stderr)
        sys.exit(1)
    r = subprocess.run(["kcat", "-b", BOOT, "-L", "-m", "10"], capture_output=True, text=True,
                       timeout=30)
    if r.returncode != 0:
        print("FAIL: Kafka is not reachable at %s; start it with ./deploy/stack.sh up" % BOOT,
              file=sys.stderr)
        sys.exit(1)
    check(rcli("ACL", "SETUSER", USER, "reset", "on", ">" + PASSWORD, "~*", "&*", "+@all")
          == "OK", "ACL SETUSER %s (password with @ : / %%)" % USER)
    url = "redis://%s:%s@%s:%d/%d" % (USER, ENC, RHOST, RPORT, DB)
    bad_url = "redis://%s:%s@%s:%d/%d" % (USER, ENC + "x", RHOST, RPORT, DB)
    try:
        with tempfile.TemporaryDirectory(dir=TMP) as td:
            tokens = os.path.join(td, "tokens")
            with open(tokens, "w") as fp:
                fp.write("redis-auth-test-token-0123456789abcdef\n")
            os.chmod(tokens, 0o600)
            # One-off lookup: connects and AUTHs as the ACL user (3 = unknown borrower).
            p = subprocess.run([os.path.join(BIN, "loanwire-query"), "--redis", url,
                                "--borrower", "Z" * 22], capture_output=True, text=True,
                               timeout=30)
            check(p.returncode == 3, "--borrower with an ACL user's URL connects (exit %d: %s)"
                  % (p.returncode, p.stderr.strip()[-200:]))
            check(not secret_in(p.stderr), "--borrower: no password on stderr")

            # The server: start-up line redacted, /healthz up.
            logpath = os.path.join(td, "query.log")
            with open(logpath, "w") as log:
                srv, port = query_server(url, log, tokens)
                try:
                    st, body = healthz(port)
                    check(st == 200, "/healthz 200 through the ACL user (%d %s)" % (st, body))
                finally:
                    stop(srv)
            log = open(logpath).read()
            check("listening on" in log and "***" in log and USER in log,
                  "start-up line names the user, password as ***")
            check(not secret_in(log), "loanwire-query log holds no password")

            # Wrong password: 503, nothing about Redis in the answer, nothing secret logged.
            logpath = os.path.join(td, "query-bad.log")
            with open(logpath, "w") as log:
                srv, port = query_server(bad_url, log, tokens)
                try:
                    st, body = healthz(port)
                    check(st == 503 and body.strip() == '{"status":"down"}',
                          "/healthz with a wrong password: 503 {\"status\":\"down\"} (%d %s)"
                          % (st, body))
                finally:
                    stop(srv)
            log = open(logpath).read()
            check(not secret_in(log), "loanwire-query log (AUTH refused) holds no password")

            # A URL parse error does not echo the password.
            for u in ["redis://%s:%s%%zz@%s:%d" % (USER, ENC, RHOST, RPORT),
                      "redis://%s:%s@%s:0" % (USER, ENC, RHOST)]:
                p = subprocess.run([os.path.join(BIN, "loanwire-query"), "--redis", u,
                                    "--listen", "127.0.0.1:%d" % free_port(), "--no-auth"],
                                   capture_output=True, text=True, timeout=30)
                check(p.returncode != 0 and "redis URL" in p.stderr and not secret_in(p.stderr),
                      "bad URL refused without showing the password: %s" % p.stderr.strip())

            # loanwire-exposure's start-up line ("Redis URL: write script ... loaded").
            exp = subprocess.Popen([os.path.join(BIN, "loanwire-exposure"), "--brokers", BOOT,
                                    "--redis", url, "--topic", "lw-test-auth-%d" % os.getpid(),
                                    "--group", "lw-test-auth-%d" % os.getpid(), "--status", "0"],
                                   stderr=subprocess.PIPE, text=True)
            lines, deadline = [], time.time() + 60
            try:
                os.set_blocking(exp.stderr.fileno(), False)
                while time.time() < deadline and not any("write script" in l for l in lines):
                    chunk = exp.stderr.readline()
                    if chunk:
                        lines.append(chunk)
                    elif exp.poll() is not None:
                        break
                    else:
                        time.sleep(0.05)
            finally:
                stop(exp)
                os.set_blocking(exp.stderr.fileno(), True)
                lines += exp.stderr.readlines()
            text = "".join(lines)
            line = [l for l in lines if "write script" in l]
            check(bool(line) and "***" in line[0] and USER in line[0],
                  "loanwire-exposure start-up line: user shown, password as *** (%s)"
                  % (line[0].strip() if line else text[-300:]))
            check(not secret_in(text), "loanwire-exposure log holds no password")
    finally:
        rcli("ACL", "DELUSER", USER)
    if failures:
        print("%d check(s) failed:" % len(failures), file=sys.stderr)
        for f in failures:
            print("  " + f, file=sys.stderr)
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
