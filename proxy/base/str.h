/*
 * str.h - the small string and buffer helpers every layer used to write
 * for itself: ASCII case, header-name comparison, and a byte buffer that
 * grows by doubling up to a cap (or writes into the caller's fixed
 * memory), with put/puts/putf that stop at the cap.
 *
 * Addresses are formatted with libuv's uv_ip_name() (no helper here).
 */
#ifndef QX_STR_H
#define QX_STR_H

#include <stddef.h>

/* ASCII only: HTTP field names and host names are case-insensitive in
 * ASCII, whatever the locale (tolower() would follow the locale). */
static inline char qx_ascii_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c + ('a' - 'A')) : c;
}

/* Lowercases s[0..n) in place. */
void qx_ascii_lower_n(char *s, size_t n);

/* 1 when s[0..len) equals the NUL-terminated |lit|, ASCII case ignored
 * (a header name against a literal). */
int qx_name_is(const char *s, size_t len, const char *lit);

/*
 * A byte buffer. Growing (qx_buf_init): its capacity starts at |first|
 * and doubles as needed, never past |max|; it is kept NUL-terminated
 * (data[len] == 0) so that it reads as a string. Fixed
 * (qx_buf_init_fixed): the caller's memory, never grown or freed, and
 * holding exactly the bytes put (no NUL). Either way an append that does
 * not fit (or memory that is short) marks the buffer failed and appends
 * nothing; later appends do nothing either, so a caller checks once at
 * the end.
 */
typedef struct qx_buf {
    char *data;
    size_t len;
    size_t cap;
    size_t first; /* growing: the first capacity */
    size_t max;   /* the capacity never passes this */
    int fixed;    /* data is the caller's */
    int failed;   /* an append did not fit or memory was short */
} qx_buf_t;

void qx_buf_init(qx_buf_t *b, size_t first, size_t max);
void qx_buf_init_fixed(qx_buf_t *b, char *mem, size_t cap);

/* Frees a growing buffer's memory and empties it (first and max stay).
 * Accepts NULL and a zeroed buffer. */
void qx_buf_free(qx_buf_t *b);

/* Appends. Return 0, QX_ERR_LIMIT (past max, or the buffer had failed
 * before) or QX_ERR_NOMEM; on an error the buffer is marked failed. */
int qx_buf_put(qx_buf_t *b, const void *s, size_t n);
int qx_buf_puts(qx_buf_t *b, const char *s);
__attribute__((format(printf, 2, 3))) int qx_buf_putf(qx_buf_t *b, const char *fmt, ...);

#endif
