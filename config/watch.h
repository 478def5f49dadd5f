/*
 * watch.h - watches files the way Kubernetes updates them, with inotify on
 * their directories (never on the files themselves):
 *
 *  - a ConfigMap/Secret volume: the kubelet writes `..<timestamp>/`, points
 *    `..data_tmp` at it, renames `..data_tmp` over `..data`, deletes the
 *    old directory; the visible file is a symlink through `..data`. A watch
 *    on the file would keep following the deleted inode.
 *  - a plain file edited in place (IN_CLOSE_WRITE, not every IN_MODIFY, so
 *    a half-written file is not read), replaced by rename (editors), or
 *    deleted and recreated.
 *
 * Bursts are debounced; the callback runs only when the content (SHA-256
 * of every watched file, symlinks followed) differs from the last time.
 * Runs on a libuv loop (the main thread's).
 */
#ifndef QX_WATCH_H
#define QX_WATCH_H

#include <stddef.h>
#include <uv.h>

typedef struct qx_watch qx_watch_t;

/* Called on the loop when the watched content changed. */
typedef void (*qx_watch_cb)(qx_watch_t *w, void *arg);

/* Watches the directories of paths[0..n) (n <= 4). The current content is
 * the baseline. Returns 0, QX_ERR_IO (inotify unavailable; logged) or
 * QX_ERR_NOMEM. */
int qx_watch_new(qx_watch_t **out, uv_loop_t *loop, const char *const *paths, size_t n,
                 unsigned debounce_ms, qx_watch_cb cb, void *arg);

/* Re-reads the content hash now (e.g. after SIGHUP forced a reload), so
 * the next event compares against it. */
void qx_watch_rebase(qx_watch_t *w);

/* Stops watching; the memory is freed once the handles have closed.
 * Accepts NULL. */
void qx_watch_del(qx_watch_t *w);

/* Nonzero when |path| is itself a mount point: a ConfigMap mounted with
 * subPath, whose updates never reach the pod. */
int qx_watch_is_subpath_mount(const char *path);

#endif
