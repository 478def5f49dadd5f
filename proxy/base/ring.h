/*
 * ring.h - a fixed-capacity byte ring with three monotonic offsets, used for
 * the per-stream body windows in both directions.
 *
 *   ack <= sent <= fill, fill - ack <= cap
 *
 * [ack, sent) has been handed to a consumer that may still point into it
 * (nghttp3 until the peer ACKs, uv_write until its callback); [sent, fill)
 * is ready to hand out; the rest is free. Nothing is ever moved, so pointers
 * handed out stay valid until ack passes them. The ring never grows: when
 * it is full the producer must be paused (STYLE.md §7).
 */
#ifndef QX_RING_H
#define QX_RING_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>

typedef struct qx_ring {
    uint8_t *data;
    size_t cap; /* a power of two */
    uint64_t ack, sent, fill;
} qx_ring_t;

static inline size_t qx_ring_free(const qx_ring_t *r)
{
    return r->cap - (size_t)(r->fill - r->ack);
}
static inline size_t qx_ring_unsent(const qx_ring_t *r)
{
    return (size_t)(r->fill - r->sent);
}
static inline size_t qx_ring_inflight(const qx_ring_t *r)
{
    return (size_t)(r->sent - r->ack);
}

/* Copies len bytes in; the caller guarantees len <= qx_ring_free(). */
static inline void qx_ring_write(qx_ring_t *r, const uint8_t *p, size_t len)
{
    size_t off = (size_t)(r->fill & (r->cap - 1));
    size_t first = r->cap - off < len ? r->cap - off : len;
    memcpy(r->data + off, p, first);
    memcpy(r->data, p + first, len - first);
    r->fill += len;
}

/* Fills up to 2 iovecs with at most max unsent bytes, without marking
 * them sent. Returns the number of iovecs used (0 when nothing is unsent). */
static inline int qx_ring_peek(const qx_ring_t *r, struct iovec *iov, size_t max)
{
    size_t len = qx_ring_unsent(r);
    if (len > max)
        len = max;
    if (len == 0)
        return 0;
    size_t off = (size_t)(r->sent & (r->cap - 1));
    size_t first = r->cap - off < len ? r->cap - off : len;
    iov[0].iov_base = r->data + off;
    iov[0].iov_len = first;
    if (first == len)
        return 1;
    iov[1].iov_base = r->data;
    iov[1].iov_len = len - first;
    return 2;
}

static inline void qx_ring_mark_sent(qx_ring_t *r, size_t n)
{
    r->sent += n;
}
static inline void qx_ring_mark_acked(qx_ring_t *r, size_t n)
{
    r->ack += n;
}

#endif
