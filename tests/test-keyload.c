/* test-keyload: the streaming loader against the tree path (keydoc_parse + keystore_new).
 * What it loads must be exactly what the tree path builds; what it gives up on, the tree
 * path decides; it never accepts a document the tree path rejects, which a sweep of
 * mutated documents checks byte by byte. Version-1 documents the same way, and their
 * converted output against keydoc_parse()'s conversion. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "ids.h"
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
/* A version-1 key: id, secret, then the rest of its members (name and created_at at least). */
#define V1KEY(id, secret, rest) "{\"id\":\"" id "\",\"secret\":\"" secret "\"," rest "}"
#define V1REST "\"name\":\"n\",\"created_at\":\"2025-10-28T16:45:18.123456\""
#define V1DOC(keys) "{\"keys\":[" keys "]}"

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

/* The converted output of a version-1 load. */
static int collect(void *userdata, const char *buf, size_t len)
{
    keystore_text *t = userdata;
    CHECK(len > 0);
    return keystore_text_put(t, buf, len);
}

/* Streams text with the converted output going to *out (NUL-terminated). Returns what
 * keyload returned; *ret on success (nothing with convert_only); *ret_v1 whether keyload
 * said version 1 at the end. */
static int stream_converting(const char *text, size_t chunk, bool convert_only, keystore **ret,
                             keystore_text *out, bool *ret_v1)
{
    _cleanup_(keyload_freep) keyload *l = NULL;
    size_t len = strlen(text);
    int r;

    out->len = 0;
    CHECK_INT(keyload_new_with(7, &(keyload_options){.write = collect, .userdata = out,
                                                     .convert_only = convert_only}, &l), 0);
    for (size_t off = 0; off < len; off += chunk) {
        r = keyload_feed(l, text + off, chunk < len - off ? chunk : len - off);
        if (r < 0) {
            *ret_v1 = keyload_is_v1(l);
            return r;
        }
    }
    r = keyload_finish(l, ret);
    *ret_v1 = keyload_is_v1(l);
    CHECK(!keyload_is_v2(l) || !*ret_v1);
    CHECK_INT(keystore_text_put(out, "", 1), 0);
    out->len--;
    return r;
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
    /* a string opened after the document: yajl would take it for whitespace */
    {"{\"version\":2,\"keys\":[]}\"", false},
    {"{\"version\":2,\"keys\":[]} \"x", false},
    {"{\"version\":2,\"keys\":[]}\n\"\n", false},
    {"{\"version\":2,\"keys\":[]", false},
    {"{\"version\":2,\"keys\":[],}", false},
    /* white space to yajl, not to RFC 8259 or jansson (found by fuzz-keyload) */
    {"{\"version\":2,\v\"keys\":[]}", false},
    {"{\"version\":2,\"keys\":[]\f}", false},
    {"\f{\"version\":2,\"keys\":[]}", false},
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

/* Version-1 documents it loads (and converts). */
static const char *const good_v1[] = {
    "{\"keys\":[]}",
    "{\"version\":1,\"keys\":[]}",
    V1DOC(V1KEY("key_0001vDmowdgLBqEcDYe", "sec_0001vDmowg2tzwvpaFL",
                "\"name\":\"MyService\",\"created_at\":\"2025-10-28T16:45:18.123456\","
                "\"metadata\":{\"team\":\"payments\"}")),
    /* metadata null, absent, nested; "version": 1 first; spacing */
    "{ \"version\" : 1 ,\n \"keys\" : [\n  " V1KEY("key_A", "sec_0001a", V1REST ",\"metadata\":null")
    " ,\n " V1KEY("key_B", "sec_0001b", V1REST) ",\n"
    V1KEY("key_C", "sec_0001c", V1REST ",\"metadata\":{\"a\":[1,-2.5e3,{\"b\":null}],\"t\":true,"
          "\"s\":\"caf\xc3\xa9 \\u00e9\\n\",\"o\":{\"a\":{}}}") " ]\n}\n",
    /* members in any order, lenient times (zone, none, space, fraction, lowercase) */
    V1DOC("{\"metadata\":{},\"created_at\":\"2025-10-28T16:45:18.5+02:00\",\"name\":\"x\","
          "\"secret\":\"sec_0001d\",\"id\":\"key_D\"},"
          "{\"name\":\"y\",\"id\":\"key_E\",\"created_at\":\"2025-10-28 16:45:18Z\","
          "\"secret\":\"sec_0001e\"},"
          V1KEY("key_F", "sec_0001f", "\"name\":\"z\",\"created_at\":\"2024-02-29t23:59:59.999-05:30\"") ","
          V1KEY("key_G", "sec_0001g", "\"name\":\"w\",\"created_at\":\"2025-10-28T16:45:18\"")),
    /* escapes in secrets and names, non-ASCII names and secrets, a surrogate-free \u */
    V1DOC(V1KEY("key_H", "\\u0073ec_0001\\\"q\\\\\\/h\\n\\u00e9",
                "\"name\":\"na\\\"me \\u2028 \xe2\x82\xac caf\xc3\xa9\",\"created_at\":"
                "\"2025-10-28T16:45:18Z\",\"metadata\":{\"k\\u00e9\":\"v\"}") ","
          V1KEY("key_I", "sec_\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", V1REST)),
};

/* Version-1 documents it gives up on, and what the tree path makes of them. */
static const giveup giveups_v1[] = {
    /* valid, but not the usual shape */
    {"{\"keys\":[],\"version\":1}", true},
    {"{\"keys\":[],\"x\":1}", true},
    {"{\"x\":1,\"keys\":[]}", true},
    {"{\"version\":1,\"x\":1,\"keys\":[]}", true},
    {"{\"x\":1,\"version\":1,\"keys\":[]}", true},
    {"{\"version\":1,\"version\":1,\"keys\":[]}", true},
    {V1DOC(V1KEY("key_A", "sec_0001a", V1REST ",\"scopes\":[\"a\"]")), true},
    {V1DOC(V1KEY("key_A", "sec_0001a", V1REST ",\"disabled\":false")), true},
    {V1DOC(V1KEY("key_A", "sec_0001a", V1REST ",\"x\":1")), true},
    {V1DOC(V1KEY("key_A", "sec_0001a", V1REST ",\"name\":\"m\"")), true},
    {V1DOC(V1KEY("key_A", "sec_0001a", V1REST ",\"secret\":\"sec_0001b\"")), true},
    {V1DOC(V1KEY("key_A", "sec_0001a", V1REST ",\"metadata\":{\"a\":1,\"a\":2}")), true},
    {V1DOC(V1KEY("key_A", "\\ud83d\\ude00", V1REST)), true},
    /* invalid */
    {V1DOC(V1KEY("key_A", "sec_0001a", V1REST ",\"secrets\":[" SECRET(HEX1, "null") "]")), false},
    {V1DOC(V1KEY("key_A", "", V1REST)), false},
    {V1DOC("{\"id\":\"key_A\",\"secret\":7," V1REST "}"), false},
    {V1DOC("{\"id\":\"key_A\",\"secret\":null," V1REST "}"), false},
    {V1DOC("{\"id\":\"key_A\"," V1REST "}"), false},
    {V1DOC("{\"secret\":\"sec_0001a\"," V1REST "}"), false},
    {V1DOC(V1KEY("sec_A", "sec_0001a", V1REST)), false},
    {V1DOC(V1KEY("key_A", "sec_0001a", "\"created_at\":\"2025-10-28T16:45:18Z\"")), false},
    {V1DOC(V1KEY("key_A", "sec_0001a", "\"name\":\"\",\"created_at\":\"2025-10-28T16:45:18Z\"")), false},
    {V1DOC(V1KEY("key_A", "sec_0001a", "\"name\":1,\"created_at\":\"2025-10-28T16:45:18Z\"")), false},
    {V1DOC(V1KEY("key_A", "sec_0001a", "\"name\":\"n\"")), false},
    {V1DOC(V1KEY("key_A", "sec_0001a", "\"name\":\"n\",\"created_at\":\"yesterday\"")), false},
    {V1DOC(V1KEY("key_A", "sec_0001a", "\"name\":\"n\",\"created_at\":\"2025-02-30T00:00:00\"")), false},
    {V1DOC(V1KEY("key_A", "sec_0001a", "\"name\":\"n\",\"created_at\":1761669918")), false},
    {V1DOC(V1KEY("key_A", "sec_0001a", "\"name\":\"n\",\"created_at\":\"0000-01-01T00:00:00+01:00\"")), false},
    {V1DOC(V1KEY("key_A", "sec_0001a", V1REST ",\"metadata\":[]")), false},
    {V1DOC(V1KEY("key_A", "sec_0001a", V1REST ",\"metadata\":\"x\"")), false},
    {V1DOC(V1KEY("key_A", "sec_0001a", V1REST) "," V1KEY("key_A", "sec_0001b", V1REST)), false},
    {V1DOC(V1KEY("key_A", "sec_0001a", V1REST) "," V1KEY("key_B", "sec_0001a", V1REST)), false},
    {V1DOC(V1KEY("key_A", "sec_\\u0000a", V1REST)), false},
    {V1DOC(V1KEY("key_A", "sec_\\ud800", V1REST)), false},
    {V1DOC(V1KEY("key_A", "sec_\xc0\x80", V1REST)), false},
    {V1DOC(V1KEY("key_A", "sec_\xed\xa0\x80", V1REST)), false},
    {V1DOC(V1KEY("key_A", "sec_\xff", V1REST)), false},
    {V1DOC("1"), false},
    {"{\"keys\":{}}", false},
    {"{\"version\":1}", false},
    {"{\"version\":1.0,\"keys\":[]}", false},
    {"{\"version\":0,\"keys\":[]}", false},
    {"{\"keys\":[]} []", false},
    {"{\"keys\":[]}\"", false},
    {"{\"keys\":[]}\n\"\n", false},
    {"{\"keys\":[" V1KEY("key_A", "sec_0001a", V1REST), false},
};

/* Every secret of the version-1 document src verifies in ks (those a Verify looks up at
 * all), and none of them is in out. */
static void check_secrets(const json_t *src, const keystore *ks, const keystore_text *out)
{
    const json_t *keys = json_object_get(src, "keys");

    for (size_t i = 0; i < json_array_size(keys); i++) {
        const json_t *key = json_array_get(keys, i);
        const char *secret = json_string_value(json_object_get(key, "secret"));
        size_t len = json_string_length(json_object_get(key, "secret"));
        const keystore_key *k = NULL;

        CHECK(secret != NULL && len > 0);
        CHECK(memmem(out->s, out->len, secret, len) == NULL);
        if (ids_check_shape(secret, len) < 0)
            continue; /* MALFORMED without a lookup: the digests are compared in the output */
        CHECK_INT(keystore_verify(ks, secret, len, NULL, NOW, &k), VERIFY_VALID);
        CHECK_STR(keystore_key_id(k), json_string_value(json_object_get(key, "id")));
    }
}

/* Loads a version-1 document both ways, in several chunkings, converting it on the way:
 * the same keystore; the output has no plaintext, loads through keyload as version 2 and
 * through keydoc_parse() to the same keystore, and is keydoc_parse()'s own conversion. */
static void check_loads_v1(const char *text)
{
    static const size_t chunks[] = {1, 2, 3, 7, 64, 4096};
    _cleanup_(keystore_freep) keystore *want = NULL;
    _cleanup_json_ json_t *doc = NULL, *src = json_loads(text, 0, NULL);
    _cleanup_free_ char *err = NULL;
    bool was_v1 = false;

    CHECK(src != NULL);
    CHECK_INT(keydoc_parse(text, strlen(text), &doc, &was_v1, &err), 0);
    CHECK(was_v1);
    CHECK_INT(keystore_new(doc, 7, &want, &err), 0);
    check_secrets(src, want, &(keystore_text){.s = (char *)"", .len = 0});

    for (size_t i = 0; i < ELEMENTSOF(chunks); i++) {
        _cleanup_(keystore_freep) keystore *got = NULL, *again = NULL, *from_tree = NULL;
        _cleanup_(keyload_freep) keyload *l = NULL;
        _cleanup_json_ json_t *conv = NULL;
        keystore_text out = {0}, out2 = {0};
        keystore *none = NULL;
        bool v1 = false, conv_v1 = true;
        size_t chunk = chunks[i];
        int r = stream_converting(text, chunk, false, &got, &out, &v1);

        if (r != 0)
            fprintf(stderr, "gave up on a version-1 document the tree path loads (chunk %zu): %s\n",
                    chunk, text);
        CHECK_INT(r, 0);
        CHECK(v1);
        check_same(got, want);
        check_secrets(src, got, &out);

        /* Convert only: the same output, no keystore. */
        CHECK_INT(stream_converting(text, chunk, true, &none, &out2, &v1), 0);
        CHECK(v1 && none == NULL);
        CHECK_STR(out2.s, out.s);

        /* The output through keyload's version-2 path. */
        CHECK_INT(keyload_new(7, &l), 0);
        for (size_t off = 0; off < out.len; off += chunk)
            CHECK_INT(keyload_feed(l, out.s + off, chunk < out.len - off ? chunk : out.len - off), 0);
        CHECK(keyload_is_v2(l) && !keyload_is_v1(l));
        CHECK_INT(keyload_finish(l, &again), 0);
        check_same(again, want);

        /* And through the tree: the very document keydoc_parse() converts to. */
        CHECK_INT(keydoc_parse(out.s, out.len, &conv, &conv_v1, &err), 0);
        CHECK(!conv_v1);
        CHECK_INT(keystore_new(conv, 7, &from_tree, &err), 0);
        check_same(from_tree, want);
        CHECK(json_equal(json_object_get(conv, "keys"), json_object_get(doc, "keys")));
        CHECK_INT(json_object_size(conv), 2);

        free(out.s);
        free(out2.s);
    }
}

static void test_good_v1(void)
{
    for (size_t i = 0; i < ELEMENTSOF(good_v1); i++) {
        check_loads(good_v1[i]);
        check_loads_v1(good_v1[i]);
    }
}

/* A version-1 document of n keys, to see the output handed over in several pieces. */
static void test_big_v1(void)
{
    const size_t n = 3000;
    keystore_text text = {0};
    char key[256];

    CHECK_INT(keystore_text_put(&text, "{\"keys\":[", 9), 0);
    for (size_t i = 0; i < n; i++) {
        int k = snprintf(key, sizeof(key),
                         "%s{\"id\":\"key_%zu\",\"secret\":\"sec_0001%zu\",\"name\":\"bulk-%zu\","
                         "\"created_at\":\"2025-10-28T16:45:18.000000\",\"metadata\":{\"i\":%zu}}",
                         i ? "," : "", i, i, i, i);
        CHECK_INT(keystore_text_put(&text, key, (size_t)k), 0);
    }
    CHECK_INT(keystore_text_put(&text, "]}", 3), 0);
    check_loads_v1(text.s);
    free(text.s);
}

/* The allocator given to yajl wipes every block it lets go of. What this shows: each block
 * yajl frees (or leaves behind by a realloc) is all zero when it goes back to malloc, and
 * at least one of them held the secret before (so the documents below do make yajl copy
 * it: a string with an escape is decoded into yajl's buffer, a token cut by the end of a
 * chunk is gathered in the lexer's). What it does not show: that no other copy exists
 * (the caller's chunks are the caller's; the stack is not looked at). */
#define MARK "bcdefghijklmnopqrstuvwxyz0123456789"
static size_t released, released_with_secret, released_not_zero;

static void on_release(const void *p, size_t n, bool wiped)
{
    const char *b = p;

    if (!wiped) {
        released++;
        if (memmem(b, n, MARK, strlen(MARK)))
            released_with_secret++;
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (b[i]) {
            released_not_zero++;
            break;
        }
}

static void test_wiping(void)
{
    static const struct {
        const char *text;
        size_t chunk;
        int want;
    } cases[] = {
        /* an escape: the decoded secret is in yajl's buffer, whole chunk or not */
        {V1DOC("{\"id\":\"key_A\",\"name\":\"n\",\"created_at\":\"2025-10-28T16:45:18\","
               "\"secret\":\"sec_\\u0041" MARK "\"}"), 4096, 0},
        {V1DOC("{\"id\":\"key_A\",\"name\":\"n\",\"created_at\":\"2025-10-28T16:45:18\","
               "\"secret\":\"sec_\\u0041" MARK "\"}"), 1, 0},
        /* cut by the end of every chunk: in the lexer's buffer, and given up on after */
        {V1DOC("{\"id\":\"key_A\",\"name\":\"n\",\"created_at\":\"2025-10-28T16:45:18\","
               "\"secret\":\"sec_A" MARK "\",\"x\":1}"), 1, -EBADMSG},
        {V1DOC("{\"id\":\"key_A\",\"name\":\"n\",\"created_at\":\"2025-10-28T16:45:18\","
               "\"secret\":\"sec_A" MARK "\"}"), 1, 0},
    };

    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        const char *text = cases[i].text;
        size_t len = strlen(text), chunk = cases[i].chunk;
        keyload *l = NULL;
        keystore *ks = NULL;
        int r = 0;

        released = released_with_secret = released_not_zero = 0;
        CHECK_INT(keyload_new_with(7, &(keyload_options){.test_release = on_release}, &l), 0);
        for (size_t off = 0; off < len && r == 0; off += chunk)
            r = keyload_feed(l, text + off, chunk < len - off ? chunk : len - off);
        if (r == 0)
            r = keyload_finish(l, &ks);
        CHECK_INT(r, cases[i].want);
        keystore_free(ks);
        keyload_free(l);
        if (released_with_secret == 0)
            fprintf(stderr, "case %zu: no block yajl freed held the secret\n", i);
        CHECK(released > 0);
        CHECK(released_with_secret > 0);
        CHECK_INT(released_not_zero, 0);
    }
}

static void check_giveups(const giveup *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        keystore *ks = NULL, *ks2 = NULL;
        keystore_text out = {0};
        bool v1;
        int r = stream(list[i].text, 5, &ks);
        if (r != -EBADMSG)
            fprintf(stderr, "case %zu: streaming gave %d: %s\n", i, r, list[i].text);
        CHECK_INT(r, -EBADMSG);
        CHECK(ks == NULL);
        CHECK_INT(stream(list[i].text, 1, &ks), -EBADMSG);
        CHECK_INT(stream_converting(list[i].text, 3, false, &ks, &out, &v1), -EBADMSG);
        CHECK(ks == NULL && !v1);
        free(out.s);
        r = tree(list[i].text, &ks2);
        if ((r == 0) != list[i].valid)
            fprintf(stderr, "case %zu: the tree path gave %d: %s\n", i, r, list[i].text);
        CHECK_INT(r == 0, list[i].valid);
        keystore_free(ks2);
    }
}

static void test_giveups(void)
{
    check_giveups(giveups, ELEMENTSOF(giveups));
    check_giveups(giveups_v1, ELEMENTSOF(giveups_v1));
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

/* If text (which both paths load) is version 1, keyload's conversion of it is
 * keydoc_parse()'s, digests included. */
static void check_same_conversion(const char *text)
{
    _cleanup_json_ json_t *doc = NULL, *conv = NULL;
    _cleanup_free_ char *err = NULL;
    keystore_text out = {0};
    keystore *ks = NULL;
    bool v1 = false, was_v1 = false;

    CHECK_INT(stream_converting(text, 7, true, &ks, &out, &v1), 0);
    CHECK_INT(keydoc_parse(text, strlen(text), &doc, &was_v1, &err), 0);
    CHECK(v1 == was_v1);
    if (v1) {
        conv = json_loadb(out.s, out.len, 0, NULL);
        CHECK(conv != NULL);
        CHECK(json_equal(json_object_get(conv, "keys"), json_object_get(doc, "keys")));
    } else
        CHECK_INT(out.len, 0);
    free(out.s);
}

/* Mutates good documents (version 2 and 1) a byte at a time: whenever the streaming loader
 * accepts the result, the tree path must accept it too and build the same keystore (and
 * for version 1 convert it the same way). */
static void test_mutations(void)
{
    static const char alphabet[] = "{}[]\",:\\u0123456789abcdefxnull true false -.eE\x80\xc3\xa9\x01";
    size_t accepted = 0, total = 0;

    const char *seeds[ELEMENTSOF(good) + ELEMENTSOF(good_v1)];

    for (size_t g = 0; g < ELEMENTSOF(good); g++)
        seeds[g] = good[g];
    for (size_t g = 0; g < ELEMENTSOF(good_v1); g++)
        seeds[ELEMENTSOF(good) + g] = good_v1[g];
    for (size_t g = 0; g < ELEMENTSOF(seeds); g++) {
        size_t len = strlen(seeds[g]);
        _cleanup_free_ char *text = malloc(len + 2);
        CHECK(text != NULL);
        for (int round = 0; round < 20000; round++) {
            keystore *a = NULL, *b = NULL;
            size_t at = next() % len;
            int ra, rb;

            memcpy(text, seeds[g], len + 1);
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
                check_same_conversion(text);
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

    CHECK(!keyload_is_v1(l));

    /* A version-1 document says so as soon as its keys start, and is never version 2. */
    CHECK_INT(keyload_new(1, &l1), 0);
    CHECK_INT(keyload_feed(l1, v1, 5), 0);
    CHECK(!keyload_is_v1(l1) && !keyload_is_v2(l1));
    CHECK_INT(keyload_feed(l1, v1 + 5, strlen(v1) - 5), 0);
    CHECK(keyload_is_v1(l1) && !keyload_is_v2(l1));
    l1 = keyload_free(l1);
    CHECK_INT(keyload_new(1, &l1), 0);
    CHECK_INT(keyload_feed(l1, "{\"version\": 1,", 14), 0);
    CHECK(keyload_is_v1(l1) && !keyload_is_v2(l1));
    l1 = keyload_free(l1);

    /* Given up is no version at all, and stays given up. */
    CHECK_INT(keyload_new(1, &l1), 0);
    CHECK_INT(keyload_feed(l1, "{\"keys\": [], \"x\"", 16), -EBADMSG);
    CHECK(!keyload_is_v1(l1) && !keyload_is_v2(l1));
    CHECK_INT(keyload_feed(l1, ": 1}", 4), -EBADMSG);
    keystore *ks = NULL;
    CHECK_INT(keyload_finish(l1, &ks), -EBADMSG);
    CHECK(ks == NULL);
}

int main(void)
{
    test_good();
    test_good_v1();
    test_big_v1();
    test_giveups();
    test_wiping();
    test_depth();
    test_is_v2();
    test_mutations();
    return 0;
}
