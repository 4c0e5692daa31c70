/* keyops: validates AuthAdmin parameters and applies create/update/rotate/delete to a document. */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "ids.h"
#include "json-util.h"
#include "keydoc.h"
#include "keyops.h"
#include "macro.h"
#include "secret.h"
#include "timeutil.h"

#define GRACE_DEFAULT 86400
#define GRACE_MAX 315360000 /* ten years */
#define NEW_ID_ATTEMPTS 8

/* Each parameter's value, and whether it was given (a JSON null counts as not given). */
typedef struct arg_str {
    bool set;
    const char *s;
} arg_str;

typedef struct arg_json {
    bool set;
    const json_t *j;
} arg_json;

typedef struct arg_time {
    bool set;
    char s[TIMEUTIL_RFC3339_LEN + 1]; /* normalised */
} arg_time;

typedef struct arg_bool {
    bool set;
    bool b;
} arg_bool;

typedef struct arg_int {
    bool set;
    int64_t i;
} arg_int;

typedef struct arg_rate {
    bool set;
    json_int_t per_second, burst;
} arg_rate;

typedef struct args {
    arg_str id, name;
    arg_json metadata, scopes;
    arg_time expires_at;
    arg_bool clear_expiry, disabled, clear_rate_limit;
    arg_rate rate_limit;
    arg_int grace_seconds;
} args;

typedef enum field_type {
    F_STRING,
    F_OBJECT,
    F_ARRAY,
    F_BOOL,
    F_INTEGER,
} field_type;

/* Checks the value (already of the right JSON type) and stores it at dst. 0 or -EINVAL. */
typedef int (*field_parser)(const json_t *v, void *dst);

typedef struct field {
    const char *name;
    field_type type;
    field_parser parse;
    size_t offset;
    bool required;
} field;

static int parse_id(const json_t *v, void *dst)
{
    arg_str *a = dst;

    if (!ids_is_key_id(json_string_value(v)))
        return -EINVAL;
    *a = (arg_str){true, json_string_value(v)};
    return 0;
}

static int parse_name(const json_t *v, void *dst)
{
    arg_str *a = dst;
    size_t n = json_string_length(v);

    /* The strlen() comparison refuses an embedded NUL. */
    if (n == 0 || n > KEYDOC_NAME_MAX || strlen(json_string_value(v)) != n)
        return -EINVAL;
    *a = (arg_str){true, json_string_value(v)};
    return 0;
}

static int parse_json(const json_t *v, void *dst)
{
    arg_json *a = dst;

    *a = (arg_json){true, v};
    return 0;
}

static int parse_scopes(const json_t *v, void *dst)
{
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *s = json_array_get(v, i);
        if (!json_is_string(s) || strlen(json_string_value(s)) != json_string_length(s) ||
            !keydoc_is_scope(json_string_value(s)))
            return -EINVAL;
    }
    return parse_json(v, dst);
}

static int parse_time(const json_t *v, void *dst)
{
    arg_time *a = dst;
    int64_t t;

    if (timeutil_parse_rfc3339(json_string_value(v), false, &t) < 0 ||
        timeutil_format_rfc3339(t, a->s) < 0)
        return -EINVAL;
    a->set = true;
    return 0;
}

static int parse_bool(const json_t *v, void *dst)
{
    arg_bool *a = dst;

    *a = (arg_bool){true, json_is_true(v)};
    return 0;
}

static int rate_value(const json_t *v, json_int_t *ret)
{
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > KEYDOC_RATE_MAX)
        return -EINVAL;
    *ret = json_integer_value(v);
    return 0;
}

static int parse_rate_limit(const json_t *v, void *dst)
{
    arg_rate *a = dst;
    json_int_t ps, burst;

    /* Exactly the two members: an unknown one is as wrong here as at the top level. */
    if (json_object_size(v) != 2 || rate_value(json_object_get(v, "per_second"), &ps) < 0 ||
        rate_value(json_object_get(v, "burst"), &burst) < 0)
        return -EINVAL;
    *a = (arg_rate){true, ps, burst};
    return 0;
}

static int parse_grace(const json_t *v, void *dst)
{
    arg_int *a = dst;

    if (json_integer_value(v) < 0 || json_integer_value(v) > GRACE_MAX)
        return -EINVAL;
    *a = (arg_int){true, json_integer_value(v)};
    return 0;
}

#define FIELD(n, t, p, member, req)                                                                \
    {                                                                                              \
        n, t, p, offsetof(args, member), req                                                       \
    }

static const field create_fields[] = {
    FIELD("name", F_STRING, parse_name, name, true),
    FIELD("metadata", F_OBJECT, parse_json, metadata, false),
    FIELD("scopes", F_ARRAY, parse_scopes, scopes, false),
    FIELD("expires_at", F_STRING, parse_time, expires_at, false),
    FIELD("rate_limit", F_OBJECT, parse_rate_limit, rate_limit, false),
};

static const field update_fields[] = {
    FIELD("id", F_STRING, parse_id, id, true),
    FIELD("name", F_STRING, parse_name, name, false),
    FIELD("metadata", F_OBJECT, parse_json, metadata, false),
    FIELD("scopes", F_ARRAY, parse_scopes, scopes, false),
    FIELD("expires_at", F_STRING, parse_time, expires_at, false),
    FIELD("clear_expiry", F_BOOL, parse_bool, clear_expiry, false),
    FIELD("disabled", F_BOOL, parse_bool, disabled, false),
    FIELD("rate_limit", F_OBJECT, parse_rate_limit, rate_limit, false),
    FIELD("clear_rate_limit", F_BOOL, parse_bool, clear_rate_limit, false),
};

static const field rotate_fields[] = {
    FIELD("id", F_STRING, parse_id, id, true),
    FIELD("grace_seconds", F_INTEGER, parse_grace, grace_seconds, false),
};

static const field delete_fields[] = {
    FIELD("id", F_STRING, parse_id, id, true),
};

static bool type_ok(const json_t *v, field_type t)
{
    switch (t) {
    case F_STRING:
        /* A string with a NUL (valid JSON) is no C string: refused, never cut short. */
        return json_is_string(v) && strlen(json_string_value(v)) == json_string_length(v);
    case F_OBJECT:
        return json_is_object(v);
    case F_ARRAY:
        return json_is_array(v);
    case F_BOOL:
        return json_is_boolean(v);
    case F_INTEGER:
        return json_is_integer(v);
    }
    return false;
}

/* The first byte of each arg_* member is its "set" flag. */
static bool is_set(const args *a, const field *f)
{
    return *(const bool *)((const char *)a + f->offset);
}

static int read_params(const json_t *params, const field *fields, size_t n, args *ret,
                       const char **reterr_param)
{
    args a = {0};
    const char *name;
    const json_t *v;
    size_t i;

    if (params && !json_is_object(params)) {
        *reterr_param = "parameters";
        return -EINVAL;
    }
    json_object_foreach((json_t *)params, name, v)
    {
        const field *f = NULL;

        for (i = 0; i < n && !f; i++)
            if (strcmp(fields[i].name, name) == 0)
                f = &fields[i];
        if (!f) {
            *reterr_param = name;
            return -EINVAL;
        }
        if (json_is_null(v) && !f->required)
            continue;
        if (!type_ok(v, f->type) || f->parse(v, (char *)&a + f->offset) < 0) {
            *reterr_param = f->name;
            return -EINVAL;
        }
    }
    for (i = 0; i < n; i++)
        if (fields[i].required && !is_set(&a, &fields[i])) {
            *reterr_param = fields[i].name;
            return -EINVAL;
        }
    if (a.expires_at.set && a.clear_expiry.set && a.clear_expiry.b) {
        *reterr_param = "clear_expiry";
        return -EINVAL;
    }
    if (a.rate_limit.set && a.clear_rate_limit.set && a.clear_rate_limit.b) {
        *reterr_param = "clear_rate_limit";
        return -EINVAL;
    }
    *ret = a;
    return 0;
}

static json_t *rate_limit_json(const arg_rate *a)
{
    return json_pack("{s:I, s:I}", "per_second", a->per_second, "burst", a->burst);
}

static void wipe_string(json_t *s)
{
    if (json_is_string(s))
        secret_wipe((char *)json_string_value(s), json_string_length(s));
}

/* A new secret: the plaintext goes to *ret_secret (a JSON string the reply will own), its
 * digest into the returned secret entry. NULL on failure with *ret_err. */
static json_t *new_secret(int64_t now, const char *created, json_t **ret_secret, int *ret_err)
{
    char secret[IDS_SECRET_LEN + 1], hex[SECRET_HEX_LEN + 1];
    uint8_t digest[SECRET_DIGEST_LEN];
    json_t *plain, *entry;
    int r;

    r = ids_new_secret(now, secret);
    if (r < 0) {
        *ret_err = r;
        return NULL;
    }
    secret_digest(secret, IDS_SECRET_LEN, digest);
    plain = json_stringn(secret, IDS_SECRET_LEN);
    secret_wipe(secret, sizeof(secret));
    secret_hex(digest, hex);
    entry = json_pack("{s:s, s:s, s:n}", "sha256", hex, "created_at", created, "expires_at");
    if (!plain || !entry) {
        json_decref(entry);
        wipe_string(plain);
        json_decref(plain);
        *ret_err = -ENOMEM;
        return NULL;
    }
    *ret_secret = plain;
    return entry;
}

/* {"key": Key, "secret": secret} (secret stolen, may be NULL for no "secret"). */
static int make_reply(const json_t *key, int64_t now, json_t *secret, json_t **ret_reply)
{
    json_t *rendered = keyops_render_key(key, now), *reply;

    reply = rendered ? json_pack("{s:o}", "key", rendered) : NULL;
    if (reply && secret && json_object_set(reply, "secret", secret) < 0) {
        json_decref(reply);
        reply = NULL;
    }
    /* Only the reply may keep the plaintext: if there is none, wipe it before it goes. */
    if (!reply)
        wipe_string(secret);
    json_decref(secret);
    if (!reply)
        return -ENOMEM;
    *ret_reply = reply;
    return 0;
}

/* The document's key array and the index of the key with id a->id. */
static int find_key(json_t *doc, const args *a, json_t **ret_keys, size_t *ret_index)
{
    json_t *keys = json_object_get(doc, "keys");
    size_t i;

    if (!json_is_array(keys))
        return -EBADMSG;
    if (!keydoc_find_key(doc, a->id.s, &i))
        return -ENOKEY;
    *ret_keys = keys;
    *ret_index = i;
    return 0;
}

int keyops_create(json_t *doc, const json_t *params, int64_t now, json_t **ret_reply,
                  const char **reterr_param)
{
    char id[IDS_KEY_ID_LEN + 1], created[TIMEUTIL_RFC3339_LEN + 1];
    _cleanup_json_ json_t *key = NULL;
    json_t *keys = json_object_get(doc, "keys"), *entry, *secret = NULL;
    size_t key_index;
    args a;
    int r;

    r = read_params(params, create_fields, ELEMENTSOF(create_fields), &a, reterr_param);
    if (r < 0)
        return r;
    if (!json_is_array(keys))
        return -EBADMSG;
    r = timeutil_format_rfc3339(now, created);
    if (r < 0)
        return r;
    /* 10 random base62 characters rarely collide, but a collision must not pass silently. */
    for (int attempt = 0;; attempt++) {
        r = ids_new_key_id(now, id);
        if (r < 0)
            return r;
        if (!keydoc_find_key(doc, id, NULL))
            break;
        if (attempt + 1 >= NEW_ID_ATTEMPTS)
            return -EEXIST;
    }

    key = json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:b, s:o}", "id", id, "name", a.name.s,
                    "created_at", created, "metadata",
                    a.metadata.set ? json_deep_copy(a.metadata.j) : json_object(), "scopes",
                    a.scopes.set ? json_deep_copy(a.scopes.j) : json_array(), "expires_at",
                    a.expires_at.set ? json_string(a.expires_at.s) : json_null(), "disabled", 0,
                    "rate_limit", a.rate_limit.set ? rate_limit_json(&a.rate_limit) : json_null());
    if (!key)
        return -ENOMEM;
    entry = new_secret(now, created, &secret, &r);
    if (!entry)
        return r;
    if (json_object_set_new(key, "secrets", json_pack("[o]", entry)) < 0) {
        wipe_string(secret);
        json_decref(secret);
        return -ENOMEM;
    }

    key_index = json_array_size(keys);
    if (json_array_append(keys, key) < 0) {
        wipe_string(secret);
        json_decref(secret);
        return -ENOMEM;
    }
    r = make_reply(key, now, secret, ret_reply);
    if (r < 0)
        json_array_remove(keys, key_index);
    return r;
}

int keyops_update(json_t *doc, const json_t *params, int64_t now, json_t **ret_reply,
                  const char **reterr_param)
{
    _cleanup_json_ json_t *copy = NULL;
    json_t *keys;
    size_t i;
    args a;
    int r;

    r = read_params(params, update_fields, ELEMENTSOF(update_fields), &a, reterr_param);
    if (r < 0)
        return r;
    r = find_key(doc, &a, &keys, &i);
    if (r < 0)
        return r;

    /* Changes go to a copy that replaces the key in one step, so a failure half-way leaves
     * the document as it was. */
    copy = json_deep_copy(json_array_get(keys, i));
    if (!copy)
        return -ENOMEM;
    if ((a.name.set && json_object_set_new(copy, "name", json_string(a.name.s)) < 0) ||
        (a.metadata.set &&
         json_object_set_new(copy, "metadata", json_deep_copy(a.metadata.j)) < 0) ||
        (a.scopes.set && json_object_set_new(copy, "scopes", json_deep_copy(a.scopes.j)) < 0) ||
        (a.expires_at.set &&
         json_object_set_new(copy, "expires_at", json_string(a.expires_at.s)) < 0) ||
        (a.clear_expiry.set && a.clear_expiry.b &&
         json_object_set_new(copy, "expires_at", json_null()) < 0) ||
        (a.disabled.set && json_object_set_new(copy, "disabled", json_boolean(a.disabled.b)) < 0) ||
        (a.rate_limit.set &&
         json_object_set_new(copy, "rate_limit", rate_limit_json(&a.rate_limit)) < 0) ||
        (a.clear_rate_limit.set && a.clear_rate_limit.b &&
         json_object_set_new(copy, "rate_limit", json_null()) < 0))
        return -ENOMEM;

    r = make_reply(copy, now, NULL, ret_reply);
    if (r < 0)
        return r;
    json_array_set(keys, i, copy);
    return 0;
}

int keyops_rotate(json_t *doc, const json_t *params, int64_t now, json_t **ret_reply,
                  const char **reterr_param)
{
    char created[TIMEUTIL_RFC3339_LEN + 1], until[TIMEUTIL_RFC3339_LEN + 1];
    _cleanup_json_ json_t *copy = NULL;
    json_t *keys, *secrets, *entry, *secret = NULL;
    int64_t grace_end;
    size_t i, j;
    args a;
    int r;

    r = read_params(params, rotate_fields, ELEMENTSOF(rotate_fields), &a, reterr_param);
    if (r < 0)
        return r;
    r = find_key(doc, &a, &keys, &i);
    if (r < 0)
        return r;
    r = timeutil_format_rfc3339(now, created);
    if (r < 0)
        return r;
    /* now is within years 0..9999 here, so adding at most ten years cannot overflow. */
    grace_end = now + (a.grace_seconds.set ? a.grace_seconds.i : GRACE_DEFAULT);
    r = timeutil_format_rfc3339(grace_end, until);
    if (r < 0)
        return r;

    copy = json_deep_copy(json_array_get(keys, i));
    secrets = json_object_get(copy, "secrets");
    if (!copy || !json_is_array(secrets))
        return copy ? -EBADMSG : -ENOMEM;
    for (j = 0; j < json_array_size(secrets); j++) {
        json_t *s = json_array_get(secrets, j);
        const char *exp = json_string_value(json_object_get(s, "expires_at"));
        int64_t t;

        /* An expiry that comes sooner than the grace period is kept. */
        if (exp && timeutil_parse_rfc3339(exp, false, &t) >= 0 && t <= grace_end)
            continue;
        if (json_object_set_new(s, "expires_at", json_string(until)) < 0)
            return -ENOMEM;
    }
    entry = new_secret(now, created, &secret, &r);
    if (!entry)
        return r;
    if (json_array_append_new(secrets, entry) < 0) {
        wipe_string(secret);
        json_decref(secret);
        return -ENOMEM;
    }

    r = make_reply(copy, now, secret, ret_reply);
    if (r < 0)
        return r;
    json_array_set(keys, i, copy);
    return 0;
}

int keyops_delete(json_t *doc, const json_t *params, int64_t now, json_t **ret_reply,
                  const char **reterr_param)
{
    json_t *keys, *reply;
    size_t i;
    args a;
    int r;

    r = read_params(params, delete_fields, ELEMENTSOF(delete_fields), &a, reterr_param);
    if (r < 0)
        return r;
    r = find_key(doc, &a, &keys, &i);
    if (r < 0)
        return r;
    reply = json_object();
    if (!reply)
        return -ENOMEM;
    if (json_array_remove(keys, i) < 0) {
        json_decref(reply);
        return -ENOMEM;
    }
    *ret_reply = reply;
    return 0;
}

/* A copy of key[name], or dflt (stolen) when it is absent; NULL on OOM. */
static json_t *member_or(const json_t *key, const char *name, json_t *dflt)
{
    const json_t *v = json_object_get(key, name);

    if (!v)
        return dflt;
    json_decref(dflt);
    return json_deep_copy(v);
}

json_t *keyops_render_key(const json_t *key, int64_t now)
{
    const json_t *secrets = json_object_get(key, "secrets");
    json_int_t live = 0;

    if (!json_is_object(key))
        return NULL;
    for (size_t j = 0; j < json_array_size(secrets); j++) {
        const json_t *exp = json_object_get(json_array_get(secrets, j), "expires_at");
        int64_t t;

        if (!exp || json_is_null(exp) ||
            (json_is_string(exp) &&
             timeutil_parse_rfc3339(json_string_value(exp), false, &t) >= 0 && t > now))
            live++;
    }
    /* json_pack with "o" consumes each value and fails on a NULL (OOM) one. */
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:I, s:I, s:n}", "id",
                     member_or(key, "id", json_null()), "name", member_or(key, "name", json_null()),
                     "created_at", member_or(key, "created_at", json_null()), "metadata",
                     member_or(key, "metadata", json_object()), "scopes",
                     member_or(key, "scopes", json_array()), "expires_at",
                     member_or(key, "expires_at", json_null()), "disabled",
                     member_or(key, "disabled", json_false()), "rate_limit",
                     member_or(key, "rate_limit", json_null()), "secrets", live, "verifications",
                     (json_int_t)0, "last_used_at");
}
