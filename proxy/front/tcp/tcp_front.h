/*
 * tcp_front.h - the HTTPS fallback listener of a worker: TCP +
 * TLS (OpenSSL 3) with ALPN h2 / http/1.1, feeding the same exchange,
 * router and pool as HTTP/3, and advertising HTTP/3 with Alt-Svc.
 * One listening socket per worker (SO_REUSEPORT); accepted connections
 * stay on their worker.
 */
#ifndef QX_TCP_FRONT_H
#define QX_TCP_FRONT_H

#include <stddef.h>
#include <sys/socket.h>

typedef struct qx_wctx qx_wctx_t;
typedef struct qx_tcp_front qx_tcp_front_t;

/* Process-wide OpenSSL server context, shared read-only by the workers. */
typedef struct qx_tls_tcp qx_tls_tcp_t;

/* Loads cert/key into an SSL_CTX (TLS 1.2+, ALPN h2 and http/1.1).
 * Returns 0 or QX_ERR_TLS with "server.cert/server.key: ..." in err. */
int qx_tls_tcp_new(qx_tls_tcp_t **out, const char *cert, const char *key, char *err, size_t errlen);
void qx_tls_tcp_del(qx_tls_tcp_t *t);

/* Certificate rotation: puts t in force for new HTTPS handshakes
 * (ownership taken); connections keep the context they started with.
 * Thread-safe (shared->tls_lock). */
typedef struct qx_shared qx_shared_t;
void qx_tls_tcp_swap(qx_shared_t *s, qx_tls_tcp_t *t);

/* Binds the listening socket (SO_REUSEPORT) on the calling thread before
 * the worker runs. Returns 0, QX_ERR_IO (logged, names server.https_listen)
 * or QX_ERR_NOMEM. */
int qx_tcp_front_new(qx_tcp_front_t **out, qx_wctx_t *w, const struct sockaddr *addr,
                     socklen_t addrlen);

/* On the worker thread: starts accepting. Returns 0 or QX_ERR_IO. */
int qx_tcp_front_start(qx_tcp_front_t *f);

/* Drain: stop accepting; HTTP/2 GOAWAY, `Connection: close` on HTTP/1.1
 * responses; idle connections closed; busy ones close when done. */
void qx_tcp_front_drain(qx_tcp_front_t *f);

/* Closes the listener and every connection now; freed once the handles
 * have closed. Accepts NULL. */
void qx_tcp_front_close(qx_tcp_front_t *f);

/* Open connections (for the drain's exit condition). Accepts NULL. */
unsigned qx_tcp_front_nconns(const qx_tcp_front_t *f);

#endif
