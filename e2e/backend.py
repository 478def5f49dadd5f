#!/usr/bin/env python3
"""backend.py - the HTTP/1.1 origin the e2e tests put behind qrux.

It speaks HTTP/1.1 over raw sockets (not http.server: we need exact control
over framing, keep-alive and misbehaviour) with one thread per connection.
Run it as `python3 e2e/backend.py --port P` (P may be 0: the kernel picks);
it prints `listening P` with the real port once it accepts connections.

Every response carries `X-Backend-Port: P` (round-robin counting) and the
hop-by-hop headers `Connection: keep-alive, x-hop-test`, `Keep-Alive: ...`
and `X-Hop-Test: 1`, which a proxy must not forward (RFC 9110 7.6.1).

Paths (query strings allowed everywhere):
  /echo            JSON: method, target, version, headers as received (case,
                   order and duplicates kept), body sha256 and length, whether
                   the body came chunked, trailers, our port, connection number
  /upload          same as /echo (the name says what the test means);
                   ?sha256=HEX answers 422 when the body's hash differs
  /bytes/N         N pattern bytes (see pattern()), Content-Length
  /chunked/N       the same bytes, chunked, odd chunk sizes, some chunk
                   extensions; ?trailers=1 adds a trailer section
  /close/N         the same bytes close-delimited: no Content-Length, no
                   chunking, the connection closes after the body
  /slow/N?ms=M&chunk=C  Content-Length N, C bytes (default 1024) every M ms
  /delay/MS        waits MS milliseconds, then answers 200
  /hang            reads the request and never answers
  /garbage         answers bytes that are not HTTP, then closes
  /badchunk        valid chunked head and first chunk, then a broken chunk
  /truncate/N      promises Content-Length N, sends N/2 bytes, closes
  /status/NNN      answers status NNN (204 and 304 without a body; 304
                   carries a Content-Length of the representation as
                   RFC 9110 allows)
  /id              answers our port as the body
  /fields/N        200 with N extra response fields X-F-1: v1 ... X-F-N: vN
  /100             sends `100 Continue` (?n=K: K interim responses), then 200
  /drop-after      answers with keep-alive advertised, then closes at once
  /drop-next       answers normally; the next request on the same connection
                   is read and the connection closed without an answer (the
                   keep-alive race a pool must retry)
  /__stats         JSON counters (connections, requests, dropped, active
                   connections, accepted connections (the /__stats one too),
                   requests per path, requests being answered right now
                   per path); not counted itself. /__stats/reset zeroes them.
  anything else    a file under --root when it exists, else 404
HEAD on any path answers the GET head without a body.
"""

import argparse
import hashlib
import json
import os
import socket
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

PATTERN_PERIOD = 251  # prime, so an offset or a lost block shows in the hash
_BLOCK = bytes(i % PATTERN_PERIOD for i in range(PATTERN_PERIOD)) * 1024

REASONS = {
    100: "Continue", 102: "Processing", 103: "Early Hints", 200: "OK",
    201: "Created", 204: "No Content", 301: "Moved Permanently", 302: "Found",
    304: "Not Modified", 400: "Bad Request", 404: "Not Found",
    413: "Content Too Large", 418: "I'm a teapot", 421: "Misdirected Request",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout",
}

CHUNK_SIZES = [1, 7, 4093, 65537, 333, 2, 16411, 100003]

CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript",
                 ".txt": "text/plain", ".json": "application/json", ".css": "text/css"}


def pattern_pieces(n):
    """Yields the first n pattern bytes in pieces of at most len(_BLOCK).
    _BLOCK is a whole number of periods, so the pieces concatenate."""
    while n > 0:
        k = min(n, len(_BLOCK))
        yield _BLOCK[:k]
        n -= k


def pattern(n):
    return b"".join(pattern_pieces(n))


def pattern_sha256(n):
    h = hashlib.sha256()
    for p in pattern_pieces(n):
        h.update(p)
    return h.hexdigest()


def chunk_slices(n):
    """Yields (offset, size) covering n bytes with CHUNK_SIZES cycled."""
    off, i = 0, 0
    while off < n:
        k = min(CHUNK_SIZES[i % len(CHUNK_SIZES)], n - off)
        yield off, k
        off += k
        i += 1


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.generation = 0  # bumped by reset: connections count again after it
        self.reset()

    def reset(self):
        self.generation += 1
        self.connections = 0   # connections that carried a counted request
        self.requests = 0
        self.dropped = 0       # connections closed by /drop-next's trap
        self.active = 0        # open connections right now (any)
        self.accepted = 0      # connections accepted (any, /__stats ones too)
        self.paths = {}
        self.inflight = getattr(self, "inflight", {})  # path -> requests being answered now

    def snapshot(self):
        with self.lock:
            return {"connections": self.connections, "requests": self.requests,
                    "dropped": self.dropped, "active": self.active,
                    "accepted": self.accepted,
                    "paths": dict(self.paths),
                    "inflight": {k: v for k, v in self.inflight.items() if v}}


class ClientGone(Exception):
    pass


class Request:
    def __init__(self):
        self.method = ""
        self.target = ""
        self.version = ""
        self.headers = []  # [(name, value)] exactly as received
        self.trailers = []
        self.chunked = False
        self.body_len = 0
        self.body_hash = hashlib.sha256()
        self.body_head = b""  # the first bytes, for small bodies

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def wants_close(self):
        tokens = []
        for v in self.header_all("connection"):
            tokens += [t.strip().lower() for t in v.split(",")]
        if "close" in tokens:
            return True
        return self.version == "HTTP/1.0" and "keep-alive" not in tokens


class Conn:
    """One accepted connection: reads requests and answers them in turn."""

    def __init__(self, server, sock, seq):
        self.server = server
        self.sock = sock
        self.seq = seq
        self.rfile = sock.makefile("rb", buffering=65536)
        self.nreq = 0
        self.counted = 0  # the stats generation this connection was counted in
        self.trap = False  # set by /drop-next

    # -- reading ---------------------------------------------------------

    def readline(self, limit=65536):
        line = self.rfile.readline(limit + 1)
        if not line:
            raise ClientGone()
        if len(line) > limit:
            raise ValueError("line too long")
        return line

    def read_head(self):
        """Returns a Request with its head read, or None on a clean EOF."""
        while True:
            try:
                line = self.readline()
            except ClientGone:
                return None
            if line not in (b"\r\n", b"\n"):
                break
        parts = line.decode("latin-1").rstrip("\r\n").split(" ")
        if len(parts) != 3:
            raise ValueError("bad request line %r" % line)
        req = Request()
        req.method, req.target, req.version = parts
        while True:
            h = self.readline().decode("latin-1").rstrip("\r\n")
            if h == "":
                break
            name, sep, value = h.partition(":")
            if not sep:
                raise ValueError("bad header line %r" % h)
            req.headers.append((name, value.strip(" \t")))
        return req

    def _body_bytes(self, req, data):
        req.body_len += len(data)
        req.body_hash.update(data)
        if len(req.body_head) < 4096:
            req.body_head += data[: 4096 - len(req.body_head)]

    def read_body(self, req):
        te = ",".join(req.header_all("transfer-encoding")).lower()
        if "chunked" in te:
            req.chunked = True
            while True:
                size_line = self.readline().decode("latin-1").strip()
                size = int(size_line.split(";", 1)[0].strip(), 16)
                if size == 0:
                    break
                left = size
                while left:
                    data = self.rfile.read(min(left, 65536))
                    if not data:
                        raise ClientGone()
                    self._body_bytes(req, data)
                    left -= len(data)
                if self.readline() not in (b"\r\n", b"\n"):
                    raise ValueError("chunk not followed by CRLF")
            while True:
                t = self.readline().decode("latin-1").rstrip("\r\n")
                if t == "":
                    break
                name, _, value = t.partition(":")
                req.trailers.append((name, value.strip()))
            return
        cl = req.header("content-length")
        if cl is None:
            return
        left = int(cl)
        while left:
            data = self.rfile.read(min(left, 65536))
            if not data:
                raise ClientGone()
            self._body_bytes(req, data)
            left -= len(data)

    # -- writing ---------------------------------------------------------

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            raise ClientGone()

    def head_bytes(self, status, headers, close):
        lines = ["HTTP/1.1 %d %s" % (status, REASONS.get(status, "Status"))]
        lines.append("Server: qrux-e2e-backend")
        lines.append("X-Backend-Port: %d" % self.server.port)
        if close:
            lines.append("Connection: close")
        else:
            lines.append("Connection: keep-alive, x-hop-test")
            lines.append("Keep-Alive: timeout=60, max=100000")
            lines.append("X-Hop-Test: 1")
        for k, v in headers:
            lines.append("%s: %s" % (k, v))
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def respond(self, req, status, headers=(), body=b"", close=False):
        """Answers with a Content-Length body (bytes); returns keep-alive."""
        close = close or req.wants_close()
        headers = list(headers)
        if status not in (204, 304) and not any(k.lower() == "content-length" for k, _ in headers):
            headers.append(("Content-Length", str(len(body))))
        out = self.head_bytes(status, headers, close)
        if req.method != "HEAD" and status not in (204, 304):
            out += body
        self.send(out)
        return not close

    # -- the endpoints ---------------------------------------------------

    def handle(self, req):
        """Answers one request whose head was read. Returns True to keep the
        connection for another request."""
        url = urlsplit(req.target)
        path = url.path
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        head = req.method == "HEAD"
        parts = [p for p in path.split("/") if p]
        first = parts[0] if parts else ""

        def num(i, default=0):
            try:
                return int(parts[i])
            except (IndexError, ValueError):
                return default

        expect = (req.header("expect") or "").lower()
        if expect == "100-continue" and first not in ("hang", "garbage"):
            self.send(b"HTTP/1.1 100 Continue\r\n\r\n")

        if first == "hang":
            self.read_body(req)
            # Never answer; wait for the peer to give up.
            while True:
                try:
                    if not self.sock.recv(65536):
                        return False
                except OSError:
                    return False

        self.read_body(req)

        if first in ("echo", "upload"):
            doc = {
                "method": req.method, "target": req.target, "version": req.version,
                "headers": req.headers, "trailers": req.trailers,
                "chunked": req.chunked, "body_len": req.body_len,
                "body_sha256": req.body_hash.hexdigest(),
                "body_head": req.body_head[:1024].decode("latin-1"),
                "port": self.server.port, "conn": self.seq, "req_on_conn": self.nreq,
            }
            body = (json.dumps(doc) + "\n").encode()
            want = q.get("sha256")
            status = 422 if want and want != doc["body_sha256"] else 200
            return self.respond(req, status, [("Content-Type", "application/json")], body)

        if first == "fields":
            hdrs = [("X-F-%d" % i, "v%d" % i) for i in range(1, num(1) + 1)]
            return self.respond(req, 200, hdrs + [("Content-Type", "text/plain")], b"ok\n")

        if first == "bytes":
            n = num(1)
            keep = not req.wants_close()
            self.send(self.head_bytes(200, [("Content-Type", "application/octet-stream"),
                                            ("Content-Length", str(n))], not keep))
            if not head:
                for p in pattern_pieces(n):
                    self.send(p)
            return keep

        if first == "chunked":
            n = num(1)
            keep = not req.wants_close()
            hdrs = [("Content-Type", "application/octet-stream"),
                    ("Transfer-Encoding", "chunked")]
            trailers = q.get("trailers") == "1"
            if trailers:
                hdrs.append(("Trailer", "X-Checksum"))
            self.send(self.head_bytes(200, hdrs, not keep))
            if head:
                return keep
            data = pattern(n)
            out = []
            pending = 0
            for i, (off, k) in enumerate(chunk_slices(n)):
                ext = ";e=%d" % i if i % 3 == 1 else ""
                out.append(b"%x%s\r\n" % (k, ext.encode()))
                out.append(data[off:off + k])
                out.append(b"\r\n")
                pending += k
                if pending >= 262144:
                    self.send(b"".join(out))
                    out, pending = [], 0
            out.append(b"0\r\n")
            if trailers:
                out.append(b"X-Checksum: " + pattern_sha256(n).encode() + b"\r\n")
            out.append(b"\r\n")
            self.send(b"".join(out))
            return keep

        if first == "close":
            n = num(1)
            self.send(self.head_bytes(200, [("Content-Type", "application/octet-stream")], True))
            if not head:
                for p in pattern_pieces(n):
                    self.send(p)
            return False

        if first == "slow":
            n = num(1)
            ms = int(q.get("ms", "100"))
            chunk = max(1, int(q.get("chunk", "1024")))
            keep = not req.wants_close()
            self.send(self.head_bytes(200, [("Content-Type", "application/octet-stream"),
                                            ("Content-Length", str(n))], not keep))
            if head:
                return keep
            data = pattern(n)
            for off in range(0, n, chunk):
                self.send(data[off:off + chunk])
                if off + chunk < n:
                    time.sleep(ms / 1000.0)
            return keep

        if first == "delay":
            ms = num(1)
            time.sleep(ms / 1000.0)
            return self.respond(req, 200, [("Content-Type", "text/plain")],
                                b"delayed %d\n" % ms)

        if first == "garbage":
            self.send(b"\x16\x03\x01\x02\x00 THIS IS NOT HTTP \x00\xff\xfe\r\n\r\n")
            return False

        if first == "badchunk":
            self.send(self.head_bytes(200, [("Transfer-Encoding", "chunked")], False))
            if not head:
                self.send(b"10\r\n" + pattern(16) + b"\r\nzz-not-a-size\r\n\r\n")
            return False

        if first == "truncate":
            n = num(1)
            self.send(self.head_bytes(200, [("Content-Length", str(n))], False))
            if not head:
                self.send(pattern(n // 2))
            return False

        if first == "status":
            st = num(1, 200)
            hdrs = [("Content-Type", "text/plain")]
            if st == 304:
                hdrs = [("ETag", '"e2e-etag"'), ("Content-Length", "1234")]
            return self.respond(req, st, hdrs, b"status %d\n" % st)

        if first == "id":
            return self.respond(req, 200, [("Content-Type", "text/plain")],
                                str(self.server.port).encode())

        if first == "100":
            n = int(q.get("n", "1"))
            for i in range(n):
                self.send(b"HTTP/1.1 100 Continue\r\n\r\n" if i % 2 == 0
                          else b"HTTP/1.1 102 Processing\r\n\r\n")
            return self.respond(req, 200, [("Content-Type", "text/plain")], b"after-100\n")

        if first == "drop-after":
            # Says keep-alive, then closes: the pool must notice before reuse.
            self.respond(req, 200, [("Content-Type", "text/plain")], b"dropped-after\n")
            return False

        if first == "drop-next":
            self.trap = True
            return self.respond(req, 200, [("Content-Type", "text/plain")], b"drop-next\n")

        root = self.server.root
        if root and req.method in ("GET", "HEAD") and ".." not in path:
            fp = os.path.join(root, path.lstrip("/") or "index.html")
            if os.path.isfile(fp):
                with open(fp, "rb") as f:
                    data = f.read()
                ct = CONTENT_TYPES.get(os.path.splitext(fp)[1], "application/octet-stream")
                return self.respond(req, 200, [("Content-Type", ct)], data)

        return self.respond(req, 404, [("Content-Type", "text/plain")], b"not found\n")

    def stats_request(self, req):
        self.read_body(req)
        if req.target.startswith("/__stats/reset"):
            with self.server.stats.lock:
                active = self.server.stats.active
                self.server.stats.reset()
                self.server.stats.active = active
        body = (json.dumps(self.server.stats.snapshot()) + "\n").encode()
        return self.respond(req, 200, [("Content-Type", "application/json")], body)

    def run(self):
        st = self.server.stats
        try:
            while True:
                req = self.read_head()
                if req is None:
                    return
                if req.target.startswith("/__stats"):
                    if not self.stats_request(req):
                        return
                    continue
                with st.lock:
                    if self.counted != st.generation:
                        self.counted = st.generation
                        st.connections += 1
                    st.requests += 1
                    p = urlsplit(req.target).path
                    st.paths[p] = st.paths.get(p, 0) + 1
                    if self.trap:
                        st.dropped += 1
                if self.trap:
                    # The keep-alive race: the request arrived on a connection
                    # we had decided to close. Close without a byte.
                    self.read_body(req)
                    return
                self.nreq += 1
                with st.lock:
                    st.inflight[p] = st.inflight.get(p, 0) + 1
                try:
                    keep = self.handle(req)
                finally:
                    with st.lock:
                        st.inflight[p] -= 1
                if not keep:
                    return
        except (ClientGone, ConnectionError):
            pass
        except Exception as e:  # a broken request: say so and drop the connection
            sys.stderr.write("backend %d: %r\n" % (self.server.port, e))
        finally:
            with st.lock:
                st.active -= 1
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()


class Server:
    def __init__(self, host, port, root):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.lsock = socket.socket(fam, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((host, port))
        self.lsock.listen(256)
        self.port = self.lsock.getsockname()[1]
        self.root = root
        self.stats = Stats()
        self.seq = 0

    def serve(self):
        while True:
            sock, _ = self.lsock.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.seq += 1
            with self.stats.lock:
                self.stats.active += 1
                self.stats.accepted += 1
            c = Conn(self, sock, self.seq)
            threading.Thread(target=c.run, daemon=True).start()


def main():
    ap = argparse.ArgumentParser(description="HTTP/1.1 test origin for qrux e2e tests")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--root", default=None, help="directory served for unknown paths")
    a = ap.parse_args()
    srv = Server(a.host, a.port, a.root)
    print("listening %d" % srv.port, flush=True)
    try:
        srv.serve()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
