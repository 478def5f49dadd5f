#!/usr/bin/env python3
"""Attacks on the QUIC front, each bounded in count and time, against the
real binary (a sanitizer build in make test's second tree). Every case
ends with a normal HTTP/3 request that must still be served, and prints
the bound it measured ("BOUND ...") for SECURITY.md.

- garbage: random datagrams, short-header packets for unknown connections,
  undecryptable Initials and unknown versions from 8 addresses. Bound: what
  comes back is smaller than what was sent (no amplification; every
  stateless reset shorter than its trigger), RSS and the log stay flat.
- odd connection IDs: an Initial whose DCID is shorter than 8 bytes is
  dropped (RFC 9000 §7.2), a 20-byte one is served, 21 bytes is dropped.
- Initial flood: ClientHellos from 100 forged loopback addresses that never
  finish. Bound: at most retry_handshakes_threshold handshakes are started,
  every later Initial gets a Retry, and a real client (gtlsclient) that
  follows the Retry is served during the flood.
- CRYPTO from the middle first: first Initials carrying only the second
  half of a ClientHello each get a Retry, count in qrux_quic_retry_total
  and not as failed handshakes, and give back their handshake slot.
- per-IP cap with colliding addresses: 127.0.0.1's bucket under the old
  unkeyed FNV-1a hash is shared by an address found in a second; half-open
  handshakes from it, or forged from 127.0.0.1 itself, no longer lock
  127.0.0.1 out (the cap counts proven addresses, keyed with SipHash).
- QPACK dynamic-table bomb: one 2,000-byte field sent 2,001 times through
  the dynamic table (h3probe --repeat: a small HEADERS frame that decodes
  to 4 MB). Bound: 431 from the field limits, RSS flat, the same
  connection serves the next request.
- HTTP/3 flow-control stall: a client that never opens its window again
  (h3probe --stall, kept alive by PINGs) on a 50 MB response. Bound: qrux
  sends at most the client's window plus its own 64 KiB stream window,
  holds RSS flat, serves others meanwhile, and frees the request when the
  client goes.
Raw packets come from e2e/quicraw.py, raw HTTP/3 from h3probe.
"""

import os
import random
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quicraw  # noqa: E402
from harness import (RSS_FACTOR, Env, free_port, scrape, run, wait_until,  # noqa: E402
                     yaml_str)

KiB = 1024
MiB = 1024 * 1024


def h3probe(port, path, *extra, timeout=10):
    """(exit code, stdout lines) of h3probe GET |path|."""
    cmd = [os.environ["H3PROBE_BIN"], "127.0.0.1", str(port), "-H", ":method: GET", "-H",
           ":scheme: https", "-H", ":authority: localhost", "-H", ":path: " + path]
    cmd += list(extra) + ["--timeout", str(timeout)]
    rc, out, err = run(cmd, timeout=timeout + 10)
    return rc, out.decode("utf-8", "replace").splitlines(), err.decode("utf-8", "replace")


def start(env, be, limits=None, **server):
    lines = ["  drain_delay_secs: 0"]
    for k, v in server.items():
        lines.append("  %s: %s" % (k, v))
    aport = free_port("tcp")
    lines.append("admin:\n  listen: %s" % yaml_str("127.0.0.1:%d" % aport))
    q = env.qrux(routes=[("*", be.addr)], workers=1, limits=limits,
                 extra_server="\n".join(lines) + "\n")
    q.admin_port = aport
    return q


def metrics(q):
    return scrape(q.admin_port)


M_RETRY = "qrux_quic_retry_total"
M_REFUSED = "qrux_quic_refused_total"
M_HS_FAIL = 'qrux_quic_handshakes_total{result="failure"}'


def vmrss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    return 0


def served(env, q, tag):
    r = env.gtls(q, "/bytes/1000", timeout=20)
    env.eq(tag + ": a normal HTTP/3 request is still served", (r.status(), len(r.body())),
           (200, 1000), r.summary())


# ---------------------------------------------------------------------------


def garbage(env, be):
    q = start(env, be)
    rng = random.Random(12)
    socks = [quicraw.udp_socket("127.0.0.%d" % (10 + i)) for i in range(8)]
    for s in socks:
        s.setblocking(False)
    sent = back = 0
    resets_too_big = 0
    rss0 = vmrss_kib(q.pid)
    lines0 = len(q.log_text().splitlines())
    n = 6000
    for i in range(n):
        kind = i % 4
        if kind == 0:
            d = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 1400)))
        elif kind == 1:  # short header for a connection nobody has
            d = bytes([0x40 | rng.getrandbits(6)]) + bytes(
                rng.getrandbits(8) for _ in range(rng.randint(20, 1300)))
        elif kind == 2:
            d = quicraw.garbage_initial(os.urandom(rng.randint(8, 20)), size=rng.randint(
                1200, 1400))
        else:  # an unknown version: Version Negotiation
            d = bytearray(quicraw.garbage_initial(os.urandom(8)))
            d[1:5] = struct.pack(">I", 0x0A1A2A3A + i)
            d = bytes(d)
        s = socks[i % len(socks)]
        s.sendto(d, ("127.0.0.1", q.port))
        sent += len(d)
        for r in socks:
            try:
                while True:
                    back += len(r.recv(65536))
            except BlockingIOError:
                pass
        if i % 500 == 0:
            time.sleep(0.01)
    time.sleep(0.5)
    for r in socks:
        r.settimeout(0.05)
        try:
            while True:
                back += len(r.recv(65536))
        except OSError:
            pass
        r.close()
    # Stateless resets one at a time, so each answer pairs with its trigger.
    rs = quicraw.udp_socket("127.0.0.20")
    resets = 0
    for size in range(30, 1300, 25):
        d = bytes([0x40 | rng.getrandbits(6)]) + os.urandom(size - 1)
        rs.sendto(d, ("127.0.0.1", q.port))
        for a in quicraw.answers(rs, 0.3):
            resets += 1
            if len(a.data) >= size:
                resets_too_big += 1
    rs.close()
    rss1 = vmrss_kib(q.pid)
    lines1 = len(q.log_text().splitlines())
    print("BOUND garbage: %d datagrams, %d bytes in, %d bytes back (%.2fx), RSS %+d KiB, "
          "%d log lines" % (n, sent, back, back / sent, rss1 - rss0, lines1 - lines0), flush=True)
    env.check("garbage: qrux survives %d garbage datagrams" % n, q.alive(), q.log_tail(5))
    env.check("garbage: less comes back than was sent (%d of %d bytes)" % (back, sent),
              back < sent)
    env.check("garbage: short-header packets for unknown connections get stateless resets (%d)"
              % resets, resets > 30)
    env.eq("garbage: no stateless reset as long as what provoked it", resets_too_big, 0)
    env.check("garbage: RSS grew by %d KiB (< %d MiB)" % (rss1 - rss0, 16 * RSS_FACTOR),
              rss1 - rss0 < 16384 * RSS_FACTOR)
    env.check("garbage: the log did not grow with the flood (%d lines)" % (lines1 - lines0),
              lines1 - lines0 < 50, q.log_tail(10))
    served(env, q, "garbage")


def odd_cids(env, be):
    q = start(env, be, retry="never")
    for dlen, want in ((0, False), (7, False), (8, True), (20, True), (21, False)):
        if dlen <= 20:
            s, dcid, got = quicraw.handshake_start(q.port, dcid=os.urandom(dlen), timeout=1.0)
        else:
            s = quicraw.udp_socket()
            d = bytearray(quicraw.initial(os.urandom(20), os.urandom(8)))
            # the same packet with a DCID length byte of 21 (one byte of the SCID
            # length field becomes CID): an invalid long header
            d[5] = 21
            s.sendto(bytes(d), ("127.0.0.1", q.port))
            got = quicraw.answers(s, 1.0)
        s.close()
        kinds = [a.kind for a in got]
        if want:
            env.check("DCID of %d bytes: the handshake goes on (server Initial with CRYPTO)"
                      % dlen, any(a.has_crypto() for a in got), kinds)
        else:
            env.eq("DCID of %d bytes: dropped without an answer" % dlen, kinds, [])
    # An SCID over 20 bytes is as invalid.
    s = quicraw.udp_socket()
    d = bytearray(quicraw.initial(os.urandom(8), os.urandom(20)))
    d[6 + 8] = 21
    s.sendto(bytes(d), ("127.0.0.1", q.port))
    env.eq("SCID of 21 bytes: dropped without an answer",
           [a.kind for a in quicraw.answers(s, 1.0)], [])
    s.close()
    served(env, q, "odd CIDs")


def initial_flood(env, be):
    threshold = 20
    q = start(env, be, retry="auto", limits={"retry_handshakes_threshold": threshold,
                                             "quic_handshake_timeout_secs": 10})
    m0 = metrics(q)
    socks = []
    started = retried = other = 0
    n = 300
    legit = None
    for i in range(n):
        src = "127.0.1.%d" % (1 + i % 100)
        s = quicraw.udp_socket(src)
        socks.append(s)
        s.sendto(quicraw.initial(os.urandom(8), os.urandom(8)), ("127.0.0.1", q.port))
        if i == n // 2:
            legit = env.gtls_start(q, "/bytes/1000", timeout=30)
    for s in socks:
        for a in quicraw.answers(s, 0.2):
            if a.kind == "retry":
                retried += 1
            elif a.kind == "initial":
                started += 1
                break  # retransmissions of the same handshake count once
            else:
                other += 1
    r = legit.finish()
    m1 = metrics(q)
    print("BOUND Initial flood: %d ClientHellos from 100 addresses -> %d handshakes started "
          "(threshold %d), %d Retry" % (n, started, threshold, retried), flush=True)
    env.check("Initial flood: at most retry_handshakes_threshold=%d handshakes started (%d)"
              % (threshold, started), started <= threshold)
    env.check("Initial flood: every other Initial got a Retry (%d of %d)" % (retried, n),
              retried >= n - threshold - 2)
    env.check("Initial flood: qrux_quic_retry_total counted them",
              m1.get(M_RETRY, 0) - m0.get(M_RETRY, 0) >= retried)
    env.eq("Initial flood: a real client following the Retry is served during the flood",
           (r.status(), len(r.body())), (200, 1000), r.summary())
    env.check("Initial flood: the client saw the Retry", "Retry" in r.log or "retry" in r.log,
              r.summary())
    for s in socks:
        s.close()
    served(env, q, "Initial flood")


def crypto_late(env, be):
    # First Initials that carry only the ClientHello's second half: each
    # gets a Retry (ngtcp2 cannot start from them), and the connection
    # state qrux made for it is returned: with room for one handshake,
    # a whole ClientHello afterwards still starts one without a Retry.
    q = start(env, be, retry="auto", limits={"retry_handshakes_threshold": 1})
    m0 = metrics(q)
    n = 5
    retried = 0
    for _ in range(n):
        scid = os.urandom(8)
        ch = quicraw.client_hello(scid)
        half = b"\x06" + quicraw.varint(len(ch) // 2) + quicraw.varint(len(ch) - len(ch) // 2)
        s = quicraw.udp_socket()
        s.sendto(quicraw.initial(os.urandom(8), scid, payload=half + ch[len(ch) // 2:]),
                 ("127.0.0.1", q.port))
        retried += sum(1 for a in quicraw.answers(s, 1.0) if a.kind == "retry")
        s.close()
    m1 = metrics(q)
    env.eq("CRYPTO from the middle first: each of %d Initials got one Retry" % n, retried, n)
    env.eq("CRYPTO from the middle first: qrux_quic_retry_total counted them",
           m1.get(M_RETRY, 0) - m0.get(M_RETRY, 0), n)
    env.eq("CRYPTO from the middle first: not counted as failed handshakes",
           m1.get(M_HS_FAIL, 0) - m0.get(M_HS_FAIL, 0), 0)
    s, dcid, got = quicraw.handshake_start(q.port, timeout=1.0)
    s.close()
    env.check("CRYPTO from the middle first: the handshake slot was returned (a whole "
              "ClientHello starts a handshake, threshold 1, no Retry)",
              any(a.has_crypto() for a in got) and all(a.kind != "retry" for a in got),
              [a.kind for a in got])
    served(env, q, "CRYPTO from the middle first")


def fnv_bucket(addr4):
    h = 2166136261
    for b in addr4:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h % 4096


def per_ip_collisions(env, be):
    victim = socket.inet_aton("127.0.0.1")
    want = fnv_bucket(victim)
    collider = None
    for host in range(2, 1 << 24):
        a = struct.pack(">I", 0x7F000000 | host)
        if fnv_bucket(a) == want:
            collider = socket.inet_ntoa(a)
            break
    env.check("an address sharing 127.0.0.1's old FNV bucket was found (%s)" % collider,
              collider is not None)
    cap = 4
    q = start(env, be, retry="never", limits={"max_quic_connections_per_ip": cap,
                                              "quic_handshake_timeout_secs": 10})
    m0 = metrics(q)
    held = []
    for src in (collider, "127.0.0.1"):
        for _ in range(2 * cap):
            s, dcid, got = quicraw.handshake_start(q.port, src=src, timeout=0.3)
            held.append(s)
            env.check("half-open handshake from %s started" % src,
                      any(a.has_crypto() for a in got), [a.kind for a in got])
    r = env.gtls(q, "/bytes/1000", timeout=20)
    env.eq("per-IP cap %d with %d half-open handshakes from a colliding address and %d forged "
           "from 127.0.0.1: 127.0.0.1 is still served" % (cap, 2 * cap, 2 * cap),
           (r.status(), len(r.body())), (200, 1000), r.summary())
    env.eq("no connection was refused", metrics(q).get(M_REFUSED, 0) - m0.get(M_REFUSED, 0), 0)
    print("BOUND per-IP cap: %d half-open handshakes from %s (old bucket of 127.0.0.1) and %d "
          "from 127.0.0.1 itself: the victim served" % (2 * cap, collider, 2 * cap), flush=True)
    for s in held:
        s.close()


def qpack_bomb(env, be):
    q = start(env, be)
    rss0 = vmrss_kib(q.pid)
    copies = 2000
    rc, out, err = h3probe(q.port, "/echo", "-H", "x-bomb: " + "a" * 2000, "--repeat",
                           str(copies), "--also-get", "/bytes/10")
    rss1 = vmrss_kib(q.pid)
    statuses = [ln for ln in out if ln.startswith("status ")]
    print("BOUND QPACK bomb: %d copies of a 2,000-byte field -> %s, RSS %+d KiB"
          % (copies + 1, statuses[:1], rss1 - rss0), flush=True)
    env.eq("QPACK bomb: the request is refused with 431, the next one on the same connection "
           "served", statuses, ["status 431", "status 200"], "\n".join(out[-12:]) + err[-300:])
    env.check("QPACK bomb: RSS grew by %d KiB (< %d MiB)" % (rss1 - rss0, 8 * RSS_FACTOR),
              rss1 - rss0 < 8192 * RSS_FACTOR)
    served(env, q, "QPACK bomb")


def flow_control_stall(env, be):
    q = start(env, be)
    rss0 = vmrss_kib(q.pid)
    size = 50 * MiB
    run_ = {}

    def stall():
        run_["r"] = h3probe(q.port, "/bytes/%d" % size, "--stall", timeout=8)

    t = threading.Thread(target=stall)
    t.start()
    time.sleep(3)
    r = env.gtls(q, "/bytes/1000", timeout=20)
    env.eq("flow-control stall: another client is served meanwhile", (r.status(), len(r.body())),
           (200, 1000), r.summary())
    rss_mid = vmrss_kib(q.pid)
    t.join(30)
    rc, out, err = run_["r"]
    got = [int(ln.split()[1]) for ln in out if ln.startswith("received ")]
    env.check("flow-control stall: the client stalled as asked (%s)" % got,
              len(got) == 1 and 0 < got[0] < size, "\n".join(out[-6:]) + err[-300:])
    acc = wait_until(lambda: q.access(path="/bytes/%d" % size), 5)
    sent = int(acc[0]["bytes_out"]) if acc else -1
    env.check("flow-control stall: the request is freed once the client is gone", bool(acc),
              q.log_tail(5))
    # h3probe opens 1 MiB per stream; qrux holds one 64 KiB window more.
    env.check("flow-control stall: qrux sent %d bytes of %d (<= the client's 1 MiB window + "
              "64 KiB)" % (sent, size), 0 < sent <= MiB + 64 * KiB + 16 * KiB)
    env.check("flow-control stall: RSS grew by %d KiB while stalled (< %d MiB)"
              % (rss_mid - rss0, 8 * RSS_FACTOR), rss_mid - rss0 < 8192 * RSS_FACTOR)
    print("BOUND HTTP/3 flow-control stall: %d of %d bytes sent, RSS %+d KiB, held until the "
          "client left" % (sent, size, rss_mid - rss0), flush=True)
    served(env, q, "flow-control stall")


def main():
    with Env("attacks_quic") as env:
        be = env.backend()
        env.case("garbage", garbage, env, be)
        env.case("odd connection IDs", odd_cids, env, be)
        env.case("Initial flood", initial_flood, env, be)
        env.case("CRYPTO from the middle first", crypto_late, env, be)
        env.case("per-IP cap with colliding addresses", per_ip_collisions, env, be)
        env.case("QPACK dynamic-table bomb", qpack_bomb, env, be)
        env.case("HTTP/3 flow-control stall", flow_control_stall, env, be)


if __name__ == "__main__":
    main()
