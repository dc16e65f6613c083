"""The high-availability loads of `make bench` (docs/ha.md): one service with
`balance = "round_robin"` and two clients (replicas) on loopback, tcp
transport.

- failover: a stream of new visitors (one after another: connect, a few
  bytes echoed, close) runs while one replica is killed with SIGKILL. The
  failover time is from the kill until the first visitor of an unbroken run
  of successes (FAILOVER_RUN of them): visitors in between may have been
  given to the dead replica. Repeated with a fresh replica each trial.
- balance_cost: new connections per second (wrk, Connection: close, to
  nginx) through the service without `balance` and one client, with it and
  one client, and with it and two clients; targets alternated in each round.

Every wait is bounded."""
import json
import os
import signal
import statistics
import threading
import time
import urllib.request

import loads as L
from services import BenchError, Proc, free_port, port_listening, transport_sections, wait_until
from storm import echo_once

TOKEN = "bench-ha-token"
FAILOVER_RUN = 50		# successes in a row that end a failover
FAILOVER_MAX_S = 10.0
VISIT_TIMEOUT_S = 2.0


class Ha:
    """A rathole server with one tcp service (balance as given) and its admin
    API, and its clients, each forwarding to the same local service."""

    def __init__(self, rathole, local_port, workdir, logdir, balance, tag):
        self.rathole, self.local_port = rathole, local_port
        self.logdir, self.tag = logdir, tag
        self.dir = os.path.join(workdir, "ha-" + tag)
        os.makedirs(self.dir, exist_ok=True)
        self.bind_port, self.port, self.api = free_port(), free_port(), free_port()
        self.balance = balance
        self.server = None
        self.clients = []
        self.started = 0

    def _write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
        return path

    def _env(self):
        e = dict(os.environ)
        e.setdefault("RATHOLE_LOG", "info")
        return e

    def start_server(self):
        text = ('[server]\nbind_addr = "127.0.0.1:%d"\n' % self.bind_port +
                transport_sections("server", "tcp", {}) +
                '[server.api]\nbind_addr = "127.0.0.1:%d"\n' % self.api +
                '[server.services.svc]\ntoken = "%s"\nbind_addr = "127.0.0.1:%d"\n'
                % (TOKEN, self.port) +
                ('balance = "%s"\n' % self.balance if self.balance else ""))
        path = self._write("server.toml", text)
        self.server = Proc("rathole-ha-%s-server" % self.tag,
                           [self.rathole, "--server", path], self.logdir, env=self._env())
        wait_until(lambda: port_listening(self.bind_port) or not self.server.alive(), 15,
                   "the ha server to listen")
        if not self.server.alive():
            raise BenchError("the ha rathole server exited:\n%s" % self.server.log_tail())

    def add_client(self):
        text = ('[client]\nremote_addr = "127.0.0.1:%d"\n' % self.bind_port +
                transport_sections("client", "tcp", {}) +
                '[client.services.svc]\ntoken = "%s"\nlocal_addr = "127.0.0.1:%d"\n'
                % (TOKEN, self.local_port))
        path = self._write("client.toml", text)
        self.started += 1
        c = Proc("rathole-ha-%s-client%d" % (self.tag, self.started),
                 [self.rathole, "--client", path], self.logdir, env=self._env())
        self.clients.append(c)
        return c

    def replicas(self):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/api/status" % self.api,
                                        timeout=2) as r:
                svc = json.load(r)["services"][0]
        except (OSError, ValueError):
            return []
        return svc.get("replicas", [])

    def wait_replicas(self, n, pooled=8):
        """Until n replicas are up with full pools (or, for a server without
        replicas in its status, until the service echoes)."""
        def ok():
            r = self.replicas()
            return len(r) == n and all(x["data_channels_pooled"] >= pooled for x in r)
        wait_until(ok, 20, "%d replicas with %d pooled data channels each" % (n, pooled))

    def procs(self):
        return [self.server] + self.clients

    def stop(self):
        for p in reversed(self.procs()):
            p.stop()


class Prober:
    """New visitors one after another until stopped: [(start, ok)]."""

    def __init__(self, port):
        self.port = port
        self.results = []
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop and len(self.results) < 200000:
            t0 = time.monotonic()
            self.results.append((t0, echo_once(self.port, VISIT_TIMEOUT_S)))

    def stop(self):
        self._stop = True
        self._t.join(VISIT_TIMEOUT_S + 5)


def failover_of(results, killed, reaped):
    """Seconds from the kill until the first visitor of FAILOVER_RUN
    successes in a row (None without such a run), and the visitors that
    started once the killed process was gone (reaped: a visitor between the
    signal and its death may have been given to it, alive) and how many of
    them failed."""
    after = [(t, ok) for t, ok in results if t >= killed]
    gone = [ok for t, ok in results if t >= reaped]
    failed = sum(1 for ok in gone if not ok)
    run = 0
    for i, (t, ok) in enumerate(after):
        run = run + 1 if ok else 0
        if run == FAILOVER_RUN:
            return after[i - FAILOVER_RUN + 1][0] - killed, failed, len(gone)
    return None, failed, len(gone)


def failover_test(rathole, echo_port, workdir, logdir, trials):
    """Trials of SIGKILL of one of two replicas under a stream of visitors."""
    ha = Ha(rathole, echo_port, workdir, logdir, "round_robin", "failover")
    out = []
    try:
        ha.start_server()
        ha.add_client()
        ha.add_client()
        for _ in range(trials):
            ha.wait_replicas(2)
            p = Prober(ha.port)
            try:
                wait_until(lambda: sum(ok for _, ok in p.results) >= 200, 20,
                           "visitors before the kill")
                victim = ha.clients.pop(0)
                killed = time.monotonic()
                os.kill(victim.pid, signal.SIGKILL)
                victim.p.wait(5)
                reaped = time.monotonic()
                wait_until(lambda: failover_of(p.results, killed, reaped)[0] is not None or
                           time.monotonic() - killed > FAILOVER_MAX_S, FAILOVER_MAX_S + 5,
                           "visitors after the kill")
            finally:
                p.stop()
            victim.stop()
            fo, failed, n = failover_of(p.results, killed, reaped)
            out.append({"failover_s": fo, "failed": failed, "visitors": n,
                        "alive": ha.server.alive()})
            ha.add_client()		# a fresh replica for the next trial
    finally:
        ha.stop()
    return out


def balance_cost(rathole, http_port, workdir, logdir, rounds, duration, say):
    """New connections per second (wrk, Connection: close) without balance,
    with it and one client, with it and two clients."""
    setups = [("no balance, 1 client", None, 1), ("balance, 1 replica", "round_robin", 1),
              ("balance, 2 replicas", "round_robin", 2)]
    tunnels = []
    res = {name: [] for name, _, _ in setups}
    try:
        for name, balance, n in setups:
            ha = Ha(rathole, http_port, workdir, logdir, balance,
                    "cost-%s-%d" % (balance or "none", n))
            ha.start_server()
            for _ in range(n):
                ha.add_client()
            ha.wait_replicas(n)
            tunnels.append((name, ha))
        for rnd in range(rounds):
            order = tunnels if rnd % 2 == 0 else list(reversed(tunnels))
            for name, ha in order:
                cpu0 = sum(p.cpu_seconds() for p in ha.procs())
                r = L.wrk(ha.port, duration, close=True)
                r["cpu_s"] = sum(p.cpu_seconds() for p in ha.procs()) - cpu0
                res[name].append(r)
                say("  %-22s %8.0f conn/s  errors %d  cpu %.2f s" % (
                    name, r["rps"], r.get("errors", 0), r["cpu_s"]))
    finally:
        for _, ha in tunnels:
            ha.stop()
    out = {}
    for name, runs in res.items():
        rps = statistics.median(r["rps"] for r in runs)
        n = [r.get("requests") or r["rps"] * duration for r in runs]
        us = statistics.median(r["cpu_s"] * 1e6 / k for r, k in zip(runs, n) if k)
        out[name] = {"rps": rps, "cpu_us_per_conn": us,
                     "errors": sum(r.get("errors", 0) for r in runs), "runs": len(runs)}
    return out


def run(rathole, echo_port, http_port, workdir, logdir, quick, rounds, duration, say):
    say("\nhigh availability: one service, balance = \"round_robin\", replicas on loopback")
    trials = 3 if quick else 7
    fo = failover_test(rathole, echo_port, workdir, logdir, trials)
    for i, t in enumerate(fo):
        say("  failover %d: %s after SIGKILL of one of two replicas; %d of %d visitors after "
            "its death failed" % (i + 1, "%.1f ms" % (t["failover_s"] * 1e3)
                                 if t["failover_s"] is not None else
                                 "no %d successes in a row within %.0f s" % (FAILOVER_RUN,
                                                                           FAILOVER_MAX_S),
                                 t["failed"], t["visitors"]))
    say("  new connections per second (wrk, Connection: close, 64 conns, nginx):")
    # three rounds at least, even quick: a single run on a shared machine
    # moves by a third
    cost = balance_cost(rathole, http_port, workdir, logdir, max(rounds, 3), duration, say)
    return {"failover": fo, "balance_cost": cost, "failover_run": FAILOVER_RUN}
