/* log.c - leveled logging to stderr (see log.h). */
#include "log.h"

#include "qx.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

qx_log_level_t qx_log_level = QX_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int qx_log_init(void)
{
    const char *v = getenv("QRUX_LOG");
    if (v == NULL || *v == '\0')
        return 0;
    for (size_t i = 0; i < QX_ARRAY_LEN(level_names); i++) {
        if (strcmp(v, level_names[i]) == 0) {
            qx_log_level = (qx_log_level_t)i;
            return 0;
        }
    }
    qx_log(QX_LOG_WARN, "QRUX_LOG=%s is not one of error|warn|info|debug; using info", v);
    return QX_ERR_CONFIG;
}

void qx_log(qx_log_level_t lvl, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    size_t n;
    va_list ap;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ %-5s ", ts.tv_nsec / 1000000L,
                          level_names[lvl]);
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += QX_MIN((size_t)m, sizeof(line) - n - 2);
    line[n++] = '\n';
    fwrite(line, 1, n, stderr);
}
