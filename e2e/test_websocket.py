#!/usr/bin/env python3
"""WebSocket through qrux's HTTPS listener, every front, real peers.

The app is e2e/ws_app.py on Debian's python3-websockets (echo, a server that
pushes, one that floods, one that closes with a given code). Clients:
  - python3-websockets over HTTP/1.1 (Upgrade) on TLS: echo of text and
    binary, the app's pushes, the fields the app receives (X-Forwarded-For,
    the client's Sec-WebSocket-Key, no hop-by-hop leftovers), close codes
    with their reason both ways (4001 from the app, 4002 from the client),
    a 20 MiB message each way intact;
  - an app that answers the upgrade with an ordinary response (403, 200):
    the client gets that answer;
  - a route with `websocket: false`: 403 with a body that says so;
  - a client that stops reading while the app floods: qrux's RSS stays
    bounded and the app is held back (it cannot send more than the buffers
    on the way hold);
  - python3-h2 with extended CONNECT (RFC 8441) on ALPN h2: the SETTINGS
    carry ENABLE_CONNECT_PROTOCOL, :protocol websocket gets 200, DATA
    frames carry WebSocket frames both ways (echo), END_STREAM half-closes;
  - Chromium's own `new WebSocket()` from a page served through qrux:
    echo round trip, and which protocol carried it (asserted from the
    access log);
  - metrics: qrux_websocket_tunnels back at 0 once all closed, bytes each
    way counted, one "websocket closed" log line per tunnel.
"""

import asyncio
import base64
import hashlib
import json
import os
import re
import socket
import ssl
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Env, free_port, spawn, wait_until  # noqa: E402

import websockets  # noqa: E402  (Debian's python3-websockets)
import websockets.client  # noqa: E402
import websockets.exceptions  # noqa: E402

MiB = 1024 * 1024
E2E_DIR = os.path.dirname(os.path.abspath(__file__))


class WsApp:
    def __init__(self, env):
        self.log = open(os.path.join(env.dir, "ws_app.log"), "wb")
        self.proc = spawn([sys.executable, os.path.join(E2E_DIR, "ws_app.py")],
                          stdout=subprocess.PIPE, stderr=self.log)
        line = self.proc.stdout.readline()
        m = re.match(rb"listening (\d+)", line or b"")
        if not m:
            raise RuntimeError("ws_app.py did not start: %r" % line)
        self.port = int(m.group(1))
        self.addr = "127.0.0.1:%d" % self.port

    def flood_sent(self):
        _, _, body = harness.http_get(self.port, "/__flood")
        return int(body)


def start_qrux(env, app, limits=None, ws_off_host=None):
    env.cert()
    port, tport = free_port("udp"), free_port("tcp")
    lines = ["server:", '  listen: "[::]:%d"' % port, '  https_listen: "127.0.0.1:%d"' % tport,
             '  cert: "cert.pem"', '  key: "key.pem"', "  workers: 1"]
    if limits:
        lines.append("  limits:")
        lines += ["    %s: %s" % kv for kv in limits.items()]
    lines.append("routes:")
    if ws_off_host:
        lines += ['  - match: "%s"' % ws_off_host, '    upstream: "%s"' % app.addr,
                  "    websocket: false"]
    lines += ['  - match: "*"', '    upstream: "%s"' % app.addr]
    q_aport = free_port("tcp")
    lines += ["admin:", '  listen: "127.0.0.1:%d"' % q_aport]
    path = os.path.join(env.dir, "qx-ws-%d.yaml" % port)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    q = harness.Qrux(env, path, port)
    env.qruxes.append(q)
    if not q.wait_ready(15):
        raise RuntimeError("qrux not ready:\n%s" % q.log_tail(30))
    q.tport = tport
    q.aport = q_aport
    return q


def client_ssl(alpn=("http/1.1",)):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(list(alpn))
    return ctx


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def wss(q, path):
    return "wss://localhost:%d%s" % (q.tport, path)


# ---------------------------------------------------------------------------
# HTTP/1.1 Upgrade with python3-websockets


def h1_echo(env, q):
    async def go():
        async with websockets.client.connect(wss(q, "/echo"), ssl=client_ssl(),
                                             max_size=None) as ws:
            out = []
            await ws.send("hello over qrux")
            out.append(await ws.recv())
            await ws.send(b"\x00\x01binary\xff")
            out.append(await ws.recv())
            for i in range(50):
                await ws.send("msg %d" % i)
            for i in range(50):
                out.append(await ws.recv())
            return out, ws.response_headers
    out, hdrs = run(go())
    env.eq("h1 echo: text", out[0], "hello over qrux")
    env.eq("h1 echo: binary", out[1], b"\x00\x01binary\xff")
    env.eq("h1 echo: 50 messages in order", out[2:], ["msg %d" % i for i in range(50)])
    env.eq("h1 101: upgrade field", (hdrs.get("upgrade") or "").lower(), "websocket")
    env.check("h1 101: the app's sec-websocket-accept", hdrs.get("sec-websocket-accept"),
              dict(hdrs))
    lines = env.wait_access(q, path="/echo", status=101)
    env.check("h1 echo: access line with status 101, proto h1",
              bool(lines) and lines[0].get("proto") == "h1", q.log_tail())


def h1_push(env, q):
    async def go():
        async with websockets.client.connect(wss(q, "/push?n=200&size=3000"), ssl=client_ssl(),
                                             max_size=None) as ws:
            got = []
            try:
                while True:
                    got.append(await ws.recv())
            except websockets.exceptions.ConnectionClosedOK:
                pass
            return got, ws.close_code, ws.close_reason
    got, code, reason = run(go())
    env.eq("h1 push: 200 messages", len(got), 200)
    env.check("h1 push: each message exact",
              all(m == bytes([i & 0xFF]) * 3000 for i, m in enumerate(got)))
    env.eq("h1 push: close code from the app", code, 1000)
    env.eq("h1 push: close reason from the app", reason, "pushed")
    lines = env.wait_access(q, path="/push?n=200&size=3000")
    env.check("h1 push: the access line says the tunnel ended cleanly (no incomplete=1)",
              bool(lines) and lines[0].get("incomplete") is None, lines)
    env.check("h1 push: a 'websocket closed' line with the app's end",
              re.search(r"websocket closed proto=h1 .*path=/push\?n=200&size=3000 .*app_end=1",
                        q.log_text()) is not None, q.log_tail())


def h1_headers(env, q):
    async def go():
        async with websockets.client.connect(wss(q, "/headers"), ssl=client_ssl(),
                                             extra_headers={"X-Custom": "abc"}) as ws:
            return json.loads(await ws.recv()), ws.request_headers
    seen, sent = run(go())
    env.eq("h1 app sees: sec-websocket-key of the client", seen.get("sec-websocket-key"),
           sent.get("sec-websocket-key"))
    env.eq("h1 app sees: sec-websocket-version", seen.get("sec-websocket-version"), "13")
    env.eq("h1 app sees: upgrade", seen.get("upgrade"), "websocket")
    env.eq("h1 app sees: connection", seen.get("connection"), "Upgrade")
    env.eq("h1 app sees: x-custom", seen.get("x-custom"), "abc")
    env.eq("h1 app sees: x-forwarded-for", seen.get("x-forwarded-for"), "127.0.0.1")
    env.eq("h1 app sees: x-forwarded-proto", seen.get("x-forwarded-proto"), "https")


def h1_close_codes(env, q):
    async def app_closes():
        async with websockets.client.connect(wss(q, "/close"), ssl=client_ssl()) as ws:
            await ws.send("4001 app says goodbye")
            try:
                await ws.recv()
            except websockets.exceptions.ConnectionClosed:
                pass
            return ws.close_code, ws.close_reason

    async def client_closes():
        async with websockets.client.connect(wss(q, "/echo"), ssl=client_ssl()) as ws:
            await ws.close(4002, "client leaves")
            return ws.close_code, ws.close_reason
    code, reason = run(app_closes())
    env.eq("h1 close from the app: code 4001", code, 4001)
    env.eq("h1 close from the app: reason", reason, "app says goodbye")
    code, reason = run(client_closes())
    env.eq("h1 close from the client: the app echoes 4002", code, 4002)
    env.eq("h1 close from the client: reason", reason, "client leaves")


def h1_big(env, q):
    up = os.urandom(20 * MiB)

    async def go():
        async with websockets.client.connect(wss(q, "/echo"), ssl=client_ssl(), max_size=None,
                                             compression=None) as ws:
            await ws.send(up)
            return await ws.recv()
    down = run(go(), timeout=240)
    env.eq("h1 20 MiB message up and back: length", len(down), len(up))
    env.eq("h1 20 MiB message up and back: sha256", hashlib.sha256(down).hexdigest(),
           hashlib.sha256(up).hexdigest())


def h1_refused(env, q, app):
    async def status_of(path, host=None):
        hdrs = {"Host": host} if host else None
        try:
            async with websockets.client.connect(wss(q, path), ssl=client_ssl(),
                                                 extra_headers=hdrs):
                return 101, b""
        except websockets.exceptions.InvalidStatusCode as e:
            return e.status_code, getattr(e, "headers", None)
    st, _ = run(status_of("/forbid"))
    env.eq("h1 app refuses the upgrade (403): the client gets 403", st, 403)
    st, _ = run(status_of("/plain"))
    env.eq("h1 app answers the upgrade with 200: the client gets 200", st, 200)
    # The switch: a raw request so the body can be read.
    raw = raw_upgrade(q.tport, "/echo", host="nows.test")
    env.check("websocket: false: 403", raw.startswith(b"HTTP/1.1 403"), raw[:200])
    env.check("websocket: false: the body says why",
              b"WebSocket is turned off for this route" in raw, raw[:300])


def raw_upgrade(port, path, host="localhost"):
    s = client_ssl().wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                 server_hostname=host)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
               % (path, host, key)).encode())
    data = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    except (socket.timeout, ssl.SSLError, OSError):
        pass
    s.close()
    return data


def h1_slow_reader(env, q, app):
    """The app floods; the client reads the 101 and then nothing."""
    s = client_ssl().wrap_socket(socket.create_connection(("127.0.0.1", q.tport), timeout=10),
                                 server_hostname="localhost")
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /flood HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n" % key).encode())
    head = s.recv(4096)
    env.check("slow reader: 101", head.startswith(b"HTTP/1.1 101"), head[:100])
    # Socket buffers fill along the way; then the app can send no more.
    last = [-1]

    def stalled():
        n = app.flood_sent()
        same = n == last[0]
        last[0] = n
        return same and n > 0
    wait_until(stalled, 30, interval=1.0)
    sent = app.flood_sent()
    time.sleep(2)
    env.eq("slow reader: the app is held back (sent bytes stop growing)", app.flood_sent(), sent)
    env.check("slow reader: the app sent < 64 MiB before it was held back (sent %d)" % sent,
              sent < 64 * MiB)
    hwm = q.vmhwm_kib()
    cap = 64 * harness.RSS_FACTOR  # a sanitizer build's shadow memory counts too
    env.check("slow reader: qrux peak RSS < %d MiB (got %d KiB)" % (cap, hwm), hwm < cap * 1024)
    s.close()


# ---------------------------------------------------------------------------
# HTTP/2 extended CONNECT (RFC 8441) with python3-h2


def ws_frame(payload, opcode=0x2, fin=True, mask=True):
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        hdr = bytes([b0, (0x80 if mask else 0) | n])
    elif n < 65536:
        hdr = bytes([b0, (0x80 if mask else 0) | 126]) + struct.pack(">H", n)
    else:
        hdr = bytes([b0, (0x80 if mask else 0) | 127]) + struct.pack(">Q", n)
    if not mask:
        return hdr + payload
    key = os.urandom(4)
    return hdr + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))


def ws_parse(buf):
    """Unmasked server frames from buf: ([(opcode, payload)], rest)."""
    out = []
    while len(buf) >= 2:
        op, n = buf[0] & 0x0F, buf[1] & 0x7F
        off = 2
        if n == 126:
            if len(buf) < 4:
                break
            n, off = struct.unpack(">H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, off = struct.unpack(">Q", buf[2:10])[0], 10
        if len(buf) < off + n:
            break
        out.append((op, buf[off:off + n]))
        buf = buf[off + n:]
    return out, buf


def h2_extended_connect(env, q):
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    s = client_ssl(("h2",)).wrap_socket(socket.create_connection(("127.0.0.1", q.tport),
                                                                 timeout=10),
                                        server_hostname="localhost")
    env.eq("h2: ALPN", s.selected_alpn_protocol(), "h2")
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    s.sendall(c.data_to_send())
    enable = None
    events = []

    def pump(until, timeout=15):
        end = time.time() + timeout
        while time.time() < end:
            for e in events:
                if until(e):
                    return e
            try:
                data = s.recv(65536)
            except socket.timeout:
                continue
            if not data:
                return None
            for e in c.receive_data(data):
                events.append(e)
                if isinstance(e, h2.events.DataReceived):
                    c.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            s.sendall(c.data_to_send())
        return None
    ev = pump(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
    if ev:
        st = ev.changed_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL)
        enable = st.new_value if st else None
    env.eq("h2: SETTINGS_ENABLE_CONNECT_PROTOCOL = 1", enable, 1)

    sid = c.get_next_available_stream_id()
    c.send_headers(sid, [(":method", "CONNECT"), (":protocol", "websocket"),
                         (":scheme", "https"), (":path", "/echo"),
                         (":authority", "localhost:%d" % q.tport),
                         ("sec-websocket-version", "13")])
    s.sendall(c.data_to_send())
    ev = pump(lambda e: isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid)
    hdrs = dict(ev.headers) if ev else {}
    env.eq("h2 extended CONNECT: status 200", hdrs.get(b":status"), b"200", hdrs)
    env.check("h2 extended CONNECT: no sec-websocket-accept to the client",
              b"sec-websocket-accept" not in hdrs, hdrs)

    got = b""
    msgs = [b"first h2 message", os.urandom(100000), b"x" * 70000]
    frames = []

    def send(data):
        # As the stream's and the connection's flow-control windows allow.
        while data:
            room = min(c.local_flow_control_window(sid), c.max_outbound_frame_size)
            if room <= 0:
                pump(lambda e: isinstance(e, h2.events.WindowUpdated), timeout=10)
                events[:] = [e for e in events if not isinstance(e, h2.events.WindowUpdated)]
                continue
            c.send_data(sid, data[:room])
            s.sendall(c.data_to_send())
            data = data[room:]

    def have(k):
        def f(_e):
            nonlocal got, frames
            keep = []
            for e in events:
                if isinstance(e, h2.events.DataReceived) and e.stream_id == sid:
                    got += e.data
                elif e is not None:
                    keep.append(e)
            events[:] = keep + [None]
            fr, got = ws_parse(got)
            frames += fr
            return len(frames) >= k
        return f
    for i, m in enumerate(msgs):
        send(ws_frame(m))
        events.append(None)
        pump(have(i + 1), timeout=30)
    env.eq("h2 echo: 3 messages back", [p for _, p in frames], msgs)
    # Close handshake: the client's close frame, the app's reply, then
    # END_STREAM both ways.
    c.send_data(sid, ws_frame(struct.pack(">H", 4003) + b"h2 bye", opcode=0x8))
    s.sendall(c.data_to_send())
    closed = []

    def ended(e):
        nonlocal got
        if isinstance(e, h2.events.DataReceived) and e.stream_id == sid:
            got += e.data
        if isinstance(e, h2.events.StreamEnded) and e.stream_id == sid:
            closed.append(True)
        return bool(closed)
    pump(ended, timeout=15)
    fr, _ = ws_parse(got)
    env.check("h2 close: the app's close frame echoes 4003",
              bool(fr) and fr[0][0] == 0x8 and fr[0][1][:2] == struct.pack(">H", 4003), fr)
    env.check("h2 close: END_STREAM from qrux after the app closed", bool(closed))
    c.end_stream(sid)
    s.sendall(c.data_to_send())
    lines = env.wait_access(q, path="/echo", proto="h2")
    env.check("h2: access line for the tunnel (status 200, method CONNECT)",
              bool(lines) and lines[0].get("status") == "200"
              and lines[0].get("method") == "CONNECT", q.log_tail())

    # What the app receives for an extended CONNECT: a GET upgrade with a
    # key qrux made, version 13, the client's protocol and extensions.
    sid = c.get_next_available_stream_id()
    c.send_headers(sid, [(":method", "CONNECT"), (":protocol", "websocket"),
                         (":scheme", "https"), (":path", "/headers"),
                         (":authority", "localhost:%d" % q.tport),
                         ("sec-websocket-version", "13"),
                         ("sec-websocket-protocol", "chat, superchat"),
                         ("sec-websocket-extensions", "x-test-ext")])
    s.sendall(c.data_to_send())
    got, frames = b"", []
    events.append(None)
    pump(have(1), timeout=15)
    seen = json.loads(frames[0][1]) if frames else {}
    key = seen.get("sec-websocket-key", "")
    env.check("h2 app sees: a Sec-WebSocket-Key qrux made (16 bytes, base64)",
              len(base64.b64decode(key + "==")[:16]) == 16 and len(key) == 24, seen)
    env.eq("h2 app sees: sec-websocket-version", seen.get("sec-websocket-version"), "13")
    env.eq("h2 app sees: the client's sec-websocket-protocol",
           seen.get("sec-websocket-protocol"), "chat, superchat")
    env.eq("h2 app sees: the client's sec-websocket-extensions",
           seen.get("sec-websocket-extensions"), "x-test-ext")
    env.eq("h2 app sees: upgrade", seen.get("upgrade"), "websocket")
    c.reset_stream(sid)
    s.sendall(c.data_to_send())
    s.close()


# ---------------------------------------------------------------------------
# Chromium's own WebSocket


def chromium_ws(env, q):
    url = "https://localhost:%d/page" % q.tport
    # QUIC is forced for an origin nobody uses: the page comes over TCP (h2).
    rc, dom, err = env.chromium(url, "localhost:1", timeout=60)
    m = re.search(r'<div id="out">([^<]*)</div>', dom)
    text = m.group(1) if m else None
    env.eq("chromium: the page's WebSocket got its echo and closed with 4005", text,
           "echo=chromium says hi closed=4005", (dom[-400:], err[-800:]))
    page = env.wait_access(q, path="/page")
    env.check("chromium: the page came over h2", bool(page) and page[0].get("proto") == "h2",
              page)
    tunnel = env.wait_access(q, path="/echo?chromium")
    used = [(a.get("proto"), a.get("method"), a.get("status")) for a in tunnel]
    # Chromium carries WebSocket over an HTTP/2 connection it already has
    # when the server sent SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441).
    env.eq("chromium: its WebSocket went as h2 extended CONNECT (200)", used[-1:],
           [("h2", "CONNECT", "200")], used)


# ---------------------------------------------------------------------------
# HTTP/3 extended CONNECT (RFC 9220) with e2e/h3probe


def h3_connect(env, q, path, text, extra=(), timeout=20):
    """An extended CONNECT (RFC 9220) to |path| with h3probe, one masked text
    frame |text| as the tunnel's first bytes (--half-close). Returns
    (h3probe's output lines, its stderr tail, the bytes /echo1 answers
    with: the echo and the app's close 4001)."""
    probe = os.environ.get("H3PROBE_BIN") or os.path.join(
        os.path.dirname(os.environ["QRUX_BIN"]), "h3probe")
    body = os.path.join(env.dir, "h3-ws-body-%s" % hashlib.sha256(text).hexdigest()[:12])
    with open(body, "wb") as f:
        f.write(ws_frame(text, opcode=0x1))
    close = struct.pack(">H", 4001) + b"h3 bye"
    want = ws_frame(text, opcode=0x1, mask=False) + ws_frame(close, opcode=0x8, mask=False)
    r = subprocess.run([probe, "127.0.0.1", str(q.port), "-H", ":method: CONNECT",
                        "-H", ":protocol: websocket", "-H", ":scheme: https",
                        "-H", ":authority: localhost:%d" % q.port, "-H", ":path: " + path,
                        "-H", "sec-websocket-version: 13", "-d", body, "--half-close",
                        "--timeout", str(timeout)] + list(extra),
                       capture_output=True, timeout=2 * timeout)
    return r.stdout.decode(errors="replace").splitlines(), r.stderr[-500:], want


def h3_extended_connect(env, q):
    out, err, want = h3_connect(env, q, "/echo1", b"hello over h3")
    env.check("h3 extended CONNECT: status 200", "status 200" in out, out + [err])
    env.check("h3: no sec-websocket-accept to the client",
              not any(ln.startswith("header sec-websocket-accept") for ln in out), out)
    env.check("h3 tunnel: the echo and the app's close reply (4001), exact bytes",
              "body-sha256 %s %d" % (hashlib.sha256(want).hexdigest(), len(want)) in out, out)
    env.check("h3 tunnel: stream closed cleanly (H3_NO_ERROR)", "stream-close 0x100" in out, out)
    lines = env.wait_access(q, path="/echo1", proto="h3")
    env.check("h3: access line for the tunnel (status 200, method CONNECT)",
              bool(lines) and lines[0].get("status") == "200"
              and lines[0].get("method") == "CONNECT", q.log_tail())


def h3_wrong_accept(env, q):
    """Extended CONNECT: qrux makes the Sec-WebSocket-Key the app sees, so it
    checks the app's accept (RFC 6455 4.1) and answers 502 when the 101 does
    not answer that key, with the reason at warn."""
    for path, why in (("/badaccept", "does not answer qrux's key"),
                      ("/noaccept", "has no Sec-WebSocket-Accept")):
        out, err, _ = h3_connect(env, q, path, b"never echoed")
        env.check("h3 extended CONNECT, %s: 502, not a tunnel" % path, "status 502" in out,
                  out + [err])
        env.check("h3 extended CONNECT, %s: the warn line says why" % path,
                  wait_until(lambda: ("websocket: the app's" in q.log_tail() and
                                      why in q.log_tail()), 5), q.log_tail())


def h3_quiet_tunnel(env, q):
    """quic_idle_timeout_secs 2: an HTTP/3 tunnel whose client sends nothing
    for 5 s and no PINGs of its own (h3probe --body-delay) lives on, because
    qrux PINGs while a tunnel is open; the echo then comes back whole."""
    out, err, want = h3_connect(env, q, "/echo1", b"after 5 quiet seconds",
                                extra=["--body-delay", "5000"], timeout=30)
    env.check("quiet h3 tunnel: status 200", "status 200" in out, out + [err])
    env.check("quiet h3 tunnel: the connection outlived 2.5 idle timeouts; echo and close "
              "reply exact", "body-sha256 %s %d" % (hashlib.sha256(want).hexdigest(),
                                                    len(want)) in out,
              out + [err] + q.log_tail().splitlines())


# ---------------------------------------------------------------------------
# limits: max_websocket_tunnels 1, websocket_idle_timeout_secs 2


def limits(env, q):
    async def go():
        ws1 = await websockets.client.connect(wss(q, "/echo"), ssl=client_ssl())
        await ws1.send("one")
        first = await ws1.recv()
        raw = await asyncio.get_running_loop().run_in_executor(
            None, raw_upgrade, q.tport, "/echo")
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(ws1.recv(), 20)
            idle_closed = False
        except websockets.exceptions.ConnectionClosed:
            idle_closed = True
        waited = time.monotonic() - t0
        await ws1.close()
        async with websockets.client.connect(wss(q, "/echo"), ssl=client_ssl()) as ws3:
            await ws3.send("three")
            third = await ws3.recv()
        return first, raw, idle_closed, waited, third
    first, raw, idle_closed, waited, third = run(go())
    env.eq("limits: the first tunnel works", first, "one")
    env.check("limits: a second tunnel past max_websocket_tunnels gets 503",
              raw.startswith(b"HTTP/1.1 503"), raw[:200])
    env.check("limits: ... with a body that says why", b"too many WebSocket tunnels" in raw,
              raw[:300])
    env.check("limits: an idle tunnel is closed by qrux (websocket_idle_timeout_secs 2)",
              idle_closed)
    env.check("limits: not before the idle timeout (closed after %.1f s)" % waited,
              waited >= 1.0)
    env.eq("limits: a tunnel after that works again", third, "three")


# ---------------------------------------------------------------------------
# limits: max_websocket_tunnels_per_connection 2 (HTTP/2: many streams, one
# connection)


def h2_tunnels(port, n):
    """Opens |n| extended CONNECT streams to /echo on one HTTP/2
    connection, one after the other (each kept open); returns each one's
    (status, body) and the socket (closed by the caller)."""
    import h2.config
    import h2.connection
    import h2.events

    s = client_ssl(("h2",)).wrap_socket(socket.create_connection(("127.0.0.1", port),
                                                                 timeout=10),
                                        server_hostname="localhost")
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    s.sendall(c.data_to_send())
    out = []
    settled = False
    for _ in range(n):
        sid = c.get_next_available_stream_id()
        status, body, ended = None, b"", False
        end = time.time() + 15
        while time.time() < end and not ended and not (status == b"200"):
            if settled and status is None and not c.streams.get(sid):
                c.send_headers(sid, [(":method", "CONNECT"), (":protocol", "websocket"),
                                     (":scheme", "https"), (":path", "/echo"),
                                     (":authority", "localhost:%d" % port),
                                     ("sec-websocket-version", "13")])
                s.sendall(c.data_to_send())
            try:
                data = s.recv(65536)
            except socket.timeout:
                continue
            if not data:
                break
            for e in c.receive_data(data):
                if isinstance(e, h2.events.RemoteSettingsChanged):
                    settled = True
                elif isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid:
                    status = dict(e.headers).get(b":status")
                elif isinstance(e, h2.events.DataReceived) and e.stream_id == sid:
                    body += e.data
                    c.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                elif isinstance(e, h2.events.StreamEnded) and e.stream_id == sid:
                    ended = True
            s.sendall(c.data_to_send())
        out.append((status, body))
    return out, s


def limits_per_connection(env, q):
    got, s1 = h2_tunnels(q.tport, 3)
    again, s2 = h2_tunnels(q.tport, 1)
    s1.close()
    s2.close()
    env.eq("per connection: the first two tunnels on one HTTP/2 connection open (200)",
           [g[0] for g in got[:2]], [b"200", b"200"], got)
    env.eq("per connection: the third on that connection gets 503", got[2][0], b"503", got)
    env.check("per connection: ... with a body that says why",
              b"too many WebSocket tunnels on this connection" in got[2][1], got[2])
    env.eq("per connection: another connection still opens one (200)", again[0][0], b"200",
           again)


# ---------------------------------------------------------------------------
# metrics


def metrics_after(env, q):
    ok = wait_until(lambda: "qrux_websocket_tunnels 0\n" in metrics(q), 10)
    env.check("metrics: qrux_websocket_tunnels back to 0", ok, metrics(q)[-2000:])
    m = metrics(q)
    vin = re.search(r'qrux_websocket_bytes_total\{direction="in"\} (\d+)', m)
    vout = re.search(r'qrux_websocket_bytes_total\{direction="out"\} (\d+)', m)
    env.check("metrics: > 20 MiB of tunnel bytes in", vin and int(vin.group(1)) > 20 * MiB,
              vin.group(0) if vin else m[-500:])
    env.check("metrics: > 20 MiB of tunnel bytes out", vout and int(vout.group(1)) > 20 * MiB,
              vout.group(0) if vout else "")
    env.check("log: 'websocket closed' lines", "websocket closed proto=h1" in q.log_text(),
              q.log_tail())


def metrics(q):
    import urllib.request
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % q.aport, timeout=5) as r:
            return r.read().decode()
    except OSError as e:
        return "error: %s" % e


def main():
    with Env("websocket") as env:
        app = WsApp(env)
        q = start_qrux(env, app, ws_off_host="nows.test")
        env.case("h1: echo", h1_echo, env, q)
        env.case("h1: pushes from the app", h1_push, env, q)
        env.case("h1: what the app receives", h1_headers, env, q)
        env.case("h1: close codes both ways", h1_close_codes, env, q)
        env.case("h1: 20 MiB each way", h1_big, env, q)
        env.case("h1: refused upgrades", h1_refused, env, q, app)
        env.case("h2: extended CONNECT", h2_extended_connect, env, q)
        env.case("h3: extended CONNECT", h3_extended_connect, env, q)
        env.case("h3: an app's 101 that does not answer qrux's key", h3_wrong_accept, env, q)
        env.case("chromium: new WebSocket()", chromium_ws, env, q)
        env.case("metrics and log", metrics_after, env, q)
        env.case("h1: a client that stops reading", h1_slow_reader, env, q, app)
        env.check("qrux still running", q.alive(), q.log_tail())
        ql = start_qrux(env, app, limits={"max_websocket_tunnels": 1,
                                          "websocket_idle_timeout_secs": 2})
        env.case("limits", limits, env, ql)
        qc = start_qrux(env, app, limits={"max_websocket_tunnels_per_connection": 2})
        env.case("limits per connection", limits_per_connection, env, qc)
        qi = start_qrux(env, app, limits={"quic_idle_timeout_secs": 2})
        env.case("h3: a quiet tunnel outlives the QUIC idle timeout", h3_quiet_tunnel, env, qi)


if __name__ == "__main__":
    main()
