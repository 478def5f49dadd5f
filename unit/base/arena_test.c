/*
 * arena_test.c - the per-request string arena (proxy/base/arena.c): the cap,
 * 8-byte alignment, block spill-over, strndup, and reuse after free.
 */
#include "base/arena.h"
#include "base/qx.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

static void test_cap_enforced(void **state)
{
    (void)state;
    qx_arena_t a;
    qx_arena_init(&a, 64);
    assert_null(a.head);
    assert_int_equal(a.used, 0);
    assert_int_equal(a.cap, 64);

    void *p1 = qx_arena_alloc(&a, 10); /* costs 16 after rounding */
    assert_non_null(p1);
    assert_int_equal(a.used, 16);
    void *p2 = qx_arena_alloc(&a, 48);
    assert_non_null(p2);
    assert_int_equal(a.used, 64);
    /* Exactly at the cap: one more byte is refused, and so is a rounding
     * that would pass it. */
    assert_null(qx_arena_alloc(&a, 1));
    assert_int_equal(a.used, 64);

    qx_arena_free(&a);
    qx_arena_init(&a, 20);
    assert_non_null(qx_arena_alloc(&a, 9)); /* 16 */
    assert_null(qx_arena_alloc(&a, 1));     /* 16 + 8 > 20 */
    assert_null(qx_arena_alloc(&a, 100));
    assert_int_equal(a.used, 16);
    qx_arena_free(&a);

    /* A cap of zero refuses any allocation of a byte or more. */
    qx_arena_init(&a, 0);
    assert_null(qx_arena_alloc(&a, 1));
    qx_arena_free(&a);
}

static void test_cap_no_overflow(void **state)
{
    (void)state;
    qx_arena_t a;
    qx_arena_init(&a, 100);
    assert_non_null(qx_arena_alloc(&a, 16));
    /* used + need wraps around SIZE_MAX to 0 here: the cap check must not
     * be fooled into handing out a "huge" block. */
    void *p = qx_arena_alloc(&a, SIZE_MAX - 15);
    size_t used = a.used;
    qx_arena_free(&a);
    if (p != NULL)
        fail_msg("alloc(SIZE_MAX - 15) after 16 bytes with cap 100 returned %p (used now %zu), "
                 "want NULL",
                 p, used);
    assert_int_equal(used, 16);

    /* Rounding that wraps is refused too. */
    qx_arena_init(&a, SIZE_MAX);
    assert_null(qx_arena_alloc(&a, SIZE_MAX - 3));
    qx_arena_free(&a);
}

static void test_alignment(void **state)
{
    (void)state;
    qx_arena_t a;
    qx_arena_init(&a, 1 << 20);
    static const size_t sizes[] = {1, 3, 7, 8, 9, 15, 16, 17, 31, 100, 1, 2, 4095, 5, 4096, 9000};
    unsigned char *ptrs[QX_ARRAY_LEN(sizes)];
    for (size_t i = 0; i < QX_ARRAY_LEN(sizes); i++) {
        ptrs[i] = qx_arena_alloc(&a, sizes[i]);
        assert_non_null(ptrs[i]);
        if ((uintptr_t)ptrs[i] % 8 != 0)
            fail_msg("alloc %zu (%zu bytes) at %p is not 8-byte aligned", i, sizes[i],
                     (void *)ptrs[i]);
        memset(ptrs[i], (int)i + 1, sizes[i]);
    }
    /* No two allocations overlap: each still holds its own pattern. */
    for (size_t i = 0; i < QX_ARRAY_LEN(sizes); i++) {
        for (size_t j = 0; j < sizes[i]; j++) {
            if (ptrs[i][j] != (unsigned char)(i + 1))
                fail_msg("alloc %zu byte %zu overwritten", i, j);
        }
    }
    size_t want = 0;
    for (size_t i = 0; i < QX_ARRAY_LEN(sizes); i++)
        want += (sizes[i] + 7) & ~(size_t)7;
    assert_int_equal(a.used, want);
    qx_arena_free(&a);
}

static void test_strndup(void **state)
{
    (void)state;
    qx_arena_t a;
    qx_arena_init(&a, 64);
    static const char src[] = "hello world";

    char *s = qx_arena_strndup(&a, src, 5);
    assert_non_null(s);
    assert_ptr_not_equal(s, src);
    assert_string_equal(s, "hello");
    assert_int_equal(s[5], '\0');

    char *e = qx_arena_strndup(&a, src, 0);
    assert_non_null(e);
    assert_string_equal(e, "");

    /* Bytes after the given length in the source are not read as part of it,
     * and a NUL inside is copied as is. */
    static const char mid[] = {'a', '\0', 'b', 'X'};
    char *m = qx_arena_strndup(&a, mid, 3);
    assert_non_null(m);
    assert_memory_equal(m, "a\0b\0", 4);
    qx_arena_free(&a);

    /* The NUL counts against the cap: 7 + 1 fits in 8, 8 + 1 does not. */
    qx_arena_init(&a, 8);
    assert_null(qx_arena_strndup(&a, "12345678", 8));
    char *seven = qx_arena_strndup(&a, "1234567", 7);
    assert_non_null(seven);
    assert_string_equal(seven, "1234567");
    qx_arena_free(&a);
}

static void test_blocks_spill(void **state)
{
    (void)state;
    qx_arena_t a;
    qx_arena_init(&a, 1 << 20);
    /* Two allocations that cannot share one 4 KiB block, then one larger
     * than a block: all must be usable at the same time. */
    char *x = qx_arena_alloc(&a, 3000);
    char *y = qx_arena_alloc(&a, 3000);
    char *z = qx_arena_alloc(&a, 10000);
    assert_non_null(x);
    assert_non_null(y);
    assert_non_null(z);
    memset(x, 'x', 3000);
    memset(y, 'y', 3000);
    memset(z, 'z', 10000);
    for (int i = 0; i < 3000; i++) {
        assert_int_equal(x[i], 'x');
        assert_int_equal(y[i], 'y');
    }
    for (int i = 0; i < 10000; i++)
        assert_int_equal(z[i], 'z');
    assert_int_equal(a.used, 3000 + 3000 + 10000);
    qx_arena_free(&a);
}

static void test_free_then_reuse(void **state)
{
    (void)state;
    qx_arena_t a;
    qx_arena_init(&a, 32);
    assert_non_null(qx_arena_alloc(&a, 32));
    assert_null(qx_arena_alloc(&a, 1));

    qx_arena_free(&a);
    assert_null(a.head);
    assert_int_equal(a.used, 0);
    assert_int_equal(a.cap, 32); /* the cap survives a free */

    /* The whole cap is available again. */
    char *s = qx_arena_strndup(&a, "0123456789abcdefghijklmnopqrstu", 31);
    assert_non_null(s);
    assert_string_equal(s, "0123456789abcdefghijklmnopqrstu");
    assert_null(qx_arena_alloc(&a, 1));

    /* Freeing twice, and freeing a zeroed arena, are harmless. */
    qx_arena_free(&a);
    qx_arena_free(&a);
    qx_arena_t z;
    memset(&z, 0, sizeof(z));
    qx_arena_free(&z);
    assert_null(z.head);
}

static void test_reset_keeps_one_block(void **state)
{
    (void)state;
    qx_arena_t a;
    qx_arena_init(&a, 1 << 20);
    assert_non_null(qx_arena_alloc(&a, 3000));
    char *y = qx_arena_alloc(&a, 3000);         /* a second block */
    assert_non_null(qx_arena_alloc(&a, 10000)); /* an oversized one */
    assert_non_null(y);
    qx_arena_reset(&a);
    assert_int_equal(a.used, 0);
    assert_int_equal(a.cap, 1 << 20);
    /* One standard block is left (the newest), and the next allocation
     * starts at its beginning; the whole cap is usable again. */
    assert_non_null(a.head);
    char *p = qx_arena_alloc(&a, 4096);
    assert_ptr_equal(p, y);
    memset(p, 'p', 4096);
    char *q = qx_arena_alloc(&a, 100);
    assert_non_null(q);
    memset(q, 'q', 100);
    assert_int_equal(p[4095], 'p');
    assert_int_equal(a.used, 4096 + 104);
    qx_arena_free(&a);

    qx_arena_t z;
    qx_arena_init(&z, 64);
    qx_arena_reset(&z); /* an empty arena stays empty */
    assert_null(z.head);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cap_enforced),
        cmocka_unit_test(test_cap_no_overflow),
        cmocka_unit_test(test_alignment),
        cmocka_unit_test(test_strndup),
        cmocka_unit_test(test_blocks_spill),
        cmocka_unit_test(test_free_then_reuse),
        cmocka_unit_test(test_reset_keeps_one_block),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
