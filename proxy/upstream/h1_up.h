/*
 * h1_up.h - the HTTP/1.1 upstream codec: one request at a time on a pooled
 * TCP connection (upstream.h's contract). It writes the request head
 * (h1.c builds it) and the body from the request window, chunk-framed when
 * its length is not known, one write in flight; it parses the response
 * with llhttp, checks and filters its fields, reads body bytes straight
 * into the response window where it can, and stops reading while that
 * window is short of room. A connection goes back to the pool for reuse
 * only after a whole request went up and a whole response came back with
 * nothing after it.
 */
#ifndef QX_H1_UP_H
#define QX_H1_UP_H

#include "upstream/upstream.h"

extern const qx_upstream_ops_t qx_h1_upstream_ops;

/* The connection the stream holds now (NULL: none). For the upstream
 * response fuzz target, which hands reads to the connection's callbacks
 * as libuv would. */
qx_upconn_t *qx_h1_up_conn(qx_up_stream_t *st);

#endif
