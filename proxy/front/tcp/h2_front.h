/*
 * h2_front.h - the HTTP/2 front (nghttp2 server session) on a TLS
 * connection that negotiated ALPN "h2". Each stream is an exchange; flow
 * control follows upstream writes (the stream window is QX_STREAM_WINDOW
 * and is only extended as the exchange consumes request body bytes).
 */
#ifndef QX_H2_FRONT_H
#define QX_H2_FRONT_H

#include "front/tcp/tcp_conn.h"

#define QX_H2_MAX_STREAMS 100 /* SETTINGS_MAX_CONCURRENT_STREAMS */

/* Sets up the server session on |c| and queues the server SETTINGS.
 * Returns 0 (with *app and *ops set) or QX_ERR_NOMEM. */
int qx_h2_front_new(qx_tcp_conn_t *c, void **app, const qx_tcp_app_ops_t **ops);

#endif
