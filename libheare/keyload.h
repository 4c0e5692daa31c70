/* keyload: builds a keystore straight from the bytes of a version-2 keys.json, as they
 * arrive, without a tree of the document: the way to load a million keys in a second and
 * in the memory of the keystore alone.
 *
 * It is the fast path, not the judge. It accepts only documents that keydoc_parse() would
 * accept, and only the usual shape of them: "version": 2 before "keys", no duplicate
 * member names, no escaped surrogates. Anything else, valid or not, makes it give up with
 * -EBADMSG, and the caller then loads the document with keydoc_parse() and keystore_new(),
 * which decide and name the problem. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keystore.h"

typedef struct keyload keyload;

/* A loader for a keystore of that generation. Returns 0 or -ENOMEM. */
int keyload_new(uint64_t generation, keyload **ret);

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

/* Ends the document and hands over the keystore. Returns 0, -EBADMSG or -ENOMEM. */
int keyload_finish(keyload *l, keystore **ret);
