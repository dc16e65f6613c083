"""Faults: a side killed with SIGKILL mid-transfer, a local service that
refuses connections or is slow to answer them, fd exhaustion, and a
network link that goes down
(network namespaces; skipped where `ip netns add` is not permitted)."""
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import RATHOLE, free_port, wait_until
from helpers import EchoServer, Tunnel, echo_once, transfer_checked, wait_tunnel
from proc_stats import cpu_seconds, fd_count, is_asan, raise_nofile, wait_fds_at_most


def start_transfers(port, n=4, nbytes=64 << 20):
    """n paced transfers in the background; errors are expected (a side dies)."""
    def one():
        try:
            transfer_checked(port, nbytes, chunk=256 << 10, timeout=30, pace=0.01)
        except (OSError, AssertionError):
            pass
    ths = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for th in ths:
        th.start()
    return ths


def restart(procs, t, side):
    """Starts the killed side again with the same config."""
    if side == "server":
        t.start_server()
    else:
        t.start_client()
    t.server.wait_log("service echo: listening on", timeout=15,
                      count=t.server.stderr.count("service echo: listening on") or 1)


@pytest.mark.parametrize("victim", ["client", "server"])
def test_kill9_mid_transfer(procs, echo, victim):
    """SIGKILL one side during transfers: the other side closes everything it
    held for them, and the tunnel comes back when the process restarts."""
    t = Tunnel(procs, local_port=echo.port, env={"RATHOLE_LOG": "info"}).start()
    wait_tunnel(t.service_port)
    time.sleep(0.5)
    survivor = t.server if victim == "client" else t.client
    idle_fds = fd_count(survivor.pid)
    ths = start_transfers(t.service_port)
    wait_until(lambda: fd_count(survivor.pid) >= idle_fds + 4, 10, what="transfers under way")
    time.sleep(0.5)
    killed = t.client if victim == "client" else t.server
    killed.signal(signal.SIGKILL)
    killed.p.wait(5)
    # the survivor lets go of every connection of the dead peer
    wait_fds_at_most(survivor.pid, idle_fds, timeout=20,
                     what=f"the {victim}'s connections to be closed by the survivor")
    for th in ths:
        th.join(35)
    assert survivor.alive()
    if victim == "client":
        t.server.wait_log("service echo: stopped listening")
        t.start_client()
    else:
        t.start_server()
    wait_tunnel(t.service_port, timeout=20)
    assert echo_once(t.service_port, b"back again") == b"back again"


def test_local_service_refuses(procs):
    """Visitors of a service whose local port refuses: each is closed, nothing
    leaks, and the tunnel works as soon as the service listens."""
    port = free_port()
    t = Tunnel(procs, local_port=port, env={"RATHOLE_LOG": "info"}).start()
    t.client.wait_log("control channel established", timeout=15)
    time.sleep(0.5)
    base = {p: fd_count(p.pid) for p in (t.server, t.client)}
    socks = []
    for _ in range(200):
        s = socket.create_connection(("127.0.0.1", t.service_port), timeout=10)
        socks.append(s)
    for s in socks:
        s.settimeout(10)
        try:
            assert s.recv(10) == b""        # closed: the local service refused
        except ConnectionResetError:
            pass
        s.close()
    t.client.wait_log("cannot reach the local service")
    for p in (t.server, t.client):
        wait_fds_at_most(p.pid, base[p] + 8, timeout=15, what="refused visitors' fds")
    e = EchoServer(port=port)
    try:
        wait_tunnel(t.service_port)
    finally:
        e.stop()



TCP_SYN_SENT = 2


def syn_sent_to(port):
    """Whether a socket of this network namespace is in SYN-SENT towards
    127.0.0.1:port (/proc/net/tcp: the remote address, then the state)."""
    want = "0100007F:%04X" % port
    with open("/proc/net/tcp") as f:
        next(f)
        return any(fields[2] == want and int(fields[3], 16) == TCP_SYN_SENT
                   for fields in (line.split() for line in f))


def test_local_service_slow_to_answer(procs):
    """On loopback a connect() usually completes inside the call, and the
    client goes on at once. A local service whose accept queue is full drops
    the SYN instead: the client then waits for the kernel's retry (about 1 s),
    and the visitor's bytes pass both ways once the queue has room."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)                       # room for one connection waiting
    ls.settimeout(10)
    port = ls.getsockname()[1]
    t = Tunnel(procs, local_port=port).start()
    t.client.wait_log("control channel established", timeout=15)
    filler = socket.create_connection(("127.0.0.1", port), timeout=5)
    probe = socket.socket()
    probe.setblocking(False)
    assert probe.connect_ex(("127.0.0.1", port)) == errno.EINPROGRESS
    state = probe.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
    probe.close()
    assert state == TCP_SYN_SENT, "the accept queue should be full"
    v = socket.create_connection(("127.0.0.1", t.service_port), timeout=10)
    try:
        v.sendall(b"hello")
        # the client's connect is waiting now: its SYN was dropped, and the
        # kernel will retry it (the path this test is about)
        wait_until(lambda: syn_sent_to(port), 10, interval=0.01,
                   what="the client's connect to wait in SYN-SENT")
        ls.accept()[0].close()         # the filler's: room in the queue
        filler.close()
        conn, _ = ls.accept()          # the client's, after its SYN's retry
        try:
            conn.settimeout(10)
            assert conn.recv(5) == b"hello"
            conn.sendall(b"world")
            assert v.recv(5) == b"world"
        finally:
            conn.close()
    finally:
        v.close()
        ls.close()

def _limited(args, nofile):
    """The command under prlimit (which sets the limit, then execs it)."""
    return ["prlimit", f"--nofile={nofile}:{nofile}", *args]


def _echoed_and_closed(socks):
    """How many of the visitors (each sent b"x") got their echo, and how many
    were closed or reset without one, so far."""
    served = closed = 0
    for s in socks:
        try:
            d = s.recv(1, socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue
        except OSError:
            closed += 1
            continue
        if d:
            served += 1
        else:
            closed += 1
    return served, closed


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) is not installed")
@pytest.mark.parametrize("side", ["server", "client"])
def test_fd_exhaustion(procs, echo, side, tmp_path):
    """One side runs with 64 fds; 120 visitors exhaust them. It serves what its
    fds allow, sheds the rest (the server closes them), does not spin, and
    serves again once the visitors are gone."""
    raise_nofile(4096)
    t = Tunnel(procs, local_port=echo.port, env={"RATHOLE_LOG": "info"})
    (tmp_path / "server.toml").write_text(t.server_text)
    (tmp_path / "client.toml").write_text(t.client_text)
    for name in ("server.toml", "client.toml"):
        os.chmod(tmp_path / name, 0o600)
    env = {"RATHOLE_LOG": "info"}
    srv_args = [RATHOLE, str(tmp_path / "server.toml")]
    cli_args = [RATHOLE, str(tmp_path / "client.toml")]
    if side == "server":
        srv_args = _limited(srv_args, 64)
    else:
        cli_args = _limited(cli_args, 64)
    t.server = procs.start(srv_args, env=env)
    t.server.wait_log("listening on 127.0.0.1:%d" % t.server_port)
    t.client = procs.start(cli_args, env=env)
    t.server.wait_log("service echo: listening on", timeout=15)
    wait_tunnel(t.service_port)
    victim = t.server if side == "server" else t.client
    visitors = []
    try:
        for _ in range(120):
            s = socket.socket()
            s.settimeout(5)
            try:
                s.connect(("127.0.0.1", t.service_port))
                s.sendall(b"x")
            except OSError:
                pass
            visitors.append(s)
        # the side uses what it may (a reserve stays free for its channels)
        wait_until(lambda: fd_count(victim.pid) >= 48, 15, what="the fds to be used up")
        time.sleep(1)
        cpu0 = cpu_seconds(victim.pid)
        time.sleep(3)
        spent = cpu_seconds(victim.pid) - cpu0
        bound = 1.0 if is_asan(RATHOLE) else 0.5
        assert spent < bound, f"{side} used {spent:.2f} s of CPU in 3 s while out of fds"
        assert victim.alive()
        assert t.server.alive() and t.client.alive()
        served, closed = _echoed_and_closed(visitors)
        assert served >= 10, f"only {served} of 120 visitors served while out of fds"
        if side == "server":
            # those it cannot serve are closed, not left in the accept queue
            assert closed > 0, f"{served} visitors served, none closed"
    finally:
        for s in visitors:
            s.close()
    # the fds come back and the tunnel serves again
    wait_fds_at_most(victim.pid, 40, timeout=30, what="fds after the visitors left")
    wait_tunnel(t.service_port, timeout=30)
    assert echo_once(t.service_port, b"recovered") == b"recovered"


# ---- the network link goes down (network namespaces) ----

def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=check)


def _netns_permitted():
    if shutil.which("ip") is None or os.geteuid() != 0:
        return False
    name = f"rhprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, timeout=10)
    if r.returncode != 0:
        return False
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
    return True


NS_OK = _netns_permitted() if sys.platform.startswith("linux") else False

# A subnet that exists only on the veth pair between our own two namespaces.
NS_NET = "10.254.77"

ECHO_IN_NS = """
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64)
def serve(c):
    with c:
        while True:
            d = c.recv(65536)
            if not d: break
            c.sendall(d)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

PROBE_IN_NS = """
import socket, sys
try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3) as s:
        s.sendall(b"ping"); s.shutdown(socket.SHUT_WR)
        sys.exit(0 if s.recv(16) == b"ping" else 1)
except OSError:
    sys.exit(1)
"""


def _client_connections(ns, server_port):
    """The local ends (addr:port) of the established connections to the
    server, seen from the client's namespace."""
    r = _ip("netns", "exec", ns, "ss", "-tnH", "state", "established",
            "dst", f"{NS_NET}.1:{server_port}")
    return {line.split()[2] for line in r.stdout.splitlines() if line.strip()}


def _tunnel_works_in(ns, port):
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", PROBE_IN_NS, str(port)],
                       capture_output=True, timeout=15)
    return r.returncode == 0


@pytest.mark.skipif(not NS_OK, reason="needs root and permission for `ip netns add`")
def test_link_down_heartbeat_reconnect(procs, tmp_path):
    """Server and client in two namespaces joined by a veth pair. The link
    goes down: the client notices through the heartbeat timeout; when the
    link is back it reconnects and the tunnel works again."""
    tag = os.getpid() % 100000
    ns_s, ns_c = f"rhs{tag}", f"rhc{tag}"
    veth_s, veth_c = f"rhvs{tag}", f"rhvc{tag}"
    started = []
    try:
        _ip("netns", "add", ns_s)
        _ip("netns", "add", ns_c)
        _ip("link", "add", veth_s, "type", "veth", "peer", "name", veth_c)
        _ip("link", "set", veth_s, "netns", ns_s)
        _ip("link", "set", veth_c, "netns", ns_c)
        for ns, dev, addr in ((ns_s, veth_s, f"{NS_NET}.1/24"), (ns_c, veth_c, f"{NS_NET}.2/24")):
            _ip("-n", ns, "addr", "add", addr, "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        sp, vp, lp = 23330, 23331, 23332     # each namespace has its own port space
        server = (f'[server]\nbind_addr = "{NS_NET}.1:{sp}"\nheartbeat_interval = 1\n'
                  f'[server.services.echo]\ntoken = "ns-token"\nbind_addr = "127.0.0.1:{vp}"\n')
        client = (f'[client]\nremote_addr = "{NS_NET}.1:{sp}"\nheartbeat_timeout = 3\n'
                  f'retry_interval = 1\n'
                  f'[client.services.echo]\ntoken = "ns-token"\nlocal_addr = "127.0.0.1:{lp}"\n')
        for name, text in (("server.toml", server), ("client.toml", client)):
            (tmp_path / name).write_text(text)
            os.chmod(tmp_path / name, 0o600)
        env = {"RATHOLE_LOG": "info"}
        echo = procs.start(["ip", "netns", "exec", ns_c, sys.executable, "-c", ECHO_IN_NS, str(lp)])
        srv = procs.start(["ip", "netns", "exec", ns_s, RATHOLE, str(tmp_path / "server.toml")], env=env)
        cli = procs.start(["ip", "netns", "exec", ns_c, RATHOLE, str(tmp_path / "client.toml")], env=env)
        started = [cli, srv, echo]
        srv.wait_log("service echo: listening on", timeout=15)
        wait_until(lambda: _tunnel_works_in(ns_s, vp), 20, interval=0.2, what="the tunnel across namespaces")
        before = _client_connections(ns_c, sp)
        assert before, "the client's channels to the server"
        # cut the link
        _ip("-n", ns_c, "link", "set", veth_c, "down")
        assert not _tunnel_works_in(ns_s, vp)   # nothing crosses a cut link
        # the heartbeat timeout (3 s) ends the client's control channel
        # while the link is still down
        wait_until(lambda: before - _client_connections(ns_c, sp), 15, interval=0.2,
                   what="the client to give up its control channel")
        assert "no heartbeat from the server for 3 s" in cli.stderr
        _ip("-n", ns_c, "link", "set", veth_c, "up")
        # the client reconnects on new connections: a client that never gave
        # up its old control channel would find it working again now
        wait_until(lambda: _tunnel_works_in(ns_s, vp), 20, interval=0.2,
                   what="the tunnel after the link came back")
        wait_until(lambda: not (before & _client_connections(ns_c, sp)), 15, interval=0.2,
                   what="the connections from before the cut to be gone")
        assert srv.alive() and cli.alive()
    finally:
        for p in started:
            p.stop()
        for ns in (ns_s, ns_c):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


# ---- a reload, then new connections (found by the sanitized suite) ----

@pytest.mark.parametrize("pattern", [None, "Noise_XX_25519_ChaChaPoly_BLAKE2s"])
def test_noise_after_unchanged_reload(procs, echo, pattern):
    """A reload with unchanged transport settings keeps the transport but
    frees the old config: the Noise transport used the config's pattern
    string for every new handshake (a use after free, seen by ASan). New
    control and data channels after the reload must still work."""
    r = subprocess.run([RATHOLE, "--genkey"], capture_output=True, text=True, timeout=10)
    priv, pub = r.stdout.split()[2], r.stdout.split()[5]
    cpriv = subprocess.run([RATHOLE, "--genkey"], capture_output=True, text=True,
                           timeout=10).stdout.split()[2]
    pat = f'pattern = "{pattern}"\n' if pattern else ""
    server = ('[server.transport]\ntype = "noise"\n[server.transport.noise]\n'
              f'{pat}local_private_key = "{priv}"\n')
    client = ('[client.transport]\ntype = "noise"\n[client.transport.noise]\n'
              f'{pat}' + (f'local_private_key = "{cpriv}"\n' if pattern else
                          f'remote_public_key = "{pub}"\n'))
    t = Tunnel(procs, local_port=echo.port, transport_server=server, transport_client=client,
               env={"RATHOLE_LOG": "info"}).start()
    wait_tunnel(t.service_port)
    for side in (t.server, t.client):
        side.signal(signal.SIGHUP)
        side.wait_log("reload: +0 added, -0 removed, ~0 changed, 1 unchanged")
    # fresh data channels (the pool is used up and refilled) and a fresh
    # control channel (the client restarts) both handshake after the reload
    for i in range(12):
        assert echo_once(t.service_port, b"after reload %d" % i) == b"after reload %d" % i
    t.client.stop()
    t.start_client()
    t.server.wait_log("service echo: control channel established", count=2, timeout=15)
    wait_tunnel(t.service_port)
    assert t.server.alive()
