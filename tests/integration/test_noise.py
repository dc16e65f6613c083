"""The Noise transport through the whole tunnel, and --genkey."""
import base64
import re
import socket
import subprocess

import pytest

from conftest import RATHOLE, free_port, run_rathole
from helpers import TamperRelay, Tunnel, echo_once, transfer_checked, wait_tunnel


def genkey():
    """A --genkey pair (private, public) as printed: base64 of 32 bytes each.
    Whether the public key belongs to the private one is what the tunnels
    below find out (test_genkey_pair_in_a_tunnel first)."""
    r = subprocess.run([RATHOLE, "--genkey"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    m = re.fullmatch(r"Private Key:\n([A-Za-z0-9+/]{43}=)\n\nPublic Key:\n([A-Za-z0-9+/]{43}=)\n",
                     r.stdout)
    assert m, r.stdout
    assert all(len(base64.b64decode(k, validate=True)) == 32 for k in m.groups())
    return m.group(1), m.group(2)


def noise_block(side, pattern=None, local=None, remote=None):
    lines = [f"[{side}.transport]", 'type = "noise"', f"[{side}.transport.noise]"]
    if pattern:
        lines.append(f'pattern = "{pattern}"')
    if local:
        lines.append(f'local_private_key = "{local}"')
    if remote:
        lines.append(f'remote_public_key = "{remote}"')
    return "\n".join(lines) + "\n"


def noise_tunnel(procs, echo, pattern):
    s_priv, s_pub = genkey()
    c_priv, c_pub = genkey()
    if pattern == "Noise_NK_25519_ChaChaPoly_BLAKE2s":
        server = noise_block("server", None, s_priv)
        client = noise_block("client", None, None, s_pub)
    elif pattern.startswith("Noise_XX"):
        server = noise_block("server", pattern, s_priv)
        client = noise_block("client", pattern, c_priv)
    else:  # KK: both know each other
        server = noise_block("server", pattern, s_priv, c_pub)
        client = noise_block("client", pattern, c_priv, s_pub)
    t = Tunnel(procs, local_port=echo.port, transport_server=server, transport_client=client)
    t.start()
    wait_tunnel(t.service_port)
    return t


def test_genkey_pair_in_a_tunnel(procs, echo):
    """The pair --genkey prints works: a server holding only the printed
    private key and a client holding only the printed public key complete
    an NK handshake (which fails when the public key is not the private
    key's) and forward bytes."""
    priv, pub = genkey()
    t = Tunnel(procs, local_port=echo.port, transport_server=noise_block("server", None, priv),
               transport_client=noise_block("client", None, None, pub)).start()
    wait_tunnel(t.service_port)
    assert echo_once(t.service_port, b"keys that fit") == b"keys that fit"
    assert "noise handshake failed" not in t.client.stderr + t.server.stderr


PATTERNS = ["Noise_NK_25519_ChaChaPoly_BLAKE2s", "Noise_XX_25519_ChaChaPoly_BLAKE2s",
            "Noise_KK_25519_AESGCM_SHA256"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_noise_tunnel(procs, echo, pattern):
    t = noise_tunnel(procs, echo, pattern)
    assert echo_once(t.service_port, b"encrypted hello") == b"encrypted hello"
    sent, got, n = transfer_checked(t.service_port, 64 << 20)
    assert n == 64 << 20 and sent == got
    # many connections at once
    socks = [socket.create_connection(("127.0.0.1", t.service_port), timeout=10) for _ in range(200)]
    for i, s in enumerate(socks):
        s.sendall(b"conn %d" % i)
    for i, s in enumerate(socks):
        want = b"conn %d" % i
        got = b""
        while len(got) < len(want):
            d = s.recv(100)
            if not d:
                break
            got += d
        assert got == want
        s.close()


def test_server_generates_key_and_logs_it(procs, echo):
    sp = free_port()
    srv = procs.rathole(f'[server]\nbind_addr = "127.0.0.1:{sp}"\n' + noise_block("server") +
                        f'[server.services.echo]\ntoken = "t"\nbind_addr = "127.0.0.1:{free_port()}"\n',
                        name="s.toml")
    srv.wait_log("listening on")
    m = re.search(r"([A-Za-z0-9+/]{43}=)", srv.stderr)
    assert m, srv.stderr
    assert "public key" in srv.stderr.lower()


def test_wrong_remote_public_key(procs, echo):
    s_priv, s_pub = genkey()
    _, other_pub = genkey()
    t = Tunnel(procs, local_port=echo.port,
               transport_server=noise_block("server", None, s_priv),
               transport_client=noise_block("client", None, None, other_pub))
    t.start_server()
    t.start_client()
    t.client.wait_log("noise handshake failed", timeout=15)
    t.server.wait_log("noise handshake failed", timeout=15)
    t.client.wait_log("retrying in", timeout=5)
    assert t.server.alive() and t.client.alive()
    assert "service echo: listening on" not in t.server.stderr


def test_tampered_ciphertext_closes_that_channel(procs, echo):
    s_priv, s_pub = genkey()
    sp, vp = free_port(), free_port()
    srv = procs.rathole(f'[server]\nbind_addr = "127.0.0.1:{sp}"\n' + noise_block("server", None, s_priv) +
                        f'[server.services.echo]\ntoken = "t"\nbind_addr = "127.0.0.1:{vp}"\n', name="s.toml")
    srv.wait_log("listening on 127.0.0.1:%d" % sp)
    relay = TamperRelay(sp)
    try:
        cl = procs.rathole(f'[client]\nremote_addr = "127.0.0.1:{relay.port}"\n' +
                           noise_block("client", None, None, s_pub) +
                           f'[client.services.echo]\ntoken = "t"\nlocal_addr = "127.0.0.1:{echo.port}"\n',
                           name="c.toml")
        wait_tunnel(vp)
        with pytest.raises((AssertionError, OSError)):
            sent, got, n = transfer_checked(vp, 4 << 20, timeout=20)
            assert sent == got
        assert relay.tampered
        cl.wait_log("noise: message authentication failed", timeout=10)
        # only that channel died: the tunnel serves the next visitor
        assert echo_once(vp, b"still encrypted") == b"still encrypted"
        assert cl.stderr.count("control channel established") == 1
    finally:
        relay.stop()


def test_genkey_x448_not_supported(tmp_path):
    r = run_rathole(["--genkey", "x448"])
    assert r.returncode != 0
    assert "not supported" in r.stderr
