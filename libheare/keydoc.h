/* keydoc: the keys.json codec (SPEC §3). In memory a document is always a version-2
 * jansson tree; version 1 (the Python service's plaintext file) is converted on parse.
 * Unknown fields at every level are kept as they are and written back unchanged. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

/* Longest key name, in bytes. */
#define KEYDOC_NAME_MAX 256
/* Largest rate_limit per_second / burst (the smallest is 1). */
#define KEYDOC_RATE_MAX 1000000000

/* Parses and validates buf[0..len). A v1 document is converted in place: each plaintext
 * "secret" becomes {"sha256", "created_at", "expires_at": null} in "secrets" (the
 * plaintext is wiped from memory), missing v2 fields get their defaults, "version" becomes
 * 2. On success *ret_doc owns the tree and *ret_was_v1 (may be NULL) tells whether it was
 * v1. On failure returns -EBADMSG and *reterr (caller frees) names the first offending key
 * id or JSON path, e.g. "keys[3] (key_0001…): secrets[0].sha256: not 64 lowercase hex". */
int keydoc_parse(const char *buf, size_t len, json_t **ret_doc, bool *ret_was_v1, char **reterr);

/* A new empty v2 document {"version": 2, "keys": []}; NULL on OOM. */
json_t *keydoc_new(void);

/* Validates a v2 tree against the schema (used by keydoc_parse and after every mutation):
 * version 2, "keys" an array; each key has a valid unique "id", a non-empty string "name",
 * RFC 3339 "created_at", object "metadata", array of non-empty strings "scopes",
 * "expires_at" null or RFC 3339, bool "disabled", "rate_limit" null or {"per_second",
 * "burst"} positive integers, and a non-empty "secrets" array of {"sha256" (64 lowercase
 * hex, unique across the document), "created_at", "expires_at"}. The nullable members
 * ("expires_at" of a key or a secret, "rate_limit") may be absent, which means null; they
 * are not added. Returns 0 or -EBADMSG with *reterr as for keydoc_parse. */
int keydoc_validate(const json_t *doc, char **reterr);

/* Serializes doc (key order preserved, 2-space indent, trailing newline). *ret_buf is
 * owned by the caller. Returns 0 or -ENOMEM. */
int keydoc_dump(const json_t *doc, char **ret_buf, size_t *ret_len);

/* The key object with this id inside doc (borrowed), or NULL. If ret_index is non-NULL
 * it gets the index in "keys". */
json_t *keydoc_find_key(const json_t *doc, const char *id, size_t *ret_index);

/* True if s is a valid scope: non-empty, printable ASCII (0x21..0x7e), so no spaces. */
bool keydoc_is_scope(const char *s);
