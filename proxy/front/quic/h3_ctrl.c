/* h3_ctrl.c - the client control stream's MAX_PUSH_ID rule (see h3_ctrl.h). */
#include "front/quic/h3_ctrl.h"

#define H3_ID_ERROR 0x108
#define FRAME_MAX_PUSH_ID 0x0d

enum { ST_TYPE, ST_LEN, ST_PUSH_ID, ST_SKIP };

/* Reads a QUIC variable-length integer from |*p| (up to |end|), resuming a
 * partial one. Returns 1 with |*v| set when complete, 0 when more bytes are
 * needed (all of them consumed). */
static int varint(qx_h3_ctrl_t *c, const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    while (*p < end) {
        c->vbuf[c->vlen++] = *(*p)++;
        size_t need = (size_t)1 << (c->vbuf[0] >> 6);
        if (c->vlen == need) {
            uint64_t x = c->vbuf[0] & 0x3f;
            for (size_t i = 1; i < need; i++)
                x = x << 8 | c->vbuf[i];
            c->vlen = 0;
            *v = x;
            return 1;
        }
    }
    return 0;
}

uint64_t qx_h3_ctrl_feed(qx_h3_ctrl_t *c, int64_t sid, uint64_t offset, const uint8_t *data,
                         size_t len)
{
    const uint8_t *p = data, *end = data + len;
    uint64_t v;

    if (c->stream_id == 0) {
        /* The stream type is its first varint; the control stream's (0x00)
         * is one byte. Other streams are not watched. */
        if (offset != 0 || len == 0 || p[0] != 0x00)
            return 0;
        c->stream_id = sid;
        p++;
    } else if (sid != c->stream_id) {
        return 0;
    }
    while (p < end) {
        switch (c->state) {
        case ST_TYPE:
            if (varint(c, &p, end, &c->ftype))
                c->state = ST_LEN;
            break;
        case ST_LEN:
            if (varint(c, &p, end, &c->left))
                c->state = c->ftype == FRAME_MAX_PUSH_ID && c->left > 0 ? ST_PUSH_ID : ST_SKIP;
            break;
        case ST_PUSH_ID: {
            const uint8_t *from = p;
            int done = varint(c, &p, end, &v);
            uint64_t used = (uint64_t)(p - from);
            c->left = used > c->left ? 0 : c->left - used;
            if (done) {
                if (c->have_max_push_id && v < c->max_push_id)
                    return H3_ID_ERROR;
                c->max_push_id = v;
                c->have_max_push_id = 1;
                c->state = ST_SKIP;
            }
            break;
        }
        case ST_SKIP:
        default: {
            uint64_t n = (uint64_t)(end - p) < c->left ? (uint64_t)(end - p) : c->left;
            p += n;
            c->left -= n;
            break;
        }
        }
        if (c->state == ST_SKIP && c->left == 0)
            c->state = ST_TYPE;
    }
    return 0;
}
