#!/usr/bin/env python3
"""The admin server as Kubernetes and an operator see it (issue 4): probe
codes through start-up, readiness that waits for the app, drain by SIGTERM
and by POST /drain; /metrics values matching the traffic made (curl scrape,
gtlsclient traffic) and accepted by `promtool check metrics`; the JSON route
API (a PUT switching routes under a 2000-request HTTP/3 load with no failed
request, 400 on bad tables with nothing changed, 412 on a stale If-Match,
413 over 1 MiB); the bearer token; a public admin address without a token
refused at start.
"""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (READY_RE, Blackhole, Env, Qrux, free_port, need, qrux_bin,  # noqa: E402
                     run, wait_until, yaml_str)

# ---------------------------------------------------------------------------
# helpers


def _kill_live_groups():
    """harness.kill_all, minus one hazard: it also SIGKILLs the process group
    of every child already reaped, and pids wrap (pid_max 32768 here), so in
    a parallel e2e run that group id may belong to another test's new qrux
    by then (seen as qrux dying of signal 9 mid-test). Here only groups
    whose leader is still ours are signalled."""
    with harness._PROCS_LOCK:
        procs = list(harness._PROCS)
        harness._PROCS.clear()
    for p in reversed(procs):
        if p.poll() is not None:
            continue
        harness._kill_group(p)
        try:
            os.killpg(p.pid, signal.SIGKILL)  # leftovers in a group we still own
        except (ProcessLookupError, PermissionError):
            pass


harness.kill_all = _kill_live_groups  # Env.__exit__ calls it by its module name


def exit_detail(q):
    """The log tail, and a note when qrux died of a SIGKILL (where this is
    called the test has sent none: another test's cleanup hitting a reused
    process group id, not qrux's fault)."""
    note = ""
    if q.proc.returncode == -9:
        note = ("NOTE: qrux was SIGKILLed from outside this test (another e2e run's "
                "cleanup killing a reused process group id?)\n")
    return note + q.log_tail()


def admin_yaml(port, host="127.0.0.1", token_file=None, ready_requires_upstream=None,
               listen=None):
    """The top-level `admin:` section (render_config appends extra_server as
    written, so a column-0 key is a top-level key)."""
    listen = listen or (("[%s]:%d" if ":" in host else "%s:%d") % (host, port))
    out = ["admin:", "  listen: %s" % yaml_str(listen)]
    if token_file:
        out.append("  token_file: %s" % yaml_str(token_file))
    if ready_requires_upstream is not None:
        out.append("  ready_requires_upstream: %s" % ("true" if ready_requires_upstream
                                                      else "false"))
    return "\n".join(out) + "\n"


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lowercased names
        self.body = body

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "Resp(%s, %r, %r)" % (self.status, self.headers, self.body[:300])


class Admin:
    """A small HTTP/1.1 client for the admin port (one connection per call)."""

    def __init__(self, port, host="127.0.0.1", token=None):
        self.port = port
        self.host = host
        self.token = token

    def req(self, method, path, body=None, headers=None, token=True, timeout=10,
            chunked=False):
        h = dict(headers or {})
        if token is True:
            token = self.token
        if token:
            h["Authorization"] = "Bearer %s" % token
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            if chunked:
                c.request(method, path, body=body, headers=h, encode_chunked=True)
            else:
                c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
        finally:
            c.close()

    def get(self, path, **kw):
        return self.req("GET", path, **kw)

    def put_routes(self, doc, if_match=None, ctype="application/json", **kw):
        body = doc if isinstance(doc, (bytes, str)) else json.dumps(doc)
        if isinstance(body, str):
            body = body.encode()
        h = {"Content-Type": ctype} if ctype else {}
        if if_match is not None:
            h["If-Match"] = str(if_match)
        return self.req("PUT", "/routes", body=body, headers=h, **kw)

    def code(self, path, **kw):
        """Status of GET |path|, or None when nothing answers."""
        try:
            return self.get(path, timeout=2, **kw).status
        except OSError:
            return None


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


def _unescape(v):
    return re.sub(r'\\(.)', lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v)


def parse_metrics(text):
    """{(name, frozenset(labels)): float} plus the list of duplicate series."""
    out = {}
    dups = []
    for ln in text.splitlines():
        if not ln or ln.startswith("#"):
            continue
        m = _SAMPLE.match(ln)
        if not m:
            raise ValueError("unparsable sample line %r" % ln)
        labels = {}
        if m.group(2):
            pos = 0
            s = m.group(2)
            while pos < len(s):
                lm = _LABEL.match(s, pos)
                if not lm:
                    raise ValueError("unparsable labels in %r" % ln)
                labels[lm.group(1)] = _unescape(lm.group(2))
                pos = lm.end()
        key = (m.group(1), frozenset(labels.items()))
        if key in out:
            dups.append(ln)
        out[key] = float(m.group(3))
    return out, dups


def metric(ms, name, **labels):
    return ms.get((name, frozenset((k, str(v)) for k, v in labels.items())))


def scrape(adm):
    r = adm.get("/metrics")
    if r.status != 200:
        raise RuntimeError("GET /metrics -> %s %r" % (r.status, r.body[:200]))
    ms, dups = parse_metrics(r.text)
    return ms, dups, r


def start_qrux(env, routes, admin_port, admin_kw=None, limits=None, workers=2, wait=True,
               log_level="info", drain_delay=0):
    """qrux with an admin section. drain_delay (server.drain_delay_secs) is
    0 unless a test is about the drain: q.stop() is then quick."""
    extra = admin_yaml(admin_port, **(admin_kw or {}))
    if drain_delay is not None:
        extra = "  drain_delay_secs: %d\n" % drain_delay + extra
    return env.qrux(routes=routes, limits=limits, workers=workers, extra_server=extra,
                    wait=wait, log_level=log_level)


def closed_port():
    """A loopback TCP port nobody listens on (connects are refused)."""
    return free_port("tcp")


def wait_download(run_, timeout):
    return wait_until(lambda: run_.downloaded() > 0, timeout)


def backend_port_of(r, sid):
    v = r.header("x-backend-port", sid)
    return int(v) if v and v.isdigit() else None


# ---------------------------------------------------------------------------
# probes


def probes_startup(env, be):
    """Polls /startupz and /readyz from the moment qrux is spawned: each
    moves from 503 (or no answer) to 200 and never back."""
    aport = free_port("tcp")
    path, port = env.write_config([("*", be.addr)],
                                  extra_server="  drain_delay_secs: 0\n" + admin_yaml(aport))
    q = Qrux(env, path, port)
    env.qruxes.append(q)
    adm = Admin(aport)
    seen = {"/startupz": [], "/readyz": [], "/livez": []}
    end = time.monotonic() + 15
    while time.monotonic() < end:
        for p in seen:
            c = adm.code(p)
            if not seen[p] or seen[p][-1] != c:
                seen[p].append(c)
        if all(v and v[-1] == 200 for v in seen.values()):
            break
        if q.proc.poll() is not None:
            break
    for p, codes in seen.items():
        env.check("%s during start-up: ends at 200 (codes seen in order: %s)" % (p, codes),
                  codes and codes[-1] == 200, q.log_tail())
        env.check("%s during start-up: only 'no answer' or 503 before 200, never 200 then "
                  "503 (%s)" % (p, codes),
                  all(c in (None, 503) for c in codes[:-1]))
    env.check("qrux logged its ready line", q.wait_ready(5), q.log_tail())

    for p, body in (("/startupz", "started\n"), ("/readyz", "ready\n"), ("/livez", "ok\n")):
        r = adm.get(p)
        env.eq("GET %s when up -> 200" % p, r.status, 200, r)
        env.eq("GET %s body" % p, r.text, body)
        env.check("GET %s is text/plain" % p,
                  r.headers.get("content-type", "").startswith("text/plain"), r.headers)
        h = adm.req("HEAD", p)
        env.eq("HEAD %s -> 200, no body" % p, (h.status, h.body), (200, b""))
    r = adm.get("/nope")
    env.eq("unknown path -> 404", r.status, 404, r)
    r = adm.req("POST", "/readyz")
    env.eq("POST /readyz -> 405", r.status, 405, r)
    env.check("405 names the allowed methods (Allow: GET, HEAD)",
              "GET" in r.headers.get("allow", ""), r.headers)
    r = adm.req("DELETE", "/routes")
    env.eq("DELETE /routes -> 405", r.status, 405, r)
    env.check("405 on /routes allows GET and PUT", "PUT" in r.headers.get("allow", "")
              and "GET" in r.headers.get("allow", ""), r.headers)
    r = adm.get("/drain")
    env.eq("GET /drain -> 405 (drain only by POST)", r.status, 405, r)
    env.eq("GET /drain did not drain: readyz still 200", adm.code("/readyz"), 200)
    q.stop()


def ready_requires_upstream(env):
    """admin.ready_requires_upstream: /readyz 503 naming the upstream until
    the app accepts TCP connections, then 200; startupz/livez unaffected."""
    up_port = closed_port()
    up = "127.0.0.1:%d" % up_port
    aport = free_port("tcp")
    q = start_qrux(env, [("*", up)], aport, {"ready_requires_upstream": True}, wait=False)
    adm = Admin(aport)
    started = wait_until(lambda: "started: udp" in q.log_text(), 15)
    env.check("ready_requires_upstream, app down: the start-up line says started, not ready",
              started and not q.ready.is_set(), q.log_tail())
    env.check("... and names why /readyz is 503",
              "upstream %s not accepting connections" % up in q.log_text(), q.log_tail())
    r = adm.get("/readyz")
    env.eq("ready_requires_upstream, app down: readyz 503", r.status, 503, r)
    env.eq("ready_requires_upstream, app down: reason names the upstream", r.text,
           "upstream %s not accepting connections\n" % up)
    env.eq("ready_requires_upstream, app down: startupz 200", adm.code("/startupz"), 200)
    env.eq("ready_requires_upstream, app down: livez 200", adm.code("/livez"), 200)
    ms, _, _ = scrape(adm)
    env.eq("ready_requires_upstream, app down: qrux_ready 0", metric(ms, "qrux_ready"), 0.0)

    t0 = time.monotonic()
    r = adm.get("/readyz")
    env.check("a cached upstream check answers fast (%.3fs < 0.15s)" % (time.monotonic() - t0),
              time.monotonic() - t0 < 0.15)

    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", up_port))
    ls.listen(64)
    try:
        t0 = time.monotonic()
        ok = wait_until(lambda: adm.code("/readyz") == 200, 5, interval=0.1)
        dt = time.monotonic() - t0
        env.check("app comes up: readyz turns 200 within ~1 s of cache (%.2fs)" % dt,
                  ok and dt < 2.5, adm.get("/readyz"))
        env.check("app comes up: the 'ready' line follows", q.wait_ready(5), q.log_tail())
        ms, _, _ = scrape(adm)
        env.eq("app up: qrux_ready 1", metric(ms, "qrux_ready"), 1.0)
    finally:
        ls.close()
    q.stop()

    # A blackholed upstream (connect hangs) costs the probe ~200 ms, not the
    # kubelet's whole timeout.
    bh = Blackhole()
    try:
        aport = free_port("tcp")
        q = start_qrux(env, [("*", bh.addr)], aport, {"ready_requires_upstream": True},
                       wait=False)
        wait_until(lambda: "started: udp" in q.log_text(), 15)
        adm = Admin(aport)
        t0 = time.monotonic()
        r = adm.get("/readyz")
        dt = time.monotonic() - t0
        env.eq("blackholed upstream: readyz 503", r.status, 503, r)
        env.check("blackholed upstream: the check gives up quickly (%.2fs < 1s)" % dt, dt < 1)
        q.stop()
    finally:
        bh.close()


def sigterm_drain(env, be):
    """SIGTERM with a slow request in flight: readyz 503 "draining" at once,
    livez and startupz stay 200, the request completes, exit 0."""
    aport = free_port("tcp")
    q = start_qrux(env, [("*", be.addr)], aport, limits={"graceful_shutdown_secs": 15},
                   drain_delay=None)  # the default delay, as deployed
    adm = Admin(aport)
    env.eq("before SIGTERM: readyz 200", adm.code("/readyz"), 200)
    n = 60000
    slow = env.gtls_start(q, "/slow/%d?ms=200&chunk=10000" % n, timeout=30)
    env.check("a slow request is in flight", wait_download(slow, 5))
    q.signal(signal.SIGTERM)
    r = wait_until(lambda: (lambda x: x if x.status == 503 else None)(adm.get("/readyz")), 1,
                   interval=0.02)
    env.check("right after SIGTERM: readyz 503", r is not None and r.status == 503,
              adm.get("/readyz"))
    if r is not None:
        env.eq("right after SIGTERM: readyz reason", r.text, "draining\n")
    env.eq("while draining: livez 200", adm.code("/livez"), 200)
    env.eq("while draining: startupz 200", adm.code("/startupz"), 200)
    ms, _, _ = scrape(adm)
    env.eq("while draining: qrux_ready 0", metric(ms, "qrux_ready"), 0.0)
    env.check("the slow request is still in flight while readyz says draining",
              slow.proc.poll() is None)
    res = slow.finish()
    env.eq("in-flight request completes after SIGTERM", res.status(), 200, res.summary())
    env.eq("in-flight request: whole body", len(res.body()), n)
    rc = q.wait_exit(15)
    env.eq("SIGTERM: exit 0", rc, 0, exit_detail(q))
    env.eq("after exit: the admin port is closed", adm.code("/livez"), None)


def post_drain(env, be):
    """POST /drain (a preStop hook): 202, readyz 503 at once, the in-flight
    request finishes, exit 0."""
    aport = free_port("tcp")
    q = start_qrux(env, [("*", be.addr)], aport, limits={"graceful_shutdown_secs": 15},
                   drain_delay=None)
    adm = Admin(aport)
    n = 40000
    slow = env.gtls_start(q, "/slow/%d?ms=200&chunk=10000" % n, timeout=30)
    env.check("POST /drain: a slow request is in flight", wait_download(slow, 5))
    r = adm.req("POST", "/drain")
    env.eq("POST /drain -> 202", r.status, 202, r)
    env.eq("POST /drain body", r.text, "draining\n")
    r = adm.get("/readyz")
    env.eq("right after POST /drain: readyz 503", r.status, 503, r)
    env.eq("right after POST /drain: reason", r.text, "draining\n")
    env.eq("after POST /drain: livez 200", adm.code("/livez"), 200)
    r = adm.req("POST", "/drain")
    env.eq("a second POST /drain is harmless (202)", r.status, 202, r)
    res = slow.finish()
    env.eq("POST /drain: in-flight request completes", res.status(), 200, res.summary())
    env.eq("POST /drain: whole body", len(res.body()), n)
    rc = q.wait_exit(15)
    env.eq("POST /drain: exit 0 after the in-flight request", rc, 0, exit_detail(q))
    env.check("POST /drain was logged", "POST /drain" in q.log_text(), q.log_tail())


# ---------------------------------------------------------------------------
# metrics


def metrics_values(env, be):
    """Known traffic, then exact values: 5x 200 and 1x 404 from the app,
    2x 502 from a dead upstream, 1x 421 (no route: upstream="")."""
    dead = "127.0.0.1:%d" % closed_port()
    aport = free_port("tcp")
    q = start_qrux(env, [("a.test", be.addr), ("dead.test", dead)], aport)
    adm = Admin(aport)
    p = q.port

    ms0, _, _ = scrape(adm)
    env.eq("fresh process: no request series yet",
           [k for k in ms0 if k[0] == "qrux_http_requests_total"], [])
    env.eq("fresh process: handshakes 0",
           metric(ms0, "qrux_quic_handshakes_total", result="success"), 0.0)

    conns = 0
    r = env.gtls(q, "/bytes/1000", n=5, authority="a.test:%d" % p, timeout=30, download=False)
    conns += 1
    env.eq("5x GET a.test/bytes/1000 -> 200", sorted(r.statuses().values()), [200] * 5,
           r.summary())
    r = env.gtls(q, "/status/404", authority="a.test:%d" % p, timeout=20)
    conns += 1
    env.eq("GET a.test/status/404 -> 404", r.status(), 404, r.summary())
    for _ in range(2):
        r = env.gtls(q, "/x", authority="dead.test:%d" % p, timeout=20)
        conns += 1
        env.eq("GET dead.test/x -> 502", r.status(), 502, r.summary())
    r = env.gtls(q, "/x", authority="nomatch.test:%d" % p, timeout=20)
    conns += 1
    env.eq("GET nomatch.test/x -> 421", r.status(), 421, r.summary())

    # The counters are bumped when a stream ends; give the last one a moment.
    def settled():
        ms, _, _ = scrape(adm)
        return ms if metric(ms, "qrux_http_requests_total", method="GET", status="421",
                            upstream="", protocol="h3") == 1.0 and \
            metric(ms, "qrux_active_connections", protocol="h3") == 0.0 else None
    wait_until(settled, 5, interval=0.1)

    # Scrape with curl, as Prometheus would: check the content type.
    curl = need("curl")
    rc, out, err = run([curl, "-sS", "-D", "-", "http://127.0.0.1:%d/metrics" % aport],
                       timeout=15)
    env.eq("curl /metrics exits 0", rc, 0, err)
    head, _, body = out.partition(b"\r\n\r\n")
    env.check("GET /metrics -> 200", head.startswith(b"HTTP/1.1 200"), head[:200])
    env.check("Content-Type: text/plain; version=0.0.4; charset=utf-8",
              b"content-type: text/plain; version=0.0.4; charset=utf-8" in head.lower(), head)
    text = body.decode("utf-8")
    ms, dups = parse_metrics(text)
    env.eq("every series appears once", dups, [])

    def req(status, up):
        return metric(ms, "qrux_http_requests_total", method="GET", status=status, upstream=up,
                      protocol="h3")
    env.eq("requests_total{GET,200,app,h3} == 5", req(200, be.addr), 5.0)
    env.eq("requests_total{GET,404,app,h3} == 1", req(404, be.addr), 1.0)
    env.eq("requests_total{GET,502,dead,h3} == 2", req(502, dead), 2.0)
    env.eq("requests_total{GET,421,upstream=\"\",h3} == 1", req(421, ""), 1.0)
    total = sum(v for k, v in ms.items() if k[0] == "qrux_http_requests_total")
    env.eq("requests_total sums to the 9 requests made", total, 9.0)

    def hist(suffix, up, **kw):
        return metric(ms, "qrux_http_request_duration_seconds" + suffix, method="GET",
                      upstream=up, **kw)
    env.eq("duration _count{GET,app} == 6", hist("_count", be.addr), 6.0)
    env.eq("duration _bucket{GET,app,+Inf} == 6", hist("_bucket", be.addr, le="+Inf"), 6.0)
    env.eq("duration _count{GET,dead} == 2", hist("_count", dead), 2.0)
    s = hist("_sum", be.addr)
    env.check("duration _sum{GET,app} is > 0 and < 6 s (%s)" % s, s is not None and 0 < s < 6)
    les = sorted((float(dict(k[1])["le"]) if dict(k[1])["le"] != "+Inf" else float("inf"), v)
                 for k, v in ms.items() if k[0] == "qrux_http_request_duration_seconds_bucket"
                 and dict(k[1]).get("upstream") == be.addr)
    env.check("buckets are cumulative (never decrease with le)",
              all(a[1] <= b[1] for a, b in zip(les, les[1:])) and len(les) >= 2, les)

    env.eq("quic_handshakes_total{success} == %d connections" % conns,
           metric(ms, "qrux_quic_handshakes_total", result="success"), float(conns))
    env.eq("quic_handshakes_total{failure} == 0",
           metric(ms, "qrux_quic_handshakes_total", result="failure"), 0.0)
    env.eq("active_connections{h3} back to 0 after the clients left",
           metric(ms, "qrux_active_connections", protocol="h3"), 0.0)
    idle = metric(ms, "qrux_upstream_pool_connections", upstream=be.addr, address=be.addr, state="idle")
    env.check("pool idle gauge for the app > 0 after traffic (%s)" % idle, idle and idle > 0)
    env.eq("pool busy gauge for the app == 0 at rest",
           metric(ms, "qrux_upstream_pool_connections", upstream=be.addr, address=be.addr, state="busy"), 0.0)
    env.eq("pool idle gauge for the dead upstream == 0",
           metric(ms, "qrux_upstream_pool_connections", upstream=dead, address=dead, state="idle"), 0.0)
    env.eq("upstream_errors_total{dead,connect} == 2",
           metric(ms, "qrux_upstream_errors_total", upstream=dead, address=dead, kind="connect"), 2.0)
    env.eq("upstream_errors_total{app,connect} == 0",
           metric(ms, "qrux_upstream_errors_total", upstream=be.addr, address=be.addr, kind="connect"), 0.0)
    env.eq("upstream_timeouts_total{app} == 0",
           metric(ms, "qrux_upstream_timeouts_total", upstream=be.addr, address=be.addr), 0.0)
    out_b = metric(ms, "qrux_bytes_total", direction="out")
    env.check("bytes_total{out} >= the 5000 body bytes sent (%s)" % out_b,
              out_b is not None and out_b >= 5000)
    env.eq("bytes_total{in} == 0 (no request bodies)",
           metric(ms, "qrux_bytes_total", direction="in"), 0.0)
    env.eq("request_body_rejected_total == 0", metric(ms, "qrux_request_body_rejected_total"),
           0.0)
    env.eq("client_stream_resets_total == 0", metric(ms, "qrux_client_stream_resets_total"),
           0.0)
    env.eq("config_generation == 1", metric(ms, "qrux_config_generation"), 1.0)
    env.eq("config_reloads_total{file,success} == 0",
           metric(ms, "qrux_config_reloads_total", source="file", result="success"), 0.0)
    env.eq("build_info{version=0.1.0} == 1", metric(ms, "qrux_build_info", version="0.1.0"), 1.0)
    env.eq("qrux_ready == 1", metric(ms, "qrux_ready"), 1.0)
    rss = metric(ms, "process_resident_memory_bytes")
    env.check("process_resident_memory_bytes is plausible (%s)" % rss,
              rss is not None and 1e6 < rss < 4e9)
    fds = metric(ms, "process_open_fds")
    nfds = len(os.listdir("/proc/%d/fd" % q.pid))
    env.check("process_open_fds close to /proc/PID/fd (%s vs %d)" % (fds, nfds),
              fds is not None and abs(fds - nfds) <= 4)
    st = metric(ms, "process_start_time_seconds")
    env.check("process_start_time_seconds within the last 5 minutes (%s)" % st,
              st is not None and time.time() - 300 < st <= time.time() + 1)
    env.check("process_cpu_seconds_total present",
              metric(ms, "process_cpu_seconds_total") is not None)
    for fam in ("qrux_http_requests_total", "qrux_http_request_duration_seconds",
                "qrux_active_connections", "qrux_quic_handshakes_total",
                "qrux_upstream_pool_connections", "qrux_upstream_timeouts_total",
                "qrux_upstream_errors_total", "qrux_bytes_total",
                "qrux_request_body_rejected_total", "qrux_client_stream_resets_total",
                "qrux_config_generation", "qrux_config_reloads_total", "qrux_build_info",
                "qrux_ready", "process_cpu_seconds_total", "process_resident_memory_bytes",
                "process_open_fds", "process_start_time_seconds"):
        env.check("family %s has HELP and TYPE" % fam,
                  ("# HELP %s " % fam) in text and ("# TYPE %s " % fam) in text)

    promtool = need("promtool")
    rc, pout, perr = promtool_check(promtool, body)
    env.eq("promtool check metrics accepts the exposition", rc, 0,
           (pout + perr).decode(errors="replace")[-1500:])
    q.stop()


def promtool_check(promtool, body):
    """promtool reads the exposition on stdin (harness.run has no input)."""
    p = subprocess.run([promtool, "check", "metrics"], input=body, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    return p.returncode, p.stdout, p.stderr


# ---------------------------------------------------------------------------
# route API


def route_switch_under_load(env):
    """PUT /routes while 2000 HTTP/3 requests run: every request 200 on a
    clean stream; after the switch the old upstream gets nothing more and
    the last responses come from the new one."""
    b1 = env.backend()
    b2 = env.backend()
    aport = free_port("tcp")
    q = start_qrux(env, [("*", b1.addr)], aport)
    adm = Admin(aport)
    r = adm.get("/routes")
    env.eq("GET /routes -> 200", r.status, 200, r)
    env.check("GET /routes is application/json",
              r.headers.get("content-type", "").startswith("application/json"), r.headers)
    doc = r.json()
    env.eq("GET /routes at start", doc, {"generation": 1, "source": "file",
                                         "routes": [{"match": "*", "upstream": b1.addr}]})

    n = 2000
    load = env.gtls_start(q, "/delay/100", n=n, timeout=120, download=False)
    started = wait_until(lambda: b1.stats()["paths"].get("/delay/100", 0) >= 200, 20,
                         interval=0.02)
    env.check("the load is running on the first upstream before the switch", started,
              b1.stats())
    at_switch = b1.stats()["paths"].get("/delay/100", 0)
    r = adm.put_routes({"routes": [{"match": "*", "upstream": b2.addr}]}, if_match=1)
    env.eq("PUT /routes (If-Match: 1) -> 200", r.status, 200, r)
    env.eq("PUT /routes answers the new generation", r.json() if r.status == 200 else None,
           {"generation": 2})
    env.check("the switch happened mid-load (%d of %d done on the old upstream)"
              % (at_switch, n), at_switch < n - 200)
    time.sleep(0.5)  # workers adopt the new snapshot between requests
    after_settle = b1.stats()["paths"].get("/delay/100", 0)
    res = load.finish()
    sts = res.statuses()
    bad = {sid: s for sid, s in sts.items() if s != 200}
    env.eq("all %d requests answered" % n, len(sts), n, res.summary())
    env.eq("no request failed across the switch (non-200 streams)", len(bad), 0,
           "%s ... %s" % (sorted(bad.items())[:10], res.summary()))
    unclean = [sid for sid in sts if not res.clean(sid)]
    env.eq("every stream closed cleanly (H3_NO_ERROR)", len(unclean), 0, unclean[:10])
    env.eq("gtlsclient exit 0", res.rc, 0, res.summary())
    s1 = b1.stats()["paths"].get("/delay/100", 0)
    s2 = b2.stats()["paths"].get("/delay/100", 0)
    env.eq("old + new upstream received exactly the %d requests" % n, s1 + s2, n,
           "old=%d new=%d" % (s1, s2))
    env.check("the new upstream served the rest (%d)" % s2, s2 > 0)
    env.eq("the old upstream got nothing once the switch settled", s1, after_settle,
           "at switch %d, 0.5 s later %d, at end %d" % (at_switch, after_settle, s1))
    last = max(sts) if sts else None
    env.eq("the last response came from the new upstream (X-Backend-Port)",
           backend_port_of(res, last) if last is not None else None, b2.port)

    r = adm.get("/routes").json()
    env.eq("GET /routes after PUT: generation 2, source api, new table", r,
           {"generation": 2, "source": "api", "routes": [{"match": "*", "upstream": b2.addr}]})
    after = env.gtls(q, "/id", timeout=20)
    env.eq("a fresh request goes to the new upstream", after.body().decode(errors="replace"),
           str(b2.port), after.summary())
    ms, _, _ = scrape(adm)
    env.eq("metrics: config_generation 2", metric(ms, "qrux_config_generation"), 2.0)
    env.eq("metrics: config_reloads_total{api,success} 1",
           metric(ms, "qrux_config_reloads_total", source="api", result="success"), 1.0)
    ok1 = metric(ms, "qrux_http_requests_total", method="GET", status="200", upstream=b1.addr,
                 protocol="h3")
    ok2 = metric(ms, "qrux_http_requests_total", method="GET", status="200", upstream=b2.addr,
                 protocol="h3")
    env.eq("metrics: 200s per upstream match the backends' counts (old %s, new %s)"
           % (ok1, ok2), (ok1, ok2), (float(s1), float(s2 + 1)))

    # Several upstreams, written as `upstreams:`, round-robin.
    r = adm.put_routes({"routes": [{"match": "*", "upstreams": [b1.addr, b2.addr]}]})
    env.eq("PUT /routes with upstreams: [a, b] -> 200 (no If-Match: unconditional)", r.status,
           200, r)
    env.eq("GET /routes shows upstreams as a list", adm.get("/routes").json()["routes"],
           [{"match": "*", "upstreams": [b1.addr, b2.addr]}])
    res = env.gtls(q, "/id", n=10, timeout=30, download=False)
    ports = {backend_port_of(res, sid) for sid in res.statuses()}
    env.eq("round-robin over the two upstreams from the API table", ports, {b1.port, b2.port},
           res.summary())

    r = adm.get("/config")
    env.eq("GET /config -> 200", r.status, 200, r)
    c = r.json()
    env.eq("GET /config: generation and source", (c.get("generation"), c.get("source")),
           (3, "api"))
    env.check("GET /config: last_error is null after good updates", c.get("last_error") is None,
              c)
    env.eq("GET /config: the routes in force",
           c.get("config", {}).get("routes"), [{"match": "*", "upstreams": [b1.addr, b2.addr]}])
    env.check("GET /config: server and admin sections present",
              "server" in c.get("config", {}) and "admin" in c.get("config", {}), c)
    q.stop()


def bad_route_tables(env, be):
    """400 with error and field for every bad table, and nothing changes;
    412 for a stale If-Match; 413 over 1 MiB; 415 without JSON."""
    aport = free_port("tcp")
    q = start_qrux(env, [("*", be.addr)], aport)
    adm = Admin(aport)
    before = adm.get("/routes").json()

    cases = [
        ("malformed JSON", b'{"routes": [', None),
        ("not an object", b'[1, 2]', None),
        ("no routes key", {"nope": []}, None),
        ("empty route table", {"routes": []}, "routes"),
        ("missing upstream", {"routes": [{"match": "*"}]}, "routes[0]"),
        ("bad address", {"routes": [{"match": "*", "upstream": "not an address"}]}, "routes[0]"),
        ("port out of range", {"routes": [{"match": "*", "upstream": "127.0.0.1:70000"}]},
         "routes[0]"),
        ("bad address in upstreams",
         {"routes": [{"match": "*", "upstreams": [be.addr, "1.2.3:80"]}]}, "routes[0]"),
        ("upstream and upstreams",
         {"routes": [{"match": "*", "upstream": be.addr, "upstreams": [be.addr]}]}, "routes[0]"),
        ("unknown key", {"routes": [{"match": "*", "upstream": be.addr, "weight": 3}]},
         "routes[0]"),
        ("duplicate match", {"routes": [{"match": "a.test", "upstream": be.addr},
                                        {"match": "a.test", "upstream": be.addr}]}, "routes[1]"),
    ]
    for label, body, field in cases:
        r = adm.put_routes(body)
        env.eq("PUT /routes %s -> 400" % label, r.status, 400, r)
        try:
            j = r.json()
        except ValueError:
            j = {}
        env.check("PUT /routes %s: JSON {error, field}" % label,
                  isinstance(j.get("error"), str) and j.get("error") and "field" in j, r)
        if field is not None:
            env.check("PUT /routes %s: field names %s (got %r)" % (label, field, j.get("field")),
                      str(j.get("field", "")).startswith(field), j)
        env.check("PUT /routes %s: application/json" % label,
                  r.headers.get("content-type", "").startswith("application/json"), r.headers)
    env.eq("after the bad tables, GET /routes is unchanged", adm.get("/routes").json(), before)
    r = env.gtls(q, "/id", timeout=20)
    env.eq("after the bad tables, traffic still goes to the old upstream", r.body().decode(
        errors="replace"), str(be.port), r.summary())
    c = adm.get("/config").json()
    env.check("GET /config: last_error says what the last rejected update was",
              isinstance(c.get("last_error"), str) and c["last_error"], c.get("last_error"))
    ms, _, _ = scrape(adm)
    env.eq("metrics: config_reloads_total{api,error} == %d" % len(cases),
           metric(ms, "qrux_config_reloads_total", source="api", result="error"),
           float(len(cases)))
    env.eq("metrics: config_generation still 1", metric(ms, "qrux_config_generation"), 1.0)

    good = {"routes": [{"match": "*", "upstream": be.addr}]}
    r = adm.put_routes(good, if_match=7)
    env.eq("PUT with stale If-Match: 7 -> 412", r.status, 412, r)
    env.eq("412 names the current generation", r.json().get("generation"), 1)
    r = adm.put_routes(good, if_match='"2"')
    env.eq("PUT with stale If-Match: \"2\" (quoted) -> 412", r.status, 412, r)
    r = adm.put_routes(good, if_match="banana")
    env.eq("PUT with unparsable If-Match -> 400", r.status, 400, r)
    env.eq("GET /routes unchanged after 412s", adm.get("/routes").json(), before)
    r = adm.put_routes(good, if_match='"1"')
    env.eq("PUT with current If-Match: \"1\" (quoted) -> 200", r.status, 200, r)
    r = adm.put_routes(good, if_match=1)
    env.eq("PUT with the now stale If-Match: 1 -> 412", r.status, 412, r)
    env.eq("412 says generation 2", r.json().get("generation"), 2)

    r = adm.put_routes(good, ctype="application/x-www-form-urlencoded")
    env.eq("PUT /routes without Content-Type: application/json -> 415", r.status, 415, r)
    r = adm.put_routes(good, ctype="application/json; charset=utf-8")
    env.eq("PUT /routes with application/json; charset=utf-8 -> 200", r.status, 200, r)

    big = b'{"routes": [' + b' ' * (1024 * 1024 + 10) + b']}'
    r = adm.put_routes(big)
    env.eq("PUT /routes with a body over 1 MiB sent at once (Content-Length) -> 413", r.status,
           413, r)
    env.check("413 body is JSON with an error",
              r.status == 413 and "error" in r.json(), r)

    # curl waits for 100 Continue past 1 MiB: refused before the body.
    bigf = os.path.join(env.dir, "big.json")
    with open(bigf, "wb") as f:
        f.write(b' ' * (2 * 1024 * 1024))
    rc, out, err = run([need("curl"), "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT",
                        "-H", "Content-Type: application/json", "--data-binary", "@" + bigf,
                        "http://127.0.0.1:%d/routes" % aport], timeout=20)
    env.eq("curl PUT /routes with 2 MiB (Expect: 100-continue) -> 413", out.strip(), b"413",
           err)

    # A huge Content-Length: answered from the head alone.
    with socket.create_connection(("127.0.0.1", aport), timeout=5) as s:
        s.sendall(b"PUT /routes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000000\r\n\r\n")
        head = s.recv(4096)
    env.check("Content-Length: 100000000 -> 413 before any body is sent",
              head.startswith(b"HTTP/1.1 413"), head[:200])

    def chunks():
        piece = b' ' * 65536
        yield b'{"routes": ['
        for _ in range(20):  # 1.25 MiB
            yield piece
        yield b']}'
    try:
        r = adm.req("PUT", "/routes", body=chunks(), headers={"Content-Type": "application/json"},
                    chunked=True)
        env.eq("PUT /routes with a chunked body over 1 MiB -> 413", r.status, 413, r)
    except OSError as e:
        env.check("PUT /routes with a chunked body over 1 MiB -> 413", False, repr(e))
    ok = b'{"routes": [{"match": "*", "upstream": "%s"}]' % be.addr.encode() + b' ' * 1000 + b'}'
    r = adm.put_routes(ok)
    env.eq("a body under the cap with padding still works -> 200", r.status, 200, r)
    env.eq("the admin server still answers after the refusals", adm.code("/livez"), 200)
    q.stop()


# ---------------------------------------------------------------------------
# token


def token_rules(env, be):
    tok = "t0k-%d-secret" % os.getpid()
    tf = os.path.join(env.dir, "admin-token")
    with open(tf, "w") as f:
        f.write(tok + "\n")  # as a Secret written from a file often is
    aport = free_port("tcp")
    q = start_qrux(env, [("*", be.addr)], aport, {"token_file": tf})
    adm = Admin(aport)
    for p in ("/metrics", "/routes", "/config"):
        r = adm.get(p, token=None)
        env.eq("token: GET %s without a token -> 401" % p, r.status, 401, r)
        env.check("token: 401 carries WWW-Authenticate: Bearer",
                  r.headers.get("www-authenticate", "").startswith("Bearer"), r.headers)
        r = adm.get(p, token="wrong")
        env.eq("token: GET %s with a wrong token -> 401" % p, r.status, 401, r)
        r = adm.get(p, token=tok[:-1])
        env.eq("token: GET %s with a prefix of the token -> 401" % p, r.status, 401, r)
        r = adm.get(p, token=tok + "x")
        env.eq("token: GET %s with the token plus a byte -> 401" % p, r.status, 401, r)
        r = adm.get(p, token=tok)
        env.eq("token: GET %s with the token -> 200" % p, r.status, 200, r)
    r = adm.req("GET", "/metrics", token=None, headers={"Authorization": "Basic " + tok})
    env.eq("token: another scheme -> 401", r.status, 401, r)
    r = adm.req("GET", "/metrics", token=None, headers={"Authorization": "bearer " + tok})
    env.eq("token: the scheme is case-insensitive -> 200", r.status, 200, r)
    for p in ("/livez", "/readyz", "/startupz"):
        env.eq("token: probe %s needs no token" % p, adm.code(p, token=None), 200)
    r = adm.put_routes({"routes": [{"match": "*", "upstream": be.addr}]}, token=None)
    env.eq("token: PUT /routes without a token -> 401", r.status, 401, r)
    r = adm.req("POST", "/drain", token=None)
    env.eq("token: POST /drain without a token -> 401", r.status, 401, r)
    env.eq("token: the refused POST /drain did not drain", adm.code("/readyz"), 200)
    r = adm.put_routes({"routes": [{"match": "*", "upstream": be.addr}]}, token=tok)
    env.eq("token: PUT /routes with the token -> 200", r.status, 200, r)
    r = adm.get("/nope", token=None)
    env.eq("token: unknown path without a token -> 401 (nothing told)", r.status, 401, r)
    c = adm.get("/config", token=tok).text
    env.check("token: GET /config never shows the token", tok not in c, c[:500])
    q.stop()


def start_refusals(env, be):
    """Config errors in the admin section stop qrux with exit 2 naming the
    field, before anything is served."""
    def refused(label, admin_text, words):
        port = free_port("udp")
        path, _ = env.write_config([("*", be.addr)], port=port, extra_server=admin_text,
                                   name="refuse-%d.yaml" % port)
        rc, out, err = run([qrux_bin(), "--config", path], timeout=15)
        msg = err.decode("utf-8", "replace")
        env.eq("%s: exit 2" % label, rc, 2, msg[-400:])
        env.check("%s: message names %s" % (label, words), all(w in msg for w in words),
                  msg[-400:])
        env.check("%s: never ready" % label, not READY_RE.search(msg), msg[-400:])

    refused("non-loopback admin.listen without token_file",
            admin_yaml(0, listen="0.0.0.0:%d" % free_port("tcp")), ["admin.token_file"])
    empty = os.path.join(env.dir, "empty-token")
    open(empty, "w").close()
    refused("empty admin.token_file", admin_yaml(free_port("tcp"), token_file=empty),
            ["admin.token_file"])
    blank = os.path.join(env.dir, "blank-token")
    with open(blank, "w") as f:
        f.write("\n \n")
    refused("admin.token_file with only whitespace",
            admin_yaml(free_port("tcp"), token_file=blank), ["admin.token_file"])
    refused("missing admin.token_file",
            admin_yaml(free_port("tcp"), token_file=os.path.join(env.dir, "no-such-token")),
            ["admin.token_file"])

    # A public address with a token file starts (on all interfaces here).
    tf = os.path.join(env.dir, "pub-token")
    with open(tf, "w") as f:
        f.write("pub")
    aport = free_port("tcp")
    q = start_qrux(env, [("*", be.addr)], aport,
                   {"listen": "0.0.0.0:%d" % aport, "token_file": tf})
    adm = Admin(aport)
    env.eq("public admin.listen with a token_file starts; probe 200", adm.code("/livez"), 200)
    env.eq("public admin.listen: /metrics needs the token", adm.code("/metrics"), 401)
    q.stop()

    # The admin port taken: qrux says which address it could not bind.
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    taken = blocker.getsockname()[1]
    try:
        port = free_port("udp")
        path, _ = env.write_config([("*", be.addr)], port=port, extra_server=admin_yaml(taken),
                                   name="taken-%d.yaml" % port)
        rc, out, err = run([qrux_bin(), "--config", path], timeout=15)
        msg = err.decode("utf-8", "replace")
        env.check("admin port taken: qrux exits non-zero (%s)" % rc, rc not in (0, None),
                  msg[-300:])
        env.check("admin port taken: message names admin.listen",
                  "admin.listen" in msg and str(taken) in msg, msg[-300:])
    finally:
        blocker.close()


def ipv6_admin(env, be):
    aport = free_port("tcp")
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", aport))
        s.close()
    except OSError as e:
        env.check("IPv6 loopback available", False, repr(e))
        return
    q = start_qrux(env, [("*", be.addr)], aport, {"host": "::1"})
    adm = Admin(aport, host="::1")
    env.eq("admin on [::1]: livez 200", adm.code("/livez"), 200)
    env.eq("admin on [::1]: GET /routes 200", adm.get("/routes").status, 200)
    q.stop()


def main():
    with Env("admin") as env:
        be = env.backend()
        env.case("probes through start-up, 404/405", probes_startup, env, be)
        env.case("metrics match the traffic; promtool", metrics_values, env, be)
        env.case("PUT /routes switches routing under load", route_switch_under_load, env)
        env.case("bad route tables, If-Match, body caps", bad_route_tables, env, be)
        env.case("bearer token", token_rules, env, be)
        env.case("start refusals (token file, public listen, port taken)", start_refusals, env,
                 be)
        env.case("readyz waits for the upstream", ready_requires_upstream, env)
        env.case("SIGTERM: readyz draining, livez ok, exit 0", sigterm_drain, env, be)
        env.case("POST /drain", post_drain, env, be)
        env.case("admin on IPv6 loopback", ipv6_admin, env, be)


if __name__ == "__main__":
    main()
