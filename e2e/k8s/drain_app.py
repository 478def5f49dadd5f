#!/usr/bin/env python3
"""drain_app.py - the demo app of the Kubernetes tests: a plain HTTP/1.1
server that shuts down the way a well-behaved app does when the kubelet
sends SIGTERM: it stops accepting connections, lets every request in
flight finish, then exits 0.

  drain_app.py --port P [--host H]   prints "listening P" once it accepts

Paths: /delay/MS answers 200 after MS milliseconds (a request in flight);
/ and anything else answers 200 with "qrux demo app\\n". Every response
names the app's process in X-App-Pid (so a test can tell restarts apart).
"""

import argparse
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_active = 0
_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        global _active
        with _lock:
            _active += 1
        try:
            body = b"qrux demo app\n"
            if self.path.startswith("/delay/"):
                time.sleep(int(self.path.split("/")[2].split("?")[0]) / 1000.0)
                body = b"delayed\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-App-Pid", str(os.getpid()))
            self.end_headers()
            self.wfile.write(body)
        finally:
            with _lock:
                _active -= 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()
    srv = ThreadingHTTPServer((a.host, a.port), Handler)
    srv.daemon_threads = True
    stop = threading.Event()

    def on_term(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    print("listening %d" % srv.server_address[1], flush=True)
    stop.wait()
    # Stop accepting, then let the requests in flight finish.
    srv.shutdown()
    srv.server_close()
    print("draining: %d requests in flight" % _active, flush=True)
    while True:
        with _lock:
            if _active == 0:
                break
        time.sleep(0.02)
    print("drained", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
