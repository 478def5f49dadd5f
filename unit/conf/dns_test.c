/*
 * dns_test.c - the upstream-name resolver's life cycle (proxy/conf/dns.c)
 * against a real UDP peer on loopback that takes queries and never
 * answers (a name server that hangs): a query goes out on the loop, and
 * the resolver deleted while it is still out closes every handle and
 * frees itself once, after its last handle closed. The answers themselves
 * (records, TTLs, failures) are e2e/test_dns.py's, against dnsmasq.
 *
 * Every test ends with uv_loop_close() == 0 (STYLE.md §12): a handle the
 * resolver forgot to close fails it; a use after free is the sanitizer
 * build's to report.
 */
#include "base/qx.h"
#include "conf/dns.h"
#include "config/config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define GUARD_MS 5000 /* a wait longer than this is a failure, not a hang */

typedef struct fixture {
    uv_loop_t loop;
    int silent; /* the UDP socket of the name server that never answers */
    char servers[32];
    qx_config_t cfg;
    qx_route_cfg_t route;
    qx_upstream_cfg_t ups[2];
    int changes; /* on_change calls */
} fixture_t;

static void on_change(void *arg)
{
    ((fixture_t *)arg)->changes++;
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->silent = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    assert_true(f->silent >= 0);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(f->silent, (struct sockaddr *)&sin, sizeof(sin)), 0);
    socklen_t sl = sizeof(sin);
    assert_int_equal(getsockname(f->silent, (struct sockaddr *)&sin, &sl), 0);
    snprintf(f->servers, sizeof(f->servers), "127.0.0.1:%u", (unsigned)ntohs(sin.sin_port));

    f->cfg.dns.servers = f->servers;
    f->cfg.dns.ndots = -1;
    f->cfg.dns.min_ttl_secs = 5;
    f->cfg.dns.max_ttl_secs = 300;
    f->ups[0].name = "hang-a.qxtest:80";
    f->ups[0].host = "hang-a.qxtest";
    f->ups[0].port = 80;
    f->ups[1].name = "hang-b.qxtest:80";
    f->ups[1].host = "hang-b.qxtest";
    f->ups[1].port = 80;
    f->route.match = "*";
    f->route.upstreams = f->ups;
    f->route.nupstreams = 2;
    f->cfg.routes = &f->route;
    f->cfg.nroutes = 1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    close(f->silent);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

/* Runs the loop until |n| queries reached the silent server (each is
 * read and dropped). */
static void wait_queries(fixture_t *f, int n)
{
    uint64_t start = uv_now(&f->loop);
    int got = 0;
    while (got < n) {
        char buf[512];
        if (recv(f->silent, buf, sizeof(buf), 0) > 12) {
            got++;
            continue;
        }
        uv_run(&f->loop, UV_RUN_NOWAIT);
        uv_update_time(&f->loop);
        if (uv_now(&f->loop) - start > GUARD_MS)
            fail_msg("%d of %d queries reached the name server", got, n);
        usleep(1000);
    }
}

/* Deleted with its queries still out (a name server that hangs at
 * shutdown, or `qrux check` giving up): c-ares calls the answers back from
 * inside ares_destroy, before it closes its sockets; the resolver must
 * outlive that, close its socket watchers, timers and names, then free
 * itself. */
static void test_del_with_queries_out(void **state)
{
    fixture_t *f = *state;
    qx_dns_t *d = NULL;
    char err[256] = "";
    assert_int_equal(qx_dns_new(&d, &f->loop, &f->cfg, on_change, f, err, sizeof(err)), 0);
    assert_int_equal(qx_dns_sync(d, &f->cfg), 2);
    assert_int_equal(qx_dns_pending(d), 2);
    wait_queries(f, 2);
    assert_int_equal(qx_dns_pending(d), 2);

    struct sockaddr_storage a[1];
    socklen_t l[1];
    assert_int_equal(qx_dns_addrs(d, "hang-a.qxtest", 80, a, l, 1), 0);
    char why[64];
    assert_int_equal(qx_dns_why(d, "hang-a.qxtest", why, sizeof(why)), 0);
    assert_string_equal(why, "not resolved yet");

    qx_dns_del(d);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->changes, 0);
}

/* The same with a name dropped by a new config while its query is out
 * (it stays until the answer), and with nothing out at all. */
static void test_del_after_names_dropped(void **state)
{
    fixture_t *f = *state;
    qx_dns_t *d = NULL;
    char err[256] = "";
    assert_int_equal(qx_dns_new(&d, &f->loop, &f->cfg, on_change, f, err, sizeof(err)), 0);
    assert_int_equal(qx_dns_sync(d, &f->cfg), 2);
    wait_queries(f, 2);
    f->route.nupstreams = 1; /* hang-b.qxtest is no longer used */
    assert_int_equal(qx_dns_sync(d, &f->cfg), 1);
    assert_int_equal(qx_dns_pending(d), 2);
    qx_dns_del(d);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);

    /* No name at all: nothing goes out, the handles still close. */
    f->cfg.nroutes = 0;
    assert_int_equal(qx_dns_new(&d, &f->loop, &f->cfg, on_change, f, err, sizeof(err)), 0);
    assert_int_equal(qx_dns_sync(d, &f->cfg), 0);
    assert_int_equal(qx_dns_pending(d), 0);
    qx_dns_del(d);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->changes, 0);
}

/* dns.servers that c-ares refuses is the field-named config error. */
static void test_servers_refused(void **state)
{
    fixture_t *f = *state;
    qx_dns_t *d = NULL;
    char err[256] = "";
    f->cfg.dns.servers = "not-an-address";
    assert_int_equal(qx_dns_new(&d, &f->loop, &f->cfg, NULL, NULL, err, sizeof(err)),
                     QX_ERR_CONFIG);
    assert_null(d);
    assert_non_null(strstr(err, "dns.servers: \"not-an-address\""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_del_with_queries_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_del_after_names_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_servers_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
