/* main: the heare-auth command line (SPEC §8): one table of commands, each run against the
 * daemon's Varlink sockets or, with --store, against the store itself; every failure becomes
 * one stderr line and an exit code from the errors table. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>

#include "conf.h"
#include "errors.h"
#include "heare-auth-internal.h"
#include "ids.h"
#include "json-util.h"
#include "keydoc.h"
#include "keyops.h"
#include "keystore.h"
#include "macro.h"
#include "output.h"
#include "secret.h"
#include "store.h"
#include "timeutil.h"
#include "varlink-client.h"
#include "varlink.h"

#define DEFAULT_ADMIN_SOCKET "/run/heare-auth/admin.sock"
#define DEFAULT_VERIFY_SOCKET "/run/heare-auth/verify.sock"
#define DEFAULT_TIMEOUT_MS 5000
/* A write waits for the store: the daemon's store thread retries a conflicting write up to
 * 25 times with backoff (about 5 s of waiting in all), each attempt a read and a write that
 * may take seconds on a slow S3 endpoint, behind the other writes queued before it. */
#define WRITE_TIMEOUT_MS 60000
#define REFRESH_TIMEOUT_MS 2000
#define TIMEOUT_MAX_MS (24 * 3600 * 1000)
/* One byte more than any key the daemon accepts, so an overlong key still gets its
 * MALFORMED answer without the CLI reading an unbounded line. */
#define VERIFY_KEY_MAX (IDS_PRESENTED_MAX + 1)
/* Default of RotateKey's grace_seconds (SPEC §7), for the human output only. */
#define DEFAULT_GRACE_SECONDS 86400

#define M_CREATE "io.heare.AuthAdmin.CreateKey"
#define M_LIST "io.heare.AuthAdmin.ListKeys"
#define M_GET "io.heare.AuthAdmin.GetKey"
#define M_UPDATE "io.heare.AuthAdmin.UpdateKey"
#define M_ROTATE "io.heare.AuthAdmin.RotateKey"
#define M_DELETE "io.heare.AuthAdmin.DeleteKey"
#define M_REFRESH "io.heare.AuthAdmin.Refresh"
#define M_VERIFY "io.heare.Auth.Verify"
#define M_HEALTH "io.heare.Auth.GetHealth"
#define M_METRICS "io.heare.AuthAdmin.GetMetrics"

#define E_KEY_NOT_FOUND "io.heare.AuthAdmin.KeyNotFound"
#define E_INVALID_PARAMETER "org.varlink.service.InvalidParameter"

enum {
    NEEDS_ADMIN = 1u << 0,   /* io.heare.AuthAdmin: the admin socket */
    VERIFY_SOCKET = 1u << 1, /* io.heare.Auth only: the verify socket will do */
    WRITES = 1u << 2,        /* changes the store: in --store mode, ask the daemon to refresh */
    DIRECT = 1u << 3,        /* runs on the store itself under --store */
};

enum {
    ARG_SOCKET = 0x100,
    ARG_STORE,
    ARG_JSON,
    ARG_NO_REFRESH,
    ARG_TIMEOUT,
    ARG_VERSION,
    ARG_NAME,
    ARG_METADATA,
    ARG_SCOPE,
    ARG_EXPIRES,
    ARG_NO_EXPIRY,
    ARG_RATE_LIMIT,
    ARG_NO_RATE_LIMIT,
    ARG_GRACE,
    ARG_YES,
    ARG_USER_AGENT,
    ARG_VERBOSE,
};

struct command;

typedef struct cli {
    /* global options */
    const char *socket;
    const char *store_url;
    bool json;
    bool no_refresh;
    int timeout_ms;
    bool timeout_set; /* --timeout was given */

    /* command options; json_t members are NULL until their flag is seen */
    const char *name;
    json_t *metadata;
    json_t *scopes;
    bool has_expires;
    char expires_at[TIMEUTIL_RFC3339_LEN + 1];
    bool no_expiry;
    json_t *rate_limit;
    bool no_rate_limit;
    bool has_grace;
    int64_t grace;
    bool yes;
    const char *user_agent;
    bool verbose;

    /* state */
    const struct command *cmd;
    const char *socket_path; /* the daemon socket this command talks to */
    bool direct;             /* working on the store, not the daemon */
    bool refresh_pending;    /* a direct write succeeded: ask the daemon to reload */
    int64_t now;
    varlink_client *client;
    store *store;
} cli;

typedef struct command {
    const char *name;
    int (*run)(cli *c, int argc, char **argv);
    unsigned flags;
    const struct option *options;
    const char *usage;
    const char *help;
} command;

/* ---- reporting ------------------------------------------------------------------------ */

static const char *errno_name(int err)
{
    const char *n = err < 0 ? strerrorname_np(-err) : NULL;
    return n ? n : "EIO";
}

/* The single place that reports a failure: one line on stderr and, with --json, the
 * {"error", "message"} document on stdout. Returns exit_code so callers can return it. */
_printf_(4, 0) static int vreport(const cli *c, int exit_code, const char *error_name,
                                  const char *fmt, va_list ap)
{
    _cleanup_free_ char *what = NULL, *line = NULL;

    if (vasprintf(&what, fmt, ap) < 0)
        what = NULL;
    if (!what || (c->cmd ? asprintf(&line, "heare-auth: %s: %s", c->cmd->name, what)
                         : asprintf(&line, "heare-auth: %s", what)) < 0) {
        line = NULL;
        fputs("heare-auth: out of memory\n", stderr);
        return exit_code;
    }

    fprintf(stderr, "%s\n", line);
    if (c->json) {
        _cleanup_json_ json_t *doc = json_pack("{s:s, s:s}", "error", error_name, "message", line);
        if (doc)
            output_json(stdout, doc);
    }
    return exit_code;
}

_printf_(4, 5) static int report(const cli *c, int exit_code, const char *error_name,
                                 const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vreport(c, exit_code, error_name, fmt, ap);
    va_end(ap);
    return r;
}

_printf_(2, 3) static int usage_error(const cli *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vreport(c, EXIT_USAGE, errno_name(-EINVAL), fmt, ap);
    va_end(ap);
    return r;
}

/* A failure on this side (connect, store, memory): exit code from the errors table. */
_printf_(3, 4) static int local_error(const cli *c, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vreport(c, errors_exit_code(err), errno_name(err), fmt, ap);
    va_end(ap);
    return r;
}

static int oom(const cli *c)
{
    return local_error(c, -ENOMEM, "out of memory");
}

/* Words for a Varlink error reply, never containing anything the user sent as a key.
 * Caller frees; NULL on OOM. */
static char *varlink_error_text(const char *name, const json_t *params)
{
    const char *s;
    char *t = NULL;
    int r;

#define PARAM(n) ((s = json_string_value(json_object_get(params, n))) ? s : "?")
    if (strcmp(name, E_KEY_NOT_FOUND) == 0)
        r = asprintf(&t, "key %s not found", PARAM("id"));
    else if (strcmp(name, E_INVALID_PARAMETER) == 0)
        r = asprintf(&t, "invalid parameter '%s'", PARAM("parameter"));
    else if (errors_from_varlink_name(name) == -EPERM)
        r = asprintf(&t, "permission denied by the daemon (not an admin user)");
    else if (strcmp(name, "io.heare.AuthAdmin.StoreUnavailable") == 0)
        r = asprintf(&t, "store unavailable: %s", PARAM("reason"));
    else if (strcmp(name, "io.heare.AuthAdmin.Conflict") == 0)
        r = asprintf(&t, "store changed concurrently, gave up: %s", PARAM("reason"));
    else if (strcmp(name, "io.heare.Auth.MessageTooLarge") == 0)
        r = asprintf(&t, "the daemon refused the request as too large");
    else if (strcmp(name, "io.heare.Auth.InvalidMessage") == 0)
        r = asprintf(&t, "the daemon refused the request: %s", PARAM("reason"));
    else if (strcmp(name, "org.varlink.service.MethodNotFound") == 0)
        r = asprintf(&t, "the daemon has no method %s", PARAM("method"));
    else if (strcmp(name, "org.varlink.service.InterfaceNotFound") == 0)
        r = asprintf(&t, "the daemon has no interface %s", PARAM("interface"));
    else if (json_object_size(params) > 0) {
        _cleanup_free_ char *p = output_json_compact(params);
        r = asprintf(&t, "the daemon answered %s %s", name, p ? p : "");
    } else
        r = asprintf(&t, "the daemon answered %s", name);
#undef PARAM
    return r < 0 ? NULL : t;
}

static int report_varlink_error(const cli *c, const char *name, const json_t *params)
{
    _cleanup_free_ char *text = varlink_error_text(name, params);
    return report(c, errors_exit_code(errors_from_varlink_name(name)), name, "%s",
                  text ? text : name);
}

/* A keyops failure in --store mode is reported as the same Varlink error the daemon would
 * send, so scripts see one error name whichever way the command ran. */
static int report_keyop_error(const cli *c, int err, const char *bad_param, const json_t *params)
{
    _cleanup_json_ json_t *p = NULL;

    if (err == -EINVAL && bad_param) {
        p = json_pack("{s:s}", "parameter", bad_param);
        return p ? report_varlink_error(c, E_INVALID_PARAMETER, p) : oom(c);
    }
    if (err == -ENOKEY) {
        const char *id = json_string_value(json_object_get(params, "id"));
        p = json_pack("{s:s}", "id", id ? id : "?");
        return p ? report_varlink_error(c, E_KEY_NOT_FOUND, p) : oom(c);
    }
    return local_error(c, err, "%s", errors_str(err));
}

/* ---- secrets -------------------------------------------------------------------------- */

/* jansson frees strings without wiping them; a secret or a presented key inside a JSON tree
 * is wiped in place before the tree goes. */
static void wipe_json_string(json_t *obj, const char *member)
{
    json_t *v = json_object_get(obj, member);
    if (json_is_string(v))
        secret_wipe((char *)json_string_value(v), json_string_length(v));
}

static json_t *drop_secret_reply(json_t *reply)
{
    wipe_json_string(reply, "secret");
    json_decref(reply);
    return NULL;
}

static void drop_secret_replyp(json_t **reply)
{
    drop_secret_reply(*reply);
}

/* ---- talking to the daemon ------------------------------------------------------------ */

static const char *admin_socket(const cli *c)
{
    const char *e = getenv("HEARE_AUTH_SOCKET");
    return c->socket ? c->socket : (e && *e ? e : DEFAULT_ADMIN_SOCKET);
}

static const char *verify_socket(const cli *c)
{
    const char *e = getenv("HEARE_AUTH_VERIFY_SOCKET");
    return c->socket ? c->socket : (e && *e ? e : DEFAULT_VERIFY_SOCKET);
}

static int ensure_connected(cli *c)
{
    if (c->client)
        return 0;
    int r = varlink_client_connect(c->socket_path, c->timeout_ms, &c->client);
    if (r < 0)
        return local_error(c, r, "cannot connect to %s: %s", c->socket_path, strerror(-r));
    return 0;
}

static int report_io(const cli *c, int err)
{
    /* The daemon applies a write it has received whether or not we are still waiting. */
    if (err == -ETIMEDOUT && (c->cmd->flags & WRITES))
        return local_error(c, err,
                           "no reply from %s within %d ms; the change may still be applied: "
                           "check with 'heare-auth list' before trying again",
                           c->socket_path, c->timeout_ms);
    if (err == -ETIMEDOUT)
        return local_error(c, err, "no reply from %s within %d ms", c->socket_path, c->timeout_ms);
    return local_error(c, err, "talking to %s failed: %s", c->socket_path, strerror(-err));
}

/* Calls method on the daemon. Returns 0 with *ret (the reply parameters), or an exit code
 * after reporting the failure (error replies included). */
static int call_daemon(cli *c, const char *method, const json_t *params, json_t **ret)
{
    _cleanup_json_ json_t *reply = NULL;
    _cleanup_free_ char *error = NULL;
    int r;

    r = ensure_connected(c);
    if (r != 0)
        return r;
    r = varlink_client_call(c->client, method, params, 0, &reply, &error, NULL);
    if (r < 0)
        return report_io(c, r);
    if (r > 0)
        return report_varlink_error(c, error, reply);
    *ret = TAKE_PTR(reply);
    return 0;
}

/* ListKeys with "more": one {"keys": [Key]} per reply, gathered into one {"keys": [...]}. */
static int call_daemon_list(cli *c, const json_t *params, json_t **ret)
{
    _cleanup_json_ json_t *all = json_array();
    bool continues = true;
    int r;

    if (!all)
        return oom(c);
    r = ensure_connected(c);
    if (r != 0)
        return r;

    for (bool first = true; continues; first = false) {
        _cleanup_json_ json_t *reply = NULL;
        _cleanup_free_ char *error = NULL;

        if (first)
            r = varlink_client_call(c->client, M_LIST, params, VARLINK_CALL_MORE, &reply, &error,
                                    &continues);
        else
            r = varlink_client_next(c->client, &reply, &error, &continues);
        if (r < 0)
            return report_io(c, r);
        if (r > 0)
            return report_varlink_error(c, error, reply);

        json_t *keys = json_object_get(reply, "keys");
        if (keys && !json_is_array(keys))
            return local_error(c, -EPROTO, "%s answered ListKeys without a keys array",
                               c->socket_path);
        if (keys && json_array_extend(all, keys) < 0)
            return oom(c);
    }

    json_t *doc = json_pack("{s:O}", "keys", all);
    if (!doc)
        return oom(c);
    *ret = doc;
    return 0;
}

/* After a --store write: the daemon would notice within its poll interval anyway, so a
 * failure here is only a warning. */
static void notify_refresh(cli *c)
{
    _cleanup_(varlink_client_freep) varlink_client *client = NULL;
    _cleanup_json_ json_t *reply = NULL;
    _cleanup_free_ char *error = NULL, *why = NULL;
    const char *path = admin_socket(c);
    int timeout = c->timeout_ms < REFRESH_TIMEOUT_MS ? c->timeout_ms : REFRESH_TIMEOUT_MS;
    int r;

    r = varlink_client_connect(path, timeout, &client);
    if (r >= 0)
        r = varlink_client_call(client, M_REFRESH, NULL, 0, &reply, &error, NULL);
    if (r == 0)
        return;
    if (r > 0)
        why = varlink_error_text(error, reply);
    fprintf(stderr,
            "warning: store updated, but could not ask the daemon at %s to refresh: %s "
            "(it picks the change up within its poll interval)\n",
            path,
            why     ? why
            : r > 0 ? error
                    : strerror(-r));
}

/* ---- working on the store directly (--store) ------------------------------------------ */

/* An s3:// store needs the daemon's s3-* settings (region, endpoint, addressing, SSE): they
 * come from where the daemon takes them, its configuration file and then the environment
 * (SPEC §10), so the CLI talks to the same endpoint as the daemon on this host. A config
 * file that exists but cannot be read is an error: guessing AWS instead of the configured
 * endpoint would be worse. */
static int direct_open(cli *c)
{
    _cleanup_free_ char *err = NULL;
    conf cf;
    int r;

    if (c->store)
        return 0;
    if (strncmp(c->store_url, "s3://", 5) != 0) {
        r = store_open(c->store_url, &c->store, &err);
        if (r < 0)
            return local_error(c, r, "%s", err ? err : strerror(-r));
        return 0;
    }

    r = conf_init(&cf);
    if (r < 0)
        return oom(c);
    r = conf_load_file(&cf, CONF_DEFAULT_PATH, false, &err);
    if (r >= 0)
        r = conf_load_env(&cf, &err);
    if (r < 0) {
        conf_done(&cf);
        return local_error(c, r, "%s", err ? err : strerror(-r));
    }
    store_options opts = {
        .s3_region = cf.s3_region,
        .s3_endpoint = cf.s3_endpoint,
        .s3_addressing = cf.s3_addressing,
        .s3_sse = cf.s3_sse,
    };
    r = store_open_with(c->store_url, &opts, &c->store, &err);
    conf_done(&cf);
    if (r < 0)
        return local_error(c, r, "%s", err ? err : strerror(-r));
    return 0;
}

/* Loads and parses the store document; a missing store is an empty document. Returns 0
 * with *ret_doc, or an exit code after reporting. */
static int direct_load(cli *c, json_t **ret_doc)
{
    _cleanup_free_ char *buf = NULL, *version = NULL, *err = NULL;
    _cleanup_json_ json_t *doc = NULL;
    size_t len = 0;
    int r;

    r = direct_open(c);
    if (r != 0)
        return r;
    r = store_load(c->store, NULL, &buf, &len, &version, &err);
    if (r < 0)
        return local_error(c, r, "%s", err ? err : strerror(-r));

    if (!buf) {
        doc = keydoc_new();
        if (!doc)
            return oom(c);
    } else {
        r = keydoc_parse(buf, len, &doc, NULL, &err);
        /* A version-1 file holds plaintext secrets. */
        secret_wipe(buf, len);
        if (r < 0)
            return local_error(c, r, "%s: document rejected: %s", c->store_url,
                               err ? err : errors_str(r));
    }
    *ret_doc = TAKE_PTR(doc);
    return 0;
}

typedef int (*keyop_fn)(json_t *doc, const json_t *params, int64_t now, json_t **ret_reply,
                        const char **reterr_param);

typedef struct mutation {
    keyop_fn fn;
    const json_t *params;
    int64_t now;
    json_t *reply;
    int err;
    const char *bad_param;
} mutation;

static int mutate(json_t *doc, void *userdata)
{
    mutation *m = userdata;
    json_t *reply = NULL;

    m->err = m->fn(doc, m->params, m->now, &reply, &m->bad_param);
    if (m->err < 0)
        return m->err;
    /* store_update may run us again after losing a race; only the last reply was written. */
    drop_secret_reply(m->reply);
    m->reply = reply;
    return 0;
}

static int direct_write(cli *c, keyop_fn fn, const json_t *params, json_t **ret)
{
    _cleanup_free_ char *err = NULL;
    mutation m = {.fn = fn, .params = params, .now = c->now};
    int r;

    r = direct_open(c);
    if (r != 0)
        return r;
    r = store_update(c->store, mutate, &m, NULL, NULL, &err);
    if (r < 0) {
        m.reply = drop_secret_reply(m.reply);
        if (m.err < 0 && r == m.err)
            return report_keyop_error(c, r, m.bad_param, params);
        return local_error(c, r, "%s", err ? err : errors_str(r));
    }
    if (!m.reply)
        return oom(c);
    c->refresh_pending = !c->no_refresh;
    *ret = m.reply;
    return 0;
}

static int direct_get_key(cli *c, const json_t *params, json_t **ret)
{
    _cleanup_json_ json_t *doc = NULL;
    const char *id = json_string_value(json_object_get(params, "id"));
    int r;

    r = direct_load(c, &doc);
    if (r != 0)
        return r;
    const json_t *key = id ? keydoc_find_key(doc, id, NULL) : NULL;
    if (!key)
        return report_keyop_error(c, -ENOKEY, NULL, params);
    json_t *reply = json_pack("{s:o}", "key", keyops_render_key(key, c->now));
    if (!reply)
        return oom(c);
    *ret = reply;
    return 0;
}

static int direct_list_keys(cli *c, const json_t *params, json_t **ret)
{
    _cleanup_json_ json_t *doc = NULL, *keys = json_array();
    const json_t *key;
    size_t i;
    int r;

    if (!keys)
        return oom(c);
    r = direct_load(c, &doc);
    if (r != 0)
        return r;
    json_array_foreach(json_object_get(doc, "keys"), i, key)
    {
        if (json_array_append_new(keys, keyops_render_key(key, c->now)) < 0)
            return oom(c);
    }
    json_t *reply = json_pack("{s:O}", "keys", keys);
    if (!reply)
        return oom(c);
    *ret = reply;
    return 0;
}

static int direct_verify(cli *c, const json_t *params, json_t **ret)
{
    _cleanup_(keystore_freep) keystore *ks = NULL;
    _cleanup_json_ json_t *doc = NULL;
    _cleanup_free_ char *err = NULL;
    const json_t *key = json_object_get(params, "key");
    const char *scope = json_string_value(json_object_get(params, "scope"));
    const keystore_key *k = NULL;
    int r;

    r = direct_load(c, &doc);
    if (r != 0)
        return r;
    r = keystore_new(doc, 0, &ks, &err);
    if (r < 0)
        return local_error(c, r, "%s: document rejected: %s", c->store_url,
                           err ? err : errors_str(r));

    verify_code code =
        keystore_verify(ks, json_string_value(key), json_string_length(key), scope, c->now, &k);
    json_t *reply =
        json_pack("{s:b, s:s}", "valid", code == VERIFY_VALID, "code", keystore_code_name(code));
    if (!reply)
        return oom(c);
    if (k) {
        /* The same members as the daemon's answer, from the same rendering. */
        _cleanup_json_ json_t *fields = keystore_key_verify_object(k);
        if (!fields || json_object_update(reply, fields) < 0) {
            json_decref(reply);
            return oom(c);
        }
    }
    *ret = reply;
    return 0;
}

/* Without a daemon there is no generation, cache or uptime: the direct health report is
 * {status "healthy", keys_loaded, store}, and "healthy" means the store could be read and
 * parsed (a failure exits 3 like any unreadable store). */
static int direct_health(cli *c, const json_t *params, json_t **ret)
{
    _cleanup_json_ json_t *doc = NULL;
    int r;

    r = direct_load(c, &doc);
    if (r != 0)
        return r;
    json_t *reply =
        json_pack("{s:s, s:I, s:s}", "status", "healthy", "keys_loaded",
                  (json_int_t)json_array_size(json_object_get(doc, "keys")), "store", c->store_url);
    if (!reply)
        return oom(c);
    *ret = reply;
    return 0;
}

static const struct {
    const char *method;
    keyop_fn write;
    int (*read)(cli *c, const json_t *params, json_t **ret);
} direct_methods[] = {
    {M_CREATE, keyops_create, NULL}, {M_UPDATE, keyops_update, NULL},
    {M_ROTATE, keyops_rotate, NULL}, {M_DELETE, keyops_delete, NULL},
    {M_GET, NULL, direct_get_key},   {M_LIST, NULL, direct_list_keys},
    {M_VERIFY, NULL, direct_verify}, {M_HEALTH, NULL, direct_health},
};

/* Runs one method, on the daemon or (--store) on the store, with the same parameters
 * either way so validation is shared. Returns 0 with *ret (the reply parameters), or an
 * exit code after reporting the failure. */
static int invoke(cli *c, const char *method, const json_t *params, json_t **ret)
{
    if (!c->direct)
        return strcmp(method, M_LIST) == 0 ? call_daemon_list(c, params, ret)
                                           : call_daemon(c, method, params, ret);

    for (size_t i = 0; i < ELEMENTSOF(direct_methods); i++) {
        if (strcmp(direct_methods[i].method, method) != 0)
            continue;
        if (direct_methods[i].write)
            return direct_write(c, direct_methods[i].write, params, ret);
        return direct_methods[i].read(c, params, ret);
    }
    return local_error(c, -EOPNOTSUPP, "%s cannot run on the store directly", method);
}

/* ---- argument helpers ----------------------------------------------------------------- */

/* Strict unsigned decimal: digits only, at most max. Returns 0 or -EINVAL. */
static int parse_uint(const char *s, size_t len, uint64_t max, uint64_t *ret)
{
    uint64_t v = 0;

    if (len == 0)
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (max - d) / 10)
            return -EINVAL;
        v = v * 10 + d;
    }
    *ret = v;
    return 0;
}

/* "N", "N/s", "N:BURST" or "N/s:BURST"; burst defaults to N. Range checks beyond syntax
 * are keyops' (the daemon's) to make. */
static int parse_rate_limit(const char *s, json_t **ret)
{
    uint64_t n, burst;
    size_t digits = strspn(s, "0123456789");
    const char *p = s + digits;

    if (parse_uint(s, digits, INT64_MAX, &n) < 0)
        return -EINVAL;
    if (strncmp(p, "/s", 2) == 0)
        p += 2;
    if (*p == ':') {
        p++;
        if (parse_uint(p, strlen(p), INT64_MAX, &burst) < 0)
            return -EINVAL;
    } else if (*p == '\0') {
        burst = n;
    } else {
        return -EINVAL;
    }

    json_t *rl = json_pack("{s:I, s:I}", "per_second", (json_int_t)n, "burst", (json_int_t)burst);
    if (!rl)
        return -ENOMEM;
    *ret = rl;
    return 0;
}

/* The grace period may be zero ("revoke now"), which a duration from now never is. */
static int parse_grace(const char *s, int64_t *ret)
{
    size_t zeros = strspn(s, "0");
    if (zeros > 0 && (s[zeros] == '\0' || (strchr("smhdw", s[zeros]) && s[zeros + 1] == '\0'))) {
        *ret = 0;
        return 0;
    }
    return timeutil_parse_duration(s, ret);
}

/* clang-format off */
#define GLOBAL_OPTIONS                                                                             \
    {"socket", required_argument, NULL, ARG_SOCKET},                                               \
    {"store", required_argument, NULL, ARG_STORE},                                                 \
    {"json", no_argument, NULL, ARG_JSON},                                                         \
    {"no-refresh", no_argument, NULL, ARG_NO_REFRESH},                                             \
    {"timeout", required_argument, NULL, ARG_TIMEOUT},                                             \
    {"help", no_argument, NULL, 'h'},                                                              \
    {"version", no_argument, NULL, ARG_VERSION},                                                   \
    {NULL, 0, NULL, 0}
/* clang-format on */

static const struct option options_global[] = {GLOBAL_OPTIONS};

static const struct option options_create[] = {
    {"name", required_argument, NULL, ARG_NAME},
    {"metadata", required_argument, NULL, ARG_METADATA},
    {"scope", required_argument, NULL, ARG_SCOPE},
    {"expires", required_argument, NULL, ARG_EXPIRES},
    {"rate-limit", required_argument, NULL, ARG_RATE_LIMIT},
    GLOBAL_OPTIONS,
};

static const struct option options_update[] = {
    {"name", required_argument, NULL, ARG_NAME},
    {"metadata", required_argument, NULL, ARG_METADATA},
    {"scope", required_argument, NULL, ARG_SCOPE},
    {"expires", required_argument, NULL, ARG_EXPIRES},
    {"no-expiry", no_argument, NULL, ARG_NO_EXPIRY},
    {"rate-limit", required_argument, NULL, ARG_RATE_LIMIT},
    {"no-rate-limit", no_argument, NULL, ARG_NO_RATE_LIMIT},
    GLOBAL_OPTIONS,
};

static const struct option options_rotate[] = {
    {"grace", required_argument, NULL, ARG_GRACE},
    GLOBAL_OPTIONS,
};

static const struct option options_delete[] = {
    {"yes", no_argument, NULL, ARG_YES},
    GLOBAL_OPTIONS,
};

static const struct option options_verify[] = {
    {"scope", required_argument, NULL, ARG_SCOPE},
    {"user-agent", required_argument, NULL, ARG_USER_AGENT},
    GLOBAL_OPTIONS,
};

static const struct option options_health[] = {
    {"verbose", no_argument, NULL, ARG_VERBOSE},
    GLOBAL_OPTIONS,
};

static const char synopsis[] =
    "heare-auth [--socket PATH] [--store URL] [--json] [--no-refresh] COMMAND [ARGS]\n"
    "  create --name NAME [--metadata K=V]... [--scope S]... [--expires WHEN] "
    "[--rate-limit N[/s][:BURST]]\n"
    "  list\n"
    "  show ID\n"
    "  update ID [--name NAME] [--metadata K=V]... [--scope S]... [--expires WHEN | "
    "--no-expiry] [--rate-limit ...|--no-rate-limit]\n"
    "  disable ID | enable ID\n"
    "  rotate ID [--grace DURATION]\n"
    "  delete ID [--yes]\n"
    "  refresh\n"
    "  verify [KEY | -]              (key from stdin when absent or '-')\n"
    "  health\n"
    "  call METHOD [JSON]             raw Varlink call, prints the reply\n";

static const char global_help[] =
    "\n"
    "Options (before or after the command):\n"
    "  --socket PATH   the daemon's socket; default $HEARE_AUTH_SOCKET, else\n"
    "                  " DEFAULT_ADMIN_SOCKET "; verify and health default to\n"
    "                  $HEARE_AUTH_VERIFY_SOCKET, else " DEFAULT_VERIFY_SOCKET "\n"
    "  --store URL     work on the store directly (default $HEARE_AUTH_STORE), e.g.\n"
    "                  file:///var/lib/heare-auth/keys.json; after a change, ask the\n"
    "                  daemon to refresh. For s3://BUCKET/OBJECT the s3-* settings come\n"
    "                  from " CONF_DEFAULT_PATH " and the environment\n"
    "                  (S3_REGION, S3_ENDPOINT, AWS_*), as for heare-authd\n"
    "  --json          print exactly one JSON document on stdout\n"
    "  --no-refresh    with --store: do not ask the daemon to refresh\n"
    "  --timeout MS    give up on the daemon after MS milliseconds (default 5000;\n"
    "                  60000 for the commands that change keys)\n"
    "  -h, --help      this help; 'heare-auth COMMAND --help' for one command\n"
    "  --version       print the version\n"
    "\n"
    "WHEN is an RFC 3339 time or a duration from now (90d, 12h, 30m, 3600s).\n"
    "Exit status: 0 success or key valid; 1 key invalid, key not found, or refused;\n"
    "2 usage error; 3 daemon or store unreachable.\n";

static void print_command_help(const command *cmd)
{
    printf("Usage: heare-auth [OPTIONS] %s\n\n%s", cmd->usage, cmd->help);
    printf("\nOptions: --socket PATH, --store URL, --json, --no-refresh, --timeout MS, --help\n"
           "(see 'heare-auth --help').\n");
}

/* Applies one option. Returns 0, -1 if the program should exit 0 now (help, version), or
 * an exit code > 0 after reporting a usage error. */
static int apply_option(cli *c, int opt, const char *arg)
{
    uint64_t u;
    int r;

    switch (opt) {
    case 'h':
        if (c->cmd)
            print_command_help(c->cmd);
        else
            printf("Usage: %s%s", synopsis, global_help);
        return -1;
    case ARG_VERSION:
        printf("heare-auth %s\n", HEARE_VERSION);
        return -1;
    case ARG_SOCKET:
        if (!*arg)
            return usage_error(c, "--socket needs a path");
        c->socket = arg;
        return 0;
    case ARG_STORE:
        if (!*arg)
            return usage_error(c, "--store needs a URL");
        c->store_url = arg;
        return 0;
    case ARG_JSON:
        c->json = true;
        return 0;
    case ARG_NO_REFRESH:
        c->no_refresh = true;
        return 0;
    case ARG_TIMEOUT:
        if (parse_uint(arg, strlen(arg), TIMEOUT_MAX_MS, &u) < 0 || u == 0)
            return usage_error(c, "invalid --timeout '%s': expected milliseconds, 1 to %d", arg,
                               TIMEOUT_MAX_MS);
        c->timeout_ms = (int)u;
        c->timeout_set = true;
        return 0;
    case ARG_NAME:
        c->name = arg;
        return 0;
    case ARG_METADATA: {
        const char *eq = strchr(arg, '=');
        if (!eq || eq == arg)
            return usage_error(c,
                               "invalid --metadata '%s': expected KEY=VALUE with a "
                               "non-empty KEY",
                               arg);
        if (!c->metadata && !(c->metadata = json_object()))
            return oom(c);
        _cleanup_free_ char *k = strndup(arg, (size_t)(eq - arg));
        json_t *v = json_string(eq + 1);
        if (!k || !v) {
            json_decref(v);
            return oom(c);
        }
        if (json_object_set_new(c->metadata, k, v) < 0)
            return usage_error(c, "invalid --metadata '%s': not valid UTF-8", arg);
        return 0;
    }
    case ARG_SCOPE: {
        if (!c->scopes && !(c->scopes = json_array()))
            return oom(c);
        json_t *v = json_string(arg);
        if (!v)
            return usage_error(c, "invalid --scope '%s': not valid UTF-8", arg);
        if (json_array_append_new(c->scopes, v) < 0)
            return oom(c);
        return 0;
    }
    case ARG_EXPIRES: {
        int64_t t;
        if (timeutil_parse_when(arg, c->now, &t) < 0 ||
            timeutil_format_rfc3339(t, c->expires_at) < 0)
            return usage_error(c,
                               "invalid --expires '%s': expected an RFC 3339 time or a "
                               "duration like 90d, 12h, 30m",
                               arg);
        c->has_expires = true;
        return 0;
    }
    case ARG_NO_EXPIRY:
        c->no_expiry = true;
        return 0;
    case ARG_RATE_LIMIT: {
        json_t *rl = NULL;
        r = parse_rate_limit(arg, &rl);
        if (r == -ENOMEM)
            return oom(c);
        if (r < 0)
            return usage_error(c, "invalid --rate-limit '%s': expected N, N/s or N/s:BURST", arg);
        json_decref(c->rate_limit);
        c->rate_limit = rl;
        return 0;
    }
    case ARG_NO_RATE_LIMIT:
        c->no_rate_limit = true;
        return 0;
    case ARG_GRACE:
        if (parse_grace(arg, &c->grace) < 0)
            return usage_error(c,
                               "invalid --grace '%s': expected a duration like 24h, "
                               "30m, 0",
                               arg);
        c->has_grace = true;
        return 0;
    case ARG_YES:
        c->yes = true;
        return 0;
    case ARG_USER_AGENT:
        c->user_agent = arg;
        return 0;
    case ARG_VERBOSE:
        c->verbose = true;
        return 0;
    }
    return usage_error(c, "unhandled option");
}

/* Runs getopt_long over argv with options. On success *ret_index is the first operand
 * (getopt moved all operands behind the options unless in_order). Returns as
 * apply_option does. */
static int parse_options(cli *c, int argc, char **argv, const struct option *options, bool in_order,
                         int *ret_index)
{
    int opt;

    opterr = 0;
    optind = 0; /* GNU: start over, also when argv changed */
    while ((opt = getopt_long(argc, argv, in_order ? "+:h" : ":h", options, NULL)) != -1) {
        const char *what = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
        int r;

        switch (opt) {
        case '?':
            if (c->cmd)
                return usage_error(c, "unknown option '%s' (see 'heare-auth %s --help')", what,
                                   c->cmd->name);
            return usage_error(c, "unknown option '%s' (see 'heare-auth --help')", what);
        case ':':
            return usage_error(c, "option '%s' needs a value", what);
        default:
            r = apply_option(c, opt, optarg);
            if (r != 0)
                return r;
        }
    }
    *ret_index = optind;
    return 0;
}

/* Checks the operand count: at least min, at most max. */
static int expect_operands(const cli *c, int argc, char **argv, int min, int max,
                           const char *missing)
{
    if (argc < min)
        return usage_error(c, "missing %s (see 'heare-auth %s --help')", missing, c->cmd->name);
    if (argc > max)
        return usage_error(c, "unexpected argument '%s'", argv[max]);
    return 0;
}

static int add_string(json_t *o, const char *name, const char *value)
{
    json_t *v = json_string(value);
    return v ? json_object_set_new(o, name, v) : -1;
}

/* Parameters shared by CreateKey and UpdateKey. */
static int add_key_fields(const cli *c, json_t *params)
{
    if (c->name && add_string(params, "name", c->name) < 0)
        return -ENOMEM;
    if (c->metadata && json_object_set(params, "metadata", c->metadata) < 0)
        return -ENOMEM;
    if (c->scopes && json_object_set(params, "scopes", c->scopes) < 0)
        return -ENOMEM;
    if (c->has_expires && add_string(params, "expires_at", c->expires_at) < 0)
        return -ENOMEM;
    if (c->rate_limit && json_object_set(params, "rate_limit", c->rate_limit) < 0)
        return -ENOMEM;
    return 0;
}

static json_t *params_with_id(const char *id)
{
    json_t *p = json_object();
    if (p && add_string(p, "id", id) < 0)
        p = (json_decref(p), NULL);
    return p;
}

/* ---- commands ------------------------------------------------------------------------- */

static int cmd_create(cli *c, int argc, char **argv)
{
    _cleanup_json_ json_t *params = json_object();
    _cleanup_(drop_secret_replyp) json_t *reply = NULL;
    int r;

    r = expect_operands(c, argc, argv, 0, 0, "");
    if (r != 0)
        return r;
    if (!c->name)
        return usage_error(c, "--name is required");
    if (!params || add_key_fields(c, params) < 0)
        return oom(c);

    r = invoke(c, M_CREATE, params, &reply);
    if (r != 0)
        return r;
    if (c->json)
        output_json(stdout, reply);
    else
        output_created(stdout, json_object_get(reply, "key"),
                       json_string_value(json_object_get(reply, "secret")));
    return 0;
}

static int cmd_list(cli *c, int argc, char **argv)
{
    _cleanup_json_ json_t *params = json_object(), *reply = NULL;
    int r;

    r = expect_operands(c, argc, argv, 0, 0, "");
    if (r != 0)
        return r;
    if (!params)
        return oom(c);
    r = invoke(c, M_LIST, params, &reply);
    if (r != 0)
        return r;
    if (c->json)
        output_json(stdout, reply);
    else if (output_key_table(stdout, json_object_get(reply, "keys"), c->now) < 0)
        return oom(c);
    return 0;
}

static int cmd_show(cli *c, int argc, char **argv)
{
    _cleanup_json_ json_t *params = NULL, *reply = NULL;
    int r;

    r = expect_operands(c, argc, argv, 1, 1, "ID");
    if (r != 0)
        return r;
    params = params_with_id(argv[0]);
    if (!params)
        return oom(c);
    r = invoke(c, M_GET, params, &reply);
    if (r != 0)
        return r;
    if (c->json)
        output_json(stdout, reply);
    else
        output_key_block(stdout, json_object_get(reply, "key"), c->now);
    return 0;
}

static int cmd_update(cli *c, int argc, char **argv)
{
    _cleanup_json_ json_t *params = NULL, *reply = NULL;
    int r;

    r = expect_operands(c, argc, argv, 1, 1, "ID");
    if (r != 0)
        return r;
    if (c->has_expires && c->no_expiry)
        return usage_error(c, "--expires and --no-expiry exclude each other");
    if (c->rate_limit && c->no_rate_limit)
        return usage_error(c, "--rate-limit and --no-rate-limit exclude each other");
    if (!c->name && !c->metadata && !c->scopes && !c->has_expires && !c->no_expiry &&
        !c->rate_limit && !c->no_rate_limit)
        return usage_error(c, "nothing to change (see 'heare-auth update --help')");

    params = params_with_id(argv[0]);
    if (!params || add_key_fields(c, params) < 0 ||
        (c->no_expiry && json_object_set_new(params, "clear_expiry", json_true()) < 0) ||
        (c->no_rate_limit && json_object_set_new(params, "clear_rate_limit", json_true()) < 0))
        return oom(c);

    r = invoke(c, M_UPDATE, params, &reply);
    if (r != 0)
        return r;
    if (c->json) {
        output_json(stdout, reply);
    } else {
        fputs("✓ Updated successfully.\n", stdout);
        output_key_block(stdout, json_object_get(reply, "key"), c->now);
    }
    return 0;
}

static int set_disabled(cli *c, int argc, char **argv, bool disabled)
{
    _cleanup_json_ json_t *params = NULL, *reply = NULL;
    int r;

    r = expect_operands(c, argc, argv, 1, 1, "ID");
    if (r != 0)
        return r;
    params = params_with_id(argv[0]);
    if (!params || json_object_set_new(params, "disabled", json_boolean(disabled)) < 0)
        return oom(c);
    r = invoke(c, M_UPDATE, params, &reply);
    if (r != 0)
        return r;
    if (c->json) {
        output_json(stdout, reply);
    } else {
        fputs(disabled ? "✓ Disabled " : "✓ Enabled ", stdout);
        output_text(stdout, argv[0]);
        fputs(".\n", stdout);
    }
    return 0;
}

static int cmd_disable(cli *c, int argc, char **argv)
{
    return set_disabled(c, argc, argv, true);
}

static int cmd_enable(cli *c, int argc, char **argv)
{
    return set_disabled(c, argc, argv, false);
}

static int cmd_rotate(cli *c, int argc, char **argv)
{
    _cleanup_json_ json_t *params = NULL;
    _cleanup_(drop_secret_replyp) json_t *reply = NULL;
    char when[TIMEUTIL_RFC3339_LEN + 1];
    int64_t grace = c->has_grace ? c->grace : DEFAULT_GRACE_SECONDS;
    int r;

    r = expect_operands(c, argc, argv, 1, 1, "ID");
    if (r != 0)
        return r;
    if (grace > INT64_MAX - c->now || timeutil_format_rfc3339(c->now + grace, when) < 0)
        return usage_error(c, "--grace is too long");
    params = params_with_id(argv[0]);
    if (!params ||
        (c->has_grace && json_object_set_new(params, "grace_seconds", json_integer(c->grace)) < 0))
        return oom(c);

    r = invoke(c, M_ROTATE, params, &reply);
    if (r != 0)
        return r;
    if (c->json)
        output_json(stdout, reply);
    else
        output_rotated(stdout, json_object_get(reply, "key"),
                       json_string_value(json_object_get(reply, "secret")),
                       grace > 0 ? when : NULL);
    return 0;
}

/* Asks on the terminal. Returns 0 to go ahead, or an exit code after reporting. */
static int confirm_delete(cli *c, const char *id)
{
    _cleanup_json_ json_t *params = params_with_id(id), *reply = NULL;
    char line[64];
    int r;

    if (!params)
        return oom(c);
    r = invoke(c, M_GET, params, &reply);
    if (r != 0)
        return r;

    fputs("Delete key ", stderr);
    output_text(stderr, id);
    fputs(" (", stderr);
    output_text(stderr, json_string_value(json_object_get(json_object_get(reply, "key"), "name")));
    fputs(")? This cannot be undone. [y/N] ", stderr);
    fflush(stderr);

    if (fgets(line, sizeof(line), stdin)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (strcasecmp(line, "y") == 0 || strcasecmp(line, "yes") == 0)
            return 0;
    } else {
        fputc('\n', stderr);
    }
    fputs("Aborted.\n", stderr);
    if (c->json) {
        _cleanup_json_ json_t *doc =
            json_pack("{s:s, s:s}", "error", errno_name(-ECANCELED), "message", "Aborted.");
        if (doc)
            output_json(stdout, doc);
    }
    return EXIT_REFUSED;
}

static int cmd_delete(cli *c, int argc, char **argv)
{
    _cleanup_json_ json_t *params = NULL, *reply = NULL;
    int r;

    r = expect_operands(c, argc, argv, 1, 1, "ID");
    if (r != 0)
        return r;
    if (!c->yes) {
        if (!isatty(STDIN_FILENO))
            return usage_error(c, "refusing to delete without confirmation: pass --yes");
        r = confirm_delete(c, argv[0]);
        if (r != 0)
            return r;
    }

    params = params_with_id(argv[0]);
    if (!params)
        return oom(c);
    r = invoke(c, M_DELETE, params, &reply);
    if (r != 0)
        return r;
    if (c->json) {
        _cleanup_json_ json_t *doc = json_pack("{s:s, s:b}", "id", argv[0], "deleted", 1);
        if (!doc)
            return oom(c);
        output_json(stdout, doc);
    } else {
        fputs("✓ Deleted successfully.\n", stdout);
    }
    return 0;
}

static int cmd_refresh(cli *c, int argc, char **argv)
{
    _cleanup_json_ json_t *reply = NULL;
    int r;

    r = expect_operands(c, argc, argv, 0, 0, "");
    if (r != 0)
        return r;
    r = invoke(c, M_REFRESH, NULL, &reply);
    if (r != 0)
        return r;
    if (c->json)
        output_json(stdout, reply);
    else
        printf("✓ Refresh successful - loaded %" JSON_INTEGER_FORMAT " keys\n",
               json_integer_value(json_object_get(reply, "keys_loaded")));
    return 0;
}

typedef struct key_buf {
    char buf[VERIFY_KEY_MAX + 1];
    size_t len;
} key_buf;

static void key_buf_wipe(key_buf *k)
{
    secret_wipe(k, sizeof(*k));
}

/* One line of at most VERIFY_KEY_MAX bytes, read byte by byte so nothing of the key sits in
 * a stdio buffer and nothing past the line is consumed. */
static int read_key_line(int fd, key_buf *k)
{
    bool newline = false;

    k->len = 0;
    while (k->len < VERIFY_KEY_MAX) {
        char ch;
        ssize_t n = read(fd, &ch, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return negative_errno();
        if (n == 0)
            break;
        if (ch == '\n') {
            newline = true;
            break;
        }
        k->buf[k->len++] = ch;
    }
    if (newline && k->len > 0 && k->buf[k->len - 1] == '\r')
        k->len--;
    k->buf[k->len] = '\0';
    return 0;
}

/* Verify on the daemon through the client library, the code services link. Returns 0 with
 * *ret (the reply's parameters as the daemon sent them), or an exit code after reporting,
 * with the messages of call_daemon. */
static int verify_daemon(cli *c, const key_buf *key, json_t **ret)
{
    _cleanup_(heare_auth_closep) heare_auth *h = NULL;
    heare_auth_result res;
    heare_auth_request req = {
        .key = key->buf,
        .scope = json_string_value(json_array_get(c->scopes, 0)),
        .user_agent = c->user_agent,
    };
    int r;

    r = heare_auth_open(&h, c->socket_path, c->timeout_ms);
    if (r >= 0)
        r = heare_auth_verify_request(h, &req, &res);
    if (r < 0 && heare_auth__error_name(h)) {
        _cleanup_json_ json_t *params = heare_auth__reply(h);
        return report_varlink_error(c, heare_auth__error_name(h), params);
    }
    /* The library connects within the call: these can only come from connecting. */
    if (r == -ENOENT || r == -ECONNREFUSED || r == -EACCES || r == -ENAMETOOLONG)
        return local_error(c, r, "cannot connect to %s: %s", c->socket_path, strerror(-r));
    if (r < 0)
        return report_io(c, r);
    *ret = heare_auth__reply(h);
    if (!*ret)
        return local_error(c, -EPROTO, "%s sent a reply that cannot be read", c->socket_path);
    return 0;
}

static int cmd_verify(cli *c, int argc, char **argv)
{
    _cleanup_(key_buf_wipe) key_buf key = {};
    _cleanup_json_ json_t *params = json_object(), *reply = NULL;
    int r;

    /* Not expect_operands: its message would echo an extra argument, which may be a key. */
    if (argc > 1)
        return usage_error(c, "takes at most one KEY");
    if (json_array_size(c->scopes) > 1)
        return usage_error(c, "--scope may be given once");
    if (!params)
        return oom(c);

    if (argc == 0 || strcmp(argv[0], "-") == 0) {
        r = read_key_line(STDIN_FILENO, &key);
        if (r < 0)
            return local_error(c, r, "cannot read the key from standard input: %s", strerror(-r));
    } else {
        size_t n = strlen(argv[0]);
        key.len = n < VERIFY_KEY_MAX ? n : VERIFY_KEY_MAX;
        memcpy(key.buf, argv[0], key.len);
        /* Keep the key out of /proc/PID/cmdline from here on. */
        secret_wipe(argv[0], n);
    }
    if (key.len == 0)
        return usage_error(c, "no key given");

    json_t *k = json_stringn(key.buf, key.len);
    if (!k) {
        /* Not UTF-8, so not printable ASCII: MALFORMED, as the daemon would answer. */
        reply = json_pack("{s:b, s:s}", "valid", 0, "code", keystore_code_name(VERIFY_MALFORMED));
        if (!reply)
            return oom(c);
    } else if (!c->direct && !memchr(key.buf, '\0', key.len)) {
        /* The library takes the key as a C string; one holding a NUL goes the way below,
         * so the daemon still answers (MALFORMED) and counts it. */
        secret_wipe((char *)json_string_value(k), json_string_length(k));
        json_decref(k);
        r = verify_daemon(c, &key, &reply);
        if (r != 0)
            return r;
    } else {
        if (json_object_set_new(params, "key", k) < 0 ||
            (c->scopes && json_object_set(params, "scope", json_array_get(c->scopes, 0)) < 0) ||
            (c->user_agent && add_string(params, "user_agent", c->user_agent) < 0)) {
            wipe_json_string(params, "key");
            return oom(c);
        }
        r = invoke(c, M_VERIFY, params, &reply);
        wipe_json_string(params, "key");
        if (r != 0)
            return r;
    }

    bool valid = json_is_true(json_object_get(reply, "valid"));
    if (c->json) {
        output_json(stdout, reply);
    } else if (valid) {
        fputs("✓ Valid key: ", stdout);
        output_text(stdout, json_string_value(json_object_get(reply, "key_id")));
        fputs(" (", stdout);
        output_text(stdout, json_string_value(json_object_get(reply, "name")));
        fputs(")\n", stdout);
    } else {
        const char *id = json_string_value(json_object_get(reply, "key_id"));
        const char *code = json_string_value(json_object_get(reply, "code"));
        fputs("✗ Invalid key: ", stdout);
        output_text(stdout, code ? code : "?");
        if (id) {
            fputs(" (key ", stdout);
            output_text(stdout, id);
            fputc(')', stdout);
        }
        fputc('\n', stdout);
    }
    return valid ? EXIT_OK : EXIT_REFUSED;
}

static int cmd_health(cli *c, int argc, char **argv)
{
    _cleanup_json_ json_t *reply = NULL;
    int r;

    r = expect_operands(c, argc, argv, 0, 0, "");
    if (r != 0)
        return r;
    if (c->verbose && c->direct)
        return usage_error(c, "--verbose asks the daemon for its metrics: not with --store");
    r = invoke(c, M_HEALTH, NULL, &reply);
    if (r != 0)
        return r;
    if (c->verbose) {
        /* The metrics are the admin interface's: ask on the admin socket. */
        _cleanup_json_ json_t *metrics = NULL;
        varlink_client_free(c->client);
        c->client = NULL;
        c->socket_path = admin_socket(c);
        r = invoke(c, M_METRICS, NULL, &metrics);
        if (r != 0)
            return r;
        if (json_object_set(reply, "metrics", json_object_get(metrics, "metrics")) < 0)
            return oom(c);
    }
    if (c->json)
        output_json(stdout, reply);
    else
        output_health(stdout, reply);

    const char *status = json_string_value(json_object_get(reply, "status"));
    return status && strcmp(status, "unhealthy") == 0 ? EXIT_REFUSED : EXIT_OK;
}

static int cmd_call(cli *c, int argc, char **argv)
{
    _cleanup_json_ json_t *params = NULL, *reply = NULL;
    _cleanup_free_ char *error = NULL;
    json_error_t jerr;
    int r;

    r = expect_operands(c, argc, argv, 1, 2, "METHOD");
    if (r != 0)
        return r;
    if (!*argv[0])
        return usage_error(c, "empty METHOD");
    if (argc > 1) {
        params = json_loads(argv[1], JSON_REJECT_DUPLICATES, &jerr);
        /* Only the position: jansson's text quotes the input, which may hold a key. */
        if (!params)
            return usage_error(c, "invalid JSON parameters (line %d, column %d)", jerr.line,
                               jerr.column);
        if (!json_is_object(params))
            return usage_error(c, "invalid JSON parameters: not an object");
    }

    r = ensure_connected(c);
    if (r != 0)
        return r;
    r = varlink_client_call(c->client, argv[0], params, 0, &reply, &error, NULL);
    wipe_json_string(params, "key");
    if (r < 0)
        return report_io(c, r);
    if (r == 0) {
        output_json(stdout, reply);
        return 0;
    }

    /* The error reply is the one document on stdout, --json or not. */
    _cleanup_json_ json_t *doc = json_pack("{s:s, s:O}", "error", error, "parameters", reply);
    _cleanup_free_ char *text = varlink_error_text(error, reply);
    if (!doc)
        return oom(c);
    output_json(stdout, doc);
    fprintf(stderr, "heare-auth: call: %s\n", text ? text : error);
    return errors_exit_code(errors_from_varlink_name(error));
}

static const command commands[] = {
    {"create", cmd_create, NEEDS_ADMIN | WRITES | DIRECT, options_create,
     "create --name NAME [--metadata K=V]... [--scope S]... [--expires WHEN] "
     "[--rate-limit N[/s][:BURST]]",
     "Creates a key and prints its secret, once.\n"
     "  --name NAME          the key's name (required)\n"
     "  --metadata K=V       a metadata entry (string value); repeatable\n"
     "  --scope S            a scope the key grants ('a.b.*' covers a.b.anything); repeatable\n"
     "  --expires WHEN       RFC 3339 time or a duration from now (90d, 12h, 30m, 3600s)\n"
     "  --rate-limit N[/s][:BURST]  N verifications per second, bursts of BURST (default N)\n"},
    {"list", cmd_list, NEEDS_ADMIN | DIRECT, options_global, "list",
     "Lists every key: ID, NAME, CREATED, EXPIRES, STATUS.\n"},
    {"show", cmd_show, NEEDS_ADMIN | DIRECT, options_global, "show ID",
     "Shows one key (never its secrets).\n"},
    {"update", cmd_update, NEEDS_ADMIN | WRITES | DIRECT, options_update,
     "update ID [--name NAME] [--metadata K=V]... [--scope S]... [--expires WHEN | --no-expiry] "
     "[--rate-limit ...|--no-rate-limit]",
     "Changes a key. --metadata flags replace all metadata, --scope flags all scopes.\n"
     "  --no-expiry          the key never expires\n"
     "  --no-rate-limit      remove the key's rate limit\n"},
    {"disable", cmd_disable, NEEDS_ADMIN | WRITES | DIRECT, options_global, "disable ID",
     "Disables a key: it verifies as DISABLED until enabled again.\n"},
    {"enable", cmd_enable, NEEDS_ADMIN | WRITES | DIRECT, options_global, "enable ID",
     "Enables a disabled key.\n"},
    {"rotate", cmd_rotate, NEEDS_ADMIN | WRITES | DIRECT, options_rotate,
     "rotate ID [--grace DURATION]",
     "Adds a new secret to the key and prints it, once. The old secrets keep working for\n"
     "the grace period (default 24h; 0 revokes them now).\n"},
    {"delete", cmd_delete, NEEDS_ADMIN | WRITES | DIRECT, options_delete, "delete ID [--yes]",
     "Deletes a key and all its secrets. Asks on a terminal unless --yes; without a\n"
     "terminal, --yes is required.\n"},
    {"refresh", cmd_refresh, NEEDS_ADMIN, options_global, "refresh",
     "Makes the daemon re-read the store now (also with --store: it asks the daemon).\n"},
    {"verify", cmd_verify, VERIFY_SOCKET | DIRECT, options_verify,
     "verify [KEY | -] [--scope S] [--user-agent UA]",
     "Verifies a key; reads one line from stdin when KEY is absent or '-'.\n"
     "Exit status 0 if valid, 1 if not, 3 if the daemon cannot be reached.\n"
     "Uses the verify socket unless --socket is given; with --store, verifies locally\n"
     "(no rate limits).\n"},
    {"health", cmd_health, VERIFY_SOCKET | DIRECT, options_health, "health [--verbose]",
     "Prints the daemon's health; exit status 1 if unhealthy. Uses the verify socket\n"
     "unless --socket is given. With --store, reads the store instead and reports only\n"
     "status (healthy if the store reads and parses), keys loaded and store.\n"
     "--verbose also prints the daemon's metrics (the samples of GET /metrics), asked\n"
     "for on the admin socket (io.heare.AuthAdmin.GetMetrics).\n"},
    {"call", cmd_call, NEEDS_ADMIN, options_global, "call METHOD [JSON]",
     "Sends one raw Varlink call on the admin socket and prints the reply parameters.\n"
     "JSON, if given, must be an object. An error reply prints {\"error\", \"parameters\"}.\n"},
};

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < ELEMENTSOF(commands); i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

/* So that even a usage error found before the option is parsed comes as JSON. */
static bool wants_json(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--json") == 0)
            return true;
    return false;
}

static int run(cli *c, int argc, char **argv)
{
    int r, first;

    c->json = wants_json(argc, argv);
    c->timeout_ms = DEFAULT_TIMEOUT_MS;
    c->now = timeutil_now();

    r = parse_options(c, argc, argv, options_global, true, &first);
    if (r != 0)
        return r < 0 ? EXIT_OK : r;
    if (first >= argc)
        return usage_error(c, "missing command (see 'heare-auth --help')");

    c->cmd = find_command(argv[first]);
    if (!c->cmd)
        return usage_error(c, "unknown command '%s' (see 'heare-auth --help')", argv[first]);

    /* The command's own pass sees argv from the command name on, as its argv[0]. */
    int cargc = argc - first, operands;
    char **cargv = argv + first;
    r = parse_options(c, cargc, cargv, c->cmd->options, false, &operands);
    if (r != 0)
        return r < 0 ? EXIT_OK : r;

    if (!c->store_url) {
        const char *e = getenv("HEARE_AUTH_STORE");
        if (e && *e)
            c->store_url = e;
    }
    c->direct = c->store_url && (c->cmd->flags & DIRECT);
    if (!c->timeout_set && (c->cmd->flags & WRITES))
        c->timeout_ms = WRITE_TIMEOUT_MS;
    c->socket_path = (c->cmd->flags & NEEDS_ADMIN) ? admin_socket(c) : verify_socket(c);

    r = c->cmd->run(c, cargc - operands, cargv + operands);
    if (r == 0 && c->refresh_pending) {
        /* Let the output come first; the warning, if any, follows it. */
        fflush(stdout);
        notify_refresh(c);
    }
    return r;
}

int main(int argc, char **argv)
{
    cli c = {};
    int r = run(&c, argc, argv);

    varlink_client_free(c.client);
    store_free(c.store);
    json_decref(c.metadata);
    json_decref(c.scopes);
    json_decref(c.rate_limit);

    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "heare-auth: cannot write to standard output: %s\n", strerror(errno));
        if (r == 0)
            r = EXIT_REFUSED;
    }
    return r;
}
