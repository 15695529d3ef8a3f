/* The frame format of <mpx/frame.h>: one serialized object with out-of-band buffers. */
#include <errno.h>
#include <string.h>

#include "mpx/error.h"
#include "mpx/frame.h"

#define ALIGN8(x) (((x) + 7u) & ~(size_t)7u)

struct frame_head {
    uint32_t magic;
    uint16_t version;
    uint16_t kind;
    uint32_t nparts;
    uint32_t reserved;
};

static const unsigned char zeros[8];

size_t mpx_frame_header_size(size_t nparts)
{
    return sizeof(struct frame_head) + 8 * nparts + ALIGN8(nparts);
}

int mpx_frame_build(void *hdr, unsigned kind, const mpx_frame_part *parts, size_t nparts,
                    struct iovec *iov)
{
    if (!hdr || !parts || !iov || nparts == 0 || kind > MPX_FRAME_BYTES)
        return -EINVAL;
    if (nparts > MPX_FRAME_MAX_PARTS || (kind == MPX_FRAME_BYTES && nparts != 1))
        return nparts > MPX_FRAME_MAX_PARTS ? MPX_ETOOBIG : -EINVAL;
    struct frame_head h = {MPX_FRAME_MAGIC, MPX_FRAME_VERSION, (uint16_t)kind,
                           (uint32_t)nparts, 0};
    unsigned char *p = hdr;
    memcpy(p, &h, sizeof h);
    unsigned char *lens = p + sizeof h;
    unsigned char *flags = p + sizeof h + 8 * nparts;
    memset(flags, 0, ALIGN8(nparts));
    int n = 0;
    iov[n++] = (struct iovec){hdr, mpx_frame_header_size(nparts)};
    for (size_t i = 0; i < nparts; i++) {
        if (!parts[i].data && parts[i].len)
            return -EINVAL;
        uint64_t l = parts[i].len;
        memcpy(lens + 8 * i, &l, sizeof l); /* hdr need not be 8-byte aligned */
        flags[i] = parts[i].flags;
        if (parts[i].len)
            iov[n++] = (struct iovec){(void *)parts[i].data, parts[i].len};
        size_t pad = ALIGN8(parts[i].len) - parts[i].len;
        if (pad && i + 1 < nparts)
            iov[n++] = (struct iovec){(void *)zeros, pad};
    }
    return n;
}

int mpx_frame_peek(const void *msg, size_t len, unsigned *kind, size_t *nparts)
{
    struct frame_head h;
    if (!msg || len < sizeof h)
        return MPX_EBADFRAME;
    memcpy(&h, msg, sizeof h);
    if (h.magic != MPX_FRAME_MAGIC)
        return MPX_EBADFRAME;
    if (h.version != MPX_FRAME_VERSION)
        return MPX_EVERSION;
    if (h.kind > MPX_FRAME_BYTES || h.nparts == 0 || h.nparts > MPX_FRAME_MAX_PARTS ||
        h.reserved != 0 || (h.kind == MPX_FRAME_BYTES && h.nparts != 1))
        return MPX_EBADFRAME;
    if (mpx_frame_header_size(h.nparts) > len)
        return MPX_EBADFRAME;
    *kind = h.kind;
    *nparts = h.nparts;
    return 0;
}

int mpx_frame_parse(const void *msg, size_t len, mpx_frame_part *parts, size_t nparts)
{
    unsigned kind;
    size_t n;
    int r = mpx_frame_peek(msg, len, &kind, &n);
    if (r < 0)
        return r;
    if (n != nparts || !parts)
        return -EINVAL;
    const unsigned char *p = msg;
    size_t off = mpx_frame_header_size(n);
    const unsigned char *flags = p + sizeof(struct frame_head) + 8 * n;
    for (size_t i = 0; i < n; i++) {
        uint64_t l;
        memcpy(&l, p + sizeof(struct frame_head) + 8 * i, sizeof l);
        /* Checked without overflow: off <= len always holds here. */
        if (l > len - off)
            return MPX_EBADFRAME;
        parts[i] = (mpx_frame_part){p + off, (size_t)l, flags[i]};
        off += (size_t)l;
        if (i + 1 < n) {
            size_t pad = ALIGN8(off) - off;
            if (pad > len - off)
                return MPX_EBADFRAME;
            off += pad;
        }
    }
    return off == len ? 0 : MPX_EBADFRAME;
}
