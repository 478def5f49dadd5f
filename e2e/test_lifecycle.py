#!/usr/bin/env python3
"""Start-up and shut-down as an operator sees them: the command line, config
errors (exit 2, the field named, nothing bound), relative cert paths, the
`ready` line, and SIGTERM/SIGINT (with server.drain_delay_secs: 0): in-flight
requests finish, new connections are not taken, exit 0; a request that
outlives graceful_shutdown_secs does not hold the process; SIGTERMs that
keep coming while qrux stops do not turn its exit 0 into a kill.
"""

import os
import shutil
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (READY_RE, Env, Qrux, free_port, pattern_sha256, qrux_bin, render_config,  # noqa: E402
                     run, udp_port_free)


def cli(env):
    rc, out, err = run([qrux_bin(), "--version"], timeout=10)
    env.eq("qrux --version exits 0", rc, 0, err)
    env.check("qrux --version prints the version", b"0.1.0" in out + err, out + err)
    rc, out, err = run([qrux_bin(), "--help"], timeout=10)
    env.eq("qrux --help exits 0", rc, 0, err)
    env.check("qrux --help mentions --config", b"--config" in out + err, out + err)
    rc, out, err = run([qrux_bin()], timeout=10)
    env.check("qrux without arguments fails (exit %s)" % rc, rc not in (0, None), out + err)
    rc, out, err = run([qrux_bin(), "--config", os.path.join(env.dir, "nope.yaml")], timeout=10)
    env.check("qrux --config <missing file> fails (exit %s) naming the file" % rc,
              rc not in (0, None) and b"nope.yaml" in err, err)


# server.drain_delay_secs (issue 5, default 5) keeps serving after SIGTERM
# so Kubernetes can take the pod out of rotation first; this file checks
# the shutdown itself (issue 2), so the delay is 0 here. test_admin.py
# covers the delay.
NO_DRAIN_DELAY = "  drain_delay_secs: 0"

BAD = [
    # (label, mutate(text) -> text, words the message must contain)
    ("unknown key", lambda t: t.replace("  workers: 2", "  workers: 2\n  bogus_key: 1"),
     ["bogus_key"]),
    ("zero limit", lambda t: t.replace("  limits:\n", "  limits:\n    upstream_connect_timeout_secs: 0\n"),
     ["upstream_connect_timeout_secs"]),
    ("zero body limit", lambda t: t.replace("  limits:\n", "  limits:\n    max_request_body_bytes: 0\n"),
     ["max_request_body_bytes"]),
    ("request timeout below connect timeout",
     lambda t: t.replace("  limits:\n", "  limits:\n    upstream_connect_timeout_secs: 5\n"
                         "    upstream_request_timeout_secs: 2\n"),
     ["upstream_request_timeout_secs"]),
    ("non-numeric limit", lambda t: t.replace("  limits:\n", "  limits:\n    max_request_body_bytes: 10MB\n"),
     ["max_request_body_bytes"]),
    ("both upstream and upstreams",
     lambda t: t.replace('    upstream: "127.0.0.1:9"',
                         '    upstream: "127.0.0.1:9"\n    upstreams: ["127.0.0.1:10"]'),
     ["upstream"]),
    ("neither upstream nor upstreams",
     lambda t: t.replace('    upstream: "127.0.0.1:9"\n', ""), ["upstream"]),
    ("unparsable upstream address",
     lambda t: t.replace('"127.0.0.1:9"', '"not an address"'), ["upstream"]),
    ("upstream port out of range",
     lambda t: t.replace('"127.0.0.1:9"', '"127.0.0.1:70000"'), ["upstream"]),
    ("unparsable listen address",
     lambda t: t.replace('listen: "[::]:', 'listen: "[::]x:'), ["listen"]),
    ("no routes", lambda t: t.split("routes:")[0] + "routes: []\n", ["routes"]),
    ("missing cert", lambda t: t.replace('cert: "cert.pem"', ""), ["cert"]),
]


def config_errors(env):
    base_port = free_port("udp")
    base = render_config(base_port, "cert.pem", "key.pem", [("*", "127.0.0.1:9")],
                         limits={"graceful_shutdown_secs": 1}, extra_server=NO_DRAIN_DELAY)
    path, _ = env.write_config(None, text=base, name="base.yaml", port=base_port)
    q = Qrux(env, path, base_port)
    env.check("the unmutated base config starts (so each rejection below is the mutation's)",
              q.wait_ready(15), q.log_tail())
    q.stop()

    for label, mutate, words in BAD:
        port = free_port("udp")
        text = mutate(base.replace(":%d\"" % base_port, ":%d\"" % port))
        if text == base.replace(":%d\"" % base_port, ":%d\"" % port):
            env.check("config error %s: the test mutated the config" % label, False)
            continue
        p, _ = env.write_config(None, text=text, name="bad-%d.yaml" % port, port=port)
        t0 = time.monotonic()
        rc, out, err = run([qrux_bin(), "--config", p], timeout=15)
        dt = time.monotonic() - t0
        msg = err.decode("utf-8", "replace")
        env.eq("config error (%s): exit code 2" % label, rc, 2, msg.strip()[-300:])
        env.check("config error (%s): message names %s" % (label, words),
                  all(w in msg for w in words), msg.strip()[-300:])
        env.check("config error (%s): never ready, exits fast (%.2fs)" % (label, dt),
                  not READY_RE.search(msg) and dt < 5)
        env.check("config error (%s): port %d left free" % (label, port), udp_port_free(port))


def relative_paths(env, be):
    # Config in one directory, cert in a subdirectory, qrux started elsewhere.
    d = os.path.join(env.dir, "cfgdir")
    os.makedirs(os.path.join(d, "certs"))
    c = env.cert()
    shutil.copy(c.cert, os.path.join(d, "certs", "cert.pem"))
    shutil.copy(c.key, os.path.join(d, "certs", "key.pem"))
    port = free_port("udp")
    p = os.path.join(d, "qrux.yaml")
    with open(p, "w") as f:
        f.write(render_config(port, "certs/cert.pem", "certs/key.pem", [("*", be.addr)],
                              workers=0, extra_server=NO_DRAIN_DELAY))
    q = Qrux(env, p, port)
    env.qruxes.append(q)
    env.check("relative cert paths resolve against the config's directory (ready)",
              q.wait_ready(15), q.log_tail())
    env.check("workers: 0 starts at least one worker (ready line says workers=N, N>=1)",
              any(READY_RE.search(ln) and "workers=" in ln and not ln.endswith("workers=0")
                  for ln in q.log_text().splitlines()), q.log_tail())
    r = env.gtls(q, "/bytes/100", timeout=20)
    env.eq("relative paths: serves", r.status(), 200, r.summary())
    q.stop()


def graceful(env, be):
    q = env.qrux(routes=[("*", be.addr)], limits={"graceful_shutdown_secs": 10},
                 extra_server=NO_DRAIN_DELAY)
    r = env.gtls(q, "/id", timeout=20)
    env.eq("before SIGTERM: serves", r.status(), 200, r.summary())

    n = 100000
    run_ = env.gtls_start(q, "/slow/%d?ms=200&chunk=10000" % n, timeout=30)
    ok = env_wait_download(run_, 5)
    env.check("a slow request is in flight before SIGTERM", ok)
    t0 = time.monotonic()
    q.signal(signal.SIGTERM)
    time.sleep(0.3)
    late = env.gtls(q, "/id", timeout=8)
    env.check("after SIGTERM: a new connection is not served", late.status() is None,
              late.summary())
    r = run_.finish()
    env.eq("in-flight request completes after SIGTERM: status", r.status(), 200, r.summary())
    env.eq("in-flight request completes after SIGTERM: exact body", r.sha(), pattern_sha256(n))
    env.check("in-flight request completes after SIGTERM: clean close", r.clean(0), r.summary())
    rc = q.wait_exit(15)
    dt = time.monotonic() - t0
    env.eq("SIGTERM: exit code 0", rc, 0, q.log_tail())
    env.check("SIGTERM: exited once the in-flight request was done, not after the whole 10 s "
              "grace period (%.1fs < 8s)" % dt, rc is not None and dt < 8)

    q = env.qrux(routes=[("*", be.addr)], extra_server=NO_DRAIN_DELAY)
    r = env.gtls(q, "/id", timeout=20)
    env.eq("SIGINT: serves first", r.status(), 200, r.summary())
    t0 = time.monotonic()
    q.signal(signal.SIGINT)
    rc = q.wait_exit(10)
    env.eq("SIGINT with nothing in flight: exit 0", rc, 0, q.log_tail())
    env.check("SIGINT with nothing in flight: quick (%.1fs < 3s)" % (time.monotonic() - t0),
              time.monotonic() - t0 < 3)
    env.check("port free after exit", udp_port_free(q.port))


def grace_expires(env, be):
    q = env.qrux(routes=[("*", be.addr)], limits={"graceful_shutdown_secs": 1,
                                                    "upstream_request_timeout_secs": 60},
                 extra_server=NO_DRAIN_DELAY)
    hung = env.gtls_start(q, "/hang", timeout=20)
    time.sleep(0.5)
    t0 = time.monotonic()
    q.signal(signal.SIGTERM)
    rc = q.wait_exit(10)
    dt = time.monotonic() - t0
    env.eq("a request outliving graceful_shutdown_secs=1: exit 0", rc, 0, q.log_tail())
    env.check("a request outliving graceful_shutdown_secs=1: exit after ~1 s (%.1fs, 0.8..4)"
              % dt, rc is not None and 0.8 <= dt <= 4)
    r = hung.finish()
    env.check("the cut request did not get a 200", r.status() != 200, r.summary())


def signal_storm(env, be):
    """SIGTERMs arriving while qrux is on its way out (the kubelet's
    SIGTERM right after a preStop hook saw the drain end, or an impatient
    operator): the first drains, the second stops at once, the rest find
    qrux past its signal watchers and must not kill it: exit 0, never 143."""
    q = env.qrux(routes=[("*", be.addr)], extra_server=NO_DRAIN_DELAY)
    sent = 0
    deadline = time.monotonic() + 15
    rc = None
    while time.monotonic() < deadline:
        try:
            q.proc.send_signal(signal.SIGTERM)
            sent += 1
        except ProcessLookupError:
            pass
        rc = q.proc.poll()
        if rc is not None:
            break
        time.sleep(0.001)
    q.signalled = True
    if rc is None:
        rc = q.wait_exit(10)
    env.eq("a stream of SIGTERMs while qrux stops (%d sent): exit 0, not killed by one" % sent,
           rc, 0, q.log_tail())


def env_wait_download(run_, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if run_.downloaded() > 0:
            return True
        time.sleep(0.05)
    return False


def main():
    with Env("lifecycle") as env:
        be = env.backend()
        env.case("command line", cli, env)
        env.case("config errors", config_errors, env)
        env.case("relative cert paths, workers: 0", relative_paths, env, be)
        env.case("graceful shutdown", graceful, env, be)
        env.case("grace period expires", grace_expires, env, be)
        env.case("signals while stopping", signal_storm, env, be)


if __name__ == "__main__":
    main()
