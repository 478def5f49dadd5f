/* watch.c - inotify on the directories of watched files (see watch.h). */
#include "config/watch.h"

#include "base/log.h"
#include "base/qx.h"

#include <errno.h>
#include <gnutls/crypto.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#define MAX_FILES 4
#define RETRY_MS 1000

typedef struct {
    char *path; /* as configured */
    char *dir;  /* its directory */
    char *base; /* its name in dir */
    int wd;     /* inotify watch on dir, -1 when the directory is gone */
    uint8_t hash[32];
    int exists;
} watched_t;

struct qx_watch {
    uv_loop_t *loop;
    int fd;
    uv_poll_t poll;
    uv_timer_t debounce;
    uv_timer_t retry; /* re-adds watches on directories that vanished */
    unsigned debounce_ms;
    qx_watch_cb cb;
    void *arg;
    watched_t files[MAX_FILES];
    size_t n;
    int closing;
};

/* ---- content ------------------------------------------------------------ */

/* SHA-256 of the file's content (following symlinks); exists = 0 when it
 * cannot be read. Files are configs and PEMs: small. */
static void hash_file(watched_t *f)
{
    FILE *fp = fopen(f->path, "rb");
    gnutls_hash_hd_t h;
    char buf[8192];
    size_t n;

    memset(f->hash, 0, sizeof(f->hash));
    f->exists = 0;
    if (fp == NULL)
        return;
    if (gnutls_hash_init(&h, GNUTLS_DIG_SHA256) != 0) {
        fclose(fp);
        return;
    }
    while ((n = fread(buf, 1, sizeof(buf), fp)) > 0)
        gnutls_hash(h, buf, n);
    gnutls_hash_deinit(h, f->hash);
    f->exists = 1;
    fclose(fp);
}

void qx_watch_rebase(qx_watch_t *w)
{
    for (size_t i = 0; i < w->n; i++)
        hash_file(&w->files[i]);
}

static void on_debounce(uv_timer_t *t)
{
    qx_watch_t *w = qx_container_of(t, qx_watch_t, debounce);
    int changed = 0;
    for (size_t i = 0; i < w->n; i++) {
        uint8_t old[32];
        int existed = w->files[i].exists;
        memcpy(old, w->files[i].hash, sizeof(old));
        hash_file(&w->files[i]);
        if (!w->files[i].exists) {
            /* Deleted, maybe about to be recreated: keep the old hash so
             * the recreation is compared with what is in force. */
            memcpy(w->files[i].hash, old, sizeof(old));
            w->files[i].exists = existed;
            QX_DEBUG("watch: %s is gone for now", w->files[i].path);
            continue;
        }
        if (memcmp(old, w->files[i].hash, sizeof(old)) != 0)
            changed = 1;
    }
    if (changed)
        w->cb(w, w->arg);
    else
        QX_DEBUG("watch: event without a content change; nothing to do");
}

/* ---- inotify -------------------------------------------------------------- */

static const uint32_t dir_mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE |
                                 IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ATTRIB;

static int add_watch(qx_watch_t *w, watched_t *f)
{
    f->wd = inotify_add_watch(w->fd, f->dir, dir_mask);
    if (f->wd == -1) {
        QX_WARN("watch: cannot watch %s: %s (retrying)", f->dir, strerror(errno));
        return -1;
    }
    return 0;
}

static void on_retry(uv_timer_t *t)
{
    qx_watch_t *w = qx_container_of(t, qx_watch_t, retry);
    int missing = 0;
    for (size_t i = 0; i < w->n; i++) {
        if (w->files[i].wd == -1 && add_watch(w, &w->files[i]) == -1)
            missing = 1;
        else if (w->files[i].wd != -1)
            uv_timer_start(&w->debounce, on_debounce, w->debounce_ms, 0);
    }
    if (!missing)
        uv_timer_stop(&w->retry);
}

/* An event matters when it names the file, a kubelet `..` entry, or the
 * directory itself. */
static int relevant(const watched_t *f, const struct inotify_event *ev)
{
    if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED))
        return 1;
    if (ev->len == 0)
        return 0;
    if (strcmp(ev->name, f->base) == 0)
        return 1;
    return strncmp(ev->name, "..", 2) == 0;
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    qx_watch_t *w = qx_container_of(h, qx_watch_t, poll);
    union {
        char buf[4096];
        struct inotify_event align;
    } u;
    int fire = 0;
    (void)events;
    if (status < 0)
        return;
    for (;;) {
        ssize_t n = read(w->fd, u.buf, sizeof(u.buf));
        if (n == -1) {
            if (errno == EINTR)
                continue;
            break; /* EAGAIN: drained */
        }
        if (n <= 0)
            break;
        for (char *p = u.buf; p < u.buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)(void *)p;
            for (size_t i = 0; i < w->n; i++) {
                watched_t *f = &w->files[i];
                if (ev->wd != f->wd)
                    continue;
                if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
                    /* The directory went away: watch it again when it is back. */
                    if (f->wd != -1 && !(ev->mask & IN_IGNORED))
                        inotify_rm_watch(w->fd, f->wd);
                    f->wd = -1;
                    uv_timer_start(&w->retry, on_retry, RETRY_MS, RETRY_MS);
                }
                if (relevant(f, ev))
                    fire = 1;
            }
            p += sizeof(struct inotify_event) + ev->len;
        }
    }
    if (fire)
        uv_timer_start(&w->debounce, on_debounce, w->debounce_ms, 0);
}

/* ---- life cycle --------------------------------------------------------- */

int qx_watch_new(qx_watch_t **out, uv_loop_t *loop, const char *const *paths, size_t n,
                 unsigned debounce_ms, qx_watch_cb cb, void *arg)
{
    if (n == 0 || n > MAX_FILES)
        return QX_ERR_INVAL;
    qx_watch_t *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return QX_ERR_NOMEM;
    w->loop = loop;
    w->cb = cb;
    w->arg = arg;
    w->debounce_ms = debounce_ms;
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->fd == -1) {
        QX_ERROR("watch: inotify_init1: %s", strerror(errno));
        free(w);
        return QX_ERR_IO;
    }
    for (size_t i = 0; i < n; i++) {
        watched_t *f = &w->files[i];
        const char *slash = strrchr(paths[i], '/');
        f->path = strdup(paths[i]);
        if (slash == NULL) {
            f->dir = strdup(".");
            f->base = strdup(paths[i]);
        } else {
            f->dir = strndup(paths[i], (size_t)(slash - paths[i]) + (slash == paths[i]));
            f->base = strdup(slash + 1);
        }
        f->wd = -1;
        w->n++;
        if (f->path == NULL || f->dir == NULL || f->base == NULL) {
            qx_watch_del(w);
            return QX_ERR_NOMEM;
        }
    }
    uv_timer_init(loop, &w->debounce);
    uv_timer_init(loop, &w->retry);
    uv_poll_init(loop, &w->poll, w->fd);
    for (size_t i = 0; i < w->n; i++) {
        if (add_watch(w, &w->files[i]) == -1)
            uv_timer_start(&w->retry, on_retry, RETRY_MS, RETRY_MS);
    }
    qx_watch_rebase(w);
    uv_poll_start(&w->poll, UV_READABLE, on_poll);
    uv_unref((uv_handle_t *)&w->poll); /* a watcher alone keeps no loop alive */
    uv_unref((uv_handle_t *)&w->debounce);
    uv_unref((uv_handle_t *)&w->retry);
    *out = w;
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    qx_watch_t *w = h->data;
    if (--w->closing > 0)
        return;
    close(w->fd);
    for (size_t i = 0; i < w->n; i++) {
        free(w->files[i].path);
        free(w->files[i].dir);
        free(w->files[i].base);
    }
    free(w);
}

void qx_watch_del(qx_watch_t *w)
{
    if (w == NULL)
        return;
    if (w->poll.loop == NULL) {
        /* Failed inside qx_watch_new before any handle existed. */
        w->closing = 1;
        on_closed(&(uv_handle_t){.data = w});
        return;
    }
    w->closing = 3;
    w->poll.data = w->debounce.data = w->retry.data = w;
    uv_close((uv_handle_t *)&w->poll, on_closed);
    uv_close((uv_handle_t *)&w->debounce, on_closed);
    uv_close((uv_handle_t *)&w->retry, on_closed);
}

int qx_watch_is_subpath_mount(const char *path)
{
    char real[PATH_MAX];
    char line[4096];
    int found = 0;
    if (realpath(path, real) == NULL)
        return 0;
    FILE *fp = fopen("/proc/self/mountinfo", "r");
    if (fp == NULL)
        return 0;
    /* Field 5 is the mount point; a single file mounted on its own (what a
     * subPath volumeMount is) appears there. */
    while (fgets(line, sizeof(line), fp)) {
        char *save = NULL, *tok = strtok_r(line, " ", &save);
        for (int i = 1; tok && i < 5; i++)
            tok = strtok_r(NULL, " ", &save);
        if (tok && strcmp(tok, real) == 0) {
            found = 1;
            break;
        }
    }
    fclose(fp);
    return found;
}
