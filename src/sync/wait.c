/* Spinning before sleeping: a wake-up through the kernel costs tens of microseconds on a
 * virtual machine, so a waiter first polls for a short, bounded time. */
#include "sync_internal.h"

bool mpx__spin_until(bool (*holds)(const void *ctx), const void *ctx, uint32_t spin_ns,
                     mpx_deadline_t deadline)
{
    if (spin_ns == 0)
        return holds(ctx);
    int64_t end = mpx__now_ns() + spin_ns;
    if (deadline != MPX_FOREVER && deadline < end)
        end = deadline;
    for (unsigned i = 1;; i++) {
        if (holds(ctx))
            return true;
        mpx__cpu_relax();
        if ((i & 63u) == 0 && mpx__now_ns() >= end)
            return false;
    }
}

static bool word_changed(const void *ctx)
{
    const uintptr_t *c = ctx;
    return atomic_load_explicit((const _Atomic uint32_t *)c[0], memory_order_acquire) !=
           (uint32_t)c[1];
}

bool mpx__spin_while_eq(const _Atomic uint32_t *word, uint32_t value, uint32_t spin_ns,
                        mpx_deadline_t deadline)
{
    uintptr_t c[2] = {(uintptr_t)word, value};
    return mpx__spin_until(word_changed, c, spin_ns, deadline);
}
