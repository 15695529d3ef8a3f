/* Several producer processes and consumer processes share one bounded queue; one of the
 * producers is SIGKILLed in the middle of its work, and the queue carries on: every message
 * that was put arrives whole, and nothing hangs. */
#include <mpx/mpx.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum { PRODUCERS = 3, CONSUMERS = 2, PER_PRODUCER = 20000 };

struct msg {
    uint32_t producer, seq;
    uint64_t check;
    char text[48];
};

static uint64_t checksum(const struct msg *m)
{
    return (uint64_t)m->producer * 1000003u + m->seq * 7919u + strlen(m->text);
}

static void produce(mpx_queue *q, uint32_t id)
{
    for (uint32_t i = 0; i < PER_PRODUCER; i++) {
        struct msg m = {.producer = id, .seq = i};
        snprintf(m.text, sizeof m.text, "item %u of producer %u", i, id);
        m.check = checksum(&m);
        if (mpx_queue_put(q, &m, sizeof m, MPX_FOREVER) < 0)
            _exit(1);
    }
    _exit(0);
}

/* Counts messages until it gets an empty one (the stop marker). Exit status: 0 if every
 * message was intact. */
static void consume(mpx_queue *q, int fd_out)
{
    uint64_t n = 0;
    for (;;) {
        void *p;
        size_t len;
        if (mpx_queue_get(q, &p, &len, MPX_FOREVER) < 0)
            _exit(2);
        if (len == 0) {
            free(p);
            break;
        }
        struct msg m;
        memcpy(&m, p, sizeof m);
        free(p);
        if (len != sizeof m || m.check != checksum(&m))
            _exit(3);
        n++;
    }
    if (write(fd_out, &n, sizeof n) != sizeof n)
        _exit(4);
    _exit(0);
}

int main(void)
{
    mpx_queue *q;
    mpx_queue_options opt = {.maxsize = 64};
    int r = mpx_queue_create(&q, &opt);
    if (r < 0) {
        fprintf(stderr, "create: %s\n", mpx_strerror(r));
        return 1;
    }
    int pfd[2];
    if (pipe(pfd) < 0)
        return 1;
    pid_t consumers[CONSUMERS], producers[PRODUCERS];
    for (int i = 0; i < CONSUMERS; i++)
        if ((consumers[i] = fork()) == 0)
            consume(q, pfd[1]);
    for (int i = 0; i < PRODUCERS; i++)
        if ((producers[i] = fork()) == 0)
            produce(q, (uint32_t)i);

    usleep(20000);
    kill(producers[0], SIGKILL); /* dies wherever it is, possibly inside a put */
    int killed = 0;
    for (int i = 0; i < PRODUCERS; i++) {
        int st;
        waitpid(producers[i], &st, 0);
        killed += WIFSIGNALED(st);
    }
    for (int i = 0; i < CONSUMERS; i++)
        mpx_queue_put(q, "", 0, MPX_FOREVER); /* one stop marker per consumer */
    uint64_t total = 0;
    int ok = 1;
    for (int i = 0; i < CONSUMERS; i++) {
        int st;
        uint64_t n = 0;
        waitpid(consumers[i], &st, 0);
        ok &= WIFEXITED(st) && WEXITSTATUS(st) == 0;
        if (read(pfd[0], &n, sizeof n) == sizeof n)
            total += n;
    }
    printf("%d producers (%d killed mid-way), %d consumers\n", PRODUCERS, killed, CONSUMERS);
    printf("messages received: %llu (at least %d expected from the producers that finished)\n",
           (unsigned long long)total, (PRODUCERS - killed) * PER_PRODUCER);
    printf("every message intact: %s\n", ok ? "yes" : "NO");
    mpx_queue_destroy(q);
    return ok && total >= (uint64_t)(PRODUCERS - killed) * PER_PRODUCER ? 0 : 1;
}
