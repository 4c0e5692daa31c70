/* http: the optional HTTP front (SPEC §6) on the same serving loops as Varlink. One
 * h2o configuration for the process; one h2o context per loop that has an HTTP listener. */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <h2o.h>

#include "conf.h"
#include "turns.h"

/* How long a request may take to arrive whole (headers and body), and how long an idle
 * keep-alive connection stays open: min(idle-timeout, this). */
#define HTTP_REQUEST_TIMEOUT_MS 10000
/* Request bodies over this get 413 (SPEC §6). */
#define HTTP_MAX_BODY (64 * 1024)

typedef struct http_loop http_loop;

/* Builds the process-wide h2o configuration. Main thread, before any loop starts. */
int http_init(const conf *c);
void http_free(void);

/* The HTTP side of one serving loop; on the loop's own thread. A closed connection takes one
 * from *load (the loop counts what it serves there). Requests take their turns (turns.h)
 * from the loop's *turns, with its Varlink calls. NULL on OOM. */
http_loop *http_loop_new(h2o_evloop_t *loop, atomic_size_t *load, turns *loop_turns);
/* Frees hl; only once it has no connections left. NULL is fine. */
void http_loop_free(http_loop *hl);
/* Serves a new connection, already counted in *load. */
void http_accept(http_loop *hl, h2o_socket_t *sock);
/* From the serving loop's timers (never between two runs of the loop): answers one pass of
 * the requests held for their connection's turn; looks again at the ones held back by
 * buffers-max, after answering those whose peer hung up if hangups. NULL is fine. */
void http_loop_run_ready(http_loop *hl);
void http_loop_run_waiting(http_loop *hl, bool hangups);
/* Whether requests wait for a turn (the loop should not sleep), or for buffers-max. */
bool http_loop_has_ready(http_loop *hl);
bool http_loop_has_waiting(http_loop *hl);
/* Sets up an HTTP listening socket (its connections' receive buffer); main thread, before
 * the loops start. */
void http_listener_setup(int fd, const conf *c);
/* Open connections (for the cap and the drain). */
size_t http_loop_conns(const http_loop *hl);
/* Drain: answers what was asked, keeps no connection alive, closes idle ones. */
void http_loop_shutdown(http_loop *hl);
/* At the drain deadline: tears every connection down. */
void http_loop_abort(http_loop *hl);
