#!/bin/sh
# Builds qrux's container image without a Docker engine or an image registry:
# Debian's debootstrap, podman and buildah, with their storage kept in the
# build tree instead of the machine's /var/lib/containers.
#
#   scripts/image.sh base    debootstraps Debian bookworm from the mirror in the
#                            machine's apt sources and imports it as
#                            docker.io/library/debian:bookworm and a slimmed copy
#                            as ...:bookworm-slim (skipped when both are present)
#   scripts/image.sh build   base if needed, then `buildah bud` of the Dockerfile
#                            into localhost/qrux:test (layers cached: a second
#                            build with nothing changed takes seconds); the
#                            build stage tagged localhost/qrux-build:cache so
#                            its layers stay cached, then the untagged images
#                            of earlier builds pruned
#   scripts/image.sh env     prints the `export CONTAINERS_CONF=...` lines that
#                            point podman and buildah at this storage:
#                            eval "$(scripts/image.sh env)"; podman images
#   scripts/image.sh clean   removes every container, pod and image of this
#                            storage, their cgroups, and the state directory
#
# State lives under ${QRUX_IMAGE_ROOT:-<repo>/build/image}: storage/ (images,
# layers), run/ (runroot), tmp/ (podman's tmp_dir), the two conf files, the
# debootstrap trees. Expect about 1.1 GB there after a build. Needs root.
#
# Why the containers.conf settings: crun fails on this kernel's hybrid cgroup
# layout (runc works, with cgroupfs); the default nofile limit is above the
# hard limit of these machines; journald is not there for events.
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
root=${QRUX_IMAGE_ROOT:-$repo/build/image}
IMAGE=${QRUX_IMAGE:-localhost/qrux:test}
BUILD_CACHE=localhost/qrux-build:cache
BASE=docker.io/library/debian:bookworm
SLIM=docker.io/library/debian:bookworm-slim

die()
{
    echo "image: $*" >&2
    exit 1
}

write_confs()
{
    mkdir -p "$root/storage" "$root/run" "$root/tmp" "$root/networks"
    cat >"$root/storage.conf" <<EOF
# written by scripts/image.sh: qrux's image storage, kept in the build tree
[storage]
driver = "overlay"
graphroot = "$root/storage"
runroot = "$root/run"

[storage.options.overlay]
# no private bind mount of the storage on itself: nothing stays mounted
# under the build tree once the last container is gone
skip_mount_home = "true"
EOF
    cat >"$root/containers.conf" <<EOF
# written by scripts/image.sh (see its header for why each setting)
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$root/tmp/events.log"
tmp_dir = "$root/tmp"

[network]
network_config_dir = "$root/networks"
EOF
}

use_confs()
{
    write_confs
    CONTAINERS_CONF=$root/containers.conf
    CONTAINERS_STORAGE_CONF=$root/storage.conf
    export CONTAINERS_CONF CONTAINERS_STORAGE_CONF
}

# The URI of the first enabled apt source of this machine that carries the
# suite $1 (deb822 .sources stanzas or one-line .list entries): the Debian
# mirror (bookworm) and the security archive (bookworm-security) the images
# then use too. scripts/deps.sh's enable_backports() takes the first Debian
# URI of the same files.
apt_uri_for_suite()
{
    {
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -f "$f" ] || continue
            awk -v s="$1" '
                function flush(  n, i, a) {
                    if (u != "" && en != "no") {
                        n = split(su, a, " ")
                        for (i = 1; i <= n; i++) if (a[i] == s) { print u; break }
                    }
                    u = ""; su = ""; en = ""
                }
                /^[ \t]*$/ { flush(); next }
                /^URIs:/ { u = $2 }
                /^Suites:/ { sub(/^Suites:[ \t]*/, ""); su = $0 }
                /^Enabled:/ { en = $2 }
                END { flush() }' "$f"
        done
        grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
            sed 's/\[[^]]*\]//' | awk -v s="$1" '$3 == s { print $2 }'
    } | head -n 1
}

# The apt settings of this machine that say how to reach its mirror (a proxy;
# a snapshot mirror's expired Release dates), so apt inside the images fetches
# the way the machine's own apt does.
apt_fetch_settings()
{
    apt-config dump | grep -E '^Acquire::(Check-Valid-Until|Check-Date|https?::Proxy) ' || true
}

have_image()
{
    podman image exists "$1" 2>/dev/null
}

# Imports the tree $1 as image $2.
import_tree()
{
    tar -C "$1" --numeric-owner -c . |
        podman import --quiet \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["bash"]' - "$2" >/dev/null
}

cmd_base()
{
    use_confs
    if have_image "$BASE" && have_image "$SLIM"; then
        return 0
    fi
    command -v debootstrap >/dev/null || die "debootstrap not found (scripts/deps.sh test installs it)"
    mirror=$(apt_uri_for_suite bookworm)
    [ -n "$mirror" ] || die "no apt source for Debian bookworm found in /etc/apt"
    security=$(apt_uri_for_suite bookworm-security)
    tree=$root/rootfs
    rm -rf "$tree" "$tree-slim"
    echo "image: debootstrap --variant=minbase bookworm from $mirror" >&2
    debootstrap --variant=minbase bookworm "$tree" "$mirror" >"$root/debootstrap.log" 2>&1 ||
        die "debootstrap failed; see $root/debootstrap.log"

    # apt sources in the deb822 form of Debian's own images (scripts/deps.sh
    # reads the mirror back from them to add bookworm-backports).
    rm -f "$tree/etc/apt/sources.list"
    {
        printf 'Types: deb\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: main\n' "$mirror"
        printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
        if [ -n "$security" ]; then
            printf '\nTypes: deb\nURIs: %s\nSuites: bookworm-security\nComponents: main\n' "$security"
            printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
        fi
    } >"$tree/etc/apt/sources.list.d/debian.sources"
    apt_fetch_settings >"$tree/etc/apt/apt.conf.d/90qrux-machine-fetch"
    # No package caches in image layers.
    printf 'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n' \
        >"$tree/etc/apt/apt.conf.d/90qrux-no-cache"
    rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/cache/apt/*.bin \
        "$tree"/var/lib/apt/lists/* "$tree"/var/log/* "$tree"/tmp/*
    mkdir -p "$tree/var/lib/apt/lists/partial"

    # The slim copy: no documentation, manuals or translations, now and for
    # whatever a later layer installs (dpkg path excludes).
    cp -a "$tree" "$tree-slim"
    cat >"$tree-slim/etc/dpkg/dpkg.cfg.d/90qrux-slim" <<'EOF'
# slim image: keep copyright files, drop other documentation and translations
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
EOF
    find "$tree-slim/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$tree-slim/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$tree-slim"/usr/share/man/* "$tree-slim"/usr/share/info/* \
        "$tree-slim"/usr/share/groff/* "$tree-slim"/usr/share/lintian/* \
        "$tree-slim"/usr/share/locale/*

    import_tree "$tree" "$BASE"
    import_tree "$tree-slim" "$SLIM"
    rm -rf "$tree" "$tree-slim"
    echo "image: imported $BASE and $SLIM" >&2
}

qrux_version()
{
    sed -n 's/^project(qrux VERSION \([0-9.]*\).*/\1/p' "$repo/CMakeLists.txt"
}

cmd_build()
{
    cmd_base
    echo "image: buildah bud -> $IMAGE" >&2
    # Layers cached: when the context did not change, every step is a cache
    # hit. The build stage gets the host network for apt (no CNI needed).
    # --force-rm: a failed step leaves no working container (or its mount).
    buildah bud --pull=never --isolation=chroot --network=host --layers --force-rm \
        --build-arg "QRUX_VERSION=$(qrux_version)" \
        --build-arg "QRUX_SOURCE=$(git -C "$repo" remote get-url origin 2>/dev/null || true)" \
        -t "$IMAGE" -f "$repo/Dockerfile" "$repo" >"$root/build.log" 2>&1 || {
        tail -n 40 "$root/build.log" >&2
        die "buildah bud failed; see $root/build.log"
    }
    # The build stage's last layer gets a tag of its own (all cache hits,
    # seconds): its chain is the compile's cache, which no tag of the final
    # image refers to. Then the prune drops what earlier builds left behind
    # (the untagged chains of an older checkout) and keeps both caches: the
    # storage holds the base images, qrux:test, the build stage and nothing
    # else of ours. `clean` removes everything.
    buildah bud --pull=never --isolation=chroot --network=host --layers --force-rm \
        --target build -t "$BUILD_CACHE" -f "$repo/Dockerfile" "$repo" >>"$root/build.log" 2>&1 || {
        tail -n 40 "$root/build.log" >&2
        die "buildah bud --target build failed; see $root/build.log"
    }
    podman image prune -f >>"$root/build.log" 2>&1 || die "podman image prune failed; see $root/build.log"
    podman image inspect --format '{{.Id}} {{.Size}}' "$IMAGE" |
        awk -v i="$IMAGE" '{ printf "image: built %s (%s, %.1f MB)\n", i, substr($1, 1, 12), $2 / 1e6 }' >&2
}

cmd_env()
{
    write_confs
    echo "export CONTAINERS_CONF=$root/containers.conf"
    echo "export CONTAINERS_STORAGE_CONF=$root/storage.conf"
}

# rmdir the cgroups podman (cgroupfs manager) made for the containers and
# pods whose IDs are given, in every controller hierarchy: libpod-ID for a
# container, ID (with its containers inside) for a pod, children first. Then
# libpod_parent/conmon and libpod_parent themselves when they are empty (they
# are shared with any other podman storage on the machine: rmdir fails while
# another user's container runs, which is fine).
clean_cgroups()
{
    for id in "$@"; do
        for p in /sys/fs/cgroup/*/libpod_parent /sys/fs/cgroup/libpod_parent; do
            [ -d "$p" ] || continue
            find "$p" -mindepth 1 -type d \( -name "$id" -o -name "libpod-$id" \) -prune -print |
                while read -r d; do
                    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
                done
        done
    done
    for d in /sys/fs/cgroup/*/libpod_parent/conmon /sys/fs/cgroup/libpod_parent/conmon \
        /sys/fs/cgroup/*/libpod_parent /sys/fs/cgroup/libpod_parent; do
        if [ -d "$d" ]; then rmdir "$d" 2>/dev/null || true; fi
    done
}

cmd_clean()
{
    if [ ! -d "$root" ]; then
        clean_cgroups
        return 0
    fi
    use_confs
    ids="$(podman ps -aq --no-trunc 2>/dev/null || true) $(podman pod ps -q --no-trunc 2>/dev/null || true)"
    podman pod rm -af -t 5 >/dev/null 2>&1 || true
    podman rm -af -t 5 >/dev/null 2>&1 || true
    buildah rm --all >/dev/null 2>&1 || true
    podman rmi -af >/dev/null 2>&1 || true
    # shellcheck disable=SC2086
    clean_cgroups $ids
    # Anything still mounted below the state directory (overlay layers,
    # shm), deepest first.
    awk -v r="$root/" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    rm -rf "$root"
}

# One build (or clean) at a time per state directory: a second caller waits.
locked()
{
    mkdir -p "$root"
    exec 9>"$root/.lock"
    flock 9
    "$@"
}

case "${1:-}" in
base) locked cmd_base ;;
build) locked cmd_build ;;
env) cmd_env ;;
clean)
    mkdir -p "$root"
    exec 9>"$root/.lock"
    flock 9
    cmd_clean
    ;;
*)
    echo "usage: $0 base|build|env|clean   (state in \${QRUX_IMAGE_ROOT:-<repo>/build/image})" >&2
    exit 2
    ;;
esac
