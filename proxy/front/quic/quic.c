/* quic.c - a worker's QUIC endpoint and connections' transport (see quic.h). */
#include "front/quic/quic.h"

#include "base/cid.h"
#include "base/ipcount.h"
#include "base/log.h"
#include "base/qx.h"
#include "base/siphash.h"
#include "base/sockbuf.h"
#include "base/str.h"
#include "exchange/context.h"
#include "front/quic/quic_conn.h"
#include "front/quic/quic_mem.h"
#include "front/quic/src_rate.h"
#include "front/quic/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/crypto.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103 /* linux/udp.h */
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CID_BUCKETS 1024
#define RX_BATCH 64                     /* datagrams read per readiness event */
#define UDP_BUF_BYTES (4 * 1024 * 1024) /* each way, per worker socket (sockbuf.h) */
#define TX_MAX_PKTS 64                  /* packets written per flush before yielding */
#define TX_BATCH_PKTS 16                /* datagrams per GSO sendmsg */
#define TX_BATCH_BYTES (TX_BATCH_PKTS * NGTCP2_MAX_PMTUD_UDP_PAYLOAD_SIZE)
#define MAX_UDP_PAYLOAD NGTCP2_MAX_PMTUD_UDP_PAYLOAD_SIZE
#define GOAWAY_NOTICE_MS 500
#define PATH_REPORT_NS (60 * NGTCP2_SECONDS) /* a long connection reports its path this often */

typedef struct cid_entry {
    SLIST_ENTRY(cid_entry) link; /* its hash bucket */
    ngtcp2_cid cid;
    qx_quic_conn_t *qc;
} cid_entry_t;

struct qx_quic_ep {
    qx_wctx_t *w;
    /* A client picks the CIDs it sends and its address: both tables hash
     * with this per-process random key, so it cannot aim at one chain. */
    uint8_t hash_key[QX_SIPHASH_KEY_LEN];
    qx_ipcount_t per_ip; /* validated connections per client address (/64 for IPv6) */
    int fd;
    int family;
    uv_poll_t poll;
    int poll_events;
    uv_timer_t goaway; /* drain: from the GOAWAY notice to the final GOAWAY */
    int closing;
    int accepting;
    unsigned nconns;
    unsigned nblocked; /* connections holding a stashed packet */
    struct qx_quic_conn_list conns;
    SLIST_HEAD(cid_chain, cid_entry) buckets[CID_BUCKETS];
    uint8_t rxbuf[65536];
    uint8_t txbuf[TX_BATCH_BYTES]; /* a GSO batch of same-size datagrams */
    int no_gso;                    /* the kernel refused UDP_SEGMENT once */
    struct sockaddr_storage bound; /* the socket's own address (read once, after bind) */
    socklen_t boundlen;
    gnutls_hmac_hd_t reset_mac; /* keyed with the shared static secret (reset_token) */
    qx_qmem_t *mem;             /* what ngtcp2 and nghttp3 allocate from */
};

_Static_assert(QX_SCID_LEN == QX_CID_LEN, "server CIDs have the length the XDP filter checks");

static ngtcp2_tstamp now_ns(void)
{
    return uv_hrtime();
}

qx_wctx_t *qx_quic_conn_worker(qx_quic_conn_t *qc)
{
    return qc->ep->w;
}

const nghttp3_mem *qx_quic_conn_h3_mem(qx_quic_conn_t *qc)
{
    return qx_qmem_nghttp3(qc->ep->mem);
}

/* ---- connection ID table ------------------------------------------------ */

/* Our CIDs are random, but the client's first DCID is its own choice. */
static size_t cid_hash(const qx_quic_ep_t *ep, const uint8_t *p, size_t len)
{
    return (size_t)(qx_siphash24(ep->hash_key, p, len) % CID_BUCKETS);
}

static qx_quic_conn_t *cid_find(qx_quic_ep_t *ep, const uint8_t *p, size_t len)
{
    for (cid_entry_t *e = SLIST_FIRST(&ep->buckets[cid_hash(ep, p, len)]); e;
         e = SLIST_NEXT(e, link)) {
        if (e->cid.datalen == len && memcmp(e->cid.data, p, len) == 0)
            return e->qc;
    }
    return NULL;
}

static int cid_add(qx_quic_conn_t *qc, const ngtcp2_cid *cid)
{
    qx_quic_ep_t *ep = qc->ep;
    if (qc->ncids >= QX_MAX_CIDS)
        return QX_ERR_LIMIT;
    cid_entry_t *e = malloc(sizeof(*e));
    if (e == NULL)
        return QX_ERR_NOMEM;
    size_t b = cid_hash(ep, cid->data, cid->datalen);
    e->cid = *cid;
    e->qc = qc;
    SLIST_INSERT_HEAD(&ep->buckets[b], e, link);
    qc->cids[qc->ncids++] = *cid;
    return 0;
}

static void cid_remove(qx_quic_conn_t *qc, const ngtcp2_cid *cid)
{
    qx_quic_ep_t *ep = qc->ep;
    struct cid_chain *chain = &ep->buckets[cid_hash(ep, cid->data, cid->datalen)];
    for (cid_entry_t *e = SLIST_FIRST(chain); e; e = SLIST_NEXT(e, link)) {
        if (e->qc == qc && ngtcp2_cid_eq(&e->cid, cid)) {
            SLIST_REMOVE(chain, e, cid_entry, link);
            free(e);
            break;
        }
    }
    for (size_t i = 0; i < qc->ncids; i++) {
        if (ngtcp2_cid_eq(&qc->cids[i], cid)) {
            qc->cids[i] = qc->cids[--qc->ncids];
            break;
        }
    }
}

/* ---- sending ------------------------------------------------------------- */

static void ep_poll_update(qx_quic_ep_t *ep);

/* Sends one datagram from the connection's local address (the one the
 * client wrote to: with a wildcard bind the kernel would otherwise pick).
 * Returns 0, 1 when the socket is full (EAGAIN), or -1 on a hard error. */
static int send_pkts(qx_quic_ep_t *ep, const struct sockaddr *local, const struct sockaddr *remote,
                     socklen_t remotelen, const uint8_t *data, size_t len, size_t gso, uint8_t ecn);

static int send_pkt(qx_quic_ep_t *ep, const struct sockaddr *local, const struct sockaddr *remote,
                    socklen_t remotelen, const uint8_t *data, size_t len)
{
    return send_pkts(ep, local, remote, remotelen, data, len, 0, 0);
}

/* Sends len bytes as one datagram, or, with gso > 0, as datagrams of gso
 * bytes each (the last may be shorter) in one syscall (UDP GSO). A kernel
 * or device without GSO answers EIO: GSO is then turned off and the batch
 * goes out one datagram at a time. ecn is the ECN codepoint ngtcp2 asked
 * for (0: not ECN-capable). Returns as send_pkt. */
static int send_pkts(qx_quic_ep_t *ep, const struct sockaddr *local, const struct sockaddr *remote,
                     socklen_t remotelen, const uint8_t *data, size_t len, size_t gso, uint8_t ecn)
{
    struct iovec iov = {(void *)data, len};
    union {
        char buf[CMSG_SPACE(sizeof(struct in6_pktinfo)) + CMSG_SPACE(sizeof(uint16_t)) +
                 CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } cm;
    struct msghdr msg = {0};
    msg.msg_name = (void *)remote;
    msg.msg_namelen = remotelen;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    memset(&cm, 0, sizeof(cm));

    if (local && local->sa_family == AF_INET6) {
        const struct sockaddr_in6 *l6 = (const struct sockaddr_in6 *)local;
        msg.msg_control = cm.buf;
        if (IN6_IS_ADDR_V4MAPPED(&l6->sin6_addr)) {
            /* IPv4 through a dual-stack socket takes IP_PKTINFO. */
            msg.msg_controllen = CMSG_SPACE(sizeof(struct in_pktinfo));
            struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = IPPROTO_IP;
            c->cmsg_type = IP_PKTINFO;
            c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
            struct in_pktinfo pi = {0};
            memcpy(&pi.ipi_spec_dst, &l6->sin6_addr.s6_addr[12], 4);
            memcpy(CMSG_DATA(c), &pi, sizeof(pi));
        } else {
            msg.msg_controllen = CMSG_SPACE(sizeof(struct in6_pktinfo));
            struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = IPPROTO_IPV6;
            c->cmsg_type = IPV6_PKTINFO;
            c->cmsg_len = CMSG_LEN(sizeof(struct in6_pktinfo));
            struct in6_pktinfo pi = {0};
            pi.ipi6_addr = l6->sin6_addr;
            memcpy(CMSG_DATA(c), &pi, sizeof(pi));
        }
    } else if (local && local->sa_family == AF_INET) {
        msg.msg_control = cm.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(struct in_pktinfo));
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = IPPROTO_IP;
        c->cmsg_type = IP_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
        struct in_pktinfo pi = {0};
        pi.ipi_spec_dst = ((const struct sockaddr_in *)local)->sin_addr;
        memcpy(CMSG_DATA(c), &pi, sizeof(pi));
    }
    if (gso > 0 && len > gso) {
        size_t used = msg.msg_controllen;
        msg.msg_control = cm.buf;
        msg.msg_controllen = used + CMSG_SPACE(sizeof(uint16_t));
        struct cmsghdr *c = (struct cmsghdr *)(void *)(cm.buf + used);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t seg = (uint16_t)gso;
        memcpy(CMSG_DATA(c), &seg, sizeof(seg));
    }
    if (ecn) {
        /* The codepoint goes in the IP header's TOS / traffic class. */
        int v4 = remote->sa_family == AF_INET ||
                 (remote->sa_family == AF_INET6 &&
                  IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)remote)->sin6_addr));
        size_t used = msg.msg_controllen;
        msg.msg_control = cm.buf;
        msg.msg_controllen = used + CMSG_SPACE(sizeof(int));
        struct cmsghdr *c = (struct cmsghdr *)(void *)(cm.buf + used);
        c->cmsg_level = v4 ? IPPROTO_IP : IPPROTO_IPV6;
        c->cmsg_type = v4 ? IP_TOS : IPV6_TCLASS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        int tos = ecn;
        memcpy(CMSG_DATA(c), &tos, sizeof(tos));
    }

    for (;;) {
        ssize_t n = sendmsg(ep->fd, &msg, 0);
        if (n != -1)
            return 0;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
            return 1;
        if (errno == EIO && gso > 0 && len > gso) {
            QX_WARN("quic: UDP GSO refused by the kernel (EIO); sending datagrams one by one");
            ep->no_gso = 1;
            for (size_t off = 0; off < len; off += gso) {
                int rv = send_pkts(ep, local, remote, remotelen, data + off, QX_MIN(gso, len - off),
                                   0, ecn);
                if (rv != 0)
                    return rv;
            }
            return 0;
        }
        QX_DEBUG("quic: sendmsg: %s", strerror(errno));
        return -1;
    }
}

/* ---- connection life cycle --------------------------------------------- */

static void conn_timer_cb(uv_timer_t *t);
static void report_path(qx_quic_conn_t *qc, uint64_t now);

/* Queues qc's flush on the worker's deferred-work queue (defer.h): it runs
 * after this loop turn's I/O, also when the mark comes from a timer. */
/* The moves quic_conn.h draws: one step down the list, or a close from
 * any state before CLOSING. */
static void set_state(qx_quic_conn_t *qc, qx_quic_conn_state_t s)
{
    QRUX_ASSERT(s == qc->state + 1 || (s == QX_QC_CLOSING && qc->state < QX_QC_CLOSING));
    qc->state = s;
}

void qx_quic_conn_mark(qx_quic_conn_t *qc)
{
    if (qc->state >= QX_QC_CLOSING)
        return;
    qx_defer(&qc->ep->w->defer, &qc->flush);
}

void qx_quic_conn_close(qx_quic_conn_t *qc, int quietly)
{
    if (qc->state >= QX_QC_CLOSING)
        return;
    qc->closed_in = qc->state;
    set_state(qc, QX_QC_CLOSING);
    qc->close_quietly = quietly;
    /* Onto the flush queue (unless already there): the flush performs the
     * deletion. */
    qx_defer(&qc->ep->w->defer, &qc->flush);
}

void qx_quic_conn_goaway(qx_quic_conn_t *qc)
{
    if (qc->state == QX_QC_OPEN)
        set_state(qc, QX_QC_GOAWAY);
}

static void conn_timer_closed(uv_handle_t *h)
{
    qx_quic_conn_t *qc = qx_container_of(h, qx_quic_conn_t, timer);
    free(qc);
}

/* Frees the TLS session, and the credentials it used. Once the handshake
 * is done a QUIC server has no TLS work left: the session ticket went out
 * with the handshake (ngtcp2 holds a copy of it until it is acknowledged),
 * packet protection and key updates use ngtcp2's own keys, and a client
 * has no TLS message to send afterwards (recv_crypto_data_cb refuses
 * one). Freeing the session then saves its ~10 KiB on every open
 * connection. */
static void release_tls(qx_quic_conn_t *qc)
{
    if (qc->tls) {
        if (qc->conn)
            ngtcp2_conn_set_tls_native_handle(qc->conn, NULL);
        gnutls_deinit(qc->tls);
        qc->tls = NULL;
    }
    qx_tls_unref(qc->creds); /* after the session that used them */
    qc->creds = NULL;
}

/* Frees the connection now. Never called from inside an ngtcp2 or nghttp3
 * callback: only from the flush (the deferred-work queue) or endpoint
 * shutdown. */
static void conn_del(qx_quic_conn_t *qc)
{
    qx_quic_ep_t *ep = qc->ep;
    qx_wctx_t *w = ep->w;

    if (qc->state < QX_QC_CLOSING) { /* the endpoint closes, or conn_new failed */
        qc->closed_in = qc->state;
        set_state(qc, QX_QC_CLOSING);
    }
    if (!qc->close_quietly && qc->conn && !ngtcp2_conn_in_closing_period(qc->conn) &&
        !ngtcp2_conn_in_draining_period(qc->conn)) {
        ngtcp2_path_storage ps;
        ngtcp2_pkt_info pi;
        ngtcp2_path_storage_zero(&ps);
        ngtcp2_ssize n = ngtcp2_conn_write_connection_close(
            qc->conn, &ps.path, &pi, ep->txbuf, sizeof(ep->txbuf), &qc->ccerr, now_ns());
        if (n > 0)
            send_pkt(ep, (const struct sockaddr *)&qc->local, (const struct sockaddr *)&qc->remote,
                     qc->remotelen, ep->txbuf, (size_t)n);
    }
    if (qc->closed_in == QX_QC_HANDSHAKE) {
        if (!qc->retried_away)
            qx_cnt_add(&w->metrics.quic_handshakes_failed, 1);
        if (qc->counted)
            w->handshakes--;
    } else {
        qx_cnt_sub(&w->metrics.active_connections_h3, 1);
        if (qc->conn)
            report_path(qc, now_ns());
    }
    if (qc->counted)
        __atomic_sub_fetch(&w->shared->quic_conns, 1, __ATOMIC_RELAXED);
    qx_ipcount_put(&ep->per_ip, qc->ip_entry);
    qc->ip_entry = NULL;

    qx_h3_teardown(qc);
    qx_defer_cancel(&w->defer, &qc->flush); /* the teardown may have marked it */
    while (qc->ncids > 0)
        cid_remove(qc, &qc->cids[qc->ncids - 1]);
    LIST_REMOVE(qc, link);
    ep->nconns--;
    if (qc->stash)
        ep->nblocked--;
    free(qc->stash);
    if (qc->conn)
        ngtcp2_conn_del(qc->conn);
    qc->conn = NULL;
    release_tls(qc);
    set_state(qc, QX_QC_DEAD);
    uv_close((uv_handle_t *)&qc->timer, conn_timer_closed);
    qx_wctx_maybe_done(w);
}

/* Reports the path to the worker's metrics: smoothed and minimum RTT and
 * cwnd from ngtcp2, and the packets sent and lost since the last report.
 * Only after the handshake (before it, there is no RTT sample). */
static void report_path(qx_quic_conn_t *qc, uint64_t now)
{
    ngtcp2_conn_info ci;
    ngtcp2_conn_get_conn_info(qc->conn, &ci);
    double srtt = (double)ci.smoothed_rtt / NGTCP2_SECONDS;
    double min_rtt = ci.min_rtt == UINT64_MAX ? srtt : (double)ci.min_rtt / NGTCP2_SECONDS;
    qx_metrics_quic_path(&qc->ep->w->metrics, srtt, min_rtt, ci.cwnd,
                         qc->pkts_sent - qc->sent_reported, qc->pkts_lost - qc->lost_reported);
    qc->sent_reported = qc->pkts_sent;
    qc->lost_reported = qc->pkts_lost;
    qc->reported_ns = now;
}

static void schedule_timer(qx_quic_conn_t *qc)
{
    ngtcp2_tstamp expiry = ngtcp2_conn_get_expiry(qc->conn);
    ngtcp2_tstamp now = now_ns();
    uint64_t ms = expiry <= now ? 0 : (expiry - now + 999999) / 1000000;
    uv_timer_start(&qc->timer, conn_timer_cb, ms, 0);
}

static void conn_fail(qx_quic_conn_t *qc, int liberr)
{
    if (liberr == NGTCP2_ERR_DRAINING || liberr == NGTCP2_ERR_IDLE_CLOSE ||
        liberr == NGTCP2_ERR_DROP_CONN || liberr == NGTCP2_ERR_CLOSING) {
        qx_quic_conn_close(qc, 1);
        return;
    }
    if (liberr == NGTCP2_ERR_CRYPTO) {
        ngtcp2_ccerr_set_tls_alert(&qc->ccerr, ngtcp2_conn_get_tls_alert(qc->conn), NULL, 0);
    } else if (liberr != NGTCP2_ERR_CALLBACK_FAILURE || qc->ccerr.error_code == 0) {
        if (liberr != NGTCP2_ERR_CALLBACK_FAILURE)
            ngtcp2_ccerr_set_liberr(&qc->ccerr, liberr, NULL, 0);
    }
    QX_DEBUG("quic: closing connection: %s", ngtcp2_strerror(liberr));
    qx_quic_conn_close(qc, 0);
}

/* Sends the batch [0, len) of datagrams of gso bytes (the last may be
 * shorter) on qc's current path; on EAGAIN keeps it for the writable event
 * (ngtcp2 already counts it as sent). Returns 0, or 1 when stashed. */
static int flush_batch(qx_quic_conn_t *qc, size_t len, size_t gso, uint8_t ecn)
{
    qx_quic_ep_t *ep = qc->ep;
    int rv =
        send_pkts(ep, (const struct sockaddr *)&qc->local, (const struct sockaddr *)&qc->remote,
                  qc->remotelen, ep->txbuf, len, gso, ecn);
    if (rv != 1)
        return 0; /* sent, or lost like any datagram */
    qc->stash = malloc(len);
    if (qc->stash) {
        memcpy(qc->stash, ep->txbuf, len);
        qc->stashlen = len;
        qc->stashgso = gso;
        qc->stashecn = ecn;
        ep->nblocked++;
        ep_poll_update(ep);
    }
    return 1;
}

static int same_path(const qx_quic_conn_t *qc, const ngtcp2_path *p)
{
    return p->local.addrlen == qc->locallen && p->remote.addrlen == qc->remotelen &&
           memcmp(p->local.addr, &qc->local, qc->locallen) == 0 &&
           memcmp(p->remote.addr, &qc->remote, qc->remotelen) == 0;
}

/* A WebSocket tunnel may be quiet for websocket_idle_timeout_secs (300 s
 * by default), far longer than the QUIC idle timeout (30 s): while one is
 * open on the connection, qrux sends a PING when the connection has been
 * idle for half the negotiated idle timeout, so a client that does not
 * ping keeps its tunnel (the tunnel's own idle timer still applies). Off
 * again with the last tunnel. */
static void sync_keepalive(qx_quic_conn_t *qc)
{
    int want = qc->ws_tunnels > 0 && ngtcp2_conn_get_handshake_completed(qc->conn);
    if (want == qc->keepalive)
        return;
    ngtcp2_duration every = UINT64_MAX;
    if (want) {
        uint64_t idle = qc->idle_ns;
        const ngtcp2_transport_params *rp = ngtcp2_conn_get_remote_transport_params(qc->conn);
        if (rp && rp->max_idle_timeout && (idle == 0 || rp->max_idle_timeout < idle))
            idle = rp->max_idle_timeout;
        every = idle ? idle / 2 : 15 * NGTCP2_SECONDS;
    }
    ngtcp2_conn_set_keep_alive_timeout(qc->conn, every);
    qc->keepalive = want;
}

int qx_quic_conn_write(qx_quic_conn_t *qc)
{
    qx_quic_ep_t *ep = qc->ep;
    ngtcp2_path_storage ps;
    ngtcp2_pkt_info pi;
    ngtcp2_tstamp ts = now_ns();
    size_t npkts = 0;
    size_t off = 0, gso = 0; /* the batch being built in ep->txbuf */
    uint8_t ecn = 0;         /* ... and its ECN codepoint (one per batch) */
    size_t maxpkt = ngtcp2_conn_get_max_tx_udp_payload_size(qc->conn);
    size_t batch = ep->no_gso ? 1 : TX_BATCH_PKTS;

    if (qc->tls && qc->state >= QX_QC_OPEN)
        release_tls(qc); /* not inside the callback: gnutls may be on the stack */
    sync_keepalive(qc);
    if (qc->stash) {
        int rv =
            send_pkts(ep, (const struct sockaddr *)&qc->local, (const struct sockaddr *)&qc->remote,
                      qc->remotelen, qc->stash, qc->stashlen, qc->stashgso, qc->stashecn);
        if (rv == 1)
            return 0; /* still full; the writable event brings us back */
        free(qc->stash);
        qc->stash = NULL;
        ep->nblocked--;
    }
    if (maxpkt > NGTCP2_MAX_PMTUD_UDP_PAYLOAD_SIZE)
        maxpkt = NGTCP2_MAX_PMTUD_UDP_PAYLOAD_SIZE;

    ngtcp2_path_storage_zero(&ps);
    for (;;) {
        int64_t stream_id = -1;
        int fin = 0;
        nghttp3_vec vec[16];
        nghttp3_ssize sveccnt = 0;

        if (qc->h3 && qc->fin_due > 0 && (stream_id = qx_h3_fin_take(qc)) >= 0) {
            fin = 1; /* a bare FIN ngtcp2 did not take before: nghttp3 will not offer it again */
        } else if (qc->h3 && ngtcp2_conn_get_max_data_left(qc->conn)) {
            sveccnt = nghttp3_conn_writev_stream(qc->h3, &stream_id, &fin, vec, QX_ARRAY_LEN(vec));
            if (sveccnt < 0) {
                ngtcp2_ccerr_set_application_error(
                    &qc->ccerr, nghttp3_err_infer_quic_app_error_code((int)sveccnt), NULL, 0);
                return NGTCP2_ERR_CALLBACK_FAILURE;
            }
        }
        ngtcp2_ssize ndatalen = -1;
        uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
        if (fin)
            flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
        ngtcp2_ssize n = ngtcp2_conn_writev_stream(qc->conn, &ps.path, &pi, ep->txbuf + off, maxpkt,
                                                   &ndatalen, flags, stream_id,
                                                   (const ngtcp2_vec *)vec, (size_t)sveccnt, ts);
        if (n < 0) {
            switch (n) {
            case NGTCP2_ERR_STREAM_DATA_BLOCKED:
                nghttp3_conn_block_stream(qc->h3, stream_id);
                continue;
            case NGTCP2_ERR_STREAM_SHUT_WR:
                nghttp3_conn_shutdown_stream_write(qc->h3, stream_id);
                continue;
            case NGTCP2_ERR_WRITE_MORE:
                if (nghttp3_conn_add_write_offset(qc->h3, stream_id, (size_t)ndatalen) != 0)
                    return NGTCP2_ERR_CALLBACK_FAILURE;
                continue;
            default:
                return (int)n;
            }
        }
        if (ndatalen >= 0 && qc->h3 &&
            nghttp3_conn_add_write_offset(qc->h3, stream_id, (size_t)ndatalen) != 0)
            return NGTCP2_ERR_CALLBACK_FAILURE;
        if (fin && sveccnt == 0 && ndatalen < 0 && stream_id >= 0)
            qx_h3_fin_declined(qc, stream_id); /* congestion, pacing or a full packet */
        if (n == 0)
            break;
        qc->pkts_sent++;
        /* Each packet goes on the path ngtcp2 chose for it: during path
         * validation (migration, NAT rebinding) that is not always the
         * last path a packet came from. A batch holds one path only. */
        if (!same_path(qc, &ps.path)) {
            if (off > 0) {
                if (flush_batch(qc, off, gso, ecn))
                    break; /* the new packet is lost like any datagram */
                memmove(ep->txbuf, ep->txbuf + off, (size_t)n);
                off = 0;
            }
            memcpy(&qc->local, ps.path.local.addr, ps.path.local.addrlen);
            qc->locallen = ps.path.local.addrlen;
            memcpy(&qc->remote, ps.path.remote.addr, ps.path.remote.addrlen);
            qc->remotelen = ps.path.remote.addrlen;
        }
        if (off > 0 && ((size_t)n > gso || pi.ecn != ecn)) {
            /* Larger than the batch's segments (the kernel would cut it),
             * or another ECN codepoint: send the batch, and start a new
             * one with this packet. */
            if (flush_batch(qc, off, gso, ecn))
                break; /* the new packet is lost like any datagram */
            memmove(ep->txbuf, ep->txbuf + off, (size_t)n);
            off = 0;
        }
        if (off == 0) {
            gso = (size_t)n;
            ecn = pi.ecn;
        }
        off += (size_t)n;
        ++npkts;
        /* GSO segments all have the batch's size; a shorter one ends it. */
        if ((size_t)n < gso || off / gso >= batch || off + maxpkt > sizeof(ep->txbuf)) {
            size_t len = off;
            off = 0;
            if (flush_batch(qc, len, gso, ecn))
                break;
        }
        if (npkts >= TX_MAX_PKTS) {
            /* Yield to other connections; the timer (pacing) resumes us. */
            qx_quic_conn_mark(qc);
            break;
        }
    }
    if (off > 0)
        flush_batch(qc, off, gso, ecn);
    /* Pacing: ngtcp2 charges the bytes written since the last update at
     * its pacing rate and sets when the next packet may leave. The time
     * given must never go backwards (ngtcp2 asserts it), so it is always
     * the time of the writes. Before the first RTT sample the rate assumes
     * a 1 ms round trip: the handshake flight costs next to nothing. The
     * flight that completes the handshake (HANDSHAKE_DONE, the session
     * ticket, connection IDs, NEW_TOKEN) is the first one charged at the
     * real rate; charged at once it held the first response back by ~5 ms
     * at a 50 ms RTT. It is charged with the next write instead, together
     * with what that write sends: the first response leaves at once and
     * nothing is ever sent faster than the rate allows afterwards. */
    if (qc->paced || !ngtcp2_conn_get_handshake_completed(qc->conn))
        ngtcp2_conn_update_pkt_tx_time(qc->conn, ts);
    else
        qc->paced = 1;
    schedule_timer(qc);
    return 0;
}

static void conn_timer_cb(uv_timer_t *t)
{
    qx_quic_conn_t *qc = qx_container_of(t, qx_quic_conn_t, timer);
    if (qc->state >= QX_QC_CLOSING)
        return;
    uint64_t now = now_ns();
    int rv = ngtcp2_conn_handle_expiry(qc->conn, now);
    if (rv != 0) {
        conn_fail(qc, rv);
        return;
    }
    /* A long connection reports its path every minute, not only at close. */
    if (qc->state >= QX_QC_OPEN && now - qc->reported_ns >= PATH_REPORT_NS)
        report_path(qc, now);
    qx_quic_conn_mark(qc);
}

/* The flush, run from the worker's deferred-work queue after the loop
 * turn's I/O: write what the connection has, or delete it when it is
 * closing. */
static void on_flush(qx_deferred_t *d)
{
    qx_quic_conn_t *qc = qx_container_of(d, qx_quic_conn_t, flush);
    if (qc->state < QX_QC_CLOSING) {
        int rv = qx_quic_conn_write(qc);
        if (rv != 0)
            conn_fail(qc, rv); /* queues it again; conn_del takes it off */
    }
    if (qc->state == QX_QC_CLOSING)
        conn_del(qc);
}

/* ---- ngtcp2 callbacks that belong to the transport ---------------------- */

static void rand_cb(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *ctx)
{
    (void)ctx;
    gnutls_rnd(GNUTLS_RND_RANDOM, dest, len);
}

/* The stateless reset token of a CID: HMAC-SHA256(static secret, CID),
 * its first 16 bytes (RFC 9000 §10.3.2). Every worker keys its own handle
 * with the same secret, so any of them (or a restarted process reading the
 * same ticket_key_file) computes the same token. One MAC on a kept key
 * costs ~3 k instructions, ngtcp2_crypto_generate_stateless_reset_token's
 * HKDF through GnuTLS ~44 k: a client asks for up to 8 CIDs. Returns 0 or
 * -1. */
static int reset_token(qx_quic_ep_t *ep, uint8_t *token, const ngtcp2_cid *cid)
{
    uint8_t d[32];
    if (gnutls_hmac(ep->reset_mac, cid->data, cid->datalen) != 0)
        return -1;
    gnutls_hmac_output(ep->reset_mac, d); /* and the handle is ready for the next */
    memcpy(token, d, NGTCP2_STATELESS_RESET_TOKENLEN);
    return 0;
}

static int new_cid(qx_quic_conn_t *qc, ngtcp2_cid *cid, uint8_t *token, size_t cidlen)
{
    qx_wctx_t *w = qc->ep->w;
    /* Worker id (the steering byte), key generation, MAC: cid.h. */
    if (cidlen != QX_CID_LEN || qx_cid_make(&w->shared->cid_keys, w->id, cid->data) != 0)
        return -1;
    cid->datalen = cidlen;
    if (reset_token(qc->ep, token, cid) != 0)
        return -1;
    return 0;
}

static int get_new_connection_id_cb(ngtcp2_conn *conn, ngtcp2_cid *cid, uint8_t *token,
                                    size_t cidlen, void *user_data)
{
    qx_quic_conn_t *qc = user_data;
    (void)conn;
    if (new_cid(qc, cid, token, cidlen) != 0 || cid_add(qc, cid) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int remove_connection_id_cb(ngtcp2_conn *conn, const ngtcp2_cid *cid, void *user_data)
{
    (void)conn;
    cid_remove(user_data, cid);
    return 0;
}

/* The SNI, lowercased, as soon as the ClientHello is processed: requests
 * in 0-RTT are routed before the handshake completes. */
void qx_quic_conn_read_sni(qx_quic_conn_t *qc)
{
    size_t len = sizeof(qc->sni) - 1;
    unsigned type;
    if (qc->tls == NULL)
        return; /* read already, before the session was released */
    if (gnutls_server_name_get(qc->tls, qc->sni, &len, &type, 0) == 0 && type == GNUTLS_NAME_DNS) {
        qc->sni[len] = '\0';
        qx_ascii_lower_n(qc->sni, len);
    } else {
        qc->sni[0] = '\0';
    }
}

static int handshake_completed_cb(ngtcp2_conn *conn, void *user_data)
{
    qx_quic_conn_t *qc = user_data;
    qx_wctx_t *w = qc->ep->w;
    uint8_t token[NGTCP2_CRYPTO_MAX_REGULAR_TOKENLEN];

    qx_quic_conn_read_sni(qc);
    set_state(qc, QX_QC_OPEN);
    /* A completed handshake proves the address (RFC 9000 §8.1): from here
     * on the connection counts toward its address's cap. */
    if (qc->ip_entry == NULL)
        qc->ip_entry = qx_ipcount_take(&qc->ep->per_ip, (const struct sockaddr *)&qc->remote);
    if (qc->counted)
        w->handshakes--;
    qx_cnt_add(&w->metrics.quic_handshakes_ok, 1);
    qx_cnt_add(&w->metrics.active_connections_h3, 1);
    uint64_t now = now_ns();
    int early = -1; /* no 0-RTT offered */
    if (gnutls_session_get_flags(qc->tls) & GNUTLS_SFLAGS_EARLY_DATA)
        early = 1;
    else if (ngtcp2_conn_get_tls_early_data_rejected(conn))
        early = 0;
    qx_metrics_quic_handshake(&w->metrics, (double)(now - qc->created_ns) / 1e9,
                              gnutls_session_is_resumed(qc->tls) != 0, early);
    qc->reported_ns = now;
    /* A session ticket, for resumption and 0-RTT next time. */
    if (gnutls_session_ticket_send(qc->tls, 1, 0) != 0)
        QX_DEBUG("quic: could not send a session ticket");
    /* A NEW_TOKEN, so the client's next connection skips the Retry (it
     * has no other use here: ~70 k instructions saved with retry: never). */
    if (w->snap->cfg->retry != QX_RETRY_NEVER) {
        const ngtcp2_path *path = ngtcp2_conn_get_path(conn);
        ngtcp2_ssize tlen = ngtcp2_crypto_generate_regular_token(
            token, w->shared->token_secret, sizeof(w->shared->token_secret), path->remote.addr,
            path->remote.addrlen, now_ns());
        if (tlen > 0)
            ngtcp2_conn_submit_new_token(conn, token, (size_t)tlen);
    }
    qx_h3_handshake_done(qc);
    if (w->state == QX_W_DRAINING)
        qx_h3_goaway(qc);
    return 0;
}

static int recv_rx_key_cb(ngtcp2_conn *conn, ngtcp2_encryption_level level, void *user_data)
{
    (void)conn;
    if (level != NGTCP2_ENCRYPTION_LEVEL_1RTT)
        return 0;
    qx_quic_conn_read_sni(user_data);
    return qx_h3_setup(user_data);
}

/* CRYPTO data goes to GnuTLS while the handshake runs. After it, with the
 * session released (release_tls), none is legal from a client: TLS 1.3
 * has no client message after Finished here (no post-handshake
 * authentication is asked for) and QUIC forbids KeyUpdate (RFC 9001 §6). */
static int recv_crypto_data_cb(ngtcp2_conn *conn, ngtcp2_encryption_level level, uint64_t offset,
                               const uint8_t *data, size_t datalen, void *user_data)
{
    qx_quic_conn_t *qc = user_data;
    if (qc->tls == NULL) {
        ngtcp2_ccerr_set_tls_alert(&qc->ccerr, GNUTLS_A_UNEXPECTED_MESSAGE, NULL, 0);
        return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    return ngtcp2_crypto_recv_crypto_data_cb(conn, level, offset, data, datalen, user_data);
}

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref)
{
    qx_quic_conn_t *qc = qx_container_of(ref, qx_quic_conn_t, conn_ref);
    return qc->conn;
}

static const ngtcp2_callbacks callbacks = {
    .recv_client_initial = ngtcp2_crypto_recv_client_initial_cb,
    .recv_crypto_data = recv_crypto_data_cb,
    .handshake_completed = handshake_completed_cb,
    .encrypt = ngtcp2_crypto_encrypt_cb,
    .decrypt = ngtcp2_crypto_decrypt_cb,
    .hp_mask = ngtcp2_crypto_hp_mask_cb,
    .recv_stream_data = qx_h3_recv_stream_data,
    .acked_stream_data_offset = qx_h3_acked_stream_data_offset,
    .stream_close = qx_h3_stream_close,
    .rand = rand_cb,
    .get_new_connection_id = get_new_connection_id_cb,
    .remove_connection_id = remove_connection_id_cb,
    .update_key = ngtcp2_crypto_update_key_cb,
    .stream_reset = qx_h3_stream_reset,
    .extend_max_remote_streams_bidi = qx_h3_extend_max_remote_streams_bidi,
    .extend_max_stream_data = qx_h3_extend_max_stream_data,
    .delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb,
    .delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb,
    .get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb,
    .stream_stop_sending = qx_h3_stream_stop_sending,
    .version_negotiation = ngtcp2_crypto_version_negotiation_cb,
    .recv_rx_key = recv_rx_key_cb,
};

/* A connection whose address a token proved (validated) counts toward
 * the per-address cap at once; any other when its handshake completes. */
static qx_quic_conn_t *conn_new(qx_quic_ep_t *ep, const ngtcp2_pkt_hd *hd,
                                const struct sockaddr *local, socklen_t locallen,
                                const struct sockaddr *remote, socklen_t remotelen,
                                const ngtcp2_cid *odcid, int validated)
{
    qx_wctx_t *w = ep->w;
    const qx_limits_t *lim = &w->snap->cfg->limits;
    ngtcp2_settings settings;
    ngtcp2_transport_params params;
    ngtcp2_cid scid;

    qx_quic_conn_t *qc = calloc(1, sizeof(*qc));
    if (qc == NULL)
        return NULL;
    qc->ep = ep;
    qc->conn_ref.get_conn = get_conn;
    qc->conn_ref.user_data = qc;
    memcpy(&qc->local, local, locallen);
    qc->locallen = locallen;
    memcpy(&qc->remote, remote, remotelen);
    qc->remotelen = remotelen;
    ngtcp2_ccerr_default(&qc->ccerr);
    uv_timer_init(&w->loop, &qc->timer);
    qx_deferred_init(&qc->flush, on_flush);
    LIST_INSERT_HEAD(&ep->conns, qc, link);
    ep->nconns++;

    ngtcp2_settings_default(&settings);
    settings.initial_ts = qc->created_ns = now_ns();
    settings.max_tx_udp_payload_size = MAX_UDP_PAYLOAD;
    settings.handshake_timeout = (ngtcp2_duration)lim->quic_handshake_timeout_secs * NGTCP2_SECONDS;
    if (odcid) {
        /* Validated by a Retry: ngtcp2 checks that every Initial carries it. */
        settings.token = hd->token;
        settings.tokenlen = hd->tokenlen;
        settings.token_type = NGTCP2_TOKEN_TYPE_RETRY;
    }
    /* The stream window is the per-stream body bound (exchange.h): no
     * auto-tuning past it. */
    settings.max_stream_window = QX_STREAM_WINDOW;
    settings.max_window = 16 * 1024 * 1024;

    ngtcp2_transport_params_default(&params);
    params.initial_max_stream_data_bidi_local = QX_STREAM_WINDOW;
    params.initial_max_stream_data_bidi_remote = QX_STREAM_WINDOW;
    params.initial_max_stream_data_uni = 256 * 1024;
    params.initial_max_data = 4 * 1024 * 1024;
    params.initial_max_streams_bidi = lim->max_streams_per_connection;
    qc->max_streams = params.initial_max_streams_bidi;
    params.initial_max_streams_uni = 3;
    params.max_idle_timeout = (ngtcp2_duration)lim->quic_idle_timeout_secs * NGTCP2_SECONDS;
    qc->idle_ns = params.max_idle_timeout;
    params.active_connection_id_limit = 7;
    if (odcid) {
        params.original_dcid = *odcid;
        params.retry_scid = hd->dcid;
        params.retry_scid_present = 1;
    } else {
        params.original_dcid = hd->dcid;
    }
    params.original_dcid_present = 1; /* ngtcp2 1.x asserts it on a server */
    params.stateless_reset_token_present = 1;

    if (new_cid(qc, &scid, params.stateless_reset_token, QX_SCID_LEN) != 0)
        goto fail;

    ngtcp2_path path = {
        .local = {(ngtcp2_sockaddr *)&qc->local, qc->locallen},
        .remote = {(ngtcp2_sockaddr *)&qc->remote, qc->remotelen},
    };
    int rv = ngtcp2_conn_server_new(&qc->conn, &hd->scid, &scid, &path, hd->version, &callbacks,
                                    &settings, &params, qx_qmem_ngtcp2(ep->mem), qc);
    if (rv != 0) {
        QX_DEBUG("quic: ngtcp2_conn_server_new: %s", ngtcp2_strerror(rv));
        goto fail;
    }
    qc->creds = qx_shared_tls_acquire(w->shared);
    if (qx_tls_session_new(qc->creds, w->shared->tls_keys, &qc->conn_ref, &qc->tls) != 0)
        goto fail;
    ngtcp2_conn_set_tls_native_handle(qc->conn, qc->tls);
    if (cid_add(qc, &hd->dcid) != 0 || cid_add(qc, &scid) != 0)
        goto fail;
    qc->counted = 1;
    if (validated)
        qc->ip_entry = qx_ipcount_take(&ep->per_ip, remote);
    __atomic_add_fetch(&w->shared->quic_conns, 1, __ATOMIC_RELAXED);
    w->handshakes++;
    return qc;

fail:
    qc->close_quietly = 1;
    conn_del(qc);
    return NULL;
}

/* ---- receiving ---------------------------------------------------------- */

static void send_version_negotiation(qx_quic_ep_t *ep, const ngtcp2_version_cid *vc,
                                     const struct sockaddr *local, const struct sockaddr *remote,
                                     socklen_t remotelen)
{
    uint8_t buf[256];
    uint8_t unused;
    const uint32_t sv[] = {NGTCP2_PROTO_VER_V1};
    gnutls_rnd(GNUTLS_RND_NONCE, &unused, 1);
    ngtcp2_ssize n =
        ngtcp2_pkt_write_version_negotiation(buf, sizeof(buf), unused, vc->scid, vc->scidlen,
                                             vc->dcid, vc->dcidlen, sv, QX_ARRAY_LEN(sv));
    if (n > 0)
        send_pkt(ep, local, remote, remotelen, buf, (size_t)n);
}

/* A short-header packet for a connection we do not know (e.g. from before
 * a restart): a stateless reset tells the client at once instead of after
 * its idle timeout (RFC 9000 §10.3). Always smaller than what provoked it,
 * so two endpoints cannot loop. */
static void send_stateless_reset(qx_quic_ep_t *ep, const ngtcp2_version_cid *vc, size_t pktlen,
                                 const struct sockaddr *local, const struct sockaddr *remote,
                                 socklen_t remotelen)
{
    uint8_t token[NGTCP2_STATELESS_RESET_TOKENLEN];
    uint8_t rnd[64];
    uint8_t buf[128];
    ngtcp2_cid cid;
    if (pktlen < 1 + NGTCP2_MIN_STATELESS_RESET_RANDLEN + NGTCP2_STATELESS_RESET_TOKENLEN + 1 + 21)
        return;
    size_t randlen = pktlen - 1 - NGTCP2_STATELESS_RESET_TOKENLEN - 1;
    if (randlen > sizeof(rnd))
        randlen = sizeof(rnd);
    ngtcp2_cid_init(&cid, vc->dcid, vc->dcidlen);
    if (reset_token(ep, token, &cid) != 0)
        return;
    gnutls_rnd(GNUTLS_RND_NONCE, rnd, randlen);
    ngtcp2_ssize n = ngtcp2_pkt_write_stateless_reset(buf, sizeof(buf), token, rnd, randlen);
    if (n > 0)
        send_pkt(ep, local, remote, remotelen, buf, (size_t)n);
}

/* ---- address validation and admission ----------------------------------- */

#define RETRY_TOKEN_TIMEOUT (10 * NGTCP2_SECONDS)
#define REGULAR_TOKEN_TIMEOUT (24 * 3600 * NGTCP2_SECONDS)

enum { ADDR_VALID, ADDR_UNVALIDATED, ADDR_RETRIED, ADDR_SEND_RETRY, ADDR_BAD_TOKEN };

static int may_accept(qx_quic_ep_t *ep)
{
    const qx_limits_t *lim = &ep->w->snap->cfg->limits;
    if (!ep->accepting)
        return 0;
    if (__atomic_load_n(&ep->w->shared->quic_conns, __ATOMIC_RELAXED) >= lim->max_quic_connections)
        return 0;
    return 1;
}

/* The per-address cap, counted per worker (the kernel spreads one
 * client's ports over the workers, so it is counted where the connections
 * live) and only for proven addresses: an Initial from a forged source
 * address must not use up its owner's cap. */
static int over_ip_cap(qx_quic_ep_t *ep, const struct sockaddr *remote)
{
    return qx_ipcount_get(&ep->per_ip, remote) >=
           ep->w->snap->cfg->limits.max_quic_connections_per_ip;
}

/* Decides what an Initial that would open a connection needs: a Retry
 * token proves the address (stateless, RFC 9000 §8.1.2); a NEW_TOKEN from
 * an earlier connection does too (so returning clients skip the round
 * trip); without either, Retry is sent when the policy asks for it. */
static int validate_address(qx_quic_ep_t *ep, const ngtcp2_pkt_hd *hd,
                            const struct sockaddr *remote, socklen_t remotelen, ngtcp2_cid *odcid)
{
    const qx_shared_t *sh = ep->w->shared;
    const qx_config_t *cfg = ep->w->snap->cfg;
    ngtcp2_tstamp now = now_ns();

    if (hd->tokenlen > 0 && hd->token[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY) {
        if (ngtcp2_crypto_verify_retry_token(odcid, hd->token, hd->tokenlen, sh->token_secret,
                                             sizeof(sh->token_secret), hd->version,
                                             (const ngtcp2_sockaddr *)remote, remotelen, &hd->dcid,
                                             RETRY_TOKEN_TIMEOUT, now) != 0)
            return ADDR_BAD_TOKEN;
        return ADDR_RETRIED;
    }
    if (hd->tokenlen > 0 && hd->token[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_REGULAR &&
        ngtcp2_crypto_verify_regular_token(
            hd->token, hd->tokenlen, sh->token_secret, sizeof(sh->token_secret),
            (const ngtcp2_sockaddr *)remote, remotelen, REGULAR_TOKEN_TIMEOUT, now) == 0)
        return ADDR_VALID;
    /* The per-source rate is the XDP filter's (xdp.initial_rate/_burst):
     * with or without the filter, a source over it must prove its address. */
    if (cfg->retry == QX_RETRY_ALWAYS ||
        (cfg->retry == QX_RETRY_AUTO &&
         (ep->w->handshakes >= cfg->limits.retry_handshakes_threshold ||
          !qx_src_rate_take(sh->initial_rate, remote, cfg->xdp.initial_rate, cfg->xdp.initial_burst,
                            now))))
        return ADDR_SEND_RETRY;
    return ADDR_UNVALIDATED;
}

static void send_retry(qx_quic_ep_t *ep, const ngtcp2_pkt_hd *hd, const struct sockaddr *local,
                       const struct sockaddr *remote, socklen_t remotelen)
{
    const qx_shared_t *sh = ep->w->shared;
    uint8_t token[NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN];
    uint8_t buf[1500];
    ngtcp2_cid scid;

    scid.datalen = QX_SCID_LEN;
    /* Carries our worker id: the client's next Initial comes back to us. */
    if (qx_cid_make(&sh->cid_keys, ep->w->id, scid.data) != 0)
        return;
    ngtcp2_ssize tlen = ngtcp2_crypto_generate_retry_token(
        token, sh->token_secret, sizeof(sh->token_secret), hd->version,
        (const ngtcp2_sockaddr *)remote, remotelen, &scid, &hd->dcid, now_ns());
    if (tlen < 0)
        return;
    ngtcp2_ssize n = ngtcp2_crypto_write_retry(buf, sizeof(buf), hd->version, &hd->scid, &scid,
                                               &hd->dcid, token, (size_t)tlen);
    if (n > 0) {
        send_pkt(ep, local, remote, remotelen, buf, (size_t)n);
        qx_cnt_add(&ep->w->metrics.quic_retry_sent, 1);
    }
}

static void close_initial(qx_quic_ep_t *ep, const ngtcp2_pkt_hd *hd, uint64_t code,
                          const struct sockaddr *local, const struct sockaddr *remote,
                          socklen_t remotelen)
{
    uint8_t buf[256];
    ngtcp2_ssize n = ngtcp2_crypto_write_connection_close(buf, sizeof(buf), hd->version, &hd->scid,
                                                          &hd->dcid, code, NULL, 0);
    if (n > 0)
        send_pkt(ep, local, remote, remotelen, buf, (size_t)n);
}

static void on_datagram(qx_quic_ep_t *ep, const struct sockaddr *local, socklen_t locallen,
                        const struct sockaddr *remote, socklen_t remotelen, const uint8_t *data,
                        size_t len, int forwarded, uint8_t ecn)
{
    ngtcp2_version_cid vc;
    int rv = ngtcp2_pkt_decode_version_cid(&vc, data, len, QX_SCID_LEN);
    if (rv == NGTCP2_ERR_VERSION_NEGOTIATION) {
        send_version_negotiation(ep, &vc, local, remote, remotelen);
        return;
    }
    if (rv != 0)
        return;

    qx_quic_conn_t *qc = cid_find(ep, vc.dcid, vc.dcidlen);
    ngtcp2_pkt_hd hd;
    int fresh = 0, retried = 0;
    if (qc == NULL && !(data[0] & 0x80) && vc.dcidlen == QX_SCID_LEN && vc.dcid[0] != ep->w->id &&
        vc.dcid[0] < ep->w->shared->nworkers && !forwarded) {
        /* One of our CIDs, owned by another worker (migration, NAT
         * rebinding): hand it over rather than resetting it. Initial
         * packets carry the client's random DCID and never come here
         * unless that happens to look like ours, which is harmless. */
        qx_wctx_forward(ep->w, vc.dcid[0], local, locallen, remote, remotelen, data, len);
        return;
    }
    if (qc == NULL) {
        if (!(data[0] & 0x80)) {
            send_stateless_reset(ep, &vc, len, local, remote, remotelen);
            return;
        }
        ngtcp2_cid odcid;
        if (ngtcp2_accept(&hd, data, len) != 0)
            return;
        if (!may_accept(ep)) {
            /* Draining or over a limit: refuse at once (CONNECTION_REFUSED)
             * instead of letting the client wait for its handshake timeout. */
            close_initial(ep, &hd, NGTCP2_CONNECTION_REFUSED, local, remote, remotelen);
            qx_cnt_add(&ep->w->metrics.quic_refused, 1);
            return;
        }
        int av = validate_address(ep, &hd, remote, remotelen, &odcid);
        if ((av == ADDR_VALID || av == ADDR_RETRIED || av == ADDR_UNVALIDATED) &&
            over_ip_cap(ep, remote)) {
            /* At the cap: a proven address is refused; any other is asked
             * to prove itself first (a Retry), so only its owner can be
             * refused for it. */
            if (av == ADDR_UNVALIDATED) {
                send_retry(ep, &hd, local, remote, remotelen);
                return;
            }
            close_initial(ep, &hd, NGTCP2_CONNECTION_REFUSED, local, remote, remotelen);
            qx_cnt_add(&ep->w->metrics.quic_refused, 1);
            return;
        }
        switch (av) {
        case ADDR_RETRIED:
            retried = 1;
            break;
        case ADDR_VALID:
        case ADDR_UNVALIDATED:
            break;
        case ADDR_SEND_RETRY:
            send_retry(ep, &hd, local, remote, remotelen);
            return;
        case ADDR_BAD_TOKEN:
            close_initial(ep, &hd, NGTCP2_INVALID_TOKEN, local, remote, remotelen);
            qx_cnt_add(&ep->w->metrics.quic_invalid_tokens, 1);
            return;
        }
        qc = conn_new(ep, &hd, local, locallen, remote, remotelen, retried ? &odcid : NULL,
                      av != ADDR_UNVALIDATED);
        if (qc == NULL)
            return;
        fresh = 1;
    }
    if (qc->state >= QX_QC_CLOSING)
        return;

    ngtcp2_path path = {
        .local = {(ngtcp2_sockaddr *)local, locallen},
        .remote = {(ngtcp2_sockaddr *)remote, remotelen},
    };
    ngtcp2_pkt_info pi = {.ecn = ecn}; /* ngtcp2 counts the marks for its ACKs */
    rv = ngtcp2_conn_read_pkt(qc->conn, &path, &pi, data, len, now_ns());
    if (rv == NGTCP2_ERR_RETRY && fresh && !retried) {
        /* The client's first Initial does not start its CRYPTO data at
         * offset 0 (a ClientHello over two Initials, the first lost or
         * overtaken), which ngtcp2 cannot start from: a Retry makes the
         * client start over, with a token. Once only: a client that came
         * with a Retry token is closed as for any other error. The
         * half-made connection goes without a word. */
        send_retry(ep, &hd, local, remote, remotelen);
        qc->retried_away = 1;
        qc->close_quietly = 1;
        conn_del(qc);
        return;
    }
    if (rv != 0) {
        conn_fail(qc, rv);
        return;
    }
    qx_quic_conn_mark(qc);
}

static void read_datagrams(qx_quic_ep_t *ep)
{
    for (int i = 0; i < RX_BATCH; i++) {
        struct sockaddr_storage remote, local;
        union {
            char buf[CMSG_SPACE(sizeof(struct in6_pktinfo)) +
                     CMSG_SPACE(sizeof(struct in_pktinfo)) + 3 * CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } cm;
        struct iovec iov = {ep->rxbuf, sizeof(ep->rxbuf)};
        struct msghdr msg = {0};
        msg.msg_name = &remote;
        msg.msg_namelen = sizeof(remote);
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cm.buf;
        msg.msg_controllen = sizeof(cm.buf);

        ssize_t n = recvmsg(ep->fd, &msg, MSG_DONTWAIT);
        if (n == -1) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                QX_DEBUG("quic: recvmsg: %s", strerror(errno));
            return;
        }
        /* The local address: what the client wrote to. */
        socklen_t locallen = 0;
        int gro = 0;     /* UDP GRO: datagrams of this size, coalesced (the last may be shorter) */
        uint8_t ecn = 0; /* the ECN bits of the IP header (IP_RECVTOS / IPV6_RECVTCLASS) */
        memset(&local, 0, sizeof(local));
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
                memcpy(&gro, CMSG_DATA(c), sizeof(gro));
            } else if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TOS) {
                ecn = *(const uint8_t *)CMSG_DATA(c) & 0x3; /* one byte (IP_RECVTOS) */
            } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_TCLASS) {
                int tc;
                memcpy(&tc, CMSG_DATA(c), sizeof(tc));
                ecn = (uint8_t)(tc & 0x3);
            } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
                struct in6_pktinfo pi;
                memcpy(&pi, CMSG_DATA(c), sizeof(pi));
                struct sockaddr_in6 *l6 = (struct sockaddr_in6 *)&local;
                l6->sin6_family = AF_INET6;
                l6->sin6_addr = pi.ipi6_addr;
                locallen = sizeof(*l6);
            } else if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
                struct in_pktinfo pi;
                memcpy(&pi, CMSG_DATA(c), sizeof(pi));
                if (ep->family == AF_INET6) {
                    struct sockaddr_in6 *l6 = (struct sockaddr_in6 *)&local;
                    l6->sin6_family = AF_INET6;
                    l6->sin6_addr.s6_addr[10] = 0xff;
                    l6->sin6_addr.s6_addr[11] = 0xff;
                    memcpy(&l6->sin6_addr.s6_addr[12], &pi.ipi_addr, 4);
                    locallen = sizeof(*l6);
                } else {
                    struct sockaddr_in *l4 = (struct sockaddr_in *)&local;
                    l4->sin_family = AF_INET;
                    l4->sin_addr = pi.ipi_addr;
                    locallen = sizeof(*l4);
                }
            }
        }
        /* The pktinfo gives the address; the port is the socket's own. */
        const struct sockaddr_storage *bound = &ep->bound;
        if (locallen == 0) {
            memcpy(&local, bound, ep->boundlen);
            locallen = ep->boundlen;
        } else if (local.ss_family == AF_INET6) {
            ((struct sockaddr_in6 *)&local)->sin6_port =
                ((const struct sockaddr_in6 *)bound)->sin6_port;
        } else {
            ((struct sockaddr_in *)&local)->sin_port =
                ((const struct sockaddr_in *)bound)->sin_port;
        }
        if (n == 0)
            continue;
        size_t seg = gro > 0 ? (size_t)gro : (size_t)n;
        if ((msg.msg_flags & MSG_TRUNC) && gro > 0)
            n -= n % gro; /* a cut datagram is lost like any other */
        for (size_t off = 0; off < (size_t)n; off += seg)
            on_datagram(ep, (struct sockaddr *)&local, locallen, (struct sockaddr *)&remote,
                        msg.msg_namelen, ep->rxbuf + off, QX_MIN(seg, (size_t)n - off), 0, ecn);
    }
}

void qx_quic_ep_input(qx_quic_ep_t *ep, const struct sockaddr *local, socklen_t locallen,
                      const struct sockaddr *remote, socklen_t remotelen, const uint8_t *data,
                      size_t len)
{
    on_datagram(ep, local, locallen, remote, remotelen, data, len, 1, 0);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    qx_quic_ep_t *ep = qx_container_of(h, qx_quic_ep_t, poll);
    if (status < 0)
        return;
    if (events & UV_READABLE)
        read_datagrams(ep);
    if (events & UV_WRITABLE) {
        for (qx_quic_conn_t *qc = LIST_FIRST(&ep->conns); qc; qc = LIST_NEXT(qc, link)) {
            if (qc->stash)
                qx_quic_conn_mark(qc);
        }
    }
    ep_poll_update(ep);
}

static void ep_poll_update(qx_quic_ep_t *ep)
{
    if (ep->closing)
        return;
    int events = UV_READABLE | (ep->nblocked ? UV_WRITABLE : 0);
    if (events != ep->poll_events) {
        ep->poll_events = events;
        uv_poll_start(&ep->poll, events, on_poll);
    }
}

/* ---- endpoint ----------------------------------------------------------- */

int qx_quic_ep_new(qx_quic_ep_t **out, qx_wctx_t *w, const struct sockaddr *addr, socklen_t addrlen)
{
    char name[INET6_ADDRSTRLEN + 8] = "?";
    int one = 1, zero = 0;
    qx_quic_ep_t *ep = calloc(1, sizeof(*ep));
    if (ep == NULL)
        return QX_ERR_NOMEM;
    LIST_INIT(&ep->conns);
    ep->w = w;
    ep->family = addr->sa_family;
    ep->accepting = 1;
    gnutls_rnd(GNUTLS_RND_KEY, ep->hash_key, sizeof(ep->hash_key));
    qx_ipcount_init(&ep->per_ip, ep->hash_key);
    if (gnutls_hmac_init(&ep->reset_mac, GNUTLS_MAC_SHA256, w->shared->static_secret,
                         sizeof(w->shared->static_secret)) != 0) {
        free(ep);
        return QX_ERR_NOMEM;
    }
    if (qx_qmem_new(&ep->mem) != 0) {
        gnutls_hmac_deinit(ep->reset_mac, NULL);
        qx_qmem_del(ep->mem); /* after every connection's libraries */
        free(ep);
        return QX_ERR_NOMEM;
    }
    uv_ip_name(addr, name, sizeof(name));

    ep->fd = socket(addr->sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (ep->fd == -1)
        goto fail;
    if (setsockopt(ep->fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1)
        goto fail;
    if (addr->sa_family == AF_INET6) {
        /* [::] takes IPv4 too: Chromium tries ::1 first, curl 127.0.0.1. */
        if (setsockopt(ep->fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) == -1 ||
            setsockopt(ep->fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one)) == -1)
            goto fail;
    }
    if (setsockopt(ep->fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one)) == -1)
        goto fail;
    /* ECN (RFC 9000 §13.4): the marks of what arrives are counted in ACKs,
     * and ngtcp2 marks what it sends once the path has shown it keeps them.
     * Optional: without these, ECN validation fails and nothing is marked. */
    setsockopt(ep->fd, IPPROTO_IP, IP_RECVTOS, &one, sizeof(one));
    if (addr->sa_family == AF_INET6)
        setsockopt(ep->fd, IPPROTO_IPV6, IPV6_RECVTCLASS, &one, sizeof(one));
    /* UDP GRO: a burst of same-size datagrams from one client comes up in
     * one recvmsg (split again in read_datagrams), and on loopback a GSO
     * batch is not cut into datagrams at all. Older kernels refuse it. */
    setsockopt(ep->fd, SOL_UDP, UDP_GRO, &one, sizeof(one));
    qx_sockbuf_t sb;
    qx_sockbuf_set(ep->fd, UDP_BUF_BYTES, &sb);
    if (sb.short_ && w->id == 0)
        QX_WARN("quic: UDP socket buffers are %d KiB (receive) and %d KiB (send), not the "
                "%d KiB asked for: bursts may be dropped. Raise net.core.rmem_max and "
                "net.core.wmem_max, or grant CAP_NET_ADMIN",
                sb.rcv / 2 / 1024, sb.snd / 2 / 1024, UDP_BUF_BYTES / 1024);
    if (bind(ep->fd, addr, addrlen) == -1)
        goto fail;
    ep->boundlen = sizeof(ep->bound);
    if (getsockname(ep->fd, (struct sockaddr *)&ep->bound, &ep->boundlen) == -1)
        goto fail;
    *out = ep;
    return 0;

fail:
    QX_ERROR("server.listen: cannot bind UDP %s port %u: %s", name,
             ntohs(((const struct sockaddr_in *)addr)->sin_port), strerror(errno));
    if (ep->fd > 0)
        close(ep->fd);
    gnutls_hmac_deinit(ep->reset_mac, NULL);
    qx_qmem_del(ep->mem);
    free(ep);
    return QX_ERR_IO;
}

int qx_quic_ep_start(qx_quic_ep_t *ep)
{
    if (uv_poll_init(&ep->w->loop, &ep->poll, ep->fd) != 0)
        return QX_ERR_IO;
    uv_timer_init(&ep->w->loop, &ep->goaway);
    ep->poll_events = 0;
    ep_poll_update(ep);
    return 0;
}

static void on_goaway_final(uv_timer_t *t)
{
    qx_quic_ep_t *ep = qx_container_of(t, qx_quic_ep_t, goaway);
    for (qx_quic_conn_t *qc = LIST_FIRST(&ep->conns); qc; qc = LIST_NEXT(qc, link)) {
        if (qc->state == QX_QC_HANDSHAKE)
            qx_quic_conn_close(qc, 0);
        else if (qc->state < QX_QC_CLOSING)
            qx_h3_goaway(qc);
    }
}

/* Two steps, as RFC 9114 §5.2 suggests: a GOAWAY notice (clients stop
 * opening requests; requests already on the wire are still accepted), and
 * a moment later the final GOAWAY with the last request id; connections
 * close as their requests end. */
void qx_quic_ep_drain(qx_quic_ep_t *ep)
{
    ep->accepting = 0;
    for (qx_quic_conn_t *qc = LIST_FIRST(&ep->conns); qc; qc = LIST_NEXT(qc, link)) {
        if (qc->state == QX_QC_OPEN)
            qx_h3_goaway_notice(qc);
    }
    uv_timer_start(&ep->goaway, on_goaway_final, GOAWAY_NOTICE_MS, 0);
}

unsigned qx_quic_ep_nconns(const qx_quic_ep_t *ep)
{
    return ep ? ep->nconns : 0;
}

int qx_quic_ep_fd(const qx_quic_ep_t *ep)
{
    return ep->fd;
}

static void ep_closed(uv_handle_t *h)
{
    qx_quic_ep_t *ep = h->data;
    if (--ep->closing == 1) {
        close(ep->fd);
        gnutls_hmac_deinit(ep->reset_mac, NULL);
        qx_qmem_del(ep->mem); /* after every connection's libraries */
        qx_ipcount_free(&ep->per_ip);
        free(ep);
    }
}

void qx_quic_ep_close(qx_quic_ep_t *ep)
{
    if (ep == NULL)
        return;
    ep->accepting = 0;
    qx_quic_conn_t *qc;
    while ((qc = LIST_FIRST(&ep->conns)) != NULL) {
        ngtcp2_ccerr_set_application_error(&qc->ccerr, NGHTTP3_H3_NO_ERROR, NULL, 0);
        conn_del(qc);
    }
    /* closing counts the handles still to close, plus one. */
    ep->closing = 3;
    ep->poll.data = ep;
    ep->goaway.data = ep;
    uv_close((uv_handle_t *)&ep->poll, ep_closed);
    uv_close((uv_handle_t *)&ep->goaway, ep_closed);
}
