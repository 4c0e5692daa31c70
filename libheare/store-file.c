/* store-file: the local-file store backend (flock, tmp + fsync + rename) and the generic
 * whole-file read and atomic write helpers. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#include "errors.h"
#include "secret.h"
#include "store-backend.h"
#include "timeutil.h"

#define LOAD_MAX ((size_t)1 << 30)
#define LOCK_WAIT_MS 10000
#define LOCK_POLL_MS 10
/* Coarse file timestamps (a kernel tick, or whole seconds on some filesystems) cannot tell
 * two writes apart within this window, so a stat that recent is not trusted to mean
 * "unchanged". */
#define STAT_SETTLE_NS (2LL * 1000000000)

#define VERSION_PREFIX "sha256:"
#define VERSION_LEN (sizeof(VERSION_PREFIX) - 1 + SECRET_HEX_LEN)

typedef struct file_stat {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtim, ctim;
} file_stat;

typedef struct file_store {
    char *path, *tmp_path, *lock_path, *dir_path;
    /* The daemon's poller and its writers may share one store. */
    pthread_mutex_t mutex;
    /* The stat that produced the last version handed out, and that version. */
    bool cached;
    file_stat cache_stat;
    char cache_version[VERSION_LEN + 1];
} file_store;

static void stat_to(const struct stat *st, file_stat *ret)
{
    *ret = (file_stat){
        .dev = st->st_dev,
        .ino = st->st_ino,
        .size = st->st_size,
        .mtim = st->st_mtim,
        .ctim = st->st_ctim,
    };
}

static bool stat_equal(const file_stat *a, const file_stat *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtim.tv_sec == b->mtim.tv_sec && a->mtim.tv_nsec == b->mtim.tv_nsec &&
           a->ctim.tv_sec == b->ctim.tv_sec && a->ctim.tv_nsec == b->ctim.tv_nsec;
}

static bool stat_settled(const file_stat *st)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    long long age =
        (long long)(now.tv_sec - st->ctim.tv_sec) * 1000000000LL + (now.tv_nsec - st->ctim.tv_nsec);
    return age >= STAT_SETTLE_NS;
}

static void version_of(const char *buf, size_t len, char ret[VERSION_LEN + 1])
{
    uint8_t d[SECRET_DIGEST_LEN];
    char hex[SECRET_HEX_LEN + 1];

    secret_digest(buf, len, d);
    secret_hex(d, hex);
    snprintf(ret, VERSION_LEN + 1, VERSION_PREFIX "%s", hex);
}

/* Reads fd to EOF, at most max bytes; *ret_buf is NUL-terminated. Every buffer it lets go
 * of is wiped: the file may be a version 1 document holding plaintext secrets. */
static int read_all(int fd, size_t size_hint, size_t max, char **ret_buf, size_t *ret_len)
{
    /* Room for max bytes, the NUL, and one more byte to notice a file over max. */
    if (max > SIZE_MAX / 2)
        max = SIZE_MAX / 2;
    size_t alloc = (size_hint < max ? size_hint : max) + 2, len = 0;
    if (alloc < 4096)
        alloc = 4096;
    char *buf = malloc(alloc);
    if (!buf)
        return -ENOMEM;

    int r;
    for (;;) {
        if (len + 1 >= alloc) {
            size_t n = alloc > max / 2 + 1 ? max + 2 : alloc * 2;
            char *b = malloc(n);
            if (!b) {
                r = -ENOMEM;
                goto fail;
            }
            memcpy(b, buf, len);
            secret_wipe(buf, alloc);
            free(buf);
            buf = b;
            alloc = n;
        }
        ssize_t k = read(fd, buf + len, alloc - 1 - len);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            r = negative_errno();
            goto fail;
        }
        if (k == 0)
            break;
        len += (size_t)k;
        if (len > max) {
            r = -EFBIG;
            goto fail;
        }
    }

    buf[len] = '\0';
    *ret_buf = buf;
    *ret_len = len;
    return 0;

fail:
    secret_wipe(buf, alloc);
    free(buf);
    return r;
}

/* Opens path for reading, refusing anything but a regular file. O_NONBLOCK so a FIFO at
 * that path cannot hang the open (it has no effect on regular files). */
static int open_regular(const char *path, struct stat *ret_st)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return negative_errno();
    if (fstat(fd, ret_st) < 0)
        return negative_errno();
    if (S_ISDIR(ret_st->st_mode))
        return -EISDIR;
    if (!S_ISREG(ret_st->st_mode))
        return -EINVAL;
    return TAKE_FD(fd);
}

int store_read_file(const char *path, size_t max, char **ret_buf, size_t *ret_len)
{
    struct stat st;
    _cleanup_close_ int fd = open_regular(path, &st);
    if (fd < 0)
        return fd;
    if ((uint64_t)st.st_size > max)
        return -EFBIG;
    return read_all(fd, (size_t)st.st_size, max, ret_buf, ret_len);
}

static int fsync_dir(const char *dir)
{
    _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return negative_errno();
    if (fsync(fd) < 0)
        return negative_errno();
    return 0;
}

/* Writes buf to tmp_path, makes it durable and renames it over path. owner, if non-NULL,
 * is the file being replaced: its owner is kept where we may (as root), so a root-run CLI
 * does not take the file away from the daemon's user. Error messages start with what. */
static int write_atomic(const char *path, const char *tmp_path, const char *dir_path,
                        const char *buf, size_t len, mode_t mode, const struct stat *owner,
                        const char *what, char **reterr)
{
    _cleanup_close_ int fd =
        open(tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW, mode);
    if (fd < 0) {
        int r = negative_errno();
        if (r == -ENOENT)
            return errors_fail(reterr, r, "%s: directory %s does not exist", what, dir_path);
        return errors_fail(reterr, r, "%s: open %s: %m", what, tmp_path);
    }

    int r = 0;
    const char *step = NULL;

    /* O_CREAT applied the umask, and an old tmp file keeps its mode: set it exactly. */
    if (fchmod(fd, mode) < 0) {
        r = negative_errno();
        step = "chmod";
        goto fail;
    }
    if (owner && fchown(fd, owner->st_uid, owner->st_gid) < 0 && errno != EPERM) {
        r = negative_errno();
        step = "chown";
        goto fail;
    }

    for (size_t off = 0; off < len;) {
        ssize_t k = write(fd, buf + off, len - off);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            r = negative_errno();
            step = "write";
            goto fail;
        }
        off += (size_t)k;
    }
    if (fsync(fd) < 0) {
        r = negative_errno();
        step = "fsync";
        goto fail;
    }
    if (close(TAKE_FD(fd)) < 0) {
        r = negative_errno();
        step = "close";
        goto fail;
    }
    if (rename(tmp_path, path) < 0) {
        r = negative_errno();
        step = "rename";
        goto fail;
    }
    /* Without this the rename itself may be lost on a crash. */
    r = fsync_dir(dir_path);
    if (r < 0)
        return errors_fail(reterr, r, "%s: fsync directory %s: %m", what, dir_path);
    return 0;

fail:
    unlink(tmp_path);
    return errors_fail(reterr, r, "%s: %s %s: %m", what, step, tmp_path);
}

/* "/a/b/c" → "/a/b"; "/c" → "/"; "c" → ".". */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

int store_write_file_atomic(const char *path, const char *buf, size_t len, unsigned mode,
                            char **reterr)
{
    _cleanup_free_ char *tmp = NULL, *dir = NULL;

    if (!path || !*path)
        return errors_fail(reterr, -EINVAL, "no path for the file");
    if (asprintf(&tmp, "%s.tmp", path) < 0)
        return -ENOMEM;
    dir = dir_of(path);
    if (!dir)
        return -ENOMEM;
    return write_atomic(path, tmp, dir, buf, len, (mode_t)mode & 07777, NULL, path, reterr);
}

/* --- the backend ------------------------------------------------------------------ */

static void file_free(void *impl)
{
    file_store *f = impl;
    if (!f)
        return;
    pthread_mutex_destroy(&f->mutex);
    free(f->path);
    free(f->tmp_path);
    free(f->lock_path);
    free(f->dir_path);
    free(f);
}

static int file_open(const char *url, const store_options *opts, void **ret_impl, char **reterr)
{
    const char *path = strncmp(url, "file://", 7) == 0 ? url + 7 : url;

    if (path[0] != '/')
        return errors_fail(reterr, -EINVAL,
                           "unsupported store URL '%s' (expected file:///path or "
                           "s3://bucket/object)",
                           url);
    size_t n = strlen(path);
    if (n + sizeof(".lock") > PATH_MAX)
        return errors_fail(reterr, -ENAMETOOLONG, "file store %s: path too long", path);
    if (path[n - 1] == '/')
        return errors_fail(reterr, -EISDIR, "file store %s: names a directory, not a file", path);

    file_store *f = calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    pthread_mutex_init(&f->mutex, NULL);
    f->path = strdup(path);
    f->dir_path = dir_of(path);
    f->tmp_path = malloc(n + sizeof(".lock"));
    f->lock_path = malloc(n + sizeof(".lock"));
    if (!f->path || !f->dir_path || !f->tmp_path || !f->lock_path) {
        file_free(f);
        return -ENOMEM;
    }
    snprintf(f->tmp_path, n + sizeof(".lock"), "%s.tmp", path);
    snprintf(f->lock_path, n + sizeof(".lock"), "%s.lock", path);

    *ret_impl = f;
    return 0;
}

/* Why a file is missing: no file (an empty store) or no directory (an error). */
static int missing(file_store *f, char **reterr)
{
    struct stat st;
    if (stat(f->dir_path, &st) < 0 && errno == ENOENT)
        return errors_fail(reterr, -ENOENT, "file store %s: directory %s does not exist", f->path,
                           f->dir_path);
    return 0;
}

/* Reads the file and its version; *ret_buf NULL and version "" if it does not exist. The
 * cache is updated when the file held still while being read. Called with the mutex held. */
static int read_current(file_store *f, char **ret_buf, size_t *ret_len,
                        char ret_version[VERSION_LEN + 1], char **reterr)
{
    struct stat st1, st2;
    _cleanup_free_ char *buf = NULL;
    size_t len = 0;

    _cleanup_close_ int fd = open_regular(f->path, &st1);
    if (fd == -ENOENT) {
        int r = missing(f, reterr);
        if (r < 0)
            return r;
        f->cached = false;
        *ret_buf = NULL;
        *ret_len = 0;
        ret_version[0] = '\0';
        return 0;
    }
    if (fd == -EISDIR || fd == -EINVAL)
        return errors_fail(reterr, fd, "file store %s: not a regular file", f->path);
    if (fd < 0)
        return errors_fail(reterr, fd, "file store %s: open: %m", f->path);
    if ((uint64_t)st1.st_size > LOAD_MAX)
        return errors_fail(reterr, -EFBIG, "file store %s: larger than 1 GiB", f->path);

    int r = read_all(fd, (size_t)st1.st_size, LOAD_MAX, &buf, &len);
    if (r == -EFBIG)
        return errors_fail(reterr, r, "file store %s: larger than 1 GiB", f->path);
    if (r < 0)
        return errors_fail(reterr, r, "file store %s: read: %m", f->path);

    version_of(buf, len, ret_version);

    file_stat a, b;
    stat_to(&st1, &a);
    f->cached = false;
    if (fstat(fd, &st2) == 0) {
        stat_to(&st2, &b);
        /* Changed while we read it: the stat may not belong to these bytes. */
        if (stat_equal(&a, &b) && stat_settled(&a)) {
            f->cache_stat = a;
            memcpy(f->cache_version, ret_version, VERSION_LEN + 1);
            f->cached = true;
        }
    }

    *ret_buf = TAKE_PTR(buf);
    *ret_len = len;
    return 0;
}

/* True if the file at path still has the stat the cached version came from. Called with
 * the mutex held. */
static bool cache_matches(file_store *f)
{
    struct stat st;
    file_stat now;

    if (!f->cached || stat(f->path, &st) < 0 || !S_ISREG(st.st_mode))
        return false;
    stat_to(&st, &now);
    return stat_equal(&now, &f->cache_stat);
}

static int file_load_locked(file_store *f, const char *if_not_version, char **ret_buf,
                            size_t *ret_len, char **ret_version, char **reterr)
{
    _cleanup_free_ char *buf = NULL;
    char version[VERSION_LEN + 1];
    size_t len;

    if (if_not_version && cache_matches(f) && strcmp(if_not_version, f->cache_version) == 0)
        return 1;

    int r = read_current(f, &buf, &len, version, reterr);
    if (r < 0)
        return r;

    if (if_not_version && strcmp(if_not_version, version) == 0) {
        if (buf)
            secret_wipe(buf, len);
        return 1;
    }

    char *v = strdup(version);
    if (!v) {
        if (buf)
            secret_wipe(buf, len);
        return -ENOMEM;
    }
    *ret_buf = TAKE_PTR(buf);
    *ret_len = len;
    *ret_version = v;
    return 0;
}

static int file_load(void *impl, const char *if_not_version, char **ret_buf, size_t *ret_len,
                     char **ret_version, char **reterr)
{
    file_store *f = impl;
    pthread_mutex_lock(&f->mutex);
    int r = file_load_locked(f, if_not_version, ret_buf, ret_len, ret_version, reterr);
    pthread_mutex_unlock(&f->mutex);
    return r;
}

static int file_write_locked(file_store *f, const char *expected_version, const char *buf,
                             size_t len, char **ret_version, char **reterr)
{
    char current[VERSION_LEN + 1], version[VERSION_LEN + 1];
    struct stat st;
    bool exists;

    if (cache_matches(f))
        memcpy(current, f->cache_version, sizeof(current));
    else {
        _cleanup_free_ char *old = NULL;
        size_t old_len = 0;
        int r = read_current(f, &old, &old_len, current, reterr);
        if (r < 0)
            return r;
        if (old)
            secret_wipe(old, old_len);
    }

    if (strcmp(current, expected_version ? expected_version : "") != 0)
        return errors_fail(reterr, -ESTALE, "file store %s: changed since it was read", f->path);

    exists = stat(f->path, &st) == 0;
    mode_t mode = exists ? st.st_mode & 07777 : 0600;

    _cleanup_free_ char *what = NULL;
    if (asprintf(&what, "file store %s", f->path) < 0)
        return -ENOMEM;

    f->cached = false;
    int r = write_atomic(f->path, f->tmp_path, f->dir_path, buf, len, mode, exists ? &st : NULL,
                         what, reterr);
    if (r < 0)
        return r;

    if (ret_version) {
        version_of(buf, len, version);
        *ret_version = strdup(version);
        if (!*ret_version)
            return -ENOMEM;
    }
    return 0;
}

static int file_write(void *impl, const char *expected_version, const char *buf, size_t len,
                      char **ret_version, char **reterr)
{
    file_store *f = impl;
    pthread_mutex_lock(&f->mutex);
    int r = file_write_locked(f, expected_version, buf, len, ret_version, reterr);
    pthread_mutex_unlock(&f->mutex);
    return r;
}

static int file_lock(void *impl, char **reterr)
{
    file_store *f = impl;

    _cleanup_close_ int fd =
        open(f->lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW, 0600);
    if (fd < 0) {
        int r = negative_errno();
        if (r == -ENOENT)
            return errors_fail(reterr, r, "file store %s: directory %s does not exist", f->path,
                               f->dir_path);
        return errors_fail(reterr, r, "file store %s: lock %s: %m", f->path, f->lock_path);
    }
    /* root (heare-auth --store) must not leave a lock the daemon's user cannot open: the
     * lock belongs to whoever owns the store (or, before it exists, its directory). */
    struct stat lock_st, owner_st;
    if (geteuid() == 0 && fstat(fd, &lock_st) == 0 &&
        (stat(f->path, &owner_st) == 0 || stat(f->dir_path, &owner_st) == 0) &&
        (lock_st.st_uid != owner_st.st_uid || lock_st.st_gid != owner_st.st_gid))
        (void)fchown(fd, owner_st.st_uid, owner_st.st_gid);

    /* Polled: a blocking flock could only be bounded with a signal, which library code must
     * not set up. */
    int64_t start = timeutil_monotonic_ms();
    for (;;) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            return TAKE_FD(fd);
        if (errno == EINTR)
            continue;
        if (errno != EWOULDBLOCK)
            return errors_fail(reterr, negative_errno(), "file store %s: lock %s: %m", f->path,
                               f->lock_path);
        if (timeutil_monotonic_ms() - start >= LOCK_WAIT_MS)
            return errors_fail(reterr, -ETIMEDOUT, "file store %s: lock %s held for %d s", f->path,
                               f->lock_path, LOCK_WAIT_MS / 1000);
        struct timespec ts = {.tv_nsec = LOCK_POLL_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static void file_unlock(void *impl, int token)
{
    /* Closing the only descriptor of that open file releases the flock. */
    safe_close(token);
}

const store_backend store_backend_file = {
    .scheme = "file",
    .open = file_open,
    .free = file_free,
    .load = file_load,
    .write = file_write,
    .lock = file_lock,
    .unlock = file_unlock,
};
