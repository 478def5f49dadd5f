/*
 * inject.h - `qrux inject`: the mutating admission webhook that adds the
 * qrux sidecar to opted-in pods, and `qrux inject --lint` for manifests.
 *
 * The review logic (qx_inject_review) is a pure function of the request
 * body and the options: no I/O, no global state, so the HTTPS server
 * (inject_server.c), the unit tests and the golden-file tests all run the
 * same code.
 */
#ifndef QX_INJECT_H
#define QX_INJECT_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

/* The names every injected pod shares; the chart, the kustomize base and
 * the README use the same ones. */
#define QX_INJECT_SIDECAR "qrux"
#define QX_INJECT_XDP_INIT "qrux-xdp"
#define QX_INJECT_VOL_CONFIG "qrux-config"
#define QX_INJECT_VOL_TLS "qrux-tls"
#define QX_INJECT_VOL_BPFFS "qrux-bpffs"
#define QX_INJECT_CONFIG_DIR "/etc/qrux"
#define QX_INJECT_TLS_DIR "/etc/qrux-tls"
#define QX_INJECT_BPFFS_DIR "/sys/fs/bpf"
/* With XDP, both qrux containers mount the node's bpffs through this
 * subPathExpr on /sys/fs/bpf: one directory per pod (qrux-<pod uid>), so
 * the pods of a node never share maps, keys or a link, and neither
 * container sees another pod's pins. The filter is pinned at the root of
 * that mount, which the sidecar's qrux.yaml names as `xdp: pin:`.
 * `qrux xdp gc` (proxy/xdp/xdp.c, gc_pass) looks for these directories by
 * their "qrux-" prefix: change both together. */
#define QX_INJECT_POD_UID_ENV "QRUX_POD_UID"
#define QX_INJECT_BPFFS_SUBPATH "qrux-$(" QX_INJECT_POD_UID_ENV ")"
#define QX_INJECT_PIN_DIR QX_INJECT_BPFFS_DIR
/* The image's user (the sidecar runs as it; the pins are handed to it). */
#define QX_INJECT_UID 65532
#define QX_INJECT_UID_STR "65532"

/* Labels and annotations read and written on pods. */
#define QX_INJECT_LABEL "qrux.io/inject"
#define QX_ANN_STATUS "qrux.io/status"
#define QX_ANN_APP_PORT "qrux.io/app-port"
#define QX_ANN_CONFIG_MAP "qrux.io/config-map"
#define QX_ANN_TLS_SECRET "qrux.io/tls-secret"
#define QX_ANN_XDP "qrux.io/xdp"
#define QX_ANN_NATIVE "qrux.io/native-sidecar"
#define QX_ANN_RESOURCES "qrux.io/resources"
#define QX_ANN_DRAIN_DELAY "qrux.io/drain-delay-secs"
#define QX_ANN_DEFAULT_CONTAINER "kubectl.kubernetes.io/default-container"

/* Defaults of the injector, from --config (JSON) or built in. Every
 * per-pod annotation above overrides its field for one pod. */
typedef struct qx_inject_opts {
    char *image;       /* the qrux image (sidecar and XDP init container) */
    char *pull_policy; /* imagePullPolicy */
    char *binary;      /* qrux's path in the image (preStop exec) */
    char *config_map;  /* ConfigMap holding qrux.yaml */
    char *tls_secret;  /* Secret holding tls.crt, tls.key, admin-token */
    char *xdp_iface;   /* the pod's interface for `qrux xdp attach` */
    int xdp;           /* add the XDP init container */
    int native;        /* native sidecar (init container, restartPolicy Always) */
    int app_port;      /* the app's HTTP/1.1 port (upstream of qrux) */
    int port;          /* HTTP/3 (UDP) and HTTPS (TCP) port */
    int admin_port;    /* admin server: probes, /metrics */
    int drain_delay;   /* seconds the preStop hook keeps serving after /drain */
    json_t *resources; /* the sidecar's resources object */
} qx_inject_opts_t;

/* Fills |o| with the built-in defaults. Returns 0 or QX_ERR_NOMEM. */
int qx_inject_opts_init(qx_inject_opts_t *o);

/* Reads a JSON object whose keys override the defaults: image,
 * imagePullPolicy, binary, configMap, tlsSecret, xdpInterface, xdp,
 * nativeSidecar, appPort, port, adminPort, drainDelaySecs, resources.
 * An unknown key, a wrong type or a value out of range is refused with
 * the key named in |err|. Returns 0, QX_ERR_IO or QX_ERR_CONFIG. */
int qx_inject_opts_load(qx_inject_opts_t *o, const char *path, char *err, size_t errlen);

/* Releases what qx_inject_opts_init/load allocated. Accepts a half-built one. */
void qx_inject_opts_free(qx_inject_opts_t *o);

/* What became of one review (the label of qrux_inject_reviews_total). */
typedef enum {
    QX_REVIEW_INJECTED = 0, /* a patch was returned */
    QX_REVIEW_SKIPPED,      /* allowed without patch: not opted in, already injected, ... */
    QX_REVIEW_DENIED,       /* allowed false: an annotation the injector cannot honour */
    QX_REVIEW_ERROR,        /* not an AdmissionReview: the reply has an error status */
    QX_REVIEW_COUNT
} qx_review_result_t;

extern const char *const qx_review_result_names[QX_REVIEW_COUNT];

/*
 * Answers one AdmissionReview v1 (|body|, |len| bytes). |ns_scope| is
 * nonzero when the request came through the namespace-selected webhook
 * (every pod of a labelled namespace is opted in unless its label says
 * "false"); otherwise the pod's own label must be "true".
 * On return *out is a malloc'ed AdmissionReview (always, even for
 * garbage input), *http_status is what the server sends (200, or 400 for
 * a body that is not an AdmissionReview), *why says what happened in a
 * few words (static). Returns the result, or -1 when out of memory.
 */
int qx_inject_review(const qx_inject_opts_t *o, const char *body, size_t len, int ns_scope,
                     char **out, size_t *outlen, unsigned *http_status, const char **why);

/* Standard base64 of |in| (n bytes) into |out|, which holds
 * 4 * ((n + 2) / 3) + 1 bytes; NUL-terminated. */
void qx_inject_base64(const char *in, size_t n, char *out);

/* `qrux inject --lint FILE...`: prints one line per warning to |out|;
 * returns the number of warnings, or -1 when a file cannot be read or
 * parsed (the reason is printed too). */
int qx_inject_lint(const char *const *files, size_t n, FILE *out);

/* `qrux inject ...` (argv[0] is "inject"): the server, --lint, --prestop.
 * Returns the process's exit code. */
int qx_inject_main(int argc, char **argv);

#endif
