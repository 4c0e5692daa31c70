/* method-admin: io.heare.AuthAdmin, on the admin socket for admin peers only (the
 * connection code checks that). Reads come from the published keystore; writes go to the
 * store thread, which writes the store first and only then swaps the keystore. */
#include <stdio.h>
#include <string.h>

#include <systemd/sd-login.h>

#include "daemon.h"
#include "errors.h"
#include "json-util.h"
#include "keyops.h"
#include "log.h"
#include "macro.h"
#include "metrics.h"
#include "secret.h"
#include "timeutil.h"

/* Puts this daemon's counters for the key into a rendered Key object. */
static void fill_counters(const snapshot *snap, json_t *key)
{
    const keystore_key *k = keystore_get(snap->ks, json_string_value(json_object_get(key, "id")));
    if (!k)
        return;
    const keystate *st = snapshot_state(snap, k);
    char when[TIMEUTIL_RFC3339_LEN + 1];
    int64_t last = keystate_last_used_at(st);
    json_object_set_new(key, "verifications", json_integer((json_int_t)keystate_verifications(st)));
    json_object_set_new(key, "last_used_at", last > 0 && timeutil_format_rfc3339(last, when) >= 0
                                                 ? json_string(when)
                                                 : json_null());
}

static json_t *render_key(const snapshot *snap, const keystore_key *k, int64_t now)
{
    json_t *key = keystore_key_render(snap->ks, k, now);
    if (key)
        fill_counters(snap, key);
    return key;
}

static void submit(call_ctx *ctx, job_kind kind, const json_t *params)
{
    job *j = job_new(kind, params);
    if (!j) {
        call_error_oom(ctx);
        return;
    }
    call_submit(ctx, j);
}

static void method_create_key(call_ctx *ctx, const json_t *params)
{
    submit(ctx, JOB_CREATE, params);
}

static void method_update_key(call_ctx *ctx, const json_t *params)
{
    submit(ctx, JOB_UPDATE, params);
}

static void method_rotate_key(call_ctx *ctx, const json_t *params)
{
    submit(ctx, JOB_ROTATE, params);
}

static void method_delete_key(call_ctx *ctx, const json_t *params)
{
    submit(ctx, JOB_DELETE, params);
}

static void method_refresh(call_ctx *ctx, const json_t *params)
{
    if (!call_read_string_params(ctx, params, NULL, 0))
        return;
    submit(ctx, JOB_REFRESH, params);
}

static void method_get_metrics(call_ctx *ctx, const json_t *params)
{
    metrics_snapshot m;

    if (!call_read_string_params(ctx, params, NULL, 0))
        return;
    metrics_snapshot_take(&m);
    json_t *samples = metrics_render_json(&m);
    json_t *reply = samples ? json_pack("{s:o}", "metrics", samples) : NULL;
    if (!reply) {
        call_error_oom(ctx);
        return;
    }
    call_reply(ctx, reply, false);
}

static void method_get_key(call_ctx *ctx, const json_t *params)
{
    const char *id;
    const param_field fields[] = {{"id", &id, true, NULL}};
    if (!call_read_string_params(ctx, params, fields, ELEMENTSOF(fields)))
        return;

    const snapshot *snap = state_snapshot();
    const keystore_key *k = keystore_get(snap->ks, id);
    if (!k) {
        call_error(ctx, "io.heare.AuthAdmin.KeyNotFound", json_pack("{s:s}", "id", id));
        return;
    }
    json_t *key = render_key(snap, k, timeutil_now());
    json_t *reply = key ? json_pack("{s:o}", "key", key) : NULL;
    if (!reply) {
        call_error_oom(ctx);
        return;
    }
    call_reply(ctx, reply, false);
}

static void method_list_keys(call_ctx *ctx, const json_t *params)
{
    if (!call_read_string_params(ctx, params, NULL, 0))
        return;
    const snapshot *snap = state_snapshot();
    const keystore *ks = snap->ks;
    size_t n = keystore_size(ks);
    int64_t now = timeutil_now();

    if (call_wants_more(ctx) && n > 0) {
        for (size_t i = 0; i < n; i++) {
            json_t *key = render_key(snap, keystore_at(ks, i), now);
            json_t *reply = key ? json_pack("{s:[o]}", "keys", key) : NULL;
            if (!reply) {
                call_error_oom(ctx);
                return;
            }
            call_reply(ctx, reply, i + 1 < n);
        }
        return;
    }
    json_t *keys = json_array();
    for (size_t i = 0; keys && i < n; i++)
        if (json_array_append_new(keys, render_key(snap, keystore_at(ks, i), now)) < 0)
            keys = (json_decref(keys), NULL);
    json_t *reply = keys ? json_pack("{s:o}", "keys", keys) : NULL;
    if (!reply) {
        call_error_oom(ctx);
        return;
    }
    call_reply(ctx, reply, false);
}

/* The parameter names an update set, for the audit line ("name,scopes"). */
static char *changed_fields(const json_t *params)
{
    const char *name;
    json_t *v;
    size_t len = 0;
    char *s = NULL;
    bool first = true;
    FILE *f = open_memstream(&s, &len);
    if (!f)
        return NULL;
    json_object_foreach((json_t *)params, name, v) {
        if (strcmp(name, "id") == 0 || json_is_null(v))
            continue;
        fprintf(f, "%s%s", first ? "" : ",", name);
        first = false;
    }
    fclose(f);
    return s;
}

static void audit(call_ctx *ctx, const job *j)
{
    static const char *const events[] = {
        [JOB_CREATE] = "key_created",
        [JOB_UPDATE] = "key_updated",
        [JOB_ROTATE] = "key_rotated",
        [JOB_DELETE] = "key_deleted",
    };
    const peer_cred *p = call_peer(ctx);
    const json_t *key = json_object_get(j->reply, "key");
    const char *id = json_string_value(json_object_get(key, "id"));
    if (!id)
        id = json_string_value(json_object_get(j->params, "id"));
    _cleanup_free_ char *changed = NULL;
    const char *unit = call_peer_unit(ctx);
    if (j->kind == JOB_UPDATE)
        changed = changed_fields(j->params);

    log_fields f = {
        .event = events[j->kind],
        .key_id = id,
        .key_name = json_string_value(json_object_get(key, "name")),
        .peer_uid = p->uid,
        .peer_pid = p->pid,
        .peer_unit = unit,
        .changed = changed,
    };
    log_event(LOG_NOTICE, &f, "%s %s by uid %u", events[j->kind], id ? id : "?",
              (unsigned)p->uid);
}

void method_admin_job_done(call_ctx *ctx, job *j)
{
    if (j->r < 0) {
        const char *name = errors_varlink_name(j->r);
        json_t *params;
        if (j->r == -EINVAL)
            params = json_pack("{s:s}", "parameter", j->error_param ? j->error_param : "parameters");
        else if (j->r == -ENOKEY)
            params = json_pack("{s:s}", "id", json_string_value(json_object_get(j->params, "id"))
                                                  ?: "");
        else
            params = json_pack("{s:s}", "reason",
                               j->error_reason ? j->error_reason : errors_str(j->r));
        call_error(ctx, name, params);
        return;
    }
    if (j->kind != JOB_REFRESH)
        audit(ctx, j);
    json_t *key = json_object_get(j->reply, "key");
    if (key)
        fill_counters(state_snapshot(), key);
    json_t *secret = json_object_get(j->reply, "secret");
    json_t *reply = j->reply;
    j->reply = NULL;
    if (secret) {
        /* Keep the only plaintext copies short-lived: wiped once sent. */
        json_incref(secret);
        call_note_secret(ctx);
        call_reply(ctx, reply, false);
        secret_wipe((char *)json_string_value(secret), json_string_length(secret));
        json_decref(secret);
        return;
    }
    call_reply(ctx, reply, false);
}

const method_entry methods_admin[] = {
    {"CreateKey", method_create_key, 0},
    {"ListKeys", method_list_keys, METHOD_MORE},
    {"GetKey", method_get_key, 0},
    {"UpdateKey", method_update_key, 0},
    {"RotateKey", method_rotate_key, 0},
    {"DeleteKey", method_delete_key, 0},
    {"Refresh", method_refresh, 0},
    {"GetMetrics", method_get_metrics, 0},
    {NULL, NULL, 0},
};
