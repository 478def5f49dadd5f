/*
 * siphash.h - SipHash-2-4 (Aumasson and Bernstein, 2012): a keyed 64-bit
 * hash for every table a peer can steer (connection-ID tables, per-address
 * counters) and the short MAC in qrux's server connection IDs.
 *
 * Header-only and free of libc so that the XDP program (clang -target bpf)
 * computes exactly what user space computes: one definition, two compilers.
 * The key is a per-process (or per-generation) secret; without it a peer
 * cannot find colliding inputs.
 */
#ifndef QX_SIPHASH_H
#define QX_SIPHASH_H

#ifdef __bpf__
#include <linux/types.h>
typedef __u8 qx_sip_u8;
typedef __u64 qx_sip_u64;
typedef __u32 qx_sip_size;
#else
#include <stddef.h>
#include <stdint.h>
typedef uint8_t qx_sip_u8;
typedef uint64_t qx_sip_u64;
typedef size_t qx_sip_size;
#endif

#define QX_SIPHASH_KEY_LEN 16

#define QX_SIP_ROTL(x, b) (qx_sip_u64)(((x) << (b)) | ((x) >> (64 - (b))))

#define QX_SIP_ROUND(v0, v1, v2, v3)                                                               \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = QX_SIP_ROTL(v1, 13);                                                                  \
        v1 ^= v0;                                                                                  \
        v0 = QX_SIP_ROTL(v0, 32);                                                                  \
        v2 += v3;                                                                                  \
        v3 = QX_SIP_ROTL(v3, 16);                                                                  \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = QX_SIP_ROTL(v3, 21);                                                                  \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = QX_SIP_ROTL(v1, 17);                                                                  \
        v1 ^= v2;                                                                                  \
        v2 = QX_SIP_ROTL(v2, 32);                                                                  \
    } while (0)

/* Little-endian load of 8 bytes, byte by byte: no alignment assumption. */
static inline qx_sip_u64 qx_sip_load64(const qx_sip_u8 *p)
{
    return (qx_sip_u64)p[0] | (qx_sip_u64)p[1] << 8 | (qx_sip_u64)p[2] << 16 |
           (qx_sip_u64)p[3] << 24 | (qx_sip_u64)p[4] << 32 | (qx_sip_u64)p[5] << 40 |
           (qx_sip_u64)p[6] << 48 | (qx_sip_u64)p[7] << 56;
}

/* SipHash-2-4 of |len| bytes at |in| under the 16-byte |key|. In BPF, call it
 * with a |len| known at compile time so the loops unroll for the verifier. */
static inline qx_sip_u64 qx_siphash24(const qx_sip_u8 *key, const qx_sip_u8 *in, qx_sip_size len)
{
    qx_sip_u64 k0 = qx_sip_load64(key), k1 = qx_sip_load64(key + 8);
    qx_sip_u64 v0 = 0x736f6d6570736575ULL ^ k0;
    qx_sip_u64 v1 = 0x646f72616e646f6dULL ^ k1;
    qx_sip_u64 v2 = 0x6c7967656e657261ULL ^ k0;
    qx_sip_u64 v3 = 0x7465646279746573ULL ^ k1;
    qx_sip_size full = len & ~(qx_sip_size)7;
    qx_sip_u64 m, b = (qx_sip_u64)len << 56;

    for (qx_sip_size i = 0; i < full; i += 8) {
        m = qx_sip_load64(in + i);
        v3 ^= m;
        QX_SIP_ROUND(v0, v1, v2, v3);
        QX_SIP_ROUND(v0, v1, v2, v3);
        v0 ^= m;
    }
    for (qx_sip_size i = 0; i < (len & 7); i++)
        b |= (qx_sip_u64)in[full + i] << (8 * i);
    v3 ^= b;
    QX_SIP_ROUND(v0, v1, v2, v3);
    QX_SIP_ROUND(v0, v1, v2, v3);
    v0 ^= b;
    v2 ^= 0xff;
    QX_SIP_ROUND(v0, v1, v2, v3);
    QX_SIP_ROUND(v0, v1, v2, v3);
    QX_SIP_ROUND(v0, v1, v2, v3);
    QX_SIP_ROUND(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
}

#endif /* QX_SIPHASH_H */
