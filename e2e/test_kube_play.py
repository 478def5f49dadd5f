#!/usr/bin/env python3
"""The injected pod, run: the demo app's Pod passed through `qrux inject`
(the real webhook over HTTPS) and played with its ConfigMap by podman
(`podman kube play`, the image of scripts/image.sh, host network, free
ports). From the host: HTTP/3 (gtlsclient) and HTTPS (curl) reach the app
through the sidecar; the ConfigMap file replaced the kubelet's way (..data
swap) is applied; stopping the pod in the kubelet's order (qrux's preStop
hook and the app's SIGTERM, then qrux's SIGTERM) loses no request in
flight, and both containers exit 0.

What podman 4.3 cannot express, and what the test does instead (said
again in the output):
  - native sidecars (an init container with restartPolicy Always): the
    play fails, so the pod runs with the sidecar as a regular container
    (qrux.io/native-sidecar: "false"); the native patch is checked by
    content and by schema (e2e/test_inject.py does that in depth);
  - Secret volumes: the TLS Secret becomes a hostPath directory laid out
    the kubelet's way;
  - containerPorts on the host network: podman turns them into port
    mappings and refuses them; they are dropped from the played pod;
  - annotation values over 63 bytes (podman applies the label limit): the
    injector's status annotation is kept short for that reason;
  - lifecycle hooks and probes: podman runs no preStop hook and does not
    probe; the test is the kubelet: it execs the preStop command in the
    qrux container and polls /startupz, /readyz, /livez itself;
  - the app image: no image with Python is at hand without a registry, so
    the app container is the Debian base image with the host's /usr mounted
    read-only (same Debian release) running e2e/k8s/drain_app.py.

Everything podman made is removed at the end: the pod, its containers,
volumes and cgroups. Needs root (CI is root).
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "k8s"))
import harness  # noqa: E402
import k8s  # noqa: E402
from harness import Env, free_port, need, run, wait_until  # noqa: E402

IMAGE = "localhost/qrux:test"
BASE = "docker.io/library/debian:bookworm"
PREFIX = "qxk16"  # everything this test makes in podman is named with it


def image_env():
    """Builds the image (fast when cached) and returns the environment that
    points podman at its storage."""
    sh = os.path.join(k8s.SRC, "scripts", "image.sh")
    root = os.environ.get("QRUX_IMAGE_ROOT") or os.path.join(k8s.build_dir(), "image")
    env = dict(os.environ, QRUX_IMAGE_ROOT=root)
    t0 = time.monotonic()
    rc, out, err = run([sh, "build"], timeout=2400, env=env)
    print("MEASURED scripts/image.sh build took %.0f s" % (time.monotonic() - t0), flush=True)
    if rc != 0:
        raise RuntimeError("scripts/image.sh build failed: %s" % err.decode(errors="replace")[-3000:])
    rc, out, err = run([sh, "env"], timeout=60, env=env)
    for line in out.decode().splitlines():
        k, _, v = line.replace("export ", "", 1).partition("=")
        env[k] = v
    return env


class Podman:
    def __init__(self, env, cwd):
        self.env = env
        self.bin = need("podman")
        # kube play builds an image from ./NAME/Containerfile when a
        # directory (or file) named like the image is in the working
        # directory, even with --build=false: run it where there is none.
        self.cwd = cwd

    def __call__(self, *args, timeout=120, check=False):
        rc, out, err = run([self.bin] + list(args), timeout=timeout, env=self.env, cwd=self.cwd)
        if check and rc != 0:
            raise RuntimeError("podman %s: %s" % (" ".join(args), err.decode(errors="replace")))
        return rc, out.decode(errors="replace"), err.decode(errors="replace")

    def inspect(self, name, fmt):
        rc, out, err = self("inspect", "--format", fmt, name)
        return out.strip() if rc == 0 else None


def kubelet_dir(d, files):
    """Lays out |files| in |d| as the kubelet does for a ConfigMap or Secret
    volume (..<ts>/ with the files, ..data -> it, name -> ..data/name), or
    swaps a new version in: ..data_tmp renamed over ..data, old removed.
    Files are world-readable (the kubelet's default mode 0644): qrux runs
    as 65532."""
    ts = os.path.join(d, "..%d" % time.monotonic_ns())
    os.makedirs(ts)
    os.chmod(ts, 0o755)
    for name, content in files.items():
        p = os.path.join(ts, name)
        with open(p, "wb") as f:
            f.write(content)
        os.chmod(p, 0o644)
    data = os.path.join(d, "..data")
    old = os.readlink(data) if os.path.islink(data) else None
    os.symlink(os.path.basename(ts), os.path.join(d, "..data_tmp"))
    os.rename(os.path.join(d, "..data_tmp"), data)
    for name in files:
        if not os.path.islink(os.path.join(d, name)):
            # A plain file (podman's copy) becomes the symlink, atomically.
            tmp = os.path.join(d, ".%s.tmp" % name)
            os.symlink(os.path.join("..data", name), tmp)
            os.rename(tmp, os.path.join(d, name))
    if old:
        shutil.rmtree(os.path.join(d, old))


def qrux_yaml(port, aport, app_port, alt_svc_max_age):
    return ("server:\n"
            "  listen: \"[::]:%d\"\n"
            "  https_listen: \"[::]:%d\"\n"
            "  cert: /etc/qrux-tls/tls.crt\n"
            "  key: /etc/qrux-tls/tls.key\n"
            "  workers: 2\n"
            "  drain_delay_secs: 1\n"
            "  alt_svc_max_age: %d\n"
            "  limits:\n"
            "    graceful_shutdown_secs: 20\n"
            "routes:\n"
            "  - match: \"*\"\n"
            "    upstream: \"127.0.0.1:%d\"\n"
            "admin:\n"
            "  listen: \"0.0.0.0:%d\"\n"
            "  token_file: /etc/qrux-tls/admin-token\n"
            % (port, port, alt_svc_max_age, app_port, aport)).encode()


def curl(port, path, headers=False):
    args = [need("curl"), "-sk", "--http2", "--max-time", "30", "-o", "-", "-w",
            "\n%{http_code}"]
    if headers:
        args.append("-i")
    rc, out, err = run(args + ["https://localhost:%d%s" % (port, path)], timeout=40)
    text = out.decode(errors="replace")
    body, _, code = text.rpartition("\n")
    return code, body


def admin_get(aport, path):
    try:
        return harness.http_get(aport, path)[0]
    except OSError:
        return None


def play(env):
    ienv = image_env()
    pod_name = "%s-%d-demo" % (PREFIX, os.getpid())
    port = free_port("udp")
    while not harness.tcp_port_free(port):
        port = free_port("udp")
    aport = free_port("tcp")
    app_port = free_port("tcp")
    work = os.path.join(env.dir, "pod")
    os.makedirs(work)
    os.chmod(env.dir, 0o755)
    os.chmod(work, 0o755)
    pm = Podman(ienv, work)

    # The injector, with options as the chart writes them for this pod.
    opts = {"image": IMAGE, "imagePullPolicy": "Never", "binary": "/usr/local/bin/qrux",
            "port": port, "adminPort": aport, "appPort": app_port, "drainDelaySecs": 30,
            "configMap": pod_name + "-config", "tlsSecret": pod_name + "-tls"}
    cfg = os.path.join(env.dir, "inject.json")
    with open(cfg, "w") as f:
        json.dump(opts, f)
    # The demo app's pod, as the chart's demo Deployment makes it.
    app_pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name, "labels": {"app.kubernetes.io/name": "qrux",
                                                  "app.kubernetes.io/component": "demo",
                                                  "qrux.io/inject": "true"},
                     "annotations": {"qrux.io/app-port": str(app_port)}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 60,
            "containers": [{
                "name": "app", "image": BASE, "imagePullPolicy": "Never",
                "command": ["/usr/bin/python3", "/app/drain_app.py", "--port", str(app_port)],
                "ports": [{"name": "http", "containerPort": app_port, "protocol": "TCP"}],
                "volumeMounts": [{"name": "host-usr", "mountPath": "/usr", "readOnly": True},
                                 {"name": "app", "mountPath": "/app", "readOnly": True}],
            }],
            "volumes": [{"name": "host-usr", "hostPath": {"path": "/usr", "type": "Directory"}},
                        {"name": "app", "hostPath": {"path": k8s.K8S_DIR, "type": "Directory"}}],
        },
    }
    inj = k8s.Injector(env, config=cfg)
    try:
        # Native mode (the default): checked by content and schema only.
        st, reply = inj.review(k8s.review_of(app_pod))
        native = k8s.apply_patch(app_pod, k8s.patch_of(reply))
        inits = native["spec"].get("initContainers", [])
        env.check("native: the sidecar is an init container with restartPolicy Always",
                  [(c["name"], c.get("restartPolicy")) for c in inits] == [("qrux", "Always")],
                  json.dumps(inits)[:300])
        # Regular mode: what podman can run.
        regular_pod = json.loads(json.dumps(app_pod))
        regular_pod["metadata"]["annotations"]["qrux.io/native-sidecar"] = "false"
        st, reply = inj.review(k8s.review_of(regular_pod))
        env.eq("regular: the webhook answers with a patch", (st, reply["response"]["allowed"]),
               (200, True))
        pod = k8s.apply_patch(regular_pod, k8s.patch_of(reply))
    finally:
        inj.stop()
    helm, kubectl, node_env = k8s.tools()
    for name, obj in (("native", native), ("regular", pod)):
        path = os.path.join(env.dir, "%s.json" % name)
        with open(path, "w") as f:
            json.dump(obj, f)
        ok, text = k8s.validate([path], node_env)
        env.check("%s: the injected pod is schema-valid" % name, ok, text[-800:])
    q = [c for c in pod["spec"]["containers"] if c["name"] == "qrux"][0]
    env.eq("regular: qrux follows the app", [c["name"] for c in pod["spec"]["containers"]],
           ["app", "qrux"])

    # What podman cannot run, replaced (see the docstring).
    tls_dir = os.path.join(work, "tls")
    os.makedirs(tls_dir)
    os.chmod(tls_dir, 0o755)
    cert, key = k8s.make_cert(env.dir, "pod", cn="localhost")
    token = b"kube-play-token\n"
    kubelet_dir(tls_dir, {"tls.crt": open(cert, "rb").read(), "tls.key": open(key, "rb").read(),
                          "admin-token": token})
    for v in pod["spec"]["volumes"]:
        if "secret" in v:
            v.pop("secret")
            v["hostPath"] = {"path": tls_dir, "type": "Directory"}
    # Host network: podman 4.3 turns containerPorts into port mappings and
    # refuses them there; on the host network they are only declarations.
    for c in pod["spec"]["containers"]:
        c.pop("ports", None)
    prestop = q["lifecycle"]["preStop"]["exec"]["command"]
    q.pop("lifecycle")
    for p in ("startupProbe", "readinessProbe", "livenessProbe"):
        q.pop(p)
    print("podman cannot express: native sidecars (regular mode played), Secret volumes "
          "(hostPath, kubelet layout), preStop hooks and probes (run by the test), "
          "containerPorts on the host network (dropped)", flush=True)

    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": opts["configMap"]},
          "data": {"qrux.yaml": qrux_yaml(port, aport, app_port, 86400).decode()}}
    play_yaml = os.path.join(work, "play.yaml")
    with open(play_yaml, "w") as f:
        f.write(json.dumps(cm) + "\n---\n" + json.dumps(pod) + "\n")

    pm("pod", "rm", "-f", pod_name)
    try:
        rc, out, err = pm("kube", "play", "--build=false", "--network", "host", play_yaml,
                          timeout=180)
        env.eq("podman kube play of the injected pod", rc, 0, (out + err)[-1500:])
        if rc != 0:
            return
        qrux_c = pod_name + "-qrux"
        app_c = pod_name + "-app"

        def logs():
            return pm("logs", qrux_c)[2][-2500:] + pm("logs", qrux_c)[1][-500:]

        env.check("/startupz 200 (the kubelet's startup probe)",
                  wait_until(lambda: admin_get(aport, "/startupz") == 200, 60), logs())
        env.eq("/readyz 200", admin_get(aport, "/readyz"), 200)
        env.eq("/livez 200", admin_get(aport, "/livez"), 200)
        env.eq("qrux runs as 65532", pm.inspect(qrux_c, "{{.Config.User}}"), "65532:65532")

        # From the host, through the sidecar, to the app.
        r = env.gtls(port, "/hello")
        env.eq("HTTP/3 through the sidecar: 200", r.status(), 200, r.summary())
        env.eq("HTTP/3: the app's body", r.body(), b"qrux demo app\n")
        code, text = curl(port, "/hello", headers=True)
        env.eq("HTTPS (h2) through the sidecar: 200", code, "200", text[:500])
        env.check("HTTPS: the app's body and Alt-Svc",
                  text.endswith("qrux demo app\n") and
                  ('alt-svc: h3=":%d"; ma=86400' % port) in text.lower(), text[:600])

        # The ConfigMap, replaced the kubelet's way inside the volume podman
        # made for it (found through the container's mounts).
        mounts = json.loads(pm.inspect(qrux_c, "{{json .Mounts}}") or "[]")
        src = [m["Source"] for m in mounts if m["Destination"] == "/etc/qrux"]
        env.check("the ConfigMap is mounted as a directory on /etc/qrux", len(src) == 1,
                  json.dumps(mounts)[:800])
        if src:
            d = src[0]
            # podman wrote plain files; the kubelet's layout is ..data
            # symlinks: make it so, then swap a new version in.
            kubelet_dir(d, {"qrux.yaml": qrux_yaml(port, aport, app_port, 86400)})
            kubelet_dir(d, {"qrux.yaml": qrux_yaml(port, aport, app_port, 1234)})
            env.check("after the ..data swap: the new config is applied (Alt-Svc ma=1234)",
                      wait_until(lambda: ('ma=1234') in curl(port, "/hello", True)[1].lower(),
                                 20, 0.5), logs())
            env.check("qrux logged the reload", "config reload (file changed)" in logs(),
                      logs())

        # Stop in the kubelet's order, requests in flight (regular mode):
        # the preStop hook of qrux and SIGTERM to the app at once; SIGTERM
        # to qrux once the hook has returned.
        results = []

        def get():
            results.append(curl(port, "/delay/3000")[0])
        h3 = env.gtls_start(port, ["/delay/3000", "/delay/3100"])
        threads = [threading.Thread(target=get) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        hook = harness.spawn([pm.bin, "exec", qrux_c] + prestop, env=ienv, cwd=work,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        pm("kill", "--signal", "TERM", app_c)
        env.check("preStop: /readyz 503 while requests are in flight",
                  wait_until(lambda: admin_get(aport, "/readyz") in (503, None), 10))
        try:
            hook.wait(90)
        except subprocess.TimeoutExpired:
            hook.kill()
        # The hook waits for qrux to exit; when qrux (the container's PID 1)
        # exits first, the hook dies with it (SIGKILL, 137), as under the
        # kubelet: either way qrux has drained and gone before its SIGTERM.
        env.check("preStop hook ended with qrux drained and exited (rc %s)" % hook.returncode,
                  hook.returncode in (0, 137) and
                  wait_until(lambda: pm.inspect(qrux_c, "{{.State.Status}}") in
                             ("exited", "stopped"), 15, 0.5),
                  hook.stderr.read().decode(errors="replace") if hook.stderr else "")
        pm("kill", "--signal", "TERM", qrux_c)
        for t in threads:
            t.join(60)
        r = h3.finish()
        env.eq("HTTP/3 requests in flight: all 200", sorted(r.statuses().values()), [200, 200],
               r.summary())
        env.eq("HTTPS requests in flight: all 200", results, ["200"] * 6)
        for c in (app_c, qrux_c):
            rc, out, err = pm("wait", c, timeout=90)
            env.eq("%s exited 0" % c, out.strip(), "0", err + logs())
    finally:
        rc, out, err = pm("pod", "inspect", "--format", "{{.Id}}", pod_name)
        pod_id = out.strip() if rc == 0 else None
        pm("pod", "rm", "-f", "-t", "5", pod_name, timeout=120)
        pm("volume", "rm", "-f", opts["configMap"])  # podman's copy of the ConfigMap
        # podman (cgroupfs manager) leaves the pod's cgroup directories
        # (the pod's, its containers' below it) in every hierarchy.
        if pod_id:
            for top in glob.glob("/sys/fs/cgroup/*/libpod_parent/" + pod_id) + \
                    glob.glob("/sys/fs/cgroup/libpod_parent/" + pod_id):
                for root, dirs, files in os.walk(top, topdown=False):
                    try:
                        os.rmdir(root)
                    except OSError:
                        pass
        left = glob.glob("/sys/fs/cgroup/*/libpod_parent/%s" % pod_id) if pod_id else []
        env.check("no cgroup of the pod left", not left, str(left))
        rc, out, err = pm("pod", "exists", pod_name)
        env.check("nothing left running", rc != 0)


def main():
    with Env("kube_play") as env:
        env.case("the injected pod, played by podman", play, env)


if __name__ == "__main__":
    main()
