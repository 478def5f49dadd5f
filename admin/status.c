/* status.c - the status page's data and its sampler (see status.h). */
#include "admin/status.h"

#include "base/qx.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct qx_status {
    qx_runtime_t *rt;
    pthread_t thread;
    pthread_mutex_t lock; /* guards ring, n, head and stop */
    pthread_cond_t cond;  /* wakes the sampler to stop */
    int stop;
    qx_status_sample_t ring[QX_STATUS_SAMPLES];
    size_t n;    /* samples held */
    size_t head; /* where the next one goes */
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t ld(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static size_t ld_count(const size_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE); /* pairs with the worker's release */
}

/* ------------------------------------------------------------------------
 * sampler */

static void take_sample(qx_status_t *s)
{
    qx_status_sample_t x = {.ms = mono_ms()};
    for (unsigned i = 0; i < s->rt->nworkers; i++) {
        const qx_metrics_t *m = &s->rt->workers[i].ctx.metrics;
        for (int p = 0; p < QX_P_COUNT; p++) {
            x.requests[p] += ld(&m->proto_requests[p]);
            x.duration_us[p] += ld(&m->proto_duration_us[p]);
        }
    }
    pthread_mutex_lock(&s->lock);
    s->ring[s->head] = x;
    s->head = (s->head + 1) % QX_STATUS_SAMPLES;
    if (s->n < QX_STATUS_SAMPLES)
        s->n++;
    pthread_mutex_unlock(&s->lock);
}

static void *sampler(void *arg)
{
    qx_status_t *s = arg;
    take_sample(s); /* the baseline: counters are 0 at start */
    pthread_mutex_lock(&s->lock);
    while (!s->stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += QX_STATUS_PERIOD_MS / 1000;
        int rv = 0;
        while (!s->stop && rv != ETIMEDOUT)
            rv = pthread_cond_timedwait(&s->cond, &s->lock, &until);
        if (s->stop)
            break;
        pthread_mutex_unlock(&s->lock);
        take_sample(s);
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

int qx_status_start(qx_status_t **out, qx_runtime_t *rt)
{
    pthread_condattr_t ca;
    qx_status_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return QX_ERR_NOMEM;
    s->rt = rt;
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&s->thread, NULL, sampler, s) != 0) {
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return QX_ERR_IO;
    }
    *out = s;
    return 0;
}

void qx_status_stop(qx_status_t *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->lock);
    s->stop = 1;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

size_t qx_status_series(const qx_status_sample_t *s, size_t n, int proto, double *rate,
                        double *lat_ms)
{
    if (n < 2)
        return 0;
    for (size_t i = 1; i < n; i++) {
        const qx_status_sample_t *a = &s[i - 1], *b = &s[i];
        double secs = b->ms > a->ms ? (double)(b->ms - a->ms) / 1000.0 : 0;
        uint64_t dr = b->requests[proto] - a->requests[proto];
        uint64_t dd = b->duration_us[proto] - a->duration_us[proto];
        rate[i - 1] = secs > 0 ? (double)dr / secs : 0;
        lat_ms[i - 1] = dr > 0 ? (double)dd / (double)dr / 1000.0 : -1;
    }
    return n - 1;
}

/* ------------------------------------------------------------------------
 * /status.json */

static const char *lifecycle_name(qx_lifecycle_t lc)
{
    switch (lc) {
    case QX_LC_STARTING:
        return "STARTING";
    case QX_LC_LIVE:
        return "LIVE";
    case QX_LC_DRAINING:
        return "DRAINING";
    case QX_LC_STOPPED:
        return "STOPPED";
    }
    return "UNKNOWN";
}

static json_t *protocols_json(qx_status_t *s)
{
    qx_status_sample_t ring[QX_STATUS_SAMPLES];
    size_t n;
    pthread_mutex_lock(&s->lock);
    n = s->n;
    for (size_t i = 0; i < n; i++) /* oldest first */
        ring[i] = s->ring[(s->head + QX_STATUS_SAMPLES - n + i) % QX_STATUS_SAMPLES];
    pthread_mutex_unlock(&s->lock);

    json_t *arr = json_array();
    for (int p = 0; p < QX_P_COUNT && arr; p++) {
        double rate[QX_STATUS_SAMPLES], lat[QX_STATUS_SAMPLES];
        size_t k = qx_status_series(ring, n, p, rate, lat);
        json_t *o = json_object(), *jr = json_array(), *jl = json_array();
        if (o == NULL || jr == NULL || jl == NULL) {
            json_decref(o);
            json_decref(jr);
            json_decref(jl);
            json_decref(arr);
            return NULL;
        }
        for (size_t i = 0; i < k; i++) {
            json_array_append_new(jr, json_real(rate[i]));
            json_array_append_new(jl, lat[i] < 0 ? json_null() : json_real(lat[i]));
        }
        /* The last minute's mean rate, over the samples held. */
        double rate_1m = 0;
        if (n >= 2) {
            size_t first = n > 61 ? n - 61 : 0;
            const qx_status_sample_t *a = &ring[first], *b = &ring[n - 1];
            if (b->ms > a->ms)
                rate_1m =
                    (double)(b->requests[p] - a->requests[p]) * 1000.0 / (double)(b->ms - a->ms);
        }
        json_object_set_new(o, "protocol", json_string(qx_metrics_proto_name(p)));
        json_object_set_new(o, "requests_total",
                            json_integer(n ? (json_int_t)ring[n - 1].requests[p] : 0));
        json_object_set_new(o, "rate_now", json_real(k ? rate[k - 1] : 0));
        json_object_set_new(o, "rate_1m", json_real(rate_1m));
        json_object_set_new(o, "rate_per_second", jr);
        json_object_set_new(o, "latency_ms", jl);
        json_array_append_new(arr, o);
    }
    return arr;
}

typedef struct up_stats {
    uint64_t requests, r5xx, connect_errors, timeouts, idle, busy;
} up_stats_t;

static void upstream_stats(const qx_runtime_t *rt, const char *name, up_stats_t *st)
{
    memset(st, 0, sizeof(*st));
    for (unsigned i = 0; i < rt->nworkers; i++) {
        const qx_metrics_t *m = &rt->workers[i].ctx.metrics;
        size_t nreq = QX_MIN(ld_count(&m->nreq), (size_t)QX_METRICS_ROWS);
        for (size_t r = 0; r < nreq; r++) {
            const qx_metrics_req_row_t *row = &m->req[r];
            if (row->upstream == NULL || strcmp(row->upstream, name) != 0)
                continue;
            uint64_t c = ld(&row->count);
            st->requests += c;
            if (row->status >= 500)
                st->r5xx += c;
        }
        size_t nup = QX_MIN(ld_count(&m->nup), QX_ARRAY_LEN(m->up));
        for (size_t r = 0; r < nup; r++) {
            const qx_metrics_up_row_t *row = &m->up[r];
            if (row->upstream == NULL || strcmp(row->upstream, name) != 0)
                continue;
            st->connect_errors += ld(&row->connect_errors);
            st->timeouts += ld(&row->timeouts);
            st->idle += ld(&row->pool_idle);
            st->busy += ld(&row->pool_busy);
        }
    }
}

static json_t *routes_json(const qx_runtime_t *rt, const qx_status_view_t *v)
{
    const qx_snapshot_t *snap = v->snap;
    json_t *arr = json_array();
    for (size_t r = 0; r < snap->cfg->nroutes && arr; r++) {
        const qx_route_cfg_t *route = &snap->cfg->routes[r];
        json_t *o = json_object(), *ups = json_array();
        if (o == NULL || ups == NULL) {
            json_decref(o);
            json_decref(ups);
            json_decref(arr);
            return NULL;
        }
        for (size_t u = 0; u < route->nupstreams; u++) {
            up_stats_t st;
            upstream_stats(rt, route->upstreams[u].name, &st);
            /* An upstream is accepting when one of its endpoints (the
             * addresses its name resolves to) accepted at the last check,
             * refusing when every one checked refused. */
            int seen = 0, accepting = 0;
            for (size_t e = snap->ep_base[r]; e < snap->ep_base[r] + snap->ep_count[r]; e++) {
                if (e >= v->up_checked || strcmp(snap->eps[e].name, route->upstreams[u].name) != 0)
                    continue;
                seen = 1;
                accepting |= !v->up_failed[e];
            }
            const char *health = !seen ? "unknown" : accepting ? "accepting" : "refusing";
            json_t *x = json_object();
            if (x == NULL)
                continue;
            json_object_set_new(x, "address", json_string(route->upstreams[u].name));
            json_object_set_new(x, "health", json_string(health));
            json_object_set_new(x, "requests_total", json_integer((json_int_t)st.requests));
            json_object_set_new(x, "responses_5xx", json_integer((json_int_t)st.r5xx));
            json_object_set_new(x, "connect_errors", json_integer((json_int_t)st.connect_errors));
            json_object_set_new(x, "timeouts", json_integer((json_int_t)st.timeouts));
            json_object_set_new(x, "pool_idle", json_integer((json_int_t)st.idle));
            json_object_set_new(x, "pool_busy", json_integer((json_int_t)st.busy));
            json_array_append_new(ups, x);
        }
        json_object_set_new(o, "match", json_string(route->match));
        json_object_set_new(o, "upstreams", ups);
        json_array_append_new(arr, o);
    }
    return arr;
}

static json_t *last_reload_json(qx_runtime_t *rt)
{
    static const char *const src[QX_SRC_COUNT] = {"file", "api"};
    static const char *const res[QX_RELOAD_COUNT] = {"success", "error", "restart_required"};
    int last = __atomic_load_n(&rt->last_reload, __ATOMIC_RELAXED);
    if (last <= 0 || last > QX_SRC_COUNT * QX_RELOAD_COUNT)
        return json_null();
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "source", json_string(src[(last - 1) / QX_RELOAD_COUNT]));
    json_object_set_new(o, "result", json_string(res[(last - 1) % QX_RELOAD_COUNT]));
    json_object_set_new(
        o, "unix_ms",
        json_integer((json_int_t)__atomic_load_n(&rt->last_reload_ms, __ATOMIC_RELAXED)));
    return o;
}

json_t *qx_status_json(qx_status_t *s, const qx_status_view_t *v)
{
    qx_runtime_t *rt = s->rt;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    double unix_now = (double)now.tv_sec + (double)now.tv_nsec / 1e9;

    uint64_t conns[QX_P_COUNT] = {0};
    for (unsigned i = 0; i < rt->nworkers; i++) {
        const qx_metrics_t *m = &rt->workers[i].ctx.metrics;
        conns[QX_P_H3] += ld(&m->active_connections_h3);
        conns[QX_P_H2] += ld(&m->active_connections_h2);
        conns[QX_P_H1] += ld(&m->active_connections_h1);
    }
    json_t *o = json_object(), *jc = json_object(), *cert = json_object();
    json_t *protos = protocols_json(s), *routes = routes_json(rt, v);
    json_t *reload = last_reload_json(rt);
    if (o == NULL || jc == NULL || cert == NULL || protos == NULL || routes == NULL ||
        reload == NULL) {
        json_decref(o);
        json_decref(jc);
        json_decref(cert);
        json_decref(protos);
        json_decref(routes);
        json_decref(reload);
        return NULL;
    }
    for (int p = 0; p < QX_P_COUNT; p++)
        json_object_set_new(jc, qx_metrics_proto_name(p), json_integer((json_int_t)conns[p]));
    int64_t not_after = __atomic_load_n(&rt->cert_not_after, __ATOMIC_RELAXED);
    json_object_set_new(cert, "not_after", not_after ? json_integer(not_after) : json_null());
    json_object_set_new(cert, "expires_in_seconds",
                        not_after ? json_real((double)not_after - unix_now) : json_null());

    json_object_set_new(o, "version", json_string(QX_VERSION));
    json_object_set_new(o, "state", json_string(lifecycle_name(qx_runtime_lifecycle(rt))));
    json_object_set_new(o, "ready", json_boolean(v->ready));
    json_object_set_new(o, "ready_reason", json_string(v->ready_reason));
    json_object_set_new(o, "uptime_seconds", json_real(unix_now - rt->start_time));
    json_object_set_new(o, "workers", json_integer((json_int_t)rt->nworkers));
    json_object_set_new(o, "generation", json_integer((json_int_t)v->snap->generation));
    json_object_set_new(o, "source", json_string(v->source == QX_SRC_API ? "api" : "file"));
    json_object_set_new(o, "last_error",
                        v->last_error[0] ? json_string(v->last_error) : json_null());
    json_object_set_new(o, "last_reload", reload);
    json_object_set_new(o, "certificate", cert);
    json_object_set_new(o, "connections", jc);
    json_object_set_new(o, "interval_seconds", json_integer(QX_STATUS_PERIOD_MS / 1000));
    json_object_set_new(o, "protocols", protos);
    json_object_set_new(o, "routes", routes);
    return o;
}
