/* mpx/fault.h - fault injection for tests.
 *
 * libmpx marks named points inside its cross-process operations (for example
 * "queue.put.copied": inside a put, half of the message copied, nothing committed). A test
 * arms one point; when the calling process next passes it `countdown` more times, the
 * process sends itself SIGKILL there. Tests use this to prove that a process killed at any
 * point leaves shared objects consistent for the others. docs/queue.md lists the points.
 *
 * An unarmed point costs one predictable branch. The arming is per process and is not
 * inherited across exec; it is inherited across fork.
 */
#ifndef MPX_FAULT_H
#define MPX_FAULT_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Arms `point` (copied) so that the process is killed when it reaches the point for the
 * (countdown+1)-th time. NULL disarms. Returns 0 or -EINVAL (name too long). Not
 * thread-safe with respect to other arm calls. The environment variable MPX_FAULT="name" or
 * "name:countdown" arms a point at library load, for tests that exec a program. */
MPX_API int mpx_fault_arm(const char *point, unsigned countdown);

/* The names of every fault point compiled into the library, NULL-terminated. */
MPX_API const char *const *mpx_fault_points(void);

#ifdef __cplusplus
}
#endif
#endif /* MPX_FAULT_H */
