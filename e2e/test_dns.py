#!/usr/bin/env python3
"""Upstreams by DNS name, against a real resolver: Debian's dnsmasq on a
loopback port (dns.servers), answering from --host-record entries and from
a hosts file it re-reads on SIGHUP.

Backends are small HTTP/1.1 servers in this process, one per loopback
address on one port (a name's addresses share the configured port); each
answers with its own address, so a test sees which endpoint served it.
Requests go through qrux's HTTPS listener (HTTP/1.1 over TLS, Python's
http.client).

Cases: a name with two addresses (requests alternate), a record changed (new
requests follow within the TTL, one in flight finishes on the old address,
the config generation stays), a record removed (its endpoint drains: the
backend sees qrux's idle connections close), a name that never resolves
(502, a log line naming it, /readyz 503 with ready_requires_upstream, ready
once it resolves), a name whose last record is removed (its last good
address keeps serving, not_found counted, logged once), an AAAA-only name
over [::1], a search domain (dns.search/ndots), a pod's /etc/resolv.conf
(search list and ndots:5, in a mount namespace of its own) expanding `api`
and `api.other`, one address of a name dead (that endpoint ejected, not the
name), names added by a reload (one resolving, one not: no config error; a
change of dns.servers refused as restart-only), the resolver stopped (the
last good addresses keep serving, failures counted, logged once), and `qrux
check` warning about a name it cannot resolve, with a name server that
refuses and one that never answers (and qrux stopped while its lookup hangs
there: exit 0).
"""

import http.client
import http.server
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Env, Qrux, free_port, need, run, spawn, wait_until, yaml_str,  # noqa: E402
                     _kill_group)
from test_admin import Admin, metric, scrape  # noqa: E402


def dns_metric(ms, family, **labels):
    """metric() for families with a `name` label (metric's own parameter)."""
    return ms.get((family, frozenset((k, str(v)) for k, v in labels.items())))

TTL_MIN, TTL_MAX = 1, 2  # dns.min_ttl_secs / max_ttl_secs: records are followed within ~2 s


class IdHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.open += 1

    def finish(self):
        try:
            super().finish()
        finally:
            with self.server.lock:
                self.server.open -= 1

    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(float(self.path.split("=", 1)[1]) / 1000.0)
        body = self.server.ident.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class IdServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host, port):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.ident = host
        self.lock = threading.Lock()
        self.open = 0  # connections the client (qrux) holds open
        super().__init__((host, port), IdHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def common_port(hosts):
    """A TCP port free on every one of |hosts|."""
    for _ in range(50):
        p = free_port("tcp")
        ok = True
        for h in hosts:
            fam = socket.AF_INET6 if ":" in h else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            try:
                s.bind((h, p))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return p
    raise RuntimeError("no common free port")


class DnsmasqGone(RuntimeError):
    pass


class Dnsmasq:
    """dnsmasq answering only from its own data for *.qxtest."""

    def __init__(self, env, hosts_file, records):
        self.env = env
        self.hosts_file = hosts_file
        self.records = records
        self.log = os.path.join(env.dir, "dnsmasq.log")
        self.err = os.path.join(env.dir, "dnsmasq.stderr")
        self.proc = None
        # A port free for UDP and TCP (dnsmasq takes both); another test
        # running beside may still take it between the check and dnsmasq's
        # bind, so a start that fails at once tries another port.
        for attempt in range(5):
            self.port = free_port("udp")
            try:
                self.start()
                return
            except DnsmasqGone as e:
                print("dnsmasq on port %d: %s; another port" % (self.port, e))
        raise RuntimeError("dnsmasq would not start on 5 ports (%s)" % self.err)

    def start(self):
        cmd = [need("dnsmasq"), "--keep-in-foreground", "--no-daemon", "--conf-file=/dev/null",
               "--port=%d" % self.port, "--listen-address=127.0.0.1", "--bind-interfaces",
               "--no-resolv", "--no-hosts", "--no-poll", "--pid-file=",
               "--addn-hosts=%s" % self.hosts_file, "--local=/qxtest/", "--local-ttl=1",
               "--log-queries", "--log-facility=%s" % self.log]
        if os.geteuid() == 0:
            cmd += ["--user=root", "--group=root"]
        cmd += ["--host-record=%s" % r for r in self.records]
        with open(self.err, "ab") as err:
            self.proc = spawn(cmd, stdout=subprocess.DEVNULL, stderr=err)
        if not wait_until(lambda: self.answers(), 10):
            raise RuntimeError("dnsmasq did not answer on port %d" % self.port)

    def answers(self):
        """A query for a name we do not have gets an answer (NXDOMAIN)."""
        if self.proc.poll() is not None:
            said = ""
            for f in (self.err, self.log):
                if os.path.exists(f):
                    said += open(f, errors="replace").read()[-1000:]
            raise DnsmasqGone("dnsmasq exited: %s" % said.strip())
        q = (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
             b"\x05probe\x06qxtest\x00\x00\x01\x00\x01")
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.3)
        try:
            s.sendto(q, ("127.0.0.1", self.port))
            return len(s.recv(512)) >= 12
        except OSError:
            return False
        finally:
            s.close()

    def set_hosts(self, lines):
        tmp = self.hosts_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("".join(ln + "\n" for ln in lines))
        os.rename(tmp, self.hosts_file)
        self.proc.send_signal(signal.SIGHUP)

    def stop(self):
        _kill_group(self.proc)


class Client:
    """HTTP/1.1 over TLS to qrux's HTTPS listener, a new connection each."""

    def __init__(self, port):
        self.port = port
        self.ctx = ssl.create_default_context()
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE

    def get(self, host, path="/id", timeout=20):
        c = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=timeout)
        try:
            c.request("GET", path, headers={"Host": host})
            r = c.getresponse()
            return r.status, r.read().decode("utf-8", "replace")
        finally:
            c.close()


def main():
    with Env("dns") as env:
        need("dnsmasq")
        hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "::1"]
        port = common_port(hosts)
        servers = {h: IdServer(h, port) for h in hosts}
        hosts_file = os.path.join(env.dir, "dns-hosts")
        # 127.0.0.6 has no backend: connects to it are refused.
        hosts_now = ["127.0.0.2 two.qxtest", "127.0.0.3 two.qxtest", "127.0.0.2 chg.qxtest",
                     "127.0.0.4 ej.qxtest", "127.0.0.6 ej.qxtest"]
        with open(hosts_file, "w") as f:
            f.write("".join(ln + "\n" for ln in hosts_now))
        dns = Dnsmasq(env, hosts_file, ["v6.qxtest,::1", "api.ns.svc.qxtest,127.0.0.4",
                                        "api.other.svc.qxtest,127.0.0.5"])
        dport = dns.port

        tport = free_port("tcp")
        aport = free_port("tcp")
        dns_yaml = ("dns:\n  servers: [%s]\n  search: [ns.svc.qxtest]\n  ndots: 5\n"
                    "  min_ttl_secs: %d\n  max_ttl_secs: %d\n"
                    % (yaml_str("127.0.0.1:%d" % dport), TTL_MIN, TTL_MAX))
        extra = ('  https_listen: "127.0.0.1:%d"\n  drain_delay_secs: 0\n'
                 'admin:\n  listen: "127.0.0.1:%d"\n  ready_requires_upstream: true\n'
                 % (tport, aport)) + dns_yaml
        routes = [("two.test", "two.qxtest:%d" % port), ("chg.test", "chg.qxtest:%d" % port),
                  ("v6.test", "v6.qxtest:%d" % port), ("pod.test", "api:%d" % port),
                  ("never.test", "never.qxtest:%d" % port), ("ej.test", "ej.qxtest:%d" % port)]
        # Idle upstream connections outlive the test unless a drain closes them.
        limits = {"upstream_keepalive_timeout_secs": 600}
        q = env.qrux(routes, limits=limits, extra_server=extra, wait=False)
        cl = Client(tport)
        adm = Admin(aport)

        def started():
            return "started: udp" in q.log_text()

        def case_start():
            env.check("a name that does not resolve is no config error: qrux starts",
                      wait_until(started, 15), q.log_tail(30))
            env.check("the start-up line does not say ready while a route has no upstream",
                      not q.ready.is_set(), q.log_tail())
            env.check("start-up log names the name that does not resolve",
                      "upstream never.qxtest:%d does not resolve" % port in q.log_text(),
                      q.log_tail(30))
            r = adm.get("/readyz")
            env.eq("/readyz 503 while never.qxtest does not resolve", r.status, 503, r)
            env.check("/readyz names it: %r" % r.text,
                      "never.qxtest:%d does not resolve" % port in r.text, r.text)
            st, body = cl.get("never.test")
            env.eq("a route whose name does not resolve answers 502", st, 502, body)
            env.check("the 502 has a warn line naming the name and why",
                      wait_until(lambda: "upstream never.qxtest:%d: no address to connect to: the "
                                 "name does not resolve" % port in q.log_text(), 3),
                      q.log_tail())
            c = adm.get("/config").json()["config"]
            env.eq("GET /config shows the dns section", c.get("dns"),
                   {"servers": "127.0.0.1:%d" % dport, "search": ["ns.svc.qxtest"], "ndots": 5,
                    "min_ttl_secs": TTL_MIN, "max_ttl_secs": TTL_MAX})
            ms, _, _ = scrape(adm)
            v = dns_metric(ms, "qrux_dns_resolutions_total", name="never.qxtest", result="not_found")
            env.check("qrux_dns_resolutions_total{never.qxtest,not_found} >= 1 (%s)" % v,
                      v is not None and v >= 1)

        def case_two():
            seq = [cl.get("two.test") for _ in range(6)]
            env.eq("two addresses: all 200", [s for s, _ in seq], [200] * 6, seq)
            bodies = [b for _, b in seq]
            env.check("two addresses: requests alternate between them %s" % bodies,
                      set(bodies) == {"127.0.0.2", "127.0.0.3"} and
                      all(bodies[i] != bodies[i + 1] for i in range(5)), bodies)
            ms, _, _ = scrape(adm)
            v = dns_metric(ms, "qrux_dns_resolutions_total", name="two.qxtest", result="ok")
            env.check("qrux_dns_resolutions_total{two.qxtest,ok} >= 1 (%s)" % v,
                      v is not None and v >= 1)
            env.check("the record's TTL (dnsmasq's 1 s) is honoured within [1, 2] s",
                      "dns: two.qxtest -> 127.0.0.2 127.0.0.3 (ttl 1 s, next lookup in 1 s)"
                      in q.log_text(), q.log_tail(40))
            env.eq("qrux_dns_addresses{two.qxtest} 2",
                   dns_metric(ms, "qrux_dns_addresses", name="two.qxtest"), 2.0)
            for h in ("127.0.0.2", "127.0.0.3"):
                env.eq("qrux_upstream_healthy labelled by name and address %s" % h,
                       metric(ms, "qrux_upstream_healthy", upstream="two.qxtest:%d" % port,
                              address="%s:%d" % (h, port)), 1.0)
            idle = metric(ms, "qrux_upstream_pool_connections", upstream="two.qxtest:%d" % port,
                          address="127.0.0.3:%d" % port, state="idle")
            env.check("pool per endpoint: idle connection to 127.0.0.3 (%s)" % idle,
                      idle is not None and idle >= 1)
            env.check("the backend at 127.0.0.3 holds qrux's kept-alive connection (%d open)"
                      % servers["127.0.0.3"].open, servers["127.0.0.3"].open >= 1)

        def case_v6_and_search():
            st, body = cl.get("v6.test")
            env.eq("AAAA-only name over [::1]: 200 from ::1", (st, body), (200, "::1"))
            st, body = cl.get("pod.test")
            env.eq("search domain: 'api' resolves as api.ns.svc.qxtest (ndots 5)",
                   (st, body), (200, "127.0.0.4"))

        def case_changed():
            gen0 = metric(scrape(adm)[0], "qrux_config_generation")
            st, body = cl.get("chg.test")
            env.eq("chg.qxtest before the change: 127.0.0.2", (st, body), (200, "127.0.0.2"))
            slow = {}

            def inflight():
                slow["r"] = cl.get("chg.test", "/slow?ms=3000")
            t = threading.Thread(target=inflight)
            t.start()
            time.sleep(0.5)  # the slow request is at the old address
            hosts_now[2] = "127.0.0.5 chg.qxtest"
            t0 = time.monotonic()
            dns.set_hosts(hosts_now)
            moved = wait_until(lambda: cl.get("chg.test")[1] == "127.0.0.5", 15, interval=0.2)
            dt = time.monotonic() - t0
            env.check("record changed: new requests reach the new address (%.1f s; TTL max %d s)"
                      % (dt, TTL_MAX), moved and dt < TTL_MAX + 6, q.log_tail())
            t.join(20)
            env.eq("record changed: the request in flight finished on the old address",
                   slow.get("r"), (200, "127.0.0.2"))
            env.eq("the DNS change did not bump the config generation",
                   metric(scrape(adm)[0], "qrux_config_generation"), gen0)
            env.check("the change is logged",
                      "dns: chg.qxtest -> 127.0.0.5" in q.log_text(), q.log_tail())

        def case_removed():
            hosts_now[1] = "# removed"
            dns.set_hosts(hosts_now)
            ok = wait_until(lambda: all(cl.get("two.test")[1] == "127.0.0.2" for _ in range(4)),
                            15, interval=0.2)
            env.check("record removed: every request goes to the address left", ok)
            ms, _, _ = scrape(adm)
            idle = metric(ms, "qrux_upstream_pool_connections", upstream="two.qxtest:%d" % port,
                          address="127.0.0.3:%d" % port, state="idle")
            env.check("record removed: its idle connections are closed (idle gauge %s)" % idle,
                      not idle)
            be = servers["127.0.0.3"]
            env.check("record removed: the backend at 127.0.0.3 sees qrux's connections close "
                      "(%d still open; keep-alive timeout 600 s)" % be.open,
                      wait_until(lambda: be.open == 0, 10, interval=0.2), q.log_tail())
            env.eq("record removed: its health series is gone",
                   metric(ms, "qrux_upstream_healthy", upstream="two.qxtest:%d" % port,
                          address="127.0.0.3:%d" % port), None)

        def case_emptied():
            ms = scrape(adm)[0]
            nf0 = dns_metric(ms, "qrux_dns_resolutions_total", name="chg.qxtest",
                             result="not_found") or 0
            hosts_now[2] = "# chg.qxtest gone"
            dns.set_hosts(hosts_now)

            def counted():
                v = dns_metric(scrape(adm)[0], "qrux_dns_resolutions_total", name="chg.qxtest",
                               result="not_found") or 0
                return v >= nf0 + 2
            env.check("the name's last record removed: lookups counted not_found",
                      wait_until(counted, 15, interval=0.3), q.log_tail())
            env.eq("... the last good address keeps serving",
                   [cl.get("chg.test") for _ in range(3)], [(200, "127.0.0.5")] * 3)
            env.eq("... qrux_dns_addresses{chg.qxtest} stays 1",
                   dns_metric(scrape(adm)[0], "qrux_dns_addresses", name="chg.qxtest"), 1.0)
            lines = [ln for ln in q.log_text().splitlines()
                     if "dns: chg.qxtest: lookup failed" in ln]
            env.eq("... logged once, not per retry", len(lines), 1, "\n".join(lines))
            env.check("... saying what is kept",
                      lines and "Domain name not found" in lines[0]
                      and "keeping the last 1 address" in lines[0], lines)

        def case_never_resolves_later():
            hosts_now.append("127.0.0.5 never.qxtest")
            dns.set_hosts(hosts_now)
            ok = wait_until(lambda: adm.code("/readyz") == 200, 15, interval=0.3)
            env.check("the name appears: /readyz 200", ok, adm.get("/readyz"))
            env.check("... and the 'ready' line follows", q.wait_ready(5), q.log_tail())
            env.eq("... and its route serves", cl.get("never.test"), (200, "127.0.0.5"))

        def case_resolver_stopped():
            dns.stop()
            before = dns_metric(scrape(adm)[0], "qrux_dns_resolutions_total", name="two.qxtest",
                            result="error") or 0

            def failed_more():
                v = dns_metric(scrape(adm)[0], "qrux_dns_resolutions_total", name="two.qxtest",
                           result="error") or 0
                return v >= before + 2
            env.check("resolver stopped: failures counted (result=error)",
                      wait_until(failed_more, 20, interval=0.5), q.log_tail())
            seq = [cl.get("two.test") for _ in range(4)]
            env.eq("resolver stopped: the last good address keeps serving", seq,
                   [(200, "127.0.0.2")] * 4)
            lines = [ln for ln in q.log_text().splitlines()
                     if "dns: two.qxtest: lookup failed" in ln]
            env.eq("resolver stopped: logged once, not per retry", len(lines), 1,
                   "\n".join(lines))
            env.check("... with what is kept", lines and "keeping the last 1 address" in lines[0],
                      lines)

        def case_ejected():
            seq = [cl.get("ej.test") for _ in range(10)]
            env.eq("one address of ej.qxtest dead: every request 200 from the live one", seq,
                   [(200, "127.0.0.4")] * 10)
            ms, _, _ = scrape(adm)
            up = "ej.qxtest:%d" % port
            dead, live = "127.0.0.6:%d" % port, "127.0.0.4:%d" % port
            env.eq("the dead address is ejected (healthy 0)",
                   metric(ms, "qrux_upstream_healthy", upstream=up, address=dead), 0.0)
            env.eq("... not the name: its live address stays healthy",
                   metric(ms, "qrux_upstream_healthy", upstream=up, address=live), 1.0)
            v = metric(ms, "qrux_upstream_ejections_total", upstream=up, address=dead)
            env.check("ejection counted for the dead address (%s)" % v, v is not None and v >= 1)
            env.eq("no ejection for the live address",
                   metric(ms, "qrux_upstream_ejections_total", upstream=up, address=live), 0.0)
            errs = metric(ms, "qrux_upstream_errors_total", upstream=up, address=dead,
                          kind="connect")
            env.check("connect errors labelled by name and address (%s)" % errs,
                      errs is not None and errs >= 3)

        def case_reload():
            hosts_now.append("127.0.0.5 late.qxtest")
            dns.set_hosts(hosts_now)
            routes2 = routes + [("late.test", "late.qxtest:%d" % port),
                                ("nope.test", "nope.qxtest:%d" % port)]
            gen0 = metric(scrape(adm)[0], "qrux_config_generation")
            tmp, _ = env.write_config(routes2, limits=limits, port=q.port, name="reload.yaml",
                                      extra_server=extra)
            os.rename(tmp, q.config_path)  # whole, as a ConfigMap update lands
            q.signal(signal.SIGHUP)
            env.check("a reload naming a new name that does not resolve is in force (no config "
                      "error)", wait_until(lambda: (metric(scrape(adm)[0],
                                                           "qrux_config_generation") or 0) > gen0,
                                           10, interval=0.2), q.log_tail())
            env.check("the new name that resolves serves after the reload",
                      wait_until(lambda: cl.get("late.test") == (200, "127.0.0.5"), 10,
                                 interval=0.2), q.log_tail())
            st, body = cl.get("nope.test")
            env.eq("the new name that does not resolve: 502", st, 502, body)
            wait_until(lambda: adm.code("/readyz") == 503, 5, interval=0.2)  # checked 1/s
            r = adm.get("/readyz")
            env.eq("... and /readyz 503 naming it", (r.status, r.text.strip()),
                   (503, "upstream nope.qxtest:%d does not resolve: Domain name not found" % port))
            env.eq("the other routes keep serving", cl.get("two.test"), (200, "127.0.0.2"))
            # dns.servers is set up once: a reload changing it is refused.
            gen1 = metric(scrape(adm)[0], "qrux_config_generation")
            moved = extra.replace("127.0.0.1:%d" % dport, "127.0.0.1:%d" % (dport ^ 1))
            env.check("the servers' line is in the config", moved != extra, extra)
            tmp, _ = env.write_config(routes2, limits=limits, port=q.port, name="reload.yaml",
                                      extra_server=moved)
            os.rename(tmp, q.config_path)
            q.signal(signal.SIGHUP)
            msg = "dns.servers: changing it needs a restart; the running config is kept"
            env.check("a reload changing dns.servers is refused as restart-only",
                      wait_until(lambda: msg in q.log_text(), 10, interval=0.2), q.log_tail())
            env.eq("... the generation stays", metric(scrape(adm)[0], "qrux_config_generation"),
                   gen1)
            env.eq("... GET /config says why", adm.get("/config").json().get("last_error"), msg)

        def case_pod_resolv_conf():
            if os.geteuid() != 0:
                env.check("a pod's resolv.conf: needs root for a mount namespace (CI runs as "
                          "root)", False)
                return
            rc = os.path.join(env.dir, "pod-resolv.conf")
            with open(rc, "w") as f:  # as the kubelet writes it for a pod in namespace "ns"
                f.write("search ns.svc.qxtest svc.qxtest\nnameserver 127.0.0.1\n"
                        "options ndots:5\n")
            t2 = free_port("tcp")
            path, p2 = env.write_config(
                [("api.test", "api:%d" % port), ("other.test", "api.other:%d" % port)],
                name="pod.yaml",
                extra_server='  https_listen: "127.0.0.1:%d"\ndns:\n  servers: [%s]\n'
                % (t2, yaml_str("127.0.0.1:%d" % dport)))
            wrap = [need("unshare"), "-m", "sh", "-c",
                    'mount --bind "$0" /etc/resolv.conf && exec "$@"', rc]
            q2 = Qrux(env, path, p2, wrap=wrap)
            env.qruxes.append(q2)
            env.check("qrux with the pod's resolv.conf starts", q2.wait_ready(15), q2.log_tail())
            c2 = Client(t2)
            env.eq("resolv.conf search + ndots:5: 'api' is the Service of the pod's namespace",
                   c2.get("api.test"), (200, "127.0.0.4"))
            env.eq("... 'api.other' the Service of namespace 'other' (second search domain)",
                   c2.get("other.test"), (200, "127.0.0.5"))
            env.check("the 1 s TTL is raised to the default dns.min_ttl_secs, 5 s",
                      "dns: api -> 127.0.0.4 (ttl 1 s, next lookup in 5 s)" in q2.log_text(),
                      q2.log_tail(30))
            q2.stop()

        env.case("start with a name that does not resolve", case_start)
        env.case("a name with two addresses", case_two)
        env.case("AAAA-only and search domains", case_v6_and_search)
        env.case("a changed record", case_changed)
        env.case("a removed record", case_removed)
        env.case("a name emptied", case_emptied)
        env.case("the name appears later", case_never_resolves_later)
        env.case("one address of a name dead", case_ejected)
        env.case("a pod's resolv.conf", case_pod_resolv_conf)
        env.case("names added by a reload", case_reload)
        env.case("the resolver stopped", case_resolver_stopped)

        # qrux check: a warning, not an error.
        path, _ = env.write_config([("*", "nothing-here.qxtest:%d" % port)],
                                   extra_server="dns:\n  servers: [%s]\n"
                                   % yaml_str("127.0.0.1:%d" % common_port(["127.0.0.1"])))
        rc, so, se = run([env.qrux_alias(), "check", "--config", path], timeout=30)
        out = so.decode() + se.decode()
        env.eq("qrux check with a name that does not resolve: exit 0", rc, 0, out)
        env.check("qrux check warns naming it",
                  "nothing-here.qxtest:%d" % port in out and "warning" in out, out)
        # A name server that takes the query and never answers (a cluster
        # DNS address unreachable from where `qrux check` runs): a warning
        # after its wait, not a crash.
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        path, _ = env.write_config([("*", "hangs.qxtest:%d" % port)], name="silent.yaml",
                                   extra_server="dns:\n  servers: [%s]\n"
                                   % yaml_str("127.0.0.1:%d" % silent.getsockname()[1]))
        rc, so, se = run([env.qrux_alias(), "check", "--config", path], timeout=60)
        out = so.decode() + se.decode()
        env.eq("qrux check with a name server that never answers: exit 0", rc, 0, out)
        env.check("... and warns naming the name and why",
                  "upstream hangs.qxtest:%d not resolved: no answer from the name server within "
                  "5 s" % port in out and "warning" in out, out)
        # ... and qrux stopped while its lookup hangs there: a clean exit.
        q3 = env.qrux([("*", "hangs.qxtest:%d" % port)],
                      extra_server="  drain_delay_secs: 0\ndns:\n  servers: [%s]\n"
                      % yaml_str("127.0.0.1:%d" % silent.getsockname()[1]))
        q3.signal(signal.SIGTERM)
        env.eq("SIGTERM with a lookup hanging: exit 0", q3.wait_exit(30), 0, q3.log_tail())
        silent.close()
        q.stop()
        for s in servers.values():
            s.shutdown()


if __name__ == "__main__":
    main()
