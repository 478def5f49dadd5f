#!/usr/bin/env python3
"""reload_latency.py - how long from a ConfigMap update to qrux serving the
new routes (issue 5: "within a second").

qrux reads its config from a directory written exactly the way the
kubelet's atomic writer writes a ConfigMap volume (e2e/test_reload.py's
AtomicDir: new `..<timestamp>/`, `..data_tmp` symlink renamed over `..data`,
old directory deleted). Each swap points the catch-all route at the other of
two backends (e2e/backend.py, `/id` answers its port). Right after the
rename(2) a new HTTP/3 connection is made over and over (e2e's h3probe,
one GET /id each) until the new backend answers.

Per swap it records:
  served  time from the rename to the end of the first probe answered by the
          new backend: what a client sees (an upper bound: the switch
          happened inside that probe, which lasts about `probe` ms)
  logged  time from the rename to qrux's "config reload ... generation N"
          log line (millisecond timestamps): the watcher's debounce, the
          parse and the publication
  probe   how long that one probe took (the measuring resolution)
and prints the median and p90 (nearest rank) of each.

  QRUX_BIN=build/qrux H3PROBE_BIN=build/h3probe python3 bench/reload_latency.py
  ... --swaps 20 --load      # with HTTP/3 load running (gtlsclient loops)

It checks that every swap was served (never a timing bound) and ends with
the e2e "N passed, N failed" line; exit 1 if a swap was never served.
"""

import argparse
import datetime
import math
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "e2e"))
import harness  # noqa: E402
from harness import Env  # noqa: E402
from test_reload import (AtomicDir, Load, config_text, nlines, probe, start_qrux_at,  # noqa: E402
                         wait_log, wait_served_by)


def log_time(line):
    ts = line.split(" ", 1)[0]
    dt = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.replace(tzinfo=datetime.timezone.utc).timestamp()


def p90(xs):
    s = sorted(xs)
    return s[max(0, math.ceil(0.9 * len(s)) - 1)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--swaps", type=int, default=10)
    ap.add_argument("--load", action="store_true", help="run HTTP/3 load during the swaps")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    with Env("reload_latency") as env:
        b = [env.backend(), env.backend()]
        cert = env.cert()
        port = harness.free_port("udp")
        mk = lambda be: config_text(port, cert.cert, cert.key, [("*", be.addr)],
                                    workers=args.workers)
        cm = AtomicDir(os.path.join(env.dir, "cm"), {"qrux.yaml": mk(b[0])})
        q = start_qrux_at(env, cm.path("qrux.yaml"), port)
        env.check("serving the first backend", wait_served_by(q, b[0].port, 15))
        load = Load(env, q, ns=(50, 50)) if args.load else None
        if load:
            env.check("the load runs", load.wait_more(200, 60))

        rows = []
        for k in range(1, args.swaps + 1):
            want = b[k % 2]
            i = nlines(q)
            t0 = cm.update({"qrux.yaml": mk(want)})
            w0 = time.time() - (time.monotonic() - t0)
            served = probe_ms = None
            while time.monotonic() - t0 < 10:
                s = time.monotonic()
                r = probe(q, "/id", timeout=5)
                e = time.monotonic()
                if r.ok() and r.backend_port() == want.port:
                    served, probe_ms = (e - t0) * 1000, (e - s) * 1000
                    break
            ln = wait_log(q, r"config reload \(file changed\): generation %d\b" % (k + 1), i, 5)
            logged = (log_time(ln) - w0) * 1000 if ln else None
            env.check("swap %d served by the new backend" % k, served is not None, q.log_tail())
            if served is not None:
                rows.append((served, logged, probe_ms))
                print("swap %2d: served %6.1f ms  logged %6s ms  probe %5.1f ms"
                      % (k, served, "%.1f" % logged if logged is not None else "-", probe_ms),
                      flush=True)
            time.sleep(0.5)  # apart from the watcher's 100 ms debounce

        rate = None
        if load:
            runs = load.stop()
            failed = load.failed_runs(runs)
            nreq = sum(r["ok"] for r in runs)
            if runs:
                rate = nreq / max(1e-3, max(r["t1"] for r in runs) - min(r["t0"] for r in runs))
            env.eq("load: zero failed requests (%d)" % nreq, len(failed), 0,
                   [r.get("summary") for r in failed[:2]])
        if rows:
            sv = [r[0] for r in rows]
            lg = [r[1] for r in rows if r[1] is not None]
            pr = [r[2] for r in rows]
            print("RESULT %d swaps%s, %d workers: served median %.0f ms, p90 %.0f ms, max %.0f ms"
                  " | logged median %s ms | probe median %.0f ms"
                  % (len(rows), " under HTTP/3 load (%.0f req/s)" % rate if rate else "",
                     args.workers,
                     statistics.median(sv), p90(sv), max(sv),
                     "%.0f" % statistics.median(lg) if lg else "-", statistics.median(pr)),
                  flush=True)


if __name__ == "__main__":
    main()
