/* The shared-memory queue of <mpx/queue.h>.
 *
 * Segment layout (docs/queue.md has the full description and the crash-consistency
 * argument):
 *
 *   [0, 4096)          struct queue_shared: format header, lock word, committed state
 *                      (double-buffered), futex words and wake flags
 *   [4096, 4096+cap)   the ring of records; a record is a uint64 length, the message bytes,
 *                      and zero to seven bytes of padding
 *
 * Every change to the queue happens under one process-shared lock, whose word records the
 * holder's pid so that a holder's death is detected (the sync engine's lock), and becomes
 * visible through a single 32-bit store: the new state is written into the inactive one of
 * two state slots, then `cur` is flipped to it. A process killed before the flip changed
 * nothing that anyone can observe; a process killed after it has completed the operation.
 * Wake-ups are issued while the lock is held and before the flip: a woken sleeper re-checks
 * under the lock, so it either sees the completed operation or, if the waker died holding
 * the lock (even right after its flip), takes the lock over itself and wakes every other
 * sleeper as part of recovery. (Waking after the flip would leave the sleepers asleep if the
 * waker died in between and no other process ever took the lock again.)
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fault.h"
#include "linux.h"
#include "mpx/error.h"
#include "mpx/queue.h"
#include "sync_internal.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

#define QUEUE_MAGIC 0x5158504du /* "MPXQ" */
#define QUEUE_VERSION 2u
#define HEADER_SIZE 4096u
#define DEFAULT_CAPACITY (256u * 1024u)
#define MIN_CAPACITY 4096u
#define DEFAULT_SPIN_NS 50000u
/* How long a process spins for the queue lock before sleeping: it is held for a copy of at
 * most RESERVE_BYTES (tens of microseconds), so a short spin usually catches its release
 * without the cost of sleeping and being woken. */
#define LOCK_SPIN_NS 20000u
/* When the queue drains, pages of the ring beyond this many bytes, or beyond four times the
 * largest put since the last release if that is more, go back to the system: memory taken
 * by a backlog is returned, while a ring in steady use keeps its pages warm. */
#define RETAIN_BYTES (32u * 1024u * 1024u)
#define RECORD_HEAD 8u
/* A put that finds the ring full waits up to this long for a consumer to make room before
 * it grows the ring (see place()). Growing means fresh pages, which cost far more here than
 * the copy itself, and a consumer that is taking messages frees room within this time. */
#define GROW_GRACE_NS 2000000
/* The ring grows without any wait until it holds this many bytes and two such puts. */
#define GROW_FREELY_BYTES (1u << 20)
#define MPX__EDEFER (-EINPROGRESS) /* internal: room may appear soon; wait, then retry */
/* Puts of at least this many bytes copy without holding the lock (see reserve()). */
#define RESERVE_BYTES (256u * 1024u)
/* How often a put waiting behind another producer's reservation checks that it is alive. */
#define RESV_CHECK_NS 50000000
/* Gets of messages at least this large copy without holding the lock (see get_claimed()). */
#define CLAIM_BYTES (256u * 1024u)
#define ALIGN8(x) (((x) + 7u) & ~(uint64_t)7u)

struct qstate {
    uint64_t cap;        /* bytes in the ring */
    uint64_t head;       /* offset of the oldest record */
    uint64_t tail;       /* offset where the next record goes */
    uint64_t wrap_end;   /* if wrapped: end of the records in the upper part */
    uint64_t count;      /* records (messages) held */
    uint64_t unfinished; /* puts not yet matched by task_done */
    uint64_t hiwater;    /* highest ring offset written since the last release of pages */
    uint64_t max_put;    /* largest put (bytes of records) since the last release */
    uint32_t wrapped;    /* records occupy [head, wrap_end) then [0, tail) */
    uint32_t closed;
    /* A large put in progress: [resv_off, resv_off + resv_len) is reserved at the end of the
     * records (not counted) while its producer copies without the lock. */
    uint64_t resv_off;
    uint64_t resv_len; /* 0: no reservation */
    uint32_t resv_pid; /* the producer copying */
    uint32_t resv_gen; /* bumped by every reservation and cancellation */
    /* A large get in progress: the record at claim_off (the head) is being copied out by a
     * consumer without the lock; it stays counted and in place until the get finishes. */
    uint64_t claim_off;
    uint64_t claim_len; /* 0: no claim */
    uint32_t claim_pid;
    uint32_t claim_gen;
};

struct queue_shared {
    /* Format header, immutable after creation. */
    uint32_t magic;
    uint32_t version;
    uint32_t header_size;
    uint32_t spin_ns;
    uint64_t maxsize;
    uint64_t reserved0;

    /* The owner-recording lock word of the sync engine (docs/sync.md, "Locks"). */
    _Atomic uint32_t lock __attribute__((aligned(64)));

    /* Committed state: st[cur]. Read and written under the lock only. */
    _Atomic uint32_t cur __attribute__((aligned(64)));
    struct qstate st[2];

    /* Hints read without the lock by spinning waiters; exact values live in st[cur]. */
    _Atomic uint64_t count_hint __attribute__((aligned(64)));
    _Atomic uint32_t closed_hint;

    /* Futex words: a sequence number bumped on every wake, and a flag that a sleeper sets
     * (under the lock) before sleeping so that wakers know a syscall is needed. */
    struct mpx__waitword nonempty __attribute__((aligned(64)));
    struct mpx__waitword nonfull __attribute__((aligned(64)));
    struct mpx__waitword join __attribute__((aligned(64)));
    struct mpx__waitword resv __attribute__((aligned(64)));
    struct mpx__waitword claim __attribute__((aligned(64)));
};

_Static_assert(sizeof(struct queue_shared) <= HEADER_SIZE, "queue header exceeds one page");

struct mpx_queue {
    int fd;                   /* owned: the segment */
    struct queue_shared *sh;  /* owned mapping of the header page */
    unsigned char *data;      /* owned mapping of the ring, map_cap bytes (NULL if none) */
    uint64_t map_cap;         /* bytes mapped at data; changed under the shared lock */
    uint64_t maxsize;         /* copy of sh->maxsize */
    uint32_t spin_ns;         /* copy of sh->spin_ns */
    /* Copies in progress outside the lock (large puts and gets) in this process, and
     * mappings that a growth replaced meanwhile: they stay mapped until no copy uses them.
     * Both are changed under the shared lock only. */
    int pins;
    uint64_t grew_from; /* set by place() when it grows the ring: the old capacity */
    int nretired;
    struct {
        void *p;
        uint64_t len;
    } retired[8];
};

/* ---------------------------------------------------------------------------------------
 * Locking and recovery
 */

static inline struct qstate *state(const mpx_queue *q)
{
    return &q->sh->st[atomic_load_explicit(&q->sh->cur, memory_order_relaxed) & 1u];
}

static bool state_valid(const struct qstate *s, uint64_t maxsize)
{
    if (s->head > s->cap || s->tail > s->cap || s->wrap_end > s->cap)
        return false;
    if ((s->head | s->tail | s->wrap_end | s->cap) & 7u)
        return false;
    if (s->wrapped ? (s->tail > s->head || s->head > s->wrap_end) : (s->head > s->tail))
        return false;
    if (maxsize && s->count > maxsize)
        return false;
    if (s->resv_len && (s->resv_off > s->cap || s->resv_len > s->cap - s->resv_off))
        return false;
    if (s->claim_len && (s->claim_off != s->head || s->count == 0))
        return false;
    return s->wrapped <= 1 && s->closed <= 1;
}

/* Called with the lock held after its previous holder died. The committed state needs no
 * repair (it only ever changes by the atomic flip), but a death can have left the hints
 * stale and sleepers un-woken: refresh the one and wake the others. */
static void recover(mpx_queue *q)
{
    struct queue_shared *sh = q->sh;
    struct qstate *s = state(q);
    atomic_store_explicit(&sh->count_hint, s->count, memory_order_relaxed);
    atomic_store_explicit(&sh->closed_hint, s->closed, memory_order_relaxed);
    mpx__ww_wake(&sh->nonempty, true);
    mpx__ww_wake(&sh->nonfull, true);
    mpx__ww_wake(&sh->join, true);
    mpx__ww_wake(&sh->resv, true);
    mpx__ww_wake(&sh->claim, true);
}

/* Maps at least `cap` bytes of ring. Called with the lock held. */
static int ensure_map(mpx_queue *q, uint64_t cap)
{
    if (cap <= q->map_cap)
        return 0;
    uint64_t fsize;
    int r = mpx__fd_size(q->fd, &fsize);
    if (r < 0)
        return r;
    /* Never map beyond the end of the file: touching such pages would raise SIGBUS. */
    if (fsize < HEADER_SIZE || cap > fsize - HEADER_SIZE)
        return MPX_EBADSEG;
    void *p;
    if (q->data && q->pins > 0 && q->nretired < 8) {
        /* A copy outside the lock is using the current mapping: leave it in place. */
        p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_SHARED, q->fd, HEADER_SIZE);
        if (p != MAP_FAILED) {
            q->retired[q->nretired].p = q->data;
            q->retired[q->nretired].len = q->map_cap;
            q->nretired++;
        }
    } else if (q->data && q->pins > 0) {
        return -EAGAIN; /* too many growths during one copy; the caller retries later */
    } else if (q->data) {
        p = mremap(q->data, q->map_cap, cap, MREMAP_MAYMOVE);
    } else {
        p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_SHARED, q->fd, HEADER_SIZE);
    }
    if (p == MAP_FAILED)
        return -errno;
    q->data = p;
    q->map_cap = cap;
    return 0;
}

/* A copy outside the lock ended. Called with the lock held. */
static void unpin(mpx_queue *q)
{
    if (--q->pins > 0)
        return;
    while (q->nretired > 0) {
        q->nretired--;
        munmap(q->retired[q->nretired].p, q->retired[q->nretired].len);
    }
}

static int unlock(mpx_queue *q)
{
    mpx__olock_release(&q->sh->lock);
    return 0;
}

/* Takes the lock. With `try`, never waits (-EBUSY). Otherwise waits until `deadline` only
 * when the deadline is a real one; for MPX_NOWAIT the lock is still awaited, since it is
 * only ever held for the length of a copy. A holder that died is taken over (the lock word
 * records its pid): the state needs no repair, see recover(). */
static int lock(mpx_queue *q, bool try, mpx_deadline_t deadline)
{
    int r;
    if (try) {
        if (!mpx__olock_try(&q->sh->lock))
            return -EBUSY;
    } else {
        /* Signals do not interrupt this short wait: callers report -EINTR only from the
         * waits for an event. */
        pid_t dead;
        do
            r = mpx__olock_acquire(&q->sh->lock,
                                   deadline == MPX_NOWAIT ? MPX_FOREVER : deadline,
                                   LOCK_SPIN_NS, &dead);
        while (r == -EINTR);
        if (r == MPX_EOWNERDEAD)
            recover(q);
        else if (r < 0)
            return r;
    }
    struct qstate *s = state(q);
    if (!state_valid(s, q->maxsize)) {
        unlock(q);
        return MPX_EBADSEG;
    }
    r = ensure_map(q, s->cap);
    if (r < 0) {
        unlock(q);
        return r;
    }
    return 0;
}

/* Publishes `ns` as the committed state: the one store that makes an operation happen. */
static void commit(mpx_queue *q, const struct qstate *ns, const char *staged_point)
{
    struct queue_shared *sh = q->sh;
    uint32_t next = (atomic_load_explicit(&sh->cur, memory_order_relaxed) & 1u) ^ 1u;
    sh->st[next] = *ns;
    if (staged_point)
        MPX__FAULT(staged_point);
    atomic_store_explicit(&sh->cur, next, memory_order_release);
    atomic_store_explicit(&sh->count_hint, ns->count, memory_order_relaxed);
    atomic_store_explicit(&sh->closed_hint, ns->closed, memory_order_relaxed);
}

/* ---------------------------------------------------------------------------------------
 * Creation, attachment, destruction
 */

static int map_header(mpx_queue *q)
{
    void *p = mmap(NULL, HEADER_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, q->fd, 0);
    if (p == MAP_FAILED)
        return -errno;
    q->sh = p;
    return 0;
}

int mpx_queue_create(mpx_queue **out, const mpx_queue_options *opt)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    mpx_queue_options o = {0};
    if (opt)
        o = *opt;
    uint64_t cap = o.initial_capacity ? ALIGN8(o.initial_capacity) : DEFAULT_CAPACITY;
    if (cap < MIN_CAPACITY)
        cap = MIN_CAPACITY;
    if (cap > ((uint64_t)1 << 46))
        return -EINVAL;
    uint32_t spin = o.spin_ns == 0 ? DEFAULT_SPIN_NS : (o.spin_ns == UINT32_MAX ? 0 : o.spin_ns);

    int r;
    mpx_queue *q = calloc(1, sizeof *q);
    if (!q)
        return -ENOMEM;
    q->fd = mpx__memfd_create("mpx-queue");
    if (q->fd < 0) {
        r = q->fd;
        goto fail;
    }
    if ((r = mpx__memfd_grow(q->fd, HEADER_SIZE + cap)) < 0 || (r = mpx__memfd_seal(q->fd)) < 0 ||
        (r = map_header(q)) < 0)
        goto fail;

    struct queue_shared *sh = q->sh; /* fresh memfd pages are zero */
    sh->header_size = HEADER_SIZE;
    sh->spin_ns = spin;
    sh->maxsize = o.maxsize;
    sh->st[0].cap = cap;
    atomic_store(&sh->cur, 0);
    q->maxsize = o.maxsize;
    q->spin_ns = spin;
    if ((r = ensure_map(q, cap)) < 0)
        goto fail;
    /* The magic goes last: a segment is recognisable only once it is complete. */
    sh->version = QUEUE_VERSION;
    atomic_thread_fence(memory_order_release);
    sh->magic = QUEUE_MAGIC;
    *out = q;
    return 0;
fail:
    mpx_queue_destroy(q);
    return r;
}

int mpx_queue_attach(mpx_queue **out, int fd)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (fd < 0)
        return -EBADF;
    if (mpx__memfd_check(fd) < 0)
        return MPX_EBADSEG;
    uint64_t fsize;
    int r = mpx__fd_size(fd, &fsize);
    if (r < 0)
        return r;
    if (fsize < HEADER_SIZE + MIN_CAPACITY)
        return MPX_EBADSEG;
    mpx_queue *q = calloc(1, sizeof *q);
    if (!q)
        return -ENOMEM;
    q->fd = mpx__dup_cloexec(fd);
    if (q->fd < 0) {
        r = q->fd;
        goto fail;
    }
    if ((r = map_header(q)) < 0)
        goto fail;
    struct queue_shared *sh = q->sh;
    r = MPX_EBADSEG;
    if (sh->magic != QUEUE_MAGIC)
        goto fail;
    if (sh->version != QUEUE_VERSION) {
        r = MPX_EVERSION;
        goto fail;
    }
    if (sh->header_size != HEADER_SIZE || atomic_load(&sh->cur) > 1)
        goto fail;
    q->maxsize = sh->maxsize;
    q->spin_ns = sh->spin_ns > 10000000u ? 10000000u : sh->spin_ns;
    /* Validate and map the committed state under the lock, as every operation does. */
    if ((r = lock(q, false, MPX_FOREVER)) < 0)
        goto fail;
    unlock(q);
    *out = q;
    return 0;
fail:
    mpx_queue_destroy(q);
    return r;
}

void mpx_queue_destroy(mpx_queue *q)
{
    if (!q)
        return;
    if (q->data)
        munmap(q->data, q->map_cap);
    for (int i = 0; i < q->nretired; i++)
        munmap(q->retired[i].p, q->retired[i].len);
    if (q->sh)
        munmap(q->sh, HEADER_SIZE);
    if (q->fd >= 0)
        close(q->fd);
    free(q);
}

int mpx_queue_fd(const mpx_queue *q)
{
    return q ? q->fd : -EINVAL;
}

uint64_t mpx_queue_maxsize(const mpx_queue *q)
{
    return q ? q->maxsize : 0;
}

/* ---------------------------------------------------------------------------------------
 * Waiting
 */

static bool event_holds(const mpx_queue *q, enum mpx_queue_event ev, uint64_t n)
{
    const struct queue_shared *sh = q->sh;
    if (atomic_load_explicit(&sh->closed_hint, memory_order_relaxed))
        return true;
    uint64_t c = atomic_load_explicit(&sh->count_hint, memory_order_relaxed);
    if (ev == MPX_QUEUE_NONEMPTY)
        return c > 0;
    return !q->maxsize || c + n <= q->maxsize;
}

struct event_query {
    const mpx_queue *q;
    enum mpx_queue_event ev;
    uint64_t n;
};

static bool query_holds(const void *ctx)
{
    const struct event_query *e = ctx;
    return event_holds(e->q, e->ev, e->n);
}

/* Polls the hint for up to spin_ns. True if the event appears to hold. */
static bool spin(const mpx_queue *q, enum mpx_queue_event ev, uint64_t n, mpx_deadline_t dl)
{
    if (q->spin_ns == 0)
        return false;
    struct event_query e = {q, ev, n};
    return mpx__spin_until(query_holds, &e, q->spin_ns, dl);
}

/* With the lock held and the event found false: flags a sleeper, drops the lock and sleeps
 * until woken or the deadline passes. Returns 0 (re-check), -ETIMEDOUT or -EINTR. */
static int sleep_on(mpx_queue *q, struct mpx__waitword *w, mpx_deadline_t deadline)
{
    uint32_t s = mpx__ww_arm(w);
    unlock(q);
    MPX__FAULT("queue.wait.flagged");
    return mpx__futex_wait(&w->seq, s, deadline);
}

static bool holds_locked(mpx_queue *q, enum mpx_queue_event ev, uint64_t n)
{
    struct qstate *s = state(q);
    if (s->closed)
        return true;
    if (ev == MPX_QUEUE_NONEMPTY)
        return s->count > 0;
    return !q->maxsize || s->count + n <= q->maxsize;
}

static int wait_claim(mpx_queue *q, bool try, mpx_deadline_t deadline);

int mpx_queue_wait(mpx_queue *q, enum mpx_queue_event ev, uint64_t n, mpx_deadline_t deadline)
{
    if (!q || ev < MPX_QUEUE_NONEMPTY || ev > MPX_QUEUE_LOCKABLE)
        return -EINVAL;
    if (ev == MPX_QUEUE_LOCKABLE) {
        /* MPX_NOWAIT reports a busy lock as -EAGAIN, like every other MPX_NOWAIT call. */
        for (;;) {
            int r = deadline == MPX_NOWAIT ? lock(q, true, MPX_NOWAIT) : lock(q, false, deadline);
            if (r == -EBUSY)
                return -EAGAIN;
            if (r < 0)
                return r;
            if (!state(q)->claim_len)
                return unlock(q);
            if (deadline == MPX_NOWAIT) {
                unlock(q);
                return -EAGAIN;
            }
            if ((r = wait_claim(q, false, deadline)) < 0)
                return r;
        }
    }
    if (ev == MPX_QUEUE_NONFULL && q->maxsize && n > q->maxsize)
        return MPX_ETOOBIG;
    struct queue_shared *sh = q->sh;
    for (;;) {
        if (spin(q, ev, n, deadline))
            return 0;
        int r = lock(q, false, deadline);
        if (r < 0)
            return r;
        if (holds_locked(q, ev, n))
            return unlock(q);
        if (deadline != MPX_FOREVER && mpx__deadline_passed(deadline)) {
            unlock(q);
            return deadline == MPX_NOWAIT ? -EAGAIN : -ETIMEDOUT;
        }
        r = ev == MPX_QUEUE_NONEMPTY
                ? sleep_on(q, &sh->nonempty, deadline)
                : sleep_on(q, &sh->nonfull, deadline);
        if (r < 0)
            return r;
    }
}

/* ---------------------------------------------------------------------------------------
 * Put
 */

static uint64_t record_size(uint64_t len)
{
    return RECORD_HEAD + ALIGN8(len);
}

static uint64_t msg_len(const mpx_msgv *m)
{
    uint64_t n = 0;
    for (int i = 0; i < m->iovcnt; i++)
        n += m->iov[i].iov_len;
    return n;
}

/* Finds room for `need` contiguous bytes in the ring, growing it if necessary. Updates *ns
 * (the staged state) and returns the offset, or a negative error. Called with the lock. */
static int64_t place(mpx_queue *q, struct qstate *ns, uint64_t need, bool may_defer)
{
    if (ns->count == 0) { /* start from the bottom: keeps the ring compact */
        ns->head = ns->tail = ns->wrap_end = 0;
        ns->wrapped = 0;
    }
    if (!ns->wrapped) {
        if (need <= ns->cap - ns->tail)
            return (int64_t)ns->tail;
        if (need <= ns->head) {
            ns->wrap_end = ns->tail;
            ns->wrapped = 1;
            ns->tail = 0;
            return 0;
        }
    } else if (need <= ns->head - ns->tail) {
        return (int64_t)ns->tail;
    }

    /* The ring is full. If it is already roomy compared with this put, prefer to let a
     * consumer free space: the caller waits a moment (GROW_GRACE_NS) and retries. */
    if (may_defer && ns->count > 0 && ns->cap >= 2 * need && ns->cap >= GROW_FREELY_BYTES)
        return MPX__EDEFER;

    /* Grow. Wrapped records are made linear by copying the lower part [0, tail) to just
     * above wrap_end, into space that is free in the committed state: a death during the
     * copy leaves the committed state untouched. */
    uint64_t base = ns->wrapped ? ns->wrap_end + ns->tail : ns->tail;
    if (need > ((uint64_t)1 << 46) - base)
        return -ENOMEM;
    uint64_t nc = ns->cap * 2;
    while (nc < base + need)
        nc *= 2;
    int r = mpx__memfd_grow(q->fd, HEADER_SIZE + nc);
    if (r < 0)
        return r == -EFBIG || r == -ENOSPC ? -ENOMEM : r;
    if ((r = ensure_map(q, nc)) < 0)
        return r;
    if (ns->wrapped) {
        memcpy(q->data + ns->wrap_end, q->data, ns->tail);
        ns->tail = base;
        ns->wrapped = 0;
        ns->wrap_end = 0;
    }
    if (!q->grew_from)
        q->grew_from = ns->cap;
    ns->cap = nc;
    MPX__FAULT("queue.put.grown");
    return (int64_t)ns->tail;
}

static unsigned char *write_record(unsigned char *dst, const mpx_msgv *m, uint64_t len,
                                   bool first)
{
    memcpy(dst, &len, sizeof len);
    dst += RECORD_HEAD;
    uint64_t done = 0;
    for (int i = 0; i < m->iovcnt; i++) {
        const unsigned char *src = m->iov[i].iov_base;
        size_t l = m->iov[i].iov_len;
        if (first && mpx__fault_armed && done + l > len / 2 && done <= len / 2) {
            /* Copy up to the middle, then offer the fault point: a death here leaves half a
             * message in the ring that must never be seen. */
            size_t h = (size_t)(len / 2 - done);
            memcpy(dst, src, h);
            MPX__FAULT("queue.put.copied");
            memcpy(dst + h, src + h, l - h);
        } else if (l) {
            memcpy(dst, src, l);
        }
        dst += l;
        done += l;
    }
    return dst + (ALIGN8(len) - len);
}

static int batch_need(const mpx_msgv *msgs, size_t n, uint64_t *need)
{
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t l = msg_len(&msgs[i]);
        if (l > ((uint64_t)1 << 45) || n > ((uint64_t)1 << 30))
            return MPX_ETOOBIG;
        total += record_size(l);
    }
    *need = total;
    return 0;
}

static void write_records(unsigned char *dst, const mpx_msgv *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst = write_record(dst, &msgs[i], msg_len(&msgs[i]), i == 0);
}

/* Counts n records ending at `end` as put, and commits. Called with the lock. */
static void publish(mpx_queue *q, struct qstate *ns, size_t n, uint64_t need, uint64_t end)
{
    if (need > ns->max_put)
        ns->max_put = need;
    if (end > ns->hiwater)
        ns->hiwater = end;
    ns->count += n;
    ns->unfinished += n;
    /* Wake before the flip (see the top of this file): a sleeper must not depend on us
     * surviving the commit. */
    mpx__ww_wake(&q->sh->nonempty, false);
    commit(q, ns, "queue.put.staged");
    MPX__FAULT("queue.put.committed");
}

/* A small put, copied under the lock. */
static int put_locked(mpx_queue *q, const mpx_msgv *msgs, size_t n, uint64_t need,
                      bool may_defer)
{
    struct qstate ns = *state(q);
    int64_t off = place(q, &ns, need, may_defer);
    if (off < 0)
        return (int)off;
    write_records(q->data + off, msgs, n);
    ns.tail = (uint64_t)off + need;
    publish(q, &ns, n, need, ns.tail);
    return 0;
}

/* A large put copies its bytes without holding the lock, so that a consumer can copy the
 * previous message out at the same time. Under the lock it reserves room at the end of the
 * records (committed, but not counted: consumers never reach it); it copies; then, under
 * the lock again, it counts the records. While a reservation is pending every other put
 * waits for it (FIFO order is the order of reservations). A producer that dies while
 * copying leaves a reservation whose owner is gone: the next put cancels it, which undoes
 * it entirely (tail goes back to where the reservation began). */
static int reserve(mpx_queue *q, uint64_t need, bool may_defer, uint64_t *off, uint32_t *gen)
{
    struct qstate ns = *state(q);
    int64_t o = place(q, &ns, need, may_defer);
    if (o < 0)
        return (int)o;
    ns.tail = (uint64_t)o + need;
    if (ns.tail > ns.hiwater)
        ns.hiwater = ns.tail;
    ns.resv_off = (uint64_t)o;
    ns.resv_len = need;
    ns.resv_pid = (uint32_t)mpx__self_pid();
    ns.resv_gen++;
    commit(q, &ns, NULL);
    *off = (uint64_t)o;
    *gen = ns.resv_gen;
    return 0;
}

/* Takes back a reservation whose producer died. Called with the lock. */
static void cancel_reservation(mpx_queue *q)
{
    struct qstate ns = *state(q);
    ns.tail = ns.resv_off;
    ns.resv_len = 0;
    ns.resv_gen++;
    mpx__ww_wake(&q->sh->resv, true);
    commit(q, &ns, NULL);
}

/* Gives a claimed message back to the queue after its consumer died. With the lock. */
static void cancel_claim(mpx_queue *q)
{
    struct qstate ns = *state(q);
    ns.claim_len = 0;
    ns.claim_gen++;
    mpx__ww_wake(&q->sh->claim, true);
    commit(q, &ns, NULL);
}

/* With the lock held and another process's copy outside the lock pending (a reservation or
 * a claim, owned by `owner`): waits (unlocking) for it to finish, or cancels it if its
 * owner is gone. Returns 0 to retry, or a negative error. */
static int wait_copier(mpx_queue *q, pid_t owner, void (*cancel)(mpx_queue *),
                       struct mpx__waitword *w, bool try, mpx_deadline_t deadline)
{
    if (owner != mpx__self_pid() && mpx__pid_running(owner) == 0) {
        cancel(q);
        unlock(q);
        return 0;
    }
    if (try) {
        unlock(q);
        return -EBUSY;
    }
    if (deadline != MPX_FOREVER && deadline != MPX_NOWAIT && mpx__deadline_passed(deadline)) {
        unlock(q);
        return -ETIMEDOUT;
    }
    /* The reservation ends within the time of one copy; wake up now and then to check
     * that its producer is still alive. */
    mpx_deadline_t check = mpx__now_ns() + RESV_CHECK_NS;
    mpx_deadline_t until = deadline == MPX_NOWAIT || deadline > check ? check : deadline;
    int r = sleep_on(q, w, until);
    return r == -ETIMEDOUT ? 0 : r;
}

static int wait_reservation(mpx_queue *q, bool try, mpx_deadline_t deadline)
{
    return wait_copier(q, (pid_t)state(q)->resv_pid, cancel_reservation, &q->sh->resv, try,
                       deadline);
}

static int wait_claim(mpx_queue *q, bool try, mpx_deadline_t deadline)
{
    return wait_copier(q, (pid_t)state(q)->claim_pid, cancel_claim, &q->sh->claim, try,
                       deadline);
}

static int put_common(mpx_queue *q, const mpx_msgv *msgs, size_t n, unsigned flags,
                      mpx_deadline_t deadline)
{
    if (q->maxsize && n > q->maxsize)
        return MPX_ETOOBIG;
    uint64_t need;
    int r = batch_need(msgs, n, &need);
    if (r < 0)
        return r;
    bool try = flags & MPX_QUEUE_TRYLOCK;
    bool large = need >= RESERVE_BYTES && !try;
    /* Until when this put may wait for a consumer instead of growing the ring: never for
     * a call that must not wait, else a short grace period (set on the first full ring). */
    mpx_deadline_t grace = deadline == MPX_NOWAIT ? MPX_NOWAIT : MPX_FOREVER;
    for (;;) {
        r = lock(q, try, deadline);
        if (r < 0)
            return r;
        MPX__FAULT("queue.put.locked");
        struct qstate *s = state(q);
        if (s->closed) {
            unlock(q);
            return MPX_ECLOSED;
        }
        if (s->resv_len) {
            if ((r = wait_reservation(q, try, deadline)) < 0)
                return r;
            continue;
        }
        if (!q->maxsize || s->count + n <= q->maxsize) {
            bool may_defer = grace == MPX_FOREVER || !mpx__deadline_passed(grace);
            uint64_t off = 0;
            uint32_t gen = 0;
            r = large ? reserve(q, need, may_defer, &off, &gen)
                      : put_locked(q, msgs, n, need, may_defer);
            if (r == MPX__EDEFER) {
                if (try) { /* the caller holds a lock of its own: it must wait elsewhere */
                    unlock(q);
                    return -EBUSY;
                }
                if (grace == MPX_FOREVER)
                    grace = mpx__now_ns() + GROW_GRACE_NS;
                mpx_deadline_t until = deadline < grace ? deadline : grace;
                r = sleep_on(q, &q->sh->nonfull, until);
                if (r == -EINTR)
                    return r;
                if (r == -ETIMEDOUT)
                    grace = MPX_NOWAIT; /* grow on the next round */
                continue;
            }
            unsigned char *dst = q->data + off;
            uint64_t grew_from = q->grew_from, cap = q->map_cap;
            unsigned char *base = q->data;
            q->grew_from = 0;
            if (large && r == 0)
                q->pins++; /* keeps the mapping at dst in place while we copy */
            unlock(q);
            if (r < 0 || !large)
                return r;
            write_records(dst, msgs, n);
            if (grew_from) {
                /* The ring grew: fault in the rest of the new part now, in bulk and without
                 * the lock, rather than page by page in later puts (a fresh page costs more
                 * than copying it). Contents are untouched; older kernels lack the advice,
                 * which only loses the optimization. Done while the reservation stands:
                 * doing it after counting the records measured slower (the 16 MiB NumPy
                 * row of bench/ fell from about 13x to 7.5x the stdlib). */
                madvise(base + grew_from, cap - grew_from, MADV_POPULATE_WRITE);
            }
            if ((r = lock(q, false, MPX_FOREVER)) < 0)
                return r;
            unpin(q);
            struct qstate ns = *state(q);
            if (ns.resv_len && ns.resv_gen == gen) {
                ns.resv_len = 0;
                mpx__ww_wake(&q->sh->resv, false);
                publish(q, &ns, n, need, off + need);
                unlock(q);
                return 0;
            }
            /* Cancelled: another process took us for dead. Put again from the start. */
            unlock(q);
            continue;
        }
        if (try || (deadline != MPX_FOREVER && mpx__deadline_passed(deadline))) {
            unlock(q);
            return deadline == MPX_NOWAIT || try ? -EAGAIN : -ETIMEDOUT;
        }
        unlock(q);
        if ((r = mpx_queue_wait(q, MPX_QUEUE_NONFULL, n, deadline)) < 0)
            return r;
    }
}

static bool iov_valid(const struct iovec *iov, int iovcnt)
{
    if (iovcnt < 0 || (iovcnt > 0 && !iov))
        return false;
    for (int i = 0; i < iovcnt; i++)
        if (!iov[i].iov_base && iov[i].iov_len)
            return false;
    return true;
}

int mpx_queue_putv(mpx_queue *q, const struct iovec *iov, int iovcnt, mpx_deadline_t deadline)
{
    if (!q || !iov_valid(iov, iovcnt))
        return -EINVAL;
    mpx_msgv m = {iov, iovcnt};
    return put_common(q, &m, 1, 0, deadline);
}

int mpx_queue_put(mpx_queue *q, const void *data, size_t len, mpx_deadline_t deadline)
{
    struct iovec v = {(void *)data, len};
    if (!data && len)
        return -EINVAL;
    return mpx_queue_putv(q, &v, 1, deadline);
}

int mpx_queue_put_many(mpx_queue *q, const mpx_msgv *msgs, size_t n, mpx_deadline_t deadline)
{
    return mpx_queue_put_many_ex(q, msgs, n, 0, deadline);
}

int mpx_queue_put_many_ex(mpx_queue *q, const mpx_msgv *msgs, size_t n, unsigned flags,
                              mpx_deadline_t deadline)
{
    if (!q || (n && !msgs))
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!iov_valid(msgs[i].iov, msgs[i].iovcnt))
            return -EINVAL;
    if (n == 0)
        return 0;
    return put_common(q, msgs, n, flags, deadline);
}

/* ---------------------------------------------------------------------------------------
 * Get
 */

/* Reads the length of the head record of `ns`, checked against the records' extent. */
static int head_len(const mpx_queue *q, const struct qstate *ns, uint64_t *len)
{
    uint64_t limit = ns->wrapped ? ns->wrap_end : ns->tail;
    if (limit - ns->head < RECORD_HEAD)
        return MPX_EBADSEG;
    memcpy(len, q->data + ns->head, sizeof *len);
    if (*len > limit - ns->head - RECORD_HEAD)
        return MPX_EBADSEG; /* a damaged record: refuse rather than read out of bounds */
    return 0;
}

/* Removes the head record (of `len` bytes) from the staged state. */
static void advance_head(struct qstate *ns, uint64_t len)
{
    uint64_t limit = ns->wrapped ? ns->wrap_end : ns->tail;
    uint64_t rec = record_size(len);
    ns->head = rec > limit - ns->head ? limit : ns->head + rec;
    if (ns->wrapped && ns->head == ns->wrap_end) {
        ns->head = 0;
        ns->wrap_end = 0;
        ns->wrapped = 0;
    }
    ns->count--;
}

/* Commits a state from which records were taken. Called with the lock. */
static void finish_get(mpx_queue *q, struct qstate *ns)
{
    /* Drained: start again from the bottom, unless a reservation lies beyond the records. */
    bool drained = ns->count == 0 && ns->resv_len == 0;
    if (drained) {
        ns->head = ns->tail = 0;
        ns->wrapped = 0;
        ns->wrap_end = 0;
    }
    uint64_t retain = RETAIN_BYTES;
    if (ns->max_put > retain / 4)
        retain = (4 * ns->max_put + 4095) & ~(uint64_t)4095;
    bool release = drained && ns->hiwater > retain && ns->cap > retain;
    if (release)
        ns->hiwater = ns->max_put = 0;
    /* Before the flip, as in put_locked. Also for unbounded queues: a put may be waiting
     * for room before growing the ring. */
    mpx__ww_wake(&q->sh->nonfull, false);
    commit(q, ns, "queue.get.staged");
    MPX__FAULT("queue.get.committed");
    if (release) {
        /* The ring is empty: give the pages above `retain` back. Nothing committed lives
         * there, so a death in the middle is harmless. */
        mpx__memfd_punch(q->fd, HEADER_SIZE + retain, ns->cap - retain);
    }
}

/* Consumes up to `max` records with the lock held. A large record is left for get_claimed
 * (-EXDEV when it is the first). */
static int get_locked(mpx_queue *q, size_t max, mpx_queue_consume_fn fn, void *ctx, size_t *got)
{
    struct qstate ns = *state(q);
    size_t k = 0;
    int err = 0;
    while (k < max && ns.count > 0) {
        uint64_t len;
        if ((err = head_len(q, &ns, &len)) < 0)
            break;
        if (len >= CLAIM_BYTES) {
            err = k == 0 ? -EXDEV : 0;
            break;
        }
        err = fn(ctx, q->data + ns.head + RECORD_HEAD, (size_t)len);
        if (err < 0)
            break;
        MPX__FAULT("queue.get.copied");
        advance_head(&ns, len);
        k++;
    }
    *got = k;
    if (k == 0)
        return err;
    finish_get(q, &ns);
    return 0;
}

/* A large get: claims the head record under the lock, hands it to `fn` without the lock
 * (so that producers go on putting meanwhile), then takes it under the lock. Called with
 * the lock held; returns without it. While the claim stands the record stays counted and
 * in place, and other consumers wait for it; if this process dies, the next consumer
 * cancels the claim and the message is delivered to someone else. */
static int get_claimed(mpx_queue *q, mpx_queue_consume_fn fn, void *ctx, size_t *got)
{
    struct qstate ns = *state(q);
    uint64_t len;
    int r = head_len(q, &ns, &len);
    if (r < 0) {
        unlock(q);
        return r;
    }
    ns.claim_off = ns.head;
    ns.claim_len = record_size(len);
    ns.claim_pid = (uint32_t)mpx__self_pid();
    ns.claim_gen++;
    uint32_t gen = ns.claim_gen;
    commit(q, &ns, NULL);
    const unsigned char *msg = q->data + ns.head + RECORD_HEAD;
    q->pins++; /* the mapping at msg stays in place while fn copies */
    unlock(q);

    int err = fn(ctx, msg, (size_t)len);
    if (err == 0)
        MPX__FAULT("queue.get.copied");
    if ((r = lock(q, false, MPX_FOREVER)) < 0)
        return r;
    unpin(q);
    ns = *state(q);
    if (!ns.claim_len || ns.claim_gen != gen) {
        /* Taken for dead by another process, which gave the message back. */
        unlock(q);
        return err < 0 ? err : -ECANCELED;
    }
    ns.claim_len = 0;
    mpx__ww_wake(&q->sh->claim, false);
    if (err < 0) {
        commit(q, &ns, NULL);
        unlock(q);
        return err;
    }
    advance_head(&ns, len);
    finish_get(q, &ns);
    unlock(q);
    *got = 1;
    return 0;
}

int mpx_queue_get_many_with(mpx_queue *q, size_t max, mpx_queue_consume_fn fn, void *ctx,
                            size_t *got, unsigned flags, mpx_deadline_t deadline)
{
    if (!q || !fn || !got || max == 0)
        return -EINVAL;
    *got = 0;
    bool try = flags & MPX_QUEUE_TRYLOCK;
    for (;;) {
        int r = lock(q, try, deadline);
        if (r < 0)
            return r;
        MPX__FAULT("queue.get.locked");
        struct qstate *s = state(q);
        if (s->claim_len) {
            if ((r = wait_claim(q, try, deadline)) < 0)
                return r;
            continue;
        }
        if (s->count > 0) {
            r = get_locked(q, max, fn, ctx, got);
            if (r == -EXDEV)
                return get_claimed(q, fn, ctx, got);
            unlock(q);
            return r;
        }
        if (s->closed) {
            unlock(q);
            return MPX_ECLOSED;
        }
        if (try || (deadline != MPX_FOREVER && mpx__deadline_passed(deadline))) {
            unlock(q);
            return deadline == MPX_NOWAIT || try ? -EAGAIN : -ETIMEDOUT;
        }
        unlock(q);
        if ((r = mpx_queue_wait(q, MPX_QUEUE_NONEMPTY, 1, deadline)) < 0)
            return r;
    }
}

int mpx_queue_get_with(mpx_queue *q, mpx_queue_consume_fn fn, void *ctx, unsigned flags,
                       mpx_deadline_t deadline)
{
    size_t got;
    return mpx_queue_get_many_with(q, 1, fn, ctx, &got, flags, deadline);
}

struct copy_out {
    void *data;
    size_t len;
};

static int copy_out(void *ctx, const void *msg, size_t len)
{
    struct copy_out *c = ctx;
    c->data = malloc(len ? len : 1);
    if (!c->data)
        return -ENOMEM;
    memcpy(c->data, msg, len);
    c->len = len;
    return 0;
}

int mpx_queue_get(mpx_queue *q, void **data, size_t *len, mpx_deadline_t deadline)
{
    if (!q || !data || !len)
        return -EINVAL;
    struct copy_out c = {0};
    int r;
    while ((r = mpx_queue_get_with(q, copy_out, &c, 0, deadline)) == -ECANCELED) {
        free(c.data); /* the message was given back meanwhile: take it again */
        c.data = NULL;
    }
    if (r < 0)
        return r;
    *data = c.data;
    *len = c.len;
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Size, close, join
 */

/* Reads one field of the committed state under the lock, so that it is exact at one instant. */
static int read_field(mpx_queue *q, uint64_t *out, size_t offset)
{
    if (!q || !out)
        return -EINVAL;
    int r = lock(q, false, MPX_FOREVER);
    if (r < 0)
        return r;
    memcpy(out, (const unsigned char *)state(q) + offset, sizeof *out);
    return unlock(q);
}

int mpx_queue_size(mpx_queue *q, uint64_t *n)
{
    return read_field(q, n, offsetof(struct qstate, count));
}

int mpx_queue_capacity(mpx_queue *q, uint64_t *bytes)
{
    return read_field(q, bytes, offsetof(struct qstate, cap));
}

int mpx_queue_unfinished(mpx_queue *q, uint64_t *n)
{
    return read_field(q, n, offsetof(struct qstate, unfinished));
}

int mpx_queue_close(mpx_queue *q)
{
    if (!q)
        return -EINVAL;
    int r = lock(q, false, MPX_FOREVER);
    if (r < 0)
        return r;
    struct qstate ns = *state(q);
    if (!ns.closed) {
        ns.closed = 1;
        mpx__ww_wake(&q->sh->nonempty, true);
        mpx__ww_wake(&q->sh->nonfull, true);
        commit(q, &ns, NULL);
    }
    return unlock(q);
}

int mpx_queue_is_closed(mpx_queue *q)
{
    if (!q)
        return -EINVAL;
    int r = lock(q, false, MPX_FOREVER);
    if (r < 0)
        return r;
    int c = (int)state(q)->closed;
    unlock(q);
    return c;
}

int mpx_queue_task_done(mpx_queue *q)
{
    if (!q)
        return -EINVAL;
    int r = lock(q, false, MPX_FOREVER);
    if (r < 0)
        return r;
    struct qstate ns = *state(q);
    if (ns.unfinished == 0) {
        unlock(q);
        return MPX_ETOOMANY;
    }
    ns.unfinished--;
    if (ns.unfinished == 0) /* before the flip, as in put_locked */
        mpx__ww_wake(&q->sh->join, false);
    commit(q, &ns, "queue.task_done.staged");
    return unlock(q);
}

int mpx_queue_join(mpx_queue *q, mpx_deadline_t deadline)
{
    if (!q)
        return -EINVAL;
    for (;;) {
        int r = lock(q, false, deadline);
        if (r < 0)
            return r;
        if (state(q)->unfinished == 0)
            return unlock(q);
        if (deadline != MPX_FOREVER && mpx__deadline_passed(deadline)) {
            unlock(q);
            return deadline == MPX_NOWAIT ? -EAGAIN : -ETIMEDOUT;
        }
        r = sleep_on(q, &q->sh->join, deadline);
        if (r < 0)
            return r;
    }
}
