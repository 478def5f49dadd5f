/*
 * fuzz_quic_datagram.c - the QUIC datagram entry of a worker's endpoint
 * (qx_quic_ep_input: the version and connection-ID decode, the CID table
 * lookup, the hand-over test for other workers' CIDs, stateless resets,
 * version negotiation, the admission limits, Retry and the token checks,
 * and for an Initial that passes them a new connection and its first
 * packet) on arbitrary datagrams from arbitrary loopback addresses.
 *
 * Input: byte 0 picks the retry policy (auto, always, never), byte 1 the
 * source address 127.0.0.<b> and its port, then one or more datagrams,
 * each a 2-byte big-endian length and its bytes. Answers go out on the
 * endpoint's socket to those loopback addresses, where nothing listens.
 * The endpoint and its connections persist across inputs (a connection
 * that was never completed dies on the handshake timeout, as in
 * production), so later inputs meet a table with entries in it.
 */
#include "config/config.h"
#include "env.h"
#include "front/quic/quic.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char yaml[] = "server:\n"
                           "  listen: \"127.0.0.1:4433\"\n"
                           "  cert: \"%CERT%\"\n"
                           "  key: \"%KEY%\"\n"
                           "  workers: 1\n"
                           "  limits:\n"
                           "    max_quic_connections: 64\n"
                           "    max_quic_connections_per_ip: 4\n"
                           "    retry_handshakes_threshold: 8\n"
                           "routes:\n"
                           "  - match: \"*\"\n"
                           "    upstream: \"127.0.0.1:9\"\n";

static fuzz_env_t *env;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const qx_retry_t policies[] = {QX_RETRY_AUTO, QX_RETRY_ALWAYS, QX_RETRY_NEVER};
    if (env == NULL)
        env = fuzz_env_new(yaml);
    if (size < 2)
        return 0;
    qx_config_t *cfg = (qx_config_t *)env->w.ctx.snap->cfg;
    cfg->retry = policies[data[0] % 3];

    struct sockaddr_in local = {.sin_family = AF_INET};
    struct sockaddr_in remote = {.sin_family = AF_INET};
    local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    local.sin_port = htons(4433);
    remote.sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)(1 + data[1] % 8));
    remote.sin_port = htons((uint16_t)(40000 + data[1]));
    data += 2;
    size -= 2;

    while (size >= 2) {
        size_t n = (size_t)data[0] << 8 | data[1];
        data += 2;
        size -= 2;
        if (n > size)
            n = size;
        if (n > 0)
            qx_quic_ep_input(env->w.quic, (const struct sockaddr *)&local, sizeof(local),
                             (const struct sockaddr *)&remote, sizeof(remote), data, n);
        data += n;
        size -= n;
    }
    fuzz_env_turns(env, 1); /* sends, deferred closes */
    return 0;
}
