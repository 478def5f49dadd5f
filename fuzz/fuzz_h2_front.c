/*
 * fuzz_h2_front.c - the HTTP/2 front's input path: the client's bytes
 * (preface, frames, HPACK) through nghttp2 and qrux's callbacks into
 * exchanges, and what the front writes back, on a fake transport that
 * stands in for tcp_front.c (no TLS, no socket). The transport's functions
 * are defined here, so tcp_front.o is not linked into this target.
 *
 * Input: byte 0: the read piece size (0: as much as the front asks for);
 * byte 1: the room the transport reports (0: plenty, else that many KiB,
 * so that output back-pressure and held input are reached); then the
 * client's bytes, after which the transport reports EOF. Requests reach
 * the exchange and go to an upstream where nothing listens (a refused
 * connect: 502), so the response path runs too. The connection is freed
 * at the end of each input as tcp_front.c frees it.
 */
#include "base/qx.h"
#include "env.h"
#include "exchange/exchange.h"
#include "front/quic/tls.h"
#include "front/tcp/h2_front.h"
#include "front/tcp/tcp_conn.h"
#include "front/tcp/tcp_front.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- the fake transport (what tcp_front.c provides) ---------------------- */

static struct {
    const uint8_t *in;
    size_t inlen, off, step;
    size_t room;
    uint64_t written;
    int marked, want_input, closed;
    uint64_t timer_ms;
} t;

ssize_t qx_tcp_conn_read(qx_tcp_conn_t *c, void *buf, size_t cap)
{
    (void)c;
    if (t.off >= t.inlen)
        return QX_TCP_EOF;
    size_t n = QX_MIN(cap, t.inlen - t.off);
    if (t.step)
        n = QX_MIN(n, t.step);
    memcpy(buf, t.in + t.off, n);
    t.off += n;
    return (ssize_t)n;
}

int qx_tcp_conn_write(qx_tcp_conn_t *c, const void *buf, size_t len)
{
    (void)c;
    if (t.closed)
        return QX_ERR_IO;
    if (len) {
        volatile uint8_t x = ((const uint8_t *)buf)[0] ^ ((const uint8_t *)buf)[len - 1];
        (void)x;
    }
    t.written += len;
    t.room = t.room > len ? t.room - len : 0;
    return 0;
}

size_t qx_tcp_conn_room(const qx_tcp_conn_t *c)
{
    (void)c;
    return t.room;
}

void qx_tcp_conn_mark(qx_tcp_conn_t *c)
{
    (void)c;
    t.marked = 1;
}

void qx_tcp_conn_want_input(qx_tcp_conn_t *c)
{
    (void)c;
    t.want_input = 1;
}

void qx_tcp_conn_timer(qx_tcp_conn_t *c, uint64_t ms)
{
    (void)c;
    t.timer_ms = ms;
}

void qx_tcp_conn_close(qx_tcp_conn_t *c, int how)
{
    (void)c;
    if (how != QX_TC_CLOSE_GRACEFUL && how != QX_TC_CLOSE_ABORT)
        __builtin_trap();
    t.closed = how;
}

int qx_tcp_conn_draining(const qx_tcp_conn_t *c)
{
    (void)c;
    return 0;
}

const char *qx_tcp_conn_alt_svc(qx_tcp_conn_t *c, size_t *len)
{
    static const char alt[] = "h3=\":4433\"; ma=3600";
    (void)c;
    *len = sizeof(alt) - 1;
    return alt;
}

/* The worker's side of tcp_front.c: no HTTPS listener in this config. */
int qx_tcp_front_new(qx_tcp_front_t **out, qx_wctx_t *w, const struct sockaddr *addr,
                     socklen_t addrlen)
{
    (void)w;
    (void)addr;
    (void)addrlen;
    *out = NULL;
    return 0;
}
int qx_tcp_front_start(qx_tcp_front_t *f)
{
    (void)f;
    return 0;
}
void qx_tcp_front_drain(qx_tcp_front_t *f)
{
    (void)f;
}
void qx_tcp_front_close(qx_tcp_front_t *f)
{
    (void)f;
}
unsigned qx_tcp_front_nconns(const qx_tcp_front_t *f)
{
    (void)f;
    return 0;
}
int qx_tls_tcp_new(qx_tls_tcp_t **out, const char *cert, const char *key, char *err, size_t errlen)
{
    (void)cert;
    (void)key;
    (void)err;
    (void)errlen;
    *out = NULL;
    return QX_ERR_INVAL;
}
void qx_tls_tcp_swap(qx_shared_t *s, qx_tls_tcp_t *tt)
{
    (void)s;
    (void)tt;
}
void qx_tls_tcp_del(qx_tls_tcp_t *tt)
{
    (void)tt;
}

/* ---- the target ----------------------------------------------------------- */

static fuzz_env_t *env;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (env == NULL) {
        char yaml[1024];
        snprintf(yaml, sizeof(yaml),
                 "server:\n"
                 "  listen: \"127.0.0.1:4433\"\n"
                 "  cert: \"%%CERT%%\"\n"
                 "  key: \"%%KEY%%\"\n"
                 "  workers: 1\n"
                 "routes:\n"
                 "  - match: \"*\"\n"
                 "    upstream: \"127.0.0.1:%u\"\n",
                 fuzz_env_closed_port());
        env = fuzz_env_new(yaml);
    }
    if (size < 2)
        return 0;
    memset(&t, 0, sizeof(t));
    t.step = data[0];
    size_t room0 = data[1] ? (size_t)data[1] * 1024 : SIZE_MAX / 2;
    t.room = room0;
    t.in = data + 2;
    t.inlen = size - 2;

    qx_tcp_conn_t c;
    memset(&c, 0, sizeof(c));
    c.w = &env->w.ctx;
    c.state = QX_TC_OPEN;
    struct sockaddr_in *peer = (struct sockaddr_in *)&c.peer;
    peer->sin_family = AF_INET;
    peer->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    peer->sin_port = htons(50000);
    snprintf(c.sni, sizeof(c.sni), "localhost");

    void *app = NULL;
    const qx_tcp_app_ops_t *ops = NULL;
    if (qx_h2_front_new(&c, &app, &ops) != 0)
        abort();
    /* The transport's loop: input while the front takes bytes, output at
     * the end of each turn, the worker's loop for the upstream side. */
    for (int turn = 0; turn < 64 && !t.closed; turn++) {
        size_t before = t.off;
        ops->input(app);
        t.room = room0; /* the socket drained what was written */
        ops->output(app);
        t.marked = 0;
        t.want_input = 0;
        fuzz_env_turns(env, 1);
        if (t.off == before && t.off >= t.inlen && turn > 4)
            break;
    }
    if (!t.closed && t.timer_ms)
        ops->timeout(app); /* the idle or GOAWAY timer */
    ops->output(app);
    ops->free(app, t.closed != QX_TC_CLOSE_GRACEFUL);
    fuzz_env_turns(env, 2); /* upstream sockets of ended exchanges close */
    return 0;
}
