/* tests/c/harness.h - the test runner shared by the C test executables.
 *
 * Modelled on libuv's runner: every test case is a function registered in a table, and the
 * runner runs each case in its own forked child, with a timeout, so that a crash, a hang or
 * an assertion in one case cannot take the others with it.
 *
 *     TEST(queue_fifo) { ... ASSERT_EQ_INT(x, 3); ... }
 *     HELPER(consumer) { ... return 0; }          // runs in a re-executed process
 *
 *     TEST_LIST_START
 *       TEST_ENTRY(queue_fifo)
 *       TEST_ENTRY_TIMEOUT(queue_stress, 60)
 *     TEST_LIST_END
 *     HELPER_LIST_START
 *       HELPER_ENTRY(consumer)
 *     HELPER_LIST_END
 *     TEST_MAIN()
 *
 * Command line: no argument runs every case; NAME... runs the named cases; --list prints the
 * names; --helper NAME ARGS... runs a helper (used by th_spawn_helper, not by people). The
 * last line printed is "N passed, M failed", and the exit status is nonzero if any failed.
 *
 * Each case runs in a fresh process group, and the runner is a child subreaper: when a case
 * ends, any process it left behind (in its group, or orphaned and so re-parented to the
 * runner) is killed, reaped and reported as a failure of that case. A case that returns
 * with a different number of open descriptors than it started with fails too (a queue
 * handle not destroyed, a pipe not closed); in ASan builds LeakSanitizer checks memory.
 *
 * Assertions print file:line and the failed condition to stderr and end the calling process
 * with exit status 1, so they work in the case process and in any process it forks.
 */
#ifndef MPX_TEST_HARNESS_H
#define MPX_TEST_HARNESS_H

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "mpx/error.h"

/* ---- registration ---- */

typedef void (*th_test_fn)(void);
typedef int (*th_helper_fn)(int argc, char **argv);

struct th_test {
    const char *name;
    th_test_fn fn;
    int timeout_s; /* 0: the default (30 s) */
};

struct th_helper {
    const char *name;
    th_helper_fn fn;
};

#define TH_DEFAULT_TIMEOUT_S 30

#define TEST(name) static void test_##name(void)
#define HELPER(name) static int helper_##name(int argc, char **argv)

#define TEST_LIST_START static const struct th_test th_tests[] = {
#define TEST_ENTRY(name) {#name, test_##name, 0},
#define TEST_ENTRY_TIMEOUT(name, seconds) {#name, test_##name, (seconds)},
#define TEST_LIST_END {NULL, NULL, 0}};

#define HELPER_LIST_START static const struct th_helper th_helpers[] = {
#define HELPER_ENTRY(name) {#name, helper_##name},
#define HELPER_LIST_END {NULL, NULL}};

#define TEST_MAIN()                                                                          \
    int main(int argc, char **argv) { return th_main(argc, argv, th_tests, th_helpers); }

int th_main(int argc, char **argv, const struct th_test *tests, const struct th_helper *helpers);

/* ---- assertions ---- */

__attribute__((noreturn, format(printf, 3, 4))) void th_fail(const char *file, int line,
                                                              const char *fmt, ...);

#define ASSERT(cond)                                                                         \
    do {                                                                                     \
        if (!(cond))                                                                         \
            th_fail(__FILE__, __LINE__, "assertion failed: %s", #cond);                      \
    } while (0)

#define ASSERT_MSG(cond, ...)                                                                \
    do {                                                                                     \
        if (!(cond))                                                                         \
            th_fail(__FILE__, __LINE__, __VA_ARGS__);                                        \
    } while (0)

#define TH_ASSERT_CMP(type, fmt, a, op, b)                                                   \
    do {                                                                                     \
        type th_a_ = (type)(a);                                                              \
        type th_b_ = (type)(b);                                                              \
        if (!(th_a_ op th_b_))                                                               \
            th_fail(__FILE__, __LINE__, "assertion failed: %s %s %s (%" fmt " vs %" fmt ")", \
                    #a, #op, #b, th_a_, th_b_);                                              \
    } while (0)

#define ASSERT_EQ_INT(a, b) TH_ASSERT_CMP(intmax_t, PRIdMAX, a, ==, b)
#define ASSERT_NE_INT(a, b) TH_ASSERT_CMP(intmax_t, PRIdMAX, a, !=, b)
#define ASSERT_LT_INT(a, b) TH_ASSERT_CMP(intmax_t, PRIdMAX, a, <, b)
#define ASSERT_LE_INT(a, b) TH_ASSERT_CMP(intmax_t, PRIdMAX, a, <=, b)
#define ASSERT_GT_INT(a, b) TH_ASSERT_CMP(intmax_t, PRIdMAX, a, >, b)
#define ASSERT_GE_INT(a, b) TH_ASSERT_CMP(intmax_t, PRIdMAX, a, >=, b)
#define ASSERT_EQ_UINT(a, b) TH_ASSERT_CMP(uintmax_t, PRIuMAX, a, ==, b)
#define ASSERT_EQ_PTR(a, b) TH_ASSERT_CMP(const void *, "p", a, ==, b)
#define ASSERT_NULL(a) ASSERT_EQ_PTR(a, NULL)
#define ASSERT_NOT_NULL(a) ASSERT_MSG((a) != NULL, "assertion failed: %s != NULL", #a)

#define ASSERT_EQ_STR(a, b)                                                                  \
    do {                                                                                     \
        const char *th_a_ = (a), *th_b_ = (b);                                               \
        if (!th_a_ || !th_b_ || strcmp(th_a_, th_b_) != 0)                                   \
            th_fail(__FILE__, __LINE__, "assertion failed: %s == %s (\"%s\" vs \"%s\")", #a, \
                    #b, th_a_ ? th_a_ : "(null)", th_b_ ? th_b_ : "(null)");                 \
    } while (0)

#define ASSERT_MEM_EQ(a, b, n)                                                               \
    ASSERT_MSG(memcmp((a), (b), (n)) == 0, "assertion failed: %s and %s differ in %zu bytes", \
               #a, #b, (size_t)(n))

/* An int result that must be 0 (or, for calls returning a count or descriptor, >= 0). A
 * negative value is shown with its name and mpx_strerror() text. */
#define ASSERT_OK(expr)                                                                      \
    do {                                                                                     \
        intmax_t th_r_ = (intmax_t)(expr);                                                   \
        if (th_r_ < 0)                                                                       \
            th_fail(__FILE__, __LINE__, "%s failed: %jd %s (%s)", #expr, th_r_,              \
                    mpx_errname((int)th_r_), mpx_strerror((int)th_r_));                      \
    } while (0)

/* An error code that must equal `want` (a negative errno or an MPX_E* code). */
#define ASSERT_ERR(expr, want)                                                               \
    do {                                                                                     \
        intmax_t th_r_ = (intmax_t)(expr), th_w_ = (intmax_t)(want);                         \
        if (th_r_ != th_w_)                                                                  \
            th_fail(__FILE__, __LINE__, "%s: got %jd %s (%s), want %jd %s", #expr, th_r_,    \
                    mpx_errname((int)th_r_), mpx_strerror((int)th_r_), th_w_,                \
                    mpx_errname((int)th_w_));                                                \
    } while (0)

/* A libc call that returns -1 and sets errno on failure. */
#define ASSERT_SYS(expr)                                                                     \
    do {                                                                                     \
        if ((expr) == -1)                                                                    \
            th_fail(__FILE__, __LINE__, "%s failed: %s", #expr, strerror(errno));            \
    } while (0)

/* ---- processes ---- */

/* fork() after flushing stdio, asserting success. The child gets PR_SET_PDEATHSIG=SIGKILL,
 * so it cannot outlive the process that forked it, and it should end with _exit(). */
pid_t th_fork(void);

/* Waits for `pid` to exit for at most `timeout_s` seconds. Returns 0 with the wait status
 * in *status, or -ETIMEDOUT (the child is left running). */
int th_wait_timeout(pid_t pid, double timeout_s, int *status);

/* Waits (at most timeout_s) and asserts that `pid` exited with status 0. On timeout the
 * child is killed and reaped before the assertion fails. */
void th_wait_ok_at(const char *file, int line, pid_t pid, double timeout_s);
#define th_wait_ok(pid, timeout_s) th_wait_ok_at(__FILE__, __LINE__, (pid), (timeout_s))

/* Waits (at most timeout_s) and asserts that `pid` was killed by `sig`. */
void th_wait_signaled_at(const char *file, int line, pid_t pid, int sig, double timeout_s);
#define th_wait_signaled(pid, sig, timeout_s)                                                \
    th_wait_signaled_at(__FILE__, __LINE__, (pid), (sig), (timeout_s))

/* SIGKILLs and reaps `pid` (ignores a pid that already exited). */
void th_kill_reap(pid_t pid);

/* 1 if `pid` has neither exited nor been reaped (a zombie counts as exited). */
bool th_running(pid_t pid);

/* Waits (at most 20 s) until process `pid` sleeps ('S' in /proc/<pid>/stat) and has slept
 * for a while, 20 looks 5 ms apart: a process blocked in a call, past its spin. Fails if
 * it ends instead, or never sleeps. */
void th_wait_asleep_at(const char *file, int line, pid_t pid);
#define th_wait_asleep(pid) th_wait_asleep_at(__FILE__, __LINE__, (pid))

/* Describes a wait status: "exit 0", "exit 3", "signal SIGKILL", "signal SIGSEGV (core)". */
const char *th_status_str(int status, char *buf, size_t len);

/* Runs helper `name` in a fresh process: fork, then exec /proc/self/exe --helper name args...
 * `args` is NULL-terminated (or NULL). The descriptors in keep_fds[0..nkeep) stay open across
 * the exec (their close-on-exec flag is cleared in the child only); `env` (NULL-terminated
 * "K=V" strings, or NULL) is added to the environment. Returns the pid. */
pid_t th_spawn_helper(const char *name, const char *const *args, const int *keep_fds,
                      int nkeep, const char *const *env);

/* ---- time and miscellany ---- */

/* `len` bytes of zeroed anonymous MAP_SHARED memory, which forked children share (it is not
 * a descriptor, so it does not cross an exec). Asserts success; munmap() to free it. */
void *th_shared_alloc(size_t len);

int64_t th_now_ns(void);
void th_sleep_ms(double ms);
/* CPU time (user + system) consumed so far by process `pid`, in milliseconds, from
 * /proc/<pid>/stat. -1 if it cannot be read. */
double th_proc_cpu_ms(pid_t pid);
/* The state letter of /proc/<pid>/stat ('R', 'S', ...), or 0. */
char th_proc_state(pid_t pid);
/* Number of open descriptors of this process. */
int th_count_fds(void);
/* xorshift64* generator, for reproducible random tests. */
uint64_t th_rand(uint64_t *state);

/* Starts a thread running fn(arg); fails the test if it cannot. */
pthread_t th_thread_start(void *(*fn)(void *), void *arg);

/* Joins t, failing the test if it has not ended within 20 s. */
void th_thread_join(pthread_t t);

/* A malloc'd copy of msg[0..len) in a buffer of exactly len bytes (1 when len is 0), so
 * that ASan catches a parser reading past the end. Fails the test when out of memory. */
unsigned char *th_exact_copy(const void *msg, size_t len);

/* Damages buf[0..*len) (*len >= 1) for parser tests: one to four random changes, each a
 * flipped bit, a random byte, a random little-endian 64-bit value, or a truncation (which
 * lowers *len). */
void th_mutate(unsigned char *buf, size_t *len, uint64_t *state);

/* Polls `cond` every millisecond for at most `secs` seconds; fails the test on timeout. */
#define TH_WAIT_FOR(cond, secs)                                                              \
    do {                                                                                     \
        int64_t wf_end_ = th_now_ns() + (int64_t)((secs) * 1e9);                             \
        while (!(cond)) {                                                                    \
            ASSERT_MSG(th_now_ns() < wf_end_, "timed out after %.1f s waiting for %s",       \
                       (double)(secs), #cond);                                               \
            th_sleep_ms(1);                                                                  \
        }                                                                                    \
    } while (0)

/* A call with a deadline want_ns after t0 has returned: fails unless it returned no
 * earlier than the deadline (2 ms of slack for clock granularity) and no later than
 * late_ns after it. */
void th_assert_elapsed_at(const char *file, int line, int64_t t0, int64_t want_ns,
                          int64_t late_ns);
/* A seed from the environment variable TH_SEED, else from the clock (printed once). */
uint64_t th_seed(void);

#endif /* MPX_TEST_HARNESS_H */
