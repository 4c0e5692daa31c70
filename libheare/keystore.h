/* keystore: every key in memory, immutable once built, indexed by SHA-256 of each secret
 * and by key id; answers Verify (SPEC §7). Built off the serving path from a validated
 * document and published by the daemon with one RCU pointer swap; readers never lock. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

typedef struct keystore keystore;
typedef struct keystore_key keystore_key;

typedef enum verify_code {
    VERIFY_VALID,
    VERIFY_NOT_FOUND,
    VERIFY_MALFORMED,
    VERIFY_EXPIRED,
    VERIFY_DISABLED,
    VERIFY_FORBIDDEN,
    VERIFY_RATE_LIMITED,
    _VERIFY_CODE_MAX,
} verify_code;

/* "VALID", "NOT_FOUND", … Static string. */
const char *keystore_code_name(verify_code c);

/* Builds a keystore from a document that keydoc_validate() accepted. The keystore keeps
 * its own compact copy of what it needs, not the document. Returns 0, -ENOMEM, or -EBADMSG
 * with *reterr (duplicate id or secret digest, or a member too long to hold). */
int keystore_new(const json_t *doc, uint64_t generation, keystore **ret, char **reterr);

/* One key, as keystore_add() takes it: the members of a key object that keydoc_validate()
 * would accept, already checked by the caller. Text members are raw bytes, not JSON. */
typedef struct keystore_entry_secret {
    uint8_t digest[32];
    int64_t expires_at; /* INT64_MAX for never */
} keystore_entry_secret;

typedef struct keystore_text {
    char *s;
    size_t len, cap;
} keystore_text;

typedef struct keystore_entry {
    keystore_text id, name, created_at;
    keystore_text metadata;   /* compact JSON of the object, as keystore_text_put_value() writes */
    keystore_text scopes;     /* every scope followed by a NUL */
    size_t n_scopes;
    keystore_text expires_at; /* the RFC 3339 text; empty for null */
    int64_t expires_t;        /* INT64_MAX for null */
    bool disabled;
    uint32_t per_second, burst; /* both 0: no rate limit */
    keystore_entry_secret *secrets;
    size_t n_secrets, secrets_cap;
} keystore_entry;

/* Appends n bytes to t. Returns 0 or -ENOMEM. */
int keystore_text_put(keystore_text *t, const char *s, size_t n);
/* Appends s as a JSON string literal (only '"', '\\' and control bytes escaped). */
int keystore_text_put_string(keystore_text *t, const char *s, size_t n);
/* Appends the compact JSON of v; -ELOOP if nested deeper than jansson parses. */
int keystore_text_put_value(keystore_text *t, const json_t *v);
/* Empties every member of e for the next key, keeping the memory. */
void keystore_entry_reset(keystore_entry *e);
/* Frees what e holds. */
void keystore_entry_done(keystore_entry *e);
/* Appends a secret to e. Returns 0 or -ENOMEM. */
int keystore_entry_add_secret(keystore_entry *e, const uint8_t digest[32], int64_t expires_at);

/* Adds a key to a keystore under construction (from keystore_new_empty()). Returns 0,
 * -ENOMEM, or -EBADMSG with *reterr if a member is too long to hold. */
int keystore_add(keystore *ks, const keystore_entry *e, char **reterr);
/* Ends the construction: indexes ids and digests. Returns 0, -ENOMEM, or -EBADMSG with
 * *reterr on a duplicate id or secret. No keystore_add() after it. */
int keystore_seal(keystore *ks, char **reterr);

/* An empty keystore (no document loaded yet), to use as is or to keystore_add() to and then
 * keystore_seal(). NULL on OOM. */
keystore *keystore_new_empty(uint64_t generation);

/* Frees ks and everything it holds. NULL is fine. Returns NULL. */
keystore *keystore_free(keystore *ks);
static inline void keystore_freep(keystore **ks)
{
    keystore_free(*ks);
}

size_t keystore_size(const keystore *ks);
uint64_t keystore_generation(const keystore *ks);

/* Verifies a presented key (not NUL-terminated). MALFORMED per ids_check_presented()
 * without a lookup; otherwise SHA-256 lookup, then disabled, key expiry, secret expiry,
 * and scope (if scope is non-NULL) at time now. *ret_key (may be NULL) gets the key for
 * every code but NOT_FOUND and MALFORMED (borrowed from ks). Never allocates. */
verify_code keystore_verify(const keystore *ks, const char *key, size_t len, const char *scope,
                            int64_t now, const keystore_key **ret_key);

/* Key by id, or NULL (borrowed). */
const keystore_key *keystore_get(const keystore *ks, const char *id);
/* Key number i in document order, i < keystore_size() (borrowed). */
const keystore_key *keystore_at(const keystore *ks, size_t i);

/* The position of k (a key of ks) in document order: keystore_at(ks, i) == k. */
size_t keystore_key_index(const keystore *ks, const keystore_key *k);

const char *keystore_key_id(const keystore_key *k);
const char *keystore_key_name(const keystore_key *k);
const char *keystore_key_created_at(const keystore_key *k);
/* Scope number i < keystore_key_n_scopes(k). */
size_t keystore_key_n_scopes(const keystore_key *k);
const char *keystore_key_scope(const keystore_key *k, size_t i);
/* True and the two values if the key has a rate limit. */
bool keystore_key_rate_limit(const keystore_key *k, uint32_t *ret_per_second, uint32_t *ret_burst);
/* Writes the JSON members of a Verify reply, without braces:
 * "key_id":"…","name":"…","metadata":{…},"scopes":[…],"expires_at":null|"…"
 * into buf if they fit in cap bytes (no NUL is added); returns their length either way. */
size_t keystore_key_verify_fields(const keystore_key *k, char *buf, size_t cap);
/* The same members as a new JSON object. NULL on OOM. */
json_t *keystore_key_verify_object(const keystore_key *k);
/* The Key type of io.heare.AuthAdmin (SPEC §5) at time now, with "verifications" 0 and
 * "last_used_at" null for the caller to fill; the same object keyops_render_key() makes of
 * the key's document object. NULL on OOM. */
json_t *keystore_key_render(const keystore *ks, const keystore_key *k, int64_t now);

/* True if the key's scopes allow scope: exact match, or a key scope "a.b.*" covering any
 * scope that starts with "a.b.". */
bool keystore_scope_allows(const keystore_key *k, const char *scope);
