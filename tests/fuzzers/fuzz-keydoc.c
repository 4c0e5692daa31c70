/* fuzz-keydoc: the keys.json codec, the tree path every store document that the streaming
 * loader gives up on goes through. A document keydoc_parse() accepts must validate, write
 * out and read back to the same tree (as version 2), and build a keystore or be refused
 * with a reason; one it refuses must say why. */
#include <errno.h>

#include "fuzz.h"
#include "keydoc.h"
#include "keystore.h"

#define NOW INT64_C(1761670000)

static void check_keystore(const json_t *doc, const keystore *ks)
{
    FUZZ_ASSERT(keystore_size(ks) == json_array_size(json_object_get(doc, "keys")));
    for (size_t i = 0; i < keystore_size(ks); i++) {
        const keystore_key *k = keystore_at(ks, i);
        size_t at = SIZE_MAX;
        FUZZ_ASSERT(keystore_get(ks, keystore_key_id(k)) == k);
        FUZZ_ASSERT(keystore_key_index(ks, k) == i);
        FUZZ_ASSERT(keydoc_find_key(doc, keystore_key_id(k), &at) && at == i);
        json_t *rendered = keystore_key_render(ks, k, NOW);
        FUZZ_ASSERT(rendered != NULL);
        json_decref(rendered);
        /* A key id is no secret: it is never found as one. */
        const char *id = keystore_key_id(k);
        verify_code c =
            keystore_verify(ks, id, strlen(id),
                            keystore_key_n_scopes(k) ? keystore_key_scope(k, 0) : NULL, NOW, NULL);
        FUZZ_ASSERT(c == VERIFY_NOT_FOUND || c == VERIFY_MALFORMED);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_copy(data, size), *err = NULL, *dumped = NULL;
    json_t *doc = NULL, *again = NULL;
    bool was_v1 = false, again_v1 = true;
    size_t dumped_len = 0;

    int r = keydoc_parse(text, size, &doc, &was_v1, &err);
    if (r < 0) {
        FUZZ_ASSERT(r == -EBADMSG && err && *err && !doc);
        goto out;
    }
    FUZZ_ASSERT(doc && !err);
    FUZZ_ASSERT(keydoc_validate(doc, &err) == 0 && !err);
    FUZZ_ASSERT(json_integer_value(json_object_get(doc, "version")) == 2);
    FUZZ_ASSERT(keydoc_dump(doc, &dumped, &dumped_len) == 0);
    FUZZ_ASSERT(strlen(dumped) == dumped_len && dumped[dumped_len - 1] == '\n');
    FUZZ_ASSERT(keydoc_parse(dumped, dumped_len, &again, &again_v1, &err) == 0 && !again_v1);
    FUZZ_ASSERT(json_equal(doc, again));

    keystore *ks = NULL;
    r = keystore_new(doc, 1, &ks, &err);
    if (r < 0)
        FUZZ_ASSERT(r == -EBADMSG && err && *err && !ks);
    else {
        check_keystore(doc, ks);
        keystore_free(ks);
    }
out:
    json_decref(again);
    json_decref(doc);
    free(dumped);
    free(err);
    free(text);
    return 0;
}
