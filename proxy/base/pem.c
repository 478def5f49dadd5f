/* pem.c - naming what is wrong with a certificate or key file (see pem.h). */
#include "base/pem.h"

#include "base/qx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A PEM file larger than this is not a certificate chain or a key. */
#define PEM_MAX_BYTES (1024 * 1024)

typedef enum {
    PEM_HAS_CERT = 1,
    PEM_HAS_KEY = 2,
    PEM_HAS_ENCRYPTED_KEY = 4,
} pem_kinds_t;

/* What PEM blocks |path| holds (a mask of pem_kinds_t), or -1 with errno set
 * (EFBIG for a file too large). */
static int pem_kinds(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    char *buf = malloc(PEM_MAX_BYTES + 1);
    if (buf == NULL) {
        fclose(f);
        errno = ENOMEM;
        return -1;
    }
    size_t n = fread(buf, 1, PEM_MAX_BYTES + 1, f);
    int rerr = ferror(f) ? errno : 0;
    fclose(f);
    if (rerr != 0 || n > PEM_MAX_BYTES) {
        free(buf);
        errno = rerr != 0 ? rerr : EFBIG;
        return -1;
    }
    buf[n] = '\0';
    int kinds = 0;
    /* Binary content may hold NULs: search every NUL-separated piece. */
    for (size_t off = 0; off < n; off += strlen(buf + off) + 1) {
        const char *s = buf + off;
        if (strstr(s, "-----BEGIN CERTIFICATE-----") != NULL ||
            strstr(s, "-----BEGIN TRUSTED CERTIFICATE-----") != NULL)
            kinds |= PEM_HAS_CERT;
        if (strstr(s, "-----BEGIN ENCRYPTED PRIVATE KEY-----") != NULL ||
            strstr(s, "Proc-Type: 4,ENCRYPTED") != NULL)
            kinds |= PEM_HAS_ENCRYPTED_KEY;
        else if (strstr(s, "PRIVATE KEY-----") != NULL)
            kinds |= PEM_HAS_KEY;
    }
    free(buf);
    return kinds;
}

int qx_pem_check_pair(const char *cert, const char *key, char *err, size_t errlen)
{
    int k = pem_kinds(cert);
    if (k < 0) {
        snprintf(err, errlen, "server.cert: %s: %s", cert, strerror(errno));
        return QX_ERR_CONFIG;
    }
    if (!(k & PEM_HAS_CERT)) {
        if (k & (PEM_HAS_KEY | PEM_HAS_ENCRYPTED_KEY))
            snprintf(err, errlen, "server.cert: %s is a private key, not a certificate", cert);
        else
            snprintf(err, errlen, "server.cert: %s: no PEM certificate in the file", cert);
        return QX_ERR_CONFIG;
    }
    k = pem_kinds(key);
    if (k < 0) {
        snprintf(err, errlen, "server.key: %s: %s", key, strerror(errno));
        return QX_ERR_CONFIG;
    }
    if (!(k & PEM_HAS_KEY)) {
        if (k & PEM_HAS_ENCRYPTED_KEY)
            snprintf(err, errlen,
                     "server.key: %s is encrypted; qrux needs an unencrypted key (protect the "
                     "file instead: mode 0400, a Secret)",
                     key);
        else if (k & PEM_HAS_CERT)
            snprintf(err, errlen, "server.key: %s is a certificate, not a private key", key);
        else
            snprintf(err, errlen, "server.key: %s: no PEM private key in the file", key);
        return QX_ERR_CONFIG;
    }
    return 0;
}

void qx_pem_mismatch(const char *cert, const char *key, char *err, size_t errlen)
{
    snprintf(err, errlen, "server.key: %s does not match the certificate in server.cert (%s)", key,
             cert);
}
