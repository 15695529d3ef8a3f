/* Semaphores (docs/sync.md, "Semaphores").
 *
 * The value itself is the futex word. Sleepers announce themselves in `waiters` before
 * sleeping and a release wakes one only when that count is nonzero; both sides use
 * sequentially consistent operations, so either the sleeper sees the new value or the
 * releaser sees the sleeper. A waiter that dies leaves the count one too high, which costs
 * at most an unneeded wake-up. A semaphore has no owner: a permit held by a process that
 * dies is not given back.
 */
#include <errno.h>
#include <stdlib.h>

#include "fault.h"
#include "mpx/error.h"
#include "mpx/sync.h"
#include "sync_internal.h"

struct sem_shared {
    struct mpx__object_header h;
    _Atomic uint32_t value;
    _Atomic uint32_t waiters;
    uint32_t maxvalue; /* immutable */
};

struct mpx_sem {
    struct mpx__sync_obj obj;
    struct sem_shared *sh; /* borrowed from obj */
};

MPX__SYNC_HANDLE_FUNCS(sem, MPX__KIND_SEM, struct sem_shared)

int mpx_sem_create(mpx_sem **out, unsigned value, unsigned maxvalue)
{
    if (maxvalue > MPX_SEM_VALUE_MAX || value > maxvalue)
        return -EINVAL;
    int r = create_handle(out);
    if (r == 0) {
        (*out)->sh->maxvalue = maxvalue;
        atomic_store_explicit(&(*out)->sh->value, value, memory_order_release);
    }
    return r;
}

static bool take(struct sem_shared *sh)
{
    uint32_t v = atomic_load_explicit(&sh->value, memory_order_relaxed);
    while (v > 0)
        if (atomic_compare_exchange_weak_explicit(&sh->value, &v, v - 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return true;
    return false;
}

static bool positive(const void *ctx)
{
    return atomic_load_explicit(&((const struct sem_shared *)ctx)->value,
                                memory_order_relaxed) > 0;
}

int mpx_sem_acquire(mpx_sem *s, mpx_deadline_t deadline)
{
    if (!s)
        return -EINVAL;
    struct sem_shared *sh = s->sh;
    if (take(sh))
        goto acquired;
    if (deadline == MPX_NOWAIT)
        return -EAGAIN;
    uint32_t spin = MPX__SPIN_NS;
    while (mpx__spin_until(positive, sh, spin, deadline)) {
        if (take(sh))
            goto acquired;
        spin = 0;
    }
    for (;;) {
        atomic_fetch_add(&sh->waiters, 1);
        int r = 0;
        if (atomic_load(&sh->value) == 0)
            r = mpx__futex_wait(&sh->value, 0, deadline);
        atomic_fetch_sub(&sh->waiters, 1);
        if (take(sh))
            goto acquired;
        if (r < 0 || (deadline != MPX_FOREVER && mpx__deadline_passed(deadline))) {
            /* Leaving without a permit: if a release woke us for one, pass the wake-up on
             * so that it is not lost. */
            if (atomic_load(&sh->value) > 0 && atomic_load(&sh->waiters) > 0)
                mpx__futex_wake(&sh->value, 1);
            return r < 0 ? r : -ETIMEDOUT;
        }
    }
acquired:
    MPX__FAULT("sem.acquired");
    return 0;
}

int mpx_sem_release(mpx_sem *s)
{
    if (!s)
        return -EINVAL;
    struct sem_shared *sh = s->sh;
    uint32_t v = atomic_load_explicit(&sh->value, memory_order_relaxed);
    do {
        if (v >= sh->maxvalue)
            return -EOVERFLOW;
    } while (!atomic_compare_exchange_weak(&sh->value, &v, v + 1));
    if (atomic_load(&sh->waiters) > 0)
        mpx__futex_wake(&sh->value, 1);
    return 0;
}

unsigned mpx_sem_value(const mpx_sem *s)
{
    return s ? atomic_load_explicit(&s->sh->value, memory_order_relaxed) : 0;
}

unsigned mpx_sem_maxvalue(const mpx_sem *s)
{
    return s ? s->sh->maxvalue : 0;
}
