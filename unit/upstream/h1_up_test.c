/*
 * h1_up_test.c - the HTTP/1.1 upstream codec (proxy/upstream/h1_up.c)
 * through its ops table, on a real pooled connection to a loopback "app"
 * served by the same loop, reporting to a recording sink: the request head
 * and chunk framing on the wire, response fields filtered and lowercased,
 * interim responses skipped, 101 refused, a body read into a short window
 * that pauses and resumes, credit for request body bytes written, a
 * connection given back to the pool only after a whole exchange, and a
 * connection lost before the response reported as replayable.
 *
 * Ends with uv_loop_close() == 0 (STYLE.md §12).
 */
#include "base/arena.h"
#include "base/qx.h"
#include "upstream/h1_up.h"
#include "upstream/pool.h"
#include "upstream/upstream.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TURNS 20000 /* loop turns a wait may take before it is a failure */

/* ---- the app: one accepted connection at a time ------------------------- */

typedef struct app {
    uv_tcp_t listener;
    uv_tcp_t conn;
    int accepted, conn_open, peer_eof;
    char in[8192]; /* what the codec wrote */
    size_t inlen;
    char rbuf[4096];
    uv_write_t wr;
} app_t;

/* ---- what the codec reported -------------------------------------------- */

typedef struct rec {
    int connected, connect_status;
    int progress;
    int heads, status, has_body;
    int64_t clen;
    char fields[1024];  /* "name: value\n" as handed over */
    char trailers[256]; /* the same, of sink->end's trailers */
    int bodies;
    uint64_t body;
    int ends;
    uint64_t consumed;
    int errors, err, replay;
} rec_t;

static uv_loop_t loop;
static app_t A;
static rec_t R;
static qx_pool_t *pool;
static qx_arena_t arena;
static qx_up_stream_t st;
static uint8_t reqbuf[65536], respbuf[65536], *scratch;
static qx_ring_t req, resp;
static struct sockaddr_in app_addr;

static void s_connected(void *user, int status)
{
    (void)user;
    R.connected++;
    R.connect_status = status;
}

static void s_progress(void *user)
{
    (void)user;
    R.progress++;
}

static int s_head(void *user, int status, const qx_hdr_t *hdrs, size_t n, int has_body,
                  int64_t content_length)
{
    (void)user;
    R.heads++;
    R.status = status;
    R.has_body = has_body;
    R.clen = content_length;
    R.fields[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        size_t used = strlen(R.fields);
        snprintf(R.fields + used, sizeof(R.fields) - used, "%.*s: %.*s\n", (int)hdrs[i].namelen,
                 hdrs[i].name, (int)hdrs[i].valuelen, hdrs[i].value);
    }
    if (has_body) {
        resp.data = respbuf;
        resp.cap = sizeof(respbuf); /* QX_STREAM_WINDOW, as the exchange's */
        st.resp_fits = content_length >= 0 && (uint64_t)content_length <= resp.cap;
    }
    return 0;
}

static void s_body(void *user, size_t n)
{
    (void)user;
    R.bodies++;
    R.body += n;
}

static void s_end(void *user, const qx_hdr_t *trailers, size_t ntrailers)
{
    (void)user;
    R.trailers[0] = '\0';
    for (size_t i = 0; i < ntrailers; i++) {
        size_t used = strlen(R.trailers);
        snprintf(R.trailers + used, sizeof(R.trailers) - used, "%.*s: %.*s\n",
                 (int)trailers[i].namelen, trailers[i].name, (int)trailers[i].valuelen,
                 trailers[i].value);
    }
    R.ends++;
}

static void s_consumed(void *user, size_t n)
{
    (void)user;
    R.consumed += n;
}

static void s_error(void *user, int err, int replay, const char *why)
{
    (void)user;
    (void)why;
    R.errors++;
    R.err = err;
    R.replay = replay;
    /* What the exchange does: a broken stream may be replayed (the test
     * decides); anything else ends it. */
    if (err != QX_UP_E_BROKEN)
        st.ops->release(&st);
}

static const qx_up_sink_t sink = {s_connected, s_progress, s_head, s_body,
                                  s_end,       s_consumed, s_error};

/* ---- the app's side ----------------------------------------------------- */

static void app_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)h;
    (void)hint;
    *b = uv_buf_init(A.rbuf, sizeof(A.rbuf));
}

static void app_closed(uv_handle_t *h)
{
    (void)h;
    A.conn_open = 0;
}

static void app_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)s;
    if (n < 0) {
        A.peer_eof = 1;
        return;
    }
    assert_true(A.inlen + (size_t)n < sizeof(A.in));
    memcpy(A.in + A.inlen, b->base, (size_t)n);
    A.inlen += (size_t)n;
    A.in[A.inlen] = '\0';
}

static void app_accept(uv_stream_t *l, int status)
{
    assert_int_equal(status, 0);
    assert_false(A.conn_open); /* one connection at a time in these tests */
    uv_tcp_init(l->loop, &A.conn);
    assert_int_equal(uv_accept(l, (uv_stream_t *)&A.conn), 0);
    A.accepted++;
    A.conn_open = 1;
    A.peer_eof = 0;
    A.inlen = 0;
    uv_read_start((uv_stream_t *)&A.conn, app_alloc, app_read);
}

static void app_send(const char *s)
{
    uv_buf_t b = uv_buf_init((char *)s, (unsigned)strlen(s));
    assert_int_equal(uv_try_write((uv_stream_t *)&A.conn, &b, 1), (int)strlen(s));
}

static void app_hang_up(void)
{
    uv_close((uv_handle_t *)&A.conn, app_closed);
}

/* ---- helpers ------------------------------------------------------------ */

#define RUN_UNTIL(cond)                                                                            \
    do {                                                                                           \
        int turns_ = 0;                                                                            \
        while (!(cond) && turns_++ < TURNS)                                                        \
            uv_run(&loop, UV_RUN_NOWAIT);                                                          \
        assert_true(cond);                                                                         \
    } while (0)

static int setup(void **state)
{
    (void)state;
    memset(&A, 0, sizeof(A));
    memset(&R, 0, sizeof(R));
    assert_int_equal(uv_loop_init(&loop), 0);
    uv_tcp_init(&loop, &A.listener);
    app_addr = (struct sockaddr_in){.sin_family = AF_INET};
    app_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(uv_tcp_bind(&A.listener, (const struct sockaddr *)&app_addr, 0), 0);
    int len = sizeof(app_addr);
    assert_int_equal(uv_tcp_getsockname(&A.listener, (struct sockaddr *)&app_addr, &len), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&A.listener, 16, app_accept), 0);
    assert_int_equal(qx_pool_new(&pool, &loop, (const struct sockaddr *)&app_addr, sizeof(app_addr),
                                 4, 60000, NULL),
                     0);
    qx_arena_init(&arena, 64 * 1024);
    qx_up_stream_init(&st);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (st.ops)
        st.ops->release(&st);
    qx_pool_del(pool);
    if (A.conn_open)
        app_hang_up();
    uv_close((uv_handle_t *)&A.listener, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    qx_up_stream_free(&st);
    qx_arena_free(&arena);
    free(scratch);
    scratch = NULL;
    return 0;
}

/* Opens a request on the stream (the exchange's part), with fresh windows. */
static void open_request(const char *method, int has_body, int64_t clen)
{
    static const qx_hdr_t fields[] = {{"accept", 6, "*/*", 3}};
    qx_up_req_t r = {
        .method = method,
        .methodlen = strlen(method),
        .path = "/x",
        .pathlen = 2,
        .authority = "app.test",
        .authoritylen = 8,
        .hdrs = fields,
        .nhdrs = 1,
        .client_ip = "192.0.2.7",
        .has_body = has_body,
        .content_length = clen,
        .is_head = strcmp(method, "HEAD") == 0,
    };
    req = (qx_ring_t){.data = reqbuf, .cap = sizeof(reqbuf)};
    resp = (qx_ring_t){0};
    st.ops = &qx_h1_upstream_ops;
    st.sink = &sink;
    st.user = &R;
    st.req = &req;
    st.resp = &resp;
    st.scratch = &scratch;
    st.resp_body_max = 1 << 20;
    st.req_fin = !has_body;
    st.resp_fits = 0;
    assert_int_equal(st.ops->open(&st, &r, &arena), 0);
}

/* Connects (a new connection, or the idle one) and starts the request. */
static void connect_and_start(int want_reused)
{
    int reused = -1, before = R.connected;
    assert_int_equal(st.ops->connect(&st, pool, 0, &reused), 0);
    assert_int_equal(reused, want_reused);
    if (!reused) {
        RUN_UNTIL(R.connected == before + 1);
        assert_int_equal(R.connect_status, 0);
    }
    st.ops->start(&st);
}

static size_t drain(void)
{
    size_t n = (size_t)(resp.fill - resp.ack);
    resp.sent = resp.ack = resp.fill;
    return n;
}

/* ---- the cases ---------------------------------------------------------- */

/* A GET: the head on the wire; the response's hop-by-hop fields dropped,
 * names lowercased; the body in the window; the connection back to the
 * pool, and the next request reuses it. */
static void test_get_keepalive(void **state)
{
    (void)state;
    open_request("GET", 0, -1);
    connect_and_start(0);
    RUN_UNTIL(strstr(A.in, "\r\n\r\n") != NULL);
    assert_true(strncmp(A.in, "GET /x HTTP/1.1\r\n", 17) == 0);
    assert_non_null(strstr(A.in, "\r\nHost: app.test\r\n"));
    assert_non_null(strstr(A.in, "\r\naccept: */*\r\n"));
    assert_non_null(strstr(A.in, "X-Forwarded-For: 192.0.2.7\r\n"));
    assert_null(strstr(A.in, "Transfer-Encoding"));

    app_send("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, X-Drop\r\n"
             "X-Drop: 1\r\nKeep-Alive: timeout=5\r\nX-Up: A\r\n\r\nhello");
    RUN_UNTIL(R.ends == 1);
    assert_int_equal(R.heads, 1);
    assert_int_equal(R.status, 200);
    assert_int_equal(R.has_body, 1);
    assert_int_equal(R.clen, 5);
    assert_string_equal(R.fields, "content-length: 5\nx-up: A\n");
    assert_int_equal(R.body, 5);
    assert_memory_equal(respbuf, "hello", 5);
    assert_string_equal(R.trailers, ""); /* none */
    assert_int_equal(R.errors, 0);
    /* Whole request up, whole response back, nothing after it: kept. */
    assert_int_equal(pool->nidle, 1);

    open_request("GET", 0, -1);
    connect_and_start(1);
    RUN_UNTIL(strstr(A.in + 1, "GET /x HTTP/1.1") != NULL);
    app_send("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n");
    RUN_UNTIL(R.ends == 2);
    assert_int_equal(R.status, 304);
    assert_int_equal(R.has_body, 0);
    assert_int_equal(A.accepted, 1);
}

/* A chunked response's trailer section, arriving in pieces, comes with
 * sink->end as written (the user filters it); the body is intact. */
static void test_chunked_trailers(void **state)
{
    (void)state;
    open_request("GET", 0, -1);
    connect_and_start(0);
    RUN_UNTIL(strstr(A.in, "\r\n\r\n") != NULL);
    app_send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nGrpc-St");
    RUN_UNTIL(R.body == 5);
    assert_int_equal(R.ends, 0);
    app_send("atus: 0\r\nx-note: a b\r\n\r\n");
    RUN_UNTIL(R.ends == 1);
    assert_string_equal(R.trailers, "Grpc-Status: 0\nx-note: a b\n");
    assert_memory_equal(respbuf, "hello", 5);
    assert_int_equal(R.errors, 0);
}

/* A body of unknown length goes up chunked, each write one chunk; every
 * byte written is credited; the terminator ends it. */
static void test_post_chunked(void **state)
{
    (void)state;
    open_request("POST", 1, -1);
    connect_and_start(0);
    RUN_UNTIL(strstr(A.in, "\r\n\r\n") != NULL);
    assert_non_null(strstr(A.in, "Transfer-Encoding: chunked\r\n"));
    size_t head = (size_t)(strstr(A.in, "\r\n\r\n") + 4 - A.in);

    qx_ring_write(&req, (const uint8_t *)"abc", 3);
    st.ops->send(&st);
    RUN_UNTIL(A.inlen >= head + 8);
    assert_string_equal(A.in + head, "3\r\nabc\r\n");
    assert_int_equal(R.consumed, 3);
    assert_int_equal(req.ack, 3);

    qx_ring_write(&req, (const uint8_t *)"0123456789abcdefX", 17);
    st.req_fin = 1;
    st.ops->send(&st);
    RUN_UNTIL(A.inlen >= head + 8 + 23 + 5);
    assert_string_equal(A.in + head + 8, "11\r\n0123456789abcdefX\r\n0\r\n\r\n");
    assert_int_equal(R.consumed, 20);

    app_send("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    RUN_UNTIL(R.ends == 1);
    assert_int_equal(R.status, 201);
    assert_int_equal(R.has_body, 0);
    assert_int_equal(pool->nidle, 1);
}

/* 1xx responses are not forwarded; a 204's content-length is dropped. */
static void test_interim_then_204(void **state)
{
    (void)state;
    open_request("GET", 0, -1);
    connect_and_start(0);
    RUN_UNTIL(strstr(A.in, "\r\n\r\n") != NULL);
    app_send("HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
             "HTTP/1.1 204 No Content\r\nContent-Length: 7\r\nX-Final: 1\r\n\r\n");
    RUN_UNTIL(R.ends == 1);
    assert_int_equal(R.heads, 1);
    assert_int_equal(R.status, 204);
    assert_int_equal(R.has_body, 0);
    assert_string_equal(R.fields, "x-final: 1\n");
}

/* No upgrades through the proxy: a 101 is a broken response. */
static void test_101_refused(void **state)
{
    (void)state;
    open_request("GET", 0, -1);
    connect_and_start(0);
    RUN_UNTIL(strstr(A.in, "\r\n\r\n") != NULL);
    app_send("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
    RUN_UNTIL(R.errors == 1);
    assert_int_equal(R.err, QX_UP_E_PROTO);
    assert_int_equal(R.heads, 0);
    st.ops->release(&st);
    assert_int_equal(pool->nidle, 0);
}

/* A response body larger than the window (QX_STREAM_WINDOW, as the
 * exchange's): reading stops while the window is short of room, resumes
 * with window() once drained, and every byte arrives. */
static void test_short_window_pauses(void **state)
{
    (void)state;
    static char body[200000];
    static char msg[sizeof(body) + 128];
    memset(body, 'b', sizeof(body));
    snprintf(msg, sizeof(msg), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%.*s", sizeof(body),
             (int)sizeof(body), body);
    open_request("GET", 0, -1);
    connect_and_start(0);
    RUN_UNTIL(strstr(A.in, "\r\n\r\n") != NULL);
    uv_buf_t b = uv_buf_init(msg, (unsigned)strlen(msg));
    assert_int_equal(uv_write(&A.wr, (uv_stream_t *)&A.conn, &b, 1, NULL), 0);
    RUN_UNTIL(st.paused);
    assert_false(st.resp_fits);
    assert_true(qx_ring_free(&resp) < QX_UP_READ_MIN);
    assert_int_equal(st.ops->window(&st), 0); /* still short: stays paused */
    uint64_t got = drain();
    for (int turns = 0; R.ends == 0 && turns < TURNS; turns++) {
        if (st.paused) {
            assert_int_equal(st.ops->window(&st), 1);
            assert_false(st.paused);
        }
        uv_run(&loop, UV_RUN_NOWAIT);
        got += drain();
    }
    assert_int_equal(R.ends, 1);
    assert_int_equal(got, sizeof(body));
    assert_int_equal(R.body, sizeof(body));
}

/* The app closes before answering: broken, and replayable for idempotent
 * requests only (the head may have reached it). */
static void test_closed_before_response(void **state)
{
    (void)state;
    open_request("GET", 0, -1);
    connect_and_start(0);
    RUN_UNTIL(strstr(A.in, "\r\n\r\n") != NULL);
    app_hang_up();
    RUN_UNTIL(R.errors == 1);
    assert_int_equal(R.err, QX_UP_E_BROKEN);
    assert_int_equal(R.replay, QX_UP_REPLAY_IDEMPOTENT);
    /* The exchange replays it: rewind, then a fresh connection. */
    st.ops->rewind(&st);
    RUN_UNTIL(!A.conn_open);
    connect_and_start(0);
    RUN_UNTIL(A.accepted == 2 && strstr(A.in, "\r\n\r\n") != NULL);
    assert_true(strncmp(A.in, "GET /x HTTP/1.1\r\n", 17) == 0);
    app_send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    RUN_UNTIL(R.ends == 1);
    assert_int_equal(R.body, 2);
}

/* A body over resp_body_max is refused. */
static void test_body_over_cap(void **state)
{
    (void)state;
    open_request("GET", 0, -1);
    st.resp_body_max = 4;
    connect_and_start(0);
    RUN_UNTIL(strstr(A.in, "\r\n\r\n") != NULL);
    app_send("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    RUN_UNTIL(R.errors == 1);
    assert_int_equal(R.err, QX_UP_E_TOO_BIG);
    assert_int_equal(R.heads, 1);
    assert_int_equal(R.ends, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get_keepalive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunked_trailers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_chunked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interim_then_204, setup, teardown),
        cmocka_unit_test_setup_teardown(test_101_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_short_window_pauses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_closed_before_response, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_over_cap, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
