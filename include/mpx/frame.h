/* mpx/frame.h - the frame format that carries one serialized object as a queue message.
 *
 * A frame holds a "main" part (a pickle stream, or raw bytes) and zero or more out-of-band
 * buffers (pickle protocol 5), so that large buffers are copied once into the queue and once
 * out of it, never re-encoded. Layout (version 1, native byte order; frames never leave the
 * machine):
 *
 *   offset 0   uint32 magic   'MPXF' (0x4658504d)
 *          4   uint16 version  1
 *          6   uint16 kind     MPX_FRAME_PICKLE or MPX_FRAME_BYTES
 *          8   uint32 nparts   1 + number of out-of-band buffers (1..MPX_FRAME_MAX_PARTS)
 *         12   uint32 reserved 0
 *         16   uint64 len[nparts]
 *              uint8  flags[nparts], zero-padded to a multiple of 8
 *              the parts, each starting at a multiple of 8 from the frame start and padded
 *              with zeros to the next multiple of 8 (the last part needs no padding)
 *
 * Decoding validates everything against the message length: a truncated or malformed frame
 * gives MPX_EBADFRAME, never a read out of bounds. See docs/queue.md.
 */
#ifndef MPX_FRAME_H
#define MPX_FRAME_H

#include <sys/uio.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MPX_FRAME_MAGIC 0x4658504du
#define MPX_FRAME_VERSION 1
#define MPX_FRAME_MAX_PARTS 65536

enum mpx_frame_kind {
    MPX_FRAME_PICKLE = 0, /* part 0 is a pickle stream, parts 1.. its out-of-band buffers */
    MPX_FRAME_BYTES = 1,  /* part 0 is the payload itself (a bytes object), no other parts */
};

enum mpx_frame_part_flags {
    MPX_FRAME_READONLY = 1u << 0, /* the buffer was read-only when sent (rebuild as bytes) */
};

typedef struct mpx_frame_part {
    const void *data;
    size_t len;
    uint8_t flags;
} mpx_frame_part;

/* Bytes of header (everything before part 0) for a frame of nparts parts. */
MPX_API size_t mpx_frame_header_size(size_t nparts);

/* Number of iovec entries mpx_frame_build needs for nparts parts. */
static inline size_t mpx_frame_iov_count(size_t nparts) { return 2 * nparts; }

/* Writes the header for `parts` into `hdr` (room for mpx_frame_header_size(nparts) bytes)
 * and fills `iov` (room for mpx_frame_iov_count(nparts) entries) with the whole frame:
 * header, parts and padding. Returns the number of iovec entries used, or -EINVAL /
 * MPX_ETOOBIG. The iovecs point into `hdr`, the parts and static padding. */
MPX_API int mpx_frame_build(void *hdr, unsigned kind, const mpx_frame_part *parts,
                            size_t nparts, struct iovec *iov);

/* Reads the kind and part count of the frame in msg[0..len). 0 or MPX_EBADFRAME /
 * MPX_EVERSION. */
MPX_API int mpx_frame_peek(const void *msg, size_t len, unsigned *kind, size_t *nparts);

/* Validates the whole frame and points parts[0..nparts) into msg. `nparts` must be the
 * count from mpx_frame_peek. 0 or MPX_EBADFRAME / MPX_EVERSION. */
MPX_API int mpx_frame_parse(const void *msg, size_t len, mpx_frame_part *parts, size_t nparts);

#ifdef __cplusplus
}
#endif
#endif /* MPX_FRAME_H */
