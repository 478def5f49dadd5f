#!/usr/bin/env python3
"""The QUIC transport features of issue 6 as a client and the app see them.

Cases (each its own qrux; test_quic.py covers version negotiation, loss,
key update, plain resumption and the 200 KB address changes):
  0-RTT, early_data safe (the default): a resumed GET / OPTIONS reaches the
    app with Early-Data: 1; POST with a body, GET with a body and DELETE
    sent in 0-RTT are held until the handshake (no Early-Data, exact body);
    Early-Data from a previous hop is kept (RFC 8470 5.1); a recorded
    ClientHello + 0-RTT GET replayed from another socket reaches the app
    once (anti-replay); /metrics early-data counters
  early_data all: bodies and unsafe methods forwarded from 0-RTT with
    Early-Data: 1; early_data off: resumption without any 0-RTT data
  returning clients: three tickets used 12 s later all get 0-RTT
  ticket_key_file: replicas resume each other's sessions with 0-RTT;
    another key file means a full handshake
  Retry: always / never / auto (threshold of handshakes in progress, made
    with a replayed half-open handshake); NEW_TOKEN skips the Retry, also on
    a replica; a NEW_TOKEN from another key gets a Retry, not an error;
    forged, stolen (other address), foreign and expired Retry tokens get
    INVALID_TOKEN
  stateless reset: SIGKILL + restart with the same key file, the old
    client is reset at once (without a key file it waits for its idle
    timeout); resumption survives the restart, 0-RTT with an older ticket
    is refused (RFC 8446 8.2)
  limits: per-IP and process caps (CONNECTION_REFUSED), a half-open
    handshake freed by quic_handshake_timeout_secs, quic_idle_timeout_secs,
    max_streams_per_connection (5: -n 50; 150: -n 300)
  address change: 24 MiB with NAT rebinding x3 (relay), 8 MiB with the
    client's own --nat-rebinding (qrux validates the new path), 8 MiB twice and a
    4 MiB upload with --change-local-addr under 5% loss both ways; every
    datagram qrux sends must be one the client can read

Peers: gtlsclient (ngtcp2-client 1.11, GnuTLS) for resumption and 0-RTT
(--session-file/--tp-file: the first run stores a ticket and the transport
parameters, the next one resumes and sends its request in 0-RTT), and
e2e/h3probe for tokens (--token, --new-token-file, --retry-wait: it prints
the tokens it receives and takes the one to send, which the Retry cases
need; gtlsclient 0.12's --token-file could not read back the file it
wrote). Replays, half-open handshakes and NAT rebinding
come from a UDP relay in this file. Which datagrams a server accepts is
judged by what reaches the app (e2e/backend.py /echo shows the request head
it got).

Observations from the client's debug log (stderr):
  frm tx N 0RTT STREAM(..) id=0x0   the request went out in 0-RTT
  Early data was rejected by server the server refused the 0-RTT data
  frm rx N Handshake CRYPTO .. len=L  a full handshake carries the
                                      certificate (~700 bytes here), a
                                      resumed one does not (~180)
  pkt rx .. type=Retry              address validation by Retry
  pkt rx 0 SR token=                a stateless reset the client recognised
  CONNECTION_CLOSE(0x1c) error_code=CONNECTION_REFUSED(0x2)
  could not decode / decrypt        a datagram the client could not read
"""

import hashlib
import json
import os
import re
import select
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (H3_NO_ERROR, Env, Qrux, free_port, pattern,  # noqa: E402
                     pattern_sha256, run, scrape, wait_until, yaml_str)

MiB = 1024 * 1024
INVALID_TOKEN = 0xB
CONNECTION_REFUSED = 0x2
RETRY_TOKEN_LIFETIME = 10  # seconds; proxy/quic.c RETRY_TOKEN_TIMEOUT

# ---------------------------------------------------------------------------
# qrux with the knobs of this issue


def start(env, be, workers=1, limits=None, admin=True, **server):
    """qrux routing everything to |be|; keyword arguments become server.*
    keys (early_data, retry, ticket_key_file). With |admin| an admin port
    serves /metrics (q.admin_port)."""
    lines = ["  drain_delay_secs: 0"]
    for k, v in server.items():
        lines.append("  %s: %s" % (k, yaml_str(v) if k == "ticket_key_file" else v))
    aport = None
    if admin:
        aport = free_port("tcp")
        lines.append("admin:\n  listen: %s" % yaml_str("127.0.0.1:%d" % aport))
    q = env.qrux(routes=[("*", be.addr)], workers=workers, limits=limits,
                 extra_server="\n".join(lines) + "\n")
    q.admin_port = aport
    return q


def metrics(q):
    """/metrics as {'name{labels}': value}."""
    return scrape(q.admin_port)


M_ACCEPTED = 'qrux_early_data_requests_total{result="accepted"}'
M_HELD = 'qrux_early_data_requests_total{result="held"}'
M_RETRY = "qrux_quic_retry_total"
M_BADTOKEN = "qrux_quic_invalid_tokens_total"
M_REFUSED = "qrux_quic_refused_total"
M_HS_FAIL = 'qrux_quic_handshakes_total{result="failure"}'


def key_file(env, name):
    path = os.path.join(env.dir, name)
    with open(path, "wb") as f:
        f.write(os.urandom(64))
    return path


def data_file(env, name, n):
    path = os.path.join(env.dir, name)
    data = os.urandom(n)
    with open(path, "wb") as f:
        f.write(data)
    return path, hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------
# gtlsclient with a stored session


class Session:
    """gtlsclient's --session-file/--tp-file pair: empty at first; every
    completed handshake rewrites them with the newest ticket."""

    seq = 0

    def __init__(self, env):
        Session.seq += 1
        self.sess = os.path.join(env.dir, "session-%d.pem" % Session.seq)
        self.tp = os.path.join(env.dir, "tp-%d.txt" % Session.seq)

    def args(self):
        return ["--session-file=" + self.sess, "--tp-file=" + self.tp]

    def stored(self):
        return os.path.exists(self.sess) and os.path.getsize(self.sess) > 0


def gtls_s(env, q, path, sess, timeout=20, extra=(), **kw):
    return env.gtls(q, path, extra=sess.args() + list(extra), timeout=timeout, **kw)


def sent_0rtt(r, sid=0):
    """The client sent (part of) request stream |sid| in 0-RTT packets."""
    pat = re.compile(r" frm tx \d+ 0RTT STREAM\(0x[0-9a-f]+\) id=0x%x " % sid)
    return any(pat.search(ln) for ln in r.log.splitlines())


def rejected_0rtt(r):
    return "Early data was rejected by server" in r.log


def hs_crypto(r):
    """Bytes of Handshake-level CRYPTO the client received: the server's
    certificate is among them only in a full (not resumed) handshake."""
    return sum(int(m.group(1)) for m in
               re.finditer(r"frm rx \d+ Handshake CRYPTO\(0x06\) offset=\d+ len=(\d+)", r.log))


def got_retry(r):
    return re.search(r"pkt rx .*type=Retry", r.log) is not None


def refused(r):
    return "error_code=CONNECTION_REFUSED(0x%x)" % CONNECTION_REFUSED in r.log


def undecodable(r):
    """Datagrams from the server the client could not parse or decrypt.
    ngtcp2's gtlsserver sends none in the same migration and rebinding
    cases; each one is a packet lost on the wire (e.g. a UDP GSO batch
    whose segment size does not fit every packet in it: the kernel cuts
    the larger packets into pieces)."""
    return sum(r.log.count(w) for w in ("could not decode", "unexpected KEY_PHASE",
                                        "could not decrypt"))


def echo(r):
    """The JSON /echo answered (the request head the app received)."""
    try:
        return json.loads(r.body() or b"{}")
    except (ValueError, RuntimeError):
        return {}


def early_values(doc):
    return [v for k, v in doc.get("headers", []) if k.lower() == "early-data"]


def short(r):
    return r.summary()[:900]


# ---------------------------------------------------------------------------
# h3probe (tokens)


def probe_bin():
    b = os.environ.get("H3PROBE_BIN")
    if not b:  # by hand: the probe is built next to qrux
        b = os.path.join(os.path.dirname(os.environ.get("QRUX_BIN", "")), "h3probe")
    if not os.access(b, os.X_OK):
        raise RuntimeError("h3probe not found (H3PROBE_BIN=%r): build the h3probe target" % b)
    return b


class Probe:
    def __init__(self, rc, out, err):
        self.rc, self.out, self.err = rc, out, err
        self.retry = False
        self.new_token = None
        self.conn_close = None
        self.status = None
        self.sha = None
        for ln in out.splitlines():
            word, _, rest = ln.partition(" ")
            if word == "retry":
                self.retry = True
            elif word == "new-token":
                self.new_token = int(rest)
            elif word == "conn-close":
                code, kind = rest.split()[:2]
                self.conn_close = (int(code, 16), kind)
            elif word == "status" and not rest.startswith("1"):
                self.status = int(rest)
            elif word == "body-sha256":
                self.sha = rest.split()[0]

    def summary(self):
        return "rc=%s out=%r err=%r" % (self.rc, self.out[-500:], self.err[-300:])


def h3probe(port, path="/bytes/100", extra=(), fields=(), timeout=15):
    cmd = [probe_bin(), "127.0.0.1", str(port), "--timeout", str(timeout),
           "-H", ":method: GET", "-H", ":scheme: https",
           "-H", ":authority: localhost:%d" % port, "-H", ":path: " + path]
    for f in fields:
        cmd += ["-H", f]
    rc, o, e = run(cmd + list(extra), timeout=timeout + 10)
    return Probe(rc, o.decode("utf-8", "replace"), e.decode("utf-8", "replace"))


# ---------------------------------------------------------------------------
# raw datagrams


def varint(n):
    if n < 0x40:
        return bytes([n])
    if n < 0x4000:
        return (0x4000 | n).to_bytes(2, "big")
    return (0x80000000 | n).to_bytes(4, "big")


def fake_initial(dcid, token=b""):
    """A datagram that passes for a client's first Initial up to address
    validation: a QUIC v1 long header (type Initial) padded to 1200 bytes.
    Its payload is random: a server decides on Retry before decrypting."""
    scid = os.urandom(8)
    hdr = (bytes([0xC3]) + (1).to_bytes(4, "big") + bytes([len(dcid)]) + dcid +
           bytes([len(scid)]) + scid + varint(len(token)) + token)
    n = 1200 - len(hdr) - 2
    return hdr + (0x4000 | n).to_bytes(2, "big") + os.urandom(n)


def fetch_retry_token(port, timeout=3):
    """The token of the Retry a server answers a fake Initial with (sent
    from a socket of our own, so the token is bound to that address)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(fake_initial(os.urandom(16)), ("127.0.0.1", port))
        data, _ = s.recvfrom(65536)
    finally:
        s.close()
    if data[0] & 0xF0 != 0xF0:  # long header, fixed bit, type Retry
        raise RuntimeError("expected a Retry, got first byte 0x%02x" % data[0])
    i = 5
    i += 1 + data[i]  # DCID
    i += 1 + data[i]  # SCID
    return data[i:-16]  # the token; the last 16 bytes are the integrity tag


class Relay:
    """A UDP relay on loopback between one client and a server port. It
    records what the client sent (record=True), so a test can send it again
    later from another socket (a replay, or a handshake nobody completes).
    rebind() moves its server-side socket to a new port: to the server that
    is a NAT rebinding (same client, new source address, and the client
    itself knows nothing of it). Like a NAT whose old mapping lingers, the
    old port still delivers what the server sends to it for |grace|
    seconds: the packets in flight reach the client, whose ACKs then leave
    from the new port (with the old port closed at once, a client that has
    nothing left to acknowledge never sends again and no server can find
    it)."""

    def __init__(self, server_port, record=True, grace=0.5, ecn=False):
        # ecn: pass each datagram's ECN bits on (IP_RECVTOS in, IP_TOS out)
        # and count them per direction in self.ecn_seen[("up"|"down", bits)].
        self.ecn = ecn
        self.ecn_seen = {}
        self.down = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.down.bind(("127.0.0.1", 0))
        if ecn:
            self.down.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
        self.port = self.down.getsockname()[1]
        self.up = self._new_up(server_port)
        if ecn:
            self.up.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
        self.server_port = server_port
        self.record = record
        self.client = None
        self.sent = []
        self.want_rebind = False
        self.grace = grace
        self.old = []  # (socket, close time): former server-side sockets
        self.rebinds = 0
        self.rx_since_rebind = 0  # datagrams from the server on the current socket
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @staticmethod
    def _new_up(server_port):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MiB)
        s.connect(("127.0.0.1", server_port))
        return s

    def rebind(self):
        """The next datagram to the server leaves from a new port; the old
        port is closed (the NAT mapping is gone). Returns at once."""
        self.want_rebind = True

    def _run(self):
        while not self.stopping:
            now = time.monotonic()
            if self.want_rebind:  # swapped here, never under another thread's select
                self.old.append((self.up, now + self.grace))
                self.up = self._new_up(self.server_port)
                if self.ecn:
                    self.up.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
                self.want_rebind = False
                self.rebinds += 1
                self.rx_since_rebind = 0
            for entry in [e for e in self.old if e[1] <= now]:
                entry[0].close()
                self.old.remove(entry)
            olds = [e[0] for e in self.old]
            ready, _, _ = select.select([self.down, self.up] + olds, [], [], 0.05)
            for s in ready:
                try:
                    if s is self.down:
                        data, bits, self.client = self._recv(self.down, "up")
                        if self.record:
                            self.sent.append(data)
                        self._send(self.up, data, bits, None)
                    else:
                        data, bits, _ = self._recv(s, "down")
                        if s is self.up:
                            self.rx_since_rebind += 1
                        if self.client:
                            self._send(self.down, data, bits, self.client)
                except OSError:
                    pass  # e.g. ICMP unreachable reported on the connected socket

    def _recv(self, s, way):
        if not self.ecn:
            data, addr = s.recvfrom(65536)
            return data, 0, addr
        data, anc, _, addr = s.recvmsg(65536, socket.CMSG_SPACE(4))
        bits = 0
        for level, kind, val in anc:
            if level == socket.IPPROTO_IP and kind == socket.IP_TOS and val:
                bits = val[0] & 3
        key = (way, bits)
        self.ecn_seen[key] = self.ecn_seen.get(key, 0) + 1
        return data, bits, addr

    def _send(self, s, data, bits, addr):
        if not self.ecn or not bits:
            if addr:
                s.sendto(data, addr)
            else:
                s.send(data)
            return
        anc = [(socket.IPPROTO_IP, socket.IP_TOS, bits.to_bytes(4, sys.byteorder))]
        if addr:
            s.sendmsg([data], anc, 0, addr)
        else:
            s.sendmsg([data], anc)

    def replay(self, idx=0):
        """Sends the client's datagram |idx| again, from a new socket."""
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(self.sent[idx], ("127.0.0.1", self.server_port))
        return s  # kept open by the caller: the server's answers go nowhere

    def close(self):
        self.stopping = True
        self.thread.join(2)
        for s, _ in self.old:
            s.close()
        self.down.close()
        self.up.close()


# ---------------------------------------------------------------------------
# 0-RTT: the default policy (safe)


def early_safe(env, be):
    q = start(env, be)  # no early_data key: the default must be `safe`
    body, body_sha = data_file(env, "body-safe.bin", 30000)
    s = Session(env)
    m0 = metrics(q)

    r = gtls_s(env, q, "/echo", s)
    env.eq("first connection (no ticket yet): 200", r.status(), 200, short(r))
    env.check("first connection: no 0-RTT attempted", not sent_0rtt(r), short(r))
    env.eq("non-resumed request: the app sees no Early-Data", early_values(echo(r)), [])
    env.check("retry: auto (default) on a quiet server: no Retry", not got_retry(r), short(r))
    env.check("first connection stored a session ticket", s.stored())
    full = hs_crypto(r)

    r = gtls_s(env, q, "/echo", s)
    env.eq("resumed GET: 200", r.status(), 200, short(r))
    env.check("resumed GET: the request went out in 0-RTT", sent_0rtt(r), short(r))
    env.check("resumed GET: 0-RTT accepted (client saw no rejection)", not rejected_0rtt(r),
              short(r))
    env.check("resumed GET: resumption (no certificate in the handshake: %d vs %d bytes)"
              % (hs_crypto(r), full), 0 < hs_crypto(r) < full / 2)
    env.eq("GET from 0-RTT reaches the app with Early-Data: 1", early_values(echo(r)), ["1"],
           echo(r).get("headers"))

    r = gtls_s(env, q, "/echo", s, method="OPTIONS")
    env.check("resumed OPTIONS: sent in 0-RTT and accepted", sent_0rtt(r) and not rejected_0rtt(r),
              short(r))
    env.eq("OPTIONS from 0-RTT (safe method) forwarded with Early-Data: 1",
           early_values(echo(r)), ["1"])

    r = gtls_s(env, q, "/echo", s, method="POST", data=body)
    doc = echo(r)
    env.eq("resumed POST with a body: 200", r.status(), 200, short(r))
    env.check("resumed POST: its request went out in 0-RTT", sent_0rtt(r) and not rejected_0rtt(r),
              short(r))
    env.eq("POST with a body from 0-RTT: held until the handshake, no Early-Data at the app",
           early_values(doc), [], doc.get("headers"))
    env.eq("held POST: exact body at the app", (doc.get("body_len"), doc.get("body_sha256")),
           (30000, body_sha))

    r = gtls_s(env, q, "/echo", s, method="GET", data=body)
    doc = echo(r)
    env.check("resumed GET with a body: sent in 0-RTT", sent_0rtt(r) and not rejected_0rtt(r),
              short(r))
    env.eq("GET with a body from 0-RTT: held (no Early-Data), exact body",
           (early_values(doc), doc.get("body_sha256")), ([], body_sha))

    r = gtls_s(env, q, "/echo", s, method="DELETE")
    env.check("resumed DELETE: sent in 0-RTT", sent_0rtt(r) and not rejected_0rtt(r), short(r))
    env.eq("DELETE (unsafe method, no body) from 0-RTT: held, no Early-Data; 200",
           (r.status(), early_values(echo(r))), (200, []))

    m1 = metrics(q)
    env.eq("metrics: early-data requests accepted +2 (GET, OPTIONS)",
           m1.get(M_ACCEPTED, 0) - m0.get(M_ACCEPTED, 0), 2)
    env.eq("metrics: early-data requests held +3 (POST, GET with body, DELETE)",
           m1.get(M_HELD, 0) - m0.get(M_HELD, 0), 3)

    # A request that did not come in early data but carries Early-Data: 1
    # (an intermediary in front of qrux took it in 0-RTT): RFC 8470 §5.1,
    # "An intermediary MUST NOT remove this header field if it is present
    # in a request" -- the app must still be told it may be a replay.
    out = os.path.join(env.dir, "echo-early-hdr.json")
    p = h3probe(q.port, "/echo", fields=["early-data: 1"], extra=["-o", out])
    try:
        with open(out, "rb") as f:
            doc = json.loads(f.read() or b"{}")
    except (OSError, ValueError):
        doc = {}
    env.eq("1-RTT request carrying Early-Data: 1 from a previous hop: 200", p.status, 200,
           p.summary())
    env.eq("Early-Data: 1 from a previous hop reaches the app (RFC 8470 5.1: not removed)",
           early_values(doc), ["1"], doc.get("headers"))

    # Anti-replay: the same 0-RTT flight sent again must not reach the app
    # again. The relay records the client's first datagram (ClientHello and
    # the GET in 0-RTT); once the connection is gone it is replayed from
    # another socket, as an attacker on the path would. Against ngtcp2's
    # gtlsserver (whose anti-replay accepts everything) the same replay
    # makes the request arrive twice.
    be.reset()
    rl = Relay(q.port)
    try:
        r = env.gtls(rl.port, "https://localhost:%d/echo/replay-probe" % q.port,
                     extra=s.args(), timeout=20)
        env.check("0-RTT GET through a recording relay: 200 with Early-Data: 1",
                  r.status() == 200 and early_values(echo(r)) == ["1"] and not rejected_0rtt(r),
                  short(r))
        time.sleep(0.3)  # the client closed; qrux forgets the connection
        sock = rl.replay(0)
        time.sleep(1.5)
        sock.close()
    finally:
        rl.close()
    n = be.stats().get("paths", {}).get("/echo/replay-probe", 0)
    env.eq("replayed ClientHello + 0-RTT GET: the app saw the request once (anti-replay)", n, 1)
    r = gtls_s(env, q, "/echo", s)
    env.check("after the replay: a new resumed 0-RTT GET still works",
              r.status() == 200 and early_values(echo(r)) == ["1"], short(r))


def early_all(env, be):
    q = start(env, be, early_data="all")
    body, body_sha = data_file(env, "body-all.bin", 30000)
    s = Session(env)
    m0 = metrics(q)
    r = gtls_s(env, q, "/echo", s)
    env.eq("early_data: all, first connection: 200, no Early-Data",
           (r.status(), early_values(echo(r))), (200, []), short(r))
    r = gtls_s(env, q, "/echo", s, method="POST", data=body)
    doc = echo(r)
    env.check("early_data: all, POST with a body sent in 0-RTT and accepted",
              sent_0rtt(r) and not rejected_0rtt(r), short(r))
    env.eq("early_data: all, POST from 0-RTT forwarded at once with Early-Data: 1",
           early_values(doc), ["1"], doc.get("headers"))
    env.eq("early_data: all, POST: exact body", (doc.get("body_len"), doc.get("body_sha256")),
           (30000, body_sha))
    r = gtls_s(env, q, "/echo", s, method="DELETE")
    env.eq("early_data: all, DELETE from 0-RTT: 200 with Early-Data: 1",
           (r.status(), early_values(echo(r))), (200, ["1"]), short(r))
    m1 = metrics(q)
    env.eq("early_data: all, metrics: accepted +2, held +0",
           (m1.get(M_ACCEPTED, 0) - m0.get(M_ACCEPTED, 0), m1.get(M_HELD, 0) - m0.get(M_HELD, 0)),
           (2, 0))


def early_off(env, be):
    q = start(env, be, early_data="off")
    s = Session(env)
    m0 = metrics(q)
    r = gtls_s(env, q, "/echo", s)
    env.eq("early_data: off, first connection: 200", r.status(), 200, short(r))
    env.check("early_data: off, a session ticket is still issued", s.stored())
    full = hs_crypto(r)
    r = gtls_s(env, q, "/echo", s)
    env.eq("early_data: off, resumed connection: 200", r.status(), 200, short(r))
    env.check("early_data: off, resumption still works (%d vs %d handshake bytes)"
              % (hs_crypto(r), full), 0 < hs_crypto(r) < full / 2)
    env.check("early_data: off, no 0-RTT data accepted (not sent, or rejected and resent)",
              not sent_0rtt(r) or rejected_0rtt(r), short(r))
    env.eq("early_data: off, the app sees no Early-Data", early_values(echo(r)), [])
    m1 = metrics(q)
    env.eq("early_data: off, metrics: nothing accepted or held",
           (m1.get(M_ACCEPTED, 0) - m0.get(M_ACCEPTED, 0), m1.get(M_HELD, 0) - m0.get(M_HELD, 0)),
           (0, 0))


def returning_prepare(env, be):
    """Three clients store tickets now; returning_check() comes back with
    them after GnuTLS's default anti-replay window (10 s) has passed."""
    q = start(env, be, admin=False)
    sessions = [Session(env) for _ in range(3)]
    for s in sessions:
        r = gtls_s(env, q, "/echo", s)
        env.eq("returning clients: first visit 200", r.status(), 200, short(r))
    return q, sessions, time.monotonic()


def returning_check(env, state):
    """The seed's promise is 0-RTT for returning clients. GnuTLS's
    anti-replay refuses early data for tickets created before its recording
    start, which rolls forward once its window has passed (10 s by default:
    then only the first returning client after the roll-over gets 0-RTT,
    the next ones with equally old tickets do not). qrux sets a longer
    window (proxy/tls.c, gnutls_anti_replay_set_window): all three must get
    0-RTT."""
    q, sessions, t0 = state
    left = 12 - (time.monotonic() - t0)
    if left > 0:
        time.sleep(left)
    got = []
    for s in sessions:
        r = gtls_s(env, q, "/echo", s)
        env.eq("returning client: 200", r.status(), 200, short(r))
        got.append(sent_0rtt(r) and not rejected_0rtt(r) and early_values(echo(r)) == ["1"])
    env.eq("3 clients returning %.0f s after their first visit all get 0-RTT"
           % (time.monotonic() - t0), got, [True] * 3)


# ---------------------------------------------------------------------------
# server.ticket_key_file: replicas resume each other's sessions


def shared_keys(env, be):
    k1 = key_file(env, "ticket-1.key")
    k2 = key_file(env, "ticket-2.key")
    a = start(env, be, admin=False, ticket_key_file=k1)
    b = start(env, be, admin=False, ticket_key_file=k1)
    c = start(env, be, admin=False, ticket_key_file=k2)

    s = Session(env)
    r = gtls_s(env, a, "/echo", s)
    env.eq("replica A: first connection 200", r.status(), 200, short(r))
    full = hs_crypto(r)
    r = gtls_s(env, b, "/echo", s)
    env.eq("session from A on replica B (same key file): 200", r.status(), 200, short(r))
    env.check("session from A resumes on B (%d vs %d handshake bytes)" % (hs_crypto(r), full),
              0 < hs_crypto(r) < full / 2)
    env.check("session from A: 0-RTT accepted by B", sent_0rtt(r) and not rejected_0rtt(r),
              short(r))
    env.eq("0-RTT GET on B reaches the app with Early-Data: 1", early_values(echo(r)), ["1"])

    s2 = Session(env)
    r = gtls_s(env, a, "/echo", s2)
    env.eq("replica A again: 200", r.status(), 200, short(r))
    r = gtls_s(env, c, "/echo", s2)
    env.eq("session from A on C (another key file): still served, 200", r.status(), 200, short(r))
    env.check("session from A does not resume on C (full handshake: %d bytes)" % hs_crypto(r),
              hs_crypto(r) > full / 2)
    env.check("no 0-RTT accepted by C", not sent_0rtt(r) or rejected_0rtt(r), short(r))
    env.eq("C: the app sees no Early-Data", early_values(echo(r)), [])


# ---------------------------------------------------------------------------
# address validation


def retry(env, be):
    k1 = key_file(env, "retry-1.key")
    ra = start(env, be, retry="always", ticket_key_file=k1)
    rb = start(env, be, admin=False, retry="always", ticket_key_file=k1)  # replica of ra
    rx = start(env, be, retry="always")  # its own random secrets
    rn = start(env, be, admin=False, retry="never")
    m0 = metrics(ra)

    r = env.gtls(ra, "/bytes/1000", timeout=20)
    env.check("retry: always: the handshake goes through a Retry", got_retry(r), short(r))
    env.eq("retry: always: request served, exact body", (r.status(), r.sha()),
           (200, pattern_sha256(1000)), short(r))
    r = env.gtls(rn, "/bytes/1000", timeout=20)
    env.check("retry: never: no Retry", not got_retry(r), short(r))
    env.eq("retry: never: 200", r.status(), 200, short(r))

    tf = os.path.join(env.dir, "new-token.hex")
    p = h3probe(ra.port, extra=["--print-retry", "--new-token-file", tf])
    env.check("h3probe on retry: always: Retry, 200 and a NEW_TOKEN",
              p.retry and p.status == 200 and p.new_token, p.summary())
    tok = open(tf).read().strip() if os.path.exists(tf) else ""
    p = h3probe(ra.port, extra=["--print-retry", "--token", tok or "00"])
    env.check("returning client with its NEW_TOKEN skips the Retry", not p.retry, p.summary())
    env.eq("returning client with its NEW_TOKEN: 200", p.status, 200, p.summary())
    p = h3probe(rb.port, extra=["--print-retry", "--token", tok or "00"])
    env.check("NEW_TOKEN from A accepted by replica B (same key file): no Retry, 200",
              not p.retry and p.status == 200, p.summary())
    bx = metrics(rx).get(M_BADTOKEN, 0)
    p = h3probe(rx.port, extra=["--print-retry", "--token", tok or "00"])
    env.check("NEW_TOKEN from another key: not trusted, validated by a Retry, then 200 "
              "(RFC 9000 8.1.3: not an INVALID_TOKEN error)",
              p.retry and p.status == 200 and p.conn_close is None, p.summary())
    env.eq("NEW_TOKEN from another key: not counted as an invalid token",
           metrics(rx).get(M_BADTOKEN, 0) - bx, 0)

    # Forged and misused Retry tokens: the Initial is answered with
    # CONNECTION_CLOSE(INVALID_TOKEN) at once.
    real = fetch_retry_token(ra.port)
    env.check("a Retry token looks like ngtcp2's (magic 0xb6)", real[:1] == b"\xb6", real.hex())
    forged = b"\xb6" + os.urandom(max(16, len(real) - 1))
    p = h3probe(ra.port, extra=["--token", forged.hex()])
    env.eq("forged Retry token: INVALID_TOKEN", p.conn_close, (INVALID_TOKEN, "transport"),
           p.summary())
    p = h3probe(ra.port, extra=["--token", real.hex()])
    env.eq("Retry token issued to another address/connection ID: INVALID_TOKEN", p.conn_close,
           (INVALID_TOKEN, "transport"), p.summary())
    other = fetch_retry_token(rx.port)
    p = h3probe(ra.port, extra=["--token", other.hex()])
    env.eq("Retry token from another instance (other secret): INVALID_TOKEN", p.conn_close,
           (INVALID_TOKEN, "transport"), p.summary())
    p = h3probe(ra.port, extra=["--print-retry", "--retry-wait", "2"], timeout=20)
    env.check("Retry token used 2 s after the Retry: accepted, 200",
              p.retry and p.status == 200, p.summary())
    p = h3probe(ra.port, extra=["--print-retry", "--retry-wait", str(RETRY_TOKEN_LIFETIME + 1)],
                timeout=30)
    env.check("Retry token used %d s after the Retry (expired): INVALID_TOKEN"
              % (RETRY_TOKEN_LIFETIME + 1),
              p.retry and p.conn_close == (INVALID_TOKEN, "transport"), p.summary())
    m1 = metrics(ra)
    env.check("metrics: Retry packets counted (+%d)" % (m1.get(M_RETRY, 0) - m0.get(M_RETRY, 0)),
              m1.get(M_RETRY, 0) - m0.get(M_RETRY, 0) >= 5)
    env.eq("metrics: invalid tokens +4 (forged, other address, other instance, expired)",
           m1.get(M_BADTOKEN, 0) - m0.get(M_BADTOKEN, 0), 4)
    env.check("qrux still running after the token cases", ra.alive() and rx.alive())

    # retry: auto sends Retry only while handshakes in progress on the
    # worker reach retry_handshakes_threshold. A ClientHello recorded from a
    # real client and replayed from another socket is a handshake nobody
    # completes: it stays in progress until the handshake timeout.
    q = start(env, be, workers=1, admin=False, retry="auto",
              limits={"retry_handshakes_threshold": 1, "quic_handshake_timeout_secs": 3})
    rl = Relay(q.port)
    try:
        r = env.gtls(rl.port, "https://localhost:%d/bytes/10" % q.port, timeout=10)
    finally:
        rl.close()
    env.check("retry: auto, no handshake in progress: no Retry, 200",
              not got_retry(r) and r.status() == 200, short(r))
    time.sleep(0.3)
    sock = rl.replay(0)
    try:
        time.sleep(0.3)
        r = env.gtls(q, "/bytes/10", timeout=10)
        env.check("retry: auto, threshold 1 with a half-open handshake: Retry, then 200",
                  got_retry(r) and r.status() == 200, short(r))
        time.sleep(3.5)
        r = env.gtls(q, "/bytes/10", timeout=10)
        env.check("retry: auto, after the half-open handshake timed out: no Retry, 200",
                  not got_retry(r) and r.status() == 200, short(r))
    finally:
        sock.close()


# ---------------------------------------------------------------------------
# stateless reset after a restart (and resumption across it)


def handshake_confirmed(run_):
    try:
        with open(run_.logpath, "rb") as f:
            return b"QUIC handshake has been confirmed" in f.read()
    except OSError:
        return False


def restart_with_client(env, be, q, client_timeout):
    """Opens a connection whose request waits 4 s after the handshake,
    kills qrux with SIGKILL meanwhile, starts it again with the same config
    on the same port, and returns what the client saw."""
    run_ = env.gtls_start(q, "/bytes/1000", timeout=client_timeout + 10,
                          extra=["--delay-stream=4s", "--timeout=%ds" % client_timeout])
    if not wait_until(lambda: handshake_confirmed(run_), 5):
        raise RuntimeError("the client's handshake did not complete")
    q.signal(signal.SIGKILL)
    q.wait_exit(5)
    q2 = Qrux(env, q.config_path, q.port)
    env.qruxes.append(q2)
    if not q2.wait_ready(3):
        raise RuntimeError("restarted qrux not ready in 3 s: %s" % q2.log_tail())
    return q2, run_.finish()


def stateless_reset(env, be):
    kf = key_file(env, "reset.key")
    q = start(env, be, workers=2, admin=False, ticket_key_file=kf)
    s = Session(env)
    r = gtls_s(env, q, "/bytes/100", s)
    env.eq("key-file instance: 200 (session stored)", r.status(), 200, short(r))
    full = hs_crypto(r)

    q2, r = restart_with_client(env, be, q, client_timeout=20)
    env.check("old client after SIGKILL + restart with the same key: stateless reset recognised",
              re.search(r"pkt rx \d+ SR token=", r.log) is not None, short(r))
    env.check("stateless reset: the client gave up at once (%.1fs), not at its 20 s idle timeout"
              % r.elapsed, r.elapsed < 10)
    env.eq("stateless reset: no response to the old connection", r.status(), None)

    r = gtls_s(env, q2, "/echo", s)
    env.eq("after the restart: a session from before is served", r.status(), 200, short(r))
    env.check("after the restart: the session from before resumes (%d vs %d handshake bytes)"
              % (hs_crypto(r), full), 0 < hs_crypto(r) < full / 2)
    # Resumption survives the restart; 0-RTT must not: RFC 8446 §8.2, "When
    # implementations are freshly started, they SHOULD reject 0-RTT as long
    # as any portion of their recording window overlaps the startup time"
    # (the new process has not seen the ClientHellos the old one took).
    # GnuTLS refuses early data for tickets created before its anti-replay
    # recording started. The client then resends in 1-RTT.
    env.check("after the restart: 0-RTT with a ticket from before the restart is refused "
              "(RFC 8446 8.2)", sent_0rtt(r) and rejected_0rtt(r), short(r))
    env.eq("after the restart: the request is served in 1-RTT, without Early-Data",
           early_values(echo(r)), [])
    r = gtls_s(env, q2, "/echo", s)
    env.check("after the restart: a ticket issued by the new process gets 0-RTT again",
              sent_0rtt(r) and not rejected_0rtt(r) and early_values(echo(r)) == ["1"], short(r))

    # Control: random secrets (no key file). The restarted qrux cannot know
    # the old connection's reset token, so the client waits for its idle
    # timeout: the reset above came from the shared secret.
    q = start(env, be, workers=2, admin=False)
    q3, r = restart_with_client(env, be, q, client_timeout=6)
    env.check("without a key file the restarted qrux's reset is not recognised",
              re.search(r"pkt rx \d+ SR token=", r.log) is None, short(r))
    env.check("without a key file the client ends at its idle timeout (%.1fs)" % r.elapsed,
              r.elapsed >= 5.5)
    env.check("restarted instances still running", q2.alive() and q3.alive())


# ---------------------------------------------------------------------------
# limits


def limits(env, be):
    n = 600000  # ~2 s each: the third attempt (a Retry, then refused) falls within them
    slow = "/slow/%d?ms=100&chunk=30000" % n
    q = start(env, be, workers=1, limits={"max_quic_connections_per_ip": 2,
                                          "quic_idle_timeout_secs": 7,
                                          "max_streams_per_connection": 20})
    m0 = metrics(q)
    a = env.gtls_start(q, slow, timeout=20)
    b = env.gtls_start(q, slow, timeout=20)
    wait_until(lambda: a.downloaded() > 0 and b.downloaded() > 0, 5)
    r = env.gtls(q, "/bytes/100", timeout=10)
    env.check("per-IP cap 2: a third concurrent connection gets CONNECTION_REFUSED (0x2)",
              refused(r), short(r))
    env.check("per-IP cap: refused at once (%.2fs), not by a timeout" % r.elapsed,
              r.elapsed < 3)
    ra, rb = a.finish(), b.finish()
    env.eq("per-IP cap: the first two connections complete with exact bodies",
           [ra.status(), rb.status(), ra.sha(), rb.sha()],
           [200, 200, pattern_sha256(n), pattern_sha256(n)], short(ra) + " | " + short(rb))
    env.check("metrics: refused connections counted",
              metrics(q).get(M_REFUSED, 0) - m0.get(M_REFUSED, 0) >= 1)
    r = env.gtls(q, "/bytes/100", timeout=10)
    env.eq("per-IP cap: once they closed, a new connection is served", r.status(), 200, short(r))
    env.check("limits reach the client: max_idle_timeout=7000 ms, initial_max_streams_bidi=20",
              "remote transport_parameters max_idle_timeout=7000" in r.log and
              "remote transport_parameters initial_max_streams_bidi=20" in r.log, short(r))

    # Process-wide cap, over two workers. The open download lasts ~6 s, so
    # it outlasts the four refused clients (0.1-0.3 s each) on a busy machine.
    q = start(env, be, workers=2, admin=False, limits={"max_quic_connections": 1})
    a = env.gtls_start(q, "/slow/%d?ms=100&chunk=10000" % n, timeout=20)
    wait_until(lambda: a.downloaded() > 0, 5)
    refusals = [refused(env.gtls(q, "/bytes/100", timeout=10)) for _ in range(4)]
    ra = a.finish()
    env.eq("max_quic_connections 1 (2 workers): every other connection refused while one is open",
           refusals, [True] * 4)
    env.eq("max_quic_connections: the open one completes", (ra.status(), ra.sha()),
           (200, pattern_sha256(n)), short(ra))

    # Handshake timeout: a ClientHello nobody follows up (recorded from a
    # real client, replayed from another socket) holds a connection slot
    # only for quic_handshake_timeout_secs. The process-wide slot: an
    # unproven address never counts toward the per-IP cap (its owner would
    # be locked out by a forged one; test_attacks_quic.py).
    q = start(env, be, workers=1, limits={"max_quic_connections": 1,
                                          "quic_handshake_timeout_secs": 2})
    rl = Relay(q.port)
    try:
        r = env.gtls(rl.port, "https://localhost:%d/bytes/10" % q.port, timeout=10)
        env.eq("handshake timeout: a client through the relay is served", r.status(), 200,
               short(r))
    finally:
        rl.close()
    time.sleep(0.3)
    f0 = metrics(q).get(M_HS_FAIL, 0)
    t0 = time.monotonic()
    sock = rl.replay(0)
    try:
        time.sleep(0.3)
        r = env.gtls(q, "/bytes/10", timeout=10)
        env.check("a half-open handshake holds the only slot: CONNECTION_REFUSED", refused(r),
                  short(r))
        ok = wait_until(lambda: env.gtls(q, "/bytes/10", timeout=10).status() == 200, 8,
                        interval=0.3)
        took = time.monotonic() - t0
    finally:
        sock.close()
    env.check("the slot frees after the 2 s handshake timeout (served after %.1fs)" % took,
              ok and 1.5 <= took <= 5)
    env.eq("metrics: the abandoned handshake counted as failed",
           metrics(q).get(M_HS_FAIL, 0) - f0, 1)

    # Idle timeout: 2 s on the server; the client waits 4 s before asking.
    q = start(env, be, workers=1, admin=False, limits={"quic_idle_timeout_secs": 2})
    r = env.gtls(q, "/bytes/10", timeout=15, extra=["--delay-stream=4s"])
    env.check("quic_idle_timeout_secs 2: a connection silent for 2 s is closed before the "
              "request (%.1fs, status %s)" % (r.elapsed, r.status()),
              r.status() is None and 1.5 <= r.elapsed < 4, short(r))
    r = env.gtls(q, "/bytes/10", timeout=15, extra=["--delay-stream=1s"])
    env.eq("quic_idle_timeout_secs 2: a request after 1 s of silence is served", r.status(), 200,
           short(r))


def streams_limit(env, be):
    q = start(env, be, workers=1, admin=False, limits={"max_streams_per_connection": 5})
    r = env.gtls(q, "/bytes/1000", n=50, timeout=15)
    st = r.statuses()
    env.eq("max_streams_per_connection 5: gtlsclient -n 50 gets 50 responses",
           len([s for s in st.values() if s == 200]), 50, short(r))
    env.check("max_streams_per_connection 5: every stream closed cleanly",
              len(r.closed) == 50 and all(c == H3_NO_ERROR for c in r.closed.values()),
              "closed=%d" % len(r.closed))
    env.check("max_streams_per_connection 5: the client saw initial_max_streams_bidi=5",
              "remote transport_parameters initial_max_streams_bidi=5" in r.log)
    env.check("qrux still running after -n 50 with 5 streams per connection", q.alive(),
              q.log_tail(3))

    q = start(env, be, workers=1, admin=False, limits={"max_streams_per_connection": 150})
    r = env.gtls(q, "/bytes/1000", n=300, timeout=60)
    env.eq("max_streams_per_connection 150: gtlsclient -n 300 gets 300 responses",
           len([s for s in r.statuses().values() if s == 200]), 300, short(r))
    env.check("max_streams_per_connection 150: the client saw initial_max_streams_bidi=150",
              "remote transport_parameters initial_max_streams_bidi=150" in r.log)
    env.check("qrux still running after -n 300 with 150 streams per connection", q.alive(),
              q.log_tail(3))


# ---------------------------------------------------------------------------
# address change under loss


def ecn(env, be):
    """ECN (RFC 9000 §13.4) through a relay that passes the IP header's ECN
    bits on and counts them. qrux reports the marks it receives in its ACKs,
    so the client's ECN validation succeeds and it goes on marking its
    packets ECT(0); and qrux marks its own once the client's ACKs show the
    path keeps them. Without either half, marking stops after the first ten
    packets of the validation."""
    q = start(env, be, admin=False)
    up, up_sha = data_file(env, "upload-ecn.bin", 2 * MiB)
    rl = Relay(q.port, record=False, ecn=True)
    try:
        r = env.gtls(rl.port, "https://localhost:%d/upload" % q.port, method="POST", data=up,
                     timeout=60)
    finally:
        rl.close()
    doc = echo(r)
    env.eq("2 MiB upload through the ECN relay: exact body at the app",
           (r.status(), doc.get("body_len"), doc.get("body_sha256")), (200, 2 * MiB, up_sha),
           short(r))
    seen = rl.ecn_seen
    for way, who in (("up", "client"), ("down", "qrux")):
        total = sum(v for (w, _), v in seen.items() if w == way)
        ect0 = seen.get((way, 2), 0)
        env.check("%s's datagrams kept ECT(0) marks (%d of %d)" % (who, ect0, total),
                  total > 20 and ect0 * 2 > total, seen)


def migration_under_loss(env, be):
    q = start(env, be, workers=2)
    n = 8 * MiB

    # NAT rebinding the client does not know of: the relay rebinds, three
    # times during the download (gtlsclient 0.12's --nat-rebinding sent
    # nothing from the new address; 1.11's works and is checked below, but
    # moves once, and the client itself). Without loss: with 5% loss on top, a
    # rebinding sometimes ends with the server on a dead path, ngtcp2's
    # gtlsserver included (1 run in 16 there), which would make the check
    # flaky rather than tell qrux apart.
    # 24 MiB, so that after the last rebinding (at 5 MiB) most of the
    # transfer is still to come: a rebinding after the last byte has nothing
    # left for qrux to send anywhere, and with 8 MiB a loaded machine
    # sometimes got there (the CI's one failure of this check).
    big = 24 * MiB
    rl = Relay(q.port, record=False)
    try:
        run_ = env.gtls_start(rl.port, "https://localhost:%d/bytes/%d" % (q.port, big),
                              timeout=90)
        followed = []
        for mark in (1, 3, 5):
            wait_until(lambda: run_.downloaded() >= mark * MiB or run_.proc.poll() is not None,
                       60)
            at = run_.downloaded()
            rl.rebind()
            time.sleep(0.1)
            seen = wait_until(lambda: rl.rx_since_rebind > 0 or run_.proc.poll() is not None, 5)
            # (MiB downloaded at the rebinding, client still running after
            # it, datagrams qrux sent to the new port)
            followed.append((at // MiB, bool(seen) and rl.rx_since_rebind > 0,
                             run_.proc.poll() is None, rl.rx_since_rebind))
        r = run_.finish()
    finally:
        rl.close()
    env.eq("24 MiB, NAT rebinding x3 (relay changes port): 200", r.status(), 200, short(r))
    env.eq("24 MiB, NAT rebinding x3: exact body", r.sha(), pattern_sha256(big))
    env.eq("NAT rebinding: every datagram qrux sent was a packet the client could read",
           undecodable(r), 0)
    env.check("NAT rebinding: after each rebinding (at 1, 3, 5 MiB) qrux sent to the new port",
              [f[1] for f in followed] == [True] * 3, followed)

    # The client's own NAT rebinding (gtlsclient 1.11 --nat-rebinding): 0.1 s
    # into an 8 MiB download it moves to a new port and, unlike
    # --change-local-addr, does not validate the new path itself: qrux has
    # to (PATH_CHALLENGE to the new address, RFC 9000 §9.3) and then send
    # there. The client drops whatever still reaches its old port, so it
    # only ever speaks from the new one if it has an ack-eliciting packet
    # in flight at the move; a 64 KiB stream window makes it send
    # MAX_STREAM_DATA all the time (10 runs in 10 did here). An attempt in
    # which it never sent from the new port shows nothing about qrux and
    # is repeated (at most 3; the client's idle timeout of 5 s ends it).
    for attempt in range(3):
        r = env.gtls(q, "/bytes/%d" % n, timeout=60,
                     extra=["--change-local-addr=100ms", "--nat-rebinding",
                            "--max-stream-data-bidi-local=64K", "--timeout=5s"])
        m = re.search(r"Local address is now (\S+)", r.log)
        new = m.group(1) if m else None
        after = r.log[m.end():] if m else ""
        if new and ("Sent packet: local=%s " % new) in after:
            break
    env.check("--nat-rebinding: the client sent from its new address (%s; attempt %d)"
              % (new, attempt + 1), new is not None and ("Sent packet: local=%s " % new) in after,
              short(r))
    env.eq("8 MiB, gtlsclient --nat-rebinding at 0.1 s: 200", r.status(), 200, short(r))
    env.eq("--nat-rebinding: exact body", r.sha(), pattern_sha256(n))
    env.check("--nat-rebinding: qrux validated the new path (PATH_CHALLENGE after the move)",
              re.search(r"frm rx \d+ 1RTT PATH_CHALLENGE", after) is not None)
    env.check("--nat-rebinding: qrux sent to the new address",
              ("Received packet: local=%s " % new) in after)
    env.eq("--nat-rebinding: every datagram qrux sent was a packet the client could read",
           undecodable(r), 0)

    # ngtcp2 1.11 (server and client alike) can stall such a run: the
    # server's validation of the client's new address does not complete
    # under the loss, so it may send only 3x what it receives there (the
    # client's ACKs: ~140-byte packets); once one of those is lost nothing
    # is in flight either way until the 30 s idle timeout, and gtlsclient
    # exits 0 with part of the body. ngtcp2's own gtlsserver does the same
    # (1 run in 18 here; qrux 1 in 30). Such a run (idle close, a short
    # body that is the right prefix) says nothing about qrux and is run
    # again, at most 3 times; a wrong byte fails at once.
    want = pattern(n)
    for i in range(2):
        for attempt in range(3):
            r = env.gtls(q, "/bytes/%d" % n, timeout=90,
                         extra=["--change-local-addr=500ms", "-r", "0.05", "-t", "0.05"])
            body = r.body()
            stalled = ("ERR_IDLE_CLOSE" in r.log and len(body) < n and
                       want.startswith(body))
            if not stalled:
                break
            print("run %d attempt %d: ngtcp2's amplification stall after the move (%d of %d "
                  "bytes, then the idle timeout); again" % (i + 1, attempt + 1, len(body), n))
        env.eq("8 MiB, address change at 0.5 s, 5%% loss both ways (run %d): 200" % (i + 1),
               r.status(), 200, short(r))
        env.eq("8 MiB, address change + loss (run %d): exact body" % (i + 1),
               (len(body), r.sha()), (n, pattern_sha256(n)), short(r))
        m = re.search(r"Local address is now (\S+)", r.log)
        new = m.group(1) if m else None
        env.check("run %d: the client moved (%s) and qrux answered on the new path" % (i + 1, new),
                  new is not None and ("Received packet: local=%s " % new) in r.log)
        env.eq("run %d: every datagram qrux sent was a packet the client could read" % (i + 1),
               undecodable(r), 0)

    up, up_sha = data_file(env, "upload-mig.bin", 4 * MiB)
    r = env.gtls(q, "/upload", method="POST", data=up, timeout=90,
                 extra=["--change-local-addr=300ms", "-r", "0.05", "-t", "0.05"])
    doc = echo(r)
    env.eq("4 MiB upload, address change + 5% loss: exact body at the app",
           (r.status(), doc.get("body_len"), doc.get("body_sha256")), (200, 4 * MiB, up_sha),
           short(r))
    env.eq("4 MiB upload, address change: every datagram qrux sent was readable",
           undecodable(r), 0)
    env.check("qrux still running after the address changes", q.alive())
    # Six path changes over two workers: the kernel's 4-tuple hash alone
    # would put about half of them on the other worker. Connection-ID
    # steering sends each datagram to its connection's worker directly.
    env.eq("connection-ID steering: no datagram handed between workers",
           metrics(q).get("qrux_quic_datagrams_forwarded_total"), 0)
    env.check("qrux logged that steering is attached",
              "connection-ID steering attached (2 workers)" in q.log_text())


def main():
    with Env("quic_transport") as env:
        be = env.backend()
        state = []
        env.case("returning clients: first visit",
                 lambda: state.append(returning_prepare(env, be)))
        env.case("0-RTT, early_data: safe (default)", early_safe, env, be)
        env.case("0-RTT, early_data: all", early_all, env, be)
        env.case("0-RTT, early_data: off", early_off, env, be)
        env.case("ticket_key_file shared by replicas", shared_keys, env, be)
        env.case("Retry and tokens", retry, env, be)
        env.case("stateless reset after a restart", stateless_reset, env, be)
        env.case("connection limits and timeouts", limits, env, be)
        env.case("streams per connection", streams_limit, env, be)
        env.case("ECN", ecn, env, be)
        env.case("address change under loss", migration_under_loss, env, be)
        if state:
            env.case("returning clients after the anti-replay window", returning_check, env,
                     state[0])


if __name__ == "__main__":
    main()
