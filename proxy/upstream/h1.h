/*
 * h1.h - translation between the front's request/response model and
 * HTTP/1.1 on the upstream side: the request head qrux writes to the app,
 * and which response headers may travel back to the client.
 *
 * Pure functions over caller-owned buffers, so they are unit tested without
 * a loop (unit/upstream/h1_test.c). The codec that uses them on a
 * connection is h1_up.c.
 */
#ifndef QX_H1_H
#define QX_H1_H

#include "upstream/upstream.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The request view every upstream codec takes (upstream.h). */
typedef qx_up_req_t qx_h1_req_t;

/* Nonzero when name (any case) is a hop-by-hop field that a proxy must not
 * forward: connection, keep-alive, proxy-connection, transfer-encoding, te,
 * upgrade, trailer, proxy-authenticate/-authorization is NOT included (it
 * is end-to-end for a reverse proxy's app). */
int qx_h1_is_hop_by_hop(const char *name, size_t len);

/* Nonzero when the comma-separated token list |list| (a Connection field
 * value) names |name|, case-insensitively. */
int qx_h1_list_has_token(const char *list, size_t listlen, const char *name, size_t namelen);

/* Nonzero when a Connection field value names any field beyond the usual
 * "close" and "keep-alive" (which name hop-by-hop fields anyway): only then
 * must every field be checked against the list. */
int qx_h1_conn_names_fields(const char *list, size_t listlen);

/*
 * Writes the HTTP/1.1 request head for |req| into buf[cap]:
 *   METHOD path HTTP/1.1, Host (from the authority), the fields minus
 *   hop-by-hop ones and those listed in Connection, host, x-forwarded-proto
 *   and forwarded-for duplicates; cookie fields joined with "; " (RFC 9114
 *   §4.2.1); X-Forwarded-For (the client's value with our peer appended);
 *   X-Forwarded-Proto: https; Content-Length when known, else
 *   Transfer-Encoding: chunked when a body follows, Content-Length: 0 for
 *   POST/PUT/PATCH without body. *chunked is set to 1 when the body must be
 *   sent chunked.
 * Returns the head's length, or QX_ERR_LIMIT when it does not fit, or
 * QX_ERR_PROTO when a field contains CR/LF/NUL (cannot happen with
 * nghttp3-validated input, checked anyway: it would be request smuggling).
 */
ssize_t qx_h1_build_request(char *buf, size_t cap, const qx_h1_req_t *req, int *chunked);

/* Nonzero when a response field from the upstream may be passed to the
 * client: not hop-by-hop and not listed in the response's Connection
 * value (conn may be NULL). */
int qx_h1_response_field_allowed(const char *name, size_t namelen, const char *conn,
                                 size_t connlen);

/* The reason phrase of |status| ("Status" for one qrux does not send). */
const char *qx_h1_reason(int status);

#endif
