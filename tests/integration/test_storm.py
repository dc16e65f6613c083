"""Visitors that hang up while they wait for a data channel (issue 23,
part 1).

- Visitors that hang up while the client is stopped (SIGSTOP: no data channel
  can come) are closed at once: no CLOSE-WAIT socket, no fd left 1 s later.
- A visitor that sends its request and half-closes while it waits is still
  served (`printf req | nc -N`)."""
import signal
import socket
import struct
import time

from helpers import Tunnel, recv_all, wait_tunnel
from proc_stats import fd_count

TCP_CLOSE_WAIT = 0x08


def close_wait_count(port):
    """Sockets in CLOSE-WAIT whose local port is `port` (IPv4, this netns)."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, state = fields[1], int(fields[3], 16)
            if int(local.rsplit(":", 1)[1], 16) == port and state == TCP_CLOSE_WAIT:
                n += 1
    return n


def stopped_client_tunnel(procs, echo, holders):
    """A tunnel whose client is stopped, with the server's pool drained by
    `holders` visitors that stay connected (the rest of them wait)."""
    t = Tunnel(procs, local_port=echo.port, env={"RATHOLE_LOG": "info"}).start()
    wait_tunnel(t.service_port)
    time.sleep(0.3)                     # the pool tops up
    t.client.signal(signal.SIGSTOP)
    held = [socket.create_connection(("127.0.0.1", t.service_port), timeout=5)
            for _ in range(holders)]
    time.sleep(0.3)
    return t, held


def test_visitors_hanging_up_while_waiting_are_freed(procs, echo):
    """50 visitors that hang up (25 with a FIN, 25 with a reset) while the
    client is stopped and no data channel can come: 1 s later the server holds
    no CLOSE-WAIT socket on the service port and none of their fds."""
    t, held = stopped_client_tunnel(procs, echo, holders=20)
    try:
        base = fd_count(t.server.pid)
        for i in range(50):
            s = socket.create_connection(("127.0.0.1", t.service_port), timeout=5)
            if i % 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        # the server has accepted them all (the holders' fds are counted in base)
        time.sleep(1.0)
        assert close_wait_count(t.service_port) == 0, \
            f"{close_wait_count(t.service_port)} CLOSE-WAIT sockets on the service port"
        assert fd_count(t.server.pid) <= base, \
            f"server holds {fd_count(t.server.pid)} fds, {base} before the visitors"
        assert t.server.alive()
    finally:
        t.client.signal(signal.SIGCONT)
        for s in held:
            s.close()
    wait_tunnel(t.service_port)


def test_half_closed_waiting_visitor_is_served(procs, echo):
    """A visitor that sends its request and half-closes while it waits for a
    data channel (`printf req | nc -N`) is served when the client is back."""
    t, held = stopped_client_tunnel(procs, echo, holders=20)
    try:
        v = socket.create_connection(("127.0.0.1", t.service_port), timeout=10)
        v.sendall(b"request")
        v.shutdown(socket.SHUT_WR)
        quiet = socket.create_connection(("127.0.0.1", t.service_port), timeout=10)
        quiet.shutdown(socket.SHUT_WR)      # nothing sent: taken as gone
        time.sleep(0.5)
        assert close_wait_count(t.service_port) == 1
    finally:
        t.client.signal(signal.SIGCONT)
        for s in held:
            s.close()
    with v, quiet:
        assert recv_all(v) == b"request"
        assert quiet.recv(16) == b""
