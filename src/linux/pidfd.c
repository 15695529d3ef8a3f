/* pidfds: race-free handles on child processes (Linux 5.3+), with a liveness fallback. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "linux.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

int mpx__pidfd_open(pid_t pid)
{
    long fd = syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0)
        return -errno;
    /* pidfd_open sets close-on-exec itself. */
    return (int)fd;
}

int mpx__pidfd_send_signal(int pidfd, int sig)
{
    return syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) < 0 ? -errno : 0;
}

int mpx__pidfd_wait_exit(int pidfd, mpx_deadline_t deadline)
{
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    struct timespec ts, *tsp = NULL;
    if (deadline != MPX_FOREVER) {
        int64_t left = deadline - mpx__now_ns();
        ts = mpx__ts_from_ns(left < 0 ? 0 : left);
        tsp = &ts;
    }
    int r = ppoll(&p, 1, tsp, NULL);
    if (r < 0)
        return -errno;
    if (r == 0)
        return -ETIMEDOUT;
    return 0;
}

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

int mpx__waitid_pidfd(int pidfd, siginfo_t *info, int options)
{
    memset(info, 0, sizeof *info);
    return syscall(SYS_waitid, P_PIDFD, pidfd, info, options, NULL) < 0 ? -errno : 0;
}

int mpx__waitid_pid(pid_t pid, siginfo_t *info, int options)
{
    memset(info, 0, sizeof *info);
    return waitid(P_PID, (id_t)pid, info, options) < 0 ? -errno : 0;
}

int mpx__poll_until(struct pollfd *fds, size_t n, mpx_deadline_t deadline)
{
    struct timespec ts, *tsp = NULL;
    if (deadline != MPX_FOREVER) {
        int64_t left = deadline - mpx__now_ns();
        ts = mpx__ts_from_ns(left < 0 ? 0 : left);
        tsp = &ts;
    }
    int r = ppoll(fds, (nfds_t)n, tsp, NULL);
    if (r < 0)
        return -errno;
    return r == 0 ? -ETIMEDOUT : r;
}

int mpx__pid_alive(pid_t pid)
{
    if (pid <= 0)
        return -EINVAL;
    if (kill(pid, 0) == 0)
        return 1;
    return errno == ESRCH ? 0 : (errno == EPERM ? 1 : -errno);
}

int mpx__pid_running(pid_t pid)
{
    int r = mpx__pid_alive(pid);
    if (r <= 0)
        return r;
    /* A zombie has exited: it will never finish anything it started. */
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return errno == ENOENT ? 0 : 1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *close_paren = strrchr(buf, ')');
    if (!close_paren || close_paren[1] != ' ')
        return 1;
    char state = close_paren[2];
    return state == 'Z' || state == 'X' ? 0 : 1;
}
