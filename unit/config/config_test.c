/*
 * config_test.c - the YAML schema, defaults, every rejection (with the field
 * named in the message), path resolution, qx_addr_parse and the worker
 * count. Includes config.c to reach the cgroup helpers.
 */
#include "../config/config.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SERVER                                                                                     \
    "server:\n"                                                                                    \
    "  listen: \"[::]:8443\"\n"                                                                    \
    "  cert: certs/cert.pem\n"                                                                     \
    "  key: certs/key.pem\n"
#define ROUTES                                                                                     \
    "routes:\n"                                                                                    \
    "  - match: \"*\"\n"                                                                           \
    "    upstream: \"127.0.0.1:8080\"\n"

static int load_str(const char *yaml, const char *basedir, qx_config_t **out, char *err,
                    size_t errlen)
{
    return qx_config_load_buf(yaml, strlen(yaml), basedir, out, err, errlen);
}

/* Asserts the document is refused with QX_ERR_CONFIG and a one-line
 * message containing |want| (the field and the reason). */
static void expect_reject_(const char *yaml, const char *want, const char *file, int line)
{
    char err[512];
    qx_config_t *cfg = (qx_config_t *)&err; /* must be reset to NULL */
    int rv = load_str(yaml, NULL, &cfg, err, sizeof(err));
    if (rv != QX_ERR_CONFIG)
        fail_msg("%s:%d: rv=%d (want QX_ERR_CONFIG) err=[%s]\n%s", file, line, rv, err, yaml);
    if (cfg != NULL)
        fail_msg("%s:%d: *out not NULL on failure", file, line);
    if (strstr(err, want) == NULL)
        fail_msg("%s:%d: err=[%s], want it to contain [%s]", file, line, err, want);
    if (strchr(err, '\n') != NULL)
        fail_msg("%s:%d: message is not one line: [%s]", file, line, err);
}
#define expect_reject(yaml, want) expect_reject_((yaml), (want), __FILE__, __LINE__)

static qx_config_t *expect_ok_(const char *yaml, const char *basedir, const char *file, int line)
{
    char err[512] = "";
    qx_config_t *cfg = NULL;
    int rv = load_str(yaml, basedir, &cfg, err, sizeof(err));
    if (rv != 0 || cfg == NULL)
        fail_msg("%s:%d: rv=%d err=[%s]\n%s", file, line, rv, err, yaml);
    return cfg;
}
#define expect_ok(yaml, basedir) expect_ok_((yaml), (basedir), __FILE__, __LINE__)

/* ------------------------------------------------------------------------ */
/* Valid documents                                                          */
/* ------------------------------------------------------------------------ */

static void test_full_config(void **state)
{
    static const char yaml[] =
        "server:\n"
        "  listen: \"0.0.0.0:443\"\n"
        "  cert: /etc/tls/cert.pem\n"
        "  key: /etc/tls/key.pem\n"
        "  workers: 4\n"
        "  limits:\n"
        "    upstream_connect_timeout_secs: 3\n"
        "    upstream_request_timeout_secs: 60\n"
        "    max_request_body_bytes: 1000\n"
        "    max_upstream_response_body_bytes: 18446744073709551615\n"
        "    max_idle_connections_per_upstream: 2\n"
        "    graceful_shutdown_secs: 5\n"
        "routes:\n"
        "  - match: api.example.com\n"
        "    upstream: \"127.0.0.1:8080\"\n"
        "  - match: \"*.example.com\"\n"
        "    upstreams: [\"10.0.0.1:8080\", \"[::1]:9090\", \"localhost:81\"]\n"
        "  - match: \"*\"\n"
        "    upstreams:\n"
        "      - \"10.0.0.2:8080\"\n";
    (void)state;
    qx_config_t *cfg = expect_ok(yaml, NULL);

    assert_null(cfg->path);
    assert_string_equal(cfg->listen, "0.0.0.0:443");
    assert_int_equal(cfg->listen_addr.ss_family, AF_INET);
    assert_int_equal(cfg->listen_addrlen, sizeof(struct sockaddr_in));
    assert_int_equal(ntohs(((struct sockaddr_in *)&cfg->listen_addr)->sin_port), 443);
    assert_string_equal(cfg->cert, "/etc/tls/cert.pem");
    assert_string_equal(cfg->key, "/etc/tls/key.pem");
    assert_int_equal(cfg->workers, 4);
    assert_int_equal(qx_config_effective_workers(cfg), 4);
    assert_int_equal(cfg->limits.upstream_connect_timeout_secs, 3);
    assert_int_equal(cfg->limits.upstream_request_timeout_secs, 60);
    assert_int_equal(cfg->limits.max_request_body_bytes, 1000);
    assert_true(cfg->limits.max_upstream_response_body_bytes == UINT64_MAX);
    assert_int_equal(cfg->limits.max_idle_connections_per_upstream, 2);
    assert_int_equal(cfg->limits.graceful_shutdown_secs, 5);

    assert_int_equal(cfg->nroutes, 3);
    assert_string_equal(cfg->routes[0].match, "api.example.com");
    assert_int_equal(cfg->routes[0].single, 1);
    assert_int_equal(cfg->routes[0].nupstreams, 1);
    assert_string_equal(cfg->routes[0].upstreams[0].name, "127.0.0.1:8080");
    assert_int_equal(cfg->routes[0].upstreams[0].addr.ss_family, AF_INET);

    assert_string_equal(cfg->routes[1].match, "*.example.com");
    assert_int_equal(cfg->routes[1].single, 0);
    assert_int_equal(cfg->routes[1].nupstreams, 3);
    assert_string_equal(cfg->routes[1].upstreams[1].name, "[::1]:9090");
    assert_int_equal(cfg->routes[1].upstreams[1].addr.ss_family, AF_INET6);
    assert_int_equal(cfg->routes[1].upstreams[1].addrlen, sizeof(struct sockaddr_in6));
    assert_string_equal(cfg->routes[1].upstreams[2].name, "localhost:81");
    const struct sockaddr_in *lo = (const struct sockaddr_in *)&cfg->routes[1].upstreams[2].addr;
    assert_int_equal(ntohl(lo->sin_addr.s_addr), INADDR_LOOPBACK);

    assert_string_equal(cfg->routes[2].match, "*");
    assert_int_equal(cfg->routes[2].single, 0);
    assert_int_equal(cfg->routes[2].nupstreams, 1);
    qx_config_del(cfg);
}

/* routes[].websocket: on unless `false`; the WebSocket limits' defaults
 * and bounds. */
static void test_websocket(void **state)
{
    (void)state;
    qx_config_t *cfg = expect_ok(SERVER "routes:\n"
                                        "  - match: a.test\n"
                                        "    upstream: \"127.0.0.1:1\"\n"
                                        "    websocket: false\n"
                                        "  - match: b.test\n"
                                        "    upstream: \"127.0.0.1:1\"\n"
                                        "    websocket: true\n"
                                        "  - match: \"*\"\n"
                                        "    upstream: \"127.0.0.1:1\"\n",
                                 NULL);
    assert_int_equal(cfg->routes[0].no_websocket, 1);
    assert_int_equal(cfg->routes[1].no_websocket, 0);
    assert_int_equal(cfg->routes[2].no_websocket, 0);
    assert_int_equal(cfg->limits.websocket_idle_timeout_secs, 300);
    assert_int_equal(cfg->limits.max_websocket_tunnels, 1024);
    assert_int_equal(cfg->limits.max_websocket_tunnels_per_connection, 100);
    assert_int_equal(cfg->limits.upstream_keepalive_timeout_secs, 60);
    qx_config_del(cfg);
    expect_reject(SERVER "routes:\n"
                         "  - match: \"*\"\n"
                         "    upstream: \"127.0.0.1:1\"\n"
                         "    websocket: yes\n",
                  "routes[0].websocket: \"yes\" is not true or false");
    expect_reject(SERVER "  limits:\n    websocket_idle_timeout_secs: 0\n" ROUTES,
                  "websocket_idle_timeout_secs");
    expect_reject(SERVER "  limits:\n    max_websocket_tunnels: 0\n" ROUTES,
                  "max_websocket_tunnels");
    expect_reject(SERVER "  limits:\n    max_websocket_tunnels_per_connection: 0\n" ROUTES,
                  "max_websocket_tunnels_per_connection");
}

static void test_defaults(void **state)
{
    (void)state;
    qx_config_t *cfg = expect_ok(SERVER ROUTES, NULL);
    assert_int_equal(cfg->workers, 0);
    assert_int_equal(cfg->limits.upstream_connect_timeout_secs, 10);
    assert_int_equal(cfg->limits.upstream_request_timeout_secs, 120);
    assert_int_equal(cfg->limits.max_request_body_bytes, 10485760);
    assert_int_equal(cfg->limits.max_upstream_response_body_bytes, 52428800);
    assert_int_equal(cfg->limits.max_idle_connections_per_upstream, 256);
    assert_int_equal(cfg->limits.graceful_shutdown_secs, 30);
    assert_int_equal(cfg->limits.header_read_timeout_secs, 10);
    assert_int_equal(cfg->limits.body_idle_timeout_secs, 30);
    assert_int_equal(cfg->listen_addr.ss_family, AF_INET6);
    assert_null(cfg->https_listen);
    assert_int_equal(cfg->https_addrlen, 0);
    assert_int_equal(cfg->alt_svc_max_age, 86400);
    assert_int_equal(cfg->drain_delay_secs, 5);
    qx_config_del(cfg);

    /* limits present but partly set: the rest keep their defaults */
    cfg = expect_ok(SERVER "  limits:\n    graceful_shutdown_secs: 1\n" ROUTES, NULL);
    assert_int_equal(cfg->limits.graceful_shutdown_secs, 1);
    assert_int_equal(cfg->limits.upstream_connect_timeout_secs, 10);
    assert_int_equal(cfg->limits.max_idle_connections_per_upstream, 256);
    qx_config_del(cfg);

    /* an empty limits mapping is fine too */
    cfg = expect_ok(SERVER "  limits: {}\n" ROUTES, NULL);
    assert_int_equal(cfg->limits.upstream_request_timeout_secs, 120);
    qx_config_del(cfg);

    /* equal timeouts are allowed */
    cfg = expect_ok(SERVER "  limits:\n    upstream_connect_timeout_secs: 120\n" ROUTES, NULL);
    qx_config_del(cfg);
}

static void test_match_lowercased(void **state)
{
    (void)state;
    qx_config_t *cfg = expect_ok(SERVER "routes:\n"
                                        "  - match: API.Example.COM\n"
                                        "    upstream: \"127.0.0.1:1\"\n"
                                        "  - match: \"*.Example.Org.\"\n"
                                        "    upstream: \"127.0.0.1:2\"\n"
                                        "  - match: \"::1\"\n"
                                        "    upstream: \"127.0.0.1:3\"\n",
                                 NULL);
    assert_string_equal(cfg->routes[0].match, "api.example.com");
    assert_string_equal(cfg->routes[1].match, "*.example.org"); /* trailing dot dropped */
    assert_string_equal(cfg->routes[2].match, "::1");
    qx_config_del(cfg);
}

static void test_path_resolution(void **state)
{
    (void)state;
    qx_config_t *cfg = expect_ok(SERVER ROUTES, "/etc/qrux");
    assert_string_equal(cfg->cert, "/etc/qrux/certs/cert.pem");
    assert_string_equal(cfg->key, "/etc/qrux/certs/key.pem");
    qx_config_del(cfg);

    cfg = expect_ok(SERVER ROUTES, "/etc/qrux/");
    assert_string_equal(cfg->cert, "/etc/qrux/certs/cert.pem");
    qx_config_del(cfg);

    cfg = expect_ok(SERVER ROUTES, NULL);
    assert_string_equal(cfg->cert, "certs/cert.pem");
    qx_config_del(cfg);

    cfg = expect_ok("server:\n  listen: \"[::]:1\"\n  cert: /abs/c.pem\n  key: rel/k.pem\n" ROUTES,
                    "/etc/qrux");
    assert_string_equal(cfg->cert, "/abs/c.pem");
    assert_string_equal(cfg->key, "/etc/qrux/rel/k.pem");
    qx_config_del(cfg);
}

static void test_load_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/qrux-config-test-XXXXXX";
    char path[256], err[512];
    qx_config_t *cfg = NULL;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/qrux.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(SERVER ROUTES, f);
    fclose(f);

    assert_int_equal(qx_config_load_file(path, &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg->path, path);
    char want[300];
    snprintf(want, sizeof(want), "%s/certs/cert.pem", dir);
    assert_string_equal(cfg->cert, want);
    snprintf(want, sizeof(want), "%s/certs/key.pem", dir);
    assert_string_equal(cfg->key, want);
    qx_config_del(cfg);

    /* a validation error from a file names the field too */
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(SERVER "  workers: 5000\n" ROUTES, f);
    fclose(f);
    cfg = (qx_config_t *)&err;
    assert_int_equal(qx_config_load_file(path, &cfg, err, sizeof(err)), QX_ERR_CONFIG);
    assert_null(cfg);
    assert_non_null(strstr(err, "server.workers: must be <= 1024"));

    unlink(path);
    rmdir(dir);

    /* missing file: QX_ERR_IO, the message names the file */
    assert_int_equal(qx_config_load_file(path, &cfg, err, sizeof(err)), QX_ERR_IO);
    assert_null(cfg);
    assert_non_null(strstr(err, path));
    /* a directory is no config */
    assert_int_equal(qx_config_load_file("/tmp", &cfg, err, sizeof(err)), QX_ERR_IO);
}

static void test_examples_load(void **state)
{
    /* ctest runs unit tests from the source root */
    static const char *const files[] = {"config/examples/qrux.yaml", "config/examples/minimal.yaml",
                                        "config/examples/admin-public.yaml"};
    (void)state;
    for (size_t i = 0; i < QX_ARRAY_LEN(files); i++) {
        char err[512] = "";
        qx_config_t *cfg = NULL;
        int rv = qx_config_load_file(files[i], &cfg, err, sizeof(err));
        if (rv != 0)
            fail_msg("%s: rv=%d err=[%s]", files[i], rv, err);
        qx_config_del(cfg);
    }
}

/* ------------------------------------------------------------------------ */
/* Rejections                                                               */
/* ------------------------------------------------------------------------ */

static const char *const limit_names[] = {
    "upstream_connect_timeout_secs",
    "upstream_request_timeout_secs",
    "max_request_body_bytes",
    "max_upstream_response_body_bytes",
    "max_idle_connections_per_upstream",
    "graceful_shutdown_secs",
    "header_read_timeout_secs",
    "body_idle_timeout_secs",
    "client_idle_timeout_secs",
    "upstream_idle_timeout_secs",
    "max_tcp_connections",
    "max_tcp_connections_per_ip",
    "max_connections_per_upstream",
    "upstream_keepalive_timeout_secs",
};

/* Every upstream gets its own metrics row: a config with more than
 * QX_CONFIG_MAX_UPSTREAMS is refused, naming the route that goes over. */
static void test_reject_too_many_upstreams(void **state)
{
    (void)state;
    size_t cap = 256 + 80 * (QX_CONFIG_MAX_UPSTREAMS + 8);
    char *yaml = malloc(cap);
    assert_non_null(yaml);
    size_t n = (size_t)snprintf(yaml, cap, SERVER "routes:\n");
    for (int i = 0; i <= QX_CONFIG_MAX_UPSTREAMS; i++)
        n += (size_t)snprintf(yaml + n, cap - n,
                              "  - match: \"h%d\"\n    upstream: \"127.0.0.1:%d\"\n", i, 1000 + i);
    char want[128];
    snprintf(want, sizeof(want), "routes[%d]: more than %d upstreams in all routes together",
             QX_CONFIG_MAX_UPSTREAMS, QX_CONFIG_MAX_UPSTREAMS);
    expect_reject(yaml, want);
    free(yaml);
}

static void test_reject_limits(void **state)
{
    char yaml[1024], want[256];
    (void)state;

    for (size_t i = 0; i < QX_ARRAY_LEN(limit_names); i++) {
        snprintf(yaml, sizeof(yaml), SERVER "  limits:\n    %s: 0\n" ROUTES, limit_names[i]);
        snprintf(want, sizeof(want), "server.limits.%s: must be > 0", limit_names[i]);
        expect_reject(yaml, want);

        snprintf(yaml, sizeof(yaml), SERVER "  limits:\n    %s: -1\n" ROUTES, limit_names[i]);
        snprintf(want, sizeof(want), "server.limits.%s: must not be negative", limit_names[i]);
        expect_reject(yaml, want);

        snprintf(yaml, sizeof(yaml), SERVER "  limits:\n    %s: 10MB\n" ROUTES, limit_names[i]);
        snprintf(want, sizeof(want), "server.limits.%s: \"10MB\" is not a whole number",
                 limit_names[i]);
        expect_reject(yaml, want);

        snprintf(yaml, sizeof(yaml), SERVER "  limits:\n    %s: 99999999999999999999999\n" ROUTES,
                 limit_names[i]);
        snprintf(want, sizeof(want), "server.limits.%s: must be <= ", limit_names[i]);
        expect_reject(yaml, want);
    }

    expect_reject(SERVER "  limits:\n    upstream_connect_timeout_secs: 4294967296\n" ROUTES,
                  "server.limits.upstream_connect_timeout_secs: must be <= 4294967295");
    expect_reject(SERVER "  limits:\n    upstream_request_timeout_secs: 5\n" ROUTES,
                  "server.limits.upstream_request_timeout_secs: must be >= "
                  "upstream_connect_timeout_secs (10)");
    expect_reject(SERVER "  limits:\n    upstream_connect_timeout_secs: 200\n" ROUTES,
                  "server.limits.upstream_request_timeout_secs: must be >= "
                  "upstream_connect_timeout_secs (200)");
    expect_reject(SERVER "  limits:\n    graceful_shutdown_secs: 1.5\n" ROUTES,
                  "server.limits.graceful_shutdown_secs: \"1.5\" is not a whole number");
    expect_reject(SERVER "  limits:\n    graceful_shutdown_secs: \"\"\n" ROUTES,
                  "server.limits.graceful_shutdown_secs: \"\" is not a whole number");
    expect_reject(SERVER "  limits: 3\n" ROUTES, "server.limits: must be a mapping, not a scalar");
}

/* The HTTPS fallback listener and the keys that go with it. */
static void test_https_listen(void **state)
{
    (void)state;
    qx_config_t *cfg = expect_ok(SERVER "  https_listen: \"[::]:8443\"\n"
                                        "  alt_svc_max_age: 3600\n"
                                        "  drain_delay_secs: 0\n"
                                        "  limits:\n"
                                        "    header_read_timeout_secs: 2\n"
                                        "    body_idle_timeout_secs: 7\n" ROUTES,
                                 NULL);
    /* the same port number as the UDP listener is the usual choice */
    assert_string_equal(cfg->https_listen, "[::]:8443");
    assert_int_equal(cfg->https_addr.ss_family, AF_INET6);
    assert_int_equal(cfg->https_addrlen, sizeof(struct sockaddr_in6));
    assert_int_equal(ntohs(((struct sockaddr_in6 *)&cfg->https_addr)->sin6_port), 8443);
    assert_int_equal(cfg->alt_svc_max_age, 3600);
    assert_int_equal(cfg->drain_delay_secs, 0);
    assert_int_equal(cfg->limits.header_read_timeout_secs, 2);
    assert_int_equal(cfg->limits.body_idle_timeout_secs, 7);
    qx_config_del(cfg);

    cfg = expect_ok(SERVER "  https_listen: \"localhost:443\"\n"
                           "  alt_svc_max_age: 0\n" ROUTES,
                    NULL);
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&cfg->https_addr;
    assert_int_equal(cfg->https_addr.ss_family, AF_INET);
    assert_int_equal(ntohl(sin->sin_addr.s_addr), INADDR_LOOPBACK);
    assert_int_equal(ntohs(sin->sin_port), 443);
    assert_int_equal(cfg->alt_svc_max_age, 0); /* ma=0: clients forget it at once */
    qx_config_del(cfg);

    static const char *const bad[] = {"8443", "[::]:0", "::1:8443", "example.com:443", ""};
    char yaml[512], want[256];
    for (size_t i = 0; i < QX_ARRAY_LEN(bad); i++) {
        snprintf(yaml, sizeof(yaml), SERVER "  https_listen: \"%s\"\n" ROUTES, bad[i]);
        snprintf(want, sizeof(want),
                 "server.https_listen: \"%s\" is not an address (host:port with an IPv4, [IPv6] "
                 "or localhost)",
                 bad[i]);
        expect_reject(yaml, want);
    }
    expect_reject(SERVER "  https_listen: [\"[::]:1\"]\n" ROUTES,
                  "server.https_listen: must be a scalar, not a list");
    expect_reject(SERVER "  alt_svc_max_age: -1\n" ROUTES,
                  "server.alt_svc_max_age: must not be negative");
    expect_reject(SERVER "  alt_svc_max_age: 1d\n" ROUTES,
                  "server.alt_svc_max_age: \"1d\" is not a whole number");
    expect_reject(SERVER "  alt_svc_max_age: 4294967296\n" ROUTES,
                  "server.alt_svc_max_age: must be <= 4294967295");
    expect_reject(SERVER "  drain_delay_secs: -5\n" ROUTES,
                  "server.drain_delay_secs: must not be negative");
    expect_reject(SERVER "  drain_delay_secs: 5s\n" ROUTES,
                  "server.drain_delay_secs: \"5s\" is not a whole number");
    expect_reject(SERVER "  https_listen: \"[::]:1\"\n  https_listen: \"[::]:2\"\n" ROUTES,
                  "server.https_listen: appears more than once (line 6)");
}

static void test_reject_workers(void **state)
{
    (void)state;
    expect_reject(SERVER "  workers: 1025\n" ROUTES, "server.workers: must be <= 1024");
    expect_reject(SERVER "  workers: -1\n" ROUTES, "server.workers: must not be negative");
    expect_reject(SERVER "  workers: many\n" ROUTES,
                  "server.workers: \"many\" is not a whole number");

    qx_config_t *cfg = expect_ok(SERVER "  workers: 1024\n" ROUTES, NULL);
    assert_int_equal(cfg->workers, 1024);
    qx_config_del(cfg);
}

static void test_xdp_section(void **state)
{
    char err[256];
    qx_config_t *cfg = NULL;
    (void)state;
    const char *none = SERVER ROUTES;
    assert_int_equal(qx_config_load_buf(none, strlen(none), NULL, &cfg, err, sizeof(err)), 0);
    assert_null(cfg->xdp.pin); /* no section: no XDP */
    qx_config_del(cfg);
    const char *defaults = "xdp: {}\n" SERVER ROUTES;
    assert_int_equal(qx_config_load_buf(defaults, strlen(defaults), NULL, &cfg, err, sizeof(err)),
                     0);
    assert_string_equal(cfg->xdp.pin, "/sys/fs/bpf/qrux");
    assert_int_equal(cfg->xdp.initial_rate, 50);
    assert_int_equal(cfg->xdp.initial_burst, 100);
    assert_int_equal(cfg->xdp.cid_key_rotate_secs, 0);
    qx_config_del(cfg);
    const char *set = "xdp:\n  pin: /sys/fs/bpf/x\n  initial_rate: 0\n  initial_burst: 7\n"
                      "  cid_key_rotate_secs: 60\n" SERVER ROUTES;
    assert_int_equal(qx_config_load_buf(set, strlen(set), NULL, &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg->xdp.pin, "/sys/fs/bpf/x");
    assert_int_equal(cfg->xdp.initial_rate, 0);
    assert_int_equal(cfg->xdp.initial_burst, 7);
    assert_int_equal(cfg->xdp.cid_key_rotate_secs, 60);
    qx_config_del(cfg);
    expect_reject("xdp:\n  pin: bpf/qrux\n" SERVER ROUTES,
                  "xdp.pin: \"bpf/qrux\" must be an absolute path (a bpffs directory)");
    expect_reject("xdp:\n  initial_burst: 0\n" SERVER ROUTES, "xdp.initial_burst: must be > 0");
    expect_reject("xdp:\n  initial_rate: fast\n" SERVER ROUTES,
                  "xdp.initial_rate: \"fast\" is not a whole number");
}

static void test_reject_unknown_keys(void **state)
{
    (void)state;
    expect_reject(SERVER "  limits:\n"
                         "    upstream_connect_timeout_secs: 5\n"
                         "    foo: 1\n" ROUTES,
                  "server.limits.foo: unknown key (line 7)");
    expect_reject(SERVER "  http_listen: \"[::]:443\"\n" ROUTES,
                  "server.http_listen: unknown key (line 5)");
    expect_reject("xdp:\n  port: 1\n" SERVER ROUTES, "xdp.port: unknown key (line 2)");
    expect_reject(SERVER ROUTES "  - match: a.example.com\n"
                                "    upstream: \"127.0.0.1:1\"\n"
                                "    weight: 3\n",
                  "routes[1].weight: unknown key (line 10)");
    /* keys are case-sensitive */
    expect_reject(SERVER "  Workers: 1\n" ROUTES, "server.Workers: unknown key");
}

static void test_reject_yaml_errors(void **state)
{
    (void)state;
    expect_reject("server:\n  listen: \"[::]:8443\"\n   cert: x\n", "line 3");
    expect_reject("server:\n  listen: \"[::]:8443\n", "YAML syntax error at line");
    expect_reject(SERVER "  listen: \"[::]:1\"\n" ROUTES,
                  "server.listen: appears more than once (line 5)");
    expect_reject(SERVER "routes: \"127.0.0.1:1\"\n", "routes: must be a list, not a scalar");
    expect_reject(SERVER "routes:\n  - match: \"*\"\n    upstreams: \"127.0.0.1:1\"\n",
                  "routes[0].upstreams: must be a list, not a scalar (line 7)");
    expect_reject(SERVER "routes:\n  - match: [a]\n    upstream: \"127.0.0.1:1\"\n",
                  "routes[0].match: must be a scalar, not a list");
    expect_reject("server: 1\n", "server: must be a mapping, not a scalar");
    expect_reject("- a\n", "must be a mapping, not a list");
    expect_reject("", "server: is required");
    expect_reject("server: &s\n  listen: x\nroutes: *s\n", "aliases");
}

static void test_reject_required(void **state)
{
    (void)state;
    expect_reject(ROUTES, "server: is required");
    expect_reject("server:\n  cert: c\n  key: k\n" ROUTES, "server.listen: is required");
    expect_reject("server:\n  listen: \"[::]:1\"\n  key: k\n" ROUTES, "server.cert: is required");
    expect_reject("server:\n  listen: \"[::]:1\"\n  cert: c\n" ROUTES, "server.key: is required");
    expect_reject("server:\n  listen: \"[::]:1\"\n  cert: \"\"\n  key: k\n" ROUTES,
                  "server.cert: must not be empty");
    expect_reject("server:\n  listen: \"[::]:1\"\n  cert: c\n  key: \"\"\n" ROUTES,
                  "server.key: must not be empty");
    expect_reject(SERVER, "routes: at least one route is required");
    expect_reject(SERVER "routes: []\n", "routes: at least one route is required");
    expect_reject(SERVER "routes:\n  - upstream: \"127.0.0.1:1\"\n",
                  "routes[0].match: is required");
}

static void test_reject_listen(void **state)
{
    static const char *const bad[] = {"8443",     ":8443",         "[::]",          "[::]:0",
                                      "::1:8443", "0.0.0.0:65536", "example.com:1", ""};
    char yaml[512], want[256];
    (void)state;
    for (size_t i = 0; i < QX_ARRAY_LEN(bad); i++) {
        snprintf(yaml, sizeof(yaml), "server:\n  listen: \"%s\"\n  cert: c\n  key: k\n" ROUTES,
                 bad[i]);
        snprintf(want, sizeof(want),
                 "server.listen: \"%s\" is not an address (host:port with an IPv4, [IPv6] or "
                 "localhost)",
                 bad[i]);
        expect_reject(yaml, want);
    }
}

static void test_reject_routes(void **state)
{
    (void)state;
    expect_reject(SERVER ROUTES "  - match: a.example.com\n"
                                "    upstream: \"127.0.0.1:1\"\n"
                                "    upstreams: [\"127.0.0.1:2\"]\n",
                  "routes[1]: has both upstream and upstreams");
    expect_reject(SERVER "routes:\n  - match: a.example.com\n",
                  "routes[0]: needs upstream or upstreams");
    /* An empty list is there, just empty: say so, not that it is missing. */
    expect_reject(SERVER "routes:\n  - match: a.example.com\n    upstreams: []\n",
                  "routes[0].upstreams: must not be empty");
    expect_reject(SERVER "routes:\n  - match: a.example.com\n    upstream: \"127.0.0.1:1\"\n"
                         "    upstreams: []\n",
                  "routes[0]: has both upstream and upstreams");
    /* A misspelled key gets the nearest known one; a far one gets none. */
    expect_reject(SERVER "routes:\n  - match: a.example.com\n    upstrem: \"127.0.0.1:1\"\n",
                  "routes[0].upstrem: unknown key (line 7); did you mean upstream?");
    expect_reject("server:\n  listen: \"[::]:1\"\n  limits:\n    max_request_body_byte: 1\n",
                  "did you mean max_request_body_bytes?");
    /* A key with its unit left off: the one known key it starts. */
    expect_reject("server:\n  listen: \"[::]:1\"\n  limits:\n    max_request_body: 1\n",
                  "server.limits.max_request_body: unknown key (line 4); did you mean "
                  "max_request_body_bytes?");
    expect_reject("server:\n  drain_delay: 1\n",
                  "server.drain_delay: unknown key (line 2); did you mean drain_delay_secs?");
    /* ... not when several start with it */
    {
        char err[512] = "";
        qx_config_t *cfg = NULL;
        assert_int_equal(
            load_str("server:\n  limits:\n    max_quic: 1\n", NULL, &cfg, err, sizeof(err)),
            QX_ERR_CONFIG);
        assert_string_equal(err, "server.limits.max_quic: unknown key (line 3)");
    }
    expect_reject("server:\n  zzzzzz: 1\n", "server.zzzzzz: unknown key (line 2)");
    /* log.format: text or json, nothing else. */
    expect_reject(SERVER ROUTES "log:\n  format: yaml\n",
                  "log.format: \"yaml\" is not one of text, json");
    /* Tabs: the YAML error says what the problem is. */
    expect_reject("server:\n\tlisten: \"[::]:1\"\n",
                  "tabs are not allowed for indentation (line 2)");
    expect_reject(SERVER ROUTES "  - match: a\n    upstream: \"127.0.0.1:1\"\n"
                                "  - match: b\n"
                                "    upstreams: [\"10.0.0.1:80\", \"10.0.0.x:80\"]\n",
                  "routes[2].upstreams[1]: \"10.0.0.x:80\" is not an address (host:port with an "
                  "IPv4, [IPv6], localhost or a DNS name)");
    expect_reject(SERVER "routes:\n  - match: a\n    upstream: \"back_end:80\"\n",
                  "routes[0].upstream: \"back_end:80\" is not an address");
    expect_reject(SERVER "routes:\n  - match: a\n    upstream: \"api.svc\"\n",
                  "routes[0].upstream: \"api.svc\" is not an address");
    expect_reject(SERVER "routes:\n  - match: a\n    upstreams: [\"127.0.0.1:1\", \"-a.svc:80\"]\n",
                  "routes[0].upstreams[1]: \"-a.svc:80\" is not an address");
    expect_reject(SERVER "routes:\n  - match: a\n    upstream: \"127.0.0.1\"\n",
                  "routes[0].upstream: \"127.0.0.1\" is not an address");

    /* match forms */
    static const char *const bad_match[] = {"a*b",  "*.",     "*.*.example.com", "a..b", ".a",
                                            "**",   "*a.com", "exa mple.com",    "a/b",  "[::1]",
                                            "a:80", "*.a..b"};
    char yaml[512], want[256];
    for (size_t i = 0; i < QX_ARRAY_LEN(bad_match); i++) {
        snprintf(yaml, sizeof(yaml),
                 SERVER "routes:\n  - match: \"%s\"\n    upstream: \"127.0.0.1:1\"\n",
                 bad_match[i]);
        snprintf(want, sizeof(want), "routes[0].match: \"%s\" is not a host, \"*.suffix\" or \"*\"",
                 bad_match[i]);
        expect_reject(yaml, want);
    }
    expect_reject(SERVER "routes:\n  - match: \"\"\n    upstream: \"127.0.0.1:1\"\n",
                  "routes[0].match: must not be empty");

    /* duplicates, after lowercasing */
    expect_reject(SERVER "routes:\n"
                         "  - match: api.example.com\n    upstream: \"127.0.0.1:1\"\n"
                         "  - match: \"*\"\n    upstream: \"127.0.0.1:1\"\n"
                         "  - match: API.example.com\n    upstream: \"127.0.0.1:2\"\n",
                  "routes[2].match: \"api.example.com\" is already used by routes[0]");
    expect_reject(SERVER ROUTES "  - match: \"*\"\n    upstream: \"127.0.0.1:1\"\n",
                  "routes[1].match: \"*\" is already used by routes[0]");
}

/* A route's `protocol`: h1 (the default) or h2c, on every upstream of the
 * route; anything else is refused naming the field. */
static void test_route_protocol(void **state)
{
    (void)state;
    qx_config_t *cfg = expect_ok(SERVER "routes:\n"
                                        "  - match: a\n    upstream: \"127.0.0.1:1\"\n"
                                        "  - match: b\n    upstream: \"127.0.0.1:2\"\n"
                                        "    protocol: h1\n"
                                        "  - match: c\n    upstreams: [\"127.0.0.1:3\", "
                                        "\"127.0.0.1:4\"]\n    protocol: h2c\n",
                                 NULL);
    assert_int_equal(cfg->routes[0].protocol, QX_UP_PROTO_H1);
    assert_int_equal(cfg->routes[0].upstreams[0].protocol, QX_UP_PROTO_H1);
    assert_int_equal(cfg->routes[1].protocol, QX_UP_PROTO_H1);
    assert_int_equal(cfg->routes[2].protocol, QX_UP_PROTO_H2C);
    assert_int_equal(cfg->routes[2].upstreams[0].protocol, QX_UP_PROTO_H2C);
    assert_int_equal(cfg->routes[2].upstreams[1].protocol, QX_UP_PROTO_H2C);
    qx_config_del(cfg);
    expect_reject(SERVER "routes:\n  - match: a\n    upstream: \"127.0.0.1:1\"\n"
                         "    protocol: h2\n",
                  "routes[0].protocol: \"h2\" is not one of h1, h2c");
    expect_reject(SERVER ROUTES "  - match: b\n    upstream: \"127.0.0.1:1\"\n"
                                "    protocol: \"\"\n",
                  "routes[1].protocol: \"\" is not one of h1, h2c");
}

/* ------------------------------------------------------------------------ */
/* admin section                                                            */
/* ------------------------------------------------------------------------ */

static void test_admin_absent(void **state)
{
    (void)state;
    qx_config_t *cfg = expect_ok(SERVER ROUTES, NULL);
    assert_null(cfg->admin.listen);
    assert_null(cfg->admin.token_file);
    assert_int_equal(cfg->admin.addrlen, 0);
    assert_int_equal(cfg->admin.ready_requires_upstream, 0);
    qx_config_del(cfg);
}

static void test_admin_defaults(void **state)
{
    (void)state;
    qx_config_t *cfg = expect_ok(SERVER ROUTES "admin: {}\n", NULL);
    assert_string_equal(cfg->admin.listen, "127.0.0.1:9901");
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&cfg->admin.addr;
    assert_int_equal(sin->sin_family, AF_INET);
    assert_int_equal(cfg->admin.addrlen, sizeof(struct sockaddr_in));
    assert_int_equal(ntohl(sin->sin_addr.s_addr), INADDR_LOOPBACK);
    assert_int_equal(ntohs(sin->sin_port), 9901);
    assert_null(cfg->admin.token_file);
    assert_int_equal(cfg->admin.ready_requires_upstream, 0);
    qx_config_del(cfg);

    /* the section may come first; the other loopback forms need no token */
    static const char *const loopback[] = {"127.0.0.1:1", "127.10.20.30:9901", "localhost:9901",
                                           "[::1]:9901", "[::ffff:127.0.0.1]:9901"};
    char yaml[512];
    for (size_t i = 0; i < QX_ARRAY_LEN(loopback); i++) {
        snprintf(yaml, sizeof(yaml), "admin:\n  listen: \"%s\"\n" SERVER ROUTES, loopback[i]);
        cfg = expect_ok(yaml, NULL);
        assert_string_equal(cfg->admin.listen, loopback[i]);
        assert_null(cfg->admin.token_file);
        qx_config_del(cfg);
    }

    cfg = expect_ok(SERVER ROUTES "admin:\n  ready_requires_upstream: true\n", NULL);
    assert_int_equal(cfg->admin.ready_requires_upstream, 1);
    qx_config_del(cfg);
    cfg = expect_ok(SERVER ROUTES "admin:\n  ready_requires_upstream: false\n", NULL);
    assert_int_equal(cfg->admin.ready_requires_upstream, 0);
    qx_config_del(cfg);
}

static void test_admin_token(void **state)
{
    (void)state;
    /* public with a token: accepted, the path resolved like cert/key */
    qx_config_t *cfg = expect_ok(SERVER ROUTES "admin:\n"
                                               "  listen: \"0.0.0.0:9901\"\n"
                                               "  token_file: secrets/token\n"
                                               "  ready_requires_upstream: true\n",
                                 "/etc/qrux");
    assert_string_equal(cfg->admin.listen, "0.0.0.0:9901");
    assert_int_equal(cfg->admin.addr.ss_family, AF_INET);
    assert_string_equal(cfg->admin.token_file, "/etc/qrux/secrets/token");
    assert_int_equal(cfg->admin.ready_requires_upstream, 1);
    qx_config_del(cfg);

    cfg = expect_ok(SERVER ROUTES "admin:\n"
                                  "  listen: \"[::]:9901\"\n"
                                  "  token_file: /run/secrets/admin-token\n",
                    "/etc/qrux");
    assert_string_equal(cfg->admin.token_file, "/run/secrets/admin-token");
    assert_int_equal(cfg->admin.addr.ss_family, AF_INET6);
    qx_config_del(cfg);

    /* a token on loopback is allowed too */
    cfg = expect_ok(SERVER ROUTES "admin:\n  token_file: t\n", NULL);
    assert_string_equal(cfg->admin.token_file, "t");
    qx_config_del(cfg);

    /* public without a token: refused, naming both fields */
    expect_reject(SERVER ROUTES "admin:\n  listen: \"0.0.0.0:9901\"\n",
                  "admin.token_file: required when admin.listen (0.0.0.0:9901) is not a loopback "
                  "address");
    expect_reject(SERVER ROUTES "admin:\n  listen: \"[::]:9901\"\n",
                  "admin.token_file: required when admin.listen ([::]:9901) is not a loopback "
                  "address");
    expect_reject(SERVER ROUTES "admin:\n  listen: \"10.1.2.3:9901\"\n",
                  "admin.token_file: required when admin.listen (10.1.2.3:9901) is not a loopback "
                  "address");
    expect_reject(SERVER ROUTES "admin:\n  listen: \"128.0.0.1:9901\"\n",
                  "admin.token_file: required when admin.listen (128.0.0.1:9901) is not a "
                  "loopback address");
    expect_reject(SERVER ROUTES "admin:\n  listen: \"[::2]:9901\"\n",
                  "admin.token_file: required when admin.listen ([::2]:9901) is not a loopback "
                  "address");
    expect_reject(SERVER ROUTES "admin:\n  listen: \"[::ffff:10.0.0.1]:9901\"\n",
                  "admin.token_file: required when admin.listen ([::ffff:10.0.0.1]:9901) is not "
                  "a loopback address");
    expect_reject(SERVER ROUTES "admin:\n  listen: \"0.0.0.0:9901\"\n  token_file: \"\"\n",
                  "admin.token_file: must not be empty");
}

static void test_admin_reject(void **state)
{
    (void)state;
    expect_reject(SERVER ROUTES "admin:\n  listen: \"127.0.0.1:9901\"\n  tokenfile: t\n",
                  "admin.tokenfile: unknown key (line 10)");
    expect_reject(SERVER ROUTES "admin:\n  https_listen: \"127.0.0.1:1\"\n",
                  "admin.https_listen: unknown key (line 9)");
    expect_reject(SERVER ROUTES "admin:\n  ready_requires_upstream: yes\n",
                  "admin.ready_requires_upstream: \"yes\" is not true or false");
    expect_reject(SERVER ROUTES "admin:\n  ready_requires_upstream: 1\n",
                  "admin.ready_requires_upstream: \"1\" is not true or false");
    expect_reject(SERVER ROUTES "admin: 9901\n", "admin: must be a mapping, not a scalar");
    expect_reject(SERVER ROUTES "admin:\n  listen: [a]\n", "admin.listen: must be a scalar");
    expect_reject(SERVER ROUTES "admin: {}\nadmin: {}\n", "admin: appears more than once");

    static const char *const bad[] = {"9901",        "127.0.0.1",       ":9901",
                                      "127.0.0.1:0", "localhost:65536", "admin:9901",
                                      "[::1]",       "::1:9901",        ""};
    char yaml[512], want[256];
    for (size_t i = 0; i < QX_ARRAY_LEN(bad); i++) {
        snprintf(yaml, sizeof(yaml), SERVER ROUTES "admin:\n  listen: \"%s\"\n", bad[i]);
        snprintf(want, sizeof(want),
                 "admin.listen: \"%s\" is not an address (host:port with an IPv4, [IPv6] or "
                 "localhost)",
                 bad[i]);
        expect_reject(yaml, want);
    }
}

static void test_message_truncation(void **state)
{
    char err[16];
    qx_config_t *cfg = NULL;
    static const char yaml[] = SERVER "  workers: 5000\n" ROUTES;
    (void)state;
    assert_int_equal(qx_config_load_buf(yaml, strlen(yaml), NULL, &cfg, err, sizeof(err)),
                     QX_ERR_CONFIG);
    assert_int_equal(strlen(err), sizeof(err) - 1);
    /* no buffer at all is fine */
    assert_int_equal(qx_config_load_buf(yaml, strlen(yaml), NULL, &cfg, NULL, 0), QX_ERR_CONFIG);
    /* a control character from the document does not break the line */
    char e2[256];
    static const char y2[] = SERVER "  workers: \"a\\nb\"\n" ROUTES;
    assert_int_equal(qx_config_load_buf(y2, strlen(y2), NULL, &cfg, e2, sizeof(e2)), QX_ERR_CONFIG);
    assert_null(strchr(e2, '\n'));
    assert_non_null(strstr(e2, "server.workers:"));
}

/* ------------------------------------------------------------------------ */
/* qx_addr_parse                                                            */
/* ------------------------------------------------------------------------ */

static void test_addr_parse(void **state)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char buf[INET6_ADDRSTRLEN];
    (void)state;

    assert_int_equal(qx_addr_parse("127.0.0.1:8080", &ss, &len), 0);
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(len, sizeof(struct sockaddr_in));
    assert_int_equal(ntohs(sin->sin_port), 8080);
    assert_string_equal(inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf)), "127.0.0.1");

    assert_int_equal(qx_addr_parse("0.0.0.0:443", &ss, &len), 0);
    assert_int_equal(ntohs(sin->sin_port), 443);
    assert_int_equal(sin->sin_addr.s_addr, htonl(INADDR_ANY));

    assert_int_equal(qx_addr_parse("localhost:8080", &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(ntohl(sin->sin_addr.s_addr), INADDR_LOOPBACK);

    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
    assert_int_equal(qx_addr_parse("[::1]:8080", &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(len, sizeof(struct sockaddr_in6));
    assert_int_equal(ntohs(sin6->sin6_port), 8080);
    assert_true(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));

    assert_int_equal(qx_addr_parse("[::]:8443", &ss, &len), 0);
    assert_true(IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr));
    assert_int_equal(ntohs(sin6->sin6_port), 8443);

    assert_int_equal(qx_addr_parse("[2001:db8::1]:65535", &ss, &len), 0);
    assert_int_equal(ntohs(sin6->sin6_port), 65535);
    assert_int_equal(qx_addr_parse("10.0.0.1:1", &ss, &len), 0);

    static const char *const bad[] = {"",
                                      "127.0.0.1",
                                      "127.0.0.1:",
                                      "127.0.0.1:0",
                                      "127.0.0.1:65536",
                                      "127.0.0.1:-1",
                                      "127.0.0.1:+80",
                                      "127.0.0.1:80x",
                                      "127.0.0.1: 80",
                                      "127.0.0.1:080000",
                                      "1.2.3:80",
                                      "256.0.0.1:80",
                                      "10.0.0.x:80",
                                      "example.com:80",
                                      "LOCALHOST:80",
                                      "::1:8080",
                                      "::1",
                                      "[::1]",
                                      "[::1]8080",
                                      "[::1]:",
                                      "[]:80",
                                      "[127.0.0.1]:80",
                                      "[::1:80",
                                      ":80",
                                      " 127.0.0.1:80",
                                      "[fe80::1%lo]:80"};
    for (size_t i = 0; i < QX_ARRAY_LEN(bad); i++) {
        if (qx_addr_parse(bad[i], &ss, &len) != QX_ERR_INVAL)
            fail_msg("qx_addr_parse accepted \"%s\"", bad[i]);
    }
    assert_int_equal(qx_addr_parse(NULL, &ss, &len), QX_ERR_INVAL);
}

/* ------------------------------------------------------------------------ */
/* Workers and cgroups                                                      */
/* ------------------------------------------------------------------------ */

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_cpu_max(void **state)
{
    (void)state;
    assert_int_equal(cpu_max_cpus("max 100000\n"), 0);
    assert_int_equal(cpu_max_cpus("100000 100000\n"), 1);
    assert_int_equal(cpu_max_cpus("150000 100000\n"), 2); /* rounded up */
    assert_int_equal(cpu_max_cpus("50000 100000\n"), 1);
    assert_int_equal(cpu_max_cpus("400000 100000\n"), 4);
    assert_int_equal(cpu_max_cpus("garbage"), 0);
    assert_int_equal(quota_cpus(-1, 100000), 0);
    assert_int_equal(quota_cpus(250000, 100000), 3);
}

static void test_cgroup_v2(void **state)
{
    char root[] = "/tmp/qrux-cgroup-XXXXXX";
    char path[512];
    (void)state;
    assert_non_null(mkdtemp(root));

    /* no files at all: no limit */
    assert_int_equal(cgroup_cpus(root, NULL), 0);

    /* namespaced: the container's cgroup is the root */
    write_file(root, "cpu.max", "150000 100000\n");
    assert_int_equal(cgroup_cpus(root, NULL), 2);
    assert_int_equal(available_cpus(root, NULL) <= 2, 1);
    write_file(root, "cpu.max", "max 100000\n");
    assert_int_equal(cgroup_cpus(root, NULL), 0);

    /* not namespaced: /proc/self/cgroup names the cgroup; the tightest
     * limit on the path to the root wins */
    snprintf(path, sizeof(path), "%s/kubepods", root);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/kubepods/pod1", root);
    assert_int_equal(mkdir(path, 0700), 0);
    write_file(root, "self", "0::/kubepods/pod1\n");
    write_file(root, "kubepods/cpu.max", "200000 100000\n");
    write_file(root, "kubepods/pod1/cpu.max", "max 100000\n");
    snprintf(path, sizeof(path), "%s/self", root);
    assert_int_equal(cgroup_cpus(root, path), 2);
    write_file(root, "kubepods/pod1/cpu.max", "100000 100000\n");
    assert_int_equal(cgroup_cpus(root, path), 1);
    assert_int_equal(available_cpus(root, path), 1);

    static const char *const files[] = {
        "kubepods/pod1/cpu.max", "kubepods/cpu.max", "cpu.max", "self",
        "kubepods/pod1",         "kubepods"};
    for (size_t i = 0; i < QX_ARRAY_LEN(files); i++) {
        snprintf(path, sizeof(path), "%s/%s", root, files[i]);
        assert_int_equal(remove(path), 0);
    }
    assert_int_equal(rmdir(root), 0);
}

static void test_cgroup_v1(void **state)
{
    char root[] = "/tmp/qrux-cgroup-XXXXXX";
    char path[512];
    (void)state;
    assert_non_null(mkdtemp(root));
    snprintf(path, sizeof(path), "%s/cpu,cpuacct", root);
    assert_int_equal(mkdir(path, 0700), 0);
    write_file(root, "cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
    write_file(root, "cpu,cpuacct/cpu.cfs_period_us", "100000\n");
    assert_int_equal(cgroup_cpus(root, NULL), 0);
    write_file(root, "cpu,cpuacct/cpu.cfs_quota_us", "250000\n");
    assert_int_equal(cgroup_cpus(root, NULL), 3);

    static const char *const files[] = {"cpu,cpuacct/cpu.cfs_quota_us",
                                        "cpu,cpuacct/cpu.cfs_period_us", "cpu,cpuacct"};
    for (size_t i = 0; i < QX_ARRAY_LEN(files); i++) {
        snprintf(path, sizeof(path), "%s/%s", root, files[i]);
        assert_int_equal(remove(path), 0);
    }
    assert_int_equal(rmdir(root), 0);
}

static void test_effective_workers(void **state)
{
    cpu_set_t set;
    (void)state;
    assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
    unsigned n = qx_config_effective_workers(NULL);
    assert_true(n >= 1);
    assert_true(n <= (unsigned)CPU_COUNT(&set));

    qx_config_t *cfg = expect_ok(SERVER ROUTES, NULL);
    assert_int_equal(qx_config_effective_workers(cfg), n);
    qx_config_del(cfg);
}

static void test_del_half_built(void **state)
{
    (void)state;
    qx_config_del(NULL);

    qx_config_t *cfg = calloc(1, sizeof(*cfg));
    assert_non_null(cfg);
    cfg->listen = strdup("[::]:1");
    cfg->https_listen = strdup("[::]:1");
    cfg->routes = calloc(3, sizeof(*cfg->routes));
    cfg->nroutes = 3;
    cfg->routes[0].match = strdup("a");
    cfg->routes[0].upstreams = calloc(2, sizeof(*cfg->routes[0].upstreams));
    cfg->routes[0].nupstreams = 2;
    cfg->routes[0].upstreams[0].name = strdup("127.0.0.1:1");
    /* routes[1] and [2] left empty, as a failed build leaves them */
    qx_config_del(cfg);
}

/* Upstreams by name: "name:port" with a DNS name; the parser alone. */
static void test_upstream_parse(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *host; /* NULL: an address literal */
        uint16_t port;
    } ok[] = {
        {"api.shop.svc.cluster.local:8080", "api.shop.svc.cluster.local", 8080},
        {"API.Example.COM:80", "api.example.com", 80},
        {"backend:1", "backend", 1},
        {"my-svc.ns.svc.cluster.local.:65535", "my-svc.ns.svc.cluster.local.", 65535},
        {"1password.example:443", "1password.example", 443},
        {"x.y-z.0a:9", "x.y-z.0a", 9},
        {"127.0.0.1:8080", NULL, 8080},
        {"[::1]:8081", NULL, 8081},
        {"localhost:8082", NULL, 8082},
    };
    for (size_t i = 0; i < QX_ARRAY_LEN(ok); i++) {
        qx_upstream_cfg_t u;
        memset(&u, 0, sizeof(u));
        if (qx_upstream_parse(ok[i].in, &u) != 0)
            fail_msg("refused: %s", ok[i].in);
        if (ok[i].host == NULL)
            assert_null(u.host);
        else
            assert_string_equal(u.host, ok[i].host);
        assert_int_equal(u.port, ok[i].port);
        if (ok[i].host == NULL)
            assert_int_not_equal(u.addrlen, 0);
        free(u.host);
    }
    char long_label[80], long_name[300];
    memset(long_label, 'a', 64);
    snprintf(long_label + 64, sizeof(long_label) - 64, ".svc:80");
    size_t n = 0;
    while (n < 250) {
        memcpy(long_name + n, "abcdefg.", 8);
        n += 8;
    }
    snprintf(long_name + n, sizeof(long_name) - n, "x:80"); /* 254 characters of name */
    const char *bad[] = {
        "api.svc",       /* no port */
        "api.svc:",      /* empty port */
        "api.svc:0",     /* port 0 */
        "api.svc:65536", /* port too large */
        "api.svc:8o",    /* not a number */
        ":80",           /* no host */
        "-api.svc:80",   /* a label starting with '-' */
        "api-.svc:80",   /* ... ending with '-' */
        "api..svc:80",   /* an empty label */
        "api_svc:80",    /* '_' is not in a host name */
        "api svc:80",    /* nor a blank */
        "10.0.0.256:80", /* all digits: a bad address, not a name */
        "10.0.0.x:80",   /* a mistyped address */
        "api.svc..:80",  /* two trailing dots */
        "[api.svc]:80",  /* brackets are for IPv6 */
        "::1:80",        /* unbracketed IPv6 */
        long_label,      /* a label of 64 */
        long_name,       /* a name of 254 */
    };
    for (size_t i = 0; i < QX_ARRAY_LEN(bad); i++) {
        qx_upstream_cfg_t u;
        memset(&u, 0, sizeof(u));
        if (qx_upstream_parse(bad[i], &u) != QX_ERR_INVAL)
            fail_msg("accepted: %s", bad[i]);
        assert_null(u.host);
    }
}

/* The dns section: defaults, overrides and the field-named errors. */
static void test_dns_section(void **state)
{
    (void)state;
    qx_config_t *cfg = expect_ok(SERVER ROUTES, NULL);
    assert_null(cfg->dns.servers);
    assert_int_equal(cfg->dns.nsearch, 0);
    assert_int_equal(cfg->dns.ndots, -1);
    assert_int_equal(cfg->dns.min_ttl_secs, 5);
    assert_int_equal(cfg->dns.max_ttl_secs, 300);
    qx_config_del(cfg);
    cfg = expect_ok(SERVER "routes:\n  - match: \"*\"\n    upstreams: [\"api.ns.svc:8080\", "
                           "\"10.0.0.1:80\"]\n"
                           "dns:\n  servers: [\"127.0.0.1:5353\", \"10.0.0.10\", \"[::1]:53\", "
                           "\"fd00::10\"]\n  search: [ns.svc.cluster.local, svc.cluster.local]\n"
                           "  ndots: 5\n  min_ttl_secs: 1\n  max_ttl_secs: 60\n",
                    NULL);
    assert_string_equal(cfg->dns.servers, "127.0.0.1:5353,10.0.0.10:53,[::1]:53,[fd00::10]:53");
    assert_int_equal(cfg->dns.nsearch, 2);
    assert_string_equal(cfg->dns.search[1], "svc.cluster.local");
    assert_int_equal(cfg->dns.ndots, 5);
    assert_int_equal(cfg->dns.min_ttl_secs, 1);
    assert_int_equal(cfg->dns.max_ttl_secs, 60);
    assert_string_equal(cfg->routes[0].upstreams[0].host, "api.ns.svc");
    assert_int_equal(cfg->routes[0].upstreams[0].port, 8080);
    assert_null(cfg->routes[0].upstreams[1].host);
    qx_config_del(cfg);
    expect_reject(SERVER ROUTES "dns:\n  servers: [\"dns.local\"]\n",
                  "dns.servers[0]: \"dns.local\" is not an IP address");
    expect_reject(SERVER ROUTES "dns:\n  search: [\"a..b\"]\n",
                  "dns.search[0]: \"a..b\" is not a DNS name");
    expect_reject(SERVER ROUTES "dns:\n  ndots: 16\n", "dns.ndots: must be <= 15");
    expect_reject(SERVER ROUTES "dns:\n  min_ttl_secs: 0\n", "dns.min_ttl_secs: must be > 0");
    expect_reject(SERVER ROUTES "dns:\n  min_ttl_secs: 10\n  max_ttl_secs: 5\n",
                  "dns.max_ttl_secs: must be >= min_ttl_secs (10)");
    expect_reject(SERVER ROUTES "dns:\n  servres: []\n", "dns.servres");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_config),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_websocket),
        cmocka_unit_test(test_match_lowercased),
        cmocka_unit_test(test_path_resolution),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_examples_load),
        cmocka_unit_test(test_reject_too_many_upstreams),
        cmocka_unit_test(test_reject_limits),
        cmocka_unit_test(test_reject_workers),
        cmocka_unit_test(test_reject_unknown_keys),
        cmocka_unit_test(test_reject_yaml_errors),
        cmocka_unit_test(test_reject_required),
        cmocka_unit_test(test_reject_listen),
        cmocka_unit_test(test_reject_routes),
        cmocka_unit_test(test_route_protocol),
        cmocka_unit_test(test_upstream_parse),
        cmocka_unit_test(test_dns_section),
        cmocka_unit_test(test_admin_absent),
        cmocka_unit_test(test_admin_defaults),
        cmocka_unit_test(test_admin_token),
        cmocka_unit_test(test_admin_reject),
        cmocka_unit_test(test_message_truncation),
        cmocka_unit_test(test_addr_parse),
        cmocka_unit_test(test_cpu_max),
        cmocka_unit_test(test_cgroup_v2),
        cmocka_unit_test(test_cgroup_v1),
        cmocka_unit_test(test_effective_workers),
        cmocka_unit_test(test_del_half_built),
        cmocka_unit_test(test_https_listen),
        cmocka_unit_test(test_xdp_section),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
