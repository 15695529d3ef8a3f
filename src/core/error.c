/* The error table behind mpx_strerror() and mpx_errname(). */
#include <errno.h>
#include <string.h>

#include "mpx/error.h"

const char *mpx_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
#define MPX__ERRNO_TEXT(name, value, text)                                                   \
    case MPX_##name:                                                                         \
        return text;
        MPX_ERRNO_MAP(MPX__ERRNO_TEXT)
#undef MPX__ERRNO_TEXT
    }
    if (err < 0 && err > -4096) {
        /* strerrordesc_np is thread-safe and static (glibc 2.32+). */
        const char *s = strerrordesc_np(-err);
        if (s)
            return s;
    }
    return "unknown error";
}

const char *mpx_errname(int err)
{
    switch (err) {
    case 0:
        return "OK";
#define MPX__ERRNO_NAME(name, value, text)                                                   \
    case MPX_##name:                                                                         \
        return "MPX_" #name;
        MPX_ERRNO_MAP(MPX__ERRNO_NAME)
#undef MPX__ERRNO_NAME
    }
    if (err < 0 && err > -4096) {
        const char *s = strerrorname_np(-err);
        if (s)
            return s;
    }
    return "EUNKNOWN";
}
