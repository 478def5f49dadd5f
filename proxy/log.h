/*
 * log.h - leveled logging to stderr. The level comes from QRUX_LOG
 * (error|warn|info|debug, default info) read once by qx_log_init().
 * Logging is line-buffered per call: one fprintf per line, so lines from
 * different worker threads never interleave mid-line.
 */
#ifndef QX_LOG_H
#define QX_LOG_H

typedef enum { QX_LOG_ERROR = 0, QX_LOG_WARN, QX_LOG_INFO, QX_LOG_DEBUG } qx_log_level_t;

extern qx_log_level_t qx_log_level;

/* Reads QRUX_LOG. Returns 0, or QX_ERR_CONFIG for an unknown level name
 * (the level then stays at info and a warning is printed). */
int qx_log_init(void);

void qx_log(qx_log_level_t lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define qx_log_enabled(lvl) ((lvl) <= qx_log_level)
#define QX_ERROR(...) qx_log(QX_LOG_ERROR, __VA_ARGS__)
#define QX_WARN(...)                                                                               \
    do {                                                                                           \
        if (qx_log_enabled(QX_LOG_WARN))                                                           \
            qx_log(QX_LOG_WARN, __VA_ARGS__);                                                      \
    } while (0)
#define QX_INFO(...)                                                                               \
    do {                                                                                           \
        if (qx_log_enabled(QX_LOG_INFO))                                                           \
            qx_log(QX_LOG_INFO, __VA_ARGS__);                                                      \
    } while (0)
#define QX_DEBUG(...)                                                                              \
    do {                                                                                           \
        if (qx_log_enabled(QX_LOG_DEBUG))                                                          \
            qx_log(QX_LOG_DEBUG, __VA_ARGS__);                                                     \
    } while (0)

#endif
