/* metrics: the daemon's counters (SPEC §9), kept without contention on the verify path:
 * each serving thread counts into a shard of its own (one writer, relaxed atomics, on cache
 * lines of its own); readers sum the shards into a snapshot. Counters written by one other
 * thread (store, push) are plain relaxed atomics. Every consumer (GET /metrics, the admin
 * GetMetrics, the StatsD push) works from a snapshot. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "keystore.h"

typedef enum metrics_read {
    METRICS_READ_CHANGED,   /* a new document was loaded */
    METRICS_READ_UNCHANGED, /* the store said nothing changed */
    METRICS_READ_ERROR,
    _METRICS_READ_MAX,
} metrics_read;

typedef enum metrics_write {
    METRICS_WRITE_OK,
    METRICS_WRITE_CONFLICT,
    METRICS_WRITE_ERROR,
    _METRICS_WRITE_MAX,
} metrics_write;

/* Verify latency histogram: upper bounds in nanoseconds, 1 µs … 10 ms, then +Inf. */
#define METRICS_BUCKETS 14
extern const uint64_t metrics_bucket_ns[METRICS_BUCKETS - 1];

typedef struct metrics_snapshot {
    uint64_t verify[_VERIFY_CODE_MAX];
    uint64_t buckets[METRICS_BUCKETS]; /* per bucket, not cumulative */
    uint64_t duration_ns;              /* sum of every verify's duration */
    uint64_t health_requests;
    uint64_t reads[_METRICS_READ_MAX];
    uint64_t writes[_METRICS_WRITE_MAX];
    uint64_t pushes, push_failures;
    uint64_t keys;
    const char *status; /* "healthy", "degraded" or "unhealthy" (static) */
} metrics_snapshot;

/* Gives the calling thread a shard of its own. Call once on each serving thread before it
 * counts; threads without one count into a shared shard. Returns 0 or -ENOMEM. */
int metrics_thread_init(void);

/* One verification with its result and how long it took. */
void metrics_count_verify(verify_code code, uint64_t duration_ns);
void metrics_count_health(void);
void metrics_count_store_read(metrics_read result);
void metrics_count_store_write(metrics_write result);
void metrics_count_push(bool ok);

void metrics_snapshot_take(metrics_snapshot *s);

/* The Prometheus text exposition (format 0.0.4) with HELP and TYPE lines. Returns 0 with
 * *ret (caller frees) and *ret_len, or -ENOMEM. */
int metrics_render_prometheus(const metrics_snapshot *s, char **ret, size_t *ret_len);
/* The same samples as a JSON array of {"name", "labels": {…}, "value"} (GetMetrics). */
json_t *metrics_render_json(const metrics_snapshot *s);

/* Frees the shards; only once no thread counts any more. */
void metrics_free(void);
