/*
 * main.c - qrux's entry point: the command line, configuration, and the
 * main thread's loop (signals, worker supervision, lifecycle).
 *
 * Order matters for Kubernetes: the config and the TLS files are fully
 * validated before any socket is bound, so a bad ConfigMap never leaves a
 * half-started pod (exit 2 names the field).
 */
#include "admin.h"
#include "config.h"
#include "log.h"
#include "qx.h"
#include "runtime.h"
#include "snapshot.h"
#include "tcp_front.h"
#include "tls.h"
#include "worker.h"

#include <getopt.h>
#include <gnutls/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>
#define EXIT_CONFIG 2

typedef struct qx_main {
    uv_loop_t *loop;
    uv_signal_t sigterm, sigint;
    uv_async_t exited;
    uv_async_t drain; /* POST /drain, from the admin thread */
    qx_runtime_t *rt;
    qx_worker_t *workers;
    unsigned nworkers;
    unsigned nexited; /* atomic */
    int signals;
} qx_main_t;

static void usage(FILE *f)
{
    fprintf(f, "usage: qrux --config FILE\n"
               "       qrux --help | --version\n"
               "\n"
               "HTTP/3 (QUIC) terminating sidecar proxy: clients speak HTTP/3, the app\n"
               "behind it gets HTTP/1.1 over pooled keep-alive connections.\n"
               "\n"
               "  -c, --config FILE  YAML configuration (see README.md)\n"
               "  -h, --help         this text\n"
               "  -V, --version      print the version\n"
               "\n"
               "Environment: QRUX_LOG=error|warn|info|debug (default info).\n"
               "Exit codes: 0 after a graceful shutdown, 1 on a runtime failure (e.g. the\n"
               "listen address is taken), 2 on a configuration error.\n");
}

static void on_worker_exit(qx_worker_t *w, void *arg)
{
    qx_main_t *m = arg;
    (void)w;
    __atomic_add_fetch(&m->nexited, 1, __ATOMIC_ACQ_REL);
    uv_async_send(&m->exited);
}

static void on_exited(uv_async_t *h)
{
    qx_main_t *m = h->data;
    if (__atomic_load_n(&m->nexited, __ATOMIC_ACQUIRE) < m->nworkers)
        return;
    uv_close((uv_handle_t *)&m->sigterm, NULL);
    uv_close((uv_handle_t *)&m->sigint, NULL);
    uv_close((uv_handle_t *)&m->exited, NULL);
    uv_close((uv_handle_t *)&m->drain, NULL);
}

static void start_drain(qx_main_t *m, const char *why)
{
    if (m->signals++ != 0)
        return;
    qx_runtime_set_lifecycle(m->rt, QX_LC_DRAINING);
    QX_INFO("%s: draining (up to graceful_shutdown_secs); signal again to stop now", why);
    for (unsigned i = 0; i < m->nworkers; i++)
        qx_worker_drain(&m->workers[i]);
}

static void on_drain(uv_async_t *h)
{
    start_drain(h->data, "POST /drain");
}

static void on_signal(uv_signal_t *h, int signum)
{
    qx_main_t *m = h->data;
    if (m->signals == 0) {
        start_drain(m, signum == SIGTERM ? "SIGTERM" : "SIGINT");
    } else {
        QX_INFO("second signal: stopping now");
        for (unsigned i = 0; i < m->nworkers; i++)
            qx_worker_stop(&m->workers[i]);
    }
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    char err[512];
    int c;

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
        default:
            usage(stderr);
            return EXIT_CONFIG;
        }
    }
    if (config_path == NULL || optind != argc) {
        usage(stderr);
        return EXIT_CONFIG;
    }
    qx_log_init();
    signal(SIGPIPE, SIG_IGN);

    qx_config_t *cfg = NULL;
    err[0] = '\0';
    if (qx_config_load_file(config_path, &cfg, err, sizeof(err)) != 0) {
        QX_ERROR("config %s: %s", config_path, err);
        return EXIT_CONFIG;
    }
    qx_tls_t *tls = NULL;
    if (qx_tls_new(&tls, cfg->cert, cfg->key, err, sizeof(err)) != 0) {
        QX_ERROR("config %s: %s", config_path, err);
        qx_config_del(cfg);
        return EXIT_CONFIG;
    }

    qx_tls_tcp_t *tls_tcp = NULL;
    if (cfg->https_listen && qx_tls_tcp_new(&tls_tcp, cfg->cert, cfg->key, err, sizeof(err)) != 0) {
        QX_ERROR("config %s: %s", config_path, err);
        return EXIT_CONFIG;
    }
    qx_snapshot_t *snap = NULL;
    unsigned nworkers = qx_config_effective_workers(cfg);
    char listen[128];
    snprintf(listen, sizeof(listen), "%s", cfg->listen);
    if (qx_snapshot_new(&snap, cfg, 1) != 0) {
        QX_ERROR("out of memory");
        return 1;
    }
    qx_runtime_t rt;
    if (qx_runtime_init(&rt, snap) != 0) {
        QX_ERROR("out of memory");
        return 1;
    }
    qx_main_t m = {0};
    m.rt = &rt;
    qx_shared_t shared = {
        .tls = tls, .tls_tcp = tls_tcp, .rt = &rt, .on_worker_exit = on_worker_exit, .arg = &m};
    gnutls_rnd(GNUTLS_RND_KEY, shared.static_secret, sizeof(shared.static_secret));

    m.loop = uv_default_loop();
    m.nworkers = nworkers;
    m.workers = calloc(nworkers, sizeof(*m.workers));
    if (m.workers == NULL)
        return 1;
    uv_async_init(m.loop, &m.exited, on_exited);
    m.exited.data = &m;
    uv_async_init(m.loop, &m.drain, on_drain);
    m.drain.data = &m;
    rt.drain_async = &m.drain;
    rt.workers = m.workers;
    rt.nworkers = nworkers;
    for (unsigned i = 0; i < nworkers; i++) {
        if (qx_worker_init(&m.workers[i], i, &shared, snap) != 0)
            return 1; /* the reason is logged; nothing has run yet */
    }
    uv_signal_init(m.loop, &m.sigterm);
    uv_signal_init(m.loop, &m.sigint);
    m.sigterm.data = m.sigint.data = &m;
    uv_signal_start(&m.sigterm, on_signal, SIGTERM);
    uv_signal_start(&m.sigint, on_signal, SIGINT);
    qx_admin_t *admin = NULL;
    if (qx_admin_start(&admin, &rt, err, sizeof(err)) != 0) {
        QX_ERROR("config %s: %s", config_path, err);
        return EXIT_CONFIG;
    }
    for (unsigned i = 0; i < nworkers; i++) {
        if (qx_worker_start(&m.workers[i]) != 0) {
            QX_ERROR("cannot start worker thread %u", i);
            return 1;
        }
    }
    /* LIVE (startupz/readyz 200) once every worker's loop runs. */
    for (int tries = 0; tries < 5000; tries++) {
        if (__atomic_load_n(&rt.workers_running, __ATOMIC_ACQUIRE) == (int)nworkers)
            break;
        usleep(1000);
    }
    qx_runtime_set_lifecycle(&rt, QX_LC_LIVE);
    QX_INFO("ready: udp %s workers=%u routes=%zu (qrux %s)", listen, nworkers, snap->cfg->nroutes,
            QX_VERSION);

    uv_run(m.loop, UV_RUN_DEFAULT);
    qx_runtime_set_lifecycle(&rt, QX_LC_STOPPED);
    qx_admin_stop(admin);
    int code = 0;
    for (unsigned i = 0; i < nworkers; i++) {
        uv_thread_join(&m.workers[i].thread);
        if (m.workers[i].exit_code)
            code = m.workers[i].exit_code;
        qx_worker_free(&m.workers[i]);
    }
    free(m.workers);
    qx_runtime_free(&rt); /* drops the snapshot in force */
    qx_tls_del(tls);
    qx_tls_tcp_del(tls_tcp);
    uv_loop_close(m.loop);
    QX_INFO("stopped");
    return code;
}
