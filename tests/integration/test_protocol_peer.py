"""Speaking the wire protocol by hand (shared/protocol.md) against our server,
and playing the server against our client; over plain TCP, and over TLS with
Python's ssl module (OpenSSL's own record layer, as in the reference)."""
import hashlib
import os
import socket
import ssl
import struct
import threading
import time

import pytest

from conftest import free_port, port_open, wait_until
from helpers import (EchoServer, PathRelay, UdpEcho, accepted, assert_paced, client_config,
                     listen_tcp, recv_all, server_config, tunnel_works, wait_tunnel)


def sha256(b):
    return hashlib.sha256(b).digest()


def u32(v):
    return struct.pack("<I", v)


def read_exact(s, n):
    b = b""
    while len(b) < n:
        d = s.recv(n - len(b))
        if not d:
            raise EOFError(f"closed after {len(b)} of {n} bytes")
        b += d
    return b


def control_hello(digest):
    return u32(0) + b"\x01" + digest


def data_hello(key):
    return u32(1) + b"\x01" + key


# ---- a hand-written client against our server ----

def plain_connect(port):
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def hand_control_channel(port, name, token, expect_cmds, connect=plain_connect):
    s = connect(port)
    s.sendall(control_hello(sha256(name.encode())))
    h = read_exact(s, 37)
    assert h[:5] == u32(0) + b"\x01"
    key = sha256(token.encode() + h[5:])
    s.sendall(key)
    assert read_exact(s, 4) == u32(0)           # Ack::Ok
    for _ in range(expect_cmds):
        assert read_exact(s, 4) == u32(0)       # CreateDataChannel
    return s, key


def test_hand_client_tcp(procs):
    sp, vp = free_port(), free_port()
    srv = procs.rathole(server_config(sp, {"svc": dict(bind_port=vp, token="tk")},
                                      extra="heartbeat_interval = 1"), name="s.toml")
    srv.wait_log("listening on 127.0.0.1:%d" % sp)
    ctl, key = hand_control_channel(sp, "svc", "tk", 8)
    srv.wait_log("service svc: listening on")
    # the server asks for one more channel per visitor; we open one data channel
    dc = socket.create_connection(("127.0.0.1", sp), timeout=10)
    dc.sendall(data_hello(key))
    visitor = socket.create_connection(("127.0.0.1", vp), timeout=10)
    assert read_exact(ctl, 4) == u32(0)         # CreateDataChannel for the visitor
    assert read_exact(dc, 4) == u32(0)          # StartForwardTcp
    visitor.sendall(b"from the visitor")
    assert read_exact(dc, 16) == b"from the visitor"
    dc.sendall(b"from the service")
    assert read_exact(visitor, 16) == b"from the service"
    dc.shutdown(socket.SHUT_WR)
    assert recv_all(visitor) == b""             # our FIN reached the visitor
    visitor.close()
    dc.close()
    # with nothing else to say, the server sends heartbeats (interval 1 s)
    ctl.settimeout(5)
    assert read_exact(ctl, 4) == u32(1)
    # closing the control channel closes the service port
    ctl.close()
    srv.wait_log("service svc: stopped listening")
    assert not port_open(vp)


def test_hand_client_udp(procs):
    sp, vp = free_port(), free_port(socket.SOCK_DGRAM)
    srv = procs.rathole(server_config(sp, {"dns": dict(bind_port=vp, token="tk", type="udp")}),
                        name="s.toml")
    srv.wait_log("listening on 127.0.0.1:%d" % sp)
    ctl, key = hand_control_channel(sp, "dns", "tk", 2)
    dc = socket.create_connection(("127.0.0.1", sp), timeout=10)
    dc.sendall(data_hello(key))
    assert read_exact(dc, 4) == u32(1)          # StartForwardUdp
    srv.wait_log("service dns: listening on")
    v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    v.settimeout(5)
    v.bind(("127.0.0.1", 0))
    vport = v.getsockname()[1]
    v.sendto(b"query", ("127.0.0.1", vp))
    hlen = read_exact(dc, 1)[0]
    assert hlen == 12
    hdr = read_exact(dc, hlen)
    assert hdr[:4] == u32(0) and hdr[4:8] == socket.inet_aton("127.0.0.1")
    assert struct.unpack("<H", hdr[8:10])[0] == vport
    n = struct.unpack("<H", hdr[10:12])[0]
    assert read_exact(dc, n) == b"query"
    # answer through the channel with the visitor's address in the header
    reply = b"answer!"
    dc.sendall(bytes([12]) + hdr[:10] + struct.pack("<H", len(reply)) + reply)
    assert v.recvfrom(100)[0] == reply
    # a frame with a lying header length closes this channel only
    dc.sendall(b"\x0d" + b"\x00" * 13)
    dc.settimeout(5)
    assert recv_all(dc) == b""
    srv.wait_log("UDP data channel lost: malformed frame")
    assert srv.alive()
    # the server asks for a replacement channel
    assert read_exact(ctl, 4) == u32(0)
    ctl.close()
    v.close()


# ---- a hand-written server against our client ----

class FakeServer:
    """Accepts our client's connections and runs a script per connection."""

    def __init__(self, handler):
        self.sock = listen_tcp()
        self.port = self.sock.getsockname()[1]
        self.handler = handler
        self.conns = []
        self.errors = []
        self.times = []
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        for c in accepted(self.sock, lambda: self._stop):
            c.settimeout(10)
            self.conns.append(c)
            self.times.append(time.monotonic())
            threading.Thread(target=self._handle, args=(c,), daemon=True).start()

    def _handle(self, c):
        try:
            self.handler(self, c)
        except Exception as e:        # recorded for the test to inspect
            self.errors.append(e)

    def stop(self):
        self._stop = True
        self._t.join(5)
        self.sock.close()
        for c in self.conns:
            c.close()


def fake_control_channel(c, first, token, state, hold):
    """Plays the server's side of a control channel whose Hello is `first`:
    checks the service and the token, accepts, asks for one data channel,
    then holds the channel open for `hold` seconds."""
    assert first[4] == 1 and first[5:] == sha256(b"nas")
    nonce = os.urandom(32)
    c.sendall(control_hello(nonce))
    auth = read_exact(c, 32)
    assert auth == sha256(token.encode() + nonce)
    state["key"] = auth
    c.sendall(u32(0) + u32(0))                   # Ack::Ok, CreateDataChannel
    time.sleep(hold)


def test_fake_server_drives_client(procs):
    echo = EchoServer()
    state = {"key": None, "forwarded": None}
    token = "client-token"

    def handler(fs, c):
        first = read_exact(c, 37)
        if first[:4] == u32(0):                      # control channel
            fake_control_channel(c, first, token, state, 5)
        else:                                        # data channel
            assert first[:5] == u32(1) + b"\x01" and first[5:] == state["key"]
            c.sendall(u32(0))                        # StartForwardTcp
            c.sendall(b"through our client")
            state["forwarded"] = read_exact(c, 18)
            c.close()

    fs = FakeServer(handler)
    try:
        procs.rathole(client_config(fs.port, {"nas": dict(local_port=echo.port, token=token)}),
                      name="c.toml")
        wait_until(lambda: state["forwarded"] or fs.errors, 15, what="forwarding")
        assert not fs.errors, fs.errors
        assert state["forwarded"] == b"through our client"
    finally:
        fs.stop()
        echo.stop()


def test_client_heartbeat_timeout(procs):
    """A server that goes silent is given up after heartbeat_timeout."""
    def handler(fs, c):
        read_exact(c, 37)
        nonce = os.urandom(32)
        c.sendall(control_hello(nonce))
        read_exact(c, 32)
        c.sendall(u32(0))
        time.sleep(6)

    fs = FakeServer(handler)
    try:
        cl = procs.rathole(client_config(fs.port, {"a": dict(local_port=1, token="t")},
                                         extra="heartbeat_timeout = 2"), name="c.toml")
        cl.wait_log("no heartbeat from the server for 2 s", timeout=10)
        wait_until(lambda: len(fs.conns) >= 2, 10, what="a reconnection")
    finally:
        fs.stop()


def test_heartbeats_disabled(procs):
    """heartbeat_interval = 0 on the server and heartbeat_timeout = 0 on the
    client: watched on the path between them, the server sends nothing more
    on the idle control channel, and the client keeps that channel (no new
    connection) although the server is silent."""
    echo = EchoServer()
    sp, vp = free_port(), free_port()
    srv = procs.rathole(server_config(sp, {"svc": dict(bind_port=vp, token="tk")},
                                      extra="heartbeat_interval = 0"), name="s.toml")
    srv.wait_log("listening on 127.0.0.1:%d" % sp)
    relay = PathRelay(sp)
    try:
        procs.rathole(client_config(relay.port, {"svc": dict(local_port=echo.port, token="tk")},
                                    extra="heartbeat_timeout = 0"), name="c.toml")
        wait_tunnel(vp)
        def controls():
            # the server's first bytes on a control channel are its Hello
            # (on a data channel nothing, or StartForwardTcp and data)
            return [p for p in list(relay.pairs) if bytes(p.first[:5]) == u32(0) + b"\x01"]
        assert len(controls()) == 1
        control = controls()[0]
        quiet_from = control.from_server
        # heartbeats would come every second (heartbeat_interval = 1), and a
        # client timing out a silent server at once reconnects within ~0.5 s
        time.sleep(2.5)
        assert control.from_server == quiet_from, "the server sent heartbeats"
        assert controls() == [control], "the client opened a new control channel"
        assert tunnel_works(vp)
    finally:
        relay.stop()
        echo.stop()


def test_client_against_garbage_server(procs):
    """A server speaking garbage: the client keeps retrying at its paced
    backoff (at most retry_interval apart, never faster than ~0.4 s) and stays up."""
    def handler(fs, c):
        c.sendall(os.urandom(64))
        c.close()

    fs = FakeServer(handler)
    try:
        cl = procs.rathole(client_config(fs.port, {"a": dict(local_port=1, token="t")},
                                         extra="retry_interval = 1"), name="c.toml")
        wait_until(lambda: len(fs.conns) >= 5, 20, what="five attempts")
        assert cl.alive()
        # the backoff: 0.5 s, then 1 s (retry_interval), +-20 %
        assert_paced(fs.times, 0.4, 3.0)
    finally:
        fs.stop()


def test_backoff_grows_and_resets_after_a_stable_channel(procs):
    """The reconnect backoff, as the reference's: 0.5 s, x3 per failure up
    to retry_interval (10 s here), +-20 %; it resets only when the control
    channel had lived more than 3 s, not merely because the server accepted
    it. The fake server plays, per attempt: close at once; close at once;
    accept the handshake and close at once; accept and hold 3.3 s, then
    close. The gaps it sees, from the end of each attempt to the next, are
    then about 0.5, 1.5, 4.5 and 0.5 s; they are compared with each other,
    with margins of 0.6 s and more, not with a clock. (A reset at the
    accepted handshake would make the third 0.5 s; no reset after the
    stable channel, the fourth 10 s.)"""
    plan = ["close", "close", "ack-close", "stable"]
    ends = {}

    def handler(fs, c):
        i = next(k for k, x in enumerate(fs.conns) if x is c)
        step = plan[i] if i < len(plan) else "close"
        if step != "close":
            read_exact(c, 37)
            nonce = os.urandom(32)
            c.sendall(control_hello(nonce))
            read_exact(c, 32)
            c.sendall(u32(0))                       # Ack::Ok
            if step == "stable":
                time.sleep(3.3)
        ends[i] = time.monotonic()
        c.close()

    fs = FakeServer(handler)
    try:
        procs.rathole(client_config(fs.port, {"a": dict(local_port=1, token="t")},
                                    extra="retry_interval = 10"), name="c.toml")
        wait_until(lambda: len(fs.conns) >= 5, 30, what="five attempts")
        assert not fs.errors, fs.errors
        g = [fs.times[i + 1] - ends[i] for i in range(4)]
        assert g[1] > g[0], f"no growth: {g}"
        assert g[2] > g[1] + 1.0, (f"no growth to ~4.5 s after the third failure (did the "
                                   f"handshake accepted then closed reset the backoff?): {g}")
        assert g[3] < g[1], f"a channel that lived 3.3 s did not reset the backoff: {g}"
    finally:
        fs.stop()


def test_client_survives_bad_udp_frame(procs):
    """A server sending a frame with a lying header length: our client closes
    that channel, logs it, and keeps its control channel."""
    echo = UdpEcho()
    state = {"key": None, "data": 0}

    def handler(fs, c):
        first = read_exact(c, 37)
        if first[:4] == u32(0):
            nonce = os.urandom(32)
            c.sendall(control_hello(nonce))
            state["key"] = read_exact(c, 32)
            c.sendall(u32(0) + u32(0))              # Ok, one CreateDataChannel
            time.sleep(8)
        else:
            state["data"] += 1
            c.sendall(u32(1))                       # StartForwardUdp
            c.sendall(b"\x0d" + b"\x00" * 40)       # 13 is no UdpHeader length
            time.sleep(3)

    fs = FakeServer(handler)
    try:
        cl = procs.rathole(client_config(fs.port, {"dns": dict(local_port=echo.port, token="t",
                                                               type="udp")}), name="c.toml")
        cl.wait_log("UDP data channel lost: malformed frame from the server", timeout=15)
        assert cl.alive()
        assert "control channel established" in cl.stderr
        assert "retrying" not in cl.stderr
    finally:
        fs.stop()
        echo.stop()


# ---- over TLS: Python's ssl (OpenSSL's records) against ours ----

TLS_VERSIONS = [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2]
BULK = 4 << 20
OP_IGNORE_UNEXPECTED_EOF = getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)


def tls_connector(pki, version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.path("ca.pem"))
    ctx.maximum_version = version
    ctx.options &= ~OP_IGNORE_UNEXPECTED_EOF     # unwrap() then needs our close_notify

    def connect(port, session=None):
        s = ctx.wrap_socket(plain_connect(port), server_hostname="localhost", session=session)
        assert s.version() == ("TLSv1.3" if version == ssl.TLSVersion.TLSv1_3 else "TLSv1.2")
        return s
    return connect


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=["tls1.3", "tls1.2"])
def test_hand_tls_client(procs, pki, version):
    """A visitor's megabytes through our server to a data channel that
    Python's ssl holds, resuming the control channel's session from our
    server's ticket, and back; then close_notify both ways."""
    sp, vp = free_port(), free_port()
    srv = procs.rathole(server_config(sp, {"svc": dict(bind_port=vp, token="tk")},
                                      transport=pki.tls_server()), name="s.toml")
    srv.wait_log("listening on 127.0.0.1:%d" % sp)
    connect = tls_connector(pki, version)
    ctl, key = hand_control_channel(sp, "svc", "tk", 8, connect)
    srv.wait_log("service svc: listening on")
    dc = connect(sp, session=ctl.session)
    assert dc.session_reused, "our server's ticket did not resume"
    dc.sendall(data_hello(key))
    visitor = socket.create_connection(("127.0.0.1", vp), timeout=10)
    assert read_exact(ctl, 4) == u32(0)         # CreateDataChannel for the visitor
    assert read_exact(dc, 4) == u32(0)          # StartForwardTcp
    up, down = os.urandom(BULK), os.urandom(BULK)
    sender = threading.Thread(target=visitor.sendall, args=(up,), daemon=True)
    sender.start()
    assert sha256(read_exact(dc, BULK)) == sha256(up)
    sender.join(10)
    sender = threading.Thread(target=dc.sendall, args=(down,), daemon=True)
    sender.start()
    assert sha256(read_exact(visitor, BULK)) == sha256(down)
    sender.join(10)
    # our close_notify must open under OpenSSL's records: unwrap() waits for it
    unwrapped = []
    closer = threading.Thread(target=lambda: unwrapped.append(dc.unwrap()), daemon=True)
    closer.start()
    assert recv_all(visitor) == b""             # their close_notify ended the channel
    visitor.close()
    closer.join(10)
    assert unwrapped, "no valid close_notify from our server"
    dc.close()
    ctl.close()
    assert srv.alive()


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=["tls1.3", "tls1.2"])
def test_fake_tls_server_drives_client(procs, pki, version):
    """Python's ssl as the server, issuing two session tickets after each
    TLS 1.3 handshake (our client keeps the first, then its records skip the
    second): the data channel resumes the control channel's session,
    megabytes go through our client to an echo service, then close_notify
    both ways."""
    echo = EchoServer()
    state = {"key": None, "echoed": None, "closed": False, "resumed": None}
    token = "client-token"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.path("server.pem"), pki.path("server.key"))
    ctx.maximum_version = version
    ctx.num_tickets = 2
    ctx.options &= ~OP_IGNORE_UNEXPECTED_EOF

    def handler(fs, raw):
        c = ctx.wrap_socket(raw, server_side=True)
        first = read_exact(c, 37)
        if first[:4] == u32(0):                      # control channel
            fake_control_channel(c, first, token, state, 10)
        else:                                        # data channel
            assert first[:5] == u32(1) + b"\x01" and first[5:] == state["key"]
            state["resumed"] = c.session_reused
            c.sendall(u32(0))                        # StartForwardTcp
            data = os.urandom(BULK)
            got = []
            for off in range(0, BULK, 1 << 16):      # one thread: write, then read back
                c.sendall(data[off:off + (1 << 16)])
                got.append(read_exact(c, 1 << 16))
            state["echoed"] = sha256(b"".join(got)) == sha256(data)
            c.unwrap()                               # ours must come back, valid
            state["closed"] = True
            raw.close()

    fs = FakeServer(handler)
    try:
        procs.rathole(client_config(fs.port, {"nas": dict(local_port=echo.port, token=token)},
                                    transport=pki.tls_client()), name="c.toml")
        wait_until(lambda: state["closed"] or fs.errors, 30, what="the echo and close_notify")
        assert not fs.errors, fs.errors
        assert state["echoed"] is True
        assert state["resumed"] is True, "the data channel did not resume"
    finally:
        fs.stop()
        echo.stop()
