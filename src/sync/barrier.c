/* Barriers (docs/sync.md, "Barriers").
 *
 * The state - generation, arrivals, broken flag - is changed under a small guard, an
 * owner-recording lock word like mpx_lock's, so a guard holder that dies is detected and
 * the barrier is broken rather than left half-updated. Waiters sleep on `seq`, bumped by
 * every trip, abort and reset.
 *
 * Generations instead of threading.Barrier's "draining" phase: the last arrival trips the
 * barrier by advancing the generation, and new arrivals join the next one at once. A
 * waiter learns how its generation ended from a bit per generation (`outcomes`, the last
 * 32 generations): set when it ended broken (abort, reset, a dead party), clear when it
 * was tripped. While the last arrival runs its action (between arrive and trip), new
 * arrivals wait.
 *
 * Waiting parties record their pid (the first PIDS of each generation). Waiters check
 * them now and then; a party that died while waiting breaks the barrier, since the
 * generation can no longer complete as its participants expect.
 */
#include <errno.h>
#include <stdlib.h>

#include "fault.h"
#include "mpx/error.h"
#include "mpx/sync.h"
#include "sync_internal.h"

#define PIDS 32

struct barrier_shared {
    struct mpx__object_header h;
    _Atomic uint32_t guard;   /* owner-recording lock word over the fields below */
    _Atomic uint32_t seq;     /* futex word: bumped on trip, abort and reset */
    uint32_t parties;         /* immutable */
    _Atomic uint32_t gen;     /* current generation */
    _Atomic uint32_t count;   /* arrivals in the current generation */
    _Atomic uint32_t broken;  /* 1 until reset */
    _Atomic uint32_t outcomes; /* bit (g % 32): generation g ended broken */
    uint32_t pids[PIDS];      /* pids of the first arrivals of the current generation */
};

struct mpx_barrier {
    struct mpx__sync_obj obj;
    struct barrier_shared *sh; /* borrowed from obj */
};

MPX__SYNC_HANDLE_FUNCS(barrier, MPX__KIND_BARRIER, struct barrier_shared)

int mpx_barrier_create(mpx_barrier **out, unsigned parties)
{
    if (parties == 0 || parties > MPX__OLOCK_PID_MASK)
        return -EINVAL;
    int r = create_handle(out);
    if (r == 0)
        (*out)->sh->parties = parties;
    return r;
}

static void bump(struct barrier_shared *sh)
{
    atomic_fetch_add_explicit(&sh->seq, 1, memory_order_release);
    mpx__futex_wake(&sh->seq, INT32_MAX);
}

static void set_outcome(struct barrier_shared *sh, uint32_t gen, bool broken)
{
    uint32_t bit = 1u << (gen % 32u);
    if (broken)
        atomic_fetch_or(&sh->outcomes, bit);
    else
        atomic_fetch_and(&sh->outcomes, ~bit);
}

/* Breaks the current generation. Under the guard. */
static void break_locked(struct barrier_shared *sh)
{
    if (!atomic_load(&sh->broken)) {
        atomic_store(&sh->broken, 1);
        set_outcome(sh, atomic_load(&sh->gen), true);
    }
    bump(sh);
}

/* Takes the guard; a guard holder that died may have left the state half-changed, so the
 * barrier is broken then. The guard is held for a few stores only: no deadline, no
 * signals. */
static void guard(struct barrier_shared *sh)
{
    pid_t dead;
    int r;
    do
        r = mpx__olock_acquire(&sh->guard, MPX_FOREVER, MPX__SPIN_NS, &dead);
    while (r == -EINTR);
    MPX__FAULT("barrier.guarded");
    if (r == MPX_EOWNERDEAD)
        break_locked(sh);
}

static void unguard(struct barrier_shared *sh)
{
    mpx__olock_release(&sh->guard);
}

/* True when a party of the current generation has died. Under the guard. */
static bool party_died(struct barrier_shared *sh)
{
    uint32_t n = atomic_load(&sh->count);
    for (uint32_t i = 0; i < n && i < PIDS; i++)
        if (sh->pids[i] && mpx__pid_running((pid_t)sh->pids[i]) == 0)
            return true;
    return false;
}

/* Sleeps on seq (seen as s) until it changes, the deadline passes or a liveness check is
 * due; runs the check then. Returns 0 or -EINTR. */
static int nap(struct barrier_shared *sh, uint32_t s, mpx_deadline_t deadline,
               int64_t *check_at, int64_t *interval)
{
    int r = mpx__futex_wait(&sh->seq, s, mpx__nap_end(deadline, *check_at));
    if (r == -EINTR)
        return r;
    int64_t now = mpx__now_ns();
    if (now >= *check_at) {
        guard(sh);
        if (party_died(sh))
            break_locked(sh);
        unguard(sh);
        *interval = *interval * 2 > MPX__CHECK_MAX_NS ? MPX__CHECK_MAX_NS : *interval * 2;
        *check_at = now + *interval;
    }
    return 0;
}

/* Waits for seq to move on from s, unless the deadline has passed: 0 (look again),
 * -EAGAIN, -ETIMEDOUT or -EINTR. */
static int wait_change(struct barrier_shared *sh, uint32_t s, mpx_deadline_t deadline,
                       int64_t *check_at, int64_t *interval)
{
    if (deadline == MPX_NOWAIT)
        return -EAGAIN;
    if (deadline != MPX_FOREVER && mpx__deadline_passed(deadline))
        return -ETIMEDOUT;
    return nap(sh, s, deadline, check_at, interval);
}

int mpx_barrier_arrive(mpx_barrier *b, mpx_deadline_t deadline, uint64_t *ticket)
{
    if (!b || !ticket)
        return -EINVAL;
    struct barrier_shared *sh = b->sh;
    int64_t interval = MPX__CHECK_FIRST_NS, check_at = mpx__now_ns() + interval;
    for (;;) {
        guard(sh);
        if (atomic_load(&sh->broken)) {
            unguard(sh);
            return MPX_EBROKEN;
        }
        uint32_t n = atomic_load(&sh->count);
        if (n < sh->parties) {
            if (n < PIDS)
                sh->pids[n] = (uint32_t)mpx__self_pid();
            atomic_store(&sh->count, n + 1);
            *ticket = atomic_load(&sh->gen);
            unguard(sh);
            MPX__FAULT("barrier.arrived");
            return (int)n;
        }
        /* The last arrival is running its action: wait for the trip. */
        uint32_t s = atomic_load(&sh->seq);
        unguard(sh);
        int r = wait_change(sh, s, deadline, &check_at, &interval);
        if (r < 0)
            return r;
    }
}

/* How the generation of `ticket` ended, or 1 while it runs. */
static int outcome(struct barrier_shared *sh, uint64_t ticket)
{
    uint32_t gen = atomic_load(&sh->gen);
    if (gen == (uint32_t)ticket)
        return atomic_load(&sh->broken) ? MPX_EBROKEN : 1;
    if (gen - (uint32_t)ticket > 32u)
        return MPX_EBROKEN; /* too old to know: should not happen while a party waits */
    return atomic_load(&sh->outcomes) & (1u << ((uint32_t)ticket % 32u)) ? MPX_EBROKEN : 0;
}

static bool generation_over(const void *ctx)
{
    const uintptr_t *c = ctx;
    return outcome((struct barrier_shared *)c[0], c[1]) != 1;
}

int mpx_barrier_await(mpx_barrier *b, uint64_t ticket, mpx_deadline_t deadline)
{
    if (!b)
        return -EINVAL;
    struct barrier_shared *sh = b->sh;
    uintptr_t ctx[2] = {(uintptr_t)sh, (uintptr_t)ticket};
    mpx__spin_until(generation_over, ctx, deadline == MPX_NOWAIT ? 0 : MPX__SPIN_NS, deadline);
    int64_t interval = MPX__CHECK_FIRST_NS, check_at = mpx__now_ns() + interval;
    for (;;) {
        uint32_t s = atomic_load(&sh->seq);
        int o = outcome(sh, ticket);
        if (o != 1)
            return o;
        int r = wait_change(sh, s, deadline, &check_at, &interval);
        if (r < 0)
            return r;
    }
}

int mpx_barrier_trip(mpx_barrier *b, uint64_t ticket)
{
    if (!b)
        return -EINVAL;
    struct barrier_shared *sh = b->sh;
    guard(sh);
    uint32_t gen = atomic_load(&sh->gen);
    if (gen != (uint32_t)ticket || atomic_load(&sh->broken) ||
        atomic_load(&sh->count) != sh->parties) {
        unguard(sh);
        return MPX_EBROKEN;
    }
    set_outcome(sh, gen, false);
    atomic_store(&sh->count, 0);
    atomic_store(&sh->gen, gen + 1);
    bump(sh);
    unguard(sh);
    return 0;
}

int mpx_barrier_abort(mpx_barrier *b)
{
    if (!b)
        return -EINVAL;
    guard(b->sh);
    break_locked(b->sh);
    unguard(b->sh);
    return 0;
}

int mpx_barrier_reset(mpx_barrier *b)
{
    if (!b)
        return -EINVAL;
    struct barrier_shared *sh = b->sh;
    guard(sh);
    /* Parties waiting in the current generation see it end broken. */
    uint32_t gen = atomic_load(&sh->gen);
    set_outcome(sh, gen, true);
    atomic_store(&sh->count, 0);
    atomic_store(&sh->broken, 0);
    atomic_store(&sh->gen, gen + 1);
    bump(sh);
    unguard(sh);
    return 0;
}

int mpx_barrier_wait(mpx_barrier *b, mpx_deadline_t deadline)
{
    uint64_t ticket;
    int idx = mpx_barrier_arrive(b, deadline, &ticket);
    if (idx < 0) {
        if (idx != MPX_EBROKEN && idx != -EINVAL)
            mpx_barrier_abort(b);
        return idx;
    }
    if ((unsigned)idx == b->sh->parties - 1) {
        int r = mpx_barrier_trip(b, ticket);
        return r < 0 ? r : idx;
    }
    int r = mpx_barrier_await(b, ticket, deadline);
    if (r < 0) {
        if (r != MPX_EBROKEN)
            mpx_barrier_abort(b);
        return r;
    }
    return idx;
}

unsigned mpx_barrier_parties(const mpx_barrier *b)
{
    return b ? b->sh->parties : 0;
}

unsigned mpx_barrier_n_waiting(const mpx_barrier *b)
{
    if (!b || atomic_load(&b->sh->broken))
        return 0;
    uint32_t n = atomic_load(&b->sh->count);
    return n >= b->sh->parties ? 0 : n;
}

int mpx_barrier_broken(const mpx_barrier *b)
{
    return b ? (int)atomic_load(&b->sh->broken) : -EINVAL;
}
