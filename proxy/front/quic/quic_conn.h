/*
 * quic_conn.h - one QUIC connection and its HTTP/3 session; shared by
 * quic.c (transport, packets, timers) and h3_front.c (nghttp3 and the front ops).
 * Not a public interface.
 */
#ifndef QX_QUIC_CONN_H
#define QX_QUIC_CONN_H

#include "base/defer.h"
#include "exchange/exchange.h"
#include "front/quic/h3_ctrl.h"
#include "front/quic/quic.h"
#include "front/quic/tls.h"

#include <gnutls/gnutls.h>
#include <nghttp3/nghttp3.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <sys/queue.h>
#include <uv.h>

#define QX_SCID_LEN 18
#define QX_MAX_CIDS 10

typedef struct qx_quic_conn qx_quic_conn_t;
LIST_HEAD(qx_quic_conn_list, qx_quic_conn);

/*
 * A connection's life (quic.c: set_state() asserts the moves). Only
 * forward:
 *
 *   HANDSHAKE --> OPEN --> GOAWAY --> CLOSING --> DEAD
 *       |          |                    ^
 *       +----------+--------------------+
 *
 * OPEN: the handshake completed (HTTP/3 requests, the session released).
 * GOAWAY: the final HTTP/3 GOAWAY went out (the worker drains); the
 * connection closes once its last request is done. CLOSING: a close was
 * asked (qx_quic_conn_close, with or without CONNECTION_CLOSE); nothing is
 * read or written any more, the flush deletes it. DEAD: deleted, its timer
 * handle closing, freed in its close callback.
 */
typedef enum {
    QX_QC_HANDSHAKE,
    QX_QC_OPEN,
    QX_QC_GOAWAY,
    QX_QC_CLOSING,
    QX_QC_DEAD,
} qx_quic_conn_state_t;

struct qx_quic_conn {
    qx_quic_ep_t *ep;
    ngtcp2_crypto_conn_ref conn_ref;
    ngtcp2_conn *conn;
    gnutls_session_t tls;
    qx_tls_t *creds; /* the credentials this connection handshook with */
    nghttp3_conn *h3;
    struct sockaddr_storage local, remote;
    socklen_t locallen, remotelen;
    ngtcp2_cid cids[QX_MAX_CIDS]; /* registered in the endpoint's table */
    size_t ncids;
    uv_timer_t timer;
    char sni[256];
    qx_exchange_t *exchanges; /* requests on this connection */
    qx_quic_conn_state_t state;
    qx_quic_conn_state_t closed_in; /* the state a close was asked in (its accounting) */
    ngtcp2_ccerr ccerr;             /* set by a failing callback */
    uint64_t max_streams;           /* initial_max_streams_bidi granted to the client */
    /* Path statistics for the metrics (qx_metrics_quic_path): reported at
     * close and once a minute; the packet counts as deltas since the last
     * report. */
    uint64_t created_ns;    /* the connection's first packet */
    uint64_t reported_ns;   /* the last report */
    uint64_t pkts_sent;     /* packets written */
    uint64_t pkts_lost;     /* packets with stream data declared lost, added at stream close */
    uint64_t sent_reported; /* pkts_sent at the last report */
    uint64_t lost_reported;
    int paced;    /* the flight that completed the handshake was written (qx_quic_conn_write) */
    int rx_early; /* the stream data being read came in 0-RTT */
    uint64_t rx_passed;                /* body bytes of the read in progress h3_recv_data took */
    int counted;                       /* counted in the process and per-IP connection totals */
    struct qx_ipcount_entry *ip_entry; /* counted toward its address's cap (ipcount.h) */
    qx_h3_ctrl_t h3ctrl;               /* the client control stream's MAX_PUSH_ID rule */
    unsigned ws_tunnels;               /* WebSocket tunnels open (the exchanges count) */
    int keepalive;                     /* PINGs on: a tunnel is open (sync_keepalive) */
    uint64_t idle_ns;                  /* the idle timeout qrux offered (ns) */
    unsigned fin_due;                  /* exchanges with h3_fin_due set (qx_h3_fin_declined) */
    int close_quietly; /* CLOSING without CONNECTION_CLOSE (idle timeout, draining) */
    int retried_away;  /* answered by a Retry at its first packet: not a failed handshake */
    uint8_t *stash;    /* a packet the socket refused with EAGAIN */
    size_t stashlen;
    size_t stashgso;               /* its GSO segment size (0: one datagram) */
    uint8_t stashecn;              /* its ECN codepoint */
    LIST_ENTRY(qx_quic_conn) link; /* the endpoint's connections */
    qx_deferred_t flush;           /* on the worker's deferred-work queue */
};

/* ---- quic.c, for h3_front.c ---- */

/* Queues a flush of conn's pending output at the end of this loop turn
 * (the worker's deferred-work queue). */
void qx_quic_conn_mark(qx_quic_conn_t *qc);

/* Schedules closing with qc->ccerr (or quietly): CLOSING, unless the
 * connection is closing already. */
void qx_quic_conn_close(qx_quic_conn_t *qc, int quietly);

/* The final GOAWAY went out: OPEN -> GOAWAY (no-op in any other state). */
void qx_quic_conn_goaway(qx_quic_conn_t *qc);

qx_wctx_t *qx_quic_conn_worker(qx_quic_conn_t *qc);

/* The allocator nghttp3 uses on qc's worker (quic_mem.h). */
const nghttp3_mem *qx_quic_conn_h3_mem(qx_quic_conn_t *qc);

/* Reads the TLS SNI (lowercased) into qc->sni; valid once the ClientHello
 * is processed. */
void qx_quic_conn_read_sni(qx_quic_conn_t *qc);

/* ---- h3_front.c, for quic.c ---- */

/* Creates the HTTP/3 session once 1-RTT keys exist. Returns 0 or an
 * ngtcp2 error for the callback. */
int qx_h3_setup(qx_quic_conn_t *qc);

/* Ends every exchange of a dying connection, then frees nghttp3. */
void qx_h3_teardown(qx_quic_conn_t *qc);

/* A stream's bare FIN (no bytes with it) that nghttp3 handed out and
 * ngtcp2 did not take: nghttp3 unschedules a stream as it hands out its
 * last vector and learns it went only from add_write_offset, so with no
 * byte left to keep the stream scheduled it never offers that FIN again.
 * qx_h3_fin_declined notes it; qx_h3_fin_take returns one such stream
 * (clearing its note; -1: none) for the writer to offer itself. */
void qx_h3_fin_declined(qx_quic_conn_t *qc, int64_t stream_id);
int64_t qx_h3_fin_take(qx_quic_conn_t *qc);

/* The handshake completed: requests held back from early data go on. */
void qx_h3_handshake_done(qx_quic_conn_t *qc);

/* Sends the HTTP/3 GOAWAY notice (drain, step one). */
void qx_h3_goaway_notice(qx_quic_conn_t *qc);

/* Sends the final HTTP/3 GOAWAY (drain, step two); the connection closes
 * when its last request ends. */
void qx_h3_goaway(qx_quic_conn_t *qc);

/* The ngtcp2 callbacks that belong to HTTP/3. */
int qx_h3_recv_stream_data(ngtcp2_conn *conn, uint32_t flags, int64_t stream_id, uint64_t offset,
                           const uint8_t *data, size_t datalen, void *user_data,
                           void *stream_user_data);
int qx_h3_acked_stream_data_offset(ngtcp2_conn *conn, int64_t stream_id, uint64_t offset,
                                   uint64_t datalen, void *user_data, void *stream_user_data);
int qx_h3_stream_close(ngtcp2_conn *conn, uint32_t flags, int64_t stream_id,
                       uint64_t app_error_code, void *user_data, void *stream_user_data);
int qx_h3_stream_reset(ngtcp2_conn *conn, int64_t stream_id, uint64_t final_size,
                       uint64_t app_error_code, void *user_data, void *stream_user_data);
int qx_h3_stream_stop_sending(ngtcp2_conn *conn, int64_t stream_id, uint64_t app_error_code,
                              void *user_data, void *stream_user_data);
int qx_h3_extend_max_remote_streams_bidi(ngtcp2_conn *conn, uint64_t max_streams, void *user_data);
int qx_h3_extend_max_stream_data(ngtcp2_conn *conn, int64_t stream_id, uint64_t max_data,
                                 void *user_data, void *stream_user_data);

/* Writes as many packets as the connection has, through the HTTP/3
 * session. Returns 0, or a negative ngtcp2 error after which the
 * connection must close. (quic.c) */
int qx_quic_conn_write(qx_quic_conn_t *qc);

#endif
