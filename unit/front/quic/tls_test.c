/*
 * tls_test.c - what the ClientHello hook of proxy/front/quic/tls.c reads:
 * the X25519 key share, whether quic_transport_parameters came, and a
 * transport parameter named twice (RFC 9000 §7.4). The hook's verdicts on
 * a real handshake are in e2e/test_quic_conformance.py.
 */
#include "front/quic/tls.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* A ClientHello body (from the version on) with the extensions |exts|. */
static size_t hello(uint8_t *out, const uint8_t *exts, size_t extlen)
{
    size_t n = 0;
    out[n++] = 3, out[n++] = 3; /* legacy_version */
    memset(out + n, 7, 32);     /* random */
    n += 32;
    out[n++] = 0;                                                 /* legacy_session_id */
    out[n++] = 0, out[n++] = 2, out[n++] = 0x13, out[n++] = 0x01; /* TLS_AES_128_GCM_SHA256 */
    out[n++] = 1, out[n++] = 0;                                   /* compression: null */
    out[n++] = (uint8_t)(extlen >> 8), out[n++] = (uint8_t)extlen;
    memcpy(out + n, exts, extlen);
    return n + extlen;
}

static size_t ext(uint8_t *out, unsigned type, const uint8_t *body, size_t len)
{
    out[0] = (uint8_t)(type >> 8), out[1] = (uint8_t)type;
    out[2] = (uint8_t)(len >> 8), out[3] = (uint8_t)len;
    memcpy(out + 4, body, len);
    return 4 + len;
}

static hello_scan_t scan_of(const uint8_t *exts, size_t extlen)
{
    uint8_t msg[1024];
    hello_scan_t scan = {0};
    gnutls_datum_t d = {msg, (unsigned)hello(msg, exts, extlen)};
    assert_int_equal(
        gnutls_ext_raw_parse(&scan, scan_hello_ext, &d, GNUTLS_EXT_RAW_FLAG_TLS_CLIENT_HELLO), 0);
    return scan;
}

/* initial_source_connection_id (4 bytes), initial_max_data 2^20 (4-byte
 * varint), max_idle_timeout 30000 (4-byte varint) */
static const uint8_t TP[] = {0x0f, 4,    1,    2,    3, 4,    0x04, 4,    0x80,
                             0x10, 0x00, 0x00, 0x01, 4, 0x80, 0x00, 0x75, 0x30};

static void test_no_duplicate(void **state)
{
    (void)state;
    assert_int_equal(tp_has_duplicate(TP, sizeof(TP)), 0);
    assert_int_equal(tp_has_duplicate(TP, 0), 0);
}

static void test_duplicate(void **state)
{
    uint8_t tp[64];
    (void)state;
    memcpy(tp, TP, sizeof(TP));
    memcpy(tp + sizeof(TP), "\x04\x01\x05", 3); /* initial_max_data again, 1-byte varint */
    assert_int_equal(tp_has_duplicate(tp, sizeof(TP) + 3), 1);
    /* The same id written as an 8-byte varint is the same id. */
    memcpy(tp + sizeof(TP), "\xc0\x00\x00\x00\x00\x00\x00\x01\x00", 9);
    assert_int_equal(tp_has_duplicate(tp, sizeof(TP) + 9), 1);
}

static void test_malformed_left_to_ngtcp2(void **state)
{
    (void)state;
    /* A value longer than the list: not called a duplicate (ngtcp2's
     * decoder refuses the list itself). */
    static const uint8_t cut[] = {0x04, 9, 1, 0x04, 1, 1};
    assert_int_equal(tp_has_duplicate(cut, sizeof(cut)), 0);
    static const uint8_t varint_cut[] = {0x04, 1, 1, 0x80, 0x04};
    assert_int_equal(tp_has_duplicate(varint_cut, sizeof(varint_cut)), 0);
}

static void test_many_distinct_ids(void **state)
{
    uint8_t tp[2 * (TP_CHECKED + 10) * 4];
    size_t n = 0;
    (void)state;
    for (unsigned id = 0; id < TP_CHECKED + 10; id++) { /* 2-byte varint ids, empty values */
        tp[n++] = (uint8_t)(0x40 | (0x100 + id) >> 8), tp[n++] = (uint8_t)(0x100 + id);
        tp[n++] = 0;
    }
    assert_int_equal(tp_has_duplicate(tp, n), 0);
    tp[n++] = 0x41, tp[n++] = 0x00, tp[n++] = 0; /* the first id again, past the cap */
    assert_int_equal(tp_has_duplicate(tp, n), 0);
    tp[(TP_CHECKED - 1) * 3] = 0x41, tp[(TP_CHECKED - 1) * 3 + 1] = 0x00; /* within it */
    assert_int_equal(tp_has_duplicate(tp, n), 1);
}

static void test_scan_hello(void **state)
{
    uint8_t exts[512], tp[64];
    size_t n = 0;
    (void)state;
    /* key_share with P-256 then X25519 (lengths only matter) */
    static const uint8_t ks[] = {0, 12, 0x00, 0x17, 0, 2, 9, 9, 0x00, 0x1d, 0, 2, 8, 8};
    n += ext(exts + n, TLS_EXT_KEY_SHARE, ks, sizeof(ks));
    hello_scan_t s = scan_of(exts, n);
    assert_int_equal(s.x25519, 1);
    assert_int_equal(s.quic_tp, 0); /* refused: missing_extension */

    n += ext(exts + n, TLS_EXT_QUIC_TP, TP, sizeof(TP));
    s = scan_of(exts, n);
    assert_int_equal(s.quic_tp, 1);
    assert_int_equal(s.tp_dup, 0);

    memcpy(tp, TP, sizeof(TP));
    memcpy(tp + sizeof(TP), "\x0f\x01\x09", 3); /* initial_source_connection_id again */
    n = ext(exts, TLS_EXT_QUIC_TP, tp, sizeof(TP) + 3);
    s = scan_of(exts, n);
    assert_int_equal(s.quic_tp, 1);
    assert_int_equal(s.tp_dup, 1);
    assert_int_equal(s.x25519, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_duplicate),
        cmocka_unit_test(test_duplicate),
        cmocka_unit_test(test_malformed_left_to_ngtcp2),
        cmocka_unit_test(test_many_distinct_ids),
        cmocka_unit_test(test_scan_hello),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
