"""lwtest.py - what the Python integration tests of the platform side share.

Paths and servers from the environment ctest sets (LW_BIN_DIR, LW_SOURCE_DIR,
LW_TMP_DIR) and ./tests/run.sh exports (LOANWIRE_BOOTSTRAP); check() counts and
prints one line per assertion; finish() prints the closing 'N passed, N failed'
line and exits non-zero on any failure. A missing server fails the test at once
(die), naming it and how to start it: a test never skips.
"""
import os
import re
import subprocess
import sys
import tempfile

BIN = os.environ.get("LW_BIN_DIR", "build/bin")
SRC = os.environ.get("LW_SOURCE_DIR", ".")
BOOT = os.environ.get("LOANWIRE_BOOTSTRAP", "127.0.0.1:9092")
TMP = os.environ.get("LW_TMP_DIR") or tempfile.gettempdir()
PARTITIONS = 6

_passed = 0
_failed = 0


def check(name, cond, detail=""):
    global _passed, _failed
    if cond:
        _passed += 1
        print(f"ok   {name}")
    else:
        _failed += 1
        print(f"FAIL {name} {detail}")


def die(msg):
    print(f"FAIL {msg}")
    print(f"{_passed} passed, {_failed + 1} failed")
    sys.exit(1)


def finish():
    print(f"{_passed} passed, {_failed} failed")
    sys.exit(1 if _failed else 0)


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def kafka_answers():
    return run(["kcat", "-b", BOOT, "-L", "-m", "5"]).returncode == 0


def require_kafka():
    r = run(["kcat", "-b", BOOT, "-L", "-m", "10"])
    if r.returncode != 0:
        die(f"Kafka is not reachable at {BOOT} (LOANWIRE_BOOTSTRAP); "
            f"start it with ./deploy/stack.sh up: {r.stderr.strip()[:300]}")


def topics_cmd(cmd, topic):
    """loanwire-topics create|delete of topic and its .alerts / .dlq siblings."""
    return run([f"{BIN}/loanwire-topics", cmd, "-b", BOOT, "--events-topic", topic,
                "--alerts-topic", topic + ".alerts", "--dlq-topic", topic + ".dlq", "--inquiries-topic", topic + ".inq",
                "--partitions", str(PARTITIONS), "--alerts-partitions", "1"])


def produce_summary(stderr):
    """The counts of loanwire-produce's closing summary line, or None."""
    m = re.search(r"read (\d+), rejected (\d+), sent (\d+), delivered (\d+), failed (\d+)",
                  stderr)
    return dict(zip(("read", "rejected", "sent", "delivered", "failed"),
                    map(int, m.groups()))) if m else None
