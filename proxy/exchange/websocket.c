/* websocket.c - telling a WebSocket opening handshake (see websocket.h). */
#include "exchange/websocket.h"

#include "upstream/h1.h"

#include <gnutls/crypto.h>
#include <string.h>
#include <strings.h>

int qx_ws_is_upgrade(const char *method, size_t methodlen, const qx_hdr_t *hdrs, size_t n)
{
    int upgrade = 0, conn = 0;
    if (methodlen != 3 || memcmp(method, "GET", 3) != 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        const qx_hdr_t *h = &hdrs[i];
        if (h->namelen == 7 && strncasecmp(h->name, "upgrade", 7) == 0 &&
            qx_h1_list_has_token(h->value, h->valuelen, "websocket", 9))
            upgrade = 1;
        else if (h->namelen == 10 && strncasecmp(h->name, "connection", 10) == 0 &&
                 qx_h1_list_has_token(h->value, h->valuelen, "upgrade", 7))
            conn = 1;
    }
    return upgrade && conn;
}

/* Base64 (RFC 4648 §4, padded) of n bytes into out, NUL-terminated;
 * out holds 4 * ((n + 2) / 3) + 1 bytes. */
static void b64(const uint8_t *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    out[o] = '\0';
}

void qx_ws_key(const uint8_t rnd[16], char out[QX_WS_KEY_LEN + 1])
{
    b64(rnd, 16, out);
}

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define ACCEPT_LEN 28 /* base64 of a 20-byte SHA-1 */

int qx_ws_accept_ok(const char *key, const char *accept, size_t len)
{
    char in[QX_WS_KEY_LEN + sizeof(WS_GUID)];
    uint8_t sha[20];
    char want[ACCEPT_LEN + 1];
    size_t klen = strlen(key);
    if (klen != QX_WS_KEY_LEN || accept == NULL)
        return 0;
    memcpy(in, key, klen);
    memcpy(in + klen, WS_GUID, sizeof(WS_GUID) - 1);
    if (gnutls_hash_fast(GNUTLS_DIG_SHA1, in, klen + sizeof(WS_GUID) - 1, sha) != 0)
        return 0;
    b64(sha, sizeof(sha), want);
    while (len > 0 && (*accept == ' ' || *accept == '\t')) {
        accept++;
        len--;
    }
    while (len > 0 && (accept[len - 1] == ' ' || accept[len - 1] == '\t'))
        len--;
    return len == ACCEPT_LEN && memcmp(accept, want, ACCEPT_LEN) == 0;
}
