"""Virtual hosts (issue 26): services reached by name through the shared
listeners server.http_bind_addr (Host of the first request) and
https_bind_addr (SNI of the TLS ClientHello), with real nginx as the local
services behind the client."""
import json
import os
import signal
import socket
import ssl
import subprocess
import time

import pytest

from conftest import REPO, free_port, need_binary, run_rathole, wait_port_closed, wait_until
from external import start_nginx_site
from helpers import ProxyProtocolService, connecting, http, metric, recv_exact


def curl(url, *args, resolve=None, timeout=10):
    """curl's (status code, body) for url; resolve: (name, port) to 127.0.0.1."""
    cmd = [need_binary("curl", "curl"), "-sS", "--max-time", str(timeout), "-o", "-",
           "-w", "\n%{http_code}"]
    if resolve:
        cmd += ["--resolve", f"{resolve[0]}:{resolve[1]}:127.0.0.1"]
    r = subprocess.run(cmd + list(args) + [url], capture_output=True, text=True,
                       timeout=timeout + 5)
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body.removesuffix("\n")


def get(name, port):
    return curl(f"http://{name}:{port}/", resolve=(name, port))


def raw(port, data, timeout=10):
    """Sends data on a new connection, half-closes, returns all it gets back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        out = b""
        try:
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
        except OSError:		# reset already: a refusal
            return out
        while True:
            try:
                d = c.recv(65536)
            except ConnectionResetError:
                break
            if not d:
                break
            out += d
        return out


class Vhosts:
    """Two nginx sites behind one client, reached by name on the server's
    shared listener(s). services: {name: (server keys, local port)}."""

    def __init__(self, procs, services, https=False, http_listener=True):
        self.procs = procs
        self.server_port = free_port()
        self.api = free_port()
        self.http_port = free_port() if http_listener else None
        self.https_port = free_port() if https else None
        self.services = services

    def server_text(self, services=None, http_port=None):
        http_port = http_port or self.http_port
        out = [f'[server]\nbind_addr = "127.0.0.1:{self.server_port}"\ndefault_token = "t"\n']
        if http_port:
            out.append(f'http_bind_addr = "127.0.0.1:{http_port}"\n')
        if self.https_port:
            out.append(f'https_bind_addr = "127.0.0.1:{self.https_port}"\n')
        out.append(f'[server.api]\nbind_addr = "127.0.0.1:{self.api}"\n')
        for name, (keys, _) in (services or self.services).items():
            out.append(f'[server.services.{name}]\n{keys}\n')
        return "".join(out)

    def client_text(self):
        out = [f'[client]\nremote_addr = "127.0.0.1:{self.server_port}"\ndefault_token = "t"\n']
        for name, (_, local) in self.services.items():
            out.append(f'[client.services.{name}]\nlocal_addr = "127.0.0.1:{local}"\n')
        return "".join(out)

    def start(self, client_binary=None):
        self.server = self.procs.rathole(self.server_text(), name="server.toml")
        self.server.wait_log(f"listening on 127.0.0.1:{self.server_port}")
        if client_binary:
            path = self.procs.tmp / "client.toml"
            path.write_text(self.client_text())
            os.chmod(path, 0o600)
            self.client = self.procs.start([client_binary, str(path)], env={"RUST_LOG": "info"})
        else:
            self.client = self.procs.rathole(self.client_text(), name="client.toml")
        for name in self.services:
            self.server.wait_log(f"service {name}: control channel established", timeout=15)
        for port in (self.http_port, self.https_port):
            if port:
                self.server.wait_log(f"listening on 127.0.0.1:{port} for virtual hosts")
        return self

    def metrics(self):
        code, text = http(f"http://127.0.0.1:{self.api}/metrics")
        assert code == 200
        return text

    def status(self):
        code, text = http(f"http://127.0.0.1:{self.api}/api/status")
        assert code == 200
        return json.loads(text)


@pytest.fixture
def sites(procs):
    _, a = start_nginx_site(procs, "site-a", name="site-a")
    _, b = start_nginx_site(procs, "site-b", name="site-b")
    return a, b


def two_sites(procs, sites, client_binary=None, **kw):
    a, b = sites
    return Vhosts(procs, {
        "a": ('hostnames = ["a.example.com"]', a),
        "b": ('hostnames = ["B.example.com.", "*.wild.example.com"]', b),
        # an exact name beats the wildcard; this one also has its own port
        "exact": (f'hostnames = ["exact.wild.example.com"]\nbind_addr = "127.0.0.1:{free_port()}"', a),
    }, **kw).start(client_binary)


def test_http_routes_by_host(procs, sites):
    v = two_sites(procs, sites)
    p = v.http_port
    assert get("a.example.com", p) == (200, "site-a host=a.example.com")
    assert get("b.example.com", p) == (200, "site-b host=b.example.com")
    # a wildcard: one label or more; the exact name wins over it
    assert get("x.wild.example.com", p) == (200, "site-b host=x.wild.example.com")
    assert get("y.x.wild.example.com", p) == (200, "site-b host=y.x.wild.example.com")
    assert get("exact.wild.example.com", p) == (200, "site-a host=exact.wild.example.com")
    # case, a trailing dot and a port do not matter; the head reaches nginx untouched
    out = raw(p, b"GET / HTTP/1.1\r\nHost: A.Example.COM.:80\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"site-a host=a.example.com\n"), out
    # an absolute-form target names the host (RFC 9112 3.2.2)
    out = raw(p, b"GET http://b.example.com/x HTTP/1.1\r\nHost: a.example.com\r\n"
                 b"Connection: close\r\n\r\n")
    assert out.endswith(b"site-b host=b.example.com\n"), out
    # keep-alive: curl's second request goes on the same tunnelled connection
    code, body = curl(f"http://a.example.com:{p}/1", "-o", "-", f"http://a.example.com:{p}/2",
                      resolve=("a.example.com", p))
    assert body.count("site-a host=a.example.com") == 2, body
    m = v.metrics()
    assert metric(m, "rathole_vhost_connections_total", listener="http") >= 8
    assert metric(m, "rathole_service_connections_total", service="a") >= 3
    assert metric(m, "rathole_service_connections_total", service="exact") == 1


def test_unknown_or_missing_host_gets_404(procs, sites):
    v = two_sites(procs, sites)
    p = v.http_port
    code, body = get("nope.example.com", p)
    assert code == 404
    # the page names nothing of the configuration
    for word in ("example", "site", "wild", "rathole"):
        assert word not in body.lower()
    # a wildcard needs a label in front of it
    assert get("wild.example.com", p)[0] == 404
    for head in (b"GET / HTTP/1.0\r\n\r\n",                   # no Host at all
                 b"GET / HTTP/1.1\r\nHost: \r\n\r\n",          # an empty one
                 b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"):  # an address
        out = raw(p, head)
        assert out.startswith(b"HTTP/1.1 404 Not Found\r\n"), (head, out)
        # nor do its header fields (no Server: either)
        for word in (b"example", b"site", b"wild", b"rathole", b"server:", b"127.0.0.1"):
            assert word not in out.lower(), (word, out)
    out = raw(p, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")   # TLS on the HTTP port
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n"), out
    m = v.metrics()
    assert metric(m, "rathole_vhost_refused_total", listener="http", reason="unknown_name") == 5
    assert metric(m, "rathole_vhost_refused_total", listener="http", reason="bad_head") == 1
    assert metric(m, "rathole_service_connections_total", service="a") == 0


def test_slow_and_oversized_heads_are_closed(procs, sites):
    v = two_sites(procs, sites)
    p = v.http_port
    slow = socket.create_connection(("127.0.0.1", p), timeout=15)
    slow.sendall(b"GET / HTTP/1.1\r\nHo")
    silent = socket.create_connection(("127.0.0.1", p), timeout=15)
    # cut after the deadline (5 s): the peer's close, not our timeout, ends the wait
    for c in (slow, silent):
        try:
            assert c.recv(100) == b""
        except ConnectionResetError:
            pass
        c.close()
    # 16 KiB of fields and still no Host: closed, no page
    big = b"GET / HTTP/1.1\r\n" + (b"X-Pad: " + b"p" * 100 + b"\r\n") * 170
    assert len(big) > 16384
    with socket.create_connection(("127.0.0.1", p), timeout=10) as c:
        try:
            c.sendall(big)
            assert c.recv(100) == b""
        except (ConnectionResetError, BrokenPipeError):
            pass        # closed with the tail of our head unread: a reset
    m = v.metrics()
    assert metric(m, "rathole_vhost_refused_total", listener="http", reason="slow") == 2
    assert metric(m, "rathole_vhost_refused_total", listener="http", reason="too_big") == 1
    assert metric(m, "rathole_vhost_heads_reading") == 0
    # the listener still serves
    assert get("a.example.com", p) == (200, "site-a host=a.example.com")


def test_head_forwarded_first_with_proxy_protocol_and_acl(procs):
    pp = ProxyProtocolService()
    try:
        v = Vhosts(procs, {
            "pp": ('hostnames = ["pp.example.com"]\nproxy_protocol = "v1"', pp.port),
            "denied": ('hostnames = ["denied.example.com"]\ndeny = ["127.0.0.0/8"]', pp.port),
        }).start()
        p = v.http_port
        head = b"GET /p HTTP/1.1\r\nHost: pp.example.com\r\n\r\nand a body"
        with socket.create_connection(("127.0.0.1", p), timeout=10) as c:
            c.sendall(head)
            f = c.makefile("rb")
            line = f.readline()
            src = c.getsockname()[1]
            assert line == b"v1 TCP4 127.0.0.1 %d 127.0.0.1 %d\n" % (src, p)
            # the bytes read to route come first and untouched, then the rest
            c.sendall(b" and more")
            want = head + b" and more"
            got = f.read(len(want))
            assert got == want
        # allow/deny apply: refused before any data channel is spent
        assert raw(p, b"GET / HTTP/1.1\r\nHost: denied.example.com\r\n\r\n") == b""
        m = v.metrics()
        assert metric(m, "rathole_service_visitors_refused_total", service="denied",
                      reason="acl") == 1
        assert len(pp.headers) == 1
    finally:
        pp.stop()


def test_max_connections_counts_routed_visitors(procs, sites):
    a, _ = sites
    v = Vhosts(procs, {"one": ('hostnames = ["one.example.com"]\nmax_connections = 1', a)}).start()
    p = v.http_port
    with socket.create_connection(("127.0.0.1", p), timeout=10) as held:
        held.sendall(b"GET / HTTP/1.1\r\nHost: one.example.com\r\n\r\n")
        assert b"site-a host=one.example.com" in held.recv(4096)   # kept alive
        assert raw(p, b"GET / HTTP/1.1\r\nHost: one.example.com\r\n\r\n") == b""
        m = v.metrics()
        assert metric(m, "rathole_service_visitors_refused_total", service="one",
                      reason="max_connections") == 1
    wait_until(lambda: get("one.example.com", p)[0] == 200, what="a free slot again")


REFERENCE = os.environ.get("RATHOLE_REFERENCE") or os.path.join(
    os.path.dirname(REPO), "shared", "peers", "rathole")


@pytest.mark.skipif(not os.access(REFERENCE, os.X_OK),
                    reason=f"the reference rathole is not at {REFERENCE} (RATHOLE_REFERENCE=path)")
def test_reference_client_behind_virtual_hosts(procs, sites):
    """Nothing changes on the wire: the reference client serves services
    that visitors reach by name."""
    v = two_sites(procs, sites, client_binary=REFERENCE)
    p = v.http_port
    assert get("a.example.com", p) == (200, "site-a host=a.example.com")
    assert get("z.wild.example.com", p) == (200, "site-b host=z.wild.example.com")
    assert get("exact.wild.example.com", p) == (200, "site-a host=exact.wild.example.com")


def test_status_of_a_hostnames_only_service(procs, sites):
    v = two_sites(procs, sites)
    st = v.status()
    assert st["http_bind_addr"] == f"127.0.0.1:{v.http_port}" and st["http_listening"] is True
    assert st["https_bind_addr"] is None and st["https_listening"] is False
    svc = {s["name"]: s for s in st["services"]}
    assert svc["a"]["bind_addr"] is None
    assert svc["a"]["hostnames"] == ["a.example.com"] and svc["a"]["vhost"] == "both"
    assert svc["a"]["listening"] is True and svc["a"]["control_channel"] is True
    assert svc["b"]["hostnames"] == ["b.example.com", "*.wild.example.com"]
    assert svc["exact"]["bind_addr"].startswith("127.0.0.1:")


def test_client_away_gets_503(procs, sites):
    a, _ = sites
    v = Vhosts(procs, {"a": ('hostnames = ["a.example.com"]', a)}, https=True)
    v.server = procs.rathole(v.server_text(), name="server.toml")
    for port in (v.http_port, v.https_port):
        v.server.wait_log(f"listening on 127.0.0.1:{port} for virtual hosts")
    assert get("a.example.com", v.http_port)[0] == 503
    assert get("b.example.com", v.http_port)[0] == 404
    # on the TLS listener: a fatal internal_error alert, not unrecognized_name
    assert first_record(v.https_port, client_hello("a.example.com")) == b"\x15\x03\x03\x00\x02\x02\x50"
    m = v.metrics()
    for listener in ("http", "https"):
        assert metric(m, "rathole_vhost_refused_total", listener=listener, reason="no_client") == 1


def reload(v, text):
    """The new file in place by a rename, and SIGHUP (the watcher may see it
    first: the second reload then finds nothing to change)."""
    tmp = v.procs.tmp / "server.toml.new"
    tmp.write_text(text)
    os.replace(tmp, v.procs.tmp / "server.toml")
    v.server.signal(signal.SIGHUP)


def test_reload_moves_names_and_listener(procs, sites):
    a, b = sites
    v = Vhosts(procs, {"a": ('hostnames = ["a.example.com"]', a),
                       "b": ('hostnames = ["b.example.com"]', b)}).start()
    old = v.http_port
    assert get("a.example.com", old)[1] == "site-a host=a.example.com"
    # a name moves from one service to the other: no service restarts
    held = socket.create_connection(("127.0.0.1", old), timeout=10)
    held.sendall(b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n")
    assert b"site-a" in held.recv(4096)
    moved = {"a": ('hostnames = ["x.example.com"]', a),
             "b": ('hostnames = ["b.example.com", "a.example.com"]', b)}
    reload(v, v.server_text(moved))
    wait_until(lambda: get("a.example.com", old)[1] == "site-b host=a.example.com",
               timeout=15, what="a.example.com to reach site-b")
    assert get("x.example.com", old)[1] == "site-a host=x.example.com"
    # the connection routed before the reload goes on
    held.sendall(b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n")
    assert b"site-a" in held.recv(4096)
    held.close()
    # the shared listener moves to another port; the old one closes
    new = free_port()
    reload(v, v.server_text(moved, http_port=new))
    v.server.wait_log(f"listening on 127.0.0.1:{new} for virtual hosts", timeout=15)
    assert get("b.example.com", new)[1] == "site-b host=b.example.com"
    wait_port_closed(old)
    assert "restarting the server" not in v.server.stderr
    assert "changed by the reload" not in v.server.stderr


CHECK_HEAD = '[server]\nbind_addr = "0.0.0.0:2333"\ndefault_token = "t"\n'


def test_check_accepts_and_rejects(tmp_path):
    ok = CHECK_HEAD + ('http_bind_addr = "0.0.0.0:80"\nhttps_bind_addr = "[::]:443"\n'
                       '[server.services.nas]\nhostnames = ["nas.example.com", "*.home.example.com"]\n'
                       '[server.services.acme]\nhostnames = ["nas.example.com"]\nvhost = "http"\n'
                       '[server.services.tls]\nhostnames = ["nas.example.com"]\nvhost = "https"\n'
                       '[server.services.both]\nbind_addr = "0.0.0.0:8443"\nhostnames = ["x.org"]\n')
    # acme and nas both claim nas.example.com on the http listener
    r = run_rathole(["--check"], ok, tmp_path)
    assert r.returncode == 1
    assert ('server.services.acme.hostnames[0]: "nas.example.com" is already claimed by '
            'service "nas" (line 6)') in r.stderr, r.stderr
    r = run_rathole(["--check"], ok.replace('hostnames = ["nas.example.com", "*.home',
                                            'hostnames = ["*.home'), tmp_path)
    assert r.returncode == 0, r.stderr
    for line in ("  http_bind_addr      0.0.0.0:80 (virtual hosts by Host)",
                 "  https_bind_addr     [::]:443 (virtual hosts by TLS SNI)",
                 "    nas: tcp, nodelay true, hostnames *.home.example.com (on http and https)",
                 "    acme: tcp, nodelay true, hostnames nas.example.com (on http)",
                 "    both: tcp, bind_addr 0.0.0.0:8443, nodelay true, hostnames x.org (on http and https)"):
        assert line in r.stdout.splitlines() or any(l.startswith(line + ",") for l in r.stdout.splitlines()), r.stdout
    for text, msg in (
        (CHECK_HEAD + '[server.services.a]\nhostnames = ["a.org"]\n',
         "server.services.a.hostnames: no shared listener routes them"),
        (CHECK_HEAD + 'http_bind_addr = "0.0.0.0:80"\n[server.services.a]\nhostnames = ["a:80"]\n',
         'server.services.a.hostnames[0]: "a:80": write the name without a port'),
        (CHECK_HEAD + 'http_bind_addr = "0.0.0.0:80"\n[server.services.a]\nhostnames = ["a.*.org"]\n',
         "a wildcard is only allowed as the whole first label"),
        (CHECK_HEAD + 'http_bind_addr = "0.0.0.0:80"\n[server.services.a]\ntype = "udp"\n'
                      'hostnames = ["a.org"]\n',
         "server.services.a.hostnames: applies to tcp services only"),
        (CHECK_HEAD + 'http_bind_addr = "nope"\n', "server.http_bind_addr: \"nope\" is not a valid address"),
        (CHECK_HEAD + '[server.services.a]\n', 'service "a": missing bind_addr'),
        (CHECK_HEAD + 'http_bind_addr = "0.0.0.0:80"\n[server.services.a]\nhostnames = []\n',
         'service "a": missing bind_addr'),
    ):
        r = run_rathole(["--check"], text, tmp_path)
        assert r.returncode == 1 and msg in r.stderr, (text, r.stderr)


# ---- HTTPS: routed by SNI, TLS passed through ----

def tls_peer_cert(port, name, ca):
    """The DER certificate a TLS handshake with SNI name presents on port."""
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname=name) as t:
            return t.getpeercert(binary_form=True)


def der(pem):
    with open(pem) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def client_hello(name, record=None):
    """A real ClientHello (Python's OpenSSL) for name, in records of at most
    `record` bytes when given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    i, o = ssl.MemoryBIO(), ssl.MemoryBIO()
    t = ctx.wrap_bio(i, o, server_hostname=name)
    try:
        t.do_handshake()
    except ssl.SSLWantReadError:
        pass
    ch = o.read()
    if not record:
        return ch
    msg = ch[5:]
    return b"".join(b"\x16\x03\x01" + len(msg[k:k + record]).to_bytes(2, "big") + msg[k:k + record]
                    for k in range(0, len(msg), record))


def first_record(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(data)
        out = b""
        while len(out) < 7:
            try:
                d = c.recv(4096)
            except ConnectionResetError:
                break
            if not d:
                break
            out += d
        return out


@pytest.fixture
def tls_sites(procs, pki):
    a = pki.leaf("a.example.com")
    b = pki.leaf("b.example.com", "*.wild.example.com")
    _, pa = start_nginx_site(procs, "tls-a", cert=a, name="tls-a")
    _, pb = start_nginx_site(procs, "tls-b", cert=b, name="tls-b")
    _, plain = start_nginx_site(procs, "acme-a", name="acme-a")
    return dict(a=a, b=b, pa=pa, pb=pb, plain=plain)


def https_setup(procs, tls_sites):
    t = tls_sites
    return Vhosts(procs, {
        "a": ('hostnames = ["a.example.com"]\nvhost = "https"', t["pa"]),
        "b": ('hostnames = ["b.example.com", "*.wild.example.com"]\nvhost = "https"', t["pb"]),
        # the same name on port 80 goes elsewhere (ACME HTTP-01, redirects)
        "a-acme": ('hostnames = ["a.example.com"]\nvhost = "http"', t["plain"]),
    }, https=True).start()


def test_https_routes_by_sni_with_the_backends_certificate(procs, pki, tls_sites):
    v = https_setup(procs, tls_sites)
    p, ca = v.https_port, pki.path("ca.pem")
    # the certificate seen is the backend's own, byte for byte: nothing decrypted here
    assert tls_peer_cert(p, "a.example.com", ca) == der(tls_sites["a"][0])
    assert tls_peer_cert(p, "b.example.com", ca) == der(tls_sites["b"][0])
    assert tls_peer_cert(p, "x.wild.example.com", ca) == der(tls_sites["b"][0])
    # openssl s_client -servername
    s_client = need_binary("openssl", "openssl")
    for name, cn in (("a.example.com", "a.example.com"), ("B.Example.com", "b.example.com")):
        r = subprocess.run([s_client, "s_client", "-connect", f"127.0.0.1:{p}", "-servername", name,
                            "-CAfile", ca, "-verify_hostname", name.lower()],
                           input="", capture_output=True, text=True, timeout=20)
        assert f"subject=CN = {cn}" in r.stdout, r.stdout + r.stderr
        assert "Verify return code: 0 (ok)" in r.stdout, r.stdout
    # curl through it, HTTPS end to end
    for name, text in (("a.example.com", "tls-a"), ("b.example.com", "tls-b"),
                       ("y.wild.example.com", "tls-b")):
        assert curl(f"https://{name}:{p}/", "--cacert", ca, resolve=(name, p)) == \
            (200, f"{text} host={name}")
    # the same name on the HTTP listener reaches the other service
    assert get("a.example.com", v.http_port) == (200, "acme-a host=a.example.com")
    # a ClientHello in records of 50 bytes: routed all the same (a ServerHello comes back)
    out = first_record(p, client_hello("a.example.com", record=50))
    assert out[:1] == b"\x16", out[:16]
    m = v.metrics()
    assert metric(m, "rathole_vhost_connections_total", listener="https") >= 9
    assert metric(m, "rathole_service_connections_total", service="a-acme") == 1


def test_https_unknown_or_missing_sni_gets_unrecognized_name(procs, pki, tls_sites):
    v = https_setup(procs, tls_sites)
    p, ca = v.https_port, pki.path("ca.pem")
    alert = b"\x15\x03\x03\x00\x02\x02\x70"    # fatal unrecognized_name
    assert first_record(p, client_hello("nope.example.com")) == alert
    assert first_record(p, client_hello(None)) == alert                 # no SNI
    assert first_record(p, client_hello("wild.example.com", record=7)) == alert
    with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
        tls_peer_cert(p, "nope.example.com", ca)
    # a name routed on the TLS listener only (vhost = "https") is unknown on port 80
    assert get("b.example.com", v.http_port)[0] == 404
    # plain HTTP on the TLS port: not a ClientHello, closed without a word
    assert raw(p, b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n") == b""
    # a slow ClientHello is cut after the deadline
    with socket.create_connection(("127.0.0.1", p), timeout=15) as c:
        c.sendall(client_hello("a.example.com")[:40])
        try:
            assert c.recv(100) == b""
        except ConnectionResetError:
            pass
    m = v.metrics()
    assert metric(m, "rathole_vhost_refused_total", listener="https", reason="unknown_name") == 4
    assert metric(m, "rathole_vhost_refused_total", listener="https", reason="bad_head") == 1
    assert metric(m, "rathole_vhost_refused_total", listener="https", reason="slow") == 1
    for svc in ("a", "b"):
        assert metric(m, "rathole_service_connections_total", service=svc) == 0


# ---- heads in pieces, and at their bounds ----

def padded_client_hello(name, body_len, record):
    """A real ClientHello for name grown by a padding extension (RFC 7685)
    to a handshake body of body_len bytes, in records of at most `record`."""
    ch = client_hello(name)
    msg = bytearray(ch[5:])
    body = msg[4:]
    off = 34
    off += 1 + body[off]                                # session id
    off += 2 + int.from_bytes(body[off:off + 2], "big")  # cipher suites
    off += 1 + body[off]                                # compression
    ext_len = int.from_bytes(body[off:off + 2], "big")
    pad = body_len - len(body) - 4
    assert pad >= 0, (body_len, len(body))
    body[off:off + 2] = (ext_len + 4 + pad).to_bytes(2, "big")
    body += b"\x00\x15" + pad.to_bytes(2, "big") + bytes(pad)
    msg = b"\x01" + len(body).to_bytes(3, "big") + body
    assert len(body) == body_len
    return b"".join(b"\x16\x03\x01" + len(msg[k:k + record]).to_bytes(2, "big") + msg[k:k + record]
                    for k in range(0, len(msg), record))


def sent_in_pieces(port, pieces, pause=0.3):
    """Sends pieces with a pause between them (separate segments, each a new
    arrival for the listener) and reads back as many bytes (an echo)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        for k, piece in enumerate(pieces):
            if k:
                time.sleep(pause)
            c.sendall(piece)
        return recv_exact(c, sum(len(p) for p in pieces))


def refused_silently(port, data):
    """data sent; the connection closed without a byte back."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as c:
        try:
            c.sendall(data)
            return c.recv(100) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True         # closed with the tail of our data unread: a reset


def test_heads_in_pieces_and_at_their_bounds(procs, echo):
    """A head that arrives in pieces is read again at each and routed, also
    2.5 s after its first bytes (within the 5 s deadline); heads of exactly
    the bound (16 KiB of HTTP head, a 16 KiB ClientHello in records) are
    routed and forwarded byte for byte; one byte more, or the records of a
    ClientHello over 32 KiB, are closed as too big."""
    v = Vhosts(procs, {"e": ('hostnames = ["e.example.com"]', echo.port)}, https=True).start()
    # a head that takes half the deadline (5 s) to come is routed all the same
    late = socket.create_connection(("127.0.0.1", v.http_port), timeout=10)
    late_start = time.monotonic()
    late.sendall(b"GET / HTTP/1.1\r\n")
    # HTTP: the request line, then the Host in two more segments
    pieces = [b"GET / HTTP/1.1\r\n", b"Ho", b"st: e.example.com\r\n\r\n"]
    assert sent_in_pieces(v.http_port, pieces) == b"".join(pieces)
    # 16384 bytes of head with the Host line at its end
    tail = b"Host: e.example.com\r\n\r\n"
    line = b"X-Pad: " + b"p" * 93 + b"\r\n"
    head = b"GET / HTTP/1.1\r\n" + line * 150
    head += b"X-Last: " + b"q" * (16384 - len(head) - len(tail) - 10) + b"\r\n" + tail
    assert len(head) == 16384
    assert sent_in_pieces(v.http_port, [head]) == head
    # TLS: a ClientHello in three segments, the first of them a bare record header
    ch = client_hello("e.example.com")
    pieces = [ch[:3], ch[3:60], ch[60:]]
    assert sent_in_pieces(v.https_port, pieces) == ch
    # a ClientHello of the greatest size, 16 KiB, in records of 1000 bytes
    big = padded_client_hello("e.example.com", 16384, 1000)
    assert sent_in_pieces(v.https_port, [big[:5000], big[5000:]]) == big
    # one byte more; a ClientHello in records of 2 bytes (over 32 KiB of them)
    assert refused_silently(v.https_port, padded_client_hello("e.example.com", 16385, 16384))
    assert refused_silently(v.https_port, padded_client_hello("e.example.com", 12000, 2))
    time.sleep(max(0, late_start + 2.5 - time.monotonic()))
    with late:
        late.sendall(b"Host: e.example.com\r\n\r\n")
        assert recv_exact(late, 39) == b"GET / HTTP/1.1\r\nHost: e.example.com\r\n\r\n"
    m = v.metrics()
    assert metric(m, "rathole_vhost_connections_total", listener="http") == 3
    assert metric(m, "rathole_vhost_connections_total", listener="https") == 2
    assert metric(m, "rathole_vhost_refused_total", listener="https", reason="too_big") == 2
    assert metric(m, "rathole_service_connections_total", service="e") == 5


def test_https_visitor_with_proxy_protocol_v2_and_acl(procs):
    """On the TLS listener too: the PROXY header (v2) comes first, with the
    listener's address as its destination, then the ClientHello untouched;
    allow applies before any data channel is spent."""
    pp = ProxyProtocolService()
    try:
        v = Vhosts(procs, {
            "pp": ('hostnames = ["pp.example.com"]\nproxy_protocol = "v2"\nvhost = "https"',
                   pp.port),
            "far": ('hostnames = ["far.example.com"]\nallow = ["192.0.2.0/24"]\nvhost = "https"',
                    pp.port),
        }, https=True, http_listener=False).start()
        p = v.https_port
        ch = client_hello("pp.example.com", record=100)
        with socket.create_connection(("127.0.0.1", p), timeout=10) as c:
            c.sendall(ch)
            f = c.makefile("rb")
            assert f.readline() == b"v2 TCP4 127.0.0.1 %d 127.0.0.1 %d\n" % (c.getsockname()[1], p)
            assert f.read(len(ch)) == ch
        assert refused_silently(p, client_hello("far.example.com"))
        m = v.metrics()
        assert metric(m, "rathole_service_visitors_refused_total", service="far", reason="acl") == 1
        assert metric(m, "rathole_service_connections_total", service="pp") == 1
        assert len(pp.headers) == 1
    finally:
        pp.stop()


def test_head_sent_a_byte_at_a_time_is_closed(procs, echo):
    """Each read of a head parses it from its start: one that comes a byte
    at a time is closed after 64 reads (counted as slow), before its Host,
    where it would have been routed."""
    v = Vhosts(procs, {"e": ('hostnames = ["e.example.com"]', echo.port)}).start()
    head = b"GET / HTTP/1.1\r\nX-Pad: " + b"p" * 330 + b"\r\nHost: e.example.com\r\n\r\n"
    with socket.create_connection(("127.0.0.1", v.http_port), timeout=10) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            # 380 bytes 10 ms apart, about 4 s (within the deadline): the 64
            # reads are there even if a loaded machine joins a few segments
            for k in range(len(head)):
                c.send(head[k:k + 1])
                time.sleep(0.01)
            got = c.recv(100)
        except (ConnectionResetError, BrokenPipeError):
            got = b""
    assert got == b"", got
    m = v.metrics()
    assert metric(m, "rathole_vhost_refused_total", listener="http", reason="slow") == 1
    assert metric(m, "rathole_vhost_connections_total", listener="http") == 0


def test_idle_flood_keeps_at_most_1024_heads(procs, sites):
    """Visitors that connect and say nothing: 1024 heads are read at once;
    76 more close the 76 oldest (counted as slow) rather than being read
    too, and a visitor that names a host still gets through."""
    from proc_stats import fd_count, raise_nofile
    raise_nofile(4096)
    a, _ = sites
    v = Vhosts(procs, {"a": ('hostnames = ["a.example.com"]', a)}).start()
    base_fds = fd_count(v.server.pid)
    flood = []

    def connect(n):
        for _ in range(n):
            flood.append(connecting(v.http_port))

    def reading():
        return metric(v.metrics(), "rathole_vhost_heads_reading")
    try:
        connect(1024)           # the listen backlog holds them all
        wait_until(lambda: reading() == 1024, 4, what="1024 heads being read")
        connect(76)
        # well within their 5 s: the oldest go, not the deadline's doing
        wait_until(lambda: metric(v.metrics(), "rathole_vhost_refused_total", listener="http",
                                  reason="slow") >= 76 or reading() > 1024, 4,
                   what="76 more visitors to be taken in")
        assert reading() == 1024
        assert metric(v.metrics(), "rathole_vhost_refused_total", listener="http",
                      reason="slow") == 76
        assert fd_count(v.server.pid) <= base_fds + 1024 + 8
        # the first was closed by the server; the last is still open
        with pytest.raises(BlockingIOError):
            flood[-1].recv(10)
        flood[0].setblocking(True)
        flood[0].settimeout(5)
        try:
            assert flood[0].recv(10) == b""
        except ConnectionResetError:
            pass
        assert get("a.example.com", v.http_port) == (200, "site-a host=a.example.com")
    finally:
        for s in flood:
            s.close()
