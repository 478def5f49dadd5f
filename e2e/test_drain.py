#!/usr/bin/env python3
"""The drain a rolling deploy relies on (issue 5), under continuous HTTP/3
load, started by SIGTERM and by POST /drain (a preStop hook), with
`drain_delay_secs: 2`:

- /readyz answers 503 "draining" right after the trigger (the delay is
  measured and printed, asserted only against a generous bound);
- /livez stays 200 while draining;
- requests sent during the drain delay still succeed: on new connections,
  on a connection opened before, and the load's;
- a slow request in flight completes with the exact body;
- after the delay, new QUIC connections are refused (CONNECTION_REFUSED);
- the process exits 0 once the in-flight request is done;
- a second SIGTERM during the drain (in the delay, or while waiting for an
  in-flight request) ends the process at once, exit 0;
- a config reload after the GOAWAY (one worker already done) is harmless;
- a preStop `POST /drain` followed by the kubelet's SIGTERM keeps draining
  (that SIGTERM is the first signal); one more SIGTERM stops at once.

The HTTPS fallback listener (server.https_listen) drains alongside: HTTP/1.1
(keep-alive loop) and HTTP/2 (h2load) load served through the delay; after
it an HTTP/1.1 response carries `Connection: close` and `Alt-Svc: clear`, an
HTTP/2 connection gets GOAWAY while its download completes (curl: exact
body; nghttp: the frames), and new TCP connections are refused.
"""

import datetime
import hashlib
import http.client
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Env, need, pattern_sha256, run, spawn, wait_until  # noqa: E402
from test_admin import Admin, metric, scrape  # noqa: E402
from test_reload import (Load, ProbeRun, config_text, lines_since, nlines, probe,  # noqa: E402
                         start_qrux_at, wait_log)

DRAIN_DELAY = 2
READYZ_BOUND = 3.0  # seconds: generous on a shared machine; the figure is printed
H3_REQUEST_REJECTED = 0x10B
CONNECTION_REFUSED = 0x2


def log_time(line):
    """time.time() of a qrux log line ("2026-01-02T03:04:05.678Z ...")."""
    ts = line.split(" ", 1)[0]
    dt = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.replace(tzinfo=datetime.timezone.utc).timestamp()


def start(env, be, graceful=20, delay=DRAIN_DELAY, workers=2, https=False):
    cert = env.cert()
    port, aport = harness.free_port("udp"), harness.free_port("tcp")
    server = {"drain_delay_secs": delay}
    if https:
        tport = harness.free_port("tcp")
        server["https_listen"] = '"127.0.0.1:%d"' % tport
    path = os.path.join(env.dir, "qrux-drain-%d.yaml" % port)
    with open(path, "w") as f:
        f.write(config_text(port, cert.cert, cert.key, [("*", be.addr)], aport, workers=workers,
                            limits={"graceful_shutdown_secs": graceful}, server=server))
    q = start_qrux_at(env, path, port)
    q.tport = tport if https else None
    return q, Admin(aport)


# ---------------------------------------------------------------------------
# HTTPS (TCP) clients


def tls_ctx(alpn="http/1.1"):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols([alpn])
    return ctx


def h1_conn(port, timeout=10):
    return http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=tls_ctx())


class H1Load:
    """HTTP/1.1 over TLS, requests back to back on keep-alive connections
    (a new one when the server closes), until stop_ev. Every request kept:
    (start, end, status or the exception, Connection header)."""

    def __init__(self, port, path="/bytes/16"):
        self.port = port
        self.path = path
        self.reqs = []
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.conns = 0
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def _loop(self):
        c = None
        while not self.stop_ev.is_set():
            if c is None:
                c = h1_conn(self.port)
                self.conns += 1
            t0 = time.time()
            try:
                c.request("GET", self.path)
                r = c.getresponse()
                body = r.read()
                res = (r.status if len(body) == 16 else "short body %d" % len(body),
                       r.getheader("connection"))
                if r.will_close:
                    c.close()
                    c = None
            except (OSError, http.client.HTTPException) as e:
                res = ("%s: %s" % (type(e).__name__, e), None)
                c.close()
                c = None
            with self.lock:
                self.reqs.append((t0, time.time()) + res)
        if c is not None:
            c.close()

    def stop(self):
        self.stop_ev.set()
        self.t.join(30)
        with self.lock:
            return list(self.reqs)


class H2Load:
    """h2load runs (`-n N -c 1 -m 10`, a new HTTP/2 connection each) back to
    back until stop_ev; each run: (start, end, done, succeeded, failed +
    errored, 2xx, output tail)."""

    RX = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                    r"(\d+) failed, (\d+) errored, (\d+) timeout")

    def __init__(self, port, n=100, path="/bytes/16"):
        self.cmd = [need("h2load"), "-n", str(n), "-c", "1", "-m", "10",
                    "https://127.0.0.1:%d%s" % (port, path)]
        self.n = n
        self.runs = []
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def _loop(self):
        while not self.stop_ev.is_set():
            t0 = time.time()
            rc, out, err = run(self.cmd, timeout=60)
            text = out.decode("utf-8", "replace")
            m = self.RX.search(text)
            s2 = re.search(r"status codes: (\d+) 2xx", text)
            self.runs.append((t0, time.time(), int(m.group(3)) if m else 0,
                              int(m.group(4)) if m else 0,
                              int(m.group(5)) + int(m.group(6)) if m else -1,
                              int(s2.group(1)) if s2 else 0, text[-400:] + err.decode()[-200:]))

    def stop(self):
        self.stop_ev.set()
        self.t.join(90)
        return list(self.runs)


def h1_request(port, path, out):
    """One HTTP/1.1 request on a new TLS connection, in a thread (raw
    socket, so what the server does after the response shows): fills |out|
    with t0, t1 (response complete), status, headers (lowercased), body, and
    eof (True when the server then closed the connection)."""
    def go():
        out["t0"] = time.time()
        try:
            raw = socket.create_connection(("127.0.0.1", port), timeout=30)
            t = tls_ctx().wrap_socket(raw, server_hostname="localhost")
            t.sendall(("GET %s HTTP/1.1\r\nHost: localhost:%d\r\n\r\n" % (path, port)).encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = t.recv(65536)
                if not chunk:
                    raise ConnectionError("closed before the response head")
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            out["status"] = int(lines[0].split()[1])
            hd = {}
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                hd[k.strip().lower()] = v.strip()
            out["headers"] = hd
            n = int(hd.get("content-length", "0"))
            while len(body) < n:
                chunk = t.recv(65536)
                if not chunk:
                    break
                body += chunk
            out["body"] = body[:n]
            out["t1"] = time.time()
            t.settimeout(10)
            try:
                extra = t.recv(1)
                out["eof"] = True if extra == b"" else "more bytes %r" % extra
            except socket.timeout:
                out["eof"] = "still open after 10 s"
            except (OSError, ssl.SSLError) as e:
                out["eof"] = True if isinstance(e, (ConnectionResetError, ssl.SSLEOFError)) \
                    else "error %s" % e
            t.close()
        except (OSError, ValueError, IndexError) as e:
            out["error"] = "%s: %s" % (type(e).__name__, e)
            out["t1"] = time.time()
    th = threading.Thread(target=go, daemon=True)
    th.start()
    return th


def tcp_refused(port):
    """What a new HTTPS connection gets: "refused", "closed" (no TLS), or
    "served" when a request is answered."""
    try:
        c = h1_conn(port, timeout=5)
        c.request("GET", "/bytes/16")
        r = c.getresponse()
        r.read()
        c.close()
        return "served %d" % r.status
    except ConnectionRefusedError:
        return "refused"
    except (OSError, http.client.HTTPException) as e:
        return "closed (%s)" % type(e).__name__


def trigger(q, adm, how):
    """Starts the drain; returns the POST's response for POST /drain."""
    if how == "SIGTERM":
        q.signal(signal.SIGTERM)
        return None
    q.signalled = True  # the harness must not take the exit for a foreign kill
    return adm.req("POST", "/drain")


def drain_under_load(env, how):
    tag = "[%s] " % how
    be = env.backend()
    q, adm = start(env, be, https=True)
    tport = q.tport
    env.eq(tag + "before the drain: readyz 200", adm.code("/readyz"), 200)

    # Slow download, ~8 s: it outlives the delay, the GOAWAY and the checks
    # after it (one of which may wait for a client's 5 s handshake timeout).
    n = 800000
    slow = ProbeRun(env, q, "/slow/%d?ms=100&chunk=10000" % n, timeout=60)
    env.check(tag + "a slow request is in flight",
              wait_until(lambda: be.stats()["inflight"].get("/slow/%d" % n), 10, 0.02))
    # HTTP/2 downloads of ~8 s: curl keeps the body, nghttp shows the frames.
    # They must outlive the loads' start-up below plus the drain delay: on a
    # busy machine that start-up alone took over 2 s, and a 4 s download then
    # ended before the GOAWAY it is there to see.
    n2 = 800000
    h2url = "https://127.0.0.1:%d/slow/%d?ms=100&chunk=10000" % (tport, n2)
    h2file = os.path.join(env.dir, "h2-body-%d" % q.port)
    curl = spawn([need("curl"), "-sk", "--http2", "-o", h2file, "-w",
                  "%{http_code} %{size_download} %{http_version}", h2url],
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    nghttp_out = open(os.path.join(env.dir, "nghttp-%d.out" % q.port), "wb+")
    nghttp = spawn([need("nghttp"), "-nv", h2url], stdout=nghttp_out, stderr=subprocess.STDOUT)
    env.check(tag + "two HTTP/2 downloads are in flight",
              wait_until(lambda: be.stats()["inflight"].get("/slow/%d" % n2, 0) >= 2, 10, 0.02),
              be.stats())

    load = Load(env, q, ns=(50, 10))
    h1load = H1Load(tport)
    h2load = H2Load(tport)
    env.check(tag + "the HTTP/3 load runs", load.wait_more(200, 60))
    env.check(tag + "the HTTPS loads run (HTTP/1.1 and HTTP/2)",
              wait_until(lambda: len(h1load.reqs) >= 50 and len(h2load.runs) >= 2, 60, 0.05),
              (len(h1load.reqs), len(h2load.runs)))
    # An open connection whose second request goes out during the delay.
    keep = ProbeRun(env, q, "/delay/300", also_get="/id", timeout=30)
    env.check(tag + "an open connection has a request in flight",
              wait_until(lambda: be.stats()["inflight"].get("/delay/300"), 10, 0.01))

    i = nlines(q)
    t_sig = time.time()
    m0 = time.monotonic()
    r = trigger(q, adm, how)
    if r is not None:
        env.eq(tag + "POST /drain -> 202", r.status, 202, r)
    flipped = wait_until(lambda: adm.code("/readyz") == 503, 10, interval=0.002)
    delay = time.monotonic() - m0
    print("MEASURED %sreadyz 503 %.1f ms after the trigger" % (tag, delay * 1000), flush=True)
    env.check(tag + "readyz flips to 503 (%.1f ms; bound %.0f s)" % (delay * 1000, READYZ_BOUND),
              flipped and delay < READYZ_BOUND)
    rz = adm.get("/readyz")
    env.eq(tag + "readyz says draining", (rz.status, rz.text), (503, "draining\n"))
    env.eq(tag + "livez 200 in the drain delay", adm.code("/livez"), 200)
    # An HTTP/1.1 request sent now whose answer comes after the GOAWAY.
    across = {}
    across_t = h1_request(tport, "/delay/3000", across)
    env.eq(tag + "metrics: qrux_ready 0", metric(scrape(adm)[0], "qrux_ready"), 0.0)

    # New connections during the delay, until half of it has passed.
    fresh, fresh_tcp = [], []
    while time.time() < t_sig + DRAIN_DELAY / 2.0 or len(fresh) < 3:
        s = time.time()
        p = probe(q, "/id", timeout=5)
        fresh.append((s, time.time(), p))
        s = time.time()
        fresh_tcp.append((s, time.time(), tcp_refused(tport)))
        if len(fresh) >= 50:
            break
    load.stop_ev.set()  # no new load run from here on
    h1load.stop_ev.set()
    h2load.stop_ev.set()
    ln = wait_log(q, r"drain: GOAWAY", i, 15)
    env.check(tag + "after the delay: GOAWAY logged", ln, q.log_tail())
    t_goaway = log_time(ln) if ln else time.time()
    print("MEASURED %sGOAWAY %.2f s after the trigger (drain_delay_secs=%d)"
          % (tag, t_goaway - t_sig, DRAIN_DELAY), flush=True)
    env.check(tag + "the delay was honoured (GOAWAY not before it)",
              t_goaway - t_sig >= DRAIN_DELAY - 0.05, t_goaway - t_sig)

    before = [(s, e, p) for s, e, p in fresh if e <= t_goaway]
    bad = [p for s, e, p in before if not (p.ok() and p.backend_port() == be.port)]
    env.check(tag + "new connections during the delay: %d made" % len(before), len(before) >= 3,
              "%d of %d ended before GOAWAY" % (len(before), len(fresh)))
    env.eq(tag + "new connections during the delay all served", len(bad), 0, bad[:3])
    tb = [(s, e, r) for s, e, r in fresh_tcp if e <= t_goaway]
    env.check(tag + "new HTTPS connections during the delay: %d, all served" % len(tb),
              tb and all(r == "served 200" for _, _, r in tb), [r for _, _, r in tb][:5])

    kr = keep.finish()
    env.check(tag + "open connection: the request in flight at the trigger completes",
              kr.ok(0), kr)
    env.check(tag + "open connection: its next request, sent in the delay, is served",
              kr.ok(1) and kr.backend_port(1) == be.port, kr)

    # After the delay: new connections are refused; the slow one still runs.
    env.check(tag + "the slow request is still in flight after GOAWAY",
              slow.proc.poll() is None and q.alive())
    p = probe(q, "/id", timeout=5)
    env.check(tag + "after the delay: a new connection gets no response", p.status() is None, p)
    env.check(tag + "after the delay: refused with CONNECTION_REFUSED",
              p.conn_close is not None and p.conn_close.startswith("0x%x transport"
                                                                   % CONNECTION_REFUSED), p)
    g = env.gtls(q, "/id", timeout=10)
    env.check(tag + "after the delay: gtlsclient gets no response", g.status() is None,
              g.summary())
    env.check(tag + "after the delay: gtlsclient fails fast (refused, not its 5 s handshake "
              "timeout; took %.2f s)" % g.elapsed, g.elapsed < 4.5, g.summary())
    env.eq(tag + "after the delay: a new HTTPS connection is refused", tcp_refused(tport),
           "refused")
    env.eq(tag + "livez 200 while waiting for the in-flight request", adm.code("/livez"), 200)
    env.eq(tag + "readyz still 503", adm.code("/readyz"), 503)

    sr = slow.finish()
    env.check(tag + "the slow request in flight completes (200, clean)", sr.ok(), sr)
    env.eq(tag + "... with the exact body",
           (sr.reqs[0]["sha"], sr.reqs[0]["len"]) if sr.reqs else None, (pattern_sha256(n), n))

    # HTTPS across the GOAWAY.
    across_t.join(40)
    env.eq(tag + "HTTP/1.1 request sent in the delay, answered after GOAWAY: 200",
           across.get("status"), 200, across)
    env.check(tag + "... answered after the GOAWAY (else this check proves nothing)",
              across.get("t1", 0) > t_goaway, (across.get("t1"), t_goaway))
    hd = across.get("headers", {})
    env.eq(tag + "... with Connection: close", hd.get("connection"), "close", hd)
    env.eq(tag + "... with Alt-Svc: clear", hd.get("alt-svc"), "clear", hd)
    env.eq(tag + "... and then the server closes the connection", across.get("eof"), True)
    try:
        out, err = curl.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        harness._kill_group(curl, grace=1.0)
        out, err = curl.communicate()
    body = open(h2file, "rb").read() if os.path.exists(h2file) else b""
    env.eq(tag + "HTTP/2 download across the drain: curl exit 0, 200 over h2",
           (curl.returncode, out.decode()), (0, "200 %d 2" % n2), err)
    env.eq(tag + "HTTP/2 download across the drain: exact body",
           hashlib.sha256(body).hexdigest(), pattern_sha256(n2), len(body))
    try:
        nghttp.wait(timeout=40)
    except subprocess.TimeoutExpired:
        harness._kill_group(nghttp, grace=1.0)
    nghttp_out.seek(0)
    frames = nghttp_out.read().decode("utf-8", "replace")
    nghttp_out.close()
    env.eq(tag + "nghttp exit 0", nghttp.returncode, 0, frames[-500:])
    env.check(tag + "HTTP/2: the connection got a GOAWAY (NO_ERROR)",
              re.search(r"recv GOAWAY frame.*\n.*error_code=NO_ERROR", frames), frames[-800:])
    got = sum(int(x) for x in re.findall(r"recv DATA frame <length=(\d+)", frames))
    env.eq(tag + "HTTP/2: nghttp got every byte, the stream ended (END_STREAM)",
           (got, bool(re.search(r"recv DATA frame <length=\d+, flags=0x01", frames))), (n2, True))

    rc = q.wait_exit(30)
    env.eq(tag + "exit code 0", rc, 0, q.log_tail())
    env.eq(tag + "after exit: the admin port is closed", adm.code("/livez"), None)
    env.check(tag + "no second-signal stop was logged",
              not any("second signal" in l for l in lines_since(q, i)))

    runs = load.stop()
    in_delay = [r for r in runs if r["t1"] <= t_goaway]
    failed = load.failed_runs(in_delay)
    during = [r for r in in_delay if r["t0"] >= t_sig]
    env.check(tag + "load runs sent during the delay: %d (%d requests)"
              % (len(during), sum(r["ok"] for r in during)), len(during) >= 1)
    env.eq(tag + "load: zero failed requests before GOAWAY (%d requests)"
           % sum(r["ok"] for r in in_delay), len(failed), 0,
           [(r.get("summary"), r["bad"][:5]) for r in failed[:3]])
    h1 = h1load.stop()
    h1_before = [r for r in h1 if r[1] <= t_goaway]
    h1_bad = [r for r in h1_before if r[2] != 200]
    env.check(tag + "HTTPS HTTP/1.1 load: requests during the delay (%d)"
              % sum(1 for r in h1_before if r[0] >= t_sig), any(r[0] >= t_sig for r in h1_before))
    env.eq(tag + "HTTPS HTTP/1.1 load: zero failed before GOAWAY (%d requests, %d connections)"
           % (len(h1_before), h1load.conns), len(h1_bad), 0, h1_bad[:5])
    h2 = h2load.stop()
    h2_before = [r for r in h2 if r[1] <= t_goaway]
    h2_bad = [r for r in h2_before if r[3] != h2load.n or r[4] != 0 or r[5] != h2load.n]
    env.check(tag + "HTTPS HTTP/2 load: runs during the delay (%d)"
              % sum(1 for r in h2_before if r[0] >= t_sig), any(r[0] >= t_sig for r in h2_before))
    env.eq(tag + "HTTPS HTTP/2 load: zero failed before GOAWAY (%d runs of %d)"
           % (len(h2_before), h2load.n), len(h2_bad), 0, [r[6] for r in h2_bad[:2]])

    # A run that straddled the GOAWAY may see requests refused, but only the
    # way RFC 9114 5.2 says: H3_REQUEST_REJECTED, never another error.
    straddled = [r for r in runs if r["t1"] > t_goaway]
    odd = [r for r in load.failed_runs(straddled)
           if r["got"] and any(s is not None and s != 200 for _, s in r["bad"])]
    env.eq(tag + "load runs across the GOAWAY (%d): no error response" % len(straddled),
           len(odd), 0, [(r.get("summary"), r["bad"][:5]) for r in odd[:3]])


def second_sigterm(env, phase):
    """A second SIGTERM ends the drain at once: |phase| "delay" (during the
    drain delay) or "grace" (after the GOAWAY, a request still in flight)."""
    tag = "[second SIGTERM in the %s] " % phase
    be = env.backend()
    q, adm = start(env, be, graceful=60, delay=30 if phase == "delay" else 1)
    n = 2000000  # ~20 s: it must not finish
    slow = ProbeRun(env, q, "/slow/%d?ms=100&chunk=10000" % n, timeout=60)
    env.check(tag + "a slow request is in flight",
              wait_until(lambda: be.stats()["inflight"].get("/slow/%d" % n), 10, 0.02))
    i = nlines(q)
    q.signal(signal.SIGTERM)
    env.check(tag + "draining (readyz 503)",
              wait_until(lambda: adm.code("/readyz") == 503, 10, 0.01))
    if phase == "grace":
        env.check(tag + "GOAWAY sent: now waiting for the in-flight request",
                  wait_log(q, r"drain: GOAWAY", i, 10), q.log_tail())
        env.eq(tag + "livez 200 while waiting", adm.code("/livez"), 200)
    env.check(tag + "still running before the second signal", q.alive())
    q.signal(signal.SIGTERM)
    rc = q.wait_exit(10)
    env.eq(tag + "exits, code 0", rc, 0, q.log_tail())
    env.check(tag + "the stop is logged", wait_log(q, r"second signal: stopping now", i, 2),
              q.log_tail())
    sr = slow.finish()
    env.check(tag + "the slow request was cut (it did not complete)", not sr.ok(), sr)


def prestop_then_sigterm(env):
    """Kubernetes runs the preStop hook (POST /drain) and then sends
    SIGTERM: that SIGTERM is the first signal, not a second one; the drain
    goes on, the request in flight completes, exit 0. A SIGTERM after it
    stops at once."""
    tag = "[preStop then SIGTERM] "
    be = env.backend()
    q, adm = start(env, be, graceful=60, delay=1)
    n = 400000  # ~4 s
    slow = ProbeRun(env, q, "/slow/%d?ms=100&chunk=10000" % n, timeout=60)
    env.check(tag + "a slow request is in flight",
              wait_until(lambda: be.stats()["inflight"].get("/slow/%d" % n), 10, 0.02))
    i = nlines(q)
    q.signalled = True
    r = adm.req("POST", "/drain")
    env.eq(tag + "POST /drain -> 202", r.status, 202, r)
    env.eq(tag + "readyz 503", adm.code("/readyz"), 503)
    q.signal(signal.SIGTERM)
    env.check(tag + "the SIGTERM does not stop qrux: the request in flight completes",
              slow.finish().ok())
    env.eq(tag + "exit code 0", q.wait_exit(30), 0, q.log_tail())
    env.check(tag + "no second-signal stop was logged",
              not any("second signal" in l for l in lines_since(q, i)), q.log_tail())

    q, adm = start(env, be, graceful=60, delay=1)
    slow = ProbeRun(env, q, "/slow/%d?ms=100&chunk=10000" % (5 * n), timeout=60)
    env.check(tag + "(2) a slow request is in flight",
              wait_until(lambda: be.stats()["inflight"].get("/slow/%d" % (5 * n)), 10, 0.02))
    i = nlines(q)
    q.signalled = True
    env.eq(tag + "(2) POST /drain -> 202", adm.req("POST", "/drain").status, 202)
    q.signal(signal.SIGTERM)
    # qrux logs nothing for this SIGTERM; the pause only keeps the two
    # signals from merging into one pending signal.
    time.sleep(1.0)
    env.check(tag + "(2) still running after the first SIGTERM", q.alive())
    q.signal(signal.SIGTERM)
    env.eq(tag + "(2) a second SIGTERM stops at once, exit 0", q.wait_exit(10), 0, q.log_tail())
    env.check(tag + "(2) the request in flight was cut", not slow.finish().ok())


def reload_while_draining(env):
    """A config reload (SIGHUP; a ConfigMap update does the same) after the
    GOAWAY, when the idle worker has already finished: the process carries
    on, the request in flight completes, exit 0."""
    tag = "[reload while draining] "
    be = env.backend()
    q, adm = start(env, be, graceful=60, delay=1)
    n = 400000  # ~4 s
    slow = ProbeRun(env, q, "/slow/%d?ms=100&chunk=10000" % n, timeout=60)
    env.check(tag + "a slow request is in flight",
              wait_until(lambda: be.stats()["inflight"].get("/slow/%d" % n), 10, 0.02))
    i = nlines(q)
    q.signal(signal.SIGTERM)
    env.check(tag + "GOAWAY sent", wait_log(q, r"drain: GOAWAY", i, 10), q.log_tail())
    time.sleep(0.5)  # the worker without a connection finishes meanwhile
    q.signal(signal.SIGHUP)
    env.check(tag + "the reload is done",
              wait_log(q, r"config reload \(SIGHUP\)", i, 10), q.log_tail())
    sr = slow.finish()
    env.check(tag + "the request in flight completes (200, clean)", sr.ok(), sr)
    env.eq(tag + "... with the exact body",
           (sr.reqs[0]["sha"], sr.reqs[0]["len"]) if sr.reqs else None, (pattern_sha256(n), n))
    env.eq(tag + "exit code 0", q.wait_exit(30), 0, q.log_tail())


def main():
    with Env("drain") as env:
        env.case("SIGTERM under HTTP/3 load", drain_under_load, env, "SIGTERM")
        env.case("POST /drain under HTTP/3 load", drain_under_load, env, "POST /drain")
        env.case("second SIGTERM during the drain delay", second_sigterm, env, "delay")
        env.case("second SIGTERM while a request is in flight", second_sigterm, env, "grace")
        env.case("config reload while draining", reload_while_draining, env)
        env.case("preStop POST /drain, then SIGTERM", prestop_then_sigterm, env)


if __name__ == "__main__":
    main()
