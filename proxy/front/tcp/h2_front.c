/*
 * h2_front.c - HTTP/2 on the HTTPS listener (see h2_front.h): an nghttp2
 * server session over a TLS connection, each request stream an exchange.
 *
 * nghttp2 validates requests itself (RFC 9113 §8: pseudo-headers, field
 * names and values, connection-specific fields, content-length against
 * DATA) and keeps its flood protections (their defaults); the stream-reset
 * budget is ours and tighter (reset_budget_take), and a stream is sent
 * upstream only after the read it came in (exchange.c), so one reset in
 * the same read costs no upstream connection.
 *
 * Flow control ties to the upstream: automatic WINDOW_UPDATE is off, the
 * stream window is QX_STREAM_WINDOW, and a stream's bytes are credited
 * (nghttp2_session_consume) only when the exchange reports them written
 * upstream. The connection window is sized for every stream's window at
 * once, so a slow stream cannot hold up the others. Response bodies are
 * copied out of the exchange's window by the data provider (and
 * acknowledged there); nghttp2 is only asked for frames while the TLS
 * output has room, so what it copies out is bounded too.
 */
#include "front/tcp/h2_front.h"

#include "base/log.h"
#include "base/qx.h"
#include "exchange/context.h"
#include "exchange/exchange.h"

#include <inttypes.h>
#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#define H2_IDLE_MS 120000       /* a connection without streams closes after this */
#define H2_GOAWAY_DELAY_MS 1000 /* drain: shutdown notice, then the real GOAWAY */
#define H2_OBUF 16384
/* Stream resets a client may cause, as a token bucket per connection (as
 * nghttp2's own): a burst, refilled at a rate per second. Past it the
 * connection gets GOAWAY(ENHANCE_YOUR_CALM) and no more of its input is
 * read. Below nghttp2's defaults (1000, 33/s), which stay as a backstop. */
#define H2_RESET_BURST 200
#define H2_RESET_RATE 33
#define H2_ID_GAPS 8 /* skipped stream-ID ranges remembered per connection */

typedef struct h2_conn h2_conn_t;

typedef struct h2_stream {
    h2_conn_t *h;
    qx_exchange_t *ex;          /* NULL once ended */
    LIST_ENTRY(h2_stream) link; /* the connection's streams, or its spares */
    int32_t id;
    uint64_t unconsumed; /* request body bytes the exchange holds, not yet credited */
    int stop;       /* the exchange wants no more body: RST_STREAM(NO_ERROR) after the answer */
    int resp_ended; /* END_STREAM went out */
    int expect_continue; /* `expect: 100-continue` on the request */
} h2_stream_t;

struct h2_conn {
    qx_tcp_conn_t *c;
    qx_wctx_t *w;
    nghttp2_session *s;
    LIST_HEAD(, h2_stream) streams;
    unsigned nstreams;
    LIST_HEAD(, h2_stream) spare; /* free list, at most QX_H2_MAX_STREAMS long */
    unsigned nspare;
    int draining;        /* shutdown notice sent */
    int goaway_sent;     /* the final GOAWAY is queued */
    int failed;          /* a fatal session error: flush what is queued, then close */
    int input_held;      /* input stopped because output was backed up */
    int calm;            /* over the reset budget: GOAWAY queued, input ignored */
    unsigned ws_tunnels; /* WebSocket tunnels open on this connection (the exchanges count) */
    int perr;            /* counted as a protocol error (once per connection) */
    double reset_tokens;
    uint64_t reset_refill_ms;
    uint64_t active_ms; /* loop time of the last byte read or body byte sent */
    /* Client stream IDs never opened: the next new one expected, and the
     * ranges a client skipped (the last H2_ID_GAPS of them, a ring). A
     * HEADERS frame below the newest stream is an error only for an ID in
     * a gap: for an ID that was opened it may be trailers for a stream we
     * already reset, which nghttp2 rightly ignores. */
    int64_t next_id; /* past the last stream ID (2^31 + 1 at most: wider than an int32_t) */
    struct {
        int32_t lo, hi;
    } gaps[H2_ID_GAPS];
    unsigned ngaps;
};

static const qx_front_ops_t h2_ops;

/* ---- streams ------------------------------------------------------------ */

static h2_stream_t *stream_new(h2_conn_t *h, int32_t id)
{
    h2_stream_t *st = LIST_FIRST(&h->spare);
    if (st) {
        LIST_REMOVE(st, link);
        h->nspare--;
    } else {
        st = malloc(sizeof(*st));
        if (st == NULL)
            return NULL;
    }
    memset(st, 0, sizeof(*st));
    st->h = h;
    st->id = id;
    LIST_INSERT_HEAD(&h->streams, st, link);
    h->nstreams++;
    return st;
}

static void stream_del(h2_conn_t *h, h2_stream_t *st)
{
    LIST_REMOVE(st, link);
    h->nstreams--;
    if (h->nspare < QX_H2_MAX_STREAMS) {
        LIST_INSERT_HEAD(&h->spare, st, link);
        h->nspare++;
    } else {
        free(st);
    }
}

/* Ends a stream's exchange; the bytes it still held are given back to the
 * connection window (nghttp2 forgets the stream's own window). */
static void stream_end(h2_conn_t *h, h2_stream_t *st, int error)
{
    qx_exchange_t *ex = st->ex;
    st->ex = NULL;
    if (ex)
        qx_exchange_front_closed(ex, error);
    if (st->unconsumed > 0 && h->s)
        nghttp2_session_consume_connection(h->s, (size_t)st->unconsumed);
    st->unconsumed = 0;
}

/* The idle timer runs whether streams are open or not: streams that move
 * no byte (a client holding every window at 0) do not keep a connection
 * alive; h2_timeout looks at active_ms before it sends GOAWAY. */
static void idle_timer(h2_conn_t *h)
{
    if (h->draining && !h->goaway_sent)
        return; /* the GOAWAY step owns the timer */
    if (h->goaway_sent)
        return;
    qx_tcp_conn_timer(h->c, H2_IDLE_MS);
}

/* ---- front ops ---------------------------------------------------------- */

/* The response's trailer fields in a HEADERS frame that ends the stream
 * (gRPC's grpc-status comes this way). Returns 0, or -1: the stream then
 * ends with the last DATA frame, without them. */
static int send_trailers(nghttp2_session *session, int32_t stream_id, const qx_exchange_t *ex)
{
    nghttp2_nv nva[QX_MAX_HEADERS];
    size_t n = QX_MIN(ex->nresp_trailers, (size_t)QX_MAX_HEADERS);
    for (size_t i = 0; i < n; i++) {
        const qx_hdr_t *t = &ex->resp_trailers[i];
        nva[i] = (nghttp2_nv){(uint8_t *)t->name, (uint8_t *)t->value, t->namelen, t->valuelen,
                              NGHTTP2_NV_FLAG_NONE};
    }
    return nghttp2_submit_trailer(session, stream_id, nva, n) == 0 ? 0 : -1;
}

static ssize_t read_data(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *source, void *user_data)
{
    h2_stream_t *st = source->ptr;
    qx_exchange_t *ex = st->ex;
    struct iovec iov[2];
    (void)session;
    (void)stream_id;
    (void)user_data;
    if (ex == NULL) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    int k = qx_ring_peek(&ex->resp, iov, length);
    size_t total = 0;
    st->h->active_ms = uv_now(&st->h->w->loop);
    for (int i = 0; i < k; i++) {
        memcpy(buf + total, iov[i].iov_base, iov[i].iov_len);
        total += iov[i].iov_len;
    }
    /* Copied into nghttp2's frame buffer: the window space is free. */
    qx_ring_mark_sent(&ex->resp, total);
    qx_exchange_resp_acked(ex, total);
    if (ex->resp_eof && qx_ring_unsent(&ex->resp) == 0) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (ex->nresp_trailers > 0 && send_trailers(session, stream_id, ex) == 0)
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM; /* the trailers end the stream */
    } else if (total == 0)
        return NGHTTP2_ERR_DEFERRED; /* resume() brings it back */
    return (ssize_t)total;
}

static int h2_respond(qx_exchange_t *ex, int status, const qx_hdr_t *hdrs, size_t n, int has_body)
{
    h2_stream_t *st = ex->front;
    h2_conn_t *h = st->h;
    nghttp2_nv nva[QX_MAX_HEADERS + 2];
    char code[4];
    size_t k = 0, altlen;
    const char *alt = qx_tcp_conn_alt_svc(h->c, &altlen);

    if (status < 100 || status > 999 || n > QX_MAX_HEADERS || h->s == NULL)
        return QX_ERR_INVAL;
    code[0] = (char)('0' + status / 100);
    code[1] = (char)('0' + status / 10 % 10);
    code[2] = (char)('0' + status % 10);
    nva[k++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)code, 7, 3, NGHTTP2_NV_FLAG_NONE};
    for (size_t i = 0; i < n; i++) {
        if (hdrs[i].namelen == 7 && memcmp(hdrs[i].name, "alt-svc", 7) == 0)
            continue; /* ours replaces the app's */
        nva[k++] = (nghttp2_nv){(uint8_t *)hdrs[i].name, (uint8_t *)hdrs[i].value, hdrs[i].namelen,
                                hdrs[i].valuelen, NGHTTP2_NV_FLAG_NONE};
    }
    nva[k++] = (nghttp2_nv){(uint8_t *)"alt-svc", (uint8_t *)alt, 7, altlen, NGHTTP2_NV_FLAG_NONE};
    nghttp2_data_provider dp = {.source = {.ptr = st}, .read_callback = read_data};
    /* nghttp2 copies the fields, so the exchange's buffers may go. */
    int rv = nghttp2_submit_response(h->s, st->id, nva, k, has_body ? &dp : NULL);
    if (rv != 0) {
        QX_DEBUG("h2: submit_response on %d: %s", st->id, nghttp2_strerror(rv));
        return QX_ERR_PROTO;
    }
    qx_tcp_conn_mark(h->c);
    return 0;
}

static void h2_resume(qx_exchange_t *ex)
{
    h2_stream_t *st = ex->front;
    if (st->h->s == NULL)
        return;
    nghttp2_session_resume_data(st->h->s, st->id);
    qx_tcp_conn_mark(st->h->c);
}

static void h2_consumed(qx_exchange_t *ex, size_t n)
{
    h2_stream_t *st = ex->front;
    h2_conn_t *h = st->h;
    n = (size_t)QX_MIN((uint64_t)n, st->unconsumed);
    st->unconsumed -= n;
    if (h->s && n > 0) {
        nghttp2_session_consume(h->s, st->id, n);
        qx_tcp_conn_mark(h->c);
    }
}

static void h2_stop_reading(qx_exchange_t *ex)
{
    h2_stream_t *st = ex->front;
    h2_conn_t *h = st->h;
    /* RFC 9113 §8.1: a complete response may come before the request is
     * complete; RST_STREAM(NO_ERROR) after it tells the client to stop. */
    st->stop = 1;
    if (st->resp_ended && h->s) {
        nghttp2_submit_rst_stream(h->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
        qx_tcp_conn_mark(h->c);
    }
}

static void h2_abort(qx_exchange_t *ex)
{
    h2_stream_t *st = ex->front;
    h2_conn_t *h = st->h;
    if (h->s == NULL)
        return;
    nghttp2_submit_rst_stream(h->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    qx_tcp_conn_mark(h->c);
}

static const qx_front_ops_t h2_ops = {
    .proto = "h2",
    .proto_idx = QX_P_H2,
    .respond = h2_respond,
    .resume = h2_resume,
    .consumed = h2_consumed,
    .stop_reading = h2_stop_reading,
    .abort = h2_abort,
};

/* ---- nghttp2 callbacks -------------------------------------------------- */

static h2_stream_t *stream_of(nghttp2_session *s, int32_t id)
{
    return nghttp2_session_get_stream_user_data(s, id);
}

static int id_skipped(const h2_conn_t *h, int32_t id)
{
    unsigned n = QX_MIN(h->ngaps, (unsigned)H2_ID_GAPS);
    for (unsigned i = 0; i < n; i++)
        if (id >= h->gaps[i].lo && id <= h->gaps[i].hi)
            return 1;
    return 0;
}

/* RFC 9113 §5.1.1: a new stream's ID must exceed every ID the client used
 * before, and the first use of an ID closes the lower idle ones. nghttp2
 * ignores a HEADERS frame below its last stream (it keeps no record of
 * closed streams, so it cannot tell trailers for a stream it reset from a
 * stream that was never opened); the gaps tell, and such a frame is a
 * connection error PROTOCOL_ERROR. */
static int on_begin_frame(nghttp2_session *s, const nghttp2_frame_hd *hd, void *user_data)
{
    h2_conn_t *h = user_data;
    int32_t id = hd->stream_id;

    if (hd->type != NGHTTP2_HEADERS || id <= 0 || (id & 1) == 0)
        return 0;
    if (h->next_id == 0)
        h->next_id = 1;
    if (id >= h->next_id) {
        if (id > h->next_id) {
            unsigned i = h->ngaps++ % H2_ID_GAPS;
            h->gaps[i].lo = (int32_t)h->next_id; /* below id: fits */
            h->gaps[i].hi = id - 2;
        }
        h->next_id = (int64_t)id + 2;
        return 0;
    }
    if (nghttp2_session_find_stream(s, id) == NULL && id_skipped(h, id)) {
        QX_DEBUG("h2: HEADERS on stream %d, below stream %lld and never opened", id,
                 (long long)(h->next_id - 2));
        nghttp2_session_terminate_session(s, NGHTTP2_PROTOCOL_ERROR);
        qx_tcp_conn_mark(h->c);
    }
    return 0;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *user_data)
{
    h2_conn_t *h = user_data;
    qx_tcp_conn_t *c = h->c;
    if (h->calm)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    h2_stream_t *st = stream_new(h, frame->hd.stream_id);
    if (st == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets this stream only */
    st->ex =
        qx_exchange_new(h->w, &h2_ops, st, frame->hd.stream_id, (const struct sockaddr *)&c->peer);
    if (st->ex == NULL) {
        stream_del(h, st);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    st->ex->conn_tunnels = &h->ws_tunnels;
    nghttp2_session_set_stream_user_data(s, frame->hd.stream_id, st);
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    (void)flags;
    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    h2_stream_t *st = stream_of(s, frame->hd.stream_id);
    if (st == NULL || st->ex == NULL)
        return 0;
    if (frame->headers.cat == NGHTTP2_HCAT_HEADERS) {
        /* Trailers (nghttp2 let only those through after the head): kept
         * for an upstream that takes them (h2c); too many are dropped. */
        qx_exchange_trailer(st->ex, (const char *)name, namelen, (const char *)value, valuelen);
        return 0;
    }
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    if (namelen == 6 && memcmp(name, "expect", 6) == 0 && valuelen == 12 &&
        strncasecmp((const char *)value, "100-continue", 12) == 0)
        st->expect_continue = 1;
    /* Too many or too large: remembered, answered with 431 at the end. */
    qx_exchange_header(st->ex, (const char *)name, namelen, (const char *)value, valuelen);
    return 0;
}

/* One RST_STREAM from the client: takes a token from the connection's
 * budget. Returns 0, or -1 when the budget is spent (GOAWAY queued). */
static int reset_budget_take(h2_conn_t *h)
{
    uint64_t now = uv_now(&h->w->loop);
    h->reset_tokens += (double)(now - h->reset_refill_ms) * H2_RESET_RATE / 1000.0;
    if (h->reset_tokens > H2_RESET_BURST)
        h->reset_tokens = H2_RESET_BURST;
    h->reset_refill_ms = now;
    if (h->reset_tokens >= 1) {
        h->reset_tokens -= 1;
        return 0;
    }
    h->calm = 1;
    qx_cnt_add(&h->w->metrics.defences[QX_D_H2_RESET_FLOOD], 1);
    QX_DEBUG("h2: stream reset budget spent: GOAWAY");
    nghttp2_session_terminate_session2(h->s, nghttp2_session_get_last_proc_stream_id(h->s),
                                       NGHTTP2_ENHANCE_YOUR_CALM);
    qx_tcp_conn_mark(h->c);
    return -1;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *user_data)
{
    h2_conn_t *h = user_data;
    int fin = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    h2_stream_t *st;

    if (h->calm)
        return NGHTTP2_ERR_CALLBACK_FAILURE; /* nothing more is processed */
    switch (frame->hd.type) {
    case NGHTTP2_RST_STREAM:
        /* Stop at once: the rest of this read is not processed either
         * (mem_recv returns the failure; the GOAWAY still goes out). */
        if (reset_budget_take(h) != 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        break;
    case NGHTTP2_HEADERS:
        st = stream_of(s, frame->hd.stream_id);
        if (st == NULL || st->ex == NULL)
            return 0;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            qx_exchange_headers_done(st->ex, qx_tcp_conn_sni(h->c), fin);
            /* The request went on its way (not answered at once): a
             * client waiting on 100-continue may send the body. */
            if (!fin && st->expect_continue && st->ex && st->ex->status == 0) {
                static const nghttp2_nv cont[] = {
                    {(uint8_t *)":status", (uint8_t *)"100", 7, 3, NGHTTP2_NV_FLAG_NONE}};
                nghttp2_submit_headers(s, NGHTTP2_FLAG_NONE, st->id, NULL, cont, 1, NULL);
            }
        } else if (fin) {
            qx_exchange_body_end(st->ex); /* trailers end the body */
        }
        break;
    case NGHTTP2_DATA:
        st = stream_of(s, frame->hd.stream_id);
        if (fin && st && st->ex)
            qx_exchange_body_end(st->ex);
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *s, uint8_t flags, int32_t stream_id,
                              const uint8_t *data, size_t len, void *user_data)
{
    h2_stream_t *st = stream_of(s, stream_id);
    (void)flags;
    (void)user_data;
    if (st == NULL || st->ex == NULL) {
        nghttp2_session_consume(s, stream_id, len);
        return 0;
    }
    st->unconsumed += len;
    qx_exchange_body(st->ex, data, len);
    return 0;
}

static void count_protocol_error(h2_conn_t *h)
{
    if (h->perr || h->calm)
        return;
    h->perr = 1;
    qx_cnt_add(&h->w->metrics.defences[QX_D_H2_PROTOCOL_ERROR], 1);
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *frame, void *user_data)
{
    if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR)
        count_protocol_error(user_data); /* nghttp2 ended the connection on a violation */
    if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
        !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    h2_stream_t *st = stream_of(s, frame->hd.stream_id);
    if (st == NULL)
        return 0;
    st->resp_ended = 1;
    /* Answered before the request body ended: stop the client sending. */
    if (st->stop && !nghttp2_session_get_stream_remote_close(s, st->id))
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    h2_conn_t *h = user_data;
    h2_stream_t *st = stream_of(s, stream_id);
    if (st == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(s, stream_id, NULL);
    stream_end(h, st, error_code != NGHTTP2_NO_ERROR);
    stream_del(h, st);
    idle_timer(h);
    return 0;
}

static int on_error(nghttp2_session *s, int lib_error_code, const char *msg, size_t len,
                    void *user_data)
{
    (void)s;
    (void)lib_error_code;
    (void)user_data;
    QX_DEBUG("h2: %.*s", (int)len, msg);
    return 0;
}

/* ---- transport ops ------------------------------------------------------ */

static void fail(h2_conn_t *h, int rv, const char *where)
{
    QX_DEBUG("h2: %s: %s", where, nghttp2_strerror(rv));
    h->failed = 1;
    qx_tcp_conn_mark(h->c);
}

static void h2_input(void *app)
{
    h2_conn_t *h = app;
    uint8_t buf[16384];
    if (h->failed)
        return;
    for (;;) {
        /* Frames we owe (SETTINGS and PING acks, RST_STREAM) pile up when
         * the client does not read: stop reading it too. */
        if (qx_tcp_conn_room(h->c) == 0) {
            h->input_held = 1; /* h2_output resumes it */
            return;
        }
        ssize_t n = qx_tcp_conn_read(h->c, buf, sizeof(buf));
        if (n == 0)
            return;
        if (n < 0) {
            qx_tcp_conn_close(h->c, n == QX_TCP_EOF ? QX_TC_CLOSE_GRACEFUL : QX_TC_CLOSE_ABORT);
            return;
        }
        h->active_ms = uv_now(&h->w->loop);
        ssize_t rv = nghttp2_session_mem_recv(h->s, buf, (size_t)n);
        if (rv < 0) {
            count_protocol_error(h);
            fail(h, (int)rv, h->calm ? "reset budget" : "mem_recv");
            return;
        }
        qx_tcp_conn_mark(h->c);
    }
}

static void h2_output(void *app)
{
    h2_conn_t *h = app;
    uint8_t obuf[H2_OBUF];
    size_t olen = 0;

    for (;;) {
        if (qx_tcp_conn_room(h->c) <= olen)
            break; /* on_write brings us back */
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(h->s, &data);
        if (n < 0) {
            h->failed = 1;
            QX_DEBUG("h2: mem_send: %s", nghttp2_strerror((int)n));
            break;
        }
        if (n == 0)
            break;
        /* Frames are small or up to 16 KiB: gather them into records. */
        if (olen + (size_t)n > sizeof(obuf)) {
            qx_tcp_conn_write(h->c, obuf, olen);
            olen = 0;
        }
        if ((size_t)n >= sizeof(obuf)) {
            qx_tcp_conn_write(h->c, data, (size_t)n);
        } else {
            memcpy(obuf + olen, data, (size_t)n);
            olen += (size_t)n;
        }
    }
    if (olen > 0)
        qx_tcp_conn_write(h->c, obuf, olen);
    if (h->input_held && qx_tcp_conn_room(h->c) > 0) {
        h->input_held = 0;
        qx_tcp_conn_want_input(h->c);
    }
    if (h->failed) {
        qx_tcp_conn_close(h->c, QX_TC_CLOSE_GRACEFUL);
        return;
    }
    /* GOAWAY sent (drain, idle, or the client's) and no stream left. */
    if (!nghttp2_session_want_read(h->s) && !nghttp2_session_want_write(h->s))
        qx_tcp_conn_close(h->c, QX_TC_CLOSE_GRACEFUL);
}

static void send_goaway(h2_conn_t *h)
{
    if (h->goaway_sent)
        return;
    h->goaway_sent = 1;
    nghttp2_submit_goaway(h->s, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h->s),
                          NGHTTP2_NO_ERROR, NULL, 0);
    qx_tcp_conn_mark(h->c);
}

static void h2_timeout(void *app)
{
    h2_conn_t *h = app;
    uint64_t idle = uv_now(&h->w->loop) - h->active_ms;
    /* Streams open and a byte moved lately: not idle yet. */
    if (!h->draining && h->nstreams > 0 && idle < H2_IDLE_MS) {
        qx_tcp_conn_timer(h->c, H2_IDLE_MS - idle);
        return;
    }
    /* Drain step two, or an idle connection (with or without stalled
     * streams): the final GOAWAY; the connection closes when its last
     * stream ends (a stalled one at client_idle_timeout_secs). */
    send_goaway(h);
    qx_tcp_conn_timer(h->c, 0);
}

static void h2_drain(void *app)
{
    h2_conn_t *h = app;
    if (h->draining)
        return;
    h->draining = 1;
    /* Step one: the client learns to open no new streams; those already on
     * their way are still served. One second later the final GOAWAY names
     * the last stream processed. */
    nghttp2_submit_shutdown_notice(h->s);
    qx_tcp_conn_timer(h->c, H2_GOAWAY_DELAY_MS);
    qx_tcp_conn_mark(h->c);
}

static void h2_free(void *app, int error)
{
    h2_conn_t *h = app;
    /* nghttp2_session_del calls no callback: end the exchanges here. */
    h2_stream_t *st;
    while ((st = LIST_FIRST(&h->streams)) != NULL) {
        stream_end(h, st, error || st->ex != NULL);
        stream_del(h, st);
    }
    while ((st = LIST_FIRST(&h->spare)) != NULL) {
        LIST_REMOVE(st, link);
        free(st);
    }
    nghttp2_session_del(h->s);
    free(h);
}

static const qx_tcp_app_ops_t h2_app_ops = {
    .input = h2_input,
    .output = h2_output,
    .timeout = h2_timeout,
    .drain = h2_drain,
    .free = h2_free,
};

int qx_h2_front_new(qx_tcp_conn_t *c, void **app, const qx_tcp_app_ops_t **ops)
{
    nghttp2_session_callbacks *cbs = NULL;
    nghttp2_option *opt = NULL;
    int rv = QX_ERR_NOMEM;

    h2_conn_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return QX_ERR_NOMEM;
    h->c = c;
    h->w = c->w;
    LIST_INIT(&h->streams);
    LIST_INIT(&h->spare);
    h->reset_tokens = H2_RESET_BURST;
    h->reset_refill_ms = uv_now(&c->w->loop);
    h->active_ms = h->reset_refill_ms;
    if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0)
        goto fail;
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_error_callback2(cbs, on_error);
    /* Flow control follows the upstream (see the top of this file). The
     * flood and CONTINUATION limits keep their defaults; the reset budget
     * is ours (reset_budget_take), nghttp2's a looser backstop. */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_stream_reset_rate_limit(opt, 2 * H2_RESET_BURST, 2 * H2_RESET_RATE);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
    if (nghttp2_session_server_new2(&h->s, cbs, h, opt) != 0)
        goto fail;

    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, QX_H2_MAX_STREAMS},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, QX_MAX_HEADER_BYTES},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, QX_STREAM_WINDOW},
        /* WebSocket over HTTP/2 (RFC 8441): nghttp2 then accepts
         * :protocol on CONNECT (once the client acknowledged this), and the
         * exchange turns it into an HTTP/1.1 upgrade to the app. */
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},
    };
    if (nghttp2_submit_settings(h->s, NGHTTP2_FLAG_NONE, iv, QX_ARRAY_LEN(iv)) != 0 ||
        nghttp2_session_set_local_window_size(h->s, NGHTTP2_FLAG_NONE, 0,
                                              QX_H2_MAX_STREAMS * QX_STREAM_WINDOW) != 0)
        goto fail;
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    qx_tcp_conn_timer(c, H2_IDLE_MS);
    qx_tcp_conn_mark(c);
    if (qx_tcp_conn_draining(c))
        h2_drain(h);
    *app = h;
    *ops = &h2_app_ops;
    return 0;

fail:
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    nghttp2_session_del(h->s);
    free(h);
    return rv;
}
