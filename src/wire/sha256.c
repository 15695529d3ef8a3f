/* SHA-256 as FIPS 180-4 specifies it, and HMAC over it as RFC 2104 does (see sha256.h). */
#include <string.h>

#include "wire/sha256.h"

/* The first 32 bits of the fractional parts of the cube roots of the first 64 primes. */
static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
};

static uint32_t rotr(uint32_t x, unsigned n) { return (x >> n) | (x << (32 - n)); }

static uint32_t get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (24 - 8 * i));
}

/* Processes one 64-byte block into the chaining state. */
static void compress(uint32_t h[8], const unsigned char *block)
{
    uint32_t w[64];
    for (int t = 0; t < 16; t++)
        w[t] = get_be32(block + 4 * t);
    for (int t = 16; t < 64; t++) {
        uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
        uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int t = 0; t < 64; t++) {
        uint32_t s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = k + s1 + ch + K[t] + w[t];
        uint32_t s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
        uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
        uint32_t t2 = s0 + maj;
        k = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += k;
}

void mpx__sha256_init(mpx__sha256_ctx *c)
{
    /* The first 32 bits of the fractional parts of the square roots of the first 8 primes. */
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, h0, sizeof h0);
    c->bytes = 0;
    c->used = 0;
}

void mpx__sha256_update(mpx__sha256_ctx *c, const void *data, size_t len)
{
    const unsigned char *p = data;
    c->bytes += len;
    if (c->used) {
        size_t take = MPX_SHA256_BLOCK - c->used;
        if (take > len)
            take = len;
        memcpy(c->buf + c->used, p, take);
        c->used += take;
        p += take;
        len -= take;
        if (c->used < MPX_SHA256_BLOCK)
            return;
        compress(c->h, c->buf);
        c->used = 0;
    }
    for (; len >= MPX_SHA256_BLOCK; p += MPX_SHA256_BLOCK, len -= MPX_SHA256_BLOCK)
        compress(c->h, p);
    if (len) {
        memcpy(c->buf, p, len);
        c->used = len;
    }
}

void mpx__sha256_final(mpx__sha256_ctx *c, unsigned char out[MPX_SHA256_SIZE])
{
    /* Padding: 0x80, zeros up to 56 bytes mod 64, then the bit length, big-endian. */
    uint64_t bits = c->bytes * 8;
    c->buf[c->used++] = 0x80;
    if (c->used > MPX_SHA256_BLOCK - 8) {
        memset(c->buf + c->used, 0, MPX_SHA256_BLOCK - c->used);
        compress(c->h, c->buf);
        c->used = 0;
    }
    memset(c->buf + c->used, 0, MPX_SHA256_BLOCK - 8 - c->used);
    put_be32(c->buf + 56, (uint32_t)(bits >> 32));
    put_be32(c->buf + 60, (uint32_t)bits);
    compress(c->h, c->buf);
    for (int i = 0; i < 8; i++)
        put_be32(out + 4 * i, c->h[i]);
    explicit_bzero(c, sizeof *c); /* no key-derived state left behind */
}

void mpx__sha256(const void *data, size_t len, unsigned char out[MPX_SHA256_SIZE])
{
    mpx__sha256_ctx c;
    mpx__sha256_init(&c);
    mpx__sha256_update(&c, data, len);
    mpx__sha256_final(&c, out);
}

void mpx__hmac_sha256(const void *key, size_t keylen, const void *msg, size_t len,
                      unsigned char out[MPX_SHA256_SIZE])
{
    unsigned char k[MPX_SHA256_BLOCK] = {0};
    if (keylen > MPX_SHA256_BLOCK)
        mpx__sha256(key, keylen, k);
    else if (keylen)
        memcpy(k, key, keylen);
    unsigned char pad[MPX_SHA256_BLOCK], inner[MPX_SHA256_SIZE];
    mpx__sha256_ctx c;
    for (size_t i = 0; i < sizeof pad; i++)
        pad[i] = k[i] ^ 0x36;
    mpx__sha256_init(&c);
    mpx__sha256_update(&c, pad, sizeof pad);
    mpx__sha256_update(&c, msg, len);
    mpx__sha256_final(&c, inner);
    for (size_t i = 0; i < sizeof pad; i++)
        pad[i] = k[i] ^ 0x5c;
    mpx__sha256_init(&c);
    mpx__sha256_update(&c, pad, sizeof pad);
    mpx__sha256_update(&c, inner, sizeof inner);
    mpx__sha256_final(&c, out);
    explicit_bzero(k, sizeof k);
    explicit_bzero(pad, sizeof pad);
    explicit_bzero(inner, sizeof inner);
}

int mpx__equal_ct(const void *a, const void *b, size_t n)
{
    const volatile unsigned char *x = a, *y = b;
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++)
        d |= x[i] ^ y[i];
    return d == 0;
}
