"""Shared fixtures for the integration tests.

Every process a test starts goes through `Procs`, which stops it by PID at the
end of the test. Ports are picked dynamically (bind to port 0, read it back) so
suites can run side by side. Every wait is bounded in time.
"""
import os
import random
import signal
import socket
import subprocess
import threading
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RATHOLE = os.environ.get("RATHOLE_BIN") or os.path.join(REPO, "rathole")
TESTDATA = os.environ.get("TESTDATA") or os.path.join(os.path.dirname(REPO), "shared", "testdata")


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_EPHEMERAL_LOW = _ephemeral_low()
_given = set()


def free_port(kind=socket.SOCK_STREAM, host="127.0.0.1"):
    """A port that was free a moment ago (TCP by default). Picked below the
    ephemeral range: a port a test closes and opens again (a server
    restarted, a service removed and added) cannot meanwhile be taken as
    the local port of an outgoing connection (a pooled data channel, a
    reconnect), which would keep the listener from coming back. Random, and
    never twice in one run, so tests can run side by side."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    low = 10000
    for _ in range(200 if _EPHEMERAL_LOW > low + 1000 else 0):
        port = random.randrange(low, _EPHEMERAL_LOW)
        if port in _given:
            continue
        with socket.socket(fam, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _given.add(port)
        return port
    with socket.socket(fam, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(pred, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(port, host="127.0.0.1", timeout=10.0):
    wait_until(lambda: port_open(port, host), timeout, what=f"{host}:{port} to accept")


def wait_port_closed(port, host="127.0.0.1", timeout=10.0):
    wait_until(lambda: not port_open(port, host), timeout, what=f"{host}:{port} to close")


class Proc:
    """A started process whose stderr is collected in the background."""

    def __init__(self, args, env=None, cwd=None, stdin=subprocess.DEVNULL):
        self.args = args
        full_env = dict(os.environ)
        full_env.setdefault("RATHOLE_LOG", "debug")
        if env:
            full_env.update(env)
        self.p = subprocess.Popen(args, stdin=stdin, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=full_env, cwd=cwd)
        self.pid = self.p.pid
        self._err = []
        self._out = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._drain, args=(self.p.stderr, self._err), daemon=True),
                         threading.Thread(target=self._drain, args=(self.p.stdout, self._out), daemon=True)]
        for t in self._threads:
            t.start()

    def _drain(self, f, into):
        for line in iter(f.readline, b""):
            with self._lock:
                into.append(line.decode("utf-8", "replace"))
        f.close()

    @property
    def stderr(self):
        with self._lock:
            return "".join(self._err)

    @property
    def stdout(self):
        with self._lock:
            return "".join(self._out)

    def wait_log(self, text, timeout=10.0, count=1):
        """Wait until `text` appeared `count` times on stderr."""
        wait_until(lambda: self.stderr.count(text) >= count or self.p.poll() is not None and self.stderr.count(text) >= count,
                   timeout, what=f"log line {text!r} from {os.path.basename(self.args[0])}\n--- stderr ---\n{self.stderr[-4000:]}")

    def alive(self):
        return self.p.poll() is None

    def signal(self, sig):
        if self.p.poll() is None:
            os.kill(self.pid, sig)

    def stop(self, sig=None, timeout=10.0):
        """Stop by PID; returns the exit status. Escalates to SIGKILL."""
        # (no signal.SIGTERM default: in the class body `signal` is the method above)
        sig = signal.SIGTERM if sig is None else sig
        if self.p.poll() is None:
            os.kill(self.pid, sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.p.wait(5)
        for t in self._threads:
            t.join(2)
        return self.p.returncode


class Procs:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.all = []

    def start(self, args, **kw):
        p = Proc(args, **kw)
        self.all.append(p)
        return p

    def rathole(self, config_text, *flags, name="rathole.toml", env=None):
        path = self.tmp / name
        path.write_text(config_text)
        return self.start([RATHOLE, *flags, str(path)], env=env)

    def stop_all(self):
        for p in reversed(self.all):
            p.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def procs(tmp_path, request):
    ps = Procs(tmp_path)
    yield ps
    ps.stop_all()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        # the processes' own words are the first thing to read about a failure
        for p in ps.all:
            name = " ".join(os.path.basename(a) for a in p.args[:3])
            print(f"\n--- stderr of {name} (pid {p.pid}, exit {p.p.returncode}), last 8000 chars ---")
            print(p.stderr[-8000:])


def run_rathole(args, config_text=None, tmp_path=None, name="rathole.toml", env=None, timeout=20,
                cwd=None):
    """Run rathole to completion (for --check, --help, config errors)."""
    argv = [RATHOLE, *args]
    if config_text is not None:
        path = tmp_path / name
        path.write_bytes(config_text.encode() if isinstance(config_text, str) else config_text)
        argv.append(str(path))
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=cwd)


def need_binary(name, package):
    """The path of an external program the test needs, or skip with the reason."""
    import shutil
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}")
                                       if os.access(p, os.X_OK)), None)
    if not path:
        pytest.skip(f"{name} is not installed (apt-get install {package}; .ci/run installs it)")
    return path


@pytest.fixture
def echo():
    """A TCP echo service on loopback (helpers.EchoServer), stopped after the test."""
    from helpers import EchoServer	# helpers imports this module
    e = EchoServer()
    yield e
    e.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A CA, server identities (modern, legacy, expired PKCS#12) and a foreign
    CA, generated once per session with the openssl command (see pki.py)."""
    need_binary("openssl", "openssl")
    from pki import Pki
    return Pki(tmp_path_factory.mktemp("pki"))
