/*
 * config_internal.h - what config.c shares with config_json.c and nothing
 * else: the one route-table builder both loaders (YAML file, JSON route
 * API) call, so a route is validated by the same code whichever way it
 * arrives. Not for other modules: they use config.h and config_json.h.
 */
#ifndef QX_CONFIG_INTERNAL_H
#define QX_CONFIG_INTERNAL_H

#include "config/config.h"

#include <stdbool.h>
#include <stddef.h>

/* One route as written, before any check. The strings belong to the
 * loader's document and are copied. */
typedef struct qx_route_spec {
    const char *match;            /* NULL when the key is absent */
    const char *upstream;         /* NULL when the key is absent */
    const char *const *upstreams; /* the list's entries, none NULL */
    size_t nupstreams;            /* may be 0 (then "must not be empty") */
    bool has_upstreams;           /* the `upstreams` key is present */
    int websocket;                /* -1 absent (on), 0 false, 1 true */
    const char *protocol;         /* "h1" or "h2c"; NULL when absent (h1) */
} qx_route_spec_t;

/*
 * Validates specs[0..n) and stores the route table in cfg->routes and
 * cfg->nroutes (which must be empty): at least one route; match forms,
 * lowercased, one trailing dot dropped; no match twice; upstream XOR
 * upstreams, a non-empty list; every address parsed. On failure returns
 * QX_ERR_CONFIG (or QX_ERR_NOMEM), writes "<field>: <reason>" into err and
 * the field path alone ("routes[1].upstreams[0]", "routes") into field
 * (field may be NULL); a half-built table is left for qx_config_del.
 */
int qx_config_build_routes(qx_config_t *cfg, const qx_route_spec_t *specs, size_t n, char *err,
                           size_t errlen, char *field, size_t fieldlen);

/* Writes the path into field and "<path>: <reason>" into err, both on one
 * line, and returns QX_ERR_CONFIG. Either buffer may be NULL. */
int qx_config_fail_at(char *err, size_t errlen, char *field, size_t fieldlen, const char *path,
                      const char *fmt, ...) __attribute__((format(printf, 6, 7)));

#endif
