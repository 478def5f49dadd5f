#!/usr/bin/env python3
"""Routing: SNI, :authority (port stripped, case-insensitive), *.suffix
(longest first), the catch-all, 421 when nothing matches, and round-robin
spread over several upstreams.

gtlsclient sends :authority from the URI and SNI from its HOST argument when
that is a DNS name (none for an IP literal) or from --sni.
"""

import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Env  # noqa: E402


def routed(env, q, bes, authority, sni=None, want=None, name=None):
    """Requests /id with |authority| (and SNI) and checks which backend
    answered (want: index into bes) or that the answer is 421 (want=421)."""
    r = env.gtls(q, "/id", authority=authority, sni=sni, timeout=20)
    label = name or "authority=%s sni=%s" % (authority, sni)
    if want == 421:
        env.eq("%s -> 421" % label, r.status(), 421, r.summary())
        body = r.body()
        env.check("%s: 421 body is short (%d bytes)" % (label, len(body)),
                  0 < len(body) <= 512, body[:200])
        env.check("%s: 421 stream closed cleanly" % label, r.clean(0), r.summary())
        return r
    env.eq("%s -> 200" % label, r.status(), 200, r.summary())
    env.eq("%s -> backend #%d" % (label, want), r.body().decode("latin-1", "replace"),
           str(bes[want].port))
    return r


def rules(env, q, bes):
    p = q.port
    routed(env, q, bes, "a.test:%d" % p, want=0)
    routed(env, q, bes, "A.TEST:%d" % p, want=0, name="authority is case-insensitive (A.TEST)")
    routed(env, q, bes, "a.test", want=0, name="authority without a port")
    routed(env, q, bes, "b.test:%d" % p, want=1,
           name="match written mixed-case in the config (B.Test) matches b.test")
    routed(env, q, bes, "x.wild.test:%d" % p, want=2, name="*.wild.test matches x.wild.test")
    routed(env, q, bes, "a.b.wild.test:%d" % p, want=2,
           name="*.wild.test matches a.b.wild.test")
    routed(env, q, bes, "x.deep.wild.test:%d" % p, want=3,
           name="longest suffix first: *.deep.wild.test beats *.wild.test")
    routed(env, q, bes, "wild.test:%d" % p, want=421,
           name="*.wild.test does not match wild.test itself")
    routed(env, q, bes, "nomatch.test:%d" % p, want=421, name="no route")
    routed(env, q, bes, "[::1]:%d" % p, want=421, name="IPv6 literal authority, no route")
    lines = env.wait_access(q, status=421)
    env.check("421s are in the access log", len(lines) >= 1, q.log_tail())

    # SNI first.
    routed(env, q, bes, "nomatch.test:%d" % p, sni="a.test", want=0,
           name="SNI a.test routes although :authority matches nothing")
    routed(env, q, bes, "a.test:%d" % p, sni="b.test", want=1,
           name="exact SNI b.test wins over exact :authority a.test")
    routed(env, q, bes, "nomatch.test:%d" % p, sni="y.wild.test", want=2,
           name="SNI y.wild.test matches the suffix rule")
    routed(env, q, bes, "a.test:%d" % p, sni="nomatch.test", want=0,
           name="unknown SNI falls back to :authority")


def round_robin(env, q, bes):
    n = 300
    r = env.gtls(q, "/id", n=n, authority="rr.test:%d" % q.port, timeout=60, download=False)
    st = r.statuses()
    env.eq("round-robin: %d responses" % n, len(st), n, r.summary())
    env.check("round-robin: all 200", all(s == 200 for s in st.values()),
              collections.Counter(st.values()))
    ports = collections.Counter(r.header("x-backend-port", sid) for sid in st)
    want = {str(bes[i].port) for i in (0, 1, 2)}
    env.eq("round-robin: exactly the 3 configured upstreams answered", set(ports), want,
           dict(ports))
    env.check("round-robin: spread roughly equal (each %d..%d of %d): %s"
              % (n // 3 * 7 // 10, n // 3 * 13 // 10, n, dict(ports)),
              all(n // 3 * 7 // 10 <= ports.get(p, 0) <= n // 3 * 13 // 10 for p in want),
              dict(ports))

    # Sequential requests over new connections also rotate (per worker).
    seen = collections.Counter()
    for _ in range(12):
        r = env.gtls(q, "/id", authority="rr.test:%d" % q.port, timeout=20)
        seen[r.body().decode("latin-1", "replace")] += 1
    env.check("round-robin: 12 sequential connections reach all 3 upstreams",
              set(seen) == want, dict(seen))


def catch_all(env, bes):
    q = env.qrux(routes=[("a.test", bes[1].addr), ("*", bes[0].addr)])
    routed(env, q, bes, "nomatch.test:%d" % q.port, want=0, name="catch-all * takes the rest")
    routed(env, q, bes, "a.test:%d" % q.port, want=1, name="exact match beats the catch-all")
    routed(env, q, bes, "localhost:%d" % q.port, sni="localhost", want=0,
           name="SNI localhost with no rule falls to the catch-all")


def main():
    with Env("routing") as env:
        bes = [env.backend() for _ in range(4)]
        q = env.qrux(routes=[
            ("a.test", bes[0].addr),
            ("B.Test", bes[1].addr),
            ("*.wild.test", bes[2].addr),
            ("*.deep.wild.test", bes[3].addr),
            ("rr.test", [bes[0].addr, bes[1].addr, bes[2].addr]),
        ])
        env.case("routing rules", rules, env, q, bes)
        env.case("round-robin", round_robin, env, q, bes)
        env.case("catch-all", catch_all, env, bes)
        env.check("qrux still running", q.alive(), q.log_tail())


if __name__ == "__main__":
    main()
