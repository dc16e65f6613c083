"""Our TLS against a TLS stack that is not OpenSSL (issue 23, part 2).

GnuTLS terminates TLS between rathole's client and rathole's server: a small
relay (gnutls_relay.c, built here with libgnutls28-dev) is the client's TLS
server and the server's TLS client, and passes the plaintext on. So both of
our TLS ends, whose records are our own after the handshake (src/tls13.c),
talk to GnuTLS: its session tickets (our client resumes with them, and
GnuTLS resumes with our server's), its KeyUpdates, which ask for ours
(every 256 KiB it sends), and bulk data both ways."""
import os
import re
import shutil
import subprocess

import pytest

from conftest import free_port, wait_port
from helpers import EchoServer, Tunnel, echo_once, transfer_checked, wait_tunnel, wait_until

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


def relayed_tunnel(procs, pki, relay_bin, local_port, client_extra=""):
    """A tls tunnel whose client reaches the server through the GnuTLS relay."""
    t = Tunnel(procs, local_port=local_port, transport_server=pki.tls_server(),
               transport_client=pki.tls_client(), svc_extra_client="retry_interval = 1\n",
               client_extra=client_extra)
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
            sent, got, n = transfer_checked(t.service_port, 3 << 20, timeout=120)
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
        assert c["ku_sent_down"] >= 8 and c["ku_sent_up"] >= 8, c
        assert c["ku_recv_down"] >= 1 and c["ku_recv_up"] >= 1, c
    # our client resumed with GnuTLS's tickets; GnuTLS with our server's
    assert any(c["down_resumed"] for c in conns), relay.stdout
    assert any(c["up_resumed"] for c in conns), relay.stdout
    # and the records were ours on both ends, not OpenSSL's
    assert "the records are ours from here on" in t.client.stderr
    assert "the records are ours from here on" in t.server.stderr
