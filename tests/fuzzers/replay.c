/* replay: runs a fuzz target's LLVMFuzzerTestOneInput on kept inputs, without libFuzzer, so
 * the unit tests replay every crash input ever fixed (and the seed corpus) in the normal
 * build. Arguments are files or directories of files; a directory's files run in name
 * order, and a directory that is not there holds nothing to run. Exits 1 if a path cannot
 * be read; a crash or a broken assertion aborts. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

#define INPUT_MAX ((size_t)16 << 20)

static size_t n_run;

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    char *buf = fuzz_malloc(INPUT_MAX);
    size_t n = fread(buf, 1, INPUT_MAX, f);
    bool bad = ferror(f) || !feof(f);
    fclose(f);
    if (bad) {
        fprintf(stderr, "replay: %s: unreadable or larger than %zu bytes\n", path, INPUT_MAX);
        free(buf);
        return -1;
    }
    /* An exact-size copy, as libFuzzer hands over: a read past the end is then a read past
     * the block for a memory checker. */
    char *data = fuzz_copy(buf, n);
    free(buf);
    LLVMFuzzerTestOneInput((const uint8_t *)data, n);
    free(data);
    n_run++;
    return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int run_path(const char *path, bool top)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        if (top && errno == ENOENT) {
            /* A target with no crash kept has no regressions/<target>/ yet. */
            printf("replay: %s: nothing there\n", path);
            return 0;
        }
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return run_file(path);

    struct dirent **names;
    int n = scandir(path, &names, NULL, by_name), r = 0;
    if (n < 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        if (name[0] != '.') {
            size_t len = strlen(path) + 1 + strlen(name) + 1;
            char *p = fuzz_malloc(len);
            snprintf(p, len, "%s/%s", path, name);
            if (run_path(p, false) < 0)
                r = -1;
            free(p);
        }
        free(names[i]);
    }
    free(names);
    return r;
}

int main(int argc, char **argv)
{
    int r = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE|DIRECTORY...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++)
        if (run_path(argv[i], true) < 0)
            r = 1;
    printf("replayed %zu inputs\n", n_run);
    return r;
}
