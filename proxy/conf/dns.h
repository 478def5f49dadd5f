/*
 * dns.h - resolution of upstream names, asynchronous, on the main thread's
 * loop (never on a worker's).
 *
 * c-ares rather than uv_getaddrinfo: c-ares reports each record's TTL
 * (getaddrinfo does not, so re-resolution could only guess), takes test
 * servers on any port (dns.servers), reads /etc/resolv.conf's search list
 * and ndots as a pod's resolver does, and runs on the loop through its
 * socket callbacks instead of tying up a thread-pool thread per query.
 *
 * Every name of the config in force is resolved (A and AAAA), then again
 * when its TTL runs out (bounded by dns.min_ttl_secs / max_ttl_secs). A
 * failed or empty answer keeps the last good addresses and retries with a
 * back-off (1 s doubling to 30 s, never past max_ttl_secs). When a name's
 * addresses change, on_change is called (the runtime derives a snapshot
 * with the new endpoints). Outcomes are counted per name and logged once
 * per change of state.
 *
 * The state of the names is read by other threads (snapshot builds, the
 * admin server) under the resolver's lock; everything else belongs to the
 * loop's thread.
 */
#ifndef QX_DNS_H
#define QX_DNS_H

#include "base/str.h"
#include "config/config.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#define QX_DNS_MAX_ADDRS 64 /* addresses kept per name (a headless Service's pods) */

enum { QX_DNS_R_OK, QX_DNS_R_NOTFOUND, QX_DNS_R_ERROR, QX_DNS_R_COUNT };

typedef struct qx_dns qx_dns_t;

/* Creates the resolver on |loop| with cfg->dns's settings (restart-only).
 * on_change(arg) is called on the loop's thread. Returns 0,
 * QX_ERR_NOMEM, or QX_ERR_CONFIG with a message in err (dns.servers
 * refused, c-ares could not start). */
int qx_dns_new(qx_dns_t **out, uv_loop_t *loop, const qx_config_t *cfg,
               void (*on_change)(void *arg), void *arg, char *err, size_t errlen);

/* Closes the handles; the loop must run once more for them to close, then
 * the resolver frees itself. Accepts NULL. */
void qx_dns_del(qx_dns_t *d);

/* Follows the names of |cfg| (loop thread): new names are resolved now,
 * names no route uses any more are forgotten. TTL bounds are taken from
 * it too. Returns the number of names it follows. */
size_t qx_dns_sync(qx_dns_t *d, const qx_config_t *cfg);

/* One pass only (qrux check): no re-resolution, no retry. */
void qx_dns_set_once(qx_dns_t *d);

/* Resolutions in flight (loop thread). */
size_t qx_dns_pending(const qx_dns_t *d);

/* Copies the addresses known for |host| with |port| set, at most cap.
 * Returns how many (0: not resolved). Thread-safe. */
size_t qx_dns_addrs(qx_dns_t *d, const char *host, uint16_t port, struct sockaddr_storage *out,
                    socklen_t *lens, size_t cap);

/* Why |host| has no address, in words ("not resolved yet", "does not
 * resolve: Domain name not found"). Returns 1 when a lookup of it has
 * finished, 0 when none has yet (its first answer is still awaited).
 * Thread-safe. */
int qx_dns_why(qx_dns_t *d, const char *host, char *buf, size_t len);

/* Appends qrux_dns_resolutions_total and qrux_dns_addresses lines for every
 * name followed to |out| (whole lines: past its cap, |out| is marked
 * failed). Thread-safe. */
void qx_dns_metrics(qx_dns_t *d, qx_buf_t *out);

#endif
