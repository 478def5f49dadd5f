#!/usr/bin/env python3
"""test_attacks_upstream.py - a malicious or broken upstream behind qrux.

`Evil` is a raw TCP origin that answers each request path with canned
bytes, then keeps the connection open, closes it, or sends more later.
Each case asserts what the client sees (over HTTP/2, HTTP/1.1 and HTTP/3),
that no stray byte reaches another request, and that qrux serves on:

  CL+TE              Content-Length and Transfer-Encoding together: 502
  bad chunking       a chunk size that is not hex, or overflows: 502 / reset
  1xx storm          1,000 interim responses, then 200: bounded, answered
  1xx with framing   a 1xx with Content-Length or Transfer-Encoding ends at
                     its blank line (RFC 9112 6.3): the final 200 relayed
  204/304 with body  204/304 to the client, the body dropped, the socket not
                     reused
  bad status         `20`, `099`, `1000`: 502, never relayed
  field with space   `Bad Name: x`: 502, never relayed
  unsolicited        a response nobody asked for, waiting in an idle pooled
                     socket: never given to the next request
  never-ending body  chunked forever: stream reset at the response cap
  mid-body stall     head and half the body, then silence: the stream is
                     reset after upstream_idle_timeout_secs, counted
  retry of a POST    the reused connection dies after the head was written:
                     502, the POST is not sent again (GET is retried)
"""

import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attacklib import (Proxy, cont_process, defence, stop_process, h1_request, h1_status, h2_get, metrics,  # noqa: E402
                       read_all, serves_all, tls)
from harness import Env  # noqa: E402

LIMITS = {"upstream_idle_timeout_secs": 2, "upstream_request_timeout_secs": 5,
          "upstream_connect_timeout_secs": 2,
          "max_upstream_response_body_bytes": 1048576}


def resp(status_line, fields, body=b""):
    return (status_line + "\r\n" + "".join("%s\r\n" % f for f in fields) + "\r\n").encode() + body


OK5 = resp("HTTP/1.1 200 OK", ["Content-Length: 5"], b"hello")

CANNED = {
    "/cl-te": resp("HTTP/1.1 200 OK", ["Content-Length: 5", "Transfer-Encoding: chunked"],
                   b"5\r\nhello\r\n0\r\n\r\n"),
    "/badchunk-hex": resp("HTTP/1.1 200 OK", ["Transfer-Encoding: chunked"], b"zz\r\nhello\r\n"),
    "/badchunk-overflow": resp("HTTP/1.1 200 OK", ["Transfer-Encoding: chunked"],
                               b"fffffffffffffffffff\r\nhello\r\n"),
    "/1xx-storm": resp("HTTP/1.1 103 Early Hints", ["Link: </a>; rel=preload"]) * 1000 + OK5,
    # A 1xx has no content whatever its fields say: the bytes after its
    # blank line are the final response, never the 1xx's body.
    "/1xx-cl": resp("HTTP/1.1 103 Early Hints", ["Link: </a>; rel=preload", "Content-Length: 5"])
    + OK5,
    "/1xx-chunked": resp("HTTP/1.1 100 Continue", ["Transfer-Encoding: chunked"]) + OK5,
    "/204-body": resp("HTTP/1.1 204 No Content", ["Content-Length: 5"], b"hello"),
    "/304-body": resp("HTTP/1.1 304 Not Modified", ["Content-Length: 5"], b"hello"),
    "/status-20": resp("HTTP/1.1 20 OK", ["Content-Length: 5"], b"hello"),
    "/status-099": resp("HTTP/1.1 099 OK", ["Content-Length: 5"], b"hello"),
    "/status-1000": resp("HTTP/1.1 1000 OK", ["Content-Length: 5"], b"hello"),
    "/field-space": resp("HTTP/1.1 200 OK", ["Bad Name: x", "Content-Length: 5"], b"hello"),
    "/field-space-colon": resp("HTTP/1.1 200 OK", ["Bad-Name : x", "Content-Length: 5"],
                               b"hello"),
    "/ok": OK5,
}


class Evil:
    """Raw origin: reads one request head (and a Content-Length body), then
    acts on the path. /unsolicited answers, then sends a second response
    50 ms later; /forever sends chunks until the socket breaks; /stall sends
    a head promising 1 MiB and half of it; /die-after-head answers the
    first request, then closes the connection when the next head arrives."""

    def __init__(self):
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(128)
        self.port = self.ls.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.lock = threading.Lock()
        self.accepted = 0
        self.requests = []  # (method, path)
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            c, _ = self.ls.accept()
            with self.lock:
                self.accepted += 1
            threading.Thread(target=self.conn, args=(c,), daemon=True).start()

    def conn(self, c):
        buf = b""
        served = 0
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    b = c.recv(65536)
                    if not b:
                        return
                    buf += b
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                clen = 0
                for ln in lines[1:]:
                    k, _, v = ln.partition(":")
                    if k.strip().lower() == "content-length":
                        clen = int(v)
                while len(buf) < clen:
                    b = c.recv(65536)
                    if not b:
                        return
                    buf += b
                buf = buf[clen:]
                with self.lock:
                    self.requests.append((method, path))
                path = path.split("?")[0]
                if path == "/die-after-head" and served > 0:
                    c.close()
                    return
                served += 1
                if path == "/die-after-head":
                    c.sendall(OK5)
                elif path == "/unsolicited":
                    c.sendall(OK5)
                    time.sleep(0.05)
                    c.sendall(resp("HTTP/1.1 200 OK", ["Content-Length: 8"], b"poisoned"))
                elif path == "/forever":
                    c.sendall(resp("HTTP/1.1 200 OK", ["Transfer-Encoding: chunked"]))
                    chunk = b"4000\r\n" + b"x" * 0x4000 + b"\r\n"
                    while True:
                        c.sendall(chunk)
                elif path == "/stall":
                    c.sendall(resp("HTTP/1.1 200 OK", ["Content-Length: 1048576"], b"y" * 524288))
                    time.sleep(60)
                    return
                else:
                    c.sendall(CANNED.get(path, resp("HTTP/1.1 404 Not Found",
                                                    ["Content-Length: 0"])))
        except OSError:
            return
        finally:
            c.close()

    def count(self, path):
        with self.lock:
            return sum(1 for _, p in self.requests if p.split("?")[0] == path)


def h1_get(p, path, limit=10.0):
    data, closed = h1_request(p.tport, ("GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n"
                                        % path).encode(), limit)
    return h1_status(data), data, closed


def protocol_errors(p, ev):
    return metrics(p).get('qrux_upstream_errors_total{upstream="%s",address="%s",kind="protocol"}' %
                          (ev.addr, ev.addr), 0)


def expect_502(env, p, ev, path, what):
    e0 = protocol_errors(p, ev)
    st, data, closed = h1_get(p, path)
    # 502 when the bad part is in the head; a chunk error after a head
    # already relayed can only cut the response (the connection closes).
    env.check("%s: HTTP/1.1 client gets 502 or a cut response" % what,
              st == 502 or (closed and not data.endswith(b"0\r\n\r\n")), data[:200])
    env.check("%s: nothing of the bad response relayed" % what,
              b"hello" not in data and b"bad" not in data.lower().replace(b"bad gateway", b""),
              data[:200])
    st2, _, body = h2_get(p.tport, "localhost", path)
    env.check("%s: HTTP/2 client gets 502 or a reset" % what, st2 in (502, None), st2)
    env.check("%s: counted as a protocol error" % what, protocol_errors(p, ev) >= e0 + 1)


def no_body_status(env, p, ev, path, status):
    st, data, closed = h1_get(p, path + "?a")
    env.eq("%s: the client gets %d" % (path, status), st, status, data[:200])
    env.check("%s: no body bytes relayed" % path, b"hello" not in data, data[:200])
    # the keep-alive connection to the client stays usable: a second request
    t = tls(p.tport, ("http/1.1",))
    t.sendall(("GET %s?b HTTP/1.1\r\nHost: localhost\r\n\r\nGET /ok HTTP/1.1\r\nHost: localhost"
               "\r\n\r\n" % path).encode())
    data, _ = read_all(t, 10, until=lambda d: d.endswith(b"hello") and d.count(b"HTTP/1.1") >= 2)
    t.close()
    env.check("%s: the client connection carries on (next response 200 hello)" % path,
              data.count(b"HTTP/1.1 %d" % status) == 1 and data.endswith(b"hello") and
              b"HTTP/1.1 200" in data, data[:300])
    st2, _, body = h2_get(p.tport, "localhost", path + "?c")
    env.eq("%s: HTTP/2 client gets %d" % (path, status), st2, status)


def interim_framing(env, p):
    for path in ("/1xx-cl", "/1xx-chunked"):
        st, data, _ = h1_get(p, path)
        env.check("%s: HTTP/1.1 client gets the final 200 hello" % path,
                  st == 200 and data.endswith(b"\r\n\r\nhello"), data[:300])
        st2, _, body = h2_get(p.tport, "localhost", path)
        env.check("%s: HTTP/2 client gets the final 200 hello" % path,
                  st2 == 200 and body == b"hello", "%r %r" % (st2, body[:100]))
    env.check("1xx with framing fields: no response window overflow logged",
              "window overflow" not in p.q.log_text(), p.q.log_tail())


def unsolicited(env, p, ev):
    # Request 1 is answered, then the origin sends a second response 50 ms
    # later into the idle pooled socket. qrux is stopped meanwhile so the
    # stray bytes and the next request arrive in the same loop turn, the
    # next request first: the pooled socket must not be handed out.
    bad = 0
    for i in range(5):
        t = tls(p.tport, ("http/1.1",))
        t.sendall(b"GET /unsolicited HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data, _ = read_all(t, 10, until=lambda d: d.endswith(b"hello"))
        stop_process(p.pid)
        try:
            t.sendall(b"GET /ok HTTP/1.1\r\nHost: localhost\r\n\r\n")
            time.sleep(0.12)  # the stray response reaches qrux's socket
        finally:
            cont_process(p.pid)
        data, _ = read_all(t, 10, until=lambda d: d.endswith(b"hello") or b"poisoned" in d)
        t.close()
        if b"poisoned" in data:
            bad += 1
    env.eq("unsolicited response: never delivered to the next request (5 tries)", bad, 0)


def forever(env, p, ev):
    t0 = time.monotonic()
    st, data, closed = h1_get(p, "/forever", limit=20)
    env.eq("never-ending body: head relayed (200)", st, 200)
    env.check("never-ending body: cut (connection closed) at the response cap",
              closed and len(data) < 2 * 1048576, "%d bytes, closed=%s" % (len(data), closed))
    print("never-ending body: cut after %d bytes in %.1f s" % (len(data), time.monotonic() - t0))


def stall(env, p, ev):
    s0 = defence(p, "upstream_stalled")
    t0 = time.monotonic()
    st, data, closed = h1_get(p, "/stall", limit=20)
    took = time.monotonic() - t0
    env.eq("mid-body stall: head relayed (200)", st, 200)
    env.check("mid-body stall: connection cut before the whole body", closed and
              len(data) < 1048576, "%d bytes closed=%s" % (len(data), closed))
    env.check("mid-body stall: cut within upstream_idle_timeout_secs (2) + 8 s", took < 10,
              "%.1f s" % took)
    env.check("mid-body stall: counted (defence upstream_stalled)",
              defence(p, "upstream_stalled") >= s0 + 1)
    st2, _, body = h2_get(p.tport, "localhost", "/stall?h2", limit=20)
    env.check("mid-body stall over HTTP/2: reset", st2 == 200 and len(body) < 1048576, st2)


def no_post_retry(env, p, ev):
    # /die-after-head answers once; the next request on that pooled socket
    # gets its head read, then the connection closes: a GET may go again
    # on a new connection, a POST must not.
    t = tls(p.tport, ("http/1.1",))
    t.sendall(b"GET /die-after-head HTTP/1.1\r\nHost: localhost\r\n\r\n")
    read_all(t, 5, until=lambda d: d.endswith(b"hello"))
    n0 = ev.count("/die-after-head")
    t.sendall(b"POST /die-after-head HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
    data, _ = read_all(t, 10, until=lambda d: d.count(b"HTTP/1.1") >= 2)
    t.close()
    env.check("POST after a failed reuse: 502", b"HTTP/1.1 502" in data, data[-200:])
    time.sleep(0.3)
    env.eq("POST after a failed reuse: sent upstream once, not retried",
           ev.count("/die-after-head") - n0, 1)
    # the same for a GET: retried once on a new connection, answered
    t = tls(p.tport, ("http/1.1",))
    t.sendall(b"GET /die-after-head HTTP/1.1\r\nHost: localhost\r\n\r\n")
    read_all(t, 5, until=lambda d: d.endswith(b"hello"))
    t.sendall(b"GET /die-after-head HTTP/1.1\r\nHost: localhost\r\n\r\n")
    data, _ = read_all(t, 10, until=lambda d: d.endswith(b"hello"))
    t.close()
    env.check("GET after a failed reuse: retried, 200",
              data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello"), data[-200:])


def main():
    with Env("attacks_upstream") as env:
        ev = Evil()
        p = Proxy(env, [("*", ev.addr)], limits=LIMITS)
        for path, what in [("/cl-te", "CL+TE"), ("/badchunk-hex", "chunk size not hex"),
                           ("/badchunk-overflow", "chunk size overflow"),
                           ("/status-20", "status 20"), ("/status-099", "status 099"),
                           ("/status-1000", "status 1000"),
                           ("/field-space", "field name with a space"),
                           ("/field-space-colon", "space before the colon")]:
            env.case(what, expect_502, env, p, ev, path, what)
        st, data, _ = h1_get(p, "/1xx-storm")
        env.check("1xx storm: the final 200 relayed", st == 200 and data.endswith(b"hello"),
                  data[:200])
        env.case("1xx with framing fields", interim_framing, env, p)
        env.case("204 with a body", no_body_status, env, p, ev, "/204-body", 204)
        env.case("304 with a body", no_body_status, env, p, ev, "/304-body", 304)
        env.case("unsolicited response", unsolicited, env, p, ev)
        env.case("never-ending body", forever, env, p, ev)
        env.case("mid-body stall", stall, env, p, ev)
        env.case("no retry of a POST", no_post_retry, env, p, ev)
        env.check("qrux alive", p.q.alive(), p.q.log_tail())
        serves_all(env, p, "after the malicious upstream", path="/ok", want=b"hello")


if __name__ == "__main__":
    main()
