#!/usr/bin/env python3
"""bench/ws_echo.py - WebSocket echo messages through qrux per CPU-second of
qrux, over HTTP/1.1 (Upgrade) on the HTTPS listener.

qrux (1 worker) proxies to e2e/ws_app.py (python3-websockets); C clients
(python3-websockets, one asyncio loop) each open a tunnel to /echo and send
messages of SIZE bytes in windows of W, waiting for the echoes. qrux's CPU
time (utime + stime from /proc) is read before and after; the result is the
echoed messages per qrux CPU-second, and the qrux CPU microseconds per
message. The same clients straight to the app give the run's wall-clock
rate for comparison (the app and the client, both Python, are the
bottleneck: the figure that matters is qrux's CPU per message).

  python3 bench/ws_echo.py --qrux build/qrux
  #   -n N messages per client (default 20000)  -c C clients (default 4)
  #   --size BYTES (default 64)  -w W messages in flight per client (default 32)

Prints one line per mode and a JSON line. Every process it starts is killed
at the end.
"""

import argparse
import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

import websockets.client  # Debian's python3-websockets

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_secs(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def client(url, ctx, n, size, window):
    msg = b"m" * size
    async with websockets.client.connect(url, ssl=ctx, max_size=None, compression=None,
                                         ping_interval=None) as ws:
        sent = got = 0
        while got < n:
            while sent < n and sent - got < window:
                await ws.send(msg)
                sent += 1
            await ws.recv()
            got += 1
    return got


async def run_clients(url, ctx, c, n, size, window):
    t0 = time.monotonic()
    got = await asyncio.gather(*(client(url, ctx, n, size, window) for _ in range(c)))
    return sum(got), time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--qrux", default=os.path.join(SRC, "build", "qrux"))
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("-c", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("-w", type=int, default=32)
    args = ap.parse_args()

    procs = []
    tmp = tempfile.TemporaryDirectory(prefix="qx-ws-echo-")
    try:
        app = subprocess.Popen([sys.executable, os.path.join(SRC, "e2e", "ws_app.py")],
                               stdout=subprocess.PIPE, start_new_session=True)
        procs.append(app)
        aport = int(app.stdout.readline().split()[1])
        cert, key = os.path.join(tmp.name, "cert.pem"), os.path.join(tmp.name, "key.pem")
        subprocess.run([os.path.join(SRC, "scripts", "make-cert.sh"), cert, key], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port, tport = free_port(socket.SOCK_DGRAM), free_port()
        cfg = os.path.join(tmp.name, "qrux.yaml")
        with open(cfg, "w") as f:
            f.write('server:\n  listen: "127.0.0.1:%d"\n  https_listen: "127.0.0.1:%d"\n'
                    '  cert: "%s"\n  key: "%s"\n  workers: 1\n  drain_delay_secs: 0\n'
                    'routes:\n  - match: "*"\n    upstream: "127.0.0.1:%d"\n'
                    % (port, tport, cert, key, aport))
        q = subprocess.Popen([args.qrux, "--config", cfg], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True,
                             env=dict(os.environ, QRUX_LOG="warn"))
        procs.append(q)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", tport), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])

        got, secs = asyncio.run(run_clients("ws://127.0.0.1:%d/echo" % aport, None, args.c,
                                            args.n, args.size, args.w))
        direct = got / secs
        print("direct to the app: %d messages in %.2f s (%.0f msg/s wall)" % (got, secs, direct))

        before = cpu_secs(q.pid)
        got, secs = asyncio.run(run_clients("wss://localhost:%d/echo" % tport, ctx, args.c,
                                            args.n, args.size, args.w))
        cpu = cpu_secs(q.pid) - before
        print("through qrux (h1, TLS): %d messages in %.2f s (%.0f msg/s wall); qrux CPU %.2f s:"
              " %.0f messages per qrux CPU-second, %.1f us per message (both ways)"
              % (got, secs, got / secs, cpu, got / cpu if cpu else 0, cpu * 1e6 / got))
        print(json.dumps({"messages": got, "size": args.size, "clients": args.c,
                          "direct_msg_per_s": round(direct), "qrux_msg_per_s": round(got / secs),
                          "qrux_cpu_s": round(cpu, 3),
                          "msg_per_qrux_cpu_s": round(got / cpu) if cpu else None,
                          "qrux_cpu_us_per_msg": round(cpu * 1e6 / got, 2)}))
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            p.wait()


if __name__ == "__main__":
    main()
