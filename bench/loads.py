"""The loads: each runs one load generator against a port for a duration and
returns its numbers. The same function serves the direct path and the tunnel;
only the port differs."""
import json
import re
import socket
import subprocess
import time

from services import BenchError, LIMIT_MBIT, VHOST_NAME

IPERF_RETRIES = 6


def _iperf3(port, duration, extra):
    """Runs an iperf3 client (JSON output). iperf3 -s runs one test at a time,
    and through a tunnel the previous test's teardown may still be on its
    way: a "busy" answer is retried."""
    args = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(duration), "-J"] + extra
    last = ""
    for attempt in range(IPERF_RETRIES):
        try:
            r = subprocess.run(args, capture_output=True, text=True, timeout=duration + 30)
        except subprocess.TimeoutExpired:
            last = "no answer within %d s" % (duration + 30)
            time.sleep(1)
            continue
        try:
            d = json.loads(r.stdout)
        except ValueError:
            d = {"error": r.stdout[-300:] + r.stderr[-300:]}
        if "error" not in d:
            return d
        last = d["error"]
        time.sleep(0.5 + attempt * 0.5)
    raise BenchError("iperf3 %s failed: %s" % (" ".join(args[1:]), last))


def iperf_tcp(port, duration, reverse=False, streams=1, mbps=None):
    extra = (["-R"] if reverse else []) + (["-P", str(streams)] if streams > 1 else []) + (
        ["-b", "%dM" % mbps] if mbps else [])
    d = _iperf3(port, duration, extra)
    e = d["end"]
    return {"gbps": e["sum_received"]["bits_per_second"] / 1e9,
            "retransmits": e["sum_sent"].get("retransmits", 0)}


# The receiving test socket's buffer (iperf3 -w sets it on both ends). With
# the kernel's default (208 KiB: 3.4 ms at 500 Mb/s) the receiving iperf3
# itself drops datagrams whenever it waits that long for a core, direct as
# well as through a tunnel (RcvbufErrors on its own socket; 0.0-4.7 % lost
# direct in one run on two shared cores). A service expecting 500 Mb/s asks
# for more; 4 MiB is this machine's net.core.rmem_max. The tunnel's own
# UDP sockets ask for the same (src/udp.c).
UDP_SOCKET_BUFFER = "4M"


def iperf_udp(port, duration, mbps, length=1400, reverse=False):
    d = _iperf3(port, duration, ["-u", "-b", "%dM" % mbps, "-l", str(length),
                                 "-w", UDP_SOCKET_BUFFER] + (["-R"] if reverse else []))
    r = d["end"]["sum_received"] if "sum_received" in d["end"] else d["end"]["sum"]
    sent = d["end"].get("sum_sent", r)
    packets = r.get("packets") or sent.get("packets") or 0
    lost = r.get("lost_packets", 0)
    return {"loss_pct": 100.0 * lost / packets if packets else 100.0,
            "recv_mbps": r["bits_per_second"] / 1e6, "packets": packets, "lost": lost}


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if not m:
        raise BenchError("cannot read the wrk latency %r" % text)
    return float(m.group(1)) * _UNIT[m.group(2)]


def parse_wrk(out):
    res = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise BenchError("wrk printed no Requests/sec:\n" + out[-500:])
    res["rps"] = float(m.group(1))
    for pct in ("50", "99"):
        m = re.search(r"^\s+%s%%\s+(\S+)" % pct, out, re.M)
        if m:
            res["p%s_ms" % pct] = _ms(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["errors"] = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else 0
    return res


def wrk(port, duration, path="/small", close=False, threads=2, conns=64, host=None):
    args = ["wrk", "-t", str(threads), "-c", str(conns), "-d", "%ds" % duration,
            "--latency", "--timeout", "5s"]
    if close:
        args += ["-H", "Connection: close"]
    if host:
        args += ["-H", "Host: " + host]
    args.append("http://127.0.0.1:%d%s" % (port, path))
    r = subprocess.run(args, capture_output=True, text=True, timeout=duration + 30)
    if r.returncode != 0:
        raise BenchError("wrk failed: %s" % (r.stderr or r.stdout)[-500:])
    return parse_wrk(r.stdout)


def http_exchange_sizes(port, close=False, path="/small"):
    """Bytes of the request wrk sends (its default headers) and of nginx's
    answer: what the floor measurement moves per request."""
    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n"
           % (path, port, "Connection: close\r\n" if close else "")).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.settimeout(5)
        s.sendall(req)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            d = s.recv(65536)
            if not d:
                break
            data += d
        head, _, body = data.partition(b"\r\n\r\n")
        m = re.search(rb"content-length:\s*(\d+)", head, re.I)
        if not m:
            raise BenchError("nginx's answer has no Content-Length: %r" % head[:200])
        need = int(m.group(1))
        while len(body) < need:
            d = s.recv(65536)
            if not d:
                break
            body += d
    return len(req), len(head) + 4 + need


# ---- probes: does a service answer through this port? ----

def http_ok(port, path="/small", host="x"):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET " + path.encode() + b" HTTP/1.0\r\nHost: " + host.encode() +
                      b"\r\n\r\n")
            data = b""
            while len(data) < 12:
                d = s.recv(4096)
                if not d:
                    break
                data += d
            return data.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def echo_ok(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"ping")
            return s.recv(16) == b"ping"
    except OSError:
        return False


# ---- the catalogue ----

class Load:
    def __init__(self, name, title, service, metric, unit, run, higher_better=True,
                 extra=(), tcp=True):
        self.name, self.title, self.service = name, title, service
        self.metric, self.unit, self.run = metric, unit, run
        self.higher_better = higher_better
        self.extra = extra		# further metrics worth a median
        self.tcp = tcp			# a TCP load: the socat and ssh -R references take part

    def cost(self, res, duration):
        """CPU time of the tunnel processes per unit of work: robust where
        throughput is not (a busy neighbour slows the load, not the cost)."""
        cpu = (res.get("cpu_server_s") or 0) + (res.get("cpu_client_s") or 0)
        if "cpu_server_s" not in res:
            return None
        if self.metric == "gbps":
            gb = res["gbps"] * duration / 8
            return cpu * 1e3 / gb if gb else None
        if self.metric == "rps":
            n = res.get("requests") or res["rps"] * duration
            return cpu * 1e6 / n if n else None
        if self.metric == "loss_pct":
            n = res.get("packets") - res.get("lost", 0)
            return cpu * 1e6 / n if n else None
        return None

    @property
    def cost_unit(self):
        return {"gbps": "CPU ms/GB", "rps": "CPU us/req", "loss_pct": "CPU us/packet"}[self.metric]


def catalogue(udp_rates):
    loads = [
        Load("tcp_bulk", "TCP bulk, 1 stream (iperf3)", "iperf", "gbps", "Gb/s",
             lambda p, t: iperf_tcp(p, t)),
        Load("tcp_bulk_reverse", "TCP bulk, 1 stream, reverse (iperf3 -R)", "iperf", "gbps",
             "Gb/s", lambda p, t: iperf_tcp(p, t, reverse=True)),
        Load("tcp_bulk_p8", "TCP bulk, 8 streams (iperf3 -P 8)", "iperf", "gbps", "Gb/s",
             lambda p, t: iperf_tcp(p, t, streams=8)),
        Load("http_keepalive", "HTTP keep-alive, 64 conns (wrk)", "http", "rps", "req/s",
             lambda p, t: wrk(p, t), extra=("p50_ms", "p99_ms", "errors")),
        Load("http_close", "HTTP Connection: close, 64 conns (wrk)", "http", "rps", "conn/s",
             lambda p, t: wrk(p, t, close=True), extra=("p50_ms", "p99_ms", "errors")),
        # the same through the shared listener (http_bind_addr), routed by Host:
        # against http_keepalive / http_close, the cost of a virtual host
        Load("vhost_keepalive", "HTTP keep-alive by virtual host, 64 conns (wrk)", "http_vhost",
             "rps", "req/s", lambda p, t: wrk(p, t, host=VHOST_NAME),
             extra=("p50_ms", "p99_ms", "errors")),
        Load("vhost_close", "HTTP Connection: close by virtual host, 64 conns (wrk)",
             "http_vhost", "rps", "conn/s", lambda p, t: wrk(p, t, close=True, host=VHOST_NAME),
             extra=("p50_ms", "p99_ms", "errors")),
        # a stream held to a rate: by the server's bandwidth_limit (the limiter
        # paces it: its timers, shorter reads), and by iperf3 itself through
        # the same tunnel without a limit. Their CPU per GB, side by side, is
        # what the limiter costs; direct has no limiter.
        Load("tcp_limited", "TCP 1 stream under bandwidth_limit = \"%dMbit\" (iperf3)" % LIMIT_MBIT,
             "iperf_limited", "gbps", "Gb/s", lambda p, t: iperf_tcp(p, t)),
        Load("tcp_paced", "TCP 1 stream paced to %d Mb/s by iperf3 -b, no limit" % LIMIT_MBIT,
             "iperf", "gbps", "Gb/s", lambda p, t: iperf_tcp(p, t, mbps=LIMIT_MBIT)),
    ]
    for rate in udp_rates:
        loads.append(Load("udp_%d" % rate, "UDP %d Mb/s offered (iperf3 -u, 1400 B, -w 4M)" % rate,
                          "iperf", "loss_pct", "% lost",
                          (lambda r: lambda p, t: iperf_udp(p, t, r))(rate),
                          higher_better=False, extra=("recv_mbps",), tcp=False))
    if udp_rates:
        # the other direction: the server sends to the visitor
        rate = max(udp_rates)
        loads.append(Load("udp_%d_reverse" % rate,
                          "UDP %d Mb/s offered, reverse (iperf3 -u -R, -w 4M)" % rate, "iperf",
                          "loss_pct", "% lost", lambda p, t: iperf_udp(p, t, rate, reverse=True),
                          higher_better=False, extra=("recv_mbps",), tcp=False))
    return loads
