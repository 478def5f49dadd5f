#!/usr/bin/env python3
"""Errors as the client sees them: 502 (refused, garbage), 504 (connect
timeout, no response in time), 413 (request body over the limit), a reset
stream for an upstream body over its cap or cut short, H3_MESSAGE_ERROR for
a malformed request - and qrux keeps serving after each of them. Each
upstream failure leaves a warn line naming the upstream and the reason.

Limits in this file: connect timeout 1 s, request timeout 2 s, request body
1 MiB, upstream response body 1 MiB.
"""

import hashlib
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (H3_MESSAGE_ERROR, Blackhole, Env, free_port, pattern,  # noqa: E402
                     pattern_sha256, wait_until)

MiB = 1024 * 1024
H3_INTERNAL_ERROR = 0x102
LIMITS = {
    "upstream_connect_timeout_secs": 1,
    "upstream_request_timeout_secs": 2,
    "max_request_body_bytes": MiB,
    "max_upstream_response_body_bytes": MiB,
}


def error_body_ok(env, label, r, ports):
    body = r.body()
    env.check("%s: body is short (%d bytes)" % (label, len(body)), 0 < len(body) <= 512,
              body[:200])
    text = body.decode("latin-1").lower()
    leaks = [w for w in ["127.0.0.1", "errno", "econn", "refused by", "llhttp", "ngtcp2", ".c:"]
             + [str(p) for p in ports] if w in text]
    env.check("%s: body says nothing internal" % label, not leaks, "%r contains %r" % (body, leaks))


def still_serving(env, q, label):
    r = env.gtls(q, "/bytes/4321", timeout=20)
    env.check("after %s: qrux still serves (200, exact body)" % label,
              r.status() == 200 and r.sha() == pattern_sha256(4321), r.summary())


def bad_gateway(env, q, be, dead_port):
    t0 = time.monotonic()
    r = env.gtls(q, "/x", authority="refused.test:%d" % q.port, timeout=20)
    dt = time.monotonic() - t0
    env.eq("upstream refuses the connection -> 502", r.status(), 502, r.summary())
    env.check("502 for a refused connection comes fast (%.2fs < 1.5s)" % dt, dt < 1.5)
    error_body_ok(env, "502 refused", r, [dead_port])
    env.check("502 refused: stream closed cleanly", r.clean(0), r.summary())
    env.check("502 is in the access log", len(env.wait_access(q, status=502)) >= 1, q.log_tail())
    env.check("502 refused: a warn line with the upstream and the reason",
              "warn  upstream 127.0.0.1:%d: connect failed: connection refused" % dead_port
              in q.log_text(), q.log_tail())

    r = env.gtls(q, "/garbage", timeout=20)
    env.eq("upstream answers garbage (not HTTP) -> 502", r.status(), 502, r.summary())
    error_body_ok(env, "502 garbage", r, [be.port])
    want = "warn  upstream %s: bad response: Expected HTTP/ (HPE_INVALID_CONSTANT)" % be.addr
    env.check("502 garbage: a warn line with the upstream and the reason",
              wait_until(lambda: want in q.log_text(), 5), q.log_tail())
    still_serving(env, q, "502s")


def gateway_timeout(env, q, bh):
    t0 = time.monotonic()
    r = env.gtls(q, "/x", authority="blackhole.test:%d" % q.port, timeout=20)
    dt = time.monotonic() - t0
    env.eq("upstream connect times out -> 504", r.status(), 504, r.summary())
    env.check("504 connect timeout after ~1 s (took %.2fs, want 0.9..4)" % dt, 0.9 <= dt <= 4.0)
    error_body_ok(env, "504 connect", r, [bh.port])
    env.check("504 connect: a warn line with the upstream and the reason",
              "warn  upstream %s: connect failed: timed out after 1 s" % bh.addr in q.log_text(),
              q.log_tail())

    t0 = time.monotonic()
    r = env.gtls(q, "/hang", timeout=20)
    dt = time.monotonic() - t0
    env.eq("upstream accepts and never answers -> 504", r.status(), 504, r.summary())
    env.check("504 request timeout after ~2 s (took %.2fs, want 1.9..5)" % dt, 1.9 <= dt <= 5.0)
    error_body_ok(env, "504 hang", r, [])
    env.check("504 hang: a warn line with the upstream and the reason",
              re.search(r"warn  upstream 127\.0\.0\.1:\d+: request timeout after 2 s",
                        q.log_text()),
              q.log_tail())
    env.check("504s are in the access log", len(env.wait_access(q, status=504)) >= 2,
              q.log_tail())

    r = env.gtls(q, "/delay/600", timeout=20)
    env.eq("a response within the request timeout is not a 504", r.status(), 200, r.summary())
    env.eq("delayed body intact", r.body(), b"delayed 600\n")
    still_serving(env, q, "504s")


def too_large(env, q, be):
    over = os.path.join(env.dir, "over.bin")
    with open(over, "wb") as f:
        f.write(pattern(2 * MiB))
    be.reset()
    r = env.gtls(q, "/upload", method="POST", data=over, timeout=30)
    env.eq("request body 2 MiB over the 1 MiB limit -> 413", r.status(), 413, r.summary())
    error_body_ok(env, "413", r, [be.port])

    exact = os.path.join(env.dir, "exact.bin")
    data = pattern(MiB)[::-1]
    with open(exact, "wb") as f:
        f.write(data)
    r = env.gtls(q, "/upload", method="POST", data=exact, timeout=30)
    env.eq("request body of exactly the limit (1 MiB) -> 200", r.status(), 200, r.summary())
    try:
        doc = json.loads(r.body())
        env.eq("1 MiB upload arrives intact", doc["body_sha256"], hashlib.sha256(data).hexdigest())
    except ValueError:
        env.check("1 MiB upload: JSON answer", False, r.body()[:200])
    still_serving(env, q, "413")


def response_over_cap(env, q):
    for path in ("/bytes/%d" % (2 * MiB), "/chunked/%d" % (2 * MiB), "/close/%d" % (2 * MiB)):
        r = env.gtls(q, path, timeout=30)
        got = len(r.body())
        env.check("upstream body 2 MiB over the 1 MiB cap (%s): the client does not get it all "
                  "(got %d bytes)" % (path, got), got < 2 * MiB, r.summary())
        env.check("upstream body over the cap (%s): the stream is reset, not closed cleanly"
                  % path, r.status() != 200 or not r.clean(0), r.summary())
        env.eq("upstream body over the cap (%s): reset with H3_INTERNAL_ERROR (README)" % path,
               r.closed.get(0), H3_INTERNAL_ERROR, r.summary())
    r = env.gtls(q, "/bytes/%d" % MiB, timeout=30)
    env.eq("upstream body of exactly the cap (1 MiB) passes: status", r.status(), 200,
           r.summary())
    env.eq("upstream body of exactly the cap passes: sha256", r.sha(), pattern_sha256(MiB))
    env.check("upstream body of exactly the cap passes: clean close", r.clean(0), r.summary())
    still_serving(env, q, "body over the cap")


def broken_responses(env, q):
    r = env.gtls(q, "/truncate/100000", timeout=20)
    env.check("upstream closes before Content-Length is reached: the client does not see a "
              "complete response", not (r.status() == 200 and r.clean(0)
                                        and len(r.body()) == 100000), r.summary())
    env.check("truncated response: stream is not closed cleanly", not r.clean(0), r.summary())

    r = env.gtls(q, "/badchunk", timeout=20)
    env.check("upstream sends a broken chunk: stream is not closed cleanly (or 502)",
              r.status() == 502 or not r.clean(0), r.summary())
    still_serving(env, q, "broken upstream responses")


def malformed_requests(env, q, be):
    be.reset()
    # RFC 9114 4.4: CONNECT carries neither :scheme nor :path; gtlsclient
    # sends both, so this request is malformed.
    r = env.gtls(q, "/echo", method="CONNECT", timeout=20)
    env.check("malformed request (CONNECT with :path/:scheme) is not answered 200",
              r.status() != 200, r.summary())
    env.eq("malformed request -> stream error H3_MESSAGE_ERROR", r.closed.get(0),
           H3_MESSAGE_ERROR, r.summary())
    still_serving(env, q, "malformed CONNECT")

    # A method that is not a token, carrying CRLF: must never reach the
    # backend as an injected header or a second request.
    r = env.gtls(q, "/echo", method="GET /smuggled HTTP/1.1\r\nX-Injected: 1\r\n\r\nGET",
                 timeout=20)
    env.check("method with CR LF is not answered 200", r.status() != 200, r.summary())
    env.check("method with CR LF: stream error or 400",
              r.status() == 400 or r.closed.get(0) == H3_MESSAGE_ERROR, r.summary())
    s = be.stats()
    env.check("method with CR LF: the backend never saw /smuggled",
              "/smuggled" not in s["paths"], s)
    r = env.gtls(q, "/echo", method="G T", timeout=20)
    env.check("method with a space is not answered 200", r.status() != 200, r.summary())
    env.check("empty :method is rejected", env.gtls(q, "/echo", method="", timeout=20).status()
              != 200)
    still_serving(env, q, "malformed requests")


def main():
    with Env("errors") as env:
        be = env.backend()
        bh = Blackhole()
        dead = free_port("tcp")  # nothing listens there
        q = env.qrux(limits=LIMITS, routes=[
            ("refused.test", "127.0.0.1:%d" % dead),
            ("blackhole.test", bh.addr),
            ("*", be.addr),
        ])
        try:
            env.case("502", bad_gateway, env, q, be, dead)
            env.case("504", gateway_timeout, env, q, bh)
            env.case("413", too_large, env, q, be)
            env.case("upstream body over the cap", response_over_cap, env, q)
            env.case("broken upstream responses", broken_responses, env, q)
            env.case("malformed requests", malformed_requests, env, q, be)
        finally:
            bh.close()
        env.check("qrux still running", q.alive(), q.log_tail())


if __name__ == "__main__":
    main()
