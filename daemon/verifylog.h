/* verifylog: log-verify = summary. Instead of one line per verification, one line per key
 * and peer each metrics-interval with the counts by code ("verification_summary"; unknown
 * keys grouped per peer with no key_id), at most SUMMARY_LINES_MAX lines an interval (the
 * busiest pairs, the rest summed in one line with key_id "*"); failures are also logged
 * one by one, at most FAILURES_PER_SECOND, the rest only counted. It keeps the daemon's
 * volume under the journal's rate limit, which applies to the unit as a whole, so that the
 * audit events are never the lines that are dropped. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "keystore.h"

#define SUMMARY_LINES_MAX 500
#define FAILURES_PER_SECOND 10

/* Counts one verification, on the thread that made it (a serving loop): the key it found
 * (NULL if none), the peer's uid (-1 for HTTP over TCP) and address (NULL on the sockets). */
void verifylog_count(verify_code code, const keystore_key *k, int64_t uid, const char *addr);

/* Whether a failure may be logged on its own line now (FAILURES_PER_SECOND). */
bool verifylog_failure_due(int64_t now_ms);

/* Writes the summary lines of the interval just ended, if interval_ms passed since the
 * last; from one thread that serves no client (the main thread). */
void verifylog_flush(int64_t now_ms, int64_t interval_ms);

/* At exit, after the loops stopped: writes what is left and frees the tables. */
void verifylog_finish(void);
