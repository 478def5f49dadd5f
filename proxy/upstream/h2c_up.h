/*
 * h2c_up.h - the cleartext HTTP/2 upstream codec (prior knowledge, RFC
 * 9113 §3.3), for apps that speak HTTP/2 only (gRPC). upstream.h's
 * contract over sessions instead of connections: each pooled connection
 * carries one nghttp2 client session multiplexing many streams, at most
 * the app's SETTINGS_MAX_CONCURRENT_STREAMS (and H2C_MAX_STREAMS) at once;
 * a stream asks for a new connection only when every session is full or
 * going away, and the pool's connection limit caps the sessions.
 *
 * Flow control follows the exchange's windows: a stream's receive window
 * is the response window's size and is given back (WINDOW_UPDATE) only as
 * the front acknowledges bytes, so a slow client slows the app and never
 * grows memory; the request body goes up as nghttp2's send window allows,
 * and the client is credited as it leaves the request window.
 *
 * GOAWAY: streams at or below its last stream id finish; the others are
 * refused, reported as never processed (replayable), and no new stream
 * goes to that session. RST_STREAM from the app fails the stream (502
 * before a head, a reset client stream after). Trailers go both ways.
 */
#ifndef QX_H2C_UP_H
#define QX_H2C_UP_H

#include "upstream/upstream.h"

extern const qx_upstream_ops_t qx_h2c_upstream_ops;

#endif
