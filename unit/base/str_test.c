/*
 * str_test.c - the shared string helpers (proxy/base/str.h): ASCII case,
 * header-name comparison, and the buffer's growth, cap, sticky failure
 * and fixed mode.
 */
#include "base/qx.h"
#include "base/str.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

static void test_lower_and_name_is(void **state)
{
    (void)state;
    char s[] = "Content-LENGTH: \xc3\x89T\xe9";
    qx_ascii_lower_n(s, strlen(s));
    /* Only A-Z change: bytes above 0x7f are left as they are. */
    assert_memory_equal(s, "content-length: \xc3\x89t\xe9", sizeof(s));
    assert_int_equal(qx_ascii_lower('Z'), 'z');
    assert_int_equal(qx_ascii_lower('['), '[');
    assert_int_equal(qx_ascii_lower('@'), '@');

    assert_true(qx_name_is("Host", 4, "host"));
    assert_true(qx_name_is("HOST", 4, "hOsT"));
    assert_false(qx_name_is("Hos", 3, "host"));   /* shorter */
    assert_false(qx_name_is("Hosts", 5, "host")); /* longer */
    assert_false(qx_name_is("Hosx", 4, "host"));
    assert_true(qx_name_is("", 0, ""));
    /* The length bounds the name: no NUL needed, none read past it. */
    assert_true(qx_name_is("cookieXYZ", 6, "cookie"));
}

static void test_buf_grows_to_cap(void **state)
{
    (void)state;
    qx_buf_t b;
    qx_buf_init(&b, 4, 20);
    assert_int_equal(qx_buf_puts(&b, "abc"), 0);
    assert_int_equal(b.cap, 4); /* "abc" and its NUL */
    assert_string_equal(b.data, "abc");
    assert_int_equal(qx_buf_putf(&b, "-%d-", 42), 0);
    assert_int_equal(b.cap, 8);
    assert_string_equal(b.data, "abc-42-");
    assert_int_equal(b.len, 7);
    /* Up to max - 1 bytes fit (the NUL takes the last one); doubling
     * stops at max. */
    assert_int_equal(qx_buf_put(&b, "0123456789AB", 12), 0);
    assert_int_equal(b.cap, 20);
    assert_int_equal(b.len, 19);
    assert_int_equal(qx_buf_put(&b, "x", 1), QX_ERR_LIMIT);
    assert_true(b.failed);
    assert_int_equal(b.len, 19);
    /* Sticky: nothing is added after a failure, not even what fits. */
    b.len = 3;
    assert_int_equal(qx_buf_put(&b, "y", 1), QX_ERR_LIMIT);
    assert_int_equal(b.len, 3);
    qx_buf_free(&b);
    assert_null(b.data);
    assert_false(b.failed);
    assert_int_equal(qx_buf_put(&b, "again", 5), 0);
    assert_string_equal(b.data, "again");
    qx_buf_free(&b);
    qx_buf_free(NULL);
}

static void test_buf_long_printf(void **state)
{
    (void)state;
    qx_buf_t b;
    char want[1001];
    memset(want, 'q', 1000);
    want[1000] = '\0';
    qx_buf_init(&b, 16, 1 << 20);
    assert_int_equal(qx_buf_putf(&b, "<%s>", want), 0);
    assert_int_equal(b.len, 1002);
    assert_int_equal(b.data[0], '<');
    assert_int_equal(b.data[1001], '>');
    assert_int_equal(b.data[1002], '\0');
    qx_buf_free(&b);
}

static void test_buf_fixed(void **state)
{
    (void)state;
    char mem[8 + 4];
    memset(mem, '#', sizeof(mem));
    qx_buf_t b;
    qx_buf_init_fixed(&b, mem, 8);
    assert_int_equal(qx_buf_puts(&b, "GET "), 0);
    assert_int_equal(qx_buf_puts(&b, "/abc"), 0); /* exactly full: no NUL needed */
    assert_int_equal(b.len, 8);
    assert_memory_equal(mem, "GET /abc####", sizeof(mem));
    assert_int_equal(qx_buf_put(&b, "d", 1), QX_ERR_LIMIT);
    assert_true(b.failed);
    assert_ptr_equal(b.data, mem);
    qx_buf_free(&b); /* never frees the caller's memory */
    assert_ptr_equal(b.data, mem);
    assert_int_equal(b.len, 0);

    /* A long printf into a fixed buffer stays inside it. */
    qx_buf_init_fixed(&b, mem, 8);
    char big[300];
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(qx_buf_putf(&b, "%s", big), QX_ERR_LIMIT);
    assert_memory_equal(mem + 8, "####", 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lower_and_name_is),
        cmocka_unit_test(test_buf_grows_to_cap),
        cmocka_unit_test(test_buf_long_printf),
        cmocka_unit_test(test_buf_fixed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
