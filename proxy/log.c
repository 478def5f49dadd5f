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

/* One line: the timestamp, the level, the message, and |tail| when not
 * NULL. */
__attribute__((format(printf, 3, 0))) static void vlog(qx_log_level_t lvl, const char *tail,
                                                       const char *fmt, va_list ap)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    size_t n;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ %-5s ", ts.tv_nsec / 1000000L,
                          level_names[lvl]);
    int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    if (m < 0)
        m = 0;
    n += QX_MIN((size_t)m, sizeof(line) - n - 2);
    if (tail) {
        m = snprintf(line + n, sizeof(line) - n - 1, "%s", tail);
        n += QX_MIN((size_t)(m < 0 ? 0 : m), sizeof(line) - n - 2);
    }
    line[n++] = '\n';
    fwrite(line, 1, n, stderr);
}

void qx_log(qx_log_level_t lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(lvl, NULL, fmt, ap);
    va_end(ap);
}

static uint64_t rl_dropped;

uint64_t qx_log_rl_dropped(void)
{
    return __atomic_load_n(&rl_dropped, __ATOMIC_RELAXED);
}

void qx_log_rl(qx_log_rl_t *rl, qx_log_level_t lvl, const char *fmt, ...)
{
    struct timespec ts;
    char tail[64] = "";
    va_list ap;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t win =
        ((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000) / QX_LOG_RL_WINDOW_MS;
    uint64_t cur = __atomic_load_n(&rl->window, __ATOMIC_ACQUIRE);
    if (cur != win &&
        __atomic_compare_exchange_n(&rl->window, &cur, win, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        __atomic_store_n(&rl->count, 0, __ATOMIC_RELEASE); /* a new window: a new budget */
    if (__atomic_fetch_add(&rl->count, 1, __ATOMIC_ACQ_REL) >= QX_LOG_RL_BURST) {
        __atomic_add_fetch(&rl->suppressed, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&rl_dropped, 1, __ATOMIC_RELAXED);
        return;
    }
    uint64_t dropped = __atomic_exchange_n(&rl->suppressed, 0, __ATOMIC_ACQ_REL);
    if (dropped)
        snprintf(tail, sizeof(tail), " (%llu similar lines suppressed)",
                 (unsigned long long)dropped);
    va_start(ap, fmt);
    vlog(lvl, dropped ? tail : NULL, fmt, ap);
    va_end(ap);
}
