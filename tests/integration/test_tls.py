"""The tls transport through the whole tunnel: real server and client
processes on loopback, certificates made at run time (the `pki` fixture)."""
import time

import pytest

from checks import (check_concurrent, check_download, check_echo, check_echo_bulk,
                    check_half_close)
from conftest import RATHOLE, free_port, port_open, run_rathole
from helpers import TamperRelay, Tunnel, echo_once, server_config, transfer_checked, wait_tunnel
from pki import PASSWORD
from proc_stats import is_asan


def tls_tunnel(procs, pki, local_port, p12="identity.p12", ca="ca.pem", hostname="localhost",
               client_extra=""):
    return Tunnel(procs, local_port=local_port,
                  transport_server=pki.tls_server(p12=p12),
                  transport_client=pki.tls_client(ca=ca, hostname=hostname),
                  svc_extra_client="retry_interval = 1\n" + client_extra)


def test_echo(procs, pki):
    t = check_echo(lambda port: tls_tunnel(procs, pki, port).start())
    t.client.wait_log("service echo: control channel established")
    assert "listening on 127.0.0.1:%d (transport tls)" % t.server_port in t.server.stderr


def test_hostname_from_remote_addr(procs, pki):
    """No hostname: the name checked is remote_addr's host, here the IP
    127.0.0.1, which the certificate holds as an IP subjectAltName."""
    check_echo(lambda port: tls_tunnel(procs, pki, port, hostname=None).start())


def test_legacy_pkcs12(procs, pki):
    """An archive encrypted with RC2/3DES (OpenSSL 1.1, Windows) works."""
    t = check_echo(lambda port: tls_tunnel(procs, pki, port, p12="legacy.p12").start())
    assert "legacy" not in t.server.stderr.lower() or "loaded OpenSSL's legacy provider" in t.server.stderr


def test_64mib_echo_checksum(procs, pki):
    check_echo_bulk(lambda port: tls_tunnel(procs, pki, port).start())


def test_64mib_download_checksum(procs, pki):
    check_download(lambda port: tls_tunnel(procs, pki, port).start())


def test_200_concurrent_connections(procs, pki):
    """200 visitors at once, each with its own bytes. Under ASan a TLS
    handshake costs about 4x the CPU: 200 data channels asked for at once on
    a loaded machine then miss the server's 5 s handshake deadline and their
    visitors their 10 s wait. There the visitors come 25 at a time (all 200
    stay connected together all the same)."""
    check_concurrent(lambda port: tls_tunnel(procs, pki, port).start(), 200,
                     wave=25 if is_asan(RATHOLE) else None)


def test_half_close(procs, pki):
    check_half_close(lambda port: tls_tunnel(procs, pki, port).start())


class RecordTamperRelay(TamperRelay):
    """Passes the server's TLS records on whole; past `after` bytes on one
    connection, holds two records, flips the last byte of the second (its
    authentication tag), waits for the client to have read everything
    before, and sends both at once: the client reads a good record and a
    bad one in the same read."""

    def __init__(self, target, after):
        self.partial = {}		# id(pair) -> bytes of a record not yet whole
        self.held = []
        super().__init__(target, after)

    def alter(self, pair, from_server, data):
        if not from_server or self.tampered:
            return data
        buf = self.partial.get(id(pair), b"") + data
        records = []
        while len(buf) >= 5 and len(buf) >= 5 + int.from_bytes(buf[3:5], "big"):
            n = 5 + int.from_bytes(buf[3:5], "big")
            records.append(buf[:n])
            buf = buf[n:]
        self.partial[id(pair)] = buf
        if pair.from_server <= self.after:
            return b"".join(records)
        self.held += records
        if len(self.held) < 2:
            return b""
        good, bad = self.held[0], self.held[1]
        self.tampered = True
        time.sleep(0.3)
        return good + bad[:-1] + bytes([bad[-1] ^ 0x40]) + b"".join(self.held[2:]) + buf


def test_tampered_record_closes_that_channel(procs, pki, echo):
    """A flipped byte in a record fails its authentication: the channel it
    came on ends with the error (plaintext read ahead before the bad record
    is delivered, then the error is reported, not taken for an end of
    stream), and the tunnel serves the next visitor."""
    t = tls_tunnel(procs, pki, echo.port)
    t.start_server()
    relay = RecordTamperRelay(t.server_port, after=1_000_000)
    try:
        t.client_text = t.client_text.replace(":%d\"" % t.server_port, ":%d\"" % relay.port)
        t.start_client()
        t.server.wait_log("service echo: listening on", timeout=15)
        wait_tunnel(t.service_port)
        with pytest.raises((AssertionError, OSError)):
            sent, got, n = transfer_checked(t.service_port, 8 << 20, timeout=20)
            assert sent == got
        assert relay.tampered
        t.client.wait_log("TLS read: a record failed authentication (bad_record_mac)", timeout=10)
        assert echo_once(t.service_port, b"still encrypted") == b"still encrypted"
        assert t.client.stderr.count("control channel established") == 1
    finally:
        relay.stop()


# ---- the client refuses the server: one clear line per attempt, retrying ----

@pytest.mark.parametrize("case,expect", [
    # the server sends its chain up to the CA, so OpenSSL sees a self-signed
    # certificate in it (without the CA in the chain: "unable to get local issuer")
    ("wrong_ca", "TLS: the server's certificate is not trusted (self-signed certificate in "
                 "certificate chain): set [client.transport.tls] trusted_root to the CA that "
                 "signed it"),
    ("wrong_hostname", "TLS: the server's certificate is not valid for \"wrong.example\" "
                       "(hostname mismatch): set [client.transport.tls] hostname to a name it holds"),
    ("expired", "TLS: the server's certificate is rejected (certificate has expired): "
                "renew it, or check the clocks"),
])
def test_client_refuses_certificate(procs, pki, case, expect):
    kw = {"wrong_ca": dict(ca="other-ca.pem"),
          "wrong_hostname": dict(hostname="wrong.example"),
          "expired": dict(p12="expired.p12")}[case]
    t = tls_tunnel(procs, pki, free_port(), **kw)
    t.start_server()
    if case == "expired":
        assert "the certificate in %s expired on" % pki.path("expired.p12") in t.server.stderr
    t.start_client()
    # the error, then a retry that fails the same way
    t.client.wait_log(expect, timeout=20, count=2)
    lines = [l for l in t.client.stderr.splitlines() if expect in l]
    assert "retrying in" in lines[0]
    # one line per attempt: nothing else at error level
    errors = [l for l in t.client.stderr.splitlines() if " ERROR " in l]
    assert all(expect in l for l in errors), errors
    # the server names the refusal, and never opens the service port
    t.server.wait_log("the client refused our certificate", timeout=10)
    assert "service echo: listening on" not in t.server.stderr
    assert not port_open(t.service_port)
    assert t.client.alive() and t.server.alive()


# ---- the server's identity cannot be used: exit 1 at start ----

@pytest.mark.parametrize("case", ["wrong_password", "missing", "directory", "not_pkcs12"])
def test_server_identity_errors(tmp_path, pki, case):
    garbage = tmp_path / "garbage.p12"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot a pkcs12 archive\n")
    p12, password, expect = {
        "wrong_password": (pki.path("identity.p12"), "wrong",
                           "pkcs12_password does not decrypt %s: check [server.transport.tls] "
                           "pkcs12_password" % pki.path("identity.p12")),
        "missing": (str(tmp_path / "nowhere.p12"), PASSWORD,
                    "cannot read the pkcs12 file %s: No such file or directory"
                    % (tmp_path / "nowhere.p12")),
        "directory": (str(tmp_path), PASSWORD, "is a directory"),
        "not_pkcs12": (str(garbage), PASSWORD, "%s is not a PKCS#12 archive" % garbage),
    }[case]
    port = free_port()
    text = server_config(port, {"echo": dict(bind_port=free_port(), token="t")},
                         transport='[server.transport]\ntype = "tls"\n[server.transport.tls]\n'
                                   f'pkcs12 = "{p12}"\npkcs12_password = "{password}"\n')
    r = run_rathole([], text, tmp_path, name="server.toml")
    assert r.returncode == 1, r.stderr
    assert expect in r.stderr
    # one error, not a cascade, and no listening socket was ever opened
    assert r.stderr.count(" ERROR ") == 1, r.stderr
    assert "listening on" not in r.stderr
    # --check reads the archive as a start does: the same error, before a restart
    r = run_rathole(["--check"], text, tmp_path, name="server.toml")
    assert r.returncode == 1 and "valid" not in r.stdout, r.stdout
    assert "server.toml: [server.transport]: " in r.stderr and expect in r.stderr, r.stderr


def test_plain_client_to_tls_server(procs, pki):
    """Transport types that differ: both sides say so, the client retries."""
    t = Tunnel(procs, local_port=free_port(), transport_server=pki.tls_server(),
               svc_extra_client="retry_interval = 1\n")
    t.start_server()
    t.start_client()
    t.server.wait_log("tls handshake failed: ", timeout=15)
    t.server.wait_log("does the peer speak TLS? check both transport types", timeout=15)
    t.client.wait_log("retrying in", timeout=15, count=2)
    assert not port_open(t.service_port)
