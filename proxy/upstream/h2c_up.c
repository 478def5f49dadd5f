/* h2c_up.c - the cleartext HTTP/2 upstream codec (see h2c_up.h and
 * upstream.h). */
#include "upstream/h2c_up.h"

#include "base/log.h"
#include "base/qx.h"
#include "upstream/h1.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define H2C_WINDOW (64 * 1024) /* a stream's receive window: the exchange's response window */
#define H2C_CONN_WINDOW (16 * 1024 * 1024) /* the session's: every stream's window at once */
#define H2C_MAX_STREAMS 100                /* streams per session, whatever the app allows */
#define H2C_WBUF (64 * 1024)               /* output gathered into one write, about */
#define H2C_TRAILERS 32                    /* response trailer fields kept, at most */

typedef struct h2c_sess h2c_sess_t;

/* The codec's part of a stream, in qx_up_stream_t.priv. */
typedef struct h2c_up {
    h2c_sess_t *s; /* NULL: not attached to a session */
    qx_up_stream_t *prev, *next;
    int32_t id; /* 0 until submitted */
    int status;
    nghttp2_nv *nva; /* the request head, in the request's arena (kept for a replay) */
    size_t nnv;
    int has_body;
    int is_head;
    int waiting;   /* attached to a session still connecting */
    int head_done; /* the final response head was reported */
    int resp_any;  /* a frame for the stream came back */
    int body_sent; /* request body bytes went */
    int closed;    /* nghttp2 closed the stream (no RST_STREAM from us) */
    int ended;     /* the response ended or failed: no sink call follows */
    uint64_t resp_body;
    uint64_t given; /* response bytes given back to the app's window (up to resp->ack) */
    qx_hdr_t *tr;   /* trailer fields, in the arena */
    size_t ntr;
} h2c_up_t;

_Static_assert(sizeof(h2c_up_t) <= QX_UP_PRIV, "h2c_up_t must fit qx_up_stream_t.priv");

struct h2c_sess {
    qx_upconn_t *uc;
    qx_pool_t *pool;
    h2c_sess_t *prev, *next; /* the pool's sessions (pool->h2c) */
    int linked;
    nghttp2_session *ng;
    qx_up_stream_t *streams;
    unsigned nstreams;
    int connected;
    int settled; /* the app's SETTINGS came */
    int goaway;  /* the app sent GOAWAY (or we failed): no new stream */
    int dead;    /* the connection is gone: freed once out of nghttp2 */
    int in_recv;
    int writing;
    uint64_t idle_since_ms; /* the loop's time when the last stream left (or it connected) */
    uint8_t **scratch;      /* the worker's read buffer */
    uint8_t *wbuf;
    size_t wcap;
};

static const qx_upconn_cb_t conn_cb;
static nghttp2_session_callbacks *callbacks;
static void session_send(h2c_sess_t *s);
static void session_fail(h2c_sess_t *s, const char *why);
static void session_maybe_close(h2c_sess_t *s);
static void pool_sweep(qx_pool_t *p, uint64_t now_ms);

static h2c_up_t *h2(qx_up_stream_t *st)
{
    return (h2c_up_t *)(void *)st->priv.bytes;
}

/* ---- sessions ----------------------------------------------------------- */

static void pool_unlink(h2c_sess_t *s)
{
    if (!s->linked)
        return;
    s->linked = 0;
    if (s->uc != NULL && s->uc->pool == NULL)
        return; /* the pool is gone (qx_pool_del detached the connection) */
    if (s->prev)
        s->prev->next = s->next;
    else
        s->pool->h2c = s->next;
    if (s->next)
        s->next->prev = s->prev;
}

/* Streams the session takes: the app's SETTINGS_MAX_CONCURRENT_STREAMS;
 * before its SETTINGS come, what the app said last on this pool (a new
 * connection in a burst would otherwise take streams the app then holds
 * back; nghttp2 queues those, they do not fail). */
static unsigned session_limit(h2c_sess_t *s)
{
    uint32_t peer =
        nghttp2_session_get_remote_settings(s->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    if (!s->settled && s->linked && s->pool->h2c_streams > 0)
        peer = s->pool->h2c_streams;
    return QX_MIN(peer, (uint32_t)H2C_MAX_STREAMS);
}

static void stream_link(h2c_sess_t *s, qx_up_stream_t *st)
{
    h2c_up_t *u = h2(st);
    u->s = s;
    u->prev = NULL;
    u->next = s->streams;
    if (s->streams)
        h2(s->streams)->prev = st;
    s->streams = st;
    s->nstreams++;
    if (*st->scratch == NULL)
        *st->scratch = malloc(QX_UP_READ); /* NULL: read_buf uses the connection's own */
    s->scratch = st->scratch;
}

/* Takes the stream off its session: an open stream is cancelled, and the
 * response bytes it holds that the app's window still counts are given
 * back to the connection's window. A slot frees: a request waiting in the
 * pool's queue may come. */
static void stream_detach(qx_up_stream_t *st)
{
    h2c_up_t *u = h2(st);
    h2c_sess_t *s = u->s;
    if (s == NULL)
        return;
    if (u->id > 0 && s->ng) {
        if (!u->closed) {
            nghttp2_session_set_stream_user_data(s->ng, u->id, NULL);
            nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, u->id, NGHTTP2_CANCEL);
        }
        uint64_t held = st->resp->fill - u->given;
        if (u->given < st->resp->fill && held > 0)
            nghttp2_session_consume_connection(s->ng, (size_t)held);
        u->given = st->resp->fill;
    }
    if (u->prev)
        h2(u->prev)->next = u->next;
    else
        s->streams = u->next;
    if (u->next)
        h2(u->next)->prev = u->prev;
    s->nstreams--;
    if (s->nstreams == 0 && s->uc)
        s->idle_since_ms = uv_now(s->uc->tcp.loop);
    u->s = NULL;
    u->waiting = 0;
    if (s->linked && s->uc->pool)
        qx_pool_kick(s->pool);
}

static void session_destroy(h2c_sess_t *s)
{
    pool_unlink(s);
    while (s->streams)
        stream_detach(s->streams);
    if (s->uc)
        qx_pool_release(s->uc, 0);
    nghttp2_session_del(s->ng);
    free(s->wbuf);
    free(s);
}

static int session_new(h2c_sess_t **out, qx_pool_t *pool)
{
    h2c_sess_t *s = calloc(1, sizeof(*s));
    nghttp2_option *opt = NULL;
    if (s == NULL)
        return QX_ERR_NOMEM;
    if (callbacks == NULL) {
        free(s);
        return QX_ERR_NOMEM;
    }
    s->pool = pool;
    if (nghttp2_option_new(&opt) != 0) {
        free(s);
        return QX_ERR_NOMEM;
    }
    /* Windows open as the front takes bytes (window()), not as they come. */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    int rv = nghttp2_session_client_new2(&s->ng, callbacks, s, opt);
    nghttp2_option_del(opt);
    if (rv != 0) {
        free(s);
        return QX_ERR_NOMEM;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2C_WINDOW},
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 0}, /* the app opens none */
    };
    if (nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, QX_ARRAY_LEN(iv)) != 0 ||
        nghttp2_session_set_local_window_size(s->ng, NGHTTP2_FLAG_NONE, 0, H2C_CONN_WINDOW) != 0) {
        nghttp2_session_del(s->ng);
        free(s);
        return QX_ERR_NOMEM;
    }
    if (pool->conn_streams == 0)
        pool->conn_streams = H2C_MAX_STREAMS;
    pool->shared_sweep = pool_sweep;
    s->next = pool->h2c;
    if (s->next)
        s->next->prev = s;
    pool->h2c = s;
    s->linked = 1;
    *out = s;
    return 0;
}

/* Writes what nghttp2 has queued, one write in flight: frames are gathered
 * into the session's buffer (about H2C_WBUF) and written together. */
static void session_send(h2c_sess_t *s)
{
    while (!s->writing && !s->dead && s->connected && !s->in_recv) {
        size_t len = 0;
        for (;;) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(s->ng, &data);
            if (n < 0) {
                session_fail(s, nghttp2_strerror((int)n));
                return;
            }
            if (n == 0)
                break;
            if (len + (size_t)n > s->wcap) {
                size_t cap = QX_MAX(s->wcap * 2, len + (size_t)n + H2C_WBUF / 4);
                uint8_t *p = realloc(s->wbuf, cap);
                if (p == NULL) {
                    session_fail(s, "out of memory");
                    return;
                }
                s->wbuf = p;
                s->wcap = cap;
            }
            memcpy(s->wbuf + len, data, (size_t)n);
            len += (size_t)n;
            if (len >= H2C_WBUF)
                break;
        }
        if (len == 0)
            break;
        uv_buf_t b = uv_buf_init((char *)s->wbuf, (unsigned)len);
        int rv = qx_upconn_write(s->uc, &b, 1);
        if (rv < 0) {
            session_fail(s, "write failed");
            return;
        }
        if (rv == 0) {
            s->writing = 1;
            return;
        }
    }
    session_maybe_close(s);
}

/* How safely a stream cut by a broken connection may go again. */
static int replay(const h2c_up_t *u)
{
    if (u->resp_any || u->body_sent)
        return QX_UP_REPLAY_NONE;
    return u->id > 0 ? QX_UP_REPLAY_IDEMPOTENT : QX_UP_REPLAY_ANY;
}

/* The connection broke: every stream on it fails (each says how safely it
 * may go again), and the session goes once nghttp2 is no longer on the
 * stack. */
static void session_fail(h2c_sess_t *s, const char *why)
{
    if (s->dead)
        return;
    s->dead = 1;
    s->goaway = 1;
    pool_unlink(s);
    while (s->streams) {
        qx_up_stream_t *st = s->streams;
        h2c_up_t *u = h2(st);
        int rp = replay(u);
        u->closed = 1; /* no RST_STREAM on a dead connection */
        stream_detach(st);
        if (u->ended)
            continue;
        u->ended = 1;
        st->sink->error(st->user, QX_UP_E_BROKEN, rp, why);
    }
    if (!s->in_recv)
        session_destroy(s);
}

/* A session with no stream goes when the app is going away, when nothing
 * more can be read or written, or when its pool has another idle one. */
static void session_maybe_close(h2c_sess_t *s)
{
    if (s->dead || s->in_recv || s->writing || s->nstreams > 0 || !s->connected)
        return;
    /* A pool a new snapshot dropped (or deleted) leaves its sessions to
     * close as their last stream ends. */
    int close = s->goaway || !nghttp2_session_want_read(s->ng) || s->uc->pool == NULL ||
                s->uc->pool->retired;
    if (!close && s->linked && s->uc->pool) {
        for (h2c_sess_t *o = s->pool->h2c; o; o = o->next) {
            if (o != s && o->nstreams == 0 && !o->goaway && o->connected)
                close = 1;
        }
    }
    if (close) {
        s->dead = 1;
        session_destroy(s);
    }
}

/* Ends a session that carries no stream: GOAWAY(NO_ERROR) goes out, then
 * the connection closes (session_send closes it once the frame is
 * written). No stream is linked to it meanwhile. */
static void session_goaway(h2c_sess_t *s)
{
    s->goaway = 1;
    pool_unlink(s);
    nghttp2_session_terminate_session(s->ng, NGHTTP2_NO_ERROR);
    session_send(s);
}

/* The pool's sweep (qx_pool_sweep, qx_pool_retire, qx_pool_del): a session
 * that carried no stream for the pool's idle timeout goes, as an idle
 * HTTP/1.1 connection would; in a retired pool every one without a stream
 * goes now. Each close may unlink others' neighbours (a waiter kicked),
 * so the walk starts over after each. */
static void pool_sweep(qx_pool_t *p, uint64_t now_ms)
{
    for (;;) {
        h2c_sess_t *s = p->h2c;
        while (s && (s->dead || s->goaway || s->in_recv || !s->connected || s->nstreams > 0 ||
                     (!p->retired && now_ms - s->idle_since_ms < p->idle_timeout_ms)))
            s = s->next;
        if (s == NULL)
            return;
        QX_DEBUG("h2c: session without a stream closed (%s)",
                 p->retired ? "pool retired" : "idle timeout");
        session_goaway(s);
    }
}

/* ---- the ops ------------------------------------------------------------ */

static int name_is(const qx_hdr_t *h, const char *lit)
{
    size_t n = strlen(lit);
    return h->namelen == n && strncasecmp(h->name, lit, n) == 0;
}

static int add_nv(nghttp2_nv *nva, size_t *k, qx_arena_t *a, const char *name, size_t namelen,
                  const char *value, size_t valuelen, int lower)
{
    char *n = qx_arena_strndup(a, name, namelen);
    if (n == NULL)
        return QX_ERR_LIMIT;
    if (lower) {
        for (size_t i = 0; i < namelen; i++)
            n[i] = (char)((n[i] >= 'A' && n[i] <= 'Z') ? n[i] + 32 : n[i]);
    }
    nva[(*k)++] =
        (nghttp2_nv){(uint8_t *)n, (uint8_t *)value, namelen, valuelen, NGHTTP2_NV_FLAG_NONE};
    return 0;
}

/* The request head as HTTP/2 fields: the pseudo-fields, the client's
 * fields less the connection-specific ones (RFC 9113 §8.2.2; `te:
 * trailers` stays, gRPC needs it), X-Forwarded-For joined with our peer,
 * X-Forwarded-Proto and Early-Data as HTTP/1.1 requests carry them. */
static int h2c_open(qx_up_stream_t *st, const qx_up_req_t *req, qx_arena_t *arena)
{
    h2c_up_t *u = h2(st);
    memset(u, 0, sizeof(*u));
    st->paused = 0;
    qx_up_head_reset(st, arena);
    u->is_head = req->is_head;
    u->has_body = req->has_body;
    size_t max = req->nhdrs + 8;
    if (arena->used + max * (sizeof(nghttp2_nv) + 64) + 1024 > arena->cap)
        arena->cap =
            arena->used + max * (sizeof(nghttp2_nv) + 64) + 1024; /* ours, not the client's */
    nghttp2_nv *nva = qx_arena_alloc(arena, max * sizeof(*nva));
    if (nva == NULL)
        return QX_ERR_NOMEM;
    size_t k = 0;
    int rv = add_nv(nva, &k, arena, ":method", 7, req->method, req->methodlen, 0);
    if (rv == 0)
        rv = add_nv(nva, &k, arena, ":scheme", 7, "http", 4, 0);
    if (rv == 0 && req->authority)
        rv = add_nv(nva, &k, arena, ":authority", 10, req->authority, req->authoritylen, 0);
    if (rv == 0)
        rv = add_nv(nva, &k, arena, ":path", 5, req->path, req->pathlen, 0);
    size_t xfflen = 0;
    for (size_t i = 0; rv == 0 && i < req->nhdrs; i++) {
        const qx_hdr_t *h = &req->hdrs[i];
        if (h->namelen == 0 || h->name[0] == ':')
            continue;
        if (name_is(h, "te")) {
            if (h->valuelen == 8 && strncasecmp(h->value, "trailers", 8) == 0)
                rv = add_nv(nva, &k, arena, "te", 2, "trailers", 8, 0);
            continue;
        }
        if (qx_h1_is_hop_by_hop(h->name, h->namelen) || name_is(h, "host") ||
            name_is(h, "x-forwarded-proto") ||
            (name_is(h, "early-data") && (req->early || h->valuelen != 1 || h->value[0] != '1')))
            continue;
        if (name_is(h, "x-forwarded-for")) {
            xfflen += h->valuelen + 2;
            continue;
        }
        rv = add_nv(nva, &k, arena, h->name, h->namelen, h->value, h->valuelen, 1);
    }
    if (rv != 0)
        return rv;
    /* X-Forwarded-For: the client's list, in order, with our peer last. */
    const char *ip = req->client_ip ? req->client_ip : "unknown";
    char *xff = qx_arena_alloc(arena, xfflen + strlen(ip) + 1);
    if (xff == NULL)
        return QX_ERR_LIMIT;
    size_t xl = 0;
    for (size_t i = 0; i < req->nhdrs; i++) {
        const qx_hdr_t *h = &req->hdrs[i];
        if (name_is(h, "x-forwarded-for") && h->valuelen > 0) {
            memcpy(xff + xl, h->value, h->valuelen);
            xl += h->valuelen;
            memcpy(xff + xl, ", ", 2);
            xl += 2;
        }
    }
    memcpy(xff + xl, ip, strlen(ip));
    xl += strlen(ip);
    nva[k++] = (nghttp2_nv){(uint8_t *)"x-forwarded-for", (uint8_t *)xff, 15, xl,
                            NGHTTP2_NV_FLAG_NO_COPY_NAME};
    nva[k++] = (nghttp2_nv){(uint8_t *)"x-forwarded-proto", (uint8_t *)"https", 17, 5,
                            NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
    if (req->early)
        nva[k++] = (nghttp2_nv){(uint8_t *)"early-data", (uint8_t *)"1", 10, 1,
                                NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
    u->nva = nva;
    u->nnv = k;
    return 0;
}

static int h2c_connect(qx_up_stream_t *st, qx_pool_t *pool, int fresh_only, int *reused)
{
    h2c_up_t *u = h2(st);
    (void)fresh_only; /* a failed session leaves the pool's list: what is there is usable */
    for (h2c_sess_t *s = pool->h2c; s; s = s->next) {
        if (s->goaway || s->dead || s->nstreams >= session_limit(s))
            continue;
        stream_link(s, st);
        u->waiting = !s->connected;
        *reused = s->connected;
        return 0;
    }
    h2c_sess_t *s = NULL;
    int rv = session_new(&s, pool);
    if (rv != 0)
        return rv;
    qx_upconn_t *uc = NULL;
    int conn_reused = 0;
    rv = qx_pool_checkout(pool, s, &conn_cb, 1, &uc, &conn_reused);
    if (rv != 0) {
        pool_unlink(s);
        nghttp2_session_del(s->ng);
        free(s);
        return rv;
    }
    s->uc = uc;
    stream_link(s, st);
    u->waiting = 1;
    *reused = 0;
    return 0;
}

static ssize_t read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *source, void *user_data);

static void h2c_start(qx_up_stream_t *st)
{
    h2c_up_t *u = h2(st);
    h2c_sess_t *s = u->s;
    if (s == NULL || u->id > 0)
        return;
    nghttp2_data_provider dp = {.source = {.ptr = st}, .read_callback = read_body};
    int32_t id = nghttp2_submit_request(s->ng, NULL, u->nva, u->nnv, u->has_body ? &dp : NULL, st);
    if (id < 0) {
        u->ended = 1;
        stream_detach(st);
        st->sink->error(st->user, QX_UP_E_BROKEN, QX_UP_REPLAY_ANY, nghttp2_strerror(id));
        return;
    }
    u->id = id;
    session_send(s);
}

static void h2c_send(qx_up_stream_t *st)
{
    h2c_up_t *u = h2(st);
    if (u->s == NULL || u->id <= 0 || u->closed)
        return;
    nghttp2_session_resume_data(u->s->ng, u->id);
    session_send(u->s);
}

/* The front took response bytes: they go back to the app's window now. */
static int h2c_window(qx_up_stream_t *st)
{
    h2c_up_t *u = h2(st);
    h2c_sess_t *s = u->s;
    if (s != NULL && u->id > 0 && st->resp->ack > u->given) {
        size_t n = (size_t)(st->resp->ack - u->given);
        u->given = st->resp->ack;
        nghttp2_session_consume(s->ng, u->id, n);
        session_send(s);
    }
    if (!st->paused || qx_ring_free(st->resp) < QX_UP_READ_MIN)
        return 0;
    st->paused = 0;
    return 1;
}

static void h2c_rewind(qx_up_stream_t *st)
{
    h2c_up_t *u = h2(st);
    h2c_sess_t *s = u->s;
    stream_detach(st);
    u->id = 0;
    u->closed = 0;
    u->ended = 0;
    u->head_done = 0;
    u->resp_any = 0;
    u->status = 0;
    u->given = st->resp->fill;
    st->nf = 0;
    st->hblen = 0;
    st->req->sent = st->req->ack;
    if (s && !s->in_recv)
        session_send(s);
}

static void h2c_release(qx_up_stream_t *st)
{
    h2c_up_t *u = h2(st);
    h2c_sess_t *s = u->s;
    u->ended = 1;
    stream_detach(st);
    if (s && !s->in_recv && !s->dead)
        session_send(s);
}

const qx_upstream_ops_t qx_h2c_upstream_ops = {
    .proto = "h2c",
    .open = h2c_open,
    .connect = h2c_connect,
    .start = h2c_start,
    .send = h2c_send,
    .window = h2c_window,
    .rewind = h2c_rewind,
    .release = h2c_release,
};

/* ---- request body and trailers ------------------------------------------ */

/* Copies body bytes from the request window into nghttp2's DATA frame:
 * they leave the window for good (the client is credited). At the end,
 * the client's trailers end the stream in a HEADERS frame. */
static ssize_t read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *source, void *user_data)
{
    qx_up_stream_t *st = source->ptr;
    (void)user_data;
    if (st == NULL || h2(st)->s == NULL) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    struct iovec iov[2];
    int k = qx_ring_peek(st->req, iov, length);
    size_t total = 0;
    for (int i = 0; i < k; i++) {
        memcpy(buf + total, iov[i].iov_base, iov[i].iov_len);
        total += iov[i].iov_len;
    }
    qx_ring_mark_sent(st->req, total);
    qx_ring_mark_acked(st->req, total);
    if (total > 0) {
        h2(st)->body_sent = 1;
        st->sink->consumed(st->user, total);
    }
    if (st->req_fin && qx_ring_unsent(st->req) == 0) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (st->nreq_trailers > 0) {
            nghttp2_nv nva[64];
            size_t n = QX_MIN(st->nreq_trailers, QX_ARRAY_LEN(nva));
            for (size_t i = 0; i < n; i++) {
                const qx_hdr_t *t = &st->req_trailers[i];
                nva[i] = (nghttp2_nv){(uint8_t *)t->name, (uint8_t *)t->value, t->namelen,
                                      t->valuelen, NGHTTP2_NV_FLAG_NONE};
            }
            if (nghttp2_submit_trailer(ng, id, nva, n) == 0)
                *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        }
    } else if (total == 0) {
        return NGHTTP2_ERR_DEFERRED; /* send() resumes it */
    }
    return (ssize_t)total;
}

/* ---- response ----------------------------------------------------------- */

static qx_up_stream_t *stream_of(nghttp2_session *ng, int32_t id)
{
    return nghttp2_session_get_stream_user_data(ng, id);
}

/* The stream failed on the app's side: it is reset and reported. */
static void stream_error(nghttp2_session *ng, qx_up_stream_t *st, int err, const char *why)
{
    h2c_up_t *u = h2(st);
    if (u->ended)
        return;
    u->ended = 1;
    (void)ng;
    stream_detach(st); /* RST_STREAM(CANCEL) unless nghttp2 closed it */
    st->sink->error(st->user, err, QX_UP_REPLAY_NONE, why);
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    (void)flags;
    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    qx_up_stream_t *st = stream_of(ng, frame->hd.stream_id);
    if (st == NULL || h2(st)->ended)
        return 0;
    h2c_up_t *u = h2(st);
    if (u->head_done) {
        /* Trailers, into the arena (the head's storage must not move). */
        if (u->tr == NULL &&
            (u->tr = qx_arena_alloc(st->arena, H2C_TRAILERS * sizeof(*u->tr))) == NULL)
            return 0;
        if (u->ntr == H2C_TRAILERS)
            return 0;
        char *n = qx_arena_strndup(st->arena, (const char *)name, namelen);
        char *v = qx_arena_strndup(st->arena, (const char *)value, valuelen);
        if (n && v)
            u->tr[u->ntr++] = (qx_hdr_t){n, namelen, v, valuelen};
        return 0;
    }
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        int code = 0;
        for (size_t i = 0; i < valuelen && i < 4; i++)
            code = code * 10 + (value[i] - '0'); /* nghttp2 checked: three digits */
        u->status = code;
        return 0;
    }
    if (namelen > 0 && name[0] == ':')
        return 0;
    qx_up_field_t *f = qx_up_field_add(st);
    if (f == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* too many: the stream is reset */
    f->name_off = (uint32_t)st->hblen;
    if (qx_up_head_append(st, (const char *)name, namelen) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    f->name_len = (uint32_t)namelen;
    f->value_off = (uint32_t)st->hblen;
    if (qx_up_head_append(st, (const char *)value, valuelen) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    f->value_len = (uint32_t)valuelen;
    return 0;
}

static void response_end(qx_up_stream_t *st)
{
    h2c_up_t *u = h2(st);
    if (u->ended)
        return;
    u->ended = 1;
    st->sink->end(st->user, u->ntr ? u->tr : NULL, u->ntr);
}

static void response_head(nghttp2_session *ng, qx_up_stream_t *st, int fin)
{
    h2c_up_t *u = h2(st);
    qx_hdr_t hdrs[QX_UP_MAX_HEADERS];
    size_t n = 0;
    int64_t clen = -1;

    if (u->status >= 100 && u->status < 200) {
        st->nf = 0; /* interim response: wait for the final one */
        st->hblen = 0;
        u->status = 0;
        return;
    }
    u->head_done = 1;
    for (size_t i = 0; i < st->nf; i++) {
        qx_up_field_t *f = &st->f[i];
        const char *name = st->hb + f->name_off;
        if (qx_h1_is_hop_by_hop(name, f->name_len))
            continue;
        if (f->name_len == 14 && memcmp(name, "content-length", 14) == 0) {
            if (u->status == 204)
                continue;
            int64_t v = 0;
            for (uint32_t k = 0; k < f->value_len && k < 18; k++)
                v = v * 10 + (st->hb[f->value_off + k] - '0'); /* nghttp2 checked: digits */
            clen = v;
        }
        hdrs[n++] = (qx_hdr_t){name, f->name_len, st->hb + f->value_off, f->value_len};
    }
    int has_body = !(fin || u->is_head || u->status == 204 || u->status == 304 || clen == 0);
    if (st->sink->head(st->user, u->status, hdrs, n, has_body, clen) != 0) {
        stream_error(ng, st, QX_UP_E_PROTO, "response refused");
        return;
    }
    if (fin || !has_body)
        response_end(st); /* bytes an app sends anyway are dropped (on_data_chunk_recv) */
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *user_data)
{
    h2c_sess_t *s = user_data;
    int fin = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    qx_up_stream_t *st;

    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        st = stream_of(ng, frame->hd.stream_id);
        if (st == NULL || h2(st)->ended)
            return 0;
        h2(st)->resp_any = 1;
        st->sink->progress(st->user);
        if (!h2(st)->head_done)
            response_head(ng, st, fin);
        else if (fin)
            response_end(st); /* the trailers */
        break;
    case NGHTTP2_DATA:
        st = stream_of(ng, frame->hd.stream_id);
        if (fin && st && !h2(st)->ended && h2(st)->head_done)
            response_end(st);
        break;
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
            s->settled = 1;
            if (s->linked && s->uc->pool) {
                s->pool->h2c_streams = QX_MAX(1u, nghttp2_session_get_remote_settings(
                                                      ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS));
                s->pool->conn_streams = QX_MIN(s->pool->h2c_streams, (uint32_t)H2C_MAX_STREAMS);
            }
        }
        break;
    case NGHTTP2_GOAWAY:
        /* Streams above last_stream_id are closed by nghttp2 as refused
         * (on_stream_close); the others finish here. No new stream. */
        s->goaway = 1;
        pool_unlink(s);
        QX_DEBUG("h2c: GOAWAY (last stream %d, error %u)", frame->goaway.last_stream_id,
                 frame->goaway.error_code);
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                              size_t len, void *user_data)
{
    (void)flags;
    (void)user_data;
    qx_up_stream_t *st = stream_of(ng, id);
    if (st == NULL || h2(st)->ended || !h2(st)->head_done) {
        nghttp2_session_consume(ng, id, len);
        return 0;
    }
    h2c_up_t *u = h2(st);
    u->resp_any = 1;
    st->sink->progress(st->user);
    if (u->resp_body + len > st->resp_body_max) {
        nghttp2_session_consume(ng, id, len);
        stream_error(ng, st, QX_UP_E_TOO_BIG, "response body too large");
        return 0;
    }
    qx_ring_t *r = st->resp;
    if (r->data == NULL || len > qx_ring_free(r)) {
        /* The stream window is the response window: only an app that
         * ignores flow control gets here (nghttp2 refuses it first). */
        nghttp2_session_consume(ng, id, len);
        stream_error(ng, st, QX_UP_E_OVERFLOW, "response window overflow");
        return 0;
    }
    qx_ring_write(r, data, len);
    u->resp_body += len;
    st->sink->body(st->user, len);
    if (!st->resp_fits && qx_ring_free(r) < QX_UP_READ_MIN)
        st->paused = 1; /* the app's window closes by itself: window() reopens it */
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *user_data)
{
    (void)user_data;
    qx_up_stream_t *st = stream_of(ng, id);
    if (st == NULL)
        return 0;
    h2c_up_t *u = h2(st);
    u->closed = 1;
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    if (!u->ended) {
        /* Refused (GOAWAY past this stream, or REFUSED_STREAM): the app
         * never processed it, so any request may go again. */
        int refused = error_code == NGHTTP2_REFUSED_STREAM && !u->resp_any;
        char why[64];
        snprintf(why, sizeof(why), "stream reset by the app (%s)",
                 nghttp2_http2_strerror(error_code));
        u->ended = 1;
        stream_detach(st);
        st->sink->error(st->user, QX_UP_E_BROKEN, refused ? QX_UP_REPLAY_ANY : QX_UP_REPLAY_NONE,
                        why);
        return 0;
    }
    stream_detach(st);
    return 0;
}

/* ---- the connection ----------------------------------------------------- */

static void uc_on_connect(void *user, int status)
{
    h2c_sess_t *s = user;
    if (status != 0) {
        /* Nothing was sent: each waiting stream hears of it as from a
         * connection of its own (it may try another address). */
        s->dead = 1;
        s->goaway = 1;
        pool_unlink(s);
        while (s->streams) {
            qx_up_stream_t *st = s->streams;
            stream_detach(st);
            st->sink->connected(st->user, status);
        }
        session_destroy(s);
        return;
    }
    s->connected = 1;
    s->idle_since_ms = uv_now(s->uc->tcp.loop);
    qx_upconn_read_start(s->uc);
    /* Each waiting stream starts (the exchange calls start()). A failure
     * meanwhile must not free the session under this loop: it is held as
     * during a read, and goes after it. */
    s->in_recv = 1;
    qx_up_stream_t *st = s->streams;
    while (st && !s->dead) {
        qx_up_stream_t *next = h2(st)->next;
        if (h2(st)->waiting) {
            h2(st)->waiting = 0;
            st->sink->connected(st->user, 0);
        }
        st = next;
    }
    s->in_recv = 0;
    if (s->dead) {
        session_destroy(s);
        return;
    }
    session_send(s);
}

static void uc_on_write(void *user, int status)
{
    h2c_sess_t *s = user;
    s->writing = 0;
    if (status != 0) {
        session_fail(s, "write failed");
        return;
    }
    session_send(s);
}

static void uc_on_read(void *user, ssize_t nread, const char *buf)
{
    h2c_sess_t *s = user;
    if (nread < 0) {
        session_fail(s, nread == UV_EOF ? "connection closed by the app" : uv_strerror((int)nread));
        return;
    }
    s->in_recv = 1;
    ssize_t rv = nghttp2_session_mem_recv(s->ng, (const uint8_t *)buf, (size_t)nread);
    s->in_recv = 0;
    if (s->dead) {
        session_destroy(s);
        return;
    }
    if (rv < 0) {
        session_fail(s, nghttp2_strerror((int)rv));
        return;
    }
    session_send(s);
}

static void uc_read_buf(void *user, uv_buf_t *buf)
{
    h2c_sess_t *s = user;
    if (s->scratch && *s->scratch)
        *buf = uv_buf_init((char *)*s->scratch, QX_UP_READ);
}

static const qx_upconn_cb_t conn_cb = {uc_on_connect, uc_on_write, uc_on_read, uc_read_buf};

/* The callbacks are the same for every session: made once per process,
 * before any worker starts (a constructor), never changed. */
__attribute__((constructor)) static void callbacks_init(void)
{
    if (nghttp2_session_callbacks_new(&callbacks) != 0)
        return;
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
}
