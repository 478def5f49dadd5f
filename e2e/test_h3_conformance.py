#!/usr/bin/env python3
"""HTTP/3 and QPACK error handling (RFC 9114, RFC 9204), the cases the
public h3spec suite checks, sent by e2e/h3probe in raw mode: nghttp3 is
not used on the client side, the streams carry exactly the bytes below (a
control stream, QPACK streams, request streams as a broken client writes
them).

Each case asserts what the RFC requires:
  conn CODES    the connection is closed with one of these application
                error codes (a connection error);
  stream CODE   the request stream is reset (or STOP_SENDING) with CODE, or
                answered 400, and a request after it on the same connection
                gets 200 (a stream error only);
  ok            the bytes are ignored: a request after them gets 200.
After all of them qrux still serves a normal request.
"""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Env, run  # noqa: E402

H3_NO_ERROR = 0x100
H3_STREAM_CREATION_ERROR = 0x103
H3_CLOSED_CRITICAL_STREAM = 0x104
H3_FRAME_UNEXPECTED = 0x105
H3_FRAME_ERROR = 0x106
H3_ID_ERROR = 0x108
H3_SETTINGS_ERROR = 0x109
H3_MISSING_SETTINGS = 0x10A
H3_MESSAGE_ERROR = 0x10E
QPACK_DECOMPRESSION_FAILED = 0x200
QPACK_ENCODER_STREAM_ERROR = 0x201


def varint(n):
    if n < 64:
        return bytes([n])
    if n < 16384:
        return (0x4000 | n).to_bytes(2, "big")
    return (0x80000000 | n).to_bytes(4, "big")


def frame(ftype, payload):
    return varint(ftype) + varint(len(payload)) + payload


def prefixed(n, bits, flags=0):
    """QPACK prefixed integer (RFC 7541 5.1) with |flags| in the first byte."""
    top = (1 << bits) - 1
    if n < top:
        return bytes([flags | n])
    out = [flags | top]
    n -= top
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def lit_name_ref(static_index, value):
    """Literal field line with a static name reference (RFC 9204 4.5.4)."""
    v = value.encode()
    return prefixed(static_index, 4, 0x50) + prefixed(len(v), 7) + v


def lit_name(name, value):
    """Literal field line with a literal name (RFC 9204 4.5.6)."""
    n, v = name.encode(), value.encode()
    return prefixed(len(n), 3, 0x20) + n + prefixed(len(v), 7) + v


def indexed_static(i):
    return prefixed(i, 6, 0xC0)


GET, POST, HTTPS, SLASH_PATH, AUTHORITY, PATH = 17, 20, 23, 1, 0, 1


def fields(method=GET, path="/bytes/10", extra=b"", before=b""):
    return (b"\x00\x00" + before + indexed_static(method) + indexed_static(HTTPS) +
            lit_name_ref(PATH, path) + lit_name_ref(AUTHORITY, "localhost") + extra)


def headers(block):
    return frame(0x01, block)


REQ = headers(fields())
CONTROL = frame(0x00, b"")[:0] + b"\x00" + frame(0x04, b"")  # type 0, empty SETTINGS


def h(b):
    return b.hex()


CASES = []


def case(name, args, expect):
    CASES.append((name, args, expect))


# -- control stream (RFC 9114 6.2.1, 7.2.4)
case("control: a second SETTINGS frame", ["--uni", h(CONTROL + frame(0x04, b""))],
     ("conn", (H3_FRAME_UNEXPECTED,)))
case("control: DATA", ["--uni", h(CONTROL + frame(0x00, b"a"))], ("conn", (H3_FRAME_UNEXPECTED,)))
case("control: HEADERS", ["--uni", h(CONTROL + frame(0x01, b"\x00\x00"))],
     ("conn", (H3_FRAME_UNEXPECTED,)))
case("control: the first frame is not SETTINGS", ["--uni", h(b"\x00" + frame(0x0D, b"\x00"))],
     ("conn", (H3_MISSING_SETTINGS,)))
case("control: the stream closed", ["--uni", h(CONTROL) + "!"],
     ("conn", (H3_CLOSED_CRITICAL_STREAM,)))
case("control: a second control stream", ["--uni", h(CONTROL), "--uni", h(CONTROL)],
     ("conn", (H3_STREAM_CREATION_ERROR,)))
for t, n in ((0x02, "PRIORITY"), (0x06, "PING"), (0x08, "WINDOW_UPDATE"),
             (0x09, "CONTINUATION")):
    case("control: HTTP/2 frame type 0x%02x (%s)" % (t, n), ["--uni", h(CONTROL + frame(t, b""))],
         ("conn", (H3_FRAME_UNEXPECTED,)))
case("control: a malformed SETTINGS (an identifier without its value)",
     ["--uni", h(b"\x00" + frame(0x04, b"\x01"))], ("conn", (H3_FRAME_ERROR, H3_SETTINGS_ERROR)))
case("control: an HTTP/2 setting (0x02) in SETTINGS",
     ["--uni", h(b"\x00" + frame(0x04, b"\x02\x00"))], ("conn", (H3_SETTINGS_ERROR,)))
case("control: MAX_PUSH_ID decreasing",
     ["--uni", h(CONTROL + frame(0x0D, b"\x0a") + frame(0x0D, b"\x05"))], ("conn", (H3_ID_ERROR,)))
case("control: an unknown frame type is ignored",
     ["--uni", h(CONTROL + frame(0x21, b"xyz")), "--bidi", h(REQ)], ("ok",))

# -- unidirectional streams (6.2)
case("uni: a second QPACK encoder stream",
     ["--uni", h(CONTROL), "--uni", "02", "--uni", "02"], ("conn", (H3_STREAM_CREATION_ERROR,)))
case("uni: a second QPACK decoder stream",
     ["--uni", h(CONTROL), "--uni", "03", "--uni", "03"], ("conn", (H3_STREAM_CREATION_ERROR,)))
case("uni: a push stream from a client", ["--uni", h(CONTROL), "--uni", "0100"],
     ("conn", (H3_STREAM_CREATION_ERROR,)))
case("uni: an unknown stream type is ignored",
     ["--uni", h(CONTROL), "--uni", "21abcd", "--bidi", h(REQ)], ("ok",))

# -- request streams (4.1, 7.1, 7.2)
case("request: DATA before HEADERS",
     ["--uni", h(CONTROL), "--bidi", h(frame(0x00, b"a") + REQ)], ("conn", (H3_FRAME_UNEXPECTED,)))
TRAILERS = headers(b"\x00\x00" + lit_name("x-t", "1"))
case("request: DATA after trailers",
     ["--uni", h(CONTROL), "--bidi", h(headers(fields(POST, "/upload")) + frame(0x00, b"abc") +
                                       TRAILERS + frame(0x00, b"d"))],
     ("conn", (H3_FRAME_UNEXPECTED,)))
case("request: a truncated frame at the end of the stream",
     ["--uni", h(CONTROL), "--bidi", h(b"\x01\x0a\x00\x00\xd1")], ("conn", (H3_FRAME_ERROR,)))
case("request: SETTINGS on a request stream",
     ["--uni", h(CONTROL), "--bidi", h(frame(0x04, b"") + REQ)], ("conn", (H3_FRAME_UNEXPECTED,)))
case("request: MAX_PUSH_ID on a request stream",
     ["--uni", h(CONTROL), "--bidi", h(frame(0x0D, b"\x00") + REQ)],
     ("conn", (H3_FRAME_UNEXPECTED,)))
case("request: HTTP/2 frame type 0x02 on a request stream",
     ["--uni", h(CONTROL), "--bidi", h(frame(0x02, b"") + REQ)], ("conn", (H3_FRAME_UNEXPECTED,)))
case("request: an unknown frame type before HEADERS is ignored",
     ["--uni", h(CONTROL), "--bidi", h(frame(0x21, b"zz") + REQ)], ("ok",))

# -- QPACK (RFC 9204 2.2, 4.3)
cap = b"\x02" + prefixed(1 << 20, 5, 0x20)  # Set Dynamic Table Capacity: 1 MiB
case("qpack: an encoder-stream capacity above what was allowed",
     ["--uni", h(CONTROL), "--uni", h(cap), "--bidi", h(REQ)],
     ("conn", (QPACK_ENCODER_STREAM_ERROR,)))
case("qpack: a static index beyond the table",
     ["--uni", h(CONTROL), "--bidi", h(headers(b"\x00\x00" + indexed_static(120)))],
     ("conn", (QPACK_DECOMPRESSION_FAILED,)))
case("qpack: a dynamic reference while the table is empty",
     ["--uni", h(CONTROL), "--bidi", h(headers(b"\x00\x00\x80"))],
     ("conn", (QPACK_DECOMPRESSION_FAILED,)))

# -- malformed messages are stream errors (4.1.2)
for name, blk in (
        ("an uppercase field name", fields(extra=lit_name("X-Up", "1"))),
        ("a pseudo-header after a regular field",
         b"\x00\x00" + indexed_static(GET) + lit_name("x-a", "b") + indexed_static(HTTPS) +
         lit_name_ref(PATH, "/") + lit_name_ref(AUTHORITY, "localhost")),
        ("a connection-specific field", fields(extra=lit_name("connection", "close"))),
        ("no :path", b"\x00\x00" + indexed_static(GET) + indexed_static(HTTPS) +
         lit_name_ref(AUTHORITY, "localhost")),
        ("an unknown pseudo-header", fields(extra=lit_name(":foo", "bar"))),
):
    case("message: " + name, ["--uni", h(CONTROL), "--bidi", h(headers(blk)), "--bidi", h(REQ)],
         ("stream", H3_MESSAGE_ERROR))


def parse(out):
    """stdout of h3probe -> dict: conn (code or None), per bidi stream the
    frames it received and how it closed, resets/stops per stream."""
    res = {"conn": None, "data": {}, "close": {}, "reset": {}, "open": {}}
    for ln in out.splitlines():
        m = re.match(r"conn-close 0x([0-9a-f]+) (\w+)", ln)
        if m:
            res["conn"] = (int(m.group(1), 16), m.group(2))
        m = re.match(r"raw-open (\d+) (\d+)", ln)
        if m:
            res["open"][int(m.group(1))] = int(m.group(2))
        m = re.match(r"bidi-data (\d+) ([0-9a-f]+)", ln)
        if m:
            res["data"].setdefault(int(m.group(1)), b"")
            res["data"][int(m.group(1))] += bytes.fromhex(m.group(2))
        m = re.match(r"bidi-close (\d+) 0x([0-9a-f]+)", ln)
        if m:
            res["close"][int(m.group(1))] = int(m.group(2), 16)
        m = re.match(r"raw-(?:reset|stop) (\d+) 0x([0-9a-f]+)", ln)
        if m:
            res["reset"].setdefault(int(m.group(1)), set()).add(int(m.group(2), 16))
    return res


def read_varint(b, i):
    first = b[i]
    n = 1 << (first >> 6)
    v = first & 0x3F
    for k in range(1, n):
        v = (v << 8) | b[i + k]
    return v, i + n


def status_of(data):
    """The :status of the first HEADERS frame in |data| (qrux encodes its
    responses with the static table only: 200 is index 25, 400 index 29)."""
    i = 0
    while data and i < len(data):
        t, i = read_varint(data, i)
        n, i = read_varint(data, i)
        payload = data[i:i + n]
        i += n
        if t == 0x01 and len(payload) >= 3:
            return {0xD9: 200, 0xDD: 400, 0xDB: 404}.get(payload[2], "0x%02x" % payload[2])
    return None


def main():
    with Env("h3_conformance") as env:
        be = env.backend()
        q = env.qrux(routes=[("*", be.addr)])
        probe = os.environ.get("H3PROBE_BIN")
        if not probe:
            raise RuntimeError("H3PROBE_BIN is not set (CTest sets it)")
        for name, args, expect in CASES:
            def one(name=name, args=args, expect=expect):
                rc, so, se = run([probe, "--timeout", "8", "127.0.0.1", str(q.port)] + args, 20)
                out = so.decode(errors="replace")
                r = parse(out)
                detail = out[-600:] + se.decode(errors="replace")[-300:]
                bidis = [r["open"][k] for k in sorted(r["open"]) if r["open"][k] % 4 == 0]
                if expect[0] == "conn":
                    env.check("%s: connection error %s" % (name, "/".join(hex(c) for c in expect[1])),
                              r["conn"] is not None and r["conn"][0] in expect[1] and
                              r["conn"][1] == "app", detail)
                elif expect[0] == "ok":
                    env.eq(name + ": no connection error", r["conn"], None, detail)
                    last = bidis[-1] if bidis else None
                    env.eq(name + ": the request after it gets 200", status_of(r["data"].get(last)),
                           200, detail)
                elif expect[0] == "stream":
                    bad, good = bidis[0], bidis[-1]
                    got = r["reset"].get(bad, set())
                    env.check(name + ": a stream error H3_MESSAGE_ERROR (or 400) on that stream",
                              expect[1] in got or status_of(r["data"].get(bad)) == 400, detail)
                    env.eq(name + ": ... not a connection error", r["conn"], None, detail)
                    env.eq(name + ": the next request on the connection gets 200",
                           status_of(r["data"].get(good)), 200, detail)
            env.case(name, one)

        def still():
            rc, so, se = run([probe, "--timeout", "8", "127.0.0.1", str(q.port), "--uni",
                              h(CONTROL), "--bidi", h(REQ)], 20)
            env.eq("after every case: a normal request gets 200",
                   status_of(parse(so.decode())["data"].get(0)), 200, so.decode()[-300:])
        env.case("still serving", still)
        env.check("qrux still running", q.alive())


if __name__ == "__main__":
    main()
