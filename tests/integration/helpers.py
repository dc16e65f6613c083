"""Local services and config builders for the integration tests.

Every service runs in a daemon thread on loopback with a bounded lifetime
(stopped by the fixture that started it), and every socket operation has a
timeout, so a broken tunnel fails a test instead of hanging it.
"""
import hashlib
import os
import selectors
import socket
import struct
import threading
import time
import urllib.error
import urllib.request

from conftest import free_port, wait_until


def listen_tcp(host="127.0.0.1", port=0, backlog=64, timeout=0.2):
    """A listening TCP socket on host:port (port 0: a free one) with an
    accept timeout (None: non-blocking)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(backlog)
    if timeout is None:
        s.setblocking(False)
    else:
        s.settimeout(timeout)
    return s



def connecting(port, host="127.0.0.1"):
    """A non-blocking TCP socket whose connect to host:port has been started
    (storms open hundreds of these before any is accepted)."""
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex((host, port))
    return s

def accepted(ls, stopping):
    """The connections accepted on ls (made by listen_tcp) until stopping()
    says so or ls is closed."""
    while not stopping():
        try:
            c, _ = ls.accept()
        except socket.timeout:
            continue
        except OSError:
            return
        yield c


class EchoServer:
    """A TCP echo server on one thread (selectors), for many connections."""

    def __init__(self, host="127.0.0.1", port=0, backlog=4096):
        self.sock = listen_tcp(host, port, backlog, timeout=None)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = False
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.sock, selectors.EVENT_READ, None)
        self._pending = {}
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _close(self, c):
        try:
            self._sel.unregister(c)
        except (KeyError, ValueError):
            pass
        self._pending.pop(c, None)
        c.close()

    def _run(self):
        while not self._stop:
            for key, ev in self._sel.select(0.1):
                s = key.fileobj
                if s is self.sock:
                    for _ in range(64):
                        try:
                            c, _ = self.sock.accept()
                        except BlockingIOError:
                            break
                        c.setblocking(False)
                        self.accepted += 1
                        self._pending[c] = b""
                        self._sel.register(c, selectors.EVENT_READ, None)
                    continue
                if ev & selectors.EVENT_WRITE and self._pending.get(s):
                    try:
                        n = s.send(self._pending[s])
                        self._pending[s] = self._pending[s][n:]
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        self._close(s)
                        continue
                if ev & selectors.EVENT_READ and len(self._pending.get(s, b"")) < (1 << 20):
                    try:
                        d = s.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        d = None
                    except OSError:
                        self._close(s)
                        continue
                    if d == b"":
                        if not self._pending.get(s):
                            self._close(s)
                            continue
                        self._pending[s] += b""
                    elif d:
                        self._pending[s] += d
                if s in self._pending:
                    want = selectors.EVENT_READ
                    if self._pending[s]:
                        want |= selectors.EVENT_WRITE
                    self._sel.modify(s, want)
        for c in list(self._pending):
            self._close(c)
        self.sock.close()

    def stop(self):
        self._stop = True
        self._t.join(5)


class UdpEcho:
    """A UDP echo service; .peers: every source address seen. reply(data,
    addr), when given, makes the answer instead of the echo (e.g. the source
    port the service saw, so a visitor learns which local socket carried it)."""

    def __init__(self, host="127.0.0.1", port=0, reply=None):
        self.reply = reply
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.peers = set()
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop:
            try:
                d, a = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                break
            self.peers.add(a)
            try:
                self.sock.sendto(self.reply(d, a) if self.reply else d, a)
            except OSError:
                pass
        self.sock.close()

    def stop(self):
        self._stop = True
        self._t.join(5)


class PathPair:
    """One connection through a PathRelay: the client's side, the server's
    side, and what came from the server so far (its first bytes, its count)."""

    def __init__(self, client, server):
        self.client, self.server = client, server
        self.first = bytearray()
        self.from_server = 0
        self.resetting = False

    def cut(self):
        for x in (self.client, self.server):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def reset(self):
        """Both connections end with a TCP reset (SO_LINGER 0, then close).
        SHUT_RD (which sends nothing) first wakes the pipe thread blocked in
        recv() on the other socket, which holds it open until it returns;
        `resetting` keeps that thread from sending a FIN first."""
        self.resetting = True
        for how in ("linger", "wake", "close"):
            for x in (self.client, self.server):
                try:
                    if how == "linger":
                        x.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     struct.pack("ii", 1, 0))
                    elif how == "wake":
                        x.shutdown(socket.SHUT_RD)
                    else:
                        x.close()
                except OSError:
                    pass


class PathRelay:
    """The network path between a rathole client and server: a TCP relay on
    loopback that tests can watch (pairs), alter (override alter()) or cut.
    The client connects to .port; the relay connects on to target.
    pass_resets: a reset from one side resets both (as a network path passes
    it on); otherwise both get a FIN."""
    pass_resets = False

    def __init__(self, target):
        self.target = target
        self.ls = listen_tcp()
        self.port = self.ls.getsockname()[1]
        self.pairs = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def alter(self, pair, from_server, data):
        """The bytes to pass on for data read from one side (as is here)."""
        return data

    def _accept(self):
        for c in accepted(self.ls, lambda: self._stop):
            pair = PathPair(c, socket.create_connection(("127.0.0.1", self.target)))
            self.pairs.append(pair)
            threading.Thread(target=self._pipe, args=(pair, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(pair, True), daemon=True).start()

    def _pipe(self, pair, from_server):
        a, b = (pair.server, pair.client) if from_server else (pair.client, pair.server)
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    if not pair.resetting:
                        b.shutdown(socket.SHUT_WR)
                    return
                if from_server:
                    if len(pair.first) < 8:
                        pair.first.extend(d[:8 - len(pair.first)])
                    pair.from_server += len(d)
                b.sendall(self.alter(pair, from_server, d))
        except ConnectionResetError:
            if self.pass_resets:
                pair.reset()
            else:
                pair.cut()
        except OSError:
            pair.cut()	# one side is gone: end both, like a real network path

    def stop(self):
        self._stop = True
        self.ls.close()
        for pair in self.pairs:
            pair.client.close()
            pair.server.close()


def echo_once(port, data, host="127.0.0.1", timeout=10):
    """Connect, send data, half-close, read everything back."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        return recv_all(s)


def recv_all(s, limit=1 << 31):
    out = []
    n = 0
    while n < limit:
        d = s.recv(1 << 20)
        if not d:
            break
        out.append(d)
        n += len(d)
    return b"".join(out)


def recv_digest(s):
    """Reads s to its end without keeping the bytes: (count, SHA-256 hex)."""
    h = hashlib.sha256()
    n = 0
    while True:
        d = s.recv(1 << 20)
        if not d:
            return n, h.hexdigest()
        h.update(d)
        n += len(d)


def echo_on(c, data):
    """Sends data on an open connection to an echo service, reads it back."""
    c.sendall(data)
    got = b""
    while len(got) < len(data):
        d = c.recv(65536)
        if not d:
            break
        got += d
    return got


def held(port, tag, host="127.0.0.1"):
    """A visitor connection that stays open (the caller closes it), checked
    to echo tag."""
    c = socket.create_connection((host, port), timeout=10)
    assert echo_on(c, tag) == tag
    return c


def closed_by_peer(c, timeout=10):
    """True when the peer ends the connection (EOF or reset) within timeout."""
    c.settimeout(timeout)
    try:
        return c.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def end_seen(s, timeout=15):
    """How the peer ended the connection, after the bytes before its end:
    "reset" (ECONNRESET: an abort), "eof" (a clean end), or "open" (no end
    within timeout)."""
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
        return "eof"
    except ConnectionResetError:
        return "reset"
    except socket.timeout:
        return "open"


def recv_exact(s, n):
    """Exactly n bytes from s (fails if the connection ends first)."""
    out = bytearray()
    while len(out) < n:
        d = s.recv(min(1 << 20, n - len(out)))
        assert d, f"the connection ended after {len(out)} of {n} bytes"
        out += d
    return bytes(out)


def tunnel_works(port, host="127.0.0.1"):
    try:
        return echo_once(port, b"ping", host=host, timeout=3) == b"ping"
    except OSError:
        return False


def wait_tunnel(port, host="127.0.0.1", timeout=15):
    wait_until(lambda: tunnel_works(port, host), timeout, interval=0.1,
               what=f"the tunnel on {host}:{port} to echo")


def transfer_checked(port, nbytes, chunk=1 << 20, host="127.0.0.1", timeout=120, pace=0.0,
                     half_close=True, midway=None):
    """Send nbytes of pseudo-random data through an echo tunnel while reading
    the echo back; return (sent_sha256, received_sha256, received_bytes).
    pace: seconds to sleep between chunks, to make a transfer last.
    half_close=False: never half-close; the reader stops after nbytes (for
    paths that end both directions at the first EOF, like some proxies).
    midway: called once when half the bytes are sent (and echoed back), the
    connection open: what it does happens during the transfer, whatever the
    machine's speed (its exceptions end the transfer and reach the caller)."""
    block = os.urandom(chunk)
    sent = hashlib.sha256()
    got = hashlib.sha256()
    received = [0]
    err = []
    s = socket.create_connection((host, port), timeout=timeout)

    def reader():
        try:
            while half_close or received[0] < nbytes:
                d = s.recv(1 << 20)
                if not d:
                    break
                got.update(d)
                received[0] += len(d)
        except OSError as e:
            err.append(e)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    left = nbytes
    i = 0
    try:
        while left > 0:
            # vary the data so that a misplaced chunk changes the digest
            piece = block[: min(chunk, left)]
            piece = bytes([i & 0xFF]) + piece[1:]
            s.sendall(piece)
            sent.update(piece)
            left -= len(piece)
            i += 1
            if pace:
                time.sleep(pace)
            if midway and left <= nbytes // 2:
                wait_until(lambda: received[0] >= nbytes - left or not t.is_alive(), timeout,
                           what="the first half's echo")
                midway()
                midway = None
        if half_close:
            s.shutdown(socket.SHUT_WR)
        t.join(timeout)
    finally:
        s.close()
    assert not err, err
    return sent.hexdigest(), got.hexdigest(), received[0]


def server_config(bind_port, services, transport="", extra="", host="127.0.0.1"):
    """services: {name: dict(bind_port=, token=, type=, extra=)}"""
    out = [f'[server]\nbind_addr = "{host}:{bind_port}"\n{extra}\n{transport}\n']
    for name, s in services.items():
        out.append(f'[server.services.{name}]\n')
        if "type" in s:
            out.append(f'type = "{s["type"]}"\n')
        if "token" in s:
            out.append(f'token = "{s["token"]}"\n')
        out.append(f'bind_addr = "{s.get("bind_host", "127.0.0.1")}:{s["bind_port"]}"\n')
        out.append(s.get("extra", "") + "\n")
    return "".join(out)


def client_config(server_port, services, transport="", extra="", host="127.0.0.1"):
    """services: {name: dict(local_port=, token=, type=, extra=)}"""
    out = [f'[client]\nremote_addr = "{host}:{server_port}"\n{extra}\n{transport}\n']
    for name, s in services.items():
        out.append(f'[client.services.{name}]\n')
        if "type" in s:
            out.append(f'type = "{s["type"]}"\n')
        if "token" in s:
            out.append(f'token = "{s["token"]}"\n')
        out.append(f'local_addr = "{s.get("local_host", "127.0.0.1")}:{s["local_port"]}"\n')
        out.append(s.get("extra", "") + "\n")
    return "".join(out)


class TamperRelay(PathRelay):
    """Flips one byte of the first connection that carries more than `after`
    bytes from the server to the client."""

    def __init__(self, target, after=200_000):
        self.after = after
        self.tampered = False
        super().__init__(target)

    def alter(self, pair, from_server, data):
        if from_server and not self.tampered and pair.from_server > self.after:
            self.tampered = True
            data = data[:-1] + bytes([data[-1] ^ 0x40])
        return data


class Tunnel:
    """A server and a client process forwarding one TCP service to an echo server."""

    def __init__(self, procs, name="echo", token="secret-token", service_type="tcp",
                 transport_server="", transport_client="", server_extra="",
                 client_extra="", local_port=None, svc_extra_server="", svc_extra_client="",
                 env=None):
        self.procs = procs
        self.name = name
        self.server_port = free_port()
        self.service_port = free_port(socket.SOCK_DGRAM if service_type == "udp" else socket.SOCK_STREAM)
        self.local_port = local_port
        self.server_text = server_config(
            self.server_port,
            {name: dict(bind_port=self.service_port, token=token, type=service_type,
                        extra=svc_extra_server)},
            transport=transport_server, extra=server_extra)
        self.client_text = client_config(
            self.server_port,
            {name: dict(local_port=local_port, token=token, type=service_type,
                        extra=svc_extra_client)},
            transport=transport_client, extra=client_extra)
        self.env = env
        self.server = None
        self.client = None

    def start_server(self):
        self.server = self.procs.rathole(self.server_text, name="server.toml", env=self.env)
        self.server.wait_log("listening on 127.0.0.1:%d" % self.server_port)
        return self.server

    def start_client(self):
        self.client = self.procs.rathole(self.client_text, name="client.toml", env=self.env)
        return self.client

    def start(self):
        self.start_server()
        self.start_client()
        self.server.wait_log(f"service {self.name}: listening on", timeout=15)
        return self


def http(url, method="GET", token=None):
    """An admin API request: (status, body text); HTTP errors are answers too."""
    req = urllib.request.Request(url, method=method)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(text, name, **labels):
    """The value of one sample of a Prometheus text page."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{want}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    raise AssertionError(f"no sample {prefix!r} in:\n{text}")


PP2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def parse_proxy_header(c):
    """Reads one PROXY protocol header (v1 text or v2 binary) from socket c,
    strictly (haproxy's proxy-protocol.txt): returns dict(version=1|2,
    family="TCP4"|"TCP6", src=(ip, port), dst=(ip, port)); raises
    ValueError for anything else. Reads the header's bytes only."""
    def exact(n):
        b = b""
        while len(b) < n:
            d = c.recv(n - len(b))
            if not d:
                raise ValueError(f"closed inside the header after {b!r}")
            b += d
        return b

    first = exact(12)
    if first == PP2_SIGNATURE:
        ver_cmd, fam = exact(2)
        length = int.from_bytes(exact(2), "big")
        if ver_cmd != 0x21:
            raise ValueError(f"v2: version/command byte 0x{ver_cmd:02x}, expected 0x21 (v2 PROXY)")
        body = exact(length)
        if fam == 0x11 and length >= 12:
            ip = lambda b: socket.inet_ntop(socket.AF_INET, b)
            src, dst, ports = body[0:4], body[4:8], body[8:12]
            family = "TCP4"
        elif fam == 0x21 and length >= 36:
            ip = lambda b: socket.inet_ntop(socket.AF_INET6, b)
            src, dst, ports = body[0:16], body[16:32], body[32:36]
            family = "TCP6"
        else:
            raise ValueError(f"v2: family/protocol 0x{fam:02x} with {length} address bytes")
        return dict(version=2, family=family,
                    src=(ip(src), int.from_bytes(ports[0:2], "big")),
                    dst=(ip(dst), int.from_bytes(ports[2:4], "big")))
    if not first.startswith(b"PROXY "):
        raise ValueError(f"no PROXY header: {first!r}")
    line = first
    while not line.endswith(b"\r\n"):
        if len(line) >= 107:            # the longest v1 line, CRLF included
            raise ValueError(f"v1: no CRLF within 107 bytes: {line!r}")
        line += exact(1)
    parts = line[:-2].decode("ascii").split(" ")
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ValueError(f"v1: malformed line {line!r}")
    fam = socket.AF_INET if parts[1] == "TCP4" else socket.AF_INET6
    for a in parts[2:4]:
        socket.inet_pton(fam, a)        # ValueError/OSError on a bad address
    for p in parts[4:6]:
        if not p.isdigit() or (len(p) > 1 and p[0] == "0") or int(p) > 65535:
            raise ValueError(f"v1: bad port {p!r} in {line!r}")
    return dict(version=1, family=parts[1], src=(parts[2], int(parts[4])),
                dst=(parts[3], int(parts[5])))


class ProxyProtocolService:
    """A local service that expects a PROXY header on each connection: it
    records what the header said (.headers, in order; a malformed header is
    recorded as dict(error=...) and the connection closed), answers one line
    "v<version> <family> <src ip> <src port> <dst ip> <dst port>\\n", then
    echoes the rest of the stream."""

    def __init__(self, host="127.0.0.1"):
        self.ls = listen_tcp(host)
        self.port = self.ls.getsockname()[1]
        self.headers = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        for c in accepted(self.ls, lambda: self._stop):
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(10)
        with c:
            try:
                h = parse_proxy_header(c)
            except (ValueError, OSError) as e:
                self.headers.append(dict(error=str(e)))
                return
            self.headers.append(h)
            try:
                c.sendall(b"v%d %s %s %d %s %d\n" % (h["version"], h["family"].encode(),
                                                     h["src"][0].encode(), h["src"][1],
                                                     h["dst"][0].encode(), h["dst"][1]))
                while True:
                    d = c.recv(65536)
                    if not d:
                        return
                    c.sendall(d)
            except OSError:
                pass

    def stop(self):
        self._stop = True
        self.ls.close()


def assert_paced(times, low, high):
    """Connection attempts seen at `times` (time.monotonic(), by a fake
    server) came at least `low` and at most `high` seconds apart on average,
    and none was more than `high` apart. Robust on a loaded machine: an
    attempt seen late shortens the next gap as much as it lengthens its own,
    so the floor is held by the average (a client without a backoff retries
    within milliseconds: far below) and each single gap only by low / 4."""
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps, times
    assert (times[-1] - times[0]) / len(gaps) >= low, gaps
    assert min(gaps) >= low / 4, gaps
    assert max(gaps) <= high, gaps
