/* mpx/common.h - definitions shared by every libmpx facility.
 *
 * Conventions used throughout libmpx:
 *  - Functions return int: 0 on success or a negative error code (a negative errno value or
 *    one of the MPX_E* codes of <mpx/error.h>). errno is never part of the API.
 *  - Blocking functions take an absolute deadline on CLOCK_MONOTONIC in nanoseconds
 *    (mpx_deadline_t). MPX_FOREVER waits without limit; MPX_NOWAIT (or any time already
 *    passed) never sleeps. A call whose deadline passes returns -ETIMEDOUT.
 *  - A blocking call interrupted by a signal handler returns -EINTR so that the caller can
 *    run its signal checks (Python's Ctrl-C) and call again with the same deadline.
 */
#ifndef MPX_COMMON_H
#define MPX_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(MPX_BUILDING) && !defined(MPX_STATIC)
#define MPX_API __attribute__((visibility("default")))
#else
#define MPX_API
#endif

/* Library version, also available at run time from mpx_version(). */
#define MPX_VERSION_MAJOR 0
#define MPX_VERSION_MINOR 1
#define MPX_VERSION_PATCH 0

/* Absolute point in time on CLOCK_MONOTONIC, in nanoseconds. */
typedef int64_t mpx_deadline_t;

#define MPX_FOREVER INT64_MAX
#define MPX_NOWAIT ((mpx_deadline_t)0)

/* Returns "MAJOR.MINOR.PATCH". Async-signal-safe. */
MPX_API const char *mpx_version(void);

/* Current CLOCK_MONOTONIC time in nanoseconds. Async-signal-safe. */
MPX_API int64_t mpx_now(void);

/* The deadline `ns` nanoseconds from now; negative `ns` counts as 0, and a span too large to
 * represent gives MPX_FOREVER. Async-signal-safe. */
MPX_API mpx_deadline_t mpx_deadline_in(int64_t ns);

/* The deadline `seconds` from now, for callers holding a floating-point timeout. A negative
 * value counts as 0; NaN is treated as 0; infinity or a value too large gives MPX_FOREVER. */
MPX_API mpx_deadline_t mpx_deadline_in_seconds(double seconds);

#ifdef __cplusplus
}
#endif
#endif /* MPX_COMMON_H */
