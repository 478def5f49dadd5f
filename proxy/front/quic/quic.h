/*
 * quic.h - a worker's QUIC endpoint: its UDP socket (SO_REUSEPORT,
 * dual-stack when bound to [::]), the table from connection IDs to
 * connections, packet receive and send, version negotiation and stateless
 * resets. Connections stay on the worker that accepted them: a server CID
 * carries the worker id in its first byte, which the CID-steering BPF
 * program (steer.c) reads to pick this worker's socket.
 */
#ifndef QX_QUIC_H
#define QX_QUIC_H

#include <stdint.h>
#include <sys/socket.h>

typedef struct qx_wctx qx_wctx_t;
typedef struct qx_quic_ep qx_quic_ep_t;

/* Binds the UDP socket (nothing else runs yet). Returns 0, QX_ERR_IO
 * (logged with the address and errno) or QX_ERR_NOMEM. */
int qx_quic_ep_new(qx_quic_ep_t **out, qx_wctx_t *w, const struct sockaddr *addr,
                   socklen_t addrlen);

/* Starts reading packets on the worker's loop. Returns 0 or QX_ERR_IO. */
int qx_quic_ep_start(qx_quic_ep_t *ep);

/* Feeds one datagram (as if read from the socket): used for datagrams
 * another worker forwarded to this one. */
void qx_quic_ep_input(qx_quic_ep_t *ep, const struct sockaddr *local, socklen_t locallen,
                      const struct sockaddr *remote, socklen_t remotelen, const uint8_t *data,
                      size_t len);

/* Drain: no new connections; GOAWAY on every connection; connections close
 * once their requests are done. */
void qx_quic_ep_drain(qx_quic_ep_t *ep);

/* Closes every connection now (CONNECTION_CLOSE) and the socket. The
 * endpoint is freed once its handles have closed. Accepts NULL. */
void qx_quic_ep_close(qx_quic_ep_t *ep);

/* Connections open on this endpoint. */
unsigned qx_quic_ep_nconns(const qx_quic_ep_t *ep);

/* The endpoint's UDP socket (bound in qx_quic_ep_new). */
int qx_quic_ep_fd(const qx_quic_ep_t *ep);

#endif
