/* test-store-s3: the S3 store's pieces that need no S3 server: where a store URL goes on
 * the wire (s3-url), the credentials chain (s3-credentials), and store_open/store_load
 * errors. The requests themselves are tested end to end against a SigV4-checking server
 * (tests/e2e/test_s3.py). */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "macro.h"
#include "s3-credentials.h"
#include "s3-url.h"
#include "store.h"

static char dir[] = "/tmp/test-store-s3.XXXXXX";

static void write_file(const char *name, const char *content)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    CHECK(f);
    fputs(content, f);
    CHECK(fclose(f) == 0);
}

static void remove_file(const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    unlink(path);
}

static void clear_env(void)
{
    static const char *const vars[] = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                       "AWS_SESSION_TOKEN", "CREDENTIALS_DIRECTORY",
                                       "AWS_SHARED_CREDENTIALS_FILE", "AWS_PROFILE"};
    for (size_t i = 0; i < ELEMENTSOF(vars); i++)
        unsetenv(vars[i]);
    /* No ~/.aws/credentials of whoever runs the tests. */
    setenv("HOME", dir, 1);
}

/* --- s3-url ----------------------------------------------------------------------- */

struct target_case {
    const char *url;
    store_options opts;
    const char *want_url, *want_host, *want_path;
};

static void test_targets(void)
{
    static const struct target_case cases[] = {
        /* AWS: virtual-host addressing by default. */
        {"s3://heare-keys/keys.json", {}, "https://heare-keys.s3.us-east-1.amazonaws.com/keys.json",
         "heare-keys.s3.us-east-1.amazonaws.com", "/keys.json"},
        {"s3://heare-keys/prod/keys.json", {.s3_region = "eu-west-1", .s3_addressing = "path"},
         "https://s3.eu-west-1.amazonaws.com/heare-keys/prod/keys.json",
         "s3.eu-west-1.amazonaws.com", "/heare-keys/prod/keys.json"},
        /* A custom endpoint: path style by default, port kept in Host. */
        {"s3://Bucket_1/k.json", {.s3_endpoint = "http://127.0.0.1:9000"},
         "http://127.0.0.1:9000/Bucket_1/k.json", "127.0.0.1:9000", "/Bucket_1/k.json"},
        {"s3://b12/dir/a b+c.json", {.s3_endpoint = "https://MinIO.Example:9443/base/"},
         "https://minio.example:9443/base/b12/dir/a%20b%2Bc.json", "minio.example:9443",
         "/base/b12/dir/a%20b%2Bc.json"},
        {"s3://acct-keys/keys.json",
         {.s3_endpoint = "https://r2.example.com", .s3_addressing = "virtual"},
         "https://acct-keys.r2.example.com/keys.json", "acct-keys.r2.example.com", "/keys.json"},
    };

    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        const struct target_case *c = &cases[i];
        s3_target t;
        _cleanup_free_ char *err = NULL;

        fprintf(stderr, "target: %s\n", c->url);
        CHECK_INT(s3_target_parse(c->url, &c->opts, &t, &err), 0);
        CHECK_STR(t.url, c->want_url);
        CHECK_STR(t.host, c->want_host);
        CHECK_STR(t.path, c->want_path);
        s3_target_done(&t);
    }

    static const struct {
        const char *url;
        store_options opts;
        const char *message;
    } bad[] = {
        {"s3://", {}, "bad bucket name"},
        {"s3://bucket", {}, "bad bucket name"},
        {"s3://bucket/", {}, "object name must be 1 to 1024 bytes"},
        {"s3://bu cket/x", {}, "bad bucket name"},
        {"s3://bucket/a\tb", {}, "control character"},
        {"s3://Upper/x", {}, "cannot be a host name"},
        {"s3://has_underscore/x", {.s3_endpoint = "http://h", .s3_addressing = "virtual"},
         "set s3-addressing = path"},
        {"s3://bucket/x", {.s3_endpoint = "ftp://h"}, "not an http:// or https:// URL"},
        {"s3://bucket/x", {.s3_endpoint = "http://user:pw@h"}, "no user, query or fragment"},
        {"s3://bucket/x", {.s3_endpoint = "http:///x"}, "HOST[:PORT]"},
        /* Found by fuzz-s3-url: the configuration takes bytes above 0x7e, which went as
         * they were into the URL and the signed path. */
        {"s3://bucket/x", {.s3_endpoint = "http://h/b\xc3\xa9"}, "printable ASCII"},
        {"s3://bucket/x", {.s3_endpoint = "http://h\x7f/"}, "printable ASCII"},
        {"s3://bucket/x", {.s3_endpoint = "http://h/a b"}, "without spaces"},
        {"s3://bucket/x", {.s3_addressing = "sideways"}, "not virtual or path"},
    };
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        s3_target t;
        _cleanup_free_ char *err = NULL;

        fprintf(stderr, "bad target: %s\n", bad[i].url);
        CHECK_INT(s3_target_parse(bad[i].url, &bad[i].opts, &t, &err), -EINVAL);
        CHECK(check_contains(err, bad[i].message));
    }
}

/* --- s3-credentials --------------------------------------------------------------- */

static void expect_creds(const char *id, const char *secret, const char *token,
                         const char *source)
{
    s3_credentials c;
    _cleanup_free_ char *err = NULL;
    CHECK_INT(s3_credentials_load(&c, &err), 0);
    CHECK_STR(c.access_key_id, id);
    CHECK_STR(c.secret_access_key, secret);
    if (token)
        CHECK_STR(c.session_token, token);
    else
        CHECK(c.session_token == NULL);
    CHECK_STR(c.source, source);
    s3_credentials_done(&c);
    CHECK(c.access_key_id == NULL && c.secret_access_key == NULL);
}

static void expect_cred_error(int want, const char *message)
{
    s3_credentials c = {};
    _cleanup_free_ char *err = NULL;
    CHECK_INT(s3_credentials_load(&c, &err), want);
    CHECK(check_contains(err, message));
    CHECK(c.access_key_id == NULL);
}

static void test_credentials(void)
{
    char credir[256], shared[256];
    snprintf(credir, sizeof(credir), "%s/creds", dir);
    CHECK(mkdir(credir, 0700) == 0);
    snprintf(shared, sizeof(shared), "%s/aws-credentials", dir);

    clear_env();
    expect_cred_error(-ENOENT, "none found");

    /* 3: the shared file, ~/.aws/credentials by default, profile "default". */
    CHECK(mkdir(strcat(strcpy((char[256]){}, dir), "/.aws"), 0700) == 0);
    write_file(".aws/credentials", "# comment\n[other]\naws_access_key_id = OTHER\n"
                                   "aws_secret_access_key = othersecret\n\n"
                                   "[default]\n  aws_access_key_id=HOMEID \n"
                                   "aws_secret_access_key = home/secret+x\n");
    expect_creds("HOMEID", "home/secret+x", NULL, "shared credentials file");
    setenv("AWS_PROFILE", "other", 1);
    expect_creds("OTHER", "othersecret", NULL, "shared credentials file");
    setenv("AWS_PROFILE", "missing", 1);
    expect_cred_error(-EINVAL, "has no profile [missing]");
    unsetenv("AWS_PROFILE");

    write_file("aws-credentials", "[prod]\naws_access_key_id = PRODID\n"
                                  "aws_secret_access_key = prodsecret\n"
                                  "aws_session_token = prodtoken\n"
                                  "[half]\naws_access_key_id = HALF\n");
    setenv("AWS_SHARED_CREDENTIALS_FILE", shared, 1);
    setenv("AWS_PROFILE", "prod", 1);
    expect_creds("PRODID", "prodsecret", "prodtoken", "shared credentials file");
    setenv("AWS_PROFILE", "half", 1);
    expect_cred_error(-EINVAL, "lacks aws_access_key_id or aws_secret_access_key");
    setenv("AWS_PROFILE", "prod", 1);

    /* 2: $CREDENTIALS_DIRECTORY wins over the shared file; a trailing newline is not part
     * of the value. */
    setenv("CREDENTIALS_DIRECTORY", credir, 1);
    expect_creds("PRODID", "prodsecret", "prodtoken", "shared credentials file"); /* empty dir */
    write_file("creds/aws-access-key-id", "DIRID\n");
    expect_cred_error(-EINVAL, "aws-access-key-id exists but aws-secret-access-key does not");
    write_file("creds/aws-secret-access-key", "dir/secret\n");
    expect_creds("DIRID", "dir/secret", NULL, "$CREDENTIALS_DIRECTORY");
    /* A rotated file is read again by the next load. */
    write_file("creds/aws-secret-access-key", "rotated\n");
    write_file("creds/aws-session-token", "dirtoken");
    expect_creds("DIRID", "rotated", "dirtoken", "$CREDENTIALS_DIRECTORY");
    write_file("creds/aws-session-token", "\n");
    expect_cred_error(-EINVAL, "aws-session-token is empty");
    remove_file("creds/aws-session-token");

    /* 1: the environment wins over everything. */
    setenv("AWS_ACCESS_KEY_ID", "ENVID", 1);
    expect_cred_error(-EINVAL, "AWS_ACCESS_KEY_ID is set in the environment but "
                               "AWS_SECRET_ACCESS_KEY is not");
    setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
    expect_creds("ENVID", "envsecret", NULL, "environment");
    setenv("AWS_SESSION_TOKEN", "envtoken", 1);
    expect_creds("ENVID", "envsecret", "envtoken", "environment");
    /* Empty is unset. */
    setenv("AWS_ACCESS_KEY_ID", "", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "", 1);
    expect_creds("DIRID", "rotated", NULL, "$CREDENTIALS_DIRECTORY");

    remove_file(".aws/credentials");
    clear_env();
}

/* --- store_open and a store that does not answer --------------------------------- */

/* A loopback port nothing listens on: bound, then closed. */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    CHECK(fd >= 0);
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void test_open_and_unreachable(void)
{
    store *s = NULL;
    char *err = NULL;

    clear_env();
    CHECK_INT(store_open("s3://bucket/keys.json", &s, &err), -ENOENT);
    CHECK(s == NULL);
    CHECK(check_contains(err, "S3 credentials: none found"));
    err = mfree(err);

    setenv("AWS_ACCESS_KEY_ID", "AKIDTEST", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value-1234", 1);
    store_options bad_sse = {.s3_sse = "rot13"};
    CHECK_INT(store_open_with("s3://bucket/keys.json", &bad_sse, &s, &err), -EINVAL);
    CHECK(check_contains(err, "s3-sse 'rot13'"));
    err = mfree(err);

    char endpoint[64];
    snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%d", closed_port());
    store_options opts = {.s3_endpoint = endpoint, .timeout_ms = 5000};
    CHECK_INT(store_open_with("s3://bucket/dir/keys.json", &opts, &s, &err), 0);
    CHECK_STR(store_url(s), "s3://bucket/dir/keys.json");

    char *buf = NULL, *version = NULL;
    size_t len = 0;
    CHECK_INT(store_load(s, NULL, &buf, &len, &version, &err), -ECONNREFUSED);
    CHECK(check_contains(err, "S3 bucket 'bucket' object 'dir/keys.json'"));
    CHECK(!check_contains(err, "very-secret-value-1234"));
    err = mfree(err);
    CHECK_INT(store_write(s, "", "{}", 2, NULL, &err), -ECONNREFUSED);
    CHECK(check_contains(err, "PUT"));
    err = mfree(err);
    store_free(s);
    clear_env();
}

int main(void)
{
    CHECK(mkdtemp(dir));
    test_targets();
    test_credentials();
    test_open_and_unreachable();

    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    return 0;
}
