/*
 * slab_test.c - the per-worker allocator for ngtcp2/nghttp3 (proxy/base/slab.c):
 * freed blocks are handed out again, contents survive realloc, calloc
 * zeroes and refuses overflowing sizes, alignment, big blocks, the cap on
 * what is kept, and trim.
 */
#include "base/slab.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

static void test_reuse(void **state)
{
    (void)state;
    qx_slab_t m = {0};
    void *a = qx_slab_malloc(&m, 100);
    assert_non_null(a);
    memset(a, 'a', 100);
    qx_slab_free(&m, a);
    /* Same class (97..128 bytes): the same block comes back. */
    void *b = qx_slab_malloc(&m, 120);
    assert_ptr_equal(a, b);
    assert_int_equal(m.hits, 1);
    /* Another class: a new block. */
    void *c = qx_slab_malloc(&m, 20);
    assert_ptr_not_equal(c, b);
    qx_slab_free(&m, b);
    qx_slab_free(&m, c);
    qx_slab_free(&m, NULL);
    qx_slab_trim(&m);
}

static void test_alignment_and_sizes(void **state)
{
    (void)state;
    qx_slab_t m = {0};
    size_t sizes[] = {0, 1, 63, 64, 65, 4095, 4096, 4097, 100000};
    void *p[sizeof(sizes) / sizeof(sizes[0])];
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        p[i] = qx_slab_malloc(&m, sizes[i]);
        assert_non_null(p[i]);
        assert_int_equal((uintptr_t)p[i] % _Alignof(max_align_t), 0);
        memset(p[i], (int)i, sizes[i]); /* all of it is usable (valgrind/ASan would say) */
    }
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        qx_slab_free(&m, p[i]);
    qx_slab_trim(&m);
}

static void test_realloc_keeps_bytes(void **state)
{
    (void)state;
    qx_slab_t m = {0};
    unsigned char *p = qx_slab_realloc(&m, NULL, 10); /* NULL: a malloc */
    assert_non_null(p);
    for (int i = 0; i < 10; i++)
        p[i] = (unsigned char)i;
    unsigned char *q = qx_slab_realloc(&m, p, 30); /* fits the 32-byte block */
    assert_ptr_equal(p, q);
    q = qx_slab_realloc(&m, q, 3000); /* moves */
    for (int i = 0; i < 10; i++)
        assert_int_equal(q[i], i);
    memset(q + 10, 0xAB, 2990);
    q = qx_slab_realloc(&m, q, 20000); /* to a big block */
    for (int i = 0; i < 10; i++)
        assert_int_equal(q[i], i);
    assert_int_equal(q[2999], 0xAB);
    q = qx_slab_realloc(&m, q, 5); /* shrinks: a new block, first bytes kept */
    for (int i = 0; i < 5; i++)
        assert_int_equal(q[i], i);
    qx_slab_free(&m, q);
    qx_slab_trim(&m);
}

static void test_zeroed_alloc(void **state)
{
    (void)state;
    qx_slab_t m = {0};
    unsigned char *a = qx_slab_malloc(&m, 256);
    memset(a, 0xFF, 256);
    qx_slab_free(&m, a);
    unsigned char *z = qx_slab_calloc(&m, 16, 16); /* reuses the dirty block */
    assert_ptr_equal(a, z);
    for (int i = 0; i < 256; i++)
        assert_int_equal(z[i], 0);
    assert_null(qx_slab_calloc(&m, SIZE_MAX / 2, 4));
    qx_slab_free(&m, z);
    qx_slab_trim(&m);
}

static void test_keep_cap_and_trim(void **state)
{
    (void)state;
    qx_slab_t m = {0};
    enum { N = 200 };
    void *p[N];
    for (int i = 0; i < N; i++)
        p[i] = qx_slab_malloc(&m, 4096);
    for (int i = 0; i < N; i++)
        qx_slab_free(&m, p[i]);
    /* 200 x 4 KiB freed, at most QX_SLAB_KEEP bytes kept. */
    size_t kept = m.nfree[QX_SLAB_CLASSES - 1];
    assert_int_equal(kept, QX_SLAB_KEEP / 4096);
    qx_slab_trim(&m);
    for (int c = 0; c < QX_SLAB_CLASSES; c++) {
        assert_null(m.free[c]);
        assert_int_equal(m.nfree[c], 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reuse),
        cmocka_unit_test(test_alignment_and_sizes),
        cmocka_unit_test(test_realloc_keeps_bytes),
        cmocka_unit_test(test_zeroed_alloc),
        cmocka_unit_test(test_keep_cap_and_trim),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
