/*
 * env.h - a qrux worker inside a fuzz target: a config from YAML, its
 * snapshot, the runtime and shared state main() would build, and one
 * worker whose loop the target turns itself (no thread). The TLS
 * certificate is fuzz/cert.pem (a throwaway self-signed one, not a secret).
 *
 * Built once per process and kept: libFuzzer calls the target millions of
 * times and the worker's state (pools, endpoints) is what is fuzzed.
 */
#ifndef QX_FUZZ_ENV_H
#define QX_FUZZ_ENV_H

#include "config/config.h"
#include "worker/runtime.h"
#include "conf/snapshot.h"
#include "front/quic/tls.h"
#include "worker/worker.h"

#include <stddef.h>
#include <stdint.h>

typedef struct fuzz_env {
    qx_runtime_t rt;
    qx_shared_t shared;
    qx_tls_keys_t keys;
    qx_worker_t w;
} fuzz_env_t;

/*
 * Builds the environment from a YAML document with "%CERT%" and "%KEY%"
 * standing for the test certificate's paths. The UDP listener binds an
 * ephemeral port on 127.0.0.1 whatever server.listen says (its port is
 * replaced by 0). Aborts on any failure: a broken harness is not a finding.
 */
fuzz_env_t *fuzz_env_new(const char *yaml);

/* Runs |turns| non-blocking turns of the worker's loop. */
void fuzz_env_turns(fuzz_env_t *e, int turns);

/* A 127.0.0.1 TCP port nothing listens on (bound, then closed). */
uint16_t fuzz_env_closed_port(void);

#endif
