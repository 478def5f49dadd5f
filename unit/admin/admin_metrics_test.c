/*
 * admin_metrics_test.c - the Prometheus exposition of /metrics
 * (admin/metrics_text.c): rows from several workers summed into one series
 * per label set, cumulative histogram buckets with +Inf, _sum and _count,
 * label escaping, the empty upstream label, HELP/TYPE for every family, the
 * process-wide values, and /proc/self reading. Also the admin server's
 * decisions that need no HTTP (admin.c statics, reached by including it):
 * liveness per worker tick, readiness by lifecycle and by upstream check
 * (with its cache), If-Match parsing, the token file and its comparison.
 */
#include "../admin/admin.c"

#include "admin/metrics_text.h"
#include "base/metrics.h"
#include "base/qx.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct fixture {
    qx_metrics_t *w[3];
    qx_metrics_text_t out;
    qx_metrics_globals_t g;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    for (size_t i = 0; i < QX_ARRAY_LEN(f->w); i++) {
        f->w[i] = calloc(1, sizeof(*f->w[i]));
        if (f->w[i] == NULL)
            return -1;
    }
    f->g.version = "1.2.3";
    f->g.generation = 1;
    *state = f;
    return 0;
}

/* Rows built by hand point at string literals; only rows made through
 * qx_metrics_request()/qx_metrics_upstream() own heap labels, and those
 * tests free them themselves. */
static int teardown(void **state)
{
    fixture_t *f = *state;
    for (size_t i = 0; i < QX_ARRAY_LEN(f->w); i++)
        free(f->w[i]);
    qx_metrics_text_free(&f->out);
    free(f);
    return 0;
}

static void add_req(qx_metrics_t *m, const char *up, int method, int status, int proto,
                    uint64_t count)
{
    qx_metrics_req_row_t *r = &m->req[m->nreq++];
    r->upstream = up;
    r->method = (uint16_t)method;
    r->status = (uint16_t)status;
    r->proto = (uint8_t)proto;
    r->count = count;
}

static qx_metrics_hist_row_t *add_hist(qx_metrics_t *m, const char *up, int method)
{
    qx_metrics_hist_row_t *h = &m->hist[m->nhist++];
    h->upstream = up;
    h->method = (uint16_t)method;
    return h;
}

static qx_metrics_up_row_t *add_up(qx_metrics_t *m, const char *up)
{
    qx_metrics_up_row_t *r = &m->up[m->nup++];
    r->upstream = up;
    r->address = "10.9.9.9:80";
    return r;
}

static const char *render(fixture_t *f, size_t nworkers)
{
    const qx_metrics_t *ws[3] = {f->w[0], f->w[1], f->w[2]};
    qx_metrics_text_free(&f->out);
    assert_int_equal(qx_metrics_text_render(&f->out, ws, nworkers, &f->g), 0);
    assert_non_null(f->out.data);
    assert_int_equal(strlen(f->out.data), f->out.len);
    return f->out.data;
}

/* How many lines of |text| are exactly |line|. */
static int count_line(const char *text, const char *line)
{
    int n = 0;
    size_t len = strlen(line);
    for (const char *p = text; *p;) {
        const char *e = strchr(p, '\n');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == len && memcmp(p, line, len) == 0)
            n++;
        p += l + (e ? 1 : 0);
    }
    return n;
}

#define assert_line(text, line)                                                                    \
    do {                                                                                           \
        if (count_line((text), (line)) != 1) {                                                     \
            print_error("expected exactly one line\n  %s\nin:\n%s\n", (line), (text));             \
            fail();                                                                                \
        }                                                                                          \
    } while (0)

#define assert_no_line_starting(text, prefix)                                                      \
    do {                                                                                           \
        if (line_starting((text), (prefix))) {                                                     \
            print_error("unexpected line starting with %s in:\n%s\n", (prefix), (text));           \
            fail();                                                                                \
        }                                                                                          \
    } while (0)

static int line_starting(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = text; *p;) {
        if (strncmp(p, prefix, n) == 0)
            return 1;
        const char *e = strchr(p, '\n');
        if (e == NULL)
            break;
        p = e + 1;
    }
    return 0;
}

/* Every sample line's series (name and labels) appears once, and every
 * family a sample belongs to was announced with HELP and TYPE before it. */
static void assert_well_formed(const char *text)
{
    char *copy = strdup(text);
    assert_non_null(copy);
    char **series = calloc(4096, sizeof(*series));
    assert_non_null(series);
    size_t n = 0;
    char family[256] = "";
    int have_help = 0;
    char *save = NULL;
    for (char *ln = strtok_r(copy, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
        if (strncmp(ln, "# HELP ", 7) == 0) {
            size_t l = strcspn(ln + 7, " ");
            snprintf(family, sizeof(family), "%.*s", (int)l, ln + 7);
            have_help = 1;
            continue;
        }
        if (strncmp(ln, "# TYPE ", 7) == 0) {
            size_t l = strcspn(ln + 7, " ");
            assert_true(have_help);
            assert_int_equal(l, strlen(family));
            assert_memory_equal(ln + 7, family, l);
            continue;
        }
        assert_true(ln[0] != '#');
        /* The sample belongs to the family announced last (a histogram's
         * samples add _bucket/_sum/_count). */
        assert_int_equal(strncmp(ln, family, strlen(family)), 0);
        char *sp = strrchr(ln, ' ');
        assert_non_null(sp);
        *sp = '\0';
        for (size_t i = 0; i < n; i++) {
            if (strcmp(series[i], ln) == 0) {
                print_error("series %s appears twice\n", ln);
                fail();
            }
        }
        assert_true(n < 4096);
        series[n++] = ln;
    }
    free(series);
    free(copy);
}

/* ------------------------------------------------------------------------ */

static void test_requests_summed_across_workers(void **state)
{
    fixture_t *f = *state;
    add_req(f->w[0], "10.0.0.1:80", QX_M_GET, 200, QX_P_H3, 3);
    add_req(f->w[0], "10.0.0.1:80", QX_M_GET, 502, QX_P_H3, 1);
    add_req(f->w[1], "10.0.0.2:80", QX_M_POST, 200, QX_P_H3, 5);
    add_req(f->w[1], "10.0.0.1:80", QX_M_GET, 200, QX_P_H3, 4); /* same as w0's first */
    add_req(f->w[2], "10.0.0.1:80", QX_M_GET, 200, QX_P_H3, 10);
    add_req(f->w[2], "10.0.0.1:80", QX_M_GET, 502, QX_P_H3, 1);
    add_req(f->w[2], "10.0.0.1:80", QX_M_GET, 200, QX_P_H1, 2); /* another protocol */

    const char *t = render(f, 3);
    assert_line(t, "# HELP qrux_http_requests_total Requests answered, by method, status, upstream "
                   "(\"\" when no route matched) and client protocol.");
    assert_line(t, "# TYPE qrux_http_requests_total counter");
    assert_line(t, "qrux_http_requests_total{method=\"GET\",status=\"200\",upstream="
                   "\"10.0.0.1:80\",protocol=\"h3\"} 17");
    assert_line(t, "qrux_http_requests_total{method=\"GET\",status=\"502\",upstream="
                   "\"10.0.0.1:80\",protocol=\"h3\"} 2");
    assert_line(t, "qrux_http_requests_total{method=\"POST\",status=\"200\",upstream="
                   "\"10.0.0.2:80\",protocol=\"h3\"} 5");
    assert_line(t, "qrux_http_requests_total{method=\"GET\",status=\"200\",upstream="
                   "\"10.0.0.1:80\",protocol=\"http/1.1\"} 2");
    assert_well_formed(t);

    /* Only the first worker: its own values. */
    t = render(f, 1);
    assert_line(t, "qrux_http_requests_total{method=\"GET\",status=\"200\",upstream="
                   "\"10.0.0.1:80\",protocol=\"h3\"} 3");
    assert_no_line_starting(t, "qrux_http_requests_total{method=\"POST\"");
}

static void test_rows_past_published_count_are_not_read(void **state)
{
    fixture_t *f = *state;
    add_req(f->w[0], "a:1", QX_M_GET, 200, QX_P_H3, 1);
    add_req(f->w[0], "a:1", QX_M_GET, 404, QX_P_H3, 1);
    f->w[0]->nreq = 1; /* the worker is filling row 1 but has not published it */
    const char *t = render(f, 1);
    assert_line(t, "qrux_http_requests_total{method=\"GET\",status=\"200\",upstream=\"a:1\","
                   "protocol=\"h3\"} 1");
    assert_no_line_starting(t, "qrux_http_requests_total{method=\"GET\",status=\"404\"");
}

static void test_empty_upstream_and_other_method(void **state)
{
    fixture_t *f = *state;
    add_req(f->w[0], "", QX_M_OTHER, 404, QX_P_H3, 2);
    add_req(f->w[1], NULL, QX_M_OTHER, 404, QX_P_H3, 1); /* NULL is "" too */
    add_hist(f->w[0], "", QX_M_OTHER)->buckets[0] = 2;
    const char *t = render(f, 2);
    assert_line(t, "qrux_http_requests_total{method=\"OTHER\",status=\"404\",upstream=\"\","
                   "protocol=\"h3\"} 3");
    assert_line(t, "qrux_http_request_duration_seconds_count{method=\"OTHER\",upstream=\"\"} 2");
    assert_well_formed(t);
}

static void test_histogram_cumulative(void **state)
{
    fixture_t *f = *state;
    qx_metrics_hist_row_t *a = add_hist(f->w[0], "u:1", QX_M_GET);
    qx_metrics_hist_row_t *b = add_hist(f->w[1], "u:1", QX_M_GET);
    qx_metrics_hist_row_t *c = add_hist(f->w[1], "u:1", QX_M_PUT);
    a->buckets[0] = 1;  /* <= 1 ms */
    a->buckets[2] = 2;  /* <= 10 ms */
    a->buckets[11] = 1; /* > 10 s */
    a->count = 4;
    a->sum_us = 12500000;
    b->buckets[2] = 3;
    b->buckets[8] = 1; /* <= 1 s */
    b->count = 4;
    b->sum_us = 1000250;
    c->buckets[5] = 1;
    c->count = 1;
    c->sum_us = 75000;

    const char *t = render(f, 2);
    assert_line(t, "# TYPE qrux_http_request_duration_seconds histogram");
#define B(le, v)                                                                                   \
    "qrux_http_request_duration_seconds_bucket{method=\"GET\",upstream=\"u:1\",le=\"" le "\"} " v
    assert_line(t, B("0.001", "1"));
    assert_line(t, B("0.005", "1"));
    assert_line(t, B("0.01", "6"));
    assert_line(t, B("0.025", "6"));
    assert_line(t, B("0.05", "6"));
    assert_line(t, B("0.1", "6"));
    assert_line(t, B("0.25", "6"));
    assert_line(t, B("0.5", "6"));
    assert_line(t, B("1", "7"));
    assert_line(t, B("2.5", "7"));
    assert_line(t, B("10", "7"));
    assert_line(t, B("+Inf", "8"));
#undef B
    assert_line(t, "qrux_http_request_duration_seconds_sum{method=\"GET\",upstream=\"u:1\"} "
                   "13.500250");
    assert_line(t, "qrux_http_request_duration_seconds_count{method=\"GET\",upstream=\"u:1\"} 8");
    assert_line(t, "qrux_http_request_duration_seconds_bucket{method=\"PUT\",upstream=\"u:1\","
                   "le=\"0.05\"} 0");
    assert_line(t, "qrux_http_request_duration_seconds_bucket{method=\"PUT\",upstream=\"u:1\","
                   "le=\"0.1\"} 1");
    assert_line(t, "qrux_http_request_duration_seconds_bucket{method=\"PUT\",upstream=\"u:1\","
                   "le=\"+Inf\"} 1");
    assert_line(t, "qrux_http_request_duration_seconds_sum{method=\"PUT\",upstream=\"u:1\"} "
                   "0.075000");
    assert_well_formed(t);

    /* The bucket lines of one series come in increasing le order, +Inf
     * last, followed by _sum and _count. */
    const char *p1 = strstr(t, "le=\"0.001\"");
    const char *p2 = strstr(t, "le=\"10\"");
    const char *p3 = strstr(t, "le=\"+Inf\"");
    const char *p4 = strstr(t, "_sum{method=\"GET\"");
    const char *p5 = strstr(t, "_count{method=\"GET\"");
    assert_true(p1 && p2 && p3 && p4 && p5);
    assert_true(p1 < p2 && p2 < p3 && p3 < p4 && p4 < p5);
}

/* A histogram row whose count lags its buckets (the worker stores them
 * one after the other) still renders _count equal to the +Inf bucket. */
static void test_histogram_count_matches_inf_bucket(void **state)
{
    fixture_t *f = *state;
    qx_metrics_hist_row_t *a = add_hist(f->w[0], "u:1", QX_M_GET);
    a->buckets[3] = 5;
    a->count = 4; /* a scrape between the two stores */
    const char *t = render(f, 1);
    assert_line(t, "qrux_http_request_duration_seconds_bucket{method=\"GET\",upstream=\"u:1\","
                   "le=\"+Inf\"} 5");
    assert_line(t, "qrux_http_request_duration_seconds_count{method=\"GET\",upstream=\"u:1\"} 5");
}

static void test_label_escaping(void **state)
{
    fixture_t *f = *state;
    add_req(f->w[0], "we\"ird\\name\nx", QX_M_GET, 200, QX_P_H3, 1);
    add_up(f->w[0], "we\"ird\\name\nx")->pool_idle = 2;
    f->g.version = "v\"1\\";
    const char *t = render(f, 1);
    assert_line(t, "qrux_http_requests_total{method=\"GET\",status=\"200\",upstream="
                   "\"we\\\"ird\\\\name\\nx\",protocol=\"h3\"} 1");
    assert_line(t, "qrux_upstream_pool_connections{upstream=\"we\\\"ird\\\\name\\nx\","
                   "address=\"10.9.9.9:80\",state=\"idle\"} 2");
    assert_line(t, "qrux_build_info{version=\"v\\\"1\\\\\"} 1");
    assert_well_formed(t);
}

static void test_upstream_rows(void **state)
{
    fixture_t *f = *state;
    qx_metrics_up_row_t *a = add_up(f->w[0], "10.0.0.1:80");
    qx_metrics_up_row_t *b = add_up(f->w[1], "10.0.0.1:80");
    qx_metrics_up_row_t *c = add_up(f->w[1], "10.0.0.2:80");
    a->pool_idle = 3;
    a->pool_busy = 1;
    a->timeouts = 2;
    a->connect_errors = 1;
    b->pool_idle = 4;
    b->protocol_errors = 5;
    b->body_over_limit = 6;
    b->timeouts = 1;
    c->pool_busy = 7;

    const char *t = render(f, 2);
    assert_line(t, "# TYPE qrux_upstream_pool_connections gauge");
    assert_line(t, "qrux_upstream_pool_connections{upstream=\"10.0.0.1:80\",address=\"10.9.9.9:"
                   "80\",state=\"idle\"} 7");
    assert_line(t, "qrux_upstream_pool_connections{upstream=\"10.0.0.1:80\",address=\"10.9.9.9:"
                   "80\",state=\"busy\"} 1");
    assert_line(t, "qrux_upstream_pool_connections{upstream=\"10.0.0.2:80\",address=\"10.9.9.9:"
                   "80\",state=\"idle\"} 0");
    assert_line(t, "qrux_upstream_pool_connections{upstream=\"10.0.0.2:80\",address=\"10.9.9.9:"
                   "80\",state=\"busy\"} 7");
    assert_line(t, "# TYPE qrux_upstream_timeouts_total counter");
    assert_line(t,
                "qrux_upstream_timeouts_total{upstream=\"10.0.0.1:80\",address=\"10.9.9.9:80\"} 3");
    assert_line(t,
                "qrux_upstream_timeouts_total{upstream=\"10.0.0.2:80\",address=\"10.9.9.9:80\"} 0");
    assert_line(t, "# TYPE qrux_upstream_errors_total counter");
    assert_line(t, "qrux_upstream_errors_total{upstream=\"10.0.0.1:80\",address=\"10.9.9.9:80\","
                   "kind=\"connect\"} 1");
    assert_line(t, "qrux_upstream_errors_total{upstream=\"10.0.0.1:80\",address=\"10.9.9.9:80\","
                   "kind=\"protocol\"} 5");
    assert_line(t, "qrux_upstream_errors_total{upstream=\"10.0.0.1:80\",address=\"10.9.9.9:80\","
                   "kind=\"body_too_large\"} 6");
    assert_line(t, "qrux_upstream_errors_total{upstream=\"10.0.0.2:80\",address=\"10.9.9.9:80\","
                   "kind=\"connect\"} 0");
    assert_well_formed(t);
}

static void test_worker_scalars(void **state)
{
    fixture_t *f = *state;
    f->w[0]->active_connections_h3 = 2;
    f->w[1]->active_connections_h3 = 3;
    f->w[0]->quic_handshakes_ok = 10;
    f->w[1]->quic_handshakes_ok = 5;
    f->w[1]->quic_handshakes_failed = 1;
    f->w[0]->bytes_in = 100;
    f->w[1]->bytes_out = 2000;
    f->w[0]->bytes_out = 1;
    f->w[0]->request_body_rejected = 4;
    f->w[1]->streams_reset_by_client = 6;
    f->w[0]->quic_forwarded = 2;
    f->w[1]->quic_forwarded = 3;
    const char *t = render(f, 2);
    assert_line(t, "# TYPE qrux_active_connections gauge");
    assert_line(t, "qrux_active_connections{protocol=\"h3\"} 5");
    assert_line(t, "# TYPE qrux_quic_handshakes_total counter");
    assert_line(t, "qrux_quic_handshakes_total{result=\"success\"} 15");
    assert_line(t, "qrux_quic_handshakes_total{result=\"failure\"} 1");
    assert_line(t, "# TYPE qrux_quic_datagrams_forwarded_total counter");
    assert_line(t, "qrux_quic_datagrams_forwarded_total 5");
    assert_line(t, "qrux_bytes_total{direction=\"in\"} 100");
    assert_line(t, "qrux_bytes_total{direction=\"out\"} 2001");
    assert_line(t, "# TYPE qrux_request_body_rejected_total counter");
    assert_line(t, "qrux_request_body_rejected_total 4");
    assert_line(t, "# TYPE qrux_client_stream_resets_total counter");
    assert_line(t, "qrux_client_stream_resets_total 6");
    assert_well_formed(t);
}

static void test_quic_path(void **state)
{
    fixture_t *f = *state;
    /* worker 0: a 3 ms path, worker 1: a 300 ms one, both resumed */
    qx_metrics_quic_path(f->w[0], 0.003, 0.002, 14000, 100, 2);
    qx_metrics_quic_path(f->w[1], 0.3, 0.25, 5000000, 50, 10);
    qx_metrics_quic_handshake(f->w[0], 0.004, 1, 1);
    qx_metrics_quic_handshake(f->w[1], 0.6, 1, 0);
    qx_metrics_quic_handshake(f->w[1], 0.02, 0, -1);
    const char *t = render(f, 2);
    assert_line(t, "# TYPE qrux_quic_smoothed_rtt_seconds histogram");
    assert_line(t, "qrux_quic_smoothed_rtt_seconds_bucket{le=\"0.001\"} 0");
    assert_line(t, "qrux_quic_smoothed_rtt_seconds_bucket{le=\"0.005\"} 1");
    assert_line(t, "qrux_quic_smoothed_rtt_seconds_bucket{le=\"0.25\"} 1");
    assert_line(t, "qrux_quic_smoothed_rtt_seconds_bucket{le=\"0.5\"} 2");
    assert_line(t, "qrux_quic_smoothed_rtt_seconds_bucket{le=\"+Inf\"} 2");
    assert_line(t, "qrux_quic_smoothed_rtt_seconds_sum 0.303000");
    assert_line(t, "qrux_quic_smoothed_rtt_seconds_count 2");
    assert_line(t, "qrux_quic_min_rtt_seconds_bucket{le=\"0.0025\"} 1");
    assert_line(t, "qrux_quic_min_rtt_seconds_bucket{le=\"0.25\"} 2");
    /* 5 MB is past the last bound: only +Inf holds it */
    assert_line(t, "qrux_quic_cwnd_bytes_bucket{le=\"19200\"} 1");
    assert_line(t, "qrux_quic_cwnd_bytes_bucket{le=\"4.9152e+06\"} 1");
    assert_line(t, "qrux_quic_cwnd_bytes_bucket{le=\"+Inf\"} 2");
    assert_line(t, "qrux_quic_cwnd_bytes_sum 5014000");
    assert_line(t, "qrux_quic_handshake_duration_seconds_bucket{le=\"0.005\"} 1");
    assert_line(t, "qrux_quic_handshake_duration_seconds_bucket{le=\"0.025\"} 2");
    assert_line(t, "qrux_quic_handshake_duration_seconds_count 3");
    assert_line(t, "qrux_quic_packets_sent_total 150");
    assert_line(t, "qrux_quic_packets_lost_total 12");
    assert_line(t, "qrux_quic_resumed_handshakes_total 2");
    assert_line(t, "qrux_quic_early_data_handshakes_total{result=\"accepted\"} 1");
    assert_line(t, "qrux_quic_early_data_handshakes_total{result=\"rejected\"} 1");
    assert_well_formed(t);
}

static void test_globals(void **state)
{
    fixture_t *f = *state;
    f->g.generation = 7;
    f->g.reloads[QX_SRC_FILE][QX_RELOAD_OK] = 3;
    f->g.reloads[QX_SRC_FILE][QX_RELOAD_RESTART] = 1;
    f->g.reloads[QX_SRC_API][QX_RELOAD_OK] = 2;
    f->g.reloads[QX_SRC_API][QX_RELOAD_ERROR] = 4;
    f->g.ready = 1;
    const char *t = render(f, 0); /* no workers: still a valid exposition */
    assert_line(t, "# TYPE qrux_config_generation gauge");
    assert_line(t, "qrux_config_generation 7");
    assert_line(t, "# TYPE qrux_config_reloads_total counter");
    assert_line(t, "qrux_config_reloads_total{source=\"file\",result=\"success\"} 3");
    assert_line(t, "qrux_config_reloads_total{source=\"file\",result=\"error\"} 0");
    assert_line(t, "qrux_config_reloads_total{source=\"file\",result=\"restart_required\"} 1");
    assert_line(t, "qrux_config_reloads_total{source=\"api\",result=\"success\"} 2");
    assert_line(t, "qrux_config_reloads_total{source=\"api\",result=\"error\"} 4");
    assert_line(t, "qrux_config_reloads_total{source=\"api\",result=\"restart_required\"} 0");
    assert_line(t, "# TYPE qrux_build_info gauge");
    assert_line(t, "qrux_build_info{version=\"1.2.3\"} 1");
    assert_line(t, "# TYPE qrux_ready gauge");
    assert_line(t, "qrux_ready 1");
    /* Families without samples are still announced. */
    assert_line(t, "# TYPE qrux_http_requests_total counter");
    assert_line(t, "# TYPE qrux_http_request_duration_seconds histogram");
    /* No process values were read. */
    assert_no_line_starting(t, "process_");
    assert_well_formed(t);

    /* No certificate read (a unit test, qrux check): no expiry gauge. */
    assert_no_line_starting(t, "qrux_tls_certificate_expiry_timestamp_seconds");

    f->g.ready = 0;
    f->g.cert_not_after = 1893456000; /* 2030-01-01T00:00:00Z */
    t = render(f, 0);
    assert_line(t, "qrux_ready 0");
    assert_line(t, "# TYPE qrux_tls_certificate_expiry_timestamp_seconds gauge");
    assert_line(t, "qrux_tls_certificate_expiry_timestamp_seconds 1893456000");
    assert_well_formed(t);
}

/* The XDP filter's counters: every reason announced, 0 without the filter. */
static void test_xdp(void **state)
{
    fixture_t *f = *state;
    const char *t = render(f, 0);
    assert_line(t, "# TYPE qrux_xdp_attached gauge");
    assert_line(t, "qrux_xdp_attached 0");
    assert_line(t, "# TYPE qrux_xdp_packets_total counter");
    assert_line(t, "qrux_xdp_packets_total{verdict=\"pass\",reason=\"not_quic\"} 0");
    assert_line(t, "qrux_xdp_packets_total{verdict=\"drop\",reason=\"denied\"} 0");
    assert_well_formed(t);

    f->g.xdp_attached = 1;
    f->g.xdp_packets[QX_XDP_PASS_SHORT] = 12345;
    f->g.xdp_packets[QX_XDP_DROP_INITIAL_SMALL] = 50;
    f->g.xdp_packets[QX_XDP_DROP_RATE] = 7;
    t = render(f, 0);
    assert_line(t, "qrux_xdp_attached 1");
    assert_line(t, "qrux_xdp_packets_total{verdict=\"pass\",reason=\"short_header\"} 12345");
    assert_line(t, "qrux_xdp_packets_total{verdict=\"drop\",reason=\"initial_too_small\"} 50");
    assert_line(t, "qrux_xdp_packets_total{verdict=\"drop\",reason=\"rate_limited\"} 7");
    assert_line(t, "qrux_xdp_packets_total{verdict=\"pass\",reason=\"initial\"} 0");
}

static void test_process_values(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(qx_metrics_process_read(&f->g, 1700000000.25), 0);
    assert_int_equal(f->g.have_process, 1);
    assert_true(f->g.rss_bytes > 0);
    assert_true(f->g.vsize_bytes >= f->g.rss_bytes);
    assert_true(f->g.open_fds >= 3); /* stdin, stdout, stderr */
    assert_true(f->g.cpu_seconds >= 0);
    const char *t = render(f, 0);
    assert_line(t, "# TYPE process_cpu_seconds_total counter");
    assert_line(t, "# TYPE process_resident_memory_bytes gauge");
    assert_line(t, "# TYPE process_open_fds gauge");
    assert_line(t, "# TYPE process_start_time_seconds gauge");
    assert_line(t, "process_start_time_seconds 1700000000.250");
    char line[64];
    snprintf(line, sizeof(line), "process_resident_memory_bytes %llu",
             (unsigned long long)f->g.rss_bytes);
    assert_line(t, line);
    assert_well_formed(t);
}

/* Rows written through the data plane's own functions (heap labels, real
 * bucket choice) sum with each other like hand-built ones. */
static void test_rows_from_metrics_module(void **state)
{
    fixture_t *f = *state;
    qx_metrics_request(f->w[0], QX_P_H3, QX_M_GET, 200, "127.0.0.1:8080", 0.003);
    qx_metrics_request(f->w[0], QX_P_H3, QX_M_GET, 200, "127.0.0.1:8080", 0.2);
    qx_metrics_request(f->w[1], QX_P_H3, QX_M_GET, 200, "127.0.0.1:8080", 0.0005);
    qx_metrics_request(f->w[1], QX_P_H3, QX_M_GET, 502, NULL, 0.001);
    qx_metrics_upstream(f->w[0], "127.0.0.1:8080", "127.0.0.1:8080")->pool_idle = 1;
    qx_metrics_upstream(f->w[1], "127.0.0.1:8080", "127.0.0.1:8080")->pool_idle = 2;

    const char *t = render(f, 2);
    assert_line(t, "qrux_http_requests_total{method=\"GET\",status=\"200\",upstream="
                   "\"127.0.0.1:8080\",protocol=\"h3\"} 3");
    assert_line(t, "qrux_http_requests_total{method=\"GET\",status=\"502\",upstream=\"\","
                   "protocol=\"h3\"} 1");
    assert_line(t, "qrux_http_request_duration_seconds_bucket{method=\"GET\",upstream="
                   "\"127.0.0.1:8080\",le=\"0.001\"} 1");
    assert_line(t, "qrux_http_request_duration_seconds_bucket{method=\"GET\",upstream="
                   "\"127.0.0.1:8080\",le=\"0.005\"} 2");
    assert_line(t, "qrux_http_request_duration_seconds_bucket{method=\"GET\",upstream="
                   "\"127.0.0.1:8080\",le=\"0.25\"} 3");
    assert_line(t, "qrux_http_request_duration_seconds_sum{method=\"GET\",upstream="
                   "\"127.0.0.1:8080\"} 0.203500");
    assert_line(t, "qrux_upstream_pool_connections{upstream=\"127.0.0.1:8080\",address=\"127.0.0.1:"
                   "8080\",state=\"idle\"} 3");
    assert_well_formed(t);
    qx_metrics_free(f->w[0]);
    qx_metrics_free(f->w[1]);
}

/* A full table (every row in use, the last one shared past capacity) on
 * several workers renders each label set once. */
static void test_full_tables(void **state)
{
    fixture_t *f = *state;
    static char names[QX_METRICS_ROWS][24];
    for (size_t i = 0; i < QX_METRICS_ROWS; i++)
        snprintf(names[i], sizeof(names[i]), "10.0.%zu.%zu:80", i / 256, i % 256);
    for (size_t w = 0; w < 3; w++) {
        for (size_t i = 0; i < QX_METRICS_ROWS; i++)
            add_req(f->w[w], names[i], QX_M_GET, 200, QX_P_H3, 1);
    }
    const char *t = render(f, 3);
    assert_line(t, "qrux_http_requests_total{method=\"GET\",status=\"200\",upstream="
                   "\"10.0.1.255:80\",protocol=\"h3\"} 3");
    assert_well_formed(t);
}

/* ------------------------------------------------------------------------
 * admin.c: probes and helpers */

static qx_runtime_t *runtime_new(const char *routes_yaml)
{
    char yaml[1024], err[512] = "";
    snprintf(yaml, sizeof(yaml),
             "server:\n  listen: \"[::]:8443\"\n  cert: c.pem\n  key: k.pem\nroutes:\n%s",
             routes_yaml);
    qx_config_t *cfg = NULL;
    if (qx_config_load_buf(yaml, strlen(yaml), NULL, &cfg, err, sizeof(err)) != 0)
        fail_msg("config: %s\n%s", err, yaml);
    qx_snapshot_t *snap = NULL;
    assert_int_equal(qx_snapshot_new(&snap, cfg, 1, NULL, NULL), 0);
    qx_runtime_t *rt = calloc(1, sizeof(*rt));
    assert_non_null(rt);
    assert_int_equal(qx_runtime_init(rt, snap), 0);
    return rt;
}

static void runtime_del(qx_runtime_t *rt)
{
    free(rt->workers);
    qx_runtime_free(rt);
    free(rt);
}

static void test_liveness(void **state)
{
    (void)state;
    qx_runtime_t *rt = runtime_new("  - match: \"*\"\n    upstream: \"127.0.0.1:9\"\n");
    rt->nworkers = 3;
    rt->workers = calloc(3, sizeof(*rt->workers));
    assert_non_null(rt->workers);
    for (unsigned i = 0; i < 3; i++) {
        rt->workers[i].ctx.id = i;
        rt->workers[i].ctx.state = QX_W_RUNNING;
    }
    char why[128];
    const uint64_t now = 1000000;

    /* Not yet ticked (0): not judged. */
    assert_int_equal(liveness(rt, now, why, sizeof(why)), 1);
    assert_string_equal(why, "ok");

    rt->workers[0].last_tick_ms = now - 900;
    rt->workers[1].last_tick_ms = now - 5000; /* exactly at the limit: still live */
    rt->workers[2].last_tick_ms = now;
    assert_int_equal(liveness(rt, now, why, sizeof(why)), 1);

    rt->workers[1].last_tick_ms = now - 7250;
    assert_int_equal(liveness(rt, now, why, sizeof(why)), 0);
    assert_string_equal(why, "worker 1 wedged (last tick 7.2s ago)");

    /* A worker whose drain finished stops ticking; that is not a wedge. */
    rt->workers[1].ctx.state = QX_W_STOPPED;
    assert_int_equal(liveness(rt, now, why, sizeof(why)), 1);

    /* A draining worker still ticks and is still judged. */
    rt->workers[2].ctx.state = QX_W_DRAINING;
    rt->workers[2].last_tick_ms = now - 60000;
    assert_int_equal(liveness(rt, now, why, sizeof(why)), 0);
    assert_string_equal(why, "worker 2 wedged (last tick 60.0s ago)");

    /* A tick stamped after |now| (read races the store) is fine. */
    rt->workers[2].last_tick_ms = now + 5;
    assert_int_equal(liveness(rt, now, why, sizeof(why)), 1);
    runtime_del(rt);
}

static void test_readiness_lifecycle(void **state)
{
    (void)state;
    qx_runtime_t *rt = runtime_new("  - match: \"*\"\n    upstream: \"127.0.0.1:9\"\n");
    qx_admin_t a = {.rt = rt};
    char why[300];
    assert_int_equal(readiness(&a, why, sizeof(why)), 0);
    assert_string_equal(why, "starting");
    qx_runtime_set_lifecycle(rt, QX_LC_LIVE);
    assert_int_equal(readiness(&a, why, sizeof(why)), 1);
    assert_string_equal(why, "ready");
    qx_runtime_set_lifecycle(rt, QX_LC_DRAINING);
    assert_int_equal(readiness(&a, why, sizeof(why)), 0);
    assert_string_equal(why, "draining");
    qx_runtime_set_lifecycle(rt, QX_LC_LIVE); /* the lifecycle never goes back */
    assert_int_equal(readiness(&a, why, sizeof(why)), 0);
    qx_runtime_set_lifecycle(rt, QX_LC_STOPPED);
    assert_int_equal(readiness(&a, why, sizeof(why)), 0);
    assert_string_equal(why, "stopping");
    runtime_del(rt);
}

/* A loopback port bound but not listening: connects are refused. */
static int bound_socket(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    socklen_t sl = sizeof(sin);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

static void test_readiness_upstreams(void **state)
{
    (void)state;
    int p1, p2, p3;
    int fd1 = bound_socket(&p1);
    int fd2 = bound_socket(&p2);
    int fd3 = bound_socket(&p3);
    assert_int_equal(listen(fd1, 8), 0); /* the first upstream is up */
    char routes[256];
    snprintf(routes, sizeof(routes),
             "  - match: a.test\n    upstream: \"127.0.0.1:%d\"\n"
             "  - match: b.test\n    upstream: \"127.0.0.1:%d\"\n"
             "  - match: \"*\"\n    upstreams: [\"127.0.0.1:%d\", \"127.0.0.1:%d\"]\n",
             p1, p2, p2, p3);
    qx_runtime_t *rt = runtime_new(routes);
    qx_runtime_set_lifecycle(rt, QX_LC_LIVE);
    qx_admin_t a = {.rt = rt, .ready_requires_upstream = 1};
    char why[300], want[128];

    assert_int_equal(readiness(&a, why, sizeof(why)), 0);
    snprintf(want, sizeof(want), "upstream 127.0.0.1:%d not accepting connections", p2);
    assert_string_equal(why, want);

    /* The app behind b.test comes up; the cached answer holds for up to a
     * second. Route "*" is ready with one of its two upstreams (failover
     * serves it). */
    assert_int_equal(listen(fd2, 8), 0);
    assert_int_equal(readiness(&a, why, sizeof(why)), 0);
    a.up_checked_ms -= UPSTREAM_CHECK_CACHE_MS; /* the cache expires */
    assert_int_equal(readiness(&a, why, sizeof(why)), 1);
    assert_string_equal(why, "ready");
    close(fd1);
    close(fd2);
    close(fd3);
    runtime_del(rt);

    /* Two upstreams of one route, both down: the route is named. */
    int q1, q2, q3;
    int g1 = bound_socket(&q1), g2 = bound_socket(&q2), g3 = bound_socket(&q3);
    assert_int_equal(listen(g1, 8), 0);
    snprintf(routes, sizeof(routes),
             "  - match: a.test\n    upstream: \"127.0.0.1:%d\"\n"
             "  - match: \"*\"\n    upstreams: [\"127.0.0.1:%d\", \"127.0.0.1:%d\"]\n",
             q1, q2, q3);
    rt = runtime_new(routes);
    qx_runtime_set_lifecycle(rt, QX_LC_LIVE);
    a = (qx_admin_t){.rt = rt, .ready_requires_upstream = 1};
    assert_int_equal(readiness(&a, why, sizeof(why)), 0);
    assert_string_equal(why, "no upstream of route * accepting connections (2 tried)");
    assert_int_equal(listen(g3, 8), 0);
    a.up_checked_ms -= UPSTREAM_CHECK_CACHE_MS;
    assert_int_equal(readiness(&a, why, sizeof(why)), 1);
    assert_string_equal(why, "ready");

    /* Draining wins over healthy upstreams. */
    qx_runtime_set_lifecycle(rt, QX_LC_DRAINING);
    assert_int_equal(readiness(&a, why, sizeof(why)), 0);
    assert_string_equal(why, "draining");
    close(g1);
    close(g2);
    close(g3);
    runtime_del(rt);
}

static void test_parse_if_match(void **state)
{
    (void)state;
    uint64_t g = 99;
    assert_int_equal(parse_if_match(NULL, &g), 0);
    assert_int_equal(parse_if_match("*", &g), 0);
    assert_int_equal(parse_if_match("7", &g), 1);
    assert_int_equal(g, 7);
    assert_int_equal(parse_if_match("\"12\"", &g), 1);
    assert_int_equal(g, 12);
    assert_int_equal(parse_if_match(" 3 ", &g), 1);
    assert_int_equal(g, 3);
    assert_int_equal(parse_if_match("0", &g), 1);
    assert_int_equal(g, 0);
    assert_int_equal(parse_if_match("18446744073709551615", &g), 1);
    assert_int_equal(g, UINT64_MAX);
    assert_int_equal(parse_if_match("18446744073709551616", &g), -1);
    assert_int_equal(parse_if_match("", &g), -1);
    assert_int_equal(parse_if_match("abc", &g), -1);
    assert_int_equal(parse_if_match("7x", &g), -1);
    assert_int_equal(parse_if_match("\"7", &g), -1);
    assert_int_equal(parse_if_match("W/\"7\"", &g), -1);
    assert_int_equal(parse_if_match("-1", &g), -1);
    assert_int_equal(parse_if_match("1, 2", &g), -1);
}

static void test_token(void **state)
{
    (void)state;
    assert_true(token_equal("secret", 6, "secret", 6));
    assert_false(token_equal("secreT", 6, "secret", 6));
    assert_false(token_equal("secre", 5, "secret", 6));
    assert_false(token_equal("secretx", 7, "secret", 6));
    assert_false(token_equal("", 0, "secret", 6));
    /* A NUL inside the given bytes does not end the comparison. */
    assert_false(token_equal("secret\0x", 8, "secret", 6));

    char path[] = "/tmp/qx-admin-token-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "tok en\r\n \n", 10), 10);
    close(fd);
    qx_admin_t a = {0};
    char err[256] = "";
    assert_int_equal(read_token(&a, path, err, sizeof(err)), 0);
    assert_string_equal(a.token, "tok en"); /* inner space kept, trailing whitespace not */
    assert_int_equal(a.token_len, 6);
    free(a.token);

    fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, " \n", 2), 2);
    close(fd);
    qx_admin_t b = {0};
    assert_int_equal(read_token(&b, path, err, sizeof(err)), QX_ERR_CONFIG);
    assert_non_null(strstr(err, "admin.token_file"));
    assert_non_null(strstr(err, "empty"));
    assert_null(b.token);
    unlink(path);

    qx_admin_t c = {0};
    assert_int_equal(read_token(&c, path, err, sizeof(err)), QX_ERR_CONFIG);
    assert_non_null(strstr(err, "admin.token_file"));
    assert_non_null(strstr(err, path));
}

static void test_method_allowed(void **state)
{
    (void)state;
    assert_true(method_allowed("GET, HEAD, PUT", "GET"));
    assert_true(method_allowed("GET, HEAD, PUT", "HEAD"));
    assert_true(method_allowed("GET, HEAD, PUT", "PUT"));
    assert_false(method_allowed("GET, HEAD, PUT", "POST"));
    assert_false(method_allowed("GET, HEAD, PUT", "GE"));
    assert_false(method_allowed("GET, HEAD, PUT", "get"));
    assert_true(method_allowed("POST", "POST"));
    assert_false(method_allowed("POST", "POSTX"));
    assert_int_equal(find_endpoint("/metrics"), EP_METRICS);
    assert_int_equal(find_endpoint("/metrics/"), -1);
    assert_int_equal(find_endpoint("/"), EP_STATUS_PAGE); /* the status page */
    assert_int_equal(find_endpoint("/status.json"), EP_STATUS_JSON);
    assert_int_equal(find_endpoint("//"), -1);
    assert_int_equal(find_endpoint("/index.html"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_requests_summed_across_workers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rows_past_published_count_are_not_read, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_empty_upstream_and_other_method, setup, teardown),
        cmocka_unit_test_setup_teardown(test_histogram_cumulative, setup, teardown),
        cmocka_unit_test_setup_teardown(test_histogram_count_matches_inf_bucket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_label_escaping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_scalars, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quic_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_globals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_xdp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_process_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rows_from_metrics_module, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_tables, setup, teardown),
        cmocka_unit_test(test_liveness),
        cmocka_unit_test(test_readiness_lifecycle),
        cmocka_unit_test(test_readiness_upstreams),
        cmocka_unit_test(test_parse_if_match),
        cmocka_unit_test(test_token),
        cmocka_unit_test(test_method_allowed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
