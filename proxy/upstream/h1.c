/* h1.c - HTTP/1.1 head translation (see h1.h). */
#include "upstream/h1.h"

#include "base/qx.h"
#include "base/str.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *name;
    size_t len;
} hop_by_hop[] = {
    {"connection", 10}, {"keep-alive", 10}, {"proxy-connection", 16}, {"transfer-encoding", 17},
    {"te", 2},          {"upgrade", 7},     {"trailer", 7},
};

int qx_h1_is_hop_by_hop(const char *name, size_t len)
{
    for (size_t i = 0; i < QX_ARRAY_LEN(hop_by_hop); i++) {
        if (hop_by_hop[i].len == len && strncasecmp(hop_by_hop[i].name, name, len) == 0)
            return 1;
    }
    return 0;
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* The next token of a comma-separated list from *pos: sets *tok and
 * returns its length (OWS trimmed; 0 for an empty element), or -1 at the
 * end of the list. */
static ssize_t next_token(const char *list, size_t listlen, size_t *pos, const char **tok)
{
    size_t i = *pos;
    while (i < listlen && (is_ows(list[i]) || list[i] == ','))
        i++;
    if (i >= listlen)
        return -1;
    size_t start = i;
    while (i < listlen && list[i] != ',')
        i++;
    size_t end = i;
    while (end > start && is_ows(list[end - 1]))
        end--;
    *pos = i;
    *tok = list + start;
    return (ssize_t)(end - start);
}

int qx_h1_list_has_token(const char *list, size_t listlen, const char *name, size_t namelen)
{
    size_t pos = 0;
    const char *t;
    ssize_t n;
    while ((n = next_token(list, listlen, &pos, &t)) >= 0) {
        if ((size_t)n == namelen && strncasecmp(t, name, namelen) == 0)
            return 1;
    }
    return 0;
}

int qx_h1_conn_names_fields(const char *list, size_t listlen)
{
    size_t pos = 0;
    const char *t;
    ssize_t n;
    while ((n = next_token(list, listlen, &pos, &t)) >= 0) {
        if (n > 0 && !(n == 5 && strncasecmp(t, "close", 5) == 0) &&
            !qx_h1_is_hop_by_hop(t, (size_t)n))
            return 1;
    }
    return 0;
}

static int name_is(const qx_hdr_t *h, const char *lit)
{
    return qx_name_is(h->name, h->namelen, lit);
}

static int has_ctl(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
            return 1;
    }
    return 0;
}

/* Output cursor: every append checks the cap; overflow sticks. */
typedef struct {
    char *p;
    size_t len, cap;
    int overflow;
} out_t;

static void put(out_t *o, const char *s, size_t n)
{
    if (o->overflow || o->cap - o->len < n) {
        o->overflow = 1;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void puts_(out_t *o, const char *s)
{
    put(o, s, strlen(s));
}

static int method_is(const qx_h1_req_t *r, const char *m)
{
    size_t n = strlen(m);
    return r->methodlen == n && memcmp(r->method, m, n) == 0;
}

ssize_t qx_h1_build_request(char *buf, size_t cap, const qx_h1_req_t *req, int *chunked)
{
    out_t o = {buf, 0, cap, 0};
    const char *conn = NULL;
    size_t connlen = 0;
    size_t nxff = 0;
    int ncookie = 0;

    if (has_ctl(req->method, req->methodlen) || has_ctl(req->path, req->pathlen) ||
        (req->authority && has_ctl(req->authority, req->authoritylen)))
        return QX_ERR_PROTO;
    for (size_t i = 0; i < req->nhdrs; i++) {
        const qx_hdr_t *h = &req->hdrs[i];
        if (has_ctl(h->name, h->namelen) || has_ctl(h->value, h->valuelen))
            return QX_ERR_PROTO;
        if (name_is(h, "connection")) {
            conn = h->value;
            connlen = h->valuelen;
        }
    }
    if (conn && !qx_h1_conn_names_fields(conn, connlen))
        conn = NULL; /* nothing beyond the hop-by-hop fields: no per-field check */

    put(&o, req->method, req->methodlen);
    put(&o, " ", 1);
    put(&o, req->path, req->pathlen);
    puts_(&o, " HTTP/1.1\r\nHost: ");
    if (req->authority)
        put(&o, req->authority, req->authoritylen);
    puts_(&o, "\r\n");

    for (size_t i = 0; i < req->nhdrs; i++) {
        const qx_hdr_t *h = &req->hdrs[i];
        if (qx_h1_is_hop_by_hop(h->name, h->namelen) || name_is(h, "host") ||
            name_is(h, "content-length") || name_is(h, "x-forwarded-proto") ||
            (name_is(h, "early-data") && (req->early || h->valuelen != 1 || h->value[0] != '1')) ||
            (conn && qx_h1_list_has_token(conn, connlen, h->name, h->namelen)) ||
            (req->ws_key &&
             (name_is(h, "sec-websocket-key") || name_is(h, "sec-websocket-version"))))
            continue;
        if (name_is(h, "x-forwarded-for")) {
            nxff++; /* joined below, in order, with our peer appended */
            continue;
        }
        if (name_is(h, "cookie")) {
            /* HTTP/3 may split cookies into several fields; HTTP/1.1 wants one. */
            if (ncookie++ == 0) {
                puts_(&o, "cookie: ");
            } else {
                continue;
            }
            int first = 1;
            for (size_t j = i; j < req->nhdrs; j++) {
                if (!name_is(&req->hdrs[j], "cookie"))
                    continue;
                if (!first)
                    puts_(&o, "; ");
                put(&o, req->hdrs[j].value, req->hdrs[j].valuelen);
                first = 0;
            }
            puts_(&o, "\r\n");
            continue;
        }
        put(&o, h->name, h->namelen);
        puts_(&o, ": ");
        put(&o, h->value, h->valuelen);
        puts_(&o, "\r\n");
    }

    puts_(&o, "X-Forwarded-For: ");
    for (size_t i = 0; nxff > 0 && i < req->nhdrs; i++) {
        const qx_hdr_t *h = &req->hdrs[i];
        if (name_is(h, "x-forwarded-for") && h->valuelen > 0) {
            put(&o, h->value, h->valuelen);
            puts_(&o, ", ");
        }
    }
    puts_(&o, req->client_ip ? req->client_ip : "unknown");
    puts_(&o, "\r\nX-Forwarded-Proto: https\r\n");
    /* RFC 8470 §5.1: forwarded before the handshake completed, the request
     * says so, in the one field the app sees. A client's own Early-Data was
     * dropped above unless it is the only defined value, "1" on a request
     * that did not come early (an intermediary MUST NOT remove it): any
     * other value (early-data: 0) could hide a replayable request. */
    if (req->early)
        puts_(&o, "Early-Data: 1\r\n");

    *chunked = 0;
    if (req->websocket) {
        /* The opening handshake (RFC 6455 §4.1): the client's Upgrade and
         * Connection were dropped with the other hop-by-hop fields; these
         * are qrux's own, for this connection. What follows the app's 101
         * is the tunnel's bytes, never a framed body. */
        puts_(&o, "Upgrade: websocket\r\nConnection: Upgrade\r\n");
        if (req->ws_key) {
            puts_(&o, "Sec-WebSocket-Key: ");
            puts_(&o, req->ws_key);
            puts_(&o, "\r\nSec-WebSocket-Version: 13\r\n");
        }
    } else if (req->content_length >= 0) {
        char num[48]; /* the name, 19 digits, CRLF */
        int n =
            snprintf(num, sizeof(num), "Content-Length: %lld\r\n", (long long)req->content_length);
        put(&o, num, (size_t)n);
    } else if (req->has_body) {
        puts_(&o, "Transfer-Encoding: chunked\r\n");
        *chunked = 1;
    } else if (method_is(req, "POST") || method_is(req, "PUT") || method_is(req, "PATCH")) {
        puts_(&o, "Content-Length: 0\r\n");
    }
    puts_(&o, "\r\n");

    if (o.overflow)
        return QX_ERR_LIMIT;
    return (ssize_t)o.len;
}

int qx_h1_response_field_allowed(const char *name, size_t namelen, const char *conn, size_t connlen)
{
    if (qx_h1_is_hop_by_hop(name, namelen))
        return 0;
    if (conn && qx_h1_list_has_token(conn, connlen, name, namelen))
        return 0;
    return 1;
}

/* The reason phrase for a status qrux itself answers with (RFC 9110 §15). */
const char *qx_h1_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 421:
        return "Misdirected Request";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Status";
    }
}
