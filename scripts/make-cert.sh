#!/bin/sh
# make-cert.sh CERT KEY [NAME...]: a self-signed EC P-256 certificate for
# localhost, 127.0.0.1 and ::1 (and each NAME given, as a DNS name), valid a
# year, written to CERT and KEY (the key mode 0600). Used by `make run`
# (scripts/run-demo.sh) and scripts/example-secrets.sh.
set -eu
[ $# -ge 2 ] || {
    echo "usage: $0 CERT KEY [DNS-NAME...]" >&2
    exit 2
}
cert=$1
key=$2
shift 2
san="DNS:localhost,IP:127.0.0.1,IP:::1"
for n in "$@"; do san="$san,DNS:$n"; done
# -config /dev/null: only the extensions given here (Debian's openssl.cnf
# would mark the certificate as a CA).
(
    umask 077
    openssl req -x509 -config /dev/null -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$key.tmp" -out "$cert.tmp" -days 365 -subj "/CN=localhost" \
        -addext "subjectAltName=$san" \
        -addext "basicConstraints=critical,CA:FALSE" \
        -addext "keyUsage=critical,digitalSignature" \
        -addext "extendedKeyUsage=serverAuth" 2>/dev/null
)
chmod 644 "$cert.tmp"
mv "$key.tmp" "$key"
mv "$cert.tmp" "$cert"
