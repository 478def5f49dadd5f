/* snapshot.c - immutable shared configuration (see snapshot.h). */
#include "snapshot.h"

#include "qx.h"

#include <stdlib.h>

int qx_snapshot_new(qx_snapshot_t **out, qx_config_t *cfg, uint64_t generation)
{
    qx_snapshot_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        goto fail_alloc;
    s->cfg = cfg;
    s->generation = generation;
    s->refcnt = 1;
    s->route_base = calloc(cfg->nroutes, sizeof(size_t));
    s->rr = calloc(cfg->nroutes, sizeof(uint32_t));
    if (s->route_base == NULL || s->rr == NULL)
        goto fail_base;
    for (size_t r = 0; r < cfg->nroutes; r++) {
        s->route_base[r] = s->nupstreams;
        s->nupstreams += cfg->routes[r].nupstreams;
    }
    if (qx_router_new(&s->router, cfg) != 0)
        goto fail_router;
    *out = s;
    return 0;

fail_router:
fail_base:
    free(s->rr);
    free(s->route_base);
    free(s);
fail_alloc:
    qx_config_del(cfg);
    return QX_ERR_NOMEM;
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
    qx_router_del(s->router);
    qx_config_del(s->cfg);
    free(s->route_base);
    free(s->rr);
    free(s);
}

size_t qx_snapshot_pick(qx_snapshot_t *s, int route)
{
    uint32_t n = (uint32_t)s->cfg->routes[route].nupstreams;
    uint32_t k = __atomic_fetch_add(&s->rr[route], 1, __ATOMIC_RELAXED);
    return k % n;
}

const qx_upstream_cfg_t *qx_snapshot_upstream(const qx_snapshot_t *s, size_t i)
{
    for (size_t r = s->cfg->nroutes; r-- > 0;) {
        if (i >= s->route_base[r])
            return &s->cfg->routes[r].upstreams[i - s->route_base[r]];
    }
    return NULL;
}
