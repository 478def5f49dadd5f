#!/usr/bin/env python3
"""bench/grpc.py - gRPC unary calls through qrux (HTTPS listener, HTTP/2, to
an h2c app) against the same calls made to the app directly, side by side:
requests/s and CPU per call of each process.

The app is e2e/grpc_app.py (python3-grpcio, qxtest.Echo); the client is
h2load (nghttp2-client) POSTing one framed qxtest.Msg to /qxtest.Echo/Unary
with content-type application/grpc, over TLS to qrux, and over cleartext
HTTP/2 (prior knowledge) to the app. CPU is utime+stime from /proc before
and after each run. qrux runs one worker.

  python3 bench/grpc.py --build build
  #   -n N (calls per run, default 20000)  -c C (connections, default 4)
  #   -m M (streams per connection, default 25)

Prints one line per run; every process it starts is killed at the end.
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
TICK = os.sysconf("SC_CLK_TCK")


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu_secs(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def h2load(url, n, c, m, body):
    cmd = ["h2load", "-n", str(n), "-c", str(c), "-m", str(m), "-d", body,
           "-H", "content-type: application/grpc", "-H", "te: trailers", url]
    out = subprocess.run(cmd, capture_output=True, timeout=600).stdout.decode()
    ok = re.search(r"(\d+) succeeded", out)
    rps = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    return int(ok.group(1)) if ok else 0, float(rps.group(1)) if rps else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("-c", type=int, default=4)
    ap.add_argument("-m", type=int, default=25)
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="qx-bench-grpc-")
    procs = []
    try:
        stubs = os.path.join(d, "stubs")
        os.makedirs(stubs)
        subprocess.run([PY, "-m", "grpc_tools.protoc", "-I" + os.path.join(SRC, "e2e"),
                        "--python_out=" + stubs, "--grpc_python_out=" + stubs,
                        os.path.join(SRC, "e2e", "grpc_echo.proto")], check=True)
        sys.path.insert(0, stubs)
        import grpc_echo_pb2 as pb
        msg = pb.Msg(data=b"x" * 100, text="bench").SerializeToString()
        body = os.path.join(d, "body")
        with open(body, "wb") as f:
            f.write(b"\x00" + len(msg).to_bytes(4, "big") + msg)
        app_port = free_port()
        app = subprocess.Popen([PY, os.path.join(SRC, "e2e", "grpc_app.py"), stubs,
                                str(app_port)], stdout=subprocess.PIPE)
        procs.append(app)
        app.stdout.readline()
        subprocess.run([os.path.join(SRC, "scripts", "make-cert.sh"), os.path.join(d, "cert.pem"),
                        os.path.join(d, "key.pem")], check=True, capture_output=True)
        uport, tport = free_port(socket.SOCK_DGRAM), free_port()
        cfg = os.path.join(d, "qrux.yaml")
        with open(cfg, "w") as f:
            f.write("server:\n  listen: \"127.0.0.1:%d\"\n  https_listen: \"127.0.0.1:%d\"\n"
                    "  cert: cert.pem\n  key: key.pem\n  workers: 1\nroutes:\n"
                    "  - match: \"*\"\n    upstream: \"127.0.0.1:%d\"\n    protocol: h2c\n"
                    % (uport, tport, app_port))
        env = dict(os.environ, QRUX_LOG="warn")
        q = subprocess.Popen([os.path.join(a.build, "qrux"), "--config", cfg], env=env,
                             stderr=subprocess.DEVNULL)
        procs.append(q)
        time.sleep(1.0)
        runs = [("direct", "http://127.0.0.1:%d/qxtest.Echo/Unary" % app_port),
                ("qrux", "https://127.0.0.1:%d/qxtest.Echo/Unary" % tport)]
        h2load(runs[1][1], 500, a.c, a.m, body)  # warm-up: connections, caches
        for name, url in runs:
            q0, a0 = cpu_secs(q.pid), cpu_secs(app.pid)
            ok, rps = h2load(url, a.n, a.c, a.m, body)
            q1, a1 = cpu_secs(q.pid), cpu_secs(app.pid)
            n = max(ok, 1)
            print("%-6s %6d ok  %8.0f req/s  app CPU %6.1f us/call  qrux CPU %6.1f us/call"
                  % (name, ok, rps, (a1 - a0) / n * 1e6, (q1 - q0) / n * 1e6), flush=True)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
