/*
 * log.h - leveled logging to stderr. The level comes from QRUX_LOG
 * (error|warn|info|debug, default info) read once by qx_log_init().
 * Logging is line-buffered per call: one fprintf per line, so lines from
 * different worker threads never interleave mid-line.
 */
#ifndef QX_LOG_H
#define QX_LOG_H

#include <stdint.h>

typedef enum { QX_LOG_ERROR = 0, QX_LOG_WARN, QX_LOG_INFO, QX_LOG_DEBUG } qx_log_level_t;

extern qx_log_level_t qx_log_level;
/* QRUX_LOG_FORMAT=json: one JSON object per line (log.c), else text. */
extern int qx_log_json;

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

/*
 * Rate-limited logging for every line a peer can trigger (an accept error
 * under fd exhaustion, an upstream's oversized body, a rejected route
 * table): each call site passes at most QX_LOG_RL_BURST lines per
 * QX_LOG_RL_WINDOW_MS; the others are counted, and the first line of a
 * later window ends with "(N similar lines suppressed)". The state is one
 * static qx_log_rl_t per call site (the QX_*_RL macros declare it), shared
 * by every thread through atomics.
 */
#define QX_LOG_RL_BURST 10
#define QX_LOG_RL_WINDOW_MS 1000

typedef struct qx_log_rl {
    uint64_t window;     /* atomic: the window (ms / QX_LOG_RL_WINDOW_MS) being counted */
    unsigned count;      /* atomic: lines asked for in that window */
    uint64_t suppressed; /* atomic: lines dropped since the last one written */
} qx_log_rl_t;

/* Writes the line unless its call site is over its budget (see above). */
void qx_log_rl(qx_log_rl_t *rl, qx_log_level_t lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Lines dropped by every rate limit so far (atomic; for tests and metrics). */
uint64_t qx_log_rl_dropped(void);

#define QX_LOG_RL_(lvl, ...)                                                                       \
    do {                                                                                           \
        static qx_log_rl_t qx_rl_;                                                                 \
        if (qx_log_enabled(lvl))                                                                   \
            qx_log_rl(&qx_rl_, lvl, __VA_ARGS__);                                                  \
    } while (0)
#define QX_ERROR_RL(...) QX_LOG_RL_(QX_LOG_ERROR, __VA_ARGS__)
#define QX_WARN_RL(...) QX_LOG_RL_(QX_LOG_WARN, __VA_ARGS__)
#define QX_INFO_RL(...) QX_LOG_RL_(QX_LOG_INFO, __VA_ARGS__)

#endif
