/*
 * arena.h - a per-request arena for strings: a chain of blocks, freed all at
 * once when the request ends, with a total cap so a client cannot make a
 * request cost unbounded memory (the caller answers 431 on QX_ERR_LIMIT).
 */
#ifndef QX_ARENA_H
#define QX_ARENA_H

#include <stddef.h>

typedef struct qx_arena_block qx_arena_block_t;

typedef struct qx_arena {
    qx_arena_block_t *head;
    size_t used; /* bytes handed out, for the cap */
    size_t cap;
} qx_arena_t;

void qx_arena_init(qx_arena_t *a, size_t cap);

/* Frees every block; the arena can be used again. Accepts a zeroed arena. */
void qx_arena_free(qx_arena_t *a);

/* Empties the arena for the next request but keeps one standard block, so
 * a reused arena allocates nothing for a usual head. */
void qx_arena_reset(qx_arena_t *a);

/* Returns len bytes (8-byte aligned), or NULL when the cap would be passed
 * or memory is short. */
void *qx_arena_alloc(qx_arena_t *a, size_t len);

/* Copies s[len] and NUL-terminates it. NULL as above. */
char *qx_arena_strndup(qx_arena_t *a, const char *s, size_t len);

#endif
