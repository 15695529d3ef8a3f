/* Tests of child-process supervision (<mpx/proc.h>): adopting a child by pid (with a pidfd,
 * or polling waitid() with MPX_CHILD_POLL), waiting for its end with deadlines, reaping or
 * not (MPX_CHILD_NOREAP), signalling it, waiting for any or all of many children, the
 * "as completed" iterator, and the words for how a process ended.
 *
 * The header is the contract. Most cases run twice, once per mode (NAME_pidfd, NAME_poll).
 * The children are forked by the test and wait on a gate (one byte on a socket) before they
 * act, so that a handle is always opened on a running child and the order in which
 * children end is chosen by the test; where a case needs a wait to really block, the
 * children end by themselves a known time after the gate opens. Every child is reaped and
 * every handle destroyed before a case returns (the harness checks both). Timeouts are
 * short, so the file runs in a few seconds; speed is never asserted beyond generous bounds. */
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "mpx/error.h"
#include "mpx/proc.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

#define MS 1000000LL
#define SEC 1000000000LL

/* ---------------------------------------------------------------------------------------
 * Small tools
 */

static mpx_deadline_t in_ms(int64_t ms) { return mpx_deadline_in(ms * MS); }

#define assert_elapsed(t0, want_ns)                                                        \
    th_assert_elapsed_at(__FILE__, __LINE__, (t0), (want_ns), 2 * SEC)

/* A call that should not block returned quickly (generous: 1 s). */
#define ASSERT_QUICK(t0)                                                                     \
    ASSERT_MSG(th_now_ns() - (t0) < 1 * SEC, "took %.1f ms, want no wait",                   \
               (th_now_ns() - (t0)) / 1e6)

static bool have_pidfd(void)
{
    int fd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

/* 1 if `pid` is a child that has ended and is not reaped yet (a zombie). */
static bool is_zombie(pid_t pid)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid;
}

#define wait_zombie(pid) TH_WAIT_FOR(is_zombie(pid), 10)

/* `pid` was reaped: it is no longer a child of ours. */
#define assert_reaped(pid)                                                                   \
    do {                                                                                     \
        pid_t ar_r_ = waitpid((pid), NULL, WNOHANG);                                         \
        int ar_e_ = errno;                                                                   \
        ASSERT_MSG(ar_r_ == -1 && ar_e_ == ECHILD,                                           \
                   "child %ld was not reaped (waitpid: %ld, %s)", (long)(pid), (long)ar_r_,  \
                   ar_r_ < 0 ? strerror(ar_e_) : "-");                                       \
    } while (0)

static double self_cpu_ms(void)
{
    struct rusage ru;
    ASSERT_SYS(getrusage(RUSAGE_SELF, &ru));
    return (double)ru.ru_utime.tv_sec * 1e3 + (double)ru.ru_utime.tv_usec / 1e3 +
           (double)ru.ru_stime.tv_sec * 1e3 + (double)ru.ru_stime.tv_usec / 1e3;
}

/* ---------------------------------------------------------------------------------------
 * Children behind a gate
 */

typedef void (*kid_fn)(long arg);

struct kid {
    pid_t pid;
    int gate; /* our end of the socket the child waits on; -1 once opened */
};

/* Forks a child that waits until the gate opens (a byte arrives, or our end closes) and then
 * runs fn(arg), which ends the process. Signal dispositions and the mask are reset first
 * (a test run in the background inherits SIGINT ignored, and a case may have a SIGALRM
 * handler installed), and the child says so before this returns: a signal sent to it from
 * then on meets the default action. */
static struct kid kid_spawn(kid_fn fn, long arg)
{
    int sv[2];
    ASSERT_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
    pid_t pid = th_fork();
    if (pid == 0) {
        static const int sigs[] = {SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGUSR1,
                                   SIGUSR2, SIGALRM, SIGPIPE, SIGSEGV, SIGABRT};
        for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
            signal(sigs[i], SIG_DFL);
        sigset_t all;
        sigfillset(&all);
        sigprocmask(SIG_UNBLOCK, &all, NULL);
        close(sv[0]);
        char c = 'r';
        if (write(sv[1], &c, 1) != 1)
            _exit(97);
        ssize_t n;
        do
            n = read(sv[1], &c, 1);
        while (n < 0 && errno == EINTR);
        close(sv[1]);
        fn(arg);
        _exit(99);
    }
    close(sv[1]);
    struct pollfd p = {.fd = sv[0], .events = POLLIN};
    int r;
    do
        r = poll(&p, 1, 10000);
    while (r < 0 && errno == EINTR);
    char c = 0;
    ASSERT_MSG(r == 1 && read(sv[0], &c, 1) == 1 && c == 'r', "child %ld never got ready",
               (long)pid);
    return (struct kid){pid, sv[0]};
}

/* Opens the gate of `k` (once). A child already gone is not an error. */
static void kid_go(struct kid *k)
{
    if (k->gate < 0)
        return;
    char c = 'g';
    ssize_t n = send(k->gate, &c, 1, MSG_NOSIGNAL);
    ASSERT_MSG(n == 1 || (n < 0 && (errno == EPIPE || errno == ECONNRESET)), "send: %s",
               strerror(errno));
    close(k->gate);
    k->gate = -1;
}

static void no_core(void)
{
    struct rlimit rl = {0, 0};
    setrlimit(RLIMIT_CORE, &rl);
    /* A process that is not dumpable never dumps core, even with a piped core_pattern
     * (which ignores RLIMIT_CORE 0). */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

static void act_exit(long code) { _exit((int)code); }

static void act_raise(long sig)
{
    no_core();
    signal((int)sig, SIG_DFL);
    raise((int)sig);
    _exit(98);
}

static void act_abort(long unused)
{
    (void)unused;
    no_core();
    signal(SIGABRT, SIG_DFL);
    abort();
}

static void act_pause(long unused)
{
    (void)unused;
    for (;;)
        pause();
}

/* Sleeps `ms` after the gate opens, then exits with `code`. */
#define DELAY_EXIT(ms, code) (((long)(ms) << 8) | (long)(code))
static void act_delay_exit(long arg)
{
    th_sleep_ms((double)(arg >> 8));
    _exit((int)(arg & 255));
}

/* ---------------------------------------------------------------------------------------
 * Handles and statuses
 */

static mpx_child *child_open(pid_t pid, unsigned mode)
{
    mpx_child *c = NULL;
    ASSERT_OK(mpx_child_open(&c, pid, mode));
    ASSERT_NOT_NULL(c);
    ASSERT_EQ_INT(mpx_child_pid(c), pid);
    return c;
}

static mpx_exit_status exited(int code) { return (mpx_exit_status){1, code, 0, 0}; }
static mpx_exit_status killed(int sig) { return (mpx_exit_status){0, 0, sig, 0}; }

/* A status equals `want`, every field. */
static void assert_status_at(const char *file, int line, const char *what,
                             const mpx_exit_status *st, mpx_exit_status want)
{
    if (st->exited != want.exited || st->code != want.code || st->signal != want.signal ||
        st->core_dumped != want.core_dumped)
        th_fail(file, line,
                "%s: status {exited %d, code %d, signal %d, core_dumped %d}, "
                "want {exited %d, code %d, signal %d, core_dumped %d}",
                what, st->exited, st->code, st->signal, st->core_dumped, want.exited, want.code,
                want.signal, want.core_dumped);
}
#define assert_status(st, want) assert_status_at(__FILE__, __LINE__, #st, (st), (want))

static void assert_text_at(const char *file, int line, const mpx_exit_status *st,
                           const char *want)
{
    char buf[128];
    memset(buf, 'x', sizeof buf);
    int n = mpx_exit_describe(st, buf, sizeof buf);
    if (n != (int)strlen(want) || memchr(buf, 0, sizeof buf) == NULL || strcmp(buf, want) != 0)
        th_fail(file, line, "mpx_exit_describe gave %d \"%.*s\", want %d \"%s\"", n,
                (int)sizeof buf - 1, buf, (int)strlen(want), want);
}
#define assert_text(st, want) assert_text_at(__FILE__, __LINE__, (st), (want))

/* Waits (at most 10 s) for `c`, reaping it, and asserts how it ended. */
static void reap_at(const char *file, int line, mpx_child *c, mpx_exit_status want)
{
    mpx_exit_status st;
    memset(&st, 0x5a, sizeof st);
    int r = mpx_child_wait(c, in_ms(10000), &st, 0);
    if (r != 0)
        th_fail(file, line, "mpx_child_wait(pid %ld): %d %s", (long)mpx_child_pid(c), r,
                mpx_errname(r));
    assert_status_at(file, line, "reaped status", &st, want);
    pid_t pid = mpx_child_pid(c);
    pid_t w = waitpid(pid, NULL, WNOHANG);
    if (!(w == -1 && errno == ECHILD))
        th_fail(file, line, "child %ld not reaped by mpx_child_wait", (long)pid);
}
#define reap(c, want) reap_at(__FILE__, __LINE__, (c), (want))

/* Cases that run in both modes: NAME_pidfd (flags 0) and NAME_poll (MPX_CHILD_POLL). */
#define MODE_TESTS(name)                                                                     \
    static void name(unsigned mode);                                                         \
    TEST(name##_pidfd) { name(0); }                                                          \
    TEST(name##_poll) { name(MPX_CHILD_POLL); }                                              \
    static void name(unsigned mode)
#define MODE_ENTRIES(name) TEST_ENTRY(name##_pidfd) TEST_ENTRY(name##_poll)

/* ---------------------------------------------------------------------------------------
 * Names and words
 */

TEST(signal_names)
{
    ASSERT_EQ_STR(mpx_signal_name(SIGKILL), "SIGKILL");
    ASSERT_EQ_STR(mpx_signal_name(SIGSEGV), "SIGSEGV");
    ASSERT_EQ_STR(mpx_signal_name(SIGTERM), "SIGTERM");
    ASSERT_EQ_STR(mpx_signal_name(SIGINT), "SIGINT");
    ASSERT_EQ_STR(mpx_signal_name(SIGUSR1), "SIGUSR1");
    ASSERT_EQ_STR(mpx_signal_name(SIGUSR2), "SIGUSR2");
    ASSERT_EQ_STR(mpx_signal_name(SIGABRT), "SIGABRT");
    ASSERT_EQ_STR(mpx_signal_name(SIGHUP), "SIGHUP");
    ASSERT_EQ_STR(mpx_signal_name(SIGPIPE), "SIGPIPE");
    ASSERT_EQ_STR(mpx_signal_name(SIGALRM), "SIGALRM");
    ASSERT_EQ_STR(mpx_signal_name(SIGCHLD), "SIGCHLD");
    ASSERT_EQ_STR(mpx_signal_name(SIGBUS), "SIGBUS");
    ASSERT_EQ_STR(mpx_signal_name(SIGSTOP), "SIGSTOP");
    ASSERT_NULL(mpx_signal_name(0));
    ASSERT_NULL(mpx_signal_name(77));
    ASSERT_NULL(mpx_signal_name(-1));
    ASSERT_NULL(mpx_signal_name(INT_MIN));
    ASSERT_NULL(mpx_signal_name(INT_MAX));
    /* A static string: the same text on every call. */
    ASSERT_EQ_PTR(mpx_signal_name(SIGKILL), mpx_signal_name(SIGKILL));
}

TEST(describe_texts)
{
    mpx_exit_status st;
    st = exited(0);
    assert_text(&st, "exited with status 0");
    st = exited(3);
    assert_text(&st, "exited with status 3");
    st = exited(255);
    assert_text(&st, "exited with status 255");
    st = killed(SIGKILL);
    assert_text(&st, "killed by SIGKILL");
    st = killed(SIGTERM);
    assert_text(&st, "killed by SIGTERM");
    st = killed(SIGSEGV);
    assert_text(&st, "killed by SIGSEGV");
    st = killed(SIGABRT);
    assert_text(&st, "killed by SIGABRT");
    st = (mpx_exit_status){0, 0, SIGSEGV, 1};
    assert_text(&st, "killed by SIGSEGV (core dumped)");
    st = (mpx_exit_status){0, 0, SIGABRT, 1};
    assert_text(&st, "killed by SIGABRT (core dumped)");
    st = killed(77);
    assert_text(&st, "killed by signal 77");
    st = (mpx_exit_status){0, 0, 77, 1};
    assert_text(&st, "killed by signal 77 (core dumped)");
}

TEST(describe_truncates_like_snprintf)
{
    const char *full = "exited with status 3";
    const int flen = (int)strlen(full);
    mpx_exit_status st = exited(3);
    char buf[64];

    /* len 0: nothing written, not even a NUL; NULL is allowed as with snprintf. */
    memset(buf, 'x', sizeof buf);
    ASSERT_EQ_INT(mpx_exit_describe(&st, buf, 0), flen);
    ASSERT_EQ_INT(buf[0], 'x');
    ASSERT_EQ_INT(mpx_exit_describe(&st, NULL, 0), flen);

    /* Every shorter length: the first len-1 bytes and a NUL, nothing past buf[len-1]. */
    for (size_t len = 1; len <= (size_t)flen + 2; len++) {
        memset(buf, 'x', sizeof buf);
        ASSERT_EQ_INT(mpx_exit_describe(&st, buf, len), flen);
        size_t want = len - 1 < (size_t)flen ? len - 1 : (size_t)flen;
        ASSERT_EQ_INT(strlen(buf), want);
        ASSERT_MEM_EQ(buf, full, want);
        for (size_t i = len; i < sizeof buf; i++)
            ASSERT_MSG(buf[i] == 'x', "len %zu: byte %zu written", len, i);
    }

    /* The same for a signal text with its suffix. */
    st = (mpx_exit_status){0, 0, SIGSEGV, 1};
    const char *sfull = "killed by SIGSEGV (core dumped)";
    memset(buf, 'x', sizeof buf);
    ASSERT_EQ_INT(mpx_exit_describe(&st, buf, 10), (int)strlen(sfull));
    ASSERT_EQ_STR(buf, "killed by");
    ASSERT_EQ_INT(buf[10], 'x');
}

/* ---------------------------------------------------------------------------------------
 * How children end
 */

struct end_case {
    const char *what;
    kid_fn fn;
    long arg;
    int kill_sig; /* sent with kill() once the gate is open, or 0 */
    mpx_exit_status want;
    const char *text;
};

static const struct end_case end_cases[] = {
    {"exit 0", act_exit, 0, 0, {1, 0, 0, 0}, "exited with status 0"},
    {"exit 3", act_exit, 3, 0, {1, 3, 0, 0}, "exited with status 3"},
    {"_exit(255)", act_exit, 255, 0, {1, 255, 0, 0}, "exited with status 255"},
    {"_exit(261)", act_exit, 261, 0, {1, 5, 0, 0}, "exited with status 5"},
    {"kill SIGKILL", act_pause, 0, SIGKILL, {0, 0, SIGKILL, 0}, "killed by SIGKILL"},
    {"kill SIGTERM", act_pause, 0, SIGTERM, {0, 0, SIGTERM, 0}, "killed by SIGTERM"},
    {"kill SIGINT", act_pause, 0, SIGINT, {0, 0, SIGINT, 0}, "killed by SIGINT"},
    {"kill SIGUSR1", act_pause, 0, SIGUSR1, {0, 0, SIGUSR1, 0}, "killed by SIGUSR1"},
    {"raise SIGKILL", act_raise, SIGKILL, 0, {0, 0, SIGKILL, 0}, "killed by SIGKILL"},
    {"raise SIGTERM", act_raise, SIGTERM, 0, {0, 0, SIGTERM, 0}, "killed by SIGTERM"},
    {"raise SIGSEGV", act_raise, SIGSEGV, 0, {0, 0, SIGSEGV, 0}, "killed by SIGSEGV"},
    {"abort()", act_abort, 0, 0, {0, 0, SIGABRT, 0}, "killed by SIGABRT"},
};

MODE_TESTS(end_statuses)
{
    for (size_t i = 0; i < sizeof end_cases / sizeof end_cases[0]; i++) {
        const struct end_case *ec = &end_cases[i];
        struct kid k = kid_spawn(ec->fn, ec->arg);
        mpx_child *c = child_open(k.pid, mode);
        ASSERT_EQ_INT(mpx_child_done(c), 0);
        kid_go(&k);
        if (ec->kill_sig)
            ASSERT_SYS(kill(k.pid, ec->kill_sig));

        mpx_exit_status st;
        memset(&st, 0x5a, sizeof st);
        int r = mpx_child_wait(c, in_ms(10000), &st, 0);
        ASSERT_MSG(r == 0, "%s: mpx_child_wait: %d %s", ec->what, r, mpx_errname(r));
        assert_status_at(__FILE__, __LINE__, ec->what, &st, ec->want);
        assert_text(&st, ec->text);
        assert_reaped(k.pid);
        ASSERT_EQ_INT(mpx_child_done(c), 1);

        /* Again, without waiting: the same status. */
        mpx_exit_status again;
        memset(&again, 0x33, sizeof again);
        ASSERT_OK(mpx_child_wait(c, MPX_NOWAIT, &again, 0));
        assert_status_at(__FILE__, __LINE__, ec->what, &again, ec->want);
        mpx_child_destroy(c);
    }
}

/* A child that ended before it was adopted (a zombie) is adopted and reported. */
MODE_TESTS(open_zombie)
{
    struct kid k = kid_spawn(act_exit, 6);
    kid_go(&k);
    wait_zombie(k.pid);
    mpx_child *c = child_open(k.pid, mode);
    ASSERT_EQ_INT(mpx_child_done(c), 1);
    int fd = mpx_child_fd(c);
    if (fd >= 0) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ASSERT_EQ_INT(poll(&p, 1, 0), 1);
        ASSERT(p.revents & POLLIN);
    }
    mpx_exit_status st;
    int64_t t0 = th_now_ns();
    ASSERT_OK(mpx_child_wait(c, MPX_NOWAIT, &st, 0));
    ASSERT_QUICK(t0);
    assert_status(&st, exited(6));
    assert_reaped(k.pid);
    mpx_child_destroy(c);
}

/* ---------------------------------------------------------------------------------------
 * Waiting: deadlines, reaping
 */

MODE_TESTS(wait_deadlines)
{
    struct kid k = kid_spawn(act_exit, 5);
    mpx_child *c = child_open(k.pid, mode);
    mpx_exit_status st;

    ASSERT_ERR(mpx_child_wait(c, MPX_NOWAIT, &st, 0), -EAGAIN);
    ASSERT_ERR(mpx_child_wait(c, MPX_NOWAIT, NULL, MPX_CHILD_NOREAP), -EAGAIN);

    int64_t t0 = th_now_ns();
    ASSERT_ERR(mpx_child_wait(c, in_ms(150), &st, 0), -ETIMEDOUT);
    assert_elapsed(t0, 150 * MS);
    t0 = th_now_ns();
    ASSERT_ERR(mpx_child_wait(c, in_ms(60), &st, MPX_CHILD_NOREAP), -ETIMEDOUT);
    assert_elapsed(t0, 60 * MS);
    ASSERT(th_running(k.pid));
    ASSERT_EQ_INT(mpx_child_done(c), 0);

    /* The real end: a wait with a deadline far off returns soon after it. */
    kid_go(&k);
    memset(&st, 0x5a, sizeof st);
    t0 = th_now_ns();
    ASSERT_OK(mpx_child_wait(c, MPX_FOREVER, &st, 0));
    ASSERT_QUICK(t0);
    assert_status(&st, exited(5));
    assert_reaped(k.pid);

    /* After the reap, every further call returns the same status at once, whatever the
     * deadline or flags. */
    mpx_exit_status again;
    for (int i = 0; i < 3; i++) {
        memset(&again, 0x33, sizeof again);
        t0 = th_now_ns();
        mpx_deadline_t d = i == 0 ? MPX_NOWAIT : i == 1 ? in_ms(5000) : MPX_FOREVER;
        ASSERT_OK(mpx_child_wait(c, d, &again, 0));
        ASSERT_QUICK(t0);
        assert_status(&again, exited(5));
    }
    memset(&again, 0x33, sizeof again);
    ASSERT_OK(mpx_child_wait(c, MPX_NOWAIT, &again, MPX_CHILD_NOREAP));
    assert_status(&again, exited(5));
    ASSERT_OK(mpx_child_wait(c, MPX_NOWAIT, NULL, 0));
    ASSERT_EQ_INT(mpx_child_done(c), 1);
    mpx_child_destroy(c);
}

/* mpx_child_done: 0 while running, 1 once ended (before the reap too), and after. */
MODE_TESTS(done_before_and_after)
{
    struct kid k = kid_spawn(act_exit, 2);
    mpx_child *c = child_open(k.pid, mode);
    for (int i = 0; i < 5; i++)
        ASSERT_EQ_INT(mpx_child_done(c), 0);
    kid_go(&k);
    TH_WAIT_FOR(mpx_child_done(c) != 0, 10);
    ASSERT_EQ_INT(mpx_child_done(c), 1);
    /* Done does not reap. */
    ASSERT(is_zombie(k.pid));
    ASSERT_EQ_INT(mpx_child_done(c), 1);
    reap(c, exited(2));
    ASSERT_EQ_INT(mpx_child_done(c), 1);
    mpx_child_destroy(c);
}

/* MPX_CHILD_NOREAP reports the end and leaves the zombie for someone else. What a later
 * reaping wait returns once someone else did reap it: the header says -ECHILD ("the child
 * ended but something else reaped it"); that is what this asserts. */
MODE_TESTS(noreap_leaves_child_to_others)
{
    struct kid k = kid_spawn(act_exit, 9);
    mpx_child *c = child_open(k.pid, mode);
    mpx_exit_status st;
    kid_go(&k);
    memset(&st, 0x5a, sizeof st);
    ASSERT_OK(mpx_child_wait(c, in_ms(10000), &st, MPX_CHILD_NOREAP));
    assert_status(&st, exited(9));
    ASSERT(is_zombie(k.pid));
    memset(&st, 0x5a, sizeof st);
    ASSERT_OK(mpx_child_wait(c, MPX_NOWAIT, &st, MPX_CHILD_NOREAP));
    assert_status(&st, exited(9));
    ASSERT(is_zombie(k.pid));
    ASSERT_EQ_INT(mpx_child_done(c), 1);

    int ws = 0;
    ASSERT_EQ_INT(waitpid(k.pid, &ws, 0), k.pid);
    ASSERT(WIFEXITED(ws) && WEXITSTATUS(ws) == 9);

    ASSERT_EQ_INT(mpx_child_done(c), 1);
    int64_t t0 = th_now_ns();
    ASSERT_ERR(mpx_child_wait(c, in_ms(5000), &st, 0), -ECHILD);
    ASSERT_QUICK(t0);
    ASSERT_ERR(mpx_child_wait(c, MPX_NOWAIT, &st, MPX_CHILD_NOREAP), -ECHILD);
    ASSERT_EQ_INT(mpx_child_done(c), 1);
    mpx_child_destroy(c);
}

/* NOREAP, then a reaping wait: the reap happens, with the same status. */
MODE_TESTS(noreap_then_reap)
{
    struct kid k = kid_spawn(act_exit, 11);
    mpx_child *c = child_open(k.pid, mode);
    mpx_exit_status st;
    kid_go(&k);
    ASSERT_OK(mpx_child_wait(c, in_ms(10000), &st, MPX_CHILD_NOREAP));
    assert_status(&st, exited(11));
    ASSERT(is_zombie(k.pid));
    reap(c, exited(11));
    memset(&st, 0x5a, sizeof st);
    ASSERT_OK(mpx_child_wait(c, MPX_NOWAIT, &st, MPX_CHILD_NOREAP));
    assert_status(&st, exited(11));
    mpx_child_destroy(c);
}

/* A child reaped by someone else (Python's os.waitpid, say): ended, status unknown. */
MODE_TESTS(reaped_elsewhere)
{
    struct kid k = kid_spawn(act_exit, 4);
    mpx_child *c = child_open(k.pid, mode);
    kid_go(&k);
    int ws = 0;
    ASSERT_EQ_INT(waitpid(k.pid, &ws, 0), k.pid);
    ASSERT(WIFEXITED(ws) && WEXITSTATUS(ws) == 4);

    /* The first call after the reap, before the handle learnt of it. */
    ASSERT_ERR(mpx_child_signal(c, SIGTERM), -ESRCH);
    ASSERT_EQ_INT(mpx_child_done(c), 1);
    mpx_exit_status st;
    int64_t t0 = th_now_ns();
    ASSERT_ERR(mpx_child_wait(c, in_ms(5000), &st, 0), -ECHILD);
    ASSERT_QUICK(t0);
    ASSERT_ERR(mpx_child_wait(c, MPX_NOWAIT, &st, 0), -ECHILD);
    ASSERT_ERR(mpx_child_wait(c, MPX_FOREVER, NULL, MPX_CHILD_NOREAP), -ECHILD);
    ASSERT_ERR(mpx_child_signal(c, SIGTERM), -ESRCH);

    /* It counts as ended for the multi-child waits too. */
    size_t idx = 99;
    t0 = th_now_ns();
    ASSERT_OK(mpx_wait_any(&c, 1, in_ms(5000), &idx));
    ASSERT_EQ_INT(idx, 0);
    ASSERT_OK(mpx_wait_all(&c, 1, in_ms(5000)));
    ASSERT_QUICK(t0);
    ASSERT_EQ_INT(mpx_child_done(c), 1);
    mpx_child_destroy(c);
}

/* A child that stops (SIGSTOP) has not ended. */
MODE_TESTS(stopped_child_is_not_ended)
{
    struct kid k = kid_spawn(act_pause, 0);
    mpx_child *c = child_open(k.pid, mode);
    kid_go(&k);
    th_wait_asleep(k.pid);
    ASSERT_OK(mpx_child_signal(c, SIGSTOP));
    TH_WAIT_FOR(th_proc_state(k.pid) == 'T', 10);
    ASSERT_EQ_INT(mpx_child_done(c), 0);
    mpx_exit_status st;
    int64_t t0 = th_now_ns();
    ASSERT_ERR(mpx_child_wait(c, in_ms(100), &st, 0), -ETIMEDOUT);
    assert_elapsed(t0, 100 * MS);
    size_t idx;
    ASSERT_ERR(mpx_wait_any(&c, 1, MPX_NOWAIT, &idx), -EAGAIN);
    ASSERT_OK(mpx_child_signal(c, SIGCONT));
    ASSERT_EQ_INT(mpx_child_done(c), 0);
    ASSERT_OK(mpx_child_signal(c, SIGKILL));
    reap(c, killed(SIGKILL));
    mpx_child_destroy(c);
}

/* ---------------------------------------------------------------------------------------
 * Signalling
 */

MODE_TESTS(signal_child)
{
    struct kid k = kid_spawn(act_pause, 0);
    mpx_child *c = child_open(k.pid, mode);
    kid_go(&k);
    th_wait_asleep(k.pid);

    ASSERT_ERR(mpx_child_signal(NULL, SIGTERM), -EINVAL);
    ASSERT_ERR(mpx_child_signal(c, -1), -EINVAL);
    ASSERT_ERR(mpx_child_signal(c, 100000), -EINVAL);
    ASSERT(th_running(k.pid));

    ASSERT_OK(mpx_child_signal(c, SIGTERM));
    mpx_exit_status st;
    memset(&st, 0x5a, sizeof st);
    ASSERT_OK(mpx_child_wait(c, in_ms(10000), &st, 0));
    assert_status(&st, killed(SIGTERM));
    assert_text(&st, "killed by SIGTERM");
    assert_reaped(k.pid);

    /* Reaped: there is nothing to signal, and nothing else may receive it. */
    ASSERT_ERR(mpx_child_signal(c, SIGTERM), -ESRCH);
    ASSERT_ERR(mpx_child_signal(c, SIGKILL), -ESRCH);
    mpx_child_destroy(c);
}

/* An ended child not yet reaped (a zombie) counts as ended: -ESRCH, and its status is the
 * one it ended with. */
MODE_TESTS(signal_ended_child)
{
    struct kid k = kid_spawn(act_exit, 0);
    mpx_child *c = child_open(k.pid, mode);
    kid_go(&k);
    wait_zombie(k.pid);
    ASSERT_ERR(mpx_child_signal(c, SIGKILL), -ESRCH);
    ASSERT_ERR(mpx_child_signal(c, SIGTERM), -ESRCH);
    reap(c, exited(0));
    mpx_child_destroy(c);
}

/* A thread blocked in mpx_child_wait() sees the end caused by a signal sent from another. */
struct wait_arg {
    mpx_child *c;
    unsigned flags;
    mpx_deadline_t deadline;
    int r;
    mpx_exit_status st;
};

static void *wait_thread(void *p)
{
    struct wait_arg *a = p;
    memset(&a->st, 0x5a, sizeof a->st);
    a->r = mpx_child_wait(a->c, a->deadline, &a->st, a->flags);
    return NULL;
}

MODE_TESTS(signal_wakes_waiting_thread)
{
    struct kid k = kid_spawn(act_pause, 0);
    mpx_child *c = child_open(k.pid, mode);
    kid_go(&k);
    struct wait_arg a = {.c = c, .deadline = in_ms(10000), .r = 1};
    pthread_t t = th_thread_start(wait_thread, &a);
    th_sleep_ms(50);
    ASSERT_OK(mpx_child_signal(c, SIGKILL));
    th_thread_join(t);
    ASSERT_OK(a.r);
    assert_status(&a.st, killed(SIGKILL));
    assert_reaped(k.pid);
    mpx_child_destroy(c);
}

/* ---------------------------------------------------------------------------------------
 * Adopting: errors, descriptors, several handles
 */

static pid_t unused_pid(void)
{
    long max = 32768;
    FILE *f = fopen("/proc/sys/kernel/pid_max", "re");
    if (f) {
        if (fscanf(f, "%ld", &max) != 1)
            max = 32768;
        fclose(f);
    }
    for (long p = max - 1; p > 300; p--)
        if (kill((pid_t)p, 0) < 0 && errno == ESRCH)
            return (pid_t)p;
    ASSERT_MSG(0, "no unused pid found");
    return -1;
}

MODE_TESTS(open_errors)
{
    mpx_child *c = NULL;
    ASSERT_ERR(mpx_child_open(&c, 0, mode), -EINVAL);
    ASSERT_ERR(mpx_child_open(&c, -1, mode), -EINVAL);
    ASSERT_ERR(mpx_child_open(&c, -12345, mode), -EINVAL);
    ASSERT_ERR(mpx_child_open(&c, INT_MIN, mode), -EINVAL);

    struct kid k = kid_spawn(act_exit, 0);
    ASSERT_ERR(mpx_child_open(NULL, k.pid, mode), -EINVAL);
    ASSERT_ERR(mpx_child_open(&c, k.pid, mode | 2u), -EINVAL);
    ASSERT_ERR(mpx_child_open(&c, k.pid, mode | 0x80000000u), -EINVAL);
    ASSERT_ERR(mpx_child_open(&c, k.pid, ~0u), -EINVAL);

    /* Processes that exist but are not our children. */
    ASSERT_ERR(mpx_child_open(&c, getppid(), mode), -ECHILD);
    ASSERT_ERR(mpx_child_open(&c, 1, mode), -ECHILD);
    ASSERT_ERR(mpx_child_open(&c, getpid(), mode), -ECHILD);

    /* A grandchild is not a child. */
    _Atomic int *shared = th_shared_alloc(2 * sizeof(_Atomic int));
    pid_t mid = th_fork();
    if (mid == 0) {
        pid_t g = th_fork();
        if (g == 0)
            for (;;)
                pause();
        shared[0] = (int)g;
        int64_t end = th_now_ns() + 20 * SEC;
        while (!shared[1] && th_now_ns() < end)
            th_sleep_ms(1);
        kill(g, SIGKILL);
        waitpid(g, NULL, 0);
        _exit(0);
    }
    TH_WAIT_FOR(shared[0] != 0, 10);
    ASSERT_ERR(mpx_child_open(&c, (pid_t)shared[0], mode), -ECHILD);
    shared[1] = 1;
    th_wait_ok(mid, 10);
    munmap(shared, 2 * sizeof(_Atomic int));

    /* A child already reaped. */
    struct kid gone = kid_spawn(act_exit, 0);
    kid_go(&gone);
    ASSERT_EQ_INT(waitpid(gone.pid, NULL, 0), gone.pid);
    ASSERT_ERR(mpx_child_open(&c, gone.pid, mode), -ECHILD);

    /* A pid that names no process: -ECHILD (not a child) or -ESRCH (no such process). */
    pid_t none = unused_pid();
    int r = mpx_child_open(&c, none, mode);
    ASSERT_MSG(r == -ECHILD || r == -ESRCH, "open(unused pid %ld): %d %s", (long)none, r,
               mpx_errname(r));

    /* None of the failures left a handle behind (the harness counts descriptors). */
    kid_go(&k);
    th_wait_ok(k.pid, 10);
    mpx_child_destroy(NULL);
}

TEST(child_fd_pidfd)
{
    ASSERT_ERR(mpx_child_fd(NULL), -EINVAL);
    int before = th_count_fds();
    struct kid k = kid_spawn(act_exit, 0);
    mpx_child *c = child_open(k.pid, 0);
    int fd = mpx_child_fd(c);
    if (!have_pidfd()) {
        printf("  (no pidfd on this kernel: flags 0 falls back to polling)\n");
        ASSERT_ERR(fd, -ENOSYS);
    } else {
        ASSERT_GE_INT(fd, 0);
        ASSERT_EQ_INT(th_count_fds(), before + 2); /* the gate and the pidfd */
        ASSERT_EQ_INT(mpx_child_fd(c), fd); /* owned by the handle: the same each time */
        int fl = fcntl(fd, F_GETFD);
        ASSERT_GE_INT(fl, 0);
        ASSERT_MSG(fl & FD_CLOEXEC, "pidfd %d is not close-on-exec", fd);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ASSERT_EQ_INT(poll(&p, 1, 0), 0); /* running: not readable */
        kid_go(&k);
        p.revents = 0;
        ASSERT_EQ_INT(poll(&p, 1, 10000), 1);
        ASSERT(p.revents & POLLIN);
        ASSERT(is_zombie(k.pid)); /* readable does not mean reaped */
    }
    kid_go(&k);
    reap(c, exited(0));
    mpx_child_destroy(c);
    ASSERT_EQ_INT(th_count_fds(), before);
}

TEST(child_fd_poll)
{
    int before = th_count_fds();
    struct kid k = kid_spawn(act_exit, 0);
    mpx_child *c = child_open(k.pid, MPX_CHILD_POLL);
    ASSERT_ERR(mpx_child_fd(c), -ENOSYS);
    kid_go(&k);
    reap(c, exited(0));
    ASSERT_ERR(mpx_child_fd(c), -ENOSYS);
    mpx_child_destroy(c);
    ASSERT_EQ_INT(th_count_fds(), before);
}

/* Open and destroy many handles: no descriptor left (the harness checks), no memory (LSan). */
MODE_TESTS(open_destroy_many)
{
    int before = th_count_fds();
    struct kid k = kid_spawn(act_exit, 1);
    before++; /* the gate */
    for (int i = 0; i < 200; i++) {
        mpx_child *c = child_open(k.pid, mode);
        ASSERT_EQ_INT(mpx_child_done(c), 0);
        mpx_child_destroy(c);
    }
    ASSERT_EQ_INT(th_count_fds(), before);
    kid_go(&k);
    before--;
    wait_zombie(k.pid);
    for (int i = 0; i < 200; i++) {
        mpx_child *c = child_open(k.pid, mode);
        ASSERT_EQ_INT(mpx_child_done(c), 1);
        mpx_child_destroy(c);
    }
    ASSERT_EQ_INT(th_count_fds(), before);
    /* None of them reaped it. */
    ASSERT(is_zombie(k.pid));
    int ws = 0;
    ASSERT_EQ_INT(waitpid(k.pid, &ws, 0), k.pid);
    ASSERT(WIFEXITED(ws) && WEXITSTATUS(ws) == 1);
}

/* Destroying a handle neither kills nor reaps the child. */
MODE_TESTS(destroy_neither_kills_nor_reaps)
{
    struct kid k = kid_spawn(act_exit, 13);
    mpx_child *c = child_open(k.pid, mode);
    mpx_child_destroy(c);
    th_sleep_ms(20);
    ASSERT(th_running(k.pid));
    kid_go(&k);
    int ws = 0;
    ASSERT_EQ_INT(waitpid(k.pid, &ws, 0), k.pid);
    ASSERT(WIFEXITED(ws) && WEXITSTATUS(ws) == 13);

    /* The same after a NOREAP wait. */
    struct kid z = kid_spawn(act_exit, 14);
    c = child_open(z.pid, mode);
    kid_go(&z);
    ASSERT_OK(mpx_child_wait(c, in_ms(10000), NULL, MPX_CHILD_NOREAP));
    mpx_child_destroy(c);
    ASSERT(is_zombie(z.pid));
    ASSERT_EQ_INT(waitpid(z.pid, &ws, 0), z.pid);
    ASSERT(WIFEXITED(ws) && WEXITSTATUS(ws) == 14);
}

/* Two handles on one child: the one that reaps gets the status; to the other, something else
 * reaped it. */
TEST(two_handles_one_child)
{
    for (int first = 0; first < 2; first++) {
        struct kid k = kid_spawn(act_exit, 8);
        mpx_child *a = child_open(k.pid, first ? MPX_CHILD_POLL : 0);
        mpx_child *b = child_open(k.pid, first ? 0 : MPX_CHILD_POLL);
        kid_go(&k);
        reap(a, exited(8));
        ASSERT_EQ_INT(mpx_child_done(b), 1);
        mpx_exit_status st;
        ASSERT_ERR(mpx_child_wait(b, in_ms(5000), &st, 0), -ECHILD);
        ASSERT_ERR(mpx_child_signal(b, SIGTERM), -ESRCH);
        mpx_child_destroy(a);
        mpx_child_destroy(b);
    }
}

/* ---------------------------------------------------------------------------------------
 * Several threads on one handle
 */

/* Waiters on one handle all get the status: only one reaps, and the others must not see
 * -ECHILD for it. One of them asks for NOREAP. */
MODE_TESTS(concurrent_waiters_share_status)
{
    for (int iter = 0; iter < 10; iter++) {
        struct kid k = kid_spawn(act_exit, 7);
        mpx_child *c = child_open(k.pid, mode);
        struct wait_arg a[4];
        pthread_t t[4];
        for (int i = 0; i < 4; i++) {
            a[i] = (struct wait_arg){.c = c, .deadline = in_ms(10000), .r = 1,
                                     .flags = i == 3 ? MPX_CHILD_NOREAP : 0};
            t[i] = th_thread_start(wait_thread, &a[i]);
        }
        th_sleep_ms(iter % 3 * 5);
        kid_go(&k);
        for (int i = 0; i < 4; i++)
            th_thread_join(t[i]);
        for (int i = 0; i < 4; i++) {
            ASSERT_MSG(a[i].r == 0, "iteration %d, waiter %d (flags %u): %d %s", iter, i,
                       a[i].flags, a[i].r, mpx_errname(a[i].r));
            assert_status(&a[i].st, exited(7));
        }
        /* Three waiters reap: it is reaped. */
        assert_reaped(k.pid);
        mpx_child_destroy(c);
    }
}

/* A thread reaping with waitpid() races mpx_child_wait(): exactly one of them gets the
 * status, and the other learns it was reaped (ECHILD); neither hangs. */
struct reaper_arg {
    pid_t pid;
    pid_t r;
    int err;
    int status;
};

static void *reaper_thread(void *p)
{
    struct reaper_arg *a = p;
    do {
        a->r = waitpid(a->pid, &a->status, 0);
        a->err = errno;
    } while (a->r < 0 && a->err == EINTR);
    return NULL;
}

MODE_TESTS(race_with_outside_reaper)
{
    int ours = 0, theirs = 0;
    for (int iter = 0; iter < 10; iter++) {
        struct kid k = kid_spawn(act_exit, 12);
        mpx_child *c = child_open(k.pid, mode);
        struct reaper_arg ra = {.pid = k.pid};
        pthread_t t = th_thread_start(reaper_thread, &ra);
        th_sleep_ms(iter % 3 * 3);
        kid_go(&k);
        mpx_exit_status st;
        memset(&st, 0x5a, sizeof st);
        int r = mpx_child_wait(c, in_ms(10000), &st, 0);
        th_thread_join(t);
        if (r == 0) {
            assert_status(&st, exited(12));
            ASSERT_MSG(ra.r == -1 && ra.err == ECHILD, "both reaped: waitpid gave %ld",
                       (long)ra.r);
            ours++;
        } else {
            ASSERT_ERR(r, -ECHILD);
            ASSERT_EQ_INT(ra.r, k.pid);
            ASSERT(WIFEXITED(ra.status) && WEXITSTATUS(ra.status) == 12);
            theirs++;
        }
        ASSERT_EQ_INT(mpx_child_done(c), 1);
        assert_reaped(k.pid);
        mpx_child_destroy(c);
    }
    printf("  (reaped by mpx_child_wait %d times, by waitpid %d times)\n", ours, theirs);
}

/* ---------------------------------------------------------------------------------------
 * Any, all
 */

static void open_all(mpx_child **c, const struct kid *k, int n, unsigned mode)
{
    for (int i = 0; i < n; i++)
        c[i] = child_open(k[i].pid, mode);
}

static void destroy_all(mpx_child **c, int n)
{
    for (int i = 0; i < n; i++)
        mpx_child_destroy(c[i]);
}

MODE_TESTS(wait_any_arguments)
{
    struct kid k = kid_spawn(act_exit, 0);
    mpx_child *c = child_open(k.pid, mode);
    size_t idx;
    ASSERT_ERR(mpx_wait_any(&c, 0, MPX_NOWAIT, &idx), -EINVAL);
    ASSERT_ERR(mpx_wait_any(NULL, 1, MPX_NOWAIT, &idx), -EINVAL);
    ASSERT_ERR(mpx_wait_any(&c, 1, MPX_NOWAIT, NULL), -EINVAL);
    ASSERT_ERR(mpx_wait_all(NULL, 1, MPX_NOWAIT), -EINVAL);
    ASSERT_OK(mpx_wait_all(&c, 0, MPX_NOWAIT));
    ASSERT_OK(mpx_wait_all(&c, 0, MPX_FOREVER));
    kid_go(&k);
    reap(c, exited(0));
    mpx_child_destroy(c);
}

/* Five children end by themselves in a known order, 150 ms apart; wait_any over the ones
 * still running returns each in turn, no earlier than it ended. */
static const int stagger[5] = {3, 1, 4, 0, 2};
#define STAGGER_MS(rank) (100 + 150 * (rank))

static void spawn_staggered(struct kid *k)
{
    for (int r = 0; r < 5; r++)
        k[stagger[r]] = kid_spawn(act_delay_exit, DELAY_EXIT(STAGGER_MS(r), 10 + stagger[r]));
}

MODE_TESTS(wait_any_staggered)
{
    struct kid k[5];
    mpx_child *c[5];
    spawn_staggered(k);
    open_all(c, k, 5, mode);

    size_t idx = 99;
    ASSERT_ERR(mpx_wait_any(c, 5, MPX_NOWAIT, &idx), -EAGAIN);
    int64_t t0 = th_now_ns();
    ASSERT_ERR(mpx_wait_any(c, 5, in_ms(60), &idx), -ETIMEDOUT);
    assert_elapsed(t0, 60 * MS);

    t0 = th_now_ns();
    for (int i = 0; i < 5; i++)
        kid_go(&k[i]);
    mpx_child *rest[5];
    int map[5];
    size_t n = 5;
    for (int i = 0; i < 5; i++)
        rest[i] = c[i], map[i] = i;
    for (int r = 0; r < 5; r++) {
        idx = 99;
        ASSERT_OK(mpx_wait_any(rest, n, in_ms(10000), &idx));
        ASSERT_LT_INT(idx, n);
        int64_t el = th_now_ns() - t0;
        ASSERT_MSG(map[idx] == stagger[r], "rank %d: wait_any gave child %d, want %d", r,
                   map[idx], stagger[r]);
        ASSERT_MSG(el >= STAGGER_MS(r) * MS, "child %d reported after %.1f ms, before its end",
                   map[idx], el / 1e6);
        /* wait_any does not reap. */
        ASSERT(is_zombie(k[map[idx]].pid));
        ASSERT_EQ_INT(mpx_child_done(rest[idx]), 1);
        reap(rest[idx], exited(10 + map[idx]));
        n--;
        memmove(&rest[idx], &rest[idx + 1], (n - idx) * sizeof rest[0]);
        memmove(&map[idx], &map[idx + 1], (n - idx) * sizeof map[0]);
    }
    destroy_all(c, 5);
}

/* Of several ended children, wait_any names the lowest index; a reaped one still counts. */
MODE_TESTS(wait_any_lowest_index)
{
    struct kid k[5];
    mpx_child *c[5];
    for (int i = 0; i < 5; i++)
        k[i] = kid_spawn(act_exit, 40 + i);
    open_all(c, k, 5, mode);
    size_t idx = 99;

    kid_go(&k[3]);
    wait_zombie(k[3].pid);
    ASSERT_OK(mpx_wait_any(c, 5, MPX_NOWAIT, &idx));
    ASSERT_EQ_INT(idx, 3);
    idx = 99;
    ASSERT_OK(mpx_wait_any(c, 5, in_ms(1000), &idx));
    ASSERT_EQ_INT(idx, 3);
    ASSERT(is_zombie(k[3].pid));

    kid_go(&k[1]);
    wait_zombie(k[1].pid);
    ASSERT_OK(mpx_wait_any(c, 5, MPX_NOWAIT, &idx));
    ASSERT_EQ_INT(idx, 1);
    reap(c[1], exited(41));
    ASSERT_OK(mpx_wait_any(c, 5, MPX_NOWAIT, &idx));
    ASSERT_EQ_INT(idx, 1);
    /* Over c[2..5) only: child 3 is index 1 of the slice. */
    ASSERT_OK(mpx_wait_any(c + 2, 3, MPX_NOWAIT, &idx));
    ASSERT_EQ_INT(idx, 1);
    ASSERT_ERR(mpx_wait_any(c + 4, 1, MPX_NOWAIT, &idx), -EAGAIN);

    for (int i = 0; i < 5; i++)
        kid_go(&k[i]);
    for (int i = 0; i < 5; i++)
        if (i != 1)
            reap(c[i], exited(40 + i));
    destroy_all(c, 5);
}

MODE_TESTS(wait_all_gated)
{
    struct kid k[3];
    mpx_child *c[3];
    for (int i = 0; i < 3; i++)
        k[i] = kid_spawn(act_exit, 30 + i);
    open_all(c, k, 3, mode);

    ASSERT_ERR(mpx_wait_all(c, 3, MPX_NOWAIT), -EAGAIN);
    kid_go(&k[0]);
    kid_go(&k[2]);
    wait_zombie(k[0].pid);
    wait_zombie(k[2].pid);
    ASSERT_ERR(mpx_wait_all(c, 3, MPX_NOWAIT), -EAGAIN);
    int64_t t0 = th_now_ns();
    ASSERT_ERR(mpx_wait_all(c, 3, in_ms(120)), -ETIMEDOUT);
    assert_elapsed(t0, 120 * MS);
    /* The ones that ended are not reaped by it; a reaped one still counts as ended. */
    ASSERT(is_zombie(k[0].pid));
    reap(c[0], exited(30));
    ASSERT_OK(mpx_wait_all(c + 2, 1, MPX_NOWAIT));
    ASSERT_OK(mpx_wait_all(c, 1, MPX_NOWAIT));

    kid_go(&k[1]);
    t0 = th_now_ns();
    ASSERT_OK(mpx_wait_all(c, 3, in_ms(10000)));
    ASSERT_QUICK(t0);
    ASSERT(is_zombie(k[1].pid));
    ASSERT(is_zombie(k[2].pid));
    ASSERT_OK(mpx_wait_all(c, 3, MPX_NOWAIT));
    reap(c[1], exited(31));
    reap(c[2], exited(32));
    ASSERT_OK(mpx_wait_all(c, 3, MPX_NOWAIT));
    destroy_all(c, 3);
}

MODE_TESTS(wait_all_staggered)
{
    struct kid k[5];
    mpx_child *c[5];
    spawn_staggered(k);
    open_all(c, k, 5, mode);
    int64_t t0 = th_now_ns();
    for (int i = 0; i < 5; i++)
        kid_go(&k[i]);
    /* A deadline before the last end: -ETIMEDOUT, with the others ended. */
    ASSERT_ERR(mpx_wait_all(c, 5, t0 + STAGGER_MS(3) * MS), -ETIMEDOUT);
    ASSERT_GE_INT(th_now_ns() - t0, STAGGER_MS(3) * MS - 2 * MS);
    ASSERT_OK(mpx_wait_all(c, 5, in_ms(10000)));
    int64_t el = th_now_ns() - t0;
    ASSERT_MSG(el >= STAGGER_MS(4) * MS, "wait_all returned after %.1f ms, before the last end",
               el / 1e6);
    ASSERT_MSG(el < STAGGER_MS(4) * MS + 2 * SEC, "wait_all returned after %.1f ms", el / 1e6);
    for (int i = 0; i < 5; i++)
        ASSERT(is_zombie(k[i].pid));
    for (int i = 0; i < 5; i++)
        reap(c[i], exited(10 + i));
    destroy_all(c, 5);
}

/* ---------------------------------------------------------------------------------------
 * As completed
 */

TEST(completion_arguments)
{
    struct kid k = kid_spawn(act_exit, 0);
    mpx_child *c = child_open(k.pid, 0);
    mpx_completion *it = NULL;
    ASSERT_ERR(mpx_completion_create(NULL, &c, 1), -EINVAL);
    ASSERT_ERR(mpx_completion_create(&it, NULL, 1), -EINVAL);

    /* n == 0: an empty iteration (or refused). */
    int r = mpx_completion_create(&it, &c, 0);
    if (r == 0) {
        size_t idx;
        ASSERT_ERR(mpx_completion_next(it, MPX_NOWAIT, &idx), -ENOENT);
        ASSERT_ERR(mpx_completion_next(it, MPX_FOREVER, &idx), -ENOENT);
        mpx_completion_destroy(it);
    } else {
        ASSERT_ERR(r, -EINVAL);
    }

    /* Destroyed before the end: nothing leaks (LSan), the child is untouched. */
    ASSERT_OK(mpx_completion_create(&it, &c, 1));
    size_t idx = 99;
    ASSERT_ERR(mpx_completion_next(it, MPX_NOWAIT, &idx), -EAGAIN);
    mpx_completion_destroy(it);
    ASSERT(th_running(k.pid));
    kid_go(&k);
    reap(c, exited(0));
    mpx_child_destroy(c);
}

/* Children released one at a time: handed out in that order, each once, with timeouts in
 * between, reaps interleaved, and -ENOENT at the end. */
MODE_TESTS(completion_gated)
{
    static const int order[5] = {2, 4, 0, 3, 1};
    struct kid k[5];
    mpx_child *c[5];
    for (int i = 0; i < 5; i++)
        k[i] = kid_spawn(act_exit, 20 + i);
    open_all(c, k, 5, mode);
    mpx_completion *it = NULL;
    ASSERT_OK(mpx_completion_create(&it, c, 5));
    ASSERT_NOT_NULL(it);

    size_t idx = 99;
    ASSERT_ERR(mpx_completion_next(it, MPX_NOWAIT, &idx), -EAGAIN);
    int64_t t0 = th_now_ns();
    ASSERT_ERR(mpx_completion_next(it, in_ms(50), &idx), -ETIMEDOUT);
    assert_elapsed(t0, 50 * MS);

    bool reaped[5] = {false};
    for (int r = 0; r < 5; r++) {
        kid_go(&k[order[r]]);
        idx = 99;
        ASSERT_OK(mpx_completion_next(it, in_ms(10000), &idx));
        ASSERT_MSG(idx == (size_t)order[r], "step %d: got %zu, want %d", r, idx, order[r]);
        ASSERT_EQ_INT(mpx_child_done(c[idx]), 1);
        if (r == 1 || r == 3) {
            /* Two handed out, the rest running: a timeout, and no repeat. */
            t0 = th_now_ns();
            ASSERT_ERR(mpx_completion_next(it, in_ms(50), &idx), -ETIMEDOUT);
            assert_elapsed(t0, 50 * MS);
            ASSERT_ERR(mpx_completion_next(it, MPX_NOWAIT, &idx), -EAGAIN);
        }
        if (r % 2 == 0) {
            reap(c[idx], exited(20 + (int)idx));
            reaped[idx] = true;
        }
    }
    t0 = th_now_ns();
    ASSERT_ERR(mpx_completion_next(it, MPX_NOWAIT, &idx), -ENOENT);
    ASSERT_ERR(mpx_completion_next(it, in_ms(5000), &idx), -ENOENT);
    ASSERT_ERR(mpx_completion_next(it, MPX_FOREVER, &idx), -ENOENT);
    ASSERT_QUICK(t0);
    mpx_completion_destroy(it);
    for (int i = 0; i < 5; i++)
        if (!reaped[i])
            reap(c[i], exited(20 + i));
    destroy_all(c, 5);
}

/* Children that end by themselves: handed out in end order, the iterator blocking between. */
MODE_TESTS(completion_staggered)
{
    struct kid k[5];
    mpx_child *c[5];
    spawn_staggered(k);
    open_all(c, k, 5, mode);
    mpx_completion *it = NULL;
    ASSERT_OK(mpx_completion_create(&it, c, 5));
    int64_t t0 = th_now_ns();
    for (int i = 0; i < 5; i++)
        kid_go(&k[i]);
    for (int r = 0; r < 5; r++) {
        size_t idx = 99;
        ASSERT_OK(mpx_completion_next(it, in_ms(10000), &idx));
        int64_t el = th_now_ns() - t0;
        ASSERT_MSG(idx == (size_t)stagger[r], "rank %d: got %zu, want %d", r, idx, stagger[r]);
        ASSERT_MSG(el >= STAGGER_MS(r) * MS, "child %zu handed out after %.1f ms, before its end",
                   idx, el / 1e6);
        reap(c[idx], exited(10 + (int)idx));
    }
    size_t idx;
    ASSERT_ERR(mpx_completion_next(it, MPX_FOREVER, &idx), -ENOENT);
    mpx_completion_destroy(it);
    destroy_all(c, 5);
}

/* Children that ended (reaped or not) before the iterator was created come first, at once. */
MODE_TESTS(completion_already_ended)
{
    struct kid k[3];
    mpx_child *c[3];
    for (int i = 0; i < 3; i++)
        k[i] = kid_spawn(act_exit, 50 + i);
    open_all(c, k, 3, mode);
    kid_go(&k[1]);
    reap(c[1], exited(51)); /* ended and reaped through the handle */
    kid_go(&k[2]);
    wait_zombie(k[2].pid); /* ended, not reaped */

    mpx_completion *it = NULL;
    ASSERT_OK(mpx_completion_create(&it, c, 3));
    size_t a = 99, b = 99;
    int64_t t0 = th_now_ns();
    ASSERT_OK(mpx_completion_next(it, in_ms(5000), &a));
    ASSERT_OK(mpx_completion_next(it, in_ms(5000), &b));
    ASSERT_QUICK(t0);
    ASSERT_MSG((a == 1 && b == 2) || (a == 2 && b == 1), "got %zu then %zu, want 1 and 2", a,
               b);
    t0 = th_now_ns();
    ASSERT_ERR(mpx_completion_next(it, in_ms(50), &a), -ETIMEDOUT);
    assert_elapsed(t0, 50 * MS);
    kid_go(&k[0]);
    ASSERT_OK(mpx_completion_next(it, in_ms(10000), &a));
    ASSERT_EQ_INT(a, 0);
    ASSERT_ERR(mpx_completion_next(it, MPX_NOWAIT, &a), -ENOENT);
    mpx_completion_destroy(it);
    reap(c[0], exited(50));
    reap(c[2], exited(52));
    destroy_all(c, 3);
}

/* Many children ending together (more than 64, the most a wait might keep on its stack):
 * every index exactly once. */
MODE_TESTS(completion_many)
{
    enum { N = 70 };
    struct kid k[N];
    mpx_child *c[N];
    for (int i = 0; i < N; i++)
        k[i] = kid_spawn(act_exit, i);
    open_all(c, k, N, mode);
    mpx_completion *it = NULL;
    ASSERT_OK(mpx_completion_create(&it, c, N));
    size_t idx = 999;
    int64_t t0 = th_now_ns();
    ASSERT_ERR(mpx_wait_any(c, N, in_ms(50), &idx), -ETIMEDOUT);
    assert_elapsed(t0, 50 * MS);
    ASSERT_ERR(mpx_completion_next(it, in_ms(20), &idx), -ETIMEDOUT);
    /* The last one ends first and alone: wait_any blocks on all of them and names it. */
    kid_go(&k[N - 1]);
    ASSERT_OK(mpx_wait_any(c, N, in_ms(10000), &idx));
    ASSERT_EQ_INT(idx, N - 1);
    int seen[N] = {0};
    idx = 999;
    ASSERT_OK(mpx_completion_next(it, in_ms(10000), &idx));
    ASSERT_EQ_INT(idx, N - 1);
    seen[N - 1] = 1;
    for (int i = N - 2; i >= 0; i--)
        kid_go(&k[i]);
    for (int i = 1; i < N; i++) {
        idx = 999;
        ASSERT_OK(mpx_completion_next(it, in_ms(10000), &idx));
        ASSERT_LT_INT(idx, N);
        ASSERT_MSG(seen[idx] == 0, "index %zu handed out twice", idx);
        seen[idx] = 1;
        ASSERT_EQ_INT(mpx_child_done(c[idx]), 1);
    }
    ASSERT_ERR(mpx_completion_next(it, MPX_NOWAIT, &idx), -ENOENT);
    mpx_completion_destroy(it);
    ASSERT_OK(mpx_wait_all(c, N, MPX_NOWAIT));
    for (int i = 0; i < N; i++)
        reap(c[i], exited(i));
    destroy_all(c, N);
}

/* pidfd handles and polling handles in one set. */
TEST(mixed_modes)
{
    enum { N = 4 };
    static const unsigned modes[N] = {0, MPX_CHILD_POLL, 0, MPX_CHILD_POLL};
    /* End order 1 (poll), 2 (pidfd), 3 (poll), 0 (pidfd). */
    static const int delay_ms[N] = {550, 100, 250, 400};
    struct kid k[N];
    mpx_child *c[N];
    for (int i = 0; i < N; i++) {
        k[i] = kid_spawn(act_delay_exit, DELAY_EXIT(delay_ms[i], 60 + i));
        c[i] = child_open(k[i].pid, modes[i]);
    }
    size_t idx = 99;
    ASSERT_ERR(mpx_wait_any(c, N, MPX_NOWAIT, &idx), -EAGAIN);
    ASSERT_ERR(mpx_wait_all(c, N, MPX_NOWAIT), -EAGAIN);
    mpx_completion *it = NULL;
    ASSERT_OK(mpx_completion_create(&it, c, N));
    int64_t t0 = th_now_ns();
    for (int i = 0; i < N; i++)
        kid_go(&k[i]);

    /* The first end, a polling child, wakes wait_any among pidfd children. */
    ASSERT_OK(mpx_wait_any(c, N, in_ms(10000), &idx));
    ASSERT_EQ_INT(idx, 1);
    ASSERT_GE_INT(th_now_ns() - t0, 100 * MS);
    static const int order[N] = {1, 2, 3, 0};
    for (int r = 0; r < N; r++) {
        ASSERT_OK(mpx_completion_next(it, in_ms(10000), &idx));
        ASSERT_MSG(idx == (size_t)order[r], "rank %d: got %zu, want %d", r, idx, order[r]);
        ASSERT_GE_INT(th_now_ns() - t0, delay_ms[idx] * MS);
    }
    ASSERT_ERR(mpx_completion_next(it, MPX_NOWAIT, &idx), -ENOENT);
    mpx_completion_destroy(it);
    ASSERT_OK(mpx_wait_all(c, N, MPX_NOWAIT));
    for (int i = 0; i < N; i++)
        reap(c[i], exited(60 + i));
    destroy_all(c, N);
}

/* ---------------------------------------------------------------------------------------
 * Interruptions and cost
 */

static volatile sig_atomic_t alarms;
static void on_alarm(int sig)
{
    (void)sig;
    alarms++;
}

/* SIGALRM every 50 ms from 100 ms on, with a handler installed without SA_RESTART. It
 * repeats so that a polling wait, which sleeps most but not all of the time, is surely
 * interrupted while it sleeps. */
static void alarm_start(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    ASSERT_SYS(sigaction(SIGALRM, &sa, NULL));
    alarms = 0;
    struct itimerval it = {.it_interval = {0, 50000}, .it_value = {0, 100000}};
    ASSERT_SYS(setitimer(ITIMER_REAL, &it, NULL));
}

static void alarm_stop(void)
{
    struct itimerval it;
    memset(&it, 0, sizeof it);
    ASSERT_SYS(setitimer(ITIMER_REAL, &it, NULL));
    /* SIG_IGN, not SIG_DFL: discards a SIGALRM still pending instead of dying of it. */
    signal(SIGALRM, SIG_IGN);
}

#define ASSERT_EINTR(call)                                                                   \
    do {                                                                                     \
        alarm_start();                                                                       \
        int64_t ei_t0_ = th_now_ns();                                                        \
        int ei_r_ = (call);                                                                  \
        int64_t ei_el_ = th_now_ns() - ei_t0_;                                               \
        alarm_stop();                                                                        \
        ASSERT_MSG(ei_r_ == -EINTR, "%s: got %d %s after %.1f ms (%d alarms), want -EINTR",  \
                   #call, ei_r_, mpx_errname(ei_r_), ei_el_ / 1e6, (int)alarms);             \
        ASSERT_GE_INT(alarms, 1);                                                            \
        ASSERT_GE_INT(ei_el_, 95 * MS);                                                      \
    } while (0)

MODE_TESTS(eintr)
{
    struct kid k[3];
    mpx_child *c[3];
    for (int i = 0; i < 3; i++)
        k[i] = kid_spawn(act_exit, 70 + i);
    open_all(c, k, 3, mode);
    mpx_completion *it = NULL;
    ASSERT_OK(mpx_completion_create(&it, c, 3));
    mpx_exit_status st;
    size_t idx;

    ASSERT_EINTR(mpx_child_wait(c[0], in_ms(3000), &st, 0));
    ASSERT_EINTR(mpx_child_wait(c[0], in_ms(3000), &st, MPX_CHILD_NOREAP));
    ASSERT_EINTR(mpx_wait_any(c, 3, in_ms(3000), &idx));
    ASSERT_EINTR(mpx_wait_all(c, 3, in_ms(3000)));
    ASSERT_EINTR(mpx_completion_next(it, in_ms(3000), &idx));

    /* Nothing changed: the children run, and every call works again. */
    for (int i = 0; i < 3; i++)
        ASSERT(th_running(k[i].pid));
    ASSERT_ERR(mpx_child_wait(c[0], MPX_NOWAIT, &st, 0), -EAGAIN);
    for (int i = 0; i < 3; i++)
        kid_go(&k[i]);
    bool seen[3] = {false};
    for (int i = 0; i < 3; i++) {
        ASSERT_OK(mpx_completion_next(it, in_ms(10000), &idx));
        ASSERT_LT_INT(idx, 3);
        ASSERT(!seen[idx]);
        seen[idx] = true;
    }
    ASSERT_ERR(mpx_completion_next(it, MPX_NOWAIT, &idx), -ENOENT);
    mpx_completion_destroy(it);
    for (int i = 0; i < 3; i++)
        reap(c[i], exited(70 + i));
    destroy_all(c, 3);
}

/* A process waiting through a pidfd sleeps: no CPU over a second of waiting. */
TEST(pidfd_waiting_uses_no_cpu)
{
    if (!have_pidfd()) {
        printf("  (skipped: no pidfd on this kernel)\n");
        return;
    }
    struct kid k[3];
    mpx_child *c[3];
    for (int i = 0; i < 3; i++)
        k[i] = kid_spawn(act_exit, 0);
    open_all(c, k, 3, 0);
    mpx_completion *it = NULL;
    ASSERT_OK(mpx_completion_create(&it, c, 3));
    mpx_exit_status st;
    size_t idx;

    double cpu = self_cpu_ms();
    ASSERT_ERR(mpx_child_wait(c[0], in_ms(1000), &st, 0), -ETIMEDOUT);
    double used = self_cpu_ms() - cpu;
    ASSERT_MSG(used < 20, "mpx_child_wait used %.1f ms of CPU in 1 s", used);

    cpu = self_cpu_ms();
    ASSERT_ERR(mpx_wait_any(c, 3, in_ms(400), &idx), -ETIMEDOUT);
    ASSERT_ERR(mpx_wait_all(c, 3, in_ms(300)), -ETIMEDOUT);
    ASSERT_ERR(mpx_completion_next(it, in_ms(300), &idx), -ETIMEDOUT);
    used = self_cpu_ms() - cpu;
    ASSERT_MSG(used < 20, "wait_any/all/completion used %.1f ms of CPU in 1 s", used);

    mpx_completion_destroy(it);
    for (int i = 0; i < 3; i++)
        kid_go(&k[i]);
    for (int i = 0; i < 3; i++)
        reap(c[i], exited(0));
    destroy_all(c, 3);
}

/* A polling handle polls "every few milliseconds": not a busy loop, and it notices an end
 * soon. The bounds are loose. */
TEST(poll_waiting_is_not_a_busy_loop)
{
    struct kid k = kid_spawn(act_delay_exit, DELAY_EXIT(0, 0));
    mpx_child *c = child_open(k.pid, MPX_CHILD_POLL);
    mpx_exit_status st;
    double cpu = self_cpu_ms();
    ASSERT_ERR(mpx_child_wait(c, in_ms(1000), &st, 0), -ETIMEDOUT);
    double used = self_cpu_ms() - cpu;
    ASSERT_MSG(used < 300, "polling mpx_child_wait used %.1f ms of CPU in 1 s", used);
    kid_go(&k);
    int64_t t0 = th_now_ns();
    ASSERT_OK(mpx_child_wait(c, in_ms(10000), &st, 0));
    int64_t el = th_now_ns() - t0;
    ASSERT_MSG(el < 500 * MS, "polling wait noticed the end after %.1f ms", el / 1e6);
    assert_status(&st, exited(0));
    mpx_child_destroy(c);
}

/* ---------------------------------------------------------------------------------------
 */

TEST_LIST_START
TEST_ENTRY(signal_names)
TEST_ENTRY(describe_texts)
TEST_ENTRY(describe_truncates_like_snprintf)
MODE_ENTRIES(end_statuses)
MODE_ENTRIES(open_zombie)
MODE_ENTRIES(wait_deadlines)
MODE_ENTRIES(done_before_and_after)
MODE_ENTRIES(noreap_leaves_child_to_others)
MODE_ENTRIES(noreap_then_reap)
MODE_ENTRIES(reaped_elsewhere)
MODE_ENTRIES(stopped_child_is_not_ended)
MODE_ENTRIES(signal_child)
MODE_ENTRIES(signal_ended_child)
MODE_ENTRIES(signal_wakes_waiting_thread)
MODE_ENTRIES(open_errors)
TEST_ENTRY(child_fd_pidfd)
TEST_ENTRY(child_fd_poll)
MODE_ENTRIES(open_destroy_many)
MODE_ENTRIES(destroy_neither_kills_nor_reaps)
TEST_ENTRY(two_handles_one_child)
MODE_ENTRIES(concurrent_waiters_share_status)
MODE_ENTRIES(race_with_outside_reaper)
MODE_ENTRIES(wait_any_arguments)
MODE_ENTRIES(wait_any_staggered)
MODE_ENTRIES(wait_any_lowest_index)
MODE_ENTRIES(wait_all_gated)
MODE_ENTRIES(wait_all_staggered)
TEST_ENTRY(completion_arguments)
MODE_ENTRIES(completion_gated)
MODE_ENTRIES(completion_staggered)
MODE_ENTRIES(completion_already_ended)
MODE_ENTRIES(completion_many)
TEST_ENTRY(mixed_modes)
MODE_ENTRIES(eintr)
TEST_ENTRY(pidfd_waiting_uses_no_cpu)
TEST_ENTRY(poll_waiting_is_not_a_busy_loop)
TEST_LIST_END

HELPER_LIST_START
HELPER_LIST_END

TEST_MAIN()
