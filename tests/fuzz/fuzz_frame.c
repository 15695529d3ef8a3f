/* Fuzz target for the frame decoder (<mpx/frame.h>), the parser of bytes that arrive from
 * another process through a queue.
 *
 * Built two ways: with libFuzzer (clang -fsanitize=fuzzer,address fuzz_frame.c -lmpx) for
 * fuzzing, and with replay.c as the ctest "fuzz_frame_replay", which runs every file of
 * corpus/frame/ through it as an ordinary test.
 *
 * Properties checked on every input: decoding never reads outside the input (the caller
 * passes a buffer of exactly `size` bytes, so ASan sees any overrun); what is accepted lies
 * inside the input, each part 8-aligned from the start; and an accepted frame re-encodes
 * to the same length, the same header and the same part bytes (only padding, which the
 * decoder does not inspect, may differ). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "mpx/error.h"
#include "mpx/frame.h"

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "fuzz_frame: property failed: %s (line %d)\n", #cond, __LINE__); \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned kind;
    size_t nparts;
    int r = mpx_frame_peek(data, size, &kind, &nparts);
    if (r < 0) {
        CHECK(r == MPX_EBADFRAME || r == MPX_EVERSION);
        return 0;
    }
    CHECK(nparts >= 1 && nparts <= MPX_FRAME_MAX_PARTS);
    CHECK(kind == MPX_FRAME_PICKLE || kind == MPX_FRAME_BYTES);
    CHECK(mpx_frame_header_size(nparts) <= size);
    mpx_frame_part *parts = calloc(nparts, sizeof *parts);
    CHECK(parts != NULL);
    r = mpx_frame_parse(data, size, parts, nparts);
    if (r < 0) {
        CHECK(r == MPX_EBADFRAME);
        free(parts);
        return 0;
    }
    for (size_t i = 0; i < nparts; i++) {
        const uint8_t *p = parts[i].data;
        CHECK(p >= data + mpx_frame_header_size(nparts) && p <= data + size);
        CHECK(parts[i].len <= (size_t)(data + size - p));
        CHECK((size_t)(p - data) % 8 == 0);
    }

    /* Re-encode and compare. */
    size_t hs = mpx_frame_header_size(nparts);
    uint64_t *hdr = malloc(hs);
    struct iovec *iov = malloc(mpx_frame_iov_count(nparts) * sizeof *iov);
    CHECK(hdr && iov);
    int n = mpx_frame_build(hdr, kind, parts, nparts, iov);
    CHECK(n >= 1);
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += iov[i].iov_len;
    CHECK(total == size);
    uint8_t *out = malloc(size);
    CHECK(out != NULL);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        memcpy(out + off, iov[i].iov_base, iov[i].iov_len);
        off += iov[i].iov_len;
    }
    /* The header up to the flags' padding, and every part at its offset, match. */
    CHECK(memcmp(out, data, 16 + 8 * nparts + nparts) == 0);
    for (size_t i = 0; i < nparts; i++) {
        size_t at = (size_t)((const uint8_t *)parts[i].data - data);
        CHECK(parts[i].len == 0 || memcmp(out + at, data + at, parts[i].len) == 0);
    }
    free(out);
    free(hdr);
    free(iov);
    free(parts);
    return 0;
}
