/* test-store-file: the file store (versions, conditional writes, stat shortcut, locking,
 * read-modify-write with retries, parallel writers) and the whole-file helpers. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "json-util.h"
#include "keydoc.h"
#include "keyops.h"
#include "store.h"

static char dir[] = "/tmp/test-store-file.XXXXXX";

static char *path_in(const char *name)
{
    char *p = NULL;
    CHECK(asprintf(&p, "%s/%s", dir, name) > 0);
    return p;
}

static char *sha256_version(const char *buf, size_t len)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned md_len = 0;
    char *v = malloc(7 + 64 + 1);

    CHECK(v);
    CHECK(EVP_Digest(buf, len, md, &md_len, EVP_sha256(), NULL) == 1);
    CHECK_INT(md_len, 32);
    strcpy(v, "sha256:");
    for (unsigned i = 0; i < md_len; i++)
        sprintf(v + 7 + 2 * i, "%02x", md[i]);
    return v;
}

/* Writes content to path by a new inode renamed over it, as an editor or another tool
 * would. */
static void replace_file(const char *path, const char *content, mode_t mode)
{
    _cleanup_free_ char *tmp = NULL;
    CHECK(asprintf(&tmp, "%s.other", path) > 0);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    CHECK(fd >= 0);
    CHECK(write(fd, content, strlen(content)) == (ssize_t)strlen(content));
    CHECK(close(fd) == 0);
    CHECK(rename(tmp, path) == 0);
}

static char *slurp(const char *path)
{
    char *buf = NULL;
    size_t len;
    CHECK_INT(store_read_file(path, 1 << 20, &buf, &len), 0);
    CHECK_INT(strlen(buf), len);
    return buf;
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    CHECK(stat(path, &st) == 0);
    return st.st_mode & 07777;
}

/* --- store_open ------------------------------------------------------------------- */

struct open_case {
    const char *url;
    int ret;
    const char *message;
};

static const struct open_case bad_opens[] = {
    {"http://example.com/keys.json", -EINVAL,
     "unsupported store URL 'http://example.com/keys.json' (expected file:///path or "
     "s3://bucket/object)"},
    {"", -EINVAL, "unsupported store URL ''"},
    {"keys.json", -EINVAL, "unsupported store URL 'keys.json'"},
    {"file://keys.json", -EINVAL, "unsupported store URL 'file://keys.json'"},
    {"file:", -EINVAL, "unsupported store URL 'file:'"},
    {"file:///var/lib/heare-auth/", -EISDIR, "names a directory"},
};

static void test_open(void)
{
    for (size_t i = 0; i < ELEMENTSOF(bad_opens); i++) {
        const struct open_case *t = &bad_opens[i];
        store *s = NULL;
        _cleanup_free_ char *err = NULL;

        fprintf(stderr, "open: %s\n", t->url);
        CHECK_INT(store_open(t->url, &s, &err), t->ret);
        CHECK(s == NULL);
        CHECK(check_contains(err, t->message));
    }

    store *s = NULL;
    CHECK_INT(store_open("file:///var/lib/heare-auth/keys.json", &s, NULL), 0);
    CHECK_STR(store_url(s), "file:///var/lib/heare-auth/keys.json");
    s = store_free(s);
    CHECK(s == NULL);
    CHECK_INT(store_open("/var/lib/heare-auth/keys.json", &s, NULL), 0);
    CHECK_STR(store_url(s), "/var/lib/heare-auth/keys.json");
    store_free(s);
    store_free(NULL);
}

/* --- load and conditional write -------------------------------------------------- */

static void test_versions(void)
{
    _cleanup_free_ char *path = path_in("versions.json"), *url = NULL;
    _cleanup_(store_freep) store *s = NULL;
    char *buf = (char *)"untouched", *version = NULL, *err = NULL;
    size_t len = 99;

    CHECK(asprintf(&url, "file://%s", path) > 0);
    CHECK_INT(store_open(url, &s, NULL), 0);

    /* Missing: an empty store with version "". */
    CHECK_INT(store_load(s, NULL, &buf, &len, &version, &err), 0);
    CHECK(buf == NULL);
    CHECK_INT(len, 0);
    CHECK_STR(version, "");
    free(version);
    CHECK_INT(store_load(s, "", &buf, &len, &version, &err), 1);
    buf = (char *)"untouched";
    CHECK_INT(store_load(s, "sha256:00", &buf, &len, &version, &err), 0);
    CHECK(buf == NULL);
    free(version);

    /* "" creates; the version is the SHA-256 of the content; a new file is 0600. */
    umask(022);
    const char *c1 = "{\"version\": 2, \"keys\": []}\n";
    _cleanup_free_ char *v1 = NULL, *want1 = sha256_version(c1, strlen(c1));
    CHECK_INT(store_write(s, "", c1, strlen(c1), &v1, &err), 0);
    CHECK_STR(v1, want1);
    CHECK_INT(mode_of(path), 0600);
    _cleanup_free_ char *lock_path = NULL, *tmp_path = NULL;
    CHECK(asprintf(&lock_path, "%s.lock", path) > 0);
    CHECK(asprintf(&tmp_path, "%s.tmp", path) > 0);
    CHECK_INT(mode_of(lock_path), 0600);
    CHECK(access(tmp_path, F_OK) < 0 && errno == ENOENT);

    /* "" again: the file exists now. */
    CHECK_INT(store_write(s, "", "{}", 2, NULL, &err), -ESTALE);
    CHECK(check_contains(err, path));
    err = mfree(err);
    CHECK_INT(store_write(s, "sha256:0000", "{}", 2, NULL, &err), -ESTALE);
    err = mfree(err);
    _cleanup_free_ char *now = slurp(path);
    CHECK_STR(now, c1);

    CHECK_INT(store_load(s, NULL, &buf, &len, &version, &err), 0);
    CHECK_STR(buf, c1);
    CHECK_INT(len, strlen(c1));
    CHECK_STR(version, v1);
    free(buf);
    free(version);

    /* Unchanged since v1: 1, nothing set. */
    buf = (char *)"untouched";
    version = (char *)"untouched";
    CHECK_INT(store_load(s, v1, &buf, &len, &version, &err), 1);
    CHECK_STR(buf, "untouched");
    CHECK_STR(version, "untouched");
    /* A version from elsewhere: the content is returned. */
    CHECK_INT(store_load(s, "sha256:abc", &buf, &len, &version, &err), 0);
    CHECK_STR(buf, c1);
    free(buf);
    free(version);

    /* The right version: written, and the version moves on; an existing mode is kept. */
    CHECK(chmod(path, 0640) == 0);
    const char *c2 = "{\"version\": 2, \"keys\": [], \"x\": 1}\n";
    _cleanup_free_ char *v2 = NULL, *want2 = sha256_version(c2, strlen(c2));
    CHECK_INT(store_write(s, v1, c2, strlen(c2), &v2, &err), 0);
    CHECK_STR(v2, want2);
    CHECK(strcmp(v1, v2) != 0);
    CHECK_INT(mode_of(path), 0640);
    CHECK_INT(store_load(s, v1, &buf, &len, &version, &err), 0);
    CHECK_STR(buf, c2);
    CHECK_STR(version, v2);
    free(buf);
    free(version);
    CHECK_INT(store_load(s, v2, &buf, &len, &version, &err), 1);
    /* The old version is stale now. */
    CHECK_INT(store_write(s, v1, c1, strlen(c1), NULL, &err), -ESTALE);
    err = mfree(err);

    /* An external edit (a new file renamed over): seen, with the new content. */
    const char *c3 = "{\"version\": 2, \"keys\": [], \"edited\": true}\n";
    replace_file(path, c3, 0600);
    CHECK_INT(store_load(s, v2, &buf, &len, &version, &err), 0);
    CHECK_STR(buf, c3);
    _cleanup_free_ char *want3 = sha256_version(c3, strlen(c3));
    CHECK_STR(version, want3);
    free(buf);
    free(version);
    CHECK_INT(store_write(s, v2, c1, strlen(c1), NULL, &err), -ESTALE);
    err = mfree(err);
    now = mfree(now);
    now = slurp(path);
    CHECK_STR(now, c3);

    /* The same bytes again under a new inode: the hash says unchanged. */
    replace_file(path, c3, 0600);
    CHECK_INT(store_load(s, want3, &buf, &len, &version, &err), 1);
    CHECK_INT(store_write(s, want3, c1, strlen(c1), NULL, &err), 0);

    /* A second store object on the same file sees the same versions. */
    _cleanup_(store_freep) store *s2 = NULL;
    CHECK_INT(store_open(path, &s2, NULL), 0);
    _cleanup_free_ char *want1b = sha256_version(c1, strlen(c1));
    CHECK_INT(store_load(s2, want1b, &buf, &len, &version, &err), 1);

    /* Deleted: back to an empty store. */
    CHECK(unlink(path) == 0);
    CHECK_INT(store_load(s, want1b, &buf, &len, &version, &err), 0);
    CHECK(buf == NULL);
    CHECK_STR(version, "");
    free(version);
    CHECK(err == NULL);
}

static void test_load_errors(void)
{
    _cleanup_free_ char *nodir = NULL, *isdir = path_in("a-directory");
    _cleanup_(store_freep) store *s = NULL, *s2 = NULL;
    char *buf = NULL, *version = NULL;
    _cleanup_free_ char *err = NULL;
    size_t len;

    /* A missing directory is an error that says so, for reads and writes. */
    CHECK(asprintf(&nodir, "%s/no-such-dir/keys.json", dir) > 0);
    CHECK_INT(store_open(nodir, &s, NULL), 0);
    CHECK_INT(store_load(s, NULL, &buf, &len, &version, &err), -ENOENT);
    CHECK(check_contains(err, "does not exist"));
    CHECK(check_contains(err, "no-such-dir"));
    err = mfree(err);
    CHECK_INT(store_write(s, "", "{}", 2, NULL, &err), -ENOENT);
    CHECK(check_contains(err, "file store "));
    CHECK(check_contains(err, "does not exist"));
    err = mfree(err);

    /* A directory where the file should be. */
    CHECK(mkdir(isdir, 0700) == 0);
    CHECK_INT(store_open(isdir, &s2, NULL), 0);
    CHECK_INT(store_load(s2, NULL, &buf, &len, &version, &err), -EISDIR);
    CHECK(check_contains(err, "not a regular file"));
    CHECK(rmdir(isdir) == 0);
}

/* --- the whole-file helpers -------------------------------------------------------- */

static void test_file_helpers(void)
{
    _cleanup_free_ char *path = path_in("cache.json"), *nodir = NULL;
    _cleanup_free_ char *err = NULL;
    char *buf = (char *)"untouched";
    size_t len = 7;

    CHECK_INT(store_read_file(path, 100, &buf, &len), -ENOENT);
    CHECK_STR(buf, "untouched");
    CHECK_INT(len, 7);

    /* Mode exactly as asked, whatever the umask and the old file's mode. */
    umask(0);
    replace_file(path, "old", 0644);
    CHECK_INT(store_write_file_atomic(path, "0123456789", 10, 0600, &err), 0);
    CHECK_INT(mode_of(path), 0600);
    CHECK_INT(store_read_file(path, 10, &buf, &len), 0);
    CHECK_INT(len, 10);
    CHECK_STR(buf, "0123456789");
    free(buf);
    umask(022);

    buf = (char *)"untouched";
    CHECK_INT(store_read_file(path, 9, &buf, &len), -EFBIG);
    CHECK_STR(buf, "untouched");
    CHECK_INT(store_read_file(dir, 100, &buf, &len), -EISDIR);

    /* A file that grows past max while being read (st_size lied) is still refused. */
    CHECK_INT(store_read_file("/proc/self/status", 16, &buf, &len), -EFBIG);

    /* Empty file. */
    CHECK_INT(store_write_file_atomic(path, "", 0, 0640, &err), 0);
    CHECK_INT(mode_of(path), 0640);
    CHECK_INT(store_read_file(path, 0, &buf, &len), 0);
    CHECK_INT(len, 0);
    CHECK_STR(buf, "");
    free(buf);

    CHECK(asprintf(&nodir, "%s/nope/cache.json", dir) > 0);
    CHECK_INT(store_write_file_atomic(nodir, "x", 1, 0600, &err), -ENOENT);
    CHECK(check_contains(err, "does not exist"));
    CHECK(unlink(path) == 0);
}

/* --- streaming loads and the chunked writer --------------------------------------- */

/* A sink that keeps what it got, counts its calls, and fails on request: begin() with
 * fail_begin, data() once it has got fail_after bytes. */
typedef struct test_sink {
    char *buf;
    size_t len, alloc;
    unsigned begins, datas;
    int fail_begin;
    size_t fail_after;
    int fail_data;
} test_sink;

static int test_begin(void *userdata)
{
    test_sink *t = userdata;
    t->begins++;
    t->len = 0;
    return t->fail_begin;
}

static int test_data(void *userdata, const char *p, size_t n)
{
    test_sink *t = userdata;
    t->datas++;
    CHECK(n > 0);
    if (t->fail_data < 0 && t->len >= t->fail_after)
        return t->fail_data;
    if (t->len + n > t->alloc) {
        t->alloc = (t->len + n) * 2;
        t->buf = realloc(t->buf, t->alloc);
        CHECK(t->buf);
    }
    memcpy(t->buf + t->len, p, n);
    t->len += n;
    return 0;
}

static store_sink sink_of(test_sink *t)
{
    return (store_sink){.begin = test_begin, .data = test_data, .userdata = t};
}

static void test_sink_reset(test_sink *t)
{
    free(t->buf);
    *t = (test_sink){};
}

/* n bytes of a JSON-ish text that is not periodic in any chunk size. */
static char *big_content(size_t n)
{
    char *c = malloc(n + 1);
    CHECK(c);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        c[i] = "abcdefghijklmnopqrstuvwxyz0123456789\", :{}[]\n"[x % 46];
    }
    c[n] = '\0';
    return c;
}

static void write_whole(const char *path, const char *content, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    for (size_t off = 0; off < len;) {
        ssize_t k = write(fd, content + off, len - off);
        CHECK(k > 0);
        off += (size_t)k;
    }
    CHECK(close(fd) == 0);
}

static void test_stream_load(void)
{
    _cleanup_free_ char *path = path_in("stream.json");
    _cleanup_(store_freep) store *s = NULL;
    test_sink t = {};
    store_sink sink = sink_of(&t);
    char *version = (char *)"untouched", *err = NULL;
    bool exists = true;

    CHECK_INT(store_open(path, &s, NULL), 0);

    /* Missing: no document, version "", not a single callback. */
    CHECK_INT(store_load_stream(s, NULL, &sink, &exists, &version, &err), 0);
    CHECK(!exists);
    CHECK_STR(version, "");
    version = mfree(version);
    CHECK_INT(t.begins + t.datas, 0);
    /* ...and "" is unchanged then; ret_exists may be NULL. */
    CHECK_INT(store_load_stream(s, "", &sink, NULL, &version, &err), 1);
    CHECK(version == NULL);
    CHECK_INT(store_load_stream(s, "sha256:00", &sink, NULL, &version, &err), 0);
    CHECK_STR(version, "");
    version = mfree(version);
    CHECK_INT(t.begins + t.datas, 0);

    /* No sink, or half of one, is refused. */
    store_sink half = {.begin = test_begin};
    CHECK_INT(store_load_stream(s, NULL, NULL, NULL, &version, &err), -EINVAL);
    err = mfree(err);
    CHECK_INT(store_load_stream(s, NULL, &half, NULL, &version, &err), -EINVAL);
    err = mfree(err);

    /* Larger than the read buffer, and not a multiple of it: the chunks add up to the file
     * in order, after one begin(), and the version is the hash of exactly those bytes. */
    size_t n = (5u << 20) / 2 + 12345;
    _cleanup_free_ char *content = big_content(n);
    _cleanup_free_ char *want = sha256_version(content, n);
    write_whole(path, content, n);
    CHECK_INT(store_load_stream(s, NULL, &sink, &exists, &version, &err), 0);
    CHECK(exists);
    CHECK_INT(t.begins, 1);
    CHECK(t.datas >= 3); /* 2.5 MiB through a 1 MiB buffer */
    CHECK_INT(t.len, n);
    CHECK(memcmp(t.buf, content, n) == 0);
    CHECK_STR(version, want);
    version = mfree(version);

    /* Unchanged: 1, and the sink hears nothing. Just written, the stat is too fresh to
     * trust, so this goes through the hashing pass. */
    test_sink_reset(&t);
    version = (char *)"untouched";
    CHECK_INT(store_load_stream(s, want, &sink, &exists, &version, &err), 1);
    CHECK_STR(version, "untouched");
    CHECK_INT(t.begins + t.datas, 0);
    /* A second store on the file (nothing cached): the same. */
    {
        _cleanup_(store_freep) store *s2 = NULL;
        CHECK_INT(store_open(path, &s2, NULL), 0);
        CHECK_INT(store_load_stream(s2, want, &sink, &exists, &version, &err), 1);
        CHECK_INT(t.begins + t.datas, 0);
    }

    /* Changed, same size (so no shortcut by size): the new bytes and their version. */
    content[n / 2] = content[n / 2] == 'a' ? 'b' : 'a';
    _cleanup_free_ char *want2 = sha256_version(content, n);
    write_whole(path, content, n);
    version = NULL;
    CHECK_INT(store_load_stream(s, want, &sink, &exists, &version, &err), 0);
    CHECK(exists);
    CHECK_INT(t.begins, 1);
    CHECK_INT(t.len, n);
    CHECK(memcmp(t.buf, content, n) == 0);
    CHECK_STR(version, want2);
    version = mfree(version);

    /* Changed, another size (the shortcut by the known size): the same contract. */
    test_sink_reset(&t);
    write_whole(path, content, n - 1);
    _cleanup_free_ char *want3 = sha256_version(content, n - 1);
    CHECK_INT(store_load_stream(s, want2, &sink, &exists, &version, &err), 0);
    CHECK_INT(t.begins, 1);
    CHECK_INT(t.len, n - 1);
    CHECK(memcmp(t.buf, content, n - 1) == 0);
    CHECK_STR(version, want3);
    version = mfree(version);

    /* A sink error aborts at once with that very error, and nothing else is set. */
    test_sink_reset(&t);
    t.fail_data = -ENOTRECOVERABLE;
    t.fail_after = 1; /* fails on the second chunk */
    version = (char *)"untouched";
    err = (char *)"untouched";
    exists = true;
    CHECK_INT(store_load_stream(s, NULL, &sink, &exists, &version, &err), -ENOTRECOVERABLE);
    CHECK_INT(t.begins, 1);
    CHECK_INT(t.datas, 2); /* no call after the one that failed */
    CHECK_INT(t.len, 1u << 20);
    CHECK_STR(version, "untouched");
    CHECK_STR(err, "untouched");
    CHECK(exists);
    test_sink_reset(&t);
    t.fail_begin = -ECANCELED;
    CHECK_INT(store_load_stream(s, want2, &sink, &exists, &version, &err), -ECANCELED);
    CHECK_INT(t.begins, 1);
    CHECK_INT(t.datas, 0);
    CHECK_STR(version, "untouched");
    CHECK_STR(err, "untouched");
    err = NULL;

    /* The store still works after an aborted load. */
    test_sink_reset(&t);
    CHECK_INT(store_load_stream(s, NULL, &sink, &exists, &version, &err), 0);
    CHECK_STR(version, want3);
    CHECK_INT(t.len, n - 1);
    version = mfree(version);

    /* store_load() on the same: the whole file, NUL-terminated, same version. */
    char *buf = NULL;
    size_t len = 0;
    CHECK_INT(store_load(s, NULL, &buf, &len, &version, &err), 0);
    CHECK_INT(len, n - 1);
    CHECK(memcmp(buf, content, n - 1) == 0);
    CHECK_INT(buf[len], '\0');
    CHECK_STR(version, want3);
    free(buf);
    version = mfree(version);

    /* An empty file: one begin(), no data(), the version of no bytes. */
    test_sink_reset(&t);
    write_whole(path, "", 0);
    _cleanup_free_ char *want0 = sha256_version("", 0);
    CHECK_INT(store_load_stream(s, NULL, &sink, &exists, &version, &err), 0);
    CHECK(exists);
    CHECK_INT(t.begins, 1);
    CHECK_INT(t.datas, 0);
    CHECK_STR(version, want0);
    version = mfree(version);
    CHECK_INT(store_load(s, NULL, &buf, &len, &version, &err), 0);
    CHECK(buf != NULL);
    CHECK_INT(len, 0);
    CHECK_STR(buf, "");
    free(buf);
    version = mfree(version);

    test_sink_reset(&t);
    CHECK(err == NULL);
    CHECK(unlink(path) == 0);
}

static bool exists_path(const char *path)
{
    return access(path, F_OK) == 0;
}

static void test_file_writer(void)
{
    _cleanup_free_ char *path = path_in("writer.json"), *tmp = NULL, *nodir = NULL;
    _cleanup_free_ char *err = NULL;
    store_file_writer *w = NULL, *w2 = NULL;

    CHECK(asprintf(&tmp, "%s.tmp", path) > 0);
    umask(022);
    write_whole(path, "old", 3);

    /* Written in chunks; path keeps the old file until the commit. */
    size_t n = (3u << 20) + 7;
    _cleanup_free_ char *content = big_content(n);
    CHECK_INT(store_file_writer_open(path, 0640, &w, &err), 0);
    CHECK(exists_path(tmp));
    CHECK_INT(mode_of(tmp), 0640);
    for (size_t off = 0; off < n; off += 65536) {
        size_t k = n - off < 65536 ? n - off : 65536;
        CHECK_INT(store_file_writer_write(w, content + off, k, &err), 0);
    }
    _cleanup_free_ char *still = slurp(path);
    CHECK_STR(still, "old");

    /* A second writer of the same path while the first is at it: refused, and the
     * first one's file is left alone. */
    CHECK_INT(store_file_writer_open(path, 0600, &w2, &err), -EBUSY);
    CHECK(check_contains(err, "another writer"));
    err = mfree(err);
    struct stat st;
    CHECK_INT(stat(tmp, &st), 0);
    CHECK_INT(st.st_size, n);

    CHECK_INT(store_file_writer_commit(w, &err), 0);
    CHECK(!exists_path(tmp));
    CHECK_INT(mode_of(path), 0640);
    char *buf = NULL;
    size_t len = 0;
    CHECK_INT(store_read_file(path, n, &buf, &len), 0);
    CHECK_INT(len, n);
    CHECK(memcmp(buf, content, n) == 0);
    free(buf);

    /* Abort: no tmp file left, path untouched. */
    CHECK_INT(store_file_writer_open(path, 0600, &w, &err), 0);
    CHECK_INT(store_file_writer_write(w, "new", 3, &err), 0);
    store_file_writer_abort(w);
    store_file_writer_abort(NULL);
    CHECK(!exists_path(tmp));
    CHECK_INT(stat(path, &st), 0);
    CHECK_INT(st.st_size, n);

    /* A writer that dies mid-write (a crash): path still holds the whole old file; the
     * next writer starts afresh on the leftover tmp file. */
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        store_file_writer *cw = NULL;
        if (store_file_writer_open(path, 0600, &cw, NULL) < 0 ||
            store_file_writer_write(cw, "partial", 7, NULL) < 0)
            _exit(1);
        _exit(0); /* no commit, no abort */
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(exists_path(tmp));
    CHECK_INT(stat(path, &st), 0);
    CHECK_INT(st.st_size, n);
    CHECK_INT(store_file_writer_open(path, 0600, &w, &err), 0);
    CHECK_INT(store_file_writer_write(w, "{}", 2, &err), 0);
    CHECK_INT(store_file_writer_commit(w, &err), 0);
    _cleanup_free_ char *now = slurp(path);
    CHECK_STR(now, "{}");
    CHECK_INT(mode_of(path), 0600);
    CHECK(!exists_path(tmp));

    /* Nothing written at all: an empty file. */
    CHECK_INT(store_file_writer_open(path, 0600, &w, &err), 0);
    CHECK_INT(store_file_writer_commit(w, &err), 0);
    CHECK_INT(stat(path, &st), 0);
    CHECK_INT(st.st_size, 0);

    /* Bad paths, with the errors of store_write_file_atomic. */
    CHECK(asprintf(&nodir, "%s/nope/cache.json", dir) > 0);
    CHECK_INT(store_file_writer_open(nodir, 0600, &w, &err), -ENOENT);
    CHECK(check_contains(err, "does not exist"));
    err = mfree(err);
    CHECK_INT(store_file_writer_open("", 0600, &w, &err), -EINVAL);
    err = mfree(err);
    CHECK_INT(store_file_writer_open(dir, 0600, &w, &err), -EISDIR);
    err = mfree(err);
    /* A FIFO where the tmp file goes neither hangs nor is written to. */
    CHECK(mkfifo(tmp, 0600) == 0);
    CHECK_INT(store_file_writer_open(path, 0600, &w, &err), -EINVAL);
    CHECK(check_contains(err, "not a regular file"));
    err = mfree(err);
    CHECK(unlink(tmp) == 0);

    CHECK(unlink(path) == 0);
}

/* --- read-modify-write ------------------------------------------------------------- */

struct create_ctx {
    const char *name;
    unsigned calls;
    /* Before the first n_external calls return, write the file behind the store's back. */
    unsigned n_external;
    const char *path;
};

static void add_key(json_t *doc, const char *name)
{
    _cleanup_json_ json_t *params = json_pack("{s:s}", "name", name);
    _cleanup_json_ json_t *reply = NULL;
    const char *param = NULL;

    CHECK(params);
    CHECK_INT(keyops_create(doc, params, (int64_t)time(NULL), &reply, &param), 0);
    CHECK(json_is_object(json_object_get(reply, "key")));
}

static int create_mutator(json_t *doc, void *userdata)
{
    struct create_ctx *ctx = userdata;

    ctx->calls++;
    if (ctx->calls <= ctx->n_external) {
        /* Another writer that ignores the lock: a valid document with one key more. */
        _cleanup_json_ json_t *other = NULL;
        _cleanup_free_ char *buf = slurp(ctx->path), *out = NULL, *err = NULL;
        size_t out_len;
        char name[32];

        CHECK_INT(keydoc_parse(buf, strlen(buf), &other, NULL, &err), 0);
        snprintf(name, sizeof(name), "external%u", ctx->calls);
        add_key(other, name);
        CHECK_INT(keydoc_dump(other, &out, &out_len), 0);
        CHECK_INT(store_write_file_atomic(ctx->path, out, out_len, 0600, NULL), 0);
    }

    _cleanup_json_ json_t *params = json_pack("{s:s}", "name", ctx->name);
    _cleanup_json_ json_t *reply = NULL;
    const char *param = NULL;
    return keyops_create(doc, params, (int64_t)time(NULL), &reply, &param);
}

static int failing_mutator(json_t *doc, void *userdata)
{
    unsigned *calls = userdata;
    (*calls)++;
    /* Changes made before failing must not reach the store. */
    json_array_clear(json_object_get(doc, "keys"));
    return -ENOKEY;
}

static int breaking_mutator(json_t *doc, void *userdata)
{
    /* Leaves a document that fails the schema. */
    return json_object_set_new(doc, "keys", json_string("not an array")) < 0 ? -ENOMEM : 0;
}

static bool doc_has_name(const json_t *doc, const char *name)
{
    size_t i;
    const json_t *k;
    json_array_foreach(json_object_get(doc, "keys"), i, k)
    {
        if (strcmp(json_string_value(json_object_get(k, "name")), name) == 0)
            return true;
    }
    return false;
}

static json_t *load_doc(store *s)
{
    _cleanup_free_ char *buf = NULL, *version = NULL, *err = NULL;
    size_t len;
    json_t *doc = NULL;

    CHECK_INT(store_load(s, NULL, &buf, &len, &version, &err), 0);
    CHECK(buf);
    CHECK_INT(keydoc_parse(buf, len, &doc, NULL, &err), 0);
    return doc;
}

static void test_update(void)
{
    _cleanup_free_ char *path = path_in("update.json");
    _cleanup_(store_freep) store *s = NULL;
    _cleanup_free_ char *err = NULL, *version = NULL;
    json_t *doc = NULL;

    CHECK_INT(store_open(path, &s, NULL), 0);

    /* A mutator error on a missing file: returned as is, nothing created. */
    unsigned calls = 0;
    CHECK_INT(store_update(s, failing_mutator, &calls, &doc, &version, &err), -ENOKEY);
    CHECK_INT(calls, 1);
    CHECK(doc == NULL);
    CHECK(access(path, F_OK) < 0 && errno == ENOENT);

    /* From nothing to one key. */
    struct create_ctx ctx = {.name = "w0"};
    CHECK_INT(store_update(s, create_mutator, &ctx, &doc, &version, &err), 0);
    CHECK_INT(ctx.calls, 1);
    CHECK_INT(json_array_size(json_object_get(doc, "keys")), 1);
    CHECK(doc_has_name(doc, "w0"));
    json_decref(doc);
    {
        _cleanup_free_ char *content = slurp(path);
        _cleanup_free_ char *want = sha256_version(content, strlen(content));
        CHECK_STR(version, want);
        CHECK_INT(mode_of(path), 0600);
    }
    _cleanup_json_ json_t *stored = load_doc(s);
    CHECK(doc_has_name(stored, "w0"));

    /* Results are optional. */
    ctx = (struct create_ctx){.name = "w1"};
    CHECK_INT(store_update(s, create_mutator, &ctx, NULL, NULL, NULL), 0);

    /* A mutator error on an existing file: the file keeps its bytes. */
    _cleanup_free_ char *before = slurp(path);
    calls = 0;
    CHECK_INT(store_update(s, failing_mutator, &calls, &doc, NULL, &err), -ENOKEY);
    _cleanup_free_ char *after = slurp(path);
    CHECK_STR(after, before);

    /* A mutation that breaks the schema is refused and not written. */
    CHECK_INT(store_update(s, breaking_mutator, NULL, &doc, NULL, &err), -EBADMSG);
    CHECK(check_contains(err, "document rejected"));
    err = mfree(err);
    after = mfree(after);
    after = slurp(path);
    CHECK_STR(after, before);

    /* Someone else writes between our load and our write: retried on the new document,
     * and both changes survive. */
    ctx = (struct create_ctx){.name = "w2", .n_external = 1, .path = path};
    CHECK_INT(store_update(s, create_mutator, &ctx, &doc, NULL, &err), 0);
    CHECK_INT(ctx.calls, 2);
    CHECK(doc_has_name(doc, "w2"));
    CHECK(doc_has_name(doc, "external1"));
    CHECK_INT(json_array_size(json_object_get(doc, "keys")), 4);
    json_decref(doc);

    /* ... every time: after 25 attempts (store.c says why 25), -ESTALE. */
    ctx = (struct create_ctx){.name = "w3", .n_external = 1000, .path = path};
    CHECK_INT(store_update(s, create_mutator, &ctx, &doc, NULL, &err), -ESTALE);
    CHECK_INT(ctx.calls, 25);
    CHECK(check_contains(err, "conflict: the store changed during 25 attempts"));
    err = mfree(err);
}

static void test_update_corrupt(void)
{
    static const char *const corrupt[] = {
        "{not json",
        "{\"version\": 2, \"keys\": {}}",
        "[]",
    };
    _cleanup_free_ char *path = path_in("corrupt.json");
    _cleanup_(store_freep) store *s = NULL;

    CHECK_INT(store_open(path, &s, NULL), 0);
    for (size_t i = 0; i < ELEMENTSOF(corrupt); i++) {
        _cleanup_free_ char *err = NULL, *after = NULL;
        struct create_ctx ctx = {.name = "x"};
        json_t *doc = NULL;

        replace_file(path, corrupt[i], 0600);
        CHECK_INT(store_update(s, create_mutator, &ctx, &doc, NULL, &err), -EBADMSG);
        fprintf(stderr, "corrupt: %s\n", err);
        CHECK(check_contains(err, "document rejected: "));
        CHECK(check_contains(err, path));
        CHECK_INT(ctx.calls, 0);
        CHECK(doc == NULL);
        after = slurp(path);
        CHECK_STR(after, corrupt[i]);
    }
}

/* --- locking ----------------------------------------------------------------------- */

static void test_lock_wait(void)
{
    _cleanup_free_ char *path = path_in("locked.json"), *lock_path = NULL;
    _cleanup_(store_freep) store *s = NULL;
    int ready[2];

    CHECK(asprintf(&lock_path, "%s.lock", path) > 0);
    CHECK(pipe(ready) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0 || flock(fd, LOCK_EX) < 0)
            _exit(1);
        (void)!write(ready[1], "x", 1);
        usleep(300 * 1000);
        _exit(0);
    }
    char c;
    CHECK(read(ready[0], &c, 1) == 1);
    close(ready[0]);
    close(ready[1]);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct create_ctx ctx = {.name = "after-wait"};
    CHECK_INT(store_open(path, &s, NULL), 0);
    CHECK_INT(store_update(s, create_mutator, &ctx, NULL, NULL, NULL), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    fprintf(stderr, "waited %ld ms for the lock\n", ms);
    CHECK(ms >= 200);

    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* --- parallel writers -------------------------------------------------------------- */

#define WRITERS 20

static void test_parallel(void)
{
    _cleanup_free_ char *path = path_in("parallel.json");
    pid_t pids[WRITERS];

    for (int i = 0; i < WRITERS; i++) {
        pids[i] = fork();
        CHECK(pids[i] >= 0);
        if (pids[i] == 0) {
            store *s = NULL;
            char name[16];
            char *err = NULL;
            snprintf(name, sizeof(name), "w%d", i);
            struct create_ctx ctx = {.name = name};
            int r = store_open(path, &s, &err);
            if (r >= 0)
                r = store_update(s, create_mutator, &ctx, NULL, NULL, &err);
            if (r < 0)
                fprintf(stderr, "writer %d: %s\n", i, err ? err : strerror(-r));
            _exit(r < 0 ? 1 : 0);
        }
    }
    for (int i = 0; i < WRITERS; i++) {
        int status;
        CHECK(waitpid(pids[i], &status, 0) == pids[i]);
        CHECK(WIFEXITED(status));
        CHECK_INT(WEXITSTATUS(status), 0);
    }

    _cleanup_(store_freep) store *s = NULL;
    CHECK_INT(store_open(path, &s, NULL), 0);
    _cleanup_json_ json_t *doc = load_doc(s);
    CHECK_INT(json_array_size(json_object_get(doc, "keys")), WRITERS);
    for (int i = 0; i < WRITERS; i++) {
        char name[16];
        snprintf(name, sizeof(name), "w%d", i);
        CHECK(doc_has_name(doc, name));
    }
}

static void cleanup_dir(void)
{
    static const char *const names[] = {
        "versions.json",      "versions.json.lock", "update.json",         "update.json.lock",
        "corrupt.json",       "corrupt.json.lock",  "locked.json",         "locked.json.lock",
        "parallel.json",      "parallel.json.lock", "versions.json.other", "cache.json.other",
        "corrupt.json.other",
    };
    for (size_t i = 0; i < ELEMENTSOF(names); i++) {
        _cleanup_free_ char *p = path_in(names[i]);
        unlink(p);
    }
    CHECK(rmdir(dir) == 0);
}

/* root editing a store that another user owns (heare-auth --store for the daemon's user)
 * leaves a lock file that user can still open. */
static void test_lock_owner(void)
{
    _cleanup_free_ char *sub = path_in("owned"), *path = NULL, *lock_path = NULL;
    _cleanup_(store_freep) store *s = NULL;
    struct stat st;

    /* Only root can hand a directory to someone else (CI runs the suite as root); anyone
     * else checks that the lock is simply theirs. */
    uid_t owner = geteuid() == 0 ? 65534 : geteuid();
    gid_t group = geteuid() == 0 ? 65534 : getegid();
    CHECK_INT(mkdir(sub, 0755), 0);
    CHECK_INT(chown(sub, owner, group), 0);
    CHECK(asprintf(&path, "%s/keys.json", sub) > 0);
    CHECK(asprintf(&lock_path, "%s.lock", path) > 0);
    CHECK_INT(store_open(path, &s, NULL), 0);
    struct create_ctx ctx = {.name = "by-root", .path = path};
    CHECK_INT(store_update(s, create_mutator, &ctx, NULL, NULL, NULL), 0);
    CHECK_INT(stat(lock_path, &st), 0);
    CHECK_INT(st.st_uid, owner);
    CHECK_INT(st.st_gid, group);
    unlink(path);
    unlink(lock_path);
    rmdir(sub);
}

int main(void)
{
    CHECK(mkdtemp(dir));

    test_open();
    test_versions();
    test_load_errors();
    test_file_helpers();
    test_stream_load();
    test_file_writer();
    test_update();
    test_update_corrupt();
    test_lock_wait();
    test_parallel();
    test_lock_owner();

    cleanup_dir();
    fprintf(stderr, "ok\n");
    return 0;
}
