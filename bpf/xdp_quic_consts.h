/*
 * xdp_quic_consts.h - what the XDP program (xdp_quic.bpf.c) and user space
 * (the `qrux xdp` loader, the proxy, the tests) must agree on: the verdict
 * reasons that index the counters and the layout of every map value.
 * Changing one of these changes both sides: keep the names in
 * qx_xdp_reason_name() (user space, below) in step.
 */
#ifndef QX_XDP_QUIC_CONSTS_H
#define QX_XDP_QUIC_CONSTS_H

#include <linux/types.h>

#define QX_QUIC_V1 0x00000001u
#define QX_QUIC_V2 0x6b3343cfu
#define QX_QUIC_MAX_CID 20         /* RFC 9000 §17.2 */
#define QX_QUIC_MIN_INITIAL_DCID 8 /* RFC 9000 §7.2: a client's first DCID */
#define QX_QUIC_MIN_INITIAL 1200   /* RFC 9000 §14.1: datagrams carrying an Initial */
#define QX_QUIC_MIN_LONG 7         /* RFC 8999 §5.1: flags, version, two CID lengths */

#define QX_XDP_MAX_PORTS 4
#define QX_XDP_BUCKETS 65536    /* sources tracked by the Initial token bucket (LRU) */
#define QX_XDP_DENY_MAX 16384   /* prefixes per address family in the deny list */
#define QX_XDP_NS 1000000000ull /* one token, in the bucket's fixed point */
/* Initial packets per second per source and burst, unless configured
 * (`qrux xdp attach --rate/--burst`, the proxy's xdp.initial_rate/_burst). */
#define QX_XDP_DEFAULT_RATE 50
#define QX_XDP_DEFAULT_BURST 100

/* Why a packet got its verdict. The counters map is indexed by this; every
 * reason below QX_XDP_FIRST_DROP means XDP_PASS, the others XDP_DROP. */
enum qx_xdp_reason {
    QX_XDP_PASS_OTHER = 0,     /* not UDP to a QUIC port (TCP, ARP, fragments...) */
    QX_XDP_PASS_INITIAL,       /* an Initial that passed every check */
    QX_XDP_PASS_LONG,          /* Handshake, 0-RTT, Retry of a known version */
    QX_XDP_PASS_SHORT,         /* short header whose DCID carries a valid MAC */
    QX_XDP_PASS_VERSION,       /* unknown version: qrux answers Version Negotiation */
    QX_XDP_PASS_NO_KEY,        /* short header while no CID key is loaded */
    QX_XDP_DROP_TOO_SHORT,     /* too short for the QUIC header it announces */
    QX_XDP_DROP_INITIAL_SMALL, /* Initial in a datagram under 1200 bytes */
    QX_XDP_DROP_CID_LONG,      /* a connection ID over 20 bytes */
    QX_XDP_DROP_DCID_SHORT,    /* client Initial with a DCID under 8 bytes */
    QX_XDP_DROP_BAD_CID,       /* short-header DCID that qrux cannot have made */
    QX_XDP_DROP_RATE,          /* Initial over the source's token bucket */
    QX_XDP_DROP_DENY,          /* source in the deny list */
    QX_XDP_NREASONS
};
#define QX_XDP_FIRST_DROP QX_XDP_DROP_TOO_SHORT

/* The single entry of the config map. Ports in host order; rate in Initial
 * packets per second per source (0: no limit), burst in packets. */
struct qx_xdp_config {
    __u16 ports[QX_XDP_MAX_PORTS];
    __u32 nports;
    __u32 rate;
    __u32 burst;
    __u32 pad;
};

/* The keys map: entry gen & 1 holds CID key generation gen (proxy/cid.h). */
struct qx_xdp_cid_key {
    __u32 gen;
    __u32 valid;
    __u8 key[16];
};

/* The token bucket's key: an IPv4 address as ::ffff:a.b.c.d, an IPv6
 * address cut to its /64 (one subscriber usually owns a whole /64). */
struct qx_xdp_src {
    __u8 addr[16];
};

struct qx_xdp_bucket {
    __u64 tokens;  /* in 1/QX_XDP_NS of a packet */
    __u64 last_ns; /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) of the last refill */
};

struct qx_xdp_lpm4 {
    __u32 prefixlen;
    __u8 addr[4];
};

struct qx_xdp_lpm6 {
    __u32 prefixlen;
    __u8 addr[16];
};

/* The Initial token bucket's refill, shared by the XDP program and qrux's
 * own Retry decision (proxy/src_rate.c) so that both count alike: the
 * tokens (in 1/QX_XDP_NS of a packet) after |elapsed_ns| at |rate| per
 * second, capped at |burst| packets. elapsed * rate would overflow only
 * past the time a full refill takes, which is tested first. */
static inline __u64 qx_xdp_refill(__u64 tokens, __u64 elapsed_ns, __u32 rate, __u32 burst)
{
    __u64 max = (__u64)(burst ? burst : 1) * QX_XDP_NS;
    if (rate == 0 || elapsed_ns >= max / rate)
        return max;
    tokens += elapsed_ns * rate;
    return tokens > max ? max : tokens;
}

/* Takes one token from |b| at |now_ns|: 1, or 0 when the bucket is empty.
 * A zeroed bucket is full. */
static inline int qx_xdp_take(struct qx_xdp_bucket *b, __u64 now_ns, __u32 rate, __u32 burst)
{
    __u64 elapsed = b->last_ns == 0 ? ~0ull : now_ns > b->last_ns ? now_ns - b->last_ns : 0;
    __u64 t = qx_xdp_refill(b->tokens, elapsed, rate, burst);
    b->last_ns = now_ns;
    if (t < QX_XDP_NS) {
        b->tokens = t;
        return 0;
    }
    b->tokens = t - QX_XDP_NS;
    return 1;
}

/* Pinned map names (the files under the pin directory). */
#define QX_XDP_MAP_CONFIG "qx_config"
#define QX_XDP_MAP_KEYS "qx_keys"
#define QX_XDP_MAP_BUCKETS "qx_buckets"
#define QX_XDP_MAP_DENY4 "qx_deny4"
#define QX_XDP_MAP_DENY6 "qx_deny6"
#define QX_XDP_MAP_COUNTERS "qx_counters"
#define QX_XDP_PIN_LINK "link"

#ifndef __bpf__
/* The metrics label of a reason ("initial_too_small"...). */
static inline const char *qx_xdp_reason_name(int r)
{
    static const char *const names[QX_XDP_NREASONS] = {
        [QX_XDP_PASS_OTHER] = "not_quic",
        [QX_XDP_PASS_INITIAL] = "initial",
        [QX_XDP_PASS_LONG] = "long_header",
        [QX_XDP_PASS_SHORT] = "short_header",
        [QX_XDP_PASS_VERSION] = "unknown_version",
        [QX_XDP_PASS_NO_KEY] = "no_key",
        [QX_XDP_DROP_TOO_SHORT] = "too_short",
        [QX_XDP_DROP_INITIAL_SMALL] = "initial_too_small",
        [QX_XDP_DROP_CID_LONG] = "cid_too_long",
        [QX_XDP_DROP_DCID_SHORT] = "dcid_too_short",
        [QX_XDP_DROP_BAD_CID] = "bad_cid",
        [QX_XDP_DROP_RATE] = "rate_limited",
        [QX_XDP_DROP_DENY] = "denied",
    };
    return r >= 0 && r < QX_XDP_NREASONS ? names[r] : "unknown";
}
#endif

#endif /* QX_XDP_QUIC_CONSTS_H */
