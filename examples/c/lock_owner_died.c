/* A process dies holding a lock; the next process to want it is told, and goes on.
 *
 * The parent shares a lock and a counter with a worker. The worker takes the lock, starts
 * an update of the counter and "crashes" (exits without releasing). The parent's acquire
 * does not hang: it returns MPX_EOWNERDEAD with the dead worker's pid, holding the lock,
 * and repairs the half-done update before releasing. A barrier tells the parent when the
 * worker holds the lock.
 */
#include <mpx/mpx.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

struct shared {
    long value;
    int updating; /* set while an update is half done */
};

int main(void)
{
    mpx_lock *lock = NULL;
    mpx_barrier *ready = NULL;
    struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED || mpx_lock_create(&lock, MPX_LOCK_PLAIN) < 0 ||
        mpx_barrier_create(&ready, 2) < 0) {
        fprintf(stderr, "set-up failed\n");
        return 1;
    }

    pid_t worker = fork();
    if (worker == 0) {
        mpx_lock_acquire(lock, MPX_FOREVER, NULL);
        sh->updating = 1;
        sh->value += 100;
        mpx_barrier_wait(ready, MPX_FOREVER);
        _exit(3); /* dies holding the lock, the update half done */
    }
    if (mpx_barrier_wait(ready, mpx_deadline_in(5000000000)) < 0) {
        fprintf(stderr, "the worker did not arrive\n");
        return 1;
    }
    printf("the worker holds the lock\n");

    pid_t dead = 0;
    int r = mpx_lock_acquire(lock, mpx_deadline_in(10000000000), &dead);
    if (r != MPX_EOWNERDEAD) {
        fprintf(stderr, "expected MPX_EOWNERDEAD, got %s\n", mpx_errname(r));
        return 1;
    }
    printf("acquire: %s (%s), dead holder is the worker: %s\n", mpx_errname(r),
           mpx_strerror(r), dead == worker ? "yes" : "no");
    if (sh->updating) { /* repair what the dead holder left half done */
        sh->value -= 100;
        sh->updating = 0;
    }
    printf("repaired, value = %ld\n", sh->value);
    mpx_lock_release(lock);

    r = mpx_lock_acquire(lock, MPX_NOWAIT, NULL);
    printf("the lock works again: %s\n", r == 0 ? "yes" : mpx_errname(r));
    mpx_lock_release(lock);

    int status;
    waitpid(worker, &status, 0);
    mpx_barrier_destroy(ready);
    mpx_lock_destroy(lock);
    munmap(sh, sizeof *sh);
    return dead == worker && WIFEXITED(status) && WEXITSTATUS(status) == 3 ? 0 : 1;
}
