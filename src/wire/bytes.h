/* src/wire/bytes.h - the byte-level helpers of the versioned encodings (error records,
 * log records): explicit little-endian integers and strict UTF-8 checks. Internal. */
#ifndef MPX_WIRE_BYTES_H
#define MPX_WIRE_BYTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Explicit little-endian access, so that the encoding is the same on every host and the
 * buffer needs no alignment. */
static inline void mpx__put16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static inline void mpx__put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline void mpx__put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline uint16_t mpx__get16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t mpx__get32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static inline uint64_t mpx__get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* ---- UTF-8 ---- */

/* The length of the valid UTF-8 sequence at s[0..n) (1..4), or 0 if s does not start one.
 * Strict, as Python's decoder: no overlong forms, no surrogates, nothing above U+10FFFF. NUL
 * counts as invalid here, because every text field must also be a C string. */
static inline size_t mpx__utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c == 0)
        return 0;
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

static inline bool mpx__utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t l = mpx__utf8_seq(s + i, n - i);
        if (l == 0)
            return false;
        i += l;
    }
    return true;
}

/* The size of s[0..n) once each byte that does not start a valid sequence is replaced by
 * U+FFFD (3 bytes), as Python's errors="replace" does: at most 3 * n. */
static inline size_t mpx__utf8_repaired_size(const unsigned char *s, size_t n)
{
    size_t size = 0;
    for (size_t i = 0; i < n;) {
        size_t l = mpx__utf8_seq(s + i, n - i);
        size += l ? l : 3;
        i += l ? l : 1;
    }
    return size;
}

/* Copies s[0..n) to d with that repair; d has room for mpx__utf8_repaired_size(s, n)
 * bytes. Returns the number written. */
static inline size_t mpx__utf8_repair_copy(unsigned char *d, const unsigned char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t l = mpx__utf8_seq(s + i, n - i);
        if (l) {
            memcpy(d + o, s + i, l);
            o += l;
            i += l;
        } else {
            memcpy(d + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    return o;
}

#endif /* MPX_WIRE_BYTES_H */
