/*
 * qmem.h - a per-worker allocator for ngtcp2 and nghttp3.
 *
 * nghttp3 allocates and frees small objects all the time (about 8 times
 * per request: streams, frame queues, header copies). glibc
 * keeps only 7 freed chunks per size in its thread cache, so a burst of
 * requests falls through to its slower paths. qmem keeps freed blocks of
 * a few size classes (32 bytes to 4 KiB, steps of 1.5x and 2x, so at most
 * a third of a block is slack) on free lists of
 * its own, up to a cap per class, and hands them out again.
 *
 * One worker thread owns one qx_qmem_t: no locks. Blocks larger than the
 * last class go straight to malloc/free. nghttp3 uses it (-8 % of qrux's
 * user-space instructions per small request); ngtcp2 keeps glibc's
 * malloc: its allocations live as long as a connection, where size
 * classes would only add slack to every idle connection.
 */
#ifndef QX_QMEM_H
#define QX_QMEM_H

#include <nghttp3/nghttp3.h>
#include <ngtcp2/ngtcp2.h>
#include <stddef.h>

#define QX_QMEM_CLASSES 15        /* 32, 48, 64, 96, ..., 3072, 4096 bytes */
#define QX_QMEM_KEEP (128 * 1024) /* bytes kept free per class, at most */

typedef struct qx_qmem {
    void *free[QX_QMEM_CLASSES];
    size_t nfree[QX_QMEM_CLASSES];
    size_t allocs, hits; /* for tests and curiosity */
    ngtcp2_mem ngtcp2;   /* the allocator as each library wants it (qx_qmem_init) */
    nghttp3_mem nghttp3;
} qx_qmem_t;

/* Empty lists, and the two libraries' allocator tables pointing here. */
void qx_qmem_init(qx_qmem_t *m);

void *qx_qmem_malloc(qx_qmem_t *m, size_t size);
void *qx_qmem_calloc(qx_qmem_t *m, size_t nmemb, size_t size);
void *qx_qmem_realloc(qx_qmem_t *m, void *p, size_t size);
void qx_qmem_free(qx_qmem_t *m, void *p);

/* Returns every kept block to the system. */
void qx_qmem_trim(qx_qmem_t *m);

#endif
