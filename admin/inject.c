/*
 * inject.c - the admission review of `qrux inject` (see inject.h): which
 * pods get the sidecar, and the JSONPatch that adds it.
 *
 * What a patched pod gets, and why (the chart, k8s/ and README.md
 * "Kubernetes" describe the same pod; change them together):
 *
 *  - the sidecar "qrux": a native sidecar (an init container with
 *    restartPolicy Always, Kubernetes >= 1.29) by default, so the kubelet
 *    starts it before the app and stops it after the app; or a regular
 *    container for older clusters. Ports h3 (UDP) and https (TCP) on the
 *    same number, and the admin port (probes, /metrics).
 *  - probes on the admin port: /startupz, /readyz, /livez.
 *  - non-root 65532, read-only root, no capabilities, RuntimeDefault
 *    seccomp, no privilege escalation.
 *  - the ConfigMap as a directory volume (never subPath: the kubelet only
 *    updates whole-volume mounts, through the ..data symlink swap that
 *    config/watch.c follows) and the TLS Secret (tls.crt, tls.key and the
 *    admin-token the admin server needs off loopback).
 *  - with XDP: the init container "qrux-xdp" running `qrux xdp attach` as
 *    root with CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_CHOWN only
 *    (security_context() says why each); it is ordered before the sidecar, so
 * the filter is in place before qrux binds. Both mount the pod's own directory of the node's bpffs
 * (hostPath /sys/fs/bpf, subPathExpr qrux-<pod uid>) on /sys/fs/bpf: the init container pins there
 * and hands the pins to 65532, and the sidecar (still 65532, CAP_BPF added only to pass the
 *    RuntimeDefault seccomp gate on bpf()) opens them, so its counters,
 *    CID key and deny list reach the filter.
 *  - a preStop hook that starts the drain (POST /drain) and holds the
 *    kubelet's SIGTERM until qrux has drained or the drain delay ran out.
 *  - kubectl.kubernetes.io/default-container naming the app, and the
 *    qrux.io/status annotation that marks the pod as done.
 *
 * Never twice: a pod that already has a container or init container named
 * "qrux", or the status annotation, gets no patch. The webhook is
 * registered with reinvocationPolicy IfNeeded, so a pod another webhook
 * changed after us comes back here, and this is what keeps it single.
 */
#include "admin/inject.h"

#include "base/qx.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const qx_review_result_names[QX_REVIEW_COUNT] = {"injected", "skipped", "denied",
                                                             "error"};

/* ------------------------------------------------------------------------
 * options */

static int set_str(char **dst, const char *v)
{
    char *s = strdup(v);
    if (s == NULL)
        return QX_ERR_NOMEM;
    free(*dst);
    *dst = s;
    return 0;
}

int qx_inject_opts_init(qx_inject_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->xdp = 0;
    o->native = 1;
    o->app_port = 8080;
    o->port = 8443;
    o->admin_port = 9901;
    o->drain_delay = 5;
    if (set_str(&o->image, "qrux:" QX_VERSION) != 0 ||
        set_str(&o->pull_policy, "IfNotPresent") != 0 ||
        set_str(&o->binary, "/usr/local/bin/qrux") != 0 ||
        set_str(&o->config_map, "qrux-config") != 0 || set_str(&o->tls_secret, "qrux-tls") != 0 ||
        set_str(&o->xdp_iface, "eth0") != 0)
        goto fail;
    o->resources = json_pack("{s:{s:s,s:s},s:{s:s}}", "requests", "cpu", "50m", "memory", "64Mi",
                             "limits", "memory", "256Mi");
    if (o->resources == NULL)
        goto fail;
    return 0;
fail:
    qx_inject_opts_free(o);
    return QX_ERR_NOMEM;
}

void qx_inject_opts_free(qx_inject_opts_t *o)
{
    if (o == NULL)
        return;
    free(o->image);
    free(o->pull_policy);
    free(o->binary);
    free(o->config_map);
    free(o->tls_secret);
    free(o->xdp_iface);
    json_decref(o->resources);
    memset(o, 0, sizeof(*o));
}

/* A DNS-1123 label (a ConfigMap or Secret name as a volume source; the
 * API server would refuse anything else, later and less clearly). */
static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 ((c == '-' || c == '.') && i > 0 && i + 1 < n);
        if (!ok)
            return 0;
    }
    return 1;
}

/* resources: {requests?: {cpu?, memory?}, limits?: {cpu?, memory?}} with
 * string quantities; nothing else. */
static int valid_resources(const json_t *r, char *err, size_t errlen, const char *what)
{
    const char *k1;
    json_t *v1;
    if (!json_is_object(r)) {
        snprintf(err, errlen, "%s: must be an object like {\"requests\":{\"cpu\":\"50m\"}}", what);
        return 0;
    }
    json_object_foreach((json_t *)r, k1, v1)
    {
        const char *k2;
        json_t *v2;
        if (strcmp(k1, "requests") != 0 && strcmp(k1, "limits") != 0) {
            snprintf(err, errlen, "%s: unknown key \"%s\" (requests, limits)", what, k1);
            return 0;
        }
        if (!json_is_object(v1)) {
            snprintf(err, errlen, "%s.%s: must be an object", what, k1);
            return 0;
        }
        json_object_foreach(v1, k2, v2)
        {
            if (strcmp(k2, "cpu") != 0 && strcmp(k2, "memory") != 0) {
                snprintf(err, errlen, "%s.%s: unknown key \"%s\" (cpu, memory)", what, k1, k2);
                return 0;
            }
            const char *q = json_string_value(v2);
            if (q == NULL || q[0] < '0' || q[0] > '9' || strlen(q) > 32) {
                snprintf(err, errlen,
                         "%s.%s.%s: must be a quantity string like \"100m\" or "
                         "\"128Mi\"",
                         what, k1, k2);
                return 0;
            }
        }
    }
    return 1;
}

int qx_inject_opts_load(qx_inject_opts_t *o, const char *path, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    const char *key;
    json_t *v;
    int rv = QX_ERR_CONFIG;

    if (root == NULL) {
        snprintf(err, errlen, "%s: %s (line %d)", path, jerr.text, jerr.line);
        return errno == ENOENT ? QX_ERR_IO : QX_ERR_CONFIG;
    }
    if (!json_is_object(root)) {
        snprintf(err, errlen, "%s: must be a JSON object", path);
        goto done;
    }
    json_object_foreach(root, key, v)
    {
        static const struct {
            const char *key;
            size_t off;
        } strs[] = {
            {"image", offsetof(qx_inject_opts_t, image)},
            {"imagePullPolicy", offsetof(qx_inject_opts_t, pull_policy)},
            {"binary", offsetof(qx_inject_opts_t, binary)},
            {"configMap", offsetof(qx_inject_opts_t, config_map)},
            {"tlsSecret", offsetof(qx_inject_opts_t, tls_secret)},
            {"xdpInterface", offsetof(qx_inject_opts_t, xdp_iface)},
        };
        static const struct {
            const char *key;
            size_t off;
            int min, max;
        } ints[] = {
            {"xdp", offsetof(qx_inject_opts_t, xdp), 0, 1},
            {"nativeSidecar", offsetof(qx_inject_opts_t, native), 0, 1},
            {"appPort", offsetof(qx_inject_opts_t, app_port), 1, 65535},
            {"port", offsetof(qx_inject_opts_t, port), 1, 65535},
            {"adminPort", offsetof(qx_inject_opts_t, admin_port), 1, 65535},
            {"drainDelaySecs", offsetof(qx_inject_opts_t, drain_delay), 0, 3600},
        };
        int found = 0;
        for (size_t i = 0; i < QX_ARRAY_LEN(strs) && !found; i++) {
            if (strcmp(key, strs[i].key) != 0)
                continue;
            found = 1;
            const char *s = json_string_value(v);
            if (s == NULL || s[0] == '\0') {
                snprintf(err, errlen, "%s: %s: must be a non-empty string", path, key);
                goto done;
            }
            if ((strcmp(key, "configMap") == 0 || strcmp(key, "tlsSecret") == 0) &&
                !valid_name(s)) {
                snprintf(err, errlen, "%s: %s: \"%s\" is not a valid object name", path, key, s);
                goto done;
            }
            if (set_str((char **)((char *)o + strs[i].off), s) != 0) {
                rv = QX_ERR_NOMEM;
                goto done;
            }
        }
        for (size_t i = 0; i < QX_ARRAY_LEN(ints) && !found; i++) {
            if (strcmp(key, ints[i].key) != 0)
                continue;
            found = 1;
            int *dst = (int *)((char *)o + ints[i].off);
            if (ints[i].max == 1) {
                if (!json_is_boolean(v)) {
                    snprintf(err, errlen, "%s: %s: must be true or false", path, key);
                    goto done;
                }
                *dst = json_is_true(v);
            } else {
                if (!json_is_integer(v) || json_integer_value(v) < ints[i].min ||
                    json_integer_value(v) > ints[i].max) {
                    snprintf(err, errlen, "%s: %s: must be a whole number from %d to %d", path, key,
                             ints[i].min, ints[i].max);
                    goto done;
                }
                *dst = (int)json_integer_value(v);
            }
        }
        if (!found && strcmp(key, "resources") == 0) {
            found = 1;
            char e[256];
            if (!valid_resources(v, e, sizeof(e), "resources")) {
                snprintf(err, errlen, "%s: %s", path, e);
                goto done;
            }
            json_decref(o->resources);
            o->resources = json_deep_copy(v);
        }
        if (!found) {
            snprintf(err, errlen, "%s: %s: unknown key", path, key);
            goto done;
        }
    }
    rv = 0;
done:
    json_decref(root);
    return rv;
}

/* ------------------------------------------------------------------------
 * the pod's view: what it asks for through its annotations */

typedef struct pod_plan {
    const char *config_map;
    const char *tls_secret;
    int xdp, native, app_port, drain_delay;
    const json_t *resources; /* borrowed */
    json_t *own_resources;   /* parsed from the annotation */
} pod_plan_t;

static const char *ann(const json_t *meta, const char *key)
{
    return json_string_value(json_object_get(json_object_get(meta, "annotations"), key));
}

static int parse_bool(const char *s, int *out)
{
    if (strcmp(s, "true") == 0)
        *out = 1;
    else if (strcmp(s, "false") == 0)
        *out = 0;
    else
        return -1;
    return 0;
}

static int parse_int(const char *s, int min, int max, int *out)
{
    char *end;
    if (s[0] < '0' || s[0] > '9')
        return -1;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = (int)v;
    return 0;
}

/* Applies the per-pod annotations over the injector's defaults. A value
 * that cannot be honoured is refused (the pod is denied with the message),
 * never silently replaced by the default. Returns 0 or -1 (err set). */
static int plan_pod(const qx_inject_opts_t *o, const json_t *meta, pod_plan_t *p, char *err,
                    size_t errlen)
{
    const char *v;
    memset(p, 0, sizeof(*p));
    p->config_map = o->config_map;
    p->tls_secret = o->tls_secret;
    p->xdp = o->xdp;
    p->native = o->native;
    p->app_port = o->app_port;
    p->drain_delay = o->drain_delay;
    p->resources = o->resources;

    if ((v = ann(meta, QX_ANN_CONFIG_MAP)) != NULL) {
        if (!valid_name(v))
            goto bad_name;
        p->config_map = v;
    }
    if ((v = ann(meta, QX_ANN_TLS_SECRET)) != NULL) {
        if (!valid_name(v))
            goto bad_name;
        p->tls_secret = v;
    }
    if ((v = ann(meta, QX_ANN_XDP)) != NULL && parse_bool(v, &p->xdp) != 0) {
        snprintf(err, errlen, "annotation %s: \"%s\" must be \"true\" or \"false\"", QX_ANN_XDP, v);
        return -1;
    }
    if ((v = ann(meta, QX_ANN_NATIVE)) != NULL && parse_bool(v, &p->native) != 0) {
        snprintf(err, errlen, "annotation %s: \"%s\" must be \"true\" or \"false\"", QX_ANN_NATIVE,
                 v);
        return -1;
    }
    if ((v = ann(meta, QX_ANN_APP_PORT)) != NULL && parse_int(v, 1, 65535, &p->app_port) != 0) {
        snprintf(err, errlen, "annotation %s: \"%s\" must be a port number (1-65535)",
                 QX_ANN_APP_PORT, v);
        return -1;
    }
    if (p->app_port == o->port || p->app_port == o->admin_port) {
        snprintf(err, errlen,
                 "annotation %s: port %d is qrux's own (HTTP/3 and HTTPS on %d, admin on %d)",
                 QX_ANN_APP_PORT, p->app_port, o->port, o->admin_port);
        return -1;
    }
    if ((v = ann(meta, QX_ANN_DRAIN_DELAY)) != NULL &&
        parse_int(v, 0, 3600, &p->drain_delay) != 0) {
        snprintf(err, errlen, "annotation %s: \"%s\" must be whole seconds (0-3600)",
                 QX_ANN_DRAIN_DELAY, v);
        return -1;
    }
    if ((v = ann(meta, QX_ANN_RESOURCES)) != NULL) {
        json_error_t jerr;
        char e[256];
        p->own_resources = json_loads(v, JSON_REJECT_DUPLICATES, &jerr);
        if (p->own_resources == NULL) {
            snprintf(err, errlen, "annotation %s: not JSON: %s", QX_ANN_RESOURCES, jerr.text);
            return -1;
        }
        if (!valid_resources(p->own_resources, e, sizeof(e), "annotation " QX_ANN_RESOURCES)) {
            snprintf(err, errlen, "%s", e);
            json_decref(p->own_resources);
            p->own_resources = NULL;
            return -1;
        }
        p->resources = p->own_resources;
    }
    return 0;
bad_name:
    snprintf(err, errlen, "annotation: \"%s\" is not a valid ConfigMap/Secret name", v);
    return -1;
}

/* ------------------------------------------------------------------------
 * the objects added */

/* Who runs as what. The sidecar: the image's user, no capability. With
 * XDP, the sidecar also gets CAP_BPF added: not for its own use (a
 * non-root process only gets an added capability as an ambient one, which
 * Kubernetes does not set, so its effective set stays empty), but because
 * a runtime's RuntimeDefault seccomp profile admits bpf() only to a
 * container whose capability set holds CAP_BPF (or CAP_SYS_ADMIN). Past
 * that gate, the kernel (6.5 and later) lets it open the pinned maps by
 * path like files, and --pin-owner made them its own.
 *
 * The XDP init container: root, because the same ambient rule would leave
 * a non-root user without the capabilities; CAP_BPF (bpf() for programs
 * and maps), CAP_PERFMON (without it the verifier refuses the program's
 * packet parsing: EACCES at load, e2e/test_inject.py runs it both ways),
 * CAP_NET_ADMIN (the link on the interface) and CAP_CHOWN (--pin-owner
 * hands the pins to 65532; run again, after the pod's sandbox was
 * recreated, attach takes the 65532-owned directory of mode 0700 and its
 * pins back before it reuses them, so no CAP_DAC_OVERRIDE). Nothing
 * else. */
enum sc_kind { SC_SIDECAR, SC_SIDECAR_XDP, SC_XDP_INIT };

static json_t *security_context(enum sc_kind kind)
{
    if (kind == SC_XDP_INIT)
        return json_pack("{s:b,s:i,s:b,s:b,s:{s:[s],s:[ssss]},s:{s:s}}", "runAsNonRoot", 0,
                         "runAsUser", 0, "readOnlyRootFilesystem", 1, "allowPrivilegeEscalation", 0,
                         "capabilities", "drop", "ALL", "add", "BPF", "PERFMON", "NET_ADMIN",
                         "CHOWN", "seccompProfile", "type", "RuntimeDefault");
    json_t *sc = json_pack(
        "{s:b,s:i,s:i,s:b,s:b,s:{s:[s]},s:{s:s}}", "runAsNonRoot", 1, "runAsUser", QX_INJECT_UID,
        "runAsGroup", QX_INJECT_UID, "readOnlyRootFilesystem", 1, "allowPrivilegeEscalation", 0,
        "capabilities", "drop", "ALL", "seccompProfile", "type", "RuntimeDefault");
    if (sc != NULL && kind == SC_SIDECAR_XDP)
        json_object_set_new(json_object_get(sc, "capabilities"), "add", json_pack("[s]", "BPF"));
    return sc;
}

/* With XDP, both containers: the pod's UID (downward API), which names the
 * pod's own directory on the node's bpffs, and that directory on
 * /sys/fs/bpf. */
static json_t *pod_uid_env(void)
{
    return json_pack("[{s:s,s:{s:{s:s}}}]", "name", QX_INJECT_POD_UID_ENV, "valueFrom", "fieldRef",
                     "fieldPath", "metadata.uid");
}

static json_t *bpffs_mount(void)
{
    return json_pack("{s:s,s:s,s:s}", "name", QX_INJECT_VOL_BPFFS, "mountPath", QX_INJECT_BPFFS_DIR,
                     "subPathExpr", QX_INJECT_BPFFS_SUBPATH);
}

static json_t *probe(const char *path, int period, int failures)
{
    return json_pack("{s:{s:s,s:s},s:i,s:i,s:i}", "httpGet", "path", path, "port", "qrux-admin",
                     "periodSeconds", period, "failureThreshold", failures, "timeoutSeconds", 1);
}

static json_t *sidecar(const qx_inject_opts_t *o, const pod_plan_t *p)
{
    char addr[32], wait[16];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", o->admin_port);
    snprintf(wait, sizeof(wait), "%d", p->drain_delay);
    json_t *c = json_pack(
        "{s:s,s:s,s:s,s:[ss],"
        "s:[{s:s,s:i,s:s},{s:s,s:i,s:s},{s:s,s:i,s:s}],"
        "s:o,s:o,s:o,s:O,s:o,"
        "s:[{s:s,s:s,s:b},{s:s,s:s,s:b}],"
        "s:{s:{s:{s:[sssssssss]}}}}",
        "name", QX_INJECT_SIDECAR, "image", o->image, "imagePullPolicy", o->pull_policy, "args",
        "--config", QX_INJECT_CONFIG_DIR "/qrux.yaml",
        /* ports */
        "ports", "name", "h3", "containerPort", o->port, "protocol", "UDP", "name", "https",
        "containerPort", o->port, "protocol", "TCP", "name", "qrux-admin", "containerPort",
        o->admin_port, "protocol", "TCP",
        /* probes: startup polls fast (the app waits for it when native),
         * readiness fails at once (a drain must leave the endpoints
         * quickly), liveness is patient */
        "startupProbe", probe("/startupz", 1, 60), "readinessProbe", probe("/readyz", 2, 1),
        "livenessProbe", probe("/livez", 10, 3), "resources", p->resources, "securityContext",
        security_context(p->xdp ? SC_SIDECAR_XDP : SC_SIDECAR),
        /* mounts: whole directories, never subPath */
        "volumeMounts", "name", QX_INJECT_VOL_CONFIG, "mountPath", QX_INJECT_CONFIG_DIR, "readOnly",
        1, "name", QX_INJECT_VOL_TLS, "mountPath", QX_INJECT_TLS_DIR, "readOnly", 1,
        /* shutdown */
        "lifecycle", "preStop", "exec", "command", o->binary, "inject", "--prestop", "--admin",
        addr, "--token-file", QX_INJECT_TLS_DIR "/admin-token", "--wait", wait);
    if (c != NULL && p->native)
        json_object_set_new(c, "restartPolicy", json_string("Always"));
    if (c != NULL && p->xdp) {
        /* the pod's pinned maps, read-write: counters for /metrics, the
         * CID key, the rate, the deny list of the admin API */
        json_object_set_new(c, "env", pod_uid_env());
        json_array_append_new(json_object_get(c, "volumeMounts"), bpffs_mount());
    }
    return c;
}

static json_t *xdp_init(const qx_inject_opts_t *o)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", o->port);
    return json_pack("{s:s,s:s,s:s,s:[ssssssssss],s:o,s:o,s:{s:{s:s},s:{s:s}},s:[o]}", "name",
                     QX_INJECT_XDP_INIT, "image", o->image, "imagePullPolicy", o->pull_policy,
                     "args", "xdp", "attach", "--iface", o->xdp_iface, "--quic-port", port, "--pin",
                     QX_INJECT_PIN_DIR, "--pin-owner", QX_INJECT_UID_STR ":" QX_INJECT_UID_STR,
                     "env", pod_uid_env(), "securityContext", security_context(SC_XDP_INIT),
                     "resources", "requests", "cpu", "10m", "limits", "memory", "64Mi",
                     "volumeMounts", bpffs_mount());
}

static json_t *volumes(const pod_plan_t *p)
{
    json_t *v = json_pack("[{s:s,s:{s:s}},{s:s,s:{s:s}}]", "name", QX_INJECT_VOL_CONFIG,
                          "configMap", "name", p->config_map, "name", QX_INJECT_VOL_TLS, "secret",
                          "secretName", p->tls_secret);
    if (v != NULL && p->xdp)
        json_array_append_new(v, json_pack("{s:s,s:{s:s,s:s}}", "name", QX_INJECT_VOL_BPFFS,
                                           "hostPath", "path", QX_INJECT_BPFFS_DIR, "type",
                                           "Directory"));
    return v;
}

/* ------------------------------------------------------------------------
 * the patch */

static int op_add(json_t *patch, const char *path, json_t *value)
{
    if (value == NULL)
        return -1;
    return json_array_append_new(
        patch, json_pack("{s:s,s:s,s:o}", "op", "add", "path", path, "value", value));
}

/* Whether a list of containers holds one named |name|. */
static int has_named(const json_t *list, const char *name)
{
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c)
    {
        const char *n = json_string_value(json_object_get(c, "name"));
        if (n && strcmp(n, name) == 0)
            return 1;
    }
    return 0;
}

/* The app container: the one that declares the app port, else the first. */
static const char *app_container(const json_t *containers, int app_port)
{
    size_t i, j;
    json_t *c, *port;
    json_array_foreach(containers, i, c)
    {
        json_array_foreach(json_object_get(c, "ports"), j, port)
        {
            if (json_integer_value(json_object_get(port, "containerPort")) == app_port)
                return json_string_value(json_object_get(c, "name"));
        }
    }
    return json_string_value(json_object_get(json_array_get(containers, 0), "name"));
}

/* Builds the JSONPatch for |pod|, or returns -1 with |err| set for a pod
 * that cannot be injected as asked (denied). */
static int build_patch(const qx_inject_opts_t *o, const json_t *pod, const pod_plan_t *p,
                       json_t *patch, char *err, size_t errlen)
{
    const json_t *meta = json_object_get(pod, "metadata");
    const json_t *spec = json_object_get(pod, "spec");
    const json_t *containers = json_object_get(spec, "containers");
    const json_t *inits = json_object_get(spec, "initContainers");
    const json_t *vols = json_object_get(spec, "volumes");
    size_t i;
    json_t *v;

    json_array_foreach(vols, i, v)
    {
        const char *n = json_string_value(json_object_get(v, "name"));
        if (n && (strcmp(n, QX_INJECT_VOL_CONFIG) == 0 || strcmp(n, QX_INJECT_VOL_TLS) == 0 ||
                  strcmp(n, QX_INJECT_VOL_BPFFS) == 0)) {
            snprintf(err, errlen, "the pod already has a volume named \"%s\" (reserved for qrux)",
                     n);
            return -1;
        }
    }
    if (has_named(containers, QX_INJECT_XDP_INIT) || has_named(inits, QX_INJECT_XDP_INIT)) {
        snprintf(err, errlen, "the pod already has a container named \"%s\" (reserved for qrux)",
                 QX_INJECT_XDP_INIT);
        return -1;
    }

    /* Init containers: [xdp] [sidecar if native] then the pod's own, so the
     * filter is attached before qrux binds and qrux is up before the app's
     * init containers run (they may call out through the network). */
    json_t *front = json_array();
    if (front == NULL)
        return -1;
    if (p->xdp)
        json_array_append_new(front, xdp_init(o));
    if (p->native)
        json_array_append_new(front, sidecar(o, p));
    if (json_array_size(front) > 0) {
        if (!json_is_array(inits) || json_array_size(inits) == 0) {
            op_add(patch, "/spec/initContainers", json_incref(front));
        } else {
            for (size_t k = json_array_size(front); k-- > 0;)
                op_add(patch, "/spec/initContainers/0", json_incref(json_array_get(front, k)));
        }
    }
    json_decref(front);
    if (!p->native)
        op_add(patch, "/spec/containers/-", sidecar(o, p));

    json_t *newvols = volumes(p);
    if (newvols == NULL)
        return -1;
    if (!json_is_array(vols)) {
        op_add(patch, "/spec/volumes", newvols);
    } else {
        json_array_foreach(newvols, i, v) op_add(patch, "/spec/volumes/-", json_incref(v));
        json_decref(newvols);
    }

    /* Annotations: the status (what was added, so an operator and a later
     * review can tell) and the default container for kubectl logs/exec. */
    /* Short (under 64 bytes): some runtimes (podman kube play) hold
     * annotation values to the label limit. */
    json_t *status = json_pack("{s:s,s:s,s:b}", "version", QX_VERSION, "sidecar",
                               p->native ? "native" : "container", "xdp", p->xdp);
    char *status_s = status ? json_dumps(status, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(status);
    if (status_s == NULL)
        return -1;
    const char *app = app_container(containers, p->app_port);
    const json_t *anns = json_object_get(meta, "annotations");
    if (!json_is_object(anns)) {
        json_t *a = json_pack("{s:s}", QX_ANN_STATUS, status_s);
        if (a && app)
            json_object_set_new(a, QX_ANN_DEFAULT_CONTAINER, json_string(app));
        op_add(patch, "/metadata/annotations", a);
    } else {
        /* JSON Pointer: "/" in a key is written "~1". */
        op_add(patch, "/metadata/annotations/qrux.io~1status", json_string(status_s));
        if (app && json_object_get(anns, QX_ANN_DEFAULT_CONTAINER) == NULL)
            op_add(patch, "/metadata/annotations/kubectl.kubernetes.io~1default-container",
                   json_string(app));
    }
    free(status_s);
    return 0;
}

/* ------------------------------------------------------------------------
 * the review */

static int reply(json_t *response, char **out, size_t *outlen)
{
    json_t *review = json_pack("{s:s,s:s,s:o}", "apiVersion", "admission.k8s.io/v1", "kind",
                               "AdmissionReview", "response", response);
    if (review == NULL)
        return -1;
    *out = json_dumps(review, JSON_COMPACT);
    json_decref(review);
    if (*out == NULL)
        return -1;
    *outlen = strlen(*out);
    return 0;
}

static int reply_error(const char *uid, unsigned code, const char *msg, char **out, size_t *outlen)
{
    return reply(json_pack("{s:s,s:b,s:{s:i,s:s}}", "uid", uid, "allowed", 0, "status", "code",
                           code, "message", msg),
                 out, outlen);
}

int qx_inject_review(const qx_inject_opts_t *o, const char *body, size_t len, int ns_scope,
                     char **out, size_t *outlen, unsigned *http_status, const char **why)
{
    json_error_t jerr;
    char err[512];
    int result = QX_REVIEW_SKIPPED;
    json_t *patch = NULL;
    pod_plan_t plan = {0};

    err[0] = '\0';

    *out = NULL;
    *http_status = 200;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        snprintf(err, sizeof(err), "request body is not JSON: %s (line %d, column %d)", jerr.text,
                 jerr.line, jerr.column);
        goto bad;
    }
    const char *api = json_string_value(json_object_get(root, "apiVersion"));
    const char *kind = json_string_value(json_object_get(root, "kind"));
    json_t *req = json_object_get(root, "request");
    const char *uid = json_string_value(json_object_get(req, "uid"));
    if (!json_is_object(root) || kind == NULL || strcmp(kind, "AdmissionReview") != 0) {
        snprintf(err, sizeof(err), "not an AdmissionReview (kind must be \"AdmissionReview\")");
        goto bad;
    }
    if (api == NULL || strcmp(api, "admission.k8s.io/v1") != 0) {
        snprintf(err, sizeof(err),
                 "apiVersion \"%s\" not supported: register the webhook with "
                 "admissionReviewVersions [\"v1\"]",
                 api ? api : "");
        goto bad;
    }
    if (!json_is_object(req) || uid == NULL || uid[0] == '\0') {
        snprintf(err, sizeof(err), "request.uid missing: nothing to answer");
        goto bad;
    }

    /* What this webhook does not change: allowed, no patch. */
    const char *op = json_string_value(json_object_get(req, "operation"));
    const char *rkind = json_string_value(json_object_get(json_object_get(req, "kind"), "kind"));
    const char *sub = json_string_value(json_object_get(req, "subResource"));
    json_t *pod = json_object_get(req, "object");
    *why = NULL;
    if (rkind == NULL || strcmp(rkind, "Pod") != 0 || (sub && sub[0]))
        *why = "not a Pod";
    else if (op == NULL || strcmp(op, "CREATE") != 0)
        *why = "not a CREATE"; /* DELETE has no object; an UPDATE cannot add containers */
    if (*why == NULL && !json_is_object(pod)) {
        snprintf(err, sizeof(err), "request.object: a CREATE of a Pod without the Pod");
        *why = "no object";
        result = reply_error(uid, 400, err, out, outlen) != 0 ? -1 : QX_REVIEW_ERROR;
        goto done;
    }
    if (*why == NULL) {
        const json_t *meta = json_object_get(pod, "metadata");
        const json_t *spec = json_object_get(pod, "spec");
        const char *label =
            json_string_value(json_object_get(json_object_get(meta, "labels"), QX_INJECT_LABEL));
        if (label && strcmp(label, "false") == 0)
            *why = "opted out";
        else if (!ns_scope && (label == NULL || strcmp(label, "true") != 0))
            *why = "not opted in";
        else if (has_named(json_object_get(spec, "containers"), QX_INJECT_SIDECAR) ||
                 has_named(json_object_get(spec, "initContainers"), QX_INJECT_SIDECAR) ||
                 ann(meta, QX_ANN_STATUS) != NULL)
            *why = "already injected";
        else if (!json_is_array(json_object_get(spec, "containers")) ||
                 json_array_size(json_object_get(spec, "containers")) == 0)
            *why = "no containers"; /* the API server refuses it anyway */
    }
    if (*why != NULL) {
        if (reply(json_pack("{s:s,s:b}", "uid", uid, "allowed", 1), out, outlen) != 0)
            result = -1;
        goto done;
    }

    if (plan_pod(o, json_object_get(pod, "metadata"), &plan, err, sizeof(err)) != 0 ||
        (patch = json_array()) == NULL ||
        build_patch(o, pod, &plan, patch, err, sizeof(err)) != 0) {
        if (patch == NULL && *err == '\0')
            snprintf(err, sizeof(err), "out of memory");
        *why = "denied";
        result = QX_REVIEW_DENIED;
        if (reply(json_pack("{s:s,s:b,s:{s:i,s:s}}", "uid", uid, "allowed", 0, "status", "code",
                            400, "message", err),
                  out, outlen) != 0)
            result = -1;
        goto done;
    }
    char *ps = json_dumps(patch, JSON_COMPACT);
    char *b64 = NULL;
    if (ps != NULL) {
        size_t n = strlen(ps);
        b64 = malloc(4 * ((n + 2) / 3) + 1);
        if (b64 != NULL)
            qx_inject_base64(ps, n, b64);
    }
    free(ps);
    if (b64 == NULL) {
        result = -1;
        goto done;
    }
    result = QX_REVIEW_INJECTED;
    *why = json_is_true(json_object_get(req, "dryRun")) ? "injected (dry run)" : "injected";
    if (reply(json_pack("{s:s,s:b,s:s,s:s}", "uid", uid, "allowed", 1, "patchType", "JSONPatch",
                        "patch", b64),
              out, outlen) != 0)
        result = -1;
    free(b64);
done:
    json_decref(plan.own_resources);
    json_decref(patch);
    json_decref(root);
    return result;

bad:
    json_decref(root);
    *http_status = 400;
    *why = "malformed";
    if (reply_error("", 400, err, out, outlen) != 0)
        return -1;
    return QX_REVIEW_ERROR;
}

void qx_inject_base64(const char *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *s = (const unsigned char *)in;
    size_t i = 0, j = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8 | s[i + 2];
        out[j++] = tab[v >> 18];
        out[j++] = tab[(v >> 12) & 63];
        out[j++] = tab[(v >> 6) & 63];
        out[j++] = tab[v & 63];
    }
    if (i < n) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0);
        out[j++] = tab[v >> 18];
        out[j++] = tab[(v >> 12) & 63];
        out[j++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[j++] = '=';
    }
    out[j] = '\0';
}
