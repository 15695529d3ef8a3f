/* eventfd counters, used to make shared-memory readiness pollable. */
#include <errno.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "linux.h"

int mpx__eventfd(unsigned initval, bool nonblock)
{
    int fd = eventfd(initval, EFD_CLOEXEC | (nonblock ? EFD_NONBLOCK : 0));
    return fd < 0 ? -errno : fd;
}

int mpx__eventfd_signal(int fd, uint64_t n)
{
    for (;;) {
        ssize_t w = write(fd, &n, sizeof n);
        if (w == (ssize_t)sizeof n)
            return 0;
        if (w < 0 && errno == EINTR)
            continue;
        return w < 0 ? -errno : -EIO;
    }
}

int mpx__eventfd_drain(int fd, uint64_t *n)
{
    for (;;) {
        ssize_t r = read(fd, n, sizeof *n);
        if (r == (ssize_t)sizeof *n)
            return 0;
        if (r < 0 && errno == EINTR)
            continue;
        return r < 0 ? -errno : -EIO;
    }
}
