/*
 * cid.c - making and checking qrux's server connection IDs (format in
 * cid.h). The same MAC is checked in the kernel by bpf/xdp_quic.bpf.c.
 */
#include "base/cid.h"
#include "base/qx.h"

#include <string.h>
#include <sys/random.h>

static int fill_random(uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r == -1)
            return QX_ERR_IO;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int qx_cid_keys_init(qx_cid_keys_t *keys, uint32_t gen)
{
    memset(keys, 0, sizeof(*keys));
    __atomic_store_n(&keys->gen, gen, __ATOMIC_RELEASE);
    return fill_random(keys->key[gen & 1], QX_CID_KEY_LEN);
}

void qx_cid_keys_advance(qx_cid_keys_t *keys, const uint8_t *key)
{
    uint32_t next = __atomic_load_n(&keys->gen, __ATOMIC_ACQUIRE) + 1;
    /* The slot of gen - 1, which no worker reads: workers read gen's. */
    memcpy(keys->key[next & 1], key, QX_CID_KEY_LEN);
    keys->has_prev = 1;
    __atomic_store_n(&keys->gen, next, __ATOMIC_RELEASE);
}

int qx_cid_keys_rotate(qx_cid_keys_t *keys)
{
    uint8_t key[QX_CID_KEY_LEN];
    if (fill_random(key, sizeof(key)) != 0)
        return QX_ERR_IO;
    qx_cid_keys_advance(keys, key);
    return 0;
}

static void put_mac(uint8_t *cid, unsigned mac)
{
    for (int i = 0; i < QX_CID_MAC_LEN; i++)
        cid[QX_CID_MAC_OFF + i] = (uint8_t)(mac >> (8 * i));
}

int qx_cid_make(const qx_cid_keys_t *keys, unsigned worker, uint8_t *cid)
{
    uint32_t gen = __atomic_load_n(&keys->gen, __ATOMIC_ACQUIRE);
    if (fill_random(cid, QX_CID_LEN) != 0)
        return QX_ERR_IO;
    cid[QX_CID_WORKER] = (uint8_t)worker;
    cid[QX_CID_GEN] = (uint8_t)gen;
    put_mac(cid, qx_cid_mac(keys->key[gen & 1], cid));
    return 0;
}

static int mac_ok(const uint8_t *key, const uint8_t *cid)
{
    uint8_t want[QX_CID_LEN];
    memcpy(want, cid, QX_CID_LEN);
    put_mac(want, qx_cid_mac(key, cid));
    return memcmp(want + QX_CID_MAC_OFF, cid + QX_CID_MAC_OFF, QX_CID_MAC_LEN) == 0;
}

int qx_cid_verify(const qx_cid_keys_t *keys, const uint8_t *cid, size_t len)
{
    uint32_t gen = __atomic_load_n(&keys->gen, __ATOMIC_ACQUIRE);
    if (len != QX_CID_LEN)
        return 0;
    if (cid[QX_CID_GEN] == (uint8_t)gen)
        return mac_ok(keys->key[gen & 1], cid);
    if (keys->has_prev && cid[QX_CID_GEN] == (uint8_t)(gen - 1))
        return mac_ok(keys->key[(gen - 1) & 1], cid);
    return 0;
}
