/* worker.c - a worker thread and its loop (see worker.h). */
#include "worker/worker.h"

#include "base/log.h"
#include "base/qx.h"
#include "exchange/exchange.h"
#include "front/quic/quic.h"
#include "front/quic/tls.h"
#include "front/tcp/tcp_front.h"
#include "worker/runtime.h"

#include <stdlib.h>
#include <string.h>

#define TICK_MS 1000
#define RETIRED_POOL_MS 30000 /* how long a dropped upstream's pool stays findable */

static void on_wakeup(uv_async_t *h);

/* The worker's thread is the only writer; the admin thread (livez) and
 * other workers (forwarding) read it. The moves context.h draws: forward
 * only, and DRAINING only from RUNNING. */
static void set_state(qx_worker_t *w, qx_worker_state_t s)
{
    QRUX_ASSERT(s > w->ctx.state && (s != QX_W_DRAINING || w->ctx.state == QX_W_RUNNING));
    __atomic_store_n(&w->ctx.state, s, __ATOMIC_RELEASE);
}
static void on_inbox(uv_async_t *h);

#define INBOX_MAX 1024

struct qx_fwd_pkt {
    STAILQ_ENTRY(qx_fwd_pkt) link;
    struct sockaddr_storage local, remote;
    socklen_t locallen, remotelen;
    size_t len;
    uint8_t data[];
};
static void stop_now(qx_worker_t *w);
static void maybe_done(qx_wctx_t *ctx);
static qx_pool_t *pool_find(qx_wctx_t *ctx, const struct sockaddr *addr, socklen_t len);
static int forward(qx_wctx_t *ctx, unsigned to, const struct sockaddr *local, socklen_t locallen,
                   const struct sockaddr *remote, socklen_t remotelen, const uint8_t *data,
                   size_t len);

/* What a pool takes from the config and the process besides its idle cap. */
static void pool_limits(qx_worker_t *w, qx_pool_t *p, const qx_config_t *cfg)
{
    p->max_conns = cfg->limits.max_connections_per_upstream;
    p->idle_timeout_ms = (uint64_t)cfg->limits.upstream_keepalive_timeout_secs * 1000;
    p->fds = &w->ctx.shared->fds;
}

int qx_worker_init(qx_worker_t *w, unsigned id, qx_shared_t *shared, qx_snapshot_t *snap)
{
    const qx_config_t *cfg = snap->cfg;
    int rv;

    memset(w, 0, sizeof(*w));
    STAILQ_INIT(&w->inbox);
    w->ctx.id = id;
    w->ctx.shared = shared;
    w->ctx.maybe_done = maybe_done;
    w->ctx.pool_find = pool_find;
    w->ctx.forward = forward;
    w->ctx.state = QX_W_STARTING; /* where every worker starts; no move */
    if (uv_loop_init(&w->ctx.loop) != 0)
        return QX_ERR_IO;
    if (qx_defer_init(&w->ctx.defer, &w->ctx.loop) != 0)
        return QX_ERR_IO;
    w->ctx.snap = qx_snapshot_ref(snap);
    w->ctx.pools = calloc(snap->neps ? snap->neps : 1, sizeof(*w->ctx.pools));
    if (w->ctx.pools == NULL)
        return QX_ERR_NOMEM;
    for (size_t i = 0; i < snap->neps; i++) {
        const qx_endpoint_t *up = &snap->eps[i];
        rv = qx_pool_new(&w->ctx.pools[i], &w->ctx.loop, (const struct sockaddr *)&up->addr,
                         up->addrlen, cfg->limits.max_idle_connections_per_upstream,
                         (uint64_t)cfg->limits.upstream_keepalive_timeout_secs * 1000,
                         qx_metrics_upstream(&w->ctx.metrics, up->name, up->addrstr));
        if (rv != 0)
            return rv;
        pool_limits(w, w->ctx.pools[i], cfg);
    }
    rv = qx_quic_ep_new(&w->quic, &w->ctx, (const struct sockaddr *)&cfg->listen_addr,
                        cfg->listen_addrlen);
    if (rv != 0)
        return rv;
    if (cfg->https_listen) {
        rv = qx_tcp_front_new(&w->tcp, &w->ctx, (const struct sockaddr *)&cfg->https_addr,
                              cfg->https_addrlen);
        if (rv != 0)
            return rv;
    }
    uv_async_init(&w->ctx.loop, &w->wakeup, on_wakeup);
    uv_async_init(&w->ctx.loop, &w->inbox_async, on_inbox);
    pthread_mutex_init(&w->inbox_lock, NULL);
    uv_timer_init(&w->ctx.loop, &w->tick);
    uv_timer_init(&w->ctx.loop, &w->grace);
    return 0;
}

static void on_tick(uv_timer_t *t)
{
    qx_worker_t *w = qx_container_of(t, qx_worker_t, tick);
    uint64_t now = uv_now(&w->ctx.loop);
    __atomic_store_n(&w->last_tick_ms, uv_hrtime() / 1000000, __ATOMIC_RELAXED);
    for (size_t i = 0; i < w->ctx.snap->neps; i++) {
        if (w->ctx.pools[i])
            qx_pool_sweep(w->ctx.pools[i], now);
    }
    for (qx_pool_t **pp = &w->retired; *pp;) {
        qx_pool_t *p = *pp;
        if (p->nbusy == 0 && now - p->retired_at_ms >= RETIRED_POOL_MS) {
            *pp = p->retired_next;
            qx_pool_del(p);
        } else {
            pp = &p->retired_next;
        }
    }
}

static void del_retired(qx_worker_t *w)
{
    while (w->retired) {
        qx_pool_t *p = w->retired;
        w->retired = p->retired_next;
        qx_pool_del(p);
    }
}

static void thread_main(void *arg)
{
    qx_worker_t *w = arg;
    if (qx_quic_ep_start(w->quic) != 0 || (w->tcp && qx_tcp_front_start(w->tcp) != 0)) {
        QX_ERROR("worker %u: cannot start the UDP endpoint", w->ctx.id);
        w->exit_code = 1;
        stop_now(w);
    } else {
        uv_timer_start(&w->tick, on_tick, TICK_MS, TICK_MS);
        set_state(w, QX_W_RUNNING);
        __atomic_store_n(&w->last_tick_ms, uv_hrtime() / 1000000, __ATOMIC_RELAXED);
        __atomic_add_fetch(&w->ctx.shared->rt->workers_running, 1, __ATOMIC_ACQ_REL);
        if (w->ctx.shared->on_worker_start)
            w->ctx.shared->on_worker_start(w, w->ctx.shared->arg);
        /* A drain requested before the loop ran is picked up here. */
        on_wakeup(&w->wakeup);
    }
    uv_run(&w->ctx.loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&w->ctx.loop) != 0)
        QX_WARN("worker %u: loop closed with handles open", w->ctx.id);
    if (w->ctx.shared->on_worker_exit)
        w->ctx.shared->on_worker_exit(w, w->ctx.shared->arg);
}

int qx_worker_start(qx_worker_t *w)
{
    if (uv_thread_create(&w->thread, thread_main, w) != 0)
        return QX_ERR_IO;
    return 0;
}

static void on_grace(uv_timer_t *t)
{
    qx_worker_t *w = qx_container_of(t, qx_worker_t, grace);
    QX_WARN("worker %u: graceful_shutdown_secs passed with %u requests in flight; closing",
            w->ctx.id, w->ctx.nexchanges);
    stop_now(w);
}

/* Wakes the worker through one of its asyncs, unless it has stopped: once
 * its loop is closed, uv_async_send would write to a closed fd (libuv
 * aborts). The lock orders this against stop_now(). */
static void wake(qx_worker_t *w, uv_async_t *a)
{
    pthread_mutex_lock(&w->inbox_lock);
    if (__atomic_load_n(&w->ctx.state, __ATOMIC_ACQUIRE) != QX_W_STOPPED)
        uv_async_send(a);
    pthread_mutex_unlock(&w->inbox_lock);
}

static void stop_now(qx_worker_t *w)
{
    if (w->ctx.state == QX_W_STOPPED)
        return;
    pthread_mutex_lock(&w->inbox_lock);
    set_state(w, QX_W_STOPPED); /* from here on nobody wakes us (wake()) */
    pthread_mutex_unlock(&w->inbox_lock);
    qx_quic_ep_close(w->quic); /* ends every exchange, which frees upstream sockets */
    w->quic = NULL;
    qx_tcp_front_close(w->tcp);
    w->tcp = NULL;
    for (size_t i = 0; i < w->ctx.snap->neps; i++) {
        qx_pool_del(w->ctx.pools[i]);
        w->ctx.pools[i] = NULL;
    }
    del_retired(w);
    uv_close((uv_handle_t *)&w->tick, NULL);
    qx_defer_close(&w->ctx.defer);
    uv_close((uv_handle_t *)&w->grace, NULL);
    uv_close((uv_handle_t *)&w->wakeup, NULL);
    uv_close((uv_handle_t *)&w->inbox_async, NULL);
}

static void maybe_done(qx_wctx_t *ctx)
{
    qx_worker_t *w = qx_worker_of(ctx);
    if (w->ctx.state == QX_W_DRAINING && w->ctx.nexchanges == 0 &&
        qx_quic_ep_nconns(w->quic) == 0 && qx_tcp_front_nconns(w->tcp) == 0)
        stop_now(w);
}

static qx_pool_t *pool_find(qx_wctx_t *ctx, const struct sockaddr *addr, socklen_t len)
{
    qx_worker_t *w = qx_worker_of(ctx);
    for (size_t i = 0; i < w->ctx.snap->neps; i++) {
        qx_pool_t *p = w->ctx.pools[i];
        if (p && p->addrlen == len && memcmp(&p->addr, addr, len) == 0)
            return p;
    }
    for (qx_pool_t *p = w->retired; p; p = p->retired_next) {
        if (p->addrlen == len && memcmp(&p->addr, addr, len) == 0) {
            p->retired_at_ms = uv_now(&w->ctx.loop); /* in use: keep it a while longer */
            return p;
        }
    }
    return NULL;
}

/* Switches the worker to the snapshot in force. Pools of upstreams that
 * stay keep their idle connections; the others are deleted (their busy
 * connections finish with their requests). Requests in flight keep their
 * own snapshot reference. */
static void adopt_snapshot(qx_worker_t *w)
{
    qx_snapshot_t *snap = qx_runtime_snapshot(w->ctx.shared->rt);
    if (snap->epoch == w->ctx.snap->epoch) {
        qx_snapshot_unref(snap);
        return;
    }
    qx_snapshot_t *old = w->ctx.snap;
    qx_pool_t **pools = calloc(snap->neps ? snap->neps : 1, sizeof(*pools));
    if (pools == NULL) {
        QX_ERROR("worker %u: out of memory adopting generation %llu; keeping %llu", w->ctx.id,
                 (unsigned long long)snap->generation, (unsigned long long)old->generation);
        free(pools);
        qx_snapshot_unref(snap);
        return;
    }
    for (size_t i = 0; i < snap->neps; i++) {
        const qx_endpoint_t *up = &snap->eps[i];
        for (size_t j = 0; j < old->neps; j++) {
            qx_pool_t *p = w->ctx.pools[j];
            if (p && p->addrlen == up->addrlen && memcmp(&p->addr, &up->addr, up->addrlen) == 0) {
                pools[i] = p;
                w->ctx.pools[j] = NULL;
                p->max_idle = snap->cfg->limits.max_idle_connections_per_upstream;
                break;
            }
        }
        if (pools[i] == NULL &&
            qx_pool_new(&pools[i], &w->ctx.loop, (const struct sockaddr *)&up->addr, up->addrlen,
                        snap->cfg->limits.max_idle_connections_per_upstream,
                        (uint64_t)snap->cfg->limits.upstream_keepalive_timeout_secs * 1000,
                        qx_metrics_upstream(&w->ctx.metrics, up->name, up->addrstr)) != 0)
            pools[i] = NULL; /* dispatch answers 502 for a missing pool */
        if (pools[i])
            pool_limits(w, pools[i], snap->cfg);
    }
    /* Pools the new snapshot dropped: requests that began under the old one
     * may still need them (a retry), so they retire instead of dying; the
     * tick deletes them once empty. They keep no idle connection. */
    for (size_t j = 0; j < old->neps; j++) {
        qx_pool_t *p = w->ctx.pools[j];
        if (p == NULL)
            continue;
        qx_pool_retire(p);
        p->retired_at_ms = uv_now(&w->ctx.loop);
        p->retired_next = w->retired;
        w->retired = p;
    }
    free(w->ctx.pools);
    w->ctx.pools = pools;
    w->ctx.snap = snap;
    qx_snapshot_unref(old);
    QX_DEBUG("worker %u: generation %llu epoch %llu adopted (%zu endpoints)", w->ctx.id,
             (unsigned long long)snap->generation, (unsigned long long)snap->epoch, snap->neps);
}

/*
 * Hands a QUIC datagram to the worker that owns its connection (the worker
 * id is the first byte of our connection IDs); runs on the sending
 * worker's thread. The kernel's SO_REUSEPORT hash follows the 4-tuple, so
 * after a client migrates or its NAT rebinds, its packets can reach another
 * worker's socket; forwarding keeps the connection on the worker that has
 * its state. Bounded: past a backlog the datagram is dropped (QUIC
 * recovers). Returns 0 or QX_ERR_LIMIT / QX_ERR_NOMEM.
 */
static int forward(qx_wctx_t *ctx, unsigned to, const struct sockaddr *local, socklen_t locallen,
                   const struct sockaddr *remote, socklen_t remotelen, const uint8_t *data,
                   size_t len)
{
    if (to >= ctx->shared->rt->nworkers)
        return QX_ERR_INVAL;
    qx_worker_t *w = &ctx->shared->rt->workers[to];
    struct qx_fwd_pkt *p = malloc(sizeof(*p) + len);
    if (p == NULL)
        return QX_ERR_NOMEM;
    memcpy(&p->local, local, locallen);
    p->locallen = locallen;
    memcpy(&p->remote, remote, remotelen);
    p->remotelen = remotelen;
    p->len = len;
    memcpy(p->data, data, len);
    pthread_mutex_lock(&w->inbox_lock);
    if (w->ninbox >= INBOX_MAX ||
        __atomic_load_n(&w->ctx.state, __ATOMIC_ACQUIRE) == QX_W_STOPPED) {
        pthread_mutex_unlock(&w->inbox_lock);
        free(p);
        return QX_ERR_LIMIT;
    }
    STAILQ_INSERT_TAIL(&w->inbox, p, link);
    w->ninbox++;
    uv_async_send(&w->inbox_async); /* under the lock: see wake() */
    pthread_mutex_unlock(&w->inbox_lock);
    return 0;
}

static void on_inbox(uv_async_t *h)
{
    qx_worker_t *w = qx_container_of(h, qx_worker_t, inbox_async);
    struct qx_fwd_list list = STAILQ_HEAD_INITIALIZER(list);
    pthread_mutex_lock(&w->inbox_lock);
    STAILQ_CONCAT(&list, &w->inbox);
    w->ninbox = 0;
    pthread_mutex_unlock(&w->inbox_lock);
    /* In arrival order. */
    struct qx_fwd_pkt *p;
    while ((p = STAILQ_FIRST(&list)) != NULL) {
        STAILQ_REMOVE_HEAD(&list, link);
        qx_cnt_add(&w->ctx.metrics.quic_forwarded, 1);
        if (w->quic)
            qx_quic_ep_input(w->quic, (struct sockaddr *)&p->local, p->locallen,
                             (struct sockaddr *)&p->remote, p->remotelen, p->data, p->len);
        free(p);
    }
}

void qx_worker_notify(qx_worker_t *w)
{
    wake(w, &w->wakeup);
}

static void on_wakeup(uv_async_t *h)
{
    qx_worker_t *w = qx_container_of(h, qx_worker_t, wakeup);
    int cmd = __atomic_load_n(&w->cmd, __ATOMIC_ACQUIRE);
    if (w->ctx.state == QX_W_RUNNING || w->ctx.state == QX_W_DRAINING)
        adopt_snapshot(w);
    if (cmd == QX_W_STOPPED) {
        stop_now(w);
    } else if (cmd == QX_W_DRAINING && w->ctx.state == QX_W_RUNNING) {
        set_state(w, QX_W_DRAINING);
        qx_quic_ep_drain(w->quic);
        qx_tcp_front_drain(w->tcp);
        uv_timer_start(&w->grace, on_grace,
                       (uint64_t)w->ctx.snap->cfg->limits.graceful_shutdown_secs * 1000, 0);
        maybe_done(&w->ctx);
    }
}

void qx_worker_drain(qx_worker_t *w)
{
    int expect = 0;
    __atomic_compare_exchange_n(&w->cmd, &expect, QX_W_DRAINING, 0, __ATOMIC_RELEASE,
                                __ATOMIC_RELAXED);
    wake(w, &w->wakeup);
}

void qx_worker_stop(qx_worker_t *w)
{
    __atomic_store_n(&w->cmd, QX_W_STOPPED, __ATOMIC_RELEASE);
    wake(w, &w->wakeup);
}

void qx_worker_free(qx_worker_t *w)
{
    if (w->ctx.snap == NULL)
        return;
    if (w->ctx.pools) {
        for (size_t i = 0; i < w->ctx.snap->neps; i++)
            qx_pool_del(w->ctx.pools[i]);
    }
    del_retired(w);
    qx_exchange_cache_free(&w->ctx);
    free(w->ctx.pools);
    struct qx_fwd_pkt *p;
    while ((p = STAILQ_FIRST(&w->inbox)) != NULL) {
        STAILQ_REMOVE_HEAD(&w->inbox, link);
        free(p);
    }
    pthread_mutex_destroy(&w->inbox_lock);
    qx_metrics_free(&w->ctx.metrics);
    qx_snapshot_unref(w->ctx.snap);
    w->ctx.snap = NULL;
}
