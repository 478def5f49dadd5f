/* runtime.c - process-wide state and snapshot publication (see runtime.h). */
#include "worker/runtime.h"

#include "base/log.h"
#include "base/qx.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

int qx_runtime_init(qx_runtime_t *rt, qx_snapshot_t *snap)
{
    struct timeval tv;
    memset(rt, 0, sizeof(*rt));
    if (pthread_mutex_init(&rt->lock, NULL) != 0)
        return QX_ERR_NOMEM;
    rt->snap = snap;
    rt->epoch = 1;
    snap->epoch = 1;
    qx_health_tab_init(&rt->health);
    rt->source = QX_SRC_FILE;
    gettimeofday(&tv, NULL);
    rt->start_time = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
    return 0;
}

void qx_runtime_free(qx_runtime_t *rt)
{
    qx_snapshot_unref(rt->snap);
    rt->snap = NULL;
    qx_health_tab_free(&rt->health);
    pthread_mutex_destroy(&rt->lock);
}

qx_snapshot_t *qx_runtime_snapshot(qx_runtime_t *rt)
{
    pthread_mutex_lock(&rt->lock);
    qx_snapshot_t *s = qx_snapshot_ref(rt->snap);
    pthread_mutex_unlock(&rt->lock);
    return s;
}

uint64_t qx_runtime_generation(qx_runtime_t *rt)
{
    pthread_mutex_lock(&rt->lock);
    uint64_t g = rt->snap->generation;
    pthread_mutex_unlock(&rt->lock);
    return g;
}

static int str_eq(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

/* Fields a running process cannot change: they are bound or loaded once. */
static const char *restart_field(const qx_config_t *old, const qx_config_t *cfg)
{
    if (!str_eq(old->listen, cfg->listen))
        return "server.listen";
    if (old->workers != cfg->workers)
        return "server.workers";
    if (!str_eq(old->cert, cfg->cert))
        return "server.cert";
    if (!str_eq(old->key, cfg->key))
        return "server.key";
    if (!str_eq(old->https_listen, cfg->https_listen))
        return "server.https_listen";
    if (!str_eq(old->admin.listen, cfg->admin.listen))
        return "admin.listen";
    if (!str_eq(old->admin.token_file, cfg->admin.token_file))
        return "admin.token_file";
    if (old->admin.ready_requires_upstream != cfg->admin.ready_requires_upstream)
        return "admin.ready_requires_upstream";
    /* Set in every TLS session at start (0-RTT on/off, ticket keys). */
    if (old->early_data != cfg->early_data)
        return "server.early_data";
    if (!str_eq(old->ticket_key_file, cfg->ticket_key_file))
        return "server.ticket_key_file";
    /* The resolver is set up once (main.c); its TTL bounds follow reloads. */
    if (!str_eq(old->dns.servers, cfg->dns.servers))
        return "dns.servers";
    if (old->dns.ndots != cfg->dns.ndots)
        return "dns.ndots";
    int same = old->dns.nsearch == cfg->dns.nsearch;
    for (size_t i = 0; same && i < cfg->dns.nsearch; i++)
        same = str_eq(old->dns.search[i], cfg->dns.search[i]);
    if (!same)
        return "dns.search";
    /* Read once by xdp_proxy.c, which hands the rate to the filter: a live
     * change would make qrux and the filter disagree. */
    if (!str_eq(old->xdp.pin, cfg->xdp.pin))
        return "xdp.pin";
    if (old->xdp.initial_rate != cfg->xdp.initial_rate)
        return "xdp.initial_rate";
    if (old->xdp.initial_burst != cfg->xdp.initial_burst)
        return "xdp.initial_burst";
    if (old->xdp.cid_key_rotate_secs != cfg->xdp.cid_key_rotate_secs)
        return "xdp.cid_key_rotate_secs";
    if (old->log_json != cfg->log_json)
        return "log.format";
    return NULL;
}

/* Counts an update's outcome and remembers it as the last one (the status
 * page shows it). */
static void count(qx_runtime_t *rt, int source, int result)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    __atomic_add_fetch(&rt->reloads[source][result], 1, __ATOMIC_RELAXED);
    __atomic_store_n(&rt->last_reload_ms, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000,
                     __ATOMIC_RELAXED);
    __atomic_store_n(&rt->last_reload, 1 + source * QX_RELOAD_COUNT + result, __ATOMIC_RELAXED);
}

int qx_runtime_publish(qx_runtime_t *rt, qx_config_t *cfg, int source, uint64_t if_match,
                       uint64_t *gen, char *err, size_t errlen)
{
    qx_snapshot_t *snap = NULL;

    pthread_mutex_lock(&rt->lock);
    qx_snapshot_t *old = rt->snap;
    if (if_match != 0 && if_match != old->generation) {
        snprintf(err, errlen, "generation %llu is not the current one (%llu)",
                 (unsigned long long)if_match, (unsigned long long)old->generation);
        pthread_mutex_unlock(&rt->lock);
        qx_config_del(cfg);
        return QX_ERR_STALE;
    }
    const char *field = restart_field(old->cfg, cfg);
    if (field) {
        snprintf(err, errlen, "%s: changing it needs a restart; the running config is kept", field);
        snprintf(rt->last_error, sizeof(rt->last_error), "%s", err);
        pthread_mutex_unlock(&rt->lock);
        qx_config_del(cfg);
        count(rt, source, QX_RELOAD_RESTART);
        return QX_ERR_CONFIG;
    }
    int rv = qx_snapshot_new(&snap, cfg, old->generation + 1, rt->dns, &rt->health);
    if (rv != 0) {
        pthread_mutex_unlock(&rt->lock);
        snprintf(err, errlen, "out of memory");
        count(rt, source, QX_RELOAD_ERROR);
        return rv;
    }
    snap->epoch = ++rt->epoch;
    rt->snap = snap;
    rt->source = source;
    rt->last_error[0] = '\0';
    *gen = snap->generation;
    pthread_mutex_unlock(&rt->lock);

    count(rt, source, QX_RELOAD_OK);
    QX_INFO("config: generation %llu in force (%zu route%s, from %s)",
            (unsigned long long)snap->generation, snap->cfg->nroutes,
            snap->cfg->nroutes == 1 ? "" : "s", source == QX_SRC_API ? "api" : "file");
    for (unsigned i = 0; i < rt->nworkers; i++)
        qx_worker_notify(&rt->workers[i]);
    qx_snapshot_unref(old); /* workers and requests hold their own references */
    uv_async_t *names = __atomic_load_n(&rt->names_async, __ATOMIC_ACQUIRE);
    if (names)
        uv_async_send(names);
    return 0;
}

int qx_runtime_refresh(qx_runtime_t *rt)
{
    qx_snapshot_t *snap = NULL;
    pthread_mutex_lock(&rt->lock);
    qx_snapshot_t *old = rt->snap;
    int rv = qx_snapshot_derive(&snap, old, rt->dns, &rt->health);
    if (rv != 0) {
        pthread_mutex_unlock(&rt->lock);
        QX_ERROR("dns: out of memory: new addresses not in force");
        return rv;
    }
    snap->epoch = ++rt->epoch;
    rt->snap = snap;
    pthread_mutex_unlock(&rt->lock);
    QX_DEBUG("endpoints: epoch %llu in force (%zu endpoints, generation %llu)",
             (unsigned long long)snap->epoch, snap->neps, (unsigned long long)snap->generation);
    for (unsigned i = 0; i < rt->nworkers; i++)
        qx_worker_notify(&rt->workers[i]);
    qx_snapshot_unref(old);
    return 0;
}

uint64_t qx_runtime_epoch(qx_runtime_t *rt)
{
    pthread_mutex_lock(&rt->lock);
    uint64_t e = rt->snap->epoch;
    pthread_mutex_unlock(&rt->lock);
    return e;
}

void qx_runtime_reject(qx_runtime_t *rt, int source, const char *err)
{
    pthread_mutex_lock(&rt->lock);
    snprintf(rt->last_error, sizeof(rt->last_error), "%s", err);
    pthread_mutex_unlock(&rt->lock);
    count(rt, source, QX_RELOAD_ERROR);
}

qx_lifecycle_t qx_runtime_lifecycle(qx_runtime_t *rt)
{
    return (qx_lifecycle_t)__atomic_load_n(&rt->lifecycle, __ATOMIC_ACQUIRE);
}

/* The lifecycle's one setter. Any forward move is legal (runtime.h draws
 * them); the main thread and the admin thread race (POST /drain while the
 * workers start), so a late or repeated move is ignored, not a bug. */
void qx_runtime_set_lifecycle(qx_runtime_t *rt, qx_lifecycle_t lc)
{
    QRUX_ASSERT(lc >= QX_LC_STARTING && lc <= QX_LC_STOPPED);
    int cur = __atomic_load_n(&rt->lifecycle, __ATOMIC_ACQUIRE);
    while ((int)lc > cur) {
        if (__atomic_compare_exchange_n(&rt->lifecycle, &cur, (int)lc, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            break;
    }
}

void qx_runtime_drain(qx_runtime_t *rt)
{
    if (rt->drain_async)
        uv_async_send(rt->drain_async);
}
