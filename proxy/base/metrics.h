/*
 * metrics.h - per-worker counters. Each worker is the only writer of its
 * qx_metrics_t (relaxed atomic stores, no read-modify-write); the admin
 * thread sums all workers' tables when /metrics is scraped, so a
 * worker never waits for it. Label spaces are bounded: methods outside the
 * standard set are OTHER, upstream labels come from the config, and the
 * tables have a fixed capacity with an overflow row.
 */
#ifndef QX_METRICS_H
#define QX_METRICS_H

#include <stddef.h>
#include <stdint.h>

enum {
    QX_M_GET,
    QX_M_HEAD,
    QX_M_POST,
    QX_M_PUT,
    QX_M_DELETE,
    QX_M_CONNECT,
    QX_M_OPTIONS,
    QX_M_TRACE,
    QX_M_PATCH,
    QX_M_OTHER,
    QX_M_COUNT
};

/* Front protocols, the `protocol` label. */
enum { QX_P_H3, QX_P_H2, QX_P_H1, QX_P_COUNT };
const char *qx_metrics_proto_name(int idx);

/* Defences against hostile clients and upstreams: each counts when it
 * fires (the `defence` label of qrux_defence_total). */
enum {
    QX_D_H2_RESET_FLOOD,        /* HTTP/2 connection over its stream-reset budget: GOAWAY */
    QX_D_RESET_BEFORE_UPSTREAM, /* a stream reset before its upstream was asked for */
    QX_D_H2_PROTOCOL_ERROR,     /* HTTP/2 connection ended on a protocol error or a flood */
    QX_D_CLIENT_STALLED,        /* response stream ended: the client read nothing for too long */
    QX_D_UPSTREAM_STALLED,      /* response stream ended: the upstream sent nothing for too long */
    QX_D_TCP_CONN_LIMIT,        /* HTTPS connection refused: max_tcp_connections */
    QX_D_TCP_CONN_LIMIT_PER_IP, /* ... max_tcp_connections_per_ip */
    QX_D_FD_RESERVE,            /* connection refused to keep descriptors in reserve */
    QX_D_UPSTREAM_QUEUED,       /* request waited for max_connections_per_upstream */
    QX_D_UPSTREAM_QUEUE_FULL,   /* 503: the wait queue for an upstream was full */
    QX_D_COUNT
};
const char *qx_metrics_defence_name(int idx);

#define QX_HIST_NBUCKETS 12 /* the last is +Inf */
extern const double qx_hist_bounds[QX_HIST_NBUCKETS - 1];

#define QX_METRICS_ROWS 512
/* Per-upstream rows: twice QX_CONFIG_MAX_UPSTREAMS (config.h; change them
 * together), so every upstream of a config, and of the one before a reload,
 * has its own. */
#define QX_METRICS_UP_ROWS 2048
/* The label of the row that takes what no longer fits in a table: never
 * another upstream's name (config names are host:port). */
#define QX_METRICS_OTHER "_other"

/* QUIC path statistics: fixed histograms (no labels, so the cardinality is
 * that of the bucket list). Bounds in seconds for times, bytes for cwnd;
 * the last bucket is +Inf. */
#define QX_QHIST_NBUCKETS 12
extern const double qx_qtime_bounds[QX_QHIST_NBUCKETS - 1];
extern const double qx_cwnd_bounds[QX_QHIST_NBUCKETS - 1];

typedef struct qx_qhist {
    uint64_t buckets[QX_QHIST_NBUCKETS]; /* non-cumulative counts */
    uint64_t sum;                        /* microseconds for times, bytes for cwnd */
} qx_qhist_t;

typedef struct qx_metrics_quic {
    qx_qhist_t smoothed_rtt; /* observed at close (and every minute of a long connection) */
    qx_qhist_t min_rtt;
    qx_qhist_t cwnd;
    qx_qhist_t handshake; /* from the first Initial to the handshake's completion */
    uint64_t pkts_sent;   /* counted as connections report them */
    uint64_t pkts_lost;
    uint64_t resumed;        /* handshakes that resumed a TLS session */
    uint64_t early_accepted; /* handshakes whose 0-RTT data was accepted */
    uint64_t early_rejected; /* ... offered but rejected (replay check, policy, tickets) */
} qx_metrics_quic_t;

typedef struct qx_metrics_req_row {
    const char *upstream; /* interned label, "" when no upstream was chosen */
    uint8_t proto;
    uint16_t method;
    uint16_t status;
    uint64_t count;
} qx_metrics_req_row_t;

typedef struct qx_metrics_hist_row {
    const char *upstream;
    uint16_t method;
    uint64_t buckets[QX_HIST_NBUCKETS]; /* non-cumulative counts */
    uint64_t count;
    uint64_t sum_us;
} qx_metrics_hist_row_t;

typedef struct qx_metrics_up_row {
    const char *upstream; /* as configured (a name or an address) */
    const char *address;  /* the endpoint's "ip:port" */
    uint64_t timeouts;
    uint64_t connect_errors;  /* refused / unreachable */
    uint64_t protocol_errors; /* malformed response */
    uint64_t body_over_limit; /* response body over its cap */
    uint64_t pool_idle;       /* gauge */
    uint64_t pool_busy;       /* gauge */
} qx_metrics_up_row_t;

typedef struct qx_metrics {
    qx_metrics_req_row_t req[QX_METRICS_ROWS];
    size_t nreq; /* published with release; rows below it are stable */
    qx_metrics_hist_row_t hist[QX_METRICS_ROWS / 4];
    size_t nhist;
    qx_metrics_up_row_t up[QX_METRICS_UP_ROWS];
    size_t nup;
    uint64_t active_connections_h3;
    uint64_t active_connections_h2; /* HTTPS fallback connections that chose h2 */
    uint64_t active_connections_h1; /* ... and http/1.1 (or no ALPN) */
    uint64_t quic_handshakes_ok;
    uint64_t quic_handshakes_failed;
    uint64_t quic_retry_sent;     /* Retry packets (address validation) */
    uint64_t quic_invalid_tokens; /* Initial with a forged/expired Retry token */
    uint64_t quic_refused;        /* CONNECTION_REFUSED: limits or draining */
    uint64_t early_data_accepted; /* requests forwarded from 0-RTT with Early-Data: 1 */
    uint64_t early_data_held;     /* unsafe 0-RTT requests held until the handshake */
    uint64_t bytes_in;            /* request body bytes from clients */
    uint64_t bytes_out;           /* response body bytes to clients */
    uint64_t request_body_rejected;
    uint64_t streams_reset_by_client;
    uint64_t quic_forwarded; /* datagrams another worker received for our connections */
    uint64_t defences[QX_D_COUNT];
    /* Per client protocol, for the status page's rate and latency lines
     * (the duration histogram has no protocol label). */
    uint64_t proto_requests[QX_P_COUNT];
    uint64_t proto_duration_us[QX_P_COUNT];
    qx_metrics_quic_t quic;
} qx_metrics_t;

/* Index of a method name in the QX_M_* set; QX_M_OTHER for anything else. */
int qx_metrics_method_index(const char *m, size_t len);
const char *qx_metrics_method_name(int idx);

/* Adds n to a counter the calling worker owns (single writer). */
static inline void qx_cnt_add(uint64_t *c, uint64_t n)
{
    __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}
static inline void qx_cnt_sub(uint64_t *c, uint64_t n)
{
    __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) - n, __ATOMIC_RELAXED);
}

/* Records one finished request. upstream may be NULL. */
void qx_metrics_request(qx_metrics_t *m, int proto, int method, int status, const char *upstream,
                        double seconds);

/* The per-endpoint row for |upstream| at |address| (created on first use);
 * never NULL: past capacity the last row, labelled QX_METRICS_OTHER (both
 * labels), is shared (the addresses of a name come and go, so the capacity
 * is what bounds the label space). */
qx_metrics_up_row_t *qx_metrics_upstream(qx_metrics_t *m, const char *upstream,
                                         const char *address);

/* One observation of a QUIC path: RTTs in seconds, cwnd in bytes, and the
 * packets sent and lost since the connection's previous report. */
void qx_metrics_quic_path(qx_metrics_t *m, double smoothed_rtt, double min_rtt, uint64_t cwnd,
                          uint64_t sent, uint64_t lost);

/* A completed handshake: its duration, whether it resumed a session, and
 * its 0-RTT outcome (-1 none offered, 0 rejected, 1 accepted). */
void qx_metrics_quic_handshake(qx_metrics_t *m, double seconds, int resumed, int early);

/* Releases interned labels. */
void qx_metrics_free(qx_metrics_t *m);

#endif
