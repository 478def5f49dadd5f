/* health.c - passive health of upstream endpoints (see health.h). */
#include "conf/health.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

void qx_health_tab_init(qx_health_tab_t *t)
{
    pthread_mutex_init(&t->lock, NULL);
    SLIST_INIT(&t->list);
    t->n = 0;
}

void qx_health_tab_free(qx_health_tab_t *t)
{
    if (t == NULL)
        return;
    while (!SLIST_EMPTY(&t->list)) {
        qx_health_t *h = SLIST_FIRST(&t->list);
        SLIST_REMOVE_HEAD(&t->list, link);
        free(h);
    }
    t->n = 0;
    pthread_mutex_destroy(&t->lock);
}

qx_health_t *qx_health_get(qx_health_tab_t *t, const struct sockaddr *addr, socklen_t len)
{
    if (t == NULL || len == 0 || len > sizeof(struct sockaddr_storage))
        return NULL;
    pthread_mutex_lock(&t->lock);
    qx_health_t *h;
    SLIST_FOREACH (h, &t->list, link) {
        if (h->addrlen == len && memcmp(&h->addr, addr, len) == 0)
            break;
    }
    if (h == NULL && t->n < QX_HEALTH_MAX && (h = calloc(1, sizeof(*h))) != NULL) {
        memcpy(&h->addr, addr, len);
        h->addrlen = len;
        SLIST_INSERT_HEAD(&t->list, h, link);
        t->n++;
    }
    pthread_mutex_unlock(&t->lock);
    return h;
}

uint64_t qx_health_now_ms(void)
{
    return uv_hrtime() / 1000000u;
}

int qx_health_usable(const qx_health_t *h, uint64_t now_ms)
{
    if (h == NULL || __atomic_load_n(&h->fails, __ATOMIC_RELAXED) < QX_HEALTH_FAILS)
        return 1;
    return now_ms >= __atomic_load_n(&h->until_ms, __ATOMIC_RELAXED);
}

int qx_health_healthy(const qx_health_t *h)
{
    return h == NULL || __atomic_load_n(&h->fails, __ATOMIC_RELAXED) < QX_HEALTH_FAILS;
}

int qx_health_fail(qx_health_t *h, uint64_t now_ms, uint64_t *for_ms)
{
    if (h == NULL)
        return 0;
    unsigned f = __atomic_add_fetch(&h->fails, 1, __ATOMIC_RELAXED);
    if (f < QX_HEALTH_FAILS)
        return 0;
    /* Ejected by the failure that reaches the threshold, and again by a
     * failure of the request that tried it after its back-off (only one
     * of several concurrent ones wins the exchange of until_ms). */
    uint64_t until = __atomic_load_n(&h->until_ms, __ATOMIC_RELAXED);
    if (f > QX_HEALTH_FAILS && now_ms < until)
        return 0;
    unsigned level = __atomic_load_n(&h->level, __ATOMIC_RELAXED);
    uint64_t ms = QX_HEALTH_BASE_MS << (level < 5 ? level : 5);
    if (ms > QX_HEALTH_MAX_MS)
        ms = QX_HEALTH_MAX_MS;
    if (!__atomic_compare_exchange_n(&h->until_ms, &until, now_ms + ms, 0, __ATOMIC_RELAXED,
                                     __ATOMIC_RELAXED))
        return 0;
    __atomic_store_n(&h->level, level + 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&h->ejections, 1, __ATOMIC_RELAXED);
    if (for_ms)
        *for_ms = ms;
    return 1;
}

int qx_health_ok(qx_health_t *h)
{
    if (h == NULL)
        return 0;
    unsigned f = __atomic_exchange_n(&h->fails, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&h->level, 0, __ATOMIC_RELAXED);
    return f >= QX_HEALTH_FAILS;
}
