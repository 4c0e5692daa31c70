/* fuzz-keyload: the streaming store loader, fed a document in chunks whose lengths the
 * input's first bytes choose (empty ones too), each chunk in its own block freed as soon
 * as it is fed: a loader that kept a pointer into one is caught reading freed memory.
 * Whatever keyload accepts, the tree path (keydoc_parse + keystore_new) must accept and
 * build the same keystore from; a version-1 document's converted output must be
 * keydoc_parse()'s own conversion and load again to the same keys. Every block yajl lets
 * go of must be zero once wiped. */
#include <errno.h>

#include "fuzz.h"
#include "json-util.h"
#include "keydoc.h"
#include "keyload.h"
#include "keystore.h"
#include "macro.h"

#define GENERATION 7
#define NOW INT64_C(1761670000)
#define MAX_CUTS 7

static int collect(void *userdata, const char *buf, size_t len)
{
    FUZZ_ASSERT(len > 0);
    return keystore_text_put(userdata, buf, len);
}

static void on_release(const void *p, size_t n, bool wiped)
{
    if (wiped)
        for (size_t i = 0; i < n; i++)
            FUZZ_ASSERT(((const unsigned char *)p)[i] == 0);
}

static char *fields_of(const keystore_key *k)
{
    size_t len = keystore_key_verify_fields(k, NULL, 0);
    char *s = fuzz_malloc(len + 1);
    keystore_key_verify_fields(k, s, len);
    s[len] = '\0';
    return s;
}

/* Everything a caller can read of the two keystores is the same. */
static void check_same(const keystore *a, const keystore *b)
{
    FUZZ_ASSERT(keystore_size(a) == keystore_size(b));
    FUZZ_ASSERT(keystore_generation(a) == keystore_generation(b));
    for (size_t i = 0; i < keystore_size(a); i++) {
        const keystore_key *x = keystore_at(a, i), *y = keystore_at(b, i);
        char *fx = fields_of(x), *fy = fields_of(y);
        json_t *rx = keystore_key_render(a, x, NOW), *ry = keystore_key_render(b, y, NOW);
        uint32_t p1 = 0, b1 = 0, p2 = 0, b2 = 0;

        FUZZ_ASSERT(strcmp(keystore_key_id(x), keystore_key_id(y)) == 0);
        FUZZ_ASSERT(strcmp(keystore_key_name(x), keystore_key_name(y)) == 0);
        FUZZ_ASSERT(strcmp(keystore_key_created_at(x), keystore_key_created_at(y)) == 0);
        FUZZ_ASSERT(strcmp(fx, fy) == 0);
        FUZZ_ASSERT(keystore_key_n_scopes(x) == keystore_key_n_scopes(y));
        for (size_t j = 0; j < keystore_key_n_scopes(x); j++)
            FUZZ_ASSERT(strcmp(keystore_key_scope(x, j), keystore_key_scope(y, j)) == 0);
        FUZZ_ASSERT(keystore_key_rate_limit(x, &p1, &b1) == keystore_key_rate_limit(y, &p2, &b2));
        FUZZ_ASSERT(p1 == p2 && b1 == b2);
        FUZZ_ASSERT(rx && ry && json_equal(rx, ry));
        FUZZ_ASSERT(keystore_get(a, keystore_key_id(x)) == x);
        json_decref(rx);
        json_decref(ry);
        free(fx);
        free(fy);
    }
}

/* The tree path's verdict on text: keydoc_parse() (0 with *ret_doc and *ret_v1, or < 0),
 * then, if ret_ks, keystore_new(). */
static int tree(const char *text, size_t len, json_t **ret_doc, bool *ret_v1, keystore **ret_ks)
{
    char *err = NULL;
    int r = keydoc_parse(text, len, ret_doc, ret_v1, &err);
    free(err);
    err = NULL;
    if (r < 0 || !ret_ks)
        return r;
    r = keystore_new(*ret_doc, GENERATION, ret_ks, &err);
    free(err);
    if (r < 0) {
        json_decref(*ret_doc);
        *ret_doc = NULL;
    }
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input in = {data, size};
    uint8_t mode = fuzz_byte(&in);
    size_t n_cuts = mode & MAX_CUTS, cuts[MAX_CUTS], sum = 0;
    bool convert = mode & 0x08, convert_only = convert && (mode & 0x10);
    keystore_text out = {0};
    keyload *l = NULL;
    keystore *ks = NULL;

    for (size_t i = 0; i < n_cuts; i++)
        sum += cuts[i] = fuzz_byte(&in);
    if (sum == 0)
        n_cuts = 0; /* only empty chunks would never end */
    const char *doc = (const char *)in.p;
    size_t len = in.n;

    keyload_options opts = {.test_release = on_release};
    if (convert) {
        opts.write = collect;
        opts.userdata = &out;
        opts.convert_only = convert_only;
    }
    FUZZ_ASSERT(keyload_new_with(GENERATION, &opts, &l) == 0);
    int r = 0;
    for (size_t off = 0, i = 0; off < len || (n_cuts && i < n_cuts);) {
        size_t c = n_cuts ? cuts[i++ % n_cuts] : len - off;
        if (c > len - off)
            c = len - off;
        char *chunk = fuzz_copy(doc + off, c);
        r = keyload_feed(l, chunk, c);
        free(chunk);
        FUZZ_ASSERT(r == 0 || r == -EBADMSG);
        if (r < 0)
            break;
        off += c;
    }
    FUZZ_ASSERT(!keyload_is_v1(l) || !keyload_is_v2(l));
    if (r < 0) {
        /* Given up is given up for good. */
        FUZZ_ASSERT(keyload_feed(l, "{", 1) == -EBADMSG);
        FUZZ_ASSERT(keyload_finish(l, &ks) == -EBADMSG && !ks);
    } else {
        r = keyload_finish(l, convert_only ? NULL : &ks);
        FUZZ_ASSERT(r == 0 || r == -EBADMSG);
    }
    if (r == 0) {
        json_t *doc_tree = NULL;
        keystore *want = NULL;
        bool was_v1 = false;

        FUZZ_ASSERT(convert_only ? !ks : ks != NULL);
        /* The fast path never takes what the tree path refuses; converting only (a copy of a
         * document the daemon has loaded already, for the cache), it does not look for
         * duplicate ids and digests, which keydoc_parse() and keystore_new() refuse. */
        int rd = tree(doc, len, &doc_tree, &was_v1, NULL);
        FUZZ_ASSERT(rd == 0 || (convert_only && rd == -EBADMSG));
        if (rd == 0)
            FUZZ_ASSERT(keyload_is_v1(l) == was_v1);
        json_decref(doc_tree);
        doc_tree = NULL;
        int rt = rd < 0 ? rd : tree(doc, len, &doc_tree, &was_v1, &want);
        FUZZ_ASSERT(rt == 0 || (convert_only && rt == -EBADMSG));
        if (ks)
            check_same(ks, want);
        if (rd == 0 && convert && was_v1) {
            /* The conversion is keydoc_parse()'s, and loads back to the same keys, fast. */
            json_t *conv_doc = NULL, *first = NULL;
            keystore *again = NULL, *streamed = NULL;
            keyload *l2 = NULL;
            bool conv_v1 = true, v1 = false;

            FUZZ_ASSERT(out.len > 0);
            FUZZ_ASSERT(tree(doc, len, &first, &v1, NULL) == 0);
            FUZZ_ASSERT(tree(out.s, out.len, &conv_doc, &conv_v1, NULL) == 0 && !conv_v1);
            FUZZ_ASSERT(
                json_equal(json_object_get(conv_doc, "keys"), json_object_get(first, "keys")));
            if (want) {
                json_decref(conv_doc);
                FUZZ_ASSERT(tree(out.s, out.len, &conv_doc, &conv_v1, &again) == 0);
                check_same(again, want);
                FUZZ_ASSERT(keyload_new(GENERATION, &l2) == 0);
                FUZZ_ASSERT(keyload_feed(l2, out.s, out.len) == 0);
                FUZZ_ASSERT(keyload_is_v2(l2));
                FUZZ_ASSERT(keyload_finish(l2, &streamed) == 0);
                check_same(streamed, want);
            }
            keystore_free(streamed);
            keyload_free(l2);
            keystore_free(again);
            json_decref(conv_doc);
            json_decref(first);
        } else if (convert && rd == 0)
            FUZZ_ASSERT(out.len == 0);
        keystore_free(want);
        json_decref(doc_tree);
    }
    keystore_free(ks);
    keyload_free(l);
    free(out.s);
    return 0;
}
