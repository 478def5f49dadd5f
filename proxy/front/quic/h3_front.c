/*
 * h3_front.c - the HTTP/3 front: nghttp3 on top of a QUIC connection, and
 * the qx_front_ops_t that lets an exchange answer on an HTTP/3 stream.
 *
 * nghttp3 validates requests per RFC 9114 §4.1.2 (pseudo-header set and
 * order, lowercase names, connection-specific fields, content-length
 * against DATA) and turns a malformed one into a stream error
 * H3_MESSAGE_ERROR through the stop_sending / reset_stream callbacks here.
 */
#include "base/log.h"
#include "base/qx.h"
#include "exchange/context.h"
#include "front/quic/quic_conn.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* ---- front ops ---------------------------------------------------------- */

static qx_quic_conn_t *conn_of(qx_exchange_t *ex)
{
    return ex->front;
}

/* The response's trailer fields in a HEADERS frame that ends the stream
 * (gRPC's grpc-status comes this way). The strings outlive the frame
 * (exchange.h). Returns 0, or -1: the stream ends without them. */
static int send_trailers(nghttp3_conn *conn, int64_t stream_id, const qx_exchange_t *ex)
{
    nghttp3_nv nva[QX_MAX_HEADERS];
    const uint8_t nocopy = NGHTTP3_NV_FLAG_NO_COPY_NAME | NGHTTP3_NV_FLAG_NO_COPY_VALUE;
    size_t n = QX_MIN(ex->nresp_trailers, (size_t)QX_MAX_HEADERS);
    for (size_t i = 0; i < n; i++) {
        const qx_hdr_t *t = &ex->resp_trailers[i];
        nva[i] =
            (nghttp3_nv){(uint8_t *)t->name, (uint8_t *)t->value, t->namelen, t->valuelen, nocopy};
    }
    return nghttp3_conn_submit_trailers(conn, stream_id, nva, n) == 0 ? 0 : -1;
}

static nghttp3_ssize read_data(nghttp3_conn *conn, int64_t stream_id, nghttp3_vec *vec,
                               size_t veccnt, uint32_t *pflags, void *conn_user_data,
                               void *stream_user_data)
{
    qx_exchange_t *ex = stream_user_data;
    struct iovec iov[2];
    (void)conn;
    (void)stream_id;
    (void)conn_user_data;
    if (ex == NULL) {
        *pflags |= NGHTTP3_DATA_FLAG_EOF;
        return 0;
    }
    int k = qx_ring_peek(&ex->resp, iov, SIZE_MAX);
    if (k > (int)veccnt)
        k = (int)veccnt;
    size_t total = 0;
    for (int i = 0; i < k; i++) {
        vec[i].base = iov[i].iov_base;
        vec[i].len = iov[i].iov_len;
        total += iov[i].iov_len;
    }
    qx_ring_mark_sent(&ex->resp, total);
    if (ex->resp_eof && qx_ring_unsent(&ex->resp) == 0) {
        *pflags |= NGHTTP3_DATA_FLAG_EOF;
        if (ex->nresp_trailers > 0 && send_trailers(conn, stream_id, ex) == 0)
            *pflags |= NGHTTP3_DATA_FLAG_NO_END_STREAM; /* the trailers end the stream */
    } else if (k == 0)
        return NGHTTP3_ERR_WOULDBLOCK;
    return k;
}

static int h3_respond(qx_exchange_t *ex, int status, const qx_hdr_t *hdrs, size_t n, int has_body)
{
    qx_quic_conn_t *qc = conn_of(ex);
    nghttp3_nv nva[QX_MAX_HEADERS + 1];
    char *st = ex->status_text;
    static const nghttp3_data_reader dr = {read_data};
    /* The strings outlive the HEADERS frame (exchange.h, respond): no copy. */
    const uint8_t nocopy = NGHTTP3_NV_FLAG_NO_COPY_NAME | NGHTTP3_NV_FLAG_NO_COPY_VALUE;

    if (status < 100 || status > 999 || n > QX_MAX_HEADERS)
        return QX_ERR_INVAL;
    st[0] = (char)('0' + status / 100);
    st[1] = (char)('0' + status / 10 % 10);
    st[2] = (char)('0' + status % 10);
    nva[0] = (nghttp3_nv){(uint8_t *)":status", (uint8_t *)st, 7, 3, nocopy};
    for (size_t i = 0; i < n; i++) {
        nva[i + 1] = (nghttp3_nv){(uint8_t *)hdrs[i].name, (uint8_t *)hdrs[i].value,
                                  hdrs[i].namelen, hdrs[i].valuelen, nocopy};
    }
    int rv = nghttp3_conn_submit_response(qc->h3, ex->stream_id, nva, n + 1, has_body ? &dr : NULL);
    if (rv != 0) {
        QX_DEBUG("h3: submit_response: %s", nghttp3_strerror(rv));
        return QX_ERR_PROTO;
    }
    qx_quic_conn_mark(qc);
    return 0;
}

static void h3_resume(qx_exchange_t *ex)
{
    qx_quic_conn_t *qc = conn_of(ex);
    nghttp3_conn_resume_stream(qc->h3, ex->stream_id);
    qx_quic_conn_mark(qc);
}

static void h3_consumed(qx_exchange_t *ex, size_t n)
{
    qx_quic_conn_t *qc = conn_of(ex);
    ex->front_uncredited -= QX_MIN((uint64_t)n, ex->front_uncredited);
    ngtcp2_conn_extend_max_stream_offset(qc->conn, ex->stream_id, n);
    ngtcp2_conn_extend_max_offset(qc->conn, n);
    qx_quic_conn_mark(qc);
}

static void h3_stop_reading(qx_exchange_t *ex)
{
    qx_quic_conn_t *qc = conn_of(ex);
    /* RFC 9114 §4.1: a complete response may come before the request body
     * ends; STOP_SENDING with H3_NO_ERROR asks the client to stop. */
    ngtcp2_conn_shutdown_stream_read(qc->conn, 0, ex->stream_id, NGHTTP3_H3_NO_ERROR);
    qx_quic_conn_mark(qc);
}

static void h3_abort(qx_exchange_t *ex)
{
    qx_quic_conn_t *qc = conn_of(ex);
    ngtcp2_conn_shutdown_stream(qc->conn, 0, ex->stream_id, NGHTTP3_H3_INTERNAL_ERROR);
    qx_quic_conn_mark(qc);
}

static const qx_front_ops_t h3_ops = {
    .proto = "h3",
    .proto_idx = QX_P_H3,
    .respond = h3_respond,
    .resume = h3_resume,
    .consumed = h3_consumed,
    .stop_reading = h3_stop_reading,
    .abort = h3_abort,
};

/* ---- exchange list ------------------------------------------------------ */

static void ex_link(qx_quic_conn_t *qc, qx_exchange_t *ex)
{
    ex->prev = NULL;
    ex->next = qc->exchanges;
    if (qc->exchanges)
        qc->exchanges->prev = ex;
    qc->exchanges = ex;
}

static void ex_unlink(qx_quic_conn_t *qc, qx_exchange_t *ex)
{
    if (ex->h3_fin_due) {
        ex->h3_fin_due = 0;
        qc->fin_due--;
    }
    if (ex->prev)
        ex->prev->next = ex->next;
    else
        qc->exchanges = ex->next;
    if (ex->next)
        ex->next->prev = ex->prev;
    ex->prev = ex->next = NULL;
}

/* A draining connection closes once its last request is done. */
static void maybe_close_drained(qx_quic_conn_t *qc)
{
    if (qc->state == QX_QC_GOAWAY && qc->exchanges == NULL) {
        ngtcp2_ccerr_set_application_error(&qc->ccerr, NGHTTP3_H3_NO_ERROR, NULL, 0);
        qx_quic_conn_close(qc, 0);
    }
}

/* ---- nghttp3 callbacks -------------------------------------------------- */

static int h3_acked_stream_data(nghttp3_conn *conn, int64_t stream_id, uint64_t datalen,
                                void *user_data, void *stream_user_data)
{
    (void)conn;
    (void)stream_id;
    (void)user_data;
    if (stream_user_data)
        qx_exchange_resp_acked(stream_user_data, (size_t)datalen);
    return 0;
}

static int h3_stream_close_cb(nghttp3_conn *conn, int64_t stream_id, uint64_t app_error_code,
                              void *user_data, void *stream_user_data)
{
    qx_quic_conn_t *qc = user_data;
    qx_exchange_t *ex = stream_user_data;
    (void)conn;
    if (ex) {
        /* Bytes the exchange held and will never credit: back to the
         * connection window (the stream's own is gone with it). */
        if (ex->front_uncredited > 0)
            ngtcp2_conn_extend_max_offset(qc->conn, ex->front_uncredited);
        ex_unlink(qc, ex);
        qx_exchange_front_closed(ex, app_error_code != NGHTTP3_H3_NO_ERROR);
    }
    if (ngtcp2_is_bidi_stream(stream_id))
        ngtcp2_conn_extend_max_streams_bidi(qc->conn, 1);
    maybe_close_drained(qc);
    return 0;
}

static int h3_recv_data(nghttp3_conn *conn, int64_t stream_id, const uint8_t *data, size_t datalen,
                        void *user_data, void *stream_user_data)
{
    qx_quic_conn_t *qc = user_data;
    (void)conn;
    qc->rx_passed += datalen; /* credited here or by the exchange, not by the caller */
    if (stream_user_data == NULL) {
        ngtcp2_conn_extend_max_stream_offset(qc->conn, stream_id, datalen);
        ngtcp2_conn_extend_max_offset(qc->conn, datalen);
        return 0;
    }
    qx_exchange_t *ex = stream_user_data;
    ex->front_uncredited += datalen;
    qx_exchange_body(ex, data, datalen);
    return 0;
}

static int h3_deferred_consume(nghttp3_conn *conn, int64_t stream_id, size_t consumed,
                               void *user_data, void *stream_user_data)
{
    qx_quic_conn_t *qc = user_data;
    (void)conn;
    (void)stream_user_data;
    ngtcp2_conn_extend_max_stream_offset(qc->conn, stream_id, consumed);
    ngtcp2_conn_extend_max_offset(qc->conn, consumed);
    return 0;
}

static int h3_begin_headers(nghttp3_conn *conn, int64_t stream_id, void *user_data,
                            void *stream_user_data)
{
    qx_quic_conn_t *qc = user_data;
    (void)stream_user_data;
    qx_exchange_t *ex = qx_exchange_new(qx_quic_conn_worker(qc), &h3_ops, qc, stream_id,
                                        (const struct sockaddr *)&qc->remote);
    if (ex == NULL)
        return NGHTTP3_ERR_CALLBACK_FAILURE;
    ex->conn_tunnels = &qc->ws_tunnels;
    ex_link(qc, ex);
    nghttp3_conn_set_stream_user_data(conn, stream_id, ex);
    return 0;
}

static int h3_recv_header(nghttp3_conn *conn, int64_t stream_id, int32_t token, nghttp3_rcbuf *name,
                          nghttp3_rcbuf *value, uint8_t flags, void *user_data,
                          void *stream_user_data)
{
    qx_exchange_t *ex = stream_user_data;
    (void)conn;
    (void)stream_id;
    (void)token;
    (void)flags;
    (void)user_data;
    if (ex == NULL)
        return 0;
    nghttp3_vec n = nghttp3_rcbuf_get_buf(name);
    nghttp3_vec v = nghttp3_rcbuf_get_buf(value);
    /* Too many or too large: remembered, answered with 431 at the end. */
    qx_exchange_header(ex, (const char *)n.base, n.len, (const char *)v.base, v.len);
    return 0;
}

/* A request trailer field: kept for an upstream that takes them (h2c). */
static int h3_recv_trailer(nghttp3_conn *conn, int64_t stream_id, int32_t token,
                           nghttp3_rcbuf *name, nghttp3_rcbuf *value, uint8_t flags,
                           void *user_data, void *stream_user_data)
{
    (void)conn;
    (void)stream_id;
    (void)token;
    (void)flags;
    (void)user_data;
    if (stream_user_data == NULL)
        return 0;
    nghttp3_vec n = nghttp3_rcbuf_get_buf(name);
    nghttp3_vec v = nghttp3_rcbuf_get_buf(value);
    qx_exchange_trailer(stream_user_data, (const char *)n.base, n.len, (const char *)v.base, v.len);
    return 0;
}

static int h3_end_headers(nghttp3_conn *conn, int64_t stream_id, int fin, void *user_data,
                          void *stream_user_data)
{
    qx_quic_conn_t *qc = user_data;
    (void)conn;
    (void)stream_id;
    if (stream_user_data) {
        qx_exchange_t *ex = stream_user_data;
        /* Headers completed in 0-RTT: the early-data policy applies. */
        ex->early = qc->rx_early && qc->state == QX_QC_HANDSHAKE;
        qx_exchange_headers_done(ex, qc->sni[0] ? qc->sni : NULL, fin);
    }
    return 0;
}

static int h3_end_stream(nghttp3_conn *conn, int64_t stream_id, void *user_data,
                         void *stream_user_data)
{
    (void)conn;
    (void)stream_id;
    (void)user_data;
    if (stream_user_data)
        qx_exchange_body_end(stream_user_data);
    return 0;
}

static int h3_stop_sending(nghttp3_conn *conn, int64_t stream_id, uint64_t app_error_code,
                           void *user_data, void *stream_user_data)
{
    qx_quic_conn_t *qc = user_data;
    (void)conn;
    (void)stream_user_data;
    ngtcp2_conn_shutdown_stream_read(qc->conn, 0, stream_id, app_error_code);
    return 0;
}

static int h3_reset_stream(nghttp3_conn *conn, int64_t stream_id, uint64_t app_error_code,
                           void *user_data, void *stream_user_data)
{
    qx_quic_conn_t *qc = user_data;
    (void)conn;
    (void)stream_user_data;
    ngtcp2_conn_shutdown_stream_write(qc->conn, 0, stream_id, app_error_code);
    return 0;
}

static const nghttp3_callbacks h3_callbacks = {
    .acked_stream_data = h3_acked_stream_data,
    .stream_close = h3_stream_close_cb,
    .recv_data = h3_recv_data,
    .deferred_consume = h3_deferred_consume,
    .begin_headers = h3_begin_headers,
    .recv_header = h3_recv_header,
    .end_headers = h3_end_headers,
    .recv_trailer = h3_recv_trailer,
    .stop_sending = h3_stop_sending,
    .end_stream = h3_end_stream,
    .reset_stream = h3_reset_stream,
};

/* ---- set-up and teardown ------------------------------------------------ */

int qx_h3_setup(qx_quic_conn_t *qc)
{
    nghttp3_settings settings;
    int64_t ctrl, enc, dec;

    if (qc->h3)
        return 0;
    nghttp3_settings_default(&settings);
    settings.max_field_section_size = QX_MAX_HEADER_BYTES;
    settings.qpack_max_dtable_capacity = 4096;
    settings.qpack_blocked_streams = 100;
    /* Response fields are encoded from the static table and as literals:
     * the encoder's dynamic table held ~5 KiB on every idle connection
     * (entries, the blocked-streams list) and saved little on a proxy's
     * varying responses. The decoder's table stays for the clients. */
    settings.qpack_encoder_max_dtable_capacity = 0;
    /* WebSocket over HTTP/3 (RFC 9220): SETTINGS_ENABLE_CONNECT_PROTOCOL
     * goes out, and nghttp3 (1.8 has the setting) then accepts :protocol
     * on CONNECT; the exchange turns it into an HTTP/1.1 upgrade. */
    settings.enable_connect_protocol = 1;
    if (nghttp3_conn_server_new(&qc->h3, &h3_callbacks, &settings, qx_quic_conn_h3_mem(qc), qc) !=
        0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    /* What the transport parameters granted; ngtcp2 raises it as streams
     * close (extend_max_remote_streams_bidi), never lowers it. */
    nghttp3_conn_set_max_client_streams_bidi(qc->h3, qc->max_streams);
    if (ngtcp2_conn_open_uni_stream(qc->conn, &ctrl, NULL) != 0 ||
        nghttp3_conn_bind_control_stream(qc->h3, ctrl) != 0 ||
        ngtcp2_conn_open_uni_stream(qc->conn, &enc, NULL) != 0 ||
        ngtcp2_conn_open_uni_stream(qc->conn, &dec, NULL) != 0 ||
        nghttp3_conn_bind_qpack_streams(qc->h3, enc, dec) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
}

void qx_h3_teardown(qx_quic_conn_t *qc)
{
    while (qc->exchanges) {
        qx_exchange_t *ex = qc->exchanges;
        ex_unlink(qc, ex);
        if (qc->h3)
            nghttp3_conn_set_stream_user_data(qc->h3, ex->stream_id, NULL);
        qx_exchange_front_closed(ex, 1);
    }
    if (qc->h3) {
        nghttp3_conn_del(qc->h3);
        qc->h3 = NULL;
    }
}

void qx_h3_fin_declined(qx_quic_conn_t *qc, int64_t stream_id)
{
    for (qx_exchange_t *ex = qc->exchanges; ex; ex = ex->next) {
        if (ex->stream_id == stream_id) {
            if (!ex->h3_fin_due) {
                ex->h3_fin_due = 1;
                qc->fin_due++;
            }
            return;
        }
    }
}

int64_t qx_h3_fin_take(qx_quic_conn_t *qc)
{
    for (qx_exchange_t *ex = qc->fin_due ? qc->exchanges : NULL; ex; ex = ex->next) {
        if (ex->h3_fin_due) {
            ex->h3_fin_due = 0;
            qc->fin_due--;
            return ex->stream_id;
        }
    }
    return -1;
}

void qx_h3_handshake_done(qx_quic_conn_t *qc)
{
    for (qx_exchange_t *ex = qc->exchanges, *next; ex; ex = next) {
        next = ex->next; /* releasing may answer and end it */
        if (ex->held)
            qx_exchange_release_held(ex);
    }
    qx_quic_conn_mark(qc);
}

void qx_h3_goaway_notice(qx_quic_conn_t *qc)
{
    if (qc->h3)
        nghttp3_conn_submit_shutdown_notice(qc->h3);
    qx_quic_conn_mark(qc);
}

void qx_h3_goaway(qx_quic_conn_t *qc)
{
    qx_quic_conn_goaway(qc);
    if (qc->h3)
        nghttp3_conn_shutdown(qc->h3);
    qx_quic_conn_mark(qc);
    maybe_close_drained(qc);
}

/* ---- ngtcp2 callbacks for HTTP/3 ---------------------------------------- */

int qx_h3_recv_stream_data(ngtcp2_conn *conn, uint32_t flags, int64_t stream_id, uint64_t offset,
                           const uint8_t *data, size_t datalen, void *user_data,
                           void *stream_user_data)
{
    qx_quic_conn_t *qc = user_data;
    (void)stream_user_data;
    /* 0-RTT stream data can come before the 1-RTT key (which is where
     * HTTP/3 is normally set up); the client's transport parameters are
     * known by then, so the control streams can open. */
    if (qc->h3 == NULL) {
        qx_quic_conn_read_sni(qc);
        if (qx_h3_setup(qc) != 0)
            return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    if (ngtcp2_is_bidi_stream(stream_id) == 0) {
        uint64_t h3err = qx_h3_ctrl_feed(&qc->h3ctrl, stream_id, offset, data, datalen);
        if (h3err != 0) {
            QX_DEBUG("h3: control stream %" PRId64 ": MAX_PUSH_ID lowered", stream_id);
            ngtcp2_ccerr_set_application_error(&qc->ccerr, h3err, NULL, 0);
            return NGTCP2_ERR_CALLBACK_FAILURE;
        }
    }
    qc->rx_early = (flags & NGTCP2_STREAM_DATA_FLAG_0RTT) != 0;
    qc->rx_passed = 0;
    nghttp3_ssize n = nghttp3_conn_read_stream(qc->h3, stream_id, data, datalen,
                                               flags & NGTCP2_STREAM_DATA_FLAG_FIN);
    qc->rx_early = 0;
    if (n == NGHTTP3_ERR_MALFORMED_HTTP_MESSAGING || n == NGHTTP3_ERR_MALFORMED_HTTP_HEADER) {
        /* A malformed request (e.g. content-length disagreeing with the
         * DATA) is a stream error, not a connection error (RFC 9114
         * §4.1.2): reset this stream, keep the connection, and credit the
         * bytes so flow control does not stall; but only those nobody else
         * credits: body bytes h3_recv_data took in this read are credited
         * there, by the exchange, or when the stream closes, and crediting
         * them twice would let the client send past the connection window,
         * a little more with every malformed stream. */
        QX_DEBUG("h3: stream %" PRId64 ": malformed request: %s", stream_id,
                 nghttp3_strerror((int)n));
        uint64_t rest = datalen > qc->rx_passed ? datalen - qc->rx_passed : 0;
        ngtcp2_conn_shutdown_stream(conn, 0, stream_id, NGHTTP3_H3_MESSAGE_ERROR);
        ngtcp2_conn_extend_max_stream_offset(conn, stream_id, rest);
        ngtcp2_conn_extend_max_offset(conn, rest);
        return 0;
    }
    if (n < 0) {
        QX_DEBUG("h3: read_stream %" PRId64 ": %s", stream_id, nghttp3_strerror((int)n));
        ngtcp2_ccerr_set_application_error(&qc->ccerr,
                                           nghttp3_err_infer_quic_app_error_code((int)n), NULL, 0);
        return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    ngtcp2_conn_extend_max_stream_offset(conn, stream_id, (uint64_t)n);
    ngtcp2_conn_extend_max_offset(conn, (uint64_t)n);
    return 0;
}

int qx_h3_acked_stream_data_offset(ngtcp2_conn *conn, int64_t stream_id, uint64_t offset,
                                   uint64_t datalen, void *user_data, void *stream_user_data)
{
    qx_quic_conn_t *qc = user_data;
    (void)conn;
    (void)offset;
    (void)stream_user_data;
    if (qc->h3 && nghttp3_conn_add_ack_offset(qc->h3, stream_id, datalen) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
}

int qx_h3_stream_close(ngtcp2_conn *conn, uint32_t flags, int64_t stream_id,
                       uint64_t app_error_code, void *user_data, void *stream_user_data)
{
    qx_quic_conn_t *qc = user_data;
    (void)stream_user_data;
    /* The stream is still known to ngtcp2 here: its lost packets go into
     * the connection's path statistics. */
    qc->pkts_lost += ngtcp2_conn_get_stream_loss_count(conn, stream_id);
    if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET))
        app_error_code = NGHTTP3_H3_NO_ERROR;
    if (qc->h3 == NULL)
        return 0;
    int rv = nghttp3_conn_close_stream(qc->h3, stream_id, app_error_code);
    if (rv != 0 && rv != NGHTTP3_ERR_STREAM_NOT_FOUND) {
        ngtcp2_ccerr_set_application_error(&qc->ccerr, nghttp3_err_infer_quic_app_error_code(rv),
                                           NULL, 0);
        return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int shutdown_read(qx_quic_conn_t *qc, int64_t stream_id)
{
    if (qc->h3 && nghttp3_conn_shutdown_stream_read(qc->h3, stream_id) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
}

/* The client cancelled its request (RESET_STREAM): the request can never
 * complete, so the whole stream ends now (and with it the exchange and its
 * upstream connection) instead of waiting for the request timeout. */
int qx_h3_stream_reset(ngtcp2_conn *conn, int64_t stream_id, uint64_t final_size,
                       uint64_t app_error_code, void *user_data, void *stream_user_data)
{
    qx_quic_conn_t *qc = user_data;
    (void)final_size;
    (void)app_error_code;
    (void)stream_user_data;
    if (shutdown_read(qc, stream_id) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    if (ngtcp2_is_bidi_stream(stream_id))
        ngtcp2_conn_shutdown_stream(conn, 0, stream_id, NGHTTP3_H3_REQUEST_CANCELLED);
    return 0;
}

int qx_h3_stream_stop_sending(ngtcp2_conn *conn, int64_t stream_id, uint64_t app_error_code,
                              void *user_data, void *stream_user_data)
{
    (void)conn;
    (void)app_error_code;
    (void)stream_user_data;
    return shutdown_read(user_data, stream_id);
}

int qx_h3_extend_max_remote_streams_bidi(ngtcp2_conn *conn, uint64_t max_streams, void *user_data)
{
    qx_quic_conn_t *qc = user_data;
    (void)conn;
    if (qc->h3)
        nghttp3_conn_set_max_client_streams_bidi(qc->h3, max_streams);
    return 0;
}

int qx_h3_extend_max_stream_data(ngtcp2_conn *conn, int64_t stream_id, uint64_t max_data,
                                 void *user_data, void *stream_user_data)
{
    qx_quic_conn_t *qc = user_data;
    (void)conn;
    (void)max_data;
    (void)stream_user_data;
    if (qc->h3 && nghttp3_conn_unblock_stream(qc->h3, stream_id) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
}
