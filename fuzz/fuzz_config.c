/*
 * fuzz_config.c - the YAML configuration loader (libcyaml schema, then
 * qrux's own validation: addresses, routes, limits, paths) on arbitrary
 * documents. Every input must either load or be refused with a message
 * that names a field; a loaded config is also turned back into JSON (what
 * GET /config shows) and copied, as a reload does.
 */
#include "config/config.h"
#include "config/config_json.h"
#include "base/log.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512] = "";
    qx_config_t *cfg = NULL;

    qx_log_level = QX_LOG_ERROR + 0; /* the loader's warnings are not findings */
    int rv = qx_config_load_buf((const char *)data, size, "/nonexistent", &cfg, err, sizeof(err));
    if (rv != 0) {
        if (err[0] == '\0')
            __builtin_trap(); /* a refusal must say why */
        return 0;
    }
    json_t *j = qx_config_to_json(cfg);
    json_decref(j);
    qx_config_t *dup = qx_config_dup(cfg);
    qx_config_del(dup);
    qx_config_del(cfg);
    return 0;
}
