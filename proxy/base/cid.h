/*
 * cid.h - the format of qrux's server connection IDs, shared by the proxy
 * (which makes them) and the XDP program (which checks short-header DCIDs
 * before they cost a syscall).
 *
 *   byte 0       worker id: the reuseport steering program (steer.c) and
 *                the hand-over between workers (quic.c) read it
 *   byte 1       key generation (low 8 bits)
 *   bytes 2..13  random
 *   bytes 14..17 MAC: the low 32 bits of SipHash-2-4 of bytes 0..13 under
 *                the key of that generation
 *
 * Two key generations are valid at a time (the current one and the one
 * before), so rotating the key does not strand live connections. The part
 * above the user-space section is free of libc so that clang -target bpf
 * computes the MAC with the same code (siphash.h).
 */
#ifndef QX_CID_H
#define QX_CID_H

#include "base/siphash.h"

#define QX_CID_LEN 18
#define QX_CID_WORKER 0   /* offset of the worker id */
#define QX_CID_GEN 1      /* offset of the key generation byte */
#define QX_CID_MAC_OFF 14 /* the MAC covers bytes [0, QX_CID_MAC_OFF) */
#define QX_CID_MAC_LEN 4
#define QX_CID_KEY_LEN QX_SIPHASH_KEY_LEN

/* The MAC of a CID's first QX_CID_MAC_OFF bytes, as stored (little-endian)
 * in its last QX_CID_MAC_LEN bytes. */
static inline unsigned int qx_cid_mac(const qx_sip_u8 *key, const qx_sip_u8 *cid)
{
    return (unsigned int)qx_siphash24(key, cid, QX_CID_MAC_OFF);
}

#ifndef __bpf__
#include <stddef.h>
#include <stdint.h>

/* The process's CID keys: slot gen & 1 holds generation gen. Workers make
 * CIDs with the current generation while the main thread rotates: a new
 * key is written into the other slot before the generation moves, so a
 * reader never sees a half-written key of the generation it uses. */
typedef struct qx_cid_keys {
    uint32_t gen; /* atomic: the current generation */
    uint8_t key[2][QX_CID_KEY_LEN];
    int has_prev; /* the other slot holds generation gen - 1 */
} qx_cid_keys_t;

/* Fills |keys| with a random first key (generation |gen|, no previous).
 * Returns 0 or QX_ERR_IO when no randomness is available. */
int qx_cid_keys_init(qx_cid_keys_t *keys, uint32_t gen);

/* Moves to generation gen + 1 with a fresh random key; the old current key
 * stays valid as the previous one. Main thread only. Returns 0 or
 * QX_ERR_IO. */
int qx_cid_keys_rotate(qx_cid_keys_t *keys);

/* The same with |key| as the new key: for a caller that must hand the key
 * to the XDP filter before the first CID carries it. */
void qx_cid_keys_advance(qx_cid_keys_t *keys, const uint8_t *key);

/* Writes a QX_CID_LEN-byte CID for |worker| into |cid|: random bytes, the
 * worker id, the current generation and its MAC. Returns 0 or QX_ERR_IO. */
int qx_cid_make(const qx_cid_keys_t *keys, unsigned worker, uint8_t *cid);

/* 1 when |cid| (|len| bytes) carries a MAC of the current or the previous
 * generation, else 0. */
int qx_cid_verify(const qx_cid_keys_t *keys, const uint8_t *cid, size_t len);
#endif

#endif /* QX_CID_H */
