/* dns.c - asynchronous resolution of upstream names (see dns.h). */
#include "conf/dns.h"

#include "base/log.h"
#include "base/qx.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#define RETRY_BASE_MS 1000u
#define RETRY_MAX_MS 30000u

typedef struct dns_name dns_name_t;

struct dns_name {
    qx_dns_t *d;
    char *host;
    /* guarded by d->lock (read by other threads) */
    struct sockaddr_storage addrs[QX_DNS_MAX_ADDRS]; /* port 0, sorted */
    socklen_t lens[QX_DNS_MAX_ADDRS];
    size_t naddrs;
    int status;   /* the last attempt's ARES_* (-1: none finished yet) */
    int resolved; /* a good answer was had at least once */
    uint64_t results[QX_DNS_R_COUNT];
    /* loop thread only */
    int used;      /* a route of the config in force names it */
    int in_flight; /* a query is out (the entry is freed only after its answer) */
    unsigned fails;
    uv_timer_t timer; /* the next resolution */
    int timer_open;
    LIST_ENTRY(dns_name) link; /* d->names; guarded by d->lock */
};

typedef struct dns_sock {
    uv_poll_t poll;
    ares_socket_t fd;
    qx_dns_t *d;
    LIST_ENTRY(dns_sock) link; /* d->socks */
} dns_sock_t;

struct qx_dns {
    uv_loop_t *loop;
    ares_channel ch;
    int ch_ok;
    pthread_mutex_t lock;
    LIST_HEAD(, dns_name) names; /* newest first */
    LIST_HEAD(, dns_sock) socks;
    uv_timer_t tick; /* c-ares's own timeouts */
    int once;
    size_t pending;
    uint32_t min_ttl_ms, max_ttl_ms;
    void (*on_change)(void *arg);
    void *arg;
    int closing;
    unsigned open_handles; /* handles still to close before the free */
};

static const char *result_names[QX_DNS_R_COUNT] = {"ok", "not_found", "error"};

/* ---- libuv integration ---------------------------------------------------- */

static void arm_tick(qx_dns_t *d);

static void on_poll(uv_poll_t *p, int status, int events)
{
    dns_sock_t *s = p->data;
    ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;
    if (status < 0 || (events & UV_READABLE))
        rfd = s->fd;
    if (status < 0 || (events & UV_WRITABLE))
        wfd = s->fd;
    ares_process_fd(s->d->ch, rfd, wfd);
    arm_tick(s->d);
}

static void on_tick(uv_timer_t *t)
{
    qx_dns_t *d = t->data;
    ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    arm_tick(d);
}

static void arm_tick(qx_dns_t *d)
{
    struct timeval tv, *tvp;
    if (d->closing)
        return;
    tvp = ares_timeout(d->ch, NULL, &tv);
    if (tvp == NULL) {
        uv_timer_stop(&d->tick);
        return;
    }
    uint64_t ms = (uint64_t)tvp->tv_sec * 1000 + (uint64_t)tvp->tv_usec / 1000;
    uv_timer_start(&d->tick, on_tick, ms ? ms : 1, 0);
}

static void maybe_free(qx_dns_t *d);

static void on_handle_closed(uv_handle_t *h)
{
    qx_dns_t *d = h->data;
    if (h->type == UV_POLL)
        free(qx_container_of((uv_poll_t *)h, dns_sock_t, poll));
    d->open_handles--;
    maybe_free(d);
}

static void sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    qx_dns_t *d = data;
    dns_sock_t *s;
    LIST_FOREACH (s, &d->socks, link) {
        if (s->fd == fd)
            break;
    }
    if (!readable && !writable) {
        if (s == NULL)
            return;
        LIST_REMOVE(s, link);
        uv_poll_stop(&s->poll);
        s->poll.data = d;
        d->open_handles++;
        uv_close((uv_handle_t *)&s->poll, on_handle_closed);
        return;
    }
    if (s == NULL) {
        s = calloc(1, sizeof(*s));
        if (s == NULL || uv_poll_init_socket(d->loop, &s->poll, fd) != 0) {
            free(s);
            QX_WARN("dns: cannot watch a resolver socket; its query will time out");
            return;
        }
        s->fd = fd;
        s->d = d;
        s->poll.data = s;
        LIST_INSERT_HEAD(&d->socks, s, link);
    }
    uv_poll_start(&s->poll, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0), on_poll);
}

/* ---- names ---------------------------------------------------------------- */

static void resolve(dns_name_t *n);

static void on_name_timer(uv_timer_t *t)
{
    resolve(t->data);
}

static void schedule(dns_name_t *n, uint64_t ms)
{
    qx_dns_t *d = n->d;
    if (d->once || d->closing || !n->used)
        return;
    if (!n->timer_open) {
        uv_timer_init(d->loop, &n->timer);
        n->timer.data = n;
        n->timer_open = 1;
    }
    uv_timer_start(&n->timer, on_name_timer, ms, 0);
}

static int addr_cmp(const void *a, const void *b)
{
    const struct sockaddr_storage *x = a, *y = b;
    if (x->ss_family != y->ss_family)
        return x->ss_family < y->ss_family ? -1 : 1;
    return memcmp(
        x, y, x->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
}

/* The addresses, space-separated, into buf (as many as fit whole). */
static void list_addrs(const struct sockaddr_storage *a, size_t na, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < na && used + 2 < len; i++) {
        char ip[INET6_ADDRSTRLEN];
        if (uv_ip_name((const struct sockaddr *)&a[i], ip, sizeof(ip)) != 0)
            snprintf(ip, sizeof(ip), "?");
        int w = snprintf(buf + used, len - used, "%s%s", i ? " " : "", ip);
        if (w < 0 || (size_t)w >= len - used)
            break;
        used += (size_t)w;
    }
}

static void free_name(dns_name_t *n);

static void on_answer(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
    dns_name_t *n = arg;
    qx_dns_t *d = n->d;
    struct sockaddr_storage got[QX_DNS_MAX_ADDRS];
    size_t ngot = 0;
    int ttl = -1;
    (void)timeouts;

    n->in_flight = 0;
    d->pending--;
    if (status == ARES_SUCCESS && ai != NULL) {
        for (struct ares_addrinfo_node *a = ai->nodes; a && ngot < QX_DNS_MAX_ADDRS;
             a = a->ai_next) {
            if (a->ai_family != AF_INET && a->ai_family != AF_INET6)
                continue;
            struct sockaddr_storage ss;
            memset(&ss, 0, sizeof(ss));
            memcpy(&ss, a->ai_addr, a->ai_addrlen);
            ((struct sockaddr_in *)&ss)->sin_port = 0; /* the same offset in sockaddr_in6 */
            int dup = 0;
            for (size_t k = 0; k < ngot && !dup; k++)
                dup = addr_cmp(&got[k], &ss) == 0;
            if (dup)
                continue;
            got[ngot++] = ss;
            if (ttl < 0 || a->ai_ttl < ttl)
                ttl = a->ai_ttl;
        }
    }
    if (ai)
        ares_freeaddrinfo(ai);
    if (d->closing || !n->used) {
        if (!n->used)
            free_name(n);
        maybe_free(d);
        return;
    }
    qsort(got, ngot, sizeof(got[0]), addr_cmp);
    int result = ngot > 0 ? QX_DNS_R_OK
                 : status == ARES_ENOTFOUND || status == ARES_ENODATA || status == ARES_SUCCESS
                     ? QX_DNS_R_NOTFOUND
                     : QX_DNS_R_ERROR;
    if (result != QX_DNS_R_OK && status == ARES_SUCCESS)
        status = ARES_ENODATA; /* answered, but no A or AAAA record */

    char list[512];
    int changed = 0;
    pthread_mutex_lock(&d->lock);
    int prev = n->status;
    n->results[result]++;
    n->status = status;
    if (result == QX_DNS_R_OK) {
        changed = ngot != n->naddrs;
        for (size_t k = 0; k < ngot && !changed; k++)
            changed = addr_cmp(&got[k], &n->addrs[k]) != 0;
        if (changed) {
            memcpy(n->addrs, got, ngot * sizeof(got[0]));
            for (size_t k = 0; k < ngot; k++)
                n->lens[k] = got[k].ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                          : sizeof(struct sockaddr_in);
            n->naddrs = ngot;
        }
        n->resolved = 1;
    }
    size_t kept = n->naddrs;
    pthread_mutex_unlock(&d->lock);

    if (result == QX_DNS_R_OK) {
        uint64_t ms = (uint64_t)(ttl < 0 ? 0 : ttl) * 1000;
        ms = QX_MAX(ms, d->min_ttl_ms);
        ms = QX_MIN(ms, d->max_ttl_ms);
        if (changed) {
            list_addrs(got, ngot, list, sizeof(list));
            QX_INFO("dns: %s -> %s (ttl %d s, next lookup in %llu s)", n->host, list, ttl,
                    (unsigned long long)(ms / 1000));
        } else if (prev != ARES_SUCCESS && prev != -1) {
            QX_INFO("dns: %s resolves again, addresses unchanged", n->host);
        }
        n->fails = 0;
        schedule(n, ms);
        if (changed && d->on_change)
            d->on_change(d->arg);
        return;
    }
    uint64_t ms = (uint64_t)RETRY_BASE_MS << QX_MIN(n->fails, 5u);
    ms = QX_MIN(ms, (uint64_t)RETRY_MAX_MS);
    ms = QX_MIN(ms, (uint64_t)d->max_ttl_ms);
    n->fails++;
    if (prev != status) {
        if (kept > 0)
            QX_WARN("dns: %s: lookup failed (%s); keeping the last %zu address%s, retrying with "
                    "back-off from %llu s",
                    n->host, ares_strerror(status), kept, kept == 1 ? "" : "es",
                    (unsigned long long)(ms / 1000));
        else
            QX_WARN("dns: %s does not resolve (%s); routes have no endpoint for it until it "
                    "does (retrying with back-off from %llu s)",
                    n->host, ares_strerror(status), (unsigned long long)(ms / 1000));
    }
    schedule(n, ms);
}

static void resolve(dns_name_t *n)
{
    qx_dns_t *d = n->d;
    if (n->in_flight || d->closing || !d->ch_ok)
        return;
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_flags = ARES_AI_NOSORT; /* sorting connect()s a socket per address */
    n->in_flight = 1;
    d->pending++;
    ares_getaddrinfo(d->ch, n->host, NULL, &hints, on_answer, n);
    arm_tick(d);
}

static void on_name_closed(uv_handle_t *h)
{
    dns_name_t *n = qx_container_of((uv_timer_t *)h, dns_name_t, timer);
    qx_dns_t *d = n->d;
    free(n);
    d->open_handles--;
    maybe_free(d);
}

/* Unlinks the name (readers stop seeing it) and frees it, after its timer
 * handle has closed when it has one. */
static void free_name(dns_name_t *n)
{
    qx_dns_t *d = n->d;
    pthread_mutex_lock(&d->lock);
    LIST_REMOVE(n, link);
    pthread_mutex_unlock(&d->lock);
    free(n->host);
    n->host = NULL;
    if (!n->timer_open) {
        free(n);
        return;
    }
    uv_timer_stop(&n->timer);
    d->open_handles++;
    uv_close((uv_handle_t *)&n->timer, on_name_closed);
}

static void maybe_free(qx_dns_t *d)
{
    if (!d->closing || d->open_handles > 0 || d->pending > 0)
        return;
    pthread_mutex_destroy(&d->lock);
    free(d);
}

/* The name followed as |host|, or NULL. Under d->lock, or on the loop's
 * thread (the only writer). */
static dns_name_t *find(qx_dns_t *d, const char *host)
{
    dns_name_t *n;
    LIST_FOREACH (n, &d->names, link) {
        if (strcmp(n->host, host) == 0)
            break;
    }
    return n;
}

/* ---- public --------------------------------------------------------------- */

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static int lib_rv;

static void lib_init(void)
{
    lib_rv = ares_library_init(ARES_LIB_INIT_ALL);
}

int qx_dns_new(qx_dns_t **out, uv_loop_t *loop, const qx_config_t *cfg,
               void (*on_change)(void *arg), void *arg, char *err, size_t errlen)
{
    pthread_once(&lib_once, lib_init);
    if (lib_rv != ARES_SUCCESS) {
        snprintf(err, errlen, "dns: c-ares: %s", ares_strerror(lib_rv));
        return QX_ERR_CONFIG;
    }
    qx_dns_t *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return QX_ERR_NOMEM;
    d->loop = loop;
    d->on_change = on_change;
    d->arg = arg;
    LIST_INIT(&d->names);
    LIST_INIT(&d->socks);
    pthread_mutex_init(&d->lock, NULL);
    d->min_ttl_ms = cfg->dns.min_ttl_secs * 1000u;
    d->max_ttl_ms = cfg->dns.max_ttl_secs * 1000u;

    struct ares_options o;
    int mask = ARES_OPT_SOCK_STATE_CB;
    memset(&o, 0, sizeof(o));
    o.sock_state_cb = sock_state;
    o.sock_state_cb_data = d;
    if (cfg->dns.nsearch > 0) {
        o.domains = cfg->dns.search;
        o.ndomains = (int)cfg->dns.nsearch;
        mask |= ARES_OPT_DOMAINS;
    }
    if (cfg->dns.ndots >= 0) {
        o.ndots = cfg->dns.ndots;
        mask |= ARES_OPT_NDOTS;
    }
    int rv = ares_init_options(&d->ch, &o, mask);
    if (rv != ARES_SUCCESS) {
        snprintf(err, errlen, "dns: cannot start the resolver: %s", ares_strerror(rv));
        pthread_mutex_destroy(&d->lock);
        free(d);
        return QX_ERR_CONFIG;
    }
    d->ch_ok = 1;
    if (cfg->dns.servers != NULL &&
        (rv = ares_set_servers_ports_csv(d->ch, cfg->dns.servers)) != ARES_SUCCESS) {
        snprintf(err, errlen, "dns.servers: \"%s\" refused by c-ares: %s", cfg->dns.servers,
                 ares_strerror(rv));
        ares_destroy(d->ch);
        pthread_mutex_destroy(&d->lock);
        free(d);
        return QX_ERR_CONFIG;
    }
    uv_timer_init(loop, &d->tick);
    d->tick.data = d;
    *out = d;
    return 0;
}

void qx_dns_set_once(qx_dns_t *d)
{
    d->once = 1;
}

size_t qx_dns_pending(const qx_dns_t *d)
{
    return d->pending;
}

size_t qx_dns_sync(qx_dns_t *d, const qx_config_t *cfg)
{
    size_t count = 0;
    d->min_ttl_ms = cfg->dns.min_ttl_secs * 1000u;
    d->max_ttl_ms = cfg->dns.max_ttl_secs * 1000u;
    dns_name_t *n, *next;
    LIST_FOREACH (n, &d->names, link)
        n->used = 0;
    for (size_t r = 0; r < cfg->nroutes; r++) {
        for (size_t j = 0; j < cfg->routes[r].nupstreams; j++) {
            const char *host = cfg->routes[r].upstreams[j].host;
            if (host == NULL)
                continue;
            n = find(d, host);
            if (n) {
                if (!n->used)
                    count++;
                n->used = 1;
                continue;
            }
            if ((n = calloc(1, sizeof(*n))) == NULL || (n->host = strdup(host)) == NULL) {
                free(n);
                QX_ERROR("dns: out of memory for %s", host);
                continue;
            }
            n->d = d;
            n->status = -1;
            n->used = 1;
            pthread_mutex_lock(&d->lock);
            LIST_INSERT_HEAD(&d->names, n, link);
            pthread_mutex_unlock(&d->lock);
            count++;
            resolve(n);
        }
    }
    for (n = LIST_FIRST(&d->names); n; n = next) {
        next = LIST_NEXT(n, link);
        if (!n->used && !n->in_flight)
            free_name(n);
        else if (!n->used && n->timer_open)
            uv_timer_stop(&n->timer);
    }
    return count;
}

void qx_dns_del(qx_dns_t *d)
{
    if (d == NULL)
        return;
    d->closing = 1;
    /* The tick's close is counted before anything else: the answers still
     * out come back from inside ares_destroy (ARES_EDESTRUCTION), before
     * c-ares closes its sockets through sock_state, and the last of them
     * must not find the resolver free to go. */
    uv_timer_stop(&d->tick);
    d->open_handles++;
    uv_close((uv_handle_t *)&d->tick, on_handle_closed);
    ares_destroy(d->ch);
    d->ch_ok = 0;
    while (!LIST_EMPTY(&d->socks)) {
        dns_sock_t *s = LIST_FIRST(&d->socks);
        LIST_REMOVE(s, link);
        uv_poll_stop(&s->poll);
        s->poll.data = d;
        d->open_handles++;
        uv_close((uv_handle_t *)&s->poll, on_handle_closed);
    }
    while (!LIST_EMPTY(&d->names))
        free_name(LIST_FIRST(&d->names));
}

size_t qx_dns_addrs(qx_dns_t *d, const char *host, uint16_t port, struct sockaddr_storage *out,
                    socklen_t *lens, size_t cap)
{
    size_t k = 0;
    pthread_mutex_lock(&d->lock);
    dns_name_t *n = find(d, host);
    for (; n && k < n->naddrs && k < cap; k++) {
        out[k] = n->addrs[k];
        lens[k] = n->lens[k];
        ((struct sockaddr_in *)&out[k])->sin_port = htons(port);
    }
    pthread_mutex_unlock(&d->lock);
    return k;
}

int qx_dns_why(qx_dns_t *d, const char *host, char *buf, size_t len)
{
    pthread_mutex_lock(&d->lock);
    dns_name_t *n = find(d, host);
    int answered = n != NULL && n->status != -1;
    if (!answered)
        snprintf(buf, len, "not resolved yet");
    else if (n->naddrs > 0)
        snprintf(buf, len, "resolves");
    else
        snprintf(buf, len, "does not resolve: %s", ares_strerror(n->status));
    pthread_mutex_unlock(&d->lock);
    return answered;
}

void qx_dns_metrics(qx_dns_t *d, qx_buf_t *out)
{
    pthread_mutex_lock(&d->lock);
    if (!LIST_EMPTY(&d->names)) {
        qx_buf_puts(out, "# HELP qrux_dns_resolutions_total Lookups of upstream names by outcome "
                         "(not_found: no such name or no A/AAAA record; error: timeout, refused, "
                         "server failure).\n"
                         "# TYPE qrux_dns_resolutions_total counter\n");
        dns_name_t *n;
        LIST_FOREACH (n, &d->names, link) {
            for (int r = 0; r < QX_DNS_R_COUNT; r++)
                qx_buf_putf(out, "qrux_dns_resolutions_total{name=\"%s\",result=\"%s\"} %llu\n",
                            n->host, result_names[r], (unsigned long long)n->results[r]);
        }
        qx_buf_puts(out, "# HELP qrux_dns_addresses Addresses an upstream name resolves to now "
                         "(the last good answer).\n# TYPE qrux_dns_addresses gauge\n");
        LIST_FOREACH (n, &d->names, link)
            qx_buf_putf(out, "qrux_dns_addresses{name=\"%s\"} %zu\n", n->host, n->naddrs);
    }
    pthread_mutex_unlock(&d->lock);
}
