#!/usr/bin/env python3
"""libcurl's HTTP/3 through qrux: a client from another code base than
gtlsclient and h3probe (curl's own QUIC and HTTP/3 layers over ngtcp2 1.11 /
nghttp3 1.8 and GnuTLS), driven by Debian's python3-pycurl with
HTTP_VERSION 31 (CURL_HTTP_VERSION_3ONLY: no fallback to TCP).

The libcurl is bookworm-backports' libcurl3-gnutls 8.14, unpacked by
`scripts/deps.sh unpack BUILD_DIR` into BUILD_DIR/backports (never
installed: bookworm's 7.88 stays the system's libcurl). This file runs that
step, then re-executes itself with LD_LIBRARY_PATH naming the unpacked
library, so only this process loads it; the variable is dropped from the
environment before qrux and the backend start.

Cases:
  peer: pycurl runs on the unpacked libcurl 8.14 (mapped from the build
    tree, HTTP3 in its features, ngtcp2 and nghttp3 in its version); the
    system's libcurl3-gnutls is still bookworm's 7.x
  one connection: on one easy handle, GET 1000 bytes, 8 MiB, 3 MiB chunked
    upstream, HEAD, 204, 404, the request head the app receives, a 5 MiB
    POST with Content-Length and a 1 MiB POST without length (sent chunked
    upstream), each hashed by the backend; every response HTTP/3
    (CURLINFO_HTTP_VERSION 30), exact bytes and headers, no hop-by-hop
    fields; qrux counts one QUIC handshake and one open h3 connection, its
    access log says proto=h3 for every request, the connection closes when
    the handle goes
  multiplexed: four 2 MiB downloads at once through a multi handle
    (CURLOPT_PIPEWAIT): one connection, four exact bodies
  0-RTT: CURLSSLOPT_EARLYDATA; a new connection resumes the session and
    sends its GET in 0-RTT (Early-Data: 1 upstream, early_data=1 in the
    access log); a POST sent in 0-RTT is held until the handshake (no
    Early-Data, exact body); the resumption and early-data counters
"""

import hashlib
import io
import json
import os
import re
import subprocess
import sys

E2E_DIR = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(E2E_DIR)
LIBDIR_ENV = "QRUX_CURL_H3_LIBDIR"


def _reexec_with_libcurl():
    """Unpacks libcurl 8.14 (fast when done) and execs this file again with
    LD_LIBRARY_PATH on it. The dynamic loader reads the variable at process
    start, so it cannot be set later from Python. A failure here is printed
    the way Env prints one and exits 1 (never a skip)."""
    qbin = os.environ.get("QRUX_BIN", "")
    build = os.path.dirname(os.path.abspath(qbin)) if qbin else os.path.join(SRC, "build")
    cmd = [os.path.join(SRC, "scripts", "deps.sh"), "unpack", build]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    libs = os.path.join(build, "backports", "usr", "lib")
    found = []
    if os.path.isdir(libs):
        for d in sorted(os.listdir(libs)):
            if os.path.exists(os.path.join(libs, d, "libcurl-gnutls.so.4")):
                found.append(os.path.join(libs, d))
    if p.returncode != 0 or not found:
        print("FAIL libcurl 8.14 unpacked by %s (rc=%d): %s"
              % (" ".join(cmd), p.returncode, p.stdout.decode(errors="replace")[-2000:]))
        print("0 passed, 1 failed", flush=True)
        sys.exit(1)
    env = dict(os.environ)
    env[LIBDIR_ENV] = found[0]
    env["LD_LIBRARY_PATH"] = found[0] + (":" + env["LD_LIBRARY_PATH"]
                                         if env.get("LD_LIBRARY_PATH") else "")
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)] + sys.argv[1:], env)


if __name__ == "__main__" and not os.environ.get(LIBDIR_ENV):
    _reexec_with_libcurl()

LIBDIR = os.environ.get(LIBDIR_ENV, "")
# Children (qrux, the backend, dpkg) get the system's libraries.
if LIBDIR and os.environ.get("LD_LIBRARY_PATH"):
    rest = [d for d in os.environ["LD_LIBRARY_PATH"].split(":") if d and d != LIBDIR]
    if rest:
        os.environ["LD_LIBRARY_PATH"] = ":".join(rest)
    else:
        del os.environ["LD_LIBRARY_PATH"]

sys.path.insert(0, E2E_DIR)
from harness import (Env, free_port, scrape, pattern, pattern_sha256, run,  # noqa: E402
                     wait_until, yaml_str)

try:
    import pycurl  # noqa: E402  (Debian's python3-pycurl, on the libcurl above)
except ImportError as e:
    print("FAIL python3-pycurl importable (run scripts/deps.sh test): %s" % e)
    print("0 passed, 1 failed", flush=True)
    sys.exit(1)

MiB = 1024 * 1024
# curl/curl.h; pycurl 7.45.2 predates these names.
CURL_HTTP_VERSION_3ONLY = 31
CURL_HTTP_VERSION_3 = 30  # what CURLINFO_HTTP_VERSION reports for HTTP/3
CURL_VERSION_HTTP3 = 1 << 25
CURLSSLOPT_EARLYDATA = 1 << 6
HOP_BY_HOP = ("connection", "keep-alive", "x-hop-test", "transfer-encoding")

M_HS_OK = 'qrux_quic_handshakes_total{result="success"}'
M_H3_OPEN = 'qrux_active_connections{protocol="h3"}'
M_RESUMED = "qrux_quic_resumed_handshakes_total"
M_0RTT_OK = 'qrux_quic_early_data_handshakes_total{result="accepted"}'
M_EARLY_ACCEPTED = 'qrux_early_data_requests_total{result="accepted"}'
M_EARLY_HELD = 'qrux_early_data_requests_total{result="held"}'


# ---------------------------------------------------------------------------
# qrux and its metrics


def start(env, be):
    """qrux routing everything to |be|, /metrics on an admin port."""
    aport = free_port("tcp")
    q = env.qrux(routes=[("*", be.addr)],
                 extra_server="  drain_delay_secs: 0\nadmin:\n  listen: %s\n"
                 % yaml_str("127.0.0.1:%d" % aport))
    q.admin_port = aport
    return q


def metrics(q):
    """/metrics as {'name{labels}': value}."""
    return scrape(q.admin_port)


# ---------------------------------------------------------------------------
# pycurl


class Resp:
    def __init__(self, status, version, head, body, connects, log):
        self.status = status
        self.version = version  # CURLINFO_HTTP_VERSION
        self.body = body
        self.connects = connects  # new connections this transfer opened
        self.log = log
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        self.headers = []  # [(lowercase name, value)] of the final response
        for ln in lines[1:]:
            if ":" in ln:
                k, _, v = ln.partition(":")
                self.headers.append((k.strip().lower(), v.strip()))

    def header(self, name):
        vals = [v for k, v in self.headers if k == name]
        return vals[0] if len(vals) == 1 else (vals or None)

    def json(self):
        return json.loads(self.body)

    def summary(self):
        return ("status=%s version=%s status_line=%r headers=%s body=%d bytes %r connects=%s "
                "curl-log-tail=%r" % (self.status, self.version, self.status_line,
                                      self.headers[:12], len(self.body), self.body[:200],
                                      self.connects, self.log[-8:]))


class Client:
    """One pycurl easy handle on HTTP/3 only. curl_easy_reset() between
    transfers keeps its connection cache and TLS session cache, so
    consecutive requests share one QUIC connection unless |fresh|."""

    def __init__(self, env, port, early_data=False):
        self.env = env
        self.port = port
        self.early_data = early_data
        self.c = pycurl.Curl()

    def setup(self, c, path, log, method=None, body=None, sized=True, headers=(), fresh=False):
        """Options of one transfer on |c|: POST when a |body| is given,
        else GET, unless |method| names another."""
        method = method or ("POST" if body is not None else "GET")
        c.setopt(pycurl.URL, "https://localhost:%d%s" % (self.port, path))
        c.setopt(pycurl.HTTP_VERSION, CURL_HTTP_VERSION_3ONLY)
        c.setopt(pycurl.CAINFO, self.env.cert().cert)  # verified: no -k
        c.setopt(pycurl.CONNECTTIMEOUT, 10)
        c.setopt(pycurl.TIMEOUT, 120)
        if self.early_data:
            c.setopt(pycurl.SSL_OPTIONS, CURLSSLOPT_EARLYDATA)
        if fresh:
            c.setopt(pycurl.FRESH_CONNECT, 1)
        c.setopt(pycurl.VERBOSE, 1)
        c.setopt(pycurl.DEBUGFUNCTION,
                 lambda t, m: log.append(m.decode("utf-8", "replace").rstrip())
                 if t == pycurl.INFOTYPE_TEXT else None)
        if headers:
            c.setopt(pycurl.HTTPHEADER, ["%s: %s" % kv for kv in headers])
        if method == "HEAD":
            c.setopt(pycurl.NOBODY, 1)
        elif body is not None:
            c.setopt(pycurl.POST, 1)
            c.setopt(pycurl.READDATA, io.BytesIO(body))
            if sized:
                c.setopt(pycurl.POSTFIELDSIZE_LARGE, len(body))
            if method != "POST":
                c.setopt(pycurl.CUSTOMREQUEST, method)
        elif method != "GET":
            c.setopt(pycurl.CUSTOMREQUEST, method)

    def request(self, path, **kw):
        """One transfer; a curl error becomes a Resp with status 0 (the
        caller's checks then fail with the error in the detail)."""
        c = self.c
        c.reset()
        log = []
        self.setup(c, path, log, **kw)
        head, out = Capture(), io.BytesIO()
        c.setopt(pycurl.HEADERFUNCTION, head.write)
        c.setopt(pycurl.WRITEDATA, out)
        try:
            c.perform()
        except pycurl.error as e:
            log.append("pycurl.error %s" % (e.args,))
            return Resp(0, None, b"", out.getvalue(), None, log)
        return Resp(c.getinfo(pycurl.RESPONSE_CODE), c.getinfo(pycurl.INFO_HTTP_VERSION),
                    head.final(), out.getvalue(), c.getinfo(pycurl.NUM_CONNECTS), log)

    def close(self):
        self.c.close()


class Capture:
    """Header lines of a transfer; final() is the last (non-1xx) head."""

    def __init__(self):
        self.blocks = [b""]

    def write(self, line):
        if re.match(rb"HTTP/\S+ \d", line) and self.blocks[-1]:
            self.blocks.append(b"")
        self.blocks[-1] += line

    def final(self):
        return self.blocks[-1]


# ---------------------------------------------------------------------------
# cases


def peer(env):
    vi = pycurl.version_info()
    ver = tuple(int(x) for x in vi[1].split(".")[:2])
    env.check("pycurl runs on libcurl >= 8.14", ver >= (8, 14), pycurl.version)
    env.check("libcurl's features include HTTP3", vi[4] & CURL_VERSION_HTTP3, hex(vi[4]))
    env.check("libcurl is built with ngtcp2 and nghttp3",
              "ngtcp2/" in pycurl.version and "nghttp3/" in pycurl.version, pycurl.version)
    with open("/proc/self/maps") as f:
        maps = {ln.split()[-1] for ln in f if "libcurl" in ln}
    env.check("the libcurl mapped is the one unpacked in the build tree",
              maps and all(os.path.realpath(m).startswith(os.path.realpath(LIBDIR) + "/")
                           for m in maps), "%s (want under %s)" % (sorted(maps), LIBDIR))
    rc, out, err = run(["dpkg-query", "-W", "-f=${Version}", "libcurl3-gnutls"], timeout=30)
    sysver = out.decode().strip()
    rc2, _, _ = run(["dpkg", "--compare-versions", sysver, "lt", "8"], timeout=30)
    env.check("the system's libcurl3-gnutls is still bookworm's (not upgraded)",
              rc == 0 and rc2 == 0, "installed: %r %s" % (sysver, err.decode(errors="replace")))


def check_h3(env, name, r, status, connects=0):
    env.eq("%s: status" % name, r.status, status, r.summary())
    env.eq("%s: over HTTP/3 (CURLINFO_HTTP_VERSION)" % name, r.version, CURL_HTTP_VERSION_3,
           r.summary())
    env.eq("%s: status line" % name, r.status_line.split(" ")[:2], ["HTTP/3", str(status)])
    env.eq("%s: new connections" % name, r.connects, connects, r.summary())
    hop = [k for k, _ in r.headers if k in HOP_BY_HOP]
    env.eq("%s: no hop-by-hop fields" % name, hop, [], r.headers)


def one_connection(env, be):
    q = start(env, be)
    cl = Client(env, q.port)
    n_req = 0

    r = cl.request("/bytes/1000")
    n_req += 1
    check_h3(env, "GET 1000 bytes", r, 200, connects=1)
    env.check("GET 1000 bytes: exact body", r.body == pattern(1000), r.summary())
    env.eq("GET 1000 bytes: content-length", r.header("content-length"), "1000")
    env.eq("GET 1000 bytes: x-backend-port", r.header("x-backend-port"), str(be.port))

    n = 8 * MiB
    r = cl.request("/bytes/%d" % n)
    n_req += 1
    check_h3(env, "GET 8 MiB", r, 200)
    env.eq("GET 8 MiB: length", len(r.body), n)
    env.eq("GET 8 MiB: sha256", hashlib.sha256(r.body).hexdigest(), pattern_sha256(n))
    env.eq("GET 8 MiB: content-length", r.header("content-length"), str(n))

    n = 3 * MiB + 7
    r = cl.request("/chunked/%d" % n)
    n_req += 1
    check_h3(env, "GET 3 MiB chunked upstream", r, 200)
    env.eq("GET 3 MiB chunked upstream: sha256", hashlib.sha256(r.body).hexdigest(),
           pattern_sha256(n), "length %d" % len(r.body))

    r = cl.request("/bytes/5000", method="HEAD")
    n_req += 1
    check_h3(env, "HEAD", r, 200)
    env.eq("HEAD: content-length of the GET", r.header("content-length"), "5000")
    env.eq("HEAD: no body", r.body, b"")

    for st in (204, 404):
        r = cl.request("/status/%d" % st)
        n_req += 1
        check_h3(env, "GET /status/%d" % st, r, st)
        if st == 204:
            env.eq("204: no body", r.body, b"")

    r = cl.request("/echo?from=curl", headers=[("X-Curl-Test", "h3 peer"), ("Accept", "x/y")])
    n_req += 1
    check_h3(env, "GET /echo", r, 200)
    j = r.json() if r.status == 200 else {}
    hdrs = [(k.lower(), v) for k, v in j.get("headers", [])]
    env.eq("the app gets GET /echo?from=curl", (j.get("method"), j.get("target")),
           ("GET", "/echo?from=curl"), j)
    env.eq("the app gets Host from :authority", [v for k, v in hdrs if k == "host"],
           ["localhost:%d" % q.port], hdrs)
    env.eq("the app gets curl's own field", [v for k, v in hdrs if k == "x-curl-test"],
           ["h3 peer"], hdrs)
    env.eq("the app gets curl's Accept", [v for k, v in hdrs if k == "accept"], ["x/y"], hdrs)
    env.eq("the app gets X-Forwarded-Proto https",
           [v for k, v in hdrs if k == "x-forwarded-proto"], ["https"], hdrs)
    env.check("the app gets libcurl 8.14's User-Agent",
              any(k == "user-agent" and "libcurl/8.1" in v for k, v in hdrs), hdrs)

    up = os.urandom(5 * MiB)
    sha = hashlib.sha256(up).hexdigest()
    r = cl.request("/upload?sha256=" + sha, body=up)
    n_req += 1
    check_h3(env, "POST 5 MiB", r, 200)
    j = r.json() if r.status == 200 else {}
    env.eq("POST 5 MiB: the app gets POST", j.get("method"), "POST", r.summary())
    env.eq("POST 5 MiB: the app's body length and sha256",
           (j.get("body_len"), j.get("body_sha256")), (len(up), sha), r.summary())
    env.eq("POST 5 MiB: sent upstream with Content-Length",
           ([v for k, v in j.get("headers", []) if k.lower() == "content-length"],
            j.get("chunked")), ([str(len(up))], False))

    up = os.urandom(MiB + 3)
    sha = hashlib.sha256(up).hexdigest()
    r = cl.request("/upload?sha256=" + sha, body=up, sized=False)
    n_req += 1
    check_h3(env, "POST 1 MiB without length", r, 200)
    j = r.json() if r.status == 200 else {}
    env.eq("POST without length: the app's body length and sha256",
           (j.get("body_len"), j.get("body_sha256")), (len(up), sha), r.summary())
    env.eq("POST without length: sent upstream chunked", j.get("chunked"), True, j)

    m = metrics(q)
    env.eq("%d requests, one QUIC connection: handshakes" % n_req, m.get(M_HS_OK), 1.0)
    env.eq("one h3 connection open while the handle keeps it", m.get(M_H3_OPEN), 1.0)
    cl.close()
    closed = wait_until(lambda: metrics(q).get(M_H3_OPEN) == 0.0, 10)
    env.check("the handle closed: qrux's h3 connection closed", closed, metrics(q).get(M_H3_OPEN))

    # An access line is written when its stream ends: once qrux has the
    # client's ACK of the last response bytes. The easy interface reads its
    # socket only during a transfer, so that ACK may wait for the next one;
    # the last request's line may come only with the handle's close.
    acc = wait_until(lambda: len(q.access()) >= n_req and q.access(), 10) or q.access()
    env.eq("access log: one line per request", len(acc), n_req, acc)
    env.eq("access log: every request proto=h3", sorted({a.get("proto") for a in acc}), ["h3"])
    posts = sorted(int(a.get("bytes_in", -1)) for a in acc if a.get("method") == "POST")
    env.eq("access log: the two POSTs' bytes_in", posts, [MiB + 3, 5 * MiB], acc)


def multiplexed(env, be):
    q = start(env, be)
    sizes = [2 * MiB + i for i in range(4)]
    cl = Client(env, q.port)
    multi = pycurl.CurlMulti()
    multi.setopt(pycurl.M_PIPELINING, 2)  # CURLPIPE_MULTIPLEX
    easies = []
    for n in sizes:
        e = pycurl.Curl()
        log = []
        cl.setup(e, "/bytes/%d" % n, log)
        e.setopt(pycurl.PIPEWAIT, 1)  # wait for the connection being made, then share it
        e.out = io.BytesIO()
        e.head = Capture()
        e.log = log
        e.setopt(pycurl.WRITEDATA, e.out)
        e.setopt(pycurl.HEADERFUNCTION, e.head.write)
        multi.add_handle(e)
        easies.append(e)
    errors = []
    running = len(easies)
    while running:
        ret, running = multi.perform()
        while ret == pycurl.E_CALL_MULTI_PERFORM:
            ret, running = multi.perform()
        if running:
            multi.select(1.0)
        _, _, failed = multi.info_read()
        errors += [(e.getinfo(pycurl.EFFECTIVE_URL), no, msg) for e, no, msg in failed]
    env.eq("4 concurrent downloads: no curl errors", errors, [])
    for n, e in zip(sizes, easies):
        r = Resp(e.getinfo(pycurl.RESPONSE_CODE), e.getinfo(pycurl.INFO_HTTP_VERSION),
                 e.head.final(), e.out.getvalue(), None, e.log)
        env.eq("concurrent %d bytes: status" % n, r.status, 200, r.summary())
        env.eq("concurrent %d bytes: over HTTP/3" % n, r.version, CURL_HTTP_VERSION_3)
        env.eq("concurrent %d bytes: sha256" % n, hashlib.sha256(r.body).hexdigest(),
               pattern_sha256(n), "length %d" % len(r.body))
        multi.remove_handle(e)
        e.close()
    multi.close()
    env.eq("4 concurrent downloads: one QUIC connection", metrics(q).get(M_HS_OK), 1.0)


def early_data(env, be):
    q = start(env, be)
    cl = Client(env, q.port, early_data=True)
    r = cl.request("/echo?n=1")
    check_h3(env, "0-RTT client, first GET", r, 200, connects=1)
    j = r.json() if r.status == 200 else {}
    env.eq("first connection: no Early-Data upstream",
           [v for k, v in j.get("headers", []) if k.lower() == "early-data"], [], j)

    r = cl.request("/echo?n=2", fresh=True)
    check_h3(env, "resumed GET in 0-RTT", r, 200, connects=1)
    env.check("curl resumed the TLS session",
              any("reusing session" in ln for ln in r.log), r.log[-15:])
    j = r.json() if r.status == 200 else {}
    env.eq("GET in 0-RTT: Early-Data: 1 upstream",
           [v for k, v in j.get("headers", []) if k.lower() == "early-data"], ["1"], j)

    up = os.urandom(100000)
    sha = hashlib.sha256(up).hexdigest()
    r = cl.request("/upload?sha256=" + sha, body=up, fresh=True)
    check_h3(env, "POST in 0-RTT", r, 200, connects=1)
    j = r.json() if r.status == 200 else {}
    env.eq("POST in 0-RTT: the app gets POST", j.get("method"), "POST", r.summary())
    env.eq("POST in 0-RTT: exact body upstream", (j.get("body_len"), j.get("body_sha256")),
           (len(up), sha), r.summary())
    env.eq("POST in 0-RTT: held for the handshake, no Early-Data",
           [v for k, v in j.get("headers", []) if k.lower() == "early-data"], [], j)

    m = metrics(q)
    env.eq("handshakes: 3", m.get(M_HS_OK), 3.0)
    env.eq("resumed handshakes: 2", m.get(M_RESUMED), 2.0)
    env.eq("handshakes with 0-RTT accepted: 2", m.get(M_0RTT_OK), 2.0)
    env.eq("0-RTT requests forwarded at once: the GET", m.get(M_EARLY_ACCEPTED), 1.0)
    env.eq("0-RTT requests held: the POST", m.get(M_EARLY_HELD), 1.0)
    cl.close()  # the lines come when the streams end (see one_connection)
    acc = env.wait_access(q, timeout=10, path="/echo?n=2")
    env.eq("GET in 0-RTT: access log early_data=1", [a.get("early_data") for a in acc], ["1"],
           acc)
    acc = env.wait_access(q, timeout=10, path="/upload?sha256=" + sha)
    env.eq("POST held for the handshake: access log early_data=0",
           [a.get("early_data") for a in acc], ["0"], acc)


def main():
    with Env("curl_h3") as env:
        env.case("peer: libcurl 8.14 with HTTP/3", peer, env)
        be = env.backend()
        env.case("one connection, many requests", one_connection, env, be)
        env.case("multiplexed downloads", multiplexed, env, be)
        env.case("0-RTT and resumption", early_data, env, be)


if __name__ == "__main__":
    main()
