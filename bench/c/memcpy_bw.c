/* bench/c/memcpy_bw.c - memcpy bandwidth, the floor for every byte a queue copies.
 *
 * For each block size, copies a source buffer into a destination buffer repeatedly (both
 * allocated and touched beforehand, so page faults are excluded) and reports the median of
 * several measurements in GB/s (10^9 bytes of payload per second). 64 KiB and 1 MiB blocks
 * mostly stay in the caches; 16 MiB blocks go to DRAM. A queue that copies each message k
 * times cannot move more than bandwidth/k bytes per second.
 *
 * Usage: memcpy_bw [-r MEASUREMENTS] [BYTES...]   (default sizes: 64 KiB, 1 MiB, 16 MiB)
 * Prints one JSON line: {"bench":"memcpy_bw","results":[{"bytes":...,"gbps":...},...]}.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpx/common.h"

/* Each measurement copies at least this many bytes, so short blocks are timed over many
 * copies and the clock's overhead stays negligible. */
#define BYTES_PER_MEASUREMENT (256u * 1024u * 1024u)
#define MAX_SIZES 16

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Keeps the compiler from treating the copies as dead stores. */
static volatile unsigned char sink;

static int measure(size_t size, int reps, double *gbps_out)
{
    unsigned char *src = NULL, *dst = NULL;
    double *gbps = calloc((size_t)reps, sizeof *gbps);
    int rc = -1;
    if (gbps == NULL || posix_memalign((void **)&src, 4096, size) != 0 ||
        posix_memalign((void **)&dst, 4096, size) != 0)
        goto out;
    for (size_t i = 0; i < size; i++)
        src[i] = (unsigned char)(i * 131u + 7u);
    memset(dst, 0, size);

    size_t iters = BYTES_PER_MEASUREMENT / size;
    if (iters < 4)
        iters = 4;
    memcpy(dst, src, size); /* warm-up */
    for (int r = 0; r < reps; r++) {
        int64_t t0 = mpx_now();
        for (size_t k = 0; k < iters; k++) {
            src[k % size] ^= 1u; /* a different source each time, as for fresh messages */
            memcpy(dst, src, size);
            sink ^= dst[(k * 4099u) % size];
        }
        int64_t t1 = mpx_now();
        gbps[r] = (double)size * (double)iters / (double)(t1 - t0);
    }
    qsort(gbps, (size_t)reps, sizeof *gbps, cmp_double);
    *gbps_out = gbps[reps / 2];
    rc = 0;
out:
    free(src);
    free(dst);
    free(gbps);
    return rc;
}

int main(int argc, char **argv)
{
    int reps = 7, opt;
    while ((opt = getopt(argc, argv, "r:")) != -1) {
        if (opt == 'r') {
            reps = atoi(optarg);
        } else {
            fprintf(stderr, "usage: %s [-r MEASUREMENTS] [BYTES...]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1) {
        fprintf(stderr, "memcpy_bw: bad -r\n");
        return 2;
    }
    size_t sizes[MAX_SIZES] = {64u * 1024u, 1024u * 1024u, 16u * 1024u * 1024u};
    int nsizes = 3;
    if (optind < argc) {
        nsizes = 0;
        for (int i = optind; i < argc && nsizes < MAX_SIZES; i++) {
            long long v = atoll(argv[i]);
            if (v <= 0) {
                fprintf(stderr, "memcpy_bw: bad size %s\n", argv[i]);
                return 2;
            }
            sizes[nsizes++] = (size_t)v;
        }
    }

    printf("{\"bench\":\"memcpy_bw\",\"reps\":%d,\"results\":[", reps);
    for (int i = 0; i < nsizes; i++) {
        double gbps;
        if (measure(sizes[i], reps, &gbps) != 0) {
            fprintf(stderr, "memcpy_bw: out of memory for %zu bytes\n", sizes[i]);
            return 1;
        }
        printf("%s{\"bytes\":%zu,\"gbps\":%.3f}", i ? "," : "", sizes[i], gbps);
    }
    printf("]}\n");
    return 0;
}
