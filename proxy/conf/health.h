/*
 * health.h - passive health of upstream endpoints (one address and port
 * each), shared by every worker: connect failures in a row eject an
 * endpoint for a back-off that doubles with each ejection in a row
 * (QX_HEALTH_BASE_MS .. QX_HEALTH_MAX_MS); after it the endpoint gets
 * traffic again, and one success puts it back in service. Nothing probes
 * actively: requests are the probes.
 *
 * The table is keyed by address, so the state survives reloads and DNS
 * changes that keep the address, and holds at most QX_HEALTH_MAX entries
 * (past that, endpoints go without passive health: never ejected).
 * Entries live as long as the table; their fields are atomics.
 */
#ifndef QX_HEALTH_H
#define QX_HEALTH_H

#include "base/log.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#define QX_HEALTH_FAILS 3      /* connect failures in a row that eject */
#define QX_HEALTH_BASE_MS 1000 /* the first ejection */
#define QX_HEALTH_MAX_MS 30000 /* the cap of the doubling */
#define QX_HEALTH_MAX 4096     /* entries in a table */

typedef struct qx_health {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    unsigned fails;              /* atomic: connect failures in a row */
    unsigned level;              /* atomic: ejections in a row (the back-off's exponent) */
    uint64_t until_ms;           /* atomic: ejected until this qx_health_now_ms() */
    uint64_t ejections;          /* atomic: times ejected, for the counter */
    qx_log_rl_t rl;              /* the warn lines about this endpoint (rate-limited) */
    SLIST_ENTRY(qx_health) link; /* the table's list */
} qx_health_t;

typedef struct qx_health_tab {
    pthread_mutex_t lock;         /* guards the list (lookups at snapshot build) */
    SLIST_HEAD(, qx_health) list; /* newest first */
    unsigned n;
} qx_health_tab_t;

void qx_health_tab_init(qx_health_tab_t *t);
void qx_health_tab_free(qx_health_tab_t *t);

/* The entry for an address (created on first use). NULL when t is NULL,
 * the table is full or memory is short. Thread-safe. */
qx_health_t *qx_health_get(qx_health_tab_t *t, const struct sockaddr *addr, socklen_t len);

/* Monotonic milliseconds, the clock of until_ms (the same in every thread). */
uint64_t qx_health_now_ms(void);

/* 1 when the endpoint may be picked now: not ejected, or its back-off is
 * over (the next request tries it). h may be NULL (always usable). */
int qx_health_usable(const qx_health_t *h, uint64_t now_ms);

/* 1 unless the last QX_HEALTH_FAILS connects or more failed (the gauge). */
int qx_health_healthy(const qx_health_t *h);

/* A connect failed (refused, unreachable, timed out). Returns 1 when this
 * failure ejected the endpoint (then *for_ms says how long). */
int qx_health_fail(qx_health_t *h, uint64_t now_ms, uint64_t *for_ms);

/* A connect succeeded. Returns 1 when the endpoint was out of service and
 * is back. */
int qx_health_ok(qx_health_t *h);

#endif
