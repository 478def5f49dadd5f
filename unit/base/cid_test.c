/*
 * cid_test.c - qrux's server connection IDs (proxy/base/cid.c): the worker id
 * stays where the steering program reads it, the MAC verifies under the
 * current and the previous key, and not under a retired or unknown one.
 */
#include "base/cid.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static void layout(void **state)
{
    qx_cid_keys_t k;
    uint8_t cid[QX_CID_LEN];
    (void)state;
    assert_int_equal(qx_cid_keys_init(&k, 7), 0);
    for (unsigned w = 0; w < 4; w++) {
        assert_int_equal(qx_cid_make(&k, w, cid), 0);
        assert_int_equal(cid[0], w); /* steer.c loads DCID[0] */
        assert_int_equal(cid[QX_CID_GEN], 7);
        assert_int_equal(qx_cid_verify(&k, cid, sizeof(cid)), 1);
    }
    /* The stored MAC is SipHash-2-4 of bytes 0..13, little-endian. */
    uint64_t h = qx_siphash24(k.key[1], cid, QX_CID_MAC_OFF);
    for (int i = 0; i < QX_CID_MAC_LEN; i++)
        assert_int_equal(cid[QX_CID_MAC_OFF + i], (uint8_t)(h >> (8 * i)));
}

static void forged(void **state)
{
    qx_cid_keys_t k;
    uint8_t cid[QX_CID_LEN];
    (void)state;
    assert_int_equal(qx_cid_keys_init(&k, 1), 0);
    assert_int_equal(qx_cid_make(&k, 0, cid), 0);
    for (size_t i = 0; i < QX_CID_LEN; i++) {
        uint8_t c[QX_CID_LEN];
        memcpy(c, cid, sizeof(c));
        c[i] ^= 0x01; /* any flipped bit, MAC or covered bytes */
        assert_int_equal(qx_cid_verify(&k, c, sizeof(c)), 0);
    }
    assert_int_equal(qx_cid_verify(&k, cid, QX_CID_LEN - 1), 0);
}

static void rotation(void **state)
{
    qx_cid_keys_t k;
    uint8_t old[QX_CID_LEN], cur[QX_CID_LEN];
    (void)state;
    assert_int_equal(qx_cid_keys_init(&k, 255), 0);
    assert_int_equal(qx_cid_make(&k, 1, old), 0);
    assert_int_equal(qx_cid_keys_rotate(&k), 0); /* 255 -> 256: byte wraps to 0 */
    assert_int_equal(qx_cid_make(&k, 1, cur), 0);
    assert_int_equal(cur[QX_CID_GEN], 0);
    assert_int_equal(qx_cid_verify(&k, cur, QX_CID_LEN), 1);
    assert_int_equal(qx_cid_verify(&k, old, QX_CID_LEN), 1); /* previous key still valid */
    assert_int_equal(qx_cid_keys_rotate(&k), 0);
    assert_int_equal(qx_cid_verify(&k, cur, QX_CID_LEN), 1);
    assert_int_equal(qx_cid_verify(&k, old, QX_CID_LEN), 0); /* two rotations: retired */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(layout),
        cmocka_unit_test(forged),
        cmocka_unit_test(rotation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
