#!/usr/bin/env python3
"""test_malformed.py - malformed HTTP/3 requests (RFC 9114 §4.1.2).

gtlsclient cannot send a malformed request, so this file drives e2e/h3probe
(built next to qrux; CTest passes its path in H3PROBE_BIN), which sends the
fields it is given byte for byte. For every malformed request a user must
see a stream error H3_MESSAGE_ERROR (0x10e), never a 2xx; the connection
must survive it (a valid GET on the same connection afterwards gets 200), and
a malformed request must not reach the backend. Other clients are served
meanwhile and qrux runs on at the end.

What a streaming proxy cannot promise: a Content-Length that disagrees with
the DATA frames is only known once the DATA arrives, after the request head
may already have gone upstream. For those cases the backend must not be left
holding the half request (nothing in flight there afterwards).

Fields with characters RFC 9110 forbids (CR, LF, NUL, a space in a name) are
also malformed per §4.1.2, but nghttp3 (0.8 and 1.8 alike) drops such a field before qrux
sees it (NGHTTP3_ERR_REMOVE_HTTP_HEADER) and passes the rest on; qrux cannot
tell. Those cases assert what matters for safety: the field never reaches the
backend and the connection survives.
"""

import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (H3_MESSAGE_ERROR, H3_NO_ERROR, Env, pattern, pattern_sha256,  # noqa: E402
                     run, wait_until)

ALSO_GET = "/bytes/100"  # the valid request sent after each malformed one


def probe_bin():
    b = os.environ.get("H3PROBE_BIN")
    if not b:  # by hand: the probe is built next to qrux
        b = os.path.join(os.path.dirname(os.environ.get("QRUX_BIN", "")), "h3probe")
    if not os.access(b, os.X_OK):
        raise RuntimeError("h3probe not found (H3PROBE_BIN=%r): build the h3probe target" % b)
    return b


class Response:
    """What h3probe printed for one request."""

    def __init__(self):
        self.statuses = []
        self.headers = []
        self.sha = None
        self.length = None
        self.reset = None  # RESET_STREAM error code from the server
        self.stop = None  # STOP_SENDING error code from the server
        self.close = None  # the code the stream closed with

    def status(self):
        final = [s for s in self.statuses if not s.startswith("1")]
        return int(final[-1]) if final else None


class ProbeResult:
    def __init__(self, rc, out, err):
        self.rc = rc
        self.out = out
        self.err = err
        self.reqs = {}
        self.conn_close = None  # (code, "app"|"transport")
        self.timeout = False
        cur = Response()
        for ln in out.splitlines():
            word, _, rest = ln.partition(" ")
            if word == "request":
                cur = self.reqs.setdefault(int(rest), Response())
            elif word == "status":
                cur.statuses.append(rest)
            elif word == "header":
                k, _, v = rest.partition(": ")
                cur.headers.append((k, v))
            elif word == "body-sha256":
                cur.sha, n = rest.split()
                cur.length = int(n)
            elif word == "stream-reset":
                cur.reset = int(rest, 16)
            elif word == "stop-sending":
                cur.stop = int(rest, 16)
            elif word == "stream-close":
                cur.close = int(rest, 16)
            elif word == "conn-close":
                code, kind = rest.split()[:2]
                self.conn_close = (int(code, 16), kind)
            elif word == "timeout":
                self.timeout = True

    def req(self, n):
        return self.reqs.get(n, Response())

    def summary(self):
        return "rc=%s out=%r err=%r" % (self.rc, self.out[-600:], self.err[-300:])


def h3probe(q, fields, body=None, data_file=None, also_get=ALSO_GET, out=None, timeout=15):
    cmd = [probe_bin(), "127.0.0.1", str(q.port), "--timeout", str(timeout)]
    for f in fields:
        cmd += ["-H", f]
    if body is not None:
        cmd += ["--body", body]
    if data_file:
        cmd += ["-d", data_file]
    if out:
        cmd += ["-o", out]
    if also_get:
        cmd += ["--also-get", also_get]
    rc, o, e = run(cmd, timeout=timeout + 10)
    return ProbeResult(rc, o.decode("utf-8", "replace"), e.decode("utf-8", "replace"))


def fields_for(q, method="GET", path="/bytes/10"):
    return [":method: " + method, ":scheme: https", ":authority: localhost:%d" % q.port,
            ":path: " + path]


def check_survived(env, name, r):
    """The connection took the malformed request and still serves."""
    env.check("%s: connection not closed" % name, r.conn_close is None, r.summary())
    a = r.req(2)
    env.check("%s: valid GET on the same connection afterwards -> 200, exact body" % name,
              a.status() == 200 and a.sha == pattern_sha256(100) and a.close == H3_NO_ERROR,
              r.summary())


# ---------------------------------------------------------------------------
# cases


def header_cases(q):
    """(name, fields, unique paths the backend must never see). Every request
    here is malformed by its fields alone (RFC 9114 §4.1.2, §4.2, §4.3.1)."""
    a = ":authority: localhost:%d" % q.port
    m, s = ":method: GET", ":scheme: https"

    def p(slug):
        return "/echo/m-" + slug

    return [
        ("uppercase field name", [m, s, a, ":path: " + p("upper"), "X-Upper: 1"],
         [p("upper")]),
        ("uppercase pseudo-header name", [m, s, a, ":Path: " + p("upper-pseudo")],
         [p("upper-pseudo")]),
        ("connection field", [m, s, a, ":path: " + p("conn"), "connection: close"],
         [p("conn")]),
        ("keep-alive field", [m, s, a, ":path: " + p("ka"), "keep-alive: timeout=5"],
         [p("ka")]),
        ("proxy-connection field", [m, s, a, ":path: " + p("pc"), "proxy-connection: close"],
         [p("pc")]),
        ("transfer-encoding field", [m, s, a, ":path: " + p("te-chunked"),
                                     "transfer-encoding: chunked"], [p("te-chunked")]),
        ("upgrade field", [m, s, a, ":path: " + p("upgrade"), "upgrade: websocket"],
         [p("upgrade")]),
        ("te other than trailers", [m, s, a, ":path: " + p("te-gzip"), "te: gzip"],
         [p("te-gzip")]),
        ("missing :method", [s, a, ":path: " + p("no-method")], [p("no-method")]),
        ("missing :scheme", [m, a, ":path: " + p("no-scheme")], [p("no-scheme")]),
        ("missing :path", [m, s, a], []),
        ("missing :authority and host", [m, s, ":path: " + p("no-authority")],
         [p("no-authority")]),
        ("duplicated :path", [m, s, a, ":path: " + p("dup-path-1"), ":path: " + p("dup-path-2")],
         [p("dup-path-1"), p("dup-path-2")]),
        ("duplicated :method", [m, s, a, m, ":path: " + p("dup-method")], [p("dup-method")]),
        ("duplicated :authority", [m, s, a, a, ":path: " + p("dup-authority")],
         [p("dup-authority")]),
        ("pseudo-header after a regular field",
         [m, s, "user-agent: h3probe", a, ":path: " + p("late-pseudo")], [p("late-pseudo")]),
        ("unknown pseudo-header", [m, s, a, ":path: " + p("unknown"), ":foo: bar"],
         [p("unknown")]),
        ("response pseudo-header :status in a request",
         [m, s, a, ":path: " + p("status"), ":status: 200"], [p("status")]),
        ("empty :path", [m, s, a, ":path: "], []),
        ("content-length not a number", [m, s, a, ":path: " + p("cl-nan"),
                                         "content-length: ten"], [p("cl-nan")]),
        ("two different content-length fields",
         [":method: POST", s, a, ":path: " + p("cl-two"), "content-length: 1",
          "content-length: 2"], [p("cl-two")]),
    ]


def malformed_headers(env, q, be):
    be.reset()
    for name, fields, paths in header_cases(q):
        r = h3probe(q, fields)
        first = r.req(1)
        env.check("%s: probe got an outcome" % name, r.rc == 0 and not r.timeout, r.summary())
        st = first.status()
        env.check("%s: not answered 2xx" % name, st is None or st >= 300, r.summary())
        env.eq("%s: stream error H3_MESSAGE_ERROR (RESET_STREAM 0x10e)" % name,
               first.reset, H3_MESSAGE_ERROR, r.summary())
        check_survived(env, name, r)
        seen = be.stats()["paths"]
        env.check("%s: the backend never saw the request" % name,
                  not any(pth in seen for pth in paths), seen)


def malformed_bodies(env, q, be):
    """Content-Length disagreeing with the DATA frames (RFC 9114 §4.1.2)."""
    a = ":authority: localhost:%d" % q.port
    cases = [
        ("content-length above the DATA sent", "cl-over", "10", "hello"),
        ("content-length below the DATA sent", "cl-under", "2", "hello"),
        ("content-length 0 with DATA", "cl-zero", "0", "hello"),
        ("content-length without any DATA", "cl-nodata", "5", None),
    ]
    for name, slug, cl, body in cases:
        path = "/echo/m-" + slug
        r = h3probe(q, [":method: POST", ":scheme: https", a, ":path: " + path,
                        "content-length: " + cl], body=body)
        first = r.req(1)
        env.check("%s: probe got an outcome" % name, r.rc == 0 and not r.timeout, r.summary())
        st = first.status()
        env.check("%s: not answered 2xx" % name, st is None or st >= 300, r.summary())
        env.eq("%s: stream error H3_MESSAGE_ERROR (RESET_STREAM 0x10e)" % name,
               first.reset, H3_MESSAGE_ERROR, r.summary())
        check_survived(env, name, r)
        idle = wait_until(lambda: be.stats()["inflight"].get(path, 0) == 0, 5)
        env.check("%s: the backend is not left holding the request" % name, idle, be.stats())


def invalid_characters(env, q, be):
    """nghttp3 drops these fields silently (see the docstring): the field
    must not reach the backend, nothing may be injected, the connection
    survives."""
    a = ":authority: localhost:%d" % q.port
    cases = [
        ("CR LF in a field value", "x-a: 1\r\nx-injected: yes", "x-injected"),
        ("control byte 0x01 in a field value", "x-a: 1\x01x", "x-a"),
        ("space in a field name", "x a: 1", "x a"),
    ]
    for name, field, marker in cases:
        out = os.path.join(env.dir, "invalid.json")
        r = h3probe(q, [":method: GET", ":scheme: https", a, ":path: /echo/invalid", field],
                    out=out)
        env.check("%s: probe got an outcome" % name, r.rc == 0 and not r.timeout, r.summary())
        first = r.req(1)
        if first.status() == 200:
            with open(out, "rb") as f:
                doc = json.loads(f.read() or b"{}")
            names = [k.lower() for k, _ in doc.get("headers", [])]
            env.check("%s: the field never reaches the backend" % name,
                      marker not in names and "x-a" not in names, doc.get("headers"))
        else:
            env.eq("%s: rejected as malformed (H3_MESSAGE_ERROR)" % name, first.reset,
                   H3_MESSAGE_ERROR, r.summary())
        check_survived(env, name, r)


def valid_requests(env, q):
    """The same tool with well-formed requests: proves the failures above are
    qrux's answers, not the probe's."""
    n = 3 * 1024 * 1024  # over the probe's initial stream window: flow control works
    r = h3probe(q, fields_for(q, path="/bytes/%d" % n), timeout=30)
    first = r.req(1)
    env.eq("valid GET /bytes/3MiB -> 200", first.status(), 200, r.summary())
    env.eq("valid GET: exact body", (first.sha, first.length), (pattern_sha256(n), n))
    env.eq("valid GET: stream closed cleanly", first.close, H3_NO_ERROR, r.summary())
    check_survived(env, "valid GET", r)

    size = 300001
    fd, data = tempfile.mkstemp(prefix="upload-", dir=env.dir)
    with os.fdopen(fd, "wb") as f:
        f.write(pattern(size))
    out = os.path.join(env.dir, "echo.json")
    r = h3probe(q, fields_for(q, "POST", "/echo/upload") + ["content-length: %d" % size],
                data_file=data, out=out, timeout=30)
    env.eq("valid POST with content-length -> 200", r.req(1).status(), 200, r.summary())
    with open(out, "rb") as f:
        doc = json.loads(f.read() or b"{}")
    env.eq("valid POST: the backend got the exact body",
           (doc.get("body_len"), doc.get("body_sha256")), (size, pattern_sha256(size)))

    # Lowercase names, te: trailers, Host instead of :authority: all valid.
    r = h3probe(q, fields_for(q, path="/echo/te") + ["te: trailers", "x-mixed: MiXeD Value"],
                out=out)
    env.eq("te: trailers is allowed -> 200", r.req(1).status(), 200, r.summary())
    with open(out, "rb") as f:
        doc = json.loads(f.read() or b"{}")
    env.check("field values reach the backend unchanged",
              ["x-mixed", "MiXeD Value"] in [[k.lower(), v] for k, v in doc.get("headers", [])],
              doc.get("headers"))
    r = h3probe(q, [":method: GET", ":scheme: https", ":path: /bytes/10", "host: localhost"])
    env.eq("host instead of :authority -> 200", r.req(1).status(), 200, r.summary())


def field_counts(env, q):
    """Up to 128 fields a request or a response carries go through whole (the
    exchange holds 32 itself, more move to the request's arena); past 128 a
    request gets 431 and a response 502."""
    a = ":authority: localhost:%d" % q.port
    base = [":method: GET", ":scheme: https", a]
    for n in (31, 33, 100, 128):
        out = os.path.join(env.dir, "fields.json")
        extra = ["x-f-%d: v%d" % (i, i) for i in range(1, n + 1)]
        r = h3probe(q, base + [":path: /echo/fields%d" % n] + extra, out=out, also_get=None)
        first = r.req(1)
        doc = {}
        if first.status() == 200:
            with open(out, "rb") as f:
                doc = json.loads(f.read() or b"{}")
        got = [(k, v) for k, v in doc.get("headers", []) if k.lower().startswith("x-f-")]
        env.eq("%d request fields: 200, every one at the backend in order" % n,
               (first.status(), got), (200, [("x-f-%d" % i, "v%d" % i) for i in range(1, n + 1)]),
               r.summary())
    r = h3probe(q, base + [":path: /echo/fields129"] +
                ["x-f-%d: v%d" % (i, i) for i in range(1, 130)], also_get=None)
    env.eq("129 request fields: 431", r.req(1).status(), 431, r.summary())
    for n in (33, 110):
        r = h3probe(q, base + [":path: /fields/%d" % n], also_get=None)
        got = [(k, v) for k, v in r.req(1).headers if k.startswith("x-f-")]
        env.eq("%d response fields: 200, every one to the client in order" % n,
               (r.req(1).status(), got),
               (200, [("x-f-%d" % i, "v%d" % i) for i in range(1, n + 1)]), r.summary())
    r = h3probe(q, base + [":path: /fields/140"], also_get=None)
    env.eq("140 response fields: 502", r.req(1).status(), 502, r.summary())


def main():
    with Env("malformed") as env:
        be = env.backend()
        q = env.qrux(routes=[("*", be.addr)])
        # Another client downloads throughout: malformed requests elsewhere
        # must not disturb it.
        n = 256 * 1024
        other = env.gtls_start(q, "/slow/%d?ms=40&chunk=4096" % n, timeout=120)
        env.case("valid requests", valid_requests, env, q)
        env.case("malformed fields", malformed_headers, env, q, be)
        env.case("content-length against DATA", malformed_bodies, env, q, be)
        env.case("invalid characters", invalid_characters, env, q, be)
        env.case("field counts", field_counts, env, q)
        res = other.finish()
        env.eq("another client's download during all this -> 200", res.status(), 200,
               res.summary())
        env.eq("another client's download: exact body", res.sha(), pattern_sha256(n))
        env.check("qrux still running", q.alive(), q.log_tail())
        r = env.gtls(q, "/bytes/1000", timeout=20)
        env.check("a new client is served at the end", r.status() == 200 and
                  r.sha() == pattern_sha256(1000), r.summary())


if __name__ == "__main__":
    main()
