/*
 * h1_front.h - the HTTP/1.1 front on a TLS connection (ALPN "http/1.1" or
 * none): llhttp in request mode, one exchange at a time per connection,
 * pipelined requests answered strictly in order.
 *
 * The request reader (qx_h1_reqp_t) is separate from the connection so
 * that the parsing and request-smuggling rules are unit tested without a
 * loop (unit/h1_front_test.c). It takes bytes, stops after a head (so the
 * caller can bound the body it feeds) and after each message (pipelining:
 * the next request is not read before the current one is answered), and
 * refuses what RFC 9112 says a server must refuse: Content-Length with
 * Transfer-Encoding, differing or invalid Content-Length, a
 * Transfer-Encoding other than a lone final "chunked", invalid chunk
 * sizes, obs-fold, a missing or repeated Host, bad request targets, and
 * heads over QX_MAX_HEADER_BYTES / QX_MAX_HEADERS (431).
 */
#ifndef QX_H1_FRONT_H
#define QX_H1_FRONT_H

#include "exchange/exchange.h"
#include "llhttp.h"
#include "front/tcp/tcp_conn.h"

#include <stddef.h>
#include <stdint.h>

typedef struct qx_h1_field {
    uint32_t name_off, name_len, value_off, value_len; /* in qx_h1_reqp_t.buf */
} qx_h1_field_t;

typedef enum {
    QX_H1P_HEAD,  /* reading a request head */
    QX_H1P_BODY,  /* the head was complete; reading its body */
    QX_H1P_DONE,  /* the message is complete; paused until qx_h1_reqp_next() */
    QX_H1P_ERROR, /* malformed: answer .status and close the connection */
} qx_h1p_phase_t;

typedef struct qx_h1_reqp {
    llhttp_t parser;
    qx_h1p_phase_t phase;
    int paused;      /* llhttp returned HPE_PAUSED: resume before feeding */
    int started;     /* a byte of the current request was seen */
    int prev_lf;     /* the last head byte scanned was LF (obs-fold check) */
    int head_ready;  /* a head (valid, or refused with .status) waits for the caller */
    int status;      /* 0, or the answer for a refused request: 400 or 431 */
    const char *why; /* the reason, for the debug log */

    /* The head, valid from head_ready until qx_h1_reqp_next(). */
    char *buf; /* target, then names and values, in arrival order */
    size_t len, cap;
    qx_h1_field_t fields[QX_MAX_HEADERS];
    size_t nfields;
    int in_field; /* 0, 1 reading a name, 2 reading a value */
    uint32_t target_off, target_len;
    int method_known;
    const char *method;           /* llhttp's name for it (static) */
    int http_minor;               /* HTTP/1.x */
    const char *path, *authority; /* from the target; authority NULL unless absolute-form */
    size_t pathlen, authoritylen;
    int has_body;        /* Content-Length > 0 or chunked */
    int keep_alive;      /* HTTP/1.1 without `Connection: close` */
    int expect_continue; /* `Expect: 100-continue` with a body to come */
    unsigned nhost, nte, ncl;
    int te_chunked; /* the one Transfer-Encoding value is "chunked" */

    /* Body bytes (chunked framing removed) go here as they are parsed. */
    void (*on_body)(void *user, const char *at, size_t len);
    void *user;
} qx_h1_reqp_t;

/* Sets up a reader; on_body receives the body bytes. */
void qx_h1_reqp_init(qx_h1_reqp_t *rp, void (*on_body)(void *, const char *, size_t), void *user);

/* Releases the head buffer. Accepts a zeroed reader. */
void qx_h1_reqp_free(qx_h1_reqp_t *rp);

/*
 * Parses up to len bytes and returns how many were used. It stops early
 * after a complete head that has a body (head_ready, phase BODY: the
 * caller sets up the request, then feeds the body, as much as its window
 * allows), at the end of a message (phase DONE), and on an error (phase
 * ERROR, status set; head_ready too when the head was not complete yet).
 * Feeding in phase DONE or ERROR uses nothing.
 */
size_t qx_h1_reqp_feed(qx_h1_reqp_t *rp, const char *data, size_t len);

/* After DONE: readies the reader for the next request on the connection. */
void qx_h1_reqp_next(qx_h1_reqp_t *rp);

/* Name and value of field i. */
static inline const char *qx_h1_reqp_name(const qx_h1_reqp_t *rp, size_t i)
{
    return rp->buf + rp->fields[i].name_off;
}
static inline const char *qx_h1_reqp_value(const qx_h1_reqp_t *rp, size_t i)
{
    return rp->buf + rp->fields[i].value_off;
}

/* Sets up the HTTP/1.1 front on |c|. Returns 0 (with *app and *ops set)
 * or QX_ERR_NOMEM. */
int qx_h1_front_new(qx_tcp_conn_t *c, void **app, const qx_tcp_app_ops_t **ops);

#endif
