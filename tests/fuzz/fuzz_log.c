/* Fuzz target for the log-record decoder (<mpx/log.h>), the parser of log messages that
 * arrive from a child process.
 *
 * Built two ways: with libFuzzer (clang -fsanitize=fuzzer,address fuzz_log.c -lmpx) for
 * fuzzing, and with replay.c as the ctest "fuzz_log_replay", which runs every file of
 * corpus/log/ through it as an ordinary test.
 *
 * Properties checked on every input: decoding never reads outside the input (the caller
 * passes a buffer of exactly `size` bytes, so ASan sees any overrun) and fails only with
 * MPX_EBADFRAME, MPX_EVERSION or -ENOMEM, or reports a well-formed end marker (MPX_ECLOSED,
 * exactly MPX_LOG_HEAD_SIZE bytes); an accepted record is sound: every string is a C string
 * whose lengths add up to the input's text (with the extra part, the input's tail, after
 * them), it re-encodes to exactly the input (the encoding
 * is canonical), and it formats. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpx/error.h"
#include "mpx/log.h"

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "fuzz_log: property failed: %s (line %d)\n", #cond, __LINE__);  \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mpx_log_record *rec = NULL;
    int r = mpx_log_decode(&rec, data, size);
    if (r == MPX_ECLOSED) {
        CHECK(size == MPX_LOG_HEAD_SIZE && rec == NULL);
        return 0;
    }
    if (r < 0) {
        CHECK(r == MPX_EBADFRAME || r == MPX_EVERSION || r == -ENOMEM);
        CHECK(rec == NULL);
        return 0;
    }
    CHECK(rec != NULL);
    const char *s[6] = {rec->logger, rec->message,      rec->func,
                        rec->file,   rec->process_name, rec->thread_name};
    size_t text = 0;
    for (int i = 0; i < 6; i++) {
        CHECK(s[i] != NULL);
        text += strlen(s[i]);
    }
    CHECK(text + MPX_LOG_RECORD_HEAD_SIZE + rec->extra_len == size);
    CHECK(rec->extra_len <= MPX_LOG_MAX_EXTRA);
    CHECK((rec->extra_len == 0) == (rec->extra == NULL));
    if (rec->extra_len)
        CHECK(memcmp(rec->extra, data + size - rec->extra_len, rec->extra_len) == 0);
    CHECK(strlen(rec->message) <= MPX_LOG_MAX_MESSAGE);

    void *buf = NULL;
    size_t len = 0;
    CHECK(mpx_log_encode(rec, &buf, &len) == 0);
    CHECK(len == size && memcmp(buf, data, size) == 0);
    free(buf);

    char *out = NULL;
    r = mpx_log_format(rec, "[%(asctime)s.%(msecs)02d; %(levelname)s; %(name)s; %(funcName)s, "
                            "%(lineno)d] [%(processName)s %(process)d %(threadName)s] "
                            "%(filename)s %(module)s %(created)s %(message)s", &out);
    CHECK(r == 0 || r == -ERANGE);
    CHECK((r == 0) == (out != NULL));
    free(out);
    mpx_log_record_free(rec);
    return 0;
}
