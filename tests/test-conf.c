/* test-conf: defaults, bad values per key, config files, environment, dump. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "check.h"
#include "conf.h"
#include "macro.h"

static void conf_donep(conf *c)
{
    conf_done(c);
}
#define _cleanup_conf_ _cleanup_(conf_donep)

static size_t key_index(const char *key)
{
    size_t n;
    const conf_key_info *k = conf_keys(&n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(k[i].key, key) == 0)
            return i;
    fprintf(stderr, "no key %s\n", key);
    exit(1);
}

static void test_keys_table(void)
{
    static const char *const order[] = {
        "store",
        "s3-region",
        "s3-endpoint",
        "s3-addressing",
        "s3-sse",
        "poll-interval",
        "cache",
        "verify-socket",
        "admin-socket",
        "http-listen",
        "admin-users",
        "admin-groups",
        "log-format",
        "log-level",
        "log-verify",
        "metrics-url",
        "metrics-secret",
        "metrics-prefix",
        "metrics-interval",
        "max-failures-per-minute",
        "idle-timeout",
        "message-timeout",
        "max-connections-per-uid",
        "connection-buffer-max",
        "buffers-max",
        "threads",
    };
    size_t n;
    const conf_key_info *k = conf_keys(&n);

    CHECK_INT(n, ELEMENTSOF(order));
    for (size_t i = 0; i < n; i++) {
        CHECK_STR(k[i].key, order[i]);
        CHECK(k[i].default_str && k[i].help);
    }
    CHECK_STR(k[key_index("poll-interval")].default_str, "10s");
    CHECK(check_contains(k[key_index("store")].env, "HEARE_AUTH_STORE"));
    CHECK(check_contains(k[key_index("http-listen")].env, "HTTP_LISTEN"));
}

static void test_defaults(void)
{
    _cleanup_conf_ conf c;

    CHECK_INT(conf_init(&c), 0);
    CHECK_STR(c.store, "file:///var/lib/heare-auth/keys.json");
    CHECK_STR(c.s3_region, "us-east-1");
    CHECK(c.s3_endpoint == NULL);
    CHECK(c.s3_addressing == NULL);
    CHECK_STR(c.s3_sse, "AES256");
    CHECK_INT(c.poll_interval_ms, 10000);
    CHECK_STR(c.cache, "/var/cache/heare-auth/keys.json");
    CHECK_STR(c.verify_socket, "/run/heare-auth/verify.sock");
    CHECK_STR(c.admin_socket, "/run/heare-auth/admin.sock");
    CHECK(c.http_listen == NULL);
    CHECK_INT(c.n_admin_uids, 0);
    CHECK_INT(c.n_admin_gids, 0);
    CHECK_INT(c.log_format, CONF_LOG_AUTO);
    CHECK_INT(c.log_level, LOG_INFO);
    CHECK_INT(c.log_verify, CONF_LOG_VERIFY_AUTO);
    CHECK(c.metrics_url == NULL);
    CHECK(c.metrics_secret == NULL);
    CHECK_STR(c.metrics_prefix, "heare-auth");
    CHECK_INT(c.metrics_interval_ms, 10000);
    CHECK_INT(c.max_failures_per_minute, 600);
    CHECK_INT(c.idle_timeout_ms, 60000);
    CHECK_INT(c.message_timeout_ms, 10000);
    CHECK_INT(c.max_connections_per_uid, 256);
    CHECK_INT(c.threads, 0);

    /* conf_done may run twice (half-built or already done). */
    conf_done(&c);
    conf_done(&c);
}

static void test_good_values(void)
{
    _cleanup_conf_ conf c;
    _cleanup_free_ char *err = NULL;

    CHECK_INT(conf_init(&c), 0);
#define SET_OK(k, v)                                                                               \
    do {                                                                                           \
        err = mfree(err);                                                                          \
        int _r = conf_set(&c, k, v, &err);                                                         \
        if (_r != 0) {                                                                             \
            fprintf(stderr, "%s = '%s': %d %s\n", k, v, _r, err ? err : "");                       \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

    SET_OK("store", "/srv/keys.json");
    CHECK_STR(c.store, "file:///srv/keys.json");
    SET_OK("store", "file:///srv/k.json");
    CHECK_STR(c.store, "file:///srv/k.json");
    SET_OK("store", "s3://my-bucket/path/to/keys.json");
    CHECK_STR(c.store, "s3://my-bucket/path/to/keys.json");
    SET_OK("poll-interval", "1s");
    CHECK_INT(c.poll_interval_ms, 1000);
    SET_OK("poll-interval", "5m");
    CHECK_INT(c.poll_interval_ms, 300000);
    SET_OK("poll-interval", "30");
    CHECK_INT(c.poll_interval_ms, 30000);
    SET_OK("idle-timeout", "2h");
    CHECK_INT(c.idle_timeout_ms, 7200000);
    SET_OK("message-timeout", "1s");
    CHECK_INT(c.message_timeout_ms, 1000);
    SET_OK("cache", "");
    CHECK_STR(c.cache, "");
    SET_OK("cache", "/tmp/cache.json");
    CHECK_STR(c.cache, "/tmp/cache.json");
    SET_OK("verify-socket", "/tmp/v.sock");
    CHECK_STR(c.verify_socket, "/tmp/v.sock");
    SET_OK("admin-socket", "/tmp/a.sock");
    CHECK_STR(c.admin_socket, "/tmp/a.sock");
    SET_OK("log-level", "debug");
    CHECK_INT(c.log_level, LOG_DEBUG);
    SET_OK("log-level", "warn");
    CHECK_INT(c.log_level, LOG_WARNING);
    SET_OK("log-level", "warning");
    CHECK_INT(c.log_level, LOG_WARNING);
    SET_OK("log-level", "error");
    CHECK_INT(c.log_level, LOG_ERR);
    SET_OK("log-level", "err");
    CHECK_INT(c.log_level, LOG_ERR);
    SET_OK("log-level", "notice");
    CHECK_INT(c.log_level, LOG_NOTICE);
    SET_OK("log-level", "info");
    CHECK_INT(c.log_level, LOG_INFO);
    SET_OK("log-format", "journal");
    CHECK_INT(c.log_format, CONF_LOG_JOURNAL);
    SET_OK("log-format", "json");
    CHECK_INT(c.log_format, CONF_LOG_JSON);
    SET_OK("log-verify", "failures");
    CHECK_INT(c.log_verify, CONF_LOG_VERIFY_FAILURES);
    SET_OK("log-verify", "summary");
    CHECK_INT(c.log_verify, CONF_LOG_VERIFY_SUMMARY);
    SET_OK("log-verify", "auto");
    CHECK_INT(c.log_verify, CONF_LOG_VERIFY_AUTO);
    SET_OK("log-verify", "none");
    CHECK_INT(c.log_verify, CONF_LOG_VERIFY_NONE);
    SET_OK("threads", "1");
    CHECK_INT(c.threads, 1);
    SET_OK("threads", "256");
    CHECK_INT(c.threads, 256);
    SET_OK("admin-users", "root, 1000 daemon,bin");
    CHECK_INT(c.n_admin_uids, 4);
    CHECK_INT(c.admin_uids[0], 0);
    CHECK_INT(c.admin_uids[1], 1000);
    CHECK_INT(c.admin_uids[2], 1);
    CHECK_INT(c.admin_uids[3], 2);
    SET_OK("admin-users", "");
    CHECK_INT(c.n_admin_uids, 0);
    SET_OK("admin-groups", "root 4242");
    CHECK_INT(c.n_admin_gids, 2);
    CHECK_INT(c.admin_gids[0], 0);
    CHECK_INT(c.admin_gids[1], 4242);

    SET_OK("metrics-interval", "1w");
    CHECK_INT(c.metrics_interval_ms, 604800000);

    SET_OK("max-failures-per-minute", "0");
    CHECK_INT(c.max_failures_per_minute, 0);
    SET_OK("max-connections-per-uid", "1048576");
    CHECK_INT(c.max_connections_per_uid, 1048576);
    SET_OK("connection-buffer-max", "256KiB");
    CHECK_INT(c.connection_buffer_max, 256 * 1024);
    SET_OK("connection-buffer-max", "2097152");
    CHECK_INT(c.connection_buffer_max, 2 * 1024 * 1024);
    SET_OK("buffers-max", "1GiB");
    CHECK_INT(c.buffers_max, UINT64_C(1) << 30);
    SET_OK("buffers-max", "300MiB");
    CHECK_INT(c.buffers_max, UINT64_C(300) << 20);
    SET_OK("http-listen", "127.0.0.1:8080");
    CHECK_STR(c.http_listen, "127.0.0.1:8080");
    SET_OK("http-listen", "localhost:80");
    SET_OK("http-listen", "[::1]:8080");
    SET_OK("http-listen", "unix:/run/heare-auth/http.sock");
    SET_OK("metrics-url", "udp://localhost:8125");
    SET_OK("metrics-url", "udp://[::1]:8125");
    SET_OK("metrics-url", "https://metrics.example.com/ingest");
    CHECK_STR(c.metrics_url, "https://metrics.example.com/ingest");
    SET_OK("s3-addressing", "path");
    SET_OK("s3-sse", "aws:kms");
    SET_OK("s3-sse", "none");
    SET_OK("s3-endpoint", "http://127.0.0.1:9000");
    SET_OK("s3-region", "eu-west-2");
    SET_OK("metrics-prefix", "auth.prod");
    SET_OK("metrics-secret", "s3cr3t value");
    CHECK_STR(c.metrics_secret, "s3cr3t value");
#undef SET_OK
}

static void test_bad_values(void)
{
    static const struct {
        const char *key;
        const char *value;
        int r;
        const char *msg;
    } bad[] = {
        {"nonsense", "1", -ENOKEY, "unknown key 'nonsense'"},
        {"Store", "/x", -ENOKEY, "unknown key"},
        {"store", "relative/keys.json", -EINVAL, "store: 'relative/keys.json' is not file:///PATH"},
        {"store", "", -EINVAL, "store: '' is not"},
        {"store", "file://relative", -EINVAL, "is not an absolute path"},
        {"store", "file:///", -EINVAL, "names a directory"},
        {"store", "/var/lib/", -EINVAL, "names a directory"},
        {"store", "http://x/keys.json", -EINVAL, "is not file:///PATH"},
        {"store", "s3://", -EINVAL, "has no bucket"},
        {"store", "s3:///keys.json", -EINVAL, "has no bucket"},
        {"store", "s3://bucket", -EINVAL, "has no bucket"},
        {"store", "s3://bucket/", -EINVAL, "has no object name"},
        {"store", "s3://buck et/k", -EINVAL, "space"},
        {"s3-region", "", -EINVAL, "s3-region: must not be empty"},
        {"s3-region", "us east", -EINVAL, "is not a region name"},
        {"s3-endpoint", "minio:9000", -EINVAL, "s3-endpoint: 'minio:9000' is not an http://"},
        {"s3-endpoint", "https://", -EINVAL, "is not an http://"},
        {"s3-addressing", "host", -EINVAL, "s3-addressing: 'host' is not virtual or path"},
        {"s3-sse", "aes256", -EINVAL, "s3-sse: 'aes256' is not AES256, aws:kms or none"},
        {"poll-interval", "abc", -EINVAL, "poll-interval: 'abc' is not a duration"},
        {"poll-interval", "", -EINVAL, "poll-interval: '' is not a duration"},
        {"poll-interval", "0", -EINVAL, "poll-interval: '0' is shorter than 1s"},
        {"poll-interval", "0s", -EINVAL, "shorter than 1s"},
        {"poll-interval", "-5s", -EINVAL, "is not a duration"},
        {"poll-interval", "1.5s", -EINVAL, "is not a duration"},
        {"poll-interval", "9223372036854775807s", -EINVAL, "is too long"},
        {"idle-timeout", "0", -EINVAL, "idle-timeout: '0' is shorter than 1s"},
        {"idle-timeout", "10x", -EINVAL, "idle-timeout: '10x' is not a duration"},
        {"message-timeout", "0s", -EINVAL, "message-timeout: '0s' is shorter than 1s"},
        {"message-timeout", "soon", -EINVAL, "message-timeout: 'soon' is not a duration"},
        {"metrics-interval", "0m", -EINVAL, "metrics-interval: '0m' is shorter than 1s"},
        {"cache", "cache.json", -EINVAL, "cache: 'cache.json' is not an absolute path"},
        {"cache", "/var/cache/", -EINVAL, "names a directory"},
        {"verify-socket", "v.sock", -EINVAL, "verify-socket: 'v.sock' is not an absolute path"},
        {"verify-socket", "", -EINVAL, "is not an absolute path"},
        {"admin-socket",
         "/run/heare-auth/"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaa.sock",
         -EINVAL, "is too long"},
        {"http-listen", "8080", -EINVAL, "http-listen: '8080' is not HOST:PORT"},
        {"http-listen", ":8080", -EINVAL, "is not HOST:PORT"},
        {"http-listen", "localhost:", -EINVAL, "is not HOST:PORT"},
        {"http-listen", "localhost:0", -EINVAL, "is not HOST:PORT"},
        {"http-listen", "localhost:65536", -EINVAL, "is not HOST:PORT"},
        {"http-listen", "localhost:http", -EINVAL, "is not HOST:PORT"},
        {"http-listen", "::1:8080", -EINVAL, "is not HOST:PORT"},
        {"http-listen", "[::1]8080", -EINVAL, "is not HOST:PORT"},
        {"http-listen", "[nothex]:8080", -EINVAL, "is not HOST:PORT"},
        {"http-listen", "[]:8080", -EINVAL, "is not HOST:PORT"},
        {"http-listen", "unix:relative.sock", -EINVAL, "is not an absolute path"},
        {"admin-users", "no-such-user-h1test", -EINVAL,
         "admin-users: unknown user 'no-such-user-h1test'"},
        {"admin-users", "root, no-such-user-h1test", -EINVAL, "unknown user 'no-such-user-h1test'"},
        {"admin-users", "99999999999", -EINVAL, "user id '99999999999' is out of range"},
        {"admin-users", "4294967295", -EINVAL, "out of range"},
        {"admin-groups", "no-such-group-h1test", -EINVAL,
         "admin-groups: unknown group 'no-such-group-h1test'"},
        {"log-format", "text", -EINVAL, "log-format: 'text' is not auto, json or journal"},
        {"log-level", "verbose", -EINVAL, "log-level: 'verbose' is not err, warning"},
        {"log-level", "INFO", -EINVAL, "log-level: 'INFO' is not"},
        {"log-verify", "some", -EINVAL,
         "log-verify: 'some' is not all, failures, summary, none or auto"},
        {"metrics-url", "statsd:8125", -EINVAL, "metrics-url: 'statsd:8125' is not udp://"},
        {"metrics-url", "udp://statsd", -EINVAL, "is not udp://HOST:PORT"},
        {"metrics-url", "udp://statsd:notaport", -EINVAL, "is not udp://HOST:PORT"},
        {"metrics-url", "tcp://statsd:8125", -EINVAL, "is not udp://HOST:PORT or an http(s)"},
        {"metrics-prefix", "", -EINVAL, "metrics-prefix: must not be empty"},
        {"metrics-prefix", "a:b", -EINVAL, "may hold only"},
        {"max-failures-per-minute", "-1", -EINVAL,
         "max-failures-per-minute: '-1' is not a whole number"},
        {"max-failures-per-minute", "1e3", -EINVAL, "is not a whole number"},
        {"max-failures-per-minute", "", -EINVAL, "is not a whole number"},
        {"max-failures-per-minute", "99999999999999999999", -EINVAL, "is too large"},
        {"max-connections-per-uid", "0", -EINVAL, "max-connections-per-uid: must be at least 1"},
        {"max-connections-per-uid", "2097152", -EINVAL, "is too large (at most 1048576)"},
        {"max-connections-per-uid", "1k", -EINVAL, "'1k' is not a whole number"},
        {"connection-buffer-max", "64KiB", -EINVAL, "'64KiB' is too small (at least 128 KiB)"},
        {"connection-buffer-max", "2GiB", -EINVAL, "'2GiB' is too large (at most 1024 MiB)"},
        {"connection-buffer-max", "1MB", -EINVAL, "'1MB' is not a size"},
        {"connection-buffer-max", "MiB", -EINVAL, "'MiB' is not a size"},
        {"connection-buffer-max", "-1MiB", -EINVAL, "'-1MiB' is not a size"},
        {"buffers-max", "99999999999999", -EINVAL, "is not a size"},
        {"buffers-max", "2000GiB", -EINVAL, "'2000GiB' is too large (at most 1048576 MiB)"},
        {"buffers-max", "1 MiB", -EINVAL, "'1 MiB' is not a size"},
        {"threads", "0", -EINVAL, "threads: '0' is not a number from 1 to 256"},
        {"threads", "257", -EINVAL, "threads: '257' is not a number from 1 to 256"},
        {"threads", "-1", -EINVAL, "is not a number from 1 to 256"},
        {"threads", "four", -EINVAL, "is not a number from 1 to 256"},
        {"threads", "", -EINVAL, "is not a number from 1 to 256"},
        {"threads", "00000000000004", -EINVAL, "is not a number from 1 to 256"},
    };

    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        _cleanup_conf_ conf c;
        _cleanup_free_ char *err = NULL;
        CHECK_INT(conf_init(&c), 0);
        _cleanup_free_ char *before = conf_dump(&c);
        int r = conf_set(&c, bad[i].key, bad[i].value, &err);
        if (r != bad[i].r || !check_contains(err, bad[i].msg)) {
            fprintf(stderr, "%s = '%s': r=%d err='%s', expected %d '%s'\n", bad[i].key,
                    bad[i].value, r, err ? err : "(null)", bad[i].r, bad[i].msg);
            exit(1);
        }
        /* A refused value changes nothing. */
        _cleanup_free_ char *after = conf_dump(&c);
        CHECK_STR(after, before);
    }
}

static char tmpdir[] = "/tmp/test-conf-XXXXXX";

static char *write_file(const char *name, const char *content)
{
    char *path;
    CHECK(asprintf(&path, "%s/%s", tmpdir, name) > 0);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs(content, f);
    CHECK_INT(fclose(f), 0);
    return path;
}

static void test_file_good(void)
{
    _cleanup_conf_ conf c;
    _cleanup_free_ char *err = NULL;
    _cleanup_free_ char *path = write_file("good.conf", "# heare-authd configuration\n"
                                                        "\n"
                                                        "   # indented comment\n"
                                                        "store = /srv/heare/keys.json\n"
                                                        "poll-interval=30s\n"
                                                        "\tlog-level   =   debug   \n"
                                                        "cache =\n"
                                                        "metrics-secret = abc#def\n"
                                                        "admin-users = root, daemon\r\n"
                                                        "threads = 4\n"
                                                        "threads = 8\n"
                                                        "  \t  \n"
                                                        "idle-timeout = 5m");

    CHECK_INT(conf_init(&c), 0);
    CHECK_INT(conf_load_file(&c, path, true, &err), 0);
    CHECK(err == NULL);
    CHECK_STR(c.store, "file:///srv/heare/keys.json");
    CHECK_INT(c.poll_interval_ms, 30000);
    CHECK_INT(c.log_level, LOG_DEBUG);
    CHECK_STR(c.cache, "");
    CHECK_STR(c.metrics_secret, "abc#def"); /* '#' in a value is not a comment */
    CHECK_INT(c.n_admin_uids, 2);
    CHECK_INT(c.admin_uids[1], 1);
    CHECK_INT(c.threads, 8); /* the last one wins */
    CHECK_INT(c.idle_timeout_ms, 300000);
    unlink(path);

    /* A missing file is fine unless it must exist. */
    _cleanup_free_ char *missing = NULL;
    CHECK(asprintf(&missing, "%s/missing.conf", tmpdir) > 0);
    CHECK_INT(conf_load_file(&c, missing, false, &err), 0);
    CHECK(err == NULL);
    CHECK_INT(conf_load_file(&c, missing, true, &err), -ENOENT);
    CHECK(check_contains(err, missing));
    CHECK(check_contains(err, "No such file"));

    /* An empty file sets nothing. */
    _cleanup_free_ char *empty = write_file("empty.conf", "");
    err = mfree(err);
    CHECK_INT(conf_load_file(&c, empty, true, &err), 0);
    unlink(empty);
}

static void test_file_bad(void)
{
/* A literal and its length, NUL bytes included. */
#define C(s) s, sizeof(s) - 1
    static const struct {
        const char *content;
        size_t len;
        int r;
        const char *msg; /* after "PATH:" */
    } bad[] = {
        {C("store = /x\nfoo = 1\n"), -ENOKEY, ":2: unknown key 'foo'"},
        {C("# c\n\npoll-interval = abc\n"), -EINVAL, ":3: poll-interval: 'abc' is not a duration"},
        {C("poll-interval 10s\n"), -EINVAL, ":1: expected 'key = value'"},
        {C("log-level = debug\n= value\n"), -EINVAL, ":2: expected 'key = value'"},
        {C("  = \n"), -EINVAL, ":1: expected 'key = value'"},
        {C("threads = 0\n"), -EINVAL, ":1: threads: '0' is not a number from 1 to 256"},
        {C("store = \"/x\"\n"), -EINVAL, ":1: store: '\"/x\"' is not"},
        {C("admin-groups = nope-h1-group\n"), -EINVAL, ":1: admin-groups: unknown group"},
        {C("log-level = info # trailing\n"), -EINVAL, ":1: log-level: 'info # trailing'"},
        {C("a\0b = c\n"), -EINVAL, ":1: line contains a NUL byte"},
    };
#undef C

    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        _cleanup_conf_ conf c;
        _cleanup_free_ char *err = NULL, *want = NULL;
        _cleanup_free_ char *path = NULL;
        CHECK(asprintf(&path, "%s/bad%zu.conf", tmpdir, i) > 0);
        FILE *f = fopen(path, "w");
        CHECK(f != NULL);
        CHECK_INT(fwrite(bad[i].content, 1, bad[i].len, f), bad[i].len);
        CHECK_INT(fclose(f), 0);

        CHECK_INT(conf_init(&c), 0);
        int r = conf_load_file(&c, path, true, &err);
        CHECK(asprintf(&want, "%s%s", path, bad[i].msg) > 0);
        if (r != bad[i].r || !check_contains(err, want)) {
            fprintf(stderr, "file %zu: r=%d err='%s', expected %d '%s'\n", i, r,
                    err ? err : "(null)", bad[i].r, want);
            exit(1);
        }
        unlink(path);
    }

    /* A line longer than the limit. */
    {
        _cleanup_conf_ conf c;
        _cleanup_free_ char *err = NULL, *content = malloc(10000);
        CHECK(content != NULL);
        memset(content, 'a', 9998);
        memcpy(content, "store = /", 9);
        content[9998] = '\n';
        content[9999] = '\0';
        _cleanup_free_ char *path = write_file("long.conf", content);
        CHECK_INT(conf_init(&c), 0);
        CHECK_INT(conf_load_file(&c, path, true, &err), -EINVAL);
        CHECK(check_contains(err, ":1: line too long"));
        unlink(path);
    }

    /* A directory, and a path that cannot be opened, are errors naming the file. */
    {
        _cleanup_conf_ conf c;
        _cleanup_free_ char *err = NULL, *notdir = NULL, *file = NULL;
        CHECK_INT(conf_init(&c), 0);
        CHECK_INT(conf_load_file(&c, tmpdir, true, &err), -EISDIR);
        CHECK(check_contains(err, tmpdir));
        CHECK(check_contains(err, "Is a directory"));
        err = mfree(err);
        CHECK_INT(conf_load_file(&c, tmpdir, false, &err), -EISDIR);
        err = mfree(err);

        file = write_file("plain", "store = /x\n");
        CHECK(asprintf(&notdir, "%s/sub.conf", file) > 0);
        CHECK_INT(conf_load_file(&c, notdir, false, &err), -ENOTDIR);
        CHECK(check_contains(err, notdir));
        err = mfree(err);

        if (geteuid() != 0) {
            CHECK_INT(chmod(file, 0), 0);
            CHECK_INT(conf_load_file(&c, file, false, &err), -EACCES);
            CHECK(check_contains(err, file));
        }
        unlink(file);
    }
}

static const char *const env_vars[] = {
    "HEARE_AUTH_STORE", "S3_BUCKET", "S3_KEY",    "S3_REGION", "AWS_REGION", "S3_ENDPOINT",
    "HTTP_LISTEN",      "PROTOCOL",  "DEST_HOST", "DEST_PORT", "SECRET",
};

static void clear_env(void)
{
    for (size_t i = 0; i < ELEMENTSOF(env_vars); i++)
        unsetenv(env_vars[i]);
}

static void test_env(void)
{
    clear_env();
    {
        /* Nothing set: nothing changes. */
        _cleanup_conf_ conf c;
        _cleanup_free_ char *err = NULL, *before = NULL, *after = NULL;
        CHECK_INT(conf_init(&c), 0);
        before = conf_dump(&c);
        CHECK_INT(conf_load_env(&c, &err), 0);
        after = conf_dump(&c);
        CHECK_STR(after, before);
    }
    {
        _cleanup_conf_ conf c;
        _cleanup_free_ char *err = NULL;
        CHECK_INT(conf_init(&c), 0);
        setenv("S3_BUCKET", "bucket", 1);
        CHECK_INT(conf_load_env(&c, &err), 0);
        CHECK_STR(c.store, "s3://bucket/keys.json"); /* S3_KEY defaults to keys.json */
        setenv("S3_KEY", "prod/keys.json", 1);
        CHECK_INT(conf_load_env(&c, &err), 0);
        CHECK_STR(c.store, "s3://bucket/prod/keys.json");
        setenv("HEARE_AUTH_STORE", "/srv/k.json", 1);
        CHECK_INT(conf_load_env(&c, &err), 0);
        CHECK_STR(c.store, "file:///srv/k.json"); /* HEARE_AUTH_STORE wins */
        setenv("HEARE_AUTH_STORE", "", 1);        /* empty = unset */
        CHECK_INT(conf_load_env(&c, &err), 0);
        CHECK_STR(c.store, "s3://bucket/prod/keys.json");
        setenv("S3_KEY", "", 1);
        CHECK_INT(conf_load_env(&c, &err), 0);
        CHECK_STR(c.store, "s3://bucket/keys.json");
        clear_env();
    }
    {
        _cleanup_conf_ conf c;
        _cleanup_free_ char *err = NULL;
        CHECK_INT(conf_init(&c), 0);
        setenv("AWS_REGION", "eu-west-1", 1);
        CHECK_INT(conf_load_env(&c, &err), 0);
        CHECK_STR(c.s3_region, "eu-west-1");
        setenv("S3_REGION", "eu-central-1", 1);
        CHECK_INT(conf_load_env(&c, &err), 0);
        CHECK_STR(c.s3_region, "eu-central-1"); /* S3_REGION wins over AWS_REGION */
        setenv("S3_ENDPOINT", "http://127.0.0.1:9000", 1);
        setenv("HTTP_LISTEN", "127.0.0.1:8000", 1);
        setenv("SECRET", "pushtoken", 1);
        CHECK_INT(conf_load_env(&c, &err), 0);
        CHECK_STR(c.s3_endpoint, "http://127.0.0.1:9000");
        CHECK_STR(c.http_listen, "127.0.0.1:8000");
        CHECK_STR(c.metrics_secret, "pushtoken");
        clear_env();
    }
    {
        _cleanup_conf_ conf c;
        _cleanup_free_ char *err = NULL;
        CHECK_INT(conf_init(&c), 0);
        setenv("PROTOCOL", "udp", 1);
        setenv("DEST_HOST", "statsd.local", 1);
        setenv("DEST_PORT", "8125", 1);
        CHECK_INT(conf_load_env(&c, &err), 0);
        CHECK_STR(c.metrics_url, "udp://statsd.local:8125");
        setenv("PROTOCOL", "https", 1);
        setenv("DEST_PORT", "443", 1);
        CHECK_INT(conf_load_env(&c, &err), 0);
        CHECK_STR(c.metrics_url, "https://statsd.local:443");
        setenv("PROTOCOL", "udp", 1);
        setenv("DEST_HOST", "::1", 1);
        setenv("DEST_PORT", "8125", 1);
        CHECK_INT(conf_load_env(&c, &err), 0);
        CHECK_STR(c.metrics_url, "udp://[::1]:8125");
        clear_env();
    }

    const struct {
        const char *const *vars; /* name, value pairs, NULL-terminated */
        const char *msg;
    } bad[] = {
        {(const char *const[]){"PROTOCOL", "udp", NULL},
         "environment DEST_HOST, DEST_PORT: not set"},
        {(const char *const[]){"DEST_HOST", "h", "DEST_PORT", "1", NULL},
         "environment PROTOCOL: not set"},
        {(const char *const[]){"PROTOCOL", "udp", "DEST_HOST", "h", NULL},
         "environment DEST_PORT: not set"},
        {(const char *const[]){"PROTOCOL", "tcp", "DEST_HOST", "h", "DEST_PORT", "1", NULL},
         "environment PROTOCOL: 'tcp' is not udp, http or https"},
        {(const char *const[]){"PROTOCOL", "udp", "DEST_HOST", "h", "DEST_PORT", "x", NULL},
         "metrics-url: 'udp://h:x' is not udp://HOST:PORT"},
        {(const char *const[]){"HEARE_AUTH_STORE", "relative", NULL},
         "environment HEARE_AUTH_STORE: store: 'relative' is not"},
        {(const char *const[]){"S3_BUCKET", "b", "S3_KEY", "a b", NULL},
         "environment S3_BUCKET: store:"},
        {(const char *const[]){"HTTP_LISTEN", "8080", NULL},
         "environment HTTP_LISTEN: http-listen: '8080' is not HOST:PORT"},
        {(const char *const[]){"S3_ENDPOINT", "minio", NULL},
         "environment S3_ENDPOINT: s3-endpoint:"},
    };
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        _cleanup_conf_ conf c;
        _cleanup_free_ char *err = NULL;
        clear_env();
        for (const char *const *v = bad[i].vars; *v; v += 2)
            setenv(v[0], v[1], 1);
        CHECK_INT(conf_init(&c), 0);
        int r = conf_load_env(&c, &err);
        if (r != -EINVAL || !check_contains(err, bad[i].msg)) {
            fprintf(stderr, "env case %zu: r=%d err='%s', expected '%s'\n", i, r,
                    err ? err : "(null)", bad[i].msg);
            exit(1);
        }
    }
    clear_env();
}

static void test_dump(void)
{
    _cleanup_conf_ conf c;
    _cleanup_free_ char *err = NULL, *dump = NULL;

    CHECK_INT(conf_init(&c), 0);
    dump = conf_dump(&c);
    CHECK(dump != NULL);
    CHECK(check_contains(dump, "store = file:///var/lib/heare-auth/keys.json\n"));
    CHECK(check_contains(dump, "poll-interval = 10s\n"));
    CHECK(check_contains(dump, "idle-timeout = 60s\n"));
    CHECK(check_contains(dump, "message-timeout = 10s\n"));
    CHECK(check_contains(dump, "connection-buffer-max = 1MiB\n"));
    CHECK(check_contains(dump, "buffers-max = 256MiB\n"));
    CHECK(check_contains(dump, "log-level = info\n"));
    CHECK(check_contains(dump, "log-format = auto\n"));
    CHECK(check_contains(dump, "log-verify = auto\n"));
    CHECK(check_contains(dump, "admin-users =\n"));
    CHECK(check_contains(dump, "s3-addressing = virtual\n"));
    CHECK(check_contains(dump, "http-listen =\n"));
    CHECK(check_contains(dump, "metrics-secret =\n"));
    CHECK(check_contains(dump, "max-failures-per-minute = 600\n"));
    CHECK(!check_contains(dump, "(set)"));
    CHECK(!check_contains(dump, " \n"));
    /* Keys come in table order, one line each. */
    size_t n, lines = 0;
    conf_keys(&n);
    for (const char *p = dump; *p; p++)
        lines += *p == '\n';
    CHECK_INT(lines, n);
    CHECK(strncmp(dump, "store = ", 8) == 0);
    CHECK(strstr(dump, "store =") < strstr(dump, "s3-region ="));
    CHECK(strstr(dump, "idle-timeout =") < strstr(dump, "threads ="));
    dump = mfree(dump);

    CHECK_INT(conf_set(&c, "metrics-secret", "hunter2-very-secret", &err), 0);
    CHECK_INT(conf_set(&c, "admin-users", "0 1000", &err), 0);
    CHECK_INT(conf_set(&c, "admin-groups", "root", &err), 0);
    CHECK_INT(conf_set(&c, "log-level", "warn", &err), 0);
    CHECK_INT(conf_set(&c, "s3-endpoint", "http://minio:9000", &err), 0);
    CHECK_INT(conf_set(&c, "cache", "", &err), 0);
    CHECK_INT(conf_set(&c, "poll-interval", "2m", &err), 0);
    CHECK_INT(conf_set(&c, "threads", "3", &err), 0);
    dump = conf_dump(&c);
    CHECK(dump != NULL);
    CHECK(!check_contains(dump, "hunter2"));
    CHECK(check_contains(dump, "metrics-secret = (set)\n"));
    CHECK(check_contains(dump, "admin-users = 0 1000\n"));
    CHECK(check_contains(dump, "admin-groups = 0\n"));
    CHECK(check_contains(dump, "log-level = warning\n"));
    CHECK(check_contains(dump, "s3-addressing = path\n"));
    CHECK(check_contains(dump, "cache =\n"));
    CHECK(check_contains(dump, "poll-interval = 120s\n"));
    CHECK(check_contains(dump, "threads = 3\n"));
}

/* Rules between keys are checked once every source is applied, not key by key. */
static void test_check(void)
{
    conf c;
    char *err = NULL;

    CHECK_INT(conf_init(&c), 0);
    CHECK_INT(conf_check(&c, &err), 0);
    CHECK_INT(conf_set(&c, "buffers-max", "512KiB", &err), 0);
    CHECK_INT(conf_check(&c, &err), -EINVAL);
    CHECK(err && strstr(err, "buffers-max:") && strstr(err, "less than connection-buffer-max"));
    free(err);
    err = NULL;
    CHECK_INT(conf_set(&c, "connection-buffer-max", "512KiB", &err), 0);
    CHECK_INT(conf_check(&c, &err), 0);
    conf_done(&c);
}

static void test_split_host_port(void)
{
    static const struct {
        const char *spec, *host, *port;
    } ok[] = {
        {"127.0.0.1:8080", "127.0.0.1", "8080"},
        {"localhost:80", "localhost", "80"},
        {"[::1]:8125", "::1", "8125"},
        {"[fe80::1]:1", "fe80::1", "1"},
    };
    for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
        _cleanup_free_ char *host = NULL, *port = NULL;
        CHECK_INT(conf_split_host_port(ok[i].spec, &host, &port), 0);
        CHECK_STR(host, ok[i].host);
        CHECK_STR(port, ok[i].port);
    }
    char *host = NULL, *port = NULL;
    CHECK_INT(conf_split_host_port("no-port", &host, &port), -EINVAL);
    CHECK(host == NULL && port == NULL);
}

int main(void)
{
    CHECK(mkdtemp(tmpdir) != NULL);
    test_keys_table();
    test_split_host_port();
    test_defaults();
    test_good_values();
    test_bad_values();
    test_file_good();
    test_file_bad();
    test_env();
    test_dump();
    test_check();
    rmdir(tmpdir);
    return 0;
}
