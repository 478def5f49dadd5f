/*
 * log_test.c - the rate-limited log lines (proxy/base/log.h): a flood from one
 * call site writes QX_LOG_RL_BURST lines per window, the next window's
 * first line says how many were dropped, and two call sites have their own
 * budgets.
 */
#include "base/log.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* stderr goes to a temporary file for the duration of |fn|; returns what
 * was written (malloc'd). */
static char *capture(void (*fn)(void))
{
    fflush(stderr);
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    int saved = dup(fileno(stderr));
    assert_true(saved >= 0);
    assert_true(dup2(fileno(tmp), fileno(stderr)) >= 0);
    fn();
    fflush(stderr);
    assert_true(dup2(saved, fileno(stderr)) >= 0);
    close(saved);
    long n = ftell(tmp);
    assert_true(n >= 0);
    char *out = calloc(1, (size_t)n + 1);
    rewind(tmp);
    assert_int_equal(fread(out, 1, (size_t)n, tmp), (size_t)n);
    fclose(tmp);
    return out;
}

static int count_lines(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* Waits until a new rate-limit window has just begun, so the flood below
 * falls in one window. */
static void window_start(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long ms = ts.tv_nsec / 1000000;
    long left = QX_LOG_RL_WINDOW_MS - ms % QX_LOG_RL_WINDOW_MS;
    usleep((useconds_t)(left + 5) * 1000);
}

static void site_a(void)
{
    QX_WARN_RL("flood from site a %d", 1);
}

static void site_b(void)
{
    QX_WARN_RL("flood from site b");
}

static void flood(void)
{
    window_start();
    for (int i = 0; i < 1000; i++) {
        site_a();
        if (i < 3)
            site_b();
    }
    window_start(); /* the next window */
    site_a();
}

static void flood_is_bounded(void **state)
{
    (void)state;
    qx_log_level = QX_LOG_INFO;
    uint64_t before = qx_log_rl_dropped();
    char *out = capture(flood);
    assert_int_equal(count_lines(out, "flood from site a 1"), QX_LOG_RL_BURST + 1);
    assert_int_equal(count_lines(out, "flood from site b"), 3);
    char want[96];
    snprintf(want, sizeof(want), "flood from site a 1 (%d similar lines suppressed)\n",
             1000 - QX_LOG_RL_BURST);
    assert_non_null(strstr(out, want));
    assert_int_equal(qx_log_rl_dropped() - before, 1000 - QX_LOG_RL_BURST);
    free(out);
}

static void below_level_costs_nothing(void **state)
{
    (void)state;
    qx_log_level = QX_LOG_ERROR;
    char *out = capture(site_b);
    assert_string_equal(out, "");
    free(out);
    qx_log_level = QX_LOG_INFO;
}

static void json_access(void)
{
    QX_INFO("access proto=h1 method=123 authority=8080 path=/a=b\"c status=421 upstream=- "
            "upstream_status=- early_data=0 bytes_in=0 bytes_out=24 duration_ms=0.014 "
            "trace_id=- request_id=-");
    QX_INFO("access proto=h2 method=GET authority=localhost path=/ status=200 "
            "upstream=127.0.0.1:8080 upstream_status=200 early_data=1 bytes_in=3 bytes_out=7 "
            "duration_ms=1.500 trace_id=4bf9 request_id=r-1 grpc_status=x9");
    QX_INFO("websocket closed proto=h3 authority=a path=/ws upstream=127.0.0.1:1 bytes_in=5 "
            "bytes_out=6 duration_ms=2.000 app_end=1 client_end=0 reset=0");
    QX_WARN("upstream 127.0.0.1:1: connect failed: \"refused\"");
}

/* QRUX_LOG_FORMAT=json: an access line's keys have one type whatever the
 * value (a log store maps each key once): numbers for the numeric keys,
 * strings for the others even when they look like numbers, null for "-". */
static void json_keys_have_fixed_types(void **state)
{
    (void)state;
    qx_log_level = QX_LOG_INFO;
    qx_log_json = 1;
    char *out = capture(json_access);
    qx_log_json = 0;
    const char *want[] = {
        "\"level\":\"info\",\"msg\":\"access\",\"proto\":\"h1\",\"method\":\"123\","
        "\"authority\":\"8080\",\"path\":\"/a=b\\\"c\",\"status\":421,\"upstream\":null,"
        "\"upstream_status\":null,\"early_data\":0,\"bytes_in\":0,\"bytes_out\":24,"
        "\"duration_ms\":0.014,\"trace_id\":null,\"request_id\":null}\n",
        "\"msg\":\"access\",\"proto\":\"h2\",\"method\":\"GET\",\"authority\":\"localhost\","
        "\"path\":\"/\",\"status\":200,\"upstream\":\"127.0.0.1:8080\",\"upstream_status\":200,"
        "\"early_data\":1,\"bytes_in\":3,\"bytes_out\":7,\"duration_ms\":1.500,"
        "\"trace_id\":\"4bf9\",\"request_id\":\"r-1\",\"grpc_status\":null}\n",
        "\"msg\":\"websocket closed\",\"proto\":\"h3\",\"authority\":\"a\",\"path\":\"/ws\","
        "\"upstream\":\"127.0.0.1:1\",\"bytes_in\":5,\"bytes_out\":6,\"duration_ms\":2.000,"
        "\"app_end\":1,\"client_end\":0,\"reset\":0}\n",
        "\"level\":\"warn\",\"msg\":\"upstream 127.0.0.1:1: connect failed: \\\"refused\\\"\"}\n",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        if (strstr(out, want[i]) == NULL)
            fail_msg("missing %s\nin %s", want[i], out);
    }
    /* one object per line, each starting with ts */
    assert_int_equal(count_lines(out, "{\"ts\":\""), 4);
    assert_int_equal(count_lines(out, "\n"), 4);
    free(out);
}

static void json_long_escapes(void)
{
    char tabs[701];
    memset(tabs, '\t', 700);
    tabs[700] = '\0';
    /* A key of 700 tabs (4,200 bytes escaped) after a field of 0-63 bytes:
     * the key is cut short at every offset modulo the 6 bytes of an escape. */
    for (int pad = 0; pad < 64; pad++)
        QX_INFO("access a=%.*s %s=1 b=\t", pad,
                "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", tabs);
}

/* A line that escapes past the JSON buffer is cut short, never written
 * past it (the sanitizer build checks the stack), and still ends as one
 * object per line. */
static void json_cut_short(void **state)
{
    (void)state;
    qx_log_level = QX_LOG_INFO;
    qx_log_json = 1;
    char *out = capture(json_long_escapes);
    qx_log_json = 0;
    assert_int_equal(count_lines(out, "{\"ts\":\""), 64);
    assert_int_equal(count_lines(out, "\n"), 64);
    for (char *ln = out, *nl; (nl = strchr(ln, '\n')) != NULL; ln = nl + 1) {
        assert_true(nl - ln < 4096);
        assert_int_equal(nl[-1], '}');
    }
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(flood_is_bounded),
        cmocka_unit_test(below_level_costs_nothing),
        cmocka_unit_test(json_keys_have_fixed_types),
        cmocka_unit_test(json_cut_short),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
