/*
 * defer_test.c - the worker's deferred-work queue (proxy/base/defer.h) on a
 * real libuv loop: items run once per turn in the order queued, however
 * often they were queued; what an item queues runs in the same turn, one
 * that queues itself again runs in the next pass; cancelled items never
 * run; a queued item keeps the poll from blocking; the pass limit leaves
 * a self-feeding item for the next turn instead of spinning.
 */
#include "base/defer.h"
#include "base/qx.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

typedef struct {
    qx_deferred_t d;
    qx_defer_t *q;
    int id;
    int again;   /* queue itself again this many times */
    void *other; /* an item_t to queue from the run */
} item_t;

static int order[64];
static int norder;

static void run_item(qx_deferred_t *d)
{
    item_t *it = qx_container_of(d, item_t, d);
    order[norder++] = it->id;
    if (it->other)
        qx_defer(it->q, &((item_t *)it->other)->d);
    if (it->again > 0) {
        it->again--;
        qx_defer(it->q, &it->d);
    }
}

static void item_on(item_t *it, qx_defer_t *q, int id)
{
    memset(it, 0, sizeof(*it));
    it->q = q;
    it->id = id;
    qx_deferred_init(&it->d, run_item);
}

static void loop_on(uv_loop_t *loop, qx_defer_t *q)
{
    assert_int_equal(uv_loop_init(loop), 0);
    assert_int_equal(qx_defer_init(q, loop), 0);
    norder = 0;
}

static void loop_off(uv_loop_t *loop, qx_defer_t *q)
{
    qx_defer_close(q);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

static void test_order_once_per_turn(void **state)
{
    (void)state;
    uv_loop_t loop;
    qx_defer_t q;
    item_t a, b, c;
    loop_on(&loop, &q);
    item_on(&a, &q, 1);
    item_on(&b, &q, 2);
    item_on(&c, &q, 3);
    qx_defer(&q, &b.d);
    qx_defer(&q, &a.d);
    qx_defer(&q, &b.d); /* twice: still once, in its first place */
    qx_defer(&q, &c.d);
    assert_true(qx_deferred_queued(&b.d));
    /* The idle kick makes this turn's poll return at once: NOWAIT is not
     * needed, a blocking run would hang the test if the kick were missing. */
    uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(norder, 3);
    assert_int_equal(order[0], 2);
    assert_int_equal(order[1], 1);
    assert_int_equal(order[2], 3);
    assert_false(qx_deferred_queued(&b.d));
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(norder, 3);
    loop_off(&loop, &q);
}

static void test_queued_from_a_run_same_turn(void **state)
{
    (void)state;
    uv_loop_t loop;
    qx_defer_t q;
    item_t a, b;
    loop_on(&loop, &q);
    item_on(&a, &q, 1);
    item_on(&b, &q, 2);
    a.other = &b; /* a's run queues b */
    a.again = 1;  /* and itself once more */
    qx_defer(&q, &a.d);
    uv_run(&loop, UV_RUN_ONCE);
    /* Pass 1: a. Pass 2: b (queued first), then a again (which queues b). Pass 3: b. */
    assert_int_equal(norder, 4);
    assert_int_equal(order[0], 1);
    assert_int_equal(order[1], 2);
    assert_int_equal(order[2], 1);
    assert_int_equal(order[3], 2);
    loop_off(&loop, &q);
}

static void test_cancel(void **state)
{
    (void)state;
    uv_loop_t loop;
    qx_defer_t q;
    item_t a, b;
    loop_on(&loop, &q);
    item_on(&a, &q, 1);
    item_on(&b, &q, 2);
    qx_defer(&q, &a.d);
    qx_defer(&q, &b.d);
    qx_defer_cancel(&q, &a.d);
    qx_defer_cancel(&q, &a.d); /* not queued: nothing */
    uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(norder, 1);
    assert_int_equal(order[0], 2);
    /* All cancelled: the kick is off again, the loop has nothing left. */
    qx_defer(&q, &a.d);
    qx_defer_cancel(&q, &a.d);
    assert_false(q.kicking);
    loop_off(&loop, &q);
}

static void test_pass_limit(void **state)
{
    (void)state;
    uv_loop_t loop;
    qx_defer_t q;
    item_t a;
    loop_on(&loop, &q);
    item_on(&a, &q, 1);
    a.again = QX_DEFER_PASSES + 2; /* feeds itself past the limit */
    qx_defer(&q, &a.d);
    uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(norder, QX_DEFER_PASSES);
    assert_true(qx_deferred_queued(&a.d));
    assert_true(q.kicking); /* the rest runs next turn, without waiting for I/O */
    uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(norder, QX_DEFER_PASSES + 3);
    assert_false(qx_deferred_queued(&a.d));
    loop_off(&loop, &q);
}

static void test_close_drops(void **state)
{
    (void)state;
    uv_loop_t loop;
    qx_defer_t q;
    item_t a;
    loop_on(&loop, &q);
    item_on(&a, &q, 1);
    qx_defer(&q, &a.d);
    qx_defer_close(&q);
    assert_false(qx_deferred_queued(&a.d));
    qx_defer(&q, &a.d); /* after close: ignored */
    assert_false(qx_deferred_queued(&a.d));
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(norder, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_once_per_turn),
        cmocka_unit_test(test_queued_from_a_run_same_turn),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_pass_limit),
        cmocka_unit_test(test_close_drops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
