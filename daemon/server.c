/* server: the serving loops. One h2o evloop per worker thread, every worker accepting on
 * every listening socket and handing each new connection to the loop that serves the fewest
 * (the kernel wakes one loop for a burst of connections, which would otherwise get them
 * all); each Varlink connection is an h2o_socket_t with an idle timeout, and a message
 * timeout from the first byte of a message to its end.
 * Calls are framed, checked against the socket and the peer, and dispatched through the
 * interface tables; replies go out in call order. Admin writes are handed to the store
 * thread and the connection waits for the answer without blocking its loop.
 * No connection holds its loop (turns.h): the loop serves a budget of calls between two
 * polls, a few per connection; one with calls left waits in the loop's ready queue, served
 * a pass at a time.
 * A connection whose unsent replies and unread calls reach connection-buffer-max is not
 * read until its client reads, and while all connections together hold buffers-max, those
 * holding more than their share wait (buffers.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <inttypes.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include <h2o/multithread.h>
#include <h2o/socket.h>
#include <h2o/timeout.h>
#include <systemd/sd-login.h>
#include <urcu-qsbr.h>

#include "buffers.h"
#include "daemon.h"
#include "http.h"
#include "json-lenient.h"
#include "json-util.h"
#include "log.h"
#include "macro.h"
#include "metrics.h"
#include "secret.h"
#include "timeutil.h"
#include "turns.h"

/* Each loop wakes at least this often so that it reports an RCU quiescent state: this
 * bounds how long a retired keystore waits before it is freed. */
#define LOOP_MAX_WAIT_MS 500
/* Connections per worker (Varlink and HTTP together); over it a new connection is closed
 * at once. */
#define MAX_CONNS_PER_WORKER 4096
/* How often the connections held back by buffers-max are looked at again, and how often
 * they are checked for a peer that hung up (they are not read, so nothing else sees it). */
#define WAITING_CHECK_MS 10
#define HANGUP_CHECK_MS 1000
/* An output buffer larger than this is freed once empty instead of kept for the next
 * replies: a burst does not leave a connection holding megabytes. */
#define BUF_KEEP_MAX (64 * 1024)
/* The most one read adds to a Varlink connection's input. h2o's own reads take all the
 * socket holds (a local peer can queue up to its send buffer, 208 KiB by default): a few
 * hundred connections that start writing at once would take one iteration of tens of
 * milliseconds to read. What is left waits for the next iteration. */
#define READ_CHUNK (16 * 1024)
#define DRAIN_TIMEOUT_MS 5000
/* After the drain deadline, how long torn-down HTTP connections get to close. */
#define ABORT_GRACE_MS 200
/* Connections a listener accepts per wake-up: a burst of hundreds is taken over several
 * iterations, with other clients' calls between them, rather than set up (and read) in one
 * iteration of tens of milliseconds. */
#define ACCEPT_BATCH 16
/* Descriptors kept back from connections, on top of a few per loop, for what must go on
 * working when clients hold all the others: the store (a file or S3 connections), the
 * cache, the log and the metrics push. */
#define FD_RESERVE 64
#define FD_RESERVE_PER_LOOP 8
/* The admin socket (root and admin users only) may go this far into the reserve, so an
 * operator can still run the CLI while clients hold every other descriptor. */
#define FD_ADMIN_EXTRA 16
/* How long a listener rests when no descriptor is left for a new connection: the clients
 * wait in the kernel's backlog meanwhile, and the loop does not spin on accept. */
#define ACCEPT_PAUSE_MS 100
/* At most one warning this often about a full descriptor table or a uid over its cap. */
#define LIMIT_WARN_INTERVAL_MS 10000

typedef struct worker worker;

typedef struct listener {
    worker *w;
    h2o_socket_t *sock;
    sock_kind kind;
    h2o_timeout_entry_t pause_entry; /* linked while accepting is paused */
} listener;

struct worker {
    unsigned idx;
    pthread_t tid;
    h2o_evloop_t *loop;
    h2o_multithread_queue_t *queue;
    h2o_multithread_receiver_t jobs_receiver;
    h2o_multithread_receiver_t stop_receiver;
    h2o_multithread_message_t stop_message;
    h2o_multithread_receiver_t wake_receiver;
    h2o_multithread_receiver_t handoff_receiver;
    /* Connections this loop serves or has been handed (Varlink and HTTP): other loops read
     * it to choose where a new connection goes. */
    atomic_size_t load;
    atomic_bool serving; /* its loop is set up: it may be handed connections */
    atomic_bool exited;
    _Atomic uint64_t heartbeat_ms; /* CLOCK_MONOTONIC at the end of the last iteration */
    int init_r;
    listener *listeners;
    size_t n_listeners;
    h2o_timeout_t idle_timeout;
    h2o_timeout_t message_timeout;
    h2o_timeout_t accept_pause;
    h2o_linklist_t conns;
    size_t n_conns;
    /* Connections with calls left, in order: those the loop's budget stopped first, then
     * those whose own share was spent. */
    h2o_linklist_t ready_first, ready;
    h2o_linklist_t waiting; /* connections held back by buffers-max */
    /* Closed connections whose buffers are still to free: a connection's megabyte takes
     * a fraction of a millisecond to give back, and hundreds may close together. */
    h2o_linklist_t freeing;
    turns turns;
    h2o_timeout_t pass_timeout; /* due at once */
    h2o_timeout_entry_t pass_entry;
    h2o_timeout_t waiting_timeout; /* WAITING_CHECK_MS */
    h2o_timeout_entry_t waiting_entry;
    uint64_t hangup_checked_ms;
    http_loop *http; /* NULL without an HTTP listener */
    size_t n_pending; /* jobs out with the store thread */
    bool stopping;
    bool aborted;
    uint64_t stop_deadline;
};

typedef struct conn {
    worker *w;
    h2o_socket_t *sock; /* NULL once closed */
    sock_kind kind;
    peer_cred peer;
    int admin; /* -1 unknown, 0 no, 1 yes */
    bool uid_counted; /* holds one of its uid's max-connections-per-uid */
    varlink_framing framing;
    h2o_timeout_entry_t idle_entry;
    /* Linked while part of a message is in and the rest is awaited: a message must be
     * whole within message-timeout of its first byte. */
    h2o_timeout_entry_t message_entry;
    h2o_linklist_t link;
    h2o_linklist_t queue_link; /* on w->ready or w->waiting */
    turn_share share;
    uint64_t held; /* bytes counted in buffers.h: unsent replies and unread input */
    char *out; /* replies not yet handed to the socket */
    size_t out_len, out_cap;
    char *wbuf; /* the write in flight */
    size_t wbuf_len, wbuf_cap;
    bool writing;
    bool reading;
    bool close_after_flush;
    bool pending_job;
    bool pending_oneway; /* the call out with the store thread was oneway */
    bool eof; /* the peer finished sending: answer what it sent, then close */
    bool wipe_output; /* a reply carried a secret: wipe the buffers after sending */
    bool unit_looked_up;
    char *unit; /* the peer's systemd unit, looked up once, for the logs */
} conn;

struct call_ctx {
    conn *c;
    bool oneway;
    bool more;
    bool answered;
};

/* A new connection on its way from the loop that accepted it to the one that serves it. */
typedef struct handoff {
    h2o_multithread_message_t super;
    h2o_socket_export_t sock;
    sock_kind kind;
    struct ucred cred; /* Varlink: the peer, read once by the loop that accepted it */
    bool uid_counted;
} handoff;

/* A job's trip back from the store thread to the loop that submitted it. */
typedef struct pending {
    h2o_multithread_message_t super;
    job *j;
    worker *w;
    loop_job_done_fn done;
    void *userdata;
} pending;

static const conf *g_conf;
static _Thread_local worker *t_worker; /* the loop running on this thread */
static worker *g_workers;
static size_t g_n_workers;

/* A loop is built, run and torn down on its own thread: h2o keeps per-thread state (its
 * buffer prototypes and recycling allocators) that every socket of the loop, its
 * multithread queue included, uses. These hand the phases over to and from main. */
static pthread_mutex_t g_phase_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_phase_cond = PTHREAD_COND_INITIALIZER;
static size_t g_n_started, g_n_loops_done;
static bool g_teardown;
static const listen_fd *g_lfds;
static size_t g_n_lfds;

static int worker_init(worker *w, const listen_fd *lfds, size_t n);
static void worker_teardown(worker *w);

static void phase_count(size_t *counter)
{
    pthread_mutex_lock(&g_phase_lock);
    (*counter)++;
    pthread_cond_broadcast(&g_phase_cond);
    pthread_mutex_unlock(&g_phase_lock);
}

static void phase_wait(const size_t *counter, size_t n)
{
    pthread_mutex_lock(&g_phase_lock);
    while (*counter < n)
        pthread_cond_wait(&g_phase_cond, &g_phase_lock);
    pthread_mutex_unlock(&g_phase_lock);
}

static void conn_process(conn *c);
static bool conn_flush(conn *c);

/* ---- output ---- */

static int out_reserve(conn *c, size_t more)
{
    if (c->out_len + more <= c->out_cap)
        return 0;
    size_t cap = c->out_cap ? c->out_cap : 4096;
    while (cap < c->out_len + more)
        cap *= 2;
    char *p = realloc(c->out, cap);
    if (!p)
        return -ENOMEM;
    c->out = p;
    c->out_cap = cap;
    return 0;
}

static void out_append(conn *c, const char *p, size_t n)
{
    if (out_reserve(c, n) < 0) {
        /* Out of memory: a reply cannot be lost silently, so the connection goes. */
        c->close_after_flush = true;
        return;
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

static void out_terminate(conn *c)
{
    char t = varlink_terminator(c->framing);
    out_append(c, &t, 1);
}

/* ---- replies ---- */

const peer_cred *call_peer(const call_ctx *ctx)
{
    return &ctx->c->peer;
}

const char *call_peer_unit(call_ctx *ctx)
{
    conn *c = ctx->c;
    if (!c->unit_looked_up) {
        /* Reads /proc/PID/cgroup: once per connection, not per call. */
        if (sd_pid_get_unit(c->peer.pid, &c->unit) < 0)
            c->unit = NULL;
        c->unit_looked_up = true;
    }
    return c->unit;
}

const conf *call_conf(const call_ctx *ctx)
{
    return g_conf;
}

void call_note_secret(call_ctx *ctx)
{
    ctx->c->wipe_output = true;
}

sock_kind call_socket_kind(const call_ctx *ctx)
{
    return ctx->c->kind;
}

bool call_wants_more(const call_ctx *ctx)
{
    return ctx->more;
}

void call_reply_text(call_ctx *ctx, const char *params_text, size_t len)
{
    static const char head[] = "{\"parameters\":";
    ctx->answered = true;
    if (ctx->oneway)
        return;
    out_append(ctx->c, head, sizeof(head) - 1);
    out_append(ctx->c, params_text, len);
    out_append(ctx->c, "}", 1);
    out_terminate(ctx->c);
}

void call_reply(call_ctx *ctx, json_t *params, bool continues)
{
    _cleanup_json_ json_t *msg = NULL;
    ctx->answered = true;
    if (ctx->oneway) {
        json_decref(params);
        return;
    }
    msg = json_object();
    if (!msg || json_object_set_new(msg, "parameters", params ? params : json_object()) < 0) {
        ctx->c->close_after_flush = true;
        return;
    }
    if (continues)
        json_object_set_new(msg, "continues", json_true());
    char *text = json_dumps(msg, JSON_COMPACT);
    if (!text) {
        ctx->c->close_after_flush = true;
        return;
    }
    out_append(ctx->c, text, strlen(text));
    out_terminate(ctx->c);
    if (ctx->c->wipe_output)
        secret_wipe(text, strlen(text));
    free(text);
}

void call_error(call_ctx *ctx, const char *error, json_t *params)
{
    _cleanup_json_ json_t *msg = NULL;
    ctx->answered = true;
    /* A oneway call gets no answer, not even an error. */
    if (ctx->oneway) {
        json_decref(params);
        return;
    }
    msg = json_pack("{s:s,s:o}", "error", error, "parameters", params ? params : json_object());
    char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    if (!text) {
        ctx->c->close_after_flush = true;
        return;
    }
    out_append(ctx->c, text, strlen(text));
    out_terminate(ctx->c);
    free(text);
}

void call_error_invalid_parameter(call_ctx *ctx, const char *parameter)
{
    call_error(ctx, "org.varlink.service.InvalidParameter",
               json_pack("{s:s}", "parameter", parameter));
}

void call_error_oom(call_ctx *ctx)
{
    call_error(ctx, "io.heare.AuthAdmin.StoreUnavailable",
               json_pack("{s:s}", "reason", "out of memory"));
}

bool call_read_string_params(call_ctx *ctx, const json_t *params, const param_field *fields,
                             size_t n)
{
    const char *name;
    json_t *v;

    for (size_t i = 0; i < n; i++)
        *fields[i].value = NULL;
    json_object_foreach((json_t *)params, name, v) {
        size_t i;
        for (i = 0; i < n; i++)
            if (strcmp(fields[i].name, name) == 0)
                break;
        if (i == n || !(json_is_string(v) || (json_is_null(v) && !fields[i].required)) ||
            (json_is_string(v) && !fields[i].len &&
             strlen(json_string_value(v)) != json_string_length(v))) {
            call_error_invalid_parameter(ctx, name);
            return false;
        }
        *fields[i].value = json_string_value(v);
        if (fields[i].len)
            *fields[i].len = json_string_length(v);
    }
    for (size_t i = 0; i < n; i++)
        if (fields[i].required && !*fields[i].value) {
            call_error_invalid_parameter(ctx, fields[i].name);
            return false;
        }
    return true;
}

/* ---- admin check ---- */

static bool gid_listed(gid_t gid)
{
    for (size_t i = 0; i < g_conf->n_admin_gids; i++)
        if (g_conf->admin_gids[i] == gid)
            return true;
    return false;
}

static bool peer_is_admin(conn *c)
{
    if (c->admin >= 0)
        return c->admin;
    c->admin = 0;
    if (c->peer.uid == 0 || c->peer.uid == geteuid())
        c->admin = 1;
    for (size_t i = 0; !c->admin && i < g_conf->n_admin_uids; i++)
        if (g_conf->admin_uids[i] == c->peer.uid)
            c->admin = 1;
    if (!c->admin && g_conf->n_admin_gids > 0) {
        if (gid_listed(c->peer.gid)) {
            c->admin = 1;
        } else {
            /* Supplementary groups as the kernel saw them at connect time. */
            gid_t groups[256];
            socklen_t len = sizeof(groups);
            if (getsockopt(h2o_socket_get_fd(c->sock), SOL_SOCKET, SO_PEERGROUPS, groups,
                           &len) == 0)
                for (size_t i = 0; i < len / sizeof(gid_t); i++)
                    if (gid_listed(groups[i]))
                        c->admin = 1;
        }
    }
    return c->admin;
}

/* ---- dispatch ---- */

static void dispatch(conn *c, const varlink_call *call)
{
    call_ctx ctx = {
        .c = c,
        .oneway = call->flags & VARLINK_CALL_ONEWAY,
    };
    size_t iface_len;
    const char *method_name;
    const interface_entry *iface = NULL;
    const method_entry *m = NULL;

    /* A name holding a NUL (valid JSON, see varlink_call_parse) is no method's. */
    if (strlen(call->method) != call->method_len ||
        varlink_split_method(call->method, &iface_len, &method_name) < 0) {
        call_error(&ctx, "org.varlink.service.MethodNotFound",
                   json_pack("{s:s%}", "method", call->method, call->method_len));
        return;
    }
    for (const interface_entry *i = interfaces; i->name; i++)
        if (strlen(i->name) == iface_len && memcmp(i->name, call->method, iface_len) == 0)
            iface = i;
    if (!iface) {
        _cleanup_free_ char *name = strndup(call->method, iface_len);
        call_error(&ctx, "org.varlink.service.InterfaceNotFound",
                   json_pack("{s:s}", "interface", name ? name : ""));
        return;
    }
    /* The connection code checks privileges so that handlers never have to. */
    if ((iface->flags & METHOD_ADMIN) && (c->kind != SOCK_ADMIN || !peer_is_admin(c))) {
        call_error(&ctx, "io.heare.AuthAdmin.PermissionDenied", NULL);
        return;
    }
    for (const method_entry *e = iface->methods; e->name; e++)
        if (strcmp(e->name, method_name) == 0)
            m = e;
    if (!m) {
        call_error(&ctx, "org.varlink.service.MethodNotFound",
                   json_pack("{s:s}", "method", call->method));
        return;
    }
    /* No method hands its connection over to another protocol. */
    if (call->flags & VARLINK_CALL_UPGRADE) {
        call_error_invalid_parameter(&ctx, "upgrade");
        return;
    }
    /* "more" on a method with one answer is answered once, as Varlink allows. */
    ctx.more = (call->flags & VARLINK_CALL_MORE) && (m->flags & METHOD_MORE);
    if (call->lenient) {
        /* A number no parameter type can hold, or a string with a NUL inside an object or
         * array, is the parameter's error whatever the method (the field readers judge
         * top-level strings: a key may hold anything and is then MALFORMED). */
        const char *name;
        json_t *v;
        json_object_foreach((json_t *)call->parameters, name, v)
            if (json_lenient_holds_unfit(v, call->unfit, true)) {
                call_error_invalid_parameter(&ctx, name);
                return;
            }
    }
    m->fn(&ctx, call->parameters);
    if (!ctx.answered)
        call_error(&ctx, "io.heare.AuthAdmin.StoreUnavailable",
                   json_pack("{s:s}", "reason", "internal error: no answer"));
}

/* methods_simple with their lengths and interfaces, resolved once in server_start() so that
 * the hot path compares bytes instead of walking strings. An entry whose interface is not
 * served is left out: its calls go to the full parser, which answers InterfaceNotFound. */
#define MAX_SIMPLE_ROUTES 8
typedef struct simple_route {
    const method_simple_entry *m;
    size_t len;
    const interface_entry *iface;
} simple_route;
static simple_route g_simple[MAX_SIMPLE_ROUTES];
static size_t g_n_simple;

static int simple_routes_init(void)
{
    g_n_simple = 0;
    for (const method_simple_entry *e = methods_simple; e->method; e++) {
        size_t iface_len;
        const char *method_name;
        const interface_entry *iface = NULL;
        if (varlink_split_method(e->method, &iface_len, &method_name) < 0)
            return -EINVAL;
        for (const interface_entry *i = interfaces; i->name; i++)
            if (strlen(i->name) == iface_len && memcmp(i->name, e->method, iface_len) == 0)
                iface = i;
        if (!iface)
            continue;
        if (g_n_simple == MAX_SIMPLE_ROUTES)
            return -E2BIG;
        g_simple[g_n_simple++] = (simple_route){.m = e, .len = strlen(e->method), .iface = iface};
    }
    return 0;
}

/* The hot path: a plain call (see varlink_call_scan_simple) to a method with a simple
 * handler, on an interface this peer may use, is answered without a JSON tree. Anything
 * else, errors included, goes through the full parser. Returns true if answered. */
static bool dispatch_simple(conn *c, char *msg, size_t len)
{
    varlink_simple_call sc;
    const simple_route *route = NULL;

    if (varlink_call_scan_simple(msg, len, &sc) <= 0)
        return false;
    for (size_t i = 0; i < g_n_simple; i++)
        if (g_simple[i].len == sc.method_len && memcmp(g_simple[i].m->method, sc.method, sc.method_len) == 0) {
            route = &g_simple[i];
            break;
        }
    /* The same privilege check as dispatch(). */
    if (!route || ((route->iface->flags & METHOD_ADMIN) &&
                   (c->kind != SOCK_ADMIN || !peer_is_admin(c)))) {
        varlink_simple_call_undo(&sc);
        return false;
    }
    call_ctx ctx = {.c = c};
    route->m->fn(&ctx, &sc);
    if (!ctx.answered)
        call_error(&ctx, "io.heare.AuthAdmin.StoreUnavailable",
                   json_pack("{s:s}", "reason", "internal error: no answer"));
    return true;
}

static void handle_message(conn *c, char *msg, size_t len)
{
    varlink_call call;
    const char *reason = NULL;

    if (dispatch_simple(c, msg, len))
        return;
    if (varlink_call_parse(msg, len, &call, &reason) < 0) {
        call_ctx ctx = {.c = c};
        call_error(&ctx, "io.heare.Auth.InvalidMessage",
                   json_pack("{s:s}", "reason", reason ? reason : "invalid message"));
        c->close_after_flush = true;
        return;
    }
    dispatch(c, &call);
    varlink_call_done(&call);
}

static void on_accept(h2o_socket_t *lsock, const char *err);

/* ---- limits: descriptors, and connections per uid ---- */

static size_t g_conn_budget; /* connections all loops may hold together (server_start) */
static uid_t g_self_uid;
static _Atomic int64_t g_fds_warned_ms = INT64_MIN / 2, g_uid_warned_ms = INT64_MIN / 2;

/* True at most once per LIMIT_WARN_INTERVAL_MS for *last, whichever loop asks. */
static bool limit_warn_due(_Atomic int64_t *last)
{
    int64_t now = timeutil_monotonic_ms();
    int64_t prev = atomic_load_explicit(last, memory_order_relaxed);
    return now - prev >= LIMIT_WARN_INTERVAL_MS &&
           atomic_compare_exchange_strong_explicit(last, &prev, now, memory_order_relaxed,
                                                   memory_order_relaxed);
}

/* Connections per uid on the verify socket, across every loop: only the uids that hold
 * connections now, a handful on most hosts, so a short array. */
typedef struct uid_count {
    uid_t uid;
    unsigned n;
} uid_count;
static pthread_mutex_t g_uid_lock = PTHREAD_MUTEX_INITIALIZER;
static uid_count *g_uids;
static size_t g_n_uids, g_cap_uids;

/* Counts one more connection of uid; false (and nothing counted) when uid already holds
 * max-connections-per-uid, or on OOM. */
static bool uid_acquire(uid_t uid)
{
    bool ok = true;
    size_t i;

    pthread_mutex_lock(&g_uid_lock);
    for (i = 0; i < g_n_uids && g_uids[i].uid != uid; i++)
        ;
    if (i < g_n_uids) {
        if (g_uids[i].n >= g_conf->max_connections_per_uid)
            ok = false;
        else
            g_uids[i].n++;
    } else {
        if (g_n_uids == g_cap_uids) {
            size_t cap = g_cap_uids ? 2 * g_cap_uids : 16;
            uid_count *grown = reallocarray(g_uids, cap, sizeof(*grown));
            if (grown) {
                g_uids = grown;
                g_cap_uids = cap;
            }
        }
        if (g_n_uids < g_cap_uids)
            g_uids[g_n_uids++] = (uid_count){.uid = uid, .n = 1};
        else
            ok = false;
    }
    pthread_mutex_unlock(&g_uid_lock);
    return ok;
}

static void uid_release(uid_t uid)
{
    pthread_mutex_lock(&g_uid_lock);
    for (size_t i = 0; i < g_n_uids; i++)
        if (g_uids[i].uid == uid) {
            if (--g_uids[i].n == 0)
                g_uids[i] = g_uids[--g_n_uids];
            break;
        }
    pthread_mutex_unlock(&g_uid_lock);
}

/* ---- connection life ---- */

static void conn_free_now(conn *c)
{
    buffers_set(&c->held, 0);
    if (c->wipe_output) {
        secret_wipe(c->out, c->out_cap);
        secret_wipe(c->wbuf, c->wbuf_cap);
    }
    free(c->out);
    free(c->wbuf);
    free(c->unit);
    free(c);
}

/* Frees a closed connection: at once if its buffers are small, else in a later pass of
 * the loop (free_closed), within the turns, and counted in buffers-max until then. */
static void conn_free(conn *c)
{
    if (c->out_cap + c->wbuf_cap <= BUF_KEEP_MAX)
        conn_free_now(c);
    else
        h2o_linklist_insert(&c->w->freeing, &c->link);
}

/* Frees what the turn leaves time for, at least one; all of them with budgeted false. */
static void free_closed(worker *w, bool budgeted)
{
    while (!h2o_linklist_is_empty(&w->freeing)) {
        conn *c = H2O_STRUCT_FROM_MEMBER(conn, link, w->freeing.next);
        h2o_linklist_unlink(&c->link);
        conn_free_now(c);
        if (budgeted && turns_over(&w->turns))
            break;
    }
}

static void conn_close(conn *c)
{
    if (!c->sock)
        return;
    if (h2o_timeout_is_linked(&c->idle_entry))
        h2o_timeout_unlink(&c->idle_entry);
    if (h2o_timeout_is_linked(&c->message_entry))
        h2o_timeout_unlink(&c->message_entry);
    h2o_linklist_unlink(&c->link);
    if (h2o_linklist_is_linked(&c->queue_link))
        h2o_linklist_unlink(&c->queue_link);
    c->w->n_conns--;
    atomic_fetch_sub_explicit(&c->w->load, 1, memory_order_relaxed);
    if (c->uid_counted) {
        uid_release(c->peer.uid);
        c->uid_counted = false;
    }
    /* The message bytes may hold a key: wipe what is left unread. */
    if (c->sock->input && c->sock->input->size)
        secret_wipe(c->sock->input->bytes, c->sock->input->size);
    h2o_socket_close(c->sock);
    c->sock = NULL;
    /* A job in flight still points here; the job's return frees it. */
    if (!c->pending_job)
        conn_free(c);
}

/* ---- buffers and turns ---- */

static uint64_t conn_unsent(const conn *c)
{
    return c->out_len + c->wbuf_len;
}

/* What the connection's buffers hold of memory: unsent replies, and the input buffer as
 * allocated (h2o frees it once all is read; until then it may be twice what it holds). */
static uint64_t conn_buffered(const conn *c)
{
    const h2o_buffer_t *in = c->sock->input;
    return conn_unsent(c) + (in->bytes ? in->capacity : 0);
}

/* Frees an empty buffer too large to keep (BUF_KEEP_MAX). */
static void buf_shrink(char **p, size_t *cap, bool wipe)
{
    if (*cap <= BUF_KEEP_MAX)
        return;
    if (wipe)
        secret_wipe(*p, *cap);
    *p = mfree(*p);
    *cap = 0;
}

static void conn_unqueue(conn *c)
{
    if (h2o_linklist_is_linked(&c->queue_link))
        h2o_linklist_unlink(&c->queue_link);
}

static void conn_queue(conn *c, h2o_linklist_t *queue)
{
    conn_unqueue(c);
    h2o_linklist_insert(queue, &c->queue_link);
}

/* Counts one call in c's turn; false (and c queued) when it must wait. */
static bool conn_take_call(conn *c)
{
    worker *w = c->w;
    switch (turns_take(&w->turns, &c->share, 1)) {
    case TURN_GO:
        return true;
    case TURN_AFTER_POLL:
        conn_queue(c, &w->ready_first);
        return false;
    case TURN_NEXT_ROUND:
    default:
        conn_queue(c, &w->ready);
        return false;
    }
}

/* ---- connection flow ---- */

static void on_write_complete(h2o_socket_t *sock, const char *err)
{
    conn *c = sock->data;
    c->writing = false;
    if (c->wipe_output)
        secret_wipe(c->wbuf, c->wbuf_len);
    c->wbuf_len = 0;
    buf_shrink(&c->wbuf, &c->wbuf_cap, false);
    if (err) {
        conn_close(c);
        return;
    }
    conn_process(c);
}

/* Hands pending replies to the socket, or closes the connection once nothing is left to
 * send and it is due to close. Returns false if c was closed (and may be freed). */
static bool conn_flush(conn *c)
{
    if (!c->sock)
        return false;
    if (c->writing)
        return true;
    if (c->out_len == 0) {
        bool idle = !c->pending_job && c->sock->input->size == 0;
        if (c->close_after_flush || (c->w->stopping && idle)) {
            conn_close(c);
            return false;
        }
        return true;
    }
    /* Swap the buffers: replies keep accumulating while this write is in flight. */
    char *p = c->wbuf;
    size_t cap = c->wbuf_cap;
    c->wbuf = c->out;
    c->wbuf_cap = c->out_cap;
    c->wbuf_len = c->out_len;
    c->out = p;
    c->out_cap = cap;
    c->out_len = 0;
    c->writing = true;
    h2o_iovec_t v = h2o_iovec_init(c->wbuf, c->wbuf_len);
    h2o_socket_write(c->sock, &v, 1, on_write_complete);
    return true;
}

static void on_read(h2o_socket_t *sock, const char *err);

/* Reads while the connection can take another call: not while a job is out, a close is
 * due, its buffers are full, it waits in a queue, or the loop drains. A connection that
 * may not read only because of buffers-max waits for the total to fall. */
static void conn_update_reading(conn *c)
{
    bool want = !c->pending_job && !c->close_after_flush && !c->eof && !c->w->stopping &&
                !h2o_linklist_is_linked(&c->queue_link) &&
                conn_buffered(c) < g_conf->connection_buffer_max;
    if (want && !buffers_may_read(c->held, READ_CHUNK)) {
        want = false;
        conn_queue(c, &c->w->waiting);
    }
    if (want && !c->reading)
        h2o_socket_read_start(c->sock, on_read);
    else if (!want && c->reading)
        h2o_socket_read_stop(c->sock);
    c->reading = want;
}

static void conn_process(conn *c)
{
    bool all_read = false;

    conn_unqueue(c);
    verify_batch_begin();
    while (c->sock && !c->pending_job && !c->close_after_flush &&
           conn_unsent(c) < g_conf->connection_buffer_max) {
        h2o_buffer_t *in = c->sock->input;
        size_t msg_len, consumed;
        int r = varlink_frame_next(in->bytes, in->size, &c->framing, &msg_len, &consumed);
        if (r == 0) {
            all_read = true;
            break;
        }
        if (r < 0) {
            call_ctx ctx = {.c = c};
            if (c->framing == VARLINK_FRAMING_UNKNOWN)
                c->framing = VARLINK_FRAMING_NUL;
            call_error(&ctx, "io.heare.Auth.MessageTooLarge", NULL);
            c->close_after_flush = true;
            secret_wipe(in->bytes, in->size);
            h2o_buffer_consume(&c->sock->input, in->size);
            break;
        }
        buffers_set(&c->held, conn_buffered(c));
        if (!buffers_may_grow(c->held)) {
            conn_queue(c, &c->w->waiting);
            break;
        }
        if (!conn_take_call(c))
            break;
        handle_message(c, in->bytes, msg_len);
        if (!c->sock)
            break;
        /* The message may have held a key. */
        secret_wipe(c->sock->input->bytes, consumed);
        h2o_buffer_consume(&c->sock->input, consumed);
        /* That message is whole: the next one's clock starts with its first byte. */
        if (h2o_timeout_is_linked(&c->message_entry))
            h2o_timeout_unlink(&c->message_entry);
    }
    verify_batch_end();
    if (!c->sock)
        return;
    /* Whatever is left after the peer's EOF is an incomplete message: nothing to answer. */
    if (c->eof && all_read && !c->pending_job)
        c->close_after_flush = true;
    if (c->out_len == 0)
        buf_shrink(&c->out, &c->out_cap, c->wipe_output);
    bool queued = h2o_linklist_is_linked(&c->queue_link);
    /* The idle clock runs while the connection waits for its client, not for a job or for
     * its turn. */
    if (!c->pending_job && !queued) {
        if (!h2o_timeout_is_linked(&c->idle_entry))
            h2o_timeout_link(c->w->loop, &c->w->idle_timeout, &c->idle_entry);
    } else if (h2o_timeout_is_linked(&c->idle_entry)) {
        h2o_timeout_unlink(&c->idle_entry);
    }
    if (!conn_flush(c))
        return;
    conn_update_reading(c);
    buffers_set(&c->held, conn_buffered(c));
    /* The message clock runs only while the daemon reads and waits for the rest of a
     * message: not while it holds complete calls back (a job out, replies not read, its
     * turn or buffers-max awaited), when the peer is not the one keeping the message
     * unfinished. It is not restarted by later bytes of the same message, which is what
     * keeps a client that drips them from holding the connection; the idle clock is, so
     * idle-timeout keeps its meaning between messages. */
    bool awaiting_rest = all_read && c->reading && c->sock->input->size > 0;
    if (!awaiting_rest) {
        if (h2o_timeout_is_linked(&c->message_entry))
            h2o_timeout_unlink(&c->message_entry);
    } else if (!h2o_timeout_is_linked(&c->message_entry)) {
        h2o_timeout_link(c->w->loop, &c->w->message_timeout, &c->message_entry);
    }
}

/* Reads at most READ_CHUNK of what the peer sent; whatever is left is read on the loop's
 * next iteration (the loop polls level-triggered). Returns false if c was closed. */
static bool conn_read(conn *c)
{
    h2o_iovec_t buf = h2o_buffer_reserve(&c->sock->input, READ_CHUNK);
    if (!buf.base) {
        conn_close(c);
        return false;
    }
    ssize_t n;
    do
        n = read(h2o_socket_get_fd(c->sock), buf.base, buf.len < READ_CHUNK ? buf.len : READ_CHUNK);
    while (n < 0 && errno == EINTR);
    if (n > 0) {
        c->sock->input->size += (size_t)n;
    } else if (n == 0) {
        c->eof = true;
        h2o_socket_read_stop(c->sock);
        c->reading = false;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
        conn_close(c);
        return false;
    }
    return true;
}

/* A readiness notice only (h2o_socket_dont_read): h2o reads nothing, so reports no error. */
static void on_read(h2o_socket_t *sock, const char *err)
{
    conn *c = sock->data;
    if (!conn_read(c))
        return;
    /* Activity: restart the idle clock. */
    if (h2o_timeout_is_linked(&c->idle_entry))
        h2o_timeout_unlink(&c->idle_entry);
    conn_process(c);
}

static void on_idle_timeout(h2o_timeout_entry_t *entry)
{
    conn *c = H2O_STRUCT_FROM_MEMBER(conn, idle_entry, entry);
    /* Only connections with nothing in progress sit on the idle clock. */
    conn_close(c);
}

static void on_message_timeout(h2o_timeout_entry_t *entry)
{
    conn *c = H2O_STRUCT_FROM_MEMBER(conn, message_entry, entry);
    /* The bytes are not logged: they may be part of a key. */
    log_event(LOG_NOTICE,
              &(log_fields){.event = "connection_timeout", .peer_uid = c->peer.uid,
                            .peer_pid = c->peer.pid},
              "connection closed: message not complete within %" PRId64
              " ms of its first byte (uid %u, pid %d)",
              g_conf->message_timeout_ms, (unsigned)c->peer.uid, (int)c->peer.pid);
    conn_close(c);
}

static void conn_new(worker *w, h2o_socket_t *sock, sock_kind kind, const struct ucred *cred,
                     bool uid_counted)
{
    conn *c = calloc(1, sizeof(*c));

    if (!c) {
        h2o_socket_close(sock);
        atomic_fetch_sub_explicit(&w->load, 1, memory_order_relaxed);
        if (uid_counted)
            uid_release(cred->uid);
        return;
    }
    c->w = w;
    c->sock = sock;
    c->kind = kind;
    c->peer = (peer_cred){.pid = cred->pid, .uid = cred->uid, .gid = cred->gid};
    c->uid_counted = uid_counted;
    c->admin = -1;
    c->idle_entry.cb = on_idle_timeout;
    c->message_entry.cb = on_message_timeout;
    sock->data = c;
    h2o_linklist_insert(&w->conns, &c->link);
    w->n_conns++;
    h2o_timeout_link(w->loop, &w->idle_timeout, &c->idle_entry);
    c->reading = true;
    h2o_socket_dont_read(sock, 1); /* conn_read reads, a chunk at a time */
    h2o_socket_read_start(sock, on_read);
}

/* Serves a new connection on w, the loop of this thread. */
static void serve(worker *w, h2o_socket_t *sock, sock_kind kind, const struct ucred *cred,
                  bool uid_counted)
{
    if (kind == SOCK_HTTP)
        http_accept(w->http, sock);
    else
        conn_new(w, sock, kind, cred, uid_counted);
}

/* The loop with the fewest connections, self on a tie; it is counted as having one more. */
static worker *choose_loop(worker *self)
{
    worker *best = self;
    size_t least = atomic_load_explicit(&self->load, memory_order_relaxed);
    for (size_t i = 0; i < g_conf->threads && least > 0; i++) {
        size_t n = atomic_load_explicit(&g_workers[i].load, memory_order_relaxed);
        if (n < least && atomic_load_explicit(&g_workers[i].serving, memory_order_acquire) &&
            !atomic_load_explicit(&g_workers[i].exited, memory_order_relaxed)) {
            best = &g_workers[i];
            least = n;
        }
    }
    atomic_fetch_add_explicit(&best->load, 1, memory_order_relaxed);
    return best;
}

/* The connections every loop holds, handoffs on their way included. */
static size_t conns_total(void)
{
    size_t n = 0;
    for (size_t i = 0; i < g_conf->threads; i++)
        n += atomic_load_explicit(&g_workers[i].load, memory_order_relaxed);
    return n;
}

/* Stops accepting on l for ACCEPT_PAUSE_MS: the listener stays readable while clients
 * wait, so without the pause the loop would spin on an accept that cannot succeed. */
static void listener_pause(listener *l)
{
    h2o_socket_read_stop(l->sock);
    if (!h2o_timeout_is_linked(&l->pause_entry))
        h2o_timeout_link(l->w->loop, &l->w->accept_pause, &l->pause_entry);
}

static void on_accept_pause_end(h2o_timeout_entry_t *entry)
{
    listener *l = H2O_STRUCT_FROM_MEMBER(listener, pause_entry, entry);
    if (l->sock)
        h2o_socket_read_start(l->sock, on_accept);
}

static void on_accept(h2o_socket_t *lsock, const char *err)
{
    listener *l = lsock->data;
    worker *w = l->w;
    if (err)
        return;
    size_t budget = g_conn_budget + (l->kind == SOCK_ADMIN ? FD_ADMIN_EXTRA : 0);
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        if (conns_total() >= budget) {
            if (limit_warn_due(&g_fds_warned_ms))
                log_warning("%zu connections: the most the descriptor limit leaves room for; "
                            "new connections wait until one closes", budget);
            listener_pause(l);
            return;
        }
        h2o_socket_t *sock = h2o_evloop_socket_accept(lsock);
        if (!sock) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                if (limit_warn_due(&g_fds_warned_ms))
                    log_warning("cannot accept a connection: %m; new connections wait");
                listener_pause(l);
            }
            break;
        }
        struct ucred cred = {.pid = 0};
        bool counted = false;
        if (l->kind != SOCK_HTTP) {
            socklen_t len = sizeof(cred);
            if (getsockopt(h2o_socket_get_fd(sock), SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
                h2o_socket_close(sock);
                continue;
            }
            if (l->kind == SOCK_VERIFY && cred.uid != 0 && cred.uid != g_self_uid) {
                if (!uid_acquire(cred.uid)) {
                    if (limit_warn_due(&g_uid_warned_ms))
                        log_warning("uid %u holds %u connections on the verify socket "
                                    "(max-connections-per-uid): a new one is closed",
                                    (unsigned)cred.uid, g_conf->max_connections_per_uid);
                    h2o_socket_close(sock);
                    continue;
                }
                counted = true;
            }
        }
        worker *to = choose_loop(w);
        if (atomic_load_explicit(&to->load, memory_order_relaxed) > MAX_CONNS_PER_WORKER ||
            w->stopping) {
            h2o_socket_close(sock);
            atomic_fetch_sub_explicit(&to->load, 1, memory_order_relaxed);
            if (counted)
                uid_release(cred.uid);
            continue;
        }
        if (to == w) {
            serve(w, sock, l->kind, &cred, counted);
            continue;
        }
        handoff *h = calloc(1, sizeof(*h));
        if (!h || h2o_socket_export(sock, &h->sock) < 0) {
            if (!h)
                h2o_socket_close(sock);
            free(h);
            atomic_fetch_sub_explicit(&to->load, 1, memory_order_relaxed);
            if (counted)
                uid_release(cred.uid);
            continue;
        }
        h->kind = l->kind;
        h->cred = cred;
        h->uid_counted = counted;
        h2o_multithread_send_message(&to->handoff_receiver, &h->super);
    }
}

/* Connections other loops accepted for this one; a stopping loop closes them. */
static void on_handoff(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    worker *w = H2O_STRUCT_FROM_MEMBER(worker, handoff_receiver, receiver);
    while (!h2o_linklist_is_empty(messages)) {
        handoff *h = H2O_STRUCT_FROM_MEMBER(handoff, super.link, messages->next);
        h2o_linklist_unlink(&h->super.link);
        if (w->stopping) {
            h2o_socket_dispose_export(&h->sock);
            atomic_fetch_sub_explicit(&w->load, 1, memory_order_relaxed);
            if (h->uid_counted)
                uid_release(h->cred.uid);
        } else
            serve(w, h2o_socket_import(w->loop, &h->sock), h->kind, &h->cred, h->uid_counted);
        free(h);
    }
}

/* ---- jobs ---- */

static void job_done_on_store_thread(job *j)
{
    pending *p = j->userdata;
    h2o_multithread_send_message(&p->w->jobs_receiver, &p->super);
}

int loop_submit(job *j, loop_job_done_fn done, void *userdata)
{
    pending *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->j = j;
    p->w = t_worker;
    p->done = done;
    p->userdata = userdata;
    j->done = job_done_on_store_thread;
    j->userdata = p;
    p->w->n_pending++;
    state_submit(j);
    return 0;
}

static void on_jobs_done(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    while (!h2o_linklist_is_empty(messages)) {
        pending *p = H2O_STRUCT_FROM_MEMBER(pending, super.link, messages->next);
        h2o_linklist_unlink(&p->super.link);
        p->w->n_pending--;
        p->done(p->j, p->userdata);
        job_free(p->j);
        free(p);
    }
}

/* A Varlink call's job came back: answer it and read the next call. */
static void conn_job_done(job *j, void *userdata)
{
    conn *c = userdata;
    c->pending_job = false;
    if (!c->sock) {
        /* The peer went away while the store worked: the write stands, the answer has no
         * one to go to. */
        conn_free(c);
        return;
    }
    call_ctx ctx = {.c = c, .oneway = c->pending_oneway};
    method_admin_job_done(&ctx, j);
    conn_process(c);
}

void call_submit(call_ctx *ctx, job *j)
{
    ctx->answered = true;
    if (loop_submit(j, conn_job_done, ctx->c) < 0) {
        job_free(j);
        call_error_oom(ctx);
        return;
    }
    /* The answer comes back on this loop, so it cannot arrive before this is set. */
    ctx->c->pending_job = true;
    ctx->c->pending_oneway = ctx->oneway;
}

/* ---- loops ---- */

static void close_idle_conns(worker *w)
{
    h2o_linklist_t *node = w->conns.next;
    while (node != &w->conns) {
        conn *c = H2O_STRUCT_FROM_MEMBER(conn, link, node);
        node = node->next;
        conn_update_reading(c);
        /* One waiting for its turn still has calls to answer: the pass serves them, and
         * closes it once idle. */
        if (!c->pending_job && !c->writing && c->out_len == 0 &&
            !h2o_linklist_is_linked(&c->queue_link))
            conn_close(c);
    }
}

static void on_stop(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    worker *w = H2O_STRUCT_FROM_MEMBER(worker, stop_receiver, receiver);
    while (!h2o_linklist_is_empty(messages))
        h2o_linklist_unlink(messages->next);
    if (w->stopping)
        return;
    w->stopping = true;
    w->stop_deadline = h2o_now(w->loop) + DRAIN_TIMEOUT_MS;
    for (size_t i = 0; i < w->n_listeners; i++) {
        if (h2o_timeout_is_linked(&w->listeners[i].pause_entry))
            h2o_timeout_unlink(&w->listeners[i].pause_entry);
        h2o_socket_read_stop(w->listeners[i].sock);
        h2o_socket_close(w->listeners[i].sock);
        w->listeners[i].sock = NULL;
    }
    close_idle_conns(w);
    http_loop_shutdown(w->http);
}

/* Closes the connections held back by buffers-max whose peer hung up: they are not read,
 * and without a write in flight nothing else would notice. */
static void close_hung_up(worker *w)
{
    h2o_linklist_t *node = w->waiting.next;
    while (node != &w->waiting) {
        conn *c = H2O_STRUCT_FROM_MEMBER(conn, queue_link, node);
        node = node->next;
        struct pollfd p = {.fd = h2o_socket_get_fd(c->sock), .events = POLLRDHUP};
        if (!c->writing && poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR)))
            conn_close(c);
    }
}

/* Socket work happens inside h2o_evloop_run, in callbacks, never between two runs: a
 * write that completes at once leaves its callback pending, and h2o runs pending callbacks
 * only before it polls again. So the queues are served from two timers the loop arms after
 * each iteration: one due at once while the ready queue holds connections, one due after
 * WAITING_CHECK_MS while connections wait for buffers-max. */

/* Serves the connections of queue in order while the turn's budget lasts; the ones not
 * reached keep their place. */
static void serve_queue(worker *w, h2o_linklist_t *queue)
{
    h2o_linklist_t list;
    h2o_linklist_init_anchor(&list);
    h2o_linklist_insert_list(&list, queue);
    while (!h2o_linklist_is_empty(&list) && !turns_over(&w->turns))
        conn_process(H2O_STRUCT_FROM_MEMBER(conn, queue_link, list.next));
    h2o_linklist_insert_list(queue->next, &list);
}

/* One pass: a turn of its own for the ready queue, the connections the last budget stopped
 * first. HTTP requests share the turn. */
static void on_pass(h2o_timeout_entry_t *entry)
{
    worker *w = H2O_STRUCT_FROM_MEMBER(worker, pass_entry, entry);
    turns_next(&w->turns);
    serve_queue(w, &w->ready_first);
    serve_queue(w, &w->ready);
    http_loop_run_ready(w->http);
    free_closed(w, true);
}

/* The connections held back by buffers-max are looked at again (those still over it wait
 * again), after the ones whose peer hung up are closed. */
static void on_waiting_check(h2o_timeout_entry_t *entry)
{
    worker *w = H2O_STRUCT_FROM_MEMBER(worker, waiting_entry, entry);
    uint64_t now = h2o_now(w->loop);
    bool hangups = now - w->hangup_checked_ms >= HANGUP_CHECK_MS;
    if (hangups) {
        w->hangup_checked_ms = now;
        close_hung_up(w);
    }
    h2o_linklist_t list;
    h2o_linklist_init_anchor(&list);
    h2o_linklist_insert_list(&list, &w->waiting);
    while (!h2o_linklist_is_empty(&list))
        conn_process(H2O_STRUCT_FROM_MEMBER(conn, queue_link, list.next));
    http_loop_run_waiting(w->http, hangups);
}

/* After each iteration of the loop. */
static void worker_arm_queues(worker *w)
{
    turns_next(&w->turns);
    buffers_note_conns(conns_total());
    if ((!h2o_linklist_is_empty(&w->ready_first) || !h2o_linklist_is_empty(&w->ready) ||
         http_loop_has_ready(w->http) || !h2o_linklist_is_empty(&w->freeing)) &&
        !h2o_timeout_is_linked(&w->pass_entry))
        h2o_timeout_link(w->loop, &w->pass_timeout, &w->pass_entry);
    if ((!h2o_linklist_is_empty(&w->waiting) || http_loop_has_waiting(w->http)) &&
        !h2o_timeout_is_linked(&w->waiting_entry))
        h2o_timeout_link(w->loop, &w->waiting_timeout, &w->waiting_entry);
}

/* A wake-up only makes the loop finish its iteration, and so report a quiescent state. */
static void on_wake(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *m =
            H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        h2o_linklist_unlink(&m->link);
        free(m);
    }
}

void server_wake_all(void)
{
    for (size_t i = 0; i < g_n_workers; i++) {
        if (atomic_load(&g_workers[i].exited))
            continue;
        h2o_multithread_message_t *m = calloc(1, sizeof(*m));
        if (m)
            h2o_multithread_send_message(&g_workers[i].wake_receiver, m);
    }
}

bool server_progressing(uint64_t max_ms, unsigned *ret_stuck)
{
    uint64_t now = (uint64_t)timeutil_monotonic_ms();
    for (size_t i = 0; i < g_n_workers; i++) {
        uint64_t beat = atomic_load_explicit(&g_workers[i].heartbeat_ms, memory_order_relaxed);
        if (now - beat > max_ms && !atomic_load(&g_workers[i].exited)) {
            *ret_stuck = g_workers[i].idx;
            return false;
        }
    }
    return true;
}

static void *worker_main(void *arg)
{
    worker *w = arg;

    char name[16];
    snprintf(name, sizeof(name), "heare-loop-%u", w->idx);
    pthread_setname_np(pthread_self(), name); /* top -H, and the watchdog test */
    t_worker = w;
    atomic_store(&w->heartbeat_ms, (uint64_t)timeutil_monotonic_ms());
    w->init_r = worker_init(w, g_lfds, g_n_lfds);
    if (w->init_r >= 0)
        atomic_store_explicit(&w->serving, true, memory_order_release);
    phase_count(&g_n_started);
    if (w->init_r < 0)
        return NULL;

    rcu_register_thread();
    log_buffer_thread(true);
    for (;;) {
        h2o_evloop_run(w->loop, LOOP_MAX_WAIT_MS);
        worker_arm_queues(w);
        /* The iteration's log lines go out together, in one write. */
        log_flush();
        rcu_quiescent_state();
        atomic_store_explicit(&w->heartbeat_ms, (uint64_t)timeutil_monotonic_ms(),
                              memory_order_relaxed);
        if (w->stopping) {
            size_t busy = w->n_conns + http_loop_conns(w->http);
            if (busy == 0 || (w->aborted && h2o_now(w->loop) >= w->stop_deadline))
                break;
            if (!w->aborted && h2o_now(w->loop) >= w->stop_deadline) {
                log_warning("worker %u: %zu connections still busy after %d ms, closing them",
                            w->idx, busy, DRAIN_TIMEOUT_MS);
                while (!h2o_linklist_is_empty(&w->conns))
                    conn_close(H2O_STRUCT_FROM_MEMBER(conn, link, w->conns.next));
                /* h2o closes its connections itself once their sockets fail. */
                http_loop_abort(w->http);
                w->aborted = true;
                w->stop_deadline = h2o_now(w->loop) + ABORT_GRACE_MS;
            }
        }
    }
    rcu_unregister_thread();
    log_buffer_thread(false);
    atomic_store(&w->exited, true);
    phase_count(&g_n_loops_done);

    /* Tear down only once the store thread is gone: until then it may still post here. */
    pthread_mutex_lock(&g_phase_lock);
    while (!g_teardown)
        pthread_cond_wait(&g_phase_cond, &g_phase_lock);
    pthread_mutex_unlock(&g_phase_lock);
    worker_teardown(w);
    return NULL;
}

static int worker_init(worker *w, const listen_fd *lfds, size_t n)
{
    w->loop = h2o_evloop_create();
    if (!w->loop)
        return -ENOMEM;
    w->queue = h2o_multithread_create_queue(w->loop);
    h2o_multithread_register_receiver(w->queue, &w->jobs_receiver, on_jobs_done);
    h2o_multithread_register_receiver(w->queue, &w->stop_receiver, on_stop);
    h2o_multithread_register_receiver(w->queue, &w->wake_receiver, on_wake);
    h2o_multithread_register_receiver(w->queue, &w->handoff_receiver, on_handoff);
    h2o_timeout_init(w->loop, &w->idle_timeout, (uint64_t)g_conf->idle_timeout_ms);
    h2o_timeout_init(w->loop, &w->message_timeout, (uint64_t)g_conf->message_timeout_ms);
    h2o_timeout_init(w->loop, &w->accept_pause, ACCEPT_PAUSE_MS);
    h2o_timeout_init(w->loop, &w->pass_timeout, 0);
    h2o_timeout_init(w->loop, &w->waiting_timeout, WAITING_CHECK_MS);
    w->pass_entry.cb = on_pass;
    w->waiting_entry.cb = on_waiting_check;
    h2o_linklist_init_anchor(&w->conns);
    h2o_linklist_init_anchor(&w->ready_first);
    h2o_linklist_init_anchor(&w->ready);
    h2o_linklist_init_anchor(&w->waiting);
    h2o_linklist_init_anchor(&w->freeing);
    if (metrics_thread_init() < 0)
        return -ENOMEM;
    w->listeners = calloc(n, sizeof(*w->listeners));
    if (!w->listeners)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (lfds[i].kind == SOCK_HTTP && !w->http) {
            w->http = http_loop_new(w->loop, &w->load, &w->turns);
            if (!w->http)
                return -ENOMEM;
        }
    for (size_t i = 0; i < n; i++) {
        /* Each loop gets its own descriptor for the shared listening socket, so closing
         * it on one loop leaves the others accepting. */
        int fd = fcntl(lfds[i].fd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
            return negative_errno();
        listener *l = &w->listeners[i];
        l->w = w;
        l->kind = lfds[i].kind;
        l->sock = h2o_evloop_socket_create(w->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
        l->sock->data = l;
        l->pause_entry.cb = on_accept_pause_end;
        w->n_listeners++;
        h2o_socket_read_start(l->sock, on_accept);
    }
    return 0;
}

int server_start(const conf *c, const listen_fd *lfds, size_t n)
{
    int r = simple_routes_init();
    if (r < 0)
        return r;
    g_conf = c;
    g_lfds = lfds;
    g_n_lfds = n;
    g_self_uid = geteuid();
    buffers_init(c->buffers_max);
    for (size_t i = 0; i < n; i++)
        if (lfds[i].kind == SOCK_HTTP)
            http_listener_setup(lfds[i].fd, c);
    /* Every connection is a descriptor; keep some back (FD_RESERVE) for the rest. */
    struct rlimit rl;
    uint64_t limit = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                         ? (uint64_t)rl.rlim_cur
                         : UINT64_C(1) << 20;
    uint64_t reserve = FD_RESERVE + (uint64_t)c->threads * (FD_RESERVE_PER_LOOP + n);
    g_conn_budget = (size_t)(limit > 2 * reserve ? limit - reserve : limit / 2);
    log_debug("up to %zu connections (descriptor limit %" PRIu64 ")", g_conn_budget, limit);
    g_workers = calloc(c->threads, sizeof(*g_workers));
    if (!g_workers)
        return -ENOMEM;
    for (size_t i = 0; i < c->threads; i++) {
        g_workers[i].idx = (unsigned)i;
        r = pthread_create(&g_workers[i].tid, NULL, worker_main, &g_workers[i]);
        if (r != 0)
            return -r;
        g_n_workers++;
    }
    phase_wait(&g_n_started, g_n_workers);
    for (size_t i = 0; i < g_n_workers; i++)
        if (g_workers[i].init_r < 0)
            return g_workers[i].init_r;
    return 0;
}

void server_stop(void)
{
    for (size_t i = 0; i < g_n_workers; i++)
        h2o_multithread_send_message(&g_workers[i].stop_receiver, &g_workers[i].stop_message);
}

bool server_wait(void)
{
    bool clean = true;
    phase_wait(&g_n_loops_done, g_n_workers);
    for (size_t i = 0; i < g_n_workers; i++)
        if (g_workers[i].n_pending > 0)
            clean = false;
    return clean;
}

/* On the worker's own thread, after its loop ended and the store thread stopped. */
static void worker_teardown(worker *w)
{
    /* Deliver what was posted after the loop's last turn (wake-ups, late job answers). */
    h2o_evloop_run(w->loop, 0);
    free_closed(w, false);
    if (w->n_pending > 0 || http_loop_conns(w->http) > 0 ||
        !h2o_linklist_is_empty(&w->jobs_receiver._messages) ||
        !h2o_linklist_is_empty(&w->wake_receiver._messages) ||
        !h2o_linklist_is_empty(&w->handoff_receiver._messages))
        return; /* an answer never came back: leave the loop to the process's exit */
    http_loop_free(w->http);
    h2o_multithread_unregister_receiver(w->queue, &w->jobs_receiver);
    h2o_multithread_unregister_receiver(w->queue, &w->stop_receiver);
    h2o_multithread_unregister_receiver(w->queue, &w->wake_receiver);
    h2o_multithread_unregister_receiver(w->queue, &w->handoff_receiver);
    h2o_multithread_destroy_queue(w->queue);
    h2o_timeout_dispose(w->loop, &w->idle_timeout);
    h2o_timeout_dispose(w->loop, &w->message_timeout);
    h2o_timeout_dispose(w->loop, &w->accept_pause);
    if (h2o_timeout_is_linked(&w->pass_entry))
        h2o_timeout_unlink(&w->pass_entry);
    if (h2o_timeout_is_linked(&w->waiting_entry))
        h2o_timeout_unlink(&w->waiting_entry);
    h2o_timeout_dispose(w->loop, &w->pass_timeout);
    h2o_timeout_dispose(w->loop, &w->waiting_timeout);
    free(w->listeners);
    h2o_evloop_destroy(w->loop);
}

void server_free(void)
{
    pthread_mutex_lock(&g_phase_lock);
    g_teardown = true;
    pthread_cond_broadcast(&g_phase_cond);
    pthread_mutex_unlock(&g_phase_lock);
    for (size_t i = 0; i < g_n_workers; i++)
        pthread_join(g_workers[i].tid, NULL);
    g_workers = mfree(g_workers);
    g_n_workers = 0;
    g_uids = mfree(g_uids);
    g_n_uids = g_cap_uids = 0;
}
