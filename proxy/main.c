/*
 * main.c - qrux's entry point: the command line, configuration, and the
 * main thread's loop (signals, config and certificate watching, worker
 * supervision, lifecycle).
 *
 * Order matters for Kubernetes: the config and the TLS files are fully
 * validated before any socket is bound, so a bad ConfigMap never leaves a
 * half-started pod (exit 2 names the field).
 */
#include "admin/admin.h"
#include "admin/inject.h"
#include "base/log.h"
#include "base/qx.h"
#include "conf/dns.h"
#include "conf/snapshot.h"
#include "config/config.h"
#include "config/watch.h"
#include "front/quic/quic.h"
#include "front/quic/src_rate.h"
#include "front/quic/steer.h"
#include "front/quic/tls.h"
#include "front/tcp/tcp_front.h"
#include "worker/runtime.h"
#include "worker/worker.h"
#include "xdp/xdp.h"
#include "xdp/xdp_proxy.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <gnutls/crypto.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#define EXIT_CONFIG 2
#define WATCH_DEBOUNCE_MS 100
/* Descriptors never handed to client or upstream connections: the admin
 * server (its 64 connections and libmicrohttpd's own), probes, config and
 * certificate reloads, logs. */
#define FD_RESERVE 256

typedef struct qx_main {
    uv_loop_t *loop;
    const char *config_path;
    uv_signal_t sigterm, sigint, sighup, sigusr1;
    uv_async_t exited;
    uv_async_t started;        /* a worker's loop runs: LIVE once all of them do */
    uv_timer_t start_watchdog; /* names the workers still not running */
    uv_async_t drain;          /* POST /drain, from the admin thread */
    uv_timer_t drain_delay;    /* readyz is 503 while traffic is still served */
    qx_runtime_t *rt;
    qx_shared_t *shared;
    qx_worker_t *workers;
    unsigned nworkers;
    unsigned nexited; /* atomic */
    int signals;      /* SIGTERM/SIGINT received: the second one stops at once */
    int draining;     /* the drain started (a signal or POST /drain) */
    qx_watch_t *cfg_watch;
    qx_watch_t *tls_watch;
    qx_dns_t *dns;          /* upstream names, resolved on this loop; NULL when none */
    uv_async_t names;       /* a published config may name other hosts */
    uv_timer_t ready_timer; /* "ready" is logged once /readyz says so */
    qx_admin_t *admin;
} qx_main_t;

/* Whether another process already listens on |ss| (UDP or TCP): a socket
 * without SO_REUSEPORT cannot bind where any socket is bound. Ours are not
 * bound yet, so a conflict is someone else's: with SO_REUSEPORT a second
 * qrux of the same user would join the group and silently take part of the
 * traffic. Returns 1 when taken, 0 when free (or when the probe itself
 * fails: the real bind then reports it). */
static int listener_taken(const struct sockaddr_storage *ss, socklen_t len, int type)
{
    int fd = socket(ss->ss_family, type | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return 0;
    int one = 1, zero = 0;
    if (ss->ss_family == AF_INET6) /* as the listeners: "[::]" is dual-stack */
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    if (type == SOCK_STREAM) /* a TIME_WAIT socket is not a listener */
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    int taken = bind(fd, (const struct sockaddr *)ss, len) == -1 && errno == EADDRINUSE;
    close(fd);
    return taken;
}

/* Refuses to start beside another listener of our addresses, unless the
 * operator asked for a hand-over (--takeover). Returns 0 or 1 (exit code). */
static int check_listeners(const qx_config_t *cfg, int takeover)
{
    struct {
        const char *field, *addr, *proto;
        const struct sockaddr_storage *ss;
        socklen_t len;
        int type;
    } l[] = {
        {"server.listen", cfg->listen, "UDP", &cfg->listen_addr, cfg->listen_addrlen, SOCK_DGRAM},
        {"server.https_listen", cfg->https_listen, "TCP", &cfg->https_addr, cfg->https_addrlen,
         SOCK_STREAM},
    };
    for (size_t i = 0; i < QX_ARRAY_LEN(l); i++) {
        if (l[i].addr == NULL || !listener_taken(l[i].ss, l[i].len, l[i].type))
            continue;
        if (takeover) {
            QX_WARN("%s %s (%s): another process listens there; --takeover: joining it (stop "
                    "the other process once this one is ready)",
                    l[i].field, l[i].addr, l[i].proto);
            continue;
        }
        QX_ERROR("%s %s (%s): another process already listens there; refusing to start (a "
                 "second proxy would silently take part of the traffic). Stop it, or start with "
                 "--takeover for a deliberate hand-over",
                 l[i].field, l[i].addr, l[i].proto);
        return 1;
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: qrux --config FILE          run the proxy\n"
               "       qrux check --config FILE    validate FILE (and its cert/key) and exit\n"
               "       qrux inject ...              the sidecar injection webhook (inject --help)\n"
               "       qrux xdp attach|detach|status|gc ...  the XDP filter (qrux xdp --help)\n"
               "       qrux --help | --version\n"
               "\n"
               "HTTP/3 (QUIC) terminating sidecar proxy: clients speak HTTP/3, the app\n"
               "behind it gets HTTP/1.1 over pooled keep-alive connections.\n"
               "\n"
               "  -c, --config FILE  YAML configuration (see README.md)\n"
               "      --takeover     start even if another process listens on our\n"
               "                     addresses, sharing them (a side-by-side upgrade)\n"
               "  -h, --help         this text\n"
               "  -V, --version      print the version\n"
               "\n"
               "Signals: SIGTERM/SIGINT drain then exit 0 (a second one stops at once),\n"
               "SIGHUP reloads the config file, SIGUSR1 reloads the certificate and key.\n"
               "Environment: QRUX_LOG=error|warn|info|debug (default info),\n"
               "QRUX_LOG_FORMAT=text|json (default text).\n"
               "Exit codes: 0 after a graceful shutdown (and for a valid `check`), 1 on a\n"
               "runtime failure (e.g. the listen address is taken), 2 on a configuration\n"
               "error.\n");
}

/* ---- reloads ------------------------------------------------------------ */

/* Parses and validates the file again; a good one becomes the new snapshot,
 * a bad one is logged and counted and the config in force stays. */
static void reload_config(qx_main_t *m, const char *why)
{
    char err[512] = "";
    qx_config_t *cfg = NULL;
    uint64_t gen = 0;

    if (qx_config_load_file(m->config_path, &cfg, err, sizeof(err)) != 0) {
        QX_ERROR("config reload (%s) rejected: %s; generation %llu stays in force", why, err,
                 (unsigned long long)qx_runtime_generation(m->rt));
        qx_runtime_reject(m->rt, QX_SRC_FILE, err);
        return;
    }
    int rv = qx_runtime_publish(m->rt, cfg, QX_SRC_FILE, 0, &gen, err, sizeof(err));
    if (rv != 0)
        QX_ERROR("config reload (%s) not applied: %s", why, err);
    else
        QX_INFO("config reload (%s): generation %llu", why, (unsigned long long)gen);
}

static void reload_tls(qx_main_t *m, const char *why)
{
    char err[512] = "";
    qx_snapshot_t *snap = qx_runtime_snapshot(m->rt);
    qx_tls_t *tls = NULL;
    if (qx_tls_new(&tls, snap->cfg->cert, snap->cfg->key, err, sizeof(err)) != 0) {
        QX_ERROR("certificate reload (%s) rejected: %s; the certificate in force stays", why, err);
    } else {
        qx_tls_tcp_t *tcp = NULL;
        if (snap->cfg->https_listen &&
            qx_tls_tcp_new(&tcp, snap->cfg->cert, snap->cfg->key, err, sizeof(err)) != 0) {
            /* Both listeners move together or not at all. */
            QX_ERROR("certificate reload (%s) rejected: %s; the certificate in force stays", why,
                     err);
            qx_tls_del(tls);
            qx_snapshot_unref(snap);
            return;
        }
        /* Read before the swap hands |tls| over to the workers. */
        int64_t not_after = qx_tls_not_after(tls);
        qx_shared_tls_swap(m->shared, tls);
        __atomic_store_n(&m->rt->cert_not_after, not_after, __ATOMIC_RELAXED);
        if (tcp)
            qx_tls_tcp_swap(m->shared, tcp);
        QX_INFO("certificate reload (%s): new handshakes use %s", why, snap->cfg->cert);
    }
    qx_snapshot_unref(snap);
}

static void on_config_changed(qx_watch_t *w, void *arg)
{
    (void)w;
    reload_config(arg, "file changed");
}

static void on_tls_changed(qx_watch_t *w, void *arg)
{
    (void)w;
    reload_tls(arg, "file changed");
}

/* ---- lifecycle ---------------------------------------------------------- */

static void on_worker_exit(qx_worker_t *w, void *arg)
{
    qx_main_t *m = arg;
    (void)w;
    __atomic_add_fetch(&m->nexited, 1, __ATOMIC_ACQ_REL);
    uv_async_send(&m->exited);
}

/* Sets the budget of descriptors for client and upstream connections:
 * the soft RLIMIT_NOFILE (raised to the hard one first) less what is open
 * now (listeners, loops, the admin server) less FD_RESERVE. A flood of
 * connections then fails its own accepts and connects, never /livez. */
static void fd_budget(qx_fd_budget_t *b)
{
    struct rlimit rl;
    unsigned open_now = 0;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit up = {rl.rlim_max, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            rl = up;
    }
    DIR *d = opendir("/proc/self/fd");
    if (d != NULL) {
        while (readdir(d) != NULL)
            open_now++;
        closedir(d);
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > UINT32_MAX)
        rl.rlim_cur = UINT32_MAX;
    uint64_t need = (uint64_t)open_now + FD_RESERVE;
    b->limit = rl.rlim_cur > need + 16 ? (unsigned)(rl.rlim_cur - need) : 16;
    QX_INFO("descriptors: %llu allowed, %u for client and upstream connections (%u kept in "
            "reserve)",
            (unsigned long long)rl.rlim_cur, b->limit, FD_RESERVE);
}

/* ---- upstream names ------------------------------------------------------ */

/* A name's addresses changed: new endpoints for the workers, same config
 * generation. */
static void on_dns_change(void *arg)
{
    qx_main_t *m = arg;
    qx_runtime_refresh(m->rt);
}

static void on_names(uv_async_t *h)
{
    qx_main_t *m = h->data;
    if (m->dns == NULL)
        return;
    qx_snapshot_t *snap = qx_runtime_snapshot(m->rt);
    qx_dns_sync(m->dns, snap->cfg);
    qx_snapshot_unref(snap);
}

static void on_dns_wait(uv_timer_t *t)
{
    (void)t; /* only wakes the loop */
}

/* Resolves the names of cfg once, waiting at most |ms| for the answers
 * (run before anything else is on the loop). Returns the names that
 * resolve to nothing, and logs each. */
static size_t resolve_now(qx_dns_t *dns, uv_loop_t *loop, const qx_config_t *cfg, uint64_t ms)
{
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, on_dns_wait, ms, 0);
    if (qx_dns_sync(dns, cfg) > 0) {
        while (qx_dns_pending(dns) > 0 && uv_is_active((uv_handle_t *)&t))
            uv_run(loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    size_t bad = 0;
    for (size_t r = 0; r < cfg->nroutes; r++) {
        for (size_t j = 0; j < cfg->routes[r].nupstreams; j++) {
            const qx_upstream_cfg_t *u = &cfg->routes[r].upstreams[j];
            struct sockaddr_storage a[1];
            socklen_t l[1];
            if (u->host == NULL || qx_dns_addrs(dns, u->host, u->port, a, l, 1) > 0)
                continue;
            char why[160];
            if (!qx_dns_why(dns, u->host, why, sizeof(why)))
                snprintf(why, sizeof(why),
                         "not resolved: no answer from the name server within %llu s",
                         (unsigned long long)(ms / 1000));
            QX_WARN("routes[%zu] (%s): upstream %s %s", r, cfg->routes[r].match, u->name, why);
            bad++;
        }
    }
    return bad;
}

/* ---- readiness line ------------------------------------------------------ */

static void log_ready(qx_main_t *m)
{
    qx_snapshot_t *snap = qx_runtime_snapshot(m->rt);
    QX_INFO("ready: udp %s%s%s workers=%u routes=%zu (qrux %s)", snap->cfg->listen,
            snap->cfg->https_listen ? " tcp " : "",
            snap->cfg->https_listen ? snap->cfg->https_listen : "", m->nworkers, snap->cfg->nroutes,
            QX_VERSION);
    qx_snapshot_unref(snap);
}

/* With ready_requires_upstream the start-up line says "ready" only when
 * /readyz does: until then it is checked every second. */
static void on_ready_timer(uv_timer_t *t)
{
    qx_main_t *m = t->data;
    char why[300];
    if (qx_runtime_lifecycle(m->rt) != QX_LC_LIVE) {
        uv_timer_stop(t);
        return;
    }
    if (!qx_admin_ready(m->admin, why, sizeof(why)))
        return;
    uv_timer_stop(t);
    log_ready(m);
}

static void on_worker_start(qx_worker_t *w, void *arg)
{
    qx_main_t *m = arg;
    (void)w;
    uv_async_send(&m->started);
}

/* LIVE (startupz and readyz 200) only once every worker's loop runs: a
 * worker that never starts keeps the pod out of service, and the kubelet's
 * startup probe restarts it, rather than half the workers serving. */
static void on_started(uv_async_t *h)
{
    qx_main_t *m = h->data;
    if (__atomic_load_n(&m->rt->workers_running, __ATOMIC_ACQUIRE) < (int)m->nworkers ||
        qx_runtime_lifecycle(m->rt) != QX_LC_STARTING)
        return;
    uv_timer_stop(&m->start_watchdog);
    qx_runtime_set_lifecycle(m->rt, QX_LC_LIVE);
    char why[300];
    if (m->admin != NULL && !qx_admin_ready(m->admin, why, sizeof(why))) {
        qx_snapshot_t *snap = qx_runtime_snapshot(m->rt);
        QX_WARN("started: udp %s workers=%u routes=%zu (qrux %s), but /readyz answers 503 until "
                "an upstream of every route accepts connections: %s",
                snap->cfg->listen, m->nworkers, snap->cfg->nroutes, QX_VERSION, why);
        qx_snapshot_unref(snap);
        uv_timer_start(&m->ready_timer, on_ready_timer, 1000, 1000);
        return;
    }
    log_ready(m);
}

static void on_start_watchdog(uv_timer_t *t)
{
    qx_main_t *m = t->data;
    for (unsigned i = 0; i < m->nworkers; i++) {
        if (__atomic_load_n(&m->workers[i].ctx.state, __ATOMIC_ACQUIRE) == QX_W_STARTING)
            QX_WARN("worker %u has not started its loop yet; /startupz stays 503 until it does", i);
    }
}

static void on_exited(uv_async_t *h)
{
    qx_main_t *m = h->data;
    if (__atomic_load_n(&m->nexited, __ATOMIC_ACQUIRE) < m->nworkers)
        return;
    qx_watch_del(m->cfg_watch);
    qx_watch_del(m->tls_watch);
    m->cfg_watch = m->tls_watch = NULL;
    uv_close((uv_handle_t *)&m->sigterm, NULL);
    uv_close((uv_handle_t *)&m->sigint, NULL);
    uv_close((uv_handle_t *)&m->sighup, NULL);
    uv_close((uv_handle_t *)&m->sigusr1, NULL);
    /* libuv puts the default action back as the last watcher of a signal
     * closes: a SIGTERM now (the kubelet's, right after a preStop hook saw
     * the drain end) would kill the process on its way out, exit 143
     * instead of 0. Everything is done; the signals have nothing to add. */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    uv_close((uv_handle_t *)&m->exited, NULL);
    uv_close((uv_handle_t *)&m->started, NULL);
    uv_close((uv_handle_t *)&m->start_watchdog, NULL);
    uv_close((uv_handle_t *)&m->ready_timer, NULL);
    __atomic_store_n(&m->rt->names_async, NULL, __ATOMIC_RELEASE);
    uv_close((uv_handle_t *)&m->names, NULL);
    qx_dns_del(m->dns);
    m->dns = NULL;
    uv_close((uv_handle_t *)&m->drain, NULL);
    uv_close((uv_handle_t *)&m->drain_delay, NULL);
    qx_xdp_proxy_close(m->rt->xdp);
}

static void on_drain_delay(uv_timer_t *t)
{
    qx_main_t *m = t->data;
    QX_INFO("drain: GOAWAY to clients; in-flight requests get up to graceful_shutdown_secs");
    for (unsigned i = 0; i < m->nworkers; i++)
        qx_worker_drain(&m->workers[i]);
}

/* Readiness flips at once, so endpoint controllers stop sending new
 * traffic; requests keep being served for drain_delay_secs (they may still
 * arrive while the endpoint removal propagates), then the workers drain. */
static void start_drain(qx_main_t *m, const char *why)
{
    if (m->draining)
        return;
    m->draining = 1;
    qx_runtime_set_lifecycle(m->rt, QX_LC_DRAINING);
    qx_snapshot_t *snap = qx_runtime_snapshot(m->rt);
    uint32_t delay = snap->cfg->drain_delay_secs;
    qx_snapshot_unref(snap);
    /* What a signal does next differs: after a signal, a second one stops
     * at once; after POST /drain (a preStop hook) the kubelet's SIGTERM is
     * expected and only continues the drain. */
    QX_INFO("%s: draining: /readyz is 503; serving for drain_delay_secs=%u more, then "
            "GOAWAY; %s",
            why, delay,
            m->signals > 0 ? "signal again to stop now"
                           : "SIGTERM continues the drain, the signal after it stops at once");
    uv_timer_start(&m->drain_delay, on_drain_delay, (uint64_t)delay * 1000, 0);
}

static void on_drain(uv_async_t *h)
{
    start_drain(h->data, "POST /drain");
}

static void on_signal(uv_signal_t *h, int signum)
{
    qx_main_t *m = h->data;
    if (signum == SIGHUP) {
        reload_config(m, "SIGHUP");
        qx_watch_rebase(m->cfg_watch);
        return;
    }
    if (signum == SIGUSR1) {
        reload_tls(m, "SIGUSR1");
        qx_watch_rebase(m->tls_watch);
        return;
    }
    /* Only OS signals count toward "the second one": a preStop hook's
     * POST /drain followed by the kubelet's SIGTERM must keep draining. */
    const char *name = signum == SIGTERM ? "SIGTERM" : "SIGINT";
    if (m->signals++ == 0 && m->draining) {
        QX_INFO("%s: the drain POST /drain started continues; signal again to stop now", name);
    } else if (m->signals == 1) {
        start_drain(m, name);
    } else {
        QX_INFO("second signal: stopping now");
        uv_timer_stop(&m->drain_delay);
        for (unsigned i = 0; i < m->nworkers; i++)
            qx_worker_stop(&m->workers[i]);
    }
}

/* ---- start-up ----------------------------------------------------------- */

/* Loads and checks everything a start needs short of binding: the config
 * and both TLS stacks' view of the certificate. Returns 0 or EXIT_CONFIG
 * (logged). */
static int load_all(const char *path, qx_config_t **cfg, qx_tls_t **tls, qx_tls_tcp_t **tls_tcp)
{
    char err[512] = "";
    if (qx_config_load_file(path, cfg, err, sizeof(err)) != 0) {
        QX_ERROR("config %s: %s", path, err);
        return EXIT_CONFIG;
    }
    if (qx_tls_new(tls, (*cfg)->cert, (*cfg)->key, err, sizeof(err)) != 0 ||
        ((*cfg)->https_listen &&
         qx_tls_tcp_new(tls_tcp, (*cfg)->cert, (*cfg)->key, err, sizeof(err)) != 0)) {
        QX_ERROR("config %s: %s", path, err);
        return EXIT_CONFIG;
    }
    return 0;
}

static void start_watching(qx_main_t *m, const qx_config_t *cfg)
{
    const char *cfgpaths[] = {m->config_path};
    const char *tlspaths[] = {cfg->cert, cfg->key};
    if (qx_watch_is_subpath_mount(m->config_path))
        QX_WARN("config %s is mounted on its own (a ConfigMap subPath mount?): Kubernetes never "
                "updates such a file; mount the whole ConfigMap as a directory to get live "
                "updates",
                m->config_path);
    if (qx_watch_new(&m->cfg_watch, m->loop, cfgpaths, 1, WATCH_DEBOUNCE_MS, on_config_changed,
                     m) != 0)
        QX_WARN("config %s: not watched; SIGHUP still reloads it", m->config_path);
    if (qx_watch_new(&m->tls_watch, m->loop, tlspaths, 2, WATCH_DEBOUNCE_MS, on_tls_changed, m) !=
        0)
        QX_WARN("certificate files not watched; SIGUSR1 still reloads them");
}

/*
 * The process's secrets: the session-ticket master key, the stateless
 * reset secret and the token secret. With server.ticket_key_file (a Secret
 * shared by every replica) they are derived from it, so replicas resume
 * each other's sessions and accept each other's tokens, and a restarted pod
 * still resets connections it no longer knows; without it they are random.
 * Returns 0 or EXIT_CONFIG (logged).
 */
static int load_secrets(const qx_config_t *cfg, qx_shared_t *sh, uint8_t ticket[64])
{
    uint8_t ikm[4096];
    size_t n = 0;

    if (cfg->ticket_key_file == NULL) {
        gnutls_rnd(GNUTLS_RND_KEY, ticket, 64);
        gnutls_rnd(GNUTLS_RND_KEY, sh->static_secret, sizeof(sh->static_secret));
        gnutls_rnd(GNUTLS_RND_KEY, sh->token_secret, sizeof(sh->token_secret));
        return 0;
    }
    FILE *f = fopen(cfg->ticket_key_file, "rb");
    if (f == NULL) {
        QX_ERROR("server.ticket_key_file: cannot read %s: %s", cfg->ticket_key_file,
                 strerror(errno));
        return EXIT_CONFIG;
    }
    n = fread(ikm, 1, sizeof(ikm), f);
    fclose(f);
    if (n < 32) {
        QX_ERROR("server.ticket_key_file: %s holds %zu bytes; at least 32 bytes of secret are "
                 "needed (e.g. head -c 64 /dev/urandom)",
                 cfg->ticket_key_file, n);
        return EXIT_CONFIG;
    }
    /* One key per purpose: HMAC-SHA256(file content, label). */
    static const char *const labels[] = {"qrux ticket 1", "qrux ticket 2", "qrux reset",
                                         "qrux token"};
    uint8_t *outs[] = {ticket, ticket + 32, sh->static_secret, sh->token_secret};
    for (size_t i = 0; i < QX_ARRAY_LEN(labels); i++) {
        if (gnutls_hmac_fast(GNUTLS_MAC_SHA256, ikm, n, labels[i], strlen(labels[i]), outs[i]) !=
            0) {
            QX_ERROR("server.ticket_key_file: key derivation failed");
            return EXIT_CONFIG;
        }
    }
    memset(ikm, 0, sizeof(ikm));
    return 0;
}

/* `qrux check --config FILE`: what a CI job or a pre-apply hook runs. */
static int run_check(const char *path)
{
    qx_config_t *cfg = NULL;
    qx_tls_t *tls = NULL;
    qx_tls_tcp_t *tls_tcp = NULL;
    int rv = load_all(path, &cfg, &tls, &tls_tcp);
    if (rv == 0) {
        /* What start-up reads besides the config: the key file's secrets
         * and the admin token. */
        qx_shared_t sh;
        uint8_t ticket[64];
        rv = load_secrets(cfg, &sh, ticket);
        memset(ticket, 0, sizeof(ticket));
        if (rv == 0 && cfg->admin.token_file) {
            char err[512], *tok = NULL;
            size_t toklen = 0;
            if (qx_admin_read_token(cfg->admin.token_file, &tok, &toklen, err, sizeof(err)) != 0) {
                QX_ERROR("config %s: %s", path, err);
                rv = EXIT_CONFIG;
            } else {
                explicit_bzero(tok, toklen);
                free(tok);
            }
        }
    }
    if (rv == 0) {
        /* Names that do not resolve are warnings: the Service may come
         * later, and the route is then served once it does. */
        qx_dns_t *dns = NULL;
        char err[512];
        uv_loop_t loop;
        uv_loop_init(&loop);
        if (qx_dns_new(&dns, &loop, cfg, NULL, NULL, err, sizeof(err)) != 0) {
            QX_ERROR("config %s: %s", path, err);
            rv = EXIT_CONFIG;
        } else {
            qx_dns_set_once(dns);
            size_t bad = resolve_now(dns, &loop, cfg, 5000);
            if (bad > 0)
                fprintf(stderr, "%s: warning: %zu upstream name%s did not resolve (see above)\n",
                        path, bad, bad == 1 ? "" : "s");
            qx_dns_del(dns);
            uv_run(&loop, UV_RUN_DEFAULT);
        }
        uv_loop_close(&loop);
    }
    if (rv == 0)
        printf("%s: ok (%zu route%s, listen %s)\n", path, cfg->nroutes,
               cfg->nroutes == 1 ? "" : "s", cfg->listen);
    qx_tls_del(tls);
    qx_tls_tcp_del(tls_tcp);
    qx_config_del(cfg);
    return rv;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"takeover", no_argument, NULL, 'T'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    char err[512];
    int c, check = 0, takeover = 0;

    if (argc > 1 && strcmp(argv[1], "inject") == 0)
        return qx_inject_main(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "xdp") == 0)
        return qx_xdp_main(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "check") == 0) {
        check = 1;
        argv++;
        argc--;
    } else if (argc > 1 && argv[1][0] != '-') {
        fprintf(stderr, "qrux: unknown command '%s' (qrux --help lists the commands)\n", argv[1]);
        return EXIT_CONFIG;
    }
    while ((c = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config_path = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("qrux %s\n", QX_VERSION);
            return 0;
        case 'T':
            takeover = 1;
            break;
        default: /* getopt said what was wrong */
            fprintf(stderr, "qrux --help shows the usage\n");
            return EXIT_CONFIG;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "qrux: unexpected argument '%s' (qrux --help shows the usage)\n",
                argv[optind]);
        return EXIT_CONFIG;
    }
    if (config_path == NULL) {
        fprintf(stderr,
                "qrux: --config is required: qrux %s--config FILE (qrux --help shows the "
                "usage)\n",
                check ? "check " : "");
        return EXIT_CONFIG;
    }
    qx_log_init();
    if (check)
        return run_check(config_path);
    signal(SIGPIPE, SIG_IGN);

    qx_config_t *cfg = NULL;
    qx_tls_t *tls = NULL;
    qx_tls_tcp_t *tls_tcp = NULL;
    if (load_all(config_path, &cfg, &tls, &tls_tcp) != 0)
        return EXIT_CONFIG;
    /* log.format, unless QRUX_LOG_FORMAT said otherwise (the lines so far
     * were about the config itself). */
    const char *lf = getenv("QRUX_LOG_FORMAT");
    if ((lf == NULL || *lf == '\0') && cfg->log_json)
        qx_log_json = 1;
    if (check_listeners(cfg, takeover) != 0)
        return 1;

    qx_snapshot_t *snap = NULL;
    unsigned nworkers = qx_config_effective_workers(cfg);
    if (qx_snapshot_new(&snap, cfg, 1, NULL, NULL) != 0) {
        QX_ERROR("out of memory");
        return 1;
    }
    /* Static: the process's state lives as long as the process, and stays
     * reachable when start-up fails half-way (leak checkers). */
    static qx_runtime_t rt;
    if (qx_runtime_init(&rt, snap) != 0) {
        QX_ERROR("out of memory");
        return 1;
    }
    __atomic_store_n(&rt.cert_not_after, qx_tls_not_after(tls), __ATOMIC_RELAXED);
    static qx_main_t m;
    m.rt = &rt;
    m.config_path = config_path;
    static qx_shared_t shared;
    shared = (qx_shared_t){.tls = tls,
                           .tls_tcp = tls_tcp,
                           .rt = &rt,
                           .on_worker_exit = on_worker_exit,
                           .on_worker_start = on_worker_start,
                           .arg = &m};
    pthread_mutex_init(&shared.tls_lock, NULL);
    m.shared = &shared;
    uint8_t ticket[64];
    static qx_tls_keys_t tls_keys; /* large (the anti-replay table): not on the stack */
    if (load_secrets(snap->cfg, &shared, ticket) != 0)
        return EXIT_CONFIG;
    if (qx_tls_keys_init(&tls_keys, ticket, (int)snap->cfg->early_data) != 0) {
        QX_ERROR("tls: cannot set up session tickets / anti-replay");
        return 1;
    }
    memset(ticket, 0, sizeof(ticket));
    shared.tls_keys = &tls_keys;
    rt.early_refused = &tls_keys.replays_refused;

    m.loop = uv_default_loop();
    /* The CID key before any worker makes a CID; with xdp: the filter's
     * maps and the Initial rate per source. */
    if (qx_cid_keys_init(&shared.cid_keys, 0) != 0 ||
        (snap->cfg->xdp.pin != NULL &&
         (qx_src_rate_new(&shared.initial_rate, 65536) != 0 ||
          qx_xdp_proxy_new(&rt.xdp, &snap->cfg->xdp, &shared.cid_keys, m.loop) != 0))) {
        QX_ERROR("cannot set up the connection-ID key / xdp state");
        return 1;
    }
    m.nworkers = nworkers;
    m.workers = calloc(nworkers, sizeof(*m.workers));
    if (m.workers == NULL)
        return 1;
    /* Upstream names: resolved before the workers start (up to 2 s), so
     * the first requests find their endpoints; one that does not resolve
     * is no config error (the Service may not exist yet): its route has
     * no endpoint until it does. */
    if (qx_dns_new(&m.dns, m.loop, snap->cfg, on_dns_change, &m, err, sizeof(err)) != 0) {
        QX_ERROR("config %s: %s", config_path, err);
        return EXIT_CONFIG;
    }
    rt.dns = m.dns;
    shared.dns = m.dns;
    resolve_now(m.dns, m.loop, snap->cfg, 2000);
    qx_runtime_refresh(&rt);
    uv_async_init(m.loop, &m.names, on_names);
    m.names.data = &m;
    rt.names_async = &m.names;
    uv_timer_init(m.loop, &m.ready_timer);
    m.ready_timer.data = &m;
    uv_async_init(m.loop, &m.exited, on_exited);
    m.exited.data = &m;
    uv_async_init(m.loop, &m.started, on_started);
    m.started.data = &m;
    uv_timer_init(m.loop, &m.start_watchdog);
    m.start_watchdog.data = &m;
    uv_async_init(m.loop, &m.drain, on_drain);
    m.drain.data = &m;
    uv_timer_init(m.loop, &m.drain_delay);
    m.drain_delay.data = &m;
    rt.drain_async = &m.drain;
    rt.workers = m.workers;
    rt.nworkers = nworkers;
    shared.nworkers = nworkers;
    qx_snapshot_t *cur = qx_runtime_snapshot(&rt); /* with the endpoints resolved above */
    for (unsigned i = 0; i < nworkers; i++) {
        if (qx_worker_init(&m.workers[i], i, &shared, cur) != 0)
            return 1; /* the reason is logged; nothing has run yet */
    }
    qx_snapshot_unref(cur);
    if (nworkers > 1) {
        /* The sockets were bound in worker order: index i is worker i. */
        int serr = qx_steer_attach(qx_quic_ep_fd(m.workers[0].quic), nworkers);
        if (serr != 0)
            QX_WARN("quic: connection-ID steering not attached (%s): a datagram for another "
                    "worker's connection is handed over in user space",
                    strerror(serr));
        else
            QX_INFO("quic: connection-ID steering attached (%u workers)", nworkers);
    }
    uv_signal_t *sigs[] = {&m.sigterm, &m.sigint, &m.sighup, &m.sigusr1};
    int signums[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
    for (size_t i = 0; i < QX_ARRAY_LEN(sigs); i++) {
        uv_signal_init(m.loop, sigs[i]);
        sigs[i]->data = &m;
        uv_signal_start(sigs[i], on_signal, signums[i]);
    }
    qx_admin_t *admin = NULL;
    int arv = qx_admin_start(&admin, &rt, err, sizeof(err));
    if (arv != 0) {
        if (arv == QX_ERR_CONFIG) {
            QX_ERROR("config %s: %s", config_path, err);
            return EXIT_CONFIG;
        }
        /* a taken port is a run-time failure, not a config error */
        QX_ERROR("%s%s", err,
                 takeover ? " (--takeover shares the proxy's addresses, not the admin port: "
                            "give this process an admin.listen of its own)"
                          : "");
        return 1;
    }
    m.admin = admin;
    fd_budget(&shared.fds);
    for (unsigned i = 0; i < nworkers; i++) {
        if (qx_worker_start(&m.workers[i]) != 0) {
            QX_ERROR("cannot start worker thread %u", i);
            return 1;
        }
    }
    start_watching(&m, snap->cfg);
    /* LIVE and the "ready" line come from on_started, once every worker's
     * loop runs; the watchdog says which ones do not. */
    uv_timer_start(&m.start_watchdog, on_start_watchdog, 5000, 5000);
    on_started(&m.started);

    uv_run(m.loop, UV_RUN_DEFAULT);
    qx_runtime_set_lifecycle(&rt, QX_LC_STOPPED);
    qx_admin_stop(admin);
    qx_xdp_proxy_del(rt.xdp);
    qx_src_rate_del(shared.initial_rate);
    int code = 0;
    for (unsigned i = 0; i < nworkers; i++) {
        uv_thread_join(&m.workers[i].thread);
        if (m.workers[i].exit_code)
            code = m.workers[i].exit_code;
        qx_worker_free(&m.workers[i]);
    }
    free(m.workers);
    qx_runtime_free(&rt); /* drops the snapshot in force */
    qx_tls_del(shared.tls);
    qx_tls_tcp_del(shared.tls_tcp);
    qx_tls_keys_free(&tls_keys);
    uv_run(m.loop, UV_RUN_NOWAIT); /* close callbacks of the watchers */
    uv_loop_close(m.loop);
    QX_INFO("stopped");
    return code;
}
