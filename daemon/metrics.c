/* metrics: per-thread verify counters summed on read, store counters, and the Prometheus
 * text exposition. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "daemon.h"
#include "macro.h"
#include "metrics.h"

#define CACHE_LINE 64

typedef struct shard {
    _Alignas(CACHE_LINE) _Atomic uint64_t verify[_VERIFY_CODE_MAX];
    struct shard *next;
} shard;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static shard *g_shards; /* every thread's, newest first; guarded by g_lock */
static shard g_shared;  /* for threads without a shard of their own */
static _Thread_local shard *t_shard;

static _Atomic uint64_t g_reads[_METRICS_READ_MAX];
static _Atomic uint64_t g_writes[_METRICS_WRITE_MAX];

int metrics_thread_init(void)
{
    shard *s = aligned_alloc(CACHE_LINE, sizeof(shard));
    if (!s)
        return -ENOMEM;
    for (size_t i = 0; i < _VERIFY_CODE_MAX; i++)
        atomic_init(&s->verify[i], 0);
    pthread_mutex_lock(&g_lock);
    s->next = g_shards;
    g_shards = s;
    pthread_mutex_unlock(&g_lock);
    t_shard = s;
    return 0;
}

void metrics_count_verify(verify_code code)
{
    shard *s = t_shard;
    if ((unsigned)code >= _VERIFY_CODE_MAX)
        return;
    if (!s) {
        atomic_fetch_add_explicit(&g_shared.verify[code], 1, memory_order_relaxed);
        return;
    }
    /* The only writer of this shard: a plain add, published for readers without a lock. */
    uint64_t v = atomic_load_explicit(&s->verify[code], memory_order_relaxed);
    atomic_store_explicit(&s->verify[code], v + 1, memory_order_relaxed);
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

static void sum_verify(uint64_t out[_VERIFY_CODE_MAX])
{
    for (size_t i = 0; i < _VERIFY_CODE_MAX; i++)
        out[i] = atomic_load_explicit(&g_shared.verify[i], memory_order_relaxed);
    pthread_mutex_lock(&g_lock);
    for (shard *s = g_shards; s; s = s->next)
        for (size_t i = 0; i < _VERIFY_CODE_MAX; i++)
            out[i] += atomic_load_explicit(&s->verify[i], memory_order_relaxed);
    pthread_mutex_unlock(&g_lock);
}

int metrics_render_prometheus(char **ret, size_t *ret_len)
{
    static const char *const read_names[] = {"changed", "unchanged", "error"};
    static const char *const write_names[] = {"ok", "conflict", "error"};
    uint64_t verify[_VERIFY_CODE_MAX];
    state_health h;
    char *buf = NULL;
    size_t len = 0;

    _Static_assert(ELEMENTSOF(read_names) == _METRICS_READ_MAX, "read result names");
    _Static_assert(ELEMENTSOF(write_names) == _METRICS_WRITE_MAX, "write result names");

    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return -ENOMEM;
    sum_verify(verify);
    state_get_health(&h);
    free(h.last_error);

    fputs("# HELP heare_auth_verify_total Verifications answered, by result code.\n"
          "# TYPE heare_auth_verify_total counter\n",
          f);
    for (size_t i = 0; i < _VERIFY_CODE_MAX; i++)
        fprintf(f, "heare_auth_verify_total{code=\"%s\"} %" PRIu64 "\n",
                keystore_code_name((verify_code)i), verify[i]);
    fprintf(f,
            "# HELP heare_auth_keys Keys in the keystore being served.\n"
            "# TYPE heare_auth_keys gauge\n"
            "heare_auth_keys %zu\n",
            h.keys_loaded);
    fputs("# HELP heare_auth_store_reads_total Reads of the store, by result.\n"
          "# TYPE heare_auth_store_reads_total counter\n",
          f);
    for (size_t i = 0; i < _METRICS_READ_MAX; i++)
        fprintf(f, "heare_auth_store_reads_total{result=\"%s\"} %" PRIu64 "\n", read_names[i],
                atomic_load_explicit(&g_reads[i], memory_order_relaxed));
    fputs("# HELP heare_auth_store_writes_total Writes to the store, by result.\n"
          "# TYPE heare_auth_store_writes_total counter\n",
          f);
    for (size_t i = 0; i < _METRICS_WRITE_MAX; i++)
        fprintf(f, "heare_auth_store_writes_total{result=\"%s\"} %" PRIu64 "\n", write_names[i],
                atomic_load_explicit(&g_writes[i], memory_order_relaxed));
    fputs("# HELP heare_auth_build_info The running version of heare-authd.\n"
          "# TYPE heare_auth_build_info gauge\n"
          "heare_auth_build_info{version=\"" HEARE_VERSION "\"} 1\n",
          f);
    bool failed = ferror(f);
    if (fclose(f) != 0 || failed) {
        free(buf);
        return -ENOMEM;
    }
    *ret = buf;
    *ret_len = len;
    return 0;
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
