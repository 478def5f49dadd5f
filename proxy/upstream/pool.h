/*
 * pool.h - upstream TCP connections and the per-worker, per-upstream pool
 * of idle keep-alive ones.
 *
 * A qx_upconn_t is a thin TCP wrapper (connect, one write at a time, read
 * start/stop, close) that knows no protocol: the upstream codec that
 * checks it out (upstream.h; HTTP/1.1: h1_up.c) is its user. The pool
 * hands out an idle connection checked alive (an idle socket
 * is watched for EOF and stray bytes, and peeked once more at checkout:
 * one with anything to read is never handed out), or starts a new
 * connect. At most max_idle connections stay idle; idle ones older than
 * idle_timeout_ms are closed by qx_pool_sweep().
 *
 * Owned by one worker's loop; no locks. Connections are freed only in
 * their uv_close callback (STYLE.md §9).
 */
#ifndef QX_POOL_H
#define QX_POOL_H

#include "base/metrics.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <uv.h>

#define QX_UPCONN_RBUF 512   /* the connection's own read buffer (idle reads; users bring theirs) */
#define QX_UPCONN_MAX_BUFS 8 /* buffers in one qx_upconn_write */

typedef struct qx_pool qx_pool_t;
typedef struct qx_upconn qx_upconn_t;

/* Descriptors the process may still open for client and upstream
 * connections: the soft RLIMIT_NOFILE less what was open at start and a
 * reserve kept for the admin server, probes, config reloads and logs, so
 * that a flood of connections never starves them. Shared by every worker;
 * |used| is atomic. */
typedef struct qx_fd_budget {
    unsigned used;
    unsigned limit;
} qx_fd_budget_t;

/* Takes one descriptor from the budget (NULL: no budget). Returns 0, or
 * QX_ERR_LIMIT when the reserve would be touched. */
int qx_fd_take(qx_fd_budget_t *b);
void qx_fd_give(qx_fd_budget_t *b);

/* A request waiting for a connection to an upstream at its
 * max_connections: ready() is called (from the pool, once) when one may be
 * had; the waiter then asks again with qx_pool_checkout. */
typedef struct qx_pool_wait {
    TAILQ_ENTRY(qx_pool_wait) link; /* the pool's queue */
    int queued;
    void (*ready)(struct qx_pool_wait *wt);
} qx_pool_wait_t;

/* What an upstream connection reports to its current user. */
typedef struct qx_upconn_cb {
    void (*on_connect)(void *user, int status);                  /* 0 or a UV_* error */
    void (*on_write)(void *user, int status);                    /* the pending write finished */
    void (*on_read)(void *user, ssize_t nread, const char *buf); /* bytes, UV_EOF or an error */
    /* Where the next read goes (may be NULL): the user's buffer, or len 0
     * for the connection's own QX_UPCONN_RBUF bytes. */
    void (*read_buf)(void *user, uv_buf_t *buf);
} qx_upconn_cb_t;

typedef enum { QX_UC_CONNECTING, QX_UC_BUSY, QX_UC_IDLE, QX_UC_CLOSING } qx_upconn_state_t;

struct qx_upconn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    qx_pool_t *pool;                  /* NULL once the pool is gone */
    LIST_ENTRY(qx_upconn) busy_link;  /* the pool's busy list (CONNECTING, BUSY) */
    TAILQ_ENTRY(qx_upconn) idle_link; /* the pool's idle list (IDLE) */
    void *user;
    const qx_upconn_cb_t *cb;
    qx_upconn_state_t state;
    int writing;
    int reading;
    int connect_failed;
    int fd_taken;        /* counted in fds */
    qx_fd_budget_t *fds; /* the pool's, kept: the pool may be gone at close */
    unsigned nrequests;  /* responses completed on this connection */
    uint64_t idle_since_ms;
    char rbuf[QX_UPCONN_RBUF];
};

struct qx_pool {
    uv_loop_t *loop;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    unsigned max_idle;
    unsigned max_conns;                 /* idle + busy at most (0: no cap) */
    qx_fd_budget_t *fds;                /* may be NULL */
    TAILQ_HEAD(, qx_pool_wait) waiters; /* oldest first; at most max_conns (x conn_streams) */
    unsigned nwaiters;
    uint64_t idle_timeout_ms;
    TAILQ_HEAD(qx_upconn_idle, qx_upconn) idle; /* most recently used first */
    unsigned nidle;
    LIST_HEAD(, qx_upconn) busy; /* connecting or busy; detached by qx_pool_del */
    unsigned nbusy;
    uint64_t pub_idle, pub_busy; /* what gauges() last added to the row */
    qx_pool_t *retired_next;     /* the worker's list of pools a new snapshot dropped */
    uint64_t retired_at_ms;
    qx_metrics_up_row_t *row; /* gauges; may be NULL */
    uint32_t
        h2c_streams; /* h2c_up.c: the app's last SETTINGS_MAX_CONCURRENT_STREAMS (0: none yet) */
    void *h2c; /* h2c_up.c's sessions on this pool's connections (its own list); the pool never
                  reads it: a session whose connection lost its pool (uc->pool NULL) unlinks no more
                */
    /* Set by a codec whose connections carry many streams (h2c_up.c): the
     * streams one connection takes at once (0: one), which sizes the wait
     * queue, and the sweep of its sessions: those without a stream for
     * idle_timeout_ms close, and every one without a stream once the pool
     * is retired (the rest close as their last stream ends). */
    unsigned conn_streams;
    void (*shared_sweep)(qx_pool_t *p, uint64_t now_ms);
    int retired; /* qx_pool_retire: no connection is kept once its user is done */
};

/* Creates a pool for one upstream address. Returns 0 or QX_ERR_NOMEM. */
int qx_pool_new(qx_pool_t **out, uv_loop_t *loop, const struct sockaddr *addr, socklen_t addrlen,
                unsigned max_idle, uint64_t idle_timeout_ms, qx_metrics_up_row_t *row);

/* Closes idle connections and frees the pool; busy connections are
 * detached and close when their user releases them. Accepts NULL. */
void qx_pool_del(qx_pool_t *p);

/*
 * Gives |user| a connection: an idle one that is still open (*reused = 1,
 * usable at once), or a new one whose connect has started (*reused = 0;
 * cb->on_connect follows). Returns 0, QX_ERR_NOMEM, QX_ERR_IO when the
 * connect could not even start (cb is not called then), or QX_ERR_LIMIT
 * when the pool holds max_conns connections or the fd budget is spent
 * (wait with qx_pool_wait).
 * |fresh_only| skips idle connections (the retry after a failed reuse).
 */
int qx_pool_checkout(qx_pool_t *p, void *user, const qx_upconn_cb_t *cb, int fresh_only,
                     qx_upconn_t **out, int *reused);

/* Queues |wt| until a connection may be had. Returns 0, or QX_ERR_LIMIT
 * when max_conns requests (times conn_streams) wait already (answer 503). */
int qx_pool_wait(qx_pool_t *p, qx_pool_wait_t *wt);

/* Leaves the queue (the request ended first). Accepts a waiter not queued. */
void qx_pool_unwait(qx_pool_t *p, qx_pool_wait_t *wt);

/* Ends the user's use: back to the idle list when reusable (and the pool
 * has room), otherwise closed. No callback reaches the user afterwards. */
void qx_pool_release(qx_upconn_t *uc, int reusable);

/* A stream slot freed on a shared (HTTP/2) connection: the oldest waiter
 * may try again, as when a connection closes. */
void qx_pool_kick(qx_pool_t *p);

/* Closes every idle connection now (the pool stays usable). */
void qx_pool_close_idle(qx_pool_t *p);

/* Closes idle connections idle for longer than the timeout (and shared
 * sessions that carried no stream as long). */
void qx_pool_sweep(qx_pool_t *p, uint64_t now_ms);

/* A new snapshot dropped the pool: its idle connections (and shared
 * sessions without a stream) close now, it keeps none from here on; it
 * stays usable for requests that began under the old snapshot. */
void qx_pool_retire(qx_pool_t *p);

/* Writes n buffers (at most QX_UPCONN_MAX_BUFS; one write at a time:
 * QX_ERR_INVAL when a write is pending). Returns 1 when every byte was
 * written at once (no callback follows), 0 when the rest is queued
 * (cb->on_write follows), or QX_ERR_IO. */
int qx_upconn_write(qx_upconn_t *uc, const uv_buf_t *bufs, unsigned n);

/* Starts / stops delivering cb->on_read. Idempotent. */
void qx_upconn_read_start(qx_upconn_t *uc);
void qx_upconn_read_stop(qx_upconn_t *uc);

/* Half-closes a busy connection (FIN: the app reads EOF, may still send):
 * a tunnel whose client ended its side. No write may be pending. Returns
 * 0, QX_ERR_INVAL (a write pending, or not busy) or QX_ERR_IO. The
 * connection is never reused after this. */
int qx_upconn_shutdown(qx_upconn_t *uc);

#endif
