/* keyload: builds a keystore straight from the bytes of a keys.json, as they arrive,
 * without a tree of the document: the way to load a million keys in a second and in the
 * memory of the keystore alone.
 *
 * It is the fast path, not the judge. It accepts only documents that keydoc_parse() would
 * accept, and only the usual shape of them:
 *  - version 2: "version": 2 before "keys";
 *  - version 1 (the Python service's file, plaintext secrets): "keys" first and no
 *    "version" at all, or "version": 1 before "keys", and no other top-level member; each
 *    key exactly "id", "secret", "name", "created_at" and optionally "metadata" (an
 *    object or null), converted as keydoc_parse() converts it;
 *  - no duplicate member names, no escaped surrogates.
 * Anything else, valid or not, makes it give up with -EBADMSG, and the caller then loads
 * the document with keydoc_parse() and keystore_new(), which decide and name the problem.
 *
 * A version-1 secret is hashed straight from yajl's string and only its digest is kept.
 * Every block yajl allocates (the lexer's buffer for a token cut by the end of a chunk,
 * the buffer of a string with escapes) is wiped before it is freed or moved. The caller's
 * own chunk buffers are the caller's to wipe. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keystore.h"

typedef struct keyload keyload;

/* Writes out len bytes of the converted document; < 0 stops the load with that value. */
typedef int (*keyload_write_t)(void *userdata, const char *buf, size_t len);

typedef struct keyload_options {
    /* If set, a version-1 document is also written out as it is read, converted to
     * version 2 with no plaintext: {"version": 2, "keys": [...]}, one key a line, every
     * member a version-2 key has, which loads through keyload as version 2 and through
     * keydoc_parse() into the same keystore. In pieces of any size; the last one comes
     * from keyload_finish(). A version-2 document writes nothing (its bytes are fine as
     * they are). */
    keyload_write_t write;
    void *userdata;
    /* Builds no keystore, only checks and converts: for a document that loaded already
     * (duplicate ids and digests are not looked for). keyload_finish() hands over none. */
    bool convert_only;
    /* Tests only: called with every block yajl lets go of, before (wiped = false) and
     * after (wiped = true) it is wiped. */
    void (*test_release)(const void *p, size_t n, bool wiped);
} keyload_options;

/* A loader for a keystore of that generation. Returns 0 or -ENOMEM. */
int keyload_new(uint64_t generation, keyload **ret);
/* The same with options (NULL: none). */
int keyload_new_with(uint64_t generation, const keyload_options *opts, keyload **ret);

/* Frees l and whatever it built. NULL is fine. Returns NULL. */
keyload *keyload_free(keyload *l);
static inline void keyload_freep(keyload **l)
{
    keyload_free(*l);
}

/* Reads the next len bytes of the document. Returns 0, -EBADMSG (given up: see above;
 * every later call returns it too) or -ENOMEM. */
int keyload_feed(keyload *l, const char *buf, size_t len);

/* True once the document has shown itself a version-2 one: "version": 2 came before
 * anything else that matters. From then on its bytes hold no plaintext secret. */
bool keyload_is_v2(const keyload *l);

/* True once the document has shown itself a version-1 one ("keys" with no "version"
 * before it, or "version": 1), and after a keyload_finish() of one that succeeded. Its
 * bytes hold plaintext secrets: never to be kept or cached. */
bool keyload_is_v1(const keyload *l);

/* Ends the document and hands over the keystore (nothing with convert_only: ret may then
 * be NULL). Returns 0, -EBADMSG, -ENOMEM, or what the write callback returned. */
int keyload_finish(keyload *l, keystore **ret);
