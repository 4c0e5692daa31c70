/* conf: heare-authd's configuration; every value, from anywhere, checked by conf_set(). */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>

#include "conf.h"
#include "macro.h"
#include "secret.h"
#include "timeutil.h"

/* Longer lines are refused rather than read into memory without bound. */
#define CONF_LINE_MAX 4096
#define SUN_PATH_MAX (sizeof(((struct sockaddr_un *)NULL)->sun_path))

typedef int (*conf_setter)(conf *c, const char *key, const char *value, char **reterr);

static int set_store(conf *c, const char *key, const char *value, char **reterr);
static int set_s3_region(conf *c, const char *key, const char *value, char **reterr);
static int set_s3_endpoint(conf *c, const char *key, const char *value, char **reterr);
static int set_s3_addressing(conf *c, const char *key, const char *value, char **reterr);
static int set_s3_sse(conf *c, const char *key, const char *value, char **reterr);
static int set_poll_interval(conf *c, const char *key, const char *value, char **reterr);
static int set_cache(conf *c, const char *key, const char *value, char **reterr);
static int set_verify_socket(conf *c, const char *key, const char *value, char **reterr);
static int set_admin_socket(conf *c, const char *key, const char *value, char **reterr);
int conf_split_host_port(const char *spec, char **ret_host, char **ret_port)
{
    const char *colon = strrchr(spec, ':');
    if (!colon)
        return -EINVAL;
    bool bracketed = spec[0] == '[' && colon > spec && colon[-1] == ']';
    _cleanup_free_ char *host = bracketed ? strndup(spec + 1, (size_t)(colon - spec - 2))
                                          : strndup(spec, (size_t)(colon - spec));
    char *port = strdup(colon + 1);
    if (!host || !port) {
        free(port);
        return -ENOMEM;
    }
    *ret_host = TAKE_PTR(host);
    *ret_port = port;
    return 0;
}

static int set_http_listen(conf *c, const char *key, const char *value, char **reterr);
static int set_admin_users(conf *c, const char *key, const char *value, char **reterr);
static int set_admin_groups(conf *c, const char *key, const char *value, char **reterr);
static int set_log_format(conf *c, const char *key, const char *value, char **reterr);
static int set_log_level(conf *c, const char *key, const char *value, char **reterr);
static int set_log_verify(conf *c, const char *key, const char *value, char **reterr);
static int set_metrics_url(conf *c, const char *key, const char *value, char **reterr);
static int set_metrics_secret(conf *c, const char *key, const char *value, char **reterr);
static int set_metrics_prefix(conf *c, const char *key, const char *value, char **reterr);
static int set_metrics_interval(conf *c, const char *key, const char *value, char **reterr);
static int set_max_failures(conf *c, const char *key, const char *value, char **reterr);
static int set_idle_timeout(conf *c, const char *key, const char *value, char **reterr);
static int set_message_timeout(conf *c, const char *key, const char *value, char **reterr);
static int set_max_conns_per_uid(conf *c, const char *key, const char *value, char **reterr);
static int set_connection_buffer_max(conf *c, const char *key, const char *value, char **reterr);
static int set_buffers_max(conf *c, const char *key, const char *value, char **reterr);
static int set_threads(conf *c, const char *key, const char *value, char **reterr);

static const conf_key_info keys[] = {
    {"store", "file:///var/lib/heare-auth/keys.json", "HEARE_AUTH_STORE, S3_BUCKET + S3_KEY",
     "where the keys live: file:///PATH, an absolute path, or s3://BUCKET/OBJECT"},
    {"s3-region", "us-east-1", "S3_REGION, AWS_REGION", "S3 region"},
    {"s3-endpoint", "AWS", "S3_ENDPOINT", "S3-compatible endpoint URL"},
    {"s3-addressing", "virtual for AWS, path for a custom endpoint", NULL,
     "S3 addressing: virtual or path"},
    {"s3-sse", "AES256", NULL, "S3 server-side encryption: AES256, aws:kms or none"},
    {"poll-interval", "10s", NULL, "how often the store is re-read"},
    {"cache", "/var/cache/heare-auth/keys.json", NULL,
     "last-known-good copy of the store; empty disables it"},
    {"verify-socket", "/run/heare-auth/verify.sock", NULL, "verify socket path"},
    {"admin-socket", "/run/heare-auth/admin.sock", NULL, "admin socket path"},
    {"http-listen", "off", "HTTP_LISTEN", "HTTP listener: HOST:PORT, [ADDRESS]:PORT or unix:/PATH"},
    {"admin-users", "none", NULL, "users (names or uids) allowed to call the admin interface"},
    {"admin-groups", "none", NULL, "groups (names or gids) allowed to call the admin interface"},
    {"log-format", "auto", NULL, "auto, json or journal"},
    {"log-level", "info", NULL, "err, warning, notice, info or debug"},
    {"log-verify", "auto: summary to the journal, all to stderr", NULL,
     "which verifications are logged: all, failures, summary (counts per key and peer) or none"},
    {"metrics-url", "off", "PROTOCOL + DEST_HOST + DEST_PORT",
     "where metrics are pushed: udp://HOST:PORT or http(s)://..."},
    {"metrics-secret", "none", "SECRET", "bearer token for pushing metrics over HTTP(S)"},
    {"metrics-prefix", "heare-auth", NULL, "prefix of the pushed metric names"},
    {"metrics-interval", "10s", NULL, "how often metrics are pushed"},
    {"max-failures-per-minute", "600", NULL,
     "failed verifies a peer may make per minute before it is throttled"},
    {"idle-timeout", "60s", NULL, "idle connections are closed after this"},
    {"message-timeout", "10s", NULL,
     "a Varlink message not complete this long after its first byte closes the connection"},
    {"max-connections-per-uid", "256", NULL,
     "connections one uid may hold on the verify socket (root and the daemon's user: any)"},
    {"connection-buffer-max", "1MiB", NULL,
     "a connection whose unsent replies and unread calls reach this is not read until they drain"},
    {"buffers-max", "256MiB", NULL,
     "all connections' buffers together; at it, the connections holding the most wait"},
    {"threads", "number of CPUs", NULL, "worker threads, 1 to 256"},
};

/* Setters by the index of keys[]; kept apart so conf_keys() hands out only the public part. */
static const conf_setter setters[] = {
    set_store,
    set_s3_region,
    set_s3_endpoint,
    set_s3_addressing,
    set_s3_sse,
    set_poll_interval,
    set_cache,
    set_verify_socket,
    set_admin_socket,
    set_http_listen,
    set_admin_users,
    set_admin_groups,
    set_log_format,
    set_log_level,
    set_log_verify,
    set_metrics_url,
    set_metrics_secret,
    set_metrics_prefix,
    set_metrics_interval,
    set_max_failures,
    set_idle_timeout,
    set_message_timeout,
    set_max_conns_per_uid,
    set_connection_buffer_max,
    set_buffers_max,
    set_threads,
};

_Static_assert(ELEMENTSOF(keys) == ELEMENTSOF(setters), "one setter per key");

const conf_key_info *conf_keys(size_t *ret_n)
{
    if (ret_n)
        *ret_n = ELEMENTSOF(keys);
    return keys;
}

/* Sets *reterr to "KEY: reason" and returns -EINVAL. */
_printf_(3, 4) static int fail(char **reterr, const char *key, const char *fmt, ...)
{
    _cleanup_free_ char *reason = NULL;
    va_list ap;

    if (!reterr)
        return -EINVAL;
    va_start(ap, fmt);
    int r = vasprintf(&reason, fmt, ap);
    va_end(ap);
    if (r < 0) {
        reason = NULL;
        return -EINVAL;
    }
    if (asprintf(reterr, "%s: %s", key, reason) < 0)
        *reterr = NULL;
    return -EINVAL;
}

/* Replaces *field with a copy of value (NULL for NULL). */
static int replace_str(char **field, const char *value)
{
    char *copy = NULL;

    if (value) {
        copy = strdup(value);
        if (!copy)
            return -ENOMEM;
    }
    free(*field);
    *field = copy;
    return 0;
}

static bool has_space_or_control(const char *s)
{
    for (; *s; s++)
        if (isspace((unsigned char)*s) || iscntrl((unsigned char)*s))
            return true;
    return false;
}

/* An absolute path to a file (not a directory name ending in '/'), without control
 * characters, shorter than max. Returns NULL or the reason it is not. */
static const char *bad_file_path(const char *p, size_t max)
{
    size_t n = strlen(p);

    if (p[0] != '/')
        return "is not an absolute path";
    if (n >= max)
        return "is too long";
    if (p[n - 1] == '/')
        return "names a directory, not a file";
    for (const char *q = p; *q; q++)
        if (iscntrl((unsigned char)*q))
            return "contains a control character";
    return NULL;
}

static int set_store(conf *c, const char *key, const char *value, char **reterr)
{
    _cleanup_free_ char *url = NULL;

    if (strncmp(value, "s3://", 5) == 0) {
        const char *bucket = value + 5, *slash = strchr(bucket, '/');
        if (has_space_or_control(value))
            return fail(reterr, key, "'%s' contains a space or control character", value);
        if (!slash || slash == bucket)
            return fail(reterr, key, "'%s' has no bucket (expected s3://BUCKET/OBJECT)", value);
        if (slash[1] == '\0')
            return fail(reterr, key, "'%s' has no object name (expected s3://BUCKET/OBJECT)",
                        value);
        url = strdup(value);
    } else {
        const char *path = value;
        if (strncmp(value, "file://", 7) == 0)
            path = value + 7;
        else if (value[0] != '/')
            return fail(reterr, key,
                        "'%s' is not file:///PATH, an absolute path or s3://BUCKET/OBJECT", value);
        const char *why = bad_file_path(path, PATH_MAX);
        if (why)
            return fail(reterr, key, "'%s' %s", value, why);
        if (asprintf(&url, "file://%s", path) < 0)
            url = NULL;
    }
    if (!url)
        return -ENOMEM;
    free(c->store);
    c->store = TAKE_PTR(url);
    return 0;
}

static int set_s3_region(conf *c, const char *key, const char *value, char **reterr)
{
    if (!*value)
        return fail(reterr, key, "must not be empty");
    for (const char *p = value; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_')
            return fail(reterr, key, "'%s' is not a region name", value);
    return replace_str(&c->s3_region, value);
}

/* Checks "http://…" or "https://…" with something after the scheme. */
static bool is_http_url(const char *v)
{
    const char *rest;

    if (strncmp(v, "http://", 7) == 0)
        rest = v + 7;
    else if (strncmp(v, "https://", 8) == 0)
        rest = v + 8;
    else
        return false;
    return *rest && *rest != '/' && !has_space_or_control(v);
}

static int set_s3_endpoint(conf *c, const char *key, const char *value, char **reterr)
{
    if (!*value)
        return replace_str(&c->s3_endpoint, NULL);
    if (!is_http_url(value))
        return fail(reterr, key, "'%s' is not an http:// or https:// URL", value);
    return replace_str(&c->s3_endpoint, value);
}

static int set_s3_addressing(conf *c, const char *key, const char *value, char **reterr)
{
    if (!*value)
        return replace_str(&c->s3_addressing, NULL);
    if (strcmp(value, "virtual") != 0 && strcmp(value, "path") != 0)
        return fail(reterr, key, "'%s' is not virtual or path", value);
    return replace_str(&c->s3_addressing, value);
}

static int set_s3_sse(conf *c, const char *key, const char *value, char **reterr)
{
    if (strcmp(value, "AES256") != 0 && strcmp(value, "aws:kms") != 0 && strcmp(value, "none") != 0)
        return fail(reterr, key, "'%s' is not AES256, aws:kms or none", value);
    return replace_str(&c->s3_sse, value);
}

/* A duration of at least one second, in milliseconds. */
static int parse_interval_ms(const char *key, const char *value, int64_t *ret, char **reterr)
{
    int64_t s;

    if (timeutil_parse_duration(value, &s) < 0)
        return fail(reterr, key, "'%s' is not a duration", value);
    if (s < 1)
        return fail(reterr, key, "'%s' is shorter than 1s", value);
    if (s > INT64_MAX / 1000)
        return fail(reterr, key, "'%s' is too long", value);
    *ret = s * 1000;
    return 0;
}

static int set_poll_interval(conf *c, const char *key, const char *value, char **reterr)
{
    return parse_interval_ms(key, value, &c->poll_interval_ms, reterr);
}

static int set_metrics_interval(conf *c, const char *key, const char *value, char **reterr)
{
    return parse_interval_ms(key, value, &c->metrics_interval_ms, reterr);
}

static int set_idle_timeout(conf *c, const char *key, const char *value, char **reterr)
{
    return parse_interval_ms(key, value, &c->idle_timeout_ms, reterr);
}

static int set_message_timeout(conf *c, const char *key, const char *value, char **reterr)
{
    return parse_interval_ms(key, value, &c->message_timeout_ms, reterr);
}

static int set_cache(conf *c, const char *key, const char *value, char **reterr)
{
    const char *why = *value ? bad_file_path(value, PATH_MAX) : NULL;

    if (why)
        return fail(reterr, key, "'%s' %s", value, why);
    return replace_str(&c->cache, value);
}

static int set_socket(char **field, const char *key, const char *value, char **reterr)
{
    const char *why = bad_file_path(value, SUN_PATH_MAX);

    if (why)
        return fail(reterr, key, "'%s' %s (a socket path is absolute and under %zu bytes)", value,
                    why, SUN_PATH_MAX);
    return replace_str(field, value);
}

static int set_verify_socket(conf *c, const char *key, const char *value, char **reterr)
{
    return set_socket(&c->verify_socket, key, value, reterr);
}

static int set_admin_socket(conf *c, const char *key, const char *value, char **reterr)
{
    return set_socket(&c->admin_socket, key, value, reterr);
}

static bool parse_port(const char *s)
{
    unsigned v = 0;

    if (!*s || strlen(s) > 5)
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        v = v * 10 + (unsigned)(*s - '0');
    }
    return v >= 1 && v <= 65535;
}

/* "HOST:PORT" (a name or IPv4 address) or "[IPv6]:PORT". */
static bool is_host_port(const char *v)
{
    if (v[0] == '[') {
        const char *end = strchr(v, ']');
        char addr[INET6_ADDRSTRLEN];
        struct in6_addr a6;
        size_t n;

        if (!end || end[1] != ':')
            return false;
        n = (size_t)(end - v - 1);
        if (n == 0 || n >= sizeof(addr))
            return false;
        memcpy(addr, v + 1, n);
        addr[n] = '\0';
        return inet_pton(AF_INET6, addr, &a6) == 1 && parse_port(end + 2);
    }

    const char *colon = strrchr(v, ':');
    if (!colon || colon == v)
        return false;
    for (const char *p = v; p < colon; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != '_')
            return false;
    return parse_port(colon + 1);
}

static int set_http_listen(conf *c, const char *key, const char *value, char **reterr)
{
    if (!*value)
        return replace_str(&c->http_listen, NULL);
    if (strncmp(value, "unix:", 5) == 0) {
        const char *why = bad_file_path(value + 5, SUN_PATH_MAX);
        if (why)
            return fail(reterr, key, "'%s': the socket path %s", value, why);
    } else if (!is_host_port(value)) {
        return fail(reterr, key, "'%s' is not HOST:PORT, [ADDRESS]:PORT or unix:/PATH", value);
    }
    return replace_str(&c->http_listen, value);
}

/* A decimal id that fits id_t and is not the (id_t)-1 "no id" value. */
static bool parse_numeric_id(const char *s, uint32_t *ret)
{
    uint64_t v = 0;

    if (!*s)
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
        if (v >= UINT32_MAX)
            return false;
    }
    *ret = (uint32_t)v;
    return true;
}

static size_t getxx_r_size(int name)
{
    long n = sysconf(name);
    return n > 0 ? (size_t)n : 16384;
}

/* Resolves a user (is_group false) or group name; -ENOENT if there is none. */
static int lookup_id(const char *name, bool is_group, uint32_t *ret)
{
    size_t size = getxx_r_size(is_group ? _SC_GETGR_R_SIZE_MAX : _SC_GETPW_R_SIZE_MAX);

    for (;;) {
        _cleanup_free_ char *buf = malloc(size);
        int r;

        if (!buf)
            return -ENOMEM;
        if (is_group) {
            struct group gr, *res = NULL;
            r = getgrnam_r(name, &gr, buf, size, &res);
            if (r == 0 && res) {
                *ret = (uint32_t)res->gr_gid;
                return 0;
            }
        } else {
            struct passwd pw, *res = NULL;
            r = getpwnam_r(name, &pw, buf, size, &res);
            if (r == 0 && res) {
                *ret = (uint32_t)res->pw_uid;
                return 0;
            }
        }
        if (r == ERANGE && size < 1024 * 1024) {
            size *= 2;
            continue;
        }
        /* glibc reports "no such entry" as 0 or as one of these, depending on the source. */
        if (r == 0 || r == ENOENT || r == ESRCH || r == EBADF || r == EPERM)
            return -ENOENT;
        return -r;
    }
}

/* Parses a comma- or space-separated list of names or numeric ids into a new array. */
static int parse_id_list(const char *key, const char *value, bool is_group, uint32_t **ret,
                         size_t *ret_n, char **reterr)
{
    _cleanup_free_ char *copy = strdup(value);
    _cleanup_free_ uint32_t *ids = NULL;
    size_t n = 0;
    char *save = NULL;

    if (!copy)
        return -ENOMEM;
    /* Every token is at least one character plus a separator: a safe upper bound. */
    ids = calloc(strlen(value) / 2 + 1, sizeof(*ids));
    if (!ids)
        return -ENOMEM;
    for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
        uint32_t id = 0;
        if (!parse_numeric_id(tok, &id)) {
            if (tok[0] >= '0' && tok[0] <= '9' && strspn(tok, "0123456789") == strlen(tok))
                return fail(reterr, key, "%s id '%s' is out of range", is_group ? "group" : "user",
                            tok);
            int r = lookup_id(tok, is_group, &id);
            if (r == -ENOMEM)
                return r;
            if (r == -ENOENT)
                return fail(reterr, key, "unknown %s '%s'", is_group ? "group" : "user", tok);
            if (r < 0)
                return fail(reterr, key, "cannot look up %s '%s': %s", is_group ? "group" : "user",
                            tok, strerror(-r));
        }
        ids[n++] = id;
    }
    *ret = n > 0 ? TAKE_PTR(ids) : NULL;
    *ret_n = n;
    return 0;
}

static int set_admin_users(conf *c, const char *key, const char *value, char **reterr)
{
    uint32_t *ids;
    size_t n;
    int r;

    _Static_assert(sizeof(uid_t) == sizeof(uint32_t), "uid_t is 32 bits");
    r = parse_id_list(key, value, false, &ids, &n, reterr);
    if (r < 0)
        return r;
    free(c->admin_uids);
    c->admin_uids = (uid_t *)ids;
    c->n_admin_uids = n;
    return 0;
}

static int set_admin_groups(conf *c, const char *key, const char *value, char **reterr)
{
    uint32_t *ids;
    size_t n;
    int r;

    _Static_assert(sizeof(gid_t) == sizeof(uint32_t), "gid_t is 32 bits");
    r = parse_id_list(key, value, true, &ids, &n, reterr);
    if (r < 0)
        return r;
    free(c->admin_gids);
    c->admin_gids = (gid_t *)ids;
    c->n_admin_gids = n;
    return 0;
}

typedef struct name_value {
    const char *name;
    int value;
} name_value;

static const name_value log_formats[] = {
    {"auto", CONF_LOG_AUTO},
    {"json", CONF_LOG_JSON},
    {"journal", CONF_LOG_JOURNAL},
};

/* The first name of a value is the one conf_dump() shows. */
static const name_value log_levels[] = {
    {"err", LOG_ERR},       {"error", LOG_ERR}, {"warning", LOG_WARNING}, {"warn", LOG_WARNING},
    {"notice", LOG_NOTICE}, {"info", LOG_INFO}, {"debug", LOG_DEBUG},
};

static const name_value log_verifies[] = {
    {"auto", CONF_LOG_VERIFY_AUTO},
    {"all", CONF_LOG_VERIFY_ALL},
    {"failures", CONF_LOG_VERIFY_FAILURES},
    {"summary", CONF_LOG_VERIFY_SUMMARY},
    {"none", CONF_LOG_VERIFY_NONE},
};

static bool lookup_name(const name_value *t, size_t n, const char *name, int *ret)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0) {
            *ret = t[i].value;
            return true;
        }
    return false;
}

static const char *name_of(const name_value *t, size_t n, int value)
{
    for (size_t i = 0; i < n; i++)
        if (t[i].value == value)
            return t[i].name;
    return "?";
}

#define LOOKUP_NAME(table, v, ret) lookup_name(table, ELEMENTSOF(table), v, ret)
#define NAME_OF(table, v) name_of(table, ELEMENTSOF(table), (int)(v))

static int set_log_format(conf *c, const char *key, const char *value, char **reterr)
{
    int v;

    if (!LOOKUP_NAME(log_formats, value, &v))
        return fail(reterr, key, "'%s' is not auto, json or journal", value);
    c->log_format = (conf_log_format)v;
    return 0;
}

static int set_log_level(conf *c, const char *key, const char *value, char **reterr)
{
    int v;

    if (!LOOKUP_NAME(log_levels, value, &v))
        return fail(reterr, key, "'%s' is not err, warning, notice, info or debug", value);
    c->log_level = v;
    return 0;
}

static int set_log_verify(conf *c, const char *key, const char *value, char **reterr)
{
    int v;

    if (!LOOKUP_NAME(log_verifies, value, &v))
        return fail(reterr, key, "'%s' is not all, failures, summary, none or auto", value);
    c->log_verify = (conf_log_verify)v;
    return 0;
}

static int set_metrics_url(conf *c, const char *key, const char *value, char **reterr)
{
    if (!*value)
        return replace_str(&c->metrics_url, NULL);
    if (strncmp(value, "udp://", 6) == 0) {
        if (!is_host_port(value + 6))
            return fail(reterr, key, "'%s' is not udp://HOST:PORT", value);
    } else if (!is_http_url(value)) {
        return fail(reterr, key, "'%s' is not udp://HOST:PORT or an http(s):// URL", value);
    }
    return replace_str(&c->metrics_url, value);
}

static int set_metrics_secret(conf *c, const char *key, const char *value, char **reterr)
{
    char *copy = NULL;

    /* Never echo the value: it is a secret. */
    if (*value) {
        copy = strdup(value);
        if (!copy)
            return -ENOMEM;
    }
    erase_and_free(c->metrics_secret);
    c->metrics_secret = copy;
    return 0;
}

static int set_metrics_prefix(conf *c, const char *key, const char *value, char **reterr)
{
    if (!*value)
        return fail(reterr, key, "must not be empty");
    /* ':' '|' '@' and whitespace delimit a StatsD line, so they cannot be in a name. */
    for (const char *p = value; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != '_')
            return fail(reterr, key, "'%s' may hold only letters, digits, '.', '-' and '_'", value);
    return replace_str(&c->metrics_prefix, value);
}

/* A whole number of at most max, in decimal digits only. */
static int parse_whole(const char *key, const char *value, int64_t max, int64_t *ret,
                       char **reterr)
{
    int64_t v = 0;

    if (!*value)
        return fail(reterr, key, "'' is not a whole number");
    for (const char *p = value; *p; p++) {
        if (*p < '0' || *p > '9')
            return fail(reterr, key, "'%s' is not a whole number", value);
        if (v > (max - (*p - '0')) / 10)
            return fail(reterr, key, "'%s' is too large (at most %" PRId64 ")", value, max);
        v = v * 10 + (*p - '0');
    }
    *ret = v;
    return 0;
}

static int set_max_failures(conf *c, const char *key, const char *value, char **reterr)
{
    return parse_whole(key, value, INT64_MAX, &c->max_failures_per_minute, reterr);
}

static int set_max_conns_per_uid(conf *c, const char *key, const char *value, char **reterr)
{
    int64_t v = 0;
    int r = parse_whole(key, value, 1 << 20, &v, reterr);
    if (r < 0)
        return r;
    if (v == 0)
        return fail(reterr, key, "must be at least 1");
    c->max_connections_per_uid = (unsigned)v;
    return 0;
}

/* A size in bytes: whole digits with an optional unit B, KiB, MiB or GiB, from min to max. */
static int parse_size(const char *key, const char *value, uint64_t min, uint64_t max,
                      uint64_t *ret, char **reterr)
{
    static const struct {
        const char *unit;
        unsigned shift;
    } units[] = {{"", 0}, {"B", 0}, {"KiB", 10}, {"MiB", 20}, {"GiB", 30}};
    size_t digits = strspn(value, "0123456789");
    uint64_t v = 0;
    size_t u;

    for (u = 0; u < ELEMENTSOF(units); u++)
        if (strcmp(value + digits, units[u].unit) == 0)
            break;
    if (digits == 0 || digits > 12 || u == ELEMENTSOF(units))
        return fail(reterr, key, "'%s' is not a size (a whole number with B, KiB, MiB or GiB)",
                    value);
    for (size_t i = 0; i < digits; i++)
        v = v * 10 + (uint64_t)(value[i] - '0');
    if (v > max >> units[u].shift || v << units[u].shift > max)
        return fail(reterr, key, "'%s' is too large (at most %" PRIu64 " MiB)", value, max >> 20);
    v <<= units[u].shift;
    if (v < min)
        return fail(reterr, key, "'%s' is too small (at least %" PRIu64 " KiB)", value, min >> 10);
    *ret = v;
    return 0;
}

/* A connection's buffers must hold the largest message and its reply. */
#define CONNECTION_BUFFER_MIN (UINT64_C(128) << 10)
#define BUFFERS_MAX_MAX (UINT64_C(1) << 40)

static int set_connection_buffer_max(conf *c, const char *key, const char *value, char **reterr)
{
    return parse_size(key, value, CONNECTION_BUFFER_MIN, UINT64_C(1) << 30,
                      &c->connection_buffer_max, reterr);
}

static int set_buffers_max(conf *c, const char *key, const char *value, char **reterr)
{
    return parse_size(key, value, CONNECTION_BUFFER_MIN, BUFFERS_MAX_MAX, &c->buffers_max,
                      reterr);
}

static int set_threads(conf *c, const char *key, const char *value, char **reterr)
{
    unsigned v = 0;
    size_t n = strlen(value);

    if (n == 0 || n > 3 || strspn(value, "0123456789") != n)
        return fail(reterr, key, "'%s' is not a number from 1 to 256", value);
    for (const char *p = value; *p; p++)
        v = v * 10 + (unsigned)(*p - '0');
    if (v < 1 || v > 256)
        return fail(reterr, key, "'%s' is not a number from 1 to 256", value);
    c->threads = v;
    return 0;
}

int conf_init(conf *c)
{
    *c = (conf){
        .poll_interval_ms = 10000,
        .log_format = CONF_LOG_AUTO,
        .log_level = LOG_INFO,
        .log_verify = CONF_LOG_VERIFY_AUTO,
        .metrics_interval_ms = 10000,
        .max_failures_per_minute = 600,
        .idle_timeout_ms = 60000,
        .message_timeout_ms = 10000,
        .max_connections_per_uid = 256,
        .connection_buffer_max = UINT64_C(1) << 20,
        .buffers_max = UINT64_C(256) << 20,
        .threads = 0,
    };
    c->store = strdup("file:///var/lib/heare-auth/keys.json");
    c->s3_region = strdup("us-east-1");
    c->s3_sse = strdup("AES256");
    c->cache = strdup("/var/cache/heare-auth/keys.json");
    c->verify_socket = strdup("/run/heare-auth/verify.sock");
    c->admin_socket = strdup("/run/heare-auth/admin.sock");
    c->metrics_prefix = strdup("heare-auth");
    if (!c->store || !c->s3_region || !c->s3_sse || !c->cache || !c->verify_socket ||
        !c->admin_socket || !c->metrics_prefix) {
        conf_done(c);
        return -ENOMEM;
    }
    return 0;
}

void conf_done(conf *c)
{
    if (!c)
        return;
    c->store = mfree(c->store);
    c->s3_region = mfree(c->s3_region);
    c->s3_endpoint = mfree(c->s3_endpoint);
    c->s3_addressing = mfree(c->s3_addressing);
    c->s3_sse = mfree(c->s3_sse);
    c->cache = mfree(c->cache);
    c->verify_socket = mfree(c->verify_socket);
    c->admin_socket = mfree(c->admin_socket);
    c->http_listen = mfree(c->http_listen);
    c->admin_uids = mfree(c->admin_uids);
    c->n_admin_uids = 0;
    c->admin_gids = mfree(c->admin_gids);
    c->n_admin_gids = 0;
    c->metrics_url = mfree(c->metrics_url);
    c->metrics_secret = erase_and_free(c->metrics_secret);
    c->metrics_prefix = mfree(c->metrics_prefix);
}

int conf_set(conf *c, const char *key, const char *value, char **reterr)
{
    if (reterr)
        *reterr = NULL;
    if (!key || !value)
        return -EINVAL;
    for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
        if (strcmp(keys[i].key, key) != 0)
            continue;
        int r = setters[i](c, keys[i].key, value, reterr);
        if (r < 0)
            return r;
        return 0;
    }
    if (reterr && asprintf(reterr, "unknown key '%s'", key) < 0)
        *reterr = NULL;
    return -ENOKEY;
}

static char *trim(char *s)
{
    char *end;

    while (isspace((unsigned char)*s))
        s++;
    end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        end--;
    *end = '\0';
    return s;
}

/* Sets *reterr to "PATH:LINE: " + what and returns r. */
static int fail_line(char **reterr, int r, const char *path, unsigned line, const char *what)
{
    if (reterr && asprintf(reterr, "%s:%u: %s", path, line, what ? what : strerror(-r)) < 0)
        *reterr = NULL;
    return r;
}

int conf_load_file(conf *c, const char *path, bool must_exist, char **reterr)
{
    _cleanup_free_ char *line = NULL;
    size_t cap = 0;
    unsigned lineno = 0;
    struct stat st;
    FILE *f;
    int r = 0;

    if (reterr)
        *reterr = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        r = negative_errno();
        if (r == -ENOENT && !must_exist)
            return 0;
        goto fail_file;
    }
    if (fstat(fd, &st) < 0) {
        r = negative_errno();
        close(fd);
        goto fail_file;
    }
    if (S_ISDIR(st.st_mode)) {
        r = -EISDIR;
        close(fd);
        goto fail_file;
    }
    f = fdopen(fd, "r");
    if (!f) {
        r = negative_errno();
        close(fd);
        goto fail_file;
    }

    for (;;) {
        errno = 0;
        ssize_t n = getline(&line, &cap, f);
        if (n < 0) {
            if (ferror(f)) {
                r = errno > 0 ? -errno : -EIO;
                fclose(f);
                goto fail_file;
            }
            break;
        }
        lineno++;
        if (n > CONF_LINE_MAX) {
            r = fail_line(reterr, -EINVAL, path, lineno, "line too long");
            break;
        }
        if (strlen(line) != (size_t)n) {
            r = fail_line(reterr, -EINVAL, path, lineno, "line contains a NUL byte");
            break;
        }

        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq || eq == s) {
            r = fail_line(reterr, -EINVAL, path, lineno, "expected 'key = value'");
            break;
        }
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        if (*key == '\0') {
            r = fail_line(reterr, -EINVAL, path, lineno, "expected 'key = value'");
            break;
        }

        _cleanup_free_ char *err = NULL;
        r = conf_set(c, key, value, &err);
        if (r < 0) {
            fail_line(reterr, r, path, lineno, err);
            break;
        }
    }
    fclose(f);
    return r;

fail_file:
    if (reterr && asprintf(reterr, "%s: %s", path, strerror(-r)) < 0)
        *reterr = NULL;
    return r;
}

/* Empty counts as unset, so "VAR=" in a unit file cannot set a key to nothing by accident. */
static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static int set_from_env(conf *c, const char *var, const char *key, const char *value, char **reterr)
{
    _cleanup_free_ char *err = NULL;
    int r = conf_set(c, key, value, &err);

    if (r < 0 && reterr &&
        asprintf(reterr, "environment %s: %s", var, err ? err : strerror(-r)) < 0)
        *reterr = NULL;
    return r;
}

int conf_load_env(conf *c, char **reterr)
{
    const char *v;
    int r;

    if (reterr)
        *reterr = NULL;

    if ((v = env("HEARE_AUTH_STORE"))) {
        r = set_from_env(c, "HEARE_AUTH_STORE", "store", v, reterr);
        if (r < 0)
            return r;
    } else if ((v = env("S3_BUCKET"))) {
        const char *object = env("S3_KEY") ?: "keys.json";
        _cleanup_free_ char *url = NULL;
        if (asprintf(&url, "s3://%s/%s", v, object) < 0) {
            url = NULL;
            return -ENOMEM;
        }
        r = set_from_env(c, "S3_BUCKET", "store", url, reterr);
        if (r < 0)
            return r;
    }

    static const struct {
        const char *var;
        const char *key;
    } simple[] = {
        /* S3_REGION comes after AWS_REGION so that it wins. */
        {"AWS_REGION", "s3-region"},    {"S3_REGION", "s3-region"},
        {"S3_ENDPOINT", "s3-endpoint"}, {"HTTP_LISTEN", "http-listen"},
        {"SECRET", "metrics-secret"},
    };
    for (size_t i = 0; i < ELEMENTSOF(simple); i++) {
        if (!(v = env(simple[i].var)))
            continue;
        r = set_from_env(c, simple[i].var, simple[i].key, v, reterr);
        if (r < 0)
            return r;
    }

    const char *proto = env("PROTOCOL"), *host = env("DEST_HOST"), *port = env("DEST_PORT");
    if (proto || host || port) {
        if (!proto || !host || !port) {
            char missing[64] = "";
            const char *names[] = {proto ? NULL : "PROTOCOL", host ? NULL : "DEST_HOST",
                                   port ? NULL : "DEST_PORT"};
            for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                if (!names[i])
                    continue;
                if (missing[0])
                    strcat(missing, ", ");
                strcat(missing, names[i]);
            }
            if (reterr && asprintf(reterr,
                                   "environment %s: not set (PROTOCOL, DEST_HOST and DEST_PORT "
                                   "are needed together)",
                                   missing) < 0)
                *reterr = NULL;
            return -EINVAL;
        }
        if (strcmp(proto, "udp") != 0 && strcmp(proto, "http") != 0 &&
            strcmp(proto, "https") != 0) {
            if (reterr &&
                asprintf(reterr, "environment PROTOCOL: '%s' is not udp, http or https", proto) < 0)
                *reterr = NULL;
            return -EINVAL;
        }
        _cleanup_free_ char *url = NULL;
        /* A bare IPv6 address needs brackets before the port. */
        bool v6 = strchr(host, ':') && host[0] != '[';
        if (asprintf(&url, "%s://%s%s%s:%s", proto, v6 ? "[" : "", host, v6 ? "]" : "", port) < 0) {
            url = NULL;
            return -ENOMEM;
        }
        r = set_from_env(c, "PROTOCOL", "metrics-url", url, reterr);
        if (r < 0)
            return r;
    }
    return 0;
}

static int dump_duration(FILE *f, int64_t ms)
{
    return fprintf(f, "%" PRId64 "s", ms / 1000);
}

/* In the largest unit that divides it, as parse_size() reads it. */
static void dump_size(FILE *f, uint64_t v)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB"};
    size_t u = 0;
    while (u + 1 < ELEMENTSOF(units) && v != 0 && v % 1024 == 0) {
        v /= 1024;
        u++;
    }
    fprintf(f, "%" PRIu64 "%s", v, units[u]);
}

static void dump_ids(FILE *f, const uint32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s%" PRIu32, i ? " " : "", ids[i]);
}

/* Writes the effective value of keys[i] to f. */
static void dump_value(FILE *f, const conf *c, size_t i)
{
    const char *k = keys[i].key;

    if (strcmp(k, "store") == 0)
        fputs(c->store ?: "", f);
    else if (strcmp(k, "s3-region") == 0)
        fputs(c->s3_region ?: "", f);
    else if (strcmp(k, "s3-endpoint") == 0)
        fputs(c->s3_endpoint ?: "", f);
    else if (strcmp(k, "s3-addressing") == 0)
        fputs(c->s3_addressing ?: (c->s3_endpoint ? "path" : "virtual"), f);
    else if (strcmp(k, "s3-sse") == 0)
        fputs(c->s3_sse ?: "", f);
    else if (strcmp(k, "poll-interval") == 0)
        dump_duration(f, c->poll_interval_ms);
    else if (strcmp(k, "cache") == 0)
        fputs(c->cache ?: "", f);
    else if (strcmp(k, "verify-socket") == 0)
        fputs(c->verify_socket ?: "", f);
    else if (strcmp(k, "admin-socket") == 0)
        fputs(c->admin_socket ?: "", f);
    else if (strcmp(k, "http-listen") == 0)
        fputs(c->http_listen ?: "", f);
    else if (strcmp(k, "admin-users") == 0)
        dump_ids(f, (const uint32_t *)c->admin_uids, c->n_admin_uids);
    else if (strcmp(k, "admin-groups") == 0)
        dump_ids(f, (const uint32_t *)c->admin_gids, c->n_admin_gids);
    else if (strcmp(k, "log-format") == 0)
        fputs(NAME_OF(log_formats, c->log_format), f);
    else if (strcmp(k, "log-level") == 0)
        fputs(NAME_OF(log_levels, c->log_level), f);
    else if (strcmp(k, "log-verify") == 0)
        fputs(NAME_OF(log_verifies, c->log_verify), f);
    else if (strcmp(k, "metrics-url") == 0)
        fputs(c->metrics_url ?: "", f);
    else if (strcmp(k, "metrics-secret") == 0)
        fputs(c->metrics_secret ? "(set)" : "", f);
    else if (strcmp(k, "metrics-prefix") == 0)
        fputs(c->metrics_prefix ?: "", f);
    else if (strcmp(k, "metrics-interval") == 0)
        dump_duration(f, c->metrics_interval_ms);
    else if (strcmp(k, "max-failures-per-minute") == 0)
        fprintf(f, "%" PRId64, c->max_failures_per_minute);
    else if (strcmp(k, "idle-timeout") == 0)
        dump_duration(f, c->idle_timeout_ms);
    else if (strcmp(k, "message-timeout") == 0)
        dump_duration(f, c->message_timeout_ms);
    else if (strcmp(k, "max-connections-per-uid") == 0)
        fprintf(f, "%u", c->max_connections_per_uid);
    else if (strcmp(k, "connection-buffer-max") == 0)
        dump_size(f, c->connection_buffer_max);
    else if (strcmp(k, "buffers-max") == 0)
        dump_size(f, c->buffers_max);
    else if (strcmp(k, "threads") == 0)
        fprintf(f, "%u", c->threads);
}

int conf_check(const conf *c, char **reterr)
{
    if (c->buffers_max < c->connection_buffer_max)
        return fail(reterr, "buffers-max",
                    "%" PRIu64 " bytes is less than connection-buffer-max (%" PRIu64 ")",
                    c->buffers_max, c->connection_buffer_max);
    return 0;
}

char *conf_dump(const conf *c)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);

    if (!f)
        return NULL;
    for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
        _cleanup_free_ char *value = NULL;
        size_t vsize = 0;
        FILE *vf = open_memstream(&value, &vsize);
        if (!vf) {
            fclose(f);
            free(buf);
            return NULL;
        }
        dump_value(vf, c, i);
        if (fclose(vf) != 0) {
            fclose(f);
            free(buf);
            return NULL;
        }
        /* No trailing space after '=' when the value is empty. */
        fprintf(f, "%s =%s%s\n", keys[i].key, vsize > 0 ? " " : "", value);
    }
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}
