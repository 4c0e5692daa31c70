/* keystate: per-key usage counters and token buckets that outlive keystore swaps, and the
 * per-peer failed-attempt throttle. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "keystate.h"

/* A rate-limit bucket, only for the keys that have a limit. */
typedef struct bucket {
    atomic_flag lock; /* guards the rest */
    int64_t per_second, burst; /* per_second 0: the limit went away */
    double tokens;
    uint64_t refilled_ns;
} bucket;

/* 32 bytes for every key of the store: a million keys cost 32 MB here. */
struct keystate {
    _Atomic uint64_t verifications;
    _Atomic int64_t last_used_at;
    union {
        _Atomic(bucket *) bucket; /* NULL: no limit */
        keystate *next_free;      /* on the free list */
    };
    unsigned refs; /* store thread only */
};

/* States come from blocks, not one malloc each (which would add 16 bytes of header to
 * every 32), and go back to a free list. Store thread only. */
#define BLOCK_STATES 4096

typedef struct block {
    struct block *next;
    keystate states[BLOCK_STATES];
} block;

static block *g_blocks;
static size_t g_block_used = BLOCK_STATES;
static keystate *g_free;

keystate *keystate_new(void)
{
    keystate *s = g_free;

    if (s)
        g_free = s->next_free;
    else {
        if (g_block_used == BLOCK_STATES) {
            block *b = malloc(sizeof(*b));
            if (!b)
                return NULL;
            b->next = g_blocks;
            g_blocks = b;
            g_block_used = 0;
        }
        s = &g_blocks->states[g_block_used++];
    }
    *s = (keystate){0};
    return s;
}

void keystate_ref(keystate *s)
{
    s->refs++;
}

void keystate_unref(keystate *s)
{
    if (!s || --s->refs > 0)
        return;
    free(atomic_load_explicit(&s->bucket, memory_order_relaxed));
    s->next_free = g_free;
    g_free = s;
}

void keystate_free_all(void)
{
    while (g_blocks) {
        block *b = g_blocks;
        g_blocks = b->next;
        free(b);
    }
    g_block_used = BLOCK_STATES;
    g_free = NULL;
}

static void lock(bucket *b)
{
    while (atomic_flag_test_and_set_explicit(&b->lock, memory_order_acquire))
        ;
}

static void unlock(bucket *b)
{
    atomic_flag_clear_explicit(&b->lock, memory_order_release);
}

int keystate_set_limit(keystate *s, int64_t per_second, int64_t burst)
{
    bucket *b = atomic_load_explicit(&s->bucket, memory_order_acquire);

    if (!b) {
        if (per_second <= 0)
            return 0;
        b = calloc(1, sizeof(*b));
        if (!b)
            return -ENOMEM;
        atomic_flag_clear(&b->lock);
        b->per_second = per_second;
        b->burst = burst;
        b->tokens = (double)burst;
        /* Published whole: a reader sees NULL or a ready bucket. */
        atomic_store_explicit(&s->bucket, b, memory_order_release);
        return 0;
    }
    lock(b);
    if (b->per_second != per_second || b->burst != burst) {
        b->per_second = per_second > 0 ? per_second : 0;
        b->burst = burst;
        b->tokens = (double)burst;
        b->refilled_ns = 0;
    }
    unlock(b);
    return 0;
}

void keystate_count(keystate *s, bool valid, int64_t now)
{
    atomic_fetch_add_explicit(&s->verifications, 1, memory_order_relaxed);
    /* At most one store a second: a hot key's line is not dirtied on every verify. */
    if (valid && atomic_load_explicit(&s->last_used_at, memory_order_relaxed) != now)
        atomic_store_explicit(&s->last_used_at, now, memory_order_relaxed);
}

uint64_t keystate_verifications(const keystate *s)
{
    return atomic_load_explicit(&((keystate *)s)->verifications, memory_order_relaxed);
}

int64_t keystate_last_used_at(const keystate *s)
{
    return atomic_load_explicit(&((keystate *)s)->last_used_at, memory_order_relaxed);
}

bool keystate_take(keystate *s, uint64_t now_ns, int64_t *ret_retry_ms)
{
    bucket *b = atomic_load_explicit(&s->bucket, memory_order_acquire);
    bool ok;

    if (!b)
        return true;
    lock(b);
    int64_t per_second = b->per_second;
    if (per_second <= 0) { /* the limit went away */
        unlock(b);
        return true;
    }
    if (b->refilled_ns != 0 && now_ns > b->refilled_ns) {
        b->tokens += (double)(now_ns - b->refilled_ns) * (double)per_second / 1e9;
        if (b->tokens > (double)b->burst)
            b->tokens = (double)b->burst;
    }
    b->refilled_ns = now_ns;
    ok = b->tokens >= 1.0;
    if (ok)
        b->tokens -= 1.0;
    else {
        double wait_ms = (1.0 - b->tokens) * 1000.0 / (double)per_second;
        *ret_retry_ms = wait_ms < 1.0 ? 1 : (int64_t)(wait_ms + 0.999);
    }
    unlock(b);
    return ok;
}

/* The throttle: a fixed table indexed by peer. Two peers sharing a slot share its count
 * only until one of them fails in a new minute: approximate, bounded, and lock-free to
 * read on the verify path. */
#define THROTTLE_SLOTS 1024

typedef struct slot {
    _Atomic uint64_t tag; /* peer << 32 | minute (low 32 bits) */
    _Atomic uint64_t failures;
} slot;

static slot g_slots[THROTTLE_SLOTS];

static uint64_t tag_of(uint32_t peer, int64_t now_ms)
{
    return ((uint64_t)peer << 32) | (uint32_t)(now_ms / 60000);
}

/* An IPv4 address as is; an IPv6 one by its /64 (what one host can hop within), folded
 * with FNV-1a. The top bit is set so that no address is mistaken for a small uid. */
uint32_t throttle_peer_addr(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return ntohl(in->sin_addr.s_addr) | UINT32_C(0x80000000);
    }
    if (sa->sa_family != AF_INET6)
        return UINT32_MAX;
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
        uint32_t v4;
        memcpy(&v4, in6->sin6_addr.s6_addr + 12, 4);
        return ntohl(v4) | UINT32_C(0x80000000);
    }
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < 8; i++)
        h = (h ^ in6->sin6_addr.s6_addr[i]) * 16777619u;
    return h | UINT32_C(0x80000000);
}

bool throttle_check(uint32_t peer, int64_t max, int64_t now_ms, int64_t *ret_retry_ms)
{
    slot *s = &g_slots[peer % THROTTLE_SLOTS];
    if (max <= 0 || atomic_load_explicit(&s->tag, memory_order_relaxed) != tag_of(peer, now_ms))
        return false;
    if (atomic_load_explicit(&s->failures, memory_order_relaxed) <= (uint64_t)max)
        return false;
    *ret_retry_ms = 60000 - now_ms % 60000;
    return true;
}

void throttle_failed(uint32_t peer, int64_t now_ms)
{
    slot *s = &g_slots[peer % THROTTLE_SLOTS];
    uint64_t tag = tag_of(peer, now_ms);
    uint64_t old = atomic_load_explicit(&s->tag, memory_order_relaxed);
    /* A new minute (or another peer) starts the slot over; the CAS lets one thread win. */
    if (old != tag && atomic_compare_exchange_strong(&s->tag, &old, tag)) {
        atomic_store_explicit(&s->failures, 1, memory_order_relaxed);
        return;
    }
    atomic_fetch_add_explicit(&s->failures, 1, memory_order_relaxed);
}
