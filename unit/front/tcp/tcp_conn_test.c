/*
 * tcp_conn_test.c - an HTTPS connection's state machine (tcp_conn.h) in
 * tcp_front.c, reached by including it, on a real libuv loop, the worker's
 * real deferred-work queue and a real TCP connection on loopback whose
 * client end the test holds: a graceful close frees the front cleanly,
 * sends the FIN once the output is drained and lingers until the client
 * closes; an abort wins over a graceful close and a graceful close after
 * an abort changes nothing; while a close is asked the front reads nothing
 * and gets no room to write; a drain aborts connections still in their
 * handshake and tells open ones. The worker hears of every teardown; the
 * loop closes clean.
 */
#include "front/tcp/tcp_front.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct fixture {
    qx_wctx_t w;
    qx_shared_t shared;
    qx_config_t cfg;
    qx_snapshot_t snap;
    qx_tcp_front_t *f;
    SSL_CTX *ctx;
    int maybe_done;
} fixture_t;

/* The fake protocol front: counts what the transport asks of it. */
typedef struct app {
    int inputs, outputs, drains, frees;
    int free_error;
} app_t;

static void app_input(void *a)
{
    ((app_t *)a)->inputs++;
}
static void app_output(void *a)
{
    ((app_t *)a)->outputs++;
}
static void app_timeout(void *a)
{
    (void)a;
}
static void app_drain(void *a)
{
    ((app_t *)a)->drains++;
}
static void app_free(void *a, int error)
{
    ((app_t *)a)->frees++;
    ((app_t *)a)->free_error = error;
}

static const qx_tcp_app_ops_t app_ops = {app_input, app_output, app_timeout, app_drain, app_free};

static void on_maybe_done(qx_wctx_t *w)
{
    qx_container_of(w, fixture_t, w)->maybe_done++;
}

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    assert_int_equal(uv_loop_init(&fx->w.loop), 0);
    assert_int_equal(qx_defer_init(&fx->w.defer, &fx->w.loop), 0);
    fx->w.shared = &fx->shared;
    fx->w.maybe_done = on_maybe_done;
    fx->cfg.limits.body_idle_timeout_secs = 30;
    fx->snap.cfg = &fx->cfg;
    fx->w.snap = &fx->snap;
    fx->f = calloc(1, sizeof(*fx->f));
    assert_non_null(fx->f);
    fx->f->w = &fx->w;
    fx->f->fd = -1;
    LIST_INIT(&fx->f->conns);
    fx->ctx = SSL_CTX_new(TLS_server_method());
    assert_non_null(fx->ctx);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    assert_int_equal(fx->f->nconns, 0);
    qx_defer_close(&fx->w.defer);
    assert_int_equal(uv_run(&fx->w.loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&fx->w.loop), 0);
    free(fx->f);
    SSL_CTX_free(fx->ctx);
    free(fx);
    return 0;
}

/* A connection as conn_accept() makes it, on a real loopback TCP
 * connection; *client is the other end. */
static qx_tcp_conn_t *conn_on(fixture_t *fx, int *client)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(lfd >= 0);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(lfd, 1), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
    *client = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(*client, (struct sockaddr *)&a, sizeof(a)), 0);
    int sfd = accept(lfd, NULL, NULL);
    assert_true(sfd >= 0);
    close(lfd);

    qx_tcp_conn_t *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->f = fx->f;
    c->w = &fx->w;
    c->state = QX_TC_HANDSHAKE;
    qx_deferred_init(&c->flush, on_flush);
    assert_int_equal(uv_tcp_init(&fx->w.loop, &c->tcp), 0);
    assert_int_equal(uv_timer_init(&fx->w.loop, &c->timer), 0);
    assert_int_equal(uv_tcp_open(&c->tcp, sfd), 0);
    LIST_INSERT_HEAD(&fx->f->conns, c, link);
    fx->f->nconns++;
    c->ssl = SSL_new(fx->ctx);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    assert_non_null(c->ssl);
    BIO_set_mem_eof_return(c->rbio, -1);
    BIO_set_mem_eof_return(c->wbio, -1);
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_accept_state(c->ssl);
    read_start(c);
    return c;
}

/* The handshake done and a front on it (conn_open without TLS). */
static void conn_open_with(qx_tcp_conn_t *c, app_t *app)
{
    set_state(c, QX_TC_OPEN);
    c->ops = &app_ops;
    c->app = app;
}

/* Turns the loop until cond holds (at most ~2 s of turns). */
#define TURN_UNTIL(fx, cond)                                                                       \
    do {                                                                                           \
        for (int turn_ = 0; turn_ < 200 && !(cond); turn_++)                                       \
            uv_run(&(fx)->w.loop, UV_RUN_ONCE);                                                    \
        assert_true(cond);                                                                         \
    } while (0)

/* What the client end reads now: 0 at EOF, -1 on a reset or nothing yet. */
static ssize_t client_read(int fd, int wait_ms)
{
    char buf[256];
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, wait_ms) != 1)
        return -1;
    return recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
}

static void test_graceful_close_lingers_until_the_client_closes(void **state)
{
    fixture_t *fx = *state;
    app_t app = {0};
    int client;
    qx_tcp_conn_t *c = conn_on(fx, &client);
    conn_open_with(c, &app);
    assert_true(qx_tcp_conn_room(c) > 0);

    qx_tcp_conn_close(c, QX_TC_CLOSE_GRACEFUL);
    assert_int_equal(c->state, QX_TC_CLOSE_REQ);
    assert_true(qx_deferred_queued(&c->flush));
    assert_int_equal(qx_tcp_conn_room(c), 0); /* the front writes no more */
    char b[8];
    assert_int_equal(qx_tcp_conn_read(c, b, sizeof(b)), 0);

    /* The flush: the front is freed cleanly, the FIN goes out once the
     * output is drained (nothing is staged), and the connection lingers. */
    TURN_UNTIL(fx, c->state == QX_TC_LINGER);
    assert_int_equal(app.frees, 1);
    assert_int_equal(app.free_error, 0);
    assert_int_equal(app.outputs, 0);
    TURN_UNTIL(fx, client_read(client, 0) == 0); /* the client sees our FIN */
    assert_int_equal(fx->f->nconns, 1);
    assert_int_equal(fx->maybe_done, 0);

    /* A client closing its side ends the linger: torn down, worker told. */
    close(client);
    TURN_UNTIL(fx, fx->f->nconns == 0);
    assert_int_equal(fx->maybe_done, 1);
    assert_int_equal(app.frees, 1);
}

static void test_abort_wins_over_graceful(void **state)
{
    fixture_t *fx = *state;
    app_t app = {0};
    int client;
    qx_tcp_conn_t *c = conn_on(fx, &client);
    conn_open_with(c, &app);

    qx_tcp_conn_close(c, QX_TC_CLOSE_GRACEFUL);
    qx_tcp_conn_close(c, QX_TC_CLOSE_ABORT);
    assert_int_equal(c->state, QX_TC_ABORT_REQ);
    qx_tcp_conn_close(c, QX_TC_CLOSE_GRACEFUL); /* changes nothing */
    assert_int_equal(c->state, QX_TC_ABORT_REQ);
    assert_int_equal(qx_tcp_conn_write(c, "x", 1), QX_ERR_IO);
    assert_false(qx_tcp_conn_draining(c));

    TURN_UNTIL(fx, fx->f->nconns == 0);
    assert_int_equal(app.frees, 1);
    assert_int_equal(app.free_error, 1); /* the front did not finish */
    assert_int_equal(app.outputs, 0);
    assert_int_equal(fx->maybe_done, 1);
    assert_int_equal(client_read(client, 2000), 0); /* closed without a FIN's linger */
    close(client);
}

static void test_drain(void **state)
{
    fixture_t *fx = *state;
    app_t app = {0};
    int c1, c2;
    qx_tcp_conn_t *hs = conn_on(fx, &c1);
    qx_tcp_conn_t *open = conn_on(fx, &c2);
    conn_open_with(open, &app);

    qx_tcp_front_drain(fx->f);
    assert_true(qx_tcp_conn_draining(open));
    assert_int_equal(hs->state, QX_TC_ABORT_REQ);
    assert_int_equal(open->state, QX_TC_OPEN);
    assert_int_equal(app.drains, 1);

    TURN_UNTIL(fx, fx->f->nconns == 1);
    assert_ptr_equal(LIST_FIRST(&fx->f->conns), open);
    assert_int_equal(fx->maybe_done, 1);
    assert_int_equal(client_read(c1, 2000), 0);

    /* The open one's front finishes and closes; the client closes too. */
    qx_tcp_conn_close(open, QX_TC_CLOSE_GRACEFUL);
    TURN_UNTIL(fx, open->state == QX_TC_LINGER);
    assert_int_equal(app.free_error, 0);
    TURN_UNTIL(fx, client_read(c2, 0) == 0);
    close(c2);
    TURN_UNTIL(fx, fx->f->nconns == 0);
    assert_int_equal(fx->maybe_done, 2);
    close(c1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_graceful_close_lingers_until_the_client_closes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_abort_wins_over_graceful, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drain, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
