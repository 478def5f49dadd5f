#!/usr/bin/env python3
"""Attacks on the admin server, bounded in count and time, against the
real binary. Each prints the bound it measured ("BOUND ...").

- slow connections: 70 unauthenticated connections that send a request
  head a byte at a time, from one address and then from 70 addresses
  (127.0.0.0/8 is all local): /livez and /readyz from 127.0.0.1 still
  answer 200 within 2 s throughout; one address holds at most 8
  connections; a connection that sends nothing is closed after ~3 s.
- log flood: qrux's open-files limit is lowered (prlimit) until
  libmicrohttpd's accept() fails with EMFILE, and connections keep coming
  for 4 s. Bound: at most 10 lines per second per log call site (the issue
  saw 5.8 million lines in 45 s); once the limit is back, /livez answers.
"""

import os
import re
import resource
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Env, free_port, http_get, yaml_str  # noqa: E402


def start(env, be):
    aport = free_port("tcp")
    extra = "  drain_delay_secs: 0\nadmin:\n  listen: %s\n" % yaml_str("127.0.0.1:%d" % aport)
    q = env.qrux(routes=[("*", be.addr)], workers=1, extra_server=extra)
    q.admin_port = aport
    return q


def probe(port, path="/livez", timeout=2.0):
    """(status, seconds) of GET |path| from 127.0.0.1; status None when
    nothing answered within |timeout|."""
    t0 = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
            data = b""
            while b"\r\n" not in data:
                b = s.recv(4096)
                if not b:
                    break
                data += b
        return int(data.split(b" ")[1]), time.monotonic() - t0
    except (OSError, ValueError, IndexError):
        return None, time.monotonic() - t0


class Slowloris:
    """|n| connections from the source addresses |srcs| (round robin), each
    sending "GET /metrics HTTP/1.1\\r\\n" and then one header byte every
    |every| seconds. Counts the connections the server kept (not closed
    or reset when written to)."""

    def __init__(self, port, srcs, n, every=1.0):
        self.port, self.every = port, every
        self.socks = []
        for i in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((srcs[i % len(srcs)], 0))
            s.settimeout(2)
            try:
                s.connect(("127.0.0.1", port))
                s.sendall(b"GET /metrics HTTP/1.1\r\n")
                self.socks.append(s)
            except OSError:
                s.close()
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop.wait(self.every):
            for s in self.socks:
                try:
                    s.send(b"X")
                except OSError:
                    pass

    def alive(self):
        """Connections the server has not closed: a non-blocking read sees
        neither EOF nor a reset."""
        n = 0
        for s in self.socks:
            s.setblocking(False)
            try:
                if s.recv(1, socket.MSG_PEEK):
                    n += 1  # it answered something (an error): not held idle
            except BlockingIOError:
                n += 1
            except OSError:
                pass
        return n

    def close(self):
        self.stop.set()
        self.t.join(3)
        for s in self.socks:
            s.close()


def probes_during(env, q, tag, seconds=6):
    worst = 0.0
    codes = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for path in ("/livez", "/readyz"):
            st, took = probe(q.admin_port, path)
            codes.append(st)
            worst = max(worst, took)
        time.sleep(0.5)
    env.check("%s: every /livez and /readyz answered 200 (%d probes, slowest %.2fs)"
              % (tag, len(codes), worst), all(c == 200 for c in codes), codes)
    return worst


def slow_connections(env, be):
    q = start(env, be)
    one = Slowloris(q.admin_port, ["127.0.0.2"], 70)
    time.sleep(1.5)
    kept = one.alive()
    worst = probes_during(env, q, "70 slow connections from one address")
    env.check("one address holds at most 8 admin connections (%d of 70 kept)" % kept, kept <= 8)
    one.close()
    print("BOUND admin slow connections from one address: %d of 70 kept, probes slowest %.2fs"
          % (kept, worst), flush=True)

    many = Slowloris(q.admin_port, ["127.0.3.%d" % (1 + i) for i in range(70)], 70)
    time.sleep(1.5)
    kept = many.alive()
    worst = probes_during(env, q, "70 slow connections from 70 addresses")
    many.close()
    print("BOUND admin slow connections from 70 addresses: %d kept, probes slowest %.2fs"
          % (kept, worst), flush=True)

    # A connection that never sends a byte is dropped after the 3 s timeout.
    s = socket.create_connection(("127.0.0.1", q.admin_port), timeout=10)
    t0 = time.monotonic()
    try:
        got = s.recv(1)
    except OSError:
        got = b""
    took = time.monotonic() - t0
    s.close()
    env.check("a silent admin connection is closed after ~3 s (%.1fs)" % took,
              got == b"" and 2.0 <= took <= 6.0)
    print("BOUND admin idle connection closed after %.1fs" % took, flush=True)


def log_flood(env, be):
    q = start(env, be)
    pid = q.pid
    nfds = len(os.listdir("/proc/%d/fd" % pid))
    old = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    lines0 = len(q.log_text().splitlines())
    # No fd left for accept(): every connection that comes in fails there.
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (nfds, old[1]))
    socks = []
    secs = 4.0
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < secs:
            try:
                s = socket.create_connection(("127.0.0.1", q.admin_port), timeout=0.2)
                socks.append(s)
            except OSError:
                pass
            if len(socks) > 100:
                for s in socks:
                    s.close()
                socks = []
            time.sleep(0.005)
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, old)
        for s in socks:
            s.close()
    took = time.monotonic() - t0
    time.sleep(0.5)
    text = q.log_text().splitlines()[lines0:]
    admin_lines = [ln for ln in text if " admin: " in ln]
    print("BOUND admin log flood: %d lines (%d from the admin server) in %.1fs with accept() "
          "failing (EMFILE)" % (len(text), len(admin_lines), took), flush=True)
    env.check("fd exhaustion: libmicrohttpd's accept errors were logged (%d lines)"
              % len(admin_lines), len(admin_lines) >= 1, "\n".join(text[-5:]))
    bound = int(10 * (took + 1.5)) + 5  # 10 per second per call site
    env.check("fd exhaustion: at most %d log lines in %.1fs (%d)" % (bound, took, len(text)),
              len(text) <= bound, "\n".join(text[:20]))
    env.check("fd exhaustion: a line says how many were suppressed",
              any("similar lines suppressed" in ln for ln in text) or len(admin_lines) < 10,
              "\n".join(admin_lines[:12]))
    ok = False
    end = time.monotonic() + 10
    while time.monotonic() < end and not ok:
        ok = probe(q.admin_port)[0] == 200
        time.sleep(0.2)
    env.check("after the fd limit is restored /livez answers 200", ok)
    st, _, body = http_get(q.admin_port, "/metrics")
    m = re.search(rb"^qrux_log_lines_suppressed_total (\d+)$", body, re.M)
    env.check("qrux_log_lines_suppressed_total counts the dropped lines (%s)"
              % (m.group(1).decode() if m else None), m is not None and int(m.group(1)) > 0)
    env.check("qrux still running", q.alive(), q.log_tail(5))


def main():
    with Env("attacks_admin") as env:
        be = env.backend()
        env.case("slow connections", slow_connections, env, be)
        env.case("log flood", log_flood, env, be)


if __name__ == "__main__":
    main()
