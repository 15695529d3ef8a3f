/* Fault injection: named points at which a test can make the process kill itself. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fault.h"
#include "mpx/fault.h"

int mpx__fault_armed;
static char armed_point[64];
static unsigned armed_countdown;

static const char *const points[] = {MPX__FAULT_POINTS(MPX__FAULT_NAME) NULL};

const char *const *mpx_fault_points(void)
{
    return points;
}

int mpx_fault_arm(const char *point, unsigned countdown)
{
    if (!point) {
        mpx__fault_armed = 0;
        return 0;
    }
    if (strlen(point) >= sizeof armed_point)
        return -EINVAL;
    strcpy(armed_point, point);
    armed_countdown = countdown;
    mpx__fault_armed = 1;
    return 0;
}

void mpx__fault_hit(const char *point)
{
    if (strcmp(point, armed_point) != 0)
        return;
    if (armed_countdown > 0) {
        armed_countdown--;
        return;
    }
    kill(getpid(), SIGKILL);
    /* SIGKILL is delivered before kill() returns to a single-threaded caller; in a
     * multi-threaded one it is delivered promptly. Never go on past the point. */
    for (;;)
        pause();
}

__attribute__((constructor)) static void fault_from_env(void)
{
    const char *s = getenv("MPX_FAULT");
    if (!s || !*s)
        return;
    char name[64];
    size_t n = strcspn(s, ":");
    if (n >= sizeof name)
        return;
    memcpy(name, s, n);
    name[n] = 0;
    unsigned countdown = s[n] == ':' ? (unsigned)strtoul(s + n + 1, NULL, 10) : 0;
    mpx_fault_arm(name, countdown);
}
