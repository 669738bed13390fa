#!/usr/bin/env python3
"""test_inquiries.py - every exposure look-up is a recorded credit inquiry
(issue 20), end to end against the real broker and Redis:

  1. 8 institutions look one borrower up for approval and 2 for post-loan
     management (each with its own token, "TOKEN INSTITUTION_ID"); every
     look-up is a CreditInquiry on the inquiries topic, keyed by the
     borrower; a look-up without purpose= (or with an unknown one) is 400 and
     records nothing;
  2. loanwire-exposure consumes the inquiries beside the loan events:
     inquiries_30d is 8, inquiry_institutions_30d is 8 (post-loan management
     shown, never counted), the last inquiries name institution and
     purpose; inquiry_spree fires once (one alert on the alerts topic);
     `loanwire-query --borrower` (the operator's tool) records nothing;
  3. Kafka down (deploy/stack.sh kafka-stop): the look-up is 503 with no
     exposure in the answer; the broker is started again at the end, also
     when a check fails.
"""
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.environ.get("LW_SOURCE_DIR", "."), "tests", "support"))
from lwtest import (BIN, BOOT, SRC, TMP, check, die, finish, kafka_answers,  # noqa: E402
                    require_kafka, run)

STACK = os.path.join(SRC, "deploy", "stack.sh")
REDIS = os.environ.get("LOANWIRE_REDIS", "redis://127.0.0.1:6379")
UNIQ = "%d-%d" % (os.getpid(), int(time.time() * 1000))
BASE = "lwtest.inq." + UNIQ
INQ = BASE + ".inq"
ALERTS = BASE + ".alerts"
# a borrower of its own: 22 base64url characters
BORROWER = secrets.token_urlsafe(16)[:22].replace("=", "A")
APPROVAL = ["LOAN_APPROVAL", "CREDIT_CARD_APPROVAL", "GUARANTEE_REVIEW"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def get(port, token, purpose):
    path = "/v1/borrowers/%s/exposure" % BORROWER
    if purpose is not None:
        path += "?purpose=" + purpose
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path))
    req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def topic_records(topic):
    """(key, payload) of every record of topic, all partitions: parsed by the
    payload's size, since a binary payload may hold any byte."""
    r = subprocess.run(["kcat", "-C", "-b", BOOT, "-t", topic, "-o", "beginning", "-e", "-q",
                        "-f", "%k\\t%S\\t%s\\n"], capture_output=True, timeout=60)
    out, buf, i = [], r.stdout, 0
    while i < len(buf):
        kt = buf.index(b"\t", i)
        st = buf.index(b"\t", kt + 1)
        n = int(buf[kt + 1:st])
        out.append((buf[i:kt].decode(), buf[st + 1:st + 1 + n]))
        i = st + 1 + n + 1
    return out


def exposure_cli():
    r = run([os.path.join(BIN, "loanwire-query"), "--redis", REDIS, "--borrower", BORROWER],
            timeout=30)
    return json.loads(r.stdout) if r.returncode == 0 else None


def main():
    require_kafka()
    procs = []
    kafka_stopped = False
    try:
        r = run([os.path.join(BIN, "loanwire-topics"), "create", "-b", BOOT, "-t", BASE,
                 "--alerts-topic", ALERTS, "--dlq-topic", BASE + ".dlq", "--inquiries-topic",
                 INQ, "--partitions", "3", "--alerts-partitions", "1"], timeout=120)
        if r.returncode != 0:
            die("loanwire-topics create: " + r.stderr)
        check("loanwire-topics created the inquiries topic with the events' partitions",
              "created %s (3 partitions)" % INQ in r.stdout, r.stdout)

        tokens = {}
        lines = []
        for i in range(10):
            inst = ("bank-%d" % i) if i < 8 else ("servicer-%d" % i)
            tok = "tok-%d-%s" % (i, secrets.token_urlsafe(18))
            tokens[inst] = tok
            lines.append("%s %s" % (tok, inst))
        staff = "staff-" + secrets.token_urlsafe(18)
        lines.append(staff)  # a token alone: the bureau's staff
        tokfile = os.path.join(TMP, "inq-tokens-" + UNIQ)
        with open(os.open(tokfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write("# institution tokens\n" + "\n".join(lines) + "\n")

        qport = free_port()
        qlog = open(os.path.join(TMP, "inq-query-%s.log" % UNIQ), "w+")
        q = subprocess.Popen([os.path.join(BIN, "loanwire-query"), "--listen",
                              "127.0.0.1:%d" % qport, "--redis", REDIS, "--tokens", tokfile,
                              "--brokers", BOOT, "--inquiries-topic", INQ], stderr=qlog)
        procs.append(q)
        xlog = open(os.path.join(TMP, "inq-exposure-%s.log" % UNIQ), "w+")
        x = subprocess.Popen([os.path.join(BIN, "loanwire-exposure"), "-b", BOOT, "-t", BASE,
                              "--alerts-topic", ALERTS, "--dlq-topic", BASE + ".dlq",
                              "--inquiries-topic", INQ, "-g", "inq-" + UNIQ, "--redis", REDIS,
                              "--status", "0"], stderr=xlog)
        procs.append(x)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", qport), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)

        # 1. look-ups: missing and unknown purpose first, then 8 + 2
        st, body = get(qport, tokens["bank-0"], None)
        check("missing purpose: 400", st == 400 and "purpose" in body, "%s %s" % (st, body))
        st, body = get(qport, tokens["bank-0"], "MARKETING")
        check("unknown purpose: 400", st == 400, "%s %s" % (st, body))
        st, _ = get(qport, "not-a-known-token-AAAAAAAAAAAA", "LOAN_APPROVAL")
        check("unknown token: 401", st == 401)
        statuses = []
        for i in range(8):
            statuses.append(get(qport, tokens["bank-%d" % i], APPROVAL[i % 3])[0])
        for i in (8, 9):
            statuses.append(get(qport, tokens["servicer-%d" % i], "POST_LOAN_MANAGEMENT")[0])
        # unknown to the bureau (no loan) at first: 404, recorded all the same
        check("10 look-ups answered (200 or 404 for a borrower with no loans)",
              all(s in (200, 404) for s in statuses), statuses)

        recs = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            recs = topic_records(INQ)
            if len(recs) >= 10:
                break
            time.sleep(0.5)
        check("every look-up is on the inquiries topic, none of the 400s (10 records)",
              len(recs) == 10, len(recs))
        check("each keyed by the borrower", all(k == BORROWER for k, _ in recs),
              [k for k, _ in recs][:3])
        check("each is a single-object Avro CreditInquiry naming its institution",
              all(p.startswith(b"\xc3\x01") for _, p in recs)
              and all(any(inst.encode() in p for _, p in recs) for inst in tokens),
              recs[:1])

        # 2. the exposure, read with the operator's tool (records nothing)
        doc = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            doc = exposure_cli()
            if doc and doc.get("inquiries_30d") == 8 and len(doc.get("inquiries", [])) == 10:
                break
            time.sleep(0.5)
        check("exposure: inquiries_30d is 8", doc is not None and doc.get("inquiries_30d") == 8,
              doc)
        check("exposure: inquiries_90d is 8", doc is not None and doc.get("inquiries_90d") == 8)
        check("exposure: inquiry_institutions_30d is 8",
              doc is not None and doc.get("inquiry_institutions_30d") == 8)
        shown = doc.get("inquiries", []) if doc else []
        check("exposure: the last inquiries show all 10, post-loan management included",
              len(shown) == 10
              and sum(1 for s in shown if s["purpose"] == "POST_LOAN_MANAGEMENT") == 2
              and {s["institution_id"] for s in shown} == set(tokens), shown)
        check("exposure: inquiry_spree is open",
              doc is not None and any(a["rule_id"] == "inquiry_spree"
                                      for a in doc.get("open_alerts", [])), doc)
        check("--borrower recorded nothing", len(topic_records(INQ)) == 10)

        alerts = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            alerts = [p for k, p in topic_records(ALERTS) if k == BORROWER]
            if alerts:
                break
            time.sleep(0.5)
        time.sleep(1)
        alerts = [p for k, p in topic_records(ALERTS) if k == BORROWER]
        check("inquiry_spree fired once (one alert on the alerts topic)",
              len(alerts) == 1 and b"inquiry_spree" in alerts[0], len(alerts))

        # restart: the inquiries' offsets were committed beside the events', so a new
        # member of the group is caught up at once and counts nothing twice
        x.send_signal(signal.SIGTERM)
        check("loanwire-exposure stopped cleanly", x.wait(timeout=60) == 0)
        r = run([os.path.join(BIN, "loanwire-exposure"), "-b", BOOT, "-t", BASE,
                 "--alerts-topic", ALERTS, "--dlq-topic", BASE + ".dlq", "--inquiries-topic",
                 INQ, "-g", "inq-" + UNIQ, "--redis", REDIS, "--status", "0",
                 "--until-caught-up"], timeout=120)
        check("restarted with --until-caught-up: stops (inquiry offsets committed)",
              r.returncode == 0, r.stderr[-400:])
        doc = exposure_cli()
        check("after the restart: still inquiries_30d 8, institutions 8",
              doc is not None and doc.get("inquiries_30d") == 8
              and doc.get("inquiry_institutions_30d") == 8, doc)
        x = subprocess.Popen([os.path.join(BIN, "loanwire-exposure"), "-b", BOOT, "-t", BASE,
                              "--alerts-topic", ALERTS, "--dlq-topic", BASE + ".dlq",
                              "--inquiries-topic", INQ, "-g", "inq-" + UNIQ, "--redis", REDIS,
                              "--status", "0"], stderr=xlog)
        procs.append(x)

        # the staff token (alone on its line) is recorded as BUREAU
        st, _ = get(qport, staff, "BORROWER_REQUEST")
        check("staff look-up answered", st == 200, st)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(topic_records(INQ)) < 11:
            time.sleep(0.3)
        last = topic_records(INQ)
        check("staff look-up recorded as institution BUREAU",
              len(last) == 11 and sum(1 for _, p in last if b"BUREAU" in p) == 1, len(last))

        # 3. Kafka down: 503, nothing answered
        r = run(["bash", STACK, "kafka-stop"], timeout=120)
        kafka_stopped = True
        if r.returncode != 0 or kafka_answers():
            die("stack.sh kafka-stop did not stop the broker: " + r.stderr[-300:])
        t0 = time.monotonic()
        st, body = get(qport, tokens["bank-1"], "LOAN_APPROVAL")
        took = time.monotonic() - t0
        check("Kafka down: 503", st == 503, "%s %s" % (st, body))
        try:
            err = json.loads(body)
        except ValueError:
            err = {}
        check("Kafka down: an error, no exposure in the answer",
              err.get("error") == "unavailable" and "borrower_id" not in err
              and "total_outstanding_fen" not in body, body)
        check("Kafka down: answered within the record timeout (%.1f s)" % took, took < 15)
    finally:
        if kafka_stopped:
            r = run(["bash", STACK, "kafka-start"], timeout=300)
            if r.returncode != 0 or not kafka_answers():
                print("FAIL stack.sh kafka-start: " + r.stderr[-300:])
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        run([os.path.join(BIN, "loanwire-topics"), "delete", "-b", BOOT, "-t", BASE,
             "--alerts-topic", ALERTS, "--dlq-topic", BASE + ".dlq", "--inquiries-topic", INQ],
            timeout=120)
    finish()


if __name__ == "__main__":
    main()
