#!/usr/bin/env python3
"""bench/callgrind.py - user-space instructions per request of qrux (1 worker)
over HTTP/3, HTTP/2 and HTTP/1.1, counted by callgrind.

Instruction counts do not move with the machine's load the way CPU time does,
so this is the figure to compare two builds with on a shared machine.

The set-up is bench/run.py's (nginx backend serving /small.bin, 100 bytes;
the same qrux config, `https_listen` on the QUIC port's number); qrux runs
under `valgrind --tool=callgrind --instr-atstart=no`. Per protocol, on one
qrux process:

  1. a warm-up of the same shape as the loads (pools, caches), not counted;
  2. instrumentation on (`callgrind_control -i on`), then REPEAT times:
     a load of N requests, dump (`callgrind_control -d`, which also zeroes
     the counters), a load of 2N requests, dump;
  3. the zero-request baseline: instrumentation still on, no load for as
     long as the last load of N took, dump; subtracted from every load's
     count in proportion to its duration (timers, the idle pool).

Each load opens its own connections, so a dump holds the handshakes too:
  (I = a dump's instructions minus the baseline)
  per_request   = I(N) / N              (handshakes included; the figure
                                         bench/README.md has quoted since
                                         session 1 for HTTP/3)
  marginal      = (I(2N) - I(N)) / N    (one more request on open
                                         connections: handshakes cancel)
  per_connection= (I(N) - N*marginal) / C

Loads (fixed, so two builds see the same ones):
  h3    h3load -n N -c 8 -m 32                      GET /small.bin
  h2    h2load -n N -c 8 -m 32                      GET /small.bin
  h1    h2load --h1 -n N -c 8 -m 1 (no pipelining)  GET /small.bin

    python3 bench/callgrind.py --build build [--requests 4000] [--repeat 2]
        [--protocols h3,h2,h1] [--out FILE]

Python 3 standard library only; every process it starts is killed at the end.
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as R  # noqa: E402  (bench/run.py: backend, Proxy, h3load, h2load)

CONNS = 8
LOADS = {
    # name: (tool, extra args); the request count and URL are added.
    "h3": ("h3load", ["-c", str(CONNS), "-m", "32"]),
    "h2": ("h2load", ["-c", str(CONNS), "-m", "32"]),
    "h1": ("h2load", ["--h1", "-c", str(CONNS), "-m", "1"]),
}


def total_ir(path):
    """The instruction total of one callgrind dump (its totals:/summary: line)."""
    tot = None
    with open(path, errors="replace") as f:
        for line in f:
            m = re.match(r"^(totals|summary):\s+(\d+)", line)
            if m:
                tot = int(m.group(2))
    return tot


def load(proto, n, url):
    tool, extra = LOADS[proto]
    if tool == "h3load":
        res = R.h3load(["-n", str(n), "--timeout", "300"] + extra, url, timeout=600)
        ok = res.get("requests") == n and not res.get("errors") and not res.get("error")
        return ok, res
    res = R.h2load(["-n", str(n)] + extra, url)
    return res.get("succeeded") == n, res


def control(pid, *args):
    r = subprocess.run([R.need("callgrind_control")] + list(args) + [str(pid)],
                       capture_output=True, timeout=120)
    if r.returncode != 0:
        sys.exit("callgrind_control %s: %s" % (" ".join(args), r.stderr.decode(errors="replace")))


def dump(pid, prefix, seen):
    """Dumps (and zeroes) the counters; returns the new dump's total."""
    control(pid, "-d")
    for _ in range(100):
        new = sorted(set(glob.glob(prefix + "*")) - seen)
        if new:
            seen.update(new)
            time.sleep(0.2)  # written in one go, but be sure it is closed
            return total_ir(new[-1]), new[-1]
        time.sleep(0.1)
    sys.exit("callgrind: no dump appeared")


def run_proto(env, be, proto, n, repeat):
    prefix = os.path.join(env.dir, "cg-%s.out" % proto)
    px = R.Proxy(env, "qrux", "qrux-cg-" + proto, be.port, workers=1, https=True,
                 valgrind=[R.need("valgrind"), "--tool=callgrind", "--instr-atstart=no",
                           "--callgrind-out-file=" + prefix])
    url = px.base + "/small.bin"
    seen = set(glob.glob(prefix + "*"))
    ok, res = load(proto, min(n, 1000), url)  # warm-up
    if not ok:
        sys.exit("callgrind: %s warm-up failed: %s" % (proto, res))
    control(px.pid, "-i", "on")
    runs = []
    for _ in range(repeat):
        pair = {}
        for k in (1, 2):
            t0 = time.time()
            ok, res = load(proto, k * n, url)
            secs = time.time() - t0
            ir, path = dump(px.pid, prefix, seen)
            if not ok:
                sys.exit("callgrind: %s load of %d failed: %s" % (proto, k * n, res))
            pair[k] = {"requests": k * n, "ir": ir, "secs": secs}
        runs.append(pair)
        R.log("  %s: %d requests %d instructions, %d requests %d instructions" % (
            proto, n, pair[1]["ir"], 2 * n, pair[2]["ir"]))
    # Zero requests, instrumentation still on, for as long as a load of N
    # took: what the idle loop (timers, the open pool) costs meanwhile.
    base_secs = runs[-1][1]["secs"]
    time.sleep(base_secs)
    base_ir, _ = dump(px.pid, prefix, seen)
    control(px.pid, "-i", "off")
    px.stop()
    out = {"load": LOADS[proto], "requests": n, "connections_per_load": CONNS,
           "baseline_ir": base_ir, "baseline_secs": base_secs, "runs": []}
    rate = (base_ir or 0) / base_secs if base_secs > 0 else 0
    for pair in runs:
        # The baseline is scaled to each load's duration.
        a = pair[1]["ir"] - rate * pair[1]["secs"]
        b = pair[2]["ir"] - rate * pair[2]["secs"]
        marginal = (b - a) / n
        out["runs"].append({"ir_n": pair[1]["ir"], "ir_2n": pair[2]["ir"],
                            "per_request": a / n, "marginal": marginal,
                            "per_connection": (a - n * marginal) / CONNS})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(R.SRC, "build"),
                    help="CMake build dir holding qrux and h3load (default: build/)")
    ap.add_argument("--requests", type=int, default=4000, help="N (default 4000)")
    ap.add_argument("--repeat", type=int, default=2, help="pairs of loads (default 2)")
    ap.add_argument("--protocols", default="h3,h2,h1", help="comma list of h3, h2, h1")
    ap.add_argument("--out", default=None, help="JSON results (default BUILD/bench/callgrind.json)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (dumps, logs)")
    args = ap.parse_args()
    R.ARGS = argparse.Namespace(qrux=os.path.join(args.build, "qrux"),
                                h3load=os.path.join(args.build, "h3load"))
    for b in (R.ARGS.qrux, R.ARGS.h3load):
        if not os.access(b, os.X_OK):
            sys.exit("callgrind: %s not built" % b)
    protos = args.protocols.split(",")
    for p in protos:
        if p not in LOADS:
            sys.exit("callgrind: unknown protocol %r" % p)
    R.signal.signal(R.signal.SIGTERM, R.on_signal)
    R.signal.signal(R.signal.SIGINT, R.on_signal)
    env = R.Env(args.keep)
    out = {"qrux": os.path.realpath(R.ARGS.qrux), "loadavg_start": open("/proc/loadavg").read().split()[:3]}
    try:
        be = R.backend(env)
        for p in protos:
            R.log("%s: qrux (1 worker) under callgrind, %d x (%d + %d requests)" % (
                p, args.repeat, args.requests, 2 * args.requests))
            out[p] = run_proto(env, be, p, args.requests, args.repeat)
        R.kill(be.proc)
    finally:
        env.close()
    path = args.out or os.path.join(args.build, "bench", "callgrind.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print("qrux %s, 1 worker, callgrind (user space), GET /small.bin, %d connections per load"
          % (out["qrux"], CONNS))
    print("%-6s %-44s %-34s %s" % ("proto", "instructions/request (N, handshakes in)",
                                   "marginal ((2N-N)/N)", "per connection"))
    for p in protos:
        rs = out[p]["runs"]
        print("%-6s %-44s %-34s %s" % (
            p, ", ".join("%.0f" % r["per_request"] for r in rs),
            ", ".join("%.0f" % r["marginal"] for r in rs),
            ", ".join("%.0f" % r["per_connection"] for r in rs)))
    print("zero-request baselines: %s" % ", ".join("%s %s" % (p, out[p]["baseline_ir"]) for p in protos))
    print("results: %s" % path)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        R.kill_all()
