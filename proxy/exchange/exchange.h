/*
 * exchange.h - one proxied request: the bridge between a front stream
 * (HTTP/3, HTTP/2 or HTTP/1.1, through qx_front_ops_t) and an upstream
 * stream (through qx_upstream_ops_t: HTTP/1.1 today, upstream/h1_up.c),
 * neither of which it asks the protocol of.
 *
 * The front feeds the request in (headers, body bytes, end); the exchange
 * routes it, checks limits, takes a connection from the upstream's pool
 * (waiting in its queue, trying another endpoint when a connect fails)
 * and opens an upstream stream on it; it hands the response head and body
 * back to the front through its ops. Each direction holds at most
 * QX_STREAM_WINDOW bytes: the front extends the client's flow control only
 * as request bytes are written upstream, and the upstream stream stops
 * reading while the response window is full.
 *
 * Lifetime: created by the front when a request stream opens, and ended by
 * qx_exchange_front_closed() when the front stream is gone. After that call
 * no op reaches the front; the exchange frees itself once its timer handle
 * has closed.
 */
#ifndef QX_EXCHANGE_H
#define QX_EXCHANGE_H

#include "base/arena.h"
#include "base/defer.h"
#include "base/ring.h"
#include "conf/snapshot.h"
#include "upstream/h1.h" /* qx_h1_reason, which the HTTP/1.1 front uses through this header */
#include "upstream/pool.h"
#include "upstream/upstream.h"

#include <netinet/in.h>
#include <stdint.h>
#include <uv.h>

#define QX_STREAM_WINDOW (64 * 1024) /* body bytes held per direction per stream */
#define QX_MAX_HEADER_BYTES (64 * 1024)
#define QX_MAX_HEADERS 128
#define QX_DISCARD_MAX (8 * 1024 * 1024) /* request body read and dropped after an early answer */
#define QX_EX_INLINE 1024                /* a body window this small lives in the exchange itself */
#define QX_EX_FIELDS 32       /* header fields held in the exchange; more move to the arena */
#define QX_EX_CACHE 256       /* finished exchanges a worker keeps for reuse */
#define QX_CONNECT_ATTEMPTS 3 /* endpoints a request tries when connects fail */

typedef struct qx_wctx qx_wctx_t;
typedef struct qx_exchange qx_exchange_t;

/* What every front implements, so the exchange never asks which protocol. */
typedef struct qx_front_ops {
    const char *proto; /* "h3", "h2", "h1": the access log's label */
    int proto_idx;     /* QX_P_*: the metrics label */
    /* Sends the response head. has_body 0 ends the stream after it. Body
     * bytes are then pulled from ex->resp when resume() says so. The
     * fields' strings stay valid until qx_exchange_front_closed(): a front
     * may point at them rather than copy them. */
    int (*respond)(qx_exchange_t *ex, int status, const qx_hdr_t *hdrs, size_t n, int has_body);
    /* ex->resp has new bytes, or ex->resp_eof was set. */
    void (*resume)(qx_exchange_t *ex);
    /* n request body bytes have left the window: credit the client. */
    void (*consumed)(qx_exchange_t *ex, size_t n);
    /* The exchange needs no more request body (it answered early). */
    void (*stop_reading)(qx_exchange_t *ex);
    /* The response cannot be completed: reset the stream. */
    void (*abort)(qx_exchange_t *ex);
} qx_front_ops_t;

/*
 * The exchange's states, in the order a request normally walks them; one
 * set_state() in exchange.c asserts every move (QRUX_ASSERT). The one
 * timer watches what the state says: the connect in QUEUED and
 * CONNECTING, the response head in UPSTREAM, the body's two ends in
 * RESPONSE and DONE.
 *
 *   HEAD -> [QUEUED ->] CONNECTING -> UPSTREAM -> RESPONSE -> DONE -> CLOSED
 *   (the usual walk; a kept-alive idle connection goes straight to UPSTREAM)
 *
 *   HEAD -> QUEUED|CONNECTING|UPSTREAM   routed, at the next pump (UPSTREAM:
 *                                        a kept-alive connection was idle)
 *   QUEUED -> QUEUED                     the pool was still full when woken
 *   CONNECTING -> CONNECTING|QUEUED      a connect failed: the next endpoint
 *   UPSTREAM -> QUEUED|CONNECTING        a reused connection broke before
 *                                        any reply: the request goes again
 *   HEAD..RESPONSE -> DONE               our own answer (400, 413, 421, 502,
 *                                        503, 504; before RESPONSE), or the
 *                                        response's end
 *   RESPONSE|DONE -> ABORTED             failed after the head went out (or
 *                                        the client stalled on the body):
 *                                        the client stream is reset
 *   any -> CLOSED                        qx_exchange_front_closed (terminal)
 *
 * The request body is an axis of its own (req_fin, req_discard,
 * req_stopped), as is the upstream stream's progress (the codec's).
 */
typedef enum {
    QX_EX_HEAD,       /* receiving the request head; routed requests wait for the pump here */
    QX_EX_QUEUED,     /* waiting in the pool's queue for room to connect */
    QX_EX_CONNECTING, /* a new upstream connection's connect is under way */
    QX_EX_UPSTREAM,   /* the request goes up; no response head yet */
    QX_EX_RESPONSE,   /* the response head went to the front; the body flows */
    QX_EX_DONE,       /* the whole response is produced (the upstream's, or our own answer) */
    QX_EX_ABORTED,    /* failed after the head went out: the client stream was reset */
    QX_EX_CLOSED,     /* the front stream is gone; no op reaches it (terminal) */
} qx_exchange_state_t;

struct qx_exchange {
    qx_wctx_t *w;
    const qx_front_ops_t *fops;
    void *front; /* the front's connection */
    int64_t stream_id;
    qx_exchange_t *prev, *next; /* the front connection's list */
    int h3_fin_due; /* HTTP/3 front: its bare FIN waits to be offered again (h3_front.c) */
    qx_exchange_state_t state; /* moved only by set_state() */
    qx_snapshot_t *snap;
    uint64_t start_ns;
    uint64_t up_progress_ms; /* loop time the upstream last sent bytes */
    uint64_t cl_progress_ms; /* ... the client last took response bytes */
    qx_deferred_t pump;      /* on the worker's deferred-work queue: dispatch, or write the body */
    int dispatch_due;        /* routed: the upstream is asked for at the next pump */
    qx_pool_wait_t wait;     /* in wait_pool's queue for a connection (max_connections) */
    qx_pool_t *wait_pool;

    /* request */
    const char *sni; /* owned by the front connection; valid until headers done */
    char client_ip[INET6_ADDRSTRLEN];
    char *method, *path, *authority, *scheme;
    size_t methodlen, pathlen, authoritylen, schemelen;
    qx_hdr_t *hdrs; /* hdrs_inline, or a larger array in the arena */
    size_t nhdrs, hdrcap;
    struct qx_trace *trace; /* in the arena, once the request is built for the upstream */
    int bad_request;        /* a header the exchange itself refuses (431/400) */
    int method_idx;
    int is_head;
    int has_body;   /* the front has not seen the end of the stream */
    int early;      /* the head arrived in 0-RTT early data (set by the front) */
    int held;       /* unsafe early request waiting for the handshake */
    int64_t req_cl; /* content-length or -1 */
    uint64_t req_body_in;
    int req_fin;            /* the client's body is complete */
    int req_discard;        /* request body is dropped (early answer) */
    uint64_t req_discarded; /* bytes dropped so far */
    int req_stopped;        /* STOP_SENDING sent */
    qx_ring_t req;
    uint8_t *reqbuf;
    int req_window_due;     /* body of unknown length: its window comes with its first byte */
    qx_hdr_t *req_trailers; /* the client's trailer fields, in the arena */
    size_t nreq_trailers, req_trailer_cap;
    int grpc;                  /* content-type application/grpc*: errors answered the gRPC way */
    uint64_t deadline_ms;      /* loop time the request must be answered by (grpc-timeout), or 0 */
    uint64_t front_uncredited; /* the front's own: body bytes handed in, not yet credited */

    /* WebSocket (websocket.h): the request is an opening handshake; once
     * the app accepts it, both windows carry the tunnel's bytes until each
     * side's end, and one idle clock (websocket_idle_timeout_secs) watches
     * both directions. */
    char *protocol; /* :protocol of an extended CONNECT, or NULL */
    size_t protocollen;
    int ws;         /* QX_WS_* */
    int ws_counted; /* in the worker's websocket_tunnels gauge */
    /* The front connection's count of open tunnels, set by a front that
     * carries many streams (HTTP/2, HTTP/3) right after qx_exchange_new;
     * NULL: one stream per connection (HTTP/1.1). */
    unsigned *conn_tunnels;
    int ws_conn_counted; /* counted in *conn_tunnels */
    int tunnel;          /* the app answered 101: the tunnel is open */
    uint64_t tunnel_ms;  /* loop time of the tunnel's last byte, either way */
    char ws_key[28];     /* the Sec-WebSocket-Key qrux sent for an extended CONNECT */

    /* upstream */
    int route;
    size_t up;    /* flat endpoint index in snap (SIZE_MAX: none) */
    int attempts; /* endpoints tried (connect failures move to the next) */
    const char *up_name;
    int reused; /* the stream's connection was a kept-alive one */
    int retried;

    /* response */
    int status;    /* the status sent to the client (0 = none yet) */
    int up_status; /* the upstream's final status (0 = none), for the access log */
    int resp_eof;  /* no more body bytes will come */
    uint64_t resp_body;
    /* The response's trailer fields (strings in the arena): a front sends
     * them after the last body byte, in place of ending the stream with
     * it (HTTP/2, HTTP/3); HTTP/1.1 drops them. */
    const qx_hdr_t *resp_trailers;
    size_t nresp_trailers;
    const char *grpc_status; /* the response's grpc-status value, for the access log */
    size_t grpc_statuslen;
    qx_ring_t resp;
    uint8_t *respbuf;
    char local_clen[24]; /* our own answer's content-length value */
    char status_text[4]; /* the status as 3 digits, for fronts that point at it */

    /* Everything above is cleared for each request; what follows is kept
     * while the exchange waits in its worker's cache (QX_EX_CACHE), or
     * fully rewritten before use. */
    uv_timer_t timer; /* what it watches follows from the state (above) */
    qx_arena_t arena;
    qx_up_stream_t ups; /* the upstream stream (its response head storage is kept) */
    qx_hdr_t hdrs_inline[QX_EX_FIELDS];
    uint8_t req_inline[QX_EX_INLINE];
    uint8_t resp_inline[QX_EX_INLINE];
};

/* Creates an exchange for a new front stream. client is the peer address.
 * Returns NULL when memory is short. */
qx_exchange_t *qx_exchange_new(qx_wctx_t *w, const qx_front_ops_t *fops, void *front,
                               int64_t stream_id, const struct sockaddr *client);

/* One request field (pseudo-headers included, names as received).
 * Returns 0, or QX_ERR_LIMIT (too many / too large: 431 follows). */
int qx_exchange_header(qx_exchange_t *ex, const char *name, size_t namelen, const char *value,
                       size_t valuelen);

/* One request trailer field (after the body, before the stream ends).
 * Returns 0, or QX_ERR_LIMIT (too many / too large: the field is dropped). */
int qx_exchange_trailer(qx_exchange_t *ex, const char *name, size_t namelen, const char *value,
                        size_t valuelen);

/* The head is complete; fin says the stream ended with it. Routes and
 * dispatches, or answers an error. */
void qx_exchange_headers_done(qx_exchange_t *ex, const char *sni, int fin);

/* The connection's handshake completed: a request held back from early
 * data is forwarded now (as an ordinary, non-early request). */
void qx_exchange_release_held(qx_exchange_t *ex);

/* Request body bytes. The front never delivers more than the window it
 * granted, so they always fit. */
void qx_exchange_body(qx_exchange_t *ex, const uint8_t *data, size_t len);

/* The client's request stream ended. */
void qx_exchange_body_end(qx_exchange_t *ex);

/* The front consumed |n| response body bytes for good (acknowledged):
 * their space in the window is free again. */
void qx_exchange_resp_acked(qx_exchange_t *ex, size_t n);

/* The front answered the client itself (e.g. HTTP/1.1: 400 for a broken
 * chunked body, 408 for a stalled one) before qx_exchange_front_closed():
 * the access log and the metrics record that status. */
void qx_exchange_front_answered(qx_exchange_t *ex, int status);

/* Frees what the exchanges keep per worker (the context's ex_local: the
 * cached exchanges, the upstream read scratch buffer) once its loop has
 * ended. Accepts a worker that never had an exchange. */
void qx_exchange_cache_free(qx_wctx_t *w);

/* The front stream is closed (done, reset, or its connection died).
 * |error| is nonzero when it did not end cleanly. Logs and counts the
 * request, releases the upstream connection and frees the exchange. */
void qx_exchange_front_closed(qx_exchange_t *ex, int error);

#endif
