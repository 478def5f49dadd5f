/*
 * admin.c - the embedded admin server (see admin.h): libmicrohttpd with
 * its own polling thread, probes, /metrics, the JSON route API, /config
 * and /drain.
 *
 * Threading: the daemon runs one internal polling thread (no thread pool,
 * no thread per connection), so every handler below runs on that thread
 * and the admin's own state (the upstream check cache) needs no lock. The
 * handlers read worker counters with atomic loads and take the runtime
 * mutex only through the runtime's publish/snapshot functions, which no
 * worker takes on its request path: a slow scrape never stalls a request.
 */
#include "admin/admin.h"

#include "admin/metrics_text.h"
#include "admin/status.h"
#include "base/log.h"
#include "base/qx.h"
#include "base/str.h"
#include "conf/dns.h"
#include "config/config_json.h"
#include "xdp/xdp_proxy.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ADMIN_MAX_BODY (1u << 20) /* PUT /routes bodies; larger -> 413 */
/* Slow or idle clients must not starve the probes: each source address
 * holds at most ADMIN_MAX_PER_IP connections (the kubelet probes from the
 * node's address, which an attacker elsewhere cannot fill), the total is
 * bounded by ADMIN_MAX_CONNECTIONS, and a connection that sends nothing
 * for ADMIN_CONN_TIMEOUT_SECS (a slow head included) is dropped. */
#define ADMIN_MAX_CONNECTIONS 256u
#define ADMIN_MAX_PER_IP 8u
#define ADMIN_CONN_TIMEOUT_SECS 3u
#define ADMIN_TOKEN_MAX 4096          /* a bearer token file larger than this is refused */
#define LIVEZ_MAX_TICK_AGE_MS 5000    /* workers tick every second (worker.c TICK_MS) */
#define UPSTREAM_CHECK_TIMEOUT_MS 200 /* per /readyz upstream check, all in parallel */
#define UPSTREAM_CHECK_CACHE_MS 1000  /* kubelet probes every few seconds; one check serves */
#define UPSTREAM_CHECK_MAX 256        /* distinct upstream addresses probed per check */
#define DISCARD_BODY_MAX (4u * ADMIN_MAX_BODY) /* an oversized body past this: dropped */

struct qx_admin {
    qx_runtime_t *rt;
    struct MHD_Daemon *daemon;
    char *token; /* NULL: no token required */
    size_t token_len;
    int ready_requires_upstream;
    char listen[128];

    /* The last upstream check for /readyz; under check_lock. */
    uint64_t up_checked_ms;
    uint64_t up_epoch;
    int up_ok;
    pthread_mutex_t check_lock; /* the check is also asked for by the main thread */
    char up_reason[256];
    /* For the status page: per endpoint of the checked snapshot (its
     * eps[]), whether it refused; how many were checked, and the epoch. */
    uint8_t up_failed[UPSTREAM_CHECK_MAX];
    size_t up_checked;

    qx_status_t *status; /* the status page's sampler */

    /* MHD's last log line while starting, for the start error message. */
    int starting;
    char start_err[256];
};

/* Per-request state, from the head to the end of the body. */
typedef struct admin_req {
    int ep;
    int keep;      /* PUT /routes: the body is kept */
    qx_buf_t body; /* kept: at most ADMIN_MAX_BODY bytes, NUL-terminated */
    size_t seen;   /* body bytes received, kept or not */
    int too_large;
} admin_req_t;

enum {
    EP_LIVEZ,
    EP_READYZ,
    EP_STARTUPZ,
    EP_METRICS,
    EP_ROUTES,
    EP_CONFIG,
    EP_DRAIN,
    EP_XDP_DENY,
    EP_STATUS_PAGE,
    EP_STATUS_JSON,
    EP_COUNT
};

static const struct {
    const char *path;
    const char *allow; /* the Allow header of a 405, and what is accepted */
    int probe;         /* no token needed: the kubelet has none */
} endpoints[EP_COUNT] = {
    [EP_LIVEZ] = {"/livez", "GET, HEAD", 1},
    [EP_READYZ] = {"/readyz", "GET, HEAD", 1},
    [EP_STARTUPZ] = {"/startupz", "GET, HEAD", 1},
    [EP_METRICS] = {"/metrics", "GET, HEAD", 0},
    [EP_ROUTES] = {"/routes", "GET, HEAD, PUT", 0},
    [EP_CONFIG] = {"/config", "GET, HEAD", 0},
    [EP_DRAIN] = {"/drain", "POST", 0},
    [EP_XDP_DENY] = {"/xdp/denylist", "GET, HEAD, PUT", 0},
    [EP_STATUS_PAGE] = {"/", "GET, HEAD", 0},
    [EP_STATUS_JSON] = {"/status.json", "GET, HEAD", 0},
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------------
 * responses */

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *ctype,
                             const char *body, size_t len, const char *hname, const char *hval)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    /* Probe and metric answers are live state: never cache them. */
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (hname)
        MHD_add_response_header(r, hname, hval);
    enum MHD_Result rv = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rv;
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status, const char *text)
{
    return reply(c, status, "text/plain; charset=utf-8", text, strlen(text), NULL, NULL);
}

/* Sends |obj| (reference stolen) as JSON. */
static enum MHD_Result reply_json(struct MHD_Connection *c, unsigned status, json_t *obj)
{
    if (obj == NULL)
        return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    char *s = json_dumps(obj, JSON_INDENT(2));
    json_decref(obj);
    if (s == NULL)
        return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    size_t n = strlen(s);
    char *body = malloc(n + 2);
    if (body == NULL) {
        free(s);
        return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    }
    memcpy(body, s, n);
    body[n] = '\n';
    body[n + 1] = '\0';
    free(s);
    enum MHD_Result rv = reply(c, status, "application/json", body, n + 1, NULL, NULL);
    free(body);
    return rv;
}

static enum MHD_Result reply_error(struct MHD_Connection *c, unsigned status, const char *err,
                                   const char *field)
{
    json_t *o = json_object();
    if (o) {
        json_object_set_new(o, "error", json_string(err));
        json_object_set_new(o, "field", json_string(field ? field : ""));
    }
    return reply_json(c, status, o);
}

/* ------------------------------------------------------------------------
 * token */

/* Reads the bearer token: the file's bytes without trailing whitespace (a
 * Secret written by `kubectl create secret --from-file` often ends in a
 * newline). */
int qx_admin_read_token(const char *path, char **token, size_t *len, char *err, size_t errlen)
{
    char buf[ADMIN_TOKEN_MAX + 1];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        snprintf(err, errlen, "admin.token_file: cannot read %s: %s", path, strerror(errno));
        return QX_ERR_CONFIG;
    }
    size_t n = 0;
    while (n < sizeof(buf)) {
        ssize_t r = read(fd, buf + n, sizeof(buf) - n);
        if (r == -1 && errno == EINTR)
            continue;
        if (r == -1) {
            snprintf(err, errlen, "admin.token_file: cannot read %s: %s", path, strerror(errno));
            close(fd);
            return QX_ERR_CONFIG;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (n > ADMIN_TOKEN_MAX) {
        snprintf(err, errlen, "admin.token_file: %s is larger than %d bytes", path,
                 ADMIN_TOKEN_MAX);
        return QX_ERR_CONFIG;
    }
    while (n > 0 &&
           (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        n--;
    if (n == 0) {
        snprintf(err, errlen, "admin.token_file: %s is empty", path);
        return QX_ERR_CONFIG;
    }
    *token = malloc(n + 1);
    if (*token == NULL) {
        snprintf(err, errlen, "out of memory");
        return QX_ERR_NOMEM;
    }
    memcpy(*token, buf, n);
    (*token)[n] = '\0';
    *len = n;
    explicit_bzero(buf, sizeof(buf));
    return 0;
}

static int read_token(qx_admin_t *a, const char *path, char *err, size_t errlen)
{
    return qx_admin_read_token(path, &a->token, &a->token_len, err, errlen);
}

/* Compares every byte of the longer of the two strings, without an early
 * exit, so the time taken does not tell how many leading bytes matched.
 * (The lengths may leak; the token's length is no secret worth a
 * padding scheme.) */
static int token_equal(const char *given, size_t glen, const char *tok, size_t tlen)
{
    size_t n = QX_MAX(glen, tlen);
    volatile unsigned char diff = (unsigned char)(glen != tlen);
    for (size_t i = 0; i < n; i++) {
        unsigned char x = i < glen ? (unsigned char)given[i] : 0;
        unsigned char y = i < tlen ? (unsigned char)tok[i] : 0;
        diff |= (unsigned char)(x ^ y);
    }
    return diff == 0;
}

static int authorized(const qx_admin_t *a, struct MHD_Connection *c)
{
    if (a->token == NULL)
        return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (h == NULL)
        return 0;
    while (*h == ' ' || *h == '\t')
        h++;
    if (strncasecmp(h, "Bearer", 6) != 0 || (h[6] != ' ' && h[6] != '\t'))
        return 0;
    h += 6;
    while (*h == ' ' || *h == '\t')
        h++;
    size_t n = strlen(h);
    while (n > 0 && (h[n - 1] == ' ' || h[n - 1] == '\t'))
        n--;
    return token_equal(h, n, a->token, a->token_len);
}

static enum MHD_Result reply_unauthorized(struct MHD_Connection *c)
{
    int had = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION) != 0;
    return reply(c, MHD_HTTP_UNAUTHORIZED, "text/plain; charset=utf-8", "unauthorized\n", 13,
                 MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                 had ? "Bearer realm=\"qrux\", error=\"invalid_token\"" : "Bearer realm=\"qrux\"");
}

/* ------------------------------------------------------------------------
 * probes */

/* Starts a non-blocking connect to every distinct endpoint of the
 * snapshot in force and waits for all of them together, at most
 * UPSTREAM_CHECK_TIMEOUT_MS: one slow upstream costs 200 ms, not 200 ms
 * each. A route is ready when one of its endpoints accepts (failover
 * serves it); a route whose names resolve to nothing is not. Fills
 * a->up_ok / up_reason (the first route that is not ready, in config
 * order). */
static void check_upstreams(qx_admin_t *a)
{
    qx_snapshot_t *snap = qx_runtime_snapshot(a->rt);
    size_t n = QX_MIN(snap->neps, (size_t)UPSTREAM_CHECK_MAX);
    struct pollfd pfd[UPSTREAM_CHECK_MAX];
    size_t which[UPSTREAM_CHECK_MAX]; /* pfd[k] checks endpoint which[k] */
    size_t same[UPSTREAM_CHECK_MAX];  /* endpoint i has the address of endpoint same[i] */
    int ok[UPSTREAM_CHECK_MAX];       /* endpoint i accepted */
    size_t np = 0;

    for (size_t i = 0; i < n; i++) {
        const qx_endpoint_t *up = &snap->eps[i];
        ok[i] = 0;
        same[i] = i;
        for (size_t j = 0; j < i && same[i] == i; j++) {
            const qx_endpoint_t *o = &snap->eps[j];
            if (o->addrlen == up->addrlen && memcmp(&o->addr, &up->addr, up->addrlen) == 0)
                same[i] = same[j];
        }
        if (same[i] != i)
            continue;
        int fd = socket(up->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd == -1)
            continue;
        if (connect(fd, (const struct sockaddr *)&up->addr, up->addrlen) == 0) {
            close(fd);
            ok[i] = 1;
            continue;
        }
        if (errno != EINPROGRESS) {
            close(fd);
            continue;
        }
        pfd[np] = (struct pollfd){.fd = fd, .events = POLLOUT};
        which[np++] = i;
    }

    uint64_t deadline = mono_ms() + UPSTREAM_CHECK_TIMEOUT_MS;
    size_t pending = np;
    while (pending > 0) {
        uint64_t now = mono_ms();
        if (now >= deadline)
            break;
        int r = poll(pfd, np, (int)(deadline - now));
        if (r == -1 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        for (size_t k = 0; k < np; k++) {
            if (pfd[k].fd < 0 || pfd[k].revents == 0)
                continue;
            int soerr = 0;
            socklen_t sl = sizeof(soerr);
            if (getsockopt(pfd[k].fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
                ok[which[k]] = 1;
            close(pfd[k].fd);
            pfd[k].fd = -1;
            pending--;
        }
    }
    for (size_t k = 0; k < np; k++) {
        if (pfd[k].fd >= 0) /* still connecting at the deadline */
            close(pfd[k].fd);
    }

    for (size_t i = 0; i < n; i++)
        a->up_failed[i] = !ok[i];
    a->up_checked = n;
    a->up_ok = 1;
    a->up_reason[0] = '\0';
    for (size_t r = 0; r < snap->cfg->nroutes && a->up_ok; r++) {
        const qx_route_cfg_t *route = &snap->cfg->routes[r];
        size_t base = snap->ep_base[r], cnt = snap->ep_count[r];
        if (cnt == 0) {
            /* Every name of the route fails to resolve (an address literal
             * is always an endpoint, so the route has only names). */
            const char *name = route->upstreams[0].name;
            char why[160] = "not resolved yet";
            if (a->rt->dns)
                qx_dns_why(a->rt->dns, route->upstreams[0].host, why, sizeof(why));
            a->up_ok = 0;
            snprintf(a->up_reason, sizeof(a->up_reason), "upstream %s %s", name, why);
            break;
        }
        int any = 0;
        for (size_t i = base; i < base + cnt && !any; i++)
            any = i < n && ok[same[i]];
        if (any)
            continue;
        const qx_endpoint_t *e = &snap->eps[base];
        a->up_ok = 0;
        if (cnt > 1)
            snprintf(a->up_reason, sizeof(a->up_reason),
                     "no upstream of route %s accepting connections (%zu tried)", route->match,
                     cnt);
        else if (strcmp(e->name, e->addrstr) != 0)
            snprintf(a->up_reason, sizeof(a->up_reason),
                     "upstream %s (%s) not accepting connections", e->name, e->addrstr);
        else
            snprintf(a->up_reason, sizeof(a->up_reason), "upstream %s not accepting connections",
                     e->name);
    }
    a->up_epoch = snap->epoch;
    a->up_checked_ms = mono_ms();
    qx_snapshot_unref(snap);
}

/* The upstream check's answer, at most UPSTREAM_CHECK_CACHE_MS old and for
 * the snapshot in force. Called with check_lock held. */
static void refresh_upstreams(qx_admin_t *a)
{
    uint64_t now = mono_ms();
    if (a->up_checked_ms == 0 || now - a->up_checked_ms >= UPSTREAM_CHECK_CACHE_MS ||
        a->up_epoch != qx_runtime_epoch(a->rt))
        check_upstreams(a);
}

/* 1 when /readyz answers 200; otherwise 0 and a one-line reason. */
static int readiness(qx_admin_t *a, char *why, size_t n)
{
    switch (qx_runtime_lifecycle(a->rt)) {
    case QX_LC_STARTING:
        snprintf(why, n, "starting");
        return 0;
    case QX_LC_DRAINING:
        snprintf(why, n, "draining");
        return 0;
    case QX_LC_STOPPED:
        snprintf(why, n, "stopping");
        return 0;
    case QX_LC_LIVE:
        break;
    }
    if (a->ready_requires_upstream) {
        pthread_mutex_lock(&a->check_lock);
        refresh_upstreams(a);
        int up_ok = a->up_ok;
        if (!up_ok)
            snprintf(why, n, "%s", a->up_reason);
        pthread_mutex_unlock(&a->check_lock);
        if (!up_ok)
            return 0;
    }
    snprintf(why, n, "ready");
    return 1;
}

int qx_admin_ready(qx_admin_t *a, char *why, size_t n)
{
    if (a == NULL) {
        snprintf(why, n, "ready");
        return 1;
    }
    return readiness(a, why, n);
}

static enum MHD_Result get_readyz(qx_admin_t *a, struct MHD_Connection *c)
{
    char why[300];
    int ok = readiness(a, why, sizeof(why) - 1);
    size_t n = strlen(why);
    why[n] = '\n';
    why[n + 1] = '\0';
    return reply_text(c, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, why);
}

static enum MHD_Result get_startupz(qx_admin_t *a, struct MHD_Connection *c)
{
    if (qx_runtime_lifecycle(a->rt) >= QX_LC_LIVE)
        return reply_text(c, MHD_HTTP_OK, "started\n");
    return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "starting\n");
}

/* Each worker stores uv_hrtime() in ms at every tick (worker.c); the
 * caller passes the same clock. A worker that has not entered its loop yet
 * (0) or has finished its drain is not judged: liveness is about loops
 * that should be running and are stuck. Returns 1 when live; otherwise 0
 * and names the first wedged worker in why. */
static int liveness(const qx_runtime_t *rt, uint64_t now_ms, char *why, size_t n)
{
    for (unsigned i = 0; i < rt->nworkers; i++) {
        const qx_worker_t *w = &rt->workers[i];
        if (__atomic_load_n(&w->ctx.state, __ATOMIC_RELAXED) == QX_W_STOPPED)
            continue;
        uint64_t last = __atomic_load_n(&w->last_tick_ms, __ATOMIC_RELAXED);
        if (last == 0 || now_ms <= last || now_ms - last <= LIVEZ_MAX_TICK_AGE_MS)
            continue;
        snprintf(why, n, "worker %u wedged (last tick %.1fs ago)", w->ctx.id,
                 (double)(now_ms - last) / 1000.0);
        return 0;
    }
    snprintf(why, n, "ok");
    return 1;
}

static enum MHD_Result get_livez(qx_admin_t *a, struct MHD_Connection *c)
{
    char why[128];
    int ok = liveness(a->rt, uv_hrtime() / 1000000, why, sizeof(why) - 1);
    size_t n = strlen(why);
    why[n] = '\n';
    why[n + 1] = '\0';
    return reply_text(c, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, why);
}

/* ------------------------------------------------------------------------
 * /metrics */

/* The endpoints of the snapshot in force (their passive health) and the
 * names the resolver follows: families whose series come and go with the
 * endpoints, so the label space is what is configured and resolved now. */
static const qx_snapshot_t *sort_snap; /* qsort has no context argument; under sort_lock */
static pthread_mutex_t sort_lock = PTHREAD_MUTEX_INITIALIZER;

static int ep_cmp(const void *pa, const void *pb)
{
    const qx_endpoint_t *a = &sort_snap->eps[*(const size_t *)pa];
    const qx_endpoint_t *b = &sort_snap->eps[*(const size_t *)pb];
    int c = strcmp(a->name, b->name);
    return c ? c : strcmp(a->addrstr, b->addrstr);
}

static char *endpoint_metrics(qx_runtime_t *rt, size_t *len)
{
    qx_snapshot_t *snap = qx_runtime_snapshot(rt);
    qx_buf_t b;
    qx_buf_init(&b, 4096, 4096 + snap->neps * 3 * 200 + QX_CONFIG_MAX_UPSTREAMS * 600);
    size_t *idx = calloc(snap->neps ? snap->neps : 1, sizeof(size_t));
    *len = 0;
    if (idx == NULL) {
        qx_snapshot_unref(snap);
        return NULL;
    }
    /* One series per (upstream, address): two routes may name the same. */
    for (size_t i = 0; i < snap->neps; i++)
        idx[i] = i;
    pthread_mutex_lock(&sort_lock);
    sort_snap = snap;
    qsort(idx, snap->neps, sizeof(size_t), ep_cmp);
    pthread_mutex_unlock(&sort_lock);
    for (int fam = 0; fam < 3; fam++) {
        if (fam == 2)
            qx_buf_putf(&b, "# HELP qrux_upstream_info The protocol qrux speaks to the endpoint (a "
                            "route's protocol: h1 or h2c); always 1.\n"
                            "# TYPE qrux_upstream_info gauge\n");
        else if (fam == 0)
            qx_buf_putf(
                &b,
                "# HELP qrux_upstream_healthy 1 unless the endpoint's last %d connects failed "
                "(passive health: it is ejected for a back-off, then tried again).\n"
                "# TYPE qrux_upstream_healthy gauge\n",
                QX_HEALTH_FAILS);
        else
            qx_buf_putf(
                &b,
                "# HELP qrux_upstream_ejections_total Times an endpoint was taken out of rotation "
                "after %d connect failures in a row.\n"
                "# TYPE qrux_upstream_ejections_total counter\n",
                QX_HEALTH_FAILS);
        for (size_t k = 0; k < snap->neps; k++) {
            const qx_endpoint_t *e = &snap->eps[idx[k]];
            if (k > 0) {
                const qx_endpoint_t *p = &snap->eps[idx[k - 1]];
                if (strcmp(p->name, e->name) == 0 && strcmp(p->addrstr, e->addrstr) == 0)
                    continue;
            }
            if (fam == 2)
                qx_buf_putf(
                    &b, "qrux_upstream_info{upstream=\"%s\",address=\"%s\",protocol=\"%s\"} 1\n",
                    e->name, e->addrstr, e->protocol == QX_UP_PROTO_H2C ? "h2c" : "h1");
            else if (fam == 0)
                qx_buf_putf(&b, "qrux_upstream_healthy{upstream=\"%s\",address=\"%s\"} %d\n",
                            e->name, e->addrstr, qx_health_healthy(e->health));
            else
                qx_buf_putf(&b,
                            "qrux_upstream_ejections_total{upstream=\"%s\",address=\"%s\"} %llu\n",
                            e->name, e->addrstr,
                            (unsigned long long)(e->health ? __atomic_load_n(&e->health->ejections,
                                                                             __ATOMIC_RELAXED)
                                                           : 0));
        }
    }
    free(idx);
    qx_snapshot_unref(snap);
    if (rt->dns)
        qx_dns_metrics(rt->dns, &b);
    /* Past the cap (a bug: it is sized for every upstream), what fitted. */
    *len = b.len;
    return b.data;
}

static enum MHD_Result get_metrics(qx_admin_t *a, struct MHD_Connection *c)
{
    qx_runtime_t *rt = a->rt;
    qx_metrics_globals_t g = {.version = QX_VERSION};
    char why[300];

    g.generation = qx_runtime_generation(rt);
    for (int s = 0; s < QX_SRC_COUNT; s++) {
        for (int r = 0; r < QX_RELOAD_COUNT; r++)
            g.reloads[s][r] = __atomic_load_n(&rt->reloads[s][r], __ATOMIC_RELAXED);
    }
    g.ready = readiness(a, why, sizeof(why));
    if (rt->early_refused)
        g.early_refused = __atomic_load_n(rt->early_refused, __ATOMIC_RELAXED);
    qx_xdp_proxy_stats(rt->xdp, g.xdp_packets, &g.xdp_attached);
    g.cert_not_after = __atomic_load_n(&rt->cert_not_after, __ATOMIC_RELAXED);
    g.log_suppressed = qx_log_rl_dropped();
    char *extra = endpoint_metrics(rt, &g.extralen);
    g.extra = extra;
    qx_metrics_process_read(&g, rt->start_time); /* without /proc: no process_* families */

    const qx_metrics_t **ws = calloc(rt->nworkers ? rt->nworkers : 1, sizeof(*ws));
    if (ws == NULL)
        return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    for (unsigned i = 0; i < rt->nworkers; i++)
        ws[i] = &rt->workers[i].ctx.metrics;
    qx_metrics_text_t t = {0};
    int rv = qx_metrics_text_render(&t, ws, rt->nworkers, &g);
    free(ws);
    free(extra);
    enum MHD_Result res;
    if (rv != 0)
        res = reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    else
        res = reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", t.data, t.len, NULL,
                    NULL);
    qx_metrics_text_free(&t);
    return res;
}

/* ------------------------------------------------------------------------
 * route API, /config, /drain */

/* The snapshot in force with who set it and the last rejected update,
 * read together under the runtime lock so they agree. */
static qx_snapshot_t *snapshot_info(qx_runtime_t *rt, int *source, char *last_error, size_t n)
{
    pthread_mutex_lock(&rt->lock);
    qx_snapshot_t *s = qx_snapshot_ref(rt->snap);
    *source = rt->source;
    if (last_error)
        snprintf(last_error, n, "%s", rt->last_error);
    pthread_mutex_unlock(&rt->lock);
    return s;
}

static const char *source_name(int source)
{
    return source == QX_SRC_API ? "api" : "file";
}

static enum MHD_Result get_routes(qx_admin_t *a, struct MHD_Connection *c)
{
    int source;
    qx_snapshot_t *snap = snapshot_info(a->rt, &source, NULL, 0);
    json_t *o = json_object();
    json_t *routes = qx_config_routes_to_json(snap->cfg);
    if (o && routes) {
        json_object_set_new(o, "generation", json_integer((json_int_t)snap->generation));
        json_object_set_new(o, "source", json_string(source_name(source)));
        json_object_set_new(o, "routes", routes);
    } else {
        json_decref(o);
        json_decref(routes);
        o = NULL;
    }
    qx_snapshot_unref(snap);
    return reply_json(c, MHD_HTTP_OK, o);
}

static enum MHD_Result get_config(qx_admin_t *a, struct MHD_Connection *c)
{
    int source;
    char last_error[sizeof(a->rt->last_error)];
    qx_snapshot_t *snap = snapshot_info(a->rt, &source, last_error, sizeof(last_error));
    json_t *o = json_object();
    json_t *cfg = qx_config_to_json(snap->cfg);
    if (o && cfg) {
        json_object_set_new(o, "generation", json_integer((json_int_t)snap->generation));
        json_object_set_new(o, "source", json_string(source_name(source)));
        json_object_set_new(o, "last_error", last_error[0] ? json_string(last_error) : json_null());
        /* The effective value: "workers: 0" means one per CPU, and what
         * that came to is what an operator wants to see. */
        json_t *server = json_object_get(cfg, "server");
        if (server != NULL && snap->cfg->workers == 0)
            json_object_set_new(server, "workers", json_integer((json_int_t)a->rt->nworkers));
        json_object_set_new(o, "config", cfg);
    } else {
        json_decref(o);
        json_decref(cfg);
        o = NULL;
    }
    qx_snapshot_unref(snap);
    return reply_json(c, MHD_HTTP_OK, o);
}

/* If-Match: a generation, bare (`7`) or as an entity tag (`"7"`); `*`
 * matches any. Returns 1 with *gen set, 0 for `*` or no header, -1 when
 * the value is neither. */
static int parse_if_match(const char *v, uint64_t *gen)
{
    if (v == NULL)
        return 0;
    while (*v == ' ' || *v == '\t')
        v++;
    if (v[0] == '*' && (v[1] == '\0' || v[1] == ' ' || v[1] == '\t'))
        return 0;
    int quoted = *v == '"';
    if (quoted)
        v++;
    if (*v < '0' || *v > '9')
        return -1;
    uint64_t g = 0;
    for (; *v >= '0' && *v <= '9'; v++) {
        uint64_t d = (uint64_t)(*v - '0');
        if (g > (UINT64_MAX - d) / 10)
            return -1;
        g = g * 10 + d;
    }
    if (quoted && *v++ != '"')
        return -1;
    while (*v == ' ' || *v == '\t')
        v++;
    if (*v != '\0')
        return -1;
    *gen = g;
    return 1;
}

static enum MHD_Result reply_stale(qx_admin_t *a, struct MHD_Connection *c, uint64_t want)
{
    uint64_t cur = qx_runtime_generation(a->rt);
    char err[160];
    snprintf(err, sizeof(err), "If-Match: generation %llu is not the current one (%llu)",
             (unsigned long long)want, (unsigned long long)cur);
    json_t *o = json_object();
    if (o) {
        json_object_set_new(o, "error", json_string(err));
        json_object_set_new(o, "generation", json_integer((json_int_t)cur));
    }
    return reply_json(c, MHD_HTTP_PRECONDITION_FAILED, o);
}

static enum MHD_Result put_routes(qx_admin_t *a, struct MHD_Connection *c, const admin_req_t *r)
{
    uint64_t want = 0, gen = 0;
    char err[512], field[128];

    int cond = parse_if_match(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "If-Match"), &want);
    if (cond < 0)
        return reply_error(c, MHD_HTTP_BAD_REQUEST,
                           "If-Match: expected a generation number, e.g. If-Match: 7", "If-Match");
    /* Generations start at 1; publish() reads 0 as "unconditional". */
    if (cond > 0 && (want == 0 || want != qx_runtime_generation(a->rt)))
        return reply_stale(a, c, want);

    qx_snapshot_t *snap = qx_runtime_snapshot(a->rt);
    qx_config_t *cfg = NULL;
    err[0] = field[0] = '\0';
    int rv = qx_config_with_routes_json(snap->cfg, r->body.data ? r->body.data : "", r->body.len,
                                        &cfg, err, sizeof(err), field, sizeof(field));
    qx_snapshot_unref(snap);
    if (rv != 0) {
        if (err[0] == '\0')
            snprintf(err, sizeof(err), "invalid route table");
        char logged[700]; /* err names the field already (config_json.h) */
        snprintf(logged, sizeof(logged), "PUT /routes: %s", err);
        QX_WARN_RL("admin: %s", logged);
        qx_runtime_reject(a->rt, QX_SRC_API, logged);
        return reply_error(
            c, rv == QX_ERR_NOMEM ? MHD_HTTP_INTERNAL_SERVER_ERROR : MHD_HTTP_BAD_REQUEST, err,
            field);
    }

    err[0] = '\0';
    rv = qx_runtime_publish(a->rt, cfg, QX_SRC_API, cond > 0 ? want : 0, &gen, err, sizeof(err));
    if (rv == QX_ERR_STALE)
        return reply_stale(a, c, want); /* another update won the race */
    if (rv == QX_ERR_CONFIG)
        return reply_error(c, MHD_HTTP_BAD_REQUEST, err, "");
    if (rv != 0)
        return reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, err[0] ? err : "publish failed", "");
    json_t *o = json_object();
    if (o)
        json_object_set_new(o, "generation", json_integer((json_int_t)gen));
    return reply_json(c, MHD_HTTP_OK, o);
}

/* ------------------------------------------------------------------------
 * status page */

static enum MHD_Result get_status_page(struct MHD_Connection *c)
{
    /* Self-contained: inline style and script, nothing else loaded. */
    return reply(c, MHD_HTTP_OK, "text/html; charset=utf-8", (const char *)qx_status_html,
                 qx_status_html_len, "Content-Security-Policy",
                 "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
                 "connect-src 'self'; img-src data:");
}

static enum MHD_Result get_status_json(qx_admin_t *a, struct MHD_Connection *c)
{
    char why[300], last_error[sizeof(a->rt->last_error)];
    int source;
    uint8_t failed[UPSTREAM_CHECK_MAX];
    size_t checked;
    if (a->status == NULL)
        return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "status sampler not running\n");
    int ready = readiness(a, why, sizeof(why));
    qx_snapshot_t *snap = snapshot_info(a->rt, &source, last_error, sizeof(last_error));
    /* health for the page, whatever ready_requires_upstream says */
    pthread_mutex_lock(&a->check_lock);
    refresh_upstreams(a);
    checked = a->up_epoch == snap->epoch ? a->up_checked : 0;
    memcpy(failed, a->up_failed, sizeof(failed));
    pthread_mutex_unlock(&a->check_lock);
    qx_status_view_t v = {
        .ready = ready,
        .ready_reason = why,
        .snap = snap,
        .source = source,
        .last_error = last_error,
        .up_failed = failed,
        .up_checked = checked,
    };
    json_t *o = qx_status_json(a->status, &v);
    qx_snapshot_unref(snap);
    return reply_json(c, MHD_HTTP_OK, o);
}

/* PUT /xdp/denylist: the whole list, validated before anything changes.
 * Without the filter's maps: 409 (there is nothing to hold the list). */
static enum MHD_Result put_xdp_deny(qx_admin_t *a, struct MHD_Connection *c, const admin_req_t *r)
{
    char err[256] = "";
    int rv = qx_xdp_proxy_deny_set(a->rt->xdp, r->body.data ? r->body.data : "", r->body.len, err,
                                   sizeof(err));
    if (rv == QX_ERR_INVAL || rv == QX_ERR_LIMIT) {
        QX_WARN("admin: PUT /xdp/denylist: %s", err);
        return reply_error(c, MHD_HTTP_BAD_REQUEST, err, "denylist");
    }
    if (rv == QX_ERR_NOTFOUND)
        return reply_error(c, MHD_HTTP_CONFLICT,
                           "no XDP filter: configure xdp.pin and run qrux xdp attach", "");
    if (rv != 0)
        return reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, err[0] ? err : "update failed", "");
    json_t *o = qx_xdp_proxy_deny_get(a->rt->xdp);
    if (o)
        QX_INFO("admin: PUT /xdp/denylist: %zu prefixes",
                json_array_size(json_object_get(o, "denylist")));
    return reply_json(c, MHD_HTTP_OK, o);
}

static enum MHD_Result post_drain(qx_admin_t *a, struct MHD_Connection *c)
{
    QX_INFO("admin: POST /drain");
    /* /readyz must say 503 from the moment this answers (a preStop hook
     * then waits for the endpoints to drop the pod); the main loop, woken
     * by the async, sets the same state and drains the workers. */
    qx_runtime_set_lifecycle(a->rt, QX_LC_DRAINING);
    qx_runtime_drain(a->rt);
    return reply_text(c, MHD_HTTP_ACCEPTED, "draining\n");
}

/* ------------------------------------------------------------------------
 * dispatch */

static int find_endpoint(const char *url)
{
    for (int i = 0; i < EP_COUNT; i++) {
        if (strcmp(url, endpoints[i].path) == 0)
            return i;
    }
    return -1;
}

static int method_allowed(const char *allow, const char *method)
{
    size_t m = strlen(method);
    for (const char *p = allow; *p;) {
        size_t n = strcspn(p, ",");
        if (n == m && strncmp(p, method, m) == 0)
            return 1;
        p += n;
        while (*p == ',' || *p == ' ')
            p++;
    }
    return 0;
}

static enum MHD_Result dispatch(qx_admin_t *a, struct MHD_Connection *c, int ep)
{
    switch (ep) {
    case EP_LIVEZ:
        return get_livez(a, c);
    case EP_READYZ:
        return get_readyz(a, c);
    case EP_STARTUPZ:
        return get_startupz(a, c);
    case EP_METRICS:
        return get_metrics(a, c);
    case EP_ROUTES:
        return get_routes(a, c);
    case EP_CONFIG:
        return get_config(a, c);
    case EP_DRAIN:
        return post_drain(a, c);
    case EP_STATUS_PAGE:
        return get_status_page(c);
    case EP_STATUS_JSON:
        return get_status_json(a, c);
    case EP_XDP_DENY:
        return reply_json(c, MHD_HTTP_OK, qx_xdp_proxy_deny_get(a->rt->xdp));
    }
    return reply_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
}

/* application/json, any parameters (charset) allowed. */
static int is_json(const char *ct)
{
    if (ct == NULL)
        return 0;
    while (*ct == ' ')
        ct++;
    size_t n = strlen("application/json");
    return strncasecmp(ct, "application/json", n) == 0 &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

static int expects_continue(struct MHD_Connection *c)
{
    const char *e = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    return e != NULL && strcasecmp(e, "100-continue") == 0;
}

static enum MHD_Result reply_too_large(struct MHD_Connection *c)
{
    char err[96];
    snprintf(err, sizeof(err), "request body over %u bytes", ADMIN_MAX_BODY);
    return reply_error(c, MHD_HTTP_CONTENT_TOO_LARGE, err, "");
}

/*
 * libmicrohttpd calls this first with the request head only, then once per
 * piece of body, then once more with no data. Refusals (401, 404, 405,
 * 413, 415) are answered at the first call, before any body is read;
 * libmicrohttpd then closes the connection, which is right for a refused
 * upload. Everything else is answered at the last call, which keeps the
 * connection alive for the next scrape or probe.
 */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    qx_admin_t *a = cls;
    admin_req_t *r = *con_cls;
    (void)version;

    if (r == NULL) {
        int ep = find_endpoint(url);
        if ((ep < 0 || !endpoints[ep].probe) && !authorized(a, c))
            return reply_unauthorized(c);
        if (ep < 0)
            return reply_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
        if (!method_allowed(endpoints[ep].allow, method)) {
            return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8",
                         "method not allowed\n", 19, MHD_HTTP_HEADER_ALLOW, endpoints[ep].allow);
        }
        int keep =
            (ep == EP_ROUTES || ep == EP_XDP_DENY) && strcmp(method, MHD_HTTP_METHOD_PUT) == 0;
        int over = 0;
        const char *cl =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            errno = 0;
            unsigned long long v = strtoull(cl, NULL, 10);
            int range = errno == ERANGE;
            over = range || v > ADMIN_MAX_BODY;
            /* Refused before the body when the client waits for 100
             * Continue (curl does past 1 MiB) or the body is huge; a
             * client that sends a modest excess at once gets its 413
             * after the body is read and dropped, instead of a reset
             * while it is still writing. */
            if (over && (expects_continue(c) || range || v > DISCARD_BODY_MAX))
                return reply_too_large(c);
        }
        if (keep && !over &&
            !is_json(MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE)))
            return reply_error(c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
                               ep == EP_ROUTES ? "PUT /routes takes Content-Type: application/json"
                                               : "PUT /xdp/denylist takes Content-Type: "
                                                 "application/json",
                               "");
        r = calloc(1, sizeof(*r));
        if (r == NULL)
            return MHD_NO;
        qx_buf_init(&r->body, 16384, (size_t)ADMIN_MAX_BODY + 1);
        r->ep = ep;
        r->keep = keep;
        r->too_large = over;
        *con_cls = r;
        return MHD_YES;
    }

    if (*upload_size > 0) {
        size_t n = *upload_size;
        *upload_size = 0;
        r->seen += n;
        if (!r->too_large && r->seen > ADMIN_MAX_BODY) {
            /* A chunked body went over the cap: the 413 can only be sent
             * once the body is read, so read on without keeping it, up to
             * a bound past which the connection is simply dropped. */
            r->too_large = 1;
            qx_buf_free(&r->body);
        }
        if (r->too_large)
            return r->seen > DISCARD_BODY_MAX ? MHD_NO : MHD_YES;
        if (r->keep && qx_buf_put(&r->body, upload, n) != 0)
            return MHD_NO;
        return MHD_YES;
    }
    if (r->too_large)
        return reply_too_large(c);
    if (r->keep)
        return r->ep == EP_XDP_DENY ? put_xdp_deny(a, c, r) : put_routes(a, c, r);
    return dispatch(a, c, r->ep);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    admin_req_t *r = *con_cls;
    (void)cls;
    (void)c;
    (void)toe;
    if (r) {
        qx_buf_free(&r->body);
        free(r);
        *con_cls = NULL;
    }
}

__attribute__((format(printf, 2, 0))) static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    qx_admin_t *a = cls;
    char line[256];
    vsnprintf(line, sizeof(line), fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    if (__atomic_load_n(&a->starting, __ATOMIC_ACQUIRE))
        snprintf(a->start_err, sizeof(a->start_err), "%s", line); /* qx_admin_start reports it */
    else
        QX_WARN_RL("admin: %s", line); /* accept errors under fd exhaustion come in floods */
}

/* ------------------------------------------------------------------------
 * start / stop */

int qx_admin_start(qx_admin_t **out, qx_runtime_t *rt, char *err, size_t errlen)
{
    *out = NULL;
    qx_snapshot_t *snap = qx_runtime_snapshot(rt);
    const qx_admin_cfg_t *ac = &snap->cfg->admin;
    int rv = 0;

    if (ac->listen == NULL)
        goto done; /* no admin section: no server */

    qx_admin_t *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        snprintf(err, errlen, "out of memory");
        rv = QX_ERR_NOMEM;
        goto done;
    }
    a->rt = rt;
    a->ready_requires_upstream = ac->ready_requires_upstream;
    pthread_mutex_init(&a->check_lock, NULL);
    snprintf(a->listen, sizeof(a->listen), "%s", ac->listen);
    if (ac->token_file) {
        rv = read_token(a, ac->token_file, err, errlen);
        if (rv != 0)
            goto fail_token;
    }

    if (qx_status_start(&a->status, rt) != 0)
        QX_WARN("admin: the status page's sampler did not start: /status.json answers 503");

    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
    if (ac->addr.ss_family == AF_INET6)
        flags |= MHD_USE_DUAL_STACK; /* "[::]:9901" answers IPv4 probes too */
    __atomic_store_n(&a->starting, 1, __ATOMIC_RELEASE);
    a->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, a, MHD_OPTION_SOCK_ADDR,
                                 (const struct sockaddr *)&ac->addr, MHD_OPTION_CONNECTION_LIMIT,
                                 (unsigned)ADMIN_MAX_CONNECTIONS,
                                 MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)ADMIN_MAX_PER_IP,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)ADMIN_CONN_TIMEOUT_SECS,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, a,
                                 MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, a, MHD_OPTION_END);
    __atomic_store_n(&a->starting, 0, __ATOMIC_RELEASE);
    if (a->daemon == NULL) {
        /* libmicrohttpd says "Failed to bind to port 0: <reason>" (it was
         * given an address, not a port): keep only the reason. */
        const char *why = a->start_err[0] ? a->start_err : "libmicrohttpd failed to start";
        const char *colon = strncmp(why, "Failed to bind", 14) == 0 ? strstr(why, ": ") : NULL;
        snprintf(err, errlen, "admin.listen: cannot listen on %s: %s", a->listen,
                 colon ? colon + 2 : why);
        rv = QX_ERR_IO;
        goto fail_daemon;
    }
    QX_INFO("admin: listening on %s (token %s, readyz %s)", a->listen,
            a->token ? "required" : "not required",
            a->ready_requires_upstream ? "waits for the upstreams" : "follows the lifecycle");
    *out = a;
    goto done;

fail_daemon:
fail_token:
    qx_admin_stop(a);
done:
    qx_snapshot_unref(snap);
    return rv;
}

void qx_admin_stop(qx_admin_t *a)
{
    if (a == NULL)
        return;
    if (a->daemon)
        MHD_stop_daemon(a->daemon); /* joins the polling thread */
    qx_status_stop(a->status);
    if (a->token) {
        explicit_bzero(a->token, a->token_len);
        free(a->token);
    }
    free(a);
}
