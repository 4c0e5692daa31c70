/* keystate: per-key usage counters and token buckets that outlive keystore swaps, and the
 * per-peer failed-attempt throttle. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "keystate.h"

struct keystate {
    _Atomic uint64_t verifications;
    _Atomic int64_t last_used_at;
    unsigned refs; /* store thread only */
    /* 0: no limit. Read without the lock so that keys without a limit never take it. */
    _Atomic int64_t per_second;
    atomic_flag lock; /* guards the bucket below and writes of per_second */
    int64_t burst;
    double tokens;
    uint64_t refilled_ns;
};

keystate *keystate_new(void)
{
    keystate *s = calloc(1, sizeof(*s));
    if (s)
        atomic_flag_clear(&s->lock);
    return s;
}

void keystate_ref(keystate *s)
{
    s->refs++;
}

void keystate_unref(keystate *s)
{
    if (s && --s->refs == 0)
        free(s);
}

static void lock(keystate *s)
{
    while (atomic_flag_test_and_set_explicit(&s->lock, memory_order_acquire))
        ;
}

static void unlock(keystate *s)
{
    atomic_flag_clear_explicit(&s->lock, memory_order_release);
}

void keystate_set_limit(keystate *s, int64_t per_second, int64_t burst)
{
    lock(s);
    if (s->per_second != per_second || s->burst != burst) {
        s->per_second = per_second;
        s->burst = burst;
        s->tokens = (double)burst;
        s->refilled_ns = 0;
    }
    unlock(s);
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
    bool ok;
    if (atomic_load_explicit(&s->per_second, memory_order_relaxed) <= 0)
        return true;
    lock(s);
    int64_t per_second = s->per_second;
    if (per_second <= 0) { /* the limit went away meanwhile */
        unlock(s);
        return true;
    }
    if (s->refilled_ns != 0 && now_ns > s->refilled_ns) {
        s->tokens += (double)(now_ns - s->refilled_ns) * (double)per_second / 1e9;
        if (s->tokens > (double)s->burst)
            s->tokens = (double)s->burst;
    }
    s->refilled_ns = now_ns;
    ok = s->tokens >= 1.0;
    if (ok)
        s->tokens -= 1.0;
    else {
        double wait_ms = (1.0 - s->tokens) * 1000.0 / (double)per_second;
        *ret_retry_ms = wait_ms < 1.0 ? 1 : (int64_t)(wait_ms + 0.999);
    }
    unlock(s);
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
