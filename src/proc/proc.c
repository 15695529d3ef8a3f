/* Supervision of child processes (<mpx/proc.h>, docs/proc.md).
 *
 * A handle holds a pidfd: it becomes readable when the child ends, so one thread can wait
 * for many children with a single poll, and signals sent through it can never reach a
 * process that reused the pid. Whether a child has ended is asked with waitid(WNOWAIT),
 * which leaves it unreaped, so the handle never races whoever else (Python's Popen) may
 * reap it; mpx_child_wait() reaps only when told to. Without pidfds (old kernels, or
 * MPX_CHILD_POLL) the same questions are asked every few milliseconds.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "linux.h"
#include "mpx/proc.h"

/* How often a polling handle asks whether its child has ended. */
#define POLL_NS 5000000
/* Waits over this many children poll a heap array instead of one on the stack. */
#define STACK_FDS 64

struct mpx_child {
    pid_t pid;
    int fd;             /* owned pidfd, or -1 for a polling handle */
    pthread_mutex_t mu; /* guards the fields below */
    bool reaped;        /* reaped by us: status holds the end */
    bool lost;          /* reaped by somebody else: the status is unknown */
    mpx_exit_status status;
};

struct mpx_completion {
    mpx_child *const *children; /* borrowed */
    size_t n, left;
    bool *handed;          /* owned: handed[i] once index i was returned */
    mpx_child **pending;   /* owned scratch: the children not yet handed out */
};

/* ---------------------------------------------------------------------------------------
 * One child
 */

static int wait_id(const mpx_child *c, siginfo_t *info, int options)
{
    return c->fd >= 0 ? mpx__waitid_pidfd(c->fd, info, options)
                      : mpx__waitid_pid(c->pid, info, options);
}

static void status_from(const siginfo_t *info, mpx_exit_status *st)
{
    memset(st, 0, sizeof *st);
    if (info->si_code == CLD_EXITED) {
        st->exited = 1;
        st->code = info->si_status;
    } else {
        st->signal = info->si_status;
        st->core_dumped = info->si_code == CLD_DUMPED;
    }
}

int mpx_child_open(mpx_child **out, pid_t pid, unsigned flags)
{
    if (!out || pid <= 0 || (flags & ~MPX_CHILD_POLL))
        return -EINVAL;
    mpx_child *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->pid = pid;
    c->fd = -1;
    if (!(flags & MPX_CHILD_POLL)) {
        int fd = mpx__pidfd_open(pid);
        if (fd >= 0) {
            c->fd = fd;
        } else if (fd != -ENOSYS) {
            free(c);
            return fd == -ESRCH ? -ECHILD : fd; /* no such process: not a child of ours */
        }
    }
    /* The pidfd first, then the check through it: checking the pid first would let the
     * child be reaped and its pid reused in between, and the pidfd name a stranger. */
    siginfo_t info;
    int r = wait_id(c, &info, WEXITED | WNOHANG | WNOWAIT);
    if (r < 0) { /* -ECHILD: not ours, or already reaped */
        if (c->fd >= 0)
            close(c->fd);
        free(c);
        return r;
    }
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return 0;
}

void mpx_child_destroy(mpx_child *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

pid_t mpx_child_pid(const mpx_child *c)
{
    return c ? c->pid : 0;
}

int mpx_child_fd(const mpx_child *c)
{
    if (!c)
        return -EINVAL;
    return c->fd >= 0 ? c->fd : -ENOSYS;
}

/* 1 ended (status in *st when known, i.e. unless *lost), 0 running, or -errno. With
 * `reap`, an ended child is reaped and its status kept. */
static int check(mpx_child *c, bool reap, mpx_exit_status *st, bool *lost)
{
    pthread_mutex_lock(&c->mu);
    int r;
    if (c->reaped || c->lost) {
        r = 1;
        goto done;
    }
    siginfo_t info;
    r = wait_id(c, &info, WEXITED | WNOHANG | (reap ? 0 : WNOWAIT));
    if (r == -ECHILD) {
        c->lost = true;
        r = 1;
    } else if (r == 0 && info.si_pid != 0) {
        status_from(&info, &c->status);
        c->reaped = reap;
        r = 1;
    }
done:
    if (r == 1) {
        if (st && !c->lost)
            *st = c->status;
        if (lost)
            *lost = c->lost;
    }
    pthread_mutex_unlock(&c->mu);
    return r;
}

int mpx_child_done(mpx_child *c)
{
    return c ? check(c, false, NULL, NULL) : -EINVAL;
}

/* Sleeps until the child may have ended or the deadline passes: 0 (look again),
 * -ETIMEDOUT or -EINTR. */
static int nap(mpx_child *const *cs, size_t n, mpx_deadline_t deadline);

int mpx_child_wait(mpx_child *c, mpx_deadline_t deadline, mpx_exit_status *status,
                   unsigned flags)
{
    if (!c || (flags & ~MPX_CHILD_NOREAP))
        return -EINVAL;
    bool reap = !(flags & MPX_CHILD_NOREAP);
    for (;;) {
        mpx_exit_status st;
        bool lost = false;
        int r = check(c, reap, &st, &lost);
        if (r < 0)
            return r;
        if (r == 1) {
            if (lost)
                return -ECHILD;
            if (status)
                *status = st;
            return 0;
        }
        if (deadline == MPX_NOWAIT)
            return -EAGAIN;
        if ((r = nap(&c, 1, deadline)) < 0)
            return r;
    }
}

int mpx_child_signal(mpx_child *c, int sig)
{
    if (!c)
        return -EINVAL;
    pthread_mutex_lock(&c->mu);
    int r;
    siginfo_t info;
    if (c->reaped || c->lost)
        r = -ESRCH; /* the pid may belong to somebody else by now */
    else if (wait_id(c, &info, WEXITED | WNOHANG | WNOWAIT) < 0 || info.si_pid != 0)
        r = -ESRCH; /* ended (or reaped elsewhere): nobody left to signal */
    else if (c->fd >= 0)
        r = mpx__pidfd_send_signal(c->fd, sig);
    else
        r = kill(c->pid, sig) < 0 ? -errno : 0;
    pthread_mutex_unlock(&c->mu);
    return r;
}

/* ---------------------------------------------------------------------------------------
 * Many children
 */

static int nap(mpx_child *const *cs, size_t n, mpx_deadline_t deadline)
{
    if (deadline != MPX_FOREVER && mpx__deadline_passed(deadline))
        return -ETIMEDOUT;
    struct pollfd stack[STACK_FDS], *fds = stack;
    if (n > STACK_FDS && !(fds = malloc(n * sizeof *fds)))
        return -ENOMEM;
    size_t nfds = 0;
    bool polling = false;
    for (size_t i = 0; i < n; i++) {
        if (cs[i]->fd >= 0)
            fds[nfds++] = (struct pollfd){.fd = cs[i]->fd, .events = POLLIN};
        else
            polling = true;
    }
    mpx_deadline_t until = deadline;
    if (polling) {
        mpx_deadline_t next = mpx__now_ns() + POLL_NS;
        until = until < next ? until : next;
    }
    int r = nfds ? mpx__poll_until(fds, nfds, until) : mpx__sleep_until(until);
    if (fds != stack)
        free(fds);
    if (r == -EINTR)
        return r;
    if (r == -ETIMEDOUT && until == deadline)
        return r;
    return 0;
}

static int first_done(mpx_child *const *cs, size_t n, size_t *index)
{
    for (size_t i = 0; i < n; i++) {
        int r = check(cs[i], false, NULL, NULL);
        if (r != 0) {
            *index = i;
            return r;
        }
    }
    return 0;
}

int mpx_wait_any(mpx_child *const *children, size_t n, mpx_deadline_t deadline, size_t *index)
{
    if (!children || n == 0 || !index)
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!children[i])
            return -EINVAL;
    for (;;) {
        int r = first_done(children, n, index);
        if (r < 0)
            return r;
        if (r == 1)
            return 0;
        if (deadline == MPX_NOWAIT)
            return -EAGAIN;
        if ((r = nap(children, n, deadline)) < 0)
            return r;
    }
}

int mpx_wait_all(mpx_child *const *children, size_t n, mpx_deadline_t deadline)
{
    if (n == 0)
        return 0;
    if (!children)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        size_t unused;
        int r = mpx_wait_any(&children[i], 1, deadline, &unused);
        if (r < 0)
            return r;
    }
    return 0;
}

int mpx_completion_create(mpx_completion **out, mpx_child *const *children, size_t n)
{
    if (!out || (n && !children))
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!children[i])
            return -EINVAL;
    mpx_completion *it = calloc(1, sizeof *it);
    if (!it)
        return -ENOMEM;
    it->handed = calloc(n ? n : 1, sizeof *it->handed);
    it->pending = calloc(n ? n : 1, sizeof *it->pending);
    if (!it->handed || !it->pending) {
        mpx_completion_destroy(it);
        return -ENOMEM;
    }
    it->children = children;
    it->n = it->left = n;
    *out = it;
    return 0;
}

int mpx_completion_next(mpx_completion *it, mpx_deadline_t deadline, size_t *index)
{
    if (!it || !index)
        return -EINVAL;
    if (it->left == 0)
        return -ENOENT;
    size_t map[STACK_FDS], *which = map;
    if (it->left > STACK_FDS && !(which = malloc(it->left * sizeof *which)))
        return -ENOMEM;
    size_t m = 0;
    for (size_t i = 0; i < it->n; i++)
        if (!it->handed[i]) {
            which[m] = i;
            it->pending[m++] = it->children[i];
        }
    size_t k;
    int r = mpx_wait_any(it->pending, m, deadline, &k);
    if (r == 0) {
        *index = which[k];
        it->handed[which[k]] = true;
        it->left--;
    }
    if (which != map)
        free(which);
    return r;
}

void mpx_completion_destroy(mpx_completion *it)
{
    if (!it)
        return;
    free(it->handed);
    free(it->pending);
    free(it);
}

/* ---------------------------------------------------------------------------------------
 * Names
 */

const char *mpx_signal_name(int sig)
{
    switch (sig) {
#define NAME(s)                                                                              \
    case s:                                                                                  \
        return #s;
        NAME(SIGHUP) NAME(SIGINT) NAME(SIGQUIT) NAME(SIGILL) NAME(SIGTRAP) NAME(SIGABRT)
        NAME(SIGBUS) NAME(SIGFPE) NAME(SIGKILL) NAME(SIGUSR1) NAME(SIGSEGV) NAME(SIGUSR2)
        NAME(SIGPIPE) NAME(SIGALRM) NAME(SIGTERM) NAME(SIGSTKFLT) NAME(SIGCHLD) NAME(SIGCONT)
        NAME(SIGSTOP) NAME(SIGTSTP) NAME(SIGTTIN) NAME(SIGTTOU) NAME(SIGURG) NAME(SIGXCPU)
        NAME(SIGXFSZ) NAME(SIGVTALRM) NAME(SIGPROF) NAME(SIGWINCH) NAME(SIGIO) NAME(SIGPWR)
        NAME(SIGSYS)
#undef NAME
    default:
        return NULL;
    }
}

int mpx_exit_describe(const mpx_exit_status *st, char *buf, size_t len)
{
    if (!st)
        return -EINVAL;
    if (st->exited)
        return snprintf(buf, len, "exited with status %d", st->code);
    const char *name = mpx_signal_name(st->signal);
    const char *core = st->core_dumped ? " (core dumped)" : "";
    if (name)
        return snprintf(buf, len, "killed by %s%s", name, core);
    return snprintf(buf, len, "killed by signal %d%s", st->signal, core);
}

int mpx_wait_fds(const int *fds, size_t n, mpx_deadline_t deadline, unsigned char *ready)
{
    if (n > 0 && (!fds || !ready))
        return -EINVAL;
    struct pollfd stack[STACK_FDS], *p = stack;
    if (n > STACK_FDS && !(p = malloc(n * sizeof *p)))
        return -ENOMEM;
    int err = 0;
    for (size_t i = 0; i < n; i++) {
        if (fds[i] < 0) {
            err = -EINVAL;
            goto out;
        }
        p[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
    }
    err = mpx__poll_until(p, n, deadline);
    if (err < 0)
        goto out;
    err = 0;
    for (size_t i = 0; i < n; i++)
        ready[i] = p[i].revents != 0;
out:
    if (p != stack)
        free(p);
    return err;
}
