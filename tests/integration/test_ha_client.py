"""High availability on the client's side (issue 24): the health check that
withdraws a service whose local side is down, and one client serving through
several servers (remote_addr as an array). Real processes on loopback."""
import json

import pytest

from conftest import free_port, port_open, run_rathole, wait_port, wait_port_closed, wait_until
from helpers import EchoServer, client_config, http, metric, server_config, wait_tunnel

HC = 1  # health_check_interval of the tests, in seconds


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


def test_check_shows_health_check(tmp_path):
    r = run_rathole(["--check"], CHECK_CLIENT.format(remote='"127.0.0.1:2333"',
                                                     extra="health_check_interval = 7"), tmp_path)
    assert r.returncode == 0, r.stderr
    assert "health_check_interval 7s" in r.stdout


# ---- health checks ----

def test_health_check_withdraws_and_returns(procs):
    """The local service stops: after 3 failed checks the client closes the
    service's control channel (the server closes the service's port); the
    checks go on, and the first that passes registers the service again."""
    local = EchoServer()
    lport = local.port
    try:
        sp, vp, sapi, capi = free_port(), free_port(), free_port(), free_port()
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
