"""A throwaway PKI for the TLS tests, made at run time with the openssl command.

Nothing here is committed: every key and certificate is generated in a
temporary directory once per test session (see the `pki` fixture in
conftest.py). Layout:

  ca.pem / ca.key            the test CA
  other-ca.pem               a CA that signed nothing of ours (wrong trust)
  server.pem / server.key    "localhost" (+ IP 127.0.0.1), signed by the CA
  identity.p12               server.pem + key + ca.pem, modern encryption
  legacy.p12                 the same, RC2/3DES (`-legacy`)
  expired.p12                a certificate of the CA that expired in 2020
"""
import os
import shutil
import subprocess

PASSWORD = "p12 pass-word"
OPENSSL = shutil.which("openssl")


def _run(args, cwd):
    r = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args), r.stderr.strip()))
    return r


def _key(cwd, name):
    _run(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
          "-out", name], cwd)


def _ca(cwd, stem, cn):
    _key(cwd, stem + ".key")
    _run(["req", "-x509", "-new", "-key", stem + ".key", "-out", stem + ".pem",
          "-days", "30", "-subj", "/CN=" + cn,
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign"], cwd)


SERVER_EXT = ("basicConstraints=CA:FALSE\n"
              "keyUsage=digitalSignature,keyEncipherment\n"
              "extendedKeyUsage=serverAuth\n"
              "subjectAltName=DNS:localhost,IP:127.0.0.1\n")

# `openssl ca` is the one command of OpenSSL 3.0 that sets arbitrary validity
# dates (for the expired certificate); it wants a small database.
CA_CNF = """[ca]
default_ca = test_ca
[test_ca]
dir = .
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any
unique_subject = no
[any]
commonName = supplied
"""


def _p12(cwd, out, cert, key, legacy=False):
    args = ["pkcs12", "-export", "-inkey", key, "-in", cert, "-certfile", "ca.pem",
            "-passout", "pass:" + PASSWORD, "-out", out]
    if legacy:
        args.insert(2, "-legacy")
    _run(args, cwd)


class Pki:
    def __init__(self, d):
        self.dir = str(d)
        cwd = self.dir
        _ca(cwd, "ca", "rathole test CA")
        _ca(cwd, "other-ca", "some other CA")
        with open(os.path.join(cwd, "server.ext"), "w") as f:
            f.write(SERVER_EXT)
        _key(cwd, "server.key")
        _run(["req", "-new", "-key", "server.key", "-subj", "/CN=localhost",
              "-out", "server.csr"], cwd)
        _run(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
              "-CAcreateserial", "-days", "30", "-extfile", "server.ext",
              "-out", "server.pem"], cwd)
        _p12(cwd, "identity.p12", "server.pem", "server.key")
        _p12(cwd, "legacy.p12", "server.pem", "server.key", legacy=True)
        with open(os.path.join(cwd, "ca.cnf"), "w") as f:
            f.write(CA_CNF)
        open(os.path.join(cwd, "index.txt"), "w").close()
        with open(os.path.join(cwd, "serial"), "w") as f:
            f.write("1000\n")
        _run(["ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key",
              "-in", "server.csr", "-out", "expired.pem", "-notext",
              "-startdate", "20200101000000Z", "-enddate", "20200201000000Z",
              "-extfile", "server.ext"], cwd)
        _p12(cwd, "expired.p12", "expired.pem", "server.key")

    def path(self, name):
        return os.path.join(self.dir, name)

    def leaf(self, cn, *dns):
        """A certificate of the CA for cn (and more DNS names, or "IP:a.b.c.d"),
        made once: returns the paths (pem, key)."""
        pem, key = self.path(cn + ".pem"), self.path(cn + ".key")
        if not os.path.exists(pem):
            ext = cn + ".ext"
            names = ",".join(n if n.startswith("IP:") else "DNS:" + n for n in (cn, *dns))
            with open(self.path(ext), "w") as f:
                f.write(SERVER_EXT.replace("DNS:localhost,IP:127.0.0.1", names))
            _key(self.dir, cn + ".key")
            _run(["req", "-new", "-key", cn + ".key", "-subj", "/CN=" + cn,
                  "-out", cn + ".csr"], self.dir)
            _run(["x509", "-req", "-in", cn + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                  "-CAcreateserial", "-days", "30", "-extfile", ext, "-out", cn + ".pem"],
                 self.dir)
        return pem, key

    def leaf_p12(self, cn, *dns):
        """leaf() as a PKCS#12 archive for a server (PASSWORD): its file name."""
        name = cn + ".p12"
        if not os.path.exists(self.path(name)):
            pem, key = self.leaf(cn, *dns)
            _p12(self.dir, name, pem, key)
        return name

    # ---- config fragments ----

    def tls_server(self, p12="identity.p12", password=PASSWORD, section="transport",
                   kind="tls", ws_tls=None):
        """The [server.transport] block; kind="websocket" with ws_tls=True for wss."""
        out = [f'[server.{section}]\ntype = "{kind}"\n']
        if ws_tls is not None:
            out.append(f'[server.{section}.websocket]\ntls = {"true" if ws_tls else "false"}\n')
        out.append(f'[server.{section}.tls]\npkcs12 = "{self.path(p12)}"\n'
                   f'pkcs12_password = "{password}"\n')
        return "".join(out)

    def tls_client(self, ca="ca.pem", hostname="localhost", kind="tls", ws_tls=None,
                   proxy=None):
        out = [f'[client.transport]\ntype = "{kind}"\n']
        if proxy:
            out.append(f'[client.transport.tcp]\nproxy = "{proxy}"\n')
        if ws_tls is not None:
            out.append(f'[client.transport.websocket]\ntls = {"true" if ws_tls else "false"}\n')
        out.append(f'[client.transport.tls]\ntrusted_root = "{self.path(ca)}"\n')
        if hostname:
            out.append(f'hostname = "{hostname}"\n')
        return "".join(out)
