#!/usr/bin/env python3
"""Configuration and certificates from mounted volumes (issue 5), as an
operator sees them:

- a ConfigMap volume updated exactly the way the kubelet's atomic writer does
  it (timestamped `..<ts>/` directory, `..data_tmp` symlink renamed over
  `..data`, old directory deleted) while HTTP/3 load runs: the new route is
  served, no request fails; an invalid update (unknown key) keeps the old
  routes, names the field in the log, is counted and shown in GET /config;
  a valid one after it applies again; 30 updates in a row under load fail
  no request either;
- changes that need a restart (server.listen, server.workers) are refused
  and counted as restart_required, never half-applied;
- a plain file edited the three usual ways (editor rename, in-place write,
  delete and recreate) reloads each time; an identical rewrite does not bump
  the generation; SIGHUP forces a reload;
- a route table set through the API is replaced by the next file change;
- `qrux check` exits 0 or 2 naming the field;
- a ConfigMap mounted with subPath (a file bind-mounted on its own) is
  warned about at start-up;
- certificate rotation through a Secret-style swap: new handshakes on both
  listeners get the new certificate (SHA-256 of the leaf: h3probe
  --print-cert-sha256 for QUIC, Python's ssl for HTTPS), an open connection
  keeps working with the exact body; SIGUSR1 reloads; a garbage or
  mismatched certificate is rejected and the one in force stays.

No wall-clock assertions: every wait is generous and bounded; the reload
latency is measured by bench/reload_latency.py.

The helpers (AtomicDir, Load, probe, start_qrux_at, ...) are also used by
test_drain.py and bench/reload_latency.py.
"""

import base64
import hashlib
import os
import random
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (Cert, Env, Qrux, pattern_sha256, render_config, run, spawn,  # noqa: E402
                     wait_until)
from test_admin import Admin, admin_yaml, metric, scrape  # noqa: E402

# ---------------------------------------------------------------------------
# the kubelet's atomic writer


class AtomicDir:
    """A directory written the way the kubelet writes a ConfigMap or Secret
    volume (pkg/volume/util/atomic_writer.go): the payload lives in
    `..<UTC timestamp>.<random>/`, `..data` is a symlink to it, and each
    visible name is a symlink `NAME -> ..data/NAME`. An update writes a new
    timestamped directory, creates the symlink `..data_tmp` to it, renames
    `..data_tmp` over `..data` (rename(2): atomic), creates visible symlinks
    for new names, and deletes the old directory."""

    def __init__(self, root, files):
        self.root = root
        os.makedirs(root, exist_ok=True)
        self.current = None
        self.update(files)

    def path(self, name):
        return os.path.join(self.root, name)

    def _new_tsdir(self):
        for _ in range(100):
            name = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()) + \
                "%d" % random.randrange(10 ** 9)
            try:
                os.mkdir(os.path.join(self.root, name), 0o755)
                return name
            except FileExistsError:
                continue
        raise RuntimeError("could not create a timestamped directory in %s" % self.root)

    def update(self, files):
        """Swaps in |files| ({name: bytes or str}); returns time.monotonic()
        taken right before the rename that makes them visible."""
        ts = self._new_tsdir()
        for name, data in files.items():
            if isinstance(data, str):
                data = data.encode()
            with open(os.path.join(self.root, ts, name), "wb") as f:
                f.write(data)
            os.chmod(os.path.join(self.root, ts, name), 0o644)
        tmp = self.path("..data_tmp")
        os.symlink(ts, tmp)
        t = time.monotonic()
        os.replace(tmp, self.path("..data"))
        for name in files:
            if not os.path.lexists(self.path(name)):
                os.symlink(os.path.join("..data", name), self.path(name))
        old, self.current = self.current, ts
        if old:
            shutil.rmtree(os.path.join(self.root, old))
        return t


# ---------------------------------------------------------------------------
# config text, certificates


def config_text(port, cert, key, routes, admin_port=None, workers=2, limits=None, server=None,
                listen=None):
    """YAML for qrux with absolute cert/key paths; |server| adds server keys
    ({name: value} written as is); |listen| overrides the listen address."""
    extra = "".join("  %s: %s\n" % (k, v) for k, v in (server or {}).items())
    if admin_port:
        extra += admin_yaml(admin_port)
    text = render_config(port, cert, key, routes, limits, workers, extra)
    if listen:
        text = text.replace('listen: "[::]:%d"' % port, 'listen: "%s"' % listen, 1)
    return text


def new_cert(env, name):
    """A fresh self-signed EC pair (its own key) under env.dir/name."""
    d = os.path.join(env.dir, name)
    os.makedirs(d, exist_ok=True)
    return Cert(d)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def tls_cert_sha256(port, timeout=5):
    """SHA-256 (hex) of the leaf certificate the HTTPS (TCP) listener on
    |port| presents to a new handshake, or None when none completes."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            with ctx.wrap_socket(s, server_hostname="localhost") as t:
                return hashlib.sha256(t.getpeercert(binary_form=True)).hexdigest()
    except (OSError, ssl.SSLError):
        return None


def der_sha256(cert_pem):
    """SHA-256 (hex) of the first certificate's DER in a PEM file or text."""
    text = read(cert_pem).decode() if os.path.exists(cert_pem) else cert_pem
    m = re.search(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text, re.S)
    return hashlib.sha256(base64.b64decode("".join(m.group(1).split()))).hexdigest()


# ---------------------------------------------------------------------------
# qrux started from a given path


def start_qrux_at(env, path, port, log_level="info", wait=True):
    q = Qrux(env, path, port, log_level=log_level)
    env.qruxes.append(q)
    if wait and not q.wait_ready(15):
        raise RuntimeError("qrux did not log 'ready' within 15 s (exit=%s); log:\n%s"
                           % (q.proc.poll(), q.log_tail(30)))
    return q


def nlines(q):
    with q.lock:
        return len(q.lines)


def lines_since(q, i):
    with q.lock:
        return list(q.lines[i:])


def wait_log(q, regex, since=0, timeout=10):
    """The first log line after index |since| matching |regex|, waiting up
    to |timeout| s; None when none came."""
    rx = re.compile(regex)

    def find():
        for ln in lines_since(q, since):
            if rx.search(ln):
                return ln
        return None
    return wait_until(find, timeout, interval=0.05)


def stop(q):
    """Stops qrux at once (SIGTERM, then the second signal that skips the
    drain delay); the harness kills it if that does not work."""
    if q.alive():
        i = nlines(q)
        q.signal(signal.SIGTERM)
        # Two signals sent back to back may merge into one: wait for the first.
        wait_log(q, r"draining", i, 5)
        q.signal(signal.SIGTERM)
        q.wait_exit(10)
    q.stop()


def routes_doc(adm):
    r = adm.get("/routes")
    return r.json() if r.status == 200 else None


def generation(adm):
    d = routes_doc(adm)
    return d.get("generation") if d else None


def reloads(adm, result, source="file"):
    ms, _, _ = scrape(adm)
    return metric(ms, "qrux_config_reloads_total", source=source, result=result)


# ---------------------------------------------------------------------------
# h3probe (one request, optionally a second on the same connection)


def h3probe_bin():
    b = os.environ.get("H3PROBE_BIN")
    if not b:
        b = os.path.join(os.path.dirname(harness.qrux_bin()), "h3probe")
    if not os.access(b, os.X_OK):
        raise RuntimeError("h3probe not found (%s): build the h3probe target" % b)
    return b


class ProbeResult:
    """h3probe's event lines split per request: reqs[i] = {"status",
    "headers", "sha", "len", "close"}; cert is the cert-sha256 line."""

    def __init__(self, rc, out, err):
        self.rc = rc
        self.out = out
        self.err = err
        self.cert = None
        self.conn_close = None
        self.reqs = []
        for ln in out.splitlines():
            w = ln.split(" ", 1)
            if w[0] == "request":
                self.reqs.append({"status": None, "headers": {}, "sha": None, "len": None,
                                  "close": None, "reset": None})
            elif w[0] == "cert-sha256":
                self.cert = w[1].strip()
            elif w[0] == "conn-close":
                self.conn_close = w[1]
            elif not self.reqs:
                continue
            elif w[0] == "status" and not w[1].startswith("1"):
                self.reqs[-1]["status"] = int(w[1])
            elif w[0] == "header":
                k, _, v = w[1].partition(": ")
                self.reqs[-1]["headers"][k] = v
            elif w[0] == "body-sha256":
                sha, ln_ = w[1].split()
                self.reqs[-1]["sha"], self.reqs[-1]["len"] = sha, int(ln_)
            elif w[0] == "stream-close":
                self.reqs[-1]["close"] = int(w[1], 16)
            elif w[0] == "stream-reset":
                self.reqs[-1]["reset"] = int(w[1], 16)

    def status(self, i=0):
        return self.reqs[i]["status"] if len(self.reqs) > i else None

    def header(self, name, i=0):
        return self.reqs[i]["headers"].get(name) if len(self.reqs) > i else None

    def backend_port(self, i=0):
        v = self.header("x-backend-port", i)
        return int(v) if v and v.isdigit() else None

    def ok(self, i=0):
        return (len(self.reqs) > i and self.reqs[i]["status"] == 200
                and self.reqs[i]["close"] == harness.H3_NO_ERROR)

    def __repr__(self):
        return "ProbeResult(rc=%s, out=%r, err=%r)" % (self.rc, self.out[-600:], self.err[-300:])


def probe_cmd(port, path, cert=False, also_get=None, timeout=10):
    cmd = [h3probe_bin(), "127.0.0.1", str(port), "-H", ":method: GET", "-H", ":scheme: https",
           "-H", ":authority: localhost:%d" % port, "-H", ":path: %s" % path,
           "--timeout", str(timeout)]
    if cert:
        cmd.append("--print-cert-sha256")
    if also_get:
        cmd += ["--also-get", also_get]
    return cmd


def probe(port, path="/id", cert=False, also_get=None, timeout=10):
    """One request on a new connection; waits for it (bounded)."""
    port = port if isinstance(port, int) else port.port
    rc, out, err = run(probe_cmd(port, path, cert, also_get, timeout), timeout=timeout + 10)
    return ProbeResult(rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


class ProbeRun:
    """h3probe in the background (a long-lived connection)."""

    def __init__(self, env, port, path, cert=False, also_get=None, timeout=60):
        port = port if isinstance(port, int) else port.port
        self.outpath = os.path.join(env.dir, "probe-%d-%d.out" % (port, id(self)))
        self.outf = open(self.outpath, "wb")
        self.timeout = timeout
        self.proc = spawn(probe_cmd(port, path, cert, also_get, timeout), stdout=self.outf,
                          stderr=subprocess.PIPE)

    def finish(self):
        try:
            _, err = self.proc.communicate(timeout=self.timeout + 10)
            rc = self.proc.returncode
        except subprocess.TimeoutExpired:
            harness._kill_group(self.proc, grace=1.0)
            _, err = self.proc.communicate()
            rc = None
        self.outf.close()
        return ProbeResult(rc, read(self.outpath).decode("utf-8", "replace"),
                           (err or b"").decode("utf-8", "replace"))


def served_by(q):
    """The backend port a fresh connection's GET /id reaches, or None."""
    r = probe(q, "/id")
    return r.backend_port() if r.ok() else None


def wait_served_by(q, port, timeout=15):
    return wait_until(lambda: served_by(q) == port, timeout, interval=0.1)


# ---------------------------------------------------------------------------
# continuous HTTP/3 load


LOAD_PATH = "/bytes/16"  # the load's path: probes use /id, so backends count each apart


class Load:
    """Back-to-back gtlsclient runs (`-n N GET path`, a new connection per
    run) on one thread per entry of |ns|, until stop(). Every run is kept:
    start/end (time.time()), streams answered, the failures, and which
    backend answered (X-Backend-Port)."""

    _start_lock = threading.Lock()  # GtlsRun numbers its log files unlocked

    def __init__(self, env, q, ns=(200, 20), path=LOAD_PATH):
        self.env = env
        self.q = q
        self.path = path
        self.runs = []
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(n,), daemon=True) for n in ns]
        for t in self.threads:
            t.start()

    def _loop(self, n):
        while not self.stop_ev.is_set():
            t0 = time.time()
            with Load._start_lock:
                g = self.env.gtls_start(self.q, self.path, n=n, timeout=60, download=False)
            r = g.finish()
            t1 = time.time()
            sts = r.statuses()
            bad = sorted((sid, s) for sid, s in sts.items() if s != 200 or not r.clean(sid))
            ports = {}
            for sid in sts:
                p = r.header("x-backend-port", sid)
                ports[p] = ports.get(p, 0) + 1
            run_ = {"t0": t0, "t1": t1, "n": n, "got": len(sts), "bad": bad, "rc": r.rc,
                    "ports": ports, "ok": sum(1 for s in sts.values() if s == 200)}
            if bad or len(sts) != n or r.rc != 0:
                run_["summary"] = r.summary(bad[0][0] if bad else 0)
            with self.lock:
                self.runs.append(run_)

    def snapshot(self):
        with self.lock:
            return list(self.runs)

    def requests(self):
        return sum(r["ok"] for r in self.snapshot())

    def wait_more(self, k, timeout=60):
        """Waits until |k| more requests than now have been answered."""
        base = self.requests()
        return wait_until(lambda: self.requests() >= base + k, timeout, interval=0.05)

    def failed_runs(self, runs=None):
        return [r for r in (runs if runs is not None else self.snapshot())
                if r["bad"] or r["got"] != r["n"] or r["rc"] != 0]

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(90)
        return self.snapshot()


def load_count(be):
    return be.stats()["paths"].get(LOAD_PATH, 0)


# ---------------------------------------------------------------------------
# cases


def kubelet_writer_under_load(env):
    """ConfigMap updates through the kubelet's atomic writer while HTTP/3
    load runs: valid (new route served), invalid (old routes stay, counted,
    shown), valid again; zero failed requests over the whole run."""
    b1, b2 = env.backend(), env.backend()
    cert = env.cert()
    port, aport = harness.free_port("udp"), harness.free_port("tcp")
    cm = AtomicDir(os.path.join(env.dir, "cm"),
                   {"qrux.yaml": config_text(port, cert.cert, cert.key, [("*", b1.addr)], aport)})
    q = start_qrux_at(env, cm.path("qrux.yaml"), port)
    adm = Admin(aport)
    env.check("the kubelet layout is no subPath mount (no warning)",
              "subPath" not in q.log_text(), q.log_tail())
    d = routes_doc(adm) or {}
    env.eq("at start: GET /routes generation 1 from the file",
           (d.get("generation"), d.get("source")), (1, "file"))

    load = Load(env, q)
    try:
        env.check("load runs on the first backend before the update",
                  wait_until(lambda: load_count(b1) >= 200, 30, interval=0.05), b1.stats())

        # 1. a valid update: route to b2. A connection opened before it has a
        # slow download in flight from b1.
        n = 200000
        slow = ProbeRun(env, q, "/slow/%d?ms=100&chunk=10000" % n, also_get="/id", timeout=60)
        env.check("a slow download from the old backend is in flight",
                  wait_until(lambda: b1.stats()["inflight"].get("/slow/%d" % n), 10, 0.02))
        i = nlines(q)
        old_ts = cm.current
        cm.update({"qrux.yaml": config_text(port, cert.cert, cert.key, [("*", b2.addr)], aport)})
        env.check("the writer deleted the old timestamped directory",
                  not os.path.exists(cm.path(old_ts)) and os.path.islink(cm.path("..data")))
        env.check("atomic-writer update: a new connection reaches the new backend",
                  wait_served_by(q, b2.port), q.log_tail())
        ln = wait_log(q, r"config reload \(file changed\): generation 2", i, 5)
        env.check("the reload is logged with the new generation", ln, q.log_tail())
        d = routes_doc(adm)
        env.eq("GET /routes: generation 2, source file, the new table", d,
               {"generation": 2, "source": "file",
                "routes": [{"match": "*", "upstream": b2.addr}]})
        env.eq("metrics: reloads{file,success} 1", reloads(adm, "success"), 1.0)
        # Workers adopt the snapshot between requests: once the load has
        # moved on, the old backend gets nothing more.
        env.check("the load goes on after the update", load.wait_more(200, 60))
        settled = load_count(b1)
        env.check("the load goes on (2)", load.wait_more(200, 60))
        env.eq("after the update settled, the old backend gets no request", load_count(b1),
               settled)
        env.check("the load reaches the new backend", load_count(b2) >= 200, b2.stats())
        r = slow.finish()
        env.check("the download in flight across the update completes (200, clean)",
                  r.ok(0) and r.backend_port(0) == b1.port, r)
        env.eq("... with the exact body",
               (r.reqs[0]["sha"], r.reqs[0]["len"]) if r.reqs else None, (pattern_sha256(n), n))
        env.check("the next request on that same connection takes the new route",
                  r.ok(1) and r.backend_port(1) == b2.port, r)

        # 2. an invalid update (unknown key, and a route to b1 that must not
        # be applied)
        bad = config_text(port, cert.cert, cert.key, [("*", b1.addr)], aport,
                          server={"bogus_reload_key": 1})
        i = nlines(q)
        cm.update({"qrux.yaml": bad})
        ln = wait_log(q, r"config reload \(file changed\) rejected", i, 10)
        env.check("invalid update: the rejection is logged", ln, q.log_tail())
        env.check("invalid update: the log names the field and the reason",
                  ln and "server.bogus_reload_key" in ln and "unknown key" in ln, ln)
        env.eq("invalid update: generation 2 stays in force", generation(adm), 2)
        env.eq("invalid update: the old route keeps serving", served_by(q), b2.port)
        env.eq("invalid update: metrics reloads{file,error} 1", reloads(adm, "error"), 1.0)
        c = adm.get("/config").json()
        env.check("invalid update: GET /config shows last_error naming the field",
                  "server.bogus_reload_key" in (c.get("last_error") or ""), c.get("last_error"))
        env.eq("invalid update: GET /config still has the routes in force",
               c.get("config", {}).get("routes"), [{"match": "*", "upstream": b2.addr}])
        n1 = load_count(b1)
        env.check("the load goes on after the invalid update", load.wait_more(200, 60))
        env.eq("invalid update: the rejected route (old backend) gets nothing", load_count(b1), n1)

        # 3. valid again: back to b1
        i = nlines(q)
        cm.update({"qrux.yaml": config_text(port, cert.cert, cert.key, [("*", b1.addr)], aport)})
        env.check("valid update after the invalid one: served", wait_served_by(q, b1.port),
                  q.log_tail())
        env.check("valid update: logged as generation 3",
                  wait_log(q, r"config reload \(file changed\): generation 3", i, 5), q.log_tail())
        env.eq("valid update: generation 3", generation(adm), 3)
        env.eq("valid update: metrics reloads{file,success} 2", reloads(adm, "success"), 2.0)
        c = adm.get("/config").json()
        env.check("valid update: GET /config last_error cleared", c.get("last_error") is None,
                  c.get("last_error"))
        ms, _, _ = scrape(adm)
        env.eq("metrics: qrux_config_generation 3", metric(ms, "qrux_config_generation"), 3.0)
        env.check("the load goes on after the last update", load.wait_more(200, 60))
    finally:
        runs = load.stop()
    total = sum(r["ok"] for r in runs)
    failed = load.failed_runs(runs)
    env.check("the load made many requests (%d in %d connections)" % (total, len(runs)),
              total >= 1000)
    env.eq("zero failed requests over the whole run", len(failed), 0,
           [(r.get("summary"), r["bad"][:5]) for r in failed[:3]])
    ports = set()
    for r in runs:
        ports.update(p for p in r["ports"] if p)
    env.eq("the load saw both backends", ports, {str(b1.port), str(b2.port)})
    env.eq("the backends got exactly the requests the load saw answered",
           load_count(b1) + load_count(b2), total,
           "b1=%d b2=%d" % (load_count(b1), load_count(b2)))
    stop(q)


def many_swaps_under_load(env):
    """30 ConfigMap updates in a row, each flipping the route between two
    backends, under HTTP/3 load: each is served, none fails a request (a
    request that began under the old table finishes on its upstream)."""
    b = [env.backend(), env.backend()]
    cert = env.cert()
    port, aport = harness.free_port("udp"), harness.free_port("tcp")
    mk = lambda be: config_text(port, cert.cert, cert.key, [("*", be.addr)], aport)
    cm = AtomicDir(os.path.join(env.dir, "cm-many"), {"qrux.yaml": mk(b[0])})
    q = start_qrux_at(env, cm.path("qrux.yaml"), port)
    adm = Admin(aport)
    swaps = 30
    load = Load(env, q, ns=(50, 50))
    unserved = []
    try:
        env.check("the load runs", load.wait_more(200, 60))
        for k in range(1, swaps + 1):
            cm.update({"qrux.yaml": mk(b[k % 2])})
            if not wait_served_by(q, b[k % 2].port, 15):
                unserved.append(k)
            time.sleep(0.2)
    finally:
        runs = load.stop()
    env.eq("every one of %d updates was served" % swaps, unserved, [])
    env.eq("generation %d" % (swaps + 1), generation(adm), swaps + 1)
    env.eq("metrics: %d file reloads" % swaps, reloads(adm, "success"), float(swaps))
    failed = load.failed_runs(runs)
    env.eq("zero failed requests across %d updates (%d requests)"
           % (swaps, sum(r["ok"] for r in runs)), len(failed), 0,
           [(r.get("summary"), r["bad"][:5]) for r in failed[:3]])
    stop(q)


def restart_only(env):
    """server.listen and server.workers need a restart: refused, counted as
    restart_required, the running config kept whole (a route changed in the
    same update is not applied), the process keeps serving."""
    b1, b2 = env.backend(), env.backend()
    cert = env.cert()
    port, aport = harness.free_port("udp"), harness.free_port("tcp")
    mk = lambda be, **kw: config_text(port, cert.cert, cert.key, [("*", be.addr)], aport, **kw)
    cm = AtomicDir(os.path.join(env.dir, "cm-restart"), {"qrux.yaml": mk(b1)})
    q = start_qrux_at(env, cm.path("qrux.yaml"), port)
    adm = Admin(aport)
    other = harness.free_port("udp")
    for n, (what, text, field) in enumerate([
            ("server.listen", mk(b2, listen="[::]:%d" % other), "server.listen"),
            ("server.workers", mk(b2, workers=3), "server.workers")], 1):
        i = nlines(q)
        cm.update({"qrux.yaml": text})
        ln = wait_log(q, r"config reload \(file changed\) not applied", i, 10)
        env.check("%s change: refused and logged" % what, ln, q.log_tail())
        env.check("%s change: the log names %s and says restart" % (what, field),
                  ln and field in ln and "restart" in ln, ln)
        env.eq("%s change: metrics reloads{file,restart_required} %d" % (what, n),
               reloads(adm, "restart_required"), float(n))
        env.eq("%s change: generation 1 stays" % what, generation(adm), 1)
        env.eq("%s change: never half-applied (the route change in it is not in force)" % what,
               served_by(q), b1.port)
        c = adm.get("/config").json()
        env.check("%s change: GET /config last_error names the field" % what,
                  field in (c.get("last_error") or ""), c.get("last_error"))
    env.check("listen change: nothing listens on the new port",
              harness.udp_port_free(other) and probe(other, timeout=2).status() is None)
    env.eq("no success counted", reloads(adm, "success"), 0.0)
    env.check("the process keeps serving", q.alive() and served_by(q) == b1.port)
    # A valid update after them still applies.
    cm.update({"qrux.yaml": mk(b2)})
    env.check("a valid update after restart-only ones applies", wait_served_by(q, b2.port))
    env.eq("... as generation 2", generation(adm), 2)
    stop(q)


def plain_file_edits(env):
    """A plain config file: editor-style replace (temp file + rename), an
    in-place write, delete then recreate, and the vim way (rename away,
    write new, delete backup) each take effect, one generation each."""
    bs = [env.backend() for _ in range(2)]
    cert = env.cert()
    port, aport = harness.free_port("udp"), harness.free_port("tcp")
    mk = lambda be: config_text(port, cert.cert, cert.key, [("*", be.addr)], aport)
    d = os.path.join(env.dir, "plain")
    os.makedirs(d)
    path = os.path.join(d, "qrux.yaml")
    with open(path, "w") as f:
        f.write(mk(bs[0]))
    q = start_qrux_at(env, path, port)
    adm = Admin(aport)
    env.check("a plain file is no subPath mount (no warning)", "subPath" not in q.log_text())

    def editor(text):
        tmp = os.path.join(d, ".qrux.yaml.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)

    def in_place(text):
        with open(path, "w") as f:
            f.write(text)

    def delete_recreate(text):
        os.unlink(path)
        # Longer than the watcher's debounce: it sees the file gone first.
        time.sleep(0.5)
        env.eq("delete-recreate: while the file is gone the old route serves",
               served_by(q), bs[(gen - 2) % 2].port)
        with open(path, "w") as f:
            f.write(text)

    def vim(text):
        bak = path + "~"
        os.rename(path, bak)
        with open(path, "w") as f:
            f.write(text)
        os.unlink(bak)

    gen = 1
    for name, fn in [("editor replace (rename over)", editor), ("in-place write", in_place),
                     ("delete then recreate", delete_recreate), ("vim (rename away, write)", vim)]:
        gen += 1
        want = bs[(gen - 1) % 2]
        i = nlines(q)
        fn(mk(want))
        env.check("%s: the new route serves" % name, wait_served_by(q, want.port), q.log_tail())
        env.check("%s: reload logged" % name,
                  wait_log(q, r"config reload \(file changed\): generation %d" % gen, i, 5),
                  q.log_tail())
        env.eq("%s: generation %d (one reload)" % (name, gen), generation(adm), gen)
    env.eq("plain file: every reload a success", reloads(adm, "success"), float(gen - 1))
    stop(q)


def identical_rewrite(env):
    """Rewriting the same content (atomic writer, in-place write, touch) is
    seen (debug log) but does not reload: the generation stays; the next real
    change is exactly one generation more."""
    b1, b2 = env.backend(), env.backend()
    cert = env.cert()
    port, aport = harness.free_port("udp"), harness.free_port("tcp")
    text = config_text(port, cert.cert, cert.key, [("*", b1.addr)], aport)
    cm = AtomicDir(os.path.join(env.dir, "cm-same"), {"qrux.yaml": text})
    q = start_qrux_at(env, cm.path("qrux.yaml"), port, log_level="debug")
    adm = Admin(aport)
    nosame = r"watch: event without a content change"

    i = nlines(q)
    cm.update({"qrux.yaml": text})
    env.check("identical atomic-writer update: the watcher saw it (debug log)",
              wait_log(q, nosame, i, 10), q.log_tail())
    env.eq("identical atomic-writer update: generation stays 1", generation(adm), 1)
    env.check("identical atomic-writer update: no reload logged",
              not any("config reload" in ln for ln in lines_since(q, i)))

    # The same bytes written in place into the payload file (through ..data).
    i = nlines(q)
    with open(cm.path("qrux.yaml"), "w") as f:
        f.write(text)
    os.utime(cm.path("qrux.yaml"))
    wait_log(q, nosame, i, 3)  # a write inside ..<ts>/ may go unseen: both are fine
    env.eq("identical in-place rewrite: generation stays 1", generation(adm), 1)
    env.check("identical in-place rewrite: no reload logged",
              not any("config reload" in ln for ln in lines_since(q, i)))

    i = nlines(q)
    cm.update({"qrux.yaml": config_text(port, cert.cert, cert.key, [("*", b2.addr)], aport)})
    env.check("a real change after identical rewrites applies", wait_served_by(q, b2.port))
    env.eq("... as generation 2 (the rewrites bumped nothing)", generation(adm), 2)
    env.eq("metrics: qrux_config_generation 2",
           metric(scrape(adm)[0], "qrux_config_generation"), 2.0)
    env.eq("metrics: one file reload", reloads(adm, "success"), 1.0)
    stop(q)


def sighup(env):
    """SIGHUP reloads the file even when no watcher event came (the config
    is a symlink to a file in a directory qrux does not watch, edited
    there); SIGHUP with an invalid file keeps the config in force."""
    b1, b2 = env.backend(), env.backend()
    cert = env.cert()
    port, aport = harness.free_port("udp"), harness.free_port("tcp")
    mk = lambda be, **kw: config_text(port, cert.cert, cert.key, [("*", be.addr)], aport, **kw)
    real_dir = os.path.join(env.dir, "hup-real")
    link_dir = os.path.join(env.dir, "hup-link")
    os.makedirs(real_dir)
    os.makedirs(link_dir)
    real = os.path.join(real_dir, "qrux.yaml")
    with open(real, "w") as f:
        f.write(mk(b1))
    link = os.path.join(link_dir, "qrux.yaml")
    os.symlink(real, link)
    q = start_qrux_at(env, link, port)
    adm = Admin(aport)

    i = nlines(q)
    q.signal(signal.SIGHUP)
    env.check("SIGHUP with the file unchanged: a reload is forced",
              wait_log(q, r"config reload \(SIGHUP\): generation 2", i, 10), q.log_tail())
    env.eq("SIGHUP: generation 2", generation(adm), 2)
    env.check("SIGHUP: the process keeps running", q.alive())

    i = nlines(q)
    with open(real, "w") as f:  # outside the watched directory
        f.write(mk(b2))
    q.signal(signal.SIGHUP)
    env.check("SIGHUP after an unwatched edit: the new route serves",
              wait_served_by(q, b2.port), q.log_tail())
    env.check("SIGHUP after an unwatched edit: logged as a SIGHUP reload",
              wait_log(q, r"config reload \(SIGHUP\): generation 3", i, 5), q.log_tail())

    i = nlines(q)
    with open(real, "w") as f:
        f.write(mk(b1, server={"drain_delay_secs": "soon"}))
    q.signal(signal.SIGHUP)
    ln = wait_log(q, r"config reload \(SIGHUP\) rejected", i, 10)
    env.check("SIGHUP with an invalid file: rejected, field named",
              ln and "server.drain_delay_secs" in ln, ln or q.log_tail())
    env.eq("SIGHUP with an invalid file: generation 3 stays", generation(adm), 3)
    env.eq("SIGHUP with an invalid file: the old route serves", served_by(q), b2.port)
    env.eq("SIGHUP with an invalid file: counted as a file error", reloads(adm, "error"), 1.0)
    env.check("SIGHUP: no drain started (readyz 200)", adm.code("/readyz") == 200)
    stop(q)


def api_then_file(env):
    """The route API and the ConfigMap: an API table stays until the file
    changes; a rejected file change leaves it; a valid one replaces it and
    GET /routes says source file again."""
    b1, b2, b3 = env.backend(), env.backend(), env.backend()
    cert = env.cert()
    port, aport = harness.free_port("udp"), harness.free_port("tcp")
    mk = lambda be, **kw: config_text(port, cert.cert, cert.key, [("*", be.addr)], aport, **kw)
    cm = AtomicDir(os.path.join(env.dir, "cm-api"), {"qrux.yaml": mk(b1)})
    q = start_qrux_at(env, cm.path("qrux.yaml"), port)
    adm = Admin(aport)
    r = adm.put_routes({"routes": [{"match": "*", "upstream": b2.addr}]})
    env.eq("PUT /routes -> 200", r.status, 200, r)
    env.check("the API route serves", wait_served_by(q, b2.port))
    env.eq("GET /routes: source api", (routes_doc(adm) or {}).get("source"), "api")
    i = nlines(q)
    cm.update({"qrux.yaml": mk(b3, server={"bogus_reload_key": 1})})
    env.check("an invalid file change is rejected",
              wait_log(q, r"config reload \(file changed\) rejected", i, 10), q.log_tail())
    env.eq("... and leaves the API table in force", served_by(q), b2.port)
    env.eq("... GET /routes still source api", (routes_doc(adm) or {}).get("source"), "api")
    cm.update({"qrux.yaml": mk(b3)})
    env.check("a valid file change replaces the API table", wait_served_by(q, b3.port))
    env.eq("GET /routes: source file, the file's table, generation 3", routes_doc(adm),
           {"generation": 3, "source": "file", "routes": [{"match": "*", "upstream": b3.addr}]})
    stop(q)


def check_command(env):
    """`qrux check --config FILE`: 0 and "ok" for a good file; 2 naming the
    field for a bad one; nothing is bound."""
    cert = env.cert()
    port = harness.free_port("udp")
    good = os.path.join(env.dir, "good.yaml")
    with open(good, "w") as f:
        f.write(config_text(port, cert.cert, cert.key, [("*", "127.0.0.1:9")]))
    rc, out, err = run([harness.qrux_bin(), "check", "--config", good], timeout=30)
    env.eq("qrux check good.yaml: exit 0", rc, 0, err)
    env.check("qrux check good.yaml: says ok", b"ok" in out, out)
    env.check("qrux check binds nothing", harness.udp_port_free(port))
    cases = [
        ("unknown key", config_text(port, cert.cert, cert.key, [("*", "127.0.0.1:9")],
                                    server={"bogus_reload_key": 1}),
         "server.bogus_reload_key"),
        ("bad upstream", config_text(port, cert.cert, cert.key, [("*", "127.0.0.1")]),
         "routes[0].upstream"),
        ("missing certificate", config_text(port, os.path.join(env.dir, "nope.pem"), cert.key,
                                            [("*", "127.0.0.1:9")]), "server.cert"),
    ]
    for name, text, field in cases:
        p = os.path.join(env.dir, "bad-%s.yaml" % name.replace(" ", "-"))
        with open(p, "w") as f:
            f.write(text)
        rc, out, err = run([harness.qrux_bin(), "check", "--config", p], timeout=30)
        env.eq("qrux check (%s): exit 2" % name, rc, 2, (out, err))
        env.check("qrux check (%s): names %s" % (name, field), field.encode() in err, err)


def subpath_warning(env):
    """A ConfigMap mounted with subPath is a single file bind-mounted over
    the path: qrux warns at start-up that updates will never arrive. Done
    in a private mount namespace (unshare -m, root), the machine untouched."""
    be = env.backend()
    cert = env.cert()
    port = harness.free_port("udp")
    src = os.path.join(env.dir, "subpath-src.yaml")
    with open(src, "w") as f:
        f.write(config_text(port, cert.cert, cert.key, [("*", be.addr)]))
    target_dir = os.path.join(env.dir, "subpath-etc")
    os.makedirs(target_dir)
    target = os.path.join(target_dir, "qrux.yaml")
    with open(target, "w") as f:
        f.write("# replaced by the bind mount\n")
    # A wrapper the harness runs in place of the binary: unshare execs sh,
    # sh execs qrux (under the harness's alias name), so the pid the harness
    # signals is qrux's.
    wrapper = os.path.join(env.dir, "qx-subpath.sh")
    with open(wrapper, "w") as f:
        f.write('#!/bin/sh\nexec %s -m --propagation private sh -c '
                '\'mount --bind "$0" "$1" && exec "$2" "$3" "$1"\' %s %s %s "$1"\n'
                % (harness.need("unshare"), shlex.quote(src), shlex.quote(target),
                   shlex.quote(env.qrux_alias())))
    os.chmod(wrapper, 0o755)
    env.qrux_alias = lambda: wrapper  # this one start only
    try:
        q = start_qrux_at(env, target, port, wait=False)
    finally:
        del env.qrux_alias
    ok = q.wait_ready(15)
    env.check("subPath: qrux starts in the private mount namespace", ok, q.log_tail())
    ln = next((l for l in q.log_text().splitlines() if "subPath" in l), None)
    env.check("subPath: start-up warns that updates never arrive",
              ln and "warn" in ln and target in ln, q.log_tail())
    env.eq("subPath: it serves anyway", served_by(q) if ok else None, be.port)
    env.check("the bind mount stayed in its namespace (the file here is unchanged)",
              read(target).startswith(b"# replaced"))
    stop(q)


def cert_rotation(env):
    """Certificate and key in a Secret-style atomic-writer directory: a swap
    gives new handshakes the new certificate while an open connection
    finishes its download (exact body) and makes one more request; SIGUSR1
    reloads files the watcher cannot see; garbage and a mismatched pair are
    rejected with the certificate in force kept."""
    be = env.backend()
    a, b, c = new_cert(env, "cert-a"), new_cert(env, "cert-b"), new_cert(env, "cert-c")
    fa, fb, fc = der_sha256(a.cert), der_sha256(b.cert), der_sha256(c.cert)
    env.check("three distinct certificates", len({fa, fb, fc}) == 3)
    sec = AtomicDir(os.path.join(env.dir, "secret"),
                    {"tls.crt": read(a.cert), "tls.key": read(a.key)})
    port, aport = harness.free_port("udp"), harness.free_port("tcp")
    tport = harness.free_port("tcp")
    cfg = os.path.join(env.dir, "qrux-rot.yaml")
    with open(cfg, "w") as f:
        f.write(config_text(port, sec.path("tls.crt"), sec.path("tls.key"), [("*", be.addr)],
                            aport, server={"https_listen": '"127.0.0.1:%d"' % tport}))
    q = start_qrux_at(env, cfg, port)
    adm = Admin(aport)
    r = probe(q, "/id", cert=True)
    env.eq("before rotation: a new connection gets certificate A", r.cert, fa, r)
    env.eq("before rotation: HTTPS (TCP) handshakes get certificate A", tls_cert_sha256(tport),
           fa)

    n = 500000  # 5 s
    slow_path = "/slow/%d?ms=100&chunk=10000" % n
    slow = ProbeRun(env, q, slow_path, cert=True, also_get="/id", timeout=60)
    env.check("a long download is in flight on an open connection",
              wait_until(lambda: be.stats()["inflight"].get("/slow/%d" % n), 10, 0.02))
    i = nlines(q)
    sec.update({"tls.crt": read(b.cert), "tls.key": read(b.key)})
    env.check("Secret swap: a new connection gets certificate B",
              wait_until(lambda: probe(q, "/id", cert=True).cert == fb, 15, 0.1), q.log_tail())
    env.check("the download was still in flight during the swap",
              slow.proc.poll() is None and be.stats()["inflight"].get("/slow/%d" % n))
    env.check("Secret swap: a new HTTPS (TCP) handshake gets certificate B",
              wait_until(lambda: tls_cert_sha256(tport) == fb, 5, 0.1),
              "got %s (A=%s)" % (tls_cert_sha256(tport), fa))
    env.check("Secret swap: the certificate reload is logged",
              wait_log(q, r"certificate reload \(file changed\): new handshakes use", i, 5),
              q.log_tail())
    r = slow.finish()
    env.eq("open connection: it had certificate A", r.cert, fa, r)
    env.check("open connection: the download completes (200, clean)", r.ok(0), r)
    env.eq("open connection: exact body", (r.reqs[0]["sha"], r.reqs[0]["len"]) if r.reqs else None,
           (pattern_sha256(n), n), r)
    env.check("open connection: one more request after the swap on it works",
              r.ok(1) and r.backend_port(1) == be.port, r)
    env.eq("a certificate swap is no config reload (generation 1)", generation(adm), 1)

    # SIGUSR1: the key and cert paths are symlinks into a directory qrux does
    # not watch; their targets are replaced there, then SIGUSR1.
    hid = os.path.join(env.dir, "hidden-tls")
    os.makedirs(hid)
    shutil.copy(b.cert, os.path.join(hid, "tls.crt"))
    shutil.copy(b.key, os.path.join(hid, "tls.key"))
    vis = os.path.join(env.dir, "visible-tls")
    os.makedirs(vis)
    os.symlink(os.path.join(hid, "tls.crt"), os.path.join(vis, "tls.crt"))
    os.symlink(os.path.join(hid, "tls.key"), os.path.join(vis, "tls.key"))
    cfg2 = os.path.join(env.dir, "qrux-usr1.yaml")
    port2, tport2 = harness.free_port("udp"), harness.free_port("tcp")
    with open(cfg2, "w") as f:
        f.write(config_text(port2, os.path.join(vis, "tls.crt"), os.path.join(vis, "tls.key"),
                            [("*", be.addr)],
                            server={"https_listen": '"127.0.0.1:%d"' % tport2}))
    q2 = start_qrux_at(env, cfg2, port2)
    env.eq("SIGUSR1 setup: certificate B", probe(q2, cert=True).cert, fb)
    shutil.copy(c.cert, os.path.join(hid, "tls.crt"))
    shutil.copy(c.key, os.path.join(hid, "tls.key"))
    i = nlines(q2)
    q2.signal(signal.SIGUSR1)
    env.check("SIGUSR1: a new connection gets certificate C",
              wait_until(lambda: probe(q2, cert=True).cert == fc, 15, 0.1), q2.log_tail())
    env.check("SIGUSR1: a new HTTPS (TCP) handshake gets certificate C",
              wait_until(lambda: tls_cert_sha256(tport2) == fc, 5, 0.1),
              "got %s (B=%s)" % (tls_cert_sha256(tport2), fb))
    env.check("SIGUSR1: logged as a SIGUSR1 reload",
              wait_log(q2, r"certificate reload \(SIGUSR1\)", i, 5), q2.log_tail())
    env.check("SIGUSR1: the process keeps serving", q2.alive() and served_by(q2) == be.port)
    stop(q2)

    # Broken rotations through the Secret: garbage PEM, then a mismatched pair.
    https_before = tls_cert_sha256(tport)
    for name, files in [("garbage certificate", {"tls.crt": b"-----BEGIN CERTIFICATE-----\n"
                                                  b"bm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
                                                  "tls.key": read(c.key)}),
                        ("certificate and key that do not match",
                         {"tls.crt": read(c.cert), "tls.key": read(a.key)})]:
        i = nlines(q)
        sec.update(files)
        ln = wait_log(q, r"certificate reload \(file changed\) rejected", i, 10)
        env.check("%s: rejected and logged" % name, ln, q.log_tail())
        r = probe(q, "/id", cert=True)
        env.eq("%s: new connections still get certificate B" % name, r.cert, fb, r)
        env.check("%s: and are served" % name, r.ok() and r.backend_port() == be.port, r)
        env.eq("%s: HTTPS handshakes keep the certificate they had" % name,
               tls_cert_sha256(tport), https_before)
    sec.update({"tls.crt": read(c.cert), "tls.key": read(c.key)})
    env.check("a good pair after the broken ones: certificate C",
              wait_until(lambda: probe(q, "/id", cert=True).cert == fc, 15, 0.1), q.log_tail())
    stop(q)


def main():
    with Env("reload") as env:
        env.case("kubelet atomic writer under HTTP/3 load", kubelet_writer_under_load, env)
        env.case("30 updates under HTTP/3 load", many_swaps_under_load, env)
        env.case("restart-only fields", restart_only, env)
        env.case("plain file: editor, in-place, delete-recreate, vim", plain_file_edits, env)
        env.case("identical rewrite does not reload", identical_rewrite, env)
        env.case("SIGHUP", sighup, env)
        env.case("route API vs the ConfigMap", api_then_file, env)
        env.case("qrux check", check_command, env)
        env.case("subPath mount warning", subpath_warning, env)
        env.case("certificate rotation", cert_rotation, env)


if __name__ == "__main__":
    main()
