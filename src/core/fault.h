/* Internal side of <mpx/fault.h>: the list of points and the macro that marks one. */
#ifndef MPX_FAULT_INTERNAL_H
#define MPX_FAULT_INTERNAL_H

/* Every fault point of the library: X(name). Keep docs/queue.md and docs/sync.md in step. */
#define MPX__FAULT_POINTS(X)                                                                 \
    X("queue.put.locked")                                                                    \
    X("queue.put.grown")                                                                     \
    X("queue.put.copied")                                                                    \
    X("queue.put.staged")                                                                    \
    X("queue.put.committed")                                                                 \
    X("queue.get.locked")                                                                    \
    X("queue.get.copied")                                                                    \
    X("queue.get.staged")                                                                    \
    X("queue.get.committed")                                                                 \
    X("queue.task_done.staged")                                                              \
    X("queue.wait.flagged")                                                                  \
    X("lock.acquired")                                                                       \
    X("lock.wait.flagged")                                                                   \
    X("sem.acquired")                                                                        \
    X("cond.wait.registered")                                                                \
    X("cond.notify.granted")                                                                 \
    X("barrier.arrived")                                                                     \
    X("barrier.guarded")

#define MPX__FAULT_NAME(name) name,

extern int mpx__fault_armed;
void mpx__fault_hit(const char *point);

#define MPX__FAULT(name)                                                                     \
    do {                                                                                     \
        if (__builtin_expect(mpx__fault_armed, 0))                                           \
            mpx__fault_hit(name);                                                            \
    } while (0)

#endif
