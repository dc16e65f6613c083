"""The client reaching its server through a real proxy: tinyproxy (HTTP
CONNECT, with and without BasicAuth) and microsocks (SOCKS5, with and
without user/password). The proxies are started by the tests on dynamic
loopback ports and stopped by PID (see external.py).

Neither proxy passes a half-close on: at the first EOF from either side it
closes both connections of the tunnel, so a visitor that half-closes loses
what is still on its way back (the same happens with the Rust rathole). The
visitors here read everything before closing (half_close=False); the caveat
is in docs/transports.md and pinned by test_half_close_is_lost_through_proxy."""
import threading

import pytest

from checks import check_concurrent, check_echo, check_echo_bulk, wait_tunnel_exact
from conftest import free_port, port_open
from external import start_microsocks, start_tinyproxy
from helpers import Tunnel, accepted, echo_once, listen_tcp, recv_all

USER, PASSWORD = "alice", "s3cret"


def start_proxy(procs, kind, auth, connect_ports=()):
    """Returns the proxy URL for the client (kind: http or socks5)."""
    u, p = (USER, PASSWORD) if auth else (None, None)
    if kind == "http":
        _, port = start_tinyproxy(procs, u, p, connect_ports=connect_ports)
    else:
        _, port = start_microsocks(procs, u, p)
    cred = f"{USER}:{PASSWORD}@" if auth else ""
    return f"{kind}://{cred}127.0.0.1:{port}"


def client_transport(proxy, kind="tcp", pki=None, ws_tls=None):
    if pki:
        return pki.tls_client(kind=kind, ws_tls=ws_tls, proxy=proxy)
    out = f'[client.transport]\ntype = "{kind}"\n[client.transport.tcp]\nproxy = "{proxy}"\n'
    if kind == "websocket":
        out += "[client.transport.websocket]\ntls = false\n"
    return out


def server_transport(kind="tcp", pki=None, ws_tls=None):
    if pki:
        return pki.tls_server(kind=kind, ws_tls=ws_tls)
    out = f'[server.transport]\ntype = "{kind}"\n'
    if kind == "websocket":
        out += "[server.transport.websocket]\ntls = false\n"
    return out


def proxied(procs, proxy_kind, auth, local_port, kind="tcp", pki=None, ws_tls=None):
    proxy = start_proxy(procs, proxy_kind, auth)
    t = Tunnel(procs, local_port=local_port,
               transport_server=server_transport(kind, pki, ws_tls),
               transport_client=client_transport(proxy, kind, pki, ws_tls))
    return t.start()


PROXIES = [("http", False), ("http", True), ("socks5", False), ("socks5", True)]
IDS = ["tinyproxy", "tinyproxy_auth", "microsocks", "microsocks_auth"]


@pytest.mark.parametrize("proxy_kind,auth", PROXIES, ids=IDS)
def test_echo(procs, proxy_kind, auth):
    t = check_echo(lambda port: proxied(procs, proxy_kind, auth, port), half_close=False)
    t.client.wait_log("service echo: control channel established")


@pytest.mark.parametrize("proxy_kind,auth", PROXIES, ids=IDS)
def test_64mib_echo_checksum(procs, proxy_kind, auth):
    check_echo_bulk(lambda port: proxied(procs, proxy_kind, auth, port), half_close=False)


@pytest.mark.parametrize("proxy_kind,auth", PROXIES, ids=IDS)
def test_100_concurrent_connections(procs, proxy_kind, auth):
    check_concurrent(lambda port: proxied(procs, proxy_kind, auth, port), 100)


class ReplyAfterEof:
    """A local service that answers only once the visitor's end arrived
    (as a request/response protocol does after a half-close); "ping" alone,
    the tunnel check's, is echoed at once."""

    def __init__(self):
        self.ls = listen_tcp(backlog=16)
        self.port = self.ls.getsockname()[1]
        self.stopped = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        for c in accepted(self.ls, lambda: self.stopped):
            c.settimeout(10)
            with c:
                try:
                    data = c.recv(65536)
                    if data != b"ping":
                        data += recv_all(c)         # until the visitor's end
                    c.sendall(data)
                except OSError:
                    pass

    def stop(self):
        self.stopped.append(1)
        self.ls.close()


@pytest.mark.parametrize("proxy_kind", ["http", "socks5"])
def test_half_close_is_lost_through_proxy(procs, proxy_kind):
    """Pins the caveat: the visitor's half-close reaches the proxy as an EOF
    on the data channel, and the proxy then closes the channel both ways, so
    the reply does not come back (rathole passes the half-close on, as the
    reference does; the proxy is what ends the other direction). The local
    service answers only after the EOF reached it, which is after the proxy
    acted on it: no race with the proxy, every reply is lost. If this starts
    to fail, update docs/transports.md."""
    svc = ReplyAfterEof()
    try:
        t = proxied(procs, proxy_kind, False, svc.port)
        wait_tunnel_exact(t.service_port)
        replies = [echo_once(t.service_port, b"x" * 100) for _ in range(5)]
        assert replies == [b""] * 5, replies
    finally:
        svc.stop()


@pytest.mark.parametrize("proxy_kind", ["http", "socks5"])
@pytest.mark.parametrize("kind,ws_tls", [("tls", None), ("websocket", True)],
                         ids=["tls", "wss"])
def test_tls_inside_the_proxy_tunnel(procs, pki, proxy_kind, kind, ws_tls):
    """The transport runs inside the proxy's tunnel: the certificate is
    checked against the server's name, not the proxy's."""
    t = check_echo(lambda port: proxied(procs, proxy_kind, True, port, kind, pki, ws_tls),
                   half_close=False)
    t.client.wait_log("service echo: control channel established")


# ---- the proxy says no: its answer in the log, the client retries ----

def refused(procs, proxy, expect):
    t = Tunnel(procs, local_port=free_port(), transport_client=client_transport(proxy),
               svc_extra_client="retry_interval = 1\n")
    t.start_server()
    t.start_client()
    t.client.wait_log(expect, timeout=20, count=2)
    line = next(l for l in t.client.stderr.splitlines() if expect in l)
    assert " ERROR " in line and "retrying in" in line, line
    assert "service echo: listening on" not in t.server.stderr
    assert not port_open(t.service_port)
    assert t.client.alive()
    return t


def test_tinyproxy_wrong_password(procs):
    _, port = start_tinyproxy(procs, USER, PASSWORD)
    # tinyproxy answers wrong credentials with 401, not 407
    refused(procs, f"http://{USER}:wrong@127.0.0.1:{port}",
            f"proxy 127.0.0.1:{port} refused CONNECT: HTTP 401 Unauthorized "
            "(check the user and password in the proxy URL)")


def test_tinyproxy_credentials_missing(procs):
    _, port = start_tinyproxy(procs, USER, PASSWORD)
    refused(procs, f"http://127.0.0.1:{port}",
            f"proxy 127.0.0.1:{port} refused CONNECT: HTTP 407 Proxy Authentication Required "
            "(it wants credentials: http://user:password@host:port)")


def test_tinyproxy_connect_port_forbidden(procs):
    """tinyproxy allows CONNECT only to its ConnectPort list: 403."""
    _, port = start_tinyproxy(procs, connect_ports=[443])
    refused(procs, f"http://127.0.0.1:{port}",
            f"proxy 127.0.0.1:{port} refused CONNECT: HTTP 403 Access violation")


def test_microsocks_wrong_password(procs):
    _, port = start_microsocks(procs, USER, PASSWORD)
    refused(procs, f"socks5://{USER}:wrong@127.0.0.1:{port}",
            f"proxy 127.0.0.1:{port} rejected the user and password (check them in the "
            "proxy URL)")


def test_microsocks_credentials_missing(procs):
    _, port = start_microsocks(procs, USER, PASSWORD)
    refused(procs, f"socks5://127.0.0.1:{port}",
            f"proxy 127.0.0.1:{port} wants a user and password: "
            "socks5://user:password@host:port")


def test_microsocks_target_down(procs):
    """The proxy cannot reach remote_addr (nothing listens): its reply code."""
    _, port = start_microsocks(procs)
    t = Tunnel(procs, local_port=free_port(),
               transport_client=client_transport(f"socks5://127.0.0.1:{port}"),
               svc_extra_client="retry_interval = 1\n")
    t.start_client()          # no server
    t.client.wait_log(f"proxy 127.0.0.1:{port} could not connect to 127.0.0.1:{t.server_port}",
                      timeout=20, count=2)


def test_proxy_down(procs):
    """Nothing listens at the proxy's address: the connect error names it."""
    port = free_port()
    t = Tunnel(procs, local_port=free_port(),
               transport_client=client_transport(f"http://127.0.0.1:{port}"),
               svc_extra_client="retry_interval = 1\n")
    t.start_server()
    t.start_client()
    t.client.wait_log(f"cannot connect to 127.0.0.1:{port}: Connection refused",
                      timeout=20, count=2)
