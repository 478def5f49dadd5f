#!/usr/bin/env python3
"""Observability as a platform team uses it, against the real binary.

1. Trace context: a valid W3C traceparent from the client keeps its trace id
   and flags upstream with a new parent id; an invalid one (or none) starts a
   new trace; x-request-id is kept when valid, generated otherwise; the
   access line carries trace_id= and request_id=. Over h2 and HTTP/1.1
   (curl) and h3 (gtlsclient).
2. The certificate expiry gauge equals the certificate's notAfter
   (openssl), and follows a rotation (SIGUSR1).
3. The status page: /status.json after h3 and h2 traffic (state, generation,
   routes with upstream health, a non-zero request rate), then the page in
   headless Chromium (rendered text: state, a route, a non-zero rate; a
   screenshot is taken), and the token rules.
4. The Grafana dashboard (k8s/monitoring/qrux-dashboard.json): valid against
   k8s/monitoring/dashboard.schema.json (python3-jsonschema) plus what a
   schema cannot say; every metric a panel or an alert rule queries is in a
   real /metrics scrape; a real Prometheus scrapes qrux and runs every panel
   query: each is valid PromQL and returns data.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Env, free_port, need, run, spawn, wait_until  # noqa: E402
from test_admin import Admin, parse_metrics  # noqa: E402

SRC = os.environ.get("QRUX_SRC") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MON = os.path.join(SRC, "k8s", "monitoring")

# Metrics the dashboard or the alerts name that this build does not expose
# yet, with where they come from. A name listed here is still checked when a
# scrape has it; empty since the XDP counters landed (exported at 0 without
# the filter), and it should stay so.
PENDING = {}
# Series that come from Prometheus or the kubelet, not from qrux.
NOT_QRUX = {"up", "prober_probe_total"}

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TP_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def start(env, routes, admin_token=None, workers=2):
    """qrux with the HTTPS fallback and an admin server on loopback.
    Returns (qrux, tcp port, Admin)."""
    tport, aport = free_port("tcp"), free_port("tcp")
    extra = '  https_listen: "[::]:%d"\n  drain_delay_secs: 0\n' % tport
    extra += 'admin:\n  listen: "127.0.0.1:%d"\n' % aport
    if admin_token:
        tf = os.path.join(env.dir, "admin-token-%d" % aport)
        with open(tf, "w") as f:
            f.write(admin_token + "\n")
        extra += '  token_file: "%s"\n' % tf
    q = env.qrux(routes=routes, workers=workers, extra_server=extra)
    return q, tport, Admin(aport, token=admin_token)


def curl_echo(env, tport, proto, headers=()):
    """GET /echo over the HTTPS listener; returns (status, echo JSON or None)."""
    cmd = [need("curl"), "-sk", "--http1.1" if proto == "h1" else "--http2", "--max-time", "20",
           "-w", "\n%{http_code}"]
    for h in headers:
        cmd += ["-H", h]
    cmd.append("https://localhost:%d/echo" % tport)
    rc, out, err = run(cmd, timeout=30)
    body, _, code = out.decode(errors="replace").rpartition("\n")
    try:
        return int(code), json.loads(body)
    except ValueError:
        return (int(code) if code.isdigit() else None), None


def upstream_fields(echo, name):
    return [v for k, v in (echo or {}).get("headers", []) if k.lower() == name]


# ---------------------------------------------------------------------------
# 1. trace context


def trace_context(env, be):
    q, tport, _ = start(env, [("*", be.addr)])

    # A valid traceparent and request id: kept (trace id, flags), new parent id.
    st, e = curl_echo(env, tport, "h2", ["traceparent: " + TP, "tracestate: vendor=1",
                                         "x-request-id: req-42.a"])
    env.eq("h2 valid traceparent: 200", st, 200)
    tps = upstream_fields(e, "traceparent")
    env.eq("h2: exactly one traceparent upstream", len(tps), 1, tps)
    m = TP_RE.match(tps[0]) if tps else None
    env.check("h2: traceparent upstream is well formed", m, tps)
    if m:
        env.eq("h2: the client's trace id kept", m.group(1), "4bf92f3577b34da6a3ce929d0e0e4736")
        env.check("h2: qrux's own parent id", m.group(2) != "00f067aa0ba902b7", tps)
        env.eq("h2: the client's flags kept", m.group(3), "01")
    env.eq("h2: tracestate kept with its trace", upstream_fields(e, "tracestate"), ["vendor=1"])
    env.eq("h2: x-request-id kept", upstream_fields(e, "x-request-id"), ["req-42.a"])
    lines = env.wait_access(q, proto="h2", request_id="req-42.a")
    env.check("access line: trace_id and request_id of that request",
              lines and lines[0].get("trace_id") == "4bf92f3577b34da6a3ce929d0e0e4736", lines)

    # Invalid ones: a new trace (tracestate dropped), a generated request id.
    bad_tp = "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
    st, e = curl_echo(env, tport, "h1", ["traceparent: " + bad_tp, "tracestate: vendor=1",
                                         "x-request-id: has space"])
    env.eq("h1 invalid traceparent: 200", st, 200)
    tps = upstream_fields(e, "traceparent")
    m = TP_RE.match(tps[0]) if len(tps) == 1 else None
    env.check("h1: one new well-formed traceparent", m, tps)
    if m:
        env.check("h1: a new trace id (not the all-zero one)", m.group(1) != "0" * 32, tps)
        env.eq("h1: new traces are sampled (01)", m.group(3), "01")
    env.eq("h1: tracestate of the invalid trace dropped", upstream_fields(e, "tracestate"), [])
    rids = upstream_fields(e, "x-request-id")
    env.check("h1: invalid x-request-id replaced by a UUID",
              len(rids) == 1 and UUID_RE.match(rids[0]), rids)
    if m and rids:
        lines = env.wait_access(q, proto="h1", trace_id=m.group(1))
        env.check("h1 access line: the new trace id and the generated request id",
                  lines and lines[0].get("request_id") == rids[0], lines)

    # h3 without any: both generated, and logged.
    r = env.gtls(q, "/echo", timeout=20)
    env.eq("h3 /echo: 200", r.status(), 200, r.summary())
    try:
        e = json.loads(r.body("echo"))
    except (ValueError, KeyError, TypeError):
        e = None
    tps, rids = upstream_fields(e, "traceparent"), upstream_fields(e, "x-request-id")
    m = TP_RE.match(tps[0]) if len(tps) == 1 else None
    env.check("h3: a traceparent started", m, tps)
    env.check("h3: an x-request-id generated", len(rids) == 1 and UUID_RE.match(rids[0]), rids)
    if m and rids:
        lines = env.wait_access(q, proto="h3", trace_id=m.group(1), request_id=rids[0])
        env.check("h3 access line: trace_id and request_id as sent upstream", lines,
                  q.log_tail(5))
    # Local answers (no route was tried) log dashes, not a made-up trace.
    q.stop()


# ---------------------------------------------------------------------------
# 2. certificate expiry


def cert_not_after(path):
    rc, out, err = run([need("openssl"), "x509", "-in", path, "-noout", "-enddate"], timeout=20)
    s = out.decode().strip().split("=", 1)[1]  # notAfter=Dec  7 17:00:00 2026 GMT
    return int(time.mktime(time.strptime(s, "%b %d %H:%M:%S %Y %Z")) - time.timezone)


def gauge(adm, name):
    ms, _ = parse_metrics(adm.get("/metrics").text)
    return ms.get((name, frozenset()))


def cert_expiry(env, be):
    q, tport, adm = start(env, [("*", be.addr)], workers=1)
    c = env.cert()
    want = cert_not_after(c.cert)
    env.eq("qrux_tls_certificate_expiry_timestamp_seconds == the cert's notAfter",
           gauge(adm, "qrux_tls_certificate_expiry_timestamp_seconds"), float(want))
    env.eq("status.json certificate.not_after == notAfter",
           adm.get("/status.json").json()["certificate"]["not_after"], want)

    # Rotate to a certificate valid for 400 days (written beside, renamed over).
    d = tempfile.mkdtemp(prefix="rot-", dir=env.dir)
    nc, nk = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    rc, _, err = run([need("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt",
                      "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", nk, "-out", nc,
                      "-days", "400", "-subj", "/CN=localhost", "-addext",
                      "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"], timeout=30)
    env.eq("openssl made the new certificate", rc, 0, err)
    new = cert_not_after(nc)
    shutil.copy(nk, c.key + ".tmp")
    shutil.copy(nc, c.cert + ".tmp")
    os.rename(c.key + ".tmp", c.key)
    os.rename(c.cert + ".tmp", c.cert)
    q.signal(signal.SIGUSR1)
    q.signalled = False  # SIGUSR1 does not stop it
    got = wait_until(lambda: gauge(adm, "qrux_tls_certificate_expiry_timestamp_seconds")
                     == float(new) or None, 10)
    env.check("after the rotation the gauge shows the new notAfter (%d)" % new, got,
              gauge(adm, "qrux_tls_certificate_expiry_timestamp_seconds"))
    q.stop()


# ---------------------------------------------------------------------------
# 2b. QUIC path statistics


def quic_path_stats(env, be):
    q, tport, adm = start(env, [("*", be.addr)], workers=1)
    sess, tp = os.path.join(env.dir, "session.pem"), os.path.join(env.dir, "tp.txt")
    extra = ["--session-file=" + sess, "--tp-file=" + tp]
    r = env.gtls(q, "/bytes/100000", extra=extra, timeout=20)
    env.eq("first connection: 200", r.status(), 200, r.summary())
    r = env.gtls(q, "/bytes/100", extra=extra, timeout=20)
    env.eq("second connection (resumed, GET in 0-RTT): 200", r.status(), 200, r.summary())

    def scrape_q():
        ms, _ = parse_metrics(adm.get("/metrics").text)
        return lambda n, **lb: ms.get((n, frozenset((k, str(v)) for k, v in lb.items())))
    # Closed connections are reported once their draining period is over.
    m = wait_until(lambda: (lambda g: g if g("qrux_quic_smoothed_rtt_seconds_count") == 2
                            else None)(scrape_q()), 10) or scrape_q()
    env.eq("two handshakes timed", m("qrux_quic_handshake_duration_seconds_count"), 2.0)
    env.eq("two closed connections reported their smoothed RTT",
           m("qrux_quic_smoothed_rtt_seconds_count"), 2.0)
    env.eq("... their min RTT and cwnd",
           (m("qrux_quic_min_rtt_seconds_count"), m("qrux_quic_cwnd_bytes_count")), (2.0, 2.0))
    srtt = (m("qrux_quic_smoothed_rtt_seconds_sum") or 99) / 2
    env.check("loopback: mean smoothed RTT under 250 ms (%.4f s)" % srtt, 0 < srtt < 0.25)
    env.check("loopback: both handshakes within 2.5 s",
              m("qrux_quic_handshake_duration_seconds_bucket", le="2.5") == 2.0)
    sent, lost = m("qrux_quic_packets_sent_total"), m("qrux_quic_packets_lost_total")
    env.check("packets sent counted (%s; 100 KB needs > 70), lost (%s) not more" % (sent, lost),
              sent is not None and sent > 70 and lost is not None and lost <= sent)
    env.eq("one handshake resumed a session", m("qrux_quic_resumed_handshakes_total"), 1.0)
    env.eq("its 0-RTT data was accepted",
           (m("qrux_quic_early_data_handshakes_total", result="accepted"),
            m("qrux_quic_early_data_handshakes_total", result="rejected")), (1.0, 0.0))
    q.stop()


# A long connection reports its path every minute (quic.c PATH_REPORT_NS),
# not only when it closes: one h3 request whose response trickles for 85 s
# (one byte a second) keeps its connection open past the first report. It
# starts before the other cases and is checked after them, so its minute
# overlaps their work.
LONG_SECS = 85


def long_conn_start(env, be):
    q, tport, adm = start(env, [("*", be.addr)], workers=1)
    run = env.gtls_start(q, "/slow/%d?ms=1000&chunk=1" % LONG_SECS, timeout=LONG_SECS + 120)
    return q, adm, run


def long_conn_check(env, long):
    q, adm, run = long

    def scrape_l():
        ms, _ = parse_metrics(adm.get("/metrics").text)
        return {"srtt": ms.get(("qrux_quic_smoothed_rtt_seconds_count", frozenset())),
                "cwnd": ms.get(("qrux_quic_cwnd_bytes_count", frozenset())),
                "sent": ms.get(("qrux_quic_packets_sent_total", frozenset())),
                "open": ms.get(("qrux_active_connections", frozenset({("protocol", "h3")})))}
    # Poll while the client still waits for its response: a report seen
    # with the connection still open can only be the periodic one.
    sampled, last = None, None
    while run.proc.poll() is None and sampled is None:
        last = scrape_l()
        if last["open"] == 1.0 and last["srtt"] == 1.0:
            sampled = last
        else:
            time.sleep(1)
    env.check("long connection: its path reported while it is still open (%s)" % sampled,
              sampled is not None and sampled["cwnd"] == 1.0 and (sampled["sent"] or 0) > 10,
              last)
    r = run.finish()
    env.eq("long connection: the trickled response arrived whole (200, %d bytes)" % LONG_SECS,
           (r.status(), len(r.body())),
           (200, LONG_SECS), r.summary())
    # Closed: reported once more, with the packets sent since the first report.
    m = wait_until(lambda: (lambda g: g if g["srtt"] == 2.0 else None)(scrape_l()), 15) \
        or scrape_l()
    env.eq("long connection: reported again at close (2 reports, gauge 0)",
           (m["srtt"], m["cwnd"], m["open"]), (2.0, 2.0, 0.0))
    env.check("long connection: packets sent after the first report counted (%s > %s)"
              % (m["sent"], sampled and sampled["sent"]),
              sampled is not None and (m["sent"] or 0) > sampled["sent"])
    q.stop()


# ---------------------------------------------------------------------------
# 3. status page


def traffic(env, q, tport, n_h3=30, n_h2=10):
    r = env.gtls(q, "/bytes/100", n=n_h3, timeout=30)
    env.eq("traffic: %d h3 requests answered" % n_h3, list(r.statuses().values()).count(200), n_h3,
           r.summary())
    for _ in range(n_h2):
        curl_echo(env, tport, "h2")


def status_page(env, be):
    refused = free_port("tcp")  # nobody listens: its health is "refusing"
    q, tport, adm = start(env, [("app.test", "127.0.0.1:%d" % refused), ("*", be.addr)])
    traffic(env, q, tport)
    time.sleep(2.2)  # two sampler ticks after the traffic

    r = adm.get("/status.json")
    env.eq("GET /status.json -> 200 application/json",
           (r.status, r.headers.get("content-type")), (200, "application/json"))
    st = r.json()
    env.eq("status.json: state LIVE", st["state"], "LIVE")
    env.eq("status.json: ready", (st["ready"], st["ready_reason"]), (True, "ready"))
    env.eq("status.json: generation 1 from the file", (st["generation"], st["source"]),
           (1, "file"))
    env.eq("status.json: no reload yet", st["last_reload"], None)
    protos = {p["protocol"]: p for p in st["protocols"]}
    env.check("status.json: h3 requests_total >= 30 and a non-zero 1-minute rate",
              protos["h3"]["requests_total"] >= 30 and protos["h3"]["rate_1m"] > 0, protos["h3"])
    env.check("status.json: h2 requests counted", protos["h2"]["requests_total"] >= 10,
              protos["h2"])
    env.check("status.json: the h3 rate series has a non-zero point and a latency",
              max(protos["h3"]["rate_per_second"]) > 0
              and any(v is not None and v > 0 for v in protos["h3"]["latency_ms"]), protos["h3"])
    ups = {u["address"]: u for rt in st["routes"] for u in rt["upstreams"]}
    env.eq("status.json: routes in config order", [rt["match"] for rt in st["routes"]],
           ["app.test", "*"])
    env.eq("status.json: the app's upstream accepts", ups[be.addr]["health"], "accepting")
    env.eq("status.json: the closed port refuses", ups["127.0.0.1:%d" % refused]["health"],
           "refusing")
    env.check("status.json: the app's upstream counted the requests",
              ups[be.addr]["requests_total"] >= 40, ups[be.addr])

    # A refused reload shows up as the last reload and the last error.
    with open(q.config_path) as f:
        good = f.read()
    with open(q.config_path, "w") as f:
        f.write(good + "bogus_key: 1\n")
    wait_until(lambda: adm.get("/status.json").json()["last_reload"], 5)
    st = adm.get("/status.json").json()
    env.eq("after a bad config: last reload error (file)",
           (st["last_reload"] or {}).get("result"), "error")
    env.check("after a bad config: last_error names the key",
              "bogus_key" in (st["last_error"] or ""), st["last_error"])

    url = "http://127.0.0.1:%d/" % adm.port
    page = adm.get("/")
    env.eq("GET / -> 200 text/html", (page.status, page.headers.get("content-type")),
           (200, "text/html; charset=utf-8"))
    env.check("the page loads nothing from elsewhere (no src=/href= to another origin)",
              not re.search(rb'(src|href)\s*=\s*["\']?(https?:)?//', page.body), page.body[:200])

    # An h3 connection held open (a response trickled over 30 s) while the
    # page loads: the connections column must show it.
    held = env.gtls_start(q, "/slow/30?ms=1000&chunk=1", timeout=150)
    env.check("status.json: the held h3 connection is counted",
              wait_until(lambda: adm.get("/status.json").json()["connections"]["h3"] == 1, 15),
              adm.get("/status.json").json()["connections"])
    not_after = st["certificate"]["not_after"]
    rc, dom, err = env.chromium(url, "localhost:%d" % q.port,
                                extra=["--virtual-time-budget=4000"])
    env.eq("chromium --dump-dom exit code", rc, 0, err[-500:])
    text = re.sub(r"<[^>]+>", " ", dom)
    env.check("page: state LIVE rendered", re.search(r'id="state"[^>]*>LIVE<', dom), dom[:800])
    env.check("page: a route and its upstream rendered",
              "app.test" in text and be.addr in text and "accepting" in text
              and "refusing" in text, text[:1500])
    env.check("page: the last error rendered", "bogus_key" in text, text[:1500])
    env.check("page: generation and source rendered",
              re.search(r'id="generation"[^>]*>1 \(routes from file\)<', dom), dom[:1500])
    env.check("page: the last reload's result rendered",
              re.search(r'id="reload"[^>]*>error \(file\) at \d{4}-', dom), dom[:1500])
    exp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(not_after))
    env.check("page: the certificate's expiry rendered (%s)" % exp,
              re.search(r'id="cert"[^>]*>expires ' + exp + r'\.000Z \(in [\d.]+ (days|hours)\)<',
                        dom), re.findall(r'id="cert"[^<]*<', dom))
    m = re.search(r'<tr id="proto-h3"><td>h3</td><td class="num">(\d+)</td>'
                  r'<td class="num">([\d.]+)</td><td class="num">([\d.]+)</td>'
                  r'<td class="num">(\d+)</td>', dom)
    env.check("page: the h3 row is rendered", m, dom[:2000])
    if m:
        env.eq("page: one active h3 connection (the held one)", m.group(1), "1", m.group(0))
        m = re.search(r'<tr id="proto-h3"><td>h3</td><td class="num">\d+</td>'
                      r'<td class="num">([\d.]+)</td><td class="num">([\d.]+)</td>'
                      r'<td class="num">(\d+)</td>', dom)
    if m:
        env.check("page: a non-zero h3 request rate over the last minute (%s req/s)" % m.group(2),
                  float(m.group(2)) > 0, m.group(0))
        env.check("page: h3 requests counted (%s)" % m.group(3), int(m.group(3)) >= 30)
    env.check("page: sparklines drawn (svg paths)", dom.count("<path") >= 6, dom.count("<path"))
    # A fixed time axis: with k points of the 120 a full series has, the
    # first is drawn k slots left of the right edge (240 px wide), not at 0.
    k = len(adm.get("/status.json").json()["protocols"][0]["rate_per_second"])
    env.check("qrux up for less than two minutes (%d points): the axis check means something"
              % k, k < 110)
    xs = re.search(r'<tr id="proto-h3">.*?<path d="M([\d.]+) ', dom, re.S)
    env.check("page: the h3 rate sparkline starts %d slots from the right edge (x=%s >= %.1f)"
              % (k, xs and xs.group(1), (120 - k) * 240 / 119 - 0.1),
              xs and float(xs.group(1)) >= (120 - k) * 240 / 119 - 0.1, xs and xs.group(0)[-80:])

    shot = os.path.join(env.dir, "status-page.png")
    rc, _, err = env.chromium(url, "localhost:%d" % q.port,
                              extra=["--virtual-time-budget=4000", "--window-size=1280,1000",
                                     "--screenshot=" + shot])
    ok = os.path.exists(shot)
    with open(shot, "rb") if ok else open(os.devnull, "rb") as f:
        png = f.read()
    env.check("screenshot taken: a PNG of some size (%d bytes, %s)" % (len(png), shot),
              png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20000, err[-300:])
    env.eq("the held connection's response arrived (200, 30 bytes)",
           (lambda r: (r.status(), len(r.body())))(held.finish()), (200, 30))
    q.stop()

    # The same token rules as /metrics.
    q, tport, adm = start(env, [("*", be.addr)], admin_token="s3cret-obs")
    for p in ("/", "/status.json"):
        env.eq("token: GET %s without it -> 401" % p, adm.get(p, token=None).status, 401)
        env.eq("token: GET %s with it -> 200" % p, adm.get(p).status, 200)
    q.stop()


# ---------------------------------------------------------------------------
# 4. dashboard and alerts against a real scrape and a real Prometheus


def dashboard_model(env):
    import jsonschema  # python3-jsonschema (scripts/deps.sh test set)
    with open(os.path.join(MON, "dashboard.schema.json")) as f:
        schema = json.load(f)
    with open(os.path.join(MON, "qrux-dashboard.json")) as f:
        dash = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    errs = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(dash)]
    env.eq("dashboard: valid against dashboard.schema.json", errs, [])

    # Grafana's own model: the Dashboard type of @grafana/schema, which
    # Grafana generates from its dashboard schema, applied by the TypeScript
    # compiler (e2e/k8s/grafana-dashboard.js; npm test tooling of
    # scripts/k8s-tools.sh). A broken copy must be refused, line named.
    sys.path.insert(0, os.path.join(SRC, "e2e", "k8s"))
    import k8s
    _, _, node_env = k8s.tools()
    check = [need("node"), os.path.join(SRC, "e2e", "k8s", "grafana-dashboard.js")]
    rc, out, err = run(check + [os.path.join(MON, "qrux-dashboard.json")], timeout=120,
                       env=node_env)
    env.eq("dashboard: valid against Grafana's dashboard model (@grafana/schema)", rc, 0,
           (out + err).decode(errors="replace")[-3000:])
    for what, mutate, needle in (
            ("gridPos.w a string", lambda d: d["panels"][1]["gridPos"].update(w="12"),
             "'string' is not assignable to type 'number'"),
            ("a misspelt panel field", lambda d: d["panels"][1].update(datasourse={}),
             "'\"datasourse\"' does not exist in type 'Panel"),
            ("a variable type Grafana does not have",
             lambda d: d["templating"]["list"][1].update(type="querry"),
             "is not assignable to type 'VariableType'")):
        bad = json.loads(json.dumps(dash))
        mutate(bad)
        badf = os.path.join(env.dir, "bad-dashboard.json")
        with open(badf, "w") as f:
            json.dump(bad, f, indent=2)
        rc, out, err = run(check + [badf], timeout=120, env=node_env)
        out = out.decode(errors="replace")
        env.check("dashboard check: a copy with %s refused" % what,
                  rc == 1 and needle in out, out[-1500:] + err.decode(errors="replace")[-500:])
    ids = [p["id"] for p in dash["panels"]]
    env.eq("dashboard: panel ids unique", len(ids), len(set(ids)))
    env.check("dashboard: every panel inside the 24-column grid",
              all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in dash["panels"]))
    for p in dash["panels"]:
        refs = [t["refId"] for t in p.get("targets", [])]
        if len(refs) != len(set(refs)):
            env.check("dashboard: refIds unique in %r" % p["title"], False, refs)
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for want in ("http/3 share", "latency", "5xx", "active connections", "0-rtt", "reloads",
                 "xdp", "rtt", "loss"):
        env.check("dashboard: a panel about %r" % want, want in titles, titles)
    return dash


def exprs_of(dash):
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["refId"], t["expr"]))
    return out


def alert_exprs():
    text = open(os.path.join(MON, "qrux-alerts.yaml")).read()
    # The rules file is YAML without a YAML parser in the standard library:
    # the expressions are the `expr:` values (one line, or a `|` block).
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^(\s*)expr:\s*(.*)$", lines[i])
        if m:
            if m.group(2).strip() == "|":
                ind, block, i = None, [], i + 1
                while i < len(lines) and (not lines[i].strip() or ind is None
                                          or lines[i].startswith(ind)):
                    if ind is None and lines[i].strip():
                        ind = re.match(r"^\s*", lines[i]).group(0)
                    block.append(lines[i].strip())
                    i += 1
                out.append(" ".join(block))
                continue
            out.append(m.group(2))
        i += 1
    return out


NAME_RE = re.compile(r"\b((?:qrux|process)_[a-z0-9_]+|up|prober_probe_total)\b(?=\s*[\[{)]|\s*$)")


def names_in(expr):
    return set(NAME_RE.findall(re.sub(r'"[^"]*"', '""', expr)))


def prom_query(port, expr):
    url = "http://127.0.0.1:%d/api/v1/query?%s" % (port, urllib.parse.urlencode({"query": expr}))
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:  # a bad query: 400 with a JSON error
        body = e.read()
        try:
            return json.loads(body)
        except ValueError:  # still starting: 503 in plain text
            return {"status": "http %d" % e.code, "error": body[:200]}
    except OSError as e:  # not listening yet
        return {"status": "unreachable", "error": str(e)}


# What each rule's expression must return against the real series of the
# test's qrux (one upstream refusing every connect, the other answering,
# a certificate valid for 400 days): the refusing upstream for these three,
# nothing for the other rules on qrux's own metrics.
FIRING_ON_DOWN = {"QruxUpstream5xxRatioHigh", "QruxUpstreamConnectErrors", "QruxUpstreamDown"}
SILENT = {"QruxNotReady", "QruxConfigReloadFailing", "QruxCertificateExpiringSoon",
          "QruxQuicHandshakeFailureRatio", "QruxQuicRetryStorm", "QruxXdpDropsSpiking"}


def alerts_on_real_series(env, pport, down):
    """The rules file loaded by the real Prometheus: every rule evaluates
    without error on qrux's real series, each expression returns what the
    situation calls for (label names and values as qrux exports them), and
    QruxUpstreamDown goes pending for the refusing upstream."""
    import yaml  # python3-yaml
    rules = {r["alert"]: r for g in yaml.safe_load(open(os.path.join(MON, "qrux-alerts.yaml")))
             ["groups"] for r in g["rules"]}
    env.eq("alerts: the rules the test knows are the file's", sorted(FIRING_ON_DOWN | SILENT |
           {"QruxAdminScrapeFailing", "QruxAdminProbeFailures"}), sorted(rules))

    def loaded():
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/rules" % pport,
                                        timeout=10) as r:
                got = [x for g in json.loads(r.read())["data"]["groups"] for x in g["rules"]]
        except (OSError, ValueError, KeyError):
            return None
        done = [x for x in got if not x.get("lastEvaluation", "").startswith("0001")]
        return got if len(got) == len(rules) and len(done) == len(got) else None
    got = wait_until(loaded, 20) or []
    env.eq("prometheus loaded and evaluated every rule of qrux-alerts.yaml", len(got), len(rules))
    for x in got:
        env.eq("rule %s evaluates without error on real series" % x["name"],
               (x["health"], x.get("lastError", "")), ("ok", ""))
    for name, rule in sorted(rules.items()):
        if name not in FIRING_ON_DOWN | SILENT:
            continue
        r = prom_query(pport, rule["expr"])
        res = r.get("data", {}).get("result")
        if res is None:
            env.check("prometheus runs the expression of %s" % name, False, r)
            continue
        ups = sorted(x["metric"].get("upstream", "") for x in res)
        env.eq("expression of %s on real series: %s" % (
            name, "the refusing upstream" if name in FIRING_ON_DOWN else "nothing"),
            ups, [down] if name in FIRING_ON_DOWN else [], res)

    def pending():
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/alerts" % pport,
                                        timeout=10) as r:
                al = json.loads(r.read())["data"]["alerts"]
        except (OSError, ValueError, KeyError):
            return None
        return [a for a in al if a["labels"].get("alertname") == "QruxUpstreamDown"] or None
    al = wait_until(pending, 10) or []
    env.eq("QruxUpstreamDown pending (for: 5m) for the refusing upstream, and only it",
           [(a["labels"].get("upstream"), a["labels"].get("severity"), a["state"]) for a in al],
           [(down, "critical", "pending")])


def dashboard_and_alerts(env, be):
    dash = dashboard_model(env)
    refused = free_port("tcp")
    q, tport, adm = start(env, [("down.test", "127.0.0.1:%d" % refused), ("*", be.addr)])
    traffic(env, q, tport, n_h3=20, n_h2=5)
    r = env.gtls(q, "/", authority="down.test:%d" % q.port, timeout=20)
    env.eq("a request to an upstream that refuses: 502", r.status(), 502, r.summary())

    text = adm.get("/metrics").text
    ms, _ = parse_metrics(text)
    scraped = {name for name, _ in ms}
    panel_exprs = exprs_of(dash)
    wanted = {}
    for title, ref, e in panel_exprs:
        for n in names_in(e):
            wanted.setdefault(n, []).append("panel %r %s" % (title, ref))
    alerts = alert_exprs()
    env.check("alerts: the expressions were read (%d)" % len(alerts), len(alerts) >= 10)
    for e in alerts:
        for n in names_in(e):
            wanted.setdefault(n, []).append("alert rule")
    pending_seen = []
    for n, where in sorted(wanted.items()):
        if n in NOT_QRUX:
            continue
        if n not in scraped and n in PENDING:
            pending_seen.append(n)
            continue
        env.check("metric %s (%s) is in a real /metrics scrape" % (n, where[0]), n in scraped,
                  "not among %d scraped names" % len(scraped))
    if pending_seen:
        print("NOTE: not exposed by this build yet: %s"
              % "; ".join("%s (%s)" % (n, PENDING[n]) for n in pending_seen), flush=True)

    # A real Prometheus scrapes qrux every second and runs every panel query.
    pport = free_port("tcp")
    pdir = tempfile.mkdtemp(prefix="prom-", dir=env.dir)
    cfg = os.path.join(pdir, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                "rule_files: ['%s']\n"
                "scrape_configs:\n  - job_name: qrux\n"
                "    static_configs: [{targets: ['127.0.0.1:%d']}]\n"
                % (os.path.join(MON, "qrux-alerts.yaml"), adm.port))
    prom = spawn([need("prometheus"), "--config.file=" + cfg,
                  "--storage.tsdb.path=" + os.path.join(pdir, "data"),
                  "--web.listen-address=127.0.0.1:%d" % pport, "--log.level=warn"],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def scrapes():
            r = prom_query(pport, 'count_over_time(up{job="qrux"}[1m])')
            res = r.get("data", {}).get("result", [])
            return res and float(res[0]["value"][1]) >= 4
        env.check("prometheus scraped qrux 4 times", wait_until(scrapes, 30),
                  prom_query(pport, 'up{job="qrux"}'))
        # More traffic while Prometheus watches, so rates are non-zero; 60
        # requests to the refusing upstream, so its alerts' thresholds are met.
        traffic(env, q, tport, n_h3=20, n_h2=5)
        r = env.gtls(q, "/", n=60, authority="down.test:%d" % q.port, timeout=60)
        env.eq("60 requests to the refusing upstream: 60 x 502",
               list(r.statuses().values()).count(502), 60, r.summary())
        time.sleep(3)
        alerts_on_real_series(env, pport, "127.0.0.1:%d" % refused)
        for title, ref, e in panel_exprs:
            qe = (e.replace("$__rate_interval", "30s").replace("$namespace", ".*")
                  .replace("$pod", ".*").replace("$job", "qrux"))
            r = prom_query(pport, qe)
            ok = r.get("status") == "success"
            env.check("prometheus runs panel %r %s" % (title, ref), ok, r.get("error", r))
            if not ok or any(n in PENDING and n not in scraped for n in names_in(e)):
                continue
            res = r["data"]["result"]
            env.check("panel %r %s returns data" % (title, ref), len(res) > 0, qe)
    finally:
        prom.terminate()
        try:
            prom.wait(10)
        except subprocess.TimeoutExpired:
            prom.kill()
    q.stop()


def main():
    with Env("observability") as env:
        be = env.backend()
        long = long_conn_start(env, be)
        env.case("trace context and request ids", trace_context, env, be)
        env.case("certificate expiry gauge", cert_expiry, env, be)
        env.case("QUIC path statistics", quic_path_stats, env, be)
        env.case("status page and status.json", status_page, env, be)
        env.case("dashboard and alerts against a real scrape", dashboard_and_alerts, env, be)
        env.case("QUIC path statistics of a long connection", long_conn_check, env, long)


if __name__ == "__main__":
    main()
