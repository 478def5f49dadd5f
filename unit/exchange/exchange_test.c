/*
 * exchange_test.c - the exchange (proxy/exchange/exchange.c) between a
 * fake front (a qx_front_ops_t that records what reaches it and drains
 * the response as a client would) and a fake upstream codec (a
 * qx_upstream_ops_t the test drives: it answers through the sink the
 * exchange gives it). Each case asserts the state the exchange walks, the
 * two windows (what the front was credited, what the codec was handed)
 * and what the front and the metrics saw.
 *
 * The worker is a context built by hand (context.h): a real loop, a
 * snapshot from a real config and one pool (never connected: the fake
 * codec does not use it).
 */
#include "base/qx.h"

/* The exchange takes its codec from qx_upstream_ops_for(): here, the fake. */
#define qx_upstream_ops_for fake_ops_for
#include "exchange/exchange.c"
#undef qx_upstream_ops_for

#include "config/config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the fake front ----------------------------------------------------- */

typedef struct fake_front {
    int responds, status, has_body;
    const qx_hdr_t *hdrs;
    size_t nhdrs;
    int resumes;
    uint64_t consumed; /* request body bytes credited to the client */
    int stopped;
    int aborts;
    int drain; /* take response bytes as they come (else they stay in the window) */
    char body[256 * 1024];
    size_t bodylen;
    int eof;
} fake_front_t;

static fake_front_t F;

static void front_take(qx_exchange_t *ex)
{
    struct iovec iov[2];
    int k = qx_ring_peek(&ex->resp, iov, SIZE_MAX);
    size_t total = 0;
    for (int i = 0; i < k; i++) {
        assert_true(F.bodylen + iov[i].iov_len <= sizeof(F.body));
        memcpy(F.body + F.bodylen, iov[i].iov_base, iov[i].iov_len);
        F.bodylen += iov[i].iov_len;
        total += iov[i].iov_len;
    }
    qx_ring_mark_sent(&ex->resp, total);
    qx_exchange_resp_acked(ex, total);
    if (ex->resp_eof && qx_ring_unsent(&ex->resp) == 0)
        F.eof = 1;
}

static int f_respond(qx_exchange_t *ex, int status, const qx_hdr_t *hdrs, size_t n, int has_body)
{
    F.responds++;
    F.status = status;
    F.hdrs = hdrs;
    F.nhdrs = n;
    F.has_body = has_body;
    if (!has_body)
        F.eof = 1;
    else if (F.drain)
        front_take(ex);
    return 0;
}

static void f_resume(qx_exchange_t *ex)
{
    F.resumes++;
    if (F.drain)
        front_take(ex);
}

static void f_consumed(qx_exchange_t *ex, size_t n)
{
    (void)ex;
    F.consumed += n;
}

static void f_stop_reading(qx_exchange_t *ex)
{
    (void)ex;
    F.stopped++;
}

static void f_abort(qx_exchange_t *ex)
{
    (void)ex;
    F.aborts++;
}

static const qx_front_ops_t front_ops = {
    .proto = "h2",
    .proto_idx = QX_P_H2,
    .respond = f_respond,
    .resume = f_resume,
    .consumed = f_consumed,
    .stop_reading = f_stop_reading,
    .abort = f_abort,
};

/* ---- the fake upstream codec -------------------------------------------- */

typedef struct fake_up {
    int opens, connects, starts, sends, windows, rewinds, releases;
    int connect_rv; /* what connect() returns */
    int reused;     /* ... and says of the connection */
    int writes;     /* send() takes every unsent request byte ("writes" it) */
    qx_up_stream_t *st;
    char method[16];
    int is_head;
    int64_t content_length;
    uint8_t up[256 * 1024]; /* the request body as it reached the "upstream" */
    size_t uplen;
} fake_up_t;

static fake_up_t U;

static int u_open(qx_up_stream_t *st, const qx_up_req_t *req, qx_arena_t *arena)
{
    (void)arena;
    U.opens++;
    U.st = st;
    snprintf(U.method, sizeof(U.method), "%.*s", (int)req->methodlen, req->method);
    U.is_head = req->is_head;
    U.content_length = req->content_length;
    return 0;
}

static int u_connect(qx_up_stream_t *st, qx_pool_t *pool, int fresh_only, int *reused)
{
    (void)st;
    (void)fresh_only;
    assert_non_null(pool);
    U.connects++;
    *reused = U.reused;
    return U.connect_rv;
}

/* Writes what the request window holds: every unsent byte goes up at once
 * and is credited back through the sink. */
static void u_write(qx_up_stream_t *st, size_t max)
{
    struct iovec iov[2];
    int k = qx_ring_peek(st->req, iov, max);
    size_t n = 0;
    for (int i = 0; i < k; i++) {
        memcpy(U.up + U.uplen, iov[i].iov_base, iov[i].iov_len);
        U.uplen += iov[i].iov_len;
        n += iov[i].iov_len;
    }
    qx_ring_mark_sent(st->req, n);
    qx_ring_mark_acked(st->req, n);
    if (n > 0)
        st->sink->consumed(st->user, n);
}

static void u_start(qx_up_stream_t *st)
{
    U.starts++;
    if (U.writes)
        u_write(st, SIZE_MAX);
}

static void u_send(qx_up_stream_t *st)
{
    U.sends++;
    if (U.writes)
        u_write(st, SIZE_MAX);
}

static int u_window(qx_up_stream_t *st)
{
    (void)st;
    U.windows++;
    return 0;
}

static void u_rewind(qx_up_stream_t *st)
{
    (void)st;
    U.rewinds++;
}

static void u_release(qx_up_stream_t *st)
{
    (void)st;
    U.releases++;
}

static const qx_upstream_ops_t fake_up_ops = {
    .proto = "fake",
    .open = u_open,
    .connect = u_connect,
    .start = u_start,
    .send = u_send,
    .window = u_window,
    .rewind = u_rewind,
    .release = u_release,
};

const qx_upstream_ops_t *fake_ops_for(const qx_endpoint_t *ep)
{
    assert_non_null(ep);
    return &fake_up_ops;
}

/* The upstream's answer through the sink, as a codec gives it. */
static int up_answer_head(int status, int64_t clen)
{
    static const qx_hdr_t hdrs[] = {{"content-type", 12, "text/plain", 10}};
    int has_body = clen != 0;
    return U.st->sink->head(U.st->user, status, hdrs, 1, has_body, clen);
}

static void up_answer_body(const char *s, size_t n)
{
    assert_true(n <= qx_ring_free(U.st->resp));
    qx_ring_write(U.st->resp, (const uint8_t *)s, n);
    U.st->sink->body(U.st->user, n);
}

/* ---- the worker --------------------------------------------------------- */

static qx_wctx_t W;
static qx_shared_t shared;

static const char yaml[] = "server:\n"
                           "  listen: \"127.0.0.1:4433\"\n"
                           "  cert: \"fuzz/cert.pem\"\n"
                           "  key: \"fuzz/key.pem\"\n"
                           "  workers: 1\n"
                           "  limits:\n"
                           "    max_request_body_bytes: 200000\n"
                           "routes:\n"
                           "  - match: \"*\"\n"
                           "    upstream: \"127.0.0.1:9\"\n";

static void w_maybe_done(qx_wctx_t *w)
{
    (void)w;
}

static qx_pool_t *w_pool_find(qx_wctx_t *w, const struct sockaddr *addr, socklen_t len)
{
    (void)w;
    (void)addr;
    (void)len;
    return NULL; /* only for a snapshot older than the worker's */
}

static int setup(void **state)
{
    (void)state;
    char err[256] = "";
    qx_config_t *cfg = NULL;
    qx_snapshot_t *snap = NULL;
    memset(&F, 0, sizeof(F));
    memset(&U, 0, sizeof(U));
    memset(&W, 0, sizeof(W));
    F.drain = 1;
    U.writes = 1;
    U.reused = 1;
    qx_log_level = QX_LOG_ERROR;
    if (qx_config_load_buf(yaml, strlen(yaml), NULL, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "config: %s\n", err);
        return -1;
    }
    if (qx_snapshot_new(&snap, cfg, 1, NULL, NULL) != 0)
        return -1;
    assert_int_equal(uv_loop_init(&W.loop), 0);
    W.shared = &shared;
    W.snap = snap;
    W.state = QX_W_RUNNING;
    W.maybe_done = w_maybe_done;
    W.pool_find = w_pool_find;
    W.pools = calloc(snap->neps, sizeof(*W.pools));
    assert_non_null(W.pools);
    assert_int_equal(qx_pool_new(&W.pools[0], &W.loop, (const struct sockaddr *)&snap->eps[0].addr,
                                 snap->eps[0].addrlen, 4, 60000, NULL),
                     0);
    assert_int_equal(qx_defer_init(&W.defer, &W.loop), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    qx_defer_close(&W.defer);
    qx_pool_del(W.pools[0]);
    uv_run(&W.loop, UV_RUN_DEFAULT);
    assert_int_equal(W.nexchanges, 0);
    qx_exchange_cache_free(&W);
    assert_int_equal(uv_loop_close(&W.loop), 0);
    free(W.pools);
    qx_snapshot_unref(W.snap);
    qx_metrics_free(&W.metrics);
    return 0;
}

/* One loop turn: the deferred-work queue runs the pumps (dispatch,
 * request bodies upstream). */
static void turn(void)
{
    uv_run(&W.loop, UV_RUN_NOWAIT);
}

static qx_exchange_t *request(const char *method, const char *clen, int fin)
{
    struct sockaddr_in client = {.sin_family = AF_INET, .sin_port = htons(50000)};
    client.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    qx_exchange_t *ex = qx_exchange_new(&W, &front_ops, &F, 0, (const struct sockaddr *)&client);
    assert_non_null(ex);
    assert_int_equal(ex->state, QX_EX_HEAD);
    assert_int_equal(qx_exchange_header(ex, ":method", 7, method, strlen(method)), 0);
    assert_int_equal(qx_exchange_header(ex, ":scheme", 7, "https", 5), 0);
    assert_int_equal(qx_exchange_header(ex, ":authority", 10, "localhost", 9), 0);
    assert_int_equal(qx_exchange_header(ex, ":path", 5, "/t", 2), 0);
    if (clen)
        assert_int_equal(qx_exchange_header(ex, "content-length", 14, clen, strlen(clen)), 0);
    qx_exchange_headers_done(ex, NULL, fin);
    return ex;
}

static void body_pattern(uint8_t *p, size_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)((off + i) * 7 + 3);
}

/* ---- the cases ---------------------------------------------------------- */

/* GET answered 200 with a body: HEAD -> UPSTREAM (a kept-alive
 * connection) -> RESPONSE -> DONE -> CLOSED; the body reaches the front
 * whole and the response window is empty at the end. */
static void test_get_200(void **state)
{
    (void)state;
    qx_exchange_t *ex = request("GET", NULL, 1);
    /* Routed; the upstream is asked for at the pump, not at once. */
    assert_int_equal(U.opens, 1);
    assert_string_equal(U.method, "GET");
    assert_int_equal(U.connects, 0);
    assert_int_equal(ex->state, QX_EX_HEAD);
    turn();
    assert_int_equal(U.connects, 1);
    assert_int_equal(U.starts, 1);
    assert_int_equal(ex->state, QX_EX_UPSTREAM);
    assert_int_equal(U.st->req_fin, 1);

    assert_int_equal(up_answer_head(200, 11), 0);
    assert_int_equal(ex->state, QX_EX_RESPONSE);
    assert_int_equal(F.responds, 1);
    assert_int_equal(F.status, 200);
    assert_int_equal(F.has_body, 1);
    assert_int_equal(F.nhdrs, 1);
    assert_true(U.st->resp_fits); /* 11 bytes: the window holds the whole body */
    up_answer_body("hello ", 6);
    up_answer_body("world", 5);
    assert_int_equal(F.bodylen, 11);
    assert_int_equal(F.eof, 0);
    U.st->sink->end(U.st->user, NULL, 0);
    assert_int_equal(ex->state, QX_EX_DONE);
    assert_int_equal(F.eof, 1);
    assert_memory_equal(F.body, "hello world", 11);
    assert_int_equal(qx_ring_unsent(&ex->resp), 0);
    assert_int_equal(ex->resp.ack, 11);

    qx_exchange_front_closed(ex, 0);
    assert_int_equal(U.releases, 1);
    assert_int_equal(W.metrics.bytes_out, 11);
    assert_int_equal(W.metrics.streams_reset_by_client, 0);
    assert_int_equal(F.aborts, 0);
    turn(); /* the timer closes: the exchange goes to the cache */
    assert_int_equal(W.nexchanges, 0);
    assert_int_equal(((ex_local_t *)W.ex_local)->ncache, 1);
}

/* A POST body larger than the window: the front hands in what the window
 * takes, is credited only as bytes go up, and the bytes reach the
 * upstream in order and whole. */
static void test_post_window(void **state)
{
    (void)state;
    static uint8_t body[100000];
    body_pattern(body, 0, sizeof(body));
    U.writes = 0; /* the upstream takes bytes only when the test says */
    qx_exchange_t *ex = request("POST", "100000", 0);
    assert_int_equal(ex->req.cap, QX_STREAM_WINDOW);
    turn();
    assert_int_equal(ex->state, QX_EX_UPSTREAM);

    /* The window fills; nothing is credited before it goes up. */
    qx_exchange_body(ex, body, QX_STREAM_WINDOW);
    assert_int_equal(qx_ring_free(&ex->req), 0);
    assert_int_equal(F.consumed, 0);
    int sends = U.sends;
    turn();
    assert_int_equal(U.sends, sends + 1); /* the pump offered the bytes */
    assert_int_equal(F.consumed, 0);

    /* 40000 bytes go up: exactly those are credited, that room opens. */
    u_write(U.st, 40000);
    assert_int_equal(F.consumed, 40000);
    assert_int_equal(qx_ring_free(&ex->req), 40000);

    /* The rest of the body, then its end; now the upstream takes all. */
    U.writes = 1;
    qx_exchange_body(ex, body + QX_STREAM_WINDOW, 20000);
    qx_exchange_body(ex, body + QX_STREAM_WINDOW + 20000,
                     sizeof(body) - QX_STREAM_WINDOW - 20000); /* 14464: within the room */
    qx_exchange_body_end(ex);
    turn();
    assert_int_equal(U.st->req_fin, 1);
    assert_int_equal(F.consumed, sizeof(body));
    assert_int_equal(U.uplen, sizeof(body));
    assert_memory_equal(U.up, body, sizeof(body));
    assert_int_equal(qx_ring_free(&ex->req), QX_STREAM_WINDOW);
    assert_int_equal(ex->state, QX_EX_UPSTREAM);

    assert_int_equal(up_answer_head(204, 0), 0);
    assert_int_equal(F.status, 204);
    assert_int_equal(F.has_body, 0);
    U.st->sink->end(U.st->user, NULL, 0);
    assert_int_equal(ex->state, QX_EX_DONE);
    qx_exchange_front_closed(ex, 0);
    assert_int_equal(W.metrics.bytes_in, sizeof(body));
}

/* The upstream answers 413 before the request body is through: the
 * response goes to the client, what the window held is credited at once,
 * and what still comes is read, credited and dropped, never sent up. */
static void test_early_answer_discards_body(void **state)
{
    (void)state;
    static uint8_t body[50000];
    body_pattern(body, 0, sizeof(body));
    U.writes = 0;
    qx_exchange_t *ex = request("POST", "100000", 0);
    turn();
    qx_exchange_body(ex, body, 30000);
    assert_int_equal(F.consumed, 0);

    assert_int_equal(up_answer_head(413, 9), 0);
    up_answer_body("too large", 9);
    U.st->sink->end(U.st->user, NULL, 0);
    assert_int_equal(ex->state, QX_EX_DONE);
    assert_int_equal(F.status, 413);
    assert_int_equal(F.eof, 1);
    assert_memory_equal(F.body, "too large", 9);
    assert_true(ex->req_discard);
    assert_int_equal(F.consumed, 30000); /* the window's bytes, credited */

    /* More body: credited and dropped; the upstream is offered nothing. */
    int sends = U.sends;
    qx_exchange_body(ex, body + 30000, 20000);
    assert_int_equal(F.consumed, 50000);
    turn();
    assert_int_equal(U.sends, sends);
    assert_int_equal(U.uplen, 0);
    assert_int_equal(F.stopped, 0); /* under QX_DISCARD_MAX: no STOP_SENDING */

    qx_exchange_front_closed(ex, 0);
    assert_int_equal(W.metrics.bytes_in, 30000); /* dropped bytes are not the request's */
    assert_int_equal(W.metrics.streams_reset_by_client, 0);
}

/* Our own 413 at the head: a content-length over the limit never opens
 * an upstream stream; the body that comes anyway is credited and dropped. */
static void test_own_413(void **state)
{
    (void)state;
    static uint8_t body[1000];
    qx_exchange_t *ex = request("POST", "300000", 0);
    assert_int_equal(ex->state, QX_EX_DONE);
    assert_int_equal(U.opens, 0);
    assert_int_equal(F.status, 413);
    assert_int_equal(F.eof, 1);
    assert_memory_equal(F.body, "413 Content Too Large\n", F.bodylen);
    assert_int_equal(W.metrics.request_body_rejected, 1);
    qx_exchange_body(ex, body, sizeof(body));
    assert_int_equal(F.consumed, sizeof(body));
    turn();
    assert_int_equal(U.connects, 0);
    qx_exchange_front_closed(ex, 0);
}

/* A new connection that fails before any byte: CONNECTING -> DONE with a
 * 502 of our own (the route has no other endpoint to try). */
static void test_connect_refused_502(void **state)
{
    (void)state;
    U.reused = 0;
    qx_exchange_t *ex = request("GET", NULL, 1);
    turn();
    assert_int_equal(ex->state, QX_EX_CONNECTING);
    assert_int_equal(U.starts, 0);
    U.st->sink->connected(U.st->user, UV_ECONNREFUSED);
    assert_int_equal(ex->state, QX_EX_DONE);
    assert_int_equal(F.responds, 1);
    assert_int_equal(F.status, 502);
    assert_int_equal(F.aborts, 0);
    assert_memory_equal(F.body, "502 Bad Gateway\n", F.bodylen);
    assert_true(U.releases >= 1);
    qx_metrics_up_row_t *row = up_row(ex);
    assert_int_equal(row->connect_errors, 1);
    qx_exchange_front_closed(ex, 0);
}

/* A reused connection that breaks before any reply: replayed once on a
 * fresh connection (UPSTREAM -> CONNECTING); broken again (the fresh one
 * is not retried), the answer is 502. */
static void test_broken_reused_retried_then_502(void **state)
{
    (void)state;
    qx_exchange_t *ex = request("GET", NULL, 1);
    turn();
    assert_int_equal(ex->state, QX_EX_UPSTREAM);
    U.reused = 0;
    U.st->sink->error(U.st->user, QX_UP_E_BROKEN, QX_UP_REPLAY_IDEMPOTENT, "closed");
    assert_int_equal(U.rewinds, 1);
    assert_int_equal(U.connects, 2);
    assert_int_equal(ex->state, QX_EX_CONNECTING);
    assert_int_equal(F.responds, 0);
    U.st->sink->connected(U.st->user, 0);
    assert_int_equal(ex->state, QX_EX_UPSTREAM);
    U.st->sink->error(U.st->user, QX_UP_E_BROKEN, QX_UP_REPLAY_ANY, "closed");
    assert_int_equal(U.rewinds, 1);
    assert_int_equal(ex->state, QX_EX_DONE);
    assert_int_equal(F.status, 502);
    assert_int_equal(up_row(ex)->protocol_errors, 1);
    qx_exchange_front_closed(ex, 0);
}

/* A POST (not idempotent) whose head may have reached the app is never
 * sent twice. */
static void test_post_not_replayed(void **state)
{
    (void)state;
    qx_exchange_t *ex = request("POST", "0", 1);
    turn();
    U.st->sink->error(U.st->user, QX_UP_E_BROKEN, QX_UP_REPLAY_IDEMPOTENT, "closed");
    assert_int_equal(U.rewinds, 0);
    assert_int_equal(U.connects, 1);
    assert_int_equal(F.status, 502);
    qx_exchange_front_closed(ex, 0);
}

/* The front goes away mid-response: CLOSED at once, the upstream stream is
 * released (its connection mid-message), nothing more reaches the front,
 * and the client's reset is counted. */
static void test_front_closed_mid_response(void **state)
{
    (void)state;
    static char chunk[4000];
    memset(chunk, 'x', sizeof(chunk));
    F.drain = 0;
    qx_exchange_t *ex = request("GET", NULL, 1);
    turn();
    assert_int_equal(up_answer_head(200, 100000), 0);
    assert_int_equal(ex->state, QX_EX_RESPONSE);
    assert_false(U.st->resp_fits);
    up_answer_body(chunk, sizeof(chunk));
    int resumes = F.resumes;
    assert_int_equal(qx_ring_unsent(&ex->resp), sizeof(chunk));
    assert_int_equal(U.releases, 0);

    qx_exchange_front_closed(ex, 1);
    assert_int_equal(ex->state, QX_EX_CLOSED);
    assert_int_equal(U.releases, 1);
    assert_int_equal(W.metrics.streams_reset_by_client, 1);
    assert_int_equal(F.resumes, resumes);
    assert_int_equal(F.aborts, 0);
    turn();
    assert_int_equal(W.nexchanges, 0);
}

/* The upstream's response is refused by the codec after the head went
 * out (here: its body passed the cap): RESPONSE -> ABORTED, the front's
 * stream is reset, once. */
static void test_too_big_after_head_aborts(void **state)
{
    (void)state;
    qx_exchange_t *ex = request("GET", NULL, 1);
    turn();
    assert_int_equal(up_answer_head(200, -1), 0);
    up_answer_body("abc", 3);
    U.st->sink->error(U.st->user, QX_UP_E_TOO_BIG, QX_UP_REPLAY_NONE, "too big");
    assert_int_equal(ex->state, QX_EX_ABORTED);
    assert_int_equal(F.aborts, 1);
    assert_int_equal(up_row(ex)->body_over_limit, 1);
    assert_true(ex->resp_eof);
    qx_exchange_front_closed(ex, 1);
    assert_int_equal(W.metrics.streams_reset_by_client, 0); /* we reset it, not the client */
}

/* Response trailers from the codec (sink->end's) are copied for the
 * front, which sends them after the last body byte; grpc-status is noted
 * for the access log. Request trailers are filtered and handed to the
 * codec before it sees the end of the body. */
static void test_trailers_both_ways(void **state)
{
    (void)state;
    qx_exchange_t *ex = request("POST", NULL, 0);
    turn();
    assert_int_equal(ex->state, QX_EX_UPSTREAM);
    qx_exchange_body(ex, (const uint8_t *)"abc", 3);
    assert_int_equal(qx_exchange_trailer(ex, "x-sum", 5, "3", 1), 0);
    assert_int_equal(qx_exchange_trailer(ex, "content-length", 14, "3", 1), 0);
    assert_null(U.st->req_trailers); /* not before the end */
    qx_exchange_body_end(ex);
    assert_int_equal(U.st->req_fin, 1);
    assert_int_equal(U.st->nreq_trailers, 1); /* content-length is no trailer */
    assert_memory_equal(U.st->req_trailers[0].name, "x-sum", 5);

    assert_int_equal(up_answer_head(200, -1), 0);
    up_answer_body("ok", 2);
    char tr_status[] = "0"; /* the codec's storage: valid during the call only */
    qx_hdr_t tr[] = {{"Grpc-Status", 11, tr_status, 1},
                     {"content-length", 14, "2", 1},
                     {"grpc-message", 12, "", 0}};
    U.st->sink->end(U.st->user, tr, 3);
    tr_status[0] = 'X';
    assert_int_equal(ex->state, QX_EX_DONE);
    assert_int_equal(ex->nresp_trailers, 2); /* content-length is no trailer */
    assert_memory_equal(ex->resp_trailers[0].name, "grpc-status", 11); /* lowercased copy */
    assert_memory_equal(ex->resp_trailers[0].value, "0", 1);
    assert_memory_equal(ex->resp_trailers[1].name, "grpc-message", 12);
    assert_int_equal(ex->grpc_statuslen, 1);
    assert_memory_equal(ex->grpc_status, "0", 1);
    assert_int_equal(F.eof, 1);
    qx_exchange_front_closed(ex, 0);
    turn();
}

static const qx_front_ops_t h1_front_ops = {
    .proto = "h1",
    .proto_idx = QX_P_H1,
    .respond = f_respond,
    .resume = f_resume,
    .consumed = f_consumed,
    .stop_reading = f_stop_reading,
    .abort = f_abort,
};

/* gRPC over HTTP/1.1 cannot carry its trailers: 415 before any upstream. */
static void test_grpc_over_h1_415(void **state)
{
    (void)state;
    struct sockaddr_in client = {.sin_family = AF_INET, .sin_port = htons(50000)};
    client.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    qx_exchange_t *ex = qx_exchange_new(&W, &h1_front_ops, &F, 0, (const struct sockaddr *)&client);
    assert_non_null(ex);
    assert_int_equal(qx_exchange_header(ex, ":method", 7, "POST", 4), 0);
    assert_int_equal(qx_exchange_header(ex, ":scheme", 7, "https", 5), 0);
    assert_int_equal(qx_exchange_header(ex, ":authority", 10, "localhost", 9), 0);
    assert_int_equal(qx_exchange_header(ex, ":path", 5, "/s/M", 4), 0);
    assert_int_equal(qx_exchange_header(ex, "content-type", 12, "application/grpc+proto", 22), 0);
    qx_exchange_headers_done(ex, NULL, 1);
    assert_int_equal(F.status, 415);
    assert_int_equal(ex->state, QX_EX_DONE);
    assert_non_null(strstr(F.body, "gRPC needs HTTP/2 or HTTP/3"));
    turn();
    assert_int_equal(U.connects, 0);
    qx_exchange_front_closed(ex, 0);
    turn();
}

/* grpc-timeout is the deadline: with no response by then the call ends
 * with a trailers-only response, grpc-status 4, and the upstream stream is
 * released. A content-type that only starts like gRPC's is not gRPC. */
static void test_grpc_timeout(void **state)
{
    (void)state;
    assert_int_equal(grpc_timeout_ms("100m", 4), 100);
    assert_int_equal(grpc_timeout_ms("2S", 2), 2000);
    assert_int_equal(grpc_timeout_ms("1H", 2), 3600000);
    assert_int_equal(grpc_timeout_ms("5u", 2), 1);          /* under a millisecond: 1 */
    assert_int_equal(grpc_timeout_ms("123456789S", 10), 0); /* 9 digits: not a timeout */
    assert_int_equal(grpc_timeout_ms("10x", 3), 0);
    assert_int_equal(grpc_timeout_ms("S", 1), 0);

    struct sockaddr_in client = {.sin_family = AF_INET, .sin_port = htons(50000)};
    client.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    qx_exchange_t *ex = qx_exchange_new(&W, &front_ops, &F, 0, (const struct sockaddr *)&client);
    assert_non_null(ex);
    assert_int_equal(qx_exchange_header(ex, ":method", 7, "POST", 4), 0);
    assert_int_equal(qx_exchange_header(ex, ":scheme", 7, "https", 5), 0);
    assert_int_equal(qx_exchange_header(ex, ":authority", 10, "localhost", 9), 0);
    assert_int_equal(qx_exchange_header(ex, ":path", 5, "/s/M", 4), 0);
    assert_int_equal(qx_exchange_header(ex, "content-type", 12, "application/grpc", 16), 0);
    assert_int_equal(qx_exchange_header(ex, "grpc-timeout", 12, "30m", 3), 0);
    qx_exchange_headers_done(ex, NULL, 1);
    assert_int_equal(ex->grpc, 1);
    turn();
    assert_int_equal(ex->state, QX_EX_UPSTREAM);
    uint64_t t0 = uv_now(&W.loop);
    while (F.responds == 0 && uv_now(&W.loop) - t0 < 5000)
        uv_run(&W.loop, UV_RUN_ONCE);
    assert_int_equal(F.responds, 1);
    assert_int_equal(F.status, 200);
    assert_int_equal(F.has_body, 0);
    int found = 0;
    for (size_t i = 0; i < F.nhdrs; i++)
        if (F.hdrs[i].namelen == 11 && memcmp(F.hdrs[i].name, "grpc-status", 11) == 0 &&
            F.hdrs[i].valuelen == 1 && F.hdrs[i].value[0] == '4')
            found = 1;
    assert_true(found);
    assert_true(uv_now(&W.loop) - t0 < 1000); /* the deadline, not the route's 120 s */
    assert_int_equal(U.releases, 1);
    assert_int_equal(ex->state, QX_EX_DONE);
    qx_exchange_front_closed(ex, 0);
    turn();

    /* application/grpcx is another type: no deadline taken from it. */
    ex = qx_exchange_new(&W, &front_ops, &F, 4, (const struct sockaddr *)&client);
    assert_int_equal(qx_exchange_header(ex, ":method", 7, "POST", 4), 0);
    assert_int_equal(qx_exchange_header(ex, ":scheme", 7, "https", 5), 0);
    assert_int_equal(qx_exchange_header(ex, ":authority", 10, "localhost", 9), 0);
    assert_int_equal(qx_exchange_header(ex, ":path", 5, "/s/M", 4), 0);
    assert_int_equal(qx_exchange_header(ex, "content-type", 12, "application/grpcx", 17), 0);
    assert_int_equal(qx_exchange_header(ex, "grpc-timeout", 12, "30m", 3), 0);
    qx_exchange_headers_done(ex, NULL, 1);
    assert_int_equal(ex->grpc, 0);
    assert_int_equal(ex->deadline_ms, 0);
    qx_exchange_front_closed(ex, 0);
    turn();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get_200, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trailers_both_ways, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grpc_over_h1_415, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grpc_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_early_answer_discards_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_own_413, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_refused_502, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broken_reused_retried_then_502, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_not_replayed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_front_closed_mid_response, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_big_after_head_aborts, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
