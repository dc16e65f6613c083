"""UDP services through the tunnel."""
import os
import socket
import time

import pytest

from conftest import free_port, wait_until
from helpers import PathRelay, UdpEcho, client_config, server_config


def udp_roundtrip(port, payload, host="127.0.0.1", timeout=3, sock=None):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = sock or socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(payload, (host, port))
        return s.recvfrom(65535)[0]
    except socket.timeout:
        return None
    finally:
        if sock is None:
            s.close()


def wait_udp(port, host="127.0.0.1", timeout=15):
    wait_until(lambda: udp_roundtrip(port, b"ping", host, timeout=0.5) == b"ping", timeout,
               what=f"UDP through {host}:{port}")


@pytest.fixture
def uecho():
    e = UdpEcho()
    yield e
    e.stop()


def start_udp(procs, local_port, svc_extra_client="", bind_host="127.0.0.1", local_host="127.0.0.1",
              server_host="127.0.0.1", svc_extra_server=""):
    sp = free_port(host=server_host)
    vp = free_port(socket.SOCK_DGRAM, host=bind_host)
    srv = procs.rathole(server_config(sp, {"dns": dict(bind_port=vp, bind_host=bind_host if ":" not in bind_host else f"[{bind_host}]",
                                                       token="u", type="udp",
                                                       extra=svc_extra_server)},
                                      host=server_host if ":" not in server_host else f"[{server_host}]"),
                        name="s.toml")
    cl = procs.rathole(client_config(sp, {"dns": dict(local_port=local_port, token="u", type="udp",
                                                      local_host=local_host if ":" not in local_host else f"[{local_host}]",
                                                      extra=svc_extra_client)},
                                     host=server_host if ":" not in server_host else f"[{server_host}]"),
                       name="c.toml")
    srv.wait_log("service dns: listening on", timeout=15)
    wait_udp(vp, bind_host)
    return srv, cl, vp


def test_200_visitors_get_their_own_replies(procs, uecho):
    srv, cl, vp = start_udp(procs, uecho.port)
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(200)]
    try:
        for rnd in range(3):
            for i, s in enumerate(socks):
                s.sendto(b"visitor %d round %d" % (i, rnd), ("127.0.0.1", vp))
            ok = 0
            deadline = time.monotonic() + 10     # the whole round, not per socket
            for i, s in enumerate(socks):
                s.settimeout(max(0.05, deadline - time.monotonic()))
                got = set()
                # each socket must get exactly its own reply (and only it)
                try:
                    got.add(s.recvfrom(100)[0])
                except socket.timeout:
                    pass
                ok += got == {b"visitor %d round %d" % (i, rnd)}
            assert ok == 200, f"round {rnd}: {ok} of 200"
        # 200 distinct visitor addresses, 200 distinct local sockets at the service
        assert len(uecho.peers) >= 200
    finally:
        for s in socks:
            s.close()


def test_ipv6_visitors(procs):
    e = UdpEcho(host="::1")
    try:
        srv, cl, vp = start_udp(procs, e.port, bind_host="::1", local_host="::1", server_host="::1")
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        for i in range(10):
            assert udp_roundtrip(vp, b"six %d" % i, "::1", sock=s) == b"six %d" % i
        s.close()
    finally:
        e.stop()


def test_largest_datagram_intact(procs, uecho):
    srv, cl, vp = start_udp(procs, uecho.port)
    big = os.urandom(65507)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    got = None
    for _ in range(5):      # UDP may lose one; it must never arrive corrupted
        got = udp_roundtrip(vp, big, sock=s)
        if got is not None:
            break
    s.close()
    assert got == big
    # and the stream of frames is still in sync afterwards
    assert udp_roundtrip(vp, b"small after big") == b"small after big"


def udp_port_in_use(port):
    """Whether a UDP socket of this network namespace is bound to 127.0.0.1:port
    (/proc/net/udp: the local address is the second field)."""
    want = "0100007F:%04X" % port
    with open("/proc/net/udp") as f:
        next(f)
        return any(line.split()[1] == want for line in f)


def test_idle_expiry(procs):
    """A visitor silent for udp_idle_timeout loses its local socket (closed,
    seen in /proc/net/udp), and its next datagram gets a new one. The local
    service answers with the source port it saw, which names the socket."""
    seen = UdpEcho(reply=lambda d, a: d if d == b"ping" else b"%s from %d" % (d, a[1]))
    try:
        srv, cl, vp = start_udp(procs, seen.port, svc_extra_client="udp_idle_timeout = 1")
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        got = udp_roundtrip(vp, b"first", sock=s)
        assert got and got.startswith(b"first from "), got
        port = int(got.rsplit(b" ", 1)[1])
        assert udp_port_in_use(port)
        wait_until(lambda: not udp_port_in_use(port), 10, interval=0.1,
                   what="the idle visitor's local socket to be closed")
        got = udp_roundtrip(vp, b"second", sock=s)
        assert got and got.startswith(b"second from "), got
        s.close()
    finally:
        seen.stop()


def test_session_cap_evicts_oldest(procs):
    """udp_max_sessions = 10 and 30 visitors: each new visitor past the cap
    takes the socket of the least recently active one. The local service
    answers with the source port it saw, so each visitor learns which local
    socket carried it: an evicted visitor comes back on a new socket, the
    recent ones keep theirs."""
    seen = UdpEcho(reply=lambda d, a: d if d == b"ping" else b"%s from %d" % (d, a[1]))
    try:
        srv, cl, vp = start_udp(procs, seen.port, svc_extra_client="udp_max_sessions = 10")
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(30)]

        def local_port_of(i, tag):
            got = udp_roundtrip(vp, b"v%d %s" % (i, tag), sock=socks[i])
            assert got and got.startswith(b"v%d %s from " % (i, tag)), got
            return int(got.rsplit(b" ", 1)[1])

        try:
            first = [local_port_of(i, b"a") for i in range(30)]
            # visitors 20..29 hold the 10 sessions now; 29 is the most recent
            assert local_port_of(29, b"b") == first[29]
            assert local_port_of(28, b"b") == first[28]
            # visitor 0 was evicted long ago: a new local socket carries it
            assert local_port_of(0, b"b") != first[0]
            # the ping of wait_udp, 30 visitors, visitor 0 again: nothing
            # else got a new socket
            assert len(seen.peers) == 1 + 30 + 1
            cl.wait_log("more than 10 UDP visitors at once", timeout=5)
        finally:
            for s in socks:
                s.close()
    finally:
        seen.stop()


def test_allow_deny(procs):
    """allow/deny on a udp service: datagrams from a denied source, or from
    one outside the allow list, never reach the local service; the others
    pass. (Datagrams of one socket are handled in order, so once a later
    allowed datagram came back, the refused one was handled before it.)"""
    got = []
    svc = UdpEcho(reply=lambda d, a: (got.append(d), d)[1])
    try:
        srv, cl, vp = start_udp(procs, svc.port,
                                svc_extra_server='allow = ["127.0.0.0/25"]\ndeny = ["127.0.0.66"]')

        def sock_from(src):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((src, 0))
            return s
        socks = {src: sock_from(src) for src in ("127.0.0.5", "127.0.0.66", "127.0.0.200")}
        try:
            for refused in ("127.0.0.66", "127.0.0.200"):
                socks[refused].sendto(b"from " + refused.encode(), ("127.0.0.1", vp))
                assert udp_roundtrip(vp, b"allowed after " + refused.encode(),
                                     sock=socks["127.0.0.5"]) == b"allowed after " + refused.encode()
            assert not [d for d in got if d.startswith(b"from ")], got
            socks["127.0.0.66"].settimeout(0.2)
            with pytest.raises(socket.timeout):
                socks["127.0.0.66"].recvfrom(100)
        finally:
            for s in socks.values():
                s.close()
    finally:
        svc.stop()


def cut_udp_channels(relay):
    """Cuts every connection whose server side began with StartForwardUdp,
    chosen before cutting: the replacement the server takes at once must
    survive. Returns how many."""
    targets = [p for p in list(relay.pairs) if bytes(p.first[:4]) == b"\x01\x00\x00\x00"]
    for pair in targets:
        pair.cut()
    return len(targets)


def test_data_channel_killed_recovers(procs, uecho):
    sp = free_port()
    vp = free_port(socket.SOCK_DGRAM)
    srv = procs.rathole(server_config(sp, {"dns": dict(bind_port=vp, token="u", type="udp")}),
                        name="s.toml")
    srv.wait_log("listening on 127.0.0.1:%d" % sp)
    relay = PathRelay(sp)
    try:
        procs.rathole(client_config(relay.port, {"dns": dict(local_port=uecho.port, token="u",
                                                             type="udp")}), name="c.toml")
        wait_udp(vp)
        assert cut_udp_channels(relay) == 1
        srv.wait_log("UDP data channel lost", timeout=10)
        # datagrams in flight may be lost, but the service comes back
        wait_udp(vp, timeout=15)
    finally:
        relay.stop()


def test_type_mismatch_is_reported(procs, uecho):
    sp, vp = free_port(), free_port()
    procs.rathole(server_config(sp, {"dns": dict(bind_port=vp, token="u", type="tcp")}), name="s.toml")
    cl = procs.rathole(client_config(sp, {"dns": dict(local_port=uecho.port, token="u", type="udp")}),
                       name="c.toml")
    wait_until(lambda: _poke(vp), 10, what="the service port")
    cl.wait_log("the server forwards tcp but this service is udp here", timeout=10)


def _poke(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
