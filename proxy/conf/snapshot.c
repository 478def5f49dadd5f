/* snapshot.c - immutable shared configuration (see snapshot.h). */
#include "conf/snapshot.h"

#include "base/qx.h"
#include "conf/dns.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* "10.1.2.3:8080" or "[::1]:8080" into buf. */
static void endpoint_format(const struct sockaddr *sa, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (uv_ip_name(sa, ip, sizeof(ip)) != 0)
        snprintf(ip, sizeof(ip), "?");
    if (sa->sa_family == AF_INET6)
        snprintf(buf, len, "[%s]:%u", ip,
                 (unsigned)ntohs(((const struct sockaddr_in6 *)sa)->sin6_port));
    else
        snprintf(buf, len, "%s:%u", ip,
                 (unsigned)ntohs(((const struct sockaddr_in *)sa)->sin_port));
}

static void ep_set(qx_endpoint_t *e, const qx_upstream_cfg_t *u, const struct sockaddr_storage *a,
                   socklen_t len, qx_health_tab_t *ht)
{
    memcpy(&e->addr, a, len);
    e->addrlen = len;
    e->name = u->name;
    e->protocol = u->protocol;
    endpoint_format((const struct sockaddr *)a, e->addrstr, sizeof(e->addrstr));
    e->health = qx_health_get(ht, (const struct sockaddr *)a, len);
}

/* Room for n more endpoints (the array grows by doubling). */
static int eps_reserve(qx_snapshot_t *s, size_t *cap, size_t n)
{
    if (s->neps + n <= *cap)
        return 0;
    size_t c = *cap ? *cap : 8;
    while (c < s->neps + n)
        c *= 2;
    qx_endpoint_t *e = realloc(s->eps, c * sizeof(*e));
    if (e == NULL)
        return QX_ERR_NOMEM;
    s->eps = e;
    *cap = c;
    return 0;
}

/* Fills the endpoint arrays of s from its cfg (and dns for names). */
static int build_endpoints(qx_snapshot_t *s, qx_dns_t *dns, qx_health_tab_t *ht)
{
    const qx_config_t *cfg = s->cfg;
    size_t cap = 0;
    s->ep_base = calloc(cfg->nroutes, sizeof(size_t));
    s->ep_count = calloc(cfg->nroutes, sizeof(size_t));
    s->rr = calloc(cfg->nroutes, sizeof(uint32_t));
    if (s->ep_base == NULL || s->ep_count == NULL || s->rr == NULL || eps_reserve(s, &cap, 1) != 0)
        return QX_ERR_NOMEM;
    struct sockaddr_storage addrs[QX_DNS_MAX_ADDRS];
    socklen_t lens[QX_DNS_MAX_ADDRS];
    for (size_t r = 0; r < cfg->nroutes; r++) {
        s->ep_base[r] = s->neps;
        for (size_t j = 0; j < cfg->routes[r].nupstreams; j++) {
            const qx_upstream_cfg_t *u = &cfg->routes[r].upstreams[j];
            if (u->host == NULL) {
                if (eps_reserve(s, &cap, 1) != 0)
                    return QX_ERR_NOMEM;
                ep_set(&s->eps[s->neps++], u, &u->addr, u->addrlen, ht);
                continue;
            }
            size_t n = dns ? qx_dns_addrs(dns, u->host, u->port, addrs, lens, QX_DNS_MAX_ADDRS) : 0;
            if (eps_reserve(s, &cap, n) != 0)
                return QX_ERR_NOMEM;
            for (size_t k = 0; k < n; k++)
                ep_set(&s->eps[s->neps++], u, &addrs[k], lens[k], ht);
        }
        s->ep_count[r] = s->neps - s->ep_base[r];
    }
    return 0;
}

static void snapshot_free(qx_snapshot_t *s)
{
    if (s->owner) {
        qx_snapshot_unref(s->owner);
    } else {
        qx_router_del(s->router);
        qx_config_del(s->cfg);
    }
    free(s->eps);
    free(s->ep_base);
    free(s->ep_count);
    free(s->rr);
    free(s);
}

int qx_snapshot_new(qx_snapshot_t **out, qx_config_t *cfg, uint64_t generation, qx_dns_t *dns,
                    qx_health_tab_t *ht)
{
    qx_snapshot_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        qx_config_del(cfg);
        return QX_ERR_NOMEM;
    }
    s->cfg = cfg;
    s->generation = generation;
    s->refcnt = 1;
    if (build_endpoints(s, dns, ht) != 0 || qx_router_new(&s->router, cfg) != 0) {
        snapshot_free(s);
        return QX_ERR_NOMEM;
    }
    *out = s;
    return 0;
}

int qx_snapshot_derive(qx_snapshot_t **out, qx_snapshot_t *base, qx_dns_t *dns, qx_health_tab_t *ht)
{
    qx_snapshot_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return QX_ERR_NOMEM;
    s->owner = qx_snapshot_ref(base->owner ? base->owner : base);
    s->cfg = base->cfg;
    s->router = base->router;
    s->generation = base->generation;
    s->refcnt = 1;
    if (build_endpoints(s, dns, ht) != 0) {
        snapshot_free(s);
        return QX_ERR_NOMEM;
    }
    *out = s;
    return 0;
}

qx_snapshot_t *qx_snapshot_ref(qx_snapshot_t *s)
{
    __atomic_add_fetch(&s->refcnt, 1, __ATOMIC_RELAXED);
    return s;
}

void qx_snapshot_unref(qx_snapshot_t *s)
{
    if (s == NULL)
        return;
    if (__atomic_sub_fetch(&s->refcnt, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    snapshot_free(s);
}

size_t qx_snapshot_pick(qx_snapshot_t *s, int route, size_t skip, uint64_t now_ms)
{
    size_t n = s->ep_count[route];
    if (n == 0)
        return SIZE_MAX;
    size_t base = s->ep_base[route];
    uint32_t k = __atomic_fetch_add(&s->rr[route], 1, __ATOMIC_RELAXED);
    size_t first = base + k % n;
    size_t fallback = SIZE_MAX;
    /* The first usable endpoint from the cursor on; when every one is
     * ejected (or only the one to skip is usable), the cursor's own pick
     * anyway: trying is better than failing everything. */
    for (size_t i = 0; i < n; i++) {
        size_t e = base + (k + i) % n;
        if (!qx_health_usable(s->eps[e].health, now_ms))
            continue;
        if (e == skip && n > 1) {
            fallback = e;
            continue;
        }
        return e;
    }
    if (fallback != SIZE_MAX)
        return fallback;
    if (first == skip && n > 1)
        return base + (k + 1) % n;
    return first;
}
