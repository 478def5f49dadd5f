"""k8s.py - helpers of the Kubernetes tests: the test tools in the build
tree (helm, kubectl, the object validator), the injector as a process, and
RFC 6902 JSON Patch applied the way the API server applies a webhook's
patch."""

import base64
import copy
import json
import os
import ssl
import subprocess
import sys

K8S_DIR = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(K8S_DIR))
sys.path.insert(0, os.path.dirname(K8S_DIR))
import harness  # noqa: E402


def build_dir():
    return os.path.dirname(os.path.abspath(harness.qrux_bin()))


def tools():
    """Installs (or finds, fast) the tools: returns (helm, kubectl, env for node)."""
    b = build_dir()
    rc, out, err = harness.run([os.path.join(SRC, "scripts", "k8s-tools.sh"), b], timeout=600)
    if rc != 0:
        raise RuntimeError("scripts/k8s-tools.sh failed: %s" % err.decode(errors="replace")[-2000:])
    t = os.path.join(b, "k8s-tools")
    env = dict(os.environ, NODE_PATH=os.path.join(t, "node_modules"))
    return os.path.join(t, "bin", "helm"), os.path.join(t, "bin", "kubectl"), env


def validate(paths, node_env):
    """Runs e2e/k8s/validate.js on files: (ok, output text)."""
    rc, out, err = harness.run([harness.need("node"), os.path.join(K8S_DIR, "validate.js")] +
                               list(paths), timeout=120, env=node_env)
    return rc == 0, (out + err).decode(errors="replace")


# ---------------------------------------------------------------------------
# JSON Patch (RFC 6902): add, remove, replace, test; what a webhook may send


def _unescape(tok):
    return tok.replace("~1", "/").replace("~0", "~")


def apply_patch(doc, patch):
    doc = copy.deepcopy(doc)
    for op in patch:
        toks = [_unescape(t) for t in op["path"].split("/")[1:]]
        parent = doc
        for t in toks[:-1]:
            parent = parent[int(t)] if isinstance(parent, list) else parent[t]
        last = toks[-1]
        kind = op["op"]
        if kind == "add":
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op["value"])
                else:
                    i = int(last)
                    if i > len(parent):
                        raise ValueError("add past the end: %s" % op["path"])
                    parent.insert(i, op["value"])
            else:
                parent[last] = op["value"]
        elif kind == "replace":
            if isinstance(parent, list):
                parent[int(last)] = op["value"]
            else:
                if last not in parent:
                    raise ValueError("replace of a missing member: %s" % op["path"])
                parent[last] = op["value"]
        elif kind == "remove":
            if isinstance(parent, list):
                del parent[int(last)]
            else:
                del parent[last]
        else:
            raise ValueError("unexpected op %r" % kind)
    return doc


# ---------------------------------------------------------------------------
# the injector


class Injector:
    """`qrux inject` on a loopback port, with a certificate of its own."""

    def __init__(self, env, config=None, cert_dir=None):
        self.port = harness.free_port("tcp")
        self.dir = cert_dir or os.path.join(env.dir, "inject-%d" % self.port)
        os.makedirs(self.dir, exist_ok=True)
        self.cert, self.key = make_cert(self.dir, "injector")
        cmd = [harness.qrux_bin(), "inject", "--listen", "127.0.0.1:%d" % self.port, "--cert",
               self.cert, "--key", self.key]
        if config:
            cmd += ["--config", config]
        self.log = open(os.path.join(self.dir, "inject.log"), "wb")
        self.proc = harness.spawn(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                  env=dict(os.environ, QRUX_LOG="debug"))
        ok = harness.wait_until(lambda: self.proc.poll() is not None or
                                self.code("/livez") == 200, 15)
        if not ok or self.proc.poll() is not None:
            raise RuntimeError("qrux inject did not start: " + self.log_text()[-1500:])

    def log_text(self):
        with open(self.log.name, "rb") as f:
            return f.read().decode(errors="replace")

    def _ctx(self):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def request(self, method, path, body=None, timeout=10):
        """(status, body bytes, peer certificate DER)."""
        import http.client
        c = http.client.HTTPSConnection("127.0.0.1", self.port, context=self._ctx(),
                                        timeout=timeout)
        try:
            c.request(method, path, body=body,
                      headers={"Content-Type": "application/json"} if body is not None else {})
            r = c.getresponse()
            data = r.read()
            der = c.sock.getpeercert(binary_form=True) if c.sock else None
            return r.status, data, der
        finally:
            c.close()

    def code(self, path):
        try:
            return self.request("GET", path, timeout=2)[0]
        except OSError:
            return None

    def review(self, review, path="/mutate"):
        """Posts an AdmissionReview (a dict, or bytes as they are): (status, reply dict)."""
        body = review if isinstance(review, bytes) else json.dumps(review).encode()
        st, data, _ = self.request("POST", path, body)
        return st, json.loads(data)

    def metric(self, name_labels):
        st, data, _ = self.request("GET", "/metrics")
        for line in data.decode().splitlines():
            if line.startswith(name_labels + " "):
                return float(line.split()[-1])
        return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def make_cert(d, name, cn="qrux-injector.qrux-system.svc"):
    cert = os.path.join(d, name + ".crt")
    key = os.path.join(d, name + ".key")
    rc, out, err = harness.run(
        [harness.need("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
         "-subj", "/CN=" + cn, "-addext", "subjectAltName=DNS:%s,IP:127.0.0.1" % cn], timeout=30)
    if rc != 0:
        raise RuntimeError("openssl: " + err.decode(errors="replace"))
    return cert, key


def review_of(pod, uid="0f3c5d6e-1111-4c4c-9a9a-000000000001", operation="CREATE",
              namespace="demo", dry_run=False, kind="Pod", resource="pods"):
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": resource},
            "requestKind": {"group": "", "version": "v1", "kind": kind},
            "requestResource": {"group": "", "version": "v1", "resource": resource},
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": None,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def patch_of(reply):
    """The decoded JSONPatch of a review reply, or None when it has none."""
    p = reply["response"].get("patch")
    if p is None:
        return None
    return json.loads(base64.b64decode(p))


# ---------------------------------------------------------------------------
# An API server stand-in for `helm ... --dry-run=server`: enough of the
# discovery documents for helm to build its objects, and GET of the Secrets
# it is given (what the chart's `lookup` reads); every other object is 404,
# as in an empty cluster. Plain HTTP on loopback.


class FakeAPIServer:
    GROUPS = {"": ["configmaps", "namespaces", "pods", "secrets", "serviceaccounts",
                   "services"],
              "apps": ["deployments"], "policy": ["poddisruptionbudgets"],
              "admissionregistration.k8s.io": ["mutatingwebhookconfigurations"]}
    KINDS = {"configmaps": "ConfigMap", "namespaces": "Namespace", "pods": "Pod",
             "secrets": "Secret", "serviceaccounts": "ServiceAccount", "services": "Service",
             "deployments": "Deployment", "poddisruptionbudgets": "PodDisruptionBudget",
             "mutatingwebhookconfigurations": "MutatingWebhookConfiguration"}

    def __init__(self, directory, secrets=()):
        import http.server
        import threading
        self.secrets = {"/api/v1/namespaces/%s/secrets/%s" % (s["metadata"]["namespace"],
                                                              s["metadata"]["name"]): s
                        for s in secrets}
        self.gets = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                fake.gets.append(path)
                code, obj = fake.answer(path)
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.kubeconfig = os.path.join(directory, "kubeconfig-%d" % self.server.server_port)
        with open(self.kubeconfig, "w") as f:
            json.dump({"apiVersion": "v1", "kind": "Config", "current-context": "fake",
                       "clusters": [{"name": "fake", "cluster": {
                           "server": "http://127.0.0.1:%d" % self.server.server_port}}],
                       "contexts": [{"name": "fake", "context": {"cluster": "fake",
                                                                  "user": "fake"}}],
                       "users": [{"name": "fake", "user": {}}]}, f)

    def resources(self, group):
        gv = group + "/v1" if group else "v1"
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                "resources": [{"name": r, "singularName": r[:-1], "kind": self.KINDS[r],
                               "namespaced": r not in ("namespaces",
                                                       "mutatingwebhookconfigurations"),
                               "verbs": ["get", "list", "create", "update"]}
                              for r in self.GROUPS[group]]}

    def answer(self, path):
        if path == "/version":
            return 200, {"major": "1", "minor": "35", "gitVersion": "v1.35.0",
                         "platform": "linux/amd64"}
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"]}
        if path == "/apis":
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": g + "/v1", "version": "v1"}],
                 "preferredVersion": {"groupVersion": g + "/v1", "version": "v1"}}
                for g in self.GROUPS if g]}
        if path == "/api/v1":
            return 200, self.resources("")
        for g in self.GROUPS:
            if g and path == "/apis/%s/v1" % g:
                return 200, self.resources(g)
        if path in self.secrets:
            return 200, self.secrets[path]
        if path.endswith("/secrets"):  # helm's release records: none
            return 200, {"kind": "SecretList", "apiVersion": "v1", "items": []}
        return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                     "reason": "NotFound", "code": 404}

    def close(self):
        self.server.shutdown()
        self.server.server_close()
