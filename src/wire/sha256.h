/* src/wire/sha256.h - SHA-256 (FIPS 180-4) and HMAC-SHA-256 (RFC 2104), for the object
 * server's authentication challenge (SPEC section 6: a wrong authkey is refused). Internal:
 * the server engine uses it; nothing here is public API.
 *
 * A streaming context, one-shot helpers, and a comparison whose time does not depend on
 * where two digests differ. No allocation, no system call. */
#ifndef MPX_WIRE_SHA256_H
#define MPX_WIRE_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define MPX_SHA256_SIZE 32u  /* digest bytes */
#define MPX_SHA256_BLOCK 64u /* block bytes */

typedef struct mpx__sha256_ctx {
    uint32_t h[8];                    /* the chaining state */
    uint64_t bytes;                   /* message bytes so far */
    unsigned char buf[MPX_SHA256_BLOCK]; /* a partial block */
    size_t used;                      /* bytes in buf */
} mpx__sha256_ctx;

void mpx__sha256_init(mpx__sha256_ctx *c);
void mpx__sha256_update(mpx__sha256_ctx *c, const void *data, size_t len);
void mpx__sha256_final(mpx__sha256_ctx *c, unsigned char out[MPX_SHA256_SIZE]);
void mpx__sha256(const void *data, size_t len, unsigned char out[MPX_SHA256_SIZE]);

/* HMAC-SHA-256 of msg[0..len) under key[0..keylen) (any key length: a key longer than a
 * block is hashed first, as RFC 2104 says). */
void mpx__hmac_sha256(const void *key, size_t keylen, const void *msg, size_t len,
                      unsigned char out[MPX_SHA256_SIZE]);

/* 1 when a[0..n) equals b[0..n), else 0, in time that depends on n only. */
int mpx__equal_ct(const void *a, const void *b, size_t n);

#endif /* MPX_WIRE_SHA256_H */
