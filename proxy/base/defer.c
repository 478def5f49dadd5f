#include "base/defer.h"
#include "base/qx.h"

static void on_kick(uv_idle_t *h)
{
    (void)h; /* only there to keep the poll from blocking */
}

static void kick(qx_defer_t *q, int on)
{
    if (q->closed || on == q->kicking)
        return;
    q->kicking = on;
    if (on)
        uv_idle_start(&q->kick, on_kick);
    else
        uv_idle_stop(&q->kick);
}

static void on_check(uv_check_t *h)
{
    qx_defer_run(qx_container_of(h, qx_defer_t, run));
}

int qx_defer_init(qx_defer_t *q, uv_loop_t *loop)
{
    TAILQ_INIT(&q->items);
    TAILQ_INIT(&q->now);
    q->running = q->kicking = q->closed = 0;
    int rc = uv_check_init(loop, &q->run);
    if (rc == 0)
        rc = uv_idle_init(loop, &q->kick);
    if (rc == 0)
        rc = uv_check_start(&q->run, on_check);
    return rc;
}

static void drop_all(struct qx_deferred_list *l)
{
    qx_deferred_t *d;
    while ((d = TAILQ_FIRST(l)) != NULL) {
        TAILQ_REMOVE(l, d, link);
        d->where = 0;
    }
}

void qx_defer_close(qx_defer_t *q)
{
    drop_all(&q->items);
    drop_all(&q->now);
    if (q->closed)
        return;
    q->closed = 1;
    uv_close((uv_handle_t *)&q->run, NULL);
    uv_close((uv_handle_t *)&q->kick, NULL);
}

void qx_defer(qx_defer_t *q, qx_deferred_t *d)
{
    if (d->where != 0 || q->closed)
        return;
    d->where = 1;
    TAILQ_INSERT_TAIL(&q->items, d, link);
    kick(q, 1);
}

void qx_defer_cancel(qx_defer_t *q, qx_deferred_t *d)
{
    if (d->where == 1)
        TAILQ_REMOVE(&q->items, d, link);
    else if (d->where == 2)
        TAILQ_REMOVE(&q->now, d, link);
    d->where = 0;
    if (TAILQ_EMPTY(&q->items) && TAILQ_EMPTY(&q->now))
        kick(q, 0);
}

void qx_defer_run(qx_defer_t *q)
{
    if (q->running)
        return;
    q->running = 1;
    /* A pass runs what was queued before it, in order; what its items
     * queue (each other, or themselves again) is the next pass. */
    for (unsigned n = 0; n < QX_DEFER_PASSES && !TAILQ_EMPTY(&q->items); n++) {
        qx_deferred_t *d;
        TAILQ_CONCAT(&q->now, &q->items, link);
        TAILQ_FOREACH (d, &q->now, link)
            d->where = 2;
        while ((d = TAILQ_FIRST(&q->now)) != NULL) {
            TAILQ_REMOVE(&q->now, d, link);
            d->where = 0;
            d->fn(d);
        }
    }
    q->running = 0;
    kick(q, !TAILQ_EMPTY(&q->items));
}
