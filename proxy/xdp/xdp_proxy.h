/*
 * xdp_proxy.h - the running proxy and the XDP filter: with an `xdp:`
 * section, qrux opens the maps `qrux xdp attach` pinned (when they are
 * there; it runs without them), shares its CID keys and its Initial rate
 * with the filter, rotates the CID key when configured, and reopens the
 * maps when the filter is detached and attached again. The admin thread
 * reads the counters and edits the deny list through it.
 *
 * Threads: qx_xdp_proxy_tick() runs on the main loop, the admin handlers
 * on the admin thread; a mutex keeps the map fds stable under both.
 */
#ifndef QX_XDP_PROXY_H
#define QX_XDP_PROXY_H

#include "base/cid.h"
#include "config/config.h"
#include "bpf/xdp_quic_consts.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct qx_xdp_proxy qx_xdp_proxy_t;

/* Starts with |cfg| (cfg->pin set) and the process's |keys| (kept, not
 * owned; rotated here when cfg->cid_key_rotate_secs is set), before the
 * workers make any CID. Opens the pinned maps when present (logged either
 * way); a filter that ran before keeps counting key generations from
 * where it was. A timer on |loop| calls qx_xdp_proxy_tick() every second.
 * Returns 0 or QX_ERR_NOMEM. */
int qx_xdp_proxy_new(qx_xdp_proxy_t **out, const qx_xdp_cfg_t *cfg, qx_cid_keys_t *keys,
                     uv_loop_t *loop);

/* Closes the timer (on the loop's thread, before the loop ends). Accepts
 * NULL. */
void qx_xdp_proxy_close(qx_xdp_proxy_t *p);

/* Frees after the loop has run the close callback. Accepts NULL. */
void qx_xdp_proxy_del(qx_xdp_proxy_t *p);

/* Reopens the maps when the pins changed (detach, attach), puts qrux's
 * Initial rate back when an attach changed it, rotates the CID key when
 * due and publishes keys and rate; |now_s| is a monotonic clock
 * in seconds. The timer calls it; tests may too. */
void qx_xdp_proxy_tick(qx_xdp_proxy_t *p, uint64_t now_s);

/* The summed counters (zeros without the filter) and whether the filter is
 * attached. |p| may be NULL. */
void qx_xdp_proxy_stats(qx_xdp_proxy_t *p, uint64_t *counters, int *attached);

/* GET /xdp/denylist: {"attached":bool,"denylist":[...]}; NULL on NOMEM. */
json_t *qx_xdp_proxy_deny_get(qx_xdp_proxy_t *p);

/* PUT /xdp/denylist (see qx_xdp_deny_set); QX_ERR_NOTFOUND when the maps
 * are not open (or |p| is NULL). */
int qx_xdp_proxy_deny_set(qx_xdp_proxy_t *p, const char *body, size_t len, char *err,
                          size_t errlen);

#endif
