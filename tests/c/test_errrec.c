/* Tests of the error record (<mpx/errrec.h>): the object API, round trips through the
 * encoding, its exact layout, the format() text, and the refusal of truncated, corrupted and
 * hostile encodings. Encodings under test are copied into buffers of exactly their length,
 * so that an out-of-bounds read shows up under ASan. */
#include <stdlib.h>
#include <sys/resource.h>

#include "harness.h"
#include "wire/bytes.h"
#include "mpx/errrec.h"
#include "mpx/error.h"

#if defined(__SANITIZE_ADDRESS__)
#define HAVE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_ASAN 1
#endif
#endif

/* ---- helpers ---- */

static mpx_errrec *make(const char *module, const char *qualname, const char *message,
                        const char *tb)
{
    mpx_errrec *r = NULL;
    ASSERT_OK(mpx_errrec_create(&r, module, qualname, message, tb));
    ASSERT_NOT_NULL(r);
    return r;
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Asserts that two chains are equal field by field. */
static void assert_same(const mpx_errrec *a, const mpx_errrec *b)
{
    ASSERT_EQ_UINT(mpx_errrec_depth(a), mpx_errrec_depth(b));
    for (; a; a = mpx_errrec_cause(a), b = mpx_errrec_cause(b)) {
        ASSERT_NOT_NULL(b);
        ASSERT_EQ_STR(mpx_errrec_module(a), mpx_errrec_module(b));
        ASSERT_EQ_STR(mpx_errrec_qualname(a), mpx_errrec_qualname(b));
        ASSERT_EQ_STR(mpx_errrec_message(a), mpx_errrec_message(b));
        ASSERT_EQ_STR(mpx_errrec_traceback(a), mpx_errrec_traceback(b));
        const char *na = NULL, *nb = NULL;
        int64_t pa = -1, pb = -2;
        int ra = mpx_errrec_origin(a, &na, &pa), rb = mpx_errrec_origin(b, &nb, &pb);
        ASSERT_EQ_INT(ra, rb);
        if (ra == 0) {
            ASSERT_EQ_STR(na, nb);
            ASSERT_EQ_INT(pa, pb);
        }
        size_t la, lb;
        const void *da = mpx_errrec_payload(a, &la), *db = mpx_errrec_payload(b, &lb);
        ASSERT_EQ_UINT(la, lb);
        ASSERT_EQ_INT(da == NULL, db == NULL);
        if (la)
            ASSERT_MEM_EQ(da, db, la);
    }
    ASSERT_NULL(b);
}

/* Encodes, decodes from an exact-size copy, compares, and checks that re-encoding gives the
 * same bytes. */
static void round_trip(const mpx_errrec *r)
{
    void *buf = NULL;
    size_t len = 0;
    ASSERT_OK(mpx_errrec_encode(r, &buf, &len));
    unsigned char *c = th_exact_copy(buf, len);
    mpx_errrec *d = NULL;
    ASSERT_OK(mpx_errrec_decode(&d, c, len));
    assert_same(r, d);
    void *buf2 = NULL;
    size_t len2 = 0;
    ASSERT_OK(mpx_errrec_encode(d, &buf2, &len2));
    ASSERT_EQ_UINT(len2, len);
    ASSERT_MEM_EQ(buf2, buf, len);
    free(buf2);
    mpx_errrec_destroy(d);
    free(c);
    free(buf);
}

/* Decodes msg[0..len) from an exact-size copy. On success checks that the record is sound
 * (it re-encodes to exactly the input, since the encoding is canonical, and formats), then
 * destroys it. Returns the decoder's result. */
static int decode_exact(const void *msg, size_t len)
{
    unsigned char *c = th_exact_copy(msg, len);
    mpx_errrec *d = NULL;
    int r = mpx_errrec_decode(&d, c, len);
    if (r == 0) {
        ASSERT_NOT_NULL(d);
        ASSERT_LE_INT(mpx_errrec_depth(d), MPX_ERRREC_MAX_DEPTH);
        void *buf = NULL;
        size_t blen = 0;
        ASSERT_OK(mpx_errrec_encode(d, &buf, &blen));
        ASSERT_EQ_UINT(blen, len);
        ASSERT_MEM_EQ(buf, msg, len);
        free(buf);
        char *text = NULL;
        ASSERT_OK(mpx_errrec_format(d, &text));
        ASSERT_NOT_NULL(text);
        free(text);
        mpx_errrec_destroy(d);
    } else {
        ASSERT_NULL(d);
    }
    free(c);
    return r;
}

/* A chain of n records, each with an origin and a payload on every other record. */
static mpx_errrec *chain(int n)
{
    mpx_errrec *head = NULL;
    for (int i = n - 1; i >= 0; i--) {
        char msg[32], tb[64], name[32];
        snprintf(msg, sizeof msg, "failure %d", i);
        snprintf(tb, sizeof tb, "Traceback (most recent call last):\n  level %d\n", i);
        snprintf(name, sizeof name, "Worker-%d", i);
        mpx_errrec *r = make(i % 3 ? "builtins" : "mod.sub", "Err", msg, tb);
        ASSERT_OK(mpx_errrec_set_origin(r, name, 1000 + i));
        if (i % 2) {
            unsigned char pl[5] = {0, (unsigned char)i, 0, 0xff, 0};
            ASSERT_OK(mpx_errrec_set_payload(r, pl, sizeof pl));
        }
        ASSERT_OK(mpx_errrec_set_cause_take(r, head));
        head = r;
    }
    return head;
}

/* A sample valid encoding; the caller frees it. */
static unsigned char *sample(int which, size_t *len)
{
    mpx_errrec *r;
    switch (which) {
    case 0:
        r = make("builtins", "ValueError", "bad value", NULL);
        break;
    case 1:
        r = make("", "X", "", "");
        break;
    default:
        r = chain(3);
        break;
    }
    void *buf;
    ASSERT_OK(mpx_errrec_encode(r, &buf, len));
    mpx_errrec_destroy(r);
    return buf;
}
#define NSAMPLES 3

/* ---- the object API ---- */

TEST(errrec_create_and_get)
{
    mpx_errrec *r = make("builtins", "ValueError", "invalid literal", NULL);
    ASSERT_EQ_STR(mpx_errrec_module(r), "builtins");
    ASSERT_EQ_STR(mpx_errrec_qualname(r), "ValueError");
    ASSERT_EQ_STR(mpx_errrec_message(r), "invalid literal");
    ASSERT_EQ_STR(mpx_errrec_traceback(r), "");
    const char *name = "unchanged";
    int64_t pid = -7;
    ASSERT_ERR(mpx_errrec_origin(r, &name, &pid), -ENOENT);
    ASSERT_EQ_STR(name, "unchanged");
    ASSERT_EQ_INT(pid, -7);
    size_t len = 99;
    ASSERT_NULL(mpx_errrec_payload(r, &len));
    ASSERT_EQ_UINT(len, 0);
    ASSERT_NULL(mpx_errrec_cause(r));
    ASSERT_EQ_UINT(mpx_errrec_depth(r), 1);
    mpx_errrec_destroy(r);

    /* The strings are copies. */
    char mod[] = "mpx", qn[] = "MPX_EBADFRAME", msg[] = "malformed", tb[] = "at frame.c:1\n";
    r = make(mod, qn, msg, tb);
    memset(mod, 'x', 3);
    memset(qn, 'x', 3);
    memset(msg, 'x', 3);
    memset(tb, 'x', 3);
    ASSERT_EQ_STR(mpx_errrec_module(r), "mpx");
    ASSERT_EQ_STR(mpx_errrec_qualname(r), "MPX_EBADFRAME");
    ASSERT_EQ_STR(mpx_errrec_message(r), "malformed");
    ASSERT_EQ_STR(mpx_errrec_traceback(r), "at frame.c:1\n");
    mpx_errrec_destroy(r);
    mpx_errrec_destroy(NULL);
}

TEST(errrec_bad_arguments)
{
    mpx_errrec *r = (mpx_errrec *)0x1; /* must stay unchanged on failure */
    ASSERT_ERR(mpx_errrec_create(NULL, "m", "q", "x", NULL), -EINVAL);
    ASSERT_ERR(mpx_errrec_create(&r, NULL, "q", "x", NULL), -EINVAL);
    ASSERT_ERR(mpx_errrec_create(&r, "m", NULL, "x", NULL), -EINVAL);
    ASSERT_ERR(mpx_errrec_create(&r, "m", "", "x", NULL), -EINVAL);
    ASSERT_ERR(mpx_errrec_create(&r, "m", "q", NULL, NULL), -EINVAL);
    ASSERT_EQ_PTR(r, (mpx_errrec *)0x1);

    ASSERT_ERR(mpx_errrec_set_origin(NULL, "p", 1), -EINVAL);
    ASSERT_ERR(mpx_errrec_set_payload(NULL, "p", 1), -EINVAL);
    ASSERT_ERR(mpx_errrec_set_cause_take(NULL, NULL), -EINVAL);
    ASSERT_ERR(mpx_errrec_origin(NULL, NULL, NULL), -EINVAL);
    ASSERT_NULL(mpx_errrec_module(NULL));
    ASSERT_NULL(mpx_errrec_qualname(NULL));
    ASSERT_NULL(mpx_errrec_message(NULL));
    ASSERT_NULL(mpx_errrec_traceback(NULL));
    ASSERT_NULL(mpx_errrec_cause(NULL));
    size_t len = 5;
    ASSERT_NULL(mpx_errrec_payload(NULL, &len));
    ASSERT_EQ_UINT(len, 0);
    ASSERT_EQ_UINT(mpx_errrec_depth(NULL), 0);

    r = make("m", "q", "x", NULL);
    ASSERT_ERR(mpx_errrec_set_origin(r, "p", -1), -EINVAL);
    ASSERT_ERR(mpx_errrec_origin(r, NULL, NULL), -ENOENT);
    ASSERT_ERR(mpx_errrec_set_payload(r, NULL, 3), -EINVAL);
    ASSERT_ERR(mpx_errrec_set_payload(r, "x", MPX_ERRREC_MAX_SIZE + 1), MPX_ETOOBIG);
    ASSERT_ERR(mpx_errrec_set_cause_take(r, r), -EINVAL);

    void *buf = (void *)0x1;
    size_t blen = 7;
    ASSERT_ERR(mpx_errrec_encode(NULL, &buf, &blen), -EINVAL);
    ASSERT_ERR(mpx_errrec_encode(r, NULL, &blen), -EINVAL);
    ASSERT_ERR(mpx_errrec_encode(r, &buf, NULL), -EINVAL);
    ASSERT_EQ_PTR(buf, (void *)0x1);
    ASSERT_EQ_UINT(blen, 7);

    mpx_errrec *d = (mpx_errrec *)0x1;
    ASSERT_ERR(mpx_errrec_decode(NULL, "MPXE", 4), -EINVAL);
    ASSERT_ERR(mpx_errrec_decode(&d, NULL, 4), -EINVAL);
    ASSERT_ERR(mpx_errrec_decode(&d, NULL, 0), MPX_EBADFRAME);
    ASSERT_EQ_PTR(d, (mpx_errrec *)0x1);

    char *text = (char *)0x1;
    ASSERT_ERR(mpx_errrec_format(NULL, &text), -EINVAL);
    ASSERT_ERR(mpx_errrec_format(r, NULL), -EINVAL);
    ASSERT_EQ_PTR(text, (char *)0x1);

    ASSERT_ERR(mpx_errrec_dup(NULL, r), -EINVAL);
    ASSERT_ERR(mpx_errrec_dup(&d, NULL), -EINVAL);
    mpx_errrec_destroy(r);
}

TEST(errrec_origin_and_payload)
{
    mpx_errrec *r = make("builtins", "RuntimeError", "boom", NULL);
    char name[] = "SpawnProcess-1";
    ASSERT_OK(mpx_errrec_set_origin(r, name, 1234));
    name[0] = 'X';
    const char *got = NULL;
    int64_t pid = 0;
    ASSERT_OK(mpx_errrec_origin(r, &got, &pid));
    ASSERT_EQ_STR(got, "SpawnProcess-1");
    ASSERT_EQ_INT(pid, 1234);
    ASSERT_OK(mpx_errrec_origin(r, NULL, NULL));
    /* Replaced, then an empty name with pid 0 (still an origin), then removed. */
    ASSERT_OK(mpx_errrec_set_origin(r, "MainProcess", 1));
    ASSERT_OK(mpx_errrec_origin(r, &got, &pid));
    ASSERT_EQ_STR(got, "MainProcess");
    ASSERT_EQ_INT(pid, 1);
    ASSERT_OK(mpx_errrec_set_origin(r, "", 0));
    ASSERT_OK(mpx_errrec_origin(r, &got, &pid));
    ASSERT_EQ_STR(got, "");
    ASSERT_EQ_INT(pid, 0);
    ASSERT_OK(mpx_errrec_set_origin(r, NULL, 55));
    ASSERT_ERR(mpx_errrec_origin(r, &got, &pid), -ENOENT);

    unsigned char pl[] = {0, 1, 0, 2, 0, 0, 0xff};
    ASSERT_OK(mpx_errrec_set_payload(r, pl, sizeof pl));
    pl[1] = 9;
    size_t len = 0;
    const unsigned char *p = mpx_errrec_payload(r, &len);
    ASSERT_EQ_UINT(len, sizeof pl);
    ASSERT_EQ_UINT(p[1], 1);
    ASSERT_EQ_UINT(p[6], 0xff);
    ASSERT_NOT_NULL(mpx_errrec_payload(r, NULL));
    ASSERT_OK(mpx_errrec_set_payload(r, "abc", 3));
    ASSERT_MEM_EQ(mpx_errrec_payload(r, &len), "abc", 3);
    ASSERT_EQ_UINT(len, 3);
    ASSERT_OK(mpx_errrec_set_payload(r, NULL, 0));
    ASSERT_NULL(mpx_errrec_payload(r, &len));
    ASSERT_EQ_UINT(len, 0);
    mpx_errrec_destroy(r);
}

TEST(errrec_cause_chain)
{
    mpx_errrec *outer = make("builtins", "RuntimeError", "outer", NULL);
    mpx_errrec *inner = make("builtins", "ValueError", "inner", NULL);
    ASSERT_OK(mpx_errrec_set_cause_take(outer, inner));
    ASSERT_EQ_PTR(mpx_errrec_cause(outer), inner);
    ASSERT_EQ_UINT(mpx_errrec_depth(outer), 2);
    /* Owned parts of the chain cannot become a cause again. */
    ASSERT_ERR(mpx_errrec_set_cause_take(outer, inner), -EINVAL);
    ASSERT_ERR(mpx_errrec_set_cause_take(inner, outer), -EINVAL);
    ASSERT_ERR(mpx_errrec_set_cause_take(outer, outer), -EINVAL);
    ASSERT_EQ_PTR(mpx_errrec_cause(outer), inner);
    /* Replacing destroys the old cause (LeakSanitizer checks); NULL removes. */
    ASSERT_OK(mpx_errrec_set_cause_take(outer, make("m", "Other", "x", NULL)));
    ASSERT_EQ_STR(mpx_errrec_qualname(mpx_errrec_cause(outer)), "Other");
    ASSERT_OK(mpx_errrec_set_cause_take(outer, NULL));
    ASSERT_NULL(mpx_errrec_cause(outer));
    mpx_errrec_destroy(outer);

    /* Depth: a chain of 64 is the most; adding one more fails and leaves ownership with the
     * caller. */
    mpx_errrec *c64 = chain(MPX_ERRREC_MAX_DEPTH);
    ASSERT_EQ_UINT(mpx_errrec_depth(c64), MPX_ERRREC_MAX_DEPTH);
    mpx_errrec *top = make("builtins", "Top", "", NULL);
    ASSERT_ERR(mpx_errrec_set_cause_take(top, c64), MPX_ETOOBIG);
    ASSERT_NULL(mpx_errrec_cause(top));
    mpx_errrec *c63 = chain(MPX_ERRREC_MAX_DEPTH - 1);
    ASSERT_OK(mpx_errrec_set_cause_take(top, c63));
    ASSERT_EQ_UINT(mpx_errrec_depth(top), MPX_ERRREC_MAX_DEPTH);
    mpx_errrec_destroy(top);
    mpx_errrec_destroy(c64);
}

TEST(errrec_invalid_utf8_replaced)
{
    /* A lone continuation byte, a truncated sequence, an overlong form, a surrogate and a
     * code point above U+10FFFF: each offending byte becomes U+FFFD. */
    mpx_errrec *r = make("m\x80", "Q", "a\xe2\x82" "b", "\xc0\xaf|\xed\xa0\x80|\xf4\x90\x80\x80");
    ASSERT_EQ_STR(mpx_errrec_module(r), "m\xef\xbf\xbd");
    ASSERT_EQ_STR(mpx_errrec_message(r), "a\xef\xbf\xbd\xef\xbf\xbd" "b");
    ASSERT_EQ_STR(mpx_errrec_traceback(r),
                  "\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|"
                  "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    /* Valid multi-byte text is kept as is. */
    ASSERT_OK(mpx_errrec_set_origin(r, "Прцс-\xe2\x82\xac-\xf0\x9f\x98\x80", 3));
    const char *name;
    ASSERT_OK(mpx_errrec_origin(r, &name, NULL));
    ASSERT_EQ_STR(name, "Прцс-\xe2\x82\xac-\xf0\x9f\x98\x80");
    round_trip(r);
    mpx_errrec_destroy(r);
}

TEST(errrec_dup)
{
    mpx_errrec *c = chain(5);
    mpx_errrec *d = NULL;
    ASSERT_OK(mpx_errrec_dup(&d, c));
    ASSERT(d != c);
    assert_same(c, d);
    mpx_errrec_destroy(c);
    ASSERT_EQ_UINT(mpx_errrec_depth(d), 5);
    mpx_errrec_destroy(d);
}

/* ---- the encoding ---- */

TEST(errrec_round_trips)
{
    /* Empty strings everywhere but the qualname. */
    mpx_errrec *r = make("", "E", "", "");
    round_trip(r);
    ASSERT_OK(mpx_errrec_set_origin(r, "", 0));
    round_trip(r);
    mpx_errrec_destroy(r);

    /* Long strings and a long binary payload full of NULs. */
    size_t n = (size_t)1 << 20;
    char *big = malloc(n + 1);
    unsigned char *pl = malloc(3 * n);
    ASSERT(big && pl);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + i % 26);
    big[n] = '\0';
    for (size_t i = 0; i < 3 * n; i++)
        pl[i] = (unsigned char)(i % 3 ? 0 : i);
    r = make(big, big, big, big);
    ASSERT_OK(mpx_errrec_set_origin(r, big, INT64_MAX));
    ASSERT_OK(mpx_errrec_set_payload(r, pl, 3 * n));
    round_trip(r);
    mpx_errrec_destroy(r);
    free(big);
    free(pl);

    /* Chains of every length 1..64. */
    for (int d = 1; d <= MPX_ERRREC_MAX_DEPTH; d++) {
        mpx_errrec *c = chain(d);
        round_trip(c);
        mpx_errrec_destroy(c);
    }
}

TEST(errrec_layout)
{
    mpx_errrec *r = make("mpx", "EX", "hi", "tb\n");
    ASSERT_OK(mpx_errrec_set_origin(r, "P", 0x0102030405));
    ASSERT_OK(mpx_errrec_set_payload(r, "\0\1", 2));
    mpx_errrec *c = make("builtins", "C", "", NULL);
    ASSERT_OK(mpx_errrec_set_cause_take(r, c));
    void *buf;
    size_t len;
    ASSERT_OK(mpx_errrec_encode(r, &buf, &len));
    static const unsigned char want[] = {
        /* header: magic, version 1, flags 0, count 2, reserved 0, total length 174 */
        'M', 'P', 'X', 'E', 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 174, 0, 0, 0, 0, 0, 0, 0,
        /* record 0: flags (has origin), reserved, pid, 6 lengths */
        1, 0, 0, 0, 0, 0, 0, 0, 5, 4, 3, 2, 1, 0, 0, 0,
        3, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0,
        3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0,
        'm', 'p', 'x', 'E', 'X', 'h', 'i', 't', 'b', '\n', 'P', 0, 1,
        /* record 1: no origin, pid 0, module "builtins", qualname "C", the rest empty */
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        'b', 'u', 'i', 'l', 't', 'i', 'n', 's', 'C'};
    ASSERT_EQ_UINT(sizeof want, 174);
    ASSERT_EQ_UINT(len, sizeof want);
    ASSERT_MEM_EQ(buf, want, sizeof want);
    uint32_t magic;
    memcpy(&magic, buf, 4);
    if (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
        ASSERT_EQ_UINT(magic, MPX_ERRREC_MAGIC);
    ASSERT_OK(decode_exact(want, sizeof want));
    free(buf);
    mpx_errrec_destroy(r);
}

TEST(errrec_truncated_at_every_length)
{
    for (int s = 0; s < NSAMPLES; s++) {
        size_t len;
        unsigned char *buf = sample(s, &len);
        ASSERT_OK(decode_exact(buf, len));
        for (size_t l = 0; l < len; l++)
            ASSERT_ERR(decode_exact(buf, l), MPX_EBADFRAME);
        /* One byte too many (and a matching total length) is refused too. */
        unsigned char *longer = malloc(len + 1);
        ASSERT_NOT_NULL(longer);
        memcpy(longer, buf, len);
        longer[len] = 0;
        ASSERT_ERR(decode_exact(longer, len + 1), MPX_EBADFRAME);
        mpx__put64(longer + 16, len + 1);
        ASSERT_ERR(decode_exact(longer, len + 1), MPX_EBADFRAME);
        free(longer);
        free(buf);
    }
}

TEST(errrec_every_byte_corrupted)
{
    /* Every position, set to each of several values: the decoder either refuses it or
     * returns a sound record (decode_exact checks that it re-encodes to the same bytes), and
     * never reads outside the buffer (ASan builds). */
    static const int deltas[] = {1, -1, 0x80, 0x7f};
    for (int s = 0; s < NSAMPLES; s++) {
        size_t len;
        unsigned char *buf = sample(s, &len);
        unsigned char *c = malloc(len);
        ASSERT_NOT_NULL(c);
        int accepted = 0, refused = 0;
        for (size_t at = 0; at < len; at++) {
            unsigned vals[8];
            int nv = 0;
            vals[nv++] = 0;
            vals[nv++] = 0xff;
            for (int k = 0; k < 4; k++)
                vals[nv++] = (unsigned char)(buf[at] + deltas[k]);
            for (int v = 0; v < nv; v++) {
                if (vals[v] == buf[at])
                    continue;
                memcpy(c, buf, len);
                c[at] = (unsigned char)vals[v];
                int r = decode_exact(c, len);
                ASSERT_MSG(r == 0 || r == MPX_EBADFRAME || r == MPX_EVERSION,
                           "byte %zu = %u: %d", at, vals[v], r);
                r == 0 ? accepted++ : refused++;
            }
        }
        ASSERT_GT_INT(refused, 0);
        (void)accepted; /* a changed text byte that stays valid UTF-8 is accepted */
        free(c);
        free(buf);
    }
}

TEST(errrec_random_mutations)
{
    uint64_t rs = th_seed();
    for (int iter = 0; iter < 20000; iter++) {
        size_t len;
        unsigned char *buf = sample((int)(th_rand(&rs) % NSAMPLES), &len);
        th_mutate(buf, &len, &rs);
        int r = decode_exact(buf, len);
        ASSERT(r == 0 || r == MPX_EBADFRAME || r == MPX_EVERSION);
        free(buf);
    }
}

/* A hand-made encoding of one record: the header and record head as given, then `body`. */
static size_t forge(unsigned char *out, uint32_t count, uint32_t flags, int64_t pid,
                    const uint64_t lens[6], const void *body, size_t body_len)
{
    memcpy(out, "MPXE", 4);
    mpx__put16(out + 4, 1);
    mpx__put16(out + 6, 0);
    mpx__put32(out + 8, count);
    mpx__put32(out + 12, 0);
    mpx__put32(out + 24, flags);
    mpx__put32(out + 28, 0);
    mpx__put64(out + 32, (uint64_t)pid);
    for (int i = 0; i < 6; i++)
        mpx__put64(out + 40 + 8 * i, lens[i]);
    memcpy(out + 88, body, body_len);
    size_t len = 88 + body_len;
    mpx__put64(out + 16, len);
    return len;
}

TEST(errrec_hostile_inputs)
{
    unsigned char b[256];
    /* The baseline: builtins.E("x"), valid. */
    uint64_t ok[6] = {8, 1, 1, 0, 0, 0};
    size_t len = forge(b, 1, 0, 0, ok, "builtinsEx", 10);
    ASSERT_OK(decode_exact(b, len));

    /* Short, zero and all-ones inputs of every small length. */
    for (size_t l = 0; l < 120; l++) {
        unsigned char *z = calloc(l ? l : 1, 1);
        ASSERT_NOT_NULL(z);
        ASSERT_ERR(decode_exact(z, l), MPX_EBADFRAME);
        memset(z, 0xff, l);
        ASSERT_ERR(decode_exact(z, l), MPX_EBADFRAME);
        free(z);
    }

    /* Header defects. */
    len = forge(b, 1, 0, 0, ok, "builtinsEx", 10);
    b[0] = 'm';
    ASSERT_ERR(decode_exact(b, len), MPX_EBADFRAME);
    len = forge(b, 1, 0, 0, ok, "builtinsEx", 10);
    mpx__put16(b + 4, 2);
    ASSERT_ERR(decode_exact(b, len), MPX_EVERSION);
    mpx__put16(b + 4, 0);
    ASSERT_ERR(decode_exact(b, len), MPX_EVERSION);
    len = forge(b, 1, 0, 0, ok, "builtinsEx", 10);
    mpx__put16(b + 6, 1); /* header flags */
    ASSERT_ERR(decode_exact(b, len), MPX_EBADFRAME);
    len = forge(b, 1, 0, 0, ok, "builtinsEx", 10);
    mpx__put32(b + 12, 1); /* header reserved */
    ASSERT_ERR(decode_exact(b, len), MPX_EBADFRAME);
    for (uint32_t count = 0; count < 4; count += 2) { /* 0 and 2 records, holding 1 */
        len = forge(b, count, 0, 0, ok, "builtinsEx", 10);
        ASSERT_ERR(decode_exact(b, len), MPX_EBADFRAME);
    }
    len = forge(b, 1, 0, 0, ok, "builtinsEx", 10);
    mpx__put64(b + 16, len - 1);
    ASSERT_ERR(decode_exact(b, len), MPX_EBADFRAME);

    /* Record head defects: unknown flags, reserved, pid without origin, negative pid, origin
     * text without the flag, empty qualname. */
    len = forge(b, 1, 2, 0, ok, "builtinsEx", 10);
    ASSERT_ERR(decode_exact(b, len), MPX_EBADFRAME);
    len = forge(b, 1, 0, 0, ok, "builtinsEx", 10);
    mpx__put32(b + 28, 1);
    ASSERT_ERR(decode_exact(b, len), MPX_EBADFRAME);
    len = forge(b, 1, 0, 5, ok, "builtinsEx", 10);
    ASSERT_ERR(decode_exact(b, len), MPX_EBADFRAME);
    len = forge(b, 1, 1, -5, ok, "builtinsEx", 10);
    ASSERT_ERR(decode_exact(b, len), MPX_EBADFRAME);
    len = forge(b, 1, 1, 5, ok, "builtinsEx", 10);
    ASSERT_OK(decode_exact(b, len));
    uint64_t with_origin[6] = {8, 1, 1, 0, 1, 0};
    len = forge(b, 1, 0, 0, with_origin, "builtinsExP", 11);
    ASSERT_ERR(decode_exact(b, len), MPX_EBADFRAME);
    len = forge(b, 1, 1, 7, with_origin, "builtinsExP", 11);
    ASSERT_OK(decode_exact(b, len));
    uint64_t no_qualname[6] = {8, 0, 2, 0, 0, 0};
    len = forge(b, 1, 0, 0, no_qualname, "builtinsEx", 10);
    ASSERT_ERR(decode_exact(b, len), MPX_EBADFRAME);

    /* Text: NUL and invalid UTF-8 are refused in every text field; the payload may hold
     * anything. */
    static const char *const bad[] = {"\0", "\x80", "\xc0\x80", "\xed\xa0\x80",
                                      "\xf4\x90\x80\x80", "\xe2\x82", "\xff",
                                      "\xf8\x88\x80\x80\x80"};
    static const size_t bad_len[] = {1, 1, 2, 3, 4, 2, 1, 5};
    for (int field = 0; field < 5; field++) {
        for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
            uint64_t l[6] = {0, 1, 0, 0, 0, 0};
            unsigned char body[16];
            size_t off = 0;
            for (int f = 0; f < 5; f++) {
                if (f == field) {
                    memcpy(body + off, bad[k], bad_len[k]);
                    l[f] = bad_len[k] + (f == 1);
                    off += bad_len[k];
                }
                if (f == 1)
                    body[off++] = 'Q';
            }
            len = forge(b, 1, field == 4, 0, l, body, off);
            ASSERT_MSG(decode_exact(b, len) == MPX_EBADFRAME, "field %d bad %zu", field, k);
        }
    }
    uint64_t payload[6] = {0, 1, 0, 0, 0, 4};
    len = forge(b, 1, 0, 0, payload, "Q\0\xff\x80\0", 5);
    ASSERT_OK(decode_exact(b, len));

    /* Huge declared lengths in every field, in a small buffer. */
    static const uint64_t huge[] = {11, 64u << 20, (64u << 20) + 1, (uint64_t)1 << 40,
                                    (uint64_t)1 << 63, UINT64_MAX, UINT64_MAX - 87};
    for (int field = 0; field < 6; field++) {
        for (size_t k = 0; k < sizeof huge / sizeof huge[0]; k++) {
            uint64_t l[6] = {8, 1, 1, 0, 0, 0};
            l[field] = huge[k];
            len = forge(b, 1, field == 4, 0, l, "builtinsEx", 10);
            ASSERT_ERR(decode_exact(b, len), MPX_EBADFRAME);
        }
    }
    /* A total length above the limit is refused before anything else is read. */
    len = forge(b, 1, 0, 0, ok, "builtinsEx", 10);
    mpx__put64(b + 16, (uint64_t)MPX_ERRREC_MAX_SIZE + 1);
    ASSERT_ERR(decode_exact(b, len), MPX_EBADFRAME);
}

/* The current data segment size of this process (VmData), in bytes, or 0. */
static size_t vm_data(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return 0;
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmData: %zu kB", &kb) == 1)
            break;
    fclose(f);
    return kb * 1024;
}

TEST(errrec_huge_lengths_not_allocated)
{
    /* Under a data limit of a few MiB more than in use, a decoder that allocated a declared
     * 60 MiB before checking it against the input would fail with -ENOMEM; it must say
     * MPX_EBADFRAME. Sanitizer builds reserve memory in ways RLIMIT_DATA breaks, so there
     * only the result is checked (the design validates before allocating either way). */
    unsigned char b[256];
    uint64_t l[6] = {8, 1, 1, 0, 0, 60u << 20};
#ifndef HAVE_ASAN
    size_t used = vm_data();
    if (used) {
        struct rlimit rl = {used + (8u << 20), used + (8u << 20)};
        ASSERT_SYS(setrlimit(RLIMIT_DATA, &rl));
        void *probe = malloc(32u << 20);
        ASSERT_NULL(probe); /* the limit works */
    }
#else
    (void)vm_data;
#endif
    size_t len = forge(b, 1, 0, 0, l, "builtinsEx", 10);
    ASSERT_ERR(decode_exact(b, len), MPX_EBADFRAME);
    /* Also for a record deep in a chain: 63 small ones, then the liar. */
    l[5] = 0;
    size_t reclen = 64 + 10;
    unsigned char *big = calloc(1, 24 + 64 * reclen);
    ASSERT_NOT_NULL(big);
    for (int k = 0; k < 64; k++) {
        unsigned char *r = big + 24 + (size_t)k * reclen;
        uint64_t rl6[6] = {8, 1, 1, 0, 0, k == 63 ? (60u << 20) : 0};
        for (int i = 0; i < 6; i++)
            mpx__put64(r + 16 + 8 * i, rl6[i]);
        memcpy(r + 64, "builtinsEx", 10);
    }
    memcpy(big, "MPXE", 4);
    mpx__put16(big + 4, 1);
    mpx__put32(big + 8, 64);
    mpx__put64(big + 16, 24 + 64 * reclen);
    ASSERT_ERR(decode_exact(big, 24 + 64 * reclen), MPX_EBADFRAME);
    /* Fixed, it decodes: the chain of 64 is fine. */
    mpx__put64(big + 24 + 63 * reclen + 16 + 40, 0);
    ASSERT_OK(decode_exact(big, 24 + 64 * reclen));
    free(big);
}

TEST(errrec_depth_65_rejected)
{
    /* A well-formed chain of 65 records, forged from a valid 64 by appending one more. */
    mpx_errrec *c = chain(MPX_ERRREC_MAX_DEPTH);
    void *buf;
    size_t len;
    ASSERT_OK(mpx_errrec_encode(c, &buf, &len));
    mpx_errrec_destroy(c);
    static const unsigned char extra[] = {
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 'E'};
    size_t len65 = len + sizeof extra;
    unsigned char *b = malloc(len65);
    ASSERT_NOT_NULL(b);
    memcpy(b, buf, len);
    memcpy(b + len, extra, sizeof extra);
    mpx__put32(b + 8, 65);
    mpx__put64(b + 16, len65);
    ASSERT_ERR(decode_exact(b, len65), MPX_EBADFRAME);
    /* The same bytes claiming 64 records have one record too many at the end. */
    mpx__put32(b + 8, 64);
    ASSERT_ERR(decode_exact(b, len65), MPX_EBADFRAME);
    ASSERT_EQ_UINT(get64((unsigned char *)buf + 16), len);
    ASSERT_OK(decode_exact(buf, len));
    free(b);
    free(buf);
}

TEST(errrec_encode_too_big)
{
    /* Fields that fit one by one but not together. */
    size_t n = (size_t)40 << 20;
    unsigned char *pl = calloc(1, n);
    ASSERT_NOT_NULL(pl);
    mpx_errrec *a = make("m", "A", "x", NULL), *b = make("m", "B", "x", NULL);
    ASSERT_OK(mpx_errrec_set_payload(a, pl, n));
    ASSERT_OK(mpx_errrec_set_payload(b, pl, n));
    void *buf = (void *)0x1;
    size_t len = 3;
    ASSERT_OK(mpx_errrec_encode(a, &buf, &len));
    free(buf);
    ASSERT_OK(mpx_errrec_set_cause_take(a, b));
    buf = (void *)0x1;
    ASSERT_ERR(mpx_errrec_encode(a, &buf, &len), MPX_ETOOBIG);
    ASSERT_EQ_PTR(buf, (void *)0x1);
    mpx_errrec_destroy(a);
    free(pl);
}

/* ---- format ---- */

TEST(errrec_format_two_hop)
{
    /* A ValueError in a worker, re-raised as a RuntimeError by the parent. */
    mpx_errrec *inner = make("builtins", "ValueError", "invalid literal for int() with base "
                             "10: 'x'", "Traceback (most recent call last):\n"
                             "  File \"work.py\", line 3, in f\n    int('x')\n");
    ASSERT_OK(mpx_errrec_set_origin(inner, "SpawnProcess-1", 1234));
    mpx_errrec *outer = make("mpservice.multiprocessing", "RemoteError", "job 7 failed",
                             "Traceback (most recent call last):\n"
                             "  File \"main.py\", line 9, in <module>\n    fut.result()");
    ASSERT_OK(mpx_errrec_set_cause_take(outer, inner));
    char *text = NULL;
    ASSERT_OK(mpx_errrec_format(outer, &text));
    ASSERT_EQ_STR(text,
                  "[SpawnProcess-1] Traceback (most recent call last):\n"
                  "  File \"work.py\", line 3, in f\n"
                  "    int('x')\n"
                  "ValueError: invalid literal for int() with base 10: 'x'\n"
                  "\n"
                  "The above exception was the direct cause of the following exception:\n"
                  "\n"
                  "Traceback (most recent call last):\n"
                  "  File \"main.py\", line 9, in <module>\n"
                  "    fut.result()\n"
                  "mpservice.multiprocessing.RemoteError: job 7 failed\n");
    free(text);
    mpx_errrec_destroy(outer);
}

TEST(errrec_format_details)
{
    char *text;
    /* No traceback, empty message, module shown or hidden. */
    mpx_errrec *r = make("builtins", "KeyboardInterrupt", "", NULL);
    ASSERT_OK(mpx_errrec_format(r, &text));
    ASSERT_EQ_STR(text, "KeyboardInterrupt\n");
    free(text);
    mpx_errrec_destroy(r);
    r = make("__main__", "MyError", "m", NULL);
    ASSERT_OK(mpx_errrec_format(r, &text));
    ASSERT_EQ_STR(text, "MyError: m\n");
    free(text);
    mpx_errrec_destroy(r);
    r = make("", "Bare", "m", "");
    ASSERT_OK(mpx_errrec_format(r, &text));
    ASSERT_EQ_STR(text, "Bare: m\n");
    free(text);
    mpx_errrec_destroy(r);

    /* A C error with an origin but no traceback: the prefix goes on the type line. */
    r = make("mpx", "MPX_EPEERDIED", "the process at the other end died", NULL);
    ASSERT_OK(mpx_errrec_set_origin(r, "worker", 77));
    ASSERT_OK(mpx_errrec_format(r, &text));
    ASSERT_EQ_STR(text, "[worker] mpx.MPX_EPEERDIED: the process at the other end died\n");
    free(text);

    /* Three hops. */
    mpx_errrec *mid = make("builtins", "B", "b", "tb-b\n");
    ASSERT_OK(mpx_errrec_set_cause_take(mid, make("builtins", "A", "a", "tb-a\n")));
    ASSERT_OK(mpx_errrec_set_cause_take(r, mid));
    ASSERT_OK(mpx_errrec_format(r, &text));
    ASSERT_EQ_STR(text, "tb-a\nA: a\n\nThe above exception was the direct cause of the "
                        "following exception:\n\ntb-b\nB: b\n\nThe above exception was the "
                        "direct cause of the following exception:\n\n[worker] "
                        "mpx.MPX_EPEERDIED: the process at the other end died\n");
    free(text);
    mpx_errrec_destroy(r);
}

TEST_LIST_START
TEST_ENTRY(errrec_create_and_get)
TEST_ENTRY(errrec_bad_arguments)
TEST_ENTRY(errrec_origin_and_payload)
TEST_ENTRY(errrec_cause_chain)
TEST_ENTRY(errrec_invalid_utf8_replaced)
TEST_ENTRY(errrec_dup)
TEST_ENTRY(errrec_round_trips)
TEST_ENTRY(errrec_layout)
TEST_ENTRY(errrec_truncated_at_every_length)
TEST_ENTRY(errrec_every_byte_corrupted)
TEST_ENTRY_TIMEOUT(errrec_random_mutations, 120)
TEST_ENTRY(errrec_hostile_inputs)
TEST_ENTRY(errrec_huge_lengths_not_allocated)
TEST_ENTRY(errrec_depth_65_rejected)
TEST_ENTRY(errrec_encode_too_big)
TEST_ENTRY(errrec_format_two_hop)
TEST_ENTRY(errrec_format_details)
TEST_LIST_END

HELPER_LIST_START
HELPER_LIST_END

TEST_MAIN()
