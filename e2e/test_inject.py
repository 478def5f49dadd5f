#!/usr/bin/env python3
"""`qrux inject`, the sidecar injection webhook, as the API server and an
operator meet it: real AdmissionReview v1 documents (golden files in
e2e/k8s/reviews/) posted over HTTPS; each patch applied (RFC 6902, as the
API server does) must give the committed pod exactly, and that pod must
pass the Kubernetes schema check with unknown field names refused
(e2e/k8s/validate.js). Then: the patched pod again gets no patch; no
opt-in, opt-out, DELETE, not-a-Pod get none; annotations are honoured; a
bad annotation is denied with its name; malformed JSON and a v1beta1
review get an error review and the server carries on; /metrics counts by
result; the certificate is reloaded when the mounted Secret changes the
kubelet's way (..data swap); the options file too; SIGTERM drains.
`qrux inject --lint` on good and bad manifests; `--prestop` against a
real qrux: the kubelet's shutdown orders, requests in flight.

QRUX_GOLDEN_UPDATE=1 rewrites the expected pods (review the diff).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "k8s"))
import harness  # noqa: E402
import k8s  # noqa: E402
from harness import Env, free_port, need, qrux_bin, run, wait_until  # noqa: E402

REV = os.path.join(k8s.K8S_DIR, "reviews")
UPDATE = os.environ.get("QRUX_GOLDEN_UPDATE") == "1"
OPTS = {"image": "qrux:test", "imagePullPolicy": "Never"}


def load(name):
    with open(os.path.join(REV, name + ".json")) as f:
        return json.load(f)


def normalise(pod):
    """The status annotation names qrux's version: not part of the golden."""
    s = json.dumps(pod, sort_keys=True)
    return json.loads(re.sub(r'\\"version\\":\\"[^\\"]*\\"', r'\\"version\\":\\"V\\"', s))


def golden(env, node_env, inj, name, path="/mutate", expect_name=None):
    """Posts review |name|, applies the patch, compares with the golden pod
    and validates it. Returns the patched pod."""
    review = load(name + ".review")
    st, reply = inj.review(review, path)
    resp = reply.get("response", {})
    env.eq("%s: HTTP 200" % name, st, 200)
    env.eq("%s: uid echoed" % name, resp.get("uid"), review["request"]["uid"])
    env.eq("%s: allowed" % name, resp.get("allowed"), True, json.dumps(resp)[:300])
    env.eq("%s: patchType JSONPatch" % name, resp.get("patchType"), "JSONPatch")
    patch = k8s.patch_of(reply)
    pod = k8s.apply_patch(review["request"]["object"], patch)
    gpath = os.path.join(REV, (expect_name or name) + ".pod.json")
    if UPDATE:
        with open(gpath, "w") as f:
            json.dump(pod, f, indent=2)
            f.write("\n")
    with open(gpath) as f:
        want = json.load(f)
    env.check("%s: patched pod equals %s" % (name, os.path.basename(gpath)),
              normalise(pod) == normalise(want),
              json.dumps(pod, sort_keys=True)[:1500])
    out = os.path.join(env.dir, name + ".patched.json")
    with open(out, "w") as f:
        json.dump(pod, f)
    ok, text = k8s.validate([out], node_env)
    env.check("%s: patched pod is a schema-valid Pod (unknown fields refused)" % name, ok,
              text[-1500:])
    # Reinvocation (reinvocationPolicy IfNeeded) or a second webhook call:
    # the patched pod gets no second sidecar.
    again = dict(review, request=dict(review["request"], object=pod))
    st, reply = inj.review(again, path)
    env.check("%s: the patched pod again: allowed, no patch" % name,
              st == 200 and reply["response"]["allowed"] is True and
              "patch" not in reply["response"], json.dumps(reply)[:300])
    return pod


def container(pod, name, where=("initContainers", "containers")):
    for w in where:
        for c in pod["spec"].get(w, []):
            if c["name"] == name:
                return w, c
    return None, None


# ---------------------------------------------------------------------------


def reviews(env, node_env, cfg):
    inj = k8s.Injector(env, config=cfg)
    try:
        # Opted in by label, defaults: the native sidecar.
        pod = golden(env, node_env, inj, "optin-native")
        where, q = container(pod, "qrux")
        env.eq("native: qrux is an init container", where, "initContainers")
        env.eq("native: restartPolicy Always", q.get("restartPolicy"), "Always")
        env.eq("native: image from the options", q["image"], "qrux:test")
        env.eq("ports: h3/UDP, https/TCP on 8443, admin 9901",
               [(p["name"], p["containerPort"], p["protocol"]) for p in q["ports"]],
               [("h3", 8443, "UDP"), ("https", 8443, "TCP"), ("qrux-admin", 9901, "TCP")])
        env.eq("probes: /startupz /readyz /livez on the admin port",
               [(q[p]["httpGet"]["path"], q[p]["httpGet"]["port"])
                for p in ("startupProbe", "readinessProbe", "livenessProbe")],
               [("/startupz", "qrux-admin"), ("/readyz", "qrux-admin"),
                ("/livez", "qrux-admin")])
        sc = q["securityContext"]
        env.eq("security context", (sc["runAsUser"], sc["runAsNonRoot"],
                                    sc["readOnlyRootFilesystem"],
                                    sc["allowPrivilegeEscalation"], sc["capabilities"],
                                    sc["seccompProfile"]),
               (65532, True, True, False, {"drop": ["ALL"]}, {"type": "RuntimeDefault"}))
        env.check("config mounted as a directory, never subPath",
                  all("subPath" not in m for m in q["volumeMounts"]) and
                  {"name": "qrux-config", "mountPath": "/etc/qrux", "readOnly": True}
                  in q["volumeMounts"], json.dumps(q["volumeMounts"]))
        vols = {v["name"]: v for v in pod["spec"]["volumes"]}
        env.eq("volumes: the ConfigMap and the TLS Secret",
               (vols["qrux-config"].get("configMap"), vols["qrux-tls"].get("secret")),
               ({"name": "qrux-config"}, {"secretName": "qrux-tls"}))
        env.check("no XDP by default", "qrux-xdp" not in json.dumps(pod))
        ann = pod["metadata"]["annotations"]
        env.eq("default-container is the app", ann.get("kubectl.kubernetes.io/default-container"),
               "app")
        st = json.loads(ann["qrux.io/status"])
        env.eq("status annotation", (st["sidecar"], st["xdp"]), ("native", False))
        env.check("status annotation under 64 bytes (podman holds values to that)",
                  len(ann["qrux.io/status"]) < 64, ann["qrux.io/status"])
        env.check("preStop starts the drain", q["lifecycle"]["preStop"]["exec"]["command"][1:3] ==
                  ["inject", "--prestop"], json.dumps(q["lifecycle"]))

        # Annotations override everything they name.
        pod = golden(env, node_env, inj, "optin-annotations")
        where, q = container(pod, "qrux")
        env.eq("native-sidecar false: a regular container, last", (where,
               pod["spec"]["containers"][-1]["name"], "restartPolicy" in q),
               ("containers", "qrux", False))
        env.eq("resources annotation", q["resources"],
               {"requests": {"cpu": "200m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}})
        env.eq("drain-delay annotation: preStop --wait 20",
               q["lifecycle"]["preStop"]["exec"]["command"][-2:], ["--wait", "20"])
        vols = {v["name"]: v for v in pod["spec"]["volumes"]}
        env.eq("config-map and tls-secret annotations",
               (vols["qrux-config"]["configMap"]["name"], vols["qrux-tls"]["secret"]["secretName"]),
               ("edge-config", "edge-tls"))
        env.eq("app-port annotation picks the default container",
               pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"], "api")
        env.eq("existing annotations kept", pod["metadata"]["annotations"]["team"], "edge")
        xw, x = container(pod, "qrux-xdp")
        env.eq("xdp: init container first", (xw, pod["spec"]["initContainers"][0]["name"]),
               ("initContainers", "qrux-xdp"))
        env.eq("xdp: runs qrux xdp attach", x["args"][:2], ["xdp", "attach"])
        env.eq("xdp: root with only the capabilities attach needs",
               (x["securityContext"]["runAsUser"], x["securityContext"]["capabilities"]),
               (0, {"drop": ["ALL"],
                    "add": ["BPF", "PERFMON", "NET_ADMIN", "CHOWN"]}))
        env.eq("xdp: pins on its mount, handed to the sidecar's user",
               x["args"][-4:], ["--pin", "/sys/fs/bpf", "--pin-owner", "65532:65532"])
        env.eq("xdp: bpffs hostPath", vols["qrux-bpffs"]["hostPath"],
               {"path": "/sys/fs/bpf", "type": "Directory"})
        bpffs = {"name": "qrux-bpffs", "mountPath": "/sys/fs/bpf",
                 "subPathExpr": "qrux-$(QRUX_POD_UID)"}
        uid_env = [{"name": "QRUX_POD_UID",
                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}}]
        env.eq("xdp: both containers mount the pod's own bpffs directory, read-write",
               ([m for m in x["volumeMounts"] if m["name"] == "qrux-bpffs"],
                [m for m in q["volumeMounts"] if m["name"] == "qrux-bpffs"]), ([bpffs], [bpffs]))
        env.eq("xdp: the pod's uid from the downward API in both", (x["env"], q["env"]),
               (uid_env, uid_env))
        env.eq("xdp: the sidecar stays 65532, CAP_BPF added (the seccomp gate on bpf())",
               (q["securityContext"]["runAsUser"], q["securityContext"]["capabilities"]),
               (65532, {"drop": ["ALL"], "add": ["BPF"]}))

        # The pod's own init containers: XDP, then the native sidecar, then theirs.
        pod = golden(env, node_env, inj, "optin-existing-init")
        env.eq("init order: xdp, qrux, the pod's own",
               [c["name"] for c in pod["spec"]["initContainers"]], ["qrux-xdp", "qrux", "migrate"])

        # Namespace scope: every pod of the labelled namespace.
        golden(env, node_env, inj, "no-optin", path="/mutate/namespace",
               expect_name="namespace-scope")

        def no_patch(name, path="/mutate", allowed=True):
            r = load(name + ".review")
            st, reply = inj.review(r, path)
            resp = reply["response"]
            env.check("%s%s: allowed %s, no patch" % (name, " (namespace)" if "namespace" in path
                                                     else "", allowed),
                      st == 200 and resp["uid"] == r["request"]["uid"] and
                      resp["allowed"] is allowed and "patch" not in resp, json.dumps(reply)[:300])
            return resp

        no_patch("no-optin")
        no_patch("optout", "/mutate/namespace")
        no_patch("delete")
        no_patch("not-a-pod")
        no_patch("already-native")
        no_patch("already-native", "/mutate/namespace")
        resp = no_patch("bad-annotation", allowed=False)
        env.check("bad annotation: denied naming it",
                  "qrux.io/app-port" in resp.get("status", {}).get("message", ""), str(resp))

        # A dry run gets the same patch (the webhook has no side effects).
        st, reply = inj.review(load("dry-run.review"))
        st2, reply2 = inj.review(load("optin-native.review"))
        env.check("dry run: same patch as a real create",
                  k8s.patch_of(reply) == k8s.patch_of(reply2) and reply["response"]["allowed"])

        # Malformed input: an error review, and the server carries on.
        with open(os.path.join(REV, "malformed.review.json"), "rb") as f:
            bad = f.read()
        for name, body in (("malformed JSON", bad), ("v1beta1", json.dumps(load("v1beta1.review"))
                                                       .encode()),
                           ("empty body", b""), ("a JSON array", b"[1,2]"),
                           ("no uid", json.dumps({"apiVersion": "admission.k8s.io/v1",
                                                  "kind": "AdmissionReview",
                                                  "request": {}}).encode())):
            st, reply = inj.review(body)
            resp = reply.get("response", {})
            env.check("%s: HTTP 400 with an error AdmissionReview" % name,
                      st == 400 and reply.get("kind") == "AdmissionReview" and
                      resp.get("allowed") is False and resp.get("status", {}).get("code") == 400
                      and resp["status"].get("message"), json.dumps(reply)[:300])
        env.eq("still serving after garbage", inj.code("/livez"), 200)
        st, data, _ = inj.request("POST", "/mutate", b"{" * (5 << 20))
        env.eq("a body over 4 MiB: 413", st, 413)
        env.eq("GET /mutate: 405", inj.request("GET", "/mutate")[0], 405)
        env.eq("unknown path: 404", inj.request("GET", "/nope")[0], 404)

        # Metrics by result (the injector counted exactly what we sent).
        inj_n = inj.metric('qrux_inject_reviews_total{result="injected"}')
        # 4 golden reviews and the dry-run pair; the golden re-posts are skips
        env.eq("metrics: injected", inj_n, 4 + 2)
        env.eq("metrics: denied", inj.metric('qrux_inject_reviews_total{result="denied"}'), 1)
        env.eq("metrics: error", inj.metric('qrux_inject_reviews_total{result="error"}'), 5)
        env.eq("metrics: skipped", inj.metric('qrux_inject_reviews_total{result="skipped"}'),
               4 + 6)
    finally:
        inj.stop()


def promtool_metrics(env, cfg):
    inj = k8s.Injector(env, config=cfg)
    try:
        data = inj.request("GET", "/metrics")[1]
        p = subprocess.run([need("promtool"), "check", "metrics"], input=data,
                           capture_output=True, timeout=30)
        env.check("promtool check metrics accepts /metrics", p.returncode == 0,
                  (p.stdout + p.stderr).decode()[-500:])
    finally:
        inj.stop()


def kubelet_secret(d, files):
    """Writes |files| into |d| the way the kubelet updates a Secret volume:
    a new ..<ts> directory, ..data_tmp pointing at it renamed over ..data,
    the visible names symlinks through ..data; the old directory removed."""
    ts = os.path.join(d, "..%d" % time.monotonic_ns())
    os.makedirs(ts)
    for name, content in files.items():
        with open(os.path.join(ts, name), "wb") as f:
            f.write(content)
    old = os.readlink(os.path.join(d, "..data")) if os.path.islink(os.path.join(d, "..data")) \
        else None
    tmp = os.path.join(d, "..data_tmp")
    os.symlink(os.path.basename(ts), tmp)
    os.rename(tmp, os.path.join(d, "..data"))
    for name in files:
        link = os.path.join(d, name)
        if not os.path.islink(link):
            os.symlink(os.path.join("..data", name), link)
    if old:
        shutil.rmtree(os.path.join(d, old))


def cert_reload(env, cfg):
    d = os.path.join(env.dir, "secret-vol")
    os.makedirs(d)
    gen = os.path.join(env.dir, "gen")
    os.makedirs(gen)
    c1, k1 = k8s.make_cert(gen, "one")
    c2, k2 = k8s.make_cert(gen, "two")
    rd = lambda p: open(p, "rb").read()  # noqa: E731
    kubelet_secret(d, {"tls.crt": rd(c1), "tls.key": rd(k1)})
    # An Injector whose cert/key are the Secret volume's symlinks.
    port = free_port("tcp")
    log = open(os.path.join(env.dir, "reload.log"), "wb")
    p = harness.spawn([qrux_bin(), "inject", "--listen", "127.0.0.1:%d" % port, "--cert",
                       os.path.join(d, "tls.crt"), "--key", os.path.join(d, "tls.key"),
                       "--config", cfg], stdout=log, stderr=subprocess.STDOUT)
    inj = k8s.Injector.__new__(k8s.Injector)
    inj.port, inj.proc, inj.log = port, p, log
    try:
        wait_until(lambda: inj.code("/livez") == 200, 15)
        der = lambda: inj.request("GET", "/livez")[2]  # noqa: E731
        pem_der = lambda path: subprocess.run([need("openssl"), "x509", "-in", path, "-outform",  # noqa: E731
                                               "DER"], capture_output=True).stdout
        env.eq("serves the first certificate", der(), pem_der(c1))
        kubelet_secret(d, {"tls.crt": rd(c2), "tls.key": rd(k2)})
        env.check("after the ..data swap: new handshakes get the second certificate",
                  wait_until(lambda: der() == pem_der(c2), 10), inj.log_text()[-800:])
        env.eq("metrics: one certificate reload ok",
               inj.metric('qrux_inject_cert_reloads_total{result="ok"}'), 1)
        # A broken Secret (key of another cert): refused, the old one stays.
        kubelet_secret(d, {"tls.crt": rd(c1), "tls.key": rd(k2)})
        env.check("mismatched pair: reload refused and counted",
                  wait_until(lambda: inj.metric(
                      'qrux_inject_cert_reloads_total{result="error"}') == 1, 10),
                  inj.log_text()[-800:])
        env.eq("mismatched pair: still the second certificate", der(), pem_der(c2))
        env.check("the log says why", "does not belong" in inj.log_text(), inj.log_text()[-500:])
    finally:
        inj.stop()


def config_reload(env):
    d = os.path.join(env.dir, "cfg-vol")
    os.makedirs(d)
    kubelet_secret(d, {"inject.json": json.dumps({"image": "qrux:one"}).encode()})
    inj = k8s.Injector(env, config=os.path.join(d, "inject.json"))
    try:
        img = lambda: k8s.patch_of(inj.review(load("optin-native.review"))[1])[0]["value"][0][  # noqa: E731
            "image"]
        env.eq("options: image from the file", img(), "qrux:one")
        kubelet_secret(d, {"inject.json": json.dumps({"image": "qrux:two"}).encode()})
        env.check("options reloaded after the ..data swap",
                  wait_until(lambda: img() == "qrux:two", 10), inj.log_text()[-500:])
        kubelet_secret(d, {"inject.json": b'{"image": "qrux:three", "imagee": 1}'})
        env.check("a bad options file: refused, named, counted",
                  wait_until(lambda: inj.metric(
                      'qrux_inject_config_reloads_total{result="error"}') == 1, 10) and
                  "imagee: unknown key" in inj.log_text(), inj.log_text()[-500:])
        env.eq("the options in force stay", img(), "qrux:two")
        # SIGTERM: /readyz 503 while still answering reviews, then exit 0.
        inj.proc.send_signal(signal.SIGTERM)
        env.check("SIGTERM: /readyz 503", wait_until(lambda: inj.code("/readyz") == 503, 5))
        env.eq("SIGTERM: reviews still answered while draining", img(), "qrux:two")
        try:
            rc = inj.proc.wait(20)
        except subprocess.TimeoutExpired:
            rc = None
        env.eq("SIGTERM: exit 0 after the drain", rc, 0)
    finally:
        inj.stop()


def start_refusals(env):
    d = os.path.join(env.dir, "refuse")
    os.makedirs(d)
    c, k = k8s.make_cert(d, "a")
    c2, k2 = k8s.make_cert(d, "b")
    bad = os.path.join(d, "bad.json")
    with open(bad, "w") as f:
        f.write('{"appPort": 70000}')
    for name, args, want in (
            ("missing --cert", ["--listen", "127.0.0.1:1", "--key", k], "usage"),
            ("key of another certificate", ["--listen", "127.0.0.1:%d" % free_port("tcp"),
                                             "--cert", c, "--key", k2], "does not belong"),
            ("bad options file", ["--listen", "127.0.0.1:%d" % free_port("tcp"), "--cert", c,
                                   "--key", k, "--config", bad], "appPort: must be")):
        rc, out, err = run([qrux_bin(), "inject"] + args, timeout=15)
        env.check("%s: exit 2 naming it" % name, rc == 2 and want in err.decode(),
                  "rc=%s %s" % (rc, err.decode()[-300:]))
    rc, out, err = run([qrux_bin(), "inject", "--help"], timeout=10)
    env.check("qrux inject --help", rc == 0 and b"--lint" in out)


# ---------------------------------------------------------------------------
# --lint


LINT_BAD = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports:
    - {name: h3, port: 443, protocol: UDP, targetPort: h3}
    - {name: https, port: 443, protocol: TCP, targetPort: https}
---
apiVersion: v1
kind: Service
metadata: {name: tcp-only}
spec:
  ports:
    - {name: https, port: 443, targetPort: https}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web, qrux.io/inject: "true"}
    spec:
      containers:
        - name: app
          image: example/app
          ports: [{name: http, containerPort: 8080}]
          readinessProbe: {httpGet: {path: /health, port: http}}
          volumeMounts: [{name: cfg, mountPath: /etc/app/app.yaml, subPath: app.yaml}]
        - name: qrux
          image: qrux
          ports: [{name: https, containerPort: 8443}]
      volumes:
        - name: cfg
          configMap: {name: app-config}
"""


def lint(env, helm):
    d = os.path.join(env.dir, "lint")
    os.makedirs(d)
    bad = os.path.join(d, "bad.yaml")
    with open(bad, "w") as f:
        f.write(LINT_BAD)
    rc, out, err = run([qrux_bin(), "inject", "--lint", bad], timeout=15)
    text = out.decode()
    env.eq("lint: bad manifests exit 1", rc, 1, text + err.decode())
    for what, needle in (("TCP+UDP on one port, client-side", "Service/web: warning: port 443 is "
                                                                "declared for both TCP and UDP"),
                         ("no UDP port in a Service", "Service/tcp-only: warning: exposes"),
                         ("ConfigMap with subPath", "mounts ConfigMap volume cfg with subPath"),
                         ("qrux without a UDP port", "the qrux container declares no UDP port"),
                         ("probe on the app port", "readinessProbe on the app port 8080 bypasses")):
        env.check("lint warns: " + what, needle in text, text)
    env.eq("lint: five warnings", len(text.strip().splitlines()), 5, text)

    # The chart's and the base's own manifests: clean.
    rendered = os.path.join(d, "chart.yaml")
    rc, out, err = run([helm, "template", "qrux", os.path.join(k8s.SRC, "helm", "qrux"),
                        "--namespace", "qrux-system", "--set", "demo.enabled=true"], timeout=60)
    with open(rendered, "wb") as f:
        f.write(out)
    rc, out, err = run([qrux_bin(), "inject", "--lint", rendered,
                        os.path.join(k8s.SRC, "k8s", "example-app.yaml")], timeout=15)
    env.eq("lint: the chart and k8s/example-app.yaml are clean", rc, 0, out.decode())
    rc, out, err = run([qrux_bin(), "inject", "--lint", os.path.join(d, "missing.yaml")],
                       timeout=15)
    env.eq("lint: unreadable file exit 2", rc, 2)
    with open(os.path.join(d, "broken.yaml"), "w") as f:
        f.write("a: [1, 2\n")
    rc, out, err = run([qrux_bin(), "inject", "--lint", os.path.join(d, "broken.yaml")],
                       timeout=15)
    env.check("lint: YAML error exit 2 with the line", rc == 2 and b"line" in err, err.decode())


# ---------------------------------------------------------------------------
# shutdown in the kubelet's orders, requests in flight


def shutdown_orders(env):
    """qrux in front of the demo app (e2e/k8s/drain_app.py), requests in
    flight, then the two orders of the kubelet:

    native sidecar: SIGTERM to the app; it drains (no new connections,
      requests in flight finish) and exits; then qrux's preStop hook
      (POST /drain, wait) and SIGTERM to qrux; qrux drains and exits 0.
    regular container: qrux's preStop runs first (its SIGTERM waits for
      it), the app gets SIGTERM at the same time; then SIGTERM to qrux.

    Every request in flight when the stop began must get its 200."""
    for mode in ("native", "regular"):
        app_port = free_port("tcp")
        app = harness.spawn([sys.executable, os.path.join(k8s.K8S_DIR, "drain_app.py"),
                             "--port", str(app_port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
        app_line = app.stdout.readline().decode()
        env.check("%s: demo app up" % mode, app_line.startswith("listening"), app_line)
        aport = free_port("tcp")
        tok = os.path.join(env.dir, "token-%s" % mode)
        with open(tok, "w") as f:
            f.write("s3cret-%s\n" % mode)
        port = free_port("udp")
        q = env.qrux([("*", "127.0.0.1:%d" % app_port)], port=port,
                     limits={"graceful_shutdown_secs": 20},
                     extra_server="  https_listen: \"[::]:%d\"\n  drain_delay_secs: 1\n"
                                  "admin:\n  listen: \"127.0.0.1:%d\"\n  token_file: \"%s\"\n"
                                  % (port, aport, tok))
        results = []

        def get(path):
            try:
                rc, out, err = run([need("curl"), "-sk", "--http2", "-o", "/dev/null", "-w",
                                    "%{http_code}", "https://localhost:%d%s" % (q.port, path)],
                                   timeout=30)
                results.append(out.decode())
            except Exception as e:  # noqa: BLE001
                results.append(repr(e))
        h3 = env.gtls_start(q, ["/delay/2500", "/delay/2600"])
        threads = [threading.Thread(target=get, args=("/delay/2500",)) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.8)  # the requests are at the app now
        prestop = [qrux_bin(), "inject", "--prestop", "--admin", "127.0.0.1:%d" % aport,
                   "--token-file", tok, "--wait", "30"]
        if mode == "native":
            app.send_signal(signal.SIGTERM)
            rc_app = app.wait(30)
            env.eq("native: the app drained its requests and exited 0", rc_app, 0)
            rc, out, err = run(prestop, timeout=60)
            env.eq("native: qrux's preStop returned 0 once qrux had drained", rc, 0,
                   err.decode())
            q.signal(signal.SIGTERM)
        else:
            pre = harness.spawn(prestop, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            app.send_signal(signal.SIGTERM)
            env.check("regular: /readyz 503 once preStop ran",
                      wait_until(lambda: harness.http_get(aport, "/readyz")[0] == 503
                                 if q.alive() else True, 5))
            pre.wait(60)
            env.eq("regular: preStop returned 0", pre.returncode, 0)
            q.signal(signal.SIGTERM)
            app.wait(30)
        for t in threads:
            t.join(40)
        r = h3.finish()
        env.eq("%s: both HTTP/3 requests in flight got 200" % mode, sorted(r.statuses().values()), [200, 200],
               r.summary())
        env.eq("%s: all 6 HTTPS requests in flight got 200" % mode, results, ["200"] * 6)
        code = q.wait_exit(30)
        env.eq("%s: qrux exited 0" % mode, code, 0, q.log_tail())

# ---------------------------------------------------------------------------
# The XDP pod's two qrux containers, run as the kubelet runs them


class PodNet:
    """Network namespaces standing in for pod sandboxes (eth0, a veth whose
    peer sits in a client namespace) and a bpffs standing in for the node's
    /sys/fs/bpf (mode 0700, as systemd mounts it). Removed in close()."""

    def __init__(self, env):
        self.env = env
        self.tag = "qxi%d" % os.getpid()
        self.nets = []
        self.node = os.path.join(env.dir, "node-bpffs")
        os.makedirs(self.node)
        self.sh(["mount", "-t", "bpf", "-o", "mode=0700", "bpf", self.node])
        self.mounted = True

    def sh(self, cmd, check=True, timeout=60):
        rc, out, err = run(cmd, timeout=timeout)
        out, err = out.decode(errors="replace"), err.decode(errors="replace")
        if check and rc != 0:
            raise RuntimeError("%s: rc=%s %s %s" % (" ".join(cmd), rc, out, err))
        return rc, out, err

    def sandbox(self, n):
        """Sandbox |n|: namespace <tag>p<n> with eth0 10.216.<n>.1, its peer
        10.216.<n>.2 in <tag>c<n>. Returns the pod namespace's name."""
        pod, cli = "%sp%d" % (self.tag, n), "%sc%d" % (self.tag, n)
        for ns in (pod, cli):
            self.sh(["ip", "netns", "add", ns])
            self.nets.append(ns)
        self.sh(["ip", "link", "add", "eth0", "netns", pod, "type", "veth", "peer", "name",
                 "eth0", "netns", cli])
        for ns, a in ((pod, "10.216.%d.1" % n), (cli, "10.216.%d.2" % n)):
            self.sh(["ip", "-n", ns, "link", "set", "lo", "up"])
            self.sh(["ip", "-n", ns, "addr", "add", a + "/24", "dev", "eth0"])
            self.sh(["ip", "-n", ns, "link", "set", "eth0", "up"])
        return pod

    def remove_sandbox(self, n):
        """Deletes sandbox |n|'s two namespaces (and with them its veth)."""
        for ns in ("%sp%d" % (self.tag, n), "%sc%d" % (self.tag, n)):
            self.sh(["ip", "netns", "del", ns])
            self.nets.remove(ns)

    def container(self, ns, c, pod_uid, volumes, user=None):
        """The argv that runs container |c| of the pod as a runtime would:
        in the sandbox |ns|, its bpffs mount (hostPath + subPathExpr, the
        directory made by the kubelet with the mode of the volume's root),
        then its user and capabilities (uid 0: the added ones in every set;
        another uid: none effective, the added ones only in the bounding
        set, as Kubernetes does it)."""
        envs = {e["name"]: e for e in c.get("env", [])}
        binds = []
        for m in c["volumeMounts"]:
            vol = volumes[m["name"]]
            if "hostPath" not in vol:
                continue
            sub = m.get("subPathExpr", "")
            for name in re.findall(r"\$\((\w+)\)", sub):
                e = envs.get(name)
                if e is None or e["valueFrom"]["fieldRef"]["fieldPath"] != "metadata.uid":
                    raise RuntimeError("subPathExpr names %s, not the pod's uid" % name)
                sub = sub.replace("$(%s)" % name, pod_uid)
            if vol["hostPath"]["path"] != "/sys/fs/bpf":
                raise RuntimeError("unexpected hostPath %s" % vol["hostPath"])
            src = os.path.join(self.node, sub)
            if not os.path.isdir(src):
                # the kubelet's mkdirat with the volume root's Go FileMode:
                # its permission bits (Go's sticky flag is not S_ISVTX)
                os.mkdir(src, os.stat(self.node).st_mode & 0o777)
            binds += [src, m["mountPath"]]
        sc = c["securityContext"]
        add = ",".join("+" + a.lower() for a in sc["capabilities"].get("add", []))
        bounding = "-all" + ("," + add if add else "")
        if user is None:
            user = sc["runAsUser"]
        who = ([] if user == 0 else
               ["--reuid=%d" % user, "--regid=%d" % sc.get("runAsGroup", user),
                "--clear-groups"])
        script = 'while [ "$1" != -- ]; do mount --bind "$1" "$2" && shift 2 || exit 99; ' \
                 'done; shift; exec "$@"'
        return (["ip", "netns", "exec", ns, "sh", "-c", script, "sh"] + binds + ["--"] +
                [need("setpriv")] + who + ["--inh-caps=-all", "--bounding-set=" + bounding])

    def close(self):
        for ns in self.nets:
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        if self.mounted:
            subprocess.run(["umount", self.node], stderr=subprocess.DEVNULL)
            self.mounted = False


def without(c, cap):
    """Container |c| with capability |cap| not added."""
    sc = c["securityContext"]
    caps = dict(sc["capabilities"], add=[a for a in sc["capabilities"]["add"] if a != cap])
    return dict(c, securityContext=dict(sc, capabilities=caps))


def xdp_pod(env, cfg):
    """The XDP pod of optin-annotations as the webhook makes it, its two qrux
    containers run from the patch (args, env, bpffs mount, user,
    capabilities) in network namespaces: the init container attaches and
    hands the pins over; the sidecar, uid 65532 with no effective
    capability, opens them: its CID key reaches the filter (a junk short
    header is then dropped as bad_cid), the deny list API writes the map,
    /metrics reads the counters. A second pod on the node keeps its own
    filter and leaves the first one's alone; the init container run again in
    a new sandbox (the old one removed, as the kubelet does) reuses the pins
    it handed over, with no CAP_DAC_OVERRIDE: attach takes them back."""
    inj = k8s.Injector(env, config=cfg)
    try:
        review = load("optin-annotations.review")
        st, reply = inj.review(review)
        pod = k8s.apply_patch(review["request"]["object"], k8s.patch_of(reply))
    finally:
        inj.stop()
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    _, x = container(pod, "qrux-xdp")
    _, q = container(pod, "qrux")
    aport, port = 9901, 8443  # the pod's own namespace: the injected ports
    env.eq("the sidecar listens where the init container filters",
           x["args"][x["args"].index("--quic-port") + 1], str(port))

    os.chmod(env.dir, 0o711)  # the sidecar (65532) reads its config and cert here
    tok = os.path.join(env.dir, "xdp-admin-token")
    with open(tok, "w") as f:
        f.write("xdp-pod-token\n")
    env.cert()
    tls = os.path.join(env.dir, "xdp-tls")
    os.makedirs(tls)
    for n in ("cert.pem", "key.pem"):
        shutil.copy(os.path.join(env.dir, n), tls)
    for p in [tls, tok] + [os.path.join(tls, n) for n in os.listdir(tls)]:
        os.chmod(p, 0o755 if os.path.isdir(p) else 0o644)
    path, _ = env.write_config(
        [("*", "127.0.0.1:%d" % free_port("tcp"))], port=port, name="xdp-pod.yaml",
        extra_server="admin:\n  listen: \"127.0.0.1:%d\"\n  token_file: \"%s\"\n"
                     "xdp:\n  pin: \"/sys/fs/bpf\"\n" % (aport, tok))
    with open(path) as f:
        text = f.read().replace('"cert.pem"', '"xdp-tls/cert.pem"').replace(
            '"key.pem"', '"xdp-tls/key.pem"')
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)

    net = PodNet(env)
    side = None
    try:
        uid1, uid2 = "0b5e0a1e-0000-4000-8000-000000000001", "0b5e0a1e-0000-4000-8000-000000000002"
        ns1 = net.sandbox(1)
        rc, out, err = net.sh(net.container(ns1, without(x, "PERFMON"), uid1, volumes) +
                              [qrux_bin()] + x["args"], check=False)
        env.check("init container without CAP_PERFMON: refused, and the loader names it "
                  "(why it has it)", rc != 0 and "CAP_PERFMON" in err, err[-300:])
        rc, out, err = net.sh(net.container(ns1, x, uid1, volumes) + [qrux_bin()] + x["args"],
                              check=False)
        env.check("init container: qrux xdp attach exit 0, pinned on its mount",
                  rc == 0 and "pinned under /sys/fs/bpf" in out, out + err)
        own = os.path.join(net.node, "qrux-" + uid1)
        st = os.stat(own)
        env.eq("the pod's bpffs directory is the sidecar's (--pin-owner)",
               (st.st_uid, st.st_gid, oct(st.st_mode & 0o777)), (65532, 65532, "0o700"))
        env.eq("nothing pinned outside the pod's directory",
               sorted(n for n in os.listdir(net.node) if not n.endswith(".debug")),
               ["qrux-" + uid1])  # *.debug: the kernel's preloaded iterators

        def in1(cmd):
            return ["ip", "netns", "exec", ns1] + cmd

        def admin(path, method="GET", body=None):
            cmd = [need("curl"), "-s", "-o", "-", "-w", "\n%{http_code}", "-X", method,
                   "-H", "Authorization: Bearer xdp-pod-token",
                   "http://127.0.0.1:%d%s" % (aport, path)]
            if body is not None:
                cmd += ["-H", "Content-Type: application/json", "--data-binary", body]
            _, out, _ = net.sh(in1(cmd), check=False)
            text, _, code = out.rpartition("\n")
            return (int(code) if code.isdigit() else None), text

        def status(ns, d):
            return net.sh(["ip", "netns", "exec", ns, qrux_bin(), "xdp", "status", "--pin", d],
                          check=False)

        def packets(reason):
            _, text = admin("/metrics")
            m = re.search(r'qrux_xdp_packets_total\{verdict="\w+",reason="%s"\} (\d+)' % reason,
                          text)
            return int(m.group(1)) if m else None

        def junk_short_headers(n):
            code = ("import socket,os\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                    "for _ in range(%d): s.sendto(bytes([0x40])+os.urandom(59),"
                    "('10.216.1.1',%d))\n" % (n, port))
            net.sh(["ip", "netns", "exec", "%sc1" % net.tag, "/usr/bin/python3", "-c", code])

        rc, out, _ = status(ns1, own)
        env.check("before the sidecar: no CID key in the filter", "none" in out, out)

        e = dict(os.environ, QRUX_LOG="info")
        logpath = os.path.join(env.dir, "xdp-sidecar.log")
        with open(logpath, "wb") as log:
            side = harness.spawn(net.container(ns1, q, uid1, volumes) +
                                 [env.qrux_alias(), "--config", path],
                                 stdout=subprocess.DEVNULL, stderr=log, env=e)

        def side_log():
            with open(logpath, errors="replace") as f:
                return f.read()[-1500:]
        env.check("sidecar ready", wait_until(lambda: admin("/readyz")[0] == 200, 20), side_log())
        with open("/proc/%d/status" % side.pid) as f:
            st = dict(ln.split(":", 1) for ln in f.read().splitlines() if ":" in ln)
        env.eq("the sidecar runs as 65532 with no effective capability",
               (st["Uid"].split()[0], st["CapEff"].strip()), ("65532", "0000000000000000"))
        env.check("the sidecar opened the pod's maps: qrux_xdp_attached 1",
                  wait_until(lambda: "qrux_xdp_attached 1" in admin("/metrics")[1], 10),
                  side_log())
        rc, out, _ = status(ns1, own)
        env.check("its CID key is in the filter", re.search(r"CID keys: generation \d+", out),
                  out)
        before = packets("bad_cid")
        junk_short_headers(20)
        env.check("junk short headers: dropped as bad_cid (the key checks them)",
                  wait_until(lambda: (packets("bad_cid") or 0) - (before or 0) >= 20, 10),
                  "bad_cid %s -> %s, no_key %s" % (before, packets("bad_cid"),
                                                   packets("no_key")))
        stc, body = admin("/xdp/denylist", "PUT", '["10.216.9.0/24"]')
        env.eq("PUT /xdp/denylist from the sidecar: 200", stc, 200, body)
        rc, out, _ = status(ns1, own)
        env.check("the deny list reached the pinned map", "deny list: 1 prefixes" in out, out)

        # A second pod on the node: its own directory, its own filter.
        ns2 = net.sandbox(2)
        rc, out, err = net.sh(net.container(ns2, x, uid2, volumes) + [qrux_bin()] + x["args"],
                              check=False)
        env.eq("second pod's init container: exit 0", rc, 0, out + err)
        rc, out, _ = status(ns1, own)
        env.check("the first pod keeps its filter, key and deny list",
                  rc == 0 and "attached: interface eth0" in out and "generation" in out and
                  "deny list: 1 prefixes" in out, out)
        rc, out, _ = status(ns2, os.path.join(net.node, "qrux-" + uid2))
        env.check("the second pod has a filter of its own (no key yet, empty deny list)",
                  rc == 0 and "none" in out and "deny list: 0 prefixes" in out, out)
        env.eq("the sidecar still sees its filter",
               "qrux_xdp_attached 1" in admin("/metrics")[1], True)

        # The first pod's sandbox recreated: the kubelet stops its
        # containers and removes the old sandbox (its eth0 and the link's
        # interface go with it), then the init container runs again with
        # the same uid, over pins 65532 owns.
        side.send_signal(signal.SIGTERM)
        env.eq("the first sandbox's sidecar stops: exit 0", side.wait(30), 0, side_log())
        side = None
        net.remove_sandbox(1)
        rc, out, _ = net.sh([qrux_bin(), "xdp", "status", "--pin", own], check=False)
        env.check("the old sandbox gone: its pinned link is dead", "not attached" in out,
                  out)
        ns3 = net.sandbox(3)
        argv = [qrux_bin()] + x["args"]
        env.eq("the init container's capabilities: exactly these",
               x["securityContext"]["capabilities"]["add"], ["BPF", "PERFMON", "NET_ADMIN", "CHOWN"])
        rc, out, err = net.sh(net.container(ns3, x, uid1, volumes) + argv, check=False)
        env.check("init container again, its capabilities: exit 0, maps reused",
                  rc == 0 and "pinned under" in out, out + err)
        rc, out, _ = status(ns3, own)
        env.check("the deny list survived the new sandbox", "deny list: 1 prefixes" in out, out)
    finally:
        if side is not None and side.poll() is None:
            side.send_signal(signal.SIGKILL)
            side.wait(10)
        net.close()



def main():
    with Env("inject") as env:
        helm, kubectl, node_env = k8s.tools()
        cfg = os.path.join(env.dir, "inject.json")
        with open(cfg, "w") as f:
            json.dump(OPTS, f)
        env.case("golden reviews", reviews, env, node_env, cfg)
        env.case("/metrics passes promtool", promtool_metrics, env, cfg)
        env.case("certificate reload, the kubelet's way", cert_reload, env, cfg)
        env.case("options reload and SIGTERM", config_reload, env)
        env.case("start refusals", start_refusals, env)
        env.case("--lint", lint, env, helm)
        env.case("shutdown in the kubelet's orders", shutdown_orders, env)
        env.case("the XDP pod's containers, run", xdp_pod, env, cfg)


if __name__ == "__main__":
    main()
