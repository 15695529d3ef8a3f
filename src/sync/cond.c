/* Condition variables (docs/sync.md, "Conditions").
 *
 * Not glibc's process-shared condvar, which can hang after a participant dies. The state is
 * a few counters changed only under the caller's lock, plus a futex sequence word:
 *   sleepers  waiters registered and not yet notified;
 *   tokens    notifications granted and not yet taken;
 *   seq       bumped by every notify; waiters sleep on it with the lock released;
 *   sleeping  waiters inside the futex sleep (a waiter that dies there leaves it one too
 *             high, which costs only an unneeded wake system call).
 * notify(n) moves min(n, sleepers) waiters to tokens and wakes that many sleepers. A waiter
 * that wakes re-acquires the lock and takes a token if one is left; otherwise (a token was
 * taken by a waiter that had not yet gone to sleep, which is just as good) it sleeps
 * again. Exactly as many waits return "notified" as notifications were granted.
 *
 * A registry of waiting pids lets notify() forget the waiters of a process that has died
 * (its registrations are removed from sleepers before any token is granted), so a dead
 * waiter never absorbs a notification meant for a live one.
 */
#include <errno.h>
#include <stdlib.h>

#include "fault.h"
#include "mpx/error.h"
#include "mpx/sync.h"
#include "sync_internal.h"

#define REGISTRY 60

struct cond_shared {
    struct mpx__object_header h;
    _Atomic uint32_t seq;
    uint32_t sleepers;
    uint32_t tokens;
    _Atomic uint32_t sleeping; /* waiters in (or entering) the futex sleep, without the lock */
    struct {
        uint32_t pid;
        uint32_t n; /* waiters of that process in wait() */
    } reg[REGISTRY];
};

struct mpx_cond {
    struct mpx__sync_obj obj;
    struct cond_shared *sh; /* borrowed from obj */
};

MPX__SYNC_HANDLE_FUNCS(cond, MPX__KIND_COND, struct cond_shared)

int mpx_cond_create(mpx_cond **out)
{
    return create_handle(out);
}

/* Registry updates, under the lock. A process beyond REGISTRY entries is not tracked. */
static void reg_add(struct cond_shared *sh, uint32_t pid)
{
    int free_slot = -1;
    for (int i = 0; i < REGISTRY; i++) {
        if (sh->reg[i].n && sh->reg[i].pid == pid) {
            sh->reg[i].n++;
            return;
        }
        if (!sh->reg[i].n && free_slot < 0)
            free_slot = i;
    }
    if (free_slot >= 0) {
        sh->reg[free_slot].pid = pid;
        sh->reg[free_slot].n = 1;
    }
}

static void reg_remove(struct cond_shared *sh, uint32_t pid)
{
    for (int i = 0; i < REGISTRY; i++)
        if (sh->reg[i].n && sh->reg[i].pid == pid) {
            sh->reg[i].n--;
            return;
        }
}

/* Forgets the waiters of processes that no longer exist. */
static void sweep_dead(struct cond_shared *sh)
{
    uint32_t me = (uint32_t)mpx__self_pid();
    for (int i = 0; i < REGISTRY; i++) {
        uint32_t n = sh->reg[i].n;
        if (!n || sh->reg[i].pid == me || !mpx__pid_gone((pid_t)sh->reg[i].pid))
            continue;
        sh->reg[i].n = 0;
        uint32_t d = n < sh->sleepers ? n : sh->sleepers;
        sh->sleepers -= d;
        n -= d;
        sh->tokens -= n < sh->tokens ? n : sh->tokens;
    }
}

/* Leaves wait(): takes a token if one is left (notified) or withdraws the registration. */
static bool leave(struct cond_shared *sh, uint32_t me)
{
    reg_remove(sh, me);
    if (sh->tokens > 0) {
        sh->tokens--;
        return true;
    }
    if (sh->sleepers > 0)
        sh->sleepers--;
    return false;
}

int mpx_cond_wait(mpx_cond *c, mpx_lock *lock, mpx_deadline_t deadline, pid_t *dead_owner)
{
    if (!c || !lock)
        return -EINVAL;
    struct cond_shared *sh = c->sh;
    if (mpx_lock_is_mine(lock) != 1)
        return -EPERM;
    uint32_t me = (uint32_t)mpx__self_pid();
    sh->sleepers++;
    reg_add(sh, me);
    MPX__FAULT("cond.wait.registered");
    int outcome = 0;
    pid_t dead = 0;
    for (;;) {
        uint32_t s = atomic_load_explicit(&sh->seq, memory_order_acquire);
        unsigned level;
        int r = mpx__lock_release_all(lock, &level);
        if (r < 0) /* someone released our lock meanwhile: nothing sane to restore */
            return r;
        r = 0;
        if (deadline == MPX_NOWAIT)
            r = -EAGAIN;
        else if (!mpx__spin_while_eq(&sh->seq, s, MPX__SPIN_NS, deadline)) {
            /* Announce the sleep so that notify makes the wake system call only when
             * someone sleeps; either notify sees the count or the futex sees the new seq. */
            atomic_fetch_add(&sh->sleeping, 1);
            r = mpx__futex_wait(&sh->seq, s, deadline);
            atomic_fetch_sub(&sh->sleeping, 1);
        }
        if (mpx__lock_restore(lock, level, &dead) == MPX_EOWNERDEAD)
            outcome = MPX_EOWNERDEAD;
        if (sh->tokens > 0 || r < 0 ||
            (deadline != MPX_FOREVER && mpx__deadline_passed(deadline))) {
            bool notified = leave(sh, me);
            if (outcome == 0 && !notified)
                outcome = r < 0 ? r : -ETIMEDOUT;
            break;
        }
        if (outcome == MPX_EOWNERDEAD) {
            leave(sh, me);
            break;
        }
    }
    if (outcome == MPX_EOWNERDEAD && dead_owner)
        *dead_owner = dead;
    return outcome;
}

int mpx_cond_notify(mpx_cond *c, mpx_lock *lock, unsigned n)
{
    if (!c || !lock)
        return -EINVAL;
    if (mpx_lock_is_mine(lock) != 1)
        return -EPERM;
    struct cond_shared *sh = c->sh;
    if ((sh->sleepers == 0 && sh->tokens == 0) || n == 0)
        return 0;
    sweep_dead(sh);
    uint32_t grant = n < sh->sleepers ? n : sh->sleepers;
    sh->sleepers -= grant;
    sh->tokens += grant;
    MPX__FAULT("cond.notify.granted");
    /* Wake as many sleepers as there are tokens not yet taken, not only those granted now:
     * a notifier that died between granting and waking left its tokens un-woken. */
    if (sh->tokens == 0)
        return 0;
    atomic_fetch_add(&sh->seq, 1);
    if (atomic_load(&sh->sleeping) > 0)
        mpx__futex_wake(&sh->seq, sh->tokens > INT32_MAX ? INT32_MAX : (int)sh->tokens);
    return 0;
}

int mpx_cond_notify_all(mpx_cond *c, mpx_lock *lock)
{
    return mpx_cond_notify(c, lock, UINT32_MAX);
}

unsigned mpx_cond_waiters(const mpx_cond *c)
{
    return c ? c->sh->sleepers + c->sh->tokens : 0;
}
