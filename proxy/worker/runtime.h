/*
 * runtime.h - the process-wide state the main thread, the admin thread and
 * the workers share: the lifecycle, the configuration snapshot in force and
 * its publication, the workers, and the reload counters.
 *
 * The snapshot pointer is published under a mutex that only writers (the
 * admin thread's PUT /routes, the main thread's reload) and snapshot
 * readers outside the request path take; workers learn of a new one
 * through their uv_async and adopt it between requests (worker.c). A
 * request keeps the snapshot it started with.
 */
#ifndef QX_RUNTIME_H
#define QX_RUNTIME_H

#include "conf/health.h"
#include "conf/snapshot.h"
#include "worker/worker.h"

#include <pthread.h>
#include <stdint.h>
#include <uv.h>

/*
 * The process's lifecycle (/startupz, /readyz, /livez answer from it),
 * set only with qx_runtime_set_lifecycle(); it only moves forward:
 *
 *   STARTING ---> LIVE ---> DRAINING ---> STOPPED
 *
 * and may skip a state (SIGTERM during start-up drains at once; a start
 * that fails stops). LIVE once every worker's loop runs; DRAINING on
 * SIGTERM or POST /drain; STOPPED when the workers have exited.
 */
typedef enum {
    QX_LC_STARTING = 0, /* config loaded, listeners being bound / workers starting */
    QX_LC_LIVE,         /* serving; /readyz 200 */
    QX_LC_DRAINING,     /* SIGTERM or POST /drain: /readyz 503, requests finish */
    QX_LC_STOPPED,
} qx_lifecycle_t;

enum { QX_SRC_FILE = 0, QX_SRC_API = 1, QX_SRC_COUNT };
enum { QX_RELOAD_OK = 0, QX_RELOAD_ERROR = 1, QX_RELOAD_RESTART = 2, QX_RELOAD_COUNT };

#define QX_ERR_STALE (-20) /* If-Match generation is not the current one (412) */

typedef struct qx_runtime {
    pthread_mutex_t lock; /* guards snap, source, last_error */
    qx_snapshot_t *snap;  /* in force */
    int source;           /* QX_SRC_*: who set the routes in force */
    char last_error[512]; /* the last rejected update ("" when none) */
    int lifecycle;        /* atomic qx_lifecycle_t */
    qx_worker_t *workers;
    unsigned nworkers;
    int workers_running; /* atomic: every worker thread is in its loop */
    double start_time;   /* unix seconds */
    uint64_t reloads[QX_SRC_COUNT][QX_RELOAD_COUNT]; /* atomic counters */
    uv_async_t *drain_async;                         /* the main loop's: starts the drain */
    const uint64_t *early_refused;                   /* atomic: 0-RTT refused as replays (tls.h) */
    uint64_t epoch;          /* under lock: the last snapshot's epoch (snapshot.h) */
    qx_dns_t *dns;           /* set once before the workers start; NULL: no resolver */
    uv_async_t *names_async; /* the main loop's: a new config may name other hosts */
    qx_health_tab_t health;  /* passive health of every endpoint */
    struct qx_xdp_proxy *xdp; /* the XDP filter's maps (xdp_proxy.h); NULL without xdp: */
    int last_reload;               /* atomic: 1 + source * QX_RELOAD_COUNT + result; 0 none yet */
    int64_t last_reload_ms;        /* atomic: when, unix milliseconds */
    int64_t cert_not_after; /* atomic: notAfter of the certificate in force, unix s; 0 unknown */
} qx_runtime_t;

/* Takes ownership of the first snapshot. Returns 0 or QX_ERR_NOMEM. */
int qx_runtime_init(qx_runtime_t *rt, qx_snapshot_t *snap);
void qx_runtime_free(qx_runtime_t *rt);

/* The snapshot in force, with a reference the caller drops with
 * qx_snapshot_unref(). Never NULL after init. Thread-safe. */
qx_snapshot_t *qx_runtime_snapshot(qx_runtime_t *rt);

/* The generation in force. Thread-safe. */
uint64_t qx_runtime_generation(qx_runtime_t *rt);

/*
 * Publishes |cfg| (ownership taken, also on failure) as the new snapshot:
 * generation + 1, |source| recorded, every worker told. A change to what
 * needs a restart (listen address, workers, cert/key paths, admin) is
 * refused with QX_ERR_CONFIG and a message naming the field. if_match != 0
 * makes it conditional: QX_ERR_STALE when the generation in force differs.
 * Counts the outcome in reloads[source]. On success stores the new
 * generation in *gen. Thread-safe.
 */
int qx_runtime_publish(qx_runtime_t *rt, qx_config_t *cfg, int source, uint64_t if_match,
                       uint64_t *gen, char *err, size_t errlen);

/* Publishes a snapshot derived from the one in force with the endpoints
 * the resolver knows now: same config and generation, new epoch, every
 * worker told (the user-visible generation stays). Returns 0 or
 * QX_ERR_NOMEM. Thread-safe. */
int qx_runtime_refresh(qx_runtime_t *rt);

/* The epoch in force (changes with every snapshot, DNS ones too). */
uint64_t qx_runtime_epoch(qx_runtime_t *rt);

/* Records a rejected update (bad file or body) for GET /config and the
 * counters, without touching the snapshot. Thread-safe. */
void qx_runtime_reject(qx_runtime_t *rt, int source, const char *err);

qx_lifecycle_t qx_runtime_lifecycle(qx_runtime_t *rt);
void qx_runtime_set_lifecycle(qx_runtime_t *rt, qx_lifecycle_t lc);

/* Starts the drain (as SIGTERM does). Thread-safe; idempotent. */
void qx_runtime_drain(qx_runtime_t *rt);

#endif
