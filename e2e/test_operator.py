#!/usr/bin/env python3
"""What an operator meets in the first hour, as they would meet it:

1. `make run`'s script (scripts/run-demo.sh) owns what it starts: its parent
   (make) killed alone, or the script signalled, leaves no qrux or nginx
   behind and the ports free; a second run works.
2. An edited build/demo/qrux.yaml survives the next run; QRUX_CONFIG=… with
   a config that routes to the demo backend still gets the backend.
3. Every config under config/examples passes `qrux check` once
   scripts/example-secrets.sh made the files it points at (and names the
   missing certificate file when they are not there).
4. Error messages say what is wrong: a key file that is a certificate, a
   file that does not exist, an unknown command, a missing --config, an
   empty upstreams list, tabs in YAML, a misspelled key (with the nearest
   known one), an admin port that is taken (exit 1, the port named).
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Env, free_port, http_get, qrux_bin, run, spawn,  # noqa: E402
                     tcp_accepting, tcp_port_free, wait_until)

SRC = os.environ.get("QRUX_SRC") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pids_of(pattern_text):
    """PIDs whose command line contains |pattern_text|."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if pattern_text in cmd:
            out.append(int(d))
    return out


class Demo:
    """scripts/run-demo.sh under a stand-in for make: `sh -c '…; :'` stays
    the script's parent (the `; :` keeps sh from exec'ing it)."""

    def __init__(self, env, ddir, config=None, like=None):
        self.ddir = ddir
        if like is not None:  # the same demo folder: the same ports
            self.bport, self.port, self.aport = like.bport, like.port, like.aport
        else:
            self.bport = free_port("tcp")
            self.port = free_port("udp")
            while not tcp_port_free(self.port):  # the demo uses the number for UDP and TCP
                self.port = free_port("udp")
            self.aport = free_port("tcp")
        e = dict(os.environ)
        e.update({"QRUX_BIN": qrux_bin(), "QRUX_DEMO_DIR": ddir,
                  "QRUX_DEMO_BACKEND_PORT": str(self.bport), "QRUX_DEMO_PORT": str(self.port),
                  "QRUX_DEMO_ADMIN_PORT": str(self.aport)})
        e.pop("QRUX_DEMO_OWNED", None)
        if config:
            e["QRUX_CONFIG"] = config
        self.log = open(os.path.join(env.dir, "demo-%d.log" % self.port), "wb")
        self.parent = subprocess.Popen(
            ["sh", "-c", '"$0"; :', os.path.join(SRC, "scripts", "run-demo.sh")],
            stdout=self.log, stderr=subprocess.STDOUT, env=e, start_new_session=True)
        self.marker = ddir  # every process it starts carries the folder on its command line

    def ready(self, admin_port=None):
        return wait_until(lambda: tcp_accepting(admin_port or self.aport), 40)

    def owned(self):
        """The script, qrux and nginx: processes whose command line names
        the demo folder or its config."""
        return [p for p in pids_of(self.marker) if p != os.getpid()]

    def logtext(self):
        with open(self.log.name, "rb") as f:
            return f.read().decode(errors="replace")


def demo_ownership(env):
    ddir = tempfile.mkdtemp(prefix="demo-", dir=env.dir)
    d = Demo(env, ddir)
    env.check("demo: admin server up", d.ready(), d.logtext()[-800:])
    st, _, body = http_get(d.bport, "/")
    env.eq("demo: the backend serves the page", st, 200)
    env.check("demo: the page names the backend's real address",
              ("127.0.0.1:%d" % d.bport).encode() in body, body[:200])
    env.check("demo: /readyz turns 200",
              wait_until(lambda: http_get(d.aport, "/readyz")[0] == 200, 10))
    env.check("demo: qrux and nginx run", len(d.owned()) >= 2, d.owned())
    # The request id: the client's reaches the app (the demo's /headers) and
    # the access log; without one qrux makes one and sends it up.
    r = subprocess.run(["curl", "-sk", "--http2", "-H", "x-request-id: op-demo-1",
                        "https://localhost:%d/headers" % d.port], capture_output=True, timeout=20)
    env.check("demo: /headers shows the client's request id", b"X-Request-Id: op-demo-1\n"
              in r.stdout, r.stdout)
    env.check("demo: ... and the access log has it",
              wait_until(lambda: "request_id=op-demo-1" in d.logtext(), 5), d.logtext()[-300:])
    r = subprocess.run(["curl", "-sk", "--http2", "https://localhost:%d/headers" % d.port],
                       capture_output=True, timeout=20)
    m = re.search(rb"X-Request-Id: ([0-9a-f-]{36})\n", r.stdout)
    env.check("demo: without one, the app gets a generated request id", m, r.stdout)
    env.check("demo: ... the one in the access log",
              m and wait_until(lambda: "request_id=%s" % m.group(1).decode() in d.logtext(), 5),
              d.logtext()[-300:])
    env.check("demo: ... and a traceparent", re.search(rb"Traceparent: 00-[0-9a-f]{32}-", r.stdout),
              r.stdout)
    # The page names the protocols as qrux's access log writes them.
    for flag, proto in (("--http1.1", "h1"), ("--http2", "h2")):
        r = subprocess.run(["curl", "-sk", flag, "https://localhost:%d/" % d.port],
                           capture_output=True, timeout=20)
        env.check("demo: the page over %s names proto %s" % (flag, proto),
                  ("<code>%s</code>" % proto).encode() in r.stdout, r.stdout[-300:])
        env.check("demo: ... as the access log writes it",
                  wait_until(lambda: "access proto=%s " % proto in d.logtext(), 5),
                  d.logtext()[-300:])
    # make killed alone (SIGKILL: no chance to forward anything).
    os.kill(d.parent.pid, signal.SIGKILL)
    d.parent.wait(5)
    gone = wait_until(lambda: not d.owned(), 15)
    env.check("demo: parent killed alone -> nothing of the demo left running", gone, d.owned())
    env.check("demo: the ports are free again",
              not tcp_accepting(d.aport) and not tcp_accepting(d.bport))

    # Edit the config, run again: the edit is kept and applied.
    cfg = os.path.join(ddir, "qrux.yaml")
    with open(cfg) as f:
        text = f.read()
    new_admin = free_port("tcp")
    text = text.replace("127.0.0.1:%d" % d.aport, "127.0.0.1:%d" % new_admin)
    text = "# edited by the operator\n" + text
    with open(cfg, "w") as f:
        f.write(text)
    d2 = Demo(env, ddir, like=d)
    env.check("demo: second run starts (admin on the edited port)", d2.ready(new_admin),
              d2.logtext()[-800:])
    with open(cfg) as f:
        env.check("demo: the edited qrux.yaml was kept", f.read() == text)
    st, _, _ = http_get(d.bport, "/")
    env.eq("demo: second run: the backend serves again", st, 200)
    # SIGTERM to the script itself: it stops what it started.
    os.killpg(d2.parent.pid, signal.SIGTERM)
    gone = wait_until(lambda: not d2.owned(), 15)
    env.check("demo: SIGTERM to the group -> everything stopped", gone, d2.owned())

    # QRUX_CONFIG pointing at the demo backend: the backend starts too.
    ucfg = os.path.join(ddir, "mine.yaml")
    shutil.copy(os.path.join(ddir, "cert.pem"), os.path.join(ddir, "c.pem"))
    shutil.copy(os.path.join(ddir, "key.pem"), os.path.join(ddir, "k.pem"))
    uadmin = free_port("tcp")
    with open(ucfg, "w") as f:
        f.write(text.replace("cert.pem", "c.pem").replace("key.pem", "k.pem")
                .replace("127.0.0.1:%d\"" % new_admin, "127.0.0.1:%d\"" % uadmin))
    d3 = Demo(env, ddir, config=ucfg, like=d)
    env.check("demo: QRUX_CONFIG run up", d3.ready(uadmin), d3.logtext()[-800:])
    env.check("demo: QRUX_CONFIG routing to the demo backend starts it",
              wait_until(lambda: tcp_accepting(d.bport), 5), d3.logtext()[-800:])
    os.kill(d3.parent.pid, signal.SIGKILL)
    env.check("demo: QRUX_CONFIG run: parent killed -> nothing left",
              wait_until(lambda: not d3.owned(), 15), d3.owned())


def examples(env):
    tmp = tempfile.mkdtemp(prefix="examples-", dir=env.dir)
    ex = os.path.join(tmp, "examples")
    shutil.copytree(os.path.join(SRC, "config", "examples"), ex,
                    ignore=shutil.ignore_patterns("certs", "admin-token", "ticket"))
    names = sorted(n for n in os.listdir(ex) if n.endswith(".yaml"))
    env.check("examples: there are example configs", len(names) >= 3, names)
    rc, so, se = run([qrux_bin(), "check", "--config", os.path.join(ex, "minimal.yaml")], 20)
    env.eq("examples: without the secrets, check fails with exit 2", rc, 2)
    env.check("examples: ... naming the missing certificate file and why",
              re.search(rb"certs/cert\.pem: (No such file or directory|does not exist)", se), se)
    rc, so, se = run([os.path.join(SRC, "scripts", "example-secrets.sh"), ex], 30)
    env.eq("examples: example-secrets.sh", rc, 0, se)
    for n in names:
        rc, so, se = run([qrux_bin(), "check", "--config", os.path.join(ex, n)], 20)
        env.eq("examples: qrux check %s" % n, (rc, b": ok (" in so), (0, True), se)
    rc, so, se = run([qrux_bin(), "check", "--config", os.path.join(ex, "minimal.yaml")], 20)
    env.eq("examples: what check prints", so.decode(),
           "%s: ok (1 route, listen [::]:8443)\n" % os.path.join(ex, "minimal.yaml"))


def errors(env):
    d = tempfile.mkdtemp(prefix="errs-", dir=env.dir)
    cert = env.cert()
    good = ('server:\n  listen: "[::]:%d"\n  cert: "%s"\n  key: "%s"\n'
            'routes:\n  - match: "*"\n    upstream: "127.0.0.1:9"\n')

    def check(name, text, want_rc, want_re):
        p = os.path.join(d, name + ".yaml")
        with open(p, "w") as f:
            f.write(text)
        rc, so, se = run([qrux_bin(), "check", "--config", p], 20)
        env.eq("errors: %s: exit code" % name, rc, want_rc, se)
        env.check("errors: %s: message" % name, re.search(want_re, se), se)

    port = free_port("udp")
    check("key-is-cert", good % (port, cert.cert, cert.cert), 2,
          rb"server\.key: \S*cert\.pem is a certificate, not a private key")
    garbage = os.path.join(d, "garbage.pem")
    with open(garbage, "w") as f:
        f.write("not pem\n")
    check("key-garbage", good % (port, cert.cert, garbage), 2,
          rb"server\.key: \S*garbage\.pem: no PEM private key in the file")
    damaged = os.path.join(d, "damaged.pem")
    with open(damaged, "w") as f:
        f.write("-----BEGIN PRIVATE KEY-----\nnot*base64!!\n-----END PRIVATE KEY-----\n")
    check("key-damaged", good % (port, cert.cert, damaged), 2,
          rb"server\.key: \S*damaged\.pem: damaged PEM private key \(Base64 decoding error\)")
    damaged_c = os.path.join(d, "damaged-cert.pem")
    with open(damaged_c, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot*base64!!\n-----END CERTIFICATE-----\n")
    check("cert-damaged", good % (port, damaged_c, cert.key), 2,
          rb"server\.cert: \S*damaged-cert\.pem: damaged PEM certificate \(")
    check("cert-missing", good % (port, os.path.join(d, "nope.pem"), cert.key), 2,
          rb"server\.cert: \S*nope\.pem: No such file or directory")
    check("cert-is-key", good % (port, cert.key, cert.key), 2,
          rb"server\.cert: \S*key\.pem is a private key, not a certificate")
    other = os.path.join(d, "other")
    os.makedirs(other)
    subprocess.run([os.path.join(SRC, "scripts", "make-cert.sh"), os.path.join(other, "c.pem"),
                    os.path.join(other, "k.pem")], check=True)
    check("key-mismatch", good % (port, cert.cert, os.path.join(other, "k.pem")), 2,
          rb"server\.key: \S*k\.pem does not match the certificate in server\.cert")
    check("upstreams-empty",
          (good % (port, cert.cert, cert.key)).replace('upstream: "127.0.0.1:9"', "upstreams: []"),
          2, rb"routes\[0\]\.upstreams: must not be empty")
    check("tabs", 'server:\n\tlisten: "[::]:1"\n', 2,
          rb"tabs are not allowed for indentation \(line 2\)")
    check("did-you-mean", (good % (port, cert.cert, cert.key)).replace("listen:", "listn:"), 2,
          rb"server\.listn: unknown key \(line 2\); did you mean listen\?")

    # check reads ticket_key_file and admin.token_file too (the README says so)
    check("ticket-missing", (good % (port, cert.cert, cert.key)).replace(
        "routes:", '  ticket_key_file: "%s"\nroutes:' % os.path.join(d, "no.key")), 2,
        rb"server\.ticket_key_file: cannot read \S*no\.key: No such file or directory")
    short = os.path.join(d, "short.key")
    with open(short, "wb") as f:
        f.write(os.urandom(10))
    check("ticket-short", (good % (port, cert.cert, cert.key)).replace(
        "routes:", '  ticket_key_file: "%s"\nroutes:' % short), 2,
        rb"server\.ticket_key_file: \S*short\.key holds 10 bytes; at least 32")
    check("token-missing", (good % (port, cert.cert, cert.key)) +
          'admin:\n  token_file: "%s"\n' % os.path.join(d, "no-token"), 2,
          rb"admin\.token_file: cannot read \S*no-token: No such file or directory")

    rc, so, se = run([qrux_bin(), "chek", "--config", "x.yaml"], 10)
    env.eq("errors: unknown command: exit 2", rc, 2)
    env.check("errors: unknown command: named", b"unknown command 'chek'" in se, se[:300])
    rc, so, se = run([qrux_bin()], 10)
    env.eq("errors: no arguments: exit 2", rc, 2)
    env.check("errors: no arguments: --config is required", b"--config is required" in se,
              se[:300])
    rc, so, se = run([qrux_bin(), "check"], 10)
    env.check("errors: check without --config: --config is required",
              rc == 2 and b"--config is required" in se, se[:300])

    # A taken admin port: a run-time failure (exit 1) naming the port.
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    bport = busy.getsockname()[1]
    p = os.path.join(d, "admin-taken.yaml")
    with open(p, "w") as f:
        f.write(good % (free_port("udp"), cert.cert, cert.key) +
                'admin:\n  listen: "127.0.0.1:%d"\n' % bport)
    rc, so, se = run([qrux_bin(), "--config", p], 20)
    busy.close()
    env.eq("errors: admin port taken: exit 1", rc, 1, se[-300:])
    env.check("errors: admin port taken: the message names 127.0.0.1:%d" % bport,
              ("127.0.0.1:%d" % bport).encode() in se and b"port 0" not in se, se[-300:])


def restart_only_docs(env):
    """The keys the example config and the README call restart-only are
    refused by a reload: early_data and ticket_key_file (the docs once said
    a reload accepted them)."""
    with open(os.path.join(SRC, "config", "examples", "qrux.yaml")) as f:
        ex = f.read()
    with open(os.path.join(SRC, "README.md")) as f:
        readme = f.read()
    for key, line in (("early_data", "early_data: safe"),
                      ("ticket_key_file", "# ticket_key_file:")):
        block = ex[:ex.index(line)].rsplit("\n\n", 1)[-1]
        env.check("docs: example config marks %s [restart]" % key, "[restart]" in block, block)
        env.check("docs: README table says %s is restart" % key,
                  re.search(r"\| `server\.%s` \| [^|]+ \| restart \|" % key, readme))
    be = env.backend()
    q = env.qrux(routes=[("*", be.addr)])
    with open(q.config_path) as f:
        base = f.read()
    tk = os.path.join(env.dir, "tk.key")
    with open(tk, "wb") as f:
        f.write(os.urandom(40))
    for key, add in (("early_data", '  early_data: "off"\n'),
                     ("ticket_key_file", '  ticket_key_file: "%s"\n' % tk)):
        with open(q.config_path, "w") as f:
            f.write(base.replace("  workers:", add + "  workers:"))
        msg = "server.%s: changing it needs a restart" % key
        env.check("reload: changing %s is refused as restart-only" % key,
                  wait_until(lambda: msg in q.log_text(), 10), q.log_tail(5))
        with open(q.config_path, "w") as f:
            f.write(base)


def key_table(env):
    """README's table of config keys says what a reload does with each key
    as the code does it: the rows marked restart are exactly the fields
    proxy/worker/runtime.c refuses on reload, no key has two rows, and
    every key of config/examples/qrux.yaml has one."""
    import yaml
    with open(os.path.join(SRC, "proxy", "worker", "runtime.c")) as f:
        src = f.read()
    fn = src[src.index("static const char *restart_field"):]
    fn = fn[:fn.index("\n}\n")]
    code_restart = set(re.findall(r'return "([a-z_.]+)";', fn))
    with open(os.path.join(SRC, "README.md")) as f:
        readme = f.read()
    rows = re.findall(r"^\| `([a-z_.\[\]]+)` \| [^|]+ \| (live|restart)[^|]* \|", readme, re.M)
    keys = [k for k, _ in rows]
    env.check("docs: the README has the key table", len(rows) > 40, len(rows))
    env.eq("docs: no key has two rows", sorted(k for k in set(keys) if keys.count(k) > 1), [])
    doc_restart = set(k for k, r in rows if r == "restart")
    env.eq("docs: restart in the README, not refused on reload",
           sorted(doc_restart - code_restart), [])
    env.eq("docs: refused on reload, not restart in the README",
           sorted(code_restart - doc_restart), [])
    with open(os.path.join(SRC, "config", "examples", "qrux.yaml")) as f:
        ex = yaml.safe_load(f)

    def leaves(d, prefix):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from leaves(v, prefix + k + ".")
            else:
                yield prefix + k
    ex_keys = set(leaves({k: v for k, v in ex.items() if k != "routes"}, ""))
    ex_keys |= set("routes[]." + k for r in ex["routes"] for k in r)
    env.eq("docs: every key of the example config has a row", sorted(ex_keys - set(keys)), [])


def config_and_drain_words(env):
    """GET /config shows the workers that run (not the configured 0), and
    the drain log line after POST /drain says what a signal will do."""
    import json
    be = env.backend()
    aport = free_port("tcp")
    q = env.qrux(routes=[("*", be.addr)], workers=0,
                 extra_server='  drain_delay_secs: 60\nadmin:\n  listen: "127.0.0.1:%d"\n'
                 % aport)
    m = re.search(r"ready: .* workers=(\d+)", q.log_text())
    env.check("config: the ready line names the workers", m, q.log_tail(3))
    st, _, body = http_get(aport, "/config")
    cfg = json.loads(body)
    env.eq("config: GET /config server.workers is the number running",
           cfg["config"]["server"]["workers"], int(m.group(1)) if m else None)
    # admin/README.md is the metrics reference: every family a scrape shows
    # is named there.
    st, _, body = http_get(aport, "/metrics")
    fams = re.findall(rb"^# TYPE (\S+) ", body, re.M)
    with open(os.path.join(SRC, "admin", "README.md")) as f:
        adoc = f.read()
    env.check("docs: a scrape has metric families", st == 200 and len(fams) > 20, fams)
    missing = [n.decode() for n in fams if n.decode() not in adoc]
    env.eq("docs: every metric family of /metrics is in admin/README.md", missing, [])
    q.signalled = True  # the drain ends with qrux exiting 0: that is this test's doing
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                        "http://127.0.0.1:%d/drain" % aport], capture_output=True, timeout=10)
    env.check("drain: POST /drain accepted", r.stdout.strip() in (b"200", b"202"), r.stdout)
    env.check("drain: the log says SIGTERM continues the drain",
              wait_until(lambda: "POST /drain: draining" in q.log_text() and
                         "SIGTERM continues the drain" in q.log_text(), 5), q.log_tail(3))
    env.check("drain: ... and not 'signal again to stop now'",
              "signal again to stop now" not in q.log_text(), q.log_tail(3))
    q.proc.send_signal(signal.SIGTERM)
    env.check("drain: the SIGTERM after POST /drain says the drain continues",
              wait_until(lambda: "SIGTERM: the drain POST /drain started continues; signal again "
                         "to stop now" in q.log_text(), 5), q.log_tail(3))
    env.check("drain: ... and qrux keeps draining (no 'stopping now')",
              q.alive() and "stopping now" not in q.log_text(), q.log_tail(3))


def second_instance(env):
    """A second qrux on the same addresses refuses to start (exit 1, the
    field and address named) instead of silently taking part of the
    traffic; --takeover starts it on purpose. Something else holding only
    the TCP port is refused too."""
    be = env.backend()
    tport = free_port("tcp")
    extra = '  https_listen: "[::]:%d"\n' % tport
    q = env.qrux(routes=[("*", be.addr)], extra_server=extra)
    path = q.config_path
    rc, so, se = run([qrux_bin(), "--config", path], 20)
    env.eq("second instance: exit 1", rc, 1, se[-300:])
    env.check("second instance: the message names the address and --takeover",
              re.search(rb"server\.listen \[::\]:%d \(UDP\): another process already listens"
                        % q.port, se) and b"--takeover" in se, se[-400:])
    env.check("second instance: the first one still serves alone",
              q.alive() and not q.access(status=599))
    # --takeover: starts and logs that it joined.
    p = spawn([qrux_bin(), "--takeover", "--config", path], stdout=subprocess.DEVNULL,
              stderr=subprocess.PIPE)
    lines = []
    end = time.monotonic() + 15
    while time.monotonic() < end:
        ln = p.stderr.readline()
        if not ln:
            break
        lines.append(ln)
        if b"ready:" in ln:
            break
    text = b"".join(lines)
    env.check("--takeover: starts (ready)", b"ready:" in text, text[-400:])
    env.check("--takeover: says it joins another listener", b"--takeover: joining it" in text,
              text[-400:])
    p.send_signal(signal.SIGKILL)
    p.wait(5)
    # --takeover with the admin port of the running one: exit 1, and the
    # message says the admin port is not shared.
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    with open(path) as f:
        text = f.read()
    path_adm, _ = env.write_config(None, text=text + 'admin:\n  listen: "127.0.0.1:%d"\n'
                                   % held.getsockname()[1], name="takeover-admin.yaml")
    rc, so, se = run([qrux_bin(), "--takeover", "--config", path_adm], 20)
    held.close()
    env.eq("--takeover, admin port taken: exit 1", rc, 1, se[-300:])
    env.check("--takeover, admin port taken: says to give it an admin.listen of its own",
              b"cannot listen on 127.0.0.1:" in se and b"an admin.listen of its own" in se,
              se[-400:])
    # Only the TCP port held by someone else.
    blocker = socket.socket(socket.AF_INET6)
    blocker.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    blocker.bind(("::", 0))
    blocker.listen(1)
    bport = blocker.getsockname()[1]
    path2, _ = env.write_config([("*", be.addr)], port=free_port("udp"),
                                extra_server='  https_listen: "[::]:%d"\n' % bport,
                                name="tcp-taken.yaml")
    rc, so, se = run([qrux_bin(), "--config", path2], 20)
    blocker.close()
    env.eq("TCP port taken: exit 1", rc, 1, se[-300:])
    env.check("TCP port taken: names server.https_listen",
              ("server.https_listen [::]:%d (TCP)" % bport).encode() in se, se[-300:])


def json_logs(env):
    """QRUX_LOG_FORMAT=json: every line is one JSON object with ts, level and
    msg; an access line carries its fields as keys (numbers as numbers, no
    answer from an app null)."""
    import json
    from harness import Qrux
    be = env.backend()
    tport = free_port("tcp")
    path, port = env.write_config([("*", be.addr)],
                                  extra_server='  https_listen: "[::]:%d"\n' % tport)
    q = Qrux(env, path, port, extra_env={"QRUX_LOG_FORMAT": "json"})
    env.qruxes.append(q)
    env.check("json logs: ready", q.wait_ready(15), q.log_tail(5))
    r = subprocess.run(["curl", "-sk", "--http2", "-o", "/dev/null", "-w", "%{http_code}",
                        "-H", "x-request-id: op-test-1",
                        "https://127.0.0.1:%d/bytes/7" % tport], capture_output=True, timeout=20)
    env.eq("json logs: a request", r.stdout, b"200")
    acc = []
    wait_until(lambda: '"msg":"access"' in q.log_text(), 5)
    bad = []
    for ln in q.log_text().splitlines():
        try:
            o = json.loads(ln)
        except ValueError:
            bad.append(ln)
            continue
        if not all(k in o for k in ("ts", "level", "msg")):
            bad.append(ln)
        if o.get("msg") == "access":
            acc.append(o)
    env.check("json logs: every line is a JSON object with ts, level, msg", not bad, bad[:3])
    env.eq("json logs: one access line", len(acc), 1, acc)
    if acc:
        a = acc[0]
        env.eq("json logs: access fields",
               (a.get("proto"), a.get("method"), a.get("path"), a.get("status"),
                a.get("bytes_out"), a.get("upstream"), a.get("request_id")),
               ("h2", "GET", "/bytes/7", 200, 7, be.addr, "op-test-1"), a)
        env.eq("json logs: upstream_status and early_data",
               (a.get("upstream_status"), a.get("early_data")), (200, 0), a)
        env.check("json logs: duration_ms is a number",
                  isinstance(a.get("duration_ms"), (int, float)), a)
    # A request no app answered (its only upstream refuses): the keys keep
    # their types, no answer is null; the warn line is JSON too.
    dead, tport3 = free_port("tcp"), free_port("tcp")
    path3, port3 = env.write_config([("dead.test", "127.0.0.1:%d" % dead), ("*", be.addr)],
                                    name="logjson-dead.yaml",
                                    extra_server='  https_listen: "[::]:%d"\n' % tport3)
    q3 = Qrux(env, path3, port3, extra_env={"QRUX_LOG_FORMAT": "json"})
    env.qruxes.append(q3)
    env.check("json logs (dead upstream): ready", q3.wait_ready(15), q3.log_tail(5))
    r = subprocess.run(["curl", "-sk", "--http2", "-o", "/dev/null", "-w", "%{http_code}",
                        "--resolve", "dead.test:%d:127.0.0.1" % tport3,
                        "https://dead.test:%d/" % tport3], capture_output=True, timeout=20)
    env.eq("json logs: a request to a dead upstream", r.stdout, b"502")
    wait_until(lambda: '"msg":"access"' in q3.log_text(), 5)
    objs = [json.loads(ln) for ln in q3.log_text().splitlines() if ln.startswith("{")]
    acc = [o for o in objs if o.get("msg") == "access"]
    env.check("json logs: the 502 line: status a number, upstream_status null",
              len(acc) == 1 and acc[0].get("status") == 502 and "upstream_status" in acc[0]
              and acc[0]["upstream_status"] is None and acc[0].get("upstream") ==
              "127.0.0.1:%d" % dead, acc)
    env.check("json logs: the warn line with the reason is a JSON object",
              any(o.get("level") == "warn" and "connect failed: connection refused" in
                  o.get("msg", "") for o in objs), objs[-3:])
    # The same from the config file, without the environment variable.
    path2, port2 = env.write_config([("*", be.addr)], name="logjson.yaml",
                                    extra_server="log:\n  format: json\n")
    q2 = Qrux(env, path2, port2, extra_env={"QRUX_LOG_FORMAT": ""})
    env.qruxes.append(q2)
    env.check("json logs from log.format: ready", q2.wait_ready(15), q2.log_tail(5))
    lines = [ln for ln in q2.log_text().splitlines() if ln.strip()]
    ok = 0
    for ln in lines:
        try:
            ok += "msg" in json.loads(ln)
        except ValueError:
            pass
    # The lines before the config was read are text; from then on JSON.
    env.check("json logs from log.format: the ready line is JSON",
              any('"msg":"ready:' in ln for ln in lines), lines[-3:])


def main():
    with Env("operator") as env:
        env.case("json logs", json_logs, env)
        env.case("second instance", second_instance, env)
        env.case("config and drain words", config_and_drain_words, env)
        env.case("restart-only keys in the docs", restart_only_docs, env)
        env.case("the README's key table", key_table, env)
        env.case("examples", examples, env)
        env.case("errors", errors, env)
        env.case("demo", demo_ownership, env)


if __name__ == "__main__":
    main()
