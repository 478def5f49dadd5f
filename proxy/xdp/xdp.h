/*
 * xdp.h - the loader of the XDP program: `qrux xdp attach|detach|status|gc`.
 *
 * The program (bpf/xdp_quic.bpf.c) is embedded in the binary through a
 * libbpf skeleton. attach loads it, pins its maps and its bpf_link under a
 * bpffs directory (default /sys/fs/bpf/qrux) so that it outlives the init
 * container that ran the loader, and replaces the program in place when run
 * again. It needs CAP_BPF, CAP_PERFMON (the verifier's rule for variable
 * offsets into the packet) and CAP_NET_ADMIN (CAP_SYS_ADMIN instead of the
 * first two before Linux 5.8) and write access to the pin directory.
 *
 * gc removes, under a root such as a node's /sys/fs/bpf, the qrux-*
 * directories (one per pod) whose link is dead or missing: root with
 * CAP_BPF and CAP_CHOWN.
 */
#ifndef QX_XDP_H
#define QX_XDP_H

#define QX_XDP_DEFAULT_PIN "/sys/fs/bpf/qrux"

/* `qrux xdp ...`: argv[0] is "xdp". Returns the process exit status: 0
 * done, 1 failed (message on stderr), 2 bad usage; status returns 3 when
 * nothing is attached; gc --every returns 0 on SIGTERM. */
int qx_xdp_main(int argc, char **argv);

#endif
