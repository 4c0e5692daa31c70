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

/* Builds a keystore from a document that keydoc_validate() accepted. The keystore takes a
 * reference on doc and never modifies it. Returns 0, -ENOMEM, or -EBADMSG with *reterr
 * (duplicate id or secret digest). */
int keystore_new(json_t *doc, uint64_t generation, keystore **ret, char **reterr);

/* An empty keystore (no document loaded yet). NULL on OOM. */
keystore *keystore_new_empty(uint64_t generation);

/* Frees ks and everything it holds. NULL is fine. Returns NULL. */
keystore *keystore_free(keystore *ks);
static inline void keystore_freep(keystore **ks)
{
    keystore_free(*ks);
}

size_t keystore_size(const keystore *ks);
uint64_t keystore_generation(const keystore *ks);
/* The document the keystore was built from (borrowed; do not modify). */
const json_t *keystore_document(const keystore *ks);

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
/* The key's object in the document (borrowed), for rendering metadata and the Key type. */
const json_t *keystore_key_object(const keystore_key *k);
/* Pre-rendered JSON members for a Verify reply, without braces:
 * "key_id":"…","name":"…","metadata":{…},"scopes":[…],"expires_at":null|"…"
 * Built once with the keystore so the verify path never serializes. NUL-terminated;
 * *ret_len (ret_len may be NULL) gets the length without the NUL. */
const char *keystore_key_verify_fields(const keystore_key *k, size_t *ret_len);

/* True if the key's scopes allow scope: exact match, or a key scope "a.b.*" covering any
 * scope that starts with "a.b.". */
bool keystore_scope_allows(const keystore_key *k, const char *scope);
