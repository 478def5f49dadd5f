#!/usr/bin/env bash
# `make run`: runs qrux on a working default, after `make build`.
#
# In build/demo/ (created on first run, kept between runs):
#   cert.pem, key.pem  self-signed EC P-256 certificate for localhost,
#                      127.0.0.1 and ::1 (regenerated when missing or expiring)
#   nginx/             the demo backend: nginx on 127.0.0.1:8080 serving
#                      scripts/demo/index.html, configured by scripts/demo/nginx.conf
#   qrux.yaml          HTTP/3 on UDP "[::]:8443", the HTTPS fallback (HTTP/2,
#                      HTTP/1.1) on TCP "[::]:8443", the admin server on
#                      127.0.0.1:9901, drain_delay_secs 0 (Ctrl-C is quick),
#                      one route "*" -> 127.0.0.1:8080
# then prints the commands that fetch the page (HTTP/3, HTTPS, admin) and
# runs qrux in the foreground. Ctrl-C stops qrux and the backend.
#
# QRUX_CONFIG=path runs qrux with that config instead, without the demo
# backend or certificate.
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$src/build
qrux=$build/qrux
run=$build/demo
backend_host=127.0.0.1
backend_port=8080
quic_port=8443
https_port=8443 # TCP: the same number as the QUIC port, as Alt-Svc suggests
admin_port=9901

die()
{
    echo "run-demo: $*" >&2
    exit 1
}

[ -x "$qrux" ] || die "$qrux is not built (run: make build)"

if [ -n "${QRUX_CONFIG:-}" ]; then
    [ -r "$QRUX_CONFIG" ] || die "QRUX_CONFIG=$QRUX_CONFIG: cannot read the file"
    echo "run-demo: $qrux --config $QRUX_CONFIG (QRUX_CONFIG set: no demo backend)" >&2
    exec "$qrux" --config "$QRUX_CONFIG"
fi

command -v openssl >/dev/null || die "openssl not found (run: scripts/deps.sh)"
nginx=$(command -v nginx || true)
# /usr/sbin is not on a normal user's PATH on Debian.
[ -n "$nginx" ] || nginx=/usr/sbin/nginx
[ -x "$nginx" ] || die "nginx not found (run: scripts/deps.sh)"

mkdir -p "$run"

# --- certificate -------------------------------------------------------------
# Kept between runs so a browser's pinned SPKI hash stays valid; replaced
# when it is missing, unreadable or expires within a day.
cert=$run/cert.pem
key=$run/key.pem
if ! openssl x509 -checkend 86400 -noout -in "$cert" >/dev/null 2>&1 || [ ! -s "$key" ]; then
    echo "run-demo: generating a self-signed certificate in $run" >&2
    # -config /dev/null: only the extensions given here (Debian's openssl.cnf
    # would mark the certificate as a CA).
    (
        umask 077
        openssl req -x509 -config /dev/null -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout "$key.tmp" -out "$cert.tmp" -days 365 -subj "/CN=localhost" \
            -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
            -addext "basicConstraints=critical,CA:FALSE" \
            -addext "keyUsage=critical,digitalSignature" \
            -addext "extendedKeyUsage=serverAuth" 2>/dev/null
    ) || die "openssl could not generate the certificate"
    chmod 644 "$cert.tmp"
    mv "$key.tmp" "$key"
    mv "$cert.tmp" "$cert"
fi
# Chromium's --ignore-certificate-errors-spki-list takes the base64 SHA-256
# of the certificate's SubjectPublicKeyInfo.
spki=$(openssl x509 -in "$cert" -pubkey -noout | openssl pkey -pubin -outform der |
    openssl dgst -sha256 -binary | openssl base64 -A)

# --- demo backend ------------------------------------------------------------
port_open()
{
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

if port_open "$backend_host" "$backend_port"; then
    die "something already listens on $backend_host:$backend_port; stop it, or run your own" \
        "config with QRUX_CONFIG=path make run"
fi

# qrux would fail on these too (exit 1); say which port and why first.
if port_open 127.0.0.1 "$https_port"; then
    die "TCP port $https_port (the HTTPS listener) is taken; stop what listens there"
fi
if port_open 127.0.0.1 "$admin_port"; then
    die "127.0.0.1:$admin_port (the admin server) is taken; stop what listens there"
fi

ngx=$run/nginx
mkdir -p "$ngx/html" "$ngx/tmp"
cp "$src/scripts/demo/index.html" "$ngx/html/index.html"

nginx_pid=""
cleanup()
{
    if [ -n "$nginx_pid" ]; then
        kill "$nginx_pid" 2>/dev/null || true
        wait "$nginx_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

"$nginx" -p "$ngx/" -c "$src/scripts/demo/nginx.conf" -e stderr &
nginx_pid=$!

for _ in $(seq 50); do
    port_open "$backend_host" "$backend_port" && break
    kill -0 "$nginx_pid" 2>/dev/null || break
    sleep 0.1
done
if ! port_open "$backend_host" "$backend_port"; then
    tail -n 5 "$ngx/error.log" >&2 2>/dev/null || true
    die "the demo backend (nginx) did not start; see $ngx/error.log"
fi

# --- qrux config -------------------------------------------------------------
cfg=$run/qrux.yaml
cat >"$cfg" <<EOF
# Written by scripts/run-demo.sh on every \`make run\`: edit a copy and run it
# with QRUX_CONFIG=path make run. cert/key are relative to this file's folder.
server:
  listen: "[::]:$quic_port"              # HTTP/3, UDP
  https_listen: "[::]:$https_port"       # HTTPS fallback (h2, http/1.1), TCP
  cert: "cert.pem"
  key: "key.pem"
  drain_delay_secs: 0                    # demo: Ctrl-C stops at once (default 5)
routes:
  - match: "*"
    upstream: "$backend_host:$backend_port"
admin:
  listen: "127.0.0.1:$admin_port"        # probes, /metrics, /routes
EOF

sandbox=""
[ "$(id -u)" = 0 ] && sandbox=" --no-sandbox"
mkdir -p "$run/download"

cat <<EOF

qrux demo
  backend  nginx on http://$backend_host:$backend_port/ (files in $ngx)
  config   $cfg
  cert     $cert (self-signed: localhost, 127.0.0.1, ::1)

Fetch the page over HTTP/3 from another terminal with ngtcp2's client (it
prints the handshake, the response headers and the body as a hex dump):

  gtlsclient --exit-on-all-streams-close localhost $quic_port https://localhost:$quic_port/

or quietly, saving the page:

  gtlsclient -q --exit-on-all-streams-close --download=$run/download localhost $quic_port https://localhost:$quic_port/ && cat $run/download/index.html

or with Chromium (its own profile, so the flags apply even if Chromium is open;
add --headless --dump-dom without a display):

  chromium$sandbox --user-data-dir=$run/chromium --origin-to-force-quic-on=localhost:$quic_port --ignore-certificate-errors-spki-list=$spki https://localhost:$quic_port/

Over HTTPS (TCP) with curl; every answer carries Alt-Svc: h3=":$quic_port":

  curl -k --http2 https://localhost:$https_port/
  curl -k --http1.1 -i https://localhost:$https_port/headers

The admin server (Prometheus metrics, probes, the route table):

  curl http://127.0.0.1:$admin_port/metrics
  curl http://127.0.0.1:$admin_port/readyz
  curl http://127.0.0.1:$admin_port/routes

Edit $cfg while qrux runs: a valid change is applied at
once, an invalid one is logged and the running config stays.

Ctrl-C stops qrux and the backend.

EOF

"$qrux" --config "$cfg"
