/*
 * steer.h - connection-ID steering across the workers' UDP sockets.
 *
 * Every worker has its own socket on the listen port (SO_REUSEPORT); the
 * kernel alone would pick one by the 4-tuple, so a client whose address
 * changes (NAT rebinding, migration) lands on another worker. Server
 * connection IDs start with the owning worker's index, and the sockets
 * are bound in worker order, so a classic BPF program attached to the
 * group (SO_ATTACH_REUSEPORT_CBPF) can send every datagram to the socket
 * at index DCID[0] mod N. Classic BPF needs neither libbpf nor a compiler
 * for BPF; the kernel checks the program when it is attached.
 */
#ifndef QX_STEER_H
#define QX_STEER_H

#include <linux/filter.h>
#include <stddef.h>

/* Number of instructions in the steering program. */
#define QX_STEER_LEN 7

/* Writes the program for n sockets into prog[QX_STEER_LEN]. */
void qx_steer_program(struct sock_filter *prog, unsigned n);

/* Attaches the program to the reuseport group of |fd| (a bound socket,
 * the group's sockets in worker order). Returns 0 or an errno value; on
 * failure the kernel keeps picking by the 4-tuple (and workers hand
 * another worker's packets over in user space). */
int qx_steer_attach(int fd, unsigned n);

#endif
