/*
 * snapshot.h - an immutable, reference-counted view of the configuration
 * that workers read without locks: the config, its router, and a flat
 * numbering of every route's endpoints (pools are indexed by it).
 * Publishing a new one is a pointer swap; a request keeps the snapshot it
 * started with until it ends.
 *
 * Endpoints: an upstream written as an address is one endpoint; one
 * written as a DNS name is one endpoint per address the name resolves to
 * (none while it does not resolve). When only the addresses change, the
 * runtime publishes a snapshot derived from the one in force: the same
 * config, router and generation (what a user sees as the config version),
 * new endpoints and a new epoch (what workers follow).
 */
#ifndef QX_SNAPSHOT_H
#define QX_SNAPSHOT_H

#include "conf/health.h"
#include "conf/router.h"
#include "config/config.h"

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

#define QX_EP_ADDRLEN (INET6_ADDRSTRLEN + 8) /* "[addr]:port" */

typedef struct qx_dns qx_dns_t;

typedef struct qx_endpoint {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    const char *name;            /* the upstream as configured (the config owns it) */
    char addrstr[QX_EP_ADDRLEN]; /* "10.1.2.3:8080", "[::1]:8080" */
    qx_health_t *health;         /* passive health; NULL without a table */
    int protocol;                /* QX_UP_PROTO_* (config.h): the codec requests use */
} qx_endpoint_t;

typedef struct qx_snapshot {
    int refcnt; /* atomic */
    uint64_t generation;
    uint64_t epoch; /* set by the runtime before publication; bumps on every new snapshot */
    qx_config_t *cfg;
    qx_router_t *router;
    struct qx_snapshot *owner; /* the snapshot owning cfg and router (NULL: this one) */
    qx_endpoint_t *eps;        /* every route's endpoints */
    size_t neps;
    size_t *ep_base;  /* route r's endpoints are [ep_base[r], ep_base[r] + ep_count[r]) */
    size_t *ep_count; /* 0 while none of the route's names resolves */
    uint32_t *rr;     /* atomic: round-robin cursor per route of this snapshot */
} qx_snapshot_t;

/* Takes ownership of cfg (also on failure). The endpoints of names come
 * from dns (NULL: names have none yet), health entries from ht (may be
 * NULL). Returns 0 or QX_ERR_NOMEM. */
int qx_snapshot_new(qx_snapshot_t **out, qx_config_t *cfg, uint64_t generation, qx_dns_t *dns,
                    qx_health_tab_t *ht);

/* A snapshot with the config, router and generation of |s| and the
 * endpoints dns knows now. Returns 0 or QX_ERR_NOMEM. */
int qx_snapshot_derive(qx_snapshot_t **out, qx_snapshot_t *s, qx_dns_t *dns, qx_health_tab_t *ht);

qx_snapshot_t *qx_snapshot_ref(qx_snapshot_t *s);

/* Drops a reference; the last one frees. Accepts NULL. */
void qx_snapshot_unref(qx_snapshot_t *s);

/* The flat index of the next endpoint of route |route| in round-robin
 * order, shared by every worker, skipping endpoints ejected by passive
 * health unless all are; |skip| (or SIZE_MAX) is avoided too when another
 * endpoint exists (the one that just failed). Returns SIZE_MAX when the
 * route has no endpoint. The cursor lives with the routes it counts, so a
 * request that began under an older snapshot never indexes a newer one's
 * table. Thread-safe. */
size_t qx_snapshot_pick(qx_snapshot_t *s, int route, size_t skip, uint64_t now_ms);

#endif
