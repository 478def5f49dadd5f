#!/usr/bin/env python3
"""test_xdp.py - the XDP filter (bpf/xdp_quic.bpf.c) in front of qrux, for
real: two network namespaces joined by a veth pair, qrux and its backend in
the server namespace, the program attached to the server's veth with
`qrux xdp attach`, every client (gtlsclient, Chromium, curl, raw UDP
senders) in the client namespace.

Checks what an operator would: pages and a 20 MiB download through the
filter (exact bytes), the proxy picking up a filter attached after it
started, dropped junk (short Initials, forged short-header DCIDs, a
deny-listed address, an Initial flood from many sources) counted in
/metrics by reason while a real client still connects, the deny list over
the admin API (token, validation), re-attach replacing the program in
place, detach removing it (metrics back to 0, qrux still serving), the
HTTPS fallback with the program attached, and the loader's errors without
capabilities, bpffs or interface.

Needs root (CI runs as root). Everything machine-global gets the prefix
qxx<pid> (namespaces, veths, the bpffs mount under the temp dir) and is
removed at the end, also on failure or SIGTERM.
"""

import atexit
import os
import random
import re
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Env, GtlsRun, Qrux, need, pattern, pattern_sha256, qrux_bin,  # noqa: E402
                     render_config, run, spawn, wait_until, free_port)

PREFIX = "qxx%d" % (os.getpid() % 100000)
NS_SRV, NS_CLI = PREFIX + "-srv", PREFIX + "-cli"
NS_OTHER = PREFIX + "-oth"  # another pod on the node, same bpffs
IF_SRV, IF_CLI = PREFIX + "s", PREFIX + "c"  # <= 15 characters
SRV4, CLI4, DENIED4 = "10.214.0.1", "10.214.0.2", "10.214.0.66"
FLOOD_NET = "10.214.1."  # .10 .. .10+FLOOD_SOURCES-1 on the client
FLOOD_SOURCES = 30
RATE, BURST = 5, 10
TOKEN = "xdp-e2e-token"
# What the loader needs and nothing else (setpriv's names): attach checks for
# these before it loads anything.
LOADER_CAPS = "-all,+bpf,+perfmon,+net_admin"
BIG = 20 * 1024 * 1024

_mounts = []


def sh(cmd, timeout=30):
    rc, out, err = run(cmd, timeout=timeout)
    return rc, out.decode(errors="replace"), err.decode(errors="replace")


def must(cmd, timeout=30):
    rc, out, err = sh(cmd, timeout)
    if rc != 0:
        raise RuntimeError("%s: rc=%s %s %s" % (" ".join(cmd), rc, out, err))
    return out


def cleanup():
    for ns in (NS_SRV, NS_CLI, NS_OTHER):
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
    for m in _mounts:
        subprocess.run(["umount", m], stderr=subprocess.DEVNULL)
    del _mounts[:]


def in_ns(ns, cmd):
    return ["ip", "netns", "exec", ns] + cmd


def setup_net(env):
    cleanup()  # a previous run of this pid's prefix, if any
    atexit.register(cleanup)
    must(["ip", "netns", "add", NS_SRV])
    must(["ip", "netns", "add", NS_CLI])
    must(["ip", "link", "add", IF_SRV, "netns", NS_SRV, "type", "veth", "peer", "name", IF_CLI,
          "netns", NS_CLI])
    for ns, ifc, a in ((NS_SRV, IF_SRV, SRV4), (NS_CLI, IF_CLI, CLI4)):
        must(in_ns(ns, ["ip", "link", "set", "lo", "up"]))
        must(in_ns(ns, ["ip", "addr", "add", a + "/16", "dev", ifc]))
        must(in_ns(ns, ["ip", "link", "set", ifc, "up"]))
    must(in_ns(NS_CLI, ["ip", "addr", "add", DENIED4 + "/16", "dev", IF_CLI]))
    for i in range(FLOOD_SOURCES):
        must(in_ns(NS_CLI, ["ip", "addr", "add", "%s%d/16" % (FLOOD_NET, 10 + i), "dev", IF_CLI]))
    # A bpffs of our own: `ip netns exec` mounts a fresh /sys, which hides
    # the machine's /sys/fs/bpf; a mount under the temp dir is seen in both.
    fs = os.path.join(env.dir, "bpffs")
    os.makedirs(fs)
    must(["mount", "-t", "bpf", "bpf", fs])
    _mounts.append(fs)
    return os.path.join(fs, "qrux")


class NsEnv(Env):
    """qrux runs in the server namespace: the harness starts qx-under-test,
    here a script that enters the namespace and execs the binary (through a
    link that is also named qx-under-test, never "qrux")."""

    def __exit__(self, et, ev, tb):
        cleanup()  # namespaces and the bpffs mount first: the temp dir holds the mount
        return super().__exit__(et, ev, tb)

    def qrux_alias(self):
        wrapper = os.path.join(self.dir, "qx-under-test")
        if not os.path.exists(wrapper):
            os.makedirs(os.path.join(self.dir, "bin"))
            link = os.path.join(self.dir, "bin", "qx-under-test")
            os.symlink(os.path.abspath(qrux_bin()), link)
            with open(wrapper, "w") as f:
                f.write('#!/bin/sh\nexec ip netns exec %s %s "$@"\n' % (NS_SRV, link))
            os.chmod(wrapper, 0o755)
        return wrapper


def xdp(env, *args, caps=None):
    cmd = in_ns(NS_SRV, [qrux_bin(), "xdp"] + list(args))
    if caps is not None:
        cmd = in_ns(NS_SRV, [need("setpriv"), "--bounding-set", caps, qrux_bin(), "xdp"] +
                    list(args))
    return sh(cmd, timeout=30)


def admin(env, path, method="GET", body=None, token=TOKEN, ctype="application/json"):
    """curl in the server namespace against the admin port; (status, body)."""
    cmd = [need("curl"), "-s", "-o", "-", "-w", "\n%{http_code}", "-X", method,
           "http://127.0.0.1:%d%s" % (env.admin_port, path)]
    if token:
        cmd += ["-H", "Authorization: Bearer " + token]
    if body is not None:
        cmd += ["-H", "Content-Type: " + ctype, "--data-binary", body]
    rc, out, err = sh(in_ns(NS_SRV, cmd))
    text, _, code = out.rpartition("\n")
    return (int(code) if code.isdigit() else None), text


def metrics(env):
    st, text = admin(env, "/metrics")
    if st != 200:
        raise RuntimeError("/metrics: %s %s" % (st, text[:200]))
    m = {}
    for ln in text.splitlines():
        g = re.match(r'^qrux_xdp_packets_total\{verdict="(\w+)",reason="(\w+)"\} (\d+)$', ln)
        if g:
            m[g.group(2)] = int(g.group(3))
        g = re.match(r"^qrux_xdp_attached (\d)$", ln)
        if g:
            m["attached"] = int(g.group(1))
    return m


def gtls(env, port, paths, timeout=60):
    """gtlsclient in the client namespace (SNI localhost, no verification)."""
    if isinstance(paths, str):
        paths = [paths]
    uris = ["https://localhost:%d%s" % (port, p) for p in paths]
    ddir = os.path.join(env.dir, "dl-%d" % random.randrange(1 << 30))
    os.makedirs(ddir)
    cmd = in_ns(NS_CLI, [need("gtlsclient"), "--exit-on-all-streams-close", "--no-quic-dump",
                         "--no-http-dump", "--timeout=%ds" % timeout, "--handshake-timeout=5s",
                         "--download", ddir, SRV4, str(port)] + uris)
    return GtlsRun(env, cmd, uris, ddir, timeout).finish()


def send_udp(src, port, payloads, count=1):
    """Sends each payload |count| times from |src| (an address of the
    client namespace) with a Python in that namespace."""
    code = ("import socket,sys,binascii\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "s.bind((sys.argv[1],0))\n"
            "ps=[binascii.unhexlify(x) for x in sys.argv[4:]]\n"
            "for _ in range(int(sys.argv[3])):\n"
            "    for p in ps: s.sendto(p,(%r,int(sys.argv[2])))\n" % SRV4)
    must(in_ns(NS_CLI, ["/usr/bin/python3", "-c", code, src, str(port), str(count)] +
               [p.hex() for p in payloads]))


def initial(size, dcid_len=8):
    hdr = bytes([0xc0]) + struct.pack(">I", 1) + bytes([dcid_len]) + os.urandom(dcid_len) + \
        bytes([8]) + os.urandom(8) + bytes([0])  # token length 0
    return hdr + bytes(size - len(hdr))


def short_header(n=60):
    return bytes([0x40]) + os.urandom(n - 1)


def delta(before, after, reason):
    return after.get(reason, 0) - before.get(reason, 0)


def main():
    if os.geteuid() != 0:
        print("FAIL test_xdp: needs root (CI runs as root)")
        sys.exit(1)
    with NsEnv("xdp") as env:
        pin = setup_net(env)
        cert = env.cert()
        root = os.path.join(env.dir, "www")
        os.makedirs(root)
        page = "<!doctype html><title>xdp</title><p id=t>through the XDP filter</p>\n"
        with open(os.path.join(root, "index.html"), "w") as f:
            f.write(page)
        # The backend in the server namespace, on its loopback.
        be = spawn(in_ns(NS_SRV, [sys.executable, os.path.join(os.path.dirname(
            os.path.abspath(__file__)), "backend.py"), "--host", "127.0.0.1", "--port", "0",
            "--root", root]), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        m = re.match(rb"listening (\d+)", be.stdout.readline())
        be_port = int(m.group(1))

        port = free_port("udp")
        env.admin_port = free_port("tcp")
        with open(os.path.join(env.dir, "token"), "w") as f:
            f.write(TOKEN + "\n")
        text = render_config(port, "cert.pem", "key.pem", [("*", "127.0.0.1:%d" % be_port)],
                             workers=2, extra_server='  https_listen: "[::]:%d"\n' % port)
        text += ('admin:\n  listen: "127.0.0.1:%d"\n  token_file: token\n'
                 "xdp:\n  pin: %s\n  initial_rate: %d\n  initial_burst: %d\n"
                 % (env.admin_port, pin, RATE, BURST))
        cfg = os.path.join(env.dir, "qx.yaml")
        with open(cfg, "w") as f:
            f.write(text)

        # -- the loader's errors, before anything is attached --------------
        def loader_errors():
            rc, out, err = xdp(env, "attach", "--iface", "nosuch0", "--quic-port", str(port),
                               "--pin", pin)
            env.check("attach to a missing interface: exit 1, says so",
                      rc == 1 and "no interface 'nosuch0'" in err, err)
            rc, out, err = xdp(env, "attach", "--iface", IF_SRV, "--quic-port", str(port),
                               "--pin", os.path.join(env.dir, "notbpffs"))
            env.check("attach without bpffs: exit 1, names the mount",
                      rc == 1 and "not on a bpf filesystem" in err and "mount -t bpf" in err, err)
            rc, out, err = xdp(env, "attach", "--iface", IF_SRV, "--quic-port", str(port),
                               "--pin", pin, caps="-bpf,-sys_admin,-net_admin")
            env.check("attach without capabilities: exit 1, names CAP_BPF and CAP_NET_ADMIN",
                      rc == 1 and "CAP_BPF" in err and "CAP_NET_ADMIN" in err, err)
            # The verifier refuses the program's variable packet offsets to
            # a loader without CAP_PERFMON: attach says so before loading.
            rc, out, err = xdp(env, "attach", "--iface", IF_SRV, "--quic-port", str(port),
                               "--pin", pin, caps="-perfmon,-sys_admin")
            env.check("attach without CAP_PERFMON alone: exit 1, names only CAP_PERFMON",
                      rc == 1 and "missing capabilities: CAP_PERFMON (" in err, err)
            rc, out, err = xdp(env, "status", "--pin", pin)
            env.check("status with nothing attached: exit 3", rc == 3, out + err)
        env.case("loader errors", loader_errors)

        # -- two pods on one node, one pin directory by mistake ------------
        def shared_pins():
            # Another network namespace with an interface of the same
            # ifindex as IF_SRV (every namespace numbers from 1): its link,
            # pinned in the same directory, must not be replaced or removed
            # from the server namespace.
            def ifindex(ns, ifc):
                return int(must(["ip", "-n", ns, "-o", "link", "show", "dev", ifc]).split(":")[0])
            must(["ip", "netns", "add", NS_OTHER])
            must(["ip", "-n", NS_OTHER, "link", "add", "oth0", "type", "veth", "peer", "name",
                  "oth1"])
            want = ifindex(NS_SRV, IF_SRV)
            other = [i for i in ("oth0", "oth1") if ifindex(NS_OTHER, i) == want]
            env.check("the other namespace has an interface with ifindex %d" % want, other,
                      must(["ip", "-n", NS_OTHER, "-o", "link"]))
            if not other:
                return
            must(["ip", "-n", NS_OTHER, "link", "set", other[0], "up"])
            rc, out, err = sh(in_ns(NS_OTHER, [qrux_bin(), "xdp", "attach", "--iface", other[0],
                                               "--quic-port", str(port), "--pin", pin]))
            env.check("attach in the other namespace: exit 0", rc == 0, out + err)
            rc, out, err = xdp(env, "attach", "--iface", IF_SRV, "--quic-port", str(port),
                               "--pin", pin)
            env.check("attach here over its pins: exit 1, says the link is another namespace's",
                      rc == 1 and "another network namespace" in err, out + err)
            rc, out, err = xdp(env, "detach", "--pin", pin)
            env.check("detach here: exit 1, refused likewise",
                      rc == 1 and "another network namespace" in err, out + err)
            link = must(["ip", "-n", NS_OTHER, "-d", "link", "show", other[0]])
            env.check("the other namespace keeps its program", "prog/xdp" in link, link)
            _, link, _ = sh(in_ns(NS_SRV, ["ip", "-d", "link", "show", IF_SRV]))
            env.check("nothing attached here", "prog/xdp" not in link, link)
            rc, out, err = sh(in_ns(NS_OTHER, [qrux_bin(), "xdp", "detach", "--pin", pin]))
            env.check("detach from the other namespace: exit 0, pins gone",
                      rc == 0 and not os.path.exists(pin), out + err)
        env.case("shared pin directory", shared_pins)

        # -- qrux first, the filter after: qrux picks it up ----------------
        q = Qrux(env, cfg, port)
        env.qruxes.append(q)
        if not q.wait_ready(20):
            raise RuntimeError("qrux not ready: %s" % q.log_tail(30))
        m0 = metrics(env)
        env.check("without the filter: qrux_xdp_attached 0 and every counter 0",
                  m0.get("attached") == 0 and len(m0) == 14 and
                  all(v == 0 for k, v in m0.items()), m0)
        r = gtls(env, port, "/bytes/1000")
        env.check("without the filter: GET /bytes/1000 -> 200, exact bytes",
                  r.status() == 200 and r.files.get("1000") == pattern(1000), r.summary())

        # With exactly the capabilities the docs name, as the init container has them.
        rc, out, err = xdp(env, "attach", "--iface", IF_SRV, "--quic-port", str(port), "--pin",
                           pin, "--rate", str(RATE), "--burst", str(BURST), caps=LOADER_CAPS)
        env.check("attach with only CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN: exit 0, auto mode "
                  "picks generic on a veth",
                  rc == 0 and "generic mode" in out and "veth" in out, out + err)
        _, link, _ = sh(in_ns(NS_SRV, ["ip", "-d", "link", "show", IF_SRV]))
        env.check("ip link shows one XDP program in generic mode",
                  "xdpgeneric" in link and link.count("prog/xdp") == 1, link)
        env.check("qrux sees the filter (qrux_xdp_attached 1)",
                  wait_until(lambda: metrics(env).get("attached") == 1, 10), metrics(env))
        rc, out, err = xdp(env, "status", "--pin", pin)
        env.check("status: attached, generic, a CID key generation shared by qrux",
                  rc == 0 and "mode generic" in out and "generation" in out and
                  "none" not in out.split("CID keys:")[1].splitlines()[0], out + err)

        # -- real clients through the filter ------------------------------
        def real_clients():
            before = metrics(env)
            r = gtls(env, port, ["/", "/bytes/%d" % BIG], timeout=120)
            env.check("gtlsclient: / -> 200, the page", r.status(0) == 200 and
                      r.files.get("index.html", b"").decode() == page, r.summary())
            got = r.files.get(str(BIG), b"")
            env.check("gtlsclient: 20 MiB download, exact bytes", r.status(4) == 200 and
                      len(got) == BIG and pattern_sha256(BIG) == __import__("hashlib").sha256(
                          got).hexdigest(), "%d bytes %s" % (len(got), r.summary(4)))
            after = metrics(env)
            env.check("the download's 1-RTT packets pass as short_header (MAC verified)",
                      delta(before, after, "short_header") > 100, after)
            env.eq("no real packet dropped as bad_cid", delta(before, after, "bad_cid"), 0)
            env.eq("no real packet passed unchecked (no_key)", delta(before, after, "no_key"), 0)

            rc, dom, err = run(in_ns(NS_CLI, [
                "/usr/bin/env", "DBUS_SESSION_BUS_ADDRESS=", need("chromium"), "--headless",
                "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage",
                "--user-data-dir=" + os.path.join(env.dir, "chromium"), "--enable-quic",
                "--origin-to-force-quic-on=localhost:%d" % port,
                "--host-resolver-rules=MAP localhost %s" % SRV4,
                "--ignore-certificate-errors-spki-list=" + cert.spki_sha256_b64,
                "--dump-dom", "https://localhost:%d/" % port]), timeout=90)
            dom = dom.decode(errors="replace")
            env.check("Chromium from the client namespace gets the page over h3",
                      "through the XDP filter" in dom, "rc=%s %s" % (rc, dom[:300]))
            env.check("qrux logged Chromium's request over h3",
                      wait_until(lambda: q.access(path="/", proto="h3", status=200), 5),
                      q.log_tail(5))

            tcp = run(in_ns(NS_CLI, [need("curl"), "-sk", "--http1.1", "-o", "-",
                                     "--resolve", "localhost:%d:%s" % (port, SRV4),
                                     "https://localhost:%d/bytes/100000" % port]), timeout=30)
            env.check("the HTTPS fallback (TCP, same port) with the program attached: exact bytes",
                      tcp[0] == 0 and tcp[1] == pattern(100000), "rc=%s" % tcp[0])
        env.case("real clients", real_clients)

        # -- junk dropped and counted --------------------------------------
        def junk():
            before = metrics(env)
            send_udp(CLI4, port, [initial(300), initial(1199)], count=25)
            send_udp(CLI4, port, [short_header(60), short_header(1200)], count=25)
            send_udp(CLI4, port, [initial(1200, dcid_len=4)], count=10)
            send_udp(CLI4, port, [initial(1200, dcid_len=21)], count=10)
            send_udp(CLI4, port, [b"\xc0\x00\x00"], count=10)
            ok = wait_until(lambda: delta(before, metrics(env), "too_short") >= 10, 5)
            after = metrics(env)
            env.eq("50 short Initials: initial_too_small +50",
                   delta(before, after, "initial_too_small"), 50)
            env.eq("50 forged short-header DCIDs: bad_cid +50", delta(before, after, "bad_cid"), 50)
            env.eq("10 Initials with a 4-byte DCID: dcid_too_short +10",
                   delta(before, after, "dcid_too_short"), 10)
            env.eq("10 Initials with a 21-byte DCID: cid_too_long +10",
                   delta(before, after, "cid_too_long"), 10)
            env.check("10 three-byte datagrams: too_short +10",
                      ok and delta(before, after, "too_short") == 10, after)
            r = gtls(env, port, "/bytes/5000")
            env.check("a real client after the junk: 200, exact bytes",
                      r.status() == 200 and r.files.get("5000") == pattern(5000), r.summary())
        env.case("junk", junk)

        # -- the deny list over the admin API ------------------------------
        def deny():
            st, body = admin(env, "/xdp/denylist", "PUT", '["%s/32"]' % DENIED4, token=None)
            env.eq("PUT /xdp/denylist without the token: 401", st, 401, body)
            st, body = admin(env, "/xdp/denylist", "PUT", '["10.214.0.0/33"]')
            env.check("a bad CIDR: 400 naming the element",
                      st == 400 and "[0]" in body, "%s %s" % (st, body))
            st, body = admin(env, "/xdp/denylist", "PUT", '["%s/32"]' % DENIED4, ctype="text/plain")
            env.eq("PUT /xdp/denylist as text/plain: 415", st, 415, body)
            st, body = admin(env, "/xdp/denylist", "PUT",
                             '["%s", "2001:db8:bad::/48"]' % DENIED4)
            env.check("PUT a v4 address and a v6 prefix: 200",
                      st == 200 and '"%s/32"' % DENIED4 in body and "2001:db8:bad::/48" in body,
                      "%s %s" % (st, body))
            st, body = admin(env, "/xdp/denylist")
            env.check("GET /xdp/denylist lists both, attached true",
                      st == 200 and '"%s/32"' % DENIED4 in body and '"attached": true' in body,
                      body)
            before = metrics(env)
            send_udp(DENIED4, port, [initial(1200)], count=20)
            send_udp(CLI4, port, [initial(1200)], count=3)  # not denied: passes
            wait_until(lambda: delta(before, metrics(env), "denied") >= 20, 5)
            after = metrics(env)
            env.eq("20 Initials from the denied address: denied +20",
                   delta(before, after, "denied"), 20)
            env.check("the neighbour's Initials still pass",
                      delta(before, after, "initial") >= 3, after)
            st, body = admin(env, "/xdp/denylist", "PUT", "[]")
            env.check("PUT [] empties it", st == 200 and '"denylist": []' in body, body)
        env.case("deny list", deny)

        # -- an Initial flood from many sources ----------------------------
        def flood():
            # The flood runs until the legit client is done (a stop file
            # ends it): FLOOD_SOURCES sources, one Initial each per round,
            # a round every 10 ms, far above RATE. It prints the rounds sent.
            before = metrics(env)
            stop = os.path.join(env.dir, "flood-stop")
            code = ("import socket,sys,os,struct,time\n"
                    "socks=[]\n"
                    "for i in range(int(sys.argv[2])):\n"
                    "    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                    "    s.bind(('%s%%d'%%(10+i),0)); socks.append(s)\n"
                    "rounds=0\n"
                    "while not os.path.exists(sys.argv[3]):\n"
                    "    for s in socks:\n"
                    "        h=bytes([0xc0])+struct.pack('>I',1)+bytes([8])+os.urandom(8)"
                    "+bytes([8])+os.urandom(8)+bytes([0])\n"
                    "        s.sendto(h+bytes(1200-len(h)),('%s',int(sys.argv[1])))\n"
                    "    rounds+=1; time.sleep(0.01)\n"
                    "print(rounds)\n" % (FLOOD_NET, SRV4))
            t0 = time.monotonic()
            proc = spawn(in_ns(NS_CLI, ["/usr/bin/python3", "-c", code, str(port),
                                        str(FLOOD_SOURCES), stop]), stdout=subprocess.PIPE)
            try:
                flooding = wait_until(
                    lambda: delta(before, metrics(env), "rate_limited") >= FLOOD_SOURCES, 30)
                env.check("the flood is on before the legit client starts (rate_limited rising)",
                          flooding, metrics(env))
                legit = gtls(env, port, "/bytes/2000", timeout=60)
                mid = metrics(env)
                still = proc.poll() is None
            finally:
                open(stop, "w").close()
                out, _ = proc.communicate(timeout=60)
            elapsed = time.monotonic() - t0
            time.sleep(0.5)
            after = metrics(env)
            env.check("the flood was still running when the legit client finished", still,
                      "flood exited early: rc=%s" % proc.returncode)
            env.check("a legit client connects during the flood: 200, exact bytes",
                      legit.status() == 200 and legit.files.get("2000") == pattern(2000),
                      legit.summary())
            env.check("drops went on while the legit client ran",
                      delta(before, mid, "rate_limited") > FLOOD_SOURCES, mid)
            sent = FLOOD_SOURCES * int(out.decode().strip() or 0)
            # Each source may pass its burst plus what refills while the
            # flood runs; everything beyond must be dropped.
            allowed = FLOOD_SOURCES * (BURST + RATE * elapsed + 1)
            dropped = delta(before, after, "rate_limited")
            env.check("flood of %d Initials from %d sources: at least %d rate_limited"
                      % (sent, FLOOD_SOURCES, max(0, sent - allowed)),
                      sent > 0 and dropped >= sent - allowed and dropped > 0,
                      "dropped %d in %.1f s: %s" % (dropped, elapsed, after))
        env.case("initial flood", flood)

        # -- re-attach, detach ---------------------------------------------
        def reattach():
            before = metrics(env)
            rc, out, err = xdp(env, "attach", "--iface", IF_SRV, "--quic-port", str(port),
                               "--pin", pin, "--rate", str(RATE), "--burst", str(BURST))
            env.check("attach again: exit 0, the program replaced in place",
                      rc == 0 and "replaced the program" in out, out + err)
            _, link, _ = sh(in_ns(NS_SRV, ["ip", "-d", "link", "show", IF_SRV]))
            env.check("still exactly one XDP program", link.count("prog/xdp") == 1, link)
            r = gtls(env, port, "/bytes/3000")
            env.check("after re-attach: 200, exact bytes",
                      r.status() == 200 and r.files.get("3000") == pattern(3000), r.summary())
            after = metrics(env)
            env.check("counters kept across re-attach (maps reused)",
                      after.get("attached") == 1 and
                      after.get("short_header", 0) >= before.get("short_header", 0) > 0, after)

            # A proxy running as another user (the image's 65532) opens the
            # pins by path: --pin-owner hands them over.
            os.chmod(env.dir, 0o711)
            nobody = in_ns(NS_SRV, [need("setpriv"), "--reuid=65532", "--regid=65532",
                                    "--clear-groups", qrux_bin(), "xdp", "status", "--pin", pin])
            rc, out, err = sh(nobody)
            env.check("before --pin-owner, uid 65532 cannot read the maps",
                      "maps: not readable" in out or rc != 0, out + err)
            owner = ("--pin-owner", "65532:65532")
            rc, out, err = xdp(env, "attach", "--iface", IF_SRV, "--quic-port", str(port),
                               "--pin", pin, "--rate", str(RATE), "--burst", str(BURST), *owner,
                               caps=LOADER_CAPS + ",+chown")
            env.check("attach --pin-owner 65532:65532 (+CAP_CHOWN only): exit 0", rc == 0,
                      out + err)
            rc, out, err = sh(nobody)
            env.check("then uid 65532 reads status and counters",
                      rc == 0 and "mode generic" in out and "short_header" in out, out + err)
            # The init container restarts: the pins are 65532's now, and root
            # without CAP_DAC_OVERRIDE can only get at them by taking them back.
            rc, out, err = xdp(env, "attach", "--iface", IF_SRV, "--quic-port", str(port),
                               "--pin", pin, "--rate", str(RATE), "--burst", str(BURST), *owner,
                               caps=LOADER_CAPS + ",+chown")
            env.check("attach --pin-owner again with the same capabilities: exit 0, replaced",
                      rc == 0 and "replaced the program" in out, out + err)
            rc, out, err = sh(nobody)
            env.check("uid 65532 still reads the pins", rc == 0 and "mode generic" in out,
                      out + err)
            env.check("qrux still sees the filter", wait_until(
                lambda: metrics(env).get("attached") == 1, 10), metrics(env))

            rc, out, err = xdp(env, "detach", "--pin", pin, caps=LOADER_CAPS + ",+chown")
            env.check("detach: exit 0", rc == 0 and "detached" in out, out + err)
            _, link, _ = sh(in_ns(NS_SRV, ["ip", "-d", "link", "show", IF_SRV]))
            env.check("no XDP program on the interface", "prog/xdp" not in link, link)
            env.check("pins removed", not os.path.exists(pin), os.listdir(os.path.dirname(pin)))
            env.check("qrux notices: qrux_xdp_attached 0, counters 0",
                      wait_until(lambda: (lambda m: m.get("attached") == 0 and
                                          all(v == 0 for v in m.values()))(metrics(env)), 10),
                      metrics(env))
            r = gtls(env, port, "/bytes/4000")
            env.check("after detach: 200, exact bytes",
                      r.status() == 200 and r.files.get("4000") == pattern(4000), r.summary())
            st, body = admin(env, "/xdp/denylist", "PUT", "[]")
            env.eq("PUT /xdp/denylist without the filter: 409", st, 409, body)
            rc, out, err = xdp(env, "detach", "--pin", pin)
            env.check("detach again: exit 0, nothing pinned", rc == 0 and "nothing" in out, out)
        env.case("re-attach and detach", reattach)

        q.stop()
        cleanup()


if __name__ == "__main__":
    main()
