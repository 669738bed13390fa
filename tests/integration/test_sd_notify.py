#!/usr/bin/env python3
"""test_sd_notify.py - the services' readiness protocol, with this test in
systemd's place: it binds the $NOTIFY_SOCKET datagram socket that systemd
gives a Type=notify service and reads what the programs send (sd_notify()
from libsystemd), against the real Kafka and Redis.

- loanwire-query sends READY=1 only once it listens: /healthz answers at the
  port its STATUS= names right after READY=1; SIGTERM brings STOPPING=1, exit 0.
- loanwire-exposure, with Redis unreachable, sends STATUS=waiting (naming
  Redis) and no READY=1; SIGTERM then ends it with exit 0.
- loanwire-exposure, with a topic that does not exist yet, waits naming the
  topic, does not create it (the broker auto-creates topics: asking for the
  metadata must not), and sends READY=1 once the topic is created.
- loanwire-exposure given kcat's flags (-b a dead broker, -F a properties
  file naming the real one, -t, -g, -X) is ready and applies the produced
  events (the -F file's bootstrap.servers, read after -b, is what worked), then
  sends STOPPING=1 at --until-caught-up.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.environ.get("LW_SOURCE_DIR", "."), "tests", "support"))
from lwtest import BIN, BOOT, TMP, check, die, finish, require_kafka, run  # noqa: E402

REDIS = os.environ.get("LOANWIRE_REDIS", "redis://127.0.0.1:6379")


def redis_db(url, db):
    """The same server, another database (this test's state stays apart)."""
    base = url.rstrip("/")
    tail = base.rsplit("/", 1)
    if len(tail) == 2 and tail[1].isdigit() and not tail[0].endswith("/"):
        base = tail[0]
    return f"{base}/{db}"


class Notify:
    """The datagram socket systemd would listen on, and what arrived."""

    def __init__(self, name):
        self.path = os.path.join(TMP, f"notify.{name}.{os.getpid()}")
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []

    def env(self):
        return dict(os.environ, NOTIFY_SOCKET=self.path)

    def wait_for(self, key, timeout):
        """Reads datagrams until one has KEY=...; returns its value or None."""
        end = time.monotonic() + timeout
        while True:
            for m in self.messages:
                if key in m:
                    return m[key]
            left = end - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096).decode()
            except socket.timeout:
                return None
            self.messages.append(dict(line.split("=", 1) for line in data.split("\n") if "=" in line))

    def statuses(self):
        return [m["STATUS"] for m in self.messages if "STATUS" in m]

    def close(self):
        self.sock.close()
        os.unlink(self.path)


def stop(p, timeout=30):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return None


def test_query():
    n = Notify("query")
    p = subprocess.Popen([f"{BIN}/loanwire-query", "--redis", REDIS, "--listen", "127.0.0.1:0",
                          "--no-auth", "--threads", "1"], env=n.env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ready = n.wait_for("READY", 15)
        check("query: READY=1 arrives", ready == "1", f"got {n.messages}")
        status = next((s for s in n.statuses() if s.startswith("listening on ")), "")
        port = status.rsplit(":", 1)[-1] if status else ""
        check(f"query: STATUS names the port ({status})", port.isdigit() and port != "0")
        code = None
        if port.isdigit():
            try:  # at once: READY=1 came after the socket listened
                code = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status
            except Exception as e:  # noqa: BLE001
                code = str(e)
        check("query: /healthz answers 200 right after READY=1", code == 200, f"got {code}")
        rc = stop(p)
        check("query: SIGTERM exits 0", rc == 0, f"rc {rc}")
        check("query: STOPPING=1 sent", n.wait_for("STOPPING", 5) == "1", f"got {n.messages}")
    finally:
        stop(p)
        n.close()


def test_exposure_waits_for_redis():
    n = Notify("exp-redis")
    p = subprocess.Popen([f"{BIN}/loanwire-exposure", "-b", BOOT, "--redis", "redis://127.0.0.1:1",
                          "-g", f"lwtest.sd.{os.getpid()}"], env=n.env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        n.wait_for("STATUS", 10)
        n.wait_for("READY", 3)
        st = n.statuses()
        check("exposure, no Redis: STATUS=waiting names Redis",
              any(s.startswith("waiting: ") and "Redis" in s for s in st), f"got {st}")
        check("exposure, no Redis: no READY=1", not any("READY" in m for m in n.messages),
              f"got {n.messages}")
        rc = stop(p)
        check("exposure, no Redis: SIGTERM while waiting exits 0", rc == 0, f"rc {rc}")
    finally:
        stop(p)
        n.close()


def test_exposure_flags_and_topic(redis_url):
    topic = f"lwtest.sd.{os.getpid()}.{int(time.time() * 1000)}"
    props = os.path.join(TMP, f"sd.{os.getpid()}.properties")
    # 0600: a properties file may hold sasl.password, and every program refuses one
    # that group or others can read
    fd = os.open(props, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"# read after -b, so this broker is the one used\nbootstrap.servers={BOOT}\n")
    os.chmod(props, 0o600)
    feed = os.path.join(TMP, f"sd.{os.getpid()}.jsonl")
    r = run([f"{BIN}/loanwire-gen", "--events", "40", "--seed", str(os.getpid()), "-o", feed])
    check("gen: 40 events", r.returncode == 0, r.stderr)
    n = Notify("exp-topic")
    args = [f"{BIN}/loanwire-exposure", "-b", "127.0.0.1:1", "-F", props, "-t", topic,
            "-g", topic, "-X", "client.id=lwtest-sd", "--redis", redis_url,
            "--alerts-topic", topic + ".alerts", "--dlq-topic", topic + ".dlq", "--inquiries-topic", topic + ".inq",
            "--until-caught-up", "--status", "0"]
    p = subprocess.Popen(args, env=n.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    created = False
    try:
        n.wait_for("STATUS", 15)
        n.wait_for("READY", 3)
        st = n.statuses()
        check("exposure, no topic yet: STATUS=waiting names the topic",
              any(s.startswith("waiting: ") and topic in s for s in st), f"got {st}")
        check("exposure, no topic yet: no READY=1", not any("READY" in m for m in n.messages))
        r = run([f"{BIN}/loanwire-topics", "create", "-b", BOOT, "-t", topic, "--alerts-topic",
                 topic + ".alerts", "--dlq-topic", topic + ".dlq", "--inquiries-topic", topic + ".inq", "--partitions", "3",
                 "--alerts-partitions", "1"], timeout=120)
        created = r.returncode == 0
        check("the wait did not create the topic (loanwire-topics creates it)",
              f"created {topic} (3 partitions)" in r.stdout, r.stdout + r.stderr)
        r = run([f"{BIN}/loanwire-produce", "-b", BOOT, "-t", topic, "-q", feed], timeout=120)
        check("produce: 40 events delivered", r.returncode == 0, r.stderr)
        ready = n.wait_for("READY", 30)
        check("exposure: READY=1 once the topic exists", ready == "1", f"got {n.messages}")
        rc = stop_when_done(p, 120)
        err = p.stderr.read()
        check("exposure --until-caught-up exits 0", rc == 0, f"rc {rc}: {err[-800:]}")
        check("exposure: STOPPING=1 sent", n.wait_for("STOPPING", 5) == "1", f"got {n.messages}")
        # every borrower of the feed has state, read back by the query tool
        borrowers = sorted({json.loads(line)["borrower_id"] for line in open(feed)})
        missing = [b for b in borrowers
                   if run([f"{BIN}/loanwire-query", "--redis", redis_url, "--borrower", b]).returncode != 0]
        check(f"exposure applied the feed ({len(borrowers)} borrowers, missing {len(missing)})",
              borrowers and not missing, str(missing[:3]))
    finally:
        stop(p)
        n.close()
        if created:
            run([f"{BIN}/loanwire-topics", "delete", "-b", BOOT, "-t", topic, "--alerts-topic",
                 topic + ".alerts", "--dlq-topic", topic + ".dlq", "--inquiries-topic", topic + ".inq"], timeout=120)
        for f in (props, feed):
            if os.path.exists(f):
                os.unlink(f)


def stop_when_done(p, timeout):
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        return stop(p)


def main():
    require_kafka()
    r = run(["redis-cli", "-u", REDIS, "ping"])
    if r.stdout.strip() != "PONG":
        die(f"Redis is not reachable at {REDIS} (LOANWIRE_REDIS); start it with ./deploy/stack.sh up")
    db = redis_db(REDIS, 13)
    run(["redis-cli", "-u", db, "flushdb"])
    try:
        test_query()
        test_exposure_waits_for_redis()
        test_exposure_flags_and_topic(db)
    finally:
        run(["redis-cli", "-u", db, "flushdb"])
    finish()


if __name__ == "__main__":
    main()
