/*
 * quic_mem.h - the allocator a worker gives ngtcp2 and nghttp3.
 *
 * Both libraries take per-connection blocks of 4 to 44 KiB (ngtcp2's and
 * nghttp3's object pools and skip lists, nghttp3's stream pool) of which
 * an idle connection touches one page or two. From malloc those blocks
 * come out of memory other objects already wrote, so all their pages
 * count in RSS; here they come from a region of their own, whole pages
 * each, so the pages nobody writes are never backed, and a freed block's
 * pages go back to the kernel before it is reused. Smaller requests:
 * nghttp3's (several per request) go to size-class free lists (slab.h),
 * ngtcp2's to malloc. One allocator per worker: no locks (a connection and everything
 * its libraries allocate stay on one worker).
 */
#ifndef QX_QUIC_MEM_H
#define QX_QUIC_MEM_H

#include <nghttp3/nghttp3.h>
#include <ngtcp2/ngtcp2.h>

typedef struct qx_qmem qx_qmem_t;

/* Reserves the region (address space only). Returns 0 or QX_ERR_NOMEM;
 * without a region (e.g. strict overcommit) every request goes to malloc. */
int qx_qmem_new(qx_qmem_t **out);

/* Frees the allocator; every block it gave must be freed already. Accepts
 * NULL. */
void qx_qmem_del(qx_qmem_t *m);

/* The tables to hand to ngtcp2_conn_server_new and nghttp3_conn_server_new. */
const ngtcp2_mem *qx_qmem_ngtcp2(qx_qmem_t *m);
const nghttp3_mem *qx_qmem_nghttp3(qx_qmem_t *m);

#endif
