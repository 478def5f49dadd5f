/*
 * sockbuf_test.c - large UDP socket buffers (proxy/base/sockbuf.c) on a real
 * socket: what qx_sockbuf_set reports is what the kernel reports; with
 * CAP_NET_ADMIN (root, as in CI) the buffers reach the size asked for even
 * past net.core.rmem_max; without it they stop at the cap and the result
 * says so.
 */
#include "base/sockbuf.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

static long sysctl_value(const char *path)
{
    long v = -1;
    FILE *f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%ld", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

static void test_sizes(void **state)
{
    (void)state;
    long rmax = sysctl_value("/proc/sys/net/core/rmem_max");
    assert_true(rmax > 0);
    /* More than the system's cap, so forcing makes a difference. */
    int want = (int)(rmax * 2 > 8 << 20 ? rmax * 2 : 8 << 20);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    assert_true(fd >= 0);
    qx_sockbuf_t r;
    qx_sockbuf_set(fd, want, &r);
    int rcv = 0;
    socklen_t len = sizeof(rcv);
    assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, &len), 0);
    assert_int_equal(r.rcv, rcv);
    if (geteuid() == 0) {
        assert_true(r.forced);
        assert_true(r.rcv / 2 >= want && r.snd / 2 >= want);
        assert_false(r.short_);
    } else {
        assert_false(r.forced);
        assert_true(r.rcv / 2 <= rmax);
        assert_true(r.short_);
    }
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
