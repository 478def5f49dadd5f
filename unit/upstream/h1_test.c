/*
 * h1_test.c - HTTP/3 -> HTTP/1.1 request head translation and response
 * field filtering (proxy/h1.c). Every head is compared byte for byte, so a
 * reordered field or a missing CRLF fails the test.
 */
#include "upstream/h1.h"
#include "base/qx.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HDR(n, v)                                                                                  \
    {                                                                                              \
        (n), sizeof(n) - 1, (v), sizeof(v) - 1                                                     \
    }

#define CLIENT "10.0.0.9"

/* A request with the fields every test starts from; callers change the rest. */
static qx_h1_req_t req_base(const char *method, const qx_hdr_t *hdrs, size_t nhdrs)
{
    qx_h1_req_t r;
    memset(&r, 0, sizeof(r));
    r.method = method;
    r.methodlen = strlen(method);
    r.path = "/a?b=1";
    r.pathlen = strlen(r.path);
    r.authority = "example.com:8443";
    r.authoritylen = strlen(r.authority);
    r.hdrs = hdrs;
    r.nhdrs = nhdrs;
    r.client_ip = CLIENT;
    r.has_body = 0;
    r.content_length = -1;
    return r;
}

/* Builds the head and compares it with |want|; returns *chunked. */
static int expect_head(const qx_h1_req_t *r, const char *want)
{
    char buf[2048];
    int chunked = 42; /* must be overwritten */
    ssize_t n = qx_h1_build_request(buf, sizeof(buf) - 1, r, &chunked);
    if (n < 0)
        fail_msg("qx_h1_build_request returned %zd", n);
    buf[n] = '\0';
    assert_string_equal(buf, want);
    assert_int_equal((size_t)n, strlen(want));
    assert_true(chunked == 0 || chunked == 1);
    return chunked;
}

#define TAIL "X-Forwarded-For: " CLIENT "\r\nX-Forwarded-Proto: https\r\n"

static void test_get_exact(void **state)
{
    (void)state;
    const qx_hdr_t h[] = {
        HDR("user-agent", "t/1"),
        HDR("accept", "*/*"),
        HDR("x-request-id", "abc"),
    };
    qx_h1_req_t r = req_base("GET", h, QX_ARRAY_LEN(h));
    int chunked = expect_head(&r, "GET /a?b=1 HTTP/1.1\r\n"
                                  "Host: example.com:8443\r\n"
                                  "user-agent: t/1\r\n"
                                  "accept: */*\r\n"
                                  "x-request-id: abc\r\n"
                                  "X-Forwarded-For: 10.0.0.9\r\n"
                                  "X-Forwarded-Proto: https\r\n"
                                  "\r\n");
    assert_int_equal(chunked, 0);
}

static void test_get_no_fields(void **state)
{
    (void)state;
    qx_h1_req_t r = req_base("GET", NULL, 0);
    r.path = "/";
    r.pathlen = 1;
    r.authority = "a.test";
    r.authoritylen = 6;
    r.client_ip = "::1";
    expect_head(&r, "GET / HTTP/1.1\r\nHost: a.test\r\n"
                    "X-Forwarded-For: ::1\r\nX-Forwarded-Proto: https\r\n\r\n");
}

static void test_strings_not_nul_terminated(void **state)
{
    (void)state;
    /* The front hands out slices of larger buffers: only the lengths count. */
    static const char method[] = "GETXX";
    static const char path[] = "/pathZZZ";
    static const char auth[] = "h.test:1YYY";
    static const char name[] = "x-aQQ";
    static const char value[] = "vWW";
    const qx_hdr_t h[] = {{name, 3, value, 1}};
    qx_h1_req_t r = req_base("GET", h, 1);
    r.method = method;
    r.methodlen = 3;
    r.path = path;
    r.pathlen = 5;
    r.authority = auth;
    r.authoritylen = 8;
    expect_head(&r, "GET /path HTTP/1.1\r\nHost: h.test:1\r\nx-a: v\r\n" TAIL "\r\n");
}

static void test_hop_by_hop_dropped(void **state)
{
    (void)state;
    const qx_hdr_t h[] = {
        HDR("a", "1"),
        HDR("connection", "keep-alive, X-Secret"),
        HDR("keep-alive", "timeout=5"),
        HDR("proxy-connection", "keep-alive"),
        HDR("transfer-encoding", "chunked"),
        HDR("te", "trailers"),
        HDR("upgrade", "websocket"),
        HDR("trailer", "x-checksum"),
        HDR("x-secret", "named in Connection"),
        HDR("Keep-Alive", "mixed case is still hop-by-hop"),
        HDR("TE", "gzip"),
        HDR("x-secretive", "only a prefix of a listed token: kept"),
        HDR("b", "2"),
    };
    qx_h1_req_t r = req_base("GET", h, QX_ARRAY_LEN(h));
    int chunked = expect_head(&r, "GET /a?b=1 HTTP/1.1\r\nHost: example.com:8443\r\n"
                                  "a: 1\r\n"
                                  "x-secretive: only a prefix of a listed token: kept\r\n"
                                  "b: 2\r\n" TAIL "\r\n");
    /* transfer-encoding: chunked from the client says nothing about our framing */
    assert_int_equal(chunked, 0);
}

static void test_connection_listed_after_field(void **state)
{
    (void)state;
    /* The Connection field may come after the field it names. */
    const qx_hdr_t h[] = {
        HDR("x-hop", "1"),
        HDR("x-end", "2"),
        HDR("connection", "\tx-hop ,close"),
    };
    qx_h1_req_t r = req_base("GET", h, QX_ARRAY_LEN(h));
    expect_head(&r, "GET /a?b=1 HTTP/1.1\r\nHost: example.com:8443\r\nx-end: 2\r\n" TAIL "\r\n");
}

static void test_host_and_xfp_dropped(void **state)
{
    (void)state;
    const qx_hdr_t h[] = {
        HDR("host", "evil.test"),
        HDR("x-forwarded-proto", "http"),
        HDR("X-Forwarded-Proto", "ftp"),
        HDR("Host", "evil2.test"),
        HDR("accept", "x"),
    };
    qx_h1_req_t r = req_base("GET", h, QX_ARRAY_LEN(h));
    expect_head(&r, "GET /a?b=1 HTTP/1.1\r\nHost: example.com:8443\r\naccept: x\r\n" TAIL "\r\n");
}

/* Early-Data says a request may be a replay (RFC 8470). A client's own
 * field must never hide that qrux forwarded it from 0-RTT (early-data: 0
 * on a real 0-RTT request): only "1" from an earlier hop passes, and on an
 * early request only qrux's own field goes up. */
static void test_client_early_data(void **state)
{
    (void)state;
    const qx_hdr_t h[] = {
        HDR("early-data", "0"),
        HDR("accept", "x"),
        HDR("Early-Data", "1"),
    };
    qx_h1_req_t r = req_base("GET", h, QX_ARRAY_LEN(h));
    expect_head(&r, "GET /a?b=1 HTTP/1.1\r\nHost: example.com:8443\r\naccept: x\r\n"
                    "Early-Data: 1\r\n" TAIL "\r\n");
    r.early = 1;
    expect_head(&r, "GET /a?b=1 HTTP/1.1\r\nHost: example.com:8443\r\naccept: x\r\n" TAIL
                    "Early-Data: 1\r\n\r\n");
    r.nhdrs = 2; /* early-data: 0 alone, on an early request */
    expect_head(&r, "GET /a?b=1 HTTP/1.1\r\nHost: example.com:8443\r\naccept: x\r\n" TAIL
                    "Early-Data: 1\r\n\r\n");
}

static void test_null_authority(void **state)
{
    (void)state;
    qx_h1_req_t r = req_base("GET", NULL, 0);
    r.authority = NULL;
    r.authoritylen = 0;
    /* HTTP/1.1 requires Host; an empty one when there is no authority. */
    expect_head(&r, "GET /a?b=1 HTTP/1.1\r\nHost: \r\n" TAIL "\r\n");
}

static void test_xff_appended(void **state)
{
    (void)state;
    const qx_hdr_t h[] = {
        HDR("x-forwarded-for", "1.2.3.4"),
        HDR("accept", "x"),
    };
    qx_h1_req_t r = req_base("GET", h, QX_ARRAY_LEN(h));
    expect_head(&r, "GET /a?b=1 HTTP/1.1\r\nHost: example.com:8443\r\naccept: x\r\n"
                    "X-Forwarded-For: 1.2.3.4, 10.0.0.9\r\n"
                    "X-Forwarded-Proto: https\r\n\r\n");

    const qx_hdr_t h2[] = {HDR("X-Forwarded-For", "1.2.3.4, 5.6.7.8")};
    r = req_base("GET", h2, 1);
    expect_head(&r, "GET /a?b=1 HTTP/1.1\r\nHost: example.com:8443\r\n"
                    "X-Forwarded-For: 1.2.3.4, 5.6.7.8, 10.0.0.9\r\n"
                    "X-Forwarded-Proto: https\r\n\r\n");

    /* An empty value adds nothing but our peer. */
    const qx_hdr_t h3[] = {HDR("x-forwarded-for", "")};
    r = req_base("GET", h3, 1);
    expect_head(&r, "GET /a?b=1 HTTP/1.1\r\nHost: example.com:8443\r\n" TAIL "\r\n");
}

static void test_xff_several_fields(void **state)
{
    (void)state;
    /* Several field lines of one name are one comma-separated list
     * (RFC 9110 §5.3); HTTP/3 clients and proxies may send them split. The
     * upstream must see the whole chain, not only the last line. */
    const qx_hdr_t h[] = {
        HDR("x-forwarded-for", "1.1.1.1"),
        HDR("x-forwarded-for", "2.2.2.2"),
    };
    qx_h1_req_t r = req_base("GET", h, QX_ARRAY_LEN(h));
    expect_head(&r, "GET /a?b=1 HTTP/1.1\r\nHost: example.com:8443\r\n"
                    "X-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.0.0.9\r\n"
                    "X-Forwarded-Proto: https\r\n\r\n");
}

static void test_cookies_joined(void **state)
{
    (void)state;
    const qx_hdr_t h[] = {
        HDR("accept", "x"),   HDR("cookie", "a=1"), HDR("user-agent", "u"),
        HDR("cookie", "b=2"), HDR("Cookie", "c=3"),
    };
    qx_h1_req_t r = req_base("GET", h, QX_ARRAY_LEN(h));
    expect_head(&r, "GET /a?b=1 HTTP/1.1\r\nHost: example.com:8443\r\n"
                    "accept: x\r\n"
                    "cookie: a=1; b=2; c=3\r\n"
                    "user-agent: u\r\n" TAIL "\r\n");

    const qx_hdr_t one[] = {HDR("cookie", "only=1")};
    r = req_base("GET", one, 1);
    expect_head(&r, "GET /a?b=1 HTTP/1.1\r\nHost: example.com:8443\r\n"
                    "cookie: only=1\r\n" TAIL "\r\n");
}

static void test_body_framing(void **state)
{
    (void)state;
    const qx_hdr_t h[] = {
        HDR("content-length", "999"), /* ours wins: from req->content_length */
        HDR("content-type", "text/plain"),
    };
    qx_h1_req_t r = req_base("POST", h, QX_ARRAY_LEN(h));

    /* Known length. */
    r.has_body = 1;
    r.content_length = 5;
    assert_int_equal(expect_head(&r, "POST /a?b=1 HTTP/1.1\r\nHost: example.com:8443\r\n"
                                     "content-type: text/plain\r\n" TAIL "Content-Length: 5\r\n"
                                     "\r\n"),
                     0);

    /* Large known length. */
    r.content_length = 10737418240LL;
    assert_int_equal(expect_head(&r, "POST /a?b=1 HTTP/1.1\r\nHost: example.com:8443\r\n"
                                     "content-type: text/plain\r\n" TAIL
                                     "Content-Length: 10737418240\r\n"
                                     "\r\n"),
                     0);

    /* A body with no length: chunked. */
    r.content_length = -1;
    assert_int_equal(expect_head(&r, "POST /a?b=1 HTTP/1.1\r\nHost: example.com:8443\r\n"
                                     "content-type: text/plain\r\n" TAIL
                                     "Transfer-Encoding: chunked\r\n"
                                     "\r\n"),
                     1);

    /* POST/PUT/PATCH without a body: an explicit zero. */
    r.has_body = 0;
    assert_int_equal(expect_head(&r, "POST /a?b=1 HTTP/1.1\r\nHost: example.com:8443\r\n"
                                     "content-type: text/plain\r\n" TAIL "Content-Length: 0\r\n"
                                     "\r\n"),
                     0);
    r.method = "PUT";
    r.methodlen = 3;
    assert_int_equal(expect_head(&r, "PUT /a?b=1 HTTP/1.1\r\nHost: example.com:8443\r\n"
                                     "content-type: text/plain\r\n" TAIL "Content-Length: 0\r\n"
                                     "\r\n"),
                     0);
    r.method = "PATCH";
    r.methodlen = 5;
    assert_int_equal(expect_head(&r, "PATCH /a?b=1 HTTP/1.1\r\nHost: example.com:8443\r\n"
                                     "content-type: text/plain\r\n" TAIL "Content-Length: 0\r\n"
                                     "\r\n"),
                     0);

    /* GET/DELETE without a body: no framing field at all. */
    r.method = "GET";
    r.methodlen = 3;
    assert_int_equal(expect_head(&r, "GET /a?b=1 HTTP/1.1\r\nHost: example.com:8443\r\n"
                                     "content-type: text/plain\r\n" TAIL "\r\n"),
                     0);
    r.method = "DELETE";
    r.methodlen = 6;
    assert_int_equal(expect_head(&r, "DELETE /a?b=1 HTTP/1.1\r\nHost: example.com:8443\r\n"
                                     "content-type: text/plain\r\n" TAIL "\r\n"),
                     0);

    /* A GET that does carry a body with a known length says so. */
    r.method = "GET";
    r.methodlen = 3;
    r.has_body = 1;
    r.content_length = 3;
    assert_int_equal(expect_head(&r, "GET /a?b=1 HTTP/1.1\r\nHost: example.com:8443\r\n"
                                     "content-type: text/plain\r\n" TAIL "Content-Length: 3\r\n"
                                     "\r\n"),
                     0);
}

static void expect_proto(const qx_h1_req_t *r)
{
    char buf[1024];
    int chunked = 0;
    assert_int_equal(qx_h1_build_request(buf, sizeof(buf), r, &chunked), QX_ERR_PROTO);
}

static void test_ctl_rejected(void **state)
{
    (void)state;
    static const char *const bad[] = {"a\rb", "a\nb", "a\r\nX-Injected: 1"};
    for (size_t i = 0; i < QX_ARRAY_LEN(bad); i++) {
        qx_hdr_t h = {"x-a", 3, bad[i], strlen(bad[i])};
        qx_h1_req_t r = req_base("GET", &h, 1);
        expect_proto(&r);

        /* in a field name */
        qx_hdr_t hn = {bad[i], strlen(bad[i]), "v", 1};
        r = req_base("GET", &hn, 1);
        expect_proto(&r);

        /* in the path, the method, the authority */
        r = req_base("GET", NULL, 0);
        r.path = bad[i];
        r.pathlen = strlen(bad[i]);
        expect_proto(&r);
        r = req_base(bad[i], NULL, 0);
        expect_proto(&r);
        r = req_base("GET", NULL, 0);
        r.authority = bad[i];
        r.authoritylen = strlen(bad[i]);
        expect_proto(&r);
    }

    /* NUL inside a value (the length says it is part of it). */
    static const char nul[] = {'a', '\0', 'b'};
    qx_hdr_t h = {"x-a", 3, nul, sizeof(nul)};
    qx_h1_req_t r = req_base("GET", &h, 1);
    expect_proto(&r);

    /* A bad value in a field that would be dropped is still refused. */
    qx_hdr_t hop = {"te", 2, "x\ny", 3};
    r = req_base("GET", &hop, 1);
    expect_proto(&r);

    /* ...and in the second of two cookies. */
    const qx_hdr_t cookies[] = {HDR("cookie", "a=1"), {"cookie", 6, "b=2\r\n", 5}};
    r = req_base("GET", cookies, 2);
    expect_proto(&r);
}

static void test_limit(void **state)
{
    (void)state;
    const qx_hdr_t h[] = {
        HDR("cookie", "a=1"),
        HDR("x-forwarded-for", "1.2.3.4"),
        HDR("accept", "text/html"),
        HDR("cookie", "b=2"),
    };
    qx_h1_req_t r = req_base("POST", h, QX_ARRAY_LEN(h));
    r.has_body = 1;
    r.content_length = 12345;

    char full[1024];
    int chunked = 0;
    ssize_t n = qx_h1_build_request(full, sizeof(full), &r, &chunked);
    assert_true(n > 0);

    /* Exactly enough room works. */
    char buf[1024 + 16];
    memset(buf, 0xAA, sizeof(buf));
    assert_int_equal(qx_h1_build_request(buf, (size_t)n, &r, &chunked), n);
    assert_memory_equal(buf, full, (size_t)n);
    assert_int_equal((unsigned char)buf[n], 0xAA);

    /* Any smaller buffer fails, and nothing is written past the cap. */
    for (size_t cap = 0; cap < (size_t)n; cap++) {
        memset(buf, 0xAA, sizeof(buf));
        ssize_t rv = qx_h1_build_request(buf, cap, &r, &chunked);
        if (rv != QX_ERR_LIMIT)
            fail_msg("cap %zu (needs %zd): got %zd, want QX_ERR_LIMIT", cap, n, rv);
        for (size_t i = cap; i < sizeof(buf); i++) {
            if ((unsigned char)buf[i] != 0xAA)
                fail_msg("cap %zu: byte %zu written past the cap", cap, i);
        }
    }
}

static int has(const char *list, const char *name)
{
    return qx_h1_list_has_token(list, strlen(list), name, strlen(name));
}

static void test_list_has_token(void **state)
{
    (void)state;
    assert_true(has("close", "close"));
    assert_true(has("Close", "close"));
    assert_true(has("close", "CLOSE"));
    assert_true(has("keep-alive, Upgrade", "upgrade"));
    assert_true(has(" \tkeep-alive ,\tUpgrade\t ", "keep-alive"));
    assert_true(has(" \tkeep-alive ,\tUpgrade\t ", "upgrade"));
    assert_true(has("a,,b", "b"));
    assert_true(has(",,a", "a"));
    assert_true(has("a , b , c", "b"));

    assert_false(has("", "close"));
    assert_false(has("closed", "close"));
    assert_false(has("close", "closed"));
    assert_false(has("keep-alive", "keep"));
    assert_false(has("keep-alive", "alive"));
    assert_false(has("x-a-b", "x-a"));
    assert_false(has("foo bar", "foo"));
    assert_false(has("a, b", "a, b"));

    /* Only listlen bytes are looked at. */
    assert_true(qx_h1_list_has_token("a, bc", 4, "b", 1));
    assert_false(qx_h1_list_has_token("a, bc", 5, "b", 1));
    assert_false(qx_h1_list_has_token("x", 0, "x", 1));
}

static void test_is_hop_by_hop(void **state)
{
    (void)state;
    static const char *const hop[] = {"connection",        "keep-alive", "proxy-connection",
                                      "transfer-encoding", "te",         "upgrade",
                                      "trailer",           "Connection", "TRANSFER-ENCODING"};
    for (size_t i = 0; i < QX_ARRAY_LEN(hop); i++) {
        if (!qx_h1_is_hop_by_hop(hop[i], strlen(hop[i])))
            fail_msg("%s should be hop-by-hop", hop[i]);
    }
    static const char *const e2e[] = {"content-type",
                                      "proxy-authorization",
                                      "proxy-authenticate",
                                      "t",
                                      "tee",
                                      "trailers",
                                      "connections",
                                      "host",
                                      "cookie"};
    for (size_t i = 0; i < QX_ARRAY_LEN(e2e); i++) {
        if (qx_h1_is_hop_by_hop(e2e[i], strlen(e2e[i])))
            fail_msg("%s should be end-to-end", e2e[i]);
    }
    /* A prefix of a name, by length. */
    assert_true(qx_h1_is_hop_by_hop("teapot", 2));
}

static int allowed(const char *name, const char *conn)
{
    return qx_h1_response_field_allowed(name, strlen(name), conn, conn ? strlen(conn) : 0);
}

static void test_response_field_allowed(void **state)
{
    (void)state;
    assert_true(allowed("content-type", NULL));
    assert_true(allowed("Content-Length", NULL));
    assert_true(allowed("set-cookie", "close"));
    assert_true(allowed("proxy-authenticate", NULL));
    assert_true(allowed("x-foo", NULL));
    assert_true(allowed("x-foo", "close, x-foobar"));

    assert_false(allowed("connection", NULL));
    assert_false(allowed("Keep-Alive", NULL));
    assert_false(allowed("transfer-encoding", NULL));
    assert_false(allowed("Transfer-Encoding", "close"));
    assert_false(allowed("upgrade", NULL));
    assert_false(allowed("trailer", NULL));
    assert_false(allowed("te", NULL));
    assert_false(allowed("proxy-connection", NULL));
    assert_false(allowed("x-foo", "close, X-Foo"));
    assert_false(allowed("X-FOO", " x-foo\t"));
}

static void test_conn_names_fields(void **state)
{
    (void)state;
    const char *plain[] = {"keep-alive", "close", "Keep-Alive", " close , keep-alive ",
                           "",           ",,",    "upgrade",    "close, Transfer-Encoding"};
    for (size_t i = 0; i < QX_ARRAY_LEN(plain); i++) {
        if (qx_h1_conn_names_fields(plain[i], strlen(plain[i])))
            fail_msg("\"%s\" names no end-to-end field", plain[i]);
    }
    const char *naming[] = {"x-foo", "close, x-foo", "keep-alive,x-foo", "closed", "keep"};
    for (size_t i = 0; i < QX_ARRAY_LEN(naming); i++) {
        if (!qx_h1_conn_names_fields(naming[i], strlen(naming[i])))
            fail_msg("\"%s\" names a field", naming[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_exact),
        cmocka_unit_test(test_get_no_fields),
        cmocka_unit_test(test_strings_not_nul_terminated),
        cmocka_unit_test(test_hop_by_hop_dropped),
        cmocka_unit_test(test_connection_listed_after_field),
        cmocka_unit_test(test_host_and_xfp_dropped),
        cmocka_unit_test(test_client_early_data),
        cmocka_unit_test(test_null_authority),
        cmocka_unit_test(test_xff_appended),
        cmocka_unit_test(test_xff_several_fields),
        cmocka_unit_test(test_cookies_joined),
        cmocka_unit_test(test_body_framing),
        cmocka_unit_test(test_ctl_rejected),
        cmocka_unit_test(test_limit),
        cmocka_unit_test(test_list_has_token),
        cmocka_unit_test(test_is_hop_by_hop),
        cmocka_unit_test(test_response_field_allowed),
        cmocka_unit_test(test_conn_names_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
