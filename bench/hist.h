/* hist: a fixed log-linear latency histogram (HDR style) in nanoseconds. Recording is two
 * shifts and an increment; nothing is allocated after the histogram exists. */
#pragma once

#include <stdint.h>
#include <string.h>

/* 2^HIST_SUB_BITS linear sub-buckets per power of two: relative error under 1/32 (3 %). */
#define HIST_SUB_BITS 5
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_EXP 40 /* up to 2^40 ns, about 18 minutes */
#define HIST_BUCKETS (HIST_EXP * HIST_SUB)

typedef struct hist {
    uint64_t count;
    uint64_t max;
    uint64_t b[HIST_BUCKETS];
} hist;

static inline unsigned hist_index(uint64_t v)
{
    if (v < HIST_SUB)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= HIST_SUB_BITS */
    unsigned shift = e - HIST_SUB_BITS;
    unsigned idx = (shift + 1) * HIST_SUB + (unsigned)((v >> shift) & (HIST_SUB - 1));
    return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

/* The upper edge of a bucket, so percentiles never under-report. */
static inline uint64_t hist_value(unsigned idx)
{
    if (idx < HIST_SUB)
        return idx;
    unsigned shift = idx / HIST_SUB - 1;
    uint64_t sub = idx % HIST_SUB;
    return ((HIST_SUB + sub + 1) << shift) - 1;
}

static inline void hist_record(hist *h, uint64_t v)
{
    h->b[hist_index(v)]++;
    h->count++;
    if (v > h->max)
        h->max = v;
}

static inline void hist_merge(hist *into, const hist *from)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        into->b[i] += from->b[i];
    into->count += from->count;
    if (from->max > into->max)
        into->max = from->max;
}

static inline uint64_t hist_percentile(const hist *h, double p)
{
    if (h->count == 0)
        return 0;
    uint64_t want = (uint64_t)(p / 100.0 * (double)h->count + 0.5);
    if (want < 1)
        want = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= want) {
            uint64_t v = hist_value(i);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}
