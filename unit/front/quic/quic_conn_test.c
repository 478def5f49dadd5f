/*
 * quic_conn_test.c - a QUIC connection's life in its endpoint (quic.c,
 * reached by including it) on a real libuv loop and the worker's real
 * deferred-work queue: the state machine's moves (quic_conn.h), the flush
 * queued once however often the connection is marked and never again once
 * it closes, the first close deciding how it closes, and what the deletion
 * counts: a connection closed during its handshake is a failed handshake,
 * one closed after it leaves the active-connection gauge. The worker hears
 * of every deletion, the connection is freed, the loop closes clean.
 */
#include "front/quic/quic.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

typedef struct fixture {
    qx_wctx_t w;
    qx_shared_t shared;
    qx_quic_ep_t *ep;
    int maybe_done; /* deletions the worker heard of */
} fixture_t;

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
    fx->ep = calloc(1, sizeof(*fx->ep));
    assert_non_null(fx->ep);
    LIST_INIT(&fx->ep->conns);
    fx->ep->w = &fx->w;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    qx_defer_close(&fx->w.defer);
    assert_int_equal(uv_run(&fx->w.loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&fx->w.loop), 0);
    qx_ipcount_free(&fx->ep->per_ip);
    free(fx->ep);
    free(fx);
    return 0;
}

/* A connection as conn_new() leaves it before ngtcp2 is involved: on the
 * endpoint's list, its timer and its flush item ready, HANDSHAKE. */
static qx_quic_conn_t *conn_on(fixture_t *fx)
{
    qx_quic_conn_t *qc = calloc(1, sizeof(*qc));
    assert_non_null(qc);
    qc->ep = fx->ep;
    ngtcp2_ccerr_default(&qc->ccerr);
    assert_int_equal(uv_timer_init(&fx->w.loop, &qc->timer), 0);
    qx_deferred_init(&qc->flush, on_flush);
    LIST_INSERT_HEAD(&fx->ep->conns, qc, link);
    fx->ep->nconns++;
    return qc;
}

static unsigned queued(fixture_t *fx)
{
    unsigned n = 0;
    for (qx_deferred_t *d = TAILQ_FIRST(&fx->w.defer.items); d; d = TAILQ_NEXT(d, link))
        n++;
    return n;
}

static void test_close_during_handshake(void **state)
{
    fixture_t *fx = *state;
    qx_quic_conn_t *qc = conn_on(fx);
    assert_int_equal(qc->state, QX_QC_HANDSHAKE);

    qx_quic_conn_mark(qc);
    qx_quic_conn_mark(qc);
    assert_true(qx_deferred_queued(&qc->flush));
    assert_int_equal(queued(fx), 1);

    qx_quic_conn_goaway(qc); /* no GOAWAY before the handshake completes */
    assert_int_equal(qc->state, QX_QC_HANDSHAKE);

    qx_quic_conn_close(qc, 1);
    assert_int_equal(qc->state, QX_QC_CLOSING);
    assert_int_equal(qc->closed_in, QX_QC_HANDSHAKE);
    assert_int_equal(qc->close_quietly, 1);
    qx_quic_conn_close(qc, 0); /* the first close decides */
    assert_int_equal(qc->close_quietly, 1);
    qx_quic_conn_mark(qc);
    assert_int_equal(queued(fx), 1);

    /* One turn: the flush deletes it; its timer handle closes and frees it. */
    uv_run(&fx->w.loop, UV_RUN_NOWAIT);
    assert_int_equal(fx->ep->nconns, 0);
    assert_true(LIST_EMPTY(&fx->ep->conns));
    assert_int_equal(fx->w.metrics.quic_handshakes_failed, 1);
    assert_int_equal(fx->w.metrics.active_connections_h3, 0);
    assert_int_equal(fx->maybe_done, 1);
    assert_int_equal(queued(fx), 0);
}

static void test_goaway_then_last_request(void **state)
{
    fixture_t *fx = *state;
    qx_quic_conn_t *qc = conn_on(fx);
    set_state(qc, QX_QC_OPEN);
    fx->w.metrics.active_connections_h3 = 1; /* as handshake_completed_cb counts it */

    /* The final GOAWAY on a connection with no request in flight: it
     * closes at once, with CONNECTION_CLOSE (H3_NO_ERROR), not quietly. */
    qx_h3_goaway(qc);
    assert_int_equal(qc->state, QX_QC_CLOSING);
    assert_int_equal(qc->closed_in, QX_QC_GOAWAY);
    assert_int_equal(qc->close_quietly, 0);
    assert_int_equal(qc->ccerr.type, NGTCP2_CCERR_TYPE_APPLICATION);
    assert_int_equal(qc->ccerr.error_code, NGHTTP3_H3_NO_ERROR);
    qx_quic_conn_goaway(qc); /* a late GOAWAY changes nothing */
    assert_int_equal(qc->state, QX_QC_CLOSING);
    assert_int_equal(queued(fx), 1);

    uv_run(&fx->w.loop, UV_RUN_NOWAIT);
    assert_int_equal(fx->ep->nconns, 0);
    assert_int_equal(fx->w.metrics.active_connections_h3, 0);
    assert_int_equal(fx->w.metrics.quic_handshakes_failed, 0);
    assert_int_equal(fx->maybe_done, 1);
}

static void test_only_the_closing_one_goes(void **state)
{
    fixture_t *fx = *state;
    qx_quic_conn_t *a = conn_on(fx);
    qx_quic_conn_t *b = conn_on(fx);
    set_state(b, QX_QC_OPEN);
    fx->w.metrics.active_connections_h3 = 1;

    qx_quic_conn_goaway(b);
    assert_int_equal(b->state, QX_QC_GOAWAY);
    qx_quic_conn_close(a, 1);
    uv_run(&fx->w.loop, UV_RUN_NOWAIT);
    assert_int_equal(fx->ep->nconns, 1);
    assert_ptr_equal(LIST_FIRST(&fx->ep->conns), b);
    assert_int_equal(b->state, QX_QC_GOAWAY);
    assert_false(qx_deferred_queued(&b->flush));
    assert_int_equal(fx->w.metrics.quic_handshakes_failed, 1);
    assert_int_equal(fx->w.metrics.active_connections_h3, 1);

    qx_quic_conn_close(b, 1);
    assert_int_equal(b->closed_in, QX_QC_GOAWAY);
    uv_run(&fx->w.loop, UV_RUN_NOWAIT);
    assert_int_equal(fx->ep->nconns, 0);
    assert_int_equal(fx->w.metrics.active_connections_h3, 0);
    assert_int_equal(fx->maybe_done, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_close_during_handshake, setup, teardown),
        cmocka_unit_test_setup_teardown(test_goaway_then_last_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_only_the_closing_one_goes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
