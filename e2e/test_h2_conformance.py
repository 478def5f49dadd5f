#!/usr/bin/env python3
"""HTTP/2 conformance of the HTTPS listener (RFC 9113, RFC 7541), one case
per h2spec section that a proxy can get wrong, sent as raw frames over TLS
(ALPN h2) with Debian's python3-hpack encoding the field blocks.

Each case opens a fresh connection, sends what a broken or hostile client
sends, and asserts what the RFC requires:
  goaway CODE   a GOAWAY with that error code (a connection error), then
                the connection closes;
  rst CODE      RST_STREAM with that code on the case's stream (a stream
                error), and the connection still answers a PING;
  ok            no error: the connection answers a PING (and, where the case
                says, a request gets its 200).
The RFC section is in each case's name. After all of them, a normal h2
request still gets 200 with the exact body: no case left the proxy broken.
"""

import os
import socket
import ssl
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Env, free_port, pattern  # noqa: E402

import hpack  # noqa: E402  (Debian's python3-hpack)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9
END_STREAM, ACK, END_HEADERS, PADDED, PRIO_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM = 0x4, 0x5, 0x6, 0x7
CANCEL, COMPRESSION_ERROR = 0x8, 0x9

MAX_CONCURRENT = 100  # qrux's SETTINGS_MAX_CONCURRENT_STREAMS (QX_H2_MAX_STREAMS)


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid) + payload


def settings(*pairs, flags=0):
    return frame(SETTINGS, flags, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def req_fields(path="/bytes/10", method="GET", extra=()):
    return [(":method", method), (":scheme", "https"), (":authority", "localhost"),
            (":path", path)] + list(extra)


class H2:
    """A raw HTTP/2 client connection to qrux's TCP listener."""

    def __init__(self, port, preface=True):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.t = ctx.wrap_socket(s, server_hostname="localhost")
        assert self.t.selected_alpn_protocol() == "h2", self.t.selected_alpn_protocol()
        self.buf = b""
        self.closed = False
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()  # one per connection: the server's table
        self.frames = []  # every frame received: (type, flags, sid, payload)
        if preface:
            self.send(PREFACE + settings())
            # The server's SETTINGS first; acknowledge it.
            f = self.next_frame(5)
            assert f and f[0] == SETTINGS and not f[1] & ACK, f
            self.send(settings(flags=ACK))

    def send(self, data):
        try:
            self.t.sendall(data)
        except OSError:
            self.closed = True

    def block(self, fields):
        return self.enc.encode(fields)

    def headers(self, sid, fields, flags=END_HEADERS | END_STREAM):
        self.send(frame(HEADERS, flags, sid, self.block(fields)))

    def next_frame(self, timeout):
        end = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + n:
                    ftype, flags = self.buf[3], self.buf[4]
                    sid = struct.unpack(">I", self.buf[5:9])[0] & 0x7FFFFFFF
                    payload = self.buf[9:9 + n]
                    self.buf = self.buf[9 + n:]
                    f = (ftype, flags, sid, payload)
                    if ftype == HEADERS:  # decoded as they come: the table is per connection
                        f = f + (self.dec.decode(payload),)
                    self.frames.append(f)
                    return f
            left = end - time.monotonic()
            if left <= 0 or self.closed:
                return None
            self.t.settimeout(left)
            try:
                data = self.t.recv(65536)
            except socket.timeout:
                return None
            except (OSError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = True
                return None
            self.buf += data

    def wait_for(self, pred, timeout=5):
        """Frames until one satisfies |pred| (returned) or the connection
        closes / |timeout| passes (None). SETTINGS are acknowledged."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            f = self.next_frame(end - time.monotonic())
            if f is None:
                return None
            if f[0] == SETTINGS and not f[1] & ACK:
                self.send(settings(flags=ACK))
            if pred(f):
                return f
        return None

    def goaway(self, timeout=5):
        f = self.wait_for(lambda f: f[0] == GOAWAY, timeout)
        if f is None:
            return None
        return struct.unpack(">II", f[3][:8])[1]  # (last stream id, error code)

    def rst(self, sid, timeout=5):
        f = self.wait_for(lambda f: (f[0] == RST_STREAM and f[2] == sid) or f[0] == GOAWAY,
                          timeout)
        if f is None:
            return None
        if f[0] == GOAWAY:
            return ("goaway", struct.unpack(">II", f[3][:8])[1])
        return struct.unpack(">I", f[3])[0]

    def ping_ok(self, timeout=5):
        data = os.urandom(8)
        self.send(frame(PING, 0, 0, data))
        f = self.wait_for(lambda f: (f[0] == PING and f[1] & ACK) or f[0] == GOAWAY, timeout)
        return f is not None and f[0] == PING and f[3] == data

    def response(self, sid, timeout=10):
        """(status, body) of stream |sid|, read until END_STREAM."""
        status, body = None, b""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            f = self.wait_for(lambda f: f[2] == sid or f[0] == GOAWAY, end - time.monotonic())
            if f is None or f[0] == GOAWAY or f[0] == RST_STREAM:
                return status, body
            if f[0] == HEADERS:
                for k, v in f[4]:
                    if k == ":status":
                        status = int(v)
            elif f[0] == DATA:
                body += f[3]
                if f[3]:  # give the credit back so big bodies flow
                    inc = struct.pack(">I", len(f[3]))
                    self.send(frame(WINDOW_UPDATE, 0, 0, inc) + frame(WINDOW_UPDATE, 0, sid, inc))
            if f[1] & END_STREAM:
                return status, body
        return status, body

    def close(self):
        try:
            self.t.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------
# the cases: (name, function(conn) -> None, expectation)
# Each function sends the offending frames on a fresh, set-up connection.


def hdr_block(c, fields):
    return c.block(fields)


CASES = []


def case(name, expect, preface=True):
    def deco(fn):
        CASES.append((name, fn, expect, preface))
        return fn
    return deco


# 3.4 / 3.5 connection preface
@case("3.5 invalid connection preface", ("goaway_or_close", PROTOCOL_ERROR), preface=False)
def _(c):
    c.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + settings())


# 4.1 frame format
@case("4.1/1 unknown frame type is ignored", ("ok",))
def _(c):
    c.send(frame(0x16, 0, 0, b"\x00" * 8))


@case("4.1/3 unknown flags on PING are ignored", ("ok",))
def _(c):
    c.send(frame(PING, 0x16, 0, b"\x00" * 8))
    c.wait_for(lambda f: f[0] == PING and f[1] & ACK, 3)


# 4.2 frame size
@case("4.2/2 DATA larger than SETTINGS_MAX_FRAME_SIZE", ("goaway_or_rst", FRAME_SIZE_ERROR, 1))
def _(c):
    c.headers(1, req_fields("/upload", "POST"), END_HEADERS)
    c.send(frame(DATA, END_STREAM, 1, b"x" * 16385))


@case("4.2/3 HEADERS larger than SETTINGS_MAX_FRAME_SIZE", ("goaway", FRAME_SIZE_ERROR))
def _(c):
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1,
                 c.block(req_fields(extra=[("x-pad", "a" * 40000)]))))


# 4.3 header compression
@case("4.3/1 invalid field block fragment", ("goaway", COMPRESSION_ERROR))
def _(c):
    # A literal with incremental indexing whose name length runs past the block.
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\x40\x7f\x7f"))


@case("4.3/3 another frame in the middle of a field block", ("goaway", PROTOCOL_ERROR))
def _(c):
    blk = c.block(req_fields())
    c.send(frame(HEADERS, END_STREAM, 1, blk[:4]) + frame(PRIORITY, 0, 3, b"\x00\x00\x00\x01\x10"))


# 5.1 stream states
@case("5.1/1 DATA on an idle stream", ("goaway", PROTOCOL_ERROR))
def _(c):
    c.send(frame(DATA, END_STREAM, 1, b"x"))


@case("5.1/2 RST_STREAM on an idle stream", ("goaway", PROTOCOL_ERROR))
def _(c):
    c.send(frame(RST_STREAM, 0, 1, struct.pack(">I", CANCEL)))


@case("5.1/3 WINDOW_UPDATE on an idle stream", ("goaway", PROTOCOL_ERROR))
def _(c):
    c.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 100)))


@case("5.1/5 DATA on a half-closed (remote) stream", ("goaway_or_rst", STREAM_CLOSED, 1))
def _(c):
    c.headers(1, req_fields("/delay/300"))
    c.send(frame(DATA, 0, 1, b"x"))


@case("5.1/6 HEADERS on a half-closed (remote) stream", ("goaway_or_rst", STREAM_CLOSED, 1))
def _(c):
    c.headers(1, req_fields("/delay/300"))
    c.headers(1, req_fields("/delay/300"))


@case("5.1/9 DATA on a closed stream", ("goaway_or_rst", STREAM_CLOSED, 1))
def _(c):
    c.headers(1, req_fields("/bytes/3"))
    c.response(1)
    c.send(frame(DATA, 0, 1, b"x"))


# 5.1.1 stream identifiers
@case("5.1.1/1 even-numbered stream identifier", ("goaway", PROTOCOL_ERROR))
def _(c):
    c.headers(2, req_fields())


@case("5.1.1/2 stream identifier below one already used, never opened",
      ("goaway", PROTOCOL_ERROR))
def _(c):
    c.headers(5, req_fields())
    c.headers(3, req_fields())


@case("5.1.1/2b a lower identifier in a gap left between two used ones",
      ("goaway", PROTOCOL_ERROR))
def _(c):
    c.headers(1, req_fields())
    c.headers(7, req_fields())
    c.headers(5, req_fields())


@case("5.1.1 trailers for a stream the server already reset are no error", ("ok", "request"))
def _(c):
    # The body is over the route's limit: qrux answers 413 and resets the
    # stream while the client is still sending; the client's trailers that
    # were already on their way must not kill the connection.
    c.headers(1, req_fields("/upload", "POST", [("content-length", "100000000")]), END_HEADERS)
    c.wait_for(lambda f: f[0] == RST_STREAM and f[2] == 1, 5)
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, c.block([("x-trailer", "1")])))


# 5.1.2 concurrency
# RFC 9113 5.1.2: a stream error PROTOCOL_ERROR or REFUSED_STREAM; nghttp2
# makes it a connection error PROTOCOL_ERROR once the limit is acknowledged.
@case("5.1.2 more streams than SETTINGS_MAX_CONCURRENT_STREAMS",
      ("goaway_or_rst", (PROTOCOL_ERROR, REFUSED_STREAM), 2 * MAX_CONCURRENT + 1))
def _(c):
    for i in range(MAX_CONCURRENT + 1):
        c.headers(2 * i + 1, req_fields("/delay/2000"))


# 5.3 priority
@case("5.3.1 a stream depending on itself (HEADERS)", ("goaway_or_rst", PROTOCOL_ERROR, 1))
def _(c):
    c.send(frame(HEADERS, END_HEADERS | END_STREAM | PRIO_FLAG, 1,
                 struct.pack(">IB", 1, 16) + c.block(req_fields())))


@case("5.3.1 a stream depending on itself (PRIORITY)", ("goaway_or_rst", PROTOCOL_ERROR, 3))
def _(c):
    c.send(frame(PRIORITY, 0, 3, struct.pack(">IB", 3, 16)))


# 5.5 extensions
@case("5.5/2 unknown frame in the middle of a field block", ("goaway", PROTOCOL_ERROR))
def _(c):
    blk = c.block(req_fields())
    c.send(frame(HEADERS, END_STREAM, 1, blk[:4]) + frame(0x16, 0, 1, b"\x00" * 4))


# 6.1 DATA
@case("6.1/1 DATA with stream identifier 0", ("goaway", PROTOCOL_ERROR))
def _(c):
    c.send(frame(DATA, END_STREAM, 0, b"x"))


@case("6.1/3 DATA with padding longer than the payload", ("goaway", PROTOCOL_ERROR))
def _(c):
    c.headers(1, req_fields("/upload", "POST"), END_HEADERS)
    c.send(frame(DATA, PADDED | END_STREAM, 1, b"\x08abc"))


# 6.2 HEADERS
@case("6.2/1 HEADERS without END_HEADERS followed by a PRIORITY", ("goaway", PROTOCOL_ERROR))
def _(c):
    blk = c.block(req_fields())
    c.send(frame(HEADERS, END_STREAM, 1, blk) + frame(PRIORITY, 0, 1, b"\x00\x00\x00\x00\x10"))


@case("6.2/2 HEADERS with stream identifier 0", ("goaway", PROTOCOL_ERROR))
def _(c):
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 0, c.block(req_fields())))


@case("6.2/3 HEADERS with padding longer than the payload", ("goaway", PROTOCOL_ERROR))
def _(c):
    blk = c.block(req_fields())
    c.send(frame(HEADERS, END_HEADERS | END_STREAM | PADDED, 1, bytes([len(blk) + 1]) + blk))


# 6.3 PRIORITY
@case("6.3/1 PRIORITY with stream identifier 0", ("goaway", PROTOCOL_ERROR))
def _(c):
    c.send(frame(PRIORITY, 0, 0, b"\x00\x00\x00\x00\x10"))


@case("6.3/2 PRIORITY of length 4", ("goaway_or_rst", FRAME_SIZE_ERROR, 1))
def _(c):
    c.send(frame(PRIORITY, 0, 1, b"\x00\x00\x00\x00"))


# 6.4 RST_STREAM
@case("6.4/1 RST_STREAM with stream identifier 0", ("goaway", PROTOCOL_ERROR))
def _(c):
    c.send(frame(RST_STREAM, 0, 0, struct.pack(">I", CANCEL)))


@case("6.4/3 RST_STREAM of length 3", ("goaway", FRAME_SIZE_ERROR))
def _(c):
    c.headers(1, req_fields("/delay/300"))
    c.send(frame(RST_STREAM, 0, 1, b"\x00\x00\x08"))


# 6.5 SETTINGS
@case("6.5/1 SETTINGS ACK with a payload", ("goaway", FRAME_SIZE_ERROR))
def _(c):
    c.send(frame(SETTINGS, ACK, 0, struct.pack(">HI", 3, 100)))


@case("6.5/2 SETTINGS on a stream", ("goaway", PROTOCOL_ERROR))
def _(c):
    c.send(frame(SETTINGS, 0, 1, struct.pack(">HI", 3, 100)))


@case("6.5/3 SETTINGS of a length not a multiple of 6", ("goaway", FRAME_SIZE_ERROR))
def _(c):
    c.send(frame(SETTINGS, 0, 0, b"\x00\x03\x00\x00"))


@case("6.5.2/1 SETTINGS_ENABLE_PUSH of 2", ("goaway", PROTOCOL_ERROR))
def _(c):
    c.send(settings((2, 2)))


@case("6.5.2/2 SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1", ("goaway", FLOW_CONTROL_ERROR))
def _(c):
    c.send(settings((4, 0x80000000)))


@case("6.5.2/3 SETTINGS_MAX_FRAME_SIZE below 16384", ("goaway", PROTOCOL_ERROR))
def _(c):
    c.send(settings((5, 16383)))


@case("6.5.2/5 an unknown setting is ignored (and acknowledged)", ("ok",))
def _(c):
    c.send(settings((0xFF, 1)))
    assert c.wait_for(lambda f: f[0] == SETTINGS and f[1] & ACK, 5), "no SETTINGS ACK"


# 6.7 PING
@case("6.7/2 PING with ACK is not answered", ("ok",))
def _(c):
    c.send(frame(PING, ACK, 0, b"\x01" * 8))
    f = c.wait_for(lambda f: f[0] == PING, 1)
    assert f is None, "a PING ACK was answered: %r" % (f,)


@case("6.7/3 PING on a stream", ("goaway", PROTOCOL_ERROR))
def _(c):
    c.send(frame(PING, 0, 1, b"\x00" * 8))


@case("6.7/4 PING of length 7", ("goaway", FRAME_SIZE_ERROR))
def _(c):
    c.send(frame(PING, 0, 0, b"\x00" * 7))


# 6.8 GOAWAY
@case("6.8/1 GOAWAY on a stream", ("goaway", PROTOCOL_ERROR))
def _(c):
    c.send(frame(GOAWAY, 0, 1, struct.pack(">II", 0, NO_ERROR)))


# 6.9 WINDOW_UPDATE
@case("6.9/1 WINDOW_UPDATE of 0 on the connection", ("goaway", PROTOCOL_ERROR))
def _(c):
    c.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0)))


@case("6.9/2 WINDOW_UPDATE of 0 on a stream", ("goaway_or_rst", PROTOCOL_ERROR, 1))
def _(c):
    c.headers(1, req_fields("/delay/300"))
    c.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 0)))


@case("6.9/3 WINDOW_UPDATE of length 3", ("goaway", FRAME_SIZE_ERROR))
def _(c):
    c.send(frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"))


@case("6.9.1/2 connection window above 2^31-1", ("goaway", FLOW_CONTROL_ERROR))
def _(c):
    c.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF)))


@case("6.9.1/3 stream window above 2^31-1", ("goaway_or_rst", FLOW_CONTROL_ERROR, 1))
def _(c):
    c.headers(1, req_fields("/delay/300"))
    c.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 0x7FFFFFFF)))


@case("6.9.2/3 SETTINGS_INITIAL_WINDOW_SIZE making a window exceed 2^31-1",
      ("goaway_or_rst", FLOW_CONTROL_ERROR, 1))
def _(c):
    c.send(settings((4, 1)))
    c.headers(1, req_fields("/bytes/100"))
    c.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 0x7FFFFFFF)))
    c.send(settings((4, 0x7FFFFFFF)))


# 6.10 CONTINUATION
@case("6.10/2 CONTINUATION after a HEADERS with END_HEADERS", ("goaway", PROTOCOL_ERROR))
def _(c):
    c.headers(1, req_fields("/delay/300"))
    c.send(frame(CONTINUATION, END_HEADERS, 1, c.block([("x-a", "b")])))


@case("6.10/4 CONTINUATION on another stream", ("goaway", PROTOCOL_ERROR))
def _(c):
    blk = c.block(req_fields())
    c.send(frame(HEADERS, END_STREAM, 1, blk[:5]) + frame(CONTINUATION, END_HEADERS, 3, blk[5:]))


@case("6.10/5 CONTINUATION with stream identifier 0", ("goaway", PROTOCOL_ERROR))
def _(c):
    blk = c.block(req_fields())
    c.send(frame(HEADERS, END_STREAM, 1, blk[:5]) + frame(CONTINUATION, END_HEADERS, 0, blk[5:]))


@case("6.10 a field block split over CONTINUATION frames is a normal request", ("ok", "request"))
def _(c):
    blk = c.block(req_fields("/bytes/10"))
    c.send(frame(HEADERS, END_STREAM, 1, blk[:3]) + frame(CONTINUATION, 0, 1, blk[3:6]) +
           frame(CONTINUATION, END_HEADERS, 1, blk[6:]))
    st, body = c.response(1)
    assert (st, body) == (200, pattern(10)), (st, body)


# 8.1 HTTP message exchanges
@case("8.1/1 trailers without END_STREAM", ("goaway_or_rst", PROTOCOL_ERROR, 1))
def _(c):
    c.headers(1, req_fields("/upload", "POST"), END_HEADERS)
    c.send(frame(DATA, 0, 1, b"abc"))
    c.send(frame(HEADERS, END_HEADERS, 1, c.block([("x-trailer", "1")])))


@case("8.1.1 DATA longer than content-length", ("goaway_or_rst", PROTOCOL_ERROR, 1))
def _(c):
    c.headers(1, req_fields("/upload", "POST", [("content-length", "1")]), END_HEADERS)
    c.send(frame(DATA, END_STREAM, 1, b"abcd"))


@case("8.1.1 DATA shorter than content-length", ("goaway_or_rst", PROTOCOL_ERROR, 1))
def _(c):
    c.headers(1, req_fields("/upload", "POST", [("content-length", "10")]), END_HEADERS)
    c.send(frame(DATA, END_STREAM, 1, b"abcd"))


# 8.2 / 8.3 fields
FIELD_CASES = [
    ("8.2/1 an uppercase field name", req_fields(extra=[("X-Upper", "1")])),
    ("8.2.2/1 a connection-specific field", req_fields(extra=[("connection", "keep-alive")])),
    ("8.2.2/2 TE other than trailers", req_fields(extra=[("te", "gzip")])),
    ("8.3/1 an unknown pseudo-header", req_fields(extra=[(":foo", "bar")])),
    ("8.3/2 a response pseudo-header in a request", req_fields(extra=[(":status", "200")])),
    ("8.3/4 a pseudo-header after a regular field",
     [(":method", "GET"), (":scheme", "https"), (":authority", "localhost"), ("x-a", "b"),
      (":path", "/")]),
    ("8.3.1/1 an empty :path", req_fields(path="")),
    ("8.3.1/2 no :method", [(":scheme", "https"), (":authority", "localhost"), (":path", "/")]),
    ("8.3.1/3 no :scheme", [(":method", "GET"), (":authority", "localhost"), (":path", "/")]),
    ("8.3.1/4 no :path", [(":method", "GET"), (":scheme", "https"), (":authority", "localhost")]),
    ("8.3.1/5 :method twice", req_fields(extra=[(":method", "GET")])),
    ("8.3.1/6 :path twice", req_fields(extra=[(":path", "/")])),
]
for _name, _fields in FIELD_CASES:
    def _mk(fields):
        def fn(c):
            c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, c.block(fields)))
        return fn
    case(_name, ("goaway_or_rst", PROTOCOL_ERROR, 1))(_mk(_fields))


@case("8.3 a pseudo-header in trailers", ("goaway_or_rst", PROTOCOL_ERROR, 1))
def _(c):
    c.headers(1, req_fields("/upload", "POST"), END_HEADERS)
    c.send(frame(DATA, 0, 1, b"abc"))
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, c.block([(":path", "/")])))


# RFC 7541 HPACK
@case("hpack/2.3.3 index 0", ("goaway", COMPRESSION_ERROR))
def _(c):
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\x80"))


@case("hpack/2.3.3 an index beyond the tables", ("goaway", COMPRESSION_ERROR))
def _(c):
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\xff\x7f"))  # index 127+63


@case("hpack/4.2 a table size update above SETTINGS_HEADER_TABLE_SIZE",
      ("goaway", COMPRESSION_ERROR))
def _(c):
    # 0x3f e1 1f: size update to 4096 + ... = 0x3f + 0x1fe1 > 4096
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\x3f\xe1\x7f" + c.block(req_fields())))


@case("hpack/5.2 a Huffman string with the EOS symbol", ("goaway", COMPRESSION_ERROR))
def _(c):
    # Literal, new name, Huffman, length 4: all ones = EOS (30 bits) in it.
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1,
                 b"\x00\x84\xff\xff\xff\xff\x01\x61" + c.block(req_fields())))


# ---------------------------------------------------------------------------


def judge(env, name, c, expect):
    kind = expect[0]
    if kind == "goaway":
        code = c.goaway()
        env.eq(name + ": GOAWAY error code", code, expect[1])
        env.check(name + ": connection closed after the GOAWAY",
                  c.wait_for(lambda f: False, 5) is None and c.closed, "still open")
    elif kind == "goaway_or_close":
        code = c.goaway()
        env.check(name + ": GOAWAY(%d) or close" % expect[1],
                  code == expect[1] or (code is None and c.closed), "got %r" % code)
    elif kind == "goaway_or_rst":
        codes = expect[1] if isinstance(expect[1], tuple) else (expect[1],)
        got = c.rst(expect[2])
        env.check(name + ": RST_STREAM or GOAWAY with code %s" % (codes,),
                  got in codes or (isinstance(got, tuple) and got[1] in codes),
                  "got %r" % (got,))
        if got in codes:
            env.check(name + ": the connection survives the stream error", c.ping_ok())
    elif kind == "ok":
        env.check(name + ": the connection still answers a PING", c.ping_ok())
        if len(expect) > 1 and expect[1] == "request":
            sid = 101
            c.headers(sid, req_fields("/bytes/1000"))
            st, body = c.response(sid)
            env.eq(name + ": a request after it gets 200 and its bytes",
                   (st, body == pattern(1000)), (200, True))


def main():
    with Env("h2_conformance") as env:
        be = env.backend()
        tport = free_port("tcp")
        q = env.qrux(routes=[("*", be.addr)],
                     limits={"max_request_body_bytes": 1048576,
                             "upstream_request_timeout_secs": 10},
                     extra_server='  https_listen: "[::]:%d"\n' % tport)
        for name, fn, expect, preface in CASES:
            def run_case(name=name, fn=fn, expect=expect, preface=preface):
                c = H2(tport, preface=preface)
                try:
                    fn(c)
                    judge(env, name, c, expect)
                finally:
                    c.close()
            env.case(name, run_case)

        def still_serves():
            c = H2(tport)
            c.headers(1, req_fields("/bytes/70000"))
            st, body = c.response(1)
            env.eq("after every case a normal request: status", st, 200)
            env.check("after every case a normal request: exact body", body == pattern(70000),
                      "%d bytes" % len(body))
            c.close()
        env.case("still serving", still_serves)
        env.check("qrux is still running", q.alive())


if __name__ == "__main__":
    main()
