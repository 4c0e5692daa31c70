/* keystore: the immutable in-memory index of a key document, and Verify over it. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "errors.h"
#include "ids.h"
#include "keystore.h"
#include "macro.h"
#include "secret.h"
#include "timeutil.h"

#define NEVER INT64_MAX
/* Both hash tables hold 64-bit slots: the upper half is a tag (32 more bits of the hash),
 * so most probes that miss never touch the key or secret they point at; the lower half is
 * the array index. An index never reaches EMPTY_INDEX, so EMPTY is never a real slot. */
#define EMPTY_INDEX UINT32_MAX
#define EMPTY UINT64_MAX
#define SLOT(tag, index) ((uint64_t)(tag) << 32 | (uint32_t)(index))
#define SLOT_TAG(s) ((uint32_t)((s) >> 32))
#define SLOT_INDEX(s) ((uint32_t)(s))

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
    size_t name_len;
    const json_t *obj;
    int64_t expires_at;
    bool disabled;
    const scope_ent *scopes;
    size_t scopes_off, n_scopes;
    const char *fields;
    size_t fields_off, fields_len;
};

struct keystore {
    json_t *doc;
    uint64_t generation;
    keystore_key *keys;
    size_t n_keys;
    secret_ent *secrets;
    size_t n_secrets, secrets_cap;
    scope_ent *scopes;
    size_t n_scopes, scopes_cap;
    /* Every key's pre-rendered verify fields, one after another. */
    char *arena;
    size_t arena_len, arena_cap;
    uint64_t *by_digest, *by_id; /* open addressing, power-of-two sizes, load <= 0.5 */
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

/* The digest is SHA-256 output, uniformly distributed already: its first bytes are the hash,
 * the next four the tag. */
static uint64_t digest_hash(const uint8_t d[SECRET_DIGEST_LEN])
{
    uint64_t h;
    memcpy(&h, d, sizeof(h));
    return h;
}

static uint32_t digest_tag(const uint8_t d[SECRET_DIGEST_LEN])
{
    uint32_t t;
    memcpy(&t, d + sizeof(uint64_t), sizeof(t));
    return t;
}

/* A table of at least 2n slots, all EMPTY. */
static uint64_t *table_new(size_t n, size_t *ret_mask)
{
    size_t size = 16;
    uint64_t *t;

    while (size / 2 < n) {
        if (size > SIZE_MAX / 2 / sizeof(uint64_t))
            return NULL;
        size *= 2;
    }
    t = malloc(size * sizeof(uint64_t));
    if (!t)
        return NULL;
    memset(t, 0xff, size * sizeof(uint64_t));
    *ret_mask = size - 1;
    return t;
}

/* Makes room for n more bytes in the arena. */
static int arena_reserve(keystore *ks, size_t n)
{
    size_t cap;
    char *a;

    if (n <= ks->arena_cap - ks->arena_len)
        return 0;
    cap = ks->arena_cap ? ks->arena_cap : 4096;
    while (n > cap - ks->arena_len) {
        if (cap > SIZE_MAX / 2)
            return -ENOMEM;
        cap *= 2;
    }
    a = realloc(ks->arena, cap);
    if (!a)
        return -ENOMEM;
    ks->arena = a;
    ks->arena_cap = cap;
    return 0;
}

static int arena_put(const char *buf, size_t size, void *userdata)
{
    keystore *ks = userdata;

    if (arena_reserve(ks, size) < 0)
        return -1;
    memcpy(ks->arena + ks->arena_len, buf, size);
    ks->arena_len += size;
    return 0;
}

static int arena_puts(keystore *ks, const char *s)
{
    return arena_put(s, strlen(s), ks) < 0 ? -ENOMEM : 0;
}

/* A JSON string literal. jansson keeps strings as valid UTF-8, so only '"', '\\' and
 * control characters need escaping; runs of other bytes are copied as they are. */
static int put_string(keystore *ks, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;

    if (arena_put("\"", 1, ks) < 0)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6] = {'\\', 'u', '0', '0', '0', '0'};
        size_t esc_len = 6;

        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        if (c == '"' || c == '\\' || c == '\n' || c == '\t' || c == '\r') {
            esc[1] = c == '\n' ? 'n' : c == '\t' ? 't' : c == '\r' ? 'r' : (char)c;
            esc_len = 2;
        } else {
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 0xf];
        }
        if (arena_put(s + run, i - run, ks) < 0 || arena_put(esc, esc_len, ks) < 0)
            return -ENOMEM;
        run = i + 1;
    }
    if (arena_put(s + run, n - run, ks) < 0 || arena_put("\"", 1, ks) < 0)
        return -ENOMEM;
    return 0;
}

/* jansson's parser stops at this depth too; a deeper tree can only come from code. */
#define MAX_DEPTH 2048

/* Compact JSON for v. Written here rather than with json_dumps(), which costs a few mallocs
 * and snprintf()s per value: that alone would double the build time of a million keys. */
static int put_value(keystore *ks, const json_t *v, unsigned depth)
{
    char num[32];
    size_t i;
    int r;

    if (depth > MAX_DEPTH)
        return -ELOOP;
    if (!v) /* an absent nullable member */
        return arena_puts(ks, "null");
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *name;
        json_t *member;
        bool first = true;

        if (arena_puts(ks, "{") < 0)
            return -ENOMEM;
        json_object_foreach((json_t *)v, name, member)
        {
            if ((!first && arena_puts(ks, ",") < 0) || put_string(ks, name, strlen(name)) < 0 ||
                arena_puts(ks, ":") < 0)
                return -ENOMEM;
            r = put_value(ks, member, depth + 1);
            if (r < 0)
                return r;
            first = false;
        }
        return arena_puts(ks, "}");
    }
    case JSON_ARRAY:
        if (arena_puts(ks, "[") < 0)
            return -ENOMEM;
        for (i = 0; i < json_array_size(v); i++) {
            if (i > 0 && arena_puts(ks, ",") < 0)
                return -ENOMEM;
            r = put_value(ks, json_array_get(v, i), depth + 1);
            if (r < 0)
                return r;
        }
        return arena_puts(ks, "]");
    case JSON_STRING:
        return put_string(ks, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return arena_puts(ks, num);
    case JSON_REAL:
        /* Rare in metadata; jansson knows how to print a double that reads back the same. */
        return json_dump_callback(v, arena_put, ks, JSON_COMPACT | JSON_ENCODE_ANY) < 0 ? -ENOMEM
                                                                                        : 0;
    case JSON_TRUE:
        return arena_puts(ks, "true");
    case JSON_FALSE:
        return arena_puts(ks, "false");
    case JSON_NULL:
        return arena_puts(ks, "null");
    }
    return -EINVAL;
}

/* "key_id":…,"name":…,"metadata":…,"scopes":…,"expires_at":… (keystore.h). */
static int render_fields(keystore *ks, keystore_key *k, const json_t *metadata,
                         const json_t *scopes, const json_t *expires)
{
    int r;

    k->fields_off = ks->arena_len;
    if (arena_puts(ks, "\"key_id\":") < 0 || put_string(ks, k->id, strlen(k->id)) < 0 ||
        arena_puts(ks, ",\"name\":") < 0 || put_string(ks, k->name, k->name_len) < 0 ||
        arena_puts(ks, ",\"metadata\":") < 0)
        return -ENOMEM;
    r = put_value(ks, metadata, 0);
    if (r < 0)
        return r;
    if (arena_puts(ks, ",\"scopes\":") < 0)
        return -ENOMEM;
    r = put_value(ks, scopes, 0);
    if (r < 0)
        return r;
    if (arena_puts(ks, ",\"expires_at\":") < 0)
        return -ENOMEM;
    r = put_value(ks, expires, 0);
    if (r < 0)
        return r;
    k->fields_len = ks->arena_len - k->fields_off;
    /* NUL-terminated as well, for callers that print it with %s. */
    return arena_put("", 1, ks) < 0 ? -ENOMEM : 0;
}

/* NEVER for null or absent, else the parsed time; -EINVAL for anything else. */
static int parse_expiry(const json_t *v, int64_t *ret)
{
    if (!v || json_is_null(v)) {
        *ret = NEVER;
        return 0;
    }
    if (!json_is_string(v))
        return -EINVAL;
    return timeutil_parse_rfc3339(json_string_value(v), false, ret);
}

/* Grows *array (of elem-sized entries, *cap of them) to hold at least need entries. */
static int grow(void **array, size_t *cap, size_t need, size_t elem)
{
    size_t n = *cap ? *cap : 64;
    void *p;

    if (need <= *cap)
        return 0;
    while (n < need) {
        if (n > SIZE_MAX / 2 / elem)
            return -ENOMEM;
        n *= 2;
    }
    p = realloc(*array, n * elem);
    if (!p)
        return -ENOMEM;
    *array = p;
    *cap = n;
    return 0;
}

/* The keystore relies on keydoc_validate(), but never trusts it to the point of crashing:
 * anything it reads is type-checked again here. One pass over the document: with a million
 * keys it does not fit any cache, and every extra pass costs as much as the build. */
static int build_key(keystore *ks, const json_t *o, size_t i, char **reterr)
{
    const json_t *scopes = json_object_get(o, "scopes"), *secrets = json_object_get(o, "secrets");
    const json_t *id = json_object_get(o, "id"), *name = json_object_get(o, "name");
    const json_t *disabled = json_object_get(o, "disabled");
    const json_t *metadata = json_object_get(o, "metadata");
    const json_t *expires = json_object_get(o, "expires_at");
    keystore_key *k = &ks->keys[i];
    size_t j, n_scopes = json_array_size(scopes), n_secrets = json_array_size(secrets);
    int r;

    if (!json_is_string(id) || !ids_is_key_id(json_string_value(id)) || !json_is_string(name) ||
        !json_is_object(metadata) || !json_is_array(scopes) || !json_is_boolean(disabled) ||
        n_secrets == 0 || parse_expiry(expires, &k->expires_at) < 0)
        return errors_fail(reterr, -EBADMSG, "keys[%zu]: not a valid key (document not validated)",
                           i);

    k->obj = o;
    k->id = json_string_value(id);
    k->name = json_string_value(name);
    k->name_len = json_string_length(name);
    k->disabled = json_is_true(disabled);

    if (grow((void **)&ks->scopes, &ks->scopes_cap, ks->n_scopes + n_scopes, sizeof(scope_ent)) < 0)
        return -ENOMEM;
    k->scopes_off = ks->n_scopes;
    k->n_scopes = n_scopes;
    for (j = 0; j < n_scopes; j++) {
        const json_t *s = json_array_get(scopes, j);
        scope_ent *e = &ks->scopes[ks->n_scopes++];

        if (!json_is_string(s) || json_string_length(s) == 0)
            return errors_fail(reterr, -EBADMSG,
                               "keys[%zu] (%s): scopes[%zu]: not a non-empty string", i, k->id, j);
        e->s = json_string_value(s);
        e->len = json_string_length(s);
        e->wildcard = (e->len == 1 && e->s[0] == '*') ||
                      (e->len >= 2 && e->s[e->len - 2] == '.' && e->s[e->len - 1] == '*');
    }

    /* Indexes are 32-bit to keep the tables small; EMPTY_INDEX is reserved. */
    if (n_secrets >= EMPTY_INDEX - ks->n_secrets)
        return -ENOMEM;
    if (grow((void **)&ks->secrets, &ks->secrets_cap, ks->n_secrets + n_secrets,
             sizeof(secret_ent)) < 0)
        return -ENOMEM;
    for (j = 0; j < n_secrets; j++) {
        const json_t *s = json_array_get(secrets, j);
        secret_ent *e = &ks->secrets[ks->n_secrets];

        if (secret_unhex(json_string_value(json_object_get(s, "sha256")), e->digest) < 0 ||
            parse_expiry(json_object_get(s, "expires_at"), &e->expires_at) < 0)
            return errors_fail(reterr, -EBADMSG, "keys[%zu] (%s): secrets[%zu]: not a valid secret",
                               i, k->id, j);
        e->key = (uint32_t)i;
        ks->n_secrets++;
    }

    r = render_fields(ks, k, metadata, scopes, expires);
    if (r == -ELOOP)
        return errors_fail(reterr, -EBADMSG, "keys[%zu] (%s): metadata: nested too deeply", i,
                           k->id);
    return r;
}

static int index_key(keystore *ks, size_t i, char **reterr)
{
    const char *id = ks->keys[i].id;
    uint64_t h = fnv1a(id);
    size_t slot = (size_t)h & ks->id_mask;

    for (; ks->by_id[slot] != EMPTY; slot = (slot + 1) & ks->id_mask)
        if (SLOT_TAG(ks->by_id[slot]) == (uint32_t)(h >> 32) &&
            strcmp(ks->keys[SLOT_INDEX(ks->by_id[slot])].id, id) == 0)
            return errors_fail(reterr, -EBADMSG, "keys[%zu] (%s): duplicate id (also keys[%u])", i,
                               id, SLOT_INDEX(ks->by_id[slot]));
    ks->by_id[slot] = SLOT(h >> 32, i);
    return 0;
}

static int index_secret(keystore *ks, size_t i, char **reterr)
{
    const secret_ent *e = &ks->secrets[i];
    uint32_t tag = digest_tag(e->digest);
    size_t slot = (size_t)digest_hash(e->digest) & ks->digest_mask;

    for (; ks->by_digest[slot] != EMPTY; slot = (slot + 1) & ks->digest_mask) {
        const secret_ent *other = &ks->secrets[SLOT_INDEX(ks->by_digest[slot])];

        if (SLOT_TAG(ks->by_digest[slot]) == tag && secret_digest_equal(other->digest, e->digest))
            return errors_fail(reterr, -EBADMSG, "keys[%u] (%s): duplicate secret (also %s)",
                               e->key, ks->keys[e->key].id, ks->keys[other->key].id);
    }
    ks->by_digest[slot] = SLOT(tag, i);
    return 0;
}

int keystore_new(json_t *doc, uint64_t generation, keystore **ret, char **reterr)
{
    _cleanup_(keystore_freep) keystore *ks = NULL;
    const json_t *keys = json_object_get(doc, "keys");
    size_t i;
    int r;

    if (!json_is_array(keys))
        return errors_fail(reterr, -EBADMSG, "$.keys: not an array");

    ks = keystore_new_empty(generation);
    if (!ks)
        return -ENOMEM;
    ks->doc = json_incref(doc);

    ks->n_keys = json_array_size(keys);
    if (ks->n_keys >= EMPTY_INDEX)
        return -ENOMEM;
    ks->keys = calloc(ks->n_keys ? ks->n_keys : 1, sizeof(keystore_key));
    ks->by_id = table_new(ks->n_keys, &ks->id_mask);
    if (!ks->keys || !ks->by_id)
        return -ENOMEM;
    /* Rough guesses at the totals save most of the doublings. */
    if (grow((void **)&ks->secrets, &ks->secrets_cap, ks->n_keys, sizeof(secret_ent)) < 0 ||
        grow((void **)&ks->scopes, &ks->scopes_cap, ks->n_keys, sizeof(scope_ent)) < 0 ||
        (ks->n_keys < SIZE_MAX / 256 && arena_reserve(ks, ks->n_keys * 128) < 0))
        return -ENOMEM;

    for (i = 0; i < ks->n_keys; i++) {
        r = build_key(ks, json_array_get(keys, i), i, reterr);
        if (r < 0)
            return r;
        r = index_key(ks, i, reterr);
        if (r < 0)
            return r;
    }

    ks->by_digest = table_new(ks->n_secrets, &ks->digest_mask);
    if (!ks->by_digest)
        return -ENOMEM;
    for (i = 0; i < ks->n_secrets; i++) {
        r = index_secret(ks, i, reterr);
        if (r < 0)
            return r;
    }
    /* The arrays have stopped moving: turn offsets into pointers. */
    for (i = 0; i < ks->n_keys; i++) {
        ks->keys[i].fields = ks->arena + ks->keys[i].fields_off;
        ks->keys[i].scopes = ks->scopes + ks->keys[i].scopes_off;
    }

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
    uint32_t tag = digest_tag(d);
    size_t slot;

    if (!ks || !ks->by_digest)
        return NULL;
    slot = (size_t)digest_hash(d) & ks->digest_mask;
    /* The tag test is not constant-time, like the slot choice: both only tell which bits
     * of SHA-256(presented key) some stored digest shares, which says nothing about a
     * secret. The comparison that decides is the constant-time one. */
    for (; ks->by_digest[slot] != EMPTY; slot = (slot + 1) & ks->digest_mask) {
        const secret_ent *e = &ks->secrets[SLOT_INDEX(ks->by_digest[slot])];

        if (SLOT_TAG(ks->by_digest[slot]) == tag && secret_digest_equal(e->digest, d))
            return e;
    }
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
    /* Length and bytes first; the checksum only decides between MALFORMED and NOT_FOUND,
     * so it is computed on a miss, not for every key that is found. */
    if (ids_check_shape(key, len) < 0)
        return VERIFY_MALFORMED;
    secret_digest(key, len, d);
    s = find_secret(ks, d);
    if (!s)
        return ids_check_presented(key, len) < 0 ? VERIFY_MALFORMED : VERIFY_NOT_FOUND;

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

    uint64_t h;

    if (!ks || !ks->by_id || !id)
        return NULL;
    h = fnv1a(id);
    slot = (size_t)h & ks->id_mask;
    for (; ks->by_id[slot] != EMPTY; slot = (slot + 1) & ks->id_mask) {
        const keystore_key *k = &ks->keys[SLOT_INDEX(ks->by_id[slot])];

        if (SLOT_TAG(ks->by_id[slot]) == (uint32_t)(h >> 32) && strcmp(k->id, id) == 0)
            return k;
    }
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

size_t keystore_key_index(const keystore *ks, const keystore_key *k)
{
    return (size_t)(k - ks->keys);
}
