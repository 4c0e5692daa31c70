/* turns: how a serving loop shares itself between its connections. Between two polls the
 * loop serves calls for at most TURN_NS (a Varlink call or an HTTP request at a time, so one
 * call may overrun it), and one connection at most TURN_PER_CONN units of them (a Varlink
 * call is one unit, an HTTP request TURN_HTTP_REQUEST: h2o's parsing and answer cost several
 * calls' worth); then the connection waits in the loop's ready queue and the loop polls
 * again. So a client's single call waits for about two turns of other clients' work at
 * most, however many calls they pipeline and whatever the calls cost. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#define TURN_NS 100000
#define TURN_PER_CONN 16
#define TURN_HTTP_REQUEST 4

/* The loop's clock: one turn per poll and one per pass over the ready queue. */
typedef struct turns {
    uint64_t now;
    int64_t ends_ns; /* CLOCK_MONOTONIC */
    bool used;       /* something was served in this turn */
} turns;

/* A connection's share of the current turn. */
typedef struct turn_share {
    uint64_t turn;
    unsigned used;
} turn_share;

typedef enum turn_verdict {
    TURN_GO,         /* served now (counted) */
    TURN_AFTER_POLL, /* the loop's turn is over: first in line for the next pass */
    TURN_NEXT_ROUND, /* this connection's share is spent: back of the line */
} turn_verdict;

static inline int64_t turns_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void turns_next(turns *t)
{
    t->now++;
    t->used = false;
}

/* Whether the turn is over: always after TURN_NS, and never before its first call, which
 * starts the clock. */
static inline bool turns_over(turns *t)
{
    if (!t->used) {
        t->used = true;
        t->ends_ns = turns_clock_ns() + TURN_NS;
        return false;
    }
    return turns_clock_ns() >= t->ends_ns;
}

static inline turn_verdict turns_take(turns *t, turn_share *s, unsigned units)
{
    if (s->turn != t->now) {
        s->turn = t->now;
        s->used = 0;
    }
    if (s->used >= TURN_PER_CONN)
        return TURN_NEXT_ROUND;
    if (turns_over(t))
        return TURN_AFTER_POLL;
    s->used += units;
    return TURN_GO;
}
