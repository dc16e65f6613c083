"""The container image (Containerfile, `make image`, `make images`) in a real engine.

1. `make image` builds the image of this machine's architecture (as root in
   a network namespace without a network, so a base that must be pulled
   fails the build; `make images` too); its contents
   are what the Containerfile promises (the static binary, the CA bundle, a
   passwd naming user 10001, and nothing else; labels, entrypoint, no
   HEALTHCHECK). A server container and a client container run it with host
   networking on loopback ports picked at run time, read-only, with every
   capability dropped, and a visitor fetches a page through them. The
   transport is TLS without trusted_root, so the client verifies the server
   against the image's CA bundle (built here with the test CA appended); the
   server's PKCS#12 path is relative, found in the working directory.
   Then the configs change: the server's, in a mounted directory, is replaced
   by a rename and picked up by inotify; the client's, a single mounted file,
   is rewritten in place and reloaded by `kill --signal HUP` through the
   engine. A second page through the new service shows both reloads. `stop`
   ends both with exit status 0 and "shut down cleanly".
2. `make images` builds the three architectures and the manifest list:
   `podman manifest inspect` lists amd64, arm64 and arm/v7, each by the
   digest of that architecture's image; its OCI image index names the same
   three, and the arm64 and armhf binaries taken out of their images' layers
   carry a page through a tunnel under qemu-user (no binfmt needed).
3. Where binfmt_misc hands arm64 and arm binaries to qemu-user with the F
   flag (qemu-user-static), the arm64 and armhf images themselves run in the
   engine: an arm64 server container and an armhf client container carry a
   page and stop cleanly. Skipped, saying so, elsewhere.

The engine: podman (with a storage of its own in a temporary directory:
--root, --runroot, --tmpdir, removed at the end, so parallel runs and other
users' images never meet), else docker (unique names, removed at the end).
What the engine needs on this host is found by trying, cheapest first: its
defaults, then the OCI runtimes installed (runc, crun), the cgroupfs cgroup
manager, and explicit --ulimit values no higher than this process's limits
(a host without CAP_SYS_RESOURCE cannot give a container podman's default
of 1048576 open files). Skipped, saying why, where no engine can run a
container; `.ci/run` installs podman, runc and the cross compilers.
"""
import glob
import gzip
import hashlib
import http.server
import io
import json
import os
import resource
import shutil
import subprocess
import tarfile
import tempfile
import threading
import urllib.request
import uuid

import pytest

from conftest import REPO, free_port, wait_until
from pki import PASSWORD

USER_ID = 10001		# the Containerfile's USER
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
# this machine's architecture as `make image` tags it
HOST_TAG = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf"}.get(os.uname().machine,
                                                                       os.uname().machine)


def _version():
    with open(os.path.join(REPO, "Makefile")) as f:
        for line in f:
            if line.startswith("VERSION"):
                return line.split(":=")[1].strip()
    raise AssertionError("no VERSION in the Makefile")


VERSION = _version()


def _offline():
    """A prefix that runs a command in a network namespace of its own, with
    no network (root only): the image must build without pulling anything."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return []
    r = subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=30)
    return ["unshare", "--net"] if r.returncode == 0 else []


_OFFLINE = _offline()


def _make(args, env=None, timeout=600):
    """Runs make in the repository, without a network where it can
    (_offline), and free of the make that may be running the suite (its
    MAKEFLAGS would turn on SANITIZE=1 or pass its jobserver; and make
    exports its command line's variables, SANITIZE=1 among them, into the
    environment as well: those named after MAKEFLAGS' "--" go too)."""
    flags = os.environ.get("MAKEFLAGS", "")
    cmdline = {a.split("=", 1)[0] for a in flags.split(" -- ", 1)[1].split()
               if "=" in a} if " -- " in flags else set()
    full = {k: v for k, v in os.environ.items()
            if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES") and k not in cmdline}
    full.update(env or {})
    r = subprocess.run([*_OFFLINE, "make", "--no-print-directory", *args], cwd=REPO, env=full,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"make {' '.join(args)} failed:\n{r.stdout[-6000:]}\n{r.stderr[-6000:]}"
    return r.stdout


class Engine:
    """podman with a private storage, or docker; `run_opts` and `global_opts`
    are what this host needs (found by probe())."""

    def __init__(self, tmp):
        self.tmp = tmp
        podman = shutil.which("podman")
        docker = shutil.which("docker")
        if podman:
            self.name = "podman"
            store = os.path.join(tmp, "store")
            self.base = [podman, "--root", store + "/root", "--runroot", store + "/run",
                         "--tmpdir", store + "/tmp", "--storage-driver", "vfs",
                         "--events-backend", "file"]
        elif docker:
            self.name = "docker"
            self.base = [docker]
            # the client alone (docker's CLI without a daemon) builds nothing
            r = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                pytest.skip("podman is not installed, and docker's daemon does not answer "
                            f"(docker info: {r.stderr.strip()[-300:]}); apt-get install podman runc")
        else:
            pytest.skip("no container engine: neither podman nor docker is installed "
                        "(apt-get install podman runc; .ci/run installs them)")
        self.global_opts = []
        self.run_opts = []
        self.containers = []
        self.images = []
        # a name of our own: docker's images are everyone's, and `make image`
        # stages its context in build/image/<name>-<arch>, beside the user's
        self.image = "rathole-test-" + uuid.uuid4().hex[:10]

    @property
    def command(self):
        return self.base + self.global_opts

    def __call__(self, *args, timeout=60, check=True):
        r = subprocess.run(self.command + list(args), capture_output=True, text=True,
                           timeout=timeout)
        if check:
            assert r.returncode == 0, f"{self.name} {' '.join(args)}: {r.stderr.strip()}"
        return r

    def candidates(self):
        """(global options, run options) to try, fewest first."""
        globals_ = [[]]
        if self.name == "podman":
            runtimes = [[]] + [["--runtime", p] for p in map(shutil.which, ("runc", "crun")) if p]
            globals_ = [rt + cg for rt in runtimes for cg in ([], ["--cgroup-manager", "cgroupfs"])]
        ulimits = [[]]
        limits = []
        for flag, res in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
            _, hard = resource.getrlimit(res)
            n = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
            limits += ["--ulimit", f"{flag}={n}:{n}"]
        ulimits.append(limits)
        return [(g, u) for g in globals_ for u in ulimits]

    def probe(self, image):
        """Finds options with which a container runs; skips if none does."""
        tried = []
        for g, u in self.candidates():
            self.global_opts = g
            r = self("run", "--rm", "--network", "host", *u, image, "--version",
                     check=False, timeout=60)
            if r.returncode == 0 and r.stdout.startswith("rathole "):
                self.run_opts = u
                return " ".join(g + u) or "the engine's defaults"
            tried.append(f"  [{' '.join(g + u) or 'defaults'}]: {r.stderr.strip()[-300:]}")
        self.global_opts = []
        pytest.skip(f"{self.name} cannot run a container on this host; tried:\n" + "\n".join(tried))

    def run(self, name, *args):
        """A detached container (host network, read-only, no capabilities)."""
        self.containers.append(name)
        self("run", "-d", "--name", name, "--network", "host", "--read-only",
             "--cap-drop", "all", "--security-opt", "no-new-privileges",
             *self.run_opts, *args)

    def inspect(self, what, fmt):
        return self("inspect", "--format", fmt, what).stdout.strip()

    def logs(self, name):
        r = self("logs", name, check=False)
        return r.stdout + r.stderr

    def cleanup(self):
        # what `make image(s)` staged and wrote in build/image/ under our name
        for d in glob.glob(os.path.join(REPO, "build", "image", self.image + "-*")):
            shutil.rmtree(d, ignore_errors=True)
        for c in self.containers:
            self("rm", "-f", c, check=False, timeout=60)
        if self.name == "docker":
            for i in self.images:
                self("rmi", "-f", i, check=False, timeout=60)


@pytest.fixture(scope="module")
def engine():
    tmp = tempfile.mkdtemp(prefix="rathole-ctr-")
    e = None
    try:
        e = Engine(tmp)
        yield e
    finally:
        if e is not None:
            e.cleanup()
            if e.name == "podman":
                # the private storage: what is in it, then the directory
                for tail in ("rm", "-af"), ("rmi", "-af"):
                    subprocess.run(e.command + list(tail), capture_output=True, timeout=120)
                if os.geteuid() != 0:	# rootless: files of the user namespace's ids
                    subprocess.run(e.command + ["unshare", "rm", "-rf", os.path.join(tmp, "store")],
                                   capture_output=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)


class Pages:
    """An HTTP server on loopback answering every path with `body`."""

    def __init__(self, body):
        self.body = body.encode()
        pages = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(pages.body)))
                self.end_headers()
                self.wfile.write(pages.body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def pages():
    made = []

    def make(body):
        made.append(Pages(body))
        return made[-1]
    yield make
    for p in made:
        p.stop()


def _get(port, path="/"):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.read()
    except OSError:
        return None


def _services(api_port):
    """The service names in the admin API's /api/status (what a probe asks)."""
    body = _get(api_port, "/api/status")
    return {s["name"] for s in json.loads(body)["services"]} if body else set()


def _private(path, text=None, mode=0o600):
    """A file the container's user (10001) may read and nobody else: chown
    needs root; otherwise it is world-readable (rathole warns, and works)."""
    if text is not None:
        with open(path, "w") as f:
            f.write(text)
    if os.geteuid() == 0:
        os.chown(path, USER_ID, USER_ID)
        os.chmod(path, mode)
    else:
        os.chmod(path, 0o644)


def _server_toml(ctl, services, api):
    out = [f'[server]\nbind_addr = "127.0.0.1:{ctl}"\n'
           '[server.transport]\ntype = "tls"\n'
           f'[server.transport.tls]\npkcs12 = "identity.p12"\npkcs12_password = "{PASSWORD}"\n'
           f'[server.api]\nbind_addr = "127.0.0.1:{api}"\n']
    for name, port in services.items():
        out.append(f'[server.services.{name}]\ntoken = "token-{name}"\n'
                   f'bind_addr = "127.0.0.1:{port}"\n')
    return "".join(out)


def _client_toml(ctl, services, api):
    # no trusted_root: the server's certificate is checked against the image's CAs
    out = [f'[client]\nremote_addr = "127.0.0.1:{ctl}"\n'
           '[client.transport]\ntype = "tls"\n'
           '[client.transport.tls]\nhostname = "localhost"\n'
           f'[client.api]\nbind_addr = "127.0.0.1:{api}"\n']
    for name, port in services.items():
        out.append(f'[client.services.{name}]\ntoken = "token-{name}"\n'
                   f'local_addr = "127.0.0.1:{port}"\n')
    return "".join(out)


def _member_path(m):
    """A tar member's path without "./" or "/" in front (".dockerenv" stays)."""
    name = m.name.removeprefix("./")
    return name.lstrip("/")


def _exported_files(engine, image):
    """{path: bytes} of the regular files of image, from a created container."""
    name = "rathole-export-" + uuid.uuid4().hex[:8]
    engine.containers.append(name)
    engine("create", "--name", name, image)
    out = os.path.join(engine.tmp, name + ".tar")
    engine("export", "-o", out, name)
    files = {}
    with tarfile.open(out) as t:
        for m in t.getmembers():
            if m.isfile():
                files["/" + _member_path(m)] = t.extractfile(m).read()
    os.unlink(out)
    engine("rm", name)
    return files


def test_image_tunnel_reload_and_stop(engine, pki, pages, tmp_path):
    # ---- build: the system's CAs and the test CA, so TLS needs no trusted_root
    bundle = tmp_path / "ca-bundle.crt"
    with open(bundle, "wb") as f:
        if os.path.exists(SYSTEM_CA):
            with open(SYSTEM_CA, "rb") as s:
                f.write(s.read())
        with open(pki.path("ca.pem"), "rb") as s:
            f.write(s.read())
    source = "https://example.org/rathole-c.git"
    tag = f"{engine.image}:{VERSION}-{HOST_TAG}"
    engine.images += [tag, f"{engine.image}:latest"]
    _make(["image", f"ENGINE={' '.join(engine.base)}", f"IMAGE={engine.image}",
           f"CA_BUNDLE={bundle}"], env={"IMAGE_SOURCE": source})

    # ---- what is in it
    cfg = json.loads(engine.inspect(tag, "{{json .Config}}"))
    assert cfg["User"] == f"{USER_ID}:{USER_ID}"
    assert cfg["Entrypoint"] == ["rathole"]
    assert cfg["Cmd"] == ["/etc/rathole/config.toml"]
    assert not cfg.get("Healthcheck"), "the design has no HEALTHCHECK (README: Container image)"
    labels = cfg["Labels"]
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"] == source
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if rev.returncode == 0:
        assert labels["org.opencontainers.image.revision"] == rev.stdout.strip()
    files = _exported_files(engine, tag)
    with open(os.path.join(REPO, "build", "static", "rathole-stripped"), "rb") as f:
        binary = f.read()
    assert hashlib.sha256(files["/usr/bin/rathole"]).digest() == hashlib.sha256(binary).digest(), \
        "the image's rathole is not the stripped static build"
    assert files["/etc/ssl/certs/ca-certificates.crt"] == bundle.read_bytes()
    assert f"rathole:x:{USER_ID}:{USER_ID}:" in files["/etc/passwd"].decode()
    assert f"rathole:x:{USER_ID}:" in files["/etc/group"].decode()
    ours = {"/usr/bin/rathole", "/etc/ssl/certs/ca-certificates.crt", "/etc/passwd",
            "/etc/group", "/etc/nsswitch.conf"}
    # nothing else but what an engine may add to any container (docker does)
    engines = {"/.dockerenv", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/run/.containerenv"}
    assert set(files) - ours <= engines, f"unexpected files in the image: {set(files) - ours - engines}"
    size = int(engine.inspect(tag, "{{.Size}}"))
    assert size < len(binary) + bundle.stat().st_size + 65536, f"image of {size} bytes"

    how = engine.probe(tag)
    print(f"\n{engine.name} runs containers here with: {how}; image {tag}: {size} bytes")

    # ---- a server and a client container; a page through the tunnel
    one, two = pages("page one"), pages("page two")
    ctl, web, web2, api_s, api_c = (free_port() for _ in range(5))
    sdir = tmp_path / "server"
    sdir.mkdir()
    os.chmod(sdir, 0o755)
    shutil.copy(pki.path("identity.p12"), sdir / "identity.p12")
    _private(sdir / "identity.p12")
    _private(sdir / "config.toml", _server_toml(ctl, {"web": web}, api_s))
    cfile = tmp_path / "client.toml"
    _private(cfile, _client_toml(ctl, {"web": one.port}, api_c))

    run = uuid.uuid4().hex[:8]
    server, client = f"rathole-server-{run}", f"rathole-client-{run}"
    # the server's directory, so that inotify sees a replaced file; the
    # client's single file (only a signal reloads a file mounted alone)
    engine.run(server, "-v", f"{sdir}:/etc/rathole:ro", tag)
    engine.run(client, "-v", f"{cfile}:/etc/rathole/config.toml:ro", tag)

    def wait(pred, timeout, what):
        """wait_until, with the containers' logs when it times out."""
        try:
            wait_until(pred, timeout, interval=0.2, what=what)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- server ---\n{engine.logs(server)[-3000:]}"
                                 f"\n--- client ---\n{engine.logs(client)[-3000:]}") from None

    wait(lambda: _get(web) == b"page one", 30, "page one through the containers")
    if os.geteuid() == 0:
        # rootful: the container's user is this host's 10001
        for c in (server, client):
            pid = engine.inspect(c, "{{.State.Pid}}")
            with open(f"/proc/{pid}/status") as f:
                uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
            assert uids == [str(USER_ID)] * 4, f"{c} runs as {uids}"

    # ---- reloads: a new service on both sides, reached through the tunnel
    new = sdir / "config.toml.new"
    _private(new, _server_toml(ctl, {"web": web, "web2": web2}, api_s))
    os.rename(new, sdir / "config.toml")
    # the server's inotify saw the rename (its port opens when the client comes)
    wait(lambda: "web2" in _services(api_s), 15, "the server's reload by inotify")
    with open(cfile, "r+") as f:	# in place: the mounted inode must stay
        f.truncate(0)
        f.write(_client_toml(ctl, {"web": one.port, "web2": two.port}, api_c))
    engine("kill", "--signal", "HUP", client)
    wait(lambda: _get(web2) == b"page two", 20, "page two through the service added by SIGHUP")
    assert _get(web) == b"page one"

    # ---- stop: SIGTERM, exit 0, a clean shutdown
    for c in (client, server):
        engine("stop", "-t", "15", c, timeout=60)
        assert engine.inspect(c, "{{.State.ExitCode}}") == "0", engine.logs(c)[-3000:]
        log = engine.logs(c)
        assert "shut down cleanly" in log, log[-3000:]
    assert "SIGHUP received" in engine.logs(client)


# ---- the three architectures and the manifest list ----

ELF_MACHINE = {"amd64": 62, "arm64": 183, "arm": 40}	# e_machine: x86-64, AArch64, ARM
QEMU = {"arm64": "qemu-aarch64", "arm": "qemu-arm"}
CROSS = {"aarch64-linux-gnu": "arm64", "arm-linux-gnueabihf": "armhf"}	# triplet: Debian arch


def _blob(layout, digest):
    return os.path.join(layout, "blobs", *digest.split(":"))


def _read_json(layout, digest):
    with open(_blob(layout, digest)) as f:
        return json.load(f)


def _binary_from_layers(layout, manifest, dest):
    """usr/bin/rathole from the image's layers (gzip'ed or plain tar)."""
    for layer in manifest["layers"]:
        with open(_blob(layout, layer["digest"]), "rb") as f:
            data = f.read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        with tarfile.open(fileobj=io.BytesIO(data)) as t:
            for m in t.getmembers():
                if _member_path(m) == "usr/bin/rathole":
                    with open(dest, "wb") as f:
                        f.write(t.extractfile(m).read())
                    os.chmod(dest, 0o755)
                    return dest
    raise AssertionError("no usr/bin/rathole in the image's layers")


PLATFORMS = {("linux", "amd64", ""): "amd64", ("linux", "arm64", ""): "arm64",
             ("linux", "arm", "v7"): "armhf"}	# OCI platform: the tag's suffix


@pytest.fixture(scope="module")
def images(engine):
    """`make images` once for the tests below: the path of its OCI layout."""
    if engine.name != "podman":
        pytest.skip("the manifest list of local images is made with podman (make images)")
    missing = [t + "-gcc" for t in CROSS if not shutil.which(t + "-gcc")]
    missing += [f"libssl-dev:{a}" for t, a in CROSS.items()
                if not os.path.exists(f"/usr/lib/{t}/libcrypto.a")]
    if missing:
        pytest.skip(f"cross builds need {', '.join(missing)} "
                    "(scripts/cross-test.sh --tools installs them; .ci/run does)")
    _make(["images", f"ENGINE={' '.join(engine.base)}", f"IMAGE={engine.image}"])
    return os.path.join(REPO, "build", "image", f"{engine.image}-{VERSION}.oci")


def _platform(p):
    return (p["os"], p["architecture"], p.get("variant", ""))


def _layout_manifests(layout):
    """{platform: its entry} of the OCI image index in the layout."""
    with open(os.path.join(layout, "index.json")) as f:
        top = json.load(f)
    (entry,) = top["manifests"]
    assert entry["mediaType"] == "application/vnd.oci.image.index.v1+json"
    platforms = {}
    for m in _read_json(layout, entry["digest"])["manifests"]:
        assert m["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
        platforms[_platform(m["platform"])] = m
    return platforms


def _binfmt_interpreter(path):
    """The interpreter binfmt_misc runs the program at path with in a
    container: an enabled entry whose magic matches the file, with the F flag
    (the interpreter opened when it was registered: an image from scratch
    has none; Debian's qemu-user-static registers its entries so). None
    where there is none."""
    root = "/proc/sys/fs/binfmt_misc"
    try:
        with open(os.path.join(root, "status")) as f:
            if f.read().strip() != "enabled":
                return None
        names = os.listdir(root)
    except OSError:		# not mounted, or no binfmt_misc
        return None
    with open(path, "rb") as f:
        head = f.read(256)
    for name in names:
        if name in ("status", "register"):
            continue
        try:
            with open(os.path.join(root, name)) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        fields = dict(line.partition(" ")[::2] for line in lines[1:])
        if not lines or lines[0] != "enabled" or "magic" not in fields \
                or "F" not in fields.get("flags:", ""):
            continue
        magic = bytes.fromhex(fields["magic"])
        mask = bytes.fromhex(fields["mask"]) if "mask" in fields else b"\xff" * len(magic)
        off = int(fields.get("offset", "0"))
        part = head[off:off + len(magic)]
        if len(part) == len(magic) and all(a & m == b & m for a, b, m in zip(part, magic, mask)):
            return fields.get("interpreter")
    return None


def test_manifest_list_and_foreign_architectures(engine, images, procs, pages, tmp_path):
    # ---- the list in the engine's storage names the three images, by digest
    listed = json.loads(engine("manifest", "inspect", f"{engine.image}:{VERSION}").stdout)
    entries = {_platform(m["platform"]): m["digest"] for m in listed["manifests"]}
    assert len(entries) == len(listed["manifests"]) == 3, listed
    assert set(entries) == set(PLATFORMS), entries.keys()
    for platform, tag in PLATFORMS.items():
        image = f"{engine.image}:{VERSION}-{tag}"
        assert entries[platform] == engine.inspect(image, "{{.Digest}}"), \
            f"the list's {platform} entry is not {image}"
        assert engine.inspect(image, "{{.Architecture}}") == platform[1]

    # ---- the same list written as an OCI image index
    layout = images
    platforms = _layout_manifests(layout)
    assert set(platforms) == set(PLATFORMS), platforms.keys()

    bins = {}
    for (_, arch, _), m in platforms.items():
        manifest = _read_json(layout, m["digest"])
        config = _read_json(layout, manifest["config"]["digest"])
        assert config["architecture"] == arch
        assert config["config"]["Labels"]["org.opencontainers.image.version"] == VERSION
        assert config["config"]["User"] == f"{USER_ID}:{USER_ID}"
        path = _binary_from_layers(layout, manifest, str(tmp_path / f"rathole-{arch}"))
        with open(path, "rb") as f:
            head = f.read(20)
        assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == ELF_MACHINE[arch], \
            f"the {arch} image holds a binary for another machine"
        bins[arch] = path

    # ---- arm64 server, armhf client, both from their images, under qemu-user
    qemu = {a: shutil.which(q) for a, q in QEMU.items()}
    if not all(qemu.values()):
        pytest.skip("qemu-user is not installed: the arm images are built and checked, not run")
    page = pages("a page from the arm images")
    ctl, web = free_port(), free_port()
    server = tmp_path / "server.toml"
    server.write_text(f'[server]\nbind_addr = "127.0.0.1:{ctl}"\n'
                      f'[server.services.web]\ntoken = "t"\nbind_addr = "127.0.0.1:{web}"\n')
    client = tmp_path / "client.toml"
    client.write_text(f'[client]\nremote_addr = "127.0.0.1:{ctl}"\n'
                      f'[client.services.web]\ntoken = "t"\nlocal_addr = "127.0.0.1:{page.port}"\n')
    for f in (server, client):
        os.chmod(f, 0o600)
    procs.start([qemu["arm64"], bins["arm64"], str(server)])
    procs.start([qemu["arm"], bins["arm"], str(client)])
    wait_until(lambda: _get(web) == b"a page from the arm images", 60, interval=0.3,
               what="a page through the arm64 server and the armhf client under qemu")


def test_foreign_images_in_the_engine(engine, images, pages, tmp_path):
    """Where binfmt_misc hands arm64 and arm binaries to qemu-user (with the
    F flag), the arm64 and armhf images themselves run in the engine: an
    arm64 server container and an armhf client container carry a page, and
    stop cleanly."""
    platforms = _layout_manifests(images)
    interpreters, missing = {}, []
    for platform, tag in PLATFORMS.items():
        if tag == HOST_TAG:
            continue
        manifest = _read_json(images, platforms[platform]["digest"])
        binary = _binary_from_layers(images, manifest, str(tmp_path / f"rathole-{tag}"))
        interpreters[tag] = _binfmt_interpreter(binary)
        if not interpreters[tag]:
            missing.append(tag)
    if missing:
        pytest.skip(f"binfmt_misc does not hand {' and '.join(missing)} binaries to qemu-user "
                    "with the F flag here (qemu-user-static registers it so): the foreign images "
                    "were checked, and their binaries run under qemu-user, by the test above")
    foreign = list(interpreters)	# amd64, arm64, armhf but this host's
    how = engine.probe(f"{engine.image}:{VERSION}-{HOST_TAG}")
    print(f"\n{engine.name} runs containers here with: {how}; binfmt: {interpreters}")

    page = pages("a page from the foreign containers")
    ctl, web = free_port(), free_port()
    sdir, cdir = tmp_path / "server", tmp_path / "client"
    for d in sdir, cdir:
        d.mkdir()
        os.chmod(d, 0o755)
    _private(sdir / "config.toml", f'[server]\nbind_addr = "127.0.0.1:{ctl}"\n'
             f'[server.services.web]\ntoken = "t"\nbind_addr = "127.0.0.1:{web}"\n')
    _private(cdir / "config.toml", f'[client]\nremote_addr = "127.0.0.1:{ctl}"\n'
             f'[client.services.web]\ntoken = "t"\nlocal_addr = "127.0.0.1:{page.port}"\n')
    run = uuid.uuid4().hex[:8]
    server, client = f"rathole-server-{foreign[0]}-{run}", f"rathole-client-{foreign[-1]}-{run}"
    engine.run(server, "-v", f"{sdir}:/etc/rathole:ro", f"{engine.image}:{VERSION}-{foreign[0]}")
    engine.run(client, "-v", f"{cdir}:/etc/rathole:ro", f"{engine.image}:{VERSION}-{foreign[-1]}")
    try:
        wait_until(lambda: _get(web) == b"a page from the foreign containers", 60, interval=0.3,
                   what=f"a page through the {foreign[0]} server and the {foreign[-1]} client "
                        "containers")
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- server ---\n{engine.logs(server)[-3000:]}"
                             f"\n--- client ---\n{engine.logs(client)[-3000:]}") from None
    # the containers' processes are the foreign binaries, run by binfmt's qemu
    for c, tag in (server, foreign[0]), (client, foreign[-1]):
        try:
            exe = os.readlink(f"/proc/{engine.inspect(c, '{{.State.Pid}}')}/exe")
        except OSError:		# another user's process (rootless)
            continue
        assert os.path.basename(exe) == os.path.basename(interpreters[tag]), f"{c}: {exe}"
    for c in (client, server):
        engine("stop", "-t", "15", c, timeout=60)
        assert engine.inspect(c, "{{.State.ExitCode}}") == "0", engine.logs(c)[-3000:]
        log = engine.logs(c)
        assert "shut down cleanly" in log, log[-3000:]
