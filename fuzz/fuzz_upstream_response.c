/*
 * fuzz_upstream_response.c - what an upstream answers, through the whole
 * response path of an exchange: the pool's connection, qrux's llhttp
 * callbacks (status, fields, hop-by-hop filtering, framing, 1xx, the
 * header and body caps), the response window and the front ops. A fake
 * front (the ops below) takes the head and drains the body.
 *
 * The upstream is a listener on the worker's own loop: the exchange's
 * connect, its request write and its connection's release are real. The
 * response bytes are not sent through that socket but handed to the
 * connection's callbacks as libuv would hand over a read (the exchange's
 * read_buf says where a read goes and how much fits, on_read takes it,
 * then UV_EOF), only while the exchange reads: the same code runs, with
 * no system call and no loop turn per piece.
 *
 * Input: byte 0: the request method (GET, HEAD, POST with a body: value %
 * 3) and how the front drains (value / 3 odd: only when the upstream is
 * paused or has no more to say, so the window fills; else at once);
 * byte 1: the piece size (0: as much as a read takes); then the response.
 * Checks: the front is answered exactly once (a head, a local error or an
 * abort), never more body than the window held, and the exchange ends
 * within a bounded number of loop turns once the response is delivered.
 */
#include "base/qx.h"
#include "base/ring.h"
#include "env.h"
#include "exchange/exchange.h"
#include "upstream/h1_up.h"
#include "upstream/pool.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct front {
    int responded; /* respond() calls */
    int status;
    int has_body;
    int aborted;
    int lazy; /* drains only when the harness says so */
    uint64_t body;
    int eof;
} front_t;

static int f_respond(qx_exchange_t *ex, int status, const qx_hdr_t *hdrs, size_t n, int has_body)
{
    front_t *f = ex->front;
    if (status < 100 || status > 999 || n > QX_MAX_HEADERS)
        __builtin_trap(); /* what the fronts would have to refuse */
    for (size_t i = 0; i < n; i++) {
        volatile char c = 0;
        if (hdrs[i].namelen)
            c ^= hdrs[i].name[hdrs[i].namelen - 1];
        if (hdrs[i].valuelen)
            c ^= hdrs[i].value[hdrs[i].valuelen - 1];
        (void)c;
    }
    if (status >= 200 && f->responded && f->status >= 200)
        __builtin_trap(); /* two final heads */
    f->responded++;
    f->status = status;
    f->has_body = has_body;
    if (!has_body && status >= 200)
        f->eof = 1;
    return 0;
}

/* Takes everything the window holds, as a client that reads at once. */
static void f_drain(qx_exchange_t *ex)
{
    front_t *f = ex->front;
    struct iovec iov[2];
    int k = qx_ring_peek(&ex->resp, iov, SIZE_MAX);
    size_t total = 0;
    for (int i = 0; i < k; i++) {
        volatile uint8_t c = ((const uint8_t *)iov[i].iov_base)[iov[i].iov_len - 1];
        (void)c;
        total += iov[i].iov_len;
    }
    if (total > QX_STREAM_WINDOW)
        __builtin_trap();
    qx_ring_mark_sent(&ex->resp, total);
    qx_exchange_resp_acked(ex, total);
    f->body += total;
    if (ex->resp_eof && qx_ring_unsent(&ex->resp) == 0)
        f->eof = 1;
}

static void f_resume(qx_exchange_t *ex)
{
    front_t *f = ex->front;
    if (!f->lazy)
        f_drain(ex);
}

static void f_consumed(qx_exchange_t *ex, size_t n)
{
    (void)ex;
    (void)n;
}

static void f_stop_reading(qx_exchange_t *ex)
{
    (void)ex;
}

static void f_abort(qx_exchange_t *ex)
{
    front_t *f = ex->front;
    f->aborted = 1;
}

static const qx_front_ops_t fops = {
    .proto = "h2",
    .proto_idx = QX_P_H2,
    .respond = f_respond,
    .resume = f_resume,
    .consumed = f_consumed,
    .stop_reading = f_stop_reading,
    .abort = f_abort,
};

/* ---- the upstream ------------------------------------------------------- */

/* The accepting side only reads the request and drops it; it never
 * writes. At most a few per input (a failed connect moves on). */
#define UP_CONNS 4

typedef struct up_conn {
    uv_tcp_t tcp;
    int open;
    char rbuf[4096];
} up_conn_t;

static uv_tcp_t listener;
static up_conn_t ups[UP_CONNS];
static int nopen; /* accepted and not yet closed */

static void up_closed(uv_handle_t *h)
{
    up_conn_t *c = h->data;
    c->open = 0;
    nopen--;
}

static void up_close(up_conn_t *c)
{
    if (c->open && !uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, up_closed);
}

static void up_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    up_conn_t *c = h->data;
    (void)hint;
    *b = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void up_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    if (n < 0)
        up_close(((uv_handle_t *)s)->data);
}

static void up_accept(uv_stream_t *l, int status)
{
    up_conn_t *c = NULL;
    if (status != 0)
        return;
    for (int i = 0; i < UP_CONNS && c == NULL; i++)
        c = ups[i].open ? NULL : &ups[i];
    if (c == NULL)
        __builtin_trap(); /* one input opened more connections than it could use */
    uv_tcp_init(l->loop, &c->tcp);
    c->tcp.data = c;
    c->open = 1;
    nopen++;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        up_close(c);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, up_alloc, up_read);
}

/* Whether the exchange's connection takes a read now: what libuv's read
 * watcher would deliver to (pool.c on_read). */
static int reading(qx_exchange_t *ex)
{
    qx_upconn_t *uc = qx_h1_up_conn(&ex->ups);
    return uc != NULL && uc->state == QX_UC_BUSY && uc->reading && uc->user == &ex->ups && uc->cb;
}

/* One read of at most |n| bytes, as pool.c's on_alloc and on_read hand it
 * over: the user's buffer, or the connection's own when it names none.
 * Returns the bytes taken. */
static size_t deliver(qx_exchange_t *ex, const uint8_t *p, size_t n)
{
    qx_upconn_t *uc = qx_h1_up_conn(&ex->ups);
    uv_buf_t b = {.base = NULL, .len = 0};
    if (uc->cb->read_buf)
        uc->cb->read_buf(uc->user, &b);
    if (b.len == 0)
        b = uv_buf_init(uc->rbuf, sizeof(uc->rbuf));
    n = QX_MIN(n, b.len);
    memcpy(b.base, p, n);
    uc->cb->on_read(uc->user, (ssize_t)n, b.base);
    return n;
}

/* ---- the target ----------------------------------------------------------- */

static fuzz_env_t *env;

static void setup(void)
{
    char yaml[1024];
    struct sockaddr_in sin = {.sin_family = AF_INET};
    uint16_t port = fuzz_env_closed_port();
    snprintf(yaml, sizeof(yaml),
             "server:\n"
             "  listen: \"127.0.0.1:4433\"\n"
             "  cert: \"%%CERT%%\"\n"
             "  key: \"%%KEY%%\"\n"
             "  workers: 1\n"
             "  limits:\n"
             "    max_upstream_response_body_bytes: 1048576\n"
             "routes:\n"
             "  - match: \"*\"\n"
             "    upstream: \"127.0.0.1:%u\"\n",
             port);
    env = fuzz_env_new(yaml);
    uv_tcp_init(&env->w.ctx.loop, &listener);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons(port);
    if (uv_tcp_bind(&listener, (const struct sockaddr *)&sin, 0) != 0 ||
        uv_listen((uv_stream_t *)&listener, 128, up_accept) != 0)
        abort();
}

static void header(qx_exchange_t *ex, const char *name, const char *value)
{
    qx_exchange_header(ex, name, strlen(name), value, strlen(value));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const methods[] = {"GET", "HEAD", "POST"};
    if (env == NULL)
        setup();
    if (size < 2)
        return 0;
    const char *method = methods[data[0] % 3];
    size_t step = data[1];
    const uint8_t *resp = data + 2;
    size_t len = size - 2, off = 0;

    front_t f = {.lazy = (data[0] / 3) & 1};
    struct sockaddr_in client = {.sin_family = AF_INET, .sin_port = htons(50000)};
    client.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    qx_exchange_t *ex =
        qx_exchange_new(&env->w.ctx, &fops, &f, 0, (const struct sockaddr *)&client);
    if (ex == NULL)
        abort();
    header(ex, ":method", method);
    header(ex, ":scheme", "https");
    header(ex, ":authority", "localhost");
    header(ex, ":path", "/fuzz");
    int post = method[0] == 'P';
    if (post)
        header(ex, "content-length", "5");
    qx_exchange_headers_done(ex, NULL, !post);
    if (post) {
        qx_exchange_body(ex, (const uint8_t *)"hello", 5);
        qx_exchange_body_end(ex);
    }
    /* The connect and the request go through the loop; then the response
     * goes in read by read while the exchange reads, EOF after it. Once
     * all of it is in, the exchange must end within a few turns (a hang
     * is a finding). */
    int eof = 0, turns = 0;
    while (!(f.eof || f.aborted || (ex->state == QX_EX_DONE && !reading(ex)))) {
        if (reading(ex) && off < len) {
            off += deliver(ex, resp + off, step ? QX_MIN(step, len - off) : len - off);
            continue;
        }
        if (reading(ex) && !eof) {
            qx_upconn_t *uc = qx_h1_up_conn(&ex->ups);
            eof = 1;
            uc->cb->on_read(uc->user, UV_EOF, NULL);
            continue;
        }
        if (f.responded)
            f_drain(ex); /* paused on a full window, or the rest of the body */
        if (qx_h1_up_conn(&ex->ups) != NULL &&
            qx_h1_up_conn(&ex->ups)->state == QX_UC_CONNECTING) {
            uv_run(&env->w.ctx.loop, UV_RUN_ONCE); /* the connect completes */
            continue;
        }
        if (++turns > 1000)
            __builtin_trap(); /* nothing reads, nothing ends */
        uv_run(&env->w.ctx.loop, UV_RUN_NOWAIT);
    }
    if (f.responded && !f.aborted)
        f_drain(ex);
    if (!f.responded && !f.aborted)
        __builtin_trap(); /* the client heard nothing */
    qx_exchange_front_closed(ex, !(f.eof && !f.aborted));
    /* No connection carries over to the next input. */
    qx_pool_close_idle(env->w.ctx.pools[0]);
    for (int i = 0; i < UP_CONNS; i++)
        up_close(&ups[i]);
    for (turns = 0; nopen > 0 || turns < 2; turns++)
        uv_run(&env->w.ctx.loop, UV_RUN_NOWAIT);
    return 0;
}
