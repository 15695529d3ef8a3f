/* The error record of <mpx/errrec.h>: a chain of "what went wrong" records, their canonical
 * little-endian encoding, its strict decoder, and the Python-style text display.
 * docs/error-record.md describes the encoding. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "mpx/errrec.h"
#include "mpx/error.h"

struct mpx_errrec {
    char *module;            /* owned, never NULL */
    char *qualname;          /* owned, never NULL, not empty */
    char *message;           /* owned, never NULL */
    char *traceback;         /* owned, never NULL ("" when empty) */
    char *origin;            /* owned; NULL when the record has no origin */
    int64_t origin_pid;      /* 0 unless origin is set */
    unsigned char *payload;  /* owned; NULL exactly when payload_len is 0 */
    size_t payload_len;
    struct mpx_errrec *cause; /* owned; NULL at the end of the chain */
};

/* ---- the encoding ---- */

#define HEAD_SIZE 24u
#define REC_HEAD_SIZE 64u
#define REC_HAS_ORIGIN 1u
#define NFIELDS 6 /* module, qualname, message, traceback, origin, payload */

/* Explicit little-endian access, so that the encoding is the same on every host and the
 * buffer needs no alignment. */
static void put16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint16_t get16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static uint32_t get32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* ---- UTF-8 ---- */

/* The length of the valid UTF-8 sequence at s[0..n) (1..4), or 0 if s does not start one.
 * Strict, as Python's decoder: no overlong forms, no surrogates, nothing above U+10FFFF. NUL
 * counts as invalid here, because every text field must also be a C string. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c == 0)
        return 0;
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t l = utf8_seq(s + i, n - i);
        if (l == 0)
            return false;
        i += l;
    }
    return true;
}

/* A malloc'd copy of the C string s with each byte that does not start a valid sequence
 * replaced by U+FFFD. 0, MPX_ETOOBIG or -ENOMEM. */
static int text_dup(const char *s, char **out)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s);
    if (n > MPX_ERRREC_MAX_SIZE)
        return MPX_ETOOBIG;
    /* First pass: the size after replacement (at most 3 * n, so no overflow here). */
    size_t size = 0;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq(u + i, n - i);
        size += l ? l : 3;
        i += l ? l : 1;
    }
    if (size > MPX_ERRREC_MAX_SIZE)
        return MPX_ETOOBIG;
    char *d = malloc(size + 1);
    if (!d)
        return -ENOMEM;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq(u + i, n - i);
        if (l) {
            memcpy(d + o, s + i, l);
            o += l;
            i += l;
        } else {
            memcpy(d + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    d[o] = '\0';
    *out = d;
    return 0;
}

/* A malloc'd NUL-terminated copy of p[0..n), which the caller has validated. */
static char *bytes_dup(const unsigned char *p, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        if (n)
            memcpy(d, p, n);
        d[n] = '\0';
    }
    return d;
}

/* ---- records ---- */

/* Frees one record, not its cause. */
static void rec_free(mpx_errrec *r)
{
    free(r->module);
    free(r->qualname);
    free(r->message);
    free(r->traceback);
    free(r->origin);
    free(r->payload);
    free(r);
}

void mpx_errrec_destroy(mpx_errrec *rec)
{
    /* Iterative, so that destroying a chain never depends on stack depth. */
    while (rec) {
        mpx_errrec *next = rec->cause;
        rec_free(rec);
        rec = next;
    }
}

int mpx_errrec_create(mpx_errrec **out, const char *module, const char *qualname,
                      const char *message, const char *traceback)
{
    if (!out || !module || !qualname || !message || qualname[0] == '\0')
        return -EINVAL;
    mpx_errrec *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    int err;
    if ((err = text_dup(module, &r->module)) < 0 ||
        (err = text_dup(qualname, &r->qualname)) < 0 ||
        (err = text_dup(message, &r->message)) < 0 ||
        (err = text_dup(traceback ? traceback : "", &r->traceback)) < 0)
        goto fail;
    *out = r;
    return 0;
fail:
    rec_free(r);
    return err;
}

int mpx_errrec_set_origin(mpx_errrec *rec, const char *name, int64_t pid)
{
    if (!rec || (name && pid < 0))
        return -EINVAL;
    char *copy = NULL;
    if (name) {
        int err = text_dup(name, &copy);
        if (err < 0)
            return err;
    }
    free(rec->origin);
    rec->origin = copy;
    rec->origin_pid = name ? pid : 0;
    return 0;
}

int mpx_errrec_set_payload(mpx_errrec *rec, const void *data, size_t len)
{
    if (!rec || (!data && len > 0))
        return -EINVAL;
    if (len > MPX_ERRREC_MAX_SIZE)
        return MPX_ETOOBIG;
    unsigned char *copy = NULL;
    if (len) {
        copy = malloc(len);
        if (!copy)
            return -ENOMEM;
        memcpy(copy, data, len);
    }
    free(rec->payload);
    rec->payload = copy;
    rec->payload_len = len;
    return 0;
}

int mpx_errrec_set_cause_take(mpx_errrec *rec, mpx_errrec *cause)
{
    if (!rec)
        return -EINVAL;
    /* Refuse what would make a cycle or free something still in use: cause must be a
     * separate chain the caller owns. Both chains are at most MPX_ERRREC_MAX_DEPTH long
     * (each was built through this function or the decoder), so the walks are bounded. */
    size_t depth = 0;
    for (const mpx_errrec *c = cause; c; c = c->cause) {
        if (c == rec || ++depth > MPX_ERRREC_MAX_DEPTH)
            return c == rec ? -EINVAL : MPX_ETOOBIG;
    }
    for (const mpx_errrec *c = rec->cause; cause && c; c = c->cause)
        if (c == cause)
            return -EINVAL;
    if (depth + 1 > MPX_ERRREC_MAX_DEPTH)
        return MPX_ETOOBIG;
    mpx_errrec_destroy(rec->cause);
    rec->cause = cause;
    return 0;
}

const char *mpx_errrec_module(const mpx_errrec *rec) { return rec ? rec->module : NULL; }
const char *mpx_errrec_qualname(const mpx_errrec *rec) { return rec ? rec->qualname : NULL; }
const char *mpx_errrec_message(const mpx_errrec *rec) { return rec ? rec->message : NULL; }
const char *mpx_errrec_traceback(const mpx_errrec *rec) { return rec ? rec->traceback : NULL; }
const mpx_errrec *mpx_errrec_cause(const mpx_errrec *rec) { return rec ? rec->cause : NULL; }

int mpx_errrec_origin(const mpx_errrec *rec, const char **name, int64_t *pid)
{
    if (!rec)
        return -EINVAL;
    if (!rec->origin)
        return -ENOENT;
    if (name)
        *name = rec->origin;
    if (pid)
        *pid = rec->origin_pid;
    return 0;
}

const void *mpx_errrec_payload(const mpx_errrec *rec, size_t *len)
{
    if (len)
        *len = rec ? rec->payload_len : 0;
    return rec ? rec->payload : NULL;
}

size_t mpx_errrec_depth(const mpx_errrec *rec)
{
    size_t n = 0;
    for (; rec; rec = rec->cause)
        n++;
    return n;
}

int mpx_errrec_dup(mpx_errrec **out, const mpx_errrec *rec)
{
    if (!out || !rec)
        return -EINVAL;
    mpx_errrec *head = NULL, **link = &head;
    for (const mpx_errrec *s = rec; s; s = s->cause) {
        mpx_errrec *r = calloc(1, sizeof *r);
        if (!r)
            goto nomem;
        *link = r; /* linked first, so that the clean-up below frees a partial copy */
        link = &r->cause;
        r->module = bytes_dup((const unsigned char *)s->module, strlen(s->module));
        r->qualname = bytes_dup((const unsigned char *)s->qualname, strlen(s->qualname));
        r->message = bytes_dup((const unsigned char *)s->message, strlen(s->message));
        r->traceback = bytes_dup((const unsigned char *)s->traceback, strlen(s->traceback));
        if (!r->module || !r->qualname || !r->message || !r->traceback)
            goto nomem;
        if (s->origin) {
            r->origin = bytes_dup((const unsigned char *)s->origin, strlen(s->origin));
            if (!r->origin)
                goto nomem;
            r->origin_pid = s->origin_pid;
        }
        if (s->payload_len) {
            r->payload = malloc(s->payload_len);
            if (!r->payload)
                goto nomem;
            memcpy(r->payload, s->payload, s->payload_len);
            r->payload_len = s->payload_len;
        }
    }
    *out = head;
    return 0;
nomem:
    mpx_errrec_destroy(head);
    return -ENOMEM;
}

/* ---- encode ---- */

/* The lengths of r's fields in encoding order. */
static void field_lens(const mpx_errrec *r, size_t lens[NFIELDS])
{
    lens[0] = strlen(r->module);
    lens[1] = strlen(r->qualname);
    lens[2] = strlen(r->message);
    lens[3] = strlen(r->traceback);
    lens[4] = r->origin ? strlen(r->origin) : 0;
    lens[5] = r->payload_len;
}

int mpx_errrec_encode(const mpx_errrec *rec, void **buf, size_t *len)
{
    if (!rec || !buf || !len)
        return -EINVAL;
    /* Size first, refusing anything over the limit; each field is at most
     * MPX_ERRREC_MAX_SIZE, so a sum checked after every addition cannot overflow. */
    size_t total = HEAD_SIZE, count = 0;
    for (const mpx_errrec *r = rec; r; r = r->cause) {
        if (++count > MPX_ERRREC_MAX_DEPTH)
            return MPX_ETOOBIG;
        size_t lens[NFIELDS];
        field_lens(r, lens);
        total += REC_HEAD_SIZE;
        for (int i = 0; i < NFIELDS; i++) {
            if (lens[i] > MPX_ERRREC_MAX_SIZE - total)
                return MPX_ETOOBIG;
            total += lens[i];
        }
        if (total > MPX_ERRREC_MAX_SIZE)
            return MPX_ETOOBIG;
    }
    unsigned char *p = malloc(total);
    if (!p)
        return -ENOMEM;
    memcpy(p, "MPXE", 4);
    put16(p + 4, MPX_ERRREC_VERSION);
    put16(p + 6, 0);
    put32(p + 8, (uint32_t)count);
    put32(p + 12, 0);
    put64(p + 16, total);
    size_t off = HEAD_SIZE;
    for (const mpx_errrec *r = rec; r; r = r->cause) {
        size_t lens[NFIELDS];
        field_lens(r, lens);
        const void *data[NFIELDS] = {r->module, r->qualname, r->message,
                                     r->traceback, r->origin, r->payload};
        put32(p + off, r->origin ? REC_HAS_ORIGIN : 0);
        put32(p + off + 4, 0);
        put64(p + off + 8, (uint64_t)r->origin_pid);
        for (int i = 0; i < NFIELDS; i++)
            put64(p + off + 16 + 8 * i, lens[i]);
        off += REC_HEAD_SIZE;
        for (int i = 0; i < NFIELDS; i++) {
            if (lens[i])
                memcpy(p + off, data[i], lens[i]);
            off += lens[i];
        }
    }
    *buf = p;
    *len = total;
    return 0;
}

/* ---- decode ---- */

/* Checks the record at p[off..len) and, if it is valid, stores the offsets of its six fields
 * in at[], their lengths in lens[], its origin flag and pid, and advances *off past it.
 * 0 or MPX_EBADFRAME. Reads nothing outside p[0..len): every length is compared with what
 * remains before use. */
static int check_record(const unsigned char *p, size_t len, size_t *off, size_t at[NFIELDS],
                        size_t lens[NFIELDS], bool *origin_out, int64_t *pid_out)
{
    size_t o = *off;
    if (len - o < REC_HEAD_SIZE)
        return MPX_EBADFRAME;
    uint32_t flags = get32(p + o);
    uint32_t reserved = get32(p + o + 4);
    int64_t pid = (int64_t)get64(p + o + 8);
    bool has_origin = flags & REC_HAS_ORIGIN;
    if ((flags & ~REC_HAS_ORIGIN) || reserved != 0 || pid < 0 || (!has_origin && pid != 0))
        return MPX_EBADFRAME;
    uint64_t l[NFIELDS];
    for (int i = 0; i < NFIELDS; i++)
        l[i] = get64(p + o + 16 + 8 * i);
    o += REC_HEAD_SIZE;
    if (l[1] == 0 || (!has_origin && l[4] != 0))
        return MPX_EBADFRAME;
    for (int i = 0; i < NFIELDS; i++) {
        if (l[i] > len - o) /* o <= len holds throughout */
            return MPX_EBADFRAME;
        at[i] = o;
        lens[i] = (size_t)l[i];
        /* Fields 0..4 are text; field 5, the payload, is opaque. */
        if (i < 5 && !utf8_valid(p + o, lens[i]))
            return MPX_EBADFRAME;
        o += lens[i];
    }
    *off = o;
    *origin_out = has_origin;
    *pid_out = pid;
    return 0;
}

int mpx_errrec_decode(mpx_errrec **out, const void *buf, size_t len)
{
    if (!out || (!buf && len > 0))
        return -EINVAL;
    const unsigned char *p = buf;
    if (len < HEAD_SIZE || memcmp(p, "MPXE", 4) != 0)
        return MPX_EBADFRAME;
    if (get16(p + 4) != MPX_ERRREC_VERSION)
        return MPX_EVERSION;
    uint32_t count = get32(p + 8);
    if (get16(p + 6) != 0 || get32(p + 12) != 0 || count == 0 ||
        count > MPX_ERRREC_MAX_DEPTH || len > MPX_ERRREC_MAX_SIZE || get64(p + 16) != len)
        return MPX_EBADFRAME;

    /* Validate the whole chain before allocating anything: a hostile encoding costs the
     * receiver a linear scan and nothing more. */
    size_t off = HEAD_SIZE;
    size_t at[MPX_ERRREC_MAX_DEPTH][NFIELDS], lens[MPX_ERRREC_MAX_DEPTH][NFIELDS];
    int64_t pid[MPX_ERRREC_MAX_DEPTH];
    bool has_origin[MPX_ERRREC_MAX_DEPTH];
    for (uint32_t k = 0; k < count; k++) {
        int err = check_record(p, len, &off, at[k], lens[k], &has_origin[k], &pid[k]);
        if (err < 0)
            return err;
    }
    if (off != len)
        return MPX_EBADFRAME;

    /* Build the chain, outermost record first. */
    mpx_errrec *head = NULL, **link = &head;
    for (uint32_t k = 0; k < count; k++) {
        mpx_errrec *r = calloc(1, sizeof *r);
        if (!r)
            goto nomem;
        *link = r;
        link = &r->cause;
        char **text[5] = {&r->module, &r->qualname, &r->message, &r->traceback, &r->origin};
        for (int i = 0; i < 5; i++) {
            if (i == 4 && !has_origin[k])
                break;
            *text[i] = bytes_dup(p + at[k][i], lens[k][i]);
            if (!*text[i])
                goto nomem;
        }
        r->origin_pid = has_origin[k] ? pid[k] : 0;
        if (lens[k][5]) {
            r->payload = malloc(lens[k][5]);
            if (!r->payload)
                goto nomem;
            memcpy(r->payload, p + at[k][5], lens[k][5]);
            r->payload_len = lens[k][5];
        }
    }
    *out = head;
    return 0;
nomem:
    mpx_errrec_destroy(head);
    return -ENOMEM;
}

/* ---- format ---- */

/* A growing text buffer; `failed` records the first allocation failure, after which every
 * append is a no-op, so that callers check once at the end. */
struct text {
    char *s;
    size_t len, cap;
    bool failed;
};

static void text_add(struct text *t, const char *s, size_t n)
{
    if (t->failed || n == 0)
        return;
    if (n >= t->cap - t->len) {
        size_t cap = t->cap ? t->cap : 256;
        while (n >= cap - t->len) {
            if (cap > SIZE_MAX / 2) {
                t->failed = true;
                return;
            }
            cap *= 2;
        }
        char *ns = realloc(t->s, cap);
        if (!ns) {
            t->failed = true;
            return;
        }
        t->s = ns;
        t->cap = cap;
    }
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = '\0';
}

static void text_adds(struct text *t, const char *s) { text_add(t, s, strlen(s)); }

/* Python omits the module for these, as traceback.TracebackException does. */
static bool module_hidden(const char *m)
{
    return m[0] == '\0' || strcmp(m, "builtins") == 0 || strcmp(m, "__main__") == 0;
}

static void format_block(struct text *t, const mpx_errrec *r)
{
    if (r->origin) {
        text_adds(t, "[");
        text_adds(t, r->origin);
        text_adds(t, "] ");
    }
    size_t tl = strlen(r->traceback);
    text_add(t, r->traceback, tl);
    if (tl && r->traceback[tl - 1] != '\n')
        text_adds(t, "\n");
    if (!module_hidden(r->module)) {
        text_adds(t, r->module);
        text_adds(t, ".");
    }
    text_adds(t, r->qualname);
    if (r->message[0]) {
        text_adds(t, ": ");
        text_adds(t, r->message);
    }
    text_adds(t, "\n");
}

int mpx_errrec_format(const mpx_errrec *rec, char **out)
{
    if (!rec || !out)
        return -EINVAL;
    /* Innermost first: collect the chain (bounded by MPX_ERRREC_MAX_DEPTH), walk it back. */
    const mpx_errrec *chain[MPX_ERRREC_MAX_DEPTH];
    size_t n = 0;
    for (const mpx_errrec *r = rec; r && n < MPX_ERRREC_MAX_DEPTH; r = r->cause)
        chain[n++] = r;
    struct text t = {0};
    for (size_t i = n; i-- > 0;) {
        format_block(&t, chain[i]);
        if (i > 0)
            text_adds(&t, "\nThe above exception was the direct cause of the following "
                          "exception:\n\n");
    }
    if (t.failed) {
        free(t.s);
        return -ENOMEM;
    }
    *out = t.s; /* never NULL: every block has at least the qualname and a newline */
    return 0;
}
