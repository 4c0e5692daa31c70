/* probe: drives libheare-auth for test_client_c.py. One client on argv[1] ("-": the
 * default socket) with timeout argv[2] ms; each stdin line is one call, a JSON object with
 * any of key, scope, require, user_agent, client_address ("null_key": true passes a NULL
 * key; "plain": true uses heare_auth_verify; {"sleep_ms": N} pauses); each answer is one
 * JSON line on stdout. SIGPIPE
 * keeps its default action, so a library that let one through kills the probe. */
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <heare-auth.h>
#include <jansson.h>

static const char *str(const json_t *o, const char *name)
{
    return json_string_value(json_object_get(o, name));
}

static json_t *nullable(const char *s)
{
    return s ? json_string(s) : json_null();
}

/* Every socket this process holds is close-on-exec. */
static int sockets_cloexec(int *ret_sockets)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int ok = 1, n = 0;

    while (d && (e = readdir(d))) {
        char path[64], target[256];
        int fd = atoi(e->d_name);
        if (e->d_name[0] == '.' || fd == dirfd(d))
            continue;
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        ssize_t k = readlink(path, target, sizeof(target) - 1);
        if (k <= 0)
            continue;
        target[k] = '\0';
        if (strncmp(target, "socket:", 7) != 0)
            continue;
        n++;
        if (!(fcntl(fd, F_GETFD) & FD_CLOEXEC))
            ok = 0;
    }
    if (d)
        closedir(d);
    *ret_sockets = n;
    return ok;
}

int main(int argc, char **argv)
{
    heare_auth *c = NULL;
    char line[70000];

    if (argc != 3)
        return 2;
    int r = heare_auth_open(&c, strcmp(argv[1], "-") == 0 ? NULL : argv[1], atoi(argv[2]));
    printf("{\"open\": %d, \"strerror\": \"%s\"}\n", r, heare_auth_strerror(r));
    fflush(stdout);
    if (r < 0)
        return 0;

    while (fgets(line, sizeof(line), stdin)) {
        json_error_t jerr;
        json_t *in = json_loads(line, 0, &jerr);
        if (!in)
            return 2;
        json_t *out = json_object();
        heare_auth_result res;
        struct timespec t0, t1;

        if (json_is_integer(json_object_get(in, "sleep_ms"))) {
            struct timespec ts = {0, (long)json_integer_value(json_object_get(in, "sleep_ms")) *
                                         1000000L};
            nanosleep(&ts, NULL);
            json_object_set_new(out, "slept", json_true());
        } else if (json_is_true(json_object_get(in, "cloexec"))) {
            int n, ok = sockets_cloexec(&n);
            json_object_set_new(out, "cloexec", json_boolean(ok));
            json_object_set_new(out, "sockets", json_integer(n));
        } else {
            heare_auth_request req = {
                .key = json_is_true(json_object_get(in, "null_key")) ? NULL : str(in, "key"),
                .scope = str(in, "scope"),
                .require = str(in, "require"),
                .user_agent = str(in, "user_agent"),
                .client_address = str(in, "client_address"),
            };
            clock_gettime(CLOCK_MONOTONIC, &t0);
            if (json_is_true(json_object_get(in, "plain")))
                r = heare_auth_verify(c, req.key, req.scope, &res);
            else
                r = heare_auth_verify_request(c, &req, &res);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            json_object_set_new(out, "rc", json_integer(r));
            json_object_set_new(out, "errno", json_string(r < 0 ? strerrorname_np(-r) : ""));
            json_object_set_new(out, "strerror", json_string(heare_auth_strerror(r)));
            json_object_set_new(out, "ms", json_integer((t1.tv_sec - t0.tv_sec) * 1000 +
                                                        (t1.tv_nsec - t0.tv_nsec) / 1000000));
            if (r == 0) {
                json_object_set_new(out, "valid", json_integer(res.valid));
                json_object_set_new(out, "code", json_string(res.code));
                json_object_set_new(out, "key_id", nullable(res.key_id));
                json_object_set_new(out, "name", nullable(res.name));
                json_object_set_new(out, "metadata_json", nullable(res.metadata_json));
                json_object_set_new(out, "expires_at", nullable(res.expires_at));
                json_object_set_new(out, "retry_after_ms", json_integer(res.retry_after_ms));
                if (res.scopes) {
                    json_t *a = json_array();
                    for (const char *const *s = res.scopes; *s; s++)
                        json_array_append_new(a, json_string(*s));
                    json_object_set_new(out, "scopes", a);
                } else {
                    json_object_set_new(out, "scopes", json_null());
                }
            }
        }
        char *s = json_dumps(out, JSON_COMPACT);
        puts(s);
        fflush(stdout);
        free(s);
        json_decref(out);
        json_decref(in);
    }
    heare_auth_close(c);
    return 0;
}
