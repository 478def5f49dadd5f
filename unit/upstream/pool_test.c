/*
 * pool_test.c - upstream connections and the idle pool (proxy/upstream/pool.c)
 * against a real loopback listener served by the same uv loop: connect,
 * reuse, close on release, max_idle, eviction of idle sockets the peer
 * closed or wrote to, the idle sweep, refused connects, fresh_only, the
 * metrics gauges, pool deletion with a busy connection, and the queue of
 * requests waiting for a connection.
 *
 * Every test counts its callbacks and ends with uv_loop_close() == 0
 * (STYLE.md §12): a handle the pool forgot to close fails it.
 */
#include "base/metrics.h"
#include "base/qx.h"
#include "upstream/pool.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_SRV 16
#define GUARD_MS 5000 /* a wait longer than this is a failure, not a hang */

typedef struct fixture fixture_t;

/* The server side of one accepted connection. */
typedef struct srvconn {
    uv_tcp_t tcp;
    fixture_t *f;
    int eof;      /* the client closed */
    size_t nread; /* bytes kept in in[] */
    size_t total; /* bytes received */
    char in[256];
    char tmp[256];
} srvconn_t;

/* What a pool user saw. */
typedef struct user {
    int nconnect;
    int connect_status;
    int nwrite;
    int write_status;
    int nreadcb;
    int eof;
    size_t rlen;
    char rbuf[256];
} user_t;

struct fixture {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_tcp_t dead; /* bound, never listening: connects to it are refused */
    uv_timer_t guard;
    uv_timer_t nap;
    int timed_out;
    int napped;
    struct sockaddr_in addr;
    struct sockaddr_in dead_addr;
    srvconn_t *srv[MAX_SRV];
    int nsrv;
    qx_metrics_up_row_t row;
    qx_pool_t *pool;
    int cleaned;
};

/* ---- server side -------------------------------------------------------- */

static void srv_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    srvconn_t *c = qx_container_of(h, srvconn_t, tcp);
    (void)suggested;
    buf->base = c->tmp;
    buf->len = sizeof(c->tmp);
}

static void srv_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    srvconn_t *c = qx_container_of(s, srvconn_t, tcp);
    if (nread < 0) {
        c->eof = 1;
        uv_read_stop(s);
        return;
    }
    c->total += (size_t)nread;
    size_t n = QX_MIN((size_t)nread, sizeof(c->in) - c->nread);
    memcpy(c->in + c->nread, buf->base, n);
    c->nread += n;
}

static void on_connection(uv_stream_t *server, int status)
{
    fixture_t *f = qx_container_of(server, fixture_t, listener);
    assert_int_equal(status, 0);
    assert_true(f->nsrv < MAX_SRV);
    srvconn_t *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->f = f;
    assert_int_equal(uv_tcp_init(&f->loop, &c->tcp), 0);
    f->srv[f->nsrv++] = c;
    assert_int_equal(uv_accept(server, (uv_stream_t *)&c->tcp), 0);
    assert_int_equal(uv_read_start((uv_stream_t *)&c->tcp, srv_alloc, srv_read), 0);
}

static int local_port(const uv_tcp_t *t)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    assert_int_equal(uv_tcp_getsockname(t, (struct sockaddr *)&ss, &len), 0);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static int peer_port(const uv_tcp_t *t)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    assert_int_equal(uv_tcp_getpeername(t, (struct sockaddr *)&ss, &len), 0);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* The accepted connection at the other end of uc. */
static srvconn_t *srv_for(fixture_t *f, qx_upconn_t *uc)
{
    int port = local_port(&uc->tcp);
    for (int i = 0; i < f->nsrv; i++) {
        if (!uv_is_closing((uv_handle_t *)&f->srv[i]->tcp) && peer_port(&f->srv[i]->tcp) == port)
            return f->srv[i];
    }
    fail_msg("no server connection for local port %d", port);
    return NULL;
}

/* ---- the loop ----------------------------------------------------------- */

static void on_guard(uv_timer_t *t)
{
    fixture_t *f = qx_container_of(t, fixture_t, guard);
    f->timed_out = 1;
}

/* Runs the loop until cond holds; fails after GUARD_MS. */
#define RUN_UNTIL(f, cond)                                                                         \
    do {                                                                                           \
        (f)->timed_out = 0;                                                                        \
        uv_timer_start(&(f)->guard, on_guard, GUARD_MS, 0);                                        \
        while (!(cond) && !(f)->timed_out)                                                         \
            uv_run(&(f)->loop, UV_RUN_ONCE);                                                       \
        uv_timer_stop(&(f)->guard);                                                                \
        if (!(cond))                                                                               \
            fail_msg("timed out waiting for: %s", #cond);                                          \
    } while (0)

static void on_nap(uv_timer_t *t)
{
    fixture_t *f = qx_container_of(t, fixture_t, nap);
    f->napped = 1;
}

/* Lets ms of loop time pass, serving events meanwhile. */
static void nap(fixture_t *f, uint64_t ms)
{
    f->napped = 0;
    uv_timer_start(&f->nap, on_nap, ms, 0);
    RUN_UNTIL(f, f->napped);
}

/* ---- pool user ---------------------------------------------------------- */

static void u_connect(void *user, int status)
{
    user_t *u = user;
    u->nconnect++;
    u->connect_status = status;
}

static void u_write(void *user, int status)
{
    user_t *u = user;
    u->nwrite++;
    u->write_status = status;
}

static void u_read(void *user, ssize_t nread, const char *buf)
{
    user_t *u = user;
    u->nreadcb++;
    if (nread < 0) {
        u->eof = 1;
        return;
    }
    size_t n = QX_MIN((size_t)nread, sizeof(u->rbuf) - u->rlen);
    memcpy(u->rbuf + u->rlen, buf, n);
    u->rlen += n;
}

static const qx_upconn_cb_t ucb = {u_connect, u_write, u_read, NULL};

/* ---- fixture ------------------------------------------------------------ */

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(uv_timer_init(&f->loop, &f->guard), 0);
    assert_int_equal(uv_timer_init(&f->loop, &f->nap), 0);

    struct sockaddr_in any;
    assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &any), 0);
    assert_int_equal(uv_tcp_init(&f->loop, &f->listener), 0);
    assert_int_equal(uv_tcp_bind(&f->listener, (const struct sockaddr *)&any, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&f->listener, 16, on_connection), 0);
    f->addr = any;
    f->addr.sin_port = htons((uint16_t)local_port(&f->listener));

    /* A port that is ours but does not listen: a connect to it is refused
     * for sure, and no other process can take it meanwhile. */
    assert_int_equal(uv_tcp_init(&f->loop, &f->dead), 0);
    assert_int_equal(uv_tcp_bind(&f->dead, (const struct sockaddr *)&any, 0), 0);
    f->dead_addr = any;
    f->dead_addr.sin_port = htons((uint16_t)local_port(&f->dead));
    *state = f;
    return 0;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Closes everything, runs the loop dry and returns uv_loop_close()'s result.
 * The pool goes first so its close callbacks run in the same final spin. */
static int cleanup(fixture_t *f)
{
    f->cleaned = 1;
    qx_pool_del(f->pool);
    f->pool = NULL;
    for (int i = 0; i < f->nsrv; i++) {
        if (!uv_is_closing((uv_handle_t *)&f->srv[i]->tcp))
            uv_close((uv_handle_t *)&f->srv[i]->tcp, NULL);
    }
    uv_close((uv_handle_t *)&f->listener, NULL);
    uv_close((uv_handle_t *)&f->dead, NULL);
    uv_close((uv_handle_t *)&f->guard, NULL);
    uv_close((uv_handle_t *)&f->nap, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    int rv = uv_loop_close(&f->loop);
    for (int i = 0; i < f->nsrv; i++)
        free(f->srv[i]);
    f->nsrv = 0;
    return rv;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (!f->cleaned) {
        /* The test failed half-way: close whatever is left, without the
         * assertions (a connection the pool lost is leaked here). */
        qx_pool_del(f->pool);
        f->pool = NULL;
        uv_walk(&f->loop, close_walk, NULL);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        uv_loop_close(&f->loop);
        for (int i = 0; i < f->nsrv; i++)
            free(f->srv[i]);
    }
    free(f);
    return 0;
}

static void pool_new(fixture_t *f, const struct sockaddr_in *to, unsigned max_idle,
                     uint64_t idle_timeout_ms)
{
    assert_int_equal(qx_pool_new(&f->pool, &f->loop, (const struct sockaddr *)to, sizeof(*to),
                                 max_idle, idle_timeout_ms, &f->row),
                     0);
    assert_non_null(f->pool);
    assert_int_equal(f->pool->nidle, 0);
    assert_int_equal(f->pool->nbusy, 0);
}

/* Pool counts and the metrics row's gauges agree with what we expect. */
static void expect_pool(fixture_t *f, unsigned nidle, unsigned nbusy)
{
    assert_int_equal(f->pool->nidle, nidle);
    assert_int_equal(f->pool->nbusy, nbusy);
    assert_int_equal(f->row.pool_idle, nidle);
    assert_int_equal(f->row.pool_busy, nbusy);
}

/* Checks out a fresh connection and waits for its connect. */
static qx_upconn_t *connect_new(fixture_t *f, user_t *u, int fresh_only)
{
    qx_upconn_t *uc = NULL;
    int reused = -1;
    int before = u->nconnect;
    int nsrv = f->nsrv;
    assert_int_equal(qx_pool_checkout(f->pool, u, &ucb, fresh_only, &uc, &reused), 0);
    assert_non_null(uc);
    assert_int_equal(reused, 0);
    assert_int_equal(u->nconnect, before); /* not called synchronously */
    RUN_UNTIL(f, u->nconnect == before + 1 && f->nsrv == nsrv + 1);
    assert_int_equal(u->connect_status, 0);
    return uc;
}

/* One request/response round trip over uc, as the exchange does it. */
static void round_trip(fixture_t *f, qx_upconn_t *uc, user_t *u, const char *ping, const char *pong)
{
    srvconn_t *s = srv_for(f, uc);
    size_t had = s->nread;
    int writes = u->nwrite;
    uv_buf_t b = uv_buf_init((char *)ping, (unsigned)strlen(ping));
    qx_upconn_read_start(uc);
    qx_upconn_read_start(uc); /* idempotent */
    /* A small request fits the socket buffer: written at once, and no
     * write callback follows. */
    assert_int_equal(qx_upconn_write(uc, &b, 1), 1);
    RUN_UNTIL(f, s->nread == had + strlen(ping));
    assert_int_equal(u->nwrite, writes);
    assert_memory_equal(s->in + had, ping, strlen(ping));

    u->rlen = 0;
    uv_buf_t r = uv_buf_init((char *)pong, (unsigned)strlen(pong));
    assert_int_equal(uv_try_write((uv_stream_t *)&s->tcp, &r, 1), (int)strlen(pong));
    RUN_UNTIL(f, u->rlen == strlen(pong));
    assert_memory_equal(u->rbuf, pong, strlen(pong));
    qx_upconn_read_stop(uc);
    qx_upconn_read_stop(uc);
}

/* ---- tests -------------------------------------------------------------- */

static void test_connect_reuse_close(void **state)
{
    fixture_t *f = *state;
    user_t u1 = {0}, u2 = {0};
    pool_new(f, &f->addr, 4, 60000);

    /* An empty pool starts a connect; the connection counts as busy at once. */
    qx_upconn_t *uc = NULL;
    int reused = -1;
    assert_int_equal(qx_pool_checkout(f->pool, &u1, &ucb, 0, &uc, &reused), 0);
    assert_int_equal(reused, 0);
    expect_pool(f, 0, 1);
    RUN_UNTIL(f, u1.nconnect == 1 && f->nsrv == 1);
    assert_int_equal(u1.connect_status, 0);
    expect_pool(f, 0, 1);
    round_trip(f, uc, &u1, "GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK\r\n\r\n");

    /* Reusable: it goes idle, the socket stays open. */
    qx_pool_release(uc, 1);
    expect_pool(f, 1, 0);
    assert_ptr_equal(TAILQ_FIRST(&f->pool->idle), uc);
    nap(f, 5);
    assert_false(f->srv[0]->eof);
    expect_pool(f, 1, 0);

    /* The next checkout hands out the same connection, usable at once. */
    qx_upconn_t *again = NULL;
    reused = -1;
    assert_int_equal(qx_pool_checkout(f->pool, &u2, &ucb, 0, &again, &reused), 0);
    assert_ptr_equal(again, uc);
    assert_int_equal(reused, 1);
    expect_pool(f, 0, 1);
    round_trip(f, again, &u2, "second", "answer");
    assert_int_equal(f->nsrv, 1); /* no second connect */
    assert_int_equal(u2.nconnect, 0);

    /* Not reusable: closed; the server sees EOF, no callback reaches u2. */
    int reads = u2.nreadcb;
    qx_upconn_read_start(again);
    qx_pool_release(again, 0);
    expect_pool(f, 0, 0);
    RUN_UNTIL(f, f->srv[0]->eof);
    assert_int_equal(u2.nreadcb, reads);
    assert_int_equal(u1.nconnect, 1);
    /* Both requests were written at once: no write callbacks. */
    assert_int_equal(u1.nwrite, 0);
    assert_int_equal(u2.nwrite, 0);

    assert_int_equal(cleanup(f), 0);
}

static void test_max_idle(void **state)
{
    fixture_t *f = *state;
    user_t u = {0};
    pool_new(f, &f->addr, 1, 60000);

    qx_upconn_t *a = connect_new(f, &u, 0);
    qx_upconn_t *b = connect_new(f, &u, 0);
    assert_ptr_not_equal(a, b);
    expect_pool(f, 0, 2);
    srvconn_t *sa = srv_for(f, a);
    srvconn_t *sb = srv_for(f, b);

    qx_pool_release(a, 1);
    expect_pool(f, 1, 1);
    /* The pool is full: the second reusable connection is closed instead. */
    qx_pool_release(b, 1);
    expect_pool(f, 1, 0);
    RUN_UNTIL(f, sb->eof);
    assert_false(sa->eof);

    qx_upconn_t *uc = NULL;
    int reused = -1;
    assert_int_equal(qx_pool_checkout(f->pool, &u, &ucb, 0, &uc, &reused), 0);
    assert_ptr_equal(uc, a);
    assert_int_equal(reused, 1);
    expect_pool(f, 0, 1);
    qx_pool_release(uc, 0);
    expect_pool(f, 0, 0);
    RUN_UNTIL(f, sa->eof);
    assert_int_equal(u.nconnect, 2);

    assert_int_equal(cleanup(f), 0);
}

static void test_max_idle_zero(void **state)
{
    fixture_t *f = *state;
    user_t u = {0};
    pool_new(f, &f->addr, 0, 60000);
    qx_upconn_t *a = connect_new(f, &u, 0);
    srvconn_t *sa = srv_for(f, a);
    qx_pool_release(a, 1);
    expect_pool(f, 0, 0);
    RUN_UNTIL(f, sa->eof);
    assert_int_equal(cleanup(f), 0);
}

static void test_peer_close_evicts_idle(void **state)
{
    fixture_t *f = *state;
    user_t u = {0};
    pool_new(f, &f->addr, 4, 60000);

    qx_upconn_t *a = connect_new(f, &u, 0);
    srvconn_t *sa = srv_for(f, a);
    qx_pool_release(a, 1);
    expect_pool(f, 1, 0);

    /* The backend closes its keep-alive socket: the idle watch sees EOF. */
    uv_close((uv_handle_t *)&sa->tcp, NULL);
    RUN_UNTIL(f, f->pool->nidle == 0);
    expect_pool(f, 0, 0);

    /* The next checkout connects afresh. */
    qx_upconn_t *b = connect_new(f, &u, 0);
    assert_int_equal(f->nsrv, 2);
    expect_pool(f, 0, 1);
    round_trip(f, b, &u, "x", "y");
    qx_pool_release(b, 0);
    expect_pool(f, 0, 0);
    assert_int_equal(u.nconnect, 2);

    assert_int_equal(cleanup(f), 0);
}

static void test_peer_close_caught_at_checkout(void **state)
{
    fixture_t *f = *state;
    user_t u = {0};
    pool_new(f, &f->addr, 4, 60000);

    qx_upconn_t *a = connect_new(f, &u, 0);
    srvconn_t *sa = srv_for(f, a);
    qx_pool_release(a, 1);
    expect_pool(f, 1, 0);

    /* The backend closes, and a checkout comes before the loop has read the
     * EOF: the check at checkout must catch it, however briefly the
     * connection was idle. The FIN crosses loopback without our loop;
     * give the kernel a moment. */
    uv_close((uv_handle_t *)&sa->tcp, NULL);
    usleep(20000);
    assert_int_equal(f->pool->nidle, 1);

    qx_upconn_t *b = NULL;
    int reused = -1;
    assert_int_equal(qx_pool_checkout(f->pool, &u, &ucb, 0, &b, &reused), 0);
    assert_int_equal(reused, 0);
    expect_pool(f, 0, 1);
    RUN_UNTIL(f, u.nconnect == 2 && f->nsrv == 2);
    assert_int_equal(u.connect_status, 0);
    assert_ptr_not_equal(srv_for(f, b), sa);
    qx_pool_release(b, 0);
    expect_pool(f, 0, 0);

    assert_int_equal(cleanup(f), 0);
}

static void test_idle_bytes_evict(void **state)
{
    fixture_t *f = *state;
    user_t u = {0};
    pool_new(f, &f->addr, 4, 60000);

    qx_upconn_t *a = connect_new(f, &u, 0);
    srvconn_t *sa = srv_for(f, a);
    qx_pool_release(a, 1);
    expect_pool(f, 1, 0);

    /* An idle keep-alive connection must stay silent; bytes from the
     * backend mean it is out of step: evicted and closed. */
    static char junk_bytes[] = "HTTP/1.1 408 Request Timeout\r\n\r\n";
    uv_buf_t junk = uv_buf_init(junk_bytes, (unsigned)strlen(junk_bytes));
    assert_int_equal(uv_try_write((uv_stream_t *)&sa->tcp, &junk, 1), (int)strlen(junk_bytes));
    RUN_UNTIL(f, f->pool->nidle == 0);
    expect_pool(f, 0, 0);
    RUN_UNTIL(f, sa->eof);
    assert_int_equal(u.nreadcb, 0); /* nobody was using it */

    assert_int_equal(cleanup(f), 0);
}

static void test_idle_bytes_caught_at_checkout(void **state)
{
    fixture_t *f = *state;
    user_t u = {0};
    pool_new(f, &f->addr, 4, 60000);

    qx_upconn_t *a = connect_new(f, &u, 0);
    srvconn_t *sa = srv_for(f, a);
    qx_pool_release(a, 1);
    expect_pool(f, 1, 0);

    /* The backend sends a response nobody asked for, and a checkout comes
     * in the same loop turn, before the idle watcher has read it (a few
     * milliseconds after the release): the connection must not be handed
     * out, or that response would answer the next request. */
    static char junk_bytes[] = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned";
    uv_buf_t junk = uv_buf_init(junk_bytes, (unsigned)strlen(junk_bytes));
    assert_int_equal(uv_try_write((uv_stream_t *)&sa->tcp, &junk, 1), (int)strlen(junk_bytes));
    usleep(20000);
    assert_int_equal(f->pool->nidle, 1);

    qx_upconn_t *b = NULL;
    int reused = -1;
    assert_int_equal(qx_pool_checkout(f->pool, &u, &ucb, 0, &b, &reused), 0);
    assert_int_equal(reused, 0);
    assert_ptr_not_equal(b, a);
    RUN_UNTIL(f, u.nconnect == 2 && f->nsrv == 2);
    assert_int_equal(u.nreadcb, 0);
    qx_pool_release(b, 0);
    expect_pool(f, 0, 0);

    assert_int_equal(cleanup(f), 0);
}

static void test_sweep(void **state)
{
    fixture_t *f = *state;
    user_t u = {0};
    pool_new(f, &f->addr, 4, 20);

    /* Boundaries, on the loop's clock as release recorded it. */
    qx_upconn_t *a = connect_new(f, &u, 0);
    srvconn_t *sa = srv_for(f, a);
    uint64_t t0 = uv_now(&f->loop);
    qx_pool_release(a, 1);
    assert_int_equal(a->idle_since_ms, t0);
    qx_pool_sweep(f->pool, t0);
    qx_pool_sweep(f->pool, t0 + 19);
    expect_pool(f, 1, 0);
    qx_pool_sweep(f->pool, t0 + 20);
    expect_pool(f, 0, 0);
    RUN_UNTIL(f, sa->eof);

    /* Real time: b idles 40 ms, c was just released; only b goes. */
    qx_upconn_t *b = connect_new(f, &u, 0);
    qx_upconn_t *c = connect_new(f, &u, 0);
    srvconn_t *sb = srv_for(f, b);
    srvconn_t *sc = srv_for(f, c);
    qx_pool_release(b, 1);
    nap(f, 40);
    uv_update_time(&f->loop);
    qx_pool_release(c, 1);
    expect_pool(f, 2, 0);
    qx_pool_sweep(f->pool, uv_now(&f->loop));
    expect_pool(f, 1, 0);
    assert_ptr_equal(TAILQ_FIRST(&f->pool->idle), c);
    RUN_UNTIL(f, sb->eof);
    assert_false(sc->eof);

    /* Sweeping an empty tail, or too early, does nothing more. */
    qx_pool_sweep(f->pool, uv_now(&f->loop));
    expect_pool(f, 1, 0);
    nap(f, 30);
    qx_pool_sweep(f->pool, uv_now(&f->loop));
    expect_pool(f, 0, 0);
    RUN_UNTIL(f, sc->eof);
    assert_int_equal(u.nconnect, 3);

    assert_int_equal(cleanup(f), 0);
}

static void test_connect_refused(void **state)
{
    fixture_t *f = *state;
    user_t u = {0};
    pool_new(f, &f->dead_addr, 4, 60000);

    qx_upconn_t *uc = NULL;
    int reused = -1;
    assert_int_equal(qx_pool_checkout(f->pool, &u, &ucb, 0, &uc, &reused), 0);
    assert_int_equal(reused, 0);
    expect_pool(f, 0, 1);
    RUN_UNTIL(f, u.nconnect == 1);
    assert_true(u.connect_status < 0);
    assert_int_equal(u.connect_status, UV_ECONNREFUSED);
    /* The user gives the failed connection back. */
    qx_pool_release(uc, 0);
    expect_pool(f, 0, 0);
    assert_int_equal(f->nsrv, 0);

    assert_int_equal(cleanup(f), 0);
    assert_int_equal(u.nconnect, 1);
}

static void test_fresh_only(void **state)
{
    fixture_t *f = *state;
    user_t u = {0};
    pool_new(f, &f->addr, 4, 60000);

    qx_upconn_t *a = connect_new(f, &u, 0);
    qx_pool_release(a, 1);
    expect_pool(f, 1, 0);

    /* The retry after a failed reuse: the idle connection is not handed out. */
    qx_upconn_t *b = connect_new(f, &u, 1);
    assert_ptr_not_equal(b, a);
    assert_int_equal(f->nsrv, 2);
    expect_pool(f, 1, 1);
    assert_ptr_equal(TAILQ_FIRST(&f->pool->idle), a);

    qx_pool_release(b, 1);
    expect_pool(f, 2, 0);
    /* Most recently used first. */
    assert_ptr_equal(TAILQ_FIRST(&f->pool->idle), b);
    assert_ptr_equal(TAILQ_LAST(&f->pool->idle, qx_upconn_idle), a);

    assert_int_equal(cleanup(f), 0);
}

static void test_release_while_connecting(void **state)
{
    fixture_t *f = *state;
    user_t u = {0};
    pool_new(f, &f->addr, 4, 60000);

    /* A connect timeout gives the connection back before it completes; the
     * user hears nothing more. */
    qx_upconn_t *uc = NULL;
    int reused = -1;
    assert_int_equal(qx_pool_checkout(f->pool, &u, &ucb, 0, &uc, &reused), 0);
    expect_pool(f, 0, 1);
    qx_pool_release(uc, 1);
    expect_pool(f, 0, 0);
    nap(f, 20);
    assert_int_equal(u.nconnect, 0);

    assert_int_equal(cleanup(f), 0);
    assert_int_equal(u.nconnect, 0);
}

static void test_pool_del_detaches_busy(void **state)
{
    fixture_t *f = *state;
    user_t u = {0};
    pool_new(f, &f->addr, 4, 60000);

    qx_upconn_t *idle = connect_new(f, &u, 0);
    qx_upconn_t *busy = connect_new(f, &u, 0);
    srvconn_t *si = srv_for(f, idle);
    srvconn_t *sb = srv_for(f, busy);
    qx_pool_release(idle, 1);
    expect_pool(f, 1, 1);

    /* The pool goes while a request still uses a connection (a snapshot
     * swap, a worker stop): idle ones close now, the busy one is detached
     * and must not point at the freed pool (pool.h: "NULL once the pool is
     * gone"). */
    qx_pool_del(f->pool);
    f->pool = NULL;
    RUN_UNTIL(f, si->eof);
    assert_false(sb->eof);
    int detached = busy->pool == NULL;
    /* Without the detach, using the connection below would touch freed
     * memory; clear it here so the test ends cleanly and fails below. */
    busy->pool = NULL;

    /* Its user still finishes with it; then it is closed, not pooled. */
    round_trip(f, busy, &u, "late", "reply");
    qx_pool_release(busy, 1);
    RUN_UNTIL(f, sb->eof);

    assert_int_equal(cleanup(f), 0);
    if (!detached)
        fail_msg("qx_pool_del left a busy connection's uc->pool pointing at the freed pool");
    assert_int_equal(u.nconnect, 2);
}

/* A write larger than the socket buffers is partly written at once and the
 * rest queued: on_write follows when all of it left, a second write in the
 * meantime is refused, and every byte arrives in order. */
static void test_queued_write(void **state)
{
    fixture_t *f = *state;
    user_t u = {0};
    pool_new(f, &f->addr, 4, 60000);
    qx_upconn_t *uc = connect_new(f, &u, 0);
    srvconn_t *s = srv_for(f, uc);

    const size_t half = 8 << 20;
    char *big = malloc(2 * half);
    assert_non_null(big);
    for (size_t i = 0; i < 2 * half; i++)
        big[i] = (char)('a' + i % 26);
    uv_buf_t b[2] = {uv_buf_init(big, (unsigned)half), uv_buf_init(big + half, (unsigned)half)};
    assert_int_equal(qx_upconn_write(uc, b, 2), 0);
    assert_int_equal(qx_upconn_write(uc, b, 1), QX_ERR_INVAL);
    RUN_UNTIL(f, u.nwrite == 1 && s->total == 2 * half);
    assert_int_equal(u.write_status, 0);
    assert_memory_equal(s->in, big, sizeof(s->in));
    free(big);

    qx_pool_release(uc, 0);
    RUN_UNTIL(f, s->eof);
    assert_int_equal(cleanup(f), 0);
}

/* Requests over max_connections wait in a queue, oldest first: a
 * connection going idle or closing calls the oldest waiter once; a waiter
 * that left (or never joined) is not called; the queue holds at most
 * max_conns; deleting the pool calls whoever still waits. */
typedef struct waiter {
    qx_pool_wait_t wt;
    int nready;
    int order; /* when it was called (1, 2, ...) */
} waiter_t;

static int ready_seq;

static void on_ready(qx_pool_wait_t *wt)
{
    waiter_t *w = qx_container_of(wt, waiter_t, wt);
    w->nready++;
    w->order = ++ready_seq;
}

static void test_waiters(void **state)
{
    fixture_t *f = *state;
    user_t u = {0};
    waiter_t w1 = {.wt.ready = on_ready}, w2 = {.wt.ready = on_ready}, w3 = {.wt.ready = on_ready},
             w4 = {.wt.ready = on_ready};
    ready_seq = 0;
    pool_new(f, &f->addr, 4, 60000);
    f->pool->max_conns = 2;

    qx_upconn_t *a = connect_new(f, &u, 0);
    qx_upconn_t *b = connect_new(f, &u, 0);
    srvconn_t *sb = srv_for(f, b);
    qx_upconn_t *uc = NULL;
    int reused = -1;
    assert_int_equal(qx_pool_checkout(f->pool, &u, &ucb, 0, &uc, &reused), QX_ERR_LIMIT);

    assert_int_equal(qx_pool_wait(f->pool, &w1.wt), 0);
    assert_int_equal(qx_pool_wait(f->pool, &w2.wt), 0);
    assert_int_equal(qx_pool_wait(f->pool, &w3.wt), QX_ERR_LIMIT); /* max_conns wait already */
    assert_int_equal(f->pool->nwaiters, 2);
    qx_pool_unwait(f->pool, &w3.wt); /* never queued: nothing happens */
    assert_int_equal(f->pool->nwaiters, 2);
    /* w1 leaves and comes back: now behind w2. */
    qx_pool_unwait(f->pool, &w1.wt);
    assert_int_equal(f->pool->nwaiters, 1);
    assert_int_equal(qx_pool_wait(f->pool, &w1.wt), 0);

    /* a goes idle: the oldest waiter (w2) is called, once. */
    qx_pool_release(a, 1);
    assert_int_equal(w2.nready, 1);
    assert_int_equal(w2.order, 1);
    assert_int_equal(w1.nready, 0);
    assert_int_equal(f->pool->nwaiters, 1);
    qx_pool_unwait(f->pool, &w2.wt); /* already out of the queue */
    assert_int_equal(f->pool->nwaiters, 1);
    /* b closes: w1 is next. */
    qx_pool_release(b, 0);
    RUN_UNTIL(f, sb->eof);
    assert_int_equal(w1.nready, 1);
    assert_int_equal(w1.order, 2);
    assert_int_equal(f->pool->nwaiters, 0);
    assert_int_equal(w3.nready, 0);

    /* Whoever waits when the pool goes is called (and finds no pool). */
    assert_int_equal(qx_pool_wait(f->pool, &w4.wt), 0);
    qx_pool_del(f->pool);
    f->pool = NULL;
    assert_int_equal(w4.nready, 1);
    assert_int_equal(w1.nready + w2.nready + w3.nready, 2);
    assert_int_equal(cleanup(f), 0);
}

int main(void)
{
#define T(t) cmocka_unit_test_setup_teardown(t, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_connect_reuse_close),
        T(test_max_idle),
        T(test_max_idle_zero),
        T(test_peer_close_evicts_idle),
        T(test_peer_close_caught_at_checkout),
        T(test_idle_bytes_evict),
        T(test_idle_bytes_caught_at_checkout),
        T(test_sweep),
        T(test_connect_refused),
        T(test_fresh_only),
        T(test_release_while_connecting),
        T(test_pool_del_detaches_busy),
        T(test_queued_write),
        T(test_waiters),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
