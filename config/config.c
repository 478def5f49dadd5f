/*
 * config.c - loads the qrux YAML configuration with libcyaml, applies the
 * defaults and validates every field (see config.h).
 *
 * Loading is two steps. libcyaml reads the document into a "raw" tree that
 * mirrors the YAML exactly (strings, sequences, NULL for an absent optional
 * key); then build_config() checks every field and builds the qx_config_t
 * the rest of the proxy uses. All errors become one line
 * "<field path>: <reason>", including the ones libcyaml reports through its
 * log callback (unknown key, wrong YAML type, syntax error).
 *
 * The route table is built by qx_config_build_routes(), which the JSON
 * route API (config_json.c) calls too: a rule about routes lives there
 * only, so the file and the API cannot disagree.
 *
 * No global mutable state: the log capture buffer travels through
 * cyaml_config_t.log_ctx, so two threads may load configs at once.
 */
#include "config/config.h"

#include "base/qx.h"
#include "base/str.h"
#include "config/config_internal.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <cyaml/cyaml.h>
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#define QX_CONFIG_MAX_WORKERS 1024
#define QX_CONFIG_MAX_FILE (4u << 20) /* a config is a few KiB; refuse anything absurd */
#define QX_HOST_MAX 253               /* longest DNS name in text form */

/* ------------------------------------------------------------------------ */
/* Raw document: what libcyaml fills in                                     */
/* ------------------------------------------------------------------------ */

/*
 * Numbers are loaded as strings and parsed by parse_number(): libcyaml 1.3
 * reads integers with strtoull() and only checks that *some* digits were
 * consumed, so "-1" silently wraps to 2^64-1 and "10MB" loads as 10. A
 * config that says 10MB and means 10 bytes must be an error, not a limit.
 */
typedef struct raw_limits {
    char *upstream_connect_timeout_secs;
    char *upstream_request_timeout_secs;
    char *max_request_body_bytes;
    char *max_upstream_response_body_bytes;
    char *max_idle_connections_per_upstream;
    char *graceful_shutdown_secs;
    char *header_read_timeout_secs;
    char *body_idle_timeout_secs;
    char *max_quic_connections;
    char *max_quic_connections_per_ip;
    char *quic_handshake_timeout_secs;
    char *quic_idle_timeout_secs;
    char *max_streams_per_connection;
    char *retry_handshakes_threshold;
    char *client_idle_timeout_secs;
    char *upstream_idle_timeout_secs;
    char *max_tcp_connections;
    char *max_tcp_connections_per_ip;
    char *max_connections_per_upstream;
    char *websocket_idle_timeout_secs;
    char *max_websocket_tunnels;
    char *max_websocket_tunnels_per_connection;
    char *upstream_keepalive_timeout_secs;
} raw_limits_t;

typedef struct raw_server {
    char *listen;
    char *https_listen;
    char *alt_svc_max_age;
    char *drain_delay_secs;
    char *early_data;
    char *retry;
    char *ticket_key_file;
    char *cert;
    char *key;
    char *workers;
    raw_limits_t *limits;
} raw_server_t;

typedef struct raw_route {
    char *match;
    char *upstream;
    char **upstreams;
    unsigned nupstreams;
    char *websocket;
    char *protocol;
} raw_route_t;

typedef struct raw_admin {
    char *listen;
    char *token_file;
    char *ready_requires_upstream;
} raw_admin_t;

typedef struct raw_dns {
    char **servers;
    unsigned nservers;
    char **search;
    unsigned nsearch;
    char *ndots;
    char *min_ttl_secs;
    char *max_ttl_secs;
} raw_dns_t;

typedef struct raw_log {
    char *format;
} raw_log_t;

typedef struct raw_xdp {
    char *pin;
    char *initial_rate;
    char *initial_burst;
    char *cid_key_rotate_secs;
} raw_xdp_t;

typedef struct raw_doc {
    raw_server_t *server;
    raw_route_t *routes;
    unsigned nroutes;
    raw_admin_t *admin;
    raw_dns_t *dns;
    raw_xdp_t *xdp;
    raw_log_t *log;
} raw_doc_t;

/*
 * Every key is optional in the schema and required keys are checked in
 * build_config(): libcyaml 1.3 reports a missing key with the backtrace of
 * the last key it read, which would name the wrong field. Keys that are not
 * listed here are rejected by libcyaml (CYAML_CFG_IGNORE_UNKNOWN_KEYS is not
 * set). When a key is added here, add it to config/examples/qrux.yaml too.
 */
#define OPT_STR(key, type, member)                                                                 \
    CYAML_FIELD_STRING_PTR(key, CYAML_FLAG_OPTIONAL, type, member, 0, CYAML_UNLIMITED)

static const cyaml_schema_field_t limits_fields[] = {
    OPT_STR("upstream_connect_timeout_secs", raw_limits_t, upstream_connect_timeout_secs),
    OPT_STR("upstream_request_timeout_secs", raw_limits_t, upstream_request_timeout_secs),
    OPT_STR("max_request_body_bytes", raw_limits_t, max_request_body_bytes),
    OPT_STR("max_upstream_response_body_bytes", raw_limits_t, max_upstream_response_body_bytes),
    OPT_STR("max_idle_connections_per_upstream", raw_limits_t, max_idle_connections_per_upstream),
    OPT_STR("graceful_shutdown_secs", raw_limits_t, graceful_shutdown_secs),
    OPT_STR("header_read_timeout_secs", raw_limits_t, header_read_timeout_secs),
    OPT_STR("body_idle_timeout_secs", raw_limits_t, body_idle_timeout_secs),
    OPT_STR("max_quic_connections", raw_limits_t, max_quic_connections),
    OPT_STR("max_quic_connections_per_ip", raw_limits_t, max_quic_connections_per_ip),
    OPT_STR("quic_handshake_timeout_secs", raw_limits_t, quic_handshake_timeout_secs),
    OPT_STR("quic_idle_timeout_secs", raw_limits_t, quic_idle_timeout_secs),
    OPT_STR("max_streams_per_connection", raw_limits_t, max_streams_per_connection),
    OPT_STR("retry_handshakes_threshold", raw_limits_t, retry_handshakes_threshold),
    OPT_STR("client_idle_timeout_secs", raw_limits_t, client_idle_timeout_secs),
    OPT_STR("upstream_idle_timeout_secs", raw_limits_t, upstream_idle_timeout_secs),
    OPT_STR("max_tcp_connections", raw_limits_t, max_tcp_connections),
    OPT_STR("max_tcp_connections_per_ip", raw_limits_t, max_tcp_connections_per_ip),
    OPT_STR("max_connections_per_upstream", raw_limits_t, max_connections_per_upstream),
    OPT_STR("websocket_idle_timeout_secs", raw_limits_t, websocket_idle_timeout_secs),
    OPT_STR("max_websocket_tunnels", raw_limits_t, max_websocket_tunnels),
    OPT_STR("max_websocket_tunnels_per_connection", raw_limits_t,
            max_websocket_tunnels_per_connection),
    OPT_STR("upstream_keepalive_timeout_secs", raw_limits_t, upstream_keepalive_timeout_secs),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t server_fields[] = {
    OPT_STR("listen", raw_server_t, listen),
    OPT_STR("https_listen", raw_server_t, https_listen),
    OPT_STR("alt_svc_max_age", raw_server_t, alt_svc_max_age),
    OPT_STR("drain_delay_secs", raw_server_t, drain_delay_secs),
    OPT_STR("early_data", raw_server_t, early_data),
    OPT_STR("retry", raw_server_t, retry),
    OPT_STR("ticket_key_file", raw_server_t, ticket_key_file),
    OPT_STR("cert", raw_server_t, cert),
    OPT_STR("key", raw_server_t, key),
    OPT_STR("workers", raw_server_t, workers),
    CYAML_FIELD_MAPPING_PTR("limits", CYAML_FLAG_OPTIONAL, raw_server_t, limits, limits_fields),
    CYAML_FIELD_END,
};

static const cyaml_schema_value_t upstream_entry = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 0, CYAML_UNLIMITED),
};

static const cyaml_schema_field_t route_fields[] = {
    OPT_STR("match", raw_route_t, match),
    OPT_STR("upstream", raw_route_t, upstream),
    CYAML_FIELD_SEQUENCE_COUNT("upstreams", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, raw_route_t,
                               upstreams, nupstreams, &upstream_entry, 0, CYAML_UNLIMITED),
    OPT_STR("websocket", raw_route_t, websocket),
    OPT_STR("protocol", raw_route_t, protocol),
    CYAML_FIELD_END,
};

static const cyaml_schema_value_t route_entry = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, raw_route_t, route_fields),
};

static const cyaml_schema_field_t admin_fields[] = {
    OPT_STR("listen", raw_admin_t, listen),
    OPT_STR("token_file", raw_admin_t, token_file),
    OPT_STR("ready_requires_upstream", raw_admin_t, ready_requires_upstream),
    CYAML_FIELD_END,
};

static const cyaml_schema_value_t dns_string = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 0, CYAML_UNLIMITED),
};

static const cyaml_schema_field_t dns_fields[] = {
    CYAML_FIELD_SEQUENCE_COUNT("servers", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, raw_dns_t,
                               servers, nservers, &dns_string, 0, 16),
    CYAML_FIELD_SEQUENCE_COUNT("search", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, raw_dns_t,
                               search, nsearch, &dns_string, 0, 16),
    OPT_STR("ndots", raw_dns_t, ndots),
    OPT_STR("min_ttl_secs", raw_dns_t, min_ttl_secs),
    OPT_STR("max_ttl_secs", raw_dns_t, max_ttl_secs),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t xdp_fields[] = {
    OPT_STR("pin", raw_xdp_t, pin),
    OPT_STR("initial_rate", raw_xdp_t, initial_rate),
    OPT_STR("initial_burst", raw_xdp_t, initial_burst),
    OPT_STR("cid_key_rotate_secs", raw_xdp_t, cid_key_rotate_secs),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t log_fields[] = {
    OPT_STR("format", raw_log_t, format),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t doc_fields[] = {
    CYAML_FIELD_MAPPING_PTR("server", CYAML_FLAG_OPTIONAL, raw_doc_t, server, server_fields),
    CYAML_FIELD_SEQUENCE_COUNT("routes", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, raw_doc_t,
                               routes, nroutes, &route_entry, 0, CYAML_UNLIMITED),
    CYAML_FIELD_MAPPING_PTR("admin", CYAML_FLAG_OPTIONAL, raw_doc_t, admin, admin_fields),
    CYAML_FIELD_MAPPING_PTR("dns", CYAML_FLAG_OPTIONAL, raw_doc_t, dns, dns_fields),
    CYAML_FIELD_MAPPING_PTR("xdp", CYAML_FLAG_OPTIONAL, raw_doc_t, xdp, xdp_fields),
    CYAML_FIELD_MAPPING_PTR("log", CYAML_FLAG_OPTIONAL, raw_doc_t, log, log_fields),
    CYAML_FIELD_END,
};

static const cyaml_schema_value_t doc_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, raw_doc_t, doc_fields),
};

/* ------------------------------------------------------------------------ */
/* Error messages                                                           */
/* ------------------------------------------------------------------------ */

/* Values quoted from the document may hold control characters (a YAML
 * "\n" escape, a JSON "\u0007"); they are replaced so a message stays one
 * line. */
static void one_line(char *s)
{
    for (char *p = s; *p != '\0'; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    }
}

/* Writes "<fmt ...>" into err as one line and returns QX_ERR_CONFIG. */
static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return QX_ERR_CONFIG;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    one_line(err);
    return QX_ERR_CONFIG;
}

/* The route checks report the field on its own too, for the route API's
 * {"error", "field"}; the message is the same "<field>: <reason>". */
int qx_config_fail_at(char *err, size_t errlen, char *field, size_t fieldlen, const char *path,
                      const char *fmt, ...)
{
    if (field != NULL && fieldlen > 0) {
        snprintf(field, fieldlen, "%s", path);
        one_line(field);
    }
    if (err == NULL || errlen == 0)
        return QX_ERR_CONFIG;
    int n = snprintf(err, errlen, "%s: ", path);
    size_t off = n < 0 ? 0 : QX_MIN((size_t)n, errlen - 1);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + off, errlen - off, fmt, ap);
    va_end(ap);
    one_line(err);
    return QX_ERR_CONFIG;
}

/* ------------------------------------------------------------------------ */
/* libcyaml log capture                                                     */
/* ------------------------------------------------------------------------ */

/*
 * libcyaml reports why it rejected a document only through its log
 * callback: first the reason ("Load: Unexpected key: foo"), then a backtrace,
 * innermost frame first ("  in mapping field 'limits' (line: 5, column: 5)",
 * "  in sequence entry '2' (...)"). We keep the reason and the frames and
 * turn them into "server.limits.foo: unknown key (line 7)".
 */
#define LOG_MAX_FRAMES 16

typedef enum { FRAME_FIELD, FRAME_MAPPING, FRAME_ENTRY } frame_kind_t;

typedef struct log_frame {
    frame_kind_t kind;
    char name[64];   /* FRAME_FIELD: the key */
    unsigned long n; /* FRAME_ENTRY: 1-based entry number as libcyaml counts */
} log_frame_t;

typedef struct log_capture {
    char reason[256];
    bool have_reason;
    bool in_backtrace;
    log_frame_t frames[LOG_MAX_FRAMES];
    size_t nframes;
} log_capture_t;

__attribute__((format(printf, 3, 0))) static void capture_log(cyaml_log_t level, void *ctx,
                                                              const char *fmt, va_list args)
{
    log_capture_t *lc = ctx;
    char line[512];

    if (level < CYAML_LOG_ERROR)
        return;
    vsnprintf(line, sizeof(line), fmt, args);
    line[strcspn(line, "\n")] = '\0';

    if (strcmp(line, "Load: Backtrace:") == 0) {
        lc->in_backtrace = true;
        return;
    }
    if (lc->in_backtrace) {
        if (lc->nframes == LOG_MAX_FRAMES)
            return;
        log_frame_t *f = &lc->frames[lc->nframes];
        const char *p;
        memset(f, 0, sizeof(*f));
        if ((p = strstr(line, "in mapping field '")) != NULL) {
            p += strlen("in mapping field '");
            size_t n = strcspn(p, "'");
            f->kind = FRAME_FIELD;
            snprintf(f->name, sizeof(f->name), "%.*s", (int)n, p);
        } else if ((p = strstr(line, "in sequence entry '")) != NULL) {
            f->kind = FRAME_ENTRY;
            f->n = strtoul(p + strlen("in sequence entry '"), NULL, 10);
        } else if (strstr(line, "in mapping") != NULL) {
            f->kind = FRAME_MAPPING;
        } else {
            return;
        }
        lc->nframes++;
        return;
    }
    if (!lc->have_reason) {
        const char *p = line;
        if (strncmp(p, "Load: ", 6) == 0)
            p += 6;
        snprintf(lc->reason, sizeof(lc->reason), "%.255s", p);
        lc->have_reason = true;
    }
}

/* Writes the backtrace as a field path ("routes[1].upstreams[0]"),
 * outermost first. */
static void capture_path(const log_capture_t *lc, char *path, size_t pathlen)
{
    size_t off = 0;

    path[0] = '\0';
    for (size_t i = lc->nframes; i-- > 0;) {
        const log_frame_t *f = &lc->frames[i];
        int n = 0;
        if (f->kind == FRAME_FIELD)
            n = snprintf(path + off, pathlen - off, "%s%s", off > 0 ? "." : "", f->name);
        else if (f->kind == FRAME_ENTRY && f->n > 0)
            n = snprintf(path + off, pathlen - off, "[%lu]", f->n - 1);
        if (n > 0)
            off = QX_MIN(off + (size_t)n, pathlen - 1);
    }
}

/* Where libyaml stopped: libcyaml passes on the parser's problem but not its
 * position, so the document is parsed once more with libyaml alone (only on
 * this error path) to find the line. */
static void yaml_syntax_error(const char *yaml, size_t len, char *err, size_t errlen)
{
    yaml_parser_t parser;
    yaml_event_t event;

    if (!yaml_parser_initialize(&parser)) {
        fail(err, errlen, "YAML syntax error");
        return;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    for (;;) {
        if (!yaml_parser_parse(&parser, &event)) {
            const char *problem = parser.problem != NULL ? parser.problem : "invalid YAML";
            size_t at = parser.problem_mark.index;
            if (at < len && yaml[at] == '\t')
                fail(err, errlen, "tabs are not allowed for indentation (line %zu)",
                     parser.problem_mark.line + 1);
            else if (parser.context != NULL)
                fail(err, errlen,
                     "YAML syntax error at line %zu, column %zu: %s %s (from line %zu)",
                     parser.problem_mark.line + 1, parser.problem_mark.column + 1, problem,
                     parser.context, parser.context_mark.line + 1);
            else
                fail(err, errlen, "YAML syntax error at line %zu, column %zu: %s",
                     parser.problem_mark.line + 1, parser.problem_mark.column + 1, problem);
            break;
        }
        bool end = event.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&event);
        if (end) {
            fail(err, errlen, "YAML syntax error");
            break;
        }
    }
    yaml_parser_delete(&parser);
}

/*
 * Finds the line of the node at |target| ("routes[1].upstreams[0]",
 * "server.limits.foo"; a mapping key's own line for a key path). libcyaml's
 * backtrace carries the line of the last key it accepted, not of the one it
 * rejected, so the document is walked once more with libyaml, only on this
 * error path. |nth| picks the n-th node at that path (2 for a duplicated
 * key). Returns the 1-based line, 0 when not found.
 */
#define LOCATE_MAX_DEPTH 32

typedef struct locate_level {
    bool is_map;
    bool expect_key;
    size_t idx;
    size_t pathlen;
} locate_level_t;

static size_t locate_line(const char *yaml, size_t len, const char *target, unsigned nth)
{
    yaml_parser_t parser;
    yaml_event_t ev;
    locate_level_t st[LOCATE_MAX_DEPTH];
    size_t depth = 0, plen = 0, line = 0;
    char path[256];
    unsigned seen = 0;

    if (!yaml_parser_initialize(&parser))
        return 0;
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    path[0] = '\0';
    while (line == 0 && yaml_parser_parse(&parser, &ev)) {
        yaml_event_type_t t = ev.type;
        bool node = t == YAML_SCALAR_EVENT || t == YAML_ALIAS_EVENT ||
                    t == YAML_MAPPING_START_EVENT || t == YAML_SEQUENCE_START_EVENT;
        locate_level_t *top = depth > 0 ? &st[depth - 1] : NULL;
        int n = -1;

        if (t == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        if (node && top != NULL && top->is_map && top->expect_key) {
            /* a key: its path is the parent's plus ".key" */
            top->expect_key = false;
            if (t == YAML_SCALAR_EVENT)
                n = snprintf(path + top->pathlen, sizeof(path) - top->pathlen, "%s%s",
                             top->pathlen > 0 ? "." : "", (const char *)ev.data.scalar.value);
            node = false; /* not a value: no container to push */
        } else if (node && top != NULL) {
            if (top->is_map)
                top->expect_key = true; /* read once the value (and its children) is done */
            else
                n = snprintf(path + top->pathlen, sizeof(path) - top->pathlen, "[%zu]", top->idx++);
        }
        if (n >= 0) {
            plen = QX_MIN(top->pathlen + (size_t)n, sizeof(path) - 1);
            if (strcmp(path, target) == 0 && ++seen == nth)
                line = ev.start_mark.line + 1;
        }
        if (node && (t == YAML_MAPPING_START_EVENT || t == YAML_SEQUENCE_START_EVENT)) {
            if (depth == LOCATE_MAX_DEPTH) {
                yaml_event_delete(&ev);
                break;
            }
            size_t base = depth > 0 ? plen : 0;
            st[depth++] = (locate_level_t){
                .is_map = t == YAML_MAPPING_START_EVENT, .expect_key = true, .pathlen = base};
        } else if (t == YAML_MAPPING_END_EVENT || t == YAML_SEQUENCE_END_EVENT) {
            if (depth > 0)
                depth--;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    return line;
}

/* The fields of the mapping at |parent| ("" for the document, "server",
 * "server.limits", "routes[0]"), from the schema; NULL when the path is not a
 * mapping of the schema. */
static const cyaml_schema_field_t *schema_fields_at(const char *parent)
{
    const cyaml_schema_field_t *fields = doc_fields;
    const char *p = parent;

    while (*p != '\0') {
        size_t n = strcspn(p, ".[");
        const cyaml_schema_field_t *f = fields;
        while (f->key != NULL && (strlen(f->key) != n || strncmp(f->key, p, n) != 0))
            f++;
        if (f->key == NULL)
            return NULL;
        const cyaml_schema_value_t *v = &f->value;
        p += n;
        while (*p == '[') {
            const char *e = strchr(p, ']');
            if (e == NULL || (v->type != CYAML_SEQUENCE && v->type != CYAML_SEQUENCE_FIXED))
                return NULL;
            v = v->sequence.entry;
            p = e + 1;
        }
        if (v->type != CYAML_MAPPING)
            return NULL;
        fields = v->mapping.fields;
        if (*p == '.')
            p++;
    }
    return fields;
}

/* Levenshtein distance of two short strings (keys), capped at 9. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[64];
    if (la >= QX_ARRAY_LEN(row) || lb >= QX_ARRAY_LEN(row))
        return 9;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = QX_MIN(row[j] + 1, row[j - 1] + 1);
            row[j] = QX_MIN(best, diag + (a[i - 1] != b[j - 1]));
            diag = up;
        }
    }
    return QX_MIN(row[lb], (size_t)9);
}

/* The known key of |parent| nearest to |key| (a typo: a distance of at most
 * a third of the key's length, at least 1), else the one known key that
 * starts with |key| (a unit left off: drain_delay, max_request_body), or
 * NULL. */
static const char *nearest_key(const char *parent, const char *key)
{
    const cyaml_schema_field_t *fields = schema_fields_at(parent);
    const char *best = NULL, *prefixed = NULL;
    size_t bestd = QX_MAX((size_t)1, strlen(key) / 3) + 1, nprefixed = 0, klen = strlen(key);
    for (const cyaml_schema_field_t *f = fields; f != NULL && f->key != NULL; f++) {
        size_t d = edit_distance(key, f->key);
        if (d < bestd) {
            bestd = d;
            best = f->key;
        }
        if (klen >= 4 && strncmp(f->key, key, klen) == 0) {
            prefixed = f->key;
            nprefixed++;
        }
    }
    if (best == NULL && nprefixed == 1)
        best = prefixed;
    return best;
}

/* Turns what libcyaml logged into one line naming the field. */
static int cyaml_error(cyaml_err_t cerr, const log_capture_t *lc, const char *yaml, size_t len,
                       char *err, size_t errlen)
{
    char path[256];
    const char *reason = lc->have_reason ? lc->reason : cyaml_strerror(cerr);
    const char *p;
    char where[48] = "";
    size_t line;

    if (cerr == CYAML_ERR_OOM) {
        fail(err, errlen, "out of memory");
        return QX_ERR_NOMEM;
    }
    if (cerr == CYAML_ERR_LIBYAML_PARSER) {
        yaml_syntax_error(yaml, len, err, errlen);
        return QX_ERR_CONFIG;
    }
    capture_path(lc, path, sizeof(path));

    if ((p = strstr(reason, "Unexpected key: ")) != NULL) {
        size_t off = strlen(path);
        p += strlen("Unexpected key: ");
        const char *near = nearest_key(path, p);
        snprintf(path + off, sizeof(path) - off, "%s%s", off > 0 ? "." : "", p);
        if ((line = locate_line(yaml, len, path, 1)) > 0)
            snprintf(where, sizeof(where), " (line %zu)", line);
        if (near != NULL)
            return fail(err, errlen, "%s: unknown key%s; did you mean %s?", path, where, near);
        return fail(err, errlen, "%s: unknown key%s", path, where);
    }
    if ((p = strstr(reason, "Mapping field already seen: ")) != NULL) {
        if ((line = locate_line(yaml, len, path, 2)) > 0)
            snprintf(where, sizeof(where), " (line %zu)", line);
        return fail(err, errlen, "%s: appears more than once%s", path[0] ? path : p, where);
    }
    if ((line = locate_line(yaml, len, path, 1)) > 0)
        snprintf(where, sizeof(where), " (line %zu)", line);
    if (strncmp(reason, "Expecting ", 10) == 0) {
        /* "Expecting STRING, got event: SEQUENCE_START" */
        char want[32] = "", got[32] = "";
        if (sscanf(reason, "Expecting %31[A-Z_], got event: %31[A-Z_]", want, got) == 2) {
            const char *w = strcmp(want, "STRING") == 0     ? "a scalar"
                            : strcmp(want, "MAPPING") == 0  ? "a mapping"
                            : strcmp(want, "SEQUENCE") == 0 ? "a list"
                                                            : want;
            const char *g = strcmp(got, "SCALAR") == 0           ? "a scalar"
                            : strcmp(got, "MAPPING_START") == 0  ? "a mapping"
                            : strcmp(got, "SEQUENCE_START") == 0 ? "a list"
                                                                 : got;
            return fail(err, errlen, "%s: must be %s, not %s%s", path[0] ? path : "document", w, g,
                        where);
        }
    }
    return fail(err, errlen, "%s: %s%s", path[0] ? path : "document", reason, where);
}

/* ------------------------------------------------------------------------ */
/* Field checks                                                             */
/* ------------------------------------------------------------------------ */

/* Strict decimal: digits only, no sign, no suffix. Sets *why on failure. */
static int parse_number(const char *s, uint64_t max, uint64_t *out, const char **why)
{
    uint64_t v = 0;
    const char *p = s;

    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '-' && isdigit((unsigned char)p[1])) {
        *why = "must not be negative";
        return QX_ERR_INVAL;
    }
    if (!isdigit((unsigned char)*p)) {
        *why = NULL; /* caller says "is not a whole number" with the value */
        return QX_ERR_INVAL;
    }
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) {
            *why = "is too large";
            return QX_ERR_INVAL;
        }
        v = v * 10 + d;
    }
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p != '\0') {
        *why = NULL;
        return QX_ERR_INVAL;
    }
    if (v > max) {
        *why = "is too large";
        return QX_ERR_INVAL;
    }
    *out = v;
    return 0;
}

/*
 * Reads an optional number field: absent (s == NULL) gives def; zero is
 * rejected unless allow_zero. Messages name "<section>.<name>".
 */
static int number_field(const char *section, const char *name, const char *s, uint64_t def,
                        uint64_t max, bool allow_zero, uint64_t *out, char *err, size_t errlen)
{
    const char *why = NULL;

    if (s == NULL) {
        *out = def;
        return 0;
    }
    if (parse_number(s, UINT64_MAX, out, &why) != 0) {
        if (why == NULL)
            return fail(err, errlen, "%s.%s: \"%s\" is not a whole number", section, name, s);
        if (strcmp(why, "is too large") == 0)
            return fail(err, errlen, "%s.%s: must be <= %llu", section, name,
                        (unsigned long long)max);
        return fail(err, errlen, "%s.%s: %s", section, name, why);
    }
    if (*out > max)
        return fail(err, errlen, "%s.%s: must be <= %llu", section, name, (unsigned long long)max);
    if (*out == 0 && !allow_zero)
        return fail(err, errlen, "%s.%s: must be > 0", section, name);
    return 0;
}

static int parse_port(const char *s, uint16_t *port)
{
    uint64_t v;
    const char *why;

    /* parse_number skips blanks; an address has none */
    if (!isdigit((unsigned char)s[0]) || strlen(s) > 5)
        return QX_ERR_INVAL;
    if (parse_number(s, 65535, &v, &why) != 0 || v == 0)
        return QX_ERR_INVAL;
    *port = (uint16_t)v;
    return 0;
}

int qx_addr_parse(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *port_s;
    size_t hlen;
    uint16_t port;

    if (s == NULL || ss == NULL || len == NULL)
        return QX_ERR_INVAL;

    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return QX_ERR_INVAL;
        hlen = (size_t)(close - s - 1);
        if (hlen == 0 || hlen >= sizeof(host))
            return QX_ERR_INVAL;
        memcpy(host, s + 1, hlen);
        host[hlen] = '\0';
        port_s = close + 2;
        if (parse_port(port_s, &port) != 0)
            return QX_ERR_INVAL;

        struct sockaddr_in6 sin6;
        memset(&sin6, 0, sizeof(sin6));
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons(port);
        if (inet_pton(AF_INET6, host, &sin6.sin6_addr) != 1)
            return QX_ERR_INVAL;
        memset(ss, 0, sizeof(*ss));
        memcpy(ss, &sin6, sizeof(sin6));
        *len = sizeof(sin6);
        return 0;
    }

    /* An unbracketed IPv6 literal has more than one ':' and is refused:
     * "::1:8080" cannot say where the address ends. */
    const char *colon = strchr(s, ':');
    if (colon == NULL || strchr(colon + 1, ':') != NULL)
        return QX_ERR_INVAL;
    hlen = (size_t)(colon - s);
    if (hlen == 0 || hlen >= sizeof(host))
        return QX_ERR_INVAL;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    if (parse_port(colon + 1, &port) != 0)
        return QX_ERR_INVAL;

    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    if (strcmp(host, "localhost") == 0)
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
        return QX_ERR_INVAL;
    memset(ss, 0, sizeof(*ss));
    memcpy(ss, &sin, sizeof(sin));
    *len = sizeof(sin);
    return 0;
}

#define ADDR_FORMS "(host:port with an IPv4, [IPv6] or localhost)"
#define UPSTREAM_FORMS "(host:port with an IPv4, [IPv6], localhost or a DNS name)"

/* RFC 1123 host names: labels of letters, digits and '-' (not first or
 * last), 1..63 long, 253 in all; one trailing dot (a fully qualified name
 * that skips the search list). The last label is not all digits and the
 * first three are not all numbers, so a mistyped IPv4 address
 * ("10.0.0.256", "10.0.0.x") is not taken for a name. */
static bool dns_name_ok(const char *h, size_t len)
{
    if (len > 0 && h[len - 1] == '.')
        len--;
    if (len == 0 || len > 253)
        return false;
    size_t start = 0;
    bool all_digits = true;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || h[i] == '.') {
            size_t l = i - start;
            if (l == 0 || l > 63 || h[start] == '-' || h[i - 1] == '-')
                return false;
            if (i < len)
                all_digits = true;
            start = i + 1;
            continue;
        }
        char c = h[i];
        if (!isalnum((unsigned char)c) && c != '-')
            return false;
        if (!isdigit((unsigned char)c))
            all_digits = false;
    }
    if (all_digits)
        return false;
    /* "10.0.0.x" is a mistyped address more likely than a name. */
    const char *p = h;
    for (int i = 0; i < 3; i++) {
        if (!isdigit((unsigned char)*p))
            return true;
        while (isdigit((unsigned char)*p))
            p++;
        if (*p != '.')
            return true;
        p++;
    }
    return false;
}

int qx_upstream_parse(const char *s, qx_upstream_cfg_t *u)
{
    if (s == NULL || u == NULL)
        return QX_ERR_INVAL;
    u->host = NULL;
    if (qx_addr_parse(s, &u->addr, &u->addrlen) == 0) {
        u->port = ntohs(((const struct sockaddr_in *)&u->addr)->sin_port);
        return 0;
    }
    const char *colon = strrchr(s, ':');
    if (colon == NULL || s[0] == '[' || !dns_name_ok(s, (size_t)(colon - s)))
        return QX_ERR_INVAL;
    uint16_t port;
    if (parse_port(colon + 1, &port) != 0)
        return QX_ERR_INVAL;
    if ((u->host = strndup(s, (size_t)(colon - s))) == NULL)
        return QX_ERR_NOMEM;
    qx_ascii_lower_n(u->host, strlen(u->host));
    memset(&u->addr, 0, sizeof(u->addr));
    u->addrlen = 0;
    u->port = port;
    return 0;
}

static bool host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* A dot-separated name of [a-z0-9_-] labels, none empty (already lowercased). */
static bool valid_hostname(const char *h, size_t len)
{
    size_t label = 0;

    if (len == 0 || len > QX_HOST_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (h[i] == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if (host_char(h[i])) {
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return label > 0;
}

/*
 * Checks and normalises a route's match in place: lowercased, one trailing
 * dot dropped ("example.com." is the same name; the router drops it from
 * requests too). Allowed: "*", "*.suffix", a host name, an IPv6 literal
 * without brackets (what the router sees after stripping "[...]:port").
 * Keep in step with the matching in proxy/conf/router.c.
 */
static int normalize_match(char *m, const char **why)
{
    size_t len;

    len = strlen(m);
    qx_ascii_lower_n(m, len);
    if (len == 0) {
        *why = "must not be empty";
        return QX_ERR_INVAL;
    }
    if (strcmp(m, "*") == 0)
        return 0;
    if (len > 1 && m[len - 1] == '.' && m[len - 2] != '.' && m[len - 2] != '*')
        m[--len] = '\0';
    if (strchr(m, ':') != NULL) {
        struct in6_addr a6;
        if (inet_pton(AF_INET6, m, &a6) == 1)
            return 0;
        *why = NULL;
        return QX_ERR_INVAL;
    }
    if (m[0] == '*') {
        if (len > 2 && m[1] == '.' && valid_hostname(m + 2, len - 2))
            return 0;
        *why = NULL;
        return QX_ERR_INVAL;
    }
    if (!valid_hostname(m, len)) {
        *why = NULL;
        return QX_ERR_INVAL;
    }
    return 0;
}

/* Joins basedir and a relative path; absolute paths (or no basedir) are
 * copied as written. Returns NULL on allocation failure. */
static char *resolve_path(const char *basedir, const char *p)
{
    if (p[0] == '/' || basedir == NULL || basedir[0] == '\0')
        return strdup(p);
    size_t blen = strlen(basedir), plen = strlen(p);
    bool slash = basedir[blen - 1] != '/';
    char *out = malloc(blen + slash + plen + 1);
    if (out == NULL)
        return NULL;
    memcpy(out, basedir, blen);
    if (slash)
        out[blen] = '/';
    memcpy(out + blen + slash, p, plen + 1);
    return out;
}

/* ------------------------------------------------------------------------ */
/* Routes: the one builder both loaders call                                */
/* ------------------------------------------------------------------------ */

static int upstream_init(qx_upstream_cfg_t *u, const char *s, const char *path, char *err,
                         size_t errlen, char *field, size_t fieldlen)
{
    int rv = qx_upstream_parse(s, u);
    if (rv == QX_ERR_NOMEM)
        return rv;
    if (rv != 0)
        return qx_config_fail_at(err, errlen, field, fieldlen, path,
                                 "\"%s\" is not an address " UPSTREAM_FORMS, s);
    u->name = strdup(s);
    return u->name != NULL ? 0 : QX_ERR_NOMEM;
}

static int build_route(qx_route_cfg_t *r, const qx_route_spec_t *s, size_t i, char *err,
                       size_t errlen, char *field, size_t fieldlen)
{
    char path[64];
    const char *why = NULL;
    int rv;

    snprintf(path, sizeof(path), "routes[%zu].match", i);
    if (s->match == NULL)
        return qx_config_fail_at(err, errlen, field, fieldlen, path, "is required");
    r->match = strdup(s->match);
    if (r->match == NULL)
        return QX_ERR_NOMEM;
    if (normalize_match(r->match, &why) != 0) {
        if (why != NULL)
            return qx_config_fail_at(err, errlen, field, fieldlen, path, "%s", why);
        return qx_config_fail_at(err, errlen, field, fieldlen, path,
                                 "\"%s\" is not a host, \"*.suffix\" or \"*\"", s->match);
    }

    snprintf(path, sizeof(path), "routes[%zu]", i);
    if (s->upstream != NULL && s->has_upstreams)
        return qx_config_fail_at(err, errlen, field, fieldlen, path,
                                 "has both upstream and upstreams");
    if (s->upstream == NULL && !s->has_upstreams)
        return qx_config_fail_at(err, errlen, field, fieldlen, path, "needs upstream or upstreams");
    r->single = s->upstream != NULL;
    r->no_websocket = s->websocket == 0;
    if (!r->single && s->nupstreams == 0) {
        snprintf(path, sizeof(path), "routes[%zu].upstreams", i);
        return qx_config_fail_at(err, errlen, field, fieldlen, path, "must not be empty");
    }

    snprintf(path, sizeof(path), "routes[%zu].protocol", i);
    if (s->protocol == NULL || strcmp(s->protocol, "h1") == 0)
        r->protocol = QX_UP_PROTO_H1;
    else if (strcmp(s->protocol, "h2c") == 0)
        r->protocol = QX_UP_PROTO_H2C;
    else
        return qx_config_fail_at(err, errlen, field, fieldlen, path, "\"%s\" is not one of h1, h2c",
                                 s->protocol);

    size_t n = r->single ? 1 : s->nupstreams;
    r->upstreams = calloc(n, sizeof(*r->upstreams));
    if (r->upstreams == NULL)
        return QX_ERR_NOMEM;
    r->nupstreams = n;
    for (size_t j = 0; j < n; j++) {
        if (r->single)
            snprintf(path, sizeof(path), "routes[%zu].upstream", i);
        else
            snprintf(path, sizeof(path), "routes[%zu].upstreams[%zu]", i, j);
        rv = upstream_init(&r->upstreams[j], r->single ? s->upstream : s->upstreams[j], path, err,
                           errlen, field, fieldlen);
        if (rv != 0)
            return rv;
        r->upstreams[j].protocol = r->protocol;
    }
    return 0;
}

int qx_config_build_routes(qx_config_t *cfg, const qx_route_spec_t *specs, size_t n, char *err,
                           size_t errlen, char *field, size_t fieldlen)
{
    int rv;

    if (n == 0)
        return qx_config_fail_at(err, errlen, field, fieldlen, "routes",
                                 "at least one route is required");
    cfg->routes = calloc(n, sizeof(*cfg->routes));
    if (cfg->routes == NULL)
        return QX_ERR_NOMEM;
    cfg->nroutes = n;
    size_t nup = 0;
    for (size_t i = 0; i < n; i++) {
        if ((rv = build_route(&cfg->routes[i], &specs[i], i, err, errlen, field, fieldlen)) != 0)
            return rv;
        nup += cfg->routes[i].nupstreams;
        if (nup > QX_CONFIG_MAX_UPSTREAMS) {
            char path[64];
            snprintf(path, sizeof(path), "routes[%zu]", i);
            return qx_config_fail_at(err, errlen, field, fieldlen, path,
                                     "more than %d upstreams in all routes together",
                                     QX_CONFIG_MAX_UPSTREAMS);
        }
        /* Quadratic, but route lists are short and this runs once per load. */
        for (size_t j = 0; j < i; j++) {
            if (strcmp(cfg->routes[i].match, cfg->routes[j].match) == 0) {
                char path[64];
                snprintf(path, sizeof(path), "routes[%zu].match", i);
                return qx_config_fail_at(err, errlen, field, fieldlen, path,
                                         "\"%s\" is already used by routes[%zu]",
                                         cfg->routes[i].match, j);
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Server, limits, admin                                                    */
/* ------------------------------------------------------------------------ */

static int build_limits(qx_limits_t *l, const raw_limits_t *raw, char *err, size_t errlen)
{
    static const raw_limits_t none;
    const char *sec = "server.limits";
    uint64_t v;
    int rv;

    if (raw == NULL)
        raw = &none;
    /* defaults here and in config.h and config/examples/qrux.yaml change together */
    if ((rv = number_field(sec, "upstream_connect_timeout_secs", raw->upstream_connect_timeout_secs,
                           10, UINT32_MAX, false, &v, err, errlen)) != 0)
        return rv;
    l->upstream_connect_timeout_secs = (uint32_t)v;
    if ((rv = number_field(sec, "upstream_request_timeout_secs", raw->upstream_request_timeout_secs,
                           120, UINT32_MAX, false, &v, err, errlen)) != 0)
        return rv;
    l->upstream_request_timeout_secs = (uint32_t)v;
    if ((rv = number_field(sec, "max_request_body_bytes", raw->max_request_body_bytes, 10485760,
                           UINT64_MAX, false, &v, err, errlen)) != 0)
        return rv;
    l->max_request_body_bytes = v;
    if ((rv = number_field(sec, "max_upstream_response_body_bytes",
                           raw->max_upstream_response_body_bytes, 52428800, UINT64_MAX, false, &v,
                           err, errlen)) != 0)
        return rv;
    l->max_upstream_response_body_bytes = v;
    if ((rv = number_field(sec, "max_idle_connections_per_upstream",
                           raw->max_idle_connections_per_upstream, 256, UINT32_MAX, false, &v, err,
                           errlen)) != 0)
        return rv;
    l->max_idle_connections_per_upstream = (uint32_t)v;
    if ((rv = number_field(sec, "graceful_shutdown_secs", raw->graceful_shutdown_secs, 30,
                           UINT32_MAX, false, &v, err, errlen)) != 0)
        return rv;
    l->graceful_shutdown_secs = (uint32_t)v;
    /* HTTP/1.1 on the HTTPS listener: 0 would mean "no timeout", which is
     * exactly what slowloris and slow POST want. */
    if ((rv = number_field(sec, "header_read_timeout_secs", raw->header_read_timeout_secs, 10,
                           UINT32_MAX, false, &v, err, errlen)) != 0)
        return rv;
    l->header_read_timeout_secs = (uint32_t)v;
    if ((rv = number_field(sec, "body_idle_timeout_secs", raw->body_idle_timeout_secs, 30,
                           UINT32_MAX, false, &v, err, errlen)) != 0)
        return rv;
    l->body_idle_timeout_secs = (uint32_t)v;
    /* QUIC transport limits: every one of these must be > 0 (a zero would
     * stall every connection, not disable a feature). */
    static const struct {
        const char *name;
        size_t raw_off, off;
        uint64_t def, max;
    } quic_limits[] = {
        {"max_quic_connections", offsetof(raw_limits_t, max_quic_connections),
         offsetof(qx_limits_t, max_quic_connections), 10000, 1000000},
        {"max_quic_connections_per_ip", offsetof(raw_limits_t, max_quic_connections_per_ip),
         offsetof(qx_limits_t, max_quic_connections_per_ip), 200, 1000000},
        {"quic_handshake_timeout_secs", offsetof(raw_limits_t, quic_handshake_timeout_secs),
         offsetof(qx_limits_t, quic_handshake_timeout_secs), 10, 3600},
        {"quic_idle_timeout_secs", offsetof(raw_limits_t, quic_idle_timeout_secs),
         offsetof(qx_limits_t, quic_idle_timeout_secs), 30, 3600},
        {"max_streams_per_connection", offsetof(raw_limits_t, max_streams_per_connection),
         offsetof(qx_limits_t, max_streams_per_connection), 100, 10000},
        {"retry_handshakes_threshold", offsetof(raw_limits_t, retry_handshakes_threshold),
         offsetof(qx_limits_t, retry_handshakes_threshold), 100, 1000000},
        /* Hostile peers: a wait without a deadline or a resource without a
         * cap is what they look for; 0 ("none") is refused. */
        {"client_idle_timeout_secs", offsetof(raw_limits_t, client_idle_timeout_secs),
         offsetof(qx_limits_t, client_idle_timeout_secs), 30, 3600},
        {"upstream_idle_timeout_secs", offsetof(raw_limits_t, upstream_idle_timeout_secs),
         offsetof(qx_limits_t, upstream_idle_timeout_secs), 60, 3600},
        {"max_tcp_connections", offsetof(raw_limits_t, max_tcp_connections),
         offsetof(qx_limits_t, max_tcp_connections), 10000, 1000000},
        {"max_tcp_connections_per_ip", offsetof(raw_limits_t, max_tcp_connections_per_ip),
         offsetof(qx_limits_t, max_tcp_connections_per_ip), 500, 1000000},
        {"max_connections_per_upstream", offsetof(raw_limits_t, max_connections_per_upstream),
         offsetof(qx_limits_t, max_connections_per_upstream), 1024, 1000000},
        {"websocket_idle_timeout_secs", offsetof(raw_limits_t, websocket_idle_timeout_secs),
         offsetof(qx_limits_t, websocket_idle_timeout_secs), 300, 86400},
        {"max_websocket_tunnels", offsetof(raw_limits_t, max_websocket_tunnels),
         offsetof(qx_limits_t, max_websocket_tunnels), 1024, 1000000},
        {"max_websocket_tunnels_per_connection",
         offsetof(raw_limits_t, max_websocket_tunnels_per_connection),
         offsetof(qx_limits_t, max_websocket_tunnels_per_connection), 100, 1000000},
        {"upstream_keepalive_timeout_secs", offsetof(raw_limits_t, upstream_keepalive_timeout_secs),
         offsetof(qx_limits_t, upstream_keepalive_timeout_secs), 60, 3600},
    };
    for (size_t i = 0; i < QX_ARRAY_LEN(quic_limits); i++) {
        const char *s = *(char *const *)(const void *)((const char *)raw + quic_limits[i].raw_off);
        if ((rv = number_field(sec, quic_limits[i].name, s, quic_limits[i].def, quic_limits[i].max,
                               false, &v, err, errlen)) != 0)
            return rv;
        *(uint32_t *)(void *)((char *)l + quic_limits[i].off) = (uint32_t)v;
    }

    if (l->upstream_request_timeout_secs < l->upstream_connect_timeout_secs)
        return fail(err, errlen,
                    "server.limits.upstream_request_timeout_secs: must be >= "
                    "upstream_connect_timeout_secs (%u)",
                    (unsigned)l->upstream_connect_timeout_secs);
    return 0;
}

static int build_server(qx_config_t *cfg, const raw_server_t *s, const char *basedir, char *err,
                        size_t errlen)
{
    uint64_t v;
    int rv;

    if (s == NULL)
        return fail(err, errlen, "server: is required");
    if (s->listen == NULL)
        return fail(err, errlen, "server.listen: is required");
    if (qx_addr_parse(s->listen, &cfg->listen_addr, &cfg->listen_addrlen) != 0)
        return fail(err, errlen, "server.listen: \"%s\" is not an address " ADDR_FORMS, s->listen);
    if ((cfg->listen = strdup(s->listen)) == NULL)
        return QX_ERR_NOMEM;

    /* The HTTPS fallback is TCP, QUIC is UDP: the same port number on both
     * is the usual choice (browsers look for HTTP/3 on the port Alt-Svc
     * names, and h3=":port" may name the TCP one). */
    if (s->https_listen != NULL) {
        if (qx_addr_parse(s->https_listen, &cfg->https_addr, &cfg->https_addrlen) != 0)
            return fail(err, errlen, "server.https_listen: \"%s\" is not an address " ADDR_FORMS,
                        s->https_listen);
        if ((cfg->https_listen = strdup(s->https_listen)) == NULL)
            return QX_ERR_NOMEM;
    }
    /* defaults here and in config.h change together */
    if ((rv = number_field("server", "alt_svc_max_age", s->alt_svc_max_age, 86400, UINT32_MAX, true,
                           &v, err, errlen)) != 0)
        return rv;
    cfg->alt_svc_max_age = (uint32_t)v;
    if ((rv = number_field("server", "drain_delay_secs", s->drain_delay_secs, 5, UINT32_MAX, true,
                           &v, err, errlen)) != 0)
        return rv;
    cfg->drain_delay_secs = (uint32_t)v;

    /* 0-RTT and address validation */
    static const char *const early_names[] = {"off", "safe", "all"};
    static const char *const retry_names[] = {"auto", "always", "never"};
    cfg->early_data = QX_EARLY_SAFE;
    if (s->early_data != NULL) {
        size_t i = 0;
        while (i < QX_ARRAY_LEN(early_names) && strcmp(s->early_data, early_names[i]) != 0)
            i++;
        if (i == QX_ARRAY_LEN(early_names))
            return fail(err, errlen, "server.early_data: \"%s\" is not one of off, safe, all",
                        s->early_data);
        cfg->early_data = (qx_early_data_t)i;
    }
    cfg->retry = QX_RETRY_AUTO;
    if (s->retry != NULL) {
        size_t i = 0;
        while (i < QX_ARRAY_LEN(retry_names) && strcmp(s->retry, retry_names[i]) != 0)
            i++;
        if (i == QX_ARRAY_LEN(retry_names))
            return fail(err, errlen, "server.retry: \"%s\" is not one of auto, always, never",
                        s->retry);
        cfg->retry = (qx_retry_t)i;
    }
    if (s->ticket_key_file != NULL) {
        if (s->ticket_key_file[0] == '\0')
            return fail(err, errlen, "server.ticket_key_file: must not be empty");
        if ((cfg->ticket_key_file = resolve_path(basedir, s->ticket_key_file)) == NULL)
            return QX_ERR_NOMEM;
    }

    if (s->cert == NULL)
        return fail(err, errlen, "server.cert: is required");
    if (s->cert[0] == '\0')
        return fail(err, errlen, "server.cert: must not be empty");
    if (s->key == NULL)
        return fail(err, errlen, "server.key: is required");
    if (s->key[0] == '\0')
        return fail(err, errlen, "server.key: must not be empty");
    if ((cfg->cert = resolve_path(basedir, s->cert)) == NULL)
        return QX_ERR_NOMEM;
    if ((cfg->key = resolve_path(basedir, s->key)) == NULL)
        return QX_ERR_NOMEM;

    if ((rv = number_field("server", "workers", s->workers, 0, QX_CONFIG_MAX_WORKERS, true, &v, err,
                           errlen)) != 0)
        return rv;
    cfg->workers = (uint32_t)v;

    return build_limits(&cfg->limits, s->limits, err, errlen);
}

/* YAML 1.2 core schema booleans; "yes"/"on" (YAML 1.1) are refused rather
 * than guessed. */
static int bool_field(const char *section, const char *name, const char *s, bool def, bool *out,
                      char *err, size_t errlen)
{
    static const char *const yes[] = {"true", "True", "TRUE"};
    static const char *const no[] = {"false", "False", "FALSE"};

    *out = def;
    if (s == NULL)
        return 0;
    for (size_t i = 0; i < QX_ARRAY_LEN(yes); i++) {
        if (strcmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return fail(err, errlen, "%s.%s: \"%s\" is not true or false", section, name, s);
}

/* 127.0.0.0/8, ::1, and ::ffff:127.x.y.z (the IPv4 loopback seen through a
 * dual-stack socket): nothing off this host can reach these. */
static bool addr_is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        if (IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr))
            return true;
        return IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) && sin6->sin6_addr.s6_addr[12] == 127;
    }
    return false;
}

/* The default here and in config/examples/qrux.yaml change together. */
#define QX_ADMIN_DEFAULT_LISTEN "127.0.0.1:9901"

/* No `admin:` section leaves a->listen NULL: no admin server. */
static int build_admin(qx_admin_cfg_t *a, const raw_admin_t *raw, const char *basedir, char *err,
                       size_t errlen)
{
    bool b;
    int rv;

    if (raw == NULL)
        return 0;
    const char *listen = raw->listen != NULL ? raw->listen : QX_ADMIN_DEFAULT_LISTEN;
    if (qx_addr_parse(listen, &a->addr, &a->addrlen) != 0)
        return fail(err, errlen, "admin.listen: \"%s\" is not an address " ADDR_FORMS, listen);
    if ((a->listen = strdup(listen)) == NULL)
        return QX_ERR_NOMEM;

    if (raw->token_file != NULL) {
        if (raw->token_file[0] == '\0')
            return fail(err, errlen, "admin.token_file: must not be empty");
        if ((a->token_file = resolve_path(basedir, raw->token_file)) == NULL)
            return QX_ERR_NOMEM;
    }
    if ((rv = bool_field("admin", "ready_requires_upstream", raw->ready_requires_upstream, false,
                         &b, err, errlen)) != 0)
        return rv;
    a->ready_requires_upstream = b;

    /* Route changes and /drain over an open port would let anyone who can
     * reach the pod steer it: off loopback, a token is not optional. */
    if (a->token_file == NULL && !addr_is_loopback(&a->addr))
        return fail(err, errlen,
                    "admin.token_file: required when admin.listen (%s) is not a loopback address",
                    a->listen);
    return 0;
}

/* dns.servers entries: "ip", "ip:port" or "[ip6]:port" (53 when no port
 * is written), joined as c-ares takes them. */
static int build_dns(qx_dns_cfg_t *d, const raw_dns_t *raw, char *err, size_t errlen)
{
    uint64_t v;
    int rv;

    d->ndots = -1;
    d->min_ttl_secs = 5; /* defaults here, in config.h and README change together */
    d->max_ttl_secs = 300;
    if (raw == NULL)
        return 0;
    size_t cap = 1;
    for (unsigned i = 0; i < raw->nservers; i++)
        cap += strlen(raw->servers[i]) + 8;
    if (raw->nservers > 0) {
        if ((d->servers = calloc(1, cap)) == NULL)
            return QX_ERR_NOMEM;
        size_t used = 0;
        for (unsigned i = 0; i < raw->nservers; i++) {
            const char *sv = raw->servers[i];
            struct sockaddr_storage ss;
            socklen_t sl;
            struct in_addr a4;
            struct in6_addr a6;
            const char *pre = "", *post = "";
            if (qx_addr_parse(sv, &ss, &sl) == 0 && strncmp(sv, "localhost", 9) != 0)
                ;
            else if (inet_pton(AF_INET, sv, &a4) == 1)
                post = ":53";
            else if (inet_pton(AF_INET6, sv, &a6) == 1) {
                pre = "[";
                post = "]:53";
            } else
                return fail(err, errlen,
                            "dns.servers[%u]: \"%s\" is not an IP address (ip, ip:port or "
                            "[ipv6]:port)",
                            i, sv);
            used += (size_t)snprintf(d->servers + used, cap - used, "%s%s%s%s", i ? "," : "", pre,
                                     sv, post);
        }
    }
    if (raw->nsearch > 0) {
        if ((d->search = calloc(raw->nsearch, sizeof(char *))) == NULL)
            return QX_ERR_NOMEM;
        for (unsigned i = 0; i < raw->nsearch; i++) {
            const char *dom = raw->search[i];
            if (!dns_name_ok(dom, strlen(dom)))
                return fail(err, errlen, "dns.search[%u]: \"%s\" is not a DNS name", i, dom);
            if ((d->search[i] = strdup(dom)) == NULL)
                return QX_ERR_NOMEM;
            d->nsearch++;
        }
    }
    if (raw->ndots != NULL) {
        if ((rv = number_field("dns", "ndots", raw->ndots, 1, 15, true, &v, err, errlen)) != 0)
            return rv;
        d->ndots = (int)v;
    }
    if ((rv = number_field("dns", "min_ttl_secs", raw->min_ttl_secs, 5, 86400, false, &v, err,
                           errlen)) != 0)
        return rv;
    d->min_ttl_secs = (uint32_t)v;
    if ((rv = number_field("dns", "max_ttl_secs", raw->max_ttl_secs, 300, 86400, false, &v, err,
                           errlen)) != 0)
        return rv;
    d->max_ttl_secs = (uint32_t)v;
    if (d->max_ttl_secs < d->min_ttl_secs)
        return fail(err, errlen, "dns.max_ttl_secs: must be >= min_ttl_secs (%u)",
                    (unsigned)d->min_ttl_secs);
    return 0;
}

/* The defaults here, in xdp_quic_consts.h (the loader's) and in
 * config/examples/qrux.yaml change together. No `xdp:` section leaves
 * x->pin NULL: qrux does not look for the program. */
static int build_xdp(qx_xdp_cfg_t *x, const raw_xdp_t *raw, char *err, size_t errlen)
{
    uint64_t v;
    int rv;

    if (raw == NULL)
        return 0;
    const char *pin = raw->pin != NULL ? raw->pin : "/sys/fs/bpf/qrux";
    if (pin[0] != '/')
        return fail(err, errlen, "xdp.pin: \"%s\" must be an absolute path (a bpffs directory)",
                    pin);
    if ((x->pin = strdup(pin)) == NULL)
        return QX_ERR_NOMEM;
    if ((rv = number_field("xdp", "initial_rate", raw->initial_rate, 50, 1000000, true, &v, err,
                           errlen)) != 0)
        return rv;
    x->initial_rate = (uint32_t)v;
    if ((rv = number_field("xdp", "initial_burst", raw->initial_burst, 100, 1000000, false, &v, err,
                           errlen)) != 0)
        return rv;
    x->initial_burst = (uint32_t)v;
    if ((rv = number_field("xdp", "cid_key_rotate_secs", raw->cid_key_rotate_secs, 0, 31536000,
                           true, &v, err, errlen)) != 0)
        return rv;
    x->cid_key_rotate_secs = (uint32_t)v;
    return 0;
}

static int build_config(qx_config_t *cfg, raw_doc_t *raw, const char *basedir, const char *yaml,
                        size_t len, char *err, size_t errlen)
{
    qx_route_spec_t *specs;
    int rv;

    if ((rv = build_server(cfg, raw->server, basedir, err, errlen)) != 0)
        return rv;

    /* calloc(0) may return NULL: keep one spare entry */
    if ((specs = calloc(raw->nroutes + 1u, sizeof(*specs))) == NULL)
        return QX_ERR_NOMEM;
    for (size_t i = 0; i < raw->nroutes; i++) {
        const raw_route_t *r = &raw->routes[i];
        char key[48];
        /* `upstreams: []` loads as a NULL list, the same as no key: the
         * document tells them apart ("must not be empty", not "needs"). */
        snprintf(key, sizeof(key), "routes[%zu].upstreams", i);
        bool listed =
            r->upstreams != NULL || r->nupstreams > 0 || locate_line(yaml, len, key, 1) > 0;
        specs[i] = (qx_route_spec_t){
            .match = r->match,
            .upstream = r->upstream,
            .upstreams = (const char *const *)r->upstreams,
            .nupstreams = r->nupstreams,
            .has_upstreams = listed,
            .websocket = -1,
            .protocol = r->protocol,
        };
        if (r->websocket != NULL) {
            bool b;
            snprintf(key, sizeof(key), "routes[%zu]", i);
            if ((rv = bool_field(key, "websocket", r->websocket, true, &b, err, errlen)) != 0) {
                free(specs);
                return rv;
            }
            specs[i].websocket = b ? 1 : 0;
        }
    }
    rv = qx_config_build_routes(cfg, specs, raw->nroutes, err, errlen, NULL, 0);
    free(specs);
    if (rv != 0)
        return rv;

    if ((rv = build_admin(&cfg->admin, raw->admin, basedir, err, errlen)) != 0)
        return rv;
    if ((rv = build_dns(&cfg->dns, raw->dns, err, errlen)) != 0)
        return rv;
    if ((rv = build_xdp(&cfg->xdp, raw->xdp, err, errlen)) != 0)
        return rv;
    /* log.format: how every line is written (log.c); read at start. */
    if (raw->log != NULL && raw->log->format != NULL) {
        if (strcmp(raw->log->format, "json") == 0)
            cfg->log_json = 1;
        else if (strcmp(raw->log->format, "text") != 0)
            return fail(err, errlen, "log.format: \"%s\" is not one of text, json",
                        raw->log->format);
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Loading                                                                  */
/* ------------------------------------------------------------------------ */

static int load(const char *yaml, size_t len, const char *basedir, const char *path,
                qx_config_t **out, char *err, size_t errlen)
{
    log_capture_t lc;
    raw_doc_t *raw = NULL;
    qx_config_t *cfg = NULL;
    cyaml_err_t cerr;
    int rv;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (out == NULL || (yaml == NULL && len > 0))
        return QX_ERR_INVAL;
    *out = NULL;

    memset(&lc, 0, sizeof(lc));
    const cyaml_config_t ycfg = {
        .log_fn = capture_log,
        .log_ctx = &lc,
        .mem_fn = cyaml_mem,
        .log_level = CYAML_LOG_ERROR,
        /* Aliases would let a small document expand into a huge one. */
        .flags = CYAML_CFG_NO_ALIAS,
    };

    cerr = cyaml_load_data((const uint8_t *)(yaml != NULL ? yaml : ""), len, &ycfg, &doc_schema,
                           (cyaml_data_t **)&raw, NULL);
    if (cerr == CYAML_ERR_ALIAS)
        return fail(err, errlen, "YAML aliases (*name) are not supported");
    if (cerr != CYAML_OK)
        return cyaml_error(cerr, &lc, yaml, len, err, errlen);
    if (raw == NULL) /* empty document */
        return fail(err, errlen, "server: is required");

    if ((cfg = calloc(1, sizeof(*cfg))) == NULL) {
        rv = QX_ERR_NOMEM;
        goto fail_cfg;
    }
    if (path != NULL && (cfg->path = strdup(path)) == NULL) {
        rv = QX_ERR_NOMEM;
        goto fail_build;
    }
    if ((rv = build_config(cfg, raw, basedir, yaml, len, err, errlen)) != 0)
        goto fail_build;

    cyaml_free(&ycfg, &doc_schema, raw, 0);
    *out = cfg;
    return 0;

fail_build:
    qx_config_del(cfg);
fail_cfg:
    cyaml_free(&ycfg, &doc_schema, raw, 0);
    if (rv == QX_ERR_NOMEM)
        fail(err, errlen, "out of memory");
    return rv;
}

int qx_config_load_buf(const char *yaml, size_t len, const char *basedir, qx_config_t **out,
                       char *err, size_t errlen)
{
    return load(yaml, len, basedir, NULL, out, err, errlen);
}

int qx_config_load_file(const char *path, qx_config_t **out, char *err, size_t errlen)
{
    FILE *f;
    char *buf = NULL, *dir = NULL;
    size_t len = 0;
    struct stat st;
    int rv;

    if (out != NULL)
        *out = NULL;
    if (path == NULL || out == NULL)
        return QX_ERR_INVAL;

    if ((f = fopen(path, "rb")) == NULL) {
        fail(err, errlen, "%s: %s", path, strerror(errno));
        return QX_ERR_IO;
    }
    if (fstat(fileno(f), &st) == -1) {
        fail(err, errlen, "%s: %s", path, strerror(errno));
        rv = QX_ERR_IO;
        goto out;
    }
    if (S_ISDIR(st.st_mode)) {
        fail(err, errlen, "%s: is a directory", path);
        rv = QX_ERR_IO;
        goto out;
    }
    if (st.st_size > (off_t)QX_CONFIG_MAX_FILE) {
        rv = fail(err, errlen, "%s: larger than %u bytes", path, QX_CONFIG_MAX_FILE);
        goto out;
    }
    /* st_size may be stale if the file is being rewritten: read to EOF. */
    if ((buf = malloc(QX_CONFIG_MAX_FILE + 1)) == NULL) {
        rv = QX_ERR_NOMEM;
        goto out;
    }
    len = fread(buf, 1, QX_CONFIG_MAX_FILE + 1, f);
    if (ferror(f)) {
        fail(err, errlen, "%s: read error", path);
        rv = QX_ERR_IO;
        goto out;
    }
    if (len > QX_CONFIG_MAX_FILE) {
        rv = fail(err, errlen, "%s: larger than %u bytes", path, QX_CONFIG_MAX_FILE);
        goto out;
    }

    /* Relative cert/key paths are relative to the config's directory. A
     * bare file name has "" as directory: the paths stay as written, which
     * is the same place relative to the working directory. */
    const char *slash = strrchr(path, '/');
    if (slash != NULL) {
        size_t dlen = slash == path ? 1 : (size_t)(slash - path);
        if ((dir = malloc(dlen + 1)) == NULL) {
            rv = QX_ERR_NOMEM;
            goto out;
        }
        memcpy(dir, path, dlen);
        dir[dlen] = '\0';
    }
    rv = load(buf, len, dir, path, out, err, errlen);

out:
    if (rv == QX_ERR_NOMEM)
        fail(err, errlen, "out of memory");
    free(dir);
    free(buf);
    fclose(f);
    return rv;
}

void qx_config_del(qx_config_t *cfg)
{
    if (cfg == NULL)
        return;
    if (cfg->routes != NULL) {
        for (size_t i = 0; i < cfg->nroutes; i++) {
            qx_route_cfg_t *r = &cfg->routes[i];
            if (r->upstreams != NULL) {
                for (size_t j = 0; j < r->nupstreams; j++) {
                    free(r->upstreams[j].name);
                    free(r->upstreams[j].host);
                }
                free(r->upstreams);
            }
            free(r->match);
        }
        free(cfg->routes);
    }
    free(cfg->admin.listen);
    free(cfg->admin.token_file);
    free(cfg->dns.servers);
    for (size_t i = 0; i < cfg->dns.nsearch; i++)
        free(cfg->dns.search[i]);
    free(cfg->dns.search);
    free(cfg->xdp.pin);
    free(cfg->path);
    free(cfg->listen);
    free(cfg->https_listen);
    free(cfg->ticket_key_file);
    free(cfg->cert);
    free(cfg->key);
    free(cfg);
}

/* ------------------------------------------------------------------------ */
/* Workers                                                                  */
/* ------------------------------------------------------------------------ */

/* Reads a small file into buf (NUL-terminated). Returns 0 or -1. */
static int read_small(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, len - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n > 0 ? 0 : -1;
}

/* ceil(quota / period), or 0 when there is no quota. */
static unsigned quota_cpus(long long quota, long long period)
{
    if (quota <= 0 || period <= 0)
        return 0;
    long long n = (quota + period - 1) / period;
    return n > (long long)QX_CONFIG_MAX_WORKERS ? QX_CONFIG_MAX_WORKERS : (unsigned)n;
}

/* cgroup v2 "cpu.max": "max 100000" (no limit) or "<quota> <period>". */
static unsigned cpu_max_cpus(const char *text)
{
    long long quota, period;
    if (strncmp(text, "max", 3) == 0)
        return 0;
    if (sscanf(text, "%lld %lld", &quota, &period) != 2)
        return 0;
    return quota_cpus(quota, period);
}

/*
 * The CPU limit from the cgroup hierarchy mounted at |root| (normally
 * /sys/fs/cgroup), 0 when there is none. With a cgroup namespace (the
 * Kubernetes default) the container's own cgroup is the root; without one
 * /proc/self/cgroup names it (v2 line "0::/path"), and every ancestor's
 * cpu.max may cap it too, so the smallest along the path wins.
 */
static unsigned cgroup_cpus(const char *root, const char *self_cgroup)
{
    char path[512], buf[256];
    unsigned best = 0;

    /* v2 */
    char rel[256] = "";
    if (self_cgroup != NULL && read_small(self_cgroup, buf, sizeof(buf)) == 0) {
        const char *p = strstr(buf, "0::");
        if (p != NULL && (p == buf || p[-1] == '\n')) {
            p += 3;
            size_t n = strcspn(p, "\n");
            snprintf(rel, sizeof(rel), "%.*s", (int)n, p);
        }
    }
    size_t rlen = strlen(rel);
    for (;;) {
        snprintf(path, sizeof(path), "%s%.*s/cpu.max", root, (int)rlen, rel);
        if (read_small(path, buf, sizeof(buf)) == 0) {
            unsigned n = cpu_max_cpus(buf);
            if (n > 0 && (best == 0 || n < best))
                best = n;
        }
        if (rlen == 0)
            break;
        /* up one level: "/a/b" -> "/a" -> "" */
        while (rlen > 0 && rel[rlen - 1] != '/')
            rlen--;
        if (rlen > 0)
            rlen--;
    }
    if (best > 0)
        return best;

    /* v1 */
    static const char *const v1dirs[] = {"cpu", "cpu,cpuacct", "cpuacct,cpu"};
    for (size_t i = 0; i < QX_ARRAY_LEN(v1dirs); i++) {
        long long quota, period;
        snprintf(path, sizeof(path), "%s/%s/cpu.cfs_quota_us", root, v1dirs[i]);
        if (read_small(path, buf, sizeof(buf)) != 0 || sscanf(buf, "%lld", &quota) != 1)
            continue;
        snprintf(path, sizeof(path), "%s/%s/cpu.cfs_period_us", root, v1dirs[i]);
        if (read_small(path, buf, sizeof(buf)) != 0 || sscanf(buf, "%lld", &period) != 1)
            continue;
        return quota_cpus(quota, period);
    }
    return 0;
}

static unsigned available_cpus(const char *cgroup_root, const char *self_cgroup)
{
    cpu_set_t set;
    unsigned n = 0;

    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        n = (unsigned)CPU_COUNT(&set);
    if (n == 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (unsigned)c : 1;
    }
    unsigned limit = cgroup_cpus(cgroup_root, self_cgroup);
    if (limit > 0 && limit < n)
        n = limit;
    return QX_MIN(QX_MAX(n, 1u), (unsigned)QX_CONFIG_MAX_WORKERS);
}

unsigned qx_config_effective_workers(const qx_config_t *cfg)
{
    if (cfg != NULL && cfg->workers > 0)
        return cfg->workers;
    return available_cpus("/sys/fs/cgroup", "/proc/self/cgroup");
}
