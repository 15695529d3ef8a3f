/* Fuzz target for the error-record decoder (<mpx/errrec.h>), the parser of error reports
 * that arrive from another process.
 *
 * Built two ways: with libFuzzer (clang -fsanitize=fuzzer,address fuzz_errrec.c -lmpx) for
 * fuzzing, and with replay.c as the ctest "fuzz_errrec_replay", which runs every file of
 * corpus/errrec/ through it as an ordinary test.
 *
 * Properties checked on every input: decoding never reads outside the input (the caller
 * passes a buffer of exactly `size` bytes, so ASan sees any overrun) and fails only with
 * MPX_EBADFRAME, MPX_EVERSION or -ENOMEM; an accepted record is sound: its chain is at most
 * MPX_ERRREC_MAX_DEPTH long, every text field is a C string of valid length, it re-encodes to
 * exactly the input (the encoding is canonical), and it formats. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpx/errrec.h"
#include "mpx/error.h"

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "fuzz_errrec: property failed: %s (line %d)\n", #cond,          \
                    __LINE__);                                                               \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mpx_errrec *rec = NULL;
    int r = mpx_errrec_decode(&rec, data, size);
    if (r < 0) {
        CHECK(r == MPX_EBADFRAME || r == MPX_EVERSION || r == -ENOMEM);
        CHECK(rec == NULL);
        return 0;
    }
    CHECK(rec != NULL);
    size_t depth = mpx_errrec_depth(rec);
    CHECK(depth >= 1 && depth <= MPX_ERRREC_MAX_DEPTH);
    size_t text = 0;
    for (const mpx_errrec *c = rec; c; c = mpx_errrec_cause(c)) {
        const char *fields[4] = {mpx_errrec_module(c), mpx_errrec_qualname(c),
                                 mpx_errrec_message(c), mpx_errrec_traceback(c)};
        for (int i = 0; i < 4; i++) {
            CHECK(fields[i] != NULL);
            text += strlen(fields[i]);
        }
        CHECK(fields[1][0] != '\0');
        const char *name;
        int64_t pid;
        if (mpx_errrec_origin(c, &name, &pid) == 0) {
            CHECK(name != NULL && pid >= 0);
            text += strlen(name);
        }
        size_t plen;
        const void *p = mpx_errrec_payload(c, &plen);
        CHECK((p == NULL) == (plen == 0));
        text += plen;
    }
    CHECK(text <= size);

    void *buf = NULL;
    size_t len = 0;
    CHECK(mpx_errrec_encode(rec, &buf, &len) == 0);
    CHECK(len == size && memcmp(buf, data, size) == 0);
    free(buf);

    char *out = NULL;
    CHECK(mpx_errrec_format(rec, &out) == 0 && out != NULL);
    free(out);
    mpx_errrec_destroy(rec);
    return 0;
}
