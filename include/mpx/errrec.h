/* mpx/errrec.h - the error record: "what went wrong in another process".
 *
 * One format, shared by processes (a child's exception or crash), queues and the server, for
 * an error that crosses a process boundary: the C analogue of Python's RemoteException. A
 * record holds
 *
 *   - the exception type, as a module and a qualified name ("builtins" / "ValueError"; a C
 *     creator picks its own, e.g. "mpx" / "MPX_EBADFRAME"),
 *   - the message (UTF-8 text),
 *   - the traceback text (UTF-8, possibly empty): the stack part only, without the final
 *     "Type: message" line, which mpx_errrec_format() adds,
 *   - optionally the origin: the name and pid of the process where it happened,
 *   - optionally a payload of opaque bytes (the Python face stores the pickled exception),
 *   - optionally a cause, another record, which makes a chain of at most
 *     MPX_ERRREC_MAX_DEPTH records (the record itself included).
 *
 * Records travel as a byte string (mpx_errrec_encode / mpx_errrec_decode): version 1,
 * little-endian, every length explicit, see docs/error-record.md for the layout. Decoding
 * validates everything, so bytes from another process cannot crash, overrun or exhaust the
 * receiver: a truncated, oversized or corrupt encoding gives MPX_EBADFRAME, an unknown
 * version MPX_EVERSION.
 *
 * Text fields are always valid UTF-8 without NUL bytes, so each is also a C string. The
 * functions that store text from the caller never fail for bad encoding: each byte that
 * does not begin a valid UTF-8 sequence is replaced by U+FFFD (as Python's
 * errors="replace"), because an error report that cannot be created is worse than one
 * with a replacement character. The decoder, which reads bytes from elsewhere, rejects
 * invalid UTF-8 instead.
 *
 * Thread-safety: a record is a plain heap object without a lock. Any number of threads may
 * call the const functions on one record at the same time; a function that modifies a
 * record (set_*, destroy) must not run concurrently with any other use of that record.
 * Nothing here is async-signal-safe (all of it may allocate): a crash handler that wants to
 * report must encode its record ahead of time or use pre-allocated memory. Records are
 * process-local heap memory; after fork() the child may use the copies it inherited.
 */
#ifndef MPX_ERRREC_H
#define MPX_ERRREC_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* "MPXE" as the first four bytes of an encoding, read as a little-endian uint32. */
#define MPX_ERRREC_MAGIC 0x4558504du
#define MPX_ERRREC_VERSION 1
/* Most records in one chain (a record and its causes). */
#define MPX_ERRREC_MAX_DEPTH 64
/* Largest encoding, in bytes (and so the largest any one field can be). */
#define MPX_ERRREC_MAX_SIZE ((size_t)64 << 20)

typedef struct mpx_errrec mpx_errrec;

/* Creates a record without origin, payload or cause, copying the strings. `module` may be
 * empty; `qualname` must not be; `traceback` NULL means empty. Invalid UTF-8 is replaced
 * (see above). Returns 0 with the record in *out (destroy it with mpx_errrec_destroy), or
 * -EINVAL (out, module, qualname or message NULL, qualname empty), MPX_ETOOBIG (a string
 * longer than MPX_ERRREC_MAX_SIZE), -ENOMEM. On failure *out is left unchanged. */
MPX_API int mpx_errrec_create(mpx_errrec **out, const char *module, const char *qualname,
                              const char *message, const char *traceback);

/* Frees `rec` and its whole cause chain. NULL is a no-op. */
MPX_API void mpx_errrec_destroy(mpx_errrec *rec);

/* Makes a deep copy of `rec` and its chain. Returns 0 with the copy in *out, -EINVAL, or
 * -ENOMEM (nothing is left allocated). */
MPX_API int mpx_errrec_dup(mpx_errrec **out, const mpx_errrec *rec);

/* Sets the origin of `rec`: the name (copied; may be empty) and pid (0 for unknown) of the
 * process where the error happened. `name` NULL removes the origin. Returns 0, -EINVAL (rec
 * NULL, pid negative), MPX_ETOOBIG, -ENOMEM (the record is unchanged on failure). */
MPX_API int mpx_errrec_set_origin(mpx_errrec *rec, const char *name, int64_t pid);

/* Sets the payload of `rec` to a copy of data[0..len); len 0 removes it (an empty payload
 * and no payload are the same). Returns 0, -EINVAL (rec NULL, or data NULL with len > 0),
 * MPX_ETOOBIG (len > MPX_ERRREC_MAX_SIZE), -ENOMEM (the record is unchanged on failure). */
MPX_API int mpx_errrec_set_payload(mpx_errrec *rec, const void *data, size_t len);

/* Makes `cause` the cause of `rec`, taking ownership of it (and its chain): `rec` destroys
 * it. A previous cause of `rec` is destroyed; `cause` NULL just removes it. On failure
 * nothing changes and the caller still owns `cause`. Returns 0, -EINVAL (rec NULL; cause
 * is rec or already part of rec's chain, or rec is part of cause's chain), MPX_ETOOBIG
 * (the chain would hold more than MPX_ERRREC_MAX_DEPTH records). Never allocates. */
MPX_API int mpx_errrec_set_cause_take(mpx_errrec *rec, mpx_errrec *cause);

/* Getters. Each returns a pointer borrowed from `rec`, valid until the record is modified
 * or destroyed; for NULL rec each returns NULL. The strings are NUL-terminated UTF-8. */
MPX_API const char *mpx_errrec_module(const mpx_errrec *rec);
MPX_API const char *mpx_errrec_qualname(const mpx_errrec *rec);
MPX_API const char *mpx_errrec_message(const mpx_errrec *rec);
MPX_API const char *mpx_errrec_traceback(const mpx_errrec *rec); /* "" when empty */

/* The origin of `rec`: stores the (borrowed) name in *name and the pid in *pid, each if not
 * NULL. Returns 0, -ENOENT (no origin set; the outputs are left unchanged), -EINVAL. */
MPX_API int mpx_errrec_origin(const mpx_errrec *rec, const char **name, int64_t *pid);

/* The payload of `rec` (borrowed) with its length in *len (if len is not NULL); NULL and
 * length 0 when there is none or rec is NULL. */
MPX_API const void *mpx_errrec_payload(const mpx_errrec *rec, size_t *len);

/* The cause of `rec` (borrowed, owned by rec), or NULL. */
MPX_API const mpx_errrec *mpx_errrec_cause(const mpx_errrec *rec);

/* The number of records in the chain that starts at `rec` (1 without a cause; 0 for NULL). */
MPX_API size_t mpx_errrec_depth(const mpx_errrec *rec);

/* Encodes `rec` and its chain into a malloc'd buffer: 0 with the buffer in *buf (the caller
 * frees it with free()) and its length in *len, -EINVAL, MPX_ETOOBIG (the encoding would
 * exceed MPX_ERRREC_MAX_SIZE), -ENOMEM. On failure the outputs are left unchanged. The
 * encoding is canonical: equal records encode to equal bytes. */
MPX_API int mpx_errrec_encode(const mpx_errrec *rec, void **buf, size_t *len);

/* Decodes buf[0..len), which must be exactly one encoding, into a new record (and chain):
 * 0 with the record in *out (the caller destroys it), -EINVAL (out NULL, or buf NULL with
 * len > 0), MPX_EVERSION (a version other than MPX_ERRREC_VERSION), MPX_EBADFRAME (any other
 * defect: see docs/error-record.md, "Validation"), -ENOMEM. The whole input is validated
 * before anything is allocated, so declared lengths never drive an allocation larger than
 * the input. Never reads outside buf[0..len); on failure *out is left unchanged. */
MPX_API int mpx_errrec_decode(mpx_errrec **out, const void *buf, size_t len);

/* Formats `rec` and its chain the way Python prints a chained exception: a malloc'd,
 * NUL-terminated text in *out (the caller frees it). The innermost cause comes first; each
 * record's block is its traceback text (followed by a newline if it does not end with one)
 * and then the line "module.qualname: message" - just "qualname" when module is "builtins",
 * "__main__" or empty, and no ": message" when the message is empty. A record with an
 * origin gets "[<origin name>] " before the first line of its block. Blocks are joined by
 * "\n\nThe above exception was the direct cause of the following exception:\n\n" and the
 * text ends with "\n". Returns 0, -EINVAL, -ENOMEM (*out unchanged on failure). */
MPX_API int mpx_errrec_format(const mpx_errrec *rec, char **out);

#ifdef __cplusplus
}
#endif
#endif /* MPX_ERRREC_H */
