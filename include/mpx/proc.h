/* mpx/proc.h - supervision of child processes.
 *
 * A handle on a child of the calling process, built on a pidfd (Linux 5.3+; waitid on a
 * pidfd needs 5.4): waiting for its end with a deadline, for any or all of many children,
 * or for each of them as it completes; its exit status or terminating signal, by name; and
 * signalling it without the pid-reuse race. Where pidfds are unavailable (or with
 * MPX_CHILD_POLL), a handle falls back to polling waitid() every few milliseconds.
 *
 * These functions do not start processes: fork, posix_spawn or Python start them, and
 * mpx_child_open() adopts the pid. A child is reaped by mpx_child_wait() (unless
 * MPX_CHILD_NOREAP); a child that something else reaped (Python's os.waitpid, say) is
 * reported as ended with an unknown status (-ECHILD from mpx_child_wait()).
 *
 * Waiting functions follow <mpx/common.h>: an absolute deadline, -ETIMEDOUT when it
 * passes, -EAGAIN for MPX_NOWAIT, -EINTR when a signal handler interrupted the wait.
 * Thread-safety: a handle may be waited on from several threads; only one reaps.
 */
#ifndef MPX_PROC_H
#define MPX_PROC_H

#include <stddef.h>
#include <sys/types.h>

#include "common.h"
#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mpx_child mpx_child;

/* How a process ended. */
typedef struct mpx_exit_status {
    int exited;      /* 1: it exited (see code); 0: a signal killed it (see signal) */
    int code;        /* the exit status, 0..255, when exited */
    int signal;      /* the terminating signal when !exited */
    int core_dumped; /* 1 when the kernel wrote a core dump */
} mpx_exit_status;

/* Flags of mpx_child_open(). */
#define MPX_CHILD_POLL 1u /* do not use a pidfd: poll waitid() (tests, old kernels) */

/* Flags of mpx_child_wait(). */
#define MPX_CHILD_NOREAP 1u /* report the end but leave the child to be reaped by others */

/* Adopts `pid`, a child of the calling process (running or ended but not reaped).
 * Returns 0, -EINVAL (pid <= 0, bad flags, out NULL), -ECHILD (no such process, not a
 * child of ours, or already reaped), -ENOMEM, -EMFILE. Never blocks. */
MPX_API int mpx_child_open(mpx_child **out, pid_t pid, unsigned flags);

/* Frees the handle: neither kills nor reaps the child. NULL is ignored. */
MPX_API void mpx_child_destroy(mpx_child *c);

MPX_API pid_t mpx_child_pid(const mpx_child *c);

/* The pidfd (readable once the child has ended; owned by the handle), or -ENOSYS for a
 * polling handle, -EINVAL for NULL. */
MPX_API int mpx_child_fd(const mpx_child *c);

/* 1 when the child has ended (whether or not reaped), 0 while it runs, or a negative
 * error. Never blocks. */
MPX_API int mpx_child_done(mpx_child *c);

/* Waits until the child ends, then reaps it (unless MPX_CHILD_NOREAP) and stores how it
 * ended in *status (may be NULL). After a reap, further calls return the same status at
 * once. Returns 0, -ETIMEDOUT, -EAGAIN, -EINTR, -EINVAL (NULL, unknown flags), or -ECHILD
 * when the child ended but something else reaped it (status unknown). */
MPX_API int mpx_child_wait(mpx_child *c, mpx_deadline_t deadline, mpx_exit_status *status,
                           unsigned flags);

/* Sends `sig` to the child: 0, -ESRCH when it has ended (reaped or not), -EINVAL. A
 * pidfd handle signals through the pidfd, so never a process that reused the pid; a
 * polling handle uses kill(), which is safe only while nobody else may reap the child.
 * Never blocks. */
MPX_API int mpx_child_signal(mpx_child *c, int sig);

/* Waits until at least one of children[0..n) has ended and stores its index in *index
 * (the lowest such index). Does not reap. Returns 0, -EINVAL (n == 0, NULL), -ETIMEDOUT,
 * -EAGAIN, -EINTR, or -ENOMEM (more than 64 children need a poll array on the heap). */
MPX_API int mpx_wait_any(mpx_child *const *children, size_t n, mpx_deadline_t deadline,
                         size_t *index);

/* Waits until every one of children[0..n) has ended (n == 0 returns 0). Does not reap.
 * Returns 0, -EINVAL, -ETIMEDOUT, -EAGAIN, -EINTR, -ENOMEM (as mpx_wait_any). */
MPX_API int mpx_wait_all(mpx_child *const *children, size_t n, mpx_deadline_t deadline);

/* Waits until at least one of fds[0..n) is readable (poll(2) POLLIN, or an error or hang-up
 * condition on it) and sets ready[i] to 1 for each such descriptor, 0 for the others.
 * Meant for completion descriptors other than pidfds (an eventfd a thread writes when it
 * ends) mixed with pidfds (mpx_child_fd), so one wait covers threads and processes. n == 0
 * waits for the deadline alone. 0, -ETIMEDOUT, -EINTR, -EINVAL (NULL arrays with n > 0, a
 * negative descriptor), -ENOMEM. */
MPX_API int mpx_wait_fds(const int *fds, size_t n, mpx_deadline_t deadline,
                         unsigned char *ready);

/* "As completed": hands out each of `n` children once, in the order they end.
 *
 *     mpx_completion *it; mpx_completion_create(&it, children, n);
 *     while ((r = mpx_completion_next(it, deadline, &i)) == 0) { ... children[i] ended ... }
 *     r is -ENOENT once all were handed out (or -ETIMEDOUT, -EAGAIN, -EINTR: call
 *     again; -EINVAL for NULL; -ENOMEM as mpx_wait_any)
 *     mpx_completion_destroy(it);
 *
 * The array is borrowed: it and the handles must outlive the iterator. */
typedef struct mpx_completion mpx_completion;

MPX_API int mpx_completion_create(mpx_completion **out, mpx_child *const *children, size_t n);
MPX_API int mpx_completion_next(mpx_completion *it, mpx_deadline_t deadline, size_t *index);
MPX_API void mpx_completion_destroy(mpx_completion *it);

/* The name of a signal ("SIGKILL"), or NULL for a number that names none. Static string;
 * async-signal-safe. */
MPX_API const char *mpx_signal_name(int sig);

/* Describes an end in words: "exited with status 3", "killed by SIGKILL",
 * "killed by SIGSEGV (core dumped)", "killed by signal 77". Writes at most len bytes
 * including the terminating NUL and returns the length of the full text (as snprintf), or
 * -EINVAL when status is NULL. */
MPX_API int mpx_exit_describe(const mpx_exit_status *status, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* MPX_PROC_H */
