/* Tests of the log channel (<mpx/log.h>): the record encoding and its strict decoder, the
 * channel's order, no-loss and never-block guarantees across fork (including a sender
 * SIGKILLed mid-stream), the end-of-stream marker, and the %-style formatter. Encodings
 * under test are copied into buffers of exactly their length, so that an out-of-bounds read
 * shows up under ASan. */
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "log_records.h"
#include "mpx/error.h"
#include "mpx/log.h"
#include "mpx/queue.h"

/* ---- helpers ---- */

/* Decodes from an exact-size copy. */
static int decode_exact(const void *buf, size_t len, mpx_log_record **out)
{
    unsigned char *p = th_exact_copy(buf, len);
    int r = mpx_log_decode(out, p, len);
    free(p);
    return r;
}

/* ---- encoding ---- */

TEST(log_round_trip)
{
    char *big = filled(MPX_LOG_MAX_MESSAGE, 'm');
    char *field = filled(MPX_LOG_MAX_FIELD, 'f');
    mpx_log_record recs[5];
    recs[0] = sample(1);
    recs[1] = (mpx_log_record){0}; /* every string NULL, every number 0 */
    recs[2] = (mpx_log_record){.logger = "", .message = "", .func = "", .file = "",
                               .process_name = "", .thread_name = "", .level = -7,
                               .line = -1, .time_ns = -1, .pid = INT64_MIN,
                               .thread_id = INT64_MAX};
    recs[3] = sample(2);
    recs[3].message = big;
    recs[3].logger = recs[3].func = recs[3].file = field;
    recs[3].process_name = recs[3].thread_name = field;
    recs[4] = sample(3);
    recs[4].message = "h\xc3\xa9llo w\xc3\xb6rld \xf0\x9f\x90\x8d"; /* valid UTF-8 kept */
    recs[4].level = 12345;
    for (int k = 0; k < 5; k++) {
        void *buf = NULL;
        size_t len = 0;
        ASSERT_OK(mpx_log_encode(&recs[k], &buf, &len));
        mpx_log_record *got = NULL;
        ASSERT_OK(decode_exact(buf, len, &got));
        assert_same(got, &recs[k]);
        /* Canonical: re-encoding gives the same bytes. */
        void *again = NULL;
        size_t alen = 0;
        ASSERT_OK(mpx_log_encode(got, &again, &alen));
        ASSERT_EQ_UINT(alen, len);
        ASSERT_MEM_EQ(again, buf, len);
        free(again);
        mpx_log_record_free(got);
        free(buf);
    }

    /* Through a channel, in one process. */
    mpx_logchan *ch = NULL;
    ASSERT_OK(mpx_logchan_create(&ch));
    for (int k = 0; k < 5; k++)
        ASSERT_OK(mpx_logchan_send(ch, &recs[k]));
    ASSERT_OK(mpx_logchan_end(ch));
    for (int k = 0; k < 5; k++) {
        mpx_log_record *got = NULL;
        ASSERT_OK(mpx_logchan_recv(ch, MPX_NOWAIT, &got));
        assert_same(got, &recs[k]);
        mpx_log_record_free(got);
    }
    mpx_log_record *none = NULL;
    ASSERT_ERR(mpx_logchan_recv(ch, MPX_NOWAIT, &none), MPX_ECLOSED);
    ASSERT_NULL(none);
    mpx_logchan_destroy(ch);
    free(big);
    free(field);
}

TEST(log_layout)
{
    mpx_log_record r = sample(0);
    r.logger = "ab";
    r.message = "xyz";
    r.func = r.file = r.process_name = r.thread_name = NULL;
    r.level = -2;
    void *buf = NULL;
    size_t len = 0;
    ASSERT_OK(mpx_log_encode(&r, &buf, &len));
    const unsigned char *p = buf;
    ASSERT_EQ_UINT(len, MPX_LOG_RECORD_HEAD_SIZE + 5);
    ASSERT_MEM_EQ(p, "MPXL", 4);
    ASSERT_EQ_UINT(p[4] | p[5] << 8, 1); /* no extra part: written as version 1 */
    ASSERT_EQ_UINT(p[6] | p[7] << 8, 1); /* kind: record */
    ASSERT_EQ_UINT(p[12], len);
    ASSERT_EQ_UINT(p[40], 0xfe); /* level -2, little-endian two's complement */
    ASSERT_EQ_UINT(p[43], 0xff);
    ASSERT_EQ_UINT(p[48], 2);  /* logger length */
    ASSERT_EQ_UINT(p[52], 3);  /* message length */
    ASSERT_MEM_EQ(p + 72, "abxyz", 5);
    free(buf);
}

TEST(log_invalid_utf8_replaced)
{
    mpx_log_record r = sample(0);
    r.message = "a\xff" "b\xc3";
    r.logger = "\x80";
    void *buf = NULL;
    size_t len = 0;
    ASSERT_OK(mpx_log_encode(&r, &buf, &len));
    mpx_log_record *got = NULL;
    ASSERT_OK(decode_exact(buf, len, &got));
    ASSERT_EQ_STR(got->message, "a\xef\xbf\xbd" "b\xef\xbf\xbd");
    ASSERT_EQ_STR(got->logger, "\xef\xbf\xbd");
    mpx_log_record_free(got);
    free(buf);
}

TEST(log_too_big)
{
    char *big = filled(MPX_LOG_MAX_MESSAGE + 1, 'm');
    char *field = filled(MPX_LOG_MAX_FIELD + 1, 'f');
    mpx_log_record r = sample(0);
    void *buf = NULL;
    size_t len = 0;
    r.message = big;
    ASSERT_ERR(mpx_log_encode(&r, &buf, &len), MPX_ETOOBIG);
    r.message = "ok";
    r.thread_name = field;
    ASSERT_ERR(mpx_log_encode(&r, &buf, &len), MPX_ETOOBIG);
    /* A field that grows past the limit through UTF-8 repair is refused too. */
    char *bad = filled(MPX_LOG_MAX_FIELD / 2, '\xff');
    r.thread_name = bad;
    ASSERT_ERR(mpx_log_encode(&r, &buf, &len), MPX_ETOOBIG);
    ASSERT_NULL(buf);
    mpx_logchan *ch = NULL;
    ASSERT_OK(mpx_logchan_create(&ch));
    ASSERT_ERR(mpx_logchan_send(ch, &r), MPX_ETOOBIG);
    mpx_log_record *got = NULL;
    ASSERT_ERR(mpx_logchan_recv(ch, MPX_NOWAIT, &got), -EAGAIN);
    mpx_logchan_destroy(ch);
    free(big);
    free(field);
    free(bad);
}

TEST(log_end_marker)
{
    mpx_logchan *ch = NULL;
    ASSERT_OK(mpx_logchan_create(&ch));
    mpx_log_record r = sample(7);
    ASSERT_OK(mpx_logchan_send(ch, &r));
    ASSERT_OK(mpx_logchan_end(ch));
    ASSERT_OK(mpx_logchan_end(ch)); /* idempotent: no second marker */
    ASSERT_ERR(mpx_logchan_send(ch, &r), MPX_ECLOSED);
    mpx_log_record *got = NULL;
    ASSERT_OK(mpx_logchan_recv(ch, MPX_NOWAIT, &got));
    ASSERT_EQ_INT(got->line, 7);
    mpx_log_record_free(got);
    got = NULL;
    ASSERT_ERR(mpx_logchan_recv(ch, MPX_NOWAIT, &got), MPX_ECLOSED);
    ASSERT_ERR(mpx_logchan_recv(ch, MPX_FOREVER, &got), MPX_ECLOSED); /* sticky, no wait */
    ASSERT_NULL(got);

    /* The marker on the wire: 16 bytes, kind 2. */
    unsigned char m[MPX_LOG_HEAD_SIZE] = {'M', 'P', 'X', 'L', 1, 0, 2, 0, 0, 0, 0, 0, 16, 0, 0, 0};
    ASSERT_ERR(decode_exact(m, sizeof m, &got), MPX_ECLOSED);
    ASSERT_NULL(got);
    /* Exactly one marker was queued: the queue is empty now. */
    mpx_queue *q = NULL;
    ASSERT_OK(mpx_queue_attach(&q, mpx_logchan_fd(ch)));
    uint64_t n = 99;
    ASSERT_OK(mpx_queue_size(q, &n));
    ASSERT_EQ_UINT(n, 0);
    mpx_queue_destroy(q);
    mpx_logchan_destroy(ch);
}

TEST(log_truncated_at_every_length)
{
    mpx_log_record r = sample(3);
    void *buf = NULL;
    size_t len = 0;
    ASSERT_OK(mpx_log_encode(&r, &buf, &len));
    for (size_t n = 0; n < len; n++) {
        mpx_log_record *got = NULL;
        ASSERT_ERR(decode_exact(buf, n, &got), MPX_EBADFRAME);
        ASSERT_NULL(got);
    }
    /* One byte too many. */
    unsigned char *longer = malloc(len + 1);
    memcpy(longer, buf, len);
    longer[len] = 'x';
    mpx_log_record *got = NULL;
    ASSERT_ERR(decode_exact(longer, len + 1, &got), MPX_EBADFRAME);
    free(longer);
    /* Every truncation of the end marker too. */
    unsigned char m[MPX_LOG_HEAD_SIZE] = {'M', 'P', 'X', 'L', 1, 0, 2, 0, 0, 0, 0, 0, 16, 0, 0, 0};
    for (size_t n = 0; n < sizeof m; n++)
        ASSERT_ERR(decode_exact(m, n, &got), MPX_EBADFRAME);
    free(buf);
}

/* Every single-byte change of a valid encoding is refused or, where it lands in a number
 * field, decodes to a record that re-encodes to exactly the changed bytes. */
TEST(log_corruptions)
{
    mpx_log_record r = sample(5);
    r.message = "x\xc3\xa9y";
    void *buf = NULL;
    size_t len = 0;
    ASSERT_OK(mpx_log_encode(&r, &buf, &len));
    uint64_t seed = th_seed();
    unsigned char *p = malloc(len);
    size_t accepted = 0, refused = 0;
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(p, buf, len);
        size_t at = (size_t)(th_rand(&seed) % len);
        unsigned char v = (unsigned char)th_rand(&seed);
        if (iter < (int)len * 2) { /* first, every byte with two fixed values */
            at = (size_t)iter / 2;
            v = iter % 2 ? 0xff : (unsigned char)(p[at] ^ 0x01);
        }
        if (v == p[at])
            continue;
        p[at] = v;
        mpx_log_record *got = NULL;
        int rc = decode_exact(p, len, &got);
        if (rc == 0) {
            /* Only the number fields (16..47) and text bytes can change harmlessly. */
            void *again = NULL;
            size_t alen = 0;
            ASSERT_OK(mpx_log_encode(got, &again, &alen));
            ASSERT_EQ_UINT(alen, len);
            ASSERT_MEM_EQ(again, p, len);
            free(again);
            mpx_log_record_free(got);
            accepted++;
        } else {
            ASSERT_MSG(rc == MPX_EBADFRAME || (rc == MPX_EVERSION && (at == 4 || at == 5)),
                       "byte %zu = 0x%02x: got %s", at, v, mpx_errname(rc));
            ASSERT_NULL(got);
            refused++;
        }
    }
    ASSERT_GT_INT(accepted, 0);
    ASSERT_GT_INT(refused, 0);
    /* Specific defects. */
    mpx_log_record *got = NULL;
    memcpy(p, buf, len);
    p[4] = 3;
    ASSERT_ERR(decode_exact(p, len, &got), MPX_EVERSION);
    memcpy(p, buf, len);
    p[4] = 2; /* version 2 without an extra part is not canonical */
    ASSERT_ERR(decode_exact(p, len, &got), MPX_EBADFRAME);
    memcpy(p, buf, len);
    p[8] = 1; /* version 1 with an extra length */
    ASSERT_ERR(decode_exact(p, len, &got), MPX_EBADFRAME);
    memcpy(p, buf, len);
    p[6] = 3; /* unknown kind */
    ASSERT_ERR(decode_exact(p, len, &got), MPX_EBADFRAME);
    memcpy(p, buf, len);
    p[6] = 2; /* an end marker with a body */
    ASSERT_ERR(decode_exact(p, len, &got), MPX_EBADFRAME);
    memcpy(p, buf, len);
    p[9] = 1; /* reserved */
    ASSERT_ERR(decode_exact(p, len, &got), MPX_EBADFRAME);
    memcpy(p, buf, len);
    p[len - 1] = 0; /* NUL in the text */
    ASSERT_ERR(decode_exact(p, len, &got), MPX_EBADFRAME);
    memcpy(p, buf, len);
    p[52] = 0xff, p[53] = 0xff, p[54] = 0xff, p[55] = 0x7f; /* message length huge */
    ASSERT_ERR(decode_exact(p, len, &got), MPX_EBADFRAME);
    ASSERT_NULL(got);
    ASSERT_ERR(mpx_log_decode(&got, "MPXL", 4), MPX_EBADFRAME);
    ASSERT_ERR(mpx_log_decode(&got, NULL, 0), MPX_EBADFRAME);
    free(p);
    free(buf);
}

/* A message that is not a log message is consumed and reported, and the channel goes on. */
TEST(log_recv_skips_bad_message)
{
    mpx_logchan *ch = NULL;
    ASSERT_OK(mpx_logchan_create(&ch));
    mpx_queue *q = NULL;
    ASSERT_OK(mpx_queue_attach(&q, mpx_logchan_fd(ch)));
    ASSERT_OK(mpx_queue_put(q, "garbage", 7, MPX_NOWAIT));
    mpx_log_record r = sample(9);
    ASSERT_OK(mpx_logchan_send(ch, &r));
    mpx_log_record *got = NULL;
    ASSERT_ERR(mpx_logchan_recv(ch, MPX_NOWAIT, &got), MPX_EBADFRAME);
    ASSERT_NULL(got);
    ASSERT_OK(mpx_logchan_recv(ch, MPX_NOWAIT, &got));
    ASSERT_EQ_INT(got->line, 9);
    mpx_log_record_free(got);
    ASSERT_ERR(mpx_logchan_recv(ch, mpx_deadline_in(1000000), &got), -ETIMEDOUT);
    mpx_queue_destroy(q);
    mpx_logchan_destroy(ch);
}

/* ---- across processes ---- */

#define MANY 100000

static void send_many(mpx_logchan *ch, int n, int tag)
{
    char msg[64];
    for (int i = 0; i < n; i++) {
        mpx_log_record r = sample(i);
        r.pid = tag;
        snprintf(msg, sizeof msg, "record %d of %d", i, tag);
        r.message = msg;
        ASSERT_OK(mpx_logchan_send(ch, &r));
    }
}

static void check_record(const mpx_log_record *got, int i, int tag)
{
    char msg[64];
    snprintf(msg, sizeof msg, "record %d of %d", i, tag);
    ASSERT_EQ_INT(got->line, i);
    ASSERT_EQ_INT(got->pid, tag);
    ASSERT_EQ_STR(got->message, msg);
}

TEST(log_order_from_forked_child)
{
    mpx_logchan *ch = NULL;
    ASSERT_OK(mpx_logchan_create(&ch));
    pid_t pid = th_fork();
    if (pid == 0) {
        send_many(ch, MANY, 1);
        ASSERT_OK(mpx_logchan_end(ch));
        mpx_logchan_destroy(ch);
        _exit(0);
    }
    mpx_deadline_t dl = mpx_deadline_in(60 * 1000000000LL);
    for (int i = 0; i < MANY; i++) {
        mpx_log_record *got = NULL;
        int rc;
        while ((rc = mpx_logchan_recv(ch, dl, &got)) == -EINTR)
            ;
        ASSERT_OK(rc);
        check_record(got, i, 1);
        mpx_log_record_free(got);
    }
    mpx_log_record *got = NULL;
    ASSERT_ERR(mpx_logchan_recv(ch, dl, &got), MPX_ECLOSED);
    th_wait_ok(pid, 30);
    ASSERT_ERR(mpx_logchan_recv(ch, MPX_NOWAIT, &got), MPX_ECLOSED);
    mpx_logchan_destroy(ch);
}

/* With nobody reading, a child sends 100 000 records and its end marker and exits. */
TEST(log_sender_never_blocks)
{
    mpx_logchan *ch = NULL;
    ASSERT_OK(mpx_logchan_create(&ch));
    pid_t pid = th_fork();
    if (pid == 0) {
        send_many(ch, MANY, 2);
        ASSERT_OK(mpx_logchan_end(ch));
        mpx_logchan_destroy(ch);
        _exit(0);
    }
    th_wait_ok(pid, 60); /* the child finished without a single recv */
    for (int i = 0; i < MANY; i++) {
        mpx_log_record *got = NULL;
        ASSERT_OK(mpx_logchan_recv(ch, MPX_NOWAIT, &got));
        check_record(got, i, 2);
        mpx_log_record_free(got);
    }
    mpx_log_record *got = NULL;
    ASSERT_ERR(mpx_logchan_recv(ch, MPX_NOWAIT, &got), MPX_ECLOSED);
    mpx_logchan_destroy(ch);
}

TEST(log_two_children)
{
    enum { N = 20000 };
    mpx_logchan *ch[2] = {NULL, NULL};
    pid_t pid[2];
    for (int k = 0; k < 2; k++)
        ASSERT_OK(mpx_logchan_create(&ch[k]));
    for (int k = 0; k < 2; k++) {
        pid[k] = th_fork();
        if (pid[k] == 0) {
            send_many(ch[k], N, 10 + k);
            ASSERT_OK(mpx_logchan_end(ch[k]));
            _exit(0);
        }
    }
    int next[2] = {0, 0};
    bool ended[2] = {false, false};
    mpx_deadline_t dl = mpx_deadline_in(60 * 1000000000LL);
    while (!ended[0] || !ended[1]) {
        ASSERT_LT_INT(mpx_now(), dl);
        for (int k = 0; k < 2; k++) {
            if (ended[k])
                continue;
            mpx_log_record *got = NULL;
            int rc = mpx_logchan_recv(ch[k], MPX_NOWAIT, &got);
            if (rc == -EAGAIN)
                continue;
            if (rc == MPX_ECLOSED) {
                ASSERT_EQ_INT(next[k], N);
                ended[k] = true;
                continue;
            }
            ASSERT_OK(rc);
            check_record(got, next[k]++, 10 + k);
            mpx_log_record_free(got);
        }
    }
    for (int k = 0; k < 2; k++) {
        th_wait_ok(pid[k], 30);
        mpx_logchan_destroy(ch[k]);
    }
}

/* A child killed in the middle of its stream: every record whose send returned is there, in
 * order, with no partial record after it and no end marker. */
TEST(log_sender_killed_mid_stream)
{
    mpx_logchan *ch = NULL;
    ASSERT_OK(mpx_logchan_create(&ch));
    _Atomic int64_t *committed = th_shared_alloc(4096);
    pid_t pid = th_fork();
    if (pid == 0) {
        char msg[64];
        for (int i = 0;; i++) {
            mpx_log_record r = sample(i);
            snprintf(msg, sizeof msg, "record %d of %d", i, 3);
            r.pid = 3;
            r.message = msg;
            ASSERT_OK(mpx_logchan_send(ch, &r));
            *committed = i + 1;
        }
    }
    while (*committed < 5000)
        th_sleep_ms(1);
    th_kill_reap(pid);
    int64_t at_kill = *committed;
    int n = 0;
    for (;;) {
        mpx_log_record *got = NULL;
        int rc = mpx_logchan_recv(ch, MPX_NOWAIT, &got);
        if (rc == -EAGAIN)
            break;
        ASSERT_OK(rc); /* never MPX_ECLOSED (no marker) nor MPX_EBADFRAME (no partial) */
        check_record(got, n++, 3);
        mpx_log_record_free(got);
    }
    /* The send in progress at the kill may or may not have committed. */
    ASSERT_GE_INT(n, at_kill);
    ASSERT_LE_INT(n, at_kill + 1);
    munmap((void *)committed, 4096);
    mpx_logchan_destroy(ch);
}

/* A child that attaches by descriptor, as a spawned child would. */
TEST(log_attach)
{
    mpx_logchan *ch = NULL, *other = NULL;
    ASSERT_OK(mpx_logchan_create(&ch));
    ASSERT_OK(mpx_logchan_attach(&other, mpx_logchan_fd(ch)));
    mpx_log_record r = sample(11);
    ASSERT_OK(mpx_logchan_send(other, &r));
    ASSERT_OK(mpx_logchan_end(other));
    mpx_logchan_destroy(other);
    mpx_log_record *got = NULL;
    ASSERT_OK(mpx_logchan_recv(ch, MPX_NOWAIT, &got));
    assert_same(got, &r);
    mpx_log_record_free(got);
    ASSERT_ERR(mpx_logchan_recv(ch, MPX_NOWAIT, &got), MPX_ECLOSED);
    mpx_logchan_destroy(ch);
}

/* ---- format ---- */

static void expect_format(const mpx_log_record *r, const char *fmt, const char *want)
{
    char *out = NULL;
    int rc = mpx_log_format(r, fmt, &out);
    ASSERT_MSG(rc == 0, "format \"%s\": %s", fmt, mpx_errname(rc));
    ASSERT_EQ_STR(out, want);
    free(out);
}

/* Version 2: an opaque extra part after the text fields, carried byte for byte; a record
 * without one is still written as version 1. */
TEST(log_extra)
{
    mpx_log_record r = sample(3);
    static const unsigned char blob[] = {0x80, 0x05, 0x00, 0xff, 'x', '.'};
    r.extra = blob;
    r.extra_len = sizeof blob;
    void *buf = NULL;
    size_t len = 0;
    ASSERT_OK(mpx_log_encode(&r, &buf, &len));
    const unsigned char *p = buf;
    ASSERT_EQ_UINT(p[4] | p[5] << 8, 2);
    ASSERT_EQ_UINT(p[8], sizeof blob);
    ASSERT_MEM_EQ(p + len - sizeof blob, blob, sizeof blob);
    mpx_log_record *got = NULL;
    ASSERT_OK(decode_exact(buf, len, &got));
    assert_same(got, &r);
    ASSERT_EQ_UINT(got->extra_len, sizeof blob);
    ASSERT_MEM_EQ(got->extra, blob, sizeof blob);
    /* Canonical: re-encoding the decoded record gives the same bytes. */
    void *again = NULL;
    size_t len2 = 0;
    ASSERT_OK(mpx_log_encode(got, &again, &len2));
    ASSERT_EQ_UINT(len2, len);
    ASSERT_MEM_EQ(again, buf, len);
    free(again);
    mpx_log_record_free(got);
    /* Every truncation is refused; an extra length past the end too. */
    for (size_t n = 0; n < len; n++)
        ASSERT_LT_INT(decode_exact(buf, n, &got), 0);
    unsigned char *c = th_exact_copy(buf, len);
    c[8] = (unsigned char)(sizeof blob + 200);
    ASSERT_ERR(decode_exact(c, len, &got), MPX_EBADFRAME);
    free(c);
    free(buf);
    /* Limits and arguments. */
    r.extra_len = MPX_LOG_MAX_EXTRA + 1;
    ASSERT_ERR(mpx_log_encode(&r, &buf, &len), MPX_ETOOBIG);
    r.extra = NULL;
    r.extra_len = 1;
    ASSERT_ERR(mpx_log_encode(&r, &buf, &len), -EINVAL);
}

TEST(log_format_exact)
{
    ASSERT_SYS(setenv("TZ", "UTC", 1));
    tzset();
    mpx_log_record r = sample(0);
    r.level = MPX_LOG_ERROR;
    r.logger = "worker.error";
    r.message = "worker error";
    r.line = 8;
    r.pid = 4242;
    r.thread_id = 140123;
    r.time_ns = 1706704496789000000; /* 2024-01-31 12:34:56.789 UTC */
    /* The format of the reference's log.py, and its output line. */
    expect_format(&r,
                  "[%(asctime)s.%(msecs)02d; %(levelname)s; %(name)s; %(funcName)s, "
                  "%(lineno)d] [%(processName)s]  %(message)s",
                  "[2024-01-31 12:34:56,789.789; ERROR; worker.error; worker, 8] "
                  "[SpawnProcess-1]  worker error");
    expect_format(&r,
                  "%(process)d %(threadName)s %(thread)d %(filename)s %(pathname)s "
                  "%(module)s %(levelno)s 100%%",
                  "4242 MainThread 140123 work.py /src/app/work.py work 40 100%");
    expect_format(&r, "%(created)f|%(created)s|%(msecs)s|%(msecs)d|%(created).3f",
                  "1706704496.789000|1706704496.789|789.0|789|1706704496.789");
    expect_format(&r, "%(levelname)-8s|%(levelname)8s|%(lineno)05d|%(name).6s|%(lineno)+d",
                  "ERROR   |   ERROR|00008|worker|+8");
    expect_format(&r, "", "");
    expect_format(&r, "plain", "plain");
    /* Widths count characters, not bytes. */
    r.message = "\xc3\xa9t\xc3\xa9";
    expect_format(&r, "[%(message)5s][%(message).2s]", "[  \xc3\xa9t\xc3\xa9][\xc3\xa9t]");
    /* Level names, as Python's getLevelName. */
    const int levels[] = {10, 20, 30, 40, 50, 0, 15, -3};
    const char *names[] = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "NOTSET",
                           "Level 15", "Level -3"};
    for (int i = 0; i < 8; i++) {
        r.level = levels[i];
        expect_format(&r, "%(levelname)s", names[i]);
    }
    /* Milliseconds are zero-padded, and a time before 1970 floors. */
    r.time_ns = 1706704496007000000;
    expect_format(&r, "%(asctime)s %(msecs)03d", "2024-01-31 12:34:56,007 007");
    r.time_ns = -1000000; /* 1 ms before the epoch */
    expect_format(&r, "%(asctime)s", "1969-12-31 23:59:59,999");
    /* NULL strings format as empty; a file without a directory or extension. */
    mpx_log_record e = {0};
    e.file = "Makefile";
    expect_format(&e, "<%(name)s><%(message)s><%(filename)s><%(module)s><%(processName)s>",
                  "<><><Makefile><Makefile><>");
    /* A local time zone applies. */
    ASSERT_SYS(setenv("TZ", "JST-9", 1));
    tzset();
    r.time_ns = 1706704496789000000;
    expect_format(&r, "%(asctime)s", "2024-01-31 21:34:56,789");
}

TEST(log_format_errors)
{
    mpx_log_record r = sample(0);
    const char *bad[] = {"%(nosuch)s", "%s", "%", "abc %", "%(name", "%(name)",
                         "%(name)q", "%(name)d", "%(message)f", "%(lineno)99999999d",
                         "%(asctime)5.9999999s", "%d"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *out = (char *)"unchanged";
        ASSERT_MSG(mpx_log_format(&r, bad[i], &out) == -EINVAL, "format \"%s\"", bad[i]);
        ASSERT_EQ_STR(out, "unchanged");
    }
}

TEST(log_bad_arguments)
{
    mpx_log_record r = sample(0);
    mpx_log_record *got = NULL;
    char *out = NULL;
    void *buf = NULL;
    size_t len = 0;
    ASSERT_ERR(mpx_logchan_create(NULL), -EINVAL);
    mpx_logchan *ch = NULL;
    ASSERT_ERR(mpx_logchan_attach(&ch, -1), -EINVAL);
    ASSERT_ERR(mpx_logchan_attach(NULL, 0), -EINVAL);
    ASSERT_ERR(mpx_logchan_fd(NULL), -EINVAL);
    ASSERT_ERR(mpx_logchan_send(NULL, &r), -EINVAL);
    ASSERT_ERR(mpx_logchan_end(NULL), -EINVAL);
    ASSERT_ERR(mpx_logchan_recv(NULL, MPX_NOWAIT, &got), -EINVAL);
    ASSERT_OK(mpx_logchan_create(&ch));
    ASSERT_ERR(mpx_logchan_send(ch, NULL), -EINVAL);
    ASSERT_ERR(mpx_logchan_recv(ch, MPX_NOWAIT, NULL), -EINVAL);
    ASSERT_ERR(mpx_logchan_recv(ch, MPX_NOWAIT, &got), -EAGAIN);
    mpx_logchan_destroy(ch);
    mpx_logchan_destroy(NULL);
    ASSERT_ERR(mpx_log_encode(NULL, &buf, &len), -EINVAL);
    ASSERT_ERR(mpx_log_encode(&r, NULL, &len), -EINVAL);
    ASSERT_ERR(mpx_log_encode(&r, &buf, NULL), -EINVAL);
    ASSERT_ERR(mpx_log_decode(NULL, "x", 1), -EINVAL);
    ASSERT_ERR(mpx_log_decode(&got, NULL, 5), -EINVAL);
    ASSERT_ERR(mpx_log_format(NULL, "x", &out), -EINVAL);
    ASSERT_ERR(mpx_log_format(&r, NULL, &out), -EINVAL);
    ASSERT_ERR(mpx_log_format(&r, "x", NULL), -EINVAL);
    mpx_log_record_free(NULL);
    /* A descriptor that is not a queue segment. */
    int fds[2];
    ASSERT_SYS(pipe(fds));
    ASSERT_LT_INT(mpx_logchan_attach(&ch, fds[0]), 0);
    /* A bounded queue is not a channel: its puts could wait for the receiver. */
    mpx_queue *bounded = NULL;
    mpx_queue_options opt = {.maxsize = 2};
    ASSERT_OK(mpx_queue_create(&bounded, &opt));
    ASSERT_ERR(mpx_logchan_attach(&ch, mpx_queue_fd(bounded)), MPX_EBADSEG);
    mpx_queue_destroy(bounded);
    close(fds[0]);
    close(fds[1]);
    char lb[18];
    ASSERT_EQ_STR(mpx_log_level_name(INT32_MIN, lb, sizeof lb), "Level -2147483648");
}

TEST_LIST_START
TEST_ENTRY(log_round_trip)
TEST_ENTRY(log_layout)
TEST_ENTRY(log_invalid_utf8_replaced)
TEST_ENTRY(log_too_big)
TEST_ENTRY(log_end_marker)
TEST_ENTRY(log_truncated_at_every_length)
TEST_ENTRY(log_corruptions)
TEST_ENTRY(log_recv_skips_bad_message)
TEST_ENTRY_TIMEOUT(log_order_from_forked_child, 120)
TEST_ENTRY_TIMEOUT(log_sender_never_blocks, 120)
TEST_ENTRY_TIMEOUT(log_two_children, 120)
TEST_ENTRY(log_sender_killed_mid_stream)
TEST_ENTRY(log_attach)
TEST_ENTRY(log_extra)
TEST_ENTRY(log_format_exact)
TEST_ENTRY(log_format_errors)
TEST_ENTRY(log_bad_arguments)
TEST_LIST_END
HELPER_LIST_START
HELPER_LIST_END
TEST_MAIN()
