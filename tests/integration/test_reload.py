"""Hot reload: services added, removed and changed while running."""
import os
import signal
import threading
import time

import pytest

from conftest import RATHOLE, free_port, port_open, wait_port_closed
from helpers import EchoServer, client_config, echo_once, server_config, transfer_checked, wait_tunnel


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
    def __init__(self, procs, echoes):
        self.procs = procs
        self.sp = free_port()
        self.ports = {"one": free_port(), "two": free_port()}
        self.echo = {"one": echoes[0].port, "two": echoes[1].port}
        self.spath = procs.tmp / "server.toml"
        self.cpath = procs.tmp / "client.toml"

    def texts(self, names, token="tk"):
        s = server_config(self.sp, {n: dict(bind_port=self.ports[n], token=token) for n in names})
        c = client_config(self.sp, {n: dict(local_port=self.echo[n], token=token) for n in names})
        return s, c

    def start(self, names):
        s, c = self.texts(names)
        self.server = self.procs.rathole(s, name="server.toml")
        self.client = self.procs.rathole(c, name="client.toml")
        for n in names:
            wait_tunnel(self.ports[n])

    def write(self, names, how="rename", token="tk"):
        s, c = self.texts(names, token)
        for path, text in ((self.spath, s), (self.cpath, c)):
            if how == "rename":
                write_atomically(path, text)
            else:
                path.write_text(text)


def test_add_service_during_transfer(procs, echoes):
    p = Pair(procs, echoes)
    p.start(["one"])
    result = {}

    def transfer():
        # about 4 s: the reload happens in the middle of it
        result["r"] = transfer_checked(p.ports["one"], 64 << 20, chunk=256 << 10, pace=0.015)

    t = threading.Thread(target=transfer)
    t.start()
    time.sleep(0.3)
    p.write(["one", "two"])
    p.server.wait_log("reload: +1 added, -0 removed, ~0 changed, 1 unchanged", timeout=10)
    p.client.wait_log("reload: +1 added, -0 removed, ~0 changed, 1 unchanged", timeout=10)
    wait_tunnel(p.ports["two"])
    assert echo_once(p.ports["two"], b"the new one") == b"the new one"
    assert t.is_alive(), "the transfer should still be running across the reload"
    t.join(120)
    sent, got, n = result["r"]
    assert n == 64 << 20 and sent == got


def test_remove_service(procs, echoes):
    p = Pair(procs, echoes)
    p.start(["one", "two"])
    p.write(["one"], how="in-place")
    p.server.wait_log("service two: removed by the reload", timeout=10)
    wait_port_closed(p.ports["two"])
    assert echo_once(p.ports["one"], b"still here") == b"still here"


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
    p = Pair(procs, echoes)
    p.start(["one"])
    # change the token on both sides; the file watcher and SIGHUP both apply it
    p.write(["one"], how="in-place", token="new-token")
    p.server.signal(signal.SIGHUP)
    p.server.wait_log("SIGHUP received; reloading", timeout=10)
    p.server.wait_log("service one: changed by the reload; restarting it", timeout=10)
    wait_tunnel(p.ports["one"], timeout=20)
    # SIGHUP with an unchanged file is harmless
    p.client.signal(signal.SIGHUP)
    p.client.wait_log("SIGHUP received; reloading", timeout=10)
    assert echo_once(p.ports["one"], b"after") == b"after"


def test_symlink_swap(procs, echoes):
    """Kubernetes-style: the config path is a symlink whose target is swapped."""
    p = Pair(procs, echoes)
    s1, c1 = p.texts(["one"])
    s2, _ = p.texts(["one", "two"])
    d1, d2 = procs.tmp / "v1", procs.tmp / "v2"
    d1.mkdir()
    d2.mkdir()
    (d1 / "server.toml").write_text(s1)
    (d2 / "server.toml").write_text(s2)
    link = procs.tmp / "current"
    os.symlink("v1", link)
    srv = procs.start([RATHOLE, str(link / "server.toml")])
    srv.wait_log("listening on 127.0.0.1:%d" % p.sp)
    tmp_link = procs.tmp / "current.tmp"
    os.symlink("v2", tmp_link)
    os.rename(tmp_link, link)
    srv.wait_log("reload: +1 added", timeout=10)


def test_settings_change_restarts_role(procs, echoes):
    p = Pair(procs, echoes)
    p.start(["one"])
    s, _ = p.texts(["one"])
    write_atomically(p.spath, s.replace("[server]\n", "[server]\nheartbeat_interval = 7\n"))
    p.server.wait_log("[server] settings or transport changed; restarting the server", timeout=10)
    wait_tunnel(p.ports["one"], timeout=20)
