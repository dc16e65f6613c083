"""Secrets stay secret (docs/security.md): with the most verbose logging, no
token, private key or session key ever reaches stderr, whatever happens
(traffic, a wrong token, forged keys, an API request, a reload); and a
token-bearing config readable by others is warned about at start.
(--check's handling of the same warning is in test_cli.py.)"""
import base64
import os
import re
import signal
import socket
import subprocess
import urllib.error
import urllib.request

import pytest

from conftest import RATHOLE, free_port, run_rathole
from helpers import EchoServer, Tunnel, UdpEcho, client_config, echo_once, wait_tunnel
from test_protocol_peer import control_hello, data_hello, read_exact, sha256

TOKEN = "tok-Zq8vX3-very-secret"
UDP_TOKEN = "udp-Kp2Wm9-very-secret"
DEFAULT_TOKEN = "dflt-Hh4Rt7-very-secret"
API_TOKEN = "api-Lx5Nc1-very-secret"


def genkey():
    r = subprocess.run([RATHOLE, "--genkey"], capture_output=True, text=True, timeout=10)
    m = re.fullmatch(r"Private Key:\n(\S{44})\n\nPublic Key:\n(\S{44})\n", r.stdout)
    assert m, r.stdout
    return m.group(1), m.group(2)


def secrets_in(text, secrets):
    """The secrets (or their hex / base64 forms) that appear in text."""
    found = []
    for s in secrets:
        raw = s.encode() if isinstance(s, str) else s
        forms = {raw.decode("latin-1"), raw.hex(), base64.b64encode(raw).decode()}
        found += [f for f in forms if len(f) >= 8 and f in text]
    return found


@pytest.mark.parametrize("var", ["RATHOLE_LOG", "RUST_LOG"])
def test_secrets_never_logged(procs, tmp_path, var):
    echo, uecho = EchoServer(), UdpEcho()
    s_priv, s_pub = genkey()
    sapi = free_port()
    env = {"RATHOLE_LOG": "", "RUST_LOG": ""}
    env[var] = "trace"
    try:
        t = Tunnel(procs, local_port=echo.port, token=TOKEN, env=env,
                   transport_server=('[server.transport]\ntype = "noise"\n'
                                     f'[server.transport.noise]\nlocal_private_key = "{s_priv}"\n'),
                   transport_client=('[client.transport]\ntype = "noise"\n'
                                     f'[client.transport.noise]\nremote_public_key = "{s_pub}"\n'),
                   server_extra=(f'default_token = "{DEFAULT_TOKEN}"\n[server.api]\n'
                                 f'bind_addr = "127.0.0.1:{sapi}"\ntoken = "{API_TOKEN}"\n'))
        t.start()
        wait_tunnel(t.service_port)
        assert "TRACE" in t.server.stderr or "DEBUG" in t.server.stderr
        assert echo_once(t.service_port, b"secret-free") == b"secret-free"
        # a client with a wrong token (its own token must not be logged either)
        wrong = procs.rathole(client_config(t.server_port, {"echo": dict(local_port=echo.port,
                                                                         token="wrong-" + TOKEN)},
                                            transport=('[client.transport]\ntype = "noise"\n'
                                                       '[client.transport.noise]\n'
                                                       f'remote_public_key = "{s_pub}"\n')),
                              name="wrong.toml", env=env)
        wrong.wait_log("authentication failed", timeout=15)
        wrong.stop()
        # API requests with a wrong and the right bearer token
        for tok in ("wrong-" + API_TOKEN, API_TOKEN):
            req = urllib.request.Request(f"http://127.0.0.1:{sapi}/metrics")
            req.add_header("Authorization", "Bearer " + tok)
            try:
                urllib.request.urlopen(req, timeout=5).read()
            except urllib.error.HTTPError:
                pass
        # a reload re-reads the tokens
        t.server.signal(signal.SIGHUP)
        t.server.wait_log("reload", timeout=10)
        assert echo_once(t.service_port, b"after reload") == b"after reload"
        t.client.stop()
        t.server.stop()
        logs = t.server.stderr + t.client.stderr + wrong.stderr
        secrets = [TOKEN, "wrong-" + TOKEN, DEFAULT_TOKEN, API_TOKEN, "wrong-" + API_TOKEN,
                   base64.b64decode(s_priv)]
        assert not secrets_in(logs, secrets), secrets_in(logs, secrets)
        assert s_priv not in logs
        # no digest-sized hex either: a session key (sha256(token || nonce))
        # in the log would let a reader open data channels
        assert not re.search(r"[0-9a-fA-F]{40}", logs), re.search(r"[0-9a-fA-F]{40}", logs)
    finally:
        echo.stop()
        uecho.stop()


def test_session_key_not_logged_by_server(procs, tmp_path):
    """A control channel made by hand, so the session key is known: neither it
    nor the nonce-derived digests appear in the server's trace log."""
    sp, vp = free_port(), free_port()
    srv = procs.rathole(f'[server]\nbind_addr = "127.0.0.1:{sp}"\n[server.services.svc]\n'
                        f'token = "{TOKEN}"\nbind_addr = "127.0.0.1:{vp}"\n',
                        name="s.toml", env={"RATHOLE_LOG": "trace"})
    srv.wait_log("listening on 127.0.0.1:%d" % sp)
    s = socket.create_connection(("127.0.0.1", sp), timeout=10)
    s.sendall(control_hello(sha256(b"svc")))
    nonce = read_exact(s, 37)[5:]
    key = sha256(TOKEN.encode() + nonce)
    s.sendall(key)
    assert read_exact(s, 4) == b"\x00" * 4
    # the port opens a moment after the control channel: wait for the port
    srv.wait_log("service svc: listening on")
    with socket.create_connection(("127.0.0.1", sp), timeout=10) as d:
        d.sendall(data_hello(key))
        d.sendall(b"")
    with socket.create_connection(("127.0.0.1", vp), timeout=10):
        pass
    s.close()
    srv.wait_log("stopped listening")
    srv.stop()
    assert not secrets_in(srv.stderr, [TOKEN, key, nonce]), secrets_in(srv.stderr, [TOKEN, key, nonce])


def test_readable_config_warned_at_start(procs, tmp_path):
    """A running server (not only --check) warns about a token file that
    others can read, names the fix, and never prints the token."""
    port = free_port()
    text = (f'[server]\nbind_addr = "127.0.0.1:{port}"\n[server.services.a]\n'
            f'token = "{TOKEN}"\nbind_addr = "127.0.0.1:{free_port()}"\n')
    p = procs.rathole(text, name="s.toml", env={"RATHOLE_LOG": "info"})
    p.wait_log("listening on 127.0.0.1:%d" % port)
    assert "readable by other users" in p.stderr and "chmod 600" in p.stderr
    assert TOKEN not in p.stderr
    p.stop()
    os.chmod(tmp_path / "s.toml", 0o600)
    p2 = procs.start([RATHOLE, str(tmp_path / "s.toml")], env={"RATHOLE_LOG": "info"})
    p2.wait_log("listening on 127.0.0.1:%d" % port)
    assert "chmod 600" not in p2.stderr


def test_check_output_has_no_tokens(tmp_path):
    text = (f'[server]\nbind_addr = "127.0.0.1:1"\ndefault_token = "{DEFAULT_TOKEN}"\n'
            f'[server.services.a]\ntoken = "{TOKEN}"\nbind_addr = "127.0.0.1:2"\n'
            '[server.services.b]\nbind_addr = "127.0.0.1:3"\n')
    r = run_rathole(["--check"], text, tmp_path, env={"RATHOLE_LOG": "trace"})
    assert r.returncode == 0, r.stderr
    assert not secrets_in(r.stdout + r.stderr, [TOKEN, DEFAULT_TOKEN])
