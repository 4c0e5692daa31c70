/* keystore: the immutable in-memory index of a key document, and Verify over it. */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "errors.h"
#include "json-util.h"
#include "ids.h"
#include "keystore.h"
#include "macro.h"
#include "secret.h"
#include "timeutil.h"

#define NEVER INT64_MAX
/* The digest table holds 64-bit slots: the upper half is a tag (32 more bits of the hash),
 * so most probes that miss never touch the secret they point at; the lower half is the
 * array index. An index never reaches EMPTY_INDEX, so EMPTY is never a real slot. */
#define EMPTY_INDEX UINT32_MAX
#define EMPTY UINT64_MAX
#define SLOT(tag, index) ((uint64_t)(tag) << 32 | (uint32_t)(index))
#define SLOT_TAG(s) ((uint32_t)((s) >> 32))
#define SLOT_INDEX(s) ((uint32_t)(s))

typedef struct secret_ent {
    uint8_t digest[SECRET_DIGEST_LEN];
    int64_t expires_at;
    uint32_t key;
} secret_ent;

/* A key is one block of text in the arena and 48 bytes of numbers. The block:
 *   id NUL  name-JSON metadata-JSON scopes-JSON expires_at-JSON  name NUL created_at NUL
 *   scope NUL … scope NUL
 * so a Verify reply is five copies, and keystore_key_id() and the others are C strings. */
struct keystore_key {
    const char *text; /* an arena offset until keystore_seal() */
    int64_t expires_at;
    uint32_t per_second, burst;
    uint32_t secrets_off;
    uint32_t metadata_len, scopes_json_len;
    uint16_t name_json_len, n_scopes, n_secrets;
    uint8_t id_len, expires_len;
    bool disabled;
};

struct keystore {
    uint64_t generation;
    keystore_key *keys;
    size_t n_keys, keys_cap;
    secret_ent *secrets;
    size_t n_secrets, secrets_cap;
    keystore_text arena;
    bool sealed;
    /* Open addressing, power-of-two sizes, load <= 0.5. by_digest slots carry a tag (see
     * SLOT); by_id slots are bare key indexes, as ids are looked up off the hot path. */
    uint64_t *by_digest;
    uint32_t *by_id;
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

/* The size of a table for n entries: a power of two at least 2n; 0 if too large. */
static size_t table_size(size_t n, size_t slot)
{
    size_t size = 16;

    while (size / 2 < n) {
        if (size > SIZE_MAX / 2 / slot)
            return 0;
        size *= 2;
    }
    return size;
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

int keystore_text_put(keystore_text *t, const char *s, size_t n)
{
    if (n == 0)
        return 0;
    if (grow((void **)&t->s, &t->cap, t->len + n, 1) < 0)
        return -ENOMEM;
    memcpy(t->s + t->len, s, n);
    t->len += n;
    return 0;
}

static int text_puts(keystore_text *t, const char *s)
{
    return keystore_text_put(t, s, strlen(s));
}

/* jansson keeps strings as valid UTF-8, so only '"', '\\' and control characters need
 * escaping; runs of other bytes are copied as they are. */
int keystore_text_put_string(keystore_text *t, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;

    if (keystore_text_put(t, "\"", 1) < 0)
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
        if (keystore_text_put(t, s + run, i - run) < 0 || keystore_text_put(t, esc, esc_len) < 0)
            return -ENOMEM;
        run = i + 1;
    }
    if (keystore_text_put(t, s + run, n - run) < 0 || keystore_text_put(t, "\"", 1) < 0)
        return -ENOMEM;
    return 0;
}

/* jansson's parser stops at this depth too; a deeper tree can only come from code. */
#define MAX_DEPTH 2048

static int text_put_real(const char *buf, size_t size, void *userdata)
{
    return keystore_text_put(userdata, buf, size) < 0 ? -1 : 0;
}

/* Written here rather than with json_dumps(), which costs a few mallocs and snprintf()s per
 * value: that alone would double the build time of a million keys. */
static int put_value(keystore_text *t, const json_t *v, unsigned depth)
{
    char num[32];
    size_t i;
    int r;

    if (depth > MAX_DEPTH)
        return -ELOOP;
    if (!v) /* an absent nullable member */
        return text_puts(t, "null");
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *name;
        json_t *member;
        bool first = true;

        if (text_puts(t, "{") < 0)
            return -ENOMEM;
        json_object_foreach((json_t *)v, name, member)
        {
            if ((!first && text_puts(t, ",") < 0) ||
                keystore_text_put_string(t, name, strlen(name)) < 0 || text_puts(t, ":") < 0)
                return -ENOMEM;
            r = put_value(t, member, depth + 1);
            if (r < 0)
                return r;
            first = false;
        }
        return text_puts(t, "}");
    }
    case JSON_ARRAY:
        if (text_puts(t, "[") < 0)
            return -ENOMEM;
        for (i = 0; i < json_array_size(v); i++) {
            if (i > 0 && text_puts(t, ",") < 0)
                return -ENOMEM;
            r = put_value(t, json_array_get(v, i), depth + 1);
            if (r < 0)
                return r;
        }
        return text_puts(t, "]");
    case JSON_STRING:
        return keystore_text_put_string(t, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return text_puts(t, num);
    case JSON_REAL:
        /* Rare in metadata; jansson knows how to print a double that reads back the same. */
        return json_dump_callback(v, text_put_real, t, JSON_COMPACT | JSON_ENCODE_ANY) < 0
                   ? -ENOMEM
                   : 0;
    case JSON_TRUE:
        return text_puts(t, "true");
    case JSON_FALSE:
        return text_puts(t, "false");
    case JSON_NULL:
        return text_puts(t, "null");
    }
    return -EINVAL;
}

int keystore_text_put_value(keystore_text *t, const json_t *v)
{
    return put_value(t, v, 0);
}

void keystore_entry_reset(keystore_entry *e)
{
    keystore_text *texts[] = {&e->id, &e->name, &e->created_at, &e->metadata, &e->scopes,
                              &e->expires_at};

    for (size_t i = 0; i < ELEMENTSOF(texts); i++)
        texts[i]->len = 0;
    e->n_scopes = 0;
    e->expires_t = NEVER;
    e->disabled = false;
    e->per_second = e->burst = 0;
    e->n_secrets = 0;
}

void keystore_entry_done(keystore_entry *e)
{
    free(e->id.s);
    free(e->name.s);
    free(e->created_at.s);
    free(e->metadata.s);
    free(e->scopes.s);
    free(e->expires_at.s);
    free(e->secrets);
    *e = (keystore_entry){0};
}

int keystore_entry_add_secret(keystore_entry *e, const uint8_t digest[32], int64_t expires_at)
{
    if (grow((void **)&e->secrets, &e->secrets_cap, e->n_secrets + 1, sizeof(*e->secrets)) < 0)
        return -ENOMEM;
    memcpy(e->secrets[e->n_secrets].digest, digest, SECRET_DIGEST_LEN);
    e->secrets[e->n_secrets].expires_at = expires_at;
    e->n_secrets++;
    return 0;
}

/* Lengths are kept in narrow fields to keep a key small. */
static bool fits(size_t n, size_t max)
{
    return n <= max;
}

int keystore_add(keystore *ks, const keystore_entry *e, char **reterr)
{
    keystore_text *a = &ks->arena;
    size_t start = a->len, i = ks->n_keys, mark;
    keystore_key k = {
        .expires_at = e->expires_t,
        .per_second = e->per_second,
        .burst = e->burst,
        .disabled = e->disabled,
        .id_len = (uint8_t)e->id.len,
        .n_scopes = (uint16_t)e->n_scopes,
        .n_secrets = (uint16_t)e->n_secrets,
        .secrets_off = (uint32_t)ks->n_secrets,
        .metadata_len = (uint32_t)e->metadata.len,
    };
    int r;

    assert(!ks->sealed);
    /* Indexes are 32-bit; EMPTY_INDEX is reserved. */
    if (ks->n_keys >= EMPTY_INDEX - 1 || e->n_secrets >= EMPTY_INDEX - ks->n_secrets)
        return -ENOMEM;
    if (!fits(e->id.len, UINT8_MAX) || !fits(e->n_scopes, UINT16_MAX) ||
        !fits(e->n_secrets, UINT16_MAX) || !fits(e->metadata.len, UINT32_MAX - 1))
        return errors_fail(reterr, -EBADMSG, "keys[%zu]: a member is too long to load", i);

    if (grow((void **)&ks->keys, &ks->keys_cap, ks->n_keys + 1, sizeof(keystore_key)) < 0 ||
        grow((void **)&ks->secrets, &ks->secrets_cap, ks->n_secrets + e->n_secrets,
             sizeof(secret_ent)) < 0)
        return -ENOMEM;

    if (keystore_text_put(a, e->id.s, e->id.len) < 0 || keystore_text_put(a, "", 1) < 0)
        goto oom;
    /* The Verify fields. */
    mark = a->len;
    if (keystore_text_put_string(a, e->name.s, e->name.len) < 0)
        goto oom;
    if (!fits(a->len - mark, UINT16_MAX))
        goto too_long;
    k.name_json_len = (uint16_t)(a->len - mark);
    if (keystore_text_put(a, e->metadata.s, e->metadata.len) < 0)
        goto oom;
    mark = a->len;
    if (keystore_text_put(a, "[", 1) < 0)
        goto oom;
    /* By offset: a key without scopes has no buffer, and NULL + 0 is undefined in C. */
    for (size_t at = 0; at < e->scopes.len; at += strlen(e->scopes.s + at) + 1)
        if ((at > 0 && keystore_text_put(a, ",", 1) < 0) ||
            keystore_text_put_string(a, e->scopes.s + at, strlen(e->scopes.s + at)) < 0)
            goto oom;
    if (keystore_text_put(a, "]", 1) < 0)
        goto oom;
    if (!fits(a->len - mark, UINT32_MAX - 1))
        goto too_long;
    k.scopes_json_len = (uint32_t)(a->len - mark);
    mark = a->len;
    r = e->expires_at.len ? keystore_text_put_string(a, e->expires_at.s, e->expires_at.len)
                          : keystore_text_put(a, "null", 4);
    if (r < 0)
        goto oom;
    if (!fits(a->len - mark, UINT8_MAX))
        goto too_long;
    k.expires_len = (uint8_t)(a->len - mark);
    /* The raw texts, each a C string; the scopes come with their NULs. */
    if (keystore_text_put(a, e->name.s, e->name.len) < 0 || keystore_text_put(a, "", 1) < 0 ||
        keystore_text_put(a, e->created_at.s, e->created_at.len) < 0 ||
        keystore_text_put(a, "", 1) < 0 || keystore_text_put(a, e->scopes.s, e->scopes.len) < 0)
        goto oom;
    k.text = (const char *)(uintptr_t)start; /* made a pointer by keystore_seal() */

    for (size_t j = 0; j < e->n_secrets; j++) {
        secret_ent *s = &ks->secrets[ks->n_secrets + j];
        memcpy(s->digest, e->secrets[j].digest, SECRET_DIGEST_LEN);
        s->expires_at = e->secrets[j].expires_at;
        s->key = (uint32_t)i;
    }
    ks->n_secrets += e->n_secrets;
    ks->keys[ks->n_keys++] = k;
    return 0;

too_long:
    a->len = start;
    return errors_fail(reterr, -EBADMSG, "keys[%zu]: a member is too long to load", i);
oom:
    a->len = start;
    return -ENOMEM;
}

static int index_key(keystore *ks, size_t i, char **reterr)
{
    const char *id = ks->keys[i].text;
    size_t slot = (size_t)fnv1a(id) & ks->id_mask;

    for (; ks->by_id[slot] != EMPTY_INDEX; slot = (slot + 1) & ks->id_mask)
        if (strcmp(ks->keys[ks->by_id[slot]].text, id) == 0)
            return errors_fail(reterr, -EBADMSG, "keys[%zu] (%s): duplicate id (also keys[%u])", i,
                               id, ks->by_id[slot]);
    ks->by_id[slot] = (uint32_t)i;
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
                               e->key, ks->keys[e->key].text, ks->keys[other->key].text);
    }
    ks->by_digest[slot] = SLOT(tag, i);
    return 0;
}

/* Gives back what the doubling left unused; a failure only keeps the larger block. */
static void shrink(void **array, size_t n, size_t elem)
{
    void *p = n ? realloc(*array, n * elem) : NULL;
    if (p)
        *array = p;
}

int keystore_seal(keystore *ks, char **reterr)
{
    size_t id_size = table_size(ks->n_keys, sizeof(uint32_t));
    size_t digest_size = table_size(ks->n_secrets, sizeof(uint64_t));
    int r;

    assert(!ks->sealed);
    if (!id_size || !digest_size)
        return -ENOMEM;
    shrink((void **)&ks->keys, ks->n_keys, sizeof(keystore_key));
    shrink((void **)&ks->secrets, ks->n_secrets, sizeof(secret_ent));
    shrink((void **)&ks->arena.s, ks->arena.len, 1);
    /* The arena has stopped moving: turn offsets into pointers. */
    for (size_t i = 0; i < ks->n_keys; i++)
        ks->keys[i].text = ks->arena.s + (uintptr_t)ks->keys[i].text;

    ks->by_id = malloc(id_size * sizeof(uint32_t));
    ks->by_digest = malloc(digest_size * sizeof(uint64_t));
    if (!ks->by_id || !ks->by_digest)
        return -ENOMEM;
    memset(ks->by_id, 0xff, id_size * sizeof(uint32_t));
    memset(ks->by_digest, 0xff, digest_size * sizeof(uint64_t));
    ks->id_mask = id_size - 1;
    ks->digest_mask = digest_size - 1;
    for (size_t i = 0; i < ks->n_keys; i++) {
        r = index_key(ks, i, reterr);
        if (r < 0)
            return r;
    }
    for (size_t i = 0; i < ks->n_secrets; i++) {
        r = index_secret(ks, i, reterr);
        if (r < 0)
            return r;
    }
    ks->sealed = true;
    return 0;
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

static int put_json_string(keystore_text *t, const json_t *v)
{
    return keystore_text_put(t, json_string_value(v), json_string_length(v));
}

/* The keystore relies on keydoc_validate(), but never trusts it to the point of crashing:
 * anything it reads is type-checked again here. */
static int entry_from_json(keystore_entry *e, const json_t *o, size_t i, char **reterr)
{
    const json_t *scopes = json_object_get(o, "scopes"), *secrets = json_object_get(o, "secrets");
    const json_t *id = json_object_get(o, "id"), *name = json_object_get(o, "name");
    const json_t *created = json_object_get(o, "created_at");
    const json_t *disabled = json_object_get(o, "disabled");
    const json_t *metadata = json_object_get(o, "metadata");
    const json_t *expires = json_object_get(o, "expires_at");
    const json_t *rl = json_object_get(o, "rate_limit");
    size_t j;
    int r;

    keystore_entry_reset(e);
    if (!json_is_string(id) || !ids_is_key_id(json_string_value(id)) || !json_is_string(name) ||
        !json_is_string(created) || !json_is_object(metadata) || !json_is_array(scopes) ||
        !json_is_boolean(disabled) || json_array_size(secrets) == 0 ||
        parse_expiry(expires, &e->expires_t) < 0)
        return errors_fail(reterr, -EBADMSG, "keys[%zu]: not a valid key (document not validated)",
                           i);
    if (put_json_string(&e->id, id) < 0 || put_json_string(&e->name, name) < 0 ||
        put_json_string(&e->created_at, created) < 0 ||
        (json_is_string(expires) && put_json_string(&e->expires_at, expires) < 0))
        return -ENOMEM;
    e->disabled = json_is_true(disabled);
    if (json_is_object(rl)) {
        e->per_second = (uint32_t)json_integer_value(json_object_get(rl, "per_second"));
        e->burst = (uint32_t)json_integer_value(json_object_get(rl, "burst"));
    }
    r = put_value(&e->metadata, metadata, 0);
    if (r == -ELOOP)
        return errors_fail(reterr, -EBADMSG, "keys[%zu] (%s): metadata: nested too deeply", i,
                           json_string_value(id));
    if (r < 0)
        return r;
    for (j = 0; j < json_array_size(scopes); j++) {
        const json_t *s = json_array_get(scopes, j);

        if (!json_is_string(s) || json_string_length(s) == 0 ||
            strlen(json_string_value(s)) != json_string_length(s))
            return errors_fail(reterr, -EBADMSG,
                               "keys[%zu] (%s): scopes[%zu]: not a non-empty string", i,
                               json_string_value(id), j);
        if (put_json_string(&e->scopes, s) < 0 || keystore_text_put(&e->scopes, "", 1) < 0)
            return -ENOMEM;
        e->n_scopes++;
    }
    for (j = 0; j < json_array_size(secrets); j++) {
        const json_t *s = json_array_get(secrets, j);
        uint8_t d[SECRET_DIGEST_LEN];
        int64_t exp;

        if (secret_unhex(json_string_value(json_object_get(s, "sha256")), d) < 0 ||
            parse_expiry(json_object_get(s, "expires_at"), &exp) < 0)
            return errors_fail(reterr, -EBADMSG, "keys[%zu] (%s): secrets[%zu]: not a valid secret",
                               i, json_string_value(id), j);
        if (keystore_entry_add_secret(e, d, exp) < 0)
            return -ENOMEM;
    }
    return 0;
}

int keystore_new(const json_t *doc, uint64_t generation, keystore **ret, char **reterr)
{
    _cleanup_(keystore_freep) keystore *ks = NULL;
    _cleanup_(keystore_entry_done) keystore_entry e = {0};
    const json_t *keys = json_object_get(doc, "keys");
    size_t n = json_array_size(keys);
    int r;

    if (!json_is_array(keys))
        return errors_fail(reterr, -EBADMSG, "$.keys: not an array");
    ks = keystore_new_empty(generation);
    if (!ks)
        return -ENOMEM;
    /* Room for all keys at once saves the doublings. */
    if (grow((void **)&ks->keys, &ks->keys_cap, n, sizeof(keystore_key)) < 0 ||
        grow((void **)&ks->secrets, &ks->secrets_cap, n, sizeof(secret_ent)) < 0)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        r = entry_from_json(&e, json_array_get(keys, i), i, reterr);
        if (r < 0)
            return r;
        r = keystore_add(ks, &e, reterr);
        if (r < 0)
            return r;
    }
    r = keystore_seal(ks, reterr);
    if (r < 0)
        return r;
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
    free(ks->arena.s);
    free(ks->by_id);
    free(ks->by_digest);
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

    if (!ks || !ks->by_id || !id)
        return NULL;
    slot = (size_t)fnv1a(id) & ks->id_mask;
    for (; ks->by_id[slot] != EMPTY_INDEX; slot = (slot + 1) & ks->id_mask) {
        const keystore_key *k = &ks->keys[ks->by_id[slot]];

        if (strcmp(k->text, id) == 0)
            return k;
    }
    return NULL;
}

const keystore_key *keystore_at(const keystore *ks, size_t i)
{
    if (!ks || !ks->sealed || i >= ks->n_keys)
        return NULL;
    return &ks->keys[i];
}

size_t keystore_key_index(const keystore *ks, const keystore_key *k)
{
    return (size_t)(k - ks->keys);
}

const char *keystore_key_id(const keystore_key *k)
{
    return k->text;
}

/* The Verify fields' JSON, after the id. */
static const char *fields_json(const keystore_key *k)
{
    return k->text + k->id_len + 1;
}

const char *keystore_key_name(const keystore_key *k)
{
    return fields_json(k) + k->name_json_len + k->metadata_len + k->scopes_json_len +
           k->expires_len;
}

const char *keystore_key_created_at(const keystore_key *k)
{
    const char *name = keystore_key_name(k);
    return name + strlen(name) + 1;
}

static const char *scopes_start(const keystore_key *k)
{
    const char *created = keystore_key_created_at(k);
    return created + strlen(created) + 1;
}

size_t keystore_key_n_scopes(const keystore_key *k)
{
    return k->n_scopes;
}

const char *keystore_key_scope(const keystore_key *k, size_t i)
{
    const char *s = scopes_start(k);

    if (i >= k->n_scopes)
        return NULL;
    while (i-- > 0)
        s += strlen(s) + 1;
    return s;
}

bool keystore_key_rate_limit(const keystore_key *k, uint32_t *ret_per_second, uint32_t *ret_burst)
{
    *ret_per_second = k->per_second;
    *ret_burst = k->burst;
    return k->per_second > 0;
}

static size_t put(char *buf, size_t cap, size_t off, const char *s, size_t n)
{
    if (buf && off + n <= cap)
        memcpy(buf + off, s, n);
    return off + n;
}

size_t keystore_key_verify_fields(const keystore_key *k, char *buf, size_t cap)
{
    const char *json = fields_json(k);
    size_t off = 0, total;

    total = sizeof("\"key_id\":\"\",\"name\":,\"metadata\":,\"scopes\":,\"expires_at\":") - 1 +
            k->id_len + k->name_json_len + k->metadata_len + k->scopes_json_len + k->expires_len;
    if (!buf || total > cap)
        return total;
    off = put(buf, cap, off, "\"key_id\":\"", 10);
    off = put(buf, cap, off, k->text, k->id_len);
    off = put(buf, cap, off, "\",\"name\":", 9);
    off = put(buf, cap, off, json, k->name_json_len);
    json += k->name_json_len;
    off = put(buf, cap, off, ",\"metadata\":", 12);
    off = put(buf, cap, off, json, k->metadata_len);
    json += k->metadata_len;
    off = put(buf, cap, off, ",\"scopes\":", 10);
    off = put(buf, cap, off, json, k->scopes_json_len);
    json += k->scopes_json_len;
    off = put(buf, cap, off, ",\"expires_at\":", 14);
    off = put(buf, cap, off, json, k->expires_len);
    assert(off == total);
    return off;
}

json_t *keystore_key_verify_object(const keystore_key *k)
{
    size_t len = keystore_key_verify_fields(k, NULL, 0);
    _cleanup_free_ char *text = malloc(len + 2);

    /* The fields are JSON written by this file: reading them back gives the members as the
     * document had them, without keeping a second copy. */
    if (!text)
        return NULL;
    text[0] = '{';
    keystore_key_verify_fields(k, text + 1, len);
    text[len + 1] = '}';
    return json_loadb(text, len + 2, 0, NULL);
}

json_t *keystore_key_render(const keystore *ks, const keystore_key *k, int64_t now)
{
    _cleanup_json_ json_t *fields = keystore_key_verify_object(k);
    json_int_t live = 0;
    json_t *rl;

    if (!fields)
        return NULL;
    for (size_t j = 0; j < k->n_secrets; j++)
        if (ks->secrets[k->secrets_off + j].expires_at > now)
            live++;
    rl = k->per_second ? json_pack("{s:I, s:I}", "per_second", (json_int_t)k->per_second,
                                   "burst", (json_int_t)k->burst)
                       : json_null();
    /* json_pack with "o" consumes each value and fails on a NULL (OOM) one. */
    return json_pack("{s:s, s:O, s:s, s:O, s:O, s:O, s:b, s:o, s:I, s:I, s:n}", "id", k->text,
                     "name", json_object_get(fields, "name"), "created_at",
                     keystore_key_created_at(k), "metadata", json_object_get(fields, "metadata"),
                     "scopes", json_object_get(fields, "scopes"), "expires_at",
                     json_object_get(fields, "expires_at"), "disabled", k->disabled, "rate_limit",
                     rl, "secrets", live, "verifications", (json_int_t)0, "last_used_at");
}

bool keystore_scope_allows(const keystore_key *k, const char *scope)
{
    const char *s;

    if (!k || !scope)
        return false;
    s = scopes_start(k);
    for (size_t i = 0; i < k->n_scopes; i++) {
        size_t len = strlen(s);
        bool wildcard = (len == 1 && s[0] == '*') ||
                        (len >= 2 && s[len - 2] == '.' && s[len - 1] == '*');

        if (wildcard ? strncmp(scope, s, len - 1) == 0 : strcmp(scope, s) == 0)
            return true;
        s += len + 1;
    }
    return false;
}
