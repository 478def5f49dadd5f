/*
 * tls.h - TLS for QUIC with GnuTLS (through ngtcp2_crypto_gnutls): the
 * certificate credentials, loaded once and shared read-only by every
 * worker, and one session per QUIC connection (TLS 1.3 only, ALPN h3).
 */
#ifndef QX_TLS_H
#define QX_TLS_H

#include <gnutls/gnutls.h>
#include <stddef.h>

typedef struct qx_tls qx_tls_t;

/* Loads the PEM certificate chain and key. On failure returns QX_ERR_TLS
 * and writes "server.cert: <why>" style text into err. */
int qx_tls_new(qx_tls_t **out, const char *cert, const char *key, char *err, size_t errlen);

/* Drops the loader's reference (qx_tls_unref). Accepts NULL. */
void qx_tls_del(qx_tls_t *tls);

/* Reference counting: a rotated certificate's credentials live until the
 * last connection that handshook with them is gone. Thread-safe. */
qx_tls_t *qx_tls_ref(qx_tls_t *tls);
void qx_tls_unref(qx_tls_t *tls);

/* A server session configured for QUIC; |conn_ref| is the
 * ngtcp2_crypto_conn_ref the crypto callbacks use to find the connection.
 * Returns 0 or QX_ERR_TLS. */
int qx_tls_session_new(const qx_tls_t *tls, void *conn_ref, gnutls_session_t *out);

#endif
