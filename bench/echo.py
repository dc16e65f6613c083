"""Two small programs for the held-connections load, each in its own process
(so each has its own 20,000-fd budget):

  echo.py serve PORT          a TCP echo service (epoll, one thread)
  echo.py hold PORT COUNT     opens COUNT connections to PORT, checks that each
                              one echoes, then holds them all open

`hold` talks to bench.py with one JSON object per line on stdout, and reads
commands from stdin: "check" (every held connection must echo again), "close".
Every wait is bounded; nothing here runs longer than its caller allows.
"""
import json
import resource
import select
import socket
import sys
import time


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve(port):
    """Echo everything back; a connection that closes is closed."""
    raise_nofile()
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(4096)
    ls.setblocking(False)
    ep = select.epoll()
    ep.register(ls.fileno(), select.EPOLLIN)
    conns = {}
    while True:
        for fd, ev in ep.poll(1.0):
            if fd == ls.fileno():
                for _ in range(256):
                    try:
                        c, _ = ls.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:	# EMFILE: try again on the next event
                        break
                    c.setblocking(False)
                    conns[c.fileno()] = c
                    ep.register(c.fileno(), select.EPOLLIN)
                continue
            c = conns.get(fd)
            if c is None:
                continue
            try:
                d = c.recv(65536)
                if d:
                    c.sendall(d)	# tiny messages: the socket buffer takes them
                    continue
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                pass
            ep.unregister(fd)
            del conns[fd]
            c.close()


def emit(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


class Holder:
    def __init__(self, port):
        self.port = port
        self.socks = []
        self.ep = select.epoll()

    def open_batch(self, n, timeout):
        """Opens n connections, sends a byte on each and waits for every echo.
        Returns how many echoed; the others are closed."""
        batch = {}
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            except OSError:
                s.close()
                break
            batch[s.fileno()] = s
            self.ep.register(s.fileno(), select.EPOLLOUT)
        return self._echo_round(batch, timeout, first=True)

    def _echo_round(self, batch, timeout, first):
        """Sends one byte on every socket of batch (on connect when first) and
        waits for it to come back. Returns the number that echoed."""
        sent, ok = set(), []
        if not first:
            for fd, s in batch.items():
                try:
                    s.send(b"x")
                    sent.add(fd)
                    self.ep.register(fd, select.EPOLLIN)
                except OSError:
                    pass
        deadline = time.monotonic() + timeout
        waiting = set(batch) if first else set(sent)
        while waiting and time.monotonic() < deadline:
            for fd, ev in self.ep.poll(0.2):
                s = batch.get(fd)
                if s is None or fd not in waiting:
                    continue
                if fd not in sent:
                    if ev & (select.EPOLLERR | select.EPOLLHUP):
                        waiting.discard(fd)
                        self.ep.unregister(fd)
                        continue
                    try:
                        s.send(b"x")
                        sent.add(fd)
                        self.ep.modify(fd, select.EPOLLIN)
                    except OSError:
                        waiting.discard(fd)
                        self.ep.unregister(fd)
                    continue
                try:
                    d = s.recv(16)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    d = b""
                waiting.discard(fd)
                self.ep.unregister(fd)
                if d == b"x":
                    ok.append(s)
        for fd in waiting:
            try:
                self.ep.unregister(fd)
            except OSError:
                pass
        good = set(id(s) for s in ok)
        for s in batch.values():
            if id(s) not in good and first:
                s.close()
        if first:
            self.socks.extend(ok)
        return len(ok)

    def check_all(self, timeout):
        return self._echo_round({s.fileno(): s for s in self.socks}, timeout, first=False)


def hold(port, count, batch_size=500, batch_timeout=20.0):
    raise_nofile()
    h = Holder(port)
    t0 = time.monotonic()
    while len(h.socks) < count:
        want = min(batch_size, count - len(h.socks))
        got = h.open_batch(want, batch_timeout)
        emit(event="progress", held=len(h.socks))
        if got < want:
            emit(event="short", wanted=want, got=got)
            break
    emit(event="holding", held=len(h.socks), seconds=round(time.monotonic() - t0, 2))
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "check":
            t1 = time.monotonic()
            n = h.check_all(60.0)
            emit(event="checked", echoed=n, held=len(h.socks),
                 seconds=round(time.monotonic() - t1, 2))
        elif cmd == "close":
            break
    for s in h.socks:
        s.close()
    emit(event="closed")


def main(argv):
    if len(argv) >= 3 and argv[1] == "serve":
        serve(int(argv[2]))
    elif len(argv) >= 4 and argv[1] == "hold":
        hold(int(argv[2]), int(argv[3]))
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except KeyboardInterrupt:
        sys.exit(0)
