/* Tests of src/linux (the system-call layer), the error table and the clock helpers. */
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "linux.h"
#include "mpx/common.h"
#include "mpx/error.h"

#define MS 1000000LL

static _Atomic uint32_t *shared_word(void)
{
    void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT(p != MAP_FAILED);
    return p;
}

static bool is_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFD);
    ASSERT_SYS(fl);
    return fl & FD_CLOEXEC;
}

/* ---------------------------------------------------------------------------------------
 * futex
 */

TEST(futex_value_changed)
{
    _Atomic uint32_t *w = shared_word();
    atomic_store(w, 5);
    /* The word differs from `expected`: returns at once with 0 (EAGAIN folded in). */
    int64_t t0 = th_now_ns();
    ASSERT_OK(mpx__futex_wait(w, 4, MPX_FOREVER));
    ASSERT_OK(mpx__futex_wait(w, 4, mpx_deadline_in(10000 * MS)));
    ASSERT_LT_INT(th_now_ns() - t0, 2000 * MS);
    /* Nobody is sleeping: a wake wakes nobody. */
    ASSERT_EQ_INT(mpx__futex_wake(w, INT32_MAX), 0);
    munmap((void *)w, 4096);
}

TEST(futex_timeout)
{
    _Atomic uint32_t *w = shared_word();
    int64_t t0 = th_now_ns();
    ASSERT_ERR(mpx__futex_wait(w, 0, mpx_deadline_in(100 * MS)), -ETIMEDOUT);
    int64_t el = th_now_ns() - t0;
    ASSERT_GE_INT(el, 95 * MS);
    ASSERT_LT_INT(el, 5000 * MS);
    /* A deadline already passed (and MPX_NOWAIT) never sleeps. */
    t0 = th_now_ns();
    ASSERT_ERR(mpx__futex_wait(w, 0, MPX_NOWAIT), -ETIMEDOUT);
    ASSERT_ERR(mpx__futex_wait(w, 0, mpx_now() - 1), -ETIMEDOUT);
    ASSERT_LT_INT(th_now_ns() - t0, 1000 * MS);
    munmap((void *)w, 4096);
}

TEST(futex_wake_across_fork)
{
    _Atomic uint32_t *w = shared_word();
    /* 1: a child sleeping with the value unchanged is woken by a bare wake. */
    pid_t pid = th_fork();
    if (pid == 0)
        _exit(mpx__futex_wait(w, 0, mpx_deadline_in(20000 * MS)) == 0 ? 0 : 1);
    int64_t end = th_now_ns() + 10000 * MS;
    int woken = 0;
    while (woken == 0 && th_now_ns() < end) {
        woken = mpx__futex_wake(w, 1);
        ASSERT_OK(woken);
        if (!woken)
            th_sleep_ms(1);
    }
    ASSERT_EQ_INT(woken, 1);
    th_wait_ok(pid, 10);

    /* 2: the usual protocol, the value changes and then a wake; two sleepers. */
    pid_t kids[2];
    for (int i = 0; i < 2; i++) {
        kids[i] = th_fork();
        if (kids[i] == 0) {
            while (atomic_load(w) == 0)
                if (mpx__futex_wait(w, 0, mpx_deadline_in(20000 * MS)) < 0)
                    _exit(1);
            _exit(atomic_load(w) == 7 ? 0 : 2);
        }
    }
    th_sleep_ms(50);
    atomic_store(w, 7);
    ASSERT_OK(mpx__futex_wake(w, INT32_MAX));
    th_wait_ok(kids[0], 10);
    th_wait_ok(kids[1], 10);
    munmap((void *)w, 4096);
}

TEST(futex_shared_memfd_mappings)
{
    /* The words live in memfd segments mapped at different addresses: the non-private
     * futex keys on the page, so a wake through one mapping reaches a sleeper on another. */
    int fd = mpx__memfd_create("futex-test");
    ASSERT_OK(fd);
    ASSERT_OK(mpx__memfd_grow(fd, 4096));
    pid_t pid = th_fork();
    if (pid == 0) {
        _Atomic uint32_t *w =
            mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (w == MAP_FAILED)
            _exit(3);
        while (atomic_load(w) == 0)
            if (mpx__futex_wait(w, 0, mpx_deadline_in(20000 * MS)) < 0)
                _exit(1);
        _exit(0);
    }
    _Atomic uint32_t *w = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ASSERT(w != MAP_FAILED);
    th_sleep_ms(50);
    atomic_store(w, 1);
    ASSERT_OK(mpx__futex_wake(w, INT32_MAX));
    th_wait_ok(pid, 10);
    munmap((void *)w, 4096);
    close(fd);
}

static void on_usr1(int sig) { (void)sig; }

TEST(futex_eintr)
{
    _Atomic uint32_t *w = shared_word();
    pid_t pid = th_fork();
    if (pid == 0) {
        struct sigaction sa = {.sa_handler = on_usr1}; /* no SA_RESTART */
        sigaction(SIGUSR1, &sa, NULL);
        atomic_store(w + 1, 1);
        int r = mpx__futex_wait(w, 0, MPX_FOREVER);
        _exit(r == -EINTR ? 0 : 1);
    }
    while (atomic_load(w + 1) == 0)
        th_sleep_ms(1);
    /* Keep signalling until the child leaves its wait (the first signal may arrive before
     * the child sleeps, in which case the handler runs and the child goes on to sleep). */
    int st;
    for (int i = 0; i < 1000; i++) {
        kill(pid, SIGUSR1);
        if (th_wait_timeout(pid, 0.02, &st) == 0) {
            ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
            munmap((void *)w, 4096);
            return;
        }
    }
    th_kill_reap(pid);
    ASSERT_MSG(0, "the child never returned -EINTR");
}

/* ---------------------------------------------------------------------------------------
 * memfd
 */

TEST(memfd_create_grow_seal)
{
    int fd = mpx__memfd_create("mpx-test");
    ASSERT_OK(fd);
    ASSERT(is_cloexec(fd));
    uint64_t sz = 1;
    ASSERT_OK(mpx__fd_size(fd, &sz));
    ASSERT_EQ_UINT(sz, 0);
    /* Not yet sealed: the check refuses it. */
    ASSERT_ERR(mpx__memfd_check(fd), -EINVAL);
    ASSERT_OK(mpx__memfd_grow(fd, 8192));
    ASSERT_OK(mpx__fd_size(fd, &sz));
    ASSERT_EQ_UINT(sz, 8192);
    /* Growing to a smaller size is a no-op, never a shrink. */
    ASSERT_OK(mpx__memfd_grow(fd, 100));
    ASSERT_OK(mpx__fd_size(fd, &sz));
    ASSERT_EQ_UINT(sz, 8192);
    ASSERT_OK(mpx__memfd_seal(fd));
    ASSERT_OK(mpx__memfd_check(fd));
    /* Sealed: shrinking is refused by the kernel, growing still works. */
    ASSERT(ftruncate(fd, 4096) == -1 && errno == EPERM);
    ASSERT_OK(mpx__memfd_grow(fd, 3 * 8192));
    ASSERT_OK(mpx__fd_size(fd, &sz));
    ASSERT_EQ_UINT(sz, 3 * 8192);
    /* F_SEAL_SEAL: no further seals. */
    ASSERT(fcntl(fd, F_ADD_SEALS, F_SEAL_GROW) == -1);
    ASSERT_ERR(mpx__memfd_grow(fd, (uint64_t)1 << 63), -EFBIG);
    close(fd);
}

TEST(memfd_check_refuses_others)
{
    ASSERT_ERR(mpx__memfd_check(-1), -EBADF);
    int p[2];
    ASSERT_SYS(pipe(p));
    ASSERT_ERR(mpx__memfd_check(p[0]), -EINVAL);
    ASSERT_ERR(mpx__memfd_check(p[1]), -EINVAL);
    close(p[0]);
    close(p[1]);

    char path[] = "/tmp/mpx-test-XXXXXX";
    int f = mkstemp(path);
    ASSERT_SYS(f);
    unlink(path);
    ASSERT_SYS(ftruncate(f, 8192));
    ASSERT_ERR(mpx__memfd_check(f), -EINVAL);
    close(f);

    int d = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_SYS(d);
    ASSERT_ERR(mpx__memfd_check(d), -EINVAL);
    close(d);

    /* A memfd sealed with only part of the seals is refused too. */
    int m = mpx__memfd_create("partial");
    ASSERT_OK(m);
    ASSERT_SYS(fcntl(m, F_ADD_SEALS, F_SEAL_SHRINK));
    ASSERT_ERR(mpx__memfd_check(m), -EINVAL);
    close(m);
    /* A memfd created without MFD_ALLOW_SEALING can never pass. */
    m = memfd_create("nosealing", MFD_CLOEXEC);
    ASSERT_SYS(m);
    ASSERT_ERR(mpx__memfd_check(m), -EINVAL);
    ASSERT(mpx__memfd_seal(m) < 0);
    close(m);
}

TEST(memfd_punch)
{
    int fd = mpx__memfd_create("punch");
    ASSERT_OK(fd);
    ASSERT_OK(mpx__memfd_grow(fd, 4 * 4096));
    ASSERT_OK(mpx__memfd_seal(fd));
    unsigned char *p = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ASSERT(p != MAP_FAILED);
    memset(p, 0xab, 4 * 4096);
    ASSERT_OK(mpx__memfd_punch(fd, 4096, 2 * 4096));
    ASSERT_OK(mpx__memfd_punch(fd, 0, 0)); /* empty range: nothing */
    uint64_t sz;
    ASSERT_OK(mpx__fd_size(fd, &sz));
    ASSERT_EQ_UINT(sz, 4 * 4096);
    for (size_t i = 0; i < 4 * 4096; i++) {
        unsigned want = i >= 4096 && i < 3 * 4096 ? 0 : 0xab;
        ASSERT_MSG(p[i] == want, "byte %zu is %u, want %u", i, p[i], want);
    }
    munmap(p, 4 * 4096);
    ASSERT(mpx__memfd_punch(-1, 0, 4096) < 0);
    close(fd);
}

TEST(dup_cloexec)
{
    int p[2];
    ASSERT_SYS(pipe(p)); /* without O_CLOEXEC */
    ASSERT(!is_cloexec(p[0]));
    int d = mpx__dup_cloexec(p[0]);
    ASSERT_OK(d);
    ASSERT(d != p[0]);
    ASSERT(is_cloexec(d));
    ASSERT_ERR(mpx__dup_cloexec(-1), -EBADF);
    uint64_t sz;
    ASSERT_ERR(mpx__fd_size(-1, &sz), -EBADF);
    close(d);
    close(p[0]);
    close(p[1]);
}

/* ---------------------------------------------------------------------------------------
 * pidfd and liveness
 */

TEST(pidfd_open_wait_signal)
{
    pid_t pid = th_fork();
    if (pid == 0) {
        for (;;)
            pause();
    }
    int pfd = mpx__pidfd_open(pid);
    if (pfd == -ENOSYS) {
        th_kill_reap(pid);
        printf("  (no pidfd on this kernel; skipped)\n");
        return;
    }
    ASSERT_OK(pfd);
    ASSERT(is_cloexec(pfd));
    ASSERT_EQ_INT(mpx__pid_alive(pid), 1);
    int64_t t0 = th_now_ns();
    ASSERT_ERR(mpx__pidfd_wait_exit(pfd, mpx_deadline_in(100 * MS)), -ETIMEDOUT);
    ASSERT_GE_INT(th_now_ns() - t0, 90 * MS);
    ASSERT_ERR(mpx__pidfd_wait_exit(pfd, MPX_NOWAIT), -ETIMEDOUT);
    ASSERT_OK(mpx__pidfd_send_signal(pfd, SIGTERM));
    ASSERT_OK(mpx__pidfd_wait_exit(pfd, mpx_deadline_in(10000 * MS)));
    ASSERT_OK(mpx__pidfd_wait_exit(pfd, MPX_FOREVER)); /* stays readable */
    int st;
    ASSERT(waitpid(pid, &st, 0) == pid);
    ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
    /* Reaped: gone. Signalling a pidfd whose process has gone fails with ESRCH. */
    ASSERT_EQ_INT(mpx__pid_alive(pid), 0);
    ASSERT_ERR(mpx__pidfd_send_signal(pfd, SIGTERM), -ESRCH);
    close(pfd);

    ASSERT_ERR(mpx__pidfd_send_signal(-1, 0), -EBADF);
    ASSERT_ERR(mpx__pid_alive(0), -EINVAL);
    ASSERT_ERR(mpx__pid_alive(-5), -EINVAL);
    ASSERT_EQ_INT(mpx__pid_alive(getpid()), 1);
    ASSERT_EQ_INT(mpx__pid_alive(1), 1); /* exists; EPERM or not, it is alive */
    ASSERT_ERR(mpx__pidfd_open(pid), -ESRCH);
    ASSERT(mpx__pidfd_open(-1) < 0);
}

TEST(pidfd_exit_status_by_wait)
{
    pid_t pid = th_fork();
    if (pid == 0) {
        th_sleep_ms(50);
        _exit(7);
    }
    int pfd = mpx__pidfd_open(pid);
    if (pfd == -ENOSYS) {
        th_kill_reap(pid);
        return;
    }
    ASSERT_OK(pfd);
    ASSERT_OK(mpx__pidfd_wait_exit(pfd, MPX_FOREVER));
    int st;
    ASSERT(waitpid(pid, &st, 0) == pid);
    ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 7);
    close(pfd);
}

/* ---------------------------------------------------------------------------------------
 * eventfd
 */

TEST(eventfd_counts)
{
    int fd = mpx__eventfd(0, true);
    ASSERT_OK(fd);
    ASSERT(is_cloexec(fd));
    uint64_t n = 99;
    ASSERT_ERR(mpx__eventfd_drain(fd, &n), -EAGAIN);
    ASSERT_OK(mpx__eventfd_signal(fd, 3));
    ASSERT_OK(mpx__eventfd_signal(fd, 4));
    ASSERT_OK(mpx__eventfd_drain(fd, &n));
    ASSERT_EQ_UINT(n, 7);
    ASSERT_ERR(mpx__eventfd_drain(fd, &n), -EAGAIN);
    /* The counter saturates at UINT64_MAX - 1: a non-blocking write beyond fails. */
    ASSERT_OK(mpx__eventfd_signal(fd, UINT64_MAX - 1));
    ASSERT_ERR(mpx__eventfd_signal(fd, 1), -EAGAIN);
    ASSERT_ERR(mpx__eventfd_signal(fd, UINT64_MAX), -EINVAL);
    close(fd);

    fd = mpx__eventfd(5, false);
    ASSERT_OK(fd);
    ASSERT_OK(mpx__eventfd_drain(fd, &n));
    ASSERT_EQ_UINT(n, 5);
    /* Blocking: a child's signal wakes the parent's drain. */
    pid_t pid = th_fork();
    if (pid == 0) {
        th_sleep_ms(30);
        _exit(mpx__eventfd_signal(fd, 2) == 0 ? 0 : 1);
    }
    ASSERT_OK(mpx__eventfd_drain(fd, &n));
    ASSERT_EQ_UINT(n, 2);
    th_wait_ok(pid, 10);
    close(fd);
    ASSERT_ERR(mpx__eventfd_signal(-1, 1), -EBADF);
}

/* ---------------------------------------------------------------------------------------
 * Descriptor passing
 */

/* A readable end that reads EOF at once means every copy of its write end was closed. */
static bool pipe_at_eof(int rfd)
{
    char c;
    ssize_t r = read(rfd, &c, 1);
    return r == 0;
}

TEST(fdpass_round_trip)
{
    int sv[2];
    ASSERT_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
    int pr[3], pw[3];
    for (int i = 0; i < 3; i++) {
        int p[2];
        ASSERT_SYS(pipe2(p, O_NONBLOCK | O_CLOEXEC));
        pr[i] = p[0];
        pw[i] = p[1];
    }
    ASSERT_EQ_INT(mpx__send_fds(sv[0], "abc", 3, pw, 3), 3);
    char buf[8];
    int got[4] = {-1, -1, -1, -1};
    int n = 4;
    ASSERT_EQ_INT(mpx__recv_fds(sv[1], buf, sizeof buf, got, &n), 3);
    ASSERT_MEM_EQ(buf, "abc", 3);
    ASSERT_EQ_INT(n, 3);
    for (int i = 0; i < 3; i++) {
        ASSERT(is_cloexec(got[i]));
        char c = (char)('x' + i);
        ASSERT_EQ_INT(write(got[i], &c, 1), 1);
        char d = 0;
        ASSERT_EQ_INT(read(pr[i], &d, 1), 1);
        ASSERT_EQ_INT(d, c);
        close(got[i]);
        close(pw[i]);
        ASSERT(pipe_at_eof(pr[i]));
        close(pr[i]);
    }

    /* Data without descriptors. */
    ASSERT_EQ_INT(mpx__send_fds(sv[0], "z", 1, NULL, 0), 1);
    n = 4;
    ASSERT_EQ_INT(mpx__recv_fds(sv[1], buf, sizeof buf, got, &n), 1);
    ASSERT_EQ_INT(n, 0);

    /* Bad arguments. */
    ASSERT_ERR(mpx__send_fds(sv[0], "z", 0, NULL, 0), -EINVAL);
    ASSERT_ERR(mpx__send_fds(sv[0], "z", 1, pw, -1), -EINVAL);
    ASSERT_ERR(mpx__send_fds(sv[0], "z", 1, pw, MPX__MAX_PASSED_FDS + 1), -EINVAL);
    ASSERT_ERR(mpx__send_fds(-1, "z", 1, NULL, 0), -EBADF);

    /* End of stream. */
    close(sv[0]);
    n = 4;
    ASSERT_EQ_INT(mpx__recv_fds(sv[1], buf, sizeof buf, got, &n), 0);
    ASSERT_EQ_INT(n, 0);
    close(sv[1]);
}

TEST(fdpass_extra_fds_closed)
{
    int sv[2];
    ASSERT_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
    int pr[5], pw[5];
    for (int i = 0; i < 5; i++) {
        int p[2];
        ASSERT_SYS(pipe2(p, O_NONBLOCK | O_CLOEXEC));
        pr[i] = p[0];
        pw[i] = p[1];
    }
    ASSERT_EQ_INT(mpx__send_fds(sv[0], "m", 1, pw, 5), 1);
    for (int i = 0; i < 5; i++)
        close(pw[i]); /* the only copies left are the ones in flight */
    int before = th_count_fds();
    char buf[4];
    int got[2];
    int n = 2;
    ASSERT_EQ_INT(mpx__recv_fds(sv[1], buf, sizeof buf, got, &n), 1);
    ASSERT_EQ_INT(n, 2);
    /* Exactly the two returned descriptors are new in this process... */
    ASSERT_EQ_INT(th_count_fds(), before + 2);
    /* ...the first two pipes are still open for writing, the other three were closed. */
    for (int i = 0; i < 5; i++) {
        if (i < 2) {
            char c;
            ASSERT(read(pr[i], &c, 1) == -1 && errno == EAGAIN);
        } else {
            ASSERT_MSG(pipe_at_eof(pr[i]), "pipe %d still has a writer", i);
        }
    }
    close(got[0]);
    close(got[1]);
    for (int i = 0; i < 2; i++)
        ASSERT(pipe_at_eof(pr[i]));
    for (int i = 0; i < 5; i++)
        close(pr[i]);
    ASSERT_EQ_INT(th_count_fds(), before - 5);
    close(sv[0]);
    close(sv[1]);
}

TEST(fdpass_truncated_control_closed)
{
    /* More descriptors than the receiver's control buffer holds (sent with a raw sendmsg,
     * the wrapper refuses > MPX__MAX_PASSED_FDS): MSG_CTRUNC gives -EMSGSIZE, and none of
     * the descriptors stays open in the receiver. */
    enum { N = MPX__MAX_PASSED_FDS + 8 };
    int sv[2];
    ASSERT_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
    int p[2];
    ASSERT_SYS(pipe2(p, O_NONBLOCK | O_CLOEXEC));
    int fds[N];
    for (int i = 0; i < N; i++)
        fds[i] = p[1];
    union {
        char buf[CMSG_SPACE(sizeof(int) * N)];
        struct cmsghdr align;
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = {.iov_base = (void *)"q", .iov_len = 1};
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = ctl.buf,
                         .msg_controllen = sizeof ctl.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * N);
    memcpy(CMSG_DATA(c), fds, sizeof fds);
    ASSERT_EQ_INT(sendmsg(sv[0], &msg, 0), 1);
    close(p[1]);
    int before = th_count_fds();
    char buf[4];
    int got[MPX__MAX_PASSED_FDS];
    int n = MPX__MAX_PASSED_FDS;
    ASSERT_ERR(mpx__recv_fds(sv[1], buf, sizeof buf, got, &n), -EMSGSIZE);
    ASSERT_EQ_INT(n, 0);
    ASSERT_EQ_INT(th_count_fds(), before);
    ASSERT(pipe_at_eof(p[0]));
    close(p[0]);
    close(sv[0]);
    close(sv[1]);
}

/* ---------------------------------------------------------------------------------------
 * Errors
 */

TEST(error_names_and_text)
{
    ASSERT_EQ_STR(mpx_strerror(0), "success");
    ASSERT_EQ_STR(mpx_errname(0), "OK");
    ASSERT_EQ_STR(mpx_errname(-EINVAL), "EINVAL");
    ASSERT_EQ_STR(mpx_errname(-ETIMEDOUT), "ETIMEDOUT");
    ASSERT_EQ_STR(mpx_errname(-EAGAIN), "EAGAIN");
    ASSERT_EQ_STR(mpx_errname(-ENOMEM), "ENOMEM");
    ASSERT_EQ_STR(mpx_strerror(-EINVAL), strerror(EINVAL));
    ASSERT_EQ_STR(mpx_strerror(-ETIMEDOUT), strerror(ETIMEDOUT));
    ASSERT_EQ_STR(mpx_strerror(-EBUSY), strerror(EBUSY));

    struct {
        int code;
        const char *name, *text;
    } table[] = {
#define X(name, value, text) {MPX_##name, "MPX_" #name, text},
        MPX_ERRNO_MAP(X)
#undef X
    };
    size_t n = sizeof table / sizeof table[0];
    ASSERT_EQ_INT(n, 9);
    for (size_t i = 0; i < n; i++) {
        ASSERT_LT_INT(table[i].code, -4095); /* outside the errno range */
        ASSERT_EQ_STR(mpx_errname(table[i].code), table[i].name);
        ASSERT_EQ_STR(mpx_strerror(table[i].code), table[i].text);
        for (size_t j = 0; j < i; j++)
            ASSERT_NE_INT(table[i].code, table[j].code);
    }
    ASSERT_EQ_STR(mpx_errname(MPX_ECLOSED), "MPX_ECLOSED");
    ASSERT_EQ_STR(mpx_errname(MPX_EBADFRAME), "MPX_EBADFRAME");
    ASSERT_EQ_STR(mpx_errname(MPX_EVERSION), "MPX_EVERSION");
    ASSERT_EQ_STR(mpx_errname(MPX_EBROKEN), "MPX_EBROKEN");

    /* Every errno value has a name and a text; nothing is ever NULL. */
    for (int e = 1; e < 4096; e++) {
        ASSERT_NOT_NULL(mpx_strerror(-e));
        ASSERT_NOT_NULL(mpx_errname(-e));
    }
    int unknown[] = {1, EINVAL, 4096, -4096, -5000, -20000, -20010, INT_MIN, INT_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        ASSERT_EQ_STR(mpx_strerror(unknown[i]), "unknown error");
        ASSERT_EQ_STR(mpx_errname(unknown[i]), "EUNKNOWN");
    }
}

/* ---------------------------------------------------------------------------------------
 * Clocks and deadlines
 */

TEST(clock_and_deadlines)
{
    ASSERT_EQ_STR(mpx_version(), "0.1.0");
    int64_t a = mpx_now();
    int64_t b = mpx_now();
    ASSERT_LE_INT(a, b);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t c = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    ASSERT_LE_INT(b, c);
    ASSERT_LE_INT(c, mpx_now());

    int64_t now = mpx_now();
    mpx_deadline_t d = mpx_deadline_in(0);
    ASSERT(d >= now && d < now + 1000 * MS);
    d = mpx_deadline_in(-12345);
    ASSERT(d >= now && d < now + 1000 * MS);
    d = mpx_deadline_in(INT64_MIN);
    ASSERT(d >= now && d < now + 1000 * MS);
    d = mpx_deadline_in(2000 * MS);
    ASSERT(d >= now + 2000 * MS && d < now + 3000 * MS);
    ASSERT_EQ_INT(mpx_deadline_in(INT64_MAX), MPX_FOREVER);
    ASSERT_EQ_INT(mpx_deadline_in(INT64_MAX - 1), MPX_FOREVER);

    now = mpx_now();
    d = mpx_deadline_in_seconds(0.5);
    ASSERT(d >= now + 500 * MS && d < now + 1500 * MS);
    d = mpx_deadline_in_seconds(0);
    ASSERT(d >= now && d < now + 1000 * MS);
    d = mpx_deadline_in_seconds(-3.0);
    ASSERT(d >= now && d < now + 1000 * MS);
    d = mpx_deadline_in_seconds(NAN);
    ASSERT(d >= now && d < now + 1000 * MS);
    d = mpx_deadline_in_seconds(-INFINITY);
    ASSERT(d >= now && d < now + 1000 * MS);
    ASSERT_EQ_INT(mpx_deadline_in_seconds(INFINITY), MPX_FOREVER);
    ASSERT_EQ_INT(mpx_deadline_in_seconds(1e300), MPX_FOREVER);
    ASSERT_EQ_INT(mpx_deadline_in_seconds(5e9), MPX_FOREVER);
    d = mpx_deadline_in_seconds(86400.0 * 365);
    ASSERT(d > now && d != MPX_FOREVER);

    /* The internal helpers. */
    ASSERT(mpx__deadline_passed(MPX_NOWAIT));
    ASSERT(mpx__deadline_passed(-1));
    ASSERT(mpx__deadline_passed(mpx_now() - 1));
    ASSERT(!mpx__deadline_passed(MPX_FOREVER));
    ASSERT(!mpx__deadline_passed(mpx_deadline_in(10000 * MS)));
    struct timespec t = mpx__ts_from_ns(3 * 1000000000LL + 42);
    ASSERT_EQ_INT(t.tv_sec, 3);
    ASSERT_EQ_INT(t.tv_nsec, 42);
    ASSERT_LE_INT(mpx__now_ns(), mpx_now());
}

TEST_LIST_START
TEST_ENTRY(futex_value_changed)
TEST_ENTRY(futex_timeout)
TEST_ENTRY(futex_wake_across_fork)
TEST_ENTRY(futex_shared_memfd_mappings)
TEST_ENTRY(futex_eintr)
TEST_ENTRY(memfd_create_grow_seal)
TEST_ENTRY(memfd_check_refuses_others)
TEST_ENTRY(memfd_punch)
TEST_ENTRY(dup_cloexec)
TEST_ENTRY(pidfd_open_wait_signal)
TEST_ENTRY(pidfd_exit_status_by_wait)
TEST_ENTRY(eventfd_counts)
TEST_ENTRY(fdpass_round_trip)
TEST_ENTRY(fdpass_extra_fds_closed)
TEST_ENTRY(fdpass_truncated_control_closed)
TEST_ENTRY(error_names_and_text)
TEST_ENTRY(clock_and_deadlines)
TEST_LIST_END

HELPER_LIST_START
HELPER_LIST_END

TEST_MAIN()
