/*
 * config_json_test.c - the configuration as JSON: routes and the effective
 * config out (exact text), a route table in (success, and every rejection
 * with its code, message and field), the same verdict as the YAML loader
 * for the same route, and the deep copy.
 */
#include "config/config_json.h"

#include "base/qx.h"

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
#include <unistd.h>

#define SERVER                                                                                     \
    "server:\n"                                                                                    \
    "  listen: \"[::]:8443\"\n"                                                                    \
    "  cert: certs/cert.pem\n"                                                                     \
    "  key: certs/key.pem\n"

/* A base with every section set away from its defaults, so a copy that
 * drops or resets anything shows. */
static const char base_yaml[] = "server:\n"
                                "  listen: \"0.0.0.0:443\"\n"
                                "  cert: certs/cert.pem\n"
                                "  key: /etc/tls/key.pem\n"
                                "  https_listen: \"127.0.0.1:8443\"\n"
                                "  alt_svc_max_age: 600\n"
                                "  drain_delay_secs: 0\n"
                                "  early_data: all\n"
                                "  retry: never\n"
                                "  ticket_key_file: secrets/ticket.key\n"
                                "  workers: 4\n"
                                "  limits:\n"
                                "    upstream_connect_timeout_secs: 3\n"
                                "    upstream_request_timeout_secs: 60\n"
                                "    max_request_body_bytes: 1000\n"
                                "    max_upstream_response_body_bytes: 2000\n"
                                "    max_idle_connections_per_upstream: 2\n"
                                "    graceful_shutdown_secs: 5\n"
                                "    header_read_timeout_secs: 3\n"
                                "    body_idle_timeout_secs: 4\n"
                                "    max_quic_connections: 50\n"
                                "    max_quic_connections_per_ip: 5\n"
                                "    quic_handshake_timeout_secs: 6\n"
                                "    quic_idle_timeout_secs: 7\n"
                                "    max_streams_per_connection: 8\n"
                                "    retry_handshakes_threshold: 9\n"
                                "    websocket_idle_timeout_secs: 11\n"
                                "    max_websocket_tunnels: 12\n"
                                "    max_websocket_tunnels_per_connection: 13\n"
                                "    upstream_keepalive_timeout_secs: 14\n"
                                "routes:\n"
                                "  - match: API.Example.com\n"
                                "    upstream: \"127.0.0.1:8080\"\n"
                                "  - match: \"*.example.org.\"\n"
                                "    upstreams: [\"10.0.0.1:8080\", \"[::1]:9090\"]\n"
                                "  - match: \"*\"\n"
                                "    upstreams:\n"
                                "      - \"localhost:81\"\n"
                                "    protocol: h2c\n"
                                "admin:\n"
                                "  listen: \"[::]:9901\"\n"
                                "  token_file: secrets/token\n"
                                "  ready_requires_upstream: true\n"
                                "dns:\n"
                                "  servers: [\"10.96.0.10\"]\n"
                                "  search: [ns.svc.cluster.local]\n"
                                "  ndots: 5\n"
                                "  min_ttl_secs: 2\n"
                                "  max_ttl_secs: 30\n"
                                "xdp:\n"
                                "  pin: /sys/fs/bpf/q1\n"
                                "  initial_rate: 5\n"
                                "  initial_burst: 6\n"
                                "  cid_key_rotate_secs: 7\n";

/* base_yaml's routes, as JSON_SORT_KEYS | JSON_COMPACT writes them */
static const char base_routes_json[] =
    "[{\"match\":\"api.example.com\",\"upstream\":\"127.0.0.1:8080\"},"
    "{\"match\":\"*.example.org\",\"upstreams\":[\"10.0.0.1:8080\",\"[::1]:9090\"]},"
    "{\"match\":\"*\",\"protocol\":\"h2c\",\"upstreams\":[\"localhost:81\"]}]";

static qx_config_t *load_(const char *yaml, const char *basedir, const char *file, int line)
{
    char err[512] = "";
    qx_config_t *cfg = NULL;
    int rv = qx_config_load_buf(yaml, strlen(yaml), basedir, &cfg, err, sizeof(err));
    if (rv != 0 || cfg == NULL)
        fail_msg("%s:%d: rv=%d err=[%s]\n%s", file, line, rv, err, yaml);
    return cfg;
}
#define load(yaml, basedir) load_((yaml), (basedir), __FILE__, __LINE__)

/* json_dumps(JSON_SORT_KEYS | JSON_COMPACT), then releases |j|. The caller
 * frees the text. */
static char *dump(json_t *j)
{
    assert_non_null(j);
    char *s = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY);
    assert_non_null(s);
    json_decref(j);
    return s;
}

static void assert_json_(json_t *j, const char *want, const char *file, int line)
{
    char *got = dump(j);
    if (strcmp(got, want) != 0)
        fail_msg("%s:%d: JSON\n got: %s\nwant: %s", file, line, got, want);
    free(got);
}
#define assert_json(j, want) assert_json_((j), (want), __FILE__, __LINE__)

/* ------------------------------------------------------------------------ */
/* Config -> JSON                                                           */
/* ------------------------------------------------------------------------ */

static void test_routes_to_json(void **state)
{
    (void)state;
    qx_config_t *cfg = load(base_yaml, "/etc/qrux");
    /* config order, matches normalised, names as written, the route's own
     * form (upstream vs a one-entry upstreams) kept */
    assert_json(qx_config_routes_to_json(cfg), base_routes_json);
    assert_null(qx_config_routes_to_json(NULL));
    qx_config_del(cfg);
}

static void test_routes_round_trip(void **state)
{
    char err[256], field[64];
    (void)state;
    qx_config_t *cfg = load(base_yaml, NULL), *out = NULL;

    /* YAML -> JSON -> config -> JSON is the same text */
    char *text = dump(qx_config_routes_to_json(cfg));
    char *body = NULL;
    size_t blen = strlen(text) + sizeof("{\"routes\":}");
    assert_non_null(body = malloc(blen));
    snprintf(body, blen, "{\"routes\":%s}", text);
    assert_int_equal(qx_config_with_routes_json(cfg, body, strlen(body), &out, err, sizeof(err),
                                                field, sizeof(field)),
                     0);
    assert_json(qx_config_routes_to_json(out), text);
    /* and the rest of the config is the base's */
    char *whole = dump(qx_config_to_json(cfg));
    assert_json(qx_config_to_json(out), whole);
    free(whole);
    free(body);
    free(text);
    qx_config_del(out);
    qx_config_del(cfg);
}

static void test_config_to_json_defaults(void **state)
{
    (void)state;
    qx_config_t *cfg =
        load(SERVER "routes:\n  - match: \"*\"\n    upstream: \"127.0.0.1:8080\"\n", "/etc/qrux");
    assert_json(qx_config_to_json(cfg),
                "{\"admin\":null,"
                "\"dns\":{\"max_ttl_secs\":300,\"min_ttl_secs\":5,\"ndots\":null,"
                "\"search\":null,\"servers\":null},"
                "\"log\":{\"format\":\"text\"},"
                "\"routes\":[{\"match\":\"*\",\"upstream\":\"127.0.0.1:8080\"}],"
                "\"server\":{\"alt_svc_max_age\":86400,"
                "\"cert\":\"/etc/qrux/certs/cert.pem\","
                "\"drain_delay_secs\":5,\"early_data\":\"safe\",\"https_listen\":null,"
                "\"key\":\"/etc/qrux/certs/key.pem\","
                "\"limits\":{\"body_idle_timeout_secs\":30,"
                "\"client_idle_timeout_secs\":30,"
                "\"graceful_shutdown_secs\":30,"
                "\"header_read_timeout_secs\":10,"
                "\"max_connections_per_upstream\":1024,"
                "\"max_idle_connections_per_upstream\":256,"
                "\"max_quic_connections\":10000,"
                "\"max_quic_connections_per_ip\":200,"
                "\"max_request_body_bytes\":10485760,"
                "\"max_streams_per_connection\":100,"
                "\"max_tcp_connections\":10000,"
                "\"max_tcp_connections_per_ip\":500,"
                "\"max_upstream_response_body_bytes\":52428800,"
                "\"max_websocket_tunnels\":1024,"
                "\"max_websocket_tunnels_per_connection\":100,"
                "\"quic_handshake_timeout_secs\":10,"
                "\"quic_idle_timeout_secs\":30,"
                "\"retry_handshakes_threshold\":100,"
                "\"upstream_connect_timeout_secs\":10,"
                "\"upstream_idle_timeout_secs\":60,"
                "\"upstream_keepalive_timeout_secs\":60,"
                "\"upstream_request_timeout_secs\":120,"
                "\"websocket_idle_timeout_secs\":300},"
                "\"listen\":\"[::]:8443\",\"retry\":\"auto\",\"ticket_key_file\":null,"
                "\"workers\":0},\"xdp\":null}");
    qx_config_del(cfg);

    /* `admin: {}`: the admin defaults */
    cfg = load(SERVER "routes:\n  - match: \"*\"\n    upstream: \"127.0.0.1:8080\"\n"
                      "admin: {}\n",
               NULL);
    json_t *j = qx_config_to_json(cfg);
    assert_json(json_incref(json_object_get(j, "admin")),
                "{\"listen\":\"127.0.0.1:9901\",\"ready_requires_upstream\":false,"
                "\"token_file\":null}");
    json_decref(j);
    qx_config_del(cfg);

    /* every key set */
    cfg = load(base_yaml, "/etc/qrux");
    char *want = NULL;
    const char fmt[] =
        "{\"admin\":{\"listen\":\"[::]:9901\",\"ready_requires_upstream\":true,"
        "\"token_file\":\"/etc/qrux/secrets/token\"},"
        "\"dns\":{\"max_ttl_secs\":30,\"min_ttl_secs\":2,\"ndots\":5,"
        "\"search\":[\"ns.svc.cluster.local\"],\"servers\":\"10.96.0.10:53\"},"
        "\"log\":{\"format\":\"text\"},"
        "\"routes\":%s,"
        "\"server\":{\"alt_svc_max_age\":600,\"cert\":\"/etc/qrux/certs/cert.pem\","
        "\"drain_delay_secs\":0,\"early_data\":\"all\",\"https_listen\":\"127.0.0.1:8443\","
        "\"key\":\"/etc/tls/key.pem\","
        "\"limits\":{\"body_idle_timeout_secs\":4,\"client_idle_timeout_secs\":30,"
        "\"graceful_shutdown_secs\":5,"
        "\"header_read_timeout_secs\":3,\"max_connections_per_upstream\":1024,"
        "\"max_idle_connections_per_upstream\":2,"
        "\"max_quic_connections\":50,\"max_quic_connections_per_ip\":5,"
        "\"max_request_body_bytes\":1000,\"max_streams_per_connection\":8,"
        "\"max_tcp_connections\":10000,\"max_tcp_connections_per_ip\":500,"
        "\"max_upstream_response_body_bytes\":2000,\"max_websocket_tunnels\":12,"
        "\"max_websocket_tunnels_per_connection\":13,\"quic_handshake_timeout_secs\":6,"
        "\"quic_idle_timeout_secs\":7,\"retry_handshakes_threshold\":9,"
        "\"upstream_connect_timeout_secs\":3,\"upstream_idle_timeout_secs\":60,"
        "\"upstream_keepalive_timeout_secs\":14,\"upstream_request_timeout_secs\":60,"
        "\"websocket_idle_timeout_secs\":11},"
        "\"listen\":\"0.0.0.0:443\",\"retry\":\"never\","
        "\"ticket_key_file\":\"/etc/qrux/secrets/ticket.key\",\"workers\":4},"
        "\"xdp\":{\"cid_key_rotate_secs\":7,\"initial_burst\":6,\"initial_rate\":5,"
        "\"pin\":\"/sys/fs/bpf/q1\"}}";
    size_t wlen = sizeof(fmt) + sizeof(base_routes_json);
    assert_non_null(want = malloc(wlen));
    snprintf(want, wlen, fmt, base_routes_json);
    assert_json(qx_config_to_json(cfg), want);
    free(want);
    qx_config_del(cfg);

    assert_null(qx_config_to_json(NULL));
}

static void test_config_to_json_big_limit(void **state)
{
    (void)state;
    /* above the signed 64-bit range of JSON integers: a number, never a
     * wrapped negative one */
    qx_config_t *cfg =
        load(SERVER "  limits:\n    max_upstream_response_body_bytes: 18446744073709551615\n"
                    "routes:\n  - match: \"*\"\n    upstream: \"127.0.0.1:8080\"\n",
             NULL);
    json_t *j = qx_config_to_json(cfg);
    json_t *v = json_object_get(json_object_get(json_object_get(j, "server"), "limits"),
                                "max_upstream_response_body_bytes");
    assert_true(json_is_number(v));
    assert_true(json_number_value(v) > 1.8e19);
    json_decref(j);
    qx_config_del(cfg);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_config_to_json_no_secrets(void **state)
{
    char dir[] = "/tmp/qrux-config-json-XXXXXX";
    char path[256], yaml[1024], err[512];
    qx_config_t *cfg = NULL;
    (void)state;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/token", dir);
    write_file(path, "s3cr3t-t0ken\n");
    snprintf(path, sizeof(path), "%s/key.pem", dir);
    write_file(path, "-----BEGIN PRIVATE KEY-----\nPRIVATEKEYBYTES\n-----END PRIVATE KEY-----\n");
    snprintf(yaml, sizeof(yaml),
             "server:\n  listen: \"[::]:8443\"\n  cert: cert.pem\n  key: key.pem\n"
             "routes:\n  - match: \"*\"\n    upstream: \"127.0.0.1:8080\"\n"
             "admin:\n  listen: \"0.0.0.0:9901\"\n  token_file: token\n");
    snprintf(path, sizeof(path), "%s/qrux.yaml", dir);
    write_file(path, yaml);

    assert_int_equal(qx_config_load_file(path, &cfg, err, sizeof(err)), 0);
    char *text = dump(qx_config_to_json(cfg));
    assert_null(strstr(text, "s3cr3t"));
    assert_null(strstr(text, "PRIVATE"));
    /* the paths are shown: an operator needs to know which file is used */
    snprintf(path, sizeof(path), "\"token_file\":\"%s/token\"", dir);
    assert_non_null(strstr(text, path));
    snprintf(path, sizeof(path), "\"key\":\"%s/key.pem\"", dir);
    assert_non_null(strstr(text, path));
    free(text);
    qx_config_del(cfg);

    static const char *const files[] = {"token", "key.pem", "qrux.yaml"};
    for (size_t i = 0; i < QX_ARRAY_LEN(files); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        assert_int_equal(unlink(path), 0);
    }
    assert_int_equal(rmdir(dir), 0);
}

/* ------------------------------------------------------------------------ */
/* Deep copy                                                                */
/* ------------------------------------------------------------------------ */

static void test_dup_deep(void **state)
{
    (void)state;
    qx_config_t *cfg = load(base_yaml, "/etc/qrux");
    char err[512];
    qx_config_t *withpath = NULL;
    char *before = dump(qx_config_to_json(cfg));

    qx_config_t *d = qx_config_dup(cfg);
    assert_non_null(d);
    assert_json(qx_config_to_json(d), before);

    /* every pointer is its own */
    assert_ptr_not_equal(d->listen, cfg->listen);
    assert_ptr_not_equal(d->https_listen, cfg->https_listen);
    assert_ptr_not_equal(d->cert, cfg->cert);
    assert_ptr_not_equal(d->key, cfg->key);
    assert_ptr_not_equal(d->routes, cfg->routes);
    assert_ptr_not_equal(d->admin.listen, cfg->admin.listen);
    assert_ptr_not_equal(d->admin.token_file, cfg->admin.token_file);
    assert_int_equal(d->nroutes, cfg->nroutes);
    for (size_t i = 0; i < cfg->nroutes; i++) {
        assert_ptr_not_equal(d->routes[i].match, cfg->routes[i].match);
        assert_ptr_not_equal(d->routes[i].upstreams, cfg->routes[i].upstreams);
        assert_int_equal(d->routes[i].single, cfg->routes[i].single);
        assert_int_equal(d->routes[i].nupstreams, cfg->routes[i].nupstreams);
        for (size_t j = 0; j < cfg->routes[i].nupstreams; j++) {
            const qx_upstream_cfg_t *a = &cfg->routes[i].upstreams[j],
                                    *b = &d->routes[i].upstreams[j];
            assert_ptr_not_equal(a->name, b->name);
            assert_int_equal(a->addrlen, b->addrlen);
            assert_memory_equal(&a->addr, &b->addr, a->addrlen);
        }
    }
    /* the sockaddrs and numbers */
    assert_int_equal(d->listen_addrlen, cfg->listen_addrlen);
    assert_memory_equal(&d->listen_addr, &cfg->listen_addr, cfg->listen_addrlen);
    assert_int_equal(d->https_addrlen, cfg->https_addrlen);
    assert_memory_equal(&d->https_addr, &cfg->https_addr, cfg->https_addrlen);
    assert_int_equal(d->alt_svc_max_age, 600);
    assert_int_equal(d->drain_delay_secs, 0);
    assert_int_equal(d->admin.addrlen, cfg->admin.addrlen);
    assert_memory_equal(&d->admin.addr, &cfg->admin.addr, cfg->admin.addrlen);
    assert_memory_equal(&d->limits, &cfg->limits, sizeof(cfg->limits));
    assert_int_equal(d->workers, 4);

    /* writing the copy leaves the original as it was */
    d->listen[0] = 'X';
    d->https_listen[0] = 'X';
    d->cert[0] = 'X';
    d->key[0] = 'X';
    d->admin.listen[0] = 'X';
    d->admin.token_file[0] = 'X';
    d->xdp.pin[0] = 'X';
    d->routes[0].match[0] = 'X';
    d->routes[1].upstreams[1].name[0] = 'X';
    d->routes[1].upstreams[1].addr.ss_family = AF_UNSPEC;
    d->limits.graceful_shutdown_secs = 99;
    assert_json(qx_config_to_json(cfg), before);

    /* and the copy outlives the original (valgrind checks the reads) */
    qx_config_del(cfg);
    assert_string_equal(d->routes[2].upstreams[0].name, "localhost:81");
    assert_string_equal(d->routes[0].match, "Xpi.example.com");
    qx_config_del(d);
    free(before);

    /* path too, when loaded from a file */
    assert_int_equal(qx_config_load_file("config/examples/qrux.yaml", &withpath, err, sizeof(err)),
                     0);
    d = qx_config_dup(withpath);
    assert_non_null(d);
    assert_ptr_not_equal(d->path, withpath->path);
    assert_string_equal(d->path, "config/examples/qrux.yaml");
    qx_config_del(withpath);
    qx_config_del(d);

    /* no admin section stays none */
    cfg = load(SERVER "routes:\n  - match: \"*\"\n    upstream: \"127.0.0.1:8080\"\n", NULL);
    d = qx_config_dup(cfg);
    assert_null(d->admin.listen);
    assert_null(d->admin.token_file);
    assert_null(d->https_listen);
    assert_null(d->path);
    qx_config_del(cfg);
    qx_config_del(d);

    assert_null(qx_config_dup(NULL));
}

/* ------------------------------------------------------------------------ */
/* JSON route table -> config                                               */
/* ------------------------------------------------------------------------ */

static void test_with_routes_ok(void **state)
{
    static const char body[] =
        "{\"routes\": ["
        "  {\"match\": \"New.Example.com.\", \"upstream\": \"127.0.0.1:7000\"},"
        "  {\"match\": \"*\", \"upstreams\": [\"[::1]:7001\", \"10.0.0.9:7002\"]}"
        "]}";
    char err[256] = "x", field[64] = "x";
    qx_config_t *out = NULL;
    (void)state;

    qx_config_t *base = load(base_yaml, "/etc/qrux");
    char *base_before = dump(qx_config_to_json(base));

    assert_int_equal(qx_config_with_routes_json(base, body, strlen(body), &out, err, sizeof(err),
                                                field, sizeof(field)),
                     0);
    assert_non_null(out);
    assert_string_equal(err, "");
    assert_string_equal(field, "");

    /* the new table, checked and normalised like the file's */
    assert_int_equal(out->nroutes, 2);
    assert_string_equal(out->routes[0].match, "new.example.com");
    assert_int_equal(out->routes[0].single, 1);
    assert_int_equal(out->routes[0].nupstreams, 1);
    assert_string_equal(out->routes[0].upstreams[0].name, "127.0.0.1:7000");
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&out->routes[0].upstreams[0].addr;
    assert_int_equal(sin->sin_family, AF_INET);
    assert_int_equal(ntohs(sin->sin_port), 7000);
    assert_int_equal(out->routes[1].single, 0);
    assert_int_equal(out->routes[1].nupstreams, 2);
    assert_int_equal(out->routes[1].upstreams[0].addr.ss_family, AF_INET6);
    assert_int_equal(out->routes[1].upstreams[0].addrlen, sizeof(struct sockaddr_in6));
    assert_json(qx_config_routes_to_json(out),
                "[{\"match\":\"new.example.com\",\"upstream\":\"127.0.0.1:7000\"},"
                "{\"match\":\"*\",\"upstreams\":[\"[::1]:7001\",\"10.0.0.9:7002\"]}]");

    /* everything else is the base's */
    json_t *a = qx_config_to_json(base), *b = qx_config_to_json(out);
    json_object_del(a, "routes");
    json_object_del(b, "routes");
    assert_true(json_equal(a, b));
    json_decref(a);
    json_decref(b);
    assert_int_equal(out->listen_addrlen, base->listen_addrlen);
    assert_memory_equal(&out->listen_addr, &base->listen_addr, base->listen_addrlen);
    assert_memory_equal(&out->admin.addr, &base->admin.addr, base->admin.addrlen);
    assert_ptr_not_equal(out->cert, base->cert);

    /* the base is untouched, and the result does not lean on it */
    assert_json(qx_config_to_json(base), base_before);
    qx_config_del(base);
    assert_string_equal(out->admin.token_file, "/etc/qrux/secrets/token");
    assert_int_equal(out->workers, 4);
    qx_config_del(out);
    free(base_before);
}

static void test_with_routes_buffers(void **state)
{
    char err[256], field[64];
    qx_config_t *out = (qx_config_t *)&err;
    (void)state;
    qx_config_t *base = load(base_yaml, NULL);

    /* the body need not be NUL-terminated: only len bytes are read */
    static const char buf[] =
        "{\"routes\":[{\"match\":\"*\",\"upstream\":\"127.0.0.1:1\"}]}GARBAGE";
    assert_int_equal(qx_config_with_routes_json(base, buf, strlen(buf) - 7, &out, err, sizeof(err),
                                                field, sizeof(field)),
                     0);
    qx_config_del(out);

    /* no err/field buffers is fine */
    out = (qx_config_t *)&err;
    assert_int_equal(qx_config_with_routes_json(base, "{}", 2, &out, NULL, 0, NULL, 0),
                     QX_ERR_CONFIG);
    assert_null(out);
    assert_int_equal(qx_config_with_routes_json(base, "{", 1, &out, NULL, 0, NULL, 0),
                     QX_ERR_CONFIG);
    assert_int_equal(qx_config_with_routes_json(base, buf, strlen(buf) - 7, &out, NULL, 0, NULL, 0),
                     0);
    qx_config_del(out);

    /* a short buffer truncates, still one line */
    char small[12], fsmall[6];
    static const char bad[] = "{\"routes\":[{\"match\":\"a\",\"upstream\":\"x\"}]}";
    assert_int_equal(qx_config_with_routes_json(base, bad, strlen(bad), &out, small, sizeof(small),
                                                fsmall, sizeof(fsmall)),
                     QX_ERR_CONFIG);
    assert_string_equal(small, "routes[0].u");
    assert_string_equal(fsmall, "route");

    /* bad arguments */
    assert_int_equal(
        qx_config_with_routes_json(NULL, "{}", 2, &out, err, sizeof(err), field, sizeof(field)),
        QX_ERR_INVAL);
    assert_int_equal(
        qx_config_with_routes_json(base, "{}", 2, NULL, err, sizeof(err), field, sizeof(field)),
        QX_ERR_INVAL);
    assert_int_equal(
        qx_config_with_routes_json(base, NULL, 2, &out, err, sizeof(err), field, sizeof(field)),
        QX_ERR_INVAL);
    qx_config_del(base);
}

typedef struct reject_case {
    const char *body;
    const char *err;
    const char *field;
} reject_case_t;

#define ADDR_FORMS "(host:port with an IPv4, [IPv6], localhost or a DNS name)"
#define R(m, rest) "{\"match\":\"" m "\"," rest "}"
#define UP(a) "\"upstream\":\"" a "\""

static const reject_case_t rejects[] = {
    /* not JSON */
    {"{\"routes\": [", "malformed JSON at line 1 column 12: ']' expected near end of file", ""},
    {"", "malformed JSON at line 1 column 0: unexpected token near end of file", ""},
    {"{\"routes\": [{\"match\": \"*\", \"upstream\": \"127.0.0.1:1\"}]} x",
     "malformed JSON at line 1 column 57: end of file expected near 'x'", ""},
    {"{\n\"routes\": [],\n\"routes\": []\n}",
     "malformed JSON at line 3 column 8: duplicate object key near '\"routes\"'", ""},
    {"{\"routes\": [{\"match\": \"a\", \"match\": \"b\", \"upstream\": \"127.0.0.1:1\"}]}",
     "malformed JSON at line 1 column 34: duplicate object key near '\"match\"'", ""},
    /* not the document's shape */
    {"[{\"match\": \"*\", \"upstream\": \"127.0.0.1:1\"}]",
     "document: must be an object {\"routes\": [...]}, not an array", ""},
    {"\"routes\"", "document: must be an object {\"routes\": [...]}, not a string", ""},
    {"null", "document: must be an object {\"routes\": [...]}, not null", ""},
    {"{}", "routes: is required", "routes"},
    {"{\"routes\": {\"match\": \"*\"}}", "routes: must be an array, not an object", "routes"},
    {"{\"routes\": null}", "routes: must be an array, not null", "routes"},
    {"{\"routes\": []}", "routes: at least one route is required", "routes"},
    {"{\"routes\": [" R("*", UP("127.0.0.1:1")) "], \"generation\": 3}", "generation: unknown key",
     "generation"},
    {"{\"Routes\": []}", "Routes: unknown key", "Routes"},
    {"{\"routes\": [" R("*", UP("127.0.0.1:1")) ", 7]}",
     "routes[1]: must be an object, not a number", "routes[1]"},
    {"{\"routes\": [" R("*", UP("127.0.0.1:1") ",\"weight\":3") "]}",
     "routes[0].weight: unknown key", "routes[0].weight"},
    {"{\"routes\": [{\"match\": 5, \"upstream\": \"127.0.0.1:1\"}]}",
     "routes[0].match: must be a string, not a number", "routes[0].match"},
    {"{\"routes\": [" R("*", "\"upstream\":[\"127.0.0.1:1\"]") "]}",
     "routes[0].upstream: must be a string, not an array", "routes[0].upstream"},
    {"{\"routes\": [" R("*", "\"upstreams\":\"127.0.0.1:1\"") "]}",
     "routes[0].upstreams: must be an array, not a string", "routes[0].upstreams"},
    {"{\"routes\": [" R("*", "\"upstreams\":[\"127.0.0.1:1\", 8080]") "]}",
     "routes[0].upstreams[1]: must be a string, not a number", "routes[0].upstreams[1]"},
    {"{\"routes\": [" R("*", "\"upstreams\":[null]") "]}",
     "routes[0].upstreams[0]: must be a string, not null", "routes[0].upstreams[0]"},
    {"{\"routes\": [" R("*", UP("127.0.0.1:1") ",\"protocol\":2") "]}",
     "routes[0].protocol: must be a string, not a number", "routes[0].protocol"},
    /* what the route means: the loader's own checks */
    {"{\"routes\": [" R("*", UP("127.0.0.1:1") ",\"protocol\":\"grpc\"") "]}",
     "routes[0].protocol: \"grpc\" is not one of h1, h2c", "routes[0].protocol"},
    {"{\"routes\": [{\"upstream\": \"127.0.0.1:1\"}]}", "routes[0].match: is required",
     "routes[0].match"},
    {"{\"routes\": [" R("a.example.com", UP("127.0.0.1:1") ",\"upstreams\":[\"127.0.0.1:2\"]") "]}",
     "routes[0]: has both upstream and upstreams", "routes[0]"},
    {"{\"routes\": [" R("a.example.com", UP("127.0.0.1:1") ",\"upstreams\":[]") "]}",
     "routes[0]: has both upstream and upstreams", "routes[0]"},
    {"{\"routes\": [" R("*", UP("127.0.0.1:1")) "," R("a.example.com", "\"x\":null") "]}",
     "routes[1].x: unknown key", "routes[1].x"},
    {"{\"routes\": [{\"match\": \"a.example.com\"}]}", "routes[0]: needs upstream or upstreams",
     "routes[0]"},
    {"{\"routes\": [" R("a.example.com", "\"upstreams\":[]") "]}",
     "routes[0].upstreams: must not be empty", "routes[0].upstreams"},
    {"{\"routes\": [" R("*", UP("127.0.0.1:1")) "," R("b", "\"upstreams\":[\"10.0.0.1:80\", "
                                                           "\"10.0.0.x:80\"]") "]}",
     "routes[1].upstreams[1]: \"10.0.0.x:80\" is not an address " ADDR_FORMS,
     "routes[1].upstreams[1]"},
    {"{\"routes\": [" R("*", UP("back_end:80")) "]}",
     "routes[0].upstream: \"back_end:80\" is not an address " ADDR_FORMS, "routes[0].upstream"},
    {"{\"routes\": [" R("*", UP("127.0.0.1:0")) "]}",
     "routes[0].upstream: \"127.0.0.1:0\" is not an address " ADDR_FORMS, "routes[0].upstream"},
    {"{\"routes\": [" R("a*b", UP("127.0.0.1:1")) "]}",
     "routes[0].match: \"a*b\" is not a host, \"*.suffix\" or \"*\"", "routes[0].match"},
    {"{\"routes\": [" R("", UP("127.0.0.1:1")) "]}", "routes[0].match: must not be empty",
     "routes[0].match"},
    {"{\"routes\": [" R("API.example.com", UP("127.0.0.1:1")) "," R("*", UP("127.0.0.1:1")) "," R(
         "api.example.com.", UP("127.0.0.1:2")) "]}",
     "routes[2].match: \"api.example.com\" is already used by routes[0]", "routes[2].match"},
    /* a control character from the body does not break the line */
    {"{\"routes\": [" R("a\\nb", UP("127.0.0.1:1")) "]}",
     "routes[0].match: \"a?b\" is not a host, \"*.suffix\" or \"*\"", "routes[0].match"},
    {"{\"routes\": [" R("*", UP("127.0.0.1:1") ",\"a\\u0001\":1") "]}", "routes[0].a?: unknown key",
     "routes[0].a?"},
};

static void test_with_routes_rejects(void **state)
{
    (void)state;
    qx_config_t *base = load(base_yaml, NULL);
    char *before = dump(qx_config_to_json(base));

    for (size_t i = 0; i < QX_ARRAY_LEN(rejects); i++) {
        const reject_case_t *c = &rejects[i];
        char err[512] = "stale", field[128] = "stale";
        qx_config_t *out = (qx_config_t *)&err; /* must be reset to NULL */
        int rv = qx_config_with_routes_json(base, c->body, strlen(c->body), &out, err, sizeof(err),
                                            field, sizeof(field));
        if (rv != QX_ERR_CONFIG)
            fail_msg("case %zu: rv=%d (want QX_ERR_CONFIG) err=[%s]\n%s", i, rv, err, c->body);
        if (out != NULL)
            fail_msg("case %zu: *out not NULL on failure", i);
        if (strcmp(err, c->err) != 0)
            fail_msg("case %zu: %s\n  err=[%s]\n want=[%s]", i, c->body, err, c->err);
        if (strcmp(field, c->field) != 0)
            fail_msg("case %zu: %s\n  field=[%s]\n   want=[%s]", i, c->body, field, c->field);
    }
    /* the base never changes */
    assert_json(qx_config_to_json(base), before);
    free(before);
    qx_config_del(base);
}

/* ------------------------------------------------------------------------ */
/* One set of rules                                                         */
/* ------------------------------------------------------------------------ */

/* The same route written both ways gets the same verdict and message. */
static void test_same_rules_as_yaml(void **state)
{
    static const struct {
        const char *yaml; /* the routes section */
        const char *json; /* the route list */
    } cases[] = {
        {"  - match: \"a*b\"\n    upstream: \"127.0.0.1:1\"\n",
         "[" R("a*b", UP("127.0.0.1:1")) "]"},
        {"  - match: \"*.\"\n    upstream: \"127.0.0.1:1\"\n", "[" R("*.", UP("127.0.0.1:1")) "]"},
        {"  - match: \"[::1]\"\n    upstream: \"127.0.0.1:1\"\n",
         "[" R("[::1]", UP("127.0.0.1:1")) "]"},
        {"  - match: a\n    upstream: \"127.0.0.1:1\"\n  - match: A.\n    upstream: "
         "\"127.0.0.1:2\"\n",
         "[" R("a", UP("127.0.0.1:1")) "," R("A.", UP("127.0.0.1:2")) "]"},
        {"  - match: a\n    upstream: \"127.0.0.1:1\"\n    upstreams: [\"127.0.0.1:2\"]\n",
         "[" R("a", UP("127.0.0.1:1") ",\"upstreams\":[\"127.0.0.1:2\"]") "]"},
        {"  - match: a\n", "[{\"match\":\"a\"}]"},
        {"  - upstream: \"127.0.0.1:1\"\n", "[{" UP("127.0.0.1:1") "}]"},
        {"  - match: a\n    upstreams: [\"127.0.0.1:1\", \"[::1]:0\"]\n",
         "[" R("a", "\"upstreams\":[\"127.0.0.1:1\",\"[::1]:0\"]") "]"},
        {"  - match: a\n    upstream: \"localhost\"\n", "[" R("a", UP("localhost")) "]"},
    };
    char yaml[1024], body[1024], yerr[512], jerr[512], field[128];
    (void)state;
    qx_config_t *base = load(base_yaml, NULL);

    for (size_t i = 0; i < QX_ARRAY_LEN(cases); i++) {
        qx_config_t *y = NULL, *j = NULL;
        snprintf(yaml, sizeof(yaml), SERVER "routes:\n%s", cases[i].yaml);
        snprintf(body, sizeof(body), "{\"routes\":%s}", cases[i].json);
        int yrv = qx_config_load_buf(yaml, strlen(yaml), NULL, &y, yerr, sizeof(yerr));
        int jrv = qx_config_with_routes_json(base, body, strlen(body), &j, jerr, sizeof(jerr),
                                             field, sizeof(field));
        if (yrv != QX_ERR_CONFIG || jrv != QX_ERR_CONFIG || strcmp(yerr, jerr) != 0)
            fail_msg("case %zu: yaml rv=%d [%s], json rv=%d [%s]", i, yrv, yerr, jrv, jerr);
        /* the field is the message's prefix */
        size_t flen = strlen(field);
        assert_true(flen > 0);
        assert_memory_equal(jerr, field, flen);
        assert_memory_equal(jerr + flen, ": ", 2);
    }
    qx_config_del(base);
}

/* The route API carries routes[].websocket both ways: false is kept and
 * written back, true (the default) written as nothing, anything but a
 * boolean refused. */
static void test_websocket_switch(void **state)
{
    static const char body[] = "{\"routes\": ["
                               "  {\"match\": \"a.test\", \"upstream\": \"127.0.0.1:7000\","
                               "   \"websocket\": false},"
                               "  {\"match\": \"*\", \"upstream\": \"127.0.0.1:7000\", "
                               "   \"websocket\": true}"
                               "]}";
    static const char bad[] = "{\"routes\": [{\"match\": \"*\", \"upstream\": "
                              "\"127.0.0.1:7000\", \"websocket\": \"no\"}]}";
    char err[256] = "x", field[64] = "x";
    qx_config_t *out = NULL;
    (void)state;

    qx_config_t *base = load(base_yaml, "/etc/qrux");
    assert_int_equal(qx_config_with_routes_json(base, body, strlen(body), &out, err, sizeof(err),
                                                field, sizeof(field)),
                     0);
    assert_int_equal(out->routes[0].no_websocket, 1);
    assert_int_equal(out->routes[1].no_websocket, 0);
    assert_json(qx_config_routes_to_json(out),
                "[{\"match\":\"a.test\",\"upstream\":\"127.0.0.1:7000\",\"websocket\":false},"
                "{\"match\":\"*\",\"upstream\":\"127.0.0.1:7000\"}]");
    qx_config_t *d = qx_config_dup(out);
    assert_int_equal(d->routes[0].no_websocket, 1);
    qx_config_del(d);
    qx_config_del(out);
    out = NULL;
    assert_int_not_equal(qx_config_with_routes_json(base, bad, strlen(bad), &out, err, sizeof(err),
                                                    field, sizeof(field)),
                         0);
    assert_null(out);
    assert_string_equal(field, "routes[0].websocket");
    qx_config_del(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes_to_json),
        cmocka_unit_test(test_routes_round_trip),
        cmocka_unit_test(test_config_to_json_defaults),
        cmocka_unit_test(test_config_to_json_big_limit),
        cmocka_unit_test(test_config_to_json_no_secrets),
        cmocka_unit_test(test_dup_deep),
        cmocka_unit_test(test_with_routes_ok),
        cmocka_unit_test(test_with_routes_buffers),
        cmocka_unit_test(test_with_routes_rejects),
        cmocka_unit_test(test_same_rules_as_yaml),
        cmocka_unit_test(test_websocket_switch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
