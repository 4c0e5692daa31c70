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

int store_load(store *s, const char *if_not_version, char **ret_buf, size_t *ret_len,
               char **ret_version, char **reterr)
{
    return s->backend->load(s->impl, if_not_version, ret_buf, ret_len, ret_version, reterr);
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

    int r = s->backend->load(s->impl, NULL, &buf, &len, &version, reterr);
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
