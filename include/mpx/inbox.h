/* mpx/inbox.h - a parent's inbox: what its children report (log records and outcomes).
 *
 * A parent process owns one inbox. Every child it starts gets the inbox's descriptor and
 * reports through it: log records while it runs (<mpx/log.h> records), then, as its last
 * message, one outcome (the child's result or error, as bytes whose meaning the caller
 * decides). One thread of the parent, the receiver, takes the messages out in order and
 * handles them. The inbox is one unbounded mpx_queue (<mpx/queue.h>), so it has the queue's
 * guarantees:
 *
 *   - Order: a child's messages arrive in the order its sends returned, so its outcome
 *     comes after every record it logged before sending it.
 *   - No loss: a send that returned has committed its message, even if the child is killed
 *     right after; a child killed inside a send leaves the whole message or nothing.
 *   - A send never waits for the receiver (the queue grows instead).
 *
 * One queue for all children lets one parent thread serve any number of them with one
 * futex wait: no descriptor per child to poll, no thread per child.
 *
 * Completion. Each child is named by a 64-bit token the parent chooses (unique within the
 * inbox; pids can be reused). The parent registers the token (mpx_inbox_expect); the
 * receiver calls mpx_inbox_complete(token) once it has handled the child's outcome, and
 * so every record before it. A child that dies without an outcome (a signal, _exit) sends
 * nothing more: whoever learns of the death (typically from its pidfd, <mpx/proc.h>) calls
 * mpx_inbox_flush(token), which puts a GONE marker for the token into the queue. Everything
 * the dead child committed is ahead of that marker, so when the receiver gets the marker
 * it has handled all of the child's messages and completes the token. mpx_inbox_flush
 * waits for that completion, so "the child ended and every record it sent was handled" is
 * one call: the basis of a join() that never returns before the child's last log line.
 *
 * Messages: records use the log encoding (docs/log-channel.md); outcomes and GONE markers
 * are "MPXO" messages (docs/inbox.md). The decoder validates everything: a message that is
 * neither is reported as an error and skipped, never a crash.
 *
 * Deadlines: absolute CLOCK_MONOTONIC nanoseconds (<mpx/common.h>). The completion table
 * is process-local and guarded by a pthread mutex: use the completion functions only in
 * the process that created the inbox (a forked child that supervises children of its own
 * creates its own inbox). Sending is fork-safe: it takes no process-local lock.
 */
#ifndef MPX_INBOX_H
#define MPX_INBOX_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "log.h"

#ifdef __cplusplus
extern "C" {
#endif

/* "MPXO" as the first four bytes of an outcome or GONE message, read as a little-endian
 * uint32; see docs/inbox.md. */
#define MPX_INBOX_MAGIC 0x4f58504du
#define MPX_INBOX_VERSION 1
#define MPX_INBOX_HEAD_SIZE 32u
/* Largest outcome payload. */
#define MPX_INBOX_MAX_PAYLOAD ((uint64_t)1 << 40)

typedef struct mpx_inbox mpx_inbox;

/* What mpx_inbox_recv() delivers. */
enum mpx_inbox_type {
    MPX_INBOX_LOG = 1,     /* a log record: `record` */
    MPX_INBOX_OUTCOME = 2, /* a child's outcome: `token`, `code`, `data`/`len` */
    MPX_INBOX_GONE = 3,    /* the child of `token` ended without an outcome (flush marker) */
};

typedef struct mpx_inbox_msg {
    int type;               /* enum mpx_inbox_type */
    uint32_t code;          /* OUTCOME: the sender's code (its meaning is the caller's) */
    uint64_t token;         /* OUTCOME, GONE */
    mpx_log_record *record; /* LOG: owned by the message */
    void *data;             /* OUTCOME: payload, owned by the message (NULL when len == 0) */
    size_t len;
} mpx_inbox_msg;

/* Creates an inbox in a fresh unbounded queue segment. 0, -EINVAL, -ENOMEM, or the
 * queue's creation errors. */
MPX_API int mpx_inbox_create(mpx_inbox **out);

/* Attaches to the inbox whose queue segment is open as `fd` (borrowed: the handle keeps a
 * duplicate), typically in a child to send. Validates the segment as mpx_queue_attach;
 * a bounded queue is not an inbox (MPX_EBADSEG). */
MPX_API int mpx_inbox_attach(mpx_inbox **out, int fd);

/* The queue segment's descriptor (owned by the handle), e.g. to pass to a child. */
MPX_API int mpx_inbox_fd(const mpx_inbox *ib);

/* Frees the handle and its completion table. Sends nothing. NULL is ignored. */
MPX_API void mpx_inbox_destroy(mpx_inbox *ib);

/* ---- sending (children) ---- */

/* Sends one log record (encoded as mpx_log_encode does). Never waits for the receiver;
 * goes on after a signal. 0, -EINVAL, MPX_ETOOBIG (a field over its limit: nothing sent),
 * -ENOMEM, or the queue's put errors. Thread-safe. */
MPX_API int mpx_inbox_send_log(mpx_inbox *ib, const mpx_log_record *rec);

/* Sends the outcome of the child named `token`: `code` and data[0..len) are delivered as
 * they are. Send it last: it completes the child once the receiver has handled it. Never
 * waits for the receiver; goes on after a signal. 0, -EINVAL (NULL data with len > 0),
 * MPX_ETOOBIG (len > MPX_INBOX_MAX_PAYLOAD), -ENOMEM, or the queue's put errors. */
MPX_API int mpx_inbox_send_outcome(mpx_inbox *ib, uint64_t token, uint32_t code,
                                   const void *data, size_t len);

/* ---- receiving (the parent's one receiver thread) ---- */

/* Receives up to `max` messages into msgs[0..*got), in queue order, waiting until
 * `deadline` for the first one only. A message that is not valid (only possible if
 * something else wrote into the queue) is consumed and skipped: the call reports the
 * valid messages of the batch, or, if the batch held none, MPX_EBADFRAME / MPX_EVERSION.
 * Release each message with mpx_inbox_msg_done(). Errors: -EINVAL, -EAGAIN (MPX_NOWAIT,
 * empty), -ETIMEDOUT, -EINTR, -ENOMEM (the message stays queued), MPX_ECLOSED (the queue
 * was closed through the queue API and is empty), or another of the queue's get errors
 * (then no message is handed out). */
MPX_API int mpx_inbox_recv(mpx_inbox *ib, mpx_inbox_msg *msgs, size_t max, size_t *got,
                           mpx_deadline_t deadline);

/* Decodes buf[0..len), which must be exactly one inbox message (a log record or an "MPXO"
 * message), into *out (release it with mpx_inbox_msg_done). Validates everything and never
 * reads outside the buffer: MPX_EBADFRAME for anything malformed (a log end marker
 * included), MPX_EVERSION for an unknown version, -ENOMEM, -EINVAL. */
MPX_API int mpx_inbox_decode(mpx_inbox_msg *out, const void *buf, size_t len);

/* Frees what a received message owns and zeroes it. NULL is ignored. */
MPX_API void mpx_inbox_msg_done(mpx_inbox_msg *m);

/* ---- completion (the parent) ---- */

/* Registers `token` as a child whose stream is not yet complete. -EEXIST if registered. */
MPX_API int mpx_inbox_expect(mpx_inbox *ib, uint64_t token);

/* Marks the child's stream complete (the receiver handled its outcome or GONE marker) and
 * wakes mpx_inbox_flush() callers. Idempotent; an unknown token is ignored (returns 0):
 * a GONE marker may arrive after the outcome completed the child and it was forgotten. */
MPX_API int mpx_inbox_complete(mpx_inbox *ib, uint64_t token);

/* 1 when complete, 0 when not yet, -ENOENT when `token` is not registered. */
MPX_API int mpx_inbox_is_complete(mpx_inbox *ib, uint64_t token);

/* For a child that has ended (the caller knows: it sends nothing more): waits until its
 * stream is complete. If it is not, the first call puts a GONE marker for `token` behind
 * everything the child sent, which the receiver turns into the completion. Needs the
 * receiver to be running. Waits in the calling process only (no futex, no signal
 * interruption: slice the deadline to check for signals). 0, -ETIMEDOUT, -ENOENT (not
 * registered, or forgotten while waiting), or the put's errors (no marker was put; the
 * next flush tries again). */
MPX_API int mpx_inbox_flush(mpx_inbox *ib, uint64_t token, mpx_deadline_t deadline);

/* Waits until the stream of `token` is complete or descriptor `fd` is readable (typically
 * the child's pidfd: it ended), whichever comes first, without putting any marker: for a
 * child that may still be running, e.g. to return its result as soon as it is handled.
 * `fd` < 0 waits for completion alone. Returns 1 when complete, 0 when `fd` became
 * readable first (then call mpx_inbox_flush: the child ended), -ETIMEDOUT, -EINTR,
 * -ENOENT (not registered, or forgotten meanwhile), -ENOMEM/-EMFILE (no eventfd). The
 * first wait on a token gives its entry an eventfd that completion signals. */
MPX_API int mpx_inbox_wait(mpx_inbox *ib, uint64_t token, int fd, mpx_deadline_t deadline);

/* Removes `token` from the completion table. 0 or -ENOENT. */
MPX_API int mpx_inbox_forget(mpx_inbox *ib, uint64_t token);

#ifdef __cplusplus
}
#endif
#endif /* MPX_INBOX_H */
