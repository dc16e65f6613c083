"""Connection storms against a side that is short of file descriptors, and
visitors that hang up while they wait for a data channel (issue 23, part 1).

- A side under RLIMIT_NOFILE 64 takes 300 visitors at once, held for 4 s and
  then closed: once they are gone the tunnel echoes again within 2 s (the
  server sheds the visitors it cannot serve instead of letting them rot, and
  never gives up its control and data channels for them). The client opens
  a data channel only with a descriptor left for its local connection, so
  it closes none of the visitors (the server holds them until it can).
- The same storm with visitors that each send a byte: every one of them is
  served or closed by the server within 8 s, none left waiting for a data
  channel there is no descriptor for (the reserve kept for channels).
- Visitors that hang up while the client is stopped (SIGSTOP: no data channel
  can come) are closed at once: no CLOSE-WAIT socket, no fd left 1 s later.
- A visitor that sends its request and half-closes while it waits is still
  served (`printf req | nc -N`).
- With `balance`, every replica beyond a service's first keeps a pool's worth
  more descriptors free for channels (rathole_fds_kept_for_channels), and a
  visitor that arrives in the very turn its replica's client died is given a
  live channel of another replica, not one of the dead client's."""
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import time

import pytest

from conftest import RATHOLE, free_port, wait_until
from helpers import (Tunnel, client_config, connecting, echo_once, http, metric, recv_all,
                     recv_exact, server_config, wait_tunnel)
from proc_stats import fd_count, raise_nofile

NOFILE = 64
STORM = 300
HOLD_S = 4.0
RECOVER_S = 2.0

TCP_CLOSE_WAIT = 0x08


def close_wait_count(port):
    """Sockets in CLOSE-WAIT whose local port is `port` (IPv4, this netns)."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, state = fields[1], int(fields[3], 16)
            if int(local.rsplit(":", 1)[1], 16) == port and state == TCP_CLOSE_WAIT:
                n += 1
    return n


def closed_by_tunnel(socks):
    """How many of the (silent) visitors the tunnel has closed or reset."""
    n = 0
    for s in socks:
        try:
            if s.recv(1, socket.MSG_DONTWAIT) == b"":
                n += 1
        except BlockingIOError:
            pass
        except OSError:
            n += 1
    return n


def echo_within(port, deadline):
    """Tries to echo through the tunnel until the monotonic deadline; returns
    the time of the first success, or None. A try that is closed or reset
    (the visitor was shed) is followed by another one."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=left) as s:
                s.sendall(b"ping")
                s.shutdown(socket.SHUT_WR)
                if recv_all(s) == b"ping":
                    return time.monotonic()
        except OSError:
            pass
        time.sleep(0.05)


def start_limited(procs, t, tmp_path, side):
    """The tunnel with `side` under RLIMIT_NOFILE NOFILE (soft and hard: rathole
    raises its soft limit to the hard one)."""
    env = {"RATHOLE_LOG": "info"}
    args = {}
    for who, text in (("server", t.server_text), ("client", t.client_text)):
        path = tmp_path / f"{who}.toml"
        path.write_text(text)
        os.chmod(path, 0o600)
        args[who] = [RATHOLE, str(path)]
        if who == side:
            args[who] = ["prlimit", f"--nofile={NOFILE}:{NOFILE}", *args[who]]
    t.server = procs.start(args["server"], env=env)
    t.server.wait_log("listening on 127.0.0.1:%d" % t.server_port)
    t.client = procs.start(args["client"], env=env)
    t.server.wait_log("service echo: listening on", timeout=15)
    wait_tunnel(t.service_port)


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) is not installed")
@pytest.mark.parametrize("side", ["server", "client"])
def test_storm_with_few_fds_recovers(procs, echo, side, tmp_path):
    """300 visitors at once against a side with 64 fds, held 4 s, then gone:
    the tunnel echoes again within 2 s, and the side's fds come back."""
    raise_nofile(4096)
    t = Tunnel(procs, local_port=echo.port)
    start_limited(procs, t, tmp_path, side)
    victim = t.server if side == "server" else t.client
    time.sleep(0.3)                     # the pool tops up
    idle_fds = fd_count(victim.pid)
    visitors = []
    try:
        for _ in range(STORM):
            visitors.append(connecting(t.service_port))
        time.sleep(HOLD_S)
        assert victim.alive()
        if side == "client":
            # the server holds what the client cannot take yet; the client
            # wastes no data channel on a visitor it has no fd for
            shed = closed_by_tunnel(visitors)
            assert shed == 0, f"the client closed {shed} visitors"
    finally:
        for s in visitors:
            s.close()
    gone = time.monotonic()
    ok = echo_within(t.service_port, gone + RECOVER_S)
    assert ok is not None, f"no echo within {RECOVER_S} s after the visitors left"
    print(f"{side}: first echo {ok - gone:.2f} s after the storm")
    # and it keeps working, with its fds back (the pool may be fuller)
    assert echo_once(t.service_port, b"after the storm", timeout=5) == b"after the storm"
    wait_until(lambda: fd_count(victim.pid) <= idle_fds + 24, 10, interval=0.1,
               what=f"the {side}'s fds to come back (idle: {idle_fds})")
    assert t.server.alive() and t.client.alive()


def speaking_storm(port, n, limit_s):
    """n visitors at once, each sending a byte; until each has its byte back
    (served) or was closed or reset (shed), for at most limit_s seconds.
    Returns (sockets, served, shed); the sockets stay open."""
    sel = selectors.DefaultSelector()
    socks, served, shed, sent = [], set(), set(), set()
    for _ in range(n):
        s = connecting(port)
        socks.append(s)
        sel.register(s, selectors.EVENT_WRITE)
    deadline = time.monotonic() + limit_s
    try:
        while len(served) + len(shed) < n and time.monotonic() < deadline:
            for key, ev in sel.select(0.2):
                s = key.fileobj
                if s not in sent and ev & selectors.EVENT_WRITE:
                    try:
                        s.send(b"x")
                        sent.add(s)
                        sel.modify(s, selectors.EVENT_READ)
                        continue
                    except BlockingIOError:
                        continue
                    except OSError:
                        d = b""
                else:
                    try:
                        d = s.recv(16)
                    except BlockingIOError:
                        continue
                    except OSError:
                        d = b""
                (served if d == b"x" else shed).add(s)
                sel.unregister(s)
    finally:
        sel.close()
    return socks, len(served), len(shed)


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) is not installed")
def test_storm_visitors_served_or_shed_at_once(procs, echo, tmp_path):
    """300 visitors at once, each sending a byte, against a server with 64
    fds: each one is served (its byte comes back) or closed by the server
    well within the 10 s a visitor may wait. None is left in the accept queue
    or waiting for a data channel that no descriptor is left for (without
    the reserve kept for channels, the visitors took every fd, the data
    channels could not be accepted and the visitors waited 10 s for
    nothing). Then they leave, and the tunnel echoes again within 2 s."""
    raise_nofile(4096)
    t = Tunnel(procs, local_port=echo.port)
    start_limited(procs, t, tmp_path, "server")
    time.sleep(0.3)                     # the pool tops up
    socks, served, shed = speaking_storm(t.service_port, STORM, 8.0)
    try:
        assert served + shed == STORM, \
            f"{STORM - served - shed} of {STORM} visitors neither served nor closed " \
            f"within 8 s ({served} served, {shed} closed)"
        assert served >= 8, f"only {served} visitors served"
        print(f"{served} served, {shed} shed")
        assert t.server.alive()
    finally:
        for s in socks:
            s.close()
    gone = time.monotonic()
    assert echo_within(t.service_port, gone + RECOVER_S) is not None, \
        f"no echo within {RECOVER_S} s after the visitors left"


def stopped_client_tunnel(procs, echo, holders):
    """A tunnel whose client is stopped, with the server's pool drained by
    `holders` visitors that stay connected (the rest of them wait)."""
    t = Tunnel(procs, local_port=echo.port, env={"RATHOLE_LOG": "info"}).start()
    wait_tunnel(t.service_port)
    time.sleep(0.3)                     # the pool tops up
    t.client.signal(signal.SIGSTOP)
    held = [socket.create_connection(("127.0.0.1", t.service_port), timeout=5)
            for _ in range(holders)]
    time.sleep(0.3)
    return t, held


def test_visitors_hanging_up_while_waiting_are_freed(procs, echo):
    """50 visitors that hang up (25 with a FIN, 25 with a reset) while the
    client is stopped and no data channel can come: 1 s later the server holds
    no CLOSE-WAIT socket on the service port and none of their fds."""
    t, held = stopped_client_tunnel(procs, echo, holders=20)
    try:
        base = fd_count(t.server.pid)
        for i in range(50):
            s = socket.create_connection(("127.0.0.1", t.service_port), timeout=5)
            if i % 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        # the server has accepted them all (the holders' fds are counted in base)
        time.sleep(1.0)
        assert close_wait_count(t.service_port) == 0, \
            f"{close_wait_count(t.service_port)} CLOSE-WAIT sockets on the service port"
        assert fd_count(t.server.pid) <= base, \
            f"server holds {fd_count(t.server.pid)} fds, {base} before the visitors"
        assert t.server.alive()
    finally:
        t.client.signal(signal.SIGCONT)
        for s in held:
            s.close()
    wait_tunnel(t.service_port)


def test_half_closed_waiting_visitor_is_served(procs, echo):
    """A visitor that sends its request and half-closes while it waits for a
    data channel (`printf req | nc -N`) is served when the client is back."""
    t, held = stopped_client_tunnel(procs, echo, holders=20)
    try:
        v = socket.create_connection(("127.0.0.1", t.service_port), timeout=10)
        v.sendall(b"request")
        v.shutdown(socket.SHUT_WR)
        quiet = socket.create_connection(("127.0.0.1", t.service_port), timeout=10)
        quiet.shutdown(socket.SHUT_WR)      # nothing sent: taken as gone
        time.sleep(0.5)
        assert close_wait_count(t.service_port) == 1
    finally:
        t.client.signal(signal.SIGCONT)
        for s in held:
            s.close()
    with v, quiet:
        assert recv_all(v) == b"request"
        assert quiet.recv(16) == b""


# ---- several clients of one service (balance) ----

class Balanced:
    """A server whose service "svc" (tcp, balance = "round_robin") and "dns"
    (udp) forward to `echo`; clients added one by one (each a replica)."""

    def __init__(self, procs, echo_port):
        self.procs, self.echo_port = procs, echo_port
        self.port, self.api = free_port(), free_port()
        self.service_port = free_port()
        self.clients = []
        text = server_config(self.port, {
            "svc": dict(bind_port=self.service_port, token="t",
                        extra='balance = "round_robin"\n'),
            "dns": dict(bind_port=free_port(socket.SOCK_DGRAM), token="u", type="udp")},
            extra=f'[server.api]\nbind_addr = "127.0.0.1:{self.api}"\n')
        self.server = procs.rathole(text, name="server.toml")
        self.server.wait_log("listening on 127.0.0.1:%d" % self.port)

    def add_client(self):
        text = client_config(self.port, {"svc": dict(local_port=self.echo_port, token="t")})
        c = self.procs.rathole(text, name=f"client-{len(self.clients)}.toml")
        self.clients.append(c)
        return c

    def metrics(self):
        code, text = http(f"http://127.0.0.1:{self.api}/metrics")
        assert code == 200, text
        return text

    def kept(self):
        return int(metric(self.metrics(), "rathole_fds_kept_for_channels"))

    def wait_replicas(self, n, pooled=8):
        def ready():
            code, body = http(f"http://127.0.0.1:{self.api}/api/status")
            svc = [s for s in json.loads(body)["services"] if s["name"] == "svc"][0]
            return len(svc["replicas"]) == n and \
                all(r["data_channels_pooled"] >= pooled for r in svc["replicas"])
        wait_until(ready, 15, interval=0.05, what=f"{n} replicas with {pooled} pooled channels")


def test_each_replica_keeps_a_pool_of_descriptors(procs, echo):
    """The descriptors kept free for control and data channels: 8, plus a
    pool per service (8 tcp, 2 udp), plus 8 per replica of "svc" beyond its
    first; they grow and shrink with the replicas."""
    b = Balanced(procs, echo.port)
    base = 8 + 8 + 2
    assert b.kept() == base
    for n in (1, 2, 3):
        b.add_client()
        b.wait_replicas(n)
        assert b.kept() == base + 8 * (n - 1), f"with {n} replicas"
    b.clients[0].stop(sig=signal.SIGKILL)
    b.wait_replicas(2)
    assert b.kept() == base + 8
    for c in b.clients[1:]:
        c.stop(sig=signal.SIGKILL)
    b.wait_replicas(0)
    assert b.kept() == base


def test_visitors_as_a_replica_dies_get_a_live_channel(procs, echo):
    """The server is stopped (SIGSTOP) while 6 visitors connect, each with its
    bytes, and then client A is killed: when the server goes on, the visitors
    and the ends of A's control and pooled channels come in the same turn,
    visitors first. Round robin picks A for half of them: A's pooled channels
    are seen to be dead before one is handed out, and the visitors go to B."""
    b = Balanced(procs, echo.port)
    a = b.add_client()
    b.wait_replicas(1)
    b.add_client()
    b.wait_replicas(2)
    visitors = []
    b.server.signal(signal.SIGSTOP)
    try:
        for i in range(6):
            v = socket.create_connection(("127.0.0.1", b.service_port), timeout=10)
            v.sendall(b"visitor %d" % i)
            visitors.append(v)
        a.stop(sig=signal.SIGKILL)      # returns once the process is reaped
        time.sleep(0.3)                 # its ends reach the server's sockets
    finally:
        b.server.signal(signal.SIGCONT)
    served = []
    for i, v in enumerate(visitors):
        with v:
            try:
                served.append(recv_exact(v, len(b"visitor %d" % i)) == b"visitor %d" % i)
            except (OSError, AssertionError):
                served.append(False)
    assert all(served), f"served: {served}"
    b.wait_replicas(1)
