/* log: the daemon's log sink (SPEC §9). To the journal with structured fields, or one JSON
 * object per line on stderr with the Python service's field names. Used only by the
 * programs' edges (the library itself never logs). Thread-safe. Never pass a secret. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <syslog.h>

#include "macro.h"

typedef enum log_target {
    LOG_TARGET_JSON,    /* stderr, one JSON object per line */
    LOG_TARGET_JOURNAL, /* sd_journal_send */
} log_target;

/* Structured fields of one event; NULL / -1 members are left out. */
typedef struct log_fields {
    const char *event;      /* HEARE_EVENT / "event": "verification_success", "key_created"… */
    const char *key_id;     /* HEARE_KEY_ID / "key_id" */
    const char *key_name;   /* HEARE_KEY_NAME / "key_name" */
    const char *key_prefix; /* first 8 characters of a failed key / "key_prefix" */
    const char *user_agent; /* HEARE_USER_AGENT / "user_agent" */
    const char *code;       /* verify code / "code" */
    int64_t peer_uid;       /* HEARE_PEER_UID / "peer_uid", -1 none */
    int64_t peer_pid;       /* HEARE_PEER_PID / "peer_pid", -1 none */
    const char *peer_unit;  /* HEARE_PEER_UNIT / "peer_unit" */
    const char *peer_addr;  /* HTTP peer address: HEARE_PEER_ADDR / "peer_addr" */
    const char *changed;    /* audit: comma-separated changed fields / "changed" */
    const char *counts;     /* a JSON object of counts by code: HEARE_COUNTS / "counts" */
    int64_t time_ns;        /* the event's wall-clock time (ns since the epoch), 0: now */
} log_fields;

#define LOG_FIELDS_INIT {.peer_uid = -1, .peer_pid = -1}

/* Chooses the target and the maximum priority logged (LOG_ERR … LOG_DEBUG). */
void log_setup(log_target target, int max_priority);

/* True if a message at priority would be written. */
bool log_enabled(int priority);

/* Makes the calling thread keep its JSON lines until log_flush() (or 64 KiB of them): for
 * serving loops, which flush once per iteration. Off frees the thread's buffer. */
void log_buffer_thread(bool on);
/* Writes the calling thread's pending lines, or hands them to the thread that is writing,
 * which writes them before it stops. */
void log_flush(void);

/* Writes one event. f may be NULL. The message is formatted with fmt. */
void log_event(int priority, const log_fields *f, const char *fmt, ...) _printf_(3, 4);

/* The same without a message: the event name is the message (JSON lines carry no
 * "message", as the Python service's did not; the journal's MESSAGE is the event). For the
 * busiest events, the verifications. */
void log_event_fields(int priority, const log_fields *f);

#define log_error(...) log_event(LOG_ERR, NULL, __VA_ARGS__)
#define log_warning(...) log_event(LOG_WARNING, NULL, __VA_ARGS__)
#define log_info(...) log_event(LOG_INFO, NULL, __VA_ARGS__)
#define log_debug(...) log_event(LOG_DEBUG, NULL, __VA_ARGS__)
