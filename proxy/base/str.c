/* str.c - string and buffer helpers (see str.h). */
#include "base/str.h"

#include "base/qx.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void qx_ascii_lower_n(char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        s[i] = qx_ascii_lower(s[i]);
}

int qx_name_is(const char *s, size_t len, const char *lit)
{
    size_t i = 0;
    for (; i < len; i++) {
        if (lit[i] == '\0' || qx_ascii_lower(s[i]) != qx_ascii_lower(lit[i]))
            return 0;
    }
    return lit[i] == '\0';
}

void qx_buf_init(qx_buf_t *b, size_t first, size_t max)
{
    memset(b, 0, sizeof(*b));
    b->first = first ? first : 64;
    b->max = max;
}

void qx_buf_init_fixed(qx_buf_t *b, char *mem, size_t cap)
{
    memset(b, 0, sizeof(*b));
    b->data = mem;
    b->cap = b->max = cap;
    b->fixed = 1;
}

void qx_buf_free(qx_buf_t *b)
{
    if (b == NULL)
        return;
    if (!b->fixed) {
        free(b->data);
        b->data = NULL;
        b->cap = 0;
    }
    b->len = 0;
    b->failed = 0;
}

/* Room for |more| bytes after len (and the NUL of a growing buffer). */
static int reserve(qx_buf_t *b, size_t more)
{
    if (b->failed)
        return QX_ERR_LIMIT;
    size_t nul = b->fixed ? 0 : 1;
    if (more > b->max || b->len + nul > b->max - more) {
        b->failed = 1;
        return QX_ERR_LIMIT;
    }
    size_t need = b->len + more + nul;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : QX_MIN(QX_MAX(b->first, (size_t)1), b->max);
    while (cap < need)
        cap = cap > b->max / 2 ? b->max : cap * 2;
    char *d = realloc(b->data, cap);
    if (d == NULL) {
        b->failed = 1;
        return QX_ERR_NOMEM;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

int qx_buf_put(qx_buf_t *b, const void *s, size_t n)
{
    int rv = reserve(b, n);
    if (rv != 0)
        return rv;
    if (n > 0)
        memcpy(b->data + b->len, s, n);
    b->len += n;
    if (!b->fixed)
        b->data[b->len] = '\0';
    return 0;
}

int qx_buf_puts(qx_buf_t *b, const char *s)
{
    return qx_buf_put(b, s, strlen(s));
}

int qx_buf_putf(qx_buf_t *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = 1;
        return QX_ERR_INVAL;
    }
    if ((size_t)n < sizeof(small))
        return qx_buf_put(b, small, (size_t)n);
    /* Longer: formatted again, straight into the buffer (room for the
     * NUL vsnprintf writes, which a fixed buffer may not have). */
    int rv = reserve(b, (size_t)n + (b->fixed ? 1 : 0));
    if (rv != 0)
        return rv;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}
