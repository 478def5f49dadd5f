"""attacklib.py - pieces the attack tests (test_attacks_*.py) share.

A qrux with every listener (QUIC, HTTPS fallback, admin), raw HTTP/2 frames
and a small HTTP/2 client on python3-h2, HTTP/1.1 over TLS, /metrics
values, the process's open descriptors and RSS, and `serves_all`: the check
every attack ends with (a normal request still answered over HTTP/3,
HTTP/2 and HTTP/1.1, exact body).
"""

import os
import re
import socket
import ssl
import struct
import time

from harness import free_port, pattern

# HTTP/2 frame types and flags (RFC 9113 §6)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 8, 9, 11


class Proxy:
    """qrux on a UDP (QUIC) port, a TCP (HTTPS) port and an admin port."""

    def __init__(self, env, routes, limits=None, workers=1, extra=""):
        for attempt in range(3):
            # A free port may be taken by another test before qrux binds it
            # (qrux then refuses to start): pick new ones and start again.
            self.tport = free_port("tcp")
            self.aport = free_port("tcp")
            text = '  https_listen: "[::]:%d"\n' % self.tport + extra
            text += 'admin:\n  listen: "127.0.0.1:%d"\n' % self.aport
            try:
                self.q = env.qrux(routes=routes, limits=limits, workers=workers,
                                  extra_server=text, log_level=os.environ.get("QX_LOG", "info"))
                break
            except RuntimeError as e:
                if attempt == 2 or "listen" not in str(e):
                    raise
        self.uport = self.q.port
        self.pid = self.q.pid


# ---------------------------------------------------------------------------
# TLS, HTTP/1.1


def tls(port, alpn, timeout=10):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(list(alpn))
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    t = ctx.wrap_socket(s, server_hostname="localhost")
    t.settimeout(timeout)
    return t


def read_all(t, limit=10.0, until=None):
    """Reads until close, |limit| seconds, or until(data) is true. Returns
    (data, closed)."""
    data = b""
    end = time.monotonic() + limit
    while True:
        if until is not None and until(data):
            return data, False
        left = end - time.monotonic()
        if left <= 0:
            return data, False
        t.settimeout(left)
        try:
            b = t.recv(65536)
        except socket.timeout:
            return data, False
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError, OSError):
            return data, True
        if not b:
            return data, True
        data += b


def h1_response_done(data):
    """True once |data| holds one whole response with a Content-Length."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return m is not None and len(rest) >= int(m.group(1))


def h1_status(data):
    m = re.match(rb"HTTP/1\.1 (\d{3})", data)
    return int(m.group(1)) if m else None


def h1_request(port, raw, limit=10.0):
    """Sends raw bytes on a new TLS connection; returns (data, closed)."""
    t = tls(port, ("http/1.1",))
    try:
        t.sendall(raw)
        return read_all(t, limit, until=h1_response_done)
    finally:
        t.close()


# ---------------------------------------------------------------------------
# raw HTTP/2


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid & 0x7FFFFFFF) + payload


def hpack_str(s):
    b = s.encode() if isinstance(s, str) else s
    assert len(b) < 127
    return bytes([len(b)]) + b


def request_block(authority, path="/", method="GET"):
    """A stateless HPACK block (static-table names, literals never indexed),
    so the same bytes may open any number of streams."""
    out = b""
    out += {"GET": b"\x82", "POST": b"\x83"}[method]
    out += b"\x87"  # :scheme https
    out += b"\x84" if path == "/" else b"\x04" + hpack_str(path)  # :path
    out += b"\x01" + hpack_str(authority)  # :authority, literal without indexing
    return out


def settings(pairs=(), ack=False):
    return frame(SETTINGS, ACK if ack else 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def parse_frames(data):
    """[(type, flags, sid, payload)] for the whole frames in data."""
    out = []
    i = 0
    while i + 9 <= len(data):
        n = int.from_bytes(data[i:i + 3], "big")
        if i + 9 + n > len(data):
            break
        out.append((data[i + 3], data[i + 4], int.from_bytes(data[i + 5:i + 9], "big") & 0x7FFFFFFF,
                    data[i + 9:i + 9 + n]))
        i += 9 + n
    return out


def goaway_code(frames):
    """The error code of the first GOAWAY, or None."""
    for ft, _, _, p in frames:
        if ft == GOAWAY and len(p) >= 8:
            return int.from_bytes(p[4:8], "big")
    return None


def h2_open(port, window=None):
    """A TLS connection that negotiated h2, preface and SETTINGS sent."""
    t = tls(port, ("h2",))
    if t.selected_alpn_protocol() != "h2":
        raise RuntimeError("no h2: ALPN %r" % t.selected_alpn_protocol())
    pairs = [] if window is None else [(4, window)]
    t.sendall(PREFACE + settings(pairs))
    return t


def h2_get(port, authority, path, limit=15.0):
    """One GET over a new HTTP/2 connection with python3-h2. Returns
    (status, headers dict, body bytes) or (None, {}, b"") on failure."""
    import h2.config
    import h2.connection
    import h2.events
    t = tls(port, ("h2",))
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                             header_encoding="utf-8"))
    c.initiate_connection()
    c.send_headers(1, [(":method", "GET"), (":scheme", "https"), (":authority", authority),
                       (":path", path)], end_stream=True)
    t.sendall(c.data_to_send())
    status, hdrs, body = None, {}, b""
    end = time.monotonic() + limit
    try:
        while time.monotonic() < end:
            t.settimeout(max(0.01, end - time.monotonic()))
            data = t.recv(65536)
            if not data:
                break
            for ev in c.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    hdrs = dict(ev.headers)
                    status = int(hdrs.get(":status", 0))
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                    c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                    t.close()
                    return status, hdrs, body
            t.sendall(c.data_to_send())
    except (OSError, ssl.SSLError):
        pass
    t.close()
    return None, {}, b""


# ---------------------------------------------------------------------------
# what a user checks afterwards


def serves_all(env, p, label, path="/bytes/3000", want=None):
    """A normal request over HTTP/3, HTTP/2 and HTTP/1.1 gets 200 and the
    exact body."""
    want = pattern(3000) if want is None else want
    r = env.gtls(p.q, path, timeout=30)
    env.check("%s: HTTP/3 still served" % label, r.status() == 200 and r.body() == want,
              r.summary())
    st, _, body = h2_get(p.tport, "localhost:%d" % p.tport, path)
    env.check("%s: HTTP/2 still served" % label, st == 200 and body == want, "status %r" % st)
    data, _ = h1_request(p.tport, ("GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % path).encode())
    env.check("%s: HTTP/1.1 still served" % label,
              h1_status(data) == 200 and data.endswith(want), data[:200])


def metrics(p):
    """{series: value} from /metrics (series as printed, labels included)."""
    s = socket.create_connection(("127.0.0.1", p.aport), timeout=5)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    s.close()
    out = {}
    for ln in data.partition(b"\r\n\r\n")[2].decode().splitlines():
        if ln and not ln.startswith("#"):
            k, _, v = ln.rpartition(" ")
            out[k] = float(v)
    return out


def defence(p, name):
    return metrics(p).get('qrux_defence_total{defence="%s"}' % name, -1)


def livez(p):
    s = socket.create_connection(("127.0.0.1", p.aport), timeout=5)
    s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data, _ = read_all(s, 5)
    s.close()
    return h1_status(data)


def stop_process(pid, timeout=5.0):
    """SIGSTOP, then waits until every thread of |pid| is stopped (kill()
    returns before a thread busy on another CPU has stopped)."""
    os.kill(pid, 19)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        states = []
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                    st = f.read()
                states.append(st[st.rfind(")") + 2])
            except OSError:
                pass
        if states and all(s in "tT" for s in states):
            return True
        time.sleep(0.001)
    return False


def cont_process(pid):
    os.kill(pid, 18)


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def status_kib(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith(key + ":"):
                return int(ln.split()[1])
    return 0


def rss_kib(pid):
    return status_kib(pid, "VmRSS")
