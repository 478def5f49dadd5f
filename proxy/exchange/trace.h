/*
 * trace.h - W3C Trace Context (traceparent) and request ids for the request
 * qrux sends upstream, so a slow request in the app's traces can be found
 * in qrux's access log and the other way round. No tracing SDK: qrux
 * records no spans, it only keeps or starts the trace and names its hop.
 *
 * - A valid `traceparent` from the client keeps its trace id and flags;
 *   the parent id becomes a new one (qrux's hop). An invalid one, or
 *   several, start a new trace (flags 01, sampled, so a parent-based
 *   sampler in the app records it), and `tracestate` is dropped with it
 *   (it belongs to the trace it came with).
 * - A valid `x-request-id` (1-128 of A-Z a-z 0-9 . _ - : / + = ~) is kept;
 *   none, several or an invalid one get a new UUID (version 4 form).
 *
 * Pure functions over caller-owned memory, unit-tested on their own
 * (unit/trace_test.c); the caller supplies the random bytes.
 */
#ifndef QX_TRACE_H
#define QX_TRACE_H

#include "upstream/upstream.h"

#include <stddef.h>
#include <stdint.h>

#define QX_TRACE_RANDOM 40 /* random bytes one request may use */
#define QX_TRACE_REQUEST_ID_MAX 128

typedef struct qx_trace {
    char traceparent[56]; /* "00-<trace id>-<parent id>-<flags>", NUL-terminated */
    char trace_id[33];    /* 32 lowercase hex digits */
    char request_id[QX_TRACE_REQUEST_ID_MAX + 1];
    int continued;  /* 1: the client's trace goes on; 0: a new trace */
    int drop_state; /* tracestate fields are not forwarded */
} qx_trace_t;

/* Reads the trace context and request id of the request fields hdrs[n]
 * (names in any case) and fills |t| with what goes upstream. |rnd| holds
 * QX_TRACE_RANDOM random bytes. Cannot fail. */
void qx_trace_init(qx_trace_t *t, const qx_hdr_t *hdrs, size_t n, const uint8_t *rnd);

/* Writes into out[] (room for n + 2) the fields to send upstream: hdrs[n]
 * without traceparent and x-request-id (and tracestate when dropped), then
 * traceparent and x-request-id from |t| (which must outlive out). Returns
 * the number of fields written. */
size_t qx_trace_fields(const qx_trace_t *t, const qx_hdr_t *hdrs, size_t n, qx_hdr_t *out);

/* 1 when v[len] is a traceparent qrux continues (version 00 exactly 55
 * characters; a later version at least that, with '-' after; not version
 * ff; ids not all zero; lowercase hex). */
int qx_trace_parent_valid(const char *v, size_t len);

#endif
