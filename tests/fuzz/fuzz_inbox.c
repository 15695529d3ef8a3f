/* Fuzz target for the inbox decoder (<mpx/inbox.h>), the parser of every message a child
 * puts into its parent's inbox: log records and "MPXO" outcome and GONE messages.
 *
 * Built two ways: with libFuzzer (clang -fsanitize=fuzzer,address fuzz_inbox.c -lmpx) for
 * fuzzing, and with replay.c as the ctest "fuzz_inbox_replay", which runs every file of
 * corpus/inbox/ through it as an ordinary test.
 *
 * Properties checked on every input: decoding never reads outside the input (the caller
 * passes a buffer of exactly `size` bytes, so ASan sees any overrun); it fails only with
 * MPX_EBADFRAME, MPX_EVERSION or -ENOMEM, leaving the output untouched (nothing to free),
 * and MPX_EVERSION only for input that starts with a magic; an accepted message is
 * consistent and canonical: an outcome or GONE marker, encoded again field by field as
 * docs/inbox.md lays it out, gives exactly the input, and so does a record through
 * mpx_log_encode; releasing it frees everything and zeroes the message. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpx/error.h"
#include "mpx/inbox.h"
#include "mpx/log.h"

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "fuzz_inbox: property failed: %s (line %d)\n", #cond, __LINE__); \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int all_zero(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return 0;
    return 1;
}

static void put_le(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* An outcome or GONE marker, encoded again by hand and compared with the input. */
static void check_mpxo(const mpx_inbox_msg *m, const uint8_t *data, size_t size)
{
    CHECK(m->record == NULL);
    CHECK((m->data == NULL) == (m->len == 0));
    CHECK(m->type == MPX_INBOX_OUTCOME || m->len == 0);
    CHECK(m->type == MPX_INBOX_OUTCOME || m->code == 0);
    CHECK(size == MPX_INBOX_HEAD_SIZE + m->len);
    unsigned char *p = malloc(size);
    CHECK(p != NULL);
    memcpy(p, "MPXO", 4);
    put_le(p + 4, MPX_INBOX_VERSION, 2);
    put_le(p + 6, m->type == MPX_INBOX_OUTCOME ? 1 : 2, 2);
    put_le(p + 8, m->code, 4);
    put_le(p + 12, 0, 4);
    put_le(p + 16, size, 8);
    put_le(p + 24, m->token, 8);
    if (m->len)
        memcpy(p + MPX_INBOX_HEAD_SIZE, m->data, m->len);
    CHECK(memcmp(p, data, size) == 0);
    free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mpx_inbox_msg m;
    memset(&m, 0, sizeof m);
    int r = mpx_inbox_decode(&m, data, size);
    if (r < 0) {
        CHECK(r == MPX_EBADFRAME || r == MPX_EVERSION || r == -ENOMEM);
        CHECK(r != MPX_EVERSION || (size >= 4 && (memcmp(data, "MPXO", 4) == 0 ||
                                                  memcmp(data, "MPXL", 4) == 0)));
        CHECK(all_zero(&m, sizeof m));
        return 0;
    }
    CHECK(r == 0);
    switch (m.type) {
    case MPX_INBOX_OUTCOME:
    case MPX_INBOX_GONE:
        check_mpxo(&m, data, size);
        break;
    case MPX_INBOX_LOG: {
        CHECK(m.record != NULL && m.data == NULL && m.len == 0);
        void *buf = NULL;
        size_t len = 0;
        CHECK(mpx_log_encode(m.record, &buf, &len) == 0);
        CHECK(len == size && memcmp(buf, data, size) == 0);
        free(buf);
        break;
    }
    default:
        CHECK(!"an unknown message type");
    }
    mpx_inbox_msg_done(&m);
    CHECK(all_zero(&m, sizeof m));
    return 0;
}
