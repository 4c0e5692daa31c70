/* buffers: the bytes every connection holds (unsent replies and unread calls, Varlink and
 * HTTP together), counted against buffers-max, and when the daemon gives freed memory back
 * to the kernel. Shared by every serving loop; cheap enough to update once per turn of a
 * connection. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Before any loop starts. */
void buffers_init(uint64_t max);

/* Moves one connection's count from *held to now (0 when it closes). */
void buffers_set(uint64_t *held, uint64_t now);

/* The bytes all connections hold together. */
uint64_t buffers_total(void);

/* The connections open now, Varlink and HTTP: each loop tells it once an iteration. A
 * connection's share of buffers-max is buffers-max divided by it. */
void buffers_note_conns(size_t n);

/* Whether a connection holding held bytes may take more work: the total is under
 * buffers-max, or it holds less than its share of it. Over the limit, the connections
 * holding the most wait, and the ones that read their replies (holding little) are served
 * as before. */
bool buffers_may_grow(uint64_t held);

/* Whether it may also read more: as buffers_may_grow, but over the limit only with room for
 * a whole read (read_max) left in its share, or holding nothing. */
bool buffers_may_read(uint64_t held, uint64_t read_max);

/* Gives freed memory back to the kernel (malloc_trim) once enough has been freed since the
 * last time, at most once a second. From a thread that serves no client (it may take
 * milliseconds). */
void buffers_maybe_trim(void);
