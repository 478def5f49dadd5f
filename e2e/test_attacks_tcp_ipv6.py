#!/usr/bin/env python3
"""test_attacks_tcp_ipv6.py - max_tcp_connections_per_ip counts an IPv6
client with its /64, an IPv4 client alone.

A host (or one customer's network) holds a whole /64: were each IPv6
address counted alone, one client could open a cap per address. The test
runs in a network namespace of its own (root: `ip netns add`), where the
loopback device carries two addresses of one /64 and one of another /64;
the whole test process enters it, so qrux, the backend and the clients
all live there and the machine's network is untouched.

  same /64          max_tcp_connections_per_ip 4: four idle connections
                    from fd00:71:0:1::a held; four more from fd00:71:0:1::b
                    (same /64) closed at once and counted
  other /64         fd00:71:0:2::a still served (GET 200, exact body)
  IPv4 on [::]      four from 127.0.0.5 (IPv4-mapped on the "[::]"
                    listener) do not hold back 127.0.0.6: IPv4 addresses
                    count alone
"""

import atexit
import ctypes
import os
import select
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attacklib import Proxy, defence, h1_status, read_all, serves_all  # noqa: E402
from harness import Env  # noqa: E402

NS = "qxv6-%d" % os.getpid()
NET_A, NET_B = "fd00:71:0:1::", "fd00:71:0:2::"
CAP = 4
CLONE_NEWNET = 0x40000000


def must(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    if r.returncode != 0:
        raise RuntimeError("%s: rc=%d %s" % (" ".join(cmd), r.returncode, r.stderr.decode()))


def cleanup():
    subprocess.run(["ip", "netns", "del", NS], stderr=subprocess.DEVNULL)


def enter_netns():
    """Creates the namespace and moves this process (its only thread so
    far) into it: what it starts from now on is there too."""
    cleanup()
    atexit.register(cleanup)
    must(["ip", "netns", "add", NS])
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open("/run/netns/%s" % NS, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)
    must(["ip", "link", "set", "lo", "up"])
    for a in (NET_A + "a", NET_A + "b", NET_B + "a"):
        must(["ip", "-6", "addr", "add", a + "/64", "dev", "lo", "nodad"])


def connect_from(port, src, timeout=5):
    fam = socket.AF_INET6 if ":" in src else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect(("::1" if fam == socket.AF_INET6 else "127.0.0.1", port))
    return s


def closed_now(socks, wait=0.5):
    """The sockets of |socks| the server has closed (EOF or reset) within
    |wait| seconds: before any handshake timeout."""
    r, _, _ = select.select(socks, [], [], wait)
    out = set()
    for s in r:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                out.add(s)
        except BlockingIOError:
            pass
        except OSError:
            out.add(s)
    return out


def get_from(port, src):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    w = ctx.wrap_socket(connect_from(port, src), server_hostname="localhost")
    w.sendall(b"GET /bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n")
    data, _ = read_all(w, 5, until=lambda d: d.endswith(bytes(range(10))))
    w.close()
    return data


def same_prefix(env, p):
    c0 = defence(p, "tcp_connections_per_ip")
    first = [connect_from(p.tport, NET_A + "a") for _ in range(CAP)]
    time.sleep(0.3)
    env.eq("fd00:71:0:1::a: the first %d connections held" % CAP,
           CAP - len(closed_now(first)), CAP)
    second = [connect_from(p.tport, NET_A + "b") for _ in range(CAP)]
    time.sleep(0.3)
    env.eq("fd00:71:0:1::b (same /64): its %d connections closed at once" % CAP,
           len(closed_now(second)), CAP)
    env.check("same /64: counted (defence tcp_connections_per_ip)",
              defence(p, "tcp_connections_per_ip") >= c0 + CAP)
    data = get_from(p.tport, NET_B + "a")
    env.check("fd00:71:0:2::a (another /64): served, 200 and the exact body",
              h1_status(data) == 200 and data.endswith(bytes(range(10))), data[:200])
    for s in first + second:
        s.close()


def ipv4_alone(env, p):
    held = [connect_from(p.tport, "127.0.0.5") for _ in range(CAP)]
    time.sleep(0.3)
    env.eq("127.0.0.5: %d connections held" % CAP, CAP - len(closed_now(held)), CAP)
    data = get_from(p.tport, "127.0.0.6")
    env.check("127.0.0.6 (IPv4-mapped on [::], counted alone): served, 200",
              h1_status(data) == 200 and data.endswith(bytes(range(10))), data[:200])
    for s in held:
        s.close()


def main():
    enter_netns()
    with Env("attacks_tcp_ipv6") as env:
        be = env.backend()
        p = Proxy(env, [("*", be.addr)], workers=1,
                  limits={"max_tcp_connections_per_ip": CAP, "header_read_timeout_secs": 10})
        env.case("IPv6: one /64 shares the per-address cap", same_prefix, env, p)
        time.sleep(0.5)  # the closed connections are uncounted
        env.case("IPv4: each address counts alone", ipv4_alone, env, p)
        time.sleep(0.5)
        env.check("qrux alive", p.q.alive(), p.q.log_tail())
        serves_all(env, p, "after the per-address caps", path="/bytes/3000")


if __name__ == "__main__":
    main()
