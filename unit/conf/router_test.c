/*
 * router_test.c - route selection order (exact SNI, exact authority,
 * longest suffix, "*"), port stripping, case folding, IPv6 authorities.
 * Configs are built with qx_config_load_buf, as the proxy builds them.
 */
#include "config/config.h"
#include "base/qx.h"
#include "conf/router.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SERVER                                                                                     \
    "server:\n"                                                                                    \
    "  listen: \"[::]:8443\"\n"                                                                    \
    "  cert: c.pem\n"                                                                              \
    "  key: k.pem\n"                                                                               \
    "routes:\n"
#define ROUTE(m) "  - match: \"" m "\"\n    upstream: \"127.0.0.1:8080\"\n"

typedef struct fixture {
    qx_config_t *cfg;
    qx_router_t *router;
} fixture_t;

static fixture_t *fixture_new(const char *yaml)
{
    char err[256] = "";
    fixture_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    int rv = qx_config_load_buf(yaml, strlen(yaml), NULL, &f->cfg, err, sizeof(err));
    if (rv != 0)
        fail_msg("config: rv=%d err=[%s]", rv, err);
    assert_int_equal(qx_router_new(&f->router, f->cfg), 0);
    assert_non_null(f->router);
    return f;
}

static void fixture_del(fixture_t *f)
{
    qx_router_del(f->router);
    qx_config_del(f->cfg);
    free(f);
}

/* sni / authority as C strings (NULL allowed) */
static int match(const fixture_t *f, const char *sni, const char *auth)
{
    return qx_router_match(f->router, sni, sni != NULL ? strlen(sni) : 0, auth,
                           auth != NULL ? strlen(auth) : 0);
}

/* Routes used by most tests; the index is the position in this list. */
static const char full_yaml[] = SERVER ROUTE("*") /* 0 */
    ROUTE("api.example.com")                      /* 1 */
    ROUTE("*.example.com")                        /* 2 */
    ROUTE("*.eu.example.com")                     /* 3 */
    ROUTE("www.example.org")                      /* 4 */
    ROUTE("*.org")                                /* 5 */
    ROUTE("Mixed.Example.NET")                    /* 6 */
    ROUTE("::1")                                  /* 7 */
    ROUTE("127.0.0.1");                           /* 8 */

static void test_order(void **state)
{
    (void)state;
    fixture_t *f = fixture_new(full_yaml);

    /* exact SNI beats exact authority */
    assert_int_equal(match(f, "api.example.com", "www.example.org"), 1);
    assert_int_equal(match(f, "www.example.org", "api.example.com"), 4);
    /* exact authority beats a suffix match on the SNI */
    assert_int_equal(match(f, "x.example.com", "www.example.org"), 4);
    /* suffix on SNI before suffix on authority */
    assert_int_equal(match(f, "x.example.com", "x.foo.org"), 2);
    assert_int_equal(match(f, "nothing.test", "x.foo.org"), 5);
    /* suffix beats "*" */
    assert_int_equal(match(f, NULL, "a.example.com"), 2);
    /* "*" when nothing else matches */
    assert_int_equal(match(f, "nothing.test", "other.test"), 0);
    assert_int_equal(match(f, NULL, NULL), 0);
    assert_int_equal(match(f, "", ""), 0);
    /* SNI alone, authority alone */
    assert_int_equal(match(f, "api.example.com", NULL), 1);
    assert_int_equal(match(f, NULL, "api.example.com"), 1);
    fixture_del(f);
}

static void test_longest_suffix(void **state)
{
    (void)state;
    fixture_t *f = fixture_new(full_yaml);
    assert_int_equal(match(f, "a.eu.example.com", NULL), 3);
    assert_int_equal(match(f, "a.b.eu.example.com", NULL), 3);
    assert_int_equal(match(f, "a.us.example.com", NULL), 2);
    assert_int_equal(match(f, "eu.example.com", NULL), 2); /* *.eu... needs a label before */
    assert_int_equal(match(f, "a.b.c.example.com", NULL), 2);
    /* SNI suffix wins over a longer authority suffix */
    assert_int_equal(match(f, "a.example.com", "a.eu.example.com"), 2);
    fixture_del(f);
}

static void test_suffix_not_apex(void **state)
{
    (void)state;
    fixture_t *f = fixture_new(SERVER ROUTE("*.example.com"));
    assert_int_equal(match(f, "example.com", NULL), -1);
    assert_int_equal(match(f, NULL, "example.com:443"), -1);
    assert_int_equal(match(f, NULL, ".example.com"), -1);
    assert_int_equal(match(f, NULL, "badexample.com"), -1);
    assert_int_equal(match(f, NULL, "example.com.evil"), -1);
    assert_int_equal(match(f, NULL, "a.example.com"), 0);
    assert_int_equal(match(f, NULL, "a.b.example.com"), 0);
    fixture_del(f);
}

static void test_no_match_without_catchall(void **state)
{
    (void)state;
    fixture_t *f = fixture_new(SERVER ROUTE("api.example.com") ROUTE("*.example.org"));
    assert_int_equal(match(f, "other.test", "other.test"), -1);
    assert_int_equal(match(f, NULL, NULL), -1);
    assert_int_equal(match(f, "", ""), -1);
    assert_int_equal(match(f, NULL, ":443"), -1);
    assert_int_equal(match(f, NULL, "[]:443"), -1);
    assert_int_equal(match(f, "api.example.co", NULL), -1);
    assert_int_equal(match(f, "api.example.comm", NULL), -1);
    assert_int_equal(match(f, "pi.example.com", NULL), -1);
    assert_int_equal(match(f, "api.example.com", NULL), 0);
    assert_int_equal(match(f, "x.example.org", NULL), 1);
    fixture_del(f);
}

static void test_port_and_case(void **state)
{
    (void)state;
    fixture_t *f = fixture_new(full_yaml);
    assert_int_equal(match(f, NULL, "api.example.com:8443"), 1);
    assert_int_equal(match(f, NULL, "API.Example.COM:8443"), 1);
    assert_int_equal(match(f, "API.EXAMPLE.COM", NULL), 1);
    assert_int_equal(match(f, NULL, "mixed.example.net"), 6); /* config lowercased */
    assert_int_equal(match(f, NULL, "MIXED.EXAMPLE.NET:1"), 6);
    assert_int_equal(match(f, NULL, "X.EU.Example.Com:443"), 3);
    /* trailing dot (fully qualified) */
    assert_int_equal(match(f, "api.example.com.", NULL), 1);
    assert_int_equal(match(f, NULL, "api.example.com.:443"), 1);
    assert_int_equal(match(f, NULL, "a.eu.example.com."), 3);
    /* IPv4 literal */
    assert_int_equal(match(f, NULL, "127.0.0.1:8443"), 8);
    assert_int_equal(match(f, NULL, "127.0.0.1"), 8);
    fixture_del(f);
}

static void test_ipv6_authority(void **state)
{
    (void)state;
    fixture_t *f = fixture_new(full_yaml);
    assert_int_equal(match(f, NULL, "[::1]:8443"), 7);
    assert_int_equal(match(f, NULL, "[::1]"), 7);
    assert_int_equal(match(f, NULL, "::1"), 7); /* unbracketed: no port to strip */
    assert_int_equal(match(f, NULL, "[::2]:8443"), 0);
    assert_int_equal(match(f, NULL, "[::1"), 7); /* unterminated: the rest is the host */
    fixture_del(f);

    f = fixture_new(SERVER ROUTE("api.example.com"));
    assert_int_equal(match(f, NULL, "[::1]:8443"), -1);
    fixture_del(f);
}

static void test_lengths_respected(void **state)
{
    (void)state;
    fixture_t *f = fixture_new(SERVER ROUTE("api.example.com") ROUTE("*.example.org"));
    /* buffers that are not NUL-terminated at the given length */
    const char auth[] = "api.example.comXXXX";
    assert_int_equal(qx_router_match(f->router, NULL, 0, auth, 15), 0);
    assert_int_equal(qx_router_match(f->router, NULL, 0, auth, 14), -1);
    const char sni[] = "a.example.org.garbage";
    assert_int_equal(qx_router_match(f->router, sni, 13, NULL, 0), 1);
    assert_int_equal(qx_router_match(f->router, sni, 14, NULL, 0), 1); /* with the dot */
    fixture_del(f);
}

static void test_many_routes(void **state)
{
    /* enough routes that the binary search takes several steps */
    char *yaml = malloc(64 * 1024);
    size_t off = 0;
    (void)state;
    assert_non_null(yaml);
    off += (size_t)snprintf(yaml + off, 64 * 1024 - off, "%s", SERVER);
    for (int i = 0; i < 200; i++)
        off +=
            (size_t)snprintf(yaml + off, 64 * 1024 - off,
                             "  - match: \"h%03d.example.com\"\n    upstream: \"127.0.0.1:1\"\n"
                             "  - match: \"*.s%03d.example.com\"\n    upstream: \"127.0.0.1:1\"\n",
                             i, i);
    fixture_t *f = fixture_new(yaml);
    free(yaml);
    char host[64];
    for (int i = 0; i < 200; i++) {
        snprintf(host, sizeof(host), "H%03d.example.com", i);
        assert_int_equal(match(f, NULL, host), 2 * i);
        snprintf(host, sizeof(host), "x.s%03d.EXAMPLE.com:443", i);
        assert_int_equal(match(f, NULL, host), 2 * i + 1);
    }
    assert_int_equal(match(f, NULL, "h200.example.com"), -1);
    fixture_del(f);
}

static void test_del_null(void **state)
{
    (void)state;
    qx_router_del(NULL);
    assert_int_equal(qx_router_match(NULL, "a", 1, "a", 1), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_longest_suffix),
        cmocka_unit_test(test_suffix_not_apex),
        cmocka_unit_test(test_no_match_without_catchall),
        cmocka_unit_test(test_port_and_case),
        cmocka_unit_test(test_ipv6_authority),
        cmocka_unit_test(test_lengths_respected),
        cmocka_unit_test(test_many_routes),
        cmocka_unit_test(test_del_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
