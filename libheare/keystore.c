/* keystore: the immutable in-memory index of a key document, and Verify over it. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ids.h"
#include "keystore.h"
#include "macro.h"
#include "secret.h"
#include "timeutil.h"

#define NEVER INT64_MAX
/* Slot value for "empty" in both hash tables; a slot otherwise holds an array index. */
#define EMPTY UINT32_MAX

typedef struct scope_ent {
    const char *s; /* points into the document */
    size_t len;
    bool wildcard; /* "a.b.*" or "*": matches by the prefix s[0..len-1) */
} scope_ent;

typedef struct secret_ent {
    uint8_t digest[SECRET_DIGEST_LEN];
    int64_t expires_at;
    uint32_t key;
} secret_ent;

struct keystore_key {
    const char *id, *name; /* point into the document */
    const json_t *obj;
    int64_t expires_at;
    bool disabled;
    const scope_ent *scopes;
    size_t n_scopes;
    const char *fields;
    size_t fields_off, fields_len;
};

struct keystore {
    json_t *doc;
    uint64_t generation;
    keystore_key *keys;
    size_t n_keys;
    secret_ent *secrets;
    size_t n_secrets;
    scope_ent *scopes;
    size_t n_scopes;
    /* Every key's pre-rendered verify fields, one after another. */
    char *arena;
    size_t arena_len, arena_cap;
    uint32_t *by_digest, *by_id; /* open addressing, power-of-two sizes, load <= 0.5 */
    size_t digest_mask, id_mask;
};

static const char *const code_names[_VERIFY_CODE_MAX] = {
    [VERIFY_VALID] = "VALID",
    [VERIFY_NOT_FOUND] = "NOT_FOUND",
    [VERIFY_MALFORMED] = "MALFORMED",
    [VERIFY_EXPIRED] = "EXPIRED",
    [VERIFY_DISABLED] = "DISABLED",
    [VERIFY_FORBIDDEN] = "FORBIDDEN",
    [VERIFY_RATE_LIMITED] = "RATE_LIMITED",
};

const char *keystore_code_name(verify_code c)
{
    if ((unsigned)c >= _VERIFY_CODE_MAX)
        return "UNKNOWN";
    return code_names[c];
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * UINT64_C(0x100000001b3);
    return h;
}

/* The digest is SHA-256 output, uniformly distributed already: its first bytes are the hash. */
static uint64_t digest_hash(const uint8_t d[SECRET_DIGEST_LEN])
{
    uint64_t h;
    memcpy(&h, d, sizeof(h));
    return h;
}

/* A table of at least 2n slots, all EMPTY. */
static uint32_t *table_new(size_t n, size_t *ret_mask)
{
    size_t size = 16;
    uint32_t *t;

    while (size / 2 < n) {
        if (size > SIZE_MAX / 2 / sizeof(uint32_t))
            return NULL;
        size *= 2;
    }
    t = malloc(size * sizeof(uint32_t));
    if (!t)
        return NULL;
    memset(t, 0xff, size * sizeof(uint32_t));
    *ret_mask = size - 1;
    return t;
}

_printf_(2, 3) static int fail(char **reterr, const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    int r;

    if (!reterr)
        return -EBADMSG;
    va_start(ap, fmt);
    r = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (r < 0)
        return -ENOMEM;
    *reterr = s;
    return -EBADMSG;
}

static int arena_put(const char *buf, size_t size, void *userdata)
{
    keystore *ks = userdata;

    if (size > ks->arena_cap - ks->arena_len) {
        size_t cap = ks->arena_cap ? ks->arena_cap : 4096;
        char *a;

        while (size > cap - ks->arena_len) {
            if (cap > SIZE_MAX / 2)
                return -1;
            cap *= 2;
        }
        a = realloc(ks->arena, cap);
        if (!a)
            return -1;
        ks->arena = a;
        ks->arena_cap = cap;
    }
    memcpy(ks->arena + ks->arena_len, buf, size);
    ks->arena_len += size;
    return 0;
}

static int arena_puts(keystore *ks, const char *s)
{
    return arena_put(s, strlen(s), ks);
}

static int arena_dump(keystore *ks, const json_t *v)
{
    return json_dump_callback(v, arena_put, ks, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* "key_id":…,"name":…,"metadata":…,"scopes":…,"expires_at":… (keystore.h). */
static int render_fields(keystore *ks, keystore_key *k)
{
    const json_t *o = k->obj;

    k->fields_off = ks->arena_len;
    if (arena_puts(ks, "\"key_id\":") < 0 || arena_dump(ks, json_object_get(o, "id")) < 0 ||
        arena_puts(ks, ",\"name\":") < 0 || arena_dump(ks, json_object_get(o, "name")) < 0 ||
        arena_puts(ks, ",\"metadata\":") < 0 ||
        arena_dump(ks, json_object_get(o, "metadata")) < 0 || arena_puts(ks, ",\"scopes\":") < 0 ||
        arena_dump(ks, json_object_get(o, "scopes")) < 0 ||
        arena_puts(ks, ",\"expires_at\":") < 0 ||
        arena_dump(ks, json_object_get(o, "expires_at")) < 0)
        return -ENOMEM;
    k->fields_len = ks->arena_len - k->fields_off;
    return 0;
}

/* NEVER for null, else the parsed time; -EINVAL for anything else. */
static int parse_expiry(const json_t *v, int64_t *ret)
{
    if (json_is_null(v)) {
        *ret = NEVER;
        return 0;
    }
    if (!json_is_string(v))
        return -EINVAL;
    return timeutil_parse_rfc3339(json_string_value(v), false, ret);
}

/* The keystore relies on keydoc_validate(), but never trusts it to the point of crashing:
 * anything it reads is type-checked again here. */
static int build_key(keystore *ks, size_t i, size_t *scope_pos, size_t *secret_pos, char **reterr)
{
    const json_t *o = json_array_get(json_object_get(ks->doc, "keys"), i);
    const json_t *scopes = json_object_get(o, "scopes"), *secrets = json_object_get(o, "secrets");
    const json_t *id = json_object_get(o, "id"), *name = json_object_get(o, "name");
    const json_t *disabled = json_object_get(o, "disabled");
    keystore_key *k = &ks->keys[i];
    size_t j;

    if (!json_is_string(id) || !ids_is_key_id(json_string_value(id)) || !json_is_string(name) ||
        !json_is_object(json_object_get(o, "metadata")) || !json_is_array(scopes) ||
        !json_is_boolean(disabled) || !json_is_array(secrets) || json_array_size(secrets) == 0 ||
        parse_expiry(json_object_get(o, "expires_at"), &k->expires_at) < 0)
        return fail(reterr, "keys[%zu]: not a valid key (document not validated)", i);

    k->obj = o;
    k->id = json_string_value(id);
    k->name = json_string_value(name);
    k->disabled = json_is_true(disabled);
    k->scopes = ks->scopes + *scope_pos;
    k->n_scopes = json_array_size(scopes);
    for (j = 0; j < k->n_scopes; j++) {
        const json_t *s = json_array_get(scopes, j);
        scope_ent *e = &ks->scopes[(*scope_pos)++];

        if (!json_is_string(s) || json_string_length(s) == 0)
            return fail(reterr, "keys[%zu] (%s): scopes[%zu]: not a non-empty string", i, k->id, j);
        e->s = json_string_value(s);
        e->len = json_string_length(s);
        e->wildcard = (e->len == 1 && e->s[0] == '*') ||
                      (e->len >= 2 && e->s[e->len - 2] == '.' && e->s[e->len - 1] == '*');
    }

    for (j = 0; j < json_array_size(secrets); j++) {
        const json_t *s = json_array_get(secrets, j);
        secret_ent *e = &ks->secrets[*secret_pos];

        if (secret_unhex(json_string_value(json_object_get(s, "sha256")), e->digest) < 0 ||
            parse_expiry(json_object_get(s, "expires_at"), &e->expires_at) < 0)
            return fail(reterr, "keys[%zu] (%s): secrets[%zu]: not a valid secret", i, k->id, j);
        e->key = (uint32_t)i;
        (*secret_pos)++;
    }
    return render_fields(ks, k);
}

static int index_key(keystore *ks, size_t i, char **reterr)
{
    const char *id = ks->keys[i].id;
    size_t slot = (size_t)fnv1a(id) & ks->id_mask;

    for (; ks->by_id[slot] != EMPTY; slot = (slot + 1) & ks->id_mask)
        if (strcmp(ks->keys[ks->by_id[slot]].id, id) == 0)
            return fail(reterr, "keys[%zu] (%s): duplicate id (also keys[%u])", i, id,
                        ks->by_id[slot]);
    ks->by_id[slot] = (uint32_t)i;
    return 0;
}

static int index_secret(keystore *ks, size_t i, char **reterr)
{
    const secret_ent *e = &ks->secrets[i];
    size_t slot = (size_t)digest_hash(e->digest) & ks->digest_mask;

    for (; ks->by_digest[slot] != EMPTY; slot = (slot + 1) & ks->digest_mask)
        if (secret_digest_equal(ks->secrets[ks->by_digest[slot]].digest, e->digest))
            return fail(reterr, "keys[%u] (%s): duplicate secret (also %s)", e->key,
                        ks->keys[e->key].id, ks->keys[ks->secrets[ks->by_digest[slot]].key].id);
    ks->by_digest[slot] = (uint32_t)i;
    return 0;
}

int keystore_new(json_t *doc, uint64_t generation, keystore **ret, char **reterr)
{
    _cleanup_(keystore_freep) keystore *ks = NULL;
    const json_t *keys = json_object_get(doc, "keys");
    size_t i, scope_pos = 0, secret_pos = 0;
    int r;

    if (!json_is_array(keys))
        return fail(reterr, "$.keys: not an array");

    ks = keystore_new_empty(generation);
    if (!ks)
        return -ENOMEM;
    ks->doc = json_incref(doc);

    ks->n_keys = json_array_size(keys);
    for (i = 0; i < ks->n_keys; i++) {
        const json_t *o = json_array_get(keys, i);
        ks->n_scopes += json_array_size(json_object_get(o, "scopes"));
        ks->n_secrets += json_array_size(json_object_get(o, "secrets"));
    }
    /* Indexes are 32-bit to keep the tables small; EMPTY is reserved. */
    if (ks->n_keys >= EMPTY || ks->n_secrets >= EMPTY)
        return -ENOMEM;

    ks->keys = calloc(ks->n_keys ? ks->n_keys : 1, sizeof(keystore_key));
    ks->secrets = calloc(ks->n_secrets ? ks->n_secrets : 1, sizeof(secret_ent));
    ks->scopes = calloc(ks->n_scopes ? ks->n_scopes : 1, sizeof(scope_ent));
    ks->by_id = table_new(ks->n_keys, &ks->id_mask);
    ks->by_digest = table_new(ks->n_secrets, &ks->digest_mask);
    if (!ks->keys || !ks->secrets || !ks->scopes || !ks->by_id || !ks->by_digest)
        return -ENOMEM;
    /* A rough guess at the rendered size saves most of the doublings. */
    if (ks->n_keys > 0 && ks->n_keys < SIZE_MAX / 256) {
        ks->arena = malloc(ks->n_keys * 160);
        if (!ks->arena)
            return -ENOMEM;
        ks->arena_cap = ks->n_keys * 160;
    }

    for (i = 0; i < ks->n_keys; i++) {
        r = build_key(ks, i, &scope_pos, &secret_pos, reterr);
        if (r < 0)
            return r;
        r = index_key(ks, i, reterr);
        if (r < 0)
            return r;
    }
    for (i = 0; i < ks->n_secrets; i++) {
        r = index_secret(ks, i, reterr);
        if (r < 0)
            return r;
    }
    /* The arena has stopped moving: turn offsets into pointers. */
    for (i = 0; i < ks->n_keys; i++)
        ks->keys[i].fields = ks->arena + ks->keys[i].fields_off;

    *ret = TAKE_PTR(ks);
    return 0;
}

keystore *keystore_new_empty(uint64_t generation)
{
    keystore *ks = calloc(1, sizeof(keystore));

    if (ks)
        ks->generation = generation;
    return ks;
}

keystore *keystore_free(keystore *ks)
{
    if (!ks)
        return NULL;
    free(ks->keys);
    free(ks->secrets);
    free(ks->scopes);
    free(ks->arena);
    free(ks->by_id);
    free(ks->by_digest);
    json_decref(ks->doc);
    free(ks);
    return NULL;
}

size_t keystore_size(const keystore *ks)
{
    return ks ? ks->n_keys : 0;
}

uint64_t keystore_generation(const keystore *ks)
{
    return ks ? ks->generation : 0;
}

const json_t *keystore_document(const keystore *ks)
{
    return ks ? ks->doc : NULL;
}

static const secret_ent *find_secret(const keystore *ks, const uint8_t d[SECRET_DIGEST_LEN])
{
    size_t slot;

    if (!ks || !ks->by_digest)
        return NULL;
    slot = (size_t)digest_hash(d) & ks->digest_mask;
    for (; ks->by_digest[slot] != EMPTY; slot = (slot + 1) & ks->digest_mask)
        if (secret_digest_equal(ks->secrets[ks->by_digest[slot]].digest, d))
            return &ks->secrets[ks->by_digest[slot]];
    return NULL;
}

verify_code keystore_verify(const keystore *ks, const char *key, size_t len, const char *scope,
                            int64_t now, const keystore_key **ret_key)
{
    uint8_t d[SECRET_DIGEST_LEN];
    const secret_ent *s;
    const keystore_key *k;
    verify_code code;

    if (ret_key)
        *ret_key = NULL;
    if (ids_check_presented(key, len) < 0)
        return VERIFY_MALFORMED;
    secret_digest(key, len, d);
    s = find_secret(ks, d);
    if (!s)
        return VERIFY_NOT_FOUND;

    k = &ks->keys[s->key];
    if (k->disabled)
        code = VERIFY_DISABLED;
    else if (now >= k->expires_at || now >= s->expires_at)
        code = VERIFY_EXPIRED;
    else if (scope && !keystore_scope_allows(k, scope))
        code = VERIFY_FORBIDDEN;
    else
        code = VERIFY_VALID;
    if (ret_key)
        *ret_key = k;
    return code;
}

const keystore_key *keystore_get(const keystore *ks, const char *id)
{
    size_t slot;

    if (!ks || !ks->by_id || !id)
        return NULL;
    slot = (size_t)fnv1a(id) & ks->id_mask;
    for (; ks->by_id[slot] != EMPTY; slot = (slot + 1) & ks->id_mask)
        if (strcmp(ks->keys[ks->by_id[slot]].id, id) == 0)
            return &ks->keys[ks->by_id[slot]];
    return NULL;
}

const keystore_key *keystore_at(const keystore *ks, size_t i)
{
    if (!ks || i >= ks->n_keys)
        return NULL;
    return &ks->keys[i];
}

const char *keystore_key_id(const keystore_key *k)
{
    return k->id;
}

const char *keystore_key_name(const keystore_key *k)
{
    return k->name;
}

const json_t *keystore_key_object(const keystore_key *k)
{
    return k->obj;
}

const char *keystore_key_verify_fields(const keystore_key *k, size_t *ret_len)
{
    if (ret_len)
        *ret_len = k->fields_len;
    return k->fields;
}

bool keystore_scope_allows(const keystore_key *k, const char *scope)
{
    if (!k || !scope)
        return false;
    for (size_t i = 0; i < k->n_scopes; i++) {
        const scope_ent *e = &k->scopes[i];

        if (e->wildcard ? strncmp(scope, e->s, e->len - 1) == 0 : strcmp(scope, e->s) == 0)
            return true;
    }
    return false;
}
