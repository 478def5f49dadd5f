/*
 * sockbuf.h - large UDP socket buffers, as far as the system allows.
 *
 * A QUIC server takes bursts of datagrams (a flight from every client at
 * once); the kernel drops what does not fit the receive buffer. SO_RCVBUF
 * is capped by net.core.rmem_max (208 KiB on a stock kernel);
 * SO_RCVBUFFORCE passes the cap but needs CAP_NET_ADMIN, which containers
 * seldom have. qx_sockbuf_set tries the forced option, falls back, and
 * reports what the socket really got (the kernel doubles the value asked
 * for, for its own bookkeeping, and reports the doubled size).
 */
#ifndef QX_SOCKBUF_H
#define QX_SOCKBUF_H

typedef struct qx_sockbuf {
    int rcv, snd; /* bytes the kernel reports after setting */
    int forced;   /* SO_*BUFFORCE was allowed */
    int short_;   /* a buffer ended up below what was asked for */
} qx_sockbuf_t;

/* Asks for |want| bytes each way on |fd|. Never fails: *out says what
 * happened. */
void qx_sockbuf_set(int fd, int want, qx_sockbuf_t *out);

#endif
