/* Tests of the process-shared synchronization primitives (<mpx/sync.h>): locks (plain and
 * recursive), semaphores, events, conditions and barriers, shared between processes by
 * fork, by descriptor inheritance across exec and by SCM_RIGHTS, including processes that
 * die holding or waiting on them (killed, exited, or stopped at a fault point).
 *
 * The header is the contract; where a test relies on docs/sync.md instead (the arena
 * layout, the fault points and what survivors see) it says so. Timeouts are short so that
 * the file runs in well under a minute; speed is never asserted beyond generous bounds (a
 * call must not return before its deadline, nor seconds after it). */
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "mpx/error.h"
#include "mpx/fault.h"
#include "mpx/queue.h"
#include "mpx/sync.h"

#define MS 1000000LL
#define SEC 1000000000LL

/* ---------------------------------------------------------------------------------------
 * Small tools
 */

static mpx_deadline_t in_ms(int64_t ms) { return mpx_deadline_in(ms * MS); }

/* A scratch board shared by a test and the processes it forks. */
struct box {
    _Atomic int ready;
    _Atomic int go;
    _Atomic int done;
    _Atomic int woken;
    _Atomic int inside;
    _Atomic int violations;
    _Atomic int res[64];
    _Atomic long aux[64];
    _Atomic int64_t t[64];
    volatile long counter;
    _Atomic int arr[4096];
};

static struct box *box_new(void) { return th_shared_alloc(sizeof(struct box)); }
static void box_free(struct box *b) { munmap(b, sizeof *b); }

#define assert_elapsed(t0, want_ns)                                                        \
    th_assert_elapsed_at(__FILE__, __LINE__, (t0), (want_ns), 5 * SEC)

/* Reads one byte from `fd` within `timeout_s`; -1 on timeout or end of file. */
static int read_byte(int fd, double timeout_s)
{
    int64_t end = th_now_ns() + (int64_t)(timeout_s * (double)SEC);
    for (;;) {
        int64_t left = (end - th_now_ns()) / MS;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, left > 0 ? (int)left : 0);
        if (r > 0) {
            unsigned char c;
            ssize_t n = read(fd, &c, 1);
            if (n == 1)
                return c;
            if (n == 0)
                return -1;
            ASSERT_MSG(errno == EINTR || errno == EAGAIN, "read: %s", strerror(errno));
        } else if (r < 0) {
            ASSERT_MSG(errno == EINTR, "poll: %s", strerror(errno));
        }
        if (th_now_ns() >= end)
            return -1;
    }
}

static void write_byte(int fd, char c) { ASSERT_EQ_INT(write(fd, &c, 1), 1); }

static void on_usr1(int sig) { (void)sig; }

/* Waits (at most timeout_s) for child `pid` to exit with status 0, reaps it, and returns the
 * CPU time (user + system) it used, in milliseconds. */
static double reap_cpu_ms(pid_t pid, double timeout_s)
{
    int64_t end = th_now_ns() + (int64_t)(timeout_s * (double)SEC);
    while (th_running(pid)) {
        if (th_now_ns() > end) {
            th_kill_reap(pid);
            ASSERT_MSG(0, "child %ld did not exit within %.1f s", (long)pid, timeout_s);
        }
        th_sleep_ms(1);
    }
    struct rusage ru;
    int st;
    while (wait4(pid, &st, 0, &ru) < 0)
        ASSERT_MSG(errno == EINTR, "wait4: %s", strerror(errno));
    char buf[64];
    ASSERT_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %ld ended with %s", (long)pid,
               th_status_str(st, buf, sizeof buf));
    return (double)ru.ru_utime.tv_sec * 1e3 + (double)ru.ru_utime.tv_usec / 1e3 +
           (double)ru.ru_stime.tv_sec * 1e3 + (double)ru.ru_stime.tv_usec / 1e3;
}

static double rusage_children_ms(void)
{
    struct rusage ru;
    ASSERT_SYS(getrusage(RUSAGE_CHILDREN, &ru));
    return (double)ru.ru_utime.tv_sec * 1e3 + (double)ru.ru_utime.tv_usec / 1e3 +
           (double)ru.ru_stime.tv_sec * 1e3 + (double)ru.ru_stime.tv_usec / 1e3;
}

static int count_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "re");
    ASSERT_NOT_NULL(f);
    int n = 0, c;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

/* The identity of the file behind a descriptor. */
struct fid {
    dev_t dev;
    ino_t ino;
};

static struct fid fd_id(int fd)
{
    struct stat st;
    ASSERT_SYS(fstat(fd, &st));
    return (struct fid){st.st_dev, st.st_ino};
}

static uint64_t fd_size(int fd)
{
    struct stat st;
    ASSERT_SYS(fstat(fd, &st));
    return (uint64_t)st.st_size;
}

/* ---------------------------------------------------------------------------------------
 * Constructors that assert
 */

static mpx_lock *lock_new(int kind)
{
    mpx_lock *l = NULL;
    ASSERT_OK(mpx_lock_create(&l, kind));
    ASSERT_NOT_NULL(l);
    return l;
}

static mpx_sem *sem_new(unsigned value, unsigned maxvalue)
{
    mpx_sem *s = NULL;
    ASSERT_OK(mpx_sem_create(&s, value, maxvalue));
    ASSERT_NOT_NULL(s);
    return s;
}

static mpx_event *event_new(void)
{
    mpx_event *e = NULL;
    ASSERT_OK(mpx_event_create(&e));
    ASSERT_NOT_NULL(e);
    return e;
}

static mpx_cond *cond_new(void)
{
    mpx_cond *c = NULL;
    ASSERT_OK(mpx_cond_create(&c));
    ASSERT_NOT_NULL(c);
    return c;
}

static mpx_barrier *barrier_new(unsigned parties)
{
    mpx_barrier *b = NULL;
    ASSERT_OK(mpx_barrier_create(&b, parties));
    ASSERT_NOT_NULL(b);
    return b;
}

/* The kinds of object, for table-driven attach tests. */
enum kind { K_LOCK, K_RLOCK, K_SEM, K_EVENT, K_COND, K_BARRIER, K_N };
static const char *const kind_names[K_N] = {"lock", "rlock", "sem", "event", "cond", "barrier"};

struct objs {
    mpx_lock *l, *r;
    mpx_sem *s;
    mpx_event *e;
    mpx_cond *c;
    mpx_barrier *b;
};

static struct objs objs_new(void)
{
    return (struct objs){lock_new(MPX_LOCK_PLAIN), lock_new(MPX_LOCK_RECURSIVE), sem_new(3, 7),
                         event_new(), cond_new(), barrier_new(4)};
}

static void objs_destroy(struct objs *o)
{
    mpx_lock_destroy(o->l);
    mpx_lock_destroy(o->r);
    mpx_sem_destroy(o->s);
    mpx_event_destroy(o->e);
    mpx_cond_destroy(o->c);
    mpx_barrier_destroy(o->b);
}

static int objs_fd(const struct objs *o, int k)
{
    switch (k) {
    case K_LOCK: return mpx_lock_fd(o->l);
    case K_RLOCK: return mpx_lock_fd(o->r);
    case K_SEM: return mpx_sem_fd(o->s);
    case K_EVENT: return mpx_event_fd(o->e);
    case K_COND: return mpx_cond_fd(o->c);
    default: return mpx_barrier_fd(o->b);
    }
}

static uint64_t objs_offset(const struct objs *o, int k)
{
    switch (k) {
    case K_LOCK: return mpx_lock_offset(o->l);
    case K_RLOCK: return mpx_lock_offset(o->r);
    case K_SEM: return mpx_sem_offset(o->s);
    case K_EVENT: return mpx_event_offset(o->e);
    case K_COND: return mpx_cond_offset(o->c);
    default: return mpx_barrier_offset(o->b);
    }
}

/* The body of one case of attach_kind(): attaches an mpx_<type> at `off` of `fd` into r,
 * and if that worked checks the handle (and, when `check`, the assertion `check_assert`
 * on it, x), then destroys it. */
#define ATTACH_AND_CHECK(type, check_assert)                                                 \
    do {                                                                                     \
        mpx_##type *x = NULL;                                                                \
        r = mpx_##type##_attach(&x, fd, off);                                                \
        if (r == 0) {                                                                        \
            ASSERT_NOT_NULL(x);                                                              \
            ASSERT_EQ_UINT(mpx_##type##_offset(x), off);                                     \
            if (check)                                                                       \
                check_assert;                                                                \
            mpx_##type##_destroy(x);                                                         \
        }                                                                                    \
    } while (0)

/* Attaches an object of kind `k` (K_LOCK and K_RLOCK both use mpx_lock_attach), checks the
 * attached object looks like one made by objs_new() when `check`, and destroys the handle.
 * Returns the attach result. */
static int attach_kind(int k, int fd, uint64_t off, bool check)
{
    int r;
    switch (k) {
    case K_LOCK:
    case K_RLOCK: {
        int kind = k == K_LOCK ? MPX_LOCK_PLAIN : MPX_LOCK_RECURSIVE;
        ATTACH_AND_CHECK(lock, ASSERT_EQ_INT(mpx_lock_kind(x), kind));
        break;
    }
    case K_SEM: ATTACH_AND_CHECK(sem, ASSERT_EQ_UINT(mpx_sem_maxvalue(x), 7)); break;
    case K_EVENT: ATTACH_AND_CHECK(event, ASSERT_EQ_INT(mpx_event_is_set(x), 0)); break;
    case K_COND: ATTACH_AND_CHECK(cond, ASSERT_EQ_UINT(mpx_cond_waiters(x), 0)); break;
    default: ATTACH_AND_CHECK(barrier, ASSERT_EQ_UINT(mpx_barrier_parties(x), 4)); break;
    }
    return r;
}

#undef ATTACH_AND_CHECK

static void fdoff_arg(char *buf, size_t len, int fd, uint64_t off)
{
    snprintf(buf, len, "%d:%" PRIu64, fd, off);
}

static void parse_fdoff(const char *s, int *fd, uint64_t *off)
{
    ASSERT_MSG(sscanf(s, "%d:%" SCNu64, fd, off) == 2, "bad fd:offset argument %s", s);
}

/* A close-on-exec duplicate, for passing to a helper through th_spawn_helper (which clears
 * the flag in the child only). */
static int dup_cloexec(int fd)
{
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    ASSERT_SYS(d);
    return d;
}

/* ---------------------------------------------------------------------------------------
 * Creation, queries, arguments
 */

TEST(create_and_query)
{
    mpx_lock *l = lock_new(MPX_LOCK_PLAIN);
    mpx_lock *r = lock_new(MPX_LOCK_RECURSIVE);
    ASSERT_EQ_INT(mpx_lock_kind(l), MPX_LOCK_PLAIN);
    ASSERT_EQ_INT(mpx_lock_kind(r), MPX_LOCK_RECURSIVE);
    ASSERT_OK(mpx_lock_fd(l));
    ASSERT_OK(mpx_lock_fd(r));
    ASSERT_EQ_INT(mpx_lock_owner(l), 0); /* created unlocked */
    ASSERT_EQ_INT(mpx_lock_owner(r), 0);
    ASSERT_EQ_INT(mpx_lock_is_mine(l), 0);
    ASSERT_EQ_INT(mpx_lock_is_mine(r), 0);
    ASSERT_EQ_UINT(mpx_lock_count(l), 0);
    ASSERT_EQ_UINT(mpx_lock_count(r), 0);

    mpx_sem *s = sem_new(2, MPX_SEM_VALUE_MAX);
    ASSERT_EQ_UINT(mpx_sem_value(s), 2);
    ASSERT_EQ_UINT(mpx_sem_maxvalue(s), MPX_SEM_VALUE_MAX);
    ASSERT_OK(mpx_sem_fd(s));
    mpx_sem *bs = sem_new(1, 4);
    ASSERT_EQ_UINT(mpx_sem_value(bs), 1);
    ASSERT_EQ_UINT(mpx_sem_maxvalue(bs), 4);

    mpx_event *e = event_new();
    ASSERT_EQ_INT(mpx_event_is_set(e), 0); /* created cleared */
    ASSERT_OK(mpx_event_fd(e));

    mpx_cond *c = cond_new();
    ASSERT_EQ_UINT(mpx_cond_waiters(c), 0);
    ASSERT_OK(mpx_cond_fd(c));

    mpx_barrier *b = barrier_new(3);
    ASSERT_EQ_UINT(mpx_barrier_parties(b), 3);
    ASSERT_EQ_UINT(mpx_barrier_n_waiting(b), 0);
    ASSERT_EQ_INT(mpx_barrier_broken(b), 0);
    ASSERT_OK(mpx_barrier_fd(b));

    /* Distinct objects of one arena have distinct offsets. */
    struct {
        int fd;
        uint64_t off;
    } all[] = {{mpx_lock_fd(l), mpx_lock_offset(l)},       {mpx_lock_fd(r), mpx_lock_offset(r)},
               {mpx_sem_fd(s), mpx_sem_offset(s)},         {mpx_sem_fd(bs), mpx_sem_offset(bs)},
               {mpx_event_fd(e), mpx_event_offset(e)},     {mpx_cond_fd(c), mpx_cond_offset(c)},
               {mpx_barrier_fd(b), mpx_barrier_offset(b)}};
    size_t n = sizeof all / sizeof all[0];
    for (size_t i = 0; i < n; i++) {
        ASSERT_MSG(all[i].off != 0, "object %zu at offset 0, where the arena header is", i);
        for (size_t j = i + 1; j < n; j++) {
            struct fid a = fd_id(all[i].fd), bb = fd_id(all[j].fd);
            if (a.dev == bb.dev && a.ino == bb.ino)
                ASSERT_MSG(all[i].off != all[j].off, "objects %zu and %zu share offset %" PRIu64,
                           i, j, all[i].off);
        }
    }

    mpx_lock_destroy(l);
    mpx_lock_destroy(r);
    mpx_sem_destroy(s);
    mpx_sem_destroy(bs);
    mpx_event_destroy(e);
    mpx_cond_destroy(c);
    mpx_barrier_destroy(b);
    /* NULL is ignored by every destroy. */
    mpx_lock_destroy(NULL);
    mpx_sem_destroy(NULL);
    mpx_event_destroy(NULL);
    mpx_cond_destroy(NULL);
    mpx_barrier_destroy(NULL);
}

TEST(null_and_bad_arguments)
{
    pid_t dead = 77;
    uint64_t ticket = 0;
    /* create */
    ASSERT_ERR(mpx_lock_create(NULL, MPX_LOCK_PLAIN), -EINVAL);
    mpx_lock *l = NULL;
    ASSERT_ERR(mpx_lock_create(&l, 2), -EINVAL);
    ASSERT_ERR(mpx_lock_create(&l, -1), -EINVAL);
    ASSERT_ERR(mpx_sem_create(NULL, 1, 0), -EINVAL);
    mpx_sem *s = NULL;
    ASSERT_ERR(mpx_sem_create(&s, 5, 3), -EINVAL);                       /* value > max */
    ASSERT_ERR(mpx_sem_create(&s, 0, MPX_SEM_VALUE_MAX + 1u), -EINVAL);  /* max too big */
    ASSERT_ERR(mpx_sem_create(&s, MPX_SEM_VALUE_MAX + 1u, MPX_SEM_VALUE_MAX), -EINVAL);
    ASSERT_ERR(mpx_sem_create(&s, UINT32_MAX, UINT32_MAX), -EINVAL);
    ASSERT_ERR(mpx_event_create(NULL), -EINVAL);
    ASSERT_ERR(mpx_cond_create(NULL), -EINVAL);
    ASSERT_ERR(mpx_barrier_create(NULL, 2), -EINVAL);
    mpx_barrier *b = NULL;
    ASSERT_ERR(mpx_barrier_create(&b, 0), -EINVAL);

    /* attach with a NULL out */
    struct objs o = objs_new();
    ASSERT_ERR(mpx_lock_attach(NULL, mpx_lock_fd(o.l), mpx_lock_offset(o.l)), -EINVAL);
    ASSERT_ERR(mpx_sem_attach(NULL, mpx_sem_fd(o.s), mpx_sem_offset(o.s)), -EINVAL);
    ASSERT_ERR(mpx_event_attach(NULL, mpx_event_fd(o.e), mpx_event_offset(o.e)), -EINVAL);
    ASSERT_ERR(mpx_cond_attach(NULL, mpx_cond_fd(o.c), mpx_cond_offset(o.c)), -EINVAL);
    ASSERT_ERR(mpx_barrier_attach(NULL, mpx_barrier_fd(o.b), mpx_barrier_offset(o.b)), -EINVAL);

    /* the documented NULL answers of the queries */
    ASSERT_ERR(mpx_lock_fd(NULL), -EINVAL);
    ASSERT_EQ_UINT(mpx_lock_offset(NULL), 0);
    ASSERT_ERR(mpx_lock_kind(NULL), -EINVAL);
    ASSERT_ERR(mpx_lock_is_mine(NULL), -EINVAL);
    ASSERT_ERR(mpx_sem_fd(NULL), -EINVAL);
    ASSERT_EQ_UINT(mpx_sem_offset(NULL), 0);
    ASSERT_ERR(mpx_event_fd(NULL), -EINVAL);
    ASSERT_EQ_UINT(mpx_event_offset(NULL), 0);
    ASSERT_ERR(mpx_event_is_set(NULL), -EINVAL);
    ASSERT_ERR(mpx_cond_fd(NULL), -EINVAL);
    ASSERT_EQ_UINT(mpx_cond_offset(NULL), 0);
    ASSERT_ERR(mpx_barrier_fd(NULL), -EINVAL);
    ASSERT_EQ_UINT(mpx_barrier_offset(NULL), 0);
    ASSERT_ERR(mpx_barrier_broken(NULL), -EINVAL);

    /* operations on a NULL handle: -EINVAL, as everywhere in libmpx, and no output touched */
    ASSERT_ERR(mpx_lock_acquire(NULL, MPX_NOWAIT, &dead), -EINVAL);
    ASSERT_ERR(mpx_lock_acquire(NULL, MPX_FOREVER, &dead), -EINVAL);
    ASSERT_EQ_INT(dead, 77);
    ASSERT_ERR(mpx_lock_release(NULL), -EINVAL);
    ASSERT_ERR(mpx_sem_acquire(NULL, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_sem_release(NULL), -EINVAL);
    ASSERT_ERR(mpx_event_set(NULL), -EINVAL);
    ASSERT_ERR(mpx_event_clear(NULL), -EINVAL);
    ASSERT_ERR(mpx_event_wait(NULL, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_cond_wait(NULL, o.l, MPX_NOWAIT, &dead), -EINVAL);
    ASSERT_ERR(mpx_cond_wait(o.c, NULL, MPX_NOWAIT, &dead), -EINVAL);
    ASSERT_ERR(mpx_cond_notify(NULL, o.l, 1), -EINVAL);
    ASSERT_ERR(mpx_cond_notify(o.c, NULL, 1), -EINVAL);
    ASSERT_ERR(mpx_cond_notify_all(NULL, o.l), -EINVAL);
    ASSERT_ERR(mpx_cond_notify_all(o.c, NULL), -EINVAL);
    ASSERT_EQ_INT(dead, 77);
    ASSERT_ERR(mpx_barrier_wait(NULL, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_barrier_arrive(NULL, MPX_NOWAIT, &ticket), -EINVAL);
    ASSERT_ERR(mpx_barrier_arrive(o.b, MPX_NOWAIT, NULL), -EINVAL);
    ASSERT_ERR(mpx_barrier_await(NULL, 0, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_barrier_trip(NULL, 0), -EINVAL);
    ASSERT_ERR(mpx_barrier_abort(NULL), -EINVAL);
    ASSERT_ERR(mpx_barrier_reset(NULL), -EINVAL);
    /* Refused calls changed nothing. */
    ASSERT_EQ_UINT(mpx_barrier_n_waiting(o.b), 0);
    ASSERT_EQ_INT(mpx_barrier_broken(o.b), 0);
    ASSERT_EQ_UINT(mpx_cond_waiters(o.c), 0);
    objs_destroy(&o);
}

/* A memfd of `size` bytes holding `content`, sealed against shrinking when `seal`. */
static int make_memfd(size_t size, const void *content, size_t clen, bool seal)
{
    int fd = memfd_create("not-an-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    ASSERT_SYS(fd);
    ASSERT_SYS(ftruncate(fd, (off_t)size));
    if (clen)
        ASSERT_EQ_INT(pwrite(fd, content, clen, 0), (ssize_t)clen);
    if (seal)
        ASSERT_SYS(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL));
    return fd;
}

/* Every attach function refuses `fd` (with any offset of a real object) with `want`. */
static void assert_all_refuse(const struct objs *o, int fd, int want)
{
    for (int k = 0; k < K_N; k++) {
        int r = attach_kind(k, fd, objs_offset(o, k), false);
        ASSERT_MSG(r == want, "%s attach with descriptor %d: got %d %s, want %s", kind_names[k],
                   fd, r, mpx_errname(r), mpx_errname(want));
    }
}

TEST(attach_refuses_bad_descriptors)
{
    struct objs o = objs_new();
    /* Not a descriptor at all. */
    assert_all_refuse(&o, -1, -EBADF);
    assert_all_refuse(&o, -12345, -EBADF);
    int p[2];
    ASSERT_SYS(pipe2(p, O_CLOEXEC));
    close(p[1]);
    for (int k = 0; k < K_N; k++) /* a closed descriptor number */
        ASSERT(attach_kind(k, p[1], objs_offset(&o, k), false) < 0);
    /* A pipe, /dev/null, a regular file, a directory: not memfds, so not arenas. */
    assert_all_refuse(&o, p[0], MPX_EBADSEG);
    close(p[0]);
    int dn = open("/dev/null", O_RDWR | O_CLOEXEC);
    ASSERT_SYS(dn);
    assert_all_refuse(&o, dn, MPX_EBADSEG);
    close(dn);
    int dir = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_SYS(dir);
    assert_all_refuse(&o, dir, MPX_EBADSEG);
    close(dir);

    /* A regular file holding a byte-for-byte copy of a real arena is still not a memfd. */
    int afd = mpx_lock_fd(o.l);
    uint64_t asize = fd_size(afd);
    ASSERT(asize > 0 && asize < (64u << 20));
    unsigned char *copy = malloc(asize);
    ASSERT_NOT_NULL(copy);
    ASSERT_EQ_INT(pread(afd, copy, asize, 0), (ssize_t)asize);
    char path[] = "/tmp/mpx-sync-test-XXXXXX";
    int f = mkostemp(path, O_CLOEXEC);
    ASSERT_SYS(f);
    unlink(path);
    ASSERT_EQ_INT(pwrite(f, copy, asize, 0), (ssize_t)asize);
    assert_all_refuse(&o, f, MPX_EBADSEG);
    close(f);
    /* The same copy in a memfd that is not sealed: it could be shrunk under our mapping. */
    int m = make_memfd(asize, copy, asize, false);
    assert_all_refuse(&o, m, MPX_EBADSEG);
    close(m);
    /* Sealed memfds of zeros, of garbage, and an empty one. */
    m = make_memfd(asize, NULL, 0, true);
    assert_all_refuse(&o, m, MPX_EBADSEG);
    close(m);
    uint64_t rs = 42;
    for (uint64_t i = 0; i < asize; i++)
        copy[i] = (unsigned char)th_rand(&rs);
    m = make_memfd(asize, copy, asize, true);
    assert_all_refuse(&o, m, MPX_EBADSEG);
    close(m);
    m = make_memfd(0, NULL, 0, true);
    assert_all_refuse(&o, m, MPX_EBADSEG);
    close(m);
    free(copy);

    /* Another libmpx segment (a queue) is not an arena either. */
    mpx_queue *q = NULL;
    ASSERT_OK(mpx_queue_create(&q, NULL));
    assert_all_refuse(&o, mpx_queue_fd(q), MPX_EBADSEG);
    mpx_queue_destroy(q);

    /* The right descriptor still works after all that. */
    for (int k = 0; k < K_N; k++)
        ASSERT_OK(attach_kind(k, objs_fd(&o, k), objs_offset(&o, k), true));
    objs_destroy(&o);
}

TEST(attach_refuses_bad_offsets)
{
    struct objs o = objs_new();
    mpx_lock *l2 = lock_new(MPX_LOCK_PLAIN);
    for (int k = 0; k < K_N; k++) {
        int fd = objs_fd(&o, k);
        uint64_t off = objs_offset(&o, k), size = fd_size(fd);
        ASSERT_MSG(off > 0 && off < size, "%s at offset %" PRIu64 " of a %" PRIu64 "-byte arena",
                   kind_names[k], off, size);
        uint64_t bad[] = {0,                    /* the arena header */
                          off + 1,              /* misaligned */
                          off - 1,              /* misaligned */
                          size,                 /* just past the end */
                          (size & ~(uint64_t)7) - 8, /* the last 8 bytes: no object fits */
                          size + 4096,          /* beyond the end */
                          (uint64_t)1 << 40,    /* far beyond */
                          UINT64_MAX & ~(uint64_t)63, /* would overflow off + size */
                          UINT64_MAX};
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            int r = attach_kind(k, fd, bad[i], false);
            ASSERT_MSG(r == MPX_EBADSEG, "%s attach at offset %" PRIu64 " (object at %" PRIu64
                                         "): got %d %s, want MPX_EBADSEG",
                       kind_names[k], bad[i], off, r, mpx_errname(r));
        }
    }
    /* Aligned offsets inside a larger object (a condition is well over 64 bytes). */
    for (int k = 0; k < K_N; k++) {
        int r = attach_kind(k, mpx_cond_fd(o.c), mpx_cond_offset(o.c) + 64, false);
        ASSERT_MSG(r == MPX_EBADSEG, "%s attach inside a condition: got %d %s", kind_names[k],
                   r, mpx_errname(r));
        r = attach_kind(k, mpx_barrier_fd(o.b), mpx_barrier_offset(o.b) + 64, false);
        ASSERT_MSG(r == MPX_EBADSEG, "%s attach inside a barrier: got %d %s", kind_names[k], r,
                   mpx_errname(r));
    }
    /* The middle of an object: half way between two consecutive locks. */
    uint64_t a = mpx_lock_offset(o.l), b = mpx_lock_offset(l2);
    if (fd_id(mpx_lock_fd(o.l)).ino == fd_id(mpx_lock_fd(l2)).ino && b > a + 16) {
        uint64_t mid = a + (((b - a) / 2) & ~(uint64_t)7);
        if (mid != a)
            ASSERT_ERR(attach_kind(K_LOCK, mpx_lock_fd(o.l), mid, false), MPX_EBADSEG);
    }
    mpx_lock_destroy(l2);
    objs_destroy(&o);
}

TEST(attach_refuses_other_kinds)
{
    struct objs o = objs_new();
    for (int want = 0; want < K_N; want++) {
        for (int at = 0; at < K_N; at++) {
            int r = attach_kind(want, objs_fd(&o, at), objs_offset(&o, at), want == at);
            bool same = want == at || (want <= K_RLOCK && at <= K_RLOCK); /* both locks */
            if (same)
                ASSERT_MSG(r == 0, "%s attach at a %s: %d %s", kind_names[want], kind_names[at],
                           r, mpx_errname(r));
            else
                ASSERT_MSG(r == MPX_EBADSEG, "%s attach at a %s: got %d %s, want MPX_EBADSEG",
                           kind_names[want], kind_names[at], r, mpx_errname(r));
        }
    }
    /* A lock attached at a recursive lock's offset is recursive, and the converse. */
    mpx_lock *x = NULL;
    ASSERT_OK(mpx_lock_attach(&x, mpx_lock_fd(o.r), mpx_lock_offset(o.r)));
    ASSERT_EQ_INT(mpx_lock_kind(x), MPX_LOCK_RECURSIVE);
    mpx_lock_destroy(x);
    ASSERT_OK(mpx_lock_attach(&x, mpx_lock_fd(o.l), mpx_lock_offset(o.l)));
    ASSERT_EQ_INT(mpx_lock_kind(x), MPX_LOCK_PLAIN);
    mpx_lock_destroy(x);
    objs_destroy(&o);
}

/* Helper: argv[0] kind name, argv[1] "fd:offset", argv[2] the expected attach result. A
 * fresh process, with no mapping of any arena yet, so nothing is reused from an earlier
 * attach. */
HELPER(expect_attach)
{
    ASSERT_EQ_INT(argc, 3);
    int k = -1;
    for (int i = 0; i < K_N; i++)
        if (strcmp(argv[0], kind_names[i]) == 0)
            k = i;
    ASSERT(k >= 0);
    int fd;
    uint64_t off;
    parse_fdoff(argv[1], &fd, &off);
    int want = atoi(argv[2]);
    int r = attach_kind(k, fd, off, false);
    ASSERT_MSG(r == want, "%s attach at %s: got %d %s, want %d %s", argv[0], argv[1], r,
               mpx_errname(r), want, mpx_errname(want));
    return 0;
}

static void expect_attach_in_helper(int k, int fd, uint64_t off, int want)
{
    int d = dup_cloexec(fd);
    char a1[48], a2[16];
    fdoff_arg(a1, sizeof a1, d, off);
    snprintf(a2, sizeof a2, "%d", want);
    const char *args[] = {kind_names[k], a1, a2, NULL};
    pid_t pid = th_spawn_helper("expect_attach", args, &d, 1, NULL);
    th_wait_ok(pid, 20);
    close(d);
}

TEST(attach_refuses_corrupted_arena_header)
{
    struct objs o = objs_new();
    int fd = mpx_lock_fd(o.l);
    /* A fresh process attaches every kind. */
    for (int k = 0; k < K_N; k++)
        expect_attach_in_helper(k, objs_fd(&o, k), objs_offset(&o, k), 0);
    /* The arena header starts with its magic: flip it, and nobody new may attach. */
    unsigned char *h = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ASSERT(h != MAP_FAILED);
    unsigned char saved[8];
    memcpy(saved, h, 8);
    for (int i = 0; i < 4; i++)
        h[i] = (unsigned char)~h[i];
    for (int k = 0; k < K_N; k++)
        expect_attach_in_helper(k, objs_fd(&o, k), objs_offset(&o, k), MPX_EBADSEG);
    memset(h, 0, 8);
    expect_attach_in_helper(K_LOCK, fd, mpx_lock_offset(o.l), MPX_EBADSEG);
    /* docs/sync.md: u32 magic, then u32 version (1). Another version is MPX_EVERSION. */
    memcpy(h, saved, 8);
    uint32_t version;
    memcpy(&version, h + 4, 4);
    ASSERT_EQ_UINT(version, 1);
    uint32_t versions[] = {0, 2, UINT32_MAX};
    for (size_t i = 0; i < 3; i++) {
        memcpy(h + 4, &versions[i], 4);
        expect_attach_in_helper(K_SEM, mpx_sem_fd(o.s), mpx_sem_offset(o.s), MPX_EVERSION);
    }
    /* Repaired: attaches again. */
    memcpy(h, saved, 8);
    for (int k = 0; k < K_N; k++)
        expect_attach_in_helper(k, objs_fd(&o, k), objs_offset(&o, k), 0);
    munmap(h, 4096);
    objs_destroy(&o);
}

TEST(arena_is_a_sealed_memfd)
{
    struct objs o = objs_new();
    for (int k = 0; k < K_N; k++) {
        int fd = objs_fd(&o, k);
        char path[64], target[256];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(path, target, sizeof target - 1);
        ASSERT_SYS(n);
        target[n] = 0;
        /* Nothing in /dev/shm: an anonymous memfd. */
        ASSERT_MSG(strncmp(target, "/memfd:", 7) == 0, "%s arena is %s, not a memfd",
                   kind_names[k], target);
        int seals = fcntl(fd, F_GET_SEALS);
        ASSERT_SYS(seals);
        ASSERT_MSG(seals & F_SEAL_SHRINK, "%s arena is not sealed against shrinking (seals 0x%x)",
                   kind_names[k], seals);
        int fl = fcntl(fd, F_GETFD);
        ASSERT(fl >= 0);
        ASSERT_MSG(fl & FD_CLOEXEC, "%s arena descriptor is not close-on-exec", kind_names[k]);
    }
    objs_destroy(&o);
}

TEST(attach_in_same_process)
{
    mpx_lock *l = lock_new(MPX_LOCK_PLAIN);
    mpx_lock *a = NULL;
    /* fd is borrowed: attach through a duplicate, close it, the handle works on. */
    int d = dup_cloexec(mpx_lock_fd(l));
    ASSERT_OK(mpx_lock_attach(&a, d, mpx_lock_offset(l)));
    close(d);
    ASSERT(fcntl(mpx_lock_fd(a), F_GETFD) >= 0);
    ASSERT_EQ_INT(mpx_lock_kind(a), MPX_LOCK_PLAIN);
    ASSERT_EQ_UINT(mpx_lock_offset(a), mpx_lock_offset(l));
    /* Two handles, one lock. */
    ASSERT_OK(mpx_lock_acquire(a, MPX_NOWAIT, NULL));
    ASSERT_EQ_INT(mpx_lock_owner(l), getpid());
    ASSERT_EQ_UINT(mpx_lock_count(l), 1);
    ASSERT_ERR(mpx_lock_acquire(l, MPX_NOWAIT, NULL), -EAGAIN);
    /* A lock held by this process stays held when the handle goes. */
    mpx_lock_destroy(a);
    ASSERT_EQ_INT(mpx_lock_owner(l), getpid());
    ASSERT_ERR(mpx_lock_acquire(l, MPX_NOWAIT, NULL), -EAGAIN);
    ASSERT_OK(mpx_lock_release(l));
    ASSERT_EQ_INT(mpx_lock_owner(l), 0);

    /* The object outlives the handle that created it. */
    ASSERT_OK(mpx_lock_attach(&a, mpx_lock_fd(l), mpx_lock_offset(l)));
    ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
    mpx_lock_destroy(l);
    ASSERT_EQ_INT(mpx_lock_owner(a), getpid());
    ASSERT_ERR(mpx_lock_acquire(a, MPX_NOWAIT, NULL), -EAGAIN);
    ASSERT_OK(mpx_lock_release(a));
    ASSERT_OK(mpx_lock_acquire(a, MPX_NOWAIT, NULL));
    ASSERT_OK(mpx_lock_release(a));
    ASSERT(fcntl(mpx_lock_fd(a), F_GETFD) >= 0);

    /* A recursive lock through two handles in one thread: one owner, one count. */
    mpx_lock *r = lock_new(MPX_LOCK_RECURSIVE), *r2 = NULL;
    ASSERT_OK(mpx_lock_attach(&r2, mpx_lock_fd(r), mpx_lock_offset(r)));
    ASSERT_OK(mpx_lock_acquire(r, MPX_NOWAIT, NULL));
    ASSERT_OK(mpx_lock_acquire(r2, MPX_NOWAIT, NULL));
    ASSERT_EQ_UINT(mpx_lock_count(r), 2);
    ASSERT_EQ_UINT(mpx_lock_count(r2), 2);
    ASSERT_OK(mpx_lock_release(r));
    ASSERT_OK(mpx_lock_release(r2));
    ASSERT_EQ_INT(mpx_lock_owner(r), 0);
    ASSERT_ERR(mpx_lock_release(r2), -EPERM);

    /* The other kinds: state set through one handle is seen through the other. */
    mpx_sem *s = sem_new(0, 5), *s2 = NULL;
    ASSERT_OK(mpx_sem_attach(&s2, mpx_sem_fd(s), mpx_sem_offset(s)));
    ASSERT_OK(mpx_sem_release(s));
    ASSERT_EQ_UINT(mpx_sem_value(s2), 1);
    ASSERT_EQ_UINT(mpx_sem_maxvalue(s2), 5);
    ASSERT_OK(mpx_sem_acquire(s2, MPX_NOWAIT));
    ASSERT_EQ_UINT(mpx_sem_value(s), 0);
    mpx_event *e = event_new(), *e2 = NULL;
    ASSERT_OK(mpx_event_attach(&e2, mpx_event_fd(e), mpx_event_offset(e)));
    ASSERT_OK(mpx_event_set(e));
    ASSERT_EQ_INT(mpx_event_is_set(e2), 1);
    ASSERT_OK(mpx_event_wait(e2, MPX_NOWAIT));
    ASSERT_OK(mpx_event_clear(e2));
    ASSERT_EQ_INT(mpx_event_is_set(e), 0);
    mpx_barrier *b = barrier_new(1), *b2 = NULL;
    ASSERT_OK(mpx_barrier_attach(&b2, mpx_barrier_fd(b), mpx_barrier_offset(b)));
    ASSERT_EQ_UINT(mpx_barrier_parties(b2), 1);
    ASSERT_OK(mpx_barrier_abort(b));
    ASSERT_EQ_INT(mpx_barrier_broken(b2), 1);
    ASSERT_OK(mpx_barrier_reset(b2));
    ASSERT_EQ_INT(mpx_barrier_broken(b), 0);
    mpx_cond *c = cond_new(), *c2 = NULL;
    ASSERT_OK(mpx_cond_attach(&c2, mpx_cond_fd(c), mpx_cond_offset(c)));
    ASSERT_EQ_UINT(mpx_cond_waiters(c2), 0);

    mpx_lock_destroy(a);
    mpx_lock_destroy(r);
    mpx_lock_destroy(r2);
    mpx_sem_destroy(s);
    mpx_sem_destroy(s2);
    mpx_event_destroy(e);
    mpx_event_destroy(e2);
    mpx_barrier_destroy(b);
    mpx_barrier_destroy(b2);
    mpx_cond_destroy(c);
    mpx_cond_destroy(c2);
}

struct slot_id {
    dev_t dev;
    ino_t ino;
    uint64_t off;
};

static int slot_cmp(const void *x, const void *y)
{
    const struct slot_id *a = x, *b = y;
    if (a->dev != b->dev)
        return a->dev < b->dev ? -1 : 1;
    if (a->ino != b->ino)
        return a->ino < b->ino ? -1 : 1;
    if (a->off != b->off)
        return a->off < b->off ? -1 : 1;
    return 0;
}

static void assert_slots_distinct(struct slot_id *ids, size_t n)
{
    qsort(ids, n, sizeof *ids, slot_cmp);
    for (size_t i = 1; i < n; i++)
        ASSERT_MSG(slot_cmp(&ids[i - 1], &ids[i]) != 0,
                   "two live objects share arena inode %lu offset %" PRIu64,
                   (unsigned long)ids[i].ino, ids[i].off);
}

static struct slot_id slot_of(int fd, uint64_t off)
{
    struct fid f = fd_id(fd);
    return (struct slot_id){f.dev, f.ino, off};
}

TEST(many_objects_few_descriptors)
{
    enum { N = 5000, NATTACH = 1000 };
    int fds0 = th_count_fds();
    int maps0 = count_maps();
    mpx_lock **ls = calloc(N, sizeof *ls);
    struct slot_id *ids = calloc(N, sizeof *ids);
    ASSERT(ls && ids);
    for (int i = 0; i < N; i++) {
        ls[i] = lock_new(MPX_LOCK_PLAIN);
        ids[i] = slot_of(mpx_lock_fd(ls[i]), mpx_lock_offset(ls[i]));
    }
    int fds = th_count_fds() - fds0;
    ASSERT_MSG(fds <= 8, "%d locks hold %d descriptors", N, fds);
    int maps = count_maps() - maps0;
    ASSERT_MSG(maps <= 64, "%d locks added %d memory mappings", N, maps);
    assert_slots_distinct(ids, N);
    /* Every one is a lock of its own: all can be held at once, and each is then busy. */
    for (int i = 0; i < N; i++)
        ASSERT_OK(mpx_lock_acquire(ls[i], MPX_NOWAIT, NULL));
    pid_t pid = th_fork();
    if (pid == 0) {
        for (int i = 0; i < N; i += 7)
            ASSERT_ERR(mpx_lock_acquire(ls[i], MPX_NOWAIT, NULL), -EAGAIN);
        /* Attaching from the inherited descriptors works too. */
        mpx_lock *x = NULL;
        ASSERT_OK(mpx_lock_attach(&x, mpx_lock_fd(ls[N - 1]), mpx_lock_offset(ls[N - 1])));
        ASSERT_EQ_INT(mpx_lock_owner(x), getppid());
        mpx_lock_destroy(x);
        _exit(0);
    }
    th_wait_ok(pid, 20);
    for (int i = 0; i < N; i++)
        ASSERT_OK(mpx_lock_release(ls[i]));

    /* Many handles on one object need no descriptor each either. */
    mpx_lock **as = calloc(NATTACH, sizeof *as);
    ASSERT_NOT_NULL(as);
    for (int i = 0; i < NATTACH; i++)
        ASSERT_OK(mpx_lock_attach(&as[i], mpx_lock_fd(ls[i % 3]), mpx_lock_offset(ls[i % 3])));
    fds = th_count_fds() - fds0;
    ASSERT_MSG(fds <= 8, "%d attached handles and %d locks hold %d descriptors", NATTACH, N, fds);
    for (int i = 0; i < NATTACH; i++)
        mpx_lock_destroy(as[i]);
    free(as);

    for (int i = 0; i < N; i++)
        mpx_lock_destroy(ls[i]);
    ASSERT_MSG(th_count_fds() == fds0, "%d descriptor(s) still open after every handle was "
               "destroyed", th_count_fds() - fds0);
    /* And again: what was freed can be used again. */
    for (int i = 0; i < N; i++)
        ls[i] = lock_new(MPX_LOCK_RECURSIVE);
    fds = th_count_fds() - fds0;
    ASSERT_MSG(fds <= 8, "%d recursive locks hold %d descriptors", N, fds);
    for (int i = 0; i < N; i++)
        mpx_lock_destroy(ls[i]);
    ASSERT_MSG(th_count_fds() == fds0, "%d descriptor(s) still open after every handle was "
               "destroyed", th_count_fds() - fds0);
    free(ls);
    free(ids);
}

TEST(mixed_kinds_distinct_slots)
{
    enum { ROUNDS = 200 };
    struct objs *o = calloc(ROUNDS, sizeof *o);
    struct slot_id *ids = calloc(ROUNDS * K_N, sizeof *ids);
    ASSERT(o && ids);
    int fds0 = th_count_fds();
    for (int i = 0; i < ROUNDS; i++) {
        o[i] = objs_new();
        for (int k = 0; k < K_N; k++)
            ids[i * K_N + k] = slot_of(objs_fd(&o[i], k), objs_offset(&o[i], k));
    }
    ASSERT_LE_INT(th_count_fds() - fds0, 8);
    assert_slots_distinct(ids, ROUNDS * K_N);
    /* Objects do not disturb their neighbours: use every one, then check every one. */
    for (int i = 0; i < ROUNDS; i++) {
        ASSERT_OK(mpx_lock_acquire(o[i].l, MPX_NOWAIT, NULL));
        ASSERT_OK(mpx_lock_acquire(o[i].r, MPX_NOWAIT, NULL));
        ASSERT_OK(mpx_lock_acquire(o[i].r, MPX_NOWAIT, NULL));
        ASSERT_OK(mpx_sem_acquire(o[i].s, MPX_NOWAIT));
        ASSERT_OK(mpx_event_set(o[i].e));
        ASSERT_OK(mpx_barrier_abort(o[i].b));
    }
    for (int i = 0; i < ROUNDS; i++) {
        ASSERT_EQ_UINT(mpx_lock_count(o[i].l), 1);
        ASSERT_EQ_UINT(mpx_lock_count(o[i].r), 2);
        ASSERT_EQ_UINT(mpx_sem_value(o[i].s), 2);
        ASSERT_EQ_UINT(mpx_sem_maxvalue(o[i].s), 7);
        ASSERT_EQ_INT(mpx_event_is_set(o[i].e), 1);
        ASSERT_EQ_INT(mpx_barrier_broken(o[i].b), 1);
        ASSERT_EQ_UINT(mpx_barrier_parties(o[i].b), 4);
        ASSERT_EQ_UINT(mpx_cond_waiters(o[i].c), 0);
        ASSERT_OK(mpx_lock_release(o[i].l));
        ASSERT_OK(mpx_lock_release(o[i].r));
        ASSERT_OK(mpx_lock_release(o[i].r));
        objs_destroy(&o[i]);
    }
    ASSERT_MSG(th_count_fds() == fds0, "%d descriptor(s) still open after every handle was "
               "destroyed", th_count_fds() - fds0);
    free(o);
    free(ids);
}

TEST(concurrent_creation_in_forked_processes)
{
    enum { P = 4, N = 300 };
    /* The arena exists before the fork, so the children start from the same one. */
    mpx_lock *first = lock_new(MPX_LOCK_PLAIN);
    mpx_event *go = event_new();
    struct box *bx = box_new();
    struct slot_id *ids = th_shared_alloc(sizeof(struct slot_id) * (P + 1) * N);
    pid_t pids[P];
    for (int p = 0; p <= P; p++) {
        if (p < P) {
            pids[p] = th_fork();
            if (pids[p] != 0)
                continue;
        }
        mpx_lock **ls = calloc(N, sizeof *ls);
        ASSERT_NOT_NULL(ls);
        for (int i = 0; i < N; i++) {
            ls[i] = lock_new(MPX_LOCK_PLAIN);
            /* New, so free; held from now on, so no one else may get the same slot. */
            ASSERT_OK(mpx_lock_acquire(ls[i], MPX_NOWAIT, NULL));
            ids[p * N + i] = slot_of(mpx_lock_fd(ls[i]), mpx_lock_offset(ls[i]));
        }
        if (p < P) {
            atomic_fetch_add(&bx->ready, 1);
            ASSERT_OK(mpx_event_wait(go, in_ms(20000)));
        } else {
            TH_WAIT_FOR(atomic_load(&bx->ready) == P, 20);
            assert_slots_distinct(ids, (P + 1) * N);
            ASSERT_OK(mpx_event_set(go));
        }
        for (int i = 0; i < N; i++) {
            ASSERT_EQ_INT(mpx_lock_owner(ls[i]), getpid());
            ASSERT_OK(mpx_lock_release(ls[i]));
            mpx_lock_destroy(ls[i]);
        }
        free(ls);
        if (p < P)
            _exit(0);
    }
    for (int p = 0; p < P; p++)
        th_wait_ok(pids[p], 20);
    munmap(ids, sizeof(struct slot_id) * (P + 1) * N);
    box_free(bx);
    mpx_event_destroy(go);
    mpx_lock_destroy(first);
}

TEST(object_lives_on_in_forked_child)
{
    /* "The lock itself lives on in the processes that still have it": a forked child's
     * inherited handle keeps the object alive after the creator destroyed its own, so the
     * slot must not be handed out again meanwhile. */
    enum { N = 300 };
    mpx_lock *l = lock_new(MPX_LOCK_PLAIN);
    mpx_sem *s = sem_new(0, MPX_SEM_VALUE_MAX);
    struct slot_id lid = slot_of(mpx_lock_fd(l), mpx_lock_offset(l));
    struct slot_id sid = slot_of(mpx_sem_fd(s), mpx_sem_offset(s));
    struct box *bx = box_new();
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
        atomic_store(&bx->ready, 1);
        TH_WAIT_FOR(atomic_load(&bx->go), 20);
        ASSERT_EQ_INT(mpx_lock_owner(l), getpid());
        ASSERT_EQ_UINT(mpx_lock_count(l), 1);
        ASSERT_EQ_UINT(mpx_sem_value(s), 0);
        ASSERT_EQ_UINT(mpx_sem_maxvalue(s), MPX_SEM_VALUE_MAX);
        ASSERT_OK(mpx_lock_release(l));
        ASSERT_OK(mpx_sem_release(s));
        _exit(0);
    }
    TH_WAIT_FOR(atomic_load(&bx->ready), 20);
    mpx_lock_destroy(l);
    mpx_sem_destroy(s);
    mpx_lock **ls = calloc(N, sizeof *ls);
    mpx_sem **ss = calloc(N, sizeof *ss);
    ASSERT(ls && ss);
    for (int i = 0; i < N; i++) {
        ls[i] = lock_new(MPX_LOCK_PLAIN);
        ss[i] = sem_new(0, 1);
        struct slot_id a = slot_of(mpx_lock_fd(ls[i]), mpx_lock_offset(ls[i]));
        struct slot_id b = slot_of(mpx_sem_fd(ss[i]), mpx_sem_offset(ss[i]));
        ASSERT_MSG(slot_cmp(&a, &lid) && slot_cmp(&a, &sid) && slot_cmp(&b, &lid) &&
                       slot_cmp(&b, &sid),
                   "new object %d reuses the slot of an object still in use by a child", i);
        ASSERT_OK(mpx_lock_acquire(ls[i], MPX_NOWAIT, NULL));
    }
    atomic_store(&bx->go, 1);
    th_wait_ok(pid, 20);
    for (int i = 0; i < N; i++) {
        ASSERT_EQ_UINT(mpx_sem_value(ss[i]), 0); /* the child's release went elsewhere */
        ASSERT_OK(mpx_lock_release(ls[i]));
        mpx_lock_destroy(ls[i]);
        mpx_sem_destroy(ss[i]);
    }
    free(ls);
    free(ss);
    box_free(bx);
}

TEST(attach_in_forked_child)
{
    struct objs o = objs_new();
    ASSERT_OK(mpx_lock_acquire(o.l, MPX_NOWAIT, NULL));
    ASSERT_OK(mpx_event_set(o.e));
    pid_t pid = th_fork();
    if (pid == 0) {
        /* The inherited handles work as they are ... */
        ASSERT_EQ_INT(mpx_lock_owner(o.l), getppid());
        ASSERT_EQ_INT(mpx_lock_is_mine(o.l), 0); /* held by another process */
        ASSERT_EQ_UINT(mpx_lock_count(o.l), 1);
        ASSERT_ERR(mpx_lock_acquire(o.l, MPX_NOWAIT, NULL), -EAGAIN);
        ASSERT_EQ_INT(mpx_event_is_set(o.e), 1);
        /* ... and so does attaching anew through the inherited descriptors. */
        for (int k = 0; k < K_N; k++) {
            int r = attach_kind(k, objs_fd(&o, k), objs_offset(&o, k), false);
            ASSERT_MSG(r == 0, "%s attach in a forked child: %s", kind_names[k], mpx_errname(r));
        }
        mpx_sem *s = NULL;
        ASSERT_OK(mpx_sem_attach(&s, mpx_sem_fd(o.s), mpx_sem_offset(o.s)));
        ASSERT_OK(mpx_sem_acquire(s, MPX_NOWAIT));
        mpx_sem_destroy(s);
        ASSERT_OK(mpx_lock_release(o.l)); /* a plain lock: any process may release it */
        _exit(0);
    }
    th_wait_ok(pid, 20);
    ASSERT_EQ_INT(mpx_lock_owner(o.l), 0);
    ASSERT_EQ_UINT(mpx_sem_value(o.s), 2);
    objs_destroy(&o);
}

/* Helper: argv[0] the parent's pid, argv[1..6] "fd:offset" of a plain lock held by the
 * parent, a recursive lock held twice by the parent, a semaphore (0 of 5), a set event, a
 * condition and a barrier of 2 parties; argv[7] a pipe to report on; argv[8] how many
 * distinct arenas the six objects live in. */
HELPER(attach_all)
{
    ASSERT_EQ_INT(argc, 9);
    pid_t parent = (pid_t)atoi(argv[0]);
    int fds[6];
    uint64_t offs[6];
    for (int i = 0; i < 6; i++)
        parse_fdoff(argv[1 + i], &fds[i], &offs[i]);
    int out = atoi(argv[7]);
    int narenas = atoi(argv[8]);
    int nfd0 = th_count_fds();
    mpx_lock *l = NULL, *r = NULL;
    mpx_sem *s = NULL;
    mpx_event *e = NULL;
    mpx_cond *c = NULL;
    mpx_barrier *b = NULL;
    ASSERT_OK(mpx_lock_attach(&l, fds[0], offs[0]));
    ASSERT_OK(mpx_lock_attach(&r, fds[1], offs[1]));
    ASSERT_OK(mpx_sem_attach(&s, fds[2], offs[2]));
    ASSERT_OK(mpx_event_attach(&e, fds[3], offs[3]));
    ASSERT_OK(mpx_cond_attach(&c, fds[4], offs[4]));
    ASSERT_OK(mpx_barrier_attach(&b, fds[5], offs[5]));
    /* The descriptors were borrowed. */
    for (int i = 0; i < 6; i++)
        close(fds[i]);
    ASSERT_MSG(th_count_fds() <= nfd0 - 6 + narenas,
               "6 handles on %d arena(s) keep %d descriptors", narenas, th_count_fds() - nfd0 + 6);

    ASSERT_EQ_INT(mpx_lock_kind(l), MPX_LOCK_PLAIN);
    ASSERT_EQ_INT(mpx_lock_owner(l), parent);
    ASSERT_EQ_INT(mpx_lock_is_mine(l), 0);
    ASSERT_EQ_UINT(mpx_lock_count(l), 1);
    ASSERT_ERR(mpx_lock_acquire(l, MPX_NOWAIT, NULL), -EAGAIN);
    ASSERT_OK(mpx_lock_release(l)); /* released by another process: allowed */
    ASSERT_EQ_INT(mpx_lock_owner(l), 0);

    ASSERT_EQ_INT(mpx_lock_kind(r), MPX_LOCK_RECURSIVE);
    ASSERT_EQ_INT(mpx_lock_owner(r), parent);
    ASSERT_EQ_INT(mpx_lock_is_mine(r), 0);
    ASSERT_EQ_UINT(mpx_lock_count(r), 0); /* not the owning thread */
    ASSERT_ERR(mpx_lock_release(r), -EPERM);
    ASSERT_ERR(mpx_lock_acquire(r, MPX_NOWAIT, NULL), -EAGAIN);

    ASSERT_EQ_UINT(mpx_sem_value(s), 0);
    ASSERT_EQ_UINT(mpx_sem_maxvalue(s), 5);
    ASSERT_OK(mpx_sem_release(s));
    ASSERT_OK(mpx_sem_release(s));

    ASSERT_EQ_INT(mpx_event_is_set(e), 1);
    ASSERT_OK(mpx_event_wait(e, MPX_NOWAIT));
    ASSERT_OK(mpx_event_clear(e));

    ASSERT_EQ_UINT(mpx_barrier_parties(b), 2);
    int idx = mpx_barrier_wait(b, in_ms(20000));
    ASSERT_OK(idx);
    write_byte(out, (char)('0' + idx));

    /* The condition, with the plain lock. */
    ASSERT_OK(mpx_lock_acquire(l, in_ms(20000), NULL));
    ASSERT_OK(mpx_cond_wait(c, l, in_ms(20000), NULL));
    ASSERT_EQ_INT(mpx_lock_owner(l), getpid());
    ASSERT_OK(mpx_lock_release(l));

    mpx_lock_destroy(l);
    mpx_lock_destroy(r);
    mpx_sem_destroy(s);
    mpx_event_destroy(e);
    mpx_cond_destroy(c);
    mpx_barrier_destroy(b);
    close(out);
    return 0;
}

TEST(attach_in_exec_helper)
{
    struct objs o = objs_new();
    mpx_barrier_destroy(o.b);
    o.b = barrier_new(2);
    mpx_sem_destroy(o.s);
    o.s = sem_new(0, 5);
    ASSERT_OK(mpx_lock_acquire(o.l, MPX_NOWAIT, NULL));
    ASSERT_OK(mpx_lock_acquire(o.r, MPX_NOWAIT, NULL));
    ASSERT_OK(mpx_lock_acquire(o.r, MPX_NOWAIT, NULL));
    ASSERT_OK(mpx_event_set(o.e));
    int p[2];
    ASSERT_SYS(pipe2(p, O_CLOEXEC));

    int keep[7];
    char a[9][48];
    const char *args[10];
    snprintf(a[0], sizeof a[0], "%ld", (long)getpid());
    struct fid ids[6];
    int narenas = 0;
    for (int k = 0; k < 6; k++) {
        keep[k] = dup_cloexec(objs_fd(&o, k));
        fdoff_arg(a[1 + k], sizeof a[1 + k], keep[k], objs_offset(&o, k));
        ids[k] = fd_id(keep[k]);
        bool seen = false;
        for (int j = 0; j < k; j++)
            seen |= ids[j].dev == ids[k].dev && ids[j].ino == ids[k].ino;
        narenas += !seen;
    }
    keep[6] = p[1];
    snprintf(a[7], sizeof a[7], "%d", p[1]);
    snprintf(a[8], sizeof a[8], "%d", narenas);
    for (int i = 0; i < 9; i++)
        args[i] = a[i];
    args[9] = NULL;
    pid_t pid = th_spawn_helper("attach_all", args, keep, 7, NULL);
    for (int i = 0; i < 6; i++)
        close(keep[i]);
    close(p[1]);

    int idx = mpx_barrier_wait(o.b, in_ms(20000));
    ASSERT_OK(idx);
    int hidx = read_byte(p[0], 20);
    ASSERT_MSG(hidx >= 0, "no barrier index from the helper");
    ASSERT_EQ_INT(idx + (hidx - '0'), 1); /* {0, 1} */
    ASSERT_EQ_UINT(mpx_sem_value(o.s), 2);
    ASSERT_EQ_INT(mpx_event_is_set(o.e), 0);
    TH_WAIT_FOR(mpx_cond_waiters(o.c) == 1, 20);
    ASSERT_OK(mpx_lock_acquire(o.l, in_ms(20000), NULL));
    ASSERT_OK(mpx_cond_notify(o.c, o.l, 1));
    ASSERT_OK(mpx_lock_release(o.l));
    th_wait_ok(pid, 20);
    ASSERT_EQ_INT(mpx_lock_owner(o.l), 0);
    /* The recursive lock is still ours, twice. */
    ASSERT_EQ_UINT(mpx_lock_count(o.r), 2);
    ASSERT_OK(mpx_lock_release(o.r));
    ASSERT_OK(mpx_lock_release(o.r));
    ASSERT_ERR(mpx_lock_release(o.r), -EPERM);
    close(p[0]);
    objs_destroy(&o);
}

static void send_fd(int sock, int fd, uint64_t off)
{
    char cbuf[CMSG_SPACE(sizeof(int))];
    memset(cbuf, 0, sizeof cbuf);
    struct iovec v = {&off, sizeof off};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1, .msg_control = cbuf,
                       .msg_controllen = sizeof cbuf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    ASSERT_EQ_INT(sendmsg(sock, &m, 0), (ssize_t)sizeof off);
}

static int recv_fd(int sock, uint64_t *off)
{
    char cbuf[CMSG_SPACE(sizeof(int))];
    struct iovec v = {off, sizeof *off};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1, .msg_control = cbuf,
                       .msg_controllen = sizeof cbuf};
    ASSERT_EQ_INT(recvmsg(sock, &m, MSG_CMSG_CLOEXEC), (ssize_t)sizeof *off);
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    ASSERT(c && c->cmsg_type == SCM_RIGHTS);
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

TEST(attach_by_scm_rights_after_creator_exited)
{
    /* A child creates the objects in an arena of its own, sends the descriptor over a
     * socket and exits: the objects live on in the process that attached them. */
    int sv[2];
    ASSERT_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
    pid_t pid = th_fork();
    if (pid == 0) {
        close(sv[0]);
        mpx_event *e = event_new();
        mpx_lock *l = lock_new(MPX_LOCK_PLAIN);
        send_fd(sv[1], mpx_event_fd(e), mpx_event_offset(e));
        send_fd(sv[1], mpx_lock_fd(l), mpx_lock_offset(l));
        ASSERT_EQ_INT(read_byte(sv[1], 20), 'a');
        ASSERT_OK(mpx_event_set(e));
        ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
        ASSERT_OK(mpx_lock_release(l));
        mpx_event_destroy(e);
        mpx_lock_destroy(l);
        _exit(0);
    }
    close(sv[1]);
    uint64_t eoff, loff;
    int efd = recv_fd(sv[0], &eoff);
    int lfd = recv_fd(sv[0], &loff);
    mpx_event *e = NULL;
    mpx_lock *l = NULL;
    ASSERT_OK(mpx_event_attach(&e, efd, eoff));
    ASSERT_OK(mpx_lock_attach(&l, lfd, loff));
    close(efd);
    close(lfd);
    write_byte(sv[0], 'a');
    ASSERT_OK(mpx_event_wait(e, in_ms(20000)));
    th_wait_ok(pid, 20);
    /* The creator is gone; the objects work on. */
    ASSERT_EQ_INT(mpx_event_is_set(e), 1);
    ASSERT_OK(mpx_event_clear(e));
    ASSERT_EQ_INT(mpx_event_is_set(e), 0);
    ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
    ASSERT_EQ_INT(mpx_lock_owner(l), getpid());
    ASSERT_OK(mpx_lock_release(l));
    mpx_event_destroy(e);
    mpx_lock_destroy(l);
    close(sv[0]);
}

/* ---------------------------------------------------------------------------------------
 * Plain locks
 */

static void *is_mine_thread(void *arg)
{
    mpx_lock *l = arg;
    return (void *)(intptr_t)mpx_lock_is_mine(l);
}

TEST(lock_plain_basic)
{
    mpx_lock *l = lock_new(MPX_LOCK_PLAIN);
    pid_t dead = 4242;
    ASSERT_OK(mpx_lock_acquire(l, MPX_FOREVER, &dead));
    ASSERT_EQ_INT(dead, 4242); /* not touched on a plain success */
    ASSERT_EQ_INT(mpx_lock_owner(l), getpid());
    ASSERT_EQ_INT(mpx_lock_is_mine(l), 1);
    ASSERT_EQ_UINT(mpx_lock_count(l), 1);
    /* "a thread of the calling process holds it": is_mine from another thread too. */
    pthread_t t;
    void *ret;
    ASSERT_EQ_INT(pthread_create(&t, NULL, is_mine_thread, l), 0);
    ASSERT_EQ_INT(pthread_join(t, &ret), 0);
    ASSERT_EQ_INT((intptr_t)ret, 1);
    /* Not recursive: a second acquire by the same thread would block. */
    ASSERT_ERR(mpx_lock_acquire(l, MPX_NOWAIT, &dead), -EAGAIN);
    int64_t t0 = th_now_ns();
    ASSERT_ERR(mpx_lock_acquire(l, in_ms(60), &dead), -ETIMEDOUT);
    assert_elapsed(t0, 60 * MS);
    ASSERT_EQ_INT(dead, 4242);
    ASSERT_EQ_INT(mpx_lock_owner(l), getpid());
    ASSERT_OK(mpx_lock_release(l));
    ASSERT_EQ_INT(mpx_lock_owner(l), 0);
    ASSERT_EQ_INT(mpx_lock_is_mine(l), 0);
    ASSERT_EQ_UINT(mpx_lock_count(l), 0);
    /* Released when free: -EPERM, and still free. */
    ASSERT_ERR(mpx_lock_release(l), -EPERM);
    ASSERT_ERR(mpx_lock_release(l), -EPERM);
    ASSERT_EQ_INT(mpx_lock_owner(l), 0);
    for (int i = 0; i < 1000; i++) {
        ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
        ASSERT_OK(mpx_lock_release(l));
    }
    mpx_lock_destroy(l);
}

TEST(lock_deadlines)
{
    mpx_lock *l = lock_new(MPX_LOCK_PLAIN);
    /* No wait needed: any deadline succeeds, even one already past. */
    ASSERT_OK(mpx_lock_acquire(l, mpx_now() - 1, NULL));
    ASSERT_OK(mpx_lock_release(l));
    ASSERT_OK(mpx_lock_acquire(l, 1, NULL));
    ASSERT_OK(mpx_lock_release(l));
    /* Held by another process. */
    struct box *bx = box_new();
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
        atomic_store(&bx->ready, 1);
        TH_WAIT_FOR(atomic_load(&bx->go), 20);
        ASSERT_OK(mpx_lock_release(l));
        _exit(0);
    }
    TH_WAIT_FOR(atomic_load(&bx->ready), 20);
    ASSERT_ERR(mpx_lock_acquire(l, MPX_NOWAIT, NULL), -EAGAIN);
    ASSERT_ERR(mpx_lock_acquire(l, mpx_now() - 1, NULL), -ETIMEDOUT); /* passed: a timeout */
    ASSERT_ERR(mpx_lock_acquire(l, 1, NULL), -ETIMEDOUT);
    int64_t waits[] = {1, 30, 150, 300};
    for (size_t i = 0; i < sizeof waits / sizeof waits[0]; i++) {
        int64_t t0 = th_now_ns();
        ASSERT_ERR(mpx_lock_acquire(l, mpx_deadline_in(waits[i] * MS), NULL), -ETIMEDOUT);
        assert_elapsed(t0, waits[i] * MS);
    }
    ASSERT_EQ_INT(mpx_lock_owner(l), pid);
    atomic_store(&bx->go, 1);
    th_wait_ok(pid, 20);
    ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
    ASSERT_OK(mpx_lock_release(l));
    box_free(bx);
    mpx_lock_destroy(l);
}

static void *release_thread(void *arg)
{
    mpx_lock *l = arg;
    return (void *)(intptr_t)mpx_lock_release(l);
}

TEST(lock_plain_release_by_other_thread_and_process)
{
    mpx_lock *l = lock_new(MPX_LOCK_PLAIN);
    ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
    pthread_t t;
    void *ret;
    ASSERT_EQ_INT(pthread_create(&t, NULL, release_thread, l), 0);
    ASSERT_EQ_INT(pthread_join(t, &ret), 0);
    ASSERT_EQ_INT((intptr_t)ret, 0);
    ASSERT_EQ_INT(mpx_lock_owner(l), 0);

    ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_EQ_INT(mpx_lock_is_mine(l), 0);
        ASSERT_EQ_UINT(mpx_lock_count(l), 1); /* a plain lock: 1 when locked, whoever holds */
        ASSERT_OK(mpx_lock_release(l));
        ASSERT_ERR(mpx_lock_release(l), -EPERM);
        _exit(0);
    }
    th_wait_ok(pid, 20);
    ASSERT_EQ_INT(mpx_lock_owner(l), 0);
    ASSERT_EQ_INT(mpx_lock_is_mine(l), 0);
    ASSERT_ERR(mpx_lock_release(l), -EPERM);
    /* The converse: the child holds it and exits normally after the parent released it. */
    struct box *bx = box_new();
    pid = th_fork();
    if (pid == 0) {
        ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
        atomic_store(&bx->ready, 1);
        TH_WAIT_FOR(atomic_load(&bx->go), 20);
        _exit(0);
    }
    TH_WAIT_FOR(atomic_load(&bx->ready), 20);
    ASSERT_EQ_INT(mpx_lock_owner(l), pid);
    ASSERT_OK(mpx_lock_release(l));
    atomic_store(&bx->go, 1);
    th_wait_ok(pid, 20);
    ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL)); /* 0, not MPX_EOWNERDEAD */
    ASSERT_OK(mpx_lock_release(l));
    box_free(bx);
    mpx_lock_destroy(l);
}

TEST(lock_blocking_acquire_woken_by_release)
{
    mpx_lock *l = lock_new(MPX_LOCK_PLAIN);
    ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
    enum { N = 3 };
    struct box *bx = box_new();
    pid_t pids[N];
    for (int i = 0; i < N; i++) {
        pids[i] = th_fork();
        if (pids[i] == 0) {
            pid_t dead = 99;
            ASSERT_OK(mpx_lock_acquire(l, in_ms(20000), &dead));
            ASSERT_EQ_INT(dead, 99);
            ASSERT_EQ_INT(mpx_lock_owner(l), getpid());
            ASSERT_EQ_INT(atomic_fetch_add(&bx->inside, 1), 0);
            th_sleep_ms(20);
            atomic_fetch_sub(&bx->inside, 1);
            atomic_fetch_add(&bx->done, 1);
            ASSERT_OK(mpx_lock_release(l));
            _exit(0);
        }
    }
    for (int i = 0; i < N; i++)
        th_wait_asleep(pids[i]);
    ASSERT_EQ_INT(atomic_load(&bx->done), 0);
    /* Sleeping waiters change nothing in what the queries report. */
    ASSERT_EQ_INT(mpx_lock_owner(l), getpid());
    ASSERT_EQ_INT(mpx_lock_is_mine(l), 1);
    ASSERT_EQ_UINT(mpx_lock_count(l), 1);
    ASSERT_OK(mpx_lock_release(l));
    for (int i = 0; i < N; i++)
        th_wait_ok(pids[i], 10);
    ASSERT_EQ_INT(atomic_load(&bx->done), N);
    ASSERT_EQ_INT(mpx_lock_owner(l), 0);
    box_free(bx);
    mpx_lock_destroy(l);
}

/* ---------------------------------------------------------------------------------------
 * Mutual exclusion under contention
 */

struct mx_arg {
    mpx_lock *l;
    struct box *bx;
    int iters;
    bool nested; /* take a recursive lock twice */
};

static void *mx_run(void *p)
{
    struct mx_arg *a = p;
    for (int i = 0; i < a->iters; i++) {
        ASSERT_OK(mpx_lock_acquire(a->l, in_ms(20000), NULL));
        if (a->nested) {
            ASSERT_OK(mpx_lock_acquire(a->l, MPX_NOWAIT, NULL));
            ASSERT_EQ_UINT(mpx_lock_count(a->l), 2);
        }
        if (atomic_fetch_add(&a->bx->inside, 1) != 0)
            atomic_fetch_add(&a->bx->violations, 1);
        long v = a->bx->counter; /* a non-atomic read-modify-write */
        if ((i & 31) == 0)
            sched_yield();
        a->bx->counter = v + 1;
        atomic_fetch_sub(&a->bx->inside, 1);
        if (a->nested)
            ASSERT_OK(mpx_lock_release(a->l));
        ASSERT_OK(mpx_lock_release(a->l));
    }
    return NULL;
}

static void mutual_exclusion(int kind, int procs, int threads, int iters)
{
    mpx_lock *l = lock_new(kind);
    struct box *bx = box_new();
    pid_t pids[8];
    ASSERT(procs <= 8 && threads <= 8);
    for (int p = 0; p < procs; p++) {
        pids[p] = th_fork();
        if (pids[p] == 0) {
            struct mx_arg a = {l, bx, iters, kind == MPX_LOCK_RECURSIVE};
            pthread_t t[8];
            for (int i = 1; i < threads; i++)
                t[i] = th_thread_start(mx_run, &a);
            mx_run(&a);
            for (int i = 1; i < threads; i++)
                th_thread_join(t[i]);
            _exit(0);
        }
    }
    for (int p = 0; p < procs; p++)
        th_wait_ok(pids[p], 60);
    ASSERT_EQ_INT(atomic_load(&bx->violations), 0);
    ASSERT_EQ_INT(bx->counter, (long)procs * threads * iters);
    ASSERT_EQ_INT(mpx_lock_owner(l), 0);
    box_free(bx);
    mpx_lock_destroy(l);
}

TEST(lock_plain_mutual_exclusion_processes) { mutual_exclusion(MPX_LOCK_PLAIN, 4, 1, 5000); }
TEST(lock_plain_mutual_exclusion_threads) { mutual_exclusion(MPX_LOCK_PLAIN, 3, 2, 3000); }
TEST(lock_recursive_mutual_exclusion) { mutual_exclusion(MPX_LOCK_RECURSIVE, 3, 2, 3000); }

/* ---------------------------------------------------------------------------------------
 * Recursive locks
 */

struct rl_probe {
    mpx_lock *l;
    int is_mine, release, nowait, timed;
    unsigned count;
    int64_t timed_ns;
};

static void *rl_probe_thread(void *p)
{
    struct rl_probe *r = p;
    r->is_mine = mpx_lock_is_mine(r->l);
    r->count = mpx_lock_count(r->l);
    r->release = mpx_lock_release(r->l);
    r->nowait = mpx_lock_acquire(r->l, MPX_NOWAIT, NULL);
    int64_t t0 = th_now_ns();
    r->timed = mpx_lock_acquire(r->l, in_ms(50), NULL);
    r->timed_ns = th_now_ns() - t0;
    return NULL;
}

TEST(lock_recursive_basic)
{
    mpx_lock *l = lock_new(MPX_LOCK_RECURSIVE);
    ASSERT_ERR(mpx_lock_release(l), -EPERM); /* free: not owned by anyone */
    for (unsigned i = 1; i <= 5; i++) {
        ASSERT_OK(mpx_lock_acquire(l, i == 1 ? MPX_FOREVER : MPX_NOWAIT, NULL));
        ASSERT_EQ_UINT(mpx_lock_count(l), i);
        ASSERT_EQ_INT(mpx_lock_owner(l), getpid());
        ASSERT_EQ_INT(mpx_lock_is_mine(l), 1);
    }
    /* Re-acquiring by the owner returns at once whatever the deadline. */
    ASSERT_OK(mpx_lock_acquire(l, mpx_now() - 1, NULL));
    ASSERT_EQ_UINT(mpx_lock_count(l), 6);

    /* Another thread is not the owner. */
    struct rl_probe pr = {.l = l};
    pthread_t t = th_thread_start(rl_probe_thread, &pr);
    th_thread_join(t);
    ASSERT_EQ_INT(pr.is_mine, 0);
    ASSERT_EQ_UINT(pr.count, 0);
    ASSERT_ERR(pr.release, -EPERM);
    ASSERT_ERR(pr.nowait, -EAGAIN);
    ASSERT_ERR(pr.timed, -ETIMEDOUT);
    ASSERT_GE_INT(pr.timed_ns, 48 * MS);
    ASSERT_EQ_UINT(mpx_lock_count(l), 6); /* untouched by the refused release */

    for (unsigned i = 6; i >= 1; i--) {
        ASSERT_EQ_UINT(mpx_lock_count(l), i);
        ASSERT_EQ_INT(mpx_lock_owner(l), getpid());
        ASSERT_OK(mpx_lock_release(l));
    }
    ASSERT_EQ_UINT(mpx_lock_count(l), 0);
    ASSERT_EQ_INT(mpx_lock_owner(l), 0);
    ASSERT_EQ_INT(mpx_lock_is_mine(l), 0);
    ASSERT_ERR(mpx_lock_release(l), -EPERM);

    /* Free now: another thread takes it, and then the main thread is the non-owner. */
    pthread_t t2 = th_thread_start(rl_probe_thread, &pr); /* probes a free lock, keeps it */
    th_thread_join(t2);
    ASSERT_EQ_INT(pr.is_mine, 0);
    ASSERT_EQ_UINT(pr.count, 0);
    ASSERT_ERR(pr.release, -EPERM);
    ASSERT_OK(pr.nowait);
    ASSERT_OK(pr.timed); /* its own lock: recursion */
    ASSERT_EQ_INT(mpx_lock_owner(l), getpid()); /* this process, another thread */
    ASSERT_EQ_INT(mpx_lock_is_mine(l), 0);
    ASSERT_EQ_UINT(mpx_lock_count(l), 0);
    ASSERT_ERR(mpx_lock_release(l), -EPERM);
    ASSERT_ERR(mpx_lock_acquire(l, MPX_NOWAIT, NULL), -EAGAIN);
    mpx_lock_destroy(l); /* the lock stays held by the ended thread: only the handle goes */
}

struct rl_blocker {
    mpx_lock *l;
    _Atomic int started, got;
};

static void *rl_block_thread(void *p)
{
    struct rl_blocker *b = p;
    atomic_store(&b->started, 1);
    ASSERT_OK(mpx_lock_acquire(b->l, in_ms(20000), NULL));
    atomic_store(&b->got, 1);
    ASSERT_EQ_UINT(mpx_lock_count(b->l), 1);
    ASSERT_OK(mpx_lock_release(b->l));
    return NULL;
}

TEST(lock_recursive_full_release_wakes_waiter)
{
    mpx_lock *l = lock_new(MPX_LOCK_RECURSIVE);
    ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
    ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
    ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
    struct rl_blocker b = {.l = l};
    pthread_t t = th_thread_start(rl_block_thread, &b);
    TH_WAIT_FOR(atomic_load(&b.started), 10);
    /* A process waiting too. */
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_OK(mpx_lock_acquire(l, in_ms(20000), NULL));
        ASSERT_EQ_UINT(mpx_lock_count(l), 1);
        ASSERT_OK(mpx_lock_release(l));
        _exit(0);
    }
    th_wait_asleep(pid);
    ASSERT_OK(mpx_lock_release(l));
    ASSERT_OK(mpx_lock_release(l));
    th_sleep_ms(100);
    ASSERT_EQ_INT(atomic_load(&b.got), 0); /* still held once */
    ASSERT(th_running(pid));
    ASSERT_OK(mpx_lock_release(l)); /* free at zero */
    th_thread_join(t);
    th_wait_ok(pid, 10);
    ASSERT_EQ_INT(atomic_load(&b.got), 1);
    ASSERT_EQ_INT(mpx_lock_owner(l), 0);
    mpx_lock_destroy(l);
}

TEST(lock_recursive_non_owner_process)
{
    mpx_lock *l = lock_new(MPX_LOCK_RECURSIVE);
    ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
    ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
    pid_t pid = th_fork();
    if (pid == 0) {
        /* A forked child is another process: its thread is not the owner, even though the
         * parent's owning thread was copied into it. */
        ASSERT_EQ_INT(mpx_lock_is_mine(l), 0);
        ASSERT_EQ_UINT(mpx_lock_count(l), 0);
        ASSERT_EQ_INT(mpx_lock_owner(l), getppid());
        ASSERT_ERR(mpx_lock_release(l), -EPERM);
        ASSERT_ERR(mpx_lock_acquire(l, MPX_NOWAIT, NULL), -EAGAIN);
        int64_t t0 = th_now_ns();
        ASSERT_ERR(mpx_lock_acquire(l, in_ms(80), NULL), -ETIMEDOUT);
        assert_elapsed(t0, 80 * MS);
        _exit(0);
    }
    th_wait_ok(pid, 20);
    ASSERT_EQ_UINT(mpx_lock_count(l), 2);
    ASSERT_OK(mpx_lock_release(l));
    ASSERT_OK(mpx_lock_release(l));
    ASSERT_ERR(mpx_lock_release(l), -EPERM);
    mpx_lock_destroy(l);
}

/* ---------------------------------------------------------------------------------------
 * Owner death
 */

/* The lock `l` works normally after this process took it over with MPX_EOWNERDEAD. */
static void assert_recovered(mpx_lock *l)
{
    ASSERT_EQ_INT(mpx_lock_owner(l), getpid());
    ASSERT_EQ_INT(mpx_lock_is_mine(l), 1);
    ASSERT_EQ_UINT(mpx_lock_count(l), 1);
    if (mpx_lock_kind(l) == MPX_LOCK_PLAIN)
        ASSERT_ERR(mpx_lock_acquire(l, MPX_NOWAIT, NULL), -EAGAIN);
    ASSERT_OK(mpx_lock_release(l));
    ASSERT_EQ_INT(mpx_lock_owner(l), 0);
    ASSERT_ERR(mpx_lock_release(l), -EPERM);
    pid_t dead = 5555;
    ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, &dead)); /* a plain 0 this time */
    ASSERT_EQ_INT(dead, 5555);
    ASSERT_OK(mpx_lock_release(l));
    /* And in another process. */
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
        ASSERT_OK(mpx_lock_release(l));
        _exit(0);
    }
    th_wait_ok(pid, 20);
}

/* Forks a child that takes `l` (`levels` times) and reports it; the child then waits to be
 * killed. */
static pid_t fork_holder(mpx_lock *l, int levels, struct box *bx)
{
    atomic_store(&bx->ready, 0);
    pid_t pid = th_fork();
    if (pid == 0) {
        for (int i = 0; i < levels; i++)
            ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
        atomic_store(&bx->ready, 1);
        for (;;)
            pause();
    }
    TH_WAIT_FOR(atomic_load(&bx->ready), 20);
    ASSERT_EQ_INT(mpx_lock_owner(l), pid);
    return pid;
}

static void acquire_expect_dead_owner(mpx_lock *l, pid_t want_dead)
{
    pid_t dead = 0;
    int64_t t0 = th_now_ns();
    ASSERT_ERR(mpx_lock_acquire(l, in_ms(10000), &dead), MPX_EOWNERDEAD);
    ASSERT_EQ_INT(dead, want_dead);
    int64_t el = th_now_ns() - t0;
    ASSERT_MSG(el < 3 * SEC, "the dead owner was noticed only after %.1f ms", el / 1e6);
}

TEST(owner_death_reaped)
{
    struct box *bx = box_new();
    for (int kind = 0; kind <= 1; kind++) {
        mpx_lock *l = lock_new(kind);
        pid_t pid = fork_holder(l, kind == MPX_LOCK_RECURSIVE ? 3 : 1, bx);
        th_kill_reap(pid);
        ASSERT_EQ_INT(mpx_lock_owner(l), pid); /* a snapshot: still recorded */
        acquire_expect_dead_owner(l, pid);
        assert_recovered(l);
        mpx_lock_destroy(l);
    }
    box_free(bx);
}

TEST(owner_death_zombie)
{
    /* A holder that has exited but is not reaped yet counts as dead. */
    for (int kind = 0; kind <= 1; kind++) {
        mpx_lock *l = lock_new(kind);
        pid_t pid = th_fork();
        if (pid == 0) {
            ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
            if (kind == MPX_LOCK_RECURSIVE)
                ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
            _exit(0); /* a normal exit, holding the lock */
        }
        TH_WAIT_FOR(!th_running(pid), 20);
        ASSERT_EQ_INT(th_proc_state(pid), 'Z');
        acquire_expect_dead_owner(l, pid);
        ASSERT_EQ_INT(th_proc_state(pid), 'Z'); /* the library did not reap our child */
        assert_recovered(l);
        th_wait_ok(pid, 10);
        mpx_lock_destroy(l);
    }
}

TEST(owner_death_while_waiting)
{
    /* The waiter is asleep when the holder dies. */
    struct box *bx = box_new();
    mpx_lock *l = lock_new(MPX_LOCK_PLAIN);
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
        atomic_store(&bx->ready, 1);
        th_sleep_ms(400);
        kill(getpid(), SIGKILL);
        _exit(3);
    }
    TH_WAIT_FOR(atomic_load(&bx->ready), 20);
    pid_t dead = 0;
    int64_t t0 = th_now_ns();
    ASSERT_ERR(mpx_lock_acquire(l, in_ms(10000), &dead), MPX_EOWNERDEAD);
    int64_t el = th_now_ns() - t0;
    ASSERT_EQ_INT(dead, pid);
    ASSERT_MSG(el > 300 * MS && el < 4 * SEC, "took over after %.1f ms", el / 1e6);
    th_wait_signaled(pid, SIGKILL, 10);
    assert_recovered(l);
    /* NULL dead_owner is allowed. */
    pid = fork_holder(l, 1, bx);
    th_kill_reap(pid);
    ASSERT_ERR(mpx_lock_acquire(l, in_ms(10000), NULL), MPX_EOWNERDEAD);
    ASSERT_OK(mpx_lock_release(l));
    mpx_lock_destroy(l);
    box_free(bx);
}

TEST(owner_death_one_waiter_takes_over)
{
    /* Several waiters in several processes: exactly one gets MPX_EOWNERDEAD, the others
     * then get the lock the ordinary way. */
    enum { W = 3 };
    struct box *bx = box_new();
    for (int kind = 0; kind <= 1; kind++) {
        mpx_lock *l = lock_new(kind);
        memset(bx, 0, sizeof *bx);
        pid_t holder = fork_holder(l, 1, bx);
        pid_t w[W];
        for (int i = 0; i < W; i++) {
            w[i] = th_fork();
            if (w[i] == 0) {
                pid_t dead = -1;
                int r = mpx_lock_acquire(l, in_ms(20000), &dead);
                atomic_store(&bx->res[i], r);
                atomic_store(&bx->aux[i], dead);
                if (r == 0 || r == MPX_EOWNERDEAD) {
                    if (atomic_fetch_add(&bx->inside, 1) != 0)
                        atomic_fetch_add(&bx->violations, 1);
                    th_sleep_ms(30);
                    atomic_fetch_sub(&bx->inside, 1);
                    ASSERT_OK(mpx_lock_release(l));
                }
                _exit(0);
            }
        }
        for (int i = 0; i < W; i++)
            th_wait_asleep(w[i]);
        th_kill_reap(holder);
        for (int i = 0; i < W; i++)
            th_wait_ok(w[i], 10);
        int owner_dead = 0;
        for (int i = 0; i < W; i++) {
            int r = atomic_load(&bx->res[i]);
            if (r == MPX_EOWNERDEAD) {
                owner_dead++;
                ASSERT_EQ_INT(atomic_load(&bx->aux[i]), holder);
            } else {
                ASSERT_MSG(r == 0, "waiter %d got %d %s", i, r, mpx_errname(r));
                ASSERT_EQ_INT(atomic_load(&bx->aux[i]), -1);
            }
        }
        ASSERT_EQ_INT(owner_dead, 1);
        ASSERT_EQ_INT(atomic_load(&bx->violations), 0);
        ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
        ASSERT_OK(mpx_lock_release(l));
        mpx_lock_destroy(l);
    }
    box_free(bx);
}

TEST(owner_death_nowait)
{
    /* With MPX_NOWAIT the caller either is told the lock is busy or takes it over; either
     * way the lock is then recoverable. */
    struct box *bx = box_new();
    mpx_lock *l = lock_new(MPX_LOCK_PLAIN);
    pid_t pid = fork_holder(l, 1, bx);
    th_kill_reap(pid);
    pid_t dead = 0;
    int r = mpx_lock_acquire(l, MPX_NOWAIT, &dead);
    ASSERT_MSG(r == -EAGAIN || r == MPX_EOWNERDEAD, "got %d %s", r, mpx_errname(r));
    if (r == MPX_EOWNERDEAD) {
        ASSERT_EQ_INT(dead, pid);
        ASSERT_OK(mpx_lock_release(l));
    } else {
        acquire_expect_dead_owner(l, pid);
        ASSERT_OK(mpx_lock_release(l));
    }
    mpx_lock_destroy(l);
    box_free(bx);
}

/* Helper: attaches the lock at argv[0] ("fd:offset"), takes it, writes 'h' to the pipe
 * argv[1] and waits to be killed. */
HELPER(hold_lock)
{
    ASSERT_EQ_INT(argc, 2);
    int fd;
    uint64_t off;
    parse_fdoff(argv[0], &fd, &off);
    mpx_lock *l = NULL;
    ASSERT_OK(mpx_lock_attach(&l, fd, off));
    close(fd);
    ASSERT_OK(mpx_lock_acquire(l, in_ms(20000), NULL));
    write_byte(atoi(argv[1]), 'h');
    for (;;)
        pause();
}

TEST(owner_death_exec_helper)
{
    for (int kind = 0; kind <= 1; kind++) {
        mpx_lock *l = lock_new(kind);
        int p[2];
        ASSERT_SYS(pipe2(p, O_CLOEXEC));
        int keep[2] = {dup_cloexec(mpx_lock_fd(l)), p[1]};
        char a0[48], a1[16];
        fdoff_arg(a0, sizeof a0, keep[0], mpx_lock_offset(l));
        snprintf(a1, sizeof a1, "%d", p[1]);
        const char *args[] = {a0, a1, NULL};
        pid_t pid = th_spawn_helper("hold_lock", args, keep, 2, NULL);
        close(keep[0]);
        close(p[1]);
        ASSERT_EQ_INT(read_byte(p[0], 20), 'h');
        ASSERT_EQ_INT(mpx_lock_owner(l), pid);
        ASSERT_ERR(mpx_lock_acquire(l, in_ms(50), NULL), -ETIMEDOUT);
        th_kill_reap(pid);
        acquire_expect_dead_owner(l, pid);
        assert_recovered(l);
        close(p[0]);
        mpx_lock_destroy(l);
    }
}

TEST(fault_lock_acquired)
{
    for (int kind = 0; kind <= 1; kind++) {
        for (unsigned countdown = 0; countdown <= 1; countdown++) {
            mpx_lock *l = lock_new(kind);
            pid_t pid = th_fork();
            if (pid == 0) {
                ASSERT_OK(mpx_fault_arm("lock.acquired", countdown));
                if (countdown) { /* the first pass goes through */
                    ASSERT_OK(mpx_lock_acquire(l, MPX_FOREVER, NULL));
                    ASSERT_OK(mpx_lock_release(l));
                }
                mpx_lock_acquire(l, MPX_FOREVER, NULL);
                fprintf(stderr, "acquire passed lock.acquired without dying\n");
                _exit(99);
            }
            th_wait_signaled(pid, SIGKILL, 20);
            acquire_expect_dead_owner(l, pid);
            assert_recovered(l);
            mpx_lock_destroy(l);
        }
    }
}

TEST(fault_lock_wait_flagged)
{
    /* A waiter killed after announcing that it sleeps must not swallow the wake-up meant
     * for a live waiter. */
    mpx_lock *l = lock_new(MPX_LOCK_PLAIN);
    ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
    pid_t d = th_fork();
    if (d == 0) {
        ASSERT_OK(mpx_fault_arm("lock.wait.flagged", 0));
        mpx_lock_acquire(l, in_ms(20000), NULL);
        _exit(99);
    }
    th_wait_signaled(d, SIGKILL, 20);
    pid_t w = th_fork();
    if (w == 0) {
        pid_t dead = 1;
        ASSERT_OK(mpx_lock_acquire(l, in_ms(20000), &dead)); /* the holder (we) is alive */
        ASSERT_EQ_INT(dead, 1);
        ASSERT_OK(mpx_lock_release(l));
        _exit(0);
    }
    th_wait_asleep(w);
    ASSERT_OK(mpx_lock_release(l));
    th_wait_ok(w, 10);
    ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
    ASSERT_OK(mpx_lock_release(l));
    mpx_lock_destroy(l);
}

/* ---------------------------------------------------------------------------------------
 * Semaphores
 */

TEST(sem_basic)
{
    mpx_sem *s = sem_new(2, MPX_SEM_VALUE_MAX);
    ASSERT_OK(mpx_sem_acquire(s, MPX_NOWAIT));
    ASSERT_EQ_UINT(mpx_sem_value(s), 1);
    ASSERT_OK(mpx_sem_acquire(s, mpx_now() - 1)); /* no wait needed */
    ASSERT_EQ_UINT(mpx_sem_value(s), 0);
    ASSERT_ERR(mpx_sem_acquire(s, MPX_NOWAIT), -EAGAIN);
    ASSERT_ERR(mpx_sem_acquire(s, mpx_now() - 1), -ETIMEDOUT);
    int64_t t0 = th_now_ns();
    ASSERT_ERR(mpx_sem_acquire(s, in_ms(100)), -ETIMEDOUT);
    assert_elapsed(t0, 100 * MS);
    ASSERT_EQ_UINT(mpx_sem_value(s), 0);
    for (unsigned i = 1; i <= 100; i++) {
        ASSERT_OK(mpx_sem_release(s));
        ASSERT_EQ_UINT(mpx_sem_value(s), i);
    }
    for (unsigned i = 100; i >= 1; i--)
        ASSERT_OK(mpx_sem_acquire(s, MPX_NOWAIT));
    ASSERT_EQ_UINT(mpx_sem_value(s), 0);
    mpx_sem_destroy(s);

    /* Zero permits at creation, and the largest value. */
    s = sem_new(0, 1);
    ASSERT_ERR(mpx_sem_acquire(s, MPX_NOWAIT), -EAGAIN);
    mpx_sem_destroy(s);
    s = sem_new(MPX_SEM_VALUE_MAX, MPX_SEM_VALUE_MAX);
    ASSERT_EQ_UINT(mpx_sem_value(s), MPX_SEM_VALUE_MAX);
    ASSERT_ERR(mpx_sem_release(s), -EOVERFLOW); /* even the unbounded kind has a maximum */
    ASSERT_EQ_UINT(mpx_sem_value(s), MPX_SEM_VALUE_MAX);
    ASSERT_OK(mpx_sem_acquire(s, MPX_NOWAIT));
    ASSERT_EQ_UINT(mpx_sem_value(s), MPX_SEM_VALUE_MAX - 1);
    ASSERT_OK(mpx_sem_release(s));
    mpx_sem_destroy(s);
    s = sem_new(MPX_SEM_VALUE_MAX, MPX_SEM_VALUE_MAX);
    ASSERT_EQ_UINT(mpx_sem_maxvalue(s), MPX_SEM_VALUE_MAX);
    mpx_sem_destroy(s);

    /* A bounded semaphore of zero permits: nothing to take, nothing may be given back. */
    s = sem_new(0, 0);
    ASSERT_EQ_UINT(mpx_sem_maxvalue(s), 0);
    ASSERT_ERR(mpx_sem_acquire(s, MPX_NOWAIT), -EAGAIN);
    ASSERT_ERR(mpx_sem_release(s), -EOVERFLOW);
    mpx_sem_destroy(s);
}

TEST(sem_bounded_overflow)
{
    mpx_sem *s = sem_new(1, 1);
    ASSERT_ERR(mpx_sem_release(s), -EOVERFLOW);
    ASSERT_EQ_UINT(mpx_sem_value(s), 1);
    ASSERT_OK(mpx_sem_acquire(s, MPX_NOWAIT));
    ASSERT_OK(mpx_sem_release(s));
    ASSERT_ERR(mpx_sem_release(s), -EOVERFLOW);
    mpx_sem_destroy(s);

    s = sem_new(0, 3);
    for (int i = 0; i < 3; i++)
        ASSERT_OK(mpx_sem_release(s));
    ASSERT_ERR(mpx_sem_release(s), -EOVERFLOW);
    ASSERT_ERR(mpx_sem_release(s), -EOVERFLOW);
    ASSERT_EQ_UINT(mpx_sem_value(s), 3);
    /* Over-release from another process as well. */
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_ERR(mpx_sem_release(s), -EOVERFLOW);
        ASSERT_OK(mpx_sem_acquire(s, MPX_NOWAIT));
        _exit(0);
    }
    th_wait_ok(pid, 20);
    ASSERT_EQ_UINT(mpx_sem_value(s), 2);
    mpx_sem_destroy(s);
}

TEST(sem_blocking_across_processes)
{
    mpx_sem *s = sem_new(0, MPX_SEM_VALUE_MAX);
    /* A child waits for a permit from the parent. */
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_OK(mpx_sem_acquire(s, in_ms(20000)));
        _exit(0);
    }
    th_wait_asleep(pid);
    ASSERT_EQ_UINT(mpx_sem_value(s), 0);
    ASSERT_OK(mpx_sem_release(s));
    th_wait_ok(pid, 10);
    ASSERT_EQ_UINT(mpx_sem_value(s), 0);
    /* The parent waits for a permit from a child. */
    pid = th_fork();
    if (pid == 0) {
        th_sleep_ms(150);
        ASSERT_OK(mpx_sem_release(s));
        _exit(0);
    }
    int64_t t0 = th_now_ns();
    ASSERT_OK(mpx_sem_acquire(s, in_ms(20000)));
    ASSERT_GE_INT(th_now_ns() - t0, 100 * MS);
    th_wait_ok(pid, 10);

    /* Permits flow from producers to consumers; nobody is left waiting with permits
     * available (a lost wake-up would show as a timeout). */
    enum { P = 2, C = 3, M = 3000 };
    pid_t pids[P + C];
    for (int i = 0; i < P + C; i++) {
        pids[i] = th_fork();
        if (pids[i] == 0) {
            if (i < P) {
                for (int j = 0; j < M * C; j++) {
                    ASSERT_OK(mpx_sem_release(s));
                    if ((j & 255) == 0)
                        sched_yield();
                }
            } else {
                for (int j = 0; j < M * P; j++)
                    ASSERT_OK(mpx_sem_acquire(s, in_ms(10000)));
            }
            _exit(0);
        }
    }
    for (int i = 0; i < P + C; i++)
        th_wait_ok(pids[i], 60);
    ASSERT_EQ_UINT(mpx_sem_value(s), 0);
    mpx_sem_destroy(s);
}

TEST(sem_contention_bounded)
{
    /* A bounded semaphore of 2 shared by 4 processes: never more than 2 holders, the value
     * is never seen above 2 (nor "negative", which an unsigned shows as huge), and no
     * release overflows. */
    enum { K = 2, P = 4, M = 3000 };
    mpx_sem *s = sem_new(K, K);
    struct box *bx = box_new();
    pid_t pids[P];
    for (int p = 0; p < P; p++) {
        pids[p] = th_fork();
        if (pids[p] == 0) {
            for (int i = 0; i < M; i++) {
                ASSERT_OK(mpx_sem_acquire(s, in_ms(20000)));
                if (atomic_fetch_add(&bx->inside, 1) >= K)
                    atomic_fetch_add(&bx->violations, 1);
                unsigned v = mpx_sem_value(s);
                if (v > K - 1u)
                    atomic_fetch_add(&bx->done, 1); /* a holder sees at most K-1 left */
                if ((i & 15) == 0)
                    sched_yield();
                atomic_fetch_sub(&bx->inside, 1);
                ASSERT_OK(mpx_sem_release(s));
            }
            _exit(0);
        }
    }
    int samples = 0;
    while (th_running(pids[0]) || th_running(pids[P - 1])) {
        unsigned v = mpx_sem_value(s);
        ASSERT_MSG(v <= K, "semaphore value %u seen, maximum %u", v, K);
        samples++;
        th_sleep_ms(0.05);
    }
    for (int p = 0; p < P; p++)
        th_wait_ok(pids[p], 60);
    ASSERT_EQ_INT(atomic_load(&bx->violations), 0);
    ASSERT_EQ_INT(atomic_load(&bx->done), 0);
    ASSERT_EQ_UINT(mpx_sem_value(s), K);
    ASSERT_GT_INT(samples, 0);
    box_free(bx);
    mpx_sem_destroy(s);
}

TEST(sem_permit_of_dead_process_not_returned)
{
    mpx_sem *s = sem_new(1, 1);
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_OK(mpx_sem_acquire(s, MPX_NOWAIT));
        _exit(0);
    }
    th_wait_ok(pid, 20);
    ASSERT_EQ_UINT(mpx_sem_value(s), 0); /* no owner: the permit is gone */
    ASSERT_ERR(mpx_sem_acquire(s, in_ms(100)), -ETIMEDOUT);
    ASSERT_OK(mpx_sem_release(s));

    /* Killed at "sem.acquired": the permit was taken, and the semaphore still works. */
    pid = th_fork();
    if (pid == 0) {
        ASSERT_OK(mpx_fault_arm("sem.acquired", 0));
        mpx_sem_acquire(s, MPX_FOREVER);
        _exit(99);
    }
    th_wait_signaled(pid, SIGKILL, 20);
    ASSERT_EQ_UINT(mpx_sem_value(s), 0);
    pid_t w = th_fork();
    if (w == 0) {
        ASSERT_OK(mpx_sem_acquire(s, in_ms(20000)));
        _exit(0);
    }
    th_wait_asleep(w);
    ASSERT_OK(mpx_sem_release(s));
    th_wait_ok(w, 10);
    ASSERT_EQ_UINT(mpx_sem_value(s), 0);
    ASSERT_OK(mpx_sem_release(s));
    ASSERT_ERR(mpx_sem_release(s), -EOVERFLOW);
    mpx_sem_destroy(s);
}

/* ---------------------------------------------------------------------------------------
 * Events
 */

TEST(event_basic)
{
    mpx_event *e = event_new();
    ASSERT_ERR(mpx_event_wait(e, MPX_NOWAIT), -EAGAIN);
    ASSERT_ERR(mpx_event_wait(e, mpx_now() - 1), -ETIMEDOUT);
    int64_t t0 = th_now_ns();
    ASSERT_ERR(mpx_event_wait(e, in_ms(100)), -ETIMEDOUT);
    assert_elapsed(t0, 100 * MS);
    ASSERT_OK(mpx_event_clear(e)); /* clearing a clear event */
    ASSERT_EQ_INT(mpx_event_is_set(e), 0);
    ASSERT_OK(mpx_event_set(e));
    ASSERT_EQ_INT(mpx_event_is_set(e), 1);
    ASSERT_OK(mpx_event_set(e)); /* setting a set event */
    ASSERT_EQ_INT(mpx_event_is_set(e), 1);
    ASSERT_OK(mpx_event_wait(e, MPX_NOWAIT));
    ASSERT_OK(mpx_event_wait(e, mpx_now() - 1));
    ASSERT_OK(mpx_event_wait(e, MPX_FOREVER));
    ASSERT_EQ_INT(mpx_event_is_set(e), 1); /* waiting does not clear it */
    ASSERT_OK(mpx_event_clear(e));
    ASSERT_EQ_INT(mpx_event_is_set(e), 0);
    ASSERT_ERR(mpx_event_wait(e, MPX_NOWAIT), -EAGAIN);
    /* Set and cleared in another process. */
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_OK(mpx_event_set(e));
        _exit(0);
    }
    th_wait_ok(pid, 20);
    ASSERT_EQ_INT(mpx_event_is_set(e), 1);
    pid = th_fork();
    if (pid == 0) {
        ASSERT_OK(mpx_event_clear(e));
        _exit(0);
    }
    th_wait_ok(pid, 20);
    ASSERT_EQ_INT(mpx_event_is_set(e), 0);
    mpx_event_destroy(e);
}

struct ev_waiter {
    mpx_event *e;
    _Atomic int started;
    int r;
};

static void *ev_wait_thread(void *p)
{
    struct ev_waiter *w = p;
    atomic_store(&w->started, 1);
    w->r = mpx_event_wait(w->e, in_ms(20000));
    return NULL;
}

TEST(event_wakes_all_waiters)
{
    enum { N = 4 };
    mpx_event *e = event_new();
    struct box *bx = box_new();
    pid_t pids[N];
    for (int i = 0; i < N; i++) {
        pids[i] = th_fork();
        if (pids[i] == 0) {
            ASSERT_OK(mpx_event_wait(e, in_ms(20000)));
            atomic_fetch_add(&bx->woken, 1);
            _exit(0);
        }
    }
    struct ev_waiter tw = {.e = e};
    pthread_t t = th_thread_start(ev_wait_thread, &tw);
    TH_WAIT_FOR(atomic_load(&tw.started), 10);
    for (int i = 0; i < N; i++)
        th_wait_asleep(pids[i]);
    ASSERT_EQ_INT(atomic_load(&bx->woken), 0);
    ASSERT_OK(mpx_event_set(e));
    for (int i = 0; i < N; i++)
        th_wait_ok(pids[i], 10);
    th_thread_join(t);
    ASSERT_OK(tw.r);
    ASSERT_EQ_INT(atomic_load(&bx->woken), N);
    box_free(bx);
    mpx_event_destroy(e);
}

TEST(event_set_then_clear_releases_waiters)
{
    /* "a set() followed at once by clear() still releases the waiters" */
    enum { N = 3 };
    mpx_event *e = event_new();
    for (int round = 0; round < 3; round++) {
        pid_t pids[N];
        for (int i = 0; i < N; i++) {
            pids[i] = th_fork();
            if (pids[i] == 0) {
                ASSERT_OK(mpx_event_wait(e, in_ms(20000)));
                _exit(0);
            }
        }
        struct ev_waiter tw = {.e = e};
        pthread_t t = th_thread_start(ev_wait_thread, &tw);
        TH_WAIT_FOR(atomic_load(&tw.started), 10);
        for (int i = 0; i < N; i++)
            th_wait_asleep(pids[i]);
        ASSERT_OK(mpx_event_set(e));
        ASSERT_OK(mpx_event_clear(e));
        ASSERT_EQ_INT(mpx_event_is_set(e), 0);
        for (int i = 0; i < N; i++)
            th_wait_ok(pids[i], 10);
        th_thread_join(t);
        ASSERT_OK(tw.r);
        /* A wait that starts after the clear waits again. */
        ASSERT_ERR(mpx_event_wait(e, in_ms(30)), -ETIMEDOUT);
    }
    mpx_event_destroy(e);
}

/* ---------------------------------------------------------------------------------------
 * Conditions
 */

static void *cond_wait_without_lock_thread(void *p)
{
    void **a = p;
    return (void *)(intptr_t)mpx_cond_wait(a[0], a[1], in_ms(100), NULL);
}

TEST(cond_requires_the_lock)
{
    mpx_cond *c = cond_new();
    mpx_lock *l = lock_new(MPX_LOCK_PLAIN);
    mpx_lock *r = lock_new(MPX_LOCK_RECURSIVE);
    pid_t dead = 31;
    /* Free locks. */
    int64_t t0 = th_now_ns();
    ASSERT_ERR(mpx_cond_wait(c, l, in_ms(200), &dead), -EPERM);
    ASSERT_ERR(mpx_cond_wait(c, r, in_ms(200), &dead), -EPERM);
    ASSERT_LT_INT(th_now_ns() - t0, 150 * MS); /* nothing done: no wait */
    ASSERT_ERR(mpx_cond_notify(c, l, 1), -EPERM);
    ASSERT_ERR(mpx_cond_notify(c, r, 1), -EPERM);
    ASSERT_ERR(mpx_cond_notify_all(c, l), -EPERM);
    ASSERT_ERR(mpx_cond_notify_all(c, r), -EPERM);
    ASSERT_EQ_INT(dead, 31);
    ASSERT_EQ_INT(mpx_lock_owner(l), 0); /* not taken by the refused calls */
    ASSERT_EQ_INT(mpx_lock_owner(r), 0);
    ASSERT_EQ_UINT(mpx_cond_waiters(c), 0);
    /* Locks held by another process. */
    struct box *bx = box_new();
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
        ASSERT_OK(mpx_lock_acquire(r, MPX_NOWAIT, NULL));
        atomic_store(&bx->ready, 1);
        TH_WAIT_FOR(atomic_load(&bx->go), 20);
        ASSERT_OK(mpx_lock_release(l));
        ASSERT_OK(mpx_lock_release(r));
        _exit(0);
    }
    TH_WAIT_FOR(atomic_load(&bx->ready), 20);
    ASSERT_ERR(mpx_cond_wait(c, l, in_ms(200), NULL), -EPERM);
    ASSERT_ERR(mpx_cond_wait(c, r, in_ms(200), NULL), -EPERM);
    ASSERT_ERR(mpx_cond_notify(c, l, 1), -EPERM);
    ASSERT_ERR(mpx_cond_notify_all(c, r), -EPERM);
    ASSERT_EQ_INT(mpx_lock_owner(l), pid);
    atomic_store(&bx->go, 1);
    th_wait_ok(pid, 20);
    /* A recursive lock held by another thread of this process. */
    ASSERT_OK(mpx_lock_acquire(r, MPX_NOWAIT, NULL));
    void *args[2] = {c, r};
    pthread_t t;
    void *ret;
    ASSERT_EQ_INT(pthread_create(&t, NULL, cond_wait_without_lock_thread, args), 0);
    ASSERT_EQ_INT(pthread_join(t, &ret), 0);
    ASSERT_ERR((intptr_t)ret, -EPERM);
    ASSERT_EQ_UINT(mpx_lock_count(r), 1);
    ASSERT_OK(mpx_lock_release(r));
    ASSERT_EQ_UINT(mpx_cond_waiters(c), 0);
    box_free(bx);
    mpx_cond_destroy(c);
    mpx_lock_destroy(l);
    mpx_lock_destroy(r);
}

TEST(cond_timeout_reholds_lock)
{
    mpx_cond *c = cond_new();
    for (int kind = 0; kind <= 1; kind++) {
        mpx_lock *l = lock_new(kind);
        ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
        pid_t dead = 8;
        int64_t t0 = th_now_ns();
        ASSERT_ERR(mpx_cond_wait(c, l, in_ms(100), &dead), -ETIMEDOUT);
        assert_elapsed(t0, 100 * MS);
        ASSERT_EQ_INT(dead, 8);
        ASSERT_EQ_INT(mpx_lock_owner(l), getpid());
        ASSERT_EQ_INT(mpx_lock_is_mine(l), 1);
        ASSERT_EQ_UINT(mpx_lock_count(l), 1);
        ASSERT_ERR(mpx_cond_wait(c, l, mpx_now() - 1, NULL), -ETIMEDOUT);
        ASSERT_EQ_INT(mpx_lock_is_mine(l), 1);
        pid_t pid = th_fork();
        if (pid == 0) {
            ASSERT_ERR(mpx_lock_acquire(l, MPX_NOWAIT, NULL), -EAGAIN);
            _exit(0);
        }
        th_wait_ok(pid, 20);
        ASSERT_OK(mpx_lock_release(l));
        ASSERT_EQ_UINT(mpx_cond_waiters(c), 0);
        mpx_lock_destroy(l);
    }
    mpx_cond_destroy(c);
}

TEST(cond_timeout_waits_for_lock)
{
    /* After the deadline the waiter still re-acquires the lock before returning, however
     * long another process holds it ("ignores the deadline"). */
    mpx_cond *c = cond_new();
    mpx_lock *l = lock_new(MPX_LOCK_PLAIN);
    struct box *bx = box_new();
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
        ASSERT_ERR(mpx_cond_wait(c, l, in_ms(150), NULL), -ETIMEDOUT);
        ASSERT_EQ_INT(atomic_load(&bx->done), 1); /* the parent had let go */
        ASSERT_EQ_INT(mpx_lock_owner(l), getpid());
        ASSERT_OK(mpx_lock_release(l));
        _exit(0);
    }
    TH_WAIT_FOR(mpx_cond_waiters(c) == 1, 20);
    ASSERT_OK(mpx_lock_acquire(l, in_ms(20000), NULL));
    th_sleep_ms(500);
    ASSERT(th_running(pid));
    atomic_store(&bx->done, 1);
    ASSERT_OK(mpx_lock_release(l));
    th_wait_ok(pid, 10);
    box_free(bx);
    mpx_lock_destroy(l);
    mpx_cond_destroy(c);
}

/* Waits `wait_ms` on `c` with `l` (free) and checks that the wait times out: no
 * notification was left over, stored for no waiter. */
static void assert_no_notification_left(mpx_cond *c, mpx_lock *l, int64_t wait_ms)
{
    ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
    ASSERT_ERR(mpx_cond_wait(c, l, in_ms(wait_ms), NULL), -ETIMEDOUT);
    ASSERT_OK(mpx_lock_release(l));
}

/* Forks a child that waits on `c` with `l` and records its result in bx->res[i]. */
static pid_t fork_cond_waiter(mpx_cond *c, mpx_lock *l, struct box *bx, int i, int64_t wait_ms)
{
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_OK(mpx_lock_acquire(l, in_ms(20000), NULL));
        atomic_fetch_add(&bx->ready, 1);
        int r = mpx_cond_wait(c, l, in_ms(wait_ms), NULL);
        atomic_store(&bx->res[i], r);
        ASSERT_EQ_INT(mpx_lock_owner(l), getpid());
        if (r == 0)
            atomic_fetch_add(&bx->woken, 1);
        ASSERT_OK(mpx_lock_release(l));
        _exit(0);
    }
    return pid;
}

static void notify_locked(mpx_cond *c, mpx_lock *l, unsigned n)
{
    ASSERT_OK(mpx_lock_acquire(l, in_ms(20000), NULL));
    ASSERT_OK(mpx_cond_notify(c, l, n));
    ASSERT_OK(mpx_lock_release(l));
}

static void notify_all_locked(mpx_cond *c, mpx_lock *l)
{
    ASSERT_OK(mpx_lock_acquire(l, in_ms(20000), NULL));
    ASSERT_OK(mpx_cond_notify_all(c, l));
    ASSERT_OK(mpx_lock_release(l));
}

TEST(cond_notify_wakes_exactly_n)
{
    enum { N = 4 };
    mpx_cond *c = cond_new();
    mpx_lock *l = lock_new(MPX_LOCK_PLAIN);
    struct box *bx = box_new();
    pid_t pids[N];
    for (int i = 0; i < N; i++)
        pids[i] = fork_cond_waiter(c, l, bx, i, 20000);
    TH_WAIT_FOR(mpx_cond_waiters(c) == N, 20);
    /* notify(0) wakes nobody. */
    notify_locked(c, l, 0);
    th_sleep_ms(200);
    ASSERT_EQ_INT(atomic_load(&bx->woken), 0);
    /* notify(1): exactly one, each time. */
    for (int k = 1; k <= 2; k++) {
        notify_locked(c, l, 1);
        TH_WAIT_FOR(atomic_load(&bx->woken) == k, 10);
        th_sleep_ms(250);
        ASSERT_EQ_INT(atomic_load(&bx->woken), k);
    }
    TH_WAIT_FOR(mpx_cond_waiters(c) == N - 2, 10);
    /* notify(5) with 2 waiting: both, and no credit is left for later waiters. */
    notify_locked(c, l, 5);
    for (int i = 0; i < N; i++)
        th_wait_ok(pids[i], 10);
    for (int i = 0; i < N; i++)
        ASSERT_OK(atomic_load(&bx->res[i]));
    ASSERT_EQ_UINT(mpx_cond_waiters(c), 0);
    assert_no_notification_left(c, l, 100);
    box_free(bx);
    mpx_lock_destroy(l);
    mpx_cond_destroy(c);
}

struct cw_thread {
    mpx_cond *c;
    mpx_lock *l;
    int r;
    unsigned count;
};

static void *cond_wait_thread(void *p)
{
    struct cw_thread *w = p;
    ASSERT_OK(mpx_lock_acquire(w->l, in_ms(20000), NULL));
    w->r = mpx_cond_wait(w->c, w->l, in_ms(20000), NULL);
    w->count = mpx_lock_count(w->l);
    ASSERT_OK(mpx_lock_release(w->l));
    return NULL;
}

TEST(cond_notify_all_processes_and_thread)
{
    enum { N = 4 };
    mpx_cond *c = cond_new();
    mpx_lock *l = lock_new(MPX_LOCK_PLAIN);
    struct box *bx = box_new();
    pid_t pids[N];
    for (int i = 0; i < N; i++)
        pids[i] = fork_cond_waiter(c, l, bx, i, 20000);
    struct cw_thread tw = {c, l, 1, 0};
    pthread_t t = th_thread_start(cond_wait_thread, &tw);
    TH_WAIT_FOR(mpx_cond_waiters(c) == N + 1, 20);
    notify_all_locked(c, l);
    for (int i = 0; i < N; i++)
        th_wait_ok(pids[i], 10);
    th_thread_join(t);
    ASSERT_OK(tw.r);
    ASSERT_EQ_UINT(tw.count, 1);
    ASSERT_EQ_INT(atomic_load(&bx->woken), N);
    ASSERT_EQ_UINT(mpx_cond_waiters(c), 0);
    /* notify_all with nobody waiting stores nothing either. */
    ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
    ASSERT_OK(mpx_cond_notify_all(c, l));
    ASSERT_ERR(mpx_cond_wait(c, l, in_ms(60), NULL), -ETIMEDOUT);
    ASSERT_OK(mpx_lock_release(l));
    box_free(bx);
    mpx_lock_destroy(l);
    mpx_cond_destroy(c);
}

struct rc_notifier {
    mpx_cond *c;
    mpx_lock *l;
    int nowait;
    unsigned count;
};

static void *rc_notify_thread(void *p)
{
    struct rc_notifier *n = p;
    TH_WAIT_FOR(mpx_cond_waiters(n->c) == 1, 20);
    /* The waiter released all three levels: the lock is free for this thread. */
    n->nowait = mpx_lock_acquire(n->l, in_ms(20000), NULL);
    n->count = mpx_lock_count(n->l);
    ASSERT_OK(mpx_cond_notify(n->c, n->l, 1));
    ASSERT_OK(mpx_lock_release(n->l));
    return NULL;
}

TEST(cond_recursive_lock_levels)
{
    mpx_cond *c = cond_new();
    mpx_lock *r = lock_new(MPX_LOCK_RECURSIVE);
    for (int i = 0; i < 3; i++)
        ASSERT_OK(mpx_lock_acquire(r, MPX_NOWAIT, NULL));
    /* Timeout: back at 3 levels. */
    ASSERT_ERR(mpx_cond_wait(c, r, in_ms(50), NULL), -ETIMEDOUT);
    ASSERT_EQ_UINT(mpx_lock_count(r), 3);
    /* Notified by another thread, which could take the lock meanwhile. */
    struct rc_notifier n = {c, r, 1, 0};
    pthread_t t = th_thread_start(rc_notify_thread, &n);
    ASSERT_OK(mpx_cond_wait(c, r, in_ms(20000), NULL));
    th_thread_join(t);
    ASSERT_OK(n.nowait);
    ASSERT_EQ_UINT(n.count, 1);
    ASSERT_EQ_UINT(mpx_lock_count(r), 3);
    ASSERT_EQ_INT(mpx_lock_is_mine(r), 1);
    /* Notified by another process. */
    pid_t pid = th_fork();
    if (pid == 0) {
        TH_WAIT_FOR(mpx_cond_waiters(c) == 1, 20);
        ASSERT_OK(mpx_lock_acquire(r, MPX_NOWAIT, NULL)); /* free: fully released */
        ASSERT_EQ_UINT(mpx_lock_count(r), 1);
        ASSERT_OK(mpx_cond_notify(c, r, 1));
        ASSERT_OK(mpx_lock_release(r));
        _exit(0);
    }
    ASSERT_OK(mpx_cond_wait(c, r, in_ms(20000), NULL));
    ASSERT_EQ_UINT(mpx_lock_count(r), 3);
    th_wait_ok(pid, 10);
    for (int i = 0; i < 3; i++)
        ASSERT_OK(mpx_lock_release(r));
    ASSERT_ERR(mpx_lock_release(r), -EPERM);
    ASSERT_EQ_INT(mpx_lock_owner(r), 0);
    mpx_lock_destroy(r);
    mpx_cond_destroy(c);
}

TEST(cond_killed_waiter_absorbs_no_notification)
{
    mpx_cond *c = cond_new();
    mpx_lock *l = lock_new(MPX_LOCK_PLAIN);
    struct box *bx = box_new();
    /* The doomed waiter registers first, so that a first-come order would pick it. */
    pid_t doomed = fork_cond_waiter(c, l, bx, 0, 20000);
    TH_WAIT_FOR(mpx_cond_waiters(c) == 1, 20);
    th_wait_asleep(doomed);
    pid_t live = fork_cond_waiter(c, l, bx, 1, 20000);
    TH_WAIT_FOR(mpx_cond_waiters(c) == 2, 20);
    th_wait_asleep(live);
    th_kill_reap(doomed);
    notify_locked(c, l, 1);
    th_wait_ok(live, 5); /* woken, although a dead waiter was first in line */
    ASSERT_OK(atomic_load(&bx->res[1]));
    TH_WAIT_FOR(mpx_cond_waiters(c) == 0, 5);
    assert_no_notification_left(c, l, 150); /* none for a later waiter */

    /* The only waiter killed: a notify finds nobody alive, and stores nothing. */
    memset(bx, 0, sizeof *bx);
    doomed = fork_cond_waiter(c, l, bx, 0, 20000);
    TH_WAIT_FOR(mpx_cond_waiters(c) == 1, 20);
    th_wait_asleep(doomed);
    th_kill_reap(doomed);
    notify_locked(c, l, 1);
    assert_no_notification_left(c, l, 150);
    live = fork_cond_waiter(c, l, bx, 1, 150);
    th_wait_ok(live, 10);
    ASSERT_ERR(atomic_load(&bx->res[1]), -ETIMEDOUT);
    ASSERT_EQ_UINT(mpx_cond_waiters(c), 0);
    /* notify_all after a killed waiter: the live ones are all woken. */
    memset(bx, 0, sizeof *bx);
    doomed = fork_cond_waiter(c, l, bx, 0, 20000);
    pid_t l1 = fork_cond_waiter(c, l, bx, 1, 20000);
    pid_t l2 = fork_cond_waiter(c, l, bx, 2, 20000);
    TH_WAIT_FOR(mpx_cond_waiters(c) == 3, 20);
    th_wait_asleep(doomed);
    th_kill_reap(doomed);
    notify_all_locked(c, l);
    th_wait_ok(l1, 5);
    th_wait_ok(l2, 5);
    ASSERT_EQ_INT(atomic_load(&bx->woken), 2);
    box_free(bx);
    mpx_lock_destroy(l);
    mpx_cond_destroy(c);
}

TEST(cond_notifier_dies_holding_lock)
{
    /* A notifier exits while holding the lock: the waiter it woke re-acquires the lock
     * with MPX_EOWNERDEAD and the notifier's pid. */
    for (int kind = 0; kind <= 1; kind++) {
        mpx_cond *c = cond_new();
        mpx_lock *l = lock_new(kind);
        struct box *bx = box_new();
        pid_t w = th_fork();
        if (w == 0) {
            ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
            pid_t dead = 0;
            ASSERT_ERR(mpx_cond_wait(c, l, in_ms(20000), &dead), MPX_EOWNERDEAD);
            ASSERT_EQ_INT(dead, (pid_t)atomic_load(&bx->aux[0]));
            ASSERT_EQ_INT(mpx_lock_owner(l), getpid());
            ASSERT_EQ_UINT(mpx_lock_count(l), 1);
            ASSERT_OK(mpx_lock_release(l));
            _exit(0);
        }
        TH_WAIT_FOR(mpx_cond_waiters(c) == 1, 20);
        pid_t n = th_fork();
        if (n == 0) {
            atomic_store(&bx->aux[0], getpid());
            ASSERT_OK(mpx_lock_acquire(l, in_ms(20000), NULL));
            ASSERT_OK(mpx_cond_notify(c, l, 1));
            _exit(0); /* holding the lock */
        }
        th_wait_ok(n, 10);
        th_wait_ok(w, 10);
        ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
        ASSERT_OK(mpx_lock_release(l));
        box_free(bx);
        mpx_lock_destroy(l);
        mpx_cond_destroy(c);
    }
}

TEST(cond_bounded_buffer)
{
    /* The classic use: producers and consumers in several processes around a shared
     * buffer of 4 slots, with two conditions. Every item arrives exactly once. */
    enum { SLOTS = 4, P = 2, C = 2, ITEMS = 1500 };
    mpx_lock *l = lock_new(MPX_LOCK_PLAIN);
    mpx_cond *not_empty = cond_new(), *not_full = cond_new();
    struct box *bx = box_new(); /* arr[0..SLOTS) ring, aux[0] head, aux[1] count */
    pid_t pids[P + C];
    for (int i = 0; i < P + C; i++) {
        pids[i] = th_fork();
        if (pids[i] == 0) {
            bool producer = i < P;
            int todo = producer ? ITEMS : ITEMS * P / C;
            long sum = 0;
            for (int j = 0; j < todo; j++) {
                ASSERT_OK(mpx_lock_acquire(l, in_ms(10000), NULL));
                if (producer) {
                    while (atomic_load(&bx->aux[1]) == SLOTS)
                        ASSERT_OK(mpx_cond_wait(not_full, l, in_ms(10000), NULL));
                    long at = (atomic_load(&bx->aux[0]) + atomic_load(&bx->aux[1])) % SLOTS;
                    atomic_store(&bx->arr[at], i * ITEMS + j + 1);
                    atomic_fetch_add(&bx->aux[1], 1);
                    ASSERT_OK(mpx_cond_notify(not_empty, l, 1));
                } else {
                    while (atomic_load(&bx->aux[1]) == 0)
                        ASSERT_OK(mpx_cond_wait(not_empty, l, in_ms(10000), NULL));
                    long at = atomic_load(&bx->aux[0]);
                    sum += atomic_load(&bx->arr[at]);
                    atomic_store(&bx->aux[0], (at + 1) % SLOTS);
                    atomic_fetch_sub(&bx->aux[1], 1);
                    ASSERT_OK(mpx_cond_notify(not_full, l, 1));
                }
                ASSERT_OK(mpx_lock_release(l));
            }
            if (!producer)
                atomic_fetch_add(&bx->t[0], sum);
            _exit(0);
        }
    }
    for (int i = 0; i < P + C; i++)
        th_wait_ok(pids[i], 60);
    int64_t n = (int64_t)P * ITEMS;
    ASSERT_EQ_INT(atomic_load(&bx->t[0]), n * (n + 1) / 2);
    ASSERT_EQ_INT(atomic_load(&bx->aux[1]), 0);
    box_free(bx);
    mpx_cond_destroy(not_empty);
    mpx_cond_destroy(not_full);
    mpx_lock_destroy(l);
}

TEST(cond_many_waiting_processes)
{
    /* Many waiting processes (30; docs/sync.md: the condition tracks 60 by pid): every
     * one waits and is woken, notify(n) wakes exactly n. */
    enum { N = 30 };
    mpx_cond *c = cond_new();
    mpx_lock *l = lock_new(MPX_LOCK_PLAIN);
    struct box *bx = box_new();
    pid_t pids[N];
    for (int i = 0; i < N; i++)
        pids[i] = fork_cond_waiter(c, l, bx, i, 20000);
    TH_WAIT_FOR(mpx_cond_waiters(c) == N, 20);
    notify_locked(c, l, 5);
    TH_WAIT_FOR(atomic_load(&bx->woken) == 5, 10);
    th_sleep_ms(200);
    ASSERT_EQ_INT(atomic_load(&bx->woken), 5);
    notify_all_locked(c, l);
    for (int i = 0; i < N; i++)
        th_wait_ok(pids[i], 10);
    ASSERT_EQ_INT(atomic_load(&bx->woken), N);
    ASSERT_EQ_UINT(mpx_cond_waiters(c), 0);
    box_free(bx);
    mpx_lock_destroy(l);
    mpx_cond_destroy(c);
}

TEST(cond_killed_waiter_among_many)
{
    /* sync.h: "A condition forgets a waiter whose process has died (at the next notify), so
     * no notification is spent on it" - also when many processes wait (docs/sync.md tracks
     * 60 by pid). A killed 25th waiter must leave no notification behind. */
    enum { LIVE = 24 };
    mpx_cond *c = cond_new();
    mpx_lock *l = lock_new(MPX_LOCK_PLAIN);
    struct box *bx = box_new();
    pid_t pids[LIVE];
    for (int i = 0; i < LIVE; i++)
        pids[i] = fork_cond_waiter(c, l, bx, i, 20000);
    TH_WAIT_FOR(mpx_cond_waiters(c) == LIVE, 20);
    pid_t doomed = fork_cond_waiter(c, l, bx, LIVE, 20000);
    TH_WAIT_FOR(mpx_cond_waiters(c) == LIVE + 1, 20);
    th_wait_asleep(doomed);
    th_kill_reap(doomed);
    notify_all_locked(c, l);
    for (int i = 0; i < LIVE; i++)
        th_wait_ok(pids[i], 10);
    ASSERT_EQ_INT(atomic_load(&bx->woken), LIVE);
    ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
    int r = mpx_cond_wait(c, l, in_ms(150), NULL);
    ASSERT_MSG(r == -ETIMEDOUT, "a later wait got %d %s: a notification was left for the "
               "dead waiter", r, mpx_errname(r));
    ASSERT_OK(mpx_lock_release(l));
    box_free(bx);
    mpx_lock_destroy(l);
    mpx_cond_destroy(c);
}

TEST(fault_cond_wait_registered)
{
    /* A waiter killed right after registering: the lock is recoverable, a live waiter
     * still gets the next notification, and none is left over. */
    mpx_cond *c = cond_new();
    mpx_lock *l = lock_new(MPX_LOCK_PLAIN);
    struct box *bx = box_new();
    pid_t live = fork_cond_waiter(c, l, bx, 0, 20000);
    TH_WAIT_FOR(mpx_cond_waiters(c) == 1, 20);
    th_wait_asleep(live);
    pid_t d = th_fork();
    if (d == 0) {
        ASSERT_OK(mpx_lock_acquire(l, in_ms(20000), NULL));
        ASSERT_OK(mpx_fault_arm("cond.wait.registered", 0));
        mpx_cond_wait(c, l, in_ms(20000), NULL);
        _exit(99);
    }
    th_wait_signaled(d, SIGKILL, 20);
    /* docs/sync.md: it died holding the lock, so the next acquirer is told. */
    pid_t dead = 0;
    ASSERT_ERR(mpx_lock_acquire(l, in_ms(10000), &dead), MPX_EOWNERDEAD);
    ASSERT_EQ_INT(dead, d);
    ASSERT_OK(mpx_cond_notify(c, l, 1));
    ASSERT_OK(mpx_lock_release(l));
    th_wait_ok(live, 5);
    ASSERT_OK(atomic_load(&bx->res[0]));
    assert_no_notification_left(c, l, 150);
    box_free(bx);
    mpx_lock_destroy(l);
    mpx_cond_destroy(c);
}

TEST(fault_cond_notify_granted)
{
    /* The notifier dies inside notify, holding the lock (docs/sync.md: "the next acquirer
     * gets MPX_EOWNERDEAD; the granted waiters return notified"). Whoever re-acquires the
     * lock first learns of the death, exactly once; and a waiter still blocked in
     * mpx_cond_wait() is a waiter, so a notify_all() ("Wakes every waiter") releases it. */
    mpx_cond *c = cond_new();
    mpx_lock *l = lock_new(MPX_LOCK_PLAIN);
    struct box *bx = box_new();
    pid_t w = th_fork();
    if (w == 0) {
        ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
        pid_t dead = 0;
        int r = mpx_cond_wait(c, l, in_ms(20000), &dead);
        atomic_store(&bx->res[0], r);
        ASSERT_MSG(r == 0 || r == MPX_EOWNERDEAD, "the granted waiter got %d %s", r,
                   mpx_errname(r));
        if (r == MPX_EOWNERDEAD)
            ASSERT_EQ_INT(dead, (pid_t)atomic_load(&bx->aux[0]));
        ASSERT_EQ_INT(mpx_lock_owner(l), getpid());
        ASSERT_OK(mpx_lock_release(l));
        _exit(0);
    }
    TH_WAIT_FOR(mpx_cond_waiters(c) == 1, 20);
    th_wait_asleep(w);
    pid_t n = th_fork();
    if (n == 0) {
        atomic_store(&bx->aux[0], getpid());
        ASSERT_OK(mpx_lock_acquire(l, in_ms(20000), NULL));
        ASSERT_OK(mpx_fault_arm("cond.notify.granted", 0));
        mpx_cond_notify(c, l, 1);
        _exit(99);
    }
    th_wait_signaled(n, SIGKILL, 20);
    pid_t dead = 0;
    int r = mpx_lock_acquire(l, in_ms(10000), &dead);
    ASSERT_MSG(r == 0 || r == MPX_EOWNERDEAD, "acquire after the fault: %d %s", r,
               mpx_errname(r));
    if (r == MPX_EOWNERDEAD)
        ASSERT_EQ_INT(dead, n);
    ASSERT_OK(mpx_cond_notify_all(c, l));
    ASSERT_OK(mpx_lock_release(l));
    th_wait_ok(w, 5);
    int wr = atomic_load(&bx->res[0]);
    ASSERT_MSG((r == MPX_EOWNERDEAD) + (wr == MPX_EOWNERDEAD) == 1,
               "the notifier's death was reported %s", r == wr ? "twice" : "to nobody");
    assert_no_notification_left(c, l, 100);
    ASSERT_EQ_UINT(mpx_cond_waiters(c), 0);
    box_free(bx);
    mpx_lock_destroy(l);
    mpx_cond_destroy(c);
}

/* ---------------------------------------------------------------------------------------
 * Barriers
 */

TEST(barrier_one_party)
{
    mpx_barrier *b = barrier_new(1);
    for (int i = 0; i < 5; i++) {
        ASSERT_EQ_INT(mpx_barrier_wait(b, MPX_NOWAIT), 0); /* no wait needed */
        ASSERT_EQ_INT(mpx_barrier_wait(b, mpx_now() - 1), 0);
        ASSERT_EQ_INT(mpx_barrier_wait(b, MPX_FOREVER), 0);
    }
    ASSERT_EQ_UINT(mpx_barrier_n_waiting(b), 0);
    ASSERT_EQ_INT(mpx_barrier_broken(b), 0);
    /* Three steps: the only party is the last and trips. */
    uint64_t t1 = 0, t2 = 0;
    ASSERT_EQ_INT(mpx_barrier_arrive(b, MPX_NOWAIT, &t1), 0);
    ASSERT_OK(mpx_barrier_trip(b, t1));
    ASSERT_EQ_INT(mpx_barrier_arrive(b, MPX_NOWAIT, &t2), 0);
    ASSERT_MSG(t2 != t1, "two generations share ticket %" PRIu64, t1);
    ASSERT_OK(mpx_barrier_trip(b, t2));
    /* In another process as well. */
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_EQ_INT(mpx_barrier_wait(b, MPX_NOWAIT), 0);
        _exit(0);
    }
    th_wait_ok(pid, 20);
    mpx_barrier_destroy(b);
}

TEST(barrier_three_processes_generations)
{
    enum { PARTIES = 3, G = 150 };
    mpx_barrier *b = barrier_new(PARTIES);
    struct box *bx = box_new();
    pid_t pids[PARTIES - 1];
    for (int me = 0; me < PARTIES; me++) {
        if (me < PARTIES - 1) {
            pids[me] = th_fork();
            if (pids[me] != 0)
                continue;
        }
        for (int g = 0; g < G; g++) {
            atomic_fetch_add(&bx->woken, 1); /* arrivals so far */
            int idx = mpx_barrier_wait(b, in_ms(20000));
            ASSERT_MSG(idx >= 0 && idx < PARTIES, "generation %d: wait gave %d %s", g, idx,
                       mpx_errname(idx));
            /* Nobody is released before every party of the generation arrived. */
            ASSERT_GE_INT(atomic_load(&bx->woken), PARTIES * (g + 1));
            atomic_store(&bx->arr[g * PARTIES + me], idx + 1);
            if ((g & 7) == me)
                sched_yield();
        }
        if (me < PARTIES - 1)
            _exit(0);
    }
    for (int i = 0; i < PARTIES - 1; i++)
        th_wait_ok(pids[i], 30);
    for (int g = 0; g < G; g++) {
        int seen = 0;
        for (int me = 0; me < PARTIES; me++) {
            int idx = atomic_load(&bx->arr[g * PARTIES + me]) - 1;
            ASSERT(idx >= 0 && idx < PARTIES);
            ASSERT_MSG(!(seen & (1 << idx)), "generation %d: index %d given twice", g, idx);
            seen |= 1 << idx;
        }
    }
    ASSERT_EQ_UINT(mpx_barrier_n_waiting(b), 0);
    ASSERT_EQ_INT(mpx_barrier_broken(b), 0);
    box_free(bx);
    mpx_barrier_destroy(b);
}

TEST(barrier_many_parties)
{
    /* More parties than the barrier records by pid (docs/sync.md: 32), for a few
     * generations. */
    enum { PARTIES = 40, G = 3 };
    mpx_barrier *b = barrier_new(PARTIES);
    struct box *bx = box_new();
    pid_t pids[PARTIES - 1];
    for (int me = 0; me < PARTIES; me++) {
        if (me < PARTIES - 1) {
            pids[me] = th_fork();
            if (pids[me] != 0)
                continue;
        }
        for (int g = 0; g < G; g++) {
            int idx = mpx_barrier_wait(b, in_ms(20000));
            ASSERT_MSG(idx >= 0 && idx < PARTIES, "generation %d: %d %s", g, idx,
                       mpx_errname(idx));
            atomic_fetch_add(&bx->arr[g * PARTIES + idx], 1);
        }
        if (me < PARTIES - 1)
            _exit(0);
    }
    for (int i = 0; i < PARTIES - 1; i++)
        th_wait_ok(pids[i], 20);
    for (int g = 0; g < G; g++)
        for (int i = 0; i < PARTIES; i++)
            ASSERT_MSG(atomic_load(&bx->arr[g * PARTIES + i]) == 1,
                       "generation %d: index %d given %d times", g, i,
                       atomic_load(&bx->arr[g * PARTIES + i]));
    ASSERT_EQ_INT(mpx_barrier_broken(b), 0);
    box_free(bx);
    mpx_barrier_destroy(b);
}

TEST(barrier_timeout_breaks)
{
    mpx_barrier *b = barrier_new(3);
    struct box *bx = box_new();
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_ERR(mpx_barrier_wait(b, in_ms(20000)), MPX_EBROKEN);
        _exit(0);
    }
    TH_WAIT_FOR(mpx_barrier_n_waiting(b) == 1, 20);
    int64_t t0 = th_now_ns();
    ASSERT_ERR(mpx_barrier_wait(b, in_ms(150)), -ETIMEDOUT);
    assert_elapsed(t0, 150 * MS);
    th_wait_ok(pid, 5); /* the other waiter got MPX_EBROKEN */
    ASSERT_EQ_INT(mpx_barrier_broken(b), 1);
    /* Broken until reset: every wait fails at once. */
    t0 = th_now_ns();
    ASSERT_ERR(mpx_barrier_wait(b, in_ms(5000)), MPX_EBROKEN);
    ASSERT_ERR(mpx_barrier_wait(b, MPX_NOWAIT), MPX_EBROKEN);
    uint64_t ticket;
    ASSERT_ERR(mpx_barrier_arrive(b, in_ms(5000), &ticket), MPX_EBROKEN);
    ASSERT_LT_INT(th_now_ns() - t0, 2 * SEC);
    ASSERT_OK(mpx_barrier_reset(b));
    ASSERT_EQ_INT(mpx_barrier_broken(b), 0);
    ASSERT_EQ_UINT(mpx_barrier_n_waiting(b), 0);
    /* Usable again: a full round. */
    pid_t pids[2];
    for (int i = 0; i < 2; i++) {
        pids[i] = th_fork();
        if (pids[i] == 0) {
            int idx = mpx_barrier_wait(b, in_ms(20000));
            ASSERT(idx >= 0 && idx < 3);
            atomic_fetch_or(&bx->res[0], 1 << idx);
            _exit(0);
        }
    }
    int idx = mpx_barrier_wait(b, in_ms(20000));
    ASSERT(idx >= 0 && idx < 3);
    for (int i = 0; i < 2; i++)
        th_wait_ok(pids[i], 10);
    ASSERT_EQ_INT(atomic_load(&bx->res[0]) | (1 << idx), 7);
    ASSERT_EQ_INT(atomic_load(&bx->res[0]) & (1 << idx), 0);
    /* A deadline already passed, or MPX_NOWAIT, when the call would wait: broken too. */
    ASSERT_ERR(mpx_barrier_wait(b, mpx_now() - 1), -ETIMEDOUT);
    ASSERT_EQ_INT(mpx_barrier_broken(b), 1);
    ASSERT_OK(mpx_barrier_reset(b));
    ASSERT_ERR(mpx_barrier_wait(b, MPX_NOWAIT), -EAGAIN);
    ASSERT_EQ_INT(mpx_barrier_broken(b), 1);
    ASSERT_OK(mpx_barrier_reset(b));
    ASSERT_EQ_INT(mpx_barrier_broken(b), 0);
    box_free(bx);
    mpx_barrier_destroy(b);
}

TEST(barrier_abort_and_reset)
{
    mpx_barrier *b = barrier_new(2);
    /* Abort with nobody waiting. */
    ASSERT_OK(mpx_barrier_abort(b));
    ASSERT_EQ_INT(mpx_barrier_broken(b), 1);
    ASSERT_ERR(mpx_barrier_wait(b, in_ms(1000)), MPX_EBROKEN);
    ASSERT_OK(mpx_barrier_abort(b)); /* twice */
    ASSERT_OK(mpx_barrier_reset(b));
    ASSERT_EQ_INT(mpx_barrier_broken(b), 0);
    ASSERT_OK(mpx_barrier_reset(b)); /* reset of an intact barrier */
    ASSERT_EQ_INT(mpx_barrier_broken(b), 0);
    /* Abort wakes a waiter in another process. */
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_ERR(mpx_barrier_wait(b, in_ms(20000)), MPX_EBROKEN);
        _exit(0);
    }
    TH_WAIT_FOR(mpx_barrier_n_waiting(b) == 1, 20);
    th_wait_asleep(pid);
    ASSERT_OK(mpx_barrier_abort(b));
    th_wait_ok(pid, 5);
    ASSERT_EQ_INT(mpx_barrier_broken(b), 1);
    ASSERT_OK(mpx_barrier_reset(b));
    /* Reset wakes a waiter with MPX_EBROKEN and leaves the barrier intact. */
    pid = th_fork();
    if (pid == 0) {
        ASSERT_ERR(mpx_barrier_wait(b, in_ms(20000)), MPX_EBROKEN);
        _exit(0);
    }
    TH_WAIT_FOR(mpx_barrier_n_waiting(b) == 1, 20);
    th_wait_asleep(pid);
    ASSERT_OK(mpx_barrier_reset(b));
    th_wait_ok(pid, 5);
    ASSERT_EQ_INT(mpx_barrier_broken(b), 0);
    ASSERT_EQ_UINT(mpx_barrier_n_waiting(b), 0);
    pid = th_fork();
    if (pid == 0) {
        int idx = mpx_barrier_wait(b, in_ms(20000));
        ASSERT(idx == 0 || idx == 1);
        _exit(0);
    }
    ASSERT_OK(mpx_barrier_wait(b, in_ms(20000)));
    th_wait_ok(pid, 10);
    mpx_barrier_destroy(b);
}

TEST(barrier_n_waiting)
{
    enum { PARTIES = 4 };
    mpx_barrier *b = barrier_new(PARTIES);
    pid_t pids[PARTIES - 1];
    for (int i = 0; i < PARTIES - 1; i++) {
        pids[i] = th_fork();
        if (pids[i] == 0) {
            ASSERT_OK(mpx_barrier_wait(b, in_ms(20000)));
            _exit(0);
        }
        TH_WAIT_FOR(mpx_barrier_n_waiting(b) == (unsigned)i + 1, 20);
    }
    for (int i = 0; i < PARTIES - 1; i++)
        th_wait_asleep(pids[i]);
    ASSERT_EQ_UINT(mpx_barrier_n_waiting(b), PARTIES - 1);
    ASSERT_EQ_INT(mpx_barrier_wait(b, in_ms(20000)), PARTIES - 1); /* the last arrival */
    for (int i = 0; i < PARTIES - 1; i++)
        th_wait_ok(pids[i], 10);
    ASSERT_EQ_UINT(mpx_barrier_n_waiting(b), 0);
    mpx_barrier_destroy(b);
}

TEST(barrier_three_step)
{
    enum { PARTIES = 3 };
    mpx_barrier *b = barrier_new(PARTIES);
    struct box *bx = box_new();
    pid_t pids[PARTIES - 1];
    for (int i = 0; i < PARTIES - 1; i++) {
        pids[i] = th_fork();
        if (pids[i] == 0) {
            uint64_t t;
            int idx = mpx_barrier_arrive(b, in_ms(20000), &t);
            ASSERT(idx >= 0 && idx < PARTIES - 1);
            atomic_store(&bx->res[i], idx + 1);
            atomic_store(&bx->aux[i], (long)t);
            ASSERT_OK(mpx_barrier_await(b, t, in_ms(20000)));
            /* The last arrival's action ran before anyone was released. */
            ASSERT_EQ_INT(atomic_load(&bx->done), 1);
            _exit(0);
        }
        TH_WAIT_FOR(mpx_barrier_n_waiting(b) == (unsigned)i + 1, 20);
    }
    uint64_t t;
    ASSERT_EQ_INT(mpx_barrier_arrive(b, in_ms(20000), &t), PARTIES - 1);
    /* Everyone of the generation holds the same ticket. */
    ASSERT_EQ_UINT((uint64_t)atomic_load(&bx->aux[0]), t);
    ASSERT_EQ_UINT((uint64_t)atomic_load(&bx->aux[1]), t);
    ASSERT_EQ_INT(atomic_load(&bx->res[0]) + atomic_load(&bx->res[1]), 1 + 2);
    /* Not released until tripped. */
    th_sleep_ms(100);
    ASSERT(th_running(pids[0]) && th_running(pids[1]));
    atomic_store(&bx->done, 1); /* the action */
    ASSERT_OK(mpx_barrier_trip(b, t));
    for (int i = 0; i < PARTIES - 1; i++)
        th_wait_ok(pids[i], 10);
    ASSERT_EQ_INT(mpx_barrier_broken(b), 0);
    ASSERT_EQ_UINT(mpx_barrier_n_waiting(b), 0);
    /* The next generation has another ticket; wait() and the steps mix. */
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_OK(mpx_barrier_wait(b, in_ms(20000)));
        _exit(0);
    }
    uint64_t t2;
    int idx = mpx_barrier_arrive(b, in_ms(20000), &t2);
    ASSERT_OK(idx);
    ASSERT_MSG(t2 != t, "a new generation reuses ticket %" PRIu64, t);
    pid_t pid2 = th_fork();
    if (pid2 == 0) {
        ASSERT_OK(mpx_barrier_wait(b, in_ms(20000)));
        _exit(0);
    }
    if (idx == PARTIES - 1)
        ASSERT_OK(mpx_barrier_trip(b, t2));
    else
        ASSERT_OK(mpx_barrier_await(b, t2, in_ms(20000)));
    th_wait_ok(pid, 10);
    th_wait_ok(pid2, 10);
    box_free(bx);
    mpx_barrier_destroy(b);
}

TEST(barrier_await_timeout_can_resume)
{
    mpx_barrier *b = barrier_new(2);
    uint64_t t;
    ASSERT_EQ_INT(mpx_barrier_arrive(b, in_ms(20000), &t), 0);
    int64_t t0 = th_now_ns();
    ASSERT_ERR(mpx_barrier_await(b, t, in_ms(80)), -ETIMEDOUT);
    assert_elapsed(t0, 80 * MS);
    ASSERT_ERR(mpx_barrier_await(b, t, MPX_NOWAIT), -EAGAIN);
    /* Still arrived, and the barrier is not broken by a timed-out await. */
    ASSERT_EQ_INT(mpx_barrier_broken(b), 0);
    ASSERT_EQ_UINT(mpx_barrier_n_waiting(b), 1);
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_EQ_INT(mpx_barrier_wait(b, in_ms(20000)), 1); /* the last: trips */
        _exit(0);
    }
    ASSERT_OK(mpx_barrier_await(b, t, in_ms(20000)));
    th_wait_ok(pid, 10);
    /* Awaiting a generation already released returns at once. */
    ASSERT_OK(mpx_barrier_await(b, t, MPX_NOWAIT));
    ASSERT_EQ_INT(mpx_barrier_broken(b), 0);
    ASSERT_EQ_UINT(mpx_barrier_n_waiting(b), 0);
    mpx_barrier_destroy(b);
}

TEST(barrier_last_arrival_aborts)
{
    mpx_barrier *b = barrier_new(2);
    pid_t pid = th_fork();
    if (pid == 0) {
        uint64_t t;
        ASSERT_EQ_INT(mpx_barrier_arrive(b, in_ms(20000), &t), 0);
        ASSERT_ERR(mpx_barrier_await(b, t, in_ms(20000)), MPX_EBROKEN);
        _exit(0);
    }
    TH_WAIT_FOR(mpx_barrier_n_waiting(b) == 1, 20);
    uint64_t t;
    ASSERT_EQ_INT(mpx_barrier_arrive(b, in_ms(20000), &t), 1);
    ASSERT_OK(mpx_barrier_abort(b)); /* the action failed */
    ASSERT_ERR(mpx_barrier_trip(b, t), MPX_EBROKEN);
    ASSERT_ERR(mpx_barrier_await(b, t, MPX_NOWAIT), MPX_EBROKEN);
    th_wait_ok(pid, 5);
    ASSERT_EQ_INT(mpx_barrier_broken(b), 1);
    ASSERT_OK(mpx_barrier_reset(b));
    ASSERT_EQ_INT(mpx_barrier_broken(b), 0);
    mpx_barrier_destroy(b);
}

/* One generation of `b`, a barrier of three, passed by two forked children and this
 * process: after a party died and the barrier was reset, it works again. */
static void barrier_round_of_three(mpx_barrier *b)
{
    pid_t pids[2];
    for (int i = 0; i < 2; i++) {
        pids[i] = th_fork();
        if (pids[i] == 0) {
            ASSERT_OK(mpx_barrier_wait(b, in_ms(20000)));
            _exit(0);
        }
    }
    ASSERT_OK(mpx_barrier_wait(b, in_ms(20000)));
    for (int i = 0; i < 2; i++)
        th_wait_ok(pids[i], 10);
}

/* Two parties wait (res[0], res[1]) on a barrier of 3; party A is killed. */
static void barrier_party_killed(bool reap_first)
{
    mpx_barrier *b = barrier_new(3);
    struct box *bx = box_new();
    pid_t a = th_fork();
    if (a == 0) {
        mpx_barrier_wait(b, in_ms(20000));
        _exit(0);
    }
    TH_WAIT_FOR(mpx_barrier_n_waiting(b) == 1, 20);
    pid_t w = th_fork();
    if (w == 0) {
        ASSERT_ERR(mpx_barrier_wait(b, in_ms(20000)), MPX_EBROKEN);
        _exit(0);
    }
    TH_WAIT_FOR(mpx_barrier_n_waiting(b) == 2, 20);
    th_wait_asleep(a);
    th_wait_asleep(w);
    int64_t t0 = th_now_ns();
    if (reap_first)
        th_kill_reap(a);
    else
        kill(a, SIGKILL); /* a zombie until later */
    th_wait_ok(w, 5);      /* MPX_EBROKEN, not a hang */
    printf("  (the survivor was released %.0f ms after the kill, %s)\n",
           (double)(th_now_ns() - t0) / 1e6, reap_first ? "reaped" : "zombie");
    if (!reap_first)
        th_wait_signaled(a, SIGKILL, 10);
    ASSERT_EQ_INT(mpx_barrier_broken(b), 1);
    ASSERT_ERR(mpx_barrier_wait(b, in_ms(1000)), MPX_EBROKEN);
    ASSERT_OK(mpx_barrier_reset(b));
    barrier_round_of_three(b); /* a fresh round works */
    box_free(bx);
    mpx_barrier_destroy(b);
}

TEST(barrier_party_killed_reaped) { barrier_party_killed(true); }
TEST(barrier_party_killed_zombie) { barrier_party_killed(false); }

TEST(fault_barrier_arrived)
{
    mpx_barrier *b = barrier_new(3);
    pid_t w = th_fork();
    if (w == 0) {
        ASSERT_ERR(mpx_barrier_wait(b, in_ms(20000)), MPX_EBROKEN);
        _exit(0);
    }
    TH_WAIT_FOR(mpx_barrier_n_waiting(b) == 1, 20);
    pid_t d = th_fork();
    if (d == 0) {
        ASSERT_OK(mpx_fault_arm("barrier.arrived", 0));
        mpx_barrier_wait(b, in_ms(20000));
        _exit(99);
    }
    th_wait_signaled(d, SIGKILL, 20);
    th_wait_ok(w, 5);
    ASSERT_ERR(mpx_barrier_wait(b, in_ms(5000)), MPX_EBROKEN);
    ASSERT_OK(mpx_barrier_reset(b));
    barrier_round_of_three(b);
    mpx_barrier_destroy(b);
}

TEST(fault_barrier_guarded)
{
    /* A party dies holding the barrier's guard: nobody hangs, the barrier is broken rather
     * than left half-updated, and after a reset it works. */
    mpx_barrier *b = barrier_new(3);
    struct box *bx = box_new();
    pid_t w = th_fork();
    if (w == 0) {
        int r = mpx_barrier_wait(b, in_ms(20000));
        atomic_store(&bx->res[0], r);
        _exit(0);
    }
    TH_WAIT_FOR(mpx_barrier_n_waiting(b) == 1, 20);
    pid_t d = th_fork();
    if (d == 0) {
        ASSERT_OK(mpx_fault_arm("barrier.guarded", 0));
        mpx_barrier_wait(b, in_ms(20000));
        _exit(99);
    }
    th_wait_signaled(d, SIGKILL, 20);
    /* docs/sync.md: "the next guard taker breaks the barrier". */
    int64_t t0 = th_now_ns();
    ASSERT_ERR(mpx_barrier_wait(b, in_ms(5000)), MPX_EBROKEN);
    ASSERT_LT_INT(th_now_ns() - t0, 3 * SEC);
    th_wait_ok(w, 5);
    ASSERT_ERR(atomic_load(&bx->res[0]), MPX_EBROKEN);
    ASSERT_EQ_INT(mpx_barrier_broken(b), 1);
    ASSERT_OK(mpx_barrier_reset(b));
    ASSERT_EQ_INT(mpx_barrier_broken(b), 0);
    barrier_round_of_three(b);
    box_free(bx);
    mpx_barrier_destroy(b);
}

/* ---------------------------------------------------------------------------------------
 * Sleeping waiters use no CPU
 */

TEST(blocked_event_waiter_uses_no_cpu)
{
    mpx_event *e = event_new();
    double c0 = rusage_children_ms();
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_OK(mpx_event_wait(e, in_ms(20000)));
        _exit(0);
    }
    th_sleep_ms(1000);
    ASSERT_EQ_INT(th_proc_state(pid), 'S');
    ASSERT_OK(mpx_event_set(e));
    th_wait_ok(pid, 10);
    double used = rusage_children_ms() - c0;
    printf("  (the waiter used %.1f ms of CPU)\n", used);
    ASSERT_MSG(used < 20, "a child blocked 1 s in mpx_event_wait used %.1f ms of CPU", used);
    mpx_event_destroy(e);
}

TEST(blocked_waiters_use_no_cpu)
{
    /* One child blocked on each kind for a second (a lock waiter also checks its owner now
     * and then, which costs next to nothing). */
    mpx_lock *l = lock_new(MPX_LOCK_PLAIN), *cl = lock_new(MPX_LOCK_PLAIN);
    mpx_lock *r = lock_new(MPX_LOCK_RECURSIVE);
    mpx_sem *s = sem_new(0, MPX_SEM_VALUE_MAX);
    mpx_cond *c = cond_new();
    mpx_barrier *b = barrier_new(2);
    ASSERT_OK(mpx_lock_acquire(l, MPX_NOWAIT, NULL));
    ASSERT_OK(mpx_lock_acquire(r, MPX_NOWAIT, NULL));
    static const char *const names[] = {"lock", "rlock", "sem", "cond", "barrier"};
    enum { N = 5 };
    pid_t pids[N];
    for (int i = 0; i < N; i++) {
        pids[i] = th_fork();
        if (pids[i] == 0) {
            switch (i) {
            case 0:
                ASSERT_OK(mpx_lock_acquire(l, in_ms(20000), NULL));
                break;
            case 1:
                ASSERT_OK(mpx_lock_acquire(r, in_ms(20000), NULL));
                break;
            case 2:
                ASSERT_OK(mpx_sem_acquire(s, in_ms(20000)));
                break;
            case 3:
                ASSERT_OK(mpx_lock_acquire(cl, in_ms(20000), NULL));
                ASSERT_OK(mpx_cond_wait(c, cl, in_ms(20000), NULL));
                ASSERT_OK(mpx_lock_release(cl));
                break;
            default:
                ASSERT_OK(mpx_barrier_wait(b, in_ms(20000)));
                break;
            }
            _exit(0);
        }
    }
    TH_WAIT_FOR(mpx_cond_waiters(c) == 1 && mpx_barrier_n_waiting(b) == 1, 20);
    th_sleep_ms(1000);
    for (int i = 0; i < N; i++)
        ASSERT_MSG(th_proc_state(pids[i]) == 'S', "the %s waiter is not asleep", names[i]);
    ASSERT_OK(mpx_lock_release(l));
    ASSERT_OK(mpx_lock_release(r));
    ASSERT_OK(mpx_sem_release(s));
    ASSERT_OK(mpx_lock_acquire(cl, in_ms(20000), NULL));
    ASSERT_OK(mpx_cond_notify(c, cl, 1));
    ASSERT_OK(mpx_lock_release(cl));
    ASSERT_OK(mpx_barrier_wait(b, in_ms(20000)));
    for (int i = 0; i < N; i++) {
        double used = reap_cpu_ms(pids[i], 10);
        printf("  (the %s waiter used %.1f ms of CPU)\n", names[i], used);
        ASSERT_MSG(used < 40, "a child blocked 1 s on a %s used %.1f ms of CPU", names[i], used);
    }
    mpx_lock_destroy(l);
    mpx_lock_destroy(cl);
    mpx_lock_destroy(r);
    mpx_sem_destroy(s);
    mpx_cond_destroy(c);
    mpx_barrier_destroy(b);
}

/* ---------------------------------------------------------------------------------------
 * Signals: a blocked call interrupted by a handler returns -EINTR, and can be called again
 * with the same deadline.
 */

struct eintr_ctx {
    mpx_lock *l;
    mpx_sem *s;
    mpx_event *e;
    mpx_cond *c;
    mpx_barrier *b;
    mpx_deadline_t dl;
    uint64_t ticket;
};

struct eintr_ops {
    void (*block)(struct eintr_ctx *x);   /* in the child: the call that must give -EINTR */
    void (*resume)(struct eintr_ctx *x);  /* in the child, SIGUSR1 blocked: the call again */
    void (*release)(struct eintr_ctx *x); /* in the parent: lets `resume` finish */
};

static void run_eintr(const struct eintr_ops *o, struct eintr_ctx *x)
{
    int p[2];
    ASSERT_SYS(pipe2(p, O_CLOEXEC));
    pid_t pid = th_fork();
    if (pid == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_usr1; /* no SA_RESTART */
        sigemptyset(&sa.sa_mask);
        ASSERT_SYS(sigaction(SIGUSR1, &sa, NULL));
        x->dl = in_ms(20000);
        write_byte(p[1], 'r');
        o->block(x);
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGUSR1);
        sigprocmask(SIG_BLOCK, &set, NULL);
        write_byte(p[1], 'i');
        o->resume(x);
        _exit(0);
    }
    close(p[1]);
    ASSERT_EQ_INT(read_byte(p[0], 20), 'r');
    int64_t end = th_now_ns() + 20 * SEC;
    for (;;) {
        int c = read_byte(p[0], 0.02);
        if (c == 'i')
            break;
        if (c == -1 && !th_running(pid)) {
            th_wait_ok(pid, 1); /* shows how the child ended */
            ASSERT_MSG(0, "the child ended before reporting -EINTR");
        }
        ASSERT_MSG(th_now_ns() < end, "the blocked call never returned -EINTR");
        kill(pid, SIGUSR1);
    }
    o->release(x);
    th_wait_ok(pid, 20);
    close(p[0]);
}

static void lock_block(struct eintr_ctx *x)
{
    pid_t dead = 3;
    ASSERT_ERR(mpx_lock_acquire(x->l, x->dl, &dead), -EINTR);
    ASSERT_EQ_INT(dead, 3);
    ASSERT_EQ_INT(mpx_lock_owner(x->l), getppid());
}
static void lock_resume(struct eintr_ctx *x)
{
    ASSERT_OK(mpx_lock_acquire(x->l, x->dl, NULL));
    ASSERT_OK(mpx_lock_release(x->l));
}
static void lock_release_(struct eintr_ctx *x) { ASSERT_OK(mpx_lock_release(x->l)); }

TEST(eintr_lock)
{
    for (int kind = 0; kind <= 1; kind++) {
        struct eintr_ctx x = {.l = lock_new(kind)};
        ASSERT_OK(mpx_lock_acquire(x.l, MPX_NOWAIT, NULL));
        struct eintr_ops o = {lock_block, lock_resume, lock_release_};
        run_eintr(&o, &x);
        ASSERT_EQ_INT(mpx_lock_owner(x.l), 0);
        mpx_lock_destroy(x.l);
    }
}

static void sem_block(struct eintr_ctx *x)
{
    ASSERT_ERR(mpx_sem_acquire(x->s, x->dl), -EINTR);
    ASSERT_EQ_UINT(mpx_sem_value(x->s), 0);
}
static void sem_resume(struct eintr_ctx *x) { ASSERT_OK(mpx_sem_acquire(x->s, x->dl)); }
static void sem_release_(struct eintr_ctx *x) { ASSERT_OK(mpx_sem_release(x->s)); }

TEST(eintr_sem)
{
    struct eintr_ctx x = {.s = sem_new(0, 1)};
    struct eintr_ops o = {sem_block, sem_resume, sem_release_};
    run_eintr(&o, &x);
    ASSERT_EQ_UINT(mpx_sem_value(x.s), 0);
    mpx_sem_destroy(x.s);
}

static void event_block(struct eintr_ctx *x) { ASSERT_ERR(mpx_event_wait(x->e, x->dl), -EINTR); }
static void event_resume(struct eintr_ctx *x) { ASSERT_OK(mpx_event_wait(x->e, x->dl)); }
static void event_release_(struct eintr_ctx *x) { ASSERT_OK(mpx_event_set(x->e)); }

TEST(eintr_event)
{
    struct eintr_ctx x = {.e = event_new()};
    struct eintr_ops o = {event_block, event_resume, event_release_};
    run_eintr(&o, &x);
    mpx_event_destroy(x.e);
}

static void cond_block(struct eintr_ctx *x)
{
    ASSERT_OK(mpx_lock_acquire(x->l, x->dl, NULL));
    pid_t dead = 3;
    ASSERT_ERR(mpx_cond_wait(x->c, x->l, x->dl, &dead), -EINTR);
    ASSERT_EQ_INT(dead, 3);
    /* The lock is held again, at the same level. */
    ASSERT_EQ_INT(mpx_lock_is_mine(x->l), 1);
    ASSERT_EQ_INT(mpx_lock_owner(x->l), getpid());
    ASSERT_EQ_UINT(mpx_lock_count(x->l), 1);
}
static void cond_resume(struct eintr_ctx *x)
{
    ASSERT_OK(mpx_cond_wait(x->c, x->l, x->dl, NULL));
    ASSERT_EQ_INT(mpx_lock_is_mine(x->l), 1);
    ASSERT_OK(mpx_lock_release(x->l));
}
static void cond_release_(struct eintr_ctx *x)
{
    /* The child holds the lock until it waits again, registered. */
    ASSERT_OK(mpx_lock_acquire(x->l, in_ms(20000), NULL));
    ASSERT_OK(mpx_cond_notify(x->c, x->l, 1));
    ASSERT_OK(mpx_lock_release(x->l));
}

TEST(eintr_cond)
{
    for (int kind = 0; kind <= 1; kind++) {
        struct eintr_ctx x = {.l = lock_new(kind), .c = cond_new()};
        struct eintr_ops o = {cond_block, cond_resume, cond_release_};
        run_eintr(&o, &x);
        ASSERT_EQ_UINT(mpx_cond_waiters(x.c), 0);
        mpx_lock_destroy(x.l);
        mpx_cond_destroy(x.c);
    }
}

static void barrier_wait_block(struct eintr_ctx *x)
{
    ASSERT_ERR(mpx_barrier_wait(x->b, x->dl), -EINTR);
    ASSERT_EQ_INT(mpx_barrier_broken(x->b), 1); /* wait() cannot resume: it breaks */
}
static void barrier_wait_resume(struct eintr_ctx *x)
{
    ASSERT_ERR(mpx_barrier_wait(x->b, x->dl), MPX_EBROKEN);
}
static void nothing(struct eintr_ctx *x) { (void)x; }

TEST(eintr_barrier_wait)
{
    struct eintr_ctx x = {.b = barrier_new(2)};
    struct eintr_ops o = {barrier_wait_block, barrier_wait_resume, nothing};
    run_eintr(&o, &x);
    ASSERT_EQ_INT(mpx_barrier_broken(x.b), 1);
    ASSERT_OK(mpx_barrier_reset(x.b));
    mpx_barrier_destroy(x.b);
}

static void barrier_await_block(struct eintr_ctx *x)
{
    ASSERT_EQ_INT(mpx_barrier_arrive(x->b, x->dl, &x->ticket), 0);
    ASSERT_ERR(mpx_barrier_await(x->b, x->ticket, x->dl), -EINTR);
    /* Still arrived; nothing broken. */
    ASSERT_EQ_INT(mpx_barrier_broken(x->b), 0);
    ASSERT_EQ_UINT(mpx_barrier_n_waiting(x->b), 1);
}
static void barrier_await_resume(struct eintr_ctx *x)
{
    ASSERT_OK(mpx_barrier_await(x->b, x->ticket, x->dl));
}
static void barrier_await_release(struct eintr_ctx *x)
{
    ASSERT_EQ_INT(mpx_barrier_wait(x->b, in_ms(20000)), 1);
}

TEST(eintr_barrier_await)
{
    struct eintr_ctx x = {.b = barrier_new(2)};
    struct eintr_ops o = {barrier_await_block, barrier_await_resume, barrier_await_release};
    run_eintr(&o, &x);
    ASSERT_EQ_INT(mpx_barrier_broken(x.b), 0);
    mpx_barrier_destroy(x.b);
}

/* ---------------------------------------------------------------------------------------
 * Fault points
 */

TEST(fault_points_listed)
{
    static const char *const expected[] = {
        "lock.acquired",        "lock.wait.flagged",   "sem.acquired",   "cond.wait.registered",
        "cond.notify.granted",  "barrier.arrived",     "barrier.guarded"};
    static const char *const prefixes[] = {"lock.", "sem.", "event.", "cond.", "barrier."};
    const char *const *pts = mpx_fault_points();
    ASSERT_NOT_NULL(pts);
    size_t n = 0;
    for (; pts[n]; n++) {
        bool known = false, sync = false;
        for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
            known |= strcmp(pts[n], expected[i]) == 0;
        for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
            sync |= strncmp(pts[n], prefixes[i], strlen(prefixes[i])) == 0;
        /* A new sync point needs a scenario in this file (see the fault_* tests). */
        ASSERT_MSG(known || !sync, "fault point %s has no test scenario", pts[n]);
    }
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        bool found = false;
        for (size_t j = 0; j < n; j++)
            found |= strcmp(pts[j], expected[i]) == 0;
        ASSERT_MSG(found, "fault point %s is not listed", expected[i]);
    }
}

TEST_LIST_START
TEST_ENTRY(create_and_query)
TEST_ENTRY(null_and_bad_arguments)
TEST_ENTRY(attach_refuses_bad_descriptors)
TEST_ENTRY(attach_refuses_bad_offsets)
TEST_ENTRY(attach_refuses_other_kinds)
TEST_ENTRY(attach_refuses_corrupted_arena_header)
TEST_ENTRY(arena_is_a_sealed_memfd)
TEST_ENTRY(attach_in_same_process)
TEST_ENTRY(many_objects_few_descriptors)
TEST_ENTRY(mixed_kinds_distinct_slots)
TEST_ENTRY(concurrent_creation_in_forked_processes)
TEST_ENTRY(object_lives_on_in_forked_child)
TEST_ENTRY(attach_in_forked_child)
TEST_ENTRY(attach_in_exec_helper)
TEST_ENTRY(attach_by_scm_rights_after_creator_exited)
TEST_ENTRY(lock_plain_basic)
TEST_ENTRY(lock_deadlines)
TEST_ENTRY(lock_plain_release_by_other_thread_and_process)
TEST_ENTRY(lock_blocking_acquire_woken_by_release)
TEST_ENTRY_TIMEOUT(lock_plain_mutual_exclusion_processes, 60)
TEST_ENTRY_TIMEOUT(lock_plain_mutual_exclusion_threads, 60)
TEST_ENTRY_TIMEOUT(lock_recursive_mutual_exclusion, 60)
TEST_ENTRY(lock_recursive_basic)
TEST_ENTRY(lock_recursive_full_release_wakes_waiter)
TEST_ENTRY(lock_recursive_non_owner_process)
TEST_ENTRY(owner_death_reaped)
TEST_ENTRY(owner_death_zombie)
TEST_ENTRY(owner_death_while_waiting)
TEST_ENTRY(owner_death_one_waiter_takes_over)
TEST_ENTRY(owner_death_nowait)
TEST_ENTRY(owner_death_exec_helper)
TEST_ENTRY(fault_lock_acquired)
TEST_ENTRY(fault_lock_wait_flagged)
TEST_ENTRY(sem_basic)
TEST_ENTRY(sem_bounded_overflow)
TEST_ENTRY_TIMEOUT(sem_blocking_across_processes, 60)
TEST_ENTRY_TIMEOUT(sem_contention_bounded, 60)
TEST_ENTRY(sem_permit_of_dead_process_not_returned)
TEST_ENTRY(event_basic)
TEST_ENTRY(event_wakes_all_waiters)
TEST_ENTRY(event_set_then_clear_releases_waiters)
TEST_ENTRY(cond_requires_the_lock)
TEST_ENTRY(cond_timeout_reholds_lock)
TEST_ENTRY(cond_timeout_waits_for_lock)
TEST_ENTRY(cond_notify_wakes_exactly_n)
TEST_ENTRY(cond_notify_all_processes_and_thread)
TEST_ENTRY(cond_recursive_lock_levels)
TEST_ENTRY(cond_killed_waiter_absorbs_no_notification)
TEST_ENTRY(cond_notifier_dies_holding_lock)
TEST_ENTRY_TIMEOUT(cond_bounded_buffer, 60)
TEST_ENTRY(cond_many_waiting_processes)
TEST_ENTRY(cond_killed_waiter_among_many)
TEST_ENTRY(fault_cond_wait_registered)
TEST_ENTRY(fault_cond_notify_granted)
TEST_ENTRY(barrier_one_party)
TEST_ENTRY(barrier_three_processes_generations)
TEST_ENTRY(barrier_many_parties)
TEST_ENTRY(barrier_timeout_breaks)
TEST_ENTRY(barrier_abort_and_reset)
TEST_ENTRY(barrier_n_waiting)
TEST_ENTRY(barrier_three_step)
TEST_ENTRY(barrier_await_timeout_can_resume)
TEST_ENTRY(barrier_last_arrival_aborts)
TEST_ENTRY(barrier_party_killed_reaped)
TEST_ENTRY(barrier_party_killed_zombie)
TEST_ENTRY(fault_barrier_arrived)
TEST_ENTRY(fault_barrier_guarded)
TEST_ENTRY(blocked_event_waiter_uses_no_cpu)
TEST_ENTRY(blocked_waiters_use_no_cpu)
TEST_ENTRY(eintr_lock)
TEST_ENTRY(eintr_sem)
TEST_ENTRY(eintr_event)
TEST_ENTRY(eintr_cond)
TEST_ENTRY(eintr_barrier_wait)
TEST_ENTRY(eintr_barrier_await)
TEST_ENTRY(fault_points_listed)
TEST_LIST_END

HELPER_LIST_START
HELPER_ENTRY(expect_attach)
HELPER_ENTRY(attach_all)
HELPER_ENTRY(hold_lock)
HELPER_LIST_END

TEST_MAIN()
