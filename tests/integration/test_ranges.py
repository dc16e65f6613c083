"""Port ranges (issue 26): bind_addr = "host:FIRST-LAST" on the server and
local_addr = "host:FIRST-LAST" on the client make one service per port,
named "NAME:PORT" after the server's port.

Ten local echo services, each tagging its replies with its own port, stand
behind a range of ten server ports: a visitor on each server port must reach
the local port at the same offset. The server keeps one pooled data channel
per member (not eight), reloads change members one by one, a reference
client that spells the members out as separate services works against our
ranged server, and bad ranges are config errors naming the keys."""
import os
import random
import signal
import socket
import threading

import pytest

import conftest

from conftest import REPO, free_port, run_rathole, wait_port, wait_port_closed, wait_until
from helpers import accepted, echo_on, http, listen_tcp, metric

N = 10
REFERENCE = os.environ.get("RATHOLE_REFERENCE") or os.path.join(
    os.path.dirname(REPO), "shared", "peers", "rathole")


def free_range(n, avoid=(), kind=socket.SOCK_STREAM):
    """The first of n consecutive ports (TCP, or kind) on loopback that were
    all free a moment ago (at most 200 tries); below the ephemeral range and
    never given twice, as conftest.free_port()."""
    for _ in range(200):
        base = random.randrange(10000, conftest._EPHEMERAL_LOW - n)
        if any(base <= a < base + n for a in avoid) or \
                any(p in conftest._given for p in range(base, base + n)):
            continue
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket(socket.AF_INET, kind)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            conftest._given.update(range(base, base + n))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError(f"no {n} consecutive free ports found")


class TaggedEchoes:
    """n local services on consecutive ports; each answers a connection with
    "<its port>:" and then echoes."""

    def __init__(self, base, n):
        self.stopping = False
        self.socks = [listen_tcp(port=p) for p in range(base, base + n)]
        for s in self.socks:
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, ls):
        tag = b"%d:" % ls.getsockname()[1]
        for c in accepted(ls, lambda: self.stopping):
            threading.Thread(target=self._echo, args=(c, tag), daemon=True).start()

    @staticmethod
    def _echo(c, tag):
        with c:
            c.settimeout(10)
            try:
                c.sendall(tag)
                while (d := c.recv(65536)):
                    c.sendall(d)
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        for s in self.socks:
            s.close()


@pytest.fixture
def echoes():
    base = free_range(N)
    e = TaggedEchoes(base, N)
    e.base = base
    yield e
    e.stop()


def tagged_echo(c, data):
    """Sends data and reads until its echo: the local service's tag, then data."""
    c.sendall(data)
    got = b""
    while not got.endswith(data) and len(got) < 64 + len(data):
        d = c.recv(65536)
        if not d:
            break
        got += d
    return got


def visit(port, host="127.0.0.1"):
    """What a visitor on port reads: the local service's tag, then its echo."""
    with socket.create_connection((host, port), timeout=10) as c:
        return tagged_echo(c, b"hello")


def tag_of(reply):
    return int(reply.split(b":", 1)[0])


def configs(ctl, sbase, lbase, api, n=N, remote_ports=True):
    server = (f'[server]\nbind_addr = "127.0.0.1:{ctl}"\ndefault_token = "t"\n'
              f'[server.api]\nbind_addr = "127.0.0.1:{api}"\n'
              f'[server.services.game]\nbind_addr = "127.0.0.1:{sbase}-{sbase + n - 1}"\n')
    client = (f'[client]\nremote_addr = "127.0.0.1:{ctl}"\ndefault_token = "t"\n'
              f'[client.services.game]\nlocal_addr = "127.0.0.1:{lbase}-{lbase + N - 1}"\n')
    if remote_ports:
        client += f'remote_ports = "{sbase}-{sbase + N - 1}"\n'
    return server, client


def ports(n=3):
    """n free single ports (control channel, admin API...)."""
    return [free_port() for _ in range(n)]


def wait_members(sbase, n):
    for p in range(sbase, sbase + n):
        wait_port(p, timeout=15)


def test_each_port_reaches_its_local_port(procs, echoes):
    ctl, api = ports(2)
    sbase = free_range(N, avoid=range(echoes.base, echoes.base + N))
    server, client = configs(ctl, sbase, echoes.base, api)
    procs.rathole(server, name="server.toml")
    procs.rathole(client, name="client.toml")
    wait_members(sbase, N)
    for k in range(N):
        reply = visit(sbase + k)
        assert tag_of(reply) == echoes.base + k, (k, reply)
        assert reply == b"%d:hello" % (echoes.base + k)
    # each member is an ordinary service of its own, with a pool of one
    _, status = http(f"http://127.0.0.1:{api}/api/status")
    for k in range(N):
        assert f'"name": "game:{sbase + k}"' in status
    assert status.count('"range": "game"') == N

    # one asked for each (not 8); a visitor that came and went while the
    # first was on its way (wait_port's probe) may have asked for a second
    def pools_of_one():
        text = http(f"http://127.0.0.1:{api}/metrics")[1]
        return all(1 <= metric(text, "rathole_service_data_channels_pooled",
                               service=f"game:{sbase + k}") <= 2 for k in range(N))
    wait_until(pools_of_one, 10, what="every member's pool to hold one data channel")


def test_same_ports_without_remote_ports(procs, echoes):
    """When the server's ports are the local ones (two hosts), local_addr
    alone names the members: here the server binds 127.0.0.2."""
    ctl, api = ports(2)
    server, client = configs(ctl, echoes.base, echoes.base, api, remote_ports=False)
    server = server.replace(f'bind_addr = "127.0.0.1:{echoes.base}', f'bind_addr = "127.0.0.2:{echoes.base}')
    procs.rathole(server, name="server.toml")
    procs.rathole(client, name="client.toml")
    for k in (0, N - 1):
        wait_port(echoes.base + k, host="127.0.0.2", timeout=15)
        assert tag_of(visit(echoes.base + k, host="127.0.0.2")) == echoes.base + k


def test_reload_changes_members_one_by_one(procs, echoes):
    """Shrinking the range removes the members beyond it; a connection on a
    member that stays is not touched."""
    ctl, api = ports(2)
    sbase = free_range(N, avoid=range(echoes.base, echoes.base + N))
    server, client = configs(ctl, sbase, echoes.base, api)
    srv = procs.rathole(server, name="server.toml")
    procs.rathole(client, name="client.toml")
    wait_members(sbase, N)
    c = socket.create_connection(("127.0.0.1", sbase), timeout=10)
    try:
        assert tagged_echo(c, b"before") == b"%d:before" % echoes.base
        (procs.tmp / "server.toml").write_text(server.replace(f"-{sbase + N - 1}", f"-{sbase + 4}"))
        srv.signal(signal.SIGHUP)
        for p in range(sbase + 5, sbase + N):
            wait_port_closed(p)
        assert echo_on(c, b"after") == b"after"
        assert tag_of(visit(sbase + 4)) == echoes.base + 4
    finally:
        c.close()


@pytest.mark.skipif(not os.access(REFERENCE, os.X_OK),
                    reason=f"the reference rathole is not at {REFERENCE}: interop skipped")
def test_reference_client_spells_out_members(procs, echoes):
    """docs/configuration.md: a reference client writes one service per
    port, named "NAME:PORT"; our ranged server serves it."""
    ctl, api = ports(2)
    sbase = free_range(N, avoid=range(echoes.base, echoes.base + N))
    server, _ = configs(ctl, sbase, echoes.base, api)
    client = f'[client]\nremote_addr = "127.0.0.1:{ctl}"\ndefault_token = "t"\n'
    for k in range(N):
        client += (f'[client.services."game:{sbase + k}"]\n'
                   f'local_addr = "127.0.0.1:{echoes.base + k}"\n')
    procs.rathole(server, name="server.toml")
    path = procs.tmp / "ref-client.toml"
    path.write_text(client)
    procs.start([REFERENCE, "--client", str(path)])
    wait_members(sbase, N)
    for k in range(N):
        assert tag_of(visit(sbase + k)) == echoes.base + k


@pytest.mark.skipif(not os.access(REFERENCE, os.X_OK),
                    reason=f"the reference rathole is not at {REFERENCE}: interop skipped")
def test_reference_server_serves_our_ranged_client(procs, echoes):
    """The other way round: a reference server with one service per port,
    named "NAME:PORT", and our client with the range."""
    ctl, api = ports(2)
    sbase = free_range(N, avoid=range(echoes.base, echoes.base + N))
    _, client = configs(ctl, sbase, echoes.base, api)
    server = f'[server]\nbind_addr = "127.0.0.1:{ctl}"\ndefault_token = "t"\n'
    for k in range(N):
        server += (f'[server.services."game:{sbase + k}"]\n'
                   f'bind_addr = "127.0.0.1:{sbase + k}"\n')
    path = procs.tmp / "ref-server.toml"
    path.write_text(server)
    procs.start([REFERENCE, "--server", str(path)])
    wait_port(ctl)
    procs.rathole(client, name="client.toml")
    wait_members(sbase, N)
    for k in range(N):
        assert tag_of(visit(sbase + k)) == echoes.base + k


def test_udp_range(procs):
    """A udp range: a datagram to each server port comes back from the local
    port at the same offset."""
    n = 4
    lbase = free_range(n, kind=socket.SOCK_DGRAM)
    sbase = free_range(n, avoid=range(lbase, lbase + n), kind=socket.SOCK_DGRAM)
    stop = threading.Event()
    locals_ = []
    for p in range(lbase, lbase + n):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", p))
        u.settimeout(0.2)
        locals_.append(u)

    def serve(u):
        tag = b"%d:" % u.getsockname()[1]
        while not stop.is_set():
            try:
                d, a = u.recvfrom(2048)
            except socket.timeout:
                continue
            except OSError:
                return
            u.sendto(tag + d, a)
    threads = [threading.Thread(target=serve, args=(u,), daemon=True) for u in locals_]
    for t in threads:
        t.start()
    ctl = free_port()
    procs.rathole(f'[server]\nbind_addr = "127.0.0.1:{ctl}"\ndefault_token = "t"\n'
                  f'[server.services.dns]\ntype = "udp"\n'
                  f'bind_addr = "127.0.0.1:{sbase}-{sbase + n - 1}"\n', name="server.toml")
    procs.rathole(f'[client]\nremote_addr = "127.0.0.1:{ctl}"\ndefault_token = "t"\n'
                  f'[client.services.dns]\ntype = "udp"\n'
                  f'local_addr = "127.0.0.1:{lbase}-{lbase + n - 1}"\n'
                  f'remote_ports = "{sbase}-{sbase + n - 1}"\n', name="client.toml")
    v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    v.settimeout(0.2)
    try:
        for k in range(n):
            def answered():
                try:
                    v.sendto(b"q", ("127.0.0.1", sbase + k))
                    for _ in range(8):	# late answers of the port before are skipped
                        d, a = v.recvfrom(2048)
                        if a[1] == sbase + k:
                            return d
                except OSError:		# not bound yet (refused) or no answer yet
                    pass
                return None
            assert wait_until(answered, 20, what=f"an answer from port {sbase + k}") == \
                b"%d:q" % (lbase + k)
    finally:
        stop.set()
        v.close()
        for u in locals_:
            u.close()


SERVER_HEAD = '[server]\nbind_addr = "127.0.0.1:2333"\ndefault_token = "t"\n'
CLIENT_HEAD = '[client]\nremote_addr = "127.0.0.1:2333"\ndefault_token = "t"\n'


@pytest.mark.parametrize("text,line,msg", [
    (SERVER_HEAD + '[server.services.a]\nbind_addr = "0.0.0.0:30000-30009"\n'
     '[server.services.b]\nbind_addr = "127.0.0.1:30009-30020"\n', 7,
     'server.services.b.bind_addr: "127.0.0.1:30009-30020" overlaps the ports of service "a" '
     '(bind_addr "0.0.0.0:30000-30009")'),
    (SERVER_HEAD + '[server.services.a]\nbind_addr = "0.0.0.0:30000-30009"\n'
     '[server.services.b]\nbind_addr = "0.0.0.0:30005"\n', 7,
     'server.services.b.bind_addr: "0.0.0.0:30005" overlaps the ports of service "a"'),
    (SERVER_HEAD + '[server.services.a]\nbind_addr = "0.0.0.0:30000-31024"\n', 5,
     'server.services.a.bind_addr: "0.0.0.0:30000-31024" is not a valid port range: '
     'more than 1024 ports'),
    (SERVER_HEAD + '[server.services.a]\nbind_addr = "0.0.0.0:30009-30000"\n', 5,
     'server.services.a.bind_addr: "0.0.0.0:30009-30000" is not a valid port range: '
     'the first port is greater than the last'),
    (SERVER_HEAD + '[server.services.a]\nbind_addr = "0.0.0.0:30000-x"\n', 5,
     'server.services.a.bind_addr: "0.0.0.0:30000-x" is not a valid port range'),
    (CLIENT_HEAD + '[client.services.a]\nlocal_addr = "127.0.0.1:40000-40009"\n'
     'remote_ports = "30000-30010"\n', 6,
     'client.services.a.remote_ports: "30000-30010" has 11 ports but local_addr '
     '"127.0.0.1:40000-40009" has 10; the ranges must have the same length'),
    (CLIENT_HEAD + '[client.services.a]\nlocal_addr = "127.0.0.1:40000"\n'
     'remote_ports = "30000-30010"\n', 6,
     'client.services.a.remote_ports: needs a port range in local_addr too'),
    (SERVER_HEAD + '[server.services.a]\nbind_addr = "0.0.0.0:30000-30001"\n'
     '[server.services."a:30001"]\nbind_addr = "0.0.0.0:40000"\n', 6,
     'server.services: service "a:30001" has the name of a member of the port range of '
     'service "a"'),
    (SERVER_HEAD + '[server.services.a]\nbind_addr = "0.0.0.0:30000-30001"\n' +
     CLIENT_HEAD.replace("2333", "2333") + '[client.services.a]\n'
     'local_addr = "127.0.0.1:40000-40002"\n', 9,
     'service "a": the server\'s bind_addr has 2 port(s) but the client\'s local_addr has 3'),
    (SERVER_HEAD + '[server.services.a]\nbind_addr = "0.0.0.0:30000-30001"\n' +
     CLIENT_HEAD + '[client.services.a]\nlocal_addr = "127.0.0.1:40000-40001"\n', 9,
     'service "a": the client\'s members are named after ports the server\'s range does not '
     'have ("a:40000"); set client.services.a.remote_ports'),
    (SERVER_HEAD.replace("127.0.0.1:2333", "0.0.0.0:30003") + '[server.services.a]\n'
     'bind_addr = "127.0.0.1:30000-30009"\n', 5,
     'server.services.a.bind_addr: "127.0.0.1:30000-30009" takes the port of server.bind_addr '
     '"0.0.0.0:30003"'),
    (SERVER_HEAD + 'https_bind_addr = "0.0.0.0:30443"\n[server.services.a]\n'
     'bind_addr = "0.0.0.0:30000-30999"\n', 6,
     'server.services.a.bind_addr: "0.0.0.0:30000-30999" takes the port of '
     'server.https_bind_addr "0.0.0.0:30443"'),
], ids=["overlap", "overlap-single", "too-long", "reversed", "not-a-number",
        "remote-ports-length", "remote-ports-single", "member-name", "two-roles-length",
        "two-roles-names", "control-port", "vhost-port"])
def test_range_config_errors(tmp_path, text, line, msg):
    r = run_rathole(["--check"], text, tmp_path)
    assert r.returncode == 1, r.stderr
    want = f"{tmp_path / 'rathole.toml'}:{line}: {msg}"
    assert any(l.startswith(want) for l in r.stderr.splitlines()), f"{want!r} not in\n{r.stderr}"


def test_check_summarizes_a_range(tmp_path):
    """Also: 1024 ports are allowed (1025 are not, above), and a limit on a
    range is each port's own."""
    r = run_rathole(["--check"], SERVER_HEAD + '[server.services.a]\nbind_addr = '
                    '"0.0.0.0:30000-30099"\nbandwidth_limit = "1MB"\n'
                    '[server.services.udp]\ntype = "udp"\n'
                    'bind_addr = "0.0.0.0:30000-30001"\n'
                    '[server.services.big]\nbind_addr = "0.0.0.0:40000-41023"\n', tmp_path)
    assert r.returncode == 0, r.stderr
    assert "services            1126" in r.stdout
    assert ('a: port range of 100, services "a:30000" .. "a:30099", bind_addr 0.0.0.0:30000 .. '
            '0.0.0.0:30099, 1 pooled data channel each, tcp') in r.stdout
    assert "bandwidth_limit 1MB (1000000 bytes/s each way, for each port)" in r.stdout
    assert 'big: port range of 1024, services "big:40000" .. "big:41023"' in r.stdout
