/* metrics_text.c - Prometheus text exposition (see metrics_text.h). */
#include "admin/metrics_text.h"

#include "base/qx.h"

#include <dirent.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* A label value as the text format wants it: backslash, double quote and
 * line feed escaped; everything else (UTF-8 included) as is. */
static void put_label(qx_metrics_text_t *t, const char *name, const char *v)
{
    qx_buf_puts(t, name);
    qx_buf_put(t, "=\"", 2);
    for (const char *p = v ? v : ""; *p; p++) {
        if (*p == '\\')
            qx_buf_put(t, "\\\\", 2);
        else if (*p == '"')
            qx_buf_put(t, "\\\"", 2);
        else if (*p == '\n')
            qx_buf_put(t, "\\n", 2);
        else
            qx_buf_put(t, p, 1);
    }
    qx_buf_put(t, "\"", 1);
}

static void family(qx_metrics_text_t *t, const char *name, const char *type, const char *help)
{
    qx_buf_putf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Microseconds as seconds, exactly (no binary rounding in the output). */
static void put_us_as_seconds(qx_metrics_text_t *t, uint64_t us)
{
    qx_buf_putf(t, "%llu.%06llu", (unsigned long long)(us / 1000000),
                (unsigned long long)(us % 1000000));
}

static uint64_t ld(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static size_t ld_count(const size_t *p)
{
    /* Pairs with the worker's release store: rows below are initialised. */
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static const char *lbl(const char *s)
{
    return s ? s : "";
}

/* ------------------------------------------------------------------------
 * gathering: every worker's rows into one array, sorted by labels, rows
 * with equal labels merged. Sorting also makes the output stable. */

typedef struct req_ent {
    const char *up;
    int method, status, proto;
    uint64_t count;
} req_ent_t;

typedef struct hist_ent {
    const char *up;
    int method;
    uint64_t buckets[QX_HIST_NBUCKETS];
    uint64_t sum_us;
} hist_ent_t;

typedef struct up_ent {
    const char *up, *addr;
    uint64_t timeouts, connect, protocol, body, idle, busy;
} up_ent_t;

static int cmp_int(int a, int b)
{
    return (a > b) - (a < b);
}

static int req_cmp(const void *pa, const void *pb)
{
    const req_ent_t *a = pa, *b = pb;
    int c = strcmp(a->up, b->up);
    if (c == 0)
        c = cmp_int(a->method, b->method);
    if (c == 0)
        c = cmp_int(a->status, b->status);
    if (c == 0)
        c = cmp_int(a->proto, b->proto);
    return c;
}

static int hist_cmp(const void *pa, const void *pb)
{
    const hist_ent_t *a = pa, *b = pb;
    int c = strcmp(a->up, b->up);
    return c ? c : cmp_int(a->method, b->method);
}

static int up_cmp(const void *pa, const void *pb)
{
    const up_ent_t *a = pa, *b = pb;
    int c = strcmp(a->up, b->up);
    return c ? c : strcmp(a->addr, b->addr);
}

static size_t gather_req(req_ent_t **out, const qx_metrics_t *const *w, size_t nw)
{
    size_t total = 0, n = 0;
    for (size_t i = 0; i < nw; i++)
        total += QX_MIN(ld_count(&w[i]->nreq), (size_t)QX_METRICS_ROWS);
    req_ent_t *e = calloc(total ? total : 1, sizeof(*e));
    if (e == NULL)
        return (size_t)-1;
    for (size_t i = 0; i < nw; i++) {
        size_t rows = QX_MIN(ld_count(&w[i]->nreq), (size_t)QX_METRICS_ROWS);
        for (size_t r = 0; r < rows && n < total; r++) {
            const qx_metrics_req_row_t *row = &w[i]->req[r];
            e[n++] = (req_ent_t){lbl(row->upstream), row->method, row->status, row->proto,
                                 ld(&row->count)};
        }
    }
    qsort(e, n, sizeof(*e), req_cmp);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m > 0 && req_cmp(&e[m - 1], &e[i]) == 0)
            e[m - 1].count += e[i].count;
        else
            e[m++] = e[i];
    }
    *out = e;
    return m;
}

static size_t gather_hist(hist_ent_t **out, const qx_metrics_t *const *w, size_t nw)
{
    const size_t cap = QX_ARRAY_LEN(w[0]->hist);
    size_t total = 0, n = 0;
    for (size_t i = 0; i < nw; i++)
        total += QX_MIN(ld_count(&w[i]->nhist), cap);
    hist_ent_t *e = calloc(total ? total : 1, sizeof(*e));
    if (e == NULL)
        return (size_t)-1;
    for (size_t i = 0; i < nw; i++) {
        size_t rows = QX_MIN(ld_count(&w[i]->nhist), cap);
        for (size_t r = 0; r < rows && n < total; r++) {
            const qx_metrics_hist_row_t *row = &w[i]->hist[r];
            hist_ent_t *h = &e[n++];
            h->up = lbl(row->upstream);
            h->method = row->method;
            for (size_t b = 0; b < QX_HIST_NBUCKETS; b++)
                h->buckets[b] = ld(&row->buckets[b]);
            h->sum_us = ld(&row->sum_us);
        }
    }
    qsort(e, n, sizeof(*e), hist_cmp);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m > 0 && hist_cmp(&e[m - 1], &e[i]) == 0) {
            for (size_t b = 0; b < QX_HIST_NBUCKETS; b++)
                e[m - 1].buckets[b] += e[i].buckets[b];
            e[m - 1].sum_us += e[i].sum_us;
        } else {
            e[m++] = e[i];
        }
    }
    *out = e;
    return m;
}

static size_t gather_up(up_ent_t **out, const qx_metrics_t *const *w, size_t nw)
{
    const size_t cap = QX_ARRAY_LEN(w[0]->up);
    size_t total = 0, n = 0;
    for (size_t i = 0; i < nw; i++)
        total += QX_MIN(ld_count(&w[i]->nup), cap);
    up_ent_t *e = calloc(total ? total : 1, sizeof(*e));
    if (e == NULL)
        return (size_t)-1;
    for (size_t i = 0; i < nw; i++) {
        size_t rows = QX_MIN(ld_count(&w[i]->nup), cap);
        for (size_t r = 0; r < rows && n < total; r++) {
            const qx_metrics_up_row_t *row = &w[i]->up[r];
            e[n++] = (up_ent_t){lbl(row->upstream),        lbl(row->address),
                                ld(&row->timeouts),        ld(&row->connect_errors),
                                ld(&row->protocol_errors), ld(&row->body_over_limit),
                                ld(&row->pool_idle),       ld(&row->pool_busy)};
        }
    }
    qsort(e, n, sizeof(*e), up_cmp);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m > 0 && up_cmp(&e[m - 1], &e[i]) == 0) {
            up_ent_t *d = &e[m - 1];
            d->timeouts += e[i].timeouts;
            d->connect += e[i].connect;
            d->protocol += e[i].protocol;
            d->body += e[i].body;
            d->idle += e[i].idle;
            d->busy += e[i].busy;
        } else {
            e[m++] = e[i];
        }
    }
    *out = e;
    return m;
}

/* ------------------------------------------------------------------------
 * families */

static void render_requests(qx_metrics_text_t *t, const req_ent_t *e, size_t n)
{
    family(t, "qrux_http_requests_total", "counter",
           "Requests answered, by method, status, upstream (\"\" when no route matched) and "
           "client protocol.");
    for (size_t i = 0; i < n; i++) {
        qx_buf_puts(t, "qrux_http_requests_total{");
        put_label(t, "method", qx_metrics_method_name(e[i].method));
        qx_buf_putf(t, ",status=\"%d\",", e[i].status);
        put_label(t, "upstream", e[i].up);
        qx_buf_put(t, ",", 1);
        put_label(t, "protocol", qx_metrics_proto_name(e[i].proto));
        qx_buf_putf(t, "} %llu\n", (unsigned long long)e[i].count);
    }
}

static void hist_labels(qx_metrics_text_t *t, const char *suffix, const hist_ent_t *h)
{
    qx_buf_putf(t, "qrux_http_request_duration_seconds%s{", suffix);
    put_label(t, "method", qx_metrics_method_name(h->method));
    qx_buf_put(t, ",", 1);
    put_label(t, "upstream", h->up);
}

static void render_histogram(qx_metrics_text_t *t, const hist_ent_t *e, size_t n)
{
    family(t, "qrux_http_request_duration_seconds", "histogram",
           "Time from the request head to the end of the response, by method and upstream.");
    for (size_t i = 0; i < n; i++) {
        uint64_t cum = 0;
        for (size_t b = 0; b < QX_HIST_NBUCKETS; b++) {
            cum += e[i].buckets[b];
            hist_labels(t, "_bucket", &e[i]);
            if (b < QX_HIST_NBUCKETS - 1)
                qx_buf_putf(t, ",le=\"%g\"} %llu\n", qx_hist_bounds[b], (unsigned long long)cum);
            else
                qx_buf_putf(t, ",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
        }
        hist_labels(t, "_sum", &e[i]);
        qx_buf_puts(t, "} ");
        put_us_as_seconds(t, e[i].sum_us);
        qx_buf_put(t, "\n", 1);
        /* The count is the +Inf bucket: the worker bumps a bucket and the
         * count with two stores, and a scrape in between must not show a
         * histogram whose buckets disagree with its count. */
        hist_labels(t, "_count", &e[i]);
        qx_buf_putf(t, "} %llu\n", (unsigned long long)cum);
    }
}

static void up_labels(qx_metrics_text_t *t, const char *family_name, const up_ent_t *e)
{
    qx_buf_puts(t, family_name);
    qx_buf_put(t, "{", 1);
    put_label(t, "upstream", e->up);
    qx_buf_put(t, ",", 1);
    put_label(t, "address", e->addr);
}

static void render_upstreams(qx_metrics_text_t *t, const up_ent_t *e, size_t n)
{
    family(t, "qrux_upstream_pool_connections", "gauge",
           "Upstream connections held by the pools: idle (kept alive) or busy (connecting or "
           "carrying a request).");
    for (size_t i = 0; i < n; i++) {
        up_labels(t, "qrux_upstream_pool_connections", &e[i]);
        qx_buf_putf(t, ",state=\"idle\"} %llu\n", (unsigned long long)e[i].idle);
        up_labels(t, "qrux_upstream_pool_connections", &e[i]);
        qx_buf_putf(t, ",state=\"busy\"} %llu\n", (unsigned long long)e[i].busy);
    }
    family(t, "qrux_upstream_timeouts_total", "counter",
           "Upstream connects or requests that ran out of time.");
    for (size_t i = 0; i < n; i++) {
        up_labels(t, "qrux_upstream_timeouts_total", &e[i]);
        qx_buf_putf(t, "} %llu\n", (unsigned long long)e[i].timeouts);
    }
    family(t, "qrux_upstream_errors_total", "counter",
           "Upstream failures: connect (refused, unreachable), protocol (malformed response), "
           "body_too_large (response body over its limit).");
    for (size_t i = 0; i < n; i++) {
        static const char *const kinds[3] = {"connect", "protocol", "body_too_large"};
        uint64_t v[3] = {e[i].connect, e[i].protocol, e[i].body};
        for (size_t k = 0; k < 3; k++) {
            up_labels(t, "qrux_upstream_errors_total", &e[i]);
            qx_buf_putf(t, ",kind=\"%s\"} %llu\n", kinds[k], (unsigned long long)v[k]);
        }
    }
}

static void render_worker_scalars(qx_metrics_text_t *t, const qx_metrics_t *const *w, size_t nw)
{
    uint64_t defences[QX_D_COUNT] = {0};
    uint64_t h3 = 0, h2 = 0, h1 = 0, hs_ok = 0, hs_fail = 0, in = 0, out = 0, rejected = 0,
             resets = 0, retry = 0, badtok = 0, refused = 0, early_ok = 0, early_held = 0,
             forwarded = 0;
    for (size_t i = 0; i < nw; i++) {
        h3 += ld(&w[i]->active_connections_h3);
        h2 += ld(&w[i]->active_connections_h2);
        h1 += ld(&w[i]->active_connections_h1);
        retry += ld(&w[i]->quic_retry_sent);
        badtok += ld(&w[i]->quic_invalid_tokens);
        refused += ld(&w[i]->quic_refused);
        early_ok += ld(&w[i]->early_data_accepted);
        early_held += ld(&w[i]->early_data_held);
        hs_ok += ld(&w[i]->quic_handshakes_ok);
        hs_fail += ld(&w[i]->quic_handshakes_failed);
        in += ld(&w[i]->bytes_in);
        out += ld(&w[i]->bytes_out);
        rejected += ld(&w[i]->request_body_rejected);
        resets += ld(&w[i]->streams_reset_by_client);
        forwarded += ld(&w[i]->quic_forwarded);
        for (int d = 0; d < QX_D_COUNT; d++)
            defences[d] += ld(&w[i]->defences[d]);
    }
    family(t, "qrux_active_connections", "gauge", "Client connections open, by protocol.");
    qx_buf_putf(t, "qrux_active_connections{protocol=\"%s\"} %llu\n",
                qx_metrics_proto_name(QX_P_H3), (unsigned long long)h3);
    qx_buf_putf(t, "qrux_active_connections{protocol=\"%s\"} %llu\n",
                qx_metrics_proto_name(QX_P_H2), (unsigned long long)h2);
    qx_buf_putf(t, "qrux_active_connections{protocol=\"%s\"} %llu\n",
                qx_metrics_proto_name(QX_P_H1), (unsigned long long)h1);
    family(t, "qrux_quic_retry_total", "counter",
           "Retry packets sent to validate a client address (server.retry).");
    qx_buf_putf(t, "qrux_quic_retry_total %llu\n", (unsigned long long)retry);
    family(t, "qrux_quic_invalid_tokens_total", "counter",
           "Initial packets refused for a forged or expired Retry token.");
    qx_buf_putf(t, "qrux_quic_invalid_tokens_total %llu\n", (unsigned long long)badtok);
    family(t, "qrux_quic_refused_total", "counter",
           "New QUIC connections refused (CONNECTION_REFUSED): connection limits or draining.");
    qx_buf_putf(t, "qrux_quic_refused_total %llu\n", (unsigned long long)refused);
    family(t, "qrux_quic_datagrams_forwarded_total", "counter",
           "Datagrams one worker received for another worker's connection and handed over in "
           "user space (connection-ID steering missed them, e.g. it could not be attached).");
    qx_buf_putf(t, "qrux_quic_datagrams_forwarded_total %llu\n", (unsigned long long)forwarded);
    family(t, "qrux_early_data_requests_total", "counter",
           "Requests that arrived in 0-RTT: accepted (forwarded with Early-Data: 1) or held "
           "until the handshake completed (server.early_data: safe).");
    qx_buf_putf(t, "qrux_early_data_requests_total{result=\"accepted\"} %llu\n",
                (unsigned long long)early_ok);
    qx_buf_putf(t, "qrux_early_data_requests_total{result=\"held\"} %llu\n",
                (unsigned long long)early_held);
    /* "refused" is process-wide (the anti-replay check): see render_globals */
    family(t, "qrux_quic_handshakes_total", "counter", "QUIC handshakes, by result.");
    qx_buf_putf(t, "qrux_quic_handshakes_total{result=\"success\"} %llu\n",
                (unsigned long long)hs_ok);
    qx_buf_putf(t, "qrux_quic_handshakes_total{result=\"failure\"} %llu\n",
                (unsigned long long)hs_fail);
    family(t, "qrux_bytes_total", "counter",
           "Body bytes: in (request bodies from clients), out (response bodies to clients).");
    qx_buf_putf(t, "qrux_bytes_total{direction=\"in\"} %llu\n", (unsigned long long)in);
    qx_buf_putf(t, "qrux_bytes_total{direction=\"out\"} %llu\n", (unsigned long long)out);
    family(t, "qrux_request_body_rejected_total", "counter",
           "Requests refused because their body exceeded max_request_body_bytes.");
    qx_buf_putf(t, "qrux_request_body_rejected_total %llu\n", (unsigned long long)rejected);
    family(t, "qrux_client_stream_resets_total", "counter",
           "Request streams the client reset or stopped before the response ended.");
    qx_buf_putf(t, "qrux_client_stream_resets_total %llu\n", (unsigned long long)resets);
    family(t, "qrux_defence_total", "counter",
           "Times a defence against a hostile client or upstream fired, by defence (see "
           "SECURITY.md).");
    for (int d = 0; d < QX_D_COUNT; d++)
        qx_buf_putf(t, "qrux_defence_total{defence=\"%s\"} %llu\n", qx_metrics_defence_name(d),
                    (unsigned long long)defences[d]);
}

/* One QUIC histogram summed over the workers. |us| says the sum is in
 * microseconds (printed as seconds), else in plain units. */
static void render_qhist(qx_metrics_text_t *t, const qx_metrics_t *const *w, size_t nw,
                         size_t offset, const char *name, const double *bounds, int us,
                         const char *help)
{
    uint64_t b[QX_QHIST_NBUCKETS] = {0}, sum = 0, cum = 0;
    for (size_t i = 0; i < nw; i++) {
        const qx_qhist_t *h = (const qx_qhist_t *)((const char *)w[i] + offset);
        for (size_t k = 0; k < QX_QHIST_NBUCKETS; k++)
            b[k] += ld(&h->buckets[k]);
        sum += ld(&h->sum);
    }
    family(t, name, "histogram", help);
    for (size_t k = 0; k < QX_QHIST_NBUCKETS; k++) {
        cum += b[k];
        if (k < QX_QHIST_NBUCKETS - 1)
            qx_buf_putf(t, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[k], (unsigned long long)cum);
        else
            qx_buf_putf(t, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    }
    qx_buf_putf(t, "%s_sum ", name);
    if (us)
        put_us_as_seconds(t, sum);
    else
        qx_buf_putf(t, "%llu", (unsigned long long)sum);
    /* The count is the +Inf bucket, as for the request histogram. */
    qx_buf_putf(t, "\n%s_count %llu\n", name, (unsigned long long)cum);
}

static void render_quic_path(qx_metrics_text_t *t, const qx_metrics_t *const *w, size_t nw)
{
    uint64_t sent = 0, lost = 0, resumed = 0, early_ok = 0, early_no = 0;
    for (size_t i = 0; i < nw; i++) {
        sent += ld(&w[i]->quic.pkts_sent);
        lost += ld(&w[i]->quic.pkts_lost);
        resumed += ld(&w[i]->quic.resumed);
        early_ok += ld(&w[i]->quic.early_accepted);
        early_no += ld(&w[i]->quic.early_rejected);
    }
    render_qhist(t, w, nw, offsetof(qx_metrics_t, quic.smoothed_rtt),
                 "qrux_quic_smoothed_rtt_seconds", qx_qtime_bounds, 1,
                 "Smoothed RTT of QUIC connections (ngtcp2), at close and every minute of a "
                 "long connection.");
    render_qhist(t, w, nw, offsetof(qx_metrics_t, quic.min_rtt), "qrux_quic_min_rtt_seconds",
                 qx_qtime_bounds, 1,
                 "Minimum RTT of QUIC connections, observed as the smoothed RTT.");
    render_qhist(t, w, nw, offsetof(qx_metrics_t, quic.cwnd), "qrux_quic_cwnd_bytes",
                 qx_cwnd_bounds, 0, "Congestion window of QUIC connections, observed as the RTT.");
    render_qhist(t, w, nw, offsetof(qx_metrics_t, quic.handshake),
                 "qrux_quic_handshake_duration_seconds", qx_qtime_bounds, 1,
                 "Time from a connection's first packet to its handshake's completion.");
    family(t, "qrux_quic_packets_sent_total", "counter",
           "QUIC packets sent, as connections report them (at close and every minute).");
    qx_buf_putf(t, "qrux_quic_packets_sent_total %llu\n", (unsigned long long)sent);
    family(t, "qrux_quic_packets_lost_total", "counter",
           "QUIC packets declared lost, as connections report them.");
    qx_buf_putf(t, "qrux_quic_packets_lost_total %llu\n", (unsigned long long)lost);
    family(t, "qrux_quic_resumed_handshakes_total", "counter",
           "Completed QUIC handshakes that resumed a TLS session (a ticket).");
    qx_buf_putf(t, "qrux_quic_resumed_handshakes_total %llu\n", (unsigned long long)resumed);
    family(t, "qrux_quic_early_data_handshakes_total", "counter",
           "Completed QUIC handshakes where the client sent 0-RTT data: accepted or rejected.");
    qx_buf_putf(t, "qrux_quic_early_data_handshakes_total{result=\"accepted\"} %llu\n",
                (unsigned long long)early_ok);
    qx_buf_putf(t, "qrux_quic_early_data_handshakes_total{result=\"rejected\"} %llu\n",
                (unsigned long long)early_no);
}

static void render_globals(qx_metrics_text_t *t, const qx_metrics_globals_t *g)
{
    family(t, "qrux_early_data_refused_total", "counter",
           "0-RTT early data refused by the anti-replay check (a ClientHello seen before, or "
           "one the table could not remember): the client resends after the handshake.");
    qx_buf_putf(t, "qrux_early_data_refused_total %llu\n", (unsigned long long)g->early_refused);
    family(t, "qrux_log_lines_suppressed_total", "counter",
           "Log lines a peer could trigger that were dropped: each call site writes at most 10 "
           "a second, then says how many it dropped.");
    qx_buf_putf(t, "qrux_log_lines_suppressed_total %llu\n", (unsigned long long)g->log_suppressed);
    if (g->extra != NULL)
        qx_buf_put(t, g->extra, g->extralen);
    static const char *const src[QX_SRC_COUNT] = {"file", "api"};
    static const char *const res[QX_RELOAD_COUNT] = {"success", "error", "restart_required"};

    family(t, "qrux_config_generation", "gauge",
           "Generation of the configuration in force (1 at start, +1 per applied change).");
    qx_buf_putf(t, "qrux_config_generation %llu\n", (unsigned long long)g->generation);
    family(t, "qrux_config_reloads_total", "counter",
           "Configuration updates, by source (file: the watched config, api: PUT /routes) and "
           "result.");
    for (int s = 0; s < QX_SRC_COUNT; s++) {
        for (int r = 0; r < QX_RELOAD_COUNT; r++)
            qx_buf_putf(t, "qrux_config_reloads_total{source=\"%s\",result=\"%s\"} %llu\n", src[s],
                        res[r], (unsigned long long)g->reloads[s][r]);
    }
    family(t, "qrux_build_info", "gauge", "Always 1; the version label says which qrux runs.");
    qx_buf_puts(t, "qrux_build_info{");
    put_label(t, "version", g->version ? g->version : QX_VERSION);
    qx_buf_puts(t, "} 1\n");
    family(t, "qrux_ready", "gauge", "1 when /readyz answers 200, else 0.");
    qx_buf_putf(t, "qrux_ready %d\n", g->ready ? 1 : 0);
    family(t, "qrux_xdp_attached", "gauge",
           "1 when the XDP filter pinned under xdp.pin holds an interface, else 0.");
    qx_buf_putf(t, "qrux_xdp_attached %d\n", g->xdp_attached ? 1 : 0);
    family(t, "qrux_xdp_packets_total", "counter",
           "Packets the XDP filter saw, by verdict (pass, drop) and reason (bpf/README.md).");
    for (int r = 0; r < QX_XDP_NREASONS; r++)
        qx_buf_putf(t, "qrux_xdp_packets_total{verdict=\"%s\",reason=\"%s\"} %llu\n",
                    r >= QX_XDP_FIRST_DROP ? "drop" : "pass", qx_xdp_reason_name(r),
                    (unsigned long long)g->xdp_packets[r]);
    if (g->cert_not_after != 0) {
        family(t, "qrux_tls_certificate_expiry_timestamp_seconds", "gauge",
               "notAfter of the serving certificate in force (the leaf of server.cert), unix "
               "seconds; follows certificate reloads. -1: it could not be read.");
        qx_buf_putf(t, "qrux_tls_certificate_expiry_timestamp_seconds %lld\n",
                    (long long)g->cert_not_after);
    }
    if (!g->have_process)
        return;
    family(t, "process_cpu_seconds_total", "counter", "User and system CPU time spent, seconds.");
    qx_buf_putf(t, "process_cpu_seconds_total %.2f\n", g->cpu_seconds);
    family(t, "process_resident_memory_bytes", "gauge", "Resident memory size, bytes.");
    qx_buf_putf(t, "process_resident_memory_bytes %llu\n", (unsigned long long)g->rss_bytes);
    family(t, "process_virtual_memory_bytes", "gauge", "Virtual memory size, bytes.");
    qx_buf_putf(t, "process_virtual_memory_bytes %llu\n", (unsigned long long)g->vsize_bytes);
    family(t, "process_open_fds", "gauge", "Open file descriptors.");
    qx_buf_putf(t, "process_open_fds %llu\n", (unsigned long long)g->open_fds);
    family(t, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
    qx_buf_putf(t, "process_max_fds %llu\n", (unsigned long long)g->max_fds);
    family(t, "process_start_time_seconds", "gauge",
           "Start time of the process since the unix epoch, seconds.");
    qx_buf_putf(t, "process_start_time_seconds %.3f\n", g->start_time);
}

int qx_metrics_text_render(qx_metrics_text_t *out, const qx_metrics_t *const *workers,
                           size_t nworkers, const qx_metrics_globals_t *g)
{
    req_ent_t *req = NULL;
    hist_ent_t *hist = NULL;
    up_ent_t *up = NULL;
    size_t nreq = 0, nhist = 0, nup = 0;
    int rv = QX_ERR_NOMEM;

    if (out->max == 0) /* zeroed: a growing buffer with the cap */
        qx_buf_init(out, 16384, QX_METRICS_TEXT_MAX);
    if (nworkers > 0) {
        nreq = gather_req(&req, workers, nworkers);
        if (nreq == (size_t)-1)
            goto fail_req;
        nhist = gather_hist(&hist, workers, nworkers);
        if (nhist == (size_t)-1)
            goto fail_hist;
        nup = gather_up(&up, workers, nworkers);
        if (nup == (size_t)-1)
            goto fail_up;
    }
    render_requests(out, req, nreq);
    render_histogram(out, hist, nhist);
    render_worker_scalars(out, workers, nworkers);
    render_upstreams(out, up, nup);
    render_quic_path(out, workers, nworkers);
    render_globals(out, g);
    rv = out->failed ? QX_ERR_NOMEM : 0;

    free(up);
fail_up:
    free(hist);
fail_hist:
    free(req);
fail_req:
    return rv;
}

void qx_metrics_text_free(qx_metrics_text_t *t)
{
    if (t == NULL)
        return;
    qx_buf_free(t);
    memset(t, 0, sizeof(*t));
}

/* ------------------------------------------------------------------------
 * process metrics */

/* /proc/self/stat: fields after the parenthesised command (which may hold
 * spaces and parentheses, hence the last ')'). utime is field 14, stime 15,
 * vsize 23, rss 24 (pages). */
static int read_stat(qx_metrics_globals_t *g)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "re");
    if (f == NULL)
        return QX_ERR_IO;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return QX_ERR_IO;
    p++;
    unsigned long long v[24] = {0};
    int field = 3; /* p points before field 3 (state) */
    char *save = NULL;
    for (char *tok = strtok_r(p, " ", &save); tok && field <= 24;
         tok = strtok_r(NULL, " ", &save), field++) {
        if (field >= 14)
            v[field - 1] = strtoull(tok, NULL, 10);
    }
    if (field <= 24)
        return QX_ERR_IO;
    long tck = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    if (tck <= 0 || page <= 0)
        return QX_ERR_IO;
    g->cpu_seconds = (double)(v[13] + v[14]) / (double)tck;
    g->vsize_bytes = v[22];
    g->rss_bytes = v[23] * (unsigned long long)page;
    return 0;
}

static int count_fds(uint64_t *n)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return QX_ERR_IO;
    uint64_t c = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] != '.')
            c++;
    }
    closedir(d);
    *n = c > 0 ? c - 1 : 0; /* the directory stream's own descriptor */
    return 0;
}

int qx_metrics_process_read(qx_metrics_globals_t *g, double start_time)
{
    struct rlimit rl;
    g->have_process = 0;
    if (read_stat(g) != 0 || count_fds(&g->open_fds) != 0)
        return QX_ERR_IO;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        g->max_fds = rl.rlim_cur == RLIM_INFINITY ? 0 : (uint64_t)rl.rlim_cur;
    g->start_time = start_time;
    g->have_process = 1;
    return 0;
}
