#!/usr/bin/env python3
"""gRPC and h2c upstreams through qrux, with real peers.

Debian's python3-grpcio serves qxtest.Echo (e2e/grpc_echo.proto,
e2e/grpc_app.py) over cleartext HTTP/2 behind a route with `protocol: h2c`,
and calls it as a client over TLS to qrux's HTTPS listener (HTTP/2). Stubs
are generated at test time with python3-grpc-tools (grpc_tools.protoc) into
the test's temp dir.

Cases: a client that stops reading a 100 MB server stream (qrux holds one
window); unary (request metadata up, response trailers down), server
streaming, client streaming, bidi streaming with 10,000 messages, a 20 MB
message each way, a deadline that expires (DEADLINE_EXCEEDED), an app error
status passed through with its message (and grpc_status in the access
log), 200 calls at once multiplexed; grpc-timeout enforced by qrux itself
(python3-h2 client that never cancels); a unary call over HTTP/3 framed by
hand with e2e/h3probe, grpc-status 0 in trailers; raw h2c apps
(python3-h2, server side): GOAWAY (the kept stream finishes, the refused one
goes again on a new connection), one stream per connection with
max_connections_per_upstream 2 (the third request waits for a free stream),
RST_STREAM before (502) and after the head (client stream reset), request
trailers reaching the app; an HTTP/1.1 client to an h2c app; gRPC over the
HTTP/1.1 front refused with 415; an HTTP/1.1 app's chunked trailers reaching
an HTTP/2 client; GET /config and qrux_upstream_info showing the protocol.
Idle h2c sessions (raw h2c apps counting accepted and closed sockets, a
second qrux): a reload that drops a route closes its app's idle session at
once (GOAWAY, then EOF) and leaves the kept route's open; with
upstream_keepalive_timeout_secs 2 (set by a reload) a session that carried
no stream that long is closed by qrux, and the next request opens another;
the wait queue of an h2c upstream holds connections x streams (four
requests at once, one connection of two streams: all 200).
"""

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Env, free_port, run, spawn, wait_until  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable
MiB = 1024 * 1024


def gen_stubs(env):
    out = os.path.join(env.dir, "stubs")
    os.makedirs(out, exist_ok=True)
    rc, so, se = run([PY, "-m", "grpc_tools.protoc", "-I" + HERE, "--python_out=" + out,
                      "--grpc_python_out=" + out, os.path.join(HERE, "grpc_echo.proto")],
                     timeout=60)
    if rc != 0:
        raise RuntimeError("grpc_tools.protoc failed: %s" % se.decode(errors="replace"))
    sys.path.insert(0, out)
    return out


class App:
    """e2e/grpc_app.py on a free port."""

    def __init__(self, env, stubs):
        self.port = free_port("tcp")
        self.proc = spawn([PY, os.path.join(HERE, "grpc_app.py"), stubs, str(self.port)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        line = self.proc.stdout.readline().decode(errors="replace")
        if not line.startswith("ready"):
            raise RuntimeError("grpc_app did not start: %r" % line)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class H1Trailers:
    """A raw HTTP/1.1 app answering every request with a chunked body and a
    trailer section (x-check, x-sum)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.one, args=(c,), daemon=True).start()

    def one(self, c):
        buf = b""
        with c:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, buf = buf.split(b"\r\n\r\n", 1)
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                          b"Transfer-Encoding: chunked\r\nTrailer: x-check, x-sum\r\n\r\n"
                          b"5\r\nhello\r\n6\r\n world\r\n0\r\n"
                          b"X-Check: ok\r\nx-sum: 11\r\nContent-Length: 99\r\n\r\n")


class GoawayApp:
    """A raw h2c app (python3-h2, server side). Its first connection, once
    armed, waits for two streams, sends GOAWAY naming the lower one as the
    last it processes, and answers only that one; later connections answer
    everything. Bodies name the connection (conn-1, conn-2, ...)."""

    def __init__(self, max_streams=None):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.max_streams = max_streams
        self.conns = 0
        self.armed = False
        self.echo = set()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns += 1
            threading.Thread(target=self.one, args=(c, self.conns), daemon=True).start()

    def answer(self, conn, sid, n):
        conn.send_headers(sid, [(":status", "200"), ("content-type", "text/plain")])
        conn.send_data(sid, b"conn-%d" % n, end_stream=True)

    def one(self, c, n):
        import h2.config
        import h2.connection
        import h2.events
        import h2.settings
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        if self.max_streams:
            conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS:
                                  self.max_streams})
        c.sendall(conn.data_to_send())
        held = []
        tr = {}
        with c:
            while True:
                try:
                    d = c.recv(65536)
                except OSError:
                    return
                if not d:
                    return
                for ev in conn.receive_data(d):
                    if isinstance(ev, h2.events.TrailersReceived):
                        tr[ev.stream_id] = [(k.decode(), v.decode()) for k, v in ev.headers]
                        continue
                    if isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                        continue
                    if isinstance(ev, h2.events.StreamEnded) and ev.stream_id in self.echo:
                        self.echo.discard(ev.stream_id)
                        conn.send_headers(ev.stream_id, [(":status", "200")])
                        conn.send_data(ev.stream_id, b"trailers-seen")
                        conn.send_headers(ev.stream_id, [("echo-" + k, v) for k, v in
                                                         tr.get(ev.stream_id, [])],
                                          end_stream=True)
                        continue
                    if not isinstance(ev, h2.events.RequestReceived):
                        continue
                    path = dict((k.decode(), v.decode()) for k, v in ev.headers)[":path"]
                    if path == "/rst":
                        conn.reset_stream(ev.stream_id, 2)  # INTERNAL_ERROR before a head
                    elif path == "/rst-after":
                        conn.send_headers(ev.stream_id, [(":status", "200")])
                        conn.send_data(ev.stream_id, b"partial")
                        c.sendall(conn.data_to_send())
                        time.sleep(0.3)  # the head reaches the client first
                        conn.reset_stream(ev.stream_id, 2)
                    elif path == "/slow":
                        time.sleep(0.5)  # keeps the stream open while others come
                        self.answer(conn, ev.stream_id, n)
                    elif path == "/trailers":
                        self.echo.add(ev.stream_id)  # answered at the end of the stream
                    elif n == 1 and self.armed:
                        held.append(ev.stream_id)
                        if len(held) == 2:
                            low = min(held)
                            c.sendall(conn.data_to_send())
                            # GOAWAY by hand (h2 would refuse to send after it):
                            # streams above |low| were never processed.
                            c.sendall(b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" +
                                      low.to_bytes(4, "big") + b"\x00\x00\x00\x00")
                            self.answer(conn, low, n)
                    else:
                        self.answer(conn, ev.stream_id, n)
                c.sendall(conn.data_to_send())


class IdleApp:
    """A raw h2c app (python3-h2, server side) answering every request
    with conn-N, counting the connections it accepted, those that ended
    with EOF from qrux, and the GOAWAY frames qrux sent."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = 0
        self.closed = 0
        self.goaways = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns += 1
            threading.Thread(target=self.one, args=(c, self.conns), daemon=True).start()

    def one(self, c, n):
        import h2.config
        import h2.connection
        import h2.events
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        c.sendall(conn.data_to_send())
        with c:
            while True:
                try:
                    d = c.recv(65536)
                except OSError:
                    return
                if not d:
                    self.closed += 1
                    return
                for ev in conn.receive_data(d):
                    if isinstance(ev, h2.events.ConnectionTerminated):
                        self.goaways += 1
                    elif isinstance(ev, h2.events.RequestReceived):
                        conn.send_headers(ev.stream_id, [(":status", "200")])
                        conn.send_data(ev.stream_id, b"conn-%d" % n, end_stream=True)
                try:
                    c.sendall(conn.data_to_send())
                except OSError:
                    return


def idle_config(env, port, tport, keep_port, drop_port, queue_port, keepalive=None, drop=True):
    text = ("server:\n  listen: \"[::]:%d\"\n  cert: cert.pem\n  key: key.pem\n  workers: 1\n"
            "  https_listen: \"[::]:%d\"\n  limits:\n    max_connections_per_upstream: 1\n"
            % (port, tport))
    if keepalive:
        text += "    upstream_keepalive_timeout_secs: %d\n" % keepalive
    text += "routes:\n"
    text += "  - match: \"queue.test\"\n    upstream: \"127.0.0.1:%d\"\n    protocol: h2c\n" % (
        queue_port)
    if drop:
        text += "  - match: \"drop.test\"\n    upstream: \"127.0.0.1:%d\"\n    protocol: h2c\n" % (
            drop_port)
    text += "  - match: \"*\"\n    upstream: \"127.0.0.1:%d\"\n    protocol: h2c\n" % keep_port
    return env.write_config(None, port=port, name="idle.yaml", text=text)


def idle_sessions(env):
    """Sessions that carry no stream: dropped by a reload, they close at
    once; past upstream_keepalive_timeout_secs, they close too."""
    keep, drop, qa = IdleApp(), IdleApp(), GoawayApp(max_streams=2)
    port, tport = free_port("udp"), free_port("tcp")
    path, _ = idle_config(env, port, tport, keep.port, drop.port, qa.port)
    from harness import Qrux
    q = Qrux(env, path, port)
    env.qruxes.append(q)
    if not q.wait_ready(15):
        raise RuntimeError("qrux not ready: %s" % q.log_tail(30))

    def get(host):
        rc, so, se = run(["curl", "-sk", "--http2", "--resolve", "%s:%d:127.0.0.1" % (host, tport),
                          "https://%s:%d/i" % (host, tport)], timeout=20)
        return so

    def reload(gen, **kw):
        idle_config(env, port, tport, keep.port, drop.port, qa.port, **kw)
        rx = "config reload .*generation %d" % gen
        return wait_until(lambda: any(re.search(rx, ln)
                                      for ln in q.log_text().splitlines()), 10)

    env.eq("idle: the kept route's app answers", get("keep.test"), b"conn-1")
    env.eq("idle: the dropped route's app answers", get("drop.test"), b"conn-1")
    env.eq("idle: one session open on each app, none closed",
           (keep.conns, keep.closed, drop.conns, drop.closed), (1, 0, 1, 0))
    env.check("idle: reload without drop.test (generation 2)", reload(2, drop=False),
              q.log_tail())
    # The default idle timeout is 60 s: only the reload can close it now.
    env.check("idle: the dropped route's idle session is closed by qrux",
              wait_until(lambda: drop.closed == 1, 15), (drop.conns, drop.closed))
    env.eq("idle: ... with GOAWAY first", drop.goaways, 1)
    env.eq("idle: the kept route's session stays open", (keep.conns, keep.closed), (1, 0))
    env.eq("idle: the kept session still serves", get("keep.test"), b"conn-1")

    env.check("idle: reload with upstream_keepalive_timeout_secs 2 (generation 3)",
              reload(3, drop=False, keepalive=2), q.log_tail())
    env.eq("idle: a request on the kept session", get("keep.test"), b"conn-1")
    env.check("idle: the session without a stream for 2 s is closed by qrux",
              wait_until(lambda: keep.closed == 1, 15), (keep.conns, keep.closed))
    env.eq("idle: ... with GOAWAY first", keep.goaways, 1)
    env.eq("idle: the next request opens another connection", get("keep.test"), b"conn-2")

    # The wait queue of an h2c upstream holds connections x streams: with
    # max_connections_per_upstream 1 and two streams per connection, two
    # requests go and two wait (a queue of one connection's worth would
    # answer the fourth 503).
    url = "https://queue.test:%d/slow" % tport
    res = ["--resolve", "queue.test:%d:127.0.0.1" % tport]
    rc, so, se = run(["curl", "-sk", "--http2"] + res + [url], timeout=20)
    env.eq("queue: warm-up (the app's SETTINGS are known)", so, b"conn-1")
    cmd = ["curl", "-sk", "--http2", "--parallel", "--parallel-immediate", "-w",
           "%{http_code}\n"] + res + [url, "-o", os.devnull] * 4
    rc, so, se = run(cmd, timeout=30)
    env.eq("queue: four requests at once on one connection of two streams, all 200",
           so.decode().split(), ["200"] * 4, se)
    env.eq("queue: the app saw one connection", qa.conns, 1)
    env.check("idle: qrux still running", q.alive(), q.log_tail())


def qrux_config(env, app_port, h1_port, goaway_port, limit_port):
    tport = free_port("tcp")
    aport = free_port("tcp")
    port = free_port("udp")
    cert = env.cert()
    text = ("server:\n  listen: \"[::]:%d\"\n  cert: cert.pem\n  key: key.pem\n  workers: 1\n"
            "  https_listen: \"[::]:%d\"\n  limits:\n    upstream_request_timeout_secs: 30\n"
            "    max_request_body_bytes: 67108864\n    max_upstream_response_body_bytes: 67108864\n"
            "    max_connections_per_upstream: 2\n"
            "routes:\n"
            "  - match: \"trailers.test\"\n    upstream: \"127.0.0.1:%d\"\n"
            "  - match: \"*\"\n    upstream: \"127.0.0.1:%d\"\n    protocol: h2c\n"
            "  - match: \"goaway.test\"\n    upstream: \"127.0.0.1:%d\"\n    protocol: h2c\n"
            "  - match: \"limit.test\"\n    upstream: \"127.0.0.1:%d\"\n    protocol: h2c\n"
            "admin:\n  listen: \"127.0.0.1:%d\"\n" % (port, tport, h1_port, app_port, goaway_port,
                                                     limit_port, aport))
    path, port = env.write_config(None, port=port, text=text)
    return path, port, tport, aport, cert


def channel(env, tport, cert):
    import grpc
    with open(cert.cert, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    return grpc.secure_channel("localhost:%d" % tport, creds,
                               options=[("grpc.max_receive_message_length", 64 * MiB),
                                        ("grpc.max_send_message_length", 64 * MiB)])


def cases(env, q, ch, tport, aport, pb, pbg):
    import grpc
    stub = pbg.EchoStub(ch)

    def unary():
        resp, call = stub.Unary.with_call(pb.Msg(data=b"abc", text="u1"), timeout=20,
                                          metadata=(("x-req", "meta-up"),))
        env.eq("unary: echoed data", resp.data, b"abc")
        env.eq("unary: request metadata reached the app", resp.text.split("|")[0], "meta-up")
        env.check("unary: X-Forwarded-For added", resp.text.split("|")[1] != "", resp.text)
        tr = dict(call.trailing_metadata())
        env.eq("unary: the app's trailer reached the client", tr.get("x-app-trailer"), "t-u1")
        env.eq("unary: status OK", call.code(), grpc.StatusCode.OK)
    env.case("unary", unary)

    def server_stream():
        got = list(stub.ServerStream(pb.Msg(data=b"x" * 100, n=500), timeout=30))
        env.eq("server streaming: 500 messages", len(got), 500)
        env.eq("server streaming: in order", [m.n for m in got], list(range(500)))
    env.case("server streaming", server_stream)

    def client_stream():
        resp = stub.ClientStream((pb.Msg(data=b"y" * i) for i in range(1000)), timeout=30)
        env.eq("client streaming: 1000 messages counted", resp.n, 1000)
        env.eq("client streaming: bytes summed", resp.text, str(sum(range(1000))))
    env.case("client streaming", client_stream)

    def bidi():
        n = 10000
        got = 0
        ok = True
        for i, m in enumerate(stub.Bidi((pb.Msg(data=b"%d" % i, n=i) for i in range(n)),
                                        timeout=120)):
            if m.n != i + 1 or m.data != b"%d" % i:
                ok = False
            got += 1
        env.eq("bidi: 10,000 messages back", got, n)
        env.check("bidi: each answered in order, intact", ok)
    env.case("bidi 10,000", bidi)

    def big():
        data = bytes(range(256)) * (20 * MiB // 256)
        resp = stub.Unary(pb.Msg(data=data, text="big"), timeout=120)
        env.eq("20 MB message: length back", len(resp.data), len(data))
        env.check("20 MB message: intact both ways", resp.data == data)
        env.eq("20 MB message: the app saw all of it", resp.n, len(data))
    env.case("20 MB", big)

    def deadline():
        try:
            stub.Unary(pb.Msg(n=-2), timeout=1)
            env.check("deadline: DEADLINE_EXCEEDED", False, "the call succeeded")
        except grpc.RpcError as e:
            env.eq("deadline: DEADLINE_EXCEEDED", e.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
    env.case("deadline", deadline)

    def app_error():
        try:
            stub.Unary(pb.Msg(n=-1, text="seven"), timeout=10)
            env.check("app error: INVALID_ARGUMENT", False, "the call succeeded")
        except grpc.RpcError as e:
            env.eq("app error: INVALID_ARGUMENT", e.code(), grpc.StatusCode.INVALID_ARGUMENT)
            env.eq("app error: message passed through", e.details(), "bad n: seven")
        lines = env.wait_access(q, timeout=5, grpc_status="3")
        env.check("app error: access log shows grpc_status=3", len(lines) >= 1, q.log_tail())
    env.case("app error", app_error)

    def many():
        futs = [stub.Unary.future(pb.Msg(data=b"%d" % i), timeout=30) for i in range(200)]
        res = [f.result() for f in futs]
        env.check("200 concurrent calls on one connection: all answered",
                  all(r.data == b"%d" % i for i, r in enumerate(res)))
    env.case("multiplexed", many)


def grpc_frame(msg):
    b = msg.SerializeToString()
    return b"\x00" + len(b).to_bytes(4, "big") + b


def raw_h2_call(tport, path, fields, body, timeout=15, authority=None, trailers=None):
    """One gRPC call with python3-h2 over TLS, which enforces no deadline
    itself (grpcio's client cancels on its own): returns (response headers,
    trailers, data, seconds), headers as dicts."""
    import ssl
    import h2.config
    import h2.connection
    import h2.events
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", tport), timeout=timeout),
                           server_hostname="localhost")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    hdrs = [(":method", "POST"), (":scheme", "https"),
            (":authority", authority or "localhost:%d" % tport),
            (":path", path), ("content-type", "application/grpc"), ("te", "trailers")] + fields
    conn.send_headers(1, hdrs)
    conn.send_data(1, body, end_stream=trailers is None)
    if trailers is not None:
        conn.send_headers(1, trailers, end_stream=True)
    sock.sendall(conn.data_to_send())
    head, trailers, data, reset = {}, {}, b"", None
    t0 = time.monotonic()
    done = False
    while not done:
        d = sock.recv(65536)
        if not d:
            break
        for ev in conn.receive_data(d):
            if isinstance(ev, h2.events.ResponseReceived):
                head = {k.decode(): v.decode() for k, v in ev.headers}
            elif isinstance(ev, h2.events.TrailersReceived):
                trailers = {k.decode(): v.decode() for k, v in ev.headers}
            elif isinstance(ev, h2.events.DataReceived):
                data += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                reset = ev.error_code
                done = True
            elif isinstance(ev, h2.events.StreamEnded):
                done = True
        sock.sendall(conn.data_to_send())
    sock.close()
    if reset is not None:
        head["reset"] = int(reset)
    return head, trailers, data, time.monotonic() - t0


def grpc_timeout(env, tport, pb):
    """grpc-timeout is qrux's deadline: a client that does not cancel
    itself gets DEADLINE_EXCEEDED (4) from qrux, long before the app
    answers (it sleeps 5 s)."""
    head, tr, data, secs = raw_h2_call(tport, "/qxtest.Echo/Unary", [("grpc-timeout", "700m")],
                                       grpc_frame(pb.Msg(n=-2)))
    st = tr.get("grpc-status", head.get("grpc-status"))
    env.eq("grpc-timeout 700m: grpc-status 4 (DEADLINE_EXCEEDED) from qrux", st, "4",
           (head, tr, secs))
    env.check("grpc-timeout 700m: answered before the app (%.2f s)" % secs, secs < 4.5, secs)
    env.eq("grpc-timeout 700m: :status 200", head.get(":status"), "200", head)
    head, tr, data, secs = raw_h2_call(tport, "/qxtest.Echo/Unary", [("grpc-timeout", "10S")],
                                       grpc_frame(pb.Msg(data=b"in-time")))
    env.eq("grpc-timeout 10S: answered, grpc-status 0 in trailers", tr.get("grpc-status"), "0",
           (head, tr))
    env.check("grpc-timeout 10S: the message came back", b"in-time" in data, data)


def grpc_over_h3(env, port, pb):
    """A unary call over HTTP/3 framed by hand (e2e/h3probe, nghttp3):
    the response's grpc-status comes in trailers, after the message."""
    body = os.path.join(env.dir, "h3-grpc-body")
    with open(body, "wb") as f:
        f.write(grpc_frame(pb.Msg(data=b"over-h3", text="h3")))
    cmd = [os.environ["H3PROBE_BIN"], "127.0.0.1", str(port), "-H", ":method: POST",
           "-H", ":scheme: https", "-H", ":authority: localhost", "-H",
           ":path: /qxtest.Echo/Unary", "-H", "content-type: application/grpc",
           "-H", "te: trailers", "-d", body, "--timeout", "15"]
    rc, so, se = run(cmd, timeout=30)
    lines = so.decode(errors="replace").splitlines()
    env.eq("gRPC over HTTP/3: h3probe exit 0", rc, 0, (lines, se[-500:]))
    env.check("gRPC over HTTP/3: :status 200", "status 200" in lines, lines)
    env.check("gRPC over HTTP/3: grpc-status 0 in trailers", "trailer grpc-status: 0" in lines,
              lines)
    env.check("gRPC over HTTP/3: the app's trailer too", "trailer x-app-trailer: t-h3" in lines,
              lines)
    env.check("gRPC over HTTP/3: grpc-status is not a header (it comes after the body)",
              "header grpc-status: 0" not in lines, lines)
    env.check("gRPC over HTTP/3: a body came back", any(l.startswith("body-sha256 ") and
                                                        not l.endswith(" 0") for l in lines),
              lines)


def metrics_show(env, aport, app_port, h1_port):
    rc, so, se = run(["curl", "-s", "http://127.0.0.1:%d/metrics" % aport], timeout=10)
    text = so.decode(errors="replace")
    env.check("metrics: qrux_upstream_info says h2c for the gRPC app",
              'qrux_upstream_info{upstream="127.0.0.1:%d",address="127.0.0.1:%d",protocol="h2c"} 1'
              % (app_port, app_port) in text, text[-2000:])
    env.check("metrics: qrux_upstream_info says h1 for the HTTP/1.1 app",
              'qrux_upstream_info{upstream="127.0.0.1:%d",address="127.0.0.1:%d",protocol="h1"} 1'
              % (h1_port, h1_port) in text, text[-2000:])


def goaway(env, tport, app):
    """GOAWAY from the app: the stream it kept finishes on the old
    connection; the one above its last stream id goes again on a new one."""
    url = "https://goaway.test:%d/g" % tport
    res = ["--resolve", "goaway.test:%d:127.0.0.1" % tport]
    rc, so, se = run(["curl", "-sk", "--http2"] + res + [url], timeout=20)
    env.eq("goaway: warm-up request on the first connection", so, b"conn-1")
    app.armed = True
    o1, o2 = os.path.join(env.dir, "g1"), os.path.join(env.dir, "g2")
    rc, so, se = run(["curl", "-sk", "--http2", "--parallel", "--parallel-immediate",
                      "-w", "%{http_code}\n"] + res + [url, "-o", o1, url, "-o", o2], timeout=30)
    codes = so.decode().split()
    env.eq("goaway: both requests 200", codes, ["200", "200"], se)
    bodies = sorted(open(o, "rb").read() for o in (o1, o2) if os.path.exists(o))
    env.eq("goaway: one finished on the old connection, one went again on a new one", bodies,
           [b"conn-1", b"conn-2"])
    env.eq("goaway: the app saw two connections", app.conns, 2)


def app_resets(env, tport):
    """RST_STREAM from an h2c app: 502 before the head; after it the
    client's stream is reset too (the response is cut, never completed)."""
    res = ["--resolve", "goaway.test:%d:127.0.0.1" % tport]
    rc, so, se = run(["curl", "-sk", "--http2", "-o", os.devnull, "-w", "%{http_code}"] + res +
                     ["https://goaway.test:%d/rst" % tport], timeout=20)
    env.eq("app RST_STREAM before the head: 502", so, b"502")
    head, tr, data, secs = raw_h2_call(tport, "/rst-after", [], b"",
                                       authority="goaway.test:%d" % tport)
    env.eq("app RST_STREAM after the head: the head came (200)", head.get(":status"), "200", head)
    env.check("app RST_STREAM after the head: the client stream is reset",
              head.get("reset") is not None, head)


def request_trailers(env, tport, port):
    """A client's request trailers (HTTP/2) reach the h2c app."""
    head, tr, data, secs = raw_h2_call(tport, "/trailers", [], b"body-bytes",
                                       authority="goaway.test:%d" % tport,
                                       trailers=[("x-req-trailer", "rt-1"),
                                                 ("content-type", "text/x-not-here")])
    env.eq("request trailers: 200", head.get(":status"), "200", head)
    env.eq("request trailers: the app saw x-req-trailer", tr.get("echo-x-req-trailer"), "rt-1",
           tr)
    env.check("request trailers: a field not allowed in trailers is not passed on",
              "echo-content-type" not in tr, tr)
    # The same from an HTTP/3 client (h3probe --trailer).
    body = os.path.join(env.dir, "h3-trailer-body")
    with open(body, "wb") as f:
        f.write(b"body-bytes")
    rc, so, se = run([os.environ["H3PROBE_BIN"], "127.0.0.1", str(port), "-H", ":method: POST",
                      "-H", ":scheme: https", "-H", ":authority: goaway.test", "-H",
                      ":path: /trailers", "-d", body, "--trailer", "x-req-trailer: rt-h3",
                      "--timeout", "15"], timeout=30)
    lines = so.decode(errors="replace").splitlines()
    env.check("request trailers over HTTP/3: the app saw them", "trailer echo-x-req-trailer: rt-h3"
              in lines, lines)


def stalled_client(env, q, tport, pb):
    """A client that stops reading a server stream: qrux holds one window
    (64 KiB) for it and the app is slowed by flow control; qrux's memory
    does not follow the 100 MB the app has to send."""
    import ssl
    import h2.config
    import h2.connection
    import h2.events
    before = q.vmhwm_kib()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", tport), timeout=10),
                           server_hostname="localhost")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "POST"), (":scheme", "https"),
                          (":authority", "localhost:%d" % tport),
                          (":path", "/qxtest.Echo/ServerStream"),
                          ("content-type", "application/grpc"), ("te", "trailers")])
    conn.send_data(1, grpc_frame(pb.Msg(data=b"z" * 1000, n=100000)), end_stream=True)
    sock.sendall(conn.data_to_send())
    got = 0
    end = time.monotonic() + 3
    sock.settimeout(0.5)
    while time.monotonic() < end:
        try:
            d = sock.recv(65536)
        except socket.timeout:
            continue
        if not d:
            break
        for ev in conn.receive_data(d):
            if isinstance(ev, h2.events.DataReceived):
                got += len(ev.data)  # never acknowledged: the window stays shut
        sock.sendall(conn.data_to_send())
    after = q.vmhwm_kib()
    sock.close()
    env.check("stalled client: got no more than its window (%d bytes)" % got, got <= 65535, got)
    env.check("stalled client: qrux's peak memory grew by %d KiB (< 16 MiB) while the app "
              "had 100 MB to send" % (after - before), after - before < 16 * 1024,
              (before, after))


def max_streams(env, tport, app):
    """An app that allows one stream per connection, at most two
    connections per upstream (max_connections_per_upstream): of three
    requests at once two go at once on two connections, the third waits in
    the pool's queue for the first free stream and then goes."""
    url = "https://limit.test:%d/slow" % tport
    res = ["--resolve", "limit.test:%d:127.0.0.1" % tport]
    rc, so, se = run(["curl", "-sk", "--http2"] + res + [url], timeout=20)
    env.eq("max streams 1: warm-up (the app's SETTINGS are known)", so, b"conn-1")
    outs = [os.path.join(env.dir, "m%d" % i) for i in range(3)]
    cmd = ["curl", "-sk", "--http2", "--parallel", "--parallel-immediate", "-w",
           "%{http_code}\n"] + res
    for o in outs:
        cmd += [url, "-o", o]
    rc, so, se = run(cmd, timeout=30)
    env.eq("max streams 1: three requests at once, all 200", so.decode().split(),
           ["200"] * 3, se)
    bodies = sorted(open(o, "rb").read() for o in outs if os.path.exists(o))
    env.eq("max streams 1: served on the two connections", sorted(set(bodies)),
           [b"conn-1", b"conn-2"], bodies)
    env.eq("max streams 1: the app saw two connections (the limit)", app.conns, 2)


def h1_front_to_h2c(env, tport):
    """A plain request over HTTP/1.1 goes to an h2c app as HTTP/2."""
    rc, so, se = run(["curl", "-sk", "--http1.1", "-w", " %{http_code} %{http_version}",
                      "--resolve", "goaway.test:%d:127.0.0.1" % tport,
                      "https://goaway.test:%d/h1" % tport], timeout=20)
    body, code, ver = so.decode().rsplit(" ", 2)
    env.eq("HTTP/1.1 client to an h2c app: 200 over HTTP/1.1", (code, ver), ("200", "1.1"))
    env.check("HTTP/1.1 client to an h2c app: the app's body", body.startswith("conn-"), body)


def grpc_over_h1(env, tport):
    rc, so, se = run(["curl", "-sk", "--http1.1", "-o", "-", "-w", "\n%{http_code}",
                      "-H", "content-type: application/grpc", "--data-binary", "x",
                      "https://localhost:%d/qxtest.Echo/Unary" % tport], timeout=20)
    body, _, code = so.decode(errors="replace").rpartition("\n")
    env.eq("gRPC over HTTP/1.1: 415", code, "415")
    env.check("gRPC over HTTP/1.1: the body says why", "HTTP/2" in body, body)


def h1_trailers(env, tport):
    rc, so, se = run(["curl", "-sk", "--http2", "-D", "-", "-o", os.devnull,
                      "--resolve", "trailers.test:%d:127.0.0.1" % tport,
                      "https://trailers.test:%d/t" % tport], timeout=20)
    text = so.decode(errors="replace").lower()
    env.check("h1 chunked trailers over h2: x-check: ok after the body", "x-check: ok" in text,
              text)
    env.check("h1 chunked trailers over h2: x-sum: 11", "x-sum: 11" in text, text)
    env.check("h1 chunked trailers: a framing field from the trailer is dropped",
              "content-length: 99" not in text, text)


def config_shows(env, aport):
    rc, so, se = run(["curl", "-s", "http://127.0.0.1:%d/config" % aport], timeout=10)
    cfg = json.loads(so.decode())
    routes = cfg["config"]["routes"]
    env.eq("GET /config: the h2c route says protocol h2c",
           [r.get("protocol") for r in routes], [None, "h2c", "h2c", "h2c"])


def main():
    with Env("grpc") as env:
        stubs = gen_stubs(env)
        import grpc_echo_pb2 as pb
        import grpc_echo_pb2_grpc as pbg
        app = App(env, stubs)
        h1 = H1Trailers()
        ga = GoawayApp()
        lim = GoawayApp(max_streams=1)
        path, port, tport, aport, cert = qrux_config(env, app.port, h1.port, ga.port, lim.port)
        from harness import Qrux
        q = Qrux(env, path, port)
        env.qruxes.append(q)
        if not q.wait_ready(15):
            raise RuntimeError("qrux not ready: %s" % q.log_tail(30))
        ch = channel(env, tport, cert)
        try:
            # First, while qrux's peak memory is still its start-up one.
            env.case("stalled client", stalled_client, env, q, tport, pb)
            cases(env, q, ch, tport, aport, pb, pbg)
            env.case("grpc-timeout", grpc_timeout, env, tport, pb)
            env.case("gRPC over HTTP/3", grpc_over_h3, env, port, pb)
            env.case("GOAWAY", goaway, env, tport, ga)
            env.case("max concurrent streams", max_streams, env, tport, lim)
            env.case("app resets", app_resets, env, tport)
            env.case("HTTP/1.1 front to h2c", h1_front_to_h2c, env, tport)
            env.case("request trailers", request_trailers, env, tport, port)
            env.case("gRPC over HTTP/1.1", grpc_over_h1, env, tport)
            env.case("metrics", metrics_show, env, aport, app.port, h1.port)
            env.case("h1 trailers", h1_trailers, env, tport)
            env.case("config", config_shows, env, aport)
            env.case("idle h2c sessions", idle_sessions, env)
        finally:
            ch.close()
            app.stop()
        env.check("qrux still running", q.alive(), q.log_tail())


if __name__ == "__main__":
    main()
