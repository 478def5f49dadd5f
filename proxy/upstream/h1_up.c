/* h1_up.c - the HTTP/1.1 upstream codec (see h1_up.h and upstream.h). */
#include "upstream/h1_up.h"

#include "base/qx.h"
#include "base/str.h"
#include "llhttp.h"
#include "upstream/h1.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The codec's part of a stream, in qx_up_stream_t.priv. */
typedef struct h1_up {
    llhttp_t parser;
    qx_upconn_t *uc; /* NULL: none, or given back */
    char *head;      /* the request head, in the request's arena (kept for a replay) */
    size_t headlen;
    int chunked;
    int is_head;
    int head_sent;
    int writing;
    size_t wpayload; /* body bytes in the pending write */
    int wterm;       /* the pending write ends the request (chunked terminator) */
    int req_done;    /* head + whole body (+ terminator) written */
    int wfailed;     /* a write failed: credited at release unless the request is replayed */
    size_t wfailed_payload;
    uint64_t req_body_sent;
    int resp_any; /* any byte came back */
    int head_done;
    int in_value;
    int complete; /* llhttp saw the message end */
    uint64_t resp_body;
    int websocket; /* the request asks for an upgrade; a 101 may accept it */
    int up_fin;    /* the tunnel's upstream end: EOF read */
    int shut;      /* the tunnel's client end: FIN sent up */
    char chunkhdr[24];
    /* A chunked response's trailer section, in the request's arena (the
     * head's storage must not move once the front points at it). */
    char *tb;
    qx_up_field_t *tf;
    uint32_t tblen, ntf;
    int in_tvalue;
} h1_up_t;

#define H1_TRAILER_BYTES 4096 /* trailer names and values kept, at most; more are dropped */
#define H1_TRAILER_FIELDS 16

_Static_assert(sizeof(h1_up_t) <= QX_UP_PRIV, "h1_up_t must fit qx_up_stream_t.priv");

static const qx_upconn_cb_t conn_cb;
static const llhttp_settings_t parser_settings;
static void pump_write(qx_up_stream_t *st);

static h1_up_t *h1(qx_up_stream_t *st)
{
    return (h1_up_t *)(void *)st->priv.bytes;
}

qx_upconn_t *qx_h1_up_conn(qx_up_stream_t *st)
{
    return st->ops == &qx_h1_upstream_ops ? h1(st)->uc : NULL;
}

/* Gives the connection back: to the idle list when |reusable|. A pending
 * write dies with it; its body bytes are reported consumed now, as no
 * write callback will. */
static void release_conn(qx_up_stream_t *st, int reusable)
{
    h1_up_t *h = h1(st);
    if (h->uc == NULL)
        return;
    qx_upconn_t *uc = h->uc;
    h->uc = NULL;
    if (h->wfailed) {
        h->wfailed = 0;
        st->req->ack = st->req->sent = st->req->fill;
        if (h->wfailed_payload > 0)
            st->sink->consumed(st->user, h->wfailed_payload);
    }
    if (h->writing) {
        h->writing = 0;
        st->req->ack = st->req->sent;
        if (h->wpayload > 0)
            st->sink->consumed(st->user, h->wpayload);
        h->wpayload = 0;
        reusable = 0;
    }
    if (reusable)
        uc->nrequests++;
    qx_pool_release(uc, reusable);
}

/* How safely the request may go again after the connection broke (a
 * reused keep-alive connection the backend closed just as we picked it):
 * not once response bytes came or body bytes went; only when idempotent
 * once the head may have reached the app (RFC 9110 §9.2.2). */
static int replay(const h1_up_t *h)
{
    if (h->resp_any || h->req_body_sent > 0 || (h->writing && h->wpayload > 0))
        return QX_UP_REPLAY_NONE;
    return h->head_sent ? QX_UP_REPLAY_IDEMPOTENT : QX_UP_REPLAY_ANY;
}

/* ---- the ops ------------------------------------------------------------ */

static int h1_open(qx_up_stream_t *st, const qx_up_req_t *req, qx_arena_t *arena)
{
    h1_up_t *h = h1(st);
    memset(h, 0, sizeof(*h));
    st->paused = 0;
    st->tunnel = 0;
    qx_up_head_reset(st, arena);
    h->is_head = req->is_head;
    h->websocket = req->websocket;
    size_t cap = 1024 + arena->used;
    h->head = qx_arena_alloc(arena, cap);
    if (h->head == NULL) {
        arena->cap += cap; /* the head's own copy is not the client's fault */
        h->head = qx_arena_alloc(arena, cap);
    }
    ssize_t n = h->head ? qx_h1_build_request(h->head, cap, req, &h->chunked) : QX_ERR_NOMEM;
    if (n < 0)
        return (int)n;
    h->headlen = (size_t)n;
    return 0;
}

static int h1_connect(qx_up_stream_t *st, qx_pool_t *pool, int fresh_only, int *reused)
{
    qx_upconn_t *uc = NULL;
    int rv = qx_pool_checkout(pool, st, &conn_cb, fresh_only, &uc, reused);
    h1(st)->uc = rv == 0 ? uc : NULL;
    return rv;
}

static void h1_start(qx_up_stream_t *st)
{
    h1_up_t *h = h1(st);
    llhttp_init(&h->parser, HTTP_RESPONSE, &parser_settings);
    h->parser.data = st;
    st->nf = 0;
    st->hblen = 0;
    h->in_value = 0;
    qx_upconn_read_start(h->uc);
    pump_write(st);
}

static void h1_send(qx_up_stream_t *st)
{
    pump_write(st);
}

static int h1_window(qx_up_stream_t *st)
{
    h1_up_t *h = h1(st);
    if (!st->paused || h->uc == NULL || h->up_fin || qx_ring_free(st->resp) < QX_UP_READ_MIN)
        return 0;
    st->paused = 0;
    qx_upconn_read_start(h->uc);
    return 1;
}

static void h1_rewind(qx_up_stream_t *st)
{
    h1_up_t *h = h1(st);
    h->writing = 0;
    h->wpayload = 0;
    h->wfailed = 0;
    h->head_sent = 0;
    h->req_done = 0; /* the head (and terminator) go again on the new connection */
    h->wterm = 0;
    st->req->sent = st->req->ack;
    qx_upconn_t *uc = h->uc;
    h->uc = NULL;
    if (uc)
        qx_pool_release(uc, 0);
}

static void h1_release(qx_up_stream_t *st)
{
    release_conn(st, 0); /* a connection still ours is mid-message */
}

const qx_upstream_ops_t qx_h1_upstream_ops = {
    .proto = "http/1.1",
    .open = h1_open,
    .connect = h1_connect,
    .start = h1_start,
    .send = h1_send,
    .window = h1_window,
    .rewind = h1_rewind,
    .release = h1_release,
};

/* ---- request: head and body --------------------------------------------- */

/* The client ended its side of the tunnel, and all it sent went up: so
 * does the app's connection (FIN), which may still answer (a WebSocket
 * close reply). The connection goes once both ends are done. Returns
 * nonzero when the stream failed or ended. */
static int tunnel_fin(qx_up_stream_t *st)
{
    h1_up_t *h = h1(st);
    if (h->shut || h->uc == NULL)
        return 0;
    h->shut = 1;
    if (h->up_fin) {
        release_conn(st, 0);
        return 1;
    }
    if (qx_upconn_shutdown(h->uc) != 0) {
        st->sink->error(st->user, QX_UP_E_BROKEN, QX_UP_REPLAY_NONE, "shutdown failed");
        return 1;
    }
    return 0;
}

/* Writes what can go up now: the head once, then body bytes from the window
 * (framed when chunked), then the terminator. One write in flight. */
static void pump_write(qx_up_stream_t *st)
{
    h1_up_t *h = h1(st);
    uv_buf_t b[6];
    unsigned n = 0;
    struct iovec iov[2];
    size_t payload = 0;
    int term = 0;

    if (h->uc == NULL || h->writing || h->req_done)
        return;
    if (!h->head_sent)
        b[n++] = uv_buf_init(h->head, (unsigned)h->headlen);
    int k = qx_ring_peek(st->req, iov, SIZE_MAX);
    for (int i = 0; i < k; i++)
        payload += iov[i].iov_len;
    if (payload > 0) {
        if (h->chunked) {
            int m = snprintf(h->chunkhdr, sizeof(h->chunkhdr), "%zx\r\n", payload);
            b[n++] = uv_buf_init(h->chunkhdr, (unsigned)m);
        }
        for (int i = 0; i < k; i++)
            b[n++] = uv_buf_init(iov[i].iov_base, (unsigned)iov[i].iov_len);
        if (h->chunked)
            b[n++] = uv_buf_init("\r\n", 2);
    }
    if (st->req_fin) {
        term = 1;
        if (h->chunked)
            b[n++] = uv_buf_init("0\r\n\r\n", 5);
    }
    if (n == 0) {
        if (term && st->tunnel) {
            h->req_done = 1;
            tunnel_fin(st);
        }
        return;
    }
    int rv = qx_upconn_write(h->uc, b, n);
    if (rv < 0) {
        st->sink->error(st->user, QX_UP_E_BROKEN, replay(h), "write failed");
        return;
    }
    h->head_sent = 1;
    h->writing = 1;
    h->wpayload = payload;
    h->wterm = term;
    qx_ring_mark_sent(st->req, payload);
    if (rv == 1)
        conn_cb.on_write(st, 0); /* all written at once: no callback follows */
}

static void uc_on_write(void *user, int status)
{
    qx_up_stream_t *st = user;
    h1_up_t *h = h1(st);
    size_t payload = h->wpayload;
    h->writing = 0;
    h->wpayload = 0;
    if (status != 0) {
        /* Give the bytes back to the window accounting before deciding:
         * a replay sends them again; otherwise release() credits them. */
        st->req->sent -= payload;
        h->wfailed = 1;
        h->wfailed_payload = payload;
        st->sink->error(st->user, QX_UP_E_BROKEN, replay(h), "write failed");
        return;
    }
    qx_ring_mark_acked(st->req, payload);
    h->req_body_sent += payload;
    if (payload > 0)
        st->sink->consumed(st->user, payload);
    if (h->wterm)
        h->req_done = 1;
    if (h->req_done && st->tunnel && tunnel_fin(st) != 0)
        return;
    if (h->req_done && h->complete) {
        /* The response was complete before the body finished going up. */
        release_conn(st, llhttp_should_keep_alive(&h->parser));
        return;
    }
    pump_write(st);
}

static void uc_on_connect(void *user, int status)
{
    qx_up_stream_t *st = user;
    st->sink->connected(st->user, status); /* a failed one is still ours to release */
}

/* ---- response ----------------------------------------------------------- */

/* Tunnel bytes from the app: into the response window as they are (read
 * there in place, or copied from the scratch buffer after the 101's head);
 * reading stops while the window is short of room, so a client that stops
 * reading holds at most one window. EOF ends the response; the connection
 * stays while the client's side may still send. */
static void tunnel_read(qx_up_stream_t *st, ssize_t nread, const char *buf)
{
    h1_up_t *h = h1(st);
    qx_ring_t *r = st->resp;
    if (nread < 0) {
        if (nread != UV_EOF) {
            st->sink->error(st->user, QX_UP_E_BROKEN, QX_UP_REPLAY_NONE, uv_strerror((int)nread));
            return;
        }
        h->up_fin = h->complete = 1;
        qx_upconn_read_stop(h->uc);
        st->sink->end(st->user, NULL, 0);
        if (h->uc && h->req_done)
            release_conn(st, 0);
        return;
    }
    size_t len = (size_t)nread;
    if (len == 0)
        return;
    if (len > qx_ring_free(r)) { /* reads are sized so this cannot be (uc_read_buf) */
        st->sink->error(st->user, QX_UP_E_OVERFLOW, QX_UP_REPLAY_NONE, "tunnel window overflow");
        return;
    }
    const uint8_t *src = (const uint8_t *)buf;
    if (src == r->data + (r->fill & (r->cap - 1)))
        r->fill += len;
    else
        qx_ring_write(r, src, len);
    h->resp_body += len;
    st->sink->body(st->user, len);
    if (h->uc && qx_ring_free(r) < QX_UP_READ_MIN) {
        st->paused = 1;
        qx_upconn_read_stop(h->uc);
    }
}

static void uc_on_read(void *user, ssize_t nread, const char *buf)
{
    qx_up_stream_t *st = user;
    h1_up_t *h = h1(st);
    if (st->tunnel) {
        if (nread > 0)
            st->sink->progress(st->user);
        tunnel_read(st, nread, buf);
        return;
    }
    if (nread < 0) {
        if (nread == UV_EOF && h->resp_any && h->head_done) {
            /* EOF ends a close-delimited body; llhttp_finish says whether
             * the message was allowed to end this way. */
            llhttp_finish(&h->parser);
        }
        if (nread == UV_EOF && h->complete) {
            /* Close-delimited body: EOF was its end. */
            release_conn(st, 0);
            return;
        }
        st->sink->error(st->user, QX_UP_E_BROKEN, replay(h),
                        nread == UV_EOF ? "closed before the response was complete"
                                        : uv_strerror((int)nread));
        return;
    }
    h->resp_any = 1;
    st->sink->progress(st->user);
    llhttp_errno_t err = llhttp_execute(&h->parser, buf, (size_t)nread);
    if (h->uc == NULL)
        return; /* a callback failed the stream */
    if (st->tunnel) {
        /* The 101 ended the HTTP part: what came after it is the app's
         * first tunnel bytes. */
        const char *pos = llhttp_get_error_pos(&h->parser);
        if (pos != NULL && pos < buf + nread)
            tunnel_read(st, buf + nread - pos, pos);
        return;
    }
    if (err == HPE_PAUSED) {
        /* Paused at the end of the message: bytes after it on a keep-alive
         * connection are a confused backend; never reuse that socket.
         * Reusable only when the request went up whole, too. */
        const char *pos = llhttp_get_error_pos(&h->parser);
        int extra = pos != NULL && pos < buf + nread;
        release_conn(st, h->req_done && !extra && llhttp_should_keep_alive(&h->parser));
        return;
    }
    if (err != HPE_OK) {
        /* llhttp's reason ("Invalid status code", "Expected HTTP/") for the
         * log line, then its error name */
        char why[160];
        const char *reason = llhttp_get_error_reason(&h->parser);
        snprintf(why, sizeof(why), "%s%s%s%s", reason ? reason : "", reason ? " (" : "",
                 llhttp_errno_name(err), reason ? ")" : "");
        st->sink->error(st->user, QX_UP_E_PROTO, QX_UP_REPLAY_NONE, why);
        return;
    }
    if (!st->resp_fits && st->resp->data && qx_ring_free(st->resp) < QX_UP_READ_MIN) {
        st->paused = 1;
        qx_upconn_read_stop(h->uc);
    }
}

/* Once the response head is through, body bytes are read straight into the
 * response window, where the front sends them from (p_on_body only moves
 * them back over chunk framing). Heads, and windows with little contiguous
 * room, use the worker's scratch buffer, never more than the window can
 * take: a read's body always fits. */
static void uc_read_buf(void *user, uv_buf_t *buf)
{
    qx_up_stream_t *st = user;
    size_t room = QX_UP_READ;
    if (st->resp->data) {
        qx_ring_t *r = st->resp;
        size_t free = qx_ring_free(r);
        size_t off = (size_t)(r->fill & (r->cap - 1));
        size_t contig = QX_MIN(r->cap - off, free);
        if (h1(st)->head_done && (contig >= QX_UP_READ_MIN || contig == free) && contig > 0) {
            *buf = uv_buf_init((char *)r->data + off, (unsigned)contig);
            return;
        }
        room = QX_MIN(room, free);
    }
    if (*st->scratch == NULL && (*st->scratch = malloc(QX_UP_READ)) == NULL)
        return; /* the connection's own small buffer */
    *buf = uv_buf_init((char *)*st->scratch, (unsigned)room);
}

static const qx_upconn_cb_t conn_cb = {uc_on_connect, uc_on_write, uc_on_read, uc_read_buf};

/* Trailer bytes into the arena's trailer buffer; a section larger than
 * H1_TRAILER_BYTES or H1_TRAILER_FIELDS loses the fields past it (the
 * body is complete and correct; only metadata is cut). */
static int trailer_piece(qx_up_stream_t *st, int value, const char *at, size_t len)
{
    h1_up_t *h = h1(st);
    if (h->tb == NULL) {
        h->tb = qx_arena_alloc(st->arena, H1_TRAILER_BYTES);
        h->tf = qx_arena_alloc(st->arena, H1_TRAILER_FIELDS * sizeof(*h->tf));
        if (h->tb == NULL || h->tf == NULL) {
            h->tb = NULL;
            return 0;
        }
    }
    if (!value && (h->in_tvalue || h->ntf == 0)) {
        if (h->ntf == H1_TRAILER_FIELDS)
            return 0;
        h->tf[h->ntf++] = (qx_up_field_t){h->tblen, 0, h->tblen, 0};
        h->in_tvalue = 0;
    }
    if (h->ntf == 0 || h->tblen + len > H1_TRAILER_BYTES)
        return 0;
    qx_up_field_t *f = &h->tf[h->ntf - 1];
    if (value && !h->in_tvalue) {
        h->in_tvalue = 1;
        f->value_off = h->tblen;
    }
    memcpy(h->tb + h->tblen, at, len);
    h->tblen += (uint32_t)len;
    if (value)
        f->value_len += (uint32_t)len;
    else
        f->name_len += (uint32_t)len;
    return 0;
}

/* The response is complete: its trailer section, if any, goes with
 * sink->end (the user copies and filters it). */
static void trailers_end(qx_up_stream_t *st)
{
    h1_up_t *h = h1(st);
    qx_hdr_t t[H1_TRAILER_FIELDS];
    size_t n = 0;
    for (uint32_t i = 0; h->tb != NULL && i < h->ntf; i++) {
        const qx_up_field_t *f = &h->tf[i];
        if (f->name_len > 0)
            t[n++] =
                (qx_hdr_t){h->tb + f->name_off, f->name_len, h->tb + f->value_off, f->value_len};
    }
    st->sink->end(st->user, n ? t : NULL, n);
}

static int p_on_header_field(llhttp_t *p, const char *at, size_t len)
{
    qx_up_stream_t *st = p->data;
    h1_up_t *h = h1(st);
    if (h->head_done)
        return trailer_piece(st, 0, at, len); /* hb must not move (sink->head) */
    if (h->in_value || st->nf == 0) {
        if (qx_up_field_add(st) == NULL)
            return -1;
        h->in_value = 0;
    }
    if (qx_up_head_append(st, at, len) != 0)
        return -1;
    st->f[st->nf - 1].name_len += (uint32_t)len;
    return 0;
}

static int p_on_header_value(llhttp_t *p, const char *at, size_t len)
{
    qx_up_stream_t *st = p->data;
    h1_up_t *h = h1(st);
    if (h->head_done)
        return trailer_piece(st, 1, at, len);
    qx_up_field_t *f = &st->f[st->nf - 1];
    if (!h->in_value) {
        h->in_value = 1;
        f->value_off = (uint32_t)st->hblen;
    }
    if (qx_up_head_append(st, at, len) != 0)
        return -1;
    f->value_len += (uint32_t)len;
    return 0;
}

/* RFC 9110 §5.1: a field name is a token. llhttp lets some bytes through
 * (a space inside or before the colon) that would reach the client as a
 * different or broken field: such a response is refused. */
static int is_token(const char *s, size_t len)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              (c != '\0' && strchr(extra, c) != NULL)))
            return 0;
    }
    return 1;
}

/* The value of response field |name| (lowercase), or NULL. */
static const char *field(qx_up_stream_t *st, const char *name, size_t *len)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < st->nf; i++) {
        const qx_up_field_t *f = &st->f[i];
        if (f->name_len == n && strncasecmp(st->hb + f->name_off, name, n) == 0) {
            *len = f->value_len;
            return st->hb + f->value_off;
        }
    }
    return NULL;
}

/* The app's 101 to a WebSocket upgrade: it must name websocket in
 * Upgrade and upgrade in Connection (RFC 6455 §4.2.2), else it is a
 * broken answer (502). The head goes to the user as a response with a body
 * of unknown length (the tunnel's bytes); its fields minus the hop-by-hop
 * ones (Sec-WebSocket-Accept, -Protocol, -Extensions stay). */
static int tunnel_head(qx_up_stream_t *st, llhttp_t *p)
{
    h1_up_t *h = h1(st);
    qx_hdr_t hdrs[QX_UP_MAX_HEADERS];
    size_t n = 0, ulen = 0, clen = 0;
    const char *up = field(st, "upgrade", &ulen);
    const char *conn = field(st, "connection", &clen);
    (void)p;
    if (up == NULL || conn == NULL || !qx_h1_list_has_token(up, ulen, "websocket", 9) ||
        !qx_h1_list_has_token(conn, clen, "upgrade", 7))
        return -1;
    h->head_done = 1;
    for (size_t i = 0; i < st->nf; i++) {
        qx_up_field_t *f = &st->f[i];
        char *name = st->hb + f->name_off;
        if (f->name_len == 0 || !qx_h1_response_field_allowed(name, f->name_len, conn, clen) ||
            (f->name_len == 14 && strncasecmp(name, "content-length", 14) == 0))
            continue;
        qx_ascii_lower_n(name, f->name_len);
        hdrs[n++] = (qx_hdr_t){name, f->name_len, st->hb + f->value_off, f->value_len};
    }
    if (st->sink->head(st->user, 101, hdrs, n, 1, -1) != 0)
        return -1; /* not a tunnel: the read fails the stream (502) */
    st->tunnel = 1;
    return 0;
}

static int p_on_headers_complete(llhttp_t *p)
{
    qx_up_stream_t *st = p->data;
    h1_up_t *h = h1(st);
    int status = p->status_code;
    qx_hdr_t hdrs[QX_UP_MAX_HEADERS];
    size_t n = 0;
    const char *conn = NULL;
    size_t connlen = 0;

    /* llhttp takes "20" or "099" as a status; HTTP wants three digits,
     * 100-599 (RFC 9110 §15): anything else is a broken upstream (502). */
    if (status < 100 || status > 599)
        return -1;
    for (size_t i = 0; i < st->nf; i++) {
        if (!is_token(st->hb + st->f[i].name_off, st->f[i].name_len))
            return -1;
    }
    if (status == 101 && h->websocket)
        return tunnel_head(st, p);
    if (status >= 100 && status < 200) {
        if (status == 101)
            return -1; /* no upgrades through the proxy but WebSocket's */
        st->nf = 0;    /* interim response: wait for the final one */
        st->hblen = 0;
        h->in_value = 0;
        /* A 1xx ends at its blank line whatever its fields say (RFC 9112
         * §6.3): a Content-Length or Transfer-Encoding there must not make
         * llhttp take the final response for its body. */
        return 1;
    }
    h->head_done = 1;
    for (size_t i = 0; i < st->nf; i++) {
        qx_up_field_t *f = &st->f[i];
        if (f->name_len == 10 && strncasecmp(st->hb + f->name_off, "connection", 10) == 0) {
            conn = st->hb + f->value_off;
            connlen = f->value_len;
        }
    }
    if (conn && !qx_h1_conn_names_fields(conn, connlen))
        conn = NULL; /* "keep-alive" or "close": no per-field check needed */
    for (size_t i = 0; i < st->nf; i++) {
        qx_up_field_t *f = &st->f[i];
        char *name = st->hb + f->name_off;
        if (f->name_len == 0 || !qx_h1_response_field_allowed(name, f->name_len, conn, connlen))
            continue;
        /* 204 has no body, and says nothing of one (RFC 9110 §8.6): an
         * upstream's Content-Length there would have the client wait for
         * bytes that never come. */
        if (status == 204 && f->name_len == 14 && strncasecmp(name, "content-length", 14) == 0)
            continue;
        qx_ascii_lower_n(name, f->name_len); /* HTTP/2 and /3 field names are lowercase */
        hdrs[n++] = (qx_hdr_t){name, f->name_len, st->hb + f->value_off, f->value_len};
    }
    int has_body = !(h->is_head || status == 204 || status == 304 ||
                     ((p->flags & F_CONTENT_LENGTH) && p->content_length == 0));
    int64_t clen = (p->flags & F_CONTENT_LENGTH) ? (int64_t)p->content_length : -1;
    if (st->sink->head(st->user, status, hdrs, n, has_body, clen) != 0)
        return -1;
    /* 1: no body follows whatever the fields say (HEAD, 204, 304): bytes an
     * upstream sends anyway are then extra, and its socket is not reused. */
    return has_body ? 0 : 1;
}

static int p_on_body(llhttp_t *p, const char *at, size_t len)
{
    qx_up_stream_t *st = p->data;
    h1_up_t *h = h1(st);
    if (h->resp_body + len > st->resp_body_max) {
        st->sink->error(st->user, QX_UP_E_TOO_BIG, QX_UP_REPLAY_NONE, "response body too large");
        return HPE_USER;
    }
    qx_ring_t *r = st->resp;
    if (len > qx_ring_free(r)) { /* reads are sized so this cannot be (uc_read_buf) */
        st->sink->error(st->user, QX_UP_E_OVERFLOW, QX_UP_REPLAY_NONE, "response window overflow");
        return HPE_USER;
    }
    const uint8_t *src = (const uint8_t *)at;
    if (src >= r->data && src < r->data + r->cap) {
        /* Read into the window already, at or after its fill point, in
         * one contiguous run: at most a move back over chunk framing. */
        uint8_t *dst = r->data + (r->fill & (r->cap - 1));
        if (dst != src)
            memmove(dst, src, len);
        r->fill += len;
    } else {
        qx_ring_write(r, src, len);
    }
    h->resp_body += len;
    st->sink->body(st->user, len);
    return 0;
}

static int p_on_message_complete(llhttp_t *p)
{
    qx_up_stream_t *st = p->data;
    h1_up_t *h = h1(st);
    if (!h->head_done)
        return 0; /* end of an interim (1xx) response */
    if (st->tunnel)
        return HPE_PAUSED; /* the rest is the tunnel's (uc_on_read) */
    h->complete = 1;
    trailers_end(st);
    return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
    .on_header_field = p_on_header_field,
    .on_header_value = p_on_header_value,
    .on_headers_complete = p_on_headers_complete,
    .on_body = p_on_body,
    .on_message_complete = p_on_message_complete,
};
