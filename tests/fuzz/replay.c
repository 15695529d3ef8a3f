/* Runs every file of the given directories (or single files) through a fuzz target's
 * LLVMFuzzerTestOneInput, each in a buffer of exactly its size: the corpus replay that makes
 * a fuzz target an ordinary ctest test. A failing input aborts (and names itself). */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(len > 0 ? (size_t)len : 1);
    if (!buf || (len > 0 && fread(buf, 1, (size_t)len, f) != (size_t)len)) {
        fprintf(stderr, "%s: cannot read\n", path);
        fclose(f);
        free(buf);
        return -1;
    }
    fclose(f);
    fprintf(stderr, "replay %s (%ld bytes)\n", path, len);
    LLVMFuzzerTestOneInput(buf, (size_t)len);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    int files = 0, errors = 0;
    for (int a = 1; a < argc; a++) {
        struct stat st;
        if (stat(argv[a], &st) < 0) {
            perror(argv[a]);
            errors++;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            errors += run_file(argv[a]) < 0;
            files++;
            continue;
        }
        struct dirent **names;
        int n = scandir(argv[a], &names, NULL, alphasort);
        if (n < 0) {
            perror(argv[a]);
            errors++;
            continue;
        }
        for (int i = 0; i < n; i++) {
            if (names[i]->d_name[0] != '.') {
                char path[4096];
                snprintf(path, sizeof path, "%s/%s", argv[a], names[i]->d_name);
                errors += run_file(path) < 0;
                files++;
            }
            free(names[i]);
        }
        free(names);
    }
    if (files == 0)
        errors++; /* an empty corpus is a broken test, not a passing one */
    printf("%d passed, %d failed\n", files - errors, errors);
    return errors ? 1 : 0;
}
