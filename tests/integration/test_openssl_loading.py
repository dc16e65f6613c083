"""OpenSSL is loaded only when a transport needs it (src/ossl.h).

A server or client on the tcp transport never maps libcrypto or libssl; noise,
tls and websocket load them when the transport is built, and say clearly when
they cannot. The last test hides libcrypto in a private mount namespace (root
and unshare(1) needed, skipped otherwise)."""
import os
import shutil
import subprocess

import pytest

from conftest import RATHOLE
from helpers import Tunnel, echo_once, wait_tunnel
from test_noise import genkey, noise_block


def mapped_libraries(pid):
    with open(f"/proc/{pid}/maps") as f:
        return {line.split()[-1] for line in f if "/" in line.split()[-1]}


def openssl_mapped(pid):
    return sorted(p for p in mapped_libraries(pid)
                  if os.path.basename(p).startswith(("libcrypto.so", "libssl.so")))


def dynamically_linked(pid):
    return any(os.path.basename(p).startswith("libc.so") for p in mapped_libraries(pid))


def noise_pair(procs, echo):
    """A tunnel (not started) on the noise transport's default pattern."""
    s_priv, s_pub = genkey()
    return Tunnel(procs, local_port=echo.port,
                  transport_server=noise_block("server", None, s_priv),
                  transport_client=noise_block("client", None, None, s_pub))


def test_tcp_transport_does_not_map_openssl(procs, echo):
    t = Tunnel(procs, local_port=echo.port).start()
    wait_tunnel(t.service_port)
    assert echo_once(t.service_port, b"plain") == b"plain"
    for p in (t.server, t.client):
        assert openssl_mapped(p.pid) == [], p.args
    if not dynamically_linked(t.server.pid):
        pytest.skip("a static build links OpenSSL")
    n = noise_pair(procs, echo).start()
    wait_tunnel(n.service_port)
    assert echo_once(n.service_port, b"sealed") == b"sealed"
    for p in (n.server, n.client):
        names = [os.path.basename(x) for x in openssl_mapped(p.pid)]
        assert any(x.startswith("libcrypto.so") for x in names), names


def libcrypto_path(procs, echo):
    """The libcrypto a noise server maps, or None for a static build."""
    n = noise_pair(procs, echo)
    server = n.start_server()
    paths = [p for p in openssl_mapped(server.pid) if "libcrypto.so" in p]
    server.stop()
    return os.path.realpath(paths[0]) if paths else None


def can_hide_files():
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                       capture_output=True, timeout=10)
    return r.returncode == 0


# runs the rest of the command line with /dev/null mounted over the file in $0
HIDE = 'mount --bind /dev/null "$0" && exec "$@"'


@pytest.mark.skipif(not can_hide_files(), reason="needs root and unshare -m")
def test_without_openssl(procs, echo, tmp_path):
    lib = libcrypto_path(procs, echo)
    if lib is None:
        pytest.skip("a static build links OpenSSL")

    def hidden(*args):
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", HIDE, lib, *args]

    # --genkey needs X25519
    r = subprocess.run(hidden(RATHOLE, "--genkey"), capture_output=True, text=True, timeout=20)
    assert r.returncode == 1, r
    assert r.stderr.startswith("rathole: --genkey: cannot load OpenSSL: "), r.stderr
    assert "libcrypto.so" in r.stderr and r.stdout == ""

    # a noise config is refused, by --check and by a start, with the reason
    n = noise_pair(procs, echo)
    path = tmp_path / "noise-server.toml"
    path.write_text(n.server_text)
    r = subprocess.run(hidden(RATHOLE, "--check", "--server", str(path)), capture_output=True,
                       text=True, timeout=20)
    assert r.returncode != 0 and "cannot load OpenSSL" in r.stderr, r
    server = procs.start(hidden(RATHOLE, "--server", str(path)))
    assert server.p.wait(20) != 0
    assert "cannot load OpenSSL" in server.stderr and "libcrypto.so" in server.stderr, server.stderr

    # the tcp transport does not need it
    t = Tunnel(procs, local_port=echo.port)
    (tmp_path / "server.toml").write_text(t.server_text)
    (tmp_path / "client.toml").write_text(t.client_text)
    t.server = procs.start(hidden(RATHOLE, str(tmp_path / "server.toml")))
    t.client = procs.start(hidden(RATHOLE, str(tmp_path / "client.toml")))
    t.server.wait_log("service echo: listening on", timeout=15)
    wait_tunnel(t.service_port)
    assert echo_once(t.service_port, b"no OpenSSL here") == b"no OpenSSL here"
    assert t.server.alive() and t.client.alive()
