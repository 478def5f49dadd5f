/* quic_mem.c - the allocator a worker gives ngtcp2 and nghttp3 (see quic_mem.h). */
#include "front/quic/quic_mem.h"

#include "base/qx.h"
#include "base/slab.h"

#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define PAGE 4096u
#define MIN_PAGES 2                    /* a request that fits one page goes to malloc */
#define MAX_PAGES 16                   /* and so does one over 64 KiB (glibc maps those itself) */
#define REGION_BYTES ((size_t)8 << 30) /* address space per worker, not memory */
#define REGION_BYTES_SMALL ((size_t)1 << 30)

/* The head of a slot: the caller's block starts right after it. */
typedef struct slot {
    uint32_t pages;    /* the slot's size */
    uint32_t clean;    /* every page but the first is zero (new, or given back) */
    struct slot *next; /* on the free list */
} slot_t;

#define HDR 16u /* sizeof(slot_t), keeping the caller's block 16-aligned */

struct qx_qmem {
    ngtcp2_mem ng;
    nghttp3_mem h3;
    uint8_t *base, *end; /* the region */
    uint8_t *next;       /* its untouched rest */
    slot_t *free[MAX_PAGES + 1];
    qx_slab_t slab; /* nghttp3's small blocks */
};

static int in_region(const qx_qmem_t *m, const void *p)
{
    return (const uint8_t *)p >= m->base && (const uint8_t *)p < m->end;
}

static size_t slot_pages(size_t n)
{
    if (n > MAX_PAGES * PAGE - HDR)
        return 0;
    size_t pages = (n + HDR + PAGE - 1) / PAGE;
    return pages >= MIN_PAGES ? pages : 0;
}

static slot_t *slot_get(qx_qmem_t *m, size_t pages)
{
    slot_t *s = m->free[pages];
    if (s) {
        m->free[pages] = s->next;
        return s;
    }
    if (m->next == NULL || (size_t)(m->end - m->next) < pages * PAGE)
        return NULL;
    s = (slot_t *)(void *)m->next;
    m->next += pages * PAGE;
    s->pages = (uint32_t)pages;
    s->clean = 1;
    return s;
}

/* What does not come from the region: nghttp3's small blocks come from
 * the worker's slab (it allocates and frees them on every request), the
 * rest from malloc. */
static void *small_alloc(qx_qmem_t *m, size_t n, int zero, int slab)
{
    if (slab)
        return zero ? qx_slab_calloc(&m->slab, 1, n) : qx_slab_malloc(&m->slab, n);
    return zero ? calloc(1, n) : malloc(n);
}

static void *alloc(qx_qmem_t *m, size_t n, int zero, int slab)
{
    size_t pages = slot_pages(n);
    slot_t *s = pages ? slot_get(m, pages) : NULL;
    if (s == NULL)
        return small_alloc(m, n, zero, slab);
    uint8_t *p = (uint8_t *)s + HDR;
    /* Zero pages stay unwritten (and so not resident). */
    if (zero)
        memset(p, 0, s->clean ? QX_MIN(n, PAGE - HDR) : n);
    s->clean = 0; /* the caller writes it */
    return p;
}

static void release(qx_qmem_t *m, void *p, int slab)
{
    if (p == NULL)
        return;
    if (!in_region(m, p)) {
        if (slab)
            qx_slab_free(&m->slab, p);
        else
            free(p);
        return;
    }
    slot_t *s = (slot_t *)(void *)((uint8_t *)p - HDR);
    /* Give back what the block's user wrote past the first page (the
     * first holds this head anyway). Two-page slots (skip-list blocks of
     * which a second page is seldom written) are kept as they are: a
     * syscall on each of their frees would cost more than it saves. */
    s->clean = s->pages > MIN_PAGES &&
               madvise((uint8_t *)s + PAGE, (s->pages - 1) * PAGE, MADV_DONTNEED) == 0;
    s->next = m->free[s->pages];
    m->free[s->pages] = s;
}

static void *resize(qx_qmem_t *m, void *p, size_t n, int slab)
{
    if (p == NULL)
        return alloc(m, n, 0, slab);
    size_t cap;
    if (in_region(m, p)) {
        cap = ((slot_t *)(void *)((uint8_t *)p - HDR))->pages * PAGE - HDR;
        if (n <= cap)
            return p;
    } else if (slot_pages(n) == 0 || m->next == NULL) {
        /* Stays out of the region. */
        return slab ? qx_slab_realloc(&m->slab, p, n) : realloc(p, n);
    } else if (slab) {
        cap = qx_slab_usable(p);
    } else {
        cap = malloc_usable_size(p);
    }
    void *q = alloc(m, n, 0, slab);
    if (q == NULL)
        return NULL;
    memcpy(q, p, QX_MIN(cap, n));
    release(m, p, slab);
    return q;
}

static void *ng_malloc(size_t n, void *user)
{
    return alloc(user, n, 0, 0);
}
static void ng_free(void *p, void *user)
{
    release(user, p, 0);
}
static void *ng_calloc(size_t nmemb, size_t size, void *user)
{
    if (size != 0 && nmemb > SIZE_MAX / size)
        return NULL;
    return alloc(user, nmemb * size, 1, 0);
}
static void *ng_realloc(void *p, size_t n, void *user)
{
    return resize(user, p, n, 0);
}

static void *h3_malloc(size_t n, void *user)
{
    return alloc(user, n, 0, 1);
}
static void h3_free(void *p, void *user)
{
    release(user, p, 1);
}
static void *h3_calloc(size_t nmemb, size_t size, void *user)
{
    if (size != 0 && nmemb > SIZE_MAX / size)
        return NULL;
    return alloc(user, nmemb * size, 1, 1);
}
static void *h3_realloc(void *p, size_t n, void *user)
{
    return resize(user, p, n, 1);
}

int qx_qmem_new(qx_qmem_t **out)
{
    qx_qmem_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return QX_ERR_NOMEM;
    size_t sizes[] = {REGION_BYTES, REGION_BYTES_SMALL};
    for (size_t i = 0; i < QX_ARRAY_LEN(sizes) && m->base == NULL; i++) {
        void *r = mmap(NULL, sizes[i], PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (r == MAP_FAILED)
            continue;
        /* Huge pages would back a whole 2 MiB for the first byte written. */
        madvise(r, sizes[i], MADV_NOHUGEPAGE);
        m->base = m->next = r;
        m->end = m->base + sizes[i];
    }
    m->ng = (ngtcp2_mem){m, ng_malloc, ng_free, ng_calloc, ng_realloc};
    m->h3 = (nghttp3_mem){m, h3_malloc, h3_free, h3_calloc, h3_realloc};
    *out = m;
    return 0;
}

void qx_qmem_del(qx_qmem_t *m)
{
    if (m == NULL)
        return;
    if (m->base)
        munmap(m->base, (size_t)(m->end - m->base));
    qx_slab_trim(&m->slab);
    free(m);
}

const ngtcp2_mem *qx_qmem_ngtcp2(qx_qmem_t *m)
{
    return &m->ng;
}

const nghttp3_mem *qx_qmem_nghttp3(qx_qmem_t *m)
{
    return &m->h3;
}
