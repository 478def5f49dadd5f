/*
 * xdp_proxy_test.c - the proxy's side of the XDP filter (proxy/xdp/xdp_proxy.c)
 * against the real program with its maps pinned in a bpffs of the test's
 * own: the rate and the CID keys reach the filter (the rate again after an
 * attach changed it), a key change keeps the previous generation valid and
 * retires the one before, a re-attach (new pins) is noticed and the keys
 * follow, a restarted proxy takes the next generation, the deny list goes
 * through. Needs root (mount, CAP_BPF).
 */
#include "base/cid.h"
#include "base/qx.h"
#include "worker/runtime.h"
#include "conf/snapshot.h"
#include "xdp_frames.h"
#include "xdp/xdp_maps.h"
#include "xdp/xdp_proxy.h"
#include "xdp_quic.skel.h"
#include "bpf/xdp_quic_consts.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <cmocka.h>

static char fs[64] = "/tmp/qx-unit-xdp-XXXXXX";
static char pin[96];

/* Loads a fresh copy of the program and pins its maps under |pin|. */
static struct xdp_quic *load_pinned(void)
{
    struct xdp_quic *s = xdp_quic__open_and_load();
    assert_non_null(s);
    assert_int_equal(bpf_object__pin_maps(s->obj, pin), 0);
    struct qx_xdp_config c = {.ports = {PORT}, .nports = 1};
    uint32_t zero = 0;
    assert_int_equal(bpf_map_update_elem(bpf_map__fd(s->maps.qx_config), &zero, &c, BPF_ANY), 0);
    return s;
}

static int verdict_of(struct xdp_quic *s, const uint8_t *cid)
{
    uint8_t p[FRAME_MAX], f[FRAME_MAX];
    frame_spec_t spec = {0};
    size_t len = frame(f, &spec, p, short_hdr(p, cid, 60));
    LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = f, .data_size_in = (uint32_t)len, .repeat = 1);
    assert_int_equal(bpf_prog_test_run_opts(bpf_program__fd(s->progs.qx_xdp_quic), &o), 0);
    return (int)o.retval;
}

static int setup(void **state)
{
    (void)state;
    if (mkdtemp(fs) == NULL || mount("bpf", fs, "bpf", 0, NULL) != 0) {
        perror("mounting a bpffs (needs root)");
        return -1;
    }
    snprintf(pin, sizeof(pin), "%s/qrux", fs);
    return mkdir(pin, 0700);
}

static int teardown(void **state)
{
    (void)state;
    umount(fs);
    rmdir(fs);
    return 0;
}

static void keys_rate_rotation_reattach(void **state)
{
    uv_loop_t loop;
    qx_cid_keys_t keys;
    qx_xdp_proxy_t *p = NULL;
    qx_xdp_cfg_t cfg = {
        .pin = pin, .initial_rate = 7, .initial_burst = 9, .cid_key_rotate_secs = 10};
    uint8_t a[QX_CID_LEN], b[QX_CID_LEN], c[QX_CID_LEN];
    uint32_t zero = 0;
    (void)state;

    struct xdp_quic *s = load_pinned();
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(qx_cid_keys_init(&keys, 0), 0);
    assert_int_equal(qx_xdp_proxy_new(&p, &cfg, &keys, &loop), 0);

    /* The proxy's rate is the filter's. */
    struct qx_xdp_config got;
    assert_int_equal(bpf_map_lookup_elem(bpf_map__fd(s->maps.qx_config), &zero, &got), 0);
    assert_int_equal(got.rate, 7);
    assert_int_equal(got.burst, 9);
    assert_int_equal(got.ports[0], PORT);

    /* `qrux xdp attach --rate 50 --burst 100` again while qrux runs: same
     * maps, other numbers. The next tick puts qrux's back. */
    struct qx_xdp_config other = got;
    other.rate = 50;
    other.burst = 100;
    assert_int_equal(bpf_map_update_elem(bpf_map__fd(s->maps.qx_config), &zero, &other, BPF_ANY),
                     0);
    qx_xdp_proxy_tick(p, 100); /* also schedules the first key change at 110 */
    assert_int_equal(bpf_map_lookup_elem(bpf_map__fd(s->maps.qx_config), &zero, &got), 0);
    assert_int_equal(got.rate, 7);
    assert_int_equal(got.burst, 9);
    assert_int_equal(got.ports[0], PORT);

    assert_int_equal(qx_cid_make(&keys, 0, a), 0);
    assert_int_equal(verdict_of(s, a), XDP_PASS);
    qx_xdp_proxy_tick(p, 100); /* schedules the first change at 110 */
    assert_int_equal(keys.gen, 0);
    qx_xdp_proxy_tick(p, 110);
    assert_int_equal(keys.gen, 1);
    assert_int_equal(qx_cid_make(&keys, 0, b), 0);
    assert_int_equal(verdict_of(s, b), XDP_PASS);
    assert_int_equal(verdict_of(s, a), XDP_PASS); /* the previous key stays valid */
    qx_xdp_proxy_tick(p, 120);
    assert_int_equal(keys.gen, 2);
    assert_int_equal(verdict_of(s, b), XDP_PASS);
    assert_int_equal(verdict_of(s, a), XDP_DROP); /* two changes ago: retired */

    uint64_t n[QX_XDP_NREASONS];
    int attached = 1;
    qx_xdp_proxy_stats(p, n, &attached);
    assert_int_equal(attached, 0); /* maps, but no link */
    assert_int_equal(n[QX_XDP_PASS_SHORT], 4);
    assert_int_equal(n[QX_XDP_DROP_BAD_CID], 1);

    /* The deny list through the proxy. */
    char err[128];
    const char *list = "[\"198.51.100.0/24\"]";
    assert_int_equal(qx_xdp_proxy_deny_set(p, list, strlen(list), err, sizeof(err)), 0);
    json_t *o = qx_xdp_proxy_deny_get(p);
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(text, "{\"attached\":false,\"denylist\":[\"198.51.100.0/24\"]}");
    free(text);
    json_decref(o);

    /* Detach and attach again: new maps under the same pins. The proxy
     * notices on its next tick and loads its keys into them. */
    assert_int_equal(bpf_object__unpin_maps(s->obj, pin), 0);
    qx_xdp_proxy_tick(p, 121);
    qx_xdp_proxy_stats(p, n, &attached);
    assert_int_equal(n[QX_XDP_PASS_SHORT], 0); /* gone: zeros */
    struct xdp_quic *s2 = load_pinned();
    memset(c, 0x5a, sizeof(c));
    assert_int_equal(verdict_of(s2, c), XDP_PASS); /* no key yet: no_key */
    qx_xdp_proxy_tick(p, 122);
    assert_int_equal(verdict_of(s2, b), XDP_PASS);
    memcpy(c, b, sizeof(c));
    c[5] ^= 1;
    assert_int_equal(verdict_of(s2, c), XDP_DROP);
    assert_int_equal(bpf_map_lookup_elem(bpf_map__fd(s2->maps.qx_config), &zero, &got), 0);
    assert_int_equal(got.rate, 7);

    qx_xdp_proxy_close(p);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    qx_xdp_proxy_del(p);

    /* A restarted proxy takes the next generation: the old CIDs stop. */
    qx_cid_keys_t keys2;
    assert_int_equal(qx_cid_keys_init(&keys2, 0), 0);
    cfg.cid_key_rotate_secs = 0;
    assert_int_equal(qx_xdp_proxy_new(&p, &cfg, &keys2, &loop), 0);
    assert_int_equal(keys2.gen, 3);
    assert_int_equal(qx_cid_make(&keys2, 1, a), 0);
    assert_int_equal(verdict_of(s2, a), XDP_PASS);
    assert_int_equal(verdict_of(s2, b), XDP_DROP);
    qx_xdp_proxy_close(p);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    qx_xdp_proxy_del(p);
    assert_int_equal(uv_loop_close(&loop), 0);

    bpf_object__unpin_maps(s2->obj, pin);
    xdp_quic__destroy(s2);
    xdp_quic__destroy(s);
}

/* Without pins (or without an xdp: section) everything reads as zero. */
static void without_filter(void **state)
{
    uv_loop_t loop;
    qx_cid_keys_t keys;
    qx_xdp_proxy_t *p = NULL;
    qx_xdp_cfg_t cfg = {.pin = pin, .initial_rate = 1, .initial_burst = 1};
    uint64_t n[QX_XDP_NREASONS];
    int attached = 1;
    char err[128];
    (void)state;

    qx_xdp_proxy_stats(NULL, n, &attached);
    assert_int_equal(attached, 0);
    assert_int_equal(qx_xdp_proxy_deny_set(NULL, "[]", 2, err, sizeof(err)), QX_ERR_NOTFOUND);
    assert_int_equal(qx_xdp_proxy_deny_set(NULL, "[1]", 3, err, sizeof(err)), QX_ERR_INVAL);

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(qx_cid_keys_init(&keys, 0), 0);
    assert_int_equal(qx_xdp_proxy_new(&p, &cfg, &keys, &loop), 0);
    qx_xdp_proxy_tick(p, 5);
    qx_xdp_proxy_stats(p, n, &attached);
    for (int r = 0; r < QX_XDP_NREASONS; r++)
        assert_int_equal(n[r], 0);
    assert_int_equal(attached, 0);
    json_t *o = qx_xdp_proxy_deny_get(p);
    assert_int_equal(json_array_size(json_object_get(o, "denylist")), 0);
    json_decref(o);
    assert_int_equal(qx_xdp_proxy_deny_set(p, "[]", 2, err, sizeof(err)), QX_ERR_NOTFOUND);
    qx_xdp_proxy_close(p);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    qx_xdp_proxy_del(p);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* The xdp: keys need a restart: the filter got the rate at start, and a
 * live change would make qrux and the filter disagree. */
static void reload_refuses_xdp_changes(void **state)
{
    static const char base[] = "server:\n  listen: \"[::]:8443\"\n  cert: c.pem\n  key: k.pem\n"
                               "routes:\n  - match: \"*\"\n    upstream: \"127.0.0.1:8080\"\n";
    char y[512], err[256];
    qx_config_t *cfg = NULL;
    qx_snapshot_t *snap = NULL;
    qx_runtime_t rt;
    uint64_t gen = 0;
    (void)state;

    snprintf(y, sizeof(y), "%sxdp:\n  initial_rate: 50\n", base);
    assert_int_equal(qx_config_load_buf(y, strlen(y), NULL, &cfg, err, sizeof(err)), 0);
    assert_int_equal(qx_snapshot_new(&snap, cfg, 1, NULL, NULL), 0);
    assert_int_equal(qx_runtime_init(&rt, snap), 0);
    const char *changes[][2] = {
        {"xdp:\n  initial_rate: 51\n", "xdp.initial_rate"},
        {"xdp:\n  initial_burst: 5\n", "xdp.initial_burst"},
        {"xdp:\n  pin: /sys/fs/bpf/other\n", "xdp.pin"},
        {"", "xdp.pin"}, /* the section removed */
        {"xdp:\n  cid_key_rotate_secs: 9\n", "xdp.cid_key_rotate_secs"},
    };
    for (size_t i = 0; i < sizeof(changes) / sizeof(changes[0]); i++) {
        snprintf(y, sizeof(y), "%s%s", base, changes[i][0]);
        assert_int_equal(qx_config_load_buf(y, strlen(y), NULL, &cfg, err, sizeof(err)), 0);
        assert_int_equal(qx_runtime_publish(&rt, cfg, QX_SRC_FILE, 0, &gen, err, sizeof(err)),
                         QX_ERR_CONFIG);
        assert_non_null(strstr(err, changes[i][1]));
    }
    snprintf(y, sizeof(y), "%sxdp:\n  initial_rate: 50\n", base); /* unchanged: applies */
    assert_int_equal(qx_config_load_buf(y, strlen(y), NULL, &cfg, err, sizeof(err)), 0);
    assert_int_equal(qx_runtime_publish(&rt, cfg, QX_SRC_FILE, 0, &gen, err, sizeof(err)), 0);
    assert_int_equal(gen, 2);
    qx_runtime_free(&rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(keys_rate_rotation_reattach),
        cmocka_unit_test(without_filter),
        cmocka_unit_test(reload_refuses_xdp_changes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
