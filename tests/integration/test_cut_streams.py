"""A stream cut on the path between client and server (issue 23, part 4).

A TCP FIN is not authenticated: anyone on the path can end a data channel
early. Over tls (close_notify) and websocket (the close frame) the end of a
stream is announced inside the protocol, so a bare FIN means the stream was
cut: both rathole processes then reset their side (the visitor and the local
service see ECONNRESET) instead of passing the end on as a clean FIN that
would make a truncated stream look complete. A clean end (close_notify or
the close frame, then the FIN) still reaches both sides as a clean EOF.

The path runs through a PathRelay (helpers.py) that cuts one data channel by
shutting down both of its TCP connections: each rathole process receives a
FIN without the protocol's end message, as from an attacker on the path."""
import os
import socket

import pytest

from helpers import PathRelay, Tunnel, end_seen, listen_tcp, recv_all, recv_exact
from test_noise import genkey, noise_block

# tls_openssl: OpenSSL keeps the records on both sides (record_layer)
VARIANTS = ["tls", "tls_openssl", "websocket", "websocket_tls"]
BULK = 200_000


def transport_blocks(pki, variant):
    if variant == "tls":
        return pki.tls_server(), pki.tls_client()
    if variant == "tls_openssl":
        # the [*.transport.tls] section is the last of each block
        return (pki.tls_server() + 'record_layer = "openssl"\n',
                pki.tls_client() + 'record_layer = "openssl"\n')
    if variant == "websocket":
        return ('[server.transport]\ntype = "websocket"\n[server.transport.websocket]\n'
                'tls = false\n',
                '[client.transport]\ntype = "websocket"\n[client.transport.websocket]\n'
                'tls = false\n')
    return (pki.tls_server(kind="websocket", ws_tls=True),
            pki.tls_client(kind="websocket", ws_tls=True))


def start_through_relay(procs, blocks, local_port, relay_cls=PathRelay):
    """Server and client of one transport (its two config blocks) with a
    PathRelay between them."""
    ts, tc = blocks
    t = Tunnel(procs, local_port=local_port, transport_server=ts, transport_client=tc)
    t.start_server()
    relay = relay_cls(t.server_port)
    old = f'remote_addr = "127.0.0.1:{t.server_port}"'
    assert old in t.client_text
    t.client_text = t.client_text.replace(old, f'remote_addr = "127.0.0.1:{relay.port}"')
    t.start_client()
    t.server.wait_log(f"service {t.name}: listening on", timeout=15)
    t.client.wait_log(f"service {t.name}: control channel established", timeout=15)
    return t, relay


def open_connection(t, ls):
    """A visitor and the local service's side of it, with bytes carried both
    ways (so the data channel is relaying)."""
    v = socket.create_connection(("127.0.0.1", t.service_port), timeout=15)
    loc, _ = ls.accept()
    loc.settimeout(15)
    up, down = os.urandom(BULK), os.urandom(BULK)
    v.sendall(up)
    assert recv_exact(loc, BULK) == up
    loc.sendall(down)
    assert recv_exact(v, BULK) == down
    return v, loc


def carrier(relay, before):
    """The one path pair that carried the visitor's BULK bytes since the
    snapshot before ({id(pair): bytes from the server})."""
    grown = [p for p in list(relay.pairs) if p.from_server - before.get(id(p), 0) >= BULK]
    assert len(grown) == 1, [(p.from_server, before.get(id(p))) for p in relay.pairs]
    return grown[0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_cut_data_channel_resets_both_sides(procs, pki, variant):
    """The data channel cut mid-stream: the visitor (behind the server) and
    the local service (behind the client) both see a reset, not a clean EOF."""
    ls = listen_tcp(backlog=8, timeout=15)
    t, relay = start_through_relay(procs, transport_blocks(pki, variant), ls.getsockname()[1])
    v = loc = None
    try:
        before = {id(p): p.from_server for p in list(relay.pairs)}
        v, loc = open_connection(t, ls)
        carrier(relay, before).cut()
        assert end_seen(v) == "reset", "the visitor took the cut stream for a complete one"
        assert end_seen(loc) == "reset", "the local service took the cut stream for a complete one"
        # the tunnel itself goes on
        v2, loc2 = open_connection(t, ls)
        v2.close()
        loc2.close()
        assert t.server.alive() and t.client.alive()
    finally:
        for s in (v, loc):
            if s:
                s.close()
        relay.stop()
        ls.close()


@pytest.mark.parametrize("variant", VARIANTS)
def test_clean_end_is_a_clean_eof(procs, pki, variant):
    """Ends that the peers announce (close_notify, the close frame) stay clean
    FINs both ways: the visitor half-closes, the local service sees a clean
    EOF, replies and closes, and the visitor gets the reply and a clean EOF.
    Then the same with the local service ending first."""
    ls = listen_tcp(backlog=8, timeout=15)
    t, relay = start_through_relay(procs, transport_blocks(pki, variant), ls.getsockname()[1])
    conns = []
    try:
        v, loc = open_connection(t, ls)
        conns += [v, loc]
        v.sendall(b"last words")
        v.shutdown(socket.SHUT_WR)
        assert recv_all(loc) == b"last words"      # a clean EOF ends it (no reset)
        loc.sendall(b"the reply")
        loc.close()
        assert recv_all(v) == b"the reply"
        assert end_seen(v) == "eof"

        v, loc = open_connection(t, ls)
        conns += [v, loc]
        loc.sendall(b"bye")
        loc.shutdown(socket.SHUT_WR)
        assert recv_all(v) == b"bye"
        v.sendall(b"bye too")
        v.close()
        assert recv_all(loc) == b"bye too"
        assert end_seen(loc) == "eof"
    finally:
        for s in conns:
            s.close()
        relay.stop()
        ls.close()


class ArmedTamperRelay(PathRelay):
    """Flips a bit in the next bytes from the server on the pair armed;
    passes resets on."""
    armed = None
    pass_resets = True

    def alter(self, pair, from_server, data):
        if from_server and pair is self.armed:
            self.armed = None
            data = data[:-1] + bytes([data[-1] ^ 0x40])
        return data


def test_noise_tells_tampering_not_a_cut(procs):
    """What noise can tell (docs/security.md): it has no close message, and
    neither has rathole's wire protocol, so a cut between two records is
    passed on as a clean end (the known limit: both sides see an EOF); a
    changed byte fails the record, and both sides are reset."""
    s_priv, s_pub = genkey()
    ls = listen_tcp(backlog=8, timeout=15)
    t, relay = start_through_relay(
        procs, (noise_block("server", local=s_priv), noise_block("client", remote=s_pub)),
        ls.getsockname()[1], relay_cls=ArmedTamperRelay)
    conns = []
    try:
        before = {id(p): p.from_server for p in list(relay.pairs)}
        v, loc = open_connection(t, ls)
        conns += [v, loc]
        carrier(relay, before).cut()
        assert end_seen(v) == "eof" and end_seen(loc) == "eof"

        before = {id(p): p.from_server for p in list(relay.pairs)}
        v, loc = open_connection(t, ls)
        conns += [v, loc]
        relay.armed = carrier(relay, before)
        v.sendall(b"changed on the way")
        assert end_seen(loc) == "reset", "the local service took a tampered stream's end as clean"
        assert end_seen(v) == "reset", "the visitor took a tampered stream's end as clean"
        t.client.wait_log("noise: message authentication failed", timeout=10)
    finally:
        for s in conns:
            s.close()
        relay.stop()
        ls.close()
