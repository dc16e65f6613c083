#!/usr/bin/python3
"""Expected bytes for the KeyUpdate known-answer tests of tests/unit/test_tls13.c.

RFC 8448 has no KeyUpdate; these follow RFC 8446 (7.1 HKDF-Expand-Label, 7.2
"traffic upd", 7.3 key and iv, 5.2-5.3 the record and its nonce) from the
application traffic secrets of RFC 8448, section 3, with Python's hmac and
the cryptography package's AES-GCM: an implementation apart from src/tls13.c.
Run it to print the vectors; it first checks itself against RFC 8448's own
application data records."""
import hashlib
import hmac

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def h(s):
    return bytes.fromhex(s.replace(" ", "").replace("\n", ""))


def expand_label(secret, label, length):
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + b"\x00"
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


def seal(secret, seq, content_type, plaintext):
    key, iv = expand_label(secret, b"key", 16), expand_label(secret, b"iv", 12)
    nonce = bytes(a ^ b for a, b in zip(iv, seq.to_bytes(12, "big")))
    inner = plaintext + bytes([content_type])
    header = bytes([23, 3, 3]) + (len(inner) + 16).to_bytes(2, "big")
    return header + AESGCM(key).encrypt(nonce, inner, header)


CLIENT_0 = h("9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5")
SERVER_0 = h("a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643")
PAYLOAD = bytes(range(50))
# RFC 8448, section 3: {client} send application_data record (seq 0)
C_APP = h("""17 03 03 00 43 a2 3f 70 54 b6 2c 94 d0 af fa fe 82 28 ba 55 cb ef ac ea
42 f9 14 aa 66 bc ab 3f 2b 98 19 a8 a5 b4 6b 39 5b d5 4a 9a 20 44 1e 2b
62 97 4e 1f 5a 62 92 a2 97 70 14 bd 1e 3d ea e6 3a ee bb 21 69 49 15 e4""")
assert seal(CLIENT_0, 0, 23, PAYLOAD) == C_APP, "the generator disagrees with RFC 8448"

client_1 = expand_label(CLIENT_0, b"traffic upd", 32)
server_1 = expand_label(SERVER_0, b"traffic upd", 32)
vectors = {
    "client_application_traffic_secret_1": client_1,
    "server_application_traffic_secret_1": server_1,
    # the server's KeyUpdate, update_requested, its record 1 under secret 0
    "S_KEY_UPDATE": seal(SERVER_0, 1, 22, bytes([24, 0, 0, 1, 1])),
    # then the payload, record 0 under the server's secret 1
    "S_APP_1": seal(server_1, 0, 23, PAYLOAD),
    # the client's KeyUpdate, update_not_requested, its record 1 under secret 0
    "C_KEY_UPDATE": seal(CLIENT_0, 1, 22, bytes([24, 0, 0, 1, 0])),
    # then the payload, record 0 under the client's secret 1
    "C_APP_1": seal(client_1, 0, 23, PAYLOAD),
}
for name, value in vectors.items():
    print(name, len(value))
    hexs = value.hex()
    for i in range(0, len(hexs), 64):
        print('\t"' + hexs[i:i + 64] + '"')
