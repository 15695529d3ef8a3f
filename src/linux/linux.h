/* src/linux/linux.h - the thin layer over Linux system calls used by libmpx.
 *
 * This is the only part of libmpx that issues raw system calls or depends on kernel
 * interfaces directly. Every function returns 0 (or a descriptor / count) on success and a
 * negative errno on failure; none of them touches errno in a way callers must look at.
 */
#ifndef MPX_LINUX_H
#define MPX_LINUX_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>
#include <poll.h>
#include <signal.h>

#include "mpx/common.h"

/* ---- clocks and deadlines ---- */

int64_t mpx__now_ns(void);                       /* CLOCK_MONOTONIC */
struct timespec mpx__ts_from_ns(int64_t ns);      /* absolute time to timespec */
bool mpx__deadline_passed(mpx_deadline_t d);

/* Sleeps until the absolute deadline (CLOCK_MONOTONIC). 0, or -EINTR. */
int mpx__sleep_until(mpx_deadline_t deadline);

/* A pause instruction for spin loops. */
static inline void mpx__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

/* ---- futexes (always the shared, non-private flavour: the words live in memfd segments
 * mapped by several processes) ---- */

/* Sleeps while *word == expected, until woken or the absolute monotonic deadline passes.
 * Returns 0 when woken or when *word already differed (-EAGAIN is folded into 0),
 * -ETIMEDOUT, or -EINTR. MPX_FOREVER sleeps without a timeout. */
int mpx__futex_wait(_Atomic uint32_t *word, uint32_t expected, mpx_deadline_t deadline);

/* Wakes up to n sleepers on word (INT32_MAX: all). Returns the number woken or -errno. */
int mpx__futex_wake(_Atomic uint32_t *word, int n);

/* ---- memfd ---- */

/* Creates a memfd (close-on-exec, sealing allowed). Returns the descriptor or -errno. */
int mpx__memfd_create(const char *name);

/* Sets the file size only if it is smaller than `size` (the segments are sealed against
 * shrinking). Returns 0 or -errno. */
int mpx__memfd_grow(int fd, uint64_t size);

/* Seals the memfd against shrinking and against further sealing. */
int mpx__memfd_seal(int fd);

/* 0 when fd is a memfd carrying the seals set by mpx__memfd_seal, else -EBADF / -EINVAL. */
int mpx__memfd_check(int fd);

/* Releases the pages of [off, off+len) back to the system; the file keeps its size and the
 * range reads as zeros afterwards. */
int mpx__memfd_punch(int fd, uint64_t off, uint64_t len);

/* Size of the file behind fd. */
int mpx__fd_size(int fd, uint64_t *size);

/* dup with close-on-exec. Returns the new descriptor or -errno. */
int mpx__dup_cloexec(int fd);

/* ---- pidfd ---- */

/* Opens a pidfd for pid. Returns the descriptor, or -ENOSYS where the kernel has none. */
int mpx__pidfd_open(pid_t pid);

/* Sends sig to the process behind pidfd. */
int mpx__pidfd_send_signal(int pidfd, int sig);

/* Waits until the process behind pidfd has exited (poll for readability) or the deadline
 * passes. 0 when exited, -ETIMEDOUT, -EINTR. */
int mpx__pidfd_wait_exit(int pidfd, mpx_deadline_t deadline);

/* waitid() on a pidfd (P_PIDFD, Linux 5.4) or on a pid, with `options` as waitid's
 * (WEXITED, WNOHANG, WNOWAIT). Returns 0 with *info filled (info->si_pid == 0 when
 * WNOHANG found nothing), or -errno (-ECHILD: not a child, or already reaped). */
int mpx__waitid_pidfd(int pidfd, siginfo_t *info, int options);
int mpx__waitid_pid(pid_t pid, siginfo_t *info, int options);

/* Polls fds until one is ready or the deadline passes: the count of ready ones,
 * -ETIMEDOUT or -EINTR. */
int mpx__poll_until(struct pollfd *fds, size_t n, mpx_deadline_t deadline);

/* 1 if the process exists (running, or exited but not yet reaped: a zombie still counts),
 * 0 if it does not exist, -errno. */
int mpx__pid_alive(pid_t pid);

/* 1 if the process exists and has not exited (a zombie counts as exited), 0 if not,
 * -errno. Reads /proc; falls back to mpx__pid_alive where /proc is unavailable. */
int mpx__pid_running(pid_t pid);

/* ---- the calling process and thread ---- */

/* getpid(), cached (the cache is reset in a fork child). */
pid_t mpx__self_pid(void);

/* True when no process `pid` exists any more (kill(pid, 0) fails with ESRCH). Cheap: one
 * system call; a zombie still exists. */
bool mpx__pid_gone(pid_t pid);

/* ---- eventfd ---- */

int mpx__eventfd(unsigned initval, bool nonblock);
int mpx__eventfd_signal(int fd, uint64_t n);
int mpx__eventfd_drain(int fd, uint64_t *n); /* -EAGAIN when zero and non-blocking */

/* ---- descriptor passing over Unix sockets ---- */

#define MPX__MAX_PASSED_FDS 64

/* Sends `len` bytes (len >= 1) and nfds descriptors in one message. Returns bytes sent or
 * -errno. */
ssize_t mpx__send_fds(int sock, const void *buf, size_t len, const int *fds, int nfds);

/* Receives up to `len` bytes and up to *nfds descriptors (set to the number received, all
 * close-on-exec). Descriptors beyond the room given are closed, never leaked. Returns bytes
 * received (0 at end of stream) or -errno. */
ssize_t mpx__recv_fds(int sock, void *buf, size_t len, int *fds, int *nfds);

#endif /* MPX_LINUX_H */
