#!/usr/bin/python3
"""make bench: rathole through loopback, against the direct path.

Starts local services (iperf3 -s, nginx serving a small file, an echo
service), a rathole server and client per transport (tcp, noise, tls,
websocket; on request wss and noise-aesgcm), a two-hop socat relay, two
hops of the least relay (bench/minrelay.c: splice and epoll, no protocol;
for bulk also copying, and encrypting with noise's and TLS's ciphers and
record sizes; for HTTP also bench/urelay.c, copying on io_uring) and an
OpenSSH `ssh -R` tunnel (sshd and ssh on loopback),
then runs every load directly (client -> service) and through
each of them, alternating the order in every round. Prints
medians and ratios tunnel/direct, and writes JSON and markdown under
bench/results/. BENCH_QUICK=1 (or --quick): one short round, a smoke run.

Then the storm load (bench/storm.py): each side in turn under a low open
file limit, 5x more visitors than its free fds at once for 5 s; the time
until the tunnel echoes again, fds and RSS before and after.

Then the high-availability loads (bench/ha.py): the failover time when one
of two replicas of a balanced service is killed, and new connections per
second through one replica against two.

Usage: bench.py [--rathole PATH] [--quick] [--rounds N] [--duration S]
                [--only LOAD,...] [--transports T,...] [--no-held] [--no-socat]
                [--no-relay] [--no-ssh] [--no-storm] [--storm-nofile N] [--no-ha]
                [--out DIR]
       bench.py --only storm     the storm load alone (with --variant: side by side)
       bench.py --only ha        the high-availability loads alone
"""
import argparse
import json
import datetime
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import loads as L  # noqa: E402
import report  # noqa: E402
import ha as HA  # noqa: E402
import storm as ST  # noqa: E402
from services import (BenchError, DEFAULT_TRANSPORTS, Proc, SshTunnel,  # noqa: E402
                      TLS_TRANSPORTS, TRANSPORTS, Tunnel, make_noise_keys,
                      make_tls_identity, need_tools, port_listening, start_echo,
                      start_iperf3, start_relay_chain, start_nginx, start_socat_chain)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class Target:
    """Where a load is sent: direct to the service, a tunnel, socat or ssh -R.
    tcp_only: the TCP loads only (the references carry no UDP)."""

    def __init__(self, name, ports, procs=(), tcp_only=False):
        self.name, self.ports, self.procs = name, ports, list(procs)
        self.tcp_only = tcp_only

    def procs_for(self, service):
        """The processes whose CPU a load on this service is charged."""
        return self.procs


class RelayTarget(Target):
    """A least relay (bench/minrelay.c, bench/urelay.c): a chain of two per service, whose
    processes' CPU is measured for the load that uses that service."""

    def __init__(self, name, chains):
        super().__init__(name, {k: port for k, (port, _) in chains.items()}, tcp_only=True)
        self.chains = chains

    def procs_for(self, service):
        return self.chains[service][1]


def say(msg=""):
    print(msg, flush=True)


# ---- machine and binary ----

def machine_info():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {"cpu": cpu, "ncpu": os.cpu_count(), "memory": "%.1f GiB RAM" % (mem_kib / 2**20),
            "kernel": platform.release()}


def tool_versions():
    out = []
    for args in (["iperf3", "--version"], ["nginx", "-v"], ["socat", "-V"], ["wrk", "-v"],
                 ["ssh", "-V"]):
        try:
            r = subprocess.run(args, capture_output=True, text=True, timeout=10)
            text = (r.stdout + r.stderr).strip().splitlines()
            line = next((l for l in text if any(ch.isdigit() for ch in l)), text[0] if text else "")
            out.append(line.strip()[:60])
        except (OSError, subprocess.TimeoutExpired):
            out.append(args[0] + " ?")
    return out


def git_commit():
    try:
        r = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return r.stdout.strip() + ("+dirty" if dirty else "")
    except OSError:
        return "?"


def binary_sizes(rathole, workdir):
    """Stripped size of a copy of the binary; and of a `make TLS=0` build when
    the Makefile knows TLS=0 (built in a scratch copy of the tree)."""
    out = {"unstripped_kib": os.path.getsize(rathole) / 1024}
    copy = os.path.join(workdir, "rathole.stripped")
    shutil.copy(rathole, copy)
    subprocess.run(["strip", copy], check=True, timeout=60)
    out["stripped_kib"] = os.path.getsize(copy) / 1024
    with open(os.path.join(ROOT, "Makefile")) as f:
        mk = f.read()
    if not re.search(r"^\s*TLS\s*\??=|\$\(TLS\)", mk, re.M):
        out["tls0_note"] = "not on this branch (the Makefile has no TLS=0)"
        return out
    tree = os.path.join(workdir, "tls0")
    os.makedirs(tree)
    for name in ("src", "Makefile"):
        src = os.path.join(ROOT, name)
        (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, os.path.join(tree, name))
    r = subprocess.run(["make", "-C", tree, "-j2", "TLS=0"], capture_output=True, text=True,
                       timeout=600)
    m = re.search(r"^built (\S+)", r.stdout, re.M)
    built = os.path.join(tree, m.group(1)) if m else os.path.join(tree, "rathole")
    if r.returncode != 0 or not os.path.exists(built):
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["?"]
        out["tls0_note"] = "make TLS=0 failed: " + tail[0][:120]
        return out
    subprocess.run(["strip", built], check=True, timeout=60)
    out["tls0_stripped_kib"] = os.path.getsize(built) / 1024
    return out


# ---- measuring ----

def read_cpu_busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def measure(load, target, duration):
    """One run of a load against a target, with the CPU time of the target's
    processes and how many cores the whole machine kept busy."""
    port = target.ports[load.service]
    procs = target.procs_for(load.service)
    cpu0 = [p.cpu_seconds() for p in procs]
    b0, t0 = read_cpu_busy()
    w0 = time.monotonic()
    res = load.run(port, duration)
    res["seconds"] = time.monotonic() - w0
    b1, t1 = read_cpu_busy()
    cpu1 = [p.cpu_seconds() for p in procs]
    res["cores_busy"] = (b1 - b0) / (t1 - t0) * os.cpu_count() if t1 > t0 else None
    if len(cpu0) == 2:
        res["cpu_server_s"] = cpu1[0] - cpu0[0]
        res["cpu_client_s"] = cpu1[1] - cpu0[1]
    return res


def background_load(seconds=1.0):
    """Cores kept busy by other work on the machine while we measure nothing
    (the machine may be shared: a busy neighbour shows up here)."""
    b0, t0 = read_cpu_busy()
    time.sleep(seconds)
    b1, t1 = read_cpu_busy()
    return (b1 - b0) / (t1 - t0) * os.cpu_count() if t1 > t0 else 0.0


def wait_quiet(max_wait, threshold=0.25):
    """Waits (at most max_wait seconds) for other work on the machine to
    calm down; returns the background load finally measured."""
    deadline = time.monotonic() + max_wait
    bg = background_load()
    while bg > threshold and time.monotonic() < deadline:
        say("  the machine is busy with other work (%.2f cores); waiting" % bg)
        time.sleep(4)
        bg = background_load()
    return bg


def tunnel_probe(name, port):
    if name.endswith("_udp"):
        with open("/proc/net/udp") as f:
            return any(int(l.split()[1].split(":")[1], 16) == port for l in f.readlines()[1:])
    if not port_listening(port):	# service ports open once the control channel is up
        return False
    if name == "http":
        return L.http_ok(port)
    if name == "http_vhost":
        return L.http_ok(port, host=L.VHOST_NAME)
    if name == "echo":
        return L.echo_ok(port)
    return True


def resident_pages(pid):
    """Physical frames of the process's resident pages (/proc/PID/pagemap;
    frame numbers read as 0 without CAP_SYS_ADMIN: then None)."""
    frames = set()
    try:
        with open("/proc/%d/maps" % pid) as m, open("/proc/%d/pagemap" % pid, "rb") as pm:
            for line in m:
                parts = line.split()
                if parts[-1] == "[vsyscall]":
                    continue
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                pm.seek(lo // 4096 * 8)
                for (e,) in struct.iter_unpack("<Q", pm.read((hi - lo) // 4096 * 8)):
                    if e >> 63:
                        frames.add(e & ((1 << 55) - 1))
    except OSError:
        return None
    return None if frames <= {0} else frames


def pids_of(p):
    """A Proc's PID; the PIDs of an SshdSession (the sshd processes of a session)."""
    return p.pids() if hasattr(p, "pids") else [p.pid]


def idle_memory(t):
    """RSS of server and client; RssAnon (private); and the pair's distinct
    resident pages: what both use together, libc and OpenSSL pages shared
    by the two counted once. For ssh -R the "server" is the sshd processes
    serving the session (the listening sshd is reported apart)."""
    s, c = t.server.memory_kib(), t.client.memory_kib()
    out = {"server_kib": s["VmRSS"], "client_kib": c["VmRSS"],
           "total_kib": s["VmRSS"] + c["VmRSS"], "anon_kib": s["RssAnon"] + c["RssAnon"],
           "server_fds": t.server.nfds(), "client_fds": t.client.nfds()}
    pids = pids_of(t.server) + pids_of(t.client)
    frames = [resident_pages(pid) for pid in pids]
    if frames and all(f is not None for f in frames):
        out["pair_kib"] = len(set().union(*frames)) * 4
    if isinstance(t, SshTunnel):
        out["server_processes"] = len(pids_of(t.server))
        out["listener_kib"] = t.sshd.memory_kib()["VmRSS"]
    return out


# What the protocol sends per visitor beside the visitor's own bytes
# (shared/protocol.md): CreateDataChannel on the control channel, then on the
# new data channel DataChannelHello and StartForwardTcp.
CMD_BYTES, HELLO_BYTES, START_BYTES = 4, 37, 4


def build_helper(workdir, name, libs=()):
    """bench/NAME.c compiled into the work directory (once per run)."""
    exe = os.path.join(workdir, name)
    if os.path.exists(exe):
        return exe
    r = subprocess.run([os.environ.get("CC", "cc"), "-std=gnu11", "-O2", "-D_GNU_SOURCE",
                        "-o", exe, os.path.join(HERE, name + ".c")] + list(libs),
                       capture_output=True, text=True)
    if r.returncode:
        raise BenchError("cannot build bench/%s.c: %s" % (name, r.stderr[-500:]))
    return exe


def floor_costs(workdir, http_port, quick):
    """The kernel's least CPU per request for the TCP work a tunnel adds
    (bench/floor.c: both ends in one thread, no waiting, no epoll, no user
    space). Keep-alive: the request and the response cross two more TCP
    connections. Connection: close: two more TCP connections live and die
    (the data channel, with its hello and command; and the visitor's and
    the service's connections, of which the direct path has one), and the
    control channel carries a command."""
    exe = build_helper(workdir, "floor")
    n_hop, n_conn = (20000, 4000) if quick else (100000, 20000)

    def median_us(*args):
        vals = []
        for _ in range(3):
            out = subprocess.run([exe] + [str(a) for a in args], capture_output=True, text=True,
                                 timeout=300)
            if out.returncode:
                raise BenchError("floor %s: %s" % (" ".join(map(str, args)), out.stderr.strip()))
            vals.append(float(out.stdout))
        return statistics.median(vals)

    ka_req, ka_resp = L.http_exchange_sizes(http_port)
    cl_req, cl_resp = L.http_exchange_sizes(http_port, close=True)
    hop = median_us("hop", ka_req, ka_resp, n_hop)
    cmd = median_us("hop", CMD_BYTES, 0, n_hop)
    conn = median_us("conn", cl_req, cl_resp, n_conn)
    dc = median_us("conn", cl_req, cl_resp, n_conn, HELLO_BYTES, START_BYTES)
    return {
        "http_keepalive": {
            "us": 2 * hop,
            "how": "2 TCP hops carrying %d + %d bytes, %.1f us each" % (ka_req, ka_resp, hop)},
        "http_close": {
            "us": conn + dc + cmd,
            "how": "2 TCP connection lives carrying %d + %d bytes (%.1f us; the data channel "
                   "with its %d + %d protocol bytes, %.1f us) and a %d-byte command (%.1f us)"
                   % (cl_req, cl_resp, conn, HELLO_BYTES, START_BYTES, dc, CMD_BYTES, cmd)},
    }


# The AEAD each encrypted transport runs in this bench: noise's default
# pattern (Noise_NK_25519_ChaChaPoly_BLAKE2s) and the AESGCM one, and what
# TLS 1.3 settles on with rathole's settings (TLS_AES_128_GCM_SHA256, first
# in the server's order since change 18; builds before it chose
# TLS_AES_256_GCM_SHA384, OpenSSL's first).
BULK_CIPHERS = {"noise": "chacha20-poly1305", "noise-aesgcm": "aes-256-gcm",
                "tls": "aes-128-gcm"}
# The largest plaintext per record: noise's (65,535 - the tag), TLS's.
RECORD_PLAINTEXT = {"noise": 65535 - 16, "noise-aesgcm": 65535 - 16, "tls": 16384}


def openssl_speed_ms_per_gb(cipher, decrypt, seconds):
    """CPU ms per GB for OpenSSL's own AEAD on 64 KiB messages, one core."""
    args = ["openssl", "speed", "-evp", cipher, "-bytes", "65536", "-seconds", str(seconds)]
    r = subprocess.run(args + (["-decrypt"] if decrypt else []), capture_output=True,
                       text=True, timeout=60)
    m = re.search(r"^\S.*?\s([0-9.]+)k\s*$", r.stdout.strip().splitlines()[-1] if r.stdout.strip()
                  else "", re.M)
    if r.returncode or not m:
        raise BenchError("%s: cannot read its result: %s" % (" ".join(args), r.stderr[-300:]))
    return 1e9 / float(m.group(1))	# m: thousands of bytes per second


def measure_cipher_speeds(transports, speeds):
    """One `openssl speed` sample per direction of each encrypted
    transport's AEAD, taken in a round beside the loads: this machine's
    speed drifts by a third within minutes, so a floor measured once after
    the rounds would compare a moment with a median."""
    for cipher in sorted({BULK_CIPHERS[t] for t in transports if t in BULK_CIPHERS}):
        per = speeds.setdefault(cipher, {"enc": [], "dec": []})
        per["enc"].append(openssl_speed_ms_per_gb(cipher, False, 1))
        per["dec"].append(openssl_speed_ms_per_gb(cipher, True, 1))


def crypto_floor(workdir, transports, quick, copy_relay, speeds=None):
    """The least CPU per GB of an encrypted tunnel: the bytes are encrypted
    once and decrypted once (OpenSSL's speed for the transport's AEAD: the
    median of the samples taken in the rounds, or measured now), and
    cross two more TCP hops, copied through user space (encryption needs
    them there). The hops cost what the copying least relay spent in the
    rounds (report.floor_ceilings, when copy_relay), or, without it, the
    kernel's least for two copying hops (bench/floor.c, 64 KiB messages)."""
    hop_ms = None
    if not copy_relay:
        exe = build_helper(workdir, "floor")
        n = 5000 if quick else 20000
        hops = []
        for _ in range(3):
            out = subprocess.run([exe, "hop", "65536", "0", str(n)], capture_output=True,
                                 text=True, timeout=300)
            if out.returncode:
                raise BenchError("floor hop 65536 0: %s" % out.stderr.strip())
            hops.append(float(out.stdout))
        hop_ms = statistics.median(hops) * 1e9 / 65536 / 1e3	# us per 64 KiB -> ms per GB
    out = {}
    for tr in transports:
        cipher = BULK_CIPHERS.get(tr)
        if not cipher:
            continue
        sampled = (speeds or {}).get(cipher)
        if sampled:
            enc, dec = statistics.median(sampled["enc"]), statistics.median(sampled["dec"])
        else:
            enc = openssl_speed_ms_per_gb(cipher, False, 1 if quick else 2)
            dec = openssl_speed_ms_per_gb(cipher, True, 1 if quick else 2)
        out["tcp_bulk:" + tr] = {"hop_ms_gb": hop_ms, "cipher": cipher, "enc_ms_gb": enc,
                                 "dec_ms_gb": dec, "speed_samples": sampled}
    return out


def static_idle(workdir, logdir, echo_port, keys):
    """Idle memory of a `make static` build (no shared libraries to map and
    relocate), for comparison; None when the Makefile has no static target."""
    tree = os.path.join(workdir, "static")
    with open(os.path.join(ROOT, "Makefile")) as f:
        if not re.search(r"^static:", f.read(), re.M):
            return None
    shutil.copytree(os.path.join(ROOT, "src"), os.path.join(tree, "src"))
    shutil.copy(os.path.join(ROOT, "Makefile"), tree)
    r = subprocess.run(["make", "-C", tree, "-j2", "static"], capture_output=True, text=True,
                       timeout=900)
    built = os.path.join(tree, "rathole-static")
    if r.returncode != 0 or not os.path.exists(built):
        return {"note": "make static failed: " + ((r.stderr or r.stdout).strip().splitlines()
                                                  or ["?"])[-1][:120]}
    t = Tunnel(built, "tcp", {"echo": ("tcp", echo_port)}, keys, workdir, logdir, tag="-static")
    t.start()
    try:
        t.wait_ready(tunnel_probe)
        time.sleep(1.0)
        m = idle_memory(t)
        m["stripped_kib"] = os.path.getsize(built) / 1024
        return m
    finally:
        t.stop()


def idle_starts(binary_path, services, keys, workdir, logdir, n, tag):
    """The RSS sum of n fresh tcp pairs carrying the same services as the
    main tunnels, each measured like them (ready, then 1 s). One start is one
    draw: where the kernel maps a library moves with address space layout
    randomization, and with it how many of libc's pages are mapped around
    the ones touched (fault-around), by +-5 % from start to start."""
    sums = []
    for i in range(n):
        t = Tunnel(binary_path, "tcp", services, keys, workdir, logdir,
                   tag="-idle%s-%d" % (tag, i))
        t.start()
        try:
            t.wait_ready(tunnel_probe)
            time.sleep(1.0)
            sums.append(idle_memory(t)["total_kib"])
        finally:
            t.stop()
    return sums


def held_count(quick):
    """The largest count whose fds fit in each rathole process: 2 fds per
    forwarded connection (visitor + data channel on the server; data channel +
    local connection on the client), plus the process's fixed fds, the pipe
    pool (up to 32 pipes = 64 fds) and a few pooled data channels."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if quick:
        return min(1000, hard // 4), hard
    reserve = 64 + 64 + 64		# pipe pool, pooled channels, fixed fds and slack
    return (hard - reserve) // 2 // 100 * 100, hard


def held_test(t, transport, count):
    """t: a fresh tunnel (not started) carrying only the echo service: idle
    RSS, then count idle connections held open, each echoing; RSS growth."""
    t.start()
    holder = None
    try:
        t.wait_ready(tunnel_probe)
        time.sleep(1.0)		# the pool of data channels fills up
        idle = idle_memory(t)
        holder = subprocess.Popen([sys.executable, os.path.join(HERE, "echo.py"), "hold",
                                   str(t.ports["echo"]), str(count)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  start_new_session=True)
        held, open_s = 0, 0.0
        deadline = time.monotonic() + 300
        for line in holder.stdout:
            ev = json.loads(line)
            if ev["event"] == "progress":
                say("    %s: %d connections held" % (transport, ev["held"]))
            if ev["event"] == "holding":
                held, open_s = ev["held"], ev["seconds"]
                break
            if time.monotonic() > deadline:
                break
        time.sleep(1.0)
        loaded = idle_memory(t)
        holder.stdin.write("check\n")
        holder.stdin.flush()
        echoed = 0
        for line in holder.stdout:
            ev = json.loads(line)
            if ev["event"] == "checked":
                echoed = ev["echoed"]
                break
        after_check = idle_memory(t)
        holder.stdin.write("close\n")
        holder.stdin.flush()
        holder.wait(60)
        n = max(held, 1)
        grow_s = after_check["server_kib"] - idle["server_kib"]
        grow_c = after_check["client_kib"] - idle["client_kib"]
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        fixed = max(idle["server_fds"], idle["client_fds"])
        # rathole: 2 fds per connection in each process, beside its fixed ones
        # and a pipe pool of up to 64 fds while bytes move; ssh -R: 1 fd
        per, reserve = getattr(t, "fds_per_conn", 2), getattr(t, "fd_reserve", 64)
        return {"asked": count, "held": held, "echoed": echoed, "open_seconds": open_s,
                "nofile": hard, "fixed_fds": fixed,
                "fits_at_most": (hard - fixed - reserve) // per,
                "idle": idle, "loaded": loaded, "after_check": after_check,
                "server_fds": after_check["server_fds"], "client_fds": after_check["client_fds"],
                "server_kib_per_conn": grow_s / n, "client_kib_per_conn": grow_c / n,
                "kib_per_conn": (grow_s + grow_c) / n}
    finally:
        if holder and holder.poll() is None:
            holder.kill()
            holder.wait(10)
        t.stop()


def say_held(h):
    say("  held %d, %d echoing; fds server %d, client %d; %.2f KiB per connection "
        "(server %.2f + client %.2f)" % (h["held"], h["echoed"], h["server_fds"],
                                         h["client_fds"], h["kib_per_conn"],
                                         h["server_kib_per_conn"], h["client_kib_per_conn"]))


def start_ssh(services, workdir, logdir, meta):
    """The ssh -R reference (OpenSSH's sshd and ssh on loopback), or None
    with the reason said when it cannot run (sshd not installed, ...)."""
    t = SshTunnel(services, workdir, logdir)
    try:
        t.start()
        t.wait_ready(tunnel_probe)
    except BenchError as e:
        say("ssh -R reference skipped: %s" % e)
        t.stop()
        return None
    r = subprocess.run([t.ssh, "-V"], capture_output=True, text=True, timeout=10)
    meta["ssh"] = {"version": (r.stderr or r.stdout).strip(), "cipher": t.cipher,
                   "kex": t.kex, "user": t.user}
    say("ssh -R reference: %s; cipher %s" % (meta["ssh"]["version"].split(",")[0], t.cipher))
    return t


def storm_loads(opts, workdir, logdir, echo_port, keys):
    """The storm load for every binary (the main one and the variants),
    server and client side in turn."""
    out = {}
    say("\nstorm: 5x more visitors than free fds at once, held %.0f s, then closed "
        "(one side under RLIMIT_NOFILE %d)" % (ST.HOLD_S, opts.storm_nofile))
    for vname, binary_path in [("", os.path.abspath(opts.rathole))] + opts.variants:
        for side in ("server", "client"):
            name = "tcp" + (":" + vname if vname else "")
            r = ST.storm_test(binary_path, side, echo_port, keys, workdir, logdir,
                              opts.storm_nofile, tag="-" + vname if vname else "")
            out["%s %s" % (name, side)] = r
            ST.say_storm(name, r, say)
    return out


def run_storm_only(opts, workdir, logdir):
    """`--only storm`: the storm load and its report, nothing else."""
    need_tools(["prlimit"])
    if not os.access(os.path.abspath(opts.rathole), os.X_OK):
        raise BenchError("%s is not an executable: run `make` first (or pass --rathole)"
                         % opts.rathole)
    meta = dict(machine_info())
    meta.update({"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
                 "rathole": os.path.abspath(opts.rathole), "commit": git_commit(),
                 "rounds": 0, "duration": 0, "quick": opts.quick, "tools": tool_versions(),
                 "nofile_hard": resource.getrlimit(resource.RLIMIT_NOFILE)[1]})
    echo = start_echo(logdir)
    storm = storm_loads(opts, workdir, logdir, echo.port, {})
    checks = report.storm_checks(storm)
    text = report.storm_table(storm, report.text_table) + "\n\n" + report.render_checks(
        checks, report.text_table)
    say("")
    say(text)
    os.makedirs(opts.out, exist_ok=True)
    base = os.path.join(opts.out, "bench-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
                        + "-storm")
    report.write_json(base + ".json", {"meta": meta, "storm": storm, "targets": checks})
    with open(base + ".md", "w") as f:
        f.write("# rathole benchmark, storm load, %s\n\n- machine: %s, %d CPUs, Linux %s\n"
                "- build: %s (commit %s)\n\n" % (meta["date"], meta["cpu"], meta["ncpu"],
                                                  meta["kernel"], meta["rathole"], meta["commit"]))
        f.write(report.storm_table(storm, report.md_table, md=True) + "\n\n" +
                report.render_checks(checks, report.md_table, md=True) + "\n")
    say("written: %s.json and %s.md" % (base, base))
    return 0


def run_ha_only(opts, workdir, logdir):
    """`--only ha`: the high-availability loads and their report, nothing else."""
    need_tools(["wrk", shutil.which("nginx") or "/usr/sbin/nginx"])
    rathole = os.path.abspath(opts.rathole)
    if not os.access(rathole, os.X_OK):
        raise BenchError("%s is not an executable: run `make` first (or pass --rathole)"
                         % opts.rathole)
    meta = dict(machine_info())
    meta.update({"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
                 "rathole": rathole, "commit": git_commit(), "rounds": opts.rounds,
                 "duration": opts.duration, "quick": opts.quick, "tools": tool_versions(),
                 "nofile_hard": resource.getrlimit(resource.RLIMIT_NOFILE)[1]})
    echo = start_echo(logdir)
    nginx = start_nginx(workdir, logdir)
    ha = HA.run(rathole, echo.port, nginx.port, workdir, logdir, opts.quick, opts.rounds,
                opts.duration, say)
    checks = report.ha_checks(ha)
    text = report.ha_table(ha, report.text_table) + "\n\n" + report.render_checks(
        checks, report.text_table)
    say("")
    say(text)
    os.makedirs(opts.out, exist_ok=True)
    base = os.path.join(opts.out, "bench-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
                        + "-ha")
    report.write_json(base + ".json", {"meta": meta, "ha": ha, "targets": checks})
    with open(base + ".md", "w") as f:
        f.write("# rathole benchmark, high availability, %s\n\n- machine: %s, %d CPUs, "
                "Linux %s\n- build: %s (commit %s)\n- %d rounds, %d s per run\n\n" % (
                    meta["date"], meta["cpu"], meta["ncpu"], meta["kernel"], meta["rathole"],
                    meta["commit"], opts.rounds, opts.duration))
        f.write(report.ha_table(ha, report.md_table, md=True) + "\n\n" +
                report.render_checks(checks, report.md_table, md=True) + "\n")
    say("written: %s.json and %s.md" % (base, base))
    return 0


# ---- the run ----

def run(opts, workdir, logdir):
    if opts.only == {"storm"}:
        return run_storm_only(opts, workdir, logdir)
    if opts.only == {"ha"}:
        return run_ha_only(opts, workdir, logdir)
    need_tools(["iperf3", "wrk", "socat", "openssl", "strip", shutil.which("nginx") or "/usr/sbin/nginx"])
    rathole = os.path.abspath(opts.rathole)
    if not os.access(rathole, os.X_OK):
        raise BenchError("%s is not an executable: run `make` first (or pass --rathole)" % rathole)
    meta = dict(machine_info())
    meta.update({"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
                 "rathole": rathole, "commit": git_commit(), "rounds": opts.rounds,
                 "duration": opts.duration, "quick": opts.quick, "tools": tool_versions(),
                 "nofile_hard": resource.getrlimit(resource.RLIMIT_NOFILE)[1]})
    say("rathole benchmark: %s, %d CPUs; %d rounds of %d s runs%s" % (
        meta["cpu"], meta["ncpu"], opts.rounds, opts.duration, " (quick)" if opts.quick else ""))

    loads = [l for l in L.catalogue(opts.udp_rates) if not opts.only or l.name in opts.only]
    if not loads:
        raise BenchError("no load named %s (with storm only: --only storm)"
                         % ", ".join(sorted(opts.only)))
    binary = binary_sizes(rathole, workdir)
    say("binary: %.1f KiB stripped" % binary["stripped_kib"])

    keys = {"noise": make_noise_keys(rathole)}
    if any(t in TLS_TRANSPORTS for t in opts.transports):
        keys["tls"] = make_tls_identity(workdir)
    iperf = start_iperf3(logdir)
    nginx = start_nginx(workdir, logdir)
    echo = start_echo(logdir)
    services = {"iperf": ("tcp", iperf.port), "iperf_udp": ("udp", iperf.port),
                "http": ("tcp", nginx.port), "echo": ("tcp", echo.port)}
    # direct, a virtual host is nginx itself (it answers any Host)
    targets = [Target("direct", {"iperf": iperf.port, "http": nginx.port, "echo": echo.port,
                                 "http_vhost": nginx.port})]
    vhost = any(l.service == "http_vhost" for l in loads)
    limited = any(l.service == "iperf_limited" for l in loads)
    tunnels = {}
    for vname, binary_path in [("", rathole)] + opts.variants:
        for tr in opts.transports:
            name = tr + (":" + vname if vname else "")
            # a variant (another build) may predate virtual hosts
            # a variant (another build) may predate bandwidth limits too
            svcs = dict(services, iperf_limited=services["iperf"]) if limited and not vname \
                else services
            t = Tunnel(binary_path, tr, svcs, keys, workdir, logdir,
                       tag=("-" + vname if vname else ""), vhost=vhost and not vname)
            t.start()
            tunnels[name] = t
    for name, t in tunnels.items():
        t.wait_ready(tunnel_probe)
        targets.append(Target(name, t.ports, t.procs()))
    ssh = start_ssh(services, workdir, logdir, meta) if opts.ssh else None
    time.sleep(1.0)
    idle = {name: idle_memory(t) for name, t in tunnels.items()}
    if ssh:
        idle["ssh"] = idle_memory(ssh)
    if opts.socat:
        sp_iperf, procs1 = start_socat_chain("iperf", iperf.port, logdir)
        sp_http, procs2 = start_socat_chain("http", nginx.port, logdir)
        targets.append(Target("socat", {"iperf": sp_iperf, "http": sp_http}, tcp_only=True))
    if opts.relay:
        exe = build_helper(workdir, "minrelay", ["-lcrypto"])
        mr_iperf, procs1 = start_relay_chain("iperf", iperf.port, logdir, exe)
        mr_http, procs2 = start_relay_chain("http", nginx.port, logdir, exe)
        # one pair's CPU per load: the iperf chain for bulk, the http chain for wrk
        targets.append(RelayTarget("relay", {"iperf": (mr_iperf, procs1),
                                             "http": (mr_http, procs2)}))
        if any(l.service == "http" for l in loads):
            # the same on io_uring, for the HTTP loads: the least syscalls per request
            try:
                uexe = build_helper(workdir, "urelay", ["-luring"])
            except BenchError as e:
                say("the least relay on io_uring left out (needs liburing-dev): %s"
                    % str(e).splitlines()[0][:200])
            else:
                port, procs = start_relay_chain("http", nginx.port, logdir, uexe)
                targets.append(RelayTarget("relay-uring", {"http": (port, procs)}))
        if any(t in BULK_CIPHERS for t in opts.transports):
            # copying, as encryption must: the encrypted transports' bulk floor
            port, procs = start_relay_chain("iperf-copy", iperf.port, logdir, exe, copy=True)
            targets.append(RelayTarget("relay-copy", {"iperf": (port, procs)}))
        for tr in opts.transports:
            if tr in RECORD_PLAINTEXT:
                # and encrypting, with the transport's cipher and records:
                # everything its bulk must do, nothing else
                port, procs = start_relay_chain("iperf-" + tr, iperf.port, logdir, exe,
                                                seal=(BULK_CIPHERS[tr], RECORD_PLAINTEXT[tr]))
                targets.append(RelayTarget("relay-" + tr, {"iperf": (port, procs)}))
    if ssh:
        targets.append(Target("ssh", ssh.ports, ssh.procs(), tcp_only=True))
    present = [t.name for t in targets]

    results = {l.name: {} for l in loads}
    background = []
    encrypted = [t for t in opts.transports if t in BULK_CIPHERS]
    want_crypto_floor = encrypted and any(l.name == "tcp_bulk" for l in loads)
    cipher_speeds = {}
    for rnd in range(opts.rounds):
        order = targets if rnd % 2 == 0 else list(reversed(targets))
        bg = wait_quiet(opts.quiet_wait)
        background.append(bg)
        say("\nround %d of %d (%s); background load %.2f cores" % (
            rnd + 1, opts.rounds, " -> ".join(t.name for t in order), bg))
        for load in loads:
            for target in order:
                if load.service not in target.ports or (target.tcp_only and not load.tcp):
                    continue
                res = measure(load, target, opts.duration)
                results[load.name].setdefault(target.name, []).append(res)
                cpu = ""
                if "cpu_server_s" in res:
                    cpu = "  cpu %.2f+%.2f s" % (res["cpu_server_s"], res["cpu_client_s"])
                extra = ""
                if "p99_ms" in res:
                    extra = "  p99 %.2f ms" % res["p99_ms"]
                if res.get("errors"):
                    extra += "  errors %d" % res["errors"]
                say("  %-18s %-10s %10s %s%s%s" % (load.name, target.name,
                                                  report.fmt_value(res[load.metric], load.unit),
                                                  load.unit, extra, cpu))
        if want_crypto_floor:
            measure_cipher_speeds(encrypted, cipher_speeds)
            say("  %-18s %s" % ("openssl speed", ", ".join(
                "%s %.0f + %.0f ms/GB" % (c, v["enc"][-1], v["dec"][-1])
                for c, v in sorted(cipher_speeds.items()))))
    for name, t in tunnels.items():
        idle[name]["after_loads_total_kib"] = idle_memory(t)["total_kib"]
    for t in tunnels.values():
        t.stop()
    if ssh:
        idle["ssh"]["after_loads_total_kib"] = idle_memory(ssh)["total_kib"]
        ssh.stop()

    if opts.idle_starts:
        for vname, binary_path in [("", rathole)] + opts.variants:
            name = "tcp" + (":" + vname if vname else "")
            if name not in idle:
                continue
            sums = idle_starts(binary_path, services, keys, workdir, logdir, opts.idle_starts,
                               "-" + vname if vname else "")
            idle[name]["starts_kib"] = sums
            say("idle RSS sum of %s over %d fresh starts: median %d KiB (%d to %d)" % (
                name, len(sums), statistics.median(sums), min(sums), max(sums)))

    held = {}
    if opts.held:
        count, hard = held_count(opts.quick)
        count = opts.held_n or count
        for vname, binary_path in [("", rathole)] + opts.variants:
            for tr in opts.transports if not opts.quick else ["tcp"]:
                name = tr + (":" + vname if vname else "")
                n = count if tr == "tcp" else min(count, opts.held_others)
                say("\nheld connections through %s: asking for %d (hard fd limit %d)" % (name, n, hard))
                t = Tunnel(binary_path, tr, {"echo": ("tcp", echo.port)}, keys, workdir, logdir,
                           tag="-held" + ("-" + vname if vname else ""))
                held[name] = h = held_test(t, tr, n)
                say_held(h)
        if ssh:
            n = min(count, opts.held_others)
            say("\nheld connections through ssh -R: asking for %d (hard fd limit %d)" % (n, hard))
            try:
                held["ssh"] = h = held_test(SshTunnel({"echo": ("tcp", echo.port)}, workdir,
                                                      logdir, tag="-held"), "ssh", n)
                say_held(h)
            except BenchError as e:
                say("  ssh -R held test failed: %s" % e)

    storm = {}
    if opts.storm and (not opts.only or "storm" in opts.only):
        if shutil.which("prlimit"):
            storm = storm_loads(opts, workdir, logdir, echo.port, keys)
        else:
            say("\nstorm load skipped: prlimit (util-linux) is not installed")

    ha = {}
    if opts.ha and (not opts.only or "ha" in opts.only):
        ha = HA.run(rathole, echo.port, nginx.port, workdir, logdir, opts.quick, opts.rounds,
                    opts.duration, say)

    if opts.static and not opts.quick:
        say("\nidle memory of a `make static` build (building it)")
        st = static_idle(workdir, logdir, echo.port, keys)
        if st:
            idle["tcp (make static)"] = st
    floor = {}
    if any(l.name in ("http_keepalive", "http_close") for l in loads):
        say("\nfloor: the kernel's least work for the tunnel's extra TCP hops (bench/floor.c)")
        floor = floor_costs(workdir, nginx.port, opts.quick)
        for name, f in floor.items():
            say("  %-18s %.1f us per request: %s" % (name, f["us"], f["how"]))
    if want_crypto_floor:
        say("\nfloor of the encrypted transports: two copying TCP hops and OpenSSL's AEAD")
        for name, f in crypto_floor(workdir, encrypted, opts.quick, opts.relay,
                                    cipher_speeds).items():
            floor[name] = f
            say("  %-18s %s: encrypt %.0f, decrypt %.0f ms per GB%s" % (
                name, f["cipher"], f["enc_ms_gb"], f["dec_ms_gb"],
                "; a copying hop %.0f" % f["hop_ms_gb"] if f["hop_ms_gb"] else ""))
    meta["background_cores"] = background
    summary = report.summarize(loads, results, opts.duration)
    report.floor_ceilings(loads, results, floor, opts.duration)
    checks = report.check_targets(summary, held, idle, binary, floor) + \
        report.storm_checks(storm) + report.ha_checks(ha)
    say("")
    say(report.render(meta, loads, summary, present, held, idle, binary, checks, floor=floor,
                      storm=storm, ha=ha))

    os.makedirs(opts.out, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + ("-quick" if opts.quick else "")
    base = os.path.join(opts.out, "bench-" + stamp)
    report.write_json(base + ".json", {"meta": meta, "binary": binary, "idle": idle, "held": held,
                                       "summary": summary, "targets": checks, "raw": results,
                                       "floor": floor, "storm": storm, "ha": ha})
    with open(base + ".md", "w") as f:
        f.write(report.markdown(meta, loads, summary, present, held, idle, binary, checks, floor,
                                storm=storm, ha=ha))
    say("written: %s.json and %s.md" % (base, base))
    return 0


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rathole", default=os.path.join(ROOT, "rathole"))
    ap.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK") == "1")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--duration", type=int, help="seconds per run")
    ap.add_argument("--only", help="comma-separated load names; storm: the storm load")
    ap.add_argument("--transports", default=",".join(DEFAULT_TRANSPORTS),
                    help="comma-separated, of %s (default: %s)" % (
                        ",".join(TRANSPORTS), ",".join(DEFAULT_TRANSPORTS)))
    ap.add_argument("--udp-rates", default="100,300,500")
    ap.add_argument("--no-held", dest="held", action="store_false")
    ap.add_argument("--held", type=int, dest="held_n",
                    help="held connections through tcp (default: as many as the fd limit allows)")
    ap.add_argument("--idle-starts", type=int, metavar="N",
                    help="fresh tcp pairs whose idle RSS is measured after the rounds "
                         "(default 8, quick 2; 0: none)")
    ap.add_argument("--held-others", type=int, default=2000,
                    help="held connections for the transports other than tcp")
    ap.add_argument("--no-socat", dest="socat", action="store_false")
    ap.add_argument("--no-relay", dest="relay", action="store_false",
                    help="skip the least relay (bench/minrelay.c: two processes that only "
                    "splice bytes, or copy them, or copy and encrypt them; bench/urelay.c: "
                    "the same copying on io_uring), the reference for the tunnel's own cost")
    ap.add_argument("--no-ssh", dest="ssh", action="store_false",
                    help="skip the ssh -R reference (OpenSSH sshd + ssh on loopback)")
    ap.add_argument("--no-storm", dest="storm", action="store_false",
                    help="skip the storm load (bench/storm.py)")
    ap.add_argument("--storm-nofile", type=int, default=256, metavar="N",
                    help="the open file limit of the side under the storm (default 256)")
    ap.add_argument("--no-ha", dest="ha", action="store_false",
                    help="leave out the high-availability loads (bench/ha.py)")
    ap.add_argument("--no-static", dest="static", action="store_false",
                    help="skip the idle memory of a `make static` build")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=PATH",
                    help="also measure another rathole binary (targets named TRANSPORT:NAME), "
                    "alternated with the main one in every round: a before/after comparison")
    ap.add_argument("--quiet-wait", type=float,
                    help="seconds to wait before each round for other work on the machine to "
                    "calm down (default 60, quick 0)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    o = ap.parse_args(argv)
    o.rounds = o.rounds or (1 if o.quick else 4)
    o.duration = o.duration or (1 if o.quick else 3)
    o.only = set(o.only.split(",")) if o.only else None
    if o.quiet_wait is None:
        o.quiet_wait = 0 if o.quick else 60
    if o.idle_starts is None:
        o.idle_starts = 2 if o.quick else 8
    o.transports = [t for t in o.transports.split(",") if t]
    bad = [t for t in o.transports if t not in TRANSPORTS]
    if bad:
        ap.error("unknown transport %s (known: %s)" % (", ".join(bad), ", ".join(TRANSPORTS)))
    o.udp_rates = [int(x) for x in o.udp_rates.split(",") if x]
    o.variants = []
    for v in o.variant:
        name, _, path = v.partition("=")
        if not name or not path or not os.access(path, os.X_OK):
            ap.error("--variant wants NAME=PATH of an executable, got %r" % v)
        o.variants.append((name, os.path.abspath(path)))
    return o


def main(argv):
    opts = parse(argv)
    workdir = tempfile.mkdtemp(prefix="rathole-bench-")
    logdir = os.path.join(workdir, "logs")
    os.makedirs(logdir)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    ok = False
    try:
        rc = run(opts, workdir, logdir)
        ok = True
        return rc
    except BenchError as e:
        say("bench: %s" % e)
        return 1
    except KeyboardInterrupt:
        say("bench: interrupted")
        return 130
    finally:
        Proc.stop_all()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say("bench: logs kept in %s" % logdir)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
