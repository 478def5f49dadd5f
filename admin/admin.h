/*
 * admin.h - the embedded admin server (libmicrohttpd, its own thread):
 * Kubernetes probes, Prometheus metrics, the JSON route API, /config and
 * /drain. It reads the runtime (lifecycle, snapshot, workers' counters)
 * and never blocks a worker; a worker never waits for it.
 */
#ifndef QX_ADMIN_H
#define QX_ADMIN_H

#include "worker/runtime.h"

#include <stddef.h>

typedef struct qx_admin qx_admin_t;

/*
 * Starts the server described by the config in force (its `admin`
 * section). With no admin section, *out is NULL and 0 is returned. Reads
 * the token file when configured. Returns 0, QX_ERR_CONFIG (token file
 * unreadable or empty: message names admin.token_file), or QX_ERR_IO (bind
 * failed: message names admin.listen).
 */
int qx_admin_start(qx_admin_t **out, qx_runtime_t *rt, char *err, size_t errlen);

/* Reads a bearer token file: its bytes without trailing whitespace, at
 * most 4 KiB, not empty. On success *token is a heap string (the caller
 * wipes and frees it). Returns 0, QX_ERR_CONFIG (message names
 * admin.token_file) or QX_ERR_NOMEM. Used at start and by `qrux check`. */
int qx_admin_read_token(const char *path, char **token, size_t *len, char *err, size_t errlen);

/* What /readyz answers now: 1 when ready; otherwise 0 and the reason in
 * why (the same words). a may be NULL (no admin server: ready). Thread-safe;
 * may take up to 200 ms (the upstream check). */
int qx_admin_ready(qx_admin_t *a, char *why, size_t n);

/* Stops the server and joins its thread. Accepts NULL. */
void qx_admin_stop(qx_admin_t *a);

#endif
