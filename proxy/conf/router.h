/*
 * router.h - picks the route for a request from the TLS SNI and the
 * :authority / Host. Built once per config snapshot, read-only afterwards,
 * so workers share it without locks.
 *
 * Order: exact match on SNI, exact match on the authority's host (port
 * stripped, case-insensitive), then "*.suffix" rules (longest suffix first;
 * SNI before authority), then "*". "*.example.com" matches
 * "a.example.com" and "a.b.example.com" but not "example.com".
 */
#ifndef QX_ROUTER_H
#define QX_ROUTER_H

#include "config/config.h"

#include <stddef.h>

typedef struct qx_router qx_router_t;

/* Builds a router over cfg->routes (cfg must outlive the router).
 * Returns 0, QX_ERR_NOMEM. */
int qx_router_new(qx_router_t **out, const qx_config_t *cfg);

/* Accepts NULL. */
void qx_router_del(qx_router_t *r);

/* Returns the index into cfg->routes of the matching route, or -1 when
 * nothing matches (the caller answers 421). sni and authority may be NULL
 * or empty. authority may carry a port ("host:443", "[::1]:8443"). */
int qx_router_match(const qx_router_t *r, const char *sni, size_t snilen, const char *authority,
                    size_t authlen);

#endif
