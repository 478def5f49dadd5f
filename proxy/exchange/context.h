/*
 * context.h - what the fronts and the exchange see of the worker they run
 * on: its loop, the snapshot and pools in use, its counters, its one
 * deferred-work queue, and the few things only the worker can do (find a
 * pool, hand a datagram to another worker, notice that a draining worker is
 * idle), as function pointers. Data only: this header names no module above
 * the exchange, so fronts and exchange never include worker.h or runtime.h
 * and a unit test can build a context by hand.
 *
 * The worker (worker.h) embeds a qx_wctx_t as its first member and fills
 * the function pointers in qx_worker_init(). Everything here belongs to the
 * worker's thread but where a field says otherwise.
 */
#ifndef QX_CONTEXT_H
#define QX_CONTEXT_H

#include "base/cid.h"
#include "base/defer.h"
#include "base/metrics.h"
#include "conf/snapshot.h"
#include "upstream/pool.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

typedef struct qx_wctx qx_wctx_t;
typedef struct qx_worker qx_worker_t;
typedef struct qx_runtime qx_runtime_t;
typedef struct qx_dns qx_dns_t;
typedef struct qx_tls qx_tls_t;
typedef struct qx_tls_keys qx_tls_keys_t;
typedef struct qx_tls_tcp qx_tls_tcp_t;
typedef struct qx_exchange qx_exchange_t;

/* Process-wide, shared by every worker; read-only after start-up but for
 * the TLS credentials, which certificate rotation swaps under tls_lock,
 * and the atomic counters. */
typedef struct qx_shared {
    pthread_mutex_t tls_lock;
    qx_tls_t *tls;             /* read with qx_shared_tls_acquire() (tls.h) */
    qx_runtime_t *rt;          /* the snapshot in force; lifecycle (worker and admin only) */
    qx_tls_tcp_t *tls_tcp;     /* OpenSSL context for the HTTPS listener (NULL without one);
                                  swapped under tls_lock */
    uint8_t static_secret[32]; /* stateless reset tokens */
    uint8_t token_secret[32];  /* Retry and NEW_TOKEN tokens */
    qx_tls_keys_t *tls_keys;   /* session tickets, 0-RTT policy, anti-replay */
    /* The MAC in server CIDs (cid.h), rotated by xdp_proxy.c; the Initial
     * rate per source (src_rate.h), NULL without an xdp: section. */
    qx_cid_keys_t cid_keys;
    struct qx_src_rate *initial_rate;
    unsigned nworkers;   /* workers in the process (a server CID's first byte is one) */
    qx_dns_t *dns;       /* the upstream-name resolver (error pages say why); NULL: none */
    unsigned quic_conns; /* atomic: QUIC connections in the process */
    unsigned tcp_conns;  /* atomic: HTTPS connections in the process */
    qx_fd_budget_t fds;  /* client and upstream connections' descriptors */
    void (*on_worker_exit)(qx_worker_t *w, void *arg);  /* called on the worker thread */
    void (*on_worker_start)(qx_worker_t *w, void *arg); /* its loop is about to run; ditto */
    void *arg;
} qx_shared_t;

/*
 * A worker's life (worker.c: set_state() asserts the moves). Written by the
 * worker's thread, read by others (forwarding, /livez, the start-up
 * watchdog).
 *
 *   STARTING --> RUNNING --> DRAINING --> STOPPED
 *       |           |                       ^
 *       +-----------+-----------------------+
 *
 * STARTING: built, its loop not running yet. RUNNING: serving. DRAINING:
 * no new connections, GOAWAY sent, in-flight requests finish (up to
 * graceful_shutdown_secs). STOPPED: everything closed (also straight from
 * STARTING when its listeners cannot start, or from RUNNING on a stop).
 */
typedef enum { QX_W_STARTING, QX_W_RUNNING, QX_W_DRAINING, QX_W_STOPPED } qx_worker_state_t;

struct qx_wctx {
    unsigned id;
    uv_loop_t loop;
    qx_worker_state_t state; /* atomic for readers off the worker's thread */
    qx_shared_t *shared;
    qx_snapshot_t *snap; /* the snapshot new requests use */
    qx_pool_t **pools;   /* [snap->neps] */
    qx_metrics_t metrics;
    unsigned handshakes; /* QUIC handshakes in progress (retry: auto) */
    unsigned nexchanges; /* requests in flight */
    qx_defer_t defer;    /* the worker's one deferred-work queue (defer.h) */
    void *ex_local;      /* the exchange module's per-worker state (exchange.c owns it;
                            qx_exchange_cache_free frees it) */

    /* What only the worker can do (worker.c sets them). */
    /* A connection or request ended: a draining worker that is now idle
     * stops. */
    void (*maybe_done)(qx_wctx_t *w);
    /* The pool for an upstream address in the worker's current set or
     * among the pools a newer snapshot retired, or NULL. */
    qx_pool_t *(*pool_find)(qx_wctx_t *w, const struct sockaddr *addr, socklen_t len);
    /* Hands a QUIC datagram to worker |to| (< shared->nworkers), which
     * owns its connection. Thread-safe on the receiving side; bounded.
     * Returns 0 or QX_ERR_LIMIT / QX_ERR_NOMEM (the datagram is dropped). */
    int (*forward)(qx_wctx_t *w, unsigned to, const struct sockaddr *local, socklen_t locallen,
                   const struct sockaddr *remote, socklen_t remotelen, const uint8_t *data,
                   size_t len);
};

static inline void qx_wctx_maybe_done(qx_wctx_t *w)
{
    w->maybe_done(w);
}

static inline qx_pool_t *qx_wctx_pool_find(qx_wctx_t *w, const struct sockaddr *addr, socklen_t len)
{
    return w->pool_find(w, addr, len);
}

static inline int qx_wctx_forward(qx_wctx_t *w, unsigned to, const struct sockaddr *local,
                                  socklen_t locallen, const struct sockaddr *remote,
                                  socklen_t remotelen, const uint8_t *data, size_t len)
{
    return w->forward(w, to, local, locallen, remote, remotelen, data, len);
}

#endif
