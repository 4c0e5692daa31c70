/* fuzz-conf: the configuration file, read through conf_load_file() from a memory file
 * holding the input, and every value conf_set() takes on the way. A refused file must say
 * where; one that loads must dump (--check-config) one line per key in table order, its
 * secret as "(set)", and split its listen and metrics addresses. */
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conf.h"
#include "fuzz.h"

static int memfd = -1;
static char path[64];

static void put(const void *p, size_t n)
{
    FUZZ_ASSERT(ftruncate(memfd, 0) == 0);
    FUZZ_ASSERT(pwrite(memfd, p, n, 0) == (ssize_t)n);
}

static void check_dump(const conf *c, const char *dump)
{
    size_t n_keys;
    const conf_key_info *keys = conf_keys(&n_keys);
    const char *line = dump;

    for (size_t i = 0; i < n_keys; i++) {
        size_t kl = strlen(keys[i].key);
        FUZZ_ASSERT(strncmp(line, keys[i].key, kl) == 0 && strncmp(line + kl, " =", 2) == 0);
        const char *nl = strchr(line, '\n');
        FUZZ_ASSERT(nl && nl[-1] != ' ');
        if (strcmp(keys[i].key, "metrics-secret") == 0 && c->metrics_secret)
            FUZZ_ASSERT(strncmp(line, "metrics-secret = (set)\n", (size_t)(nl - line) + 1) == 0);
        line = nl + 1;
    }
    FUZZ_ASSERT(*line == '\0');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    conf c;
    char *err = NULL;

    if (memfd < 0) {
        memfd = memfd_create("fuzz-conf", MFD_CLOEXEC);
        FUZZ_ASSERT(memfd >= 0);
        snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
    }
    put(data, size);
    FUZZ_ASSERT(conf_init(&c) == 0);
    int r = conf_load_file(&c, path, true, &err);
    FUZZ_ASSERT(r == 0 || r == -EINVAL || r == -ENOKEY);
    if (r < 0) {
        FUZZ_ASSERT(err && strncmp(err, path, strlen(path)) == 0);
    } else {
        FUZZ_ASSERT(!err);
        char *dump = conf_dump(&c);
        FUZZ_ASSERT(dump != NULL);
        check_dump(&c, dump);
        free(dump);
        char *host = NULL, *port = NULL;
        if (c.http_listen && strncmp(c.http_listen, "unix:", 5) != 0) {
            FUZZ_ASSERT(conf_split_host_port(c.http_listen, &host, &port) == 0);
            FUZZ_ASSERT(*port);
            free(host);
            free(port);
        }
        if (c.metrics_url && strncmp(c.metrics_url, "udp://", 6) == 0) {
            host = port = NULL;
            FUZZ_ASSERT(conf_split_host_port(c.metrics_url + 6, &host, &port) == 0);
            free(host);
            free(port);
        }
    }
    free(err);
    conf_done(&c);
    return 0;
}
