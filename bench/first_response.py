#!/usr/bin/env python3
"""bench/first_response.py - latency of the first response on new HTTP/3
connections, on loopback and through a UDP relay that delays every datagram.

What it shows: whether anything (pacing, a held-back flight) makes the first
response of a connection wait longer than the round trips the handshake and
the request need. qrux (1 worker) proxies to e2e/backend.py; h3load opens
connections that each carry one GET /bytes/100 (`--conn-reqs 1`) and reports
the latency percentiles. A request's latency runs from its submission (once
the client's handshake is complete) to the end of its response, so through
the relay (DELAY ms each way) the floor is one round trip, 2 x DELAY, plus
the backend's and the relay's own time.

  python3 bench/first_response.py --qrux build/qrux --h3load build/h3load
  #   --delay MS (default 25)  -n N (default 40)  -c C (default 4)  --runs K (default 3)

Prints one line per run and the median of the runs' p50. Python 3 standard
library only; every process it starts is killed at the end.
"""

import argparse
import heapq
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class DelayRelay:
    """Forwards UDP datagrams between clients and a server port, each one
    DELAY seconds late, in both directions. One server-side socket per
    client address (each client keeps its own source port)."""

    def __init__(self, server_port, delay):
        self.server = ("127.0.0.1", server_port)
        self.delay = delay
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.port = self.front.getsockname()[1]
        self.ups = {}  # client address -> socket to the server
        self.clients = {}  # socket -> client address
        self.queue = []  # (due, seq, socket, data, address or None)
        self.seq = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _push(self, s, data, addr):
        self.seq += 1
        heapq.heappush(self.queue, (time.monotonic() + self.delay, self.seq, s, data, addr))

    def _run(self):
        while not self.stopping:
            now = time.monotonic()
            while self.queue and self.queue[0][0] <= now:
                _, _, s, data, addr = heapq.heappop(self.queue)
                try:
                    s.sendto(data, addr) if addr else s.send(data)
                except OSError:
                    pass
            wait = min(0.05, self.queue[0][0] - now) if self.queue else 0.05
            ready, _, _ = select.select([self.front] + list(self.clients), [], [], max(wait, 0))
            for s in ready:
                try:
                    data, addr = s.recvfrom(65536)
                except OSError:
                    continue
                if s is self.front:
                    up = self.ups.get(addr)
                    if up is None:
                        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        up.connect(self.server)
                        self.ups[addr] = up
                        self.clients[up] = addr
                    self._push(up, data, None)
                else:
                    self._push(self.front, data, self.clients[s])

    def close(self):
        self.stopping = True
        self.thread.join(2)
        for s in list(self.clients) + [self.front]:
            s.close()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, \
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
        for _ in range(50):
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            try:
                t.bind(("127.0.0.1", port))
                return port
            except OSError:
                u.close()
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sys.exit("first_response: no free port")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--qrux", default=os.path.join(SRC, "build", "qrux"))
    ap.add_argument("--h3load", default=os.path.join(SRC, "build", "h3load"))
    ap.add_argument("--delay", type=float, default=25.0, help="ms each way (default 25)")
    ap.add_argument("-n", type=int, default=40, help="connections per run (default 40)")
    ap.add_argument("-c", type=int, default=4, help="concurrent connections (default 4)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    procs = []
    tmp = tempfile.TemporaryDirectory(prefix="qx-first-response-")
    try:
        be = subprocess.Popen([sys.executable, os.path.join(SRC, "e2e", "backend.py"),
                               "--port", "0"], stdout=subprocess.PIPE, start_new_session=True)
        procs.append(be)
        bport = int(be.stdout.readline().split()[1])
        cert, key = os.path.join(tmp.name, "cert.pem"), os.path.join(tmp.name, "key.pem")
        subprocess.run([os.path.join(SRC, "scripts", "make-cert.sh"), cert, key], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port = free_port()
        cfg = os.path.join(tmp.name, "qrux.yaml")
        with open(cfg, "w") as f:
            f.write('server:\n  listen: "127.0.0.1:%d"\n  cert: "%s"\n  key: "%s"\n'
                    '  workers: 1\n  drain_delay_secs: 0\nroutes:\n  - match: "*"\n'
                    '    upstream: "127.0.0.1:%d"\n' % (port, cert, key, bport))
        q = subprocess.Popen([args.qrux, "--config", cfg], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True,
                             env=dict(os.environ, QRUX_LOG="warn"))
        procs.append(q)

        def load(p, n, c):
            r = subprocess.run([args.h3load, "-n", str(n), "-c", str(c), "-m", "1",
                                "--conn-reqs", "1", "--json",
                                "https://127.0.0.1:%d/bytes/100" % p],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=120)
            lines = r.stdout.decode().strip().splitlines()
            return json.loads(lines[-1]) if lines else {}

        deadline = time.monotonic() + 15
        while load(port, 1, 1).get("requests") != 1:
            if time.monotonic() > deadline or q.poll() is not None:
                sys.exit("first_response: qrux did not come up")
            time.sleep(0.2)
        for label, delay in (("loopback", 0.0), ("relay %g ms each way" % args.delay,
                                                 args.delay / 1000)):
            p50s = []
            for i in range(args.runs):
                relay = DelayRelay(port, delay) if delay else None
                try:
                    res = load(relay.port if relay else port, args.n, args.c)
                finally:
                    if relay:
                        relay.close()
                lat = res.get("lat_us", {})
                if res.get("requests") != args.n:
                    sys.exit("first_response: %s: %s of %d requests" %
                             (label, res.get("requests"), args.n))
                p50s.append(lat["p50"] / 1000)
                print("%s run %d: p50 %.1f ms, p90 %.1f ms, max %.1f ms" %
                      (label, i + 1, lat["p50"] / 1000, lat["p90"] / 1000, lat["max"] / 1000))
            print("%s: median p50 %.1f ms" % (label, statistics.median(p50s)))
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            p.wait()
        tmp.cleanup()


if __name__ == "__main__":
    main()
