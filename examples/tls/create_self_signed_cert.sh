#!/bin/sh
# Creates a private CA (rootCA.crt, rootCA.key) and a certificate for the
# server signed by it, packed with its key into identity.pfx (password 1234).
# Usage: ./create_self_signed_cert.sh [hostname]   (default: myserver.com)
set -eu
host=${1:-myserver.com}
days=825
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
	-keyout rootCA.key -out rootCA.crt -subj "/CN=rathole example CA"
openssl req -newkey rsa:2048 -nodes -sha256 \
	-keyout server.key -out server.csr -subj "/CN=$host"
printf 'subjectAltName=DNS:%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$host" > server.ext
openssl x509 -req -in server.csr -CA rootCA.crt -CAkey rootCA.key -CAcreateserial \
	-out server.crt -days "$days" -sha256 -extfile server.ext
openssl pkcs12 -export -out identity.pfx -inkey server.key -in server.crt \
	-certfile rootCA.crt -passout pass:1234
rm -f server.csr server.ext rootCA.srl
echo "identity.pfx (server) and rootCA.crt (client's trusted_root) are ready for $host"
