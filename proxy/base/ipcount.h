/*
 * ipcount.h - connections counted per client address, for a per-address
 * cap a client cannot use against someone else.
 *
 * An IPv4 address counts alone; an IPv6 address counts with its /64 (one
 * host, or one customer's network, holds a whole /64: counting every
 * address alone would let it open a cap per address). An IPv4-mapped IPv6
 * address counts as the IPv4 address. Counts are exact: entries are kept
 * per prefix, so two clients never share a count, and the bucket of a
 * prefix is SipHash-2-4 under a per-process random key, so a client
 * cannot pick addresses that pile into one chain. An entry lives while
 * its count is above zero: memory follows the connections counted.
 *
 * One table per worker; not thread-safe.
 */
#ifndef QX_IPCOUNT_H
#define QX_IPCOUNT_H

#include "base/siphash.h"

#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#define QX_IPCOUNT_BUCKETS 4096

typedef struct qx_ipcount_entry {
    LIST_ENTRY(qx_ipcount_entry) link; /* its bucket's chain */
    uint8_t prefix[16];                /* IPv4: 4 bytes; IPv6: the /64, then zeros */
    uint8_t len;                       /* 4 or 8 */
    unsigned count;
} qx_ipcount_entry_t;

typedef struct qx_ipcount {
    uint8_t key[QX_SIPHASH_KEY_LEN];
    LIST_HEAD(qx_ipcount_chain, qx_ipcount_entry) buckets[QX_IPCOUNT_BUCKETS];
    unsigned nentries;
} qx_ipcount_t;

/* Sets up an empty table hashed with |key| (QX_SIPHASH_KEY_LEN bytes of a
 * per-process secret). */
void qx_ipcount_init(qx_ipcount_t *t, const uint8_t *key);

/* Releases every entry. Accepts a zeroed table. */
void qx_ipcount_free(qx_ipcount_t *t);

/* Connections counted for |sa|'s prefix (0 when none, or for a family
 * other than AF_INET / AF_INET6). */
unsigned qx_ipcount_get(const qx_ipcount_t *t, const struct sockaddr *sa);

/* Counts one more connection for |sa|'s prefix. Returns its entry, to be
 * passed to qx_ipcount_put() when the connection goes (the connection's
 * address may change meanwhile), or NULL when memory is short or the
 * family is unknown (then nothing was counted). */
qx_ipcount_entry_t *qx_ipcount_take(qx_ipcount_t *t, const struct sockaddr *sa);

/* Uncounts a connection counted with qx_ipcount_take(); the entry is freed
 * at zero. Accepts NULL. */
void qx_ipcount_put(qx_ipcount_t *t, qx_ipcount_entry_t *e);

#endif
