/*
 * xdp_quic_test.c - the XDP program (bpf/xdp_quic.bpf.c) loaded into the
 * kernel from its skeleton and run on crafted frames through
 * bpf_prog_test_run_opts: a fixture table {description, frame, expected
 * verdict and reason}, truncations at every offset, the deny list, the CID
 * keys (new, previous, retired, none) and the Initial token bucket.
 * Needs CAP_BPF and CAP_PERFMON (CI runs as root).
 */
#include "base/cid.h"
#include "base/qx.h"
#include "xdp_frames.h"
#include "xdp/xdp_maps.h"
#include "xdp_quic.skel.h"
#include "bpf/xdp_quic_consts.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

static struct xdp_quic *skel;
static qx_xdp_maps_t maps;
static qx_cid_keys_t keys; /* generation 9 (current) and 8 (previous) */
static uint8_t cid_cur[QX_CID_LEN], cid_prev[QX_CID_LEN], cid_retired[QX_CID_LEN];

/* ---- running ----------------------------------------------------------- */

static uint64_t counters[QX_XDP_NREASONS];

static int run(const uint8_t *f, size_t len, uint32_t *ret)
{
    LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = f, .data_size_in = (uint32_t)len, .repeat = 1);
    int rv = bpf_prog_test_run_opts(bpf_program__fd(skel->progs.qx_xdp_quic), &o);
    *ret = o.retval;
    return rv;
}

/* Runs |f| and checks the verdict and that exactly the counter of |reason|
 * moved, by one. */
static void expect(const char *what, const uint8_t *f, size_t len, int reason)
{
    uint64_t after[QX_XDP_NREASONS];
    uint32_t ret;
    qx_xdp_maps_counters(&maps, counters);
    assert_int_equal(run(f, len, &ret), 0);
    qx_xdp_maps_counters(&maps, after);
    int want = reason >= QX_XDP_FIRST_DROP ? XDP_DROP : XDP_PASS;
    if ((int)ret != want || after[reason] != counters[reason] + 1) {
        int got = -1;
        for (int r = 0; r < QX_XDP_NREASONS; r++)
            if (after[r] != counters[r])
                got = r;
        fail_msg("%s (%zu bytes): verdict %u reason %s, want %d %s", what, len, ret,
                 got < 0 ? "none" : qx_xdp_reason_name(got), want, qx_xdp_reason_name(reason));
    }
}

static void set_config(uint32_t rate, uint32_t burst)
{
    struct qx_xdp_config c = {.ports = {443, PORT}, .nports = 2, .rate = rate, .burst = burst};
    uint32_t zero = 0;
    assert_int_equal(bpf_map_update_elem(maps.config, &zero, &c, BPF_ANY), 0);
}

static int setup(void **state)
{
    (void)state;
    skel = xdp_quic__open_and_load();
    if (skel == NULL) {
        fprintf(stderr,
                "loading the XDP program failed (needs CAP_BPF and CAP_PERFMON, run as root)\n");
        return -1;
    }
    qx_xdp_maps_init(&maps);
    maps.config = bpf_map__fd(skel->maps.qx_config);
    maps.keys = bpf_map__fd(skel->maps.qx_keys);
    maps.deny4 = bpf_map__fd(skel->maps.qx_deny4);
    maps.deny6 = bpf_map__fd(skel->maps.qx_deny6);
    maps.counters = bpf_map__fd(skel->maps.qx_counters);
    set_config(0, 0);

    /* A CID of generation 7, then keys 8 and 9: 7 is retired. */
    assert_int_equal(qx_cid_keys_init(&keys, 7), 0);
    assert_int_equal(qx_cid_make(&keys, 0, cid_retired), 0);
    assert_int_equal(qx_cid_keys_rotate(&keys), 0);
    assert_int_equal(qx_cid_make(&keys, 1, cid_prev), 0);
    assert_int_equal(qx_cid_keys_rotate(&keys), 0);
    assert_int_equal(qx_cid_make(&keys, 1, cid_cur), 0);
    assert_int_equal(qx_xdp_maps_publish_keys(&maps, &keys), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    xdp_quic__destroy(skel); /* closes the map fds maps borrowed */
    return 0;
}

/* ---- the table --------------------------------------------------------- */

static void fixtures(void **state)
{
    static const frame_spec_t v4 = {0}, v6 = {.v6 = 1}, vlan4 = {.vlans = 1},
                              qinq6 = {.v6 = 1, .vlans = 2}, other_port = {.dport = 4434},
                              tcp = {.proto = IPPROTO_TCP}, frag = {.frag = 1},
                              v4_443 = {.dport = 443}, ext1 = {.v6 = 1, .exthdrs = 1},
                              ext3_vlan = {.v6 = 1, .vlans = 1, .exthdrs = 3},
                              ext4 = {.v6 = 1, .exthdrs = 4}, frag6 = {.v6 = 1, .frag = 1},
                              ext_frag6 = {.v6 = 1, .exthdrs = 1, .frag = 1};
    uint8_t forged[QX_CID_LEN];
    memcpy(forged, cid_cur, sizeof(forged));
    forged[QX_CID_MAC_OFF] ^= 0x80;
    uint8_t gen_unknown[QX_CID_LEN];
    memcpy(gen_unknown, cid_cur, sizeof(gen_unknown));
    gen_unknown[QX_CID_GEN] = 0x42;

    struct {
        const char *what;
        const frame_spec_t *spec;
        int kind; /* 0 Initial, 1 long header(version,type,dcil,scil), 2 short header, 3 raw */
        uint32_t version;
        int type;
        size_t dcil, scil, dlen;
        const uint8_t *cid;
        int reason;
    } t[] = {
        {"IPv4 full Initial", &v4, 0, 0, 0, 0, 0, 1200, NULL, QX_XDP_PASS_INITIAL},
        {"IPv4 Initial to the second port", &v4_443, 0, 0, 0, 0, 0, 1350, NULL,
         QX_XDP_PASS_INITIAL},
        {"IPv6 full Initial", &v6, 0, 0, 0, 0, 0, 1252, NULL, QX_XDP_PASS_INITIAL},
        {"802.1Q IPv4 full Initial", &vlan4, 0, 0, 0, 0, 0, 1200, NULL, QX_XDP_PASS_INITIAL},
        {"QinQ IPv6 full Initial", &qinq6, 0, 0, 0, 0, 0, 1200, NULL, QX_XDP_PASS_INITIAL},
        {"IPv4 short Initial", &v4, 0, 0, 0, 0, 0, 1199, NULL, QX_XDP_DROP_INITIAL_SMALL},
        {"IPv6 short Initial", &v6, 0, 0, 0, 0, 0, 300, NULL, QX_XDP_DROP_INITIAL_SMALL},
        {"QinQ IPv6 short Initial", &qinq6, 0, 0, 0, 0, 0, 1000, NULL, QX_XDP_DROP_INITIAL_SMALL},
        {"v2 full Initial (type 1)", &v4, 1, QX_QUIC_V2, 1, 8, 0, 1200, NULL, QX_XDP_PASS_INITIAL},
        {"v2 short Initial", &v4, 1, QX_QUIC_V2, 1, 8, 0, 400, NULL, QX_XDP_DROP_INITIAL_SMALL},
        {"v2 Retry type 0 is no Initial", &v4, 1, QX_QUIC_V2, 0, 8, 8, 100, NULL, QX_XDP_PASS_LONG},
        {"v1 Handshake", &v6, 1, QX_QUIC_V1, 2, 18, 8, 150, NULL, QX_XDP_PASS_LONG},
        {"v1 0-RTT", &v4, 1, QX_QUIC_V1, 1, 8, 8, 200, NULL, QX_XDP_PASS_LONG},
        {"Initial DCID 7", &v4, 1, QX_QUIC_V1, 0, 7, 8, 1200, NULL, QX_XDP_DROP_DCID_SHORT},
        {"Initial DCID 0", &v6, 1, QX_QUIC_V1, 0, 0, 0, 1200, NULL, QX_XDP_DROP_DCID_SHORT},
        {"Initial DCID 20", &v4, 1, QX_QUIC_V1, 0, 20, 20, 1200, NULL, QX_XDP_PASS_INITIAL},
        {"Initial DCID 21", &v4, 1, QX_QUIC_V1, 0, 21, 8, 1200, NULL, QX_XDP_DROP_CID_LONG},
        {"Handshake DCID 255", &v4, 1, QX_QUIC_V1, 2, 255, 0, 400, NULL, QX_XDP_DROP_CID_LONG},
        {"Initial SCID 21", &v6, 1, QX_QUIC_V1, 0, 8, 21, 1200, NULL, QX_XDP_DROP_CID_LONG},
        {"unknown version, short", &v4, 1, 0x1a2a3a4a, 0, 8, 8, 60, NULL, QX_XDP_PASS_VERSION},
        {"unknown version, long DCID", &v4, 1, 0xff00001d, 0, 40, 8, 60, NULL, QX_XDP_PASS_VERSION},
        {"version 0 (negotiation)", &v6, 1, 0, 0, 8, 8, 60, NULL, QX_XDP_PASS_VERSION},
        {"long header, 6 bytes", &v4, 1, QX_QUIC_V1, 0, 0, 0, 6, NULL, QX_XDP_DROP_TOO_SHORT},
        {"long header cut in the DCID", &v4, 1, QX_QUIC_V1, 2, 20, 0, 20, NULL,
         QX_XDP_DROP_TOO_SHORT},
        {"empty datagram", &v4, 3, 0, 0, 0, 0, 0, NULL, QX_XDP_DROP_TOO_SHORT},
        {"short header, current key", &v4, 2, 0, 0, 0, 0, 60, cid_cur, QX_XDP_PASS_SHORT},
        {"short header, previous key", &v6, 2, 0, 0, 0, 0, 60, cid_prev, QX_XDP_PASS_SHORT},
        {"VLAN short header, current key", &vlan4, 2, 0, 0, 0, 0, 1400, cid_cur, QX_XDP_PASS_SHORT},
        {"short header, retired key", &v4, 2, 0, 0, 0, 0, 60, cid_retired, QX_XDP_DROP_BAD_CID},
        {"short header, forged MAC", &v4, 2, 0, 0, 0, 0, 60, forged, QX_XDP_DROP_BAD_CID},
        {"short header, unknown generation", &v6, 2, 0, 0, 0, 0, 60, gen_unknown,
         QX_XDP_DROP_BAD_CID},
        {"short header, 18 bytes", &v4, 2, 0, 0, 0, 0, 18, cid_cur, QX_XDP_DROP_TOO_SHORT},
        {"other UDP port", &other_port, 0, 0, 0, 0, 0, 300, NULL, QX_XDP_PASS_OTHER},
        {"TCP to the QUIC port", &tcp, 3, 0, 0, 0, 0, 10, NULL, QX_XDP_PASS_OTHER},
        {"IPv4 fragment", &frag, 0, 0, 0, 0, 0, 300, NULL, QX_XDP_PASS_OTHER},
        /* IPv6 extension headers do not get a datagram past the checks. */
        {"IPv6 + dest options, full Initial", &ext1, 0, 0, 0, 0, 0, 1200, NULL,
         QX_XDP_PASS_INITIAL},
        {"IPv6 + dest options, short Initial", &ext1, 0, 0, 0, 0, 0, 300, NULL,
         QX_XDP_DROP_INITIAL_SMALL},
        {"VLAN IPv6 + 3 ext headers, forged short header", &ext3_vlan, 2, 0, 0, 0, 0, 60, forged,
         QX_XDP_DROP_BAD_CID},
        {"VLAN IPv6 + 3 ext headers, short header, current key", &ext3_vlan, 2, 0, 0, 0, 0, 60,
         cid_cur, QX_XDP_PASS_SHORT},
        {"IPv6 + 4 ext headers: beyond the walk", &ext4, 0, 0, 0, 0, 0, 300, NULL,
         QX_XDP_PASS_OTHER},
        {"IPv6 fragment header", &frag6, 0, 0, 0, 0, 0, 300, NULL, QX_XDP_PASS_OTHER},
        {"IPv6 dest options then fragment header", &ext_frag6, 0, 0, 0, 0, 0, 300, NULL,
         QX_XDP_PASS_OTHER},
    };
    uint8_t p[FRAME_MAX], f[FRAME_MAX];
    (void)state;

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        size_t plen = 0;
        switch (t[i].kind) {
        case 0:
            plen = initial(p, t[i].dlen);
            break;
        case 1:
            plen = long_hdr(p, t[i].version, t[i].type, t[i].dcil, t[i].scil, t[i].dlen);
            break;
        case 2:
            plen = short_hdr(p, t[i].cid, t[i].dlen);
            break;
        default:
            memset(p, 0x5a, t[i].dlen);
            plen = t[i].dlen;
        }
        expect(t[i].what, f, frame(f, t[i].spec, p, plen), t[i].reason);
    }

    /* RFC 9287: a peer may grease the fixed bit (0x40) once the other side
     * allows it; the filter never looks at it. */
    size_t plen = initial(p, 1200);
    p[0] &= (uint8_t)~0x40;
    expect("greased fixed bit, full Initial", f, frame(f, &v4, p, plen), QX_XDP_PASS_INITIAL);
    plen = initial(p, 1000);
    p[0] &= (uint8_t)~0x40;
    expect("greased fixed bit, short Initial", f, frame(f, &v4, p, plen),
           QX_XDP_DROP_INITIAL_SMALL);
    plen = long_hdr(p, QX_QUIC_V1, 2, 8, 8, 150);
    p[0] &= (uint8_t)~0x40;
    expect("greased fixed bit, Handshake", f, frame(f, &v6, p, plen), QX_XDP_PASS_LONG);
    plen = short_hdr(p, cid_cur, 60);
    p[0] = 0x00;
    expect("greased fixed bit, short header, current key", f, frame(f, &v4, p, plen),
           QX_XDP_PASS_SHORT);
    plen = short_hdr(p, forged, 60);
    p[0] = 0x1f;
    expect("greased fixed bit, short header, forged", f, frame(f, &v4, p, plen),
           QX_XDP_DROP_BAD_CID);

    /* Not IP at all (ARP). */
    memset(f, 0, 60);
    f[12] = 0x08;
    f[13] = 0x06;
    expect("ARP", f, 60, QX_XDP_PASS_OTHER);
}

/* Every prefix of a valid frame: cut in the link, IP or UDP header it is
 * not QUIC (the stack drops it); cut in the QUIC header it is too short;
 * cut after the header an Initial is under 1200 bytes and a short header
 * is complete. IP and UDP lengths still claim the whole datagram. Five
 * encapsulations, one with IPv6 extension headers. */
static void truncated(void **state)
{
    static const frame_spec_t specs[] = {
        {0}, {.v6 = 1}, {.vlans = 2}, {.v6 = 1, .vlans = 1}, {.v6 = 1, .exthdrs = 2}};
    uint8_t p[FRAME_MAX], f[FRAME_MAX];
    char what[96];
    (void)state;

    for (size_t s = 0; s < sizeof(specs) / sizeof(specs[0]); s++) {
        size_t hdr = frame(f, &specs[s], p, 0); /* link + IP + UDP */
        for (int kind = 0; kind < 2; kind++) {
            size_t plen = kind == 0 ? initial(p, 1200) : short_hdr(p, cid_cur, 40);
            size_t full = frame(f, &specs[s], p, plen);
            for (size_t len = ETH_HLEN; len <= full; len++) {
                size_t dlen = len - hdr;
                int want;
                if (len < hdr)
                    want = QX_XDP_PASS_OTHER;
                else if (kind == 0)
                    want = dlen < 7 + 8 + 8 ? QX_XDP_DROP_TOO_SHORT
                           : dlen < 1200    ? QX_XDP_DROP_INITIAL_SMALL
                                            : QX_XDP_PASS_INITIAL;
                else
                    want = dlen < 1 + QX_CID_LEN ? QX_XDP_DROP_TOO_SHORT : QX_XDP_PASS_SHORT;
                snprintf(what, sizeof(what), "%s cut at %zu (spec %zu)",
                         kind == 0 ? "Initial" : "short header", len, s);
                expect(what, f, len, want);
            }
        }
    }
}

static void deny_list(void **state)
{
    uint8_t p[FRAME_MAX], f[FRAME_MAX];
    char err[256];
    const char *list = "[\"203.0.113.0/24\", \"2001:db8:bad::/48\", \"198.18.0.7\"]";
    (void)state;

    assert_int_equal(qx_xdp_deny_set(&maps, list, strlen(list), err, sizeof(err)), 0);
    size_t plen = initial(p, 1200);
    frame_spec_t s = {.src = "203.0.113.77"};
    expect("IPv4 in a denied /24", f, frame(f, &s, p, plen), QX_XDP_DROP_DENY);
    s.src = "198.18.0.7";
    expect("denied IPv4 host", f, frame(f, &s, p, plen), QX_XDP_DROP_DENY);
    s.src = "198.18.0.8";
    expect("its neighbour", f, frame(f, &s, p, plen), QX_XDP_PASS_INITIAL);
    s = (frame_spec_t){.v6 = 1, .vlans = 1, .src = "2001:db8:bad:ffff::1"};
    expect("IPv6 in a denied /48, VLAN", f, frame(f, &s, p, short_hdr(p, cid_cur, 50)),
           QX_XDP_DROP_DENY);
    s.src = "2001:db8:bae::1";
    plen = initial(p, 1200);
    expect("IPv6 outside it", f, frame(f, &s, p, plen), QX_XDP_PASS_INITIAL);
    s = (frame_spec_t){.proto = IPPROTO_TCP, .src = "203.0.113.77"};
    expect("denied source, TCP", f, frame(f, &s, p, 10), QX_XDP_PASS_OTHER);
    /* What the walk cannot judge still meets the deny list: the stack
     * reassembles a fragment, and walks a longer header chain, and hands
     * the datagram to qrux. */
    plen = initial(p, 1200);
    s = (frame_spec_t){.frag = 1, .src = "203.0.113.77"};
    expect("denied source, IPv4 UDP fragment", f, frame(f, &s, p, plen), QX_XDP_DROP_DENY);
    s.src = "198.18.0.8";
    expect("another source, IPv4 UDP fragment", f, frame(f, &s, p, plen), QX_XDP_PASS_OTHER);
    s = (frame_spec_t){.v6 = 1, .frag = 1, .src = "2001:db8:bad::1"};
    expect("denied source, IPv6 atomic fragment of UDP", f, frame(f, &s, p, plen),
           QX_XDP_DROP_DENY);
    s = (frame_spec_t){.v6 = 1, .exthdrs = 4, .src = "2001:db8:bad::1"};
    expect("denied source, IPv6 + 4 ext headers", f, frame(f, &s, p, plen), QX_XDP_DROP_DENY);
    s.src = "2001:db8:bae::1";
    expect("another source, IPv6 + 4 ext headers", f, frame(f, &s, p, plen), QX_XDP_PASS_OTHER);
    s = (frame_spec_t){.v6 = 1, .frag = 1, .proto = IPPROTO_TCP, .src = "2001:db8:bad::1"};
    expect("denied source, IPv6 fragment of TCP", f, frame(f, &s, p, 10), QX_XDP_PASS_OTHER);

    json_t *got = qx_xdp_deny_get(&maps);
    assert_int_equal(json_array_size(got), 3);
    json_decref(got);

    /* A bad element changes nothing and is named. */
    const char *bad = "[\"10.0.0.0/8\", \"10.0.0.0/33\"]";
    assert_int_equal(qx_xdp_deny_set(&maps, bad, strlen(bad), err, sizeof(err)), QX_ERR_INVAL);
    assert_non_null(strstr(err, "[1]"));
    s = (frame_spec_t){.src = "203.0.113.77"};
    expect("still denied", f, frame(f, &s, p, plen), QX_XDP_DROP_DENY);

    assert_int_equal(qx_xdp_deny_set(&maps, "[]", 2, err, sizeof(err)), 0);
    expect("list emptied", f, frame(f, &s, p, plen), QX_XDP_PASS_INITIAL);
}

/* Without any key (before the proxy has shared one) short headers pass. */
static void no_key(void **state)
{
    uint8_t p[FRAME_MAX], f[FRAME_MAX];
    struct qx_xdp_cid_key none = {0};
    frame_spec_t s = {0};
    (void)state;

    for (uint32_t slot = 0; slot < 2; slot++)
        assert_int_equal(bpf_map_update_elem(maps.keys, &slot, &none, BPF_ANY), 0);
    expect("no key: a random DCID", f, frame(f, &s, p, short_hdr(p, cid_retired, 60)),
           QX_XDP_PASS_NO_KEY);
    assert_int_equal(qx_xdp_maps_publish_keys(&maps, &keys), 0);
    expect("keys back: the same DCID", f, frame(f, &s, p, short_hdr(p, cid_retired, 60)),
           QX_XDP_DROP_BAD_CID);
}

/* burst 3 at 1 per second: three Initials, then the fourth is dropped;
 * once the bucket's clock is two seconds older, two more pass. IPv6
 * sources share the bucket of their /64. */
static void token_bucket(void **state)
{
    uint8_t p[FRAME_MAX], f[FRAME_MAX];
    (void)state;

    set_config(1, 3);
    size_t plen = initial(p, 1200);
    frame_spec_t s = {.src = "192.0.2.99"};
    for (int i = 0; i < 3; i++)
        expect("within the burst", f, frame(f, &s, p, plen), QX_XDP_PASS_INITIAL);
    expect("over the burst", f, frame(f, &s, p, plen), QX_XDP_DROP_RATE);
    expect("still over", f, frame(f, &s, p, plen), QX_XDP_DROP_RATE);
    s.src = "192.0.2.98";
    expect("another source has its own bucket", f, frame(f, &s, p, plen), QX_XDP_PASS_INITIAL);
    s.src = "192.0.2.99";
    expect("short headers are not counted", f, frame(f, &s, p, short_hdr(p, cid_cur, 60)),
           QX_XDP_PASS_SHORT);
    plen = initial(p, 1200);

    /* Refill: move the bucket's last refill two seconds into the past. */
    struct qx_xdp_src key = {.addr = {[10] = 0xff, [11] = 0xff}};
    inet_pton(AF_INET, "192.0.2.99", key.addr + 12);
    struct qx_xdp_bucket b;
    int fd = bpf_map__fd(skel->maps.qx_buckets);
    assert_int_equal(bpf_map_lookup_elem(fd, &key, &b), 0);
    assert_true(b.tokens < QX_XDP_NS);
    b.last_ns -= 2 * QX_XDP_NS;
    assert_int_equal(bpf_map_update_elem(fd, &key, &b, BPF_EXIST), 0);
    expect("refilled, 1", f, frame(f, &s, p, plen), QX_XDP_PASS_INITIAL);
    expect("refilled, 2", f, frame(f, &s, p, plen), QX_XDP_PASS_INITIAL);
    expect("empty again", f, frame(f, &s, p, plen), QX_XDP_DROP_RATE);

    frame_spec_t s6 = {.v6 = 1, .src = "2001:db8:77:1::1"};
    for (int i = 0; i < 3; i++) {
        char a[64];
        snprintf(a, sizeof(a), "2001:db8:77:1::%x", i + 1); /* same /64, new address */
        s6.src = a;
        expect("IPv6 /64 within the burst", f, frame(f, &s6, p, plen), QX_XDP_PASS_INITIAL);
    }
    s6.src = "2001:db8:77:1:ffff::9";
    expect("IPv6 /64 over the burst", f, frame(f, &s6, p, plen), QX_XDP_DROP_RATE);
    s6.src = "2001:db8:77:2::1";
    expect("the next /64 is another source", f, frame(f, &s6, p, plen), QX_XDP_PASS_INITIAL);
    set_config(0, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fixtures), cmocka_unit_test(truncated),    cmocka_unit_test(deny_list),
        cmocka_unit_test(no_key),   cmocka_unit_test(token_bucket),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
