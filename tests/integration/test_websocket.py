"""The websocket transport through the whole tunnel: over TCP, over TLS, and
behind a real nginx (plain, and terminating TLS) that passes the upgraded
connections to the rathole server."""
import socket

import pytest

from checks import check_concurrent, check_echo, check_echo_bulk, check_half_close
from conftest import RATHOLE, free_port
from external import start_nginx
from helpers import Tunnel, recv_all
from proc_stats import is_asan

WS_SERVER = '[server.transport]\ntype = "websocket"\n[server.transport.websocket]\ntls = false\n'
WS_CLIENT = '[client.transport]\ntype = "websocket"\n[client.transport.websocket]\ntls = false\n'

VARIANTS = ["ws", "wss", "nginx", "nginx_tls"]


def ws_tunnel(procs, pki, variant, local_port):
    """A started tunnel of one variant:
    ws         client -ws-> server
    wss        client -ws over TLS-> server
    nginx      client -ws-> nginx -ws-> server
    nginx_tls  client -ws over TLS-> nginx (terminates TLS) -ws-> server"""
    if variant == "wss":
        t = Tunnel(procs, local_port=local_port,
                   transport_server=pki.tls_server(kind="websocket", ws_tls=True),
                   transport_client=pki.tls_client(kind="websocket", ws_tls=True))
        return t.start()
    client = WS_CLIENT
    if variant == "nginx_tls":
        client = pki.tls_client(kind="websocket", ws_tls=True)
    t = Tunnel(procs, local_port=local_port, transport_server=WS_SERVER, transport_client=client)
    t.start_server()
    if variant.startswith("nginx"):
        t.nginx, nport = start_nginx(procs, t.server_port,
                                     pki=pki if variant == "nginx_tls" else None)
        t.client_text = t.client_text.replace(f'remote_addr = "127.0.0.1:{t.server_port}"',
                                              f'remote_addr = "127.0.0.1:{nport}"')
        assert f":{nport}" in t.client_text
    t.start_client()
    t.server.wait_log(f"service {t.name}: listening on", timeout=15)
    return t


@pytest.mark.parametrize("variant", VARIANTS)
def test_echo(procs, pki, variant):
    t = check_echo(lambda port: ws_tunnel(procs, pki, variant, port))
    t.client.wait_log("service echo: control channel established")


@pytest.mark.parametrize("variant", VARIANTS)
def test_64mib_echo_checksum(procs, pki, variant):
    check_echo_bulk(lambda port: ws_tunnel(procs, pki, variant, port))


@pytest.mark.parametrize("variant", VARIANTS)
def test_200_concurrent_connections(procs, pki, variant):
    """200 visitors at once; under ASan 25 at a time (all 200 connected
    together all the same): 200 TLS handshakes at once on a loaded machine
    miss the server's 5 s handshake deadline (test_tls.py)."""
    check_concurrent(lambda port: ws_tunnel(procs, pki, variant, port), 200,
                     wave=25 if is_asan(RATHOLE) else None)


@pytest.mark.parametrize("variant", VARIANTS)
def test_half_close(procs, pki, variant):
    """The close frame alone ends one direction: the reply still comes back,
    even through nginx (which would end both directions at a TCP EOF)."""
    check_half_close(lambda port: ws_tunnel(procs, pki, variant, port))


@pytest.mark.parametrize("request_text,why", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 'no "Upgrade: websocket" header'),
    (b"POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
     "the method is not GET"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
     "Sec-WebSocket-Version is not 13"),
])
def test_bad_upgrade_gets_400(procs, request_text, why):
    t = Tunnel(procs, local_port=free_port(), transport_server=WS_SERVER,
               transport_client=WS_CLIENT)
    t.start_server()
    with socket.create_connection(("127.0.0.1", t.server_port), timeout=10) as s:
        s.sendall(request_text)
        answer = recv_all(s)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
    t.server.wait_log("websocket: bad upgrade request: " + why, timeout=10)
    assert t.server.alive()


def test_client_against_plain_http_server(procs):
    """A websocket client whose remote_addr answers HTTP without upgrading
    (nginx serving a 404) says so, and retries."""
    t = Tunnel(procs, local_port=free_port(), transport_server=WS_SERVER,
               transport_client=WS_CLIENT, svc_extra_client="retry_interval = 1\n")
    # nginx proxies to a port where nothing listens: it answers 502
    nginx, nport = start_nginx(procs, free_port())
    t.client_text = t.client_text.replace(f'remote_addr = "127.0.0.1:{t.server_port}"',
                                          f'remote_addr = "127.0.0.1:{nport}"')
    t.start_client()
    t.client.wait_log("websocket: the server answered HTTP 502 Bad Gateway instead of 101 "
                      "Switching Protocols", timeout=15, count=2)
