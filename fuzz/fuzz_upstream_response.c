/*
 * fuzz_upstream_response.c - what an upstream answers, through the whole
 * response path of an exchange: the pool's connection, qrux's llhttp
 * callbacks (status, fields, hop-by-hop filtering, framing, 1xx, the
 * header and body caps), the response window and the front ops. A fake
 * front (the ops below) takes the head and drains the body as a client
 * that reads everything would; the upstream is a listener on the worker's
 * own loop that writes the input in pieces whose sizes come from the input
 * and then closes.
 *
 * Input: byte 0: the request method (GET, HEAD, POST with a body);
 * byte 1: the piece size (0: one write); then the response bytes.
 * Checks: the front is answered exactly once (a head, a local error or an
 * abort), never more body than the window held, and the exchange ends
 * within a bounded number of loop turns.
 */
#include "base/qx.h"
#include "base/ring.h"
#include "env.h"
#include "exchange/exchange.h"

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

static void f_resume(qx_exchange_t *ex)
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

typedef struct upstream {
    uv_tcp_t listener;
    const uint8_t *data; /* this input's response */
    size_t len;
    size_t step;
    int conns; /* accepted and not yet closed */
} upstream_t;

typedef struct up_conn {
    uv_tcp_t tcp;
    uv_write_t wr;
    uv_shutdown_t sh;
    upstream_t *u;
    size_t off;
    char rbuf[4096];
} up_conn_t;

static void up_closed(uv_handle_t *h)
{
    up_conn_t *c = h->data;
    c->u->conns--;
    free(c);
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
    if (n < 0 && !uv_is_closing((uv_handle_t *)s))
        uv_close((uv_handle_t *)s, up_closed); /* the request is read and dropped */
}

static void up_write_next(up_conn_t *c);

/* Everything written: the upstream hangs up (close-delimited bodies end
 * here, and no connection outlives its input). */
static void up_shut(uv_shutdown_t *r, int status)
{
    up_conn_t *c = r->data;
    (void)status;
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, up_closed);
}

static void up_written(uv_write_t *r, int status)
{
    up_conn_t *c = r->data;
    if (status != 0 || uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    up_write_next(c);
}

static void up_write_next(up_conn_t *c)
{
    upstream_t *u = c->u;
    if (c->off >= u->len) {
        c->sh.data = c;
        uv_shutdown(&c->sh, (uv_stream_t *)&c->tcp, up_shut);
        return;
    }
    size_t n = u->step ? QX_MIN(u->step, u->len - c->off) : u->len - c->off;
    uv_buf_t b = uv_buf_init((char *)u->data + c->off, (unsigned)n);
    c->off += n;
    c->wr.data = c;
    if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, up_written) != 0)
        uv_close((uv_handle_t *)&c->tcp, up_closed);
}

static void up_accept(uv_stream_t *l, int status)
{
    upstream_t *u = l->data;
    if (status != 0)
        return;
    up_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        abort();
    c->u = u;
    uv_tcp_init(l->loop, &c->tcp);
    c->tcp.data = c;
    u->conns++;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, up_closed);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, up_alloc, up_read);
    up_write_next(c);
}

/* ---- the target ----------------------------------------------------------- */

static fuzz_env_t *env;
static upstream_t up;

static void setup(void)
{
    char yaml[1024];
    struct sockaddr_in sin = {.sin_family = AF_INET};
    int len = sizeof(sin);
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
    uv_tcp_init(&env->w.ctx.loop, &up.listener);
    up.listener.data = &up;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons(port);
    if (uv_tcp_bind(&up.listener, (const struct sockaddr *)&sin, 0) != 0 ||
        uv_listen((uv_stream_t *)&up.listener, 128, up_accept) != 0 ||
        uv_tcp_getsockname(&up.listener, (struct sockaddr *)&sin, &len) != 0)
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
    up.step = data[1];
    up.data = data + 2;
    up.len = size - 2;

    front_t f = {0};
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
    /* A response of at most ~64 KiB in pieces of at least a byte ends in
     * well under 200k turns; a hang is a finding (libFuzzer's -timeout). */
    for (int turns = 0; !(f.eof || f.aborted || ex->state == QX_EX_DONE) || up.conns > 0; turns++) {
        uv_run(&env->w.ctx.loop, UV_RUN_ONCE);
        if (f.responded && !f.eof)
            f_resume(ex);
        if (turns > 200000)
            __builtin_trap();
    }
    if (!f.responded && !f.aborted)
        __builtin_trap(); /* the client heard nothing */
    qx_exchange_front_closed(ex, !(f.eof && !f.aborted));
    /* No pooled connection carries over to the next input. */
    qx_pool_close_idle(env->w.ctx.pools[0]);
    fuzz_env_turns(env, 2);
    return 0;
}
