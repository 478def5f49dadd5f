/* metrics.c - per-worker counters (see metrics.h). */
#include "base/metrics.h"

#include "base/qx.h"

#include <stdlib.h>
#include <string.h>

const double qx_hist_bounds[QX_HIST_NBUCKETS - 1] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                     0.25,  0.5,   1,    2.5,   10};

/* From 1 ms (loopback, one data centre) to 1 s (a bad mobile path). */
const double qx_qtime_bounds[QX_QHIST_NBUCKETS - 1] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                       0.1,   0.25,   0.5,   1,    2.5};
/* From two full-size packets to the window a fast long path needs. */
const double qx_cwnd_bounds[QX_QHIST_NBUCKETS - 1] = {
    2400, 4800, 9600, 19200, 38400, 76800, 153600, 307200, 614400, 1228800, 4915200};

static const char *const method_names[QX_M_COUNT] = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "OTHER"};

int qx_metrics_method_index(const char *m, size_t len)
{
    for (int i = 0; i < QX_M_OTHER; i++) {
        if (strlen(method_names[i]) == len && memcmp(method_names[i], m, len) == 0)
            return i;
    }
    return QX_M_OTHER;
}

const char *qx_metrics_method_name(int idx)
{
    return idx >= 0 && idx < QX_M_COUNT ? method_names[idx] : "OTHER";
}

/* Labels are interned per worker so rows outlive the config snapshot that
 * named the upstream. Comparison is by content. */
static const char *intern(const char *s)
{
    /* Always a heap copy, so qx_metrics_free() can free every label. */
    return strdup(s == NULL ? "" : s);
}

static int label_eq(const char *a, const char *b)
{
    return strcmp(a, b == NULL ? "" : b) == 0;
}

static void publish(size_t *n, size_t v)
{
    __atomic_store_n(n, v, __ATOMIC_RELEASE);
}

const char *qx_metrics_proto_name(int idx)
{
    static const char *const names[QX_P_COUNT] = {"h3", "h2", "http/1.1"};
    return idx >= 0 && idx < QX_P_COUNT ? names[idx] : "h3";
}

const char *qx_metrics_defence_name(int idx)
{
    static const char *const names[QX_D_COUNT] = {
        "h2_reset_flood",   "reset_before_upstream", "h2_protocol_error",      "client_stalled",
        "upstream_stalled", "tcp_connections",       "tcp_connections_per_ip", "fd_reserve",
        "upstream_queued",  "upstream_queue_full",
    };
    return idx >= 0 && idx < QX_D_COUNT ? names[idx] : "other";
}

void qx_metrics_request(qx_metrics_t *m, int proto, int method, int status, const char *upstream,
                        double seconds)
{
    qx_metrics_req_row_t *row = NULL;
    for (size_t i = 0; i < m->nreq; i++) {
        qx_metrics_req_row_t *r = &m->req[i];
        if (r->proto == proto && r->method == method && r->status == status &&
            label_eq(r->upstream, upstream)) {
            row = r;
            break;
        }
    }
    if (row == NULL) {
        if (m->nreq < QX_METRICS_ROWS - 1) {
            row = &m->req[m->nreq];
            row->upstream = intern(upstream);
            row->proto = (uint8_t)proto;
            row->method = (uint16_t)method;
            row->status = (uint16_t)status;
            publish(&m->nreq, m->nreq + 1);
        } else {
            /* The last row takes the rest, under labels that name no one
             * (status 0, method OTHER, upstream _other), never another
             * row's upstream. */
            row = &m->req[QX_METRICS_ROWS - 1];
            if (m->nreq < QX_METRICS_ROWS) {
                row->upstream = intern(QX_METRICS_OTHER);
                row->proto = (uint8_t)proto;
                row->method = QX_M_OTHER;
                row->status = 0;
                publish(&m->nreq, QX_METRICS_ROWS);
            }
        }
    }
    qx_cnt_add(&row->count, 1);

    qx_metrics_hist_row_t *h = NULL;
    for (size_t i = 0; i < m->nhist; i++) {
        if (m->hist[i].method == method && label_eq(m->hist[i].upstream, upstream)) {
            h = &m->hist[i];
            break;
        }
    }
    if (h == NULL) {
        size_t cap = QX_ARRAY_LEN(m->hist);
        if (m->nhist < cap - 1) {
            h = &m->hist[m->nhist];
            h->upstream = intern(upstream);
            h->method = (uint16_t)method;
            publish(&m->nhist, m->nhist + 1);
        } else {
            h = &m->hist[cap - 1];
            if (m->nhist < cap) {
                h->upstream = intern(QX_METRICS_OTHER);
                h->method = QX_M_OTHER;
                publish(&m->nhist, cap);
            }
        }
    }
    size_t b = 0;
    while (b < QX_HIST_NBUCKETS - 1 && seconds > qx_hist_bounds[b])
        b++;
    qx_cnt_add(&h->buckets[b], 1);
    qx_cnt_add(&h->count, 1);
    /* The sum is kept in microseconds as an integer so readers see a
     * consistent value without a lock. */
    qx_cnt_add(&h->sum_us, (uint64_t)(seconds * 1e6));
    if (proto >= 0 && proto < QX_P_COUNT) {
        qx_cnt_add(&m->proto_requests[proto], 1);
        qx_cnt_add(&m->proto_duration_us[proto], (uint64_t)(seconds * 1e6));
    }
}

static void qhist_add(qx_qhist_t *h, const double *bounds, double v, uint64_t sum)
{
    size_t b = 0;
    while (b < QX_QHIST_NBUCKETS - 1 && v > bounds[b])
        b++;
    qx_cnt_add(&h->buckets[b], 1);
    qx_cnt_add(&h->sum, sum);
}

void qx_metrics_quic_path(qx_metrics_t *m, double smoothed_rtt, double min_rtt, uint64_t cwnd,
                          uint64_t sent, uint64_t lost)
{
    qx_metrics_quic_t *q = &m->quic;
    qhist_add(&q->smoothed_rtt, qx_qtime_bounds, smoothed_rtt, (uint64_t)(smoothed_rtt * 1e6));
    qhist_add(&q->min_rtt, qx_qtime_bounds, min_rtt, (uint64_t)(min_rtt * 1e6));
    qhist_add(&q->cwnd, qx_cwnd_bounds, (double)cwnd, cwnd);
    qx_cnt_add(&q->pkts_sent, sent);
    qx_cnt_add(&q->pkts_lost, lost);
}

void qx_metrics_quic_handshake(qx_metrics_t *m, double seconds, int resumed, int early)
{
    qx_metrics_quic_t *q = &m->quic;
    qhist_add(&q->handshake, qx_qtime_bounds, seconds, (uint64_t)(seconds * 1e6));
    if (resumed)
        qx_cnt_add(&q->resumed, 1);
    if (early == 1)
        qx_cnt_add(&q->early_accepted, 1);
    else if (early == 0)
        qx_cnt_add(&q->early_rejected, 1);
}

qx_metrics_up_row_t *qx_metrics_upstream(qx_metrics_t *m, const char *upstream, const char *address)
{
    for (size_t i = 0; i < m->nup; i++) {
        if (label_eq(m->up[i].upstream, upstream) && label_eq(m->up[i].address, address))
            return &m->up[i];
    }
    size_t cap = QX_ARRAY_LEN(m->up);
    if (m->nup < cap - 1) {
        qx_metrics_up_row_t *r = &m->up[m->nup];
        r->upstream = intern(upstream);
        r->address = intern(address);
        publish(&m->nup, m->nup + 1);
        return r;
    }
    qx_metrics_up_row_t *r = &m->up[cap - 1];
    if (m->nup < cap) {
        r->upstream = intern(QX_METRICS_OTHER);
        r->address = intern(QX_METRICS_OTHER);
        publish(&m->nup, cap);
    }
    return r;
}

void qx_metrics_free(qx_metrics_t *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->nreq; i++)
        free((void *)m->req[i].upstream);
    for (size_t i = 0; i < m->nhist; i++)
        free((void *)m->hist[i].upstream);
    for (size_t i = 0; i < m->nup; i++) {
        free((void *)m->up[i].upstream);
        free((void *)m->up[i].address);
    }
    memset(m, 0, sizeof(*m));
}
