"""The TCP tunnel with real server and client processes on loopback."""
import http.server
import os
import selectors
import signal
import socket
import threading
import time
import urllib.request

import pytest

from conftest import free_port, port_open, wait_port_closed, wait_until
from helpers import (EchoServer, Tunnel, connecting, echo_once, recv_all, recv_digest,
                     transfer_checked, wait_tunnel)


@pytest.fixture
def tunnel(procs, echo):
    t = Tunnel(procs, local_port=echo.port).start()
    wait_tunnel(t.service_port)
    return t


def test_echo(tunnel):
    assert echo_once(tunnel.service_port, b"hello through the tunnel\n") == b"hello through the tunnel\n"
    tunnel.client.wait_log("service echo: control channel established")


def test_http(procs):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = ("you asked for %s" % self.path).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    th = threading.Thread(target=httpd.serve_forever, daemon=True)
    th.start()
    try:
        t = Tunnel(procs, name="web", local_port=httpd.server_address[1]).start()
        url = "http://127.0.0.1:%d/some/page" % t.service_port
        body = wait_until(lambda: _get(url), 15, what="HTTP through the tunnel")
        assert body == b"you asked for /some/page"
        for i in range(20):
            assert _get(url + str(i)) == ("you asked for /some/page%d" % i).encode()
    finally:
        httpd.shutdown()


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read()
    except OSError:
        return None


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_256mib_checksum(procs, direction):
    """256 MiB through the tunnel, SHA-256 checked. upload: visitor -> local
    service; download: local service -> visitor."""
    size = 256 << 20
    if direction == "upload":
        e = EchoServer()
        try:
            t = Tunnel(procs, local_port=e.port).start()
            wait_tunnel(t.service_port)
            sent, got, n = transfer_checked(t.service_port, size)
            assert n == size and sent == got
        finally:
            e.stop()
        return
    # download: the local service streams data; the visitor only reads
    import hashlib
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    for i in range(256):
        digest.update(bytes([i]) + block[1:])
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)

    def source():
        for _ in range(2):
            ls.settimeout(30)
            try:
                c, _ = ls.accept()
            except OSError:
                return
            first = c.recv(4)
            if first == b"size":
                for i in range(256):
                    c.sendall(bytes([i]) + block[1:])
            c.close()

    th = threading.Thread(target=source, daemon=True)
    th.start()
    t = Tunnel(procs, local_port=ls.getsockname()[1]).start()
    with socket.create_connection(("127.0.0.1", t.service_port), timeout=60) as s:
        s.sendall(b"size")
        n, got = recv_digest(s)
    ls.close()
    assert n == size
    assert got == digest.hexdigest()


def test_half_close(procs):
    """The visitor sends, shuts down its write side, and still receives the
    whole reply, which the service sends only after seeing the end."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)
    ls.settimeout(30)

    def service():
        c, _ = ls.accept()
        data = recv_all(c)            # until the visitor's FIN arrives
        time.sleep(0.2)
        c.sendall(b"got %d bytes;" % len(data) + data[::-1])
        c.close()

    th = threading.Thread(target=service, daemon=True)
    th.start()
    t = Tunnel(procs, local_port=ls.getsockname()[1]).start()
    payload = os.urandom(3 << 20)
    with socket.create_connection(("127.0.0.1", t.service_port), timeout=30) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        reply = recv_all(s)
    th.join(10)
    ls.close()
    assert reply == b"got %d bytes;" % len(payload) + payload[::-1]


def test_2000_concurrent_connections(procs, echo):
    """2,000 visitors connected at once, each echoing its own bytes."""
    # info: 2,000 "new visitor" lines would bury any warning in the log tail
    tunnel = Tunnel(procs, local_port=echo.port, env={"RATHOLE_LOG": "info"}).start()
    wait_tunnel(tunnel.service_port)
    n = 2000
    sel = selectors.DefaultSelector()
    socks = []
    expect = {}
    got = {}
    for i in range(n):
        s = connecting(tunnel.service_port)
        socks.append(s)
        expect[s] = ("visitor %05d " % i).encode() * 20
        got[s] = b""
        sel.register(s, selectors.EVENT_WRITE)
    pending_send = set(socks)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(len(got[s]) < len(expect[s]) for s in socks):
        for key, ev in sel.select(0.5):
            s = key.fileobj
            if ev & selectors.EVENT_WRITE and s in pending_send:
                try:
                    s.send(expect[s])
                except (BlockingIOError, OSError):
                    continue
                pending_send.discard(s)
                sel.modify(s, selectors.EVENT_READ)
            elif ev & selectors.EVENT_READ:
                try:
                    d = s.recv(65536)
                except BlockingIOError:
                    continue
                got[s] += d
                if not d or len(got[s]) >= len(expect[s]):
                    sel.unregister(s)
    ok = sum(1 for s in socks if got[s] == expect[s])
    short = sorted(len(got[s]) for s in socks if got[s] != expect[s])[:20]
    for s in socks:
        s.close()
    assert ok == n, f"{n - ok} visitors without their full echo; bytes they got: {short}"


def test_client_restart(procs, echo):
    t = Tunnel(procs, local_port=echo.port).start()
    wait_tunnel(t.service_port)
    assert t.client.stop() == 0
    # the server notices and closes the service port
    t.server.wait_log("service echo: stopped listening", timeout=15)
    t.start_client()
    wait_tunnel(t.service_port)
    assert echo_once(t.service_port, b"again") == b"again"


def test_server_restart(procs, echo):
    t = Tunnel(procs, local_port=echo.port).start()
    wait_tunnel(t.service_port)
    assert t.server.stop() == 0
    t.client.wait_log("retrying in", timeout=15)
    t.start_server()
    wait_tunnel(t.service_port, timeout=20)
    assert echo_once(t.service_port, b"back") == b"back"


def test_wrong_token(procs, echo):
    t = Tunnel(procs, local_port=echo.port)
    t.client_text = t.client_text.replace('token = "secret-token"', 'token = "not-the-token"')
    t.start_server()
    t.start_client()
    t.client.wait_log("authentication failed: the token differs from the server's", timeout=15)
    t.server.wait_log("service echo: authentication failed for 127.0.0.1", timeout=5)
    assert not port_open(t.service_port)
    assert "not-the-token" not in t.client.stderr + t.server.stderr
    assert "secret-token" not in t.client.stderr + t.server.stderr


def test_unknown_service(procs, echo):
    t = Tunnel(procs, local_port=echo.port)
    t.client_text = t.client_text.replace("[client.services.echo]", "[client.services.other]")
    t.start_server()
    t.start_client()
    t.client.wait_log('the server has no service named "other"', timeout=15)
    t.server.wait_log("asks for an unknown service", timeout=5)
    assert not port_open(t.service_port)


def test_local_service_down_then_back(procs):
    port = free_port()
    t = Tunnel(procs, local_port=port).start()
    # nothing listens on the local port: the visitor is closed, the tunnel stays
    # (reset when its bytes had reached the client, which closed the data
    # channel unread: that error resets the visitor; a FIN if they had not)
    with socket.create_connection(("127.0.0.1", t.service_port), timeout=10) as s:
        s.settimeout(10)
        s.sendall(b"anyone?")
        try:
            assert recv_all(s) == b""
        except ConnectionResetError:
            pass
    t.client.wait_log("cannot reach the local service 127.0.0.1:%d" % port)
    e = EchoServer(port=port)
    try:
        wait_tunnel(t.service_port)
        assert echo_once(t.service_port, b"now it works") == b"now it works"
    finally:
        e.stop()
    assert "control channel established" in t.client.stderr
    assert t.client.stderr.count("control channel established") == 1


def test_garbage_on_control_port(tunnel):
    """Garbage, truncated messages and bad versions cost one connection each."""
    hello_ctl = b"\x00\x00\x00\x00\x01" + b"\x11" * 32
    bad = [
        os.urandom(200),
        b"\xff\xff\xff\xff" + b"\x01" + b"\x00" * 32,          # unknown hello variant
        b"\x00\x00\x00\x00\x07" + b"\x00" * 32,                 # protocol version 7
        hello_ctl[:20],                                          # truncated hello
        b"\x01\x00\x00\x00\x01" + os.urandom(32),               # data channel, unknown key
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    for b in bad:
        with socket.create_connection(("127.0.0.1", tunnel.server_port), timeout=10) as s:
            s.settimeout(10)
            s.sendall(b)
            if b is not bad[3]:
                try:
                    recv_all(s)         # the server closes the connection
                except ConnectionResetError:
                    pass
    assert tunnel.server.alive()
    assert echo_once(tunnel.service_port, b"still fine") == b"still fine"
    tunnel.server.wait_log("protocol version mismatched")
    tunnel.server.wait_log("unknown session key")


def test_handshake_deadline(tunnel):
    """A connection that never completes its hello is closed after 5 s."""
    s = socket.create_connection(("127.0.0.1", tunnel.server_port), timeout=10)
    s.sendall(b"\x00\x00")
    start = time.monotonic()
    s.settimeout(10)
    assert recv_all(s) == b""
    took = time.monotonic() - start
    s.close()
    assert 4.0 <= took <= 9.0, took
    tunnel.server.wait_log("no complete handshake within 5 s")


def test_sigterm_exits_zero(tunnel):
    assert tunnel.client.stop(signal.SIGINT) == 0
    assert tunnel.server.stop(signal.SIGTERM) == 0
    assert "shut down cleanly" in tunnel.server.stderr
    wait_port_closed(tunnel.server_port)
