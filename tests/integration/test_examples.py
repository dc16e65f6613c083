"""Every example config is valid, and the example pairs really work.

1. `rathole --check` accepts every examples/**/*.toml, once per role in the
   file (--server / --client for a file with both), and never prints a token.
2. Each server/client pair (and the unified file) carries a connection end to
   end, with only its addresses moved to loopback ports picked at run time: the
   transports, keys and tokens are the example's own. The TLS pair uses a CA
   and a certificate made by examples/tls/create_self_signed_cert.sh.
"""
import glob
import os
import shutil
import socket
import subprocess
import tomllib

import pytest

from conftest import RATHOLE, REPO, free_port, run_rathole, wait_until
from helpers import UdpEcho, wait_tunnel

EXAMPLES = os.path.join(REPO, "examples")
FILES = sorted(glob.glob(os.path.join(EXAMPLES, "**", "*.toml"), recursive=True))


def _rel(path):
    return os.path.relpath(path, REPO)


def _roles(path):
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    return [r for r in ("server", "client") if r in doc]


def _tokens(path):
    """Every token-like secret of the file, to make sure none is printed."""
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    out = []
    for role in ("server", "client"):
        sec = doc.get(role, {})
        if "default_token" in sec:
            out.append(sec["default_token"])
        for svc in sec.get("services", {}).values():
            if "token" in svc:
                out.append(svc["token"])
        noise = sec.get("transport", {}).get("noise", {})
        if "local_private_key" in noise:
            out.append(noise["local_private_key"])
        tls = sec.get("transport", {}).get("tls", {})
        if "pkcs12_password" in tls:
            out.append(tls["pkcs12_password"])
    return out


CHECKS = [(p, r) for p in FILES for r in _roles(p)]


def test_examples_exist():
    assert len(FILES) >= 10, FILES
    assert all(_roles(p) for p in FILES), "an example has neither [server] nor [client]"


@pytest.fixture(scope="module")
def example_certs(tmp_path_factory):
    """A directory with the files examples/tls/create_self_signed_cert.sh makes
    (identity.pfx, rootCA.crt): the tls example's relative paths resolve there."""
    if not shutil.which("openssl"):
        pytest.skip("the openssl command is not installed")
    d = tmp_path_factory.mktemp("example-certs")
    script = os.path.join(EXAMPLES, "tls", "create_self_signed_cert.sh")
    r = subprocess.run(["sh", script], cwd=d, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return d


@pytest.mark.parametrize("path,role", CHECKS, ids=[f"{_rel(p)}:{r}" for p, r in CHECKS])
def test_check(path, role, request):
    flag = [f"--{role}"] if len(_roles(path)) > 1 else []
    # --check reads the TLS files, as a start would
    cwd = request.getfixturevalue("example_certs") if "/tls/" in path else None
    r = run_rathole(["--check", *flag, path], cwd=cwd)
    assert r.returncode == 0, f"rathole --check {_rel(path)} failed:\n{r.stdout}{r.stderr}"
    assert f"role: {role}" in r.stdout, r.stdout
    for secret in _tokens(path):
        assert secret not in r.stdout + r.stderr, f"--check printed a secret of {_rel(path)}"


# ---- end to end ----

def _moved(text, addrs):
    """The example's text with each "host:port" of addrs replaced."""
    for old, new in addrs.items():
        assert f'"{old}"' in text, f"{old} is not in the example anymore"
        text = text.replace(f'"{old}"', f'"{new}"')
    return text


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    os.chmod(p, 0o600)
    return str(p)


def _start_pair(procs, tmp_path, example, service_addr, local_addr, udp=False):
    """Starts the example's server and client with loopback addresses."""
    d = os.path.join(EXAMPLES, example)
    ctl, svc = free_port(), free_port(socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    with open(os.path.join(d, "server.toml")) as f:
        server = _moved(f.read(), {"0.0.0.0:2333": f"127.0.0.1:{ctl}",
                                   service_addr: f"127.0.0.1:{svc}"})
    with open(os.path.join(d, "client.toml")) as f:
        client = _moved(f.read(), {"myserver.com:2333": f"127.0.0.1:{ctl}",
                                   local_addr[0]: local_addr[1]})
    s = procs.start([RATHOLE, _write(tmp_path, "server.toml", server)], cwd=str(tmp_path))
    c = procs.start([RATHOLE, _write(tmp_path, "client.toml", client)], cwd=str(tmp_path))
    return s, c, svc


@pytest.mark.parametrize("example,service_addr,local_addr", [
    ("minimal", "0.0.0.0:5202", "127.0.0.1:22"),
    ("iperf3", "0.0.0.0:5202", "127.0.0.1:5201"),
    ("noise_nk", "0.0.0.0:5202", "127.0.0.1:22"),
])
def test_pair_end_to_end(procs, tmp_path, echo, example, service_addr, local_addr):
    s, c, port = _start_pair(procs, tmp_path, example, service_addr,
                             (local_addr, f"127.0.0.1:{echo.port}"))
    wait_tunnel(port)
    assert s.alive() and c.alive()


def test_tls_pair_with_the_example_certificate(procs, tmp_path, echo):
    if not shutil.which("openssl"):
        pytest.skip("the openssl command is not installed")
    script = os.path.join(EXAMPLES, "tls", "create_self_signed_cert.sh")
    r = subprocess.run(["sh", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    for f in ("identity.pfx", "rootCA.crt"):
        assert (tmp_path / f).is_file(), f"{script} did not make {f}"
    # the example's relative paths (identity.pfx, rootCA.crt) resolve in tmp_path
    s, c, port = _start_pair(procs, tmp_path, "tls", "0.0.0.0:5202",
                             ("127.0.0.1:22", f"127.0.0.1:{echo.port}"))
    wait_tunnel(port)
    c.wait_log("control channel established")


def test_udp_pair(procs, tmp_path):
    u = UdpEcho()
    try:
        s, c, port = _start_pair(procs, tmp_path, "udp", "0.0.0.0:5353",
                                 ("127.0.0.1:53", f"127.0.0.1:{u.port}"), udp=True)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.3)

            def answered():
                sock.sendto(b"a datagram", ("127.0.0.1", port))
                try:
                    return sock.recvfrom(2048)[0] == b"a datagram"
                except OSError:
                    return False
            wait_until(answered, 15, interval=0.1, what="a UDP echo through the udp example")
    finally:
        u.stop()


def test_unified_both_roles(procs, tmp_path, echo):
    with open(os.path.join(EXAMPLES, "unified", "config.toml")) as f:
        text = f.read()
    ctl, svc = free_port(), free_port()
    text = _moved(text, {"127.0.0.1:2333": f"127.0.0.1:{ctl}", "127.0.0.1:5202": f"127.0.0.1:{svc}",
                         "127.0.0.1:8080": f"127.0.0.1:{echo.port}"})
    path = _write(tmp_path, "config.toml", text)
    procs.start([RATHOLE, "--server", path])
    procs.start([RATHOLE, "--client", path])
    wait_tunnel(svc)


def test_use_proxy_hides_the_proxy_password():
    """The proxy example is only checked (it needs a proxy); its password stays hidden."""
    path = os.path.join(EXAMPLES, "use_proxy", "client.toml")
    r = run_rathole(["--check", path])
    assert r.returncode == 0, r.stderr
    assert "socks5" in r.stdout, r.stdout
    assert "passwd" not in r.stdout + r.stderr
