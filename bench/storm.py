"""The storm load of `make bench`: one side of a tcp tunnel runs with a low
open file limit (prlimit), and 5x more visitors than it has free descriptors
connect at once, each sending a byte, and hold for 5 s; then they all close.

Measured: how many visitors were served (their byte echoed) and how many the
tunnel closed during the hold (shed), the CPU the limited side spent in the
hold, the time from the visitors' close until a fresh visitor's echo comes
back, and the limited side's fds and RSS before the storm and after it (they
must come back to where they were; the pool of data channels may end up a
little fuller). The storm then comes a second time, on the same tunnel: what
it leaves behind must not grow. Every wait is bounded."""
import resource
import select
import socket
import time

from services import BenchError, Tunnel, wait_until

FACTOR = 5		# visitors per free descriptor
HOLD_S = 5.0
RECOVER_MAX_S = 30.0
SETTLE_MAX_S = 15.0


def echo_once(port, timeout):
    """One fresh visitor: True when its bytes come back."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"ping")
            s.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                d = s.recv(64)
                if not d:
                    break
                got += d
            return got == b"ping"
    except OSError:
        return False


def first_echo_after(port, t0, limit):
    """Seconds from t0 until a fresh visitor echoes (tries one after another,
    each with the time left), or None within limit seconds."""
    while True:
        left = t0 + limit - time.monotonic()
        if left <= 0:
            return None
        if echo_once(port, left):
            return time.monotonic() - t0
        time.sleep(0.02)


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(n, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def storm(port, n, hold_s):
    """n visitors at once, one byte each, held hold_s seconds; then closed.
    Returns (opened, served, shed): shed = closed or reset by the tunnel."""
    ep = select.epoll()
    socks = {}
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        if s.connect_ex(("127.0.0.1", port)) not in (0, 115):	# EINPROGRESS
            s.close()
            continue
        socks[s.fileno()] = s
        ep.register(s.fileno(), select.EPOLLOUT)
    sent, served, shed = set(), set(), set()
    deadline = time.monotonic() + hold_s
    while time.monotonic() < deadline:
        for fd, ev in ep.poll(0.1):
            s = socks[fd]
            if fd not in sent and not ev & (select.EPOLLERR | select.EPOLLHUP):
                try:
                    s.send(b"x")
                    sent.add(fd)
                    ep.modify(fd, select.EPOLLIN | select.EPOLLRDHUP)
                    continue
                except OSError:
                    pass
            try:
                d = s.recv(16)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                d = b""
            (served if d else shed).add(fd)
            ep.unregister(fd)
    for s in socks.values():
        s.close()
    ep.close()
    return len(socks), len(served), len(shed)


def storm_test(rathole, side, echo_port, keys, workdir, logdir, nofile, tag=""):
    """One storm against a fresh tunnel whose `side` runs under RLIMIT_NOFILE
    nofile; returns the figures (see the module's docstring)."""
    t = Tunnel(rathole, "tcp", {"echo": ("tcp", echo_port)}, keys, workdir, logdir,
               tag="-storm-%s%s" % (side, tag))
    t.start(nofile={side: nofile})
    try:
        t.wait_ready(lambda name, p: echo_once(p, 2))
        time.sleep(1.0)			# the pool of data channels fills up
        victim = t.server if side == "server" else t.client
        fds0, rss0 = victim.nfds(), victim.memory_kib()["VmRSS"]
        free = max(nofile - fds0, 1)
        n = FACTOR * free
        raise_nofile(n + 256)
        rounds = []
        for _ in range(2):
            cpu0 = victim.cpu_seconds()
            opened, served, shed = storm(t.ports["echo"], n, HOLD_S)
            cpu = victim.cpu_seconds() - cpu0
            gone = time.monotonic()
            recover = first_echo_after(t.ports["echo"], gone, RECOVER_MAX_S)
            # fds and RSS once the tunnel has let go of the storm (bounded wait)
            try:
                wait_until(lambda: victim.nfds() <= fds0 + 8, SETTLE_MAX_S, "fds to come back")
            except BenchError:		# reported as measured, not raised
                pass
            time.sleep(1.0)
            rounds.append({"opened": opened, "served": served, "shed": shed, "cpu_hold_s": cpu,
                           "recover_s": recover, "fds": victim.nfds(),
                           "rss_kib": victim.memory_kib()["VmRSS"]})
        r = dict(rounds[0])
        r.update({"side": side, "nofile": nofile, "free_fds": free, "visitors": n,
                  "hold_s": HOLD_S, "alive": t.server.alive() and t.client.alive(),
                  "fds_before": fds0, "fds_after": rounds[0]["fds"],
                  "fds_after2": rounds[1]["fds"], "rss_before_kib": rss0,
                  "rss_after_kib": rounds[0]["rss_kib"], "rss_after2_kib": rounds[1]["rss_kib"],
                  "recover2_s": rounds[1]["recover_s"]})
        return r
    finally:
        t.stop()


def say_storm(name, r, say):
    rec = "%.3f s" % r["recover_s"] if r["recover_s"] is not None else \
        "none within %.0f s" % RECOVER_MAX_S
    say("  %-10s %s under %d fds: %d visitors (%dx %d free): %d served, %d shed; cpu %.2f s "
        "in %.0f s; first echo after the storm: %s; fds %d -> %d -> %d, RSS %d -> %d -> %d KiB "
        "(before, after, after a second storm)%s" % (
            name, r["side"], r["nofile"], r["opened"], FACTOR, r["free_fds"], r["served"],
            r["shed"], r["cpu_hold_s"], r["hold_s"], rec, r["fds_before"], r["fds_after"],
            r["fds_after2"], r["rss_before_kib"], r["rss_after_kib"], r["rss_after2_kib"],
            "" if r["alive"] else "; A PROCESS DIED"))
