/* method-auth: io.heare.Auth, served on every socket. Verify is the hot path: no lock, no
 * allocation for the lookup, the reply assembled from fields the keystore pre-rendered. */
#include <inttypes.h>
#include <stdio.h>
#include <time.h>
#include <string.h>

#include <urcu-qsbr.h>

#include "daemon.h"
#include "ids.h"
#include "json-util.h"
#include "log.h"
#include "macro.h"
#include "metrics.h"
#include "secret.h"
#include "timeutil.h"
#include "verifylog.h"

/* Reply buffer on the stack; a key with very large metadata falls back to the heap. */
#define VERIFY_REPLY_STACK 2048

static void log_verify(const verify_result *r, const char *key, size_t key_len,
                       const char *user_agent, const verify_peer *peer, int64_t now_ns)
{
    conf_log_verify mode = state_conf()->log_verify;
    bool ok = r->code == VERIFY_VALID;

    if (mode == CONF_LOG_VERIFY_SUMMARY) {
        verifylog_count(r->code, r->key, peer->uid, peer->addr);
        if (ok || !verifylog_failure_due(now_ns / 1000000))
            return;
    }
    if (mode == CONF_LOG_VERIFY_NONE || (mode == CONF_LOG_VERIFY_FAILURES && ok))
        return;
    if (!log_enabled(LOG_INFO))
        return;

    /* A failed key is logged by its first 8 characters only, never whole. */
    char prefix[9] = "";
    if (!ok) {
        size_t n = key_len < 8 ? key_len : 8;
        memcpy(prefix, key, n);
        prefix[n] = 0;
    }
    const keystore_key *k = r->key;
    log_fields f = {
        .event = ok ? "verification_success" : "verification_failed",
        .key_id = k ? keystore_key_id(k) : NULL,
        .key_name = k ? keystore_key_name(k) : NULL,
        .key_prefix = ok ? NULL : prefix,
        .user_agent = user_agent,
        .code = keystore_code_name(r->code),
        .peer_uid = peer->uid,
        .peer_pid = peer->pid,
        .peer_addr = peer->addr,
        .peer_unit = peer->unit,
        .time_ns = now_ns,
    };
    log_event_fields(ok ? LOG_INFO : LOG_NOTICE, &f);
}

/* The verify path's clock. A clock read costs about 25 ns on a virtual machine, and a
 * verification took three (start, wall clock, end): as much as the lookup. In a batch (see
 * verify_batch_begin) a call's start is the previous call's end and the wall clock is
 * derived from the monotonic one, so a call reads the clock once. The time between two
 * calls of a batch (framing, the reply) counts towards the later one. */
typedef struct verify_clock {
    bool batch;       /* between verify_batch_begin and verify_batch_end */
    bool have;        /* the two fields below are set */
    int64_t mono_ns;  /* CLOCK_MONOTONIC at the end of the batch's previous verification */
    int64_t real_off; /* CLOCK_REALTIME - CLOCK_MONOTONIC, read at the batch's first one */
} verify_clock;

static _Thread_local verify_clock t_clock;

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void verify_batch_begin(void)
{
    t_clock = (verify_clock){.batch = true};
}

void verify_batch_end(void)
{
    t_clock = (verify_clock){0};
}

void verify_run(char *key, size_t key_len, const char *scope, const char *user_agent,
                const verify_peer *peer, verify_result *r)
{
    const snapshot *snap = state_snapshot();
    const conf *c = state_conf();
    int64_t start, real_off;
    if (t_clock.have) {
        start = t_clock.mono_ns;
        real_off = t_clock.real_off;
    } else {
        start = clock_ns(CLOCK_MONOTONIC);
        real_off = clock_ns(CLOCK_REALTIME) - start;
    }
    int64_t now_ns = start + real_off;
    int64_t now_ms = now_ns / 1000000, now_s = now_ns / 1000000000;

    *r = (verify_result){.code = VERIFY_NOT_FOUND};
    /* A peer over its failure budget is answered without a lookup. */
    if (throttle_check(peer->throttle, c->max_failures_per_minute, now_ms, &r->retry_after_ms)) {
        r->code = VERIFY_RATE_LIMITED;
    } else {
        r->code = keystore_verify(snap->ks, key, key_len, scope, now_s, &r->key);
        if (r->key) {
            keystate *st = snapshot_state(snap, r->key);
            if (r->code == VERIFY_VALID && !keystate_take(st, (uint64_t)now_ns, &r->retry_after_ms))
                r->code = VERIFY_RATE_LIMITED;
            keystate_count(st, r->code == VERIFY_VALID, now_s);
        }
        if (r->code != VERIFY_VALID && r->code != VERIFY_RATE_LIMITED)
            throttle_failed(peer->throttle, now_ms);
    }
    log_verify(r, key, key_len, user_agent, peer, now_ns);
    /* The key is not needed any more: wipe it where the caller parsed it. */
    secret_wipe(key, key_len);
    int64_t end = clock_ns(CLOCK_MONOTONIC);
    if (t_clock.batch)
        t_clock = (verify_clock){.batch = true, .have = true, .mono_ns = end, .real_off = real_off};
    metrics_count_verify(r->code, (uint64_t)(end - start));
}

/* Appends s[0..n) at *off if it fits, and counts it either way. */
static void put(char *buf, size_t cap, size_t *off, const char *s, size_t n)
{
    if (*off + n < cap)
        memcpy(buf + *off, s, n);
    *off += n;
}

size_t verify_render(const verify_result *r, char *buf, size_t cap)
{
    static const char valid[] = "{\"valid\":true,\"code\":\"";
    static const char invalid[] = "{\"valid\":false,\"code\":\"";
    size_t off = 0;
    const char *code = keystore_code_name(r->code);

    /* Assembled by copying: this runs for every call, and snprintf cost more than the rest
     * of the reply. */
    if (r->code == VERIFY_VALID)
        put(buf, cap, &off, valid, sizeof(valid) - 1);
    else
        put(buf, cap, &off, invalid, sizeof(invalid) - 1);
    put(buf, cap, &off, code, strlen(code));
    put(buf, cap, &off, "\"", 1);
    if (r->key) {
        put(buf, cap, &off, ",", 1);
        off += keystore_key_verify_fields(r->key, off < cap ? buf + off : NULL,
                                          off < cap ? cap - off : 0);
    }
    if (r->code == VERIFY_RATE_LIMITED) {
        char num[24];
        int n = snprintf(num, sizeof(num), ",\"retry_after_ms\":%" PRId64, r->retry_after_ms);
        put(buf, cap, &off, num, n < 0 ? 0 : (size_t)n);
    }
    put(buf, cap, &off, "}", 1);
    if (off < cap)
        buf[off] = 0;
    return off;
}

/* Verifies and answers; key is the caller's copy, which verify_run wipes. */
static void verify_answer(call_ctx *ctx, char *key, size_t key_len, const char *scope,
                          const char *user_agent)
{
    const peer_cred *p = call_peer(ctx);
    verify_peer peer = {.throttle = p->uid, .uid = p->uid, .pid = p->pid};
    if (call_conf(ctx)->log_verify != CONF_LOG_VERIFY_NONE)
        peer.unit = call_peer_unit(ctx);
    verify_result r;
    verify_run(key, key_len, scope, user_agent, &peer, &r);

    char stack[VERIFY_REPLY_STACK];
    _cleanup_free_ char *heap = NULL;
    size_t n = verify_render(&r, stack, sizeof(stack));
    const char *text = stack;
    if (n >= sizeof(stack)) {
        heap = malloc(n + 1);
        if (!heap) {
            call_error_oom(ctx);
            return;
        }
        verify_render(&r, heap, n + 1);
        text = heap;
    }
    call_reply_text(ctx, text, n);
}

static void method_verify(call_ctx *ctx, const json_t *params)
{
    const char *key, *scope, *user_agent;
    size_t key_len = 0;
    /* The key with its length: one with a NUL is MALFORMED, never cut short at it. */
    const param_field fields[] = {
        {"key", &key, true, &key_len},
        {"scope", &scope, false, NULL},
        {"user_agent", &user_agent, false, NULL},
    };
    if (!call_read_string_params(ctx, params, fields, ELEMENTSOF(fields)))
        return;
    /* The parsed message is ours: verify_run wipes the key in it. */
    verify_answer(ctx, (char *)key, key_len, scope, user_agent);
}

/* The same parameters as method_verify, read from a scanned call: same errors, same
 * answer, no JSON tree. */
static void method_verify_simple(call_ctx *ctx, const varlink_simple_call *call)
{
    char *key = NULL;
    size_t key_len = 0;
    const char *scope = NULL, *user_agent = NULL;

    for (size_t i = 0; i < call->n_params; i++) {
        const varlink_simple_param *p = &call->params[i];
        if (strcmp(p->name, "key") == 0) {
            key = p->value;
            key_len = p->value_len;
        } else if (strcmp(p->name, "scope") == 0) {
            scope = p->value;
        } else if (strcmp(p->name, "user_agent") == 0) {
            user_agent = p->value;
        } else {
            call_error_invalid_parameter(ctx, p->name);
            return;
        }
    }
    if (!key) {
        call_error_invalid_parameter(ctx, "key");
        return;
    }
    verify_answer(ctx, key, key_len, scope, user_agent);
}

json_t *health_reply(const char **ret_status)
{
    state_health h;
    char loaded_at[TIMEUTIL_RFC3339_LEN + 1];

    metrics_count_health();
    state_get_health(&h);
    bool have_time = h.loaded_at > 0 && timeutil_format_rfc3339(h.loaded_at, loaded_at) >= 0;
    json_t *reply = json_pack(
        "{s:s,s:I,s:I,s:s?,s:s,s:s?,s:I,s:s}", "status", h.status, "keys_loaded",
        (json_int_t)h.keys_loaded, "generation", (json_int_t)h.generation, "loaded_at",
        have_time ? loaded_at : NULL, "store", state_conf()->store, "last_error", h.last_error,
        "uptime_seconds", (json_int_t)(timeutil_now() - h.started_at), "version", HEARE_VERSION);
    free(h.last_error);
    if (ret_status)
        *ret_status = h.status;
    return reply;
}

static void method_get_health(call_ctx *ctx, const json_t *params)
{
    if (!call_read_string_params(ctx, params, NULL, 0))
        return;
    json_t *reply = health_reply(NULL);
    if (!reply) {
        call_error_oom(ctx);
        return;
    }
    call_reply(ctx, reply, false);
}

const method_entry methods_auth[] = {
    {"Verify", method_verify, 0},
    {"GetHealth", method_get_health, 0},
    {NULL, NULL, 0},
};

const method_simple_entry methods_simple[] = {
    {"io.heare.Auth.Verify", method_verify_simple},
    {NULL, NULL},
};
