/* websocket.c - telling a WebSocket opening handshake (see websocket.h). */
#include "exchange/websocket.h"

#include "upstream/h1.h"

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

void qx_ws_key(const uint8_t rnd[16], char out[QX_WS_KEY_LEN + 1])
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < 16; i += 3) {
        uint32_t v = (uint32_t)rnd[i] << 16;
        if (i + 1 < 16)
            v |= (uint32_t)rnd[i + 1] << 8;
        if (i + 2 < 16)
            v |= rnd[i + 2];
        out[o++] = b64[(v >> 18) & 63];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = i + 1 < 16 ? b64[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < 16 ? b64[v & 63] : '=';
    }
    out[o] = '\0';
}
