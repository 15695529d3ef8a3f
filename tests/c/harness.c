/* tests/c/harness.c - the runner behind harness.h. */
#include "harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

extern char **environ;

/* ---------------------------------------------------------------------------------------
 * Assertions and small utilities
 */

void th_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "[pid %ld] %s:%d: ", (long)getpid(), file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    /* _exit: never run atexit handlers or flush stdio buffers inherited across a fork. */
    _exit(1);
}

int64_t th_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void th_sleep_ms(double ms)
{
    if (ms <= 0)
        return;
    int64_t ns = (int64_t)(ms * 1e6);
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

uint64_t th_rand(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9e3779b97f4a7c15u;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1du;
}

uint64_t th_seed(void)
{
    const char *e = getenv("TH_SEED");
    uint64_t s = e && *e ? strtoull(e, NULL, 0) : (uint64_t)th_now_ns() ^ ((uint64_t)getpid() << 32);
    if (!s)
        s = 1;
    printf("  (seed: TH_SEED=%" PRIu64 ")\n", s);
    fflush(stdout);
    return s;
}

/* Reads /proc/<pid>/stat and returns a pointer just past the ") " that ends the command
 * name (which may itself contain spaces and parentheses), or NULL. */
static char *proc_stat_fields(pid_t pid, char *buf, size_t len)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    if (n <= 0)
        return NULL;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' ? p + 2 : NULL;
}

char th_proc_state(pid_t pid)
{
    char buf[1024];
    char *f = proc_stat_fields(pid, buf, sizeof buf);
    return f ? f[0] : 0;
}

double th_proc_cpu_ms(pid_t pid)
{
    char buf[1024];
    char *f = proc_stat_fields(pid, buf, sizeof buf);
    if (!f)
        return -1;
    /* Fields after the name start at field 3 (state); utime and stime are fields 14, 15. */
    unsigned long long ut = 0, st = 0;
    char *save = NULL;
    int field = 3;
    for (char *t = strtok_r(f, " ", &save); t; t = strtok_r(NULL, " ", &save), field++) {
        if (field == 14)
            ut = strtoull(t, NULL, 10);
        else if (field == 15) {
            st = strtoull(t, NULL, 10);
            break;
        }
    }
    long hz = sysconf(_SC_CLK_TCK);
    return (double)(ut + st) * 1000.0 / (double)(hz > 0 ? hz : 100);
}

void *th_shared_alloc(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        th_fail(__FILE__, __LINE__, "mmap of %zu shared bytes: %s", len, strerror(errno));
    return p;
}

int th_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

/* ---------------------------------------------------------------------------------------
 * Processes
 */

static const char *signame(int sig)
{
    const char *s = sigabbrev_np(sig);
    static char buf[32];
    if (s) {
        snprintf(buf, sizeof buf, "SIG%s", s);
        return buf;
    }
    snprintf(buf, sizeof buf, "signal %d", sig);
    return buf;
}

const char *th_status_str(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exit %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "signal %s%s", signame(WTERMSIG(status)),
                 WCOREDUMP(status) ? " (core)" : "");
    else
        snprintf(buf, len, "status 0x%x", status);
    return buf;
}

pid_t th_fork(void)
{
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        th_fail(__FILE__, __LINE__, "fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1); /* the parent died before the death signal was armed */
    }
    return pid;
}

/* Waits until `pid` (a child) has exited or `timeout_ms` passes (negative: no limit). True
 * if it exited; the child is not reaped. */
static bool wait_exit(pid_t pid, int64_t timeout_ms)
{
    int64_t end = timeout_ms < 0 ? INT64_MAX : th_now_ns() + timeout_ms * 1000000;
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pfd >= 0) {
        for (;;) {
            int64_t left = end == INT64_MAX ? -1 : (end - th_now_ns()) / 1000000 + 1;
            if (end != INT64_MAX && left <= 0)
                left = 0;
            struct pollfd p = {.fd = pfd, .events = POLLIN};
            int r = poll(&p, 1, left > INT32_MAX ? INT32_MAX : (int)left);
            if (r > 0) {
                close(pfd);
                return true;
            }
            if (r < 0 && errno == EINTR)
                continue;
            if (r == 0 && th_now_ns() < end)
                continue;
            close(pfd);
            return false;
        }
    }
    /* No pidfd: poll with waitid(WNOWAIT), which leaves the child unreaped. */
    for (;;) {
        siginfo_t si;
        si.si_pid = 0;
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid)
            return true;
        if (th_now_ns() >= end)
            return false;
        th_sleep_ms(1);
    }
}

int th_wait_timeout(pid_t pid, double timeout_s, int *status)
{
    if (!wait_exit(pid, (int64_t)(timeout_s * 1000)))
        return -ETIMEDOUT;
    int st;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR)
            th_fail(__FILE__, __LINE__, "waitpid(%ld): %s", (long)pid, strerror(errno));
    }
    if (status)
        *status = st;
    return 0;
}

void th_kill_reap(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

bool th_running(pid_t pid)
{
    siginfo_t si;
    si.si_pid = 0;
    if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0)
        return false;
    return si.si_pid != pid;
}

void th_wait_asleep_at(const char *file, int line, pid_t pid)
{
    int64_t end = th_now_ns() + 20 * 1000000000LL;
    int seen = 0;
    while (seen < 20) { /* 20 consecutive looks, 100 ms */
        if (th_now_ns() >= end)
            th_fail(file, line, "process %ld never went to sleep", (long)pid);
        if (!th_running(pid))
            th_fail(file, line, "process %ld ended instead of sleeping", (long)pid);
        seen = th_proc_state(pid) == 'S' ? seen + 1 : 0;
        th_sleep_ms(5);
    }
}

void th_wait_ok_at(const char *file, int line, pid_t pid, double timeout_s)
{
    int st;
    char buf[64];
    if (th_wait_timeout(pid, timeout_s, &st) < 0) {
        th_kill_reap(pid);
        th_fail(file, line, "child %ld did not exit within %.1f s", (long)pid, timeout_s);
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        th_fail(file, line, "child %ld ended with %s, want exit 0", (long)pid,
                th_status_str(st, buf, sizeof buf));
}

void th_wait_signaled_at(const char *file, int line, pid_t pid, int sig, double timeout_s)
{
    int st;
    char buf[64];
    if (th_wait_timeout(pid, timeout_s, &st) < 0) {
        th_kill_reap(pid);
        th_fail(file, line, "child %ld did not end within %.1f s", (long)pid, timeout_s);
    }
    if (!WIFSIGNALED(st) || WTERMSIG(st) != sig)
        th_fail(file, line, "child %ld ended with %s, want signal %s", (long)pid,
                th_status_str(st, buf, sizeof buf), signame(sig));
}

pid_t th_spawn_helper(const char *name, const char *const *args, const int *keep_fds,
                      int nkeep, const char *const *env)
{
    /* Everything the child needs is built before fork: between fork and exec the child only
     * makes async-signal-safe calls. */
    size_t nargs = 0, nenv = 0, nextra = 0;
    while (args && args[nargs])
        nargs++;
    while (environ && environ[nenv])
        nenv++;
    while (env && env[nextra])
        nextra++;
    char **argv = calloc(nargs + 4, sizeof *argv);
    char **envp = calloc(nenv + nextra + 1, sizeof *envp);
    if (!argv || !envp)
        th_fail(__FILE__, __LINE__, "out of memory");
    argv[0] = (char *)"mpx-test-helper";
    argv[1] = (char *)"--helper";
    argv[2] = (char *)name;
    for (size_t i = 0; i < nargs; i++)
        argv[3 + i] = (char *)args[i];
    for (size_t i = 0; i < nenv; i++)
        envp[i] = environ[i];
    for (size_t i = 0; i < nextra; i++)
        envp[nenv + i] = (char *)env[i];

    pid_t pid = th_fork();
    if (pid == 0) {
        for (int i = 0; i < nkeep; i++) {
            int fl = fcntl(keep_fds[i], F_GETFD);
            if (fl < 0 || fcntl(keep_fds[i], F_SETFD, fl & ~FD_CLOEXEC) < 0)
                _exit(125);
        }
        execve("/proc/self/exe", argv, envp);
        _exit(127);
    }
    free(argv);
    free(envp);
    return pid;
}

/* ---------------------------------------------------------------------------------------
 * The runner
 */

/* Sends SIGKILL to every process whose parent is this one (orphans re-parented to us, the
 * subreaper). Returns how many were found. */
static int kill_our_children(void)
{
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    pid_t self = getpid();
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        pid_t pid = (pid_t)strtol(e->d_name, NULL, 10);
        char buf[1024];
        char *f = proc_stat_fields(pid, buf, sizeof buf);
        if (!f)
            continue;
        long ppid = 0;
        if (sscanf(f, "%*c %ld", &ppid) == 1 && ppid == self) {
            kill(pid, SIGKILL);
            n++;
        }
    }
    closedir(d);
    return n;
}

/* After a case ended: kills and reaps whatever it left behind. Returns the number of
 * processes that had to be cleaned up. */
static int sweep_leftovers(pid_t pgid)
{
    int leftovers = 0;
    int64_t end = th_now_ns() + 10 * 1000000000LL;
    for (;;) {
        kill(-pgid, SIGKILL);
        kill_our_children();
        pid_t w;
        int st;
        while ((w = waitpid(-1, &st, WNOHANG)) > 0)
            leftovers++;
        if (w < 0 && errno == ECHILD)
            break;
        if (th_now_ns() > end) {
            fprintf(stderr, "harness: could not reap every leftover process\n");
            break;
        }
        th_sleep_ms(1);
    }
    return leftovers;
}

/* The exit status of a case that returned with more or fewer descriptors open than it
 * started with. */
#define TH_EXIT_FD_LEAK 86

static int run_case(const struct th_test *t)
{
    int timeout = t->timeout_s > 0 ? t->timeout_s : TH_DEFAULT_TIMEOUT_S;
    const char *scale = getenv("TH_TIMEOUT_SCALE");
    if (scale && atof(scale) > 0)
        timeout = (int)(timeout * atof(scale));
    fflush(NULL);
    int64_t t0 = th_now_ns();
    pid_t pid = fork();
    if (pid < 0) {
        printf("FAIL %s: fork: %s\n", t->name, strerror(errno));
        return 1;
    }
    if (pid == 0) {
        setpgid(0, 0);
        signal(SIGPIPE, SIG_DFL);
        int fds = th_count_fds();
        t->fn();
        fflush(NULL);
        int leaked = th_count_fds() - fds;
        if (leaked != 0) {
            fprintf(stderr, "harness: %s left %d descriptor(s) open\n", t->name, leaked);
            fflush(stderr);
            _exit(TH_EXIT_FD_LEAK);
        }
        exit(0); /* exit, not _exit: lets LeakSanitizer check the case in ASan builds */
    }
    setpgid(pid, pid); /* also here, so that the group exists before we might signal it */

    char reason[128] = "";
    int st = 0;
    if (!wait_exit(pid, (int64_t)timeout * 1000)) {
        snprintf(reason, sizeof reason, "timeout after %d s (killed)", timeout);
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
    }
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    double secs = (double)(th_now_ns() - t0) / 1e9;
    if (!reason[0] && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
        char b[64];
        snprintf(reason, sizeof reason, "%s%s", th_status_str(st, b, sizeof b),
                 WIFEXITED(st) && WEXITSTATUS(st) == TH_EXIT_FD_LEAK ? " (descriptors leaked)"
                                                                     : "");
    }
    int left = sweep_leftovers(pid);
    if (!reason[0] && left > 0)
        snprintf(reason, sizeof reason, "left %d process%s behind", left, left == 1 ? "" : "es");
    if (reason[0]) {
        printf("FAIL %s: %s (%.2f s)\n", t->name, reason, secs);
        fflush(stdout);
        return 1;
    }
    printf("ok   %s (%.2f s)\n", t->name, secs);
    fflush(stdout);
    return 0;
}

int th_main(int argc, char **argv, const struct th_test *tests, const struct th_helper *helpers)
{
    if (argc >= 3 && strcmp(argv[1], "--helper") == 0) {
        for (const struct th_helper *h = helpers; h && h->name; h++) {
            if (strcmp(h->name, argv[2]) == 0) {
                int r = h->fn(argc - 3, argv + 3);
                fflush(NULL);
                exit(r);
            }
        }
        fprintf(stderr, "unknown helper %s\n", argv[2]);
        return 2;
    }
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (const struct th_test *t = tests; t->name; t++)
            printf("%s\n", t->name);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        bool found = false;
        for (const struct th_test *t = tests; t->name; t++)
            found |= strcmp(t->name, argv[i]) == 0;
        if (!found) {
            fprintf(stderr, "unknown test case %s (see --list)\n", argv[i]);
            printf("0 passed, 1 failed\n");
            return 1;
        }
    }

    /* Orphans of a case become our children, so that they can be found and reaped. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    setvbuf(stdout, NULL, _IOLBF, 0);

    int passed = 0, failed = 0;
    for (const struct th_test *t = tests; t->name; t++) {
        bool selected = argc == 1;
        for (int i = 1; i < argc; i++)
            selected |= strcmp(t->name, argv[i]) == 0;
        if (!selected)
            continue;
        if (run_case(t))
            failed++;
        else
            passed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    fflush(stdout);
    return failed ? 1 : 0;
}

unsigned char *th_exact_copy(const void *msg, size_t len)
{
    unsigned char *p = malloc(len ? len : 1);
    ASSERT_NOT_NULL(p);
    if (len)
        memcpy(p, msg, len);
    return p;
}

void th_mutate(unsigned char *buf, size_t *len, uint64_t *rs)
{
    int nmut = 1 + (int)(th_rand(rs) % 4);
    for (int m = 0; m < nmut; m++) {
        size_t at = th_rand(rs) % *len;
        switch (th_rand(rs) % 4) {
        case 0:
            buf[at] ^= (unsigned char)(1u << (th_rand(rs) % 8));
            break;
        case 1:
            buf[at] = (unsigned char)th_rand(rs);
            break;
        case 2:
            if (at + 8 <= *len) {
                uint64_t v = th_rand(rs) >> (th_rand(rs) % 64);
                for (int i = 0; i < 8; i++)
                    buf[at + i] = (unsigned char)(v >> (8 * i));
            }
            break;
        default:
            *len = at + 1;
            break;
        }
    }
}

void th_assert_elapsed_at(const char *file, int line, int64_t t0, int64_t want_ns,
                          int64_t late_ns)
{
    int64_t el = th_now_ns() - t0;
    if (el < want_ns - 2000000)
        th_fail(file, line, "returned after %.1f ms, before the deadline (%.1f ms)", el / 1e6,
                want_ns / 1e6);
    if (el > want_ns + late_ns)
        th_fail(file, line, "returned after %.1f ms, long after the deadline (%.1f ms)",
                el / 1e6, want_ns / 1e6);
}

pthread_t th_thread_start(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    ASSERT_EQ_INT(pthread_create(&t, NULL, fn, arg), 0);
    return t;
}

void th_thread_join(pthread_t t)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 20;
    ASSERT_EQ_INT(pthread_timedjoin_np(t, NULL, &ts), 0);
}
