/*
 * tcp_front.c - the HTTPS fallback listener (see tcp_front.h): a TCP
 * listening socket per worker, OpenSSL 3 on the worker loop through memory
 * BIOs, ALPN dispatch to the HTTP/2 or HTTP/1.1 front, and the connection
 * machinery those fronts share (tcp_conn.h).
 *
 * Data path of one connection:
 *   socket --uv_read--> rbio --SSL_read--> front (llhttp / nghttp2)
 *   front --qx_tcp_conn_write--> stage --SSL_write--> wbio --uv_write--> socket
 * Every step is bounded: the socket is not read while rbio holds more than
 * RBIO_MAX ciphertext the front has not taken; one uv_write of at most
 * WRITE_MAX bytes is in flight; fronts write only while qx_tcp_conn_room()
 * is positive. Writes are staged so that the small pieces a front produces
 * in one loop turn leave as few TLS records and one write.
 *
 * Like the QUIC endpoint's, connections touched in a loop turn queue their
 * flush on the worker's deferred-work queue (defer.h), which runs after
 * I/O: the flush runs the front's output, encrypts and writes, and performs
 * deferred closes, so a close requested from inside an exchange or nghttp2
 * callback never frees the object that callback runs on.
 */
#include "front/tcp/tcp_front.h"

#include "base/log.h"
#include "base/qx.h"
#include "base/siphash.h"
#include "base/str.h"
#include "exchange/context.h"
#include "front/tcp/h1_front.h"
#include "front/tcp/h2_front.h"
#include "front/tcp/tcp_conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define RBIO_MAX (64 * 1024)   /* ciphertext waiting for the front before reads stop */
#define WRITE_MAX (64 * 1024)  /* one uv_write */
#define OUT_MAX (256 * 1024)   /* pending output beyond which fronts stop writing */
#define STAGE_CAP (16 * 1024)  /* one TLS record of plaintext */
#define LINGER_MS 2000         /* reading to discard after our FIN, at most */
#define LINGER_BYTES (1 << 20) /* ... and at most this much */
#define LISTEN_BACKLOG 511
#define IP_BUCKETS 1024 /* per-IP connection counts: hash buckets per worker */

/* Open connections from one client address (IPv4 as IPv4-mapped IPv6). */
typedef struct qx_tcp_ip {
    struct qx_tcp_ip *next;
    uint8_t addr[16];
    unsigned n;
} qx_tcp_ip_t;

/* TLS 1.2: ECDHE key exchange and AEAD ciphers only (forward secrecy, no
 * CBC, no RSA key transport). TLS 1.3 keeps OpenSSL's default suites. */
static const char tls12_ciphers[] = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                                    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
static const char tls_groups[] = "X25519:P-256:P-384";

struct qx_tls_tcp {
    SSL_CTX *ctx;
};

struct qx_tcp_front {
    qx_wctx_t *w;
    int fd;
    int started;   /* handles initialised on the worker loop */
    int accepting; /* new connections are served */
    int lsn_open;  /* the listening handle is not closed yet */
    int closing;   /* qx_tcp_front_close ran */
    int nhandles;  /* front handles still to close before free */
    int draining;
    uv_tcp_t lsn;
    LIST_HEAD(, qx_tcp_conn) conns;
    unsigned nconns;
    uint64_t altsvc_gen;          /* snapshot generation altsvc was built from */
    qx_tcp_ip_t *ips[IP_BUCKETS]; /* keyed with ip_key: a peer cannot pick its bucket */
    uint8_t ip_key[16];
    char altsvc[64];
    size_t altsvclen;
    char rbuf[64 * 1024]; /* uv_read lands here; copied into a BIO at once */
};

static void conn_teardown(qx_tcp_conn_t *c);

/* ------------------------------------------------------------------------ */
/* Connection: state (the diagram is in tcp_conn.h)                         */
/* ------------------------------------------------------------------------ */

#define TC_BIT(s) (1u << (s))
static const unsigned tc_moves[] = {
    [QX_TC_HANDSHAKE] =
        TC_BIT(QX_TC_OPEN) | TC_BIT(QX_TC_CLOSE_REQ) | TC_BIT(QX_TC_ABORT_REQ) | TC_BIT(QX_TC_DEAD),
    [QX_TC_OPEN] = TC_BIT(QX_TC_CLOSE_REQ) | TC_BIT(QX_TC_ABORT_REQ) | TC_BIT(QX_TC_DEAD),
    [QX_TC_CLOSE_REQ] = TC_BIT(QX_TC_CLOSING) | TC_BIT(QX_TC_ABORT_REQ) | TC_BIT(QX_TC_DEAD),
    [QX_TC_CLOSING] = TC_BIT(QX_TC_LINGER) | TC_BIT(QX_TC_ABORT_REQ) | TC_BIT(QX_TC_DEAD),
    [QX_TC_LINGER] = TC_BIT(QX_TC_ABORT_REQ) | TC_BIT(QX_TC_DEAD),
    [QX_TC_ABORT_REQ] = TC_BIT(QX_TC_DEAD),
    [QX_TC_DEAD] = 0,
};

static void set_state(qx_tcp_conn_t *c, qx_tcp_conn_state_t s)
{
    QRUX_ASSERT(tc_moves[c->state] & TC_BIT(s));
    c->state = s;
}

/* Asks for the teardown at the flush (the caller marks the connection). */
static void request_abort(qx_tcp_conn_t *c)
{
    if (c->state < QX_TC_ABORT_REQ)
        set_state(c, QX_TC_ABORT_REQ);
}

/* ------------------------------------------------------------------------ */
/* OpenSSL context                                                          */
/* ------------------------------------------------------------------------ */

/* "h2" first, then "http/1.1" (server preference). A client offering
 * neither gets no ALPN answer and is served HTTP/1.1. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char prefs[] = "\x02h2\x08http/1.1";
    unsigned char *sel = NULL;
    (void)ssl;
    (void)arg;
    if (SSL_select_next_proto(&sel, outlen, prefs, sizeof(prefs) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static void ssl_err(char *err, size_t errlen, const char *what, const char *path)
{
    char buf[256];
    unsigned long e = ERR_peek_last_error();
    ERR_error_string_n(e, buf, sizeof(buf));
    snprintf(err, errlen, "%s: cannot load %s: %s", what, path, e ? buf : "unknown error");
    ERR_clear_error();
}

int qx_tls_tcp_new(qx_tls_tcp_t **out, const char *cert, const char *key, char *err, size_t errlen)
{
    qx_tls_tcp_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return QX_ERR_NOMEM;
    *out = NULL;
    t->ctx = SSL_CTX_new(TLS_server_method());
    if (t->ctx == NULL) {
        snprintf(err, errlen, "tls: cannot create an OpenSSL context");
        goto fail;
    }
    SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
    /* No compression (CRIME), no renegotiation (a client-driven CPU
     * sink), our cipher order; tickets stay on (resumption). */
    SSL_CTX_set_options(t->ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                    SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Idle connections give their record buffers back. */
    SSL_CTX_set_mode(t->ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_set_cipher_list(t->ctx, tls12_ciphers) != 1 ||
        SSL_CTX_set1_groups_list(t->ctx, tls_groups) != 1) {
        snprintf(err, errlen, "tls: OpenSSL refused the cipher list");
        goto fail;
    }
    SSL_CTX_set_session_cache_mode(t->ctx, SSL_SESS_CACHE_SERVER);
    static const unsigned char sid_ctx[] = "qrux";
    SSL_CTX_set_session_id_context(t->ctx, sid_ctx, sizeof(sid_ctx) - 1);
    SSL_CTX_set_alpn_select_cb(t->ctx, alpn_select, NULL);

    if (SSL_CTX_use_certificate_chain_file(t->ctx, cert) != 1) {
        ssl_err(err, errlen, "server.cert", cert);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(t->ctx, key, SSL_FILETYPE_PEM) != 1) {
        ssl_err(err, errlen, "server.key", key);
        goto fail;
    }
    if (SSL_CTX_check_private_key(t->ctx) != 1) {
        snprintf(err, errlen, "server.key: %s does not match the certificate in %s", key, cert);
        ERR_clear_error();
        goto fail;
    }
    *out = t;
    return 0;

fail:
    qx_tls_tcp_del(t);
    return QX_ERR_TLS;
}

void qx_tls_tcp_swap(qx_shared_t *s, qx_tls_tcp_t *t)
{
    pthread_mutex_lock(&s->tls_lock);
    qx_tls_tcp_t *old = s->tls_tcp;
    s->tls_tcp = t;
    pthread_mutex_unlock(&s->tls_lock);
    qx_tls_tcp_del(old);
}

void qx_tls_tcp_del(qx_tls_tcp_t *t)
{
    if (t == NULL)
        return;
    SSL_CTX_free(t->ctx);
    free(t);
}

/* ------------------------------------------------------------------------ */
/* Connection: output                                                       */
/* ------------------------------------------------------------------------ */

static size_t out_pending(const qx_tcp_conn_t *c)
{
    size_t n = c->stagelen + (c->wbio ? BIO_ctrl_pending(c->wbio) : 0);
    return n + (c->writing ? WRITE_MAX : 0);
}

size_t qx_tcp_conn_room(const qx_tcp_conn_t *c)
{
    size_t p = out_pending(c);
    if (c->state != QX_TC_OPEN)
        return 0;
    return p >= OUT_MAX ? 0 : OUT_MAX - p;
}

/* The flush runs after the poll; a mark made before it (in a timer, or a
 * write or close callback run from the pending queue) does not wait for the
 * next I/O event (defer.h keeps the poll from blocking). */
void qx_tcp_conn_mark(qx_tcp_conn_t *c)
{
    if (c->state == QX_TC_DEAD || c->f->closing)
        return;
    qx_defer(&c->w->defer, &c->flush);
}

void qx_tcp_conn_want_input(qx_tcp_conn_t *c)
{
    c->want_input = 1;
    qx_tcp_conn_mark(c);
}

/* Encrypts the staged plaintext. With memory BIOs SSL_write takes all of
 * it at once (the wbio grows; room() keeps that bounded). */
static int stage_flush(qx_tcp_conn_t *c)
{
    if (c->stagelen == 0)
        return 0;
    int n = SSL_write(c->ssl, c->stage, (int)c->stagelen);
    c->stagelen = 0;
    if (n <= 0) {
        QX_DEBUG("tls: SSL_write failed (%d)", SSL_get_error(c->ssl, n));
        ERR_clear_error();
        return QX_ERR_TLS;
    }
    return 0;
}

int qx_tcp_conn_write(qx_tcp_conn_t *c, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    if (c->state != QX_TC_OPEN && c->state != QX_TC_CLOSE_REQ)
        return QX_ERR_IO;
    if (c->stage == NULL) {
        c->stage = malloc(STAGE_CAP);
        if (c->stage == NULL)
            return QX_ERR_NOMEM;
    }
    while (len > 0) {
        size_t k = QX_MIN(len, STAGE_CAP - c->stagelen);
        memcpy(c->stage + c->stagelen, p, k);
        c->stagelen += k;
        p += k;
        len -= k;
        if (c->stagelen == STAGE_CAP && stage_flush(c) != 0) {
            qx_tcp_conn_close(c, QX_TC_CLOSE_ABORT);
            return QX_ERR_IO;
        }
    }
    qx_tcp_conn_mark(c);
    return 0;
}

static void on_write(uv_write_t *req, int status)
{
    qx_tcp_conn_t *c = qx_container_of(req, qx_tcp_conn_t, wreq);
    free(c->wbuf);
    c->wbuf = NULL;
    c->writing = 0;
    if (c->state == QX_TC_DEAD)
        return; /* cancelled by the close */
    if (status != 0) {
        QX_DEBUG("tcp: write failed: %s", uv_strerror(status));
        request_abort(c);
    }
    qx_tcp_conn_mark(c); /* more to write, or the front may write again */
}

/* Moves ciphertext from the wbio to the socket, one write at a time. */
static int flush_out(qx_tcp_conn_t *c)
{
    if (c->writing || c->wbio == NULL)
        return 0;
    size_t pending = BIO_ctrl_pending(c->wbio);
    if (pending == 0)
        return 0;
    size_t n = QX_MIN(pending, (size_t)WRITE_MAX);
    c->wbuf = malloc(n);
    if (c->wbuf == NULL)
        return QX_ERR_NOMEM;
    int got = BIO_read(c->wbio, c->wbuf, (int)n);
    if (got <= 0) {
        free(c->wbuf);
        c->wbuf = NULL;
        return 0;
    }
    uv_buf_t b = uv_buf_init(c->wbuf, (unsigned)got);
    int rv = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rv != 0) {
        QX_DEBUG("tcp: uv_write: %s", uv_strerror(rv));
        free(c->wbuf);
        c->wbuf = NULL;
        return QX_ERR_IO;
    }
    c->writing = 1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Connection: input and handshake                                          */
/* ------------------------------------------------------------------------ */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    qx_tcp_conn_t *c = qx_container_of((uv_tcp_t *)h, qx_tcp_conn_t, tcp);
    (void)hint;
    *buf = uv_buf_init(c->f->rbuf, sizeof(c->f->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void read_start(qx_tcp_conn_t *c)
{
    if (c->rd != QX_TR_PAUSED || c->state == QX_TC_DEAD)
        return;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
        c->rd = QX_TR_READING;
}

/* Stops reading; at_eof: for good (the socket reached EOF or failed). */
static void read_stop(qx_tcp_conn_t *c, int at_eof)
{
    if (c->rd == QX_TR_READING)
        uv_read_stop((uv_stream_t *)&c->tcp);
    if (c->rd != QX_TR_EOF)
        c->rd = at_eof ? QX_TR_EOF : QX_TR_PAUSED;
}

ssize_t qx_tcp_conn_read(qx_tcp_conn_t *c, void *buf, size_t cap)
{
    if (c->state != QX_TC_OPEN)
        return 0;
    if (cap > INT32_MAX)
        cap = INT32_MAX;
    int n = SSL_read(c->ssl, buf, (int)cap);
    if (n > 0)
        return n;
    int e = SSL_get_error(c->ssl, n);
    if (BIO_ctrl_pending(c->wbio) > 0)
        qx_tcp_conn_mark(c); /* e.g. a TLS 1.3 key update answer */
    if (e == SSL_ERROR_WANT_READ) {
        if (c->rd == QX_TR_EOF)
            return QX_TCP_EOF; /* EOF without close_notify: the same for HTTP */
        if (c->rd == QX_TR_PAUSED)
            qx_tcp_conn_mark(c); /* the flush starts reading again */
        return 0;
    }
    if (e == SSL_ERROR_ZERO_RETURN)
        return QX_TCP_EOF;
    QX_DEBUG("tls: SSL_read error %d", e);
    ERR_clear_error();
    return QX_ERR_TLS;
}

/* The handshake finished: remember the SNI, pick the front by ALPN. */
static int conn_open(qx_tcp_conn_t *c)
{
    const unsigned char *alpn = NULL;
    unsigned int alpnlen = 0;
    const char *sni = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
    int rv;

    if (sni != NULL) {
        snprintf(c->sni, sizeof(c->sni), "%s", sni);
        qx_ascii_lower_n(c->sni, strlen(c->sni));
    }
    SSL_get0_alpn_selected(c->ssl, &alpn, &alpnlen);
    set_state(c, QX_TC_OPEN);
    qx_tcp_conn_timer(c, 0);
    if (alpnlen == 2 && memcmp(alpn, "h2", 2) == 0) {
        rv = qx_h2_front_new(c, &c->app, &c->ops);
        c->gauge = &c->w->metrics.active_connections_h2;
    } else {
        rv = qx_h1_front_new(c, &c->app, &c->ops);
        c->gauge = &c->w->metrics.active_connections_h1;
    }
    if (rv != 0)
        c->gauge = NULL;
    else
        qx_cnt_add(c->gauge, 1);
    QX_DEBUG("tcp: TLS %s %s, ALPN %.*s, SNI %s", SSL_get_version(c->ssl),
             SSL_get_cipher_name(c->ssl), (int)alpnlen, alpnlen ? (const char *)alpn : "-",
             c->sni[0] ? c->sni : "-");
    return rv;
}

static void handshake(qx_tcp_conn_t *c)
{
    int rv = SSL_do_handshake(c->ssl);
    if (rv == 1) {
        if (conn_open(c) != 0) {
            request_abort(c);
            return;
        }
        c->ops->input(c->app);
        return;
    }
    int e = SSL_get_error(c->ssl, rv);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return;
    char buf[160];
    ERR_error_string_n(ERR_peek_last_error(), buf, sizeof(buf));
    QX_DEBUG("tcp: TLS handshake failed: %s", buf);
    ERR_clear_error();
    /* Let the alert go out, then close. */
    set_state(c, QX_TC_CLOSE_REQ);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    qx_tcp_conn_t *c = qx_container_of((uv_tcp_t *)s, qx_tcp_conn_t, tcp);
    if (c->state >= QX_TC_ABORT_REQ)
        return; /* the flush tears it down */
    if (nread < 0) {
        read_stop(c, 1);
        if (nread != UV_EOF || c->state == QX_TC_LINGER) {
            if (nread != UV_EOF)
                QX_DEBUG("tcp: read: %s", uv_strerror((int)nread));
            request_abort(c);
        } else if ((c->state == QX_TC_OPEN || c->state == QX_TC_CLOSE_REQ) && c->ops) {
            c->ops->input(c->app); /* the front sees QX_TCP_EOF once rbio is empty */
        } else if (c->state < QX_TC_CLOSING) {
            request_abort(c);
        }
        qx_tcp_conn_mark(c);
        return;
    }
    if (nread == 0)
        return;
    if (c->state == QX_TC_CLOSING || c->state == QX_TC_LINGER) {
        /* Lingering: the client's bytes are dropped, so that our close
         * does not turn into a reset that destroys the answer it has not
         * read yet. */
        c->discarded += (uint64_t)nread;
        if (c->discarded > LINGER_BYTES) {
            request_abort(c);
            qx_tcp_conn_mark(c);
        }
        return;
    }
    if (BIO_write(c->rbio, buf->base, (int)nread) != (int)nread) {
        request_abort(c);
        qx_tcp_conn_mark(c);
        return;
    }
    if (c->state == QX_TC_HANDSHAKE)
        handshake(c);
    else if (c->state == QX_TC_OPEN)
        c->ops->input(c->app);
    if (BIO_ctrl_pending(c->rbio) > RBIO_MAX)
        read_stop(c, 0); /* the front is not taking bytes: stop the peer */
    qx_tcp_conn_mark(c);
}

/* ------------------------------------------------------------------------ */
/* Connection: timer, close, teardown                                       */
/* ------------------------------------------------------------------------ */

static void on_timer(uv_timer_t *t)
{
    qx_tcp_conn_t *c = qx_container_of(t, qx_tcp_conn_t, timer);
    switch (c->state) {
    case QX_TC_HANDSHAKE:
        QX_DEBUG("tcp: TLS handshake timed out");
        request_abort(c);
        break;
    case QX_TC_OPEN:
        c->ops->timeout(c->app);
        break;
    case QX_TC_CLOSE_REQ:
    case QX_TC_ABORT_REQ:
        break; /* the flush is due anyway */
    case QX_TC_CLOSING:
    case QX_TC_LINGER:
        request_abort(c); /* linger over */
        break;
    case QX_TC_DEAD:
        return;
    }
    qx_tcp_conn_mark(c);
}

void qx_tcp_conn_timer(qx_tcp_conn_t *c, uint64_t ms)
{
    if (c->state == QX_TC_DEAD)
        return;
    if (ms == 0)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_timer, ms, 0);
}

void qx_tcp_conn_close(qx_tcp_conn_t *c, int how)
{
    if (c->state == QX_TC_DEAD)
        return;
    if (how == QX_TC_CLOSE_ABORT)
        request_abort(c);
    else if (c->state < QX_TC_CLOSE_REQ)
        set_state(c, QX_TC_CLOSE_REQ);
    qx_tcp_conn_mark(c);
}

int qx_tcp_conn_draining(const qx_tcp_conn_t *c)
{
    return c->f->draining;
}

const char *qx_tcp_conn_alt_svc(qx_tcp_conn_t *c, size_t *len)
{
    qx_tcp_front_t *f = c->f;
    if (f->draining) {
        /* This instance is going away: clients should not come back to its
         * HTTP/3 endpoint (RFC 7838 §3: "clear"). */
        *len = 5;
        return "clear";
    }
    const qx_snapshot_t *snap = c->w->snap;
    if (f->altsvclen == 0 || f->altsvc_gen != snap->generation) {
        const struct sockaddr_storage *a = &snap->cfg->listen_addr;
        unsigned port = a->ss_family == AF_INET6
                            ? ntohs(((const struct sockaddr_in6 *)a)->sin6_port)
                            : ntohs(((const struct sockaddr_in *)a)->sin_port);
        int n = snprintf(f->altsvc, sizeof(f->altsvc), "h3=\":%u\"; ma=%u", port,
                         (unsigned)snap->cfg->alt_svc_max_age);
        f->altsvclen = n > 0 ? (size_t)n : 0;
        f->altsvc_gen = snap->generation;
    }
    *len = f->altsvclen;
    return f->altsvc;
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    qx_tcp_conn_t *c = h->data;
    if (--c->nhandles == 0)
        free(c);
}

/* ---- per-IP counts ------------------------------------------------------- */

/* The key an address counts under: an IPv6 client with its /64 (one host
 * or one customer holds a whole /64: counting each address alone would give
 * it a cap per address), an IPv4 one (or IPv4-mapped, as on a "[::]"
 * listener) alone, in its mapped form. Keep in step with base/ipcount.c,
 * the QUIC front's table. */
static void ip_bytes(const struct sockaddr_storage *ss, uint8_t out[16])
{
    memset(out, 0, 16);
    if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        memcpy(out, a, IN6_IS_ADDR_V4MAPPED(a) ? 16 : 8);
    } else {
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &((const struct sockaddr_in *)ss)->sin_addr, 4);
    }
}

/* Counts a connection from |ss|. Returns its entry, or NULL when the
 * address has max connections already (or memory is short). */
static qx_tcp_ip_t *ip_take(qx_tcp_front_t *f, const struct sockaddr_storage *ss, unsigned max)
{
    uint8_t a[16];
    ip_bytes(ss, a);
    size_t b = (size_t)(qx_siphash24(f->ip_key, a, 16) % IP_BUCKETS);
    qx_tcp_ip_t *e = f->ips[b];
    while (e && memcmp(e->addr, a, 16) != 0)
        e = e->next;
    if (e == NULL) {
        if ((e = calloc(1, sizeof(*e))) == NULL)
            return NULL;
        memcpy(e->addr, a, 16);
        e->next = f->ips[b];
        f->ips[b] = e;
    }
    if (e->n >= max)
        return NULL;
    e->n++;
    return e;
}

static void ip_give(qx_tcp_front_t *f, qx_tcp_ip_t *e)
{
    if (--e->n > 0)
        return;
    size_t b = (size_t)(qx_siphash24(f->ip_key, e->addr, 16) % IP_BUCKETS);
    for (qx_tcp_ip_t **pp = &f->ips[b]; *pp; pp = &(*pp)->next) {
        if (*pp == e) {
            *pp = e->next;
            free(e);
            return;
        }
    }
}

/* Frees everything now; the struct goes once both handles have closed.
 * Never called from inside a front or exchange callback. */
static void conn_teardown(qx_tcp_conn_t *c)
{
    qx_tcp_front_t *f = c->f;
    if (c->state == QX_TC_DEAD)
        return;
    set_state(c, QX_TC_DEAD);
    qx_defer_cancel(&c->w->defer, &c->flush);
    if (c->app) {
        /* A front still there did not finish (a graceful close frees it
         * when the connection starts CLOSING). */
        c->ops->free(c->app, 1);
        c->app = NULL;
    }
    LIST_REMOVE(c, link);
    f->nconns--;
    if (c->counted) {
        c->counted = 0;
        __atomic_sub_fetch(&c->w->shared->tcp_conns, 1, __ATOMIC_RELAXED);
        qx_fd_give(&c->w->shared->fds);
    }
    if (c->ip) {
        ip_give(f, c->ip);
        c->ip = NULL;
    }
    if (c->gauge) {
        qx_cnt_sub(c->gauge, 1);
        c->gauge = NULL;
    }
    SSL_free(c->ssl); /* frees both BIOs */
    c->ssl = NULL;
    c->rbio = c->wbio = NULL;
    free(c->stage);
    c->stage = NULL;
    /* A write in flight is cancelled by the close; on_write frees wbuf. */
    c->tcp.data = c;
    c->timer.data = c;
    c->nhandles = 2;
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    qx_tcp_conn_t *c = qx_container_of(req, qx_tcp_conn_t, sreq);
    if (c->state == QX_TC_DEAD)
        return;
    if (status != 0 || c->rd == QX_TR_EOF)
        request_abort(c);
    else
        qx_tcp_conn_timer(c, LINGER_MS);
    qx_tcp_conn_mark(c);
}

/* A graceful close: the front is done; flush, close_notify, FIN, and
 * read (dropping) until the peer closes or the linger time is over. */
static void conn_begin_close(qx_tcp_conn_t *c)
{
    int was_open = c->app != NULL; /* CLOSE_REQ came from OPEN, not from a failed handshake */
    set_state(c, QX_TC_CLOSING);
    if (c->app) {
        c->ops->free(c->app, 0);
        c->app = NULL;
    }
    if (was_open) {
        stage_flush(c);
        if (SSL_is_init_finished(c->ssl))
            SSL_shutdown(c->ssl); /* queues close_notify in the wbio */
        ERR_clear_error();
    }
    /* Time to hand over what is still queued; LINGER_MS after the FIN. */
    qx_tcp_conn_timer(c, (uint64_t)c->w->snap->cfg->limits.body_idle_timeout_secs * 1000);
    read_start(c);
}

/* ------------------------------------------------------------------------ */
/* The flush (the worker's deferred-work queue)                             */
/* ------------------------------------------------------------------------ */

static void conn_flush(qx_tcp_conn_t *c)
{
    if (c->state == QX_TC_ABORT_REQ) {
        conn_teardown(c);
        return;
    }
    if (c->state == QX_TC_OPEN) {
        if (c->want_input) {
            c->want_input = 0;
            c->ops->input(c->app);
        }
        if (c->state == QX_TC_OPEN)
            c->ops->output(c->app);
        if (c->state == QX_TC_ABORT_REQ) {
            conn_teardown(c);
            return;
        }
    }
    if (c->state == QX_TC_CLOSE_REQ)
        conn_begin_close(c);
    if (c->state == QX_TC_OPEN && stage_flush(c) != 0) {
        conn_teardown(c);
        return;
    }
    if (flush_out(c) != 0) {
        conn_teardown(c);
        return;
    }
    if (c->state == QX_TC_CLOSING || c->state == QX_TC_LINGER) {
        /* Output drained: send FIN, keep reading to discard. */
        if (c->state == QX_TC_CLOSING && !c->writing && BIO_ctrl_pending(c->wbio) == 0) {
            set_state(c, QX_TC_LINGER);
            if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
                conn_teardown(c);
        }
        return;
    }
    /* Reading resumes once the front has taken most of what waits. */
    if (c->state != QX_TC_DEAD && c->rd == QX_TR_PAUSED && BIO_ctrl_pending(c->rbio) < RBIO_MAX / 2)
        read_start(c);
}

/* conn_flush may queue c again (a front asked for input): it runs once
 * more in the queue's next pass, in this loop turn. */
static void on_flush(qx_deferred_t *d)
{
    qx_tcp_conn_t *c = qx_container_of(d, qx_tcp_conn_t, flush);
    qx_tcp_front_t *f = c->f;
    conn_flush(c);
    if (c->state == QX_TC_DEAD && !f->closing)
        qx_wctx_maybe_done(f->w);
}

/* ------------------------------------------------------------------------ */
/* Accepting                                                                */
/* ------------------------------------------------------------------------ */

/* The caps a new connection must pass: descriptors kept in reserve, the
 * process's max_tcp_connections, its address's max_tcp_connections_per_ip.
 * Returns 0, or QX_ERR_LIMIT (counted) when it is to be closed. */
static int admit(qx_tcp_front_t *f, qx_tcp_conn_t *c)
{
    qx_wctx_t *w = f->w;
    const qx_limits_t *l = &w->snap->cfg->limits;
    qx_shared_t *sh = w->shared;
    if (qx_fd_take(&sh->fds) != 0) {
        qx_cnt_add(&w->metrics.defences[QX_D_FD_RESERVE], 1);
        return QX_ERR_LIMIT;
    }
    c->counted = 1;
    if (__atomic_add_fetch(&sh->tcp_conns, 1, __ATOMIC_RELAXED) > l->max_tcp_connections) {
        qx_cnt_add(&w->metrics.defences[QX_D_TCP_CONN_LIMIT], 1);
        return QX_ERR_LIMIT;
    }
    if ((c->ip = ip_take(f, &c->peer, l->max_tcp_connections_per_ip)) == NULL) {
        qx_cnt_add(&w->metrics.defences[QX_D_TCP_CONN_LIMIT_PER_IP], 1);
        return QX_ERR_LIMIT;
    }
    return 0;
}

static void conn_accept(qx_tcp_front_t *f)
{
    qx_wctx_t *w = f->w;
    qx_tcp_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->f = f;
    c->w = w;
    c->state = QX_TC_HANDSHAKE;
    qx_deferred_init(&c->flush, on_flush);
    uv_tcp_init(&w->loop, &c->tcp);
    uv_timer_init(&w->loop, &c->timer);
    LIST_INSERT_HEAD(&f->conns, c, link);
    f->nconns++;
    if (uv_accept((uv_stream_t *)&f->lsn, (uv_stream_t *)&c->tcp) != 0) {
        conn_teardown(c);
        return;
    }
    int len = sizeof(c->peer);
    uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer, &len);
    if (admit(f, c) != 0) {
        conn_teardown(c); /* closed at once: no TLS, no timer, no byte read */
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);

    /* Under the lock: certificate rotation swaps the context (the SSL
     * keeps its own reference to the one it was made from). */
    pthread_mutex_lock(&f->w->shared->tls_lock);
    c->ssl = SSL_new(f->w->shared->tls_tcp->ctx);
    pthread_mutex_unlock(&f->w->shared->tls_lock);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (c->ssl == NULL || c->rbio == NULL || c->wbio == NULL) {
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        c->rbio = c->wbio = NULL;
        conn_teardown(c);
        return;
    }
    /* An empty BIO means "retry later", not end of file. */
    BIO_set_mem_eof_return(c->rbio, -1);
    BIO_set_mem_eof_return(c->wbio, -1);
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_accept_state(c->ssl);
    qx_tcp_conn_timer(c, (uint64_t)w->snap->cfg->limits.header_read_timeout_secs * 1000);
    read_start(c);
}

static void on_connection(uv_stream_t *s, int status)
{
    qx_tcp_front_t *f = qx_container_of((uv_tcp_t *)s, qx_tcp_front_t, lsn);
    if (status != 0) {
        QX_DEBUG("tcp: accept: %s", uv_strerror(status));
        return;
    }
    if (!f->accepting)
        return;
    conn_accept(f);
}

/* ------------------------------------------------------------------------ */
/* Listener                                                                 */
/* ------------------------------------------------------------------------ */

int qx_tcp_front_new(qx_tcp_front_t **out, qx_wctx_t *w, const struct sockaddr *addr,
                     socklen_t addrlen)
{
    char name[INET6_ADDRSTRLEN] = "?";
    int one = 1, zero = 0;
    unsigned port;
    qx_tcp_front_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return QX_ERR_NOMEM;
    f->w = w;
    LIST_INIT(&f->conns);
    f->accepting = 1;
    uv_ip_name(addr, name, sizeof(name));
    if (addr->sa_family == AF_INET6)
        port = ntohs(((const struct sockaddr_in6 *)addr)->sin6_port);
    else
        port = ntohs(((const struct sockaddr_in *)addr)->sin_port);
    f->fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (f->fd == -1)
        goto fail;
    /* One listening socket per worker on the same port: the kernel
     * spreads new connections over them, and each stays on its worker. */
    if (setsockopt(f->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
        setsockopt(f->fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1)
        goto fail;
    /* [::] takes IPv4 too, like the UDP socket. */
    if (addr->sa_family == AF_INET6 &&
        setsockopt(f->fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) == -1)
        goto fail;
    if (bind(f->fd, addr, addrlen) == -1)
        goto fail;
    if (getrandom(f->ip_key, sizeof(f->ip_key), 0) != (ssize_t)sizeof(f->ip_key)) {
        QX_ERROR("tcp: getrandom: %s", strerror(errno));
        close(f->fd);
        free(f);
        return QX_ERR_IO;
    }
    *out = f;
    return 0;

fail:
    QX_ERROR("server.https_listen: cannot bind TCP %s port %u: %s", name, port, strerror(errno));
    if (f->fd >= 0)
        close(f->fd);
    free(f);
    return QX_ERR_IO;
}

int qx_tcp_front_start(qx_tcp_front_t *f)
{
    qx_wctx_t *w = f->w;
    if (w->shared->tls_tcp == NULL) {
        QX_ERROR("server.https_listen: no TLS context for the HTTPS listener");
        return QX_ERR_TLS;
    }
    uv_tcp_init(&w->loop, &f->lsn);
    f->started = 1;
    f->lsn_open = 1;
    f->lsn.data = f;
    int rv = uv_tcp_open(&f->lsn, f->fd);
    if (rv == 0) {
        f->fd = -1; /* the handle owns it now */
        rv = uv_listen((uv_stream_t *)&f->lsn, LISTEN_BACKLOG, on_connection);
    }
    if (rv != 0) {
        QX_ERROR("server.https_listen: cannot listen: %s", uv_strerror(rv));
        return QX_ERR_IO;
    }
    return 0;
}

static void on_front_handle_closed(uv_handle_t *h)
{
    qx_tcp_front_t *f = h->data;
    if (--f->nhandles == 0 && f->closing) {
        if (f->fd >= 0)
            close(f->fd);
        free(f);
    }
}

static void close_listener(qx_tcp_front_t *f)
{
    f->accepting = 0;
    if (!f->lsn_open)
        return;
    f->lsn_open = 0;
    f->nhandles++;
    uv_close((uv_handle_t *)&f->lsn, on_front_handle_closed);
}

void qx_tcp_front_drain(qx_tcp_front_t *f)
{
    if (f == NULL || f->closing)
        return;
    f->draining = 1;
    /* New connections go to a worker still listening, or are refused. */
    if (f->started)
        close_listener(f);
    f->accepting = 0;
    for (qx_tcp_conn_t *c = LIST_FIRST(&f->conns); c; c = LIST_NEXT(c, link)) {
        if (c->state == QX_TC_HANDSHAKE)
            qx_tcp_conn_close(c, QX_TC_CLOSE_ABORT);
        else if (c->state == QX_TC_OPEN)
            c->ops->drain(c->app);
    }
}

void qx_tcp_front_close(qx_tcp_front_t *f)
{
    if (f == NULL || f->closing)
        return;
    f->accepting = 0;
    while (!LIST_EMPTY(&f->conns))
        conn_teardown(LIST_FIRST(&f->conns)); /* takes it off the flush queue too */
    f->closing = 1;
    if (!f->started) {
        if (f->fd >= 0)
            close(f->fd);
        free(f);
        return;
    }
    /* Freed when the last handle has closed (a listener closed by a
     * drain may still be pending: it is counted too), or now when a drain
     * closed the listener already. */
    close_listener(f);
    if (f->nhandles == 0) {
        if (f->fd >= 0)
            close(f->fd);
        free(f);
    }
}

unsigned qx_tcp_front_nconns(const qx_tcp_front_t *f)
{
    return f ? f->nconns : 0;
}
