/*
 * h1_front.c - HTTP/1.1 on the HTTPS listener (see h1_front.h): the
 * request reader over llhttp, and the front that turns each request into
 * an exchange and writes its response back with HTTP/1.1 framing.
 *
 * One exchange at a time per connection. The reader pauses after each
 * message; bytes of a pipelined next request wait in the input buffer (and
 * behind it in TLS and the socket, all bounded) until the response has
 * gone out, so answers leave in request order without any queue.
 */
#include "front/tcp/h1_front.h"

#include "base/log.h"
#include "base/qx.h"
#include "base/str.h"
#include "exchange/context.h"
#include "exchange/websocket.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define IN_CAP (16 * 1024) /* plaintext buffered ahead of the parser (one TLS record) */

/* ======================================================================== */
/* Request reader                                                           */
/* ======================================================================== */

static qx_h1_reqp_t *rp_of(llhttp_t *p)
{
    return qx_container_of(p, qx_h1_reqp_t, parser);
}

/* Refuses the request from inside a callback: llhttp stops with HPE_USER. */
static int refuse(qx_h1_reqp_t *rp, int status, const char *why)
{
    if (rp->status == 0) {
        rp->status = status;
        rp->why = why;
    }
    llhttp_set_error_reason(&rp->parser, why);
    return HPE_USER;
}

/* Appends to the head buffer, within QX_MAX_HEADER_BYTES. */
static int head_append(qx_h1_reqp_t *rp, const char *at, size_t n)
{
    if (rp->len + n > QX_MAX_HEADER_BYTES)
        return refuse(rp, 431, "request head larger than 64 KiB");
    if (rp->len + n > rp->cap) {
        size_t cap = rp->cap ? rp->cap : 2048;
        while (cap < rp->len + n)
            cap *= 2;
        if (cap > QX_MAX_HEADER_BYTES)
            cap = QX_MAX_HEADER_BYTES;
        char *p = realloc(rp->buf, cap);
        if (p == NULL)
            return refuse(rp, 431, "out of memory for the request head");
        rp->buf = p;
        rp->cap = cap;
    }
    memcpy(rp->buf + rp->len, at, n);
    rp->len += n;
    return 0;
}

static int p_message_begin(llhttp_t *p)
{
    qx_h1_reqp_t *rp = rp_of(p);
    rp->started = 1;
    rp->len = 0;
    rp->nfields = 0;
    rp->in_field = 0;
    rp->target_off = rp->target_len = 0;
    rp->method_known = 0;
    rp->method = NULL;
    rp->path = rp->authority = NULL;
    rp->pathlen = rp->authoritylen = 0;
    rp->has_body = rp->keep_alive = rp->expect_continue = 0;
    rp->nhost = rp->nte = rp->ncl = 0;
    rp->te_chunked = 0;
    return 0;
}

static int p_method_complete(llhttp_t *p)
{
    qx_h1_reqp_t *rp = rp_of(p);
    rp->method_known = 1;
    rp->method = llhttp_method_name((llhttp_method_t)p->method);
    return 0;
}

static int p_url(llhttp_t *p, const char *at, size_t n)
{
    qx_h1_reqp_t *rp = rp_of(p);
    if (rp->target_len == 0)
        rp->target_off = (uint32_t)rp->len;
    rp->target_len += (uint32_t)n;
    return head_append(rp, at, n);
}

static int p_header_field(llhttp_t *p, const char *at, size_t n)
{
    qx_h1_reqp_t *rp = rp_of(p);
    if (rp->in_field != 1) {
        if (rp->nfields >= QX_MAX_HEADERS)
            return refuse(rp, 431, "too many header fields");
        rp->fields[rp->nfields++] = (qx_h1_field_t){(uint32_t)rp->len, 0, 0, 0};
        rp->in_field = 1;
    }
    rp->fields[rp->nfields - 1].name_len += (uint32_t)n;
    return head_append(rp, at, n);
}

static int p_header_value(llhttp_t *p, const char *at, size_t n)
{
    qx_h1_reqp_t *rp = rp_of(p);
    qx_h1_field_t *f = &rp->fields[rp->nfields - 1];
    if (rp->in_field != 2) {
        f->value_off = (uint32_t)rp->len;
        rp->in_field = 2;
    }
    f->value_len += (uint32_t)n;
    return head_append(rp, at, n);
}

/* Trims optional whitespace at both ends of a value (RFC 9110 §5.5).
 * llhttp skips the leading OWS but passes the trailing one on; the
 * leading side is trimmed too so that the rule does not rest on that. */
static void trim(const char **s, size_t *len)
{
    while (*len > 0 && ((*s)[0] == ' ' || (*s)[0] == '\t')) {
        (*s)++;
        (*len)--;
    }
    while (*len > 0 && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t'))
        (*len)--;
}

/* RFC 9110 §5.1: a field name is a token. llhttp (built without its
 * strict mode) lets a space through, and "Content-Length : 5" or "X A"
 * must not reach an upstream that might read them differently. */
static int is_token(const char *s, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
            continue;
        if (ch == '\0' || strchr("!#$%&'*+-.^_`|~", ch) == NULL)
            return 0;
    }
    return 1;
}

static int p_header_value_complete(llhttp_t *p)
{
    qx_h1_reqp_t *rp = rp_of(p);
    if (rp->nfields == 0)
        return 0;
    qx_h1_field_t *f = &rp->fields[rp->nfields - 1];
    if (!is_token(rp->buf + f->name_off, f->name_len))
        return refuse(rp, 400, "invalid header field name");
    if (rp->in_field != 2) { /* empty value: no value callback came */
        f->value_off = (uint32_t)rp->len;
        f->value_len = 0;
    }
    rp->in_field = 0;
    const char *name = rp->buf + f->name_off;
    const char *v = rp->buf + f->value_off;
    size_t vlen = f->value_len;
    trim(&v, &vlen);
    f->value_off = (uint32_t)(v - rp->buf);
    f->value_len = (uint32_t)vlen;
    if (qx_name_is(name, f->name_len, "host")) {
        rp->nhost++;
    } else if (qx_name_is(name, f->name_len, "transfer-encoding")) {
        rp->nte++;
        rp->te_chunked = qx_name_is(v, vlen, "chunked");
    } else if (qx_name_is(name, f->name_len, "content-length")) {
        rp->ncl++;
    } else if (qx_name_is(name, f->name_len, "expect")) {
        rp->expect_continue = qx_name_is(v, vlen, "100-continue");
    }
    return 0;
}

/* RFC 3986 authority characters (reg-name / IP literal, and the port). */
static int authority_ok(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
            continue;
        if (strchr("-._~!$&'()*+,;=%:[]", ch) == NULL || ch == '\0')
            return 0;
    }
    return 1;
}

/* Splits the request target into path and authority (RFC 9112 §3.2). */
static int split_target(qx_h1_reqp_t *rp)
{
    const char *t = rp->buf + rp->target_off;
    size_t len = rp->target_len;
    int connect = rp->parser.method == HTTP_CONNECT;

    if (len == 0)
        return -1;
    if (connect) { /* authority-form; the exchange answers 501 */
        rp->path = rp->authority = t;
        rp->pathlen = rp->authoritylen = len;
        return authority_ok(t, len) ? 0 : -1;
    }
    if (t[0] == '/') { /* origin-form */
        rp->path = t;
        rp->pathlen = len;
        return 0;
    }
    if (len == 1 && t[0] == '*') /* asterisk-form, OPTIONS only */
        return rp->parser.method == HTTP_OPTIONS ? (rp->path = t, rp->pathlen = 1, 0) : -1;
    size_t skip = 0;
    if (len > 7 && strncasecmp(t, "http://", 7) == 0)
        skip = 7;
    else if (len > 8 && strncasecmp(t, "https://", 8) == 0)
        skip = 8;
    else
        return -1;
    /* absolute-form: the authority in the target wins over Host */
    const char *a = t + skip;
    size_t alen = 0;
    while (skip + alen < len && a[alen] != '/' && a[alen] != '?' && a[alen] != '#')
        alen++;
    if (alen == 0 || memchr(a, '@', alen) != NULL || !authority_ok(a, alen))
        return -1; /* userinfo is refused (RFC 9110 §4.2.4) */
    rp->authority = a;
    rp->authoritylen = alen;
    const char *rest = a + alen;
    size_t restlen = len - skip - alen;
    if (restlen > 0 && rest[0] == '/') {
        rp->path = rest;
        rp->pathlen = restlen;
        return 0;
    }
    /* "http://h" or "http://h?q": the path is "/" (plus the query) */
    size_t off = rp->len;
    if (head_append(rp, "/", 1) != 0 || head_append(rp, rest, restlen) != 0)
        return -1;
    t = rp->buf + rp->target_off; /* the buffer may have moved */
    rp->authority = t + skip;
    rp->path = rp->buf + off;
    rp->pathlen = restlen + 1;
    return 0;
}

/* The head is complete: the checks llhttp does not do itself. */
static int check_head(qx_h1_reqp_t *rp)
{
    llhttp_t *p = &rp->parser;
    if (p->http_major != 1 || p->http_minor > 1)
        return refuse(rp, 400, "HTTP version other than 1.0 or 1.1");
    rp->http_minor = p->http_minor;
    /* Smuggling: only one framing, and only framing both sides read the
     * same way. llhttp already refuses CL with TE and duplicate CL; these
     * are kept as a second line. */
    if (rp->ncl > 0 && rp->nte > 0)
        return refuse(rp, 400, "both Content-Length and Transfer-Encoding");
    if (rp->ncl > 1)
        return refuse(rp, 400, "more than one Content-Length");
    if (rp->nte > 0 && (rp->http_minor == 0 || rp->nte != 1 || !rp->te_chunked))
        return refuse(rp, 400, "Transfer-Encoding other than a lone \"chunked\"");
    if (rp->nhost > 1 || (rp->http_minor == 1 && rp->nhost == 0))
        return refuse(rp, 400, "Host missing or repeated");
    for (size_t i = 0; i < rp->nfields; i++) {
        const qx_h1_field_t *f = &rp->fields[i];
        if (qx_name_is(rp->buf + f->name_off, f->name_len, "host") &&
            !authority_ok(rp->buf + f->value_off, f->value_len))
            return refuse(rp, 400, "invalid Host");
    }
    if (split_target(rp) != 0)
        return refuse(rp, rp->status ? rp->status : 400, "invalid request target");
    rp->has_body =
        (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0);
    rp->keep_alive = rp->http_minor == 1 && llhttp_should_keep_alive(p) && !p->upgrade;
    rp->expect_continue = rp->expect_continue && rp->has_body && rp->http_minor == 1;
    return 0;
}

static int p_headers_complete(llhttp_t *p)
{
    qx_h1_reqp_t *rp = rp_of(p);
    int rv = check_head(rp);
    rp->head_ready = 1;
    if (rv != 0) {
        rp->phase = QX_H1P_ERROR;
        return HPE_PAUSED;
    }
    if (rp->has_body) {
        rp->phase = QX_H1P_BODY;
        return HPE_PAUSED; /* the caller sets up the request before its body */
    }
    return 0; /* no body: on_message_complete follows at once */
}

static int p_body(llhttp_t *p, const char *at, size_t n)
{
    qx_h1_reqp_t *rp = rp_of(p);
    if (rp->on_body)
        rp->on_body(rp->user, at, n);
    return 0;
}

static int p_message_complete(llhttp_t *p)
{
    qx_h1_reqp_t *rp = rp_of(p);
    rp->phase = QX_H1P_DONE;
    return HPE_PAUSED; /* pipelining: nothing more until this one is answered */
}

static const llhttp_settings_t reqp_settings = {
    .on_message_begin = p_message_begin,
    .on_url = p_url,
    .on_header_field = p_header_field,
    .on_header_value = p_header_value,
    .on_headers_complete = p_headers_complete,
    .on_body = p_body,
    .on_message_complete = p_message_complete,
    .on_method_complete = p_method_complete,
    .on_header_value_complete = p_header_value_complete,
};

void qx_h1_reqp_init(qx_h1_reqp_t *rp, void (*on_body)(void *, const char *, size_t), void *user)
{
    memset(rp, 0, sizeof(*rp));
    /* Strict parsing: no lenient flag is ever set (obs-fold, bare LF,
     * conflicting framing are errors). */
    llhttp_init(&rp->parser, HTTP_REQUEST, &reqp_settings);
    rp->phase = QX_H1P_HEAD;
    rp->on_body = on_body;
    rp->user = user;
}

void qx_h1_reqp_free(qx_h1_reqp_t *rp)
{
    free(rp->buf);
    rp->buf = NULL;
    rp->len = rp->cap = 0;
}

/* llhttp 8 accepts obs-fold (a field line continued on a line that
 * starts with a space or tab) and joins the pieces, which another parser
 * on the path may not do the same way: RFC 9112 §5.2 lets a server refuse
 * it, and so it is refused. Scans the head bytes llhttp just used; the
 * state carries over between feeds. */
static int saw_obs_fold(qx_h1_reqp_t *rp, const char *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (rp->prev_lf && (d[i] == ' ' || d[i] == '\t'))
            return 1;
        rp->prev_lf = d[i] == '\n';
    }
    return 0;
}

size_t qx_h1_reqp_feed(qx_h1_reqp_t *rp, const char *data, size_t len)
{
    if (rp->phase == QX_H1P_DONE || rp->phase == QX_H1P_ERROR || len == 0)
        return 0;
    if (rp->paused) {
        llhttp_resume(&rp->parser);
        rp->paused = 0;
    }
    int in_head = rp->phase == QX_H1P_HEAD;
    llhttp_errno_t e = llhttp_execute(&rp->parser, data, len);
    size_t used = len;
    if (e != HPE_OK) {
        const char *pos = llhttp_get_error_pos(&rp->parser);
        if (pos != NULL && pos >= data && pos <= data + len)
            used = (size_t)(pos - data);
    }
    /* The head ends where llhttp paused (at the head or the message end). */
    if (in_head && e != HPE_OK && e != HPE_PAUSED && e != HPE_PAUSED_UPGRADE)
        in_head = 0; /* already an error */
    if (in_head && saw_obs_fold(rp, data, used)) {
        if (rp->status == 0) {
            rp->status = 400;
            rp->why = "obs-fold in a header field";
        }
        rp->head_ready = 1;
        rp->phase = QX_H1P_ERROR;
        rp->paused = e == HPE_PAUSED;
        return used;
    }
    if (e == HPE_OK)
        return len;
    if (e == HPE_PAUSED) {
        rp->paused = 1;
        return used;
    }
    if (e == HPE_PAUSED_UPGRADE) {
        /* An Upgrade/CONNECT request ended: nothing is upgraded here, and
         * the connection closes after the answer (keep_alive is 0). */
        rp->phase = QX_H1P_DONE;
        return used;
    }
    if (rp->status == 0) {
        rp->status = 400;
        rp->why = llhttp_get_error_reason(&rp->parser);
        if (rp->why == NULL)
            rp->why = llhttp_errno_name(e);
    }
    if (rp->phase == QX_H1P_HEAD)
        rp->head_ready = 1; /* answered like a refused head */
    rp->phase = QX_H1P_ERROR;
    return used;
}

void qx_h1_reqp_next(qx_h1_reqp_t *rp)
{
    if (rp->paused) {
        llhttp_resume(&rp->parser);
        rp->paused = 0;
    }
    rp->phase = QX_H1P_HEAD;
    rp->started = 0;
    rp->prev_lf = 0;
    rp->head_ready = 0;
    rp->len = 0;
    rp->nfields = 0;
}

/* ======================================================================== */
/* The front                                                                */
/* ======================================================================== */

typedef enum { RESP_NONE, RESP_BODY } resp_state_t;

typedef struct qx_h1_conn {
    qx_tcp_conn_t *c;
    qx_wctx_t *w;
    qx_h1_reqp_t rp;
    qx_exchange_t *ex; /* the request being answered, or NULL */
    int64_t seq;       /* requests on this connection (the exchange's stream id) */
    char *in;          /* plaintext not yet parsed: [inpos, infill) */
    size_t inpos, infill;
    uint64_t outstanding; /* body bytes handed to the exchange, not yet consumed */
    int req_fin;          /* the exchange knows the request is complete */
    int stop;             /* no more request bytes wanted (answered early / refused) */
    int close_after;      /* close once the response has gone */
    int peer_eof;
    resp_state_t resp;
    int resp_chunked; /* the body goes chunked (HTTP/1.1, no Content-Length) */
    int resp_nobody;  /* no body follows the head */
    /* The request is a WebSocket upgrade the exchange took: once the app's
     * 101 went out, every byte of the connection both ways is the
     * tunnel's (no more HTTP on it). */
    int ws;
} qx_h1_conn_t;

static const qx_front_ops_t h1_ops;

static uint64_t secs_ms(uint32_t s)
{
    return (uint64_t)s * 1000;
}

static const qx_limits_t *limits(qx_h1_conn_t *h)
{
    return &h->w->snap->cfg->limits;
}

static void put(qx_h1_conn_t *h, const char *s, size_t n)
{
    qx_tcp_conn_write(h->c, s, n);
}

static void puts_(qx_h1_conn_t *h, const char *s)
{
    put(h, s, strlen(s));
}

static void put_alt_svc(qx_h1_conn_t *h)
{
    size_t n;
    const char *v = qx_tcp_conn_alt_svc(h->c, &n);
    puts_(h, "alt-svc: ");
    put(h, v, n);
    puts_(h, "\r\n");
}

/* Our own answer when there is no exchange to give it (a timeout, a body
 * that broke its framing): a short text body, then the connection closes. */
static void raw_error(qx_h1_conn_t *h, int status)
{
    char line[160];
    char body[64];
    int bn = snprintf(body, sizeof(body), "%d %s\n", status, qx_h1_reason(status));
    int n = snprintf(line, sizeof(line),
                     "HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                     "content-length: %d\r\nconnection: close\r\n",
                     status, qx_h1_reason(status), bn);
    QX_DEBUG("h1: answering %d and closing", status);
    put(h, line, (size_t)n);
    put_alt_svc(h);
    puts_(h, "\r\n");
    put(h, body, (size_t)bn);
    h->stop = 1;
    qx_tcp_conn_timer(h->c, 0);
    qx_tcp_conn_close(h->c, QX_TC_CLOSE_GRACEFUL);
}

static void end_exchange(qx_h1_conn_t *h, int error)
{
    qx_exchange_t *ex = h->ex;
    h->ex = NULL;
    h->resp = RESP_NONE;
    if (ex)
        qx_exchange_front_closed(ex, error);
}

/* ---- request side ------------------------------------------------------- */

static void arm_body_timer(qx_h1_conn_t *h)
{
    if (h->rp.phase == QX_H1P_BODY && !h->stop && h->outstanding < QX_STREAM_WINDOW)
        qx_tcp_conn_timer(h->c, secs_ms(limits(h)->body_idle_timeout_secs));
    else
        qx_tcp_conn_timer(h->c, 0);
}

static void on_body(void *user, const char *at, size_t len)
{
    qx_h1_conn_t *h = user;
    if (h->ex == NULL)
        return;
    h->outstanding += len;
    qx_exchange_body(h->ex, (const uint8_t *)at, len);
}

static int header(qx_exchange_t *ex, const char *name, const char *value, size_t valuelen)
{
    return qx_exchange_header(ex, name, strlen(name), value, valuelen);
}

/* The head is complete (or refused): one exchange for it. */
static void begin_exchange(qx_h1_conn_t *h)
{
    qx_h1_reqp_t *rp = &h->rp;
    qx_tcp_conn_t *c = h->c;

    rp->head_ready = 0;
    h->ex = qx_exchange_new(h->w, &h1_ops, h, h->seq++, (const struct sockaddr *)&c->peer);
    if (h->ex == NULL) {
        raw_error(h, 503);
        return;
    }
    h->outstanding = 0;
    h->resp = RESP_NONE;
    h->close_after = !rp->keep_alive || qx_tcp_conn_draining(c);
    if (rp->status) {
        /* Refused before the exchange could see it: the exchange still
         * answers it, so that it is logged and counted like any other. */
        QX_DEBUG("h1: bad request: %s", rp->why ? rp->why : "?");
        h->stop = 1;
        h->close_after = 1;
        h->req_fin = 1;
        if (rp->method_known)
            header(h->ex, ":method", rp->method, strlen(rp->method));
        if (rp->target_len > 0) /* for the access log */
            header(h->ex, ":path", rp->buf + rp->target_off, rp->target_len);
        h->ex->bad_request = rp->status;
        qx_exchange_headers_done(h->ex, qx_tcp_conn_sni(c), 1);
        return;
    }
    header(h->ex, ":method", rp->method, strlen(rp->method));
    header(h->ex, ":scheme", "https", 5);
    header(h->ex, ":path", rp->path, rp->pathlen);
    if (rp->authority)
        header(h->ex, ":authority", rp->authority, rp->authoritylen);
    for (size_t i = 0; i < rp->nfields; i++) {
        qx_h1_field_t *f = &rp->fields[i];
        char *name = rp->buf + f->name_off;
        /* HTTP/3 and HTTP/2 field names are lowercase; the exchange and
         * the upstream head builder expect the same from here. */
        qx_ascii_lower_n(name, f->name_len);
        qx_exchange_header(h->ex, name, f->name_len, rp->buf + f->value_off, f->value_len);
    }
    h->req_fin = !rp->has_body;
    qx_exchange_headers_done(h->ex, qx_tcp_conn_sni(c), h->req_fin);
    if (h->ex && h->ex->ws == QX_WS_UPGRADE && h->ex->ws_counted && h->ex->status == 0) {
        h->ws = 1; /* the exchange waits for the rest of the connection as the tunnel */
        h->req_fin = 0;
        h->close_after = 1;
    }
    if (h->ex && !h->req_fin && rp->expect_continue && h->ex->status == 0 && !h->stop)
        puts_(h, "HTTP/1.1 100 Continue\r\n\r\n");
    arm_body_timer(h);
}

/* The request's last byte was read. */
static void request_done(qx_h1_conn_t *h)
{
    qx_tcp_conn_timer(h->c, 0);
    if (h->ws)
        return; /* the head of an upgrade: the tunnel's bytes follow */
    if (h->ex && !h->req_fin) {
        h->req_fin = 1;
        qx_exchange_body_end(h->ex);
    }
}

/* The body broke its framing (e.g. a bad chunk size) after the request
 * went upstream. */
static void body_error(qx_h1_conn_t *h)
{
    QX_DEBUG("h1: bad request body: %s", h->rp.why ? h->rp.why : "?");
    h->stop = 1;
    if (h->ex && h->ex->status == 0) {
        qx_exchange_front_answered(h->ex, 400);
        end_exchange(h, 1);
        raw_error(h, 400);
        return;
    }
    qx_tcp_conn_close(h->c, QX_TC_CLOSE_ABORT);
}

/* Client bytes of an open WebSocket tunnel go to the exchange as they are,
 * at most its free window: past it the connection is not read (the TLS
 * layer stops reading the socket), which is the back-pressure on a client
 * that sends faster than the app reads. Returns nonzero on progress. */
static int tunnel_input(qx_h1_conn_t *h)
{
    if (h->ex == NULL || !h->ex->tunnel || h->req_fin || h->outstanding >= QX_STREAM_WINDOW)
        return 0; /* before the 101, nothing is read past the head */
    size_t n = QX_MIN(h->infill - h->inpos, (size_t)(QX_STREAM_WINDOW - h->outstanding));
    h->outstanding += n;
    h->inpos += n;
    qx_exchange_body(h->ex, (const uint8_t *)h->in + h->inpos - n, n);
    return n > 0;
}

/* Parses buffered input as far as allowed. Returns nonzero on progress. */
static int parse(qx_h1_conn_t *h)
{
    qx_h1_reqp_t *rp = &h->rp;
    size_t avail = h->infill - h->inpos;
    qx_h1p_phase_t before = rp->phase;

    if (h->stop)
        return 0;
    if (h->ws)
        return tunnel_input(h);
    if (rp->phase == QX_H1P_BODY) {
        if (h->ex == NULL)
            return 0;
        if (h->outstanding >= QX_STREAM_WINDOW) {
            qx_tcp_conn_timer(h->c, 0); /* waiting for the upstream, not the client */
            return 0;
        }
        /* Body bytes never outnumber input bytes: feeding at most the
         * free window keeps the exchange within it. */
        avail = QX_MIN(avail, (size_t)(QX_STREAM_WINDOW - h->outstanding));
    } else if (rp->phase != QX_H1P_HEAD) {
        return 0;
    }
    size_t used = qx_h1_reqp_feed(rp, h->in + h->inpos, avail);
    h->inpos += used;
    if (rp->head_ready)
        begin_exchange(h);
    if (rp->phase == QX_H1P_DONE && before != QX_H1P_DONE)
        request_done(h);
    else if (rp->phase == QX_H1P_BODY && used > 0)
        arm_body_timer(h);
    if (rp->phase == QX_H1P_ERROR && !h->stop) {
        body_error(h);
        return 0;
    }
    return used > 0 || rp->phase != before;
}

static void peer_gone(qx_h1_conn_t *h, ssize_t why)
{
    qx_tcp_conn_t *c = h->c;
    h->peer_eof = 1;
    if (why != QX_TCP_EOF) {
        qx_tcp_conn_close(c, QX_TC_CLOSE_ABORT);
        return;
    }
    if (h->ex == NULL) {
        qx_tcp_conn_close(c, QX_TC_CLOSE_GRACEFUL);
        return;
    }
    if (h->ws && h->ex->tunnel && !h->req_fin) {
        /* The client ended its side of the tunnel: so does the app's
         * connection; its side may still send until it ends too. */
        h->req_fin = 1;
        qx_exchange_body_end(h->ex);
        return;
    }
    /* Gone while its request is in flight (a client that half-closes
     * after a complete request is too rare to tell apart from one that
     * left): the exchange ends, the upstream connection is dropped. */
    qx_tcp_conn_close(c, QX_TC_CLOSE_ABORT);
}

static void h1_input(void *app)
{
    qx_h1_conn_t *h = app;
    for (;;) {
        if (h->stop || h->peer_eof)
            return;
        if (h->inpos < h->infill) {
            if (!parse(h))
                return;
            continue;
        }
        h->inpos = h->infill = 0;
        ssize_t n = qx_tcp_conn_read(h->c, h->in, IN_CAP);
        if (n == 0)
            return;
        if (n < 0) {
            peer_gone(h, n);
            return;
        }
        h->infill = (size_t)n;
    }
}

/* ---- response side ------------------------------------------------------ */

/* The app's 101 to a WebSocket upgrade (the exchange added Upgrade and
 * Connection): no body framing follows, only the tunnel's bytes, and the
 * client's bytes after its head may now go up. */
static int tunnel_respond(qx_h1_conn_t *h, const qx_hdr_t *hdrs, size_t n)
{
    puts_(h, "HTTP/1.1 101 Switching Protocols\r\n");
    for (size_t i = 0; i < n; i++) {
        put(h, hdrs[i].name, hdrs[i].namelen);
        puts_(h, ": ");
        put(h, hdrs[i].value, hdrs[i].valuelen);
        puts_(h, "\r\n");
    }
    puts_(h, "\r\n");
    h->resp_nobody = 0;
    h->resp_chunked = 0;
    h->resp = RESP_BODY;
    qx_tcp_conn_mark(h->c);
    qx_tcp_conn_want_input(h->c);
    return 0;
}

static int h1_respond(qx_exchange_t *ex, int status, const qx_hdr_t *hdrs, size_t n, int has_body)
{
    qx_h1_conn_t *h = ex->front;
    char line[64];
    int has_cl = 0;

    if (h->resp != RESP_NONE || (h->c->state != QX_TC_OPEN && h->c->state != QX_TC_CLOSE_REQ))
        return QX_ERR_IO;
    if (h->ws && status == 101)
        return tunnel_respond(h, hdrs, n);
    if (h->ws) {
        /* The app refused the upgrade: an ordinary answer, after which
         * the connection closes (it never read what the client may have
         * sent as the tunnel's). */
        h->ws = 0;
        h->stop = 1;
        h->close_after = 1;
    }
    for (size_t i = 0; i < n; i++)
        if (qx_name_is(hdrs[i].name, hdrs[i].namelen, "content-length"))
            has_cl = 1;
    h->resp_nobody = !has_body;
    h->resp_chunked = has_body && !has_cl && h->rp.http_minor == 1;
    if (has_body && !has_cl && !h->resp_chunked)
        h->close_after = 1; /* HTTP/1.0: the body ends with the connection */
    if (h->stop || qx_tcp_conn_draining(h->c))
        h->close_after = 1;

    int len = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", status, qx_h1_reason(status));
    put(h, line, (size_t)len);
    for (size_t i = 0; i < n; i++) {
        const qx_hdr_t *f = &hdrs[i];
        /* Ours replaces the app's: this listener's HTTP/3 port is ours. */
        if (qx_name_is(f->name, f->namelen, "alt-svc"))
            continue;
        put(h, f->name, f->namelen);
        puts_(h, ": ");
        put(h, f->value, f->valuelen);
        puts_(h, "\r\n");
    }
    put_alt_svc(h);
    if (h->resp_chunked)
        puts_(h, "transfer-encoding: chunked\r\n");
    if (h->close_after)
        puts_(h, "connection: close\r\n");
    puts_(h, "\r\n");
    h->resp = RESP_BODY;
    qx_tcp_conn_mark(h->c);
    return 0;
}

static void response_done(qx_h1_conn_t *h)
{
    qx_tcp_conn_t *c = h->c;
    if (h->resp_chunked)
        puts_(h, "0\r\n\r\n");
    end_exchange(h, 0);
    if (h->close_after || h->rp.phase != QX_H1P_DONE || h->peer_eof || qx_tcp_conn_draining(c)) {
        qx_tcp_conn_close(c, QX_TC_CLOSE_GRACEFUL);
        return;
    }
    /* Keep-alive: the next request (maybe already buffered) may begin. */
    qx_h1_reqp_next(&h->rp);
    h->stop = 0;
    h->req_fin = 0;
    h->outstanding = 0;
    qx_tcp_conn_timer(c, secs_ms(limits(h)->header_read_timeout_secs));
    qx_tcp_conn_want_input(c);
}

static void h1_output(void *app)
{
    qx_h1_conn_t *h = app;
    qx_exchange_t *ex = h->ex;
    struct iovec iov[2];

    if (ex == NULL || h->resp != RESP_BODY)
        return;
    while (!h->resp_nobody) {
        size_t room = qx_tcp_conn_room(h->c);
        if (room == 0)
            return; /* on_write brings us back */
        int k = qx_ring_peek(&ex->resp, iov, QX_MIN(room, (size_t)16384));
        if (k == 0)
            break;
        size_t total = 0;
        for (int i = 0; i < k; i++)
            total += iov[i].iov_len;
        if (h->resp_chunked) {
            char hex[24];
            int m = snprintf(hex, sizeof(hex), "%zx\r\n", total);
            put(h, hex, (size_t)m);
        }
        for (int i = 0; i < k; i++)
            put(h, iov[i].iov_base, iov[i].iov_len);
        if (h->resp_chunked)
            puts_(h, "\r\n");
        /* The TLS layer copied the bytes: their window space is free. */
        qx_ring_mark_sent(&ex->resp, total);
        qx_exchange_resp_acked(ex, total);
    }
    if (h->resp_nobody || (ex->resp_eof && qx_ring_unsent(&ex->resp) == 0))
        response_done(h);
}

/* ---- exchange ops ------------------------------------------------------- */

static void h1_resume(qx_exchange_t *ex)
{
    qx_h1_conn_t *h = ex->front;
    qx_tcp_conn_mark(h->c);
}

static void h1_consumed(qx_exchange_t *ex, size_t n)
{
    qx_h1_conn_t *h = ex->front;
    h->outstanding -= QX_MIN((uint64_t)n, h->outstanding);
    if (h->ws && !h->stop) {
        qx_tcp_conn_want_input(h->c);
    } else if (h->rp.phase == QX_H1P_BODY && !h->stop) {
        arm_body_timer(h);
        qx_tcp_conn_want_input(h->c);
    }
}

static void h1_stop_reading(qx_exchange_t *ex)
{
    qx_h1_conn_t *h = ex->front;
    /* The rest of the body is not read: the connection cannot carry
     * another request after this answer. */
    h->stop = 1;
    h->close_after = 1;
    qx_tcp_conn_timer(h->c, 0);
}

static void h1_abort(qx_exchange_t *ex)
{
    qx_h1_conn_t *h = ex->front;
    /* Cutting the connection is how HTTP/1.1 says a response is broken. */
    qx_tcp_conn_close(h->c, QX_TC_CLOSE_ABORT);
}

static const qx_front_ops_t h1_ops = {
    .proto = "h1",
    .proto_idx = QX_P_H1,
    .respond = h1_respond,
    .resume = h1_resume,
    .consumed = h1_consumed,
    .stop_reading = h1_stop_reading,
    .abort = h1_abort,
};

/* ---- transport ops ------------------------------------------------------ */

static void h1_timeout(void *app)
{
    qx_h1_conn_t *h = app;
    if (h->ex == NULL) {
        /* Slowloris, or an idle keep-alive connection: a partial head gets
         * 408, an idle connection just closes (a 408 there could race a
         * request the client is sending). */
        QX_DEBUG("h1: header read timeout (%s)", h->rp.started ? "partial head" : "idle");
        if (h->rp.started)
            raw_error(h, 408);
        else
            qx_tcp_conn_close(h->c, QX_TC_CLOSE_GRACEFUL);
        return;
    }
    if (h->rp.phase == QX_H1P_BODY && !h->stop) {
        QX_DEBUG("h1: body idle timeout");
        h->stop = 1;
        if (h->ex->status == 0) {
            qx_exchange_front_answered(h->ex, 408);
            end_exchange(h, 1);
            raw_error(h, 408);
        } else {
            qx_tcp_conn_close(h->c, QX_TC_CLOSE_ABORT);
        }
    }
}

static void h1_drain(void *app)
{
    qx_h1_conn_t *h = app;
    if (h->ex == NULL && !h->rp.started && h->inpos == h->infill)
        qx_tcp_conn_close(h->c, QX_TC_CLOSE_GRACEFUL);
    else
        h->close_after = 1;
}

static void h1_free(void *app, int error)
{
    qx_h1_conn_t *h = app;
    (void)error; /* an exchange still open at this point did not end cleanly */
    if (h->ex)
        end_exchange(h, 1);
    qx_h1_reqp_free(&h->rp);
    free(h->in);
    free(h);
}

static const qx_tcp_app_ops_t h1_app_ops = {
    .input = h1_input,
    .output = h1_output,
    .timeout = h1_timeout,
    .drain = h1_drain,
    .free = h1_free,
};

int qx_h1_front_new(qx_tcp_conn_t *c, void **app, const qx_tcp_app_ops_t **ops)
{
    qx_h1_conn_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return QX_ERR_NOMEM;
    h->in = malloc(IN_CAP);
    if (h->in == NULL) {
        free(h);
        return QX_ERR_NOMEM;
    }
    h->c = c;
    h->w = c->w;
    qx_h1_reqp_init(&h->rp, on_body, h);
    /* The head must be complete within the header timeout of the
     * connection's start (the TLS handshake had its own). */
    qx_tcp_conn_timer(c, secs_ms(limits(h)->header_read_timeout_secs));
    *app = h;
    *ops = &h1_app_ops;
    return 0;
}
