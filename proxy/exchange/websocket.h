/*
 * websocket.h - what the exchange needs to tell a WebSocket opening
 * handshake from an ordinary request, whatever front it came on:
 *   - HTTP/1.1: GET with `Upgrade: websocket` and `Connection: upgrade`
 *     (RFC 6455 §4.1);
 *   - HTTP/2 and HTTP/3: extended CONNECT with `:protocol: websocket`
 *     (RFC 8441, RFC 9220), which carries no Sec-WebSocket-Key: qrux makes
 *     one for the HTTP/1.1 upgrade it sends the app.
 * Pure functions, unit tested without a loop (unit/exchange/websocket_test.c).
 */
#ifndef QX_WEBSOCKET_H
#define QX_WEBSOCKET_H

#include "upstream/upstream.h"

#include <stddef.h>
#include <stdint.h>

enum {
    QX_WS_NONE,
    QX_WS_UPGRADE, /* HTTP/1.1 Upgrade: the client gets the app's 101 */
    QX_WS_CONNECT, /* extended CONNECT: the client gets 200 for the app's 101 */
};

#define QX_WS_KEY_LEN 24 /* base64 of 16 bytes */

/* Nonzero when an HTTP/1.1 request (method, regular fields) asks for a
 * WebSocket upgrade: GET, an Upgrade list naming websocket, a Connection
 * list naming upgrade. */
int qx_ws_is_upgrade(const char *method, size_t methodlen, const qx_hdr_t *hdrs, size_t n);

/* A Sec-WebSocket-Key from 16 random bytes: QX_WS_KEY_LEN characters and a
 * NUL into out. */
void qx_ws_key(const uint8_t rnd[16], char out[QX_WS_KEY_LEN + 1]);

/* Nonzero when |accept| (len bytes, surrounding blanks allowed) is the
 * Sec-WebSocket-Accept that answers |key|: base64 of the SHA-1 of the key
 * and the GUID of RFC 6455 §1.3. qrux checks it when it made the key
 * (extended CONNECT), as RFC 6455 §4.1 has a client do: an app whose
 * accept does not match did not agree to this handshake. */
int qx_ws_accept_ok(const char *key, const char *accept, size_t len);

#endif
