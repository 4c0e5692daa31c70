/* store: picks the backend for a store URL and builds read-modify-write on load and
 * conditional write. */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "errors.h"
#include "json-util.h"
#include "keydoc.h"
#include "secret.h"
#include "store-backend.h"

/* Conflicts come from writers on other hosts (a file store's local writers hold its lock).
 * A writer that lost a race sleeps while the winner goes on with its next write at once, so
 * while a peer is busy (a burst of admin writes) each try is roughly a coin toss: what
 * bounds the chance of giving up is the number of tries, not the length of the sleeps.
 * Hence many tries with short sleeps: 10 ms doubling to 250 ms, 25 tries, about 5 s of
 * sleeping in all (one GET and one PUT per try on S3), and a give-up chance near 2^-25
 * per write against a busy peer. With 10 tries of up to 1 s it was 2^-10 per write, seen
 * in the 2 x 50 concurrent creates of tests/e2e/test_s3.py. */
#define UPDATE_ATTEMPTS 25
#define BACKOFF_FIRST_MS 10
#define BACKOFF_MAX_MS 250

/* store_load() keeps whole documents up to this size in memory. */
#define LOAD_MAX ((size_t)1 << 30)
#define LOAD_FIRST_ALLOC ((size_t)64 << 10)

struct store {
    char *url;
    const store_backend *backend;
    void *impl;
};

int store_open_with(const char *url, const store_options *opts, store **ret, char **reterr)
{
    static const store_options defaults = {};
    const store_backend *backend;

    if (!url)
        return errors_fail(reterr, -EINVAL, "no store URL");

    if (strncmp(url, "file://", 7) == 0 || url[0] == '/')
        backend = &store_backend_file;
    else if (strncmp(url, "s3://", 5) == 0)
        backend = &store_backend_s3;
    else
        return errors_fail(reterr, -EINVAL,
                           "unsupported store URL '%s' (expected file:///path or "
                           "s3://bucket/object)",
                           url);

    _cleanup_free_ store *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->url = strdup(url);
    if (!s->url)
        return -ENOMEM;
    s->backend = backend;

    int r = backend->open(url, opts ? opts : &defaults, &s->impl, reterr);
    if (r < 0) {
        free(s->url);
        return r;
    }

    *ret = TAKE_PTR(s);
    return 0;
}

int store_open(const char *url, store **ret, char **reterr)
{
    return store_open_with(url, NULL, ret, reterr);
}

store *store_free(store *s)
{
    if (!s)
        return NULL;
    if (s->impl)
        s->backend->free(s->impl);
    free(s->url);
    free(s);
    return NULL;
}

const char *store_url(const store *s)
{
    return s->url;
}

int store_load_stream(store *s, const char *if_not_version, const store_sink *sink,
                      bool *ret_exists, char **ret_version, char **reterr)
{
    bool exists = false;

    if (!sink || !sink->begin || !sink->data)
        return errors_fail(reterr, -EINVAL, "%s: load: no sink", s->url);
    int r = s->backend->load(s->impl, if_not_version, sink, &exists, ret_version, reterr);
    if (r == 0 && ret_exists)
        *ret_exists = exists;
    return r;
}

/* The sink of store_load(): one growing buffer. Every buffer it lets go of is wiped: the
 * document may be a version 1 file holding plaintext secrets. */
typedef struct buffer_sink {
    char *buf;
    size_t len, alloc;
    bool too_big;
} buffer_sink;

static void buffer_sink_done(buffer_sink *b)
{
    if (b->buf)
        secret_wipe(b->buf, b->alloc);
    free(b->buf);
    *b = (buffer_sink){};
}

static int buffer_begin(void *userdata)
{
    buffer_sink *b = userdata;
    if (b->buf)
        secret_wipe(b->buf, b->len);
    b->len = 0;
    return 0;
}

static int buffer_data(void *userdata, const char *p, size_t n)
{
    buffer_sink *b = userdata;

    if (n > LOAD_MAX - b->len) {
        b->too_big = true;
        return -EFBIG;
    }
    /* Room for the bytes and a NUL. */
    if (b->len + n + 1 > b->alloc) {
        size_t alloc = b->alloc ? b->alloc : LOAD_FIRST_ALLOC;
        while (alloc < b->len + n + 1)
            alloc = alloc > LOAD_MAX / 2 ? LOAD_MAX + 1 : alloc * 2;
        char *nb = malloc(alloc);
        if (!nb)
            return -ENOMEM;
        if (b->buf) {
            memcpy(nb, b->buf, b->len);
            secret_wipe(b->buf, b->alloc);
            free(b->buf);
        }
        b->buf = nb;
        b->alloc = alloc;
    }
    memcpy(b->buf + b->len, p, n);
    b->len += n;
    return 0;
}

/* store_load() on the backend, without the argument check. */
static int load_buffer(store *s, const char *if_not_version, char **ret_buf, size_t *ret_len,
                       char **ret_version, char **reterr)
{
    _cleanup_(buffer_sink_done) buffer_sink b = {};
    store_sink sink = {.begin = buffer_begin, .data = buffer_data, .userdata = &b};
    char *version = NULL;
    bool exists = false;

    int r = s->backend->load(s->impl, if_not_version, &sink, &exists, &version, reterr);
    if (r == -EFBIG && b.too_big)
        return errors_fail(reterr, r, "%s: the document is larger than 1 GiB", s->url);
    if (r != 0)
        return r;

    if (exists && !b.buf) {
        /* An empty document: still a buffer, as callers tell "none" by NULL. */
        b.buf = malloc(1);
        if (!b.buf) {
            free(version);
            return -ENOMEM;
        }
        b.alloc = 1;
    }
    if (b.buf)
        b.buf[b.len] = '\0';
    *ret_buf = exists ? TAKE_PTR(b.buf) : NULL;
    *ret_len = exists ? b.len : 0;
    *ret_version = version;
    return 0;
}

int store_load(store *s, const char *if_not_version, char **ret_buf, size_t *ret_len,
               char **ret_version, char **reterr)
{
    return load_buffer(s, if_not_version, ret_buf, ret_len, ret_version, reterr);
}

static int lock(store *s, char **reterr)
{
    return s->backend->lock ? s->backend->lock(s->impl, reterr) : -1;
}

static void unlock(store *s, int token)
{
    if (s->backend->unlock && token >= 0)
        s->backend->unlock(s->impl, token);
}

int store_write(store *s, const char *expected_version, const char *buf, size_t len,
                char **ret_version, char **reterr)
{
    int token = lock(s, reterr);
    if (s->backend->lock && token < 0)
        return token;

    int r = s->backend->write(s->impl, expected_version, buf, len, ret_version, reterr);
    unlock(s, token);
    return r;
}

/* Sleeps before retry number attempt (1-based): 10 ms doubling up to 250 ms, each ±50 %,
 * so writers that collided do not collide again in lockstep. */
static void backoff(unsigned attempt, unsigned *seed)
{
    unsigned shift = attempt - 1 < 16 ? attempt - 1 : 16;
    uint64_t base = (uint64_t)BACKOFF_FIRST_MS << shift;
    if (base > BACKOFF_MAX_MS)
        base = BACKOFF_MAX_MS;

    /* base/2 + [0, base): ±50 % around base. */
    uint64_t ms = base / 2 + (uint64_t)rand_r(seed) % base;
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* One cycle of store_update: load, change, validate, write; the lock is held by the
 * caller. */
static int update_once(store *s, store_mutator_t fn, void *userdata, json_t **ret_doc,
                       char **ret_version, char **reterr)
{
    _cleanup_free_ char *buf = NULL, *version = NULL, *out = NULL, *err = NULL;
    _cleanup_json_ json_t *doc = NULL;
    size_t len = 0, out_len = 0;

    int r = load_buffer(s, NULL, &buf, &len, &version, reterr);
    if (r < 0)
        return r;

    if (!buf) {
        doc = keydoc_new();
        if (!doc)
            return -ENOMEM;
    } else {
        r = keydoc_parse(buf, len, &doc, NULL, &err);
        /* A version 1 file holds plaintext secrets. */
        secret_wipe(buf, len);
        if (r < 0)
            return errors_fail(reterr, r, "%s: document rejected: %s", s->url,
                               err ? err : "invalid document");
    }

    r = fn(doc, userdata);
    if (r < 0) {
        if (reterr)
            *reterr = NULL; /* the mutator reports its own errors */
        return r;
    }

    r = keydoc_validate(doc, &err);
    if (r < 0)
        return errors_fail(reterr, r, "%s: document rejected: %s", s->url,
                           err ? err : "invalid document");

    r = keydoc_dump(doc, &out, &out_len);
    if (r < 0)
        return errors_fail(reterr, r, "%s: serialize: %m", s->url);

    r = s->backend->write(s->impl, version, out, out_len, ret_version, reterr);
    if (r < 0)
        return r;

    if (ret_doc)
        *ret_doc = TAKE_PTR(doc);
    return 0;
}

int store_update(store *s, store_mutator_t fn, void *userdata, json_t **ret_doc, char **ret_version,
                 char **reterr)
{
    unsigned seed;

    /* Per-call state, so concurrent callers need no shared random generator. */
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed)) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        seed = (unsigned)ts.tv_nsec ^ (unsigned)getpid();
    }

    for (unsigned attempt = 0; attempt < UPDATE_ATTEMPTS; attempt++) {
        _cleanup_free_ char *err = NULL;
        json_t *doc = NULL;
        char *version = NULL;

        if (attempt > 0)
            backoff(attempt, &seed);

        int token = lock(s, reterr);
        if (s->backend->lock && token < 0)
            return token;
        int r = update_once(s, fn, userdata, &doc, &version, &err);
        unlock(s, token);

        if (r == -ESTALE)
            continue;
        if (r < 0) {
            if (reterr)
                *reterr = TAKE_PTR(err);
            return r;
        }

        if (ret_doc)
            *ret_doc = doc;
        else
            json_decref(doc);
        if (ret_version)
            *ret_version = version;
        else
            free(version);
        return 0;
    }

    return errors_fail(reterr, -ESTALE, "%s: conflict: the store changed during %d attempts",
                       s->url, UPDATE_ATTEMPTS);
}
