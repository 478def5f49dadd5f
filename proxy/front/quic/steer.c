/* steer.c - connection-ID steering with classic BPF (see steer.h). */
#include "front/quic/steer.h"

#include <errno.h>
#include <sys/socket.h>

#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif

/*
 * For a UDP reuseport group the kernel runs the program with the packet
 * starting at the UDP payload, and takes the returned value as the index
 * of the socket (past the end: it falls back to the 4-tuple hash).
 *
 *   short header (first bit 0): 0x40|..., DCID from byte 1
 *   long header  (first bit 1): flags, version (4), DCID length, DCID from byte 6
 *
 * A load past the end of a runt datagram ends the program with 0: worker 0
 * gets it (and drops it). A client's first Initial carries a DCID it made
 * up: any worker may take it, and its retransmissions go the same way.
 */
void qx_steer_program(struct sock_filter *prog, unsigned n)
{
    struct sock_filter p[QX_STEER_LEN] = {
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 0),            /* 0: A = first byte */
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x80, 2, 0), /* 1: long header? to 4 */
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 1),            /* 2: A = DCID[0] (short) */
        BPF_JUMP(BPF_JMP | BPF_JA, 1, 0, 0),              /* 3: to 5 */
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 6),            /* 4: A = DCID[0] (long) */
        BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, n ? n : 1),   /* 5: A %= n */
        BPF_STMT(BPF_RET | BPF_A, 0),                     /* 6: the socket's index */
    };
    for (size_t i = 0; i < QX_STEER_LEN; i++)
        prog[i] = p[i];
}

int qx_steer_attach(int fd, unsigned n)
{
    struct sock_filter prog[QX_STEER_LEN];
    qx_steer_program(prog, n);
    struct sock_fprog fp = {.len = QX_STEER_LEN, .filter = prog};
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &fp, sizeof(fp)) == -1)
        return errno;
    return 0;
}
