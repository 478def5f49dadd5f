/*
 * xdp.c - `qrux xdp attach|detach|status|gc` (see xdp.h).
 *
 * Pin layout under DIR (default /sys/fs/bpf/qrux):
 *   DIR/link         the bpf_link that holds the program on the interface
 *   DIR/qx_config    ports, Initial rate and burst
 *   DIR/qx_keys      the proxy's CID keys (current and previous)
 *   DIR/qx_buckets   the Initial token buckets per source
 *   DIR/qx_deny4, DIR/qx_deny6   the deny list
 *   DIR/qx_counters  per-CPU packet counters by reason
 *
 * attach is idempotent: the maps are reused (libbpf opens the pinned ones,
 * so counters, keys and the deny list survive) and a pinned link on the
 * same interface and mode gets the new program with bpf_link_update, an
 * atomic swap. It never stacks a second program.
 *
 * gc removes the pin directories of pods that are gone (their link dead),
 * under a root where each pod has its own DIR (ROOT/qrux-<pod uid>); attach
 * and gc lock DIR (lock_dir) so gc never takes an attach's pins.
 */
#include "xdp/xdp.h"
#include "base/qx.h"
#include "bpf/xdp_quic_consts.h"
#include "xdp/xdp_maps.h"
#include "xdp_quic.skel.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/ethtool.h>
#include <linux/if_link.h>
#include <linux/magic.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#ifndef CAP_PERFMON
#define CAP_PERFMON 38
#endif
#ifndef CAP_BPF
#define CAP_BPF 39
#endif

typedef enum { MODE_AUTO, MODE_NATIVE, MODE_GENERIC } xdp_mode_t;

typedef struct xdp_args {
    const char *iface;
    const char *pin;
    uint16_t ports[QX_XDP_MAX_PORTS];
    unsigned nports;
    uint32_t rate, burst;
    xdp_mode_t mode;
    long owner_uid, owner_gid; /* --pin-owner, -1: leave root's */
    const char *root;          /* gc --root */
    int dry_run;               /* gc --dry-run */
    uint32_t every;            /* gc --every, 0: one pass */
} xdp_args_t;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: qrux xdp attach --iface IFACE --quic-port PORT[,PORT...] [--pin DIR]\n"
            "                       [--rate N --burst N] [--mode native|generic|auto]\n"
            "                       [--pin-owner UID[:GID]]\n"
            "       qrux xdp detach [--pin DIR]\n"
            "       qrux xdp status [--pin DIR]\n"
            "       qrux xdp gc --root DIR [--dry-run] [--every SECS]\n"
            "\n"
            "Loads qrux's QUIC-aware XDP filter and pins its maps and link under DIR\n"
            "(default " QX_XDP_DEFAULT_PIN ", a bpffs). --rate/--burst: Initial packets\n"
            "per second per source (IPv6 per /64) and burst, default %d and %d; 0 = no limit.\n"
            "--mode auto (default): generic on veth (native XDP on a veth takes GSO/TSO\n"
            "away from its peer and caps the MTU, which slows the TCP fallback), else\n"
            "native when the driver supports it, else generic.\n"
            "--pin-owner: hand DIR and its pins to the proxy's user (it opens them by path).\n"
            "attach needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (and CAP_CHOWN for\n"
            "--pin-owner), and write access to DIR.\n"
            "\n"
            "gc: for each DIR/qrux-* directory (a pod's pin directory) whose pinned link\n"
            "is dead (its interface, the pod's network namespace, is gone) or that holds\n"
            "qrux's maps without a link, removes the pins and the directory, one line\n"
            "each and a total. A live link, an attach in progress and anything qrux does\n"
            "not pin are left alone. --every: a pass every SECS seconds until SIGTERM.\n"
            "Needs uid 0 (which owns the bpffs), CAP_BPF and CAP_CHOWN.\n",
            QX_XDP_DEFAULT_RATE, QX_XDP_DEFAULT_BURST);
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("qrux xdp: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* libbpf's own messages only when something fails: warnings go to stderr. */
__attribute__((format(printf, 2, 0))) static int libbpf_print(enum libbpf_print_level level,
                                                              const char *fmt, va_list ap)
{
    if (level != LIBBPF_WARN)
        return 0;
    return vfprintf(stderr, fmt, ap);
}

/* ---- checks before anything is touched --------------------------------- */

/* 0 when the effective set holds CAP_NET_ADMIN, CAP_BPF and CAP_PERFMON
 * (or CAP_SYS_ADMIN, which covers both and which kernels before 5.8 need
 * instead); else names the missing ones. CAP_PERFMON because the verifier
 * refuses pointer arithmetic with a variable offset on packet pointers
 * (the IPv4 header length, the QUIC DCID length) to a loader without it
 * (Spectre v1 hardening): "pointer arithmetic with it prohibited for !root". */
static int check_caps(void)
{
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct d[2];
    char missing[64] = "";
    memset(d, 0, sizeof(d));
    if (syscall(SYS_capget, &h, d) == -1)
        return 0; /* cannot tell: let the kernel decide */
#define HAS(c) ((d[(c) / 32].effective >> ((c) % 32)) & 1)
    int sys = HAS(CAP_SYS_ADMIN), net = HAS(CAP_NET_ADMIN), bpf = HAS(CAP_BPF) || sys,
        perfmon = HAS(CAP_PERFMON) || sys;
#undef HAS
    if (net && bpf && perfmon)
        return 0;
    snprintf(missing, sizeof(missing), "%s%s%s%s%s", bpf ? "" : "CAP_BPF",
             !bpf && (!perfmon || !net) ? ", " : "", perfmon ? "" : "CAP_PERFMON",
             !perfmon && !net ? ", " : "", net ? "" : "CAP_NET_ADMIN");
    fail("missing capabilities: %s (attach needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN; "
         "in a pod: securityContext.capabilities.add [BPF, PERFMON, NET_ADMIN])",
         missing);
    return -1;
}

/* The pin directory must be on a bpffs: checks DIR, or its parent when
 * DIR does not exist yet. */
static int check_bpffs(const char *pin)
{
    struct statfs st;
    char parent[PATH_MAX];
    const char *where = pin;

    if (statfs(pin, &st) == -1) {
        snprintf(parent, sizeof(parent), "%s", pin);
        char *slash = strrchr(parent, '/');
        if (slash == NULL || slash == parent)
            snprintf(parent, sizeof(parent), "/");
        else
            *slash = '\0';
        where = parent;
        if (statfs(parent, &st) == -1) {
            fail("pin directory %s: %s (is bpffs mounted? mount -t bpf bpf /sys/fs/bpf)", parent,
                 strerror(errno));
            return -1;
        }
    }
    if (st.f_type != BPF_FS_MAGIC) {
        fail("%s is not on a bpf filesystem: mount one (mount -t bpf bpf /sys/fs/bpf; in a pod, "
             "a hostPath volume of /sys/fs/bpf) or choose --pin on one",
             where);
        return -1;
    }
    return 0;
}

static unsigned iface_index(const char *iface)
{
    unsigned idx = if_nametoindex(iface);
    if (idx == 0)
        fail("no interface '%s' in this network namespace (ip link lists them)", iface);
    return idx;
}

/* The driver name of |iface| ("veth", "mlx5_core"...), or "" when unknown. */
static void iface_driver(const char *iface, char *drv, size_t len)
{
    struct ethtool_drvinfo info = {.cmd = ETHTOOL_GDRVINFO};
    struct ifreq ifr;
    drv[0] = '\0';
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", iface);
    ifr.ifr_data = (void *)&info;
    if (ioctl(fd, SIOCETHTOOL, &ifr) == 0)
        snprintf(drv, len, "%s", info.driver);
    close(fd);
}

/* DIR/NAME in |buf|; "" (which every call on it refuses) when too long. */
static void pin_path(char *buf, size_t len, const char *pin, const char *name)
{
    int n = snprintf(buf, len, "%s/%s", pin, name);
    if (n < 0 || (size_t)n >= len)
        buf[0] = '\0';
}

/* ---- attach ------------------------------------------------------------ */

static const char *mode_name(int attach_mode)
{
    switch (attach_mode) {
    case XDP_ATTACHED_DRV:
        return "native";
    case XDP_ATTACHED_SKB:
        return "generic";
    case XDP_ATTACHED_HW:
        return "offload";
    case XDP_ATTACHED_MULTI:
        return "multi";
    default:
        return "none";
    }
}

/* Creates the link in |flags| mode; returns its fd or -errno. */
static int link_create(int prog_fd, unsigned ifindex, unsigned flags)
{
    LIBBPF_OPTS(bpf_link_create_opts, o, .flags = flags);
    int fd = bpf_link_create(prog_fd, (int)ifindex, BPF_XDP, &o);
    return fd >= 0 ? fd : -errno;
}

/* The pinned link: its fd (or -1 when none) and the interface it holds. */
static int pinned_link(const char *pin, unsigned *ifindex, unsigned *prog_id)
{
    char path[PATH_MAX];
    struct bpf_link_info info;
    uint32_t len = sizeof(info);

    pin_path(path, sizeof(path), pin, QX_XDP_PIN_LINK);
    int fd = bpf_obj_get(path);
    if (fd < 0)
        return -1;
    memset(&info, 0, sizeof(info));
    if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0 || info.type != BPF_LINK_TYPE_XDP) {
        close(fd);
        return -1;
    }
    *ifindex = info.xdp.ifindex;
    *prog_id = info.prog_id;
    return fd;
}

/* 1 when the XDP program on interface |ifindex| of this network namespace
 * is |prog|, the one a pinned link holds. A link only records an ifindex,
 * and every pod numbers its interfaces from 1: a pin directory shared by
 * two pods on a node (one bpffs) holds a link whose ifindex also exists
 * here, on another interface. */
static int link_is_here(unsigned ifindex, unsigned prog)
{
    LIBBPF_OPTS(bpf_xdp_query_opts, q);
    return bpf_xdp_query((int)ifindex, 0, &q) == 0 && q.prog_id == prog;
}

/* Refuses (message, -1) a live link pinned under |pin| that holds an
 * interface of another network namespace: replacing or removing it would
 * change another pod's filter. 0 when there is no link, a dead one
 * (its interface gone) or one of ours. */
static int check_link_here(const char *pin)
{
    unsigned ifindex = 0, prog = 0;
    int fd = pinned_link(pin, &ifindex, &prog);
    if (fd < 0)
        return 0;
    close(fd);
    if (ifindex == 0 || link_is_here(ifindex, prog))
        return 0;
    fail("%s/%s holds prog id %u on an interface of another network namespace (ifindex %u "
         "there): another pod's pins? Give each pod its own pin directory (--pin), or detach "
         "it from that namespace",
         pin, QX_XDP_PIN_LINK, prog, ifindex);
    return -1;
}

/* Detaches and unpins the link (the maps stay). */
static void drop_link(const char *pin, int fd)
{
    char path[PATH_MAX];
    if (fd >= 0) {
        bpf_link_detach(fd);
        close(fd);
    }
    pin_path(path, sizeof(path), pin, QX_XDP_PIN_LINK);
    unlink(path);
}

/* Every pin, the link first. */
static const char *const pin_names[] = {QX_XDP_PIN_LINK,    QX_XDP_MAP_CONFIG, QX_XDP_MAP_KEYS,
                                        QX_XDP_MAP_BUCKETS, QX_XDP_MAP_DENY4,  QX_XDP_MAP_DENY6,
                                        QX_XDP_MAP_COUNTERS};

/* --pin-owner: the proxy, when it runs as another user, opens the pins by
 * path; bpffs checks the file modes like any file system. The pins first,
 * the directory last: once DIR (mode 0700) is the proxy's, a loader
 * without CAP_DAC_OVERRIDE can no longer reach into it. The token buckets
 * stay root's: the proxy never opens them. */
static int give_pins(const xdp_args_t *a)
{
    char path[PATH_MAX];
    uid_t uid = (uid_t)a->owner_uid;
    gid_t gid = a->owner_gid >= 0 ? (gid_t)a->owner_gid : (gid_t)-1;

    for (size_t i = 0; i < QX_ARRAY_LEN(pin_names); i++) {
        if (strcmp(pin_names[i], QX_XDP_MAP_BUCKETS) == 0)
            continue;
        pin_path(path, sizeof(path), a->pin, pin_names[i]);
        if (lchown(path, uid, gid) == -1) { /* never through a link planted there */
            fail("--pin-owner: chown %s: %s", path, strerror(errno));
            return -1;
        }
    }
    if (lchown(a->pin, uid, gid) == -1) {
        fail("--pin-owner: chown %s: %s", a->pin, strerror(errno));
        return -1;
    }
    return 0;
}

/* Owners of a pin directory and its pins as found: gc gives back what it
 * took from a directory it leaves. */
typedef struct owner {
    uid_t uid;
    gid_t gid;
    int taken; /* 1: take_back() chowned it */
} owner_t;

#define NPINS QX_ARRAY_LEN(pin_names)

/* Makes |path| the caller's with CAP_CHOWN when it is another user's;
 * records in |was| whose it was. Only a directory (|dir|) or a regular
 * file (a pin) is taken, and never through a symlink: the proxy's user
 * owns DIR after --pin-owner and may plant anything in it (a link to
 * another pod's pin, to the bpffs root), which the loader and gc then
 * judge as not qrux's. A directory taken back is made 0700 again (its
 * owner could have opened it to everyone). 0 (also when |path| does not
 * exist or is not taken) or -1 with a message. */
static int take_back(const char *path, owner_t *was, int dir)
{
    struct stat st;
    uid_t uid = geteuid();
    gid_t gid = getegid();

    was->taken = 0;
    if (lstat(path, &st) == -1)
        return 0; /* nothing there (or not reachable: the caller says so) */
    if (dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode))
        return 0;
    was->uid = st.st_uid;
    was->gid = st.st_gid;
    if (st.st_uid == uid)
        return 0;
    if (lchown(path, uid, gid) == -1) {
        fail("%s belongs to uid %u (an earlier --pin-owner); taking it back needs CAP_CHOWN: "
             "%s",
             path, (unsigned)st.st_uid, strerror(errno));
        return -1;
    }
    was->taken = 1;
    if (dir && chmod(path, 0700) == -1) {
        fail("chmod 0700 %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* The reverse of give_pins, before a re-attach, a detach or gc reads the
 * pins: after an earlier --pin-owner, DIR and the pins belong to the
 * proxy's user, and a loader that runs as root with only the capabilities
 * it needs (no CAP_DAC_OVERRIDE) could neither enter DIR nor open a pin.
 * Takes them back with CAP_CHOWN, DIR first; attach --pin-owner gives them
 * away again at the end, gc gives them back (give_back) when it keeps
 * DIR. |was| (NULL, or 1 + NPINS entries: DIR, then pin_names) records
 * whose they were. Returns 0 (also when there is nothing to take back) or
 * -1 with a message. */
static int reclaim_pins(const char *pin, owner_t *was)
{
    char path[PATH_MAX];
    owner_t none[1 + NPINS];

    if (was == NULL)
        was = none;
    memset(was, 0, sizeof(none));
    if (take_back(pin, &was[0], 1) != 0)
        return -1;
    for (size_t i = 0; i < NPINS; i++) {
        pin_path(path, sizeof(path), pin, pin_names[i]);
        if (take_back(path, &was[1 + i], 0) != 0)
            return -1;
    }
    return 0;
}

/* Locks the pin directory (flock, which the kernel keeps on the inode, so
 * it holds across the bind mounts and mount namespaces of pods and the gc
 * DaemonSet). attach holds it from before it opens the pins to the end,
 * gc while it judges and removes a directory: gc never takes the maps of
 * an attach in progress (pinned, the link not yet) nor the link it has
 * just made. Returns the fd (closing it unlocks) or -1 with errno,
 * EWOULDBLOCK when |wait| is 0 and someone holds the lock. */
static int lock_dir(const char *dir, int wait)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd == -1)
        return -1;
    if (flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) == -1) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static int cmd_attach(const xdp_args_t *a)
{
    char path[PATH_MAX], drv[64];
    struct xdp_quic *skel = NULL;
    int rv = 1, link_fd = -1, lock = -1;
    unsigned ifindex, old_ifindex = 0, old_prog = 0;
    const char *why;

    if (check_caps() != 0)
        return 1;
    if ((ifindex = iface_index(a->iface)) == 0)
        return 1;
    if (check_bpffs(a->pin) != 0)
        return 1;
    if (mkdir(a->pin, 0700) == -1 && errno != EEXIST) {
        fail("cannot create %s: %s", a->pin, strerror(errno));
        return 1;
    }
    if (a->owner_uid >= 0 && reclaim_pins(a->pin, NULL) != 0)
        return 1;
    if ((lock = lock_dir(a->pin, 1)) == -1) {
        struct stat st;
        if (errno == EACCES && stat(a->pin, &st) == 0 && st.st_uid != geteuid())
            fail("%s belongs to uid %u from an earlier --pin-owner: pass --pin-owner again", a->pin,
                 (unsigned)st.st_uid);
        else
            fail("cannot lock %s: %s", a->pin, strerror(errno));
        return 1;
    }
    struct stat dst;
    if (fstat(lock, &dst) == 0 && dst.st_nlink == 0) {
        /* The kubelet's bind mount of a directory gc removed (its link was
         * dead: a pod sandbox being recreated). Exit; the next start of
         * the init container gets a fresh directory. */
        fail("%s was removed (qrux xdp gc: its link was dead) before this attach; run it again",
             a->pin);
        goto out;
    }
    /* Again, under the lock: a gc that ran meanwhile gave them back. */
    if (a->owner_uid >= 0 && reclaim_pins(a->pin, NULL) != 0)
        goto out;
    if (check_link_here(a->pin) != 0)
        goto out; /* before the maps are opened: they are the other pod's too */

    skel = xdp_quic__open();
    if (skel == NULL) {
        fail("cannot open the embedded program: %s", strerror(errno));
        goto out;
    }
    struct bpf_map *map;
    bpf_object__for_each_map(map, skel->obj)
    {
        pin_path(path, sizeof(path), a->pin, bpf_map__name(map));
        if (bpf_map__set_pin_path(map, path) != 0) {
            fail("pin path %s: %s", path, strerror(errno));
            goto out;
        }
    }
    if (xdp_quic__load(skel) != 0) {
        int e = errno;
        struct stat st;
        if (e == EACCES && stat(a->pin, &st) == 0 && st.st_uid != geteuid())
            fail("loading the program: %s (%s belongs to uid %u from an earlier --pin-owner: "
                 "pass --pin-owner again)",
                 strerror(e), a->pin, (unsigned)st.st_uid);
        else if (e == EPERM || e == EACCES)
            fail("loading the program: %s (needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, and "
                 "read and write access to the pins under %s)",
                 strerror(e), a->pin);
        else
            fail("loading the program: %s (maps pinned under %s by another version? run "
                 "`qrux xdp detach --pin %s` first)",
                 strerror(e), a->pin, a->pin);
        goto out;
    }

    struct qx_xdp_config cfg = {.nports = a->nports, .rate = a->rate, .burst = a->burst};
    memcpy(cfg.ports, a->ports, sizeof(cfg.ports));
    uint32_t zero = 0;
    if (bpf_map_update_elem(bpf_map__fd(skel->maps.qx_config), &zero, &cfg, BPF_ANY) != 0) {
        fail("writing the config map: %s", strerror(errno));
        goto out;
    }

    /* Which mode. */
    unsigned flags;
    iface_driver(a->iface, drv, sizeof(drv));
    if (a->mode == MODE_NATIVE) {
        flags = XDP_FLAGS_DRV_MODE;
        why = "asked for";
    } else if (a->mode == MODE_GENERIC) {
        flags = XDP_FLAGS_SKB_MODE;
        why = "asked for";
    } else if (strcmp(drv, "veth") == 0) {
        flags = XDP_FLAGS_SKB_MODE;
        why = "auto: veth, where native XDP would take GSO/TSO from the peer";
    } else {
        flags = XDP_FLAGS_DRV_MODE;
        why = "auto: the driver supports it";
    }

    int prog_fd = bpf_program__fd(skel->progs.qx_xdp_quic);
    int old = pinned_link(a->pin, &old_ifindex, &old_prog);
    if (old >= 0) {
        LIBBPF_OPTS(bpf_xdp_query_opts, q);
        int same_mode = bpf_xdp_query((int)ifindex, 0, &q) == 0 &&
                        ((flags == XDP_FLAGS_SKB_MODE && q.attach_mode == XDP_ATTACHED_SKB) ||
                         (flags == XDP_FLAGS_DRV_MODE && q.attach_mode == XDP_ATTACHED_DRV));
        if (old_ifindex == ifindex && same_mode && bpf_link_update(old, prog_fd, NULL) == 0) {
            link_fd = old;
            printf("replaced the program on %s (was prog id %u)\n", a->iface, old_prog);
        } else {
            /* Another interface, another mode, or a link whose interface is
             * gone: take it away before attaching anew. */
            drop_link(a->pin, old);
        }
    }
    if (link_fd < 0) {
        link_fd = link_create(prog_fd, ifindex, flags);
        if (link_fd < 0 && a->mode == MODE_AUTO && flags == XDP_FLAGS_DRV_MODE &&
            (link_fd == -EOPNOTSUPP || link_fd == -EINVAL)) {
            flags = XDP_FLAGS_SKB_MODE;
            why = "auto: the driver has no native XDP";
            link_fd = link_create(prog_fd, ifindex, flags);
        }
        if (link_fd == -EBUSY || link_fd == -EEXIST) {
            __u32 id = 0;
            bpf_xdp_query_id((int)ifindex, 0, &id);
            fail("%s already has an XDP program (id %u) that qrux did not pin under %s; "
                 "remove it first (ip link set dev %s xdp off)",
                 a->iface, id, a->pin, a->iface);
            goto out;
        }
        if (link_fd < 0) {
            fail("attaching to %s in %s mode: %s", a->iface,
                 flags == XDP_FLAGS_SKB_MODE ? "generic" : "native", strerror(-link_fd));
            goto out;
        }
        pin_path(path, sizeof(path), a->pin, QX_XDP_PIN_LINK);
        if (bpf_obj_pin(link_fd, path) != 0) {
            fail("pinning the link at %s: %s", path, strerror(errno));
            bpf_link_detach(link_fd);
            goto out;
        }
    }
    if (a->owner_uid >= 0 && give_pins(a) != 0)
        goto out;
    struct bpf_prog_info pinfo;
    uint32_t plen = sizeof(pinfo);
    memset(&pinfo, 0, sizeof(pinfo));
    bpf_obj_get_info_by_fd(prog_fd, &pinfo, &plen);
    printf("attached to %s (driver %s) in %s mode (%s): prog id %u, QUIC ports", a->iface,
           drv[0] ? drv : "?", flags == XDP_FLAGS_SKB_MODE ? "generic" : "native", why, pinfo.id);
    for (unsigned i = 0; i < a->nports; i++)
        printf("%s%u", i ? "," : " ", a->ports[i]);
    printf(", Initial rate %u/s burst %u; maps and link pinned under %s\n", a->rate, a->burst,
           a->pin);
    rv = 0;
out:
    if (link_fd >= 0)
        close(link_fd);
    xdp_quic__destroy(skel); /* the pins keep maps, link and program alive */
    if (lock >= 0)
        close(lock);
    return rv;
}

/* ---- detach, status ---------------------------------------------------- */

static int cmd_detach(const char *pin)
{
    char path[PATH_MAX];
    unsigned ifindex = 0, prog = 0;
    int found = 0;

    if (reclaim_pins(pin, NULL) != 0 || check_link_here(pin) != 0)
        return 1;
    int fd = pinned_link(pin, &ifindex, &prog);
    pin_path(path, sizeof(path), pin, QX_XDP_PIN_LINK);
    if (fd >= 0 || access(path, F_OK) == 0) {
        if (fd >= 0 && bpf_link_detach(fd) != 0 && errno != ENOLINK && errno != EINVAL) {
            fail("detaching %s: %s", path, strerror(errno));
            close(fd);
            return 1;
        }
        if (fd >= 0)
            close(fd);
        if (unlink(path) == -1) {
            fail("removing %s: %s", path, strerror(errno));
            return 1;
        }
        found = 1;
    }
    for (size_t i = 1; i < QX_ARRAY_LEN(pin_names); i++) { /* the maps: the link is done */
        pin_path(path, sizeof(path), pin, pin_names[i]);
        if (unlink(path) == 0)
            found = 1;
        else if (errno != ENOENT) {
            fail("removing %s: %s", path, strerror(errno));
            return 1;
        }
    }
    rmdir(pin); /* only when empty: never someone else's pins */
    if (found)
        printf("detached; pins under %s removed\n", pin);
    else
        printf("nothing pinned under %s\n", pin);
    return 0;
}

static int cmd_status(const char *pin)
{
    char name[IF_NAMESIZE] = "?";
    unsigned ifindex = 0, prog = 0;
    qx_xdp_maps_t m;
    char err[256];

    int fd = pinned_link(pin, &ifindex, &prog);
    if (fd < 0 || ifindex == 0) {
        printf("not attached (no live link pinned at %s/%s)\n", pin, QX_XDP_PIN_LINK);
        if (fd >= 0)
            close(fd);
        return 3;
    }
    close(fd);
    if (!link_is_here(ifindex, prog)) {
        printf("attached in another network namespace: ifindex %u there, prog id %u\n", ifindex,
               prog);
        return 0;
    }
    if_indextoname(ifindex, name);
    LIBBPF_OPTS(bpf_xdp_query_opts, q);
    bpf_xdp_query((int)ifindex, 0, &q);
    printf("attached: interface %s (ifindex %u), mode %s, prog id %u\n", name, ifindex,
           mode_name(q.attach_mode), prog);
    if (qx_xdp_maps_open(&m, pin, err, sizeof(err)) != 0) {
        printf("maps: not readable under %s%s%s\n", pin, err[0] ? ": " : "", err);
        return 0;
    }
    struct qx_xdp_config cfg;
    uint32_t zero = 0;
    if (bpf_map_lookup_elem(m.config, &zero, &cfg) == 0) {
        printf("QUIC ports:");
        for (unsigned i = 0; i < cfg.nports && i < QX_XDP_MAX_PORTS; i++)
            printf(" %u", cfg.ports[i]);
        printf("; Initial rate %u/s, burst %u\n", cfg.rate, cfg.burst);
    }
    printf("CID keys:");
    int any = 0;
    for (uint32_t slot = 0; slot < 2; slot++) {
        struct qx_xdp_cid_key k;
        if (bpf_map_lookup_elem(m.keys, &slot, &k) == 0 && k.valid) {
            printf(" generation %u", k.gen);
            any = 1;
        }
    }
    printf("%s\n", any ? "" : " none (no proxy has shared one: short headers pass unchecked)");
    json_t *deny = qx_xdp_deny_get(&m);
    printf("deny list: %zu prefixes\n", json_array_size(deny));
    json_decref(deny);
    uint64_t c[QX_XDP_NREASONS];
    qx_xdp_maps_counters(&m, c);
    printf("packets:\n");
    for (int r = 0; r < QX_XDP_NREASONS; r++)
        printf("  %-5s %-18s %llu\n", r >= QX_XDP_FIRST_DROP ? "drop" : "pass",
               qx_xdp_reason_name(r), (unsigned long long)c[r]);
    qx_xdp_maps_free(&m);
    return 0;
}

/* ---- gc ---------------------------------------------------------------- */

/* The value of |key| ("memlock", "map_type", "link_type"...) in the
 * kernel's description of bpf fd |fd| (/proc/self/fdinfo), or "" when
 * absent. */
static void fd_info(int fd, const char *key, char *val, size_t len)
{
    char path[64], line[256];
    size_t klen = strlen(key);
    val[0] = '\0';
    snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            const char *v = line + klen + 1;
            v += strspn(v, " \t");
            snprintf(val, len, "%.*s", (int)strcspn(v, "\n"), v);
            break;
        }
    }
    fclose(f);
}

typedef struct gc_tally {
    unsigned removed, live, busy, other, failed;
    unsigned long long memlock; /* bytes of the maps removed */
} gc_tally_t;

/* What a directory under the gc root holds: its link (-1 none, else the
 * interface index it holds, 0 when that is gone) and its maps. */
typedef struct gc_dir {
    long ifindex;
    unsigned prog, nmaps;
    unsigned long long memlock;
    unsigned ids[NPINS]; /* the maps' ids, for the report */
    char foreign[300];   /* why it is not qrux's, "" when it is */
} gc_dir_t;

/* Reads what |dir| holds into |g|: every entry must be one of qrux's pins
 * (pin_names) and be what qrux pins there (an XDP bpf_link, a map of that
 * name), else g->foreign says which is not. The pins are the caller's
 * (reclaim_pins). */
static void gc_read(const char *dir, gc_dir_t *g)
{
    char path[PATH_MAX], val[64];
    memset(g, 0, sizeof(*g));
    g->ifindex = -1;

    DIR *d = opendir(dir);
    if (d == NULL) {
        snprintf(g->foreign, sizeof(g->foreign), "cannot read it: %s", strerror(errno));
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL && g->foreign[0] == '\0') {
        size_t i;
        struct stat st;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        for (i = 0; i < NPINS && strcmp(e->d_name, pin_names[i]) != 0; i++)
            ;
        if (i < NPINS)
            pin_path(path, sizeof(path), dir, pin_names[i]);
        if (i == NPINS || lstat(path, &st) == -1 || !S_ISREG(st.st_mode)) {
            snprintf(g->foreign, sizeof(g->foreign), "holds %s, which qrux does not pin",
                     e->d_name);
            break;
        }
        int fd = bpf_obj_get(path);
        if (fd < 0) {
            snprintf(g->foreign, sizeof(g->foreign), "cannot open %s: %s", e->d_name,
                     strerror(errno));
            break;
        }
        if (i == 0) { /* the link */
            struct bpf_link_info info;
            uint32_t ilen = sizeof(info);
            memset(&info, 0, sizeof(info));
            fd_info(fd, "link_type", val, sizeof(val));
            if (strcmp(val, "xdp") != 0 || bpf_obj_get_info_by_fd(fd, &info, &ilen) != 0)
                snprintf(g->foreign, sizeof(g->foreign), "%s is not an XDP link", e->d_name);
            else {
                g->ifindex = info.xdp.ifindex;
                g->prog = info.prog_id;
            }
        } else {
            struct bpf_map_info info;
            uint32_t ilen = sizeof(info);
            memset(&info, 0, sizeof(info));
            fd_info(fd, "map_type", val, sizeof(val));
            if (val[0] == '\0' || bpf_obj_get_info_by_fd(fd, &info, &ilen) != 0 ||
                strcmp(info.name, e->d_name) != 0) {
                snprintf(g->foreign, sizeof(g->foreign), "%s is not qrux's map", e->d_name);
            } else {
                fd_info(fd, "memlock", val, sizeof(val));
                g->memlock += strtoull(val, NULL, 10);
                g->ids[g->nmaps++] = info.id; /* one entry per name: at most NPINS - 1 */
            }
        }
        close(fd);
    }
    closedir(d);
}

/* Removes the pins of |dir| (the link first: it holds the program, which
 * holds the maps) and the directory. 0 or -1 with a message. */
static int gc_remove(const char *dir)
{
    char path[PATH_MAX];
    for (size_t i = 0; i < NPINS; i++) {
        pin_path(path, sizeof(path), dir, pin_names[i]);
        if (unlink(path) == -1 && errno != ENOENT) {
            fail("removing %s: %s", path, strerror(errno));
            return -1;
        }
    }
    if (rmdir(dir) == -1) {
        fail("removing %s: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_ids(const void *a, const void *b)
{
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    return x < y ? -1 : x > y;
}

/* One directory ROOT/qrux-*: removed when its link is dead or it holds
 * qrux's maps without a link; else left as it was, its owners given back. */
#define GC_LOCK_WAIT_MS 3000

static void gc_one(const char *root, const char *name, int dry, gc_tally_t *t)
{
    char dir[PATH_MAX], path[PATH_MAX];
    owner_t was[1 + NPINS];
    struct stat st;
    gc_dir_t g;
    const char *why = NULL;
    int lock = -1, gone = 0;

    snprintf(dir, sizeof(dir), "%s/%s", root, name);
    memset(was, 0, sizeof(was));
    if (lstat(dir, &st) == -1 || !S_ISDIR(st.st_mode))
        return; /* not a directory (a symlink, a pin): nothing qrux made */
    /* DIR only, to open and lock it (0700, the proxy's after --pin-owner);
     * the pins under the lock. */
    if (take_back(dir, &was[0], 1) != 0) {
        t->failed++;
        goto give_back;
    }
    /* An attach (or another gc) holding the lock is done within a moment:
     * waiting for it, rather than giving DIR back at once, keeps the two
     * from pulling DIR from under each other. After GC_LOCK_WAIT_MS the
     * directory is counted in use and left as it was found. */
    for (int waited = 0; (lock = lock_dir(dir, 0)) == -1 && errno == EWOULDBLOCK &&
                         waited < GC_LOCK_WAIT_MS;
         waited += 50)
        usleep(50 * 1000);
    if (lock == -1) {
        if (errno == EWOULDBLOCK) {
            t->busy++; /* an attach in progress: its directory */
        } else {
            fail("cannot lock %s: %s", dir, strerror(errno));
            t->failed++;
        }
        goto give_back;
    }
    /* Under the lock: an attach that held it may have given DIR away
     * again; whose each was is what this reclaim finds, where it took. */
    owner_t now[1 + NPINS];
    int rv = reclaim_pins(dir, now);
    for (size_t i = 0; i < 1 + NPINS; i++) {
        if (now[i].taken)
            was[i] = now[i];
    }
    if (rv != 0) {
        t->failed++;
        goto give_back;
    }
    gc_read(dir, &g);
    if (g.foreign[0] != '\0') {
        printf("kept %s: %s\n", dir, g.foreign);
        t->other++;
    } else if (g.ifindex > 0) {
        t->live++;
    } else if (g.ifindex == 0) {
        why = "its link's interface is gone";
    } else if (g.nmaps > 0) {
        why = "maps without a link";
    } else {
        t->other++; /* empty: a pod whose loader has not run yet */
    }
    if (why == NULL)
        goto give_back;
    if (!dry && gc_remove(dir) != 0) {
        t->failed++;
        goto give_back;
    }
    gone = !dry;
    t->removed++;
    t->memlock += g.memlock;
    printf("%s %s: %s", dry ? "would remove" : "removed", dir, why);
    if (g.ifindex == 0)
        printf(" (prog id %u)", g.prog);
    qsort(g.ids, g.nmaps, sizeof(g.ids[0]), cmp_ids);
    printf("; %u maps (ids", g.nmaps);
    for (unsigned i = 0; i < g.nmaps; i++)
        printf(" %u", g.ids[i]);
    printf("), %llu KiB locked\n", g.memlock / 1024);
give_back:
    /* The pins first, DIR last: once DIR is another user's, we cannot
     * reach into it. */
    for (size_t i = 0; !gone && i < NPINS; i++) {
        pin_path(path, sizeof(path), dir, pin_names[i]);
        if (was[1 + i].taken && lchown(path, was[1 + i].uid, was[1 + i].gid) == -1 &&
            errno != ENOENT) /* a removal that failed half way */
            fail("giving %s back to uid %u: %s", path, (unsigned)was[1 + i].uid, strerror(errno));
    }
    if (!gone && was[0].taken && lchown(dir, was[0].uid, was[0].gid) == -1)
        fail("giving %s back to uid %u: %s", dir, (unsigned)was[0].uid, strerror(errno));
    if (lock >= 0)
        close(lock);
}

/* One pass over ROOT. 0, or -1 when something could not be read or
 * removed (said on stderr). */
static int gc_pass(const char *root, int dry)
{
    gc_tally_t t = {0};
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rv = 0;

    DIR *d = opendir(root);
    if (d == NULL) {
        fail("cannot read %s: %s%s", root, strerror(errno),
             errno == EACCES ? " (run gc as uid 0, which owns the bpffs)" : "");
        return -1;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) { /* names first: gc removes entries of ROOT */
        /* A pod's directory: the injector's subPathExpr qrux-$(QRUX_POD_UID)
         * (admin/inject.h, QX_INJECT_BPFFS_SUBPATH): change both together. */
        if (strncmp(e->d_name, "qrux-", 5) != 0)
            continue;
        if (n == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            char **nn = realloc(names, ncap * sizeof(*names));
            if (nn == NULL)
                break;
            names = nn;
            cap = ncap;
        }
        if ((names[n] = strdup(e->d_name)) == NULL)
            break;
        n++;
    }
    if (e != NULL) {
        fail("out of memory listing %s: this pass looks at %zu directories", root, n);
        t.failed++;
    }
    closedir(d);
    if (n > 0)
        qsort(names, n, sizeof(*names), cmp_names);
    for (size_t i = 0; i < n; i++) {
        gc_one(root, names[i], dry, &t);
        free(names[i]);
    }
    free(names);
    printf("gc %s: %s %u director%s (%llu KiB locked); kept %u with a live link, %u in use by "
           "an attach, %u not qrux's or empty%s\n",
           root, dry ? "would remove" : "removed", t.removed, t.removed == 1 ? "y" : "ies",
           t.memlock / 1024, t.live, t.busy, t.other, t.failed ? "; errors above" : "");
    if (t.failed)
        rv = -1;
    fflush(stdout);
    return rv;
}

static volatile sig_atomic_t gc_stop;

static void gc_signal(int sig)
{
    (void)sig;
    gc_stop = 1;
}

/* 0 when the effective set holds CAP_BPF (or CAP_SYS_ADMIN) and
 * CAP_CHOWN; else names the missing ones. */
static int check_gc_caps(void)
{
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof(d));
    if (syscall(SYS_capget, &h, d) == -1)
        return 0; /* cannot tell: let the kernel decide */
#define HAS(c) ((d[(c) / 32].effective >> ((c) % 32)) & 1)
    int bpf = HAS(CAP_BPF) || HAS(CAP_SYS_ADMIN), chown_ = HAS(CAP_CHOWN);
#undef HAS
    if (bpf && chown_)
        return 0;
    fail("missing capabilities: %s%s%s (gc needs CAP_BPF and CAP_CHOWN, as uid 0; in a pod: "
         "securityContext.capabilities.add [BPF, CHOWN])",
         bpf ? "" : "CAP_BPF", !bpf && !chown_ ? ", " : "", chown_ ? "" : "CAP_CHOWN");
    return -1;
}

static int cmd_gc(const xdp_args_t *a)
{
    struct statfs st;

    if (check_gc_caps() != 0)
        return 1;
    if (statfs(a->root, &st) == -1) {
        fail("--root %s: %s (the node's bpffs: mount -t bpf bpf /sys/fs/bpf; in a pod, a "
             "hostPath volume of /sys/fs/bpf)",
             a->root, strerror(errno));
        return 1;
    }
    if (st.f_type != BPF_FS_MAGIC) {
        fail("--root %s is not a bpf filesystem (mount -t bpf bpf /sys/fs/bpf; in a pod, a "
             "hostPath volume of /sys/fs/bpf)",
             a->root);
        return 1;
    }
    if (a->every == 0)
        return gc_pass(a->root, a->dry_run) == 0 ? 0 : 1;

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = gc_signal; /* no SA_RESTART: the sleep ends */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    while (!gc_stop) {
        gc_pass(a->root, a->dry_run); /* errors are said; the next pass tries again */
        struct timespec ts = {.tv_sec = a->every};
        while (!gc_stop && nanosleep(&ts, &ts) == -1 && errno == EINTR)
            ;
    }
    return 0;
}

/* ---- the command line -------------------------------------------------- */

static int parse_u32(const char *s, uint32_t max, uint32_t *out)
{
    char *e;
    errno = 0;
    unsigned long v = strtoul(s, &e, 10);
    if (s[0] < '0' || s[0] > '9' || *e != '\0' || errno != 0 || v > max)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int parse_ports(const char *s, xdp_args_t *a)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", s);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        uint32_t p;
        if (parse_u32(t, 65535, &p) != 0 || p == 0 || a->nports >= QX_XDP_MAX_PORTS)
            return -1;
        a->ports[a->nports++] = (uint16_t)p;
    }
    return a->nports > 0 ? 0 : -1;
}

int qx_xdp_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"iface", required_argument, NULL, 'i'},
        {"quic-port", required_argument, NULL, 'p'},
        {"pin", required_argument, NULL, 'P'},
        {"rate", required_argument, NULL, 'r'},
        {"burst", required_argument, NULL, 'b'},
        {"mode", required_argument, NULL, 'm'},
        {"pin-owner", required_argument, NULL, 'o'},
        {"root", required_argument, NULL, 'R'},
        {"dry-run", no_argument, NULL, 'n'},
        {"every", required_argument, NULL, 'e'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    xdp_args_t a = {.pin = QX_XDP_DEFAULT_PIN,
                    .rate = QX_XDP_DEFAULT_RATE,
                    .burst = QX_XDP_DEFAULT_BURST,
                    .mode = MODE_AUTO,
                    .owner_uid = -1,
                    .owner_gid = -1};
    int c;

    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    optind = 1;
    while ((c = getopt_long(argc - 1, argv + 1, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'i':
            a.iface = optarg;
            break;
        case 'p':
            if (parse_ports(optarg, &a) != 0) {
                fail("--quic-port: a port 1..65535, or up to %d of them separated by commas",
                     QX_XDP_MAX_PORTS);
                return 2;
            }
            break;
        case 'P':
            a.pin = optarg;
            break;
        case 'r':
        case 'b':
            if (parse_u32(optarg, 1000000, c == 'r' ? &a.rate : &a.burst) != 0) {
                fail("--%s: a number 0..1000000", c == 'r' ? "rate" : "burst");
                return 2;
            }
            break;
        case 'm':
            if (strcmp(optarg, "auto") == 0)
                a.mode = MODE_AUTO;
            else if (strcmp(optarg, "native") == 0)
                a.mode = MODE_NATIVE;
            else if (strcmp(optarg, "generic") == 0)
                a.mode = MODE_GENERIC;
            else {
                fail("--mode: native, generic or auto");
                return 2;
            }
            break;
        case 'o': {
            uint32_t uid, gid;
            char buf[32];
            snprintf(buf, sizeof(buf), "%s", optarg);
            char *colon = strchr(buf, ':');
            if (colon)
                *colon = '\0';
            if (parse_u32(buf, 0x7fffffff, &uid) != 0 ||
                (colon && parse_u32(colon + 1, 0x7fffffff, &gid) != 0)) {
                fail("--pin-owner: a numeric UID or UID:GID, e.g. 65532:65532");
                return 2;
            }
            a.owner_uid = uid;
            a.owner_gid = colon ? (long)gid : -1;
            break;
        }
        case 'R':
            a.root = optarg;
            break;
        case 'n':
            a.dry_run = 1;
            break;
        case 'e':
            if (parse_u32(optarg, 86400, &a.every) != 0 || a.every == 0) {
                fail("--every: seconds between passes, 1..86400");
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    libbpf_set_print(libbpf_print);
    if (strcmp(cmd, "attach") == 0) {
        if (a.iface == NULL || a.nports == 0) {
            fail("attach needs --iface and --quic-port");
            return 2;
        }
        if (a.rate > 0 && a.burst == 0) {
            fail("--burst must be at least 1 when --rate is set");
            return 2;
        }
        return cmd_attach(&a);
    }
    if (strcmp(cmd, "detach") == 0)
        return cmd_detach(a.pin);
    if (strcmp(cmd, "status") == 0)
        return cmd_status(a.pin);
    if (strcmp(cmd, "gc") == 0) {
        if (a.root == NULL) {
            fail("gc needs --root (the node's bpffs, e.g. /sys/fs/bpf)");
            return 2;
        }
        return cmd_gc(&a);
    }
    fail("unknown command '%s' (attach, detach, status or gc)", cmd);
    return 2;
}
