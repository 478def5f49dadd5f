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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(flood_is_bounded),
        cmocka_unit_test(below_level_costs_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
