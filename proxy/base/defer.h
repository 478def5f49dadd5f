/*
 * defer.h - a worker's one queue of deferred work: "flush me once this loop
 * turn's input is handled". A QUIC connection with packets to write, an
 * HTTPS connection with bytes to send, an exchange with request body to
 * write upstream: each queues its item when it has something, however many
 * times, and runs once per turn with everything that came in together
 * (a write per turn, not per datagram or per TLS record).
 *
 * The queue runs after the poll (a uv_check), in the order items were
 * queued. An item queued while the queue runs (a pump that filled a
 * connection's window queues that connection's flush) runs in the same
 * turn; one that queues itself again from its own run waits for the next
 * pass, and after QX_DEFER_PASSES passes the rest waits for the next turn.
 * While anything waits, an idle handle keeps the poll from blocking, so
 * an item queued from a timer or a write callback runs at once, not at
 * the next I/O event.
 *
 * One queue per worker; not thread-safe. Items are embedded in their owner
 * (find it with qx_container_of) and must be cancelled before it is freed.
 */
#ifndef QX_DEFER_H
#define QX_DEFER_H

#include <sys/queue.h>
#include <uv.h>

#define QX_DEFER_PASSES 8

typedef struct qx_deferred qx_deferred_t;
typedef void (*qx_deferred_fn)(qx_deferred_t *d);

TAILQ_HEAD(qx_deferred_list, qx_deferred);

struct qx_deferred {
    TAILQ_ENTRY(qx_deferred) link;
    qx_deferred_fn fn;
    int where; /* 0: not queued, 1: in items (next pass), 2: in now (this pass) */
};

typedef struct qx_defer {
    struct qx_deferred_list items; /* queued for the next pass */
    struct qx_deferred_list now;   /* the pass running */
    uv_check_t run;
    uv_idle_t kick; /* active while items wait: the poll must not block */
    int running;
    int kicking;
    int closed;
} qx_defer_t;

/* Sets up the queue's handles on |loop| (started at once). Returns 0 or a
 * libuv error. */
int qx_defer_init(qx_defer_t *q, uv_loop_t *loop);

/* Closes the handles; items still queued are dropped (not run). The
 * memory of |q| must stay valid until the loop has run the close
 * callbacks (uv_run after this call). */
void qx_defer_close(qx_defer_t *q);

/* An item ready to be queued, running |fn|. */
static inline void qx_deferred_init(qx_deferred_t *d, qx_deferred_fn fn)
{
    d->fn = fn;
    d->where = 0;
}

static inline int qx_deferred_queued(const qx_deferred_t *d)
{
    return d->where != 0;
}

/* Queues |d| unless it is queued already. */
void qx_defer(qx_defer_t *q, qx_deferred_t *d);

/* Takes |d| off the queue if it is there (its owner goes away, or did the
 * work itself). */
void qx_defer_cancel(qx_defer_t *q, qx_deferred_t *d);

/* Runs what is queued now (the check handle's work); exposed for unit
 * tests and for a shutdown that must flush before closing. */
void qx_defer_run(qx_defer_t *q);

#endif
