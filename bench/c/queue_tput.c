/* bench/c/queue_tput.c - libmpx queue throughput without Python, one producer to one consumer.
 *
 * The parent creates a queue and forks a consumer, which inherits the handle. Once the
 * consumer reports that it runs, the parent puts N messages of S bytes (singly, or with
 * mpx_queue_put_many in batches of B) and the consumer takes them (mpx_queue_get_many_with
 * up to B at a time), copying each out into its own buffer as a Python consumer would into
 * a bytes object. Every message carries its sequence number, checked in order by the
 * consumer, so a lost, duplicated or reordered message fails the run. The time runs from
 * the first put to the consumer's last get (both read CLOCK_MONOTONIC, shared by all
 * processes).
 *
 * This is the ceiling for the Python Queue built on the same engine: the difference is the
 * cost of pickling and of the interpreter.
 *
 * Usage: queue_tput [-n MESSAGES] [-s BYTES] [-b BATCH] [-m MAXSIZE]
 * Prints one JSON line: {"bench":"queue_tput",...,"msgs_per_s":...,"gbps":...}.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mpx/error.h"
#include "mpx/queue.h"

/* A put or get that waits this long means the other side is gone. */
#define STALL_NS (30ll * 1000 * 1000 * 1000)

struct shared {
    _Atomic int ready;
    _Atomic int64_t t_end;
    _Atomic int failed;
};

struct consumer {
    unsigned char *buf; /* owned by the consumer; room for one message */
    size_t size;
    uint64_t next;      /* the sequence number expected next */
    int bad;
};

static int consume(void *ctx, const void *msg, size_t len)
{
    struct consumer *c = ctx;
    if (len != c->size) {
        c->bad = 1;
        return 0;
    }
    memcpy(c->buf, msg, len);
    uint64_t seq = 0;
    memcpy(&seq, c->buf, len < sizeof seq ? len : sizeof seq);
    uint64_t want = c->next;
    if (len < sizeof seq)
        want &= (1ull << (8 * len)) - 1;
    if (seq != want)
        c->bad = 1;
    c->next++;
    return 0;
}

static int run_consumer(mpx_queue *q, struct shared *sh, uint64_t n, size_t size, size_t batch)
{
    struct consumer c = {.buf = malloc(size ? size : 1), .size = size};
    if (c.buf == NULL)
        return 1;
    atomic_store(&sh->ready, 1);
    uint64_t got = 0;
    while (got < n) {
        size_t k = 0;
        size_t want = batch;
        if (want > n - got)
            want = (size_t)(n - got);
        int r = mpx_queue_get_many_with(q, want, consume, &c, &k, 0, mpx_deadline_in(STALL_NS));
        if (r == -EINTR)
            continue;
        if (r < 0) {
            fprintf(stderr, "queue_tput: get: %s\n", mpx_strerror(r));
            return 1;
        }
        got += k;
    }
    atomic_store(&sh->t_end, mpx_now());
    free(c.buf);
    return c.bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    long long n = 1000000;
    long long size = 32;
    long long batch = 1;
    long long maxsize = 0;
    int opt;
    while ((opt = getopt(argc, argv, "n:s:b:m:")) != -1) {
        switch (opt) {
        case 'n':
            n = atoll(optarg);
            break;
        case 's':
            size = atoll(optarg);
            break;
        case 'b':
            batch = atoll(optarg);
            break;
        case 'm':
            maxsize = atoll(optarg);
            break;
        default:
            fprintf(stderr, "usage: %s [-n MESSAGES] [-s BYTES] [-b BATCH] [-m MAXSIZE]\n",
                    argv[0]);
            return 2;
        }
    }
    if (n < 1 || size < 1 || batch < 1 || batch > 65536 || maxsize < 0 ||
        (maxsize > 0 && batch > maxsize)) {
        fprintf(stderr, "queue_tput: bad arguments\n");
        return 2;
    }

    struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    unsigned char *msgs = calloc((size_t)batch, (size_t)size);
    struct iovec *iov = calloc((size_t)batch, sizeof *iov);
    mpx_msgv *mv = calloc((size_t)batch, sizeof *mv);
    if (sh == MAP_FAILED || msgs == NULL || iov == NULL || mv == NULL) {
        perror("queue_tput: allocation");
        return 1;
    }
    for (long long i = 0; i < batch; i++) {
        iov[i].iov_base = msgs + i * size;
        iov[i].iov_len = (size_t)size;
        mv[i].iov = &iov[i];
        mv[i].iovcnt = 1;
    }

    mpx_queue *q = NULL;
    mpx_queue_options qopt = {.maxsize = (uint64_t)maxsize};
    int r = mpx_queue_create(&q, &qopt);
    if (r < 0) {
        fprintf(stderr, "queue_tput: create: %s\n", mpx_strerror(r));
        return 1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("queue_tput: fork");
        return 1;
    }
    if (pid == 0)
        _exit(run_consumer(q, sh, (uint64_t)n, (size_t)size, (size_t)batch));

    while (!atomic_load(&sh->ready))
        usleep(100);

    int rc = 0;
    size_t seqlen = size < 8 ? (size_t)size : 8;
    int64_t t0 = mpx_now();
    for (uint64_t seq = 0; seq < (uint64_t)n && rc == 0;) {
        uint64_t k = (uint64_t)batch;
        if (k > (uint64_t)n - seq)
            k = (uint64_t)n - seq;
        for (uint64_t j = 0; j < k; j++) {
            uint64_t s = seq + j;
            memcpy(msgs + j * (uint64_t)size, &s, seqlen);
        }
        /* A deadline rather than MPX_FOREVER: with a maxsize, a dead consumer would leave
         * the producer waiting for room forever. */
        mpx_deadline_t dl = mpx_deadline_in(STALL_NS);
        do {
            r = k == 1 ? mpx_queue_put(q, msgs, (size_t)size, dl)
                       : mpx_queue_put_many(q, mv, (size_t)k, dl);
        } while (r == -EINTR);
        if (r < 0) {
            fprintf(stderr, "queue_tput: put: %s\n", mpx_strerror(r));
            rc = 1;
        }
        seq += k;
    }

    int status = 0;
    if (rc != 0)
        kill(pid, SIGKILL);
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "queue_tput: consumer failed (lost, duplicated or reordered messages?)\n");
        rc = 1;
    }
    mpx_queue_destroy(q);
    if (rc != 0)
        return rc;

    double secs = (double)(atomic_load(&sh->t_end) - t0) / 1e9;
    printf("{\"bench\":\"queue_tput\",\"n\":%lld,\"bytes\":%lld,\"batch\":%lld,"
           "\"maxsize\":%lld,\"seconds\":%.6f,\"msgs_per_s\":%.1f,\"gbps\":%.4f}\n",
           n, size, batch, maxsize, secs, (double)n / secs, (double)n * (double)size / secs / 1e9);
    free(msgs);
    free(iov);
    free(mv);
    munmap(sh, sizeof *sh);
    return 0;
}
