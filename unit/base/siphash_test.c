/*
 * siphash_test.c - SipHash-2-4 (proxy/base/siphash.h) against the reference
 * vectors of the SipHash paper and its reference code (key 00..0f, input
 * 00..len-1), across the 8-byte block boundary.
 */
#include "base/siphash.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static void reference_vectors(void **state)
{
    static const struct {
        size_t len;
        uint64_t want;
    } v[] = {
        {0, 0x726fdb47dd0e0e31ULL},
        {1, 0x74f839c593dc67fdULL},
        {8, 0x93f5f5799a932462ULL},
        {15, 0xa129ca6149be45e5ULL},
    };
    uint8_t key[QX_SIPHASH_KEY_LEN], in[64];

    (void)state;
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = (uint8_t)i;
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (uint8_t)i;
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        assert_true(qx_siphash24(key, in, v[i].len) == v[i].want);
}

/* Another key gives another hash: the key is what a peer cannot guess. */
static void key_matters(void **state)
{
    uint8_t k1[QX_SIPHASH_KEY_LEN] = {0}, k2[QX_SIPHASH_KEY_LEN] = {0};
    const uint8_t in[4] = {192, 0, 2, 1};

    (void)state;
    k2[15] = 1;
    assert_true(qx_siphash24(k1, in, sizeof(in)) != qx_siphash24(k2, in, sizeof(in)));
    assert_true(qx_siphash24(k1, in, sizeof(in)) == qx_siphash24(k1, in, sizeof(in)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reference_vectors),
        cmocka_unit_test(key_matters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
