/*
 * xdp_bench.c - nanoseconds per packet of the XDP filter for each kind of
 * verdict, through bpf_prog_test_run_opts with |repeat| (the kernel runs
 * the program that many times on one frame and reports the mean). The
 * program is loaded from the same skeleton qrux embeds; nothing is
 * attached. Needs CAP_BPF and CAP_PERFMON.
 *
 *   xdp_bench [REPEAT]        (default 1000000; one JSON line per case)
 */
#include "base/cid.h"
#include "xdp_frames.h"
#include "xdp/xdp_maps.h"
#include "xdp_quic.skel.h"
#include "bpf/xdp_quic_consts.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int run(struct xdp_quic *skel, const uint8_t *f, size_t len, unsigned repeat, uint32_t *ret,
               uint32_t *ns)
{
    LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = f, .data_size_in = (uint32_t)len,
                .repeat = repeat);
    int rv = bpf_prog_test_run_opts(bpf_program__fd(skel->progs.qx_xdp_quic), &o);
    *ret = o.retval;
    *ns = o.duration;
    return rv;
}

int main(int argc, char **argv)
{
    unsigned repeat = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 1000000;
    struct xdp_quic *skel = xdp_quic__open_and_load();
    if (skel == NULL) {
        fprintf(stderr, "xdp_bench: cannot load the program (needs CAP_BPF and CAP_PERFMON)\n");
        return 1;
    }
    qx_xdp_maps_t m;
    qx_xdp_maps_init(&m);
    m.config = bpf_map__fd(skel->maps.qx_config);
    m.keys = bpf_map__fd(skel->maps.qx_keys);
    m.deny4 = bpf_map__fd(skel->maps.qx_deny4);
    m.deny6 = bpf_map__fd(skel->maps.qx_deny6);
    m.counters = bpf_map__fd(skel->maps.qx_counters);

    struct qx_xdp_config cfg = {.ports = {PORT}, .nports = 1};
    uint32_t zero = 0;
    bpf_map_update_elem(m.config, &zero, &cfg, BPF_ANY);
    qx_cid_keys_t keys;
    uint8_t cid[QX_CID_LEN], forged[QX_CID_LEN];
    qx_cid_keys_init(&keys, 1);
    qx_cid_keys_rotate(&keys);
    qx_cid_make(&keys, 0, cid);
    memcpy(forged, cid, sizeof(forged));
    forged[QX_CID_MAC_OFF] ^= 1;
    qx_xdp_maps_publish_keys(&m, &keys);
    /* A realistic deny list: 1,000 IPv4 /24s and 1,000 IPv6 /48s. */
    char body[64 * 2000 + 16], *p = body, err[128];
    p += sprintf(p, "[");
    for (int i = 0; i < 1000; i++)
        p += sprintf(p, "%s\"100.%d.%d.0/24\",\"2001:db9:%x::/48\"", i ? "," : "", i / 256, i % 256,
                     i);
    p += sprintf(p, "]");
    if (qx_xdp_deny_set(&m, body, (size_t)(p - body), err, sizeof(err)) != 0) {
        fprintf(stderr, "xdp_bench: deny list: %s\n", err);
        return 1;
    }

    static const frame_spec_t v4 = {0}, v6 = {.v6 = 1}, tcp = {.proto = IPPROTO_TCP},
                              denied = {.src = "100.3.7.9"};
    uint8_t pl[FRAME_MAX], f[FRAME_MAX];
    struct {
        const char *name;
        size_t len;
        int reason;
        uint32_t rate, burst; /* Initial bucket: off (0), huge, or 1/s burst 1 (exhausted) */
        int no_key;           /* run with the CID keys unloaded */
    } c[24];
    size_t n = 0;
    struct {
        uint8_t f[FRAME_MAX];
    } frames[24];

#define ADD_(NAME, SPEC, PAYLOAD_EXPR, REASON, RATE, BURST, NO_KEY)                                \
    do {                                                                                           \
        size_t plen = (PAYLOAD_EXPR);                                                              \
        c[n].len = frame(frames[n].f, &(SPEC), pl, plen);                                          \
        c[n].name = (NAME);                                                                        \
        c[n].reason = (REASON);                                                                    \
        c[n].rate = (RATE);                                                                        \
        c[n].burst = (BURST);                                                                      \
        c[n].no_key = (NO_KEY);                                                                    \
        n++;                                                                                       \
    } while (0)
#define ADD(NAME, SPEC, PAYLOAD_EXPR, REASON, RATE)                                                \
    ADD_(NAME, SPEC, PAYLOAD_EXPR, REASON, RATE, 1000000, 0)

    ADD("tcp (not QUIC)", tcp, (memset(pl, 0, 100), 100), QX_XDP_PASS_OTHER, 0);
    ADD("initial pass, no bucket", v4, initial(pl, 1200), QX_XDP_PASS_INITIAL, 0);
    ADD("initial pass, bucket", v4, initial(pl, 1200), QX_XDP_PASS_INITIAL, 1000000);
    ADD("initial pass ipv6, bucket", v6, initial(pl, 1200), QX_XDP_PASS_INITIAL, 1000000);
    ADD("initial too small (drop)", v4, initial(pl, 300), QX_XDP_DROP_INITIAL_SMALL, 0);
    ADD("short header, valid MAC", v4, short_hdr(pl, cid, 1200), QX_XDP_PASS_SHORT, 0);
    ADD("short header, forged (drop)", v4, short_hdr(pl, forged, 1200), QX_XDP_DROP_BAD_CID, 0);
    ADD("denied source (drop)", denied, initial(pl, 1200), QX_XDP_DROP_DENY, 0);
    ADD("unknown version", v4, long_hdr(pl, 0x1a2a3a4a, 0, 8, 8, 100), QX_XDP_PASS_VERSION, 0);
    ADD("handshake (long header)", v4, long_hdr(pl, QX_QUIC_V1, 2, 18, 8, 1200), QX_XDP_PASS_LONG,
        0);
    ADD("truncated long header (drop)", v4, long_hdr(pl, QX_QUIC_V1, 2, 20, 0, 20),
        QX_XDP_DROP_TOO_SHORT, 0);
    ADD("cid over 20 bytes (drop)", v4, long_hdr(pl, QX_QUIC_V1, 0, 21, 8, 1200),
        QX_XDP_DROP_CID_LONG, 0);
    ADD("initial dcid under 8 (drop)", v4, long_hdr(pl, QX_QUIC_V1, 0, 4, 8, 1200),
        QX_XDP_DROP_DCID_SHORT, 0);
    ADD_("initial over the bucket (drop)", v4, initial(pl, 1200), QX_XDP_DROP_RATE, 1, 1, 0);
    ADD_("short header, no key loaded", v4, short_hdr(pl, forged, 1200), QX_XDP_PASS_NO_KEY, 0,
         1000000, 1);
    (void)f;

    printf("%-30s %8s %10s\n", "case", "verdict", "ns/packet");
    for (size_t i = 0; i < n; i++) {
        uint32_t ret, ns;
        cfg.rate = c[i].rate;
        cfg.burst = c[i].burst;
        bpf_map_update_elem(m.config, &zero, &cfg, BPF_ANY);
        struct qx_xdp_cid_key none = {0};
        for (uint32_t slot = 0; slot < 2 && c[i].no_key; slot++)
            bpf_map_update_elem(m.keys, &slot, &none, BPF_ANY);
        if (!c[i].no_key)
            qx_xdp_maps_publish_keys(&m, &keys);
        if (c[i].reason == QX_XDP_DROP_RATE) {
            /* Empty the source's bucket first: the timed runs all find it so. */
            uint32_t r0, ns0;
            run(skel, frames[i].f, c[i].len, 2, &r0, &ns0);
        }
        if (run(skel, frames[i].f, c[i].len, repeat, &ret, &ns) != 0) {
            fprintf(stderr, "xdp_bench: test run failed for %s\n", c[i].name);
            return 1;
        }
        int want = c[i].reason >= QX_XDP_FIRST_DROP ? XDP_DROP : XDP_PASS;
        if ((int)ret != want) {
            fprintf(stderr, "xdp_bench: %s: verdict %u, want %d\n", c[i].name, ret, want);
            return 1;
        }
        printf("%-30s %8s %10u\n", c[i].name, want == XDP_DROP ? "drop" : "pass", ns);
        fprintf(stderr, "{\"case\":\"%s\",\"reason\":\"%s\",\"ns\":%u,\"repeat\":%u}\n", c[i].name,
                qx_xdp_reason_name(c[i].reason), ns, repeat);
    }
    xdp_quic__destroy(skel);
    return 0;
}
