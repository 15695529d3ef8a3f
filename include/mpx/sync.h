/* mpx/sync.h - process-shared synchronization primitives.
 *
 * Locks (plain and recursive), counting and bounded semaphores, condition variables,
 * events and barriers that work between processes. Every object lives in shared memory:
 * a slot of an *arena*, a sealed memfd segment that holds many objects, so creating one
 * costs no system call once the arena exists and needs no descriptor of its own. Nothing
 * is ever created in /dev/shm; the memory goes away when the last process holding the
 * arena's descriptor or mapping goes, however it ends.
 *
 * Sharing: a handle is process-local. To reach another process, send the pair
 * (mpx_*_fd(), mpx_*_offset()) - the descriptor by inheritance, SCM_RIGHTS or
 * pidfd_getfd - and call mpx_*_attach() there. A child created by fork() may use the
 * parent's handles directly. Attaching validates the arena header and the object's kind.
 *
 * Waiting: every blocking call takes an absolute CLOCK_MONOTONIC deadline (see
 * <mpx/common.h>): MPX_FOREVER waits without limit, MPX_NOWAIT tries once and returns
 * -EAGAIN when it would have to wait, any other deadline returns -ETIMEDOUT once passed.
 * A waiter first spins for a few tens of microseconds, then sleeps on a futex and uses no
 * CPU until woken. A signal handler interrupts a sleep: the call returns -EINTR and can be
 * called again with the same deadline.
 *
 * Owners and death (see docs/sync.md):
 *  - A lock records the pid of the process that acquired it. A waiter checks that process
 *    now and then (after 10 ms, then at growing intervals up to 200 ms); if it has exited,
 *    one waiter takes the lock over and gets MPX_EOWNERDEAD with the lock held and the dead
 *    pid reported. The lock then works as usual. A zombie (exited, not yet reaped) counts
 *    as dead. Pids are compared within one pid namespace.
 *  - A semaphore has no owner: a permit taken by a process that dies is not given back.
 *  - A condition forgets a waiter whose process has died and been reaped (at the next
 *    notify), so no notification is spent on it. Up to 60 distinct waiting processes per
 *    condition are tracked; the waiters of further processes work, but their death is not
 *    cleaned up.
 *  - A barrier whose waiting party has died breaks: the others get MPX_EBROKEN instead of
 *    waiting for a party that cannot come.
 *
 * Thread-safety: every function may be called from any thread on a shared handle, except
 * that a handle must not be destroyed while another thread uses it.
 */
#ifndef MPX_SYNC_H
#define MPX_SYNC_H

#include <stdint.h>
#include <sys/types.h>

#include "common.h"
#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest value of a semaphore (the stdlib's SEM_VALUE_MAX on Linux). */
#define MPX_SEM_VALUE_MAX 2147483647u

/* ---------------------------------------------------------------------------------------
 * Locks
 */

typedef struct mpx_lock mpx_lock;

enum mpx_lock_kind {
    /* A plain lock: any thread of any process may release it (it behaves as a binary
     * semaphore, like multiprocessing.Lock). Acquiring it twice without releasing blocks. */
    MPX_LOCK_PLAIN = 0,
    /* A recursive lock: the owning thread may acquire it again; it is free once released
     * as many times. Only the owning thread may release it. */
    MPX_LOCK_RECURSIVE = 1,
};

/* Creates an unlocked lock of `kind` (enum mpx_lock_kind) in this process's current arena.
 * Returns 0, -EINVAL (bad kind or out NULL), -ENOMEM, or an error from creating a segment. */
MPX_API int mpx_lock_create(mpx_lock **out, int kind);

/* Attaches to a lock created elsewhere. `fd` is borrowed: the handle keeps its own
 * descriptor (or reuses a mapping of the same arena already present in this process), so
 * the caller may close fd afterwards. Returns 0, -EINVAL, -EBADF, MPX_EBADSEG (not an
 * arena, or no lock at `offset`), MPX_EVERSION. */
MPX_API int mpx_lock_attach(mpx_lock **out, int fd, uint64_t offset);

/* Frees the handle. The lock itself lives on in the processes that still have it; a lock
 * held by this process stays held. NULL is ignored. */
MPX_API void mpx_lock_destroy(mpx_lock *l);

/* The arena's descriptor (owned by the handle, valid while it lives) and the object's
 * offset in it: what mpx_lock_attach() needs. -EINVAL / 0 for NULL. */
MPX_API int mpx_lock_fd(const mpx_lock *l);
MPX_API uint64_t mpx_lock_offset(const mpx_lock *l);

/* MPX_LOCK_PLAIN or MPX_LOCK_RECURSIVE (-EINVAL for NULL). */
MPX_API int mpx_lock_kind(const mpx_lock *l);

/* Acquires the lock, waiting until `deadline`. Returns 0 when acquired, -EAGAIN
 * (MPX_NOWAIT and busy), -ETIMEDOUT, -EINTR, or MPX_EOWNERDEAD: the previous holder's
 * process died holding it; the caller now holds the lock (count 1 for a recursive lock),
 * and *dead_owner (if not NULL) receives the dead pid. On other returns *dead_owner is not
 * touched. A recursive lock acquired again by its owning thread returns 0 at once. */
MPX_API int mpx_lock_acquire(mpx_lock *l, mpx_deadline_t deadline, pid_t *dead_owner);

/* Releases the lock. A plain lock: -EPERM when it is not locked. A recursive lock: -EPERM
 * when the calling thread does not own it; otherwise drops one level and frees it at zero.
 * Wakes one waiter if any sleeps. Never blocks. */
MPX_API int mpx_lock_release(mpx_lock *l);

/* The pid recorded by the current holder, 0 when free (a snapshot). */
MPX_API pid_t mpx_lock_owner(const mpx_lock *l);

/* 1 when the calling thread owns the recursive lock, or - for a plain lock - when a thread
 * of the calling process holds it; else 0 (-EINVAL for NULL). */
MPX_API int mpx_lock_is_mine(const mpx_lock *l);

/* The recursion level of a recursive lock owned by the calling thread, else 0. For a plain
 * lock: 1 if locked, 0 if free. */
MPX_API unsigned mpx_lock_count(const mpx_lock *l);

/* ---------------------------------------------------------------------------------------
 * Semaphores
 */

typedef struct mpx_sem mpx_sem;

/* Creates a semaphore with `value` permits. `maxvalue` bounds the value: a release that
 * would exceed it fails. A counting semaphore passes MPX_SEM_VALUE_MAX, a bounded one its
 * initial value (0 is allowed: no release ever succeeds). Returns 0 or -EINVAL (value >
 * maxvalue, maxvalue > MPX_SEM_VALUE_MAX, out NULL), -ENOMEM. */
MPX_API int mpx_sem_create(mpx_sem **out, unsigned value, unsigned maxvalue);
MPX_API int mpx_sem_attach(mpx_sem **out, int fd, uint64_t offset);
MPX_API void mpx_sem_destroy(mpx_sem *s);
MPX_API int mpx_sem_fd(const mpx_sem *s);
MPX_API uint64_t mpx_sem_offset(const mpx_sem *s);

/* Takes one permit, waiting until `deadline`. 0, -EAGAIN, -ETIMEDOUT, -EINTR. */
MPX_API int mpx_sem_acquire(mpx_sem *s, mpx_deadline_t deadline);

/* Gives back one permit and wakes one waiter. -EOVERFLOW when the value is already at its
 * maximum (a bounded semaphore released too many times). Never blocks. */
MPX_API int mpx_sem_release(mpx_sem *s);

/* The current value (a snapshot), and the maximum. */
MPX_API unsigned mpx_sem_value(const mpx_sem *s);
MPX_API unsigned mpx_sem_maxvalue(const mpx_sem *s);

/* ---------------------------------------------------------------------------------------
 * Events
 */

typedef struct mpx_event mpx_event;

/* Creates a cleared event. */
MPX_API int mpx_event_create(mpx_event **out);
MPX_API int mpx_event_attach(mpx_event **out, int fd, uint64_t offset);
MPX_API void mpx_event_destroy(mpx_event *e);
MPX_API int mpx_event_fd(const mpx_event *e);
MPX_API uint64_t mpx_event_offset(const mpx_event *e);

/* Sets the flag and wakes every waiter. Never blocks. */
MPX_API int mpx_event_set(mpx_event *e);

/* Clears the flag. Never blocks. */
MPX_API int mpx_event_clear(mpx_event *e);

/* 1 when set, 0 when clear, -EINVAL for NULL. */
MPX_API int mpx_event_is_set(const mpx_event *e);

/* Waits until the flag is set. Returns 0 when it is set or was set at some moment during
 * the wait (a set() followed at once by clear() still releases the waiters), -EAGAIN
 * (MPX_NOWAIT and clear), -ETIMEDOUT, -EINTR. */
MPX_API int mpx_event_wait(mpx_event *e, mpx_deadline_t deadline);

/* ---------------------------------------------------------------------------------------
 * Condition variables
 *
 * A condition is used with a lock (plain or recursive) that the caller holds around wait
 * and notify; the same lock must be used by every participant.
 */

typedef struct mpx_cond mpx_cond;

MPX_API int mpx_cond_create(mpx_cond **out);
MPX_API int mpx_cond_attach(mpx_cond **out, int fd, uint64_t offset);
MPX_API void mpx_cond_destroy(mpx_cond *c);
MPX_API int mpx_cond_fd(const mpx_cond *c);
MPX_API uint64_t mpx_cond_offset(const mpx_cond *c);

/* Releases `lock` (completely, for a recursive lock), waits to be notified or until
 * `deadline`, and re-acquires the lock (to the same recursion level) before returning,
 * whatever the outcome. Returns 0 when notified, -ETIMEDOUT, -EINTR (not notified; the
 * caller may call again), -EPERM when the caller does not hold the lock (nothing done), or
 * MPX_EOWNERDEAD when re-acquiring found the lock's holder dead (the caller holds the lock
 * again; *dead_owner receives the pid if not NULL). Re-acquiring the lock is not
 * interrupted by signals and ignores the deadline. */
MPX_API int mpx_cond_wait(mpx_cond *c, mpx_lock *lock, mpx_deadline_t deadline,
                          pid_t *dead_owner);

/* Wakes up to `n` of the processes and threads waiting on the condition. The caller must
 * hold `lock` (-EPERM otherwise). Waiters whose process has died (and been reaped) are
 * dropped first. Never blocks. */
MPX_API int mpx_cond_notify(mpx_cond *c, mpx_lock *lock, unsigned n);

/* Wakes every waiter. Same rules as mpx_cond_notify(). */
MPX_API int mpx_cond_notify_all(mpx_cond *c, mpx_lock *lock);

/* The number of waiters registered (a snapshot; includes waiters already notified that have
 * not yet returned). */
MPX_API unsigned mpx_cond_waiters(const mpx_cond *c);

/* ---------------------------------------------------------------------------------------
 * Barriers
 *
 * A barrier for `parties` participants, with the semantics of threading.Barrier: every
 * wait returns an arrival index (0 .. parties-1) once all have arrived; a broken barrier
 * makes every current and future wait fail with MPX_EBROKEN until it is reset.
 *
 * The simple call is mpx_barrier_wait(). The three-step form lets the last arrival run an
 * action before the others are released (Python's `action`), and lets a waiter interrupted
 * by a signal resume its wait without arriving twice:
 *     idx = mpx_barrier_arrive(b, deadline, &ticket);
 *     if (idx == parties - 1) { run action; mpx_barrier_trip(b, ticket) or abort }
 *     else r = mpx_barrier_await(b, ticket, deadline);   (repeat on -EINTR)
 */

typedef struct mpx_barrier mpx_barrier;

/* parties >= 1, else -EINVAL. */
MPX_API int mpx_barrier_create(mpx_barrier **out, unsigned parties);
MPX_API int mpx_barrier_attach(mpx_barrier **out, int fd, uint64_t offset);
MPX_API void mpx_barrier_destroy(mpx_barrier *b);
MPX_API int mpx_barrier_fd(const mpx_barrier *b);
MPX_API uint64_t mpx_barrier_offset(const mpx_barrier *b);

/* Waits until all parties have arrived. Returns the arrival index (>= 0), MPX_EBROKEN,
 * -ETIMEDOUT or -EAGAIN (the barrier is broken by this, as threading.Barrier does on a
 * timeout), or -EINTR (also breaks it: the wait cannot be resumed through this call). */
MPX_API int mpx_barrier_wait(mpx_barrier *b, mpx_deadline_t deadline);

/* Arrives at the barrier and stores the generation joined in *ticket. Returns the arrival
 * index; parties-1 means the caller arrived last and must call mpx_barrier_trip() (or
 * mpx_barrier_abort()). Waits (until `deadline`) only while the previous generation is
 * still being released. MPX_EBROKEN when broken, -ETIMEDOUT, -EAGAIN, -EINTR (not
 * arrived). */
MPX_API int mpx_barrier_arrive(mpx_barrier *b, mpx_deadline_t deadline, uint64_t *ticket);

/* Waits for the generation of `ticket` to be released. 0 when released, MPX_EBROKEN when
 * the barrier was broken (abort, reset, or a waiting party died), -ETIMEDOUT / -EAGAIN or
 * -EINTR (still arrived: the caller may wait again, or call mpx_barrier_abort()). */
MPX_API int mpx_barrier_await(mpx_barrier *b, uint64_t ticket, mpx_deadline_t deadline);

/* Releases the generation of `ticket` (called by the last arrival). Returns 0, or
 * MPX_EBROKEN if the barrier broke meanwhile. */
MPX_API int mpx_barrier_trip(mpx_barrier *b, uint64_t ticket);

/* Breaks the barrier: current and future waits fail with MPX_EBROKEN until reset. */
MPX_API int mpx_barrier_abort(mpx_barrier *b);

/* Returns the barrier to its initial state; parties waiting now get MPX_EBROKEN. */
MPX_API int mpx_barrier_reset(mpx_barrier *b);

MPX_API unsigned mpx_barrier_parties(const mpx_barrier *b);
/* Parties arrived and waiting in the current generation (a snapshot). */
MPX_API unsigned mpx_barrier_n_waiting(const mpx_barrier *b);
/* 1 when broken, 0 when not, -EINVAL for NULL. */
MPX_API int mpx_barrier_broken(const mpx_barrier *b);

#ifdef __cplusplus
}
#endif
#endif /* MPX_SYNC_H */
