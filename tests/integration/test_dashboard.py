#!/usr/bin/env python3
"""test_dashboard.py - loanwire-query's dashboard in a real browser.

Debian's chromium, headless, driven through Debian's chromium-driver with
Selenium, against the real stack: a live `loanwire-gen --kafka` feed on a
topic of this run, a running loanwire-exposure (Redis DB 12, flushed), and
loanwire-query with a token file. Checks:
  - security headers on / (CSP default-src 'self', frame-ancestors 'none',
    nosniff, Referrer-Policy) and no inline script or style in the page;
  - a wrong token is refused (no cookie), the right one signs in: the
    session cookie is HttpOnly, SameSite=Strict and expiring; the token is in
    no URL the browser requested;
  - alerts raised during the test (stream ids after sign-in) appear on the
    page, each within a second of its stream entry; the rule and severity
    filters hide the others;
  - both charts render (canvas with pixels drawn), fed by non-zero data;
  - a borrower look-up shows the same total (12,345.67 from integer fen) as
    the API, and its per-platform rows add up to it;
  - layout at 1400x1000 (panels side by side) and at 420 wide (one column,
    no horizontal scrolling);
  - the browser console has no errors (the one expected 401 of the wrong
    token aside) and the page requested nothing outside 127.0.0.1 (Chrome's
    performance log and the page's resource timing);
  - signing out ends the session on the server.
Saves screenshots (wide and narrow) under $LW_TMP_DIR/test_dashboard/.
Fails, never skips, when chromium, chromium-driver, Selenium or the stack
is missing.
"""
import json
import os
import shutil
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
BOOT = os.environ.get("LOANWIRE_BOOTSTRAP", "127.0.0.1:9092")
DB = 12
UNIQ = "%d-%d" % (os.getpid(), int(time.time()))
TOKEN = "dash-%s-Zq8rLmW3xY0pVbNdK7" % UNIQ  # >= 22 characters: 128 bits
OUT = os.path.join(TMP, "test_dashboard")
failures = []
T0 = time.time()


def die(why):
    print("FAIL: " + why, file=sys.stderr)
    sys.exit(1)


def check(cond, what, detail=""):
    print(("ok   " if cond else "FAIL ") + what + (("  [%s]" % detail) if detail and not cond else ""))
    if not cond:
        failures.append(what)
    return cond


try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
except ImportError as e:
    die("Selenium is not installed (%s): ./deploy/install-deps.sh installs it "
        "(python3 -m pip install selenium)" % e)
CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver"
                                          if os.path.exists("/usr/bin/chromedriver") else None)
if not CHROMIUM or not DRIVER:
    die("Debian's chromium and chromium-driver are needed (apt-get install chromium "
        "chromium-driver, or ./deploy/install-deps.sh)")


def redis_hostport():
    u = REDIS[len("redis://"):] if REDIS.startswith("redis://") else REDIS
    u = u.split("@")[-1].split("/")[0]
    host, _, port = u.rpartition(":")
    return (host or "127.0.0.1"), int(port or 6379)


RHOST, RPORT = redis_hostport()
RURL = "redis://%s:%d/%d" % (RHOST, RPORT, DB)


def rcli(*args):
    p = subprocess.run(["redis-cli", "-h", RHOST, "-p", str(RPORT), "-n", str(DB)] + list(args),
                       capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError("redis-cli %s: %s" % (args, p.stderr))
    return p.stdout


def fen_text(fen):
    """12345 -> '123.45', integers only (the page's contract)."""
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return "%s%s.%02d" % (sign, "{:,}".format(fen // 100), fen % 100)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http(port, path, method="GET", token=TOKEN, headers=None):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


# ---- the stack ---------------------------------------------------------------
try:
    if rcli("PING").strip() != "PONG":
        raise RuntimeError("no PONG")
except Exception as e:  # noqa: BLE001 - any failure means no Redis
    die("Redis is not reachable at %s:%d (%s): start the stack (./deploy/stack.sh up, "
        "or ./tests/run.sh)" % (RHOST, RPORT, e))
host, _, kport = BOOT.split(",")[0].rpartition(":")
try:
    socket.create_connection((host or "127.0.0.1", int(kport)), timeout=3).close()
except OSError as e:
    die("Kafka is not reachable at %s (%s): start the stack (./deploy/stack.sh up)" % (BOOT, e))

os.makedirs(OUT, exist_ok=True)
rcli("FLUSHDB")
topic = "dash-%s" % UNIQ
r = subprocess.run([os.path.join(BIN, "loanwire-topics"), "create", "-b", BOOT, "-t", topic,
                    "--alerts-topic", topic + ".alerts", "--dlq-topic", topic + ".dlq", "--inquiries-topic", topic + ".inq",
                    "--partitions", "3"], capture_output=True, text=True, timeout=60)
if r.returncode != 0:
    die("loanwire-topics create: " + r.stderr)

tokfile = os.path.join(OUT, "tokens")
with open(tokfile, "w") as f:
    f.write("# test_dashboard\n%s\n" % TOKEN)
os.chmod(tokfile, 0o600)
procs = []


def spawn(args, name):
    log = open(os.path.join(OUT, name + ".log"), "w")
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    procs.append((p, name))
    return p


exposure = spawn([os.path.join(BIN, "loanwire-exposure"), "-b", BOOT, "-t", topic,
                  "--alerts-topic", topic + ".alerts", "--dlq-topic", topic + ".dlq", "--inquiries-topic", topic + ".inq",
                  "-g", "dash-" + UNIQ, "--redis", RURL, "--status", "1"], "exposure")
port = free_port()
query = spawn([os.path.join(BIN, "loanwire-query"), "--redis", RURL, "--tokens", tokfile,
               "--listen", "127.0.0.1:%d" % port], "query")
deadline = time.time() + 10
while True:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        break
    except OSError:
        if query.poll() is not None or time.time() > deadline:
            die("loanwire-query did not start: " + open(os.path.join(OUT, "query.log")).read())
        time.sleep(0.1)
# 20% over-borrowers so that alerts come every second or so; 300 events/s.
gen = spawn([os.path.join(BIN, "loanwire-gen"), "--kafka", "-b", BOOT, "-t", topic,
             "--rate", "300", "--duration", "50", "--borrowers", "3000",
             "--over-borrowers", "20", "--seed", str(os.getpid())], "gen")
BASE = "http://127.0.0.1:%d" % port

driver = None


def stop_all():
    for p, name in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT if name == "gen" else signal.SIGTERM)
    for p, name in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            failures.append("%s did not stop within 20 s" % name)


def js(script, *args):
    return driver.execute_script(script, *args)


def wait_for(what, fn, timeout=15.0, every=0.1):
    end = time.time() + timeout
    while time.time() < end:
        try:
            v = fn()
            if v:
                return v
        except Exception:  # noqa: BLE001 - retried until the deadline
            pass
        time.sleep(every)
    return None


try:
    # ---- headers and the page's own markup, without a browser ----------------
    st, hd, body = http(port, "/", token=None)
    csp = hd.get("Content-Security-Policy", "")
    check(st == 200 and "text/html" in hd.get("Content-Type", ""), "GET / serves the page")
    check("default-src 'self'" in csp and "frame-ancestors 'none'" in csp and
          "unsafe-inline" not in csp, "CSP: default-src 'self', frame-ancestors 'none'", csp)
    check(hd.get("X-Content-Type-Options") == "nosniff", "X-Content-Type-Options: nosniff")
    check(hd.get("Referrer-Policy") == "no-referrer", "Referrer-Policy: no-referrer")
    low = body.lower()
    check("<style" not in low and " style=" not in low and " onclick" not in low and
          all("src=" in tag.split(">")[0] for tag in low.split("<script")[1:]),
          "no inline script or style in the page")
    check('name="token"' in body and 'name="borrower"' in body,
          "the page has the fields token and borrower")
    st, _, _ = http(port, "/v1/dashboard/stats", token=None)
    check(st == 401, "chart data without token or session: 401")
    st, _, _ = http(port, "/v1/alerts/stream", token=None)
    check(st == 401, "alert stream without token or session: 401")

    # ---- the browser -------------------------------------------------------------
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1000", "--no-first-run", "--no-default-browser-check",
              "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--disable-default-apps", "--disable-extensions",
              "--user-data-dir=" + tempfile.mkdtemp(prefix="chromium-", dir=OUT)]:
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    except Exception as e:  # noqa: BLE001
        die("chromium did not start through chromium-driver: %s" % e)
    driver.set_window_size(1400, 1000)
    driver.get(BASE + "/")
    check(wait_for("sign-in", lambda: driver.find_element(By.NAME, "token").is_displayed()),
          "signed out: the sign-in form shows")

    # A wrong token.
    driver.find_element(By.NAME, "token").send_keys("wrong-" + TOKEN)
    driver.find_element(By.CSS_SELECTOR, "#signin-form button").click()
    err = wait_for("refusal", lambda: driver.find_element(By.ID, "signin-error").is_displayed()
                   and driver.find_element(By.ID, "signin-error").text)
    check(err and "refused" in err.lower(), "a wrong token is refused", err)
    check(not driver.find_element(By.ID, "dash").is_displayed() and
          not driver.get_cookies(), "... and gives no dashboard and no cookie")
    expected = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    check(all("/session" in e["message"] and "401" in e["message"] for e in expected),
          "... its only console error is the 401 of /session", str(expected))
    st, hd, _ = http(port, "/session", method="POST", token="wrong-" + TOKEN)
    check(st == 401 and not hd.get("Set-Cookie"), "POST /session, wrong token: 401, no cookie")

    # The right one.
    tok = driver.find_element(By.NAME, "token")
    tok.clear()
    tok.send_keys(TOKEN)
    signed_in_ms = int(time.time() * 1000)
    driver.find_element(By.CSS_SELECTOR, "#signin-form button").click()
    check(wait_for("dash", lambda: driver.find_element(By.ID, "dash").is_displayed()),
          "the right token signs in")
    cookies = {c["name"]: c for c in driver.get_cookies()}
    c = cookies.get("lw_session", {})
    check(c.get("httpOnly") is True and c.get("sameSite") == "Strict" and
          c.get("expiry", 0) > time.time() + 3600, "session cookie: HttpOnly, SameSite=Strict, expiring",
          str(c))
    check(js("return document.cookie.indexOf('lw_session') < 0"),
          "the page's script cannot read the session cookie")

    # ---- live alerts ---------------------------------------------------------
    ROWS = """return Array.from(document.querySelectorAll('#alerts tbody tr')).map(r => ({
        id: r.dataset.streamId, at: Number(r.dataset.receivedAt), live: r.dataset.live === '1',
        rule: r.dataset.rule, sev: r.dataset.severity, hidden: r.hidden,
        cells: Array.from(r.cells).map(c => c.textContent)}));"""
    live = wait_for("live alerts", lambda: [x for x in js(ROWS) if x["live"] and
                                             int(x["id"].split("-")[0]) > signed_in_ms][:5]
                    if len([x for x in js(ROWS) if x["live"] and
                            int(x["id"].split("-")[0]) > signed_in_ms]) >= 5 else None,
                    timeout=40)
    check(bool(live), "alerts raised during the test appear on the page (5 of them)")
    if live:
        lat = [x["at"] - int(x["id"].split("-")[0]) for x in live]
        print("     latency stream entry -> page (ms): %s" % lat)
        check(all(v <= 1000 for v in lat), "each within a second of being raised", str(lat))
        ids = set(rcli("XRANGE", "lw:alerts", str(signed_in_ms), "+").split())
        check(all(x["id"] in ids for x in live), "... and each is an entry of lw:alerts")
        x = live[0]
        ms = x["id"].split("-")[0]
        entry = [e for e in json.loads(http(port, "/v1/alerts?since=%s&limit=1000" % ms)[2])
                 if e["stream_id"] == x["id"]][0]
        check(x["cells"][1] == entry["severity"] and x["cells"][2] == entry["rule_id"] and
              x["cells"][3] == entry["borrower_id"] and
              x["cells"][4] == fen_text(entry["total_outstanding_fen"]) and
              x["cells"][5] == entry["reason"] and len(x["cells"][0]) == 8 and x["cells"][0][2] == ":",
              "a row shows time, severity, rule, borrower, outstanding in yuan and reason",
              "%s vs %s" % (x["cells"], entry))

    # Filters.
    rows = js(ROWS)
    rule = rows[0]["rule"] if rows else ""
    Select(driver.find_element(By.ID, "f-rule")).select_by_value(rule)
    rows = js(ROWS)
    check(rows and all(r["hidden"] == (r["rule"] != rule) for r in rows),
          "rule filter shows only %s" % rule)
    Select(driver.find_element(By.ID, "f-rule")).select_by_value("")
    Select(driver.find_element(By.ID, "f-sev")).select_by_value("CRITICAL")
    rows = js(ROWS)
    check(rows and all(r["hidden"] == (r["sev"] != "CRITICAL") for r in rows),
          "severity filter shows only CRITICAL")
    Select(driver.find_element(By.ID, "f-sev")).select_by_value("")

    # ---- charts --------------------------------------------------------------
    DRAWN = """const c = document.querySelector(arguments[0] + ' canvas');
        if (!c || c.width < 100 || c.height < 50) return 0;
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n;"""
    check(wait_for("chart", lambda: js(DRAWN, "#chart-alerts") > 500, timeout=15),
          "the alerts-per-minute chart renders")
    check(wait_for("chart", lambda: js(DRAWN, "#chart-rate") > 500, timeout=15),
          "the event-rate chart renders")
    stats = wait_for("stats", lambda: (lambda s: s if max(s["events_per_s"] or [0]) > 0 else None)(
        json.loads(http(port, "/v1/dashboard/stats")[2])), timeout=15)
    check(bool(stats) and sum(sum(v) for v in stats["alerts_per_minute"].values()) > 0,
          "chart data: alerts per minute and a non-zero event rate")

    # ---- borrower look-up ----------------------------------------------------
    bid = (live or js(ROWS))[0]["cells"][3] if (live or js(ROWS)) else None
    same = False
    for attempt in range(6):
        st, _, before = http(port, "/v1/borrowers/%s/exposure?purpose=POST_LOAN_MANAGEMENT" % bid)
        box = driver.find_element(By.NAME, "borrower")
        box.clear()
        box.send_keys(bid)
        driver.execute_script("document.getElementById('lookup-result').replaceChildren()")
        driver.find_element(By.CSS_SELECTOR, "#lookup-form button").click()
        shown = wait_for("total", lambda: driver.find_element(By.ID, "lookup-total").text)
        st2, _, after = http(port, "/v1/borrowers/%s/exposure?purpose=POST_LOAN_MANAGEMENT" % bid)
        if st == 200 and before == after:
            want = fen_text(json.loads(before)["total_outstanding_fen"])
            same = shown == want
            print("     look-up %s: page %s, API %s" % (bid, shown, want))
            break
        time.sleep(0.5)  # the feed moved this borrower meanwhile: again
    check(same, "a borrower look-up shows the same total as the API (12,345.67 form)")
    plat = js("""const t = document.querySelector('#lookup-result .grid2 table');
        return t ? Array.from(t.tBodies[0].rows).map(r => r.cells[2].textContent) : [];""")
    tot = sum(int(p.replace(",", "").replace(".", "")) for p in plat)
    check(plat and fen_text(tot) == shown, "its per-platform rows add up to the total",
          "%s vs %s" % (plat, shown))
    hist = js("return document.getElementById('lookup-result').textContent")
    check("Loans (" in hist and "Windows" in hist and "Open alerts (" in hist and
          "Alert history" in hist and "By lender" in hist,
          "look-up shows loans, windows, per lender, open alerts and alert history")

    # Money in the page: integer fen to yuan, exact beyond 2^53 too.
    cases = [0, 5, 99, 100, 123456, 1234567, -1234567, 100000000000, 9007199254740993]
    got = js("""return arguments[0].map(v => window.lwFormatFen(
        window.lwParseJSON('{"x_fen":' + v + '}').x_fen));""", [str(v) for v in cases])
    check(got == [fen_text(v) for v in cases], "fen -> yuan formatting is exact (BigInt)",
          "%s vs %s" % (got, [fen_text(v) for v in cases]))

    # ---- layout, screenshots -------------------------------------------------
    BOX = "const r = document.getElementById(arguments[0]).getBoundingClientRect(); return [r.left, r.top, r.width];"
    a, c = js(BOX, "alerts-panel"), js(BOX, "charts-panel")
    check(c[0] > a[0] + a[2] - 1 and abs(c[1] - a[1]) < 2, "1400x1000: alerts and charts side by side")
    check(js("return document.documentElement.scrollWidth <= window.innerWidth"),
          "1400x1000: no horizontal scrolling")
    driver.execute_script("window.scrollTo(0, 0)")
    shot = os.path.join(OUT, "dashboard.png")
    driver.save_screenshot(shot)
    print("     screenshot: %s" % shot)
    driver.set_window_size(420, 900)
    time.sleep(0.5)
    a, c = js(BOX, "alerts-panel"), js(BOX, "charts-panel")
    check(abs(a[0] - c[0]) < 2 and c[1] > a[1], "narrow (420): one column")
    WIDE = """return Array.from(document.querySelectorAll('body *')).filter(e =>
        e.getBoundingClientRect().right > window.innerWidth + 1 && e.offsetParent !== null)
        .slice(0, 5).map(e => e.tagName + '#' + e.id + '.' + e.className);"""
    check(js("return document.documentElement.scrollWidth <= window.innerWidth"),
          "narrow (420): no horizontal scrolling",
          str(js("return [document.documentElement.scrollWidth, window.innerWidth]")) + str(js(WIDE)))
    driver.save_screenshot(os.path.join(OUT, "dashboard-narrow.png"))
    driver.set_window_size(1400, 1000)

    # ---- console and network -------------------------------------------------
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    check(not severe, "no console errors after sign-in", str(severe[:3]))
    # Every request the browser sent (performance log), the page's own
    # (documentURL under BASE, plus its resource timing) all to BASE; and no
    # request of any document to the network beyond 127.0.0.1 (Chromium's own
    # start page only loads chrome:// resources before driver.get).
    urls, anywhere = [], []
    for e in driver.get_log("performance"):
        m = json.loads(e["message"])["message"]
        if m.get("method") == "Network.requestWillBeSent":
            u = m["params"]["request"]["url"]
            anywhere.append(u)
            if m["params"].get("documentURL", "").startswith(BASE + "/"):
                urls.append(u)
    urls += js("return performance.getEntriesByType('resource').map(e => e.name)")
    outside = [u for u in urls if not u.startswith(BASE + "/")]
    check(urls and not outside, "the page requested nothing outside 127.0.0.1 (%d requests)" % len(urls),
          str(outside[:5]))
    net = [u for u in anywhere if u.split(":")[0] in ("http", "https", "ws", "wss") and
           not u.startswith("http://127.0.0.1:")]
    check(not net, "the browser sent nothing to the network beyond 127.0.0.1 (%d requests seen)"
          % len(anywhere), str(net[:5]))
    check(not any(TOKEN in u for u in urls), "the token is in no URL")
    check(any(u.endswith("/assets/uPlot.iife.min.js") for u in urls),
          "uPlot came from loanwire-query itself")

    # ---- sign out --------------------------------------------------------------
    old = "lw_session=%s" % cookies.get("lw_session", {}).get("value", "")
    driver.find_element(By.ID, "signout").click()
    check(wait_for("signed out", lambda: driver.find_element(By.NAME, "token").is_displayed()),
          "sign out shows the sign-in form")
    st, _, body = http(port, "/v1/dashboard/stats", token=None, headers={"Cookie": old})
    check(st == 401, "the old session cookie no longer authorises")

    # ---- a stop with a stream waiting (suspended) ------------------------------
    sk = socket.create_connection(("127.0.0.1", port), timeout=10)
    sk.sendall(("GET /v1/alerts/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Authorization: Bearer %s\r\n\r\n" % TOKEN).encode())
    head = sk.recv(4096).decode(errors="replace")
    check(head.startswith("HTTP/1.1 200") and "text/event-stream" in head,
          "a client with a token opens the alert stream", head[:80])
    gen.send_signal(signal.SIGINT)  # no more alerts: the stream stays suspended
    gen.wait(timeout=30)
    time.sleep(1.5)
    t = time.time()
    query.send_signal(signal.SIGTERM)
    try:
        rc = query.wait(timeout=15)
    except subprocess.TimeoutExpired:
        rc = None
    check(rc == 0, "SIGTERM with a stream open: loanwire-query exits 0 (%.1f s)" % (time.time() - t),
          str(rc))
    try:
        while sk.recv(4096):
            pass
        eof = True
    except OSError:
        eof = True
    sk.close()
    check(eof, "... and the stream is closed")
finally:
    if driver:
        try:
            driver.quit()
        except Exception:  # noqa: BLE001
            pass
    stop_all()

took = time.time() - T0
print("took %.1f s" % took)
if failures:
    print("FAILED: %d check(s): %s" % (len(failures), "; ".join(failures)), file=sys.stderr)
    print("logs: %s" % OUT, file=sys.stderr)
    sys.exit(1)
print("all dashboard checks passed")
