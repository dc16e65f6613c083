"""Several clients serve one service (issue 24, the server's side):
`balance = "round_robin" | "least_connections"` on a server service makes
every authenticated client a replica with its own pool of data channels.

Each client forwards to its own local service, which answers with a tag
naming it (A or B): a visitor learns which replica carried it from the
bytes it gets back. Real processes on loopback; the reference client
(../shared/peers/rathole) serves beside ours where it is present."""
import json
import os
import signal
import socket
import struct
import threading
import time

import pytest

from conftest import REPO, free_port, run_rathole, wait_until
from helpers import client_config, closed_by_peer, http, metric, server_config

REFERENCE = os.environ.get("RATHOLE_REFERENCE") or os.path.join(
    os.path.dirname(REPO), "shared", "peers", "rathole")


class TagService:
    """A TCP service that answers every read with its tag before the bytes
    read (b"A" + data): the visitor learns which client's service it reached."""

    def __init__(self, tag):
        self.tag = tag
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._t = threading.Thread(target=self._accept, daemon=True)
        self._t.start()

    def _accept(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(60)
        with c:
            try:
                while not self._stop:
                    d = c.recv(65536)
                    if not d:
                        return
                    c.sendall(self.tag + d)
            except OSError:
                return

    def stop(self):
        self._stop = True
        self.sock.close()
        self._t.join(5)


class UdpTagService:
    """A UDP service that answers each datagram with its tag and the bytes."""

    def __init__(self, tag):
        self.tag = tag
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop:
            try:
                d, a = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self.sock.sendto(self.tag + d, a)

    def stop(self):
        self._stop = True
        self._t.join(5)
        self.sock.close()


@pytest.fixture
def tags():
    made = []

    def make(tag, udp=False):
        s = UdpTagService(tag) if udp else TagService(tag)
        made.append(s)
        return s
    yield make
    for s in made:
        s.stop()


class Ha:
    """A server with one service "svc" (balance as given) and its admin API;
    clients added one by one, each forwarding to its own tagged service."""

    def __init__(self, procs, tags, balance="round_robin", udp=False, token="t", vhost=False):
        self.procs, self.tags, self.udp, self.token = procs, tags, udp, token
        self.http_port = free_port() if vhost else None
        self.port = free_port()
        self.api = free_port()
        self.service_port = free_port(socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        self.balance = balance
        self.clients, self.locals = {}, {}
        self.server = procs.rathole(self.server_text(balance), name="server.toml")
        self.server.wait_log("listening on 127.0.0.1:%d" % self.port)

    def server_text(self, balance):
        extra = f'balance = "{balance}"\n' if balance else ""
        head = ""
        if self.http_port:
            head = f'http_bind_addr = "127.0.0.1:{self.http_port}"\n'
            extra += 'hostnames = ["site.test"]\n'
        return server_config(self.port, {"svc": dict(
            bind_port=self.service_port, token=self.token, type="udp" if self.udp else "tcp",
            extra=extra)}, extra=head + f'[server.api]\nbind_addr = "127.0.0.1:{self.api}"\n')

    def client_text(self, local_port, extra=""):
        return client_config(self.port, {"svc": dict(
            local_port=local_port, token=self.token, type="udp" if self.udp else "tcp",
            extra=extra)})

    def add_client(self, tag, binary=None, wait=True, extra=""):
        """Starts a client for the service whose local service answers with tag."""
        local = self.tags(tag, udp=self.udp)
        self.locals[tag] = local
        name = f"client-{tag.decode()}.toml"
        path = self.procs.tmp / name
        path.write_text(self.client_text(local.port, extra))
        if binary:
            p = self.procs.start([binary, str(path)], env={"RUST_LOG": "info"})
        else:
            p = self.procs.rathole(self.client_text(local.port, extra), name=name)
        self.clients[tag] = p
        if wait:
            n = len([c for c in self.clients.values() if c.alive()])
            self.wait_replicas(n)
        return p

    def status(self):
        code, body = http(f"http://127.0.0.1:{self.api}/api/status")
        assert code == 200, body
        (svc,) = json.loads(body)["services"]
        return svc

    def replicas(self):
        """The live replicas (not those that left and still carry connections)."""
        return [r for r in self.status()["replicas"] if r["control_channel"]]

    def wait_replicas(self, n, pooled=1, timeout=15):
        """Until n replicas are up, each with `pooled` idle data channels (a
        UDP replica's spare: its channel is taken first)."""
        wait_until(lambda: len(self.replicas()) == n and
                   all(r["data_channels_pooled"] >= pooled for r in self.replicas()),
                   timeout, interval=0.05, what=f"{n} replicas with {pooled} pooled channels "
                   f"each; status: {self.status()}")


def visit(port, data=b"x", timeout=10):
    """One visitor: sends data, returns the tag of the service that answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        c.sendall(data)
        got = b""
        while len(got) < len(data) + 1:
            d = c.recv(65536)
            if not d:
                break
            got += d
    assert got[1:] == data, got
    return got[:1]


def hold(port):
    """A visitor that stays connected: (socket, tag)."""
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.sendall(b"h")
    got = b""
    while len(got) < 2:
        d = c.recv(16)
        assert d, "closed before the answer"
        got += d
    assert got[1:] == b"h", got
    return c, got[:1]


def still_serves(c, tag):
    c.sendall(b"again")
    got = b""
    while len(got) < 6:
        d = c.recv(16)
        if not d:
            return False
        got += d
    return got == tag + b"again"


# ---- the key ----

SERVER_HEAD = '[server]\nbind_addr = "127.0.0.1:2333"\n[server.services.s]\ntoken = "t"\n'


@pytest.mark.parametrize("policy", ["round_robin", "least_connections"])
def test_check_reports_balance(tmp_path, policy):
    text = SERVER_HEAD + f'bind_addr = "127.0.0.1:5202"\nbalance = "{policy}"\n'
    r = run_rathole(["--check"], text, tmp_path)
    assert r.returncode == 0, r.stderr
    assert f", balance {policy}," in r.stdout, r.stdout
    r = run_rathole(["--check"], SERVER_HEAD + 'bind_addr = "127.0.0.1:5202"\n', tmp_path)
    assert r.returncode == 0 and ", balance" not in r.stdout, r.stdout


@pytest.mark.parametrize("text,msg", [
    (SERVER_HEAD + 'bind_addr = "a:2"\nbalance = "random"\n',
     '6: server.services.s.balance: expected "round_robin" or "least_connections", found "random"'),
    (SERVER_HEAD + 'bind_addr = "a:2"\nbalance = true\n',
     "6: server.services.s.balance: expected a string"),
    ('[client]\nremote_addr = "a:1"\n[client.services.s]\ntoken = "t"\nlocal_addr = "a:2"\n'
     'balance = "round_robin"\n', '6: unknown key "balance" in [client.services.s]'),
])
def test_bad_balance_is_an_error(tmp_path, text, msg):
    for args in ([], ["--check"]):
        r = run_rathole(args, text, tmp_path, name="bad.toml")
        assert r.returncode == 1
        assert f"bad.toml:{msg}" in r.stderr, r.stderr


def test_balance_over_the_api(procs, tags):
    """A service made through the admin API with balance: checked as the
    file's key is, shown back, and its clients share its visitors."""
    from test_api import call
    ha = Ha(procs, tags)
    port = free_port()
    code, _, doc = call(ha.api, "PUT", "/api/services/web",
                        {"bind_addr": f"127.0.0.1:{port}", "token": "t", "balance": "fastest"})
    assert code == 400 and doc["key"] == "balance", doc
    code, _, doc = call(ha.api, "PUT", "/api/services/web",
                        {"bind_addr": f"127.0.0.1:{port}", "token": "t",
                         "balance": "least_connections"})
    assert code == 201, doc
    code, _, doc = call(ha.api, "GET", "/api/services/web")
    assert doc["config"]["balance"] == "least_connections", doc
    for tag in (b"A", b"B"):
        local = tags(tag)
        procs.rathole(client_config(ha.port, {"web": dict(local_port=local.port, token="t")}),
                      name=f"web-{tag.decode()}.toml")

    def web():
        code, body = http(f"http://127.0.0.1:{ha.api}/api/status")
        return next(s for s in json.loads(body)["services"] if s["name"] == "web")
    wait_until(lambda: len(web()["replicas"]) == 2 and
               all(r["data_channels_pooled"] >= 2 for r in web()["replicas"]), 15,
               what="two replicas of web")
    held = [hold(port) for _ in range(2)]
    assert sorted(t for _, t in held) == [b"A", b"B"]	# the lighter one each time
    for c, _ in held:
        c.close()


# ---- TCP ----

def test_round_robin_splits_evenly(procs, tags):
    ha = Ha(procs, tags)
    ha.add_client(b"A")
    ha.add_client(b"B")
    counts = {b"A": 0, b"B": 0}
    for _ in range(200):
        counts[visit(ha.service_port)] += 1
    assert 80 <= counts[b"A"] <= 120 and 80 <= counts[b"B"] <= 120, counts
    # the figures per replica and their sums
    st = ha.status()
    assert st["balance"] == "round_robin"
    assert sorted(r["connections_total"] for r in st["replicas"]) == sorted(counts.values())
    assert st["connections_total"] == 200
    wait_until(lambda: ha.status()["connections_active"] == 0, 10, what="connections to end")
    st = ha.status()
    assert all(r["bytes_in"] > 0 and r["bytes_out"] > r["bytes_in"] for r in st["replicas"]), st
    assert st["bytes_in"] == sum(r["bytes_in"] for r in st["replicas"]) == 200
    assert st["bytes_out"] == sum(r["bytes_out"] for r in st["replicas"]) == 400
    code, text = http(f"http://127.0.0.1:{ha.api}/metrics")
    assert code == 200
    assert metric(text, "rathole_service_replicas", service="svc") == 2
    for r in st["replicas"]:
        assert metric(text, "rathole_replica_connections_total", service="svc",
                      replica=r["peer"]) == r["connections_total"]
        assert metric(text, "rathole_replica_bytes_total", service="svc", replica=r["peer"],
                      direction="in") == r["bytes_in"]
        assert metric(text, "rathole_replica_data_channels_pooled", service="svc",
                      replica=r["peer"]) == r["data_channels_pooled"]
    # the joins were logged, once each
    assert ha.server.stderr.count("control channel established with") == 2


def sockets_to(pid, port):
    """The local addresses ("127.0.0.1:N") of process pid's TCP connections
    to port (its control and data channels when port is the server's)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    out = set()
    with open(f"/proc/{pid}/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, remote, inode = line.split()[1], line.split()[2], line.split()[9]
            if inode in inodes and int(remote.split(":")[1], 16) == port:
                ip, p = local.split(":")
                out.add("%s:%d" % (socket.inet_ntoa(struct.pack("<I", int(ip, 16))), int(p, 16)))
    return out


def test_figures_per_replica(procs, tags):
    """Each replica's figures, the same in /api/status and /metrics: its
    peer (its client's address), the connections it carries, the visitors it
    served and their bytes each way. A replica whose control channel goes
    (here: its client withdraws the service, its local side being down) while
    connections still run through it stays listed, control channel down,
    until they end. One log line per join and per leave."""
    ha = Ha(procs, tags)
    ha.add_client(b"A", extra="health_check_interval = 1")
    ha.add_client(b"B")
    ha.wait_replicas(2, pooled=5)     # round robin alternates among replicas with channels
    peer = {}
    for tag, p in ha.clients.items():
        mine = sockets_to(p.pid, ha.port)
        (peer[tag],) = [r["peer"] for r in ha.replicas() if r["peer"] in mine]
    held = [hold(ha.service_port) for _ in range(5)]
    n = {t: sum(1 for _, h in held if h == t) for t in (b"A", b"B")}
    assert sorted(n.values()) == [2, 3], n
    sent, got = {b"A": 0, b"B": 0}, {b"A": 0, b"B": 0}
    for i, (c, t) in enumerate(held):
        data = b"y" * (7 * i + 3)
        c.sendall(data)
        back = b""
        while len(back) < len(data) + 1:
            back += c.recv(4096)
        assert back == t + data
        sent[t] += 1 + len(data)         # and the b"h" of hold()
        got[t] += 2 + len(back)

    def check(tag, up, active, total):
        st = ha.status()
        (r,) = [r for r in st["replicas"] if r["peer"] == peer[tag]]
        want = dict(control_channel=up, connections_active=active, connections_total=total,
                    bytes_in=sent[tag], bytes_out=got[tag])
        assert {k: r[k] for k in want} == want, (tag, st)
        code, text = http(f"http://127.0.0.1:{ha.api}/metrics")
        lab = dict(service="svc", replica=peer[tag])
        assert metric(text, "rathole_replica_control_channel_up", **lab) == int(up)
        assert metric(text, "rathole_replica_connections_active", **lab) == active
        assert metric(text, "rathole_replica_connections_total", **lab) == total
        assert metric(text, "rathole_replica_bytes_total", **lab, direction="in") == sent[tag]
        assert metric(text, "rathole_replica_bytes_total", **lab, direction="out") == got[tag]
        return st, text

    for t in (b"A", b"B"):
        check(t, True, n[t], n[t])
    ha.server.wait_log("control channel established with", count=2)
    assert ha.server.stderr.count("control channel established with") == 2

    # A's local service stops taking connections (the ones it has go on):
    # its client withdraws, and A stays listed for its connections in flight
    ha.locals[b"A"].sock.close()
    wait_until(lambda: len(ha.replicas()) == 1, 20, what="A to withdraw")
    assert {visit(ha.service_port) for _ in range(4)} == {b"B"}
    for c, t in held:
        if t == b"A":
            assert still_serves(c, b"A")
            sent[b"A"] += 5
            got[b"A"] += 6
    st, text = check(b"A", False, n[b"A"], n[b"A"])
    assert len(st["replicas"]) == 2 and st["connections_active"] == 5, st
    assert metric(text, "rathole_service_replicas", service="svc") == 1
    ha.server.wait_log(f"control channel from {peer[b'A']} closed")
    assert ha.server.stderr.count(f"control channel from {peer[b'A']} closed") == 1
    # its connections end: it is gone from both
    for c, t in held:
        if t == b"A":
            c.close()
    wait_until(lambda: [r["peer"] for r in ha.status()["replicas"]] == [peer[b"B"]], 10,
               what="A's connections to end")
    code, text = http(f"http://127.0.0.1:{ha.api}/metrics")
    assert peer[b"A"] not in text and peer[b"B"] in text
    assert ha.server.stderr.count("control channel from") == 1
    assert ha.server.stderr.count("control channel established with") == 2
    for c, t in held:
        c.close()


def test_virtual_host_visitors_are_balanced(procs, tags):
    """Visitors routed by name on the shared listener enter the service as
    any other: they are shared among the replicas too."""
    ha = Ha(procs, tags, vhost=True)
    ha.add_client(b"A")
    ha.add_client(b"B")
    req = b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n"
    counts = {b"A": 0, b"B": 0}
    for _ in range(20):
        counts[visit(ha.http_port, req)] += 1
    assert counts[b"A"] >= 6 and counts[b"B"] >= 6, counts


def test_least_connections_prefers_fewer_held(procs, tags):
    ha = Ha(procs, tags, balance="least_connections")
    ha.add_client(b"A")
    held_a = [hold(ha.service_port) for _ in range(4)]
    assert [t for _, t in held_a] == [b"A"] * 4
    ha.add_client(b"B")
    ha.wait_replicas(2, pooled=4)
    # B holds nothing: the next four go to B (round robin would alternate)
    held_b = [hold(ha.service_port) for _ in range(4)]
    assert [t for _, t in held_b] == [b"B"] * 4, held_b
    by_peer = {r["connections_active"] for r in ha.replicas()}
    assert by_peer == {4}, ha.replicas()
    # A's four end: A is now the lighter one
    for c, _ in held_a:
        c.close()
    wait_until(lambda: sorted(r["connections_active"] for r in ha.replicas()) == [0, 4], 10,
               what="A's connections to end")
    assert [hold(ha.service_port)[1] for _ in range(3)] == [b"A"] * 3
    for c, _ in held_b:
        c.close()


def test_without_balance_the_newest_client_replaces(procs, tags):
    ha = Ha(procs, tags, balance=None)
    ha.add_client(b"A")
    c, tag = hold(ha.service_port)
    assert tag == b"A"
    ha.add_client(b"B", wait=False)
    ha.server.wait_log("replaces the one from", timeout=15)
    ha.wait_replicas(1)
    # the reference's behaviour: B alone serves new visitors; A's
    # connection in flight goes on
    assert {visit(ha.service_port) for _ in range(10)} == {b"B"}
    assert still_serves(c, b"A")
    c.close()
    assert "balance" not in ha.status()


def test_replicas_are_bounded(procs, tags):
    """64 clients of one service at most: a 65th is closed before its Ack
    (made by hand, so that 65 control channels cost no processes)."""
    from test_protocol_peer import control_hello, read_exact, sha256
    ha = Ha(procs, tags)
    chans = []
    try:
        for i in range(65):
            s = socket.create_connection(("127.0.0.1", ha.port), timeout=10)
            chans.append(s)
            s.sendall(control_hello(sha256(b"svc")))
            nonce = read_exact(s, 37)[5:]
            s.sendall(sha256(ha.token.encode() + nonce))
            if i < 64:
                assert read_exact(s, 4) == b"\x00" * 4, i
        assert closed_by_peer(chans[64])
        assert len(ha.replicas()) == 64
        assert "64 clients serve it already" in ha.server.stderr
        # one leaves: there is room again
        chans[0].close()
        wait_until(lambda: len(ha.replicas()) == 63, 10, what="a replica to leave")
        s = socket.create_connection(("127.0.0.1", ha.port), timeout=10)
        chans.append(s)
        s.sendall(control_hello(sha256(b"svc")))
        nonce = read_exact(s, 37)[5:]
        s.sendall(sha256(ha.token.encode() + nonce))
        assert read_exact(s, 4) == b"\x00" * 4
    finally:
        for s in chans:
            s.close()


class Stream:
    """New visitors one after another (each: connect, send, read the answer,
    close) until stopped: [(start time, tag or None on failure)]."""

    def __init__(self, port, limit=3000):
        self.port, self.limit = port, limit
        self.results = []
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop and len(self.results) < self.limit:
            t0 = time.monotonic()
            try:
                tag = visit(self.port, timeout=5)
            except (OSError, AssertionError):
                tag = None
            self.results.append((t0, tag))
            time.sleep(0.005)

    def stop(self):
        self._stop = True
        self._t.join(15)


def test_sigkill_a_replica_only_its_connections_fail(procs, tags):
    ha = Ha(procs, tags)
    a = ha.add_client(b"A")
    ha.add_client(b"B")
    held = [hold(ha.service_port) for _ in range(6)]
    assert {t for _, t in held} == {b"A", b"B"}
    s = Stream(ha.service_port)
    try:
        wait_until(lambda: {t for _, t in s.results} >= {b"A", b"B"}, 10,
                   what="the stream to reach both replicas")
        a.stop(sig=signal.SIGKILL)	# returns once the process is reaped
        dead = time.monotonic()
        wait_until(lambda: len([1 for t0, _ in s.results if t0 > dead]) >= 100, 30,
                   what="100 visitors after the kill")
    finally:
        s.stop()
    after = [tag for t0, tag in s.results if t0 > dead]
    assert after and all(tag == b"B" for tag in after), after
    # connections in flight: those on A are gone, those on B go on
    for c, tag in held:
        if tag == b"A":
            assert closed_by_peer(c)
        else:
            assert still_serves(c, b"B")
        c.close()
    ha.server.wait_log("closed by the client", timeout=10)
    assert len(ha.replicas()) == 1
    # the port closes only with the last replica
    ha.clients[b"B"].stop(sig=signal.SIGKILL)
    wait_until(lambda: not ha.status()["listening"], 10, what="the port to close")


def test_visitors_waiting_for_a_replica_that_dies_are_served(procs, tags):
    """Visitors queued behind data channels asked of a replica that dies
    are served by the other replica at once, not at their 10 s expiry.
    Both clients are stopped (SIGSTOP: their control channels stay up, no
    data channel comes) while 40 visitors arrive: 16 take the pooled
    channels, 24 wait, their channels asked of A and B in turn. Then A is
    killed and B resumes: B's answers cover 20 of them; the other 4 are
    there only if the channels A owed were asked of B when A went."""
    ha = Ha(procs, tags)
    a = ha.add_client(b"A")
    b = ha.add_client(b"B")
    ha.wait_replicas(2, pooled=8)
    n = 40
    out = []

    def one():
        try:
            out.append(visit(ha.service_port, timeout=20))
        except (OSError, AssertionError):
            out.append(None)

    def waiting():
        code, text = http(f"http://127.0.0.1:{ha.api}/metrics")
        return int(metric(text, "rathole_service_visitors_waiting", service="svc"))

    a.signal(signal.SIGSTOP)
    b.signal(signal.SIGSTOP)
    ths = [threading.Thread(target=one) for _ in range(n)]
    try:
        for t in ths:
            t.start()
        wait_until(lambda: waiting() == n - 16 and ha.status()["connections_active"] == 16,
                   15, what="16 visitors on pooled channels, the others waiting")
        a.stop(sig=signal.SIGKILL)
    finally:
        a.signal(signal.SIGCONT)
        b.signal(signal.SIGCONT)
    for t in ths:
        t.join(25)
    assert len(out) == n
    # only those given to A's pool before it was stopped failed
    assert out.count(None) == 8 and out.count(b"B") == n - 8, out


@pytest.mark.skipif(not os.access(REFERENCE, os.X_OK),
                    reason=f"the reference rathole is not at {REFERENCE} "
                           "(RATHOLE_REFERENCE=path overrides it)")
def test_reference_client_as_a_replica(procs, tags):
    ha = Ha(procs, tags)
    ha.add_client(b"A")
    ha.add_client(b"R", binary=REFERENCE)
    counts = {b"A": 0, b"R": 0}
    for _ in range(60):
        counts[visit(ha.service_port)] += 1
    assert counts[b"A"] >= 20 and counts[b"R"] >= 20, counts


# ---- UDP ----

def udp_visitor(port, n, timeout=5):
    """A visitor socket sending n datagrams: the tags of the answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        got = []
        for i in range(n):
            s.sendto(b"d%d" % i, ("127.0.0.1", port))
            d, _ = s.recvfrom(65536)
            assert d[1:] == b"d%d" % i, d
            got.append(d[:1])
        return s.getsockname(), got


def test_udp_visitor_sticks_to_its_replica(procs, tags):
    ha = Ha(procs, tags, udp=True)
    ha.add_client(b"A")
    ha.add_client(b"B")
    socks = []
    # an odd number: a server alternating per datagram would move each
    # visitor to the other replica at every round
    for _ in range(21):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        socks.append(s)
    try:
        seen = []
        for rnd in range(5):
            for i, s in enumerate(socks):
                s.sendto(b"%d-%d" % (i, rnd), ("127.0.0.1", ha.service_port))
                d, _ = s.recvfrom(65536)
                assert d[1:] == b"%d-%d" % (i, rnd), d
                if rnd == 0:
                    seen.append(d[:1])
                else:
                    assert d[:1] == seen[i], (i, rnd, d, seen)
        assert sorted([seen.count(b"A"), seen.count(b"B")]) == [10, 11], seen
        st = ha.status()
        assert sorted(r["connections_active"] for r in st["replicas"]) == [10, 11], st
        # a replica that goes takes only its own sessions: A's visitors start
        # new ones on B, B's keep theirs (B's count of sessions started grows
        # by A's visitors only)
        b_total = next(r["connections_total"] for r in st["replicas"]
                       if r["connections_active"] == seen.count(b"B"))
        ha.clients[b"A"].stop(sig=signal.SIGKILL)
        wait_until(lambda: len(ha.replicas()) == 1, 10, what="A to leave")
        for i, s in enumerate(socks):
            s.sendto(b"after", ("127.0.0.1", ha.service_port))
            d, _ = s.recvfrom(65536)
            assert d == b"Bafter", (i, d)
        (rb,) = ha.replicas()
        assert rb["connections_active"] == 21, rb
        assert rb["connections_total"] == b_total + seen.count(b"A"), (rb, b_total, seen)
    finally:
        for s in socks:
            s.close()


# ---- reload ----

def _reload(ha, balance):
    (ha.procs.tmp / "server.toml").write_text(ha.server_text(balance))
    n = ha.server.stderr.count("reload: +")
    ha.server.signal(signal.SIGHUP)
    ha.server.wait_log("reload: +", count=n + 1)


def test_reload_adds_and_removes_balance(procs, tags):
    """Adding balance keeps the client there and lets a second one join
    (no restart: a connection in flight goes on); removing it keeps the
    newest client only, as without balance."""
    ha = Ha(procs, tags, balance=None)
    ha.add_client(b"A")
    c, _ = hold(ha.service_port)
    _reload(ha, "round_robin")
    ha.add_client(b"B")
    assert {visit(ha.service_port) for _ in range(10)} == {b"A", b"B"}
    assert still_serves(c, b"A")
    _reload(ha, None)
    ha.server.wait_log("balance removed by the reload")
    # never two replicas again: A (replaced, reconnecting) and B take turns
    for _ in range(20):
        assert len(ha.replicas()) <= 1
        time.sleep(0.05)
    assert still_serves(c, b"A")
    c.close()


# ---- a replica cut off without a word ----

TAG_IN_NS = """
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64)
tag = sys.argv[2].encode()
def serve(c):
    with c:
        while True:
            d = c.recv(65536)
            if not d: break
            c.sendall(tag + d)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# n visitors one after another, each given 2 s: their tags ("-": failed)
VISITS_IN_NS = """
import socket, sys
out = []
for _ in range(int(sys.argv[2])):
    try:
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2) as c:
            c.sendall(b"x")
            d = c.recv(16)
            out.append(d[:1].decode() if d[1:] == b"x" else "-")
    except OSError:
        out.append("-")
print("".join(out))
"""

# the live replicas (one that left stays listed while its connections last)
REPLICAS_IN_NS = """
import json, sys, urllib.request
with urllib.request.urlopen("http://127.0.0.1:%s/api/status" % sys.argv[1], timeout=5) as r:
    print(len([x for x in json.load(r)["services"][0]["replicas"] if x["control_channel"]]))
"""


def _in_ns(ns, code, *args):
    import subprocess
    import sys
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code, *map(str, args)],
                       capture_output=True, text=True, timeout=60)
    return r.stdout.strip()


def _netns_ok():
    try:
        from test_faults import NS_OK
    except ImportError:
        return False
    return NS_OK


@pytest.mark.skipif(not _netns_ok(), reason="needs root and permission for `ip netns add`")
def test_silently_cut_replica_leaves(procs, tmp_path):
    """Client A in its own namespace behind a veth pair, client B beside the
    server. A's link goes down: no FIN, no reset. Visitors keep coming (so
    the server has bytes in flight towards A, which stops TCP keepalive):
    the server still gives A up, within keepalive_secs + keepalive_interval
    of unacknowledged sends (3 s here) rather than the kernel's 15 minutes
    of retransmissions, and every visitor after that is B's."""
    from test_faults import _ip
    tag = os.getpid() % 100000
    ns_s, ns_c = f"rhas{tag}", f"rhac{tag}"
    veth_s, veth_c = f"rhavs{tag}", f"rhavc{tag}"
    net = "10.254.79"
    sp, vp, lp, api = 23340, 23341, 23342, 23343     # each namespace has its own ports
    started = []
    try:
        _ip("netns", "add", ns_s)
        _ip("netns", "add", ns_c)
        _ip("link", "add", veth_s, "type", "veth", "peer", "name", veth_c)
        _ip("link", "set", veth_s, "netns", ns_s)
        _ip("link", "set", veth_c, "netns", ns_c)
        for ns, dev, addr in ((ns_s, veth_s, f"{net}.1/24"), (ns_c, veth_c, f"{net}.2/24")):
            _ip("-n", ns, "addr", "add", addr, "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        server = (f'[server]\nbind_addr = "{net}.1:{sp}"\n'
                  '[server.transport.tcp]\nkeepalive_secs = 2\nkeepalive_interval = 1\n'
                  f'[server.api]\nbind_addr = "127.0.0.1:{api}"\n'
                  f'[server.services.svc]\ntoken = "t"\nbind_addr = "127.0.0.1:{vp}"\n'
                  'balance = "round_robin"\n')
        client = (f'[client]\nremote_addr = "{net}.1:{sp}"\n'
                  f'[client.services.svc]\ntoken = "t"\nlocal_addr = "127.0.0.1:{lp}"\n')
        for name, text in (("server.toml", server), ("client.toml", client)):
            (tmp_path / name).write_text(text)
            os.chmod(tmp_path / name, 0o600)
        env = {"RATHOLE_LOG": "info"}
        import sys
        from conftest import RATHOLE
        for ns, t in ((ns_s, "B"), (ns_c, "A")):
            started.append(procs.start(["ip", "netns", "exec", ns, sys.executable, "-c",
                                        TAG_IN_NS, str(lp), t]))
        srv = procs.start(["ip", "netns", "exec", ns_s, RATHOLE, str(tmp_path / "server.toml")],
                          env=env)
        started.append(srv)
        srv.wait_log(f"listening on {net}.1:{sp}")
        for ns in (ns_c, ns_s):
            started.append(procs.start(["ip", "netns", "exec", ns, RATHOLE,
                                        str(tmp_path / "client.toml")], env=env))
        wait_until(lambda: _in_ns(ns_s, REPLICAS_IN_NS, api) == "2", 20, interval=0.2,
                   what="two replicas")
        wait_until(lambda: set(_in_ns(ns_s, VISITS_IN_NS, vp, 10)) == {"A", "B"}, 20,
                   interval=0.2, what="visitors reaching both replicas")
        _ip("-n", ns_c, "link", "set", veth_c, "down")
        # visitors now: those sent to A fail, and leave bytes unacknowledged
        # on A's channels (a request for a data channel on its control one)
        assert "-" in _in_ns(ns_s, VISITS_IN_NS, vp, 4)
        wait_until(lambda: _in_ns(ns_s, REPLICAS_IN_NS, api) == "1", 30, interval=0.5,
                   what="the server to give the cut replica up")
        assert _in_ns(ns_s, VISITS_IN_NS, vp, 20) == "B" * 20
        assert srv.alive()
    finally:
        for p in started:
            p.stop()
        for ns in (ns_s, ns_c):
            import subprocess
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
