/*
 * status.h - the admin server's status page (GET /) and its data
 * (GET /status.json): lifecycle, config generation and the last reload,
 * routes and upstreams with their health, request rate and latency per
 * client protocol over the last two minutes, connections, certificate
 * expiry.
 *
 * Rates come from a sampler thread that reads the workers' counters once a
 * second (atomic loads, like a scrape) into a ring of QX_STATUS_SAMPLES, so
 * the page shows history from the moment it opens. The page itself is
 * admin/status.html, compiled in (CMake writes its bytes into
 * status_html.c): no file to ship, no external asset, no framework.
 */
#ifndef QX_STATUS_H
#define QX_STATUS_H

#include "base/metrics.h"
#include "worker/runtime.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Two minutes of one-second intervals; status.html's SLOTS is this - 1
 * (the points of a full series): change them together. */
#define QX_STATUS_SAMPLES 121
#define QX_STATUS_PERIOD_MS 1000

typedef struct qx_status_sample {
    uint64_t ms; /* monotonic milliseconds */
    uint64_t requests[QX_P_COUNT];
    uint64_t duration_us[QX_P_COUNT];
} qx_status_sample_t;

typedef struct qx_status qx_status_t;

/* Starts the sampler thread. Returns 0, QX_ERR_NOMEM or QX_ERR_IO (no
 * thread). */
int qx_status_start(qx_status_t **out, qx_runtime_t *rt);

/* Stops and joins the sampler. Accepts NULL. */
void qx_status_stop(qx_status_t *s);

/* What the admin server knows that the runtime does not. */
typedef struct qx_status_view {
    int ready;                 /* what /readyz answers */
    const char *ready_reason;  /* its text */
    const qx_snapshot_t *snap; /* in force */
    int source;                /* QX_SRC_* of the routes in force */
    const char *last_error;    /* "" when none */
    const uint8_t *up_failed;  /* per flat upstream index: 1 refused the last connect check */
    size_t up_checked;         /* entries of up_failed that are meaningful */
} qx_status_view_t;

/* The /status.json document (a new reference; NULL when memory is short). */
json_t *qx_status_json(qx_status_t *s, const qx_status_view_t *v);

/*
 * Per-interval rate (requests/s) and mean latency (ms; negative when the
 * interval had no request) of protocol |proto| between consecutive samples
 * s[0..n) (oldest first): writes n - 1 values into rate[] and lat_ms[].
 * Returns n - 1 (0 when n < 2).
 */
size_t qx_status_series(const qx_status_sample_t *s, size_t n, int proto, double *rate,
                        double *lat_ms);

/* admin/status.html, as compiled in. */
extern const unsigned char qx_status_html[];
extern const size_t qx_status_html_len;

#endif
