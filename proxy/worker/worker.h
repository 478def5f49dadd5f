/*
 * worker.h - one worker: a thread with its own libuv loop, its own UDP
 * socket (SO_REUSEPORT), its QUIC connections and its upstream pools.
 * Workers own everything they touch; nothing on the request path locks.
 * The main thread talks to a worker only through qx_worker_drain() /
 * qx_worker_stop() (a uv_async) and reads its counters.
 */
#ifndef QX_WORKER_H
#define QX_WORKER_H

#include "base/qx.h"
#include "exchange/context.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/queue.h>
#include <uv.h>

typedef struct qx_tcp_front qx_tcp_front_t;
typedef struct qx_quic_ep qx_quic_ep_t;

/* The worker's context (context.h) comes first: the fronts and the
 * exchange see only that part, and the worker finds itself from it with
 * qx_worker_of(). */
struct qx_worker {
    qx_wctx_t ctx;
    uv_thread_t thread;
    uv_async_t wakeup;
    uv_async_t inbox_async; /* datagrams other workers forward to us */
    pthread_mutex_t inbox_lock;
    STAILQ_HEAD(qx_fwd_list, qx_fwd_pkt) inbox; /* guarded by inbox_lock; oldest first */
    unsigned ninbox;
    int cmd;            /* atomic: QX_W_DRAINING or QX_W_STOPPED requested by main */
    qx_pool_t *retired; /* pools a newer snapshot dropped, kept while requests need them */
    qx_quic_ep_t *quic;
    qx_tcp_front_t *tcp;   /* HTTPS fallback listener; NULL when not configured */
    uv_timer_t tick;       /* pool sweep, liveness tick, drain checks */
    uv_timer_t grace;      /* graceful_shutdown_secs deadline */
    uint64_t last_tick_ms; /* atomic, uv_hrtime() in ms; read by the admin thread (livez) */
    int exit_code;
};

static inline qx_wctx_t *qx_worker_ctx(qx_worker_t *w)
{
    return &w->ctx;
}

static inline qx_worker_t *qx_worker_of(qx_wctx_t *ctx)
{
    return qx_container_of(ctx, qx_worker_t, ctx);
}

/*
 * Prepares worker |id| (loop, pools, UDP socket bound with SO_REUSEPORT)
 * without starting its thread, so that a bind failure is reported before
 * anything runs. Returns 0, QX_ERR_IO (bind/socket, logged), QX_ERR_NOMEM.
 */
int qx_worker_init(qx_worker_t *w, unsigned id, qx_shared_t *shared, qx_snapshot_t *snap);

/* Starts the worker's thread. Returns 0 or QX_ERR_IO. */
int qx_worker_start(qx_worker_t *w);

/* Thread-safe: asks the worker to drain (stop accepting, GOAWAY, finish
 * in-flight requests up to graceful_shutdown_secs) or to stop now. */
void qx_worker_drain(qx_worker_t *w);
void qx_worker_stop(qx_worker_t *w);

/* Thread-safe: tells the worker a new snapshot is in force; it adopts it
 * between requests (pools of upstreams that stay are kept). */
void qx_worker_notify(qx_worker_t *w);

/* Joins the thread and frees what init built. Accepts a zeroed worker. */
void qx_worker_free(qx_worker_t *w);

#endif
