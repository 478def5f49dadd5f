/*
 * h3_ctrl.h - a watcher over the client's HTTP/3 control stream, beside
 * nghttp3, for the one check nghttp3 1.8 gets wrong: a MAX_PUSH_ID that
 * lowers the maximum push ID is a connection error H3_ID_ERROR (RFC 9114
 * §7.2.7); nghttp3 reports it as H3_FRAME_ERROR. The watcher only reads the
 * frame types, lengths and MAX_PUSH_ID values; nghttp3 still parses and
 * validates everything (the watcher runs first, so its code wins).
 */
#ifndef QX_H3_CTRL_H
#define QX_H3_CTRL_H

#include <stddef.h>
#include <stdint.h>

typedef struct qx_h3_ctrl {
    int64_t stream_id; /* the client's control stream; 0 (a bidi ID) until seen */
    int state;         /* what the next bytes are (h3_ctrl.c) */
    uint8_t vbuf[8];   /* a variable-length integer split across reads */
    size_t vlen;
    uint64_t ftype, left; /* the frame being read, and its bytes still to come */
    uint64_t max_push_id;
    int have_max_push_id;
} qx_h3_ctrl_t;

/* A zeroed qx_h3_ctrl_t is ready: nothing seen yet. */

/* Bytes of a client-initiated unidirectional stream |sid|, at stream offset
 * |offset|. The stream whose first byte is type 0x00 becomes the control
 * stream watched. Returns 0, or the HTTP/3 error code to close the
 * connection with (H3_ID_ERROR, 0x108). */
uint64_t qx_h3_ctrl_feed(qx_h3_ctrl_t *c, int64_t sid, uint64_t offset, const uint8_t *data,
                         size_t len);

#endif /* QX_H3_CTRL_H */
