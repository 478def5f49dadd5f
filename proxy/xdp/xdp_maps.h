/*
 * xdp_maps.h - the proxy's side of the XDP program: the maps the loader
 * (`qrux xdp attach`, xdp.c) pinned under a directory, opened by path.
 * The proxy reads the counters for /metrics, edits the deny list for the
 * admin API, publishes its CID keys and the Initial rate. Every function
 * works without the program: a closed qx_xdp_maps_t reads as zeros.
 */
#ifndef QX_XDP_MAPS_H
#define QX_XDP_MAPS_H

#include "base/cid.h"
#include "bpf/xdp_quic_consts.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct qx_xdp_maps {
    int config, keys, deny4, deny6, counters; /* map fds, -1 when closed */
    char *pin;                                /* the directory, for the link */
} qx_xdp_maps_t;

/* A closed set (every fd -1). */
void qx_xdp_maps_init(qx_xdp_maps_t *m);

/* Opens the maps pinned under |pin|. Returns 0, QX_ERR_NOTFOUND when no
 * program was pinned there (no message: running without XDP is normal),
 * QX_ERR_IO (message in err: permissions, a foreign file) or
 * QX_ERR_NOMEM. On failure |m| is left closed. */
int qx_xdp_maps_open(qx_xdp_maps_t *m, const char *pin, char *err, size_t errlen);

/* Closes the fds; accepts a closed or half-opened set. */
void qx_xdp_maps_free(qx_xdp_maps_t *m);

/* 1 when the maps are open and the pinned link still holds the program on
 * an interface, else 0. */
int qx_xdp_maps_attached(const qx_xdp_maps_t *m);

/* Sums the per-CPU counters into out[QX_XDP_NREASONS] (zeros when closed). */
void qx_xdp_maps_counters(const qx_xdp_maps_t *m, uint64_t *out);

/* Publishes the current and (when there is one) the previous CID key;
 * the older slot is marked invalid otherwise. Returns 0 or QX_ERR_IO. */
int qx_xdp_maps_publish_keys(const qx_xdp_maps_t *m, const qx_cid_keys_t *keys);

/* Loads |key| as generation |gen| into its slot (gen & 1), replacing the
 * generation two before it. Returns 0 or QX_ERR_IO (0 when closed). */
int qx_xdp_maps_publish_slot(const qx_xdp_maps_t *m, uint32_t gen, const uint8_t *key);

/* Sets the Initial token bucket (packets per second per source, burst). */
int qx_xdp_maps_set_rate(const qx_xdp_maps_t *m, uint32_t rate, uint32_t burst);

/* The deny list as a JSON array of CIDR strings (new reference), or NULL
 * when closed or out of memory. */
json_t *qx_xdp_deny_get(const qx_xdp_maps_t *m);

/* Replaces the deny list with the JSON array |body| of CIDR strings
 * ("192.0.2.0/24", "2001:db8::/32", a bare address means /32 or /128).
 * Everything is validated before anything changes. Returns 0,
 * QX_ERR_INVAL with the bad element named in err, QX_ERR_LIMIT over
 * QX_XDP_DENY_MAX per family or QX_ERR_IO. */
int qx_xdp_deny_set(const qx_xdp_maps_t *m, const char *body, size_t len, char *err, size_t errlen);

#endif
