/* quic_mem.c - the allocator a worker gives ngtcp2 and nghttp3 (see quic_mem.h). */
#include "quic_mem.h"

#include "qx.h"

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

static void *mem_malloc(size_t n, void *user)
{
    qx_qmem_t *m = user;
    size_t pages = slot_pages(n);
    slot_t *s = pages ? slot_get(m, pages) : NULL;
    if (s == NULL)
        return malloc(n);
    s->clean = 0; /* the caller writes it */
    return (uint8_t *)s + HDR;
}

static void mem_free(void *p, void *user)
{
    qx_qmem_t *m = user;
    if (p == NULL)
        return;
    if (!in_region(m, p)) {
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

static void *mem_calloc(size_t nmemb, size_t size, void *user)
{
    qx_qmem_t *m = user;
    if (size != 0 && nmemb > SIZE_MAX / size)
        return NULL;
    size_t n = nmemb * size;
    size_t pages = slot_pages(n);
    slot_t *s = pages ? slot_get(m, pages) : NULL;
    if (s == NULL)
        return calloc(nmemb, size);
    uint8_t *p = (uint8_t *)s + HDR;
    /* Zero pages stay unwritten (and so not resident). */
    memset(p, 0, s->clean ? QX_MIN(n, PAGE - HDR) : n);
    s->clean = 0;
    return p;
}

static void *mem_realloc(void *p, size_t n, void *user)
{
    qx_qmem_t *m = user;
    if (p == NULL)
        return mem_malloc(n, user);
    if (!in_region(m, p))
        return realloc(p, n);
    slot_t *s = (slot_t *)(void *)((uint8_t *)p - HDR);
    size_t cap = s->pages * PAGE - HDR;
    if (n <= cap)
        return p;
    void *q = mem_malloc(n, user);
    if (q == NULL)
        return NULL;
    memcpy(q, p, cap);
    mem_free(p, user);
    return q;
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
    m->ng = (ngtcp2_mem){m, mem_malloc, mem_free, mem_calloc, mem_realloc};
    m->h3 = (nghttp3_mem){m, mem_malloc, mem_free, mem_calloc, mem_realloc};
    *out = m;
    return 0;
}

void qx_qmem_del(qx_qmem_t *m)
{
    if (m == NULL)
        return;
    if (m->base)
        munmap(m->base, (size_t)(m->end - m->base));
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
