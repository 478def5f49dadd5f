/* trace.c - trace context and request ids for the upstream request (see
 * trace.h). */
#include "exchange/trace.h"

#include "base/str.h"

#include <string.h>

static const char hexdig[] = "0123456789abcdef";

static int name_is(const qx_hdr_t *h, const char *name)
{
    return qx_name_is(h->name, h->namelen, name);
}

static int lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    }
    return 1;
}

static int all_zero(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '0')
            return 0;
    }
    return 1;
}

static void put_hex(char *out, const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdig[b[i] >> 4];
        out[2 * i + 1] = hexdig[b[i] & 15];
    }
}

/* version "-" trace-id(32) "-" parent-id(16) "-" flags(2): 55 characters. */
int qx_trace_parent_valid(const char *v, size_t len)
{
    if (len < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-')
        return 0;
    if (!lower_hex(v, 2) || !lower_hex(v + 3, 32) || !lower_hex(v + 36, 16) ||
        !lower_hex(v + 53, 2))
        return 0;
    if (v[0] == 'f' && v[1] == 'f')
        return 0; /* version ff is invalid */
    if (v[0] == '0' && v[1] == '0' && len != 55)
        return 0; /* version 00 has nothing after the flags */
    if (len > 55 && v[55] != '-')
        return 0; /* later versions may append fields, after a dash */
    return !all_zero(v + 3, 32) && !all_zero(v + 36, 16);
}

static int request_id_valid(const char *v, size_t len)
{
    static const char extra[] = "._-:/+=~";
    if (len == 0 || len > QX_TRACE_REQUEST_ID_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = v[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              (c != '\0' && strchr(extra, c) != NULL)))
            return 0;
    }
    return 1;
}

/* Random bytes as a UUID in its version 4 form (RFC 9562 §5.4). */
static void put_uuid(char *out, const uint8_t *rnd16)
{
    uint8_t b[16];
    memcpy(b, rnd16, 16);
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    char *p = out;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *p++ = '-';
        put_hex(p, b + i, 1);
        p += 2;
    }
    *p = '\0';
}

void qx_trace_init(qx_trace_t *t, const qx_hdr_t *hdrs, size_t n, const uint8_t *rnd)
{
    const qx_hdr_t *tp = NULL, *rid = NULL;
    size_t ntp = 0, nrid = 0;
    for (size_t i = 0; i < n; i++) {
        if (name_is(&hdrs[i], "traceparent")) {
            tp = &hdrs[i];
            ntp++;
        } else if (name_is(&hdrs[i], "x-request-id")) {
            rid = &hdrs[i];
            nrid++;
        }
    }

    /* rnd[0..16): a new trace id, [16..24): our parent id, [24..40): a
     * new request id. */
    char flags[2] = {'0', '1'};
    t->continued = ntp == 1 && qx_trace_parent_valid(tp->value, tp->valuelen);
    t->drop_state = !t->continued;
    if (t->continued) {
        memcpy(t->trace_id, tp->value + 3, 32);
        memcpy(flags, tp->value + 53, 2);
    } else {
        uint8_t id[16];
        memcpy(id, rnd, 16);
        id[0] |= 1; /* never all zero */
        put_hex(t->trace_id, id, 16);
    }
    t->trace_id[32] = '\0';
    uint8_t parent[8];
    memcpy(parent, rnd + 16, 8);
    parent[0] |= 1;
    memcpy(t->traceparent, "00-", 3);
    memcpy(t->traceparent + 3, t->trace_id, 32);
    t->traceparent[35] = '-';
    put_hex(t->traceparent + 36, parent, 8);
    t->traceparent[52] = '-';
    memcpy(t->traceparent + 53, flags, 2);
    t->traceparent[55] = '\0';

    if (nrid == 1 && request_id_valid(rid->value, rid->valuelen)) {
        memcpy(t->request_id, rid->value, rid->valuelen);
        t->request_id[rid->valuelen] = '\0';
    } else {
        put_uuid(t->request_id, rnd + 24);
    }
}

size_t qx_trace_fields(const qx_trace_t *t, const qx_hdr_t *hdrs, size_t n, qx_hdr_t *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (name_is(&hdrs[i], "traceparent") || name_is(&hdrs[i], "x-request-id") ||
            (t->drop_state && name_is(&hdrs[i], "tracestate")))
            continue;
        out[k++] = hdrs[i];
    }
    out[k++] = (qx_hdr_t){"traceparent", 11, t->traceparent, 55};
    out[k++] = (qx_hdr_t){"x-request-id", 12, t->request_id, strlen(t->request_id)};
    return k;
}
