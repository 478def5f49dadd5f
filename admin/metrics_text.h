/*
 * metrics_text.h - the Prometheus text exposition (format 0.0.4) of the
 * workers' counters and the process-wide values, rendered when /metrics is
 * scraped. Split out of admin.c so the unit test can feed hand-built
 * counter tables and compare exact lines.
 *
 * Rows with the same label set from several workers are summed into one
 * series; every series appears once, every family has HELP and TYPE lines.
 */
#ifndef QX_METRICS_TEXT_H
#define QX_METRICS_TEXT_H

#include "base/metrics.h"
#include "base/str.h"
#include "bpf/xdp_quic_consts.h"
#include "worker/runtime.h"

#include <stddef.h>
#include <stdint.h>

/* A growing text buffer (NUL-terminated) with a hard cap: the exposition
 * is bounded by the fixed row capacity of the workers' tables; the cap
 * only guards a bug. */
typedef qx_buf_t qx_metrics_text_t;

#define QX_METRICS_TEXT_MAX (64u << 20)

/* Values that are not per-worker counters. */
typedef struct qx_metrics_globals {
    const char *version; /* qrux_build_info{version} */
    uint64_t generation; /* qrux_config_generation */
    uint64_t reloads[QX_SRC_COUNT][QX_RELOAD_COUNT];
    int ready;               /* qrux_ready: what /readyz would answer */
    int have_process;        /* the process_* families below are filled in */
    double cpu_seconds;      /* process_cpu_seconds_total */
    uint64_t rss_bytes;      /* process_resident_memory_bytes */
    uint64_t vsize_bytes;    /* process_virtual_memory_bytes */
    uint64_t open_fds;       /* process_open_fds */
    uint64_t max_fds;        /* process_max_fds */
    double start_time;       /* process_start_time_seconds, unix time */
    uint64_t early_refused;  /* 0-RTT refused by the anti-replay check (replays) */
    uint64_t log_suppressed; /* log lines dropped by the rate limits (log.h) */
    const char *extra;       /* whole families rendered elsewhere (endpoints, DNS), or NULL */
    size_t extralen;
    /* The XDP filter's verdicts by reason (zeros without it) and
     * qrux_xdp_attached. */
    uint64_t xdp_packets[QX_XDP_NREASONS];
    int xdp_attached;
    int64_t cert_not_after; /* qrux_tls_certificate_expiry_timestamp_seconds; 0: not shown */
} qx_metrics_globals_t;

/*
 * Renders every family into |out| (initialise it zeroed; free with
 * qx_metrics_text_free). |workers| holds nworkers tables that their owning
 * workers may be writing concurrently: rows are read up to their published
 * counts and counters with relaxed loads. Returns 0 or QX_ERR_NOMEM.
 */
int qx_metrics_text_render(qx_metrics_text_t *out, const qx_metrics_t *const *workers,
                           size_t nworkers, const qx_metrics_globals_t *g);

/* Fills the process_* fields of |g| from /proc/self (and start_time from
 * |start_time|). Returns 0, or QX_ERR_IO when /proc is unreadable
 * (have_process stays 0 then). */
int qx_metrics_process_read(qx_metrics_globals_t *g, double start_time);

void qx_metrics_text_free(qx_metrics_text_t *t);

#endif
