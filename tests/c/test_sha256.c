/* Tests of SHA-256 and HMAC-SHA-256 (src/wire/sha256.h), the primitives of the object
 * server's authentication: the FIPS 180-4 and RFC 4231 test vectors, every padding
 * boundary, streaming in every chunking, and the constant-time comparison. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "wire/sha256.h"

/* Lowercase hex of a digest. */
static void hex(const unsigned char d[MPX_SHA256_SIZE], char out[2 * MPX_SHA256_SIZE + 1])
{
    for (size_t i = 0; i < MPX_SHA256_SIZE; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void check_sha(const void *msg, size_t len, const char *want)
{
    unsigned char d[MPX_SHA256_SIZE];
    char h[2 * MPX_SHA256_SIZE + 1];
    mpx__sha256(msg, len, d);
    hex(d, h);
    ASSERT_EQ_STR(h, want);
}

static void check_hmac(const void *key, size_t klen, const void *msg, size_t len,
                       const char *want)
{
    unsigned char d[MPX_SHA256_SIZE];
    char h[2 * MPX_SHA256_SIZE + 1];
    mpx__hmac_sha256(key, klen, msg, len, d);
    hex(d, h);
    ASSERT_EQ_STR(h, want);
}

TEST(sha256_fips_vectors)
{
    check_sha("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    check_sha("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    check_sha(m448, strlen(m448),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    size_t n = 1000000;
    char *a = malloc(n);
    ASSERT_NOT_NULL(a);
    memset(a, 'a', n);
    check_sha(a, n, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(a);
}

TEST(sha256_padding_boundaries)
{
    /* Lengths around the 56-byte point where the length no longer fits the last block. */
    static const struct {
        size_t n;
        const char *want;
    } v[] = {
        {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
        {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
        {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
        {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
        {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
        {119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"},
        {120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c"},
        {127, "c57e9278af78fa3cab38667bef4ce29d783787a2f731d4e12200270f0c32320a"},
        {128, "6836cf13bac400e9105071cd6af47084dfacad4e5e302c94bfed24e013afb73e"},
    };
    char a[128];
    memset(a, 'a', sizeof a);
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        check_sha(a, v[i].n, v[i].want);
}

TEST(sha256_streaming_equals_one_shot)
{
    /* Every chunk size from 1 to 130 over 300 bytes of varied data, and a chunking that
     * changes at each step, give the one-shot digest. */
    unsigned char msg[300], want[MPX_SHA256_SIZE], got[MPX_SHA256_SIZE];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (unsigned char)(i * 131 + 7);
    mpx__sha256(msg, sizeof msg, want);
    for (size_t chunk = 1; chunk <= 130; chunk++) {
        mpx__sha256_ctx c;
        mpx__sha256_init(&c);
        for (size_t off = 0; off < sizeof msg; off += chunk) {
            size_t k = sizeof msg - off < chunk ? sizeof msg - off : chunk;
            mpx__sha256_update(&c, msg + off, k);
        }
        mpx__sha256_final(&c, got);
        ASSERT_MEM_EQ(got, want, sizeof want);
    }
    mpx__sha256_ctx c;
    mpx__sha256_init(&c);
    for (size_t off = 0, k = 0; off < sizeof msg; off += k) {
        k = (off % 67) + 1;
        if (k > sizeof msg - off)
            k = sizeof msg - off;
        mpx__sha256_update(&c, msg + off, k);
    }
    mpx__sha256_update(&c, msg, 0); /* an empty update changes nothing */
    mpx__sha256_final(&c, got);
    ASSERT_MEM_EQ(got, want, sizeof want);
}

TEST(hmac_sha256_rfc4231)
{
    unsigned char k1[20], k6[131], k64[64];
    memset(k1, 0x0b, sizeof k1);
    memset(k6, 0xaa, sizeof k6);
    memset(k64, 0xaa, sizeof k64);
    check_hmac(k1, sizeof k1, "Hi There", 8,
               "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    const char *m2 = "what do ya want for nothing?";
    check_hmac("Jefe", 4, m2, strlen(m2),
               "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    /* A key longer than a block is hashed first. */
    const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key First";
    check_hmac(k6, sizeof k6, m6, strlen(m6),
               "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    /* A key of exactly one block is used as is. */
    char x[119];
    memset(x, 'x', sizeof x);
    check_hmac(k64, sizeof k64, x, sizeof x,
               "6a7d3c24666ae90a2f8f08ad36e8d13280f0fb63019cd61b755c0a9ef731aecd");
}

TEST(equal_ct)
{
    unsigned char a[32], b[32];
    memset(a, 7, sizeof a);
    memcpy(b, a, sizeof b);
    ASSERT_EQ_INT(mpx__equal_ct(a, b, sizeof a), 1);
    ASSERT_EQ_INT(mpx__equal_ct(a, b, 0), 1);
    for (size_t i = 0; i < sizeof a; i++) {
        b[i] ^= 0x80;
        ASSERT_EQ_INT(mpx__equal_ct(a, b, sizeof a), 0);
        b[i] ^= 0x80;
    }
}

TEST_LIST_START
TEST_ENTRY(sha256_fips_vectors)
TEST_ENTRY(sha256_padding_boundaries)
TEST_ENTRY(sha256_streaming_equals_one_shot)
TEST_ENTRY(hmac_sha256_rfc4231)
TEST_ENTRY(equal_ct)
TEST_LIST_END

HELPER_LIST_START
HELPER_LIST_END

TEST_MAIN()
