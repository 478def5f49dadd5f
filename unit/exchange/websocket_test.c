/*
 * websocket_test.c - telling a WebSocket opening handshake from an
 * ordinary request (proxy/exchange/websocket.c), the key qrux makes for an
 * extended CONNECT, and the HTTP/1.1 upgrade head the app receives
 * (upstream/h1.c with req->websocket), compared byte for byte.
 */
#include "exchange/websocket.h"
#include "upstream/h1.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#define HDR(n, v)                                                                                  \
    {                                                                                              \
        (n), sizeof(n) - 1, (v), sizeof(v) - 1                                                     \
    }

static void test_is_upgrade(void **state)
{
    (void)state;
    const qx_hdr_t ok[] = {HDR("host", "a"), HDR("upgrade", "websocket"),
                           HDR("connection", "keep-alive, Upgrade")};
    assert_true(qx_ws_is_upgrade("GET", 3, ok, 3));
    /* tokens, any case, in a list */
    const qx_hdr_t list[] = {HDR("Upgrade", "foo, WebSocket"), HDR("Connection", "UPGRADE")};
    assert_true(qx_ws_is_upgrade("GET", 3, list, 2));
    /* not GET */
    assert_false(qx_ws_is_upgrade("POST", 4, ok, 3));
    /* no Connection: upgrade */
    const qx_hdr_t noconn[] = {HDR("upgrade", "websocket"), HDR("connection", "keep-alive")};
    assert_false(qx_ws_is_upgrade("GET", 3, noconn, 2));
    /* another protocol */
    const qx_hdr_t h2c[] = {HDR("upgrade", "h2c"), HDR("connection", "upgrade")};
    assert_false(qx_ws_is_upgrade("GET", 3, h2c, 2));
    /* a token that only contains the word */
    const qx_hdr_t sub[] = {HDR("upgrade", "websockets"), HDR("connection", "upgrade")};
    assert_false(qx_ws_is_upgrade("GET", 3, sub, 2));
    assert_false(qx_ws_is_upgrade("GET", 3, NULL, 0));
}

static void test_key(void **state)
{
    (void)state;
    char key[QX_WS_KEY_LEN + 1];
    /* RFC 6455 §4.1's example: the nonce 0x01..0x10 */
    const uint8_t nonce[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    qx_ws_key(nonce, key);
    assert_string_equal(key, "AQIDBAUGBwgJCgsMDQ4PEA==");
    const uint8_t ff[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    qx_ws_key(ff, key);
    assert_string_equal(key, "/////////////////////w==");
}

static void test_accept(void **state)
{
    (void)state;
    /* RFC 6455 §1.3's example */
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    const char *ok = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
    assert_true(qx_ws_accept_ok(key, ok, strlen(ok)));
    assert_true(qx_ws_accept_ok(key, " s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\t", 30)); /* OWS */
    /* another key's accept, one character off, cut short, empty, missing */
    assert_false(qx_ws_accept_ok("AQIDBAUGBwgJCgsMDQ4PEA==", ok, strlen(ok)));
    assert_false(qx_ws_accept_ok(key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOp=", 28));
    assert_false(qx_ws_accept_ok(key, ok, 27));
    assert_false(qx_ws_accept_ok(key, "", 0));
    assert_false(qx_ws_accept_ok(key, NULL, 0));
    /* the key itself, as an app echoing it might send */
    assert_false(qx_ws_accept_ok(key, key, strlen(key)));
    assert_false(qx_ws_accept_ok("short", ok, strlen(ok)));
}

static qx_h1_req_t req(const qx_hdr_t *hdrs, size_t n)
{
    qx_h1_req_t r;
    memset(&r, 0, sizeof(r));
    r.method = "GET";
    r.methodlen = 3;
    r.path = "/chat";
    r.pathlen = 5;
    r.authority = "example.com";
    r.authoritylen = 11;
    r.hdrs = hdrs;
    r.nhdrs = n;
    r.client_ip = "10.0.0.9";
    r.content_length = -1;
    r.websocket = 1;
    return r;
}

static void expect(const qx_h1_req_t *r, const char *want)
{
    char buf[2048];
    int chunked = 42;
    ssize_t n = qx_h1_build_request(buf, sizeof(buf) - 1, r, &chunked);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_string_equal(buf, want);
    assert_int_equal(chunked, 0);
}

/* HTTP/1.1 front: the client's key, version and protocol go up; its
 * Upgrade and Connection are replaced by qrux's own. */
static void test_head_upgrade(void **state)
{
    (void)state;
    const qx_hdr_t h[] = {HDR("upgrade", "websocket"), HDR("connection", "Upgrade"),
                          HDR("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                          HDR("sec-websocket-version", "13"),
                          HDR("sec-websocket-protocol", "chat")};
    qx_h1_req_t r = req(h, 5);
    expect(&r, "GET /chat HTTP/1.1\r\nHost: example.com\r\n"
               "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "sec-websocket-version: 13\r\n"
               "sec-websocket-protocol: chat\r\n"
               "X-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: https\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
}

/* Extended CONNECT: qrux's key and version 13 in place of anything the
 * client sent; a body of unknown length gets no chunked framing. */
static void test_head_connect(void **state)
{
    (void)state;
    const qx_hdr_t h[] = {HDR("sec-websocket-version", "13"), HDR("sec-websocket-key", "forged"),
                          HDR("sec-websocket-extensions", "permessage-deflate")};
    qx_h1_req_t r = req(h, 3);
    r.ws_key = "AQIDBAUGBwgJCgsMDQ4PEA==";
    r.has_body = 1;
    expect(&r, "GET /chat HTTP/1.1\r\nHost: example.com\r\n"
               "sec-websocket-extensions: permessage-deflate\r\n"
               "X-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: https\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\nSec-WebSocket-Version: 13\r\n\r\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_is_upgrade),   cmocka_unit_test(test_key),
        cmocka_unit_test(test_accept),       cmocka_unit_test(test_head_upgrade),
        cmocka_unit_test(test_head_connect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
