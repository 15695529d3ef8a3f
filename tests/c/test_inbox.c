/* Tests of the parent's inbox (<mpx/inbox.h>): log records and outcomes from children over
 * one unbounded queue, the "MPXO" message and its strict decoder, and the completion
 * protocol (expect / complete / flush / forget).
 *
 * The header and docs/inbox.md are the contract. Children are forked with th_fork and send
 * through the inherited handle or a handle attached by descriptor, as a spawned child
 * would. Invalid messages are written straight into the inbox's queue through a second
 * mpx_queue handle on mpx_inbox_fd(). Messages under test are decoded from buffers of
 * exactly their length, so that an out-of-bounds read shows up under ASan; the decoder's
 * verdict on damaged input is compared with an independent statement of the validation
 * rules (expected_decode below), and every accepted message must re-encode, by hand, to
 * exactly its bytes. Where a child is killed mid-send, either at a random instant or at a
 * named fault point (<mpx/fault.h>), every message received must decode, in order. */
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"
#include "wire/bytes.h"
#include "log_records.h"
#include "mpx/error.h"
#include "mpx/fault.h"
#include "mpx/inbox.h"
#include "mpx/log.h"
#include "mpx/queue.h"

#define MS 1000000LL
#define SEC 1000000000LL

/* ---------------------------------------------------------------------------------------
 * Small tools
 */

static mpx_deadline_t in_ms(int64_t ms) { return mpx_deadline_in(ms * MS); }

/* A call that should not block returned quickly (generous: 1 s). */
#define ASSERT_QUICK(t0)                                                                     \
    ASSERT_MSG(th_now_ns() - (t0) < 1 * SEC, "took %.1f ms, want no wait",                   \
               (th_now_ns() - (t0)) / 1e6)

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const unsigned char *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* Writes an "MPXO" message into p (which holds 32 + n bytes), field by field as the layout
 * table of docs/inbox.md says, with every field chosen by the caller. Returns 32 + n. */
static size_t mpxo(unsigned char *p, uint16_t version, uint16_t kind, uint32_t code,
                   uint32_t reserved, uint64_t total, uint64_t token, const void *payload,
                   size_t n)
{
    memcpy(p, "MPXO", 4);
    mpx__put16(p + 4, version);
    mpx__put16(p + 6, kind);
    mpx__put32(p + 8, code);
    mpx__put32(p + 12, reserved);
    mpx__put64(p + 16, total);
    mpx__put64(p + 24, token);
    if (n)
        memcpy(p + 32, payload, n);
    return 32 + n;
}

/* A well-formed outcome or GONE marker. */
static size_t outcome_msg(unsigned char *p, uint64_t token, uint32_t code, const void *d,
                          size_t n)
{
    return mpxo(p, 1, 1, code, 0, 32 + n, token, d, n);
}

static size_t gone_msg(unsigned char *p, uint64_t token)
{
    return mpxo(p, 1, 2, 0, 0, 32, token, NULL, 0);
}

/* Record i of the stream tagged `tag` (carried in the pid field). */
static void send_record(mpx_inbox *ib, int i, int tag)
{
    char msg[64];
    mpx_log_record r = sample(i);
    r.pid = tag;
    snprintf(msg, sizeof msg, "record %d of %d", i, tag);
    r.message = msg;
    ASSERT_OK(mpx_inbox_send_log(ib, &r));
}

static void check_record(const mpx_inbox_msg *m, int i, int tag)
{
    char msg[64];
    ASSERT_EQ_INT(m->type, MPX_INBOX_LOG);
    ASSERT_NOT_NULL(m->record);
    snprintf(msg, sizeof msg, "record %d of %d", i, tag);
    ASSERT_EQ_INT(m->record->pid, tag);
    ASSERT_EQ_INT(m->record->line, i);
    ASSERT_EQ_STR(m->record->message, msg);
}

/* As check_record, for a message that may be padded with 't' after its text. */
static void check_padded_record(const mpx_inbox_msg *m, int i, int tag)
{
    char msg[64];
    ASSERT_EQ_INT(m->type, MPX_INBOX_LOG);
    ASSERT_NOT_NULL(m->record);
    int n = snprintf(msg, sizeof msg, "record %d of %d", i, tag);
    ASSERT_EQ_INT(m->record->pid, tag);
    ASSERT_EQ_INT(m->record->line, i);
    const char *s = m->record->message;
    ASSERT_MSG(strncmp(s, msg, (size_t)n) == 0, "record %d: message \"%.40s\"", i, s);
    ASSERT_MSG(strspn(s + n, "t") == strlen(s + n), "record %d: bad padding", i);
}

/* A second handle on the inbox's queue, to look at or write into what travels. */
static mpx_queue *raw_queue(mpx_inbox *ib)
{
    mpx_queue *q = NULL;
    ASSERT_OK(mpx_queue_attach(&q, mpx_inbox_fd(ib)));
    return q;
}

static uint64_t queued(mpx_queue *q)
{
    uint64_t n = 0;
    ASSERT_OK(mpx_queue_size(q, &n));
    return n;
}

static bool all_zero(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

/* Receives exactly one message, waiting until `dl`. */
static void recv_one(mpx_inbox *ib, mpx_inbox_msg *m, mpx_deadline_t dl)
{
    size_t got = 0;
    int rc;
    while ((rc = mpx_inbox_recv(ib, m, 1, &got, dl)) == -EINTR)
        ;
    ASSERT_OK(rc);
    ASSERT_EQ_UINT(got, 1);
}

static void expect_empty(mpx_inbox *ib)
{
    mpx_inbox_msg m = {0};
    size_t got = 99;
    ASSERT_ERR(mpx_inbox_recv(ib, &m, 1, &got, MPX_NOWAIT), -EAGAIN);
    ASSERT_EQ_UINT(got, 0);
}

/* ---------------------------------------------------------------------------------------
 * The decoder's contract, stated independently
 */

/* What mpx_inbox_decode must return for buf[0..len), by the rules of docs/inbox.md: an
 * "MPXO" message is checked in order (length, version, reserved and total, kind); anything
 * else is a log message, judged by mpx_log_decode, whose end marker is malformed here. */
static int expected_decode(const unsigned char *p, size_t len)
{
    if (len >= 4 && rd32(p) == MPX_INBOX_MAGIC) {
        if (len < MPX_INBOX_HEAD_SIZE)
            return MPX_EBADFRAME;
        if (rd16(p + 4) != MPX_INBOX_VERSION)
            return MPX_EVERSION;
        if (rd32(p + 12) != 0 || rd64(p + 16) != len)
            return MPX_EBADFRAME;
        unsigned kind = rd16(p + 6);
        if (kind == 2)
            return len == MPX_INBOX_HEAD_SIZE && rd32(p + 8) == 0 ? 0 : MPX_EBADFRAME;
        return kind == 1 ? 0 : MPX_EBADFRAME;
    }
    mpx_log_record *rec = NULL;
    int r = mpx_log_decode(&rec, p, len);
    mpx_log_record_free(rec);
    return r == MPX_ECLOSED ? MPX_EBADFRAME : r;
}

/* An accepted message is consistent and canonical: encoding it again, by hand for an
 * "MPXO" message and with mpx_log_encode for a record, gives exactly its bytes. */
static void check_canonical(const unsigned char *p, size_t len, const mpx_inbox_msg *m)
{
    if (m->type == MPX_INBOX_LOG) {
        ASSERT_NOT_NULL(m->record);
        ASSERT_NULL(m->data);
        ASSERT_EQ_UINT(m->len, 0);
        void *again = NULL;
        size_t alen = 0;
        ASSERT_OK(mpx_log_encode(m->record, &again, &alen));
        ASSERT_EQ_UINT(alen, len);
        ASSERT_MEM_EQ(again, p, len);
        free(again);
        return;
    }
    ASSERT_MSG(m->type == MPX_INBOX_OUTCOME || m->type == MPX_INBOX_GONE, "type %d", m->type);
    ASSERT_NULL(m->record);
    ASSERT_EQ_INT(m->data == NULL, m->len == 0);
    if (m->type == MPX_INBOX_GONE) {
        ASSERT_EQ_UINT(m->len, 0);
        ASSERT_EQ_UINT(m->code, 0);
    }
    unsigned char *again = malloc(MPX_INBOX_HEAD_SIZE + m->len);
    ASSERT_NOT_NULL(again);
    size_t alen = mpxo(again, 1, m->type == MPX_INBOX_OUTCOME ? 1 : 2, m->code, 0,
                       MPX_INBOX_HEAD_SIZE + m->len, m->token, m->data, m->len);
    ASSERT_EQ_UINT(alen, len);
    ASSERT_MEM_EQ(again, p, len);
    free(again);
}

/* Decodes from an exact-size copy. */
static int decode_exact(const void *buf, size_t len, mpx_inbox_msg *m)
{
    unsigned char *p = th_exact_copy(buf, len);
    int r = mpx_inbox_decode(m, p, len);
    free(p);
    return r;
}

/* Decodes buf[0..len) and checks the verdict against expected_decode; an accepted message
 * must be canonical, a refused one must leave *m as it was (nothing to free). Returns the
 * result. */
static int decode_and_judge(const unsigned char *buf, size_t len)
{
    unsigned char *p = th_exact_copy(buf, len);
    mpx_inbox_msg m;
    memset(&m, 0, sizeof m);
    int rc = mpx_inbox_decode(&m, p, len);
    int want = expected_decode(p, len);
    if (rc != want) {
        char hex[3 * 40 + 1] = "";
        for (size_t i = 0; i < len && i < 40; i++)
            snprintf(hex + 3 * i, 4, "%02x ", p[i]);
        th_fail(__FILE__, __LINE__, "decode of %zu bytes [%s...]: got %s, want %s", len, hex,
                mpx_errname(rc), mpx_errname(want));
    }
    if (rc == 0) {
        check_canonical(p, len, &m);
        mpx_inbox_msg_done(&m);
        ASSERT(all_zero(&m, sizeof m));
    } else {
        ASSERT(all_zero(&m, sizeof m));
    }
    free(p);
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * Arguments, handles, round trips
 */

TEST(inbox_bad_arguments)
{
    mpx_log_record r = sample(0);
    mpx_inbox *ib = NULL;
    mpx_inbox_msg m[2];
    memset(m, 0, sizeof m);
    size_t got = 99;
    ASSERT_ERR(mpx_inbox_create(NULL), -EINVAL);
    ASSERT_ERR(mpx_inbox_attach(NULL, 0), -EINVAL);
    ASSERT_ERR(mpx_inbox_attach(&ib, -1), -EINVAL);
    ASSERT_ERR(mpx_inbox_attach(&ib, -12345), -EINVAL);
    ASSERT_NULL(ib);
    ASSERT_ERR(mpx_inbox_fd(NULL), -EINVAL);
    ASSERT_ERR(mpx_inbox_send_log(NULL, &r), -EINVAL);
    ASSERT_ERR(mpx_inbox_send_outcome(NULL, 1, 0, "x", 1), -EINVAL);
    ASSERT_ERR(mpx_inbox_send_outcome(NULL, 1, 0, NULL, 0), -EINVAL);
    ASSERT_ERR(mpx_inbox_recv(NULL, m, 1, &got, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_inbox_expect(NULL, 1), -EINVAL);
    ASSERT_ERR(mpx_inbox_complete(NULL, 1), -EINVAL);
    ASSERT_ERR(mpx_inbox_is_complete(NULL, 1), -EINVAL);
    ASSERT_ERR(mpx_inbox_flush(NULL, 1, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_inbox_forget(NULL, 1), -EINVAL);
    ASSERT_ERR(mpx_inbox_decode(NULL, "x", 1), -EINVAL);
    ASSERT_ERR(mpx_inbox_decode(&m[0], NULL, 5), -EINVAL);
    ASSERT_ERR(mpx_inbox_decode(&m[0], NULL, 0), MPX_EBADFRAME); /* an empty message */
    ASSERT(all_zero(m, sizeof m));
    mpx_inbox_destroy(NULL);
    mpx_inbox_msg_done(NULL);

    ASSERT_OK(mpx_inbox_create(&ib));
    ASSERT_NOT_NULL(ib);
    ASSERT_ERR(mpx_inbox_send_log(ib, NULL), -EINVAL);
    ASSERT_ERR(mpx_inbox_send_outcome(ib, 1, 0, NULL, 1), -EINVAL);
    ASSERT_ERR(mpx_inbox_send_outcome(ib, 1, 0, NULL, (size_t)1 << 30), -EINVAL);
    /* Over the payload limit: refused before a byte is read. */
    ASSERT_ERR(mpx_inbox_send_outcome(ib, 1, 0, "x", (size_t)(MPX_INBOX_MAX_PAYLOAD + 1)),
               MPX_ETOOBIG);
    ASSERT_ERR(mpx_inbox_send_outcome(ib, 1, 0, "x", SIZE_MAX), MPX_ETOOBIG);
    /* A log field over its limit: nothing sent. */
    char *big = filled(MPX_LOG_MAX_MESSAGE + 1, 'm');
    r.message = big;
    ASSERT_ERR(mpx_inbox_send_log(ib, &r), MPX_ETOOBIG);
    free(big);
    got = 99;
    ASSERT_ERR(mpx_inbox_recv(ib, NULL, 1, &got, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_inbox_recv(ib, m, 0, &got, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_inbox_recv(ib, m, 1, NULL, MPX_NOWAIT), -EINVAL);
    /* None of the refused calls put anything. */
    mpx_queue *q = raw_queue(ib);
    ASSERT_EQ_UINT(queued(q), 0);
    expect_empty(ib);
    mpx_queue_destroy(q);
    mpx_inbox_destroy(ib);
}

TEST(inbox_create_attach_destroy)
{
    mpx_inbox *ib = NULL, *other = NULL, *third = NULL;
    ASSERT_OK(mpx_inbox_create(&ib));
    int fd = mpx_inbox_fd(ib);
    ASSERT_GE_INT(fd, 0);
    ASSERT_EQ_INT(mpx_inbox_fd(ib), fd); /* the handle's own descriptor, not a new one */

    ASSERT_OK(mpx_inbox_attach(&other, fd));
    ASSERT_NOT_NULL(other);
    ASSERT_GE_INT(mpx_inbox_fd(other), 0);
    ASSERT_NE_INT(mpx_inbox_fd(other), fd); /* a duplicate: fd stays the creator's */

    /* The descriptor is borrowed: closing it after the attach leaves the handle working. */
    int d = dup(fd);
    ASSERT_SYS(d);
    ASSERT_OK(mpx_inbox_attach(&third, d));
    ASSERT_SYS(close(d));

    mpx_log_record r = sample(5);
    ASSERT_OK(mpx_inbox_send_log(other, &r));
    ASSERT_OK(mpx_inbox_send_outcome(third, 42, 3, "ok", 2));
    /* What a handle sent stays after the handle is destroyed. */
    mpx_inbox_destroy(other);
    mpx_inbox_destroy(third);

    mpx_inbox_msg m[4];
    memset(m, 0, sizeof m);
    size_t got = 0;
    ASSERT_OK(mpx_inbox_recv(ib, m, 4, &got, MPX_NOWAIT));
    ASSERT_EQ_UINT(got, 2);
    ASSERT_EQ_INT(m[0].type, MPX_INBOX_LOG);
    assert_same(m[0].record, &r);
    ASSERT_EQ_INT(m[1].type, MPX_INBOX_OUTCOME);
    ASSERT_EQ_UINT(m[1].token, 42);
    mpx_inbox_msg_done(&m[0]);
    mpx_inbox_msg_done(&m[1]);
    expect_empty(ib);

    /* Any queue segment is accepted; a descriptor that is not one is refused. */
    mpx_queue *q = NULL;
    ASSERT_OK(mpx_queue_create(&q, NULL));
    ASSERT_OK(mpx_inbox_attach(&other, mpx_queue_fd(q)));
    ASSERT_OK(mpx_inbox_send_outcome(other, 7, 0, NULL, 0));
    mpx_inbox_destroy(other);
    ASSERT_EQ_UINT(queued(q), 1);
    mpx_queue_destroy(q);
    int fds[2];
    ASSERT_SYS(pipe(fds));
    other = NULL;
    ASSERT_LT_INT(mpx_inbox_attach(&other, fds[0]), 0);
    ASSERT_NULL(other);
    close(fds[0]);
    close(fds[1]);
    mpx_inbox_destroy(ib); /* the harness checks that every descriptor was closed */
}

/* Every field of a record arrives as sent, through the inbox and its batch receive. */
TEST(inbox_log_round_trip)
{
    char *big = filled(MPX_LOG_MAX_MESSAGE, 'm');
    char *field = filled(MPX_LOG_MAX_FIELD, 'f');
    enum { N = 6 };
    mpx_log_record recs[N];
    recs[0] = sample(1);
    recs[1] = (mpx_log_record){0}; /* every string NULL, every number 0 */
    recs[2] = (mpx_log_record){.logger = "", .message = "", .func = "", .file = "",
                               .process_name = "", .thread_name = "", .level = -7,
                               .line = INT32_MIN, .time_ns = INT64_MIN, .pid = INT64_MIN,
                               .thread_id = INT64_MAX};
    recs[3] = sample(2);
    recs[3].message = big; /* every field at its limit: a message of over 16 MiB */
    recs[3].logger = recs[3].func = recs[3].file = field;
    recs[3].process_name = recs[3].thread_name = field;
    recs[4] = sample(3);
    recs[4].message = "h\xc3\xa9llo w\xc3\xb6rld \xf0\x9f\x90\x8d";
    recs[4].level = 12345;
    recs[4].line = INT32_MAX;
    recs[4].time_ns = INT64_MAX;
    recs[5] = sample(4);
    recs[5].message = "a\xff" "b"; /* invalid UTF-8 arrives repaired */
    mpx_inbox *ib = NULL;
    ASSERT_OK(mpx_inbox_create(&ib));
    for (int k = 0; k < N; k++)
        ASSERT_OK(mpx_inbox_send_log(ib, &recs[k]));
    recs[5].message = "a\xef\xbf\xbd" "b";

    mpx_inbox_msg m[N + 2];
    memset(m, 0, sizeof m);
    int k = 0;
    while (k < N) {
        size_t got = 0;
        ASSERT_OK(mpx_inbox_recv(ib, m, N + 2, &got, MPX_NOWAIT));
        ASSERT_GE_INT(got, 1);
        for (size_t i = 0; i < got; i++, k++) {
            ASSERT_EQ_INT(m[i].type, MPX_INBOX_LOG);
            ASSERT_EQ_UINT(m[i].token, 0);
            ASSERT_EQ_UINT(m[i].code, 0);
            ASSERT_NULL(m[i].data);
            ASSERT_EQ_UINT(m[i].len, 0);
            assert_same(m[i].record, &recs[k]);
            mpx_inbox_msg_done(&m[i]);
            ASSERT(all_zero(&m[i], sizeof m[i]));
        }
    }
    ASSERT_EQ_INT(k, N);
    expect_empty(ib);
    mpx_inbox_destroy(ib);
    free(big);
    free(field);
}

/* Outcomes of every size from empty to 8 MiB, with extreme codes and tokens. */
TEST(inbox_outcome_round_trip)
{
    static const size_t sizes[] = {0, 0, 1, 31, 32, 33, 4096, (size_t)256 << 10,
                                   (size_t)8 << 20};
    static const uint32_t codes[] = {0, 1, UINT32_MAX, 0x80000000u, 7, 0xdeadbeefu, 2, 3, 4};
    static const uint64_t tokens[] = {0, 1, UINT64_MAX, 0x0123456789abcdefu, 1u << 31,
                                      UINT64_MAX - 1, 99, 100, 101};
    enum { N = sizeof sizes / sizeof sizes[0] };
    size_t maxlen = sizes[N - 1] + N; /* outcome k starts at pay + k */
    unsigned char *pay = malloc(maxlen);
    ASSERT_NOT_NULL(pay);
    uint64_t s = 12345;
    for (size_t i = 0; i < maxlen; i++)
        pay[i] = (unsigned char)(th_rand(&s) >> 56);
    mpx_inbox *ib = NULL;
    ASSERT_OK(mpx_inbox_create(&ib));
    for (int k = 0; k < N; k++) {
        /* The first empty outcome passes NULL data, the second a pointer with length 0. */
        const void *d = k == 0 ? NULL : pay + k;
        ASSERT_OK(mpx_inbox_send_outcome(ib, tokens[k], codes[k], d, sizes[k]));
    }
    mpx_inbox_msg m[N];
    memset(m, 0, sizeof m);
    int k = 0;
    while (k < N) {
        size_t got = 0;
        ASSERT_OK(mpx_inbox_recv(ib, m, N, &got, MPX_NOWAIT));
        for (size_t i = 0; i < got; i++, k++) {
            ASSERT_EQ_INT(m[i].type, MPX_INBOX_OUTCOME);
            ASSERT_EQ_UINT(m[i].token, tokens[k]);
            ASSERT_EQ_UINT(m[i].code, codes[k]);
            ASSERT_EQ_UINT(m[i].len, sizes[k]);
            ASSERT_NULL(m[i].record);
            if (sizes[k] == 0) {
                ASSERT_NULL(m[i].data); /* NULL when len == 0 */
            } else {
                ASSERT_NOT_NULL(m[i].data);
                ASSERT_MEM_EQ(m[i].data, pay + k, sizes[k]);
            }
            mpx_inbox_msg_done(&m[i]);
            ASSERT(all_zero(&m[i], sizeof m[i]));
        }
    }
    expect_empty(ib);
    mpx_inbox_destroy(ib);
    free(pay);
}

/* The bytes on the wire are the layout of docs/inbox.md, and a record is the log encoding. */
TEST(inbox_layout)
{
    mpx_inbox *ib = NULL;
    ASSERT_OK(mpx_inbox_create(&ib));
    mpx_queue *q = raw_queue(ib);
    ASSERT_OK(mpx_inbox_send_outcome(ib, 0x0102030405060708u, 0xa1b2c3d4u, "abc", 3));
    static const unsigned char want_outcome[35] = {
        'M', 'P', 'X', 'O', 1, 0, 1, 0,                  /* magic, version 1, kind 1 */
        0xd4, 0xc3, 0xb2, 0xa1, 0, 0, 0, 0,              /* code, reserved */
        35, 0, 0, 0, 0, 0, 0, 0,                         /* total */
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,  /* token */
        'a', 'b', 'c'};
    void *buf = NULL;
    size_t len = 0;
    ASSERT_OK(mpx_queue_get(q, &buf, &len, MPX_NOWAIT));
    ASSERT_EQ_UINT(len, sizeof want_outcome);
    ASSERT_MEM_EQ(buf, want_outcome, len);
    ASSERT_EQ_UINT(rd32(buf), MPX_INBOX_MAGIC);
    free(buf);

    /* The GONE marker a flush puts. */
    ASSERT_OK(mpx_inbox_expect(ib, 0xfffefdfcfbfaf9f8u));
    ASSERT_ERR(mpx_inbox_flush(ib, 0xfffefdfcfbfaf9f8u, MPX_NOWAIT), -ETIMEDOUT);
    static const unsigned char want_gone[32] = {
        'M', 'P', 'X', 'O', 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        32, 0, 0, 0, 0, 0, 0, 0, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff};
    ASSERT_OK(mpx_queue_get(q, &buf, &len, MPX_NOWAIT));
    ASSERT_EQ_UINT(len, sizeof want_gone);
    ASSERT_MEM_EQ(buf, want_gone, len);
    free(buf);

    /* An empty outcome is the head alone. */
    ASSERT_OK(mpx_inbox_send_outcome(ib, 5, 6, NULL, 0));
    ASSERT_OK(mpx_queue_get(q, &buf, &len, MPX_NOWAIT));
    unsigned char want[32];
    ASSERT_EQ_UINT(len, outcome_msg(want, 5, 6, NULL, 0));
    ASSERT_MEM_EQ(buf, want, len);
    free(buf);

    /* A record travels exactly as mpx_log_encode encodes it. */
    mpx_log_record r = sample(9);
    ASSERT_OK(mpx_inbox_send_log(ib, &r));
    void *enc = NULL;
    size_t elen = 0;
    ASSERT_OK(mpx_log_encode(&r, &enc, &elen));
    ASSERT_OK(mpx_queue_get(q, &buf, &len, MPX_NOWAIT));
    ASSERT_EQ_UINT(len, elen);
    ASSERT_MEM_EQ(buf, enc, len);
    free(buf);
    free(enc);
    ASSERT_EQ_UINT(queued(q), 0);
    mpx_queue_destroy(q);
    mpx_inbox_destroy(ib);
}

/* ---------------------------------------------------------------------------------------
 * Order and no loss across processes
 */

#define MANY 100000

/* One child sends 100 000 records and then its outcome while the parent receives in
 * batches: every record arrives once, in order, and the outcome last. */
TEST(inbox_order_one_child)
{
    mpx_inbox *ib = NULL;
    ASSERT_OK(mpx_inbox_create(&ib));
    ASSERT_OK(mpx_inbox_expect(ib, 77));
    pid_t pid = th_fork();
    if (pid == 0) {
        for (int i = 0; i < MANY; i++)
            send_record(ib, i, 1);
        ASSERT_OK(mpx_inbox_send_outcome(ib, 77, 0, "done", 4));
        _exit(0);
    }
    mpx_deadline_t dl = mpx_deadline_in(60 * SEC);
    static mpx_inbox_msg m[256];
    int n = 0;
    bool outcome = false;
    size_t batches = 0;
    while (!outcome) {
        size_t got = 0;
        int rc = mpx_inbox_recv(ib, m, 256, &got, dl);
        if (rc == -EINTR)
            continue;
        ASSERT_OK(rc);
        ASSERT_GE_INT(got, 1);
        ASSERT_LE_INT(got, 256);
        batches++;
        for (size_t i = 0; i < got; i++) {
            ASSERT_MSG(!outcome, "a message after the outcome");
            if (m[i].type == MPX_INBOX_OUTCOME) {
                ASSERT_EQ_INT(n, MANY);
                ASSERT_EQ_UINT(m[i].token, 77);
                ASSERT_EQ_UINT(m[i].len, 4);
                ASSERT_MEM_EQ(m[i].data, "done", 4);
                ASSERT_OK(mpx_inbox_complete(ib, 77));
                outcome = true;
            } else {
                check_record(&m[i], n++, 1);
            }
            mpx_inbox_msg_done(&m[i]);
        }
    }
    ASSERT_LT_INT(batches, MANY + 1); /* batching happened at least once */
    th_wait_ok(pid, 30);
    expect_empty(ib);
    ASSERT_EQ_INT(mpx_inbox_is_complete(ib, 77), 1);
    mpx_inbox_destroy(ib);
}

/* With nobody receiving, a child sends 20 000 records and an 8 MiB outcome and exits: a
 * send never waits for the receiver. */
TEST(inbox_sender_never_waits)
{
    enum { N = 20000 };
    size_t big = (size_t)8 << 20;
    mpx_inbox *ib = NULL;
    ASSERT_OK(mpx_inbox_create(&ib));
    pid_t pid = th_fork();
    if (pid == 0) {
        for (int i = 0; i < N; i++)
            send_record(ib, i, 2);
        unsigned char *pay = malloc(big);
        ASSERT_NOT_NULL(pay);
        for (size_t i = 0; i < big; i++)
            pay[i] = (unsigned char)(i * 7 + i / 4096);
        ASSERT_OK(mpx_inbox_send_outcome(ib, 2, 9, pay, big));
        free(pay);
        _exit(0);
    }
    th_wait_ok(pid, 30); /* finished without a single recv */
    mpx_inbox_msg m[64];
    memset(m, 0, sizeof m);
    int n = 0;
    bool outcome = false;
    while (!outcome) {
        size_t got = 0;
        ASSERT_OK(mpx_inbox_recv(ib, m, 64, &got, MPX_NOWAIT));
        for (size_t i = 0; i < got; i++) {
            ASSERT(!outcome);
            if (m[i].type == MPX_INBOX_OUTCOME) {
                ASSERT_EQ_INT(n, N);
                ASSERT_EQ_UINT(m[i].code, 9);
                ASSERT_EQ_UINT(m[i].len, big);
                const unsigned char *d = m[i].data;
                for (size_t j = 0; j < big; j += 4093)
                    ASSERT_EQ_UINT(d[j], (unsigned char)(j * 7 + j / 4096));
                outcome = true;
            } else {
                check_record(&m[i], n++, 2);
            }
            mpx_inbox_msg_done(&m[i]);
        }
    }
    expect_empty(ib);
    mpx_inbox_destroy(ib);
}

#define KIDS 4
#define PER_THREAD 10000

struct kid_sender {
    mpx_inbox *ib;
    int tag;
};

static void *kid_sender_thread(void *arg)
{
    struct kid_sender *s = arg;
    for (int i = 0; i < PER_THREAD; i++)
        send_record(s->ib, i, s->tag);
    return NULL;
}

/* Several children at once, each with its own token and two sending threads; odd children
 * attach by descriptor, even ones use the inherited handle. Each thread's records arrive in
 * order, every message exactly once, and each outcome after all of its child's records. */
TEST(inbox_children_concurrent)
{
    mpx_inbox *ib = NULL;
    ASSERT_OK(mpx_inbox_create(&ib));
    pid_t pid[KIDS];
    for (int k = 0; k < KIDS; k++)
        ASSERT_OK(mpx_inbox_expect(ib, 1000 + k));
    for (int k = 0; k < KIDS; k++) {
        pid[k] = th_fork();
        if (pid[k] == 0) {
            mpx_inbox *mine = ib;
            if (k % 2)
                ASSERT_OK(mpx_inbox_attach(&mine, mpx_inbox_fd(ib)));
            struct kid_sender other = {mine, 2 * k + 1};
            pthread_t t = th_thread_start(kid_sender_thread, &other);
            struct kid_sender self = {mine, 2 * k};
            kid_sender_thread(&self);
            th_thread_join(t);
            uint64_t token = 1000 + (uint64_t)k;
            ASSERT_OK(mpx_inbox_send_outcome(mine, token, (uint32_t)k, &token, sizeof token));
            if (mine != ib)
                mpx_inbox_destroy(mine);
            _exit(0);
        }
    }
    int next[2 * KIDS] = {0};
    bool done[KIDS] = {false};
    int outcomes = 0;
    mpx_deadline_t dl = mpx_deadline_in(60 * SEC);
    static mpx_inbox_msg m[100];
    while (outcomes < KIDS) {
        size_t got = 0;
        int rc = mpx_inbox_recv(ib, m, 100, &got, dl);
        if (rc == -EINTR)
            continue;
        ASSERT_OK(rc);
        for (size_t i = 0; i < got; i++) {
            if (m[i].type == MPX_INBOX_LOG) {
                int tag = (int)m[i].record->pid;
                ASSERT_MSG(tag >= 0 && tag < 2 * KIDS, "tag %d", tag);
                ASSERT_MSG(!done[tag / 2], "record of child %d after its outcome", tag / 2);
                check_record(&m[i], next[tag]++, tag);
            } else {
                ASSERT_EQ_INT(m[i].type, MPX_INBOX_OUTCOME);
                int k = (int)(m[i].token - 1000);
                ASSERT_MSG(k >= 0 && k < KIDS, "token %" PRIu64, m[i].token);
                ASSERT_MSG(!done[k], "second outcome of child %d", k);
                ASSERT_EQ_UINT(m[i].code, k);
                ASSERT_EQ_UINT(m[i].len, sizeof(uint64_t));
                ASSERT_MEM_EQ(m[i].data, &m[i].token, sizeof(uint64_t));
                ASSERT_EQ_INT(next[2 * k], PER_THREAD);
                ASSERT_EQ_INT(next[2 * k + 1], PER_THREAD);
                ASSERT_EQ_INT(mpx_inbox_is_complete(ib, m[i].token), 0);
                ASSERT_OK(mpx_inbox_complete(ib, m[i].token));
                done[k] = true;
                outcomes++;
            }
            mpx_inbox_msg_done(&m[i]);
        }
    }
    for (int k = 0; k < KIDS; k++) {
        th_wait_ok(pid[k], 30);
        ASSERT_EQ_INT(mpx_inbox_is_complete(ib, 1000 + k), 1);
        /* Complete: the flush returns at once and puts nothing. */
        ASSERT_OK(mpx_inbox_flush(ib, 1000 + k, MPX_NOWAIT));
    }
    expect_empty(ib);
    mpx_inbox_destroy(ib);
}

/* ---------------------------------------------------------------------------------------
 * Receiving: batches and deadlines
 */

TEST(inbox_recv_batches)
{
    mpx_inbox *ib = NULL;
    ASSERT_OK(mpx_inbox_create(&ib));
    for (int i = 0; i < 10; i++)
        send_record(ib, i, 4);
    ASSERT_OK(mpx_inbox_send_outcome(ib, 4, 0, NULL, 0));
    mpx_inbox_msg m[20];
    for (size_t i = 0; i < 20; i++)
        m[i] = (mpx_inbox_msg){.type = -1234}; /* slots past *got stay as they were */
    size_t got = 0;
    ASSERT_OK(mpx_inbox_recv(ib, m, 3, &got, MPX_NOWAIT));
    ASSERT_EQ_UINT(got, 3);
    ASSERT_EQ_INT(m[3].type, -1234);
    for (int i = 0; i < 3; i++) {
        check_record(&m[i], i, 4);
        mpx_inbox_msg_done(&m[i]);
    }
    ASSERT_OK(mpx_inbox_recv(ib, m, 1, &got, MPX_FOREVER));
    ASSERT_EQ_UINT(got, 1);
    check_record(&m[0], 3, 4);
    mpx_inbox_msg_done(&m[0]);
    ASSERT_EQ_INT(m[1].type, 0); /* done'd above */
    m[1].type = -1234;
    /* More room than messages: all that are queued, not a wait for more. */
    int64_t t0 = th_now_ns();
    ASSERT_OK(mpx_inbox_recv(ib, m, 20, &got, in_ms(5000)));
    ASSERT_QUICK(t0);
    ASSERT_EQ_UINT(got, 7);
    for (int i = 0; i < 6; i++) {
        check_record(&m[i], 4 + i, 4);
        mpx_inbox_msg_done(&m[i]);
    }
    ASSERT_EQ_INT(m[6].type, MPX_INBOX_OUTCOME);
    mpx_inbox_msg_done(&m[6]);
    ASSERT_EQ_INT(m[7].type, -1234);
    expect_empty(ib);
    mpx_inbox_destroy(ib);
}

TEST(inbox_recv_deadlines)
{
    mpx_inbox *ib = NULL;
    ASSERT_OK(mpx_inbox_create(&ib));
    mpx_inbox_msg m[8];
    memset(m, 0, sizeof m);
    size_t got = 99;
    int64_t t0 = th_now_ns();
    ASSERT_ERR(mpx_inbox_recv(ib, m, 8, &got, MPX_NOWAIT), -EAGAIN);
    ASSERT_EQ_UINT(got, 0);
    ASSERT_QUICK(t0);
    got = 99;
    t0 = th_now_ns();
    ASSERT_ERR(mpx_inbox_recv(ib, m, 8, &got, mpx_now() - 1), -ETIMEDOUT); /* passed */
    ASSERT_EQ_UINT(got, 0);
    ASSERT_QUICK(t0);
    t0 = th_now_ns();
    ASSERT_ERR(mpx_inbox_recv(ib, m, 8, &got, in_ms(100)), -ETIMEDOUT);
    th_assert_elapsed_at(__FILE__, __LINE__, t0, 100 * MS, 2 * SEC);
    ASSERT(all_zero(m, sizeof m));

    /* A waiting receive wakes for the first message and does not wait for more. */
    pid_t pid = th_fork();
    if (pid == 0) {
        th_sleep_ms(100);
        send_record(ib, 0, 5);
        th_sleep_ms(3000); /* more would come only much later */
        send_record(ib, 1, 5);
        _exit(0);
    }
    t0 = th_now_ns();
    int rc;
    while ((rc = mpx_inbox_recv(ib, m, 8, &got, in_ms(10000))) == -EINTR)
        ;
    ASSERT_OK(rc);
    int64_t el = th_now_ns() - t0;
    ASSERT_EQ_UINT(got, 1);
    ASSERT_GE_INT(el, 90 * MS);
    ASSERT_LT_INT(el, 2500 * MS);
    check_record(&m[0], 0, 5);
    mpx_inbox_msg_done(&m[0]);
    th_kill_reap(pid);
    expect_empty(ib);
    mpx_inbox_destroy(ib);
}

/* ---------------------------------------------------------------------------------------
 * Invalid messages in the queue
 */

/* Puts raw bytes into the inbox's queue, as something other than the inbox might. */
static void put_raw(mpx_queue *q, const void *p, size_t n)
{
    ASSERT_OK(mpx_queue_put(q, p, n, MPX_NOWAIT));
}

static void put_record_raw(mpx_queue *q, int i, int tag)
{
    mpx_log_record r = sample(i);
    char msg[64];
    snprintf(msg, sizeof msg, "record %d of %d", i, tag);
    r.pid = tag;
    r.message = msg;
    void *buf = NULL;
    size_t len = 0;
    ASSERT_OK(mpx_log_encode(&r, &buf, &len));
    put_raw(q, buf, len);
    free(buf);
}

TEST(inbox_recv_skips_invalid)
{
    mpx_inbox *ib = NULL;
    ASSERT_OK(mpx_inbox_create(&ib));
    mpx_queue *q = raw_queue(ib);
    unsigned char b[64];
    unsigned char log_end[MPX_LOG_HEAD_SIZE] = {'M', 'P', 'X', 'L', 1, 0, 2, 0,
                                                0,   0,   0,   0,   16, 0, 0, 0};
    mpx_inbox_msg m[16];
    memset(m, 0, sizeof m);
    size_t got = 0;

    /* Valid messages with every kind of invalid one among them: one batch gets the valid
     * ones, in order, and nothing invalid is left behind. */
    put_record_raw(q, 0, 6);
    put_raw(q, "garbage", 7);
    put_raw(q, b, outcome_msg(b, 1, 11, "payload", 7));
    put_raw(q, b, outcome_msg(b, 2, 0, "truncated", 9) - 4); /* total says 4 more */
    put_raw(q, b, mpxo(b, 2, 1, 0, 0, 32, 3, NULL, 0));     /* version 2 */
    put_raw(q, log_end, sizeof log_end);                     /* a log channel's end */
    put_record_raw(q, 1, 6);
    put_raw(q, b, mpxo(b, 1, 2, 0, 0, 36, 4, "body", 4));  /* GONE with a payload */
    put_raw(q, b, mpxo(b, 1, 2, 9, 0, 32, 4, NULL, 0));    /* GONE with a code */
    put_raw(q, b, mpxo(b, 1, 3, 0, 0, 32, 4, NULL, 0));    /* unknown kind */
    put_raw(q, b, mpxo(b, 1, 1, 0, 1, 32, 4, NULL, 0));    /* reserved set */
    put_raw(q, b, mpxo(b, 1, 1, 0, 0, 32, 4, NULL, 0) - 12); /* "MPXO", a short head */
    put_raw(q, NULL, 0);                                   /* an empty message */
    put_raw(q, b, gone_msg(b, 5));
    ASSERT_OK(mpx_inbox_recv(ib, m, 16, &got, MPX_NOWAIT));
    ASSERT_EQ_UINT(got, 4);
    check_record(&m[0], 0, 6);
    ASSERT_EQ_INT(m[1].type, MPX_INBOX_OUTCOME);
    ASSERT_EQ_UINT(m[1].token, 1);
    ASSERT_EQ_UINT(m[1].code, 11);
    ASSERT_EQ_UINT(m[1].len, 7);
    ASSERT_MEM_EQ(m[1].data, "payload", 7);
    check_record(&m[2], 1, 6);
    ASSERT_EQ_INT(m[3].type, MPX_INBOX_GONE);
    ASSERT_EQ_UINT(m[3].token, 5);
    for (int i = 0; i < 4; i++)
        mpx_inbox_msg_done(&m[i]);
    ASSERT(all_zero(&m[4], sizeof m[4])); /* a skipped message leaves its slot free */
    ASSERT_EQ_UINT(queued(q), 0);
    expect_empty(ib);

    /* Only invalid messages: the error of the first, and the next receive goes on. */
    unsigned char trunc[64], v2[32], vmax[32];
    size_t tlen = outcome_msg(trunc, 2, 0, "truncated", 9) - 1;
    mpxo(v2, 2, 1, 0, 0, 32, 3, NULL, 0);
    mpxo(vmax, 0xffff, 2, 0, 0, 32, 3, NULL, 0);
    const struct {
        const void *p;
        size_t len;
        int err;
    } alone[] = {
        {"garbage", 7, MPX_EBADFRAME},  {trunc, tlen, MPX_EBADFRAME},
        {v2, 32, MPX_EVERSION},         {vmax, 32, MPX_EVERSION},
        {log_end, 16, MPX_EBADFRAME},   {NULL, 0, MPX_EBADFRAME},
    };
    for (size_t k = 0; k < sizeof alone / sizeof alone[0]; k++) {
        put_raw(q, alone[k].p, alone[k].len);
        got = 99;
        ASSERT_ERR(mpx_inbox_recv(ib, m, 16, &got, in_ms(5000)), alone[k].err);
        ASSERT_EQ_UINT(got, 0);
        ASSERT(all_zero(m, sizeof m));
        expect_empty(ib);
    }
    /* Two invalid ones in one batch: the first one's error. */
    put_raw(q, b, mpxo(b, 2, 1, 0, 0, 32, 3, NULL, 0));
    put_raw(q, "garbage", 7);
    ASSERT_ERR(mpx_inbox_recv(ib, m, 16, &got, MPX_NOWAIT), MPX_EVERSION);
    expect_empty(ib);
    /* One slot at a time: the error, then the valid message behind it. */
    put_raw(q, "garbage", 7);
    put_record_raw(q, 2, 6);
    put_raw(q, "garbage", 7);
    ASSERT_ERR(mpx_inbox_recv(ib, m, 1, &got, MPX_NOWAIT), MPX_EBADFRAME);
    ASSERT_OK(mpx_inbox_recv(ib, m, 1, &got, MPX_NOWAIT));
    ASSERT_EQ_UINT(got, 1);
    check_record(&m[0], 2, 6);
    mpx_inbox_msg_done(&m[0]);
    ASSERT_ERR(mpx_inbox_recv(ib, m, 1, &got, MPX_NOWAIT), MPX_EBADFRAME);
    expect_empty(ib);

    /* A large invalid message (taken without the queue's lock) is skipped as well, and a
     * large valid outcome behind it arrives. */
    size_t big = (size_t)1 << 20;
    unsigned char *g = malloc(MPX_INBOX_HEAD_SIZE + big);
    ASSERT_NOT_NULL(g);
    memset(g, 'g', MPX_INBOX_HEAD_SIZE + big);
    put_raw(q, g, big);
    mpxo(g, 1, 1, 1, 0, 1, 8, NULL, 0); /* the head alone; a wrong total */
    put_raw(q, g, MPX_INBOX_HEAD_SIZE + big);
    mpxo(g, 1, 1, 1, 0, MPX_INBOX_HEAD_SIZE + big, 8, NULL, 0);
    put_raw(q, g, MPX_INBOX_HEAD_SIZE + big);
    ASSERT_ERR(mpx_inbox_recv(ib, m, 16, &got, MPX_NOWAIT), MPX_EBADFRAME);
    ASSERT_ERR(mpx_inbox_recv(ib, m, 16, &got, MPX_NOWAIT), MPX_EBADFRAME);
    ASSERT_OK(mpx_inbox_recv(ib, m, 16, &got, MPX_NOWAIT));
    ASSERT_EQ_UINT(got, 1);
    ASSERT_EQ_INT(m[0].type, MPX_INBOX_OUTCOME);
    ASSERT_EQ_UINT(m[0].len, big);
    ASSERT_MEM_EQ(m[0].data, g + 32, big);
    mpx_inbox_msg_done(&m[0]);
    free(g);
    expect_empty(ib);

    /* A waiting receive with only an invalid message to find reports it at once. */
    pid_t pid = th_fork();
    if (pid == 0) {
        th_sleep_ms(50);
        put_raw(q, "garbage", 7);
        _exit(0);
    }
    int64_t t0 = th_now_ns();
    ASSERT_ERR(mpx_inbox_recv(ib, m, 16, &got, in_ms(10000)), MPX_EBADFRAME);
    ASSERT_QUICK(t0);
    th_wait_ok(pid, 10);
    mpx_queue_destroy(q);
    mpx_inbox_destroy(ib);
}

/* ---------------------------------------------------------------------------------------
 * The decoder on damaged input
 */

/* The valid messages that the decoder tests damage: outcomes with and without a payload,
 * GONE markers and a record. Returns how many; each buffer is malloc'd. */
static int valid_messages(unsigned char **msgs, size_t *lens)
{
    unsigned char b[128];
    lens[0] = outcome_msg(b, 0x1122334455667788u, 7, "hello, parent", 13);
    msgs[0] = th_exact_copy(b, lens[0]);
    lens[1] = outcome_msg(b, 3, 0, NULL, 0);
    msgs[1] = th_exact_copy(b, lens[1]);
    lens[2] = gone_msg(b, UINT64_MAX);
    msgs[2] = th_exact_copy(b, lens[2]);
    lens[3] = gone_msg(b, 0);
    msgs[3] = th_exact_copy(b, lens[3]);
    mpx_log_record r = sample(3);
    r.message = "x\xc3\xa9y";
    void *enc = NULL;
    ASSERT_OK(mpx_log_encode(&r, &enc, &lens[4]));
    msgs[4] = enc;
    return 5;
}

TEST(inbox_decode_valid)
{
    unsigned char *msgs[8];
    size_t lens[8];
    int n = valid_messages(msgs, lens);
    static const int types[] = {MPX_INBOX_OUTCOME, MPX_INBOX_OUTCOME, MPX_INBOX_GONE,
                                MPX_INBOX_GONE, MPX_INBOX_LOG};
    for (int k = 0; k < n; k++) {
        mpx_inbox_msg m;
        memset(&m, 0, sizeof m);
        ASSERT_OK(decode_exact(msgs[k], lens[k], &m));
        ASSERT_EQ_INT(m.type, types[k]);
        check_canonical(msgs[k], lens[k], &m);
        mpx_inbox_msg_done(&m);
        ASSERT_EQ_INT(decode_and_judge(msgs[k], lens[k]), 0);
    }
    mpx_inbox_msg m;
    memset(&m, 0, sizeof m);
    ASSERT_OK(decode_exact(msgs[0], lens[0], &m));
    ASSERT_EQ_UINT(m.token, 0x1122334455667788u);
    ASSERT_EQ_UINT(m.code, 7);
    ASSERT_EQ_UINT(m.len, 13);
    ASSERT_MEM_EQ(m.data, "hello, parent", 13);
    mpx_inbox_msg_done(&m);
    ASSERT_OK(decode_exact(msgs[2], lens[2], &m));
    ASSERT_EQ_UINT(m.token, UINT64_MAX);
    mpx_inbox_msg_done(&m);
    ASSERT_OK(decode_exact(msgs[4], lens[4], &m));
    ASSERT_EQ_STR(m.record->message, "x\xc3\xa9y");
    mpx_inbox_msg_done(&m);

    /* Specific defects, with the error each must give. */
    unsigned char b[64];
#define BAD(expr, e, what)                                                                   \
    do {                                                                                     \
        size_t l_ = (expr);                                                                  \
        int r_ = decode_exact(b, l_, &m);                                                    \
        ASSERT_MSG(r_ == (e), "%s: got %s, want %s", (what), mpx_errname(r_),                \
                   mpx_errname(e));                                                          \
        ASSERT_MSG(all_zero(&m, sizeof m), "%s: output touched", (what));                    \
        ASSERT_EQ_INT(expected_decode(b, l_), (e));                                          \
    } while (0)
    BAD(mpxo(b, 2, 1, 0, 0, 32, 1, NULL, 0), MPX_EVERSION, "version 2");
    BAD(mpxo(b, 0, 1, 0, 0, 32, 1, NULL, 0), MPX_EVERSION, "version 0");
    BAD(mpxo(b, 2, 9, 0, 1, 99, 1, NULL, 0), MPX_EVERSION, "version before the rest");
    BAD(mpxo(b, 1, 0, 0, 0, 32, 1, NULL, 0), MPX_EBADFRAME, "kind 0");
    BAD(mpxo(b, 1, 3, 0, 0, 32, 1, NULL, 0), MPX_EBADFRAME, "kind 3");
    BAD(mpxo(b, 1, 1, 0, 0x100, 32, 1, NULL, 0), MPX_EBADFRAME, "reserved");
    BAD(mpxo(b, 1, 1, 0, 0, 33, 1, NULL, 0), MPX_EBADFRAME, "total too large");
    BAD(mpxo(b, 1, 1, 0, 0, 31, 1, "xy", 2), MPX_EBADFRAME, "total too small");
    BAD(mpxo(b, 1, 1, 0, 0, (uint64_t)1 << 63, 1, NULL, 0), MPX_EBADFRAME, "total huge");
    BAD(mpxo(b, 1, 2, 1, 0, 32, 1, NULL, 0), MPX_EBADFRAME, "GONE with a code");
    BAD(mpxo(b, 1, 2, 0, 0, 33, 1, "x", 1), MPX_EBADFRAME, "GONE with a payload");
    BAD(mpxo(b, 1, 1, 0, 0, 32, 1, NULL, 0) - 1, MPX_EBADFRAME, "short head");
    BAD(mpxo(b, 2, 1, 0, 0, 32, 1, NULL, 0) - 1, MPX_EBADFRAME, "short head, version 2");
    BAD(4, MPX_EBADFRAME, "the magic alone");
#undef BAD
    /* A log end marker, and a log record of an unknown version. */
    unsigned char log_end[MPX_LOG_HEAD_SIZE] = {'M', 'P', 'X', 'L', 1, 0, 2, 0,
                                                0,   0,   0,   0,   16, 0, 0, 0};
    ASSERT_ERR(decode_exact(log_end, sizeof log_end, &m), MPX_EBADFRAME);
    unsigned char *rec = th_exact_copy(msgs[4], lens[4]);
    rec[4] = 3;
    ASSERT_ERR(mpx_inbox_decode(&m, rec, lens[4]), MPX_EVERSION);
    free(rec);
    ASSERT(all_zero(&m, sizeof m));
    for (int k = 0; k < n; k++)
        free(msgs[k]);
}

/* Every truncation of every valid message is refused, and so is one byte too many. */
TEST(inbox_decode_truncated)
{
    unsigned char *msgs[8];
    size_t lens[8];
    int n = valid_messages(msgs, lens);
    for (int k = 0; k < n; k++) {
        for (size_t len = 0; len < lens[k]; len++) {
            mpx_inbox_msg m;
            memset(&m, 0, sizeof m);
            int rc = decode_exact(msgs[k], len, &m);
            ASSERT_MSG(rc == MPX_EBADFRAME, "message %d cut to %zu bytes: %s", k, len,
                       mpx_errname(rc));
            ASSERT(all_zero(&m, sizeof m));
            ASSERT_EQ_INT(decode_and_judge(msgs[k], len), MPX_EBADFRAME);
        }
        unsigned char *longer = malloc(lens[k] + 1);
        ASSERT_NOT_NULL(longer);
        memcpy(longer, msgs[k], lens[k]);
        longer[lens[k]] = 0;
        mpx_inbox_msg m;
        memset(&m, 0, sizeof m);
        ASSERT_ERR(decode_exact(longer, lens[k] + 1, &m), MPX_EBADFRAME);
        free(longer);
        free(msgs[k]);
    }
    /* A large outcome cut by one byte. */
    size_t big = (size_t)1 << 20;
    unsigned char *g = calloc(1, MPX_INBOX_HEAD_SIZE + big);
    ASSERT_NOT_NULL(g);
    size_t len = MPX_INBOX_HEAD_SIZE + big;
    mpxo(g, 1, 1, 1, 0, len, 1, NULL, 0);
    ASSERT_EQ_INT(decode_and_judge(g, len), 0);
    ASSERT_EQ_INT(decode_and_judge(g, len - 1), MPX_EBADFRAME);
    free(g);
}

/* Every single-byte change, then thousands of random damages (th_mutate), of every valid
 * message: the decoder agrees with expected_decode, accepted results are canonical, and
 * nothing is read out of bounds. */
TEST(inbox_decode_corrupted)
{
    unsigned char *msgs[8];
    size_t lens[8];
    int n = valid_messages(msgs, lens);
    uint64_t seed = th_seed();
    unsigned char *p = malloc(4096);
    ASSERT_NOT_NULL(p);
    size_t accepted = 0, refused = 0, eversion = 0;
    for (int k = 0; k < n; k++) {
        static const unsigned char vals[] = {0x00, 0xff, 0x01, 0x80};
        for (size_t at = 0; at < lens[k]; at++) {
            for (size_t v = 0; v < sizeof vals + 1; v++) {
                memcpy(p, msgs[k], lens[k]);
                unsigned char nv = v < sizeof vals ? vals[v] : (unsigned char)(p[at] ^ 0x01);
                if (nv == p[at])
                    continue;
                p[at] = nv;
                int rc = decode_and_judge(p, lens[k]);
                accepted += rc == 0;
                refused += rc != 0;
                eversion += rc == MPX_EVERSION;
            }
        }
        for (int iter = 0; iter < 20000; iter++) {
            size_t len = lens[k];
            memcpy(p, msgs[k], len);
            th_mutate(p, &len, &seed);
            int rc = decode_and_judge(p, len);
            accepted += rc == 0;
            refused += rc != 0;
        }
    }
    /* The damage found both harmless changes (a token, a code, a payload byte) and every
     * kind of defect. */
    ASSERT_GT_INT(accepted, 0);
    ASSERT_GT_INT(refused, 0);
    ASSERT_GT_INT(eversion, 0);
    free(p);
    for (int k = 0; k < n; k++)
        free(msgs[k]);
}

/* ---------------------------------------------------------------------------------------
 * The completion protocol
 */

TEST(inbox_completion_table)
{
    mpx_inbox *ib = NULL;
    ASSERT_OK(mpx_inbox_create(&ib));
    mpx_queue *q = raw_queue(ib);
    ASSERT_ERR(mpx_inbox_is_complete(ib, 1), -ENOENT);
    ASSERT_ERR(mpx_inbox_forget(ib, 1), -ENOENT);
    ASSERT_ERR(mpx_inbox_flush(ib, 1, MPX_NOWAIT), -ENOENT);
    ASSERT_ERR(mpx_inbox_flush(ib, 1, in_ms(50)), -ENOENT);
    ASSERT_EQ_UINT(queued(q), 0); /* no marker for a token nobody expects */

    ASSERT_OK(mpx_inbox_expect(ib, 1));
    ASSERT_ERR(mpx_inbox_expect(ib, 1), -EEXIST);
    ASSERT_OK(mpx_inbox_expect(ib, 2));
    ASSERT_OK(mpx_inbox_expect(ib, 0));
    ASSERT_OK(mpx_inbox_expect(ib, UINT64_MAX));
    ASSERT_ERR(mpx_inbox_expect(ib, UINT64_MAX), -EEXIST);
    ASSERT_EQ_INT(mpx_inbox_is_complete(ib, 1), 0);
    ASSERT_EQ_INT(mpx_inbox_is_complete(ib, 0), 0);

    ASSERT_OK(mpx_inbox_complete(ib, 1));
    ASSERT_EQ_INT(mpx_inbox_is_complete(ib, 1), 1);
    ASSERT_EQ_INT(mpx_inbox_is_complete(ib, 2), 0); /* the others are untouched */
    ASSERT_OK(mpx_inbox_complete(ib, 1));           /* idempotent */
    ASSERT_EQ_INT(mpx_inbox_is_complete(ib, 1), 1);
    ASSERT_ERR(mpx_inbox_expect(ib, 1), -EEXIST); /* complete is still registered */
    /* An unknown token is ignored, not registered. */
    ASSERT_OK(mpx_inbox_complete(ib, 999));
    ASSERT_ERR(mpx_inbox_is_complete(ib, 999), -ENOENT);

    /* Complete: a flush returns at once and puts nothing. */
    int64_t t0 = th_now_ns();
    ASSERT_OK(mpx_inbox_flush(ib, 1, in_ms(5000)));
    ASSERT_OK(mpx_inbox_flush(ib, 1, MPX_NOWAIT));
    ASSERT_OK(mpx_inbox_flush(ib, 1, MPX_FOREVER));
    ASSERT_QUICK(t0);
    ASSERT_EQ_UINT(queued(q), 0);

    ASSERT_OK(mpx_inbox_forget(ib, 1));
    ASSERT_ERR(mpx_inbox_is_complete(ib, 1), -ENOENT);
    ASSERT_ERR(mpx_inbox_forget(ib, 1), -ENOENT);
    ASSERT_ERR(mpx_inbox_flush(ib, 1, MPX_NOWAIT), -ENOENT);
    ASSERT_OK(mpx_inbox_complete(ib, 1)); /* a late marker for a forgotten child */
    ASSERT_ERR(mpx_inbox_is_complete(ib, 1), -ENOENT);
    /* Registered again, it starts incomplete. */
    ASSERT_OK(mpx_inbox_expect(ib, 1));
    ASSERT_EQ_INT(mpx_inbox_is_complete(ib, 1), 0);
    ASSERT_EQ_INT(mpx_inbox_is_complete(ib, 2), 0);
    ASSERT_EQ_INT(mpx_inbox_is_complete(ib, UINT64_MAX), 0);

    /* A table of a few thousand, with removals in the middle: every other entry keeps its
     * state. */
    enum { N = 3000 };
    for (uint64_t t = 100; t < 100 + N; t++)
        ASSERT_OK(mpx_inbox_expect(ib, t));
    for (uint64_t t = 100; t < 100 + N; t += 2)
        ASSERT_OK(mpx_inbox_complete(ib, t));
    for (uint64_t t = 100; t < 100 + N; t += 3)
        ASSERT_OK(mpx_inbox_forget(ib, t));
    for (uint64_t t = 100; t < 100 + N; t++) {
        int want = (t - 100) % 3 == 0 ? -ENOENT : (t - 100) % 2 == 0;
        ASSERT_MSG(mpx_inbox_is_complete(ib, t) == want, "token %" PRIu64 ": %d, want %d", t,
                   mpx_inbox_is_complete(ib, t), want);
    }
    ASSERT_EQ_UINT(queued(q), 0); /* the table lives in this process only */
    mpx_queue_destroy(q);
    mpx_inbox_destroy(ib); /* with entries left: LeakSanitizer checks the table is freed */
}

/* The parent's receiver thread: takes the stream of one child (records tagged `tag`) until
 * its GONE marker or outcome, completing the token there, and checks that nothing comes
 * after it and that every record decodes, in order. */
struct rx {
    mpx_inbox *ib;
    uint64_t token;
    int tag;
    int delay_ms;      /* sleep this long before receiving */
    bool padded;       /* records may be padded (check_padded_record) */
    int64_t logs;      /* records received */
    int64_t at_gone;   /* records received before the marker, or -1 */
    bool outcome;      /* an outcome arrived (and was completed) */
};

static void *receiver(void *arg)
{
    struct rx *rx = arg;
    th_sleep_ms(rx->delay_ms);
    mpx_deadline_t dl = mpx_deadline_in(20 * SEC);
    mpx_inbox_msg m[64];
    bool end = false;
    while (!end) {
        size_t got = 0;
        int rc = mpx_inbox_recv(rx->ib, m, 64, &got, dl);
        if (rc == -EINTR)
            continue;
        ASSERT_OK(rc); /* never MPX_EBADFRAME: no partial message */
        for (size_t i = 0; i < got; i++) {
            ASSERT_MSG(!end, "a message after the end of the stream");
            switch (m[i].type) {
            case MPX_INBOX_LOG:
                if (rx->padded)
                    check_padded_record(&m[i], (int)rx->logs++, rx->tag);
                else
                    check_record(&m[i], (int)rx->logs++, rx->tag);
                break;
            case MPX_INBOX_OUTCOME:
                ASSERT_EQ_UINT(m[i].token, rx->token);
                rx->outcome = true;
                ASSERT_OK(mpx_inbox_complete(rx->ib, m[i].token));
                end = true;
                break;
            case MPX_INBOX_GONE:
                ASSERT_EQ_UINT(m[i].token, rx->token);
                rx->at_gone = rx->logs;
                ASSERT_OK(mpx_inbox_complete(rx->ib, m[i].token));
                end = true;
                break;
            default:
                ASSERT_MSG(0, "message type %d", m[i].type);
            }
            mpx_inbox_msg_done(&m[i]);
        }
    }
    return NULL;
}

/* A child sends records until SIGKILLed, without an outcome. The flush puts a GONE marker;
 * the receiver thread gets it after every record the child committed and completes the
 * token, and the flush returns 0. */
TEST(inbox_flush_killed_child)
{
    mpx_inbox *ib = NULL;
    ASSERT_OK(mpx_inbox_create(&ib));
    ASSERT_OK(mpx_inbox_expect(ib, 31));
    _Atomic int64_t *committed = th_shared_alloc(4096);
    pid_t pid = th_fork();
    if (pid == 0) {
        for (int i = 0;; i++) {
            send_record(ib, i, 31);
            *committed = i + 1;
        }
    }
    struct rx rx = {.ib = ib, .token = 31, .tag = 31, .at_gone = -1};
    pthread_t t = th_thread_start(receiver, &rx); /* receives while the child sends */
    TH_WAIT_FOR(*committed >= 3000, 10);
    th_kill_reap(pid);
    int64_t at_kill = *committed;
    ASSERT_EQ_INT(mpx_inbox_is_complete(ib, 31), 0);
    ASSERT_OK(mpx_inbox_flush(ib, 31, in_ms(15000)));
    ASSERT_EQ_INT(mpx_inbox_is_complete(ib, 31), 1); /* the flush returned on completion */
    th_thread_join(t);
    ASSERT(!rx.outcome);
    ASSERT_GE_INT(rx.at_gone, at_kill); /* every committed record came before the marker */
    ASSERT_LE_INT(rx.at_gone, at_kill + 1); /* plus, maybe, the send the kill interrupted */
    ASSERT_EQ_INT(rx.logs, rx.at_gone);
    expect_empty(ib);
    /* Complete now: another flush returns at once without a second marker. */
    ASSERT_OK(mpx_inbox_flush(ib, 31, MPX_NOWAIT));
    expect_empty(ib);
    munmap((void *)committed, 4096);
    mpx_inbox_destroy(ib);
}

/* Children killed at random instants while sending records of every size, some large
 * enough to be copied outside the queue's lock: every message received decodes, the
 * records are the committed ones in order, and the marker comes last. */
TEST(inbox_killed_mid_send)
{
    mpx_inbox *ib = NULL;
    ASSERT_OK(mpx_inbox_create(&ib));
    _Atomic int64_t *committed = th_shared_alloc(4096);
    uint64_t seed = th_seed();
    char *text = filled(400 << 10, 't');
    for (int round = 0; round < 16; round++) {
        uint64_t token = 500 + (uint64_t)round;
        ASSERT_OK(mpx_inbox_expect(ib, token));
        *committed = 0;
        pid_t pid = th_fork();
        if (pid == 0) {
            uint64_t s = seed + (uint64_t)round;
            for (int i = 0;; i++) {
                mpx_log_record r = sample(i);
                char head[64];
                int hl = snprintf(head, sizeof head, "record %d of %d", i, round);
                size_t extra = th_rand(&s) % 8 == 0 ? (size_t)(th_rand(&s) % (400 << 10)) : 0;
                char *msg = malloc((size_t)hl + extra + 1);
                ASSERT_NOT_NULL(msg);
                memcpy(msg, head, (size_t)hl);
                memcpy(msg + hl, text, extra);
                msg[hl + extra] = 0;
                r.pid = round;
                r.message = msg;
                ASSERT_OK(mpx_inbox_send_log(ib, &r));
                free(msg);
                *committed = i + 1;
            }
        }
        int64_t wait_for = 20 + (int64_t)(th_rand(&seed) % 200);
        TH_WAIT_FOR(*committed >= wait_for, 10);
        th_sleep_ms((double)(th_rand(&seed) % 3000) / 1000.0);
        th_kill_reap(pid);
        int64_t at_kill = *committed;
        struct rx rx = {.ib = ib, .token = token, .tag = round, .padded = true, .at_gone = -1};
        pthread_t t = th_thread_start(receiver, &rx);
        ASSERT_OK(mpx_inbox_flush(ib, token, in_ms(15000)));
        th_thread_join(t);
        ASSERT_GE_INT(rx.at_gone, at_kill);
        ASSERT_LE_INT(rx.at_gone, at_kill + 1);
        expect_empty(ib);
        ASSERT_OK(mpx_inbox_forget(ib, token));
    }
    free(text);
    munmap((void *)committed, 4096);
    mpx_inbox_destroy(ib);
}

/* A child killed at a named point inside the put of its outcome, after 100 records.
 * Killed halfway through the copy: the outcome is absent, not partial, and the flush's
 * marker ends the stream. Killed right after the commit: the outcome is there, completes
 * the child, and no marker is needed. */
static void killed_in_outcome(const char *point, size_t paylen, bool outcome_committed)
{
    enum { N = 100 };
    mpx_inbox *ib = NULL;
    ASSERT_OK(mpx_inbox_create(&ib));
    ASSERT_OK(mpx_inbox_expect(ib, 9));
    unsigned char *pay = malloc(paylen);
    ASSERT_NOT_NULL(pay);
    memset(pay, 'p', paylen);
    pid_t pid = th_fork();
    if (pid == 0) {
        ASSERT_OK(mpx_fault_arm(point, N)); /* the N+1-th put: the outcome */
        for (int i = 0; i < N; i++)
            send_record(ib, i, 9);
        mpx_inbox_send_outcome(ib, 9, 0, pay, paylen);
        _exit(0); /* not reached: the fault point kills */
    }
    th_wait_signaled(pid, SIGKILL, 30);
    mpx_inbox_msg m[N + 8];
    memset(m, 0, sizeof m);
    size_t got = 0, total = 0;
    bool outcome = false;
    for (;;) {
        int rc = mpx_inbox_recv(ib, m, N + 8, &got, MPX_NOWAIT);
        if (rc == -EAGAIN)
            break;
        ASSERT_OK(rc); /* no partial message */
        for (size_t i = 0; i < got; i++, total++) {
            if (total < N) {
                check_record(&m[i], (int)total, 9);
            } else {
                ASSERT_EQ_INT(m[i].type, MPX_INBOX_OUTCOME);
                ASSERT_EQ_UINT(m[i].len, paylen);
                ASSERT_MEM_EQ(m[i].data, pay, paylen);
                ASSERT_OK(mpx_inbox_complete(ib, 9));
                outcome = true;
            }
            mpx_inbox_msg_done(&m[i]);
        }
    }
    ASSERT_EQ_INT(outcome, outcome_committed);
    ASSERT_EQ_UINT(total, N + (outcome ? 1 : 0));
    if (outcome) {
        ASSERT_OK(mpx_inbox_flush(ib, 9, MPX_NOWAIT));
    } else {
        ASSERT_ERR(mpx_inbox_flush(ib, 9, MPX_NOWAIT), -ETIMEDOUT); /* puts the marker */
        recv_one(ib, m, MPX_NOWAIT);
        ASSERT_EQ_INT(m[0].type, MPX_INBOX_GONE);
        ASSERT_EQ_UINT(m[0].token, 9);
        ASSERT_OK(mpx_inbox_complete(ib, 9));
        ASSERT_OK(mpx_inbox_flush(ib, 9, MPX_NOWAIT));
    }
    expect_empty(ib);
    free(pay);
    mpx_inbox_destroy(ib);
}

TEST(inbox_killed_in_outcome)
{
    killed_in_outcome("queue.put.copied", 100, false);
    killed_in_outcome("queue.put.copied", (size_t)8 << 20, false); /* copied without the lock */
    killed_in_outcome("queue.put.staged", 100, false);
    killed_in_outcome("queue.put.committed", 100, true);
    killed_in_outcome("queue.put.committed", (size_t)8 << 20, true);
}

/* An outcome already handled: flush returns at once, and no marker goes into the queue. An
 * outcome still queued when the flush comes: the marker goes in behind it, and the late
 * marker completes nothing new. */
TEST(inbox_flush_after_outcome)
{
    mpx_inbox *ib = NULL;
    ASSERT_OK(mpx_inbox_create(&ib));
    mpx_queue *q = raw_queue(ib);
    ASSERT_OK(mpx_inbox_expect(ib, 5));
    pid_t pid = th_fork();
    if (pid == 0) {
        for (int i = 0; i < 3; i++)
            send_record(ib, i, 5);
        ASSERT_OK(mpx_inbox_send_outcome(ib, 5, 0, "r", 1));
        _exit(0);
    }
    th_wait_ok(pid, 10);
    struct rx rx = {.ib = ib, .token = 5, .tag = 5, .at_gone = -1};
    receiver(&rx); /* in this thread: up to the outcome, which it completes */
    ASSERT(rx.outcome);
    ASSERT_EQ_INT(rx.logs, 3);
    int64_t t0 = th_now_ns();
    ASSERT_OK(mpx_inbox_flush(ib, 5, in_ms(10000)));
    ASSERT_QUICK(t0);
    ASSERT_EQ_UINT(queued(q), 0);
    expect_empty(ib);

    /* The outcome not yet received when the child's end is flushed. */
    ASSERT_OK(mpx_inbox_expect(ib, 6));
    ASSERT_OK(mpx_inbox_send_outcome(ib, 6, 1, NULL, 0));
    ASSERT_ERR(mpx_inbox_flush(ib, 6, MPX_NOWAIT), -ETIMEDOUT);
    ASSERT_EQ_UINT(queued(q), 2);
    mpx_inbox_msg m[4];
    memset(m, 0, sizeof m);
    size_t got = 0;
    ASSERT_OK(mpx_inbox_recv(ib, m, 4, &got, MPX_NOWAIT));
    ASSERT_EQ_UINT(got, 2);
    ASSERT_EQ_INT(m[0].type, MPX_INBOX_OUTCOME);
    ASSERT_EQ_UINT(m[0].token, 6);
    ASSERT_OK(mpx_inbox_complete(ib, 6));
    ASSERT_OK(mpx_inbox_flush(ib, 6, MPX_NOWAIT));
    ASSERT_EQ_INT(m[1].type, MPX_INBOX_GONE);
    ASSERT_EQ_UINT(m[1].token, 6);
    ASSERT_OK(mpx_inbox_complete(ib, 6)); /* idempotent */
    ASSERT_OK(mpx_inbox_forget(ib, 6));
    ASSERT_OK(mpx_inbox_complete(ib, 6)); /* and harmless once forgotten */
    mpx_inbox_msg_done(&m[0]);
    mpx_inbox_msg_done(&m[1]);
    expect_empty(ib);
    mpx_queue_destroy(q);
    mpx_inbox_destroy(ib);
}

/* Without a receiver a flush times out; the marker it put stays the only one, however
 * often the flush is repeated. With a receiver that starts late, flush waits for it. */
TEST(inbox_flush_deadlines)
{
    mpx_inbox *ib = NULL;
    ASSERT_OK(mpx_inbox_create(&ib));
    mpx_queue *q = raw_queue(ib);
    ASSERT_OK(mpx_inbox_expect(ib, 12));
    int64_t t0 = th_now_ns();
    ASSERT_ERR(mpx_inbox_flush(ib, 12, in_ms(100)), -ETIMEDOUT);
    th_assert_elapsed_at(__FILE__, __LINE__, t0, 100 * MS, 2 * SEC);
    ASSERT_EQ_UINT(queued(q), 1);
    t0 = th_now_ns();
    ASSERT_ERR(mpx_inbox_flush(ib, 12, in_ms(50)), -ETIMEDOUT);
    th_assert_elapsed_at(__FILE__, __LINE__, t0, 50 * MS, 2 * SEC);
    ASSERT_ERR(mpx_inbox_flush(ib, 12, MPX_NOWAIT), -ETIMEDOUT);
    ASSERT_ERR(mpx_inbox_flush(ib, 12, mpx_now() - 1), -ETIMEDOUT);
    ASSERT_EQ_UINT(queued(q), 1); /* still one marker */
    ASSERT_EQ_INT(mpx_inbox_is_complete(ib, 12), 0);
    mpx_inbox_msg m;
    memset(&m, 0, sizeof m);
    recv_one(ib, &m, MPX_NOWAIT);
    ASSERT_EQ_INT(m.type, MPX_INBOX_GONE);
    ASSERT_EQ_UINT(m.token, 12);
    ASSERT_OK(mpx_inbox_complete(ib, 12));
    ASSERT_OK(mpx_inbox_flush(ib, 12, MPX_NOWAIT));
    ASSERT_EQ_UINT(queued(q), 0);

    /* A receiver that starts 200 ms late: the flush waits for its completion. */
    ASSERT_OK(mpx_inbox_expect(ib, 13));
    struct rx rx = {.ib = ib, .token = 13, .tag = 13, .delay_ms = 200, .at_gone = -1};
    pthread_t t = th_thread_start(receiver, &rx);
    t0 = th_now_ns();
    ASSERT_OK(mpx_inbox_flush(ib, 13, MPX_FOREVER));
    ASSERT_GE_INT(th_now_ns() - t0, 190 * MS);
    th_thread_join(t);
    ASSERT_EQ_INT(rx.at_gone, 0);
    expect_empty(ib);
    mpx_queue_destroy(q);
    mpx_inbox_destroy(ib);
}

struct flusher {
    mpx_inbox *ib;
    uint64_t token;
    atomic_int *go;
    int result;
};

static void *flusher_thread(void *arg)
{
    struct flusher *f = arg;
    while (!atomic_load(f->go))
        ;
    f->result = mpx_inbox_flush(f->ib, f->token, mpx_deadline_in(10 * SEC));
    return NULL;
}

/* Two threads flush the same ended child at the same instant, many times over: each time
 * exactly one marker goes into the queue, and both flushes return 0 once it is handled. */
TEST(inbox_flush_concurrent)
{
    mpx_inbox *ib = NULL;
    ASSERT_OK(mpx_inbox_create(&ib));
    mpx_queue *q = raw_queue(ib);
    for (uint64_t token = 1; token <= 500; token++) {
        ASSERT_OK(mpx_inbox_expect(ib, token));
        atomic_int go = 0;
        struct flusher f[2] = {{ib, token, &go, 1}, {ib, token, &go, 1}};
        pthread_t t[2];
        for (int i = 0; i < 2; i++)
            t[i] = th_thread_start(flusher_thread, &f[i]);
        atomic_store(&go, 1);
        mpx_inbox_msg m;
        memset(&m, 0, sizeof m);
        recv_one(ib, &m, in_ms(10000));
        ASSERT_EQ_INT(m.type, MPX_INBOX_GONE);
        ASSERT_EQ_UINT(m.token, token);
        if (token % 2)
            th_sleep_ms(1); /* sometimes let the second flusher arrive before completion */
        ASSERT_OK(mpx_inbox_complete(ib, token));
        for (int i = 0; i < 2; i++) {
            th_thread_join(t[i]);
            ASSERT_EQ_INT(f[i].result, 0);
        }
        ASSERT_EQ_UINT(queued(q), 0); /* no second marker */
        ASSERT_OK(mpx_inbox_forget(ib, token));
    }
    /* Both waiting with no receiver: both time out, with one marker between them. */
    ASSERT_OK(mpx_inbox_expect(ib, 999));
    atomic_int go = 0;
    struct flusher f[2] = {{ib, 999, &go, 1}, {ib, 999, &go, 1}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        t[i] = th_thread_start(flusher_thread, &f[i]);
    atomic_store(&go, 1);
    ASSERT_ERR(mpx_inbox_flush(ib, 999, in_ms(300)), -ETIMEDOUT);
    TH_WAIT_FOR(queued(q) == 1, 10); /* whichever flusher put it */
    th_sleep_ms(50);
    ASSERT_EQ_UINT(queued(q), 1);
    mpx_inbox_msg m;
    memset(&m, 0, sizeof m);
    recv_one(ib, &m, MPX_NOWAIT);
    ASSERT_EQ_INT(m.type, MPX_INBOX_GONE);
    ASSERT_OK(mpx_inbox_complete(ib, 999));
    for (int i = 0; i < 2; i++) {
        th_thread_join(t[i]);
        ASSERT_EQ_INT(f[i].result, 0);
    }
    ASSERT_EQ_UINT(queued(q), 0);
    mpx_queue_destroy(q);
    mpx_inbox_destroy(ib);
}

/* Regression: forgetting a token wakes a flush waiting for it, which returns -ENOENT at
 * once instead of sleeping until its deadline. */
TEST(inbox_forget_wakes_flush)
{
    mpx_inbox *ib = NULL;
    ASSERT_OK(mpx_inbox_create(&ib));
    ASSERT_OK(mpx_inbox_expect(ib, 5));
    atomic_int go = 1;
    struct flusher f = {ib, 5, &go, 1};
    pthread_t t = th_thread_start(flusher_thread, &f); /* 10 s deadline */
    mpx_queue *q = raw_queue(ib);
    TH_WAIT_FOR(queued(q) == 1, 10); /* its marker is in: it is waiting now */
    int64_t t0 = mpx_now();
    ASSERT_OK(mpx_inbox_forget(ib, 5));
    th_thread_join(t);
    ASSERT_EQ_INT(f.result, -ENOENT);
    ASSERT_LT_INT(mpx_now() - t0, 2 * SEC);
    mpx_queue_destroy(q);
    mpx_inbox_destroy(ib);
}

/* Regression: a deadline in the past, negative ones included, never waits. */
TEST(inbox_flush_past_deadline)
{
    mpx_inbox *ib = NULL;
    ASSERT_OK(mpx_inbox_create(&ib));
    ASSERT_OK(mpx_inbox_expect(ib, 6));
    mpx_deadline_t past[] = {-1, INT64_MIN, 1, mpx_now() - SEC};
    for (size_t i = 0; i < sizeof past / sizeof past[0]; i++) {
        int64_t t0 = mpx_now();
        ASSERT_ERR(mpx_inbox_flush(ib, 6, past[i]), -ETIMEDOUT);
        ASSERT_LT_INT(mpx_now() - t0, SEC);
    }
    mpx_inbox_destroy(ib);
}

/* Regression: a bounded queue is not an inbox (its sends could wait for the receiver). */
TEST(inbox_attach_bounded)
{
    mpx_queue *q = NULL;
    mpx_queue_options opt = {.maxsize = 4};
    ASSERT_OK(mpx_queue_create(&q, &opt));
    mpx_inbox *ib = NULL;
    ASSERT_ERR(mpx_inbox_attach(&ib, mpx_queue_fd(q)), MPX_EBADSEG);
    ASSERT(ib == NULL);
    mpx_queue_destroy(q);
}

struct waiter {
    mpx_inbox *ib;
    uint64_t token;
    int fd;
    int result;
};

static void *waiter_thread(void *arg)
{
    struct waiter *w = arg;
    w->result = mpx_inbox_wait(w->ib, w->token, w->fd, mpx_deadline_in(10 * SEC));
    return NULL;
}

/* mpx_inbox_wait: completion (before or during the wait) gives 1, the other descriptor
 * first gives 0, forget gives -ENOENT, and nothing gives -ETIMEDOUT; it never puts a
 * marker. */
TEST(inbox_wait)
{
    mpx_inbox *ib = NULL;
    ASSERT_OK(mpx_inbox_create(&ib));
    mpx_queue *q = raw_queue(ib);
    ASSERT_ERR(mpx_inbox_wait(NULL, 1, -1, MPX_NOWAIT), -EINVAL);
    ASSERT_ERR(mpx_inbox_wait(ib, 1, -1, MPX_NOWAIT), -ENOENT);
    ASSERT_OK(mpx_inbox_expect(ib, 1));
    ASSERT_ERR(mpx_inbox_wait(ib, 1, -1, in_ms(50)), -ETIMEDOUT);
    ASSERT_ERR(mpx_inbox_wait(ib, 1, -1, -1), -ETIMEDOUT);

    /* Completed while a thread waits. */
    struct waiter w = {ib, 1, -1, 99};
    pthread_t t = th_thread_start(waiter_thread, &w);
    th_sleep_ms(50);
    ASSERT_OK(mpx_inbox_complete(ib, 1));
    th_thread_join(t);
    ASSERT_EQ_INT(w.result, 1);
    ASSERT_EQ_INT(mpx_inbox_wait(ib, 1, -1, MPX_NOWAIT), 1); /* already complete */

    /* The other descriptor first: 0, and the token is still incomplete. */
    ASSERT_OK(mpx_inbox_expect(ib, 2));
    int p[2];
    ASSERT(pipe(p) == 0);
    struct waiter w2 = {ib, 2, p[0], 99};
    t = th_thread_start(waiter_thread, &w2);
    th_sleep_ms(50);
    ASSERT(write(p[1], "x", 1) == 1);
    th_thread_join(t);
    ASSERT_EQ_INT(w2.result, 0);
    ASSERT_EQ_INT(mpx_inbox_is_complete(ib, 2), 0);

    /* Forgotten while waiting: woken at once with -ENOENT. */
    ASSERT_OK(mpx_inbox_expect(ib, 3));
    struct waiter w3 = {ib, 3, -1, 99};
    t = th_thread_start(waiter_thread, &w3);
    th_sleep_ms(50);
    int64_t t0 = mpx_now();
    ASSERT_OK(mpx_inbox_forget(ib, 3));
    th_thread_join(t);
    ASSERT_EQ_INT(w3.result, -ENOENT);
    ASSERT_LT_INT(mpx_now() - t0, 2 * SEC);

    ASSERT_EQ_UINT(queued(q), 0); /* no marker was ever put */
    close(p[0]);
    close(p[1]);
    mpx_queue_destroy(q);
    mpx_inbox_destroy(ib);
}

/* A closed queue: sends and the flush's put fail with MPX_ECLOSED, and a failed put does
 * not count as a marker (the next flush tries again instead of waiting for nothing). */
TEST(inbox_closed_queue)
{
    mpx_inbox *ib = NULL;
    ASSERT_OK(mpx_inbox_create(&ib));
    mpx_queue *q = raw_queue(ib);
    send_record(ib, 0, 1);
    ASSERT_OK(mpx_inbox_expect(ib, 1));
    ASSERT_OK(mpx_queue_close(q));
    mpx_log_record r = sample(1);
    ASSERT_ERR(mpx_inbox_send_log(ib, &r), MPX_ECLOSED);
    ASSERT_ERR(mpx_inbox_send_outcome(ib, 1, 0, "x", 1), MPX_ECLOSED);
    int64_t t0 = th_now_ns();
    ASSERT_ERR(mpx_inbox_flush(ib, 1, in_ms(5000)), MPX_ECLOSED);
    ASSERT_ERR(mpx_inbox_flush(ib, 1, in_ms(5000)), MPX_ECLOSED); /* tried again */
    ASSERT_QUICK(t0);
    ASSERT_EQ_INT(mpx_inbox_is_complete(ib, 1), 0);
    /* What was sent before the close is still delivered; then the queue's end. */
    mpx_inbox_msg m;
    memset(&m, 0, sizeof m);
    recv_one(ib, &m, MPX_NOWAIT);
    check_record(&m, 0, 1);
    mpx_inbox_msg_done(&m);
    size_t got = 99;
    ASSERT_ERR(mpx_inbox_recv(ib, &m, 1, &got, MPX_NOWAIT), MPX_ECLOSED);
    ASSERT_EQ_UINT(got, 0);
    mpx_queue_destroy(q);
    mpx_inbox_destroy(ib);
}

TEST_LIST_START
TEST_ENTRY(inbox_bad_arguments)
TEST_ENTRY(inbox_create_attach_destroy)
TEST_ENTRY(inbox_log_round_trip)
TEST_ENTRY(inbox_outcome_round_trip)
TEST_ENTRY(inbox_layout)
TEST_ENTRY_TIMEOUT(inbox_order_one_child, 120)
TEST_ENTRY_TIMEOUT(inbox_sender_never_waits, 60)
TEST_ENTRY_TIMEOUT(inbox_children_concurrent, 120)
TEST_ENTRY(inbox_recv_batches)
TEST_ENTRY(inbox_recv_deadlines)
TEST_ENTRY(inbox_recv_skips_invalid)
TEST_ENTRY(inbox_decode_valid)
TEST_ENTRY(inbox_decode_truncated)
TEST_ENTRY_TIMEOUT(inbox_decode_corrupted, 60)
TEST_ENTRY(inbox_completion_table)
TEST_ENTRY(inbox_flush_killed_child)
TEST_ENTRY_TIMEOUT(inbox_killed_mid_send, 60)
TEST_ENTRY(inbox_killed_in_outcome)
TEST_ENTRY(inbox_flush_after_outcome)
TEST_ENTRY(inbox_flush_deadlines)
TEST_ENTRY(inbox_flush_concurrent)
TEST_ENTRY(inbox_closed_queue)
TEST_ENTRY(inbox_forget_wakes_flush)
TEST_ENTRY(inbox_flush_past_deadline)
TEST_ENTRY(inbox_attach_bounded)
TEST_ENTRY(inbox_wait)
TEST_LIST_END
HELPER_LIST_START
HELPER_LIST_END
TEST_MAIN()
