/*
 * snapshot.h - an immutable, reference-counted view of the configuration
 * that workers read without locks: the config, its router, and a flat
 * numbering of every route's upstreams (pools and round-robin counters are
 * indexed by it). Publishing a new one is a pointer swap (issue 5); a
 * request keeps the snapshot it started with until it ends.
 */
#ifndef QX_SNAPSHOT_H
#define QX_SNAPSHOT_H

#include "config.h"
#include "router.h"

#include <stddef.h>
#include <stdint.h>

typedef struct qx_snapshot {
    int refcnt; /* atomic */
    uint64_t generation;
    qx_config_t *cfg;
    qx_router_t *router;
    size_t nupstreams;  /* sum of every route's upstreams */
    size_t *route_base; /* route r's upstreams are [route_base[r], route_base[r] + n) */
    uint32_t *rr;       /* atomic: round-robin cursor per route of this snapshot's cfg */
} qx_snapshot_t;

/* Takes ownership of cfg (also on failure). Returns 0 or QX_ERR_NOMEM. */
int qx_snapshot_new(qx_snapshot_t **out, qx_config_t *cfg, uint64_t generation);

qx_snapshot_t *qx_snapshot_ref(qx_snapshot_t *s);

/* Drops a reference; the last one frees. Accepts NULL. */
void qx_snapshot_unref(qx_snapshot_t *s);

/* The next upstream of route |route| (an index into this snapshot's
 * cfg->routes) in round-robin order, shared by every worker. The cursor
 * lives with the routes it counts, so a request that began under an older
 * snapshot never indexes a newer one's table. Thread-safe. */
size_t qx_snapshot_pick(qx_snapshot_t *s, int route);

/* The upstream config at flat index i. */
const qx_upstream_cfg_t *qx_snapshot_upstream(const qx_snapshot_t *s, size_t i);

#endif
