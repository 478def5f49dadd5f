/* sockbuf.c - large socket buffers (see sockbuf.h). */
#include "base/sockbuf.h"

#include <sys/socket.h>

static int get(int fd, int opt)
{
    int v = 0;
    socklen_t len = sizeof(v);
    if (getsockopt(fd, SOL_SOCKET, opt, &v, &len) != 0)
        return 0;
    return v;
}

void qx_sockbuf_set(int fd, int want, qx_sockbuf_t *out)
{
    int rf = setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof(want)) == 0;
    int sf = setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &want, sizeof(want)) == 0;
    if (!rf)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof(want));
    if (!sf)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof(want));
    out->forced = rf && sf;
    out->rcv = get(fd, SO_RCVBUF);
    out->snd = get(fd, SO_SNDBUF);
    /* The kernel reports twice what it granted. */
    out->short_ = out->rcv / 2 < want || out->snd / 2 < want;
}
