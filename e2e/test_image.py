#!/usr/bin/env python3
"""The container image, built from the Dockerfile and run as a real container
(CTest label `image`; run on its own, not with the e2e glob).

From a fresh clone: `scripts/image.sh build` debootstraps the two Debian base
images from the machine's apt mirror, imports them with podman and builds the
Dockerfile with buildah (storage in QRUX_IMAGE_ROOT, the build tree). Then:

- the image: user 65532:65532, the three exposed ports, the OCI labels, no
  HEALTHCHECK, at most 90 MB uncompressed, every library `ldd` needs present
  and each package of deps.sh's runtime set owning one of them,
  `qrux --help` / `--version`, `qrux xdp --help` and `qrux inject --help` in
  the same image; a key only root can read is refused by `qrux check` there;
- one container run the way the README says (host network, read-only root
  without podman's tmpfs mounts on /tmp and /run, all capabilities dropped,
  no-new-privileges, memory and pids limits, the config directory and the key
  mounted read-only, the key 0400 owned by 65532) with e2e/backend.py on the
  host's loopback behind it: the process runs as uid 65532 with no
  capabilities and NoNewPrivs (read from /proc), its root and both mounts are
  read-only, the key is 0400 owned by 65532:65532 inside,
  /readyz is 200, HTTP/3 with gtlsclient and HTTPS h2 with curl (Alt-Svc
  advertising h3) return the exact bytes, a config change in the mounted
  directory (written the way the kubelet writes a ConfigMap) is applied,
  `podman stop` drains (/readyz 503, an in-flight download completes) and the
  container exits 0;
- afterwards nothing of it runs, nothing is mounted under the state
  directory, and its cgroups are gone.

The images stay in the storage as the build's cache (a second run builds
from it in seconds): the base images, qrux:test and the build stage tagged
qrux-build:cache; what older builds left there is pruned by the build (no
dangling image afterwards). `scripts/image.sh clean` removes them all.
"""

import hashlib
import json
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Cert, Env, free_port, http_get, need, pattern_sha256,  # noqa: E402
                     render_config, run, tcp_port_free, wait_until)
from test_admin import admin_yaml  # noqa: E402
from test_reload import AtomicDir  # noqa: E402

SRC = os.environ.get("QRUX_SRC") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = "localhost/qrux:test"
IMAGE_SH = os.path.join(SRC, "scripts", "image.sh")
SIZE_BUDGET = 90 * 1000 * 1000  # bytes, as podman counts MB
UID = 65532
NAME = "qx-image-test-%d" % os.getpid()  # machine-unique: our pid


def image_env():
    """os.environ plus CONTAINERS_CONF / CONTAINERS_STORAGE_CONF of the
    state directory, as `scripts/image.sh env` prints them."""
    rc, out, err = run([IMAGE_SH, "env"], timeout=30)
    if rc != 0:
        raise RuntimeError("image.sh env failed: %s" % err.decode(errors="replace"))
    e = dict(os.environ)
    for line in out.decode().splitlines():
        k, _, v = line.replace("export ", "", 1).partition("=")
        e[k] = v
    return e


ENV = None


def podman(*args, timeout=120):
    rc, out, err = run([need("podman")] + list(args), timeout=timeout, env=ENV)
    return rc, out.decode(errors="replace"), err.decode(errors="replace")


def image_root():
    return os.environ.get("QRUX_IMAGE_ROOT") or os.path.join(SRC, "build", "image")


def mounts_under(root):
    with open("/proc/mounts") as f:
        return [ln.split()[1] for ln in f if ln.split()[1].startswith(root.rstrip("/") + "/")]


def cgroup_dirs(cid):
    out = []
    for base in ("/sys/fs/cgroup",):
        for dirpath, dirnames, _ in os.walk(base):
            for d in dirnames:
                if cid in d:
                    out.append(os.path.join(dirpath, d))
            # libpod_parent sits one or two levels down; do not walk the world
            if dirpath.count("/") > 5:
                dirnames[:] = []
    return out


def remove_container(cid):
    """Removes the container and the cgroups podman made for it (the
    cgroupfs manager leaves libpod_parent/libpod-ID behind)."""
    podman("rm", "-f", "-t", "2", NAME, timeout=60)
    if cid:
        for d in sorted(cgroup_dirs(cid), key=len, reverse=True):
            try:
                os.rmdir(d)
            except OSError:
                pass
    for ctrl in os.listdir("/sys/fs/cgroup"):
        for d in (os.path.join("/sys/fs/cgroup", ctrl, "libpod_parent", "conmon"),
                  os.path.join("/sys/fs/cgroup", ctrl, "libpod_parent")):
            try:
                os.rmdir(d)  # fails (fine) while another user's container runs
            except OSError:
                pass


def sha(b):
    return hashlib.sha256(b).hexdigest()


def curl_h2(env, port, path, timeout=60):
    """GET over HTTPS h2 with curl; returns (rc, http version, status,
    headers dict, body bytes)."""
    out = os.path.join(env.dir, "curl-%d.body" % time.monotonic_ns())
    rc, hdr, err = run([need("curl"), "-sk", "--http2", "-D", "-", "-o", out, "--max-time",
                        str(timeout), "https://localhost:%d%s" % (port, path)],
                       timeout=timeout + 10)
    lines = hdr.decode("latin-1").split("\r\n")
    ver, status = None, None
    if lines and lines[0].startswith("HTTP/"):
        parts = lines[0].split()
        ver, status = parts[0], int(parts[1])
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        if k:
            hdrs[k.strip().lower()] = v.strip()
    body = b""
    if os.path.exists(out):
        with open(out, "rb") as f:
            body = f.read()
        os.unlink(out)
    return rc, ver, status, hdrs, body


def check_image(env):
    rc, out, err = podman("image", "inspect", IMAGE)
    env.eq("image inspect", rc, 0, err)
    info = json.loads(out)[0]
    cfg = info.get("Config") or {}
    env.eq("image user", cfg.get("User"), "%d:%d" % (UID, UID))
    env.eq("exposed ports", sorted((cfg.get("ExposedPorts") or {}).keys()),
           ["8443/tcp", "8443/udp", "9901/tcp"])
    labels = cfg.get("Labels") or {}
    for k in ("source", "version", "licenses"):
        env.check("label org.opencontainers.image.%s" % k,
                  "org.opencontainers.image.%s" % k in labels, labels)
    env.eq("label version", labels.get("org.opencontainers.image.version"),
           open(os.path.join(SRC, "CMakeLists.txt")).read().split("project(qrux VERSION ")[1]
           .split()[0].rstrip(")"))
    env.eq("label licenses", labels.get("org.opencontainers.image.licenses"), "MIT")
    # The source label is the checkout's remote (what scripts/image.sh passes;
    # empty when the checkout has none), and a `docker build` without
    # --build-arg labels the version CMakeLists.txt has.
    rc, remote, _ = run(["git", "-C", SRC, "remote", "get-url", "origin"], timeout=30)
    env.eq("label source: the checkout's origin", labels.get("org.opencontainers.image.source"),
           remote.decode().strip() if rc == 0 else "")
    with open(os.path.join(SRC, "Dockerfile")) as f:
        default = re.search(r"^ARG QRUX_VERSION=(\S+)$", f.read(), re.M)
    env.eq("the Dockerfile's default QRUX_VERSION is CMakeLists.txt's",
           default and default.group(1), labels.get("org.opencontainers.image.version"))
    env.check("no HEALTHCHECK", not cfg.get("Healthcheck") and "Healthcheck" not in info, cfg)
    env.eq("entrypoint", cfg.get("Entrypoint"), ["/usr/local/bin/qrux"])
    env.eq("default command", cfg.get("Cmd"), ["--config", "/etc/qrux/qrux.yaml"])
    size = int(info["Size"])
    print("MEASURED runtime image size %d bytes = %.1f MB (budget %.0f MB)"
          % (size, size / 1e6, SIZE_BUDGET / 1e6), flush=True)
    env.check("image size %.1f MB <= 90 MB" % (size / 1e6), size <= SIZE_BUDGET, size)

    rc, out, err = podman("run", "--rm", "--network=none", "--entrypoint", "ldd", IMAGE,
                          "/usr/local/bin/qrux")
    env.check("ldd: every library present", rc == 0 and "not found" not in out, out + err)
    print("ldd in the image:\n" + out, flush=True)
    # The runtime set of scripts/deps.sh holds only what qrux links: each of
    # its packages owns one of the libraries ldd resolves in the image.
    rc, out, err = podman("run", "--rm", "--network=none", "--entrypoint", "sh", IMAGE, "-c",
                          "for l in $(ldd /usr/local/bin/qrux | awk '/=>/ { print $1 }'); do "
                          "dpkg -S \"*/$l\"; done")
    owners = {ln.split(":")[0] for ln in out.splitlines() if ":" in ln}
    rc2, listed, _ = run([os.path.join(SRC, "scripts", "deps.sh"), "--list", "runtime"], timeout=30)
    runtime = {w.split("/")[0] for w in listed.decode().split()}
    env.check("every package of the runtime set owns a library qrux links",
              rc == 0 and rc2 == 0 and runtime and runtime <= owners,
              (sorted(runtime - owners), sorted(owners), err))

    rc, out, err = podman("run", "--rm", "--network=none", "--read-only", "--cap-drop=all",
                          IMAGE, "--help")
    env.check("qrux --help in the image", rc == 0 and "--config" in out + err, out + err)
    rc, out, err = podman("run", "--rm", "--network=none", IMAGE, "--version")
    env.check("qrux --version in the image", rc == 0 and (out + err).strip(), out + err)
    # The other two roles share the image: each answers --help with its own
    # usage, exit 0.
    for role in ("xdp", "inject"):
        rc, out, err = podman("run", "--rm", "--network=none", "--read-only", "--cap-drop=all",
                              IMAGE, role, "--help")
        env.check("qrux %s --help in the image" % role,
                  rc == 0 and (out + err).lstrip().startswith("usage: qrux %s " % role),
                  (rc, out + err))


def ro_mounts(pid):
    """{mount point: read-only?} of the container's /etc/qrux and
    /etc/qrux-tls, from its /proc/PID/mountinfo."""
    got = {}
    with open("/proc/%d/mountinfo" % pid) as f:
        for ln in f:
            fields = ln.split()
            if fields[4] in ("/etc/qrux", "/etc/qrux-tls"):
                got[fields[4]] = "ro" in fields[5].split(",")
    return got


def check_key_owner(env, tls, conf):
    """The README's key rule, the other way round: a key only root can read
    (0400, owned by 0) is refused by `qrux check` in the image, naming the key;
    the same key owned by 65532 passes."""
    d = os.path.join(env.dir, "cfg-check")
    os.makedirs(d, 0o755)
    with open(os.path.join(d, "qrux.yaml"), "w") as f:
        f.write(conf)
    key = os.path.join(tls, "key.pem")
    args = ["run", "--rm", "--network=none", "--read-only", "--cap-drop=all",
            "--security-opt=no-new-privileges", "-v", "%s:/etc/qrux:ro" % d,
            "-v", "%s:/etc/qrux-tls:ro" % tls, IMAGE, "check", "--config", "/etc/qrux/qrux.yaml"]
    os.chown(key, 0, 0)
    try:
        rc, out, err = podman(*args)
    finally:
        os.chown(key, UID, UID)
    env.check("key 0400 owned by root: qrux check refuses it (exit 2, Permission denied)",
              rc == 2 and "/etc/qrux-tls/key.pem: Permission denied" in out + err,
              (rc, out + err))
    rc, out, err = podman(*args)
    env.eq("key 0400 owned by 65532: qrux check passes", rc, 0, out + err)


def proc_status(pid):
    st = {}
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            k, _, v = ln.partition(":")
            st[k] = v.split()
    return st


def main(env):
    global ENV
    t0 = time.monotonic()
    rc, out, err = run([IMAGE_SH, "build"], timeout=2400)
    built = time.monotonic() - t0
    print("MEASURED scripts/image.sh build took %.0f s" % built, flush=True)
    if not env.check("scripts/image.sh build", rc == 0, (out + err).decode(errors="replace")):
        return
    ENV = image_env()
    # A second build with nothing changed is all cache hits and leaves the
    # image as it was.
    _, id1, _ = podman("image", "inspect", "--format", "{{.Id}}", IMAGE)
    rc, out, err = run([IMAGE_SH, "build"], timeout=600)
    _, id2, _ = podman("image", "inspect", "--format", "{{.Id}}", IMAGE)
    env.check("second build: same image from the cache", rc == 0 and id1 == id2 and id1,
              (id1, id2, err.decode(errors="replace")[-2000:]))
    # What earlier builds left (an older checkout's untagged layers) is
    # pruned; the build stage's cache is kept under its own tag.
    rc, out, err = podman("images", "-q", "--filter", "dangling=true")
    env.eq("no dangling images in the storage after the build", (rc, out.split()), (0, []), err)
    rc, out, err = podman("image", "exists", "localhost/qrux-build:cache")
    env.eq("build stage tagged localhost/qrux-build:cache", rc, 0, err)

    check_image(env)

    # -- the container ---------------------------------------------------
    be1 = env.backend()
    be2 = env.backend()
    port = free_port("udp")  # UDP and TCP on the same number: free for both
    while not tcp_port_free(port):
        port = free_port("udp")
    admin = free_port("tcp")
    tls = os.path.join(env.dir, "tls")
    os.makedirs(tls, 0o755)
    c = Cert(tls)
    os.chmod(tls, 0o755)
    os.chown(c.key, UID, UID)
    os.chmod(c.key, 0o400)
    os.chmod(c.cert, 0o444)

    def conf(upstream):
        return render_config(port, "/etc/qrux-tls/cert.pem", "/etc/qrux-tls/key.pem",
                             [("*", upstream)], workers=2,
                             extra_server='  https_listen: "[::]:%d"\n  drain_delay_secs: 2\n'
                             % port + admin_yaml(admin))

    check_key_owner(env, tls, conf(be1.addr))

    cfgdir = os.path.join(env.dir, "cfg")
    cm = AtomicDir(cfgdir, {"qrux.yaml": conf(be1.addr)})
    os.chmod(cfgdir, 0o755)

    cid = None
    try:
        rc, out, err = podman(
            "run", "-d", "--name", NAME, "--network=host", "--read-only", "--read-only-tmpfs=false",
            "--cap-drop=all",
            "--security-opt=no-new-privileges", "--memory=256m", "--pids-limit=128",
            "-v", "%s:/etc/qrux:ro" % cfgdir, "-v", "%s:/etc/qrux-tls:ro" % tls, IMAGE)
        if not env.check("podman run", rc == 0, out + err):
            return
        cid = out.strip()
        ready = wait_until(lambda: _code(admin, "/readyz") == 200, 60, 0.2)
        if not env.check("/readyz 200 from the container", ready,
                         podman("logs", NAME)[1:]):
            return

        _, pid, _ = podman("inspect", "--format", "{{.State.Pid}}", NAME)
        pid = int(pid.strip())
        st = proc_status(pid)
        with open("/proc/%d/comm" % pid) as f:
            env.eq("the container's process is qrux", f.read().strip(), "qrux")
        env.eq("runs as uid 65532 (real, effective, saved, fs)", st["Uid"], [str(UID)] * 4)
        env.eq("runs as gid 65532", st["Gid"], [str(UID)] * 4)
        env.eq("no effective capabilities", st["CapEff"], ["0000000000000000"])
        env.eq("empty capability bounding set", st["CapBnd"], ["0000000000000000"])
        env.eq("no-new-privileges", st["NoNewPrivs"], ["1"])
        rc, out, err = podman("exec", "--user", "0", NAME, "/bin/sh", "-c",
                              "echo x > /qx-probe")
        env.check("root filesystem is read-only (even for uid 0)",
                  rc != 0 and "Read-only file system" in out + err, (rc, out + err))
        # The config and TLS directories are read-only mounts, and the key is
        # seen inside as the README says: 0400, owned by 65532:65532.
        env.eq("read-only mounts /etc/qrux and /etc/qrux-tls", ro_mounts(pid),
               {"/etc/qrux": True, "/etc/qrux-tls": True})
        rc, out, err = podman("exec", NAME, "stat", "-c", "%a %u:%g", "/etc/qrux-tls/key.pem")
        env.eq("key in the container: mode 0400, owner 65532:65532", (rc, out.strip()),
               (0, "400 %d:%d" % (UID, UID)), err)

        # HTTP/3 with gtlsclient
        r = env.gtls(port, "/bytes/100000")
        env.eq("h3 GET /bytes/100000 status", r.status(), 200, r.summary())
        env.eq("h3 body bytes", r.sha("100000"), pattern_sha256(100000))

        # HTTPS h2 with curl, Alt-Svc present
        rc, ver, status, hdrs, body = curl_h2(env, port, "/bytes/50000")
        env.eq("h2 GET status", (rc, ver, status), (0, "HTTP/2", 200), hdrs)
        env.eq("h2 body bytes", sha(body), pattern_sha256(50000))
        env.check("h2 answer has Alt-Svc h3", 'h3=":%d"' % port in hdrs.get("alt-svc", ""),
                  hdrs)

        # A config change in the mounted directory (kubelet-style swap).
        rc, ver, status, hdrs, body = curl_h2(env, port, "/id")
        env.eq("before the change: served by backend 1", (status, body),
               (200, str(be1.port).encode()))
        cm.update({"qrux.yaml": conf(be2.addr)})
        moved = wait_until(lambda: curl_h2(env, port, "/id")[4] == str(be2.port).encode(), 30,
                           0.2)
        env.check("config change in the mounted directory applied (h2)", moved,
                  podman("logs", "--tail", "20", NAME)[1:])
        r = env.gtls(port, "/id")
        env.eq("after the change: h3 served by backend 2", (r.status(), r.body("id")),
               (200, str(be2.port).encode()), r.summary())
        env.eq("/readyz still 200", _code(admin, "/readyz"), 200)

        # podman stop drains: /readyz 503, an in-flight download completes,
        # exit code 0.
        n = 60 * 1024
        box = {}

        def slow():
            box["r"] = curl_h2(env, port, "/slow/%d?ms=50&chunk=1024" % n, timeout=60)

        t = threading.Thread(target=slow)
        t.start()
        # The download is under way (60 chunks, 50 ms apart) before the stop.
        inflight = wait_until(lambda: be2.stats()["inflight"], 20, 0.05)
        env.check("slow download in flight before the stop", inflight)
        stopper = threading.Thread(
            target=lambda: box.setdefault("stop", podman("stop", "-t", "60", NAME, timeout=90)))
        stopper.start()
        saw503 = wait_until(lambda: _code(admin, "/readyz") == 503, 10, 0.05)
        env.check("during podman stop: /readyz 503", saw503)
        t.join(90)
        stopper.join(100)
        rc, ver, status, hdrs, body = box.get("r", (None,) * 5)
        env.eq("in-flight download completes during the drain", (rc, status, sha(body or b"")),
               (0, 200, pattern_sha256(n)))
        env.eq("podman stop", (box.get("stop") or (None,))[0], 0, box.get("stop"))
        _, state, _ = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
                             NAME)
        env.eq("container exited with 0", state.strip(), "exited 0",
               podman("logs", "--tail", "20", NAME)[1:])
    finally:
        remove_container(cid)

    # Nothing left behind.
    rc, out, _ = podman("ps", "-a", "--format", "{{.Names}}")
    env.check("no container left", rc == 0 and NAME not in out, out)
    left = mounts_under(image_root())
    env.check("nothing mounted under %s" % image_root(), not left, left)
    if cid:
        env.check("container cgroups removed", not cgroup_dirs(cid), cgroup_dirs(cid))


def _code(port, path):
    try:
        return http_get(port, path, timeout=2)[0]
    except OSError:
        return None


if __name__ == "__main__":
    with Env("image") as env:
        env.case("container image", main, env)
