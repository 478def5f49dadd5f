/*
 * src_rate.h - qrux's own Initial rate per source: the token bucket of the
 * XDP filter (the same refill code, xdp_quic_consts.h, and the same numbers,
 * xdp.initial_rate and xdp.initial_burst), kept in user space so that with
 * retry: auto a source over the rate is asked for a Retry whether or not
 * the filter runs. Sources are keyed like the filter's: an IPv4 address,
 * an IPv6 /64.
 *
 * One table for the process (a client's connections land on several
 * workers), under a mutex: only connection-opening Initials without a
 * token come here.
 */
#ifndef QX_SRC_RATE_H
#define QX_SRC_RATE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct qx_src_rate qx_src_rate_t;

/* A table of |slots| sources (a power of two) keyed with a random SipHash
 * key. Returns 0, QX_ERR_NOMEM or QX_ERR_IO (no randomness). */
int qx_src_rate_new(qx_src_rate_t **out, size_t slots);

/* Accepts NULL. */
void qx_src_rate_del(qx_src_rate_t *r);

/* Takes a token for |sa| at |now_ns| (CLOCK_MONOTONIC). 1: within the rate
 * (or rate 0); 0: over it. When two sources share a slot the newer one
 * takes it over with a full bucket: the table never grows. */
int qx_src_rate_take(qx_src_rate_t *r, const struct sockaddr *sa, uint32_t rate, uint32_t burst,
                     uint64_t now_ns);

#endif
