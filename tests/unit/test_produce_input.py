#!/usr/bin/env python3
"""test_produce_input.py - loanwire-produce --dry-run on hostile input, no servers.

  1. The rejects file holds refused lines verbatim, raw national ids included:
     it is created mode 0600 under umask 022, and an existing one that group or
     others could read is narrowed to 0600 (issue 21 item 7).
  2. A line longer than the documented maximum (1 MiB) is rejected with its
     line number and not copied; the lines after it are still read; the
     process's memory stays bounded (a 256 MiB line through a pipe, the
     child's peak RSS under 64 MiB; before, the buffer grew to hold the whole
     line) (issue 21 item 10).
  3. -F FILE may hold sasl.password: a file that group or others may read is
     refused at start (exit 2, "chmod 600"), before any broker is contacted
     (issue 21 item 11).
"""
import os
import resource
import stat
import subprocess
import sys
import tempfile

BIN = os.environ.get("LW_BIN_DIR", "build/bin")
TMP = os.environ.get("LW_TMP_DIR", "/tmp")
PRODUCE = os.path.join(BIN, "loanwire-produce")
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def rejects_mode(work):
    src = os.path.join(work, "ids.jsonl")
    with open(src, "w") as fp:
        fp.write('{"national_id":"11010519491231002X","event_id":"e1"}\n')
    old = os.umask(0o022)
    try:
        r = subprocess.run([PRODUCE, "-n", "-q", src], capture_output=True, text=True,
                           timeout=60)
        rej = src + ".rejects"
        check(r.returncode == 0 and os.path.exists(rej), "dry run wrote a rejects file (%d: %s)"
              % (r.returncode, r.stderr[-200:]))
        check(mode(rej) == 0o600, "new rejects file is 0600 under umask 022 (got %03o)"
              % mode(rej))
        check("11010519491231002X" in open(rej).read(), "the refused line is kept verbatim")
        # An existing file, readable by everyone: narrowed before anything is written.
        pre = os.path.join(work, "old.rejects")
        with open(pre, "w") as fp:
            fp.write("stale\n")
        os.chmod(pre, 0o644)
        r = subprocess.run([PRODUCE, "-n", "-q", "-r", pre, src], capture_output=True, text=True,
                           timeout=60)
        check(r.returncode == 0 and mode(pre) == 0o600,
              "an existing 0644 rejects file is narrowed to 0600 (got %03o)" % mode(pre))
        # A device is written to, never chmod'ed.
        r = subprocess.run([PRODUCE, "-n", "-q", "-r", "/dev/null", src], capture_output=True,
                           text=True, timeout=60)
        check(r.returncode == 0 and mode("/dev/null") == 0o666,
              "-r /dev/null works and /dev/null keeps its mode")
    finally:
        os.umask(old)


def long_line(work):
    rej = os.path.join(work, "long.rejects")
    p = subprocess.Popen([PRODUCE, "-n", "-r", rej, "-"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    big = 256 << 20
    chunk = b"x" * (1 << 20)
    try:
        p.stdin.write(b'{"event_id":"first"}\n')
        for _ in range(big // len(chunk)):
            p.stdin.write(chunk)
        p.stdin.write(b'\n{"event_id":"after"}\n' + b"y" * (3 << 20))  # last line: no newline
        p.stdin.close()
    except BrokenPipeError:
        pass
    err = p.stderr.read().decode(errors="replace")
    p.wait(timeout=300)
    rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    check(p.returncode == 0, "dry run of a 256 MiB line exits 0 (%d: %s)"
          % (p.returncode, err[-300:]))
    check(rss_kb < 64 * 1024, "peak RSS bounded: %d KiB < 64 MiB for a 256 MiB line" % rss_kb)
    text = open(rej, "rb").read() if os.path.exists(rej) else b""
    lines = text.split(b"\n")
    check(b"# <stdin>:2: line longer than 1048576 bytes (%d bytes), not copied" % big in lines,
          "the long line is rejected with its line number and length")
    check(b"# <stdin>:4: line longer than 1048576 bytes (%d bytes), not copied" % (3 << 20)
          in lines, "a long last line without a newline: line 4, rejected")
    check(b'{"event_id":"after"}' in lines and b"# <stdin>:3: " in text,
          "the line after the long one is still read (line 3)")
    check(len(text) < 4096, "the long lines are not copied (%d bytes of rejects)" % len(text))
    check("read 4, rejected 4" in err, "summary counts all four lines")
    # Exactly the maximum is still read as an event (refused here for its content).
    ok = b'{"event_id":"' + b"z" * ((1 << 20) - 15) + b'"}'
    assert len(ok) == 1 << 20
    r = subprocess.run([PRODUCE, "-n", "-r", rej, "-"], input=ok + b"\r\n", capture_output=True,
                       timeout=60)
    text = open(rej, "rb").read()
    check(b"line longer than" not in text and ok in text,
          "a line of exactly 1 MiB (+ CR) is parsed, and kept whole when refused")


def properties_mode(work):
    props = os.path.join(work, "kafka.properties")
    with open(props, "w") as fp:
        fp.write("sasl.password=hunter2-secret\n")
    src = os.path.join(work, "one.jsonl")
    with open(src, "w") as fp:
        fp.write("{}\n")
    for mode_, want in ((0o644, 2), (0o640, 2), (0o600, None)):
        os.chmod(props, mode_)
        r = subprocess.run([PRODUCE, "-b", "127.0.0.1:1", "-X", "message.timeout.ms=1000",
                            "-q", "-F", props, src], capture_output=True, text=True, timeout=60)
        if want is not None:
            check(r.returncode == want and "chmod 600" in r.stderr
                  and "hunter2" not in r.stderr,
                  "-F file of mode %03o refused (exit %d: %s)"
                  % (mode_, r.returncode, r.stderr.strip()[-160:]))
        else:
            check("chmod 600" not in r.stderr and "properties file" not in r.stderr,
                  "-F file of mode 600 accepted (exit %d)" % r.returncode)


def main():
    if not os.access(PRODUCE, os.X_OK):
        print("FAIL: %s is not built" % PRODUCE, file=sys.stderr)
        sys.exit(1)
    with tempfile.TemporaryDirectory(dir=TMP) as work:
        rejects_mode(work)
        long_line(work)
        properties_mode(work)
    if failures:
        print("%d check(s) failed:" % len(failures), file=sys.stderr)
        for f in failures:
            print("  " + f, file=sys.stderr)
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
