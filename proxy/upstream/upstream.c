/* upstream.c - what every upstream codec shares: the codec choice and the
 * response head storage of a stream (see upstream.h). */
#include "upstream/upstream.h"

#include "base/qx.h"
#include "upstream/h1_up.h"
#include "upstream/h2c_up.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

const qx_upstream_ops_t *qx_upstream_ops_for(const qx_endpoint_t *ep)
{
    if (ep != NULL && ep->protocol == QX_UP_PROTO_H2C)
        return &qx_h2c_upstream_ops;
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

int qx_up_head_grow(qx_up_stream_t *st, const char *at, size_t len)
{
    if (st->hblen + len > QX_UP_MAX_HEAD)
        return QX_ERR_LIMIT;
    size_t cap = st->hbcap ? st->hbcap : 2048;
    while (cap < st->hblen + len)
        cap *= 2;
    char *p = realloc(st->hb, cap);
    if (p == NULL)
        return QX_ERR_NOMEM;
    st->hb = p;
    st->hbcap = cap;
    memcpy(st->hb + st->hblen, at, len);
    st->hblen += len;
    return 0;
}

/* A full field array gets a copy with twice the room in the request's
 * arena (counted against its header bytes), up to QX_UP_MAX_HEADERS. */
qx_up_field_t *qx_up_field_grow(qx_up_stream_t *st)
{
    size_t ncap = st->fcap * 2 > QX_UP_MAX_HEADERS ? QX_UP_MAX_HEADERS : st->fcap * 2;
    if (ncap <= st->fcap)
        return NULL;
    qx_up_field_t *p = qx_arena_alloc(st->arena, ncap * sizeof(*p));
    if (p == NULL)
        return NULL;
    memcpy(p, st->f, st->nf * sizeof(*p));
    st->f = p;
    st->fcap = ncap;
    return qx_up_field_add(st);
}

/* RFC 9110 §6.5.1: fields that frame, route or control the message never
 * come from a trailer section; a recipient would misread them there. */
static int trailer_allowed(const char *name, size_t len)
{
    static const char *const deny[] = {
        "content-length",
        "transfer-encoding",
        "content-encoding",
        "content-type",
        "content-range",
        "trailer",
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
        "authorization",
        "set-cookie",
        "cache-control",
        "expect",
    };
    if (len == 0 || name[0] == ':')
        return 0;
    for (size_t i = 0; i < sizeof(deny) / sizeof(deny[0]); i++) {
        if (strlen(deny[i]) == len && strncasecmp(deny[i], name, len) == 0)
            return 0;
    }
    return 1;
}

const qx_hdr_t *qx_up_trailers_copy(qx_arena_t *arena, const qx_hdr_t *hdrs, size_t n,
                                    size_t *out_n)
{
    *out_n = 0;
    if (n == 0)
        return NULL;
    qx_hdr_t *out = qx_arena_alloc(arena, n * sizeof(*out));
    if (out == NULL)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!trailer_allowed(hdrs[i].name, hdrs[i].namelen))
            continue;
        char *name = qx_arena_strndup(arena, hdrs[i].name, hdrs[i].namelen);
        char *value = qx_arena_strndup(arena, hdrs[i].value, hdrs[i].valuelen);
        if (name == NULL || value == NULL)
            return NULL;
        for (size_t j = 0; j < hdrs[i].namelen; j++)
            name[j] = (char)((name[j] >= 'A' && name[j] <= 'Z') ? name[j] + 32 : name[j]);
        out[k++] = (qx_hdr_t){name, hdrs[i].namelen, value, hdrs[i].valuelen};
    }
    *out_n = k;
    return k ? out : NULL;
}
