/*
 * status_test.c - the status page's rate and latency series
 * (admin/status.c): per-interval rates from counter samples, mean latency,
 * intervals without requests, uneven sample spacing.
 */
#include "admin/status.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

static void test_series(void **state)
{
    (void)state;
    qx_status_sample_t s[4];
    memset(s, 0, sizeof(s));
    s[0].ms = 10000;
    s[1].ms = 11000; /* 50 h3 requests of 2 ms each */
    s[1].requests[QX_P_H3] = 50;
    s[1].duration_us[QX_P_H3] = 100000;
    s[2].ms = 12000; /* nothing */
    s[2].requests[QX_P_H3] = 50;
    s[2].duration_us[QX_P_H3] = 100000;
    s[3].ms = 14000; /* 2 s later: 10 requests of 0.5 ms */
    s[3].requests[QX_P_H3] = 60;
    s[3].duration_us[QX_P_H3] = 105000;
    s[3].requests[QX_P_H2] = 4;
    s[3].duration_us[QX_P_H2] = 4000;

    double rate[3], lat[3];
    assert_int_equal(qx_status_series(s, 4, QX_P_H3, rate, lat), 3);
    assert_true(rate[0] == 50.0);
    assert_true(lat[0] == 2.0);
    assert_true(rate[1] == 0.0);
    assert_true(lat[1] < 0); /* no request: no latency point */
    assert_true(rate[2] == 5.0);
    assert_true(lat[2] == 0.5);

    assert_int_equal(qx_status_series(s, 4, QX_P_H2, rate, lat), 3);
    assert_true(rate[0] == 0.0 && rate[1] == 0.0 && rate[2] == 2.0);
    assert_true(lat[2] == 1.0);

    /* One sample or none: no interval yet. */
    assert_int_equal(qx_status_series(s, 1, QX_P_H3, rate, lat), 0);
    assert_int_equal(qx_status_series(s, 0, QX_P_H3, rate, lat), 0);

    /* Two samples at the same millisecond: rate 0, not a division by 0. */
    s[1].ms = s[0].ms;
    assert_int_equal(qx_status_series(s, 2, QX_P_H3, rate, lat), 1);
    assert_true(rate[0] == 0.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_series),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
