/* state: the keystore the serving loops read, published by RCU pointer swap, and the one
 * store thread that owns every store read and write (polls, SIGHUP, Refresh, admin
 * writes), so the serving loops never block on I/O and never take a lock to verify. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>
#include <urcu-qsbr.h>

#include "daemon.h"
#include "json-util.h"
#include "keydoc.h"
#include "keyload.h"
#include "keyops.h"
#include "log.h"
#include "metrics.h"
#include "macro.h"
#include "secret.h"
#include "store.h"
#include "timeutil.h"

/* Readers: rcu_dereference() on a registered serving loop. Writer: the store thread only
 * (and state_init before any reader exists). */
static snapshot *g_snap;

/* At most this many admin writes share one read-modify-write of the store. */
#define WRITE_GROUP_MAX 128

/* How much the store thread yields to the serving loops (nice value, 0..19). */
#define STORE_THREAD_NICE 10

static const conf *g_conf;
static store *g_store;
static char *g_version;        /* version token of the document the published keystore came from */
static bool g_from_cache;      /* it came from the last-known-good cache */
static uint64_t g_generation;

/* g_lock guards the health fields and the job queue. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond;
static const char *g_status = "unhealthy";
static char *g_last_error;
static int64_t g_loaded_at;
static int64_t g_started_at;
static size_t g_keys_loaded;
static job *g_queue_head, *g_queue_tail;
static bool g_reload_requested;
static bool g_stopping;
static pthread_t g_thread;
static bool g_thread_started;

const snapshot *state_snapshot(void)
{
    return rcu_dereference(g_snap);
}

keystate *snapshot_state(const snapshot *snap, const keystore_key *k)
{
    return snap->states[keystore_key_index(snap->ks, k)];
}

const conf *state_conf(void)
{
    return g_conf;
}

static snapshot *snapshot_free(snapshot *snap)
{
    if (!snap)
        return NULL;
    size_t n = keystore_size(snap->ks);
    for (size_t i = 0; snap->states && i < n; i++)
        keystate_unref(snap->states[i]);
    free(snap->states);
    keystore_free(snap->ks);
    free(snap);
    return NULL;
}

/* Pairs ks with the states of its keys: a key the previous snapshot had keeps its counters
 * and bucket, a new key gets fresh ones. Takes ks. */
static snapshot *snapshot_new(keystore *ks, const snapshot *prev)
{
    size_t n = keystore_size(ks);
    snapshot *snap = calloc(1, sizeof(*snap));
    if (!snap) {
        keystore_free(ks);
        return NULL;
    }
    snap->ks = ks;
    snap->states = calloc(n ? n : 1, sizeof(*snap->states));
    if (!snap->states)
        return snapshot_free(snap);
    for (size_t i = 0; i < n; i++) {
        const keystore_key *k = keystore_at(ks, i);
        const keystore_key *old = prev ? keystore_get(prev->ks, keystore_key_id(k)) : NULL;
        keystate *st = old ? snapshot_state(prev, old) : keystate_new();
        if (!st)
            return snapshot_free(snap); /* the slots not filled yet are NULL */
        keystate_ref(st);
        snap->states[i] = st;
        uint32_t per_second, burst;
        keystore_key_rate_limit(k, &per_second, &burst);
        if (keystate_set_limit(st, per_second, burst) < 0)
            return snapshot_free(snap);
    }
    return snap;
}

void state_get_health(state_health *h)
{
    pthread_mutex_lock(&g_lock);
    *h = (state_health){
        .status = g_status,
        .keys_loaded = g_keys_loaded,
        .generation = g_generation,
        .loaded_at = g_loaded_at,
        .last_error = g_last_error ? strdup(g_last_error) : NULL,
        .started_at = g_started_at,
    };
    pthread_mutex_unlock(&g_lock);
}

job *job_new(job_kind kind, const json_t *params)
{
    job *j = calloc(1, sizeof(*j));
    /* The store thread gets its own copy: the caller's message is freed after dispatch. */
    if (!j || !(j->params = params ? json_deep_copy(params) : json_object()))
        return mfree(j);
    j->kind = kind;
    return j;
}

job *job_free(job *j)
{
    if (!j)
        return NULL;
    json_decref(j->params);
    json_decref(j->reply);
    free(j->error_param);
    free(j->error_reason);
    free(j);
    return NULL;
}

static void notify_status(void)
{
    pthread_mutex_lock(&g_lock);
    sd_notifyf(0, "STATUS=%s: %zu keys from %s%s%s", g_status, g_keys_loaded, store_url(g_store),
               g_last_error ? "; last error: " : "", g_last_error ? g_last_error : "");
    pthread_mutex_unlock(&g_lock);
}

/* Records a failed read: keep serving what we have, say so in GetHealth. */
static void set_error(const char *what)
{
    pthread_mutex_lock(&g_lock);
    free(g_last_error);
    g_last_error = strdup(what);
    g_status = g_loaded_at > 0 ? "degraded" : "unhealthy";
    pthread_mutex_unlock(&g_lock);
    notify_status();
}

static void set_loaded(size_t n, bool from_cache, const char *why)
{
    pthread_mutex_lock(&g_lock);
    g_keys_loaded = n;
    g_loaded_at = timeutil_now();
    free(g_last_error);
    g_last_error = why ? strdup(why) : NULL;
    g_status = from_cache ? "degraded" : "healthy";
    pthread_mutex_unlock(&g_lock);
    notify_status();
}

/* Swaps in snap and returns the previous one, which serving loops may still be reading. */
static snapshot *publish(snapshot *snap)
{
    return rcu_xchg_pointer(&g_snap, snap);
}

/* Retired snapshots go to the reclaimer thread, which waits for a grace period, so that
 * the store thread's next job never waits behind one (a loop that just passed a quiescent
 * state may sleep up to LOOP_MAX_WAIT_MS before its next). They come back past the grace
 * period and the store thread frees them: keystate references are its alone. */
static pthread_mutex_t g_reclaim_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_reclaim_cond = PTHREAD_COND_INITIALIZER;
static snapshot *g_retired;   /* waiting for a grace period; guarded by g_reclaim_lock */
static snapshot *g_reclaimed; /* past it, to be freed; guarded by g_reclaim_lock */
static bool g_reclaim_stop;
static bool g_reclaimed_ready; /* guarded by g_lock: wakes the store thread */
static pthread_t g_reclaimer;
static bool g_reclaimer_started;

static void retire(snapshot *old)
{
    if (!old)
        return;
    pthread_mutex_lock(&g_reclaim_lock);
    old->retired_next = g_retired;
    g_retired = old;
    pthread_cond_signal(&g_reclaim_cond);
    pthread_mutex_unlock(&g_reclaim_lock);
}

static void *reclaimer_thread(void *arg)
{
    pthread_setname_np(pthread_self(), "heare-rcu");
    pthread_mutex_lock(&g_reclaim_lock);
    for (;;) {
        while (!g_retired && !g_reclaim_stop)
            pthread_cond_wait(&g_reclaim_cond, &g_reclaim_lock);
        if (!g_retired)
            break;
        snapshot *batch = g_retired;
        g_retired = NULL;
        pthread_mutex_unlock(&g_reclaim_lock);

        server_wake_all();
        synchronize_rcu();

        pthread_mutex_lock(&g_reclaim_lock);
        snapshot *last = batch;
        while (last->retired_next)
            last = last->retired_next;
        last->retired_next = g_reclaimed;
        g_reclaimed = batch;
        pthread_mutex_unlock(&g_reclaim_lock);

        pthread_mutex_lock(&g_lock);
        g_reclaimed_ready = true;
        pthread_cond_signal(&g_cond);
        pthread_mutex_unlock(&g_lock);
        pthread_mutex_lock(&g_reclaim_lock);
    }
    pthread_mutex_unlock(&g_reclaim_lock);
    return NULL;
}

/* Frees what the reclaimer handed back. Store thread (or once it is gone). */
static void free_reclaimed(void)
{
    pthread_mutex_lock(&g_reclaim_lock);
    snapshot *list = g_reclaimed;
    g_reclaimed = NULL;
    pthread_mutex_unlock(&g_reclaim_lock);
    while (list) {
        snapshot *next = list->retired_next;
        snapshot_free(list);
        list = next;
    }
}

/* The last-known-good copy is written after the answer (and, at start, after READY=1):
 * nobody waits for it. Only the newest document matters, so a newer one replaces a copy
 * still pending. Store thread (and state_init/state_finish, before and after it). */
static json_t *g_cache_pending;
/* A streamed document's bytes, written as they came, waiting for their commit. */
static store_file_writer *g_cache_pending_file;
/* A local store's document to copy, by its version: read again after the answer rather
 * than written while it loads (writing 341 MB as it streams in cost 0.5 s of a 1.3 s
 * start). */
static char *g_cache_pending_copy;

/* There is a last-known-good cache to keep ("cache" is not empty). */
static bool cache_enabled(void)
{
    return g_conf->cache && g_conf->cache[0];
}

/* A cache write failed: say so once; serving goes on. */
static void cache_failed(int r, const char *err)
{
    log_warning("could not write the last-known-good cache %s: %s", g_conf->cache,
                err ? err : strerror(-r));
}

static void drop_pending_cache(void)
{
    json_decref(g_cache_pending);
    g_cache_pending = NULL;
    store_file_writer_abort(TAKE_PTR(g_cache_pending_file));
    g_cache_pending_copy = mfree(g_cache_pending_copy);
}

static void copy_store_to_cache(const char *version);

static void write_cache(const json_t *doc)
{
    drop_pending_cache();
    g_cache_pending = json_incref((json_t *)doc);
}

static void flush_cache(void)
{
    _cleanup_json_ json_t *doc = TAKE_PTR(g_cache_pending);
    _cleanup_free_ char *buf = NULL, *err = NULL;
    store_file_writer *file = TAKE_PTR(g_cache_pending_file);
    _cleanup_free_ char *copy = TAKE_PTR(g_cache_pending_copy);
    size_t len;
    int r;
    if (copy) {
        copy_store_to_cache(copy);
        return;
    }
    if (file)
        r = store_file_writer_commit(file, &err);
    else if (!doc || !cache_enabled())
        return;
    else {
        r = keydoc_dump(doc, &buf, &len);
        if (r >= 0)
            r = store_write_file_atomic(g_conf->cache, buf, len, 0600, &err);
    }
    if (r < 0)
        cache_failed(r, err);
}

/* A store read that gave no new keystore: keep serving what we have, and say why in
 * GetHealth and the log. what (may be NULL) prefixes the reason with the store's URL.
 * Returns r. */
static int load_failed(int r, const char *what, const char *reason)
{
    _cleanup_free_ char *msg = NULL;
    if (!reason)
        reason = strerror(-r);
    if (what && asprintf(&msg, "%s: %s: %s", store_url(g_store), what, reason) < 0)
        return -ENOMEM;
    set_error(msg ? msg : reason);
    log_event(LOG_WARNING,
              &(log_fields){.event = "store_load_failed", .peer_uid = -1, .peer_pid = -1}, "%s",
              msg ? msg : reason);
    return r;
}

/* Publishes ks (taken); returns the retired snapshot in *ret_old. */
static int install_keystore(keystore *ks, bool from_cache, const char *why, snapshot **ret_old)
{
    size_t n = keystore_size(ks);
    snapshot *snap = snapshot_new(ks, g_snap);
    if (!snap)
        return -ENOMEM;
    pthread_mutex_lock(&g_lock);
    g_generation++;
    pthread_mutex_unlock(&g_lock);
    g_from_cache = from_cache;
    *ret_old = publish(snap);
    set_loaded(n, from_cache, why);
    return 0;
}

/* Builds a keystore from doc and publishes it. */
static int install(json_t *doc, bool from_cache, const char *why, snapshot **ret_old)
{
    _cleanup_free_ char *err = NULL;
    keystore *ks = NULL;
    int r = keystore_new(doc, g_generation + 1, &ks, &err);
    if (r < 0)
        return load_failed(r, "document rejected", err);
    return install_keystore(ks, from_cache, why, ret_old);
}

/* A store read fed to keyload as it arrives, and to the cache file once the document has
 * shown itself a version-2 one. Bytes that come before that are held, up to HOLD_MAX. A
 * version-1 document's bytes (plaintext secrets) never reach the cache: what is held is
 * wiped, and keyload writes its converted version-2 rendering to the cache instead.
 *
 * Plaintext on the way: the file store's read buffer and store_load()'s buffer are wiped
 * when freed, as are the bytes held here and every block yajl allocates. libcurl's own
 * receive buffers (an S3 store) are out of our reach, as they are for the tree path. */
#define HOLD_MAX (1024 * 1024)

typedef struct load_sink {
    keyload *l;
    bool gave_up;               /* keyload gave up: the document is left to keydoc_parse() */
    bool cache;                 /* write the cache file (there is one, and no error yet) */
    bool copy_only;             /* only copy to the cache: keyload reads up to the version */
    store_file_writer *file;
    char *held;
    size_t held_len;
} load_sink;

/* The cache file failed: the load goes on without it. */
static void sink_no_cache(load_sink *s, int r, const char *err)
{
    cache_failed(r, err);
    store_file_writer_abort(TAKE_PTR(s->file));
    s->cache = false;
}

/* Wipes and frees what is held. */
static void sink_drop_held(load_sink *s)
{
    secret_wipe(s->held, s->held_len);
    s->held = mfree(s->held);
    s->held_len = 0;
}

/* Appends to what is held, never leaving a copy behind in freed memory. */
static int sink_hold(load_sink *s, const char *buf, size_t len)
{
    char *h = malloc(s->held_len + len);
    if (!h)
        return -ENOMEM;
    if (s->held_len > 0)
        memcpy(h, s->held, s->held_len);
    memcpy(h + s->held_len, buf, len);
    len += s->held_len;
    sink_drop_held(s);
    s->held = h;
    s->held_len = len;
    return 0;
}

/* Opens the cache's temporary file for a document that may go there. */
static int sink_open_file(load_sink *s)
{
    _cleanup_free_ char *err = NULL;
    if (s->file)
        return 0;
    /* A newer document supersedes a copy still waiting, and takes its temporary file. */
    drop_pending_cache();
    int r = store_file_writer_open(g_conf->cache, 0600, &s->file, &err);
    if (r < 0)
        sink_no_cache(s, r, err);
    return r;
}

/* keyload's converted rendering of a version-1 document, for the cache. A failed cache
 * write does not fail the load. */
static int sink_output(void *userdata, const char *buf, size_t len)
{
    load_sink *s = userdata;
    _cleanup_free_ char *err = NULL;

    if (!s->cache || sink_open_file(s) < 0)
        return 0;
    int r = store_file_writer_write(s->file, buf, len, &err);
    if (r < 0)
        sink_no_cache(s, r, err);
    return 0;
}

static void load_sink_done(load_sink *s)
{
    keyload_free(s->l);
    store_file_writer_abort(s->file);
    /* What was held may be a version-1 document's plaintext. */
    sink_drop_held(s);
    *s = (load_sink){0};
}

static int sink_begin(void *userdata)
{
    load_sink *s = userdata;
    keyload_free(s->l);
    s->l = NULL;
    store_file_writer_abort(TAKE_PTR(s->file));
    sink_drop_held(s);
    s->gave_up = false;
    /* A copy only converts (the keystore is built already); a load that caches converts
     * a version-1 document into the cache file as it goes. */
    return keyload_new_with(g_generation + 1,
                            &(keyload_options){
                                .write = s->cache ? sink_output : NULL,
                                .userdata = s,
                                .convert_only = s->copy_only,
                            },
                            &s->l);
}

static int sink_data(void *userdata, const char *buf, size_t len)
{
    load_sink *s = userdata;
    int r = s->copy_only && keyload_is_v2(s->l) ? 0 : keyload_feed(s->l, buf, len);
    if (r == -EBADMSG)
        s->gave_up = true;
    if (r < 0 || !s->cache)
        return r;
    if (keyload_is_v1(s->l)) {
        /* Plaintext: its converted rendering goes to the cache (sink_output), never this. */
        sink_drop_held(s);
        return 0;
    }
    if (!keyload_is_v2(s->l)) {
        if (s->held_len + len > HOLD_MAX) {
            s->gave_up = true; /* an odd document: the tree path reads it again */
            return -EBADMSG;
        }
        return sink_hold(s, buf, len);
    }
    _cleanup_free_ char *err = NULL;
    bool opened = !s->file;
    if (sink_open_file(s) < 0) {
        sink_drop_held(s);
        return 0;
    }
    r = 0;
    if (opened && s->held_len > 0)
        r = store_file_writer_write(s->file, s->held, s->held_len, &err);
    sink_drop_held(s);
    if (r >= 0)
        r = store_file_writer_write(s->file, buf, len, &err);
    if (r < 0)
        sink_no_cache(s, r, err);
    return 0;
}

/* Copies the local store's document to the cache file if it still has the version that
 * was loaded; a newer one is cached by the load that will follow it. The copy holds its
 * bytes until they show a version-2 document, like a streamed load; a version-1 one is
 * read through a keyload that only converts it, into the cache file. */
static void copy_store_to_cache(const char *version)
{
    _cleanup_(load_sink_done) load_sink sink = {.cache = true, .copy_only = true};
    _cleanup_free_ char *now = NULL, *err = NULL;
    bool exists = false;

    int r = store_load_stream(g_store, NULL,
                              &(store_sink){.begin = sink_begin, .data = sink_data, .userdata = &sink},
                              &exists, &now, &err);
    if (r >= 0 && exists && keyload_is_v1(sink.l)) {
        r = keyload_finish(sink.l, NULL); /* the rest of the converted rendering */
        if (r == -EBADMSG)
            sink.gave_up = true; /* not the document that loaded */
    }
    if (r < 0 || !exists || !sink.file || strcmp(now, version) != 0) {
        if (r < 0 && !sink.gave_up)
            cache_failed(r, err);
        return; /* sink_no_cache() has said why if the file failed */
    }
    r = store_file_writer_commit(TAKE_PTR(sink.file), &err);
    if (r < 0)
        cache_failed(r, err);
}

/* Reads the store; on a changed document installs it. force: ignore the version we have.
 * Returns 1 if a new keystore was installed, 0 if unchanged, -errno on failure (recorded
 * in health and logged). */
static int reload(bool force, snapshot **ret_old)
{
    _cleanup_free_ char *buf = NULL, *version = NULL, *err = NULL;
    _cleanup_json_ json_t *doc = NULL;
    size_t len = 0;
    bool was_v1 = false;

    *ret_old = NULL;
    const char *if_not = force || g_from_cache ? NULL : g_version;
    /* A local store is copied to the cache after the answer; S3 bytes are written as they
     * come, since reading them again would cost a request. */
    bool local = strncmp(store_url(g_store), "s3://", 5) != 0;
    _cleanup_(load_sink_done) load_sink sink = {.cache = cache_enabled() && !local};
    bool exists = false;
    keystore *ks = NULL;
    int r = store_load_stream(g_store, if_not,
                              &(store_sink){.begin = sink_begin, .data = sink_data, .userdata = &sink},
                              &exists, &version, &err);
    if (r == 0 && exists) {
        r = keyload_finish(sink.l, &ks);
        if (r == -EBADMSG)
            sink.gave_up = true;
        was_v1 = r == 0 && keyload_is_v1(sink.l);
    }
    if (sink.gave_up) {
        /* Not for the fast path: read it again, whole, for keydoc_parse(). */
        version = mfree(version);
        err = mfree(err);
        r = store_load(g_store, NULL, &buf, &len, &version, &err);
    }
    metrics_count_store_read(r == 1 ? METRICS_READ_UNCHANGED : r < 0 ? METRICS_READ_ERROR
                                                                  : METRICS_READ_CHANGED);
    if (r == 1) {
        /* Readable again after a failure: the keys we serve are the store's. */
        pthread_mutex_lock(&g_lock);
        bool was_failing = g_last_error != NULL;
        pthread_mutex_unlock(&g_lock);
        if (was_failing) {
            set_loaded(keystore_size(g_snap->ks), false, NULL);
            log_info("store %s readable again", store_url(g_store));
        }
        return 0;
    }
    if (r < 0)
        return load_failed(r, NULL, err);
    if (ks) {
        store_file_writer *file = TAKE_PTR(sink.file);
        r = install_keystore(ks, false, NULL, ret_old);
        if (r < 0) {
            store_file_writer_abort(file);
            return r;
        }
        /* Its bytes are in the cache's temporary file already, or a local store's are
         * copied there: either way after the answer. */
        drop_pending_cache();
        g_cache_pending_file = file;
        if (local && cache_enabled()) {
            g_cache_pending_copy = strdup(version);
            if (!g_cache_pending_copy)
                log_warning("out of memory: the last-known-good cache is not updated");
        }
    } else if (!buf) {
        doc = keydoc_new();
        if (!doc)
            return -ENOMEM;
    } else {
        r = keydoc_parse(buf, len, &doc, &was_v1, &err);
        /* A version-1 file holds plaintext secrets: none may outlive the parse. */
        secret_wipe(buf, len);
        if (r < 0)
            return load_failed(r, "document rejected", err);
    }
    if (doc) {
        r = install(doc, false, NULL, ret_old);
        if (r < 0)
            return r;
        write_cache(doc);
    }
    free(g_version);
    g_version = TAKE_PTR(version);
    log_event(LOG_INFO, &(log_fields){.event = "store_loaded", .peer_uid = -1, .peer_pid = -1},
              "loaded %zu keys from %s (generation %" PRIu64 "%s)", keystore_size(g_snap->ks),
              store_url(g_store), g_generation, was_v1 ? ", version 1 document" : "");
    return 1;
}

/* Streams the cache file into keyload, as a file store would: a big cache costs no more
 * memory than the store. Returns 0 with *ret, -EBADMSG if it is left to the tree path, or
 * another -errno with *reterr. */
static int stream_cache(keystore **ret, char **reterr)
{
    _cleanup_free_ char *path = NULL, *version = NULL;
    _cleanup_(store_freep) store *cache = NULL;
    _cleanup_(load_sink_done) load_sink sink = {0}; /* no copy of the copy */
    bool exists = false;

    path = g_conf->cache[0] == '/' ? strdup(g_conf->cache) : realpath(g_conf->cache, NULL);
    if (!path)
        return -errno;
    int r = store_open(path, &cache, reterr);
    if (r < 0)
        return r;
    r = store_load_stream(cache, NULL,
                          &(store_sink){.begin = sink_begin, .data = sink_data, .userdata = &sink},
                          &exists, &version, reterr);
    if (sink.gave_up)
        return -EBADMSG;
    if (r < 0)
        return r;
    if (!exists)
        return -ENOENT;
    return keyload_finish(sink.l, ret);
}

static int load_cache(const char *store_error, snapshot **ret_old)
{
    _cleanup_free_ char *buf = NULL, *err = NULL, *why = NULL;
    _cleanup_json_ json_t *doc = NULL;
    keystore *ks = NULL;
    size_t len;

    if (!cache_enabled())
        return -ENOENT;
    int r = stream_cache(&ks, &err);
    if (r == -EBADMSG) {
        err = mfree(err);
        r = store_read_file(g_conf->cache, (size_t)1 << 30, &buf, &len);
        if (r >= 0) {
            r = keydoc_parse(buf, len, &doc, NULL, &err);
            if (r < 0) {
                log_warning("last-known-good cache %s rejected: %s", g_conf->cache,
                            err ? err : "");
                return r;
            }
        }
    }
    if (r < 0) {
        log_warning("last-known-good cache %s unusable: %s", g_conf->cache,
                    err ? err : strerror(-r));
        return r;
    }
    if (asprintf(&why, "serving from cache %s: %s", g_conf->cache, store_error) < 0) {
        keystore_free(ks);
        return -ENOMEM;
    }
    r = ks ? install_keystore(ks, true, why, ret_old) : install(doc, true, why, ret_old);
    if (r < 0)
        return r;
    log_event(LOG_WARNING,
              &(log_fields){.event = "cache_loaded", .peer_uid = -1, .peer_pid = -1},
              "store unreadable, serving %zu keys from the last-known-good cache %s",
              keystore_size(g_snap->ks), g_conf->cache);
    return 0;
}

int state_init(const conf *c, char **reterr)
{
    snapshot *old = NULL;
    pthread_condattr_t attr;

    g_conf = c;
    g_started_at = timeutil_now();
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&g_cond, &attr);
    pthread_condattr_destroy(&attr);

    store_options opts = {
        .s3_region = c->s3_region,
        .s3_endpoint = c->s3_endpoint,
        .s3_addressing = c->s3_addressing,
        .s3_sse = c->s3_sse,
    };
    int r = store_open_with(c->store, &opts, &g_store, reterr);
    if (r < 0)
        return r;

    keystore *empty = keystore_new_empty(0);
    g_snap = empty ? snapshot_new(empty, NULL) : NULL;
    if (!g_snap)
        return -ENOMEM;

    r = reload(true, &old);
    if (r < 0 && r != -ENOMEM) {
        _cleanup_free_ char *err = g_last_error ? strdup(g_last_error) : NULL;
        (void)load_cache(err ? err : strerror(-r), &old);
    }
    /* Nothing is reading yet: free directly. */
    snapshot_free(old);
    return 0;
}

void state_submit(job *j)
{
    j->next = NULL;
    pthread_mutex_lock(&g_lock);
    if (g_queue_tail)
        g_queue_tail->next = j;
    else
        g_queue_head = j;
    g_queue_tail = j;
    pthread_cond_signal(&g_cond);
    pthread_mutex_unlock(&g_lock);
}

void state_request_reload(void)
{
    pthread_mutex_lock(&g_lock);
    g_reload_requested = true;
    pthread_cond_signal(&g_cond);
    pthread_mutex_unlock(&g_lock);
}

/* Applies one admin job to doc. keyops leaves doc unchanged when it refuses the job, so a
 * refused job never takes the others of its group down with it. */
static int mutate_one(json_t *doc, job *j, int64_t now)
{
    const char *param = NULL;
    int r;

    /* store_update may call us again after a conflict: start from scratch each time. */
    json_decref(j->reply);
    j->reply = NULL;
    j->error_param = mfree(j->error_param);
    switch (j->kind) {
    case JOB_CREATE:
        r = keyops_create(doc, j->params, now, &j->reply, &param);
        break;
    case JOB_UPDATE:
        r = keyops_update(doc, j->params, now, &j->reply, &param);
        break;
    case JOB_ROTATE:
        r = keyops_rotate(doc, j->params, now, &j->reply, &param);
        break;
    case JOB_DELETE:
        r = keyops_delete(doc, j->params, now, &j->reply, &param);
        break;
    default:
        r = -EINVAL;
        break;
    }
    if (r == -EINVAL && param)
        j->error_param = strdup(param);
    return r;
}

/* Admin writes that waited for the store thread together: one read-modify-write for all
 * of them (group commit), each still answered on its own. */
typedef struct write_group {
    job *jobs[WRITE_GROUP_MAX];
    size_t n;
    size_t applied;  /* by the last run of mutate_group */
    int refused;     /* what mutate_group returned when it applied none */
} write_group;

/* The job has not been refused by keyops (yet): it shares the group's fate. */
#define JOB_PENDING 1

static int mutate_group(json_t *doc, void *userdata)
{
    write_group *g = userdata;
    int64_t now = timeutil_now();

    g->applied = 0;
    g->refused = 0;
    for (size_t i = 0; i < g->n; i++) {
        job *j = g->jobs[i];
        j->r = mutate_one(doc, j, now);
        if (j->r >= 0) {
            j->r = JOB_PENDING;
            g->applied++;
        } else if (!g->refused) {
            g->refused = j->r;
        }
    }
    /* Nothing to write when every job was refused; each keeps its own error. */
    return g->applied ? 0 : g->refused;
}

static void run_writes(write_group *g, snapshot **ret_old)
{
    _cleanup_json_ json_t *doc = NULL;
    _cleanup_free_ char *version = NULL, *err = NULL;

    for (size_t i = 0; i < g->n; i++)
        g->jobs[i]->r = JOB_PENDING;
    g->applied = 0;
    g->refused = 0;

    int r = store_update(g_store, mutate_group, g, &doc, &version, &err);
    bool all_refused = r < 0 && g->applied == 0 && r == g->refused;
    /* A group whose every change was refused never reached the store. */
    if (!all_refused)
        metrics_count_store_write(r >= 0 ? METRICS_WRITE_OK : r == -ESTALE ? METRICS_WRITE_CONFLICT
                                                                            : METRICS_WRITE_ERROR);
    const char *failure = NULL;
    if (r >= 0) {
        /* The store accepted it: now (and only now) this host's keystore changes. */
        r = install(doc, false, NULL, ret_old);
        if (r < 0) {
            failure = "written, but the new document could not be indexed";
        } else {
            free(g_version);
            g_version = TAKE_PTR(version);
            write_cache(doc);
        }
    } else {
        failure = err;
    }

    for (size_t i = 0; i < g->n; i++) {
        job *j = g->jobs[i];
        if (j->r != JOB_PENDING)
            continue; /* refused by keyops: its own error stands */
        if (r >= 0) {
            j->r = 0;
            continue;
        }
        j->r = r;
        j->error_reason = failure ? strdup(failure) : NULL;
        json_decref(j->reply);
        j->reply = NULL;
    }
}

static void run_refresh(job *j, snapshot **ret_old)
{
    int r = reload(false, ret_old);
    if (r < 0) {
        j->r = r;
        pthread_mutex_lock(&g_lock);
        j->error_reason = g_last_error ? strdup(g_last_error) : NULL;
        pthread_mutex_unlock(&g_lock);
        return;
    }
    j->r = 0;
    j->reply = json_pack("{s:I,s:b}", "keys_loaded",
                         (json_int_t)keystore_size(g_snap->ks), "changed", r > 0);
    if (!j->reply)
        j->r = -ENOMEM;
}

static void finish_job(job *j)
{
    if (j->done)
        j->done(j);
    else
        job_free(j);
}

static uint64_t poll_delay_ms(void)
{
    /* ±10 % jitter so hosts sharing a store do not poll in lockstep. */
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd))
        rnd = (uint32_t)time(NULL);
    int64_t base = g_conf->poll_interval_ms;
    int64_t spread = base / 5;
    return (uint64_t)(base - base / 10 + (spread > 0 ? (int64_t)(rnd % (uint64_t)spread) : 0));
}

static void *store_thread(void *arg)
{
    pthread_setname_np(pthread_self(), "heare-store");
    /* A reload of a big store is seconds of CPU that nobody waits for, while a verify is
     * waited for: on a busy machine the serving loops go first. (Nice is per thread on
     * Linux; raising it needs no privilege.) */
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), STORE_THREAD_NICE) < 0)
        log_debug("could not lower the store thread's priority: %m");
    struct timespec next_poll;
    timeutil_deadline_ms(&next_poll, poll_delay_ms());
    flush_cache(); /* the first load's, written here so that READY=1 does not wait for it */

    for (;;) {
        job *j = NULL;
        write_group group = {.n = 0};
        bool do_reload = false, do_poll = false;

        pthread_mutex_lock(&g_lock);
        while (!g_stopping && !g_queue_head && !g_reload_requested && !g_reclaimed_ready) {
            if (pthread_cond_timedwait(&g_cond, &g_lock, &next_poll) == ETIMEDOUT) {
                do_poll = true;
                break;
            }
        }
        if (g_stopping && !g_queue_head) {
            pthread_mutex_unlock(&g_lock);
            break;
        }
        g_reclaimed_ready = false;
        if (g_queue_head && g_queue_head->kind == JOB_REFRESH) {
            j = g_queue_head;
            g_queue_head = j->next;
        } else if (g_queue_head) {
            /* Every write queued behind the first, up to the group's size, in order. */
            while (g_queue_head && g_queue_head->kind != JOB_REFRESH && group.n < WRITE_GROUP_MAX) {
                group.jobs[group.n++] = g_queue_head;
                g_queue_head = g_queue_head->next;
            }
        } else if (g_reload_requested) {
            g_reload_requested = false;
            do_reload = true;
        }
        if (!g_queue_head)
            g_queue_tail = NULL;
        pthread_mutex_unlock(&g_lock);
        free_reclaimed();

        snapshot *old = NULL;
        if (j) {
            run_refresh(j, &old);
            finish_job(j);
        } else if (group.n) {
            run_writes(&group, &old);
            for (size_t i = 0; i < group.n; i++)
                finish_job(group.jobs[i]);
        } else if (do_reload) {
            sd_notify(0, "RELOADING=1");
            log_info("SIGHUP: re-reading %s", store_url(g_store));
            (void)reload(false, &old);
            sd_notify(0, "READY=1");
        } else if (do_poll) {
            (void)reload(false, &old);
            timeutil_deadline_ms(&next_poll, poll_delay_ms());
        }
        flush_cache();
        /* Freed once no loop can see it, without holding up the next job. */
        retire(old);
    }
    return NULL;
}

int state_start(void)
{
    int r = pthread_create(&g_reclaimer, NULL, reclaimer_thread, NULL);
    if (r != 0)
        return -r;
    g_reclaimer_started = true;
    r = pthread_create(&g_thread, NULL, store_thread, NULL);
    if (r != 0)
        return -r;
    g_thread_started = true;
    return 0;
}

void state_finish(void)
{
    pthread_mutex_lock(&g_lock);
    g_stopping = true;
    pthread_cond_signal(&g_cond);
    pthread_mutex_unlock(&g_lock);
    if (g_thread_started)
        pthread_join(g_thread, NULL);
    g_thread_started = false;
    /* The reclaimer drains what is still waiting (no loop reads any more) and stops. */
    pthread_mutex_lock(&g_reclaim_lock);
    g_reclaim_stop = true;
    pthread_cond_signal(&g_reclaim_cond);
    pthread_mutex_unlock(&g_reclaim_lock);
    if (g_reclaimer_started)
        pthread_join(g_reclaimer, NULL);
    g_reclaimer_started = false;
    free_reclaimed();
    flush_cache();

    /* Jobs left behind have no one waiting any more. */
    while (g_queue_head) {
        job *j = g_queue_head;
        g_queue_head = j->next;
        job_free(j);
    }
    g_queue_tail = NULL;
    g_snap = snapshot_free(g_snap);
    keystate_free_all();
    g_store = store_free(g_store);
    g_version = mfree(g_version);
    g_last_error = mfree(g_last_error);
}
