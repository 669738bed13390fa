#!/usr/bin/env python3
"""test_topics.py - loanwire-topics against the real broker: create is
idempotent ("created" then "exists"), partition counts and settings are what
the options ask for (events topic kept forever unless --retention-ms), list
and describe show them, delete removes them, and errors exit non-zero.
Topic names are unique per run."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("LW_SOURCE_DIR", "."), "tests", "support"))
from lwtest import BIN, BOOT, check, finish, require_kafka, run  # noqa: E402


def topics(*args):
    return run([f"{BIN}/loanwire-topics", "-b", BOOT] + list(args), timeout=120)


def names_args(base):
    return ["--events-topic", base + ".ev", "--alerts-topic", base + ".al",
            "--dlq-topic", base + ".dl", "--inquiries-topic", base + ".iq"]


def main():
    require_kafka()
    base = f"lwtest.topics.{os.getpid()}.{int(time.time() * 1000)}"
    base2 = base + ".ret"
    try:
        r = topics("create", *names_args(base))
        check("create: exit 0", r.returncode == 0, r.stderr)
        check("create: four topics created with default partitions (inquiries as events)",
              f"created {base}.ev (6 partitions)" in r.stdout
              and f"created {base}.al (3 partitions)" in r.stdout
              and f"created {base}.dl (1 partitions)" in r.stdout
              and f"created {base}.iq (6 partitions)" in r.stdout, r.stdout)
        r = topics("create", *names_args(base))
        check("create again: exit 0, reports exists",
              r.returncode == 0 and r.stdout.count("exists ") == 4, r.stdout + r.stderr)

        # Leaders of new partitions may take a moment to be elected.
        deadline = time.monotonic() + 20
        while True:
            r = topics("describe", *names_args(base))
            if len(re.findall(r"partition \d+ leader \d+ ", r.stdout)) == 16 or \
                    time.monotonic() > deadline:
                break
            time.sleep(0.5)
        check("describe: exit 0", r.returncode == 0, r.stderr)
        check("describe: partition counts",
              f"{base}.ev: 6 partitions" in r.stdout and f"{base}.al: 3 partitions" in r.stdout
              and f"{base}.dl: 1 partitions" in r.stdout, r.stdout)
        check("describe: events topic kept forever, cleanup.policy=delete",
              f"{base}.ev config retention.ms=-1" in r.stdout
              and f"{base}.ev config cleanup.policy=delete" in r.stdout, r.stdout)
        check("describe: every partition has a leader",
              len(re.findall(r"partition \d+ leader \d+ ", r.stdout)) == 16, r.stdout)
        check("describe: inquiries topic kept forever",
              f"{base}.iq config retention.ms=-1" in r.stdout, r.stdout)

        r = topics("create", *names_args(base2), "--partitions", "2", "--alerts-partitions",
                   "2", "--dlq-partitions", "2", "--retention-ms", "86400000")
        check("create with options: exit 0", r.returncode == 0, r.stderr)
        r = topics("describe", *names_args(base2))
        check("options: partitions and retention as asked",
              f"{base2}.ev: 2 partitions" in r.stdout and f"{base2}.dl: 2 partitions" in r.stdout
              and f"{base2}.ev config retention.ms=86400000" in r.stdout
              and f"{base2}.iq: 2 partitions" in r.stdout, r.stdout)

        r = topics("list")
        check("list: shows the topics",
              r.returncode == 0 and re.search(rf"^{re.escape(base)}\.ev\t6 partitions$",
                                              r.stdout, re.M) is not None)

        r = topics("create", *names_args(base + ".x"), "--replication", "3")
        check("create with impossible replication: exit 1 with the broker's reason",
              r.returncode == 1 and "replication" in r.stderr.lower(), r.stderr)

        r = topics("delete", *names_args(base))
        check("delete: exit 0, three deleted", r.returncode == 0
              and r.stdout.count("deleted ") == 4, r.stdout + r.stderr)
        r = topics("describe", *names_args(base))
        check("describe after delete: absent, exit 1",
              r.returncode == 1 and f"{base}.ev: absent" in r.stdout, r.stdout)
    finally:
        topics("delete", *names_args(base))
        topics("delete", *names_args(base2))

    r = topics("frobnicate")
    check("unknown command: exit 2", r.returncode == 2)
    r = topics("create", "--partitions", "0")
    check("bad --partitions: exit 2", r.returncode == 2 and "--partitions" in r.stderr, r.stderr)
    r = run([f"{BIN}/loanwire-topics", "-b", "127.0.0.1:1", "--timeout-ms", "1500", "list"],
            timeout=60)
    check("unreachable broker: exit 1 naming it",
          r.returncode == 1 and "127.0.0.1:1" in r.stderr, r.stderr[-300:])
    r = topics("--help")
    check("--help: exit 0", r.returncode == 0 and "create" in r.stdout)

    finish()


if __name__ == "__main__":
    main()
