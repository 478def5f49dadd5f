/*
 * ipcount_test.c - per-address connection counts (proxy/base/ipcount.h): IPv4
 * per address, IPv6 per /64 (and IPv4-mapped IPv6 as IPv4), exact counts
 * for addresses that the old unkeyed FNV-1a bucket put together, the
 * bucket depending on the key, and entries freed at zero.
 */
#include "base/ipcount.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

static struct sockaddr_storage addr(const char *s)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strchr(s, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, s, &a->sin6_addr), 1);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, s, &a->sin_addr), 1);
    }
    return ss;
}

#define SA(ss) ((const struct sockaddr *)&(ss))

static const uint8_t key[QX_SIPHASH_KEY_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

static void ipv4_per_address(void **state)
{
    qx_ipcount_t *t = malloc(sizeof(*t));
    (void)state;
    qx_ipcount_init(t, key);
    struct sockaddr_storage a = addr("192.0.2.1"), b = addr("192.0.2.2");
    qx_ipcount_entry_t *e1 = qx_ipcount_take(t, SA(a));
    qx_ipcount_entry_t *e2 = qx_ipcount_take(t, SA(a));
    assert_ptr_equal(e1, e2);
    assert_int_equal(qx_ipcount_get(t, SA(a)), 2);
    assert_int_equal(qx_ipcount_get(t, SA(b)), 0);
    qx_ipcount_put(t, e1);
    assert_int_equal(qx_ipcount_get(t, SA(a)), 1);
    qx_ipcount_put(t, e2);
    assert_int_equal(qx_ipcount_get(t, SA(a)), 0);
    assert_int_equal(t->nentries, 0);
    qx_ipcount_put(t, NULL);
    qx_ipcount_free(t);
    free(t);
}

static void ipv6_per_64(void **state)
{
    qx_ipcount_t *t = malloc(sizeof(*t));
    (void)state;
    qx_ipcount_init(t, key);
    struct sockaddr_storage a = addr("2001:db8:1:2::1"), b = addr("2001:db8:1:2:ffff:1:2:3"),
                            c = addr("2001:db8:1:3::1"), m = addr("::ffff:192.0.2.7"),
                            v4 = addr("192.0.2.7");
    qx_ipcount_take(t, SA(a));
    qx_ipcount_take(t, SA(b));
    assert_int_equal(qx_ipcount_get(t, SA(a)), 2); /* same /64 */
    assert_int_equal(qx_ipcount_get(t, SA(c)), 0); /* the next /64 */
    qx_ipcount_take(t, SA(m));
    assert_int_equal(qx_ipcount_get(t, SA(v4)), 1); /* mapped counts as IPv4 */
    assert_int_equal(t->nentries, 2);
    qx_ipcount_free(t);
    free(t);
}

/* The old bucket: FNV-1a of the address bytes, mod 4096. */
static uint32_t fnv_bucket(const uint8_t *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h % 4096;
}

static void colliding_addresses_count_apart(void **state)
{
    qx_ipcount_t *t = malloc(sizeof(*t));
    (void)state;
    qx_ipcount_init(t, key);
    /* Find an address in 10.0.0.0/8 in the victim's old bucket: what an
     * attacker did in seconds to lock 10.0.0.1 out. */
    struct sockaddr_storage victim = addr("10.0.0.1"), other = addr("10.0.0.2");
    struct sockaddr_in *o = (struct sockaddr_in *)&other;
    uint32_t want = fnv_bucket((const uint8_t *)&((struct sockaddr_in *)&victim)->sin_addr, 4);
    uint32_t host;
    for (host = 2; host < (1u << 24); host++) {
        o->sin_addr.s_addr = htonl(0x0a000000u | host);
        if (fnv_bucket((const uint8_t *)&o->sin_addr, 4) == want)
            break;
    }
    assert_true(host < (1u << 24));
    for (int i = 0; i < 200; i++)
        assert_non_null(qx_ipcount_take(t, SA(other)));
    assert_int_equal(qx_ipcount_get(t, SA(other)), 200);
    assert_int_equal(qx_ipcount_get(t, SA(victim)), 0);
    qx_ipcount_free(t);
    free(t);
}

/* Two keys spread the same prefixes differently: the chain a prefix lands
 * in cannot be known without the key. */
static void bucket_follows_key(void **state)
{
    static const uint8_t key2[QX_SIPHASH_KEY_LEN] = {42};
    qx_ipcount_t *t1 = malloc(sizeof(*t1)), *t2 = malloc(sizeof(*t2));
    (void)state;
    qx_ipcount_init(t1, key);
    qx_ipcount_init(t2, key2);
    int differ = 0;
    for (uint32_t i = 1; i <= 64; i++) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0xc0000200u + i)};
        qx_ipcount_entry_t *e1 = qx_ipcount_take(t1, (struct sockaddr *)&a);
        qx_ipcount_entry_t *e2 = qx_ipcount_take(t2, (struct sockaddr *)&a);
        size_t b1 = 0, b2 = 0;
        for (size_t b = 0; b < QX_IPCOUNT_BUCKETS; b++) {
            qx_ipcount_entry_t *e;
            LIST_FOREACH (e, &t1->buckets[b], link)
                b1 = e == e1 ? b : b1;
            LIST_FOREACH (e, &t2->buckets[b], link)
                b2 = e == e2 ? b : b2;
        }
        differ += b1 != b2;
    }
    assert_true(differ > 56);
    qx_ipcount_free(t1);
    qx_ipcount_free(t2);
    free(t1);
    free(t2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ipv4_per_address),
        cmocka_unit_test(ipv6_per_64),
        cmocka_unit_test(colliding_addresses_count_apart),
        cmocka_unit_test(bucket_follows_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
