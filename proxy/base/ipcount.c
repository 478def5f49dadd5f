/* ipcount.c - keyed per-address connection counts (see ipcount.h). */
#include "base/ipcount.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

void qx_ipcount_init(qx_ipcount_t *t, const uint8_t *key)
{
    memset(t, 0, sizeof(*t));
    memcpy(t->key, key, sizeof(t->key));
}

void qx_ipcount_free(qx_ipcount_t *t)
{
    for (size_t b = 0; b < QX_IPCOUNT_BUCKETS; b++) {
        while (!LIST_EMPTY(&t->buckets[b])) {
            qx_ipcount_entry_t *e = LIST_FIRST(&t->buckets[b]);
            LIST_REMOVE(e, link);
            free(e);
        }
    }
    t->nentries = 0;
}

/* The counted prefix of |sa| into p[16] (zero-padded); returns its length,
 * or 0 for an unknown family. */
static uint8_t prefix_of(const struct sockaddr *sa, uint8_t *p)
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    memset(p, 0, 16);
    if (sa->sa_family == AF_INET) {
        memcpy(p, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 4;
    }
    if (sa->sa_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        if (memcmp(a, v4mapped, sizeof(v4mapped)) == 0) {
            memcpy(p, a + 12, 4);
            return 4;
        }
        memcpy(p, a, 8);
        return 8;
    }
    return 0;
}

static size_t bucket_of(const qx_ipcount_t *t, const uint8_t *p, uint8_t len)
{
    /* The length goes into the hash too: an IPv4 address and a /64 with
     * the same leading bytes are different prefixes. */
    uint8_t in[17];
    memcpy(in, p, 16);
    in[16] = len;
    return (size_t)(qx_siphash24(t->key, in, sizeof(in)) % QX_IPCOUNT_BUCKETS);
}

static qx_ipcount_entry_t *find(const qx_ipcount_t *t, const uint8_t *p, uint8_t len, size_t b)
{
    qx_ipcount_entry_t *e;
    LIST_FOREACH (e, &t->buckets[b], link) {
        if (e->len == len && memcmp(e->prefix, p, 16) == 0)
            break;
    }
    return e;
}

unsigned qx_ipcount_get(const qx_ipcount_t *t, const struct sockaddr *sa)
{
    uint8_t p[16];
    uint8_t len = prefix_of(sa, p);
    if (len == 0)
        return 0;
    qx_ipcount_entry_t *e = find(t, p, len, bucket_of(t, p, len));
    return e ? e->count : 0;
}

qx_ipcount_entry_t *qx_ipcount_take(qx_ipcount_t *t, const struct sockaddr *sa)
{
    uint8_t p[16];
    uint8_t len = prefix_of(sa, p);
    if (len == 0)
        return NULL;
    size_t b = bucket_of(t, p, len);
    qx_ipcount_entry_t *e = find(t, p, len, b);
    if (e == NULL) {
        e = calloc(1, sizeof(*e));
        if (e == NULL)
            return NULL;
        memcpy(e->prefix, p, 16);
        e->len = len;
        LIST_INSERT_HEAD(&t->buckets[b], e, link);
        t->nentries++;
    }
    e->count++;
    return e;
}

void qx_ipcount_put(qx_ipcount_t *t, qx_ipcount_entry_t *e)
{
    if (e == NULL || --e->count > 0)
        return;
    LIST_REMOVE(e, link);
    free(e);
    t->nentries--;
}
