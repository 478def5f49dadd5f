/*
 * xdp_frames.h - Ethernet frames for the XDP program's tests and benchmark
 * (unit/xdp_quic_test.c, bench/xdp_bench.c): link, VLAN, IP and UDP/TCP
 * headers around a QUIC long- or short-header payload. Checksums are left
 * zero: the program never reads them.
 */
#ifndef QX_XDP_FRAMES_H
#define QX_XDP_FRAMES_H

#include "base/cid.h"
#include "bpf/xdp_quic_consts.h"

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define PORT 4433 /* the QUIC port the tests configure */
#define FRAME_MAX 1600

typedef struct frame_spec {
    int v6;
    int vlans;       /* 0, 1 (802.1Q) or 2 (802.1ad + 802.1Q) */
    int proto;       /* IPPROTO_UDP unless set */
    uint16_t dport;  /* PORT unless set */
    const char *src; /* source address; a default per family */
    int frag;        /* IPv4 more-fragments bit; IPv6: a fragment header after the others */
    int exthdrs;     /* IPv6: destination-options headers (16 bytes each) before L4 */
} frame_spec_t;

static inline size_t put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return 2;
}

/* Ethernet + VLANs + IP + UDP headers around |payload|; returns the frame length. */
static inline size_t frame(uint8_t *f, const frame_spec_t *s, const uint8_t *payload, size_t plen)
{
    size_t o = 12;
    memset(f, 0, 64);
    memset(f, 0x02, 12);
    if (s->vlans == 2) {
        o += put16(f + o, ETH_P_8021AD);
        o += put16(f + o, 100);
    }
    if (s->vlans >= 1) {
        o += put16(f + o, ETH_P_8021Q);
        o += put16(f + o, 200);
    }
    o += put16(f + o, s->v6 ? ETH_P_IPV6 : ETH_P_IP);
    int proto = s->proto ? s->proto : IPPROTO_UDP;
    size_t l4len = proto == IPPROTO_UDP ? 8 + plen : 20 + plen;
    if (s->v6) {
        size_t ext = (size_t)s->exthdrs * 16 + (s->frag ? 8 : 0);
        f[o] = 0x60;
        put16(f + o + 4, (uint16_t)(ext + l4len));
        f[o + 7] = 64;
        inet_pton(AF_INET6, s->src ? s->src : "2001:db8:1:2::10", f + o + 8);
        inet_pton(AF_INET6, "2001:db8:ffff::1", f + o + 24);
        uint8_t *next = f + o + 6; /* where the next header's number goes */
        o += 40;
        for (int i = 0; i < s->exthdrs; i++) {
            *next = 60; /* destination options */
            next = f + o;
            memset(f + o, 0, 16);
            f[o + 1] = 1;  /* (1 + 1) * 8 bytes */
            f[o + 2] = 1;  /* PadN */
            f[o + 3] = 12; /* over the rest */
            o += 16;
        }
        if (s->frag) {
            *next = 44; /* fragment: offset 0, more fragments */
            next = f + o;
            memset(f + o, 0, 8);
            f[o + 3] = 1;
            o += 8;
        }
        *next = (uint8_t)proto;
    } else {
        f[o] = 0x45;
        put16(f + o + 2, (uint16_t)(20 + l4len));
        if (s->frag)
            f[o + 6] = 0x20;
        f[o + 8] = 64;
        f[o + 9] = (uint8_t)proto;
        inet_pton(AF_INET, s->src ? s->src : "192.0.2.10", f + o + 12);
        inet_pton(AF_INET, "198.51.100.1", f + o + 16);
        o += 20;
    }
    uint16_t dport = s->dport ? s->dport : PORT;
    put16(f + o, 50000);
    put16(f + o + 2, dport);
    if (proto == IPPROTO_UDP) {
        put16(f + o + 4, (uint16_t)l4len);
        o += 8;
    } else {
        f[o + 12] = 0x50; /* TCP data offset */
        o += 20;
    }
    memcpy(f + o, payload, plen);
    return o + plen;
}

/* A long-header packet padded to |dlen| bytes. type: the two type bits. */
static inline size_t long_hdr(uint8_t *p, uint32_t version, int type, size_t dcil, size_t scil,
                              size_t dlen)
{
    size_t o = 0;
    memset(p, 0, dlen);
    p[o++] = (uint8_t)(0xc0 | (type << 4));
    p[o++] = (uint8_t)(version >> 24);
    p[o++] = (uint8_t)(version >> 16);
    p[o++] = (uint8_t)(version >> 8);
    p[o++] = (uint8_t)version;
    p[o++] = (uint8_t)dcil;
    memset(p + o, 0xaa, dcil);
    o += dcil;
    p[o++] = (uint8_t)scil;
    memset(p + o, 0xbb, scil);
    return dlen;
}

static inline size_t initial(uint8_t *p, size_t dlen)
{
    return long_hdr(p, QX_QUIC_V1, 0, 8, 8, dlen);
}

static inline size_t short_hdr(uint8_t *p, const uint8_t *cid, size_t dlen)
{
    memset(p, 0x33, dlen);
    p[0] = 0x40;
    memcpy(p + 1, cid, QX_CID_LEN);
    return dlen;
}

#endif
