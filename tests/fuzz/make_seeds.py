#!/usr/bin/env python3
"""Writes the seed corpora in tests/fuzz/corpus/<target>/ (run once; the
files are committed). Seeds are small, valid or nearly valid inputs that
lead the fuzzer past the first checks. Captured rathole bytes come from
$TESTDATA/rathole-wire at generation time (they are not copied whole)."""
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TESTDATA = os.environ.get("TESTDATA") or os.path.join(os.path.dirname(REPO), "shared", "testdata")



# port ranges and bandwidth limits (issue 26), both roles in one file
RANGES_LIMITS = """
[server]
bind_addr = "0.0.0.0:2333"
default_token = "t"
[server.services.game]
bind_addr = "0.0.0.0:30000-30009"
bandwidth_limit = "80Mbit"
[server.services.dns]
type = "udp"
bind_addr = "[::]:30000-30001"
bandwidth_limit = "1.5 MB"
[server.services.one]
bind_addr = "127.0.0.1:40000"
[client]
remote_addr = "example.com:2333"
default_token = "t"
[client.services.game]
local_addr = "127.0.0.1:40000-40009"
remote_ports = "30000-30009"
bandwidth_limit = "10MB"
[client.services.dns]
type = "udp"
local_addr = "127.0.0.1:53-54"
remote_ports = "30000-30001"
"""

def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def main():
    cap = json.load(open(os.path.join(TESTDATA, "rathole-wire", "capture-tcp-udp.json")))
    conns = cap["connections"]
    ctl = bytes.fromhex(conns[0]["client_to_server"])
    put("proto", "control-hello", ctl[:37])
    put("proto", "data-hello", bytes.fromhex(conns[2]["client_to_server"])[:37])
    put("proto", "ack-ok", bytes.fromhex(conns[0]["server_to_client"])[37:41])
    put("proto", "udp-v4-header", b"\x0c" + b"\x00" * 4 + bytes([127, 0, 0, 1]) + struct.pack("<HH", 23630, 8))
    put("proto", "udp-v6-header", b"\x18" + struct.pack("<I", 1) + b"\x00" * 15 + b"\x01" + struct.pack("<HH", 53, 8))
    # the UDP frames the server sent on the captured data channel (after StartForwardUdp)
    udp = bytes.fromhex(conns[2]["server_to_client"])[4:]
    put("udp_framer", "captured-frame", b"\x07" + udp)
    put("udp_framer", "two-frames", b"\x81" + udp + udp)
    v6 = b"\x18" + struct.pack("<I", 1) + b"\x00" * 15 + b"\x01" + struct.pack("<HH", 53, 5) + b"hello"
    put("udp_framer", "v6-frame", b"\x02" + v6 + udp)

    for name in ("minimal/server.toml", "minimal/client.toml", "noise_nk/server.toml",
                 "noise_nk/client.toml", "tls/client.toml", "udp/server.toml",
                 "use_proxy/client.toml", "unified/config.toml"):
        put("config", name.replace("/", "-"), open(os.path.join(REPO, "examples", name)).read())
    put("config", "ranges-limits.toml", RANGES_LIMITS)
    put("config", "everything.toml", """
[server]
bind_addr = "0.0.0.0:2333"
default_token = "t"
heartbeat_interval = 30
[server.transport]
type = "noise"
[server.transport.noise]
pattern = "Noise_XX_25519_ChaChaPoly_BLAKE2s"
local_private_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
[server.api]
bind_addr = "127.0.0.1:9000"
token = "admin"
[server.services.a]
type = "udp"
bind_addr = "[::]:5202"
allow = ["10.0.0.0/8", "2001:db8::/32"]
deny = ["10.1.0.0/16"]
max_connections = 10
proxy_protocol = "v2"
[client]
remote_addr = "example.com:2333"
retry_interval = 2
heartbeat_timeout = 40
[client.transport]
type = "websocket"
[client.transport.websocket]
tls = true
[client.transport.tls]
trusted_root = "ca.pem"
hostname = "example.com"
[client.transport.tcp]
proxy = "socks5://u:p@127.0.0.1:1080"
keepalive_secs = 20
[client.services.a]
local_addr = "127.0.0.1:53"
type = "udp"
udp_idle_timeout = 60
""")

    for name in ("valid/example.toml", "valid/spec-example-1.toml", "valid/key/dotted.toml",
                 "valid/array/nested-inline-table.toml", "valid/string/multiline.toml",
                 "valid/datetime/datetime.toml", "valid/float/exponent.toml",
                 "valid/table/array-nest.toml", "invalid/table/duplicate.toml",
                 "invalid/string/bad-escape.toml"):
        p = os.path.join(TESTDATA, "toml-test", name)
        if os.path.exists(p):
            put("toml", name.replace("/", "-"), open(p, "rb").read())

    put("http_request", "metrics", "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer abc\r\n\r\n")
    put("http_request", "reload", "POST /api/reload HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    put("http_request", "status-1.0", "GET /api/status HTTP/1.0\r\n\r\n")

    for s in ("10.0.0.0/8", "192.168.1.7", "2001:db8::/32", "::ffff:10.0.0.1/128", "0.0.0.0/0", "::/0"):
        put("cidr", s.replace("/", "_").replace(":", "-") or "empty", s)

    # proxy: byte 0 = kind (0 http, 1 http+auth, 2 socks5, 3 socks5+auth) | target << 2
    put("proxy", "http-200", b"\x00HTTP/1.1 200 Connection established\r\n\r\nEXTRA")
    put("proxy", "http-407", b"\x01HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
    put("proxy", "socks5-ok-v4", b"\x02\x05\x00\x05\x00\x00\x01\x7f\x00\x00\x01\x09\x1d")
    put("proxy", "socks5-auth-ok-domain", b"\x0b\x05\x02\x01\x00\x05\x00\x00\x03\x0bexample.com\x09\x1d")
    put("proxy", "socks5-ok-v6", b"\x0a\x05\x00\x05\x00\x00\x04" + b"\x00" * 15 + b"\x01\x09\x1d")

    # ws: byte 0 = mode, byte 1 = flags; masked client frames / unmasked server frames
    req = ("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    masked = b"\x82\x85\x01\x02\x03\x04" + bytes(c ^ m for c, m in zip(b"hello", b"\x01\x02\x03\x04\x01"))
    ping = b"\x89\x80\x00\x00\x00\x00"
    close = b"\x88\x82\x00\x00\x00\x00\x03\xe8"
    put("ws", "server-request-frames", b"\x00\x00" + req + masked + ping + close)
    put("ws", "server-frames", b"\x01\x02" + masked + b"\x02\x83\x00\x00\x00\x00abc" + b"\x80\x81\x00\x00\x00\x00d" + close)
    put("ws", "client-bad-answer", b"\x02\x00HTTP/1.1 403 Forbidden\r\n\r\n")
    # flag 8: padded with 'x' to the client's whole receive buffer (issue 23)
    put("ws", "client-answer-fills-buffer", b"\x02\x08HTTP/1.1 403 Forbidden\r\n\r\n")
    put("ws", "client-frames", b"\x03\x06" + b"\x82\x05hello" + b"\x89\x00" + b"\x82\x7e\x00\x03abc" + b"\x88\x02\x03\xe8")

    # noise: byte 0 = protocol, byte 1 = mode
    for p in range(7):
        put("noise", "mutated-first-%d" % p, bytes([p, 3, 5, 0]) + b"payload")
        put("noise", "records-%d" % p, bytes([p, 2]) + struct.pack("<H", 20) + b"x" * 20 + struct.pack("<H", 3) + b"abc")
        put("noise", "answer-%d" % p, bytes([p, 1]) + b"\x00" * 48)

    # noise_stream: byte 0 = side / raw / XX / answer bits, then records
    for mode in range(16):
        if mode & 2:
            put("noise_stream", "raw-%d" % mode, bytes([mode]) + struct.pack("<H", 48) + b"\x01" * 48)
        else:
            put("noise_stream", "records-%d" % mode,
                bytes([mode]) + b"\x00" + struct.pack("<H", 5) + b"hello" + b"\x00" + struct.pack("<H", 0)
                + b"\x02" + struct.pack("<H", 3) + b"abc")

    # tls13: byte 0 = suite / side / small reads / reply bits, then records
    # (flags, u16 LE length, the inner plaintext: content, type, padding)
    def rec(inner, flags=0):
        return bytes([flags]) + struct.pack("<H", len(inner)) + inner
    ticket = bytes([4, 0, 0, 13]) + struct.pack(">IIB", 7200, 1, 0) + b"\x00\x02ab\x00\x00"
    for mode in (0, 1, 2, 4, 8, 16, 13, 30):
        put("tls13", "data-%d" % mode, bytes([mode]) + rec(b"hello\x17") + rec(b"hi\x17\x00\x00")
            + rec(b"\x01\x00\x15"))
        put("tls13", "tickets-%d" % mode, bytes([mode]) + rec(ticket + b"\x16") + rec(ticket[:6] + b"\x16")
            + rec(ticket[6:] + b"\x16") + rec(b"after\x17"))
        put("tls13", "key-update-%d" % mode, bytes([mode]) + rec(b"\x18\x00\x00\x01\x01\x16")
            + rec(b"more\x17"))
    put("tls13", "alert", b"\x00" + rec(b"\x02\x28\x15"))
    put("tls13", "raw", b"\x00" + rec(b"\x17\x03\x03\x00\x05abcde", 1))
    put("tls13", "flipped", b"\x01" + rec(b"x" * 300 + b"\x17", 2))


if __name__ == "__main__":
    sys.exit(main())
