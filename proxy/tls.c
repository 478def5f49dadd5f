/* tls.c - GnuTLS credentials and QUIC server sessions (see tls.h). */
#include "tls.h"

#include "qx.h"

#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <stdio.h>
#include <stdlib.h>

/* TLS 1.3 only (QUIC requires it), AEADs QUIC defines, no middlebox
 * compatibility mode (RFC 9001 §8.4). */
static const char priority[] =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:"
    "-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:%DISABLE_TLS13_COMPAT_MODE";

struct qx_tls {
    int refcnt; /* atomic */
    gnutls_certificate_credentials_t cred;
    gnutls_priority_t prio;
};

int qx_tls_new(qx_tls_t **out, const char *cert, const char *key, char *err, size_t errlen)
{
    int rv;
    qx_tls_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return QX_ERR_NOMEM;
    t->refcnt = 1;
    if (gnutls_certificate_allocate_credentials(&t->cred) != 0)
        goto fail;
    rv = gnutls_certificate_set_x509_key_file(t->cred, cert, key, GNUTLS_X509_FMT_PEM);
    if (rv < 0) {
        snprintf(err, errlen, "server.cert/server.key: cannot load %s / %s: %s", cert, key,
                 gnutls_strerror(rv));
        goto fail;
    }
    rv = gnutls_priority_init(&t->prio, priority, NULL);
    if (rv < 0) {
        snprintf(err, errlen, "tls: priority string refused: %s", gnutls_strerror(rv));
        goto fail;
    }
    *out = t;
    return 0;

fail:
    qx_tls_del(t);
    return QX_ERR_TLS;
}

void qx_tls_del(qx_tls_t *t)
{
    qx_tls_unref(t);
}

qx_tls_t *qx_tls_ref(qx_tls_t *t)
{
    __atomic_add_fetch(&t->refcnt, 1, __ATOMIC_RELAXED);
    return t;
}

void qx_tls_unref(qx_tls_t *t)
{
    if (t == NULL || __atomic_sub_fetch(&t->refcnt, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    if (t->prio)
        gnutls_priority_deinit(t->prio);
    if (t->cred)
        gnutls_certificate_free_credentials(t->cred);
    free(t);
}

int qx_tls_session_new(const qx_tls_t *t, void *conn_ref, gnutls_session_t *out)
{
    gnutls_session_t s;
    static const gnutls_datum_t alpn = {(unsigned char *)"h3", 2};

    if (gnutls_init(&s, GNUTLS_SERVER | GNUTLS_NO_AUTO_SEND_TICKET | GNUTLS_NO_END_OF_EARLY_DATA) !=
        0)
        return QX_ERR_TLS;
    if (ngtcp2_crypto_gnutls_configure_server_session(s) != 0)
        goto fail;
    if (gnutls_priority_set(s, t->prio) != 0)
        goto fail;
    if (gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, t->cred) != 0)
        goto fail;
    if (gnutls_alpn_set_protocols(s, &alpn, 1, GNUTLS_ALPN_MANDATORY) != 0)
        goto fail;
    gnutls_session_set_ptr(s, conn_ref);
    *out = s;
    return 0;

fail:
    gnutls_deinit(s);
    return QX_ERR_TLS;
}
