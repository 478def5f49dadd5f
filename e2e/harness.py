"""harness.py - shared helpers for the qrux end-to-end tests.

Python 3 standard library only. A test file does:

    from harness import Env
    with Env("proxy_basic") as env:
        be = env.backend()
        q = env.qrux(routes=[("*", be.addr)])
        r = env.gtls(q, "/bytes/1000")
        env.check("GET /bytes/1000 -> 200", r.status() == 200, r.summary())
    # leaving the block prints "N passed, N failed", cleans up and exits

Every process the harness starts gets its own process group and is killed
(SIGTERM, then SIGKILL) when the Env closes, also on an exception, on
SIGTERM/SIGINT (CTest's timeout) and at interpreter exit. Every wait is
bounded. Ports are picked free on loopback (ephemeral range), never 8443.

Environment: QRUX_BIN (the built binary, required), QRUX_SRC (source root),
QRUX_E2E_KEEP=1 keeps the temp directory for a post-mortem.
"""

import atexit
import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

E2E_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, E2E_DIR)
import backend as _backend  # noqa: E402  (pattern helpers shared with the backend)

pattern = _backend.pattern
pattern_pieces = _backend.pattern_pieces
pattern_sha256 = _backend.pattern_sha256

H3_NO_ERROR = 0x100
READY_RE = re.compile(r"\bready\b")
# Set by CMake for the sanitizer tree: AddressSanitizer's allocator keeps
# freed memory in quarantine and adds redzones, so RSS figures run higher
# there; memory bounds in tests are multiplied by this.
SANITIZED = os.environ.get("QRUX_SANITIZED") == "1"
RSS_FACTOR = 4 if SANITIZED else 1
# What a sanitizer build (make test's build-san tree) prints on a finding.
SANITIZER_RE = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error: |"
                          r"SUMMARY: (AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer)")  # "ready: udp [::]:PORT workers=N" (not "already")
H3_MESSAGE_ERROR = 0x10E
H3_REQUEST_CANCELLED = 0x10C

# ---------------------------------------------------------------------------
# process bookkeeping


_PROCS = []
_PROCS_LOCK = threading.Lock()


def _kill_group(p, grace=3.0):
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(timeout=grace)
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _group_alive(pgid):
    """True when some process is still in process group |pgid|. While one is,
    the kernel cannot hand that number out as a new pid, so killpg(pgid)
    reaches only our leftovers. Once the group is empty and its leader
    reaped, the number may belong to a new process (another test's qrux, as
    pids wrap): never killpg a group without checking this first."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, split after ')'
        fields = st[st.rfind(")") + 2:].split()
        if len(fields) > 2 and fields[2] == str(pgid):
            return True
    return False


def _kill_leftovers(p):
    """SIGKILL what is left in the group of |p| after its leader exited."""
    if p.poll() is None:
        _kill_group(p)
    elif _group_alive(p.pid):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def kill_all(grace=3.0):
    """SIGTERM to every process group we started that still has its leader,
    at once; SIGKILL to what is left after |grace| seconds (qrux may be
    draining). Groups whose leader was already reaped are touched only when
    they still have members (see _group_alive)."""
    with _PROCS_LOCK:
        procs = list(_PROCS)
        _PROCS.clear()
    live = [p for p in procs if p.poll() is None]
    for p in live:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    end = time.monotonic() + grace
    for p in live:
        try:
            p.wait(timeout=max(0.01, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # leader alive: the group is ours
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        _kill_leftovers(p)


def spawn(cmd, **kw):
    """Popen in a new session (own process group), registered for cleanup."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    p = subprocess.Popen(cmd, start_new_session=True, **kw)
    with _PROCS_LOCK:
        _PROCS.append(p)
    return p


def run(cmd, timeout, **kw):
    """Runs cmd to completion in its own process group, killed on timeout.
    Returns (returncode, stdout bytes, stderr bytes); returncode is None on
    timeout."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    p = spawn(cmd, **kw)
    try:
        out, err = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        _kill_group(p, grace=1.0)
        out, err = p.communicate()
        rc = None
    finally:
        with _PROCS_LOCK:
            if p in _PROCS:
                _PROCS.remove(p)
        _kill_leftovers(p)  # e.g. Chromium helpers; safe against pid reuse
    return rc, out or b"", err or b""


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)


atexit.register(kill_all)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


def wait_until(pred, timeout, interval=0.05):
    """Polls pred() until it is truthy or timeout seconds pass; returns its
    last value."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= end:
            return v
        time.sleep(interval)


# ---------------------------------------------------------------------------
# ports


_HANDED = set()


def free_port(kind="udp"):
    """A port free on loopback for |kind| ('udp': checked on [::] dual-stack
    and 127.0.0.1, and free for TCP too, since tests often put the HTTPS
    listener on the same number as the QUIC one; 'tcp': 127.0.0.1). Never
    the same port twice per run."""
    for _ in range(200):
        if kind == "udp":
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind(("::", 0))
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port in _HANDED or port == 8443:
            continue
        if kind == "udp" and not (udp_port_free(port) and tcp_port_free(port)):
            continue
        if kind == "tcp" and not tcp_port_free(port):
            continue
        _HANDED.add(port)
        return port
    raise RuntimeError("no free %s port found" % kind)


def udp_port_free(port):
    """True when nobody holds UDP |port| on [::] or 127.0.0.1."""
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", port))
        s.close()
        return True
    except OSError:
        return False


def tcp_port_free(port):
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", port))
        s.close()
        return True
    except OSError:
        return False


def tcp_accepting(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Blackhole:
    """A TCP port on loopback that drops SYNs: a listen(0) socket whose
    accept queue is already full and never drained. A connect to it hangs
    until the caller's timeout (the way an unreachable upstream looks)."""

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(0)
        self.port = self.lsock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.fill = []
        for _ in range(4):  # listen(0) admits one; one more proves it is full
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(0.5)
            try:
                s.connect(("127.0.0.1", self.port))
                self.fill.append(s)
            except OSError:
                s.close()
                break
        else:
            raise RuntimeError("blackhole: accept queue never filled")

    def close(self):
        for s in self.fill:
            s.close()
        self.lsock.close()


# ---------------------------------------------------------------------------
# small HTTP/1.1 client for talking to backends directly (stats, checks)


def http_get(port, path, host="127.0.0.1", timeout=5):
    """GET over a fresh TCP connection with Connection: close; returns
    (status, headers dict lowercased, body bytes)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n"
                   % (path, host, port)).encode())
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, body


def scrape(port, path="/metrics"):
    """The admin server's /metrics (no token) as {'name{labels}': value};
    raises when it does not answer 200."""
    st, _, body = http_get(port, path)
    if st != 200:
        raise RuntimeError("%s answered %s" % (path, st))
    out = {}
    for ln in body.decode("utf-8", "replace").splitlines():
        if ln and not ln.startswith("#"):
            k, _, v = ln.rpartition(" ")
            out[k] = float(v)
    return out


# ---------------------------------------------------------------------------
# peers


def need(binary):
    """Absolute path of a required peer program; raises (a loud failure,
    never a skip) when it is missing: scripts/deps.sh installs it."""
    p = shutil.which(binary) or (binary if os.path.isabs(binary) and os.access(binary, os.X_OK)
                                 else None)
    if not p:
        for d in ("/usr/sbin", "/usr/bin", "/sbin"):
            if os.access(os.path.join(d, binary), os.X_OK):
                p = os.path.join(d, binary)
                break
    if not p:
        raise RuntimeError("required program %r not found: run scripts/deps.sh" % binary)
    return p


class Cert:
    def __init__(self, d):
        self.dir = d
        self.cert = os.path.join(d, "cert.pem")
        self.key = os.path.join(d, "key.pem")
        openssl = need("openssl")
        rc, out, err = run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", self.key,
                            "-out", self.cert, "-days", "7", "-subj", "/CN=localhost",
                            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"],
                           timeout=30)
        if rc != 0:
            raise RuntimeError("openssl req failed: %s" % err.decode(errors="replace"))
        rc, pub, err = run([openssl, "x509", "-in", self.cert, "-pubkey", "-noout"], timeout=30)
        if rc != 0:
            raise RuntimeError("openssl x509 -pubkey failed: %s" % err.decode(errors="replace"))
        # Decode the PEM public key ourselves: it is the DER SubjectPublicKeyInfo.
        b64 = "".join(l for l in pub.decode().splitlines() if l and not l.startswith("-----"))
        spki = base64.b64decode(b64)
        self.spki_sha256_b64 = base64.b64encode(hashlib.sha256(spki).digest()).decode()


class Backend:
    """e2e/backend.py on loopback."""

    def __init__(self, env, root=None, host="127.0.0.1"):
        cmd = [sys.executable, os.path.join(E2E_DIR, "backend.py"), "--host", host,
               "--port", "0"]
        if root:
            cmd += ["--root", root]
        self.log = open(os.path.join(env.dir, "backend-%d.log" % len(env.backends)), "wb")
        self.proc = spawn(cmd, stdout=subprocess.PIPE, stderr=self.log)
        line = _readline_timeout(self.proc.stdout, 10)
        m = re.match(rb"listening (\d+)", line or b"")
        if not m:
            raise RuntimeError("backend.py did not start: %r" % line)
        self.port = int(m.group(1))
        self.host = host
        self.addr = ("[%s]:%d" if ":" in host else "%s:%d") % (host, self.port)

    def stats(self):
        st, _, body = http_get(self.port, "/__stats", host=self.host)
        return json.loads(body)

    def reset(self):
        http_get(self.port, "/__stats/reset", host=self.host)

    def stop(self):
        _kill_group(self.proc)


def _readline_timeout(f, timeout):
    out = []

    def rd():
        out.append(f.readline())

    t = threading.Thread(target=rd, daemon=True)
    t.start()
    t.join(timeout)
    return out[0] if out else None


class Nginx:
    """nginx (Debian nginx-light) serving |root| on 127.0.0.1, as one
    foreground process without a master, all files in its own prefix."""

    def __init__(self, env, root):
        self.port = free_port("tcp")
        self.addr = "127.0.0.1:%d" % self.port
        pre = os.path.join(env.dir, "nginx")
        os.makedirs(os.path.join(pre, "logs"), exist_ok=True)
        for t in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(pre, "tmp", t), exist_ok=True)
        conf = os.path.join(pre, "nginx.conf")
        with open(conf, "w") as f:
            f.write("""
daemon off;
master_process off;
worker_processes 1;
pid %(pre)s/nginx.pid;
error_log %(pre)s/logs/error.log warn;
events { worker_connections 1024; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log %(pre)s/logs/access.log;
    client_body_temp_path %(pre)s/tmp/body;
    proxy_temp_path %(pre)s/tmp/proxy;
    fastcgi_temp_path %(pre)s/tmp/fastcgi;
    uwsgi_temp_path %(pre)s/tmp/uwsgi;
    scgi_temp_path %(pre)s/tmp/scgi;
    sendfile on;
    keepalive_requests 100000;
    keepalive_timeout 60s;
    server {
        listen 127.0.0.1:%(port)d;
        server_name localhost;
        root %(root)s;
    }
}
""" % {"pre": pre, "port": self.port, "root": root})
        self.log = open(os.path.join(pre, "logs", "stderr.log"), "wb")
        self.proc = spawn([need("nginx"), "-p", pre, "-c", conf], stdout=self.log,
                          stderr=subprocess.STDOUT)
        if not wait_until(lambda: self.proc.poll() is not None or tcp_accepting(self.port), 10):
            raise RuntimeError("nginx did not start listening on %d" % self.port)
        if self.proc.poll() is not None:
            with open(os.path.join(pre, "logs", "error.log"), "rb") as f:
                raise RuntimeError("nginx exited: %s" % f.read().decode(errors="replace"))


class Qrux:
    """The binary under test, started from a config file; collects stderr."""

    def __init__(self, env, config_path, port, log_level="info", extra_env=None, wrap=None):
        """wrap: argv run in front of qrux's (it must exec it, so the
        process is qrux's), e.g. unshare for a private /etc/resolv.conf."""
        self.env = env
        self.port = port
        self.config_path = config_path
        self.lines = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.signalled = False  # did the test itself signal or stop it?
        self.logpath = os.path.join(env.dir, "qx-%d.log" % port)
        e = dict(os.environ)
        e["QRUX_LOG"] = log_level
        if extra_env:
            e.update(extra_env)
        self.proc = spawn(list(wrap or []) + [env.qrux_alias(), "--config", config_path],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=e)
        self.pid = self.proc.pid
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        with open(self.logpath, "ab") as lf:
            for raw in self.proc.stderr:
                lf.write(raw)
                lf.flush()
                line = raw.decode("utf-8", "replace").rstrip("\n")
                with self.lock:
                    self.lines.append(line)
                if READY_RE.search(line):
                    self.ready.set()

    def wait_ready(self, timeout=15):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.ready.wait(0.05):
                return True
            if self.proc.poll() is not None:
                self.reader.join(2)
                return self.ready.is_set()
        return False

    def log_text(self):
        with self.lock:
            return "\n".join(self.lines)

    def log_tail(self, n=15):
        with self.lock:
            return "\n".join(self.lines[-n:])

    def access(self, **match):
        """Access-log lines (dicts of key=value) whose fields equal |match|."""
        out = []
        with self.lock:
            lines = list(self.lines)
        for ln in lines:
            i = ln.find("access ")
            if i < 0:
                continue
            kv = dict(re.findall(r"(\w+)=(\S*)", ln[i:]))
            if all(kv.get(k) == str(v) for k, v in match.items()):
                out.append(kv)
        return out

    def vmhwm_kib(self):
        with open("/proc/%d/status" % self.pid) as f:
            for ln in f:
                if ln.startswith("VmHWM:"):
                    return int(ln.split()[1])
        raise RuntimeError("no VmHWM for pid %d" % self.pid)

    def alive(self):
        return self.proc.poll() is None

    def sanitizer_report(self):
        """The first lines of an AddressSanitizer, LeakSanitizer or
        UndefinedBehaviorSanitizer report in qrux's stderr, or None."""
        with self.lock:
            lines = list(self.lines)
        for i, ln in enumerate(lines):
            if SANITIZER_RE.search(ln):
                return "\n".join(lines[max(0, i - 2):i + 30])
        return None

    def signal(self, sig):
        self.signalled = True
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        self.signalled = True
        _kill_group(self.proc)
        self.reader.join(2)

    def foreign_signal(self):
        """How qrux was stopped by something other than this test (another
        process on the machine killing it), or None."""
        if self.signalled:
            return None
        rc = self.proc.poll()
        if rc is not None and rc < 0:
            return "killed by signal %d" % -rc
        if rc is not None:
            return "exited with %d" % rc
        if "SIGTERM" in self.log_text() or "SIGINT" in self.log_text():
            return "logged a SIGTERM/SIGINT"
        return None


def qrux_bin():
    b = os.environ.get("QRUX_BIN")
    if not b:
        raise RuntimeError("QRUX_BIN is not set (CTest sets it to the built binary)")
    if not os.access(b, os.X_OK):
        raise RuntimeError("QRUX_BIN=%s is not an executable" % b)
    return b


def yaml_str(s):
    return json.dumps(str(s))  # a JSON string is a valid YAML double-quoted scalar


def render_config(port, cert, key, routes, limits=None, workers=2, extra_server=""):
    """YAML text for qrux. routes: [(match, "host:port")] or
    [(match, ["h:p", "h:p"])] (a list is written as upstreams:)."""
    out = ["server:", "  listen: %s" % yaml_str("[::]:%d" % port), "  cert: %s" % yaml_str(cert),
           "  key: %s" % yaml_str(key), "  workers: %d" % workers]
    if limits:
        out.append("  limits:")
        for k, v in limits.items():
            out.append("    %s: %s" % (k, v))
    if extra_server:
        out.append(extra_server.rstrip("\n"))
    out.append("routes:")
    for match, up in routes:
        out.append("  - match: %s" % yaml_str(match))
        if isinstance(up, (list, tuple)):
            out.append("    upstreams: [%s]" % ", ".join(yaml_str(u) for u in up))
        else:
            out.append("    upstream: %s" % yaml_str(up))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------
# gtlsclient (Debian ngtcp2-client 1.11, bookworm-backports)


class GtlsResult:
    """What gtlsclient saw. Its debug log (stderr, without -q) carries, per
    stream id S (0, 4, 8, ... in the order requests were made):
        http: stream 0xS response headers started
        http: stream 0xS [name: value]          (one per field, 1xx included)
        HTTP stream S closed with error code C  (256 = H3_NO_ERROR)
    and ngtcp2's frame log (RESET_STREAM, STOP_SENDING, CONNECTION_CLOSE)."""

    def __init__(self, uris, rc, log, files, elapsed):
        self.uris = uris
        self.rc = rc
        self.log = log
        self.files = files  # {name: bytes} from --download
        self.elapsed = elapsed
        self.blocks = {}  # stream id -> [[(name, value)], ...] header blocks
        self.closed = {}  # stream id -> app error code
        self.resets = []  # (stream id, error code) from RESET_STREAM frames received
        hdr = re.compile(r"^http: stream 0x([0-9a-f]+) \[([^:]*:?[^:]*): (.*)\]$")
        for ln in log.splitlines():
            if ln.startswith("http: stream 0x"):
                if ln.endswith("response headers started") or ln.endswith("trailers started"):
                    sid = int(ln.split()[2], 16)
                    self.blocks.setdefault(sid, []).append([])
                    continue
                m = hdr.match(ln)
                if m:
                    sid = int(m.group(1), 16)
                    bl = self.blocks.setdefault(sid, [[]])
                    bl[-1].append((m.group(2), m.group(3)))
                continue
            m = re.match(r"^HTTP stream (\d+) closed with error code (\d+)", ln)
            if m:
                self.closed[int(m.group(1))] = int(m.group(2))
                continue
            if " frm rx " in ln and "RESET_STREAM(" in ln:
                m = re.search(r"id=0x([0-9a-f]+) app_error_code=\S*\(0x([0-9a-f]+)\)", ln)
                if m:
                    self.resets.append((int(m.group(1), 16), int(m.group(2), 16)))

    def _final(self, sid):
        for bl in self.blocks.get(sid, []):
            st = dict(bl).get(":status")
            if st is not None and not st.startswith("1"):
                return bl
        return None

    def status(self, sid=0):
        """Final (non-1xx) :status of stream sid as int, or None."""
        bl = self._final(sid)
        return int(dict(bl)[":status"]) if bl else None

    def interim(self, sid=0):
        return [int(dict(bl)[":status"]) for bl in self.blocks.get(sid, [])
                if dict(bl).get(":status", "").startswith("1")]

    def headers(self, sid=0):
        """[(name, value)] of the final response head."""
        return self._final(sid) or []

    def header(self, name, sid=0):
        for k, v in self.headers(sid):
            if k == name:
                return v
        return None

    def statuses(self):
        return {sid: self.status(sid) for sid in self.blocks}

    def clean(self, sid=0):
        """True when stream sid closed with H3_NO_ERROR."""
        return self.closed.get(sid) == H3_NO_ERROR

    def body(self, name=None):
        """The one downloaded body (or the one named |name|); b"" if none."""
        if name is not None:
            return self.files.get(name, b"")
        if len(self.files) > 1:
            raise RuntimeError("several bodies downloaded: %s" % list(self.files))
        return next(iter(self.files.values()), b"")

    def sha(self, name=None):
        return hashlib.sha256(self.body(name)).hexdigest()

    def summary(self, sid=0):
        b = self.files
        blen = {k: len(v) for k, v in b.items()}
        tail = [ln for ln in self.log.splitlines() if not ln.startswith("I0")
                and not ln.startswith(("Sent packet", "Received packet", "Set timer", "Timer"))]
        return ("rc=%s status=%s interim=%s closed=%s resets=%s bodies=%s headers=%s elapsed=%.2fs"
                " log-tail=%r" % (self.rc, self.status(sid), self.interim(sid),
                                  self.closed.get(sid), self.resets[:3], blen,
                                  self.headers(sid)[:12], self.elapsed, tail[-6:]))


class GtlsRun:
    """A gtlsclient process running in the background."""

    _seq = 0

    def __init__(self, env, cmd, uris, ddir, timeout):
        GtlsRun._seq += 1
        self.uris = uris
        self.ddir = ddir
        self.timeout = timeout
        self.t0 = time.monotonic()
        self.logpath = os.path.join(env.dir, "gtls-%d.log" % GtlsRun._seq)
        self.logf = open(self.logpath, "wb")
        self.proc = spawn(cmd, stdout=subprocess.DEVNULL, stderr=self.logf)

    def downloaded(self):
        """Bytes saved so far (all files)."""
        if not self.ddir:
            return 0
        total = 0
        for fn in os.listdir(self.ddir):
            try:
                total += os.path.getsize(os.path.join(self.ddir, fn))
            except OSError:
                pass
        return total

    def finish(self):
        """Waits (bounded by the timeout given at start) and parses."""
        left = max(0.1, self.timeout - (time.monotonic() - self.t0))
        try:
            rc = self.proc.wait(timeout=left)
        except subprocess.TimeoutExpired:
            _kill_group(self.proc, grace=1.0)
            rc = None
        with _PROCS_LOCK:
            if self.proc in _PROCS:
                _PROCS.remove(self.proc)
        elapsed = time.monotonic() - self.t0
        self.logf.close()
        with open(self.logpath, "rb") as f:
            log = f.read().decode("utf-8", "replace")
        os.unlink(self.logpath)
        files = {}
        if self.ddir:
            for fn in os.listdir(self.ddir):
                with open(os.path.join(self.ddir, fn), "rb") as f:
                    files[fn] = f.read()
            shutil.rmtree(self.ddir, ignore_errors=True)
        return GtlsResult(self.uris, rc, log, files, elapsed)


# ---------------------------------------------------------------------------
# Chromium


def chromium_dump_dom(env, url, quic_origin, spki_b64, timeout=90, extra=None):
    """Loads |url| in headless Chromium forced onto QUIC for |quic_origin|
    ("localhost:PORT"), trusting our self-signed cert by SPKI hash. Returns
    (rc, dom text, stderr text)."""
    chrome = None
    for c in ("chromium", "chromium-browser"):
        if shutil.which(c):
            chrome = shutil.which(c)
            break
    if not chrome:
        chrome = need("chromium")
    udd = tempfile.mkdtemp(prefix="chromium-", dir=env.dir)
    cmd = [chrome, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--user-data-dir=" + udd, "--enable-quic",
           "--origin-to-force-quic-on=" + quic_origin,
           "--ignore-certificate-errors-spki-list=" + spki_b64]
    cmd += list(extra or [])
    cmd += ["--dump-dom", url]
    e = dict(os.environ)
    e.pop("DBUS_SESSION_BUS_ADDRESS", None)
    rc, out, err = run(cmd, timeout=timeout, env=e)
    return rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


# ---------------------------------------------------------------------------
# the environment a test file runs in


class Env:
    """Temp dir, cert, peers and the check bookkeeping of one test file."""

    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = 0
        self.failures = []
        self.backends = []
        self.qruxes = []
        self.started = time.monotonic()
        self.dir = tempfile.mkdtemp(prefix="qx-e2e-%s-" % name)  # no "qrux": see qrux_alias
        self._cert = None

    # -- checks ----------------------------------------------------------

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print("PASS %s" % name, flush=True)
        else:
            self.failed += 1
            self.failures.append(name)
            print("FAIL %s%s" % (name, (": " + str(detail)) if detail != "" else ""), flush=True)
        return bool(ok)

    def eq(self, name, got, want, detail=""):
        return self.check(name, got == want,
                          "got %r, want %r%s" % (got, want, ("; " + str(detail)) if detail else ""))

    def case(self, name, fn, *args):
        """Runs fn(*args); an exception is one failed check named |name|."""
        print("--- %s" % name, flush=True)
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - any error is a failure to report
            self.check(name + " (ran without error)", False,
                       "%s: %s\n%s" % (type(e).__name__, e, traceback.format_exc()))

    # -- peers -----------------------------------------------------------

    def qrux_alias(self):
        """A symlink to QRUX_BIN named qx-under-test, so the process name is
        not "qrux": on a shared development machine a `pkill qrux` or
        `killall qrux` aimed at someone's `make run` must not kill the
        processes under test. The binary is the same file."""
        link = os.path.join(self.dir, "qx-under-test")
        if not os.path.islink(link):
            os.symlink(os.path.abspath(qrux_bin()), link)
        return link

    def cert(self):
        if self._cert is None:
            self._cert = Cert(self.dir)
        return self._cert

    def backend(self, root=None, host="127.0.0.1"):
        b = Backend(self, root=root, host=host)
        self.backends.append(b)
        return b

    def nginx(self, root):
        return Nginx(self, root)

    def write_config(self, routes, limits=None, workers=2, port=None, name=None,
                     extra_server="", text=None):
        """Writes a qrux config next to the cert (relative cert paths) and
        returns (path, port)."""
        port = port or free_port("udp")
        self.cert()
        name = name or "qx-%d.yaml" % port
        path = os.path.join(self.dir, name)
        if text is None:
            text = render_config(port, "cert.pem", "key.pem", routes, limits, workers,
                                 extra_server)
        with open(path, "w") as f:
            f.write(text)
        return path, port

    def qrux(self, routes, limits=None, workers=2, log_level="info", wait=True, **kw):
        path, port = self.write_config(routes, limits, workers, **kw)
        q = Qrux(self, path, port, log_level=log_level)
        self.qruxes.append(q)
        if wait and not q.wait_ready(15):
            raise RuntimeError("qrux did not log 'ready' within 15 s (exit=%s); log:\n%s"
                               % (q.proc.poll(), q.log_tail(30)))
        return q

    def gtls(self, q, paths, timeout=60, **kw):
        """Runs gtlsclient against qrux |q| (or a port) for |paths| (one or a
        list; each a path like "/x" or a full https URI) and waits for every
        stream to close (--exit-on-all-streams-close), at most |timeout| s.
        Keywords: n, method, data (file to upload), authority, host (address
        to connect to, default 127.0.0.1: gtlsclient then sends SNI
        "localhost"), sni (SNI name; connects to 127.0.0.1), download,
        extra (argv)."""
        return self.gtls_start(q, paths, timeout=timeout, **kw).finish()

    def gtls_start(self, q, paths, n=None, method=None, data=None, authority=None,
                   host="127.0.0.1", sni=None, timeout=60, download=True, extra=None,
                   exit_on="all"):
        """Starts gtlsclient in the background; returns a GtlsRun. exit_on:
        "all" streams closed, or "first" (the client then closes the
        connection with the other streams still open)."""
        port = q if isinstance(q, int) else q.port
        if isinstance(paths, str):
            paths = [paths]
        auth = authority or "localhost:%d" % port
        uris = [p if p.startswith("https://") else "https://%s%s" % (auth, p) for p in paths]
        cmd = [need("gtlsclient"), "--exit-on-%s-stream%s-close"
               % (exit_on, "s" if exit_on == "all" else ""), "--no-quic-dump",
               "--no-http-dump", "--timeout=%ds" % max(5, int(timeout)),
               "--handshake-timeout=5s"]
        ddir = None
        if download:
            ddir = tempfile.mkdtemp(prefix="dl-", dir=self.dir)
            cmd += ["--download", ddir]
        if n:
            cmd += ["-n", str(n)]
        if method is not None:
            cmd += ["-m", method]
        if data:
            cmd += ["-d", data]
        cmd += list(extra or [])
        if sni:
            # gtlsclient (GnuTLS build) ignores --sni: it sends its HOST
            # argument as SNI, or "localhost" when HOST is an IP literal. So
            # HOST becomes the SNI name, resolved to loopback through a
            # private /etc/hosts bind-mounted in a mount namespace of its own
            # (the machine's /etc/hosts is untouched).
            hosts = os.path.join(self.dir, "hosts-%s" % re.sub(r"[^A-Za-z0-9.-]", "_", sni))
            with open(hosts, "w") as f:
                f.write("127.0.0.1 %s localhost\n" % sni)
            cmd = [need("unshare"), "-m", "sh", "-c",
                   'mount --bind "$0" /etc/hosts && exec "$@"', hosts] + cmd
            host = sni
        cmd += [host, str(port)] + uris
        return GtlsRun(self, cmd, uris, ddir, timeout)

    def wait_access(self, q, timeout=3, **match):
        """Access-log lines of |q| matching |match|, waiting up to |timeout| s
        for at least one (the line is written when the stream ends)."""
        return wait_until(lambda: q.access(**match), timeout) or []

    def chromium(self, url, quic_origin, timeout=90, extra=None):
        return chromium_dump_dom(self, url, quic_origin, self.cert().spki_sha256_b64, timeout,
                                 extra)

    # -- teardown --------------------------------------------------------

    def __enter__(self):
        print("e2e %s: temp dir %s" % (self.name, self.dir), flush=True)
        return self

    def __exit__(self, et, ev, tb):
        if et is not None and not issubclass(et, SystemExit):
            self.check("%s: test script ran to the end" % self.name, False,
                       "".join(traceback.format_exception(et, ev, tb)))
        elif et is not None and issubclass(et, SystemExit):
            self.check("%s: not interrupted" % self.name, False, "exit %s" % ev)
        foreign = [(q, q.foreign_signal()) for q in self.qruxes]
        kill_all()
        for q in self.qruxes:
            q.reader.join(5)  # everything qrux wrote, a leak report at exit included
            rep = q.sanitizer_report()
            self.check("qrux (port %d) stderr holds no sanitizer report" % q.port, rep is None,
                       rep)
        for q, how in foreign:
            if how:
                print("WARNING: qrux (port %d, pid %d) %s although this test never stopped it: "
                      "a crash, or something else on the machine killing it; see its log %s"
                      % (q.port, q.pid, how, q.logpath), flush=True)
        if self.failed:
            for q in self.qruxes:
                print("--- qrux log tail (port %d):\n%s" % (q.port, q.log_tail(20)), flush=True)
        keep = os.environ.get("QRUX_E2E_KEEP") == "1"
        if keep:
            print("kept temp dir %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        print("e2e %s took %.1fs" % (self.name, time.monotonic() - self.started))
        if self.failed:
            print("failed: %s" % "; ".join(self.failures))
        print("%d passed, %d failed" % (self.passed, self.failed), flush=True)
        sys.exit(1 if self.failed or self.passed == 0 else 0)
