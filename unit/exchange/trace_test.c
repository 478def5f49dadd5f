/*
 * trace_test.c - trace context and request ids (proxy/trace.c): which
 * traceparent values are continued, what a new trace looks like, request
 * id checks, and the fields that go upstream.
 */
#include "exchange/trace.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#define H(n, v)                                                                                    \
    {                                                                                              \
        n, sizeof(n) - 1, v, sizeof(v) - 1                                                         \
    }

static const char good_tp[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

static void rnd_fill(uint8_t *r)
{
    for (int i = 0; i < QX_TRACE_RANDOM; i++)
        r[i] = (uint8_t)(0xa0 + i);
}

static const qx_hdr_t *find(const qx_hdr_t *h, size_t n, const char *name)
{
    const qx_hdr_t *found = NULL;
    for (size_t i = 0; i < n; i++) {
        if (h[i].namelen == strlen(name) && memcmp(h[i].name, name, h[i].namelen) == 0) {
            assert_null(found); /* each name at most once */
            found = &h[i];
        }
    }
    return found;
}

static void test_valid_traceparent_continued(void **state)
{
    (void)state;
    uint8_t r[QX_TRACE_RANDOM];
    rnd_fill(r);
    qx_hdr_t in[] = {H("accept", "*/*"), H("Traceparent", good_tp), H("tracestate", "k=v"),
                     H("X-Request-ID", "abc-123_x.y:z")};
    qx_trace_t t;
    qx_trace_init(&t, in, 4, r);
    assert_int_equal(t.continued, 1);
    assert_string_equal(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    /* same trace and flags, qrux's own parent id (from rnd[16..24), first bit set) */
    assert_string_equal(t.traceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-b1b1b2b3b4b5b6b7-01");
    assert_string_equal(t.request_id, "abc-123_x.y:z");

    qx_hdr_t out[6];
    size_t n = qx_trace_fields(&t, in, 4, out);
    assert_int_equal(n, 4);
    assert_non_null(find(out, n, "accept"));
    assert_non_null(find(out, n, "tracestate")); /* kept with its trace */
    const qx_hdr_t *tp = find(out, n, "traceparent");
    assert_non_null(tp);
    assert_int_equal(tp->valuelen, 55);
    assert_memory_equal(tp->value, t.traceparent, 55);
    const qx_hdr_t *rid = find(out, n, "x-request-id");
    assert_non_null(rid);
    assert_int_equal(rid->valuelen, 13);
    assert_memory_equal(rid->value, "abc-123_x.y:z", 13);
    assert_null(find(out, n, "Traceparent")); /* the client's copies are gone */
    assert_null(find(out, n, "X-Request-ID"));

    /* flags 00 (not sampled) are kept as the client set them */
    qx_hdr_t in2[] = {H("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")};
    qx_trace_init(&t, in2, 1, r);
    assert_int_equal(t.continued, 1);
    assert_memory_equal(t.traceparent + 53, "00", 3);
}

static void test_invalid_traceparent_new_trace(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",    /* short */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", /* 00 with more */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   /* uppercase */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   /* zero parent */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* version ff */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* separator */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",   /* not hex */
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",  /* no dash after */
        " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* leading space */
    };
    uint8_t r[QX_TRACE_RANDOM];
    rnd_fill(r);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        qx_hdr_t in[] = {{"traceparent", 11, bad[i], strlen(bad[i])}, H("tracestate", "k=v")};
        qx_trace_t t;
        qx_trace_init(&t, in, 2, r);
        assert_int_equal(t.continued, 0);
        /* the new trace id is rnd[0..16) with the first bit set */
        assert_string_equal(t.trace_id, "a1a1a2a3a4a5a6a7a8a9aaabacadaeaf");
        assert_string_equal(t.traceparent,
                            "00-a1a1a2a3a4a5a6a7a8a9aaabacadaeaf-b1b1b2b3b4b5b6b7-01");
        qx_hdr_t out[4];
        size_t n = qx_trace_fields(&t, in, 2, out);
        assert_int_equal(n, 2);
        assert_null(find(out, n, "tracestate")); /* it belonged to the dropped trace */
    }
    assert_int_equal(qx_trace_parent_valid(bad[2], strlen(bad[2])), 0);
    /* A later version may carry more, after a dash. */
    static const char v1[] = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
    assert_int_equal(qx_trace_parent_valid(v1, strlen(v1)), 1);
    assert_int_equal(qx_trace_parent_valid(good_tp, strlen(good_tp)), 1);

    /* Two traceparent fields: which one is right cannot be told. */
    qx_hdr_t two[] = {H("traceparent", good_tp), H("traceparent", good_tp)};
    qx_trace_t t;
    qx_trace_init(&t, two, 2, r);
    assert_int_equal(t.continued, 0);
}

static void test_no_headers_new_ids(void **state)
{
    (void)state;
    uint8_t r[QX_TRACE_RANDOM];
    rnd_fill(r);
    qx_trace_t t;
    qx_trace_init(&t, NULL, 0, r);
    assert_int_equal(t.continued, 0);
    /* rnd[24..40) as a version-4 UUID */
    assert_string_equal(t.request_id, "b8b9babb-bcbd-4ebf-80c1-c2c3c4c5c6c7");
    qx_hdr_t out[2];
    size_t n = qx_trace_fields(&t, NULL, 0, out);
    assert_int_equal(n, 2);
    assert_non_null(find(out, n, "traceparent"));
    assert_non_null(find(out, n, "x-request-id"));
}

static void test_request_id_checks(void **state)
{
    (void)state;
    static char longest[QX_TRACE_REQUEST_ID_MAX + 2];
    memset(longest, 'a', sizeof(longest));
    const struct {
        const char *v;
        size_t len;
        int kept;
    } cases[] = {
        {"0f8fad5b-d9cb-469f-a165-70867728950e", 36, 1},
        {"a", 1, 1},
        {"req/1+2=3~x", 11, 1},
        {longest, QX_TRACE_REQUEST_ID_MAX, 1},
        {longest, QX_TRACE_REQUEST_ID_MAX + 1, 0}, /* too long */
        {"", 0, 0},
        {"has space", 9, 0},
        {"quote\"", 6, 0},
        {"key=val status=200", 18, 0}, /* would forge access-log fields */
        {"nul\0x", 5, 0},
    };
    uint8_t r[QX_TRACE_RANDOM];
    rnd_fill(r);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        qx_hdr_t in[] = {{"x-request-id", 12, cases[i].v, cases[i].len}};
        qx_trace_t t;
        qx_trace_init(&t, in, 1, r);
        if (cases[i].kept) {
            assert_int_equal(strlen(t.request_id), cases[i].len);
            assert_memory_equal(t.request_id, cases[i].v, cases[i].len);
        } else {
            assert_string_equal(t.request_id, "b8b9babb-bcbd-4ebf-80c1-c2c3c4c5c6c7");
        }
    }
    /* two request ids: a new one */
    qx_hdr_t two[] = {H("x-request-id", "a"), H("x-request-id", "b")};
    qx_trace_t t;
    qx_trace_init(&t, two, 2, r);
    assert_string_equal(t.request_id, "b8b9babb-bcbd-4ebf-80c1-c2c3c4c5c6c7");
    qx_hdr_t out[4];
    assert_int_equal(qx_trace_fields(&t, two, 2, out), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_traceparent_continued),
        cmocka_unit_test(test_invalid_traceparent_new_trace),
        cmocka_unit_test(test_no_headers_new_ids),
        cmocka_unit_test(test_request_id_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
