#!/usr/bin/env python3
"""test_xdp_gc.py - `qrux xdp gc`, which removes the bpffs pins that XDP
pods leave on a node, for real: a bpffs mounted by the test stands for the
node's, network namespaces made by the test for pods. Each "pod" gets its
own directory qrux-<name> and an `eth0`, and is attached the way the
injected init container does it (`--pin-owner 65532:65532`, root with
only CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_CHOWN).

Checks what an SRE would: after a pod's namespace is deleted, gc (root
with only CAP_BPF and CAP_CHOWN, what the docs and the DaemonSet give it)
removes exactly that pod's directory and the maps an unfinished attach
left, and the kernel frees them (their map and program ids are gone, the
KiB it reports are bpftool's bytes_memlock); the live pod keeps its
filter, its pins and their owner (uid 65532 still reads its counters),
and its sidecar (qrux as 65532) its maps, counters and
qrux_xdp_attached 1 while gc takes the directory back to look;
--dry-run removes nothing; directories qrux did not make (another name,
a foreign map under a qrux pin name, a subdirectory, an empty one) are
untouched; a directory an attach holds locked is kept until it is done;
an attach on a directory gc removed under it says so; `--every` loops and
exits 0 on SIGTERM; without CAP_CHOWN, CAP_BPF or a bpffs it exits 1
saying which.

Needs root (CI runs as root). Namespaces and the bpffs mount carry the
prefix qxg<pid> or live in the temp dir, and are removed at the end, also
on failure.
"""

import atexit
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Env, Qrux, free_port, need, qrux_bin, run, spawn,  # noqa: E402
                     wait_until)

PREFIX = "qxg%d" % (os.getpid() % 100000)
# The injected init container's capabilities (setpriv's names), and gc's.
ATTACH_CAPS = "-all,+bpf,+perfmon,+net_admin,+chown"
GC_CAPS = "-all,+bpf,+chown"
PORT = 8443

_netns = []
_mounts = []


def sh(cmd, timeout=60):
    rc, out, err = run(cmd, timeout=timeout)
    return rc, out.decode(errors="replace"), err.decode(errors="replace")


def must(cmd, timeout=60):
    rc, out, err = sh(cmd, timeout)
    if rc != 0:
        raise RuntimeError("%s: rc=%s %s %s" % (" ".join(cmd), rc, out, err))
    return out


def cleanup():
    for ns in _netns:
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
    del _netns[:]
    for m in reversed(_mounts):
        subprocess.run(["umount", m], stderr=subprocess.DEVNULL)
    del _mounts[:]


class GcEnv(Env):
    def __exit__(self, et, ev, tb):
        cleanup()  # the bpffs mount lives in the temp dir
        return super().__exit__(et, ev, tb)


def capped(caps, cmd):
    return [need("setpriv"), "--bounding-set", caps] + cmd


def pod(name):
    """A pod's network namespace with an eth0 (a veth whose peer stays in
    the namespace: deleting the namespace removes both)."""
    ns = "%s-%s" % (PREFIX, name)
    must(["ip", "netns", "add", ns])
    _netns.append(ns)
    must(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"])
    must(["ip", "-n", ns, "link", "set", "lo", "up"])
    must(["ip", "-n", ns, "link", "set", "eth0", "up"])
    must(["ip", "-n", ns, "link", "set", "peer0", "up"])
    return ns


def del_pod(ns):
    must(["ip", "netns", "del", ns])
    _netns.remove(ns)


def attach(ns, pin):
    return sh(["ip", "netns", "exec", ns] +
              capped(ATTACH_CAPS, [qrux_bin(), "xdp", "attach", "--iface", "eth0",
                                   "--quic-port", str(PORT), "--pin", pin,
                                   "--pin-owner", "65532:65532"]))


def gc(root, *args, caps=GC_CAPS):
    return sh(capped(caps, [qrux_bin(), "xdp", "gc", "--root", root] + list(args)))


def pinned_map(path):
    return json.loads(must([need("bpftool"), "-j", "map", "show", "pinned", path]))


def map_ids(d):
    """{pin name: (map id, bytes_memlock)} of the maps pinned in |d|."""
    out = {}
    for n in sorted(os.listdir(d)):
        if n.startswith("qx_"):
            m = pinned_map(os.path.join(d, n))
            out[n] = (m["id"], m["bytes_memlock"])
    return out


def link_of(d):
    return json.loads(must([need("bpftool"), "-j", "link", "show", "pinned",
                            os.path.join(d, "link")]))


def exists(kind, ident):
    rc, _, _ = sh([need("bpftool"), kind, "show", "id", str(ident)])
    return rc == 0


def owners(d):
    """(uid of d, {pin: uid})."""
    return os.stat(d).st_uid, {n: os.lstat(os.path.join(d, n)).st_uid
                               for n in sorted(os.listdir(d))}


def dirs(root):
    """The directories in |root| (a new bpffs also shows the kernel's
    maps.debug and progs.debug)."""
    return sorted(n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n)))


def passes(log):
    """How many passes gc --every has reported in |log|."""
    with open(log) as fh:
        return sum(1 for ln in fh if ln.startswith("gc "))


def main():
    if os.geteuid() != 0:
        print("FAIL test_xdp_gc: needs root (CI runs as root)")
        sys.exit(1)
    with GcEnv("xdp-gc") as env:
        cleanup()
        atexit.register(cleanup)
        root = os.path.join(env.dir, "bpffs")  # the node's /sys/fs/bpf
        os.makedirs(root)
        must(["mount", "-t", "bpf", "bpf", root])
        _mounts.append(root)
        os.chmod(env.dir, 0o711)  # uid 65532 reaches the pins (the sidecar's view)

        def d(name):
            return os.path.join(root, name)

        # -- the node: two live pods, one that will go, foreign things ----
        ns_a, ns_b = pod("a"), pod("b")
        for ns, name in ((ns_a, "qrux-a"), (ns_b, "qrux-b")):
            rc, out, err = attach(ns, d(name))
            env.check("attach %s like the init container: exit 0" % name, rc == 0, out + err)
        # An attach that did not finish: its maps are pinned, then the link
        # fails (eth0 already has a program: pod a's).
        rc, out, err = attach(ns_a, d("qrux-half"))
        env.check("an attach that fails at the link leaves maps behind (qrux-half)",
                  rc == 1 and "already has an XDP program" in err and
                  "qx_buckets" in os.listdir(d("qrux-half")) and
                  "link" not in os.listdir(d("qrux-half")), out + err)
        # Not qrux's: another name, a foreign map under a qrux pin name, a
        # subdirectory, an empty qrux-* directory.
        bpftool = need("bpftool")
        for name in ("other-app", "qrux-notours", "qrux-extra", "qrux-empty"):
            os.makedirs(d(name))
        must([bpftool, "map", "create", d("other-app/qx_config"), "type", "array", "key", "4",
              "value", "4", "entries", "1", "name", "qx_config"])
        must([bpftool, "map", "create", d("qrux-notours/qx_config"), "type", "array", "key", "4",
              "value", "4", "entries", "1", "name", "somebodys"])
        os.makedirs(d("qrux-extra/sub"))
        foreign = {n: (sorted(os.listdir(d(n))), owners(d(n)))
                   for n in ("other-app", "qrux-notours", "qrux-extra", "qrux-empty")}

        maps_a, maps_b, maps_half = map_ids(d("qrux-a")), map_ids(d("qrux-b")), \
            map_ids(d("qrux-half"))
        prog_a = link_of(d("qrux-a"))["prog_id"]
        env.check("pods a and b: six maps each, half: six",
                  len(maps_a) == len(maps_b) == len(maps_half) == 6,
                  (maps_a, maps_b, maps_half))
        owners_b = owners(d("qrux-b"))
        env.check("qrux-b is 65532's (--pin-owner), but for the token buckets",
                  owners_b[0] == 65532 and owners_b[1]["qx_buckets"] == 0 and
                  all(u == 65532 for n, u in owners_b[1].items() if n != "qx_buckets"),
                  owners_b)

        # -- errors first -------------------------------------------------
        def errors():
            rc, out, err = gc(env.dir)
            env.check("gc on a directory that is no bpffs: exit 1, says so",
                      rc == 1 and "is not a bpf filesystem" in err, out + err)
            rc, out, err = gc(root, caps="-all,+bpf")
            env.check("gc without CAP_CHOWN: exit 1, names it",
                      rc == 1 and "missing capabilities: CAP_CHOWN (" in err, out + err)
            rc, out, err = gc(root, caps="-all,+chown")
            env.check("gc without CAP_BPF: exit 1, names it",
                      rc == 1 and "missing capabilities: CAP_BPF (" in err, out + err)
            rc, out, err = sh([qrux_bin(), "xdp", "gc"])
            env.check("gc without --root: exit 2", rc == 2 and "--root" in err, err)
            env.eq("after the errors, every directory is there",
                   dirs(root),
                   ["other-app", "qrux-a", "qrux-b", "qrux-empty", "qrux-extra", "qrux-half",
                    "qrux-notours"])
        env.case("errors", errors)

        # -- pod a goes ---------------------------------------------------
        del_pod(ns_a)
        env.check("pod a's namespace gone: its link is dead (status: not attached)",
                  wait_until(lambda: sh([qrux_bin(), "xdp", "status", "--pin",
                                         d("qrux-a")])[0] == 3, 60))

        def dry_run():
            before = {n: owners(d(n)) for n in dirs(root)}
            rc, out, err = gc(root, "--dry-run")
            env.check("gc --dry-run: exit 0", rc == 0, out + err)
            lines = [ln for ln in out.splitlines() if ln.startswith("would remove " + root)]
            env.eq("gc --dry-run names what it would remove",
                   [ln.split(":")[0] for ln in lines],
                   ["would remove " + d("qrux-a"), "would remove " + d("qrux-half")], out)
            env.check("gc --dry-run: total",
                      "would remove 2 directories" in out and
                      "kept 1 with a live link, 0 in use by an attach, 3 not qrux's or empty"
                      in out, out)
            env.eq("gc --dry-run removes nothing and gives every owner back",
                   {n: owners(d(n)) for n in dirs(root)}, before)
            env.check("gc --dry-run: every map still exists",
                      all(exists("map", i) for i, _ in
                          list(maps_a.values()) + list(maps_half.values())))
        env.case("dry run", dry_run)

        def collect():
            rc, out, err = gc(root)
            env.check("gc with only CAP_BPF and CAP_CHOWN: exit 0, no error", rc == 0 and
                      err == "", out + err)
            kib_a = sum(m for _, m in maps_a.values()) // 1024
            kib_half = sum(m for _, m in maps_half.values()) // 1024
            want = [
                "removed %s: its link's interface is gone (prog id %d); 6 maps (ids %s), "
                "%d KiB locked" % (d("qrux-a"), prog_a,
                                   " ".join(str(i) for i, _ in sorted(maps_a.values())), kib_a),
                "removed %s: maps without a link; 6 maps (ids %s), %d KiB locked"
                % (d("qrux-half"), " ".join(str(i) for i, _ in sorted(maps_half.values())),
                   kib_half),
            ]
            got = [ln for ln in out.splitlines() if ln.startswith("removed ")]
            env.eq("one line per removed directory: why, map ids, KiB (bpftool's memlock)",
                   sorted(got), sorted(want), out)
            env.check("pod a's pins are a few MiB (the token buckets)", kib_a > 4096, kib_a)
            env.check("the total line",
                      "gc %s: removed 2 directories (%d KiB locked); kept 1 with a live link, "
                      "0 in use by an attach, 3 not qrux's or empty\n" % (root, kib_a + kib_half)
                      in out, out)
            env.check("foreign directories named in a kept line",
                      "kept %s: qx_config is not qrux's map" % d("qrux-notours") in out and
                      "kept %s: holds sub, which qrux does not pin" % d("qrux-extra") in out,
                      out)
            env.eq("exactly the dead pod's and the unfinished directories are gone",
                   dirs(root),
                   ["other-app", "qrux-b", "qrux-empty", "qrux-extra", "qrux-notours"])
            gone = [i for i, _ in list(maps_a.values()) + list(maps_half.values())]
            env.check("the kernel freed their maps (bpftool map show id: none of them)",
                      wait_until(lambda: not any(exists("map", i) for i in gone), 60),
                      [i for i in gone if exists("map", i)])
            env.check("and pod a's program", wait_until(lambda: not exists("prog", prog_a), 60))
            # The live pod: pins, owners, filter.
            env.eq("qrux-b: same maps", map_ids(d("qrux-b")), maps_b)
            env.eq("qrux-b: owners given back (65532, buckets root's)", owners(d("qrux-b")),
                   owners_b)
            rc, out, err = sh(["ip", "netns", "exec", ns_b, qrux_bin(), "xdp", "status", "--pin",
                               d("qrux-b")])
            env.check("pod b: still attached on eth0, counters readable",
                      rc == 0 and "attached: interface eth0" in out and
                      re.search(r"pass +initial +\d+", out), out + err)
            rc, out, err = sh(["ip", "netns", "exec", ns_b, need("setpriv"), "--reuid=65532",
                               "--regid=65532", "--clear-groups", qrux_bin(), "xdp", "status",
                               "--pin", d("qrux-b")])
            env.check("pod b: uid 65532 (its sidecar) still reads the counters",
                      rc == 0 and "packets:" in out and "not readable" not in out, out + err)
            _, link, _ = sh(["ip", "-n", ns_b, "-d", "link", "show", "eth0"])
            env.check("pod b: its program is on eth0", "prog/xdp" in link, link)
            env.eq("directories qrux did not make: untouched (entries and owners)",
                   {n: (sorted(os.listdir(d(n))), owners(d(n))) for n in foreign}, foreign)
            rc, out, err = gc(root)
            env.check("gc again: exit 0, removes nothing",
                      rc == 0 and "removed 0 directories (0 KiB locked)" in out and
                      "\nremoved " not in "\n" + out, out + err)
        env.case("gc removes the dead pod's pins", collect)

        def locked():
            # Pod c goes while its directory is locked (as attach holds it):
            # gc keeps it and gives its owners back, then removes it.
            ns_c = pod("c")
            rc, out, err = attach(ns_c, d("qrux-c"))
            env.check("attach qrux-c: exit 0", rc == 0, out + err)
            before = owners(d("qrux-c"))
            del_pod(ns_c)
            wait_until(lambda: sh([qrux_bin(), "xdp", "status", "--pin", d("qrux-c")])[0] == 3,
                       60)
            fd = os.open(d("qrux-c"), os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                rc, out, err = gc(root)
                env.check("gc while qrux-c is locked: kept, counted in use",
                          rc == 0 and "removed 0 directories" in out and
                          "1 in use by an attach" in out, out + err)
                env.eq("qrux-c: owners given back", owners(d("qrux-c")), before)
            finally:
                os.close(fd)
            rc, out, err = gc(root)
            env.check("unlocked: gc removes qrux-c",
                      rc == 0 and "removed %s: its link's interface is gone" % d("qrux-c") in out
                      and not os.path.exists(d("qrux-c")), out + err)

            # The kubelet's bind mount of a pod's directory that gc removed:
            # attach says so (the init container's next start gets a new one).
            os.makedirs(d("qrux-e"))
            mnt = os.path.join(env.dir, "pod-e-bpf")
            os.makedirs(mnt)
            must(["mount", "--bind", d("qrux-e"), mnt])
            _mounts.append(mnt)
            os.rmdir(d("qrux-e"))
            ns_e = pod("e")
            rc, out, err = attach(ns_e, mnt)
            env.check("attach on a directory gc removed: exit 1, says so",
                      rc == 1 and "was removed (qrux xdp gc" in err, out + err)
        env.case("an attach in progress; a removed directory", locked)

        def every():
            log = os.path.join(env.dir, "gc-every.log")
            with open(log, "w") as fh:
                p = spawn(capped(GC_CAPS, [qrux_bin(), "xdp", "gc", "--root", root, "--every",
                                           "1"]), stdout=fh, stderr=subprocess.STDOUT)
            try:
                ns_d = pod("d")
                rc, out, err = attach(ns_d, d("qrux-d"))
                env.check("attach qrux-d: exit 0", rc == 0, out + err)
                env.check("gc --every: qrux-d kept while its pod lives",
                          wait_until(lambda: passes(log) >= 2, 60) and
                          os.path.exists(d("qrux-d")), open(log).read())
                del_pod(ns_d)
                env.check("gc --every: qrux-d removed after its pod went",
                          wait_until(lambda: not os.path.exists(d("qrux-d")), 120),
                          open(log).read())
            finally:
                p.send_signal(signal.SIGTERM)
                rc = p.wait(60)
            text = open(log).read()
            env.check("gc --every: exit 0 on SIGTERM, said what it removed",
                      rc == 0 and "removed %s: its link's interface is gone" % d("qrux-d") in text,
                      "rc=%s %s" % (rc, text[-800:]))
        env.case("gc --every", every)

        def sidecar():
            # Pod b's sidecar: qrux as 65532, no capability, on its pins.
            # gc takes the directory back for a moment to look at the link;
            # the sidecar keeps its maps (no reset of its counters, no
            # "gone") even when that moment lasts seconds.
            tls = os.path.join(env.dir, "pod-b")  # what the sidecar reads, 65532 too
            os.makedirs(tls)
            env.cert()
            for n in ("cert.pem", "key.pem"):
                shutil.copy(os.path.join(env.dir, n), tls)
                os.chmod(os.path.join(tls, n), 0o644)
            os.chmod(tls, 0o755)
            tok = os.path.join(tls, "token")
            with open(tok, "w") as fh:
                fh.write("gc-token\n")
            os.chmod(tok, 0o644)
            aport = free_port("tcp")
            path, port = env.write_config(
                [("*", "127.0.0.1:1")], name="pod-b/sidecar.yaml",
                extra_server='admin:\n  listen: "127.0.0.1:%d"\n  token_file: "%s"\n'
                             'xdp:\n  pin: "%s"\n' % (aport, tok, d("qrux-b")))
            with open(path) as fh:
                text = fh.read().replace('"cert.pem"', '"%s/cert.pem"' % tls).replace(
                    '"key.pem"', '"%s/key.pem"' % tls)
            with open(path, "w") as fh:
                fh.write(text)
            os.chmod(path, 0o644)
            q = Qrux(env, path, port, wrap=["ip", "netns", "exec", ns_b, need("setpriv"),
                                            "--reuid=65532", "--regid=65532", "--clear-groups"])
            env.qruxes.append(q)
            try:
                env.check("sidecar (65532) ready", q.wait_ready(20), q.log_tail(20))

                def metrics():
                    _, out, _ = sh(["ip", "netns", "exec", ns_b, need("curl"), "-s", "-H",
                                    "Authorization: Bearer gc-token",
                                    "http://127.0.0.1:%d/metrics" % aport])
                    m = re.search(r"^qrux_xdp_attached (\d)$", out, re.M)
                    c = re.search(r'^qrux_xdp_packets_total\{verdict="pass",reason="not_quic"\} '
                                  r"(\d+)$", out, re.M)
                    return (int(m.group(1)) if m else None), (int(c.group(1)) if c else None)
                env.check("the sidecar opened pod b's maps: qrux_xdp_attached 1",
                          wait_until(lambda: metrics()[0] == 1, 20), q.log_tail(20))
                # Frames into eth0 (from its peer) for a counter that must not
                # reset: ARP, which the filter passes as not_quic.
                code = ("import socket\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\n"
                        "s.bind(('peer0',0))\n"
                        "for _ in range(20):\n"
                        "    s.send(b'\\xff'*6+b'\\x02'*6+b'\\x08\\x06'+bytes(46))\n")
                must(["ip", "netns", "exec", ns_b, "/usr/bin/python3", "-c", code])
                env.check("the sidecar counts the frames into eth0",
                          wait_until(lambda: (metrics()[1] or 0) >= 20, 20), metrics())
                seen = [metrics()]
                os.chown(d("qrux-b"), 0, 0)  # what gc does, stretched over 3 s
                try:
                    end = time.monotonic() + 3
                    while time.monotonic() < end:
                        seen.append(metrics())
                        time.sleep(0.2)
                finally:
                    os.chown(d("qrux-b"), 65532, 65532)
                for _ in range(3):
                    rc, out, err = gc(root)
                    env.check("gc while the sidecar runs: exit 0, qrux-b kept",
                              rc == 0 and os.path.exists(d("qrux-b")), out + err)
                seen.append(metrics())
                env.check("the sidecar's qrux_xdp_attached stayed 1 throughout",
                          all(a == 1 for a, _ in seen), seen)
                env.check("and its counters never went back",
                          all(b[1] is not None and a[1] is not None and b[1] >= a[1]
                              for a, b in zip(seen, seen[1:])), seen)
                env.check("the sidecar never logged its filter gone",
                          "is gone" not in q.log_text(), q.log_tail(20))
            finally:
                q.stop()
        env.case("the live pod's sidecar while gc looks", sidecar)

        def planted():
            # A pod's own user (65532 owns its directory after --pin-owner)
            # replaces two pins with symlinks, to the bpffs root and to
            # another pod's pin, and opens its directory to everyone. gc
            # runs as root: it must not chown through the links, and must
            # not leave the directory writable by all.
            ns_c = pod("c")
            rc, out, err = attach(ns_c, d("qrux-c"))
            env.check("attach qrux-c: exit 0", rc == 0, out + err)
            plant = ("cd %s && rm qx_deny4 qx_keys && ln -s .. qx_deny4 && "
                     "ln -s ../qrux-b/qx_config qx_keys && chmod 0777 ." % d("qrux-c"))
            rc, out, err = sh([need("setpriv"), "--reuid=65532", "--regid=65532",
                               "--clear-groups", "sh", "-c", plant])
            env.eq("uid 65532 plants two symlinks in its own directory", rc, 0, out + err)
            root_owner = os.stat(root).st_uid
            before_b = owners(d("qrux-b"))
            rc, out, err = gc(root)
            env.check("gc over the planted directory: exit 0", rc == 0, out + err)
            env.eq("the bpffs root is still root's (no chown through qx_deny4 -> ..)",
                   (root_owner, os.stat(root).st_uid), (0, 0))
            env.eq("pod b's pins keep their owners (no chown through qx_keys)",
                   owners(d("qrux-b")), before_b)
            env.check("qrux-c is kept and named: its symlinks are not qrux's pins",
                      "kept %s: holds qx_" % d("qrux-c") in out and
                      "which qrux does not pin" in out, out)
            st = os.stat(d("qrux-c"))
            env.eq("qrux-c given back to 65532, but 0700 again", (st.st_uid, oct(st.st_mode & 0o777)),
                   (65532, "0o700"))
            env.eq("the symlinks are still the pod's own", os.lstat(d("qrux-c/qx_deny4")).st_uid,
                   65532)
        env.case("a pod plants symlinks in its directory", planted)

        # The live pod, last. attach without --pin-owner cannot lock (enter)
        # the directory gc gave back to 65532, and says why.
        rc, out, err = sh(["ip", "netns", "exec", ns_b] +
                          capped(ATTACH_CAPS, [qrux_bin(), "xdp", "attach", "--iface", "eth0",
                                               "--quic-port", str(PORT), "--pin", d("qrux-b")]))
        env.check("pod b: attach without --pin-owner: exit 1, names the owner",
                  rc == 1 and "belongs to uid 65532 from an earlier --pin-owner: pass "
                  "--pin-owner again" in err, out + err)
        # detach still works over what gc left.
        rc, out, err = sh(["ip", "netns", "exec", ns_b] +
                          capped(ATTACH_CAPS, [qrux_bin(), "xdp", "detach", "--pin",
                                               d("qrux-b")]))
        env.check("pod b: detach after all this: exit 0, pins gone",
                  rc == 0 and not os.path.exists(d("qrux-b")), out + err)
        cleanup()


if __name__ == "__main__":
    main()
