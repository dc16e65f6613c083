"""The admin API: services created, read, replaced and deleted over HTTP on
a running server and client (issue 25), kept in services_file; and the API as
an operator's interface that web pages cannot reach: Host and Origin checks
(issue 23, part 5)."""
import json
import signal
import socket
import threading
import tomllib

from conftest import free_port, run_rathole, wait_port, wait_port_closed, wait_until
from helpers import client_config, echo_on, held, server_config, tunnel_works, wait_tunnel


def request(port, method, path, headers=(), body=b"", host="127.0.0.1"):
    """One raw HTTP/1.1 request with exactly the headers given (a browser's
    Host and Origin can be anything): (status, headers dict, body bytes)."""
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers]
    if body or method in ("PUT", "POST"):
        lines.append(f"Content-Length: {len(body)}")
    raw = ("\r\n".join(lines) + "\r\nConnection: close\r\n\r\n").encode() + body
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(raw)
        data = b""
        while len(data) < 1 << 20:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    first, *hl = head.decode("latin-1").split("\r\n")
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in hl)}
    return int(first.split()[1]), hdrs, rest


def api_server(procs, extra="", token=None):
    api = free_port()
    text = server_config(free_port(), {"echo": dict(bind_port=free_port(), token="t")},
                         extra=f'[server.api]\nbind_addr = "127.0.0.1:{api}"\n'
                               + (f'token = "{token}"\n' if token else "") + extra)
    p = procs.rathole(text, name="server.toml")
    wait_port(api)
    return p, api


def test_foreign_host_refused(procs):
    """DNS rebinding: a page at evil.example whose name now points at
    127.0.0.1 reaches the API with Host: evil.example; refused. IP literals,
    localhost and the names in hosts are served."""
    _, api = api_server(procs, extra='hosts = ["admin.example.org"]\n')
    for host in ("evil.example", f"evil.example:{api}", "127.0.0.1.evil.example",
                 "localhost.evil.example", "admin.example.org.evil", "[::1", "a:b:c"):
        code, _, body = request(api, "GET", "/api/status", [("Host", host)])
        assert code == 403, (host, code, body)
        assert b"Host" in body
    for host in (f"127.0.0.1:{api}", "127.0.0.1", f"localhost:{api}", "LOCALHOST",
                 f"[::1]:{api}", "admin.example.org", f"Admin.Example.Org:{api}", "localhost."):
        code, _, body = request(api, "GET", "/api/status", [("Host", host)])
        assert code == 200, (host, code, body)
        assert json.loads(body)["role"] == "server"
    code, _, _ = request(api, "GET", "/metrics", [("Host", "evil.example")])
    assert code == 403
    # a reload asked through a foreign name does not happen
    code, _, _ = request(api, "POST", "/api/reload", [("Host", "evil.example")])
    assert code == 403


def test_cross_site_post_refused(procs):
    """Without a token a page elsewhere could POST /api/reload with a form or
    a simple fetch; a foreign Origin or a form content type is refused, and
    the reload does not happen. The same requests from the API's own origin,
    or without Origin (curl), are served."""
    p, api = api_server(procs)
    host = f"127.0.0.1:{api}"
    for headers in ([("Origin", "http://evil.example")],
                    [("Origin", "null")],
                    [("Origin", f"http://127.0.0.1:{api + 1}")],
                    [("Content-Type", "application/x-www-form-urlencoded")],
                    [("Content-Type", "text/plain;charset=UTF-8")],
                    [("Content-Type", "Multipart/Form-Data; boundary=x")]):
        code, _, body = request(api, "POST", "/api/reload", [("Host", host)] + headers)
        assert code == 403, (headers, code, body)
    assert "reload requested through the api" not in p.stderr
    code, _, body = request(api, "POST", "/api/reload",
                            [("Host", host), ("Origin", f"http://{host}")])
    assert code == 200 and json.loads(body)["reloaded"] is True, body
    code, _, body = request(api, "POST", "/api/reload",
                            [("Host", host), ("Content-Type", "application/json")])
    assert code == 200, body
    # reading is allowed from anywhere that passed the Host check (no CORS
    # header is sent, so a foreign page cannot read the answer anyway)
    code, hdrs, _ = request(api, "GET", "/api/status", [("Host", host), ("Origin", "http://x")])
    assert code == 200 and "access-control-allow-origin" not in hdrs


def test_token_still_needed_and_checked(procs):
    _, api = api_server(procs, token="s3cret-token")
    host = [("Host", f"127.0.0.1:{api}")]
    for auth in (None, "Bearer s3cret-toke", "Bearer s3cret-token2", "Bearer ", "Basic x",
                 "bearer S3CRET-TOKEN"):
        code, _, _ = request(api, "GET", "/api/status",
                             host + ([("Authorization", auth)] if auth else []))
        assert code == 401, auth
    code, _, _ = request(api, "GET", "/api/status", host + [("Authorization", "bearer s3cret-token")])
    assert code == 200


def test_hosts_key_checked(tmp_path):
    base = server_config(2333, {"echo": dict(bind_port=5202, token="t")})
    for bad, why in (('["http://admin.example.org"]', "hosts[0]"), ('["a:80"]', "hosts[0]"),
                     ('"admin.example.org"', "server.api.hosts"), ('[1]', "hosts[0]")):
        r = run_rathole(["--check"], base + f'[server.api]\nhosts = {bad}\n', tmp_path=tmp_path)
        assert r.returncode != 0 and why in r.stderr, (bad, r.stderr)
    r = run_rathole(["--check"], base + '[server.api]\nhosts = ["admin.example.org", "x-1.lan"]\n',
                    tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr



# ---- services over HTTP (issue 25) ----

def call(port, method, path, body=None, headers=(), token=None):
    """(status, headers, parsed JSON or None) of one API request."""
    hs = [("Host", f"127.0.0.1:{port}")] + list(headers)
    if token:
        hs.append(("Authorization", f"Bearer {token}"))
    raw = b""
    if body is not None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        hs.append(("Content-Type", "application/json"))
    code, hdrs, data = request(port, method, path, hs, raw)
    try:
        doc = json.loads(data) if data else None
    except ValueError:
        doc = None
    return code, hdrs, doc


class Pair:
    """A server and a client with their APIs, one file service "echo"."""

    def __init__(self, procs, echo, tmp_path, persist=True, token=None):
        self.procs, self.echo = procs, echo
        self.port = free_port()
        self.sapi, self.capi = free_port(), free_port()
        self.echo_port = free_port()
        self.sfile = tmp_path / "server-services.toml"
        self.cfile = tmp_path / "client-services.toml"
        tok = f'token = "{token}"\n' if token else ""
        self.server_text = server_config(
            self.port, {"echo": dict(bind_port=self.echo_port, token="t")},
            extra=f'[server.api]\nbind_addr = "127.0.0.1:{self.sapi}"\n' + tok
                  + (f'services_file = "{self.sfile}"\n' if persist else ""))
        self.client_text = client_config(
            self.port, {"echo": dict(local_port=echo.port, token="t")},
            extra=f'[client.api]\nbind_addr = "127.0.0.1:{self.capi}"\n' + tok
                  + (f'services_file = "{self.cfile}"\n' if persist else ""))

    def start_server(self):
        self.server = self.procs.rathole(self.server_text, name="server.toml")
        wait_port(self.sapi)
        return self.server

    def start_client(self):
        self.client = self.procs.rathole(self.client_text, name="client.toml")
        wait_port(self.capi)
        return self.client

    def start(self):
        self.start_server()
        self.start_client()
        wait_tunnel(self.echo_port)
        return self


def test_services_create_read_replace_delete(procs, echo, tmp_path):
    """A service added on both sides through the APIs forwards; replaced (a
    new port), it forwards there and not on the old port; deleted, its port
    closes. The file's service keeps its connection through all of it."""
    p = Pair(procs, echo, tmp_path).start()
    c = held(p.echo_port, b"held")
    web, web2 = free_port(), free_port()
    code, hdrs, doc = call(p.sapi, "PUT", "/api/services/web",
                           {"bind_addr": f"127.0.0.1:{web}", "token": "wt", "allow": ["127.0.0.0/8"]})
    assert code == 201 and doc == {"name": "web", "persisted": True}, doc
    assert hdrs["etag"].startswith('"')
    code, _, doc = call(p.capi, "PUT", "/api/services/web",
                        {"local_addr": f"127.0.0.1:{p.echo.port}", "token": "wt", "nodelay": False})
    assert code == 201, doc
    wait_tunnel(web)
    assert echo_on(c, b"after create") == b"after create"
    code, _, doc = call(p.sapi, "GET", "/api/events")
    assert "api: service web created" in [e["message"] for e in doc["events"]]
    # read
    code, _, doc = call(p.sapi, "GET", "/api/services")
    assert code == 200 and doc["persisted"] is True
    by = {s["name"]: s for s in doc["services"]}
    assert by["echo"]["source"] == "file" and by["web"]["source"] == "api"
    want = {"type": "tcp", "token": "(redacted)", "bind_addr": f"127.0.0.1:{web}",
            "nodelay": True, "proxy_protocol": "none", "allow": ["127.0.0.0/8"],
            "max_connections": 0}
    assert by["web"]["config"].items() >= want.items(), by["web"]["config"]
    assert None not in by["web"]["config"].values()
    assert "balance" not in by["web"]["config"] and "vhost" not in by["web"]["config"]
    code, hdrs, doc = call(p.sapi, "GET", "/api/services/web")
    assert code == 200 and doc["name"] == "web" and doc["source"] == "api"
    assert doc["persisted"] is True and doc["config"]["token"] == "(redacted)"
    assert hdrs["etag"] == by["web"]["etag"]
    code, _, doc = call(p.capi, "GET", "/api/services/web")
    assert doc["config"]["local_addr"] == f"127.0.0.1:{p.echo.port}"
    assert doc["config"]["nodelay"] is False and doc["config"]["retry_interval"] == 1
    assert "wt" not in json.dumps(doc)
    # replace: a new port, the token sent back redacted stays the same
    etag = hdrs["etag"]
    code, hdrs, doc = call(p.sapi, "PUT", "/api/services/web",
                           {"bind_addr": f"127.0.0.1:{web2}", "token": "(redacted)"},
                           headers=[("If-Match", etag)])
    assert code == 200 and doc == {"name": "web", "persisted": True}, doc
    assert hdrs["etag"] != etag
    wait_tunnel(web2)
    wait_port_closed(web)
    assert echo_on(c, b"after replace") == b"after replace"
    # the client's side replaced: a local_addr where nothing listens, then
    # the echo again; each change is in force at once
    code, hdrs, _ = call(p.capi, "GET", "/api/services/web")
    code, hdrs, doc = call(p.capi, "PUT", "/api/services/web",
                           {"local_addr": f"127.0.0.1:{free_port()}", "token": "(redacted)"},
                           headers=[("If-Match", hdrs["etag"])])
    assert code == 200 and doc == {"name": "web", "persisted": True}, doc
    wait_until(lambda: not tunnel_works(web2), 10, what="the client to forward elsewhere")
    code, _, doc = call(p.capi, "PUT", "/api/services/web",
                        {"local_addr": f"127.0.0.1:{p.echo.port}", "token": "(redacted)"},
                        headers=[("If-Match", hdrs["etag"])])
    assert code == 200, doc
    wait_tunnel(web2)
    assert echo_on(c, b"after the client's") == b"after the client's"
    # delete on both sides
    code, _, doc = call(p.sapi, "DELETE", "/api/services/web")
    assert code == 200 and doc["persisted"] is True, doc
    code, _, doc = call(p.capi, "DELETE", "/api/services/web")
    assert code == 200, doc
    wait_port_closed(web2)
    assert call(p.sapi, "GET", "/api/services/web")[0] == 404
    assert call(p.sapi, "DELETE", "/api/services/web")[0] == 404
    assert echo_on(c, b"after delete") == b"after delete"
    assert tunnel_works(p.echo_port)
    c.close()
    for proc in (p.server, p.client):
        assert "wt" not in proc.stderr.replace("wt-", "")


def test_services_invalid_bodies(procs, echo, tmp_path):
    p = Pair(procs, echo, tmp_path, persist=False)
    p.start_server()
    port = free_port()
    ok = {"bind_addr": f"127.0.0.1:{port}", "token": "x"}

    def put(body, name="svc", headers=()):
        return call(p.sapi, "PUT", f"/api/services/{name}", body, headers)

    for body, key, words in (
            ({"bind_addr": 5202, "token": "x"}, "bind_addr", "expected a string, found integer"),
            ({"bind_addr": f"127.0.0.1:{port}", "token": "x", "nodelay": "yes"}, "nodelay",
             "expected a boolean"),
            ({"bind_addr": f"127.0.0.1:{port}", "token": "x", "max_connections": 1.5},
             "max_connections", "expected an integer"),
            ({"bind_addr": f"127.0.0.1:{port}", "tokn": "x"}, "tokn", 'did you mean "token"'),
            ({"token": "x"}, "bind_addr", "missing bind_addr"),
            ({"bind_addr": "nowhere", "token": "x"}, "bind_addr", "not a valid address"),
            ({"bind_addr": f"127.0.0.1:{port}"}, "token", "missing token"),
            ({"bind_addr": f"127.0.0.1:{port}", "token": "x", "type": "sctp"}, "type",
             'expected "tcp" or "udp"'),
            ({"bind_addr": f"127.0.0.1:{port}", "token": "x", "allow": ["10.0.0.1/8"]}, "allow",
             "10.0.0.0/8"),
            ({"bind_addr": f"127.0.0.1:{port}", "token": "x", "local_addr": "127.0.0.1:1"},
             "local_addr", "unknown key"),
            ({"bind_addr": f"127.0.0.1:{port}", "token": "(redacted)"}, "token",
             "send the token itself"),
            ({"bind_addr": "127.0.0.1:30000-30009", "token": "x"}, "bind_addr", "port range"),
            # rathole would read any file it may for whoever holds the API
            ({"bind_addr": f"127.0.0.1:{port}", "token_file": "/etc/hostname"}, "token_file",
             "cannot be read from files through the API")):
        code, _, doc = put(body)
        assert code == 400, (body, code, doc)
        assert doc["key"] == key and words in doc["error"], (body, doc)
        assert "server.toml:" not in doc["error"]
    for raw, words in ((b"", "JSON object"), (b"{", "not valid JSON"), (b"[1]", "not array"),
                       (b'{"bind_addr": null}', "null"), (b'{"a": 1, "a": 2}', "duplicate"),
                       (b'{"token": "\\ud800"}', "surrogate"), (b"\xff", "not valid JSON")):
        code, _, doc = put(raw)
        assert code == 400 and words in doc["error"], (raw, code, doc)
    code, _, doc = put(ok, name="echo")
    assert code == 409 and doc["key"] == "name" and "server.toml" in doc["error"], doc
    assert call(p.sapi, "DELETE", "/api/services/echo")[0] == 409
    assert put(ok, name="bad name")[0] in (400, 404)
    assert put(ok, name="a%2Fb")[0] == 400
    # If-Match
    assert put(ok, headers=[("If-Match", '"nope"')])[0] == 412   # no such service yet
    code, hdrs, _ = put(ok)
    assert code == 201
    etag = hdrs["etag"]
    assert put(ok, headers=[("If-Match", '"0123"')])[0] == 412
    assert call(p.sapi, "DELETE", "/api/services/svc", headers=[("If-Match", '"0123"')])[0] == 412
    code, hdrs, _ = put(ok, headers=[("If-Match", etag)])
    assert code == 200 and hdrs["etag"] == etag       # the same settings: the same ETag
    code, _, doc = put(dict(ok, token="y"), headers=[("If-Match", f'"x", {etag}')])
    assert code == 200
    assert put(ok, headers=[("If-Match", etag)])[0] == 412       # the token changed it
    assert put(ok, headers=[("If-Match", "*")])[0] == 200
    # nothing was persisted, and every answer says so
    code, _, doc = call(p.sapi, "GET", "/api/services/svc")
    assert doc["persisted"] is False
    assert not p.sfile.exists()
    # bounded bodies; methods
    code, _, _ = request(p.sapi, "PUT", "/api/services/big",
                         [("Host", "127.0.0.1"), ("Content-Type", "application/json")],
                         b'{"x": "' + b"a" * (70 << 10) + b'"}')
    assert code == 413
    assert call(p.sapi, "POST", "/api/services/svc", ok)[0] == 405
    assert call(p.sapi, "PUT", "/api/services", ok)[0] == 405
    # a form cannot create a service
    code, _, _ = request(p.sapi, "PUT", "/api/services/svc2",
                         [("Host", "127.0.0.1"), ("Content-Type", "text/plain")],
                         json.dumps(ok).encode())
    assert code == 403
    assert p.server.alive()


def test_services_need_the_token(procs, echo, tmp_path):
    p = Pair(procs, echo, tmp_path, token="api-tok")
    p.start_server()
    body = {"bind_addr": f"127.0.0.1:{free_port()}", "token": "x"}
    assert call(p.sapi, "PUT", "/api/services/a", body)[0] == 401
    assert call(p.sapi, "PUT", "/api/services/a", body, token="nope")[0] == 401
    assert call(p.sapi, "GET", "/api/services")[0] == 401
    assert call(p.sapi, "PUT", "/api/services/a", body, token="api-tok")[0] == 201
    assert call(p.sapi, "DELETE", "/api/services/a")[0] == 401
    assert call(p.sapi, "DELETE", "/api/services/a", token="api-tok")[0] == 200


def test_api_off_loopback_needs_a_token(tmp_path):
    base = server_config(2333, {"echo": dict(bind_port=5202, token="t")})
    r = run_rathole(["--check"], base + '[server.api]\nbind_addr = "0.0.0.0:2334"\n', tmp_path=tmp_path)
    assert r.returncode != 0 and "server.api.token" in r.stderr and "loopback" in r.stderr, r.stderr
    for ok in ('bind_addr = "0.0.0.0:2334"\ntoken = "long-secret"\n', 'bind_addr = "127.0.0.2:2334"\n',
               'bind_addr = "[::1]:2334"\n'):
        r = run_rathole(["--check"], base + "[server.api]\n" + ok, tmp_path=tmp_path)
        assert r.returncode == 0, (ok, r.stderr)
    cl = client_config(2333, {"echo": dict(local_port=22, token="t")})
    r = run_rathole(["--check"], cl + '[client.api]\nbind_addr = "[::]:2335"\n', tmp_path=tmp_path)
    assert r.returncode != 0 and "client.api.token" in r.stderr, r.stderr


def test_services_kept_across_restart_and_reload(procs, echo, tmp_path):
    """services_file: written as TOML, loaded at start after the main file;
    a hot reload of the main file keeps the API's services; the main file is
    never written."""
    p = Pair(procs, echo, tmp_path).start()
    web = free_port()
    assert call(p.sapi, "PUT", "/api/services/web", {"bind_addr": f"127.0.0.1:{web}", "token": "w"})[0] == 201
    assert call(p.capi, "PUT", "/api/services/web", {"local_addr": f"127.0.0.1:{echo.port}", "token": "w"})[0] == 201
    wait_tunnel(web)
    main_before = (tmp_path / "server.toml").read_text()
    saved = tomllib.loads(p.sfile.read_text())
    assert saved == {"server": {"services": {"web": {"bind_addr": f"127.0.0.1:{web}", "token": "w"}}}}
    assert oct(p.sfile.stat().st_mode & 0o777) == "0o600"
    # a hot reload of the main file (a service added there): the API's stays
    extra = free_port()
    (tmp_path / "server.toml").write_text(main_before + f'\n[server.services.more]\ntoken = "t"\nbind_addr = "127.0.0.1:{extra}"\n')
    p.server.signal(signal.SIGHUP)
    p.server.wait_log("reload: +1 added, -0 removed, ~0 changed, 2 unchanged")
    c = held(web, b"through the reload")
    assert tunnel_works(web)
    code, _, doc = call(p.sapi, "GET", "/api/services")
    assert {s["name"]: s["source"] for s in doc["services"]} == {"echo": "file", "more": "file", "web": "api"}
    # a main file that now defines the same name is refused, and says why
    (tmp_path / "server.toml").write_text(main_before + f'\n[server.services.web]\ntoken = "t"\nbind_addr = "127.0.0.1:{extra}"\n')
    p.server.signal(signal.SIGHUP)
    p.server.wait_log("reload rejected: the running configuration stays in force")
    assert 'service "web" is already defined' in p.server.stderr
    assert echo_on(c, b"still") == b"still"
    c.close()
    # restart both: the API's services come back from their files
    (tmp_path / "server.toml").write_text(main_before)
    p.server.stop()
    p.client.stop()
    wait_port_closed(web)
    p.start_server()
    p.start_client()
    p.server.wait_log("api: 1 service loaded from")
    wait_tunnel(web)
    code, _, doc = call(p.sapi, "GET", "/api/services/web")
    assert code == 200 and doc["source"] == "api" and doc["persisted"] is True
    assert (tmp_path / "server.toml").read_text() == main_before


def test_services_file_survives_kill9_during_puts(procs, echo, tmp_path):
    """kill -9 in the middle of a burst of PUTs and DELETEs: the file is the
    old or the new set, never half of one; the next start loads it."""
    p = Pair(procs, echo, tmp_path)
    p.start_server()
    stop = threading.Event()
    done = [0]

    def burst():
        for i in range(2000):
            if stop.is_set():
                return
            try:
                call(p.sapi, "PUT", f"/api/services/s{i % 50}",
                     {"bind_addr": f"127.0.0.1:{20000 + i % 50}", "token": "x" * (i % 300 + 1)})
                if i % 7 == 0:
                    call(p.sapi, "DELETE", f"/api/services/s{(i * 3) % 50}")
                done[0] += 1
            except (OSError, IndexError, ValueError):   # the server was killed
                return
    th = threading.Thread(target=burst)
    th.start()
    try:
        wait_until(lambda: done[0] >= 60, 60, what="60 changes through the api")
        p.server.stop(signal.SIGKILL)
    finally:
        stop.set()
        th.join(30)
    doc = tomllib.loads(p.sfile.read_text())
    svcs = doc["server"]["services"]
    assert svcs and all(set(s) == {"bind_addr", "token"} for s in svcs.values())
    p.start_server()
    p.server.wait_log(f"api: {len(svcs)} service")
    code, _, listing = call(p.sapi, "GET", "/api/services")
    assert {s["name"] for s in listing["services"] if s["source"] == "api"} == set(svcs)


def test_check_reads_the_services_file(tmp_path):
    """--check loads services_file as a start would: its services join the
    summary, and a broken one is named with the file and its line."""
    sfile = tmp_path / "api-services.toml"
    base = server_config(2333, {"echo": dict(bind_port=5202, token="t")},
                         extra=f'[server.api]\nservices_file = "{sfile}"\n')
    r = run_rathole(["--check"], base, tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr      # no file yet: no service yet
    sfile.write_text('[server.services.web]\nbind_addr = "0.0.0.0:8080"\ntoken = "w"\n')
    r = run_rathole(["--check"], base, tmp_path=tmp_path)
    assert r.returncode == 0 and "web" in r.stdout, r.stdout + r.stderr
    sfile.write_text('[server.services.web]\nbind_addr = "0.0.0.0:8080"\ntoken = "w"\n'
                     '[server.services.bad]\nbind_addr = 5\ntoken = "w"\n')
    r = run_rathole(["--check"], base, tmp_path=tmp_path)
    assert r.returncode != 0 and f"{sfile}:5: server.services.bad.bind_addr" in r.stderr, r.stderr
    sfile.write_text('[server.services.echo]\nbind_addr = "0.0.0.0:8080"\ntoken = "w"\n')
    r = run_rathole(["--check"], base, tmp_path=tmp_path)
    assert r.returncode != 0 and 'service "echo" is already defined' in r.stderr, r.stderr
    sfile.write_text('[server]\nbind_addr = "0.0.0.0:1"\n')
    r = run_rathole(["--check"], base, tmp_path=tmp_path)
    assert r.returncode != 0 and "services_file holds" in r.stderr, r.stderr


def test_services_and_port_ranges(procs, tmp_path):
    """The API makes services of one port: a range in bind_addr or
    local_addr, or the client's remote_ports, is refused with a message that
    says so; a range of the file is the file's, its name, its members
    (listed one by one) and their ports cannot be taken or changed through
    the API."""
    from test_ranges import free_range
    base, api, capi = free_range(2), free_port(), free_port()
    text = server_config(free_port(), {"echo": dict(bind_port=free_port(), token="t")},
                         extra=f'[server.api]\nbind_addr = "127.0.0.1:{api}"\n')
    text += f'[server.services.game]\ntoken = "t"\nbind_addr = "127.0.0.1:{base}-{base + 1}"\n'
    procs.rathole(text, name="server.toml")
    wait_port(api)
    code, _, doc = call(api, "GET", "/api/services")
    assert {s["name"]: s["source"] for s in doc["services"]} == \
        {"echo": "file", f"game:{base}": "file", f"game:{base + 1}": "file"}, doc
    one = {"bind_addr": f"127.0.0.1:{free_port()}", "token": "x"}
    code, _, doc = call(api, "PUT", "/api/services/other",
                        {"bind_addr": "127.0.0.1:30000-30009", "token": "x"})
    assert code == 400 and doc["key"] == "bind_addr", doc
    assert '"127.0.0.1:30000-30009" is a port range' in doc["error"]
    assert "config file" in doc["error"] and "one service per port" in doc["error"]
    for method in ("PUT", "DELETE"):
        code, _, doc = call(api, method, "/api/services/game", one if method == "PUT" else None)
        assert code == 409 and doc["key"] == "name", (method, doc)
        assert "port range defined in" in doc["error"] and f"game:{base + 1}" in doc["error"]
        code, _, doc = call(api, method, f"/api/services/game:{base}",
                            one if method == "PUT" else None)
        assert code == 409 and "server.toml" in doc["error"], (method, doc)
    # a port of the range is the range's, as in the file
    for addr in (f"127.0.0.1:{base + 1}", f"0.0.0.0:{base}"):
        code, _, doc = call(api, "PUT", "/api/services/other", {"bind_addr": addr, "token": "x"})
        assert code == 400 and doc["key"] == "bind_addr", doc
        assert 'overlaps the ports of service "game"' in doc["error"], doc
    code, _, doc = call(api, "GET", "/api/services/game")
    assert code == 404 and f"game:{base}" in doc["error"], doc
    assert call(api, "GET", f"/api/services/game:{base}")[0] == 200
    # the client: a range in local_addr; remote_ports without one, as the file says
    procs.rathole(client_config(free_port(), {"echo": dict(local_port=free_port(), token="t")},
                                extra=f'[client.api]\nbind_addr = "127.0.0.1:{capi}"\n'),
                  name="client.toml")
    wait_port(capi)
    code, _, doc = call(capi, "PUT", "/api/services/other",
                        {"local_addr": "127.0.0.1:30000-30009", "token": "x"})
    assert code == 400 and doc["key"] == "local_addr" and "is a port range" in doc["error"], doc
    code, _, doc = call(capi, "PUT", "/api/services/other",
                        {"local_addr": "127.0.0.1:30000", "remote_ports": "30000-30009",
                         "token": "x"})
    assert code == 400 and doc["key"] == "remote_ports", doc
    assert "needs a port range in local_addr" in doc["error"]
    code, _, doc = call(capi, "GET", "/api/services")
    assert [s["name"] for s in doc["services"]] == ["echo"]


def test_client_services_invalid_bodies(procs, echo, tmp_path):
    """The client's API checks as its file does: its own keys (local_addr,
    not bind_addr), their types, a missing local_addr, the file's service
    (409), If-Match (412); nothing is created by a refused body."""
    p = Pair(procs, echo, tmp_path, persist=False)
    p.start_client()
    ok = {"local_addr": f"127.0.0.1:{echo.port}", "token": "x"}
    for body, key, words in (
            ({"bind_addr": "127.0.0.1:1", "local_addr": "127.0.0.1:1"}, "bind_addr",
             "unknown key"),
            ({"token": "x"}, "local_addr", "missing local_addr"),
            ({"local_addr": 22}, "local_addr", "expected a string, found integer"),
            (dict(ok, retry_interval="5"), "retry_interval", "expected an integer"),
            (dict(ok, udp_max_sessions=-1), "udp_max_sessions", "expected"),
            (dict(ok, type="quic"), "type", 'expected "tcp" or "udp"'),
            (dict(ok, max_connections=3), "max_connections", "unknown key")):
        code, _, doc = call(p.capi, "PUT", "/api/services/svc", body)
        assert code == 400 and doc["key"] == key and words in doc["error"], (body, code, doc)
        assert "client.toml:" not in doc["error"]
    code, _, doc = call(p.capi, "PUT", "/api/services/echo", ok)
    assert code == 409 and doc["key"] == "name" and "client.toml" in doc["error"], doc
    assert [s["name"] for s in call(p.capi, "GET", "/api/services")[2]["services"]] == ["echo"]
    code, hdrs, doc = call(p.capi, "PUT", "/api/services/svc", ok)
    assert code == 201 and doc == {"name": "svc", "persisted": False}, doc
    assert call(p.capi, "PUT", "/api/services/svc", ok, headers=[("If-Match", '"0"')])[0] == 412
    assert call(p.capi, "DELETE", "/api/services/svc", headers=[("If-Match", '"0"')])[0] == 412
    code, _, doc = call(p.capi, "DELETE", "/api/services/svc", headers=[("If-Match", hdrs["etag"])])
    assert code == 200 and doc["persisted"] is False, doc
