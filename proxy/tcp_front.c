/* tcp_front.c - placeholder until the HTTPS fallback lands (issue 3). */
#include "tcp_front.h"

#include "qx.h"

int qx_tls_tcp_new(qx_tls_tcp_t **out, const char *cert, const char *key, char *err, size_t errlen)
{
    (void)cert;
    (void)key;
    (void)err;
    (void)errlen;
    *out = NULL;
    return 0;
}

void qx_tls_tcp_del(qx_tls_tcp_t *t)
{
    (void)t;
}

int qx_tcp_front_new(qx_tcp_front_t **out, qx_worker_t *w, const struct sockaddr *addr,
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
