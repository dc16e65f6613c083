"""The dashboard (GET / on the admin API) and GET /api/events.

Without a browser: the page, its script and stylesheet are served with a
strict Content-Security-Policy, self-contained and small; the event log
records reloads and errors. In a real browser (headless Chromium through
chromedriver and python3-selenium): the page of a running server shows its
service with counters moving under load; with a token it asks for it once.

RATHOLE_DASHBOARD_SCREENSHOT=PATH makes the browser test write a screenshot
of the dashboard with live traffic there (docs/dashboard.png is made so).
"""
import gzip
import json
import os
import re
import socket
import threading
import time
import urllib.request

import pytest

from conftest import free_port, port_open, wait_port, wait_until
from helpers import Tunnel, client_config, http, server_config, wait_tunnel

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PAGE_LIMIT = 64 << 10		# "a few tens of KiB at most", the three files together


def get(url, token=None, encoding=None):
    """(status, headers, body bytes as sent); HTTP errors are answers too."""
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    if encoding:
        req.add_header("Accept-Encoding", encoding)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def raw_get(base, path, encoding=None):
    """A GET with exactly the Accept-Encoding given (None: no such header;
    urllib would send "identity"): (status, lower-case headers, body)."""
    host, port = base.rsplit("/", 1)[1].split(":")
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    if encoding is not None:
        lines.append(f"Accept-Encoding: {encoding}")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    first, *hl = head.decode("latin-1").split("\r\n")
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in hl)}
    return int(first.split()[1]), hdrs, body


@pytest.fixture
def procs(procs):
    """conftest's, with each config file mode 0600 as an operator keeps it:
    one readable by others has its warning in the event log (and in the
    screenshot of docs/dashboard.png)."""
    write = procs.rathole

    def rathole(config_text, *flags, name="rathole.toml", env=None):
        path = procs.tmp / name
        path.touch()
        path.chmod(0o600)		# write_text keeps the mode of the file
        return write(config_text, *flags, name=name, env=env)
    procs.rathole = rathole
    return procs


def api_tunnel(procs, echo, token=None, name="echo", svc_extra_server=""):
    sapi, capi = free_port(), free_port()
    tok = f'token = "{token}"\n' if token else ""
    t = Tunnel(procs, name=name, local_port=echo.port, svc_extra_server=svc_extra_server,
               server_extra=f'[server.api]\nbind_addr = "127.0.0.1:{sapi}"\n{tok}',
               client_extra=f'[client.api]\nbind_addr = "127.0.0.1:{capi}"\n{tok}').start()
    wait_tunnel(t.service_port)
    return t, f"http://127.0.0.1:{sapi}", f"http://127.0.0.1:{capi}"


# ---- without a browser ----

def test_page_served_with_strict_csp(procs, echo):
    """GET / and its two files: types, CSP, nothing from elsewhere, no inline
    script or style, small; served without the token (the page asks for it),
    while the API itself still wants it."""
    t, surl, curl_ = api_tunnel(procs, echo, token="dash-secret")
    total = 0
    for base in (surl, curl_):
        code, hdr, gz = get(base + "/", encoding="deflate, gzip;q=0.8")
        assert code == 200
        assert hdr["Content-Encoding"] == "gzip" and hdr["Vary"] == "Accept-Encoding"
        sent = len(gz)
        html = gzip.decompress(gz)
        assert hdr["Content-Type"].startswith("text/html")
        csp = hdr["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'none'"
        assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
        assert directives["connect-src"] == "'self'" and directives["frame-ancestors"] == "'none'"
        assert "unsafe" not in csp
        assert hdr["X-Content-Type-Options"] == "nosniff"
        page = html.decode()
        assert '<script src="dashboard.js" defer></script>' in page
        assert '<link rel="stylesheet" href="dashboard.css">' in page
        # every script is an empty element with a src; no style element or attribute
        assert re.findall(r"<script\b[^>]*>(.*?)</script>", page, re.S) == [""]
        assert "<style" not in page and " style=" not in page and "javascript:" not in page
        files = {"/": html}
        for path, ctype in (("/dashboard.js", "text/javascript"), ("/dashboard.css", "text/css")):
            code, hdr, body = get(base + path, encoding="gzip")
            assert code == 200 and hdr["Content-Type"].startswith(ctype)
            assert "script-src 'self'" in hdr["Content-Security-Policy"]
            sent += len(body)
            files[path] = gzip.decompress(body)
        for path, body in files.items():
            # nothing loaded from elsewhere: no absolute URL at all
            assert not re.search(rb"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", body, re.I), path
            assert b"@import" not in body and b"url(" not in body, path
        total = sum(len(b) for b in files.values())
        assert 8 << 10 < total <= PAGE_LIMIT, total
        assert sent < total / 2, (sent, total)	# kept and sent gzip'ed
        # HEAD: the headers alone
        req = urllib.request.Request(base + "/", method="HEAD", headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200 and r.read() == b""
            assert int(r.headers["Content-Length"]) == len(gz)
        # no Accept-Encoding at all: any coding is acceptable (RFC 9110,
        # 12.5.3; curl without --compressed): the page, gzip'ed
        code, hdr, body = raw_get(base, "/")
        assert code == 200 and hdr["content-encoding"] == "gzip", hdr
        assert gzip.decompress(body) == html
        # a client that refuses gzip gets a plain page that points to the
        # API (the dashboard is kept gzip'ed only); its files are a 406
        for enc in ("identity", "gzip;q=0, deflate", "br", ""):
            code, hdr, body = raw_get(base, "/", enc)
            assert code == 200 and "content-encoding" not in hdr, (enc, hdr)
            assert hdr["content-type"].startswith("text/html") and b"dashboard.js" not in body
            assert b"gzip" in body and b'href="api/status"' in body, body
            assert "default-src 'none'" in hdr["content-security-policy"]
            code, hdr, body = raw_get(base, "/dashboard.js", enc)
            assert code == 406 and b"gzip" in body and "content-encoding" not in hdr, enc
        assert get(base + "/", encoding="*")[0] == 200
        # the API is still behind the token
        assert get(base + "/api/status")[0] == 401
        assert get(base + "/api/events")[0] == 401
        assert get(base + "/api/status", token="dash-secret")[0] == 200
        # only GET serves the page
        assert http(base + "/", method="POST", token="dash-secret")[0] in (404, 405)
    code, st = http(surl + "/api/status", token="dash-secret")
    status = json.loads(st)
    assert status["uptime_seconds"] >= 0 and status["services"][0]["visitors_refused"] == 0
    code, st = http(curl_ + "/api/status", token="dash-secret")
    assert json.loads(st)["uptime_seconds"] >= 0


def events_of(url):
    code, body = http(url + "/api/events")
    assert code == 200
    ev = json.loads(body)["events"]
    for e in ev:
        assert set(e) == {"time", "level", "message"} and e["level"] in ("info", "warn", "error")
        assert abs(e["time"] - time.time()) < 3600
    return ev


def test_events_record_reloads_and_errors(procs, echo, tmp_path):
    """GET /api/events: the start, a reload that adds a service (with the
    service named), a rejected reload (an error with the reason), oldest
    first; the tunnel is untouched."""
    api = free_port()
    t = Tunnel(procs, local_port=echo.port,
               server_extra=f'[server.api]\nbind_addr = "127.0.0.1:{api}"\n').start()
    wait_tunnel(t.service_port)
    url = f"http://127.0.0.1:{api}"
    ev = events_of(url)
    assert any(e["level"] == "info" and e["message"].startswith("server started") for e in ev)
    n0 = len(ev)
    cfg = tmp_path / "server.toml"
    extra_port = free_port()
    cfg.write_text(cfg.read_text() + f'\n[server.services.more]\ntoken = "x"\n'
                   f'bind_addr = "127.0.0.1:{extra_port}"\n')
    assert http(url + "/api/reload", method="POST")[0] == 200
    ev = events_of(url)
    new = [e["message"] for e in ev[n0:]]
    assert "reload requested through the api" in new
    assert "service more: added by the reload" in new
    assert "reload: +1 added, -0 removed, ~0 changed, 1 unchanged" in new
    n1 = len(ev)
    cfg.write_text(cfg.read_text() + "\n[server.services.broken]\nbind_addr = 5\n")
    assert http(url + "/api/reload", method="POST")[0] == 409
    ev = events_of(url)
    errors = [e["message"] for e in ev[n1:] if e["level"] == "error"]
    assert any("broken" in m and "bind_addr" in m for m in errors), errors
    assert "reload rejected: the running configuration stays in force" in errors
    times = [e["time"] for e in ev]
    assert times == sorted(times)
    wait_tunnel(t.service_port)


# ---- in a real browser ----

@pytest.fixture
def browser(procs, tmp_path):
    """A headless Chromium driven through chromedriver (started by procs,
    stopped by its PID); skipped with the reason where it cannot start."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
    except ImportError:
        pytest.skip("python3-selenium is not installed (apt-get install python3-selenium; "
                    ".ci/run installs it)")
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.skip(f"{path} is missing (apt-get install {pkg}; .ci/run installs it)")
    port = free_port()
    drv = procs.start([CHROMEDRIVER, f"--port={port}", "--allowed-ips=127.0.0.1"])
    try:
        wait_port(port, timeout=20)
    except AssertionError:
        pytest.skip(f"chromedriver did not start: {drv.stderr[-500:]}")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1280,1000", "--no-first-run", "--disable-extensions",
              "--disable-background-networking", "--disable-sync",
              f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        d = webdriver.Remote(command_executor=f"http://127.0.0.1:{port}", options=opts)
    except WebDriverException as e:
        pytest.skip(f"Chromium cannot be started: {e.msg}")
    d.set_page_load_timeout(30)
    d.set_script_timeout(10)
    yield d
    try:
        # the page must not have broken its own CSP or thrown
        logs = d.get_log("browser")
        # (an API answer such as 401 is logged as a failed resource: not a fault)
        bad = [l["message"] for l in logs
               if l["level"] == "SEVERE" and "Failed to load resource" not in l["message"]]
        assert not bad, bad
    finally:
        d.quit()


def cell(d, service, cls):
    """The raw value (data-value) of a service's cell, or None."""
    return d.execute_script(
        "const r = document.querySelector(`#services tr[data-service=\"${arguments[0]}\"]`);"
        "const c = r && r.querySelector('td.' + arguments[1]);"
        "return c ? c.dataset.value || c.textContent : null;", service, cls)


def text_of(d, css):
    return d.execute_script("const e = document.querySelector(arguments[0]);"
                            "return e ? e.textContent : null;", css)


class Load:
    """Echo traffic through a port until stopped (bounded: 90 s at most)."""

    def __init__(self, port, chunk=256 << 10):
        self.port, self.chunk = port, chunk
        self.stop_ev = threading.Event()
        self.moved = 0
        self.err = None
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        data = os.urandom(self.chunk)
        deadline = time.monotonic() + 90
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                while not self.stop_ev.is_set() and time.monotonic() < deadline:
                    s.sendall(data)
                    got = 0
                    while got < len(data):
                        b = s.recv(len(data) - got)
                        if not b:
                            raise OSError("the echo closed")
                        got += len(b)
                    self.moved += len(data)
                    time.sleep(0.02)
        except OSError as e:
            self.err = e

    def stop(self):
        self.stop_ev.set()
        self.t.join(15)
        assert self.err is None, self.err


GRAPH_PIXELS = """
    // the graph's pixels of the "in" colour (its area) and of the "out"
    // colour (its line): [in, out, in within the newest tenth of the width]
    const c = document.getElementById('graph'), g = c.getContext('2d');
    const css = getComputedStyle(document.documentElement);
    const rgb = (v) => { const h = css.getPropertyValue(v).trim();
                         return [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16)); };
    const cin = rgb('--in'), cout = rgb('--out');
    const px = g.getImageData(0, 0, c.width, c.height).data;
    const near = (i, k) => Math.abs(px[i] - k[0]) + Math.abs(px[i + 1] - k[1]) +
                           Math.abs(px[i + 2] - k[2]) < 60;
    let nin = 0, nout = 0, recent = 0;
    for (let i = 0; i < px.length; i += 4) {
      if (!px[i + 3]) continue;
      if (near(i, cin)) { nin++; if ((i / 4) % c.width > c.width * 0.9) recent++; }
      else if (near(i, cout)) nout++;
    }
    return [nin, nout, recent];"""


def test_dashboard_in_browser_shows_live_traffic(procs, echo, browser):
    """The server's dashboard (token set: asked once, kept for the tab) shows
    role, version, uptime, transport; the service up, its bytes moving, a
    rate above zero and the graph drawn while a load runs; a visitor refused
    (max_connections) counted; the event log, without a warning. The
    client's page shows its side as established, and its form speaks of
    local_addr."""
    d = browser
    t, surl, curl_ = api_tunnel(procs, echo, token="tab-secret",
                                svc_extra_server="max_connections = 1")
    d.get(surl + "/")
    wait_until(lambda: d.execute_script("return !document.getElementById('login').hidden"),
               15, what="the token form")
    d.find_element("id", "token").send_keys("tab-secret")
    d.find_element("css selector", "#login-form button[type=submit]").click()
    wait_until(lambda: cell(d, "echo", "state") == "up", 15, what="the echo service, up")
    assert d.execute_script("return sessionStorage.getItem('rathole.token')") == "tab-secret"
    assert text_of(d, "#role") == "server"
    assert text_of(d, "#version") == json.loads(http(surl + "/api/status", token="tab-secret")[1])["version"]
    assert text_of(d, "#transport") == "tcp"
    assert re.fullmatch(r"(\d+[dhm] )*\d+s", text_of(d, "#uptime"))
    assert text_of(d, "#link") == "live"
    # one client, no balance: no replica line under the service
    assert d.execute_script("return document.querySelectorAll('#services tr.sub').length") == 0
    wait_until(lambda: "server started" in (text_of(d, "#events") or ""), 10, what="the event log")
    # the config file is 0600: no warning about its mode
    assert "readable by" not in text_of(d, "#events")
    # the graph without traffic: its lines along the bottom, no area
    idle = d.execute_script(GRAPH_PIXELS)

    def status():
        return json.loads(http(surl + "/api/status", token="tab-secret")[1])["services"][0]
    # wait_tunnel's visitor gone: the load is the one connection allowed
    wait_until(lambda: status()["connections_active"] == 0, 10, what="no connection in flight")
    load = Load(t.service_port)
    try:
        wait_until(lambda: int(cell(d, "echo", "in") or 0) > 0, 20, what="bytes in to show")
        first = int(cell(d, "echo", "in"))
        wait_until(lambda: int(cell(d, "echo", "in")) > first, 20, what="bytes in to grow")
        wait_until(lambda: int(cell(d, "echo", "out")) > 0, 10, what="bytes out to show")
        wait_until(lambda: int(cell(d, "echo", "rate-in")) > 0, 20, what="a rate above zero")
        wait_until(lambda: int(cell(d, "echo", "active")) == 1, 10, what="one connection in flight")
        # the graph: an "in" area reaching the present, an "out" line
        def drawn():
            nin, nout, recent = d.execute_script(GRAPH_PIXELS)
            return recent > idle[2] + 500 and nout > idle[1] + 50
        wait_until(drawn, 20, what="the graph's area reaching the present, and its line")
        assert text_of(d, "#rates").startswith("in ") and "out " in text_of(d, "#rates")
        # a second visitor is over max_connections: refused, and counted
        assert int(cell(d, "echo", "refused")) == 0
        with socket.create_connection(("127.0.0.1", t.service_port), timeout=5) as v:
            v.settimeout(10)
            try:
                assert v.recv(1) == b""
            except ConnectionResetError:
                pass
        wait_until(lambda: cell(d, "echo", "refused") == "1", 10, what="the refused visitor")
        assert status()["visitors_refused"] == 1
        assert d.execute_script("return [...document.querySelectorAll('#services th')]"
                                ".some((th) => th.textContent === 'refused')")
        shot = os.environ.get("RATHOLE_DASHBOARD_SCREENSHOT")
        if shot:
            # a minute of graph makes a better picture than a few seconds
            time.sleep(float(os.environ.get("RATHOLE_DASHBOARD_SCREENSHOT_WAIT", "0")))
            d.save_screenshot(shot)
    finally:
        load.stop()
    assert load.moved > 0
    served = int(cell(d, "echo", "served"))
    assert served >= 2	# wait_tunnel's echo and the load

    # the token is kept for the tab: a reload of the page does not ask again
    d.refresh()
    wait_until(lambda: cell(d, "echo", "state") == "up", 15, what="the page after a refresh")
    assert d.execute_script("return document.getElementById('login').hidden")

    # the client's dashboard: its side of the service
    d.get(curl_ + "/")
    wait_until(lambda: d.execute_script("return !document.getElementById('login').hidden"),
               15, what="the client page's token form")
    d.find_element("id", "token").send_keys("tab-secret")
    d.find_element("css selector", "#login-form button[type=submit]").click()
    wait_until(lambda: cell(d, "echo", "state") == "established", 15, what="the client's service")
    assert text_of(d, "#role") == "client"
    assert int(cell(d, "echo", "in")) >= load.moved
    # its form asks for local_addr and shows the client's own messages there
    d.find_element("id", "add").click()
    assert text_of(d, "#f-addr-label") == "local_addr"
    fill_form(d, {"f-name": "more", "f-addr": f"127.0.0.1:{echo.port}-{echo.port + 1}"})
    wait_until(lambda: text_of(d, '.err[data-for="local_addr"]'), 10, what="the field's error")
    assert "port range" in text_of(d, '.err[data-for="local_addr"]')
    fill_form(d, {"f-addr": f"127.0.0.1:{echo.port}", "f-token": "more-token"})
    wait_until(lambda: cell(d, "more", "source") == "api", 15, what="the client's new service")
    svc = services_of(curl_, "tab-secret")["more"]
    assert svc["config"]["local_addr"] == f"127.0.0.1:{echo.port}" and svc["source"] == "api"
    click(d, "more", "delete")
    click(d, "more", "delete")
    wait_until(lambda: cell(d, "more", "source") is None, 15, what="the row to go")
    assert "more" not in services_of(curl_, "tab-secret")



def test_dashboard_shows_upstreams(procs, echo, browser):
    """A client with two servers (remote_addr as an array): its page names
    both, and lists each server under the service with its own channel and
    counters (a visitor through each server: each line served one)."""
    d = browser
    sports, vports, api = [free_port(), free_port()], [free_port(), free_port()], free_port()
    for i in range(2):
        s = procs.rathole(server_config(sports[i], {"web": dict(bind_port=vports[i], token="t")}),
                          name=f"server{i}.toml")
        s.wait_log(f"listening on 127.0.0.1:{sports[i]}", timeout=30)
    remotes = [f"127.0.0.1:{p}" for p in sports]
    text = client_config(sports[0], {"web": dict(local_port=echo.port, token="t")},
                         extra=f'[client.api]\nbind_addr = "127.0.0.1:{api}"\n')
    text = text.replace(f'remote_addr = "{remotes[0]}"', "remote_addr = " + json.dumps(remotes))
    procs.rathole(text, name="client.toml")
    for p in vports:
        wait_tunnel(p)
    d.get(f"http://127.0.0.1:{api}/")
    wait_until(lambda: d.execute_script(
        "return document.querySelectorAll('#services tr[data-sub=upstream]').length") == 2, 15,
        what="two upstream rows")
    assert text_of(d, "#addr-label") == "servers" and text_of(d, "#addr") == ", ".join(remotes)
    rows = d.execute_script(
        "return [...document.querySelectorAll('#services tr[data-sub=upstream]')].map((r) =>"
        " [r.querySelector('td.label').textContent, r.querySelector('td.state').textContent,"
        "  Number(r.querySelector('td.served').dataset.value)])")
    assert sorted(r[0] for r in rows) == sorted("upstream " + a for a in remotes)
    assert all(r[1] == "established" for r in rows), rows
    wait_until(lambda: all(r >= 1 for r in d.execute_script(
        "return [...document.querySelectorAll('#services tr[data-sub=upstream] td.served')]"
        ".map((e) => Number(e.dataset.value))")), 10, what="a visitor counted on each server")
    assert cell(d, "web", "state") == "established"


def put_json(url, body, token=None):
    """A PUT of the services API: (status, reply)."""
    req = urllib.request.Request(url, method="PUT", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def fill_form(d, fields):
    """Types into the open service form: {element id: text}; selects by value."""
    for fid, value in fields.items():
        e = d.find_element("id", fid)
        if e.tag_name == "select":
            d.execute_script("arguments[0].value = arguments[1];", e, value)
        else:
            e.clear()
            e.send_keys(value)
    d.find_element("id", "save").click()


def click(d, service, cls):
    d.find_element("css selector", f'#services tr[data-service="{service}"] button.{cls}').click()


def services_of(url, token=None):
    code, body = http(url + "/api/services", token=token)
    assert code == 200, body
    return {s["name"]: s for s in json.loads(body)["services"]}


def test_dashboard_form_adds_edits_deletes_a_service(procs, echo, browser):
    """Through the server's form: a bad bind_addr gives the server's message
    next to the field and changes nothing; a good one creates the service
    (source "api"), which comes up when the client has it too and forwards;
    an edit (If-Match with the ETag) restarts it and it forwards again; a
    stale form gets the 412 explained; the file's service is read-only; a
    delete (two clicks) closes its port. Reload through its button."""
    d = browser
    t, surl, curl_ = api_tunnel(procs, echo, token="form-secret")
    code, _ = http(surl + "/api/services", token="form-secret")
    assert code == 200, "GET /api/services is missing: the services API is not in this build"
    d.get(surl + "/")
    wait_until(lambda: d.execute_script("return !document.getElementById('login').hidden"),
               15, what="the token form")
    d.find_element("id", "token").send_keys("form-secret")
    d.find_element("css selector", "#login-form button[type=submit]").click()
    wait_until(lambda: cell(d, "echo", "source") == "file", 15, what="the file's service")

    # the file's service: shown, not editable
    click(d, "echo", "view")
    assert d.execute_script("return document.getElementById('save').hidden")
    assert d.execute_script("return document.getElementById('f-addr').disabled")
    assert d.find_element("id", "f-addr").get_attribute("value") == f"127.0.0.1:{t.service_port}"
    d.find_element("id", "cancel").click()

    # a bad bind_addr: the server's own message next to the field
    web = free_port()
    d.find_element("id", "add").click()
    fill_form(d, {"f-name": "web", "f-addr": "not an address", "f-token": "web-token"})
    wait_until(lambda: text_of(d, '.err[data-for="bind_addr"]'), 10, what="the field's error")
    assert "bind_addr" in text_of(d, '.err[data-for="bind_addr"]') or \
        "address" in text_of(d, '.err[data-for="bind_addr"]')
    assert "web" not in services_of(surl, "form-secret")
    # an unknown key typed in the JSON box: its message under the box
    fill_form(d, {"f-addr": f"127.0.0.1:{web}", "f-more": '{"max_conections": 3}'})
    wait_until(lambda: "max_conections" in (text_of(d, '.err[data-for="*more"]') or ""), 10,
               what="the unknown key's error")
    assert "web" not in services_of(surl, "form-secret")
    # good: created, from the API
    d.find_element("id", "f-more").clear()
    fill_form(d, {"f-more": '{"max_connections": 5}'})
    wait_until(lambda: cell(d, "web", "source") == "api", 15, what="the new service's row")
    assert d.execute_script("return document.getElementById('editor').hidden")
    svc = services_of(surl, "form-secret")["web"]
    assert svc["config"]["bind_addr"] == f"127.0.0.1:{web}"
    assert svc["config"]["max_connections"] == 5 and svc["source"] == "api"
    wait_until(lambda: "api: service web created" in (text_of(d, "#events") or ""), 10,
               what="the creation in the event log")
    # the client's side (through its API), then the tunnel on the new port
    code, reply = put_json(curl_ + "/api/services/web",
                           {"local_addr": f"127.0.0.1:{echo.port}", "token": "web-token"},
                           token="form-secret")
    assert code in (200, 201), reply
    wait_until(lambda: cell(d, "web", "state") == "up", 20, what="the new service, up")
    wait_tunnel(web)

    # edit: the token stays (sent back redacted), nodelay changes; the
    # service restarts with it and forwards again
    click(d, "web", "edit")
    assert d.find_element("id", "f-name").get_attribute("disabled") is not None
    fill_form(d, {"f-nodelay": "false"})
    wait_until(lambda: services_of(surl, "form-secret")["web"]["config"].get("nodelay") is False,
               10, what="the edit to apply")
    wait_tunnel(web)

    # a stale form: someone else changed the service meanwhile
    wait_until(lambda: d.execute_script("return document.getElementById('editor').hidden"), 10,
               what="the form to close")
    wait_until(lambda: d.find_elements("css selector", '#services tr[data-service="web"] button.edit'),
               10, what="the edit button")
    click(d, "web", "edit")
    code, reply = put_json(surl + "/api/services/web",
                           {"bind_addr": f"127.0.0.1:{web}", "token": "(redacted)",
                            "max_connections": 7}, token="form-secret")
    assert code == 200, reply
    fill_form(d, {"f-nodelay": "true"})
    wait_until(lambda: "changed meanwhile" in (text_of(d, "#form-error") or ""), 10,
               what="the 412 explained")
    assert services_of(surl, "form-secret")["web"]["config"]["max_connections"] == 7
    d.find_element("id", "cancel").click()

    # reload through the button: the event log says so
    d.find_element("id", "reload").click()
    wait_until(lambda: "reload requested through the api" in (text_of(d, "#events") or ""), 10,
               what="the reload in the event log")
    wait_until(lambda: "reloaded" in (text_of(d, "#notice") or ""), 10, what="the notice")
    wait_tunnel(web)

    # delete: two clicks
    click(d, "web", "delete")
    assert "web" in services_of(surl, "form-secret")
    click(d, "web", "delete")
    wait_until(lambda: cell(d, "web", "source") is None, 15, what="the row to go")
    assert "web" not in services_of(surl, "form-secret")
    wait_until(lambda: not port_open(web), 10, what="the port to close")
    wait_tunnel(t.service_port)	# the file's service never moved


def test_dashboard_shows_replicas(procs, echo, browser):
    """With balance, two clients serve one service: the server's page lists
    each replica under its service, named by its address, with its own
    counters (round robin: both carried visitors)."""
    d = browser
    sport, vport, api = free_port(), free_port(), free_port()
    srv = procs.rathole(server_config(
        sport, {"web": dict(bind_port=vport, token="t", extra='balance = "round_robin"\n')},
        extra=f'[server.api]\nbind_addr = "127.0.0.1:{api}"\n'), name="server.toml")
    srv.wait_log(f"listening on 127.0.0.1:{sport}")
    for i in range(2):
        procs.rathole(client_config(sport, {"web": dict(local_port=echo.port, token="t")}),
                      name=f"client{i}.toml")
    url = f"http://127.0.0.1:{api}"

    def replicas():
        return json.loads(http(url + "/api/status")[1])["services"][0].get("replicas", [])
    wait_until(lambda: len(replicas()) == 2, 20, what="two replicas")
    for i in range(4):
        wait_tunnel(vport)
    wait_until(lambda: all(r["connections_total"] >= 1 for r in replicas()), 10,
               what="both replicas to carry a visitor")
    d.get(url + "/")
    wait_until(lambda: d.execute_script(
        "return document.querySelectorAll('#services tr[data-sub=replica]').length") == 2, 15,
        what="two replica rows")
    labels = d.execute_script(
        "return [...document.querySelectorAll('#services tr[data-sub=replica] td.label')]"
        ".map((e) => e.textContent)")
    assert sorted(labels) == sorted("replica " + r["peer"] for r in replicas())
    served = d.execute_script(
        "return [...document.querySelectorAll('#services tr[data-sub=replica] td.served')]"
        ".map((e) => Number(e.dataset.value))")
    assert len(served) == 2 and all(n >= 1 for n in served), served


def test_dashboard_shows_hostnames(procs, browser):
    """A server service reached by name (virtual hosts, docs/vhost.md): its
    address cell lists its hostnames, after its own bind_addr if it has one."""
    d = browser
    sport, hport, own, api = free_port(), free_port(), free_port(), free_port()
    s = procs.rathole(f'[server]\nbind_addr = "127.0.0.1:{sport}"\ndefault_token = "t"\n'
                      f'http_bind_addr = "127.0.0.1:{hport}"\n'
                      f'[server.api]\nbind_addr = "127.0.0.1:{api}"\n'
                      '[server.services.named]\nhostnames = ["a.example.com", "*.b.example.com"]\n'
                      f'[server.services.both]\nhostnames = ["c.example.com"]\n'
                      f'bind_addr = "127.0.0.1:{own}"\n', name="server.toml")
    s.wait_log(f"listening on 127.0.0.1:{hport} for virtual hosts")
    d.get(f"http://127.0.0.1:{api}/")
    addr = ("const r = document.querySelector(`#services tr[data-service=\"${arguments[0]}\"]`);"
            "return r ? r.querySelector('td.addr').textContent : null;")
    wait_until(lambda: d.execute_script(addr, "named") == "a.example.com, *.b.example.com", 15,
               what="the hostnames in the address cell")
    assert d.execute_script(addr, "both") == f"127.0.0.1:{own}, c.example.com"
