/* fuzz-conf: the configuration file, read through conf_load_file() from a memory file,
 * then the environment through conf_load_env(), and every value conf_set() takes on the
 * way. With the first byte odd, the rest is the file up to its first NUL and then the
 * environment, one VAR=value a line (only the variables conf_load_env() reads, which are
 * unset again after); else it is all file. A refused file or environment must say where;
 * what loads must dump (--check-config) one line per key in table order, its secret as
 * "(set)", and split its listen and metrics addresses. */
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conf.h"
#include "fuzz.h"

static int memfd = -1;
static char path[64];

static const char *const env_vars[] = {
    "HEARE_AUTH_STORE", "S3_BUCKET", "S3_KEY",   "AWS_REGION", "S3_REGION", "S3_ENDPOINT",
    "HTTP_LISTEN",      "SECRET",    "PROTOCOL", "DEST_HOST",  "DEST_PORT",
};

/* Sets the variables of "VAR=value" lines; others are ignored. */
static void set_env(const uint8_t *p, size_t n)
{
    char *text = fuzz_strndup(p, n), *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        for (size_t i = 0; i < sizeof(env_vars) / sizeof(env_vars[0]); i++)
            if (strcmp(line, env_vars[i]) == 0)
                FUZZ_ASSERT(setenv(line, eq + 1, 1) == 0);
    }
    free(text);
}

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof(env_vars) / sizeof(env_vars[0]); i++)
        unsetenv(env_vars[i]);
}

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
        const char *nl = strchr(line, '\n'), *v = line + kl + 2;
        /* "key =" alone, or "key = value" (a value from the environment may end in a
         * space: it is not trimmed, and a path may end so). */
        FUZZ_ASSERT(nl && (v == nl || (*v == ' ' && v + 1 < nl)));
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
    fuzz_input in = {data, size};
    bool with_env = fuzz_byte(&in) & 1;
    size_t file_len = in.n;
    const uint8_t *nul = with_env && in.n ? memchr(in.p, 0, in.n) : NULL;
    if (nul) {
        file_len = (size_t)(nul - in.p);
        set_env(nul + 1, in.n - file_len - 1);
    }
    put(in.p, file_len);
    FUZZ_ASSERT(conf_init(&c) == 0);
    int r = conf_load_file(&c, path, true, &err);
    FUZZ_ASSERT(r == 0 || r == -EINVAL || r == -ENOKEY);
    if (r < 0) {
        FUZZ_ASSERT(err && strncmp(err, path, strlen(path)) == 0);
    } else if ((r = conf_load_env(&c, &err)) < 0) {
        FUZZ_ASSERT(r == -EINVAL && err && strncmp(err, "environment ", 12) == 0);
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
    clear_env();
    return 0;
}
