#!/usr/bin/env python3
"""Failover between upstreams and passive health, as an operator sees it.

A route with two upstreams, one of them dead (a refused port): every
request gets 200 (the refused connect is retried on the other upstream;
never `200 502 502 200`); the dead one is ejected after 3 failures in a
row (qrux_upstream_healthy 0, qrux_upstream_ejections_total counted) and
the warn line says which upstream and why (`connection refused`). A route
whose only upstream is dead answers 502 with the same line, rate-limited
per upstream (a flood of 502s writes a bounded number of lines and counts
the rest in qrux_log_lines_suppressed_total). When the dead app comes up,
it is tried again after its back-off and back in rotation (healthy 1, the
requests spread over both again).

An upstream whose connect times out (a blackhole) is failed over the same
way, after upstream_connect_timeout_secs.

With admin.ready_requires_upstream, one accepting upstream per route is
ready (the 'ready' line, /readyz 200); a route with none keeps /readyz at
503 and the start-up line says started, not ready.

Requests go over HTTPS (HTTP/1.1 over TLS, Python's http.client) to
qrux's TCP listener; the backends are e2e/backend.py.
"""

import http.client
import os
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (E2E_DIR, Blackhole, Env, free_port, spawn, wait_until,  # noqa: E402
                     _readline_timeout)
from test_admin import Admin, metric, scrape  # noqa: E402


class Client:
    def __init__(self, port):
        self.port = port
        self.ctx = ssl.create_default_context()
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE
        self.conn = None

    def get(self, host, path="/id"):
        """One request on a kept-alive connection (reopened when closed)."""
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx,
                                                        timeout=20)
            try:
                self.conn.request("GET", path, headers={"Host": host})
                r = self.conn.getresponse()
                body = r.read().decode("utf-8", "replace")
                if r.getheader("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, body
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        return None


def main():
    with Env("failover") as env:
        live = env.backend()
        dead_port = free_port("tcp")
        dead = "127.0.0.1:%d" % dead_port
        tport, aport = free_port("tcp"), free_port("tcp")
        extra = ('  https_listen: "127.0.0.1:%d"\n  drain_delay_secs: 0\n'
                 'admin:\n  listen: "127.0.0.1:%d"\n  ready_requires_upstream: true\n'
                 % (tport, aport))
        q = env.qrux([("pair.test", [live.addr, dead]), ("dead.test", dead)], extra_server=extra,
                     wait=False)
        cl = Client(tport)
        adm = Admin(aport)
        env.check("qrux starts", wait_until(lambda: "started: udp" in q.log_text(), 15),
                  q.log_tail())
        r = adm.get("/readyz")
        env.eq("route dead.test has no upstream accepting: /readyz 503", r.status, 503, r)
        env.eq("... naming it", r.text, "upstream %s not accepting connections\n" % dead)
        env.check("the start-up line did not say ready", not q.ready.is_set(), q.log_tail())

        def pair():
            seq = [cl.get("pair.test") for _ in range(12)]
            env.eq("one of two upstreams dead: every request 200",
                   [s for s, _ in seq], [200] * 12, seq)
            env.check("... all served by the live one",
                      all(b == str(live.port) for _, b in seq), seq)
            ms, _, _ = scrape(adm)
            env.eq("the dead one: qrux_upstream_healthy 0",
                   metric(ms, "qrux_upstream_healthy", upstream=dead, address=dead), 0.0)
            env.eq("the live one: qrux_upstream_healthy 1",
                   metric(ms, "qrux_upstream_healthy", upstream=live.addr, address=live.addr), 1.0)
            ej = metric(ms, "qrux_upstream_ejections_total", upstream=dead, address=dead)
            env.check("the dead one was ejected (qrux_upstream_ejections_total %s)" % ej,
                      ej is not None and ej >= 1)
            ce = metric(ms, "qrux_upstream_errors_total", upstream=dead, address=dead,
                        kind="connect")
            env.check("connect errors counted for it (%s)" % ce, ce is not None and ce >= 3)
            log = q.log_text()
            env.check("warn line with the reason",
                      "warn  upstream %s: connect failed: connection refused; trying another "
                      "address" % dead in log, q.log_tail())
            env.check("warn line for the ejection",
                      "upstream %s (%s): ejected for 1 s after 3 connect failures in a row"
                      % (dead, dead) in log, q.log_tail())
            # Ejected: the next requests do not even try it (no new connect errors).
            ce0 = ce
            seq = [cl.get("pair.test") for _ in range(4)]
            ce1 = metric(scrape(adm)[0], "qrux_upstream_errors_total", upstream=dead,
                         address=dead, kind="connect")
            env.check("while ejected, requests skip it (%s -> %s connect errors)" % (ce0, ce1),
                      [s for s, _ in seq] == [200] * 4 and ce1 is not None and
                      ce1 - ce0 <= 1, seq)

        def only_dead():
            sup0 = metric(scrape(adm)[0], "qrux_log_lines_suppressed_total") or 0
            n0 = q.log_text().count("upstream %s: connect failed" % dead)
            seq = [cl.get("dead.test")[0] for _ in range(40)]
            env.eq("only upstream dead: 502 for each (all ejected: tried anyway)",
                   seq, [502] * 40)
            n = q.log_text().count("upstream %s: connect failed" % dead) - n0
            sup = (metric(scrape(adm)[0], "qrux_log_lines_suppressed_total") or 0) - sup0
            env.check("the warn lines are rate-limited per upstream (%d lines for 40 failures, "
                      "%d suppressed)" % (n, sup), 1 <= n < 40 and sup >= 1, q.log_tail())

        def comes_back():
            be = spawn([sys.executable, os.path.join(E2E_DIR, "backend.py"), "--port",
                        str(dead_port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            line = _readline_timeout(be.stdout, 10) or b""
            env.check("the dead app comes up on its port", line.startswith(b"listening"), line)
            # Back-off: 1 s doubling to 30 s while it kept failing; requests
            # are the probes, so keep asking.
            def back():
                cl.get("dead.test")
                return metric(scrape(adm)[0], "qrux_upstream_healthy", upstream=dead,
                              address=dead) == 1.0
            env.check("after its back-off it is tried again: healthy 1",
                      wait_until(back, 45, interval=0.5), q.log_tail())
            env.check("the 'back in rotation' line",
                      "upstream %s (%s): accepts connections again, back in rotation"
                      % (dead, dead) in q.log_text(), q.log_tail())
            seq = [cl.get("pair.test") for _ in range(6)]
            env.eq("both up: all 200", [s for s, _ in seq], [200] * 6, seq)
            env.eq("both up: requests spread over both again",
                   sorted(set(b for _, b in seq)), sorted([str(live.port), str(dead_port)]), seq)
            env.check("both up: /readyz 200 and the 'ready' line",
                      wait_until(lambda: adm.code("/readyz") == 200, 5) and q.wait_ready(5),
                      q.log_tail())

        def ready_with_one():
            # Ready means one upstream of every route accepts, not all of them.
            aport2 = free_port("tcp")
            q2 = env.qrux([("*", [dead, live.addr])], wait=False,
                          extra_server='admin:\n  listen: "127.0.0.1:%d"\n'
                          '  ready_requires_upstream: true\n' % aport2)
            env.check("one of two upstreams of the only route dead: the 'ready' line",
                      q2.wait_ready(15), q2.log_tail())
            r = Admin(aport2).get("/readyz")
            env.eq("... and /readyz 200 'ready'", (r.status, r.text), (200, "ready\n"), r)
            q2.stop()

        def connect_timeout():
            # An upstream that never answers the SYN: after
            # upstream_connect_timeout_secs the request goes to the next one.
            bh = Blackhole()
            try:
                tport2 = free_port("tcp")
                q3 = env.qrux([("*", [bh.addr, live.addr])],
                              limits={"upstream_connect_timeout_secs": 1},
                              extra_server='  https_listen: "127.0.0.1:%d"\n' % tport2)
                c3 = Client(tport2)
                seq, took = [], []
                for _ in range(4):
                    t = time.monotonic()
                    seq.append(c3.get("any.test"))
                    took.append(time.monotonic() - t)
                env.eq("connect timeout on one of two: every request 200",
                       [st for st, _ in seq], [200] * 4, seq)
                env.check("... served by the live one", all(b == str(live.port) for _, b in seq),
                          seq)
                env.check("... after waiting out the connect timeout (%s)"
                          % ["%.2f" % x for x in took], max(took) >= 0.9, took)
                env.check("... the warn line says so",
                          "warn  upstream %s: connect failed: timed out after 1 s; trying "
                          "another address" % bh.addr in q3.log_text(), q3.log_tail())
                q3.stop()
            finally:
                bh.close()

        t0 = time.monotonic()
        env.case("connect timeout: the next upstream", connect_timeout)
        env.case("ready with one upstream of two", ready_with_one)
        env.case("one of two upstreams dead", pair)
        env.case("the only upstream dead", only_dead)
        env.case("the dead app comes back", comes_back)
        print("failover cases took %.1fs" % (time.monotonic() - t0))
        q.stop()


if __name__ == "__main__":
    main()
