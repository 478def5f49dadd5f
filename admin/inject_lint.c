/*
 * inject_lint.c - `qrux inject --lint FILE...`: reads Kubernetes manifests
 * (YAML, several documents per file, List objects unwrapped) and warns
 * about what breaks HTTP/3 in practice:
 *
 *  - a Service with TCP and UDP on the same port number: `kubectl apply`
 *    (client-side) merges the ports list by port number, so one of the two
 *    is silently dropped on update (kubernetes#39188). Apply it server-side
 *    (`kubectl apply --server-side`, Helm 4) and mark the Service with the
 *    annotation qrux.io/apply: server-side to say so;
 *  - a ConfigMap volume mounted with subPath: the kubelet never updates
 *    such a file, so qrux never sees a config change;
 *  - a qrux container, or a Service that exposes qrux's https port,
 *    without a UDP port: HTTP/3 never arrives;
 *  - a probe of another container on the app port: it checks the app
 *    directly and bypasses qrux, so a pod whose qrux is not serving still
 *    looks ready.
 *
 * YAML is turned into jansson values (scalars stay strings except plain
 * integers), so the checks read like the review code.
 */
#include "admin/inject.h"

#include "base/qx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define LINT_MAX_DEPTH 64

/* ------------------------------------------------------------------------
 * YAML -> jansson */

static json_t *scalar(const yaml_event_t *ev)
{
    const char *s = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    if (ev->data.scalar.plain_implicit && n > 0 && n < 10) {
        size_t i = s[0] == '-' ? 1 : 0;
        int digits = i < n;
        for (; i < n; i++)
            digits &= s[i] >= '0' && s[i] <= '9';
        if (digits)
            return json_integer(strtoll(s, NULL, 10));
        if (strcmp(s, "true") == 0 || strcmp(s, "false") == 0)
            return json_boolean(s[0] == 't');
    }
    if (ev->data.scalar.plain_implicit && (n == 0 || strcmp(s, "null") == 0 || strcmp(s, "~") == 0))
        return json_null();
    return json_stringn(s, n);
}

/* Reads the node whose first event is |ev| (already taken). Returns a new
 * value, or NULL on a parse error (|err| set). */
static json_t *node(yaml_parser_t *p, yaml_event_t *ev, int depth, char *err, size_t errlen)
{
    if (depth > LINT_MAX_DEPTH) {
        snprintf(err, errlen, "nested too deeply");
        return NULL;
    }
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        return scalar(ev);
    case YAML_ALIAS_EVENT:
        snprintf(err, errlen, "line %zu: YAML aliases are not supported", ev->start_mark.line + 1);
        return NULL;
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        int map = ev->type == YAML_MAPPING_START_EVENT;
        json_t *v = map ? json_object() : json_array();
        for (;;) {
            yaml_event_t e, e2;
            if (!yaml_parser_parse(p, &e)) {
                snprintf(err, errlen, "line %zu: %s", p->problem_mark.line + 1,
                         p->problem ? p->problem : "YAML error");
                json_decref(v);
                return NULL;
            }
            if (e.type == YAML_SEQUENCE_END_EVENT || e.type == YAML_MAPPING_END_EVENT) {
                yaml_event_delete(&e);
                return v;
            }
            if (!map) {
                json_t *item = node(p, &e, depth + 1, err, errlen);
                yaml_event_delete(&e);
                if (item == NULL) {
                    json_decref(v);
                    return NULL;
                }
                json_array_append_new(v, item);
                continue;
            }
            if (e.type != YAML_SCALAR_EVENT) {
                snprintf(err, errlen, "line %zu: mapping keys must be plain strings",
                         e.start_mark.line + 1);
                yaml_event_delete(&e);
                json_decref(v);
                return NULL;
            }
            char *k = strndup((const char *)e.data.scalar.value, e.data.scalar.length);
            yaml_event_delete(&e);
            if (!yaml_parser_parse(p, &e2)) {
                snprintf(err, errlen, "line %zu: %s", p->problem_mark.line + 1,
                         p->problem ? p->problem : "YAML error");
                free(k);
                json_decref(v);
                return NULL;
            }
            json_t *item = node(p, &e2, depth + 1, err, errlen);
            yaml_event_delete(&e2);
            if (item == NULL || k == NULL) {
                free(k);
                json_decref(item);
                json_decref(v);
                return NULL;
            }
            json_object_set_new(v, k, item);
            free(k);
        }
    }
    default:
        snprintf(err, errlen, "unexpected YAML event");
        return NULL;
    }
}

/* Appends every document of |f| to |docs|. Returns 0 or -1 (err set). */
static int read_docs(FILE *f, json_t *docs, char *err, size_t errlen)
{
    yaml_parser_t p;
    yaml_event_t ev;
    int rv = -1;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_file(&p, f);
    for (;;) {
        if (!yaml_parser_parse(&p, &ev)) {
            snprintf(err, errlen, "line %zu: %s", p.problem_mark.line + 1,
                     p.problem ? p.problem : "YAML error");
            break;
        }
        yaml_event_type_t t = ev.type;
        if (t == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&ev);
            rv = 0;
            break;
        }
        if (t == YAML_SCALAR_EVENT || t == YAML_SEQUENCE_START_EVENT ||
            t == YAML_MAPPING_START_EVENT) {
            json_t *d = node(&p, &ev, 0, err, errlen);
            yaml_event_delete(&ev);
            if (d == NULL)
                break;
            json_array_append_new(docs, d);
            continue;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    return rv;
}

/* ------------------------------------------------------------------------
 * checks */

typedef struct lint {
    FILE *out;
    int warnings;
} lint_t;

static void warn(lint_t *l, const char *file, const json_t *obj, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void warn(lint_t *l, const char *file, const json_t *obj, const char *fmt, ...)
{
    va_list ap;
    const char *kind = json_string_value(json_object_get(obj, "kind"));
    const char *name = json_string_value(json_object_get(json_object_get(obj, "metadata"), "name"));
    fprintf(l->out, "%s: %s/%s: warning: ", file, kind ? kind : "?", name ? name : "?");
    va_start(ap, fmt);
    vfprintf(l->out, fmt, ap);
    va_end(ap);
    fputc('\n', l->out);
    l->warnings++;
}

static const char *str(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static const char *proto_of(const json_t *port)
{
    const char *p = str(port, "protocol");
    return p ? p : "TCP";
}

static void lint_service(lint_t *l, const char *file, const json_t *svc)
{
    const json_t *ports = json_object_get(json_object_get(svc, "spec"), "ports");
    const char *apply =
        str(json_object_get(json_object_get(svc, "metadata"), "annotations"), "qrux.io/apply");
    int server_side = apply && strcmp(apply, "server-side") == 0;
    int has_udp = 0, has_https = 0;
    size_t i, j;
    json_t *a, *b;
    json_array_foreach(ports, i, a)
    {
        const char *name = str(a, "name");
        const json_t *target = json_object_get(a, "targetPort");
        if (strcmp(proto_of(a), "UDP") == 0)
            has_udp = 1;
        else if ((name && strcmp(name, "https") == 0) ||
                 (json_is_string(target) && strcmp(json_string_value(target), "https") == 0))
            has_https = 1;
        json_array_foreach(ports, j, b)
        {
            if (j <= i || server_side)
                continue;
            if (json_integer_value(json_object_get(a, "port")) ==
                    json_integer_value(json_object_get(b, "port")) &&
                strcmp(proto_of(a), proto_of(b)) != 0)
                warn(l, file, svc,
                     "port %lld is declared for both TCP and UDP: a client-side `kubectl "
                     "apply` merges ports by number and silently drops one of them on update "
                     "(kubernetes#39188); apply it with `kubectl apply --server-side` (or Helm 4) "
                     "and annotate the Service qrux.io/apply: server-side",
                     (long long)json_integer_value(json_object_get(a, "port")));
        }
    }
    if (has_https && !has_udp)
        warn(l, file, svc,
             "exposes qrux's https port but no UDP port: HTTP/3 clients (told by Alt-Svc to use "
             "UDP) never reach qrux; add a UDP port with the same number, named h3");
}

/* The pod spec of a Pod or of a workload's template, or NULL. */
static const json_t *pod_spec(const json_t *obj, const json_t **meta)
{
    const char *kind = str(obj, "kind");
    const json_t *spec = json_object_get(obj, "spec");
    if (kind == NULL)
        return NULL;
    if (strcmp(kind, "Pod") == 0) {
        *meta = json_object_get(obj, "metadata");
        return spec;
    }
    if (strcmp(kind, "CronJob") == 0)
        spec = json_object_get(json_object_get(spec, "jobTemplate"), "spec");
    else if (strcmp(kind, "Deployment") != 0 && strcmp(kind, "StatefulSet") != 0 &&
             strcmp(kind, "DaemonSet") != 0 && strcmp(kind, "ReplicaSet") != 0 &&
             strcmp(kind, "Job") != 0)
        return NULL;
    const json_t *tmpl = json_object_get(spec, "template");
    *meta = json_object_get(tmpl, "metadata");
    return json_object_get(tmpl, "spec");
}

static int is_qrux(const json_t *c)
{
    const char *n = str(c, "name");
    return n && strcmp(n, QX_INJECT_SIDECAR) == 0;
}

static int port_matches(const json_t *c, const json_t *probe_port, long long app_port)
{
    if (json_is_integer(probe_port))
        return json_integer_value(probe_port) == app_port;
    const char *name = json_string_value(probe_port);
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(c, "ports"), i, p)
    {
        const char *pn = str(p, "name");
        if (name && pn && strcmp(name, pn) == 0 &&
            json_integer_value(json_object_get(p, "containerPort")) == app_port)
            return 1;
    }
    return 0;
}

static void lint_pod(lint_t *l, const char *file, const json_t *obj, const json_t *meta,
                     const json_t *spec)
{
    const json_t *vols = json_object_get(spec, "volumes");
    const char *label = str(json_object_get(meta, "labels"), QX_INJECT_LABEL);
    const char *port_ann = str(json_object_get(meta, "annotations"), QX_ANN_APP_PORT);
    long long app_port = port_ann ? strtoll(port_ann, NULL, 10) : 8080;
    int has_qrux = 0;
    const char *lists[] = {"initContainers", "containers"};
    size_t i, j, k;
    json_t *c, *m, *v;

    for (size_t li = 0; li < 2; li++)
        json_array_foreach(json_object_get(spec, lists[li]), i, c) has_qrux |= is_qrux(c);
    int opted = has_qrux || (label && strcmp(label, "true") == 0);

    for (size_t li = 0; li < 2; li++) {
        json_array_foreach(json_object_get(spec, lists[li]), i, c)
        {
            const char *cname = str(c, "name");
            json_array_foreach(json_object_get(c, "volumeMounts"), j, m)
            {
                if (str(m, "subPath") == NULL && str(m, "subPathExpr") == NULL)
                    continue;
                json_array_foreach(vols, k, v)
                {
                    const char *vn = str(v, "name");
                    if (vn && str(m, "name") && strcmp(vn, str(m, "name")) == 0 &&
                        json_object_get(v, "configMap") != NULL)
                        warn(l, file, obj,
                             "container %s mounts ConfigMap volume %s with subPath: the kubelet "
                             "never updates such a file, so config changes never arrive; mount "
                             "the volume as a directory",
                             cname ? cname : "?", vn);
                }
            }
            if (is_qrux(c)) {
                int udp = 0;
                json_array_foreach(json_object_get(c, "ports"), j, m) udp |=
                    strcmp(proto_of(m), "UDP") == 0;
                if (!udp)
                    warn(l, file, obj,
                         "the qrux container declares no UDP port: add containerPort %d "
                         "protocol UDP named h3 (HTTP/3 is UDP)",
                         8443);
                continue;
            }
            if (!opted)
                continue;
            static const char *probes[] = {"readinessProbe", "livenessProbe", "startupProbe"};
            for (size_t pi = 0; pi < QX_ARRAY_LEN(probes); pi++) {
                const json_t *pr = json_object_get(c, probes[pi]);
                const json_t *pp = json_object_get(json_object_get(pr, "httpGet"), "port");
                if (pp == NULL)
                    pp = json_object_get(json_object_get(pr, "tcpSocket"), "port");
                if (pp && port_matches(c, pp, app_port))
                    warn(l, file, obj,
                         "container %s: %s on the app port %lld bypasses qrux: the pod looks "
                         "ready while qrux may not serve; leave readiness to qrux's /readyz "
                         "(which can wait for the app: admin.ready_requires_upstream)",
                         cname ? cname : "?", probes[pi], app_port);
            }
        }
    }
}

static void lint_object(lint_t *l, const char *file, const json_t *obj)
{
    const char *kind = str(obj, "kind");
    const json_t *meta = NULL;
    if (kind && strcmp(kind, "List") == 0) {
        size_t i;
        json_t *item;
        json_array_foreach(json_object_get(obj, "items"), i, item) lint_object(l, file, item);
        return;
    }
    if (kind && strcmp(kind, "Service") == 0) {
        lint_service(l, file, obj);
        return;
    }
    const json_t *spec = pod_spec(obj, &meta);
    if (spec)
        lint_pod(l, file, obj, meta, spec);
}

int qx_inject_lint(const char *const *files, size_t n, FILE *out)
{
    lint_t l = {.out = out};
    for (size_t i = 0; i < n; i++) {
        char err[256] = "";
        FILE *f = strcmp(files[i], "-") == 0 ? stdin : fopen(files[i], "r");
        if (f == NULL) {
            fprintf(stderr, "%s: %s\n", files[i], strerror(errno));
            return -1;
        }
        json_t *docs = json_array();
        int rv = docs ? read_docs(f, docs, err, sizeof(err)) : -1;
        if (f != stdin)
            fclose(f);
        if (rv != 0) {
            fprintf(stderr, "%s: %s\n", files[i], err[0] ? err : "out of memory");
            json_decref(docs);
            return -1;
        }
        size_t k;
        json_t *d;
        json_array_foreach(docs, k, d) lint_object(&l, files[i], d);
        json_decref(docs);
    }
    return l.warnings;
}
