"""The processes a benchmark run needs: the local services (iperf3, nginx, an
echo service), the tunnels (a rathole server and client per transport) and
the socat reference relay. Every process is started here, recorded, and
stopped by its PID; every wait is bounded."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN = "bench-token"
# The name the benchmark's HTTP service answers to on the shared listener
# (server.http_bind_addr): the virtual host loads send it as Host.
VHOST_NAME = "bench.example"
# bandwidth_limit of the "iperf_limited" service (both sides): a rate that a
# loaded two-core machine still reaches, so that the limiter does the pacing
LIMIT_MBIT = 200
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A problem the person running the benchmark must fix (said in the message)."""


def free_port(kind=socket.SOCK_STREAM):
    """A port free for both TCP and UDP (services use the same number for both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        try:
            with socket.socket(socket.AF_INET, other) as s:
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise BenchError("no free port pair on 127.0.0.1")


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise BenchError("timed out after %.0f s waiting for %s" % (timeout, what))


class Proc:
    """A started process, stopped by PID; its output goes to a log file."""
    registry = []

    def __init__(self, name, args, logdir, env=None, stdin=subprocess.DEVNULL,
                 stdout=None):
        self.name = name
        self.args = args
        self.log_path = os.path.join(logdir, name + ".log")
        self._log = open(self.log_path, "wb")
        self.p = subprocess.Popen(args, stdin=stdin,
                                  stdout=stdout if stdout is not None else self._log,
                                  stderr=self._log, env=env, start_new_session=True)
        self.pid = self.p.pid
        Proc.registry.append(self)

    def alive(self):
        return self.p.poll() is None

    def stop(self, timeout=5.0):
        if self.p.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.p.wait(timeout)
            except ProcessLookupError:
                pass
        self._log.close()
        if self in Proc.registry:
            Proc.registry.remove(self)

    def log_tail(self, n=20):
        try:
            with open(self.log_path, "rb") as f:
                return b"".join(f.readlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""

    # ---- /proc accounting ----
    def cpu_seconds(self):
        """utime + stime of the process (fields 14 and 15 of /proc/PID/stat)."""
        with open("/proc/%d/stat" % self.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def memory_kib(self):
        """VmRSS, RssAnon, RssFile from /proc/PID/status, in KiB."""
        out = {}
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[k] = int(v.split()[0])
        return out

    def nfds(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    @staticmethod
    def stop_all():
        for p in list(reversed(Proc.registry)):
            p.stop()


def need_tools(tools):
    missing = [t for t in tools if not shutil.which(t) and not os.path.exists(t)]
    if missing:
        raise BenchError("missing tools: %s; install them with: apt-get install -y "
                         "iperf3 wrk nginx-light socat openssl" % ", ".join(missing))


# ---- local services ----

def start_iperf3(logdir):
    port = free_port()
    p = Proc("iperf3", ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(port)], logdir)
    wait_until(lambda: port_open_quiet_udp_ok(port), 10, "iperf3 -s on port %d" % port)
    p.port = port
    return p


def port_open_quiet_udp_ok(port):
    # A bare connect would make iperf3 log a cookie error; look at the
    # listening sockets instead.
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].split(":")[1], 16) == port:
                return True
    return False


NGINX_CONF = """worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 60s;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {dir}/www;
    }}
}}
"""


def start_nginx(workdir, logdir, small_file_bytes=1024):
    port = free_port()
    d = os.path.join(workdir, "nginx")
    os.makedirs(os.path.join(d, "www"), exist_ok=True)
    os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
    with open(os.path.join(d, "www", "small"), "wb") as f:
        f.write(b"x" * small_file_bytes)
    for path in (workdir, d, os.path.join(d, "www")):
        os.chmod(path, 0o755)		# the worker may run as nobody
    os.chmod(os.path.join(d, "www", "small"), 0o644)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(dir=d, port=port))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    p = Proc("nginx", [nginx, "-c", conf, "-p", d, "-e", os.path.join(d, "nginx-error.log")],
             logdir)
    wait_until(lambda: port_open(port), 10, "nginx on port %d" % port)
    p.port = port
    p.path = "/small"
    return p


def start_echo(logdir):
    port = free_port()
    p = Proc("echo", [sys.executable, os.path.join(HERE, "echo.py"), "serve", str(port)], logdir)
    wait_until(lambda: port_open(port), 10, "the echo service on port %d" % port)
    p.port = port
    return p


def start_socat_chain(name, target_port, logdir):
    """Two socat hops, like the tunnel's two processes: front -> middle -> target.
    socat forks a process per connection."""
    mid, front = free_port(), free_port()
    hop2 = Proc("socat-%s-2" % name, ["socat", "TCP4-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork,backlog=4096" % mid,
                                      "TCP4:127.0.0.1:%d,nodelay" % target_port], logdir)
    hop1 = Proc("socat-%s-1" % name, ["socat", "TCP4-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork,backlog=4096" % front,
                                      "TCP4:127.0.0.1:%d,nodelay" % mid], logdir)
    wait_until(lambda: port_listening(mid) and port_listening(front), 10, "socat relay")
    return front, [hop1, hop2]


def start_relay_chain(name, target_port, logdir, exe, copy=False, seal=None):
    """Two hops of a least relay, like the tunnel's two processes: front ->
    middle -> target. exe is bench/minrelay.c's (splice, or with copy recv
    and send, and epoll, nothing else) or bench/urelay.c's (io_uring, no
    modes). seal=(CIPHER, MAX), minrelay only: the front hop encrypts what
    the visitor sends and the middle one decrypts it (and the other way for
    the answers), in records of at most MAX plaintext bytes."""
    label = os.path.basename(exe)
    mid, front = free_port(), free_port()
    mode1 = mode2 = ["copy"] if copy else []
    if seal:
        mode1 = ["seal", seal[0], str(seal[1])]
        mode2 = ["open", seal[0], str(seal[1])]
    hop2 = Proc("%s-%s-2" % (label, name), [exe, str(mid), str(target_port)] + mode2, logdir)
    hop1 = Proc("%s-%s-1" % (label, name), [exe, str(front), str(mid)] + mode1, logdir)
    wait_until(lambda: port_listening(mid) and port_listening(front), 10, label)
    return front, [hop1, hop2]


def port_listening(port):
    return port_open_quiet_udp_ok(port)


# ---- key material ----

def make_tls_identity(workdir):
    """A private CA and a certificate for localhost, the way
    examples/tls/create_self_signed_cert.sh makes them (RSA 2048)."""
    d = os.path.join(workdir, "tls")
    os.makedirs(d, exist_ok=True)

    def run(*args):
        r = subprocess.run(["openssl"] + list(args), cwd=d, capture_output=True, timeout=60)
        if r.returncode != 0:
            raise BenchError("openssl %s failed: %s" % (args[0], r.stderr.decode(errors="replace")))
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "30",
        "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=rathole bench CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-sha256", "-keyout", "server.key",
        "-out", "server.csr", "-subj", "/CN=localhost")
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n"
                "extendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "30", "-sha256",
        "-extfile", "server.ext")
    run("pkcs12", "-export", "-out", "identity.pfx", "-inkey", "server.key",
        "-in", "server.crt", "-certfile", "ca.crt", "-passout", "pass:1234")
    return {"pkcs12": os.path.join(d, "identity.pfx"), "password": "1234",
            "ca": os.path.join(d, "ca.crt")}


def make_noise_keys(rathole):
    r = subprocess.run([rathole, "--genkey"], capture_output=True, timeout=10, text=True)
    lines = [l.strip() for l in r.stdout.splitlines() if l.strip()]
    try:
        priv = lines[lines.index("Private Key:") + 1]
        pub = lines[lines.index("Public Key:") + 1]
    except (ValueError, IndexError):
        raise BenchError("cannot read the keypair printed by %s --genkey: %r" % (rathole, r.stdout))
    return {"private": priv, "public": pub}


# ---- the tunnel ----

# wss: websocket over TLS; noise-aesgcm: noise with the AESGCM cipher
# (Noise_NK_25519_AESGCM_BLAKE2s) instead of the default ChaChaPoly
TRANSPORTS = ("tcp", "noise", "tls", "websocket", "wss", "noise-aesgcm")
DEFAULT_TRANSPORTS = TRANSPORTS[:4]	# the others on request (--transports), like the rest
NOISE_PATTERNS = {"noise": None, "noise-aesgcm": "Noise_NK_25519_AESGCM_BLAKE2s"}
TLS_TRANSPORTS = ("tls", "wss")		# need the test certificate


def transport_sections(role, transport, keys):
    if transport == "tcp":
        return ""
    kind = {"wss": "websocket", "noise-aesgcm": "noise"}.get(transport, transport)
    s = '[%s.transport]\ntype = "%s"\n' % (role, kind)
    if kind == "noise":
        if role == "server":
            s += '[server.transport.noise]\nlocal_private_key = "%s"\n' % keys["noise"]["private"]
        else:
            s += '[client.transport.noise]\nremote_public_key = "%s"\n' % keys["noise"]["public"]
        if NOISE_PATTERNS[transport]:
            s += 'pattern = "%s"\n' % NOISE_PATTERNS[transport]
    if transport == "wss":
        s += "[%s.transport.websocket]\ntls = true\n" % role
    if transport in TLS_TRANSPORTS:
        if role == "server":
            s += ('[server.transport.tls]\npkcs12 = "%s"\npkcs12_password = "%s"\n'
                  % (keys["tls"]["pkcs12"], keys["tls"]["password"]))
        else:
            s += ('[client.transport.tls]\ntrusted_root = "%s"\nhostname = "localhost"\n'
                  % keys["tls"]["ca"])
    if transport == "websocket":
        s += "[%s.transport.websocket]\ntls = false\n" % role
    return s


class Tunnel:
    """A rathole server and client on loopback, carrying the services:
    iperf (tcp and udp on the same port number), http, echo."""

    def __init__(self, rathole, transport, targets, keys, workdir, logdir, tag="", vhost=False):
        """vhost: the http service is also reached by name (VHOST_NAME) on a
        shared listener, server.http_bind_addr: ports["http_vhost"]."""
        self.rathole = rathole
        self.transport = transport
        self.name = transport + tag
        self.targets = targets		# service name -> (type, local port)
        self.keys = keys
        self.workdir = workdir
        self.logdir = logdir
        self.bind_port = free_port()
        self.ports = {}			# service name -> port on the server
        for name, (kind, _) in targets.items():
            if name.endswith("_udp"):
                continue
            self.ports[name] = free_port()
        for name, (kind, _) in targets.items():
            if name.endswith("_udp"):
                self.ports[name] = self.ports[name[:-4]]
        self.vhost_port = free_port() if vhost and "http" in targets else None
        if self.vhost_port:
            self.ports["http_vhost"] = self.vhost_port
        self.server = self.client = None

    def configs(self):
        srv = '[server]\nbind_addr = "127.0.0.1:%d"\n' % self.bind_port
        if self.vhost_port:
            srv += 'http_bind_addr = "127.0.0.1:%d"\n' % self.vhost_port
        srv += transport_sections("server", self.transport, self.keys)
        cli = '[client]\nremote_addr = "127.0.0.1:%d"\n' % self.bind_port
        cli += transport_sections("client", self.transport, self.keys)
        for name, (kind, lport) in self.targets.items():
            srv += ('[server.services.%s]\ntype = "%s"\ntoken = "%s"\nbind_addr = "127.0.0.1:%d"\n'
                    % (name, kind, TOKEN, self.ports[name]))
            if name == "http" and self.vhost_port:
                srv += 'hostnames = ["%s"]\n' % VHOST_NAME
            if name.endswith("_limited"):
                srv += 'bandwidth_limit = "%dMbit"\n' % LIMIT_MBIT
            cli += ('[client.services.%s]\ntype = "%s"\ntoken = "%s"\nlocal_addr = "127.0.0.1:%d"\n'
                    % (name, kind, TOKEN, lport))
        return srv, cli

    def start(self, env=None, nofile=None):
        """nofile: {"server" or "client": N} runs that side under RLIMIT_NOFILE N
        (soft and hard: rathole raises its soft limit to the hard one)."""
        srv, cli = self.configs()
        d = os.path.join(self.workdir, "tunnel-" + self.name)
        os.makedirs(d, exist_ok=True)
        paths = {}
        for role, text in (("server", srv), ("client", cli)):
            paths[role] = os.path.join(d, role + ".toml")
            with open(paths[role], "w") as f:
                f.write(text)
            os.chmod(paths[role], 0o600)
        e = dict(os.environ)
        e.setdefault("RATHOLE_LOG", "info")
        if env:
            e.update(env)
        def limited(role, args):
            n = (nofile or {}).get(role)
            return ["prlimit", "--nofile=%d:%d" % (n, n)] + args if n else args
        self.server = Proc("rathole-%s-server" % self.name,
                           limited("server", [self.rathole, "--server", paths["server"]]),
                           self.logdir, env=e)
        wait_until(lambda: port_listening(self.bind_port) or not self.server.alive(), 15,
                   "the %s server to listen" % self.name)
        if not self.server.alive():
            raise BenchError("the %s rathole server exited:\n%s" % (self.name, self.server.log_tail()))
        self.client = Proc("rathole-%s-client" % self.name,
                           limited("client", [self.rathole, "--client", paths["client"]]),
                           self.logdir, env=e)

    def wait_ready(self, probe, timeout=20):
        """probe(port) -> bool for a service that answers through the tunnel."""
        def ok():
            if not (self.server.alive() and self.client.alive()):
                raise BenchError("a %s rathole process exited:\n%s\n%s" % (
                    self.name, self.server.log_tail(), self.client.log_tail()))
            return all(probe(name, port) for name, port in self.ports.items())
        wait_until(ok, timeout, "the %s tunnel to carry every service" % self.name)

    def procs(self):
        return [self.server, self.client]

    def stop(self):
        for p in (self.client, self.server):
            if p:
                p.stop()


# ---- the ssh -R reference ----

SSHD = "/usr/sbin/sshd"

SSHD_CONF = """# written by bench/services.py for one benchmark run
ListenAddress 127.0.0.1
Port {port}
HostKey {dir}/host_key
AuthorizedKeysFile {dir}/client_key.pub
PidFile none
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthenticationMethods publickey
AllowTcpForwarding yes
GatewayPorts no
X11Forwarding no
PrintMotd no
UseDNS no
"""


def _stat_fields(pid):
    """Fields 3.. of /proc/PID/stat (after the command name), or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(pid):
    """Every live descendant of pid, found through the parent PIDs in /proc."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        f = _stat_fields(int(name))
        if f:
            children.setdefault(int(f[1]), []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class SshdSession:
    """The sshd processes that serve the tunnel's ssh connection: every
    descendant of the listening sshd (for a root login OpenSSH keeps one
    process per connection, `sshd: root`, the monitor and the session in one).
    Quacks like Proc for the CPU and memory accounting."""

    def __init__(self, listener):
        self.listener = listener
        self.name = listener.name + "-session"

    def pids(self):
        return descendants(self.listener.pid)

    def cpu_seconds(self):
        """utime + stime, plus cutime + cstime (the CPU of children already
        reaped, so a process that exits mid-run is not lost)."""
        total = 0
        for pid in self.pids():
            f = _stat_fields(pid)
            if f:
                total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        return total / CLK_TCK

    def memory_kib(self):
        out = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0, "RssShmem": 0}
        for pid in self.pids():
            try:
                with open("/proc/%d/status" % pid) as f:
                    for line in f:
                        k, _, v = line.partition(":")
                        if k in out:
                            out[k] += int(v.split()[0])
            except OSError:
                pass
        return out

    def nfds(self):
        n = 0
        for pid in self.pids():
            try:
                n += len(os.listdir("/proc/%d/fd" % pid))
            except OSError:
                pass
        return n

    def stop(self, timeout=5.0):
        """Once the ssh client is gone the session ends by itself; what is
        left is terminated by PID (they are still children of our sshd)."""
        try:
            wait_until(lambda: not self.pids(), timeout, "the sshd session to end")
        except BenchError:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for pid in self.pids():
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                try:
                    wait_until(lambda: not self.pids(), timeout, "the sshd session to end")
                    break
                except BenchError:
                    continue
        if self in Proc.registry:
            Proc.registry.remove(self)


class SshTunnel:
    """OpenSSH as a reference: an sshd on loopback (the "server") and one
    `ssh -N -R` client carrying every TCP service, the same shape as the
    rathole tunnel: visitors connect to a port on the sshd side and reach the
    service through the ssh client. No UDP (ssh -R carries TCP only)."""

    fds_per_conn = 1		# the visitor in sshd, the local connection in ssh
    fd_reserve = 0

    def __init__(self, targets, workdir, logdir, tag=""):
        self.name = "ssh" + tag
        self.targets = {n: lport for n, (kind, lport) in targets.items() if kind == "tcp"}
        self.workdir, self.logdir = workdir, logdir
        self.ports = {n: free_port() for n in self.targets}
        self.sshd_port = free_port()
        self.sshd = self.client = self.session = None
        self.cipher = self.kex = None
        self.ssh = shutil.which("ssh") or "/usr/bin/ssh"

    def ssh_args(self, key):
        return [self.ssh, "-F", "none", "-T", "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
                "-i", key, "-p", str(self.sshd_port), self.user + "@127.0.0.1"]

    def start(self):
        if not os.access(SSHD, os.X_OK):
            raise BenchError("%s not found (apt-get install -y openssh-server)" % SSHD)
        if not os.access(self.ssh, os.X_OK):
            raise BenchError("no ssh client (apt-get install -y openssh-client)")
        import pwd
        self.user = pwd.getpwuid(os.getuid()).pw_name
        d = os.path.join(self.workdir, "ssh-" + self.name)
        os.makedirs(d, exist_ok=True)
        for key in ("host_key", "client_key"):
            for old in (key, key + ".pub"):	# ssh-keygen would ask before overwriting
                if os.path.exists(os.path.join(d, old)):
                    os.unlink(os.path.join(d, old))
            r = subprocess.run(["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-C", "bench",
                                "-f", os.path.join(d, key)], capture_output=True, timeout=30)
            if r.returncode != 0:
                raise BenchError("ssh-keygen failed: %s" % r.stderr.decode(errors="replace"))
        try:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)	# privilege separation dir
        except OSError as e:
            raise BenchError("cannot create /run/sshd: %s" % e)
        conf = os.path.join(d, "sshd_config")
        with open(conf, "w") as f:
            f.write(SSHD_CONF.format(port=self.sshd_port, dir=d))
        r = subprocess.run([SSHD, "-t", "-f", conf], capture_output=True, timeout=30)
        if r.returncode != 0:
            raise BenchError("sshd -t rejects the configuration: %s"
                             % r.stderr.decode(errors="replace").strip())
        self.sshd = Proc("sshd-" + self.name, [SSHD, "-D", "-e", "-f", conf], self.logdir)
        wait_until(lambda: port_listening(self.sshd_port) or not self.sshd.alive(), 15,
                   "sshd to listen")
        if not self.sshd.alive():
            raise BenchError("sshd exited:\n%s" % self.sshd.log_tail())
        key = os.path.join(d, "client_key")
        # One short verbose login: does the key work, and which algorithms
        # does OpenSSH negotiate by default (the tunnel's client is not
        # verbose: its debug output would cost CPU on every connection).
        args = self.ssh_args(key)
        args[args.index("LogLevel=ERROR")] = "LogLevel=DEBUG1"
        try:
            r = subprocess.run(args + ["true"], capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            raise BenchError("a test login to sshd did not finish within 30 s")
        if r.returncode != 0:
            raise BenchError("a test login to sshd failed:\n%s\n%s" % (
                "\n".join(r.stderr.splitlines()[-5:]), self.sshd.log_tail(5)))
        for line in r.stderr.splitlines():
            if "kex: server->client cipher:" in line:
                # "chacha20-poly1305@openssh.com MAC: <implicit> compression: none"
                words = line.split("cipher:", 1)[1].split()
                self.cipher = words[0] if words else None
                if "MAC:" in words and "compression:" in words:
                    mac = " ".join(words[words.index("MAC:") + 1:words.index("compression:")])
                    if mac != "<implicit>":	# an AEAD cipher has no separate MAC
                        self.cipher += " + " + mac
            elif "kex: algorithm:" in line:
                self.kex = line.split("algorithm:", 1)[1].strip()
        # registered before the client: on an abnormal exit Proc.stop_all()
        # stops the client first, then the session (which ends with it)
        self.session = SshdSession(self.sshd)
        Proc.registry.append(self.session)
        args = self.ssh_args(key)
        for n, lport in self.targets.items():
            args[1:1] = ["-R", "127.0.0.1:%d:127.0.0.1:%d" % (self.ports[n], lport)]
        args[1:1] = ["-N", "-o", "ExitOnForwardFailure=yes"]
        self.client = Proc("ssh-" + self.name, args, self.logdir)

    def wait_ready(self, probe, timeout=20):
        def ok():
            if not (self.sshd.alive() and self.client.alive()):
                raise BenchError("sshd or the ssh client exited:\n%s\n%s" % (
                    self.sshd.log_tail(), self.client.log_tail()))
            return all(probe(n, p) for n, p in self.ports.items())
        wait_until(ok, timeout, "ssh -R to carry every service")
        wait_until(lambda: len(self.session.pids()) > 0, 5, "the sshd session process")

    # the pair measured, like a rathole server and client
    @property
    def server(self):
        return self.session

    def procs(self):
        return [self.session, self.client]

    def stop(self):
        if self.client:
            self.client.stop()
        if self.session:
            self.session.stop()
        if self.sshd:
            self.sshd.stop()
