/*
 * router.c - picks a route from the TLS SNI and the :authority (see
 * router.h for the order).
 *
 * Built once per config snapshot: exact hosts and "*.suffix" rules go into
 * two arrays sorted by name, so a lookup is a binary search and the match
 * path allocates nothing. A host is compared case-insensitively in place
 * (ASCII only: host names on the wire are ASCII or punycode) with its port
 * and one trailing dot ignored; the config stores every match lowercased
 * with no trailing dot (config.c normalize_match), so only the request side
 * needs folding.
 *
 * Suffix rules are found by trying each dot of the host from the left:
 * "a.b.example.com" looks up "b.example.com", then "example.com", then
 * "com", so the first hit is the longest suffix, in as many lookups as the
 * host has dots.
 */
#include "conf/router.h"

#include "base/qx.h"
#include "base/str.h"

#include <stdlib.h>
#include <string.h>

typedef struct router_entry {
    const char *name; /* lowercased, points into cfg->routes[idx].match */
    size_t len;
    int idx;
} router_entry_t;

struct qx_router {
    router_entry_t *exact;
    size_t nexact;
    router_entry_t *suffix; /* "*.example.com" stored as "example.com" */
    size_t nsuffix;
    int catchall; /* index of "*", or -1 */
};

/* Orders a request host (any case) against an entry name (lowercase):
 * bytewise on the folded host, then shorter first. */
static int host_cmp(const char *h, size_t hlen, const char *name, size_t nlen)
{
    size_t n = QX_MIN(hlen, nlen);
    for (size_t i = 0; i < n; i++) {
        unsigned char a = (unsigned char)qx_ascii_lower(h[i]), b = (unsigned char)name[i];
        if (a != b)
            return a < b ? -1 : 1;
    }
    return hlen < nlen ? -1 : hlen > nlen ? 1 : 0;
}

static int entry_cmp(const void *pa, const void *pb)
{
    const router_entry_t *a = pa, *b = pb;
    int c = host_cmp(a->name, a->len, b->name, b->len);
    if (c != 0)
        return c;
    return a->idx < b->idx ? -1 : a->idx > b->idx; /* the first route wins a tie */
}

/* Index of the route named h, or -1. Among equal names the lowest route
 * index (the config rejects duplicates, but a router must not depend on
 * it). */
static int lookup(const router_entry_t *v, size_t n, const char *h, size_t hlen)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (host_cmp(h, hlen, v[mid].name, v[mid].len) > 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < n && host_cmp(h, hlen, v[lo].name, v[lo].len) == 0)
        return v[lo].idx;
    return -1;
}

/*
 * Reduces an SNI or authority to the bare host: "[::1]:8443" -> "::1",
 * "Example.COM:443" -> "Example.COM", "example.com." -> "example.com". An
 * unbracketed value with several ':' is an IPv6 literal without a port and
 * is kept whole. Sets *len to 0 when nothing is left.
 */
static const char *bare_host(const char *s, size_t slen, size_t *len)
{
    const char *h = s;
    size_t n = slen;

    if (s == NULL || slen == 0) {
        *len = 0;
        return s;
    }
    if (s[0] == '[') {
        const char *close = memchr(s, ']', slen);
        h = s + 1;
        n = close != NULL ? (size_t)(close - h) : slen - 1;
    } else {
        const char *colon = memchr(s, ':', slen);
        if (colon != NULL && memchr(colon + 1, ':', slen - (size_t)(colon + 1 - s)) == NULL)
            n = (size_t)(colon - s);
    }
    if (n > 0 && h[n - 1] == '.')
        n--;
    *len = n;
    return h;
}

static int match_suffix(const qx_router_t *r, const char *h, size_t hlen)
{
    /* A dot at position 0 would leave an empty label in front of the
     * suffix: ".example.com" is no subdomain of example.com. */
    for (size_t i = 1; i + 1 < hlen; i++) {
        if (h[i] != '.')
            continue;
        int idx = lookup(r->suffix, r->nsuffix, h + i + 1, hlen - i - 1);
        if (idx >= 0)
            return idx;
    }
    return -1;
}

int qx_router_match(const qx_router_t *r, const char *sni, size_t snilen, const char *authority,
                    size_t authlen)
{
    size_t slen, alen;
    const char *s, *a;
    int idx;

    if (r == NULL)
        return -1;
    s = bare_host(sni, snilen, &slen);
    a = bare_host(authority, authlen, &alen);

    if (slen > 0 && (idx = lookup(r->exact, r->nexact, s, slen)) >= 0)
        return idx;
    if (alen > 0 && (idx = lookup(r->exact, r->nexact, a, alen)) >= 0)
        return idx;
    if (slen > 0 && (idx = match_suffix(r, s, slen)) >= 0)
        return idx;
    if (alen > 0 && (idx = match_suffix(r, a, alen)) >= 0)
        return idx;
    return r->catchall;
}

int qx_router_new(qx_router_t **out, const qx_config_t *cfg)
{
    qx_router_t *r;
    size_t n = cfg->nroutes;

    *out = NULL;
    if ((r = calloc(1, sizeof(*r))) == NULL)
        goto fail_router;
    r->catchall = -1;
    /* n may be 0 for a config built by hand; calloc(0) may return NULL */
    if ((r->exact = calloc(n + 1, sizeof(*r->exact))) == NULL)
        goto fail_arrays;
    if ((r->suffix = calloc(n + 1, sizeof(*r->suffix))) == NULL)
        goto fail_arrays;

    for (size_t i = 0; i < n; i++) {
        const char *m = cfg->routes[i].match;
        size_t len = strlen(m);
        if (len == 1 && m[0] == '*') {
            if (r->catchall < 0)
                r->catchall = (int)i;
        } else if (len > 2 && m[0] == '*' && m[1] == '.') {
            r->suffix[r->nsuffix++] = (router_entry_t){m + 2, len - 2, (int)i};
        } else {
            r->exact[r->nexact++] = (router_entry_t){m, len, (int)i};
        }
    }
    qsort(r->exact, r->nexact, sizeof(*r->exact), entry_cmp);
    qsort(r->suffix, r->nsuffix, sizeof(*r->suffix), entry_cmp);
    *out = r;
    return 0;

fail_arrays:
    qx_router_del(r);
fail_router:
    return QX_ERR_NOMEM;
}

void qx_router_del(qx_router_t *r)
{
    if (r == NULL)
        return;
    free(r->exact);
    free(r->suffix);
    free(r);
}
