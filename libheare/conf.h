/* conf: heare-authd configuration (SPEC §10): defaults, then the file, then the
 * environment, then command-line flags, each through conf_set() so a value is checked the
 * same way wherever it comes from. Errors name the source, the line and the key. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CONF_DEFAULT_PATH "/etc/heare-auth/heare-authd.conf"

typedef enum conf_log_format {
    CONF_LOG_AUTO,    /* journal if JOURNAL_STREAM is set, else JSON lines */
    CONF_LOG_JSON,
    CONF_LOG_JOURNAL,
} conf_log_format;

typedef enum conf_log_verify {
    CONF_LOG_VERIFY_AUTO, /* summary when logging to the journal, else all */
    CONF_LOG_VERIFY_ALL,
    CONF_LOG_VERIFY_FAILURES,
    CONF_LOG_VERIFY_SUMMARY,
    CONF_LOG_VERIFY_NONE,
} conf_log_verify;

typedef struct conf {
    char *store;          /* URL */
    char *s3_region;
    char *s3_endpoint;    /* NULL: AWS */
    char *s3_addressing;  /* "virtual" | "path" | NULL (derived from the endpoint) */
    char *s3_sse;         /* "AES256" | "aws:kms" | "none" */
    int64_t poll_interval_ms;
    char *cache;          /* last-known-good path; "" disables */
    char *verify_socket;
    char *admin_socket;
    char *http_listen;    /* NULL: off */
    uid_t *admin_uids;
    size_t n_admin_uids;
    gid_t *admin_gids;
    size_t n_admin_gids;
    conf_log_format log_format;
    int log_level;        /* syslog priority: LOG_ERR … LOG_DEBUG */
    conf_log_verify log_verify;
    char *metrics_url;    /* NULL: off */
    char *metrics_secret;
    char *metrics_prefix;
    int64_t metrics_interval_ms;
    int64_t max_failures_per_minute;
    int64_t idle_timeout_ms;
    int64_t message_timeout_ms; /* a Varlink message's first byte to its last */
    unsigned max_connections_per_uid; /* on the verify socket; uid 0 and ours are exempt */
    uint64_t connection_buffer_max; /* bytes: one connection's unsent replies and unread calls */
    uint64_t buffers_max;           /* bytes: every connection's buffers together */
    unsigned threads;     /* 0 until set: the number of CPUs */
} conf;

typedef struct conf_key_info {
    const char *key;         /* "poll-interval" */
    const char *default_str; /* as shown in --help */
    const char *env;         /* environment names, for --help ("HTTP_LISTEN"), or NULL */
    const char *help;        /* one line */
} conf_key_info;

/* The table of every configuration key, in SPEC order. */
const conf_key_info *conf_keys(size_t *ret_n);

/* Fills c with the defaults of SPEC §10. Returns 0 or -ENOMEM. */
int conf_init(conf *c);

/* Frees what c owns; c may be half-built. */
void conf_done(conf *c);

/* Sets one key from text, validating it (durations through timeutil, user and group names
 * through getpwnam/getgrnam or numeric ids, enums by name). Returns 0 or -EINVAL with
 * *reterr (caller frees) "KEY: reason" (the caller prefixes the source), -ENOKEY for an
 * unknown key. */
int conf_set(conf *c, const char *key, const char *value, char **reterr);

/* Reads "key = value" lines with '#' comments. A missing file is 0 (nothing set) when
 * !must_exist. Errors: -errno, *reterr = "PATH:LINE: KEY: reason" or "PATH: reason". */
int conf_load_file(conf *c, const char *path, bool must_exist, char **reterr);

/* Applies the environment of SPEC §10 (HEARE_AUTH_STORE; S3_BUCKET + S3_KEY; S3_REGION,
 * AWS_REGION; S3_ENDPOINT; HTTP_LISTEN; PROTOCOL + DEST_HOST + DEST_PORT; SECRET).
 * Errors: -EINVAL, *reterr = "environment VAR: reason". */
int conf_load_env(conf *c, char **reterr);

/* Splits a "HOST:PORT" or "[IPv6]:PORT" that the configuration accepted (http-listen, the
 * part of metrics-url after "udp://") into a host without brackets and a port, both owned
 * by the caller. Returns 0, -EINVAL without a port, -ENOMEM. */
int conf_split_host_port(const char *spec, char **ret_host, char **ret_port);

/* Checks the rules between keys (buffers-max holds at least one connection-buffer-max), once
 * every source is applied. Errors: -EINVAL, *reterr = "key: reason". */
int conf_check(const conf *c, char **reterr);

/* Writes "key = value" lines for the effective configuration, secrets shown as "(set)".
 * Returns a malloc'd string or NULL on OOM. */
char *conf_dump(const conf *c);
