/* The calling process's pid, cached, and a cheap liveness test.
 *
 * Locks record their holder's pid and every acquire compares against it, so the value must
 * cost nothing: glibc no longer caches getpid(). The cache is cleared in a fork child by a
 * pthread_atfork handler, registered on first use.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include "linux.h"

static _Atomic pid_t cached_pid;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void after_fork_child(void)
{
    atomic_store_explicit(&cached_pid, 0, memory_order_relaxed);
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, after_fork_child);
}

pid_t mpx__self_pid(void)
{
    pid_t p = atomic_load_explicit(&cached_pid, memory_order_relaxed);
    if (__builtin_expect(p != 0, 1))
        return p;
    pthread_once(&atfork_once, register_atfork);
    p = getpid();
    atomic_store_explicit(&cached_pid, p, memory_order_relaxed);
    return p;
}

bool mpx__pid_gone(pid_t pid)
{
    return pid > 0 && kill(pid, 0) < 0 && errno == ESRCH;
}
