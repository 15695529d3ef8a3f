/* Log-record helpers shared by the tests of the log channel and the inbox. */
#ifndef MPX_TEST_LOG_RECORDS_H
#define MPX_TEST_LOG_RECORDS_H

#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "mpx/log.h"

/* Record i of a fixed sample: every field set, time, line and thread varying with i. */
static inline mpx_log_record sample(int i)
{
    mpx_log_record r = {
        .time_ns = 1706704496789000000 + i,
        .level = MPX_LOG_INFO,
        .line = i,
        .logger = "worker.info",
        .message = "worker info",
        .func = "worker",
        .file = "/src/app/work.py",
        .process_name = "SpawnProcess-1",
        .pid = 4242,
        .thread_id = 140000000000 + i,
        .thread_name = "MainThread",
    };
    return r;
}

/* NULL strings are encoded as empty ones. */
static inline const char *nz(const char *s) { return s ? s : ""; }

/* A decoded record has every field of the one sent. */
static inline void assert_same(const mpx_log_record *got, const mpx_log_record *want)
{
    ASSERT_NOT_NULL(got);
    ASSERT_EQ_INT(got->time_ns, want->time_ns);
    ASSERT_EQ_INT(got->level, want->level);
    ASSERT_EQ_INT(got->line, want->line);
    ASSERT_EQ_INT(got->pid, want->pid);
    ASSERT_EQ_INT(got->thread_id, want->thread_id);
    ASSERT_EQ_STR(got->logger, nz(want->logger));
    ASSERT_EQ_STR(got->message, nz(want->message));
    ASSERT_EQ_STR(got->func, nz(want->func));
    ASSERT_EQ_STR(got->file, nz(want->file));
    ASSERT_EQ_STR(got->process_name, nz(want->process_name));
    ASSERT_EQ_STR(got->thread_name, nz(want->thread_name));
}

/* A malloc'd string of n copies of c. */
static inline char *filled(size_t n, char c)
{
    char *s = malloc(n + 1);
    ASSERT_NOT_NULL(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

#endif
