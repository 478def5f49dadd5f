/*
 * config_json.c - the configuration as JSON (see config_json.h): routes
 * and the effective config for the admin API, a deep copy, and a new
 * config built from a JSON route table.
 *
 * A JSON route table is checked here only for its shape (an object with
 * exactly "routes", each route an object of known keys with strings in
 * them); everything a route means is checked by qx_config_build_routes()
 * in config.c, the function the YAML loader calls too, so a table is valid
 * over the API exactly when it would be valid in the file. Messages keep
 * the loader's form "<field>: <reason>" and the field travels on its own
 * for the API's {"error", "field"}.
 */
#include "config/config_json.h"

#include "base/qx.h"
#include "config/config_internal.h"

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Config -> JSON                                                           */
/* ------------------------------------------------------------------------ */

/* json_object_set_new() releases |value| on failure too; a NULL value (a
 * failed constructor) is refused, so one check per key suffices. */
static int set(json_t *obj, const char *key, json_t *value)
{
    return json_object_set_new(obj, key, value) == 0 ? 0 : -1;
}

/* NULL becomes JSON null: an absent optional key. */
static json_t *string_or_null(const char *s)
{
    return s != NULL ? json_string(s) : json_null();
}

/* jansson integers are signed 64-bit. A byte limit above that (the schema
 * allows up to 2^64-1) is shown as a JSON number that is not an integer
 * rather than as a wrapped negative one. */
static json_t *u64(uint64_t v)
{
    if (v > (uint64_t)LLONG_MAX) /* json_int_t is long long */
        return json_real((double)v);
    return json_integer((json_int_t)v);
}

static json_t *route_to_json(const qx_route_cfg_t *r)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    if (set(o, "match", json_string(r->match)) != 0)
        goto fail;
    /* Only when off: the default stays out of documents written before it. */
    if (r->no_websocket && set(o, "websocket", json_false()) != 0)
        goto fail;
    if (r->protocol == QX_UP_PROTO_H2C && set(o, "protocol", json_string("h2c")) != 0)
        goto fail;
    if (r->single && r->nupstreams == 1) {
        if (set(o, "upstream", json_string(r->upstreams[0].name)) != 0)
            goto fail;
        return o;
    }
    json_t *list = json_array();
    if (set(o, "upstreams", list) != 0)
        goto fail;
    for (size_t i = 0; i < r->nupstreams; i++) {
        if (json_array_append_new(list, json_string(r->upstreams[i].name)) != 0)
            goto fail;
    }
    return o;

fail:
    json_decref(o);
    return NULL;
}

json_t *qx_config_routes_to_json(const qx_config_t *cfg)
{
    if (cfg == NULL)
        return NULL;
    json_t *a = json_array();
    if (a == NULL)
        return NULL;
    for (size_t i = 0; i < cfg->nroutes; i++) {
        if (json_array_append_new(a, route_to_json(&cfg->routes[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

/* Every limit, in the order of config.h and config/examples/qrux.yaml; a
 * limit added there is added here too. */
static json_t *limits_to_json(const qx_limits_t *l)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    if (set(o, "upstream_connect_timeout_secs", u64(l->upstream_connect_timeout_secs)) != 0 ||
        set(o, "upstream_request_timeout_secs", u64(l->upstream_request_timeout_secs)) != 0 ||
        set(o, "max_request_body_bytes", u64(l->max_request_body_bytes)) != 0 ||
        set(o, "max_upstream_response_body_bytes", u64(l->max_upstream_response_body_bytes)) != 0 ||
        set(o, "max_idle_connections_per_upstream", u64(l->max_idle_connections_per_upstream)) !=
            0 ||
        set(o, "graceful_shutdown_secs", u64(l->graceful_shutdown_secs)) != 0 ||
        set(o, "header_read_timeout_secs", u64(l->header_read_timeout_secs)) != 0 ||
        set(o, "body_idle_timeout_secs", u64(l->body_idle_timeout_secs)) != 0 ||
        set(o, "max_quic_connections", u64(l->max_quic_connections)) != 0 ||
        set(o, "max_quic_connections_per_ip", u64(l->max_quic_connections_per_ip)) != 0 ||
        set(o, "quic_handshake_timeout_secs", u64(l->quic_handshake_timeout_secs)) != 0 ||
        set(o, "quic_idle_timeout_secs", u64(l->quic_idle_timeout_secs)) != 0 ||
        set(o, "max_streams_per_connection", u64(l->max_streams_per_connection)) != 0 ||
        set(o, "retry_handshakes_threshold", u64(l->retry_handshakes_threshold)) != 0 ||
        set(o, "client_idle_timeout_secs", u64(l->client_idle_timeout_secs)) != 0 ||
        set(o, "upstream_idle_timeout_secs", u64(l->upstream_idle_timeout_secs)) != 0 ||
        set(o, "max_tcp_connections", u64(l->max_tcp_connections)) != 0 ||
        set(o, "max_tcp_connections_per_ip", u64(l->max_tcp_connections_per_ip)) != 0 ||
        set(o, "max_connections_per_upstream", u64(l->max_connections_per_upstream)) != 0 ||
        set(o, "websocket_idle_timeout_secs", u64(l->websocket_idle_timeout_secs)) != 0 ||
        set(o, "max_websocket_tunnels", u64(l->max_websocket_tunnels)) != 0 ||
        set(o, "max_websocket_tunnels_per_connection",
            u64(l->max_websocket_tunnels_per_connection)) != 0 ||
        set(o, "upstream_keepalive_timeout_secs", u64(l->upstream_keepalive_timeout_secs)) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* The token is read by the admin server from token_file; the config holds
 * only the path, and so does its JSON. */
static json_t *admin_to_json(const qx_admin_cfg_t *a)
{
    if (a->listen == NULL)
        return json_null();
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    if (set(o, "listen", json_string(a->listen)) != 0 ||
        set(o, "token_file", string_or_null(a->token_file)) != 0 ||
        set(o, "ready_requires_upstream", json_boolean(a->ready_requires_upstream)) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* Resolver settings as configured: null where /etc/resolv.conf decides. */
static json_t *dns_to_json(const qx_dns_cfg_t *d)
{
    json_t *o = json_object();
    json_t *search = d->nsearch > 0 ? json_array() : json_null();
    if (o == NULL || search == NULL) {
        json_decref(o);
        json_decref(search);
        return NULL;
    }
    for (size_t i = 0; i < d->nsearch; i++) {
        if (json_array_append_new(search, json_string(d->search[i])) != 0) {
            json_decref(o);
            json_decref(search);
            return NULL;
        }
    }
    if (set(o, "servers", string_or_null(d->servers)) != 0 || set(o, "search", search) != 0 ||
        set(o, "ndots", d->ndots >= 0 ? u64((uint64_t)d->ndots) : json_null()) != 0 ||
        set(o, "min_ttl_secs", u64(d->min_ttl_secs)) != 0 ||
        set(o, "max_ttl_secs", u64(d->max_ttl_secs)) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *xdp_to_json(const qx_xdp_cfg_t *x)
{
    if (x->pin == NULL)
        return json_null();
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    if (set(o, "pin", json_string(x->pin)) != 0 ||
        set(o, "initial_rate", u64(x->initial_rate)) != 0 ||
        set(o, "initial_burst", u64(x->initial_burst)) != 0 ||
        set(o, "cid_key_rotate_secs", u64(x->cid_key_rotate_secs)) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *qx_config_to_json(const qx_config_t *cfg)
{
    if (cfg == NULL)
        return NULL;
    json_t *root = json_object();
    json_t *server = json_object();
    if (root == NULL || set(root, "server", server) != 0)
        goto fail;
    /* workers as configured: 0 means one per available CPU */
    if (set(server, "listen", string_or_null(cfg->listen)) != 0 ||
        set(server, "https_listen", string_or_null(cfg->https_listen)) != 0 ||
        set(server, "alt_svc_max_age", u64(cfg->alt_svc_max_age)) != 0 ||
        set(server, "drain_delay_secs", u64(cfg->drain_delay_secs)) != 0 ||
        set(server, "early_data",
            json_string(cfg->early_data == QX_EARLY_OFF   ? "off"
                        : cfg->early_data == QX_EARLY_ALL ? "all"
                                                          : "safe")) != 0 ||
        set(server, "retry",
            json_string(cfg->retry == QX_RETRY_ALWAYS  ? "always"
                        : cfg->retry == QX_RETRY_NEVER ? "never"
                                                       : "auto")) != 0 ||
        set(server, "ticket_key_file", string_or_null(cfg->ticket_key_file)) != 0 ||
        set(server, "cert", string_or_null(cfg->cert)) != 0 ||
        set(server, "key", string_or_null(cfg->key)) != 0 ||
        set(server, "workers", u64(cfg->workers)) != 0 ||
        set(server, "limits", limits_to_json(&cfg->limits)) != 0)
        goto fail;
    if (set(root, "routes", qx_config_routes_to_json(cfg)) != 0)
        goto fail;
    if (set(root, "admin", admin_to_json(&cfg->admin)) != 0)
        goto fail;
    if (set(root, "dns", dns_to_json(&cfg->dns)) != 0)
        goto fail;
    if (set(root, "xdp", xdp_to_json(&cfg->xdp)) != 0)
        goto fail;
    json_t *log = json_object();
    if (set(root, "log", log) != 0 ||
        set(log, "format", json_string(cfg->log_json ? "json" : "text")) != 0)
        goto fail;
    return root;

fail:
    json_decref(root);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Deep copy                                                                */
/* ------------------------------------------------------------------------ */

/* strdup that keeps NULL as NULL; *ok turns false on allocation failure. */
static char *dup_str(const char *s, bool *ok)
{
    if (s == NULL)
        return NULL;
    char *d = strdup(s);
    if (d == NULL)
        *ok = false;
    return d;
}

/* Everything but the route table, which the caller copies or rebuilds. */
static qx_config_t *dup_without_routes(const qx_config_t *cfg)
{
    bool ok = true;
    qx_config_t *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return NULL;
    /* the scalars and sockaddrs; every pointer is replaced below */
    *d = *cfg;
    d->routes = NULL;
    d->nroutes = 0;
    d->path = dup_str(cfg->path, &ok);
    d->listen = dup_str(cfg->listen, &ok);
    d->https_listen = dup_str(cfg->https_listen, &ok);
    d->ticket_key_file = dup_str(cfg->ticket_key_file, &ok);
    d->cert = dup_str(cfg->cert, &ok);
    d->key = dup_str(cfg->key, &ok);
    d->admin.listen = dup_str(cfg->admin.listen, &ok);
    d->admin.token_file = dup_str(cfg->admin.token_file, &ok);
    d->xdp.pin = dup_str(cfg->xdp.pin, &ok);
    d->dns.servers = dup_str(cfg->dns.servers, &ok);
    d->dns.search = NULL;
    d->dns.nsearch = 0;
    if (ok && cfg->dns.nsearch > 0) {
        if ((d->dns.search = calloc(cfg->dns.nsearch, sizeof(char *))) == NULL)
            ok = false;
        for (size_t i = 0; ok && i < cfg->dns.nsearch; i++) {
            d->dns.search[i] = dup_str(cfg->dns.search[i], &ok);
            d->dns.nsearch = i + 1;
        }
    }
    if (!ok) {
        qx_config_del(d);
        return NULL;
    }
    return d;
}

static int dup_route(qx_route_cfg_t *d, const qx_route_cfg_t *r)
{
    bool ok = true;

    d->single = r->single;
    d->no_websocket = r->no_websocket;
    d->protocol = r->protocol;
    if ((d->match = dup_str(r->match, &ok)) == NULL && !ok)
        return QX_ERR_NOMEM;
    if (r->nupstreams == 0)
        return 0;
    if ((d->upstreams = calloc(r->nupstreams, sizeof(*d->upstreams))) == NULL)
        return QX_ERR_NOMEM;
    d->nupstreams = r->nupstreams;
    for (size_t j = 0; j < r->nupstreams; j++) {
        d->upstreams[j] = r->upstreams[j];
        d->upstreams[j].host = NULL; /* not the original's, if the name's copy fails */
        d->upstreams[j].name = dup_str(r->upstreams[j].name, &ok);
        d->upstreams[j].host = dup_str(r->upstreams[j].host, &ok);
        if (!ok)
            return QX_ERR_NOMEM;
    }
    return 0;
}

qx_config_t *qx_config_dup(const qx_config_t *cfg)
{
    if (cfg == NULL)
        return NULL;
    qx_config_t *d = dup_without_routes(cfg);
    if (d == NULL)
        return NULL;
    if (cfg->nroutes > 0) {
        if ((d->routes = calloc(cfg->nroutes, sizeof(*d->routes))) == NULL)
            goto fail;
        d->nroutes = cfg->nroutes;
        for (size_t i = 0; i < cfg->nroutes; i++) {
            if (dup_route(&d->routes[i], &cfg->routes[i]) != 0)
                goto fail;
        }
    }
    return d;

fail:
    qx_config_del(d);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* JSON route table -> config                                               */
/* ------------------------------------------------------------------------ */

/* jansson quotes the offending text, which may hold a control character. */
static void one_line(char *s)
{
    for (char *p = s; *p != '\0'; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    }
}

typedef struct json_errbuf {
    char *err;
    size_t errlen;
    char *field;
    size_t fieldlen;
} json_errbuf_t;

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "something else";
}

static int wrong_type(const json_errbuf_t *e, const char *path, const char *want, const json_t *v)
{
    return qx_config_fail_at(e->err, e->errlen, e->field, e->fieldlen, path, "must be %s, not %s",
                             want, type_name(v));
}

/* A route's JSON must be an object of known keys with strings where the
 * file has scalars; what the strings mean is checked by the route builder.
 * |list| receives the upstreams' strings (owned by the JSON document). */
static int route_spec(qx_route_spec_t *spec, const json_t *v, size_t i, const char ***list,
                      const json_errbuf_t *e)
{
    char path[96];
    const char *key;
    json_t *val;

    memset(spec, 0, sizeof(*spec));
    spec->websocket = -1;
    snprintf(path, sizeof(path), "routes[%zu]", i);
    if (!json_is_object(v))
        return wrong_type(e, path, "an object", v);

    json_object_foreach((json_t *)v, key, val)
    {
        if (strcmp(key, "match") == 0) {
            snprintf(path, sizeof(path), "routes[%zu].match", i);
            if (!json_is_string(val))
                return wrong_type(e, path, "a string", val);
            spec->match = json_string_value(val);
        } else if (strcmp(key, "upstream") == 0) {
            snprintf(path, sizeof(path), "routes[%zu].upstream", i);
            if (!json_is_string(val))
                return wrong_type(e, path, "a string", val);
            spec->upstream = json_string_value(val);
        } else if (strcmp(key, "protocol") == 0) {
            snprintf(path, sizeof(path), "routes[%zu].protocol", i);
            if (!json_is_string(val))
                return wrong_type(e, path, "a string", val);
            spec->protocol = json_string_value(val);
        } else if (strcmp(key, "upstreams") == 0) {
            snprintf(path, sizeof(path), "routes[%zu].upstreams", i);
            if (!json_is_array(val))
                return wrong_type(e, path, "an array", val);
            size_t n = json_array_size(val);
            /* one spare entry: calloc(0) may return NULL */
            if ((*list = calloc(n + 1, sizeof(**list))) == NULL)
                return QX_ERR_NOMEM;
            for (size_t j = 0; j < n; j++) {
                const json_t *u = json_array_get(val, j);
                snprintf(path, sizeof(path), "routes[%zu].upstreams[%zu]", i, j);
                if (!json_is_string(u))
                    return wrong_type(e, path, "a string", u);
                (*list)[j] = json_string_value(u);
            }
            spec->upstreams = *list;
            spec->nupstreams = n;
            spec->has_upstreams = true;
        } else if (strcmp(key, "websocket") == 0) {
            snprintf(path, sizeof(path), "routes[%zu].websocket", i);
            if (!json_is_boolean(val))
                return wrong_type(e, path, "true or false", val);
            spec->websocket = json_is_true(val) ? 1 : 0;
        } else {
            snprintf(path, sizeof(path), "routes[%zu].%s", i, key);
            return qx_config_fail_at(e->err, e->errlen, e->field, e->fieldlen, path, "unknown key");
        }
    }
    return 0;
}

/* Checks the document's shape and fills specs[0..n) (n = the routes
 * array's size); lists[i] holds route i's upstream strings. */
static int doc_specs(const json_t *doc, qx_route_spec_t **specs, const char ***lists[], size_t *n,
                     const json_errbuf_t *e)
{
    const char *key;
    json_t *val, *routes = NULL;
    int rv;

    if (!json_is_object(doc)) {
        /* the loader's word for the whole document */
        qx_config_fail_at(e->err, e->errlen, e->field, e->fieldlen, "document",
                          "must be an object {\"routes\": [...]}, not %s", type_name(doc));
        if (e->field != NULL && e->fieldlen > 0)
            e->field[0] = '\0';
        return QX_ERR_CONFIG;
    }
    json_object_foreach((json_t *)doc, key, val)
    {
        if (strcmp(key, "routes") != 0)
            return qx_config_fail_at(e->err, e->errlen, e->field, e->fieldlen, key, "unknown key");
        routes = val;
    }
    if (routes == NULL)
        return qx_config_fail_at(e->err, e->errlen, e->field, e->fieldlen, "routes", "is required");
    if (!json_is_array(routes))
        return wrong_type(e, "routes", "an array", routes);

    *n = json_array_size(routes);
    if ((*specs = calloc(*n + 1, sizeof(**specs))) == NULL ||
        (*lists = calloc(*n + 1, sizeof(**lists))) == NULL)
        return QX_ERR_NOMEM;
    for (size_t i = 0; i < *n; i++) {
        if ((rv = route_spec(&(*specs)[i], json_array_get(routes, i), i, &(*lists)[i], e)) != 0)
            return rv;
    }
    return 0;
}

int qx_config_with_routes_json(const qx_config_t *base, const char *body, size_t len,
                               qx_config_t **out, char *err, size_t errlen, char *field,
                               size_t fieldlen)
{
    const json_errbuf_t e = {err, errlen, field, fieldlen};
    qx_route_spec_t *specs = NULL;
    const char ***lists = NULL;
    qx_config_t *cfg = NULL;
    json_error_t jerr;
    json_t *doc;
    size_t n = 0;
    int rv;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (field != NULL && fieldlen > 0)
        field[0] = '\0';
    if (out == NULL || base == NULL || (body == NULL && len > 0))
        return QX_ERR_INVAL;
    *out = NULL;

    /* Duplicate keys are refused: {"routes": A, "routes": B} would
     * otherwise apply B silently while a reviewer of the body reads A.
     * Any JSON value is parsed so a wrong one gets a message about its
     * type, not a syntax error. */
    doc =
        json_loadb(body != NULL ? body : "", len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (doc == NULL) {
        if (err != NULL && errlen > 0) {
            snprintf(err, errlen, "malformed JSON at line %d column %d: %s", jerr.line, jerr.column,
                     jerr.text);
            one_line(err);
        }
        return QX_ERR_CONFIG;
    }

    if ((rv = doc_specs(doc, &specs, &lists, &n, &e)) != 0)
        goto out;
    if ((cfg = dup_without_routes(base)) == NULL) {
        rv = QX_ERR_NOMEM;
        goto out;
    }
    if ((rv = qx_config_build_routes(cfg, specs, n, err, errlen, field, fieldlen)) != 0)
        goto out;
    *out = cfg;
    cfg = NULL;

out:
    if (rv == QX_ERR_NOMEM) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "out of memory");
        if (field != NULL && fieldlen > 0)
            field[0] = '\0';
    }
    qx_config_del(cfg);
    if (lists != NULL) {
        for (size_t i = 0; i < n; i++)
            free(lists[i]);
        free(lists);
    }
    free(specs);
    json_decref(doc);
    return rv;
}
