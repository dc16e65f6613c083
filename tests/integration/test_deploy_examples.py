"""The deployment examples: examples/compose/ and examples/kubernetes/.

No Docker engine and no Kubernetes cluster run here (test_container.py runs
the image itself, with the same settings, under podman). What is checked:

1. Every YAML file parses (python3-yaml).
2. compose: the server and the client run the image with the config
   directory mounted read-only as /etc/rathole, `restart: unless-stopped`,
   read-only, without capabilities; the server publishes exactly the ports
   of its config, the admin API on the host's loopback only; the client,
   on the host's network, publishes nothing and keeps its API on loopback.
   Their configs pass `rathole --check` (test_examples.py checks them too).
3. kubernetes: the objects are there and consistent: selectors match the
   pods' labels, the Service selects the server's pods, every targetPort and
   probe port names a container port, the probes ask /api/status of the API
   port of the config, the pods run as 10001 without privileges, the
   ConfigMap mounted at /etc/rathole holds a config.toml without a secret
   that passes `rathole --check` with the Secret's files (mounted at
   /run/secrets/rathole, each named by a *_file key) and whose ports are the
   containers'. The client runs two replicas, the server's services share
   visitors between them (balance = "round_robin", docs/ha.md), which
   --check reports.
4. The server's config from the ConfigMap, mounted as the kubelet mounts a
   ConfigMap or Secret (config.toml -> ..data/config.toml, ..data -> a timestamped
   directory) and updated as the kubelet updates one (a new directory, then
   ..data swapped by a rename): rathole reloads it, and /api/status shows
   the added service.
"""
import glob
import json
import os
import re
import tomllib
import urllib.request

import pytest

from conftest import RATHOLE, REPO, free_port, run_rathole, wait_until

yaml = pytest.importorskip("yaml", reason="python3-yaml is not installed (apt-get install "
                           "python3-yaml; .ci/run installs it)")

COMPOSE = os.path.join(REPO, "examples", "compose")
K8S = os.path.join(REPO, "examples", "kubernetes")
YAMLS = sorted(glob.glob(os.path.join(COMPOSE, "**", "*.yaml"), recursive=True) +
               glob.glob(os.path.join(K8S, "*.yaml")))
USER_ID = 10001


def _docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def _port(addr):
    return int(addr.rsplit(":", 1)[1])


def _host(addr):
    return addr.rsplit(":", 1)[0]


def _check(text, tmp_path, name):
    """rathole --check of a config text; the CompletedProcess."""
    return run_rathole(["--check"], text, tmp_path, name=name)


def test_yaml_files_parse():
    assert len(YAMLS) == 4, YAMLS
    for path in YAMLS:
        assert _docs(path), f"{path}: no YAML documents"


# ---- compose ----

def _compose(side):
    path = os.path.join(COMPOSE, side, "compose.yaml")
    (doc,) = _docs(path)
    svc = doc["services"]["rathole"]
    with open(os.path.join(COMPOSE, side, "config", "config.toml"), "rb") as f:
        cfg = tomllib.load(f)
    return svc, cfg


@pytest.mark.parametrize("side", ["server", "client"])
def test_compose_common(side, tmp_path):
    svc, _ = _compose(side)
    assert svc["image"] == "rathole:latest"
    assert svc["restart"] == "unless-stopped"
    assert svc["volumes"] == ["./config:/etc/rathole:ro"]
    assert svc["read_only"] is True
    assert svc["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in svc["security_opt"]
    with open(os.path.join(COMPOSE, side, "config", "config.toml")) as f:
        r = _check(f.read(), tmp_path, "config.toml")
    assert r.returncode == 0, r.stderr
    assert f"role: {side}" in r.stdout


def test_compose_server_publishes_its_ports():
    svc, cfg = _compose("server")
    published = {}
    for p in svc["ports"]:
        parts = p.split(":")
        host_ip = parts[0] if len(parts) == 3 else ""
        assert parts[-2] == parts[-1], f"{p}: the examples keep the container's port numbers"
        published[int(parts[-1])] = host_ip
    s = cfg["server"]
    want = {_port(s["bind_addr"]), _port(s["api"]["bind_addr"])}
    want |= {_port(x["bind_addr"]) for x in s["services"].values()}
    assert set(published) == want, "compose publishes other ports than the config's"
    assert published.pop(_port(s["api"]["bind_addr"])) == "127.0.0.1", \
        "the admin API is published beyond this host's loopback"
    assert set(published.values()) == {""}, "the tunnel's ports are published on every address"
    # in the container's network namespace: all its addresses
    assert _host(s["bind_addr"]) == _host(s["api"]["bind_addr"]) == "0.0.0.0"
    assert s["api"]["token"], "an API off loopback needs a token"


def test_compose_client_host_network():
    svc, cfg = _compose("client")
    assert svc["network_mode"] == "host"
    assert "ports" not in svc, "the client connects out: nothing to publish"
    assert _host(cfg["client"]["api"]["bind_addr"]) == "127.0.0.1"


# ---- kubernetes ----

def _k8s(name):
    docs = _docs(os.path.join(K8S, name))
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    return by_kind


SECRETS = "/run/secrets/rathole"


def _pod_checks(dep, configmap, secret):
    """The Deployment's pod: what both sides share. Returns (container, its
    named ports, the config text)."""
    spec = dep["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == USER_ID
    assert pod["securityContext"]["fsGroup"] == USER_ID
    assert pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    api = tomllib.loads(configmap["data"]["config.toml"])
    api = (api.get("server") or api["client"])["api"]
    assert api["token_file"] == SECRETS + "/api-token"
    token = secret["stringData"]["api-token"]
    for probe in ("livenessProbe", "readinessProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] == "/api/status" and get["port"] == "api", f"{probe}: {get}"
        # the API is off loopback, so it has a token, and the probes send it
        assert get["httpHeaders"] == [{"name": "Authorization",
                                       "value": "Bearer " + token}], f"{probe}: {get}"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert set(mounts) == {"/etc/rathole", SECRETS}
    assert all(m["readOnly"] is True for m in mounts.values())
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols[mounts["/etc/rathole"]["name"]]["configMap"]["name"] == \
        configmap["metadata"]["name"]
    svol = vols[mounts[SECRETS]["name"]]["secret"]
    assert svol["secretName"] == secret["metadata"]["name"]
    assert svol["defaultMode"] == 0o440
    assert "args" not in c and "command" not in c, "the image's defaults name the config"
    text = configmap["data"]["config.toml"]
    # the ConfigMap holds no secret: every one is a file of the Secret
    assert not re.search(r'(?m)^\s*(token|default_token|local_private_key|pkcs12_password)\s*=',
                         text), "a secret in the ConfigMap"
    named = set(re.findall(r'_file = "%s/([^"]+)"' % SECRETS, text))
    assert named and named == set(secret["stringData"]), (named, secret["stringData"])
    return c, ports, text


def _with_secrets(text, secret, d):
    """The config text with the Secret's files written to directory d, as
    the kubelet would mount them, and the paths moved there."""
    d.mkdir(exist_ok=True)
    for name, value in secret["stringData"].items():
        (d / name).write_text(value)
        os.chmod(d / name, 0o600)
    return text.replace(SECRETS, str(d))


def test_kubernetes_server(tmp_path):
    k = _k8s("server.yaml")
    (cm,), (secret,), (dep,), (svc,) = k["ConfigMap"], k["Secret"], k["Deployment"], k["Service"]
    assert set(k) == {"ConfigMap", "Secret", "Deployment", "Service"}
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    c, ports, text = _pod_checks(dep, cm, secret)
    cfg = tomllib.loads(text)["server"]
    assert ports["api"] == _port(cfg["api"]["bind_addr"])
    assert _host(cfg["api"]["bind_addr"]) == "0.0.0.0", "the kubelet probes the pod's address"
    assert ports["control"] == _port(cfg["bind_addr"])
    for name, s in cfg["services"].items():
        assert _port(s["bind_addr"]) in ports.values(), f"service {name}: no container port"
        assert s.get("balance") == "round_robin", f"service {name}: two clients need balance"
    # the LoadBalancer: the server's pods, its named ports, never the API
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    targets = [p["targetPort"] for p in svc["spec"]["ports"]]
    assert all(t in ports for t in targets), targets
    assert "control" in targets and "api" not in targets
    assert {ports[t] for t in targets} == {ports["control"]} | {
        _port(s["bind_addr"]) for s in cfg["services"].values()}
    r = _check(_with_secrets(text, secret, tmp_path / "secrets"), tmp_path, "server.toml")
    assert r.returncode == 0, r.stderr
    assert "role: server" in r.stdout
    for name in cfg["services"]:
        assert re.search(rf"(?m)^    {name}: .*, balance round_robin,", r.stdout), r.stdout


def test_kubernetes_client(tmp_path):
    k = _k8s("client.yaml")
    assert set(k) == {"ConfigMap", "Secret", "Deployment"}
    (cm,), (secret,), (dep,) = k["ConfigMap"], k["Secret"], k["Deployment"]
    assert dep["spec"]["replicas"] == 2
    c, ports, text = _pod_checks(dep, cm, secret)
    cfg = tomllib.loads(text)["client"]
    assert ports == {"api": _port(cfg["api"]["bind_addr"])}
    assert _host(cfg["api"]["bind_addr"]) == "0.0.0.0"
    r = _check(_with_secrets(text, secret, tmp_path / "secrets"), tmp_path, "client.toml")
    assert r.returncode == 0, r.stderr
    assert "role: client" in r.stdout


# ---- a Secret's update, the kubelet's way ----

def _kubelet_write(d, text, n):
    """What the kubelet's AtomicWriter does: the files in a new timestamped
    directory, ..data swapped to it by a rename, the old one removed."""
    new = d / f"..2026_01_01_00_00_0{n}.000000000"
    new.mkdir()
    (new / "config.toml").write_text(text)
    os.chmod(new / "config.toml", 0o600)
    old = os.readlink(d / "..data") if os.path.islink(d / "..data") else None
    os.symlink(new.name, d / "..data_tmp")
    os.rename(d / "..data_tmp", d / "..data")
    if not os.path.lexists(d / "config.toml"):
        os.symlink("..data/config.toml", d / "config.toml")
    if old:
        for f in (d / old).iterdir():
            f.unlink()
        (d / old).rmdir()


def test_kubernetes_secret_update_reloads(procs, tmp_path):
    k = _k8s("server.yaml")
    (cm,), (secret,) = k["ConfigMap"], k["Secret"]
    text = _with_secrets(cm["data"]["config.toml"], secret, tmp_path / "secrets")
    ctl, api, web, web2 = (free_port() for _ in range(4))
    text = (text.replace('"0.0.0.0:2333"', f'"127.0.0.1:{ctl}"')
                .replace('"0.0.0.0:2334"', f'"127.0.0.1:{api}"')
                .replace('"0.0.0.0:8080"', f'"127.0.0.1:{web}"'))
    assert "0.0.0.0" not in text, "an address of the example was not moved to loopback"
    d = tmp_path / "etc-rathole"
    d.mkdir()
    _kubelet_write(d, text, 1)
    procs.start([RATHOLE, str(d / "config.toml")])

    req = urllib.request.Request(f"http://127.0.0.1:{api}/api/status", headers={
        "Authorization": "Bearer " + secret["stringData"]["api-token"]})

    def services():
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                return {s["name"] for s in json.loads(r.read())["services"]}
        except OSError:
            return None
    wait_until(lambda: services() == {"web"}, 10, what="the server's API")
    added = text + f'\n[server.services.web2]\ntoken = "another"\nbind_addr = "127.0.0.1:{web2}"\n'
    _kubelet_write(d, added, 2)
    wait_until(lambda: services() == {"web", "web2"}, 10,
               what="the reload of a Secret updated the kubelet's way")
