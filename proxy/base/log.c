/* log.c - leveled logging to stderr (see log.h). */
#include "base/log.h"

#include "base/qx.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

qx_log_level_t qx_log_level = QX_LOG_INFO;
int qx_log_json;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int qx_log_init(void)
{
    const char *f = getenv("QRUX_LOG_FORMAT");
    if (f != NULL && strcmp(f, "json") == 0)
        qx_log_json = 1;
    else if (f != NULL && *f != '\0' && strcmp(f, "text") != 0)
        qx_log(QX_LOG_WARN, "QRUX_LOG_FORMAT=%s is not one of json|text; using text", f);
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

/* ---- JSON lines ---------------------------------------------------------- */

/* Appends |len| bytes of |s| to |out| as the inside of a JSON string. */
static size_t json_str(char *out, size_t cap, size_t n, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < len && n + 7 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(out + n, "\\u00", 4);
            n += 4;
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        } else {
            out[n++] = (char)c;
        }
    }
    return n;
}

/* A value that is a plain decimal number (an integer or with a fraction). */
static int is_number(const char *s, size_t len)
{
    size_t i = 0, digits = 0, dots = 0;
    for (; i < len; i++) {
        if (s[i] >= '0' && s[i] <= '9')
            digits++;
        else if (s[i] == '.' && digits > 0 && dots++ == 0)
            ;
        else
            return 0;
    }
    return digits > 0 && s[len - 1] != '.' && (len == 1 || s[0] != '0' || s[1] == '.');
}

static int key_in(const char *k, size_t klen, const char *const *set)
{
    for (; *set != NULL; set++)
        if (strlen(*set) == klen && memcmp(*set, k, klen) == 0)
            return 1;
    return 0;
}

/* The lines whose "k=v" fields become JSON keys, and the types of those
 * keys, fixed whatever the value, so a log store maps each key once: the
 * numeric keys are JSON numbers, every other key a string, and a value "-"
 * (no upstream chosen, no answer from it) is null. */
static const char *const record_msgs[] = {"access", "websocket closed", NULL};
static const char *const numeric_keys[] = {
    "status",      "upstream_status", "early_data", "bytes_in",   "bytes_out", "duration_ms",
    "grpc_status", "incomplete",      "app_end",    "client_end", "reset",     NULL};
static const char *const nullable_keys[] = {"upstream", "upstream_status", "trace_id", "request_id",
                                            NULL};

/* One JSON object: ts, level, msg. An access line ("access k=v k=v ...")
 * becomes msg "access" and one field per key, typed as above, so log
 * pipelines need no parser of their own; so does a "websocket closed" line. */
static void json_line(const char *when, qx_log_level_t lvl, const char *msg, size_t msglen)
{
    char out[4096];
    /* What json_str may fill: the rest is for the punctuation after a key
     * or value cut short (at most 8 bytes: "\":", a null or two quotes)
     * and the closing "}\n", which are written without checks. */
    const size_t cap = sizeof(out) - 16;
    size_t n = (size_t)snprintf(out, sizeof(out), "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"",
                                when, level_names[lvl]);
    const char *rec = NULL;
    for (const char *const *m = record_msgs; *m != NULL && rec == NULL; m++) {
        size_t ml = strlen(*m);
        if (msglen > ml + 1 && memcmp(msg, *m, ml) == 0 && msg[ml] == ' ')
            rec = *m;
    }
    if (rec != NULL) {
        n = json_str(out, cap, n, rec, strlen(rec));
        out[n++] = '"';
        const char *p = msg + strlen(rec) + 1, *end = msg + msglen;
        while (p < end && n + 16 < cap) {
            const char *sp = memchr(p, ' ', (size_t)(end - p));
            const char *tok_end = sp ? sp : end;
            const char *eq = memchr(p, '=', (size_t)(tok_end - p));
            if (eq != NULL && eq > p) {
                const char *k = p, *v = eq + 1;
                size_t klen = (size_t)(eq - p), vlen = (size_t)(tok_end - v);
                out[n++] = ',';
                out[n++] = '"';
                n = json_str(out, cap, n, k, klen);
                memcpy(out + n, "\":", 2);
                n += 2;
                int numeric = key_in(k, klen, numeric_keys);
                if ((vlen == 1 && v[0] == '-' && key_in(k, klen, nullable_keys)) ||
                    (numeric && !is_number(v, vlen))) {
                    memcpy(out + n, "null", 4);
                    n += 4;
                } else if (numeric) {
                    n = json_str(out, cap, n, v, vlen);
                } else {
                    out[n++] = '"';
                    n = json_str(out, cap, n, v, vlen);
                    out[n++] = '"';
                }
            }
            p = tok_end + 1;
        }
    } else {
        n = json_str(out, cap, n, msg, msglen);
        out[n++] = '"';
    }
    if (n + 2 > sizeof(out))
        n = sizeof(out) - 2;
    out[n++] = '}';
    out[n++] = '\n';
    fwrite(out, 1, n, stderr);
}

/* One line: the timestamp, the level, the message, and |tail| when not
 * NULL; a JSON object when QRUX_LOG_FORMAT=json. */
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
    if (qx_log_json) {
        char when[40];
        size_t w = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(when + w, sizeof(when) - w, ".%03ldZ", ts.tv_nsec / 1000000L);
        size_t head = strlen(when) + 1 + 6; /* "TIMESTAMP LEVEL " as written above */
        json_line(when, lvl, line + head, n - head);
        return;
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

_Noreturn void qx_assert_fail(const char *cond, const char *file, int line)
{
    qx_log(QX_LOG_ERROR, "assertion failed: %s (%s:%d)", cond, file, line);
    fflush(stderr);
    abort();
}
