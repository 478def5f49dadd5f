/*
 * xdp_quic_parse.h - from the Ethernet frame to the UDP payload: VLAN tags
 * (802.1Q, 802.1ad, up to two) skipped, IPv4 without fragments, IPv6 with
 * UDP after up to three hop-by-hop, routing or destination-options headers.
 * Anything else (fragments included) is not ours to judge and the caller
 * passes it to the stack.
 *
 * Every read is preceded by a check against data_end (the verifier insists);
 * nothing here calls a helper that can move the packet.
 */
#ifndef QX_XDP_QUIC_PARSE_H
#define QX_XDP_QUIC_PARSE_H

#include <bpf/bpf_endian.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>

#define QX_MAX_VLANS 2
#define QX_MAX_EXTHDRS 3 /* IPv6 extension headers walked before UDP */

struct qx_vlan_hdr {
    __be16 tci;
    __be16 proto;
};

/* What the QUIC checks need of a datagram. */
struct qx_pkt {
    const __u8 *payload; /* the UDP payload (the QUIC datagram) */
    __u32 dlen;          /* its length: the bytes present, at most what UDP says */
    __u16 dport;         /* host order */
    __u8 v6;
    __u8 src[16]; /* IPv4 in src[0..3], IPv6 in full */
};

/* Returns 0 and fills |p| for a UDP datagram, -1 for anything else, and 1
 * (p->v6 and p->src filled) for a UDP fragment or an IPv6 packet whose
 * header chain goes on past the walk: the stack may still deliver it to
 * qrux (reassembled, or with more extension headers), so the deny list
 * applies to it, whatever its port. */
static __always_inline int qx_parse_udp(struct xdp_md *ctx, struct qx_pkt *p)
{
    const __u8 *data = (const __u8 *)(long)ctx->data;
    const __u8 *end = (const __u8 *)(long)ctx->data_end;
    const struct ethhdr *eth = (const void *)data;
    const __u8 *l3;
    const struct udphdr *udp;
    __u16 proto;

    if ((const __u8 *)(eth + 1) > end)
        return -1;
    proto = eth->h_proto;
    l3 = (const __u8 *)(eth + 1);
#pragma unroll
    for (int i = 0; i < QX_MAX_VLANS; i++) {
        if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
            break;
        const struct qx_vlan_hdr *vh = (const void *)l3;
        if ((const __u8 *)(vh + 1) > end)
            return -1;
        proto = vh->proto;
        l3 = (const __u8 *)(vh + 1);
    }

    if (proto == bpf_htons(ETH_P_IP)) {
        const struct iphdr *ip = (const void *)l3;
        if ((const __u8 *)(ip + 1) > end)
            return -1;
        if (ip->ihl < 5 || ip->protocol != IPPROTO_UDP)
            return -1;
        p->v6 = 0;
        __builtin_memcpy(p->src, &ip->saddr, 4);
        if (ip->frag_off & bpf_htons(0x3fff)) /* MF or an offset: a fragment */
            return 1;
        udp = (const void *)(l3 + ip->ihl * 4);
    } else if (proto == bpf_htons(ETH_P_IPV6)) {
        const struct ipv6hdr *ip6 = (const void *)l3;
        if ((const __u8 *)(ip6 + 1) > end)
            return -1;
        __u8 next = ip6->nexthdr;
        const __u8 *h = (const __u8 *)(ip6 + 1);
        p->v6 = 1;
        __builtin_memcpy(p->src, &ip6->saddr, 16);
        /* Hop-by-hop, routing and destination options before UDP: the
         * stack delivers such a datagram to qrux like any other, so a
         * sender must not get past the checks by adding one. A fragment
         * header of UDP, or more than QX_MAX_EXTHDRS, ends the walk: only
         * the deny list judges those (return 1). */
#pragma unroll
        for (int i = 0; i < QX_MAX_EXTHDRS; i++) {
            if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING && next != IPPROTO_DSTOPTS)
                break;
            if (h + 2 > end)
                return -1;
            next = h[0];
            h += ((__u32)h[1] + 1) * 8;
        }
        if (next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS)
            return 1; /* the chain goes on */
        if (next == IPPROTO_FRAGMENT) {
            if (h + 1 > end)
                return -1;
            return h[0] == IPPROTO_UDP ? 1 : -1;
        }
        if (next != IPPROTO_UDP)
            return -1;
        udp = (const void *)h;
    } else {
        return -1;
    }
    if ((const __u8 *)(udp + 1) > end)
        return -1;
    p->dport = bpf_ntohs(udp->dest);
    p->payload = (const __u8 *)(udp + 1);
    __u32 have = (__u32)(end - p->payload);
    __u32 ulen = bpf_ntohs(udp->len);
    /* Ethernet pads short frames: trust UDP's length when it is smaller. */
    p->dlen = ulen >= sizeof(*udp) && ulen - sizeof(*udp) < have ? ulen - sizeof(*udp) : have;
    return 0;
}

#endif /* QX_XDP_QUIC_PARSE_H */
