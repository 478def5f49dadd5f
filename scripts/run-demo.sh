#!/usr/bin/env bash
# `make run`: runs qrux on a working default, after `make build`.
#
# In build/demo/ (created on first run; what is there is kept):
#   cert.pem, key.pem  self-signed EC P-256 certificate for localhost,
#                      127.0.0.1 and ::1 (regenerated when missing or expiring)
#   nginx/             the demo backend: nginx on 127.0.0.1:8080 serving
#                      scripts/demo/index.html, configured by scripts/demo/nginx.conf
#   qrux.yaml          written when missing, never overwritten (edit it freely;
#                      delete it to get the default back): HTTP/3 on UDP
#                      "[::]:8443", the HTTPS fallback (HTTP/2, HTTP/1.1) on TCP
#                      "[::]:8443", the admin server on 127.0.0.1:9901,
#                      drain_delay_secs 0 (Ctrl-C is quick), one route
#                      "*" -> 127.0.0.1:8080
# then prints the commands that fetch the page (HTTP/3, HTTPS, admin) and
# runs qrux. Ctrl-C stops qrux and the backend.
#
# QRUX_CONFIG=path runs qrux with that config instead; the demo backend is
# started too when that config routes to it (127.0.0.1:8080). No certificate
# is made for it.
#
# The script owns what it starts: when it ends, or when its parent (make) goes
# away without it, qrux and nginx stop with it (a trap, and the parent-death
# signal set with setpriv), so nothing is left holding the ports.
#
# For tests: QRUX_BIN, QRUX_DEMO_DIR, QRUX_DEMO_BACKEND_PORT, QRUX_DEMO_PORT
# and QRUX_DEMO_ADMIN_PORT override the binary, the folder and the ports.
set -euo pipefail

# Die with the parent: setpriv sets PR_SET_PDEATHSIG, which survives exec.
if [ -z "${QRUX_DEMO_OWNED:-}" ] && command -v setpriv >/dev/null 2>&1; then
    export QRUX_DEMO_OWNED=1
    exec setpriv --pdeathsig TERM -- "$BASH" "$0" "$@"
fi

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$src/build
qrux=${QRUX_BIN:-$build/qrux}
run=${QRUX_DEMO_DIR:-$build/demo}
backend_host=127.0.0.1
backend_port=${QRUX_DEMO_BACKEND_PORT:-8080}
quic_port=${QRUX_DEMO_PORT:-8443}
https_port=$quic_port # TCP: the same number as the QUIC port, as Alt-Svc suggests
admin_port=${QRUX_DEMO_ADMIN_PORT:-9901}

die()
{
    echo "run-demo: $*" >&2
    exit 1
}

port_open()
{
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# Runs a command as our child with the parent-death signal set.
owned()
{
    if command -v setpriv >/dev/null 2>&1; then
        setpriv --pdeathsig TERM -- "$@"
    else
        "$@"
    fi
}

[ -x "$qrux" ] || die "$qrux is not built (run: make build)"

# --- the processes we own ----------------------------------------------------
nginx_pid=""
qrux_pid=""
cleanup()
{
    trap - EXIT INT TERM HUP
    if [ -n "$qrux_pid" ]; then
        kill -TERM "$qrux_pid" 2>/dev/null || true
        wait "$qrux_pid" 2>/dev/null || true
    fi
    if [ -n "$nginx_pid" ]; then
        kill "$nginx_pid" 2>/dev/null || true
        wait "$nginx_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# Runs qrux as our child and waits for it; a signal to this script reaches
# qrux through cleanup(). Exits with qrux's code.
run_qrux()
{
    owned "$qrux" --config "$1" &
    qrux_pid=$!
    local rc=0
    wait "$qrux_pid" || rc=$?
    qrux_pid=""
    exit "$rc"
}

nginx=$(command -v nginx || true)
# /usr/sbin is not on a normal user's PATH on Debian.
[ -n "$nginx" ] || nginx=/usr/sbin/nginx

start_nginx()
{
    [ -x "$nginx" ] || die "nginx not found (run: scripts/deps.sh run)"
    if port_open "$backend_host" "$backend_port"; then
        die "something already listens on $backend_host:$backend_port; stop it, or run your own" \
            "config with QRUX_CONFIG=path make run"
    fi
    local ngx=$run/nginx
    mkdir -p "$ngx/html" "$ngx/tmp"
    sed "s/127\.0\.0\.1:8080/$backend_host:$backend_port/g" "$src/scripts/demo/index.html" \
        >"$ngx/html/index.html"
    sed "s/127\.0\.0\.1:8080/$backend_host:$backend_port/g" "$src/scripts/demo/nginx.conf" \
        >"$ngx/nginx.conf"
    owned "$nginx" -p "$ngx/" -c "$ngx/nginx.conf" -e stderr &
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
}

mkdir -p "$run"

# --- a config of the user's --------------------------------------------------
if [ -n "${QRUX_CONFIG:-}" ]; then
    [ -r "$QRUX_CONFIG" ] || die "QRUX_CONFIG=$QRUX_CONFIG: cannot read the file"
    if grep -q "$backend_host:$backend_port\b" "$QRUX_CONFIG"; then
        echo "run-demo: $QRUX_CONFIG routes to $backend_host:$backend_port: starting the demo backend" >&2
        start_nginx
    else
        echo "run-demo: $qrux --config $QRUX_CONFIG (no route to the demo backend: not started)" >&2
    fi
    run_qrux "$QRUX_CONFIG"
fi

# --- certificate -------------------------------------------------------------
# Kept between runs so a browser's pinned SPKI hash stays valid; replaced
# when it is missing, unreadable or expires within a day.
command -v openssl >/dev/null || die "openssl not found (run: scripts/deps.sh run)"
cert=$run/cert.pem
key=$run/key.pem
if ! openssl x509 -checkend 86400 -noout -in "$cert" >/dev/null 2>&1 || [ ! -s "$key" ]; then
    echo "run-demo: generating a self-signed certificate in $run" >&2
    "$src/scripts/make-cert.sh" "$cert" "$key" || die "openssl could not generate the certificate"
fi
# Chromium's --ignore-certificate-errors-spki-list takes the base64 SHA-256
# of the certificate's SubjectPublicKeyInfo.
spki=$(openssl x509 -in "$cert" -pubkey -noout | openssl pkey -pubin -outform der |
    openssl dgst -sha256 -binary | openssl base64 -A)

# --- qrux config -------------------------------------------------------------
cfg=$run/qrux.yaml
if [ -e "$cfg" ]; then
    echo "run-demo: using $cfg as it is (delete it to get the default back)" >&2
else
    cat >"$cfg" <<EOF
# Written by scripts/run-demo.sh when missing; yours to edit (qrux applies a
# valid change at once). Delete it to get this default back.
# cert/key are relative to this file's folder.
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
fi

# qrux would fail on these too (exit 1); say which port and why first (for
# the ports of the default config).
if grep -q ":$https_port\"" "$cfg" && port_open 127.0.0.1 "$https_port"; then
    die "TCP port $https_port (the HTTPS listener) is taken; stop what listens there"
fi
if grep -q ":$admin_port\"" "$cfg" && port_open 127.0.0.1 "$admin_port"; then
    die "127.0.0.1:$admin_port (the admin server) is taken; stop what listens there"
fi

# --- demo backend ------------------------------------------------------------
start_nginx
ngx=$run/nginx

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

run_qrux "$cfg"
