#!/bin/sh
# Installs every build and test dependency of qrux from Debian bookworm packages.
# Idempotent: when everything is present it only runs dpkg-query and exits.
set -eu

PKGS="build-essential cmake pkg-config git ca-certificates
libngtcp2-dev libngtcp2-crypto-gnutls-dev libnghttp3-dev libnghttp2-dev
libssl-dev libgnutls28-dev libuv1-dev libcyaml-dev node-llhttp
libmicrohttpd-dev libjansson-dev libbpf-dev clang bpftool libcmocka-dev
ngtcp2-client nginx-light chromium curl openssl python3 procps iproute2"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    exit 0
fi

echo "deps: installing:$missing" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >&2
