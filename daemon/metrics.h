/* metrics: the daemon's counters (SPEC §9), kept without contention on the verify path:
 * each serving thread counts into a shard of its own (one writer, relaxed atomics, a cache
 * line apart from the others); readers sum the shards. The store thread's counters are
 * plain relaxed atomics: it is their only writer. */
#pragma once

#include <stddef.h>

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

/* Gives the calling thread a shard of its own. Call once on each serving thread before it
 * counts; threads without one count into a shared shard. Returns 0 or -ENOMEM. */
int metrics_thread_init(void);

void metrics_count_verify(verify_code code);
void metrics_count_store_read(metrics_read result);
void metrics_count_store_write(metrics_write result);

/* The Prometheus text exposition (format 0.0.4) of every metric, with HELP and TYPE lines.
 * Returns 0 with *ret (caller frees) and *ret_len, or -ENOMEM. */
int metrics_render_prometheus(char **ret, size_t *ret_len);

/* Frees the shards; only once no thread counts any more. */
void metrics_free(void);
