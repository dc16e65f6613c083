"""High availability on the client's side (issue 24): the health check that
withdraws a service whose local side is down, and one client serving through
several servers (remote_addr as an array). Real processes on loopback."""
import json
import os
import random
import signal
import socket
import threading

import pytest

from conftest import (RATHOLE, REPO, free_port, port_open, run_rathole, wait_port, wait_port_closed,
                      wait_until)
from helpers import (EchoServer, UdpEcho, accepted, client_config, closed_by_peer, echo_on,
                     echo_once, held, http, listen_tcp, metric, recv_all, server_config,
                     wait_tunnel)

HC = 1  # health_check_interval of the tests, in seconds


def reopened_port():
    """A free TCP port below the ephemeral range, for a port these tests
    close and open again: while it is closed, no outgoing connection of this
    machine (a pooled data channel, a reconnect attempt) can take it as its
    own local port and keep the listener from coming back."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    for _ in range(200):
        port = random.randrange(10000, max(10001, low))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    return free_port()


def api_extra(role, port):
    return f'[{role}.api]\nbind_addr = "127.0.0.1:{port}"\n'


def client_status(api):
    code, text = http(f"http://127.0.0.1:{api}/api/status")
    assert code == 200, text
    return {s["name"]: s for s in json.loads(text)["services"]}


def client_metrics(api):
    code, text = http(f"http://127.0.0.1:{api}/metrics")
    assert code == 200, text
    return text


# ---- configuration ----

CHECK_CLIENT = """[client]
remote_addr = {remote}

[client.services.web]
token = "t"
local_addr = "127.0.0.1:80"
{extra}
"""

ERRORS = [
    ("[]", "", 2, "client.remote_addr: the array is empty; give at least one value"),
    ('["127.0.0.1:1", "127.0.0.1:1"]', "", 2,
     'client.remote_addr[1]: "127.0.0.1:1" is listed twice'),
    ('["127.0.0.1:1", "nohost"]', "", 2, 'client.remote_addr[1]: "nohost" is not a valid address'),
    ("2333", "", 2, "client.remote_addr: expected a string or an array of strings, found integer"),
    ('"127.0.0.1:2333"', 'type = "udp"\nhealth_check_interval = 5', 8,
     "client.services.web.health_check_interval: applies to tcp services only"),
    ('"127.0.0.1:2333"', "health_check_interval = -1", 7,
     "client.services.web.health_check_interval: expected 0 to 86400 seconds"),
    ('"127.0.0.1:2333"', 'health_check_interval = "10"', 7,
     "client.services.web.health_check_interval: expected an integer, found string"),
]


@pytest.mark.parametrize("remote,extra,line,msg", ERRORS)
def test_config_errors(tmp_path, remote, extra, line, msg):
    text = CHECK_CLIENT.format(remote=remote, extra=extra)
    for args in ([], ["--check"]):
        r = run_rathole(args, text, tmp_path)
        assert r.returncode == 1, r.stderr
        want = f"{tmp_path / 'rathole.toml'}:{line}: {msg}"
        assert any(l.startswith(want) for l in r.stderr.splitlines()), f"{want!r} not in\n{r.stderr}"


def test_check_shows_both_keys(tmp_path):
    r = run_rathole(["--check"], CHECK_CLIENT.format(remote='["a.example:2333", "[::1]:2333"]',
                                                     extra="health_check_interval = 7"), tmp_path)
    assert r.returncode == 0, r.stderr
    assert "health_check_interval 7s" in r.stdout
    assert "remote_addr         a.example:2333, [::1]:2333" in r.stdout


# ---- health checks ----

def test_health_check_withdraws_and_returns(procs):
    """The local service stops: after 3 failed checks the client closes the
    service's control channel (the server closes the service's port); the
    checks go on, and the first that passes registers the service again."""
    local = EchoServer(port=reopened_port())
    lport = local.port
    try:
        sp, vp, sapi, capi = free_port(), reopened_port(), free_port(), free_port()
        server = procs.rathole(server_config(sp, {"web": dict(bind_port=vp, token="t")},
                                             extra=api_extra("server", sapi)), name="s.toml")
        server.wait_log("listening on 127.0.0.1:%d" % sp)
        procs.rathole(client_config(sp, {"web": dict(local_port=lport, token="t",
                                                     extra=f"health_check_interval = {HC}")},
                                    extra=api_extra("client", capi)), name="c.toml")
        wait_tunnel(vp)
        st = client_status(capi)["web"]
        assert st["healthy"] is True and st["health_check_interval"] == HC
        assert metric(client_metrics(capi), "rathole_service_healthy", service="web") == 1

        local.stop()
        wait_port_closed(vp, timeout=10 * HC + 10)
        st = client_status(capi)["web"]
        assert st["healthy"] is False and st["control_channel"] == "withdrawn", st
        assert st["health_check_failures"] >= 3, st
        page = client_metrics(capi)
        assert metric(page, "rathole_service_healthy", service="web") == 0
        assert metric(page, "rathole_service_control_channel_up", service="web") == 0
        code, text = http(f"http://127.0.0.1:{sapi}/metrics")
        assert metric(text, "rathole_service_control_channel_up", service="web") == 0

        # withdrawn, the client goes on checking and does not register
        failures = st["health_check_failures"]
        wait_until(lambda: client_status(capi)["web"]["health_check_failures"] >= failures + 2,
                   10 * HC + 10, what="two more failed health checks")
        assert not port_open(vp)
        assert client_status(capi)["web"]["control_channel"] == "withdrawn"

        local = EchoServer(port=lport)
        wait_tunnel(vp, timeout=10 * HC + 15)
        st = client_status(capi)["web"]
        assert st["healthy"] is True and st["control_channel"] == "established", st
    finally:
        local.stop()


def test_health_check_first_pass_registers(procs):
    """With a health check, a service registers once a check passes (the
    first runs at once), as frp's: a client started before its local service
    never takes visitors meanwhile."""
    lport = reopened_port()
    local = None
    try:
        sp, vp, sapi, capi = free_port(), free_port(), free_port(), free_port()
        server = procs.rathole(server_config(sp, {"web": dict(bind_port=vp, token="t")},
                                             extra=api_extra("server", sapi)), name="s.toml")
        server.wait_log("listening on 127.0.0.1:%d" % sp)
        c = procs.rathole(client_config(sp, {"web": dict(local_port=lport, token="t",
                                                         extra=f"health_check_interval = {HC}")},
                                        extra=api_extra("client", capi)), name="c.toml")
        c.wait_log("api listening on")
        wait_until(lambda: client_status(capi)["web"]["health_check_failures"] >= 4,
                   10 * HC + 10, what="four failed health checks")
        st = client_status(capi)["web"]
        assert st["healthy"] is False and st["control_channel"] == "withdrawn", st
        code, text = http(f"http://127.0.0.1:{sapi}/metrics")
        assert metric(text, "rathole_service_control_channel_connects_total", service="web") == 0
        assert not port_open(vp)
        local = EchoServer(port=lport)
        wait_tunnel(vp, timeout=10 * HC + 15)
        assert client_status(capi)["web"]["healthy"] is True
        c.wait_log("answers now; registering")
        assert c.stderr.count("failed its first health check") == 1, c.stderr
        assert c.stderr.count("answers now; registering") == 1, c.stderr
        assert "withdrawing" not in c.stderr and "answers again" not in c.stderr, c.stderr
    finally:
        if local:
            local.stop()


def test_health_check_off_by_default(procs):
    """Without the key nothing is checked: the local service down leaves the
    control channel up (visitors are closed one by one, as in the reference)."""
    local = EchoServer()
    try:
        sp, vp, capi = free_port(), free_port(), free_port()
        server = procs.rathole(server_config(sp, {"web": dict(bind_port=vp, token="t")}),
                               name="s.toml")
        server.wait_log("listening on 127.0.0.1:%d" % sp)
        procs.rathole(client_config(sp, {"web": dict(local_port=local.port, token="t")},
                                    extra=api_extra("client", capi)), name="c.toml")
        wait_tunnel(vp)
        local.stop()
        st = client_status(capi)["web"]
        assert st["healthy"] is True and st["health_check_interval"] == 0
        # visitors now fail at the local side, one by one; the channel stays
        wait_until(lambda: port_open(vp) and metric(client_metrics(capi),
                   "rathole_service_local_connect_failures_total", service="web") >= 3,
                   10, what="visitors forwarded to the stopped local service")
        st = client_status(capi)["web"]
        assert st["control_channel"] == "established" and st["health_check_failures"] == 0, st
        wait_port(vp)
    finally:
        local.stop()


# ---- several servers ----

def two_servers(procs, sp, vp, sapi=None, names=("s1.toml", "s2.toml")):
    """Two servers of the same service "web" (ports sp[i], service ports vp[i])."""
    out = []
    for i in range(2):
        extra = api_extra("server", sapi[i]) if sapi else ""
        s = procs.rathole(server_config(sp[i], {"web": dict(bind_port=vp[i], token="t")},
                                        extra=extra), name=names[i])
        s.wait_log("listening on 127.0.0.1:%d" % sp[i])
        out.append(s)
    return out


def multi_client_text(sp_list, lport, capi, remote=None):
    addrs = ", ".join(f'"127.0.0.1:{p}"' for p in sp_list)
    text = client_config(0, {"web": dict(local_port=lport, token="t")},
                         extra=api_extra("client", capi))
    return text.replace('remote_addr = "127.0.0.1:0"',
                        f"remote_addr = {remote if remote is not None else '[' + addrs + ']'}")


def upstreams(capi):
    return {u["remote_addr"]: u for u in client_status(capi)["web"]["upstreams"]}


def test_one_client_two_servers(procs, echo):
    """Visitors through either server reach the service, each counted on its
    own upstream; one server killed: the other keeps serving (a connection
    held through it stays), and the client comes back to the killed one when
    it returns."""
    sp, vp, capi = [reopened_port(), free_port()], [reopened_port(), free_port()], free_port()
    a1, a2 = f"127.0.0.1:{sp[0]}", f"127.0.0.1:{sp[1]}"
    servers = two_servers(procs, sp, vp)
    procs.rathole(multi_client_text(sp, echo.port, capi), name="c.toml")
    wait_tunnel(vp[0])
    wait_tunnel(vp[1])
    code, text = http(f"http://127.0.0.1:{capi}/api/status")
    status = json.loads(text)
    assert status["remote_addrs"] == [a1, a2] and status["remote_addr"] == a1
    ups = upstreams(capi)
    assert list(ups) == [a1, a2]
    assert all(u["control_channel"] is True and u["state"] == "established" for u in ups.values())
    before = {a: u["connections_total"] for a, u in ups.items()}
    for i in range(5):
        assert echo_once(vp[0], b"one %d" % i) == b"one %d" % i
    for i in range(3):
        assert echo_once(vp[1], b"two %d" % i) == b"two %d" % i
    ups = upstreams(capi)
    assert ups[a1]["connections_total"] == before[a1] + 5
    assert ups[a2]["connections_total"] == before[a2] + 3
    assert metric(client_metrics(capi), "rathole_upstream_control_channel_up",
                  service="web", remote_addr=a2) == 1

    kept = held(vp[1], b"through server 2")
    lost = held(vp[0], b"through server 1")
    try:
        servers[0].stop(signal.SIGKILL)
        assert closed_by_peer(lost)
        wait_until(lambda: upstreams(capi)[a1]["control_channel"] is False, 15,
                   what="the client to see server 1 gone")
        for i in range(5):
            assert echo_once(vp[1], b"still %d" % i) == b"still %d" % i
        assert echo_on(kept, b"kept") == b"kept"
        st = client_status(capi)["web"]
        assert st["control_channel"] == "established"
        assert upstreams(capi)[a2]["control_channel"] is True
        assert metric(client_metrics(capi), "rathole_upstream_control_channel_up",
                      service="web", remote_addr=a1) == 0

        # server 1 back on its port: the client reconnects by itself
        s1 = procs.rathole(server_config(sp[0], {"web": dict(bind_port=vp[0], token="t")}),
                           name="s1.toml")
        s1.wait_log("listening on 127.0.0.1:%d" % sp[0])
        wait_tunnel(vp[0], timeout=20)
        assert upstreams(capi)[a1]["control_channel"] is True
        assert echo_on(kept, b"kept again") == b"kept again"
    finally:
        kept.close()
        lost.close()


def test_health_check_withdraws_from_every_server(procs):
    """A client of two servers: its failing local service is withdrawn from
    both (both service ports close), and registered with both again once it
    answers; one log line for each change, not one per check or server."""
    local = EchoServer(port=reopened_port())
    lport = local.port
    try:
        sp, vp, capi = [free_port(), free_port()], [reopened_port(), reopened_port()], free_port()
        two_servers(procs, sp, vp)
        c = procs.rathole(multi_client_text(sp, lport, capi) +
                          f"health_check_interval = {HC}\n", name="c.toml")
        for p in vp:
            wait_tunnel(p)
        local.stop()
        for p in vp:
            wait_port_closed(p, timeout=10 * HC + 10)
        ups = upstreams(capi)
        assert [(u["control_channel"], u["state"]) for u in ups.values()] == \
            [(False, "withdrawn")] * 2, ups
        local = EchoServer(port=lport)
        for p in vp:
            wait_tunnel(p, timeout=10 * HC + 15)
        assert client_status(capi)["web"]["health_check_failures"] >= 3
        c.wait_log("answers again; registering")
        assert c.stderr.count("withdrawing the service") == 1, c.stderr
        assert c.stderr.count("answers again; registering") == 1, c.stderr
    finally:
        local.stop()


def test_reload_adds_and_removes_a_server(procs, echo, tmp_path):
    """remote_addr edited on a running client: a server added gets the
    services; a server removed loses them (its connections close); a server
    kept is untouched (a connection through it stays open)."""
    sp, vp, capi = [free_port(), free_port()], [free_port(), free_port()], free_port()
    a1, a2 = f"127.0.0.1:{sp[0]}", f"127.0.0.1:{sp[1]}"
    two_servers(procs, sp, vp)
    path = tmp_path / "c.toml"
    path.write_text(multi_client_text(sp, echo.port, capi, remote=f'"{a1}"'))
    cl = procs.start([RATHOLE, str(path)])
    wait_tunnel(vp[0])
    assert list(upstreams(capi)) == [a1]
    assert not port_open(vp[1])     # server 2 has no client for the service
    c1 = held(vp[0], b"via 1")
    try:
        path.write_text(multi_client_text(sp, echo.port, capi))
        wait_tunnel(vp[1], timeout=15)
        assert list(upstreams(capi)) == [a1, a2]
        assert echo_on(c1, b"via 1 still") == b"via 1 still"
        c2 = held(vp[1], b"via 2")

        path.write_text(multi_client_text(sp, echo.port, capi, remote=f'["{a2}"]'))
        wait_port_closed(vp[0], timeout=15)
        assert closed_by_peer(c1)
        assert list(upstreams(capi)) == [a2]
        assert echo_on(c2, b"via 2 still") == b"via 2 still"
        assert echo_once(vp[1], b"new") == b"new"
        assert cl.alive()
        c2.close()
    finally:
        c1.close()


def test_udp_through_two_servers(procs):
    """A UDP service through two servers: each server's visitors get their
    datagrams back (each upstream has its own UDP data channel)."""
    uecho = UdpEcho()
    try:
        sp = [free_port(), free_port()]
        vp = [free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)]
        capi = free_port()
        for i in range(2):
            procs.rathole(server_config(sp[i], {"dns": dict(bind_port=vp[i], token="t",
                                                            type="udp")}),
                          name=f"s{i}.toml").wait_log("listening on 127.0.0.1:%d" % sp[i])
        text = client_config(0, {"dns": dict(local_port=uecho.port, token="t", type="udp")},
                             extra=api_extra("client", capi))
        procs.rathole(text.replace('"127.0.0.1:0"', f'["127.0.0.1:{sp[0]}", "127.0.0.1:{sp[1]}"]'),
                      name="c.toml")
        for i in range(2):
            v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            v.settimeout(0.3)

            def answered(i=i, v=v):
                v.sendto(b"via %d" % i, ("127.0.0.1", vp[i]))
                try:
                    return v.recvfrom(100)[0] == b"via %d" % i
                except socket.timeout:
                    return False
            try:
                wait_until(answered, 15, what=f"UDP through server {i + 1}")
            finally:
                v.close()
        ups = client_status(capi)["dns"]["upstreams"]
        assert [u["udp_sessions"] for u in ups] == [1, 1]
    finally:
        uecho.stop()


REFERENCE = os.environ.get("RATHOLE_REFERENCE") or os.path.join(
    os.path.dirname(REPO), "shared", "peers", "rathole")


@pytest.mark.skipif(not os.access(REFERENCE, os.X_OK),
                    reason=f"the reference rathole is not at {REFERENCE} (see "
                           "../shared/peers/README.md; RATHOLE_REFERENCE=path overrides it)")
def test_reference_server_as_one_of_two(procs, echo):
    """Our client with our server and the reference server: visitors of both
    reach the service; the reference server killed, ours keeps serving."""
    sp, vp, capi = [free_port(), free_port()], [free_port(), free_port()], free_port()
    a2 = f"127.0.0.1:{sp[1]}"
    procs.rathole(server_config(sp[0], {"web": dict(bind_port=vp[0], token="t")}),
                  name="s1.toml").wait_log("listening on 127.0.0.1:%d" % sp[0])
    ref_cfg = procs.tmp / "ref.toml"
    ref_cfg.write_text(server_config(sp[1], {"web": dict(bind_port=vp[1], token="t")}))
    ref = procs.start([REFERENCE, "--server", str(ref_cfg)], env={"RUST_LOG": "info"})
    wait_port(sp[1])
    procs.rathole(multi_client_text(sp, echo.port, capi), name="c.toml")
    wait_tunnel(vp[0])
    wait_tunnel(vp[1])
    for i in range(2):
        assert echo_once(vp[i], b"both %d" % i) == b"both %d" % i
    ref.stop(signal.SIGKILL)
    wait_until(lambda: upstreams(capi)[a2]["control_channel"] is False, 15,
               what="the client to see the reference server gone")
    for i in range(3):
        assert echo_once(vp[0], b"ours %d" % i) == b"ours %d" % i


def test_tls_names_of_two_servers(procs, pki):
    """TLS through two servers, each with a certificate under its own name.
    Without [client.transport.tls] hostname each server is checked against
    the host of its own address; with it, that one name is checked on every
    server (docs/ha.md): the server whose certificate lacks it fails alone,
    the other serves."""
    echo_srv = EchoServer()
    try:
        p12 = [pki.leaf_p12("edge1.test", "IP:127.0.0.1"), pki.leaf_p12("edge2.test", "localhost")]
        sp, vp, capi = [free_port(), free_port()], [free_port(), free_port()], free_port()
        a1, a2 = f"127.0.0.1:{sp[0]}", f"localhost:{sp[1]}"
        for i in range(2):
            procs.rathole(server_config(sp[i], {"web": dict(bind_port=vp[i], token="t")},
                                        transport=pki.tls_server(p12=p12[i])),
                          name=f"s{i}.toml").wait_log("listening on 127.0.0.1:%d" % sp[i])

        def client(hostname, name):
            text = client_config(0, {"web": dict(local_port=echo_srv.port, token="t")},
                                 transport=pki.tls_client(hostname=hostname),
                                 extra=api_extra("client", capi))
            return procs.rathole(text.replace('remote_addr = "127.0.0.1:0"',
                                              f'remote_addr = ["{a1}", "{a2}"]'), name=name)

        # each server's own name: 127.0.0.1 (an IP in the first certificate), localhost
        c = client(None, "c1.toml")
        for i in range(2):
            wait_tunnel(vp[i], timeout=20)
            assert echo_once(vp[i], b"tls %d" % i) == b"tls %d" % i
        c.stop()
        wait_port_closed(vp[0], timeout=10)
        wait_port_closed(vp[1], timeout=10)

        # hostname = the first server's name: the second server's certificate fails it
        c = client("edge1.test", "c2.toml")
        wait_tunnel(vp[0], timeout=20)
        assert echo_once(vp[0], b"edge1") == b"edge1"
        c.wait_log('not valid for "edge1.test"', timeout=20)
        ups = upstreams(capi)
        assert ups[a1]["control_channel"] is True and ups[a2]["control_channel"] is False, ups
        assert not port_open(vp[1])
    finally:
        echo_srv.stop()


# ---- health checks with two replicas (the server's balance) ----

class Tagged:
    """A local service that answers every connection with its tag, then
    closes: a visitor learns which replica served it."""

    def __init__(self, tag, port=0):
        self.tag = tag
        self.sock = listen_tcp(port=port)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        for c in accepted(self.sock, lambda: self._stop):
            try:
                c.sendall(self.tag)
            except OSError:
                pass
            c.close()

    def stop(self):
        self._stop = True
        self._t.join(5)
        self.sock.close()


def visit(port):
    """The tag of the replica that served one visitor (b"" when none did)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            return recv_all(c)
    except OSError:
        return b""


def test_health_check_moves_visitors_to_the_other_replica(procs):
    """Two clients serve one service (balance = "round_robin"): the local
    service behind one stops, its client withdraws after 3 failed checks and
    every new visitor goes to the other replica; the service back, the first
    client registers again and gets visitors again."""
    sp, vp, capi_a = free_port(), free_port(), free_port()
    a, b = Tagged(b"A", port=reopened_port()), Tagged(b"B")
    try:
        procs.rathole(server_config(sp, {"web": dict(bind_port=vp, token="t",
                                                     extra='balance = "round_robin"')}),
                      name="s.toml").wait_log("listening on 127.0.0.1:%d" % sp)
        for tag, local, extra in ((b"A", a, api_extra("client", capi_a)), (b"B", b, "")):
            procs.rathole(client_config(sp, {"web": dict(local_port=local.port, token="t",
                                                         extra=f"health_check_interval = {HC}")},
                                        extra=extra), name=f"c{tag.decode()}.toml")
        wait_until(lambda: {visit(vp) for _ in range(6)} == {b"A", b"B"}, 20,
                   what="both replicas serving")

        a.stop()
        wait_until(lambda: client_status(capi_a)["web"]["healthy"] is False, 10 * HC + 10,
                   what="client A to withdraw the service")
        assert client_status(capi_a)["web"]["health_check_failures"] >= 3
        # the server may take a moment to see the control channel go
        wait_until(lambda: [visit(vp) for _ in range(4)] == [b"B"] * 4, 10,
                   what="the server to balance away from replica A")
        assert [visit(vp) for _ in range(20)] == [b"B"] * 20

        a = Tagged(b"A", port=a.port)
        wait_until(lambda: b"A" in {visit(vp) for _ in range(6)}, 10 * HC + 15,
                   what="replica A serving again")
        assert client_status(capi_a)["web"]["healthy"] is True
        assert {visit(vp) for _ in range(10)} == {b"A", b"B"}
    finally:
        a.stop()
        b.stop()
