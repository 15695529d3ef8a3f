/* Tests of the shared-memory queue (<mpx/queue.h>), across processes, including processes
 * killed at every fault point of the engine.
 *
 * Most tests move "checked messages": a header naming the producer and a sequence number,
 * then a payload generated from both, so that any message can be verified byte for byte
 * anywhere without keeping a copy (see msg_verify). */
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "mpx/error.h"
#include "mpx/fault.h"
#include "mpx/frame.h"
#include "mpx/queue.h"

#define MS 1000000LL
#define SEC 1000000000LL

/* ---------------------------------------------------------------------------------------
 * Checked messages
 */

#define MSG_MAGIC 0x4d534731u
struct msg_head {
    uint32_t magic;
    uint32_t producer;
    uint64_t seq;
    uint64_t len;   /* payload bytes */
    uint64_t check; /* hash of the three fields above */
};
#define MSG_HEAD sizeof(struct msg_head)

struct id {
    uint32_t p;
    uint64_t s;
};

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t head_check(uint32_t p, uint64_t s, uint64_t len)
{
    return mix64(((uint64_t)p << 40) ^ mix64(s) ^ (len * 0x9e3779b97f4a7c15ULL));
}

static inline uint64_t gen_step(uint64_t *x)
{
    *x = *x * 6364136223846793005ULL + 1442695040888963407ULL;
    return *x ^ (*x >> 29);
}

static void payload_gen(unsigned char *p, size_t n, uint32_t producer, uint64_t seq)
{
    uint64_t x = head_check(producer, seq, 0);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = gen_step(&x);
        memcpy(p + i, &w, 8);
    }
    if (i < n) {
        uint64_t w = gen_step(&x);
        memcpy(p + i, &w, n - i);
    }
}

static size_t msg_fill(unsigned char *buf, uint32_t producer, uint64_t seq, size_t payload)
{
    struct msg_head h = {MSG_MAGIC, producer, seq, payload, head_check(producer, seq, payload)};
    memcpy(buf, &h, MSG_HEAD);
    payload_gen(buf + MSG_HEAD, payload, producer, seq);
    return MSG_HEAD + payload;
}

static unsigned char *msg_new(uint32_t producer, uint64_t seq, size_t payload, size_t *len)
{
    unsigned char *b = malloc(MSG_HEAD + payload);
    ASSERT_NOT_NULL(b);
    *len = msg_fill(b, producer, seq, payload);
    return b;
}

/* 0 if data[0..len) is an intact checked message (its id in *out), else a short reason. */
static const char *msg_verify(const void *data, size_t len, struct id *out)
{
    struct msg_head h;
    if (len < MSG_HEAD)
        return "shorter than a header";
    memcpy(&h, data, MSG_HEAD);
    if (h.magic != MSG_MAGIC)
        return "bad magic";
    if (h.check != head_check(h.producer, h.seq, h.len))
        return "bad header check";
    if (h.len != len - MSG_HEAD)
        return "length differs from the header's";
    const unsigned char *p = (const unsigned char *)data + MSG_HEAD;
    uint64_t x = head_check(h.producer, h.seq, 0);
    size_t i = 0;
    for (; i + 8 <= h.len; i += 8) {
        uint64_t w = gen_step(&x);
        if (memcmp(p + i, &w, 8) != 0)
            return "payload differs";
    }
    if (i < h.len) {
        uint64_t w = gen_step(&x);
        if (memcmp(p + i, &w, h.len - i) != 0)
            return "payload tail differs";
    }
    if (out)
        *out = (struct id){h.producer, h.seq};
    return NULL;
}

#define ASSERT_MSG_OK(data, len, idp)                                                        \
    do {                                                                                     \
        const char *why_ = msg_verify((data), (len), (idp));                                 \
        ASSERT_MSG(!why_, "corrupt message (%zu bytes): %s", (size_t)(len), why_);           \
    } while (0)

static int put_msg(mpx_queue *q, uint32_t producer, uint64_t seq, size_t payload,
                   mpx_deadline_t dl)
{
    size_t len;
    unsigned char *b = msg_new(producer, seq, payload, &len);
    int r = mpx_queue_put(q, b, len, dl);
    free(b);
    return r;
}

/* Gets one message, verifies it and stores its id. */
static int get_msg(mpx_queue *q, mpx_deadline_t dl, struct id *id, size_t *lenp)
{
    void *d = NULL;
    size_t len = 0;
    int r = mpx_queue_get(q, &d, &len, dl);
    if (r < 0)
        return r;
    ASSERT_MSG_OK(d, len, id);
    if (lenp)
        *lenp = len;
    free(d);
    return 0;
}

static void expect_msg(mpx_queue *q, uint32_t p, uint64_t s, mpx_deadline_t dl)
{
    struct id id;
    ASSERT_OK(get_msg(q, dl, &id, NULL));
    ASSERT_MSG(id.p == p && id.s == s, "got message %u:%llu, want %u:%llu", id.p,
               (unsigned long long)id.s, p, (unsigned long long)s);
}

static void prefill(mpx_queue *q, uint32_t producer, uint64_t n, size_t payload)
{
    for (uint64_t i = 0; i < n; i++)
        ASSERT_OK(put_msg(q, producer, i, payload + (size_t)i, MPX_NOWAIT));
}

static uint64_t qsize(mpx_queue *q)
{
    uint64_t n = 12345;
    ASSERT_OK(mpx_queue_size(q, &n));
    return n;
}

static uint64_t qcap(mpx_queue *q)
{
    uint64_t n = 0;
    ASSERT_OK(mpx_queue_capacity(q, &n));
    return n;
}

static uint64_t qunfinished(mpx_queue *q)
{
    uint64_t n = 12345;
    ASSERT_OK(mpx_queue_unfinished(q, &n));
    return n;
}

static mpx_queue *qnew(uint64_t maxsize, size_t cap)
{
    mpx_queue_options o = {.maxsize = maxsize, .initial_capacity = cap};
    mpx_queue *q = NULL;
    ASSERT_OK(mpx_queue_create(&q, &o));
    ASSERT_NOT_NULL(q);
    return q;
}

/* Gets every message without waiting, checks them against ids[0..n) in order and that the
 * queue is then empty; with `reput`, puts the same bytes back in the same order. */
static void drain_check(mpx_queue *q, const struct id *ids, size_t n, bool reput)
{
    ASSERT_EQ_UINT(qsize(q), n);
    void **keep = calloc(n + 1, sizeof *keep);
    size_t *lens = calloc(n + 1, sizeof *lens);
    ASSERT(keep && lens);
    for (size_t i = 0; i < n; i++) {
        int r = mpx_queue_get(q, &keep[i], &lens[i], MPX_NOWAIT);
        ASSERT_MSG(r == 0, "message %zu of %zu: %s", i, n, mpx_errname(r));
        struct id id;
        ASSERT_MSG_OK(keep[i], lens[i], &id);
        ASSERT_MSG(id.p == ids[i].p && id.s == ids[i].s,
                   "message %zu is %u:%llu, want %u:%llu", i, id.p, (unsigned long long)id.s,
                   ids[i].p, (unsigned long long)ids[i].s);
    }
    void *d;
    size_t l;
    ASSERT_ERR(mpx_queue_get(q, &d, &l, MPX_NOWAIT), -EAGAIN);
    for (size_t i = 0; i < n; i++) {
        if (reput)
            ASSERT_OK(mpx_queue_put(q, keep[i], lens[i], MPX_NOWAIT));
        free(keep[i]);
    }
    free(keep);
    free(lens);
}

static void fd_arg(char *buf, size_t len, int fd) { snprintf(buf, len, "%d", fd); }

/* A consume callback that verifies and counts what it is given. */
struct collect {
    struct id ids[64];
    size_t n;
    size_t fail_at; /* return an error for the message with this index (SIZE_MAX: never) */
    int err;
};

static int collect_fn(void *ctx, const void *msg, size_t len)
{
    struct collect *c = ctx;
    if (c->n == c->fail_at)
        return c->err;
    struct id id;
    ASSERT_MSG_OK(msg, len, &id);
    if (c->n < 64)
        c->ids[c->n] = id;
    c->n++;
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Creation, arguments, attachment
 */

TEST(create_and_defaults)
{
    mpx_queue *q = NULL;
    ASSERT_OK(mpx_queue_create(&q, NULL));
    ASSERT_OK(mpx_queue_fd(q));
    ASSERT_EQ_UINT(mpx_queue_maxsize(q), 0);
    ASSERT_EQ_UINT(qcap(q), 256 * 1024);
    ASSERT_EQ_UINT(qsize(q), 0);
    ASSERT_EQ_UINT(qunfinished(q), 0);
    ASSERT_EQ_INT(mpx_queue_is_closed(q), 0);
    int fl = fcntl(mpx_queue_fd(q), F_GETFD);
    ASSERT(fl >= 0 && (fl & FD_CLOEXEC));
    mpx_queue_destroy(q);
    mpx_queue_destroy(NULL);

    q = qnew(7, 1);
    ASSERT_EQ_UINT(mpx_queue_maxsize(q), 7);
    ASSERT_EQ_UINT(qcap(q), 4096); /* the minimum */
    mpx_queue_destroy(q);
    q = qnew(0, 5001);
    ASSERT_EQ_UINT(qcap(q), 5008); /* rounded up to 8 */
    mpx_queue_destroy(q);

    mpx_queue_options o = {.initial_capacity = (size_t)1 << 47};
    q = (mpx_queue *)&o;
    ASSERT_ERR(mpx_queue_create(&q, &o), -EINVAL);
    ASSERT_NULL(q);
    ASSERT_ERR(mpx_queue_create(NULL, NULL), -EINVAL);

    o = (mpx_queue_options){.spin_ns = UINT32_MAX}; /* never spin */
    ASSERT_OK(mpx_queue_create(&q, &o));
    ASSERT_ERR(mpx_queue_get(q, &(void *){0}, &(size_t){0}, mpx_deadline_in(20 * MS)),
               -ETIMEDOUT);
    mpx_queue_destroy(q);
}

TEST(null_and_bad_arguments)
{
    void *d;
    size_t l;
    uint64_t n;
    size_t got;
    struct collect c = {.fail_at = SIZE_MAX};
    struct iovec v = {"x", 1};
    mpx_msgv m = {&v, 1};
    ASSERT_ERR(mpx_queue_put(NULL, "x", 1, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_queue_putv(NULL, &v, 1, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_queue_put_many(NULL, &m, 1, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_queue_put_many_ex(NULL, &m, 1, 0, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_queue_get(NULL, &d, &l, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_queue_get_with(NULL, collect_fn, &c, 0, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_queue_get_many_with(NULL, 1, collect_fn, &c, &got, 0, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_queue_wait(NULL, MPX_QUEUE_NONEMPTY, 1, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_queue_size(NULL, &n), -EINVAL);
    ASSERT_ERR(mpx_queue_capacity(NULL, &n), -EINVAL);
    ASSERT_ERR(mpx_queue_unfinished(NULL, &n), -EINVAL);
    ASSERT_ERR(mpx_queue_close(NULL), -EINVAL);
    ASSERT_ERR(mpx_queue_is_closed(NULL), -EINVAL);
    ASSERT_ERR(mpx_queue_task_done(NULL), -EINVAL);
    ASSERT_ERR(mpx_queue_join(NULL, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_queue_fd(NULL), -EINVAL);
    ASSERT_EQ_UINT(mpx_queue_maxsize(NULL), 0);
    ASSERT_ERR(mpx_queue_attach(NULL, 0), -EINVAL);

    mpx_queue *q = qnew(0, 0);
    ASSERT_ERR(mpx_queue_size(q, NULL), -EINVAL);
    ASSERT_ERR(mpx_queue_capacity(q, NULL), -EINVAL);
    ASSERT_ERR(mpx_queue_unfinished(q, NULL), -EINVAL);
    ASSERT_ERR(mpx_queue_put(q, NULL, 5, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_queue_putv(q, NULL, 1, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_queue_putv(q, &v, -1, MPX_NOWAIT), -EINVAL);
    struct iovec bad[2] = {{"ab", 2}, {NULL, 3}};
    ASSERT_ERR(mpx_queue_putv(q, bad, 2, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_queue_put_many(q, NULL, 2, MPX_NOWAIT), -EINVAL);
    mpx_msgv ms[2] = {{&v, 1}, {bad, 2}};
    ASSERT_ERR(mpx_queue_put_many(q, ms, 2, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_queue_put_many(q, ms, 2, MPX_FOREVER), -EINVAL);
    ASSERT_EQ_UINT(qsize(q), 0); /* nothing of a refused batch was put */
    ASSERT_ERR(mpx_queue_get(q, NULL, &l, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_queue_get(q, &d, NULL, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_queue_get_with(q, NULL, &c, 0, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_queue_get_many_with(q, 0, collect_fn, &c, &got, 0, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_queue_get_many_with(q, 1, collect_fn, &c, NULL, 0, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_queue_get_many_with(q, 1, NULL, &c, &got, 0, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_queue_wait(q, 0, 1, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_queue_wait(q, 4, 1, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_queue_wait(q, (enum mpx_queue_event)-1, 1, MPX_NOWAIT), -EINVAL);

    /* Empty messages are messages: NULL with length 0, and an empty gather list. */
    ASSERT_OK(mpx_queue_put(q, NULL, 0, MPX_NOWAIT));
    ASSERT_OK(mpx_queue_putv(q, NULL, 0, MPX_NOWAIT));
    ASSERT_OK(mpx_queue_put_many(q, NULL, 0, MPX_NOWAIT)); /* nothing */
    ASSERT_OK(mpx_queue_put_many(q, ms, 0, MPX_NOWAIT));
    ASSERT_EQ_UINT(qsize(q), 2);
    for (int i = 0; i < 2; i++) {
        d = NULL;
        l = 99;
        ASSERT_OK(mpx_queue_get(q, &d, &l, MPX_NOWAIT));
        ASSERT_EQ_UINT(l, 0);
        ASSERT_NOT_NULL(d); /* a valid (empty) buffer for free() */
        free(d);
    }
    ASSERT_ERR(mpx_queue_get(q, &d, &l, MPX_NOWAIT), -EAGAIN);
    mpx_queue_destroy(q);
}

static int sealed_memfd(size_t size, const void *content, size_t clen, bool seal)
{
    int fd = memfd_create("not-a-queue", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    ASSERT_SYS(fd);
    ASSERT_SYS(ftruncate(fd, (off_t)size));
    if (clen)
        ASSERT_EQ_INT(pwrite(fd, content, clen, 0), (ssize_t)clen);
    if (seal)
        ASSERT_SYS(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL));
    return fd;
}

TEST(attach_refuses_bad_descriptors)
{
    mpx_queue *a = NULL;
    ASSERT_ERR(mpx_queue_attach(&a, -1), -EBADF);
    ASSERT_NULL(a);
    ASSERT_ERR(mpx_queue_attach(&a, -12345), -EBADF);
    int p[2];
    ASSERT_SYS(pipe2(p, O_CLOEXEC));
    ASSERT_ERR(mpx_queue_attach(&a, p[0]), MPX_EBADSEG);
    ASSERT_ERR(mpx_queue_attach(&a, p[1]), MPX_EBADSEG);
    close(p[0]);
    close(p[1]);
    ASSERT(mpx_queue_attach(&a, p[0]) < 0); /* a closed descriptor number */

    char path[] = "/tmp/mpx-queue-test-XXXXXX";
    int f = mkstemp(path);
    ASSERT_SYS(f);
    unlink(path);
    ASSERT_SYS(ftruncate(f, 1 << 20));
    ASSERT_ERR(mpx_queue_attach(&a, f), MPX_EBADSEG);
    close(f);

    int dn = open("/dev/null", O_RDWR | O_CLOEXEC);
    ASSERT_SYS(dn);
    ASSERT_ERR(mpx_queue_attach(&a, dn), MPX_EBADSEG);
    close(dn);

    /* A real queue's bytes in an unsealed memfd: refused (it could be shrunk under us). */
    mpx_queue *q = qnew(0, 0);
    unsigned char *hdr = malloc(8192);
    ASSERT_NOT_NULL(hdr);
    ASSERT_EQ_INT(pread(mpx_queue_fd(q), hdr, 8192, 0), 8192);
    int m = sealed_memfd(1 << 20, hdr, 8192, false);
    ASSERT_ERR(mpx_queue_attach(&a, m), MPX_EBADSEG);
    close(m);
    /* Sealed, but all zeros; sealed with garbage. */
    m = sealed_memfd(1 << 20, NULL, 0, true);
    ASSERT_ERR(mpx_queue_attach(&a, m), MPX_EBADSEG);
    close(m);
    unsigned char junk[8192];
    uint64_t rs = 42;
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (unsigned char)th_rand(&rs);
    m = sealed_memfd(1 << 20, junk, sizeof junk, true);
    ASSERT_ERR(mpx_queue_attach(&a, m), MPX_EBADSEG);
    close(m);
    /* Too small to be a queue at all, even with a valid header. */
    m = sealed_memfd(4096 + 100, hdr, 4096, true);
    ASSERT_ERR(mpx_queue_attach(&a, m), MPX_EBADSEG);
    close(m);
    m = sealed_memfd(4096, hdr, 4096, true);
    ASSERT_ERR(mpx_queue_attach(&a, m), MPX_EBADSEG);
    close(m);
    /* A valid header whose ring (256 KiB) extends past the end of the segment. */
    m = sealed_memfd(8192, hdr, 8192, true);
    ASSERT_ERR(mpx_queue_attach(&a, m), MPX_EBADSEG);
    close(m);
    /* The same bytes in a segment big enough: a copy of an idle queue is a queue. */
    m = sealed_memfd(4096 + 256 * 1024, hdr, 8192, true);
    ASSERT_OK(mpx_queue_attach(&a, m));
    ASSERT_EQ_UINT(qsize(a), 0);
    mpx_queue_destroy(a);
    close(m);
    free(hdr);
    mpx_queue_destroy(q);
}

TEST(attach_refuses_corrupted_header)
{
    mpx_queue *q = qnew(3, 0);
    ASSERT_OK(put_msg(q, 1, 0, 10, MPX_NOWAIT));
    int fd = mpx_queue_fd(q);
    uint32_t *h = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ASSERT(h != MAP_FAILED);
    mpx_queue *a = NULL;
    /* Header: magic, version, header size. */
    uint32_t saved[3] = {h[0], h[1], h[2]};
    ASSERT_EQ_UINT(h[0], 0x5158504du);
    ASSERT_EQ_UINT(h[1], 2);
    for (int bit = 0; bit < 32; bit += 3) {
        h[0] = saved[0] ^ (1u << bit);
        ASSERT_ERR(mpx_queue_attach(&a, fd), MPX_EBADSEG);
    }
    h[0] = 0;
    ASSERT_ERR(mpx_queue_attach(&a, fd), MPX_EBADSEG);
    h[0] = saved[0];
    uint32_t versions[] = {0, 1, 3, 0xffffffffu};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        h[1] = versions[i];
        ASSERT_ERR(mpx_queue_attach(&a, fd), MPX_EVERSION);
    }
    h[1] = saved[1];
    h[2] = 8192;
    ASSERT_ERR(mpx_queue_attach(&a, fd), MPX_EBADSEG);
    h[2] = saved[2];
    /* Repaired: attaches again and sees the message. */
    ASSERT_OK(mpx_queue_attach(&a, fd));
    ASSERT_NOT_NULL(a);
    ASSERT(mpx_queue_fd(a) != fd); /* its own duplicate */
    ASSERT_EQ_UINT(mpx_queue_maxsize(a), 3);
    expect_msg(a, 1, 0, MPX_NOWAIT);
    mpx_queue_destroy(a);
    munmap(h, 4096);
    mpx_queue_destroy(q);
}

TEST(attach_handles_are_independent)
{
    mpx_queue *q = qnew(0, 0);
    mpx_queue *a = NULL;
    ASSERT_OK(mpx_queue_attach(&a, mpx_queue_fd(q)));
    ASSERT_OK(put_msg(q, 1, 0, 5, MPX_NOWAIT));
    ASSERT_EQ_UINT(qsize(a), 1);
    /* The queue outlives the handle that created it. */
    mpx_queue_destroy(q);
    ASSERT_OK(put_msg(a, 1, 1, 5, MPX_NOWAIT));
    expect_msg(a, 1, 0, MPX_NOWAIT);
    expect_msg(a, 1, 1, MPX_NOWAIT);
    mpx_queue_destroy(a);
}

/* ---------------------------------------------------------------------------------------
 * FIFO across processes
 */

TEST(fifo_in_process_varied_sizes)
{
    mpx_queue *q = qnew(0, 4096);
    for (int round = 0; round < 3; round++) {
        for (uint64_t i = 0; i < 500; i++)
            ASSERT_OK(put_msg(q, 1, i, (size_t)(i * 37 % 3001), MPX_NOWAIT));
        ASSERT_EQ_UINT(qsize(q), 500);
        for (uint64_t i = 0; i < 500; i++)
            expect_msg(q, 1, i, MPX_NOWAIT);
        ASSERT_EQ_UINT(qsize(q), 0);
    }
    /* putv gathers the pieces back to back. */
    size_t len;
    unsigned char *b = msg_new(2, 7, 1000, &len);
    struct iovec v[5] = {{b, 3}, {b + 3, 0}, {b + 3, 29}, {b + 32, 500}, {b + 532, len - 532}};
    ASSERT_OK(mpx_queue_putv(q, v, 5, MPX_NOWAIT));
    expect_msg(q, 2, 7, MPX_NOWAIT);
    free(b);
    mpx_queue_destroy(q);
}

TEST(fifo_across_fork)
{
    enum { N = 5000 };
    mpx_queue *q = qnew(0, 0);
    /* Child produces, parent consumes. */
    pid_t pid = th_fork();
    if (pid == 0) {
        for (uint64_t i = 0; i < N; i++)
            ASSERT_OK(put_msg(q, 1, i, (size_t)(i * 13 % 700), MPX_FOREVER));
        _exit(0);
    }
    for (uint64_t i = 0; i < N; i++)
        expect_msg(q, 1, i, mpx_deadline_in(20 * SEC));
    th_wait_ok(pid, 20);
    /* Parent produces, child consumes (bounded, so the producer blocks now and then). */
    mpx_queue *b = qnew(8, 0);
    pid = th_fork();
    if (pid == 0) {
        for (uint64_t i = 0; i < N; i++)
            expect_msg(b, 2, i, mpx_deadline_in(20 * SEC));
        _exit(0);
    }
    for (uint64_t i = 0; i < N; i++)
        ASSERT_OK(put_msg(b, 2, i, (size_t)(i % 100), mpx_deadline_in(20 * SEC)));
    th_wait_ok(pid, 20);
    ASSERT_EQ_UINT(qsize(b), 0);
    ASSERT_EQ_UINT(qsize(q), 0);
    mpx_queue_destroy(b);
    mpx_queue_destroy(q);
}

/* Helper: attaches to the queues on fds argv[0] (in) and argv[1] (out), checks the maxsize
 * argv[3], then echoes argv[2] messages from producer 1 as producer 2. */
HELPER(echo)
{
    ASSERT_EQ_INT(argc, 4);
    mpx_queue *in = NULL, *out = NULL;
    ASSERT_OK(mpx_queue_attach(&in, atoi(argv[0])));
    ASSERT_OK(mpx_queue_attach(&out, atoi(argv[1])));
    ASSERT_EQ_UINT(mpx_queue_maxsize(in), strtoull(argv[3], NULL, 10));
    long n = atol(argv[2]);
    for (long i = 0; i < n; i++) {
        struct id id;
        size_t len;
        ASSERT_OK(get_msg(in, mpx_deadline_in(20 * SEC), &id, &len));
        ASSERT_MSG(id.p == 1 && id.s == (uint64_t)i, "echo got %u:%llu at %ld", id.p,
                   (unsigned long long)id.s, i);
        ASSERT_OK(put_msg(out, 2, id.s, len - MSG_HEAD, mpx_deadline_in(20 * SEC)));
    }
    mpx_queue_destroy(in);
    mpx_queue_destroy(out);
    return 0;
}

TEST(fifo_exec_helper_attach)
{
    enum { N = 3000 };
    mpx_queue *in = qnew(16, 0), *out = qnew(0, 4096);
    char a0[16], a1[16], a2[16];
    fd_arg(a0, sizeof a0, mpx_queue_fd(in));
    fd_arg(a1, sizeof a1, mpx_queue_fd(out));
    snprintf(a2, sizeof a2, "%d", N);
    const char *args[] = {a0, a1, a2, "16", NULL};
    int fds[2] = {mpx_queue_fd(in), mpx_queue_fd(out)};
    pid_t pid = th_spawn_helper("echo", args, fds, 2, NULL);
    /* The descriptors are still close-on-exec here; only the child cleared the flag. */
    ASSERT(fcntl(fds[0], F_GETFD) & FD_CLOEXEC);
    for (uint64_t i = 0; i < N; i++)
        ASSERT_OK(put_msg(in, 1, i, (size_t)(i * 31 % 2000), mpx_deadline_in(20 * SEC)));
    for (uint64_t i = 0; i < N; i++)
        expect_msg(out, 2, i, mpx_deadline_in(20 * SEC));
    th_wait_ok(pid, 20);
    mpx_queue_destroy(in);
    mpx_queue_destroy(out);
}

/* ---------------------------------------------------------------------------------------
 * Non-blocking, deadlines, blocking and waking
 */

TEST(nowait_gives_eagain)
{
    mpx_queue *q = qnew(2, 0);
    void *d;
    size_t l, got;
    struct collect c = {.fail_at = SIZE_MAX};
    ASSERT_ERR(mpx_queue_get(q, &d, &l, MPX_NOWAIT), -EAGAIN);
    ASSERT_ERR(mpx_queue_get_with(q, collect_fn, &c, 0, MPX_NOWAIT), -EAGAIN);
    ASSERT_ERR(mpx_queue_get_many_with(q, 5, collect_fn, &c, &got, 0, MPX_NOWAIT), -EAGAIN);
    ASSERT_EQ_UINT(got, 0);
    ASSERT_ERR(mpx_queue_join(q, MPX_NOWAIT), 0);
    prefill(q, 1, 2, 10);
    ASSERT_ERR(put_msg(q, 1, 2, 10, MPX_NOWAIT), -EAGAIN);
    struct iovec v = {"abc", 3};
    mpx_msgv m = {&v, 1};
    ASSERT_ERR(mpx_queue_put_many(q, &m, 1, MPX_NOWAIT), -EAGAIN);
    ASSERT_ERR(mpx_queue_join(q, MPX_NOWAIT), -EAGAIN);
    ASSERT_EQ_UINT(qsize(q), 2);
    expect_msg(q, 1, 0, MPX_NOWAIT);
    /* A deadline already in the past is a timeout, not "would block". */
    ASSERT_OK(put_msg(q, 1, 2, 10, mpx_now() - 1)); /* room: no wait needed */
    ASSERT_ERR(put_msg(q, 1, 3, 10, mpx_now() - 1), -ETIMEDOUT);
    expect_msg(q, 1, 1, mpx_now() - 1);
    expect_msg(q, 1, 2, mpx_now() - 1);
    ASSERT_ERR(mpx_queue_get(q, &d, &l, mpx_now() - 1), -ETIMEDOUT);
    mpx_queue_destroy(q);
}

static void assert_elapsed(int64_t t0, int64_t want_ns)
{
    int64_t el = th_now_ns() - t0;
    ASSERT_MSG(el >= want_ns - 2 * MS, "returned after %.1f ms, before the deadline (%.1f ms)",
               el / 1e6, want_ns / 1e6);
    ASSERT_MSG(el < want_ns + 5 * SEC, "returned after %.1f ms, long after the deadline", el / 1e6);
}

TEST(deadline_gives_etimedout)
{
    mpx_queue *q = qnew(1, 0);
    void *d;
    size_t l, got;
    struct collect c = {.fail_at = SIZE_MAX};
    int64_t t0 = th_now_ns();
    ASSERT_ERR(mpx_queue_get(q, &d, &l, mpx_deadline_in(200 * MS)), -ETIMEDOUT);
    assert_elapsed(t0, 200 * MS);
    t0 = th_now_ns();
    ASSERT_ERR(mpx_queue_get_many_with(q, 3, collect_fn, &c, &got, 0, mpx_deadline_in(100 * MS)),
               -ETIMEDOUT);
    assert_elapsed(t0, 100 * MS);
    t0 = th_now_ns();
    ASSERT_ERR(mpx_queue_wait(q, MPX_QUEUE_NONEMPTY, 1, mpx_deadline_in(100 * MS)), -ETIMEDOUT);
    assert_elapsed(t0, 100 * MS);

    ASSERT_OK(put_msg(q, 1, 0, 10, MPX_NOWAIT));
    t0 = th_now_ns();
    ASSERT_ERR(put_msg(q, 1, 1, 10, mpx_deadline_in(150 * MS)), -ETIMEDOUT);
    assert_elapsed(t0, 150 * MS);
    t0 = th_now_ns();
    ASSERT_ERR(mpx_queue_wait(q, MPX_QUEUE_NONFULL, 1, mpx_deadline_in(100 * MS)), -ETIMEDOUT);
    assert_elapsed(t0, 100 * MS);
    t0 = th_now_ns();
    ASSERT_ERR(mpx_queue_join(q, mpx_deadline_in(100 * MS)), -ETIMEDOUT);
    assert_elapsed(t0, 100 * MS);
    ASSERT_EQ_UINT(qsize(q), 1);
    mpx_queue_destroy(q);
}

TEST(blocking_put_woken_by_consumer_process)
{
    mpx_queue *q = qnew(2, 0);
    prefill(q, 1, 2, 50);
    pid_t producer = th_fork();
    if (producer == 0) {
        ASSERT_OK(put_msg(q, 2, 0, 50, mpx_deadline_in(20 * SEC)));
        _exit(0);
    }
    th_sleep_ms(200);
    ASSERT_MSG(th_running(producer), "put on a full queue did not block");
    ASSERT_EQ_UINT(qsize(q), 2);
    pid_t consumer = th_fork();
    if (consumer == 0) {
        expect_msg(q, 1, 0, MPX_NOWAIT);
        _exit(0);
    }
    th_wait_ok(consumer, 10);
    th_wait_ok(producer, 10);
    struct id want[] = {{1, 1}, {2, 0}};
    drain_check(q, want, 2, false);
    mpx_queue_destroy(q);
}

TEST(blocking_get_woken_by_producer_process)
{
    mpx_queue *q = qnew(0, 0);
    pid_t consumer = th_fork();
    if (consumer == 0) {
        expect_msg(q, 3, 9, MPX_FOREVER);
        _exit(0);
    }
    th_sleep_ms(150);
    ASSERT(th_running(consumer));
    pid_t producer = th_fork();
    if (producer == 0) {
        ASSERT_OK(put_msg(q, 3, 9, 100, MPX_NOWAIT));
        _exit(0);
    }
    th_wait_ok(producer, 10);
    th_wait_ok(consumer, 10);
    ASSERT_EQ_UINT(qsize(q), 0);
    mpx_queue_destroy(q);
}

static void on_usr1(int sig) { (void)sig; }

TEST(blocking_get_interrupted_by_signal)
{
    mpx_queue *q = qnew(0, 0);
    int p[2];
    ASSERT_SYS(pipe2(p, O_CLOEXEC | O_NONBLOCK));
    pid_t pid = th_fork();
    if (pid == 0) {
        struct sigaction sa = {.sa_handler = on_usr1}; /* no SA_RESTART */
        sigaction(SIGUSR1, &sa, NULL);
        ASSERT_EQ_INT(write(p[1], "r", 1), 1);
        void *d;
        size_t l;
        ASSERT_ERR(mpx_queue_get(q, &d, &l, MPX_FOREVER), -EINTR);
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, SIGUSR1);
        sigprocmask(SIG_BLOCK, &s, NULL);
        ASSERT_EQ_INT(write(p[1], "i", 1), 1);
        expect_msg(q, 1, 0, mpx_deadline_in(20 * SEC));
        _exit(0);
    }
    char c = 0;
    int64_t end = th_now_ns() + 20 * SEC;
    while (read(p[0], &c, 1) != 1) { /* the handler is installed */
        ASSERT_MSG(th_now_ns() < end, "the child never got ready");
        th_sleep_ms(1);
    }
    ASSERT_EQ_INT(c, 'r');
    while (read(p[0], &c, 1) != 1) {
        ASSERT_MSG(th_now_ns() < end, "the blocked get never returned -EINTR");
        ASSERT(th_running(pid));
        kill(pid, SIGUSR1);
        th_sleep_ms(20);
    }
    ASSERT_OK(put_msg(q, 1, 0, 10, MPX_NOWAIT));
    th_wait_ok(pid, 20);
    close(p[0]);
    close(p[1]);
    mpx_queue_destroy(q);
}

/* ---------------------------------------------------------------------------------------
 * Batches
 */

static mpx_msgv *batch_new(uint32_t producer, uint64_t first_seq, size_t n, size_t payload,
                           unsigned char ***bufs)
{
    mpx_msgv *m = calloc(n, sizeof *m);
    struct iovec *v = calloc(n, sizeof *v);
    *bufs = calloc(n, sizeof **bufs);
    ASSERT(m && v && *bufs);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        (*bufs)[i] = msg_new(producer, first_seq + i, payload + i * 3, &len);
        v[i] = (struct iovec){(*bufs)[i], len};
        m[i] = (mpx_msgv){&v[i], 1};
    }
    return m;
}

static void batch_free(mpx_msgv *m, size_t n, unsigned char **bufs)
{
    for (size_t i = 0; i < n; i++)
        free(bufs[i]);
    free(bufs);
    free((void *)m[0].iov);
    free(m);
}

TEST(put_many_contiguous_with_concurrent_producers)
{
    /* Each producer puts batches of 1..10 messages whose seq encodes (batch, index, size);
     * the single consumer sees every batch contiguous and every producer in order. */
    enum { P = 3, BATCHES = 300 };
    mpx_queue *q = qnew(0, 16384);
    pid_t pids[P];
    for (int p = 0; p < P; p++) {
        pids[p] = th_fork();
        if (pids[p] == 0) {
            uint64_t rs = (uint64_t)p * 7 + 1;
            for (uint64_t b = 0; b < BATCHES; b++) {
                size_t n = 1 + th_rand(&rs) % 10;
                mpx_msgv *m = calloc(n, sizeof *m);
                struct iovec *v = calloc(n, sizeof *v);
                unsigned char **bufs = calloc(n, sizeof *bufs);
                ASSERT(m && v && bufs);
                for (size_t i = 0; i < n; i++) {
                    size_t len;
                    bufs[i] = msg_new((uint32_t)p, b << 16 | i << 8 | n, th_rand(&rs) % 500, &len);
                    v[i] = (struct iovec){bufs[i], len};
                    m[i] = (mpx_msgv){&v[i], 1};
                }
                ASSERT_OK(mpx_queue_put_many(q, m, n, MPX_FOREVER));
                for (size_t i = 0; i < n; i++)
                    free(bufs[i]);
                free(bufs);
                free(v);
                free(m);
            }
            _exit(0);
        }
    }
    uint64_t next_batch[P] = {0};
    int done = 0;
    while (done < P) {
        struct id id;
        ASSERT_OK(get_msg(q, mpx_deadline_in(20 * SEC), &id, NULL));
        ASSERT(id.p < P);
        uint64_t b = id.s >> 16, i = (id.s >> 8) & 0xff, n = id.s & 0xff;
        ASSERT_MSG(b == next_batch[id.p] && i == 0,
                   "producer %u: got batch %llu index %llu, want batch %llu index 0", id.p,
                   (unsigned long long)b, (unsigned long long)i,
                   (unsigned long long)next_batch[id.p]);
        for (uint64_t k = 1; k < n; k++) {
            struct id id2;
            ASSERT_OK(get_msg(q, mpx_deadline_in(20 * SEC), &id2, NULL));
            ASSERT_MSG(id2.p == id.p && id2.s == (b << 16 | k << 8 | n),
                       "batch %u/%llu interrupted at index %llu by %u:%#llx", id.p,
                       (unsigned long long)b, (unsigned long long)k, id2.p,
                       (unsigned long long)id2.s);
        }
        if (++next_batch[id.p] == BATCHES)
            done++;
    }
    for (int p = 0; p < P; p++)
        th_wait_ok(pids[p], 20);
    ASSERT_EQ_UINT(qsize(q), 0);
    mpx_queue_destroy(q);
}

TEST(put_many_limits_and_atomicity)
{
    mpx_queue *q = qnew(4, 0);
    unsigned char **bufs1, **bufs2, **bufs3;
    mpx_msgv *m = batch_new(1, 0, 5, 20, &bufs1);
    ASSERT_ERR(mpx_queue_put_many(q, m, 5, MPX_NOWAIT), MPX_ETOOBIG);
    ASSERT_ERR(mpx_queue_put_many(q, m, 5, MPX_FOREVER), MPX_ETOOBIG);
    ASSERT_ERR(mpx_queue_wait(q, MPX_QUEUE_NONFULL, 5, MPX_FOREVER), MPX_ETOOBIG);
    ASSERT_EQ_UINT(qsize(q), 0);
    ASSERT_OK(mpx_queue_put_many(q, m, 4, MPX_NOWAIT));
    ASSERT_EQ_UINT(qsize(q), 4);
    ASSERT_EQ_UINT(qunfinished(q), 4);
    expect_msg(q, 1, 0, MPX_NOWAIT);
    /* Room for one, not two: all or nothing. */
    ASSERT_ERR(mpx_queue_put_many(q, m, 2, MPX_NOWAIT), -EAGAIN);
    ASSERT_ERR(mpx_queue_put_many(q, m, 2, mpx_deadline_in(50 * MS)), -ETIMEDOUT);
    ASSERT_EQ_UINT(qsize(q), 3);
    /* A batch waits for room for all of it, freed by a consumer in another process. */
    pid_t pid = th_fork();
    if (pid == 0) {
        th_sleep_ms(100);
        expect_msg(q, 1, 1, MPX_NOWAIT);
        _exit(0);
    }
    mpx_msgv *m2 = batch_new(2, 0, 2, 20, &bufs2);
    ASSERT_OK(mpx_queue_put_many(q, m2, 2, mpx_deadline_in(20 * SEC)));
    th_wait_ok(pid, 10);
    struct id want[] = {{1, 2}, {1, 3}, {2, 0}, {2, 1}};
    drain_check(q, want, 4, false);
    batch_free(m2, 2, bufs2);
    batch_free(m, 5, bufs1);
    mpx_queue_destroy(q);

    /* Unbounded: a batch far larger than the ring. */
    q = qnew(0, 4096);
    mpx_msgv *big = batch_new(3, 0, 200, 300, &bufs3);
    ASSERT_OK(mpx_queue_put_many(q, big, 200, MPX_NOWAIT));
    ASSERT_EQ_UINT(qsize(q), 200);
    for (uint64_t i = 0; i < 200; i++)
        expect_msg(q, 3, i, MPX_NOWAIT);
    batch_free(big, 200, bufs3);
    mpx_queue_destroy(q);
}

TEST(get_many_with_limits)
{
    mpx_queue *q = qnew(0, 0);
    prefill(q, 1, 10, 30);
    struct collect c = {.fail_at = SIZE_MAX};
    size_t got = 99;
    ASSERT_OK(mpx_queue_get_many_with(q, 3, collect_fn, &c, &got, 0, MPX_NOWAIT));
    ASSERT_EQ_UINT(got, 3);
    ASSERT_EQ_UINT(qsize(q), 7);
    ASSERT_OK(mpx_queue_get_many_with(q, 100, collect_fn, &c, &got, 0, MPX_NOWAIT));
    ASSERT_EQ_UINT(got, 7);
    ASSERT_EQ_UINT(c.n, 10);
    for (size_t i = 0; i < 10; i++)
        ASSERT(c.ids[i].p == 1 && c.ids[i].s == i);
    /* Waits only for the first message. */
    ASSERT_OK(put_msg(q, 1, 10, 30, MPX_NOWAIT));
    int64_t t0 = th_now_ns();
    ASSERT_OK(mpx_queue_get_many_with(q, 50, collect_fn, &c, &got, 0, mpx_deadline_in(10 * SEC)));
    ASSERT_EQ_UINT(got, 1);
    ASSERT_LT_INT(th_now_ns() - t0, 5 * SEC);
    /* Waits for the first message put by another process. */
    pid_t pid = th_fork();
    if (pid == 0) {
        th_sleep_ms(100);
        prefill(q, 2, 3, 5);
        _exit(0);
    }
    c.n = 0;
    ASSERT_OK(mpx_queue_get_many_with(q, 50, collect_fn, &c, &got, 0, mpx_deadline_in(20 * SEC)));
    ASSERT(got >= 1 && got <= 3);
    th_wait_ok(pid, 10);
    ASSERT_EQ_UINT(qsize(q), 3 - got);
    ASSERT_EQ_UINT(qunfinished(q), 14);
    mpx_queue_destroy(q);
}

TEST(consume_error_leaves_message)
{
    mpx_queue *q = qnew(0, 0);
    prefill(q, 1, 5, 40);
    struct collect c = {.fail_at = 0, .err = -EIO};
    size_t got = 99;
    ASSERT_ERR(mpx_queue_get_with(q, collect_fn, &c, 0, MPX_NOWAIT), -EIO);
    ASSERT_ERR(mpx_queue_get_many_with(q, 4, collect_fn, &c, &got, 0, MPX_NOWAIT), -EIO);
    ASSERT_EQ_UINT(got, 0);
    c.err = MPX_ETOOBIG; /* any negative code comes back as is */
    ASSERT_ERR(mpx_queue_get_with(q, collect_fn, &c, 0, mpx_deadline_in(SEC)), MPX_ETOOBIG);
    ASSERT_EQ_UINT(qsize(q), 5);
    /* Fails on the third: the first two are consumed, the call succeeds with them. */
    c = (struct collect){.fail_at = 2, .err = -ENOMEM};
    ASSERT_OK(mpx_queue_get_many_with(q, 4, collect_fn, &c, &got, 0, MPX_NOWAIT));
    ASSERT_EQ_UINT(got, 2);
    ASSERT_EQ_UINT(qsize(q), 3);
    struct id want[] = {{1, 2}, {1, 3}, {1, 4}};
    drain_check(q, want, 3, false);
    mpx_queue_destroy(q);
}

/* ---------------------------------------------------------------------------------------
 * Size, close, join, trylock, wait
 */

TEST(size_is_exact)
{
    mpx_queue *q = qnew(0, 4096);
    uint64_t model = 0, rs = 7, seq_in = 0, seq_out = 0;
    for (int i = 0; i < 3000; i++) {
        if (th_rand(&rs) % 100 < 55) {
            ASSERT_OK(put_msg(q, 1, seq_in++, th_rand(&rs) % 300, MPX_NOWAIT));
            model++;
        } else if (model) {
            expect_msg(q, 1, seq_out++, MPX_NOWAIT);
            model--;
        }
        ASSERT_EQ_UINT(qsize(q), model);
    }
    /* Seen from another process. */
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_EQ_UINT(qsize(q), model);
        _exit(0);
    }
    th_wait_ok(pid, 10);
    mpx_queue_destroy(q);
}

TEST(close_semantics)
{
    mpx_queue *q = qnew(0, 0);
    prefill(q, 1, 3, 20);
    ASSERT_EQ_INT(mpx_queue_is_closed(q), 0);
    ASSERT_OK(mpx_queue_close(q));
    ASSERT_OK(mpx_queue_close(q)); /* idempotent */
    ASSERT_EQ_INT(mpx_queue_is_closed(q), 1);
    ASSERT_ERR(put_msg(q, 1, 3, 20, MPX_NOWAIT), MPX_ECLOSED);
    ASSERT_ERR(put_msg(q, 1, 3, 20, MPX_FOREVER), MPX_ECLOSED);
    struct iovec v = {"abc", 3};
    mpx_msgv m = {&v, 1};
    ASSERT_ERR(mpx_queue_putv(q, &v, 1, MPX_NOWAIT), MPX_ECLOSED);
    ASSERT_ERR(mpx_queue_put_many(q, &m, 1, MPX_NOWAIT), MPX_ECLOSED);
    ASSERT_OK(mpx_queue_wait(q, MPX_QUEUE_NONEMPTY, 1, MPX_NOWAIT));
    ASSERT_OK(mpx_queue_wait(q, MPX_QUEUE_NONFULL, 1, MPX_NOWAIT));
    /* Gets drain what is left, then report the closure, never -EAGAIN. */
    expect_msg(q, 1, 0, MPX_NOWAIT);
    expect_msg(q, 1, 1, MPX_FOREVER);
    expect_msg(q, 1, 2, MPX_NOWAIT);
    void *d;
    size_t l, got;
    struct collect c = {.fail_at = SIZE_MAX};
    ASSERT_ERR(mpx_queue_get(q, &d, &l, MPX_NOWAIT), MPX_ECLOSED);
    ASSERT_ERR(mpx_queue_get(q, &d, &l, MPX_FOREVER), MPX_ECLOSED);
    ASSERT_ERR(mpx_queue_get_many_with(q, 3, collect_fn, &c, &got, 0, MPX_NOWAIT), MPX_ECLOSED);
    ASSERT_OK(mpx_queue_wait(q, MPX_QUEUE_NONEMPTY, 1, MPX_FOREVER));
    /* Join bookkeeping is unaffected. */
    ASSERT_EQ_UINT(qunfinished(q), 3);
    ASSERT_OK(mpx_queue_task_done(q));
    ASSERT_EQ_UINT(qsize(q), 0);
    /* Seen closed from a process that attaches afterwards. */
    pid_t pid = th_fork();
    if (pid == 0) {
        mpx_queue *a;
        ASSERT_OK(mpx_queue_attach(&a, mpx_queue_fd(q)));
        ASSERT_EQ_INT(mpx_queue_is_closed(a), 1);
        ASSERT_ERR(put_msg(a, 1, 0, 1, MPX_NOWAIT), MPX_ECLOSED);
        mpx_queue_destroy(a);
        _exit(0);
    }
    th_wait_ok(pid, 10);
    mpx_queue_destroy(q);
}

TEST(close_wakes_sleepers_in_other_processes)
{
    mpx_queue *empty = qnew(0, 0), *full = qnew(1, 0);
    ASSERT_OK(put_msg(full, 1, 0, 10, MPX_NOWAIT));
    pid_t kids[4];
    kids[0] = th_fork();
    if (kids[0] == 0) {
        void *d;
        size_t l;
        ASSERT_ERR(mpx_queue_get(empty, &d, &l, MPX_FOREVER), MPX_ECLOSED);
        _exit(0);
    }
    kids[1] = th_fork();
    if (kids[1] == 0) {
        ASSERT_ERR(put_msg(full, 1, 1, 10, MPX_FOREVER), MPX_ECLOSED);
        _exit(0);
    }
    kids[2] = th_fork();
    if (kids[2] == 0) {
        ASSERT_OK(mpx_queue_wait(empty, MPX_QUEUE_NONEMPTY, 1, MPX_FOREVER));
        ASSERT_EQ_INT(mpx_queue_is_closed(empty), 1);
        _exit(0);
    }
    kids[3] = th_fork();
    if (kids[3] == 0) {
        ASSERT_OK(mpx_queue_wait(full, MPX_QUEUE_NONFULL, 1, MPX_FOREVER));
        ASSERT_EQ_INT(mpx_queue_is_closed(full), 1);
        _exit(0);
    }
    th_sleep_ms(200);
    for (int i = 0; i < 4; i++)
        ASSERT_MSG(th_running(kids[i]), "sleeper %d returned before the close", i);
    /* Closed by yet another process. */
    pid_t closer = th_fork();
    if (closer == 0) {
        ASSERT_OK(mpx_queue_close(empty));
        ASSERT_OK(mpx_queue_close(full));
        _exit(0);
    }
    th_wait_ok(closer, 10);
    for (int i = 0; i < 4; i++)
        th_wait_ok(kids[i], 10);
    ASSERT_EQ_UINT(qsize(full), 1);
    mpx_queue_destroy(empty);
    mpx_queue_destroy(full);
}

TEST(task_done_and_join)
{
    mpx_queue *q = qnew(0, 0);
    ASSERT_OK(mpx_queue_join(q, MPX_NOWAIT)); /* nothing unfinished */
    ASSERT_ERR(mpx_queue_task_done(q), MPX_ETOOMANY);
    prefill(q, 1, 3, 10);
    ASSERT_EQ_UINT(qunfinished(q), 3);
    expect_msg(q, 1, 0, MPX_NOWAIT);
    ASSERT_EQ_UINT(qunfinished(q), 3); /* a get is not a task_done */
    ASSERT_OK(mpx_queue_task_done(q));
    ASSERT_EQ_UINT(qunfinished(q), 2);
    ASSERT_ERR(mpx_queue_join(q, MPX_NOWAIT), -EAGAIN);

    /* A worker process finishes the rest; joiners in this and another process wake. */
    pid_t joiner = th_fork();
    if (joiner == 0) {
        ASSERT_OK(mpx_queue_join(q, mpx_deadline_in(20 * SEC)));
        ASSERT_EQ_UINT(qunfinished(q), 0);
        _exit(0);
    }
    pid_t worker = th_fork();
    if (worker == 0) {
        th_sleep_ms(150);
        for (int i = 0; i < 2; i++) {
            struct id id;
            ASSERT_OK(get_msg(q, MPX_NOWAIT, &id, NULL));
            th_sleep_ms(20);
            ASSERT_OK(mpx_queue_task_done(q));
        }
        _exit(0);
    }
    int64_t t0 = th_now_ns();
    ASSERT_OK(mpx_queue_join(q, mpx_deadline_in(20 * SEC)));
    ASSERT_GE_INT(th_now_ns() - t0, 100 * MS);
    ASSERT_EQ_UINT(qunfinished(q), 0);
    th_wait_ok(worker, 10);
    th_wait_ok(joiner, 10);
    ASSERT_ERR(mpx_queue_task_done(q), MPX_ETOOMANY);
    ASSERT_EQ_UINT(qunfinished(q), 0);
    ASSERT_OK(mpx_queue_join(q, MPX_FOREVER));
    /* put_many counts every message. */
    unsigned char **bufs;
    mpx_msgv *m = batch_new(2, 0, 4, 8, &bufs);
    ASSERT_OK(mpx_queue_put_many(q, m, 4, MPX_NOWAIT));
    ASSERT_EQ_UINT(qunfinished(q), 4);
    for (int i = 0; i < 4; i++)
        ASSERT_OK(mpx_queue_task_done(q)); /* task_done before get is allowed */
    ASSERT_ERR(mpx_queue_task_done(q), MPX_ETOOMANY);
    ASSERT_EQ_UINT(qsize(q), 4);
    batch_free(m, 4, bufs);
    mpx_queue_destroy(q);
}

/* A consume callback that reports "holding the lock" on one pipe and then waits for a byte
 * on another before consuming. */
struct hold {
    int tell, go;
};

static int hold_fn(void *ctx, const void *msg, size_t len)
{
    struct hold *h = ctx;
    ASSERT_MSG_OK(msg, len, NULL);
    ASSERT_EQ_INT(write(h->tell, "h", 1), 1);
    char c;
    ASSERT_EQ_INT(read(h->go, &c, 1), 1);
    return 0;
}

/* Forks a child that sits inside a consume callback, i.e. holds the queue's lock, until a
 * byte is written to *go_w. */
static pid_t fork_lock_holder(mpx_queue *q, int *go_w)
{
    int tell[2], go[2];
    ASSERT_SYS(pipe2(tell, O_CLOEXEC));
    ASSERT_SYS(pipe2(go, O_CLOEXEC));
    pid_t pid = th_fork();
    if (pid == 0) {
        struct hold h = {tell[1], go[0]};
        ASSERT_OK(mpx_queue_get_with(q, hold_fn, &h, 0, MPX_NOWAIT));
        _exit(0);
    }
    close(tell[1]);
    close(go[0]);
    char c;
    ASSERT_EQ_INT(read(tell[0], &c, 1), 1);
    close(tell[0]);
    *go_w = go[1];
    return pid;
}

TEST(trylock_busy_while_another_process_holds_lock)
{
    mpx_queue *q = qnew(0, 0);
    prefill(q, 1, 3, 100);
    int go;
    pid_t holder = fork_lock_holder(q, &go);
    struct collect c = {.fail_at = SIZE_MAX};
    size_t got;
    struct iovec v = {"abc", 3};
    mpx_msgv m = {&v, 1};
    ASSERT_ERR(mpx_queue_get_with(q, collect_fn, &c, MPX_QUEUE_TRYLOCK, MPX_FOREVER), -EBUSY);
    ASSERT_ERR(mpx_queue_get_many_with(q, 2, collect_fn, &c, &got, MPX_QUEUE_TRYLOCK, MPX_NOWAIT),
               -EBUSY);
    ASSERT_ERR(mpx_queue_put_many_ex(q, &m, 1, MPX_QUEUE_TRYLOCK, MPX_FOREVER), -EBUSY);
    /* Waiting for the lock honours the deadline. */
    int64_t t0 = th_now_ns();
    ASSERT_ERR(mpx_queue_wait(q, MPX_QUEUE_LOCKABLE, 0, mpx_deadline_in(100 * MS)), -ETIMEDOUT);
    assert_elapsed(t0, 100 * MS);
    ASSERT_ERR(mpx_queue_wait(q, MPX_QUEUE_LOCKABLE, 0, MPX_NOWAIT), -EAGAIN);
    t0 = th_now_ns();
    ASSERT_ERR(put_msg(q, 1, 3, 10, mpx_deadline_in(100 * MS)), -ETIMEDOUT);
    assert_elapsed(t0, 100 * MS);
    void *d;
    size_t l;
    ASSERT_ERR(mpx_queue_get(q, &d, &l, mpx_deadline_in(100 * MS)), -ETIMEDOUT);
    ASSERT_EQ_INT(c.n, 0);

    /* A process waiting for the lock gets it as soon as it is released. */
    pid_t waiter = th_fork();
    if (waiter == 0) {
        ASSERT_OK(mpx_queue_wait(q, MPX_QUEUE_LOCKABLE, 0, mpx_deadline_in(20 * SEC)));
        _exit(0);
    }
    th_sleep_ms(50);
    ASSERT(th_running(waiter));
    ASSERT_EQ_INT(write(go, "g", 1), 1);
    close(go);
    th_wait_ok(holder, 10);
    th_wait_ok(waiter, 10);
    /* Free lock: TRYLOCK behaves like MPX_NOWAIT. */
    ASSERT_OK(mpx_queue_wait(q, MPX_QUEUE_LOCKABLE, 0, MPX_NOWAIT));
    ASSERT_OK(mpx_queue_get_with(q, collect_fn, &c, MPX_QUEUE_TRYLOCK, MPX_FOREVER));
    ASSERT_EQ_INT(c.n, 1);
    ASSERT(c.ids[0].p == 1 && c.ids[0].s == 1);
    ASSERT_OK(mpx_queue_put_many_ex(q, &m, 1, MPX_QUEUE_TRYLOCK, MPX_NOWAIT));
    ASSERT_OK(mpx_queue_get_many_with(q, 1, collect_fn, &c, &got, MPX_QUEUE_TRYLOCK, MPX_FOREVER));
    ASSERT_EQ_UINT(got, 1); /* the checked message 1:2; "abc" is next */
    ASSERT_OK(mpx_queue_get(q, &d, &l, MPX_NOWAIT));
    ASSERT(l == 3 && memcmp(d, "abc", 3) == 0);
    free(d);
    /* Empty: TRYLOCK never sleeps. */
    ASSERT_ERR(mpx_queue_get_with(q, collect_fn, &c, MPX_QUEUE_TRYLOCK, MPX_FOREVER), -EAGAIN);
    ASSERT_ERR(mpx_queue_get_many_with(q, 2, collect_fn, &c, &got, MPX_QUEUE_TRYLOCK,
                                       mpx_deadline_in(10 * SEC)),
               -EAGAIN);
    mpx_queue_destroy(q);

    /* Full: a TRYLOCK put does not sleep either. */
    q = qnew(1, 0);
    ASSERT_OK(mpx_queue_put_many_ex(q, &m, 1, MPX_QUEUE_TRYLOCK, MPX_FOREVER));
    ASSERT_ERR(mpx_queue_put_many_ex(q, &m, 1, MPX_QUEUE_TRYLOCK, MPX_FOREVER), -EAGAIN);
    mpx_msgv two[2] = {m, m};
    ASSERT_ERR(mpx_queue_put_many_ex(q, two, 2, MPX_QUEUE_TRYLOCK, MPX_FOREVER), MPX_ETOOBIG);
    ASSERT_OK(mpx_queue_put_many_ex(q, &m, 0, MPX_QUEUE_TRYLOCK, MPX_FOREVER));
    mpx_queue_destroy(q);
}

TEST(lock_holder_killed_inside_callback)
{
    /* A process SIGKILLed while it holds the lock (inside a consume callback): the lock is
     * recovered by the next process to take it, the message it was reading stays queued,
     * and a process sleeping on the lock is let through. */
    mpx_queue *q = qnew(0, 0);
    prefill(q, 1, 2, 100);
    int go;
    pid_t holder = fork_lock_holder(q, &go);
    pid_t blocked = th_fork();
    if (blocked == 0) {
        /* Sleeps in the lock, not on a futex word of the queue. */
        ASSERT_OK(put_msg(q, 2, 0, 10, mpx_deadline_in(20 * SEC)));
        _exit(0);
    }
    th_sleep_ms(100);
    ASSERT(th_running(blocked));
    kill(holder, SIGKILL);
    th_wait_signaled(holder, SIGKILL, 10);
    th_wait_ok(blocked, 10);
    close(go);
    struct id want[] = {{1, 0}, {1, 1}, {2, 0}};
    drain_check(q, want, 3, false);
    mpx_queue_destroy(q);
}

TEST(wait_for_each_event)
{
    mpx_queue *q = qnew(2, 0);
    /* NONEMPTY */
    ASSERT_ERR(mpx_queue_wait(q, MPX_QUEUE_NONEMPTY, 1, MPX_NOWAIT), -EAGAIN);
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_OK(mpx_queue_wait(q, MPX_QUEUE_NONEMPTY, 0, mpx_deadline_in(20 * SEC)));
        ASSERT_EQ_UINT(qsize(q), 1);
        _exit(0);
    }
    th_sleep_ms(100);
    ASSERT(th_running(pid));
    ASSERT_OK(put_msg(q, 1, 0, 10, MPX_NOWAIT));
    th_wait_ok(pid, 10);
    ASSERT_OK(mpx_queue_wait(q, MPX_QUEUE_NONEMPTY, 1, MPX_NOWAIT));
    ASSERT_EQ_UINT(qsize(q), 1); /* waiting consumes nothing */

    /* NONFULL, with the room wanted */
    ASSERT_OK(mpx_queue_wait(q, MPX_QUEUE_NONFULL, 1, MPX_NOWAIT));
    ASSERT_ERR(mpx_queue_wait(q, MPX_QUEUE_NONFULL, 2, MPX_NOWAIT), -EAGAIN);
    ASSERT_ERR(mpx_queue_wait(q, MPX_QUEUE_NONFULL, 3, MPX_NOWAIT), MPX_ETOOBIG);
    ASSERT_OK(put_msg(q, 1, 1, 10, MPX_NOWAIT));
    ASSERT_ERR(mpx_queue_wait(q, MPX_QUEUE_NONFULL, 1, MPX_NOWAIT), -EAGAIN);
    ASSERT_OK(mpx_queue_wait(q, MPX_QUEUE_NONFULL, 0, MPX_NOWAIT));
    pid = th_fork();
    if (pid == 0) {
        ASSERT_OK(mpx_queue_wait(q, MPX_QUEUE_NONFULL, 2, mpx_deadline_in(20 * SEC)));
        ASSERT_EQ_UINT(qsize(q), 0);
        _exit(0);
    }
    th_sleep_ms(100);
    ASSERT(th_running(pid));
    expect_msg(q, 1, 0, MPX_NOWAIT);
    th_sleep_ms(100);
    ASSERT_MSG(th_running(pid), "room for 1 is not room for 2");
    expect_msg(q, 1, 1, MPX_NOWAIT);
    th_wait_ok(pid, 10);

    /* LOCKABLE */
    ASSERT_OK(mpx_queue_wait(q, MPX_QUEUE_LOCKABLE, 0, MPX_NOWAIT));
    ASSERT_OK(mpx_queue_wait(q, MPX_QUEUE_LOCKABLE, 0, MPX_FOREVER));
    mpx_queue_destroy(q);

    /* Unbounded: always room. */
    q = qnew(0, 0);
    ASSERT_OK(mpx_queue_wait(q, MPX_QUEUE_NONFULL, 1000000, MPX_NOWAIT));
    ASSERT_OK(mpx_queue_wait(q, MPX_QUEUE_NONFULL, UINT64_MAX, MPX_NOWAIT));
    mpx_queue_destroy(q);
}

/* ---------------------------------------------------------------------------------------
 * Unbounded queues, growth and wrap-around, large messages
 */

TEST(unbounded_put_never_blocks)
{
    enum { N = 100000 };
    mpx_queue *q = qnew(0, 0);
    uint64_t cap0 = qcap(q);
    for (uint64_t i = 0; i < N; i++)
        ASSERT_OK(put_msg(q, 1, i, (size_t)(i % 57), MPX_NOWAIT));
    ASSERT_EQ_UINT(qsize(q), N);
    ASSERT_EQ_UINT(qunfinished(q), N);
    ASSERT_GT_INT(qcap(q), cap0);
    /* Read back in batches by another process. */
    pid_t pid = th_fork();
    if (pid == 0) {
        struct collect c = {.fail_at = SIZE_MAX};
        uint64_t total = 0;
        while (total < N) {
            size_t got;
            c.n = 0;
            ASSERT_OK(mpx_queue_get_many_with(q, 64, collect_fn, &c, &got, 0, MPX_NOWAIT));
            ASSERT(got >= 1 && got <= 64);
            for (size_t i = 0; i < got; i++)
                ASSERT(c.ids[i].p == 1 && c.ids[i].s == total + i);
            total += got;
        }
        _exit(0);
    }
    th_wait_ok(pid, 30);
    ASSERT_EQ_UINT(qsize(q), 0);
    mpx_queue_destroy(q);
}

#define REC(len) (8 + (((len) + 7) & ~(size_t)7)) /* ring bytes of a message of len bytes */

TEST(wrap_then_grow_while_wrapped)
{
    /* 4 KiB ring, 1000-byte messages (1008-byte records): A B C fill [0, 3024); taking A
     * frees [0, 1008); D fits at the top [3024, 4032); E wraps to [0, 1008), leaving the
     * ring wrapped and full. F must grow the ring while it is wrapped. */
    mpx_queue *q = qnew(0, 4096);
    const size_t pl = 1000 - MSG_HEAD;
    ASSERT_EQ_UINT(REC(1000), 1008);
    for (uint64_t i = 0; i < 3; i++)
        ASSERT_OK(put_msg(q, 1, i, pl, MPX_NOWAIT));
    expect_msg(q, 1, 0, MPX_NOWAIT);
    ASSERT_OK(put_msg(q, 1, 3, pl, MPX_NOWAIT));
    ASSERT_OK(put_msg(q, 1, 4, pl, MPX_NOWAIT));
    ASSERT_EQ_UINT(qcap(q), 4096); /* wrapped, not grown */
    ASSERT_OK(put_msg(q, 1, 5, 3 * pl, MPX_NOWAIT));
    ASSERT_GT_INT(qcap(q), 4096);
    ASSERT_OK(put_msg(q, 1, 6, 10, MPX_NOWAIT));
    struct id want[] = {{1, 1}, {1, 2}, {1, 3}, {1, 4}, {1, 5}, {1, 6}};
    drain_check(q, want, 6, false);
    mpx_queue_destroy(q);
}

/* Raw messages: `len` bytes of `byte`, for exact control over record sizes (a record takes
 * REC(len) bytes of ring), including empty messages. */
static void put_raw(mpx_queue *q, size_t len, unsigned char byte)
{
    unsigned char *b = malloc(len ? len : 1);
    ASSERT_NOT_NULL(b);
    memset(b, byte, len);
    ASSERT_OK(mpx_queue_put(q, b, len, MPX_NOWAIT));
    free(b);
}

static void expect_raw(mpx_queue *q, size_t len, unsigned char byte)
{
    void *d = NULL;
    size_t l = 0;
    ASSERT_OK(mpx_queue_get(q, &d, &l, MPX_NOWAIT));
    ASSERT_MSG(l == len, "got a message of %zu bytes, want %zu (byte %#x)", l, len, byte);
    for (size_t i = 0; i < l; i++)
        ASSERT_MSG(((unsigned char *)d)[i] == byte, "byte %zu of %zu is %#x, want %#x", i, l,
                   ((unsigned char *)d)[i], byte);
    free(d);
}

/* The length of a message whose record takes exactly `rec` bytes (rec >= 8, a multiple of 8). */
#define LEN_FOR_REC(rec) ((size_t)(rec) - 8)

TEST(ring_boundaries_exact_fit)
{
    /* A: unwrapped, the new record fits exactly below head: it wraps, no growth. */
    mpx_queue *q = qnew(0, 4096);
    put_raw(q, LEN_FOR_REC(1024), 1);
    put_raw(q, LEN_FOR_REC(2048), 2);
    put_raw(q, LEN_FOR_REC(1016), 3); /* tail = 4088 */
    expect_raw(q, LEN_FOR_REC(1024), 1); /* head = 1024 */
    put_raw(q, LEN_FOR_REC(1024), 4);    /* [0, 1024): wrapped and full */
    ASSERT_EQ_UINT(qcap(q), 4096);
    put_raw(q, 0, 5); /* no room anywhere: grows while wrapped */
    ASSERT_GT_INT(qcap(q), 4096);
    expect_raw(q, LEN_FOR_REC(2048), 2);
    expect_raw(q, LEN_FOR_REC(1016), 3);
    expect_raw(q, LEN_FOR_REC(1024), 4);
    expect_raw(q, 0, 5);
    mpx_queue_destroy(q);

    /* B: unwrapped, the new record is 8 bytes too big for the room below head: grows. */
    q = qnew(0, 4096);
    put_raw(q, LEN_FOR_REC(1024), 1);
    put_raw(q, LEN_FOR_REC(2048), 2);
    put_raw(q, LEN_FOR_REC(1016), 3);
    expect_raw(q, LEN_FOR_REC(1024), 1);
    put_raw(q, LEN_FOR_REC(1032), 4);
    ASSERT_GT_INT(qcap(q), 4096);
    expect_raw(q, LEN_FOR_REC(2048), 2);
    expect_raw(q, LEN_FOR_REC(1016), 3);
    expect_raw(q, LEN_FOR_REC(1032), 4);
    mpx_queue_destroy(q);

    /* C: unwrapped, fits exactly at the top (tail + need == cap). */
    q = qnew(0, 4096);
    put_raw(q, LEN_FOR_REC(1024), 1);
    put_raw(q, LEN_FOR_REC(3072), 2);
    ASSERT_EQ_UINT(qcap(q), 4096);
    expect_raw(q, LEN_FOR_REC(1024), 1);
    expect_raw(q, LEN_FOR_REC(3072), 2);
    mpx_queue_destroy(q);

    /* D: wrapped, the gap [tail, head) is filled exactly, then 8 bytes more must grow. */
    for (int over = 0; over <= 1; over++) {
        q = qnew(0, 4096);
        put_raw(q, LEN_FOR_REC(1024), 1);
        put_raw(q, LEN_FOR_REC(1024), 2);
        put_raw(q, LEN_FOR_REC(1024), 3);
        put_raw(q, LEN_FOR_REC(1016), 4); /* tail = 4088 */
        expect_raw(q, LEN_FOR_REC(1024), 1);
        expect_raw(q, LEN_FOR_REC(1024), 2); /* head = 2048 */
        put_raw(q, LEN_FOR_REC(1024), 5);    /* wraps: [0, 1024) */
        put_raw(q, LEN_FOR_REC(1024 + 8 * (size_t)over), 6);
        if (over)
            ASSERT_GT_INT(qcap(q), 4096);
        else
            ASSERT_EQ_UINT(qcap(q), 4096); /* [1024, 2048): exactly the gap */
        put_raw(q, 3, 7);
        ASSERT_GT_INT(qcap(q), 4096);
        expect_raw(q, LEN_FOR_REC(1024), 3);
        expect_raw(q, LEN_FOR_REC(1016), 4);
        expect_raw(q, LEN_FOR_REC(1024), 5);
        expect_raw(q, LEN_FOR_REC(1024 + 8 * (size_t)over), 6);
        expect_raw(q, 3, 7);
        ASSERT_EQ_UINT(qsize(q), 0);
        mpx_queue_destroy(q);
    }

    /* E: an empty message is the last record before wrap_end: reading must not skip it. */
    q = qnew(0, 4096);
    put_raw(q, LEN_FOR_REC(1024), 1);
    put_raw(q, LEN_FOR_REC(2048), 2);
    put_raw(q, 0, 3);                 /* [3072, 3080) */
    put_raw(q, 0, 4);                 /* [3080, 3088) */
    expect_raw(q, LEN_FOR_REC(1024), 1);
    put_raw(q, LEN_FOR_REC(1024), 5); /* 1008 bytes left at the top: wraps to [0, 1024) */
    ASSERT_EQ_UINT(qcap(q), 4096);
    expect_raw(q, LEN_FOR_REC(2048), 2);
    expect_raw(q, 0, 3);
    expect_raw(q, 0, 4);
    expect_raw(q, LEN_FOR_REC(1024), 5);
    ASSERT_EQ_UINT(qsize(q), 0);
    mpx_queue_destroy(q);

    /* F: a batch is placed as one block: it wraps or grows as a whole. */
    q = qnew(0, 4096);
    put_raw(q, LEN_FOR_REC(2048), 1);
    put_raw(q, LEN_FOR_REC(1024), 2); /* tail = 3072 */
    expect_raw(q, LEN_FOR_REC(2048), 1); /* head = 2048 */
    unsigned char zero[1024] = {0};
    struct iovec v[3] = {{zero, LEN_FOR_REC(512)}, {zero, LEN_FOR_REC(512)}, {zero, 0}};
    mpx_msgv m[3] = {{&v[0], 1}, {&v[1], 1}, {&v[2], 1}};
    /* 1032 bytes: more than the 1024 at the top, less than the 2048 below head: wraps. */
    ASSERT_OK(mpx_queue_put_many(q, m, 3, MPX_NOWAIT));
    ASSERT_EQ_UINT(qcap(q), 4096);
    expect_raw(q, LEN_FOR_REC(1024), 2);
    expect_raw(q, LEN_FOR_REC(512), 0);
    expect_raw(q, LEN_FOR_REC(512), 0);
    expect_raw(q, 0, 0);
    mpx_queue_destroy(q);
}

/* The model's entries: a checked message (seq), or a raw one of seq % 29 bytes of (seq & 0xff). */
#define RAW_BIT ((uint64_t)1 << 63)

static void expect_model(mpx_queue *q, uint64_t e)
{
    if (e & RAW_BIT) {
        uint64_t seq = e & ~RAW_BIT;
        expect_raw(q, (size_t)(seq % 29), (unsigned char)seq);
    } else {
        expect_msg(q, 1, e, MPX_NOWAIT);
    }
}

TEST(wrap_and_growth_randomized)
{
    /* Random interleavings of puts and gets of varied sizes (empty and tiny ones included)
     * on a small ring, checked against a model: the ring wraps constantly, and grows now
     * and then, wrapped or not. */
    uint64_t rs = th_seed();
    for (int round = 0; round < 12; round++) {
        mpx_queue *q = qnew(0, 4096);
        enum { MAXQ = 4096 };
        uint64_t *model = malloc(MAXQ * sizeof *model);
        ASSERT_NOT_NULL(model);
        size_t h = 0, t = 0; /* model[h..t) */
        uint64_t seq = 0;
        int bias = 45 + round % 4 * 3; /* some rounds drain, some fill */
        for (int op = 0; op < 5000; op++) {
            uint64_t x = th_rand(&rs) % 100;
            if ((x < (uint64_t)bias || h == t) && t - h < MAXQ - 8) {
                uint64_t kind = th_rand(&rs) % 16;
                if (kind < 6) { /* raw: 0..28 bytes */
                    put_raw(q, (size_t)(seq % 29), (unsigned char)seq);
                    model[t++ % MAXQ] = seq++ | RAW_BIT;
                } else if (kind < 8) { /* several in one batch */
                    size_t n = 1 + th_rand(&rs) % 4;
                    unsigned char **bufs;
                    mpx_msgv *m = batch_new(1, seq, n, th_rand(&rs) % 300, &bufs);
                    ASSERT_OK(mpx_queue_put_many(q, m, n, MPX_NOWAIT));
                    batch_free(m, n, bufs);
                    for (size_t i = 0; i < n; i++)
                        model[t++ % MAXQ] = seq++;
                } else {
                    size_t pl = kind == 15 ? th_rand(&rs) % 9000 : th_rand(&rs) % 700;
                    ASSERT_OK(put_msg(q, 1, seq, pl, MPX_NOWAIT));
                    model[t++ % MAXQ] = seq++;
                }
            } else if (h < t) {
                expect_model(q, model[h++ % MAXQ]);
            }
            if (op % 64 == 0)
                ASSERT_EQ_UINT(qsize(q), t - h);
        }
        while (h < t)
            expect_model(q, model[h++ % MAXQ]);
        ASSERT_EQ_UINT(qsize(q), 0);
        free(model);
        mpx_queue_destroy(q);
    }
}

TEST(message_larger_than_ring)
{
    mpx_queue *q = qnew(0, 4096);
    ASSERT_OK(put_msg(q, 1, 0, 100, MPX_NOWAIT));
    ASSERT_OK(put_msg(q, 1, 1, 100 * 1024, MPX_NOWAIT));
    ASSERT_GE_INT(qcap(q), 100 * 1024);
    ASSERT_OK(put_msg(q, 1, 2, 5, MPX_NOWAIT));
    /* A process that mapped the small ring follows the growth. */
    pid_t pid = th_fork();
    if (pid == 0) {
        expect_msg(q, 1, 0, MPX_NOWAIT);
        expect_msg(q, 1, 1, MPX_NOWAIT);
        expect_msg(q, 1, 2, MPX_NOWAIT);
        ASSERT_OK(put_msg(q, 2, 0, 1 << 20, MPX_NOWAIT));
        _exit(0);
    }
    th_wait_ok(pid, 20);
    expect_msg(q, 2, 0, MPX_NOWAIT);
    ASSERT_EQ_UINT(qsize(q), 0);
    mpx_queue_destroy(q);
}

TEST(message_64mib_between_processes)
{
    /* One 64 MiB message each way between two processes; the child attaches its own
     * handle to the return queue, whose ring must grow under both mappings. */
    const size_t pl = (64u << 20) - MSG_HEAD;
    mpx_queue *there = qnew(0, 0), *back = qnew(0, 0);
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_OK(put_msg(there, 1, 0, pl, MPX_NOWAIT));
        mpx_queue *a;
        ASSERT_OK(mpx_queue_attach(&a, mpx_queue_fd(back)));
        struct id id;
        size_t len;
        ASSERT_OK(get_msg(a, mpx_deadline_in(60 * SEC), &id, &len));
        ASSERT(id.p == 2 && id.s == 0 && len == 64u << 20);
        mpx_queue_destroy(a);
        _exit(0);
    }
    struct id id;
    size_t len;
    ASSERT_OK(get_msg(there, mpx_deadline_in(60 * SEC), &id, &len));
    ASSERT(id.p == 1 && id.s == 0 && len == 64u << 20);
    ASSERT_OK(put_msg(back, 2, 0, pl, MPX_NOWAIT));
    th_wait_ok(pid, 60);
    ASSERT_EQ_UINT(qsize(there), 0);
    ASSERT_EQ_UINT(qsize(back), 0);
    /* The drained ring gave its pages back; it still works. */
    ASSERT_OK(put_msg(there, 3, 0, 10, MPX_NOWAIT));
    ASSERT_OK(put_msg(there, 3, 1, 5 << 20, MPX_NOWAIT));
    expect_msg(there, 3, 0, MPX_NOWAIT);
    expect_msg(there, 3, 1, MPX_NOWAIT);
    /* Pages are only given back when the ring is empty: a small message queued behind a
     * large one, high in the ring, survives the large one's get. */
    ASSERT_OK(put_msg(there, 4, 0, 40 << 20, MPX_NOWAIT));
    ASSERT_OK(put_msg(there, 4, 1, 100, MPX_NOWAIT));
    expect_msg(there, 4, 0, MPX_NOWAIT);
    expect_msg(there, 4, 1, MPX_NOWAIT);
    mpx_queue_destroy(there);
    mpx_queue_destroy(back);
}

TEST(frames_through_queue)
{
    /* A frame (the Python face's message format) survives the queue intact. */
    mpx_queue *q = qnew(0, 4096);
    unsigned char a[13], b[4000], c[1];
    memset(a, 1, sizeof a);
    memset(b, 2, sizeof b);
    memset(c, 3, sizeof c);
    mpx_frame_part parts[3] = {{a, sizeof a, 0}, {b, sizeof b, MPX_FRAME_READONLY}, {c, 1, 0}};
    uint64_t hdr[16];
    struct iovec iov[6];
    int n = mpx_frame_build(hdr, MPX_FRAME_PICKLE, parts, 3, iov);
    ASSERT_OK(n);
    ASSERT_OK(mpx_queue_putv(q, iov, n, MPX_NOWAIT));
    void *d;
    size_t l;
    ASSERT_OK(mpx_queue_get(q, &d, &l, MPX_NOWAIT));
    unsigned kind;
    size_t np;
    ASSERT_OK(mpx_frame_peek(d, l, &kind, &np));
    ASSERT_EQ_UINT(np, 3);
    mpx_frame_part out[3];
    ASSERT_OK(mpx_frame_parse(d, l, out, 3));
    ASSERT(out[0].len == sizeof a && memcmp(out[0].data, a, sizeof a) == 0);
    ASSERT(out[1].len == sizeof b && memcmp(out[1].data, b, sizeof b) == 0);
    ASSERT_EQ_UINT(out[1].flags, MPX_FRAME_READONLY);
    ASSERT(out[2].len == 1 && memcmp(out[2].data, c, 1) == 0);
    free(d);
    mpx_queue_destroy(q);
}

/* ---------------------------------------------------------------------------------------
 * Many processes at once
 */

struct stress_shared {
    _Atomic uint32_t errors;
    _Atomic uint32_t received;
    _Atomic uint8_t seen[];
};

static void consumer_loop(mpx_queue *q, struct stress_shared *sh, int P, int N, bool many)
{
    int64_t last[8];
    for (int p = 0; p < P; p++)
        last[p] = -1;
    for (;;) {
        struct collect c = {.fail_at = SIZE_MAX};
        size_t got = 0;
        int r;
        if (many) {
            r = mpx_queue_get_many_with(q, 16, collect_fn, &c, &got, 0, mpx_deadline_in(60 * SEC));
        } else {
            r = get_msg(q, mpx_deadline_in(60 * SEC), &c.ids[0], NULL);
            got = 1;
        }
        if (r == MPX_ECLOSED)
            return; /* closed and drained */
        ASSERT_OK(r);
        for (size_t i = 0; i < got; i++) {
            struct id id = c.ids[i];
            ASSERT(id.p < (uint32_t)P && id.s < (uint64_t)N);
            ASSERT_MSG((int64_t)id.s > last[id.p], "producer %u: %llu after %lld", id.p,
                       (unsigned long long)id.s, (long long)last[id.p]);
            last[id.p] = (int64_t)id.s;
            atomic_fetch_add(&sh->seen[(size_t)id.p * N + id.s], 1);
            atomic_fetch_add(&sh->received, 1);
        }
    }
}

static void mpmc(uint64_t maxsize, bool many, int N)
{
    enum { P = 3, C = 2 };
    mpx_queue *q = qnew(maxsize, 8192);
    size_t shlen = sizeof(struct stress_shared) + (size_t)P * N;
    struct stress_shared *sh = th_shared_alloc(shlen);
    pid_t cons[C], prod[P];
    for (int c = 0; c < C; c++) {
        cons[c] = th_fork();
        if (cons[c] == 0) {
            consumer_loop(q, sh, P, N, many);
            _exit(0);
        }
    }
    for (int p = 0; p < P; p++) {
        prod[p] = th_fork();
        if (prod[p] == 0) {
            uint64_t rs = (uint64_t)p + 100;
            for (int i = 0; i < N;) {
                size_t pl = th_rand(&rs) % 64 == 0 ? 20000 : th_rand(&rs) % 400;
                if (many) {
                    size_t n = 1 + th_rand(&rs) % 6;
                    if (n > (size_t)(N - i))
                        n = (size_t)(N - i);
                    if (maxsize && n > maxsize)
                        n = maxsize;
                    unsigned char **bufs;
                    mpx_msgv *m = batch_new((uint32_t)p, (uint64_t)i, n, pl, &bufs);
                    ASSERT_OK(mpx_queue_put_many(q, m, n, mpx_deadline_in(60 * SEC)));
                    batch_free(m, n, bufs);
                    i += (int)n;
                } else {
                    ASSERT_OK(put_msg(q, (uint32_t)p, (uint64_t)i, pl, mpx_deadline_in(60 * SEC)));
                    i++;
                }
            }
            _exit(0);
        }
    }
    for (int p = 0; p < P; p++)
        th_wait_ok(prod[p], 90);
    ASSERT_OK(mpx_queue_close(q)); /* the consumers drain what is left, then stop */
    for (int c = 0; c < C; c++)
        th_wait_ok(cons[c], 90);
    ASSERT_EQ_UINT(atomic_load(&sh->received), (uint64_t)P * N);
    for (int p = 0; p < P; p++)
        for (int i = 0; i < N; i++)
            ASSERT_MSG(sh->seen[(size_t)p * N + i] == 1, "message %d:%d seen %u times", p, i,
                       (unsigned)sh->seen[(size_t)p * N + i]);
    ASSERT_EQ_UINT(qsize(q), 0);
    munmap(sh, shlen);
    mpx_queue_destroy(q);
}

TEST(mpmc_stress_bounded)
{
    mpmc(32, false, 15000);
}

TEST(mpmc_stress_unbounded_batches)
{
    mpmc(0, true, 20000);
}

/* ---------------------------------------------------------------------------------------
 * CPU use of a sleeper
 */

TEST(blocked_get_uses_no_cpu)
{
    mpx_queue *q = qnew(0, 0);
    pid_t pid = th_fork();
    if (pid == 0) {
        expect_msg(q, 1, 0, MPX_FOREVER);
        _exit(0);
    }
    th_wait_asleep(pid); /* past the spin */
    double c0 = th_proc_cpu_ms(pid);
    ASSERT(c0 >= 0);
    th_sleep_ms(1000);
    double c1 = th_proc_cpu_ms(pid);
    ASSERT_MSG(c1 - c0 < 50, "a blocked get used %.0f ms of CPU in 1 s", c1 - c0);
    ASSERT_EQ_INT(th_proc_state(pid), 'S');
    int64_t t0 = th_now_ns();
    ASSERT_OK(put_msg(q, 1, 0, 10, MPX_NOWAIT));
    th_wait_ok(pid, 10);
    ASSERT_LT_INT(th_now_ns() - t0, 5 * SEC);
    mpx_queue_destroy(q);
}

/* ---------------------------------------------------------------------------------------
 * Crash consistency: processes killed at every fault point
 */

TEST(fault_points_listed_and_arming)
{
    static const char *const expected[] = {
        "queue.put.locked",    "queue.put.grown",     "queue.put.copied",
        "queue.put.staged",    "queue.put.committed", "queue.get.locked",
        "queue.get.copied",    "queue.get.staged",    "queue.get.committed",
        "queue.task_done.staged", "queue.wait.flagged"};
    const char *const *pts = mpx_fault_points();
    ASSERT_NOT_NULL(pts);
    size_t n = 0;
    while (pts[n]) {
        bool known = false;
        for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
            known |= strcmp(pts[n], expected[i]) == 0;
        /* A new point needs a scenario in this file (see the fault_* tests). */
        ASSERT_MSG(known || strncmp(pts[n], "queue.", 6) != 0,
                   "fault point %s has no test scenario", pts[n]);
        n++;
    }
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        bool found = false;
        for (size_t j = 0; j < n; j++)
            found |= strcmp(pts[j], expected[i]) == 0;
        ASSERT_MSG(found, "fault point %s is not listed", expected[i]);
    }
    char longname[100];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    ASSERT_ERR(mpx_fault_arm(longname, 0), -EINVAL);

    mpx_queue *q = qnew(0, 0);
    /* Disarming works; a countdown lets that many passes through. */
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_OK(mpx_fault_arm("queue.put.committed", 0));
        ASSERT_OK(mpx_fault_arm(NULL, 0));
        ASSERT_OK(put_msg(q, 1, 0, 10, MPX_NOWAIT));
        ASSERT_OK(mpx_fault_arm("queue.put.committed", 2));
        ASSERT_OK(put_msg(q, 1, 1, 10, MPX_NOWAIT));
        ASSERT_OK(put_msg(q, 1, 2, 10, MPX_NOWAIT));
        ASSERT_OK(put_msg(q, 1, 3, 10, MPX_NOWAIT));
        _exit(3);
    }
    th_wait_signaled(pid, SIGKILL, 20);
    struct id want[] = {{1, 0}, {1, 1}, {1, 2}, {1, 3}};
    drain_check(q, want, 4, false);
    mpx_queue_destroy(q);
}

/* Helper: attaches to the queue on fd argv[0], checks that it holds exactly the messages
 * argv[1..] ("P:S" each) in order, intact, and puts them back. Run after a fault, it is the
 * "fresh process" view of the queue (and the first locker when the parent has not looked). */
HELPER(check)
{
    ASSERT(argc >= 1);
    mpx_queue *q = NULL;
    ASSERT_OK(mpx_queue_attach(&q, atoi(argv[0])));
    size_t n = (size_t)argc - 1;
    struct id *ids = calloc(n + 1, sizeof *ids);
    ASSERT_NOT_NULL(ids);
    for (size_t i = 0; i < n; i++) {
        unsigned p;
        unsigned long long s;
        ASSERT(sscanf(argv[1 + i], "%u:%llu", &p, &s) == 2);
        ids[i] = (struct id){p, s};
    }
    drain_check(q, ids, n, true);
    free(ids);
    mpx_queue_destroy(q);
    return 0;
}

/* Helper: attaches to the queue on fd argv[0] and puts message argv[1]:argv[2]; with
 * MPX_FAULT in its environment it dies at that point. */
HELPER(put)
{
    ASSERT_EQ_INT(argc, 4);
    mpx_queue *q = NULL;
    ASSERT_OK(mpx_queue_attach(&q, atoi(argv[0])));
    ASSERT_OK(put_msg(q, (uint32_t)atoi(argv[1]), strtoull(argv[2], NULL, 10),
                      strtoull(argv[3], NULL, 10), MPX_FOREVER));
    mpx_queue_destroy(q);
    return 0;
}

static void run_check_helper(mpx_queue *q, const struct id *ids, size_t n)
{
    char **strs = calloc(n + 2, sizeof *strs);
    ASSERT_NOT_NULL(strs);
    char fdbuf[16];
    fd_arg(fdbuf, sizeof fdbuf, mpx_queue_fd(q));
    strs[0] = fdbuf;
    for (size_t i = 0; i < n; i++) {
        strs[1 + i] = malloc(48);
        ASSERT_NOT_NULL(strs[1 + i]);
        snprintf(strs[1 + i], 48, "%u:%llu", ids[i].p, (unsigned long long)ids[i].s);
    }
    int fd = mpx_queue_fd(q);
    pid_t pid = th_spawn_helper("check", (const char *const *)strs, &fd, 1, NULL);
    th_wait_ok(pid, 20);
    for (size_t i = 0; i < n; i++)
        free(strs[1 + i]);
    free(strs);
}

/* After a process died inside an operation: the queue holds exactly ids[0..n), intact, as
 * seen by this process and by a fresh one (which goes first when `helper_first`, so that
 * each of them is sometimes the one to recover the lock), and it still works. */
static void check_after_fault(mpx_queue *q, const struct id *ids, size_t n, bool helper_first)
{
    if (helper_first) {
        run_check_helper(q, ids, n);
        drain_check(q, ids, n, true);
    } else {
        ASSERT_EQ_UINT(qsize(q), n);
        drain_check(q, ids, n, true);
        run_check_helper(q, ids, n);
    }
    ASSERT_EQ_INT(mpx_queue_is_closed(q), 0);
    /* Still works, here and in another process (after making room in a bounded queue). */
    drain_check(q, ids, n, false);
    ASSERT_OK(put_msg(q, 9, 0, 100, MPX_NOWAIT));
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_OK(put_msg(q, 9, 1, 5000, MPX_NOWAIT));
        _exit(0);
    }
    th_wait_ok(pid, 20);
    static const struct id after[] = {{9, 0}, {9, 1}};
    drain_check(q, after, 2, false);
}

typedef void (*fault_op)(mpx_queue *q);

/* Runs `op` in a child that has armed `point`; asserts the child died there. */
static void die_at(mpx_queue *q, const char *point, unsigned countdown, fault_op op)
{
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_OK(mpx_fault_arm(point, countdown));
        op(q);
        fprintf(stderr, "the operation passed %s without dying\n", point);
        _exit(99);
    }
    th_wait_signaled(pid, SIGKILL, 20);
}

static void op_put(mpx_queue *q) { ASSERT_OK(put_msg(q, 2, 0, 300, MPX_FOREVER)); }
static void op_put_big(mpx_queue *q) { ASSERT_OK(put_msg(q, 2, 0, 3 << 20, MPX_FOREVER)); }
static void op_put_wrap_big(mpx_queue *q) { ASSERT_OK(put_msg(q, 2, 0, 3000, MPX_FOREVER)); }

static void op_put_many(mpx_queue *q)
{
    unsigned char **bufs;
    mpx_msgv *m = batch_new(2, 0, 3, 300, &bufs);
    ASSERT_OK(mpx_queue_put_many(q, m, 3, MPX_FOREVER));
    batch_free(m, 3, bufs);
}

static void op_put_many_big(mpx_queue *q)
{
    unsigned char **bufs;
    mpx_msgv *m = batch_new(2, 0, 3, 1 << 20, &bufs);
    ASSERT_OK(mpx_queue_put_many(q, m, 3, MPX_FOREVER));
    batch_free(m, 3, bufs);
}

static void op_get(mpx_queue *q)
{
    struct id id;
    ASSERT_OK(get_msg(q, MPX_FOREVER, &id, NULL));
}

static void op_get_many(mpx_queue *q)
{
    struct collect c = {.fail_at = SIZE_MAX};
    size_t got;
    ASSERT_OK(mpx_queue_get_many_with(q, 2, collect_fn, &c, &got, 0, MPX_FOREVER));
}

static void op_task_done(mpx_queue *q) { ASSERT_OK(mpx_queue_task_done(q)); }

static const struct id P3[] = {{1, 0}, {1, 1}, {1, 2}};
static const struct id P3_PUT[] = {{1, 0}, {1, 1}, {1, 2}, {2, 0}};
static const struct id P3_PUT_MANY[] = {{1, 0}, {1, 1}, {1, 2}, {2, 0}, {2, 1}, {2, 2}};

/* The common scenario: three messages queued, a process dies at `point` inside `op`, and
 * the queue must then hold exactly `after`. */
static void fault_scenario(const char *point, unsigned countdown, fault_op op,
                           const struct id *after, size_t n, bool helper_first)
{
    mpx_queue *q = qnew(0, 0);
    prefill(q, 1, 3, 200);
    die_at(q, point, countdown, op);
    check_after_fault(q, after, n, helper_first);
    mpx_queue_destroy(q);
}

TEST(fault_put_locked)
{
    fault_scenario("queue.put.locked", 0, op_put, P3, 3, false);
    fault_scenario("queue.put.locked", 0, op_put_many, P3, 3, true);
}

TEST(fault_put_copied)
{
    /* Killed with half of a large message copied into the ring. */
    fault_scenario("queue.put.copied", 0, op_put_big, P3, 3, true);
    fault_scenario("queue.put.copied", 0, op_put_many_big, P3, 3, false);
    fault_scenario("queue.put.copied", 0, op_put, P3, 3, false);
}

TEST(fault_put_staged)
{
    fault_scenario("queue.put.staged", 0, op_put, P3, 3, false);
    fault_scenario("queue.put.staged", 0, op_put_many, P3, 3, true);
}

TEST(fault_put_committed)
{
    fault_scenario("queue.put.committed", 0, op_put, P3_PUT, 4, true);
    fault_scenario("queue.put.committed", 0, op_put_many, P3_PUT_MANY, 6, false);
    fault_scenario("queue.put.committed", 0, op_put_big, P3_PUT, 4, false);
}

TEST(fault_put_committed_in_exec_helper)
{
    /* Armed through the environment (MPX_FAULT) in an exec'd process. */
    mpx_queue *q = qnew(0, 0);
    prefill(q, 1, 3, 200);
    char fdbuf[16];
    fd_arg(fdbuf, sizeof fdbuf, mpx_queue_fd(q));
    const char *args[] = {fdbuf, "2", "0", "300", NULL};
    const char *env[] = {"MPX_FAULT=queue.put.committed", NULL};
    int fd = mpx_queue_fd(q);
    pid_t pid = th_spawn_helper("put", args, &fd, 1, env);
    th_wait_signaled(pid, SIGKILL, 20);
    check_after_fault(q, P3_PUT, 4, true);
    /* With a countdown of 1, the helper's single put passes the point and survives. */
    const char *env2[] = {"MPX_FAULT=queue.put.staged:1", NULL};
    pid = th_spawn_helper("put", args, &fd, 1, env2);
    th_wait_ok(pid, 20);
    expect_msg(q, 2, 0, MPX_NOWAIT);
    mpx_queue_destroy(q);
}

TEST(fault_put_grown_while_wrapped)
{
    /* The wrapped-and-full 4 KiB ring of wrap_then_grow_while_wrapped; the put that grows
     * it dies after growing (and linearising the wrapped records into the new space), before
     * committing. */
    for (int variant = 0; variant < 2; variant++) {
        mpx_queue *q = qnew(0, 4096);
        const size_t pl = 1000 - MSG_HEAD;
        for (uint64_t i = 0; i < 3; i++)
            ASSERT_OK(put_msg(q, 1, i, pl, MPX_NOWAIT));
        expect_msg(q, 1, 0, MPX_NOWAIT);
        ASSERT_OK(put_msg(q, 1, 3, pl, MPX_NOWAIT));
        ASSERT_OK(put_msg(q, 1, 4, pl, MPX_NOWAIT));
        ASSERT_EQ_UINT(qcap(q), 4096);
        die_at(q, "queue.put.grown", 0, variant ? op_put_many : op_put_wrap_big);
        ASSERT_EQ_UINT(qcap(q), 4096); /* the committed ring is the old one */
        struct id want[] = {{1, 1}, {1, 2}, {1, 3}, {1, 4}};
        check_after_fault(q, want, 4, variant == 1);
        /* And a few more ring's worth of traffic. */
        for (uint64_t i = 0; i < 6; i++)
            ASSERT_OK(put_msg(q, 1, 10 + i, pl, MPX_NOWAIT));
        for (uint64_t i = 0; i < 6; i++)
            expect_msg(q, 1, 10 + i, MPX_NOWAIT);
        mpx_queue_destroy(q);
    }
}

TEST(fault_get_locked)
{
    fault_scenario("queue.get.locked", 0, op_get, P3, 3, true);
    fault_scenario("queue.get.locked", 0, op_get_many, P3, 3, false);
}

TEST(fault_get_copied)
{
    /* The message was handed to the consumer, which died before the get committed: it
     * stays queued (at-least-once). With get_many, dying at the second message keeps both. */
    fault_scenario("queue.get.copied", 0, op_get, P3, 3, false);
    fault_scenario("queue.get.copied", 1, op_get_many, P3, 3, true);
}

TEST(fault_get_staged)
{
    fault_scenario("queue.get.staged", 0, op_get, P3, 3, true);
    fault_scenario("queue.get.staged", 0, op_get_many, P3, 3, false);
}

TEST(fault_get_committed)
{
    static const struct id after1[] = {{1, 1}, {1, 2}}, after2[] = {{1, 2}};
    fault_scenario("queue.get.committed", 0, op_get, after1, 2, false);
    fault_scenario("queue.get.committed", 0, op_get_many, after2, 1, true);
}

TEST(fault_task_done_staged)
{
    mpx_queue *q = qnew(0, 0);
    prefill(q, 1, 3, 10);
    ASSERT_EQ_UINT(qunfinished(q), 3);
    die_at(q, "queue.task_done.staged", 0, op_task_done);
    ASSERT_EQ_UINT(qunfinished(q), 3);
    ASSERT_OK(mpx_queue_task_done(q));
    ASSERT_OK(mpx_queue_task_done(q));
    ASSERT_EQ_UINT(qunfinished(q), 1);
    /* A joiner in another process: the last task_done dies before committing, so the
     * joiner keeps waiting; the next task_done releases it. */
    pid_t joiner = th_fork();
    if (joiner == 0) {
        ASSERT_OK(mpx_queue_join(q, mpx_deadline_in(30 * SEC)));
        _exit(0);
    }
    th_wait_asleep(joiner);
    die_at(q, "queue.task_done.staged", 0, op_task_done);
    th_sleep_ms(100);
    ASSERT(th_running(joiner));
    ASSERT_EQ_UINT(qunfinished(q), 1);
    ASSERT_OK(mpx_queue_task_done(q));
    th_wait_ok(joiner, 10);
    ASSERT_EQ_UINT(qunfinished(q), 0);
    /* The queue itself is untouched; the check's re-puts add tasks. */
    check_after_fault(q, P3, 3, true);
    mpx_queue_destroy(q);
}

TEST(fault_wait_flagged)
{
    /* A consumer dies after flagging itself as a sleeper, before sleeping. */
    mpx_queue *q = qnew(0, 0);
    die_at(q, "queue.wait.flagged", 0, op_get);
    check_after_fault(q, NULL, 0, false);
    /* The stale flag costs at most a useless wake: a real sleeper is still woken. */
    die_at(q, "queue.wait.flagged", 0, op_get);
    pid_t consumer = th_fork();
    if (consumer == 0) {
        expect_msg(q, 5, 0, mpx_deadline_in(20 * SEC));
        _exit(0);
    }
    th_sleep_ms(100);
    ASSERT_OK(put_msg(q, 5, 0, 10, MPX_NOWAIT));
    th_wait_ok(consumer, 10);
    mpx_queue_destroy(q);

    /* A producer on a full queue dies the same way. */
    q = qnew(1, 0);
    prefill(q, 1, 1, 10);
    die_at(q, "queue.wait.flagged", 0, op_put);
    struct id want[] = {{1, 0}};
    ASSERT_EQ_UINT(qsize(q), 1);
    drain_check(q, want, 1, false);
    ASSERT_OK(put_msg(q, 1, 1, 10, MPX_NOWAIT));
    expect_msg(q, 1, 1, MPX_NOWAIT);
    mpx_queue_destroy(q);

    /* A joiner too. */
    q = qnew(0, 0);
    prefill(q, 1, 1, 10);
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_OK(mpx_fault_arm("queue.wait.flagged", 0));
        mpx_queue_join(q, MPX_FOREVER);
        _exit(99);
    }
    th_wait_signaled(pid, SIGKILL, 20);
    ASSERT_OK(mpx_queue_task_done(q));
    ASSERT_OK(mpx_queue_join(q, MPX_NOWAIT));
    mpx_queue_destroy(q);
}

/* A consumer sleeping in another process while a producer dies right after committing its
 * message (before it could wake anyone): the sleeper must still get the message promptly,
 * without help from any other process touching the queue. */
TEST(fault_put_committed_wakes_sleeping_consumer)
{
    mpx_queue *q = qnew(0, 0);
    pid_t consumer = th_fork();
    if (consumer == 0) {
        expect_msg(q, 2, 0, mpx_deadline_in(30 * SEC));
        _exit(0);
    }
    th_wait_asleep(consumer);
    int64_t t0 = th_now_ns();
    die_at(q, "queue.put.committed", 0, op_put);
    th_wait_ok(consumer, 5);
    printf("  (sleeper woke %.0f ms after the producer died)\n", (th_now_ns() - t0) / 1e6);
    ASSERT_EQ_UINT(qsize(q), 0);
    check_after_fault(q, NULL, 0, false);
    mpx_queue_destroy(q);
}

/* The mirror image: a producer sleeping on a full queue while a consumer dies right after
 * committing its get. */
TEST(fault_get_committed_wakes_sleeping_producer)
{
    mpx_queue *q = qnew(2, 0);
    prefill(q, 1, 2, 50);
    pid_t producer = th_fork();
    if (producer == 0) {
        ASSERT_OK(put_msg(q, 2, 0, 50, mpx_deadline_in(30 * SEC)));
        _exit(0);
    }
    th_wait_asleep(producer);
    die_at(q, "queue.get.committed", 0, op_get);
    th_wait_ok(producer, 5);
    struct id want[] = {{1, 1}, {2, 0}};
    check_after_fault(q, want, 2, true);
    mpx_queue_destroy(q);
}

/* A producer that dies before committing (put.staged) put nothing: a sleeping consumer,
 * possibly woken for nothing, must go back to sleep and wake for the next real put. */
TEST(fault_put_staged_keeps_consumer_asleep)
{
    mpx_queue *q = qnew(0, 0);
    pid_t consumer = th_fork();
    if (consumer == 0) {
        expect_msg(q, 3, 0, mpx_deadline_in(30 * SEC));
        _exit(0);
    }
    th_wait_asleep(consumer);
    die_at(q, "queue.put.staged", 0, op_put);
    th_sleep_ms(200);
    ASSERT(th_running(consumer));
    ASSERT_OK(put_msg(q, 3, 0, 10, MPX_NOWAIT));
    th_wait_ok(consumer, 10);
    ASSERT_EQ_UINT(qsize(q), 0);
    mpx_queue_destroy(q);
}

/* ---------------------------------------------------------------------------------------
 * Random SIGKILLs
 */

static int verify_fn(void *ctx, const void *msg, size_t len)
{
    _Atomic uint32_t *bad = ctx;
    if (msg_verify(msg, len, NULL)) {
        atomic_store(bad, 1);
        _exit(3);
    }
    return 0;
}

TEST(random_sigkill_during_traffic)
{
    uint64_t rs = th_seed();
    mpx_queue *q = qnew(0, 4096);
    _Atomic uint32_t *bad = th_shared_alloc(4096);
    enum { ITER = 50 };
    for (int it = 0; it < ITER; it++) {
        uint64_t child_seed = th_rand(&rs);
        pid_t pid = th_fork();
        if (pid == 0) {
            uint64_t s = child_seed, seq = (uint64_t)it << 32;
            unsigned char *buf = malloc(MSG_HEAD + 40000);
            ASSERT_NOT_NULL(buf);
            for (;;) {
                int k = 1 + (int)(th_rand(&s) % 3);
                for (int j = 0; j < k; j++) {
                    size_t pl = th_rand(&s) % 16 == 0 ? 40000 : th_rand(&s) % 2000;
                    size_t len = msg_fill(buf, 1, seq++, pl);
                    if (mpx_queue_put(q, buf, len, MPX_NOWAIT) < 0)
                        _exit(4);
                }
                int g = 1 + (int)(th_rand(&s) % 3);
                for (int j = 0; j < g; j++) {
                    int r = mpx_queue_get_with(q, verify_fn, (void *)bad, 0, MPX_NOWAIT);
                    if (r < 0 && r != -EAGAIN)
                        _exit(5);
                }
            }
        }
        th_sleep_ms((double)(th_rand(&rs) % 8000) / 1000.0);
        kill(pid, SIGKILL);
        th_wait_signaled(pid, SIGKILL, 20);
        ASSERT_EQ_UINT(atomic_load(bad), 0);
        uint64_t n = qsize(q); /* the lock is usable (recovered if need be) */
        if (n > 2000) {        /* keep the queue from growing without bound */
            struct collect c = {.fail_at = SIZE_MAX};
            size_t got;
            while (n > 100) {
                c.n = 0;
                ASSERT_OK(mpx_queue_get_many_with(q, 50, collect_fn, &c, &got, 0, MPX_NOWAIT));
                n -= got;
            }
        }
    }
    /* Every remaining message is intact, unique and in the order it was put. */
    uint64_t n = qsize(q), last = 0;
    for (uint64_t i = 0; i < n; i++) {
        struct id id;
        ASSERT_OK(get_msg(q, MPX_NOWAIT, &id, NULL));
        ASSERT(id.p == 1);
        ASSERT_MSG(i == 0 || id.s > last, "message %llx after %llx", (unsigned long long)id.s,
                   (unsigned long long)last);
        last = id.s;
    }
    void *d;
    size_t l;
    ASSERT_ERR(mpx_queue_get(q, &d, &l, MPX_NOWAIT), -EAGAIN);
    printf("  (%llu messages survived; ring %llu bytes)\n", (unsigned long long)n,
           (unsigned long long)qcap(q));
    check_after_fault(q, NULL, 0, true);
    munmap((void *)bad, 4096);
    mpx_queue_destroy(q);
}

TEST(random_sigkill_of_blocked_and_busy_processes)
{
    /* Producers and consumers on a small bounded queue, SIGKILLed at random while others
     * keep going; the survivors never see a damaged message and never hang. */
    uint64_t rs = th_seed();
    mpx_queue *q = qnew(4, 4096);
    _Atomic uint32_t *bad = th_shared_alloc(4096);
    enum { SLOTS = 4, ROUNDS = 40 };
    pid_t pids[SLOTS] = {0};
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < SLOTS; i++) {
            if (pids[i])
                continue;
            uint64_t cs = th_rand(&rs);
            pids[i] = th_fork();
            if (pids[i] == 0) {
                unsigned char *buf = malloc(MSG_HEAD + 9000);
                ASSERT_NOT_NULL(buf);
                for (uint64_t seq = 0;; seq++) {
                    if (i % 2 == 0) {
                        size_t len = msg_fill(buf, (uint32_t)i, seq, th_rand(&cs) % 9000);
                        int e = mpx_queue_put(q, buf, len, mpx_deadline_in(20 * SEC));
                        if (e < 0)
                            _exit(4);
                    } else {
                        int e = mpx_queue_get_with(q, verify_fn, (void *)bad, 0,
                                                   mpx_deadline_in(20 * SEC));
                        if (e < 0)
                            _exit(5);
                    }
                }
            }
        }
        th_sleep_ms((double)(th_rand(&rs) % 5000) / 1000.0);
        int victim = (int)(th_rand(&rs) % SLOTS);
        kill(pids[victim], SIGKILL);
        th_wait_signaled(pids[victim], SIGKILL, 20);
        pids[victim] = 0;
        ASSERT_EQ_UINT(atomic_load(bad), 0);
    }
    for (int i = 0; i < SLOTS; i++) {
        if (pids[i]) {
            ASSERT_MSG(th_running(pids[i]), "worker %d ended on its own", i);
            kill(pids[i], SIGKILL);
            th_wait_signaled(pids[i], SIGKILL, 20);
        }
    }
    ASSERT_EQ_UINT(atomic_load(bad), 0);
    uint64_t n = qsize(q);
    ASSERT_LE_INT(n, 4);
    for (uint64_t i = 0; i < n; i++) {
        struct id id;
        ASSERT_OK(get_msg(q, MPX_NOWAIT, &id, NULL));
    }
    check_after_fault(q, NULL, 0, false);
    munmap((void *)bad, 4096);
    mpx_queue_destroy(q);
}

TEST(large_put_reservation_of_dead_producer_is_cancelled)
{
    /* A large put copies outside the lock behind a reservation. The producer is killed
     * mid-copy and left unreaped (a zombie) while a second producer is blocked behind the
     * reservation: the second producer must notice the death, cancel the reservation and
     * go on, and the consumer must see only whole messages, in order. */
    mpx_queue *q = qnew(0, 0);
    prefill(q, 1, 2, 100);
    pid_t dead = th_fork();
    if (dead == 0) {
        mpx_fault_arm("queue.put.copied", 0);
        put_msg(q, 2, 0, 3 << 20, MPX_FOREVER);
        _exit(99); /* not reached */
    }
    /* Let the first producer reach its reservation, then start the second. */
    int64_t until = mpx_now() + 10000000000LL;
    for (;;) {
        siginfo_t si = {0};
        if (waitid(P_PID, (id_t)dead, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == dead)
            break; /* killed, still a zombie: WNOWAIT leaves it unreaped */
        ASSERT_MSG(mpx_now() < until, "the first producer never reached its fault point");
        usleep(1000);
    }
    pid_t second = th_fork();
    if (second == 0) {
        int r = put_msg(q, 3, 0, 1 << 20, mpx_deadline_in(20000000000LL));
        _exit(r == 0 ? 0 : 1);
    }
    th_wait_ok(second, 20);
    th_wait_signaled(dead, SIGKILL, 5);
    ASSERT_EQ_INT(qsize(q), 3);
    expect_msg(q, 1, 0, MPX_NOWAIT);
    expect_msg(q, 1, 1, MPX_NOWAIT);
    expect_msg(q, 3, 0, MPX_NOWAIT);
    ASSERT_EQ_INT(qsize(q), 0);
    ASSERT_OK(put_msg(q, 4, 0, 3 << 20, MPX_NOWAIT));
    expect_msg(q, 4, 0, MPX_NOWAIT);
    mpx_queue_destroy(q);
}

TEST(large_get_claim_of_dead_consumer_is_given_back)
{
    /* A get of a large message copies outside the lock behind a claim. The consumer is
     * killed mid-copy (left unreaped), while a second consumer in another process waits for
     * a message: the second must notice the death and receive that same message, whole,
     * and a producer must have been able to put meanwhile. */
    mpx_queue *q = qnew(0, 0);
    ASSERT_OK(put_msg(q, 1, 0, 2 << 20, MPX_NOWAIT));
    ASSERT_OK(put_msg(q, 1, 1, 100, MPX_NOWAIT));
    pid_t dead = th_fork();
    if (dead == 0) {
        mpx_fault_arm("queue.get.copied", 0);
        struct id id;
        get_msg(q, MPX_FOREVER, &id, NULL);
        _exit(99); /* not reached */
    }
    int64_t until = mpx_now() + 10000000000LL;
    for (;;) {
        siginfo_t si = {0};
        if (waitid(P_PID, (id_t)dead, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == dead)
            break;
        ASSERT_MSG(mpx_now() < until, "the consumer never reached its fault point");
        usleep(1000);
    }
    /* The claim is still standing: puts go on regardless. */
    ASSERT_OK(put_msg(q, 2, 0, 1 << 20, MPX_NOWAIT));
    ASSERT_EQ_INT(qsize(q), 3);
    pid_t second = th_fork();
    if (second == 0) {
        struct id id;
        size_t len = 0;
        int r = get_msg(q, mpx_deadline_in(20000000000LL), &id, &len);
        _exit(r == 0 && id.p == 1 && id.s == 0 ? 0 : 1);
    }
    th_wait_ok(second, 20);
    th_wait_signaled(dead, SIGKILL, 5);
    expect_msg(q, 1, 1, MPX_NOWAIT);
    expect_msg(q, 2, 0, MPX_NOWAIT);
    ASSERT_EQ_INT(qsize(q), 0);
    mpx_queue_destroy(q);
}

TEST_LIST_START
TEST_ENTRY(create_and_defaults)
TEST_ENTRY(null_and_bad_arguments)
TEST_ENTRY(attach_refuses_bad_descriptors)
TEST_ENTRY(attach_refuses_corrupted_header)
TEST_ENTRY(attach_handles_are_independent)
TEST_ENTRY(fifo_in_process_varied_sizes)
TEST_ENTRY(fifo_across_fork)
TEST_ENTRY(fifo_exec_helper_attach)
TEST_ENTRY(nowait_gives_eagain)
TEST_ENTRY(deadline_gives_etimedout)
TEST_ENTRY(blocking_put_woken_by_consumer_process)
TEST_ENTRY(blocking_get_woken_by_producer_process)
TEST_ENTRY(blocking_get_interrupted_by_signal)
TEST_ENTRY(put_many_contiguous_with_concurrent_producers)
TEST_ENTRY(put_many_limits_and_atomicity)
TEST_ENTRY(get_many_with_limits)
TEST_ENTRY(consume_error_leaves_message)
TEST_ENTRY(size_is_exact)
TEST_ENTRY(close_semantics)
TEST_ENTRY(close_wakes_sleepers_in_other_processes)
TEST_ENTRY(task_done_and_join)
TEST_ENTRY(trylock_busy_while_another_process_holds_lock)
TEST_ENTRY(lock_holder_killed_inside_callback)
TEST_ENTRY(wait_for_each_event)
TEST_ENTRY(unbounded_put_never_blocks)
TEST_ENTRY(wrap_then_grow_while_wrapped)
TEST_ENTRY(ring_boundaries_exact_fit)
TEST_ENTRY(wrap_and_growth_randomized)
TEST_ENTRY(message_larger_than_ring)
TEST_ENTRY_TIMEOUT(message_64mib_between_processes, 90)
TEST_ENTRY(frames_through_queue)
TEST_ENTRY_TIMEOUT(mpmc_stress_bounded, 120)
TEST_ENTRY_TIMEOUT(mpmc_stress_unbounded_batches, 120)
TEST_ENTRY(blocked_get_uses_no_cpu)
TEST_ENTRY(fault_points_listed_and_arming)
TEST_ENTRY(fault_put_locked)
TEST_ENTRY(fault_put_copied)
TEST_ENTRY(fault_put_staged)
TEST_ENTRY(fault_put_committed)
TEST_ENTRY(fault_put_committed_in_exec_helper)
TEST_ENTRY(fault_put_grown_while_wrapped)
TEST_ENTRY(fault_get_locked)
TEST_ENTRY(fault_get_copied)
TEST_ENTRY(fault_get_staged)
TEST_ENTRY(fault_get_committed)
TEST_ENTRY(fault_task_done_staged)
TEST_ENTRY(fault_wait_flagged)
TEST_ENTRY(fault_put_committed_wakes_sleeping_consumer)
TEST_ENTRY(fault_get_committed_wakes_sleeping_producer)
TEST_ENTRY(fault_put_staged_keeps_consumer_asleep)
TEST_ENTRY(large_put_reservation_of_dead_producer_is_cancelled)
TEST_ENTRY(large_get_claim_of_dead_consumer_is_given_back)
TEST_ENTRY_TIMEOUT(random_sigkill_during_traffic, 60)
TEST_ENTRY_TIMEOUT(random_sigkill_of_blocked_and_busy_processes, 60)
TEST_LIST_END

HELPER_LIST_START
HELPER_ENTRY(echo)
HELPER_ENTRY(check)
HELPER_ENTRY(put)
HELPER_LIST_END

TEST_MAIN()
