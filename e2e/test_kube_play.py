#!/usr/bin/env python3
"""The injected pod, run: the Helm chart (helm/qrux) rendered by the real
helm with the demo app on, the demo Deployment's pod template made a Pod
the way its ReplicaSet makes one, wrapped in an AdmissionReview and passed
through the real `qrux inject` webhook (over HTTPS, with the inject.json the
chart renders for it), the JSONPatch applied, and that Pod played with the
chart's qrux.yaml ConfigMap by podman (`podman kube play`, the image of
scripts/image.sh) in a network namespace of its own reached from the host
over a veth pair. From the host: HTTP/3 (gtlsclient) and HTTPS (curl) reach
the app through the sidecar on the pod's address; the played qrux container
is the injector's (args, ports h3/https, directory mounts, security
context) and podman ran it so (uid, capabilities, no-new-privileges and
seccomp read from /proc, read-only root, memory limit); the chart's
ConfigMap replaced the kubelet's way (..data swap) with the qrux.yaml of
`--set config.server.altSvcMaxAge=1234` is applied; stopping the pod in the
kubelet's order (qrux's preStop hook and the app's SIGTERM, then qrux's
SIGTERM) loses no request in flight, and both containers exit 0.

Chart values set for this machine (values, not edits of the output):
image.repository=localhost/qrux, image.tag=test, image.pullPolicy=Never
(the locally built image, no registry); sidecar.nativeSidecar=false for
the played pod (see below); every other value is the chart's default, so
the ports are the chart's own (8443 UDP/TCP, admin 9901, app 8080): the
pod's network namespace keeps them off the host's.

Fields of the injected Pod substituted before the play, and why:
  - metadata.name: the API server names a ReplicaSet's pod from its
    generateName; podman needs a name (qxk16-<pid>-demo, unique here);
  - spec.restartPolicy Never (the Deployment's is Always): podman would
    restart the containers the test stops; the kubelet restarts nothing of
    a pod being deleted;
  - the app container's image and command: nginx-unprivileged cannot exist
    here (no registry), so it is the Debian base image with the host's /usr
    mounted read-only (same Debian release) and e2e/k8s/drain_app.py on the
    chart's port 8080 (two hostPath volumes and mounts added for that); its
    resources and security context (uid 101, read-only root, no
    capabilities) are the chart's;
  - the TLS Secret volume: podman 4.3 plays no Secret volume; it becomes a
    hostPath directory laid out the kubelet's way (..data) holding the
    chart's own demo Secret (certificate, key, admin token).

What podman 4.3 cannot express, and what the test does instead (said
again in the output):
  - native sidecars (an init container with restartPolicy Always): the
    play fails, so the played pod comes from the chart's regular-container
    mode (sidecar.nativeSidecar=false); the default (native) render's patch
    is checked by content and by schema (e2e/test_inject.py does that in
    depth);
  - containerPorts (both containers'): podman 4.3 makes each a host port
    mapping, which it refuses outside bridge or slirp4netns networking
    ("PortMappings can only be used with ..."); under the kubelet they open
    nothing either. They are dropped from the played pod; the injector's
    (h3 UDP 8443, https TCP 8443, qrux-admin TCP 9901) are checked in the
    patch and as the sockets listening in the pod's namespace (ss);
  - lifecycle hooks and the kubelet's probes: podman runs no preStop hook
    and does not probe over the pod's network the way the kubelet does; the
    test is the kubelet: it execs the preStop command in the qrux container
    and polls /startupz, /readyz, /livez on the pod's address itself (the
    hook and the probes are removed from the played container only);
  - annotation values over 63 bytes (podman applies the label limit): the
    injector's status annotation is kept short for that reason.

Everything podman made is removed at the end: the pod, its containers,
volumes and cgroups, and the network namespace. Needs root (CI is root).
"""

import base64
import copy
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
from harness import Env, need, run, wait_until  # noqa: E402

IMAGE = "localhost/qrux:test"
BASE = "docker.io/library/debian:bookworm"
PREFIX = "qxk16"  # everything this test makes in podman and ip is named with it
CHART = os.path.join(k8s.SRC, "helm", "qrux")
RELEASE_NS = "qrux-system"
# Chart values for this machine: the locally built image, never pulled.
VALUES = ["--set", "demo.enabled=true", "--set", "image.repository=localhost/qrux",
          "--set", "image.tag=test", "--set", "image.pullPolicy=Never"]
# Fields of the qrux container removed before the play (podman cannot run
# them; the test does their work): everything else is played as injected.
NOT_PLAYED = ("ports", "lifecycle", "startupProbe", "readinessProbe", "livenessProbe")


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

    def argv(self, args, netns=None):
        """podman |args|, in the network namespace |netns| (a path) when
        given: the containers it starts with host networking, and the
        processes it execs in them, are then in that namespace."""
        pre = [need("nsenter"), "--net=" + netns] if netns else []
        return pre + [self.bin] + list(args)

    def __call__(self, *args, timeout=120, check=False, netns=None):
        rc, out, err = run(self.argv(args, netns), timeout=timeout, env=self.env, cwd=self.cwd)
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



def render(helm, extra=()):
    """`helm template` of the chart with VALUES and |extra|: its objects."""
    import yaml
    rc, out, err = run([helm, "template", "qrux", CHART, "--namespace", RELEASE_NS] + VALUES +
                       list(extra), timeout=120)
    if rc != 0:
        raise RuntimeError("helm template: %s" % err.decode(errors="replace")[-2000:])
    return [d for d in yaml.safe_load_all(out.decode()) if d]


def one(docs, kind, name, namespace=None):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name and
             (namespace is None or d["metadata"].get("namespace") == namespace)]
    if len(found) != 1:
        raise RuntimeError("the chart rendered %d %s %s" % (len(found), kind, name))
    return found[0]


def demo_objects(docs):
    """What the chart renders for the demo: (Deployment, the qrux.yaml
    ConfigMap and the TLS Secret of its namespace, the injector's options)."""
    dep = one(docs, "Deployment", "qrux-demo")
    ns = dep["metadata"]["namespace"]
    opts = json.loads(one(docs, "ConfigMap", "qrux-injector", RELEASE_NS)["data"]["inject.json"])
    return (dep, one(docs, "ConfigMap", opts["configMap"], ns),
            one(docs, "Secret", opts["tlsSecret"], ns), opts)


def pod_of(dep):
    """The Pod the Deployment's ReplicaSet asks the API server for (what the
    webhook is shown): the template's metadata and spec, a generateName."""
    t = copy.deepcopy(dep["spec"]["template"])
    meta = t["metadata"]
    meta["generateName"] = dep["metadata"]["name"] + "-"
    meta["namespace"] = dep["metadata"]["namespace"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": t["spec"]}


def injected(env, helm_docs, pod, uid):
    """|pod| through `qrux inject` run with the chart's inject.json: the
    patched pod."""
    opts = demo_objects(helm_docs)[3]
    cfg = os.path.join(env.dir, "inject-%s.json" % uid[-4:])
    with open(cfg, "w") as f:
        json.dump(opts, f)
    inj = k8s.Injector(env, config=cfg)
    try:
        st, reply = inj.review(k8s.review_of(pod, uid=uid, namespace=pod["metadata"]["namespace"]))
    finally:
        inj.stop()
    env.eq("the webhook answers with a patch (nativeSidecar %s)" % opts.get("nativeSidecar"),
           (st, reply["response"]["uid"], reply["response"]["allowed"],
            reply["response"].get("patchType")), (200, uid, True, "JSONPatch"),
           json.dumps(reply)[:500])
    return k8s.apply_patch(pod, k8s.patch_of(reply))


def sidecar(pod):
    return [c for c in pod["spec"]["containers"] if c["name"] == "qrux"][0]


class PodNet:
    """The pod's network namespace (/run/netns/qxk16-<pid>), its eth0 one
    end of a veth pair whose other end is on the host: the pod's ports are
    its own, reached from the host at self.ip."""

    def __init__(self):
        pid = os.getpid()
        self.ns = "%s-%d" % (PREFIX, pid)
        self.host_if = "%sh%d" % (PREFIX, pid % 100000)
        b, c = 200 + pid % 50, (pid // 50) % 256
        self.host_ip, self.ip = "10.%d.%d.1" % (b, c), "10.%d.%d.2" % (b, c)
        self.path = "/run/netns/" + self.ns
        ip = need("ip")
        self.close()
        for cmd in (["netns", "add", self.ns],
                    ["link", "add", self.host_if, "type", "veth", "peer", "name",
                     self.host_if + "p"],
                    ["link", "set", self.host_if + "p", "netns", self.ns],
                    ["-n", self.ns, "link", "set", self.host_if + "p", "name", "eth0"],
                    ["-n", self.ns, "addr", "add", self.ip + "/30", "dev", "eth0"],
                    ["-n", self.ns, "link", "set", "eth0", "up"],
                    ["-n", self.ns, "link", "set", "lo", "up"],
                    ["-n", self.ns, "route", "add", "default", "via", self.host_ip],
                    ["addr", "add", self.host_ip + "/30", "dev", self.host_if],
                    ["link", "set", self.host_if, "up"]):
            rc, out, err = run([ip] + cmd, timeout=30)
            if rc != 0:
                self.close()
                raise RuntimeError("ip %s: %s" % (" ".join(cmd), err.decode(errors="replace")))

    def listening(self):
        """(protocol, port) of every listening socket in the pod."""
        rc, out, err = run([need("ip"), "netns", "exec", self.ns, need("ss"), "-Hlntu"],
                           timeout=30)
        socks = set()
        for line in out.decode().splitlines():
            f = line.split()
            if len(f) >= 5:
                socks.add((f[0].upper(), int(f[4].rpartition(":")[2])))
        return socks

    def close(self):
        run([need("ip"), "link", "del", self.host_if], timeout=30)
        run([need("ip"), "netns", "del", self.ns], timeout=30)


def curl(ip, port, path, headers=False):
    args = [need("curl"), "-sk", "--http2", "--max-time", "30", "-o", "-", "-w",
            "\n%{http_code}"]
    if headers:
        args.append("-i")
    rc, out, err = run(args + ["https://%s:%d%s" % (ip, port, path)], timeout=40)
    text = out.decode(errors="replace")
    body, _, code = text.rpartition("\n")
    return code, body


def admin_get(ip, aport, path):
    try:
        return harness.http_get(aport, path, host=ip)[0]
    except OSError:
        return None


def proc_status(pid):
    """The fields of /proc/PID/status the kernel enforces a security
    context with."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Uid", "Gid", "CapEff", "CapPrm", "CapBnd", "NoNewPrivs", "Seccomp"):
                out[k] = v.split()
    return out


def root_read_only(pid):
    with open("/proc/%d/mountinfo" % pid) as f:
        for line in f:
            f_ = line.split()
            if f_[4] == "/":
                return "ro" in f_[5].split(",")
    return None


def play(env):
    ienv = image_env()
    helm, kubectl, node_env = k8s.tools()

    # The chart, rendered twice: its defaults (native sidecars) and the
    # setting for clusters without them, which is what podman can run.
    native_docs = render(helm)
    docs = render(helm, ["--set", "sidecar.nativeSidecar=false"])
    dep, cm, secret, opts = demo_objects(docs)
    env.eq("the demo Deployment does not depend on sidecar.nativeSidecar",
           one(native_docs, "Deployment", "qrux-demo"), dep)
    env.eq("the chart's injector options: the local image, regular containers",
           (opts["image"], opts["imagePullPolicy"], opts["nativeSidecar"]),
           (IMAGE, "Never", False))
    app_pod = pod_of(dep)
    env.eq("the demo pod is opted in", app_pod["metadata"]["labels"].get("qrux.io/inject"), "true")

    # Native mode (the chart's default): checked by content and schema only.
    native = injected(env, native_docs, app_pod, "0f3c5d6e-1111-4c4c-9a9a-00000000016a")
    inits = native["spec"].get("initContainers", [])
    env.check("native: the sidecar is an init container with restartPolicy Always",
              [(c["name"], c.get("restartPolicy")) for c in inits] == [("qrux", "Always")],
              json.dumps(inits)[:300])
    # Regular mode: what podman can run.
    pod = injected(env, docs, app_pod, "0f3c5d6e-1111-4c4c-9a9a-00000000016b")
    for name, obj in (("native", native), ("regular", pod)):
        path = os.path.join(env.dir, "%s.json" % name)
        with open(path, "w") as f:
            json.dump(obj, f)
        ok, text = k8s.validate([path], node_env)
        env.check("%s: the injected pod is schema-valid" % name, ok, text[-800:])
    env.eq("regular: qrux follows the app", [c["name"] for c in pod["spec"]["containers"]],
           ["app", "qrux"])
    inj_q = copy.deepcopy(sidecar(pod))
    env.eq("the injector's qrux ports: h3/UDP and https/TCP on the chart's port, the admin's",
           [(p["name"], p["protocol"], p["containerPort"]) for p in inj_q["ports"]],
           [("h3", "UDP", 8443), ("https", "TCP", 8443), ("qrux-admin", "TCP", 9901)])

    pod_name = "%s-%d-demo" % (PREFIX, os.getpid())
    work = os.path.join(env.dir, "pod")
    os.makedirs(work)
    os.chmod(env.dir, 0o755)
    os.chmod(work, 0o755)
    pm = Podman(ienv, work)

    # The substitutions of the docstring, and nothing else.
    played = copy.deepcopy(pod)
    played["metadata"]["name"] = pod_name
    played["spec"]["restartPolicy"] = "Never"
    app = [c for c in played["spec"]["containers"] if c["name"] == "app"][0]
    app_port = [p["containerPort"] for p in app["ports"] if p["name"] == "http"][0]
    app["image"] = BASE
    app["command"] = ["/usr/bin/python3", "/app/drain_app.py", "--port", str(app_port)]
    app.pop("ports")  # see the docstring: podman would map them to host ports
    app["volumeMounts"] += [{"name": "host-usr", "mountPath": "/usr", "readOnly": True},
                            {"name": "demo-app", "mountPath": "/app", "readOnly": True}]
    played["spec"]["volumes"] += [
        {"name": "host-usr", "hostPath": {"path": "/usr", "type": "Directory"}},
        {"name": "demo-app", "hostPath": {"path": k8s.K8S_DIR, "type": "Directory"}}]
    tls_dir = os.path.join(work, "tls")
    os.makedirs(tls_dir)
    os.chmod(tls_dir, 0o755)
    kubelet_dir(tls_dir, {k: base64.b64decode(v) for k, v in secret["data"].items()})
    for v in played["spec"]["volumes"]:
        if v.get("secret", {}).get("secretName") == opts["tlsSecret"]:
            v.pop("secret")
            v["hostPath"] = {"path": tls_dir, "type": "Directory"}
    q = sidecar(played)
    prestop = q["lifecycle"]["preStop"]["exec"]["command"]
    for k in NOT_PLAYED:
        q.pop(k)
    print("podman cannot express: native sidecars (regular mode played), Secret volumes "
          "(hostPath, kubelet layout), containerPorts outside bridge networking (dropped; "
          "the sockets are checked in the pod), preStop hooks and the kubelet's probes (run "
          "by the test); substituted: pod name, restartPolicy, the app's image and command",
          flush=True)
    env.eq("the played qrux container is the injector's but for %s" % ", ".join(NOT_PLAYED),
           q, {k: v for k, v in inj_q.items() if k not in NOT_PLAYED})
    env.eq("the played qrux volumes: the chart's ConfigMap as a volume, the TLS directory",
           sorted((v["name"], json.dumps(v.get("configMap") or v.get("hostPath"),
                                         sort_keys=True))
                  for v in played["spec"]["volumes"]
                  if v["name"] in [m["name"] for m in q["volumeMounts"]]),
           sorted([(m["name"], json.dumps({"name": opts["configMap"]} if m["mountPath"] ==
                                          "/etc/qrux" else {"path": tls_dir, "type": "Directory"},
                                          sort_keys=True))
                   for m in q["volumeMounts"]]))
    env.check("the qrux mounts are directories, never subPath",
              all("subPath" not in m and "subPathExpr" not in m for m in q["volumeMounts"]) and
              sorted(m["mountPath"] for m in q["volumeMounts"]) == ["/etc/qrux", "/etc/qrux-tls"],
              json.dumps(q["volumeMounts"]))

    play_yaml = os.path.join(work, "play.yaml")
    with open(play_yaml, "w") as f:
        f.write(json.dumps(cm) + "\n---\n" + json.dumps(played) + "\n")

    net = None
    pm("pod", "rm", "-f", pod_name)
    pm("volume", "rm", "-f", opts["configMap"])
    try:
        net = PodNet()
        ip = net.ip
        port, aport = inj_q["ports"][0]["containerPort"], inj_q["ports"][2]["containerPort"]
        # podman 4.3 refuses a pod network "ns:PATH": it runs in the
        # namespace instead, the pod on its "host" network.
        rc, out, err = pm("kube", "play", "--build=false", "--network", "host", play_yaml,
                          timeout=180, netns=net.path)
        env.eq("podman kube play of the injected pod", rc, 0, (out + err)[-1500:])
        if rc != 0:
            return
        qrux_c = pod_name + "-qrux"
        app_c = pod_name + "-app"

        def logs():
            return pm("logs", qrux_c)[2][-2500:] + pm("logs", qrux_c)[1][-500:]

        env.check("/startupz 200 on the pod's address (the kubelet's startup probe)",
                  wait_until(lambda: admin_get(ip, aport, "/startupz") == 200, 60), logs())
        env.eq("/readyz 200", admin_get(ip, aport, "/readyz"), 200)
        env.eq("/livez 200", admin_get(ip, aport, "/livez"), 200)
        # The injector's ports (h3 UDP, https TCP, qrux-admin TCP), podman
        # told nothing of them: qrux opened exactly those, the app its own.
        socks = net.listening()
        env.eq("the pod listens on the injector's ports and the app's, nothing else",
               sorted(socks), sorted({(p["protocol"], p["containerPort"])
                                      for p in inj_q["ports"]} | {("TCP", app_port)}))

        # The container podman made from the injector's spec, as the kernel
        # sees its process.
        cmd = json.loads(pm.inspect(qrux_c, "{{json .Config.Cmd}}") or "null")
        env.eq("qrux runs with the injector's args", cmd, inj_q["args"])
        env.eq("qrux's image is the injector's", pm.inspect(qrux_c, "{{.ImageName}}"),
               inj_q["image"])
        env.eq("runAsUser/runAsGroup 65532", pm.inspect(qrux_c, "{{.Config.User}}"),
               "65532:65532")
        pid = int(pm.inspect(qrux_c, "{{.State.Pid}}") or 0)
        env.check("qrux runs in the pod's network namespace",
                  pid and os.stat("/proc/%d/ns/net" % pid).st_ino == os.stat(net.path).st_ino)
        st = proc_status(pid) if pid else {}
        env.eq("the qrux process: uid/gid 65532, no capability (drop ALL), no-new-privileges "
               "(allowPrivilegeEscalation false), seccomp filter (RuntimeDefault)",
               (st.get("Uid", [None])[:2], st.get("Gid", [None])[:2], st.get("CapEff"),
                st.get("CapPrm"), st.get("NoNewPrivs"), st.get("Seccomp")),
               (["65532", "65532"], ["65532", "65532"], ["0000000000000000"],
                ["0000000000000000"], ["1"], ["2"]), str(st))
        env.eq("readOnlyRootFilesystem: qrux's / is read-only", root_read_only(pid) if pid
               else None, True)
        env.eq("the memory limit is the injector's (256Mi)",
               pm.inspect(qrux_c, "{{.HostConfig.Memory}}"), str(256 * 1024 * 1024))
        # The app keeps the chart's security context (uid 101, nothing else).
        apid = int(pm.inspect(app_c, "{{.State.Pid}}") or 0)
        st = proc_status(apid) if apid else {}
        env.eq("the app process: the chart's uid 101, no capability, no-new-privileges, "
               "read-only root", (st.get("Uid", [None])[:2], st.get("CapEff"),
                                  st.get("NoNewPrivs"), root_read_only(apid) if apid else None),
               (["101", "101"], ["0000000000000000"], ["1"], True), str(st))
        mounts = json.loads(pm.inspect(qrux_c, "{{json .Mounts}}") or "[]")
        by_dst = {m["Destination"]: m for m in mounts}
        env.check("/etc/qrux and /etc/qrux-tls mounted read-only from directories",
                  all(d in by_dst and os.path.isdir(by_dst[d]["Source"]) and
                      not by_dst[d].get("RW", True) for d in ("/etc/qrux", "/etc/qrux-tls")),
                  json.dumps(mounts)[:1200])

        # From the host, through the sidecar, to the app.
        r = env.gtls(port, "/hello", host=ip)
        env.eq("HTTP/3 through the sidecar: 200", r.status(), 200, r.summary())
        env.eq("HTTP/3: the app's body", r.body(), b"qrux demo app\n")
        code, text = curl(ip, port, "/hello", headers=True)
        env.eq("HTTPS (h2) through the sidecar: 200", code, "200", text[:500])
        env.check("HTTPS: the app's body and Alt-Svc",
                  text.endswith("qrux demo app\n") and
                  ('alt-svc: h3=":%d"; ma=86400' % port) in text.lower(), text[:600])

        # The ConfigMap, replaced the kubelet's way inside the volume podman
        # made for it (found through the container's mounts), with what the
        # chart renders for a changed value.
        if "/etc/qrux" in by_dst:
            d = by_dst["/etc/qrux"]["Source"]
            new_cm = demo_objects(render(helm, ["--set", "sidecar.nativeSidecar=false", "--set",
                                                "config.server.altSvcMaxAge=1234"]))[1]
            # podman wrote plain files; the kubelet's layout is ..data
            # symlinks: make it so, then swap a new version in.
            kubelet_dir(d, {k: v.encode() for k, v in cm["data"].items()})
            kubelet_dir(d, {k: v.encode() for k, v in new_cm["data"].items()})
            env.check("after the ..data swap: the new config is applied (Alt-Svc ma=1234)",
                      wait_until(lambda: "ma=1234" in curl(ip, port, "/hello", True)[1].lower(),
                                 20, 0.5), logs())
            env.check("qrux logged the reload", "config reload (file changed)" in logs(),
                      logs())

        # Stop in the kubelet's order, requests in flight (regular mode):
        # the preStop hook of qrux and SIGTERM to the app at once; SIGTERM
        # to qrux once the hook has returned.
        results = []

        def get():
            results.append(curl(ip, port, "/delay/3000")[0])
        h3 = env.gtls_start(port, ["/delay/3000", "/delay/3100"], host=ip)
        threads = [threading.Thread(target=get) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        hook = harness.spawn(pm.argv(["exec", qrux_c] + prestop, net.path), env=ienv, cwd=work,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        pm("kill", "--signal", "TERM", app_c)
        env.check("preStop: /readyz 503 while requests are in flight",
                  wait_until(lambda: admin_get(ip, aport, "/readyz") in (503, None), 10))
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
        if net:
            net.close()
            env.check("the pod's network namespace removed",
                      not os.path.exists(net.path), net.path)


def main():
    with Env("kube_play") as env:
        env.case("the chart's demo pod, injected, played by podman", play, env)


if __name__ == "__main__":
    main()
