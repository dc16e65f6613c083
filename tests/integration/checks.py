"""Checks that every transport's tunnel must pass (used by test_tls.py,
test_websocket.py and test_proxy.py). Each takes a `start(local_port)` that
returns a started Tunnel forwarding to local_port, so the same check runs
over tls, websocket, websocket over tls, nginx or a proxy."""
import hashlib
import os
import selectors
import socket
import threading
import time

from conftest import wait_until
from helpers import (EchoServer, connecting, echo_once, listen_tcp, recv_all, recv_digest,
                     transfer_checked, wait_tunnel)

# half_close=False: the visitor never half-closes; it reads the echo back up to
# the length it sent, then closes. Needed through proxies (tinyproxy,
# microsocks) that end both directions of a tunnel at the first EOF.


def echo_exact(port, data, timeout=10):
    """Send data, read len(data) bytes back, then close (no half-close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        while len(got) < len(data):
            d = s.recv(1 << 20)
            if not d:
                break
            got += d
        return got


def wait_tunnel_exact(port, timeout=20):
    def works():
        try:
            return echo_exact(port, b"ping", timeout=3) == b"ping"
        except OSError:
            return False
    wait_until(works, timeout, interval=0.1, what=f"the tunnel on 127.0.0.1:{port} to echo")


def check_echo(start, half_close=True):
    e = EchoServer()
    try:
        t = start(e.port)
        msg = b"hello through the tunnel\n" * 100
        if half_close:
            wait_tunnel(t.service_port, timeout=20)
            assert echo_once(t.service_port, msg) == msg
        else:
            wait_tunnel_exact(t.service_port)
            assert echo_exact(t.service_port, msg) == msg
        return t
    finally:
        e.stop()


def check_echo_bulk(start, size=64 << 20, half_close=True):
    """size bytes visitor -> service -> visitor at once (both directions of
    the tunnel busy), SHA-256 checked."""
    e = EchoServer()
    try:
        t = start(e.port)
        if half_close:
            wait_tunnel(t.service_port, timeout=20)
            sent, got, n = transfer_checked(t.service_port, size, timeout=180)
        else:
            wait_tunnel_exact(t.service_port)
            sent, got, n = transfer_checked(t.service_port, size, timeout=180, half_close=False)
        assert n == size
        assert sent == got
    finally:
        e.stop()


def check_download(start, size=64 << 20):
    """The local service streams size bytes after a request; the visitor
    only reads (the server -> visitor direction alone), SHA-256 checked."""
    block = os.urandom(1 << 20)
    chunks = size >> 20
    want = hashlib.sha256()
    for i in range(chunks):
        want.update(bytes([i & 0xFF]) + block[1:])
    ls = listen_tcp(backlog=16, timeout=1)
    stop = []

    def source():
        while not stop:
            try:
                c, _ = ls.accept()
            except OSError:
                continue
            c.settimeout(60)
            try:
                if c.recv(4) == b"size":
                    for i in range(chunks):
                        c.sendall(bytes([i & 0xFF]) + block[1:])
                else:               # wait_tunnel's ping
                    c.sendall(b"ping")
            except OSError:
                pass
            c.close()

    th = threading.Thread(target=source, daemon=True)
    th.start()
    try:
        t = start(ls.getsockname()[1])
        wait_tunnel(t.service_port, timeout=20)
        with socket.create_connection(("127.0.0.1", t.service_port), timeout=60) as s:
            s.sendall(b"size")
            n, digest = recv_digest(s)
        assert n == size
        assert digest == want.hexdigest()
    finally:
        stop.append(1)
        th.join(5)
        ls.close()


def concurrent_echo(port, n, timeout=60, wave=None):
    """n visitors connected at once, each sending its own bytes and reading
    them back; returns how many got exactly their bytes. With wave, they
    come `wave` at a time, the next ones once those before have their
    answers; every visitor stays connected until the end (n at once all the
    same), but at most `wave` new data channels are asked for at a time."""
    sel = selectors.DefaultSelector()
    socks, expect, got, done = [], {}, {}, set()

    def connect(count):
        for _ in range(count):
            i = len(socks)
            s = connecting(port)
            socks.append(s)
            expect[s] = ("visitor %05d " % i).encode() * 50
            got[s] = b""
            pending_send.add(s)
            sel.register(s, selectors.EVENT_WRITE)

    pending_send = set()
    connect(min(n, wave or n))
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and (len(socks) < n or len(done) < n):
            if len(done) == len(socks):
                connect(min(n - len(socks), wave or n))
            for key, ev in sel.select(0.5):
                s = key.fileobj
                if ev & selectors.EVENT_WRITE and s in pending_send:
                    try:
                        s.send(expect[s])
                    except OSError:
                        sel.unregister(s)
                        done.add(s)
                        continue
                    pending_send.discard(s)
                    sel.modify(s, selectors.EVENT_READ)
                elif ev & selectors.EVENT_READ:
                    try:
                        d = s.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        d = b""
                    got[s] += d
                    if not d or len(got[s]) >= len(expect[s]):
                        sel.unregister(s)
                        done.add(s)
        return sum(1 for s in socks if got[s] == expect[s])
    finally:
        for s in socks:
            s.close()
        sel.close()


def check_concurrent(start, n=200, wave=None):
    e = EchoServer()
    try:
        t = start(e.port)
        wait_tunnel_exact(t.service_port)
        assert concurrent_echo(t.service_port, n, wave=wave) == n
    finally:
        e.stop()


def check_half_close(start, size=3 << 20):
    """The visitor sends, shuts down its write side, and still receives the
    whole reply, which the service sends only after seeing that end."""
    ls = listen_tcp(backlog=8, timeout=1)
    stop = []

    def service():
        while not stop:
            try:
                c, _ = ls.accept()
            except OSError:
                continue
            c.settimeout(30)
            try:
                data = recv_all(c)          # until the visitor's end arrives
                if data == b"ping":         # wait_tunnel
                    c.sendall(data)
                else:
                    time.sleep(0.2)
                    c.sendall(b"got %d bytes;" % len(data) + data[::-1])
            except OSError:
                pass
            c.close()

    th = threading.Thread(target=service, daemon=True)
    th.start()
    try:
        t = start(ls.getsockname()[1])
        wait_tunnel(t.service_port, timeout=20)
        payload = os.urandom(size)
        with socket.create_connection(("127.0.0.1", t.service_port), timeout=30) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            reply = recv_all(s)
        assert reply == b"got %d bytes;" % len(payload) + payload[::-1]
    finally:
        stop.append(1)
        th.join(5)
        ls.close()
