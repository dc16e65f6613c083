"""Beyond the reference: the admin API and metrics, access control, the PROXY protocol."""
import json
import os
import shutil
import socket

import pytest

from conftest import RATHOLE, free_port, wait_port, wait_until
from helpers import (ProxyProtocolService, Tunnel, UdpEcho, client_config, echo_once, http, metric,
                     recv_all, server_config, transfer_checked, wait_tunnel)


def test_metrics_move_with_traffic(procs, echo):
    sapi, capi = free_port(), free_port()
    t = Tunnel(procs, local_port=echo.port,
               server_extra=f'[server.api]\nbind_addr = "127.0.0.1:{sapi}"\n',
               client_extra=f'[client.api]\nbind_addr = "127.0.0.1:{capi}"\n').start()
    wait_tunnel(t.service_port)
    surl, curl_ = f"http://127.0.0.1:{sapi}", f"http://127.0.0.1:{capi}"
    code, before = http(surl + "/metrics")
    assert code == 200
    assert metric(before, "rathole_service_control_channel_up", service="echo") == 1
    b_in = metric(before, "rathole_service_bytes_total", service="echo", direction="in")
    total = metric(before, "rathole_service_connections_total", service="echo")
    sent, got, n = transfer_checked(t.service_port, 3 << 20)
    assert sent == got
    code, after = http(surl + "/metrics")
    assert metric(after, "rathole_service_bytes_total", service="echo", direction="in") >= b_in + (3 << 20)
    assert metric(after, "rathole_service_bytes_total", service="echo", direction="out") >= 3 << 20
    assert metric(after, "rathole_service_connections_total", service="echo") == total + 1
    assert metric(after, "rathole_process_open_fds") > 0
    assert metric(after, "rathole_process_resident_memory_bytes") > 0
    code, cm = http(curl_ + "/metrics")
    assert code == 200
    assert metric(cm, "rathole_service_control_channel_up", service="echo") == 1
    assert metric(cm, "rathole_service_bytes_total", service="echo", direction="in") >= 3 << 20
    code, st = http(surl + "/api/status")
    status = json.loads(st)
    assert status["role"] == "server" and status["services"][0]["name"] == "echo"
    assert status["services"][0]["control_channel"] is True
    code, st = http(curl_ + "/api/status")
    assert json.loads(st)["services"][0]["control_channel"] == "established"
    assert http(surl + "/nothing")[0] == 404
    assert http(surl + "/metrics", method="POST")[0] == 405


def test_client_api(procs, echo, tmp_path):
    """The client's own admin API: its token; its metrics and status moving
    with what the client does (forwarding, failing to reach a local service,
    UDP sessions, losing its server); POST /api/reload applying a file that
    the watcher did not see (edited through a hard link elsewhere)."""
    uecho = UdpEcho()
    try:
        api, sp = free_port(), free_port()
        ports = {"echo": free_port(), "dead": free_port(), "late": free_port(),
                 "dns": free_port(socket.SOCK_DGRAM)}
        local = {"echo": echo.port, "dead": free_port(), "late": echo.port, "dns": uecho.port}
        kind = {"dns": "udp"}
        procs.rathole(server_config(sp, {n: dict(bind_port=ports[n], token="t",
                                                 type=kind.get(n, "tcp")) for n in ports}),
                      name="s.toml").wait_log("listening on 127.0.0.1:%d" % sp)

        def client_text(names):
            return client_config(sp, {n: dict(local_port=local[n], token="t", type=kind.get(n, "tcp"))
                                      for n in names},
                                 extra=f'[client.api]\nbind_addr = "127.0.0.1:{api}"\ntoken = "capi"\n')
        path = tmp_path / "client.toml"
        path.write_text(client_text(["echo", "dead", "dns"]))
        (tmp_path / "elsewhere").mkdir()
        os.link(path, tmp_path / "elsewhere" / "client.toml")
        cl = procs.start([RATHOLE, str(path)])
        url = f"http://127.0.0.1:{api}"

        def page():
            code, text = http(url + "/metrics", token="capi")
            assert code == 200, text
            return text

        def status():
            code, text = http(url + "/api/status", token="capi")
            assert code == 200, text
            return {s["name"]: s for s in json.loads(text)["services"]}

        wait_tunnel(ports["echo"])
        ping = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ping.settimeout(0.5)

        def udp_works():
            ping.sendto(b"ping", ("127.0.0.1", ports["dns"]))
            try:
                return ping.recvfrom(100)[0] == b"ping"
            except socket.timeout:
                return False
        wait_until(udp_works, 15, what="UDP through the tunnel")
        ping.close()
        for path_, method in (("/metrics", "GET"), ("/api/status", "GET"), ("/api/reload", "POST")):
            assert http(url + path_, method=method)[0] == 401
            assert http(url + path_, method=method, token="wrong")[0] == 401
        before = page()
        assert metric(before, "rathole_build_info", version=json.loads(
            http(url + "/api/status", token="capi")[1])["version"], role="client") == 1
        wait_until(lambda: all(metric(page(), "rathole_service_control_channel_up", service=n) == 1
                               for n in ("echo", "dead", "dns")), 10,
                   what="every control channel up")
        total = metric(before, "rathole_service_connections_total", service="echo")
        # forwarding: two connections, one of them held open
        assert echo_once(ports["echo"], b"x" * 1000) == b"x" * 1000
        held = socket.create_connection(("127.0.0.1", ports["echo"]), timeout=5)
        held.sendall(b"held")
        assert held.recv(4) == b"held"
        now = page()
        assert metric(now, "rathole_service_connections_total", service="echo") == total + 2
        assert metric(now, "rathole_service_connections_active", service="echo") == 1
        assert metric(now, "rathole_service_bytes_total", service="echo", direction="in") >= 1004
        st = status()
        assert st["echo"]["control_channel"] == "established"
        assert st["echo"]["connections_active"] == 1
        assert st["echo"]["connections_total"] == total + 2
        held.close()
        # a local service that is not there: the visitor is closed, and counted
        fails = metric(now, "rathole_service_local_connect_failures_total", service="dead")
        with socket.create_connection(("127.0.0.1", ports["dead"]), timeout=5) as v:
            v.settimeout(5)
            try:
                assert v.recv(10) == b""
            except ConnectionResetError:
                pass
        wait_until(lambda: metric(page(), "rathole_service_local_connect_failures_total",
                                  service="dead") == fails + 1, 5, what="the failure counted")
        # UDP: each visitor one session
        base = metric(page(), "rathole_service_udp_sessions", service="dns")
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
        try:
            for i, u in enumerate(socks):
                u.settimeout(5)
                u.sendto(b"q%d" % i, ("127.0.0.1", ports["dns"]))
                assert u.recvfrom(100)[0] == b"q%d" % i
            assert metric(page(), "rathole_service_udp_sessions", service="dns") == base + 3
            assert status()["dns"]["udp_sessions"] == base + 3
        finally:
            for u in socks:
                u.close()
        # a reload through the API: the new service forwards
        (tmp_path / "elsewhere" / "client.toml").write_text(
            client_text(["echo", "dead", "dns", "late"]))
        assert "late" not in status()
        code, body = http(url + "/api/reload", method="POST", token="capi")
        assert code == 200 and json.loads(body)["reloaded"] is True, body
        wait_tunnel(ports["late"])
        assert status()["late"]["control_channel"] == "established"
        # the server goes away: the client says it is retrying, and counts it
        procs.all[0].stop()
        wait_until(lambda: status()["echo"]["control_channel"] in ("retrying", "connecting"), 10,
                   what="the client to notice")
        gone = page()
        assert metric(gone, "rathole_service_control_channel_up", service="echo") == 0
        wait_until(lambda: metric(page(), "rathole_service_reconnects_total", service="echo") >= 1,
                   10, what="a reconnection attempt counted")
        assert status()["echo"]["reconnects"] >= 1
        assert "capi" not in cl.stderr
    finally:
        uecho.stop()


def test_api_token_and_reload(procs, echo):
    api = free_port()
    t = Tunnel(procs, local_port=echo.port,
               server_extra=f'[server.api]\nbind_addr = "127.0.0.1:{api}"\ntoken = "api-secret"\n').start()
    url = f"http://127.0.0.1:{api}"
    assert http(url + "/metrics")[0] == 401
    assert http(url + "/metrics", token="wrong")[0] == 401
    assert http(url + "/metrics", token="api-secret")[0] == 200
    assert http(url + "/api/reload", method="POST")[0] == 401
    code, body = http(url + "/api/reload", method="POST", token="api-secret")
    assert code == 200 and json.loads(body)["reloaded"] is True
    t.server.wait_log("reload requested through the api")
    # a broken file: the reload is refused and says so
    path = procs.tmp / "server.toml"
    path.write_text(path.read_text() + "\n[server.services.broken\n")
    code, body = http(url + "/api/reload", method="POST", token="api-secret")
    assert code == 409 and json.loads(body)["reloaded"] is False
    assert "api-secret" not in t.server.stderr


def test_allow_deny(procs, echo):
    t = Tunnel(procs, local_port=echo.port,
               svc_extra_server='allow = ["127.0.0.0/8"]\ndeny = ["127.0.0.66"]').start()
    wait_tunnel(t.service_port)

    def from_addr(src):
        s = socket.socket()
        s.settimeout(5)
        s.bind((src, 0))
        s.connect(("127.0.0.1", t.service_port))
        try:
            s.sendall(b"hi")
            s.shutdown(socket.SHUT_WR)
            return recv_all(s)
        except OSError:             # refused: closed at once, maybe reset
            return b""
        finally:
            s.close()

    assert from_addr("127.0.0.5") == b"hi"
    assert from_addr("127.0.0.66") == b""
    t.server.wait_log("visitor 127.0.0.66")
    t.server.wait_log("refused by allow/deny")


def test_allow_list_excludes_others(procs, echo):
    t = Tunnel(procs, local_port=echo.port, svc_extra_server='allow = ["10.0.0.0/8"]').start()
    t.server.wait_log("service echo: listening on")
    with socket.create_connection(("127.0.0.1", t.service_port), timeout=5) as s:
        s.sendall(b"x")
        try:
            assert recv_all(s) == b""
        except ConnectionResetError:
            pass
    t.server.wait_log("refused by allow/deny")
    # nothing was spent on the refused visitor: no data channel was asked for
    assert "new visitor" not in t.server.stderr


def test_max_connections(procs, echo):
    t = Tunnel(procs, local_port=echo.port, svc_extra_server="max_connections = 2").start()
    wait_tunnel(t.service_port)
    held = [socket.create_connection(("127.0.0.1", t.service_port), timeout=5) for _ in range(2)]
    for i, s in enumerate(held):
        s.sendall(b"held %d" % i)
        assert s.recv(100) == b"held %d" % i
    third = socket.create_connection(("127.0.0.1", t.service_port), timeout=5)
    third.settimeout(5)
    try:
        assert third.recv(100) == b""
    except ConnectionResetError:
        pass
    third.close()
    t.server.wait_log("max_connections (2) reached")
    for s in held:
        s.close()
    wait_tunnel(t.service_port)


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

# the visitor's source address: not the service's own, so a header that
# swapped source and destination, or wrote the bind address, shows
VISITOR = {"ipv4": "127.0.0.7", "ipv6": "::1"}
HOST = {"ipv4": "127.0.0.1", "ipv6": "::1"}


def proxied_service(procs, version, family, local_port):
    """A server whose service sends PROXY headers (version) to local_port,
    visited on HOST[family]; returns the service port once it listens."""
    host = HOST[family]
    sp, vp = free_port(), free_port(host=host)
    srv = procs.rathole(server_config(sp, {"web": dict(bind_port=vp, bind_host=host if family == "ipv4" else "[::1]",
                                                       token="t", extra=f'proxy_protocol = "{version}"')}),
                        name="s.toml")
    srv.wait_log("listening on 127.0.0.1:%d" % sp)
    procs.rathole(client_config(sp, {"web": dict(local_port=local_port, token="t")}), name="c.toml")
    srv.wait_log("service web: listening on", timeout=15)
    return vp


def visit(family, port, payload):
    """Connects from VISITOR[family] to the service: (own (ip, port), reply)."""
    fam = socket.AF_INET6 if family == "ipv6" else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.bind((VISITOR[family], 0))
        s.connect((HOST[family], port))
        me = s.getsockname()[:2]
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        return me, recv_all(s)


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_proxy_protocol_header_exact(procs, version, family):
    """The local service parses the header strictly: the version configured,
    the visitor's own address and port as the source, the service's address
    and port as the destination, and the visitor's bytes right after it."""
    svc = ProxyProtocolService()
    try:
        vp = proxied_service(procs, version, family, svc.port)
        for i in range(3):          # each connection gets its own header
            (ip, port), reply = visit(family, vp, b"payload %d" % i)
            fam = "TCP4" if family == "ipv4" else "TCP6"
            want = b"%s %s %s %d %s %d\n" % (version.encode(), fam.encode(), ip.encode(), port,
                                             HOST[family].encode(), vp)
            assert reply == want + b"payload %d" % i, (reply, svc.headers)
        assert len(svc.headers) == 3 and all("error" not in h for h in svc.headers), svc.headers
    finally:
        svc.stop()


@pytest.mark.skipif(not os.path.exists(NGINX), reason="nginx is not installed (apt-get install nginx-light)")
@pytest.mark.parametrize("version,family", [("v1", "ipv4"), ("v2", "ipv6")])
def test_proxy_protocol_with_nginx(procs, tmp_path, version, family):
    """A real consumer of the header: nginx reports the visitor's address and
    port it read from it. nginx takes either version and does not say which
    it read (1.22 has no $proxy_protocol_tlv_*): a v2 service sending v1
    passes here; test_proxy_protocol_header_exact checks the version."""
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""
daemon off;
worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    server {{
        listen 127.0.0.1:{port} proxy_protocol;
        location / {{ return 200 "visitor=$proxy_protocol_addr:$proxy_protocol_port\\n"; }}
    }}
}}
""")
    nginx = procs.start([NGINX, "-c", str(conf), "-e", str(tmp_path / "error.log")])
    wait_port(port)
    vp = proxied_service(procs, version, family, port)
    (ip, vport), body = visit(family, vp, b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    body = body.decode("latin-1")
    assert "200 OK" in body, body
    assert f"visitor={ip}:{vport}\n" in body, body
    nginx.stop()
