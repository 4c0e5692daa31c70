/* log: the programs' log sink: journal fields, or JSON lines on stderr (SPEC §9). */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

#include "ascii.h"
#include "log.h"
#include "timeutil.h"

static int log_target_now = LOG_TARGET_JSON;
static int log_max_priority = LOG_INFO;

#define JOURNAL_SOCKET "/run/systemd/journal/socket"

void log_setup(log_target target, int max_priority)
{
    /* sd_journal_send() drops messages silently when there is no journal: keep them on
     * stderr instead of losing them. */
    if (target == LOG_TARGET_JOURNAL && access(JOURNAL_SOCKET, F_OK) < 0)
        target = LOG_TARGET_JSON;
    __atomic_store_n(&log_target_now, (int)target, __ATOMIC_RELAXED);
    __atomic_store_n(&log_max_priority, max_priority, __ATOMIC_RELAXED);
}

bool log_enabled(int priority)
{
    return priority <= __atomic_load_n(&log_max_priority, __ATOMIC_RELAXED);
}

/* structlog's level names. */
static const char *level_name(int priority)
{
    if (priority <= LOG_CRIT)
        return "critical";
    if (priority == LOG_ERR)
        return "error";
    if (priority == LOG_WARNING)
        return "warning";
    if (priority <= LOG_INFO)
        return "info";
    return "debug";
}

/* ---- JSON lines, built by hand into a per-thread buffer ---- */

/* A thread's pending lines. Serving threads (log_buffer_thread) keep them until
 * log_flush(), once per loop iteration, so that logging every verification costs a
 * memcpy, not a write(2) under a process-wide lock; other threads write each line at once. */
typedef struct line_buf {
    char *p;
    size_t len, cap;
    bool buffered;
} line_buf;

static _Thread_local line_buf t_buf;

#define FLUSH_AT (64 * 1024)

static bool buf_reserve(line_buf *b, size_t more)
{
    if (b->len + more <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        return false;
    b->p = p;
    b->cap = cap;
    return true;
}

/* A JSON string of s[0..n) at p, which has room for 6 * n + 2 bytes; returns its end. Runs
 * of plain bytes (ascii.h) are copied eight at a time. Text from peers (a user agent, a
 * failed key's prefix) need not be UTF-8: such bytes become '?' so that the line stays
 * valid JSON and the event is still logged. */
static char *put_string(char *p, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;

    *p++ = '"';
    for (;;) {
        size_t run = ascii_plain_span(s + i, n - i);
        memcpy(p, s + i, run);
        p += run;
        i += run;
        if (i >= n)
            break;
        unsigned char c = u[i];
        if (c == '"' || c == '\\') {
            *p++ = '\\';
            *p++ = (char)c;
            i++;
        } else if (c < 0x20) {
            memcpy(p, "\\u00", 4);
            p[4] = hex[c >> 4];
            p[5] = hex[c & 15];
            p += 6;
            i++;
        } else if (c == 0x7f) {
            *p++ = (char)c; /* DEL needs no escape in JSON */
            i++;
        } else {
            size_t k = utf8_sequence_len(u + i, n - i);
            if (k) {
                memcpy(p, u + i, k);
                p += k;
                i += k;
            } else {
                *p++ = '?';
                i++;
            }
        }
    }
    *p++ = '"';
    return p;
}

/* Copies a literal (its length known at compile time) to p; returns its end. */
#define PUT_LIT(p, lit) ((char *)memcpy(p, lit, sizeof(lit) - 1) + sizeof(lit) - 1)

/* A non-negative number in decimal at p; returns its end. By hand: two go into every
 * verification line. */
static char *put_uint(char *p, int64_t v)
{
    char num[24];
    size_t n = sizeof(num);
    do {
        num[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    memcpy(p, num + n, sizeof(num) - n);
    return p + sizeof(num) - n;
}

/* "2025-10-28T16:45:18.123456Z", as structlog's TimeStamper(fmt="iso", utc=True) writes,
 * at p; returns its end. The part up to the second is formatted once a second per thread. */
static char *put_timestamp(char *p, int64_t time_ns)
{
    static _Thread_local time_t cached_sec = -1;
    static _Thread_local char cached[TIMEUTIL_RFC3339_LEN + 1];
    struct timespec ts;

    if (time_ns > 0)
        ts = (struct timespec){.tv_sec = time_ns / 1000000000, .tv_nsec = time_ns % 1000000000};
    else
        clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != cached_sec) {
        if (timeutil_format_rfc3339((int64_t)ts.tv_sec, cached) < 0)
            strcpy(cached, "1970-01-01T00:00:00Z");
        cached_sec = ts.tv_sec;
    }
    memcpy(p, cached, TIMEUTIL_RFC3339_LEN - 1); /* without the 'Z' */
    p += TIMEUTIL_RFC3339_LEN - 1;
    long us = ts.tv_nsec / 1000 % 1000000;
    *p++ = '.';
    for (int i = 5; i >= 0; i--, us /= 10)
        p[i] = (char)('0' + us % 10);
    p[6] = 'Z';
    return p + 7;
}

/* ---- writing ---- */

/* One thread writes at a time, so that lines from different threads never interleave even
 * when a write is longer than PIPE_BUF or comes back short. A thread that finds another
 * writing does not wait for it: it leaves its lines in `pending`, and the writer writes
 * them after its own before it stops (flat combining). So the serving loops never sleep
 * on each other's writes, and each thread's lines stay in order: a thread's later lines
 * either join `pending` behind its earlier ones or are written once `pending` is empty. */
#define PENDING_MAX (1024 * 1024) /* then a thread waits: a slow reader slows the writers */

static struct {
    pthread_mutex_t lock;
    pthread_cond_t done;   /* writing went false */
    bool writing;
    line_buf pending;      /* lines handed to the writer */
    line_buf spare;        /* the writer's: the lines it took from pending */
} g_out = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, {0}, {0}};

static void write_fd(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere left to report it */
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Writes p[0..n) now, or hands it to the thread that is writing. wait: return only once
 * the lines are written (threads that log now and then, and a thread's last flush, so
 * that nothing is left behind at exit). Called with g_out.lock held; returns without. */
static void write_lines(const char *p, size_t n, bool wait)
{
    while (g_out.writing) {
        if (!wait && g_out.pending.len + n <= PENDING_MAX && buf_reserve(&g_out.pending, n)) {
            memcpy(g_out.pending.p + g_out.pending.len, p, n);
            g_out.pending.len += n;
            pthread_mutex_unlock(&g_out.lock);
            return;
        }
        pthread_cond_wait(&g_out.done, &g_out.lock);
    }
    g_out.writing = true;
    pthread_mutex_unlock(&g_out.lock);
    write_fd(p, n);
    /* Then whatever the others left meanwhile. */
    for (;;) {
        pthread_mutex_lock(&g_out.lock);
        if (g_out.pending.len == 0)
            break;
        line_buf taken = g_out.pending;
        g_out.pending = g_out.spare;
        g_out.pending.len = 0;
        g_out.spare = taken;
        pthread_mutex_unlock(&g_out.lock);
        write_fd(taken.p, taken.len);
    }
    g_out.writing = false;
    pthread_cond_broadcast(&g_out.done);
    pthread_mutex_unlock(&g_out.lock);
}

static void flush(bool wait)
{
    line_buf *b = &t_buf;
    if (b->len == 0)
        return;
    pthread_mutex_lock(&g_out.lock);
    write_lines(b->p, b->len, wait);
    b->len = 0;
}

void log_flush(void)
{
    flush(false);
}

void log_buffer_thread(bool on)
{
    flush(true);
    t_buf.buffered = on;
    if (!on) {
        free(t_buf.p);
        t_buf = (line_buf){0};
    }
}

/* The line's string members, in the order they are written after "event". */
enum { M_MESSAGE, M_KEY_ID, M_KEY_NAME, M_KEY_PREFIX, M_USER_AGENT, M_CODE, M_PEER_UNIT,
       M_PEER_ADDR, M_CHANGED, M_COUNTS, M_COUNT };

/* Everything in a line but the strings' contents: names, punctuation, two numbers, the
 * timestamp and the level (a generous bound). */
#define LINE_FIXED_MAX 512

static void emit_json(int priority, const log_fields *f, const char *message)
{
    static const log_fields no_fields = LOG_FIELDS_INIT;
    const char *event = f && f->event ? f->event : message;
    const char *v[M_COUNT];
    size_t len[M_COUNT + 1], max = LINE_FIXED_MAX;
    line_buf *b = &t_buf;

    if (!f)
        f = &no_fields;
    v[M_MESSAGE] = f->event && *message ? message : NULL;
    v[M_KEY_ID] = f->key_id;
    v[M_KEY_NAME] = f->key_name;
    v[M_KEY_PREFIX] = f->key_prefix;
    v[M_USER_AGENT] = f->user_agent;
    v[M_CODE] = f->code;
    v[M_PEER_UNIT] = f->peer_unit;
    v[M_PEER_ADDR] = f->peer_addr;
    v[M_CHANGED] = f->changed;
    v[M_COUNTS] = f->counts;
    /* One reservation for the worst case (every byte escaped as \u00XX), then plain
     * copies: a verification line is built without a check per member. */
    for (size_t i = 0; i < M_COUNT; i++) {
        len[i] = v[i] ? strlen(v[i]) : 0;
        max += 6 * len[i];
    }
    len[M_COUNT] = strlen(event);
    max += 6 * len[M_COUNT];
    if (!buf_reserve(b, max))
        return; /* out of memory: drop the line, not the others */

    char *p = PUT_LIT(b->p + b->len, "{\"event\":");
    p = put_string(p, event, len[M_COUNT]);
#define MEMBER(i, name)                                                                            \
    if (v[i]) {                                                                                    \
        p = PUT_LIT(p, ",\"" name "\":");                                                          \
        p = put_string(p, v[i], len[i]);                                                           \
    }
    MEMBER(M_MESSAGE, "message");
    MEMBER(M_KEY_ID, "key_id");
    MEMBER(M_KEY_NAME, "key_name");
    MEMBER(M_KEY_PREFIX, "key_prefix");
    MEMBER(M_USER_AGENT, "user_agent");
    MEMBER(M_CODE, "code");
    if (f->peer_uid >= 0)
        p = put_uint(PUT_LIT(p, ",\"peer_uid\":"), f->peer_uid);
    if (f->peer_pid >= 0)
        p = put_uint(PUT_LIT(p, ",\"peer_pid\":"), f->peer_pid);
    MEMBER(M_PEER_UNIT, "peer_unit");
    MEMBER(M_PEER_ADDR, "peer_addr");
    MEMBER(M_CHANGED, "changed");
#undef MEMBER
    if (v[M_COUNTS]) {
        /* Already JSON (an object the daemon rendered): written as it is. */
        p = PUT_LIT(p, ",\"counts\":");
        memcpy(p, v[M_COUNTS], len[M_COUNTS]);
        p += len[M_COUNTS];
    }
    p = put_timestamp(PUT_LIT(p, ",\"timestamp\":\""), f->time_ns);
    p = PUT_LIT(p, "\",\"level\":\"");
    const char *level = level_name(priority);
    size_t level_len = strlen(level);
    memcpy(p, level, level_len);
    /* The newline goes out in the same write as the object. */
    p = PUT_LIT(p + level_len, "\"}\n");
    b->len = (size_t)(p - b->p);

    if (b->buffered) {
        if (b->len >= FLUSH_AT)
            log_flush();
        return;
    }
    /* A thread that logs now and then keeps no buffer: nothing is left when it exits. */
    flush(true);
    free(b->p);
    *b = (line_buf){0};
}

#define MAX_JOURNAL_FIELDS 16

/* Adds "NAME=value" to iov; the strings are freed by the caller through bufs. */
static void add_field(struct iovec *iov, char **bufs, size_t *n, const char *name,
                      const char *value)
{
    if (!value || *n >= MAX_JOURNAL_FIELDS)
        return;
    if (asprintf(&bufs[*n], "%s=%s", name, value) < 0) {
        bufs[*n] = NULL;
        return;
    }
    iov[*n] = (struct iovec){.iov_base = bufs[*n], .iov_len = strlen(bufs[*n])};
    (*n)++;
}

static void add_int_field(struct iovec *iov, char **bufs, size_t *n, const char *name, int64_t v)
{
    char num[24];

    if (v < 0)
        return;
    snprintf(num, sizeof(num), "%lld", (long long)v);
    add_field(iov, bufs, n, name, num);
}

static int emit_journal(int priority, const log_fields *f, const char *message)
{
    struct iovec iov[MAX_JOURNAL_FIELDS];
    char *bufs[MAX_JOURNAL_FIELDS];
    char prio[2] = {(char)('0' + (priority & 7)), '\0'};
    size_t n = 0;
    int r;

    add_field(iov, bufs, &n, "MESSAGE", *message || !f || !f->event ? message : f->event);
    add_field(iov, bufs, &n, "PRIORITY", prio);
    add_field(iov, bufs, &n, "SYSLOG_IDENTIFIER", program_invocation_short_name);
    if (f) {
        add_field(iov, bufs, &n, "HEARE_EVENT", f->event);
        add_field(iov, bufs, &n, "HEARE_KEY_ID", f->key_id);
        add_field(iov, bufs, &n, "HEARE_KEY_NAME", f->key_name);
        add_field(iov, bufs, &n, "HEARE_KEY_PREFIX", f->key_prefix);
        add_field(iov, bufs, &n, "HEARE_USER_AGENT", f->user_agent);
        add_field(iov, bufs, &n, "HEARE_CODE", f->code);
        add_int_field(iov, bufs, &n, "HEARE_PEER_UID", f->peer_uid);
        add_int_field(iov, bufs, &n, "HEARE_PEER_PID", f->peer_pid);
        add_field(iov, bufs, &n, "HEARE_PEER_UNIT", f->peer_unit);
        add_field(iov, bufs, &n, "HEARE_PEER_ADDR", f->peer_addr);
        add_field(iov, bufs, &n, "HEARE_CHANGED", f->changed);
        add_field(iov, bufs, &n, "HEARE_COUNTS", f->counts);
    }
    r = sd_journal_sendv(iov, (int)n);
    for (size_t i = 0; i < n; i++)
        free(bufs[i]);
    return r;
}

void log_event_fields(int priority, const log_fields *f)
{
    if (!log_enabled(priority))
        return;
    if (__atomic_load_n(&log_target_now, __ATOMIC_RELAXED) == LOG_TARGET_JOURNAL &&
        emit_journal(priority, f, "") >= 0)
        return;
    emit_json(priority, f, "");
}

void log_event(int priority, const log_fields *f, const char *fmt, ...)
{
    char stack[256];
    _cleanup_free_ char *heap = NULL;
    char *message = stack;
    va_list ap;

    if (!log_enabled(priority))
        return;
    va_start(ap, fmt);
    int r = vsnprintf(stack, sizeof(stack), fmt, ap);
    va_end(ap);
    if (r < 0)
        return;
    if ((size_t)r >= sizeof(stack)) {
        heap = malloc((size_t)r + 1);
        if (!heap)
            return;
        va_start(ap, fmt);
        vsnprintf(heap, (size_t)r + 1, fmt, ap);
        va_end(ap);
        message = heap;
    }

    if (__atomic_load_n(&log_target_now, __ATOMIC_RELAXED) == LOG_TARGET_JOURNAL &&
        emit_journal(priority, f, message) >= 0)
        return;
    /* The journal refused it: stderr still reaches someone (under systemd, the journal). */
    emit_json(priority, f, message);
}
