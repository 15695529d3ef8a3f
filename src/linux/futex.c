/* Futex wait and wake on words in shared memory.
 *
 * The words live in memfd segments mapped by several processes, so the non-private futex
 * operations are used: the kernel keys them by the backing page, not by the address. Waits
 * use FUTEX_WAIT_BITSET, whose timeout is absolute on CLOCK_MONOTONIC, so that a retried
 * wait after EINTR never extends the caller's deadline.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "linux.h"

int mpx__futex_wait(_Atomic uint32_t *word, uint32_t expected, mpx_deadline_t deadline)
{
    struct timespec ts, *tsp = NULL;
    if (deadline != MPX_FOREVER) {
        if (mpx__deadline_passed(deadline))
            return -ETIMEDOUT;
        ts = mpx__ts_from_ns(deadline);
        tsp = &ts;
    }
    long r = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_BITSET, expected, tsp, NULL,
                     FUTEX_BITSET_MATCH_ANY);
    if (r == 0)
        return 0;
    switch (errno) {
    case EAGAIN: /* the word had already changed */
        return 0;
    case ETIMEDOUT:
        return -ETIMEDOUT;
    case EINTR:
        return -EINTR;
    default:
        return -errno;
    }
}

int mpx__futex_wake(_Atomic uint32_t *word, int n)
{
    long r = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, n, NULL, NULL, 0);
    return r < 0 ? -errno : (int)r;
}
