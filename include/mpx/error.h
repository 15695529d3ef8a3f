/* mpx/error.h - error codes.
 *
 * Every libmpx function reports failure as a negative int: either a negative errno value
 * (-EINVAL, -ENOMEM, -ETIMEDOUT, ...) or one of the project codes below, which lie outside
 * the errno range. mpx_strerror() describes both.
 */
#ifndef MPX_ERROR_H
#define MPX_ERROR_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The table of project-specific codes: X(name, value, description). */
#define MPX_ERRNO_MAP(X)                                                                     \
    X(ECLOSED, -20001, "object is closed")                                                 \
    X(EOWNERDEAD, -20002, "the owner of a lock died while holding it")                     \
    X(EPEERDIED, -20003, "the process at the other end died")                              \
    X(EBADSEG, -20004, "not a valid libmpx shared segment")                                \
    X(EBADFRAME, -20005, "malformed or truncated frame")                                   \
    X(ETOOBIG, -20006, "size exceeds what the object can hold")                            \
    X(ETOOMANY, -20007, "called more times than items were put")                           \
    X(EVERSION, -20008, "unsupported format version")                                      \
    X(EBROKEN, -20009, "the barrier is broken")

enum {
#define MPX__ERRNO_ENUM(name, value, text) MPX_##name = (value),
    MPX_ERRNO_MAP(MPX__ERRNO_ENUM)
#undef MPX__ERRNO_ENUM
};

/* Describes an error code returned by libmpx (negative errno or MPX_E*). Never returns NULL;
 * the string is static. Thread-safe; async-signal-safe. */
MPX_API const char *mpx_strerror(int err);

/* The symbolic name of a code ("ETIMEDOUT", "MPX_ECLOSED"), or "EUNKNOWN". Static string. */
MPX_API const char *mpx_errname(int err);

#ifdef __cplusplus
}
#endif
#endif /* MPX_ERROR_H */
