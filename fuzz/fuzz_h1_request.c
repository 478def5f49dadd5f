/*
 * fuzz_h1_request.c - the HTTP/1.1 request reader of the HTTPS front
 * (qx_h1_reqp_t, llhttp in request mode plus qrux's smuggling rules) on
 * arbitrary bytes, fed the way the connection feeds it: in pieces whose
 * sizes come from the input, resuming after each head, several pipelined
 * requests in a row. Checks what the front relies on: a head is handed
 * over at most once per request, a refused request has status 400 or 431,
 * field offsets stay inside the head buffer, and the reader never takes
 * more than it was given.
 */
#include "front/tcp/h1_front.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t body_bytes;

static void on_body(void *user, const char *at, size_t len)
{
    (void)user;
    volatile char c = len ? at[0] ^ at[len - 1] : 0; /* the bytes must be readable */
    (void)c;
    body_bytes += len;
}

static void check_head(const qx_h1_reqp_t *rp)
{
    if (rp->nfields > QX_MAX_HEADERS)
        __builtin_trap();
    for (size_t i = 0; i < rp->nfields; i++) {
        const qx_h1_field_t *f = &rp->fields[i];
        if ((size_t)f->name_off + f->name_len > rp->len ||
            (size_t)f->value_off + f->value_len > rp->len)
            __builtin_trap();
    }
    if (rp->status == 0 && rp->path == NULL)
        __builtin_trap(); /* an accepted head has a target */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qx_h1_reqp_t rp;
    size_t off = 0;
    int stalls = 0;
    /* The first byte picks the piece size (0: everything at once). */
    size_t step = size ? data[0] % 17 : 0;
    if (size) {
        data++;
        size--;
    }
    qx_h1_reqp_init(&rp, on_body, NULL);
    for (int requests = 0; requests < 64 && off <= size;) {
        size_t n = step ? (size - off < step ? size - off : step) : size - off;
        size_t used = qx_h1_reqp_feed(&rp, (const char *)data + off, n);
        if (used > n)
            __builtin_trap();
        off += used;
        if (rp.head_ready) {
            check_head(&rp);
            rp.head_ready = 0;
        }
        if (rp.phase == QX_H1P_ERROR) {
            if (rp.status != 400 && rp.status != 431)
                __builtin_trap();
            break;
        }
        if (rp.phase == QX_H1P_DONE) {
            qx_h1_reqp_next(&rp);
            requests++;
            continue;
        }
        if (off == size)
            break;
        if (used == 0 && ++stalls > 2)
            break; /* the reader waits for the caller (a paused body) */
        if (used > 0)
            stalls = 0;
    }
    qx_h1_reqp_free(&rp);
    return 0;
}
