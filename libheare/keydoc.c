/* keydoc: parses, converts (v1 → v2), validates and serializes the keys.json document. */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "errors.h"
#include "ids.h"
#include "json-util.h"
#include "keydoc.h"
#include "macro.h"
#include "secret.h"
#include "timeutil.h"

/* Where a problem is inside one key ("secrets[0].sha256") and what it is. */
typedef struct complaint {
    char path[64];
    const char *problem;
} complaint;

_printf_(3, 4) static bool complain(complaint *c, const char *problem, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->path, sizeof(c->path), fmt, ap);
    va_end(ap);
    c->problem = problem;
    return false;
}

/* Only a well-formed id goes into a message: anything else in "id" could be a pasted secret. */
static const char *printable_id(const json_t *key)
{
    const char *id = json_string_value(json_object_get(key, "id"));
    return ids_is_key_id(id) ? id : NULL;
}

_printf_(4, 5) static int fail_key(char **reterr, size_t i, const json_t *key, const char *fmt, ...)
{
    _cleanup_free_ char *what = NULL;
    const char *id = printable_id(key);
    va_list ap;
    int r;

    if (!reterr)
        return -EBADMSG;
    va_start(ap, fmt);
    r = vasprintf(&what, fmt, ap);
    va_end(ap);
    if (r < 0)
        return -ENOMEM;
    if (id)
        return errors_fail(reterr, -EBADMSG, "keys[%zu] (%s): %s", i, id, what);
    return errors_fail(reterr, -EBADMSG, "keys[%zu]: %s", i, what);
}

static bool is_time(const json_t *v)
{
    int64_t t;
    return json_is_string(v) && timeutil_parse_rfc3339(json_string_value(v), false, &t) >= 0;
}

bool keydoc_is_scope(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++)
        if ((unsigned char)*s < 0x21 || (unsigned char)*s > 0x7e)
            return false;
    return true;
}

static bool check_rate_value(const json_t *rl, const char *name, complaint *c)
{
    const json_t *v = json_object_get(rl, name);

    if (!v)
        return complain(c, "missing", "rate_limit.%s", name);
    if (!json_is_integer(v))
        return complain(c, "not an integer", "rate_limit.%s", name);
    if (json_integer_value(v) < 1 || json_integer_value(v) > KEYDOC_RATE_MAX)
        return complain(c, "out of range 1..1000000000", "rate_limit.%s", name);
    return true;
}

static bool check_secret(const json_t *s, size_t j, complaint *c)
{
    const json_t *v;
    uint8_t d[SECRET_DIGEST_LEN];

    if (!json_is_object(s))
        return complain(c, "not an object", "secrets[%zu]", j);
    v = json_object_get(s, "sha256");
    if (!v)
        return complain(c, "missing", "secrets[%zu].sha256", j);
    if (!json_is_string(v) || secret_unhex(json_string_value(v), d) < 0)
        return complain(c, "not 64 lowercase hex", "secrets[%zu].sha256", j);
    v = json_object_get(s, "created_at");
    if (!v)
        return complain(c, "missing", "secrets[%zu].created_at", j);
    if (!is_time(v))
        return complain(c, "not an RFC 3339 time", "secrets[%zu].created_at", j);
    /* Nullable members may also be absent, which means null. */
    v = json_object_get(s, "expires_at");
    if (v && !json_is_null(v) && !is_time(v))
        return complain(c, "not null or an RFC 3339 time", "secrets[%zu].expires_at", j);
    return true;
}

/* Checks one key's members, not the uniqueness across the document. */
static bool check_key(const json_t *key, complaint *c)
{
    const json_t *v;
    size_t j;

    v = json_object_get(key, "id");
    if (!v)
        return complain(c, "missing", "id");
    if (!json_is_string(v))
        return complain(c, "not a string", "id");
    if (!ids_is_key_id(json_string_value(v)))
        return complain(c, "not a key id", "id");

    v = json_object_get(key, "name");
    if (!v)
        return complain(c, "missing", "name");
    if (!json_is_string(v))
        return complain(c, "not a string", "name");
    if (json_string_length(v) == 0)
        return complain(c, "empty", "name");
    if (json_string_length(v) > KEYDOC_NAME_MAX)
        return complain(c, "longer than 256 bytes", "name");

    v = json_object_get(key, "created_at");
    if (!v)
        return complain(c, "missing", "created_at");
    if (!is_time(v))
        return complain(c, "not an RFC 3339 time", "created_at");

    v = json_object_get(key, "metadata");
    if (!v)
        return complain(c, "missing", "metadata");
    if (!json_is_object(v))
        return complain(c, "not an object", "metadata");

    v = json_object_get(key, "scopes");
    if (!v)
        return complain(c, "missing", "scopes");
    if (!json_is_array(v))
        return complain(c, "not an array", "scopes");
    for (j = 0; j < json_array_size(v); j++) {
        const json_t *s = json_array_get(v, j);
        if (!json_is_string(s))
            return complain(c, "not a string", "scopes[%zu]", j);
        if (json_string_length(s) == 0)
            return complain(c, "empty", "scopes[%zu]", j);
        /* The length check catches an embedded NUL that strlen() inside would miss. */
        if (strlen(json_string_value(s)) != json_string_length(s) ||
            !keydoc_is_scope(json_string_value(s)))
            return complain(c, "not printable ASCII without spaces", "scopes[%zu]", j);
    }

    /* Nullable members may also be absent, which means null. */
    v = json_object_get(key, "expires_at");
    if (v && !json_is_null(v) && !is_time(v))
        return complain(c, "not null or an RFC 3339 time", "expires_at");

    v = json_object_get(key, "disabled");
    if (!v)
        return complain(c, "missing", "disabled");
    if (!json_is_boolean(v))
        return complain(c, "not a boolean", "disabled");

    v = json_object_get(key, "rate_limit");
    if (v && !json_is_null(v)) {
        if (!json_is_object(v))
            return complain(c, "not null or an object", "rate_limit");
        if (!check_rate_value(v, "per_second", c) || !check_rate_value(v, "burst", c))
            return false;
    }

    v = json_object_get(key, "secrets");
    if (!v)
        return complain(c, "missing", "secrets");
    if (!json_is_array(v))
        return complain(c, "not an array", "secrets");
    if (json_array_size(v) == 0)
        return complain(c, "empty", "secrets");
    for (j = 0; j < json_array_size(v); j++)
        if (!check_secret(json_array_get(v, j), j, c))
            return false;
    return true;
}

/* A string set for the uniqueness checks: open addressing, power-of-two size, load <= 0.5. */
typedef struct seen_entry {
    const char *s; /* NULL: empty slot */
    size_t key;    /* index of the key the string belongs to */
} seen_entry;

typedef struct seen_set {
    seen_entry *slots;
    size_t mask;
} seen_set;

static uint64_t fnv1a(const char *s)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * UINT64_C(0x100000001b3);
    return h;
}

static int seen_init(seen_set *set, size_t n)
{
    size_t size = 16;

    while (size / 2 < n) {
        if (size > SIZE_MAX / 2 / sizeof(seen_entry))
            return -ENOMEM;
        size *= 2;
    }
    set->slots = calloc(size, sizeof(seen_entry));
    if (!set->slots)
        return -ENOMEM;
    set->mask = size - 1;
    return 0;
}

/* Adds s for key; returns NULL if it was new, else the entry that already holds it. */
static const seen_entry *seen_add(seen_set *set, const char *s, size_t key)
{
    size_t i = (size_t)fnv1a(s) & set->mask;

    for (; set->slots[i].s; i = (i + 1) & set->mask)
        if (strcmp(set->slots[i].s, s) == 0)
            return &set->slots[i];
    set->slots[i] = (seen_entry){.s = s, .key = key};
    return NULL;
}

int keydoc_validate(const json_t *doc, char **reterr)
{
    _cleanup_free_ seen_entry *id_slots = NULL, *secret_slots = NULL;
    seen_set ids = {0}, secrets = {0};
    const json_t *v, *keys;
    size_t i, j, n_secrets = 0;
    int r;

    if (!json_is_object(doc))
        return errors_fail(reterr, -EBADMSG, "$: not a JSON object");
    v = json_object_get(doc, "version");
    if (!v)
        return errors_fail(reterr, -EBADMSG, "$.version: missing");
    if (!json_is_integer(v))
        return errors_fail(reterr, -EBADMSG, "$.version: not an integer");
    if (json_integer_value(v) != 2)
        return errors_fail(reterr, -EBADMSG, "$.version: unsupported version %" JSON_INTEGER_FORMAT,
                           json_integer_value(v));
    keys = json_object_get(doc, "keys");
    if (!keys)
        return errors_fail(reterr, -EBADMSG, "$.keys: missing");
    if (!json_is_array(keys))
        return errors_fail(reterr, -EBADMSG, "$.keys: not an array");

    for (i = 0; i < json_array_size(keys); i++) {
        v = json_object_get(json_array_get(keys, i), "secrets");
        if (json_is_array(v))
            n_secrets += json_array_size(v);
    }
    r = seen_init(&ids, json_array_size(keys));
    if (r < 0)
        return r;
    id_slots = ids.slots;
    r = seen_init(&secrets, n_secrets);
    if (r < 0)
        return r;
    secret_slots = secrets.slots;

    for (i = 0; i < json_array_size(keys); i++) {
        const json_t *key = json_array_get(keys, i), *ss;
        const seen_entry *dup;
        complaint c;

        if (!json_is_object(key))
            return errors_fail(reterr, -EBADMSG, "keys[%zu]: not an object", i);
        if (!check_key(key, &c))
            return fail_key(reterr, i, key, "%s: %s", c.path, c.problem);

        dup = seen_add(&ids, json_string_value(json_object_get(key, "id")), i);
        if (dup)
            return fail_key(reterr, i, key, "duplicate id (also keys[%zu])", dup->key);

        ss = json_object_get(key, "secrets");
        for (j = 0; j < json_array_size(ss); j++) {
            const char *hex = json_string_value(json_object_get(json_array_get(ss, j), "sha256"));
            dup = seen_add(&secrets, hex, i);
            if (dup)
                return fail_key(
                    reterr, i, key, "secrets[%zu].sha256: duplicate secret (also %s)", j,
                    json_string_value(json_object_get(json_array_get(keys, dup->key), "id")));
        }
    }
    return 0;
}

/* Wipes every plaintext v1 "secret" still in the tree, before it is freed on an error. */
static void wipe_v1_secrets(json_t *doc)
{
    json_t *keys = json_object_get(doc, "keys");

    for (size_t i = 0; i < json_array_size(keys); i++) {
        json_t *s = json_object_get(json_array_get(keys, i), "secret");
        if (json_is_string(s))
            secret_wipe((char *)json_string_value(s), json_string_length(s));
    }
}

/* Sets key[name] = value (stolen) only if the member is absent. */
static int set_default(json_t *key, const char *name, json_t *value)
{
    if (json_object_get(key, name)) {
        json_decref(value);
        return 0;
    }
    return json_object_set_new(key, name, value) < 0 ? -ENOMEM : 0;
}

/* Converts one v1 key in place; on a problem fills reterr and returns -EBADMSG. */
static int convert_v1_key(json_t *key, size_t i, char **reterr)
{
    char created[TIMEUTIL_RFC3339_LEN + 1], hex[SECRET_HEX_LEN + 1];
    uint8_t digest[SECRET_DIGEST_LEN];
    json_t *secret, *v, *entry, *list;
    int64_t t;
    int r;

    if (!json_is_object(key))
        return 0; /* keydoc_validate names it */
    secret = json_object_get(key, "secret");
    if (!secret)
        return fail_key(reterr, i, key, "secret: missing (version 1 key)");
    if (!json_is_string(secret) || json_string_length(secret) == 0)
        return fail_key(reterr, i, key, "secret: not a non-empty string (version 1 key)");
    if (json_object_get(key, "secrets"))
        return fail_key(reterr, i, key, "secrets: not allowed beside \"secret\" (version 1 key)");

    v = json_object_get(key, "created_at");
    if (!v)
        return fail_key(reterr, i, key, "created_at: missing");
    if (!json_is_string(v) || timeutil_parse_rfc3339(json_string_value(v), true, &t) < 0 ||
        timeutil_format_rfc3339(t, created) < 0)
        return fail_key(reterr, i, key, "created_at: not an RFC 3339 time");
    if (json_object_set_new(key, "created_at", json_string(created)) < 0)
        return -ENOMEM;

    /* The Python service may write "metadata": null for a key created without any. */
    if (json_is_null(json_object_get(key, "metadata")) &&
        json_object_set_new(key, "metadata", json_object()) < 0)
        return -ENOMEM;
    if ((r = set_default(key, "metadata", json_object())) < 0 ||
        (r = set_default(key, "scopes", json_array())) < 0 ||
        (r = set_default(key, "expires_at", json_null())) < 0 ||
        (r = set_default(key, "disabled", json_false())) < 0 ||
        (r = set_default(key, "rate_limit", json_null())) < 0)
        return r;

    secret_digest(json_string_value(secret), json_string_length(secret), digest);
    secret_hex(digest, hex);
    entry = json_pack("{s:s, s:s, s:n}", "sha256", hex, "created_at", created, "expires_at");
    list = entry ? json_pack("[o]", entry) : NULL;
    if (!list)
        return -ENOMEM;
    if (json_object_set_new(key, "secrets", list) < 0)
        return -ENOMEM;

    secret_wipe((char *)json_string_value(secret), json_string_length(secret));
    json_object_del(key, "secret");
    return 0;
}

/* Converts a v1 document to v2; *ret gets the new top object with "version" first. */
static int convert_v1(json_t *doc, json_t **ret, char **reterr)
{
    _cleanup_json_ json_t *top = NULL;
    json_t *keys = json_object_get(doc, "keys"), *v;
    const char *name;
    int r;

    if (!keys)
        return errors_fail(reterr, -EBADMSG, "$.keys: missing");
    if (!json_is_array(keys))
        return errors_fail(reterr, -EBADMSG, "$.keys: not an array");
    for (size_t i = 0; i < json_array_size(keys); i++) {
        r = convert_v1_key(json_array_get(keys, i), i, reterr);
        if (r < 0)
            return r;
    }

    /* jansson cannot insert at the front, so the top object is rebuilt in order. */
    top = json_object();
    if (!top || json_object_set_new(top, "version", json_integer(2)) < 0)
        return -ENOMEM;
    json_object_foreach(doc, name, v)
    {
        if (strcmp(name, "version") == 0)
            continue;
        if (json_object_set(top, name, v) < 0)
            return -ENOMEM;
    }
    *ret = TAKE_PTR(top);
    return 0;
}

int keydoc_parse(const char *buf, size_t len, json_t **ret_doc, bool *ret_was_v1, char **reterr)
{
    _cleanup_json_ json_t *doc = NULL;
    json_t *v;
    json_error_t jerr;
    bool v1;
    int r;

    if (!buf || len == 0)
        return errors_fail(reterr, -EBADMSG, "$: empty document");
    doc = json_util_loadb(buf, len, JSON_DECODE_ANY, &jerr);
    if (!doc)
        return errors_fail(reterr, -EBADMSG, "line %d column %d: %s", jerr.line, jerr.column,
                           jerr.text);
    if (!json_is_object(doc))
        return errors_fail(reterr, -EBADMSG, "$: not a JSON object");

    v = json_object_get(doc, "version");
    if (!v || (json_is_integer(v) && json_integer_value(v) == 1))
        v1 = true;
    else if (json_is_integer(v) && json_integer_value(v) == 2)
        v1 = false;
    else if (json_is_integer(v))
        return errors_fail(reterr, -EBADMSG, "$.version: unsupported version %" JSON_INTEGER_FORMAT,
                           json_integer_value(v));
    else
        return errors_fail(reterr, -EBADMSG, "$.version: not an integer");

    if (v1) {
        json_t *converted = NULL;

        r = convert_v1(doc, &converted, reterr);
        if (r < 0) {
            wipe_v1_secrets(doc);
            return r;
        }
        json_decref(doc);
        doc = converted;
    }

    r = keydoc_validate(doc, reterr);
    if (r < 0)
        return r;
    *ret_doc = TAKE_PTR(doc);
    if (ret_was_v1)
        *ret_was_v1 = v1;
    return 0;
}

json_t *keydoc_new(void)
{
    return json_pack("{s:i, s:[]}", "version", 2, "keys");
}

int keydoc_dump(const json_t *doc, char **ret_buf, size_t *ret_len)
{
    char *s, *t;
    size_t n;

    s = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!s)
        return -ENOMEM;
    n = strlen(s);
    t = realloc(s, n + 2);
    if (!t) {
        free(s);
        return -ENOMEM;
    }
    t[n] = '\n';
    t[n + 1] = '\0';
    *ret_buf = t;
    *ret_len = n + 1;
    return 0;
}

json_t *keydoc_find_key(const json_t *doc, const char *id, size_t *ret_index)
{
    json_t *keys = json_object_get(doc, "keys");

    if (!id)
        return NULL;
    for (size_t i = 0; i < json_array_size(keys); i++) {
        json_t *key = json_array_get(keys, i);
        const char *kid = json_string_value(json_object_get(key, "id"));
        if (kid && strcmp(kid, id) == 0) {
            if (ret_index)
                *ret_index = i;
            return key;
        }
    }
    return NULL;
}
