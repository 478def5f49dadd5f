/*
 * h3_ctrl_test.c - the control-stream watcher (proxy/h3_ctrl.c): MAX_PUSH_ID
 * lowered is H3_ID_ERROR, equal or higher is fine, whatever the split of
 * the bytes across reads; other streams and frames are passed over.
 */
#include "front/quic/h3_ctrl.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* Feeds |b| to stream 2 in pieces of |step| bytes; returns the first error. */
static uint64_t feed(const uint8_t *b, size_t n, size_t step)
{
    qx_h3_ctrl_t c = {0};
    for (size_t off = 0; off < n; off += step) {
        size_t k = n - off < step ? n - off : step;
        uint64_t e = qx_h3_ctrl_feed(&c, 2, off, b + off, k);
        if (e != 0)
            return e;
    }
    return 0;
}

static void lowered_is_id_error(void **state)
{
    /* type 0, SETTINGS {}, MAX_PUSH_ID 10, an unknown frame, MAX_PUSH_ID 5 */
    static const uint8_t b[] = {0x00, 0x04, 0x00, 0x0d, 0x01, 0x0a, 0x21,
                                0x03, 'x',  'y',  'z',  0x0d, 0x01, 0x05};
    (void)state;
    for (size_t step = 1; step <= sizeof(b); step++)
        assert_int_equal(feed(b, sizeof(b), step), 0x108);
}

static void equal_or_higher_is_fine(void **state)
{
    /* MAX_PUSH_ID 10, 10, then 300 as a two-byte varint */
    static const uint8_t b[] = {0x00, 0x04, 0x00, 0x0d, 0x01, 0x0a, 0x0d,
                                0x01, 0x0a, 0x0d, 0x02, 0x41, 0x2c};
    (void)state;
    for (size_t step = 1; step <= sizeof(b); step++)
        assert_int_equal(feed(b, sizeof(b), step), 0);
}

static void other_streams_ignored(void **state)
{
    qx_h3_ctrl_t c = {0};
    static const uint8_t enc[] = {0x02, 0x0d, 0x01, 0x0a, 0x0d, 0x01, 0x05};
    (void)state;
    assert_int_equal(qx_h3_ctrl_feed(&c, 6, 0, enc, sizeof(enc)), 0);
    assert_true(c.stream_id == 0);
    /* bytes of a stream seen first at a later offset are not a stream type */
    assert_int_equal(qx_h3_ctrl_feed(&c, 10, 5, (const uint8_t *)"\x00\x0d", 2), 0);
    assert_true(c.stream_id == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lowered_is_id_error),
        cmocka_unit_test(equal_or_higher_is_fine),
        cmocka_unit_test(other_streams_ignored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
