/*
 * metrics_test.c - per-worker counters (proxy/base/metrics.c): method labels,
 * request rows per (method, status, upstream), histogram buckets and sums,
 * upstream rows, fixed capacity, and freeing the interned labels.
 */
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

static int setup(void **state)
{
    qx_metrics_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return -1;
    *state = m;
    return 0;
}

static int teardown(void **state)
{
    qx_metrics_t *m = *state;
    qx_metrics_free(m);
    free(m);
    return 0;
}

static int midx(const char *s)
{
    return qx_metrics_method_index(s, strlen(s));
}

static void test_method_index(void **state)
{
    (void)state;
    assert_int_equal(midx("GET"), QX_M_GET);
    assert_int_equal(midx("HEAD"), QX_M_HEAD);
    assert_int_equal(midx("POST"), QX_M_POST);
    assert_int_equal(midx("PUT"), QX_M_PUT);
    assert_int_equal(midx("DELETE"), QX_M_DELETE);
    assert_int_equal(midx("CONNECT"), QX_M_CONNECT);
    assert_int_equal(midx("OPTIONS"), QX_M_OPTIONS);
    assert_int_equal(midx("TRACE"), QX_M_TRACE);
    assert_int_equal(midx("PATCH"), QX_M_PATCH);

    /* Methods are case-sensitive; anything else shares one label so a
     * client cannot grow the label space. */
    assert_int_equal(midx("get"), QX_M_OTHER);
    assert_int_equal(midx("Get"), QX_M_OTHER);
    assert_int_equal(midx("GE"), QX_M_OTHER);
    assert_int_equal(midx("GETS"), QX_M_OTHER);
    assert_int_equal(midx("PROPFIND"), QX_M_OTHER);
    assert_int_equal(midx(""), QX_M_OTHER);
    assert_int_equal(midx("OTHER"), QX_M_OTHER);
    /* Only len bytes count. */
    assert_int_equal(qx_metrics_method_index("POSTMAN", 4), QX_M_POST);
    assert_int_equal(qx_metrics_method_index("GET", 2), QX_M_OTHER);

    for (int i = 0; i < QX_M_COUNT; i++)
        assert_int_equal(midx(qx_metrics_method_name(i)), i);
    assert_string_equal(qx_metrics_method_name(QX_M_GET), "GET");
    assert_string_equal(qx_metrics_method_name(QX_M_PATCH), "PATCH");
    assert_string_equal(qx_metrics_method_name(QX_M_OTHER), "OTHER");
    assert_string_equal(qx_metrics_method_name(-1), "OTHER");
    assert_string_equal(qx_metrics_method_name(QX_M_COUNT), "OTHER");
    assert_string_equal(qx_metrics_method_name(1000), "OTHER");
}

static const qx_metrics_req_row_t *find_req(const qx_metrics_t *m, int method, int status,
                                            const char *up)
{
    for (size_t i = 0; i < m->nreq; i++) {
        const qx_metrics_req_row_t *r = &m->req[i];
        if (r->method == method && r->status == status && strcmp(r->upstream, up) == 0)
            return r;
    }
    return NULL;
}

static void test_request_rows(void **state)
{
    qx_metrics_t *m = *state;
    char up[16];
    snprintf(up, sizeof(up), "%s", "10.0.0.1:80");

    qx_metrics_request(m, QX_P_H3, QX_M_GET, 200, up, 0.002);
    qx_metrics_request(m, QX_P_H3, QX_M_GET, 200, "10.0.0.1:80",
                       0.003); /* same row, other pointer */
    qx_metrics_request(m, QX_P_H3, QX_M_GET, 200, "10.0.0.2:80", 0.002);
    qx_metrics_request(m, QX_P_H3, QX_M_POST, 200, "10.0.0.1:80", 0.002);
    qx_metrics_request(m, QX_P_H3, QX_M_GET, 502, "10.0.0.1:80", 0.002);
    qx_metrics_request(m, QX_P_H3, QX_M_GET, 200, up, 0.002);
    assert_int_equal(m->nreq, 4);

    /* Labels are copies: the caller's buffer may change or go away. */
    snprintf(up, sizeof(up), "%s", "changed");
    assert_string_equal(m->req[0].upstream, "10.0.0.1:80");
    assert_ptr_not_equal(m->req[0].upstream, up);

    const qx_metrics_req_row_t *r = find_req(m, QX_M_GET, 200, "10.0.0.1:80");
    assert_non_null(r);
    assert_int_equal(r->count, 3);
    r = find_req(m, QX_M_GET, 200, "10.0.0.2:80");
    assert_non_null(r);
    assert_int_equal(r->count, 1);
    r = find_req(m, QX_M_POST, 200, "10.0.0.1:80");
    assert_non_null(r);
    assert_int_equal(r->count, 1);
    r = find_req(m, QX_M_GET, 502, "10.0.0.1:80");
    assert_non_null(r);
    assert_int_equal(r->count, 1);
    assert_null(find_req(m, QX_M_POST, 502, "10.0.0.1:80"));

    /* Rows are in order of first use. */
    assert_int_equal(m->req[0].method, QX_M_GET);
    assert_int_equal(m->req[0].status, 200);
    assert_int_equal(m->req[3].status, 502);

    /* Histogram rows are per (method, upstream): status does not split them. */
    assert_int_equal(m->nhist, 3);
    assert_int_equal(m->hist[0].method, QX_M_GET);
    assert_string_equal(m->hist[0].upstream, "10.0.0.1:80");
    assert_int_equal(m->hist[0].count, 4);
    assert_string_equal(m->hist[1].upstream, "10.0.0.2:80");
    assert_int_equal(m->hist[1].count, 1);
    assert_int_equal(m->hist[2].method, QX_M_POST);
    assert_int_equal(m->hist[2].count, 1);
}

static void test_histogram(void **state)
{
    qx_metrics_t *m = *state;
    /* {seconds, bucket}: a value on a bound belongs to that bound (le). */
    static const struct {
        double s;
        int bucket;
    } cases[] = {
        {0.0, 0},  {0.0005, 0}, {0.001, 0}, {0.0011, 1}, {0.005, 1}, {0.0051, 2},
        {0.01, 2}, {0.02, 3},   {0.025, 3}, {0.04, 4},   {0.07, 5},  {0.1, 5},
        {0.2, 6},  {0.3, 7},    {0.5, 7},   {0.75, 8},   {1.0, 8},   {2.0, 9},
        {2.5, 9},  {5.0, 10},   {10.0, 10}, {10.5, 11},  {3600, 11},
    };
    uint64_t want[QX_HIST_NBUCKETS] = {0};
    for (size_t i = 0; i < QX_ARRAY_LEN(cases); i++) {
        qx_metrics_request(m, QX_P_H3, QX_M_GET, 200, "u", cases[i].s);
        want[cases[i].bucket]++;
    }
    assert_int_equal(m->nhist, 1);
    const qx_metrics_hist_row_t *h = &m->hist[0];
    assert_int_equal(h->count, QX_ARRAY_LEN(cases));
    uint64_t total = 0;
    for (int b = 0; b < QX_HIST_NBUCKETS; b++) {
        if (h->buckets[b] != want[b])
            fail_msg("bucket %d: got %llu, want %llu", b, (unsigned long long)h->buckets[b],
                     (unsigned long long)want[b]);
        total += h->buckets[b];
    }
    assert_int_equal(total, h->count);

    /* One sample each: the bucket of each single value, alone. */
    qx_metrics_request(m, QX_P_H3, QX_M_HEAD, 200, "u", 0.0011);
    assert_int_equal(m->nhist, 2);
    assert_int_equal(m->hist[1].buckets[1], 1);
    assert_int_equal(m->hist[1].count, 1);
    assert_int_equal(m->hist[1].sum_us, 1100);

    /* The sum in microseconds, with values exact in binary. */
    qx_metrics_request(m, QX_P_H3, QX_M_PUT, 201, "u", 0.5);
    qx_metrics_request(m, QX_P_H3, QX_M_PUT, 201, "u", 0.25);
    qx_metrics_request(m, QX_P_H3, QX_M_PUT, 204, "u", 2.0);
    qx_metrics_request(m, QX_P_H3, QX_M_PUT, 201, "u", 0.125);
    assert_int_equal(m->nhist, 3);
    h = &m->hist[2];
    assert_int_equal(h->method, QX_M_PUT);
    assert_int_equal(h->count, 4);
    assert_int_equal(h->sum_us, 2875000);
    assert_int_equal(h->buckets[6], 2); /* 0.125 and 0.25 are in (0.1, 0.25] */
    assert_int_equal(h->buckets[7], 1); /* 0.5 */
    assert_int_equal(h->buckets[8], 0);
    assert_int_equal(h->buckets[9], 1); /* 2.0 */
}

static void test_upstream_rows(void **state)
{
    qx_metrics_t *m = *state;
    char name[16];
    snprintf(name, sizeof(name), "%s", "10.0.0.1:80");

    qx_metrics_up_row_t *a = qx_metrics_upstream(m, name, "10.1.1.1:80");
    assert_non_null(a);
    assert_int_equal(m->nup, 1);
    assert_string_equal(a->upstream, "10.0.0.1:80");
    assert_ptr_not_equal(a->upstream, name);
    qx_metrics_up_row_t *b = qx_metrics_upstream(m, "10.0.0.2:80", "10.1.1.1:80");
    assert_ptr_not_equal(a, b);
    assert_int_equal(m->nup, 2);
    /* Same content, other pointer: the same row. */
    assert_ptr_equal(qx_metrics_upstream(m, "10.0.0.1:80", "10.1.1.1:80"), a);
    assert_int_equal(m->nup, 2);

    /* New rows start at zero; counters are per row. */
    assert_int_equal(a->timeouts, 0);
    assert_int_equal(a->pool_idle, 0);
    qx_cnt_add(&a->timeouts, 2);
    qx_cnt_add(&b->connect_errors, 1);
    qx_cnt_add(&a->pool_busy, 5);
    qx_cnt_sub(&a->pool_busy, 3);
    assert_int_equal(a->timeouts, 2);
    assert_int_equal(a->connect_errors, 0);
    assert_int_equal(b->connect_errors, 1);
    assert_int_equal(b->timeouts, 0);
    assert_int_equal(a->pool_busy, 2);

    snprintf(name, sizeof(name), "%s", "changed");
    assert_string_equal(a->upstream, "10.0.0.1:80");
}

static void test_capacity(void **state)
{
    qx_metrics_t *m = *state;
    /* Fill every request row but the last with distinct statuses. */
    for (int i = 0; i < QX_METRICS_ROWS - 1; i++)
        qx_metrics_request(m, QX_P_H3, QX_M_GET, 100 + i, "u", 0.001);
    assert_int_equal(m->nreq, QX_METRICS_ROWS - 1);
    /* Past capacity the table does not grow; the count lands in the last
     * row, whose labels name no upstream, method or status of another. */
    qx_metrics_request(m, QX_P_H3, QX_M_POST, 999, "v", 0.001);
    qx_metrics_request(m, QX_P_H2, QX_M_PUT, 201, "w", 0.001);
    assert_int_equal(m->nreq, QX_METRICS_ROWS);
    qx_metrics_req_row_t *o = &m->req[QX_METRICS_ROWS - 1];
    assert_int_equal(o->count, 2);
    assert_string_equal(o->upstream, QX_METRICS_OTHER);
    assert_int_equal(o->status, 0);
    assert_int_equal(o->method, QX_M_OTHER);
    assert_int_equal(m->req[QX_METRICS_ROWS - 2].count, 1);
    assert_string_equal(m->req[QX_METRICS_ROWS - 2].upstream, "u");
    /* Existing rows are still found. */
    qx_metrics_request(m, QX_P_H3, QX_M_GET, 100, "u", 0.001);
    assert_int_equal(m->req[0].count, 2);

    /* Upstream rows: one per upstream up to twice the config's maximum;
     * past that the shared last row is _other, never a real upstream. */
    const size_t nup = QX_ARRAY_LEN(m->up);
    assert_true(nup >= 2 * 1024);
    for (size_t i = 0; i < nup - 1; i++) {
        char name[32];
        snprintf(name, sizeof(name), "up-%zu", i);
        qx_metrics_up_row_t *r = qx_metrics_upstream(m, name, "10.1.1.1:80");
        assert_non_null(r);
        assert_string_equal(r->upstream, name);
    }
    assert_int_equal(m->nup, nup - 1);
    qx_metrics_up_row_t *other = qx_metrics_upstream(m, "one-too-many", "10.1.1.1:80");
    assert_ptr_equal(other, &m->up[nup - 1]);
    assert_string_equal(other->upstream, QX_METRICS_OTHER);
    assert_ptr_equal(qx_metrics_upstream(m, "two-too-many", "10.1.1.1:80"), other);
    assert_int_equal(m->nup, nup);
    assert_ptr_equal(qx_metrics_upstream(m, "up-0", "10.1.1.1:80"), &m->up[0]);
    assert_ptr_equal(qx_metrics_upstream(m, "up-600", "10.1.1.1:80"), &m->up[600]);

    /* Histogram rows: distinct (method, upstream) pairs up to capacity. */
    const size_t nhist = QX_ARRAY_LEN(m->hist);
    for (size_t i = 0; i < nhist + 3; i++) {
        char name[32];
        snprintf(name, sizeof(name), "h-%zu", i);
        qx_metrics_request(m, QX_P_H3, QX_M_DELETE, 200, name, 0.001);
    }
    assert_int_equal(m->nhist, nhist);
    assert_string_equal(m->hist[nhist - 1].upstream, QX_METRICS_OTHER);
    assert_int_equal(m->hist[nhist - 1].count, 7); /* 3 rows were taken above */
}

static void test_free_all(void **state)
{
    qx_metrics_t *m = *state;
    qx_metrics_request(m, QX_P_H3, QX_M_GET, 200, "a", 0.1);
    qx_metrics_request(m, QX_P_H3, QX_M_POST, 500, "b", 0.2);
    qx_metrics_upstream(m, "a", "10.1.1.1:80");
    qx_metrics_upstream(m, "c", "10.1.1.1:80");
    m->bytes_in = 7;
    assert_int_equal(m->nreq, 2);

    qx_metrics_free(m);
    /* Everything is released and zeroed (valgrind checks the labels). */
    assert_int_equal(m->nreq, 0);
    assert_int_equal(m->nhist, 0);
    assert_int_equal(m->nup, 0);
    assert_int_equal(m->bytes_in, 0);
    assert_null(m->req[0].upstream);
    assert_int_equal(m->req[0].count, 0);
    assert_int_equal(m->hist[0].count, 0);

    /* The table is usable again, and free accepts NULL and a second call. */
    qx_metrics_request(m, QX_P_H3, QX_M_GET, 200, "a", 0.1);
    assert_int_equal(m->nreq, 1);
    assert_int_equal(m->req[0].count, 1);
    qx_metrics_free(m);
    qx_metrics_free(m);
    qx_metrics_free(NULL);
}

/* Kept last: with the label bug it aborts the process (free of a string
 * literal), and the tests above must have reported by then. */
static void test_free_no_upstream(void **state)
{
    qx_metrics_t *m = *state;
    /* A request answered before an upstream was picked (421, 413, ...). */
    qx_metrics_request(m, QX_P_H3, QX_M_GET, 421, NULL, 0.001);
    qx_metrics_request(m, QX_P_H3, QX_M_GET, 421, NULL, 0.001);
    assert_int_equal(m->nreq, 1);
    assert_string_equal(m->req[0].upstream, "");
    assert_int_equal(m->req[0].count, 2);
    /* "" and NULL are the same label. */
    qx_metrics_request(m, QX_P_H3, QX_M_GET, 421, "", 0.001);
    assert_int_equal(m->nreq, 1);
    assert_int_equal(m->req[0].count, 3);
    qx_metrics_up_row_t *u = qx_metrics_upstream(m, NULL, "10.1.1.1:80");
    assert_non_null(u);
    assert_string_equal(u->upstream, "");
    /* Freeing must release only what was allocated. */
    qx_metrics_free(m);
    assert_int_equal(m->nreq, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_method_index),
        cmocka_unit_test_setup_teardown(test_request_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_histogram, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_capacity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_no_upstream, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
