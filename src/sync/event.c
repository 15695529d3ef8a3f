/* Events (docs/sync.md, "Events").
 *
 * One futex word: bit 0 is the flag, the rest a generation bumped by every set() of a
 * clear event. A waiter sleeps on the value it saw; any change of that value means a
 * set() happened since (clear() alone only changes a set word), so a set() followed at
 * once by clear() still releases every waiter, as threading.Event does.
 */
#include <errno.h>
#include <stdlib.h>

#include "mpx/error.h"
#include "mpx/sync.h"
#include "sync_internal.h"

struct event_shared {
    struct mpx__object_header h;
    _Atomic uint32_t word;
    _Atomic uint32_t waiters;
};

struct mpx_event {
    struct mpx__sync_obj obj;
    struct event_shared *sh; /* borrowed from obj */
};

MPX__SYNC_HANDLE_FUNCS(event, MPX__KIND_EVENT, struct event_shared)

int mpx_event_create(mpx_event **out)
{
    return create_handle(out);
}

int mpx_event_set(mpx_event *e)
{
    if (!e)
        return -EINVAL;
    struct event_shared *sh = e->sh;
    uint32_t w = atomic_load(&sh->word);
    do {
        if (w & 1u)
            return 0;
    } while (!atomic_compare_exchange_weak(&sh->word, &w, (w + 2u) | 1u));
    if (atomic_load(&sh->waiters) > 0)
        mpx__futex_wake(&sh->word, INT32_MAX);
    return 0;
}

int mpx_event_clear(mpx_event *e)
{
    if (!e)
        return -EINVAL;
    atomic_fetch_and(&e->sh->word, ~1u);
    return 0;
}

int mpx_event_is_set(const mpx_event *e)
{
    return e ? (int)(atomic_load(&e->sh->word) & 1u) : -EINVAL;
}

int mpx_event_wait(mpx_event *e, mpx_deadline_t deadline)
{
    if (!e)
        return -EINVAL;
    struct event_shared *sh = e->sh;
    uint32_t w = atomic_load(&sh->word);
    if (w & 1u)
        return 0;
    if (deadline == MPX_NOWAIT)
        return -EAGAIN;
    if (mpx__spin_while_eq(&sh->word, w, MPX__SPIN_NS, deadline))
        return 0;
    for (;;) {
        atomic_fetch_add(&sh->waiters, 1);
        int r = mpx__futex_wait(&sh->word, w, deadline);
        atomic_fetch_sub(&sh->waiters, 1);
        if (atomic_load(&sh->word) != w)
            return 0;
        if (r < 0)
            return r;
        if (deadline != MPX_FOREVER && mpx__deadline_passed(deadline))
            return -ETIMEDOUT;
    }
}
