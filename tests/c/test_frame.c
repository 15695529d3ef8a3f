/* Tests of the frame format (<mpx/frame.h>): round trips, layout, and the refusal of
 * truncated, corrupted and hostile frames. Frames under test are copied into buffers of
 * exactly their length, so that an out-of-bounds read shows up under ASan. */
#include <stdlib.h>
#include <sys/uio.h>

#include "harness.h"
#include "mpx/error.h"
#include "mpx/frame.h"

#define ALIGN8(x) (((x) + 7u) & ~(size_t)7u)

struct frame {
    unsigned char *buf; /* malloc'd, exactly len bytes (at least 1 allocated) */
    size_t len;
};

static void frame_free(struct frame *f)
{
    free(f->buf);
    f->buf = NULL;
}

/* The size a frame of these parts must have. */
static size_t expected_len(const mpx_frame_part *parts, size_t n)
{
    size_t len = mpx_frame_header_size(n);
    for (size_t i = 0; i < n; i++)
        len += i + 1 < n ? ALIGN8(parts[i].len) : parts[i].len;
    return len;
}

/* Builds a frame and flattens its iovecs into one exact-size buffer. */
static struct frame build(unsigned kind, const mpx_frame_part *parts, size_t n)
{
    size_t hs = mpx_frame_header_size(n);
    uint64_t *hdr = malloc(hs); /* malloc'd: 8-aligned, as the uint64 lengths need */
    struct iovec *iov = malloc(mpx_frame_iov_count(n) * sizeof *iov);
    ASSERT(hdr && iov);
    int cnt = mpx_frame_build(hdr, kind, parts, n, iov);
    ASSERT_OK(cnt);
    ASSERT_LE_INT(cnt, mpx_frame_iov_count(n));
    ASSERT_EQ_PTR(iov[0].iov_base, hdr);
    ASSERT_EQ_UINT(iov[0].iov_len, hs);
    size_t len = 0;
    for (int i = 0; i < cnt; i++)
        len += iov[i].iov_len;
    ASSERT_EQ_UINT(len, expected_len(parts, n));
    struct frame f = {malloc(len ? len : 1), len};
    ASSERT_NOT_NULL(f.buf);
    size_t off = 0;
    for (int i = 0; i < cnt; i++) {
        memcpy(f.buf + off, iov[i].iov_base, iov[i].iov_len);
        off += iov[i].iov_len;
    }
    free(hdr);
    free(iov);
    return f;
}

/* peek + parse; 0 with parts filled (caller frees *out), or the error. */
static int decode(const void *msg, size_t len, unsigned *kind, size_t *nparts,
                  mpx_frame_part **out)
{
    *out = NULL;
    int r = mpx_frame_peek(msg, len, kind, nparts);
    if (r < 0)
        return r;
    ASSERT(*nparts >= 1 && *nparts <= MPX_FRAME_MAX_PARTS);
    mpx_frame_part *parts = calloc(*nparts, sizeof *parts);
    ASSERT_NOT_NULL(parts);
    r = mpx_frame_parse(msg, len, parts, *nparts);
    if (r < 0) {
        free(parts);
        return r;
    }
    /* Whatever is accepted lies inside the message, each part 8-aligned from its start. */
    const unsigned char *m = msg;
    for (size_t i = 0; i < *nparts; i++) {
        const unsigned char *d = parts[i].data;
        ASSERT(d >= m + mpx_frame_header_size(*nparts) && d <= m + len);
        ASSERT(parts[i].len <= (size_t)(m + len - d));
        ASSERT_EQ_INT((size_t)(d - m) % 8, 0);
    }
    *out = parts;
    return 0;
}

static int decode_exact(const void *msg, size_t len)
{
    unsigned char *p = th_exact_copy(msg, len);
    unsigned kind;
    size_t n;
    mpx_frame_part *parts;
    int r = decode(p, len, &kind, &n, &parts);
    free(parts);
    free(p);
    return r;
}

static void fill(unsigned char *p, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (unsigned char)(seed * 131u + i * 7u + (i >> 8));
}

/* Builds, checks the layout, decodes and compares. */
static void round_trip(unsigned kind, const size_t *lens, const uint8_t *flags, size_t n)
{
    mpx_frame_part *parts = calloc(n, sizeof *parts);
    unsigned char **bufs = calloc(n, sizeof *bufs);
    ASSERT(parts && bufs);
    for (size_t i = 0; i < n; i++) {
        bufs[i] = lens[i] ? malloc(lens[i]) : NULL;
        if (lens[i]) {
            ASSERT_NOT_NULL(bufs[i]);
            fill(bufs[i], lens[i], (unsigned)i + 1);
        }
        parts[i] = (mpx_frame_part){bufs[i], lens[i], flags ? flags[i] : 0};
    }
    struct frame f = build(kind, parts, n);

    /* Layout: the header fields, lengths, flags and zero padding. */
    uint32_t magic, nparts, reserved;
    uint16_t version, k;
    memcpy(&magic, f.buf, 4);
    memcpy(&version, f.buf + 4, 2);
    memcpy(&k, f.buf + 6, 2);
    memcpy(&nparts, f.buf + 8, 4);
    memcpy(&reserved, f.buf + 12, 4);
    ASSERT_EQ_UINT(magic, MPX_FRAME_MAGIC);
    ASSERT_EQ_UINT(version, MPX_FRAME_VERSION);
    ASSERT_EQ_UINT(k, kind);
    ASSERT_EQ_UINT(nparts, n);
    ASSERT_EQ_UINT(reserved, 0);
    size_t off = 16;
    for (size_t i = 0; i < n; i++, off += 8) {
        uint64_t l;
        memcpy(&l, f.buf + off, 8);
        ASSERT_EQ_UINT(l, lens[i]);
    }
    for (size_t i = 0; i < ALIGN8(n); i++, off++)
        ASSERT_EQ_UINT(f.buf[off], i < n ? parts[i].flags : 0);
    ASSERT_EQ_UINT(off, mpx_frame_header_size(n));
    for (size_t i = 0; i < n; i++) {
        ASSERT_EQ_INT(off % 8, 0);
        if (lens[i])
            ASSERT_MEM_EQ(f.buf + off, bufs[i], lens[i]);
        off += lens[i];
        if (i + 1 < n)
            for (; off % 8; off++)
                ASSERT_EQ_UINT(f.buf[off], 0);
    }
    ASSERT_EQ_UINT(off, f.len);

    unsigned gk = 99;
    size_t gn = 0;
    mpx_frame_part *got;
    ASSERT_OK(decode(f.buf, f.len, &gk, &gn, &got));
    ASSERT_EQ_UINT(gk, kind);
    ASSERT_EQ_UINT(gn, n);
    for (size_t i = 0; i < n; i++) {
        ASSERT_EQ_UINT(got[i].len, lens[i]);
        ASSERT_EQ_UINT(got[i].flags, parts[i].flags);
        if (lens[i])
            ASSERT_MEM_EQ(got[i].data, bufs[i], lens[i]);
    }
    free(got);
    frame_free(&f);
    for (size_t i = 0; i < n; i++)
        free(bufs[i]);
    free(bufs);
    free(parts);
}

static const size_t odd_lens[] = {0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 63, 64, 65, 100, 4095};
#define NODD (sizeof odd_lens / sizeof odd_lens[0])

TEST(frame_round_trip_one_part)
{
    for (size_t i = 0; i < NODD; i++) {
        round_trip(MPX_FRAME_BYTES, &odd_lens[i], NULL, 1);
        round_trip(MPX_FRAME_PICKLE, &odd_lens[i], NULL, 1);
        uint8_t ro = MPX_FRAME_READONLY;
        round_trip(MPX_FRAME_PICKLE, &odd_lens[i], &ro, 1);
    }
    size_t big = 1u << 20;
    round_trip(MPX_FRAME_BYTES, &big, NULL, 1);
}

TEST(frame_round_trip_many_parts)
{
    /* 0..12 out-of-band buffers, every part length drawn from the odd sizes, so that every
     * padding amount appears before and after every other. */
    uint64_t rs = 12345;
    for (size_t n = 1; n <= 13; n++) {
        for (int rep = 0; rep < 20; rep++) {
            size_t lens[13];
            uint8_t flags[13];
            for (size_t i = 0; i < n; i++) {
                lens[i] = odd_lens[th_rand(&rs) % NODD];
                flags[i] = (uint8_t)(th_rand(&rs) % 2 ? MPX_FRAME_READONLY : 0);
            }
            round_trip(MPX_FRAME_PICKLE, lens, flags, n);
        }
    }
    /* All parts empty. */
    size_t zeros[9] = {0};
    round_trip(MPX_FRAME_PICKLE, zeros, NULL, 9);
}

TEST(frame_max_parts)
{
    size_t n = MPX_FRAME_MAX_PARTS;
    size_t *lens = calloc(n, sizeof *lens);
    ASSERT_NOT_NULL(lens);
    lens[0] = 3;
    lens[n - 1] = 5;
    lens[n / 2] = 9;
    round_trip(MPX_FRAME_PICKLE, lens, NULL, n);
    free(lens);
}

TEST(frame_build_rejects)
{
    uint64_t hdr[64];
    struct iovec iov[16];
    unsigned char data[4] = {1, 2, 3, 4};
    mpx_frame_part p[2] = {{data, 4, 0}, {data, 2, 0}};
    ASSERT_ERR(mpx_frame_build(NULL, MPX_FRAME_PICKLE, p, 1, iov), -EINVAL);
    ASSERT_ERR(mpx_frame_build(hdr, MPX_FRAME_PICKLE, NULL, 1, iov), -EINVAL);
    ASSERT_ERR(mpx_frame_build(hdr, MPX_FRAME_PICKLE, p, 1, NULL), -EINVAL);
    ASSERT_ERR(mpx_frame_build(hdr, MPX_FRAME_PICKLE, p, 0, iov), -EINVAL);
    ASSERT_ERR(mpx_frame_build(hdr, 2, p, 1, iov), -EINVAL);
    ASSERT_ERR(mpx_frame_build(hdr, 0xffffu, p, 1, iov), -EINVAL);
    ASSERT_ERR(mpx_frame_build(hdr, MPX_FRAME_BYTES, p, 2, iov), -EINVAL);
    ASSERT_ERR(mpx_frame_build(hdr, MPX_FRAME_PICKLE, p, (size_t)MPX_FRAME_MAX_PARTS + 1, iov),
               MPX_ETOOBIG);
    ASSERT_ERR(mpx_frame_build(hdr, MPX_FRAME_PICKLE, p, SIZE_MAX, iov), MPX_ETOOBIG);
    mpx_frame_part bad[2] = {{data, 4, 0}, {NULL, 1, 0}};
    ASSERT_ERR(mpx_frame_build(hdr, MPX_FRAME_PICKLE, bad, 2, iov), -EINVAL);
    mpx_frame_part empty = {NULL, 0, 0}; /* NULL with length 0 is fine */
    ASSERT_OK(mpx_frame_build(hdr, MPX_FRAME_BYTES, &empty, 1, iov));
    ASSERT_EQ_UINT(mpx_frame_header_size(1), 32);
    ASSERT_EQ_UINT(mpx_frame_header_size(8), 16 + 64 + 8);
    ASSERT_EQ_UINT(mpx_frame_header_size(9), 16 + 72 + 16);
    ASSERT_EQ_UINT(mpx_frame_iov_count(3), 6);
}

TEST(frame_parse_rejects_bad_arguments)
{
    size_t lens[3] = {5, 9, 2};
    unsigned char d[16] = {0};
    mpx_frame_part p[3] = {{d, lens[0], 0}, {d, lens[1], 0}, {d, lens[2], 0}};
    struct frame f = build(MPX_FRAME_PICKLE, p, 3);
    unsigned kind;
    size_t n;
    ASSERT_ERR(mpx_frame_peek(NULL, f.len, &kind, &n), MPX_EBADFRAME);
    ASSERT_OK(mpx_frame_peek(f.buf, f.len, &kind, &n));
    mpx_frame_part out[4];
    ASSERT_ERR(mpx_frame_parse(f.buf, f.len, out, 2), -EINVAL);
    ASSERT_ERR(mpx_frame_parse(f.buf, f.len, out, 4), -EINVAL);
    ASSERT_ERR(mpx_frame_parse(f.buf, f.len, NULL, 3), -EINVAL);
    ASSERT_ERR(mpx_frame_parse(NULL, f.len, out, 3), MPX_EBADFRAME);
    ASSERT_OK(mpx_frame_parse(f.buf, f.len, out, 3));
    frame_free(&f);
}

/* The frames every rejection test starts from. */
static struct frame sample(int which)
{
    static unsigned char d[300];
    fill(d, sizeof d, 9);
    switch (which) {
    case 0: {
        mpx_frame_part p = {d, 11, 0};
        return build(MPX_FRAME_BYTES, &p, 1);
    }
    case 1: {
        mpx_frame_part p = {d, 0, 0};
        return build(MPX_FRAME_BYTES, &p, 1);
    }
    case 2: {
        mpx_frame_part p[4] = {{d, 37, 0}, {d, 0, 1}, {d, 8, 0}, {d, 200, 1}};
        return build(MPX_FRAME_PICKLE, p, 4);
    }
    default: {
        mpx_frame_part p[9];
        for (int i = 0; i < 9; i++)
            p[i] = (mpx_frame_part){d + i, (size_t)(i * 13 % 17), (uint8_t)(i & 1)};
        return build(MPX_FRAME_PICKLE, p, 9);
    }
    }
}
#define NSAMPLES 4

TEST(frame_truncated_at_every_length)
{
    for (int s = 0; s < NSAMPLES; s++) {
        struct frame f = sample(s);
        ASSERT_OK(decode_exact(f.buf, f.len));
        for (size_t l = 0; l < f.len; l++)
            ASSERT_MSG(decode_exact(f.buf, l) == MPX_EBADFRAME,
                       "sample %d truncated to %zu of %zu bytes not refused", s, l, f.len);
        /* Trailing bytes are refused as well. */
        unsigned char *longer = calloc(f.len + 16, 1);
        ASSERT_NOT_NULL(longer);
        memcpy(longer, f.buf, f.len);
        for (size_t extra = 1; extra <= 16; extra++)
            ASSERT_ERR(decode_exact(longer, f.len + extra), MPX_EBADFRAME);
        free(longer);
        frame_free(&f);
    }
}

static void put32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static void put16(unsigned char *p, uint16_t v) { memcpy(p, &v, 2); }
static void put64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }

TEST(frame_corrupted_header)
{
    for (int s = 0; s < NSAMPLES; s++) {
        struct frame f = sample(s);
        uint32_t nparts;
        memcpy(&nparts, f.buf + 8, 4);
        unsigned char *c = th_exact_copy(f.buf, f.len);
#define RESET() memcpy(c, f.buf, f.len)
        /* magic */
        for (int bit = 0; bit < 32; bit++) {
            RESET();
            c[bit / 8] ^= (unsigned char)(1u << (bit % 8));
            ASSERT_ERR(decode_exact(c, f.len), MPX_EBADFRAME);
        }
        /* version */
        uint16_t versions[] = {0, 2, 3, 0x100, 0xffff};
        for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
            RESET();
            put16(c + 4, versions[i]);
            ASSERT_ERR(decode_exact(c, f.len), MPX_EVERSION);
        }
        /* kind: unknown kinds, and BYTES with several parts */
        uint16_t kinds[] = {2, 3, 0x8000, 0xffff};
        for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
            RESET();
            put16(c + 6, kinds[i]);
            ASSERT_ERR(decode_exact(c, f.len), MPX_EBADFRAME);
        }
        if (nparts > 1) {
            RESET();
            put16(c + 6, MPX_FRAME_BYTES);
            ASSERT_ERR(decode_exact(c, f.len), MPX_EBADFRAME);
        }
        /* nparts: zero, too many, one more or one fewer, huge */
        uint32_t counts[] = {0, nparts + 1, nparts - 1, nparts * 2, MPX_FRAME_MAX_PARTS,
                             MPX_FRAME_MAX_PARTS + 1, 0x7fffffffu, 0xffffffffu};
        for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
            if (counts[i] == nparts)
                continue;
            RESET();
            put32(c + 8, counts[i]);
            ASSERT_MSG(decode_exact(c, f.len) == MPX_EBADFRAME,
                       "sample %d with nparts %u not refused", s, counts[i]);
        }
        /* reserved */
        for (int bit = 0; bit < 32; bit++) {
            RESET();
            c[12 + bit / 8] ^= (unsigned char)(1u << (bit % 8));
            ASSERT_ERR(decode_exact(c, f.len), MPX_EBADFRAME);
        }
        /* lengths that overflow or overrun, in every position */
        uint64_t bad[] = {UINT64_MAX,     UINT64_MAX - 7,         UINT64_MAX - f.len,
                          (uint64_t)1 << 63, (uint64_t)SIZE_MAX - 15, f.len,
                          f.len + 1,     0x100000000ull};
        for (uint32_t i = 0; i < nparts; i++) {
            for (size_t j = 0; j < sizeof bad / sizeof bad[0]; j++) {
                RESET();
                put64(c + 16 + 8 * i, bad[j]);
                ASSERT_MSG(decode_exact(c, f.len) == MPX_EBADFRAME,
                           "sample %d part %u length %#llx not refused", s, i,
                           (unsigned long long)bad[j]);
            }
            /* Off by a whole alignment unit either way. */
            uint64_t l;
            memcpy(&l, f.buf + 16 + 8 * i, 8);
            RESET();
            put64(c + 16 + 8 * i, l + 8);
            ASSERT_ERR(decode_exact(c, f.len), MPX_EBADFRAME);
            if (l >= 8) {
                RESET();
                put64(c + 16 + 8 * i, l - 8);
                ASSERT_ERR(decode_exact(c, f.len), MPX_EBADFRAME);
            }
        }
#undef RESET
        free(c);
        frame_free(&f);
    }
}

TEST(frame_hostile_inputs)
{
    /* Short and all-zero or all-ones inputs of every small length. */
    for (size_t l = 0; l < 80; l++) {
        unsigned char *z = calloc(l ? l : 1, 1);
        ASSERT_NOT_NULL(z);
        ASSERT_ERR(decode_exact(z, l), MPX_EBADFRAME);
        memset(z, 0xff, l);
        ASSERT_ERR(decode_exact(z, l), MPX_EBADFRAME);
        free(z);
    }
    /* A valid-looking header claiming many parts in a small message. */
    unsigned char h[32] = {0};
    put32(h, MPX_FRAME_MAGIC);
    put16(h + 4, MPX_FRAME_VERSION);
    put16(h + 6, MPX_FRAME_PICKLE);
    put32(h + 8, 1000);
    ASSERT_ERR(decode_exact(h, sizeof h), MPX_EBADFRAME);
    /* Exactly a header for one empty part: valid. */
    put32(h + 8, 1);
    ASSERT_OK(decode_exact(h, sizeof h));
}

TEST(frame_random_mutations)
{
    /* Random byte changes, insertions of garbage and truncations of valid frames: the decoder
     * may accept (flags and padding are not covered by any check), but it must never read
     * outside the message, which ASan builds verify, and what it accepts stays in bounds. */
    uint64_t rs = th_seed();
    for (int iter = 0; iter < 20000; iter++) {
        struct frame f = sample((int)(th_rand(&rs) % NSAMPLES));
        unsigned char *c = th_exact_copy(f.buf, f.len);
        size_t len = f.len;
        th_mutate(c, &len, &rs);
        (void)decode_exact(c, len);
        free(c);
        frame_free(&f);
    }
}

TEST_LIST_START
TEST_ENTRY(frame_round_trip_one_part)
TEST_ENTRY(frame_round_trip_many_parts)
TEST_ENTRY(frame_max_parts)
TEST_ENTRY(frame_build_rejects)
TEST_ENTRY(frame_parse_rejects_bad_arguments)
TEST_ENTRY(frame_truncated_at_every_length)
TEST_ENTRY(frame_corrupted_header)
TEST_ENTRY(frame_hostile_inputs)
TEST_ENTRY(frame_random_mutations)
TEST_LIST_END

HELPER_LIST_START
HELPER_LIST_END

TEST_MAIN()
