/* keystate: what this daemon knows about a key beyond the document: its usage counters and
 * its rate-limit bucket, kept across keystore swaps; and the per-peer failed-attempt
 * throttle (SPEC §7). Counters are relaxed atomics; a bucket has its own spinlock that no
 * writer of the keystore ever takes. */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct keystate keystate;

/* New state for a key; refs 0. NULL on OOM. Store thread only, like the rest of this
 * group: states come from a pool that only the store thread touches. */
keystate *keystate_new(void);
/* Reference counting across snapshots; _unref gives the state back to the pool at 0. */
void keystate_ref(keystate *s);
void keystate_unref(keystate *s);
/* Frees the pool, once no state is in use any more (at exit). */
void keystate_free_all(void);
/* Sets the key's limit (0 = none); the bucket starts full when the limit changes. Returns
 * 0 or -ENOMEM (the first limit of a key needs its bucket). */
int keystate_set_limit(keystate *s, int64_t per_second, int64_t burst);

/* Counts one verification that resolved to this key; valid ones also set last_used_at. */
void keystate_count(keystate *s, bool valid, int64_t now);
uint64_t keystate_verifications(const keystate *s);
int64_t keystate_last_used_at(const keystate *s); /* 0: never */

/* Takes one token. Returns true if allowed; else false and *ret_retry_ms (>= 1). */
bool keystate_take(keystate *s, uint64_t now_ns, int64_t *ret_retry_ms);

/* Failed-attempt throttle, per peer, per wall-clock minute. A peer is a uid on the Unix
 * sockets and an address on HTTP (throttle_peer_addr). max 0 disables it.
 * throttle_check: true if the peer is over max this minute (*ret_retry_ms until the
 * minute ends). throttle_failed: counts one failure. */
struct sockaddr;
uint32_t throttle_peer_addr(const struct sockaddr *sa);
bool throttle_check(uint32_t peer, int64_t max, int64_t now_ms, int64_t *ret_retry_ms);
void throttle_failed(uint32_t peer, int64_t now_ms);
