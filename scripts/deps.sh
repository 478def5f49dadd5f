#!/bin/sh
# Installs qrux's dependencies from Debian bookworm packages (and the few that
# come from Debian's bookworm-backports suite). One source of truth for the
# README's commands, CI and the Dockerfile:
#
#   scripts/deps.sh build   compiler, CMake, the libraries (the Dockerfile's build stage)
#   scripts/deps.sh run     build + what `make run` needs (the demo backend, openssl, gtlsclient)
#   scripts/deps.sh test [BUILD_DIR]   run + every test peer (`make test`, CI);
#                           the default; also unpacks TEST_UNPACK into
#                           BUILD_DIR (default build/, from the source root)
#   scripts/deps.sh bench [BUILD_DIR]  test + the benchmark's peers and profilers (`make bench`)
#   scripts/deps.sh unpack [BUILD_DIR] only TEST_UNPACK (e2e/test_curl_h3.py calls it)
#   scripts/deps.sh runtime only the shared libraries the qrux binary links (the
#                           Dockerfile's slim runtime stage; nothing else needs it)
#   scripts/deps.sh --list SET   prints the packages of SET and exits
#
# Idempotent and fast: when everything is present it runs one dpkg-query and
# exits, so the make targets can call it every time.
set -eu

# Build: the libraries the README names (Set-up, Layout). libyaml-dev:
# Debian's libcyaml-dev does not pull it in but libcyaml.pc links -lyaml.
# python3: CMakeLists.txt finds it (the e2e tests) to configure at all.
# clang and bpftool: the XDP program and its skeleton. Nothing only a test
# needs (cmocka is in the test set: without it CMake builds no unit tests).
BUILD="build-essential cmake pkg-config ca-certificates python3
libnghttp2-dev libssl-dev libgnutls28-dev libuv1-dev libcyaml-dev libyaml-dev node-llhttp
libmicrohttpd-dev libjansson-dev libbpf-dev clang bpftool libc-ares-dev"
# Packages taken from bookworm-backports, each as NAME:MINIMUM_VERSION (an
# older one installed from bookworm is upgraded).
BUILD_BACKPORTS="libngtcp2-dev:1.11.0 libngtcp2-crypto-gnutls-dev:1.11.0 libnghttp3-dev:1.8.0"

# Runtime: the libraries `ldd qrux` shows beyond what debian:bookworm-slim has
# (libgnutls30 is there; named anyway). Keep in step with BUILD's -dev
# packages: a -dev moved to bookworm-backports moves its library here too.
RUNTIME="libnghttp2-14 libgnutls30 libssl3 libuv1 libcyaml1 libyaml-0-2 libmicrohttpd12 libjansson4
libc-ares2 libbpf1"
RUNTIME_BACKPORTS="libngtcp2-16:1.11.0 libngtcp2-crypto-gnutls8:1.11.0 libnghttp3-9:1.8.0"

# Demo (`make run`): nginx-light as the backend, openssl for the self-signed
# certificate, curl and ngtcp2's gtlsclient for the commands it prints.
RUN="nginx-light openssl curl"
RUN_BACKPORTS="ngtcp2-client:1.11.0"

# Test peers: libcmocka-dev (the unit tests), git (scripts/image.sh reads the
# checkout's remote for the image's source label), Chromium, curl, h2load
# (nghttp2-client), slowhttptest (slowloris), testssl.sh, promtool
# (prometheus), python3-h2/hpack (raw HTTP/2), podman/buildah/runc/debootstrap
# (the container image, run for real; catatonit: the pause process of `podman
# kube play`), iproute2 (network namespaces), clang-format, libclang-rt-14-dev
# (libFuzzer and the sanitizer runtimes of clang 14: the build-san tree),
# python3-cryptography (raw QUIC Initials in e2e/quicraw.py), nodejs and unzip
# (the Kubernetes test tools: scripts/k8s-tools.sh), python3-yaml (the chart
# tests read rendered YAML), python3-jsonschema (the Grafana dashboard's
# schema check), dnsmasq-base (the resolver of the DNS tests), gdb (holds one
# worker thread back at its start: e2e/test_startup_held.py),
# python3-websockets (the WebSocket tests' app and client), python3-grpcio and
# python3-grpc-tools (the gRPC app and client of e2e/test_grpc.py, stubs
# generated at test time), python3-pycurl (the HTTP/3 client of
# e2e/test_curl_h3.py, on the libcurl of TEST_UNPACK).
TEST="libcmocka-dev git chromium procps iproute2 prometheus nghttp2-client slowhttptest testssl.sh
python3-h2 python3-hpack podman buildah runc debootstrap catatonit clang-format libclang-rt-14-dev
python3-cryptography nodejs unzip python3-yaml python3-jsonschema dnsmasq-base gdb
python3-websockets python3-grpcio python3-grpc-tools python3-pycurl"
TEST_BACKPORTS=""
# Unpacked, never installed: bookworm-backports packages whose installation
# would upgrade a library the system's programs link. libcurl3-gnutls 8.14 is
# built with ngtcp2/nghttp3 (HTTP/3); bookworm's 7.88 stays the system's
# (git's HTTPS helper links it). `apt-get download` fetches the .deb from the
# mirror apt already uses, `dpkg-deb -x` unpacks it into BUILD_DIR/backports,
# and e2e/test_curl_h3.py loads it through LD_LIBRARY_PATH for its own
# process only. Its other dependencies are bookworm's libraries, installed
# with python3-pycurl (which pulls bookworm's libcurl3-gnutls), and the ngtcp2
# 1.11 / nghttp3 1.8 libraries of BUILD_BACKPORTS. NAME:MINIMUM_VERSION as
# above.
TEST_UNPACK="libcurl3-gnutls:8.14.1"

# Benchmark (`make bench`): Caddy (the peer proxy), valgrind and linux-perf;
# ngtcp2's example server gtlsserver (the QUIC stack alone, serving files).
BENCH="caddy valgrind linux-perf"
BENCH_BACKPORTS="ngtcp2-server:1.11.0"

set_name=${1:-test}
list_only=0
if [ "$set_name" = "--list" ]; then
    list_only=1
    set_name=${2:-test}
fi
build_dir=${2:-build}
UNPACK=""

case "$set_name" in
build)
    PKGS="$BUILD"
    BP="$BUILD_BACKPORTS"
    ;;
run)
    PKGS="$BUILD $RUN"
    BP="$BUILD_BACKPORTS $RUN_BACKPORTS"
    ;;
test)
    PKGS="$BUILD $RUN $TEST"
    BP="$BUILD_BACKPORTS $RUN_BACKPORTS $TEST_BACKPORTS"
    UNPACK="$TEST_UNPACK"
    ;;
bench)
    PKGS="$BUILD $RUN $TEST $BENCH"
    BP="$BUILD_BACKPORTS $RUN_BACKPORTS $TEST_BACKPORTS $BENCH_BACKPORTS"
    UNPACK="$TEST_UNPACK"
    ;;
unpack)
    PKGS=""
    BP=""
    UNPACK="$TEST_UNPACK"
    ;;
runtime)
    PKGS="$RUNTIME"
    BP="$RUNTIME_BACKPORTS"
    ;;
*)
    echo "deps: unknown set '$set_name' (build, run, test, bench, runtime or unpack)" >&2
    exit 2
    ;;
esac

if [ "$list_only" = 1 ]; then
    # shellcheck disable=SC2086
    echo $PKGS
    for e in $BP; do echo "${e%%:*}/bookworm-backports"; done
    for e in $UNPACK; do echo "${e%%:*}/bookworm-backports (unpacked into BUILD_DIR/backports)"; done
    exit 0
fi

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "deps: dpkg-query not found; qrux builds on Debian bookworm (install the packages listed in $0 by hand)" >&2
    exit 1
fi

bp_names=""
for e in $BP; do bp_names="$bp_names ${e%%:*}"; done

# One dpkg-query for all packages; unknown ones print nothing on stdout (and
# none at all for the unpack set: without names it would list every package).
status=""
# shellcheck disable=SC2086
[ -z "$PKGS$bp_names" ] || status=$(dpkg-query -W -f='${Package} ${Version} ${Status}\n' $PKGS $bp_names 2>/dev/null |
    awk '$NF == "installed" && $(NF-1) == "ok" { print $1, $2 }' || true)
installed=$(echo "$status" | awk '{ printf " %s ", $1 }')

missing=""
for p in $PKGS; do
    case "$installed" in
    *" $p "*) ;;
    *) missing="$missing $p" ;;
    esac
done
missing_bp=""
for e in $BP; do
    name=${e%%:*}
    min=${e#*:}
    have=$(echo "$status" | awk -v p="$name" '$1 == p { print $2 }')
    if [ -z "$have" ] || ! dpkg --compare-versions "$have" ge "$min"; then
        missing_bp="$missing_bp $name"
    fi
done

export DEBIAN_FRONTEND=noninteractive

# sudo when not root, found when something has to be installed.
SUDO=""
need_root()
{
    if [ "$(id -u)" != 0 ] && [ -z "$SUDO" ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "deps: not root and no sudo; as root run: $0 $set_name" >&2
            exit 1
        fi
        SUDO="sudo"
    fi
}

# bookworm-backports from the mirror this machine already uses: the first
# Debian URI of its apt sources (deb822 or one-line format). Packages come
# from it only when asked for with -t (its default priority is 100).
# scripts/image.sh finds the mirror for its base images in the same files.
BP_SOURCES=/etc/apt/sources.list.d/qrux-bookworm-backports.sources
enable_backports()
{
    if [ -f "$BP_SOURCES" ] || grep -rqs '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        return 0
    fi
    mirror=$(
        {
            grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{ print $2 }'
            grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
                sed 's/\[[^]]*\]//' | awk '{ print $2 }'
        } | grep -v -e security -e '^$' | head -n 1
    )
    if [ -z "$mirror" ]; then
        echo "deps: no Debian mirror found in the apt sources to take bookworm-backports from" >&2
        exit 1
    fi
    need_root
    echo "deps: enabling bookworm-backports from $mirror ($BP_SOURCES)" >&2
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$mirror" | $SUDO tee "$BP_SOURCES" >/dev/null
}

if [ -n "$missing" ] || [ -n "$missing_bp" ]; then
    need_root
    if [ -n "$missing_bp" ]; then
        enable_backports
    fi
    echo "deps: installing:$missing${missing_bp:+ (bookworm-backports:$missing_bp)}" >&2
    $SUDO apt-get update -qq
    if [ -n "$missing" ]; then
        # shellcheck disable=SC2086
        $SUDO apt-get install -y -qq --no-install-recommends $missing >&2
    fi
    if [ -n "$missing_bp" ]; then
        # shellcheck disable=SC2086
        $SUDO apt-get install -y -qq --no-install-recommends -t bookworm-backports $missing_bp >&2
    fi
fi

[ -n "$UNPACK" ] || exit 0

# UNPACK into BUILD_DIR/backports (relative to the source root). Its .stamp
# lists "NAME VERSION" per package unpacked: when every entry is there at its
# minimum version, nothing else runs (no apt, no network). flock: parallel
# tests may call this at once.
case "$build_dir" in
/*) dest="$build_dir/backports" ;;
*) dest="$(cd "$(dirname "$0")/.." && pwd)/$build_dir/backports" ;;
esac
mkdir -p "$dest"
exec 9>"$dest/.lock"
flock 9
todo=""
for e in $UNPACK; do
    have=$(awk -v p="${e%%:*}" '$1 == p { print $2 }' "$dest/.stamp" 2>/dev/null || true)
    if [ -z "$have" ] || ! dpkg --compare-versions "$have" ge "${e#*:}"; then
        todo="$todo $e"
    fi
done
[ -n "$todo" ] || exit 0

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# apt-get download run by root fetches as the _apt user, which must be able
# to write the directory.
chown _apt "$tmp" 2>/dev/null || true
# The newest bookworm-backports .deb of $1 into $tmp; its file name on stdout.
fetch_deb()
{
    rm -f "$tmp"/*.deb
    (cd "$tmp" && apt-get download -q=2 -t bookworm-backports "$1" >&2) || return 1
    ls "$tmp"/*.deb
}
for e in $todo; do
    name=${e%%:*}
    min=${e#*:}
    deb=$(fetch_deb "$name" || true)
    ver=""
    [ -z "$deb" ] || ver=$(dpkg-deb -f "$deb" Version)
    if [ -z "$ver" ] || ! dpkg --compare-versions "$ver" ge "$min"; then
        # The suite not enabled yet, or stale package lists.
        enable_backports
        need_root
        $SUDO apt-get update -qq
        deb=$(fetch_deb "$name")
        ver=$(dpkg-deb -f "$deb" Version)
    fi
    if ! dpkg --compare-versions "$ver" ge "$min"; then
        echo "deps: bookworm-backports has $name $ver, $min or newer needed" >&2
        exit 1
    fi
    echo "deps: unpacking $name $ver (bookworm-backports) into $dest" >&2
    dpkg-deb -x "$deb" "$dest"
    { grep -v "^$name " "$dest/.stamp" 2>/dev/null || true; echo "$name $ver"; } >"$tmp/stamp"
    cp "$tmp/stamp" "$dest/.stamp"
done
