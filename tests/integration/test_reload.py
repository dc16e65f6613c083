"""Hot reload: services added, removed and changed while running."""
import os
import signal
import time

import pytest

from conftest import RATHOLE, free_port, port_open, wait_port_closed
from helpers import (EchoServer, client_config, closed_by_peer, echo_on, echo_once, end_seen,
                     held, http, metric, server_config, transfer_checked, wait_tunnel)


@pytest.fixture
def echoes():
    es = [EchoServer(), EchoServer()]
    yield es
    for e in es:
        e.stop()


def write_atomically(path, text):
    """How vim, sed -i and deployment tools replace a file: write, then rename."""
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


class Pair:
    def __init__(self, procs, echoes, server_extra=""):
        self.procs = procs
        self.sp = free_port()
        self.ports = {"one": free_port(), "two": free_port()}
        self.echo = {"one": echoes[0].port, "two": echoes[1].port}
        self.spath = procs.tmp / "server.toml"
        self.cpath = procs.tmp / "client.toml"
        self.server_extra = server_extra
        self.links = None

    def texts(self, names, token="tk", tokens=None):
        """tokens: {name: token} for the services whose token differs."""
        tokens = tokens or {}
        s = server_config(self.sp, {n: dict(bind_port=self.ports[n], token=tokens.get(n, token))
                                    for n in names}, extra=self.server_extra)
        c = client_config(self.sp, {n: dict(local_port=self.echo[n], token=tokens.get(n, token))
                                    for n in names})
        return s, c

    def link_elsewhere(self, names):
        """Starts both sides on files of their own directories, each with a
        hard link in a third directory that no watcher watches: an edit
        through a link changes the file rathole reads without a single
        inotify event where it looks (only SIGHUP or the API then reloads
        it). Separate directories: writing one side's file must not wake
        the other side's watcher either."""
        s, c = self.texts(names)
        d = self.procs.tmp / "elsewhere"
        d.mkdir()
        self.links = (d / "server.toml", d / "client.toml")
        for side, text, link in (("server", s, self.links[0]), ("client", c, self.links[1])):
            (self.procs.tmp / side).mkdir()
            path = self.procs.tmp / side / f"{side}.toml"
            path.write_text(text)
            os.link(path, link)
            setattr(self, side, self.procs.start([RATHOLE, str(path)]))
        for n in names:
            wait_tunnel(self.ports[n])

    def start(self, names):
        s, c = self.texts(names)
        self.server = self.procs.rathole(s, name="server.toml")
        self.client = self.procs.rathole(c, name="client.toml")
        for n in names:
            wait_tunnel(self.ports[n])

    def write(self, names, how="rename", token="tk", tokens=None):
        s, c = self.texts(names, token, tokens)
        paths = self.links if how == "link" else (self.spath, self.cpath)
        for path, text in zip(paths, (s, c)):
            if how == "rename":
                write_atomically(path, text)
            else:                       # in place (through the link or not)
                path.write_text(text)


def test_add_service_during_transfer(procs, echoes):
    """A service is added while a 64 MiB transfer runs on another: the
    reload happens between its halves, and every byte arrives intact."""
    p = Pair(procs, echoes)
    p.start(["one"])

    def add_two():
        p.write(["one", "two"])
        p.server.wait_log("reload: +1 added, -0 removed, ~0 changed, 1 unchanged", timeout=10)
        p.client.wait_log("reload: +1 added, -0 removed, ~0 changed, 1 unchanged", timeout=10)
        wait_tunnel(p.ports["two"])
        assert echo_once(p.ports["two"], b"the new one") == b"the new one"

    sent, got, n = transfer_checked(p.ports["one"], 64 << 20, chunk=256 << 10, midway=add_two)
    assert n == 64 << 20 and sent == got


@pytest.mark.parametrize("side", ["server", "client"])
def test_remove_service(procs, echoes, side):
    """A service removed on one side stops: its port closes (server) or its
    control channel ends (client), and the connections it was forwarding
    are reset (cut short, they must not look complete: a FIN would say they
    ended as sent); the other service and its open connection are untouched."""
    p = Pair(procs, echoes)
    p.start(["one", "two"])
    keep, drop = held(p.ports["one"], b"one"), held(p.ports["two"], b"two")
    try:
        s, c = p.texts(["one"])
        path, text, proc = ((p.spath, s, p.server) if side == "server"
                            else (p.cpath, c, p.client))
        path.write_text(text)
        proc.wait_log("service two: removed by the reload", timeout=10)
        assert end_seen(drop, timeout=10) == "reset", "the removed service's connection " \
            "ended as if complete, or is still open"
        wait_port_closed(p.ports["two"])
        assert echo_on(keep, b"still here") == b"still here"
        assert echo_once(p.ports["one"], b"and new ones") == b"and new ones"
    finally:
        keep.close()
        drop.close()


def test_changed_service_restarts_alone(procs, echoes):
    """A service whose token changes restarts: its connections close and it
    comes back with the new token. The unchanged service beside it keeps its
    open connection and its control channel (connected once)."""
    api = free_port()
    p = Pair(procs, echoes, server_extra=f'[server.api]\nbind_addr = "127.0.0.1:{api}"\n')
    p.start(["one", "two"])
    keep, drop = held(p.ports["one"], b"one"), held(p.ports["two"], b"two")
    url = f"http://127.0.0.1:{api}/metrics"
    try:
        p.write(["one", "two"], tokens={"two": "new-token"})
        for proc in (p.server, p.client):       # (the effects below say what it did)
            proc.wait_log("reload: +0 added, -0 removed", timeout=10)
        assert closed_by_peer(drop), "the changed service's connection is still open"
        wait_tunnel(p.ports["two"])
        assert echo_on(keep, b"untouched") == b"untouched"
        page = http(url)[1]
        assert metric(page, "rathole_service_control_channel_connects_total", service="one") == 1
        assert metric(page, "rathole_service_connections_active", service="one") == 1
    finally:
        keep.close()
        drop.close()


def test_broken_edit_keeps_running_config(procs, echoes):
    p = Pair(procs, echoes)
    p.start(["one"])
    write_atomically(p.spath, p.spath.read_text() + "\n[server.services.bad\n")
    p.server.wait_log("reload rejected", timeout=10)
    p.server.wait_log("the running configuration stays in force")
    assert echo_once(p.ports["one"], b"unchanged") == b"unchanged"
    # an invalid value is rejected as a whole, too: nothing half-applied
    s, _ = p.texts(["one", "two"])
    write_atomically(p.spath, s.replace('bind_addr = "127.0.0.1:%d"' % p.ports["two"],
                                        'bind_addr = "nowhere"'))
    p.server.wait_log("reload rejected", timeout=10, count=2)
    assert not port_open(p.ports["two"])
    assert echo_once(p.ports["one"], b"unchanged") == b"unchanged"


def test_unreadable_or_oversized_file_keeps_running_config(procs, echoes):
    """A reload reads the file as the start does: at most 4 MiB, and an
    unreadable file is one error naming it, not a half-applied config."""
    p = Pair(procs, echoes)
    p.start(["one"])
    s, _ = p.texts(["one", "two"])
    # valid TOML, padded past the limit with a comment
    write_atomically(p.spath, s + "# " + "x" * (4 * 1024 * 1024) + "\n")
    p.server.wait_log("reload rejected: %s: cannot read: the file is larger than 4194304 bytes"
                      % p.spath, timeout=10)
    assert not port_open(p.ports["two"])
    os.unlink(p.spath)
    p.server.signal(signal.SIGHUP)
    p.server.wait_log("reload rejected: %s: cannot read: No such file or directory" % p.spath,
                      timeout=10)
    assert echo_once(p.ports["one"], b"unchanged") == b"unchanged"


def test_sighup_reloads(procs, echoes):
    """SIGHUP alone reloads. Both files are edited through hard links in a
    directory nobody watches, so the file watcher sees nothing; service two
    forwards only once both sides took the new file on SIGHUP (the server
    opens its port when the client's control channel for it arrives)."""
    p = Pair(procs, echoes)
    p.link_elsewhere(["one"])
    p.write(["one", "two"], how="link")
    # the premise: no reload without the signal (the watcher's debounce is 0.3 s)
    time.sleep(1.0)
    assert "reload:" not in p.server.stderr + p.client.stderr
    p.client.signal(signal.SIGHUP)
    p.client.wait_log("SIGHUP received; reloading", timeout=10)
    # the client asks for two; the server does not know it yet
    p.client.wait_log('the server has no service named "two"', timeout=10)
    assert not port_open(p.ports["two"])
    p.server.signal(signal.SIGHUP)
    wait_tunnel(p.ports["two"], timeout=20)
    assert echo_once(p.ports["two"], b"after SIGHUP") == b"after SIGHUP"
    # SIGHUP with an unchanged file is harmless
    p.client.signal(signal.SIGHUP)
    p.client.wait_log("SIGHUP received; reloading", timeout=10, count=2)
    assert echo_once(p.ports["one"], b"after") == b"after"


def test_symlink_swap(procs, echoes):
    """Kubernetes-style: the config path is a symlink whose target is swapped;
    the service the new target adds forwards."""
    p = Pair(procs, echoes)
    s1, _ = p.texts(["one"])
    s2, c2 = p.texts(["one", "two"])
    d1, d2 = procs.tmp / "v1", procs.tmp / "v2"
    d1.mkdir()
    d2.mkdir()
    (d1 / "server.toml").write_text(s1)
    (d2 / "server.toml").write_text(s2)
    link = procs.tmp / "current"
    os.symlink("v1", link)
    srv = procs.start([RATHOLE, str(link / "server.toml")])
    srv.wait_log("listening on 127.0.0.1:%d" % p.sp)
    procs.rathole(c2, name="client.toml")
    wait_tunnel(p.ports["one"])
    assert not port_open(p.ports["two"])
    tmp_link = procs.tmp / "current.tmp"
    os.symlink("v2", tmp_link)
    os.rename(tmp_link, link)
    wait_tunnel(p.ports["two"], timeout=20)
    assert echo_once(p.ports["two"], b"swapped in") == b"swapped in"


def test_settings_change_restarts_role(procs, echoes):
    p = Pair(procs, echoes)
    p.start(["one"])
    s, _ = p.texts(["one"])
    write_atomically(p.spath, s.replace("[server]\n", "[server]\nheartbeat_interval = 7\n"))
    p.server.wait_log("[server] settings or transport changed; restarting the server", timeout=10)
    wait_tunnel(p.ports["one"], timeout=20)


def kubelet_secret(directory, files, version):
    """Writes files the way the kubelet updates a mounted Secret: a new
    timestamped directory, then the ..data symlink swapped onto it by a
    rename; each file is a symlink through ..data."""
    directory.mkdir(exist_ok=True)
    ts = directory / f"..v{version}"
    ts.mkdir()
    for name, text in files.items():
        (ts / name).write_text(text)
        os.chmod(ts / name, 0o600)
        if not (directory / name).is_symlink():
            os.symlink(f"..data/{name}", directory / name)
    os.symlink(ts.name, directory / "..data_tmp")
    os.rename(directory / "..data_tmp", directory / "..data")


def test_token_file_change_reloads(procs, echoes):
    """token_file: the token comes from a Secret-style directory apart from
    the config; swapping it reloads the service with the new token: the
    client that still holds the old one is refused (the service's port
    stays closed) until its own config has the new token."""
    p = Pair(procs, echoes)
    secrets = procs.tmp / "secrets"
    kubelet_secret(secrets, {"token": "old-token\n"}, 1)
    s, _ = p.texts(["one"])
    s = s.replace('token = "tk"', 'token_file = "%s"' % (secrets / "token"))
    assert "token_file" in s
    _, c = p.texts(["one"], token="old-token")
    server = procs.rathole(s, name="server.toml")
    client = procs.rathole(c, name="client.toml")
    wait_tunnel(p.ports["one"])
    assert echo_once(p.ports["one"], b"old") == b"old"

    kubelet_secret(secrets, {"token": "new-token\n"}, 2)
    server.wait_log("service one: changed by the reload", timeout=10)
    # the old token no longer opens the port (the client keeps retrying)
    wait_port_closed(p.ports["one"])
    time.sleep(1.5)
    assert not port_open(p.ports["one"])
    _, c = p.texts(["one"], token="new-token")
    write_atomically(p.cpath, c)
    wait_tunnel(p.ports["one"], timeout=20)
    assert echo_once(p.ports["one"], b"new") == b"new"
    assert "reload rejected" not in server.stderr + client.stderr
