#!/usr/bin/env python3
"""test_startup_held.py - /startupz stays 503 until every worker runs.

qrux is LIVE (/startupz 200, the ready line) only once each worker thread
has started its loop; a worker that never starts must keep the pod out of
service however long it takes (it once turned 200 after a fixed 5 s). To
hold one worker back from outside, with no test hook in the binary, qrux
runs under gdb in non-stop mode with a one-shot breakpoint on the worker
thread's entry (worker.c thread_main): the first worker thread stops there,
every other thread runs on. The test then asserts what an orchestrator
sees:

  held       for 8 s /startupz answers 503 (never 200), no ready line, and
             the watchdog names the worker still starting
  released   gdb resumes the thread: /startupz turns 200, the ready line
             is logged, an HTTP/3 request is served (200, exact body)

gdb reads its commands from a FIFO the test writes to. Needs gdb and ptrace
(root in CI).
"""

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Env, Qrux, free_port, need, qrux_bin, wait_until  # noqa: E402
from test_admin import Admin, admin_yaml  # noqa: E402

HELD_SECS = 8  # longer than the 5 s after which /startupz used to turn 200


class GdbEnv(Env):
    """The harness starts qx-under-test: here a script that runs the binary
    (through a link also named qx-under-test, never "qrux") under gdb."""

    def qrux_alias(self):
        wrapper = os.path.join(self.dir, "qx-under-test")
        if not os.path.exists(wrapper):
            os.makedirs(os.path.join(self.dir, "bin"))
            link = os.path.join(self.dir, "bin", "qx-under-test")
            os.symlink(os.path.abspath(qrux_bin()), link)
            self.fifo = os.path.join(self.dir, "gdb-commands")
            os.mkfifo(self.fifo)
            # <> opens the FIFO read-write: no wait for a writer. gdb's
            # own output goes to stderr, with qrux's log.
            with open(wrapper, "w") as f:
                f.write("#!/bin/sh\nexec %s -q -nx -ex 'set pagination off' -ex 'set confirm off' "
                        "-ex 'set non-stop on' -ex 'tbreak thread_main' -ex 'run &' "
                        "--args %s \"$@\" <>%s 1>&2\n" % (need("gdb"), link, self.fifo))
            os.chmod(wrapper, 0o755)
        return wrapper

    def gdb(self, cmds):
        fd = os.open(self.fifo, os.O_RDWR)
        try:
            os.write(fd, cmds.encode())
        finally:
            os.close(fd)


def inferior_pids(gdb_pid):
    out = []
    try:
        for t in os.listdir("/proc/%d/task" % gdb_pid):
            with open("/proc/%d/task/%s/children" % (gdb_pid, t)) as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def held_then_released(env, be):
    aport = free_port("tcp")
    path, port = env.write_config([("*", be.addr)], workers=2, extra_server=admin_yaml(aport))
    q = Qrux(env, path, port)
    env.qruxes.append(q)
    adm = Admin(aport)
    try:
        env.check("gdb holds one worker thread at its entry",
                  wait_until(lambda: "hit Temporary breakpoint 1, thread_main" in q.log_text(), 30),
                  q.log_tail(30))
        codes = []
        end = time.monotonic() + HELD_SECS
        while time.monotonic() < end:
            c = adm.code("/startupz")
            if not codes or codes[-1] != c:
                codes.append(c)
            time.sleep(0.1)
        env.check("held worker: /startupz 503 for %d s, never 200 (codes seen: %s)"
                  % (HELD_SECS, codes), 503 in codes and 200 not in codes, q.log_tail())
        env.check("held worker: no ready line", not q.ready.is_set(), q.log_tail())
        env.check("held worker: the watchdog names it",
                  re.search(r"worker \d+ has not started its loop yet", q.log_text()),
                  q.log_tail())

        env.gdb("continue -a &\n")
        env.check("released: /startupz 200",
                  wait_until(lambda: adm.code("/startupz") == 200, 20), q.log_tail())
        env.check("released: the ready line is logged", q.wait_ready(10), q.log_tail())
        r = env.gtls(q, "/bytes/3000", timeout=30)
        env.check("released: HTTP/3 request served (200, 3000 bytes)",
                  r.status() == 200 and len(r.body()) == 3000, r.summary())
    finally:
        q.signalled = True  # the test ends it (through gdb)
        pids = inferior_pids(q.pid)
        env.gdb("kill\nquit\n")
        q.wait_exit(10)
        for pid in pids:  # gdb gone first would leave its inferior running
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def main():
    with GdbEnv("startup_held") as env:
        be = env.backend()
        env.case("a worker held at its start", held_then_released, env, be)


if __name__ == "__main__":
    main()
