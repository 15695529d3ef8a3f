/* src/wire/text.h - a growing text buffer for the formatters (error records, log
 * records). Internal. */
#ifndef MPX_WIRE_TEXT_H
#define MPX_WIRE_TEXT_H

#include <stdbool.h>
#include <stddef.h>

/* Start from {0}. After any add, s is NUL-terminated (never NULL) unless `failed`: an
 * allocation failed or the size would overflow, and later adds do nothing. The owner frees
 * s. */
struct mpx__text {
    char *s;
    size_t len, cap;
    bool failed;
};

/* Appends s[0..n). */
void mpx__text_add(struct mpx__text *t, const char *s, size_t n);

/* Appends the C string s. */
void mpx__text_adds(struct mpx__text *t, const char *s);

#endif /* MPX_WIRE_TEXT_H */
