/*
 * h3probe.c - a raw HTTP/3 client for the e2e tests.
 *
 * Real clients refuse to build a malformed request, so they cannot test that
 * qrux rejects one (RFC 9114 §4.1.2). h3probe sends the fields given with -H
 * exactly as written, in order, pseudo-headers included: nothing is added,
 * lowercased or validated. Optionally it sends a valid GET on the same
 * connection once the first stream has closed, to show the connection
 * survived. What comes back is printed one event per line on stdout:
 *
 *   request N                 a request is being sent (1, then 2 for --also-get)
 *   status 200                a :status field arrived (interim ones too)
 *   header name: value        each other response field; trailer name: value
 *   body-sha256 HEX LEN       the response body, at the end of a response
 *   stream-reset 0xC          the server reset the stream (RESET_STREAM)
 *   stop-sending 0xC          the server sent STOP_SENDING
 *   stream-close 0xC          the stream closed (0x100 = H3_NO_ERROR)
 *   conn-close 0xC KIND       the server closed the connection (app|transport)
 *   cert-sha256 HEX           --print-cert-sha256: SHA-256 of the server's leaf
 *                             certificate (DER), once the handshake completes
 *   retry                     --print-retry: a Retry packet arrived (RFC 9000
 *                             §8.1.2); the next Initials carry its token
 *   new-token LEN             --new-token-file: a NEW_TOKEN frame arrived; its
 *                             token was written to the file as hex
 *   client-reset              --reset-ms: the request body was held open that long,
 *                             then cancelled with RESET_STREAM(H3_REQUEST_CANCELLED)
 *   timeout                   --timeout ran out first
 *
 * --trailer 'name: value' (up to 8) ends the request body with a trailer
 * section (a HEADERS frame after the DATA).
 *
 * Attacks (test_attacks_quic.py): --repeat N sends the last -H field N more
 * times (nghttp3's encoder puts it in the QPACK dynamic table once and
 * refers to it: a small HEADERS frame that decodes to N copies); --stall
 * never grants flow control for response bodies (a client that stops
 * reading, its connection kept alive with PINGs) and prints
 * "received N" for each unfinished response when --timeout runs out.
 *
 * Tunnels (test_websocket.py): --half-close sends the body (-d) at once but
 * ends the request stream only after the server ended its response, as a
 * WebSocket client over extended CONNECT (RFC 9220) does. --body-delay MS
 * holds the body back for MS first: a quiet tunnel (no PINGs of its own).
 *
 * Address validation (the transport tests): --token HEX sends HEX as the
 * token of the first Initial (a NEW_TOKEN saved earlier, or a forged one);
 * --retry-wait SECS holds the Initial that answers a Retry back for SECS
 * seconds, so the Retry token has expired when it arrives.
 *
 * Raw mode (--uni / --bidi, the HTTP/3 conformance tests): nghttp3 is not
 * used at all; once the handshake completes, h3probe opens one stream per
 * option, in order, and writes the bytes given (hex) on it: a control
 * stream, QPACK streams, request streams exactly as a broken client would
 * write them. --uni HEX ends the stream only when HEX ends in '!', --bidi
 * HEX always ends it unless HEX ends in '-'. It prints
 *   raw-open N ID             the N-th raw stream (1-based) has stream ID ID
 *   bidi-data ID HEX          data on a request stream (each read, hex)
 *   raw-reset ID 0xC          RESET_STREAM on a raw stream
 *   raw-stop ID 0xC           STOP_SENDING on a raw stream
 *   bidi-close ID 0xC         a raw request stream closed
 * and conn-close as above; it ends once every raw request stream closed or
 * the server closed the connection.
 *
 * Injection (--inject HEX, the QUIC transport conformance tests): no streams
 * are opened; once the server confirmed the handshake, ngtcp2 is left
 * alone and each --inject becomes one 1-RTT packet whose payload is
 * exactly HEX (frames as a broken client writes them; "" is a packet
 * without frames), protected by h3probe with the 1-RTT keys GnuTLS logs.
 * --inject-rbits sets the reserved header bits, --inject-gap MS listens
 * between packets, --collect MS after the last (default 2000; a
 * CONNECTION_CLOSE ends it). It prints
 *   server-tp max_data N bidi_remote N uni N streams_bidi N streams_uni N
 *                             the server's transport parameters (flow control)
 *   server-srt HEX            the stateless reset token of the server's CID
 *   inject N pn PN len L      the N-th packet went out
 *   rx pn PN frames T ...     a server packet, decrypted: its frame types (hex)
 *   acked PN                  ... with an ACK covering injected packet PN
 *   close 0x1c 0xCODE 0xFT MS ... with a CONNECTION_CLOSE (0x1c: transport,
 *                             FT the frame type it names; 0x1d: application),
 *                             MS milliseconds after the last injected packet
 *   rx-undecryptable LEN 0xFB TAIL  a datagram that is not a 1-RTT packet of
 *                             the connection (FB: its first byte, TAIL: its
 *                             last 16 bytes, hex)
 *   no-close                  no CONNECTION_CLOSE came
 *
 * --inject-hs HEX sends one Handshake packet carrying HEX instead, before
 * the client's Finished, with the Handshake keys GnuTLS logs; ngtcp2 goes
 * on and prints conn-close as above, or
 *   inject-hs pn PN len L     the packet went out
 *   handshake-confirmed       the handshake completed all the same
 * --session-file FILE saves a session ticket and the server's transport
 * parameters there ("session-saved") when FILE does not exist, else
 * resumes with them offering 0-RTT; --inject-0rtt HEX then sends one 0-RTT
 * packet carrying HEX right after the first Initial ("inject-0rtt pn PN
 * len L", or "no-0rtt" when the ticket gave no early-data keys).
 *
 * Connection flow control (test_attacks_h3_credit.py): --print-max-data prints at
 * the end
 *   max-data N                the server's last MAX_DATA (credit left + bytes sent)
 *   max-data-left-peak N      the most credit ever held unused, looked at after
 *                             each packet read: never above the server's
 *                             initial_max_data unless it credits bytes it
 *                             never received (or grew its window)
 *   stream-sent N             stream bytes sent (what connection flow control counts)
 * --bidi-file FILE is --bidi with FILE's bytes (too long for a command line).
 *
 * Exit 0 when every request got an outcome, 1 on timeout or network failure,
 * 2 on a usage error. It is a test tool: the certificate is not verified.
 */
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

#include <nghttp3/nghttp3.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FIELDS 8192
#define MAX_BODY (64 * 1024 * 1024)
#define PKT_SIZE 1452
#define MAX_RAW 512
#define MAX_INJECT 8

typedef struct {
    int bidi;
    uint8_t *data;
    size_t len, off;
    int fin;      /* end the stream after the data */
    int fin_sent; /* the FIN went out */
    int blocked;  /* flow control: wait for extend_max_stream_data */
    int closed;
    int64_t sid; /* -1 until opened */
} raw_t;

typedef struct {
    int index;            /* 1: the request as given; 2: the --also-get */
    int64_t stream_id;    /* -1 until opened */
    int got_status;       /* a :status arrived */
    int closed;           /* nghttp3 or ngtcp2 closed the stream */
    gnutls_hash_hd_t sha; /* over the response body */
    uint64_t body_len;
} req_t;

typedef struct {
    /* command line */
    const char *host, *port, *sni, *also_get;
    FILE *out; /* -o: request 1's response body goes here */
    nghttp3_nv fields[MAX_FIELDS];
    size_t nfields;
    uint8_t *body; /* NULL: no body, the request ends with HEADERS */
    size_t body_len;
    uint8_t *body_buf; /* what -d allocated (--body points into argv) */
    int timeout_secs;
    int print_cert;         /* --print-cert-sha256 */
    int print_retry;        /* --print-retry */
    int retry_wait_secs;    /* --retry-wait: hold the post-Retry Initial this long */
    int reset_ms;           /* --reset-ms: body held open, then RESET_STREAM (cancel) */
    const char *trailer[8]; /* --trailer 'name: value': sent after the body (-d/--body) */
    size_t ntrailer;
    uint64_t reset_at;          /* when (ns), 0 once sent */
    int stall;                  /* --stall: response bodies get no flow control */
    int half_close;             /* --half-close: the body's end waits for the response's */
    int body_out;               /* --half-close: the body went */
    int body_delay_ms;          /* --body-delay: the tunnel's body waits this long */
    uint64_t body_at;           /* when it may go (ns), 0 once it may */
    int resp_ended;             /* --half-close: the server ended the response */
    int print_max_data;         /* --print-max-data */
    uint64_t stream_sent;       /* new stream bytes written (what connection flow control counts) */
    uint64_t left_peak;         /* the most connection credit ever held unused */
    const char *new_token_file; /* --new-token-file: NEW_TOKEN written here (hex) */
    uint8_t token[512];         /* --token: sent in the first Initial */
    size_t token_len;
    char authority[512]; /* for --also-get: the request's own, or SNI:PORT */

    /* connection */
    int fd;
    struct sockaddr_storage local, remote;
    socklen_t local_len, remote_len;
    gnutls_certificate_credentials_t cred;
    gnutls_session_t tls;
    ngtcp2_crypto_conn_ref conn_ref;
    ngtcp2_conn *conn;
    nghttp3_conn *h3;
    ngtcp2_ccerr ccerr; /* what we send when we close */
    raw_t raw[MAX_RAW]; /* --uni / --bidi: raw mode, no nghttp3 */
    int nraw;
    int raw_bidi_open; /* raw request streams not closed yet */
    int want_next;     /* set in a callback, acted on outside (never nest calls) */
    int got_retry;     /* a Retry arrived; with --retry-wait, not yet waited */
    int done;          /* every request has an outcome */
    req_t req[2];
    int nreq;

    /* --inject: 1-RTT packets protected by hand (inject_run) */
    uint8_t *inject[MAX_INJECT];
    size_t inject_len[MAX_INJECT];
    uint64_t inject_pn[MAX_INJECT];
    int ninject;
    int inject_rbits;                     /* --inject-rbits: the reserved header bits set */
    int inject_gap_ms;                    /* --inject-gap: listen that long between packets */
    int collect_ms;                       /* --collect: listen that long after the last */
    uint64_t inject_last_ns;              /* when the last one went out */
    uint8_t tx_secret[64], rx_secret[64]; /* 1-RTT secrets (GnuTLS key log) */
    size_t tx_secret_len, rx_secret_len;
    uint8_t server_cid[NGTCP2_MAX_CIDLEN]; /* the SCID of the server's first packet */
    size_t server_cidlen;
    size_t client_cidlen; /* what the server writes to */
    uint64_t rx_largest;  /* the largest server packet number decrypted */
    uint8_t client_scid[NGTCP2_MAX_CIDLEN];

    /* --inject-hs: one Handshake packet, before the client's Finished */
    uint8_t *hs_inject;
    size_t hs_inject_len;
    int hs_sent;
    uint8_t hs_secret[64]; /* CLIENT_HANDSHAKE_TRAFFIC_SECRET */
    size_t hs_secret_len;

    /* --session-file: a ticket and the server's 0-RTT transport parameters
     * saved by one run, resumed by the next; --inject-0rtt: one 0-RTT
     * packet right after the first Initial */
    const char *session_file;
    gnutls_datum_t session; /* loaded: resume with it */
    uint8_t tp0[512];       /* loaded: the 0-RTT transport parameters */
    size_t tp0_len;
    uint8_t *zrtt_inject;
    size_t zrtt_inject_len;
    uint8_t early_secret[64]; /* CLIENT_EARLY_TRAFFIC_SECRET */
    size_t early_secret_len;
    uint8_t client_dcid[NGTCP2_MAX_CIDLEN]; /* the DCID of the first Initial */
    size_t client_dcidlen;
} probe_t;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NGTCP2_SECONDS + (uint64_t)ts.tv_nsec;
}

static req_t *req_of(probe_t *p, int64_t stream_id)
{
    for (int i = 0; i < p->nreq; i++)
        if (p->req[i].stream_id == stream_id)
            return &p->req[i];
    return NULL;
}

/* ---- request and response (nghttp3) --------------------------------------- */

static nghttp3_ssize read_body(nghttp3_conn *conn, int64_t stream_id, nghttp3_vec *vec,
                               size_t veccnt, uint32_t *pflags, void *user_data,
                               void *stream_user_data)
{
    probe_t *p = user_data;
    if (p->reset_ms > 0)
        return NGHTTP3_ERR_WOULDBLOCK; /* the body never ends: --reset-ms cancels it */
    if (p->half_close) {
        /* A tunnel (extended CONNECT): the body goes at once, the stream's
         * end only after the server ended its side. */
        if (!p->body_out) {
            if (p->body_at != 0)
                return NGHTTP3_ERR_WOULDBLOCK; /* --body-delay: a quiet tunnel first */
            p->body_out = 1;
            if (p->body_len == 0)
                return NGHTTP3_ERR_WOULDBLOCK;
            vec[0].base = p->body;
            vec[0].len = p->body_len;
            return 1;
        }
        if (!p->resp_ended)
            return NGHTTP3_ERR_WOULDBLOCK;
        *pflags |= NGHTTP3_DATA_FLAG_EOF;
        return 0;
    }
    /* The whole body in one go: it lives as long as the process, which
     * nghttp3 needs (it keeps pointing at it until the bytes are acked). */
    *pflags |= NGHTTP3_DATA_FLAG_EOF;
    if (p->ntrailer > 0) {
        /* The fields point into argv, which outlives the connection. */
        nghttp3_nv nva[8];
        size_t n = 0;
        for (size_t i = 0; i < p->ntrailer; i++) {
            const char *t = p->trailer[i], *colon = strchr(t, ':');
            if (colon == NULL)
                continue;
            const char *v = colon + 1;
            while (*v == ' ')
                v++;
            nva[n++] = (nghttp3_nv){(uint8_t *)t, (uint8_t *)v, (size_t)(colon - t), strlen(v),
                                    NGHTTP3_NV_FLAG_NONE};
        }
        if (nghttp3_conn_submit_trailers(conn, stream_id, nva, n) == 0)
            *pflags |= NGHTTP3_DATA_FLAG_NO_END_STREAM; /* the trailers end the stream */
    }
    if (p->body_len == 0)
        return 0;
    vec[0].base = p->body;
    vec[0].len = p->body_len;
    return 1;
}

static void finish_req(probe_t *p, req_t *r, uint64_t code)
{
    uint8_t digest[32];
    if (r->closed)
        return;
    r->closed = 1;
    if (r->got_status) {
        gnutls_hash_output(r->sha, digest);
        printf("body-sha256 ");
        for (size_t i = 0; i < sizeof(digest); i++)
            printf("%02x", digest[i]);
        printf(" %" PRIu64 "\n", r->body_len);
    }
    printf("stream-close 0x%" PRIx64 "\n", code);
    if (r->index == 1 && p->also_get)
        p->want_next = 1;
    else
        p->done = 1;
}

static int h3_stream_close(nghttp3_conn *conn, int64_t stream_id, uint64_t app_error_code,
                           void *user_data, void *stream_user_data)
{
    probe_t *p = user_data;
    req_t *r = req_of(p, stream_id);
    if (r)
        finish_req(p, r, app_error_code);
    return 0;
}

static void consumed(probe_t *p, int64_t stream_id, size_t n)
{
    if (p->stall)
        return; /* the server's window for this body is never opened again */
    ngtcp2_conn_extend_max_stream_offset(p->conn, stream_id, n);
    ngtcp2_conn_extend_max_offset(p->conn, n);
}

static int h3_recv_data(nghttp3_conn *conn, int64_t stream_id, const uint8_t *data, size_t len,
                        void *user_data, void *stream_user_data)
{
    probe_t *p = user_data;
    req_t *r = req_of(p, stream_id);
    if (r) {
        gnutls_hash(r->sha, data, len);
        r->body_len += len;
        if (r->index == 1 && p->out && fwrite(data, 1, len, p->out) != len)
            return NGHTTP3_ERR_CALLBACK_FAILURE;
    }
    consumed(p, stream_id, len);
    return 0;
}

static int h3_deferred_consume(nghttp3_conn *conn, int64_t stream_id, size_t n, void *user_data,
                               void *stream_user_data)
{
    consumed(user_data, stream_id, n);
    return 0;
}

static void print_field(const char *kind, nghttp3_rcbuf *name, nghttp3_rcbuf *value)
{
    nghttp3_vec n = nghttp3_rcbuf_get_buf(name), v = nghttp3_rcbuf_get_buf(value);
    printf("%s %.*s: %.*s\n", kind, (int)n.len, (const char *)n.base, (int)v.len,
           (const char *)v.base);
}

static int h3_recv_header(nghttp3_conn *conn, int64_t stream_id, int32_t token, nghttp3_rcbuf *name,
                          nghttp3_rcbuf *value, uint8_t flags, void *user_data,
                          void *stream_user_data)
{
    req_t *r = req_of(user_data, stream_id);
    if (token == NGHTTP3_QPACK_TOKEN__STATUS) {
        nghttp3_vec v = nghttp3_rcbuf_get_buf(value);
        printf("status %.*s\n", (int)v.len, (const char *)v.base);
        if (r)
            r->got_status = 1;
        return 0;
    }
    print_field("header", name, value);
    return 0;
}

static int h3_recv_trailer(nghttp3_conn *conn, int64_t stream_id, int32_t token,
                           nghttp3_rcbuf *name, nghttp3_rcbuf *value, uint8_t flags,
                           void *user_data, void *stream_user_data)
{
    print_field("trailer", name, value);
    return 0;
}

static int h3_stop_sending(nghttp3_conn *conn, int64_t stream_id, uint64_t app_error_code,
                           void *user_data, void *stream_user_data)
{
    probe_t *p = user_data;
    int rv = ngtcp2_conn_shutdown_stream_read(p->conn, 0, stream_id, app_error_code);
    return rv == 0 ? 0 : NGHTTP3_ERR_CALLBACK_FAILURE;
}

static int h3_reset_stream(nghttp3_conn *conn, int64_t stream_id, uint64_t app_error_code,
                           void *user_data, void *stream_user_data)
{
    probe_t *p = user_data;
    int rv = ngtcp2_conn_shutdown_stream_write(p->conn, 0, stream_id, app_error_code);
    return rv == 0 ? 0 : NGHTTP3_ERR_CALLBACK_FAILURE;
}

static int submit(probe_t *p, const nghttp3_nv *nva, size_t n, int with_body)
{
    static const nghttp3_data_reader dr = {read_body};
    req_t *r = &p->req[p->nreq];
    int rv = ngtcp2_conn_open_bidi_stream(p->conn, &r->stream_id, NULL);
    if (rv != 0) {
        fprintf(stderr, "h3probe: open_bidi_stream: %s\n", ngtcp2_strerror(rv));
        return -1;
    }
    r->index = ++p->nreq;
    if (gnutls_hash_init(&r->sha, GNUTLS_DIG_SHA256) != 0)
        return -1;
    printf("request %d\n", r->index);
    rv = nghttp3_conn_submit_request(p->h3, r->stream_id, nva, n, with_body ? &dr : NULL, NULL);
    if (rv != 0) {
        fprintf(stderr, "h3probe: submit_request: %s\n", nghttp3_strerror(rv));
        return -1;
    }
    return 0;
}

/* A field that goes out byte for byte: nghttp3 lowercases the names it
 * copies, so it must not copy them. Every name and value we send lives as
 * long as the process (argv, literals, the probe). */
static nghttp3_nv nv_of(const char *name, const char *value)
{
    return (nghttp3_nv){(uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value),
                        NGHTTP3_NV_FLAG_NO_COPY_NAME | NGHTTP3_NV_FLAG_NO_COPY_VALUE};
}

static int submit_also_get(probe_t *p)
{
    nghttp3_nv nva[] = {nv_of(":method", "GET"), nv_of(":scheme", "https"),
                        nv_of(":authority", p->authority), nv_of(":path", p->also_get)};
    return submit(p, nva, sizeof(nva) / sizeof(nva[0]), 0);
}

/* The server ended its side of a stream: with --half-close, ours ends now. */
static int h3_end_stream(nghttp3_conn *conn, int64_t stream_id, void *user_data,
                         void *stream_user_data)
{
    probe_t *p = user_data;
    (void)stream_user_data;
    if (p->half_close) {
        p->resp_ended = 1;
        nghttp3_conn_resume_stream(conn, stream_id);
    }
    return 0;
}

static int h3_setup(probe_t *p)
{
    nghttp3_callbacks cb = {
        .stream_close = h3_stream_close,
        .recv_data = h3_recv_data,
        .deferred_consume = h3_deferred_consume,
        .recv_header = h3_recv_header,
        .recv_trailer = h3_recv_trailer,
        .stop_sending = h3_stop_sending,
        .reset_stream = h3_reset_stream,
        .end_stream = h3_end_stream,
    };
    nghttp3_settings settings;
    int64_t ctrl, qenc, qdec;

    nghttp3_settings_default(&settings);
    settings.qpack_max_dtable_capacity = 4096;
    settings.qpack_blocked_streams = 16;
    if (nghttp3_conn_client_new(&p->h3, &cb, &settings, nghttp3_mem_default(), p) != 0)
        return -1;
    if (ngtcp2_conn_open_uni_stream(p->conn, &ctrl, NULL) != 0 ||
        ngtcp2_conn_open_uni_stream(p->conn, &qenc, NULL) != 0 ||
        ngtcp2_conn_open_uni_stream(p->conn, &qdec, NULL) != 0) {
        fprintf(stderr, "h3probe: the server allows fewer than 3 uni streams\n");
        return -1;
    }
    if (nghttp3_conn_bind_control_stream(p->h3, ctrl) != 0 ||
        nghttp3_conn_bind_qpack_streams(p->h3, qenc, qdec) != 0)
        return -1;
    return submit(p, p->fields, p->nfields, p->body != NULL);
}

/* ---- QUIC (ngtcp2) callbacks ---------------------------------------------- */

static void rand_cb(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *ctx)
{
    gnutls_rnd(GNUTLS_RND_RANDOM, dest, len);
}

static int new_cid_cb(ngtcp2_conn *conn, ngtcp2_cid *cid, uint8_t *token, size_t cidlen,
                      void *user_data)
{
    if (gnutls_rnd(GNUTLS_RND_RANDOM, cid->data, cidlen) != 0 ||
        gnutls_rnd(GNUTLS_RND_RANDOM, token, NGTCP2_STATELESS_RESET_TOKENLEN) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    cid->datalen = cidlen;
    return 0;
}

/* Prints the SHA-256 of the leaf certificate the server presented, so a
 * test can tell which certificate a new handshake got (rotation). */
static int print_cert_sha256(probe_t *p)
{
    unsigned int n = 0;
    const gnutls_datum_t *certs = gnutls_certificate_get_peers(p->tls, &n);
    uint8_t md[32];
    if (certs == NULL || n == 0) {
        fprintf(stderr, "h3probe: the server sent no certificate\n");
        return -1;
    }
    if (gnutls_hash_fast(GNUTLS_DIG_SHA256, certs[0].data, certs[0].size, md) != 0)
        return -1;
    printf("cert-sha256 ");
    for (size_t i = 0; i < sizeof(md); i++)
        printf("%02x", md[i]);
    printf("\n");
    return 0;
}

/* Retry: ngtcp2 does the work; we only say so, and remember it for
 * --retry-wait (the wait happens in run(), never inside a callback). */
static int recv_retry_cb(ngtcp2_conn *conn, const ngtcp2_pkt_hd *hd, void *user_data)
{
    probe_t *p = user_data;
    int rv = ngtcp2_crypto_recv_retry_cb(conn, hd, user_data);
    if (rv == 0) {
        if (p->print_retry)
            printf("retry\n");
        p->got_retry = 1;
    }
    return rv;
}

static int recv_new_token_cb(ngtcp2_conn *conn, const uint8_t *token, size_t tokenlen,
                             void *user_data)
{
    probe_t *p = user_data;
    (void)conn;
    if (p->new_token_file == NULL)
        return 0;
    FILE *f = fopen(p->new_token_file, "w");
    if (f == NULL) {
        perror(p->new_token_file);
        return 0; /* the test sees no new-token line */
    }
    for (size_t i = 0; i < tokenlen; i++)
        fprintf(f, "%02x", token[i]);
    fputc('\n', f);
    if (fclose(f) == 0)
        printf("new-token %zu\n", tokenlen);
    return 0;
}

static raw_t *raw_of(probe_t *p, int64_t sid)
{
    for (int i = 0; i < p->nraw; i++)
        if (p->raw[i].sid == sid)
            return &p->raw[i];
    return NULL;
}

/* Raw mode: one stream per --uni / --bidi, in the order given. */
static int raw_setup(probe_t *p)
{
    for (int i = 0; i < p->nraw; i++) {
        raw_t *r = &p->raw[i];
        int rv = r->bidi ? ngtcp2_conn_open_bidi_stream(p->conn, &r->sid, NULL)
                         : ngtcp2_conn_open_uni_stream(p->conn, &r->sid, NULL);
        if (rv != 0) {
            fprintf(stderr, "h3probe: cannot open raw stream %d: %s\n", i + 1, ngtcp2_strerror(rv));
            return -1;
        }
        if (r->bidi)
            p->raw_bidi_open++;
        printf("raw-open %d %" PRId64 "\n", i + 1, r->sid);
    }
    return 0;
}

/* Does h3probe write packets by hand (and open no streams)? */
static int injecting(const probe_t *p)
{
    return p->ninject > 0 || p->hs_inject != NULL || p->zrtt_inject != NULL;
}

static int handshake_completed_cb(ngtcp2_conn *conn, void *user_data)
{
    probe_t *p = user_data;
    (void)conn;
    if (p->print_cert && print_cert_sha256(p) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    if (injecting(p)) /* no streams: the injected packets are the test */
        return 0;
    if (p->nraw > 0)
        return raw_setup(p) == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
    return h3_setup(p) == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
}

static int recv_stream_data_cb(ngtcp2_conn *conn, uint32_t flags, int64_t stream_id,
                               uint64_t offset, const uint8_t *data, size_t len, void *user_data,
                               void *stream_user_data)
{
    probe_t *p = user_data;
    if (p->nraw > 0 || p->ninject > 0) { /* raw mode: show what a request stream got, consume all */
        if (ngtcp2_is_bidi_stream(stream_id) && len > 0) {
            printf("bidi-data %" PRId64 " ", stream_id);
            for (size_t i = 0; i < len; i++)
                printf("%02x", data[i]);
            printf("\n");
        }
        ngtcp2_conn_extend_max_stream_offset(conn, stream_id, len);
        ngtcp2_conn_extend_max_offset(conn, len);
        return 0;
    }
    nghttp3_ssize n =
        nghttp3_conn_read_stream(p->h3, stream_id, data, len, flags & NGTCP2_STREAM_DATA_FLAG_FIN);
    if (n < 0) {
        fprintf(stderr, "h3probe: read_stream: %s\n", nghttp3_strerror((int)n));
        ngtcp2_ccerr_set_application_error(&p->ccerr, nghttp3_err_infer_quic_app_error_code((int)n),
                                           NULL, 0);
        return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    ngtcp2_conn_extend_max_stream_offset(conn, stream_id, (uint64_t)n);
    ngtcp2_conn_extend_max_offset(conn, (uint64_t)n);
    return 0;
}

static int acked_cb(ngtcp2_conn *conn, int64_t stream_id, uint64_t offset, uint64_t len,
                    void *user_data, void *stream_user_data)
{
    probe_t *p = user_data;
    if (p->h3 == NULL)
        return 0;
    return nghttp3_conn_add_ack_offset(p->h3, stream_id, len) == 0 ? 0
                                                                   : NGTCP2_ERR_CALLBACK_FAILURE;
}

static int stream_close_cb(ngtcp2_conn *conn, uint32_t flags, int64_t stream_id, uint64_t code,
                           void *user_data, void *stream_user_data)
{
    probe_t *p = user_data;
    if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET))
        code = NGHTTP3_H3_NO_ERROR;
    if (p->nraw > 0 || p->ninject > 0) {
        raw_t *r = raw_of(p, stream_id);
        if (r != NULL && r->bidi && !r->closed) {
            r->closed = 1;
            printf("bidi-close %" PRId64 " 0x%" PRIx64 "\n", stream_id, code);
            if (--p->raw_bidi_open == 0)
                p->done = 1;
        }
        if (!ngtcp2_is_bidi_stream(stream_id) && r == NULL)
            ngtcp2_conn_extend_max_streams_uni(conn, 1);
        return 0;
    }
    int rv = p->h3 ? nghttp3_conn_close_stream(p->h3, stream_id, code) : 0;
    if (rv == NGHTTP3_ERR_STREAM_NOT_FOUND) {
        /* nghttp3 never saw a byte of it; still an outcome for our request. */
        req_t *r = req_of(p, stream_id);
        if (r)
            finish_req(p, r, code);
        if (!ngtcp2_is_bidi_stream(stream_id))
            ngtcp2_conn_extend_max_streams_uni(conn, 1);
        return 0;
    }
    return rv == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
}

static int stream_reset_cb(ngtcp2_conn *conn, int64_t stream_id, uint64_t final_size, uint64_t code,
                           void *user_data, void *stream_user_data)
{
    probe_t *p = user_data;
    if (p->nraw > 0 || p->ninject > 0) {
        printf("raw-reset %" PRId64 " 0x%" PRIx64 "\n", stream_id, code);
        return 0;
    }
    if (req_of(p, stream_id))
        printf("stream-reset 0x%" PRIx64 "\n", code);
    return nghttp3_conn_shutdown_stream_read(p->h3, stream_id) == 0 ? 0
                                                                    : NGTCP2_ERR_CALLBACK_FAILURE;
}

static int stop_sending_cb(ngtcp2_conn *conn, int64_t stream_id, uint64_t code, void *user_data,
                           void *stream_user_data)
{
    probe_t *p = user_data;
    if (p->nraw > 0 || p->ninject > 0) {
        printf("raw-stop %" PRId64 " 0x%" PRIx64 "\n", stream_id, code);
        raw_t *r = raw_of(p, stream_id);
        if (r != NULL)
            r->fin_sent = 1, r->off = r->len; /* ngtcp2 resets it: nothing more to write */
        return 0;
    }
    if (req_of(p, stream_id))
        printf("stop-sending 0x%" PRIx64 "\n", code);
    /* ngtcp2 answers with RESET_STREAM itself; nghttp3 must stop writing. */
    nghttp3_conn_shutdown_stream_write(p->h3, stream_id);
    return 0;
}

static int extend_max_stream_data_cb(ngtcp2_conn *conn, int64_t stream_id, uint64_t max_data,
                                     void *user_data, void *stream_user_data)
{
    probe_t *p = user_data;
    if (p->nraw > 0 || p->ninject > 0) {
        raw_t *r = raw_of(p, stream_id);
        if (r != NULL)
            r->blocked = 0;
        return 0;
    }
    return nghttp3_conn_unblock_stream(p->h3, stream_id) == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
}

/* Injection starts once the server confirmed the handshake (RFC 9001
 * §4.1.2): it has dropped its Handshake keys and reads 1-RTT only. */
static int handshake_confirmed_cb(ngtcp2_conn *conn, void *user_data)
{
    probe_t *p = user_data;
    (void)conn;
    if (p->hs_inject != NULL || p->zrtt_inject != NULL)
        printf("handshake-confirmed\n");
    if (injecting(p))
        p->done = 1;
    return 0;
}

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref)
{
    return ((probe_t *)ref->user_data)->conn;
}

/* ---- injected 1-RTT packets (--inject) ------------------------------------- */

/* ngtcp2 writes only well-formed frames, and its public API has no way to
 * send others. Once the handshake is confirmed, h3probe stops feeding
 * ngtcp2 and protects packets itself with the 1-RTT secrets GnuTLS logs
 * (RFC 9001 §5): AES-128-GCM only (tls_setup asks for nothing else), key
 * phase 0 (nobody updated keys yet), a 4-byte packet number far above
 * what ngtcp2 used. What the server answers is decrypted the same way and
 * printed frame by frame. */

typedef struct {
    gnutls_aead_cipher_hd_t aead;
    gnutls_cipher_hd_t hp; /* AES-CBC on one block with a zero IV: AES-ECB */
    uint8_t iv[12];
} pkt_keys_t;

static int expand_label(const uint8_t *secret, size_t secretlen, const char *label, uint8_t *out,
                        size_t outlen)
{
    uint8_t info[64];
    size_t ll = strlen(label);
    info[0] = (uint8_t)(outlen >> 8);
    info[1] = (uint8_t)outlen;
    info[2] = (uint8_t)(6 + ll);
    memcpy(info + 3, "tls13 ", 6);
    memcpy(info + 9, label, ll);
    info[9 + ll] = 0;
    gnutls_datum_t s = {(uint8_t *)secret, (unsigned)secretlen};
    gnutls_datum_t i = {info, (unsigned)(10 + ll)};
    return gnutls_hkdf_expand(GNUTLS_MAC_SHA256, &s, &i, out, outlen) == 0 ? 0 : -1;
}

static int keys_init(pkt_keys_t *k, const uint8_t *secret, size_t secretlen)
{
    uint8_t key[16], hp[16], zero[16] = {0};
    if (secretlen == 0 || expand_label(secret, secretlen, "quic key", key, 16) != 0 ||
        expand_label(secret, secretlen, "quic iv", k->iv, 12) != 0 ||
        expand_label(secret, secretlen, "quic hp", hp, 16) != 0)
        return -1;
    gnutls_datum_t kd = {key, 16}, hd = {hp, 16}, ivd = {zero, 16};
    if (gnutls_aead_cipher_init(&k->aead, GNUTLS_CIPHER_AES_128_GCM, &kd) != 0)
        return -1;
    return gnutls_cipher_init(&k->hp, GNUTLS_CIPHER_AES_128_CBC, &hd, &ivd) == 0 ? 0 : -1;
}

static void hp_mask(pkt_keys_t *k, const uint8_t *sample, uint8_t *mask)
{
    static const uint8_t zero[16];
    gnutls_cipher_set_iv(k->hp, (void *)zero, 16);
    gnutls_cipher_encrypt2(k->hp, sample, 16, mask, 16);
}

static void nonce_of(const pkt_keys_t *k, uint64_t pn, uint8_t *nonce)
{
    memcpy(nonce, k->iv, 12);
    for (int i = 0; i < 8; i++)
        nonce[11 - i] ^= (uint8_t)(pn >> (8 * i));
}

static int keylog_cb(gnutls_session_t s, const char *label, const gnutls_datum_t *secret)
{
    probe_t *p = ((ngtcp2_crypto_conn_ref *)gnutls_session_get_ptr(s))->user_data;
    if (secret->size > sizeof(p->tx_secret))
        return 0;
    if (strcmp(label, "CLIENT_TRAFFIC_SECRET_0") == 0) {
        memcpy(p->tx_secret, secret->data, secret->size);
        p->tx_secret_len = secret->size;
    } else if (strcmp(label, "SERVER_TRAFFIC_SECRET_0") == 0) {
        memcpy(p->rx_secret, secret->data, secret->size);
        p->rx_secret_len = secret->size;
    } else if (strcmp(label, "CLIENT_HANDSHAKE_TRAFFIC_SECRET") == 0) {
        memcpy(p->hs_secret, secret->data, secret->size);
        p->hs_secret_len = secret->size;
    } else if (strcmp(label, "CLIENT_EARLY_TRAFFIC_SECRET") == 0) {
        memcpy(p->early_secret, secret->data, secret->size);
        p->early_secret_len = secret->size;
    }
    return 0;
}

/* A long-header packet (RFC 9000 §17.2) of type |first| (0xd3: 0-RTT,
 * 0xe3: Handshake; 4-byte packet number) to |dcid|, carrying exactly
 * |frames|, protected with the keys of |secret|. Its packet number is far
 * above what ngtcp2 will use. Prints "inject-WHAT pn PN len L". */
static int long_inject(probe_t *p, uint8_t first, const uint8_t *dcid, size_t dl,
                       const uint8_t *secret, size_t secretlen, const uint8_t *frames, size_t flen,
                       const char *what)
{
    pkt_keys_t k = {0};
    uint8_t pkt[PKT_SIZE + 64], nonce[12], mask[16];
    uint64_t pn = (uint64_t)1 << 20;
    size_t n = 0, cl = p->client_cidlen;
    size_t len = 4 + flen + 16; /* the Length field: pn, payload, tag */
    if (dl == 0 || keys_init(&k, secret, secretlen) != 0 || len > PKT_SIZE - 64)
        return -1;
    pkt[n++] = first | (p->inject_rbits ? 0x0c : 0);
    pkt[n++] = 0, pkt[n++] = 0, pkt[n++] = 0, pkt[n++] = 1;
    pkt[n++] = (uint8_t)dl;
    memcpy(pkt + n, dcid, dl);
    n += dl;
    pkt[n++] = (uint8_t)cl;
    memcpy(pkt + n, p->client_scid, cl);
    n += cl;
    pkt[n++] = (uint8_t)(0x40 | len >> 8), pkt[n++] = (uint8_t)len;
    for (int i = 3; i >= 0; i--)
        pkt[n++] = (uint8_t)(pn >> (8 * i));
    size_t clen = sizeof(pkt) - n;
    nonce_of(&k, pn, nonce);
    int rv =
        gnutls_aead_cipher_encrypt(k.aead, nonce, 12, pkt, n, 16, frames, flen, pkt + n, &clen);
    if (rv == 0) {
        hp_mask(&k, pkt + n, mask);
        pkt[0] ^= mask[0] & 0x0f;
        for (int i = 0; i < 4; i++)
            pkt[n - 4 + i] ^= mask[1 + i];
        printf("inject-%s pn %" PRIu64 " len %zu\n", what, pn, n + clen);
        if (send(p->fd, pkt, n + clen, 0) == -1)
            perror("h3probe: send");
    }
    gnutls_aead_cipher_deinit(k.aead);
    gnutls_cipher_deinit(k.hp);
    return rv == 0 ? 0 : -1;
}

/* --inject-hs: a Handshake packet (RFC 9000 §17.2.4), sent once the client
 * has its Handshake keys and before ngtcp2 sends the client's Finished
 * (the server drops its Handshake keys once the handshake completes).
 * What the server answers, ngtcp2 reads as usual ("conn-close", or
 * "handshake-confirmed" when the handshake completes). */
static int hs_inject_send(probe_t *p)
{
    p->hs_sent = 1;
    return long_inject(p, 0xe3, p->server_cid, p->server_cidlen, p->hs_secret, p->hs_secret_len,
                       p->hs_inject, p->hs_inject_len, "hs");
}

/* --inject-0rtt: a 0-RTT packet (RFC 9000 §17.2.3) right after the first
 * Initial of a resumed session, to the DCID the client chose. */
static int zrtt_inject_send(probe_t *p)
{
    if (p->early_secret_len == 0) {
        printf("no-0rtt\n"); /* no ticket allowing early data, or not resumed */
        return -1;
    }
    return long_inject(p, 0xd3, p->client_dcid, p->client_dcidlen, p->early_secret,
                       p->early_secret_len, p->zrtt_inject, p->zrtt_inject_len, "0rtt");
}

/* --session-file, saving: the ticket and the 0-RTT transport parameters
 * as two lines of hex, once a NewSessionTicket arrives. */
static int save_ticket(gnutls_session_t s, unsigned htype, unsigned when, unsigned incoming,
                       const gnutls_datum_t *msg)
{
    probe_t *p = ((ngtcp2_crypto_conn_ref *)gnutls_session_get_ptr(s))->user_data;
    gnutls_datum_t d;
    uint8_t tp[512];
    (void)when, (void)incoming, (void)msg;
    if (htype != GNUTLS_HANDSHAKE_NEW_SESSION_TICKET || gnutls_session_get_data2(s, &d) != 0)
        return 0;
    ngtcp2_ssize tplen = ngtcp2_conn_encode_0rtt_transport_params(p->conn, tp, sizeof(tp));
    FILE *f = tplen > 0 ? fopen(p->session_file, "w") : NULL;
    if (f != NULL) {
        for (unsigned i = 0; i < d.size; i++)
            fprintf(f, "%02x", d.data[i]);
        fputc('\n', f);
        for (ngtcp2_ssize i = 0; i < tplen; i++)
            fprintf(f, "%02x", tp[i]);
        fputc('\n', f);
        if (fclose(f) == 0)
            printf("session-saved\n");
    }
    gnutls_free(d.data);
    return 0;
}

/* One line of hex from |f| into |out|; returns the bytes read. */
static size_t unhex_line(FILE *f, uint8_t *out, size_t cap)
{
    char *line = NULL;
    size_t lcap = 0, n = 0;
    ssize_t len = getline(&line, &lcap, f);
    unsigned v;
    while (len > 0 && n < cap && (ssize_t)(2 * n + 2) <= len &&
           sscanf(line + 2 * n, "%2x", &v) == 1)
        out[n++] = (uint8_t)v;
    free(line);
    return n;
}

/* --session-file, resuming: reads what save_ticket wrote. Returns 0, 1
 * when there is no file yet, -1 when it is unreadable. */
static int load_ticket(probe_t *p)
{
    static uint8_t data[8192];
    FILE *f = fopen(p->session_file, "r");
    if (f == NULL)
        return 1;
    size_t n = unhex_line(f, data, sizeof(data));
    p->tp0_len = unhex_line(f, p->tp0, sizeof(p->tp0));
    fclose(f);
    if (n == 0 || p->tp0_len == 0)
        return -1;
    p->session.data = data;
    p->session.size = (unsigned)n;
    return 0;
}

static int get_varint(const uint8_t *b, size_t len, size_t *off, uint64_t *v)
{
    if (*off >= len)
        return -1;
    size_t n = (size_t)1 << (b[*off] >> 6);
    if (len - *off < n)
        return -1;
    *v = b[*off] & 0x3f;
    for (size_t i = 1; i < n; i++)
        *v = (*v << 8) | b[*off + i];
    *off += n;
    return 0;
}

/* Prints what a decrypted packet carries: "rx pn N frames T,T,...", then
 * "acked PN" for each injected packet an ACK frame covers and
 * "close 0x1c|0x1d 0xCODE 0xFRAME MS" for a CONNECTION_CLOSE. */
static int print_frames(probe_t *p, uint64_t pn, const uint8_t *f, size_t len)
{
    size_t off = 0;
    int closed = 0;
    printf("rx pn %" PRIu64 " frames", pn);
    char more[512] = "";
    size_t ml = 0;
    while (off < len) {
        uint64_t t, a, b = 0, c, d;
        if (get_varint(f, len, &off, &t) != 0)
            break;
        if (t != 0x00) /* PADDING: not worth a word */
            printf(" %" PRIx64, t);
        int bad = 0;
        switch (t) {
        case 0x00:
        case 0x01:
        case 0x1e:
            break;
        case 0x02:
        case 0x03: {
            bad = get_varint(f, len, &off, &a) || get_varint(f, len, &off, &b) ||
                  get_varint(f, len, &off, &c) || get_varint(f, len, &off, &d) || d > a;
            uint64_t hi = a, lo = bad ? 0 : a - d;
            for (uint64_t r = 0; !bad; r++) {
                for (int i = 0; i < p->ninject; i++)
                    if (p->inject_pn[i] >= lo && p->inject_pn[i] <= hi && ml < sizeof(more) - 40)
                        ml += (size_t)snprintf(more + ml, sizeof(more) - ml, "acked %" PRIu64 "\n",
                                               p->inject_pn[i]);
                if (r == c)
                    break;
                if (get_varint(f, len, &off, &a) || get_varint(f, len, &off, &b) || a + 2 > lo ||
                    b > lo - a - 2) {
                    bad = 1;
                    break;
                }
                hi = lo - a - 2;
                lo = hi - b;
            }
            if (t == 0x03)
                bad = bad || get_varint(f, len, &off, &a) || get_varint(f, len, &off, &a) ||
                      get_varint(f, len, &off, &a);
            break;
        }
        case 0x04:
            bad = get_varint(f, len, &off, &a) || get_varint(f, len, &off, &a) ||
                  get_varint(f, len, &off, &a);
            break;
        case 0x05:
        case 0x11:
        case 0x15:
            bad = get_varint(f, len, &off, &a) || get_varint(f, len, &off, &a);
            break;
        case 0x06:
            bad = get_varint(f, len, &off, &a) || get_varint(f, len, &off, &b) || b > len - off;
            off += bad ? 0 : (size_t)b;
            break;
        case 0x07:
            bad = get_varint(f, len, &off, &b) || b > len - off;
            off += bad ? 0 : (size_t)b;
            break;
        case 0x10:
        case 0x12:
        case 0x13:
        case 0x14:
        case 0x16:
        case 0x17:
        case 0x19:
            bad = get_varint(f, len, &off, &a);
            break;
        case 0x18:
            bad = get_varint(f, len, &off, &a) || get_varint(f, len, &off, &a) || off >= len ||
                  (size_t)f[off] + 17 > len - off;
            off += bad ? 0 : 1 + (size_t)f[off] + 16;
            break;
        case 0x1a:
        case 0x1b:
            bad = len - off < 8;
            off += 8;
            break;
        case 0x1c:
        case 0x1d:
            bad = get_varint(f, len, &off, &a) || (t == 0x1c && get_varint(f, len, &off, &b)) ||
                  get_varint(f, len, &off, &c) || c > len - off;
            if (!bad) {
                off += (size_t)c;
                closed = 1;
                ml += (size_t)snprintf(
                    more + ml, sizeof(more) - ml,
                    "close 0x%" PRIx64 " 0x%" PRIx64 " 0x%" PRIx64 " %" PRIu64 "\n", t, a,
                    t == 0x1c ? b : 0, (now_ns() - p->inject_last_ns) / 1000000);
            }
            break;
        default:
            if (t >= 0x08 && t <= 0x0f) {
                bad = get_varint(f, len, &off, &a) || ((t & 4) && get_varint(f, len, &off, &a));
                if (!bad && (t & 2))
                    bad = get_varint(f, len, &off, &b) || b > len - off;
                else
                    b = len - off;
                off += bad ? 0 : (size_t)b;
            } else {
                bad = 1;
            }
        }
        if (bad) {
            printf(" ?");
            break;
        }
    }
    printf("\n%s", more);
    return closed;
}

/* One datagram from the server: prints it decoded, or
 * "rx-undecryptable LEN 0xFB TAIL" with its first and last 16 bytes (a stateless reset
 * ends in its token). Returns 1 when it carried a CONNECTION_CLOSE. */
static int inject_read(probe_t *p, pkt_keys_t *rx, uint8_t *d, size_t n)
{
    size_t pn_off = 1 + p->client_cidlen;
    uint8_t mask[16], nonce[12], plain[65536];
    if (!(d[0] & 0x80) && n >= pn_off + 4 + 16) {
        uint8_t first = d[0], hdr[64];
        hp_mask(rx, d + pn_off + 4, mask);
        first ^= mask[0] & 0x1f;
        size_t pnlen = (first & 3) + 1;
        uint64_t trunc = 0;
        memcpy(hdr, d, pn_off);
        hdr[0] = first;
        for (size_t i = 0; i < pnlen; i++) {
            hdr[pn_off + i] = d[pn_off + i] ^ mask[1 + i];
            trunc = (trunc << 8) | hdr[pn_off + i];
        }
        /* RFC 9000 §A.3 with the largest packet number decrypted so far */
        uint64_t win = (uint64_t)1 << (8 * pnlen), expected = p->rx_largest + 1;
        uint64_t pn = (expected & ~(win - 1)) | trunc;
        if (pn + win / 2 <= expected)
            pn += win;
        else if (pn > expected + win / 2 && pn >= win)
            pn -= win;
        nonce_of(rx, pn, nonce);
        size_t plen = sizeof(plain);
        size_t hl = pn_off + pnlen;
        if (!(first & 0x04) && gnutls_aead_cipher_decrypt(rx->aead, nonce, 12, hdr, hl, 16, d + hl,
                                                          n - hl, plain, &plen) == 0) {
            if (pn > p->rx_largest)
                p->rx_largest = pn;
            return print_frames(p, pn, plain, plen);
        }
    }
    printf("rx-undecryptable %zu 0x%02x ", n, d[0]);
    for (size_t i = n >= 16 ? n - 16 : 0; i < n; i++)
        printf("%02x", d[i]);
    printf("\n");
    return 0;
}

/* Reads for |ms| milliseconds, or until a CONNECTION_CLOSE when |stop|. */
static int inject_collect(probe_t *p, pkt_keys_t *rx, int ms, int stop)
{
    uint64_t end = now_ns() + (uint64_t)ms * 1000000;
    uint8_t buf[65536];
    int closed = 0;
    for (uint64_t now; (now = now_ns()) < end && !(closed && stop);) {
        struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)((end - now + 999999) / 1000000)) <= 0)
            continue;
        ssize_t n = recv(p->fd, buf, sizeof(buf), 0);
        if (n > 0)
            closed |= inject_read(p, rx, buf, (size_t)n);
    }
    return closed;
}

static int inject_run(probe_t *p)
{
    pkt_keys_t tx = {0}, rx = {0};
    const ngtcp2_transport_params *tp = ngtcp2_conn_get_remote_transport_params(p->conn);
    if (p->server_cidlen == 0 || tp == NULL || keys_init(&tx, p->tx_secret, p->tx_secret_len) ||
        keys_init(&rx, p->rx_secret, p->rx_secret_len)) {
        fprintf(stderr, "h3probe: no 1-RTT secrets or server CID to inject with\n");
        return 1;
    }
    printf("server-tp max_data %" PRIu64 " bidi_remote %" PRIu64 " uni %" PRIu64
           " streams_bidi %" PRIu64 " streams_uni %" PRIu64 "\n",
           tp->initial_max_data, tp->initial_max_stream_data_bidi_remote,
           tp->initial_max_stream_data_uni, tp->initial_max_streams_bidi,
           tp->initial_max_streams_uni);
    printf("server-srt ");
    for (size_t i = 0; i < sizeof(tp->stateless_reset_token); i++)
        printf("%02x", tp->stateless_reset_token[i]);
    printf("\n");
    int closed = 0;
    for (int i = 0; i < p->ninject; i++) {
        if (i > 0 && p->inject_gap_ms > 0)
            closed |= inject_collect(p, &rx, p->inject_gap_ms, 0);
        uint8_t pkt[PKT_SIZE + 64], nonce[12], mask[16];
        size_t hl = 1 + p->server_cidlen + 4, clen = sizeof(pkt) - hl;
        uint64_t pn = p->inject_pn[i] = ((uint64_t)1 << 20) + (uint64_t)i;
        if (hl + p->inject_len[i] + 16 > sizeof(pkt))
            return 1;
        pkt[0] = 0x43 | (p->inject_rbits ? 0x18 : 0); /* short header, 4-byte packet number */
        memcpy(pkt + 1, p->server_cid, p->server_cidlen);
        for (int k = 0; k < 4; k++)
            pkt[hl - 1 - k] = (uint8_t)(pn >> (8 * k));
        nonce_of(&tx, pn, nonce);
        if (gnutls_aead_cipher_encrypt(tx.aead, nonce, 12, pkt, hl, 16, p->inject[i],
                                       p->inject_len[i], pkt + hl, &clen) != 0)
            return 1;
        hp_mask(&tx, pkt + hl, mask); /* the sample starts 4 bytes after the pn offset */
        pkt[0] ^= mask[0] & 0x1f;
        for (int k = 0; k < 4; k++)
            pkt[hl - 4 + k] ^= mask[1 + k];
        printf("inject %d pn %" PRIu64 " len %zu\n", i + 1, pn, hl + clen);
        p->inject_last_ns = now_ns();
        if (send(p->fd, pkt, hl + clen, 0) == -1)
            perror("h3probe: send");
    }
    closed |= inject_collect(p, &rx, p->collect_ms, 1);
    gnutls_aead_cipher_deinit(tx.aead);
    gnutls_aead_cipher_deinit(rx.aead);
    gnutls_cipher_deinit(tx.hp);
    gnutls_cipher_deinit(rx.hp);
    if (!closed)
        printf("no-close\n");
    return 0;
}

/* ---- set-up ---------------------------------------------------------------- */

static int tls_setup(probe_t *p, const char *sni)
{
    static const char prio[] = "%DISABLE_TLS13_COMPAT_MODE:NORMAL:-VERS-ALL:+VERS-TLS1.3";
    /* --inject protects its packets itself, with AES-128-GCM only. */
    static const char prio_inject[] = "%DISABLE_TLS13_COMPAT_MODE:NORMAL:-VERS-ALL:+VERS-TLS1.3:"
                                      "-CIPHER-ALL:+AES-128-GCM";
    gnutls_datum_t alpn = {(unsigned char *)"h3", 2};

    /* Early data (0-RTT) whenever resuming: QUIC carries it, not TLS. */
    unsigned flags = p->session_file ? GNUTLS_ENABLE_EARLY_DATA | GNUTLS_NO_END_OF_EARLY_DATA : 0;

    if (gnutls_certificate_allocate_credentials(&p->cred) != 0 ||
        gnutls_init(&p->tls, GNUTLS_CLIENT | flags) != 0 ||
        gnutls_priority_set_direct(p->tls, injecting(p) ? prio_inject : prio, NULL) != 0 ||
        ngtcp2_crypto_gnutls_configure_client_session(p->tls) != 0 ||
        gnutls_credentials_set(p->tls, GNUTLS_CRD_CERTIFICATE, p->cred) != 0 ||
        gnutls_alpn_set_protocols(p->tls, &alpn, 1, GNUTLS_ALPN_MANDATORY) != 0 ||
        gnutls_server_name_set(p->tls, GNUTLS_NAME_DNS, sni, strlen(sni)) != 0)
        return -1;
    /* No certificate check: nothing asks gnutls to verify the peer. */
    p->conn_ref.get_conn = get_conn;
    p->conn_ref.user_data = p;
    gnutls_session_set_ptr(p->tls, &p->conn_ref);
    if (injecting(p))
        gnutls_session_set_keylog_function(p->tls, keylog_cb);
    if (p->session_file != NULL) {
        int rv = load_ticket(p);
        if (rv < 0 ||
            (rv == 0 && gnutls_session_set_data(p->tls, p->session.data, p->session.size) != 0)) {
            fprintf(stderr, "h3probe: %s: no usable session\n", p->session_file);
            return -1;
        }
        if (rv == 1)
            gnutls_handshake_set_hook_function(p->tls, GNUTLS_HANDSHAKE_NEW_SESSION_TICKET,
                                               GNUTLS_HOOK_POST, save_ticket);
    }
    return 0;
}

static int quic_setup(probe_t *p)
{
    static const ngtcp2_callbacks cb = {
        .client_initial = ngtcp2_crypto_client_initial_cb,
        .recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb,
        .handshake_completed = handshake_completed_cb,
        .encrypt = ngtcp2_crypto_encrypt_cb,
        .decrypt = ngtcp2_crypto_decrypt_cb,
        .hp_mask = ngtcp2_crypto_hp_mask_cb,
        .recv_stream_data = recv_stream_data_cb,
        .acked_stream_data_offset = acked_cb,
        .stream_close = stream_close_cb,
        .recv_retry = recv_retry_cb,
        .recv_new_token = recv_new_token_cb,
        .rand = rand_cb,
        .get_new_connection_id = new_cid_cb,
        .update_key = ngtcp2_crypto_update_key_cb,
        .stream_reset = stream_reset_cb,
        .extend_max_stream_data = extend_max_stream_data_cb,
        .delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb,
        .delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb,
        .get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb,
        .stream_stop_sending = stop_sending_cb,
        .version_negotiation = ngtcp2_crypto_version_negotiation_cb,
        .handshake_confirmed = handshake_confirmed_cb,
    };
    ngtcp2_path path = {{(struct sockaddr *)&p->local, p->local_len},
                        {(struct sockaddr *)&p->remote, p->remote_len},
                        NULL};
    ngtcp2_cid dcid = {.datalen = 18}, scid = {.datalen = 16};
    ngtcp2_settings settings;
    ngtcp2_transport_params params;

    rand_cb(dcid.data, dcid.datalen, NULL);
    rand_cb(scid.data, scid.datalen, NULL);
    p->client_cidlen = scid.datalen; /* new_cid_cb issues CIDs of this length too */
    memcpy(p->client_scid, scid.data, scid.datalen);
    memcpy(p->client_dcid, dcid.data, dcid.datalen);
    p->client_dcidlen = dcid.datalen;
    ngtcp2_settings_default(&settings);
    settings.initial_ts = now_ns();
    settings.max_tx_udp_payload_size = PKT_SIZE;
    if (p->token_len > 0) {
        settings.token = p->token;
        settings.tokenlen = p->token_len;
    }
    if (p->retry_wait_secs > 0) /* the wait must not count as a handshake timeout */
        settings.handshake_timeout = UINT64_MAX;
    ngtcp2_transport_params_default(&params);
    params.initial_max_stream_data_bidi_local = 1024 * 1024;
    params.initial_max_stream_data_uni = 256 * 1024;
    params.initial_max_data = 16 * 1024 * 1024;
    params.initial_max_streams_uni = 3;
    params.max_idle_timeout = 30 * NGTCP2_SECONDS;
    int rv = ngtcp2_conn_client_new(&p->conn, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, &cb,
                                    &settings, &params, NULL, p);
    if (rv != 0) {
        fprintf(stderr, "h3probe: ngtcp2_conn_client_new: %s\n", ngtcp2_strerror(rv));
        return -1;
    }
    ngtcp2_conn_set_tls_native_handle(p->conn, p->tls);
    if (p->tp0_len > 0 &&
        ngtcp2_conn_decode_and_set_0rtt_transport_params(p->conn, p->tp0, p->tp0_len) != 0) {
        fprintf(stderr, "h3probe: the saved 0-RTT transport parameters do not decode\n");
        return -1;
    }
    if (p->stall) /* a stalled client is still alive: it answers and PINGs */
        ngtcp2_conn_set_keep_alive_timeout(p->conn, NGTCP2_SECONDS);
    return 0;
}

static int sock_setup(probe_t *p)
{
    struct addrinfo hints = {.ai_socktype = SOCK_DGRAM}, *res;
    int rv = getaddrinfo(p->host, p->port, &hints, &res);
    if (rv != 0) {
        fprintf(stderr, "h3probe: %s: %s\n", p->host, gai_strerror(rv));
        return -1;
    }
    p->fd = socket(res->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (p->fd != -1 && connect(p->fd, res->ai_addr, res->ai_addrlen) == -1) {
        close(p->fd);
        p->fd = -1;
    }
    if (p->fd != -1) {
        memcpy(&p->remote, res->ai_addr, res->ai_addrlen);
        p->remote_len = res->ai_addrlen;
        p->local_len = sizeof(p->local);
        if (getsockname(p->fd, (struct sockaddr *)&p->local, &p->local_len) == -1) {
            close(p->fd);
            p->fd = -1;
        }
    }
    freeaddrinfo(res);
    if (p->fd == -1)
        perror("h3probe: socket");
    return p->fd == -1 ? -1 : 0;
}

/* ---- I/O loop --------------------------------------------------------------- */

/* Sends everything ngtcp2 and nghttp3 have to send. */
static int flush(probe_t *p)
{
    uint8_t buf[PKT_SIZE];
    nghttp3_vec vec[16];
    ngtcp2_path_storage ps;
    ngtcp2_pkt_info pi;

    ngtcp2_path_storage_zero(&ps);
    for (;;) {
        int64_t sid = -1;
        int fin = 0;
        nghttp3_ssize nvec = 0;
        raw_t *r = NULL;
        if (p->h3 && ngtcp2_conn_get_max_data_left(p->conn)) {
            nvec = nghttp3_conn_writev_stream(p->h3, &sid, &fin, vec, 16);
            if (nvec < 0) {
                fprintf(stderr, "h3probe: writev_stream: %s\n", nghttp3_strerror((int)nvec));
                return -1;
            }
        }
        for (int i = 0; i < p->nraw && r == NULL; i++) {
            raw_t *c = &p->raw[i];
            if (c->sid >= 0 && !c->blocked && !c->fin_sent && (c->off < c->len || c->fin))
                r = c;
        }
        if (r != NULL) {
            sid = r->sid;
            fin = r->fin;
            nvec = r->off < r->len ? 1 : 0;
            vec[0].base = r->data + r->off;
            vec[0].len = r->len - r->off;
        }
        uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE | (fin ? NGTCP2_WRITE_STREAM_FLAG_FIN : 0);
        ngtcp2_ssize ndata = -1;
        ngtcp2_ssize n =
            ngtcp2_conn_writev_stream(p->conn, &ps.path, &pi, buf, sizeof(buf), &ndata, flags, sid,
                                      (const ngtcp2_vec *)vec, (size_t)nvec, now_ns());
        if (ndata > 0)
            p->stream_sent += (uint64_t)ndata;
        if (r != NULL) {
            if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED) {
                r->blocked = 1;
                continue;
            }
            if (n == NGTCP2_ERR_STREAM_SHUT_WR || n == NGTCP2_ERR_STREAM_NOT_FOUND) {
                r->fin_sent = 1, r->off = r->len;
                continue;
            }
            if (ndata >= 0) {
                r->off += (size_t)ndata;
                if (r->off == r->len) /* all of it (and the FIN when asked) went out */
                    r->fin_sent = 1;
            }
        } else {
            if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED) {
                nghttp3_conn_block_stream(p->h3, sid);
                continue;
            }
            if (n == NGTCP2_ERR_STREAM_SHUT_WR) {
                nghttp3_conn_shutdown_stream_write(p->h3, sid);
                continue;
            }
            if (ndata >= 0 && p->h3 &&
                nghttp3_conn_add_write_offset(p->h3, sid, (size_t)ndata) != 0)
                return -1;
        }
        if (n == NGTCP2_ERR_WRITE_MORE)
            continue;
        if (n < 0) {
            fprintf(stderr, "h3probe: writev_stream: %s\n", ngtcp2_strerror((int)n));
            return -1;
        }
        if (n == 0)
            return 0;
        if (send(p->fd, buf, (size_t)n, 0) == -1 && errno != EAGAIN) {
            perror("h3probe: send");
            return -1;
        }
    }
}

/* Reads every datagram waiting. Returns 0, 1 when the server closed the
 * connection, -1 on failure. */
static int drain(probe_t *p)
{
    uint8_t buf[65536];
    ngtcp2_path path = {{(struct sockaddr *)&p->local, p->local_len},
                        {(struct sockaddr *)&p->remote, p->remote_len},
                        NULL};
    ngtcp2_pkt_info pi = {0};

    for (;;) {
        ssize_t n = recv(p->fd, buf, sizeof(buf), 0);
        if (n == -1) {
            if (errno == EAGAIN || errno == EINTR)
                return 0;
            perror("h3probe: recv"); /* ECONNREFUSED: nobody listens */
            return -1;
        }
        if (p->server_cidlen == 0 && n > 7 && (buf[0] & 0x80) &&
            buf[1] | buf[2] | buf[3] | buf[4]) {
            size_t dl = buf[5], sl = 6 + dl < (size_t)n ? buf[6 + dl] : 0; /* long header */
            if (sl > 0 && sl <= NGTCP2_MAX_CIDLEN && 7 + dl + sl <= (size_t)n) {
                memcpy(p->server_cid, buf + 7 + dl, sl);
                p->server_cidlen = sl;
            }
        }
        int rv = ngtcp2_conn_read_pkt(p->conn, &path, &pi, buf, (size_t)n, now_ns());
        if (ngtcp2_conn_get_max_data_left(p->conn) > p->left_peak)
            p->left_peak = ngtcp2_conn_get_max_data_left(p->conn);
        if (rv == NGTCP2_ERR_DRAINING) {
            const ngtcp2_ccerr *cc = ngtcp2_conn_get_ccerr(p->conn);
            printf("conn-close 0x%" PRIx64 " %s\n", cc->error_code,
                   cc->type == NGTCP2_CCERR_TYPE_APPLICATION ? "app" : "transport");
            return 1;
        }
        if (rv != 0) {
            fprintf(stderr, "h3probe: read_pkt: %s\n", ngtcp2_strerror(rv));
            /* Keep an H3 error a callback chose; else say what ngtcp2 saw. */
            if (p->ccerr.error_code == NGHTTP3_H3_NO_ERROR)
                ngtcp2_ccerr_set_liberr(&p->ccerr, rv, NULL, 0);
            return -1;
        }
    }
}

static void send_close(probe_t *p)
{
    uint8_t buf[PKT_SIZE];
    ngtcp2_path_storage ps;
    ngtcp2_pkt_info pi;

    if (ngtcp2_conn_in_closing_period(p->conn) || ngtcp2_conn_in_draining_period(p->conn))
        return;
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_ssize n = ngtcp2_conn_write_connection_close(p->conn, &ps.path, &pi, buf, sizeof(buf),
                                                        &p->ccerr, now_ns());
    if (n > 0 && send(p->fd, buf, (size_t)n, 0) == -1)
        perror("h3probe: send");
}

/* Runs until every request has an outcome. Returns the exit code. */
static int run(probe_t *p)
{
    uint64_t deadline = now_ns() + (uint64_t)p->timeout_secs * NGTCP2_SECONDS;
    if (p->reset_ms > 0)
        p->reset_at = now_ns() + (uint64_t)p->reset_ms * 1000000;
    if (p->body_delay_ms > 0)
        p->body_at = now_ns() + (uint64_t)p->body_delay_ms * 1000000;

    if (flush(p) != 0)
        return 1;
    if (p->zrtt_inject != NULL && zrtt_inject_send(p) != 0)
        return 1;
    while (!p->done) {
        uint64_t now = now_ns(), expiry = ngtcp2_conn_get_expiry(p->conn);
        if (now >= deadline) {
            for (int i = 0; p->stall && i < p->nreq; i++) {
                if (!p->req[i].closed)
                    printf("received %" PRIu64 "\n", p->req[i].body_len);
            }
            printf("timeout\n");
            send_close(p);
            return 1;
        }
        uint64_t until = expiry < deadline ? expiry : deadline;
        if (p->reset_at && p->reset_at < until)
            until = p->reset_at;
        if (p->body_at && p->body_at < until)
            until = p->body_at;
        int ms = until <= now ? 0 : (int)((until - now + 999999) / 1000000);
        struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
        if (poll(&pfd, 1, ms) == -1 && errno != EINTR) {
            perror("h3probe: poll");
            return 1;
        }
        int rv = pfd.revents ? drain(p) : 0;
        if (rv == 1) /* closed by the server: an outcome if a request was sent */
            return p->nreq > 0 || p->nraw > 0 ? 0 : 1;
        if (rv < 0) {
            send_close(p);
            return 1;
        }
        if (now_ns() >= ngtcp2_conn_get_expiry(p->conn)) {
            rv = ngtcp2_conn_handle_expiry(p->conn, now_ns());
            if (rv != 0) {
                fprintf(stderr, "h3probe: %s\n", ngtcp2_strerror(rv));
                return 1;
            }
        }
        if (p->reset_at && now_ns() >= p->reset_at && p->req[0].stream_id >= 0) {
            /* The client gives up on its request (RFC 9114 §4.1.2). */
            p->reset_at = 0;
            printf("client-reset\n");
#if NGTCP2_VERSION_NUM >= 0x010000
            ngtcp2_conn_shutdown_stream_write(p->conn, 0, p->req[0].stream_id, 0x10c);
#else
            ngtcp2_conn_shutdown_stream_write(p->conn, p->req[0].stream_id, 0x10c);
#endif
        }
        if (p->body_at && now_ns() >= p->body_at && p->req[0].stream_id >= 0) {
            /* --body-delay ran out: the tunnel's body goes now. */
            p->body_at = 0;
            nghttp3_conn_resume_stream(p->h3, p->req[0].stream_id);
            if (flush(p) != 0)
                return 1;
        }
        if (p->want_next) {
            p->want_next = 0;
            if (submit_also_get(p) != 0)
                return 1;
        }
        if (p->got_retry && p->retry_wait_secs > 0) {
            /* Nothing has been sent since the Retry: the Initial carrying
             * its token goes out only after the wait. */
            p->got_retry = 0;
            sleep((unsigned)p->retry_wait_secs);
        }
        if (p->hs_inject && !p->hs_sent && p->hs_secret_len > 0 && hs_inject_send(p) != 0) {
            fprintf(stderr, "h3probe: cannot inject the Handshake packet\n");
            return 1;
        }
        if (flush(p) != 0) {
            send_close(p);
            return 1;
        }
    }
    if (p->ninject > 0)
        return inject_run(p);
    send_close(p);
    return 0;
}

/* ---- command line ------------------------------------------------------------ */

static void usage(void)
{
    fprintf(stderr, "usage: h3probe [--sni NAME] HOST PORT -H 'name: value' ... "
                    "[-d FILE | --body STRING] [-o FILE] [--also-get PATH]\n"
                    "               [--timeout SECS] [--print-cert-sha256]\n"
                    "               [--token HEX] [--new-token-file FILE] [--print-retry]"
                    " [--retry-wait SECS] [--reset-ms MS] [--trailer 'name: value']\n"
                    "               [--repeat N] [--stall] [--half-close [--body-delay MS]]\n"
                    "       h3probe HOST PORT (--uni HEX[!] | --bidi HEX[-]) ...   raw streams\n"
                    "       h3probe HOST PORT --inject HEX ... [--inject-rbits] [--inject-gap MS]"
                    " [--collect MS]   raw 1-RTT packets\n"
                    "       h3probe HOST PORT --inject-hs HEX [--inject-rbits]   a raw Handshake"
                    " packet\n"
                    "       h3probe HOST PORT --session-file FILE [--inject-0rtt HEX]   save a"
                    " ticket, or resume with it\n"
                    "  -H fields go out verbatim, in order; the separator is ': ' (or ':'"
                    " when no space follows)\n");
}

/* Splits "name: value" at the first ':' after the first byte (so ":path: /"
 * is the pseudo-header :path). */
static int add_field(probe_t *p, char *arg)
{
    char *colon = arg[0] ? strchr(arg + 1, ':') : NULL;
    if (colon == NULL || p->nfields == MAX_FIELDS)
        return -1;
    *colon = '\0';
    char *value = colon[1] == ' ' ? colon + 2 : colon + 1;
    p->fields[p->nfields++] = nv_of(arg, value);
    if (strcmp(arg, ":authority") == 0 && p->authority[0] == '\0')
        snprintf(p->authority, sizeof(p->authority), "%s", value);
    return 0;
}

static int read_file(probe_t *p, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    p->body = p->body_buf = malloc(MAX_BODY);
    size_t n = p->body ? fread(p->body, 1, MAX_BODY, f) : 0;
    int bad = p->body == NULL || ferror(f) || !feof(f);
    fclose(f);
    if (bad) {
        fprintf(stderr, "h3probe: %s: unreadable or over %d bytes\n", path, MAX_BODY);
        return -1;
    }
    p->body_len = n;
    return 0;
}

static int parse_hex(probe_t *p, const char *hex)
{
    size_t n = strlen(hex);
    if (n == 0 || n % 2 != 0 || n / 2 > sizeof(p->token))
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return -1;
        p->token[i] = (uint8_t)v;
    }
    p->token_len = n / 2;
    return 0;
}

/* --uni HEX[!] / --bidi HEX[-]: a raw stream and its bytes. */
static int add_raw(probe_t *p, int bidi, const char *spec)
{
    size_t n = strlen(spec);
    if (p->nraw == MAX_RAW)
        return -1;
    raw_t *r = &p->raw[p->nraw];
    r->bidi = bidi;
    r->fin = bidi;
    r->sid = -1;
    if (n > 0 && spec[n - 1] == (bidi ? '-' : '!')) {
        r->fin = !bidi;
        n--;
    }
    if (n % 2 != 0 || (r->data = malloc(n / 2 + 1)) == NULL)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(spec + 2 * i, "%2x", &v) != 1)
            return -1;
        r->data[i] = (uint8_t)v;
    }
    r->len = n / 2;
    p->nraw++;
    return 0;
}

/* --bidi-file FILE: a raw request stream whose bytes are FILE's (for
 * streams too long for a command line); ended like --bidi. */
static int add_raw_file(probe_t *p, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL || p->nraw == MAX_RAW) {
        if (f)
            fclose(f);
        return -1;
    }
    raw_t *r = &p->raw[p->nraw];
    r->bidi = r->fin = 1;
    r->sid = -1;
    r->len = 0;
    r->data = malloc(MAX_BODY);
    size_t n;
    while (r->data && r->len < MAX_BODY &&
           (n = fread(r->data + r->len, 1, MAX_BODY - r->len, f)) > 0)
        r->len += n;
    fclose(f);
    if (r->data == NULL)
        return -1;
    p->nraw++;
    return 0;
}

/* --inject HEX: the frames of one 1-RTT packet ("" is a packet without
 * any). */
static int add_inject(probe_t *p, const char *hex)
{
    size_t n = strlen(hex);
    if (p->ninject == MAX_INJECT || n % 2 != 0 || n / 2 > PKT_SIZE - 64 ||
        (p->inject[p->ninject] = malloc(n / 2 + 1)) == NULL)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return -1;
        p->inject[p->ninject][i] = (uint8_t)v;
    }
    p->inject_len[p->ninject++] = n / 2;
    return 0;
}

static int parse_args(probe_t *p, int argc, char **argv)
{
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_val = i + 1 < argc;
        if (strcmp(a, "-H") == 0 && has_val) {
            if (add_field(p, argv[++i]) != 0)
                return -1;
        } else if (strcmp(a, "-d") == 0 && has_val) {
            if (read_file(p, argv[++i]) != 0)
                return -1;
        } else if (strcmp(a, "--body") == 0 && has_val) {
            p->body = (uint8_t *)argv[++i];
            p->body_len = strlen(argv[i]);
        } else if (strcmp(a, "-o") == 0 && has_val) {
            if ((p->out = fopen(argv[++i], "wb")) == NULL) {
                perror(argv[i]);
                return -1;
            }
        } else if (strcmp(a, "--sni") == 0 && has_val) {
            p->sni = argv[++i];
        } else if (strcmp(a, "--also-get") == 0 && has_val) {
            p->also_get = argv[++i];
        } else if (strcmp(a, "--print-cert-sha256") == 0) {
            p->print_cert = 1;
        } else if (strcmp(a, "--timeout") == 0 && has_val) {
            p->timeout_secs = atoi(argv[++i]);
        } else if (strcmp(a, "--token") == 0 && has_val) {
            if (parse_hex(p, argv[++i]) != 0)
                return -1;
        } else if (strcmp(a, "--new-token-file") == 0 && has_val) {
            p->new_token_file = argv[++i];
        } else if (strcmp(a, "--trailer") == 0 && has_val && p->ntrailer < 8) {
            p->trailer[p->ntrailer++] = argv[++i];
        } else if (strcmp(a, "--reset-ms") == 0 && has_val) {
            p->reset_ms = atoi(argv[++i]);
        } else if (strcmp(a, "--repeat") == 0 && has_val) {
            int n = atoi(argv[++i]);
            if (p->nfields == 0 || n < 0 || p->nfields + (size_t)n > MAX_FIELDS)
                return -1;
            for (int k = 0; k < n; k++, p->nfields++)
                p->fields[p->nfields] = p->fields[p->nfields - 1];
        } else if (strcmp(a, "--stall") == 0) {
            p->stall = 1;
        } else if (strcmp(a, "--half-close") == 0) {
            p->half_close = 1;
        } else if (strcmp(a, "--body-delay") == 0 && has_val) {
            p->body_delay_ms = atoi(argv[++i]);
        } else if (strcmp(a, "--print-retry") == 0) {
            p->print_retry = 1;
        } else if (strcmp(a, "--retry-wait") == 0 && has_val) {
            p->retry_wait_secs = atoi(argv[++i]);
        } else if (strcmp(a, "--inject") == 0 && has_val) {
            if (add_inject(p, argv[++i]) != 0)
                return -1;
        } else if (strcmp(a, "--inject-hs") == 0 && has_val) {
            if (add_inject(p, argv[++i]) != 0) /* parsed like --inject, then moved */
                return -1;
            p->hs_inject = p->inject[--p->ninject];
            p->hs_inject_len = p->inject_len[p->ninject];
        } else if (strcmp(a, "--inject-0rtt") == 0 && has_val) {
            if (add_inject(p, argv[++i]) != 0) /* parsed like --inject, then moved */
                return -1;
            p->zrtt_inject = p->inject[--p->ninject];
            p->zrtt_inject_len = p->inject_len[p->ninject];
        } else if (strcmp(a, "--session-file") == 0 && has_val) {
            p->session_file = argv[++i];
        } else if (strcmp(a, "--inject-rbits") == 0) {
            p->inject_rbits = 1;
        } else if (strcmp(a, "--inject-gap") == 0 && has_val) {
            p->inject_gap_ms = atoi(argv[++i]);
        } else if (strcmp(a, "--collect") == 0 && has_val) {
            p->collect_ms = atoi(argv[++i]);
        } else if (strcmp(a, "--bidi-file") == 0 && has_val) {
            if (add_raw_file(p, argv[++i]) != 0)
                return -1;
        } else if (strcmp(a, "--print-max-data") == 0) {
            p->print_max_data = 1;
        } else if ((strcmp(a, "--uni") == 0 || strcmp(a, "--bidi") == 0) && has_val) {
            if (add_raw(p, strcmp(a, "--bidi") == 0, argv[++i]) != 0)
                return -1;
        } else if (a[0] == '-' && a[1] != '\0') {
            return -1;
        } else if (npos == 0) {
            p->host = a, npos++;
        } else if (npos == 1) {
            p->port = a, npos++;
        } else {
            return -1;
        }
    }
    return npos == 2 && p->timeout_secs > 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    static probe_t probe = {.fd = -1, .timeout_secs = 10, .collect_ms = 2000};
    probe_t *p = &probe;
    unsigned char addr[sizeof(struct in6_addr)];

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (parse_args(p, argc, argv) != 0) {
        usage();
        return 2;
    }
    /* An IP literal is no server name: send "localhost" like gtlsclient does. */
    if (p->sni == NULL)
        p->sni = inet_pton(AF_INET, p->host, addr) == 1 || inet_pton(AF_INET6, p->host, addr) == 1
                     ? "localhost"
                     : p->host;
    if (p->authority[0] == '\0')
        snprintf(p->authority, sizeof(p->authority), "%s:%s", p->sni, p->port);
    ngtcp2_ccerr_default(&p->ccerr);
    ngtcp2_ccerr_set_application_error(&p->ccerr, NGHTTP3_H3_NO_ERROR, NULL, 0);
    p->req[0].stream_id = p->req[1].stream_id = -1;

    int rc = 1;
    if (sock_setup(p) == 0 && tls_setup(p, p->sni) == 0 && quic_setup(p) == 0)
        rc = run(p);
    else
        fprintf(stderr, "h3probe: set-up failed\n");
    if (p->print_max_data && p->conn) {
        uint64_t left = ngtcp2_conn_get_max_data_left(p->conn);
        printf("max-data %" PRIu64 "\nmax-data-left-peak %" PRIu64 "\nstream-sent %" PRIu64 "\n",
               left + p->stream_sent, p->left_peak, p->stream_sent);
    }

    for (int i = 0; i < p->nreq; i++)
        gnutls_hash_deinit(p->req[i].sha, NULL);
    nghttp3_conn_del(p->h3);
    ngtcp2_conn_del(p->conn);
    if (p->tls)
        gnutls_deinit(p->tls);
    if (p->cred)
        gnutls_certificate_free_credentials(p->cred);
    if (p->fd != -1)
        close(p->fd);
    free(p->body_buf);
    if (p->out && fclose(p->out) != 0)
        rc = 1;
    return rc;
}
