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
#include "secret.h"
#include "timeutil.h"

/* Reply buffer on the stack; a key with very large metadata falls back to the heap. */
#define VERIFY_REPLY_STACK 2048

static void log_verify(call_ctx *ctx, verify_code code, const keystore_key *k, const char *key,
                       size_t key_len, const char *user_agent)
{
    conf_log_verify mode = call_conf(ctx)->log_verify;
    bool ok = code == VERIFY_VALID;

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
    const peer_cred *p = call_peer(ctx);
    log_fields f = {
        .event = ok ? "verification_success" : "verification_failed",
        .key_id = k ? keystore_key_id(k) : NULL,
        .key_name = k ? keystore_key_name(k) : NULL,
        .key_prefix = ok ? NULL : prefix,
        .user_agent = user_agent,
        .code = keystore_code_name(code),
        .peer_uid = p->uid,
        .peer_pid = p->pid,
    };
    log_event(ok ? LOG_INFO : LOG_NOTICE, &f, "%s %s",
              ok ? "verified" : "rejected", k ? keystore_key_id(k) : keystore_code_name(code));
}

static void method_verify(call_ctx *ctx, const json_t *params)
{
    const char *key, *scope, *user_agent;
    const param_field fields[] = {
        {"key", &key, true},
        {"scope", &scope, false},
        {"user_agent", &user_agent, false},
    };
    if (!call_read_string_params(ctx, params, fields, ELEMENTSOF(fields)))
        return;

    size_t key_len = strlen(key);
    const keystore_key *k = NULL;
    const snapshot *snap = state_snapshot();
    const conf *c = call_conf(ctx);
    uid_t uid = call_peer(ctx)->uid;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    int64_t retry_ms = 0;
    verify_code code;

    /* A peer over its failure budget is answered without a lookup. */
    if (throttle_check(uid, c->max_failures_per_minute, now_ms, &retry_ms)) {
        code = VERIFY_RATE_LIMITED;
    } else {
        code = keystore_verify(snap->ks, key, key_len, scope, ts.tv_sec, &k);
        if (k) {
            keystate *st = snapshot_state(snap, k);
            if (code == VERIFY_VALID &&
                !keystate_take(st, (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec,
                               &retry_ms))
                code = VERIFY_RATE_LIMITED;
            keystate_count(st, code == VERIFY_VALID, ts.tv_sec);
        }
        if (code != VERIFY_VALID && code != VERIFY_RATE_LIMITED)
            throttle_failed(uid, now_ms);
    }

    char stack[VERIFY_REPLY_STACK];
    _cleanup_free_ char *heap = NULL;
    char *buf = stack;
    size_t fields_len = 0;
    const char *fields_text = k ? keystore_key_verify_fields(k, &fields_len) : NULL;
    size_t need = fields_len + 96;
    if (need > sizeof(stack)) {
        heap = malloc(need);
        if (!heap) {
            call_error(ctx, "io.heare.AuthAdmin.StoreUnavailable",
                       json_pack("{s:s}", "reason", "out of memory"));
            return;
        }
        buf = heap;
    }
    int n = snprintf(buf, need, "{\"valid\":%s,\"code\":\"%s\"%s%.*s",
                     code == VERIFY_VALID ? "true" : "false", keystore_code_name(code),
                     fields_text ? "," : "", (int)fields_len, fields_text ? fields_text : "");
    if (code == VERIFY_RATE_LIMITED)
        n += snprintf(buf + n, need - (size_t)n, ",\"retry_after_ms\":%" PRId64, retry_ms);
    buf[n++] = '}';
    log_verify(ctx, code, k, key, key_len, user_agent);
    /* The key is not needed any more: wipe it in the parsed message. */
    secret_wipe((char *)key, key_len);
    call_reply_text(ctx, buf, (size_t)n);
}

static void method_get_health(call_ctx *ctx, const json_t *params)
{
    state_health h;
    char loaded_at[TIMEUTIL_RFC3339_LEN + 1];

    if (json_object_size(params) > 0) {
        const char *name = json_object_iter_key(json_object_iter((json_t *)params));
        call_error_invalid_parameter(ctx, name);
        return;
    }
    state_get_health(&h);
    bool have_time = h.loaded_at > 0 && timeutil_format_rfc3339(h.loaded_at, loaded_at) >= 0;
    json_t *reply = json_pack(
        "{s:s,s:I,s:I,s:s?,s:s,s:s?,s:I,s:s}", "status", h.status, "keys_loaded",
        (json_int_t)h.keys_loaded, "generation", (json_int_t)h.generation, "loaded_at",
        have_time ? loaded_at : NULL, "store", call_conf(ctx)->store, "last_error", h.last_error,
        "uptime_seconds", (json_int_t)(timeutil_now() - h.started_at), "version", HEARE_VERSION);
    free(h.last_error);
    if (!reply) {
        call_error(ctx, "io.heare.AuthAdmin.StoreUnavailable",
                   json_pack("{s:s}", "reason", "out of memory"));
        return;
    }
    call_reply(ctx, reply, false);
}

const method_entry methods_auth[] = {
    {"Verify", method_verify, 0},
    {"GetHealth", method_get_health, 0},
    {NULL, NULL, 0},
};
