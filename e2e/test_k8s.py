#!/usr/bin/env python3
"""The Helm chart (helm/qrux) and the kustomize base (k8s/) with the real
helm 4 and kubectl 1.35 (scripts/k8s-tools.sh): `helm lint --strict` and
`helm template` over a matrix of values files (e2e/k8s/values/), every
rendered object validated against the Kubernetes schemas with unknown field
names refused (e2e/k8s/validate.js), and shown to fail on a typo such as
`readOnlyRootFileSystem`; values.schema.json refusing unknown keys and bad
values; what the chart promises checked in the rendered objects (webhook
scope and policy, PDB, rolling update, no checksum annotation, labels,
the helm test hook, NOTES); the sidecar ConfigMap accepted by `qrux check`
and the injector ConfigMap by `qrux inject`; `kubectl kustomize k8s/`
validated the same way, and its example app still what the injector makes.
"""

import copy
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "k8s"))
import harness  # noqa: E402
import k8s  # noqa: E402
from harness import Env, qrux_bin, run  # noqa: E402

CHART = os.path.join(k8s.SRC, "helm", "qrux")
VALUES = os.path.join(k8s.K8S_DIR, "values")
NS = "qrux-system"


def yaml_docs(text):
    """Parses YAML with Debian's python3-yaml (what the e2e tests run under)."""
    import yaml
    return [d for d in yaml.safe_load_all(text) if d]


def render(helm, env, name, extra=()):
    rc, out, err = run([helm, "template", "qrux", CHART, "--namespace", NS] + list(extra),
                       timeout=120)
    return rc, out.decode(), err.decode()


def by_kind(docs, kind, name=None):
    return [d for d in docs if d["kind"] == kind and (name is None or
                                                       d["metadata"]["name"] == name)]


def chart_matrix(env, helm, node_env):
    files = sorted(f for f in os.listdir(VALUES) if f.endswith(".yaml"))
    env.check("a matrix of values files", len(files) >= 4, str(files))
    for f in files:
        vf = os.path.join(VALUES, f)
        rc, out, err = run([helm, "lint", "--strict", CHART, "--namespace", NS, "-f", vf],
                           timeout=120)
        env.eq("%s: helm lint --strict" % f, rc, 0, (out + err).decode()[-1500:])
        rc, text, err = render(helm, env, f, ["-f", vf])
        env.eq("%s: helm template" % f, rc, 0, err[-1500:])
        path = os.path.join(env.dir, "rendered-" + f)
        with open(path, "w") as fh:
            fh.write(text)
        ok, out = k8s.validate([path], node_env)
        env.check("%s: every object schema-valid, no unknown fields" % f, ok, out[-2000:])
        rc, out, err = run([qrux_bin(), "inject", "--lint", path], timeout=30)
        env.eq("%s: qrux inject --lint finds nothing" % f, rc, 0, out.decode())
        docs = yaml_docs(text)
        chart_promises(env, f, docs)
        monitoring_objects(env, f, docs)
        sidecar_config(env, f, docs)
        injector_options(env, f, docs)
        xdp_gc(env, f, docs)


def chart_promises(env, f, docs):
    """What the issue asks of the chart, read in the rendered objects."""
    import yaml
    vals = yaml.safe_load(open(os.path.join(VALUES, f))) or {}
    inj = vals.get("injector", {})
    demo_on = vals.get("demo", {}).get("enabled", False)
    cm = inj.get("certManager", {}).get("enabled", False)

    for d in docs:
        labels = d["metadata"].get("labels", {})
        missing = [k for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                               "app.kubernetes.io/version", "app.kubernetes.io/managed-by",
                               "helm.sh/chart") if k not in labels]
        if missing:
            env.check("%s: %s/%s has the standard labels" % (f, d["kind"], d["metadata"]["name"]),
                      False, str(missing))
    env.check("%s: no checksum annotation anywhere (qrux reloads live)" % f,
              "checksum/" not in json.dumps(docs))

    dep = by_kind(docs, "Deployment", "qrux-injector")[0]
    env.eq("%s: injector replicas" % f, dep["spec"]["replicas"], inj.get("replicas", 2))
    c = dep["spec"]["template"]["spec"]["containers"][0]
    env.eq("%s: injector runs qrux inject" % f, c["args"][0], "inject")
    env.eq("%s: injector probes /readyz /livez over HTTPS" % f,
           (c["readinessProbe"]["httpGet"]["path"], c["livenessProbe"]["httpGet"]["path"],
            c["readinessProbe"]["httpGet"]["scheme"]), ("/readyz", "/livez", "HTTPS"))
    env.eq("%s: injector read-only, non-root, no caps" % f,
           (c["securityContext"]["readOnlyRootFilesystem"], c["securityContext"]["runAsUser"],
            c["securityContext"]["capabilities"]), (True, 65532, {"drop": ["ALL"]}))
    pdb = by_kind(docs, "PodDisruptionBudget")[0]
    env.eq("%s: PDB keeps one injector" % f, pdb["spec"]["minAvailable"], 1)
    svc = by_kind(docs, "Service", "qrux-injector")[0]
    env.eq("%s: injector Service 443 -> webhook" % f,
           (svc["spec"]["ports"][0]["port"], svc["spec"]["ports"][0]["targetPort"]),
           (443, "webhook"))
    sa = by_kind(docs, "ServiceAccount")
    env.check("%s: ServiceAccount without token, no Role or ClusterRole" % f,
              len(sa) == 1 and sa[0]["automountServiceAccountToken"] is False and
              not any(d["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
                      for d in docs))

    mwc = by_kind(docs, "MutatingWebhookConfiguration")[0]
    hooks = {w["name"]: w for w in mwc["webhooks"]}
    env.eq("%s: two webhooks (pod label, namespace label)" % f, sorted(hooks),
           ["namespace.inject.qrux.io", "pod.inject.qrux.io"])
    for name, w in hooks.items():
        excl = [e for e in w["namespaceSelector"]["matchExpressions"]
                if e["key"] == "kubernetes.io/metadata.name"][0]
        env.check("%s: %s excludes its own namespace" % (f, name),
                  excl["operator"] == "NotIn" and NS in excl["values"] and
                  "kube-system" in excl["values"], json.dumps(excl))
        env.eq("%s: %s policy" % (f, name),
               (w["failurePolicy"], w["sideEffects"], w["reinvocationPolicy"],
                w["timeoutSeconds"], w["admissionReviewVersions"], w["rules"][0]["operations"],
                w["rules"][0]["resources"]),
               (inj.get("failurePolicy", "Fail"), "None", "IfNeeded",
                inj.get("timeoutSeconds", 5), ["v1"], ["CREATE"], ["pods"]))
    env.eq("%s: pod webhook path and selector" % f,
           (hooks["pod.inject.qrux.io"]["clientConfig"]["service"]["path"],
            hooks["pod.inject.qrux.io"]["objectSelector"]["matchExpressions"][0]["values"]),
           ("/mutate", ["true"]))
    env.eq("%s: namespace webhook path" % f,
           hooks["namespace.inject.qrux.io"]["clientConfig"]["service"]["path"],
           "/mutate/namespace")
    secrets = by_kind(docs, "Secret", "qrux-injector-tls")
    if cm:
        env.check("%s: cert-manager: Certificate, CA injection, no generated Secret" % f,
                  by_kind(docs, "Certificate") and by_kind(docs, "Issuer") and not secrets and
                  mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] ==
                  "%s/qrux-injector" % NS and
                  "caBundle" not in json.dumps(mwc))
    else:
        import base64
        ca = base64.b64decode(secrets[0]["data"]["ca.crt"])
        bundle = base64.b64decode(hooks["pod.inject.qrux.io"]["clientConfig"]["caBundle"])
        env.check("%s: generated TLS: the caBundle is the Secret's CA" % f,
                  ca == bundle and b"BEGIN CERTIFICATE" in ca)
        # The serving certificate names the Service and is signed by that CA.
        d = os.path.join(env.dir, "ca-" + f)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "ca.pem"), "wb") as fh:
            fh.write(ca)
        with open(os.path.join(d, "tls.pem"), "wb") as fh:
            fh.write(base64.b64decode(secrets[0]["data"]["tls.crt"]))
        p = subprocess.run([harness.need("openssl"), "verify", "-CAfile",
                            os.path.join(d, "ca.pem"), os.path.join(d, "tls.pem")],
                           capture_output=True)
        san = subprocess.run([harness.need("openssl"), "x509", "-in", os.path.join(d, "tls.pem"),
                              "-noout", "-ext", "subjectAltName"], capture_output=True).stdout
        env.check("%s: serving cert verifies against the CA, names the Service" % f,
                  p.returncode == 0 and b"qrux-injector.qrux-system.svc" in san,
                  (p.stdout + p.stderr + san).decode())
    test = [d for d in by_kind(docs, "Pod")
            if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    env.check("%s: helm test hook calls the injector's /readyz" % f,
              len(test) == 1 and any("/readyz" in a for a in
                                     test[0]["spec"]["containers"][0]["args"]))

    demo = by_kind(docs, "Deployment", "qrux-demo")
    env.eq("%s: demo present iff enabled" % f, bool(demo), demo_on)
    if demo_on:
        s = demo[0]["spec"]
        env.eq("%s: demo rolling update gated on readiness" % f,
               (s["strategy"]["rollingUpdate"], s["minReadySeconds"] > 0),
               ({"maxUnavailable": 0, "maxSurge": 1}, True))
        cfg = vals.get("config", {}).get("server", {})
        drain = cfg.get("drainDelaySecs", 5) + cfg.get("gracefulShutdownSecs", 30)
        pre = vals.get("sidecar", {}).get("drainDelaySecs", 5)
        env.check("%s: demo grace period > preStop wait + drain + graceful shutdown" % f,
                  s["template"]["spec"]["terminationGracePeriodSeconds"] > pre + drain,
                  str(s["template"]["spec"]["terminationGracePeriodSeconds"]))
        env.eq("%s: demo pods opted in" % f,
               s["template"]["metadata"]["labels"].get("qrux.io/inject"), "true")
        dsvc = by_kind(docs, "Service", "qrux-demo")[0]
        env.eq("%s: demo Service: UDP h3 and TCP https, distinct names" % f,
               sorted((p["name"], p["protocol"], p["targetPort"]) for p in dsvc["spec"]["ports"]),
               [("h3", "UDP", "h3"), ("https", "TCP", "https")])


def sidecar_config(env, f, docs):
    """The chart's qrux.yaml is a config qrux accepts (`qrux check`), with
    the mount paths pointed at a test certificate."""
    cms = [d for d in by_kind(docs, "ConfigMap", "qrux-config")]
    import yaml
    vals = yaml.safe_load(open(os.path.join(VALUES, f))) or {}
    want = set(vals.get("sidecar", {}).get("namespaces", []))
    if vals.get("demo", {}).get("enabled"):
        want.add(vals["demo"].get("namespace", "qrux-demo"))
    env.eq("%s: the sidecar ConfigMap in each namespace" % f,
           sorted(d["metadata"]["namespace"] for d in cms), sorted(want))
    if not cms:
        return
    d = os.path.join(env.dir, "check-" + f)
    os.makedirs(d, exist_ok=True)
    cert, key = k8s.make_cert(d, "tls")
    with open(os.path.join(d, "admin-token"), "w") as fh:
        fh.write("t0ken\n")
    text = cms[0]["data"]["qrux.yaml"]
    text = text.replace("/etc/qrux-tls/tls.crt", cert).replace("/etc/qrux-tls/tls.key", key) \
        .replace("/etc/qrux-tls/admin-token", os.path.join(d, "admin-token"))
    path = os.path.join(d, "qrux.yaml")
    with open(path, "w") as fh:
        fh.write(text)
    rc, out, err = run([qrux_bin(), "check", "--config", path], timeout=30)
    env.eq("%s: qrux check accepts the chart's qrux.yaml" % f, rc, 0,
           (out + err).decode() + text)


def injector_options(env, f, docs):
    """The injector ConfigMap's inject.json is what `qrux inject --config`
    takes: a review through it carries the chart's image and choices."""
    cm = by_kind(docs, "ConfigMap", "qrux-injector")[0]
    path = os.path.join(env.dir, "inject-%s.json" % f)
    with open(path, "w") as fh:
        fh.write(cm["data"]["inject.json"])
    opts = json.loads(cm["data"]["inject.json"])
    inj = k8s.Injector(env, config=path)
    try:
        with open(os.path.join(k8s.K8S_DIR, "reviews", "optin-native.review.json")) as fh:
            review = json.load(fh)
        st, reply = inj.review(review)
        pod = k8s.apply_patch(review["request"]["object"], k8s.patch_of(reply))
        names = [c["name"] for c in pod["spec"].get("initContainers", [])]
        q = [c for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]
             if c["name"] == "qrux"][0]
        env.eq("%s: injected with the chart's options" % f,
               (q["image"], q["imagePullPolicy"], "restartPolicy" in q, "qrux-xdp" in names,
                q["resources"]),
               (opts["image"], opts["imagePullPolicy"], opts["nativeSidecar"], opts["xdp"],
                opts["resources"]))
    finally:
        inj.stop()


GC_DEFAULTS = {"everySecs": 300, "tolerations": [{"operator": "Exists"}], "nodeSelector": {},
               "resources": {"requests": {"cpu": "5m", "memory": "16Mi"},
                             "limits": {"memory": "32Mi"}}}


def xdp_gc(env, f, docs):
    """xdpGc: the DaemonSet of `qrux xdp gc` iff XDP is on (or asked for),
    with the values' schedule, tolerations, node selector and resources."""
    import yaml
    vals = yaml.safe_load(open(os.path.join(VALUES, f))) or {}
    gcv = dict(GC_DEFAULTS, **vals.get("xdpGc", {}))
    on = gcv.get("enabled", "auto")
    want = on is True or (on == "auto" and vals.get("sidecar", {}).get("xdp", False))
    ds = by_kind(docs, "DaemonSet")
    env.eq("%s: the xdp gc DaemonSet iff XDP is on" % f,
           [d["metadata"]["name"] for d in ds], ["qrux-xdp-gc"] if want else [])
    if ds:
        gc_daemonset(env, f, ds[0], gcv)


def gc_daemonset(env, what, ds, gcv):
    """What README "Kubernetes" and bpf/README.md say the gc DaemonSet
    runs and gets, and what e2e/test_xdp_gc.py runs gc with: root with
    CAP_BPF and CAP_CHOWN only, read-only, RuntimeDefault, the node's
    /sys/fs/bpf on /host-bpf."""
    spec = ds["spec"]["template"]["spec"]
    c = spec["containers"][0]
    env.eq("%s: xdp gc: one container running qrux xdp gc --every" % what,
           (len(spec["containers"]), c["command"][0].endswith("/qrux"), c["args"]),
           (1, True, ["xdp", "gc", "--root", "/host-bpf", "--every", str(gcv["everySecs"])]))
    env.eq("%s: xdp gc: root, read-only, only BPF and CHOWN, RuntimeDefault" % what,
           c["securityContext"],
           {"runAsNonRoot": False, "runAsUser": 0, "runAsGroup": 0,
            "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["BPF", "CHOWN"]},
            "seccompProfile": {"type": "RuntimeDefault"}})
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    vols = {v["name"]: v.get("hostPath") for v in spec["volumes"]}
    env.eq("%s: xdp gc: the node's /sys/fs/bpf on /host-bpf, nothing else" % what,
           (mounts, vols), ({"bpffs": "/host-bpf"},
                            {"bpffs": {"path": "/sys/fs/bpf", "type": "Directory"}}))
    env.eq("%s: xdp gc: no token, pod seccomp, resources, tolerations, node selector" % what,
           (spec["automountServiceAccountToken"], spec["securityContext"], c["resources"],
            spec.get("tolerations"), spec.get("nodeSelector", {})),
           (False, {"seccompProfile": {"type": "RuntimeDefault"}}, gcv["resources"],
            gcv["tolerations"] or None, gcv["nodeSelector"]))
    # The docs name the same command and capabilities.
    with open(os.path.join(k8s.SRC, "README.md")) as fh:
        readme = fh.read()
    with open(os.path.join(k8s.SRC, "bpf", "README.md")) as fh:
        bpf_readme = fh.read()
    cmd = "qrux xdp gc --root /host-bpf --every"
    caps = " and ".join("`CAP_%s`" % a for a in c["securityContext"]["capabilities"]["add"])
    env.check("%s: xdp gc: README and bpf/README.md name its command and capabilities" % what,
              cmd in readme and caps in readme and cmd in bpf_readme and
              "add: [BPF, CHOWN]" in bpf_readme, caps)


def xdp_gc_switch(env, helm):
    """xdpGc.enabled: auto follows sidecar.xdp; true and false override."""
    for args, want in ((["--set", "sidecar.xdp=true"], True),
                       (["--set", "sidecar.xdp=true", "--set", "xdpGc.enabled=false"], False),
                       (["--set", "xdpGc.enabled=true"], True),
                       ([], False)):
        rc, text, err = render(helm, env, "gc", args)
        env.eq("xdp gc DaemonSet with %s" % (" ".join(args[1::2]) or "the defaults"),
               (rc, len(by_kind(yaml_docs(text), "DaemonSet")) if rc == 0 else err[-300:]),
               (0, 1 if want else 0))
    rc, out, err = run([helm, "install", "qrux", CHART, "--namespace", NS, "--dry-run=client",
                        "--set", "sidecar.xdp=true"], timeout=120,
                       env=dict(os.environ, KUBECONFIG=os.path.join(env.dir, "no-kubeconfig")))
    text = out.decode()
    env.check("NOTES.txt with XDP says where gc logs what it removed",
              rc == 0 and "kubectl -n %s logs ds/qrux-xdp-gc" % NS in text[text.find("NOTES:"):],
              (text + err.decode())[-600:])


MON = os.path.join(k8s.SRC, "k8s", "monitoring")


def monitoring_objects(env, f, docs):
    """monitoring.*: each object only when its switch is on; the PodMonitor
    finds what the injector makes (the qrux-admin port, the qrux.io/status
    annotation) with the admin token when the admin listener is not
    loopback; the PrometheusRule and the dashboard are the files of
    k8s/monitoring."""
    import yaml
    vals = yaml.safe_load(open(os.path.join(VALUES, f))) or {}
    mon = vals.get("monitoring", {})
    side = vals.get("sidecar", {})
    on = {k: mon.get(k, {}).get("enabled", False)
          for k in ("podMonitor", "serviceMonitor", "prometheusRule", "dashboard")}
    pms = by_kind(docs, "PodMonitor")
    sms = by_kind(docs, "ServiceMonitor")
    prs = by_kind(docs, "PrometheusRule")
    dcm = [d for d in by_kind(docs, "ConfigMap")
           if "grafana_dashboard" in d["metadata"].get("labels", {})]
    env.eq("%s: monitoring objects only when switched on" % f,
           (bool(pms), bool(sms), bool(prs), bool(dcm)),
           (on["podMonitor"], on["serviceMonitor"], on["prometheusRule"], on["dashboard"]))
    if pms:
        want_ns = mon["podMonitor"].get("namespaces") or side.get("namespaces", [])
        env.eq("%s: one PodMonitor per namespace" % f,
               sorted(p["metadata"]["namespace"] for p in pms), sorted(want_ns))
        cfg = yaml.safe_load(by_kind(docs, "ConfigMap", side.get("configMap", "qrux-config"))[0]
                             ["data"]["qrux.yaml"])
        listen = cfg["admin"]["listen"]
        loopback = listen.startswith(("127.", "[::1]", "localhost:"))
        for p in pms:
            ep = p["spec"]["podMetricsEndpoints"][0]
            ns = p["metadata"]["namespace"]
            env.eq("%s: PodMonitor %s watches its own namespace" % (f, ns),
                   p["spec"]["namespaceSelector"], {"matchNames": [ns]})
            env.eq("%s: PodMonitor %s scrapes the sidecar's admin port" % (f, ns),
                   (ep["port"], ep["path"], ep["interval"]),
                   ("qrux-admin", "/metrics", mon["podMonitor"].get("interval", "30s")))
            env.eq("%s: PodMonitor %s keeps only injected pods" % (f, ns), ep["relabelings"],
                   [{"sourceLabels": ["__meta_kubernetes_pod_annotationpresent_qrux_io_status"],
                     "regex": "true", "action": "keep"}])
            want_auth = None if loopback else {
                "type": "Bearer", "credentials": {"name": side.get("tlsSecret", "qrux-tls"),
                                                  "key": "admin-token"}}
            env.eq("%s: PodMonitor %s: the admin token (admin.listen %s)" % (f, ns, listen),
                   ep.get("authorization"), want_auth)
            env.eq("%s: PodMonitor %s labels" % (f, ns), p["metadata"]["labels"].get("release"),
                   mon["podMonitor"].get("labels", {}).get("release"))
        # What the PodMonitor relies on is what the injector makes.
        app = [d for d in yaml_docs(open(os.path.join(k8s.SRC, "k8s", "example-app.yaml")).read())
               if d["kind"] == "Deployment"][0]["spec"]["template"]
        side_c = [c for c in app["spec"].get("initContainers", []) + app["spec"]["containers"]
                  if c["name"] == "qrux"][0]
        env.check("%s: the injected sidecar has the port qrux-admin and the pod the "
                  "qrux.io/status annotation" % f,
                  "qrux-admin" in [p.get("name") for p in side_c["ports"]] and
                  "qrux.io/status" in app["metadata"].get("annotations", {}))
        token_mount = [m for m in side_c["volumeMounts"] if m["mountPath"] == "/etc/qrux-tls"]
        env.check("%s: the sidecar reads its token from that Secret's admin-token" % f,
                  token_mount and cfg["admin"].get("token_file") == "/etc/qrux-tls/admin-token",
                  json.dumps(side_c["volumeMounts"]))
    if sms:
        sm = sms[0]
        svc = by_kind(docs, "Service", "qrux-injector")[0]
        sel = sm["spec"]["selector"]["matchLabels"]
        env.check("%s: ServiceMonitor selects the injector Service" % f,
                  all(svc["metadata"]["labels"].get(k) == v for k, v in sel.items()), sel)
        ep = sm["spec"]["endpoints"][0]
        env.eq("%s: ServiceMonitor: HTTPS /metrics on the webhook port, CA from its Secret" % f,
               (ep["port"], ep["scheme"], ep["path"], ep["tlsConfig"]["ca"]["secret"]),
               ("webhook", "https", "/metrics", {"name": "qrux-injector-tls", "key": "ca.crt"}))
    for name in ("qrux-alerts.yaml", "qrux-dashboard.json"):
        with open(os.path.join(MON, name), "rb") as a, \
                open(os.path.join(CHART, "files", name), "rb") as b:
            env.check("%s: helm/qrux/files/%s is k8s/monitoring/%s" % (f, name, name),
                      a.read() == b.read())
    if prs:
        env.eq("%s: PrometheusRule groups are k8s/monitoring/qrux-alerts.yaml" % f,
               prs[0]["spec"], yaml.safe_load(open(os.path.join(MON, "qrux-alerts.yaml"))))
    if dcm:
        cm = dcm[0]
        env.eq("%s: dashboard ConfigMap namespace" % f, cm["metadata"]["namespace"],
               mon["dashboard"].get("namespace") or NS)
        env.eq("%s: dashboard ConfigMap holds k8s/monitoring/qrux-dashboard.json" % f,
               json.loads(cm["data"]["qrux-dashboard.json"]),
               json.load(open(os.path.join(MON, "qrux-dashboard.json"))))


def monitoring_refusals(env, helm):
    """Bad monitoring values are refused with the place named."""
    for name, args, needle in (
            ("unknown monitoring key", ["--set", "monitoring.podMonitor.enabld=true"], "enabld"),
            ("scrape interval without a unit", ["--set", "monitoring.podMonitor.interval=30"],
             "interval"),
            ("dashboard without its grafana_dashboard label",
             ["--set", "monitoring.dashboard.enabled=true", "--set",
              "monitoring.dashboard.labels.grafana_dashboard=null"], "grafana_dashboard"),
            ("a PodMonitor with no namespace to live in",
             ["--set", "monitoring.podMonitor.enabled=true"], "monitoring.podMonitor")):
        rc, text, err = render(helm, env, name, args)
        env.check("schema refuses %s" % name, rc != 0 and needle in err,
                  "rc=%s %s" % (rc, err[-400:]))


def chart_refusals(env, helm):
    """values.schema.json (JSON Schema 2020-12): unknown keys and bad values
    are refused, with the place named."""
    cases = [
        ("unknown top-level key", ["--set", "sidcar.xdp=true"], "sidcar"),
        ("unknown nested key", ["--set", "sidecar.xpd=true"], "xpd"),
        ("unknown key in resources", ["--set", "sidecar.resources.requests.gpu=1"], "gpu"),
        ("bad enum", ["--set", "injector.failurePolicy=Maybe"], "failurePolicy"),
        ("string for an integer", ["--set-string", "injector.replicas=2"], "replicas"),
        ("port out of range", ["--set", "sidecar.port=70000"], "port"),
        ("bad quantity", ["--set", "sidecar.resources.limits.memory=lots"], "memory"),
        ("route with upstream and upstreams",
         ["--set", "config.routes[0].match=*", "--set", "config.routes[0].upstream=127.0.0.1:1",
          "--set", "config.routes[0].upstreams[0]=127.0.0.1:2"], "routes"),
        ("no routes", ["--set-json", "config.routes=[]"], "routes"),
        ("xdpGc.enabled other than auto, true, false", ["--set", "xdpGc.enabled=maybe"],
         "enabled"),
        ("a gc pass every 0 s", ["--set", "xdpGc.everySecs=0"], "everySecs"),
        ("an unknown toleration field", ["--set", "xdpGc.tolerations[0].operater=Exists"],
         "operater"),
        ("a demo grace period shorter than the drain",
         ["--set", "demo.enabled=true", "--set", "demo.terminationGracePeriodSeconds=30"],
         "terminationGracePeriodSeconds"),
    ]
    for name, args, needle in cases:
        rc, text, err = render(helm, env, name, args)
        env.check("schema refuses %s" % name, rc != 0 and needle in err,
                  "rc=%s %s" % (rc, err[-400:]))
        if "grace" in name:
            continue  # a template `fail`: helm lint only logs it (level INFO)
        rc, out, err2 = run([helm, "lint", "--strict", CHART] + args, timeout=120)
        env.check("helm lint refuses %s" % name, rc != 0, (out + err2).decode()[-300:])
    with open(os.path.join(CHART, "values.schema.json")) as fh:
        schema = json.load(fh)
    env.eq("values.schema.json is JSON Schema 2020-12", schema["$schema"],
           "https://json-schema.org/draft/2020-12/schema")

    def closed(s, at):
        bad = []
        if s.get("type") == "object" and "properties" in s and \
                s.get("additionalProperties") is not False:
            bad.append(at)
        for k, v in s.get("properties", {}).items():
            bad += closed(v, at + "." + k)
        if isinstance(s.get("items"), dict):
            bad += closed(s["items"], at + "[]")
        return bad
    env.eq("every object of the schema refuses unknown keys", closed(schema, "$"), [])


def validator_negatives(env, helm, node_env):
    """The validator fails what it must: a misspelled field, a wrong enum, a
    wrong type, a missing required field; in the chart and in an injected
    pod."""
    rc, text, err = render(helm, env, "neg", ["--set", "demo.enabled=true"])
    cases = [
        ("readOnlyRootFileSystem (typo)", text.replace("readOnlyRootFilesystem",
                                                       "readOnlyRootFileSystem", 1),
         "readOnlyRootFileSystem: unknown field"),
        ("a typo in a probe", text.replace("periodSeconds", "periodSecond", 1),
         "periodSecond: unknown field"),
        ("protocol QUIC", text.replace("protocol: UDP", "protocol: QUIC", 1), "protocol"),
        ("replicas as a string", text.replace("replicas: 2", 'replicas: "2"', 1), "replicas"),
        ("a container without a name", re.sub(r"- name: injector\n(\s+)image:",
                                              r"- image:", text, count=1),
         "missing required field 'name'"),
    ]
    for name, body, needle in cases:
        path = os.path.join(env.dir, "neg-%d.yaml" % len(name))
        with open(path, "w") as fh:
            fh.write(body)
        ok, out = k8s.validate([path], node_env)
        env.check("validator refuses %s" % name, not ok and needle in out, out[-600:])
    # In an injected pod too.
    with open(os.path.join(k8s.K8S_DIR, "reviews", "optin-native.pod.json")) as fh:
        pod = json.load(fh)
    bad = copy.deepcopy(pod)
    bad["spec"]["initContainers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    path = os.path.join(env.dir, "neg-pod.json")
    with open(path, "w") as fh:
        json.dump(bad, fh)
    ok, out = k8s.validate([path], node_env)
    env.check("validator refuses the typo in an injected pod",
              not ok and "/spec/initContainers/0/securityContext/readOnlyRootFileSystem" in out,
              out[-600:])


def notes(env, helm):
    rc, out, err = run([helm, "install", "qrux", CHART, "--namespace", NS, "--dry-run=client",
                        "--set", "demo.enabled=true"], timeout=120,
                       env=dict(os.environ, KUBECONFIG=os.path.join(env.dir, "no-kubeconfig")))
    text = out.decode()
    notes_text = text[text.find("NOTES:"):]
    env.eq("helm install --dry-run=client", rc, 0, err.decode()[-500:])
    for what, needle in (("how to opt a namespace in", "qrux.io/inject=enabled"),
                         ("how to opt a pod in", 'qrux.io/inject: "true"'),
                         ("how to edit the ConfigMap", "edit configmap qrux-config"),
                         ("why no checksum roll", "no checksum annotation"),
                         ("the metrics", "/metrics"),
                         ("helm test", "helm test qrux")):
        env.check("NOTES.txt says " + what, needle in notes_text, notes_text[:400])


def kustomize(env, kubectl, helm, node_env):
    rc, out, err = run([kubectl, "kustomize", os.path.join(k8s.SRC, "k8s")], timeout=120)
    env.eq("kubectl kustomize k8s/", rc, 0, err.decode()[-800:])
    path = os.path.join(env.dir, "kustomize.yaml")
    with open(path, "wb") as fh:
        fh.write(out)
    ok, text = k8s.validate([path], node_env)
    env.check("k8s/: every object schema-valid, no unknown fields", ok, text[-1500:])
    rc, lout, lerr = run([qrux_bin(), "inject", "--lint", path], timeout=30)
    env.eq("k8s/: qrux inject --lint finds nothing", rc, 0, lout.decode())
    docs = yaml_docs(out.decode())
    kinds = sorted(set(d["kind"] for d in docs))
    env.eq("k8s/: the kinds", kinds, ["ConfigMap", "DaemonSet", "Deployment",
                                      "MutatingWebhookConfiguration", "Namespace",
                                      "PodDisruptionBudget", "Secret", "Service",
                                      "ServiceAccount"])
    # The example app has XDP: the base has the gc DaemonSet, the chart's.
    ds = by_kind(docs, "DaemonSet", "qrux-xdp-gc")
    env.eq("k8s/: the xdp gc DaemonSet in qrux-system",
           [d["metadata"]["namespace"] for d in ds], ["qrux-system"])
    if ds:
        gc_daemonset(env, "k8s/", ds[0], GC_DEFAULTS)
        rc, text, err = render(helm, env, "gc-k8s", ["--set", "sidecar.xdp=true"])
        chart = by_kind(yaml_docs(text), "DaemonSet")
        env.check("k8s/xdp-gc.yaml is the chart's DaemonSet (selector, pod spec)",
                  chart and chart[0]["spec"]["selector"] == ds[0]["spec"]["selector"] and
                  chart[0]["spec"]["template"]["spec"] == ds[0]["spec"]["template"]["spec"],
                  json.dumps(ds[0]["spec"]["template"]["spec"])[:600])
    env.check("k8s/: no hash suffix on the ConfigMaps (no roll on edit)",
              sorted(d["metadata"]["name"] for d in by_kind(docs, "ConfigMap")) ==
              ["qrux-config", "qrux-injector"])
    env.eq("k8s/: the app namespace is opted in",
           by_kind(docs, "Namespace", "qrux-demo")[0]["metadata"]["labels"]["qrux.io/inject"],
           "enabled")
    # The sidecar config of the base is accepted by qrux check.
    d = os.path.join(env.dir, "k8s-check")
    os.makedirs(d)
    cert, key = k8s.make_cert(d, "tls")
    with open(os.path.join(d, "admin-token"), "w") as fh:
        fh.write("t0ken\n")
    text = by_kind(docs, "ConfigMap", "qrux-config")[0]["data"]["qrux.yaml"]
    text = text.replace("/etc/qrux-tls/tls.crt", cert).replace("/etc/qrux-tls/tls.key", key) \
        .replace("/etc/qrux-tls/admin-token", os.path.join(d, "admin-token"))
    with open(os.path.join(d, "qrux.yaml"), "w") as fh:
        fh.write(text)
    rc, o, e = run([qrux_bin(), "check", "--config", os.path.join(d, "qrux.yaml")], timeout=30)
    env.eq("k8s/qrux.yaml passes qrux check", rc, 0, (o + e).decode())

    # The example app is what the injector makes of it: strip what was
    # injected, run it through qrux inject with k8s/inject.json, compare.
    dep = by_kind(docs, "Deployment", "qrux-example")[0]
    tmpl = dep["spec"]["template"]
    env.eq("k8s/: example app has the XDP init container and the native sidecar",
           [(c["name"], c.get("restartPolicy")) for c in tmpl["spec"]["initContainers"]],
           [("qrux-xdp", None), ("qrux", "Always")])
    base = copy.deepcopy(tmpl)
    base["spec"].pop("initContainers")
    base["spec"]["volumes"] = [v for v in base["spec"]["volumes"]
                               if not v["name"].startswith("qrux-")]
    for a in ("qrux.io/status", "kubectl.kubernetes.io/default-container"):
        base["metadata"]["annotations"].pop(a)
    # kustomize added its labels to the template: the injector never sees those.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": base["metadata"], "spec": base["spec"]}
    inj = k8s.Injector(env, config=os.path.join(k8s.SRC, "k8s", "inject.json"))
    try:
        st, reply = inj.review(k8s.review_of(pod))
        again = k8s.apply_patch(pod, k8s.patch_of(reply))
    finally:
        inj.stop()
    env.check("k8s/example-app.yaml is what qrux inject makes of the app",
              again["spec"] == tmpl["spec"] and
              again["metadata"]["annotations"] == tmpl["metadata"]["annotations"],
              json.dumps(again["spec"])[:600])


def tls_kept(env, helm):
    """The generated TLS (the injector's serving certificate and CA, the
    demo's certificate and admin token) is made once and read back with
    `lookup` on every upgrade: rendered against an API server that holds
    the Secrets of a first install, the chart gives the same bytes and the
    webhook's caBundle is the kept CA. Against an empty one it makes new
    ones (so the comparison can fail)."""
    def secrets(docs):
        return {d["metadata"]["name"]: d for d in by_kind(docs, "Secret")}

    def render_on(api, name):
        rc, text, err = render(helm, env, name, ["--set", "demo.enabled=true", "--kubeconfig",
                                                 api.kubeconfig, "--dry-run=server",
                                                 "--disable-openapi-validation"])
        env.eq("%s: helm template --dry-run=server" % name, rc, 0, err[-1500:])
        return yaml_docs(text) if rc == 0 else []

    empty = k8s.FakeAPIServer(env.dir)
    try:
        first = render_on(empty, "install")
        again = render_on(empty, "install-again")
        env.check("lookup asked the API server for the injector's Secret",
                  "/api/v1/namespaces/%s/secrets/qrux-injector-tls" % NS in empty.gets,
                  str(empty.gets))
    finally:
        empty.close()
    s1 = secrets(first)
    env.eq("install: the injector's and the demo's Secrets",
           sorted(s1), ["qrux-injector-tls", "qrux-tls"])
    env.check("without a first install: new certificates and token each time",
              all(s1[n]["data"] != secrets(again)[n]["data"] for n in s1))
    stored = []  # as the first install left them: owned by the release
    for d in s1.values():
        d = copy.deepcopy(d)
        d["metadata"].setdefault("annotations", {}).update(
            {"meta.helm.sh/release-name": "qrux", "meta.helm.sh/release-namespace": NS})
        stored.append(d)
    kept = k8s.FakeAPIServer(env.dir, stored)
    try:
        up = render_on(kept, "upgrade")
    finally:
        kept.close()
    s2 = secrets(up)
    env.check("upgrade: the injector's certificate, key and CA kept",
              s2.get("qrux-injector-tls", {}).get("data") == s1["qrux-injector-tls"]["data"])
    env.check("upgrade: the demo's certificate and admin token kept",
              s2.get("qrux-tls", {}).get("data") == s1["qrux-tls"]["data"])
    mwc = by_kind(up, "MutatingWebhookConfiguration")
    env.check("upgrade: the webhooks' caBundle is the kept CA",
              mwc and all(w["clientConfig"]["caBundle"] ==
                          s1["qrux-injector-tls"]["data"]["ca.crt"]
                          for w in mwc[0]["webhooks"]))


def main():
    with Env("k8s") as env:
        helm, kubectl, node_env = k8s.tools()
        env.case("helm lint/template matrix, validated", chart_matrix, env, helm, node_env)
        env.case("values.schema.json refusals", chart_refusals, env, helm)
        env.case("monitoring values refusals", monitoring_refusals, env, helm)
        env.case("the validator refuses what it must", validator_negatives, env, helm, node_env)
        env.case("NOTES.txt", notes, env, helm)
        env.case("generated TLS kept across upgrades (lookup)", tls_kept, env, helm)
        env.case("the xdp gc DaemonSet switch", xdp_gc_switch, env, helm)
        env.case("kustomize base", kustomize, env, kubectl, helm, node_env)


if __name__ == "__main__":
    main()
