/* pool.c - upstream connections and their idle pool (see pool.h). */
#include "upstream/pool.h"

#include "base/log.h"
#include "base/qx.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* The row may be shared by several pools of the worker (two routes naming
 * one upstream, or an old and a new snapshot's pool): each pool adds what
 * changed since it last published, and takes its share out when deleted. */
static void gauges(qx_pool_t *p)
{
    if (p->row == NULL)
        return;
    qx_cnt_add(&p->row->pool_idle, (uint64_t)p->nidle - p->pub_idle);
    qx_cnt_add(&p->row->pool_busy, (uint64_t)p->nbusy - p->pub_busy);
    p->pub_idle = p->nidle;
    p->pub_busy = p->nbusy;
}

int qx_pool_new(qx_pool_t **out, uv_loop_t *loop, const struct sockaddr *addr, socklen_t addrlen,
                unsigned max_idle, uint64_t idle_timeout_ms, qx_metrics_up_row_t *row)
{
    qx_pool_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return QX_ERR_NOMEM;
    p->loop = loop;
    memcpy(&p->addr, addr, addrlen);
    p->addrlen = addrlen;
    p->max_idle = max_idle;
    p->idle_timeout_ms = idle_timeout_ms;
    p->row = row;
    TAILQ_INIT(&p->waiters);
    TAILQ_INIT(&p->idle);
    LIST_INIT(&p->busy);
    *out = p;
    return 0;
}

/* ---- descriptors and waiters -------------------------------------------- */

int qx_fd_take(qx_fd_budget_t *b)
{
    if (b == NULL)
        return 0;
    unsigned n = __atomic_add_fetch(&b->used, 1, __ATOMIC_RELAXED);
    if (b->limit > 0 && n > b->limit) {
        __atomic_sub_fetch(&b->used, 1, __ATOMIC_RELAXED);
        return QX_ERR_LIMIT;
    }
    return 0;
}

void qx_fd_give(qx_fd_budget_t *b)
{
    if (b != NULL)
        __atomic_sub_fetch(&b->used, 1, __ATOMIC_RELAXED);
}

int qx_pool_wait(qx_pool_t *p, qx_pool_wait_t *wt)
{
    /* As many as the connections could carry at once: one request each,
     * or conn_streams each on a shared (HTTP/2) connection. */
    uint64_t cap = (uint64_t)QX_MAX(p->max_conns, 1u) * QX_MAX(p->conn_streams, 1u);
    if (p->nwaiters >= cap)
        return QX_ERR_LIMIT;
    TAILQ_INSERT_TAIL(&p->waiters, wt, link);
    wt->queued = 1;
    p->nwaiters++;
    return 0;
}

void qx_pool_unwait(qx_pool_t *p, qx_pool_wait_t *wt)
{
    if (!wt->queued)
        return;
    TAILQ_REMOVE(&p->waiters, wt, link);
    wt->queued = 0;
    p->nwaiters--;
}

/* A connection closed or went idle: the oldest waiter may try again. */
static void kick_waiter(qx_pool_t *p)
{
    qx_pool_wait_t *wt = TAILQ_FIRST(&p->waiters);
    if (wt == NULL)
        return;
    qx_pool_unwait(p, wt);
    wt->ready(wt);
}

void qx_pool_kick(qx_pool_t *p)
{
    kick_waiter(p);
}

/* ---- idle list ---------------------------------------------------------- */

static void idle_unlink(qx_pool_t *p, qx_upconn_t *uc)
{
    TAILQ_REMOVE(&p->idle, uc, idle_link);
    p->nidle--;
}

static void idle_push_front(qx_pool_t *p, qx_upconn_t *uc)
{
    TAILQ_INSERT_HEAD(&p->idle, uc, idle_link);
    p->nidle++;
}

static void busy_link(qx_pool_t *p, qx_upconn_t *uc)
{
    LIST_INSERT_HEAD(&p->busy, uc, busy_link);
    p->nbusy++;
}

static void busy_unlink(qx_pool_t *p, qx_upconn_t *uc)
{
    LIST_REMOVE(uc, busy_link);
    p->nbusy--;
}

/* ---- closing ------------------------------------------------------------ */

static void on_close(uv_handle_t *h)
{
    qx_upconn_t *uc = qx_container_of(h, qx_upconn_t, tcp);
    if (uc->fd_taken)
        qx_fd_give(uc->fds);
    free(uc);
}

/* Closes uc, whatever its state; the pool forgets it now. */
static void upconn_close(qx_upconn_t *uc)
{
    qx_pool_t *p = uc->pool;
    if (uc->state == QX_UC_CLOSING)
        return;
    if (p) {
        if (uc->state == QX_UC_IDLE)
            idle_unlink(p, uc);
        else
            busy_unlink(p, uc);
        gauges(p);
    }
    uc->state = QX_UC_CLOSING;
    uc->user = NULL;
    uc->cb = NULL;
    uv_close((uv_handle_t *)&uc->tcp, on_close);
    if (p)
        kick_waiter(p);
}

void qx_pool_del(qx_pool_t *p)
{
    if (p == NULL)
        return;
    p->retired = 1;
    if (p->shared_sweep)
        p->shared_sweep(p, uv_now(p->loop));
    while (!TAILQ_EMPTY(&p->idle))
        upconn_close(TAILQ_FIRST(&p->idle));
    p->nidle = p->nbusy = 0;
    gauges(p);
    /* Busy connections are detached; their users release (close) them
     * later without touching the pool. */
    while (!LIST_EMPTY(&p->busy)) {
        qx_upconn_t *uc = LIST_FIRST(&p->busy);
        LIST_REMOVE(uc, busy_link);
        uc->pool = NULL;
    }
    p->row = NULL;
    /* Waiters try again and find no pool (a 502): none may point here. */
    while (!TAILQ_EMPTY(&p->waiters))
        kick_waiter(p);
    free(p);
}

/* ---- callbacks ---------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    qx_upconn_t *uc = qx_container_of(h, qx_upconn_t, tcp);
    (void)suggested;
    buf->len = 0;
    if (uc->state == QX_UC_BUSY && uc->cb && uc->cb->read_buf)
        uc->cb->read_buf(uc->user, buf);
    if (buf->len == 0) {
        buf->base = uc->rbuf;
        buf->len = sizeof(uc->rbuf);
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    qx_upconn_t *uc = qx_container_of(s, qx_upconn_t, tcp);
    if (nread == 0)
        return; /* EAGAIN */
    if (uc->state == QX_UC_IDLE) {
        /* An idle keep-alive connection must stay silent: EOF means the
         * backend closed it, bytes mean it is confused. Evict either way. */
        QX_DEBUG("pool: idle upstream connection %s, evicted",
                 nread < 0 ? uv_err_name((int)nread) : "sent unexpected bytes");
        upconn_close(uc);
        return;
    }
    if (uc->state != QX_UC_BUSY || uc->cb == NULL)
        return;
    uc->cb->on_read(uc->user, nread, buf->base);
}

static void on_write(uv_write_t *req, int status)
{
    qx_upconn_t *uc = qx_container_of(req, qx_upconn_t, wreq);
    uc->writing = 0;
    if (uc->state != QX_UC_BUSY || uc->cb == NULL)
        return;
    uc->cb->on_write(uc->user, status);
}

static void on_connect(uv_connect_t *req, int status)
{
    qx_upconn_t *uc = qx_container_of(req, qx_upconn_t, creq);
    if (uc->state != QX_UC_CONNECTING)
        return; /* released (e.g. timed out) while connecting */
    uc->state = QX_UC_BUSY;
    if (status == 0)
        uv_tcp_nodelay(&uc->tcp, 1);
    else
        uc->connect_failed = 1; /* never reusable: see qx_pool_release */
    uc->cb->on_connect(uc->user, status);
}

/* ---- public ------------------------------------------------------------- */

/* An idle keep-alive connection must hold nothing: a byte waiting in the
 * socket is a response nobody asked for (handing the connection out would
 * deliver it to the next request), and EOF or an error means it is gone.
 * The idle read watcher evicts such a connection only when the loop polls,
 * which may be after this checkout in the same turn, so every checkout
 * looks with a non-blocking MSG_PEEK: one syscall that consumes nothing. */
static int still_open(qx_upconn_t *uc)
{
    uv_os_fd_t fd;
    char c;
    if (uv_fileno((uv_handle_t *)&uc->tcp, &fd) != 0)
        return 0;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

int qx_pool_checkout(qx_pool_t *p, void *user, const qx_upconn_cb_t *cb, int fresh_only,
                     qx_upconn_t **out, int *reused)
{
    while (!fresh_only && !TAILQ_EMPTY(&p->idle)) {
        qx_upconn_t *uc = TAILQ_FIRST(&p->idle);
        if (!still_open(uc)) {
            upconn_close(uc);
            continue;
        }
        idle_unlink(p, uc);
        /* Left reading: the new user wants the response anyway, and a
         * stop/start pair is two epoll_ctl calls per request. */
        uc->state = QX_UC_BUSY;
        uc->user = user;
        uc->cb = cb;
        busy_link(p, uc);
        gauges(p);
        *out = uc;
        *reused = 1;
        return 0;
    }

    if (p->max_conns > 0 && p->nidle + p->nbusy >= p->max_conns)
        return QX_ERR_LIMIT;
    qx_upconn_t *uc = calloc(1, sizeof(*uc));
    if (uc == NULL)
        return QX_ERR_NOMEM;
    if (qx_fd_take(p->fds) != 0) {
        free(uc);
        return QX_ERR_LIMIT;
    }
    uc->fds = p->fds;
    uc->fd_taken = 1;
    uc->pool = p;
    uc->user = user;
    uc->cb = cb;
    uc->state = QX_UC_CONNECTING;
    if (uv_tcp_init(p->loop, &uc->tcp) != 0) {
        qx_fd_give(uc->fds);
        free(uc);
        return QX_ERR_IO;
    }
    int rv = uv_tcp_connect(&uc->creq, &uc->tcp, (const struct sockaddr *)&p->addr, on_connect);
    busy_link(p, uc);
    gauges(p);
    if (rv != 0) {
        QX_DEBUG("pool: connect did not start: %s", uv_strerror(rv));
        upconn_close(uc);
        return QX_ERR_IO;
    }
    *out = uc;
    *reused = 0;
    return 0;
}

void qx_pool_release(qx_upconn_t *uc, int reusable)
{
    qx_pool_t *p = uc->pool;
    if (uc->state == QX_UC_CLOSING)
        return;
    if (!reusable || p == NULL || uc->state != QX_UC_BUSY || uc->writing || uc->connect_failed ||
        p->nidle >= p->max_idle) {
        upconn_close(uc);
        return;
    }
    uc->user = NULL;
    uc->cb = NULL;
    uc->state = QX_UC_IDLE;
    uc->idle_since_ms = uv_now(p->loop);
    busy_unlink(p, uc);
    idle_push_front(p, uc);
    gauges(p);
    uc->reading = 1;
    uv_read_start((uv_stream_t *)&uc->tcp, on_alloc, on_read);
    kick_waiter(p);
}

void qx_pool_close_idle(qx_pool_t *p)
{
    while (!TAILQ_EMPTY(&p->idle))
        upconn_close(TAILQ_FIRST(&p->idle));
}

void qx_pool_sweep(qx_pool_t *p, uint64_t now_ms)
{
    /* The tail is the least recently used. */
    qx_upconn_t *uc;
    while ((uc = TAILQ_LAST(&p->idle, qx_upconn_idle)) != NULL &&
           now_ms - uc->idle_since_ms >= p->idle_timeout_ms)
        upconn_close(uc);
    if (p->shared_sweep)
        p->shared_sweep(p, now_ms);
}

void qx_pool_retire(qx_pool_t *p)
{
    p->retired = 1;
    p->max_idle = 0;
    qx_pool_close_idle(p);
    if (p->shared_sweep)
        p->shared_sweep(p, uv_now(p->loop));
}

int qx_upconn_write(qx_upconn_t *uc, const uv_buf_t *bufs, unsigned n)
{
    if (uc->writing)
        return QX_ERR_INVAL;
    /* Most requests fit the socket buffer: writing at once skips libuv's
     * write queue and the POLLOUT arm/disarm (an epoll_ctl per request). */
    int done = uv_try_write((uv_stream_t *)&uc->tcp, bufs, n);
    if (done < 0 && done != UV_EAGAIN)
        return QX_ERR_IO;
    size_t skip = done > 0 ? (size_t)done : 0;
    unsigned i = 0;
    while (i < n && skip >= bufs[i].len)
        skip -= bufs[i++].len;
    if (i == n)
        return 1;
    /* The rest goes through uv_write, which copies the buffer array. */
    uv_buf_t rest[QX_UPCONN_MAX_BUFS];
    unsigned k = 0;
    for (; i < n && k < QX_UPCONN_MAX_BUFS; i++, k++) {
        rest[k] = uv_buf_init(bufs[i].base + skip, (unsigned)(bufs[i].len - skip));
        skip = 0;
    }
    if (i < n)
        return QX_ERR_INVAL;
    int rv = uv_write(&uc->wreq, (uv_stream_t *)&uc->tcp, rest, k, on_write);
    if (rv != 0)
        return QX_ERR_IO;
    uc->writing = 1;
    return 0;
}

void qx_upconn_read_start(qx_upconn_t *uc)
{
    if (uc->reading || uc->state != QX_UC_BUSY)
        return;
    if (uv_read_start((uv_stream_t *)&uc->tcp, on_alloc, on_read) == 0)
        uc->reading = 1;
}

void qx_upconn_read_stop(qx_upconn_t *uc)
{
    if (!uc->reading || uc->state == QX_UC_CLOSING)
        return;
    uv_read_stop((uv_stream_t *)&uc->tcp);
    uc->reading = 0;
}

int qx_upconn_shutdown(qx_upconn_t *uc)
{
    uv_os_fd_t fd;
    if (uc->writing || uc->state != QX_UC_BUSY)
        return QX_ERR_INVAL;
    if (uv_fileno((uv_handle_t *)&uc->tcp, &fd) != 0 || shutdown(fd, SHUT_WR) == -1)
        return QX_ERR_IO;
    return 0;
}
