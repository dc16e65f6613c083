"""The command line: options, mode selection, config errors on real files,
--check, --genkey, logging variables and the token-file permission warning."""
import base64
import os
import re
import socket
import subprocess
import time

import pytest

from conftest import RATHOLE, free_port, need_binary, port_open, run_rathole

TOKEN = "s3cr3t-token-never-printed"
DEFAULT_TOKEN = "d3fault-token-never-printed"

SERVER = f"""
[server]
bind_addr = "127.0.0.1:{{port}}"
default_token = "{DEFAULT_TOKEN}"

[server.services.nas]
token = "{TOKEN}"
bind_addr = "127.0.0.1:5202"

[server.services.web]
type = "udp"
bind_addr = "[::1]:8080"
"""

CLIENT = f"""
[client]
remote_addr = "127.0.0.1:{{port}}"

[client.transport.tcp]
nodelay = false

[client.services.nas]
token = "{TOKEN}"
local_addr = "127.0.0.1:22"
retry_interval = 3
"""

QUIET = {"RATHOLE_LOG": "", "RUST_LOG": ""}


def cfg_path(tmp_path, name="rathole.toml"):
    return str(tmp_path / name)


def check(text, tmp_path, *flags, env=None):
    return run_rathole(["--check", *flags], text, tmp_path, env=env)


# ---- --help, --version, usage errors ----

def test_help():
    r = run_rathole(["--help"])
    assert r.returncode == 0
    assert "usage: rathole [OPTIONS] [CONFIG]" in r.stdout
    for opt in ("--server", "--client", "--check", "--genkey", "--help", "--version",
                "RATHOLE_LOG"):
        assert opt in r.stdout
    assert run_rathole(["-h"]).stdout == r.stdout


def test_version():
    r = run_rathole(["--version"])
    assert r.returncode == 0
    assert re.fullmatch(r"rathole \d+\.\d+\.\d+\n", r.stdout)
    assert run_rathole(["-V"]).stdout == r.stdout


@pytest.mark.parametrize("args,msg", [
    (["--frobnicate", "x.toml"], 'unknown option "--frobnicate"'),
    (["-x", "x.toml"], 'unknown option "-x"'),
    ([], "missing the config file"),
    (["--server"], "missing the config file"),
    (["a.toml", "b.toml"], 'unexpected argument "b.toml"'),
    (["--server", "--client", "x.toml"], "--server and --client exclude each other"),
])
def test_usage_errors(args, msg):
    r = run_rathole(args)
    assert r.returncode == 2, r.stderr
    assert msg in r.stderr
    assert "usage: rathole [OPTIONS] [CONFIG]" in r.stderr
    assert r.stdout == ""


# ---- --genkey ----

def parse_keypair(out):
    m = re.fullmatch(r"Private Key:\n([A-Za-z0-9+/]{43}=)\n\nPublic Key:\n([A-Za-z0-9+/]{43}=)\n", out)
    assert m, repr(out)
    priv, pub = (base64.b64decode(x, validate=True) for x in m.groups())
    assert len(priv) == 32 and len(pub) == 32
    return priv, pub


def have_cryptography():
    try:
        import cryptography.hazmat.primitives.asymmetric.x25519  # noqa: F401
        return True
    except ImportError:
        return False


# DER framing of a raw X25519 key (RFC 8410): PKCS#8 private, SPKI public
X25519_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b656e04220420")
X25519_SPKI_PREFIX = bytes.fromhex("302a300506032b656e032100")


def x25519_public(priv):
    """The X25519 public key of a raw private key: with python3-cryptography
    when installed, else with the openssl command (one of them is always
    there: .ci/run installs both)."""
    if have_cryptography():
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
        k = X25519PrivateKey.from_private_bytes(priv)
        return k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    openssl = need_binary("openssl", "openssl")
    r = subprocess.run([openssl, "pkey", "-inform", "DER", "-pubout", "-outform", "DER"],
                       input=X25519_PKCS8_PREFIX + priv, capture_output=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert r.stdout[:len(X25519_SPKI_PREFIX)] == X25519_SPKI_PREFIX, r.stdout.hex()
    return r.stdout[len(X25519_SPKI_PREFIX):]


def test_x25519_public_is_checked():
    """The check below against RFC 7748's test vector (Alice's keys)."""
    priv = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    assert x25519_public(priv).hex() == \
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"


@pytest.mark.parametrize("args", [["--genkey"], ["--genkey", "x25519"], ["--genkey=x25519"]])
def test_genkey_format(args):
    r = run_rathole(args)
    assert r.returncode == 0, r.stderr
    priv, pub = parse_keypair(r.stdout)
    assert x25519_public(priv) == pub


def test_genkey_is_random():
    a = parse_keypair(run_rathole(["--genkey"]).stdout)
    b = parse_keypair(run_rathole(["--genkey"]).stdout)
    assert a[0] != b[0] and a[1] != b[1]


@pytest.mark.parametrize("curve", ["x448", "ed25519"])
def test_genkey_unsupported_curve(curve):
    r = run_rathole(["--genkey", curve])
    assert r.returncode == 1
    assert f"curve {curve} is not supported: use x25519" in r.stderr
    assert r.stdout == ""


# ---- mode selection ----

def test_both_blocks_without_flag(tmp_path):
    text = SERVER.format(port=free_port()) + CLIENT.format(port=free_port())
    r = run_rathole([], text, tmp_path)
    assert r.returncode == 1
    assert "has both [server] and [client]: pass --server or --client" in r.stderr
    assert cfg_path(tmp_path) in r.stderr


def test_neither_block(tmp_path):
    r = run_rathole([], "# nothing here\n", tmp_path)
    assert r.returncode == 1
    assert (f"{cfg_path(tmp_path)}:1: neither [server] nor [client] is defined: add a "
            "[server] table (on the public host) or a [client] table (behind NAT)") in r.stderr


def test_server_flag_on_client_file(tmp_path):
    r = run_rathole(["--server"], CLIENT.format(port=free_port()), tmp_path)
    assert r.returncode == 1
    assert "--server was given but the file has no [server] table" in r.stderr
    assert cfg_path(tmp_path) in r.stderr


def test_client_flag_on_server_file(tmp_path):
    r = run_rathole(["-c"], SERVER.format(port=free_port()), tmp_path)
    assert r.returncode == 1
    assert "--client was given but the file has no [client] table" in r.stderr


MODE_ERRORS = ("pass --server or --client", "was given but the file has no")


def wait_role_started(p, role, ready, timeout=10.0):
    """The process runs `role`: either the role's loop shows a sign of life
    (ready() true), or app_run is still the stub that names the role and exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            break
        if not p.alive():
            p.wait_log(f"{role} role", timeout=5)  # the stderr reader may lag the exit
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"{role} neither started nor exited\n{p.stderr}")
    for m in MODE_ERRORS:
        assert m not in p.stderr


def test_server_only_file_runs_server(procs):
    port = free_port()
    p = procs.rathole(SERVER.format(port=port))
    wait_role_started(p, "server", lambda: port_open(port))


@pytest.mark.parametrize("flag", ["--server", "-s"])
def test_server_flag_on_both(procs, flag):
    port = free_port()
    p = procs.rathole(SERVER.format(port=port) + CLIENT.format(port=port), flag)
    wait_role_started(p, "server", lambda: port_open(port))


def test_client_only_file_runs_client(procs):
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen(8)
        lst.settimeout(0.05)
        port = lst.getsockname()[1]

        def dialed():
            try:
                c, _ = lst.accept()
                c.close()
                return True
            except OSError:
                return False
        p = procs.rathole(CLIENT.format(port=port))
        wait_role_started(p, "client", dialed)


def test_no_services_warning(procs):
    port = free_port()
    p = procs.rathole(f'[server]\nbind_addr = "127.0.0.1:{port}"\n', env={"RATHOLE_LOG": "info"})
    p.wait_log("has no services")


# ---- config errors on real files ----

ERROR_CASES = [
    # (config text, line, message)
    ('[server]\nbind_addr = "0.0.0.0:2333"\n\n[server.services.nas]\nbind_addr = "0.0.0.0:5202"\n',
     4, 'service "nas": missing token (set server.services.nas.token or server.default_token)'),
    ('[client]\nremote_addr = "a:1"\nheartbeat_timeout = "40"\n',
     3, "client.heartbeat_timeout: expected an integer, found string"),
    ('[server]\nbind_addr = "0.0.0.0:2333"\n[server.services.nas]\ntoken = "t"\nbind_adr = "x:1"\nbind_addr = "x:1"\n',
     5, 'unknown key "bind_adr" in [server.services.nas] (did you mean "bind_addr"?)'),
    ('[server]\n', 1, 'missing server.bind_addr (where clients connect, e.g. "0.0.0.0:2333")'),
    ('[client]\nremote_addr = "a:1"\n[client.services.x]\ntoken = "t"\n',
     3, 'service "x": missing local_addr (the service to expose, e.g. "127.0.0.1:22"; set client.services.x.local_addr)'),
    ('[server]\nbind_addr = "0.0.0.0"\n',
     2, 'server.bind_addr: "0.0.0.0" is not a valid address: expected host:port'),
    ('[server]\nbind_addr = "a:1"\n[server.services.s]\ntoken = "t"\nbind_addr = "a:2"\ntype = "sctp"\n',
     6, 'server.services.s.type: expected "tcp" or "udp", found "sctp"'),
    ('[server]\nbind_addr = "a:1"\n[server.transport]\ntype = "quic"\n',
     4, 'server.transport.type: expected "tcp", "tls", "noise" or "websocket", found "quic"'),
    ('[server]\nbind_addr = "a:1"\n[server.transport]\ntype = "tls"\n',
     4, 'server.transport.type = "tls" needs a [server.transport.tls] table with pkcs12 and pkcs12_password'),
    ('[server]\nbind_addr = "a:1"\n[server.transport]\ntype = "tls"\n[server.transport.tls]\npkcs12 = "id.pfx"\n',
     5, "missing server.transport.tls.pkcs12_password (the password of the PKCS#12 archive)"),
    ('[client]\nremote_addr = "a:1"\n[client.transport]\ntype = "noise"\n',
     4, 'client.transport.type = "noise" needs a [client.transport.noise] table'),
    ('[client]\nremote_addr = "a:1"\n[client.transport]\ntype = "websocket"\n',
     4, 'client.transport.type = "websocket" needs a [client.transport.websocket] table (with tls = true or false)'),
    ('[server]\nbind_addr = "a:1"\n[server.transport.tcp]\nproxy = "socks5://127.0.0.1:1080"\n',
     4, "server.transport.tcp.proxy: proxy is a client setting"),
    ('[client]\nremote_addr = "a:1"\n[client.transport.tcp]\nproxy = "gopher://127.0.0.1:70"\n',
     4, 'client.transport.tcp.proxy: unknown proxy scheme "gopher"'),
    ('[client]\nremote_addr = "a:1"\n[client.transport]\ntype = "noise"\n[client.transport.noise]\nremote_public_key = "AAAA"\n',
     6, "client.transport.noise.remote_public_key: decodes to 3 bytes, expected 32"),
    ('[server]\nbind_addr = "a:1"\n[server.transport]\ntype = "noise"\n[server.transport.noise]\nlocal_private_key = "%%%"\n',
     6, "server.transport.noise.local_private_key: not valid base64"),
    ('[client]\nremote_addr = "a:1"\n[client.transport]\ntype = "noise"\n[client.transport.noise]\n',
     5, "missing client.transport.noise.remote_public_key (pattern Noise_NK_25519_ChaChaPoly_BLAKE2s needs the server's public key on the client)"),
    ('[server]\nbind_addr = "a:1"\n[server.transport]\ntype = "noise"\n[server.transport.noise]\npattern = "Noise_QQ_25519_ChaChaPoly_BLAKE2s"\n',
     6, "server.transport.noise.pattern: "),
    ('[client]\nremote_addr = "a:1"\nretry_interval = -1\n',
     3, "client.retry_interval: expected 0 to 3600 seconds, found -1"),
    ('[server]\nbind_addr = "a:1"\nheartbeat_interval = 30\n[client]\nremote_addr = "a:1"\nheartbeat_timeout = 20\n',
     6, "client.heartbeat_timeout (20) must be greater than server.heartbeat_interval (30)"),
    # keys a udp service would ignore are refused, not ignored
    ('[server]\nbind_addr = "a:1"\n[server.services.dns]\ntype = "udp"\ntoken = "t"\nbind_addr = "a:2"\nmax_connections = 5\n',
     7, "server.services.dns.max_connections: applies to tcp services only; a udp service's "
        "visitors are bounded by the client's udp_max_sessions"),
    ('[server]\nbind_addr = "a:1"\n[server.services.dns]\ntype = "udp"\ntoken = "t"\nbind_addr = "a:2"\nproxy_protocol = "v1"\n',
     7, "server.services.dns.proxy_protocol: applies to tcp services only"),
]


@pytest.mark.parametrize("text,line,msg", ERROR_CASES)
def test_config_error(tmp_path, text, line, msg):
    for args in ([], ["--check"]):
        r = run_rathole(args, text, tmp_path)
        assert r.returncode == 1, r.stderr
        want = f"{cfg_path(tmp_path)}:{line}: {msg}"
        assert any(l.startswith(want) for l in r.stderr.splitlines()), f"{want!r} not in\n{r.stderr}"
        assert r.stdout == ""


def test_all_errors_reported_one_per_line(tmp_path):
    text = '[server]\nbind_addr = "x"\nheartbeat_interval = -1\nbogus = 1\n'
    r = run_rathole([], text, tmp_path, env=QUIET)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    p = cfg_path(tmp_path)
    assert [l.split(": ")[0] for l in lines] == [f"{p}:2", f"{p}:3", f"{p}:4"]


def test_toml_syntax_error(tmp_path):
    r = run_rathole([], '[server]\nbind_addr = "unterminated\n', tmp_path)
    assert r.returncode == 1
    assert re.match(re.escape(cfg_path(tmp_path)) + r":2:\d+: \S", r.stderr), r.stderr


def test_unreadable_file(tmp_path):
    missing = str(tmp_path / "nope.toml")
    r = run_rathole([missing])
    assert r.returncode == 1
    assert f"{missing}: cannot read: No such file or directory" in r.stderr
    r = run_rathole([str(tmp_path)])
    assert r.returncode == 1
    assert f"{tmp_path}: cannot read: Is a directory" in r.stderr


# ---- --check ----

def test_check_server(tmp_path):
    port = free_port()
    r = check(SERVER.format(port=port), tmp_path, env=QUIET)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "role: server" in out
    assert f"127.0.0.1:{port}" in out
    assert re.search(r"transport\s+tcp", out)
    assert "nodelay true, keepalive_secs 20, keepalive_interval 8" in out
    assert re.search(r"heartbeat_interval\s+30s", out)
    assert "nas: tcp, bind_addr 127.0.0.1:5202, nodelay true, token: service" in out
    assert "web: udp, bind_addr [::1]:8080, nodelay true, token: default_token" in out
    assert "role: client" not in out
    assert len(out.splitlines()) <= 24
    for secret in (TOKEN, DEFAULT_TOKEN):
        assert secret not in out and secret not in r.stderr


def test_check_client(tmp_path):
    port = free_port()
    r = check(CLIENT.format(port=port), tmp_path, env=QUIET)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "role: client" in out
    assert f"127.0.0.1:{port}" in out
    assert re.search(r"heartbeat_timeout\s+40s", out)
    assert re.search(r"retry_interval\s+1s", out)
    assert "nas: tcp, local_addr 127.0.0.1:22, nodelay false, retry_interval 3s, token: service" in out
    assert TOKEN not in out and TOKEN not in r.stderr


def test_check_both_roles(tmp_path):
    text = SERVER.format(port=free_port()) + CLIENT.format(port=free_port())
    r = check(text, tmp_path, env=QUIET)
    assert r.returncode == 0, r.stderr
    assert "role: server" in r.stdout and "role: client" in r.stdout
    r = check(text, tmp_path, "--client", env=QUIET)
    assert r.returncode == 0
    assert "role: server" not in r.stdout and "role: client" in r.stdout


def test_check_transports(tmp_path):
    text = """
[client]
remote_addr = "example.com:2333"
[client.transport]
type = "noise"
[client.transport.tcp]
proxy = "socks5://alice:pa55word@127.0.0.1:1080"
[client.transport.noise]
pattern = "Noise_XX_25519_ChaChaPoly_BLAKE2s"
local_private_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
"""
    r = check(text, tmp_path, env=QUIET)
    assert r.returncode == 0, r.stderr
    assert "noise (Noise_XX_25519_ChaChaPoly_BLAKE2s; local public key " in r.stdout
    assert "proxy socks5://127.0.0.1:1080 (with credentials)" in r.stdout
    # neither the private key nor the proxy password is shown
    assert "pa55word" not in r.stdout and "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" not in r.stdout


def test_check_record_layer(tmp_path, pki):
    """[*.transport.tls] record_layer: --check shows "openssl" (the default,
    our own record layer, is not shown) and names the key of a bad value."""
    server = ("[server]\nbind_addr = \"0.0.0.0:2333\"\n" + pki.tls_server()
              + 'record_layer = "openssl"\n')
    r = check(server, tmp_path, env=QUIET)
    assert r.returncode == 0, r.stderr
    assert "; record_layer openssl (OpenSSL protects every record)" in r.stdout, r.stdout
    r = check(server.replace('"openssl"', '"rathole"'), tmp_path, env=QUIET)
    assert r.returncode == 0 and "record_layer openssl" not in r.stdout, r.stdout
    r = check(server.replace('"openssl"', '"ktls"'), tmp_path, env=QUIET)
    assert r.returncode == 1
    assert ('server.transport.tls.record_layer: expected "rathole" or "openssl", '
            'found "ktls"') in r.stderr, r.stderr


def test_check_opens_tls_files(tmp_path, pki):
    """--check reads the PKCS#12 archive and trusted_root as a start would:
    a missing file or a wrong password fails the check, not the restart."""
    server = "[server]\nbind_addr = \"0.0.0.0:2333\"\n" + pki.tls_server(kind="websocket", ws_tls=True)
    r = check(server, tmp_path, env=QUIET)
    assert r.returncode == 0, r.stderr
    assert f"websocket (tls true: pkcs12 {pki.path('identity.p12')})" in r.stdout
    assert "p12 pass-word" not in r.stdout + r.stderr
    r = check(server.replace("identity.p12", "missing.p12"), tmp_path, env=QUIET)
    assert r.returncode == 1 and "valid" not in r.stdout
    assert "[server.transport]: cannot read the pkcs12 file" in r.stderr, r.stderr
    assert "missing.p12: No such file or directory" in r.stderr, r.stderr
    r = check(server.replace("p12 pass-word", "wrong"), tmp_path, env=QUIET)
    assert r.returncode == 1
    assert "pkcs12_password does not decrypt" in r.stderr, r.stderr
    client = "[client]\nremote_addr = \"localhost:2333\"\n" + pki.tls_client()
    r = check(client, tmp_path, env=QUIET)
    assert r.returncode == 0, r.stderr
    r = check(client.replace("ca.pem", "no-such-ca.pem"), tmp_path, env=QUIET)
    assert r.returncode == 1
    assert "[client.transport]: " in r.stderr and "no-such-ca.pem" in r.stderr, r.stderr
    # a generated Noise key is a start's business: --check does not log one
    r = check("[server]\nbind_addr = \"0.0.0.0:2333\"\n[server.transport]\ntype = \"noise\"\n"
              "[server.transport.noise]\n", tmp_path, env={"RATHOLE_LOG": "info"})
    assert r.returncode == 0, r.stderr
    assert "generated" not in r.stderr, r.stderr


def test_reference_style_full_file(tmp_path):
    """Every key, both roles, and placeholders in Noise blocks that the
    selected transport does not use: the reference accepts such a file."""
    text = """
[client]
remote_addr = "example.com:2333"
default_token = "default_token_if_not_specify"
[client.transport]
type = "tcp"
[client.transport.tls]
trusted_root = "ca.pem"
hostname = "example.com"
[client.transport.noise]
pattern = "Noise_NK_25519_ChaChaPoly_BLAKE2s"
local_private_key = "placeholder_not_base64"
remote_public_key = "placeholder_not_base64"
[client.services.service1]
type = "tcp"
token = "whatever"
local_addr = "127.0.0.1:1081"
[client.services.service2]
local_addr = "127.0.0.1:1082"

[server]
bind_addr = "0.0.0.0:2333"
default_token = "default_token_if_not_specify"
[server.transport]
type = "tcp"
[server.transport.tls]
pkcs12 = "identify.pfx"
pkcs12_password = "password"
[server.transport.noise]
pattern = "Noise_NK_25519_ChaChaPoly_BLAKE2s"
local_private_key = "placeholder_not_base64"
remote_public_key = "placeholder_not_base64"
[server.services.service1]
type = "tcp"
token = "whatever"
bind_addr = "0.0.0.0:8081"
[server.services.service2]
bind_addr = "0.0.0.1:8082"
"""
    r = check(text, tmp_path, env=QUIET)
    assert r.returncode == 0, r.stderr
    assert "service2: tcp, local_addr 127.0.0.1:1082, nodelay true, retry_interval 1s, token: default_token" in r.stdout
    assert "whatever" not in r.stdout and "default_token_if_not_specify" not in r.stdout


def test_check_warns_no_services(tmp_path):
    r = check('[client]\nremote_addr = "a:1"\n', tmp_path, env=QUIET)
    assert r.returncode == 0
    assert "[client] has no services" in r.stderr
    # RUST_LOG=error hides warnings (the reference's variable works too)
    r = check('[client]\nremote_addr = "a:1"\n', tmp_path, env={"RATHOLE_LOG": "", "RUST_LOG": "error"})
    assert r.returncode == 0
    assert "has no services" not in r.stderr


# ---- logging variables ----

@pytest.mark.parametrize("var", ["RATHOLE_LOG", "RUST_LOG"])
def test_bad_log_level_warns(tmp_path, var):
    env = dict(QUIET)
    env[var] = "loud"
    r = check(SERVER.format(port=free_port()), tmp_path, env=env)
    assert r.returncode == 0
    warn = [l for l in r.stderr.splitlines() if 'is not understood' in l]
    assert len(warn) == 1
    assert f'{var}="loud"' in warn[0]
    assert "error, warn, info, debug, trace" in warn[0]


# ---- token file permissions ----

def test_world_readable_token_warning(tmp_path):
    text = SERVER.format(port=free_port())
    path = tmp_path / "rathole.toml"
    r = check(text, tmp_path, env=QUIET)  # writes the file
    os.chmod(path, 0o644)
    r = subprocess.run([RATHOLE, "--check", str(path)], capture_output=True, text=True,
                       timeout=20, env={**os.environ, **QUIET})
    assert r.returncode == 0
    warn = [l for l in r.stderr.splitlines() if "chmod 600" in l]
    assert len(warn) == 1 and str(path) in warn[0]
    assert TOKEN not in r.stderr

    os.chmod(path, 0o600)
    r = subprocess.run([RATHOLE, "--check", str(path)], capture_output=True, text=True,
                       timeout=20, env={**os.environ, **QUIET})
    assert r.returncode == 0
    assert "chmod 600" not in r.stderr

    # readable by our own group: the service setup (root:rathole 0640), no warning
    os.chmod(path, 0o640)
    r = subprocess.run([RATHOLE, "--check", str(path)], capture_output=True, text=True,
                       timeout=20, env={**os.environ, **QUIET})
    assert "chmod 600" not in r.stderr
    # readable by some other group: warned
    if os.geteuid() == 0:
        os.chown(path, -1, 65534 if os.getegid() != 65534 else 65533)
        r = subprocess.run([RATHOLE, "--check", str(path)], capture_output=True, text=True,
                           timeout=20, env={**os.environ, **QUIET})
        assert "readable by its group" in r.stderr



def test_readable_secret_file_warning(tmp_path):
    """token_file: the warning is about the secret's file, not the config
    that only names it."""
    secret = tmp_path / "nas-token"
    secret.write_text(TOKEN + "\n")
    text = (f'[server]\nbind_addr = "127.0.0.1:{free_port()}"\n[server.services.nas]\n'
            f'token_file = "{secret}"\nbind_addr = "127.0.0.1:5202"\n')
    path = tmp_path / "rathole.toml"
    path.write_text(text)
    os.chmod(path, 0o644)
    for mode, warned in ((0o644, True), (0o600, False)):
        os.chmod(secret, mode)
        r = subprocess.run([RATHOLE, "--check", str(path)], capture_output=True, text=True,
                           timeout=20, env={**os.environ, **QUIET})
        assert r.returncode == 0, r.stderr
        warn = [l for l in r.stderr.splitlines() if "chmod 600" in l]
        assert len(warn) == (1 if warned else 0), r.stderr
        assert not warned or str(secret) in warn[0]
        assert TOKEN not in r.stderr + r.stdout

def test_no_permission_warning_without_tokens(tmp_path):
    r = check('[server]\nbind_addr = "127.0.0.1:1"\n', tmp_path, env=QUIET)
    os.chmod(tmp_path / "rathole.toml", 0o644)
    r = subprocess.run([RATHOLE, "--check", str(tmp_path / "rathole.toml")], capture_output=True,
                       text=True, timeout=20, env={**os.environ, **QUIET})
    assert r.returncode == 0
    assert "chmod 600" not in r.stderr
