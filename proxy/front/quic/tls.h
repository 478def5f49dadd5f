/*
 * tls.h - TLS for QUIC with GnuTLS (through ngtcp2_crypto_gnutls): the
 * certificate credentials, loaded once and shared read-only by every
 * worker, and one session per QUIC connection (TLS 1.3 only, ALPN h3).
 */
#ifndef QX_TLS_H
#define QX_TLS_H

#include <gnutls/gnutls.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef struct qx_tls qx_tls_t;

/*
 * Process-wide TLS state that outlives certificate rotation: the session
 * ticket master key (GnuTLS rotates the ticket encryption keys it derives
 * from it on a schedule; replicas that share it resume each other's
 * sessions), the 0-RTT policy, and the anti-replay database that refuses
 * early data from a ClientHello seen before (RFC 8446 §8).
 */
#define QX_TLS_DB_SLOTS 32768
#define QX_TLS_REPLAY_WINDOW_MS (10 * 60 * 1000)
typedef struct qx_tls_keys {
    uint8_t ticket_key[64];
    gnutls_anti_replay_t anti_replay;
    int early_data; /* qx_early_data_t: QX_EARLY_OFF disables 0-RTT entirely */
    pthread_mutex_t db_lock;
    struct {
        uint64_t h1, h2;
        time_t expires;
    } db[QX_TLS_DB_SLOTS];    /* ClientHellos whose early data was taken */
    uint64_t replays_refused; /* atomic */
} qx_tls_keys_t;

/* ticket_key[64] comes from the caller (random, or derived from
 * server.ticket_key_file). Returns 0 or QX_ERR_TLS. */
int qx_tls_keys_init(qx_tls_keys_t *k, const uint8_t *ticket_key, int early_data);
void qx_tls_keys_free(qx_tls_keys_t *k);

/* Loads the PEM certificate chain and key. On failure returns QX_ERR_TLS
 * and writes "server.cert: <why>" style text into err. */
int qx_tls_new(qx_tls_t **out, const char *cert, const char *key, char *err, size_t errlen);

/* The leaf certificate's notAfter (unix seconds), read when loaded; -1
 * when it could not be read. */
int64_t qx_tls_not_after(const qx_tls_t *tls);

/* Drops the loader's reference (qx_tls_unref). Accepts NULL. */
void qx_tls_del(qx_tls_t *tls);

/* Reference counting: a rotated certificate's credentials live until the
 * last connection that handshook with them is gone. Thread-safe. */
qx_tls_t *qx_tls_ref(qx_tls_t *tls);
void qx_tls_unref(qx_tls_t *tls);

/* A server session configured for QUIC; |conn_ref| is the
 * ngtcp2_crypto_conn_ref the crypto callbacks use to find the connection.
 * Returns 0 or QX_ERR_TLS. */
int qx_tls_session_new(const qx_tls_t *tls, qx_tls_keys_t *keys, void *conn_ref,
                       gnutls_session_t *out);

/* The credentials in force (shared->tls), referenced (qx_tls_unref when
 * the connection is gone). Taken once per new connection. Thread-safe. */
typedef struct qx_shared qx_shared_t;
qx_tls_t *qx_shared_tls_acquire(qx_shared_t *s);

/* Puts new credentials in force for new handshakes (ownership taken);
 * existing connections keep theirs. Thread-safe (shared->tls_lock). */
void qx_shared_tls_swap(qx_shared_t *s, qx_tls_t *tls);

#endif
