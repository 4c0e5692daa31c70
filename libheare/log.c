/* log: the programs' log sink: journal fields, or JSON lines on stderr (SPEC §9). */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <systemd/sd-journal.h>

#include "json-util.h"
#include "log.h"
#include "timeutil.h"

static int log_target_now = LOG_TARGET_JSON;
static int log_max_priority = LOG_INFO;
/* One writer at a time, so that lines from different threads never interleave even when
 * a line is longer than PIPE_BUF or write(2) comes back short. */
static pthread_mutex_t write_lock = PTHREAD_MUTEX_INITIALIZER;

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

/* A JSON string for s. Text from peers (a user agent, a failed key's prefix) need not be
 * UTF-8, which jansson refuses: such bytes become '?' so the event is still logged. */
static json_t *json_text(const char *s)
{
    json_t *j = json_string(s);
    if (j)
        return j;

    _cleanup_free_ char *copy = strdup(s);
    if (!copy)
        return NULL;
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    return json_string(copy);
}

static void put_str(json_t *o, const char *name, const char *v)
{
    if (v)
        json_object_set_new(o, name, json_text(v));
}

static void put_int(json_t *o, const char *name, int64_t v)
{
    if (v >= 0)
        json_object_set_new(o, name, json_integer((json_int_t)v));
}

/* "2025-10-28T16:45:18.123456Z", as structlog's TimeStamper(fmt="iso", utc=True) writes. */
static void timestamp(char ret[32])
{
    struct timespec ts;
    char sec[TIMEUTIL_RFC3339_LEN + 1];

    clock_gettime(CLOCK_REALTIME, &ts);
    if (timeutil_format_rfc3339((int64_t)ts.tv_sec, sec) < 0) {
        strcpy(ret, "1970-01-01T00:00:00.000000Z");
        return;
    }
    sec[TIMEUTIL_RFC3339_LEN - 1] = '\0'; /* drop the 'Z' */
    snprintf(ret, 32, "%s.%06ldZ", sec, ts.tv_nsec / 1000 % 1000000);
}

static void write_all(int fd, const char *p, size_t n)
{
    pthread_mutex_lock(&write_lock);
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            break; /* nowhere left to report it */
        }
        p += w;
        n -= (size_t)w;
    }
    pthread_mutex_unlock(&write_lock);
}

static void emit_json(int priority, const log_fields *f, const char *message)
{
    _cleanup_json_ json_t *o = json_object();
    _cleanup_free_ char *line = NULL;
    char ts[32];

    if (!o)
        return;
    if (f && f->event) {
        put_str(o, "event", f->event);
        if (*message)
            put_str(o, "message", message);
    } else {
        put_str(o, "event", message);
    }
    if (f) {
        put_str(o, "key_id", f->key_id);
        put_str(o, "key_name", f->key_name);
        put_str(o, "key_prefix", f->key_prefix);
        put_str(o, "user_agent", f->user_agent);
        put_str(o, "code", f->code);
        put_int(o, "peer_uid", f->peer_uid);
        put_int(o, "peer_pid", f->peer_pid);
        put_str(o, "peer_unit", f->peer_unit);
        put_str(o, "peer_addr", f->peer_addr);
        put_str(o, "changed", f->changed);
    }
    timestamp(ts);
    put_str(o, "timestamp", ts);
    put_str(o, "level", level_name(priority));

    line = json_dumps(o, JSON_COMPACT);
    if (!line)
        return;
    /* The newline goes out in the same write as the object. */
    size_t n = strlen(line);
    char *grown = realloc(line, n + 2);
    if (!grown)
        return;
    line = grown;
    line[n] = '\n';
    line[n + 1] = '\0';
    write_all(STDERR_FILENO, line, n + 1);
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
    }
    r = sd_journal_sendv(iov, (int)n);
    for (size_t i = 0; i < n; i++)
        free(bufs[i]);
    return r;
}

void log_event(int priority, const log_fields *f, const char *fmt, ...)
{
    _cleanup_free_ char *message = NULL;
    va_list ap;

    if (!log_enabled(priority))
        return;
    va_start(ap, fmt);
    int r = vasprintf(&message, fmt, ap);
    va_end(ap);
    if (r < 0) {
        message = NULL; /* undefined after a failed vasprintf */
        return;
    }

    if (__atomic_load_n(&log_target_now, __ATOMIC_RELAXED) == LOG_TARGET_JOURNAL &&
        emit_journal(priority, f, message) >= 0)
        return;
    /* The journal refused it: stderr still reaches someone (under systemd, the journal). */
    emit_json(priority, f, message);
}
