/*
 * xdp_quic.bpf.c - a QUIC-aware packet filter in front of qrux.
 *
 * For UDP to the configured QUIC ports it drops, before they cost the proxy
 * a syscall or a TLS handshake: sources in the deny list; datagrams too
 * short for the header they announce; for QUIC v1 and v2, connection IDs
 * over 20 bytes, Initials in datagrams under 1200 bytes or with a DCID under
 * 8 bytes, Initials over the source's token bucket; short-header packets
 * whose DCID does not carry the MAC of one of qrux's two current CID keys
 * (proxy/cid.h). Unknown versions pass (qrux answers Version Negotiation);
 * the fixed bit is not checked (RFC 9287 lets peers grease it). Everything
 * else passes untouched. Each verdict is counted per CPU by its reason.
 */
#include "xdp_quic_consts.h"
#include "xdp_quic_maps.h"
#include "xdp_quic_parse.h"

#include "base/cid.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline int verdict(__u32 reason)
{
    __u64 *n = bpf_map_lookup_elem(&qx_counters, &reason);
    if (n)
        *n += 1; /* per-CPU slot: no other writer */
    return reason >= QX_XDP_FIRST_DROP ? XDP_DROP : XDP_PASS;
}

static __always_inline int is_quic_port(const struct qx_xdp_config *cfg, __u16 port)
{
#pragma unroll
    for (int i = 0; i < QX_XDP_MAX_PORTS; i++)
        if (i < cfg->nports && cfg->ports[i] == port)
            return 1;
    return 0;
}

static __always_inline int denied(const struct qx_pkt *p)
{
    if (p->v6) {
        struct qx_xdp_lpm6 k = {.prefixlen = 128};
        __builtin_memcpy(k.addr, p->src, 16);
        return bpf_map_lookup_elem(&qx_deny6, &k) != 0;
    }
    struct qx_xdp_lpm4 k = {.prefixlen = 32};
    __builtin_memcpy(k.addr, p->src, 4);
    return bpf_map_lookup_elem(&qx_deny4, &k) != 0;
}

/* Takes one token from the source's bucket; 0 when it is empty. CPUs race
 * on the same source without a lock: a flood spread over CPUs may get a
 * token or two more than the burst, never an unbounded number. */
static __always_inline int take_token(const struct qx_xdp_config *cfg, const struct qx_pkt *p)
{
    struct qx_xdp_src key = {};
    __u64 now = bpf_ktime_get_ns();
    if (cfg->rate == 0)
        return 1;
    if (p->v6) {
        __builtin_memcpy(key.addr, p->src, 8); /* the /64 */
    } else {
        key.addr[10] = 0xff;
        key.addr[11] = 0xff;
        __builtin_memcpy(key.addr + 12, p->src, 4);
    }
    struct qx_xdp_bucket *b = bpf_map_lookup_elem(&qx_buckets, &key);
    if (b == 0) {
        struct qx_xdp_bucket nb = {};
        qx_xdp_take(&nb, now, cfg->rate, cfg->burst); /* a new source starts full */
        bpf_map_update_elem(&qx_buckets, &key, &nb, BPF_ANY);
        return 1;
    }
    return qx_xdp_take(b, now, cfg->rate, cfg->burst);
}

/* A short-header DCID is one of qrux's when it carries the MAC of the key
 * generation it names, and that generation is loaded. */
static __always_inline __u32 check_short(const __u8 *q, const __u8 *end, __u32 dlen)
{
    __u8 cid[QX_CID_LEN];
    __u32 slot0 = 0, slot1 = 1;

    if (dlen < 1 + QX_CID_LEN || q + 1 + QX_CID_LEN > end)
        return QX_XDP_DROP_TOO_SHORT;
    const struct qx_xdp_cid_key *k0 = bpf_map_lookup_elem(&qx_keys, &slot0);
    const struct qx_xdp_cid_key *k1 = bpf_map_lookup_elem(&qx_keys, &slot1);
    if (k0 == 0 || k1 == 0)
        return QX_XDP_PASS_NO_KEY;
    if (!k0->valid && !k1->valid)
        return QX_XDP_PASS_NO_KEY; /* the proxy has not shared a key yet */
    __builtin_memcpy(cid, q + 1, QX_CID_LEN);
    const struct qx_xdp_cid_key *k = (cid[QX_CID_GEN] & 1) ? k1 : k0;
    if (!k->valid || (__u8)k->gen != cid[QX_CID_GEN])
        return QX_XDP_DROP_BAD_CID;
    __u32 mac = qx_cid_mac(k->key, cid);
#pragma unroll
    for (int i = 0; i < QX_CID_MAC_LEN; i++)
        if (cid[QX_CID_MAC_OFF + i] != (__u8)(mac >> (8 * i)))
            return QX_XDP_DROP_BAD_CID;
    return QX_XDP_PASS_SHORT;
}

static __always_inline __u32 check_long(const struct qx_xdp_config *cfg, const struct qx_pkt *p,
                                        const __u8 *end)
{
    const __u8 *q = p->payload;

    if (p->dlen < QX_QUIC_MIN_LONG || q + QX_QUIC_MIN_LONG > end)
        return QX_XDP_DROP_TOO_SHORT;
    __u32 version = (__u32)q[1] << 24 | (__u32)q[2] << 16 | (__u32)q[3] << 8 | q[4];
    if (version != QX_QUIC_V1 && version != QX_QUIC_V2)
        return QX_XDP_PASS_VERSION;
    __u32 dcil = q[5];
    if (dcil > QX_QUIC_MAX_CID)
        return QX_XDP_DROP_CID_LONG;
    const __u8 *s = q + 6 + dcil; /* the SCID length byte */
    if (6 + dcil + 1 > p->dlen || s + 1 > end)
        return QX_XDP_DROP_TOO_SHORT;
    __u32 scil = *s;
    if (scil > QX_QUIC_MAX_CID)
        return QX_XDP_DROP_CID_LONG;
    if (7 + dcil + scil > p->dlen)
        return QX_XDP_DROP_TOO_SHORT;
    __u32 type = (q[0] >> 4) & 3;
    int initial = version == QX_QUIC_V1 ? type == 0 : type == 1;
    if (!initial)
        return QX_XDP_PASS_LONG;
    if (p->dlen < QX_QUIC_MIN_INITIAL)
        return QX_XDP_DROP_INITIAL_SMALL;
    if (dcil < QX_QUIC_MIN_INITIAL_DCID)
        return QX_XDP_DROP_DCID_SHORT;
    if (!take_token(cfg, p))
        return QX_XDP_DROP_RATE;
    return QX_XDP_PASS_INITIAL;
}

SEC("xdp")
int qx_xdp_quic(struct xdp_md *ctx)
{
    struct qx_pkt p;
    __u32 zero = 0;

    const struct qx_xdp_config *cfg = bpf_map_lookup_elem(&qx_config, &zero);
    int parsed = cfg == 0 ? -1 : qx_parse_udp(ctx, &p);
    if (parsed > 0) /* a fragment, a long header chain: the deny list only */
        return verdict(denied(&p) ? QX_XDP_DROP_DENY : QX_XDP_PASS_OTHER);
    if (parsed < 0 || !is_quic_port(cfg, p.dport))
        return verdict(QX_XDP_PASS_OTHER);
    if (denied(&p))
        return verdict(QX_XDP_DROP_DENY);

    const __u8 *end = (const __u8 *)(long)ctx->data_end;
    const __u8 *q = p.payload;
    if (p.dlen < 1 || q + 1 > end)
        return verdict(QX_XDP_DROP_TOO_SHORT);
    if (q[0] & 0x80)
        return verdict(check_long(cfg, &p, end));
    return verdict(check_short(q, end, p.dlen));
}
