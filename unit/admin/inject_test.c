/*
 * inject_test.c - the review logic of `qrux inject` (admin/inject.c) without
 * HTTP: base64 against RFC 4648's vectors, the options file's refusals, the
 * patch for a minimal opted-in pod (native and regular, with and without an
 * existing annotations map), never twice, annotation refusals, and garbage
 * in (truncated JSON at every length) always giving an error review.
 */
#include "admin/inject.h"

#include "base/qx.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void test_base64(void **state)
{
    static const char *const vec[][2] = {
        {"", ""},
        {"f", "Zg=="},
        {"fo", "Zm8="},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"},
    };
    char out[32];
    (void)state;
    for (size_t i = 0; i < QX_ARRAY_LEN(vec); i++) {
        qx_inject_base64(vec[i][0], strlen(vec[i][0]), out);
        assert_string_equal(out, vec[i][1]);
    }
}

static int load_opts(const char *json, char *err, size_t errlen)
{
    char path[] = "/tmp/qx-inject-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, json, strlen(json)), (ssize_t)strlen(json));
    close(fd);
    qx_inject_opts_t o;
    assert_int_equal(qx_inject_opts_init(&o), 0);
    int rv = qx_inject_opts_load(&o, path, err, errlen);
    qx_inject_opts_free(&o);
    unlink(path);
    return rv;
}

static void test_opts_refusals(void **state)
{
    static const struct {
        const char *json, *needle;
    } bad[] = {
        {"{\"imag\": \"x\"}", "imag: unknown key"},
        {"{\"image\": \"\"}", "image: must be a non-empty string"},
        {"{\"xdp\": 1}", "xdp: must be true or false"},
        {"{\"port\": 0}", "port: must be a whole number from 1 to 65535"},
        {"{\"configMap\": \"Bad_Name\"}", "configMap: \"Bad_Name\" is not a valid object name"},
        {"{\"resources\": {\"requests\": {\"gpu\": \"1\"}}}", "unknown key \"gpu\""},
        {"[1]", "must be a JSON object"},
        {"{\"image\": ", "line"},
    };
    char err[512];
    (void)state;
    assert_int_equal(
        load_opts("{\"image\": \"x:1\", \"xdp\": true, \"port\": 443}", err, sizeof(err)), 0);
    for (size_t i = 0; i < QX_ARRAY_LEN(bad); i++) {
        err[0] = '\0';
        assert_int_not_equal(load_opts(bad[i].json, err, sizeof(err)), 0);
        if (strstr(err, bad[i].needle) == NULL)
            fail_msg("%s: got \"%s\", want \"%s\"", bad[i].json, err, bad[i].needle);
    }
}

#define POD_HEAD                                                                                   \
    "{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{"           \
    "\"uid\":\"u-1\",\"kind\":{\"group\":\"\",\"version\":\"v1\",\"kind\":\"Pod\"},"               \
    "\"operation\":\"CREATE\",\"object\":"

/* Reviews |body|; returns the result and the decoded reply. */
static int review(const qx_inject_opts_t *o, const char *body, int ns, json_t **reply,
                  unsigned *status)
{
    char *out = NULL;
    size_t outlen = 0;
    const char *why = NULL;
    int r = qx_inject_review(o, body, strlen(body), ns, &out, &outlen, status, &why);
    assert_non_null(out);
    assert_non_null(why);
    *reply = json_loadb(out, outlen, 0, NULL);
    assert_non_null(*reply);
    free(out);
    return r;
}

/* The decoded patch of a reply, or NULL. */
static json_t *patch_of(const json_t *reply)
{
    const char *b64 =
        json_string_value(json_object_get(json_object_get(reply, "response"), "patch"));
    if (b64 == NULL)
        return NULL;
    /* Decode by re-encoding candidates is overkill: use a tiny decoder. */
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(b64), j = 0;
    char *out = malloc(n);
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n && b64[i] != '='; i++) {
        const char *p = strchr(tab, b64[i]);
        assert_non_null(p);
        acc = acc << 6 | (unsigned)(p - tab);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[j++] = (char)(acc >> bits & 0xff);
        }
    }
    json_t *patch = json_loadb(out, j, 0, NULL);
    free(out);
    return patch;
}

static void test_patch(void **state)
{
    qx_inject_opts_t o;
    json_t *reply, *patch;
    unsigned status;
    (void)state;
    assert_int_equal(qx_inject_opts_init(&o), 0);

    const char *pod = POD_HEAD "{\"metadata\":{\"labels\":{\"qrux.io/inject\":\"true\"}},"
                               "\"spec\":{\"containers\":[{\"name\":\"app\"}]}}}}";
    assert_int_equal(review(&o, pod, 0, &reply, &status), QX_REVIEW_INJECTED);
    assert_int_equal(status, 200);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(reply, "response"), "uid")), "u-1");
    patch = patch_of(reply);
    assert_non_null(patch);
    /* initContainers, volumes, annotations: three adds of whole members. */
    assert_int_equal(json_array_size(patch), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(patch, 0), "path")),
                        "/spec/initContainers");
    json_t *q = json_array_get(json_object_get(json_array_get(patch, 0), "value"), 0);
    assert_string_equal(json_string_value(json_object_get(q, "restartPolicy")), "Always");
    assert_string_equal(json_string_value(json_object_get(json_array_get(patch, 2), "path")),
                        "/metadata/annotations");
    json_decref(patch);
    json_decref(reply);

    /* Regular mode and an existing annotations map: per-key adds, escaped. */
    o.native = 0;
    pod = POD_HEAD "{\"metadata\":{\"labels\":{\"qrux.io/inject\":\"true\"},"
                   "\"annotations\":{\"a\":\"b\"}},\"spec\":{\"containers\":[{\"name\":\"app\"}],"
                   "\"volumes\":[{\"name\":\"v\",\"emptyDir\":{}}]}}}}";
    assert_int_equal(review(&o, pod, 0, &reply, &status), QX_REVIEW_INJECTED);
    patch = patch_of(reply);
    const char *want[] = {"/spec/containers/-", "/spec/volumes/-", "/spec/volumes/-",
                          "/metadata/annotations/qrux.io~1status",
                          "/metadata/annotations/kubectl.kubernetes.io~1default-container"};
    assert_int_equal(json_array_size(patch), QX_ARRAY_LEN(want));
    for (size_t i = 0; i < QX_ARRAY_LEN(want); i++)
        assert_string_equal(json_string_value(json_object_get(json_array_get(patch, i), "path")),
                            want[i]);
    json_decref(patch);
    json_decref(reply);

    /* Never twice; not opted in; opted in by namespace; opted out. */
    pod = POD_HEAD "{\"metadata\":{\"labels\":{\"qrux.io/inject\":\"true\"}},"
                   "\"spec\":{\"containers\":[{\"name\":\"app\"}],"
                   "\"initContainers\":[{\"name\":\"qrux\"}]}}}}";
    assert_int_equal(review(&o, pod, 0, &reply, &status), QX_REVIEW_SKIPPED);
    assert_null(patch_of(reply));
    json_decref(reply);
    pod = POD_HEAD "{\"metadata\":{},\"spec\":{\"containers\":[{\"name\":\"app\"}]}}}}";
    assert_int_equal(review(&o, pod, 0, &reply, &status), QX_REVIEW_SKIPPED);
    json_decref(reply);
    assert_int_equal(review(&o, pod, 1, &reply, &status), QX_REVIEW_INJECTED);
    json_decref(reply);
    pod = POD_HEAD "{\"metadata\":{\"labels\":{\"qrux.io/inject\":\"false\"}},"
                   "\"spec\":{\"containers\":[{\"name\":\"app\"}]}}}}";
    assert_int_equal(review(&o, pod, 1, &reply, &status), QX_REVIEW_SKIPPED);
    json_decref(reply);

    /* An annotation that cannot be honoured: denied, named. */
    static const char *const bad[] = {
        "{\"qrux.io/app-port\":\"0\"}",     "{\"qrux.io/xdp\":\"yes\"}",
        "{\"qrux.io/resources\":\"{\"}",    "{\"qrux.io/drain-delay-secs\":\"-1\"}",
        "{\"qrux.io/config-map\":\"A B\"}", "{\"qrux.io/app-port\":\"8443\"}",
    };
    for (size_t i = 0; i < QX_ARRAY_LEN(bad); i++) {
        char body[1024];
        snprintf(body, sizeof(body),
                 POD_HEAD "{\"metadata\":{\"labels\":{\"qrux.io/inject\":\"true\"},"
                          "\"annotations\":%s},\"spec\":{\"containers\":[{\"name\":\"app\"}]}}}}",
                 bad[i]);
        assert_int_equal(review(&o, body, 0, &reply, &status), QX_REVIEW_DENIED);
        json_t *resp = json_object_get(reply, "response");
        assert_false(json_is_true(json_object_get(resp, "allowed")));
        const char *msg =
            json_string_value(json_object_get(json_object_get(resp, "status"), "message"));
        assert_non_null(msg);
        assert_non_null(strstr(msg, "annotation"));
        json_decref(reply);
    }
    qx_inject_opts_free(&o);
}

/* Every prefix of a valid review is garbage the server must answer. */
/* The container named |name| in the patch's /spec/initContainers value. */
static json_t *init_named(json_t *patch, const char *name)
{
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(json_array_get(patch, 0), "value"), i, c)
    {
        if (strcmp(json_string_value(json_object_get(c, "name")), name) == 0)
            return c;
    }
    fail_msg("no init container %s", name);
    return NULL;
}

/* The mount of the bpffs volume in |c|, or NULL. */
static json_t *bpffs_mount_of(json_t *c)
{
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(c, "volumeMounts"), i, m)
    {
        if (strcmp(json_string_value(json_object_get(m, "name")), QX_INJECT_VOL_BPFFS) == 0)
            return m;
    }
    return NULL;
}

/* With XDP both containers mount the pod's own bpffs directory (never the
 * node's whole /sys/fs/bpf, never one path shared by the node's pods); the
 * init container hands the pins to 65532; the sidecar stays 65532 with
 * CAP_BPF added (the seccomp gate) and nothing else. */
static void test_xdp_layout(void **state)
{
    qx_inject_opts_t o;
    json_t *reply, *patch;
    unsigned status;
    (void)state;
    assert_int_equal(qx_inject_opts_init(&o), 0);
    o.xdp = 1;

    const char *pod = POD_HEAD "{\"metadata\":{\"labels\":{\"qrux.io/inject\":\"true\"}},"
                               "\"spec\":{\"containers\":[{\"name\":\"app\"}]}}}}";
    assert_int_equal(review(&o, pod, 0, &reply, &status), QX_REVIEW_INJECTED);
    patch = patch_of(reply);
    assert_non_null(patch);
    json_t *x = init_named(patch, QX_INJECT_XDP_INIT), *q = init_named(patch, QX_INJECT_SIDECAR);
    json_t *args = json_object_get(x, "args");
    size_t n = json_array_size(args);
    assert_true(n >= 4);
    assert_string_equal(json_string_value(json_array_get(args, n - 4)), "--pin");
    assert_string_equal(json_string_value(json_array_get(args, n - 3)), "/sys/fs/bpf");
    assert_string_equal(json_string_value(json_array_get(args, n - 2)), "--pin-owner");
    assert_string_equal(json_string_value(json_array_get(args, n - 1)), "65532:65532");
    for (int k = 0; k < 2; k++) {
        json_t *c = k == 0 ? x : q;
        json_t *m = bpffs_mount_of(c);
        assert_non_null(m);
        assert_string_equal(json_string_value(json_object_get(m, "mountPath")), "/sys/fs/bpf");
        assert_string_equal(json_string_value(json_object_get(m, "subPathExpr")),
                            "qrux-$(QRUX_POD_UID)");
        assert_null(json_object_get(m, "readOnly"));
        json_t *e = json_array_get(json_object_get(c, "env"), 0);
        assert_string_equal(json_string_value(json_object_get(e, "name")), "QRUX_POD_UID");
        assert_string_equal(
            json_string_value(json_object_get(
                json_object_get(json_object_get(e, "valueFrom"), "fieldRef"), "fieldPath")),
            "metadata.uid");
    }
    json_t *sc = json_object_get(q, "securityContext");
    assert_int_equal(json_integer_value(json_object_get(sc, "runAsUser")), 65532);
    assert_true(json_is_true(json_object_get(sc, "runAsNonRoot")));
    json_t *want = json_pack("{s:[s],s:[s]}", "drop", "ALL", "add", "BPF");
    assert_true(json_equal(json_object_get(sc, "capabilities"), want));
    json_decref(want);
    want =
        json_pack("{s:[s],s:[ssss]}", "drop", "ALL", "add", "BPF", "PERFMON", "NET_ADMIN", "CHOWN");
    assert_true(
        json_equal(json_object_get(json_object_get(x, "securityContext"), "capabilities"), want));
    json_decref(want);
    json_decref(patch);
    json_decref(reply);

    /* Without XDP the sidecar has neither the mount nor the capability. */
    o.xdp = 0;
    assert_int_equal(review(&o, pod, 0, &reply, &status), QX_REVIEW_INJECTED);
    patch = patch_of(reply);
    q = init_named(patch, QX_INJECT_SIDECAR);
    assert_null(bpffs_mount_of(q));
    assert_null(json_object_get(q, "env"));
    assert_null(json_object_get(
        json_object_get(json_object_get(q, "securityContext"), "capabilities"), "add"));
    json_decref(patch);
    json_decref(reply);
    qx_inject_opts_free(&o);
}

static void test_truncated(void **state)
{
    qx_inject_opts_t o;
    (void)state;
    assert_int_equal(qx_inject_opts_init(&o), 0);
    const char *pod = POD_HEAD "{\"metadata\":{\"labels\":{\"qrux.io/inject\":\"true\"}},"
                               "\"spec\":{\"containers\":[{\"name\":\"app\"}]}}}}";
    size_t n = strlen(pod);
    for (size_t len = 0; len < n; len++) {
        char *out = NULL;
        size_t outlen = 0;
        unsigned status = 0;
        const char *why = NULL;
        int r = qx_inject_review(&o, pod, len, 0, &out, &outlen, &status, &why);
        assert_int_equal(r, QX_REVIEW_ERROR);
        assert_int_equal(status, 400);
        assert_non_null(strstr(out, "\"allowed\":false"));
        free(out);
    }
    qx_inject_opts_free(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64),    cmocka_unit_test(test_opts_refusals),
        cmocka_unit_test(test_patch),     cmocka_unit_test(test_xdp_layout),
        cmocka_unit_test(test_truncated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
