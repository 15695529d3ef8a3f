/* src/sync/sync_internal.h - what the synchronization objects share: the arena that holds
 * them, the handle every public type embeds, the owner-recording lock word, and the waiting
 * helpers also used by the queue engine.
 */
#ifndef MPX_SYNC_INTERNAL_H
#define MPX_SYNC_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "linux.h"
#include "mpx/common.h"
#include "mpx/sync.h"

/* ---------------------------------------------------------------------------------------
 * Arenas (docs/sync.md, "The arena")
 *
 * An arena is a sealed memfd of ARENA_SIZE bytes cut into SLOT-byte slots. Slot 0 is the
 * arena header; each object takes one or more consecutive slots and starts with an object
 * header. Slots are handed out by a shared bump counter and never reused: the memory is
 * freed by the kernel when the last descriptor and mapping of the arena are gone.
 */

#define MPX__SYNC_SLOT 64u
#define MPX__ARENA_SIZE (64u * 1024u)
#define MPX__ARENA_MAGIC 0x4158504du /* "MPXA" */
#define MPX__ARENA_VERSION 1u

/* Object kinds: the first word of every object. */
#define MPX__KIND_LOCK 0x4b4c584du    /* "MXLK" */
#define MPX__KIND_SEM 0x4d53584du     /* "MXSM" */
#define MPX__KIND_EVENT 0x5645584du   /* "MXEV" */
#define MPX__KIND_COND 0x5643584du    /* "MXCV" */
#define MPX__KIND_BARRIER 0x5242584du /* "MXBR" */

struct mpx__arena_header {
    uint32_t magic;
    uint32_t version;
    uint32_t size;      /* bytes, a multiple of the slot size */
    uint32_t slot_size; /* MPX__SYNC_SLOT */
    _Atomic uint32_t next_slot; /* first never-used slot */
};

struct mpx__object_header {
    uint32_t kind;
    uint32_t nslots;
};

struct mpx__arena; /* a process-local record of one mapped arena */

/* The part of every public handle: which arena, where, and the object's address. */
struct mpx__sync_obj {
    struct mpx__arena *arena; /* a reference on the process-local record */
    uint64_t offset;
    void *p;
};

/* Places a new object of `kind` and `size` bytes (header included) in this process's
 * current arena, creating one when needed. The object's memory is zero apart from its
 * header. 0, -ENOMEM or an error from creating the segment. */
int mpx__sync_alloc(struct mpx__sync_obj *o, uint32_t kind, size_t size);

/* Attaches to the object of `kind` at `offset` in the arena behind `fd` (borrowed). 0,
 * -EINVAL, -EBADF, MPX_EBADSEG, MPX_EVERSION. */
int mpx__sync_attach(struct mpx__sync_obj *o, int fd, uint64_t offset, uint32_t kind,
                     size_t size);

/* Drops the handle's reference on its arena. */
void mpx__sync_detach(struct mpx__sync_obj *o);

/* The arena's descriptor. */
int mpx__sync_fd(const struct mpx__sync_obj *o);

/* The boilerplate of a public handle type `mpx_NAME` whose first member is
 * `struct mpx__sync_obj obj`: attach, destroy, fd, offset, and a static create_handle()
 * for the type's create function. */
#define MPX__SYNC_NEW (-1) /* open_handle(): place a new object instead of attaching */
#define MPX__SYNC_HANDLE_FUNCS(name, KIND, shared_type)                                      \
    static int open_handle(mpx_##name **out, int fd, uint64_t offset)                        \
    {                                                                                        \
        if (!out)                                                                            \
            return -EINVAL;                                                                  \
        mpx_##name *h = calloc(1, sizeof *h);                                                \
        if (!h)                                                                              \
            return -ENOMEM;                                                                  \
        int r = fd == MPX__SYNC_NEW                                                          \
                    ? mpx__sync_alloc(&h->obj, KIND, sizeof(shared_type))                    \
                    : mpx__sync_attach(&h->obj, fd, offset, KIND, sizeof(shared_type));      \
        if (r < 0) {                                                                         \
            free(h);                                                                         \
            return r;                                                                        \
        }                                                                                    \
        h->sh = h->obj.p;                                                                    \
        *out = h;                                                                            \
        return 0;                                                                            \
    }                                                                                        \
    static int create_handle(mpx_##name **out)                                               \
    {                                                                                        \
        return open_handle(out, MPX__SYNC_NEW, 0);                                           \
    }                                                                                        \
    int mpx_##name##_attach(mpx_##name **out, int fd, uint64_t offset)                       \
    {                                                                                        \
        return fd < 0 ? (out ? -EBADF : -EINVAL) : open_handle(out, fd, offset);             \
    }                                                                                        \
    void mpx_##name##_destroy(mpx_##name *h)                                                 \
    {                                                                                        \
        if (!h)                                                                              \
            return;                                                                          \
        mpx__sync_detach(&h->obj);                                                           \
        free(h);                                                                             \
    }                                                                                        \
    int mpx_##name##_fd(const mpx_##name *h)                                                 \
    {                                                                                        \
        return h ? mpx__sync_fd(&h->obj) : -EINVAL;                                          \
    }                                                                                        \
    uint64_t mpx_##name##_offset(const mpx_##name *h)                                        \
    {                                                                                        \
        return h ? h->obj.offset : 0;                                                        \
    }

/* ---------------------------------------------------------------------------------------
 * The owner-recording lock word (docs/sync.md, "Locks")
 *
 * 0 when free; otherwise the holder's pid, with OLOCK_WAITERS set once a waiter may sleep.
 * Used by mpx_lock, as the internal guard of a barrier, and as the queue's lock.
 */

#define MPX__OLOCK_PID_MASK 0x3fffffffu
#define MPX__OLOCK_WAITERS 0x80000000u

/* Acquires the word, spinning for up to spin_ns first. 0, -EAGAIN (MPX_NOWAIT and busy),
 * -ETIMEDOUT, -EINTR, or MPX_EOWNERDEAD (taken over from the dead *dead). */
int mpx__olock_acquire(_Atomic uint32_t *word, mpx_deadline_t deadline, uint32_t spin_ns,
                       pid_t *dead);

/* Takes the word if it is free, without waiting and without looking at a holder. */
static inline bool mpx__olock_try(_Atomic uint32_t *word)
{
    uint32_t c = 0;
    return atomic_compare_exchange_strong_explicit(word, &c, (uint32_t)mpx__self_pid(),
                                                   memory_order_acquire, memory_order_relaxed);
}

/* Frees the word (whoever holds it) and wakes one sleeper. -EPERM when it was free. */
int mpx__olock_release(_Atomic uint32_t *word);

/* For conditions: releases the caller's hold on l completely and stores the level to
 * restore (1 for a plain lock). -EPERM when the caller does not hold it. */
int mpx__lock_release_all(mpx_lock *l, unsigned *level);

/* Re-acquires after mpx__lock_release_all(), ignoring signals and without a deadline. 0 or
 * MPX_EOWNERDEAD (*dead set). */
int mpx__lock_restore(mpx_lock *l, unsigned level, pid_t *dead);

/* ---------------------------------------------------------------------------------------
 * Waiting helpers
 */

/* The default spin before sleeping, in nanoseconds. */
#define MPX__SPIN_NS 50000u

/* Liveness checks of a party that could die while others wait for it (a lock holder, a
 * barrier party): the first after 10 ms of waiting, then at doubling intervals up to
 * 200 ms, so a long wait costs a few system calls a second. */
#define MPX__CHECK_FIRST_NS 10000000
#define MPX__CHECK_MAX_NS 200000000

/* A futex word bumped on every wake, and a flag that sleepers set (under the object's
 * lock) so that wakers know a system call is needed. */
struct mpx__waitword {
    _Atomic uint32_t seq;
    _Atomic uint32_t flag;
};

/* Wakes every sleeper of w if one is flagged (or always, with force). */
static inline void mpx__ww_wake(struct mpx__waitword *w, bool force)
{
    if (force || atomic_load_explicit(&w->flag, memory_order_relaxed)) {
        atomic_store_explicit(&w->flag, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&w->seq, 1, memory_order_release);
        mpx__futex_wake(&w->seq, INT32_MAX);
    }
}

/* Flags a sleeper and returns the sequence number to sleep on. Called under the lock that
 * also covers the wakers' check of the flag. */
static inline uint32_t mpx__ww_arm(struct mpx__waitword *w)
{
    uint32_t s = atomic_load_explicit(&w->seq, memory_order_acquire);
    atomic_store_explicit(&w->flag, 1, memory_order_relaxed);
    return s;
}

/* Polls `holds(ctx)` for up to spin_ns (never past the deadline). True when it held. */
bool mpx__spin_until(bool (*holds)(const void *ctx), const void *ctx, uint32_t spin_ns,
                     mpx_deadline_t deadline);

/* Spins while *word == value, for up to spin_ns. True when the word changed. */
bool mpx__spin_while_eq(const _Atomic uint32_t *word, uint32_t value, uint32_t spin_ns,
                        mpx_deadline_t deadline);

/* The end of the next futex sleep: the deadline, or the next liveness check if sooner. */
static inline mpx_deadline_t mpx__nap_end(mpx_deadline_t deadline, int64_t check_at)
{
    return deadline < check_at ? deadline : check_at;
}

#endif /* MPX_SYNC_INTERNAL_H */
