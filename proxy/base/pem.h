/*
 * pem.h - the certificate and key files, checked before a TLS library reads
 * them, so that a mistake is named the way an operator would say it ("key.pem
 * is a certificate, not a private key") instead of the library's words
 * ("The requested data were not available").
 */
#ifndef QX_PEM_H
#define QX_PEM_H

#include <stddef.h>

/* Reads |cert| and |key| (PEM) and checks that each can be what it is
 * configured as: the file exists and is readable, the certificate file holds
 * a CERTIFICATE block, the key file an unencrypted PRIVATE KEY block. Returns
 * 0, or QX_ERR_CONFIG with a message naming the field (server.cert or
 * server.key), the path and the reason in |err|. Whether the key matches the
 * certificate is left to the TLS library (see qx_pem_mismatch). */
int qx_pem_check_pair(const char *cert, const char *key, char *err, size_t errlen);

/* The message for a key that does not belong to the certificate. */
void qx_pem_mismatch(const char *cert, const char *key, char *err, size_t errlen);

#endif /* QX_PEM_H */
