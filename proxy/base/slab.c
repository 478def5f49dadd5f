/* slab.c - per-worker size-class free lists (see slab.h). */
#include "base/slab.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BIG 0xffu /* the header's class for a block from plain malloc */

static const size_t class_size[QX_SLAB_CLASSES] = {32,  48,  64,   96,   128,  192,  256, 384,
                                                   512, 768, 1024, 1536, 2048, 3072, 4096};

/* Every block starts with a header of one max_align_t, so what the caller
 * gets stays aligned for anything. */
typedef union hdr {
    struct {
        unsigned cls;
        size_t size; /* usable bytes */
    } h;
    max_align_t align;
    void *next; /* while on a free list */
} hdr_t;

static unsigned class_of(size_t size)
{
    for (unsigned c = 0; c < QX_SLAB_CLASSES; c++) {
        if (size <= class_size[c])
            return c;
    }
    return BIG;
}

void *qx_slab_malloc(qx_slab_t *m, size_t size)
{
    unsigned c = class_of(size);
    hdr_t *b;
    m->allocs++;
    if (c != BIG && m->free[c]) {
        b = m->free[c];
        m->free[c] = b->next;
        m->nfree[c]--;
        m->hits++;
    } else {
        size_t usable = c == BIG ? size : class_size[c];
        if (usable > SIZE_MAX - sizeof(hdr_t) || (b = malloc(sizeof(hdr_t) + usable)) == NULL)
            return NULL;
        b->h.size = usable;
    }
    b->h.cls = c;
    return b + 1;
}

void *qx_slab_calloc(qx_slab_t *m, size_t nmemb, size_t size)
{
    if (size != 0 && nmemb > SIZE_MAX / size)
        return NULL;
    void *p = qx_slab_malloc(m, nmemb * size);
    if (p)
        memset(p, 0, nmemb * size);
    return p;
}

void qx_slab_free(qx_slab_t *m, void *p)
{
    if (p == NULL)
        return;
    hdr_t *b = (hdr_t *)p - 1;
    unsigned c = b->h.cls;
    if (c == BIG || m->nfree[c] * class_size[c] >= QX_SLAB_KEEP) {
        free(b);
        return;
    }
    b->next = m->free[c];
    m->free[c] = b;
    m->nfree[c]++;
}

void *qx_slab_realloc(qx_slab_t *m, void *p, size_t size)
{
    if (p == NULL)
        return qx_slab_malloc(m, size);
    hdr_t *b = (hdr_t *)p - 1;
    size_t have = b->h.size;
    if (size <= have && b->h.cls != BIG)
        return p; /* the class's block has room */
    void *n = qx_slab_malloc(m, size);
    if (n == NULL)
        return NULL;
    memcpy(n, p, have < size ? have : size);
    qx_slab_free(m, p);
    return n;
}

size_t qx_slab_usable(const void *p)
{
    return ((const hdr_t *)p - 1)->h.size;
}

void qx_slab_trim(qx_slab_t *m)
{
    for (unsigned c = 0; c < QX_SLAB_CLASSES; c++) {
        while (m->free[c]) {
            hdr_t *b = m->free[c];
            m->free[c] = b->next;
            free(b);
        }
        m->nfree[c] = 0;
    }
}
