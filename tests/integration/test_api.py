"""The admin API as an operator's interface that web pages cannot reach:
Host and Origin checks (issue 23, part 5)."""
import json
import socket

from conftest import free_port, run_rathole, wait_port
from helpers import server_config


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
