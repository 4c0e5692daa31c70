/* verifylog: see verifylog.h. Each serving loop counts into a table of its own (its lock
 * is taken by the flush only, once an interval); the flush takes every table's entries,
 * merges them and writes the busiest pairs. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "macro.h"
#include "verifylog.h"

/* Distinct key and peer pairs one loop counts in an interval; more are summed in the "*"
 * line directly, so a client that presents a new address or key at every call (HTTP
 * through many addresses) cannot grow the table without bound. */
#define TABLE_MAX 65536

typedef struct entry {
    uint64_t hash; /* 0: empty slot */
    char *key_id;  /* NULL: an unknown key; "*": the others summed */
    char *key_name;
    int64_t uid;
    char *addr;
    uint64_t counts[_VERIFY_CODE_MAX];
} entry;

typedef struct table {
    pthread_mutex_t lock;
    entry *e;
    size_t cap, n;
    entry others; /* pairs over TABLE_MAX */
    struct table *next;
} table;

static pthread_mutex_t g_tables_lock = PTHREAD_MUTEX_INITIALIZER;
static table *g_tables;
static _Thread_local table *t_table;
static int64_t g_flushed_ms;
static _Atomic int64_t g_failures_second = -1;
static atomic_uint g_failures_in_second;

static uint64_t hash_bytes(uint64_t h, const char *s)
{
    for (; s && *s; s++)
        h = (h ^ (unsigned char)*s) * UINT64_C(0x100000001b3);
    return h;
}

static uint64_t pair_hash(const char *key_id, int64_t uid, const char *addr)
{
    uint64_t h = hash_bytes(UINT64_C(0xcbf29ce484222325), key_id);
    h = (h ^ (uint64_t)uid) * UINT64_C(0x100000001b3);
    h = hash_bytes(h, addr);
    return h ? h : 1;
}

static bool str_eq(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static void entry_free(entry *e)
{
    free(e->key_id);
    free(e->key_name);
    free(e->addr);
    *e = (entry){0};
}

/* The slot of the pair in e[0..cap), or the empty one where it goes. */
static entry *slot(entry *e, size_t cap, uint64_t hash, const char *key_id, int64_t uid,
                   const char *addr)
{
    for (size_t i = hash & (cap - 1);; i = (i + 1) & (cap - 1))
        if (e[i].hash == 0 || (e[i].hash == hash && e[i].uid == uid &&
                               str_eq(e[i].key_id, key_id) && str_eq(e[i].addr, addr)))
            return &e[i];
}

static bool grow(table *t)
{
    size_t cap = t->cap ? 2 * t->cap : 64;
    entry *e = calloc(cap, sizeof(*e));
    if (!e)
        return false;
    for (size_t i = 0; i < t->cap; i++)
        if (t->e[i].hash)
            *slot(e, cap, t->e[i].hash, t->e[i].key_id, t->e[i].uid, t->e[i].addr) = t->e[i];
    free(t->e);
    t->e = e;
    t->cap = cap;
    return true;
}

static table *thread_table(void)
{
    if (t_table)
        return t_table;
    table *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    pthread_mutex_init(&t->lock, NULL);
    pthread_mutex_lock(&g_tables_lock);
    t->next = g_tables;
    g_tables = t;
    pthread_mutex_unlock(&g_tables_lock);
    return t_table = t;
}

void verifylog_count(verify_code code, const keystore_key *k, int64_t uid, const char *addr)
{
    table *t = thread_table();
    if (!t || (unsigned)code >= _VERIFY_CODE_MAX)
        return;
    const char *key_id = k ? keystore_key_id(k) : NULL;
    uint64_t hash = pair_hash(key_id, uid, addr);
    pthread_mutex_lock(&t->lock);
    entry *e = NULL;
    if ((t->n + 1) * 4 <= t->cap * 3 || (t->n < TABLE_MAX && grow(t)))
        e = slot(t->e, t->cap, hash, key_id, uid, addr);
    if (e && !e->hash) {
        *e = (entry){.hash = hash, .uid = uid};
        e->key_id = key_id ? strdup(key_id) : NULL;
        e->key_name = k && keystore_key_name(k) ? strdup(keystore_key_name(k)) : NULL;
        e->addr = addr ? strdup(addr) : NULL;
        if ((key_id && !e->key_id) || (k && keystore_key_name(k) && !e->key_name) ||
            (addr && !e->addr)) {
            entry_free(e);
            e = NULL;
        } else {
            t->n++;
        }
    }
    (e ? e : &t->others)->counts[code]++;
    pthread_mutex_unlock(&t->lock);
}

bool verifylog_failure_due(int64_t now_ms)
{
    int64_t second = now_ms / 1000;
    int64_t was = atomic_load_explicit(&g_failures_second, memory_order_relaxed);
    if (was != second &&
        atomic_compare_exchange_strong_explicit(&g_failures_second, &was, second,
                                                memory_order_relaxed, memory_order_relaxed))
        atomic_store_explicit(&g_failures_in_second, 0, memory_order_relaxed);
    return atomic_fetch_add_explicit(&g_failures_in_second, 1, memory_order_relaxed) <
           FAILURES_PER_SECOND;
}

static uint64_t total(const entry *e)
{
    uint64_t n = 0;
    for (size_t c = 0; c < _VERIFY_CODE_MAX; c++)
        n += e->counts[c];
    return n;
}

static int by_total_desc(const void *a, const void *b)
{
    uint64_t x = total(a), y = total(b);
    return x < y ? 1 : x > y ? -1 : 0;
}

/* {"VALID":3,"NOT_FOUND":1}: the codes that occurred. */
static void render_counts(const entry *e, char *buf, size_t cap)
{
    size_t off = 0;
    off += (size_t)snprintf(buf, cap, "{");
    for (size_t c = 0; c < _VERIFY_CODE_MAX && off < cap; c++)
        if (e->counts[c])
            off += (size_t)snprintf(buf + off, cap - off, "%s\"%s\":%llu", off > 1 ? "," : "",
                                    keystore_code_name((verify_code)c),
                                    (unsigned long long)e->counts[c]);
    if (off < cap)
        snprintf(buf + off, cap - off, "}");
}

static void write_line(const entry *e)
{
    char counts[_VERIFY_CODE_MAX * 40 + 4];
    render_counts(e, counts, sizeof(counts));
    log_fields f = LOG_FIELDS_INIT;
    f.event = "verification_summary";
    f.key_id = e->key_id;
    f.key_name = e->key_name;
    f.peer_uid = e->uid;
    f.peer_addr = e->addr;
    f.counts = counts;
    log_event_fields(LOG_INFO, &f);
}

static void add_counts(entry *to, const entry *from)
{
    for (size_t c = 0; c < _VERIFY_CODE_MAX; c++)
        to->counts[c] += from->counts[c];
}

/* Takes every table's entries into one array of distinct pairs, merged across loops (a
 * pair counted on two loops is one line). */
static entry *collect(size_t *ret_n, entry *others)
{
    size_t n_tables = 0, n_entries = 0;

    pthread_mutex_lock(&g_tables_lock);
    for (table *t = g_tables; t; t = t->next)
        n_tables++;
    struct taken {
        entry *e;
        size_t cap;
    } *taken = calloc(n_tables ? n_tables : 1, sizeof(*taken));
    size_t i = 0;
    for (table *t = g_tables; t; t = t->next, i++) {
        pthread_mutex_lock(&t->lock);
        if (taken) {
            taken[i] = (struct taken){t->e, t->cap};
            n_entries += t->n;
            t->e = NULL;
            t->cap = t->n = 0;
        }
        add_counts(others, &t->others);
        memset(t->others.counts, 0, sizeof(t->others.counts));
        pthread_mutex_unlock(&t->lock);
    }
    pthread_mutex_unlock(&g_tables_lock);
    if (!taken) {
        *ret_n = 0;
        return NULL;
    }

    size_t cap = 64;
    while (cap < 2 * n_entries)
        cap *= 2;
    entry *merged = calloc(cap, sizeof(*merged));
    size_t n = 0;
    for (i = 0; i < n_tables; i++) {
        for (size_t j = 0; j < taken[i].cap; j++) {
            entry *e = &taken[i].e[j];
            if (!e->hash)
                continue;
            entry *to = merged ? slot(merged, cap, e->hash, e->key_id, e->uid, e->addr) : NULL;
            if (to && !to->hash) {
                *to = *e;
                n++;
            } else {
                add_counts(to ? to : others, e);
                entry_free(e);
            }
        }
        free(taken[i].e);
    }
    free(taken);
    /* Packed to the front, for sorting. */
    size_t k = 0;
    for (size_t j = 0; merged && j < cap; j++)
        if (merged[j].hash)
            merged[k++] = merged[j];
    *ret_n = k;
    return merged;
}

static void flush_now(void)
{
    entry others = {.key_id = (char *)"*"};
    size_t n;
    entry *all = collect(&n, &others);

    qsort(all, n, sizeof(*all), by_total_desc);
    /* The busiest pairs; with more than the limit, the last line sums the rest. */
    size_t lines = n + (total(&others) > 0);
    size_t shown = lines <= SUMMARY_LINES_MAX ? n : SUMMARY_LINES_MAX - 1;
    for (size_t i = 0; i < n; i++) {
        if (i < shown)
            write_line(&all[i]);
        else
            add_counts(&others, &all[i]);
        entry_free(&all[i]);
    }
    free(all);
    if (total(&others) > 0) {
        others.uid = -1;
        write_line(&others);
    }
}

void verifylog_flush(int64_t now_ms, int64_t interval_ms)
{
    if (g_flushed_ms == 0)
        g_flushed_ms = now_ms;
    if (now_ms - g_flushed_ms < interval_ms)
        return;
    g_flushed_ms = now_ms;
    flush_now();
}

void verifylog_finish(void)
{
    flush_now();
    pthread_mutex_lock(&g_tables_lock);
    while (g_tables) {
        table *t = g_tables;
        g_tables = t->next;
        pthread_mutex_destroy(&t->lock);
        free(t->e);
        free(t);
    }
    pthread_mutex_unlock(&g_tables_lock);
}
