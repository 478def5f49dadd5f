/*
 * ring_test.c - the body window ring (proxy/base/ring.h): accounting of the
 * three offsets, bytes and iovecs across the wrap-around point, and
 * offsets that wrap their 64-bit counters.
 */
#include "base/qx.h"
#include "base/ring.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#define CAP 8

/* The ring's storage with guard bytes on both sides, to catch a write
 * outside [data, data + cap). */
typedef struct {
    uint8_t before[8];
    uint8_t data[CAP];
    uint8_t after[8];
} store_t;

static void ring_on(qx_ring_t *r, store_t *s, uint64_t start)
{
    memset(s, 0xEE, sizeof(*s));
    r->data = s->data;
    r->cap = CAP;
    r->ack = r->sent = r->fill = start;
}

static void check_guards(const store_t *s)
{
    for (size_t i = 0; i < sizeof(s->before); i++) {
        assert_int_equal(s->before[i], 0xEE);
        assert_int_equal(s->after[i], 0xEE);
    }
}

static void expect_counts(const qx_ring_t *r, size_t free_, size_t unsent, size_t inflight)
{
    assert_int_equal(qx_ring_free(r), free_);
    assert_int_equal(qx_ring_unsent(r), unsent);
    assert_int_equal(qx_ring_inflight(r), inflight);
}

/* Concatenates what peek hands out, for comparison. */
static size_t gather(const struct iovec *iov, int n, char *out)
{
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        memcpy(out + len, iov[i].iov_base, iov[i].iov_len);
        len += iov[i].iov_len;
    }
    return len;
}

static void test_empty(void **state)
{
    (void)state;
    qx_ring_t r;
    store_t s;
    ring_on(&r, &s, 0);
    expect_counts(&r, CAP, 0, 0);
    struct iovec iov[2] = {{NULL, 0}, {NULL, 0}};
    assert_int_equal(qx_ring_peek(&r, iov, 100), 0);
    /* a zero-length write changes nothing */
    qx_ring_write(&r, (const uint8_t *)"", 0);
    expect_counts(&r, CAP, 0, 0);
    check_guards(&s);
}

static void test_accounting_and_wrap(void **state)
{
    (void)state;
    qx_ring_t r;
    store_t s;
    struct iovec iov[2] = {{NULL, 0}, {NULL, 0}};
    char got[32];
    ring_on(&r, &s, 0);

    qx_ring_write(&r, (const uint8_t *)"abcde", 5);
    expect_counts(&r, 3, 5, 0);
    assert_int_equal(qx_ring_peek(&r, iov, 100), 1);
    assert_ptr_equal(iov[0].iov_base, s.data);
    assert_int_equal(iov[0].iov_len, 5);
    assert_memory_equal(iov[0].iov_base, "abcde", 5);
    /* peek does not consume */
    expect_counts(&r, 3, 5, 0);

    qx_ring_mark_sent(&r, 3);
    expect_counts(&r, 3, 2, 3);
    assert_int_equal(qx_ring_peek(&r, iov, 100), 1);
    assert_ptr_equal(iov[0].iov_base, s.data + 3);
    assert_int_equal(iov[0].iov_len, 2);
    assert_memory_equal(iov[0].iov_base, "de", 2);

    /* Acking frees room without touching what is unsent. */
    qx_ring_mark_acked(&r, 3);
    expect_counts(&r, 6, 2, 0);

    /* This write crosses the end: "fgh" at 5..7, "ij" at 0..1. */
    qx_ring_write(&r, (const uint8_t *)"fghij", 5);
    expect_counts(&r, 1, 7, 0);
    assert_memory_equal(s.data + 5, "fgh", 3);
    assert_memory_equal(s.data, "ij", 2);
    check_guards(&s);

    /* Unsent is [3, 10): "defgh" then "ij" after the wrap. */
    assert_int_equal(qx_ring_peek(&r, iov, 100), 2);
    assert_ptr_equal(iov[0].iov_base, s.data + 3);
    assert_int_equal(iov[0].iov_len, 5);
    assert_ptr_equal(iov[1].iov_base, s.data);
    assert_int_equal(iov[1].iov_len, 2);
    assert_int_equal(gather(iov, 2, got), 7);
    assert_memory_equal(got, "defghij", 7);

    /* max cuts the view: before, at and after the wrap point. */
    assert_int_equal(qx_ring_peek(&r, iov, 4), 1);
    assert_int_equal(iov[0].iov_len, 4);
    assert_memory_equal(iov[0].iov_base, "defg", 4);
    assert_int_equal(qx_ring_peek(&r, iov, 5), 1);
    assert_int_equal(iov[0].iov_len, 5);
    assert_int_equal(qx_ring_peek(&r, iov, 6), 2);
    assert_int_equal(iov[1].iov_len, 1);
    assert_int_equal(gather(iov, 2, got), 6);
    assert_memory_equal(got, "defghi", 6);
    assert_int_equal(qx_ring_peek(&r, iov, 0), 0);

    /* Send past the wrap point; what is left starts at data[1]. */
    qx_ring_mark_sent(&r, 6);
    expect_counts(&r, 1, 1, 6);
    assert_int_equal(qx_ring_peek(&r, iov, 100), 1);
    assert_ptr_equal(iov[0].iov_base, s.data + 1);
    assert_memory_equal(iov[0].iov_base, "j", 1);

    /* Fill to the brim: the one free byte goes to data[2]. */
    qx_ring_write(&r, (const uint8_t *)"k", 1);
    expect_counts(&r, 0, 2, 6);
    assert_int_equal(s.data[2], 'k');

    qx_ring_mark_sent(&r, 2);
    expect_counts(&r, 0, 0, 8);
    assert_int_equal(qx_ring_peek(&r, iov, 100), 0);
    qx_ring_mark_acked(&r, 8);
    expect_counts(&r, CAP, 0, 0);
    check_guards(&s);
}

static void test_full_ring_exact(void **state)
{
    (void)state;
    qx_ring_t r;
    store_t s;
    struct iovec iov[2] = {{NULL, 0}, {NULL, 0}};
    char got[CAP];
    ring_on(&r, &s, 5); /* the offsets need not start at 0 */

    qx_ring_write(&r, (const uint8_t *)"01234567", CAP);
    expect_counts(&r, 0, CAP, 0);
    assert_memory_equal(s.data, "34567012", CAP);
    check_guards(&s);
    assert_int_equal(qx_ring_peek(&r, iov, CAP), 2);
    assert_int_equal(iov[0].iov_len, 3);
    assert_int_equal(iov[1].iov_len, 5);
    assert_int_equal(gather(iov, 2, got), CAP);
    assert_memory_equal(got, "01234567", CAP);
}

static void test_write_ends_at_boundary(void **state)
{
    (void)state;
    qx_ring_t r;
    store_t s;
    struct iovec iov[2] = {{NULL, 0}, {NULL, 0}};
    ring_on(&r, &s, 0);

    /* A write ending exactly at the end takes no second copy, and the next
     * one starts at data[0]. */
    qx_ring_write(&r, (const uint8_t *)"abcdefgh", CAP);
    qx_ring_mark_sent(&r, 8);
    qx_ring_mark_acked(&r, 8);
    qx_ring_write(&r, (const uint8_t *)"XY", 2);
    assert_memory_equal(s.data, "XYcdefgh", CAP);
    assert_int_equal(qx_ring_peek(&r, iov, 100), 1);
    assert_ptr_equal(iov[0].iov_base, s.data);
    assert_int_equal(iov[0].iov_len, 2);
    check_guards(&s);
}

static void test_offsets_wrap_u64(void **state)
{
    (void)state;
    qx_ring_t r;
    store_t s;
    struct iovec iov[2] = {{NULL, 0}, {NULL, 0}};
    char got[CAP];
    /* Long-lived streams: the 64-bit offsets themselves overflow. */
    ring_on(&r, &s, UINT64_MAX - 2);

    qx_ring_write(&r, (const uint8_t *)"abcdef", 6);
    assert_int_equal(r.fill, 3);
    expect_counts(&r, 2, 6, 0);
    /* UINT64_MAX - 2 is 5 mod 8: "abc" at 5..7, "def" at 0..2 */
    assert_memory_equal(s.data + 5, "abc", 3);
    assert_memory_equal(s.data, "def", 3);
    assert_int_equal(qx_ring_peek(&r, iov, 100), 2);
    assert_int_equal(gather(iov, 2, got), 6);
    assert_memory_equal(got, "abcdef", 6);

    qx_ring_mark_sent(&r, 4);
    expect_counts(&r, 2, 2, 4);
    assert_int_equal(qx_ring_peek(&r, iov, 100), 1);
    assert_memory_equal(iov[0].iov_base, "ef", 2);
    qx_ring_mark_acked(&r, 4);
    expect_counts(&r, 6, 2, 0);
    check_guards(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_accounting_and_wrap),
        cmocka_unit_test(test_full_ring_exact),
        cmocka_unit_test(test_write_ends_at_boundary),
        cmocka_unit_test(test_offsets_wrap_u64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
