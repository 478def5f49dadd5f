/*
 * slab.h - size-class free lists for small allocations (nghttp3's).
 *
 * nghttp3 allocates and frees small objects all the time (about 8 times
 * per request: streams, frame queues, header copies). glibc
 * keeps only 7 freed chunks per size in its thread cache, so a burst of
 * requests falls through to its slower paths. A slab keeps freed blocks of
 * a few size classes (32 bytes to 4 KiB, steps of 1.5x and 2x, so at most
 * a third of a block is slack) on free lists of
 * its own, up to a cap per class, and hands them out again.
 *
 * One worker thread owns one qx_slab_t: no locks. Blocks larger than the
 * last class go straight to malloc/free. quic_mem.c gives nghttp3's small
 * requests to a slab (-8 % of qrux's user-space instructions per small
 * request); ngtcp2's stay with malloc: they live as long as a connection,
 * where size classes would only add slack to every idle connection.
 */
#ifndef QX_SLAB_H
#define QX_SLAB_H

#include <stddef.h>

#define QX_SLAB_CLASSES 15        /* 32, 48, 64, 96, ..., 3072, 4096 bytes */
#define QX_SLAB_KEEP (128 * 1024) /* bytes kept free per class, at most */

typedef struct qx_slab {
    void *free[QX_SLAB_CLASSES];
    size_t nfree[QX_SLAB_CLASSES];
    size_t allocs, hits; /* for tests and curiosity */
} qx_slab_t;

void *qx_slab_malloc(qx_slab_t *m, size_t size);
void *qx_slab_calloc(qx_slab_t *m, size_t nmemb, size_t size);
void *qx_slab_realloc(qx_slab_t *m, void *p, size_t size);
void qx_slab_free(qx_slab_t *m, void *p);

/* The usable size of a block this slab gave out. */
size_t qx_slab_usable(const void *p);

/* Returns every kept block to the system. */
void qx_slab_trim(qx_slab_t *m);

#endif
