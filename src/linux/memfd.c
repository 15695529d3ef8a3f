/* memfd segments: creation, growth, sealing and validation. */
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "linux.h"

#define MPX__SEALS (F_SEAL_SHRINK | F_SEAL_SEAL)

int mpx__memfd_create(const char *name)
{
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    return fd < 0 ? -errno : fd;
}

int mpx__fd_size(int fd, uint64_t *size)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    *size = (uint64_t)st.st_size;
    return 0;
}

int mpx__memfd_grow(int fd, uint64_t size)
{
    uint64_t cur;
    int r = mpx__fd_size(fd, &cur);
    if (r < 0)
        return r;
    if (cur >= size)
        return 0;
    if ((off_t)size < 0)
        return -EFBIG;
    if (ftruncate(fd, (off_t)size) < 0)
        return -errno;
    return 0;
}

int mpx__memfd_seal(int fd)
{
    return fcntl(fd, F_ADD_SEALS, MPX__SEALS) < 0 ? -errno : 0;
}

int mpx__memfd_check(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return -EINVAL;
    /* Only memfds (and tmpfs files) answer F_GET_SEALS; our segments carry both seals, which
     * also guarantees that nobody can shrink the file under our mappings (no SIGBUS). */
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0)
        return -EINVAL;
    return (seals & MPX__SEALS) == MPX__SEALS ? 0 : -EINVAL;
}

int mpx__memfd_punch(int fd, uint64_t off, uint64_t len)
{
    if (len == 0)
        return 0;
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) < 0)
        return -errno;
    return 0;
}

int mpx__dup_cloexec(int fd)
{
    int r = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    return r < 0 ? -errno : r;
}
