/* mpx/log.h - the log channel: log records from a child process to its parent.
 *
 * A channel carries log records from one sender (a child process, any of its threads) to a
 * receiver (the parent), in the sender's order, and ends with an explicit end-of-stream
 * marker, so that the receiver knows when it has handled every record of that sender. It is
 * built on an unbounded mpx_queue (<mpx/queue.h>): one queue message per record, and one
 * distinct message, after the last record, for the end marker. The guarantees are the
 * queue's:
 *
 *   - Order: records arrive in the order their sends returned (for one sending thread, its
 *     program order).
 *   - No loss: a send that returned 0 has committed its record; it stays in the channel
 *     until it is received, even if the sender is killed right after. A sender killed in
 *     the middle of a send leaves no partial record: that record is simply absent.
 *   - Never blocks the sender: the queue is unbounded, so a send never waits for the
 *     receiver, however far behind it is (it may wait briefly for the queue's internal lock
 *     or while the shared segment grows; see mpx_queue_put).
 *   - End of stream: after the marker the receiver gets MPX_ECLOSED; every record the
 *     sender sent before mpx_logchan_end() came before it.
 *
 * A channel has exactly one sending process. A sender that dies without sending the marker
 * is detected by process supervision (<mpx/proc.h>), not here: after the child has exited,
 * the parent drains what is left with MPX_NOWAIT until -EAGAIN (nothing more can arrive),
 * or until MPX_ECLOSED (the child ended its stream).
 *
 * Records travel as byte strings (mpx_log_encode / mpx_log_decode): magic "MPXL", version
 * 1, little-endian, every length explicit, see docs/log-channel.md. Decoding validates
 * everything: a truncated, oversized or corrupt message gives MPX_EBADFRAME, an unknown
 * version MPX_EVERSION, never a crash. As in <mpx/errrec.h>, text is UTF-8 without NUL:
 * the encoder replaces each byte that does not start a valid UTF-8 sequence by U+FFFD (a
 * log line with a replacement character beats a lost one); the decoder rejects invalid
 * UTF-8.
 *
 * Deadlines: absolute CLOCK_MONOTONIC nanoseconds (see <mpx/common.h>). Nothing here is
 * async-signal-safe: sending encodes, which may allocate.
 */
#ifndef MPX_LOG_H
#define MPX_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* "MPXL" as the first four bytes of a message, read as a little-endian uint32. */
#define MPX_LOG_MAGIC 0x4c58504du
/* The version written for a record with `extra` bytes; one without is written as version 1
 * (which has no extra part), so that it stays readable by version-1 decoders. */
#define MPX_LOG_VERSION 2
/* Longest message text, in bytes (after UTF-8 repair). */
#define MPX_LOG_MAX_MESSAGE ((size_t)16 << 20)
/* Longest of every other text field (logger, func, file, process and thread names). */
#define MPX_LOG_MAX_FIELD ((size_t)64 << 10)
/* Size of a record's fixed part and so the smallest record message; the end marker is
 * MPX_LOG_HEAD_SIZE bytes. */
#define MPX_LOG_HEAD_SIZE 16u
#define MPX_LOG_RECORD_HEAD_SIZE 72u
/* Longest `extra` part, in bytes. */
#define MPX_LOG_MAX_EXTRA ((size_t)16 << 20)
/* Largest message: the fixed part, one message, five other fields and the extra part at
 * their limits. */
#define MPX_LOG_MAX_SIZE                                                                     \
    (MPX_LOG_RECORD_HEAD_SIZE + MPX_LOG_MAX_MESSAGE + 5 * MPX_LOG_MAX_FIELD + MPX_LOG_MAX_EXTRA)

/* Python's level numbers; any int is a valid level. */
enum {
    MPX_LOG_NOTSET = 0,
    MPX_LOG_DEBUG = 10,
    MPX_LOG_INFO = 20,
    MPX_LOG_WARNING = 30,
    MPX_LOG_ERROR = 40,
    MPX_LOG_CRITICAL = 50,
};

/* One log record: the fields of Python's logging.LogRecord that cross the boundary.
 *
 * In a record given to mpx_logchan_send or mpx_log_encode the strings are borrowed from the
 * caller and NULL means empty. A record returned by mpx_logchan_recv or mpx_log_decode is
 * one heap block (struct and strings) owned by the caller, freed with mpx_log_record_free;
 * its strings are never NULL, are NUL-terminated UTF-8, and live as long as the record. */
typedef struct mpx_log_record {
    int64_t time_ns;          /* creation time, CLOCK_REALTIME nanoseconds since the epoch */
    int level;                /* MPX_LOG_DEBUG .. MPX_LOG_CRITICAL, or any other int */
    int line;                 /* source line number (Python's lineno) */
    const char *logger;       /* logger name (Python's name) */
    const char *message;      /* the formatted message (record.getMessage()) */
    const char *func;         /* function name (funcName) */
    const char *file;         /* source path (pathname); filename is its last component */
    const char *process_name; /* processName */
    int64_t pid;              /* process */
    int64_t thread_id;        /* thread */
    const char *thread_name;  /* threadName */
    const void *extra;        /* opaque bytes carried along (the Python face: the record's
                                 extra attributes, pickled); NULL when extra_len is 0 */
    size_t extra_len;
} mpx_log_record;

typedef struct mpx_logchan mpx_logchan; /* process-local handle to a log channel */

/* Creates a channel in a fresh unbounded queue segment. Returns 0 with the handle in *out,
 * -EINVAL (out NULL), or the errors of mpx_queue_create. Fork-safe in the usual sense: a
 * child created by fork inherits the handle and may send (or receive) through it, as long
 * as no other thread of the parent was inside mpx_logchan_send or mpx_logchan_end on that
 * handle at the moment of the fork. */
MPX_API int mpx_logchan_create(mpx_logchan **out);

/* Attaches to the channel whose queue segment is open as `fd` (borrowed: the handle keeps a
 * duplicate). Errors: -EINVAL, and those of mpx_queue_attach (MPX_EBADSEG, MPX_EVERSION for
 * a descriptor that is not a valid queue segment); MPX_EBADSEG too for a bounded queue,
 * whose puts could wait for the receiver. Messages that are not log messages are reported
 * by mpx_logchan_recv as MPX_EBADFRAME. */
MPX_API int mpx_logchan_attach(mpx_logchan **out, int fd);

/* The queue segment's descriptor (owned by the handle), e.g. to pass to a spawned child;
 * -EINVAL for NULL. Never blocks. */
MPX_API int mpx_logchan_fd(const mpx_logchan *ch);

/* Closes this process's handle. Sends nothing: a sender must call mpx_logchan_end first if
 * it wants the receiver to see the end of its stream. Records already sent stay in the
 * channel for the receiver. Not for use while another thread is inside a call on the same
 * handle. NULL is accepted. */
MPX_API void mpx_logchan_destroy(mpx_logchan *ch);

/* Encodes `rec` and puts it into the channel. Never waits for the receiver (see the top of
 * this header); waits only for the queue's internal lock or growth, without a deadline,
 * and a signal handler does not interrupt it (logging must not fail because of a signal).
 * Several threads may send on one handle; records keep the order in which their sends
 * returned. Returns 0 (the record is committed), -EINVAL (ch or rec NULL), MPX_ECLOSED
 * (this handle already sent the end marker, or the queue was closed), MPX_ETOOBIG (the
 * message is longer than MPX_LOG_MAX_MESSAGE, or another field than MPX_LOG_MAX_FIELD,
 * after UTF-8 repair; nothing is sent), -ENOMEM / -ENOSPC (the segment could not grow). */
MPX_API int mpx_logchan_send(mpx_logchan *ch, const mpx_log_record *rec);

/* Sends the end-of-stream marker: the sender will send no more records. Idempotent (a
 * second call returns 0 and sends nothing); afterwards mpx_logchan_send on this handle
 * returns MPX_ECLOSED. If another thread is inside a send, waits (yielding the CPU) until
 * that send has finished, so that its record comes before the marker. Returns 0, -EINVAL,
 * MPX_ECLOSED (the queue was closed), -ENOMEM / -ENOSPC (the marker could not be put; the
 * handle still counts as ended, so call again to retry the put). */
MPX_API int mpx_logchan_end(mpx_logchan *ch);

/* Receives the next record: 0 with a new record in *out (free it with
 * mpx_log_record_free). Blocks while the channel is empty until `deadline`.
 * Once the end marker has been received, returns MPX_ECLOSED, at once and on every later
 * call through this handle: every record sent before the marker has been received.
 * Errors: -EINVAL (ch or out NULL), -EAGAIN (empty, MPX_NOWAIT), -ETIMEDOUT, -EINTR (a
 * signal handler ran; call again with the same deadline), MPX_ECLOSED (end of stream, or
 * the queue was closed and is empty), -ENOMEM (the record stays in the channel),
 * MPX_EBADFRAME / MPX_EVERSION (the next message was not a valid log message: it has been
 * consumed and discarded, and the next call goes on with the one after it).
 * Several threads may receive on one handle; each record goes to exactly one of them. */
MPX_API int mpx_logchan_recv(mpx_logchan *ch, mpx_deadline_t deadline, mpx_log_record **out);

/* Frees a record returned by mpx_logchan_recv or mpx_log_decode. NULL is a no-op. */
MPX_API void mpx_log_record_free(mpx_log_record *rec);

/* Encodes `rec` as one record message into a malloc'd buffer: 0 with the buffer in *buf
 * (free it with free()) and its length in *len, -EINVAL (an argument NULL, or extra NULL
 * with extra_len > 0), MPX_ETOOBIG (a field or the extra part over its limit), -ENOMEM.
 * On failure the outputs are unchanged. A record with extra bytes is written as version 2,
 * one without as version 1. The encoding is canonical: decoding and
 * re-encoding gives the same bytes. */
MPX_API int mpx_log_encode(const mpx_log_record *rec, void **buf, size_t *len);

/* Decodes buf[0..len), which must be exactly one message. Returns 0 with a new record in
 * *out (free it with mpx_log_record_free), MPX_ECLOSED if the message is a well-formed end
 * marker (*out unchanged), -EINVAL (out NULL, or buf NULL with len > 0), MPX_EVERSION (a
 * version other than 1 and 2), MPX_EBADFRAME (any other defect: see
 * docs/log-channel.md, "Validation"), -ENOMEM. The whole message is validated before the
 * one allocation, which is never larger than len plus the struct. Never reads outside
 * buf[0..len); on failure *out is unchanged. */
MPX_API int mpx_log_decode(mpx_log_record **out, const void *buf, size_t len);

/* Formats `rec` with a Python logging %-style format string into a malloc'd,
 * NUL-terminated text in *out (free it with free()). Understands "%%" and
 * "%(key)[flags][width][.precision]conversion" with flags among "-0+ #", conversions
 * s, r (same as s), d, i, f, F, e, E, g, G, and the keys
 *
 *   asctime     "2024-01-31 12:34:56,789": the time in local time (the TZ environment
 *               variable as tzset() last read it) with milliseconds, as Python's default
 *   created     time in seconds since the epoch (a float)
 *   msecs       the millisecond part of the time (a float with an integral value)
 *   levelname   DEBUG, INFO, WARNING, ERROR, CRITICAL, NOTSET, else "Level N"
 *   levelno     the level number
 *   name        the logger name
 *   message     the message
 *   funcName, lineno, pathname (the file as given), filename (its last path component),
 *   module (filename without its extension), process, processName, thread, threadName
 *
 * as Python would format them: %d of a float truncates it, %s of a float is Python's repr
 * ("386.0"), widths and precisions of strings count characters, not bytes. A string key
 * with a numeric conversion, an unknown key, a "%" not followed by "%" or "(key)", or a
 * malformed specification gives -EINVAL, as Python would raise. Other errors: -EINVAL (an
 * argument NULL), -ERANGE (the time cannot be represented as a local date), -ENOMEM. *out
 * is unchanged on failure. Not async-signal-safe (localtime_r). */
MPX_API int mpx_log_format(const mpx_log_record *rec, const char *fmt, char **out);

/* The level name Python would use for `level`: "DEBUG", ..., "CRITICAL", "NOTSET", or
 * "Level N" written into buf[0..len) (which must hold 18 bytes). Returns buf or the static
 * name; never NULL. */
MPX_API const char *mpx_log_level_name(int level, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* MPX_LOG_H */
