/* The smallest libmpx program: a forked child puts a message, the parent gets it. */
#include <mpx/mpx.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void)
{
    mpx_queue *q;
    int r = mpx_queue_create(&q, NULL);
    if (r < 0) {
        fprintf(stderr, "create: %s\n", mpx_strerror(r));
        return 1;
    }
    pid_t pid = fork();
    if (pid == 0) { /* the child inherits the queue */
        r = mpx_queue_put(q, "hello from the child", 20, MPX_FOREVER);
        _exit(r < 0 ? 1 : 0);
    }
    void *msg;
    size_t len;
    r = mpx_queue_get(q, &msg, &len, mpx_deadline_in(5000000000LL)); /* wait up to 5 s */
    if (r < 0) {
        fprintf(stderr, "get: %s\n", mpx_strerror(r));
        return 1;
    }
    printf("%.*s\n", (int)len, (char *)msg);
    free(msg);
    waitpid(pid, NULL, 0);
    mpx_queue_destroy(q);
    return 0;
}
