/*
 * inject_server.c - `qrux inject`: the webhook's HTTPS server, its
 * certificate and config reloads, and the two one-shot modes (--lint,
 * --prestop).
 *
 * Threads: libmicrohttpd runs one internal polling thread that answers
 * every request (reviews are short, CPU-only work); the main thread runs a
 * libuv loop for the signals and the file watchers. They share the
 * certificate in force and the options, each behind its own mutex, and
 * the counters (atomics).
 *
 * The certificate is handed to GnuTLS per handshake through a
 * certificate callback, so a renewed Secret (cert-manager, or a Helm
 * upgrade) takes effect on the next handshake without a restart or a
 * moment without a listener. A replaced certificate is kept for a while
 * before it is freed: a handshake that started with it may still use it.
 */
#include "admin/inject.h"

#include "base/log.h"
#include "base/qx.h"
#include "base/str.h"
#include "config/config.h"
#include "config/watch.h"

#include <errno.h>
#include <getopt.h>
#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define EXIT_USAGE 2
#define INJECT_MAX_BODY (4u << 20)  /* the API server's own request limit is 3 MiB */
#define INJECT_MAX_CONNECTIONS 256u /* every API server replica keeps a few */
#define INJECT_CONN_TIMEOUT_SECS 30u
#define INJECT_DRAIN_MS 5000u       /* serving after SIGTERM while endpoints update */
#define CERT_KEEP_RETIRED_MS 600000 /* a replaced certificate stays valid this long */
#define CERT_CHAIN_MAX 8
#define WATCH_DEBOUNCE_MS 100

/* ------------------------------------------------------------------------
 * the certificate in force */

typedef struct certset {
    gnutls_pcert_st pcert[CERT_CHAIN_MAX];
    unsigned npcert;
    gnutls_privkey_t key;
    uint64_t retired_ms;
    SLIST_ENTRY(certset) link; /* the retired list */
} certset_t;

typedef struct inject_srv {
    const char *cert_path, *key_path, *config_path;
    pthread_mutex_t lock; /* cur, retired, opts */
    certset_t *cur;
    SLIST_HEAD(, certset) retired; /* newest first */
    qx_inject_opts_t opts;
    struct MHD_Daemon *daemon;
    int draining; /* atomic: /readyz 503 */
    unsigned long long reviews[QX_REVIEW_COUNT];
    unsigned long long cert_reloads[2]; /* ok, error */
    unsigned long long config_reloads[2];
    uv_loop_t *loop;
    uv_signal_t sigterm, sigint;
    uv_timer_t drain_timer;
    qx_watch_t *cert_watch, *cfg_watch;
    int signals;
    double start_time;
} inject_srv_t;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void certset_del(certset_t *c)
{
    if (c == NULL)
        return;
    for (unsigned i = 0; i < c->npcert; i++)
        gnutls_pcert_deinit(&c->pcert[i]);
    if (c->key)
        gnutls_privkey_deinit(c->key);
    free(c);
}

static int read_file(const char *path, gnutls_datum_t *d, char *err, size_t errlen)
{
    int rv = gnutls_load_file(path, d);
    if (rv < 0) {
        snprintf(err, errlen, "cannot read %s: %s", path, gnutls_strerror(rv));
        return -1;
    }
    return 0;
}

/* Loads a PEM chain and its key; checks that they belong together. */
static int certset_load(certset_t **out, const char *cert, const char *key, char *err,
                        size_t errlen)
{
    gnutls_datum_t cd = {0}, kd = {0};
    certset_t *c = calloc(1, sizeof(*c));
    int rv;
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return QX_ERR_NOMEM;
    }
    if (read_file(cert, &cd, err, errlen) != 0 || read_file(key, &kd, err, errlen) != 0)
        goto fail;
    c->npcert = CERT_CHAIN_MAX;
    rv = gnutls_pcert_list_import_x509_raw(c->pcert, &c->npcert, &cd, GNUTLS_X509_FMT_PEM, 0);
    if (rv < 0) {
        c->npcert = 0;
        snprintf(err, errlen, "--cert %s: %s", cert, gnutls_strerror(rv));
        goto fail;
    }
    if (gnutls_privkey_init(&c->key) < 0 ||
        (rv = gnutls_privkey_import_x509_raw(c->key, &kd, GNUTLS_X509_FMT_PEM, NULL, 0)) < 0) {
        snprintf(err, errlen, "--key %s: %s", key, gnutls_strerror(rv));
        goto fail;
    }
    /* The pair must match: sign with the key, verify with the cert. */
    gnutls_datum_t msg = {(unsigned char *)"qrux inject", 11}, sig = {0};
    gnutls_sign_algorithm_t algo;
    gnutls_pubkey_t pub = c->pcert[0].pubkey;
    int pk = gnutls_pubkey_get_pk_algorithm(pub, NULL);
    algo = gnutls_pk_to_sign(pk, GNUTLS_DIG_SHA256);
    if (gnutls_privkey_sign_data2(c->key, algo, 0, &msg, &sig) < 0 ||
        gnutls_pubkey_verify_data2(pub, algo, 0, &msg, &sig) < 0) {
        gnutls_free(sig.data);
        snprintf(err, errlen, "--key %s does not belong to the certificate in %s", key, cert);
        goto fail;
    }
    gnutls_free(sig.data);
    gnutls_free(cd.data);
    gnutls_free(kd.data);
    *out = c;
    return 0;
fail:
    gnutls_free(cd.data);
    gnutls_free(kd.data);
    certset_del(c);
    return QX_ERR_TLS;
}

static inject_srv_t *cb_srv; /* the certificate callback has no user pointer */

static int on_cert(gnutls_session_t s, const gnutls_datum_t *req_ca_dn, int nreqs,
                   const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                   gnutls_pcert_st **pcert, unsigned int *pcert_length, gnutls_privkey_t *key)
{
    inject_srv_t *srv = cb_srv;
    (void)s, (void)req_ca_dn, (void)nreqs, (void)pk_algos, (void)pk_algos_length;
    pthread_mutex_lock(&srv->lock);
    *pcert = srv->cur->pcert;
    *pcert_length = srv->cur->npcert;
    *key = srv->cur->key;
    pthread_mutex_unlock(&srv->lock);
    return 0;
}

static void reload_cert(inject_srv_t *srv, const char *why)
{
    char err[512];
    certset_t *c = NULL;
    if (certset_load(&c, srv->cert_path, srv->key_path, err, sizeof(err)) != 0) {
        __atomic_add_fetch(&srv->cert_reloads[1], 1, __ATOMIC_RELAXED);
        QX_ERROR("inject: certificate reload (%s) rejected: %s; the certificate in force stays",
                 why, err);
        return;
    }
    uint64_t now = now_ms();
    pthread_mutex_lock(&srv->lock);
    srv->cur->retired_ms = now;
    SLIST_INSERT_HEAD(&srv->retired, srv->cur, link);
    srv->cur = c;
    /* Free what was retired longer ago than a client may still present
     * (never the head: it was retired just now). */
    certset_t *keep = SLIST_FIRST(&srv->retired), *old;
    while ((old = SLIST_NEXT(keep, link)) != NULL) {
        if (now - old->retired_ms > CERT_KEEP_RETIRED_MS) {
            SLIST_REMOVE(&srv->retired, old, certset, link);
            certset_del(old);
        } else {
            keep = old;
        }
    }
    pthread_mutex_unlock(&srv->lock);
    __atomic_add_fetch(&srv->cert_reloads[0], 1, __ATOMIC_RELAXED);
    QX_INFO("inject: certificate reload (%s): new handshakes use %s", why, srv->cert_path);
}

static void reload_config(inject_srv_t *srv)
{
    char err[512];
    qx_inject_opts_t o;
    if (qx_inject_opts_init(&o) != 0 ||
        qx_inject_opts_load(&o, srv->config_path, err, sizeof(err)) != 0) {
        qx_inject_opts_free(&o);
        __atomic_add_fetch(&srv->config_reloads[1], 1, __ATOMIC_RELAXED);
        QX_ERROR("inject: config reload rejected: %s; the options in force stay", err);
        return;
    }
    pthread_mutex_lock(&srv->lock);
    qx_inject_opts_t old = srv->opts;
    srv->opts = o;
    pthread_mutex_unlock(&srv->lock);
    qx_inject_opts_free(&old);
    __atomic_add_fetch(&srv->config_reloads[0], 1, __ATOMIC_RELAXED);
    QX_INFO("inject: config reload: image %s", o.image);
}

static void on_cert_changed(qx_watch_t *w, void *arg)
{
    (void)w;
    reload_cert(arg, "file changed");
}

static void on_config_changed(qx_watch_t *w, void *arg)
{
    (void)w;
    reload_config(arg);
}

/* ------------------------------------------------------------------------
 * requests */

typedef struct inject_req {
    int ep;
    qx_buf_t body; /* at most INJECT_MAX_BODY bytes, NUL-terminated */
    size_t seen;   /* body bytes received, kept or not */
    int too_large;
} inject_req_t;

enum { EP_MUTATE, EP_MUTATE_NS, EP_LIVEZ, EP_READYZ, EP_METRICS };

static const struct {
    const char *path;
    const char *method;
} endpoints[] = {
    {"/mutate", "POST"}, {"/mutate/namespace", "POST"}, {"/livez", "GET"},
    {"/readyz", "GET"},  {"/metrics", "GET"},
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *ctype,
                             const char *body, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result rv = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rv;
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status, const char *text)
{
    return reply(c, status, "text/plain; charset=utf-8", text, strlen(text));
}

static enum MHD_Result get_metrics(inject_srv_t *srv, struct MHD_Connection *c)
{
    char buf[2048];
    size_t n = 0;
#define OUT(...) n += (size_t)snprintf(buf + n, sizeof(buf) - n, __VA_ARGS__)
    OUT("# HELP qrux_inject_reviews_total Admission reviews answered, by result.\n"
        "# TYPE qrux_inject_reviews_total counter\n");
    for (int i = 0; i < QX_REVIEW_COUNT; i++)
        OUT("qrux_inject_reviews_total{result=\"%s\"} %llu\n", qx_review_result_names[i],
            __atomic_load_n(&srv->reviews[i], __ATOMIC_RELAXED));
    OUT("# HELP qrux_inject_cert_reloads_total Certificate reloads, by result.\n"
        "# TYPE qrux_inject_cert_reloads_total counter\n"
        "qrux_inject_cert_reloads_total{result=\"ok\"} %llu\n"
        "qrux_inject_cert_reloads_total{result=\"error\"} %llu\n",
        __atomic_load_n(&srv->cert_reloads[0], __ATOMIC_RELAXED),
        __atomic_load_n(&srv->cert_reloads[1], __ATOMIC_RELAXED));
    OUT("# HELP qrux_inject_config_reloads_total Injector option reloads, by result.\n"
        "# TYPE qrux_inject_config_reloads_total counter\n"
        "qrux_inject_config_reloads_total{result=\"ok\"} %llu\n"
        "qrux_inject_config_reloads_total{result=\"error\"} %llu\n",
        __atomic_load_n(&srv->config_reloads[0], __ATOMIC_RELAXED),
        __atomic_load_n(&srv->config_reloads[1], __ATOMIC_RELAXED));
    OUT("# HELP qrux_inject_start_time_seconds Start time of the process since the epoch.\n"
        "# TYPE qrux_inject_start_time_seconds gauge\n"
        "qrux_inject_start_time_seconds %.3f\n",
        srv->start_time);
#undef OUT
    return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", buf, n);
}

static enum MHD_Result post_mutate(inject_srv_t *srv, struct MHD_Connection *c,
                                   const inject_req_t *r)
{
    char *out = NULL;
    size_t outlen = 0;
    unsigned status = 200;
    const char *why = "";
    pthread_mutex_lock(&srv->lock);
    int res = qx_inject_review(&srv->opts, r->body.data ? r->body.data : "", r->body.len,
                               r->ep == EP_MUTATE_NS, &out, &outlen, &status, &why);
    pthread_mutex_unlock(&srv->lock);
    if (res < 0) {
        free(out);
        return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    }
    __atomic_add_fetch(&srv->reviews[res], 1, __ATOMIC_RELAXED);
    QX_DEBUG("inject: review: %s", why);
    enum MHD_Result rv = reply(c, status, "application/json", out, outlen);
    free(out);
    return rv;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    inject_srv_t *srv = cls;
    inject_req_t *r = *con_cls;
    (void)version;

    if (r == NULL) {
        int ep = -1;
        for (size_t i = 0; i < QX_ARRAY_LEN(endpoints); i++)
            if (strcmp(url, endpoints[i].path) == 0)
                ep = (int)i;
        if (ep < 0)
            return reply_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
        if (strcmp(method, endpoints[ep].method) != 0 &&
            !(strcmp(endpoints[ep].method, "GET") == 0 && strcmp(method, "HEAD") == 0))
            return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
        r = calloc(1, sizeof(*r));
        if (r == NULL)
            return MHD_NO;
        r->ep = ep;
        qx_buf_init(&r->body, 65536, (size_t)INJECT_MAX_BODY + 1);
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_size > 0) {
        size_t n = *upload_size;
        *upload_size = 0;
        r->seen += n;
        if (r->too_large || r->seen > INJECT_MAX_BODY) {
            r->too_large = 1;
            /* Read on without keeping, up to a bound; then drop. */
            return r->seen > 4 * (size_t)INJECT_MAX_BODY ? MHD_NO : MHD_YES;
        }
        return qx_buf_put(&r->body, upload, n) == 0 ? MHD_YES : MHD_NO;
    }
    if (r->too_large)
        return reply_text(c, MHD_HTTP_CONTENT_TOO_LARGE, "request body over 4 MiB\n");
    switch (r->ep) {
    case EP_MUTATE:
    case EP_MUTATE_NS:
        return post_mutate(srv, c, r);
    case EP_LIVEZ:
        return reply_text(c, MHD_HTTP_OK, "ok\n");
    case EP_READYZ:
        if (__atomic_load_n(&srv->draining, __ATOMIC_ACQUIRE))
            return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "draining\n");
        return reply_text(c, MHD_HTTP_OK, "ready\n");
    default:
        return get_metrics(srv, c);
    }
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    inject_req_t *r = *con_cls;
    (void)cls, (void)c, (void)toe;
    if (r) {
        qx_buf_free(&r->body);
        free(r);
        *con_cls = NULL;
    }
}

__attribute__((format(printf, 2, 0))) static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    (void)cls;
    vsnprintf(line, sizeof(line), fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && line[n - 1] == '\n')
        line[--n] = '\0';
    QX_DEBUG("inject: libmicrohttpd: %s", line);
}

/* ------------------------------------------------------------------------
 * lifecycle: SIGTERM makes /readyz 503 and keeps serving while the
 * Service's endpoints drop this replica, then stops; a second signal
 * stops at once. */

static void stop_loop(inject_srv_t *srv)
{
    qx_watch_del(srv->cert_watch);
    qx_watch_del(srv->cfg_watch);
    srv->cert_watch = srv->cfg_watch = NULL;
    uv_close((uv_handle_t *)&srv->sigterm, NULL);
    uv_close((uv_handle_t *)&srv->sigint, NULL);
    uv_close((uv_handle_t *)&srv->drain_timer, NULL);
}

static void on_drained(uv_timer_t *t)
{
    QX_INFO("inject: drained; stopping");
    stop_loop(t->data);
}

static void on_signal(uv_signal_t *h, int signum)
{
    inject_srv_t *srv = h->data;
    if (srv->signals++ == 0) {
        __atomic_store_n(&srv->draining, 1, __ATOMIC_RELEASE);
        QX_INFO("inject: %s: /readyz is 503; serving %u ms more", strsignal(signum),
                INJECT_DRAIN_MS);
        uv_timer_start(&srv->drain_timer, on_drained, INJECT_DRAIN_MS, 0);
    } else {
        QX_INFO("inject: second signal: stopping now");
        uv_timer_stop(&srv->drain_timer);
        stop_loop(srv);
    }
}

static int serve(const char *listen, const char *cert, const char *key, const char *config)
{
    static inject_srv_t srv;
    char err[512];
    struct sockaddr_storage ss;
    socklen_t sslen;
    int code = 1;

    srv.cert_path = cert;
    srv.key_path = key;
    srv.config_path = config;
    srv.start_time = (double)time(NULL);
    pthread_mutex_init(&srv.lock, NULL);
    if (qx_addr_parse(listen, &ss, &sslen) != 0) {
        QX_ERROR("inject: --listen %s: not an address (host:port, [v6]:port)", listen);
        return EXIT_USAGE;
    }
    if (qx_inject_opts_init(&srv.opts) != 0)
        return 1;
    if (config && qx_inject_opts_load(&srv.opts, config, err, sizeof(err)) != 0) {
        QX_ERROR("inject: --config %s", err);
        code = EXIT_USAGE;
        goto out;
    }
    if (certset_load(&srv.cur, cert, key, err, sizeof(err)) != 0) {
        QX_ERROR("inject: %s", err);
        code = EXIT_USAGE;
        goto out;
    }
    cb_srv = &srv;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_TLS |
                     MHD_USE_ERROR_LOG | (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    srv.daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, &srv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_HTTPS_CERT_CALLBACK, on_cert, MHD_OPTION_HTTPS_PRIORITIES,
        "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2", MHD_OPTION_CONNECTION_LIMIT,
        INJECT_MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT, INJECT_CONN_TIMEOUT_SECS,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, &srv, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log,
        &srv, MHD_OPTION_END);
    if (srv.daemon == NULL) {
        QX_ERROR("inject: cannot listen on %s (taken, or not an address of this host)", listen);
        goto out;
    }
    srv.loop = uv_default_loop();
    uv_signal_init(srv.loop, &srv.sigterm);
    uv_signal_init(srv.loop, &srv.sigint);
    srv.sigterm.data = srv.sigint.data = &srv;
    uv_signal_start(&srv.sigterm, on_signal, SIGTERM);
    uv_signal_start(&srv.sigint, on_signal, SIGINT);
    uv_timer_init(srv.loop, &srv.drain_timer);
    srv.drain_timer.data = &srv;
    const char *tls_paths[] = {cert, key};
    if (qx_watch_new(&srv.cert_watch, srv.loop, tls_paths, 2, WATCH_DEBOUNCE_MS, on_cert_changed,
                     &srv) != 0)
        QX_WARN("inject: certificate files not watched: a renewed Secret needs a restart");
    const char *cfg_paths[] = {config};
    if (config && qx_watch_new(&srv.cfg_watch, srv.loop, cfg_paths, 1, WATCH_DEBOUNCE_MS,
                               on_config_changed, &srv) != 0)
        QX_WARN("inject: %s not watched: a change needs a restart", config);
    QX_INFO("inject: listening on https://%s (POST /mutate, /mutate/namespace; GET /livez, "
            "/readyz, /metrics); image %s",
            listen, srv.opts.image);
    uv_run(srv.loop, UV_RUN_DEFAULT);
    MHD_stop_daemon(srv.daemon);
    uv_run(srv.loop, UV_RUN_NOWAIT);
    uv_loop_close(srv.loop);
    code = 0;
out:
    certset_del(srv.cur);
    while (!SLIST_EMPTY(&srv.retired)) {
        certset_t *c = SLIST_FIRST(&srv.retired);
        SLIST_REMOVE_HEAD(&srv.retired, link);
        certset_del(c);
    }
    qx_inject_opts_free(&srv.opts);
    return code;
}

/* ------------------------------------------------------------------------
 * --prestop: the sidecar's preStop hook. Starts qrux's drain through the
 * admin API (so /readyz fails at once and the endpoints drop the pod),
 * then waits until qrux has exited or |wait| seconds passed; only then
 * does the kubelet send SIGTERM. qrux counts the SIGTERM that follows a
 * POST /drain as part of the same drain, not as a "stop now". */

static int connect_to(const struct sockaddr_storage *ss, socklen_t len)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return -1;
    if (connect(fd, (const struct sockaddr *)ss, len) == -1) {
        close(fd);
        return -1;
    }
    return fd;
}

static int prestop(const char *admin, const char *token_file, int wait_secs)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char token[4096] = "", req[4352], resp[256];
    if (qx_addr_parse(admin, &ss, &len) != 0) {
        fprintf(stderr, "qrux inject --prestop: --admin %s: not an address\n", admin);
        return EXIT_USAGE;
    }
    if (token_file) {
        FILE *f = fopen(token_file, "r");
        if (f) {
            size_t n = fread(token, 1, sizeof(token) - 1, f);
            fclose(f);
            token[n] = '\0';
            while (n > 0 && (token[n - 1] == '\n' || token[n - 1] == '\r' || token[n - 1] == ' '))
                token[--n] = '\0';
        }
    }
    int fd = connect_to(&ss, len);
    if (fd == -1) {
        /* Nothing to drain: qrux is not running (or already gone). */
        fprintf(stderr, "qrux inject --prestop: %s: %s; nothing to drain\n", admin,
                strerror(errno));
        return 0;
    }
    int n =
        snprintf(req, sizeof(req),
                 "POST /drain HTTP/1.1\r\nHost: %s\r\n%s%s%sContent-Length: 0\r\n"
                 "Connection: close\r\n\r\n",
                 admin, token[0] ? "Authorization: Bearer " : "", token, token[0] ? "\r\n" : "");
    ssize_t got = -1;
    if (write(fd, req, (size_t)n) == n) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 5000) == 1)
            got = read(fd, resp, sizeof(resp) - 1);
    }
    close(fd);
    if (got <= 0 || strncmp(resp, "HTTP/1.1 202", 12) != 0) {
        if (got > 0) {
            resp[got] = '\0';
            char *eol = strstr(resp, "\r\n");
            if (eol)
                *eol = '\0';
        }
        fprintf(stderr, "qrux inject --prestop: POST /drain on %s: %s\n", admin,
                got > 0 ? resp : "no answer");
        return 1;
    }
    fprintf(stderr, "qrux inject --prestop: drain started; waiting up to %d s for qrux to finish\n",
            wait_secs);
    for (int i = 0; i < wait_secs * 10; i++) {
        usleep(100000);
        fd = connect_to(&ss, len);
        if (fd == -1)
            return 0; /* the admin server is gone: qrux has exited */
        close(fd);
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * the command line */

static void usage(FILE *f)
{
    fprintf(f, "usage: qrux inject --listen ADDR --cert FILE --key FILE [--config FILE]\n"
               "       qrux inject --lint FILE...\n"
               "       qrux inject --prestop [--admin ADDR] [--token-file FILE] [--wait SECS]\n"
               "\n"
               "The admission webhook that adds the qrux sidecar to opted-in pods.\n"
               "Serves HTTPS on ADDR: POST /mutate (pods labelled qrux.io/inject=true),\n"
               "POST /mutate/namespace (pods of a labelled namespace), GET /livez /readyz\n"
               "/metrics. The certificate and key are reloaded when their files change.\n"
               "\n"
               "  --config FILE    JSON options (image, configMap, tlsSecret, xdp, nativeSidecar,\n"
               "                   appPort, port, adminPort, drainDelaySecs, resources, ...)\n"
               "  --lint FILE...   warn about manifests that break HTTP/3; exit 1 on a warning\n"
               "  --prestop        the sidecar's preStop hook: POST /drain to qrux's admin\n"
               "                   server (default 127.0.0.1:9901), then wait for qrux to exit\n"
               "                   (at most --wait seconds, default 5)\n");
}

int qx_inject_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"cert", required_argument, NULL, 'C'},
        {"key", required_argument, NULL, 'K'},
        {"config", required_argument, NULL, 'c'},
        {"lint", no_argument, NULL, 'L'},
        {"prestop", no_argument, NULL, 'P'},
        {"admin", required_argument, NULL, 'a'},
        {"token-file", required_argument, NULL, 't'},
        {"wait", required_argument, NULL, 'w'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *listen = NULL, *cert = NULL, *key = NULL, *config = NULL;
    const char *admin = "127.0.0.1:9901", *token_file = NULL;
    int lint = 0, pre = 0, wait_secs = 5, c;
    char *end;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            listen = optarg;
            break;
        case 'C':
            cert = optarg;
            break;
        case 'K':
            key = optarg;
            break;
        case 'c':
            config = optarg;
            break;
        case 'L':
            lint = 1;
            break;
        case 'P':
            pre = 1;
            break;
        case 'a':
            admin = optarg;
            break;
        case 't':
            token_file = optarg;
            break;
        case 'w':
            wait_secs = (int)strtol(optarg, &end, 10);
            if (*end != '\0' || wait_secs < 0 || wait_secs > 3600) {
                fprintf(stderr, "qrux inject: --wait %s: whole seconds, 0 to 3600\n", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    qx_log_init();
    if (lint) {
        if (optind == argc) {
            fprintf(stderr, "qrux inject --lint: no files\n");
            return EXIT_USAGE;
        }
        int n = qx_inject_lint((const char *const *)argv + optind, (size_t)(argc - optind), stdout);
        if (n < 0)
            return EXIT_USAGE;
        if (n > 0)
            fprintf(stderr, "%d warning%s\n", n, n == 1 ? "" : "s");
        return n > 0 ? 1 : 0;
    }
    if (optind != argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (pre)
        return prestop(admin, token_file, wait_secs);
    if (listen == NULL || cert == NULL || key == NULL) {
        usage(stderr);
        return EXIT_USAGE;
    }
    signal(SIGPIPE, SIG_IGN);
    return serve(listen, cert, key, config);
}
