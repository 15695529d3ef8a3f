/* A growing text buffer (src/wire/text.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire/text.h"

void mpx__text_add(struct mpx__text *t, const char *s, size_t n)
{
    if (t->failed)
        return;
    if (n >= t->cap - t->len) {
        size_t cap = t->cap ? t->cap : 256;
        while (n >= cap - t->len) {
            if (cap > SIZE_MAX / 2) {
                t->failed = true;
                return;
            }
            cap *= 2;
        }
        char *ns = realloc(t->s, cap);
        if (!ns) {
            t->failed = true;
            return;
        }
        t->s = ns;
        t->cap = cap;
    }
    if (n)
        memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = '\0';
}

void mpx__text_adds(struct mpx__text *t, const char *s)
{
    mpx__text_add(t, s, strlen(s));
}
