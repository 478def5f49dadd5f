/*
 * config.h - the qrux YAML configuration: schema (libcyaml), defaults and
 * validation. A qx_config_t is immutable once loaded; the snapshot module
 * shares it between workers.
 *
 * Relative cert/key paths are resolved against the directory of the config
 * file (a ConfigMap and its Secret are usually mounted side by side).
 */
#ifndef QX_CONFIG_H
#define QX_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Upstreams in all routes together. Every one gets its own metrics row
 * (QX_METRICS_UP_ROWS in metrics.h is twice this, for reloads: change
 * them together). */
#define QX_CONFIG_MAX_UPSTREAMS 1024

typedef struct qx_limits {
    uint32_t upstream_connect_timeout_secs;     /* default 10 */
    uint32_t upstream_request_timeout_secs;     /* default 120, >= connect timeout */
    uint64_t max_request_body_bytes;            /* default 10485760 */
    uint64_t max_upstream_response_body_bytes;  /* default 52428800 */
    uint32_t max_idle_connections_per_upstream; /* default 16 */
    uint32_t graceful_shutdown_secs;            /* default 30 */
    uint32_t header_read_timeout_secs; /* default 10: HTTP/1.1 head must arrive (slowloris) */
    uint32_t
        body_idle_timeout_secs;    /* default 30: no request body byte for this long (slow POST) */
    uint32_t max_quic_connections; /* default 10000 per process; more get CONNECTION_REFUSED */
    uint32_t max_quic_connections_per_ip;  /* default 200 from one client address */
    uint32_t quic_handshake_timeout_secs;  /* default 10 */
    uint32_t quic_idle_timeout_secs;       /* default 30 */
    uint32_t max_streams_per_connection;   /* default 100 concurrent requests */
    uint32_t retry_handshakes_threshold;   /* default 100: retry=auto sends Retry past this many
                                              handshakes in progress on a worker */
    uint32_t client_idle_timeout_secs;     /* default 30: a response the client takes nothing of */
    uint32_t upstream_idle_timeout_secs;   /* default 60: a response body the upstream stalls */
    uint32_t max_tcp_connections;          /* default 10000 HTTPS connections per process */
    uint32_t max_tcp_connections_per_ip;   /* default 500 from one client address, per worker */
    uint32_t max_connections_per_upstream; /* default 1024 per worker; requests queue past it */
    uint32_t websocket_idle_timeout_secs;  /* default 300: a tunnel with no byte either way */
    uint32_t max_websocket_tunnels;        /* default 1024 open tunnels per worker; more get 503 */
    uint32_t max_websocket_tunnels_per_connection; /* default 100 on one HTTP/2 or HTTP/3
                                                      connection; more get 503 */
    uint32_t upstream_keepalive_timeout_secs; /* default 60: an idle upstream connection (an h2c
                                                 one with no stream) is closed after this */
} qx_limits_t;

typedef struct qx_upstream_cfg {
    char *name; /* as written in the config, e.g. "127.0.0.1:8080"; the metrics label */
    char *host; /* a DNS name to resolve ("api.shop.svc.cluster.local"), or NULL for an
                   address literal (then addr holds it) */
    uint16_t port;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int protocol; /* QX_UP_PROTO_*: its route's `protocol` */
} qx_upstream_cfg_t;

/* What an upstream speaks (a route's `protocol`): HTTP/1.1, the default,
 * or cleartext HTTP/2 with prior knowledge (gRPC apps). */
enum { QX_UP_PROTO_H1 = 0, QX_UP_PROTO_H2C = 1 };

typedef struct qx_route_cfg {
    char *match; /* lowercased: "host", "*.suffix" or "*" */
    qx_upstream_cfg_t *upstreams;
    size_t nupstreams; /* >= 1 */
    int single;        /* 1 when written as `upstream:`, 0 for `upstreams:` */
    int no_websocket;  /* `websocket: false`: upgrades and extended CONNECT get 403 */
    int protocol;      /* QX_UP_PROTO_*, default h1; every upstream of the route speaks it */
} qx_route_cfg_t;

/* The admin server (health, metrics, routes API). Absent `admin:`
 * section: no admin server. */
typedef struct qx_admin_cfg {
    char *listen; /* as written; NULL when there is no admin section */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char *token_file;            /* resolved path, or NULL; required when listen is not loopback */
    int ready_requires_upstream; /* /readyz also waits for the upstreams to accept TCP */
} qx_admin_cfg_t;

/* The XDP filter's maps (`qrux xdp attach`). Absent `xdp:` section: pin
 * is NULL and qrux neither looks for the program nor limits Initials per
 * source. */
typedef struct qx_xdp_cfg {
    char *pin;                    /* the bpffs directory; default /sys/fs/bpf/qrux */
    uint32_t initial_rate;        /* default 50 Initial packets/s per source; 0: no limit */
    uint32_t initial_burst;       /* default 100 */
    uint32_t cid_key_rotate_secs; /* default 0: one CID key for the life of the process */
} qx_xdp_cfg_t;

/* 0-RTT policy: off, or safe methods only (replayable requests are the
 * risk), or everything. */
typedef enum { QX_EARLY_OFF = 0, QX_EARLY_SAFE, QX_EARLY_ALL } qx_early_data_t;
/* Address validation with Retry (against spoofed-source floods). */
typedef enum { QX_RETRY_AUTO = 0, QX_RETRY_ALWAYS, QX_RETRY_NEVER } qx_retry_t;

/* Resolution of upstream names (`dns:`). Empty lists and ndots -1 keep
 * what /etc/resolv.conf says, as a pod sees it. */
typedef struct qx_dns_cfg {
    char *servers;         /* "ip:port,[ip6]:port" as c-ares takes them, or NULL */
    char **search;         /* search domains, or NULL */
    size_t nsearch;        /* 0: resolv.conf's */
    int ndots;             /* -1: resolv.conf's */
    uint32_t min_ttl_secs; /* default 5: a record's TTL is raised to this */
    uint32_t max_ttl_secs; /* default 300: ... and lowered to this */
} qx_dns_cfg_t;

typedef struct qx_config {
    char *path;   /* the file it was loaded from (NULL for a buffer) */
    char *listen; /* as written */
    struct sockaddr_storage listen_addr;
    socklen_t listen_addrlen;
    char *https_listen; /* the HTTPS (TCP) fallback; NULL when not configured */
    struct sockaddr_storage https_addr;
    socklen_t https_addrlen;
    uint32_t alt_svc_max_age;   /* default 86400 */
    uint32_t drain_delay_secs;  /* default 5: keep serving after SIGTERM while endpoints update */
    qx_early_data_t early_data; /* default safe */
    qx_retry_t retry;           /* default auto */
    char *ticket_key_file;      /* resolved path, or NULL: shared session-ticket master key */
    char *cert;                 /* resolved path */
    char *key;                  /* resolved path */
    uint32_t workers;           /* as configured; 0 = one per available CPU */
    qx_limits_t limits;
    qx_route_cfg_t *routes;
    size_t nroutes; /* >= 1 */
    qx_admin_cfg_t admin;
    qx_dns_cfg_t dns;
    qx_xdp_cfg_t xdp;
    int log_json; /* log.format: json (QRUX_LOG_FORMAT overrides it) */
} qx_config_t;

/*
 * Loads and validates the YAML file at |path|. On success returns 0 and
 * stores a new config in *out (free with qx_config_del). On failure returns
 * QX_ERR_CONFIG (or QX_ERR_IO when the file cannot be read) and writes a
 * one-line message naming the field and the reason into err[errlen], e.g.
 * "server.limits.upstream_connect_timeout_secs: must be > 0".
 */
int qx_config_load_file(const char *path, qx_config_t **out, char *err, size_t errlen);

/* Same as qx_config_load_file for an in-memory document; relative paths
 * are resolved against |basedir| (may be NULL: left as written). */
int qx_config_load_buf(const char *yaml, size_t len, const char *basedir, qx_config_t **out,
                       char *err, size_t errlen);

/* Releases a config; accepts NULL and a half-built config. */
void qx_config_del(qx_config_t *cfg);

/*
 * Parses "host:port" where host is an IPv4 literal, a bracketed IPv6
 * literal ("[::1]:8080", "[::]:8443") or "localhost" (-> 127.0.0.1).
 * Port 1..65535. Returns 0 or QX_ERR_INVAL.
 */
int qx_addr_parse(const char *s, struct sockaddr_storage *ss, socklen_t *len);

/*
 * Parses an upstream: an address qx_addr_parse takes, or "name:port" with
 * a DNS name (letters, digits and '-' in dot-separated labels of 1..63,
 * at most 253 in all, one trailing dot allowed, the last label not all
 * digits). For a name, u->host is set (allocated) and u->addr left empty.
 * Returns 0, QX_ERR_INVAL or QX_ERR_NOMEM; u->name is not touched.
 */
int qx_upstream_parse(const char *s, qx_upstream_cfg_t *u);

/* Number of workers to start: cfg->workers, or when 0 the CPUs available to
 * this process (sched_getaffinity, capped by the cgroup v2 cpu.max / v1
 * cfs quota when set), at least 1. */
unsigned qx_config_effective_workers(const qx_config_t *cfg);

#endif
