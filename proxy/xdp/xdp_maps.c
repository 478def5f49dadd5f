/*
 * xdp_maps.c - the pinned maps of the XDP program, seen from the proxy
 * (see xdp_maps.h).
 */
#include "xdp/xdp_maps.h"
#include "base/qx.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void qx_xdp_maps_init(qx_xdp_maps_t *m)
{
    m->config = m->keys = m->deny4 = m->deny6 = m->counters = -1;
    m->pin = NULL;
}

void qx_xdp_maps_free(qx_xdp_maps_t *m)
{
    int *fds[] = {&m->config, &m->keys, &m->deny4, &m->deny6, &m->counters};
    for (size_t i = 0; i < QX_ARRAY_LEN(fds); i++) {
        if (*fds[i] >= 0)
            close(*fds[i]);
        *fds[i] = -1;
    }
    free(m->pin);
    m->pin = NULL;
}

static int open_pinned(const char *pin, const char *name, int *fd, char *err, size_t errlen)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", pin, name);
    *fd = bpf_obj_get(path);
    if (*fd >= 0)
        return 0;
    if (errno == ENOENT)
        return QX_ERR_NOTFOUND;
    snprintf(err, errlen, "xdp.pin: cannot open %s: %s", path, strerror(errno));
    return QX_ERR_IO;
}

int qx_xdp_maps_open(qx_xdp_maps_t *m, const char *pin, char *err, size_t errlen)
{
    int rv;
    qx_xdp_maps_init(m);
    if ((rv = open_pinned(pin, QX_XDP_MAP_CONFIG, &m->config, err, errlen)) != 0 ||
        (rv = open_pinned(pin, QX_XDP_MAP_KEYS, &m->keys, err, errlen)) != 0 ||
        (rv = open_pinned(pin, QX_XDP_MAP_DENY4, &m->deny4, err, errlen)) != 0 ||
        (rv = open_pinned(pin, QX_XDP_MAP_DENY6, &m->deny6, err, errlen)) != 0 ||
        (rv = open_pinned(pin, QX_XDP_MAP_COUNTERS, &m->counters, err, errlen)) != 0)
        goto fail;
    m->pin = strdup(pin);
    if (m->pin == NULL) {
        rv = QX_ERR_NOMEM;
        goto fail;
    }
    return 0;
fail:
    qx_xdp_maps_free(m);
    return rv;
}

int qx_xdp_maps_attached(const qx_xdp_maps_t *m)
{
    char path[PATH_MAX];
    struct bpf_link_info info;
    uint32_t len = sizeof(info);

    if (m->pin == NULL)
        return 0;
    snprintf(path, sizeof(path), "%s/%s", m->pin, QX_XDP_PIN_LINK);
    int fd = bpf_obj_get(path);
    if (fd < 0)
        return 0;
    memset(&info, 0, sizeof(info));
    int ok = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && info.type == BPF_LINK_TYPE_XDP &&
             info.xdp.ifindex != 0; /* 0: the interface went away */
    close(fd);
    return ok;
}

void qx_xdp_maps_counters(const qx_xdp_maps_t *m, uint64_t *out)
{
    memset(out, 0, sizeof(uint64_t) * QX_XDP_NREASONS);
    if (m->counters < 0)
        return;
    int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0)
        return;
    uint64_t *v = calloc((size_t)ncpu, sizeof(*v));
    if (v == NULL)
        return;
    for (uint32_t r = 0; r < QX_XDP_NREASONS; r++) {
        if (bpf_map_lookup_elem(m->counters, &r, v) != 0)
            continue;
        for (int c = 0; c < ncpu; c++)
            out[r] += v[c];
    }
    free(v);
}

int qx_xdp_maps_publish_keys(const qx_xdp_maps_t *m, const qx_cid_keys_t *keys)
{
    if (m->keys < 0)
        return 0;
    uint32_t gen = __atomic_load_n(&keys->gen, __ATOMIC_ACQUIRE);
    struct qx_xdp_cid_key cur = {.gen = gen, .valid = 1}, prev = {.gen = gen - 1};
    memcpy(cur.key, keys->key[gen & 1], sizeof(cur.key));
    if (keys->has_prev) {
        prev.valid = 1;
        memcpy(prev.key, keys->key[(gen - 1) & 1], sizeof(prev.key));
    }
    /* The new key first: a packet seen in between finds both. */
    uint32_t slot = gen & 1, other = (gen - 1) & 1;
    if (bpf_map_update_elem(m->keys, &slot, &cur, BPF_ANY) != 0 ||
        bpf_map_update_elem(m->keys, &other, &prev, BPF_ANY) != 0)
        return QX_ERR_IO;
    return 0;
}

int qx_xdp_maps_publish_slot(const qx_xdp_maps_t *m, uint32_t gen, const uint8_t *key)
{
    struct qx_xdp_cid_key k = {.gen = gen, .valid = 1};
    uint32_t slot = gen & 1;
    if (m->keys < 0)
        return 0;
    memcpy(k.key, key, sizeof(k.key));
    return bpf_map_update_elem(m->keys, &slot, &k, BPF_ANY) == 0 ? 0 : QX_ERR_IO;
}

int qx_xdp_maps_set_rate(const qx_xdp_maps_t *m, uint32_t rate, uint32_t burst)
{
    struct qx_xdp_config cfg;
    uint32_t zero = 0;
    if (m->config < 0)
        return 0;
    if (bpf_map_lookup_elem(m->config, &zero, &cfg) != 0)
        return QX_ERR_IO;
    cfg.rate = rate;
    cfg.burst = burst;
    return bpf_map_update_elem(m->config, &zero, &cfg, BPF_ANY) == 0 ? 0 : QX_ERR_IO;
}

/* ---- deny list ---------------------------------------------------------- */

/* Parses one CIDR into an LPM key: returns 4 or 6 (the family) or -1. */
static int parse_cidr(const char *s, struct qx_xdp_lpm4 *k4, struct qx_xdp_lpm6 *k6)
{
    char addr[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    long plen = -1;

    if (alen == 0 || alen >= sizeof(addr))
        return -1;
    memcpy(addr, s, alen);
    addr[alen] = '\0';
    if (slash) {
        char *e;
        if (slash[1] < '0' || slash[1] > '9')
            return -1;
        errno = 0;
        plen = strtol(slash + 1, &e, 10);
        if (*e != '\0' || errno != 0)
            return -1;
    }
    memset(k4, 0, sizeof(*k4));
    memset(k6, 0, sizeof(*k6));
    if (inet_pton(AF_INET, addr, k4->addr) == 1) {
        if (plen > 32)
            return -1;
        k4->prefixlen = plen < 0 ? 32 : (uint32_t)plen;
        /* Host bits cleared: "10.1.2.3/8" and "10.0.0.0/8" are one entry. */
        for (uint32_t b = k4->prefixlen; b < 32; b++)
            k4->addr[b / 8] &= (uint8_t) ~(0x80u >> (b % 8));
        return 4;
    }
    if (inet_pton(AF_INET6, addr, k6->addr) == 1) {
        if (plen > 128)
            return -1;
        k6->prefixlen = plen < 0 ? 128 : (uint32_t)plen;
        for (uint32_t b = k6->prefixlen; b < 128; b++)
            k6->addr[b / 8] &= (uint8_t) ~(0x80u >> (b % 8));
        return 6;
    }
    return -1;
}

json_t *qx_xdp_deny_get(const qx_xdp_maps_t *m)
{
    json_t *a = json_array();
    char buf[INET6_ADDRSTRLEN], cidr[INET6_ADDRSTRLEN + 8];
    if (a == NULL || m->deny4 < 0)
        return a;
    struct qx_xdp_lpm4 k4, *p4 = NULL;
    while (bpf_map_get_next_key(m->deny4, p4, &k4) == 0) {
        inet_ntop(AF_INET, k4.addr, buf, sizeof(buf));
        snprintf(cidr, sizeof(cidr), "%s/%u", buf, k4.prefixlen);
        json_array_append_new(a, json_string(cidr));
        p4 = &k4;
    }
    struct qx_xdp_lpm6 k6, *p6 = NULL;
    while (bpf_map_get_next_key(m->deny6, p6, &k6) == 0) {
        inet_ntop(AF_INET6, k6.addr, buf, sizeof(buf));
        snprintf(cidr, sizeof(cidr), "%s/%u", buf, k6.prefixlen);
        json_array_append_new(a, json_string(cidr));
        p6 = &k6;
    }
    return a;
}

/* Deletes every key of |fd| not in keys[n] (each |ksz| bytes). Keys are
 * collected first: deleting while walking would restart the walk. */
static int prune(int fd, const void *keys, size_t n, size_t ksz)
{
    uint8_t cur[sizeof(struct qx_xdp_lpm6)], next[sizeof(struct qx_xdp_lpm6)];
    uint8_t *old = malloc(QX_XDP_DENY_MAX * ksz);
    size_t nold = 0;
    int have = 0;
    if (old == NULL)
        return QX_ERR_NOMEM;
    while (nold < QX_XDP_DENY_MAX && bpf_map_get_next_key(fd, have ? cur : NULL, next) == 0) {
        memcpy(old + nold++ * ksz, next, ksz);
        memcpy(cur, next, ksz);
        have = 1;
    }
    for (size_t i = 0; i < nold; i++) {
        int keep = 0;
        for (size_t j = 0; j < n && !keep; j++)
            keep = memcmp(old + i * ksz, (const uint8_t *)keys + j * ksz, ksz) == 0;
        if (!keep)
            bpf_map_delete_elem(fd, old + i * ksz);
    }
    free(old);
    return 0;
}

int qx_xdp_deny_set(const qx_xdp_maps_t *m, const char *body, size_t len, char *err, size_t errlen)
{
    json_error_t jerr;
    int rv = 0;
    struct qx_xdp_lpm4 *v4 = NULL;
    struct qx_xdp_lpm6 *v6 = NULL;
    size_t n4 = 0, n6 = 0;
    uint8_t one = 1;

    json_t *a = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (a == NULL) {
        snprintf(err, errlen, "invalid JSON: %s (line %d)", jerr.text, jerr.line);
        return QX_ERR_INVAL;
    }
    if (!json_is_array(a)) {
        snprintf(err, errlen, "the body must be a JSON array of CIDR strings");
        rv = QX_ERR_INVAL;
        goto out;
    }
    size_t n = json_array_size(a);
    v4 = calloc(n ? n : 1, sizeof(*v4));
    v6 = calloc(n ? n : 1, sizeof(*v6));
    if (v4 == NULL || v6 == NULL) {
        rv = QX_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(a, i));
        struct qx_xdp_lpm4 k4;
        struct qx_xdp_lpm6 k6;
        int fam = s ? parse_cidr(s, &k4, &k6) : -1;
        if (fam < 0) {
            snprintf(err, errlen,
                     "[%zu]: not an IPv4 or IPv6 CIDR (\"192.0.2.0/24\", \"2001:db8::/32\")", i);
            rv = QX_ERR_INVAL;
            goto out;
        }
        if (fam == 4)
            v4[n4++] = k4;
        else
            v6[n6++] = k6;
    }
    if (n4 > QX_XDP_DENY_MAX || n6 > QX_XDP_DENY_MAX) {
        snprintf(err, errlen, "more than %d prefixes of one address family", QX_XDP_DENY_MAX);
        rv = QX_ERR_LIMIT;
        goto out;
    }
    if (m->deny4 < 0) {
        snprintf(err, errlen, "no XDP program is pinned (xdp.pin)");
        rv = QX_ERR_NOTFOUND;
        goto out;
    }
    /* Add first, then prune: an address listed before and after never
     * passes in between. */
    for (size_t i = 0; i < n4 && rv == 0; i++)
        if (bpf_map_update_elem(m->deny4, &v4[i], &one, BPF_ANY) != 0)
            rv = QX_ERR_IO;
    for (size_t i = 0; i < n6 && rv == 0; i++)
        if (bpf_map_update_elem(m->deny6, &v6[i], &one, BPF_ANY) != 0)
            rv = QX_ERR_IO;
    if (rv != 0)
        snprintf(err, errlen, "updating the deny map: %s", strerror(errno));
    else if ((rv = prune(m->deny4, v4, n4, sizeof(*v4))) == 0)
        rv = prune(m->deny6, v6, n6, sizeof(*v6));
out:
    free(v4);
    free(v6);
    json_decref(a);
    return rv;
}
