/* The log channel of <mpx/log.h>: log records over an unbounded mpx_queue, their canonical
 * little-endian encoding, its strict decoder, the end-of-stream marker, and a formatter
 * for Python logging's %-style format strings. docs/log-channel.md describes the encoding. */
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mpx/error.h"
#include "mpx/log.h"
#include "mpx/queue.h"
#include "wire/bytes.h"
#include "wire/text.h"
#include "log_internal.h"

#define KIND_RECORD 1u
#define KIND_END 2u
#define NFIELDS 6 /* logger, message, func, file, process_name, thread_name */
#define MESSAGE_FIELD 1
/* Records whose encoding fits here are sent without a heap allocation. */
#define STACK_ENCODE 2048u

/* The high bit of `senders` says the end marker has been requested; the rest counts the
 * sends in progress, so that mpx_logchan_end can wait for them and no record lands after
 * the marker. Atomics rather than a mutex: a process-local mutex held by another thread at
 * fork() would stay locked forever in the child. */
#define ENDED ((uint64_t)1 << 63)

struct mpx_logchan {
    mpx_queue *q;               /* owned */
    _Atomic uint64_t senders;   /* ENDED | sends in progress */
    atomic_bool marker_put;     /* this handle has put (or is putting) the end marker */
    atomic_bool got_end;        /* this handle has received the end marker */
};

/* A caller's string, measured: its bytes, and its size once each byte that does not start
 * a valid sequence is replaced by U+FFFD (3 bytes). */
struct src_text {
    const char *s;
    size_t n;     /* strlen(s) */
    size_t fixed; /* size after repair; == n when s is valid */
};

static void src_measure(struct src_text *t, const char *s)
{
    t->s = s ? s : "";
    t->n = strlen(t->s);
    t->fixed = mpx__utf8_repaired_size((const unsigned char *)t->s, t->n);
}

static void src_copy(unsigned char *d, const struct src_text *t)
{
    if (t->fixed == t->n) {
        if (t->n)
            memcpy(d, t->s, t->n);
        return;
    }
    mpx__utf8_repair_copy(d, (const unsigned char *)t->s, t->n);
}

/* ---- encode ---- */

/* Version 1 has no extra part (offset 8 is reserved, 0); version 2 stores its length at
 * offset 8. A record without extra bytes is written as version 1, so the encoding stays
 * canonical and readable by version-1 decoders. */
static void write_head(unsigned char *p, unsigned kind, uint32_t total, uint32_t extra)
{
    memcpy(p, "MPXL", 4);
    mpx__put16(p + 4, extra ? 2 : 1);
    mpx__put16(p + 6, (uint16_t)kind);
    mpx__put32(p + 8, extra);
    mpx__put32(p + 12, total);
}

/* Measures rec's text fields and the size of its encoding: 0 or MPX_ETOOBIG. */
static int measure(const mpx_log_record *rec, struct src_text t[NFIELDS], size_t *total)
{
    const char *s[NFIELDS] = {rec->logger,       rec->message,    rec->func,
                              rec->file,         rec->process_name, rec->thread_name};
    if (rec->extra_len > MPX_LOG_MAX_EXTRA)
        return MPX_ETOOBIG;
    if (rec->extra_len && !rec->extra)
        return -EINVAL;
    size_t sum = MPX_LOG_RECORD_HEAD_SIZE + rec->extra_len;
    for (int i = 0; i < NFIELDS; i++) {
        src_measure(&t[i], s[i]);
        if (t[i].fixed > (i == MESSAGE_FIELD ? MPX_LOG_MAX_MESSAGE : MPX_LOG_MAX_FIELD))
            return MPX_ETOOBIG;
        sum += t[i].fixed; /* bounded by MPX_LOG_MAX_SIZE: no overflow */
    }
    *total = sum;
    return 0;
}

static void write_record(unsigned char *p, const mpx_log_record *rec,
                         const struct src_text t[NFIELDS], size_t total)
{
    write_head(p, KIND_RECORD, (uint32_t)total, (uint32_t)rec->extra_len);
    mpx__put64(p + 16, (uint64_t)rec->time_ns);
    mpx__put64(p + 24, (uint64_t)rec->pid);
    mpx__put64(p + 32, (uint64_t)rec->thread_id);
    mpx__put32(p + 40, (uint32_t)rec->level);
    mpx__put32(p + 44, (uint32_t)rec->line);
    size_t off = MPX_LOG_RECORD_HEAD_SIZE;
    for (int i = 0; i < NFIELDS; i++) {
        mpx__put32(p + 48 + 4 * i, (uint32_t)t[i].fixed);
        src_copy(p + off, &t[i]);
        off += t[i].fixed;
    }
    if (rec->extra_len)
        memcpy(p + off, rec->extra, rec->extra_len);
}

int mpx_log_encode(const mpx_log_record *rec, void **buf, size_t *len)
{
    if (!rec || !buf || !len)
        return -EINVAL;
    struct src_text t[NFIELDS];
    size_t total;
    int err = measure(rec, t, &total);
    if (err < 0)
        return err;
    unsigned char *p = malloc(total);
    if (!p)
        return -ENOMEM;
    write_record(p, rec, t, total);
    *buf = p;
    *len = total;
    return 0;
}

/* ---- decode ---- */

void mpx_log_record_free(mpx_log_record *rec) { free(rec); }

int mpx_log_decode(mpx_log_record **out, const void *buf, size_t len)
{
    if (!out || (!buf && len > 0))
        return -EINVAL;
    const unsigned char *p = buf;
    if (len < MPX_LOG_HEAD_SIZE || memcmp(p, "MPXL", 4) != 0)
        return MPX_EBADFRAME;
    unsigned version = mpx__get16(p + 4);
    if (version != 1 && version != 2)
        return MPX_EVERSION;
    unsigned kind = mpx__get16(p + 6);
    uint32_t extra = mpx__get32(p + 8); /* version 1: reserved, 0 */
    if (mpx__get32(p + 12) != len || len > MPX_LOG_MAX_SIZE)
        return MPX_EBADFRAME;
    /* Canonical: version 2 exactly when there is an extra part, and none on an end marker. */
    if ((version == 1) != (extra == 0) || extra > MPX_LOG_MAX_EXTRA)
        return MPX_EBADFRAME;
    if (kind == KIND_END)
        return len == MPX_LOG_HEAD_SIZE && extra == 0 ? MPX_ECLOSED : MPX_EBADFRAME;
    if (kind != KIND_RECORD || len < MPX_LOG_RECORD_HEAD_SIZE ||
        extra > len - MPX_LOG_RECORD_HEAD_SIZE)
        return MPX_EBADFRAME;
    size_t text_end = len - extra; /* the six fields end here; the extra part follows */

    /* Validate every length and every text field before the one allocation. */
    size_t lens[NFIELDS], off = MPX_LOG_RECORD_HEAD_SIZE;
    for (int i = 0; i < NFIELDS; i++) {
        uint32_t l = mpx__get32(p + 48 + 4 * i);
        if (l > (i == MESSAGE_FIELD ? MPX_LOG_MAX_MESSAGE : MPX_LOG_MAX_FIELD) ||
            l > text_end - off) /* off <= text_end holds throughout */
            return MPX_EBADFRAME;
        if (!mpx__utf8_valid(p + off, l))
            return MPX_EBADFRAME;
        lens[i] = l;
        off += l;
    }
    if (off != text_end)
        return MPX_EBADFRAME;

    /* One block: the struct, then the six strings with their terminators, then the extra
     * bytes. That is len - MPX_LOG_RECORD_HEAD_SIZE + NFIELDS bytes after the struct, so a
     * declared length never drives an allocation larger than the input. */
    size_t text = len - MPX_LOG_RECORD_HEAD_SIZE + NFIELDS;
    mpx_log_record *r = malloc(sizeof *r + text);
    if (!r)
        return -ENOMEM;
    char *d = (char *)(r + 1);
    const char **dst[NFIELDS] = {&r->logger,       &r->message,    &r->func,
                                 &r->file,         &r->process_name, &r->thread_name};
    off = MPX_LOG_RECORD_HEAD_SIZE;
    for (int i = 0; i < NFIELDS; i++) {
        if (lens[i])
            memcpy(d, p + off, lens[i]);
        d[lens[i]] = '\0';
        *dst[i] = d;
        d += lens[i] + 1;
        off += lens[i];
    }
    r->extra = NULL;
    r->extra_len = extra;
    if (extra) {
        memcpy(d, p + off, extra);
        r->extra = d;
    }
    r->time_ns = (int64_t)mpx__get64(p + 16);
    r->pid = (int64_t)mpx__get64(p + 24);
    r->thread_id = (int64_t)mpx__get64(p + 32);
    r->level = (int)(int32_t)mpx__get32(p + 40);
    r->line = (int)(int32_t)mpx__get32(p + 44);
    *out = r;
    return 0;
}

/* ---- the channel ---- */

static int chan_new(mpx_logchan **out, mpx_queue *q)
{
    mpx_logchan *ch = calloc(1, sizeof *ch);
    if (!ch) {
        mpx_queue_destroy(q);
        return -ENOMEM;
    }
    ch->q = q;
    atomic_init(&ch->senders, 0);
    atomic_init(&ch->marker_put, false);
    atomic_init(&ch->got_end, false);
    *out = ch;
    return 0;
}

int mpx__unbounded_queue_create(mpx_queue **q)
{
    mpx_queue_options opt = {.maxsize = 0}; /* unbounded: a put never waits for the reader */
    return mpx_queue_create(q, &opt);
}

int mpx__unbounded_queue_attach(mpx_queue **q, int fd)
{
    int err = mpx_queue_attach(q, fd);
    if (err < 0)
        return err;
    if (mpx_queue_maxsize(*q) != 0) {
        /* Puts into a bounded queue could wait for the reader: not a channel of ours. */
        mpx_queue_destroy(*q);
        *q = NULL;
        return MPX_EBADSEG;
    }
    return 0;
}

int mpx_logchan_create(mpx_logchan **out)
{
    if (!out)
        return -EINVAL;
    mpx_queue *q = NULL;
    int err = mpx__unbounded_queue_create(&q);
    return err < 0 ? err : chan_new(out, q);
}

int mpx_logchan_attach(mpx_logchan **out, int fd)
{
    if (!out || fd < 0)
        return -EINVAL;
    mpx_queue *q = NULL;
    int err = mpx__unbounded_queue_attach(&q, fd);
    return err < 0 ? err : chan_new(out, q);
}

int mpx_logchan_fd(const mpx_logchan *ch) { return ch ? mpx_queue_fd(ch->q) : -EINVAL; }

void mpx_logchan_destroy(mpx_logchan *ch)
{
    if (!ch)
        return;
    mpx_queue_destroy(ch->q);
    free(ch);
}

/* Puts one message, going on after a signal: a log call should not fail because a signal
 * handler ran while the put waited for the lock. */
static int put_all(mpx_queue *q, const void *msg, size_t len)
{
    int err;
    do
        err = mpx_queue_put(q, msg, len, MPX_FOREVER);
    while (err == -EINTR);
    return err;
}

int mpx__log_put(mpx_queue *q, const mpx_log_record *rec)
{
    struct src_text t[NFIELDS];
    size_t total;
    int err = measure(rec, t, &total);
    if (err < 0)
        return err;
    unsigned char stackbuf[STACK_ENCODE];
    unsigned char *p = total <= sizeof stackbuf ? stackbuf : malloc(total);
    if (!p)
        return -ENOMEM;
    write_record(p, rec, t, total);
    err = put_all(q, p, total);
    if (p != stackbuf)
        free(p);
    return err;
}

int mpx_logchan_send(mpx_logchan *ch, const mpx_log_record *rec)
{
    if (!ch || !rec)
        return -EINVAL;
    if (atomic_load(&ch->senders) & ENDED)
        return MPX_ECLOSED;
    /* Register as a send in progress and re-check under that registration: end() sets
     * ENDED first and then waits for the count to drop, so either this send sees ENDED
     * and backs out, or end() waits for its put. */
    int err;
    if (atomic_fetch_add(&ch->senders, 1) & ENDED)
        err = MPX_ECLOSED;
    else
        err = mpx__log_put(ch->q, rec);
    atomic_fetch_sub(&ch->senders, 1);
    return err;
}

int mpx_logchan_end(mpx_logchan *ch)
{
    if (!ch)
        return -EINVAL;
    atomic_fetch_or(&ch->senders, ENDED);
    /* Sends never wait for the reader, so this wait is short: at most a put in progress. */
    while (atomic_load(&ch->senders) & ~ENDED)
        sched_yield();
    if (atomic_exchange(&ch->marker_put, true))
        return 0;
    unsigned char m[MPX_LOG_HEAD_SIZE];
    write_head(m, KIND_END, MPX_LOG_HEAD_SIZE, 0);
    int err = put_all(ch->q, m, sizeof m);
    if (err < 0)
        atomic_store(&ch->marker_put, false); /* let a later call retry */
    return err;
}

struct recv_ctx {
    mpx_log_record *rec;
    int result; /* mpx_log_decode's result */
};

/* Decodes the message straight out of the queue. A message that fails to decode is
 * consumed all the same (returning its error would leave it at the head of the queue and
 * make every later get fail); only -ENOMEM leaves it there, to be retried. */
static int recv_consume(void *ctx, const void *msg, size_t len)
{
    struct recv_ctx *c = ctx;
    int r = mpx_log_decode(&c->rec, msg, len);
    if (r == -ENOMEM)
        return r;
    c->result = r;
    return 0;
}

int mpx_logchan_recv(mpx_logchan *ch, mpx_deadline_t deadline, mpx_log_record **out)
{
    if (!ch || !out)
        return -EINVAL;
    if (atomic_load(&ch->got_end))
        return MPX_ECLOSED;
    for (;;) {
        struct recv_ctx c = {NULL, 0};
        int err = mpx_queue_get_with(ch->q, recv_consume, &c, 0, deadline);
        if (err == -ECANCELED) {
            /* A large message's claim was taken back; it is still queued. */
            mpx_log_record_free(c.rec);
            continue;
        }
        if (err < 0)
            return err;
        if (c.result == MPX_ECLOSED)
            atomic_store(&ch->got_end, true);
        if (c.result < 0)
            return c.result;
        *out = c.rec;
        return 0;
    }
}

/* ---- format ---- */

/* Appends n copies of c. */
static void text_fill(struct mpx__text *t, char c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        mpx__text_add(t, &c, 1);
}

const char *mpx_log_level_name(int level, char *buf, size_t len)
{
    switch (level) {
    case MPX_LOG_CRITICAL: return "CRITICAL";
    case MPX_LOG_ERROR: return "ERROR";
    case MPX_LOG_WARNING: return "WARNING";
    case MPX_LOG_INFO: return "INFO";
    case MPX_LOG_DEBUG: return "DEBUG";
    case MPX_LOG_NOTSET: return "NOTSET";
    default:
        if (!buf || len == 0)
            return "Level";
        snprintf(buf, len, "Level %d", level);
        return buf;
    }
}

/* The largest width or precision accepted, so that one field cannot ask for gigabytes. */
#define MAX_WIDTH 1000000

enum vtype { V_STR, V_INT, V_FLOAT };

struct value {
    enum vtype type;
    const char *s; /* V_STR */
    size_t n;
    intmax_t i;    /* V_INT */
    double f;      /* V_FLOAT */
    char buf[64];  /* storage for computed strings */
};

/* floor(a / b) and the matching non-negative remainder, for times before 1970. */
static int64_t floor_div(int64_t a, int64_t b) { return a / b - (a % b < 0); }
static int64_t floor_mod(int64_t a, int64_t b) { return a % b + (a % b < 0 ? b : 0); }

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* Looks up key[0..n) in rec. 0, -EINVAL (unknown key) or -ERANGE (asctime). */
static int lookup(const mpx_log_record *rec, const char *key, size_t n, struct value *v)
{
#define KEY(lit) (n == sizeof(lit) - 1 && memcmp(key, lit, n) == 0)
#define STR(x) (v->type = V_STR, v->s = (x) ? (x) : "", v->n = strlen(v->s), 0)
#define INT(x) (v->type = V_INT, v->i = (intmax_t)(x), 0)
    int64_t msecs = floor_mod(rec->time_ns, 1000000000) / 1000000;
    if (KEY("asctime")) {
        time_t secs = (time_t)floor_div(rec->time_ns, 1000000000);
        struct tm tm;
        if (!localtime_r(&secs, &tm))
            return -ERANGE;
        char date[48];
        if (strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm) == 0)
            return -ERANGE;
        snprintf(v->buf, sizeof v->buf, "%s,%03d", date, (int)msecs);
        return STR(v->buf);
    }
    if (KEY("created")) {
        v->type = V_FLOAT;
        v->f = (double)rec->time_ns / 1e9; /* as Python: time_ns / 1e9 */
        return 0;
    }
    if (KEY("msecs")) {
        v->type = V_FLOAT;
        v->f = (double)msecs;
        return 0;
    }
    if (KEY("levelname"))
        return STR(mpx_log_level_name(rec->level, v->buf, sizeof v->buf));
    if (KEY("levelno"))
        return INT(rec->level);
    if (KEY("name"))
        return STR(rec->logger);
    if (KEY("message"))
        return STR(rec->message);
    if (KEY("funcName"))
        return STR(rec->func);
    if (KEY("lineno"))
        return INT(rec->line);
    if (KEY("pathname"))
        return STR(rec->file);
    if (KEY("filename"))
        return STR(base_name(rec->file ? rec->file : ""));
    if (KEY("module")) {
        /* Python: os.path.splitext(filename)[0]; a leading dot does not start an extension. */
        const char *f = base_name(rec->file ? rec->file : "");
        size_t fl = strlen(f), start = 0;
        while (start < fl && f[start] == '.')
            start++;
        const char *dot = strrchr(f + start, '.');
        v->type = V_STR;
        v->s = f;
        v->n = dot ? (size_t)(dot - f) : fl;
        return 0;
    }
    if (KEY("process"))
        return INT(rec->pid);
    if (KEY("processName"))
        return STR(rec->process_name);
    if (KEY("thread"))
        return INT(rec->thread_id);
    if (KEY("threadName"))
        return STR(rec->thread_name);
    return -EINVAL;
#undef KEY
#undef STR
#undef INT
}

/* Python's repr() of a finite double: the shortest digits that read back as the same
 * value, in fixed notation for decimal exponents -4..15, with ".0" for integral values. */
static void float_repr(double f, char *buf, size_t len)
{
    if (isnan(f) || isinf(f)) {
        snprintf(buf, len, "%s", isnan(f) ? "nan" : f < 0 ? "-inf" : "inf");
        return;
    }
    char e[40];
    int p;
    for (p = 1; p < 17; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, f);
        if (strtod(e, NULL) == f)
            break;
    }
    snprintf(e, sizeof e, "%.*e", p - 1, f);
    int exp = atoi(strchr(e, 'e') + 1);
    if (exp < -4 || exp >= 16) {
        snprintf(buf, len, "%s", e); /* close to Python's "1e+16"; never hit by log times */
        return;
    }
    int decimals = p - 1 - exp;
    if (decimals > 0)
        snprintf(buf, len, "%.*f", decimals, f);
    else
        snprintf(buf, len, "%.0f.0", f);
}

/* The number of UTF-8 characters in s[0..n) (the text is valid or from the caller). */
static size_t char_count(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xc0) != 0x80;
    return c;
}

/* The byte length of the first `chars` characters of s[0..n). */
static size_t char_prefix(const char *s, size_t n, size_t chars)
{
    size_t i = 0, c = 0;
    while (i < n) {
        if (((unsigned char)s[i] & 0xc0) != 0x80) {
            if (c == chars)
                break;
            c++;
        }
        i++;
    }
    return i;
}

struct spec {
    char flags[8];
    int nflags;
    int width, prec; /* -1 when absent */
    char conv;
};

/* Emits one field according to spec. 0 or -EINVAL. */
static int emit(struct mpx__text *t, const struct spec *sp, struct value *v)
{
    char num[128];
    bool left = memchr(sp->flags, '-', (size_t)sp->nflags) != NULL;
    const char *s;
    size_t n;
    if (sp->conv == 's' || sp->conv == 'r') {
        if (v->type == V_INT) {
            snprintf(num, sizeof num, "%jd", v->i);
            s = num;
            n = strlen(num);
        } else if (v->type == V_FLOAT) {
            float_repr(v->f, num, sizeof num);
            s = num;
            n = strlen(num);
        } else {
            s = v->s;
            n = v->n;
        }
        if (sp->prec >= 0)
            n = char_prefix(s, n, (size_t)sp->prec);
        size_t chars = char_count(s, n);
        size_t pad = sp->width > 0 && (size_t)sp->width > chars ? (size_t)sp->width - chars : 0;
        if (!left)
            text_fill(t, ' ', pad);
        mpx__text_add(t, s, n);
        if (left)
            text_fill(t, ' ', pad);
        return 0;
    }
    if (v->type == V_STR)
        return -EINVAL; /* Python: "%d format: a real number is required, not str" */
    /* Numbers are ASCII: let snprintf do flags, width and precision. Python truncates a
     * float for %d and widens an int for %f. */
    char f[32];
    int o = 0;
    f[o++] = '%';
    for (int i = 0; i < sp->nflags; i++)
        f[o++] = sp->flags[i];
    f[o] = '\0';
    char *big = NULL;
    size_t need;
    bool is_int = sp->conv == 'd' || sp->conv == 'i';
    intmax_t iv = 0;
    double fv = 0;
    if (is_int) {
        if (v->type == V_FLOAT) {
            if (isnan(v->f) || isinf(v->f))
                return -EINVAL;
            iv = (intmax_t)trunc(v->f);
        } else {
            iv = v->i;
        }
        snprintf(f + o, sizeof f - (size_t)o, "*.*jd");
    } else {
        fv = v->type == V_FLOAT ? v->f : (double)v->i;
        snprintf(f + o, sizeof f - (size_t)o, "*.*%c", sp->conv);
    }
    /* A precision of -1 is "absent" to printf, as it should be. */
    int prec = sp->prec;
    if (!is_int && prec < 0)
        prec = 6;
    int width = sp->width < 0 ? 0 : sp->width; /* a negative '*' width would mean '-' */
    int len = is_int ? snprintf(NULL, 0, f, width, prec, iv)
                     : snprintf(NULL, 0, f, width, prec, fv);
    if (len < 0)
        return -EINVAL;
    need = (size_t)len + 1;
    char *dst = num;
    if (need > sizeof num) {
        big = malloc(need);
        if (!big) {
            t->failed = true;
            return 0;
        }
        dst = big;
    }
    if (is_int)
        snprintf(dst, need, f, width, prec, iv);
    else
        snprintf(dst, need, f, width, prec, fv);
    mpx__text_add(t, dst, (size_t)len);
    free(big);
    return 0;
}

/* Reads a decimal number at *pp (at most MAX_WIDTH). -1 when there is no digit, -2 when too
 * large. */
static int read_num(const char **pp)
{
    const char *p = *pp;
    if (*p < '0' || *p > '9')
        return -1;
    long v = 0;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (*p++ - '0');
        if (v > MAX_WIDTH)
            return -2;
    }
    *pp = p;
    return (int)v;
}

int mpx_log_format(const mpx_log_record *rec, const char *fmt, char **out)
{
    if (!rec || !fmt || !out)
        return -EINVAL;
    struct mpx__text t = {0};
    int err = 0;
    mpx__text_add(&t, "", 0); /* so that an empty format gives "" rather than NULL */
    const char *p = fmt;
    while (*p && !t.failed) {
        const char *pct = strchr(p, '%');
        if (!pct) {
            mpx__text_add(&t, p, strlen(p));
            break;
        }
        mpx__text_add(&t, p, (size_t)(pct - p));
        p = pct + 1;
        if (*p == '%') {
            mpx__text_add(&t, "%", 1);
            p++;
            continue;
        }
        if (*p != '(') {
            err = -EINVAL; /* Python: "format requires a mapping" */
            goto fail;
        }
        /* Python allows nested parentheses in a key; no key here has any, so the first
         * ')' ends it. */
        const char *key = ++p;
        const char *close = strchr(key, ')');
        if (!close) {
            err = -EINVAL;
            goto fail;
        }
        p = close + 1;
        struct spec sp = {.width = -1, .prec = -1};
        while (*p && strchr("-0+ #", *p)) {
            if (sp.nflags < (int)sizeof sp.flags - 1)
                sp.flags[sp.nflags++] = *p;
            p++;
        }
        int w = read_num(&p);
        if (w == -2) {
            err = -EINVAL;
            goto fail;
        }
        sp.width = w;
        if (*p == '.') {
            p++;
            int pr = read_num(&p);
            if (pr == -2) {
                err = -EINVAL;
                goto fail;
            }
            sp.prec = pr < 0 ? 0 : pr; /* Python: "%.s" means precision 0 */
        }
        while (*p == 'h' || *p == 'l' || *p == 'L')
            p++; /* length modifiers: accepted and ignored, as Python does */
        if (!*p || !strchr("srdifFeEgG", *p)) {
            err = -EINVAL;
            goto fail;
        }
        sp.conv = *p++;
        struct value v;
        if ((err = lookup(rec, key, (size_t)(close - key), &v)) < 0)
            goto fail;
        if ((err = emit(&t, &sp, &v)) < 0)
            goto fail;
    }
    if (t.failed) {
        err = -ENOMEM;
        goto fail;
    }
    *out = t.s;
    return 0;
fail:
    free(t.s);
    return err;
}
