/*
 * health_test.c - passive health (proxy/conf/health.h) on a clock the test
 * drives: 3 connect failures in a row eject an endpoint; the back-off
 * doubles with each ejection in a row (1, 2, 4, 8, 16 s) and stops at
 * 30 s; after it the endpoint may be picked again; one successful connect
 * puts it back and starts the doubling over. The table hands out one entry
 * per address, and a NULL entry (a full table) is always usable.
 */
#include "conf/health.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static struct sockaddr_in addr(uint16_t port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

/* Fails |h| until it is ejected at |now|; returns the back-off. */
static uint64_t eject(qx_health_t *h, uint64_t now, int fails)
{
    uint64_t ms = 0;
    for (int i = 1; i < fails; i++) {
        assert_int_equal(qx_health_fail(h, now, &ms), 0);
        assert_true(qx_health_usable(h, now));
    }
    assert_int_equal(qx_health_fail(h, now, &ms), 1);
    return ms;
}

static void ejected_after_three_then_doubling_capped(void **state)
{
    (void)state;
    qx_health_tab_t t;
    qx_health_tab_init(&t);
    struct sockaddr_in a = addr(8081);
    qx_health_t *h = qx_health_get(&t, (struct sockaddr *)&a, sizeof(a));
    assert_non_null(h);
    uint64_t now = 1000000;

    assert_true(qx_health_healthy(h));
    assert_int_equal(eject(h, now, QX_HEALTH_FAILS), 1000);
    assert_false(qx_health_healthy(h));
    assert_false(qx_health_usable(h, now));
    assert_false(qx_health_usable(h, now + 999));
    assert_true(qx_health_usable(h, now + 1000)); /* the next request tries it */

    /* Failing again after each back-off: 2, 4, 8, 16, then 30 s (the cap). */
    const uint64_t want[] = {2000, 4000, 8000, 16000, 30000, 30000, 30000};
    uint64_t until = now + 1000;
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        now = until;
        assert_int_equal(eject(h, now, 1), want[i]);
        assert_false(qx_health_usable(h, now + want[i] - 1));
        until = now + want[i];
        assert_true(qx_health_usable(h, until));
    }
    assert_int_equal(h->ejections, 1 + sizeof(want) / sizeof(want[0]));

    /* A failure while ejected (a connect that was already under way) does
     * not extend it. */
    uint64_t ms = 0;
    assert_int_equal(qx_health_fail(h, until - 10, &ms), 0);
    assert_true(qx_health_usable(h, until));

    /* One success: back in service, and the doubling starts over. */
    assert_int_equal(qx_health_ok(h), 1);
    assert_true(qx_health_healthy(h));
    assert_true(qx_health_usable(h, until));
    assert_int_equal(qx_health_ok(h), 0); /* it was not out any more */
    assert_int_equal(eject(h, until + 1, QX_HEALTH_FAILS), 1000);
    qx_health_tab_free(&t);
}

static void successes_reset_the_count(void **state)
{
    (void)state;
    qx_health_tab_t t;
    qx_health_tab_init(&t);
    struct sockaddr_in a = addr(8082);
    qx_health_t *h = qx_health_get(&t, (struct sockaddr *)&a, sizeof(a));
    uint64_t ms = 0;
    /* fail, fail, ok, fail, fail: never 3 in a row */
    assert_int_equal(qx_health_fail(h, 1, &ms), 0);
    assert_int_equal(qx_health_fail(h, 1, &ms), 0);
    assert_int_equal(qx_health_ok(h), 0);
    assert_int_equal(qx_health_fail(h, 1, &ms), 0);
    assert_int_equal(qx_health_fail(h, 1, &ms), 0);
    assert_true(qx_health_healthy(h));
    assert_true(qx_health_usable(h, 1));
    qx_health_tab_free(&t);
}

static void one_entry_per_address(void **state)
{
    (void)state;
    qx_health_tab_t t;
    qx_health_tab_init(&t);
    struct sockaddr_in a = addr(8083), b = addr(8084);
    qx_health_t *ha = qx_health_get(&t, (struct sockaddr *)&a, sizeof(a));
    qx_health_t *hb = qx_health_get(&t, (struct sockaddr *)&b, sizeof(b));
    assert_non_null(ha);
    assert_non_null(hb);
    assert_ptr_not_equal(ha, hb);
    /* the same address again (a reload, a DNS answer): the same state */
    assert_ptr_equal(qx_health_get(&t, (struct sockaddr *)&a, sizeof(a)), ha);
    eject(ha, 5, QX_HEALTH_FAILS);
    assert_false(qx_health_healthy(ha));
    assert_true(qx_health_healthy(hb));
    /* no entry: always usable, never ejected */
    assert_true(qx_health_usable(NULL, 0));
    assert_true(qx_health_healthy(NULL));
    assert_int_equal(qx_health_fail(NULL, 0, NULL), 0);
    assert_null(qx_health_get(NULL, (struct sockaddr *)&a, sizeof(a)));
    qx_health_tab_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ejected_after_three_then_doubling_capped),
        cmocka_unit_test(successes_reset_the_count),
        cmocka_unit_test(one_entry_per_address),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
