/*
 * xdp_quic_maps.h - the maps of the XDP program. The loader pins each one
 * under the pin directory by its name (xdp_quic_consts.h); the proxy opens
 * them there. Value layouts are in xdp_quic_consts.h.
 */
#ifndef QX_XDP_QUIC_MAPS_H
#define QX_XDP_QUIC_MAPS_H

#include "xdp_quic_consts.h"

#include <bpf/bpf_helpers.h>
#include <linux/bpf.h>

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct qx_xdp_config);
} qx_config SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, struct qx_xdp_cid_key);
} qx_keys SEC(".maps");

/* Initial token bucket per source; LRU so a flood of sources evicts the
 * oldest instead of filling up (an evicted source starts with a full
 * bucket: the limit is per source, the deny list is for the rest). */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, QX_XDP_BUCKETS);
    __type(key, struct qx_xdp_src);
    __type(value, struct qx_xdp_bucket);
} qx_buckets SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, QX_XDP_DENY_MAX);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct qx_xdp_lpm4);
    __type(value, __u8);
} qx_deny4 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, QX_XDP_DENY_MAX);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct qx_xdp_lpm6);
    __type(value, __u8);
} qx_deny6 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, QX_XDP_NREASONS);
    __type(key, __u32);
    __type(value, __u64);
} qx_counters SEC(".maps");

#endif /* QX_XDP_QUIC_MAPS_H */
