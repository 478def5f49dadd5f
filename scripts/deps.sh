#!/bin/sh
# Installs every build and test dependency of qrux from Debian bookworm packages.
# Idempotent and fast: when everything is present it runs one dpkg-query and
# exits, so `make run` and `make test` can call it every time.
set -eu

# Build: compiler, CMake, the libraries of ARCHITECTURE.md ("Libraries").
# Test peers: ngtcp2's gtlsclient, nginx as backend, Chromium, curl; for the HTTPS
# listener h2load (nghttp2-client), slowhttptest (slowloris) and testssl.sh.
# Demo (`make run`): openssl for the self-signed certificate, nginx-light.
# Benchmark (`make bench`): Caddy (the peer proxy), valgrind and linux-perf (profiles).
PKGS="build-essential cmake pkg-config git ca-certificates
libngtcp2-dev libngtcp2-crypto-gnutls-dev libnghttp3-dev libnghttp2-dev
libssl-dev libgnutls28-dev libuv1-dev libcyaml-dev node-llhttp
libmicrohttpd-dev libjansson-dev libbpf-dev clang clang-format bpftool libcmocka-dev
ngtcp2-client nginx-light chromium curl openssl python3 procps iproute2 prometheus
nghttp2-client slowhttptest testssl.sh caddy valgrind linux-perf"

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "deps: dpkg-query not found; qrux builds on Debian bookworm (install the packages listed in $0 by hand)" >&2
    exit 1
fi

# One dpkg-query for all packages; unknown ones print nothing on stdout.
# shellcheck disable=SC2086
installed=$(dpkg-query -W -f='${Package} ${Status}\n' $PKGS 2>/dev/null |
    awk '$NF == "installed" && $(NF-1) == "ok" { printf " %s ", $1 }' || true)

missing=""
for p in $PKGS; do
    case "$installed" in
    *" $p "*) ;;
    *) missing="$missing $p" ;;
    esac
done

if [ -z "$missing" ]; then
    exit 0
fi

echo "deps: installing:$missing" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "deps: not root and no sudo; as root run: apt-get install$missing" >&2
        exit 1
    fi
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >&2
