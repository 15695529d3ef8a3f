/* bench/c/futex_pingpong.c - the kernel wake-up floor for a cross-process round trip.
 *
 * Two processes (parent and a forked child) share one page holding two futex words, `ping`
 * and `pong`. Round trip i: the parent stores i into ping and wakes the child, then sleeps
 * until pong == i; the child, sleeping until ping == i, stores i into pong and wakes the
 * parent. Neither side spins: each waits in FUTEX_WAIT (through the library's wrapper, the
 * same call the queue uses), so every round trip contains two real kernel wake-ups, which
 * is the floor that any sleeping queue ping-pong pays on this machine.
 *
 * With -g GAP_US, the parent busy-waits GAP_US after each reply before it posts again, so
 * that the child has surely gone to sleep (and its CPU may have gone idle), and the child
 * stamps CLOCK_MONOTONIC as soon as it wakes. The line then also carries "wake_p50_us"
 * etc.: the one-way latency from the parent's post to the child running again, the floor
 * for waking a waiter that sleeps (bench_sync.py's "wake-up of a sleeping waiter" row).
 *
 * Usage: futex_pingpong [-n ROUND_TRIPS] [-w WARMUP] [-g GAP_US]
 * Prints one JSON line: {"bench":"futex_pingpong","n":...,"p50_us":...,"p90_us":...,...}.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "linux.h"

struct words {
    _Atomic uint32_t ping __attribute__((aligned(64)));
    _Atomic uint32_t pong __attribute__((aligned(64)));
    _Atomic int64_t woke_ns; /* -g: when the child last woke (written before it posts pong) */
};

/* Sleeps until *w == want. The value can only move forward to `want`, so waiting on the
 * value last seen is enough: if it changes between the load and the syscall, the kernel
 * refuses to sleep (EAGAIN, folded into 0 by the wrapper) and the loop looks again. */
static int wait_for(_Atomic uint32_t *w, uint32_t want)
{
    for (;;) {
        uint32_t v = atomic_load_explicit(w, memory_order_acquire);
        if (v == want)
            return 0;
        int r = mpx__futex_wait(w, v, MPX_FOREVER);
        if (r < 0 && r != -EINTR)
            return r;
    }
}

static void post(_Atomic uint32_t *w, uint32_t v)
{
    atomic_store_explicit(w, v, memory_order_release);
    mpx__futex_wake(w, 1);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double pct_us(const int64_t *sorted, size_t n, double p)
{
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return (double)sorted[i] / 1000.0;
}

int main(int argc, char **argv)
{
    long n = 20000, warmup = 1000, gap_us = 0;
    int opt;
    while ((opt = getopt(argc, argv, "n:w:g:")) != -1) {
        switch (opt) {
        case 'n':
            n = strtol(optarg, NULL, 10);
            break;
        case 'w':
            warmup = strtol(optarg, NULL, 10);
            break;
        case 'g':
            gap_us = strtol(optarg, NULL, 10);
            break;
        default:
            fprintf(stderr, "usage: %s [-n ROUND_TRIPS] [-w WARMUP] [-g GAP_US]\n", argv[0]);
            return 2;
        }
    }
    if (n < 1 || warmup < 0 || gap_us < 0) {
        fprintf(stderr, "futex_pingpong: bad -n, -w or -g\n");
        return 2;
    }

    struct words *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                            -1, 0);
    int64_t *rtt = malloc((size_t)n * sizeof *rtt);
    int64_t *wake = malloc((size_t)n * sizeof *wake);
    if (sh == MAP_FAILED || rtt == NULL || wake == NULL) {
        perror("futex_pingpong: mmap/malloc");
        return 1;
    }
    atomic_init(&sh->ping, 0);
    atomic_init(&sh->pong, 0);
    atomic_init(&sh->woke_ns, 0);
    uint32_t total = (uint32_t)(n + warmup);

    pid_t pid = fork();
    if (pid < 0) {
        perror("futex_pingpong: fork");
        return 1;
    }
    if (pid == 0) {
        for (uint32_t i = 1; i <= total; i++) {
            if (wait_for(&sh->ping, i) < 0)
                _exit(1);
            if (gap_us > 0)
                atomic_store_explicit(&sh->woke_ns, mpx__now_ns(), memory_order_relaxed);
            post(&sh->pong, i);
        }
        _exit(0);
    }

    int rc = 0;
    int64_t t_reply = mpx__now_ns();
    for (uint32_t i = 1; i <= total; i++) {
        if (gap_us > 0)
            while (mpx__now_ns() - t_reply < gap_us * 1000)
                ;
        int64_t t0 = mpx__now_ns();
        post(&sh->ping, i);
        if (wait_for(&sh->pong, i) < 0) {
            fprintf(stderr, "futex_pingpong: futex wait failed\n");
            kill(pid, SIGKILL);
            rc = 1;
            break;
        }
        int64_t t1 = mpx__now_ns();
        t_reply = t1;
        if (i > (uint32_t)warmup) {
            rtt[i - 1 - warmup] = t1 - t0;
            /* post(pong) is a release store after the stamp; wait_for's load acquires it. */
            wake[i - 1 - warmup] = atomic_load_explicit(&sh->woke_ns, memory_order_relaxed) - t0;
        }
    }
    int status = 0;
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        rc = 1;
    if (rc != 0) {
        fprintf(stderr, "futex_pingpong: child failed\n");
        return rc;
    }

    double sum = 0;
    for (long i = 0; i < n; i++)
        sum += (double)rtt[i];
    qsort(rtt, (size_t)n, sizeof *rtt, cmp_i64);
    printf("{\"bench\":\"futex_pingpong\",\"n\":%ld,\"p50_us\":%.3f,\"p90_us\":%.3f,"
           "\"p99_us\":%.3f,\"min_us\":%.3f,\"mean_us\":%.3f",
           n, pct_us(rtt, (size_t)n, 0.50), pct_us(rtt, (size_t)n, 0.90),
           pct_us(rtt, (size_t)n, 0.99), (double)rtt[0] / 1000.0, sum / (double)n / 1000.0);
    if (gap_us > 0) {
        qsort(wake, (size_t)n, sizeof *wake, cmp_i64);
        printf(",\"gap_us\":%ld,\"wake_p50_us\":%.3f,\"wake_p90_us\":%.3f,\"wake_min_us\":%.3f",
               gap_us, pct_us(wake, (size_t)n, 0.50), pct_us(wake, (size_t)n, 0.90),
               (double)wake[0] / 1000.0);
    }
    printf("}\n");
    free(wake);
    free(rtt);
    munmap(sh, sizeof *sh);
    return 0;
}
