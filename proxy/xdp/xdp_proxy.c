/*
 * xdp_proxy.c - the proxy's side of the XDP filter (see xdp_proxy.h).
 */
#include "xdp/xdp_proxy.h"
#include "base/log.h"
#include "base/qx.h"
#include "xdp/xdp_maps.h"

#include <bpf/bpf.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

struct qx_xdp_proxy {
    pthread_mutex_t lock; /* guards maps and map_id */
    qx_xdp_maps_t maps;
    uint32_t map_id; /* kernel id of the pinned counters map: changes on re-attach */
    int attached;    /* the last answer of attached_now() */
    qx_xdp_cfg_t cfg;
    qx_cid_keys_t *keys;
    uint64_t next_rotate_s; /* 0: not scheduled yet */
    uv_timer_t timer;
};

static void on_timer(uv_timer_t *t)
{
    qx_xdp_proxy_t *p = t->data;
    qx_xdp_proxy_tick(p, uv_now(t->loop) / 1000);
}

/* The id of the counters map pinned now (0 when none; errno says why). */
static uint32_t pinned_id(const char *pin)
{
    char path[PATH_MAX];
    struct bpf_map_info info;
    uint32_t len = sizeof(info);
    snprintf(path, sizeof(path), "%s/%s", pin, QX_XDP_MAP_COUNTERS);
    int fd = bpf_obj_get(path);
    if (fd < 0)
        return 0; /* errno from bpf() */
    memset(&info, 0, sizeof(info));
    uint32_t id = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
    close(fd);
    return id;
}

static void publish(qx_xdp_proxy_t *p)
{
    if (qx_xdp_maps_publish_keys(&p->maps, p->keys) != 0 ||
        qx_xdp_maps_set_rate(&p->maps, p->cfg.initial_rate, p->cfg.initial_burst) != 0)
        QX_WARN("xdp: cannot update the maps under %s", p->cfg.pin);
}

/* Under the lock. Opens (or reopens) the maps when the pins changed. */
static void sync_maps(qx_xdp_proxy_t *p, int log_absent)
{
    char err[256] = "";
    uint32_t id = pinned_id(p->cfg.pin);
    if (id == p->map_id)
        return;
    /* Pins we opened that we may not open now: `qrux xdp gc` (or a
     * re-attach) took the pin directory back from our user for a few
     * system calls to look at the link, and gives it back. The maps we
     * hold are the same; closing them would reset /metrics' counters. A
     * removed or replaced pin is ENOENT or another id. */
    if (id == 0 && p->map_id != 0 && errno == EACCES)
        return;
    qx_xdp_maps_free(&p->maps);
    p->map_id = 0;
    if (id == 0) {
        if (log_absent)
            QX_INFO("xdp: no filter pinned under %s (qrux xdp attach): running without it",
                    p->cfg.pin);
        else
            QX_INFO("xdp: the filter under %s is gone", p->cfg.pin);
        return;
    }
    int rv = qx_xdp_maps_open(&p->maps, p->cfg.pin, err, sizeof(err));
    if (rv != 0) {
        if (rv != QX_ERR_NOTFOUND)
            QX_WARN("%s", err);
        return;
    }
    p->map_id = id;
    publish(p);
    QX_INFO("xdp: maps under %s opened (%s); CID key generation %u shared, Initial rate %u/s "
            "burst %u",
            p->cfg.pin, qx_xdp_maps_attached(&p->maps) ? "attached" : "not attached",
            __atomic_load_n(&p->keys->gen, __ATOMIC_ACQUIRE), p->cfg.initial_rate,
            p->cfg.initial_burst);
}

/* The newest key generation the filter holds, or -1. */
static int64_t pinned_gen(const qx_xdp_maps_t *m)
{
    int64_t best = -1;
    for (uint32_t slot = 0; slot < 2 && m->keys >= 0; slot++) {
        struct qx_xdp_cid_key k;
        if (bpf_map_lookup_elem(m->keys, &slot, &k) == 0 && k.valid && (int64_t)k.gen > best)
            best = k.gen;
    }
    return best;
}

int qx_xdp_proxy_new(qx_xdp_proxy_t **out, const qx_xdp_cfg_t *cfg, qx_cid_keys_t *keys,
                     uv_loop_t *loop)
{
    qx_xdp_proxy_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return QX_ERR_NOMEM;
    pthread_mutex_init(&p->lock, NULL);
    qx_xdp_maps_init(&p->maps);
    p->cfg = *cfg;
    if ((p->cfg.pin = strdup(cfg->pin)) == NULL) {
        free(p);
        return QX_ERR_NOMEM;
    }
    p->keys = keys;
    qx_xdp_maps_t probe;
    char err[256];
    if (qx_xdp_maps_open(&probe, p->cfg.pin, err, sizeof(err)) == 0) {
        /* A generation of its own: the old process's CIDs stop passing
         * (its connections are gone), nothing else changes. */
        int64_t g = pinned_gen(&probe);
        if (g >= 0 && qx_cid_keys_init(keys, (uint32_t)g + 1) != 0)
            QX_WARN("xdp: no randomness for a new CID key");
        qx_xdp_maps_free(&probe);
    }
    pthread_mutex_lock(&p->lock);
    sync_maps(p, 1);
    pthread_mutex_unlock(&p->lock);
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, on_timer, 1000, 1000);
    uv_unref((uv_handle_t *)&p->timer); /* never what keeps the loop running */
    *out = p;
    return 0;
}

void qx_xdp_proxy_close(qx_xdp_proxy_t *p)
{
    if (p != NULL && !uv_is_closing((uv_handle_t *)&p->timer))
        uv_close((uv_handle_t *)&p->timer, NULL);
}

void qx_xdp_proxy_del(qx_xdp_proxy_t *p)
{
    if (p == NULL)
        return;
    qx_xdp_maps_free(&p->maps);
    pthread_mutex_destroy(&p->lock);
    free(p->cfg.pin);
    free(p);
}

/* Under the lock. A `qrux xdp attach` run again while qrux runs reuses the
 * pinned maps (same ids: sync_maps sees no change) but writes its own
 * --rate/--burst: put qrux's numbers back, or the filter and qrux's Retry
 * decision would count with different buckets. */
static void keep_rate(qx_xdp_proxy_t *p)
{
    struct qx_xdp_config cur;
    uint32_t zero = 0;
    if (p->maps.config < 0 || bpf_map_lookup_elem(p->maps.config, &zero, &cur) != 0)
        return;
    if (cur.rate == p->cfg.initial_rate && cur.burst == p->cfg.initial_burst)
        return;
    if (qx_xdp_maps_set_rate(&p->maps, p->cfg.initial_rate, p->cfg.initial_burst) != 0) {
        QX_WARN("xdp: cannot update the maps under %s", p->cfg.pin);
        return;
    }
    QX_INFO("xdp: the filter's Initial rate was %u/s burst %u (attach --rate/--burst); back to "
            "xdp.initial_rate %u/s, initial_burst %u",
            cur.rate, cur.burst, p->cfg.initial_rate, p->cfg.initial_burst);
}

void qx_xdp_proxy_tick(qx_xdp_proxy_t *p, uint64_t now_s)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->lock);
    sync_maps(p, 0);
    keep_rate(p);
    if (p->cfg.cid_key_rotate_secs > 0) {
        if (p->next_rotate_s == 0) {
            p->next_rotate_s = now_s + p->cfg.cid_key_rotate_secs;
        } else if (now_s >= p->next_rotate_s) {
            p->next_rotate_s = now_s + p->cfg.cid_key_rotate_secs;
            /* The filter learns the new key before any CID carries it. */
            uint8_t key[QX_CID_KEY_LEN];
            uint32_t gen = __atomic_load_n(&p->keys->gen, __ATOMIC_ACQUIRE) + 1;
            if (getrandom(key, sizeof(key), 0) == (ssize_t)sizeof(key)) {
                if (qx_xdp_maps_publish_slot(&p->maps, gen, key) != 0) {
                    /* Keep the key the filter knows rather than strand new CIDs. */
                    QX_WARN("xdp: cannot load CID key generation %u into the filter; the key "
                            "stays",
                            gen);
                    pthread_mutex_unlock(&p->lock);
                    return;
                }
                qx_cid_keys_advance(p->keys, key);
                QX_INFO("xdp: CID key generation %u (generation %u stays valid until the next "
                        "change)",
                        gen, gen - 1);
            }
        }
    }
    pthread_mutex_unlock(&p->lock);
}

/* Under the lock: qx_xdp_maps_attached, or its last answer while the pin
 * directory is taken from us for a moment (EACCES: see sync_maps). */
static int attached_now(qx_xdp_proxy_t *p)
{
    errno = 0;
    int a = qx_xdp_maps_attached(&p->maps);
    if (a == 0 && errno == EACCES && p->map_id != 0)
        return p->attached;
    p->attached = a;
    return a;
}

void qx_xdp_proxy_stats(qx_xdp_proxy_t *p, uint64_t *counters, int *attached)
{
    memset(counters, 0, sizeof(uint64_t) * QX_XDP_NREASONS);
    *attached = 0;
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->lock);
    qx_xdp_maps_counters(&p->maps, counters);
    *attached = attached_now(p);
    pthread_mutex_unlock(&p->lock);
}

json_t *qx_xdp_proxy_deny_get(qx_xdp_proxy_t *p)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    json_t *list = NULL;
    int attached = 0;
    if (p != NULL) {
        pthread_mutex_lock(&p->lock);
        list = qx_xdp_deny_get(&p->maps);
        attached = attached_now(p);
        pthread_mutex_unlock(&p->lock);
    } else {
        list = json_array();
    }
    if (list == NULL || json_object_set_new(o, "denylist", list) != 0 ||
        json_object_set_new(o, "attached", json_boolean(attached)) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int qx_xdp_proxy_deny_set(qx_xdp_proxy_t *p, const char *body, size_t len, char *err, size_t errlen)
{
    qx_xdp_maps_t none;
    if (p == NULL) {
        qx_xdp_maps_init(&none);
        return qx_xdp_deny_set(&none, body, len, err, errlen); /* validates, then NOTFOUND */
    }
    pthread_mutex_lock(&p->lock);
    int rv = qx_xdp_deny_set(&p->maps, body, len, err, errlen);
    pthread_mutex_unlock(&p->lock);
    return rv;
}
