/* A parent's inbox (<mpx/inbox.h>): children's log records and outcomes over one unbounded
 * mpx_queue, and the parent's table of which children's streams are complete.
 * docs/inbox.md describes the outcome message and the completion protocol. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/uio.h>
#include <unistd.h>
#include <time.h>

#include "linux/linux.h"
#include "log/log_internal.h"
#include "mpx/error.h"
#include "mpx/inbox.h"
#include "mpx/queue.h"
#include "wire/bytes.h"

#define KIND_OUTCOME 1u
#define KIND_GONE 2u

/* One registered child. */
struct entry {
    uint64_t token;
    bool complete;
    bool marker_put; /* a flush has put (or is putting) the GONE marker */
    int efd;         /* owned eventfd signalled on completion, made by mpx_inbox_wait; or -1 */
};

struct mpx_inbox {
    mpx_queue *q; /* owned */
    /* The completion table: a small array, searched linearly. A parent has at most a few
     * thousand children alive at once, and each is looked up a handful of times. */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* broadcast on every completion; CLOCK_MONOTONIC */
    struct entry *entries; /* owned */
    size_t n, cap;
};

static int inbox_new(mpx_inbox **out, mpx_queue *q)
{
    mpx_inbox *ib = calloc(1, sizeof *ib);
    if (!ib) {
        mpx_queue_destroy(q);
        return -ENOMEM;
    }
    pthread_condattr_t ca;
    int r = pthread_condattr_init(&ca);
    if (r == 0) {
        r = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        if (r == 0)
            r = pthread_cond_init(&ib->cv, &ca);
        pthread_condattr_destroy(&ca);
    }
    if (r == 0 && (r = pthread_mutex_init(&ib->mu, NULL)) != 0)
        pthread_cond_destroy(&ib->cv);
    if (r != 0) {
        free(ib);
        mpx_queue_destroy(q);
        return -r;
    }
    ib->q = q;
    *out = ib;
    return 0;
}

int mpx_inbox_create(mpx_inbox **out)
{
    if (!out)
        return -EINVAL;
    mpx_queue *q = NULL;
    int err = mpx__unbounded_queue_create(&q); /* a send never waits for the parent */
    return err < 0 ? err : inbox_new(out, q);
}

int mpx_inbox_attach(mpx_inbox **out, int fd)
{
    if (!out || fd < 0)
        return -EINVAL;
    mpx_queue *q = NULL;
    int err = mpx__unbounded_queue_attach(&q, fd); /* MPX_EBADSEG for a bounded queue */
    return err < 0 ? err : inbox_new(out, q);
}

int mpx_inbox_fd(const mpx_inbox *ib) { return ib ? mpx_queue_fd(ib->q) : -EINVAL; }

void mpx_inbox_destroy(mpx_inbox *ib)
{
    if (!ib)
        return;
    mpx_queue_destroy(ib->q);
    for (size_t i = 0; i < ib->n; i++)
        if (ib->entries[i].efd >= 0)
            close(ib->entries[i].efd);
    pthread_cond_destroy(&ib->cv);
    pthread_mutex_destroy(&ib->mu);
    free(ib->entries);
    free(ib);
}

/* ---- sending ---- */

int mpx_inbox_send_log(mpx_inbox *ib, const mpx_log_record *rec)
{
    if (!ib || !rec)
        return -EINVAL;
    return mpx__log_put(ib->q, rec);
}

static void write_head(unsigned char *p, unsigned kind, uint32_t code, uint64_t total,
                       uint64_t token)
{
    mpx__put32(p, MPX_INBOX_MAGIC);
    mpx__put16(p + 4, MPX_INBOX_VERSION);
    mpx__put16(p + 6, (uint16_t)kind);
    mpx__put32(p + 8, code);
    mpx__put32(p + 12, 0);
    mpx__put64(p + 16, total);
    mpx__put64(p + 24, token);
}

/* Puts one message, going on after a signal: an outcome must not be lost because a signal
 * handler ran while the put waited for the queue's lock. */
static int put_parts(mpx_queue *q, const struct iovec *iov, int n)
{
    int err;
    do
        err = mpx_queue_putv(q, iov, n, MPX_FOREVER);
    while (err == -EINTR);
    return err;
}

int mpx_inbox_send_outcome(mpx_inbox *ib, uint64_t token, uint32_t code, const void *data,
                           size_t len)
{
    if (!ib || (!data && len > 0))
        return -EINVAL;
    if ((uint64_t)len > MPX_INBOX_MAX_PAYLOAD)
        return MPX_ETOOBIG;
    unsigned char head[MPX_INBOX_HEAD_SIZE];
    write_head(head, KIND_OUTCOME, code, MPX_INBOX_HEAD_SIZE + (uint64_t)len, token);
    struct iovec iov[2] = {{head, sizeof head}, {(void *)data, len}};
    return put_parts(ib->q, iov, len ? 2 : 1);
}

/* ---- receiving ---- */

struct recv_ctx {
    mpx_inbox_msg *msgs; /* the caller's array */
    size_t n;            /* filled so far */
    int bad;             /* first decode error of a skipped message, or 0 */
};

/* Decodes an "MPXO" message into *m (copying the payload). */
static int decode_outcome(mpx_inbox_msg *m, const unsigned char *p, size_t len)
{
    if (len < MPX_INBOX_HEAD_SIZE)
        return MPX_EBADFRAME;
    if (mpx__get16(p + 4) != MPX_INBOX_VERSION)
        return MPX_EVERSION;
    unsigned kind = mpx__get16(p + 6);
    if (mpx__get32(p + 12) != 0 || mpx__get64(p + 16) != (uint64_t)len)
        return MPX_EBADFRAME;
    uint64_t token = mpx__get64(p + 24);
    if (kind == KIND_GONE) {
        if (len != MPX_INBOX_HEAD_SIZE || mpx__get32(p + 8) != 0)
            return MPX_EBADFRAME;
        *m = (mpx_inbox_msg){.type = MPX_INBOX_GONE, .token = token};
        return 0;
    }
    if (kind != KIND_OUTCOME)
        return MPX_EBADFRAME;
    size_t n = len - MPX_INBOX_HEAD_SIZE;
    void *data = NULL;
    if (n) {
        data = malloc(n);
        if (!data)
            return -ENOMEM;
        memcpy(data, p + MPX_INBOX_HEAD_SIZE, n);
    }
    *m = (mpx_inbox_msg){.type = MPX_INBOX_OUTCOME,
                         .code = mpx__get32(p + 8),
                         .token = token,
                         .data = data,
                         .len = n};
    return 0;
}

int mpx_inbox_decode(mpx_inbox_msg *out, const void *buf, size_t len)
{
    if (!out || (!buf && len > 0))
        return -EINVAL;
    const unsigned char *p = buf;
    if (len >= 4 && mpx__get32(p) == MPX_INBOX_MAGIC)
        return decode_outcome(out, p, len);
    mpx_log_record *rec = NULL;
    int r = mpx_log_decode(&rec, buf, len);
    if (r == MPX_ECLOSED) /* a log channel's end marker has no place in an inbox */
        return MPX_EBADFRAME;
    if (r == 0)
        *out = (mpx_inbox_msg){.type = MPX_INBOX_LOG, .record = rec};
    return r;
}

/* Consumes one queue message into the next slot. An invalid message is consumed and
 * remembered rather than returned as an error, which would leave it at the head of the
 * queue and make every later receive fail; only -ENOMEM leaves a message queued. */
static int recv_consume(void *ctx, const void *msg, size_t len)
{
    struct recv_ctx *c = ctx;
    int r = mpx_inbox_decode(&c->msgs[c->n], msg, len);
    if (r == -ENOMEM)
        return r;
    if (r < 0) {
        if (!c->bad)
            c->bad = r;
        return 0;
    }
    c->n++;
    return 0;
}

void mpx_inbox_msg_done(mpx_inbox_msg *m)
{
    if (!m)
        return;
    mpx_log_record_free(m->record);
    free(m->data);
    memset(m, 0, sizeof *m);
}

int mpx_inbox_recv(mpx_inbox *ib, mpx_inbox_msg *msgs, size_t max, size_t *got,
                   mpx_deadline_t deadline)
{
    if (!ib || !msgs || !got || max == 0)
        return -EINVAL;
    *got = 0;
    for (;;) {
        struct recv_ctx c = {msgs, 0, 0};
        /* Each slot is filled by at most one consumed message, so the batch never holds
         * more than `max`: skipped messages leave their slot free for the next. */
        size_t consumed = 0;
        int err = mpx_queue_get_many_with(ib->q, max, recv_consume, &c, &consumed, 0, deadline);
        if (err == -ECANCELED) {
            /* A large message's claim was taken back; it is still queued. Drop what was
             * decoded of it (the last slot, if it was filled) and receive again. */
            for (size_t i = 0; i < c.n; i++)
                mpx_inbox_msg_done(&msgs[i]);
            continue;
        }
        if (err < 0) {
            /* Nothing taken counts: a message decoded before the failure may still be
             * queued (a large get that could not finish), so hand none of them out. */
            for (size_t i = 0; i < c.n; i++)
                mpx_inbox_msg_done(&msgs[i]);
            return err;
        }
        if (c.n == 0 && c.bad)
            return c.bad;
        if (c.n == 0)
            continue; /* only skipped messages: wait for the next */
        *got = c.n;
        return 0;
    }
}

/* ---- completion ---- */

static struct entry *find(mpx_inbox *ib, uint64_t token)
{
    for (size_t i = 0; i < ib->n; i++)
        if (ib->entries[i].token == token)
            return &ib->entries[i];
    return NULL;
}

int mpx_inbox_expect(mpx_inbox *ib, uint64_t token)
{
    if (!ib)
        return -EINVAL;
    int err = 0;
    pthread_mutex_lock(&ib->mu);
    if (find(ib, token)) {
        err = -EEXIST;
        goto out;
    }
    if (ib->n == ib->cap) {
        size_t cap = ib->cap ? ib->cap * 2 : 16;
        struct entry *e = realloc(ib->entries, cap * sizeof *e);
        if (!e) {
            err = -ENOMEM;
            goto out;
        }
        ib->entries = e;
        ib->cap = cap;
    }
    ib->entries[ib->n++] = (struct entry){.token = token, .efd = -1};
out:
    pthread_mutex_unlock(&ib->mu);
    return err;
}

int mpx_inbox_complete(mpx_inbox *ib, uint64_t token)
{
    if (!ib)
        return -EINVAL;
    pthread_mutex_lock(&ib->mu);
    struct entry *e = find(ib, token);
    if (e && !e->complete) {
        e->complete = true;
        pthread_cond_broadcast(&ib->cv);
        if (e->efd >= 0)
            mpx__eventfd_signal(e->efd, 1);
    }
    pthread_mutex_unlock(&ib->mu);
    return 0;
}

int mpx_inbox_is_complete(mpx_inbox *ib, uint64_t token)
{
    if (!ib)
        return -EINVAL;
    pthread_mutex_lock(&ib->mu);
    struct entry *e = find(ib, token);
    int r = e ? e->complete : -ENOENT;
    pthread_mutex_unlock(&ib->mu);
    return r;
}

int mpx_inbox_forget(mpx_inbox *ib, uint64_t token)
{
    if (!ib)
        return -EINVAL;
    pthread_mutex_lock(&ib->mu);
    struct entry *e = find(ib, token);
    if (e) {
        if (e->efd >= 0) {
            /* Wake the mpx_inbox_wait callers (they poll duplicates): on their recheck
             * they find no entry and return -ENOENT. */
            mpx__eventfd_signal(e->efd, 1);
            close(e->efd);
        }
        *e = ib->entries[--ib->n];
        pthread_cond_broadcast(&ib->cv); /* a flush waiting for it returns -ENOENT */
    }
    pthread_mutex_unlock(&ib->mu);
    return e ? 0 : -ENOENT;
}

/* Only called for deadlines in the future (past ones never wait), so d > 0. */
static struct timespec to_timespec(mpx_deadline_t d)
{
    if (d < 0)
        d = 0;
    return (struct timespec){.tv_sec = (time_t)(d / 1000000000),
                             .tv_nsec = (long)(d % 1000000000)};
}

int mpx_inbox_flush(mpx_inbox *ib, uint64_t token, mpx_deadline_t deadline)
{
    if (!ib)
        return -EINVAL;
    struct timespec ts = to_timespec(deadline);
    int err;
    pthread_mutex_lock(&ib->mu);
    for (;;) {
        struct entry *e = find(ib, token);
        if (!e) {
            err = -ENOENT;
            break;
        }
        if (e->complete) {
            err = 0;
            break;
        }
        if (!e->marker_put) {
            /* Put the marker outside the mutex (the put may wait for the queue's lock);
             * the flag keeps other flushers from putting a second one. */
            e->marker_put = true;
            pthread_mutex_unlock(&ib->mu);
            unsigned char m[MPX_INBOX_HEAD_SIZE];
            write_head(m, KIND_GONE, 0, sizeof m, token);
            struct iovec iov = {m, sizeof m};
            err = put_parts(ib->q, &iov, 1);
            pthread_mutex_lock(&ib->mu);
            if (err < 0) {
                /* No marker: let a later flush try again, and wake the flushers that
                 * were waiting for this one, so that they try too (or time out). */
                if ((e = find(ib, token)))
                    e->marker_put = false;
                pthread_cond_broadcast(&ib->cv);
                break;
            }
            continue; /* the array may have moved meanwhile: look the entry up again */
        }
        if (deadline != MPX_FOREVER && deadline <= mpx_now()) {
            err = -ETIMEDOUT;
            break;
        }
        int r = deadline == MPX_FOREVER ? pthread_cond_wait(&ib->cv, &ib->mu)
                                        : pthread_cond_timedwait(&ib->cv, &ib->mu, &ts);
        if (r != 0 && r != ETIMEDOUT) {
            err = -r;
            break;
        }
    }
    pthread_mutex_unlock(&ib->mu);
    return err;
}

int mpx_inbox_wait(mpx_inbox *ib, uint64_t token, int fd, mpx_deadline_t deadline)
{
    if (!ib)
        return -EINVAL;
    for (;;) {
        pthread_mutex_lock(&ib->mu);
        struct entry *e = find(ib, token);
        int efd = -1, r = 0;
        if (!e)
            r = -ENOENT;
        else if (e->complete)
            r = 1;
        else if (e->efd < 0 && (e->efd = mpx__eventfd(0, true)) < 0) {
            r = e->efd;
            e->efd = -1;
        } else {
            /* Dup it: forget() may close the entry's descriptor while this waits. */
            efd = fcntl(e->efd, F_DUPFD_CLOEXEC, 0);
            if (efd < 0)
                r = -errno;
        }
        pthread_mutex_unlock(&ib->mu);
        if (r != 0 || efd < 0)
            return r;
        struct pollfd p[2] = {{.fd = efd, .events = POLLIN}, {.fd = fd, .events = POLLIN}};
        r = mpx__poll_until(p, fd >= 0 ? 2 : 1, deadline);
        close(efd);
        if (r < 0)
            return r;
        if (fd >= 0 && p[1].revents) {
            /* The other descriptor is ready; still report completion if it came too. */
            return mpx_inbox_is_complete(ib, token);
        }
        /* The eventfd fired (it is never drained: completion is final); recheck. */
    }
}
