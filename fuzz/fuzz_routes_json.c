/*
 * fuzz_routes_json.c - the body of PUT /routes ({"routes": [...]}) parsed
 * and validated against a base config, as the admin server does. A body is
 * either accepted (and the result copied and shown as GET /routes would)
 * or refused with a reason.
 */
#include "config/config.h"
#include "config/config_json.h"
#include "base/log.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char base_yaml[] = "server:\n"
                                "  listen: \"[::]:8443\"\n"
                                "  cert: cert.pem\n"
                                "  key: key.pem\n"
                                "routes:\n"
                                "  - match: \"*\"\n"
                                "    upstream: \"127.0.0.1:8080\"\n";

static qx_config_t *base;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512] = "", field[256] = "";
    qx_config_t *cfg = NULL;

    if (base == NULL) {
        qx_log_level = QX_LOG_ERROR;
        if (qx_config_load_buf(base_yaml, strlen(base_yaml), "/nonexistent", &base, err,
                               sizeof(err)) != 0)
            abort();
    }
    int rv = qx_config_with_routes_json(base, (const char *)data, size, &cfg, err, sizeof(err),
                                        field, sizeof(field));
    if (rv != 0) {
        if (err[0] == '\0')
            __builtin_trap();
        return 0;
    }
    json_t *j = qx_config_to_json(cfg);
    json_decref(j);
    qx_config_del(cfg);
    return 0;
}
