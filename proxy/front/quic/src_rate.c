/*
 * src_rate.c - the Initial token bucket per source in user space (see
 * src_rate.h).
 */
#include "front/quic/src_rate.h"
#include "base/qx.h"
#include "base/siphash.h"
#include "bpf/xdp_quic_consts.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

typedef struct slot {
    uint8_t addr[16]; /* the source, as the filter keys it (struct qx_xdp_src) */
    struct qx_xdp_bucket b;
} slot_t;

struct qx_src_rate {
    pthread_mutex_t lock;
    uint8_t key[QX_SIPHASH_KEY_LEN];
    size_t mask;
    slot_t slots[];
};

int qx_src_rate_new(qx_src_rate_t **out, size_t slots)
{
    qx_src_rate_t *r = calloc(1, sizeof(*r) + slots * sizeof(slot_t));
    if (r == NULL)
        return QX_ERR_NOMEM;
    if (getrandom(r->key, sizeof(r->key), 0) != (ssize_t)sizeof(r->key)) {
        free(r);
        return QX_ERR_IO;
    }
    pthread_mutex_init(&r->lock, NULL);
    r->mask = slots - 1;
    *out = r;
    return 0;
}

void qx_src_rate_del(qx_src_rate_t *r)
{
    if (r == NULL)
        return;
    pthread_mutex_destroy(&r->lock);
    free(r);
}

/* The filter's key of a source: ::ffff:a.b.c.d, or the /64 of IPv6. */
static int src_key(const struct sockaddr *sa, uint8_t addr[16])
{
    memset(addr, 0, 16);
    if (sa->sa_family == AF_INET) {
        addr[10] = addr[11] = 0xff;
        memcpy(addr + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
        if (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)(const void *)a))
            memcpy(addr + 10, a + 10, 6); /* an IPv4 client of a dual-stack socket */
        else
            memcpy(addr, a, 8);
        return 0;
    }
    return -1;
}

int qx_src_rate_take(qx_src_rate_t *r, const struct sockaddr *sa, uint32_t rate, uint32_t burst,
                     uint64_t now_ns)
{
    uint8_t addr[16];
    if (r == NULL || rate == 0 || src_key(sa, addr) != 0)
        return 1;
    slot_t *s = &r->slots[qx_siphash24(r->key, addr, sizeof(addr)) & r->mask];
    pthread_mutex_lock(&r->lock);
    if (memcmp(s->addr, addr, sizeof(addr)) != 0) {
        memcpy(s->addr, addr, sizeof(addr));
        memset(&s->b, 0, sizeof(s->b));
    }
    int ok = qx_xdp_take(&s->b, now_ns, rate, burst);
    pthread_mutex_unlock(&r->lock);
    return ok;
}
