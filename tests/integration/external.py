"""Real third-party peers for the transport tests: nginx (websocket reverse
proxy), tinyproxy (HTTP CONNECT) and microsocks (SOCKS5).

Each is started in the foreground through `procs` (so the test's fixture
stops it by PID), with a generated config on a dynamic loopback port and
every path (pid, logs, temp files) in the test's tmp dir. A missing binary
skips the test with the package to install (.ci/run installs them)."""
import os

from conftest import free_port, need_binary, wait_port


def start_nginx(procs, backend_port, pki=None, name="nginx"):
    """nginx on a new port, passing websocket upgrades to 127.0.0.1:backend_port;
    with pki, it terminates TLS with the test CA's "localhost" certificate.
    Returns (proc, port). The location block is the one docs/transports.md
    recommends."""
    nginx = need_binary("nginx", "nginx-light")
    d = procs.tmp / name
    d.mkdir(exist_ok=True)
    port = free_port()
    ssl = ""
    listen = f"127.0.0.1:{port}"
    if pki:
        listen += " ssl"
        ssl = (f"ssl_certificate {pki.path('server.pem')};\n"
               f"        ssl_certificate_key {pki.path('server.key')};\n")
    temp = "\n".join(f"    {k}_temp_path {d}/{k};" for k in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = f"""
daemon off;
master_process off;
error_log {d}/error.log info;
pid {d}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temp}
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    server {{
        listen {listen};
        server_name localhost;
        {ssl}
        location / {{
            proxy_pass http://127.0.0.1:{backend_port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
    }}
}}
"""
    path = d / "nginx.conf"
    path.write_text(conf)
    # -e: the error log before the config is read (the default is a system path)
    p = procs.start([nginx, "-p", str(d), "-c", str(path), "-e", f"{d}/error.log"])
    wait_port(port, timeout=10)
    p.log_file = d / "error.log"
    return p, port


def start_tinyproxy(procs, user=None, password=None, connect_ports=(), name="tinyproxy"):
    """tinyproxy on a new port (HTTP CONNECT), optionally with BasicAuth and a
    ConnectPort list (CONNECT to any other port gets 403). Returns (proc, port)."""
    tinyproxy = need_binary("tinyproxy", "tinyproxy-bin")
    d = procs.tmp / name
    d.mkdir(exist_ok=True)
    port = free_port()
    lines = [f"Port {port}", "Listen 127.0.0.1", "Timeout 600", "MaxClients 1024",
             "LogLevel Info", f"LogFile \"{d}/tinyproxy.log\"", "Allow 127.0.0.1",
             "DisableViaHeader Yes"]
    if os.geteuid() == 0:
        # as root it drops privileges: to the owner of the files it writes
        lines += ["User root", "Group root"]
    lines += [f"ConnectPort {p}" for p in connect_ports]
    if user is not None:
        lines.append(f"BasicAuth {user} {password}")
    path = d / "tinyproxy.conf"
    path.write_text("\n".join(lines) + "\n")
    p = procs.start([tinyproxy, "-d", "-c", str(path)])
    wait_port(port, timeout=10)
    p.log_file = d / "tinyproxy.log"
    return p, port


def start_microsocks(procs, user=None, password=None):
    """microsocks (SOCKS5) on a new port, optionally with a user and password."""
    microsocks = need_binary("microsocks", "microsocks")
    port = free_port()
    args = [microsocks, "-i", "127.0.0.1", "-p", str(port)]
    if user is not None:
        args += ["-u", user, "-P", password]
    p = procs.start(args)
    wait_port(port, timeout=10)
    return p, port


def start_nginx_site(procs, text, cert=None, name="site"):
    """nginx on a new port answering every request with 200 and the body
    "<text> host=<the Host it saw>\\n" (keep-alive on); with cert = (pem, key),
    over TLS with that certificate. Returns (proc, port)."""
    nginx = need_binary("nginx", "nginx-light")
    d = procs.tmp / name
    d.mkdir(exist_ok=True)
    port = free_port()
    listen = f"127.0.0.1:{port}"
    ssl = ""
    if cert:
        listen += " ssl"
        ssl = f"ssl_certificate {cert[0]};\n        ssl_certificate_key {cert[1]};\n"
    temp = "\n".join(f"    {k}_temp_path {d}/{k};" for k in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = f"""
daemon off;
master_process off;
error_log {d}/error.log info;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
{temp}
    server {{
        listen {listen};
        server_name _;
        {ssl}
        location / {{
            default_type text/plain;
            return 200 "{text} host=$host\\n";
        }}
    }}
}}
"""
    path = d / "nginx.conf"
    path.write_text(conf)
    p = procs.start([nginx, "-p", str(d), "-c", str(path), "-e", f"{d}/error.log"])
    wait_port(port, timeout=10)
    p.log_file = d / "error.log"
    return p, port
