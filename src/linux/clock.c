/* Monotonic clock and deadline arithmetic. */
#include <math.h>

#include "linux.h"

int64_t mpx__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct timespec mpx__ts_from_ns(int64_t ns)
{
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
    return ts;
}

bool mpx__deadline_passed(mpx_deadline_t d)
{
    if (d == MPX_FOREVER)
        return false;
    return d <= 0 || mpx__now_ns() >= d;
}

const char *mpx_version(void)
{
#define MPX__STR2(x) #x
#define MPX__STR(x) MPX__STR2(x)
    return MPX__STR(MPX_VERSION_MAJOR) "." MPX__STR(MPX_VERSION_MINOR) "." MPX__STR(
        MPX_VERSION_PATCH);
}

int64_t mpx_now(void)
{
    return mpx__now_ns();
}

mpx_deadline_t mpx_deadline_in(int64_t ns)
{
    int64_t now = mpx__now_ns();
    if (ns <= 0)
        return now;
    if (ns >= MPX_FOREVER - now)
        return MPX_FOREVER;
    return now + ns;
}

mpx_deadline_t mpx_deadline_in_seconds(double seconds)
{
    if (isnan(seconds) || seconds <= 0)
        return mpx_deadline_in(0);
    /* 2^62 ns is about 146 years: anything beyond is "forever". */
    if (seconds >= 4.6e9)
        return MPX_FOREVER;
    return mpx_deadline_in((int64_t)(seconds * 1e9));
}

int mpx__sleep_until(mpx_deadline_t deadline)
{
    struct timespec ts = mpx__ts_from_ns(deadline);
    int r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
    return r == 0 ? 0 : -r;
}
