/* env.c - a worker inside a fuzz target (see env.h). */
#include "env.h"

#include "base/log.h"
#include "front/quic/quic.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char *replace(const char *s, const char *what, const char *with)
{
    size_t n = strlen(s) + 1;
    for (const char *p = strstr(s, what); p; p = strstr(p + 1, what))
        n += strlen(with);
    char *out = malloc(n);
    if (out == NULL)
        abort();
    char *o = out;
    while (*s) {
        if (strncmp(s, what, strlen(what)) == 0) {
            o += snprintf(o, n - (size_t)(o - out), "%s", with);
            s += strlen(what);
        } else {
            *o++ = *s++;
        }
    }
    *o = '\0';
    return out;
}

static const char *src_dir(void)
{
    const char *s = getenv("QRUX_SRC");
    return s ? s : QRUX_SRC_DIR;
}

fuzz_env_t *fuzz_env_new(const char *yaml)
{
    char cert[4096], key[4096], err[512] = "";
    fuzz_env_t *e = calloc(1, sizeof(*e));
    if (e == NULL)
        abort();
    signal(SIGPIPE, SIG_IGN);
    qx_log_level = getenv("QRUX_FUZZ_LOG") ? QX_LOG_DEBUG : QX_LOG_ERROR;
    snprintf(cert, sizeof(cert), "%s/fuzz/cert.pem", src_dir());
    snprintf(key, sizeof(key), "%s/fuzz/key.pem", src_dir());
    char *y1 = replace(yaml, "%CERT%", cert);
    char *y2 = replace(y1, "%KEY%", key);
    free(y1);

    qx_config_t *cfg = NULL;
    if (qx_config_load_buf(y2, strlen(y2), NULL, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_env: config: %s\n", err);
        abort();
    }
    free(y2);
    ((struct sockaddr_in *)&cfg->listen_addr)->sin_port = 0; /* same offset for IPv6 */
    qx_tls_t *tls = NULL;
    if (qx_tls_new(&tls, cfg->cert, cfg->key, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_env: tls: %s\n", err);
        abort();
    }
    qx_snapshot_t *snap = NULL;
    if (qx_snapshot_new(&snap, cfg, 1, NULL, NULL) != 0 || qx_runtime_init(&e->rt, snap) != 0)
        abort();
    e->shared.tls = tls;
    e->shared.rt = &e->rt;
    pthread_mutex_init(&e->shared.tls_lock, NULL);
    uint8_t ticket[64];
    memset(ticket, 0x5a, sizeof(ticket));
    memset(e->shared.static_secret, 0x11, sizeof(e->shared.static_secret));
    memset(e->shared.token_secret, 0x22, sizeof(e->shared.token_secret));
    if (qx_tls_keys_init(&e->keys, ticket, (int)cfg->early_data) != 0)
        abort();
    e->shared.tls_keys = &e->keys;
    e->rt.workers = &e->w;
    e->rt.nworkers = 1;
    e->shared.nworkers = 1;
    if (qx_worker_init(&e->w, 0, &e->shared, snap) != 0)
        abort();
    /* What the worker's thread does before its loop: the endpoint's
     * handles are set up, the socket polled. */
    if (qx_quic_ep_start(e->w.quic) != 0)
        abort();
    e->w.ctx.state = QX_W_RUNNING;
    qx_runtime_set_lifecycle(&e->rt, QX_LC_LIVE);
    return e;
}

void fuzz_env_turns(fuzz_env_t *e, int turns)
{
    for (int i = 0; i < turns; i++)
        uv_run(&e->w.ctx.loop, UV_RUN_NOWAIT);
}

uint16_t fuzz_env_closed_port(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd == -1 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
        getsockname(fd, (struct sockaddr *)&sin, &len) == -1)
        abort();
    close(fd);
    return ntohs(sin.sin_port);
}
