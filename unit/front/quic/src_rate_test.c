/*
 * src_rate_test.c - qrux's Initial bucket per source (proxy/src_rate.c):
 * the burst, the refill at the configured rate, IPv6 sources per /64,
 * IPv4 through a dual-stack socket counted as IPv4. Time is passed in.
 */
#include "front/quic/src_rate.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#define SEC 1000000000ull
/* Sources share a slot when their keyed hashes collide (the newcomer takes
 * it over, by design), and the key is random: with 1,024 slots two of
 * these sources collided in about one run of 100. 2^20 slots (calloc'd, so
 * untouched pages cost nothing) make it about one in 70,000. */
#define SLOTS ((size_t)1 << 20)

static struct sockaddr_storage addr(const char *s)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, s, &in->sin_addr) == 1)
        in->sin_family = AF_INET;
    else if (inet_pton(AF_INET6, s, &in6->sin6_addr) == 1)
        in6->sin6_family = AF_INET6;
    return ss;
}

static int take(qx_src_rate_t *r, const char *s, uint64_t now)
{
    struct sockaddr_storage ss = addr(s);
    return qx_src_rate_take(r, (struct sockaddr *)&ss, 10, 3, now);
}

static void burst_and_refill(void **state)
{
    qx_src_rate_t *r;
    (void)state;
    assert_int_equal(qx_src_rate_new(&r, SLOTS), 0);
    uint64_t t = 1000 * SEC;
    for (int i = 0; i < 3; i++)
        assert_int_equal(take(r, "192.0.2.1", t), 1);
    assert_int_equal(take(r, "192.0.2.1", t), 0);
    assert_int_equal(take(r, "192.0.2.2", t), 1);                /* another source */
    assert_int_equal(take(r, "192.0.2.1", t + SEC / 10 - 1), 0); /* not quite one token */
    assert_int_equal(take(r, "192.0.2.1", t + SEC / 10 + 1), 1); /* 10/s: one per 100 ms */
    assert_int_equal(take(r, "192.0.2.1", t + SEC / 10 + 2), 0);
    /* A long pause refills to the burst, not beyond. */
    t += 3600 * SEC;
    for (int i = 0; i < 3; i++)
        assert_int_equal(take(r, "192.0.2.1", t), 1);
    assert_int_equal(take(r, "192.0.2.1", t), 0);
    struct sockaddr_storage ss = addr("192.0.2.1");
    assert_int_equal(qx_src_rate_take(r, (struct sockaddr *)&ss, 0, 0, t), 1); /* rate 0 */
    qx_src_rate_del(r);
}

static void keyed_like_the_filter(void **state)
{
    qx_src_rate_t *r;
    (void)state;
    assert_int_equal(qx_src_rate_new(&r, SLOTS), 0);
    uint64_t t = 5 * SEC;
    assert_int_equal(take(r, "2001:db8:1:2::1", t), 1);
    assert_int_equal(take(r, "2001:db8:1:2::2", t), 1);
    assert_int_equal(take(r, "2001:db8:1:2:ffff::3", t), 1);
    assert_int_equal(take(r, "2001:db8:1:2:abcd::9", t), 0); /* same /64 */
    assert_int_equal(take(r, "2001:db8:1:3::1", t), 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(take(r, "::ffff:198.51.100.7", t), 1);
    assert_int_equal(take(r, "198.51.100.7", t), 0); /* mapped and plain: one source */
    qx_src_rate_del(r);
    qx_src_rate_del(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(burst_and_refill),
        cmocka_unit_test(keyed_like_the_filter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
