/* upstream.c - what every upstream codec shares: the codec choice and the
 * response head storage of a stream (see upstream.h). */
#include "upstream/upstream.h"

#include "base/qx.h"
#include "upstream/h1_up.h"

#include <stdlib.h>
#include <string.h>

const qx_upstream_ops_t *qx_upstream_ops_for(const qx_endpoint_t *ep)
{
    (void)ep;
    return &qx_h1_upstream_ops;
}

void qx_up_stream_init(qx_up_stream_t *st)
{
    memset(st, 0, sizeof(*st));
}

void qx_up_stream_trim(qx_up_stream_t *st)
{
    if (st->hbcap > 4096) {
        free(st->hb);
        st->hb = NULL;
        st->hbcap = 0;
    }
}

void qx_up_stream_free(qx_up_stream_t *st)
{
    free(st->hb);
    st->hb = NULL;
    st->hbcap = 0;
}

void qx_up_head_reset(qx_up_stream_t *st, qx_arena_t *arena)
{
    st->arena = arena;
    st->hblen = 0;
    st->f = st->f_inline;
    st->fcap = QX_UP_FIELDS;
    st->nf = 0;
}

int qx_up_head_append(qx_up_stream_t *st, const char *at, size_t len)
{
    if (len == 0)
        return 0; /* a parser may hand over an empty span; hb may not exist yet */
    if (st->hblen + len > QX_UP_MAX_HEAD)
        return QX_ERR_LIMIT;
    if (st->hblen + len > st->hbcap) {
        size_t cap = st->hbcap ? st->hbcap : 2048;
        while (cap < st->hblen + len)
            cap *= 2;
        char *p = realloc(st->hb, cap);
        if (p == NULL)
            return QX_ERR_NOMEM;
        st->hb = p;
        st->hbcap = cap;
    }
    memcpy(st->hb + st->hblen, at, len);
    st->hblen += len;
    return 0;
}

/* A full field array gets a copy with twice the room in the request's
 * arena (counted against its header bytes), up to QX_UP_MAX_HEADERS. */
qx_up_field_t *qx_up_field_add(qx_up_stream_t *st)
{
    if (st->nf == st->fcap) {
        size_t ncap = st->fcap * 2 > QX_UP_MAX_HEADERS ? QX_UP_MAX_HEADERS : st->fcap * 2;
        if (ncap <= st->fcap)
            return NULL;
        qx_up_field_t *p = qx_arena_alloc(st->arena, ncap * sizeof(*p));
        if (p == NULL)
            return NULL;
        memcpy(p, st->f, st->nf * sizeof(*p));
        st->f = p;
        st->fcap = ncap;
    }
    qx_up_field_t *f = &st->f[st->nf++];
    *f = (qx_up_field_t){(uint32_t)st->hblen, 0, 0, 0};
    return f;
}
