/* test-keyload: the streaming loader against the tree path (keydoc_parse + keystore_new).
 * What it loads must be exactly what the tree path builds; what it gives up on, the tree
 * path decides; it never accepts a document the tree path rejects, which a sweep of
 * mutated documents checks byte by byte. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "json-util.h"
#include "keydoc.h"
#include "keyload.h"
#include "keystore.h"
#include "macro.h"
#include "secret.h"

#define NOW INT64_C(1761670000)
#define HEX1 "1111111111111111111111111111111111111111111111111111111111111111"
#define HEX2 "2222222222222222222222222222222222222222222222222222222222222222"
#define HEX3 "3333333333333333333333333333333333333333333333333333333333333333"
#define SECRET(hex, exp) "{\"sha256\":\"" hex "\",\"created_at\":\"2025-10-28T16:45:18Z\"," \
                         "\"expires_at\":" exp "}"
#define KEY(id, secrets)                                                                        \
    "{\"id\":\"" id "\",\"name\":\"n\",\"created_at\":\"2025-10-28T16:45:18Z\","             \
    "\"metadata\":{},\"scopes\":[],\"expires_at\":null,\"disabled\":false,"                  \
    "\"rate_limit\":null,\"secrets\":[" secrets "]}"
#define DOC(keys) "{\"version\":2,\"keys\":[" keys "]}"

/* Feeds text in chunks of chunk bytes. Returns what keyload returned; *ret on success. */
static int stream(const char *text, size_t chunk, keystore **ret)
{
    _cleanup_(keyload_freep) keyload *l = NULL;
    size_t len = strlen(text);
    int r;

    CHECK_INT(keyload_new(7, &l), 0);
    for (size_t off = 0; off < len; off += chunk) {
        r = keyload_feed(l, text + off, chunk < len - off ? chunk : len - off);
        if (r < 0)
            return r;
    }
    return keyload_finish(l, ret);
}

static int tree(const char *text, keystore **ret)
{
    _cleanup_json_ json_t *doc = NULL;
    _cleanup_free_ char *err = NULL;
    int r = keydoc_parse(text, strlen(text), &doc, NULL, &err);

    if (r < 0)
        return r;
    return keystore_new(doc, 7, ret, &err);
}

static char *fields_of(const keystore_key *k)
{
    size_t len = keystore_key_verify_fields(k, NULL, 0);
    char *s = malloc(len + 1);

    CHECK(s != NULL);
    keystore_key_verify_fields(k, s, len);
    s[len] = 0;
    return s;
}

/* Everything a caller can read of the two keystores is the same. */
static void check_same(const keystore *a, const keystore *b)
{
    CHECK_INT(keystore_size(a), keystore_size(b));
    CHECK_INT(keystore_generation(a), keystore_generation(b));
    for (size_t i = 0; i < keystore_size(a); i++) {
        const keystore_key *x = keystore_at(a, i), *y = keystore_at(b, i);
        _cleanup_free_ char *fx = fields_of(x), *fy = fields_of(y);
        _cleanup_json_ json_t *rx = keystore_key_render(a, x, NOW), *ry = keystore_key_render(b, y, NOW);
        uint32_t p1, b1, p2, b2;

        CHECK_STR(keystore_key_id(x), keystore_key_id(y));
        CHECK_STR(keystore_key_name(x), keystore_key_name(y));
        CHECK_STR(keystore_key_created_at(x), keystore_key_created_at(y));
        CHECK_STR(fx, fy);
        CHECK_INT(keystore_key_n_scopes(x), keystore_key_n_scopes(y));
        for (size_t j = 0; j < keystore_key_n_scopes(x); j++)
            CHECK_STR(keystore_key_scope(x, j), keystore_key_scope(y, j));
        CHECK(keystore_key_rate_limit(x, &p1, &b1) == keystore_key_rate_limit(y, &p2, &b2));
        CHECK_INT(p1, p2);
        CHECK_INT(b1, b2);
        CHECK(rx != NULL && ry != NULL && json_equal(rx, ry));
        CHECK(keystore_get(a, keystore_key_id(x)) == x);
    }
}

/* Loads text both ways, in several chunkings, and compares. */
static void check_loads(const char *text)
{
    static const size_t chunks[] = {1, 2, 3, 7, 64, 4096};
    _cleanup_(keystore_freep) keystore *want = NULL;

    CHECK_INT(tree(text, &want), 0);
    for (size_t i = 0; i < ELEMENTSOF(chunks); i++) {
        _cleanup_(keystore_freep) keystore *got = NULL;
        int r = stream(text, chunks[i], &got);
        if (r != 0)
            fprintf(stderr, "gave up on a document the tree path loads (chunk %zu): %s\n",
                    chunks[i], text);
        CHECK_INT(r, 0);
        check_same(got, want);
    }
}

static const char *const good[] = {
    DOC(""),
    DOC(KEY("key_A", SECRET(HEX1, "null"))),
    /* every member in another order, unknown members at every level, all value types in
     * metadata, escapes, non-ASCII text, a rate limit with an extra member */
    "{\"version\":2,\"comment\":{\"a\":[1,2,{\"b\":null}]},\"keys\":[{\"secrets\":[{\"x\":[],"
    "\"expires_at\":\"2030-01-01T00:00:00Z\",\"created_at\":\"2025-10-28T16:45:18.5+02:00\","
    "\"sha256\":\"" HEX1 "\"}," SECRET(HEX2, "\"2025-01-01T00:00:00Z\"") "],\"rate_limit\":"
    "{\"burst\":10,\"why\":\"x\",\"per_second\":5},\"disabled\":true,\"expires_at\":"
    "\"2031-02-03T04:05:06Z\",\"scopes\":[\"a.b.*\",\"c\\\"d\",\"e\\\\f\"],\"metadata\":"
    "{\"s\":\"caf\xc3\xa9 \\n\\t\\u0001 \\\"q\\\" \\u00e9\",\"i\":-42,\"r\":1.5e3,"
    "\"z\":0.1,\"t\":true,\"f\":false,\"n\":null,\"a\":[[],{},[1,[2]]],\"o\":{\"p\":{\"q\":{}}}},"
    "\"created_at\":\"2025-10-28T16:45:18Z\",\"name\":\"na\\\"me\\u2028 \xe2\x82\xac\","
    "\"extra\":[{\"id\":\"not this\"}],\"id\":\"key_B\"}],\"tail\":true}",
    DOC(KEY("key_A", SECRET(HEX1, "null")) "," KEY("key_B", SECRET(HEX2, "null") "," SECRET(
        HEX3, "\"2026-01-01T00:00:00Z\""))),
    /* nullable members absent */
    "{\"version\":2,\"keys\":[{\"id\":\"key_C\",\"name\":\"c\",\"created_at\":"
    "\"2025-10-28T16:45:18Z\",\"metadata\":{\"k\":[]},\"scopes\":[\"x\"],\"disabled\":false,"
    "\"secrets\":[{\"sha256\":\"" HEX1 "\",\"created_at\":\"2025-10-28T16:45:18Z\"}]}]}",
    /* the same name in two different metadata objects is no duplicate */
    "{\"version\":2,\"keys\":[{\"id\":\"key_D\",\"name\":\"d\",\"created_at\":"
    "\"2025-10-28T16:45:18Z\",\"metadata\":{\"a\":{\"a\":1},\"b\":{\"a\":2}},\"scopes\":[],"
    "\"disabled\":false,\"secrets\":[" SECRET(HEX1, "null") "]}]}",
};

/* Documents the streaming loader leaves to the tree path. want_valid: what the tree path
 * makes of them. */
typedef struct giveup {
    const char *text;
    bool valid;
} giveup;

static const giveup giveups[] = {
    /* valid, but not the usual shape */
    {"{\"keys\":[],\"version\":2}", true},
    {"{\"keys\":[{\"id\":\"key_A\",\"secret\":\"sec_0001aaaaaaaaaaaaaaaaaa\",\"name\":\"a\","
     "\"created_at\":\"2025-10-28T16:45:18\",\"metadata\":{}}]}",
     true},
    {"{\"version\":2,\"version\":2,\"keys\":[]}", true},
    {"{\"version\":2,\"keys\":[{\"id\":\"key_A\",\"name\":\"n\",\"created_at\":"
     "\"2025-10-28T16:45:18Z\",\"metadata\":{\"a\":1,\"a\":2},\"scopes\":[],\"disabled\":false,"
     "\"secrets\":[" SECRET(HEX1, "null") "]}]}",
     true},
    {"{\"version\":2,\"keys\":[{\"id\":\"key_A\",\"name\":\"n\",\"name\":\"m\",\"created_at\":"
     "\"2025-10-28T16:45:18Z\",\"metadata\":{},\"scopes\":[],\"disabled\":false,"
     "\"secrets\":[" SECRET(HEX1, "null") "]}]}",
     true},
    {"{\"version\":2,\"keys\":[{\"id\":\"key_A\",\"name\":\"\\ud83d\\ude00\",\"created_at\":"
     "\"2025-10-28T16:45:18Z\",\"metadata\":{},\"scopes\":[],\"disabled\":false,"
     "\"secrets\":[" SECRET(HEX1, "null") "]}]}",
     true},
    /* invalid */
    {"", false},
    {"[]", false},
    {"{\"version\":2}", false},
    {"{\"version\":3,\"keys\":[]}", false},
    {"{\"version\":2.0,\"keys\":[]}", false},
    {"{\"version\":\"2\",\"keys\":[]}", false},
    {"{\"version\":2,\"keys\":{}}", false},
    {"{\"version\":2,\"keys\":[]} x", false},
    {"{\"version\":2,\"keys\":[]", false},
    {"{\"version\":2,\"keys\":[],}", false},
    {"{\"version\":2,\"keys\":[1]}", false},
    {DOC(KEY("key_A", SECRET(HEX1, "null")) "," KEY("key_A", SECRET(HEX2, "null"))), false},
    {DOC(KEY("key_A", SECRET(HEX1, "null")) "," KEY("key_B", SECRET(HEX1, "null"))), false},
    {DOC(KEY("key_A", "")), false},
    {DOC(KEY("sec_A", SECRET(HEX1, "null"))), false},
    {DOC(KEY("key_A", SECRET("ABCD", "null"))), false},
    {DOC(KEY("key_A", SECRET(HEX1, "\"tomorrow\""))), false},
    {DOC(KEY("key_A", SECRET(HEX1, "null") ",{}")), false},
    {"{\"version\":2,\"keys\":[{\"id\":\"key_A\",\"name\":\"\",\"created_at\":"
     "\"2025-10-28T16:45:18Z\",\"metadata\":{},\"scopes\":[],\"disabled\":false,"
     "\"secrets\":[" SECRET(HEX1, "null") "]}]}",
     false},
    {"{\"version\":2,\"keys\":[{\"id\":\"key_A\",\"name\":\"n\",\"created_at\":"
     "\"2025-10-28T16:45:18Z\",\"metadata\":[],\"scopes\":[],\"disabled\":false,"
     "\"secrets\":[" SECRET(HEX1, "null") "]}]}",
     false},
    {"{\"version\":2,\"keys\":[{\"id\":\"key_A\",\"name\":\"n\",\"created_at\":"
     "\"2025-10-28T16:45:18Z\",\"metadata\":{},\"scopes\":[\"a b\"],\"disabled\":false,"
     "\"secrets\":[" SECRET(HEX1, "null") "]}]}",
     false},
    {"{\"version\":2,\"keys\":[{\"id\":\"key_A\",\"name\":\"n\",\"created_at\":"
     "\"2025-10-28T16:45:18Z\",\"metadata\":{},\"scopes\":[],\"disabled\":0,"
     "\"secrets\":[" SECRET(HEX1, "null") "]}]}",
     false},
    {"{\"version\":2,\"keys\":[{\"id\":\"key_A\",\"name\":\"n\",\"created_at\":"
     "\"2025-10-28T16:45:18Z\",\"metadata\":{},\"scopes\":[],\"disabled\":false,"
     "\"rate_limit\":{\"per_second\":0,\"burst\":1},\"secrets\":[" SECRET(HEX1, "null") "]}]}",
     false},
    {"{\"version\":2,\"keys\":[{\"id\":\"key_A\",\"name\":\"n\",\"created_at\":"
     "\"2025-10-28T16:45:18Z\",\"metadata\":{},\"scopes\":[],\"disabled\":false,"
     "\"rate_limit\":{\"per_second\":1},\"secrets\":[" SECRET(HEX1, "null") "]}]}",
     false},
    {"{\"version\":2,\"keys\":[{\"id\":\"key_A\",\"name\":\"n\",\"created_at\":"
     "\"yesterday\",\"metadata\":{},\"scopes\":[],\"disabled\":false,"
     "\"secrets\":[" SECRET(HEX1, "null") "]}]}",
     false},
    /* strings jansson refuses and yajl would let through */
    {"{\"version\":2,\"x\":\"a\\u0000b\",\"keys\":[]}", false},
    {"{\"version\":2,\"x\\u0000\":1,\"keys\":[]}", false},
    {"{\"version\":2,\"x\":\"\\ud800\",\"keys\":[]}", false},
    {"{\"version\":2,\"x\":\"\\udc00\",\"keys\":[]}", false},
    {"{\"version\":2,\"x\":\"\xc0\x80\",\"keys\":[]}", false},
    {"{\"version\":2,\"x\":\"\xed\xa0\x80\",\"keys\":[]}", false},
    {"{\"version\":2,\"x\":\"\xf4\x90\x80\x80\",\"keys\":[]}", false},
    {"{\"version\":2,\"x\":99999999999999999999,\"keys\":[]}", false},
    {"{\"version\":2,\"x\":1e999,\"keys\":[]}", false},
};

static void test_giveups(void)
{
    for (size_t i = 0; i < ELEMENTSOF(giveups); i++) {
        keystore *ks = NULL, *ks2 = NULL;
        int r = stream(giveups[i].text, 5, &ks);
        if (r != -EBADMSG)
            fprintf(stderr, "case %zu: streaming gave %d: %s\n", i, r, giveups[i].text);
        CHECK_INT(r, -EBADMSG);
        CHECK(ks == NULL);
        CHECK_INT(stream(giveups[i].text, 1, &ks), -EBADMSG);
        r = tree(giveups[i].text, &ks2);
        if ((r == 0) != giveups[i].valid)
            fprintf(stderr, "case %zu: the tree path gave %d: %s\n", i, r, giveups[i].text);
        CHECK_INT(r == 0, giveups[i].valid);
        keystore_free(ks2);
    }
}

static void test_good(void)
{
    for (size_t i = 0; i < ELEMENTSOF(good); i++)
        check_loads(good[i]);
}

/* Nesting: deep unknown members go to jansson (which stops at 2048), deep metadata too. */
static void test_depth(void)
{
    for (size_t depth = 10; depth <= 3000; depth = depth * 3) {
        size_t n = 64 + 2 * depth;
        _cleanup_free_ char *text = malloc(n + 64);
        keystore *ks = NULL, *ks2 = NULL;
        int r, r2;

        CHECK(text != NULL);
        strcpy(text, "{\"version\":2,\"x\":");
        for (size_t i = 0; i < depth; i++)
            strcat(text, "[");
        for (size_t i = 0; i < depth; i++)
            strcat(text, "]");
        strcat(text, ",\"keys\":[]}");
        r = stream(text, 4096, &ks);
        r2 = tree(text, &ks2);
        /* The fast path never accepts what the tree path refuses. */
        CHECK(r != 0 || r2 == 0);
        CHECK_INT(r, depth < 1000 ? 0 : -EBADMSG);
        keystore_free(ks);
        keystore_free(ks2);
    }
}

static uint64_t rng = 0x9e3779b97f4a7c15u;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Mutates good documents a byte at a time: whenever the streaming loader accepts the
 * result, the tree path must accept it too and build the same keystore. */
static void test_mutations(void)
{
    static const char alphabet[] = "{}[]\",:\\u0123456789abcdefxnull true false -.eE\x80\xc3\xa9\x01";
    size_t accepted = 0, total = 0;

    for (size_t g = 0; g < ELEMENTSOF(good); g++) {
        size_t len = strlen(good[g]);
        _cleanup_free_ char *text = malloc(len + 2);
        CHECK(text != NULL);
        for (int round = 0; round < 20000; round++) {
            keystore *a = NULL, *b = NULL;
            size_t at = next() % len;
            int ra, rb;

            memcpy(text, good[g], len + 1);
            switch (next() % 3) {
            case 0: /* replace */
                text[at] = alphabet[next() % (sizeof(alphabet) - 1)];
                break;
            case 1: /* delete */
                memmove(text + at, text + at + 1, len - at);
                break;
            default: /* insert */
                memmove(text + at + 1, text + at, len - at + 1);
                text[at] = alphabet[next() % (sizeof(alphabet) - 1)];
                break;
            }
            total++;
            ra = stream(text, 1 + next() % 16, &a);
            CHECK(ra == 0 || ra == -EBADMSG);
            if (ra == 0) {
                accepted++;
                rb = tree(text, &b);
                if (rb != 0)
                    fprintf(stderr, "streaming accepted what the tree path refuses: %s\n", text);
                CHECK_INT(rb, 0);
                check_same(a, b);
            }
            keystore_free(a);
            keystore_free(b);
        }
    }
    printf("mutations: %zu documents, %zu accepted by both, none by the fast path alone\n", total,
           accepted);
}

static void test_is_v2(void)
{
    _cleanup_(keyload_freep) keyload *l = NULL, *l1 = NULL;
    static const char head[] = "{\"version\": 2, \"keys\": [";
    static const char v1[] = "{\"keys\": [{\"id\": \"key_A\", \"secret\": \"sec_";

    CHECK_INT(keyload_new(1, &l), 0);
    CHECK(!keyload_is_v2(l));
    CHECK_INT(keyload_feed(l, head, 10), 0);
    CHECK(!keyload_is_v2(l));
    CHECK_INT(keyload_feed(l, head + 10, strlen(head) - 10), 0);
    CHECK(keyload_is_v2(l));

    CHECK_INT(keyload_new(1, &l1), 0);
    CHECK_INT(keyload_feed(l1, v1, strlen(v1)), -EBADMSG);
    CHECK(!keyload_is_v2(l1));
    /* Given up stays given up. */
    CHECK_INT(keyload_feed(l1, "]}", 2), -EBADMSG);
    keystore *ks = NULL;
    CHECK_INT(keyload_finish(l1, &ks), -EBADMSG);
    CHECK(ks == NULL);
}

int main(void)
{
    test_good();
    test_giveups();
    test_depth();
    test_is_v2();
    test_mutations();
    return 0;
}
