/* daemon: what the daemon's files share: the published keystore, the store thread's job
 * queue, the method tables and the call context handlers answer through. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "conf.h"
#include "keystate.h"
#include "keystore.h"
#include "varlink.h"

/* ---- state.c: the published keystore, health, and the store thread ---- */

/* What readers see: a keystore and, per key (by keystore_key_index), its keystate. */
typedef struct snapshot {
    keystore *ks;
    keystate **states;
    struct snapshot *retired_next; /* state.c: a retired snapshot waiting to be freed */
} snapshot;

/* The configuration the daemon runs with (set by state_init, constant afterwards). */
const conf *state_conf(void);

/* The snapshot readers see now. Call only on a registered RCU reader thread (the serving
 * loops) between quiescent states; never NULL after state_init(). */
const snapshot *state_snapshot(void);
/* The state of a key of snap->ks. */
keystate *snapshot_state(const snapshot *snap, const keystore_key *k);

typedef struct state_health {
    const char *status; /* "healthy" | "degraded" | "unhealthy" (static) */
    size_t keys_loaded;
    uint64_t generation;
    int64_t loaded_at; /* 0: never */
    char *last_error;  /* NULL or owned copy */
    int64_t started_at;
} state_health;

/* Copies the current health; the caller frees h->last_error. */
void state_get_health(state_health *h);

typedef enum job_kind {
    JOB_REFRESH,
    JOB_CREATE,
    JOB_UPDATE,
    JOB_ROTATE,
    JOB_DELETE,
} job_kind;

typedef struct job job;
/* Called on the store thread when a job finished; must only hand the job back to its
 * owner (e.g. post it to a serving loop). */
typedef void (*job_done_fn)(job *j);

struct job {
    job_kind kind;
    json_t *params;         /* owned: the Varlink parameters */
    job_done_fn done;       /* NULL: nobody waits (SIGHUP, poll) */
    void *userdata;
    /* results, set by the store thread */
    int r;                  /* 0 or -errno */
    json_t *reply;          /* owned: the reply parameters on success */
    char *error_param;      /* owned: InvalidParameter's parameter */
    char *error_reason;     /* owned: StoreUnavailable/Conflict reason */
    job *next;              /* queue link */
};

/* Loads the store once (or the cache) and publishes the first keystore. Never fails for a
 * store problem: that is reported as degraded/unhealthy. -errno only for OOM or a store URL
 * that cannot be opened (with *reterr). */
int state_init(const conf *c, char **reterr);
/* Starts the store thread: polling and jobs. */
int state_start(void);
/* Queues a job for the store thread. The job's done callback runs on that thread. */
void state_submit(job *j);
/* Asks for a reload (SIGHUP); async-signal-unsafe, call from the main thread. */
void state_request_reload(void);
/* Stops the store thread and frees everything; the serving loops must be gone. */
void state_finish(void);
/* A job of kind with its own copy of params (NULL: no parameters). NULL on OOM. */
job *job_new(job_kind kind, const json_t *params);
job *job_free(job *j);

/* ---- server.c: the serving loops ---- */

typedef enum sock_kind {
    SOCK_VERIFY,
    SOCK_ADMIN,
    SOCK_HTTP,
} sock_kind;

typedef struct listen_fd {
    int fd;
    sock_kind kind;
    char *path;       /* bound by us (unlinked at exit) or NULL */
} listen_fd;

/* Starts conf->threads serving loops, each accepting on every listener. */
int server_start(const conf *c, const listen_fd *listeners, size_t n_listeners);
/* Asks every loop to stop accepting, drain (at most 5 s) and return. Thread-safe. */
void server_stop(void);
/* Wakes every running loop so that each reports an RCU quiescent state now: a grace period
 * then takes microseconds, not a loop timeout. Thread-safe. */
void server_wake_all(void);
/* On a serving loop: runs j on the store thread, then calls done(j, userdata) back on this
 * same loop; j is freed after done returns. Returns 0, or -ENOMEM (j is left to the
 * caller). */
typedef void (*loop_job_done_fn)(job *j, void *userdata);
int loop_submit(job *j, loop_job_done_fn done, void *userdata);
/* True if every serving loop finished an iteration within the last max_ms; else false with
 * *ret_stuck the index of one that did not. For the watchdog. Thread-safe. */
bool server_progressing(uint64_t max_ms, unsigned *ret_stuck);
/* Waits until every loop has stopped serving. Returns false if some admin call was still
 * with the store thread. */
bool server_wait(void);
/* Tears the loops down (each on its own thread) and joins them; only after the store
 * thread stopped. */
void server_free(void);

/* ---- the call context handlers answer through (server.c) ---- */

typedef struct call_ctx call_ctx;

typedef struct peer_cred {
    pid_t pid;
    uid_t uid;
    gid_t gid;
} peer_cred;

const peer_cred *call_peer(const call_ctx *ctx);
const conf *call_conf(const call_ctx *ctx);
/* The peer's systemd unit (sd_pid_get_unit), looked up once per connection; NULL if none. */
const char *call_peer_unit(call_ctx *ctx);
sock_kind call_socket_kind(const call_ctx *ctx);
/* True when the call asked for "more" (and the method allows it). */
bool call_wants_more(const call_ctx *ctx);

/* Replies with parameters (consumed: the reference is stolen). continues: more follow. */
void call_reply(call_ctx *ctx, json_t *params, bool continues);
/* Replies with already-serialized parameters text: {"parameters":<text>} */
void call_reply_text(call_ctx *ctx, const char *params_text, size_t len);
/* Replies with an error name and parameters (consumed; NULL for {}). */
void call_error(call_ctx *ctx, const char *error, json_t *params);
void call_error_invalid_parameter(call_ctx *ctx, const char *parameter);
/* Out of memory while answering: StoreUnavailable, reason "out of memory". */
void call_error_oom(call_ctx *ctx);
/* The next replies carry a secret: the connection wipes its buffers once they are sent. */
void call_note_secret(call_ctx *ctx);
/* Hands the call to the store thread; the reply is sent when the job is done. Consumes j.
 * The connection reads no further call until then, so replies stay in call order. */
void call_submit(call_ctx *ctx, job *j);

/* ---- method tables (method-*.c) ---- */

#define METHOD_ADMIN 0x1u  /* admin socket and admin peers only */
#define METHOD_MORE 0x2u   /* may answer with several replies */

typedef void (*method_fn)(call_ctx *ctx, const json_t *params);
typedef struct method_entry {
    const char *name;
    method_fn fn;
    unsigned flags;
} method_entry;

/* The hot path: methods that also take a call varlink_call_scan_simple() could read, with
 * the same errors and answers as their method_fn, but no JSON tree. By qualified name. */
typedef void (*method_simple_fn)(call_ctx *ctx, const varlink_simple_call *call);
typedef struct method_simple_entry {
    const char *method;
    method_simple_fn fn;
} method_simple_entry;
extern const method_simple_entry methods_simple[];

typedef struct interface_entry {
    const char *name;
    const method_entry *methods;
    unsigned flags; /* METHOD_ADMIN for the whole interface */
} interface_entry;

extern const method_entry methods_auth[];
extern const method_entry methods_admin[];
extern const method_entry methods_service[];

/* Every interface, NULL-terminated, and the ones a socket kind offers in GetInfo. */
extern const interface_entry interfaces[];
bool interface_offered(const interface_entry *i, sock_kind kind);

/* Reads string parameters through a field table: each entry names a member, whether it is
 * required, and where the value goes (borrowed from params), with its length if len is
 * set. Unknown members and wrong types answer InvalidParameter, and so does a string
 * holding a NUL (valid JSON, but no C string) unless the field takes its length. Returns
 * false if an error was sent. With n 0 it checks that a method without parameters got
 * none. */
typedef struct param_field {
    const char *name;
    const char **value;
    bool required;
    size_t *len; /* NULL: the value must hold no NUL */
} param_field;
bool call_read_string_params(call_ctx *ctx, const json_t *params, const param_field *fields,
                             size_t n);

/* ---- method-auth.c: the verification every front (Varlink, HTTP) shares ---- */

typedef struct verify_peer {
    uint32_t throttle; /* failed-attempt throttle key: a uid, or throttle_peer_addr() */
    int64_t uid, pid;  /* for the log; -1 when unknown (HTTP over TCP) */
    const char *addr;  /* for the log: an HTTP peer's address, or NULL */
    const char *unit;  /* for the log: a socket peer's systemd unit, or NULL */
} verify_peer;

typedef struct verify_result {
    verify_code code;
    const keystore_key *key; /* the key the secret belongs to; NULL if none was found */
    int64_t retry_after_ms;  /* RATE_LIMITED */
} verify_result;

/* Verifies key against the current snapshot: the peer's failure throttle, lookup, scope,
 * rate limit, per-key counters, metrics and the verification log; then wipes
 * key[0..key_len). Serving loops only: r->key stays valid until the loop's next quiescent
 * state. */
void verify_run(char *key, size_t key_len, const char *scope, const char *user_agent,
                const verify_peer *peer, verify_result *r);
/* Brackets a batch of calls that one serving loop answers back to back (the complete calls
 * of one read). Inside it verify_run reads the clock once per call instead of three times:
 * a call starts where the previous one in the batch ended, and the wall clock is the
 * monotonic one plus an offset read at the batch's first call. */
void verify_batch_begin(void);
void verify_batch_end(void);
/* Renders Verify's reply parameters (also the body of HTTP 200) into buf like snprintf:
 * returns the length the text needs; it was written (NUL-terminated) if that is < cap. */
size_t verify_render(const verify_result *r, char *buf, size_t cap);

/* GetHealth's reply parameters (also the body of HTTP /health); *ret_status (may be NULL)
 * gets the status, a static string. NULL on OOM. */
json_t *health_reply(const char **ret_status);

/* Completion of an admin job on the serving loop, in method-admin.c. */
void method_admin_job_done(call_ctx *ctx, job *j);
