/*
 * config_json.h - the configuration as JSON (jansson), for the admin
 * route API and GET /config: routes in the YAML's shape, and a new config
 * built from a JSON route table, validated exactly like the file.
 */
#ifndef QX_CONFIG_JSON_H
#define QX_CONFIG_JSON_H

#include "config/config.h"

#include <jansson.h>
#include <stddef.h>

/* [{"match": "...", "upstream": "..."} | {"match": "...", "upstreams": [...]}, ...]
 * in config order; "upstream" when the route was written that way. NULL on
 * allocation failure. The caller owns the reference. */
json_t *qx_config_routes_to_json(const qx_config_t *cfg);

/* The effective config (every key, defaults filled in) in the YAML's shape;
 * secrets redacted: admin.token_file is shown as a path, never the token,
 * and the private key's path is shown but never its content. */
json_t *qx_config_to_json(const qx_config_t *cfg);

/*
 * Parses body[len] = {"routes": [...]} and returns in *out a copy of |base|
 * with that route table, validated with the same rules as the YAML file
 * (at least one route, match forms, duplicates, upstream XOR upstreams,
 * addresses). Unknown keys are rejected. On failure returns QX_ERR_CONFIG
 * and writes a one-line reason into err and the field path (e.g.
 * "routes[1].upstreams[0]", or "" for malformed JSON) into field.
 */
int qx_config_with_routes_json(const qx_config_t *base, const char *body, size_t len,
                               qx_config_t **out, char *err, size_t errlen, char *field,
                               size_t fieldlen);

/* A deep copy (for building variants of a config). NULL on allocation
 * failure. */
qx_config_t *qx_config_dup(const qx_config_t *cfg);

#endif
