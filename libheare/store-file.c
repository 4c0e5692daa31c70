/* store-file: the local-file store backend (flock, tmp + fsync + rename, versions by
 * SHA-256 of the bytes read) and the generic whole-file read and atomic write helpers. Reads
 * stream through one fixed buffer, so a document of any size costs CHUNK_SIZE here. */
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

#include <openssl/evp.h>

#include "errors.h"
#include "secret.h"
#include "store-backend.h"
#include "timeutil.h"

#define CHUNK_SIZE ((size_t)1 << 20)
#define LOCK_WAIT_MS 10000
#define LOCK_POLL_MS 10
/* Coarse file timestamps (a kernel tick, or whole seconds on some filesystems) cannot tell
 * two writes apart within this window, so a stat that recent is not trusted to mean
 * "unchanged". */
#define STAT_SETTLE_NS (2LL * 1000000000)
/* Opening "<path>.tmp" races with a writer renaming it away; that many tries. */
#define WRITER_OPEN_TRIES 4

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
    /* The daemon's poller and its writers may share one store: the mutex guards the fields
     * below, never a whole read (writers are serialized by the flock). */
    pthread_mutex_t mutex;
    /* The stat that produced the last version handed out, and that version. */
    bool cached;
    file_stat cache_stat;
    char cache_version[VERSION_LEN + 1];
    /* The size of the last content hashed (read or written) and its version: a fact that
     * stays true, so a file of another size is known to have another version unread. */
    bool known;
    uint64_t known_size;
    char known_version[VERSION_LEN + 1];
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

static void version_from_digest(const uint8_t d[SECRET_DIGEST_LEN], char ret[VERSION_LEN + 1])
{
    char hex[SECRET_HEX_LEN + 1];

    secret_hex(d, hex);
    snprintf(ret, VERSION_LEN + 1, VERSION_PREFIX "%s", hex);
}

static void version_of(const char *buf, size_t len, char ret[VERSION_LEN + 1])
{
    uint8_t d[SECRET_DIGEST_LEN];

    secret_digest(buf, len, d);
    version_from_digest(d, ret);
}

/* The read buffer: wiped when freed, as it held a document that may be a version 1 file
 * with plaintext secrets. */
static void chunk_freep(char **p)
{
    if (*p)
        secret_wipe(*p, CHUNK_SIZE);
    free(*p);
}

static void md_ctx_freep(EVP_MD_CTX **c)
{
    EVP_MD_CTX_free(*c); /* cleanses it */
}

/* Reads fd from its start to EOF through buf (CHUNK_SIZE bytes): every byte goes into the
 * version, and, if sink is non-NULL, to the sink after one begin(). Returns 0 with
 * ret_version and *ret_size; a sink's error as is, with *ret_sink_failed set; other -errno
 * for a failed read. */
static int read_pass(int fd, char *buf, const store_sink *sink, char ret_version[VERSION_LEN + 1],
                     uint64_t *ret_size, bool *ret_sink_failed)
{
    _cleanup_(md_ctx_freep) EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t d[SECRET_DIGEST_LEN];
    unsigned d_len = 0;
    uint64_t size = 0;
    int r;

    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
        return -ENOMEM;
    if (sink) {
        r = sink->begin(sink->userdata);
        if (r < 0) {
            *ret_sink_failed = true;
            return r;
        }
    }

    for (;;) {
        /* pread from the start, so a second pass needs no seek. */
        ssize_t k = pread(fd, buf, CHUNK_SIZE, (off_t)size);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return negative_errno();
        }
        if (k == 0)
            break;
        if (EVP_DigestUpdate(ctx, buf, (size_t)k) != 1)
            return -ENOMEM;
        size += (uint64_t)k;
        if (sink) {
            r = sink->data(sink->userdata, buf, (size_t)k);
            if (r < 0) {
                *ret_sink_failed = true;
                return r;
            }
        }
    }

    if (EVP_DigestFinal_ex(ctx, d, &d_len) != 1 || d_len != SECRET_DIGEST_LEN)
        return -ENOMEM;
    version_from_digest(d, ret_version);
    *ret_size = size;
    return 0;
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

/* --- the atomic writer ------------------------------------------------------------ */

struct store_file_writer {
    char *path, *tmp_path, *dir_path;
    char *what; /* how messages start: the path, or "file store <path>" */
    int fd;     /* on tmp_path, holding a flock on it */
};

static void writer_free(store_file_writer *w)
{
    if (!w)
        return;
    safe_close(w->fd);
    free(w->path);
    free(w->tmp_path);
    free(w->dir_path);
    free(w->what);
    free(w);
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

/* Opens w->tmp_path, locked, as the file w writes. A crash leaves a "<path>.tmp" behind,
 * never a partial path; the next writer truncates it. The flock keeps two writers from
 * truncating each other's file; a writer that got the lock checks the name still leads to
 * what it opened, as the previous holder renames it over path before it lets go. */
static int writer_open_tmp(store_file_writer *w, mode_t mode, char **reterr)
{
    for (unsigned attempt = 1;; attempt++) {
        struct stat fst, lst;

        _cleanup_close_ int fd = open(
            w->tmp_path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW | O_NONBLOCK, mode);
        if (fd < 0) {
            int r = negative_errno();
            if (r == -ENOENT)
                return errors_fail(reterr, r, "%s: directory %s does not exist", w->what,
                                   w->dir_path);
            if (r == -ENXIO) /* a FIFO or socket, with O_NONBLOCK */
                return errors_fail(reterr, -EINVAL, "%s: %s is not a regular file", w->what,
                                   w->tmp_path);
            return errors_fail(reterr, r, "%s: open %s: %m", w->what, w->tmp_path);
        }
        if (fstat(fd, &fst) < 0)
            return errors_fail(reterr, negative_errno(), "%s: stat %s: %m", w->what, w->tmp_path);
        if (!S_ISREG(fst.st_mode))
            return errors_fail(reterr, -EINVAL, "%s: %s is not a regular file", w->what,
                               w->tmp_path);
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
            if (errno == EWOULDBLOCK)
                return errors_fail(reterr, -EBUSY, "%s: another writer is writing %s", w->what,
                                   w->tmp_path);
            return errors_fail(reterr, negative_errno(), "%s: lock %s: %m", w->what, w->tmp_path);
        }
        if (lstat(w->tmp_path, &lst) == 0 && lst.st_dev == fst.st_dev && lst.st_ino == fst.st_ino) {
            w->fd = TAKE_FD(fd);
            return 0;
        }
        if (attempt >= WRITER_OPEN_TRIES)
            return errors_fail(reterr, -EBUSY, "%s: another writer is writing %s", w->what,
                               w->tmp_path);
    }
}

/* Starts an atomic write of path through tmp_path. owner, if non-NULL, is the file being
 * replaced: its owner is kept where we may (as root), so a root-run CLI does not take the
 * file away from the daemon's user. Error messages start with what. */
static int writer_open(const char *path, const char *tmp_path, const char *dir_path, mode_t mode,
                       const struct stat *owner, const char *what, store_file_writer **ret,
                       char **reterr)
{
    store_file_writer *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->fd = -1;
    w->path = strdup(path);
    w->tmp_path = strdup(tmp_path);
    w->dir_path = strdup(dir_path);
    w->what = strdup(what);
    if (!w->path || !w->tmp_path || !w->dir_path || !w->what) {
        writer_free(w);
        return -ENOMEM;
    }

    int r = writer_open_tmp(w, mode, reterr);
    if (r < 0) {
        writer_free(w);
        return r;
    }

    const char *step = NULL;
    /* Left over from a crash: start empty. */
    if (ftruncate(w->fd, 0) < 0)
        step = "truncate";
    /* O_CREAT applied the umask, and an old tmp file keeps its mode: set it exactly. */
    else if (fchmod(w->fd, mode) < 0)
        step = "chmod";
    else if (owner && fchown(w->fd, owner->st_uid, owner->st_gid) < 0 && errno != EPERM)
        step = "chown";
    if (step) {
        r = errors_fail(reterr, negative_errno(), "%s: %s %s: %m", w->what, step, w->tmp_path);
        store_file_writer_abort(w);
        return r;
    }

    *ret = w;
    return 0;
}

int store_file_writer_open(const char *path, unsigned mode, store_file_writer **ret, char **reterr)
{
    _cleanup_free_ char *tmp = NULL, *dir = NULL;

    if (!path || !*path)
        return errors_fail(reterr, -EINVAL, "no path for the file");
    /* Found out now rather than by the rename at the end. */
    struct stat st;
    if (path[strlen(path) - 1] == '/' || (stat(path, &st) == 0 && S_ISDIR(st.st_mode)))
        return errors_fail(reterr, -EISDIR, "%s: names a directory, not a file", path);
    if (asprintf(&tmp, "%s.tmp", path) < 0)
        return -ENOMEM;
    dir = dir_of(path);
    if (!dir)
        return -ENOMEM;
    return writer_open(path, tmp, dir, (mode_t)mode & 07777, NULL, path, ret, reterr);
}

int store_file_writer_write(store_file_writer *w, const char *buf, size_t len, char **reterr)
{
    for (size_t off = 0; off < len;) {
        ssize_t k = write(w->fd, buf + off, len - off);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return errors_fail(reterr, negative_errno(), "%s: write %s: %m", w->what, w->tmp_path);
        }
        off += (size_t)k;
    }
    return 0;
}

int store_file_writer_commit(store_file_writer *w, char **reterr)
{
    const char *step = NULL;
    int r;

    /* fsync reports what close would (NFS included); the descriptor, and with it the
     * flock, is kept until the rename is done, so no other writer can open and truncate
     * the file on its way to becoming path. */
    if (fsync(w->fd) < 0)
        step = "fsync";
    else if (rename(w->tmp_path, w->path) < 0)
        step = "rename";
    if (step) {
        r = errors_fail(reterr, negative_errno(), "%s: %s %s: %m", w->what, step, w->tmp_path);
        store_file_writer_abort(w);
        return r;
    }

    /* Without this the rename itself may be lost on a crash. */
    r = fsync_dir(w->dir_path);
    if (r < 0)
        r = errors_fail(reterr, r, "%s: fsync directory %s: %m", w->what, w->dir_path);
    writer_free(w);
    return r;
}

void store_file_writer_abort(store_file_writer *w)
{
    if (!w)
        return;
    /* Still locked by us, so still ours to remove. */
    if (w->fd >= 0)
        unlink(w->tmp_path);
    writer_free(w);
}

/* Writes buf to path through a writer. */
static int write_atomic(const char *path, const char *tmp_path, const char *dir_path,
                        const char *buf, size_t len, mode_t mode, const struct stat *owner,
                        const char *what, char **reterr)
{
    store_file_writer *w = NULL;

    int r = writer_open(path, tmp_path, dir_path, mode, owner, what, &w, reterr);
    if (r < 0)
        return r;
    r = store_file_writer_write(w, buf, len, reterr);
    if (r < 0) {
        store_file_writer_abort(w);
        return r;
    }
    return store_file_writer_commit(w, reterr);
}

int store_write_file_atomic(const char *path, const char *buf, size_t len, unsigned mode,
                            char **reterr)
{
    _cleanup_(store_file_writer_abortp) store_file_writer *w = NULL;

    int r = store_file_writer_open(path, mode, &w, reterr);
    if (r < 0)
        return r;
    r = store_file_writer_write(w, buf, len, reterr);
    if (r < 0)
        return r;
    return store_file_writer_commit(TAKE_PTR(w), reterr);
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

/* Opens the file as it is now. Returns 0 with *ret_fd (-1: there is no file, an empty
 * store) and *ret_st, or -errno with *reterr. */
static int open_current(file_store *f, int *ret_fd, struct stat *ret_st, char **reterr)
{
    int fd = open_regular(f->path, ret_st);
    if (fd == -ENOENT) {
        int r = missing(f, reterr);
        if (r < 0)
            return r;
        pthread_mutex_lock(&f->mutex);
        f->cached = false;
        pthread_mutex_unlock(&f->mutex);
        *ret_fd = -1;
        return 0;
    }
    if (fd == -EISDIR || fd == -EINVAL)
        return errors_fail(reterr, fd, "file store %s: not a regular file", f->path);
    if (fd < 0)
        return errors_fail(reterr, fd, "file store %s: open: %m", f->path);
    *ret_fd = fd;
    return 0;
}

/* Takes note of version, the hash of size bytes read from fd, whose stat before the read
 * was st: the stat shortcut is kept only if the file held still while being read (the
 * stat, taken again on the descriptor read, is unchanged and settled). */
static void remember(file_store *f, int fd, const struct stat *st, const char *version,
                     uint64_t size)
{
    struct stat st2;
    file_stat a, b;
    bool still;

    stat_to(st, &a);
    still = fstat(fd, &st2) == 0;
    if (still) {
        stat_to(&st2, &b);
        still = stat_equal(&a, &b) && (uint64_t)a.size == size && stat_settled(&a);
    }

    pthread_mutex_lock(&f->mutex);
    f->cached = still;
    if (still) {
        f->cache_stat = a;
        memcpy(f->cache_version, version, VERSION_LEN + 1);
    }
    f->known = true;
    f->known_size = size;
    memcpy(f->known_version, version, VERSION_LEN + 1);
    pthread_mutex_unlock(&f->mutex);
}

static void remember_written(file_store *f, const char *version, uint64_t size)
{
    pthread_mutex_lock(&f->mutex);
    f->cached = false;
    f->known = true;
    f->known_size = size;
    memcpy(f->known_version, version, VERSION_LEN + 1);
    pthread_mutex_unlock(&f->mutex);
}

static void forget(file_store *f)
{
    pthread_mutex_lock(&f->mutex);
    f->cached = false;
    pthread_mutex_unlock(&f->mutex);
}

/* True if the file at path still has the stat the cached version came from, and that is
 * version (NULL: any); copies the cached version to ret (may be NULL). */
static bool cache_hit(file_store *f, const char *version, char ret[VERSION_LEN + 1])
{
    struct stat st;
    file_stat now;
    bool hit = false;

    pthread_mutex_lock(&f->mutex);
    if (f->cached && stat(f->path, &st) == 0 && S_ISREG(st.st_mode)) {
        stat_to(&st, &now);
        hit = stat_equal(&now, &f->cache_stat) &&
              (!version || strcmp(version, f->cache_version) == 0);
        if (hit && ret)
            memcpy(ret, f->cache_version, VERSION_LEN + 1);
    }
    pthread_mutex_unlock(&f->mutex);
    return hit;
}

/* Whether a file of size bytes may have version v: only a version of ours can match, and
 * not one known to belong to content of another size. */
static bool may_match(file_store *f, const char *v, uint64_t size)
{
    if (strlen(v) != VERSION_LEN || strncmp(v, VERSION_PREFIX, strlen(VERSION_PREFIX)) != 0)
        return false;
    pthread_mutex_lock(&f->mutex);
    bool other = f->known && f->known_size != size && strcmp(f->known_version, v) == 0;
    pthread_mutex_unlock(&f->mutex);
    return !other;
}

static int file_load(void *impl, const char *if_not_version, const store_sink *sink,
                     bool *ret_exists, char **ret_version, char **reterr)
{
    file_store *f = impl;
    _cleanup_(chunk_freep) char *buf = NULL;
    _cleanup_close_ int fd = -1;
    char version[VERSION_LEN + 1];
    bool sink_failed = false;
    uint64_t size = 0;
    struct stat st;

    if (if_not_version && cache_hit(f, if_not_version, NULL))
        return 1;

    int r = open_current(f, &fd, &st, reterr);
    if (r < 0)
        return r;
    if (fd < 0) {
        if (if_not_version && !*if_not_version)
            return 1;
        char *v = strdup("");
        if (!v)
            return -ENOMEM;
        *ret_exists = false;
        *ret_version = v;
        return 0;
    }

    buf = malloc(CHUNK_SIZE);
    if (!buf)
        return -ENOMEM;

    /* Unchanged means nothing for the sink, so when the stat could not tell, a first pass
     * only hashes. */
    if (if_not_version && may_match(f, if_not_version, (uint64_t)st.st_size)) {
        r = read_pass(fd, buf, NULL, version, &size, &sink_failed);
        if (r < 0)
            return errors_fail(reterr, r, "file store %s: read: %m", f->path);
        remember(f, fd, &st, version, size);
        if (strcmp(version, if_not_version) == 0)
            return 1;
    }

    /* The version returned is that of the bytes the sink got, even if the file changed
     * since the first pass (the descriptor holds the same inode; an in-place edit shows). */
    r = read_pass(fd, buf, sink, version, &size, &sink_failed);
    if (sink_failed)
        return r;
    if (r < 0)
        return errors_fail(reterr, r, "file store %s: read: %m", f->path);
    remember(f, fd, &st, version, size);

    char *v = strdup(version);
    if (!v)
        return -ENOMEM;
    *ret_exists = true;
    *ret_version = v;
    return 0;
}

/* The version of the file as it is now ("" if there is none): from the stat shortcut, or
 * by hashing it. */
static int current_version(file_store *f, char ret[VERSION_LEN + 1], char **reterr)
{
    _cleanup_(chunk_freep) char *buf = NULL;
    _cleanup_close_ int fd = -1;
    bool sink_failed = false;
    uint64_t size = 0;
    struct stat st;

    if (cache_hit(f, NULL, ret))
        return 0;

    int r = open_current(f, &fd, &st, reterr);
    if (r < 0)
        return r;
    if (fd < 0) {
        ret[0] = '\0';
        return 0;
    }
    buf = malloc(CHUNK_SIZE);
    if (!buf)
        return -ENOMEM;
    r = read_pass(fd, buf, NULL, ret, &size, &sink_failed);
    if (r < 0)
        return errors_fail(reterr, r, "file store %s: read: %m", f->path);
    remember(f, fd, &st, ret, size);
    return 0;
}

/* Called with the store's flock held (store.c), so writers do not race each other. */
static int file_write(void *impl, const char *expected_version, const char *buf, size_t len,
                      char **ret_version, char **reterr)
{
    file_store *f = impl;
    char current[VERSION_LEN + 1], version[VERSION_LEN + 1];
    struct stat st;
    bool exists;

    int r = current_version(f, current, reterr);
    if (r < 0)
        return r;
    if (strcmp(current, expected_version ? expected_version : "") != 0)
        return errors_fail(reterr, -ESTALE, "file store %s: changed since it was read", f->path);

    exists = stat(f->path, &st) == 0;
    mode_t mode = exists ? st.st_mode & 07777 : 0600;

    _cleanup_free_ char *what = NULL;
    if (asprintf(&what, "file store %s", f->path) < 0)
        return -ENOMEM;

    forget(f);
    r = write_atomic(f->path, f->tmp_path, f->dir_path, buf, len, mode, exists ? &st : NULL, what,
                     reterr);
    if (r < 0)
        return r;

    version_of(buf, len, version);
    remember_written(f, version, len);
    if (ret_version) {
        *ret_version = strdup(version);
        if (!*ret_version)
            return -ENOMEM;
    }
    return 0;
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
