#!/usr/bin/env python3
"""Streaming: large bodies in every framing (Content-Length, chunked,
close-delimited) byte-exact, concurrent streams on one connection, a body
that reaches the client while the upstream is still sending, a slow stream
that does not hold up a fast one, a client that leaves mid-response (the
upstream connection is closed, not pooled), a large upload, and flat memory
(VmHWM) through a 100 MiB response and to a client with tiny windows.
"""

import hashlib
import json
import os
import subprocess
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


def client_goes_away(env, q, be):
    slow = "/slow/100000?ms=200&chunk=1000"  # 20 s of body if nobody stops it
    r = env.gtls(q, ["/delay/300", slow], timeout=20, exit_on="first")
    env.eq("client leaves mid-response: the short stream was served", r.status(0), 200,
           r.summary())
    env.eq("client leaves mid-response: the slow response had started", r.status(4), 200,
           r.summary(4))
    env.check("client leaves mid-response: the slow body was not complete",
              len(r.body(slow.rsplit("/", 1)[1])) < 100000, r.summary(4))
    gone = wait_until(lambda: "/slow/100000" not in be.stats()["inflight"], 5)
    env.check("client leaves mid-response: qrux closes the upstream connection (the backend "
              "stops sending within 5 s, not after 20 s)", gone, be.stats())
    shas = [env.gtls(q, "/bytes/5000", timeout=20).sha() for _ in range(4)]
    env.eq("after the abandoned response, pooled connections are clean (4 x exact body)",
           shas, [pattern_sha256(5000)] * 4)


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


def gso_uploads(env, q):
    """Uploads from a client that sends in UDP GSO bursts (bench/h3load): qrux
    asks for UDP_GRO, so the kernel may hand it a run of datagrams in one
    read, which it must split again. The backend hashes every body
    (?sha256=: 422 when it differs), so one misplaced datagram shows."""
    size = 3 * MiB + 7
    body = (b"abcdefghijklmnopqrstuvwxyz" * (size // 26 + 1))[:size]  # h3load's body
    url = "https://127.0.0.1:%d/upload?sha256=%s" % (q.port, hashlib.sha256(body).hexdigest())
    r = subprocess.run([os.environ["H3LOAD_BIN"], "--json", "-n", "12", "-c", "2", "-m", "3",
                        "-d", str(size), url], capture_output=True, timeout=180)
    try:
        doc = json.loads(r.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        doc = {}
    env.eq("12 uploads of 3 MiB in GSO bursts: all 200 with the exact bytes at the app",
           (doc.get("requests"), doc.get("status_2xx"), doc.get("errors")), (12, 12, 0),
           r.stderr.decode(errors="replace")[-300:])


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


def slow_reader(env, qn):
    # The client grants tiny flow-control windows while nginx sends as fast
    # as it can: qrux must stop reading the upstream instead of buffering.
    n = 30 * MiB
    r = env.gtls(qn, "/mid.bin", timeout=120,
                 extra=["--max-data=64K", "--max-stream-data-bidi-local=32K",
                        "--max-window=64K", "--max-stream-window=32K"])
    env.eq("30 MiB to a client with 32 KiB windows: status", r.status(), 200, r.summary())
    env.eq("30 MiB to a client with 32 KiB windows: sha256", r.sha(), pattern_sha256(n))
    hwm = qn.vmhwm_kib()
    env.check("qrux VmHWM with a slow-window client < 64 MiB (got %d KiB, %.1fs)"
              % (hwm, r.elapsed), hwm < 64 * 1024)


def main():
    with Env("streaming") as env:
        be = env.backend()
        www = os.path.join(env.dir, "www")
        os.makedirs(www)
        with open(os.path.join(www, "huge.bin"), "wb") as f:
            for p in pattern_pieces(100 * MiB):
                f.write(p)
        with open(os.path.join(www, "mid.bin"), "wb") as f:
            for p in pattern_pieces(30 * MiB):
                f.write(p)
        ng = env.nginx(www)
        qb = env.qrux(routes=[("*", be.addr)])
        # The default response cap (50 MiB) would cut the 100 MiB body.
        qn = env.qrux(routes=[("*", ng.addr)],
                      limits={"max_upstream_response_body_bytes": 200 * MiB})
        env.case("large bodies in every framing", big_framings, env, qb)
        env.case("concurrent streams on one connection", concurrent, env, qb)
        env.case("bodies stream as they arrive", streams_as_it_arrives, env, qb)
        env.case("client goes away mid-response", client_goes_away, env, qb, be)
        env.case("large upload", big_upload, env, qb)
        env.case("uploads in GSO bursts", gso_uploads, env, qb)
        env.case("flat memory", flat_memory, env, qn)
        env.case("flat memory with a slow-window client", slow_reader, env, qn)
        env.check("qrux still running", qb.alive() and qn.alive())


if __name__ == "__main__":
    main()
