/* arena.c - per-request string arena (see arena.h). */
#include "base/arena.h"

#include <stdlib.h>
#include <string.h>

#define BLOCK_SIZE 4096

struct qx_arena_block {
    qx_arena_block_t *next;
    size_t pos, end;
    max_align_t data[]; /* aligned storage */
};

void qx_arena_init(qx_arena_t *a, size_t cap)
{
    a->head = NULL;
    a->used = 0;
    a->cap = cap;
}

void qx_arena_free(qx_arena_t *a)
{
    qx_arena_block_t *b = a->head;
    while (b) {
        qx_arena_block_t *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
    a->used = 0;
}

void qx_arena_reset(qx_arena_t *a)
{
    qx_arena_block_t *keep = NULL;
    qx_arena_block_t *b = a->head;
    while (b) {
        qx_arena_block_t *next = b->next;
        if (keep == NULL && b->end == BLOCK_SIZE) {
            keep = b;
        } else {
            free(b);
        }
        b = next;
    }
    if (keep) {
        keep->next = NULL;
        keep->pos = 0;
    }
    a->head = keep;
    a->used = 0;
}

void *qx_arena_alloc(qx_arena_t *a, size_t len)
{
    size_t need = (len + 7) & ~(size_t)7;
    if (need < len || need > a->cap - a->used)
        return NULL;
    qx_arena_block_t *b = a->head;
    if (b == NULL || b->end - b->pos < need) {
        size_t size = need > BLOCK_SIZE ? need : BLOCK_SIZE;
        b = malloc(sizeof(*b) + size);
        if (b == NULL)
            return NULL;
        b->pos = 0;
        b->end = size;
        b->next = a->head;
        a->head = b;
    }
    void *p = (char *)b->data + b->pos;
    b->pos += need;
    a->used += need;
    return p;
}

char *qx_arena_strndup(qx_arena_t *a, const char *s, size_t len)
{
    char *p = qx_arena_alloc(a, len + 1);
    if (p == NULL)
        return NULL;
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}
