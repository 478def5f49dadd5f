/*
 * worker.h - one worker: a thread with its own libuv loop, its own UDP
 * socket (SO_REUSEPORT), its QUIC connections and its upstream pools.
 * Workers own everything they touch; nothing on the request path locks.
 * The main thread talks to a worker only through qx_worker_drain() /
 * qx_worker_stop() (a uv_async) and reads its counters.
 */
#ifndef QX_WORKER_H
#define QX_WORKER_H

#include "base/cid.h"
#include "base/metrics.h"
#include "upstream/pool.h"
#include "conf/snapshot.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <uv.h>

typedef struct qx_tls qx_tls_t;
typedef struct qx_tls_keys qx_tls_keys_t;
typedef struct qx_runtime qx_runtime_t;
typedef struct qx_tls_tcp qx_tls_tcp_t;
typedef struct qx_tcp_front qx_tcp_front_t;
typedef struct qx_quic_ep qx_quic_ep_t;
typedef struct qx_worker qx_worker_t;
typedef struct qx_exchange qx_exchange_t;

/* Process-wide, shared by every worker; read-only after start-up but for
 * the TLS credentials, which certificate rotation swaps under tls_lock. */
typedef struct qx_shared {
    pthread_mutex_t tls_lock;
    qx_tls_t *tls;             /* read with qx_shared_tls_acquire() */
    qx_runtime_t *rt;          /* the snapshot in force; lifecycle */
    qx_tls_tcp_t *tls_tcp;     /* OpenSSL context for the HTTPS listener (NULL without one);
                                  swapped under tls_lock */
    uint8_t static_secret[32]; /* stateless reset tokens */
    uint8_t token_secret[32];  /* Retry and NEW_TOKEN tokens */
    qx_tls_keys_t *tls_keys;   /* session tickets, 0-RTT policy, anti-replay */
    /* The MAC in server CIDs (cid.h), rotated by xdp_proxy.c; the Initial
     * rate per source (src_rate.h), NULL without an xdp: section. */
    qx_cid_keys_t cid_keys;
    struct qx_src_rate *initial_rate;
    unsigned quic_conns;       /* atomic: QUIC connections in the process */
    unsigned tcp_conns;        /* atomic: HTTPS connections in the process */
    qx_fd_budget_t fds;        /* client and upstream connections' descriptors */
    void (*on_worker_exit)(qx_worker_t *w, void *arg);  /* called on the worker thread */
    void (*on_worker_start)(qx_worker_t *w, void *arg); /* its loop is about to run; ditto */
    void *arg;
} qx_shared_t;

typedef enum { QX_W_STARTING, QX_W_RUNNING, QX_W_DRAINING, QX_W_STOPPED } qx_worker_state_t;

struct qx_worker {
    unsigned id;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t wakeup;
    uv_async_t inbox_async; /* datagrams other workers forward to us */
    pthread_mutex_t inbox_lock;
    struct qx_fwd_pkt *inbox; /* guarded by inbox_lock */
    unsigned ninbox;
    int cmd; /* atomic: QX_W_DRAINING or QX_W_STOPPED requested by main */
    qx_worker_state_t state;
    qx_shared_t *shared;
    qx_snapshot_t *snap; /* the snapshot new requests use */
    qx_pool_t **pools;   /* [snap->nupstreams] */
    qx_pool_t *retired;  /* pools a newer snapshot dropped, kept while requests need them */
    qx_metrics_t metrics;
    qx_quic_ep_t *quic;
    qx_tcp_front_t *tcp;      /* HTTPS fallback listener; NULL when not configured */
    uv_timer_t tick;          /* pool sweep, liveness tick, drain checks */
    uv_prepare_t pump;        /* before the next poll: request bodies go upstream (exchange.c) */
    qx_exchange_t *pump_head; /* exchanges with request body bytes to write */
    uv_timer_t grace;         /* graceful_shutdown_secs deadline */
    uint64_t last_tick_ms;    /* atomic, uv_hrtime() in ms; read by the admin thread (livez) */
    unsigned nexchanges;      /* requests in flight */
    qx_exchange_t *ex_cache;  /* finished exchanges kept for reuse (exchange.c) */
    unsigned nex_cache;
    uint8_t *up_scratch; /* QX_UP_READ bytes: upstream reads that cannot go straight to a window */
    struct sockaddr_storage last_client; /* the address client_ip was last formatted for */
    char last_client_ip[INET6_ADDRSTRLEN];
    unsigned handshakes; /* QUIC handshakes in progress (retry: auto) */
    int exit_code;
};

/*
 * Prepares worker |id| (loop, pools, UDP socket bound with SO_REUSEPORT)
 * without starting its thread, so that a bind failure is reported before
 * anything runs. Returns 0, QX_ERR_IO (bind/socket, logged), QX_ERR_NOMEM.
 */
int qx_worker_init(qx_worker_t *w, unsigned id, qx_shared_t *shared, qx_snapshot_t *snap);

/* The QUIC TLS credentials in force, referenced (qx_tls_unref when the
 * connection is gone). Taken once per new connection. Thread-safe. */
qx_tls_t *qx_shared_tls_acquire(qx_shared_t *s);

/* Puts new credentials in force for new handshakes (ownership taken);
 * existing connections keep theirs. Thread-safe. */
void qx_shared_tls_swap(qx_shared_t *s, qx_tls_t *tls);

/* Starts the worker's thread. Returns 0 or QX_ERR_IO. */
int qx_worker_start(qx_worker_t *w);

/* Thread-safe: asks the worker to drain (stop accepting, GOAWAY, finish
 * in-flight requests up to graceful_shutdown_secs) or to stop now. */
void qx_worker_drain(qx_worker_t *w);
void qx_worker_stop(qx_worker_t *w);

/*
 * Thread-safe: hands a QUIC datagram to the worker that owns its
 * connection (the worker id is the first byte of our connection IDs).
 * The kernel's SO_REUSEPORT hash follows the 4-tuple, so after a client
 * migrates or its NAT rebinds, its packets can reach another worker's
 * socket; forwarding keeps the connection on the worker that has its state.
 * Bounded: past a backlog the datagram is dropped (QUIC recovers). Returns
 * 0 or QX_ERR_LIMIT / QX_ERR_NOMEM.
 */
int qx_worker_forward(qx_worker_t *w, const struct sockaddr *local, socklen_t locallen,
                      const struct sockaddr *remote, socklen_t remotelen, const uint8_t *data,
                      size_t len);

/* Thread-safe: tells the worker a new snapshot is in force; it adopts it
 * between requests (pools of upstreams that stay are kept). */
void qx_worker_notify(qx_worker_t *w);

/* The pool for an upstream address in the worker's current set, or NULL
 * when a newer snapshot dropped that upstream. */
qx_pool_t *qx_worker_pool_find(qx_worker_t *w, const struct sockaddr *addr, socklen_t len);

/* Joins the thread and frees what init built. Accepts a zeroed worker. */
void qx_worker_free(qx_worker_t *w);

/* Called by fronts when a connection or request ends, so a draining worker
 * can exit as soon as it is idle. */
void qx_worker_maybe_done(qx_worker_t *w);

#endif
