/*
 * upstream.h - "an upstream stream": what the exchange talks to on the app
 * side, whatever protocol carries it. The mirror of qx_front_ops_t: each
 * upstream protocol implements qx_upstream_ops_t over a qx_up_stream_t, and
 * reports back through the qx_up_sink_t its user (the exchange) gives it,
 * so neither the exchange nor a front asks which protocol is below.
 *
 * The stream works on views, never on the exchange itself (this layer sits
 * below it): the request arrives as a qx_up_req_t at open(); the body
 * windows are the user's two rings: the codec sends the request body from
 * *req ([sent, fill) is ready to go; it marks bytes acked once written and
 * reports them with sink->consumed) and appends the response body to
 * *resp (reported with sink->body). The response head's fields live in
 * the stream (hb, f) until the next open(): a front may point at them.
 *
 * A request's life on a stream:
 *   open()                 encode the request (kept for a replay)
 *   connect()              a connection from the pool: usable now
 *                          (*reused = 1), or sink->connected() follows
 *   start()                send the head and what body there is; read
 *   send()                 more body in *req, or req_fin set
 *   window()               the user drained *resp: reading may resume
 *   sink->head/body/end    the response
 *   sink->error            the stream broke; with how safely it may be
 *                          sent again: the user then calls rewind() and
 *                          connect() again, or release()
 *   release()              the user is done (early, or after the end)
 * The codec gives its connection back to the pool by itself once the
 * exchange on it is complete; release() after that is a no-op.
 *
 * HTTP/1.1 (h1_up.c) is the first implementation. How the next ones plug
 * in without the exchange changing:
 *   - h2c: connect() finds (or starts) a session on the pool's connection
 *     with a free stream slot instead of taking the connection for itself;
 *     the session (on that connection) multiplexes many qx_up_stream_t,
 *     whose private part holds the stream id. Trailers (gRPC's status)
 *     come as sink->end()'s fields. GOAWAY or REFUSED_STREAM for a stream the app
 *     never processed is sink->error(QX_UP_E_BROKEN, QX_UP_REPLAY_ANY), so
 *     the exchange retries it as it retries a dead keep-alive connection
 *     today; streams under the last stream id finish normally.
 *   - WebSocket (done for h1: req->websocket): open() encodes the
 *     Upgrade; the app's 101 that accepts it is sink->head(101) with
 *     has_body 1 and content_length -1 and st->tunnel set, after which
 *     both windows carry the tunnel's bytes: *req up, *resp down, until
 *     each side's end (req_fin: a FIN to the app; the app's EOF:
 *     sink->end). An h2c codec would send an extended CONNECT instead.
 */
#ifndef QX_UPSTREAM_H
#define QX_UPSTREAM_H

#include "base/arena.h"
#include "base/ring.h"
#include "conf/snapshot.h"
#include "upstream/pool.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define QX_UP_READ (64 * 1024)     /* one upstream read, at most */
#define QX_UP_READ_MIN 4096        /* a response window with less room pauses the upstream */
#define QX_UP_FIELDS 32            /* response fields held in the stream; more move to the arena */
#define QX_UP_MAX_HEADERS 128      /* response fields, at most */
#define QX_UP_MAX_HEAD (64 * 1024) /* response head bytes, at most */
#define QX_UP_PRIV 320             /* the codec's own per-stream state */

typedef struct qx_up_stream qx_up_stream_t;

typedef struct qx_hdr {
    const char *name; /* lowercase for requests from HTTP/3 */
    size_t namelen;
    const char *value;
    size_t valuelen;
} qx_hdr_t;

/* A request as the front received it; strings are not NUL-terminated. */
typedef struct qx_up_req {
    const char *method;
    size_t methodlen;
    const char *path;
    size_t pathlen;
    const char *authority; /* :authority, or the Host header; may be NULL */
    size_t authoritylen;
    const qx_hdr_t *hdrs; /* regular fields, in arrival order */
    size_t nhdrs;
    const char *client_ip;  /* NUL-terminated textual address, for X-Forwarded-For */
    int has_body;           /* a body follows the head (the front saw no end of stream) */
    int64_t content_length; /* from the request, -1 when absent */
    int early;              /* forwarded from 0-RTT: adds Early-Data: 1 (RFC 8470) */
    int is_head;            /* HEAD: the response has no body whatever its fields say */
    /* A WebSocket opening handshake (RFC 6455 §4.1): the codec asks the
     * app to upgrade (method GET, no body framing) and, on its 101, turns
     * both windows into the tunnel's bytes. ws_key is the
     * Sec-WebSocket-Key qrux made for a client that sent none (extended
     * CONNECT, RFC 8441/9220), or NULL: the client's own goes up. */
    int websocket;
    const char *ws_key;
} qx_up_req_t;

/* Why a stream failed (sink->error). */
enum {
    QX_UP_E_BROKEN,   /* the connection failed or closed before the response was complete */
    QX_UP_E_PROTO,    /* the response broke the protocol (or sink->head refused it) */
    QX_UP_E_TOO_BIG,  /* the response body passed resp_body_max */
    QX_UP_E_OVERFLOW, /* more body than *resp had room for: a codec bug, failed safe */
};

/* How safely a broken stream may be sent again on another connection. */
enum {
    QX_UP_REPLAY_NONE,       /* response bytes came, or body bytes went: never */
    QX_UP_REPLAY_IDEMPOTENT, /* the head may have reached the app: idempotent requests only */
    QX_UP_REPLAY_ANY,        /* nothing reached the app */
};

/* What a stream reports to its user; |user| is qx_up_stream_t.user. */
typedef struct qx_up_sink {
    /* The connection connect() started is up (status 0: call start()) or
     * failed (a UV_* error; nothing was sent). */
    void (*connected)(void *user, int status);
    /* Bytes came from the upstream (the stall clock). */
    void (*progress)(void *user);
    /* The final response head. The fields' strings stay valid until the
     * next open(). has_body 0: nothing follows; content_length is -1 when
     * not known. The user sets up *resp here (when has_body). Returns 0,
     * or a negative value: the response is refused (QX_UP_E_PROTO). */
    int (*head)(void *user, int status, const qx_hdr_t *hdrs, size_t n, int has_body,
                int64_t content_length);
    /* n body bytes were appended to *resp. */
    void (*body)(void *user, size_t n);
    /* The response is complete; |trailers| are its trailer fields (n 0:
     * none; HTTP/1.1's chunked trailers come too), valid during the call
     * (the user copies what it keeps). */
    void (*end)(void *user, const qx_hdr_t *trailers, size_t ntrailers);
    /* n request body bytes left *req for good (the client may send more). */
    void (*consumed)(void *user, size_t n);
    /* The stream failed (QX_UP_E_*); replay is QX_UP_REPLAY_* for
     * QX_UP_E_BROKEN. The user calls rewind() + connect(), or release(). */
    void (*error)(void *user, int err, int replay, const char *why);
} qx_up_sink_t;

/* The table each upstream protocol implements. */
typedef struct qx_upstream_ops {
    const char *proto; /* "http/1.1" */
    /* Prepares |st| for a request: encodes it (in |arena|, kept for a
     * replay). Returns 0, QX_ERR_PROTO (a field cannot be sent: 400),
     * QX_ERR_LIMIT (too large: 431) or QX_ERR_NOMEM. */
    int (*open)(qx_up_stream_t *st, const qx_up_req_t *req, qx_arena_t *arena);
    /* A connection to |pool|'s upstream for the stream, as
     * qx_pool_checkout: 0 (*reused 1: usable now, call start(); 0:
     * sink->connected follows), QX_ERR_LIMIT (wait with qx_pool_wait),
     * QX_ERR_IO (no connect started), QX_ERR_NOMEM. |fresh_only| skips
     * idle connections. */
    int (*connect)(qx_up_stream_t *st, qx_pool_t *pool, int fresh_only, int *reused);
    /* The connection is usable: send the request, read the response. */
    void (*start)(qx_up_stream_t *st);
    /* *req has new bytes, or req_fin was set. */
    void (*send)(qx_up_stream_t *st);
    /* *resp has room again. Returns 1 when reading resumed after a pause. */
    int (*window)(qx_up_stream_t *st);
    /* After sink->error(QX_UP_E_BROKEN) with a replay allowed: drops the
     * connection and rewinds the request to be sent again by connect(). */
    void (*rewind)(qx_up_stream_t *st);
    /* The user is done with the stream: a connection still in use is
     * closed (mid-message), a pending write's body bytes are reported
     * consumed. No sink call follows. Accepts a stream never connected. */
    void (*release)(qx_up_stream_t *st);
} qx_upstream_ops_t;

typedef struct qx_up_field {
    uint32_t name_off, name_len, value_off, value_len; /* in hb */
} qx_up_field_t;

struct qx_up_stream {
    const qx_upstream_ops_t *ops; /* NULL until open() */
    const qx_up_sink_t *sink;
    void *user;
    /* Set by the user before open(). */
    qx_ring_t *req;               /* the request body window */
    qx_ring_t *resp;              /* the response body window (data NULL until sink->head) */
    uint8_t **scratch;            /* the worker's QX_UP_READ read buffer, allocated on first use */
    uint64_t resp_body_max;       /* a longer response body is QX_UP_E_TOO_BIG */
    int req_fin;                  /* no more body comes into *req */
    const qx_hdr_t *req_trailers; /* the request's trailer fields, set before req_fin (h2c sends
                                     them; HTTP/1.1 drops them) */
    size_t nreq_trailers;
    int resp_fits; /* set in sink->head: *resp holds the whole body (never pause) */
    /* Set by the codec. */
    int paused; /* the codec stopped reading: *resp is short of room */
    int tunnel; /* the app switched to WebSocket: *req and *resp carry raw bytes */
    /* The response head's bytes and fields (kept with the stream; the
     * codec resets them at open()). */
    qx_arena_t *arena;
    char *hb;
    size_t hblen, hbcap;
    qx_up_field_t *f; /* f_inline, or a larger array in the arena */
    size_t nf, fcap;
    qx_up_field_t f_inline[QX_UP_FIELDS];
    union {
        max_align_t align;
        unsigned char bytes[QX_UP_PRIV];
    } priv; /* the codec's own */
};

/* The codec for requests to endpoint |ep| (HTTP/1.1 for every endpoint
 * today; the place an upstream's protocol setting picks h2c). */
const qx_upstream_ops_t *qx_upstream_ops_for(const qx_endpoint_t *ep);

/* Copies n fields into |arena| as trailers: names lowercased, fields that
 * are not allowed in a trailer section (framing, routing, hop-by-hop and
 * pseudo-fields) left out. Returns the copy (*out_n fields; NULL with 0
 * when none is left or the arena is spent). */
const qx_hdr_t *qx_up_trailers_copy(qx_arena_t *arena, const qx_hdr_t *hdrs, size_t n,
                                    size_t *out_n);

/* Memory the stream keeps between requests: set up once, trimmed when a
 * stream is kept for reuse, freed with its owner. */
void qx_up_stream_init(qx_up_stream_t *st);
void qx_up_stream_trim(qx_up_stream_t *st);
void qx_up_stream_free(qx_up_stream_t *st);

/* For codecs: the response head storage. Resets it (at open). */
void qx_up_head_reset(qx_up_stream_t *st, qx_arena_t *arena);

/* The slow paths of the two below (growing hb, or the field array). */
int qx_up_head_grow(qx_up_stream_t *st, const char *at, size_t len);
qx_up_field_t *qx_up_field_grow(qx_up_stream_t *st);

/* Appends len bytes to hb. Returns 0, or QX_ERR_LIMIT past
 * QX_UP_MAX_HEAD, QX_ERR_NOMEM. Inline: a parser calls it per span. */
static inline int qx_up_head_append(qx_up_stream_t *st, const char *at, size_t len)
{
    if (len == 0)
        return 0; /* a parser may hand over an empty span; hb may not exist yet */
    if (st->hblen + len > st->hbcap) /* hbcap never passes QX_UP_MAX_HEAD */
        return qx_up_head_grow(st, at, len);
    memcpy(st->hb + st->hblen, at, len);
    st->hblen += len;
    return 0;
}

/* A new field starting at hb's end. Returns it, or NULL past
 * QX_UP_MAX_HEADERS fields (or when the arena is spent). */
static inline qx_up_field_t *qx_up_field_add(qx_up_stream_t *st)
{
    if (st->nf == st->fcap)
        return qx_up_field_grow(st);
    qx_up_field_t *f = &st->f[st->nf++];
    *f = (qx_up_field_t){(uint32_t)st->hblen, 0, 0, 0};
    return f;
}

#endif
