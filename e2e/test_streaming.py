#!/usr/bin/env python3
"""Streaming: large bodies in every framing (Content-Length, chunked,
close-delimited) byte-exact, concurrent streams on one connection, a body
that reaches the client while the upstream is still sending, a slow stream
that does not hold up a fast one, a large upload, and flat memory (VmHWM)
through a 100 MiB response.
"""

import hashlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Env, pattern, pattern_pieces, pattern_sha256, wait_until  # noqa: E402

MiB = 1024 * 1024


def big_framings(env, q):
    n = 20 * MiB
    for path in ("/bytes/%d" % n, "/chunked/%d" % n, "/close/%d" % n):
        r = env.gtls(q, path, timeout=90)
        env.eq("20 MiB %s: status" % path, r.status(), 200, r.summary())
        env.eq("20 MiB %s: length" % path, len(r.body()), n)
        env.eq("20 MiB %s: sha256" % path, r.sha(), pattern_sha256(n))
        env.check("20 MiB %s: clean close" % path, r.clean(0), r.summary())
    hwm = q.vmhwm_kib()
    env.check("qrux VmHWM after three 20 MiB responses < 64 MiB (got %d KiB)" % hwm,
              hwm < 64 * 1024)


def concurrent(env, q):
    sizes = [200000 + i for i in range(6)]
    paths = ["/bytes/%d" % s for s in sizes[:3]] + ["/chunked/%d" % s for s in sizes[3:]]
    r = env.gtls(q, paths, timeout=60)
    for i, (p, s) in enumerate(zip(paths, sizes)):
        sid = 4 * i
        env.eq("concurrent %s: status" % p, r.status(sid), 200, r.summary(sid))
        env.eq("concurrent %s: sha256" % p, r.sha(str(s)), pattern_sha256(s))
        env.check("concurrent %s: clean close" % p, r.clean(sid), r.summary(sid))


def streams_as_it_arrives(env, q):
    n = 100000
    run = env.gtls_start(q, "/slow/%d?ms=200&chunk=10000" % n, timeout=30)
    # The backend needs ~1.8 s for the whole body; bytes must show up early.
    got = wait_until(lambda: run.downloaded() > 0, 1.5)
    early = run.downloaded()
    running = run.proc.poll() is None
    r = run.finish()
    env.check("slow upstream: first body bytes reach the client before the upstream is done "
              "(had %d of %d bytes at ~1.5 s, client still running=%s)" % (early, n, running),
              bool(got) and early < n and running)
    env.eq("slow upstream: status", r.status(), 200, r.summary())
    env.eq("slow upstream: sha256", r.sha(), pattern_sha256(n))
    env.check("slow upstream: took about as long as the upstream (%.2fs >= 1.5s)" % r.elapsed,
              r.elapsed >= 1.5)

    r = env.gtls(q, ["/slow/50000?ms=250&chunk=10000", "/bytes/1000"], timeout=30)
    order = list(r.closed)
    env.eq("slow and fast stream on one connection: both 200", [r.status(0), r.status(4)],
           [200, 200], r.summary())
    env.check("the fast stream finishes before the slow one (close order %r)" % order,
              order[:1] == [4], r.summary())
    env.eq("slow stream body intact", r.sha("50000?ms=250&chunk=10000"), pattern_sha256(50000))


def big_upload(env, q):
    size = 8 * MiB + 1
    path = os.path.join(env.dir, "up8.bin")
    data = pattern(size)[::-1]
    with open(path, "wb") as f:
        f.write(data)
    r = env.gtls(q, "/upload", method="PUT", data=path, timeout=90)
    env.eq("8 MiB upload: status", r.status(), 200, r.summary())
    try:
        doc = json.loads(r.body())
        env.eq("8 MiB upload: backend got the exact bytes", doc["body_sha256"],
               hashlib.sha256(data).hexdigest())
        env.eq("8 MiB upload: length", doc["body_len"], size)
        env.eq("8 MiB upload: method PUT", doc["method"], "PUT")
    except ValueError:
        env.check("8 MiB upload: JSON answer", False, r.body()[:200])


def flat_memory(env, qn):
    n = 100 * MiB
    t0 = time.monotonic()
    r = env.gtls(qn, "/huge.bin", timeout=180)
    env.eq("100 MiB via nginx: status", r.status(), 200, r.summary())
    env.eq("100 MiB via nginx: length", len(r.body()), n)
    env.eq("100 MiB via nginx: sha256", r.sha(), pattern_sha256(n))
    hwm = qn.vmhwm_kib()
    env.check("qrux VmHWM after a 100 MiB response < 64 MiB (got %d KiB, %.1fs)"
              % (hwm, time.monotonic() - t0), hwm < 64 * 1024)


def main():
    with Env("streaming") as env:
        be = env.backend()
        www = os.path.join(env.dir, "www")
        os.makedirs(www)
        with open(os.path.join(www, "huge.bin"), "wb") as f:
            for p in pattern_pieces(100 * MiB):
                f.write(p)
        ng = env.nginx(www)
        qb = env.qrux(routes=[("*", be.addr)])
        qn = env.qrux(routes=[("*", ng.addr)])
        env.case("large bodies in every framing", big_framings, env, qb)
        env.case("concurrent streams on one connection", concurrent, env, qb)
        env.case("bodies stream as they arrive", streams_as_it_arrives, env, qb)
        env.case("large upload", big_upload, env, qb)
        env.case("flat memory", flat_memory, env, qn)
        env.check("qrux still running", qb.alive() and qn.alive())


if __name__ == "__main__":
    main()
