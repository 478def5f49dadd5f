/*
 * h1_front_test.c - the HTTP/1.1 request reader of the HTTPS listener
 * (qx_h1_reqp_t): heads, targets, bodies (length, chunked, split at every
 * byte), pipelining stops, and every request-smuggling rule: each refused
 * request must come out as phase ERROR with status 400 (or 431) and never
 * as a request.
 */
#include "front/tcp/h1_front.h"

#include "base/qx.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sink {
    char body[1 << 16];
    size_t len;
} sink_t;

static void on_body(void *user, const char *at, size_t len)
{
    sink_t *s = user;
    assert_true(s->len + len <= sizeof(s->body));
    memcpy(s->body + s->len, at, len);
    s->len += len;
}

/* Feeds |text| in pieces of |step| bytes (0: all at once), resuming after
 * the head pause, until the message is done or refused. Returns the bytes
 * used. */
static size_t feed_all(qx_h1_reqp_t *rp, const char *text, size_t len, size_t step)
{
    size_t off = 0;
    int heads = 0;
    while (off < len && rp->phase != QX_H1P_DONE && rp->phase != QX_H1P_ERROR) {
        size_t n = step ? QX_MIN(step, len - off) : len - off;
        size_t used = qx_h1_reqp_feed(rp, text + off, n);
        off += used;
        if (rp->head_ready) {
            heads++;
            rp->head_ready = 0; /* taken, as the front does */
        }
        if (used == 0 && rp->phase == QX_H1P_HEAD)
            fail_msg("no progress at %zu", off);
    }
    assert_true(heads <= 1);
    return off;
}

static const char *field(const qx_h1_reqp_t *rp, const char *name, size_t *vlen)
{
    for (size_t i = 0; i < rp->nfields; i++) {
        const qx_h1_field_t *f = &rp->fields[i];
        if (f->name_len == strlen(name) &&
            strncasecmp(qx_h1_reqp_name(rp, i), name, f->name_len) == 0) {
            *vlen = f->value_len;
            return qx_h1_reqp_value(rp, i);
        }
    }
    return NULL;
}

/* Parses one request; asserts it is accepted and complete. */
static void parse_ok_(qx_h1_reqp_t *rp, sink_t *s, const char *text, size_t step, const char *file,
                      int line)
{
    memset(s, 0, sizeof(*s));
    qx_h1_reqp_init(rp, on_body, s);
    size_t len = strlen(text);
    size_t used = feed_all(rp, text, len, step);
    if (rp->phase != QX_H1P_DONE || rp->status != 0)
        fail_msg("%s:%d: phase=%d status=%d why=%s step=%zu\n%s", file, line, rp->phase, rp->status,
                 rp->why ? rp->why : "-", step, text);
    if (used != len)
        fail_msg("%s:%d: used %zu of %zu", file, line, used, len);
}
#define parse_ok(rp, s, text, step) parse_ok_((rp), (s), (text), (step), __FILE__, __LINE__)

/* Asserts the request is refused with |status|, whatever the split. */
static void refused_(const char *text, size_t len, int status, const char *file, int line)
{
    static const size_t steps[] = {0, 1, 2, 3, 7, 64};
    for (size_t i = 0; i < QX_ARRAY_LEN(steps); i++) {
        qx_h1_reqp_t rp;
        sink_t s = {.len = 0};
        qx_h1_reqp_init(&rp, on_body, &s);
        feed_all(&rp, text, len, steps[i]);
        if (rp.phase != QX_H1P_ERROR || rp.status != status)
            fail_msg("%s:%d: step %zu: phase=%d status=%d (want ERROR %d) why=%s\n%.200s", file,
                     line, steps[i], rp.phase, rp.status, status, rp.why ? rp.why : "-", text);
        qx_h1_reqp_free(&rp);
    }
}
#define refused(text, status) refused_((text), strlen(text), (status), __FILE__, __LINE__)

/* ------------------------------------------------------------------------ */

static void test_simple_get(void **state)
{
    qx_h1_reqp_t rp;
    sink_t s;
    size_t vl;
    (void)state;
    static const size_t steps[] = {0, 1, 5};
    for (size_t i = 0; i < QX_ARRAY_LEN(steps); i++) {
        parse_ok(&rp, &s,
                 "GET /a/b?c=d HTTP/1.1\r\nHost: Example.com:8443\r\nX-Empty:\r\n"
                 "Cookie: a=1\r\nCookie: b=2\r\nX-Trail: v  \r\n\r\n",
                 steps[i]);
        assert_string_equal(rp.method, "GET");
        assert_int_equal(rp.http_minor, 1);
        assert_int_equal(rp.pathlen, 8);
        assert_memory_equal(rp.path, "/a/b?c=d", 8);
        assert_null(rp.authority);
        assert_int_equal(rp.nfields, 5);
        const char *v = field(&rp, "host", &vl);
        assert_non_null(v);
        assert_int_equal(vl, 16);
        assert_memory_equal(v, "Example.com:8443", 16);
        v = field(&rp, "x-empty", &vl);
        assert_non_null(v);
        assert_int_equal(vl, 0);
        v = field(&rp, "x-trail", &vl);
        assert_int_equal(vl, 1); /* trailing whitespace is not part of the value */
        assert_memory_equal(v, "v", 1);
        assert_int_equal(rp.has_body, 0);
        assert_int_equal(rp.keep_alive, 1);
        assert_int_equal(s.len, 0);
        qx_h1_reqp_free(&rp);
    }
}

static void test_keep_alive(void **state)
{
    qx_h1_reqp_t rp;
    sink_t s;
    (void)state;
    parse_ok(&rp, &s, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 0);
    assert_int_equal(rp.keep_alive, 0);
    qx_h1_reqp_free(&rp);
    /* HTTP/1.0 connections always close after the answer here */
    parse_ok(&rp, &s, "GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", 0);
    assert_int_equal(rp.http_minor, 0);
    assert_int_equal(rp.keep_alive, 0);
    qx_h1_reqp_free(&rp);
    /* HTTP/1.0 may omit Host */
    parse_ok(&rp, &s, "GET / HTTP/1.0\r\n\r\n", 0);
    qx_h1_reqp_free(&rp);
}

static void test_targets(void **state)
{
    qx_h1_reqp_t rp;
    sink_t s;
    (void)state;
    parse_ok(&rp, &s, "GET https://Foo.example:8443/x?y HTTP/1.1\r\nHost: other\r\n\r\n", 1);
    assert_int_equal(rp.authoritylen, 16);
    assert_memory_equal(rp.authority, "Foo.example:8443", 16);
    assert_int_equal(rp.pathlen, 4);
    assert_memory_equal(rp.path, "/x?y", 4);
    qx_h1_reqp_free(&rp);

    parse_ok(&rp, &s, "GET http://foo.example?q=1 HTTP/1.1\r\nHost: foo.example\r\n\r\n", 0);
    assert_int_equal(rp.authoritylen, 11);
    assert_memory_equal(rp.authority, "foo.example", 11);
    assert_int_equal(rp.pathlen, 5);
    assert_memory_equal(rp.path, "/?q=1", 5);
    qx_h1_reqp_free(&rp);

    parse_ok(&rp, &s, "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 0);
    assert_int_equal(rp.pathlen, 1);
    assert_memory_equal(rp.path, "*", 1);
    qx_h1_reqp_free(&rp);

    /* CONNECT (answered 501 by the exchange) is a request, not an upgrade of this parser */
    parse_ok(&rp, &s, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 0);
    assert_string_equal(rp.method, "CONNECT");
    assert_int_equal(rp.keep_alive, 0);
    qx_h1_reqp_free(&rp);

    refused("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    refused("GET foo HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    refused("GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    refused("GET https:/// HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    refused("GET https://user@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}

static void test_bodies(void **state)
{
    qx_h1_reqp_t rp;
    sink_t s;
    (void)state;
    static const size_t steps[] = {0, 1, 2, 3, 10};
    for (size_t i = 0; i < QX_ARRAY_LEN(steps); i++) {
        parse_ok(&rp, &s, "POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world",
                 steps[i]);
        assert_int_equal(rp.has_body, 1);
        assert_int_equal(s.len, 11);
        assert_memory_equal(s.body, "hello world", 11);
        qx_h1_reqp_free(&rp);

        parse_ok(&rp, &s,
                 "POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "5\r\nhello\r\n1;ext=1\r\n \r\n005\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n",
                 steps[i]);
        assert_int_equal(rp.has_body, 1);
        assert_int_equal(s.len, 11);
        assert_memory_equal(s.body, "hello world", 11);
        qx_h1_reqp_free(&rp);

        parse_ok(&rp, &s, "POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", steps[i]);
        assert_int_equal(rp.has_body, 0);
        assert_int_equal(s.len, 0);
        qx_h1_reqp_free(&rp);

        parse_ok(&rp, &s,
                 "POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked \r\n\r\n0\r\n\r\n",
                 steps[i]);
        assert_int_equal(rp.has_body, 1);
        assert_int_equal(s.len, 0);
        qx_h1_reqp_free(&rp);
    }
}

/* The reader stops after the head of a request with a body, so the front
 * can set up the exchange before any body byte. */
static void test_stops_after_head(void **state)
{
    qx_h1_reqp_t rp;
    sink_t s = {.len = 0};
    (void)state;
    static const char req[] = "PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
                              "Expect: 100-continue\r\n\r\nbody";
    qx_h1_reqp_init(&rp, on_body, &s);
    size_t used = qx_h1_reqp_feed(&rp, req, sizeof(req) - 1);
    assert_int_equal(used, sizeof(req) - 1 - 4);
    assert_int_equal(rp.head_ready, 1);
    assert_int_equal(rp.phase, QX_H1P_BODY);
    assert_int_equal(rp.expect_continue, 1);
    assert_int_equal(s.len, 0);
    rp.head_ready = 0;
    /* the body, bounded by the caller: one byte, then the rest */
    assert_int_equal(qx_h1_reqp_feed(&rp, req + used, 1), 1);
    assert_int_equal(s.len, 1);
    assert_int_equal(rp.phase, QX_H1P_BODY);
    assert_int_equal(qx_h1_reqp_feed(&rp, req + used + 1, 3), 3);
    assert_int_equal(rp.phase, QX_H1P_DONE);
    assert_memory_equal(s.body, "body", 4);
    qx_h1_reqp_free(&rp);

    /* Expect on a request without a body, or from HTTP/1.0, asks nothing */
    parse_ok(&rp, &s, "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", 0);
    assert_int_equal(rp.expect_continue, 0);
    qx_h1_reqp_free(&rp);
}

/* Pipelining: the reader stops at each message end; the next request is
 * read only after qx_h1_reqp_next(). */
static void test_pipelined(void **state)
{
    qx_h1_reqp_t rp;
    sink_t s = {.len = 0};
    (void)state;
    static const char reqs[] = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
                               "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok"
                               "GET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    size_t off = 0, len = sizeof(reqs) - 1;
    const char *paths[] = {"/1", "/2", "/3"};
    qx_h1_reqp_init(&rp, on_body, &s);
    for (int i = 0; i < 3; i++) {
        while (rp.phase != QX_H1P_DONE) {
            size_t used = qx_h1_reqp_feed(&rp, reqs + off, len - off);
            off += used;
            if (rp.head_ready) {
                rp.head_ready = 0;
                assert_int_equal(rp.pathlen, 2);
                assert_memory_equal(rp.path, paths[i], 2);
            }
            assert_int_not_equal(rp.phase, QX_H1P_ERROR);
        }
        /* nothing is read while this one is being answered */
        assert_int_equal(qx_h1_reqp_feed(&rp, reqs + off, len - off), 0);
        assert_int_equal(rp.keep_alive, i < 2);
        qx_h1_reqp_next(&rp);
    }
    assert_int_equal(off, len);
    assert_int_equal(s.len, 2);
    qx_h1_reqp_free(&rp);
}

/* ------------------------------------------------------------------------ */
/* Request smuggling and malformed heads                                    */
/* ------------------------------------------------------------------------ */

static void test_smuggling(void **state)
{
    (void)state;
    /* CL + TE, in both orders */
    refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            "0\r\n\r\n",
            400);
    refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
            "0\r\n\r\n",
            400);
    /* duplicate Content-Length, differing (and equal: refused too) */
    refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            400);
    refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            400);
    refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello", 400);
    refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400);
    refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400);
    refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 0\r\n\r\n", 400);
    /* Transfer-Encoding other than a lone, final chunked */
    refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400);
    refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400);
    refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400);
    refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400);
    refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 400);
    refused("POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
    /* invalid chunk sizes and chunk framing */
    refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n0\r\n\r\n",
            400);
    refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nhi\r\n0\r\n\r\n",
            400);
    refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            "fffffffffffffffff\r\nhi\r\n0\r\n\r\n",
            400);
    refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhiX\r\n0\r\n\r\n",
            400);
    /* obs-fold */
    refused("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400);
    refused("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n", 400);
    refused("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n chunked\r\n\r\n", 400);
    /* bare LF and bare CR line ends */
    refused("GET / HTTP/1.1\nHost: a\n\n", 400);
    refused("GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400);
    refused("GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", 400);
    /* whitespace before the colon, or a space in a name */
    refused("GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello", 400);
    refused("GET / HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n", 400);
    /* control characters in values */
    refused("GET / HTTP/1.1\r\nHost: a\r\nX: a\001b\r\n\r\n", 400);
    static const char nul[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n";
    refused_(nul, sizeof(nul) - 1, 400, __FILE__, __LINE__);
}

static void test_host_rules(void **state)
{
    (void)state;
    refused("GET / HTTP/1.1\r\n\r\n", 400);
    refused("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
    refused("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", 400);
    refused("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400);
    refused("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400);
    refused("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400);
    refused("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400);
}

static void test_versions(void **state)
{
    (void)state;
    refused("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400);
    refused("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400);
    refused("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 400);
    refused("GET /\r\n\r\n", 400);
    refused("get / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    refused("FOO / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}

static void test_limits(void **state)
{
    (void)state;
    size_t big = QX_MAX_HEADER_BYTES + 100;
    char *req = malloc(big + 64);
    if (req == NULL) {
        fail();
        return;
    }
    int n = snprintf(req, 64, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: ");
    memset(req + n, 'a', big);
    memcpy(req + n + big, "\r\n\r\n", 5);
    refused(req, 431);

    /* a long target counts too */
    n = snprintf(req, 64, "GET /");
    memset(req + n, 'a', big);
    static const char tail[] = " HTTP/1.1\r\nHost: a\r\n\r\n";
    memcpy(req + n + big, tail, sizeof(tail));
    refused(req, 431);
    free(req);

    char many[QX_MAX_HEADERS * 16 + 256];
    size_t off = (size_t)snprintf(many, sizeof(many), "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i < QX_MAX_HEADERS; i++)
        off += (size_t)snprintf(many + off, sizeof(many) - off, "X-%d: 1\r\n", i);
    snprintf(many + off, sizeof(many) - off, "\r\n");
    refused(many, 431);

    /* exactly QX_MAX_HEADERS fields is fine */
    qx_h1_reqp_t rp;
    sink_t s;
    off = (size_t)snprintf(many, sizeof(many), "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i < QX_MAX_HEADERS - 1; i++)
        off += (size_t)snprintf(many + off, sizeof(many) - off, "X-%d: 1\r\n", i);
    snprintf(many + off, sizeof(many) - off, "\r\n");
    parse_ok(&rp, &s, many, 0);
    assert_int_equal(rp.nfields, QX_MAX_HEADERS);
    qx_h1_reqp_free(&rp);
}

/* A refused head keeps the method when it was read, so the answer is
 * logged with it. */
static void test_error_keeps_method(void **state)
{
    qx_h1_reqp_t rp;
    sink_t s = {.len = 0};
    (void)state;
    static const char req[] = "DELETE /x HTTP/1.1\r\nHost: a\r\nBad Name: 1\r\n\r\n";
    qx_h1_reqp_init(&rp, on_body, &s);
    qx_h1_reqp_feed(&rp, req, sizeof(req) - 1);
    assert_int_equal(rp.phase, QX_H1P_ERROR);
    assert_int_equal(rp.head_ready, 1);
    assert_int_equal(rp.method_known, 1);
    assert_string_equal(rp.method, "DELETE");
    qx_h1_reqp_free(&rp);

    qx_h1_reqp_init(&rp, on_body, &s);
    qx_h1_reqp_feed(&rp, "\001GET", 4);
    assert_int_equal(rp.phase, QX_H1P_ERROR);
    assert_int_equal(rp.method_known, 0);
    qx_h1_reqp_free(&rp);

    /* an error in the body: no head to answer, the front answers itself */
    static const char body[] =
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nq\r\n";
    qx_h1_reqp_init(&rp, on_body, &s);
    size_t used = qx_h1_reqp_feed(&rp, body, sizeof(body) - 1);
    assert_int_equal(rp.head_ready, 1);
    rp.head_ready = 0;
    qx_h1_reqp_feed(&rp, body + used, sizeof(body) - 1 - used);
    assert_int_equal(rp.phase, QX_H1P_ERROR);
    assert_int_equal(rp.status, 400);
    assert_int_equal(rp.head_ready, 0);
    qx_h1_reqp_free(&rp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),
        cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_targets),
        cmocka_unit_test(test_bodies),
        cmocka_unit_test(test_stops_after_head),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_smuggling),
        cmocka_unit_test(test_host_rules),
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_error_keeps_method),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
