/*
 * h3load.c - an HTTP/3 load generator (ngtcp2 1.11 + nghttp3 1.8 + GnuTLS).
 *
 * Debian's h2load has no HTTP/3, and the benchmark needs the same load for
 * qrux and Caddy: N connections x M concurrent streams each, a request count
 * or a duration, an optional request body, a fixed rate, short connections
 * (K requests then a new handshake) and connections held open idle. It prints
 * requests/s, latency percentiles (µs), errors and bytes, as text or as one
 * JSON line (--json) for bench/run.py.
 *
 * Shape: T threads, each with its own epoll loop and its own share of the
 * connections; one connected UDP socket per connection (one source port per
 * connection, as real clients have). Nothing is shared between threads but
 * the request budget (an atomic counter) and the hold barrier. Latency runs
 * from the request's submission to the end of its response (nghttp3
 * end_stream); in --rate mode a request that cannot be sent on time is sent
 * late, not dropped, and its latency counts from when it was sent.
 *
 * It is a test tool: the server certificate is not verified.
 */
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

#include <nghttp3/nghttp3.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

#define PKT_SIZE 1452 /* QUIC payload per datagram (fits a 1500 MTU over IPv6) */
#define GSO_SEGS 32   /* datagrams per sendmsg with UDP_SEGMENT */
#define RECV_BURST 64 /* datagrams read per wake-up before serving others */
#define MAX_EVENTS 256
#define MAX_THREADS 64
#define MAX_STREAMS 1024

/* ---- configuration and shared state ----------------------------------------- */

typedef struct {
    const char *url;
    char host[256], port[16], path[2048], authority[300], sni[256];
    int64_t nreq;    /* total requests (count mode), 0 in duration mode */
    double duration; /* seconds (duration mode), 0 in count mode */
    int nconns, nstreams, nthreads;
    size_t body_size;   /* > 0: POST with this many bytes */
    double rate;        /* total requests/s, 0 = as fast as possible */
    uint64_t conn_reqs; /* requests per connection, 0 = unlimited */
    int max_handshakes; /* concurrent handshakes per thread */
    double hold;        /* seconds to keep connections open idle at the end */
    double timeout;     /* overall deadline in seconds */
    int json, verbose;
} opts_t;

static opts_t opt = {.nconns = 1, .nstreams = 1, .nthreads = 1, .max_handshakes = 64};

static struct sockaddr_storage g_remote;
static socklen_t g_remote_len;
static gnutls_certificate_credentials_t g_cred;
static uint8_t *g_body;                 /* shared by every upload: nghttp3 only points at it */
static char g_clen[24];                 /* content-length value */
static atomic_int_fast64_t g_remaining; /* count mode: requests not yet claimed */
static uint64_t g_start_ns, g_deadline_ns, g_issue_end_ns;
static atomic_int g_gso_ok = 1;           /* cleared when the kernel refuses UDP_SEGMENT */
static atomic_int g_holding;              /* threads that reached the hold phase */
static atomic_uint_fast64_t g_hold_until; /* set by the last thread to reach it */
static atomic_int_fast64_t g_open_conns;
static atomic_int_fast64_t g_handshakes_ok, g_conn_failures;
static atomic_int g_abort; /* no handshake ever succeeded: stop retrying */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NGTCP2_SECONDS + (uint64_t)ts.tv_nsec;
}

/* Per-connection trouble is printed 10 times, then only counted: a dead
 * server must not flood the terminal (every failed connection retries). */
static atomic_int g_warned;

static void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void warn(const char *fmt, ...)
{
    if (atomic_fetch_add(&g_warned, 1) >= 10)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("h3load: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- per-thread state ---------------------------------------------------------- */

struct conn;

typedef struct {
    struct conn *c;
    int64_t stream_id;
    uint64_t start_ns;
    uint64_t body_rx;
    int status;
    int ended; /* the whole response arrived (end_stream) */
    int next_free;
} req_t;

enum { CS_PENDING = 0, CS_HANDSHAKE, CS_OPEN, CS_DONE };

typedef struct {
    uint64_t ok, errors, status[6], body_rx, body_tx, udp_rx, udp_tx, send_drops;
    uint64_t conns_opened, conns_failed, handshakes;
    uint64_t last_done_ns;
    uint32_t *lat; /* µs per successful request */
    size_t nlat, caplat;
} stats_t;

typedef struct worker {
    int id, epfd;
    struct conn *conns;
    int nconns;
    int *pending; /* stack of connections waiting for a handshake slot */
    int npending;
    int *retry; /* failed connections waiting for their retry_at */
    int nretry;
    int handshaking, inflight, open;
    uint64_t timers_min;
    struct conn **dirty;
    int ndirty;
    double interval_ns; /* --rate share of this thread */
    uint64_t next_send_ns;
    int rr;
    uint8_t sendbuf[GSO_SEGS * PKT_SIZE];
    uint8_t recvbuf[65536];
    stats_t st;
    pthread_t tid;
} worker_t;

typedef struct conn {
    worker_t *w;
    int idx, state, fd;
    int is_dirty, h3_ready, blocked, goaway, started_once;
    struct sockaddr_storage local;
    socklen_t local_len;
    gnutls_session_t tls;
    ngtcp2_crypto_conn_ref ref;
    ngtcp2_conn *qc;
    nghttp3_conn *h3;
    ngtcp2_ccerr ccerr;
    uint64_t expiry;
    uint64_t retry_at;
    uint64_t nstarted; /* requests submitted on this connection */
    int inflight;
    req_t *reqs;
    int free_head;
} conn_t;

static void mark_dirty(conn_t *c)
{
    if (!c->is_dirty) {
        c->is_dirty = 1;
        c->w->dirty[c->w->ndirty++] = c;
    }
}

/* ---- the request budget ----------------------------------------------------------- */

/* Whether any request may still be started (without claiming one). */
static int work_left(uint64_t now)
{
    if (opt.duration > 0)
        return now < g_issue_end_ns;
    return atomic_load(&g_remaining) > 0;
}

/* Claims one request: the shared budget, then this thread's rate. */
static int claim(worker_t *w, uint64_t now)
{
    if (opt.rate > 0 && now < w->next_send_ns)
        return 0;
    if (opt.duration > 0) {
        if (now >= g_issue_end_ns)
            return 0;
    } else if (atomic_fetch_sub(&g_remaining, 1) <= 0) {
        return 0;
    }
    if (opt.rate > 0) {
        w->next_send_ns += (uint64_t)w->interval_ns;
        /* After a stall, do not send the backlog in one burst. */
        if (w->next_send_ns + 10 * 1000000ULL < now)
            w->next_send_ns = now;
    }
    return 1;
}

static void unclaim(void)
{
    if (opt.duration == 0)
        atomic_fetch_add(&g_remaining, 1);
}

/* ---- statistics --------------------------------------------------------------------- */

static void record_ok(worker_t *w, req_t *r, uint64_t now)
{
    stats_t *s = &w->st;
    if (s->nlat == s->caplat) {
        size_t cap = s->caplat ? s->caplat * 2 : 65536;
        uint32_t *p = realloc(s->lat, cap * sizeof(*p));
        if (p == NULL) {
            fprintf(stderr, "h3load: out of memory for latencies\n");
            exit(1);
        }
        s->lat = p, s->caplat = cap;
    }
    uint64_t us = (now - r->start_ns) / 1000;
    s->lat[s->nlat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    s->ok++;
    s->status[r->status >= 100 && r->status < 600 ? r->status / 100 : 0]++;
    s->body_tx += opt.body_size;
    s->last_done_ns = now;
    if (opt.verbose)
        printf("response status=%d body=%" PRIu64 " us=%" PRIu64 "\n", r->status, r->body_rx, us);
}

/* ---- streams ---------------------------------------------------------------------- */

static req_t *req_new(conn_t *c)
{
    if (c->free_head < 0)
        return NULL;
    req_t *r = &c->reqs[c->free_head];
    c->free_head = r->next_free;
    r->stream_id = -1;
    r->body_rx = 0;
    r->status = 0;
    r->ended = 0;
    return r;
}

/* The stream is gone: a request that never saw its end is an error. */
static void req_done(conn_t *c, req_t *r)
{
    if (!r->ended)
        c->w->st.errors++;
    r->stream_id = -1;
    r->next_free = c->free_head;
    c->free_head = (int)(r - c->reqs);
    c->inflight--;
    c->w->inflight--;
    mark_dirty(c);
}

static nghttp3_ssize read_body(nghttp3_conn *h3, int64_t stream_id, nghttp3_vec *vec, size_t veccnt,
                               uint32_t *pflags, void *user_data, void *stream_user_data)
{
    /* The whole body in one vector; it lives as long as the process. */
    *pflags |= NGHTTP3_DATA_FLAG_EOF;
    vec[0].base = g_body;
    vec[0].len = opt.body_size;
    return 1;
}

static nghttp3_nv nv(const char *name, const char *value)
{
    return (nghttp3_nv){(uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value),
                        NGHTTP3_NV_FLAG_NO_COPY_NAME | NGHTTP3_NV_FLAG_NO_COPY_VALUE};
}

/* Starts as many requests as the connection, the budget and the rate allow.
 * Returns 0, or -1 when the connection must be dropped. */
static int conn_issue(conn_t *c, uint64_t now)
{
    static const nghttp3_data_reader dr = {read_body};
    nghttp3_nv get[] = {nv(":method", "GET"), nv(":scheme", "https"),
                        nv(":authority", opt.authority), nv(":path", opt.path),
                        nv("user-agent", "h3load")};
    nghttp3_nv post[] = {nv(":method", "POST"),           nv(":scheme", "https"),
                         nv(":authority", opt.authority), nv(":path", opt.path),
                         nv("user-agent", "h3load"),      nv("content-length", g_clen)};

    while (c->h3_ready && !c->blocked && !c->goaway && c->inflight < opt.nstreams &&
           (opt.conn_reqs == 0 || c->nstarted < opt.conn_reqs)) {
        if (!claim(c->w, now))
            break;
        req_t *r = req_new(c);
        if (r == NULL) {
            unclaim();
            break;
        }
        int rv = ngtcp2_conn_open_bidi_stream(c->qc, &r->stream_id, r);
        if (rv == NGTCP2_ERR_STREAM_ID_BLOCKED) {
            /* The server's MAX_STREAMS: wait for extend_max_local_streams_bidi. */
            r->next_free = c->free_head;
            c->free_head = (int)(r - c->reqs);
            unclaim();
            c->blocked = 1;
            break;
        }
        if (rv != 0) {
            warn("open_bidi_stream: %s", ngtcp2_strerror(rv));
            return -1;
        }
        if (opt.body_size)
            rv = nghttp3_conn_submit_request(c->h3, r->stream_id, post, 6, &dr, r);
        else
            rv = nghttp3_conn_submit_request(c->h3, r->stream_id, get, 5, NULL, r);
        if (rv != 0) {
            warn("submit_request: %s", nghttp3_strerror(rv));
            return -1;
        }
        r->start_ns = now_ns();
        c->nstarted++;
        c->inflight++;
        c->w->inflight++;
    }
    return 0;
}

/* ---- nghttp3 callbacks -------------------------------------------------------------- */

static void consumed(conn_t *c, int64_t stream_id, size_t n)
{
    ngtcp2_conn_extend_max_stream_offset(c->qc, stream_id, n);
    ngtcp2_conn_extend_max_offset(c->qc, n);
}

static int h3_recv_data(nghttp3_conn *h3, int64_t stream_id, const uint8_t *data, size_t len,
                        void *user_data, void *stream_user_data)
{
    conn_t *c = user_data;
    req_t *r = stream_user_data;
    if (r)
        r->body_rx += len;
    c->w->st.body_rx += len;
    consumed(c, stream_id, len);
    return 0;
}

static int h3_deferred_consume(nghttp3_conn *h3, int64_t stream_id, size_t n, void *user_data,
                               void *stream_user_data)
{
    consumed(user_data, stream_id, n);
    return 0;
}

static int h3_recv_header(nghttp3_conn *h3, int64_t stream_id, int32_t token, nghttp3_rcbuf *name,
                          nghttp3_rcbuf *value, uint8_t flags, void *user_data,
                          void *stream_user_data)
{
    req_t *r = stream_user_data;
    if (r && token == NGHTTP3_QPACK_TOKEN__STATUS) {
        nghttp3_vec v = nghttp3_rcbuf_get_buf(value);
        int st = 0;
        for (size_t i = 0; i < v.len && i < 3; i++)
            st = st * 10 + (v.base[i] - '0');
        if (st >= 200) /* interim answers (1xx) do not end the request */
            r->status = st;
    }
    return 0;
}

static int h3_end_stream(nghttp3_conn *h3, int64_t stream_id, void *user_data,
                         void *stream_user_data)
{
    conn_t *c = user_data;
    req_t *r = stream_user_data;
    if (r && !r->ended && r->status) {
        r->ended = 1;
        record_ok(c->w, r, now_ns());
    }
    return 0;
}

static int h3_stream_close(nghttp3_conn *h3, int64_t stream_id, uint64_t app_error_code,
                           void *user_data, void *stream_user_data)
{
    conn_t *c = user_data;
    req_t *r = stream_user_data;
    if (r)
        req_done(c, r);
    return 0;
}

static int h3_stop_sending(nghttp3_conn *h3, int64_t stream_id, uint64_t app_error_code,
                           void *user_data, void *stream_user_data)
{
    conn_t *c = user_data;
    return ngtcp2_conn_shutdown_stream_read(c->qc, 0, stream_id, app_error_code) == 0
               ? 0
               : NGHTTP3_ERR_CALLBACK_FAILURE;
}

static int h3_reset_stream(nghttp3_conn *h3, int64_t stream_id, uint64_t app_error_code,
                           void *user_data, void *stream_user_data)
{
    conn_t *c = user_data;
    return ngtcp2_conn_shutdown_stream_write(c->qc, 0, stream_id, app_error_code) == 0
               ? 0
               : NGHTTP3_ERR_CALLBACK_FAILURE;
}

static int h3_shutdown(nghttp3_conn *h3, int64_t id, void *user_data)
{
    conn_t *c = user_data;
    c->goaway = 1; /* GOAWAY: finish what runs, start nothing new here */
    return 0;
}

static int h3_setup(conn_t *c)
{
    static const nghttp3_callbacks cb = {
        .stream_close = h3_stream_close,
        .recv_data = h3_recv_data,
        .deferred_consume = h3_deferred_consume,
        .recv_header = h3_recv_header,
        .stop_sending = h3_stop_sending,
        .end_stream = h3_end_stream,
        .reset_stream = h3_reset_stream,
        .shutdown = h3_shutdown,
    };
    nghttp3_settings settings;
    int64_t ctrl, qenc, qdec;

    nghttp3_settings_default(&settings);
    settings.qpack_max_dtable_capacity = 4096;
    settings.qpack_blocked_streams = 16;
    if (nghttp3_conn_client_new(&c->h3, &cb, &settings, nghttp3_mem_default(), c) != 0)
        return -1;
    if (ngtcp2_conn_open_uni_stream(c->qc, &ctrl, NULL) != 0 ||
        ngtcp2_conn_open_uni_stream(c->qc, &qenc, NULL) != 0 ||
        ngtcp2_conn_open_uni_stream(c->qc, &qdec, NULL) != 0) {
        warn("the server allows fewer than 3 uni streams");
        return -1;
    }
    if (nghttp3_conn_bind_control_stream(c->h3, ctrl) != 0 ||
        nghttp3_conn_bind_qpack_streams(c->h3, qenc, qdec) != 0)
        return -1;
    return 0;
}

/* ---- ngtcp2 callbacks ------------------------------------------------------------------ */

static void rand_cb(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *ctx)
{
    gnutls_rnd(GNUTLS_RND_NONCE, dest, len);
}

static int new_cid_cb(ngtcp2_conn *qc, ngtcp2_cid *cid, uint8_t *token, size_t cidlen,
                      void *user_data)
{
    if (gnutls_rnd(GNUTLS_RND_NONCE, cid->data, cidlen) != 0 ||
        gnutls_rnd(GNUTLS_RND_NONCE, token, NGTCP2_STATELESS_RESET_TOKENLEN) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    cid->datalen = cidlen;
    return 0;
}

static int handshake_completed_cb(ngtcp2_conn *qc, void *user_data)
{
    conn_t *c = user_data;
    if (h3_setup(c) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    c->h3_ready = 1;
    c->state = CS_OPEN;
    c->w->handshaking--;
    c->w->open++;
    c->w->st.handshakes++;
    atomic_fetch_add(&g_handshakes_ok, 1);
    atomic_fetch_add(&g_open_conns, 1);
    mark_dirty(c);
    return 0;
}

static int recv_stream_data_cb(ngtcp2_conn *qc, uint32_t flags, int64_t stream_id, uint64_t offset,
                               const uint8_t *data, size_t len, void *user_data,
                               void *stream_user_data)
{
    conn_t *c = user_data;
    nghttp3_ssize n =
        nghttp3_conn_read_stream(c->h3, stream_id, data, len, flags & NGTCP2_STREAM_DATA_FLAG_FIN);
    if (n < 0) {
        warn("read_stream: %s", nghttp3_strerror((int)n));
        ngtcp2_ccerr_set_application_error(&c->ccerr, nghttp3_err_infer_quic_app_error_code((int)n),
                                           NULL, 0);
        return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    consumed(c, stream_id, (size_t)n);
    return 0;
}

static int acked_cb(ngtcp2_conn *qc, int64_t stream_id, uint64_t offset, uint64_t len,
                    void *user_data, void *stream_user_data)
{
    conn_t *c = user_data;
    return nghttp3_conn_add_ack_offset(c->h3, stream_id, len) == 0 ? 0
                                                                   : NGTCP2_ERR_CALLBACK_FAILURE;
}

static int stream_close_cb(ngtcp2_conn *qc, uint32_t flags, int64_t stream_id, uint64_t code,
                           void *user_data, void *stream_user_data)
{
    conn_t *c = user_data;
    if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET))
        code = NGHTTP3_H3_NO_ERROR;
    int rv = c->h3 ? nghttp3_conn_close_stream(c->h3, stream_id, code) : 0;
    if (rv == NGHTTP3_ERR_STREAM_NOT_FOUND) {
        /* nghttp3 never knew it: still the end of our request. */
        if (stream_user_data)
            req_done(c, stream_user_data);
        if (!ngtcp2_is_bidi_stream(stream_id))
            ngtcp2_conn_extend_max_streams_uni(qc, 1);
        return 0;
    }
    return rv == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
}

static int stream_reset_cb(ngtcp2_conn *qc, int64_t stream_id, uint64_t final_size, uint64_t code,
                           void *user_data, void *stream_user_data)
{
    conn_t *c = user_data;
    return nghttp3_conn_shutdown_stream_read(c->h3, stream_id) == 0 ? 0
                                                                    : NGTCP2_ERR_CALLBACK_FAILURE;
}

static int stop_sending_cb(ngtcp2_conn *qc, int64_t stream_id, uint64_t code, void *user_data,
                           void *stream_user_data)
{
    conn_t *c = user_data;
    nghttp3_conn_shutdown_stream_write(c->h3, stream_id);
    return 0;
}

static int extend_max_stream_data_cb(ngtcp2_conn *qc, int64_t stream_id, uint64_t max_data,
                                     void *user_data, void *stream_user_data)
{
    conn_t *c = user_data;
    return nghttp3_conn_unblock_stream(c->h3, stream_id) == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
}

static int extend_max_bidi_cb(ngtcp2_conn *qc, uint64_t max_streams, void *user_data)
{
    conn_t *c = user_data;
    c->blocked = 0;
    mark_dirty(c);
    return 0;
}

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref)
{
    return ((conn_t *)ref->user_data)->qc;
}

/* ---- connection set-up and teardown --------------------------------------------------- */

static const ngtcp2_callbacks quic_cb = {
    .client_initial = ngtcp2_crypto_client_initial_cb,
    .recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb,
    .handshake_completed = handshake_completed_cb,
    .encrypt = ngtcp2_crypto_encrypt_cb,
    .decrypt = ngtcp2_crypto_decrypt_cb,
    .hp_mask = ngtcp2_crypto_hp_mask_cb,
    .recv_stream_data = recv_stream_data_cb,
    .acked_stream_data_offset = acked_cb,
    .stream_close = stream_close_cb,
    .recv_retry = ngtcp2_crypto_recv_retry_cb,
    .extend_max_local_streams_bidi = extend_max_bidi_cb,
    .rand = rand_cb,
    .get_new_connection_id = new_cid_cb,
    .update_key = ngtcp2_crypto_update_key_cb,
    .stream_reset = stream_reset_cb,
    .extend_max_stream_data = extend_max_stream_data_cb,
    .delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb,
    .delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb,
    .get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb,
    .stream_stop_sending = stop_sending_cb,
    .version_negotiation = ngtcp2_crypto_version_negotiation_cb,
};

static int conn_flush(conn_t *c);

static int conn_start(conn_t *c)
{
    static const char prio[] = "%DISABLE_TLS13_COMPAT_MODE:NORMAL:-VERS-ALL:+VERS-TLS1.3";
    gnutls_datum_t alpn = {(unsigned char *)"h3", 2};
    worker_t *w = c->w;
    int buf = 1 << 20;

    c->fd = socket(g_remote.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd == -1) {
        warn("socket: %s", strerror(errno));
        return -1;
    }
    setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    c->local_len = sizeof(c->local);
    if (connect(c->fd, (struct sockaddr *)&g_remote, g_remote_len) == -1 ||
        getsockname(c->fd, (struct sockaddr *)&c->local, &c->local_len) == -1) {
        warn("connect: %s", strerror(errno));
        return -1;
    }

    if (gnutls_init(&c->tls, GNUTLS_CLIENT) != 0 ||
        gnutls_priority_set_direct(c->tls, prio, NULL) != 0 ||
        ngtcp2_crypto_gnutls_configure_client_session(c->tls) != 0 ||
        gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, g_cred) != 0 ||
        gnutls_alpn_set_protocols(c->tls, &alpn, 1, GNUTLS_ALPN_MANDATORY) != 0 ||
        gnutls_server_name_set(c->tls, GNUTLS_NAME_DNS, opt.sni, strlen(opt.sni)) != 0) {
        warn("TLS set-up failed");
        return -1;
    }
    c->ref.get_conn = get_conn;
    c->ref.user_data = c;
    gnutls_session_set_ptr(c->tls, &c->ref);

    ngtcp2_path path = {{(struct sockaddr *)&c->local, c->local_len},
                        {(struct sockaddr *)&g_remote, g_remote_len},
                        NULL};
    ngtcp2_cid dcid = {.datalen = 18}, scid = {.datalen = 16};
    ngtcp2_settings settings;
    ngtcp2_transport_params params;
    rand_cb(dcid.data, dcid.datalen, NULL);
    rand_cb(scid.data, scid.datalen, NULL);
    ngtcp2_settings_default(&settings);
    settings.initial_ts = now_ns();
    settings.max_tx_udp_payload_size = PKT_SIZE;
    settings.handshake_timeout = 10 * NGTCP2_SECONDS;
    ngtcp2_transport_params_default(&params);
    params.initial_max_stream_data_bidi_local = 1024 * 1024;
    params.initial_max_stream_data_uni = 256 * 1024;
    params.initial_max_data = 16 * 1024 * 1024;
    params.initial_max_streams_uni = 3;
    params.max_idle_timeout = 30 * NGTCP2_SECONDS;
    int rv = ngtcp2_conn_client_new(&c->qc, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, &quic_cb,
                                    &settings, &params, NULL, c);
    if (rv != 0) {
        warn("ngtcp2_conn_client_new: %s", ngtcp2_strerror(rv));
        return -1;
    }
    ngtcp2_conn_set_tls_native_handle(c->qc, c->tls);
    if (opt.hold > 0) /* idle connections must outlive the server's idle timeout */
        ngtcp2_conn_set_keep_alive_timeout(c->qc, 5 * NGTCP2_SECONDS);
    ngtcp2_ccerr_default(&c->ccerr);
    ngtcp2_ccerr_set_application_error(&c->ccerr, NGHTTP3_H3_NO_ERROR, NULL, 0);

    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->fd, &ev) == -1) {
        warn("epoll_ctl: %s", strerror(errno));
        return -1;
    }
    c->state = CS_HANDSHAKE;
    c->started_once = 1;
    w->handshaking++;
    w->st.conns_opened++;
    mark_dirty(c);
    return 0;
}

/* Sends CONNECTION_CLOSE (unless the peer already closed) and frees it all.
 * Requests still in flight count as errors. */
static void conn_close(conn_t *c, int failed)
{
    worker_t *w = c->w;
    if (c->qc && !ngtcp2_conn_in_closing_period(c->qc) && !ngtcp2_conn_in_draining_period(c->qc) &&
        c->fd != -1) {
        ngtcp2_path_storage ps;
        ngtcp2_pkt_info pi;
        ngtcp2_path_storage_zero(&ps);
        ngtcp2_ssize n = ngtcp2_conn_write_connection_close(c->qc, &ps.path, &pi, w->sendbuf,
                                                            PKT_SIZE, &c->ccerr, now_ns());
        if (n > 0 && send(c->fd, w->sendbuf, (size_t)n, 0) > 0)
            w->st.udp_tx += (uint64_t)n;
    }
    nghttp3_conn_del(c->h3);
    ngtcp2_conn_del(c->qc);
    if (c->tls)
        gnutls_deinit(c->tls);
    c->h3 = NULL, c->qc = NULL, c->tls = NULL;
    for (int i = 0; i < opt.nstreams; i++) {
        req_t *r = &c->reqs[i];
        if (r->stream_id >= 0) {
            if (!r->ended)
                w->st.errors++;
            r->stream_id = -1;
        }
    }
    w->inflight -= c->inflight;
    c->inflight = 0;
    c->free_head = 0;
    for (int i = 0; i < opt.nstreams; i++)
        c->reqs[i].next_free = i + 1 < opt.nstreams ? i + 1 : -1;
    if (c->state == CS_HANDSHAKE)
        w->handshaking--;
    if (c->state == CS_OPEN) {
        w->open--;
        atomic_fetch_sub(&g_open_conns, 1);
    }
    if (failed) {
        w->st.conns_failed++;
        if (atomic_fetch_add(&g_conn_failures, 1) + 1 >= 20 && atomic_load(&g_handshakes_ok) == 0)
            atomic_store(&g_abort, 1);
    }
    if (c->fd != -1)
        close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    c->h3_ready = c->blocked = c->goaway = 0;
    c->nstarted = 0;
    c->expiry = UINT64_MAX;
    c->state = CS_DONE;
}

/* A connection that ended before its work did: it reopens while work is
 * left (never during --hold, where every connection opens once). */
static void conn_lost(conn_t *c, int failed)
{
    worker_t *w = c->w;
    uint64_t now = now_ns();
    conn_close(c, failed);
    if (opt.hold > 0 || !work_left(now))
        return;
    if (failed) { /* a short pause, so a refusing server is not hammered */
        c->retry_at = now + 100 * 1000000ULL;
        w->retry[w->nretry++] = c->idx;
    } else {
        w->pending[w->npending++] = c->idx;
    }
}

/* ---- I/O ---------------------------------------------------------------------------------- */

static void send_batch(conn_t *c, uint8_t *buf, size_t len, size_t seg, int nseg)
{
    worker_t *w = c->w;
    if (nseg > 1 && atomic_load_explicit(&g_gso_ok, memory_order_relaxed)) {
        char ctrl[CMSG_SPACE(sizeof(uint16_t))] = {0};
        struct iovec iov = {buf, len};
        struct msghdr mh = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl, .msg_controllen = sizeof(ctrl)};
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_UDP;
        cm->cmsg_type = UDP_SEGMENT;
        cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t s = (uint16_t)seg;
        memcpy(CMSG_DATA(cm), &s, sizeof(s));
        if (sendmsg(c->fd, &mh, 0) != -1) {
            w->st.udp_tx += len;
            return;
        }
        if (errno == EIO || errno == EINVAL || errno == ENOPROTOOPT || errno == EOPNOTSUPP) {
            atomic_store(&g_gso_ok, 0); /* the kernel or device refuses: one by one */
        } else {
            w->st.send_drops += (uint64_t)nseg;
            return;
        }
    }
    for (size_t off = 0; off < len; off += seg) {
        size_t n = len - off < seg ? len - off : seg;
        if (send(c->fd, buf + off, n, 0) == -1)
            w->st.send_drops++; /* EAGAIN: QUIC's loss recovery resends */
        else
            w->st.udp_tx += n;
    }
}

/* Sends everything ngtcp2 and nghttp3 have to send, in GSO batches of
 * equal-sized datagrams. Returns 0, or -1 when the connection must go. */
static int conn_flush(conn_t *c)
{
    worker_t *w = c->w;
    uint8_t *buf = w->sendbuf;
    size_t off = 0, seg = 0;
    int nseg = 0;
    nghttp3_vec vec[16];
    ngtcp2_path_storage ps;
    ngtcp2_pkt_info pi;
    uint64_t ts = now_ns();

    ngtcp2_path_storage_zero(&ps);
    for (;;) {
        int64_t sid = -1;
        int fin = 0;
        nghttp3_ssize nvec = 0;
        if (c->h3 && ngtcp2_conn_get_max_data_left(c->qc)) {
            nvec = nghttp3_conn_writev_stream(c->h3, &sid, &fin, vec, 16);
            if (nvec < 0) {
                warn("writev_stream: %s", nghttp3_strerror((int)nvec));
                return -1;
            }
        }
        uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE | (fin ? NGTCP2_WRITE_STREAM_FLAG_FIN : 0);
        ngtcp2_ssize ndata = -1;
        ngtcp2_ssize n =
            ngtcp2_conn_writev_stream(c->qc, &ps.path, &pi, buf + off, PKT_SIZE, &ndata, flags, sid,
                                      (const ngtcp2_vec *)vec, (size_t)nvec, ts);
        if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED) {
            nghttp3_conn_block_stream(c->h3, sid);
            continue;
        }
        if (n == NGTCP2_ERR_STREAM_SHUT_WR) {
            nghttp3_conn_shutdown_stream_write(c->h3, sid);
            continue;
        }
        if (ndata >= 0 && nghttp3_conn_add_write_offset(c->h3, sid, (size_t)ndata) != 0)
            return -1;
        if (n == NGTCP2_ERR_WRITE_MORE)
            continue;
        if (n < 0) {
            warn("writev_stream: %s", ngtcp2_strerror((int)n));
            return -1;
        }
        if (n == 0)
            break;
        if (nseg > 0 && (size_t)n > seg) {
            /* Larger than the batch's segment size: send the batch first. */
            send_batch(c, buf, off, seg, nseg);
            memmove(buf, buf + off, (size_t)n);
            off = 0, nseg = 0;
        }
        if (nseg == 0)
            seg = (size_t)n;
        off += (size_t)n;
        nseg++;
        if ((size_t)n < seg || nseg == GSO_SEGS) {
            send_batch(c, buf, off, seg, nseg);
            off = 0, nseg = 0;
        }
    }
    if (nseg > 0)
        send_batch(c, buf, off, seg, nseg);
    /* No ngtcp2_conn_update_pkt_tx_time(): without it ngtcp2 never sets a
     * pacing deadline, so the client does not pace. The load stays on
     * loopback, where bursts are harmless, and every server under test
     * gets the same unpaced client. */
    return 0;
}

/* Reads what waits on the socket. Returns 0, 1 when the connection ended
 * (the peer closed it), -1 on failure. */
static int conn_read(conn_t *c)
{
    worker_t *w = c->w;
    ngtcp2_path path = {{(struct sockaddr *)&c->local, c->local_len},
                        {(struct sockaddr *)&g_remote, g_remote_len},
                        NULL};
    ngtcp2_pkt_info pi = {0};

    for (int i = 0; i < RECV_BURST; i++) {
        ssize_t n = recv(c->fd, w->recvbuf, sizeof(w->recvbuf), 0);
        if (n == -1) {
            if (errno == EAGAIN || errno == EINTR)
                return 0;
            warn("recv: %s", strerror(errno)); /* ECONNREFUSED: nobody listens */
            return -1;
        }
        w->st.udp_rx += (uint64_t)n;
        int rv = ngtcp2_conn_read_pkt(c->qc, &path, &pi, w->recvbuf, (size_t)n, now_ns());
        if (rv == NGTCP2_ERR_DRAINING) {
            const ngtcp2_ccerr *cc = ngtcp2_conn_get_ccerr(c->qc);
            if (c->state == CS_HANDSHAKE || c->inflight > 0 ||
                cc->error_code != (cc->type == NGTCP2_CCERR_TYPE_APPLICATION ? NGHTTP3_H3_NO_ERROR
                                                                             : NGTCP2_NO_ERROR))
                warn("the server closed a connection%s: %s error 0x%" PRIx64 " %.*s",
                     c->state == CS_HANDSHAKE ? " during the handshake" : "",
                     cc->type == NGTCP2_CCERR_TYPE_APPLICATION ? "application" : "transport",
                     cc->error_code, (int)cc->reasonlen,
                     cc->reasonlen ? (const char *)cc->reason : "");
            return 1;
        }
        if (rv != 0) {
            warn("read_pkt: %s", ngtcp2_strerror(rv));
            if (c->ccerr.error_code == NGHTTP3_H3_NO_ERROR)
                ngtcp2_ccerr_set_liberr(&c->ccerr, rv, NULL, 0);
            return -1;
        }
    }
    return 0;
}

/* After events or timers: start requests, send, re-arm the timer; drops the
 * connection on failure, or when its request quota is spent. */
static void conn_service(conn_t *c, uint64_t now)
{
    worker_t *w = c->w;
    if (c->state != CS_HANDSHAKE && c->state != CS_OPEN)
        return;
    if (conn_issue(c, now) != 0 || conn_flush(c) != 0) {
        conn_lost(c, 1);
        return;
    }
    /* A short connection that did its requests closes; its slot reopens. */
    if (c->state == CS_OPEN && opt.conn_reqs && c->nstarted >= opt.conn_reqs && c->inflight == 0 &&
        opt.hold == 0) {
        conn_close(c, 0);
        w->pending[w->npending++] = c->idx;
        return;
    }
    c->expiry = ngtcp2_conn_get_expiry(c->qc);
    if (c->expiry < w->timers_min)
        w->timers_min = c->expiry;
}

/* ---- the worker loop ------------------------------------------------------------------------ */

static void start_pending(worker_t *w, uint64_t now)
{
    for (int i = 0; i < w->nretry;) {
        conn_t *c = &w->conns[w->retry[i]];
        if (c->retry_at <= now) {
            w->pending[w->npending++] = c->idx;
            w->retry[i] = w->retry[--w->nretry];
        } else {
            i++;
        }
    }
    while (w->npending > 0 && w->handshaking < opt.max_handshakes) {
        conn_t *c = &w->conns[w->pending[w->npending - 1]];
        /* With --hold every connection opens once; otherwise only for work. */
        if (!(opt.hold > 0 && !c->started_once) && !work_left(now))
            break;
        w->npending--;
        if (conn_start(c) != 0) {
            conn_close(c, 1); /* not retried: socket or TLS set-up is broken here */
            return;
        }
    }
}

static void run_timers(worker_t *w, uint64_t now)
{
    w->timers_min = UINT64_MAX;
    for (int i = 0; i < w->nconns; i++) {
        conn_t *c = &w->conns[i];
        if (c->state != CS_HANDSHAKE && c->state != CS_OPEN)
            continue;
        if (c->expiry <= now) {
            int rv = ngtcp2_conn_handle_expiry(c->qc, now);
            if (rv != 0) {
                if (rv != NGTCP2_ERR_IDLE_CLOSE || c->inflight > 0)
                    warn("connection %d: %s", c->idx, ngtcp2_strerror(rv));
                conn_lost(c, 1);
                continue;
            }
            mark_dirty(c);
            c->expiry = UINT64_MAX; /* re-read in conn_service */
        } else if (c->expiry < w->timers_min) {
            w->timers_min = c->expiry;
        }
    }
}

/* In --rate mode: hand the due requests to connections with a free slot. */
static void rate_issue(worker_t *w, uint64_t now)
{
    for (int tries = 0; tries < w->nconns && now >= w->next_send_ns && work_left(now); tries++) {
        conn_t *c = &w->conns[w->rr];
        w->rr = (w->rr + 1) % w->nconns;
        if (c->state == CS_OPEN && c->inflight < opt.nstreams)
            mark_dirty(c);
        if (w->ndirty > 0) /* service now so next_send_ns moves on */
            break;
    }
}

static int finished(worker_t *w, uint64_t now)
{
    if (w->inflight > 0 || w->handshaking > 0)
        return 0;
    if (opt.hold > 0) {
        for (int i = 0; i < w->npending; i++)
            if (!w->conns[w->pending[i]].started_once)
                return 0;
    }
    if (!work_left(now))
        return 1;
    if (w->nretry > 0)
        return 0;
    /* Work is left, but nothing here can take it (every connection spent its
     * quota and stays open for --hold, or failed for good). */
    for (int i = 0; i < w->nconns; i++) {
        conn_t *c = &w->conns[i];
        if (c->state == CS_OPEN && !c->goaway &&
            (opt.conn_reqs == 0 || c->nstarted < opt.conn_reqs))
            return 0;
    }
    return w->npending == 0;
}

static void loop_once(worker_t *w, uint64_t until)
{
    struct epoll_event ev[MAX_EVENTS];
    uint64_t now = now_ns();
    uint64_t wake = w->timers_min < until ? w->timers_min : until;
    if (opt.rate > 0 && w->next_send_ns < wake && work_left(now))
        wake = w->next_send_ns;
    int ms = wake <= now || w->ndirty > 0 ? 0 : (int)((wake - now + 999999) / 1000000);
    if (ms > 100)
        ms = 100;
    int n = epoll_wait(w->epfd, ev, MAX_EVENTS, ms);
    for (int i = 0; i < n; i++) {
        conn_t *c = ev[i].data.ptr;
        if (c->state != CS_HANDSHAKE && c->state != CS_OPEN)
            continue;
        int rv = conn_read(c);
        if (rv != 0) {
            conn_lost(c, rv < 0 || c->inflight > 0 || c->state == CS_HANDSHAKE);
            continue;
        }
        mark_dirty(c);
    }
    now = now_ns();
    if (now >= w->timers_min)
        run_timers(w, now);
    if (opt.rate > 0)
        rate_issue(w, now);
    start_pending(w, now);
    /* Service the dirty list; servicing may dirty more (callbacks). */
    for (int i = 0; i < w->ndirty; i++) {
        conn_t *c = w->dirty[i];
        c->is_dirty = 0;
        conn_service(c, now);
    }
    w->ndirty = 0;
    start_pending(w, now);
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    w->next_send_ns = g_start_ns;
    start_pending(w, now_ns());
    for (;;) {
        uint64_t now = now_ns();
        if (now >= g_deadline_ns || atomic_load(&g_abort))
            break; /* --timeout: what is still in flight counts as errors */
        if (finished(w, now))
            break;
        loop_once(w, g_deadline_ns);
    }
    if (opt.hold > 0) {
        if (atomic_fetch_add(&g_holding, 1) + 1 == opt.nthreads) {
            fprintf(stderr, "h3load: holding %" PRIdFAST64 " connections idle for %.1f s\n",
                    atomic_load(&g_open_conns), opt.hold);
            atomic_store(&g_hold_until, now_ns() + (uint64_t)(opt.hold * 1e9));
        }
        for (;;) {
            uint64_t until = atomic_load(&g_hold_until), now = now_ns();
            if ((until != 0 && now >= until) || now >= g_deadline_ns)
                break;
            loop_once(w, until ? until : now + 100000000ULL);
        }
    }
    for (int i = 0; i < w->nconns; i++)
        if (w->conns[i].state == CS_HANDSHAKE || w->conns[i].state == CS_OPEN)
            conn_close(&w->conns[i], 0);
    return NULL;
}

/* ---- command line and report ------------------------------------------------------------------
 */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: h3load [options] https://HOST[:PORT]/PATH\n"
            "\n"
            "HTTP/3 load generator (ngtcp2 + nghttp3). The certificate is not verified.\n"
            "\n"
            "  -n N            total requests (default 1000; ignored with -D)\n"
            "  -D SECS         run for SECS seconds instead of a request count\n"
            "  -c N            connections (default 1)\n"
            "  -m N            concurrent streams per connection (default 1, max %d)\n"
            "  -t N            threads; connections are split between them (default 1)\n"
            "  -d BYTES        POST a body of BYTES bytes (with content-length); default GET\n"
            "  -r RATE         total requests per second (default: as fast as possible)\n"
            "  --conn-reqs K   K requests per connection, then close it and handshake\n"
            "                  anew (with --hold: it stays open idle)\n"
            "  --max-handshakes H  concurrent handshakes per thread (default 64)\n"
            "  --hold SECS     at the end keep every connection open idle for SECS seconds\n"
            "                  (PINGs every 5 s); prints 'h3load: holding N connections'\n"
            "                  on stderr when the hold starts\n"
            "  --timeout SECS  give up after SECS (default 60, or -D + 10)\n"
            "  --sni NAME      TLS server name (default: HOST, or localhost for an IP)\n"
            "  --json          print the summary as one JSON line\n"
            "  -v              one line per response: status, body bytes, latency\n"
            "  -h, --help      this text\n"
            "\n"
            "Exit status: 0 when every request succeeded (2xx/3xx), 1 otherwise,\n"
            "2 on a usage error.\n",
            MAX_STREAMS);
}

static int parse_url(const char *url)
{
    const char *p = url;
    if (strncmp(p, "https://", 8) != 0)
        return -1;
    p += 8;
    const char *hend, *pstart = strchr(p, '/');
    if (pstart == NULL)
        pstart = p + strlen(p);
    if (*p == '[') {
        hend = memchr(p, ']', (size_t)(pstart - p));
        if (hend == NULL)
            return -1;
        snprintf(opt.host, sizeof(opt.host), "%.*s", (int)(hend - p - 1), p + 1);
        hend++;
    } else {
        hend = memchr(p, ':', (size_t)(pstart - p));
        if (hend == NULL)
            hend = pstart;
        snprintf(opt.host, sizeof(opt.host), "%.*s", (int)(hend - p), p);
    }
    if (*hend == ':')
        snprintf(opt.port, sizeof(opt.port), "%.*s", (int)(pstart - hend - 1), hend + 1);
    else
        snprintf(opt.port, sizeof(opt.port), "443");
    snprintf(opt.authority, sizeof(opt.authority), "%.*s", (int)(pstart - p), p);
    snprintf(opt.path, sizeof(opt.path), "%s", *pstart ? pstart : "/");
    return opt.host[0] && opt.port[0] ? 0 : -1;
}

static double num(const char *s, int *bad)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || v < 0)
        *bad = 1;
    return v;
}

static int parse_args(int argc, char **argv)
{
    int bad = 0, have_n = 0;
    opt.nreq = 1000;
    for (int i = 1; i < argc && !bad; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "--json") == 0) {
            opt.json = 1;
        } else if (strcmp(a, "-v") == 0) {
            opt.verbose = 1;
        } else if (a[0] == '-' && v == NULL) {
            return -1;
        } else if (strcmp(a, "-n") == 0) {
            opt.nreq = (int64_t)num(v, &bad), have_n = 1, i++;
        } else if (strcmp(a, "-D") == 0) {
            opt.duration = num(v, &bad), i++;
        } else if (strcmp(a, "-c") == 0) {
            opt.nconns = (int)num(v, &bad), i++;
        } else if (strcmp(a, "-m") == 0) {
            opt.nstreams = (int)num(v, &bad), i++;
        } else if (strcmp(a, "-t") == 0) {
            opt.nthreads = (int)num(v, &bad), i++;
        } else if (strcmp(a, "-d") == 0) {
            opt.body_size = (size_t)num(v, &bad), i++;
        } else if (strcmp(a, "-r") == 0) {
            opt.rate = num(v, &bad), i++;
        } else if (strcmp(a, "--conn-reqs") == 0) {
            opt.conn_reqs = (uint64_t)num(v, &bad), i++;
        } else if (strcmp(a, "--max-handshakes") == 0) {
            opt.max_handshakes = (int)num(v, &bad), i++;
        } else if (strcmp(a, "--hold") == 0) {
            opt.hold = num(v, &bad), i++;
        } else if (strcmp(a, "--timeout") == 0) {
            opt.timeout = num(v, &bad), i++;
        } else if (strcmp(a, "--sni") == 0) {
            snprintf(opt.sni, sizeof(opt.sni), "%s", v), i++;
        } else if (a[0] == '-') {
            return -1;
        } else if (opt.url == NULL) {
            opt.url = a;
        } else {
            return -1;
        }
    }
    if (bad || opt.url == NULL || parse_url(opt.url) != 0)
        return -1;
    if (opt.nconns < 1 || opt.nstreams < 1 || opt.nstreams > MAX_STREAMS || opt.nthreads < 1 ||
        opt.nthreads > MAX_THREADS || opt.max_handshakes < 1 || (have_n && opt.nreq < 0))
        return -1;
    if (opt.nthreads > opt.nconns)
        opt.nthreads = opt.nconns;
    if (opt.duration > 0)
        opt.nreq = 0;
    if (opt.timeout == 0)
        opt.timeout = opt.duration > 0 ? opt.duration + 10 : 60;
    opt.timeout += opt.hold;
    if (opt.sni[0] == '\0') {
        unsigned char addr[sizeof(struct in6_addr)];
        int ip =
            inet_pton(AF_INET, opt.host, addr) == 1 || inet_pton(AF_INET6, opt.host, addr) == 1;
        snprintf(opt.sni, sizeof(opt.sni), "%s", ip ? "localhost" : opt.host);
    }
    return 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static uint32_t pct(const uint32_t *v, size_t n, double q)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(q * (double)n);
    if (i >= n)
        i = n - 1;
    return v[i];
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)opt.nconns + 64)
        fprintf(stderr, "h3load: warning: %d connections but only %llu file descriptors\n",
                opt.nconns, (unsigned long long)rl.rlim_cur);
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) != 0) {
        usage(stderr);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    raise_nofile();

    struct addrinfo hints = {.ai_socktype = SOCK_DGRAM}, *res;
    int rv = getaddrinfo(opt.host, opt.port, &hints, &res);
    if (rv != 0) {
        fprintf(stderr, "h3load: %s: %s\n", opt.host, gai_strerror(rv));
        return 1;
    }
    memcpy(&g_remote, res->ai_addr, res->ai_addrlen);
    g_remote_len = res->ai_addrlen;
    freeaddrinfo(res);

    if (gnutls_certificate_allocate_credentials(&g_cred) != 0)
        return 1;
    if (opt.body_size) {
        g_body = malloc(opt.body_size);
        if (g_body == NULL)
            return 1;
        for (size_t i = 0; i < opt.body_size; i++)
            g_body[i] = (uint8_t)('a' + i % 26);
        snprintf(g_clen, sizeof(g_clen), "%zu", opt.body_size);
    }
    atomic_store(&g_remaining, opt.nreq);

    worker_t *ws = calloc((size_t)opt.nthreads, sizeof(*ws));
    if (ws == NULL)
        return 1;
    for (int t = 0; t < opt.nthreads; t++) {
        worker_t *w = &ws[t];
        w->id = t;
        w->nconns = opt.nconns / opt.nthreads + (t < opt.nconns % opt.nthreads);
        w->conns = calloc((size_t)w->nconns, sizeof(conn_t));
        w->pending = calloc((size_t)w->nconns, sizeof(int));
        w->retry = calloc((size_t)w->nconns, sizeof(int));
        w->dirty = calloc((size_t)w->nconns, sizeof(conn_t *));
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        w->timers_min = UINT64_MAX;
        if (opt.rate > 0)
            w->interval_ns = 1e9 * opt.nthreads / opt.rate;
        if (w->conns == NULL || w->pending == NULL || w->retry == NULL || w->dirty == NULL ||
            w->epfd == -1)
            return 1;
        for (int i = 0; i < w->nconns; i++) {
            conn_t *c = &w->conns[i];
            c->w = w, c->idx = i, c->fd = -1, c->expiry = UINT64_MAX;
            c->reqs = calloc((size_t)opt.nstreams, sizeof(req_t));
            if (c->reqs == NULL)
                return 1;
            for (int k = 0; k < opt.nstreams; k++) {
                c->reqs[k].c = c;
                c->reqs[k].stream_id = -1;
                c->reqs[k].next_free = k + 1 < opt.nstreams ? k + 1 : -1;
            }
            c->free_head = 0;
            /* Started from the top of the stack: lowest index first. */
            w->pending[w->npending++] = w->nconns - 1 - i;
        }
    }

    g_start_ns = now_ns();
    g_issue_end_ns = g_start_ns + (uint64_t)(opt.duration * 1e9);
    g_deadline_ns = g_start_ns + (uint64_t)(opt.timeout * 1e9);
    for (int t = 0; t < opt.nthreads; t++)
        if (pthread_create(&ws[t].tid, NULL, worker_main, &ws[t]) != 0) {
            perror("h3load: pthread_create");
            return 1;
        }
    for (int t = 0; t < opt.nthreads; t++)
        pthread_join(ws[t].tid, NULL);
    uint64_t end_ns = now_ns();
    if (atomic_load(&g_abort))
        fprintf(stderr, "h3load: gave up: %" PRIdFAST64 " connection attempts, no handshake\n",
                atomic_load(&g_conn_failures));
    if (atomic_load(&g_warned) > 10)
        fprintf(stderr, "h3load: %d more warnings not shown\n", atomic_load(&g_warned) - 10);

    stats_t tot = {0};
    for (int t = 0; t < opt.nthreads; t++) {
        stats_t *s = &ws[t].st;
        tot.ok += s->ok, tot.errors += s->errors, tot.body_rx += s->body_rx;
        tot.body_tx += s->body_tx, tot.udp_rx += s->udp_rx, tot.udp_tx += s->udp_tx;
        tot.send_drops += s->send_drops, tot.conns_opened += s->conns_opened;
        tot.conns_failed += s->conns_failed, tot.handshakes += s->handshakes;
        for (int k = 0; k < 6; k++)
            tot.status[k] += s->status[k];
        if (s->last_done_ns > tot.last_done_ns)
            tot.last_done_ns = s->last_done_ns;
        tot.nlat += s->nlat;
    }
    uint32_t *lat = malloc((tot.nlat ? tot.nlat : 1) * sizeof(uint32_t));
    if (lat == NULL)
        return 1;
    size_t k = 0;
    for (int t = 0; t < opt.nthreads; t++) {
        if (ws[t].st.nlat)
            memcpy(lat + k, ws[t].st.lat, ws[t].st.nlat * sizeof(uint32_t));
        k += ws[t].st.nlat;
    }
    qsort(lat, tot.nlat, sizeof(uint32_t), cmp_u32);
    /* Requests not started because of --timeout are not errors of the server,
     * but a count run that did not finish its count is not a success. */
    int64_t unstarted = opt.duration > 0 ? 0 : atomic_load(&g_remaining);
    if (unstarted < 0)
        unstarted = 0;
    uint64_t last = tot.last_done_ns ? tot.last_done_ns : end_ns;
    double secs = (double)(last - g_start_ns) / 1e9;
    if (opt.hold > 0 && tot.last_done_ns == 0)
        secs = (double)(end_ns - g_start_ns) / 1e9;
    double rps = secs > 0 ? (double)tot.ok / secs : 0;
    double sum = 0;
    for (size_t i = 0; i < tot.nlat; i++)
        sum += lat[i];
    double mean = tot.nlat ? sum / (double)tot.nlat : 0;
    uint64_t bad_status = tot.status[0] + tot.status[4] + tot.status[5];

    if (opt.json) {
        printf("{\"requests\": %" PRIu64 ", \"errors\": %" PRIu64 ", \"unstarted\": %" PRId64
               ", \"status_2xx\": %" PRIu64 ", \"status_3xx\": %" PRIu64
               ", \"status_4xx\": %" PRIu64 ", \"status_5xx\": %" PRIu64
               ", \"seconds\": %.6f, \"rps\": %.1f, \"lat_us\": {\"min\": %u, \"mean\": %.1f, "
               "\"p50\": %u, \"p90\": %u, \"p99\": %u, \"p999\": %u, \"max\": %u}, "
               "\"body_rx\": %" PRIu64 ", \"body_tx\": %" PRIu64 ", \"udp_rx\": %" PRIu64
               ", \"udp_tx\": %" PRIu64 ", \"send_drops\": %" PRIu64 ", \"conns_opened\": %" PRIu64
               ", \"handshakes\": %" PRIu64 ", \"conns_failed\": %" PRIu64 ", \"gso\": %d}\n",
               tot.ok, tot.errors, unstarted, tot.status[2], tot.status[3], tot.status[4],
               tot.status[5], secs, rps, tot.nlat ? lat[0] : 0, mean, pct(lat, tot.nlat, 0.50),
               pct(lat, tot.nlat, 0.90), pct(lat, tot.nlat, 0.99), pct(lat, tot.nlat, 0.999),
               tot.nlat ? lat[tot.nlat - 1] : 0, tot.body_rx, tot.body_tx, tot.udp_rx, tot.udp_tx,
               tot.send_drops, tot.conns_opened, tot.handshakes, tot.conns_failed,
               atomic_load(&g_gso_ok));
    } else {
        printf("h3load: %s  %d thread(s), %d connection(s) x %d stream(s)%s\n", opt.url,
               opt.nthreads, opt.nconns, opt.nstreams, opt.body_size ? ", POST" : "");
        printf("requests:   %" PRIu64 " done, %" PRIu64 " errors, %" PRId64
               " not started; status 2xx %" PRIu64 ", 3xx %" PRIu64 ", 4xx %" PRIu64
               ", 5xx %" PRIu64 "\n",
               tot.ok, tot.errors, unstarted, tot.status[2], tot.status[3], tot.status[4],
               tot.status[5]);
        printf("time:       %.3f s, %.1f requests/s\n", secs, rps);
        printf("latency us: min %u  mean %.0f  p50 %u  p90 %u  p99 %u  p99.9 %u  max %u\n",
               tot.nlat ? lat[0] : 0, mean, pct(lat, tot.nlat, 0.50), pct(lat, tot.nlat, 0.90),
               pct(lat, tot.nlat, 0.99), pct(lat, tot.nlat, 0.999),
               tot.nlat ? lat[tot.nlat - 1] : 0);
        printf("bytes:      body in %" PRIu64 ", body out %" PRIu64 ", UDP in %" PRIu64
               ", UDP out %" PRIu64 " (%" PRIu64 " datagrams dropped on send)\n",
               tot.body_rx, tot.body_tx, tot.udp_rx, tot.udp_tx, tot.send_drops);
        printf("conns:      %" PRIu64 " opened, %" PRIu64 " handshakes, %" PRIu64 " failed\n",
               tot.conns_opened, tot.handshakes, tot.conns_failed);
    }
    return tot.errors == 0 && bad_status == 0 && unstarted == 0 ? 0 : 1;
}
