/* metrics: per-thread verify counters and latency histogram summed into snapshots, the
 * other counters, and the Prometheus / JSON renderings of a snapshot. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "macro.h"
#include "metrics.h"

#define CACHE_LINE 64

const uint64_t metrics_bucket_ns[METRICS_BUCKETS - 1] = {
    1000,    2500,    5000,    10000,   25000,   50000,   100000,
    250000,  500000,  1000000, 2500000, 5000000, 10000000,
};

typedef struct shard {
    _Alignas(CACHE_LINE) _Atomic uint64_t verify[_VERIFY_CODE_MAX];
    _Atomic uint64_t buckets[METRICS_BUCKETS];
    _Atomic uint64_t duration_ns;
    _Atomic uint64_t health_requests;
    struct shard *next;
} shard;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static shard *g_shards; /* every thread's, newest first; guarded by g_lock */
static shard g_shared;  /* for threads without a shard of their own */
static _Thread_local shard *t_shard;

static _Atomic uint64_t g_reads[_METRICS_READ_MAX];
static _Atomic uint64_t g_writes[_METRICS_WRITE_MAX];
static _Atomic uint64_t g_pushes, g_push_failures;

int metrics_thread_init(void)
{
    shard *s = aligned_alloc(CACHE_LINE, sizeof(shard));
    if (!s)
        return -ENOMEM;
    *s = (shard){0};
    pthread_mutex_lock(&g_lock);
    s->next = g_shards;
    g_shards = s;
    pthread_mutex_unlock(&g_lock);
    t_shard = s;
    return 0;
}

/* On a thread's own shard there is one writer: a load and a store, no locked add. */
static void bump(shard *s, _Atomic uint64_t *c, uint64_t n)
{
    if (s == &g_shared)
        atomic_fetch_add_explicit(c, n, memory_order_relaxed);
    else
        atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                              memory_order_relaxed);
}

static shard *my_shard(void)
{
    return t_shard ? t_shard : &g_shared;
}

void metrics_count_verify(verify_code code, uint64_t duration_ns)
{
    shard *s = my_shard();
    size_t b = 0;
    if ((unsigned)code >= _VERIFY_CODE_MAX)
        return;
    while (b < METRICS_BUCKETS - 1 && duration_ns > metrics_bucket_ns[b])
        b++;
    bump(s, &s->verify[code], 1);
    bump(s, &s->buckets[b], 1);
    bump(s, &s->duration_ns, duration_ns);
}

void metrics_count_health(void)
{
    shard *s = my_shard();
    bump(s, &s->health_requests, 1);
}

void metrics_count_store_read(metrics_read result)
{
    if ((unsigned)result < _METRICS_READ_MAX)
        atomic_fetch_add_explicit(&g_reads[result], 1, memory_order_relaxed);
}

void metrics_count_store_write(metrics_write result)
{
    if ((unsigned)result < _METRICS_WRITE_MAX)
        atomic_fetch_add_explicit(&g_writes[result], 1, memory_order_relaxed);
}

void metrics_count_push(bool ok)
{
    atomic_fetch_add_explicit(ok ? &g_pushes : &g_push_failures, 1, memory_order_relaxed);
}

static uint64_t load(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static void add_shard(metrics_snapshot *m, shard *s)
{
    for (size_t i = 0; i < _VERIFY_CODE_MAX; i++)
        m->verify[i] += load(&s->verify[i]);
    for (size_t i = 0; i < METRICS_BUCKETS; i++)
        m->buckets[i] += load(&s->buckets[i]);
    m->duration_ns += load(&s->duration_ns);
    m->health_requests += load(&s->health_requests);
}

void metrics_snapshot_take(metrics_snapshot *m)
{
    state_health h;

    *m = (metrics_snapshot){0};
    add_shard(m, &g_shared);
    pthread_mutex_lock(&g_lock);
    for (shard *s = g_shards; s; s = s->next)
        add_shard(m, s);
    pthread_mutex_unlock(&g_lock);
    for (size_t i = 0; i < _METRICS_READ_MAX; i++)
        m->reads[i] = load(&g_reads[i]);
    for (size_t i = 0; i < _METRICS_WRITE_MAX; i++)
        m->writes[i] = load(&g_writes[i]);
    m->pushes = load(&g_pushes);
    m->push_failures = load(&g_push_failures);
    state_get_health(&h);
    free(h.last_error);
    m->keys = h.keys_loaded;
    m->status = h.status;
}

/* ---- one walk over every sample, for both renderings ---- */

typedef struct visitor {
    /* A new family: its name, type and help. */
    void (*family)(struct visitor *v, const char *name, const char *type, const char *help);
    /* One sample: name (family name plus a suffix for histograms), an optional label. */
    void (*sample)(struct visitor *v, const char *name, const char *label, const char *label_value,
                   double value);
} visitor;

static const char *const read_names[] = {"changed", "unchanged", "error"};
static const char *const write_names[] = {"ok", "conflict", "error"};
_Static_assert(ELEMENTSOF(read_names) == _METRICS_READ_MAX, "read result names");
_Static_assert(ELEMENTSOF(write_names) == _METRICS_WRITE_MAX, "write result names");

static void visit(const metrics_snapshot *m, visitor *v)
{
    char le[32];
    uint64_t cumulative = 0;

    v->family(v, "heare_auth_verify_total", "counter", "Verifications answered, by result code.");
    for (size_t i = 0; i < _VERIFY_CODE_MAX; i++)
        v->sample(v, "heare_auth_verify_total", "code", keystore_code_name((verify_code)i),
                  (double)m->verify[i]);

    v->family(v, "heare_auth_verify_duration_seconds", "histogram",
              "Time to answer a verification (lookup, rate limit, counters, log).");
    for (size_t i = 0; i < METRICS_BUCKETS; i++) {
        cumulative += m->buckets[i];
        if (i < METRICS_BUCKETS - 1)
            snprintf(le, sizeof(le), "%g", (double)metrics_bucket_ns[i] / 1e9);
        else
            snprintf(le, sizeof(le), "+Inf");
        v->sample(v, "heare_auth_verify_duration_seconds_bucket", "le", le, (double)cumulative);
    }
    v->sample(v, "heare_auth_verify_duration_seconds_sum", NULL, NULL,
              (double)m->duration_ns / 1e9);
    v->sample(v, "heare_auth_verify_duration_seconds_count", NULL, NULL, (double)cumulative);

    v->family(v, "heare_auth_keys", "gauge", "Keys in the keystore being served.");
    v->sample(v, "heare_auth_keys", NULL, NULL, (double)m->keys);

    static const char *const statuses[] = {"healthy", "degraded", "unhealthy"};
    v->family(v, "heare_auth_status", "gauge",
              "1 for the daemon's health status (GetHealth), 0 for the others.");
    for (size_t i = 0; i < ELEMENTSOF(statuses); i++)
        v->sample(v, "heare_auth_status", "status", statuses[i],
                  m->status && strcmp(m->status, statuses[i]) == 0);

    v->family(v, "heare_auth_store_reads_total", "counter", "Reads of the store, by result.");
    for (size_t i = 0; i < _METRICS_READ_MAX; i++)
        v->sample(v, "heare_auth_store_reads_total", "result", read_names[i], (double)m->reads[i]);

    v->family(v, "heare_auth_store_writes_total", "counter", "Writes to the store, by result.");
    for (size_t i = 0; i < _METRICS_WRITE_MAX; i++)
        v->sample(v, "heare_auth_store_writes_total", "result", write_names[i],
                  (double)m->writes[i]);

    v->family(v, "heare_auth_health_requests_total", "counter",
              "Health requests answered (GetHealth and GET /health).");
    v->sample(v, "heare_auth_health_requests_total", NULL, NULL, (double)m->health_requests);

    v->family(v, "heare_auth_metrics_pushes_total", "counter",
              "Metrics pushes, by result (failed pushes are dropped).");
    v->sample(v, "heare_auth_metrics_pushes_total", "result", "ok", (double)m->pushes);
    v->sample(v, "heare_auth_metrics_pushes_total", "result", "error", (double)m->push_failures);

    v->family(v, "heare_auth_build_info", "gauge", "The running version of heare-authd.");
    v->sample(v, "heare_auth_build_info", "version", HEARE_VERSION, 1);
}

/* ---- Prometheus text ---- */

typedef struct text_visitor {
    visitor v;
    FILE *f;
} text_visitor;

static void text_family(visitor *v, const char *name, const char *type, const char *help)
{
    FILE *f = ((text_visitor *)v)->f;
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void text_sample(visitor *v, const char *name, const char *label, const char *label_value,
                        double value)
{
    FILE *f = ((text_visitor *)v)->f;
    if (label)
        fprintf(f, "%s{%s=\"%s\"} %.17g\n", name, label, label_value, value);
    else
        fprintf(f, "%s %.17g\n", name, value);
}

int metrics_render_prometheus(const metrics_snapshot *m, char **ret, size_t *ret_len)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return -ENOMEM;
    text_visitor tv = {{text_family, text_sample}, f};
    visit(m, &tv.v);
    bool failed = ferror(f);
    if (fclose(f) != 0 || failed) {
        free(buf);
        return -ENOMEM;
    }
    *ret = buf;
    *ret_len = len;
    return 0;
}

/* ---- JSON ---- */

typedef struct json_visitor {
    visitor v;
    json_t *array;
    bool failed;
} json_visitor;

static void json_family(visitor *v, const char *name, const char *type, const char *help)
{
}

static void json_sample(visitor *v, const char *name, const char *label, const char *label_value,
                        double value)
{
    json_visitor *jv = (json_visitor *)v;
    json_t *labels = label ? json_pack("{s:s}", label, label_value) : json_object();
    json_t *s = labels ? json_pack("{s:s,s:o,s:f}", "name", name, "labels", labels, "value", value)
                       : NULL;
    if (!s || json_array_append_new(jv->array, s) < 0)
        jv->failed = true;
}

json_t *metrics_render_json(const metrics_snapshot *m)
{
    json_visitor jv = {{json_family, json_sample}, json_array(), false};
    if (!jv.array)
        return NULL;
    visit(m, &jv.v);
    if (jv.failed) {
        json_decref(jv.array);
        return NULL;
    }
    return jv.array;
}

void metrics_free(void)
{
    pthread_mutex_lock(&g_lock);
    while (g_shards) {
        shard *s = g_shards;
        g_shards = s->next;
        free(s);
    }
    pthread_mutex_unlock(&g_lock);
}
