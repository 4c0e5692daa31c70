/* timeutil: RFC 3339 times and human durations ("90d", "12h", "30m", "3600s"). All times
 * are Unix seconds (int64_t), UTC. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* "YYYY-MM-DDTHH:MM:SSZ" plus NUL */
#define TIMEUTIL_RFC3339_LEN 20

/* Parses an RFC 3339 time: "2025-10-28T16:45:18Z", optional fraction (truncated to the
 * second), "Z" or "+hh:mm"/"-hh:mm" offset; 't'/'z' and a space for 'T' are accepted.
 * With lenient, a missing offset means UTC (Python's datetime.isoformat() of a naive
 * time, as the v1 file has it). Fields are range-checked (month 1-12, day valid for the
 * month, hour 0-23, minute 0-59, second 0-60). Returns 0 or -EINVAL. */
int timeutil_parse_rfc3339(const char *s, bool lenient, int64_t *ret);

/* Formats t as "YYYY-MM-DDTHH:MM:SSZ". Returns 0, or -ERANGE for a year outside 0..9999. */
int timeutil_format_rfc3339(int64_t t, char ret[TIMEUTIL_RFC3339_LEN + 1]);

/* Parses a duration: a positive decimal number followed by one unit of s, m, h, d or w
 * ("90d", "12h", "30m", "3600s"); a bare number is seconds. Overflow and junk are -EINVAL.
 * Returns 0 and sets *ret to seconds. */
int timeutil_parse_duration(const char *s, int64_t *ret);

/* WHEN of the CLI: an RFC 3339 time (strict), or a duration from now. Returns 0 or -EINVAL. */
int timeutil_parse_when(const char *s, int64_t now, int64_t *ret);

/* CLOCK_MONOTONIC now, in milliseconds: for timeouts and elapsed times. */
int64_t timeutil_monotonic_ms(void);

/* *ret = CLOCK_MONOTONIC now + ms: a deadline for pthread_cond_timedwait on a condition
 * variable set to that clock. */
struct timespec;
void timeutil_deadline_ms(struct timespec *ret, uint64_t ms);

/* Wall clock now, in Unix seconds. */
int64_t timeutil_now(void);
