/* buffers: see buffers.h. */
#include <malloc.h>
#include <stdatomic.h>

#include "buffers.h"
#include "timeutil.h"

/* Trim once this much was freed, and not more often than this: malloc_trim walks every
 * arena, a few milliseconds with a large heap. Without it, glibc keeps what a burst of
 * clients freed (its mmap threshold rises after the first large free, and later buffers
 * come from the heap, whose fragments it does not give back on its own): measured after
 * three floods of 300 connections, RSS 42 -> 133 -> 124 MiB instead of 12 MiB each time. */
#define TRIM_AFTER_BYTES (UINT64_C(4) << 20)
#define TRIM_INTERVAL_MS 1000

static uint64_t g_max;
static _Atomic uint64_t g_total;
static _Atomic uint64_t g_freed; /* since the last trim */
static _Atomic int64_t g_trimmed_ms;
static atomic_size_t g_conns;

/* Buffers from this size up get mappings of their own: a connection's reply buffer then
 * grows by mremap, in place, rather than by copying to a larger heap block and leaving the
 * old one behind until the next trim. It lowers the peak of a flood (286-295 MiB against
 * 288-308 MiB, and once 347 MiB on a loaded machine, with buffers-max 256 MiB); the trim,
 * not this, is what gives the memory back (pinned alone: 35 -> 50 MiB after three floods). */
#define MMAP_THRESHOLD (128 * 1024)

void buffers_init(uint64_t max)
{
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    g_max = max;
    atomic_store(&g_total, 0);
    atomic_store(&g_freed, 0);
    atomic_store(&g_trimmed_ms, timeutil_monotonic_ms());
}

void buffers_set(uint64_t *held, uint64_t now)
{
    uint64_t was = *held;
    if (now == was)
        return;
    *held = now;
    if (now > was) {
        atomic_fetch_add_explicit(&g_total, now - was, memory_order_relaxed);
    } else {
        atomic_fetch_sub_explicit(&g_total, was - now, memory_order_relaxed);
        atomic_fetch_add_explicit(&g_freed, was - now, memory_order_relaxed);
    }
}

uint64_t buffers_total(void)
{
    return atomic_load_explicit(&g_total, memory_order_relaxed);
}

void buffers_note_conns(size_t n)
{
    atomic_store_explicit(&g_conns, n, memory_order_relaxed);
}

static uint64_t share(void)
{
    size_t n = atomic_load_explicit(&g_conns, memory_order_relaxed);
    return g_max / (n ? n : 1);
}

bool buffers_may_grow(uint64_t held)
{
    return buffers_total() < g_max || held < share();
}

bool buffers_may_read(uint64_t held, uint64_t read_max)
{
    return buffers_total() < g_max || held == 0 || held + read_max <= share();
}

void buffers_maybe_trim(void)
{
    if (atomic_load_explicit(&g_freed, memory_order_relaxed) < TRIM_AFTER_BYTES)
        return;
    int64_t now = timeutil_monotonic_ms();
    int64_t last = atomic_load_explicit(&g_trimmed_ms, memory_order_relaxed);
    if (now - last < TRIM_INTERVAL_MS ||
        !atomic_compare_exchange_strong_explicit(&g_trimmed_ms, &last, now, memory_order_relaxed,
                                                 memory_order_relaxed))
        return;
    atomic_store_explicit(&g_freed, 0, memory_order_relaxed);
    malloc_trim(0);
}
