/*
 * steer_test.c - connection-ID steering (proxy/steer.c) in the real
 * kernel: two UDP sockets in one SO_REUSEPORT group on loopback, the
 * program attached, and datagrams from one client socket (one 4-tuple, so
 * the kernel's own hash would pick the same socket every time) must land
 * on the socket their DCID's first byte names, for short and long headers.
 */
#include "base/qx.h"
#include "front/quic/steer.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define N 3

typedef struct {
    int srv[N];
    int cli;
    struct sockaddr_in addr;
} fixture_t;

static int bound_socket(struct sockaddr_in *addr)
{
    int one = 1;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    assert_true(fd >= 0);
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)), 0);
    assert_int_equal(bind(fd, (struct sockaddr *)addr, sizeof(*addr)), 0);
    return fd;
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    f->addr.sin_family = AF_INET;
    f->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    f->srv[0] = bound_socket(&f->addr); /* port 0: the kernel picks one */
    socklen_t len = sizeof(f->addr);
    assert_int_equal(getsockname(f->srv[0], (struct sockaddr *)&f->addr, &len), 0);
    for (int i = 1; i < N; i++)
        f->srv[i] = bound_socket(&f->addr);
    f->cli = socket(AF_INET, SOCK_DGRAM, 0);
    assert_int_equal(connect(f->cli, (struct sockaddr *)&f->addr, sizeof(f->addr)), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    for (int i = 0; i < N; i++)
        close(f->srv[i]);
    close(f->cli);
    free(f);
    return 0;
}

/* Sends one datagram and returns the index of the socket that got it. */
static int lands_on(fixture_t *f, const uint8_t *pkt, size_t len)
{
    assert_int_equal(send(f->cli, pkt, len, 0), (ssize_t)len);
    struct pollfd pfd[N];
    for (int i = 0; i < N; i++)
        pfd[i] = (struct pollfd){.fd = f->srv[i], .events = POLLIN};
    assert_true(poll(pfd, N, 2000) > 0);
    int got = -1;
    for (int i = 0; i < N; i++) {
        uint8_t buf[64];
        if (recv(f->srv[i], buf, sizeof(buf), 0) == (ssize_t)len) {
            assert_int_equal(got, -1); /* exactly one socket */
            assert_memory_equal(buf, pkt, len);
            got = i;
        }
    }
    return got;
}

static void test_steers_by_dcid(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(qx_steer_attach(f->srv[0], N), 0);
    for (int round = 0; round < 2; round++) {
        for (int w = 0; w < N; w++) {
            /* short header: 0x40 | bits, then the DCID */
            uint8_t s[24] = {0x41, (uint8_t)w, 0xaa, 0xbb};
            assert_int_equal(lands_on(f, s, sizeof(s)), w);
            /* long header (Handshake): flags, version 1, DCID length, DCID */
            uint8_t l[32] = {0xe0, 0, 0, 0, 1, 18, (uint8_t)w, 0xcc};
            assert_int_equal(lands_on(f, l, sizeof(l)), w);
        }
    }
    /* A DCID byte past the last worker wraps around (a client's made-up
     * Initial DCID): still one fixed socket. */
    uint8_t s[24] = {0x41, (uint8_t)(N + 1)};
    assert_int_equal(lands_on(f, s, sizeof(s)), (N + 1) % N);
    /* A runt datagram goes to socket 0 rather than nowhere. */
    uint8_t runt[1] = {0x41};
    assert_int_equal(lands_on(f, runt, sizeof(runt)), 0);
}

static void test_attach_needs_reuseport(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(qx_steer_attach(fd, 2), EINVAL);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_steers_by_dcid, setup, teardown),
        cmocka_unit_test(test_attach_needs_reuseport),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
