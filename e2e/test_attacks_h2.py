#!/usr/bin/env python3
"""test_attacks_h2.py - hostile HTTP/2 clients against the HTTPS listener.

Raw frames (attacklib) and python3-h2. Each attack is bounded in count and
time; afterwards a normal request must still be served over HTTP/3, HTTP/2
and HTTP/1.1, and the defence's counter (qrux_defence_total) must have
moved. What each bounds:

  rapid reset       1,500 HEADERS+RST_STREAM pairs on one connection:
                    GOAWAY(ENHANCE_YOUR_CALM) after the reset budget (200),
                    no stream processed after it, and no upstream connect
                    for a stream reset in the same read (connects/reset ~0)
  reload mid-head   HEADERS held open (no END_HEADERS) while a reload
                    shrinks the routes, then CONTINUATION: answered by the
                    old snapshot's route (was a heap write out of bounds)
  CONTINUATION      one HEADERS then 10,000 CONTINUATION frames: GOAWAY
  HPACK bomb        one 4 KB field indexed 12,000 times (48 MB decoded):
                    431, RSS growth < 32 MiB
  SETTINGS/PING     100,000 PINGs and SETTINGS, none of the acks read:
                    the connection is closed, RSS growth < 32 MiB
  stream-ID misuse  even, decreasing and zero stream IDs: GOAWAY
                    PROTOCOL_ERROR
  huge length       content-length above INT64_MAX: reset or 413
  idle bodies       400 POST streams of unknown length that send nothing:
                    < 16 KiB each (no 64 KiB window before the first byte)
  HTTP/3 reset      a client cancels its upload (RESET_STREAM): the exchange
                    ends at once (499), not at the request timeout
  zero window       20 streams of 1 MiB to a client that never opens its
                    window: each stream reset after client_idle_timeout_secs,
                    the upstream connections released
"""

import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attacklib import (CANCEL, CONTINUATION, DATA, END_HEADERS, END_STREAM,  # noqa: E402
                       ENHANCE_YOUR_CALM, HEADERS, PING, PROTOCOL_ERROR, RST_STREAM,
                       WINDOW_UPDATE, Proxy, defence, frame, goaway_code, h2_get,
                       h2_open, hpack_str, open_fds, parse_frames, read_all, request_block,
                       rss_kib, serves_all, settings, status_kib)
from harness import RSS_FACTOR, Blackhole, Env, run, wait_until  # noqa: E402

LIMITS = {"client_idle_timeout_secs": 2, "upstream_request_timeout_secs": 10}


def goaway_seen(d):
    return goaway_code(parse_frames(d)) is not None


def send_quietly(t, data):
    try:
        t.sendall(data)
        return True
    except OSError:
        return False  # the server closed first: what a flood should get


def rapid_reset(env, p, be):
    n = 1500
    auth = "localhost:%d" % p.tport
    before = len(p.q.access(proto="h2"))
    acc0 = be.stats()["accepted"]
    flood0 = defence(p, "h2_reset_flood")
    blk = request_block(auth, "/bytes/10")
    t = h2_open(p.tport)
    buf = b"".join(frame(HEADERS, END_HEADERS | END_STREAM, sid, blk) +
                   frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL))
                   for sid in range(1, 2 * n, 2))
    send_quietly(t, buf)
    data, _ = read_all(t, 15, until=goaway_seen)
    t.close()
    code = goaway_code(parse_frames(data))
    env.eq("rapid reset: GOAWAY(ENHANCE_YOUR_CALM)", code, ENHANCE_YOUR_CALM)
    time.sleep(0.5)
    seen = len(p.q.access(proto="h2")) - before
    env.check("rapid reset: at most the budget (200) + 1 streams processed of %d" % n,
              0 < seen <= 201, "processed %d" % seen)
    connects = be.stats()["accepted"] - acc0 - 1  # minus the /__stats connection
    print("rapid reset: %d streams processed, %d upstream connects" % (seen, connects))
    env.check("rapid reset: upstream connects per reset stream <= 0.02",
              connects <= 0.02 * seen, "%d connects for %d streams" % (connects, seen))
    env.check("rapid reset: qrux_defence_total{defence=h2_reset_flood} moved",
              defence(p, "h2_reset_flood") >= flood0 + 1)
    env.check("rapid reset: reset_before_upstream counted",
              defence(p, "reset_before_upstream") >= seen - connects - 1)


def continuation_flood(env, p):
    perr0 = defence(p, "h2_protocol_error")
    t = h2_open(p.tport)
    blk = request_block("localhost:%d" % p.tport)
    first = frame(HEADERS, END_STREAM, 1, blk[:2])
    send_quietly(t, first + frame(CONTINUATION, 0, 1, b"") * 10000)
    data, closed = read_all(t, 10, until=goaway_seen)
    t.close()
    env.check("CONTINUATION flood: GOAWAY or the connection closed", goaway_seen(data) or closed,
              data[:80])
    env.check("CONTINUATION flood: counted as h2_protocol_error",
              defence(p, "h2_protocol_error") >= perr0 + 1)


def hpack_bomb(env, p):
    rss0 = rss_kib(p.pid)
    t = h2_open(p.tport)
    auth = "localhost:%d" % p.tport
    # a literal with incremental indexing (0x40), new name: dynamic index 62
    big = b"\x40" + b"\x06x-bomb" + b"\x7f" + bytes([(4000 - 127) & 0x7F | 0x80,
                                                     (4000 - 127) >> 7]) + b"a" * 4000
    refs = b"\xbe" * 12000  # indexed field 62, 12,000 times
    blk = request_block(auth) + big + refs
    frames = b""
    sid = 1
    frames += frame(HEADERS, END_STREAM, sid, blk[:16000])
    rest = blk[16000:]
    while rest:
        piece, rest = rest[:16000], rest[16000:]
        frames += frame(CONTINUATION, END_HEADERS if not rest else 0, sid, piece)
    send_quietly(t, frames)
    data, closed = read_all(t, 10, until=lambda d: any(
        f[0] in (HEADERS, RST_STREAM) and f[2] == 1 or f[0] == 7 for f in parse_frames(d)))
    t.close()
    fr = parse_frames(data)
    answered = [f for f in fr if f[2] == 1 and f[0] in (HEADERS, RST_STREAM)]
    env.check("HPACK bomb: stream answered (431) or reset, or connection GOAWAY",
              answered or goaway_seen(data), [f[:3] for f in fr])
    if answered and answered[0][0] == HEADERS:
        env.check("HPACK bomb: 431", b"431" in answered[0][3], answered[0][3][:20])
    grow = rss_kib(p.pid) - rss0
    print("HPACK bomb: RSS growth %d KiB" % grow)
    env.check("HPACK bomb: RSS growth < 32 MiB", grow < 32 * 1024 * RSS_FACTOR, "%d KiB" % grow)


def settings_ping_flood(env, p):
    rss0 = rss_kib(p.pid)
    perr0 = defence(p, "h2_protocol_error")
    t = h2_open(p.tport)
    unit = frame(PING, 0, 0, b"12345678") + settings([(3, 100)])
    sent = 0
    end = time.monotonic() + 10
    t.settimeout(2)
    while sent < 100000 and time.monotonic() < end:
        if not send_quietly(t, unit * 1000):
            break
        sent += 1000
    data, closed = read_all(t, 10)
    t.close()
    print("SETTINGS/PING flood: %d sent before the connection ended" % sent)
    env.check("SETTINGS/PING flood: connection closed", closed, "sent %d" % sent)
    env.check("SETTINGS/PING flood: counted as h2_protocol_error",
              defence(p, "h2_protocol_error") >= perr0 + 1)
    grow = rss_kib(p.pid) - rss0
    env.check("SETTINGS/PING flood: RSS growth < 32 MiB", grow < 32 * 1024 * RSS_FACTOR,
              "%d KiB" % grow)


def stream_id_misuse(env, p):
    auth = "localhost:%d" % p.tport
    blk = request_block(auth, "/bytes/10")
    cases = [
        ("even stream ID", frame(HEADERS, END_HEADERS | END_STREAM, 2, blk)),
        ("decreasing stream ID", frame(HEADERS, END_HEADERS | END_STREAM, 5, blk) +
         frame(HEADERS, END_HEADERS | END_STREAM, 3, blk)),
        ("HEADERS on stream 0", frame(HEADERS, END_HEADERS | END_STREAM, 0, blk)),
        ("DATA on an idle stream", frame(DATA, END_STREAM, 7, b"x")),
        ("WINDOW_UPDATE of 0", frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0))),
    ]
    for name, raw in cases:
        perr0 = defence(p, "h2_protocol_error")
        t = h2_open(p.tport)
        send_quietly(t, raw)
        data, _ = read_all(t, 10, until=goaway_seen)
        t.close()
        env.eq("%s: GOAWAY(PROTOCOL_ERROR)" % name, goaway_code(parse_frames(data)),
               PROTOCOL_ERROR)
        env.check("%s: counted" % name, defence(p, "h2_protocol_error") >= perr0 + 1)


def zero_window(env, p, be):
    n = 20
    be.reset()
    stalled0 = defence(p, "client_stalled")
    fds0 = open_fds(p.pid)
    t = h2_open(p.tport, window=0)  # SETTINGS_INITIAL_WINDOW_SIZE 0: no DATA may come
    auth = "localhost:%d" % p.tport
    blk = request_block(auth, "/bytes/1048576")
    t.sendall(b"".join(frame(HEADERS, END_HEADERS | END_STREAM, sid, blk)
                       for sid in range(1, 2 * n, 2)))
    ok = wait_until(lambda: be.stats()["active"] >= n, 10)
    env.check("zero window: %d upstream connections while stalled" % n, ok, be.stats())
    t0 = time.monotonic()
    # every stream is reset once it has been stalled for client_idle_timeout_secs
    data, closed = read_all(t, 20, until=lambda d: len(
        [f for f in parse_frames(d) if f[0] == RST_STREAM]) >= n)
    took = time.monotonic() - t0
    resets = [f for f in parse_frames(data) if f[0] == RST_STREAM]
    env.eq("zero window: every stalled stream reset", len(resets), n)
    print("zero window: %d streams reset after %.1f s" % (len(resets), took))
    env.check("zero window: upstream connections released",
              wait_until(lambda: be.stats()["active"] <= 1, 10), be.stats())
    env.check("zero window: descriptors back (<= before + 2)",
              wait_until(lambda: open_fds(p.pid) <= fds0 + 2, 10), "%d -> %d" % (fds0, open_fds(p.pid)))
    env.check("zero window: client_stalled counted %d" % n,
              defence(p, "client_stalled") >= stalled0 + n)
    t.close()


def reload_mid_head(env, be):
    """A request head open across a reload that shrinks the routes."""
    routes = [("r%d.test" % i, be.addr) for i in range(60)]
    p = Proxy(env, routes)
    auth = "r59.test"
    t = h2_open(p.tport)
    blk = request_block(auth, "/bytes/100")
    split = len(blk) - 10  # :authority is last: its tail goes in the CONTINUATION
    t.sendall(frame(HEADERS, END_STREAM, 1, blk[:split]))
    time.sleep(0.3)
    path = p.q.config_path
    text = open(path).read()
    head = text[:text.index("routes:")]
    with open(path + ".tmp", "w") as f:
        f.write(head + 'routes:\n  - match: "only.test"\n    upstream: "%s"\n' % be.addr)
    os.replace(path + ".tmp", path)
    adopted = wait_until(lambda: h2_get(p.tport, "r1.test", "/bytes/10")[0] == 421, 15)
    env.check("reload mid-head: the new routes are in force (421)", adopted)
    t.sendall(frame(CONTINUATION, END_HEADERS, 1, blk[split:]))
    data, _ = read_all(t, 10, until=lambda d: any(
        f[0] == DATA and f[1] & END_STREAM for f in parse_frames(d)))
    t.close()
    fr = parse_frames(data)
    body = b"".join(f[3] for f in fr if f[0] == DATA and f[2] == 1)
    env.check("reload mid-head: answered by the old snapshot's route (100 body bytes)",
              len(body) == 100, [f[:3] for f in fr])
    env.check("reload mid-head: qrux alive", p.q.alive(), p.q.log_tail())
    st, _, b = h2_get(p.tport, "only.test", "/bytes/10")
    env.eq("reload mid-head: a new request on the new route", st, 200)
    p.q.stop()


def huge_content_length(env, p):
    """Content-Length above INT64_MAX: nghttp2 refuses it itself (stream
    reset) or qrux answers 413; never a request forwarded without a length."""
    auth = "localhost:%d" % p.tport
    for v in ("9223372036854775808", "99999999999999999999999"):
        blk = request_block(auth, "/echo", "POST") + b"\x0f\x0d" + hpack_str(v)  # content-length
        t = h2_open(p.tport)
        t.sendall(frame(HEADERS, END_HEADERS, 1, blk))
        data, _ = read_all(t, 10, until=lambda d: any(f[0] in (HEADERS, RST_STREAM) and f[2] == 1
                                                      for f in parse_frames(d)))
        t.close()
        fr = [f for f in parse_frames(data) if f[2] == 1]
        env.check("content-length %s: 413 or stream reset" % v, fr and (
            (fr[0][0] == HEADERS and b"413" in fr[0][3]) or fr[0][0] == RST_STREAM),
            [f[:3] for f in parse_frames(data)])


def idle_bodies(env, bh):
    """400 request streams with a body of unknown length that never comes:
    no body window each (it comes with the first byte)."""
    p = Proxy(env, [("*", "127.0.0.1:%d" % bh.port)],
              limits={"upstream_connect_timeout_secs": 30, "upstream_request_timeout_secs": 30})
    auth = "localhost:%d" % p.tport
    blk = request_block(auth, "/upload", "POST")
    data0 = status_kib(p.pid, "VmData")
    conns = []
    for c in range(4):
        t = h2_open(p.tport)
        t.sendall(b"".join(frame(HEADERS, END_HEADERS, sid, blk) for sid in range(1, 200, 2)))
        conns.append(t)
    time.sleep(1.0)
    grow = status_kib(p.pid, "VmData") - data0
    print("idle bodies: VmData growth %d KiB for 400 streams" % grow)
    env.check("idle bodies: < 16 KiB of memory per stream (was a 64 KiB window)",
              grow < 400 * 16 * RSS_FACTOR, "%d KiB" % grow)
    for t in conns:
        t.close()
    p.q.stop()


def h3_client_reset(env, p, be):
    """An HTTP/3 client cancels its upload with RESET_STREAM: the exchange
    ends at once (499, the upstream connection closed), not at the request
    timeout (10 s here)."""
    probe = os.environ.get("H3PROBE_BIN") or os.path.join(
        os.path.dirname(os.environ["QRUX_BIN"]), "h3probe")
    be.reset()
    t0 = time.monotonic()
    cmd = [probe, "127.0.0.1", str(p.uport), "--timeout", "8", "--reset-ms", "500",
           "-H", ":method: POST", "-H", ":scheme: https", "-H", ":authority: localhost",
           "-H", ":path: /upload?h3reset", "--body", "abc"]
    rc, out, err = run(cmd, timeout=20)
    ended = wait_until(lambda: p.q.access(path="/upload?h3reset"), 5)
    took = time.monotonic() - t0
    log = p.q.access(path="/upload?h3reset")
    env.check("HTTP/3 RESET_STREAM: the exchange ended (499) before the request timeout",
              ended and log[0].get("status") == "499" and took < 6,
              "%.1f s %r %s" % (took, log, out.decode(errors="replace")))
    env.check("HTTP/3 RESET_STREAM: the upstream connection released",
              wait_until(lambda: be.stats()["active"] <= 1, 5), be.stats())


def main():
    with Env("attacks_h2") as env:
        be = env.backend()
        p = Proxy(env, [("*", be.addr)], limits=LIMITS)
        env.case("rapid reset", rapid_reset, env, p, be)
        serves_all(env, p, "after rapid reset")
        env.case("CONTINUATION flood", continuation_flood, env, p)
        env.case("HPACK bomb", hpack_bomb, env, p)
        env.case("SETTINGS/PING flood", settings_ping_flood, env, p)
        env.case("stream-ID misuse", stream_id_misuse, env, p)
        serves_all(env, p, "after the floods")
        env.case("huge content-length", huge_content_length, env, p)
        env.case("HTTP/3 RESET_STREAM", h3_client_reset, env, p, be)
        env.case("zero window", zero_window, env, p, be)
        serves_all(env, p, "after the zero-window stall")
        env.check("qrux alive after every attack", p.q.alive(), p.q.log_tail())
        env.case("reload mid-head", reload_mid_head, env, be)
        bh = Blackhole()
        env.case("idle bodies", idle_bodies, env, bh)
        bh.close()


if __name__ == "__main__":
    main()
