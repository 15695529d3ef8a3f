/* Locks: plain and recursive, owner-recording futex words (docs/sync.md, "Locks").
 *
 * The lock word holds the pid of the process that acquired it, so that a waiter can tell
 * when the holder has died: glibc's robust mutexes would tell us too, but they belong to a
 * thread, and a multiprocessing Lock may be released by any thread of any process. A
 * waiter that has slept for a while checks the recorded pid; if that process has exited,
 * it takes the lock over with one compare-and-swap (so exactly one waiter does) and
 * reports MPX_EOWNERDEAD.
 *
 * The word follows the classic three-state futex mutex: free, held, held with possible
 * sleepers (OLOCK_WAITERS). A release wakes one sleeper only when the bit is set; a waiter
 * that wakes takes the lock with the bit set, since others may still sleep.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "fault.h"
#include "mpx/error.h"
#include "mpx/sync.h"
#include "sync_internal.h"

static bool holder_dead(pid_t pid, bool thorough)
{
    if (pid == 0 || pid == mpx__self_pid())
        return false;
    /* A zombie counts as dead: it will never release anything. Reading /proc costs more
     * than a kill(0), so the cheap test serves the non-blocking path. */
    return thorough ? mpx__pid_running(pid) == 0 : mpx__pid_gone(pid);
}

/* Takes the word over from a dead holder `pid` if it still records it. */
static bool take_over(_Atomic uint32_t *word, uint32_t seen, pid_t me)
{
    return atomic_compare_exchange_strong_explicit(word, &seen, (uint32_t)me | MPX__OLOCK_WAITERS,
                                                   memory_order_acquire, memory_order_relaxed);
}

static bool try_free(_Atomic uint32_t *word, uint32_t value)
{
    uint32_t c = 0;
    return atomic_compare_exchange_strong_explicit(word, &c, value, memory_order_acquire,
                                                   memory_order_relaxed);
}

static bool word_free(const void *ctx)
{
    return atomic_load_explicit((const _Atomic uint32_t *)ctx, memory_order_relaxed) == 0;
}

int mpx__olock_acquire(_Atomic uint32_t *word, mpx_deadline_t deadline, uint32_t spin_ns,
                       pid_t *dead)
{
    pid_t me = mpx__self_pid();
    if (try_free(word, (uint32_t)me))
        return 0;
    if (deadline == MPX_NOWAIT || (deadline != MPX_FOREVER && mpx__deadline_passed(deadline))) {
        uint32_t c = atomic_load_explicit(word, memory_order_relaxed);
        pid_t owner = (pid_t)(c & MPX__OLOCK_PID_MASK);
        if (holder_dead(owner, false) && take_over(word, c, me)) {
            *dead = owner;
            return MPX_EOWNERDEAD;
        }
        return deadline == MPX_NOWAIT ? -EAGAIN : -ETIMEDOUT;
    }
    while (mpx__spin_until(word_free, (const void *)word, spin_ns, deadline)) {
        if (try_free(word, (uint32_t)me))
            return 0;
        spin_ns = 0; /* lost the race: sleep from now on */
    }
    int64_t interval = MPX__CHECK_FIRST_NS;
    int64_t check_at = mpx__now_ns() + interval;
    for (;;) {
        uint32_t c = atomic_load_explicit(word, memory_order_relaxed);
        if (c == 0) {
            if (try_free(word, (uint32_t)me | MPX__OLOCK_WAITERS))
                return 0;
            continue;
        }
        if (!(c & MPX__OLOCK_WAITERS)) {
            if (!atomic_compare_exchange_weak_explicit(word, &c, c | MPX__OLOCK_WAITERS,
                                                       memory_order_relaxed,
                                                       memory_order_relaxed))
                continue;
            c |= MPX__OLOCK_WAITERS;
        }
        MPX__FAULT("lock.wait.flagged");
        int r = mpx__futex_wait(word, c, mpx__nap_end(deadline, check_at));
        if (r == -EINTR)
            return r;
        int64_t now = mpx__now_ns();
        if (deadline != MPX_FOREVER && now >= deadline) {
            if (try_free(word, (uint32_t)me | MPX__OLOCK_WAITERS))
                return 0;
            return -ETIMEDOUT;
        }
        if (now >= check_at) {
            c = atomic_load_explicit(word, memory_order_relaxed);
            pid_t owner = (pid_t)(c & MPX__OLOCK_PID_MASK);
            if (holder_dead(owner, true) && take_over(word, c, me)) {
                *dead = owner;
                return MPX_EOWNERDEAD;
            }
            interval = interval * 2 > MPX__CHECK_MAX_NS ? MPX__CHECK_MAX_NS : interval * 2;
            check_at = now + interval;
        }
    }
}

int mpx__olock_release(_Atomic uint32_t *word)
{
    /* An exchange, not a compare-and-swap loop: storing 0 into a free word changes nothing,
     * and any holder may be released (a plain lock is a binary semaphore). */
    uint32_t c = atomic_exchange_explicit(word, 0, memory_order_release);
    if (c == 0)
        return -EPERM;
    if (c & MPX__OLOCK_WAITERS)
        mpx__futex_wake(word, 1);
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * mpx_lock
 */

struct lock_shared {
    struct mpx__object_header h;
    _Atomic uint32_t word;         /* the owner-recording lock word */
    uint32_t kind;                 /* enum mpx_lock_kind, immutable */
    _Atomic uint64_t owner_thread; /* recursive: pthread_self() of the owner, 0 when free */
    _Atomic uint32_t count;        /* recursive: the recursion level */
};

/* The calling thread, as recorded in owner_thread. pthread_self() is a register read; it
 * is unique only within a process, which is enough since the pid is compared first. */
static uint64_t self_thread(void)
{
    return (uint64_t)pthread_self();
}

struct mpx_lock {
    struct mpx__sync_obj obj;
    struct lock_shared *sh; /* borrowed from obj */
};

MPX__SYNC_HANDLE_FUNCS(lock, MPX__KIND_LOCK, struct lock_shared)

int mpx_lock_create(mpx_lock **out, int kind)
{
    if (kind != MPX_LOCK_PLAIN && kind != MPX_LOCK_RECURSIVE)
        return -EINVAL;
    int r = create_handle(out);
    if (r == 0)
        (*out)->sh->kind = (uint32_t)kind;
    return r;
}

int mpx_lock_kind(const mpx_lock *l)
{
    return l ? (l->sh->kind == MPX_LOCK_RECURSIVE ? MPX_LOCK_RECURSIVE : MPX_LOCK_PLAIN)
             : -EINVAL;
}

static bool recursive(const mpx_lock *l)
{
    return l->sh->kind == MPX_LOCK_RECURSIVE;
}

static bool owned_by_caller(const mpx_lock *l)
{
    uint32_t c = atomic_load_explicit(&l->sh->word, memory_order_relaxed);
    return (pid_t)(c & MPX__OLOCK_PID_MASK) == mpx__self_pid() &&
           atomic_load_explicit(&l->sh->owner_thread, memory_order_relaxed) == self_thread();
}

int mpx_lock_acquire(mpx_lock *l, mpx_deadline_t deadline, pid_t *dead_owner)
{
    if (!l)
        return -EINVAL;
    struct lock_shared *sh = l->sh;
    if (recursive(l) && owned_by_caller(l)) {
        uint32_t n = atomic_load_explicit(&sh->count, memory_order_relaxed);
        if (n == UINT32_MAX)
            return -EOVERFLOW;
        atomic_store_explicit(&sh->count, n + 1, memory_order_relaxed);
        return 0;
    }
    pid_t dead = 0;
    int r = mpx__olock_acquire(&sh->word, deadline, MPX__SPIN_NS, &dead);
    if (r < 0 && r != MPX_EOWNERDEAD)
        return r;
    if (recursive(l)) {
        atomic_store_explicit(&sh->owner_thread, self_thread(), memory_order_relaxed);
        atomic_store_explicit(&sh->count, 1, memory_order_relaxed);
    }
    MPX__FAULT("lock.acquired");
    if (r == MPX_EOWNERDEAD && dead_owner)
        *dead_owner = dead;
    return r;
}

int mpx_lock_release(mpx_lock *l)
{
    if (!l)
        return -EINVAL;
    struct lock_shared *sh = l->sh;
    if (recursive(l)) {
        if (!owned_by_caller(l))
            return -EPERM;
        uint32_t n = atomic_load_explicit(&sh->count, memory_order_relaxed);
        if (n > 1) {
            atomic_store_explicit(&sh->count, n - 1, memory_order_relaxed);
            return 0;
        }
        atomic_store_explicit(&sh->count, 0, memory_order_relaxed);
        atomic_store_explicit(&sh->owner_thread, 0, memory_order_relaxed);
    }
    return mpx__olock_release(&sh->word);
}

pid_t mpx_lock_owner(const mpx_lock *l)
{
    return l ? (pid_t)(atomic_load_explicit(&l->sh->word, memory_order_relaxed) &
                       MPX__OLOCK_PID_MASK)
             : 0;
}

int mpx_lock_is_mine(const mpx_lock *l)
{
    if (!l)
        return -EINVAL;
    if (recursive(l))
        return owned_by_caller(l);
    return mpx_lock_owner(l) == mpx__self_pid();
}

unsigned mpx_lock_count(const mpx_lock *l)
{
    if (!l)
        return 0;
    if (recursive(l))
        return owned_by_caller(l) ? atomic_load_explicit(&l->sh->count, memory_order_relaxed)
                                  : 0;
    return mpx_lock_owner(l) != 0;
}

int mpx__lock_release_all(mpx_lock *l, unsigned *level)
{
    if (!mpx_lock_is_mine(l))
        return -EPERM;
    if (recursive(l)) {
        *level = atomic_load_explicit(&l->sh->count, memory_order_relaxed);
        atomic_store_explicit(&l->sh->count, 1, memory_order_relaxed);
    } else {
        *level = 1;
    }
    return mpx_lock_release(l);
}

int mpx__lock_restore(mpx_lock *l, unsigned level, pid_t *dead)
{
    int r;
    do
        r = mpx_lock_acquire(l, MPX_FOREVER, dead);
    while (r == -EINTR);
    if (recursive(l))
        atomic_store_explicit(&l->sh->count, level ? level : 1, memory_order_relaxed);
    return r;
}
