#!/usr/bin/env python3
"""bench/run.py - qrux next to Caddy (and nginx for HTTPS), in front of nginx.

In one run, on loopback only:
  * nginx (nginx-light) is the backend: /small.bin (100 B), /1m.bin (1 MiB),
    and /upload (reads the whole request body, then answers "ok").
  * qrux (workers: 1 and workers: 2) and Caddy 2 (`reverse_proxy`, HTTP/3)
    are put in front of it, one at a time, and driven by the same h3load
    loads. For each the proxy's own CPU time (utime+stime from
    /proc/PID/stat, all threads) is read before and after each load, so the
    load generator and nginx sharing the cores do not count.
  * gtlsserver (ngtcp2's example server, package ngtcp2-server) serving the
    same files itself, no backend: a reference for what the QUIC stack alone
    costs per MiB and per request (small requests, downloads, new
    connections; it has no /upload).
  * The HTTPS fallback: qrux's https_listen, nginx as a TLS reverse proxy
    and Caddy (h2), driven by h2load.
  * 1 vs 2 qrux workers with the generator and nginx pinned (taskset).

Prints a table with the ratios qrux/Caddy and writes every number as JSON
(--out). `make bench` runs it; see bench/README.md for the set-up and
results. --profile runs qrux (1 worker) under callgrind for the small-request
load and prints the top functions.

Every process it starts gets its own process group and is killed at the
end (also on Ctrl-C or an exception). Python 3 standard library only.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TCK = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20

PROCS = []  # every Popen we started (each leads its own process group)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def need(binary):
    p = shutil.which(binary)
    if not p:
        for d in ("/usr/sbin", "/usr/bin", "/sbin"):
            if os.access(os.path.join(d, binary), os.X_OK):
                p = os.path.join(d, binary)
                break
    if not p:
        sys.exit("bench: %r not found: run scripts/deps.sh" % binary)
    return p


def spawn(cmd, **kw):
    p = subprocess.Popen(cmd, start_new_session=True, **kw)
    PROCS.append(p)
    return p


def kill(p, grace=3.0):
    """Ends one process we started, and its group (ours: start_new_session)."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(5)
    if p in PROCS:
        PROCS.remove(p)


def kill_all():
    for p in list(PROCS):
        kill(p)


def on_signal(signum, frame):
    kill_all()
    sys.exit(128 + signum)


def free_port():
    """A port free for both TCP and UDP on 127.0.0.1 (HTTP/3 and HTTPS share it)."""
    for _ in range(100):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            u.close()
            t.close()
    sys.exit("bench: no free port")


def wait_until(pred, timeout, interval=0.05):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def tcp_accepting(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# ---- /proc ------------------------------------------------------------------


def cpu_split_us(pid):
    """(utime, stime) of the whole process (every thread, live or gone), µs."""
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) * 1e6 / TCK, int(rest[12]) * 1e6 / TCK


def cpu_us(pid):
    return sum(cpu_split_us(pid))


def threads_cpu_us(pid):
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                rest = f.read().rsplit(")", 1)[1].split()
            out[int(tid)] = (int(rest[11]) + int(rest[12])) * 1e6 / TCK
        except OSError:
            pass
    return out


def status_kib(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


# ---- the pieces -------------------------------------------------------------


class Env:
    def __init__(self, keep):
        self.dir = tempfile.mkdtemp(prefix="qrux-bench-")
        self.keep = keep
        self.www = os.path.join(self.dir, "www")
        os.makedirs(self.www)
        with open(os.path.join(self.www, "small.bin"), "wb") as f:
            f.write(bytes((i * 7 + 3) % 251 for i in range(100)))
        with open(os.path.join(self.www, "1m.bin"), "wb") as f:
            f.write(bytes(i % 251 for i in range(MIB)))
        self.cert = os.path.join(self.dir, "cert.pem")
        self.key = os.path.join(self.dir, "key.pem")
        # The same self-signed EC P-256 certificate for every proxy, so the
        # handshakes cost the same signature.
        need("openssl")
        r = subprocess.run([os.path.join(SRC, "scripts", "make-cert.sh"), self.cert, self.key],
                           capture_output=True, timeout=30)
        if r.returncode != 0:
            sys.exit("bench: openssl: %s" % r.stderr.decode(errors="replace"))

    def close(self):
        kill_all()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def taskset(cpus):
    return [need("taskset"), "-c", cpus] if cpus else []


class Nginx:
    """nginx-light: the backend (http), or the TLS reverse proxy (https)."""

    def __init__(self, env, name, body, workers=1, cpus=None):
        self.port = free_port()
        pre = tempfile.mkdtemp(prefix=name + "-", dir=env.dir)
        os.makedirs(os.path.join(pre, "logs"))
        os.makedirs(os.path.join(pre, "tmp"))
        conf = os.path.join(pre, "nginx.conf")
        # One worker without a master is one process: its CPU is /proc/PID.
        master = "on" if workers > 1 else "off"
        # Workers forked by a root master would run as nobody and could not
        # read the temp dir (0700).
        user = "user root root;" if master == "on" and os.geteuid() == 0 else ""
        with open(conf, "w") as f:
            f.write("""daemon off;
%(user)s
master_process %(master)s;
worker_processes %(workers)d;
pid %(pre)s/nginx.pid;
error_log %(pre)s/logs/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path %(pre)s/tmp/body;
    proxy_temp_path %(pre)s/tmp/proxy;
    fastcgi_temp_path %(pre)s/tmp/fastcgi;
    uwsgi_temp_path %(pre)s/tmp/uwsgi;
    scgi_temp_path %(pre)s/tmp/scgi;
    sendfile on;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
%(body)s
}
""" % {"pre": pre, "master": master, "user": user, "workers": workers, "body": body % {"port": self.port}})
        self.log = open(os.path.join(pre, "logs", "stderr.log"), "wb")
        self.proc = spawn(taskset(cpus) + [need("nginx"), "-p", pre, "-c", conf],
                          stdout=self.log, stderr=subprocess.STDOUT)
        if not wait_until(lambda: self.proc.poll() is not None or tcp_accepting(self.port), 10) \
                or self.proc.poll() is not None:
            with open(os.path.join(pre, "logs", "error.log")) as f:
                sys.exit("bench: nginx %s did not start: %s" % (name, f.read()))
        self.pid = self.proc.pid


def backend(env, cpus=None):
    # /upload goes through nginx's proxy module back to itself so that the
    # whole body is read before the answer (a bare `return` would answer
    # first and drop the body, and a proxy could then stop forwarding it).
    body = """
    upstream self { server 127.0.0.1:%%(port)d; keepalive 32; }
    server {
        listen 127.0.0.1:%%(port)d backlog=4096;
        root %s;
        location = /ok { return 200 "ok\\n"; }
        location = /upload {
            client_max_body_size 64m;
            client_body_buffer_size 2m;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://self/ok;
        }
    }""" % env.www
    return Nginx(env, "backend", body, workers=2, cpus=cpus)


def nginx_tls_proxy(env, backend_port):
    body = """
    upstream app { server 127.0.0.1:%d; keepalive 32; }
    server {
        listen 127.0.0.1:%%(port)d ssl http2 backlog=4096;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_protocols TLSv1.3;
        location / {
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto https;
            proxy_pass http://app;
        }
    }""" % (backend_port, env.cert, env.key)
    return Nginx(env, "nginx-tls", body, workers=1)


class Proxy:
    """A proxy under test: pid, the URL base, its log, and a check for
    its health (alive, log lines that say error)."""

    def __init__(self, env, kind, name, backend_port, workers=1, cpus=None, log_level="warn",
                 https=False, valgrind=None, pool=None):
        self.env, self.kind, self.name = env, kind, name
        self.port = free_port()
        self.base = "https://127.0.0.1:%d" % self.port
        self.logpath = os.path.join(env.dir, "%s.log" % name)
        self.logf = open(self.logpath, "wb")
        if kind == "qrux":
            cfg = os.path.join(env.dir, "%s.yaml" % name)
            with open(cfg, "w") as f:
                f.write("""server:
  listen: "127.0.0.1:%(port)d"
%(https)s  cert: "%(cert)s"
  key: "%(key)s"
  workers: %(workers)d
  drain_delay_secs: 0
  limits:
    # The defaults (10000 per process, 200 per client address) would refuse
    # the idle-connection load: every connection comes from 127.0.0.1.
    max_quic_connections: 30000
    max_quic_connections_per_ip: 30000
    graceful_shutdown_secs: 1
%(pool)sroutes:
  - match: "*"
    upstream: "127.0.0.1:%(bport)d"
""" % {"port": self.port, "cert": env.cert, "key": env.key, "workers": workers,
                    "bport": backend_port,
                    "pool": "    max_idle_connections_per_upstream: %d\n" % pool if pool else "",
                    "https": '  https_listen: "127.0.0.1:%d"\n' % self.port if https else ""})
            # A name of our own: other sessions on this machine may `pkill qrux`.
            exe = os.path.join(env.dir, "qx-bench")
            if not os.path.exists(exe):
                os.symlink(os.path.abspath(ARGS.qrux), exe)
            cmd = [exe, "--config", cfg]
            if valgrind:
                cmd = valgrind + cmd
            e = dict(os.environ, QRUX_LOG=log_level)
        elif kind == "gtlsserver":
            # ngtcp2's own example server: serves env.www itself (no backend,
            # backend_port unused). -q: no per-frame dumps, only warnings.
            cmd = [need("gtlsserver"), "-q", "-d", env.www, "127.0.0.1", str(self.port),
                   env.key, env.cert]
            e = dict(os.environ)
        else:
            home = os.path.join(env.dir, "caddy-home")
            os.makedirs(home, exist_ok=True)
            cfg = os.path.join(env.dir, "Caddyfile")
            with open(cfg, "w") as f:
                f.write("""{
	admin off
	auto_https off
	servers {
		protocols h1 h2 h3
	}
}
https://:%d {
	bind 127.0.0.1
	tls %s %s
	reverse_proxy 127.0.0.1:%d
}
""" % (self.port, env.cert, env.key, backend_port))
            cmd = [need("caddy"), "run", "--config", cfg, "--adapter", "caddyfile"]
            e = dict(os.environ, HOME=home, XDG_DATA_HOME=home, XDG_CONFIG_HOME=home)
        self.proc = spawn(taskset(cpus) + cmd, stdout=self.logf, stderr=subprocess.STDOUT, env=e)
        self.pid = self.proc.pid
        # Ready when an HTTP/3 request goes through (start-up + first upstream).
        ok = wait_until(lambda: self.proc.poll() is not None or
                        h3load(["-n", "1", "--timeout", "3"], self.base + "/small.bin",
                               quiet=True).get("requests") == 1, 60 if valgrind else 15, 0.2)
        if not ok or self.proc.poll() is not None:
            sys.exit("bench: %s did not come up:\n%s" % (name, self.log_tail()))

    def log_tail(self, n=20):
        with open(self.logpath, "rb") as f:
            return "\n".join(f.read().decode(errors="replace").splitlines()[-n:])

    def alive(self):
        return self.proc.poll() is None

    def problems(self):
        """Log lines that report trouble (qrux: error/warn level; Caddy: error)."""
        with open(self.logpath, "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
        if self.kind == "qrux":
            return [l for l in lines if re.search(r"\b(error|warn|ERROR|WARN)\b", l)]
        if self.kind == "gtlsserver":
            # It prints every connection's closing read (ERR_DRAINING) even
            # with -q; those are not trouble.
            return [l for l in lines if "ERR_DRAINING" not in l and re.search(r"(?i)error|fail", l)]
        return [l for l in lines if '"level":"error"' in l]

    def stop(self):
        kill(self.proc)


# ---- load ----------------------------------------------------------------------


def h3load(args, url, quiet=False, cpus=None, timeout=300):
    cmd = taskset(cpus) + [ARGS.h3load, "--json"] + args + [url]
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": "h3load timed out"}
    try:
        res = json.loads(r.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        res = {"error": r.stderr.decode(errors="replace")[-500:]}
    if r.stderr and not quiet:
        res["stderr"] = r.stderr.decode(errors="replace")[-500:]
    return res


def measured(proxy, fn):
    """Runs fn() and returns (its result, the proxy's CPU µs meanwhile); the
    share of it spent in the kernel goes into the result as sys_share."""
    u0, s0 = cpu_split_us(proxy.pid)
    res = fn()
    u1, s1 = cpu_split_us(proxy.pid)
    cpu = (u1 - u0) + (s1 - s0)
    res["sys_share"] = (s1 - s0) / cpu if cpu > 0 else None
    return res, cpu


def check(proxy, what, res, out):
    bad = []
    if res.get("error"):
        bad.append("h3load: " + res["error"].strip())
    if res.get("errors"):
        bad.append("%d failed requests" % res["errors"])
    if res.get("unstarted"):
        bad.append("%d requests not started" % res["unstarted"])
    if res.get("conns_failed"):
        bad.append("%d connections failed" % res["conns_failed"])
    if res.get("stderr"):
        bad.append("h3load said: " + " | ".join(res["stderr"].strip().splitlines()[-3:]))
    for k in ("status_4xx", "status_5xx"):
        if res.get(k):
            bad.append("%d %s" % (res[k], k))
    if not proxy.alive():
        bad.append("%s EXITED (code %s): %s" % (proxy.name, proxy.proc.returncode,
                                                proxy.log_tail(5)))
    if bad:
        msg = "%s / %s: %s" % (proxy.name, what, "; ".join(bad))
        out.setdefault("failures", []).append(msg)
        log("  !! " + msg)


def run_h3_suite(env, proxy, out):
    S = ARGS.secs
    r = {}
    small = proxy.base + "/small.bin"
    h3load(["-n", "2000", "-c", "4", "-m", "8"], small)  # warm-up: pools, caches

    log("  small requests: %d s, 8 connections x 32 streams" % S)
    res, cpu = measured(proxy, lambda: h3load(["-D", str(S), "-c", "8", "-m", "32"], small))
    check(proxy, "small", res, out)
    r["small"] = dict(res, cpu_us=cpu, cpu_us_per_req=cpu / max(res.get("requests", 0), 1))
    r["vmhwm_small_kib"] = status_kib(proxy.pid, "VmHWM")

    log("  1 MiB downloads: %d s, 4 connections x 2 streams" % S)
    res, cpu = measured(proxy, lambda: h3load(["-D", str(S), "-c", "4", "-m", "2"],
                                              proxy.base + "/1m.bin"))
    check(proxy, "download", res, out)
    r["down"] = dict(res, cpu_us=cpu, cpu_us_per_mib=cpu / max(res.get("body_rx", 0) / MIB, 1e-9))

    if proxy.kind == "gtlsserver":
        r["up"] = {"skipped": "gtlsserver serves files only (a POST is answered 404)"}
    else:
        log("  1 MiB uploads: %d s, 4 connections x 2 streams" % S)
        res, cpu = measured(proxy, lambda: h3load(["-D", str(S), "-c", "4", "-m", "2", "-d",
                                                   str(MIB)], proxy.base + "/upload"))
        check(proxy, "upload", res, out)
        r["up"] = dict(res, cpu_us=cpu,
                       cpu_us_per_mib=cpu / max(res.get("body_tx", 0) / MIB, 1e-9))

    log("  new connections: %d s, 32 at a time, 1 request each" % S)
    res, cpu = measured(proxy, lambda: h3load(["-D", str(S), "-c", "32", "-m", "1", "-t", "2",
                                               "--conn-reqs", "1"], small))
    check(proxy, "new connections", res, out)
    r["conn"] = dict(res, cpu_us=cpu, cpu_us_per_conn=cpu / max(res.get("handshakes", 0), 1))

    log("  latency at %d requests/s: %d s, 16 connections x 4 streams" % (ARGS.rate, S))
    res, cpu = measured(proxy, lambda: h3load(["-D", str(S), "-c", "16", "-m", "4", "-r",
                                               str(ARGS.rate)], small))
    check(proxy, "fixed rate", res, out)
    r["rate"] = dict(res, cpu_us=cpu, cpu_us_per_req=cpu / max(res.get("requests", 0), 1))
    r["vmhwm_end_kib"] = status_kib(proxy.pid, "VmHWM")
    r["problems"] = proxy.problems()[:20]
    return r


def run_idle(env, make_proxy, out):
    """RSS of N idle connections, on a fresh proxy: VmRSS with the
    connections held open minus VmRSS after one request."""
    n = ARGS.idle
    proxy = make_proxy()
    h3load(["-n", "20", "-c", "1", "-m", "4"], proxy.base + "/small.bin")
    time.sleep(0.5)
    base = status_kib(proxy.pid, "VmRSS")
    log("  %d idle connections (1 request each, then held open)" % n)
    hold = 6
    cmd = [ARGS.h3load, "--json", "-c", str(n), "-n", str(n), "-m", "1", "--conn-reqs", "1",
           "--hold", str(hold), "-t", "2", "--max-handshakes", "32", "--timeout", "150",
           proxy.base + "/small.bin"]
    c0 = cpu_us(proxy.pid)
    t0 = time.time()
    p = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    held = None
    said = []  # h3load's warnings before the hold starts
    line = p.stderr.readline()  # "h3load: holding N connections idle ..."
    while line:
        m = re.search(rb"holding (\d+) connections", line)
        if m:
            held = int(m.group(1))
            break
        said.append(line)
        line = p.stderr.readline()
    ramp = time.time() - t0
    rss = None
    if held is not None:
        time.sleep(2.5)
        rss = status_kib(proxy.pid, "VmRSS")
    try:
        stdout, rest = p.communicate(timeout=200)
    except subprocess.TimeoutExpired:
        kill(p)
        stdout, rest = b"", b""
    if p in PROCS:
        PROCS.remove(p)
    cpu = cpu_us(proxy.pid) - c0
    try:
        res = json.loads(stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        res = {"error": "no result"}
    rest = b"".join(said) + rest
    if rest.strip():
        res["stderr"] = rest.decode(errors="replace")[-500:]
    check(proxy, "idle connections", res, out)
    r = {"asked": n, "held": held, "ramp_s": ramp, "rss_base_kib": base, "rss_held_kib": rss,
         "cpu_us": cpu, "handshakes": res.get("handshakes"),
         "kib_per_conn": (rss - base) / held if held and rss else None,
         "vmhwm_kib": status_kib(proxy.pid, "VmHWM") if proxy.alive() else None}
    if not proxy.alive():
        r["exited"] = proxy.proc.returncode
    proxy.stop()
    return r


def h2load(args, url, cpus=None):
    cmd = taskset(cpus) + [need("h2load")] + args + [url]
    r = subprocess.run(cmd, capture_output=True, timeout=300)
    text = r.stdout.decode(errors="replace")
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored", text)
    rps = re.search(r"finished in ([\d.]+)(\w+), ([\d.]+) req/s", text)
    res = {"rc": r.returncode}
    if m:
        res.update(total=int(m.group(1)), done=int(m.group(3)), succeeded=int(m.group(4)),
                   failed=int(m.group(5)), errored=int(m.group(6)))
    if rps:
        res["rps"] = float(rps.group(3))
    st = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if st:
        res["status_2xx"] = int(st.group(1))
    lat = re.search(r"time for request:\s+([\d.]+)(\w+)\s+([\d.]+)(\w+)\s+([\d.]+)(\w+)", text)
    if lat:
        res["req_time_mean"] = lat.group(5) + lat.group(6)
    if not m:
        res["output"] = (text + r.stderr.decode(errors="replace"))[-800:]
    return res


def run_https(env, pid, base, name, out):
    """h2load against an HTTPS (h2) front: CPU per small request."""
    n = ARGS.h2_requests
    h2load(["-n", "2000", "-c", "4", "-m", "16"], base + "/small.bin")  # warm-up
    c0 = cpu_us(pid)
    res = h2load(["-n", str(n), "-c", "8", "-m", "32"], base + "/small.bin")
    cpu = cpu_us(pid) - c0
    res["cpu_us"] = cpu
    res["cpu_us_per_req"] = cpu / max(res.get("succeeded", 0), 1)
    if res.get("succeeded") != n:
        msg = "%s / HTTPS h2load: %s" % (name, {k: v for k, v in res.items() if k != "cpu_us"})
        out.setdefault("failures", []).append(msg)
        log("  !! " + msg)
    return res


# ---- scaling: 1 vs 2 workers, generator pinned --------------------------------


def run_scaling(env, out):
    """The generator (h3load, one thread) and nginx on CPU 0; qrux workers: 1
    on CPU 1, then workers: 2 on CPUs 0-1. Reports requests/s and how the
    proxy CPU splits over its threads."""
    if os.cpu_count() < 2:
        return {"skipped": "fewer than 2 CPUs"}
    res = {}
    be = backend(env, cpus="0")
    for workers, cpus in ((1, "1"), (2, "0,1")):
        name = "qrux-w%d-pinned" % workers
        log("scaling: %s (qrux on CPU %s, h3load and nginx on CPU 0)" % (name, cpus))
        px = Proxy(env, "qrux", name, be.port, workers=workers, cpus=cpus)
        small = px.base + "/small.bin"
        h3load(["-n", "2000", "-c", "4", "-m", "8"], small, cpus="0")
        t0 = threads_cpu_us(px.pid)
        r, cpu = measured(px, lambda: h3load(["-D", str(ARGS.secs), "-c", "16", "-m", "32"],
                                             small, cpus="0"))
        t1 = threads_cpu_us(px.pid)
        check(px, "scaling", r, out)
        per_thread = sorted((t1.get(t, 0) - t0.get(t, 0) for t in t1), reverse=True)
        res[name] = {"rps": r.get("rps"), "requests": r.get("requests"), "cpu_us": cpu,
                     "cpu_us_per_req": cpu / max(r.get("requests", 0), 1),
                     "cores_used": cpu / 1e6 / max(r.get("seconds", 1), 1e-9),
                     "thread_cpu_us": per_thread, "lat_us": r.get("lat_us")}
        px.stop()
    kill(be.proc)
    w1, w2 = res["qrux-w1-pinned"]["rps"], res["qrux-w2-pinned"]["rps"]
    res["rps_ratio_w2_w1"] = w2 / w1 if w1 and w2 else None
    return res


# ---- profile ------------------------------------------------------------------


def run_profile(env, out):
    vg = need("valgrind")
    be = backend(env)
    cg = os.path.join(env.dir, "callgrind.out")
    px = Proxy(env, "qrux", "qrux-callgrind", be.port, workers=1, pool=ARGS.profile_pool,
               valgrind=[vg, "--tool=callgrind", "--callgrind-out-file=" + cg,
                         "--instr-atstart=no"])
    small = px.base + "/small.bin"
    h3load(["-n", "500", "-c", "4", "-m", "16"], small, timeout=120)
    # Only the measured load: instrumentation goes on now (start-up and the
    # warm-up are not counted); the 8 handshakes of the load are.
    subprocess.run([need("callgrind_control"), "-i", "on", str(px.pid)], capture_output=True)
    res = h3load(["-n", str(ARGS.profile_requests), "-c", "8", "-m", "32", "--timeout", "300"],
                 small, timeout=400)
    subprocess.run([need("callgrind_control"), "-i", "off", str(px.pid)], capture_output=True)
    subprocess.run([need("callgrind_control"), "-d", str(px.pid)], capture_output=True)
    px.stop()
    kill(be.proc)
    files = sorted(f for f in os.listdir(env.dir) if f.startswith("callgrind.out"))
    if not files:
        return {"error": "no callgrind output"}
    path = os.path.join(env.dir, files[-1])
    keep = os.path.join(ARGS.outdir, "callgrind.out.qrux")
    shutil.copy(path, keep)
    ann = subprocess.run([need("callgrind_annotate"), "--inclusive=no", path],
                         capture_output=True, timeout=120).stdout.decode(errors="replace")
    inc = subprocess.run([need("callgrind_annotate"), "--inclusive=yes", path],
                         capture_output=True, timeout=120).stdout.decode(errors="replace")
    with open(os.path.join(ARGS.outdir, "callgrind-self.txt"), "w") as f:
        f.write(ann)
    with open(os.path.join(ARGS.outdir, "callgrind-inclusive.txt"), "w") as f:
        f.write(inc)
    r = {"requests": res.get("requests"), "errors": res.get("errors"), "file": keep,
         "self_top": ann.splitlines()[:60], "inclusive_top": inc.splitlines()[:70]}
    r["perf"] = run_perf(env)
    return r


def run_perf(env):
    """Callgrind sees no kernel time, which is half of qrux's CPU here:
    sample the whole process with perf (cpu-clock: no hardware counters in
    this VM) under the same small-request load, without valgrind."""
    perf = shutil.which("perf")
    if not perf:
        return {"skipped": "perf not installed (linux-perf)"}
    be = backend(env)
    px = Proxy(env, "qrux", "qrux-perf", be.port, workers=1, pool=ARGS.profile_pool)
    small = px.base + "/small.bin"
    h3load(["-n", "3000", "-c", "8", "-m", "32"], small)
    data = os.path.join(env.dir, "perf.data")
    load = spawn([ARGS.h3load, "--json", "-D", "6", "-c", "8", "-m", "32", small],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    r = subprocess.run([perf, "record", "-e", "cpu-clock", "-F", "2000", "-g", "-p",
                        str(px.pid), "-o", data, "--", "sleep", "4"], capture_output=True,
                       timeout=60)
    load.wait(30)
    PROCS.remove(load)
    px.stop()
    kill(be.proc)
    if r.returncode != 0 or not os.path.exists(data):
        return {"error": r.stderr.decode(errors="replace")[-300:]}
    res = {}
    for key, sort in (("by_dso", "dso"), ("by_symbol", "dso,sym")):
        t = subprocess.run([perf, "report", "-i", data, "--no-children", "--sort", sort, "-g",
                            "none", "--percent-limit", "0.4"], capture_output=True, timeout=120)
        lines = [l for l in t.stdout.decode(errors="replace").splitlines()
                 if l.strip() and not l.startswith("#")]
        res[key] = lines[:50]
        with open(os.path.join(ARGS.outdir, "perf-%s.txt" % sort.replace(",", "-")), "w") as f:
            f.write("\n".join(lines) + "\n")
    return res


# ---- report -----------------------------------------------------------------------


def fmt(v, nd=0):
    if v is None:
        return "-"
    if isinstance(v, float):
        return ("%%.%df" % nd) % v
    return str(v)


def report(out):
    h3 = out.get("h3", {})
    names = [n for n in ("qrux-w1", "qrux-w2", "qrux-w1-pool512", "caddy", "gtlsserver")
             if n in h3]
    if not names:
        return
    idle = out.get("idle", {})

    def g(n, *path):
        v = h3.get(n)
        for p in path:
            if not isinstance(v, dict):
                return None
            v = v.get(p)
        return v

    rows = [
        ("CPU us per small request (8 conns x 32 streams)", lambda n: g(n, "small", "cpu_us_per_req"), 1),
        ("  requests/s in that run", lambda n: g(n, "small", "rps"), 0),
        ("  share of that CPU in the kernel (stime)", lambda n: g(n, "small", "sys_share"), 2),
        ("CPU us per MiB, 1 MiB downloads", lambda n: g(n, "down", "cpu_us_per_mib"), 0),
        ("  UDP bytes received by h3load per body byte", lambda n: (g(n, "down", "udp_rx") or 0) /
         max(g(n, "down", "body_rx") or 1, 1), 3),
        ("CPU us per MiB, 1 MiB uploads", lambda n: g(n, "up", "cpu_us_per_mib"), 0),
        ("CPU us per new connection (handshake + 1 request)", lambda n: g(n, "conn", "cpu_us_per_conn"), 0),
        ("  new connections/s in that run", lambda n: (g(n, "conn", "handshakes") or 0) /
         max(g(n, "conn", "seconds") or 1, 1e-9), 0),
        ("latency p50 us at fixed rate", lambda n: g(n, "rate", "lat_us", "p50"), 0),
        ("latency p90 us", lambda n: g(n, "rate", "lat_us", "p90"), 0),
        ("latency p99 us", lambda n: g(n, "rate", "lat_us", "p99"), 0),
        ("latency p99.9 us", lambda n: g(n, "rate", "lat_us", "p99.9") or g(n, "rate", "lat_us", "p999"), 0),
        ("CPU us per request at fixed rate", lambda n: g(n, "rate", "cpu_us_per_req"), 1),
        ("peak RSS MB after the small-request load (VmHWM)", lambda n: (g(n, "vmhwm_small_kib") or 0) / 1024, 1),
        ("peak RSS MB after all loads (VmHWM)", lambda n: (g(n, "vmhwm_end_kib") or 0) / 1024, 1),
        ("idle connections held", lambda n: (idle.get(n) or {}).get("held"), 0),
        ("  RSS KiB per idle connection", lambda n: (idle.get(n) or {}).get("kib_per_conn"), 1),
        ("  RSS MB with them open", lambda n: ((idle.get(n) or {}).get("rss_held_kib") or 0) / 1024, 1),
        ("  CPU us per connection while opening them", lambda n: ((idle.get(n) or {}).get("cpu_us") or 0) /
         max((idle.get(n) or {}).get("handshakes") or 1, 1), 0),
    ]
    short = {"qrux-w1-pool512": "w1-pool512"}
    # qrux over each reference peer that ran: (qrux column, peer column, heading)
    ratios = [(q, ref, "%s/%s" % (q.replace("qrux-", ""), ref[:5]))
              for ref in ("caddy", "gtlsserver") if ref in names
              for q in ("qrux-w1", "qrux-w2") if q in names]
    head = "%-52s" % "HTTP/3 (h3load)" + "".join("%12s" % short.get(n, n) for n in names)
    head += "".join("%12s" % h for _, _, h in ratios)
    print(head)
    for label, fn, nd in rows:
        vals = [fn(n) for n in names]
        line = "%-52s" % label + "".join("%12s" % fmt(v if not isinstance(v, int) else v, nd)
                                         for v in vals)
        for q, ref, _ in ratios:
            v, c = vals[names.index(q)], vals[names.index(ref)]
            line += "%12s" % (("%.2f" % (v / c)) if isinstance(v, (int, float)) and
                              isinstance(c, (int, float)) and c else "-")
        print(line)

    https = out.get("https", {})
    if https:
        print()
        print("%-52s" % "HTTPS fallback (h2load -c 8 -m 32)" +
              "".join("%14s" % n for n in https))
        print("%-52s" % "CPU us per small request" +
              "".join("%14s" % fmt(https[n].get("cpu_us_per_req"), 1) for n in https))
        print("%-52s" % "requests/s" + "".join("%14s" % fmt(https[n].get("rps"), 0) for n in https))
        if "qrux-w1" in https and "nginx" in https and https["nginx"].get("cpu_us_per_req"):
            print("qrux/nginx CPU per request: %.2f" % (https["qrux-w1"]["cpu_us_per_req"] /
                                                        https["nginx"]["cpu_us_per_req"]))

    sc = out.get("scaling")
    if sc and "skipped" not in sc:
        print()
        print("1 vs 2 workers (h3load + nginx pinned to CPU 0; w1 on CPU 1, w2 on CPUs 0-1)")
        for n in ("qrux-w1-pinned", "qrux-w2-pinned"):
            s = sc[n]
            print("  %-16s %8s req/s  %5.2f cores  %5.1f us/req  threads(us): %s" % (
                n, fmt(s["rps"]), s["cores_used"], s["cpu_us_per_req"],
                ", ".join("%.0f" % t for t in s["thread_cpu_us"])))
        if sc.get("rps_ratio_w2_w1"):
            print("  throughput w2/w1: %.2f" % sc["rps_ratio_w2_w1"])

    if out.get("failures"):
        print()
        print("FAILURES / ERRORS SEEN:")
        for f in out["failures"]:
            print("  " + f)
    for n in names:
        probs = g(n, "problems")
        if probs:
            print("%s log lines at warn/error (first %d):" % (n, len(probs)))
            for l in probs[:8]:
                print("  " + l[:200])


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(SRC, "build"),
                    help="CMake build dir holding qrux and h3load (default: build/)")
    ap.add_argument("--secs", type=int, default=5, help="seconds per load (default 5)")
    ap.add_argument("--rate", type=int, default=1000,
                    help="requests/s of the fixed-rate latency load (default 1000)")
    ap.add_argument("--idle", type=int, default=10000,
                    help="idle connections for the RSS measure (default 10000; 0 = skip)")
    ap.add_argument("--h2-requests", type=int, default=40000, help="h2load -n (default 40000)")
    ap.add_argument("--only", default="qrux-w1,qrux-w2,caddy,gtlsserver,https,scaling",
                    help="comma list of: qrux-w1, qrux-w2, qrux-w1-pool512 (1 worker with "
                    "max_idle_connections_per_upstream: 512; the default is 256), caddy, "
                    "gtlsserver (ngtcp2's example server serving the files itself), "
                    "https, scaling, profile")
    ap.add_argument("--profile", action="store_true", help="also run qrux under callgrind")
    ap.add_argument("--profile-requests", type=int, default=4000,
                    help="requests under callgrind (default 4000)")
    ap.add_argument("--profile-pool", type=int, default=None,
                    help="max_idle_connections_per_upstream for the profiled qrux "
                    "(default: qrux's default)")
    ap.add_argument("--out", default=None, help="JSON results (default: OUTDIR/results.json)")
    ap.add_argument("--outdir", default=None, help="default: BUILD/bench")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    ARGS = ap.parse_args()
    ARGS.qrux = os.path.join(ARGS.build, "qrux")
    ARGS.h3load = os.path.join(ARGS.build, "h3load")
    ARGS.outdir = ARGS.outdir or os.path.join(ARGS.build, "bench")
    os.makedirs(ARGS.outdir, exist_ok=True)
    only = set(ARGS.only.split(","))
    if ARGS.profile:
        only.add("profile")
    for b in (ARGS.qrux, ARGS.h3load):
        if not os.access(b, os.X_OK):
            sys.exit("bench: %s not built (make build)" % b)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    env = Env(ARGS.keep)
    out = {"setup": {"cpus": os.cpu_count(), "kernel": os.uname().release, "secs": ARGS.secs,
                     "rate": ARGS.rate, "idle": ARGS.idle,
                     "loadavg_start": open("/proc/loadavg").read().split()[:3]}}
    t_start = time.time()
    try:
        be = backend(env)
        if "caddy" in only:
            out["setup"]["caddy"] = subprocess.run([need("caddy"), "version"],
                                                   capture_output=True).stdout.decode().strip()

        if "gtlsserver" in only:
            need("gtlsserver")
            out["setup"]["gtlsserver"] = subprocess.run(
                ["dpkg-query", "-W", "-f", "${Package} ${Version}", "ngtcp2-server"],
                capture_output=True).stdout.decode().strip()

        def make(name):
            if name in ("caddy", "gtlsserver"):
                return Proxy(env, name, name, be.port)
            if name == "qrux-w1-pool512":
                return Proxy(env, "qrux", name, be.port, workers=1, pool=512)
            w = int(name[-1])
            return Proxy(env, "qrux", name, be.port, workers=w, https=(w == 1))

        out["h3"] = {}
        out["idle"] = {}
        for name in ("qrux-w1", "qrux-w2", "qrux-w1-pool512", "caddy", "gtlsserver"):
            if name not in only:
                continue
            log("%s: HTTP/3 loads" % name)
            px = make(name)
            if name == "qrux-w1":
                # Cross-check: gtlsclient and h3load see the same body.
                out["crosscheck"] = crosscheck(env, px)
            out["h3"][name] = run_h3_suite(env, px, out)
            px.stop()
            if ARGS.idle > 0 and name != "qrux-w1-pool512":
                out["idle"][name] = run_idle(env, lambda: make(name), out)

        if "https" in only:
            log("HTTPS fallback: h2load against qrux https_listen, nginx (TLS proxy), Caddy")
            out["https"] = {}
            px = Proxy(env, "qrux", "qrux-https", be.port, workers=1, https=True)
            out["https"]["qrux-w1"] = run_https(env, px.pid, px.base, "qrux", out)
            px.stop()
            ng = nginx_tls_proxy(env, be.port)
            out["https"]["nginx"] = run_https(env, ng.pid, "https://127.0.0.1:%d" % ng.port,
                                              "nginx", out)
            kill(ng.proc)
            if "caddy" in only:
                px = Proxy(env, "caddy", "caddy-https", be.port)
                out["https"]["caddy"] = run_https(env, px.pid, px.base, "caddy", out)
                px.stop()
        kill(be.proc)

        if "scaling" in only:
            out["scaling"] = run_scaling(env, out)
        if "profile" in only:
            log("profile: qrux (1 worker) under callgrind, %d small requests" %
                ARGS.profile_requests)
            out["profile"] = run_profile(env, out)
    finally:
        out["setup"]["seconds"] = time.time() - t_start
        out["setup"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        env.close()
    # Our qrux runs under the name qx-bench: only those lines are this run's.
    dm = subprocess.run(["dmesg"], capture_output=True)
    if dm.returncode == 0:
        lines = dm.stdout.decode(errors="replace").splitlines()
        out["dmesg"] = [l for l in lines if "qx-bench" in l][-10:]
        out["dmesg_other_qrux_segfaults"] = len([l for l in lines
                                                 if "segfault" in l and "qrux[" in l])
    else:
        out["dmesg"] = "dmesg not readable here"
    path = ARGS.out or os.path.join(ARGS.outdir, "results.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    report(out)
    if isinstance(out.get("dmesg"), list):
        print("dmesg lines about this run's qrux (qx-bench): %s" % (
            "\n  " + "\n  ".join(out["dmesg"]) if out["dmesg"] else "none"))
    prof = out.get("profile")
    if prof and prof.get("self_top"):
        print()
        print("callgrind, qrux self cost (top; user space only):")
        print("\n".join(l for l in prof["self_top"][:60] if "(" in l and "%" in l))
        pf = prof.get("perf") or {}
        if pf.get("by_dso"):
            print()
            print("perf (cpu-clock samples, kernel included), by object:")
            print("\n".join(pf["by_dso"][:12]))
            print("by symbol:")
            print("\n".join(pf["by_symbol"][:40]))
    print()
    print("results: %s (%.0f s, load average %s -> %s)" % (
        path, out["setup"]["seconds"], " ".join(out["setup"]["loadavg_start"]),
        " ".join(out["setup"]["loadavg_end"])))
    return 1 if out.get("failures") else 0


def crosscheck(env, px):
    """The same URL through gtlsclient and h3load: same status and body size."""
    d = os.path.join(env.dir, "gtls-dl")
    os.makedirs(d, exist_ok=True)
    res = {}
    for path, size in (("/small.bin", 100), ("/1m.bin", MIB)):
        r = subprocess.run([need("gtlsclient"), "--exit-on-all-streams-close", "--download", d,
                            "127.0.0.1", str(px.port), px.base + path],
                           capture_output=True, timeout=30)
        f = os.path.join(d, path.lstrip("/"))
        g = os.path.getsize(f) if os.path.exists(f) else None
        h = h3load(["-n", "1"], px.base + path)
        res[path] = {"gtlsclient_bytes": g, "h3load_bytes": h.get("body_rx"), "expected": size}
        if not (g == h.get("body_rx") == size):
            log("  !! cross-check %s: gtlsclient %s bytes, h3load %s, expected %d" % (
                path, g, h.get("body_rx"), size))
    return res


ARGS = None

if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        kill_all()
