"""Our TLS against a TLS stack that is not OpenSSL (issue 23, part 2).

GnuTLS terminates TLS between rathole's client and rathole's server: a small
relay (gnutls_relay.c, built here with libgnutls28-dev) is the client's TLS
server and the server's TLS client, and passes the plaintext on. So both of
our TLS ends, whose records are our own after the handshake (src/tls13.c),
talk to GnuTLS: its session tickets (our client resumes with them, and
GnuTLS resumes with our server's), its KeyUpdates, which ask for ours
(every 256 KiB it sends, at most one per 150 ms), and bulk data both ways."""
import hashlib
import os
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

from conftest import free_port, wait_port
from helpers import (EchoServer, Tunnel, accepted, echo_once, listen_tcp, recv_digest,
                     transfer_checked, wait_tunnel, wait_until)

HERE = os.path.dirname(os.path.abspath(__file__))
KEYUPDATE_EVERY = 256 << 10
LINE = re.compile(r"conn (\d+) down_resumed (\d) up_resumed (\d) ku_sent_down (\d+) "
                  r"ku_sent_up (\d+) ku_recv_down (\d+) ku_recv_up (\d+) bytes_down (\d+) "
                  r"bytes_up (\d+) end (.*)")


@pytest.fixture(scope="module")
def relay_bin(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler to build the GnuTLS relay")
    if subprocess.run(["pkg-config", "--exists", "gnutls"]).returncode != 0 \
            and not os.path.exists("/usr/include/gnutls/gnutls.h"):
        pytest.skip("GnuTLS headers are not installed (apt-get install libgnutls28-dev; "
                    ".ci/run installs it)")
    out = str(tmp_path_factory.mktemp("gnutls") / "gnutls_relay")
    r = subprocess.run([cc, "-O1", "-o", out, os.path.join(HERE, "gnutls_relay.c"),
                        "-lgnutls", "-lpthread"], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        pytest.fail("cannot build the GnuTLS relay:\n" + r.stderr)
    return out


def relayed_tunnel(procs, pki, relay_bin, local_port, record_layer=None):
    """A tls tunnel whose client reaches the server through the GnuTLS relay;
    record_layer: the [*.transport.tls] key on both ends (None: not set)."""
    extra = 'record_layer = "%s"\n' % record_layer if record_layer else ""
    t = Tunnel(procs, local_port=local_port, transport_server=pki.tls_server() + extra,
               transport_client=pki.tls_client() + extra,
               svc_extra_client="retry_interval = 1\n")
    relay_port = free_port()
    t.client_text = t.client_text.replace("127.0.0.1:%d" % t.server_port,
                                          "127.0.0.1:%d" % relay_port, 1)
    relay = procs.start([relay_bin, str(relay_port), str(t.server_port), pki.path("server.pem"),
                         pki.path("server.key"), pki.path("ca.pem"), "localhost",
                         str(KEYUPDATE_EVERY)])
    wait_port(relay_port)
    return t, relay


def connections(relay):
    return [dict(zip(("id", "down_resumed", "up_resumed", "ku_sent_down", "ku_sent_up",
                      "ku_recv_down", "ku_recv_up", "bytes_down", "bytes_up"),
                     map(int, m.groups()[:9])), end=m.group(10))
            for m in LINE.finditer(relay.stdout)]


def bulk_connections(relay):
    return [c for c in connections(relay) if c["bytes_up"] >= 3 << 20]


def test_through_gnutls(procs, pki, relay_bin):
    """Bulk echo through GnuTLS, visitors one after the other: every byte
    comes back, the resumptions happen both ways, GnuTLS's KeyUpdates reach
    our records and ours answer them (GnuTLS counts them), and each bulk
    connection ends with close_notify, not an error."""
    e = EchoServer()
    try:
        t, relay = relayed_tunnel(procs, pki, relay_bin, e.port)
        t.start()
        wait_tunnel(t.service_port, timeout=30)
        for i in range(4):
            # paced over about a second: KeyUpdates go at most every 150 ms
            sent, got, n = transfer_checked(t.service_port, 3 << 20, timeout=120, pace=0.3)
            assert n == 3 << 20 and sent == got, "transfer %d" % i
        assert echo_once(t.service_port, b"last") == b"last"
        t.client.stop()
        wait_until(lambda: len(bulk_connections(relay)) >= 4, 15,
                   what="the relay's lines of the 4 bulk connections")
    finally:
        e.stop()
    conns = connections(relay)
    bulk = bulk_connections(relay)
    assert len(bulk) == 4, relay.stdout
    for c in bulk:
        assert c["end"] == "closed", c
        # GnuTLS sent KeyUpdates that ask for ours, each way; ours answered
        # (several requests before our next record take one answer, RFC
        # 8446, 4.6.3) and came under the right keys, or GnuTLS would have
        # failed the connection
        assert c["ku_sent_down"] >= 2 and c["ku_sent_up"] >= 2, c
        assert c["ku_recv_down"] >= 1 and c["ku_recv_up"] >= 1, c
    # our client resumed with GnuTLS's tickets; GnuTLS with our server's
    assert any(c["down_resumed"] for c in conns), relay.stdout
    assert any(c["up_resumed"] for c in conns), relay.stdout
    # and the records were ours on both ends, not OpenSSL's
    assert "the records are ours from here on" in t.client.stderr
    assert "the records are ours from here on" in t.server.stderr


class DigestSink:
    """A local service that reads each connection to its end and answers
    with the byte count and SHA-256 of what came."""

    def __init__(self):
        self.sock = listen_tcp()
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        for c in accepted(self.sock, lambda: self.stopping):
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _serve(c):
        with c:
            c.settimeout(60)
            try:
                n, digest = recv_digest(c)
                c.sendall(b"%d %s" % (n, digest.encode()))
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        self.sock.close()


def upload(port, size, pace=0.0):
    """Sends size bytes to the sink through the tunnel (pace: seconds between
    MiBs); returns whether the sink's count and digest are those sent."""
    data = os.urandom(1 << 20)
    h = hashlib.sha256()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        for _ in range(size >> 20):
            s.sendall(data)
            h.update(data)
            time.sleep(pace)
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while True:
            d = s.recv(4096)
            if not d:
                break
            answer += d
    return answer == b"%d %s" % (size, h.hexdigest().encode())


@pytest.mark.parametrize("record_layer", ["rathole", "openssl"])
def test_upload_key_updates(procs, pki, relay_bin, record_layer):
    """Visitor -> service only: GnuTLS sends our client KeyUpdates asking
    for ours (every 256 KiB, 150 ms apart) while our client sends nothing
    back until the end. The answers show whose records they are: our record layer owes its
    KeyUpdate until its next record, so the requests get one answer (RFC
    8446, 4.6.3 allows it); OpenSSL answers each at once, and
    record_layer = "openssl" leaves every record to OpenSSL."""
    sink = DigestSink()
    try:
        t, relay = relayed_tunnel(procs, pki, relay_bin, sink.port, record_layer)
        t.start()
        wait_until(lambda: upload(t.service_port, 1 << 20), 30, interval=0.2,
                   what="the tunnel to the sink")
        assert upload(t.service_port, 4 << 20, pace=0.3), relay.stdout
        wait_until(lambda: any(c["bytes_down"] >= 4 << 20 for c in connections(relay)), 15,
                   what="the relay's line of the upload")
    finally:
        sink.stop()
    c = next(c for c in connections(relay) if c["bytes_down"] >= 4 << 20)
    assert c["end"] == "closed", c
    assert c["ku_sent_down"] >= 3, c
    if record_layer == "openssl":
        assert c["ku_recv_down"] == c["ku_sent_down"], c
        assert "the records are ours" not in t.client.stderr + t.server.stderr
    else:
        assert c["ku_recv_down"] == 1, c
        assert "the records are ours from here on" in t.client.stderr
