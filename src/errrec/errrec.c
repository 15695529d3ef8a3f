/* The error record of <mpx/errrec.h>: a chain of "what went wrong" records, their canonical
 * little-endian encoding, its strict decoder, and the Python-style text display.
 * docs/error-record.md describes the encoding. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "mpx/errrec.h"
#include "mpx/error.h"
#include "wire/bytes.h"
#include "wire/text.h"

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

/* A malloc'd copy of the C string s with each byte that does not start a valid sequence
 * replaced by U+FFFD. 0, MPX_ETOOBIG or -ENOMEM. */
static int text_dup(const char *s, char **out)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s);
    if (n > MPX_ERRREC_MAX_SIZE)
        return MPX_ETOOBIG;
    size_t size = mpx__utf8_repaired_size(u, n); /* at most 3 * n: no overflow here */
    if (size > MPX_ERRREC_MAX_SIZE)
        return MPX_ETOOBIG;
    char *d = malloc(size + 1);
    if (!d)
        return -ENOMEM;
    d[mpx__utf8_repair_copy((unsigned char *)d, u, n)] = '\0';
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
    mpx__put16(p + 4, MPX_ERRREC_VERSION);
    mpx__put16(p + 6, 0);
    mpx__put32(p + 8, (uint32_t)count);
    mpx__put32(p + 12, 0);
    mpx__put64(p + 16, total);
    size_t off = HEAD_SIZE;
    for (const mpx_errrec *r = rec; r; r = r->cause) {
        size_t lens[NFIELDS];
        field_lens(r, lens);
        const void *data[NFIELDS] = {r->module, r->qualname, r->message,
                                     r->traceback, r->origin, r->payload};
        mpx__put32(p + off, r->origin ? REC_HAS_ORIGIN : 0);
        mpx__put32(p + off + 4, 0);
        mpx__put64(p + off + 8, (uint64_t)r->origin_pid);
        for (int i = 0; i < NFIELDS; i++)
            mpx__put64(p + off + 16 + 8 * i, lens[i]);
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
    uint32_t flags = mpx__get32(p + o);
    uint32_t reserved = mpx__get32(p + o + 4);
    int64_t pid = (int64_t)mpx__get64(p + o + 8);
    bool has_origin = flags & REC_HAS_ORIGIN;
    if ((flags & ~REC_HAS_ORIGIN) || reserved != 0 || pid < 0 || (!has_origin && pid != 0))
        return MPX_EBADFRAME;
    uint64_t l[NFIELDS];
    for (int i = 0; i < NFIELDS; i++)
        l[i] = mpx__get64(p + o + 16 + 8 * i);
    o += REC_HEAD_SIZE;
    if (l[1] == 0 || (!has_origin && l[4] != 0))
        return MPX_EBADFRAME;
    for (int i = 0; i < NFIELDS; i++) {
        if (l[i] > len - o) /* o <= len holds throughout */
            return MPX_EBADFRAME;
        at[i] = o;
        lens[i] = (size_t)l[i];
        /* Fields 0..4 are text; field 5, the payload, is opaque. */
        if (i < 5 && !mpx__utf8_valid(p + o, lens[i]))
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
    if (mpx__get16(p + 4) != MPX_ERRREC_VERSION)
        return MPX_EVERSION;
    uint32_t count = mpx__get32(p + 8);
    if (mpx__get16(p + 6) != 0 || mpx__get32(p + 12) != 0 || count == 0 ||
        count > MPX_ERRREC_MAX_DEPTH || len > MPX_ERRREC_MAX_SIZE || mpx__get64(p + 16) != len)
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

/* Python omits the module for these, as traceback.TracebackException does. */
static bool module_hidden(const char *m)
{
    return m[0] == '\0' || strcmp(m, "builtins") == 0 || strcmp(m, "__main__") == 0;
}

static void format_block(struct mpx__text *t, const mpx_errrec *r)
{
    if (r->origin) {
        mpx__text_adds(t, "[");
        mpx__text_adds(t, r->origin);
        mpx__text_adds(t, "] ");
    }
    size_t tl = strlen(r->traceback);
    mpx__text_add(t, r->traceback, tl);
    if (tl && r->traceback[tl - 1] != '\n')
        mpx__text_adds(t, "\n");
    if (!module_hidden(r->module)) {
        mpx__text_adds(t, r->module);
        mpx__text_adds(t, ".");
    }
    mpx__text_adds(t, r->qualname);
    if (r->message[0]) {
        mpx__text_adds(t, ": ");
        mpx__text_adds(t, r->message);
    }
    mpx__text_adds(t, "\n");
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
    struct mpx__text t = {0};
    for (size_t i = n; i-- > 0;) {
        format_block(&t, chain[i]);
        if (i > 0)
            mpx__text_adds(&t, "\nThe above exception was the direct cause of the following "
                          "exception:\n\n");
    }
    if (t.failed) {
        free(t.s);
        return -ENOMEM;
    }
    *out = t.s; /* never NULL: every block has at least the qualname and a newline */
    return 0;
}
