/* exchange.c - one proxied request, front <-> upstream stream (see exchange.h). */
#include "exchange/exchange.h"

#include "base/log.h"
#include "base/qx.h"
#include "conf/dns.h"
#include "exchange/context.h"
#include "exchange/trace.h"
#include "exchange/websocket.h"
#include "upstream/h1.h"

#include <arpa/inet.h>
#include <gnutls/crypto.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const qx_up_sink_t up_sink;

static void ex_release_upstream(qx_exchange_t *ex);
static void pump_unqueue(qx_exchange_t *ex);
static void pump_later(qx_exchange_t *ex);
static void dispatch(qx_exchange_t *ex, int fresh_only);
static int connect_failed(qx_exchange_t *ex, const char *why);
static void build_and_dispatch(qx_exchange_t *ex);
typedef struct ex_local ex_local_t;
static void client_ip(ex_local_t *L, const struct sockaddr *client, char *out);
static void format_ip(const struct sockaddr *client, char *client_ip);
static void exchange_free(qx_exchange_t *ex);
static void *grow_fields(qx_exchange_t *ex, const void *arr, size_t *cap, size_t elem, size_t used);
static int try_retry(qx_exchange_t *ex, int replay);
static void note_grpc_status(qx_exchange_t *ex, const qx_hdr_t *hdrs, size_t n);

/* ---- state --------------------------------------------------------------- */

/* The moves set_state() allows, by state (see the diagram in exchange.h).
 * A move to the same state is listed where it happens: a queued request
 * that finds the pool still full queues again; a failed connect starts the
 * next one. */
#define S(x) (1u << (x))
static const unsigned legal_moves[] = {
    [QX_EX_HEAD] =
        S(QX_EX_QUEUED) | S(QX_EX_CONNECTING) | S(QX_EX_UPSTREAM) | S(QX_EX_DONE) | S(QX_EX_CLOSED),
    [QX_EX_QUEUED] =
        S(QX_EX_QUEUED) | S(QX_EX_CONNECTING) | S(QX_EX_UPSTREAM) | S(QX_EX_DONE) | S(QX_EX_CLOSED),
    [QX_EX_CONNECTING] =
        S(QX_EX_QUEUED) | S(QX_EX_CONNECTING) | S(QX_EX_UPSTREAM) | S(QX_EX_DONE) | S(QX_EX_CLOSED),
    [QX_EX_UPSTREAM] =
        S(QX_EX_QUEUED) | S(QX_EX_CONNECTING) | S(QX_EX_RESPONSE) | S(QX_EX_DONE) | S(QX_EX_CLOSED),
    [QX_EX_RESPONSE] = S(QX_EX_DONE) | S(QX_EX_ABORTED) | S(QX_EX_CLOSED),
    [QX_EX_DONE] = S(QX_EX_ABORTED) | S(QX_EX_CLOSED),
    [QX_EX_ABORTED] = S(QX_EX_CLOSED),
    [QX_EX_CLOSED] = 0,
};
#undef S

static void set_state(qx_exchange_t *ex, qx_exchange_state_t to)
{
    QRUX_ASSERT((legal_moves[ex->state] & (1u << to)) != 0);
    ex->state = to;
}

/* The front stream is gone: no op reaches it any more. */
static int gone(const qx_exchange_t *ex)
{
    return ex->state == QX_EX_CLOSED;
}

/* The response is produced (or failed): request body bytes are dropped. */
static int finished(const qx_exchange_t *ex)
{
    return ex->state >= QX_EX_DONE;
}

/* ---- small helpers ------------------------------------------------------ */

/* One timer per exchange; what it watches follows from the state: the
 * connect (QUEUED, CONNECTING), the response head (UPSTREAM), the body's
 * two ends (RESPONSE, DONE). */
static void timer_stop(qx_exchange_t *ex)
{
    uv_timer_stop(&ex->timer);
}

static void on_timer(uv_timer_t *t);

static void timer_arm(qx_exchange_t *ex, uint32_t secs)
{
    uint64_t ms = (uint64_t)secs * 1000;
    if (ex->deadline_ms && !finished(ex)) {
        /* A gRPC client's deadline (grpc-timeout) may come before any of
         * the route's timeouts: the timer wakes for it too. */
        uint64_t now = uv_now(&ex->w->loop);
        ms = QX_MIN(ms, ex->deadline_ms > now ? ex->deadline_ms - now : 0);
    }
    uv_timer_start(&ex->timer, on_timer, ms, 0);
}

/* After the response head, one timer watches both ends of the body: the
 * client must keep taking bytes (client_idle_timeout_secs) while the window
 * holds some or the upstream has finished, and the upstream must keep
 * sending (upstream_idle_timeout_secs) while the window has room. Progress
 * only stamps the time; the timer checks the stamps when it fires and
 * sleeps again for what is left, so no timer is re-armed per read. */
static void body_timer_start(qx_exchange_t *ex)
{
    const qx_limits_t *l = &ex->snap->cfg->limits;
    uint64_t now = uv_now(&ex->w->loop);
    ex->up_progress_ms = ex->cl_progress_ms = now;
    timer_arm(ex, /* capped by a gRPC deadline (timer_arm) */
              QX_MIN(l->client_idle_timeout_secs, l->upstream_idle_timeout_secs));
}

static const qx_endpoint_t *up_ep(const qx_exchange_t *ex)
{
    return ex->up < ex->snap->neps ? &ex->snap->eps[ex->up] : NULL;
}

static qx_metrics_up_row_t *up_row(qx_exchange_t *ex)
{
    const qx_endpoint_t *e = up_ep(ex);
    return qx_metrics_upstream(&ex->w->metrics, ex->up_name, e ? e->addrstr : "");
}

/* An upstream failure at warn, with the reason: an operator sees why a
 * request got its 502/504 at the default level. Rate-limited per endpoint
 * (a dead app under load fails every request), and per call site for an
 * endpoint without a health entry. */
__attribute__((format(printf, 2, 3))) static void up_warn(qx_exchange_t *ex, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    const qx_endpoint_t *e = up_ep(ex);
    const char *name = ex->up_name ? ex->up_name : "-";
    if (e && e->health && strcmp(e->name, e->addrstr) != 0)
        qx_log_rl(&e->health->rl, QX_LOG_WARN, "upstream %s (%s): %s", name, e->addrstr, msg);
    else if (e && e->health)
        qx_log_rl(&e->health->rl, QX_LOG_WARN, "upstream %s: %s", name, msg);
    else
        QX_WARN_RL("upstream %s: %s", name, msg);
}

/* Sets up a body window for a body of |len| bytes (-1: not known): the
 * exchange's own small buffer, one just large enough (a power of two), or
 * the full QX_STREAM_WINDOW. Returns 1 when the whole body fits (the
 * producer then never needs pausing), 0 when it may not, or
 * QX_ERR_NOMEM. */
static int ring_init(qx_ring_t *r, uint8_t **buf, uint8_t *inl, int64_t len)
{
    size_t cap = QX_STREAM_WINDOW;
    if (len >= 0 && len <= QX_STREAM_WINDOW) {
        cap = QX_EX_INLINE;
        while (cap < (uint64_t)len)
            cap *= 2;
    }
    if (cap == QX_EX_INLINE) {
        *buf = inl;
    } else if ((*buf = malloc(cap)) == NULL) {
        return QX_ERR_NOMEM;
    }
    r->data = *buf;
    r->cap = cap;
    return len >= 0 && (uint64_t)len <= cap;
}

static void ring_buf_free(uint8_t **buf, uint8_t *inl)
{
    if (*buf != inl)
        free(*buf);
    *buf = NULL;
}

static int ensure_resp_buf(qx_exchange_t *ex, int64_t len)
{
    if (ex->respbuf)
        return 0;
    int rv = ring_init(&ex->resp, &ex->respbuf, ex->resp_inline, len);
    if (rv < 0)
        return rv;
    ex->ups.resp_fits = rv;
    return 0;
}

/* The request body is no longer wanted: credit what is buffered so the
 * client is never stuck on flow control, and drop what still comes. */
static void discard_request_body(qx_exchange_t *ex)
{
    if (ex->req_discard)
        return;
    ex->req_discard = 1;
    if (gone(ex))
        return;
    /* No STOP_SENDING yet: browsers (Chromium) keep a response waiting
     * until their upload ends, so the rest of the body is read and dropped,
     * up to QX_DISCARD_MAX; past that the client is asked to stop. */
    size_t inflight = qx_ring_inflight(&ex->req); /* credited when their write completes */
    size_t buffered = (size_t)(ex->req.fill - ex->req.ack) - inflight;
    if (buffered > 0)
        ex->fops->consumed(ex, buffered);
    ex->req.sent = ex->req.fill;
    if (inflight == 0)
        ex->req.ack = ex->req.fill;
}

/* Answers the client ourselves with a short text body that says nothing
 * internal (|why|, when given, follows the status line). Only before any
 * response head went out. */
static void local_answer(qx_exchange_t *ex, int status, const char *why)
{
    char body[192];
    int n = snprintf(body, sizeof(body), "%d %s\n%s%s", status, qx_h1_reason(status),
                     why ? why : "", why ? "\n" : "");

    if (gone(ex))
        return;
    ex_release_upstream(ex);
    timer_stop(ex);
    set_state(ex, QX_EX_DONE);
    ex->status = status;
    if (!ex->req_fin)
        discard_request_body(ex);
    if (ensure_resp_buf(ex, n) != 0) {
        ex->fops->abort(ex);
        return;
    }
    int with_body = !ex->is_head;
    if (with_body) {
        qx_ring_write(&ex->resp, (const uint8_t *)body, (size_t)n);
        ex->resp_body = (uint64_t)n;
    }
    ex->resp_eof = 1;
    int cl = snprintf(ex->local_clen, sizeof(ex->local_clen), "%d", n);
    qx_hdr_t hdrs[] = {
        {"content-type", 12, "text/plain; charset=utf-8", 25},
        {"content-length", 14, ex->local_clen, (size_t)cl},
    };
    if (ex->fops->respond(ex, status, hdrs, QX_ARRAY_LEN(hdrs), with_body) != 0) {
        ex->fops->abort(ex);
        return;
    }
    body_timer_start(ex); /* a client that never takes our answer holds the stream too */
}

static void local_response(qx_exchange_t *ex, int status)
{
    local_answer(ex, status, NULL);
}

/* The gRPC deadline passed: the call ends with grpc-status 4
 * (DEADLINE_EXCEEDED), as a trailers-only response before a head, in
 * trailers after one; the upstream stream is cancelled. */
static void grpc_deadline(qx_exchange_t *ex)
{
    static const qx_hdr_t fields[] = {
        {"content-type", 12, "application/grpc", 16},
        {"grpc-status", 11, "4", 1},
        {"grpc-message", 12, "deadline exceeded (qrux)", 24},
    };
    if (gone(ex) || finished(ex))
        return;
    ex_release_upstream(ex);
    timer_stop(ex);
    ex->grpc_status = "4";
    ex->grpc_statuslen = 1;
    if (!ex->req_fin)
        discard_request_body(ex);
    ex->resp_eof = 1;
    if (ex->status == 0) {
        set_state(ex, QX_EX_DONE);
        ex->status = 200;
        if (ex->fops->respond(ex, 200, fields, QX_ARRAY_LEN(fields), 0) != 0)
            ex->fops->abort(ex);
        return;
    }
    set_state(ex, QX_EX_DONE);
    ex->resp_trailers = &fields[1];
    ex->nresp_trailers = 2;
    ex->fops->resume(ex);
    body_timer_start(ex); /* the client must still take what is left */
}

/* Something went wrong with the upstream or a limit: a status if nothing
 * was sent yet, else the stream is reset. */
static void fail(qx_exchange_t *ex, int status)
{
    if (ex->status == 0) {
        local_response(ex, status);
        return;
    }
    if (ex->state >= QX_EX_ABORTED)
        return; /* reset already, or the front is gone */
    ex_release_upstream(ex);
    timer_stop(ex);
    set_state(ex, QX_EX_ABORTED);
    ex->resp_eof = 1;
    if (!ex->req_fin)
        discard_request_body(ex);
    ex->fops->abort(ex);
}

/* The exchange is done with its upstream: leaves the pool's queue, and
 * ends the stream (a connection still in use is closed mid-message). */
static void ex_release_upstream(qx_exchange_t *ex)
{
    if (ex->wait_pool) {
        qx_pool_unwait(ex->wait_pool, &ex->wait);
        ex->wait_pool = NULL;
    }
    if (ex->ups.ops)
        ex->ups.ops->release(&ex->ups);
}

/* ---- life cycle --------------------------------------------------------- */

/* What the exchanges keep per worker, behind the context's ex_local slot:
 * made with the worker's first exchange, freed by qx_exchange_cache_free. */
struct ex_local {
    qx_exchange_t *cache; /* finished exchanges kept for reuse (QX_EX_CACHE) */
    unsigned ncache;
    uint8_t *up_scratch; /* QX_UP_READ bytes: upstream reads that cannot go straight to a window */
    struct sockaddr_storage last_client; /* the address client_ip was last formatted for */
    char last_client_ip[INET6_ADDRSTRLEN];
};

static void on_pump(qx_deferred_t *d);

qx_exchange_t *qx_exchange_new(qx_wctx_t *w, const qx_front_ops_t *fops, void *front,
                               int64_t stream_id, const struct sockaddr *client)
{
    if (w->ex_local == NULL && (w->ex_local = calloc(1, sizeof(ex_local_t))) == NULL)
        return NULL;
    ex_local_t *L = w->ex_local;
    qx_exchange_t *ex = L->cache;
    if (ex) {
        L->cache = ex->next;
        L->ncache--;
    } else {
        ex = malloc(sizeof(*ex));
        if (ex == NULL)
            return NULL;
        qx_arena_init(&ex->arena, QX_MAX_HEADER_BYTES);
        qx_up_stream_init(&ex->ups);
    }
    /* The header and field arrays and the inline buffers are written
     * before they are read: only the fields before them are cleared. */
    memset(ex, 0, offsetof(qx_exchange_t, timer));
    ex->arena.cap = QX_MAX_HEADER_BYTES;
    ex->hdrs = ex->hdrs_inline;
    ex->hdrcap = QX_EX_FIELDS;
    ex->ups.ops = NULL;
    ex->ups.sink = &up_sink;
    ex->ups.user = ex;
    ex->ups.req = &ex->req;
    ex->ups.resp = &ex->resp;
    ex->ups.scratch = &L->up_scratch;
    ex->ups.req_fin = 0;
    ex->ups.req_trailers = NULL;
    ex->ups.nreq_trailers = 0;
    ex->ups.resp_fits = 0;
    ex->ups.paused = 0;
    ex->w = w;
    ex->fops = fops;
    ex->front = front;
    ex->stream_id = stream_id;
    ex->snap = qx_snapshot_ref(w->snap);
    ex->start_ns = uv_hrtime();
    ex->req_cl = -1;
    ex->route = -1;
    qx_deferred_init(&ex->pump, on_pump);
    uv_timer_init(&w->loop, &ex->timer);
    client_ip(L, client, ex->client_ip);
    w->nexchanges++;
    return ex;
}

/* Formats the client address, once per address in a row: requests come in
 * runs from one connection. */
static void client_ip(ex_local_t *L, const struct sockaddr *client, char *out)
{
    socklen_t len =
        client->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (memcmp(&L->last_client, client, len) != 0 || L->last_client_ip[0] == '\0') {
        format_ip(client, L->last_client_ip);
        memcpy(&L->last_client, client, len);
    }
    memcpy(out, L->last_client_ip, INET6_ADDRSTRLEN);
}

static void format_ip(const struct sockaddr *client, char *client_ip)
{
    if (client->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)client;
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
            inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], client_ip, INET6_ADDRSTRLEN);
        else
            inet_ntop(AF_INET6, &s6->sin6_addr, client_ip, INET6_ADDRSTRLEN);
    } else {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)client)->sin_addr, client_ip,
                  INET6_ADDRSTRLEN);
    }
}

static void on_timer_closed(uv_handle_t *h)
{
    qx_exchange_t *ex = qx_container_of(h, qx_exchange_t, timer);
    qx_wctx_t *w = ex->w;
    qx_snapshot_unref(ex->snap);
    ring_buf_free(&ex->reqbuf, ex->req_inline);
    ring_buf_free(&ex->respbuf, ex->resp_inline);
    /* Kept for the next request (the timer's close callback is a safe
     * point: nothing up the stack still uses this exchange), unless the
     * worker is stopping or enough are kept already. */
    ex_local_t *L = w->ex_local;
    if (L->ncache < QX_EX_CACHE && w->state != QX_W_STOPPED) {
        qx_arena_reset(&ex->arena);
        qx_up_stream_trim(&ex->ups);
        ex->next = L->cache;
        L->cache = ex;
        L->ncache++;
    } else {
        exchange_free(ex);
    }
    w->nexchanges--;
    qx_wctx_maybe_done(w);
}

static void exchange_free(qx_exchange_t *ex)
{
    qx_arena_free(&ex->arena);
    qx_up_stream_free(&ex->ups);
    free(ex);
}

void qx_exchange_cache_free(qx_wctx_t *w)
{
    ex_local_t *L = w->ex_local;
    if (L == NULL)
        return;
    free(L->up_scratch);
    while (L->cache) {
        qx_exchange_t *ex = L->cache;
        L->cache = ex->next;
        exchange_free(ex);
    }
    free(L);
    w->ex_local = NULL;
}

void qx_exchange_front_answered(qx_exchange_t *ex, int status)
{
    ex->status = status;
    ex->resp_eof = 1;
    timer_stop(ex); /* the front closes the stream next */
    set_state(ex, QX_EX_DONE);
}

void qx_exchange_front_closed(qx_exchange_t *ex, int error)
{
    qx_wctx_t *w = ex->w;
    /* Complete when the whole response was handed to the front, even if
     * the client closed its connection before acknowledging the end. */
    int clean = ex->state == QX_EX_DONE && qx_ring_unsent(&ex->resp) == 0;
    /* A tunnel whose app side ended and went out whole is complete even if
     * the client's side never ended (HTTP/1.1 closes the connection then). */
    if (ex->tunnel && ex->state == QX_EX_RESPONSE && ex->resp_eof && qx_ring_unsent(&ex->resp) == 0)
        clean = 1;
    int reset = ex->state == QX_EX_ABORTED;     /* we reset the client stream */
    int status = ex->status ? ex->status : 499; /* client went away before an answer */

    set_state(ex, QX_EX_CLOSED);
    if (ex->dispatch_due)
        qx_cnt_add(&w->metrics.defences[QX_D_RESET_BEFORE_UPSTREAM], 1);
    pump_unqueue(ex);
    ex_release_upstream(ex); /* a response cut short: its connection is closed */
    timer_stop(ex);
    if (error && !clean && !reset)
        qx_cnt_add(&w->metrics.streams_reset_by_client, 1);

    double secs = (double)(uv_hrtime() - ex->start_ns) / 1e9;
    if (ex->ws_counted)
        qx_cnt_sub(&w->metrics.websocket_tunnels, 1);
    if (ex->ws_conn_counted)
        (*ex->conn_tunnels)--; /* the front ends its exchanges before freeing the count */
    if (ex->tunnel)
        QX_INFO("websocket closed proto=%s authority=%.*s path=%.*s upstream=%s bytes_in=%" PRIu64
                " bytes_out=%" PRIu64 " duration_ms=%.3f app_end=%d client_end=%d reset=%d",
                ex->fops->proto, (int)ex->authoritylen, ex->authority ? ex->authority : "",
                (int)ex->pathlen, ex->path ? ex->path : "", ex->up_name ? ex->up_name : "-",
                ex->req_body_in, ex->resp_body, secs * 1000.0, ex->resp_eof, ex->req_fin, reset);
    if (ex->method) {
        qx_metrics_request(&w->metrics, ex->fops->proto_idx, ex->method_idx, status, ex->up_name,
                           secs);
        qx_cnt_add(&w->metrics.bytes_in, ex->req_body_in);
        qx_cnt_add(&w->metrics.bytes_out, ex->resp_body);
        char ups[12] = "-", grpc[32] = "";
        if (ex->up_status > 0)
            snprintf(ups, sizeof(ups), "%d", ex->up_status);
        if (ex->grpc_status) {
            /* the app's value: digits only, or "-" (a space would start a field) */
            int digits = ex->grpc_statuslen > 0 && ex->grpc_statuslen <= 8;
            for (size_t i = 0; digits && i < ex->grpc_statuslen; i++)
                digits = ex->grpc_status[i] >= '0' && ex->grpc_status[i] <= '9';
            snprintf(grpc, sizeof(grpc), " grpc_status=%.*s", digits ? (int)ex->grpc_statuslen : 1,
                     digits ? ex->grpc_status : "-");
        }
        QX_INFO("access proto=%s method=%s authority=%.*s path=%.*s status=%d upstream=%s "
                "upstream_status=%s early_data=%d bytes_in=%" PRIu64 " bytes_out=%" PRIu64
                " duration_ms=%.3f trace_id=%s request_id=%s%s%s",
                ex->fops->proto, ex->method, (int)ex->authoritylen,
                ex->authority ? ex->authority : "", (int)ex->pathlen, ex->path ? ex->path : "",
                status, ex->up_name ? ex->up_name : "-", ups, ex->early ? 1 : 0, ex->req_body_in,
                ex->resp_body, secs * 1000.0, ex->trace ? ex->trace->trace_id : "-",
                ex->trace ? ex->trace->request_id : "-", grpc, clean ? "" : " incomplete=1");
    }
    uv_close((uv_handle_t *)&ex->timer, on_timer_closed);
}

/* ---- request head ------------------------------------------------------- */

int qx_exchange_header(qx_exchange_t *ex, const char *name, size_t namelen, const char *value,
                       size_t valuelen)
{
    char *v;
    if (ex->bad_request)
        return QX_ERR_LIMIT;
    if (namelen > 0 && name[0] == ':') {
        char **slot = NULL;
        size_t *len = NULL;
        if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
            slot = &ex->method;
            len = &ex->methodlen;
        } else if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
            slot = &ex->path;
            len = &ex->pathlen;
        } else if (namelen == 10 && memcmp(name, ":authority", 10) == 0) {
            slot = &ex->authority;
            len = &ex->authoritylen;
        } else if (namelen == 7 && memcmp(name, ":scheme", 7) == 0) {
            slot = &ex->scheme;
            len = &ex->schemelen;
        } else if (namelen == 9 && memcmp(name, ":protocol", 9) == 0) {
            slot = &ex->protocol; /* extended CONNECT (RFC 8441, RFC 9220) */
            len = &ex->protocollen;
        } else {
            return 0; /* :protocol etc.: the H3 layer already validated */
        }
        v = qx_arena_strndup(&ex->arena, value, valuelen);
        if (v == NULL)
            goto too_big;
        *slot = v;
        *len = valuelen;
        return 0;
    }
    if (ex->nhdrs == ex->hdrcap) {
        qx_hdr_t *more = grow_fields(ex, ex->hdrs, &ex->hdrcap, sizeof(qx_hdr_t), ex->nhdrs);
        if (more == NULL)
            goto too_big;
        ex->hdrs = more;
    }
    char *n = qx_arena_strndup(&ex->arena, name, namelen);
    v = qx_arena_strndup(&ex->arena, value, valuelen);
    if (n == NULL || v == NULL)
        goto too_big;
    ex->hdrs[ex->nhdrs++] = (qx_hdr_t){n, namelen, v, valuelen};
    return 0;

too_big:
    ex->bad_request = 431;
    return QX_ERR_LIMIT;
}

int qx_exchange_trailer(qx_exchange_t *ex, const char *name, size_t namelen, const char *value,
                        size_t valuelen)
{
    if (ex->req_trailer_cap == 0) {
        ex->req_trailers = qx_arena_alloc(&ex->arena, 8 * sizeof(qx_hdr_t));
        if (ex->req_trailers == NULL)
            return QX_ERR_LIMIT;
        ex->req_trailer_cap = 8;
    }
    if (ex->nreq_trailers == ex->req_trailer_cap) {
        qx_hdr_t *more = grow_fields(ex, ex->req_trailers, &ex->req_trailer_cap, sizeof(qx_hdr_t),
                                     ex->nreq_trailers);
        if (more == NULL)
            return QX_ERR_LIMIT;
        ex->req_trailers = more;
    }
    char *n = qx_arena_strndup(&ex->arena, name, namelen);
    char *v = qx_arena_strndup(&ex->arena, value, valuelen);
    if (n == NULL || v == NULL)
        return QX_ERR_LIMIT;
    ex->req_trailers[ex->nreq_trailers++] = (qx_hdr_t){n, namelen, v, valuelen};
    return 0;
}

/* A field array is full: a copy with twice the room, in the arena
 * (counted against the request's QX_MAX_HEADER_BYTES), up to
 * QX_MAX_HEADERS fields. Returns it, or NULL at the limit. */
static void *grow_fields(qx_exchange_t *ex, const void *arr, size_t *cap, size_t elem, size_t used)
{
    size_t ncap = *cap * 2 > QX_MAX_HEADERS ? QX_MAX_HEADERS : *cap * 2;
    if (ncap <= *cap)
        return NULL;
    void *p = qx_arena_alloc(&ex->arena, ncap * elem);
    if (p == NULL)
        return NULL;
    memcpy(p, arr, used * elem);
    *cap = ncap;
    return p;
}

/* A Content-Length value: 0 and the number, -1 when it is not a number,
 * -2 when it is one too large to hold (above INT64_MAX: 413, not 400). */
static int parse_content_length(const char *s, size_t len, int64_t *out)
{
    uint64_t v = 0;
    int big = 0;
    if (len == 0)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        if (v > ((uint64_t)INT64_MAX - 9) / 10)
            big = 1;
        else
            v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (big)
        return -2;
    *out = (int64_t)v;
    return 0;
}

/* A WebSocket handshake for |route|: answered here (and nonzero returned)
 * when the route turns WebSocket off (403) or the worker holds
 * max_websocket_tunnels already, or its connection
 * max_websocket_tunnels_per_connection (503). Otherwise it counts in the gauge,
 * and the rest of the client's stream (HTTP/1.1: of its connection) is the
 * tunnel's, whatever the front saw of a body. */
static int ws_admit(qx_exchange_t *ex, const qx_route_cfg_t *route)
{
    qx_metrics_t *m = &ex->w->metrics;
    if (route->no_websocket) {
        local_answer(ex, 403, "WebSocket is turned off for this route");
        return -1;
    }
    if (__atomic_load_n(&m->websocket_tunnels, __ATOMIC_RELAXED) >=
        ex->snap->cfg->limits.max_websocket_tunnels) {
        local_answer(ex, 503, "too many WebSocket tunnels");
        return -1;
    }
    if (ex->conn_tunnels != NULL &&
        *ex->conn_tunnels >= ex->snap->cfg->limits.max_websocket_tunnels_per_connection) {
        local_answer(ex, 503, "too many WebSocket tunnels on this connection");
        return -1;
    }
    if (ex->conn_tunnels != NULL) {
        (*ex->conn_tunnels)++;
        ex->ws_conn_counted = 1;
    }
    qx_cnt_add(&m->websocket_tunnels, 1);
    ex->ws_counted = 1;
    ex->has_body = 1;
    ex->req_fin = ex->ups.req_fin = 0;
    ex->req_cl = -1;
    return 0;
}

/* grpc-timeout (gRPC over HTTP/2): up to 8 digits and a unit. Returns
 * milliseconds (at least 1), or 0 when the value is not one. */
static uint64_t grpc_timeout_ms(const char *v, size_t len)
{
    uint64_t n = 0;
    if (len < 2 || len > 9)
        return 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return 0;
        n = n * 10 + (uint64_t)(v[i] - '0');
    }
    switch (v[len - 1]) {
    case 'H':
        n *= 3600000;
        break;
    case 'M':
        n *= 60000;
        break;
    case 'S':
        n *= 1000;
        break;
    case 'm':
        break;
    case 'u':
        n /= 1000;
        break;
    case 'n':
        n /= 1000000;
        break;
    default:
        return 0;
    }
    return n ? n : 1;
}

/* A gRPC request (content-type application/grpc*): needs trailers, so
 * HTTP/1.1 clients get a 415 that says so; its grpc-timeout becomes the
 * request's deadline (the route's upstream_request_timeout_secs still
 * caps it). Returns 0 to go on, -1 when answered. */
static int grpc_request(qx_exchange_t *ex)
{
    uint64_t ms = 0;
    for (size_t i = 0; i < ex->nhdrs; i++) {
        const qx_hdr_t *h = &ex->hdrs[i];
        if (h->namelen == 12 && strncasecmp(h->name, "content-type", 12) == 0 &&
            h->valuelen >= 16 && strncasecmp(h->value, "application/grpc", 16) == 0 &&
            (h->valuelen == 16 || h->value[16] == '+' || h->value[16] == ';'))
            ex->grpc = 1;
        else if (h->namelen == 12 && strncasecmp(h->name, "grpc-timeout", 12) == 0)
            ms = grpc_timeout_ms(h->value, h->valuelen);
    }
    if (!ex->grpc)
        return 0;
    if (ex->fops->proto_idx == QX_P_H1) {
        local_answer(ex, 415,
                     "gRPC needs HTTP/2 or HTTP/3 (trailers): this request came over HTTP/1.1");
        return -1;
    }
    if (ms > 0)
        ex->deadline_ms = uv_now(&ex->w->loop) + ms;
    return 0;
}

void qx_exchange_headers_done(qx_exchange_t *ex, const char *sni, int fin)
{
    const qx_config_t *cfg = ex->snap->cfg;

    ex->has_body = !fin;
    ex->req_fin = ex->ups.req_fin = fin;
    if (ex->method == NULL) {
        /* Nothing to log without a method; the front resets such streams. */
        ex->method = qx_arena_strndup(&ex->arena, "-", 1);
        ex->methodlen = 1;
        ex->method_idx = QX_M_OTHER;
        local_response(ex, 400);
        return;
    }
    ex->method_idx = qx_metrics_method_index(ex->method, ex->methodlen);
    ex->is_head = ex->methodlen == 4 && memcmp(ex->method, "HEAD", 4) == 0;
    if (ex->bad_request) {
        local_response(ex, ex->bad_request);
        return;
    }
    if (ex->protocol != NULL) {
        /* Extended CONNECT: the fronts accept :protocol only on CONNECT
         * (nghttp2, nghttp3 check it); WebSocket is the one qrux carries. */
        if (ex->method_idx != QX_M_CONNECT || ex->protocollen != 9 ||
            memcmp(ex->protocol, "websocket", 9) != 0) {
            local_answer(ex, 501, "only the websocket protocol is supported");
            return;
        }
        if (fin) {
            local_answer(ex, 400, "a WebSocket tunnel needs an open stream");
            return;
        }
        ex->ws = QX_WS_CONNECT;
    } else if (qx_ws_is_upgrade(ex->method, ex->methodlen, ex->hdrs, ex->nhdrs)) {
        ex->ws = QX_WS_UPGRADE;
    }
    if (ex->method_idx == QX_M_CONNECT && ex->ws == QX_WS_NONE) {
        local_response(ex, 501);
        return;
    }
    if (ex->path == NULL || ex->scheme == NULL) {
        local_response(ex, 400);
        return;
    }
    /* Host stands in for a missing :authority (RFC 9114 §4.3.1). */
    for (size_t i = 0; i < ex->nhdrs; i++) {
        const qx_hdr_t *h = &ex->hdrs[i];
        if (h->namelen == 4 && strncasecmp(h->name, "host", 4) == 0 && ex->authority == NULL) {
            ex->authority = (char *)h->value;
            ex->authoritylen = h->valuelen;
        } else if (h->namelen == 14 && strncasecmp(h->name, "content-length", 14) == 0) {
            int64_t cl;
            int rv = parse_content_length(h->value, h->valuelen, &cl);
            if (rv == -2) {
                qx_cnt_add(&ex->w->metrics.request_body_rejected, 1);
                local_response(ex, 413); /* larger than any limit can be */
                return;
            }
            if (rv != 0 || (ex->req_cl >= 0 && ex->req_cl != cl)) {
                local_response(ex, 400);
                return;
            }
            ex->req_cl = cl;
        }
    }
    if (ex->authority == NULL || ex->authoritylen == 0) {
        local_response(ex, 400);
        return;
    }
    if (grpc_request(ex) != 0)
        return;

    ex->route = qx_router_match(ex->snap->router, sni, sni ? strlen(sni) : 0, ex->authority,
                                ex->authoritylen);
    QX_DEBUG("route: sni=%s authority=%.*s -> %d", sni ? sni : "-", (int)ex->authoritylen,
             ex->authority, ex->route);
    if (ex->route < 0) {
        local_response(ex, 421);
        return;
    }
    const qx_route_cfg_t *route = &cfg->routes[ex->route];
    if (ex->ws != QX_WS_NONE && ws_admit(ex, route) != 0)
        return;
    if (ex->req_cl >= 0 && (uint64_t)ex->req_cl > cfg->limits.max_request_body_bytes) {
        qx_cnt_add(&ex->w->metrics.request_body_rejected, 1);
        local_response(ex, 413);
        return;
    }
    ex->up = qx_snapshot_pick(ex->snap, ex->route, SIZE_MAX, qx_health_now_ms());
    ex->attempts = 1;
    if (ex->up == SIZE_MAX) {
        /* Every upstream of the route is a name that does not resolve (yet). */
        ex->up_name = route->upstreams[0].name;
        char why[160] = "not resolved yet";
        if (ex->w->shared->dns)
            qx_dns_why(ex->w->shared->dns, route->upstreams[0].host, why, sizeof(why));
        up_warn(ex, "no address to connect to: the name %s", why);
        local_response(ex, 502);
        return;
    }
    ex->up_name = ex->snap->eps[ex->up].name;
    /* A body of known length gets its window now (at most its length); one
     * of unknown length when its first byte comes: a client that opens
     * streams and sends no body holds no QX_STREAM_WINDOW each. */
    if (ex->has_body && ex->req_cl >= 0 &&
        ring_init(&ex->req, &ex->reqbuf, ex->req_inline, ex->req_cl) < 0) {
        local_response(ex, 503);
        return;
    }
    ex->req_window_due = ex->has_body && ex->req_cl < 0;

    if (ex->early) {
        /* RFC 8470: early data can be replayed by an attacker, so in
         * `safe` only idempotent, bodiless requests go up before the
         * handshake completes (marked Early-Data: 1 so the app can refuse
         * with 425); others wait for the handshake. */
        int safe_method = ex->method_idx == QX_M_GET || ex->method_idx == QX_M_HEAD ||
                          ex->method_idx == QX_M_OPTIONS;
        if (cfg->early_data == QX_EARLY_SAFE && (!safe_method || ex->has_body)) {
            ex->held = 1;
            qx_cnt_add(&ex->w->metrics.early_data_held, 1);
            return;
        }
        qx_cnt_add(&ex->w->metrics.early_data_accepted, 1);
    }
    build_and_dispatch(ex);
}

void qx_exchange_release_held(qx_exchange_t *ex)
{
    if (!ex->held || ex->state != QX_EX_HEAD)
        return;
    ex->held = 0;
    ex->early = 0; /* the handshake is done: no longer early data */
    build_and_dispatch(ex);
}

/* The request's fields as they go upstream: the client's, with the trace
 * context and request id qrux keeps or starts (trace.h). The copy lives in
 * the arena; NULL when memory is short. */
static const qx_hdr_t *upstream_fields(qx_exchange_t *ex, size_t *n)
{
    size_t need = sizeof(qx_trace_t) + (ex->nhdrs + 2) * sizeof(qx_hdr_t) + 16;
    if (ex->arena.used + need > ex->arena.cap)
        ex->arena.cap = ex->arena.used + need; /* what qrux adds is not the client's fault */
    qx_trace_t *t = qx_arena_alloc(&ex->arena, sizeof(*t));
    qx_hdr_t *out = qx_arena_alloc(&ex->arena, (ex->nhdrs + 2) * sizeof(*out));
    if (t == NULL || out == NULL)
        return NULL;
    uint8_t rnd[QX_TRACE_RANDOM];
    if (gnutls_rnd(GNUTLS_RND_NONCE, rnd, sizeof(rnd)) != 0)
        return NULL;
    qx_trace_init(t, ex->hdrs, ex->nhdrs, rnd);
    ex->trace = t;
    *n = qx_trace_fields(t, ex->hdrs, ex->nhdrs, out);
    return out;
}

static void build_and_dispatch(qx_exchange_t *ex)
{
    size_t nfields = 0;
    const qx_hdr_t *fields = upstream_fields(ex, &nfields);
    if (fields == NULL) {
        local_response(ex, 503);
        return;
    }
    qx_up_req_t r = {
        .method = ex->method,
        .methodlen = ex->methodlen,
        .path = ex->path,
        .pathlen = ex->pathlen,
        .authority = ex->authority,
        .authoritylen = ex->authoritylen,
        .hdrs = fields,
        .nhdrs = nfields,
        .client_ip = ex->client_ip,
        .has_body = ex->has_body,
        .content_length = ex->req_cl,
        .early = ex->early,
        .is_head = ex->is_head,
    };
    if (ex->ws != QX_WS_NONE) {
        /* The app sees an HTTP/1.1 upgrade whatever the front was: GET,
         * no body framing (what follows its 101 is the tunnel's). */
        r.method = "GET";
        r.methodlen = 3;
        r.has_body = 0;
        r.content_length = -1;
        r.websocket = 1;
        if (ex->ws == QX_WS_CONNECT) {
            uint8_t rnd[16];
            if (gnutls_rnd(GNUTLS_RND_NONCE, rnd, sizeof(rnd)) != 0) {
                local_response(ex, 503);
                return;
            }
            qx_ws_key(rnd, ex->ws_key);
            r.ws_key = ex->ws_key;
        }
    }
    ex->ups.ops = qx_upstream_ops_for(up_ep(ex));
    ex->ups.resp_body_max = ex->snap->cfg->limits.max_upstream_response_body_bytes;
    int rv = ex->ups.ops->open(&ex->ups, &r, &ex->arena);
    if (rv < 0) {
        local_response(ex, rv == QX_ERR_PROTO ? 400 : 431);
        return;
    }
    /* The upstream is asked for once this turn's input has been handled,
     * not now: a client that opens a stream and resets it in the same
     * read (HTTP/2 Rapid Reset) then costs no upstream connection, as the
     * reset ends the exchange before the pump runs. */
    ex->dispatch_due = 1;
    pump_later(ex);
}

/* ---- upstream connection ------------------------------------------------ */

static void start_upstream(qx_exchange_t *ex)
{
    const qx_limits_t *lim = &ex->snap->cfg->limits;
    set_state(ex, QX_EX_UPSTREAM);
    timer_arm(ex, lim->upstream_request_timeout_secs);
    ex->ups.ops->start(&ex->ups);
}

/* The pool has room again: ask once more at the next pump. */
static void on_pool_ready(qx_pool_wait_t *wt)
{
    qx_exchange_t *ex = qx_container_of(wt, qx_exchange_t, wait);
    ex->wait_pool = NULL;
    ex->dispatch_due = 1;
    pump_later(ex);
}

static void dispatch(qx_exchange_t *ex, int fresh_only)
{
    qx_wctx_t *w = ex->w;
    qx_pool_t *pool;
    int reused = 0;
    int rv = QX_ERR_NOTFOUND;

    /* Pools follow the worker's snapshot; a request that began under an
     * older one finds its upstream's pool by address. */
    if (ex->snap == w->snap) {
        pool = w->pools[ex->up];
    } else {
        const qx_endpoint_t *up = &ex->snap->eps[ex->up];
        pool = qx_wctx_pool_find(w, (const struct sockaddr *)&up->addr, up->addrlen);
    }
    int was_queued = ex->state == QX_EX_QUEUED;
    if (pool)
        rv = ex->ups.ops->connect(&ex->ups, pool, fresh_only, &reused);
    if (rv == QX_ERR_LIMIT) {
        /* max_connections_per_upstream (or the fd budget): wait in the
         * pool's bounded queue, at most the connect timeout; past the
         * queue's length the answer is 503 at once. */
        ex->wait.ready = on_pool_ready;
        if (qx_pool_wait(pool, &ex->wait) != 0) {
            qx_cnt_add(&w->metrics.defences[QX_D_UPSTREAM_QUEUE_FULL], 1);
            local_response(ex, 503);
            return;
        }
        ex->wait_pool = pool;
        set_state(ex, QX_EX_QUEUED);
        qx_cnt_add(&w->metrics.defences[QX_D_UPSTREAM_QUEUED], 1);
        if (!was_queued) /* the connect timeout covers the whole wait */
            timer_arm(ex, ex->snap->cfg->limits.upstream_connect_timeout_secs);
        return;
    }
    if (rv != 0) {
        if (rv == QX_ERR_IO && connect_failed(ex, "connect did not start"))
            return;
        if (rv != QX_ERR_IO) {
            qx_cnt_add(&up_row(ex)->connect_errors, 1);
            up_warn(ex, "no connection: %s", rv == QX_ERR_NOMEM ? "out of memory" : "no pool");
        }
        fail(ex, 502);
        return;
    }
    ex->reused = reused;
    if (reused) {
        start_upstream(ex);
        return;
    }
    set_state(ex, QX_EX_CONNECTING);
    timer_arm(ex, ex->snap->cfg->limits.upstream_connect_timeout_secs);
}

/* A connect to the exchange's endpoint failed (refused, unreachable,
 * timed out): nothing was sent, so any request may go to another endpoint
 * of the route. Counts the failure (passive health may eject the
 * endpoint), logs it, and starts the next attempt while the route has an
 * endpoint not tried yet (at most QX_CONNECT_ATTEMPTS). Returns 1 when
 * another attempt started, 0 when the caller answers. */
static int connect_failed(qx_exchange_t *ex, const char *why)
{
    const qx_endpoint_t *e = up_ep(ex);
    uint64_t now = qx_health_now_ms(), ms = 0;
    qx_cnt_add(&up_row(ex)->connect_errors, 1);
    size_t n = ex->snap->ep_count[ex->route];
    int again = !gone(ex) && (size_t)ex->attempts < QX_MIN(n, (size_t)QX_CONNECT_ATTEMPTS);
    up_warn(ex, "connect failed: %s%s", why, again ? "; trying another address" : "");
    if (e && qx_health_fail(e->health, now, &ms))
        QX_WARN("upstream %s (%s): ejected for %llu s after %d connect failures in a row", e->name,
                e->addrstr, (unsigned long long)(ms / 1000), QX_HEALTH_FAILS);
    if (!again)
        return 0;
    ex_release_upstream(ex);
    timer_stop(ex);
    ex->attempts++;
    ex->up = qx_snapshot_pick(ex->snap, ex->route, ex->up, now);
    ex->up_name = ex->snap->eps[ex->up].name;
    dispatch(ex, 1);
    return 1;
}

static void up_connected(void *user, int status)
{
    qx_exchange_t *ex = user;
    if (status != 0) {
        if (!connect_failed(ex, uv_strerror(status)))
            fail(ex, 502);
        return;
    }
    const qx_endpoint_t *e = up_ep(ex);
    if (e && qx_health_ok(e->health))
        QX_WARN("upstream %s (%s): accepts connections again, back in rotation", e->name,
                e->addrstr);
    start_upstream(ex);
}

/* A reused keep-alive connection may have been closed by the backend just
 * as we picked it. Before any response byte and before any body byte went
 * out, an idempotent request can safely go again on a fresh connection,
 * once. */
static int idempotent(int method_idx)
{
    return method_idx == QX_M_GET || method_idx == QX_M_HEAD || method_idx == QX_M_OPTIONS ||
           method_idx == QX_M_TRACE || method_idx == QX_M_PUT || method_idx == QX_M_DELETE;
}

/* A broken stream goes again on a fresh connection, once, when the
 * connection was a reused keep-alive one (the backend may have closed it
 * just as we picked it) and the codec says it may: nothing reached the
 * app, or only the head and the request is idempotent. */
static int try_retry(qx_exchange_t *ex, int replay)
{
    if (!ex->reused || ex->retried || gone(ex) || replay == QX_UP_REPLAY_NONE)
        return 0;
    /* RFC 9110 §9.2.2: a request that is not idempotent is never sent
     * twice once its head may have reached the upstream: the app may have
     * acted on it before the connection died. */
    if (replay == QX_UP_REPLAY_IDEMPOTENT && !idempotent(ex->method_idx))
        return 0;
    QX_DEBUG("upstream %s: reused connection failed before the response; retrying once",
             ex->up_name);
    ex->retried = 1;
    ex->ups.ops->rewind(&ex->ups);
    timer_stop(ex);
    dispatch(ex, 1);
    return 1;
}

/* Body bytes arrive a datagram (or a TLS record) at a time; writing each
 * at once would be a write per ~1,200 bytes. They are written together
 * once the loop has handled this turn's input: the exchange's item on the
 * worker's deferred-work queue (defer.h), which runs after the poll. The
 * front's flush waits for the window this write frees, so the pump must
 * not wait for the next I/O event: an item queued while the queue runs
 * (from a front's flush on the same queue) runs in the same turn, and one
 * queued from anywhere else (another check handle, a timer, a write
 * callback) keeps the next poll from blocking. */
static void pump_later(qx_exchange_t *ex)
{
    qx_defer(&ex->w->defer, &ex->pump);
}

static void pump_unqueue(qx_exchange_t *ex)
{
    qx_defer_cancel(&ex->w->defer, &ex->pump);
}

static void on_pump(qx_deferred_t *d)
{
    qx_exchange_t *ex = qx_container_of(d, qx_exchange_t, pump);
    if (ex->dispatch_due) {
        ex->dispatch_due = 0;
        /* Not answered meanwhile (or still waiting for a connection). */
        if (ex->state == QX_EX_HEAD || ex->state == QX_EX_QUEUED)
            dispatch(ex, 0);
    } else if (ex->state == QX_EX_UPSTREAM || ex->state == QX_EX_RESPONSE) {
        ex->ups.ops->send(&ex->ups);
    }
}

/* ---- what the upstream stream reports ----------------------------------- */

static void up_progress(void *user)
{
    qx_exchange_t *ex = user;
    ex->up_progress_ms = uv_now(&ex->w->loop);
}

/* The app accepted the WebSocket handshake (the codec checked its 101):
 * the client gets the 101 with the app's fields and Upgrade/Connection of
 * its own (HTTP/1.1), or a 200 without Sec-WebSocket-Accept, which
 * answered qrux's key, not the client's (extended CONNECT). Both windows
 * then carry the tunnel's bytes; one idle clock watches them. Returns 0,
 * or -1 (the stream fails: 502). */
static int tunnel_open(qx_exchange_t *ex, const qx_hdr_t *hdrs, size_t n)
{
    qx_hdr_t *out = qx_arena_alloc(&ex->arena, (n + 2) * sizeof(*out));
    size_t k = 0;
    int status = ex->ws == QX_WS_UPGRADE ? 101 : 200;
    const qx_hdr_t *accept = NULL;
    size_t naccept = 0;
    if (ex->ws == QX_WS_NONE || out == NULL || ensure_resp_buf(ex, -1) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (ex->ws == QX_WS_CONNECT && hdrs[i].namelen == 20 &&
            memcmp(hdrs[i].name, "sec-websocket-accept", 20) == 0) {
            accept = &hdrs[i];
            naccept++;
            continue;
        }
        out[k++] = hdrs[i];
    }
    /* qrux made the key of an extended CONNECT: the app's 101 must answer
     * it, once (RFC 6455 §4.1), or the app did not agree to this
     * handshake. */
    if (ex->ws == QX_WS_CONNECT &&
        (naccept != 1 || !qx_ws_accept_ok(ex->ws_key, accept->value, accept->valuelen))) {
        up_warn(ex, "websocket: %s",
                naccept == 0  ? "the app's 101 has no Sec-WebSocket-Accept"
                : naccept > 1 ? "the app's 101 has more than one Sec-WebSocket-Accept"
                              : "the app's Sec-WebSocket-Accept does not answer "
                                "qrux's key");
        return -1;
    }
    if (ex->ws == QX_WS_UPGRADE) {
        out[k++] = (qx_hdr_t){"upgrade", 7, "websocket", 9};
        out[k++] = (qx_hdr_t){"connection", 10, "Upgrade", 7};
    }
    ex->tunnel = 1;
    ex->status = status;
    if (gone(ex) || ex->fops->respond(ex, status, out, k, 1) != 0)
        return -1;
    qx_cnt_add(&ex->w->metrics.websocket_opened, 1);
    ex->tunnel_ms = uv_now(&ex->w->loop);
    timer_arm(ex, ex->snap->cfg->limits.websocket_idle_timeout_secs);
    return 0;
}

static int up_head(void *user, int status, const qx_hdr_t *hdrs, size_t n, int has_body,
                   int64_t content_length)
{
    qx_exchange_t *ex = user;
    ex->up_status = status;
    set_state(ex, QX_EX_RESPONSE);
    note_grpc_status(ex, hdrs, n);
    timer_stop(ex);
    if (status == 101)
        return tunnel_open(ex, hdrs, n);
    if (ex->ws == QX_WS_CONNECT && status >= 200 && status < 300) {
        /* A 2xx to an extended CONNECT opens the tunnel (RFC 8441 §5):
         * from an app that did not switch protocols it would be a lie. */
        return -1;
    }
    if (has_body && ensure_resp_buf(ex, content_length) != 0)
        return -1;
    ex->status = status;
    if (gone(ex))
        return -1;
    if (ex->fops->respond(ex, status, hdrs, n, has_body) != 0)
        return -1;
    if (!has_body)
        ex->resp_eof = 1;
    body_timer_start(ex);
    return 0;
}

static void up_body(void *user, size_t n)
{
    qx_exchange_t *ex = user;
    if (ex->resp.fill - n == ex->resp.ack) /* the client's clock starts when it has something */
        ex->cl_progress_ms = uv_now(&ex->w->loop);
    ex->resp_body += n;
    if (ex->tunnel) {
        ex->tunnel_ms = uv_now(&ex->w->loop);
        qx_cnt_add(&ex->w->metrics.websocket_bytes_out, n);
    }
    if (!gone(ex))
        ex->fops->resume(ex);
}

/* The response's grpc-status, for the access log. */
static void note_grpc_status(qx_exchange_t *ex, const qx_hdr_t *hdrs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (hdrs[i].namelen == 11 && memcmp(hdrs[i].name, "grpc-status", 11) == 0) {
            ex->grpc_status = hdrs[i].value;
            ex->grpc_statuslen = hdrs[i].valuelen;
        }
    }
}

/* The trailers are copied into the request's arena (names lowercased,
 * fields a trailer section may not carry left out): the front sends them
 * after the last body byte. */
static void up_end(void *user, const qx_hdr_t *trailers, size_t ntrailers)
{
    qx_exchange_t *ex = user;
    if (ntrailers > 0) {
        ex->resp_trailers =
            qx_up_trailers_copy(&ex->arena, trailers, ntrailers, &ex->nresp_trailers);
        note_grpc_status(ex, ex->resp_trailers, ex->nresp_trailers);
    }
    ex->resp_eof = 1;
    if (ex->tunnel && !ex->req_fin) {
        /* The app ended its side of the tunnel; the client's may still
         * send (a WebSocket close reply), until its own end. */
        if (!gone(ex))
            ex->fops->resume(ex);
        return;
    }
    set_state(ex, QX_EX_DONE);
    if (!gone(ex))
        ex->fops->resume(ex);
    if (!ex->req_fin)
        discard_request_body(ex); /* answered before the body finished */
}

static void up_consumed(void *user, size_t n)
{
    qx_exchange_t *ex = user;
    /* upstream_request_timeout_secs is "no response within": while the body
     * is still going up and moving, the clock starts again, so a slow but
     * steady upload is not a 504; a stalled one still is. */
    if (n > 0 && ex->state == QX_EX_UPSTREAM)
        timer_arm(ex, ex->snap->cfg->limits.upstream_request_timeout_secs);
    if (ex->tunnel && n > 0) {
        ex->tunnel_ms = uv_now(&ex->w->loop);
        qx_cnt_add(&ex->w->metrics.websocket_bytes_in, n);
    }
    if (!gone(ex) && n > 0)
        ex->fops->consumed(ex, n);
}

static void up_error(void *user, int err, int replay, const char *why)
{
    qx_exchange_t *ex = user;
    switch (err) {
    case QX_UP_E_BROKEN:
        if (try_retry(ex, replay))
            return;
        up_warn(ex, "%s", why);
        if (ex->state == QX_EX_UPSTREAM) /* no response head came */
            qx_cnt_add(&up_row(ex)->protocol_errors, 1);
        break;
    case QX_UP_E_PROTO:
        if (ex->state == QX_EX_ABORTED)
            return;
        up_warn(ex, "bad response: %s", why);
        qx_cnt_add(&up_row(ex)->protocol_errors, 1);
        break;
    case QX_UP_E_TOO_BIG:
        QX_WARN_RL("upstream %s: response body over max_upstream_response_body_bytes (%" PRIu64
                   "); stream reset",
                   ex->up_name, ex->ups.resp_body_max);
        qx_cnt_add(&up_row(ex)->body_over_limit, 1);
        break;
    default:
        QX_ERROR_RL("%s on stream %" PRId64, why, ex->stream_id);
        break;
    }
    fail(ex, 502);
}

static const qx_up_sink_t up_sink = {
    .connected = up_connected,
    .progress = up_progress,
    .head = up_head,
    .body = up_body,
    .end = up_end,
    .consumed = up_consumed,
    .error = up_error,
};

/* The body timer fired: which end stalled, if any (see body_timer_start).
 * Returns QX_D_CLIENT_STALLED or QX_D_UPSTREAM_STALLED, or -1 after
 * sleeping again for the time that is left. */
static int body_stalled(qx_exchange_t *ex)
{
    const qx_limits_t *l = &ex->snap->cfg->limits;
    uint64_t now = uv_now(&ex->w->loop);
    uint64_t cl = (uint64_t)l->client_idle_timeout_secs * 1000;
    uint64_t up = (uint64_t)l->upstream_idle_timeout_secs * 1000;
    uint64_t next = QX_MIN(cl, up);
    int client_owes = ex->resp_eof || ex->resp.fill != ex->resp.ack;
    int upstream_owes = !ex->resp_eof && !ex->ups.paused;

    if (client_owes) {
        if (now - ex->cl_progress_ms >= cl)
            return QX_D_CLIENT_STALLED;
        next = QX_MIN(next, ex->cl_progress_ms + cl - now);
    }
    if (upstream_owes) {
        if (now - ex->up_progress_ms >= up)
            return QX_D_UPSTREAM_STALLED;
        next = QX_MIN(next, ex->up_progress_ms + up - now);
    }
    if (ex->deadline_ms && !finished(ex)) {
        if (now >= ex->deadline_ms)
            return -2;
        next = QX_MIN(next, ex->deadline_ms - now);
    }
    uv_timer_start(&ex->timer, on_timer, next, 0);
    return -1;
}

static void on_timer(uv_timer_t *t)
{
    qx_exchange_t *ex = qx_container_of(t, qx_exchange_t, timer);
    const qx_limits_t *l = &ex->snap->cfg->limits;
    QRUX_ASSERT(ex->state >= QX_EX_QUEUED && ex->state <= QX_EX_DONE);
    if (ex->tunnel) {
        /* The tunnel's idle clock: progress only stamps tunnel_ms. */
        uint64_t idle = (uint64_t)l->websocket_idle_timeout_secs * 1000;
        uint64_t now = uv_now(&ex->w->loop);
        if (now - ex->tunnel_ms < idle) {
            uv_timer_start(&ex->timer, on_timer, ex->tunnel_ms + idle - now, 0);
            return;
        }
        QX_DEBUG("stream %" PRId64 ": WebSocket tunnel idle for %u s; closed", ex->stream_id,
                 (unsigned)l->websocket_idle_timeout_secs);
        fail(ex, 504);
        return;
    }
    if (ex->deadline_ms && !finished(ex) && uv_now(&ex->w->loop) >= ex->deadline_ms) {
        QX_DEBUG("stream %" PRId64 ": gRPC deadline passed", ex->stream_id);
        grpc_deadline(ex);
        return;
    }
    if (ex->state == QX_EX_RESPONSE || ex->state == QX_EX_DONE) {
        int who = body_stalled(ex);
        if (who == -2) {
            grpc_deadline(ex);
            return;
        }
        if (who < 0)
            return;
        qx_cnt_add(&ex->w->metrics.defences[who], 1);
        if (who == QX_D_UPSTREAM_STALLED && ex->up_name)
            qx_cnt_add(&up_row(ex)->timeouts, 1);
        QX_DEBUG("stream %" PRId64 ": %s stalled the response; reset", ex->stream_id,
                 who == QX_D_CLIENT_STALLED ? "the client" : "the upstream");
        if (who == QX_D_UPSTREAM_STALLED && ex->up_name)
            up_warn(ex, "sent no response byte for %u s; stream reset",
                    (unsigned)ex->snap->cfg->limits.upstream_idle_timeout_secs);
        fail(ex, 504);
        return;
    }
    if (ex->state == QX_EX_CONNECTING) {
        /* The connect itself timed out (not a wait for a pooled slot). */
        char why[64];
        snprintf(why, sizeof(why), "timed out after %u s",
                 (unsigned)l->upstream_connect_timeout_secs);
        qx_cnt_add(&up_row(ex)->timeouts, 1);
        if (connect_failed(ex, why))
            return;
        fail(ex, 504);
        return;
    }
    qx_cnt_add(&up_row(ex)->timeouts, 1);
    int queued = ex->state == QX_EX_QUEUED; /* else UPSTREAM: no response head in time */
    up_warn(
        ex, "%s timeout after %u s", queued ? "connect" : "request",
        (unsigned)(queued ? l->upstream_connect_timeout_secs : l->upstream_request_timeout_secs));
    fail(ex, 504);
}

/* ---- request body from the front ---------------------------------------- */

void qx_exchange_body(qx_exchange_t *ex, const uint8_t *data, size_t len)
{
    uint64_t max = ex->snap->cfg->limits.max_request_body_bytes;
    if (ex->req_window_due && len > 0 && !ex->req_discard && !finished(ex)) {
        ex->req_window_due = 0;
        if (ring_init(&ex->req, &ex->reqbuf, ex->req_inline, -1) < 0) {
            fail(ex, 503);
            return;
        }
    }
    if (ex->req_discard || finished(ex) || ex->reqbuf == NULL) {
        /* Dropped bytes are not the request's: bytes_in counts what was
         * accepted for the upstream. */
        ex->req_discarded += len;
        if (!gone(ex)) {
            ex->fops->consumed(ex, len);
            if (ex->req_discarded > QX_DISCARD_MAX && !ex->req_stopped) {
                ex->req_stopped = 1;
                ex->fops->stop_reading(ex);
            }
        }
        return;
    }
    ex->req_body_in += len;
    if (ex->req_body_in > max && ex->ws == QX_WS_NONE) { /* a tunnel is no body */
        qx_cnt_add(&ex->w->metrics.request_body_rejected, 1);
        if (!gone(ex))
            ex->fops->consumed(ex, len);
        if (ex->status == 0) {
            local_response(ex, 413);
        } else {
            fail(ex, 413);
        }
        return;
    }
    if (ex->req_cl >= 0 && ex->req_body_in > (uint64_t)ex->req_cl) {
        fail(ex, 400); /* more body than its content-length */
        return;
    }
    if (len > qx_ring_free(&ex->req)) {
        /* The front granted more than the window: a front bug, not the
         * client's. Fail safe rather than overflow. */
        QX_ERROR_RL("request window overflow on stream %" PRId64, ex->stream_id);
        fail(ex, 502);
        return;
    }
    qx_ring_write(&ex->req, data, len);
    pump_later(ex);
}

void qx_exchange_body_end(qx_exchange_t *ex)
{
    if (ex->req_fin)
        return;
    if (ex->nreq_trailers > 0) /* filtered once, before the codec sees the end */
        ex->ups.req_trailers = qx_up_trailers_copy(&ex->arena, ex->req_trailers, ex->nreq_trailers,
                                                   &ex->ups.nreq_trailers);
    ex->req_fin = ex->ups.req_fin = 1;
    if (ex->tunnel && ex->resp_eof && ex->state == QX_EX_RESPONSE)
        set_state(ex, QX_EX_DONE); /* the app had ended its side of the tunnel already */
    if (ex->req_cl >= 0 && ex->req_body_in != (uint64_t)ex->req_cl && !ex->req_discard &&
        !finished(ex)) {
        fail(ex, 400); /* content-length disagrees with the body */
        return;
    }
    pump_later(ex);
}

void qx_exchange_resp_acked(qx_exchange_t *ex, size_t n)
{
    qx_ring_mark_acked(&ex->resp, n);
    if (n > 0)
        ex->cl_progress_ms = uv_now(&ex->w->loop);
    if (n > 0 && ex->tunnel)
        ex->tunnel_ms = ex->cl_progress_ms;
    if (ex->ups.ops && ex->ups.ops->window(&ex->ups))
        ex->up_progress_ms = uv_now(&ex->w->loop); /* its clock ran not while paused */
}
