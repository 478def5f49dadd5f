/* tls.c - GnuTLS credentials and QUIC server sessions (see tls.h). */
#include "front/quic/tls.h"

#include "base/pem.h"
#include "base/qx.h"
#include "exchange/context.h"

#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* TLS 1.3 only (QUIC requires it), AEADs QUIC defines, no middlebox
 * compatibility mode (RFC 9001 §8.4). The client's preferences decide. */
#define PRIORITY_BASE                                                                              \
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:"      \
    "-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:%DISABLE_TLS13_COMPAT_MODE"
static const char priority[] = PRIORITY_BASE;

/* The same, with our order deciding: X25519 and AES-128-GCM/SHA-256. Used
 * only when the ClientHello carries an X25519 key share (choose_priority):
 * X25519 costs ~13 % fewer instructions per new connection than P-256 (the
 * handshake is mostly ECDH and the signature), AES-128 a little less
 * than AES-256, but a client that sent only a P-256 share while listing
 * X25519 would be sent a HelloRetryRequest (a round trip) to get it. */
static const char priority_x25519[] = PRIORITY_BASE ":%SERVER_PRECEDENCE";

#define TLS_EXT_KEY_SHARE 51
#define TLS_GROUP_X25519 0x001d
#define TLS_EXT_QUIC_TP 57 /* quic_transport_parameters, RFC 9001 §8.2 */

struct qx_tls {
    int refcnt; /* atomic */
    gnutls_certificate_credentials_t cred;
    gnutls_priority_t prio;
    gnutls_priority_t prio_x25519;
    int64_t not_after; /* the leaf certificate's notAfter, unix seconds */
};

/* The leaf certificate's notAfter, for the expiry gauge. -1 when GnuTLS
 * cannot say (the gauge then reads -1, which an expiry alert treats as
 * long expired: better loud than silent). */
static int64_t leaf_not_after(gnutls_certificate_credentials_t cred)
{
    gnutls_x509_crt_t *crts = NULL;
    unsigned n = 0;
    int64_t t = -1;
    if (gnutls_certificate_get_x509_crt(cred, 0, &crts, &n) < 0)
        return -1;
    if (n > 0) {
        time_t e = gnutls_x509_crt_get_expiration_time(crts[0]);
        if (e != (time_t)-1)
            t = (int64_t)e;
    }
    for (unsigned i = 0; i < n; i++)
        gnutls_x509_crt_deinit(crts[i]);
    gnutls_free(crts);
    return t;
}

/* GnuTLS reports a pair that does not load without saying which file is at
 * fault ("Base64 decoding error"): each is loaded alone to name it. */
/* gnutls_strerror() without its closing period, for inside parentheses. */
static int why_len(int r)
{
    size_t n = strlen(gnutls_strerror(r));
    return (int)(n > 0 && gnutls_strerror(r)[n - 1] == '.' ? n - 1 : n);
}

static void name_bad_file(const char *cert, const char *key, int rv, char *err, size_t errlen)
{
    gnutls_datum_t d = {NULL, 0};
    int r = gnutls_load_file(cert, &d);
    if (r >= 0) {
        gnutls_x509_crt_t *crts = NULL;
        unsigned n = 0;
        r = gnutls_x509_crt_list_import2(&crts, &n, &d, GNUTLS_X509_FMT_PEM, 0);
        if (r >= 0) {
            for (unsigned i = 0; i < n; i++)
                gnutls_x509_crt_deinit(crts[i]);
            gnutls_free(crts);
        }
        gnutls_free(d.data);
    }
    if (r < 0) {
        snprintf(err, errlen, "server.cert: %s: damaged PEM certificate (%.*s)", cert, why_len(r),
                 gnutls_strerror(r));
        return;
    }
    d.data = NULL;
    d.size = 0;
    r = gnutls_load_file(key, &d);
    if (r >= 0) {
        gnutls_privkey_t pk;
        r = gnutls_privkey_init(&pk);
        if (r >= 0) {
            r = gnutls_privkey_import_x509_raw(pk, &d, GNUTLS_X509_FMT_PEM, NULL, 0);
            gnutls_privkey_deinit(pk);
        }
        gnutls_free(d.data);
    }
    if (r < 0) {
        snprintf(err, errlen, "server.key: %s: damaged PEM private key (%.*s)", key, why_len(r),
                 gnutls_strerror(r));
        return;
    }
    snprintf(err, errlen, "server.cert/server.key: cannot load %s / %s: %s", cert, key,
             gnutls_strerror(rv));
}

int qx_tls_new(qx_tls_t **out, const char *cert, const char *key, char *err, size_t errlen)
{
    int rv;
    qx_tls_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return QX_ERR_NOMEM;
    t->refcnt = 1;
    if (qx_pem_check_pair(cert, key, err, errlen) != 0)
        goto fail;
    if (gnutls_certificate_allocate_credentials(&t->cred) != 0)
        goto fail;
    rv = gnutls_certificate_set_x509_key_file(t->cred, cert, key, GNUTLS_X509_FMT_PEM);
    if (rv == GNUTLS_E_CERTIFICATE_KEY_MISMATCH) {
        qx_pem_mismatch(cert, key, err, errlen);
        goto fail;
    }
    if (rv < 0) {
        name_bad_file(cert, key, rv, err, errlen);
        goto fail;
    }
    t->not_after = leaf_not_after(t->cred);
    rv = gnutls_priority_init(&t->prio, priority, NULL);
    if (rv >= 0)
        rv = gnutls_priority_init(&t->prio_x25519, priority_x25519, NULL);
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

int64_t qx_tls_not_after(const qx_tls_t *t)
{
    return t->not_after;
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
    if (t->prio_x25519)
        gnutls_priority_deinit(t->prio_x25519);
    if (t->cred)
        gnutls_certificate_free_credentials(t->cred);
    free(t);
}

/* ---- anti-replay ---------------------------------------------------------- */

/* GnuTLS asks to remember a ClientHello that carried early data; an entry
 * that is already there (and not expired) means a replay: its early data is
 * refused and the client resends after the handshake. When the table is
 * too full to remember, early data is refused too: safe, merely slower. */
static int db_add(void *ptr, time_t exp_time, const gnutls_datum_t *key, const gnutls_datum_t *data)
{
    qx_tls_keys_t *k = ptr;
    uint8_t d[32];
    uint64_t h1, h2;
    time_t now = time(NULL);
    int rv = GNUTLS_E_DB_ENTRY_EXISTS;
    (void)data;

    if (gnutls_hash_fast(GNUTLS_DIG_SHA256, key->data, key->size, d) != 0)
        return rv;
    memcpy(&h1, d, 8);
    memcpy(&h2, d + 8, 8);
    pthread_mutex_lock(&k->db_lock);
    for (size_t i = 0; i < 32; i++) {
        size_t slot = (size_t)((h1 + i) % QX_TLS_DB_SLOTS);
        if (k->db[slot].expires > now && k->db[slot].h1 == h1 && k->db[slot].h2 == h2)
            break; /* seen: a replay */
        if (k->db[slot].expires <= now) {
            k->db[slot].h1 = h1;
            k->db[slot].h2 = h2;
            k->db[slot].expires = exp_time;
            rv = 0;
            break;
        }
    }
    pthread_mutex_unlock(&k->db_lock);
    if (rv != 0)
        __atomic_add_fetch(&k->replays_refused, 1, __ATOMIC_RELAXED);
    return rv;
}

int qx_tls_keys_init(qx_tls_keys_t *k, const uint8_t *ticket_key, int early_data)
{
    memset(k, 0, sizeof(*k));
    memcpy(k->ticket_key, ticket_key, sizeof(k->ticket_key));
    k->early_data = early_data;
    pthread_mutex_init(&k->db_lock, NULL);
    if (gnutls_anti_replay_init(&k->anti_replay) != 0)
        return QX_ERR_TLS;
    /* GnuTLS accepts early data only for tickets issued within the window
     * (and after this process started): 10 minutes lets a returning
     * visitor use 0-RTT; the table remembers ClientHellos that long. */
    gnutls_anti_replay_set_window(k->anti_replay, QX_TLS_REPLAY_WINDOW_MS);
    gnutls_anti_replay_set_add_function(k->anti_replay, db_add);
    gnutls_anti_replay_set_ptr(k->anti_replay, k);
    return 0;
}

void qx_tls_keys_free(qx_tls_keys_t *k)
{
    if (k->anti_replay)
        gnutls_anti_replay_deinit(k->anti_replay);
    k->anti_replay = NULL;
    pthread_mutex_destroy(&k->db_lock);
    memset(k->ticket_key, 0, sizeof(k->ticket_key));
}

/* ---- sessions ------------------------------------------------------------- */

/* What choose_priority reads in a ClientHello's extensions. */
typedef struct {
    int x25519;  /* the key_share extension holds an X25519 share */
    int quic_tp; /* a quic_transport_parameters extension came */
    int tp_dup;  /* ... naming one parameter twice */
} hello_scan_t;

/* A QUIC variable-length integer (RFC 9000 §16) at data[*off], within
 * len; advances *off. Returns -1 when it runs past the end. */
static int read_varint(const unsigned char *data, size_t len, size_t *off, uint64_t *v)
{
    if (*off >= len)
        return -1;
    size_t n = (size_t)1 << (data[*off] >> 6);
    if (len - *off < n)
        return -1;
    *v = data[*off] & 0x3f;
    for (size_t i = 1; i < n; i++)
        *v = (*v << 8) | data[*off + i];
    *off += n;
    return 0;
}

/* Does a transport parameter list (RFC 9000 §18) name one id twice
 * (§7.4: SHOULD be a TRANSPORT_PARAMETER_ERROR)? ngtcp2 keeps the last
 * value silently. A malformed list is left to ngtcp2's decoder, which
 * refuses it; past TP_CHECKED ids (no client sends that many) the rest go
 * unchecked. */
#define TP_CHECKED 128
static int tp_has_duplicate(const unsigned char *data, size_t len)
{
    uint64_t ids[TP_CHECKED];
    size_t n = 0;
    for (size_t off = 0; off < len && n < TP_CHECKED;) {
        uint64_t id, vlen;
        if (read_varint(data, len, &off, &id) != 0 || read_varint(data, len, &off, &vlen) != 0 ||
            vlen > len - off)
            return 0;
        off += (size_t)vlen;
        for (size_t i = 0; i < n; i++)
            if (ids[i] == id)
                return 1;
        ids[n++] = id;
    }
    return 0;
}

/* One extension of the ClientHello: a key_share (RFC 8446 §4.2.8) with
 * an X25519 share, the QUIC transport parameters (RFC 9001 §8.2). */
static int scan_hello_ext(void *ctx, unsigned tls_id, const unsigned char *data, unsigned len)
{
    hello_scan_t *scan = ctx;
    if (tls_id == TLS_EXT_QUIC_TP) {
        scan->quic_tp = 1;
        scan->tp_dup = tp_has_duplicate(data, len);
        return 0;
    }
    if (tls_id != TLS_EXT_KEY_SHARE || len < 2)
        return 0;
    size_t end = QX_MIN((size_t)len, 2 + (((size_t)data[0] << 8) | data[1]));
    for (size_t off = 2; off + 4 <= end;) {
        unsigned group = ((unsigned)data[off] << 8) | data[off + 1];
        size_t klen = ((size_t)data[off + 2] << 8) | data[off + 3];
        if (group == TLS_GROUP_X25519)
            scan->x25519 = 1;
        off += 4 + klen;
    }
    return 0;
}

/* Before GnuTLS reads a ClientHello: our preferences decide when the
 * client offered an X25519 share, the client's otherwise (see
 * priority_x25519). QUIC carries the TLS records itself, so the session's
 * transport pointer is free to hold the credentials.
 *
 * It also refuses a ClientHello GnuTLS would take but QUIC must not:
 * - without quic_transport_parameters: a missing_extension alert, which
 *   the connection closes with as CRYPTO_ERROR 0x16d (RFC 9001 §8.2).
 *   GnuTLS does not require the extension, and ngtcp2 would go on to
 *   write 1-RTT packets with no negotiated version (an assertion fails);
 * - with a parameter named twice: TRANSPORT_PARAMETER_ERROR (RFC 9000
 *   §7.4), set as the TLS error ngtcp2 reports instead of the alert. */
static int choose_priority(gnutls_session_t s, unsigned htype, unsigned when, unsigned incoming,
                           const gnutls_datum_t *msg)
{
    const qx_tls_t *t = gnutls_transport_get_ptr(s);
    hello_scan_t scan = {0};
    (void)when;
    if (!incoming || htype != GNUTLS_HANDSHAKE_CLIENT_HELLO || t == NULL)
        return 0;
    if (gnutls_ext_raw_parse(&scan, scan_hello_ext, msg, GNUTLS_EXT_RAW_FLAG_TLS_CLIENT_HELLO) < 0)
        return 0; /* GnuTLS will refuse the message itself */
    if (!scan.quic_tp)
        return GNUTLS_E_MISSING_EXTENSION;
    if (scan.tp_dup) {
        ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
        if (ref != NULL)
            ngtcp2_conn_set_tls_error(ref->get_conn(ref), NGTCP2_ERR_TRANSPORT_PARAM);
        return GNUTLS_E_RECEIVED_ILLEGAL_EXTENSION;
    }
    gnutls_priority_set(s, scan.x25519 ? t->prio_x25519 : t->prio);
    return 0;
}

int qx_tls_session_new(const qx_tls_t *t, qx_tls_keys_t *keys, void *conn_ref,
                       gnutls_session_t *out)
{
    gnutls_session_t s;
    static const gnutls_datum_t alpn = {(unsigned char *)"h3", 2};
    unsigned flags = GNUTLS_SERVER | GNUTLS_NO_AUTO_SEND_TICKET | GNUTLS_NO_END_OF_EARLY_DATA;
    gnutls_datum_t tk = {keys->ticket_key, sizeof(keys->ticket_key)};

    if (keys->early_data != 0)
        flags |= GNUTLS_ENABLE_EARLY_DATA;
    if (gnutls_init(&s, flags) != 0)
        return QX_ERR_TLS;
    if (gnutls_session_ticket_enable_server(s, &tk) != 0)
        goto fail;
    if (keys->early_data != 0) {
        gnutls_anti_replay_enable(s, keys->anti_replay);
        /* QUIC carries early data itself; TLS must not cap it. */
        gnutls_record_set_max_early_data_size(s, 0xffffffffu);
    }
    if (ngtcp2_crypto_gnutls_configure_server_session(s) != 0)
        goto fail;
    if (gnutls_priority_set(s, t->prio) != 0)
        goto fail;
    gnutls_transport_set_ptr(s, (gnutls_transport_ptr_t)(uintptr_t)t);
    gnutls_handshake_set_hook_function(s, GNUTLS_HANDSHAKE_CLIENT_HELLO, GNUTLS_HOOK_PRE,
                                       choose_priority);
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

qx_tls_t *qx_shared_tls_acquire(qx_shared_t *s)
{
    pthread_mutex_lock(&s->tls_lock);
    qx_tls_t *t = qx_tls_ref(s->tls);
    pthread_mutex_unlock(&s->tls_lock);
    return t;
}

void qx_shared_tls_swap(qx_shared_t *s, qx_tls_t *tls)
{
    pthread_mutex_lock(&s->tls_lock);
    qx_tls_t *old = s->tls;
    s->tls = tls;
    pthread_mutex_unlock(&s->tls_lock);
    qx_tls_unref(old);
}
