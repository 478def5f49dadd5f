#!/usr/bin/env python3
"""bench/xdp.py - what the XDP filter costs and what it saves.

In one run (root: network namespaces, bpffs, XDP):
  1. build/xdp_bench: nanoseconds per packet for each kind of verdict,
     through bpf_prog_test_run_opts with repeat (no interface involved).
  2. Two network namespaces joined by a veth pair (prefix qxb<pid>, removed
     at the end), qrux (1 worker, `xdp:` section) and backend.py in the
     server namespace. The same floods, sent from the client namespace,
     with the filter detached and then attached (generic mode, as `auto`
     picks on a veth): N full-size Initials from many source addresses,
     then N short-header packets with random DCIDs. qrux's CPU time
     (utime+stime from /proc/PID/stat) over each flood, and the ratio
     with/without the filter.
  3. TCP throughput through the veth (a Python sink and source, 1 GiB, best
     of 3) with no program, generic and native mode: what the HTTPS fallback
     pays.

    python3 bench/xdp.py --build build [--packets 200000] [--out FILE]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SRC, "e2e"))
from harness import Cert, kill_all, render_config, run, spawn, wait_until, free_port  # noqa: E402

TCK = os.sysconf("SC_CLK_TCK")
PREFIX = "qxb%d" % (os.getpid() % 100000)
NS_SRV, NS_CLI = PREFIX + "-srv", PREFIX + "-cli"
IF_SRV, IF_CLI = PREFIX + "s", PREFIX + "c"
SRV4 = "10.215.0.1"
SOURCES = 64

FLOOD = r"""
import os, socket, struct, sys, time
port, n, kind, nsrc = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
socks = []
for i in range(nsrc):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("10.215.1.%d" % (10 + i), 0))
    socks.append(s)
pkts = []
for i in range(256):
    if kind == "initial":
        h = bytes([0xc0]) + struct.pack(">I", 1) + bytes([8]) + os.urandom(8) + bytes([8]) + \
            os.urandom(8) + bytes([0])
        pkts.append(h + os.urandom(1200 - len(h)))
    else:
        pkts.append(bytes([0x40]) + os.urandom(1199))
dst = ("10.215.0.1", port)
t0 = time.monotonic()
for i in range(n):
    try:
        socks[i % nsrc].sendto(pkts[i & 255], dst)
    except OSError:
        pass
print(time.monotonic() - t0)
"""

SINK = r"""
import socket, sys
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("10.215.0.1", int(sys.argv[1]))); l.listen(1); print("ok", flush=True)
while True:
    c, _ = l.accept()
    while c.recv(1 << 20):
        pass
    c.close()
"""

SOURCE = r"""
import socket, sys, time
n = int(sys.argv[2]); buf = b"x" * (1 << 20)
s = socket.create_connection(("10.215.0.1", int(sys.argv[1])))
t0 = time.monotonic()
for _ in range(n):
    s.sendall(buf)
s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
print(time.monotonic() - t0)
"""


def sh(cmd, timeout=60):
    rc, out, err = run(cmd, timeout=timeout)
    if rc != 0:
        raise RuntimeError("%s: rc=%s %s" % (" ".join(cmd), rc, err.decode(errors="replace")))
    return out.decode(errors="replace")


def ns(n, cmd):
    return ["ip", "netns", "exec", n] + cmd


def cleanup(mounts):
    for n in (NS_SRV, NS_CLI):
        subprocess.run(["ip", "netns", "del", n], stderr=subprocess.DEVNULL)
    for m in mounts:
        subprocess.run(["umount", m], stderr=subprocess.DEVNULL)


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TCK


def qrux_pid(group):
    """`ip netns exec` may fork: the qx-bench process of that group."""
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                st = f.read()
        except OSError:
            continue
        comm = st[st.index("(") + 1:st.rindex(")")]
        if comm == "qx-bench" and int(st.rsplit(")", 1)[1].split()[2]) == group:
            return int(p)
    raise RuntimeError("no qx-bench process in group %d" % group)


def counters(qbin, pin):
    rc, out, _ = run(ns(NS_SRV, [qbin, "xdp", "status", "--pin", pin]), timeout=30)
    got = {}
    for ln in out.decode().splitlines():
        m = re.match(r"^\s+(pass|drop)\s+(\w+)\s+(\d+)$", ln)
        if m:
            got[m.group(2)] = int(m.group(3))
    return got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--packets", type=int, default=200000)
    ap.add_argument("--repeat", type=int, default=1000000)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    qbin = os.path.abspath(os.path.join(a.build, "qrux"))
    res = {"packets": a.packets}

    # 1. ns per packet
    rc, out, err = run([os.path.join(a.build, "xdp_bench"), str(a.repeat)], timeout=300)
    print(out.decode(), end="")
    res["ns_per_packet"] = [json.loads(l) for l in err.decode().splitlines() if l.startswith("{")]

    d = tempfile.mkdtemp(prefix="qx-bench-xdp-")
    mounts = []
    cleanup([])
    try:
        sh(["ip", "netns", "add", NS_SRV])
        sh(["ip", "netns", "add", NS_CLI])
        sh(["ip", "link", "add", IF_SRV, "netns", NS_SRV, "type", "veth", "peer", "name", IF_CLI,
            "netns", NS_CLI])
        for n, i, addr in ((NS_SRV, IF_SRV, SRV4), (NS_CLI, IF_CLI, "10.215.0.2")):
            sh(ns(n, ["ip", "link", "set", "lo", "up"]))
            sh(ns(n, ["ip", "addr", "add", addr + "/16", "dev", i]))
            sh(ns(n, ["ip", "link", "set", i, "up"]))
        for k in range(SOURCES):
            sh(ns(NS_CLI, ["ip", "addr", "add", "10.215.1.%d/16" % (10 + k), "dev", IF_CLI]))
        fs = os.path.join(d, "bpffs")
        os.makedirs(fs)
        sh(["mount", "-t", "bpf", "bpf", fs])
        mounts.append(fs)
        pin = os.path.join(fs, "qrux")

        # 2. qrux under floods, without and with the filter
        Cert(d)
        be = spawn(ns(NS_SRV, [sys.executable, os.path.join(SRC, "e2e", "backend.py"),
                               "--port", "0"]), stdout=subprocess.PIPE,
                   stderr=subprocess.DEVNULL)
        be_port = int(re.match(rb"listening (\d+)", be.stdout.readline()).group(1))
        port = free_port("udp")
        cfg = os.path.join(d, "qx.yaml")
        with open(cfg, "w") as f:
            f.write(render_config(port, "cert.pem", "key.pem", [("*", "127.0.0.1:%d" % be_port)],
                                  workers=1, extra_server='  https_listen: "[::]:%d"\n' % port)
                    + "xdp:\n  pin: %s\n" % pin)
        link = os.path.join(d, "qx-bench")
        os.symlink(qbin, link)  # not named "qrux": see e2e/harness.py qrux_alias
        log = open(os.path.join(d, "qrux.log"), "wb")
        q = spawn(ns(NS_SRV, [link, "--config", cfg]), stderr=log)
        logpath = os.path.join(d, "qrux.log")
        if not wait_until(lambda: b"ready" in open(logpath, "rb").read(), 15):
            raise RuntimeError("qrux not ready: %s" % open(logpath, "rb").read()[-2000:])
        qpid = qrux_pid(q.pid)
        res["flood"] = {}
        for mode in ("off", "on"):
            if mode == "on":
                print(sh(ns(NS_SRV, [qbin, "xdp", "attach", "--iface", IF_SRV, "--quic-port",
                                     str(port), "--pin", pin])).strip())
                time.sleep(2.5)  # qrux picks the maps up on its next tick
            for kind in ("initial", "short"):
                before = counters(qbin, pin) if mode == "on" else {}
                c0 = cpu_s(qpid)
                secs = float(sh(ns(NS_CLI, ["/usr/bin/python3", "-c", FLOOD, str(port),
                                            str(a.packets), kind, str(SOURCES)]), timeout=600))
                time.sleep(1.0)  # let qrux drain its socket
                cpu = cpu_s(qpid) - c0
                after = counters(qbin, pin) if mode == "on" else {}
                drops = {k: after[k] - before.get(k, 0) for k in after
                         if after[k] != before.get(k, 0)}
                res["flood"]["%s/%s" % (kind, mode)] = {"cpu_s": cpu, "send_s": secs,
                                                        "xdp": drops}
                print("%-8s flood, filter %-3s: qrux CPU %.2f s for %d packets (sent in %.1f s)%s"
                      % (kind, mode, cpu, a.packets, secs, (" xdp: %s" % drops) if drops else ""))
        for kind in ("initial", "short"):
            off = res["flood"]["%s/off" % kind]["cpu_s"]
            on = res["flood"]["%s/on" % kind]["cpu_s"]
            res["flood"]["%s/ratio_on_off" % kind] = on / off if off else None
            print("%-8s flood: qrux CPU with/without the filter = %.3f" % (kind, on / off if off
                                                                              else float("nan")))
        sh(ns(NS_SRV, [qbin, "xdp", "detach", "--pin", pin]))

        # The HTTPS fallback itself: 48 MiB (under the default body cap) through qrux's TCP listener.
        res["https_mbyte_s"] = {}
        for mode in ("none", "generic"):
            if mode != "none":
                sh(ns(NS_SRV, [qbin, "xdp", "attach", "--iface", IF_SRV, "--quic-port",
                               str(port), "--pin", pin, "--mode", mode]))
            best = 0.0
            for _ in range(3):
                out = sh(ns(NS_CLI, ["curl", "-sk", "--http1.1", "-o", "/dev/null", "-w",
                                     "%{speed_download}", "https://%s:%d/bytes/%d"
                                     % (SRV4, port, 48 << 20)]), timeout=300)
                best = max(best, float(out) / 1e6)
            res["https_mbyte_s"][mode] = best
            print("HTTPS fallback through qrux, XDP %-7s: %.0f MB/s (best of 3, 48 MiB)"
                  % (mode, best))
            if mode != "none":
                sh(ns(NS_SRV, [qbin, "xdp", "detach", "--pin", pin]))
        kill_all()

        # 3. TCP through the veth
        tport = free_port("tcp")
        sink = spawn(ns(NS_SRV, ["/usr/bin/python3", "-c", SINK, str(tport)]),
                     stdout=subprocess.PIPE)
        sink.stdout.readline()
        res["tcp_gbit_s"] = {}
        for mode in ("none", "generic", "native"):
            if mode != "none":
                sh(ns(NS_SRV, [qbin, "xdp", "attach", "--iface", IF_SRV, "--quic-port",
                               str(port), "--pin", pin, "--mode", mode]))
            best = None
            for _ in range(3):
                t = float(sh(ns(NS_CLI, ["/usr/bin/python3", "-c", SOURCE, str(tport),
                                         "1024"]), timeout=300))
                best = t if best is None else min(best, t)
            gbit = 1024 * 8 / 1024 / best
            res["tcp_gbit_s"][mode] = gbit
            print("TCP through the veth, XDP %-7s: %.2f Gbit/s (best of 3, 1 GiB)" % (mode, gbit))
            if mode != "none":
                sh(ns(NS_SRV, [qbin, "xdp", "detach", "--pin", pin]))
    finally:
        kill_all()
        cleanup(mounts)
        subprocess.run(["rm", "-rf", d])
    out = a.out or os.path.join(a.build, "bench", "xdp.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    print("results: %s" % out)


if __name__ == "__main__":
    main()
