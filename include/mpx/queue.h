/* mpx/queue.h - a multi-producer, multi-consumer queue of byte messages in shared memory.
 *
 * The queue lives in one memfd segment (nothing appears in /dev/shm). Any process holding the
 * segment's file descriptor can attach to it; a child created by fork inherits both the
 * descriptor and the mapping, so the handle keeps working there. Messages are arbitrary byte
 * strings of any length (the segment grows as needed); the queue keeps them in FIFO order.
 *
 * Limits: `maxsize` bounds the number of messages (0: unbounded). An unbounded queue never
 * blocks a put. Bytes are limited only by memory.
 *
 * Crash consistency: a process killed at any instant inside any function of this header
 * leaves the queue consistent for every other process: no partial message becomes visible,
 * no committed message is lost, the internal lock is recovered, and sleepers are woken. See
 * docs/queue.md for the argument.
 *
 * Threads: a handle may be used by several threads at once.
 * Deadlines: absolute CLOCK_MONOTONIC nanoseconds (see <mpx/common.h>). With MPX_NOWAIT a
 * function never sleeps and reports -EAGAIN when it would have to wait.
 * Signals: a sleep interrupted by a signal handler returns -EINTR; call again to go on.
 */
#ifndef MPX_QUEUE_H
#define MPX_QUEUE_H

#include <sys/uio.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mpx_queue mpx_queue; /* process-local handle to a shared queue */

typedef struct mpx_queue_options {
    uint64_t maxsize;        /* most messages held at once; 0 = unbounded */
    size_t initial_capacity; /* initial ring size in bytes; 0 = default (256 KiB) */
    uint32_t spin_ns;        /* how long a waiter polls before sleeping; 0 = default (50 us),
                                UINT32_MAX = never spin */
} mpx_queue_options;

enum {
    /* Do not wait for the internal lock: if another thread or process holds it, return
     * -EBUSY at once. Lets a caller that holds a lock of its own (such as Python's GIL)
     * avoid sleeping while holding it. */
    MPX_QUEUE_TRYLOCK = 1u << 0,
};

/* One message made of `iovcnt` pieces that are stored back to back. */
typedef struct mpx_msgv {
    const struct iovec *iov;
    int iovcnt;
} mpx_msgv;

/* Creates a new queue in a fresh memfd segment. `opt` may be NULL for defaults.
 * Errors: -EINVAL (bad option), -ENOMEM, -EMFILE and other memfd/mmap errors. */
MPX_API int mpx_queue_create(mpx_queue **out, const mpx_queue_options *opt);

/* Attaches to the queue whose segment is open as `fd` (the descriptor is duplicated; the
 * caller keeps its own). The shared header is validated: a descriptor that is not a libmpx
 * queue segment, or whose header is damaged, gives MPX_EBADSEG (MPX_EVERSION for a segment
 * of another format version) and never a crash. */
MPX_API int mpx_queue_attach(mpx_queue **out, int fd);

/* Closes this process's handle: unmaps the segment and closes the descriptor. The queue
 * itself lives on while any process still has it open. Not for use while another thread
 * is inside a call on the same handle. NULL is accepted. */
MPX_API void mpx_queue_destroy(mpx_queue *q);

/* The segment's descriptor (owned by the handle), e.g. to pass to another process. */
MPX_API int mpx_queue_fd(const mpx_queue *q);

/* Puts one message. Blocks while the queue holds `maxsize` messages until `deadline`.
 * An unbounded queue never waits for a consumer: when its ring is full the put waits at
 * most 2 ms for room to appear before growing the ring (not at all with MPX_NOWAIT), and
 * otherwise only for the internal lock or for another large put's copy to finish.
 * Errors: -EAGAIN (full, MPX_NOWAIT), -ETIMEDOUT, -EINTR, MPX_ECLOSED, -ENOMEM / -ENOSPC
 * (the segment could not grow), -EINVAL (NULL handle, or NULL data with len > 0). */
MPX_API int mpx_queue_put(mpx_queue *q, const void *data, size_t len, mpx_deadline_t deadline);

/* As mpx_queue_put, for a message gathered from `iovcnt` pieces. */
MPX_API int mpx_queue_putv(mpx_queue *q, const struct iovec *iov, int iovcnt,
                           mpx_deadline_t deadline);

/* Puts `n` messages atomically and contiguously (no other producer's message lands between
 * them) taking the lock once. With a maxsize, waits until there is room for all of them;
 * n > maxsize gives MPX_ETOOBIG. Either all messages are put or none. */
MPX_API int mpx_queue_put_many(mpx_queue *q, const mpx_msgv *msgs, size_t n,
                               mpx_deadline_t deadline);

/* As mpx_queue_put_many, with flags: MPX_QUEUE_TRYLOCK makes the call return -EBUSY
 * instead of waiting for the internal lock (or for another put's copy, or for room that a
 * consumer may free before the ring grows), and -EAGAIN instead of waiting for room under
 * a maxsize. With MPX_QUEUE_TRYLOCK, puts of 256 KiB or more still copy under the lock. */
MPX_API int mpx_queue_put_many_ex(mpx_queue *q, const mpx_msgv *msgs, size_t n, unsigned flags,
                                  mpx_deadline_t deadline);

/* Gets the oldest message into a buffer allocated with malloc(); the caller frees *data.
 * Blocks while the queue is empty until `deadline`.
 * Errors: -EAGAIN (empty, MPX_NOWAIT), -ETIMEDOUT, -EINTR, MPX_ECLOSED (closed and empty),
 * -ENOMEM (the message stays in the queue). */
MPX_API int mpx_queue_get(mpx_queue *q, void **data, size_t *len, mpx_deadline_t deadline);

/* Called with the message bytes; the bytes are valid only during the call. Messages under
 * 256 KiB are handed over while the queue is locked; larger ones without the lock, the
 * message being claimed meanwhile (docs/queue.md). Return 0 to consume the message, or a
 * negative code to leave it in the queue and make the get return that code. Must not call
 * back into the same queue. For a large message the get may return -ECANCELED after `fn`
 * succeeded: the claim was taken back (its process was presumed dead) and the message is
 * still queued; discard what `fn` produced and get again. */
typedef int (*mpx_queue_consume_fn)(void *ctx, const void *msg, size_t len);

/* Gets the oldest message by handing it to `fn` (zero-copy for the reader: `fn` copies it
 * wherever it wants). Blocks while empty until `deadline`, unless flags has
 * MPX_QUEUE_TRYLOCK, in which case it never sleeps. */
MPX_API int mpx_queue_get_with(mpx_queue *q, mpx_queue_consume_fn fn, void *ctx,
                               unsigned flags, mpx_deadline_t deadline);

/* Gets up to `max` messages under one lock, handing each to `fn`. Waits (until `deadline`)
 * only for the first. Stores the number consumed in *got. If `fn` fails on a message after
 * others were consumed, the call returns 0 with those; the failing message stays queued. */
MPX_API int mpx_queue_get_many_with(mpx_queue *q, size_t max, mpx_queue_consume_fn fn,
                                    void *ctx, size_t *got, unsigned flags,
                                    mpx_deadline_t deadline);

enum mpx_queue_event {
    MPX_QUEUE_NONEMPTY = 1, /* at least one message is queued, or the queue is closed */
    MPX_QUEUE_NONFULL = 2,  /* there is room for `n` more messages, or the queue is closed */
    MPX_QUEUE_LOCKABLE = 3, /* the internal lock was free, with no large get in progress */
};

/* Waits, without consuming anything, until `event` holds or `deadline` passes (-ETIMEDOUT).
 * Spins briefly, then sleeps on a futex using no CPU. Used by callers that must do the
 * actual put or get while holding a lock of their own (see MPX_QUEUE_TRYLOCK). `n` is the
 * room wanted for MPX_QUEUE_NONFULL and ignored otherwise. */
MPX_API int mpx_queue_wait(mpx_queue *q, enum mpx_queue_event event, uint64_t n,
                           mpx_deadline_t deadline);

/* The exact number of messages in the queue at one instant. */
MPX_API int mpx_queue_size(mpx_queue *q, uint64_t *n);

/* The maxsize the queue was created with (0 = unbounded). Never blocks. */
MPX_API uint64_t mpx_queue_maxsize(const mpx_queue *q);

/* Bytes the ring can hold now without growing (diagnostics and tests). */
MPX_API int mpx_queue_capacity(mpx_queue *q, uint64_t *bytes);

/* Closes the queue for every process: later puts fail with MPX_ECLOSED, gets drain what is
 * left and then fail with MPX_ECLOSED, and all sleepers are woken. Idempotent. */
MPX_API int mpx_queue_close(mpx_queue *q);

/* 1 if mpx_queue_close was called by any process, else 0 (or a negative error). */
MPX_API int mpx_queue_is_closed(mpx_queue *q);

/* Join support (JoinableQueue): every put adds one unfinished task; task_done removes one
 * (MPX_ETOOMANY if none is left); join waits until no task is unfinished. */
MPX_API int mpx_queue_task_done(mpx_queue *q);
MPX_API int mpx_queue_join(mpx_queue *q, mpx_deadline_t deadline);

/* The number of unfinished tasks (puts not yet matched by task_done). */
MPX_API int mpx_queue_unfinished(mpx_queue *q, uint64_t *n);

#ifdef __cplusplus
}
#endif
#endif /* MPX_QUEUE_H */
