/*
 * qx.h - definitions every qrux module shares: error codes, container_of,
 * small helpers. Keep this header tiny; anything with a concept of its own
 * gets its own module.
 */
#ifndef QX_H
#define QX_H

#include <stddef.h>
#include <stdint.h>

/* Errors are int: 0 ok, negative QX_ERR_* on failure. */
#define QX_OK 0
#define QX_ERR_NOMEM (-1)    /* allocation failed */
#define QX_ERR_CONFIG (-2)   /* configuration invalid; message says which field */
#define QX_ERR_IO (-3)       /* a syscall or file operation failed */
#define QX_ERR_TLS (-4)      /* TLS library refused (bad cert/key, handshake) */
#define QX_ERR_QUIC (-5)     /* ngtcp2 reported an error */
#define QX_ERR_PROTO (-6)    /* peer violated a protocol */
#define QX_ERR_LIMIT (-7)    /* a configured limit was exceeded */
#define QX_ERR_INVAL (-8)    /* invalid argument */
#define QX_ERR_NOTFOUND (-9) /* lookup found nothing */

#define QX_VERSION "0.1.0"

#define qx_container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#define QX_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#define QX_MIN(a, b) ((a) < (b) ? (a) : (b))
#define QX_MAX(a, b) ((a) > (b) ? (a) : (b))

/* QRUX_ASSERT(cond): checked in debug and sanitizer builds (QX_CHECKED,
 * set by CMake), nothing in release builds. For what must hold whatever a
 * peer does, such as a state machine's legal moves; never for input. A
 * failure prints the condition and where, then aborts. */
#ifdef QX_CHECKED
#define QRUX_ASSERT(cond) ((cond) ? (void)0 : qx_assert_fail(#cond, __FILE__, __LINE__))
#else
#define QRUX_ASSERT(cond) ((void)sizeof(cond)) /* not evaluated; what it names counts as used */
#endif
_Noreturn void qx_assert_fail(const char *cond, const char *file, int line);

#endif
