"""Issue 21 items 3 and 4 as a lender sees them: loanwire-query over state strings written
here byte for byte (layout version 3, still read; consumers/README.md), Redis DB 7 (flushed).

- a borrower with 4000 applications from 4000 distinct lenders in its windows: the API's
  windows count every lender (they stopped at 256);
- a borrower of 1100 active loans of 2^53 fen each (a state string may hold it; the sum
  passes INT64_MAX): the API answers 503 and logs why, instead of overflowing (undefined
  behaviour: UBSan stopped loanwire-query) or a wrapped total; `--borrower` exits 1 with it.
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import json

BIN = os.environ.get("LW_BIN_DIR", "build/bin")
TMP = os.environ.get("LW_TMP_DIR", "/tmp")
REDIS = os.environ.get("LOANWIRE_REDIS", "redis://127.0.0.1:6379")
DB = 7
T = 1767225600000
MANY = "MMMMMMMMMMMMMMMMMMMMMM"
HUGE = "HHHHHHHHHHHHHHHHHHHHHH"
TOKEN = "state-api-test-token-%d-0123456789abcdef" % os.getpid()
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def uv(x):
    b = bytearray()
    while x >= 0x80:
        b.append(x & 0x7F | 0x80)
        x >>= 7
    return bytes(b + bytes([x]))


def state(loans, win):
    """layout version 3 (read as ever, and by the code before this fix: the same test ran
    against both), no stamp, t, mask 0 (in version 4 the same byte: no alerts), loans
    (platform 1, lender 2), window entries"""
    b = bytes([3]) + uv(0) + uv(0) + uv(T) + uv(0) + uv(2 * len(loans)) + uv(len(win))
    for loan, out in loans:
        b += uv(1) + uv(2) + bytes([len(loan)]) + loan + uv(0) + uv(1) + uv(out) + uv(0)
    for d, idh, lh in win:
        b += uv(d) + idh.to_bytes(6, "little") + lh.to_bytes(4, "little")
    return b


def redis_hostport():
    u = REDIS[len("redis://"):] if REDIS.startswith("redis://") else REDIS
    u = u.split("@")[-1].split("/")[0]
    host, _, port = u.rpartition(":")
    return (host or "127.0.0.1"), int(port or 6379)


def main():
    host, port = redis_hostport()
    s = socket.create_connection((host, port), timeout=10)

    def cmd(*args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        s.sendall(out)
        return s.recv(65536)

    cmd("SELECT", DB)
    cmd("FLUSHDB")
    cmd("HSET", "lw:strings", "i:1", "p", "i:2", "l", "n:p", 1, "n:l", 2, "#", 2)
    # one application every 10 minutes, lender hashes all different
    win = [(i * 600000, i << 1 | 1, (0x9E3779B1 * (i + 1)) & 0xFFFFFFFF) for i in range(4000)]
    cmd("SET", "b:{%s}" % MANY, state([], win))
    cmd("SET", "b:{%s}" % HUGE, state([(b"O%d" % i, 1 << 53) for i in range(1100)], []))

    url = "redis://%s:%d/%d" % (host, port, DB)
    tokens = os.path.join(TMP, "state-api-tokens-%d" % os.getpid())
    with open(tokens, "w") as f:
        f.write(TOKEN + "\n")
    os.chmod(tokens, 0o600)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    qport = sock.getsockname()[1]
    sock.close()
    log = tempfile.NamedTemporaryFile(dir=TMP, prefix="state-api-", suffix=".log", delete=False)
    p = subprocess.Popen([os.path.join(BIN, "loanwire-query"), "--redis", url, "--listen",
                          "127.0.0.1:%d" % qport, "--tokens", tokens], stderr=log)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", qport), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)

        def get(bid):
            req = urllib.request.Request("http://127.0.0.1:%d/v1/borrowers/%s/exposure?purpose=LOAN_APPROVAL"
                                         % (qport, bid))
            req.add_header("Authorization", "Bearer " + TOKEN)
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()

        code, body = get(MANY)
        check(code == 200, "4000 lenders: 200 (%d)" % code)
        w = json.loads(body)["windows"] if code == 200 else {}
        check(w.get("30d", {}).get("distinct_lenders") == 4000,
              "30-day distinct lenders 4000 (got %s)" % w.get("30d"))
        check(w.get("7d", {}).get("distinct_lenders") == 1008,
              "7-day distinct lenders 1008 (got %s)" % w.get("7d"))
        code, body = get(HUGE)
        check(code == 503, "overflowing totals: 503 (got %d: %s)" % (code, body[:200]))
        check(p.poll() is None, "loanwire-query still running")
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=20)
    text = open(log.name).read()
    check("exceeds 9223372036854775807 fen" in text, "the API logs why it refused")
    r = subprocess.run([os.path.join(BIN, "loanwire-query"), "--redis", url, "--borrower", HUGE],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 1 and "exceeds" in r.stderr,
          "--borrower: exit 1 with the reason (%d: %s)" % (r.returncode, r.stderr.strip()[-200:]))
    cmd("FLUSHDB")
    os.unlink(tokens)
    os.unlink(log.name)
    if failures:
        print("FAILED: %d checks" % len(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
