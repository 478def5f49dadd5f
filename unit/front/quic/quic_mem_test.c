/*
 * quic_mem_test.c - the allocator given to ngtcp2 and nghttp3
 * (proxy/quic_mem.c): blocks of 2+ pages come from the region and keep
 * their bytes across realloc, calloc zeroes (also a reused, dirty block),
 * and nghttp3's small blocks are recycled by the slab.
 */
#include "front/quic/quic_mem.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

static void test_tables(void **state)
{
    (void)state;
    qx_qmem_t *m = NULL;
    assert_int_equal(qx_qmem_new(&m), 0);
    const nghttp3_mem *h3 = qx_qmem_nghttp3(m);
    const ngtcp2_mem *ng = qx_qmem_ngtcp2(m);

    /* A 3-page block: written in full, then grown and shrunk by realloc
     * with its bytes kept. */
    uint8_t *p = ng->malloc(10000, ng->user_data);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 16, 0);
    for (int i = 0; i < 10000; i++)
        p[i] = (uint8_t)i;
    p = ng->realloc(p, 30000, ng->user_data);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(p[i], (uint8_t)i);
    ng->free(p, ng->user_data);

    /* calloc on a slot that was just written and freed: zero again. */
    uint8_t *d = ng->malloc(9000, ng->user_data);
    memset(d, 0xFF, 9000);
    ng->free(d, ng->user_data);
    uint8_t *z = ng->calloc(3, 3000, ng->user_data);
    for (int i = 0; i < 9000; i++)
        assert_int_equal(z[i], 0);
    ng->free(z, ng->user_data);

    /* nghttp3's small blocks are recycled; they grow into the region and
     * back out with their bytes. */
    void *a = h3->malloc(190, h3->user_data); /* both in the 192-byte class */
    h3->free(a, h3->user_data);
    uint8_t *b = h3->malloc(180, h3->user_data);
    assert_ptr_equal(a, b);
    memset(b, 7, 180);
    b = h3->realloc(b, 20000, h3->user_data);
    for (int i = 0; i < 180; i++)
        assert_int_equal(b[i], 7);
    b = h3->realloc(b, 100, h3->user_data);
    for (int i = 0; i < 100; i++)
        assert_int_equal(b[i], 7);
    h3->free(b, h3->user_data);
    uint8_t *c = h3->calloc(10, 10, h3->user_data);
    for (int i = 0; i < 100; i++)
        assert_int_equal(c[i], 0);
    h3->free(c, h3->user_data);
    assert_null(h3->calloc(SIZE_MAX / 2, 4, h3->user_data));
    h3->free(NULL, h3->user_data);
    qx_qmem_del(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tables),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
