#!/usr/bin/env python3
"""memory_bench.py - Redis memory per borrower as loanwire-exposure stores it.

Loads N borrowers with three active loans each (realistic id lengths) through
the real apply script (loanwire-exposure --print-script), pipelined, into one
Redis DB (flushed first!), then reports MEMORY USAGE of sample state strings
(b:{<id>}) and the INFO used_memory delta per borrower.

  consumers/exposure/tools/memory_bench.py --redis 127.0.0.1:6391 --db 3 \
      --bin build/bin -n 100000 [--old]   # --old: loans opened > 30 days ago
"""
import argparse
import hashlib
import os
import socket
import struct
import subprocess


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class R:
    def __init__(self, host, port):
        self.s = socket.create_connection((host, port))
        self.f = self.s.makefile("rb")

    def read(self):
        line = self.f.readline()
        t, rest = line[:1], line[1:-2]
        if t in (b"+", b":"):
            return int(rest) if t == b":" else rest
        if t == b"-":
            raise RuntimeError(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2]
        if t == b"*":
            return [self.read() for _ in range(int(rest))]

    def cmd(self, *a):
        self.s.sendall(resp(*a))
        return self.read()


def used(r):
    info = r.cmd("INFO", "memory").decode()
    return int(info.split("used_memory:")[1].split("\r\n")[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis", default="127.0.0.1:6379")
    ap.add_argument("--db", type=int, default=3)
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("-n", type=int, default=100000)
    ap.add_argument("--old", action="store_true", help="loans opened long ago (no window entries)")
    a = ap.parse_args()
    host, port = a.redis.split(":")
    r = R(host, int(port))
    r.cmd("SELECT", a.db)
    r.cmd("FLUSHDB")
    script = subprocess.run([os.path.join(a.bin, "loanwire-exposure"), "--print-script"],
                            stdout=subprocess.PIPE, check=True).stdout
    sha = r.cmd("SCRIPT", "LOAD", script).decode()
    base = used(r)
    t0 = 1767225600000
    plats = [("ALIPAY", "BANK-CMB", "JB"), ("WEBANK", "WEBANK", "WLD"), ("JD", "BANK-ICBC", "JT")]
    batch = []
    for i in range(a.n):
        bid = ("B%021d" % i)[:22]
        for j, (p, lender, pre) in enumerate(plats):
            at = t0 + i * 1000 + j
            # opening drawdown, then a repayment later (as a feed would)
            for seq, out, when in ((1, 1500000 + j * 1000, at), (2, 1200000 + j * 1000,
                                   at + 86400000)):
                if a.old and seq == 1:
                    when = at - 60 * 86400000
                # one event per call: KEYS borrower, stream, epoch; ARGV partition epoch n,
                # then the numbers (apply.lua's '<BBBi8i8i8i8i4i8i8I6I4', the window
                # hashes only for the drawdown), loan, lender, event id
                me = "%s:%s-%08x-%d" % (p, pre, i, j)
                et = 2 if seq == 1 else 3
                h48 = int(hashlib.sha1(me.encode()).hexdigest()[:12], 16) if et == 2 else 0
                h32 = int(hashlib.sha1(lender.encode()).hexdigest()[:8], 16) if et == 2 else 0
                nums = struct.pack("<BBBqqqqiqq", et, 1, 0, seq, when, out, 0, 0, 0, 0) + \
                    h48.to_bytes(6, "little") + h32.to_bytes(4, "little")
                batch.append(resp("EVALSHA", sha, 3, "b:{%s}" % bid, "lw:alerts",
                                  "lw:epoch:t:0", 0, 1, 1, nums, me, lender,
                                  "%s-ev-%d-%d-%d" % (p, i, j, seq)))
        if len(batch) >= 6000 or i == a.n - 1:
            r.s.sendall(b"".join(batch))
            for _ in batch:
                r.read()
            batch = []
    r.cmd("XTRIM", "lw:alerts", "MAXLEN", 0)
    total = used(r) - base
    samples = [r.cmd("MEMORY", "USAGE", "b:{%s}" % ("B%021d" % i)[:22], "SAMPLES", 0)
               for i in range(0, a.n, max(1, a.n // 100))]
    enc = r.cmd("OBJECT", "ENCODING", "b:{%s}" % ("B%021d" % 0)[:22])
    strl = r.cmd("STRLEN", "b:{%s}" % ("B%021d" % 0)[:22])
    print(f"borrowers {a.n}, 3 active loans each, window entries {'none' if a.old else 'kept'}")
    print(f"encoding {enc.decode()}, state string {strl} bytes")
    print(f"MEMORY USAGE per borrower state: avg {sum(samples) / len(samples):.0f} bytes "
          f"(min {min(samples)}, max {max(samples)})")
    print(f"INFO used_memory delta per borrower: {total / a.n:.0f} bytes")
    r.cmd("FLUSHDB")


if __name__ == "__main__":
    main()
