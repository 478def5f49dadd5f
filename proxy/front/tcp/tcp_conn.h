/*
 * tcp_conn.h - one accepted TCP + TLS connection of the HTTPS fallback
 * listener, as the protocol fronts on top of it (h1_front.c, h2_front.c)
 * see it. Shared by tcp_front.c (socket, TLS with memory BIOs, the flush
 * and close machinery) and the two fronts. Not a public interface: the
 * worker uses tcp_front.h.
 *
 * The transport owns the socket, the OpenSSL session and one timer. A
 * front reads plaintext with qx_tcp_conn_read() when told input() and
 * writes with qx_tcp_conn_write() while qx_tcp_conn_room() says there is
 * room; written bytes are staged and encrypted, and go to the socket at
 * the end of the loop turn (one write in flight). Memory stays bounded:
 * ciphertext not yet read by the front is capped (the socket stops being
 * read), and a front writes only while there is room.
 *
 * Closing is deferred: qx_tcp_conn_close() from inside any callback only
 * marks the connection; it is torn down at the end of the loop turn, where
 * the front's free() ends its exchanges (STYLE.md §9).
 */
#ifndef QX_TCP_CONN_H
#define QX_TCP_CONN_H

#include "base/defer.h"

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <uv.h>

typedef struct qx_wctx qx_wctx_t;
typedef struct qx_tcp_front qx_tcp_front_t;
typedef struct qx_tcp_conn qx_tcp_conn_t;

/* qx_tcp_conn_read(): the peer ended the stream (close_notify or EOF). */
#define QX_TCP_EOF (-100)

/* What a protocol front implements for the transport. */
typedef struct qx_tcp_app_ops {
    /* Plaintext may be waiting: pull it with qx_tcp_conn_read(). */
    void (*input)(void *app);
    /* End of a loop turn that touched the connection: write what is due
     * while qx_tcp_conn_room() > 0. */
    void (*output)(void *app);
    /* The timer set with qx_tcp_conn_timer() fired. */
    void (*timeout)(void *app);
    /* The worker drains: finish what is in flight, then close. */
    void (*drain)(void *app);
    /* The connection is going away (error nonzero: not cleanly): end
     * every exchange (qx_exchange_front_closed) and free the front. No op
     * reaches the front after this. */
    void (*free)(void *app, int error);
} qx_tcp_app_ops_t;

/*
 * A connection's life (tcp_front.c: set_state() asserts the moves); only
 * forward:
 *
 *   HANDSHAKE ---> OPEN ---> CLOSE_REQ ---> CLOSING ---> LINGER
 *       |                       ^
 *       +---(a TLS alert to send)
 *
 *   any state above ---> ABORT_REQ ---> DEAD
 *   any state above ------------------> DEAD   (a teardown outside the flush)
 *
 * A request to close (qx_tcp_conn_close) only changes the state; the flush
 * at the end of the loop turn does the work: CLOSE_REQ writes what is
 * staged, sends close_notify and becomes CLOSING; CLOSING sends the FIN
 * once the output is drained (LINGER); ABORT_REQ is torn down. A teardown
 * outside the flush (a refused accept, the worker stopping) goes straight
 * to DEAD.
 */
typedef enum {
    QX_TC_HANDSHAKE, /* TLS handshake in progress */
    QX_TC_OPEN,      /* a front (h1 or h2) runs on it */
    QX_TC_CLOSE_REQ, /* a graceful close asked: output still goes out, no more input */
    QX_TC_CLOSING,   /* front gone; close_notify queued, output draining, reading to discard */
    QX_TC_LINGER,    /* FIN sent (uv_shutdown), reading to discard until EOF or the timer */
    QX_TC_ABORT_REQ, /* to be torn down at the flush; nothing more is read or written */
    QX_TC_DEAD,      /* handles closing; freed in their close callbacks */
} qx_tcp_conn_state_t;

/* The read side, beside the state: whether the socket is being read. */
typedef enum {
    QX_TR_PAUSED,  /* not reading (not yet, or the front is not taking bytes) */
    QX_TR_READING, /* uv_read_start in force */
    QX_TR_EOF,     /* the socket reached EOF (or failed): never read again */
} qx_tcp_read_t;

struct qx_tcp_conn {
    qx_tcp_front_t *f;
    qx_wctx_t *w;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    qx_tcp_conn_state_t state;
    LIST_ENTRY(qx_tcp_conn) link; /* the front's connections */
    qx_deferred_t flush;          /* on the worker's deferred-work queue */
    qx_tcp_read_t rd;
    int want_input; /* call input() at the flush */
    int writing;    /* a uv_write in flight */
    int nhandles;   /* handles still to close before free */
    SSL *ssl;
    BIO *rbio, *wbio; /* network side: ciphertext in / out */
    char *wbuf;       /* the write in flight */
    uint8_t *stage;   /* plaintext written, not yet encrypted */
    size_t stagelen;
    uint64_t discarded; /* bytes read and dropped while closing */
    const qx_tcp_app_ops_t *ops;
    void *app;
    uint64_t *gauge; /* the active-connections gauge counting this one, or NULL */
    int counted;     /* in the process's tcp_conns and fd budget, and its IP's count */
    struct qx_tcp_ip *ip;
    struct sockaddr_storage peer;
    char sni[256]; /* lowercased SNI host name, "" without one */
};

#define QX_TC_CLOSE_GRACEFUL 1 /* flush output, close_notify, FIN, then linger */
#define QX_TC_CLOSE_ABORT 2    /* drop everything now */

/* Reads decrypted bytes. Returns > 0, 0 when nothing is available now
 * (input() follows when more arrives), QX_TCP_EOF when the peer is done,
 * or QX_ERR_TLS. */
ssize_t qx_tcp_conn_read(qx_tcp_conn_t *c, void *buf, size_t cap);

/* Queues len plaintext bytes for the peer (copied). Returns 0, or
 * QX_ERR_IO when the connection is closing (the bytes are dropped). */
int qx_tcp_conn_write(qx_tcp_conn_t *c, const void *buf, size_t len);

/* Bytes a front may still write this turn before output is backed up. */
size_t qx_tcp_conn_room(const qx_tcp_conn_t *c);

/* Schedules output() (and the socket write) at the end of this loop turn. */
void qx_tcp_conn_mark(qx_tcp_conn_t *c);

/* Asks for input() at the end of this loop turn: the front can take bytes
 * again after it stopped reading (window freed, request done). */
void qx_tcp_conn_want_input(qx_tcp_conn_t *c);

/* Arms the connection's timer (ms > 0) or stops it (0); timeout() follows. */
void qx_tcp_conn_timer(qx_tcp_conn_t *c, uint64_t ms);

/* Closes the connection (QX_TC_CLOSE_*); deferred to the end of the loop
 * turn. A graceful close flushes what was written first; an abort after a
 * graceful close wins, a graceful close after an abort does nothing. */
void qx_tcp_conn_close(qx_tcp_conn_t *c, int how);

/* Nonzero once the worker drains: answers say `Connection: close`. */
int qx_tcp_conn_draining(const qx_tcp_conn_t *c);

/* The Alt-Svc field value for responses on this listener,
 * `h3=":<UDP port>"; ma=<alt_svc_max_age>`, with its length. */
const char *qx_tcp_conn_alt_svc(qx_tcp_conn_t *c, size_t *len);

/* The SNI host name for the router, or NULL when the client sent none. */
static inline const char *qx_tcp_conn_sni(const qx_tcp_conn_t *c)
{
    return c->sni[0] ? c->sni : NULL;
}

#endif
