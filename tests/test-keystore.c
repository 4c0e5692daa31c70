/* test-keystore: Verify codes, scopes, rotation, lookups, pre-rendered fields, build time and
 * an RCU swap under concurrent readers. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <urcu-qsbr.h>

#include "check.h"
#include "ids.h"
#include "json-util.h"
#include "keydoc.h"
#include "keyops.h"
#include "keystore.h"
#include "macro.h"
#include "secret.h"
#include "timeutil.h"

/* 2025-10-28T16:46:40Z */
#define NOW INT64_C(1761670000)
#define PAST "2025-10-01T00:00:00Z"
#define FUTURE "2030-01-01T00:00:00Z"

#define S_A "sec_0001aaaaaaaaaaaaaaaaaa"
#define S_D "sec_0001dddddddddddddddddd"
#define S_E "sec_0001eeeeeeeeeeeeeeeeee"
#define S_R_OLD "sec_0001rotatedoldoldoldo"
#define S_R_NEW "sec_0001rotatednewnewnewn"
#define S_W "sec_0001wildcardwildcardw"
#define S_X "sec_0001disabledexpiredxx"

static const char *const T0 = "2025-10-28T16:45:18Z";

static json_t *secret_json(const char *plain, const char *expires)
{
    uint8_t d[SECRET_DIGEST_LEN];
    char hex[SECRET_HEX_LEN + 1];

    secret_digest(plain, strlen(plain), d);
    secret_hex(d, hex);
    return json_pack("{s:s, s:s, s:o}", "sha256", hex, "created_at", T0, "expires_at",
                     expires ? json_string(expires) : json_null());
}

/* A v2 key; scopes is JSON text; secrets is NULL-terminated {plaintext, expiry-or-NULL}. */
static json_t *key_json(const char *id, const char *name, const char *scopes, const char *expires,
                        bool disabled, const char *const *secrets)
{
    json_t *list = json_array(), *key;

    CHECK(list != NULL);
    for (size_t i = 0; secrets[i]; i += 2)
        CHECK_INT(json_array_append_new(list, secret_json(secrets[i], secrets[i + 1])), 0);
    key = json_pack("{s:s, s:s, s:s, s:{s:s}, s:o, s:o, s:b, s:n, s:o}", "id", id, "name", name,
                    "created_at", T0, "metadata", "team", "payments", "scopes",
                    json_loads(scopes, 0, NULL), "expires_at",
                    expires ? json_string(expires) : json_null(), "disabled", disabled,
                    "rate_limit", "secrets", list);
    CHECK(key != NULL);
    return key;
}

static void add_key(json_t *doc, json_t *key)
{
    CHECK_INT(json_array_append_new(json_object_get(doc, "keys"), key), 0);
}

/* Every keystore the tests build comes from a document keydoc_validate() accepted. */
static keystore *build(json_t *doc, uint64_t generation)
{
    keystore *ks = NULL;
    _cleanup_free_ char *err = NULL;
    int r = keydoc_validate(doc, &err);

    if (r < 0)
        fprintf(stderr, "invalid test document: %s\n", err);
    CHECK_INT(r, 0);
    CHECK_INT(keystore_new(doc, generation, &ks, &err), 0);
    CHECK(ks != NULL);
    CHECK(err == NULL);
    return ks;
}

static verify_code verify(const keystore *ks, const char *key, const char *scope, int64_t now,
                          const keystore_key **ret)
{
    return keystore_verify(ks, key, strlen(key), scope, now, ret);
}

/* The Verify fields of k as a C string (freed by the caller). */
static char *fields_of(const keystore_key *k)
{
    size_t len = keystore_key_verify_fields(k, NULL, 0);
    char *s = malloc(len + 1);

    CHECK(s != NULL);
    CHECK_INT(keystore_key_verify_fields(k, s, len), len);
    s[len] = 0;
    /* Too small a buffer gets nothing written, and the length it needs. */
    CHECK_INT(keystore_key_verify_fields(k, s, len - 1), len);
    return s;
}

static json_t *sample_doc(void)
{
    json_t *doc = keydoc_new();

    CHECK(doc != NULL);
    add_key(doc, key_json("key_A", "A", "[\"documents.*\", \"admin.read\"]", NULL, false,
                          (const char *const[]){S_A, NULL, NULL}));
    add_key(doc, key_json("key_D", "D", "[]", NULL, true, (const char *const[]){S_D, NULL, NULL}));
    add_key(doc, key_json("key_E", "E", "[]", PAST, false, (const char *const[]){S_E, NULL, NULL}));
    add_key(doc, key_json("key_R", "R", "[]", FUTURE, false,
                          (const char *const[]){S_R_OLD, PAST, S_R_NEW, NULL, NULL}));
    add_key(doc,
            key_json("key_W", "W", "[\"*\"]", NULL, false, (const char *const[]){S_W, NULL, NULL}));
    add_key(doc,
            key_json("key_X", "X", "[\"a\"]", PAST, true, (const char *const[]){S_X, NULL, NULL}));
    return doc;
}

static void test_codes(void)
{
    _cleanup_json_ json_t *doc = sample_doc();
    _cleanup_(keystore_freep) keystore *ks = build(doc, 7);
    const keystore_key *k = NULL;
    char long_key[IDS_PRESENTED_MAX + 2];
    char gen1[IDS_SECRET_LEN + 1];

    CHECK_INT(verify(ks, S_A, NULL, NOW, &k), VERIFY_VALID);
    CHECK(k != NULL);
    CHECK_STR(keystore_key_id(k), "key_A");
    CHECK_STR(keystore_key_name(k), "A");

    /* NOT_FOUND and MALFORMED hand out no key. */
    k = (const keystore_key *)1;
    CHECK_INT(verify(ks, "sec_0001notakeyatallxxxxx", NULL, NOW, &k), VERIFY_NOT_FOUND);
    CHECK(k == NULL);
    k = (const keystore_key *)1;
    CHECK_INT(verify(ks, "", NULL, NOW, &k), VERIFY_MALFORMED);
    CHECK(k == NULL);
    CHECK_INT(verify(ks, "sec_0001 aaa", NULL, NOW, NULL), VERIFY_MALFORMED);
    CHECK_INT(verify(ks, "sec_0001\x7f", NULL, NOW, NULL), VERIFY_MALFORMED);
    memset(long_key, 'a', sizeof(long_key) - 1);
    long_key[sizeof(long_key) - 1] = '\0';
    CHECK_INT(verify(ks, long_key, NULL, NOW, NULL), VERIFY_MALFORMED);
    /* A generation-1 secret with a broken checksum never reaches the lookup, even when its
     * digest is in the store. */
    CHECK_INT(ids_new_secret(NOW, gen1), 0);
    {
        _cleanup_json_ json_t *doc2 = keydoc_new();
        _cleanup_(keystore_freep) keystore *ks2 = NULL;

        add_key(doc2,
                key_json("key_G", "G", "[]", NULL, false, (const char *const[]){gen1, NULL, NULL}));
        ks2 = build(doc2, 1);
        CHECK_INT(verify(ks2, gen1, NULL, NOW, NULL), VERIFY_VALID);
        gen1[IDS_SECRET_LEN - 1] = gen1[IDS_SECRET_LEN - 1] == 'a' ? 'b' : 'a';
        CHECK_INT(verify(ks2, gen1, NULL, NOW, NULL), VERIFY_MALFORMED);
    }
    /* The length is the caller's: a prefix of a real secret is another key. */
    CHECK_INT(keystore_verify(ks, S_A, strlen(S_A) - 1, NULL, NOW, NULL), VERIFY_NOT_FOUND);

    CHECK_INT(verify(ks, S_D, NULL, NOW, &k), VERIFY_DISABLED);
    CHECK_STR(keystore_key_id(k), "key_D");
    CHECK_INT(verify(ks, S_E, NULL, NOW, &k), VERIFY_EXPIRED);
    CHECK_STR(keystore_key_id(k), "key_E");
    /* Disabled wins over expired. */
    CHECK_INT(verify(ks, S_X, "a", NOW, &k), VERIFY_DISABLED);
    CHECK_STR(keystore_key_id(k), "key_X");

    /* The key expires at the second it names. */
    {
        int64_t past;
        CHECK_INT(timeutil_parse_rfc3339(PAST, false, &past), 0);
        CHECK_INT(verify(ks, S_E, NULL, past - 1, NULL), VERIFY_VALID);
        CHECK_INT(verify(ks, S_E, NULL, past, NULL), VERIFY_EXPIRED);
        /* Expiry is checked before the scope. */
        CHECK_INT(verify(ks, S_E, "nope", past, NULL), VERIFY_EXPIRED);
        CHECK_INT(verify(ks, S_E, "nope", past - 1, NULL), VERIFY_FORBIDDEN);
    }

    /* Rotation: the old secret expired, the new one works, both name key_R. */
    CHECK_INT(verify(ks, S_R_OLD, NULL, NOW, &k), VERIFY_EXPIRED);
    CHECK_STR(keystore_key_id(k), "key_R");
    CHECK_INT(verify(ks, S_R_NEW, NULL, NOW, &k), VERIFY_VALID);
    CHECK_STR(keystore_key_id(k), "key_R");

    CHECK_INT(verify(ks, S_A, "billing.read", NOW, &k), VERIFY_FORBIDDEN);
    CHECK_STR(keystore_key_id(k), "key_A");
    CHECK_INT(verify(ks, S_A, "documents.read", NOW, NULL), VERIFY_VALID);
}

static void test_scopes(void)
{
    static const struct {
        const char *scope;
        bool ok;
    } cases[] = {
        {"documents.read", true},
        {"documents.a.b", true},
        {"documents.", true},
        {"documents.*", true},
        {"documents", false},
        {"documentsX.read", false},
        {"Documents.read", false},
        {"admin.read", true},
        {"admin.read.x", false},
        {"admin.write", false},
        {"admin", false},
        {"admin.rea", false},
        {"", false},
        {"*", false},
        {"xdocuments.read", false},
    };
    _cleanup_json_ json_t *doc = sample_doc();
    _cleanup_(keystore_freep) keystore *ks = build(doc, 1);
    const keystore_key *a = keystore_get(ks, "key_A"), *w = keystore_get(ks, "key_W");
    const keystore_key *d = keystore_get(ks, "key_D");

    CHECK(a && w && d);
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        if (keystore_scope_allows(a, cases[i].scope) != cases[i].ok)
            fprintf(stderr, "scope case %zu: \"%s\"\n", i, cases[i].scope);
        CHECK_INT(keystore_scope_allows(a, cases[i].scope), cases[i].ok);
        CHECK_INT(verify(ks, S_A, cases[i].scope, NOW, NULL),
                  cases[i].ok ? VERIFY_VALID : VERIFY_FORBIDDEN);
        /* "*" alone allows everything. */
        CHECK(keystore_scope_allows(w, cases[i].scope));
        /* No scopes: nothing is allowed, but no scope asked is fine. */
        CHECK(!keystore_scope_allows(d, cases[i].scope));
    }
    CHECK(!keystore_scope_allows(a, NULL));
    CHECK_INT(verify(ks, S_W, "anything.at.all", NOW, NULL), VERIFY_VALID);
}

/* Absent nullable members mean null: never expires, no rate limit. */
static void test_absent_nullable(void)
{
    _cleanup_json_ json_t *doc = keydoc_new();
    _cleanup_(keystore_freep) keystore *ks = NULL;
    const keystore_key *k = NULL;
    json_t *key = key_json("key_N", "N", "[]", NULL, false, (const char *const[]){S_A, NULL, NULL});

    CHECK_INT(json_object_del(key, "expires_at"), 0);
    CHECK_INT(json_object_del(key, "rate_limit"), 0);
    CHECK_INT(json_object_del(json_array_get(json_object_get(key, "secrets"), 0), "expires_at"), 0);
    add_key(doc, key);
    ks = build(doc, 1);
    CHECK_INT(verify(ks, S_A, NULL, INT64_C(253402300000), &k), VERIFY_VALID);
    _cleanup_free_ char *fields = fields_of(k);
    CHECK(check_contains(fields, ",\"expires_at\":null"));
}

static void test_rotation_grace(void)
{
    _cleanup_json_ json_t *doc = keydoc_new();
    _cleanup_(keystore_freep) keystore *ks = NULL;
    const keystore_key *k1 = NULL, *k2 = NULL;

    /* Old secret still inside its grace period: both verify. */
    add_key(doc, key_json("key_R", "R", "[]", NULL, false,
                          (const char *const[]){S_R_OLD, FUTURE, S_R_NEW, NULL, NULL}));
    ks = build(doc, 1);
    CHECK_INT(verify(ks, S_R_OLD, NULL, NOW, &k1), VERIFY_VALID);
    CHECK_INT(verify(ks, S_R_NEW, NULL, NOW, &k2), VERIFY_VALID);
    CHECK(k1 == k2);
    CHECK_INT(keystore_size(ks), 1);
}

static void test_legacy_v1(void)
{
    static const char v1[] =
        "{\"keys\": [{\"id\": \"key_0001vDmowdgLBqEcDYe\", \"secret\": "
        "\"sec_0001vDmowg2tzwvpaFL\", \"name\": \"MyService\", \"created_at\": "
        "\"2025-10-28T16:45:18.123456\", \"metadata\": {\"team\": \"payments\"}}]}";
    _cleanup_json_ json_t *doc = NULL;
    _cleanup_(keystore_freep) keystore *ks = NULL;
    _cleanup_free_ char *err = NULL;
    _cleanup_free_ char *fields = NULL;
    const keystore_key *k = NULL;

    CHECK_INT(keydoc_parse(v1, strlen(v1), &doc, NULL, &err), 0);
    ks = build(doc, 1);
    CHECK_INT(verify(ks, "sec_0001vDmowg2tzwvpaFL", NULL, NOW, &k), VERIFY_VALID);
    CHECK_STR(keystore_key_id(k), "key_0001vDmowdgLBqEcDYe");
    CHECK_STR(keystore_key_name(k), "MyService");
    fields = fields_of(k);
    CHECK_STR(fields, "\"key_id\":\"key_0001vDmowdgLBqEcDYe\",\"name\":\"MyService\","
                      "\"metadata\":{\"team\":\"payments\"},\"scopes\":[],\"expires_at\":null");
    CHECK_STR(keystore_key_created_at(k), "2025-10-28T16:45:18Z");
    CHECK_INT(verify(ks, "sec_0001vDmowg2tzwvpaFM", NULL, NOW, NULL), VERIFY_NOT_FOUND);
}

static void test_lookups(void)
{
    _cleanup_json_ json_t *doc = sample_doc();
    _cleanup_(keystore_freep) keystore *ks = build(doc, 42);
    static const char *const ids[] = {"key_A", "key_D", "key_E", "key_R", "key_W", "key_X"};

    CHECK_INT(keystore_size(ks), ELEMENTSOF(ids));
    CHECK_INT(keystore_generation(ks), 42);
    for (size_t i = 0; i < ELEMENTSOF(ids); i++) {
        const keystore_key *k = keystore_at(ks, i);
        CHECK(k != NULL);
        CHECK_STR(keystore_key_id(k), ids[i]);
        CHECK(keystore_get(ks, ids[i]) == k);
        CHECK_STR(keystore_key_created_at(k), T0);
    }
    CHECK(keystore_at(ks, ELEMENTSOF(ids)) == NULL);
    CHECK(keystore_get(ks, "key_Z") == NULL);
    CHECK(keystore_get(ks, "key_") == NULL);
    CHECK(keystore_get(ks, "") == NULL);
    CHECK(keystore_get(ks, NULL) == NULL);
}

static void test_verify_fields(void)
{
    _cleanup_json_ json_t *doc = sample_doc();
    _cleanup_(keystore_freep) keystore *ks = NULL;
    json_t *odd;

    /* A name that needs escaping, and non-ASCII metadata. */
    odd = key_json("key_Q", "a \"quoted\"\\ name\n\xc3\xa9", "[\"x.y\"]", FUTURE, false,
                   (const char *const[]){"sec_0001quotedquotedquot", NULL, NULL});
    CHECK_INT(json_object_set_new(json_object_get(odd, "metadata"), "note",
                                  json_string("caf\xc3\xa9 </script>")),
              0);
    CHECK_INT(json_object_set_new(odd, "rate_limit",
                                  json_pack("{s:i, s:i}", "per_second", 5, "burst", 9)),
              0);
    add_key(doc, odd);
    ks = build(doc, 1);

    for (size_t i = 0; i < keystore_size(ks); i++) {
        const keystore_key *k = keystore_at(ks, i);
        const json_t *o = json_array_get(json_object_get(doc, "keys"), i);
        const json_t *scopes = json_object_get(o, "scopes");
        _cleanup_free_ char *fields = fields_of(k), *wrapped = NULL;
        _cleanup_json_ json_t *parsed = NULL, *mine = NULL, *theirs = NULL;
        json_error_t jerr;
        uint32_t per_second, burst;

        CHECK(asprintf(&wrapped, "{%s}", fields) > 0);
        parsed = json_loads(wrapped, 0, &jerr);
        if (!parsed)
            fprintf(stderr, "fields of %s do not parse: %s (%s)\n", keystore_key_id(k), wrapped,
                    jerr.text);
        CHECK(parsed != NULL);
        CHECK_INT(json_object_size(parsed), 5);
        CHECK_STR(json_string_value(json_object_get(parsed, "key_id")), keystore_key_id(k));
        CHECK_STR(json_string_value(json_object_get(parsed, "name")), keystore_key_name(k));
        CHECK(json_equal(json_object_get(parsed, "metadata"), json_object_get(o, "metadata")));
        CHECK(json_equal(json_object_get(parsed, "scopes"), json_object_get(o, "scopes")));
        CHECK(json_equal(json_object_get(parsed, "expires_at"), json_object_get(o, "expires_at")));
        /* Member order as keystore.h spells it. */
        CHECK(strncmp(fields, "\"key_id\":", 9) == 0);
        CHECK(check_contains(wrapped, "\"expires_at\":"));
        CHECK(strstr(wrapped, "\"name\":") < strstr(wrapped, "\"metadata\":"));
        CHECK(strstr(wrapped, "\"metadata\":") < strstr(wrapped, "\"scopes\":"));
        CHECK(strstr(wrapped, "\"scopes\":") < strstr(wrapped, "\"expires_at\":"));

        /* The scopes one by one, the rate limit, and the admin Key object, which must be
         * what keyops renders from the document. */
        CHECK_INT(keystore_key_n_scopes(k), json_array_size(scopes));
        for (size_t j = 0; j < json_array_size(scopes); j++)
            CHECK_STR(keystore_key_scope(k, j), json_string_value(json_array_get(scopes, j)));
        CHECK(keystore_key_scope(k, json_array_size(scopes)) == NULL);
        CHECK(keystore_key_rate_limit(k, &per_second, &burst) == (k == keystore_get(ks, "key_Q")));
        CHECK_INT(per_second, k == keystore_get(ks, "key_Q") ? 5 : 0);
        CHECK_INT(burst, k == keystore_get(ks, "key_Q") ? 9 : 0);
        mine = keystore_key_render(ks, k, NOW);
        theirs = keyops_render_key(o, NOW);
        CHECK(mine != NULL && theirs != NULL);
        CHECK(json_equal(mine, theirs));
    }
    _cleanup_free_ char *e_fields = fields_of(keystore_get(ks, "key_E"));
    CHECK(check_contains(e_fields, "\"expires_at\":\"2025-10-01T00:00:00Z\""));
}

typedef struct bad_build {
    const char *text;
    const char *want;
} bad_build;

#define SECRET_ENTRY(hex)                                                                          \
    "{\"sha256\":\"" hex "\",\"created_at\":\"2025-10-28T16:45:18Z\",\"expires_at\":null}"
#define HEX1 "1111111111111111111111111111111111111111111111111111111111111111"
#define HEX2 "2222222222222222222222222222222222222222222222222222222222222222"
#define RAWKEY(id, secrets)                                                                        \
    "{\"id\":\"" id "\",\"name\":\"n\",\"created_at\":\"2025-10-28T16:45:18Z\",\"metadata\":{},"   \
    "\"scopes\":[],\"expires_at\":null,\"disabled\":false,\"rate_limit\":null,\"secrets\":"        \
    "[" secrets "]}"

/* Documents that skipped keydoc_validate(): the keystore refuses them instead of crashing. */
static const bad_build bad_builds[] = {
    {"{\"version\":2,\"keys\":[" RAWKEY("key_A", SECRET_ENTRY(HEX1)) "," RAWKEY(
         "key_A", SECRET_ENTRY(HEX2)) "]}",
     "keys[1] (key_A): duplicate id (also keys[0])"},
    {"{\"version\":2,\"keys\":[" RAWKEY("key_A", SECRET_ENTRY(HEX1)) "," RAWKEY(
         "key_B", SECRET_ENTRY(HEX2) "," SECRET_ENTRY(HEX1)) "]}",
     "keys[1] (key_B): duplicate secret (also key_A)"},
    {"{\"version\":2,\"keys\":{}}", "$.keys: not an array"},
    {"{\"version\":2,\"keys\":[1]}", "keys[0]: not a valid key"},
    {"{\"version\":2,\"keys\":[" RAWKEY("key_A", "") "]}", "keys[0]: not a valid key"},
    {"{\"version\":2,\"keys\":[" RAWKEY("sec_A", SECRET_ENTRY(HEX1)) "]}",
     "keys[0]: not a valid key"},
    {"{\"version\":2,\"keys\":[" RAWKEY("key_A", SECRET_ENTRY("XYZ")) "]}",
     "keys[0] (key_A): secrets[0]: not a valid secret"},
    {"{\"version\":2,\"keys\":[" RAWKEY("key_A", "{}") "]}",
     "keys[0] (key_A): secrets[0]: not a valid secret"},
    {"{\"version\":2,\"keys\":[{\"id\":\"key_A\",\"name\":\"n\",\"created_at\":\"2025-10-28T16:45:18Z\","
     "\"metadata\":{},\"scopes\":[7],"
     "\"expires_at\":null,\"disabled\":false,\"secrets\":[" SECRET_ENTRY(HEX1) "]}]}",
     "keys[0] (key_A): scopes[0]: not a non-empty string"},
};

static void test_bad_builds(void)
{
    for (size_t i = 0; i < ELEMENTSOF(bad_builds); i++) {
        _cleanup_json_ json_t *doc = json_loads(bad_builds[i].text, 0, NULL);
        _cleanup_free_ char *err = NULL;
        keystore *ks = NULL;
        int r;

        CHECK(doc != NULL);
        r = keystore_new(doc, 1, &ks, &err);
        if (r != -EBADMSG || !check_contains(err, bad_builds[i].want))
            fprintf(stderr, "case %zu: got %d \"%s\", want \"%s\"\n", i, r, err ? err : "(null)",
                    bad_builds[i].want);
        CHECK_INT(r, -EBADMSG);
        CHECK(ks == NULL);
        CHECK(check_contains(err, bad_builds[i].want));
        /* The build kept no reference. */
        CHECK_INT(doc->refcount, 1);
    }
}

static void test_empty(void)
{
    _cleanup_(keystore_freep) keystore *ks = keystore_new_empty(5), *ks2 = NULL;
    _cleanup_json_ json_t *doc = keydoc_new();
    const keystore_key *k = (const keystore_key *)1;

    CHECK(ks != NULL);
    CHECK_INT(keystore_size(ks), 0);
    CHECK_INT(keystore_generation(ks), 5);
    CHECK_INT(verify(ks, S_A, NULL, NOW, &k), VERIFY_NOT_FOUND);
    CHECK(k == NULL);
    CHECK_INT(verify(ks, "", NULL, NOW, NULL), VERIFY_MALFORMED);
    CHECK(keystore_get(ks, "key_A") == NULL);
    CHECK(keystore_at(ks, 0) == NULL);
    CHECK(keystore_free(NULL) == NULL);

    /* An empty document builds too. */
    ks2 = build(doc, 6);
    CHECK_INT(keystore_size(ks2), 0);
    CHECK_INT(verify(ks2, S_A, NULL, NOW, NULL), VERIFY_NOT_FOUND);
    CHECK(keystore_get(ks2, "key_A") == NULL);
    /* The keystore keeps its own copy, not the document. */
    CHECK_INT(doc->refcount, 1);
}

static void test_code_names(void)
{
    static const char *const want[] = {"VALID",    "NOT_FOUND", "MALFORMED",   "EXPIRED",
                                       "DISABLED", "FORBIDDEN", "RATE_LIMITED"};

    CHECK_INT(ELEMENTSOF(want), _VERIFY_CODE_MAX);
    for (size_t i = 0; i < ELEMENTSOF(want); i++)
        CHECK_STR(keystore_code_name((verify_code)i), want[i]);
    CHECK_STR(keystore_code_name(_VERIFY_CODE_MAX), "UNKNOWN");
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* n keys with secrets "sec_0big<i>", built with jansson directly (fast), validated. */
static json_t *big_doc(size_t n)
{
    json_t *doc = keydoc_new(), *keys = json_object_get(doc, "keys");

    for (size_t i = 0; i < n; i++) {
        char id[32], plain[32], hex[SECRET_HEX_LEN + 1];
        uint8_t d[SECRET_DIGEST_LEN];

        snprintf(id, sizeof(id), "key_big%zu", i);
        snprintf(plain, sizeof(plain), "sec_0big%zu", i);
        secret_digest(plain, strlen(plain), d);
        secret_hex(d, hex);
        CHECK_INT(
            json_array_append_new(
                keys,
                json_pack("{s:s, s:s, s:s, s:{s:s}, s:[s], s:n, s:b, s:n, s:[{s:s, s:s, s:n}]}",
                          "id", id, "name", id, "created_at", T0, "metadata", "i", id, "scopes",
                          "documents.*", "expires_at", "disabled", 0, "rate_limit", "secrets",
                          "sha256", hex, "created_at", T0, "expires_at")),
            0);
    }
    return doc;
}

static void test_big_build(void)
{
    const size_t n = 100000;
    _cleanup_json_ json_t *doc = big_doc(n);
    _cleanup_(keystore_freep) keystore *ks = NULL;
    _cleanup_free_ char *err = NULL;
    struct timespec t0;
    double validate_s, build_s, verify_s;
    const keystore_key *k;
    char plain[32], id[32];

    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_INT(keydoc_validate(doc, &err), 0);
    validate_s = seconds_since(&t0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_INT(keystore_new(doc, 1, &ks, &err), 0);
    build_s = seconds_since(&t0);
    CHECK_INT(keystore_size(ks), n);

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (size_t i = 0; i < n; i += 7) {
        snprintf(plain, sizeof(plain), "sec_0big%zu", i);
        snprintf(id, sizeof(id), "key_big%zu", i);
        CHECK_INT(verify(ks, plain, "documents.read", NOW, &k), VERIFY_VALID);
        CHECK_STR(keystore_key_id(k), id);
        CHECK(keystore_get(ks, id) == k);
        CHECK(keystore_at(ks, i) == k);
    }
    verify_s = seconds_since(&t0);
    CHECK_INT(verify(ks, "sec_0big100000", NULL, NOW, NULL), VERIFY_NOT_FOUND);
    printf("%zu keys: validate %.3f s, build %.3f s, %zu verifies %.3f s (%.2f us each)\n", n,
           validate_s, build_s, n / 7 + 1, verify_s, verify_s * 1e6 / (double)(n / 7 + 1));
}

/* --- keystore swap under concurrent RCU readers --- */

#define READERS 4
#define COMMON_SECRET "sec_0commonsecretforall"

static keystore *g_ks;
static atomic_bool g_stop;
static atomic_ulong g_reads, g_wrong, g_generations_seen;

static keystore *generation_store(uint64_t g)
{
    _cleanup_json_ json_t *doc = keydoc_new();
    char id[32], plain[48];
    keystore *ks = NULL;
    _cleanup_free_ char *err = NULL;

    add_key(doc, key_json("key_common", "common", "[]", NULL, false,
                          (const char *const[]){COMMON_SECRET, NULL, NULL}));
    snprintf(id, sizeof(id), "key_gen%llu", (unsigned long long)g);
    snprintf(plain, sizeof(plain), "sec_0generation%llu", (unsigned long long)g);
    add_key(doc,
            key_json(id, id, "[\"gen\"]", NULL, false, (const char *const[]){plain, NULL, NULL}));
    CHECK_INT(keystore_new(doc, g, &ks, &err), 0);
    return ks;
}

static void *reader(void *arg)
{
    uint64_t last = 0;
    unsigned long reads = 0, wrong = 0, seen = 0;
    char plain[48], id[32];

    (void)arg;
    rcu_register_thread();
    while (!atomic_load(&g_stop)) {
        const keystore_key *k = NULL;

        rcu_read_lock();
        keystore *ks = rcu_dereference(g_ks);
        uint64_t g = keystore_generation(ks);

        if (verify(ks, COMMON_SECRET, NULL, NOW, &k) != VERIFY_VALID ||
            strcmp(keystore_key_id(k), "key_common") != 0)
            wrong++;
        snprintf(plain, sizeof(plain), "sec_0generation%llu", (unsigned long long)g);
        snprintf(id, sizeof(id), "key_gen%llu", (unsigned long long)g);
        if (verify(ks, plain, "gen", NOW, &k) != VERIFY_VALID || strcmp(keystore_key_id(k), id))
            wrong++;
        /* The previous generation's key is gone from this one. */
        snprintf(plain, sizeof(plain), "sec_0generation%llu", (unsigned long long)g + 1);
        if (verify(ks, plain, NULL, NOW, NULL) != VERIFY_NOT_FOUND)
            wrong++;
        rcu_read_unlock();
        rcu_quiescent_state();

        reads++;
        if (g != last) {
            seen++;
            last = g;
        }
    }
    rcu_unregister_thread();
    atomic_fetch_add(&g_reads, reads);
    atomic_fetch_add(&g_wrong, wrong);
    atomic_fetch_add(&g_generations_seen, seen);
    return NULL;
}

static void test_rcu_swap(void)
{
    pthread_t threads[READERS];
    struct timespec t0;
    uint64_t g = 1;

    rcu_assign_pointer(g_ks, generation_store(g));
    for (int i = 0; i < READERS; i++)
        CHECK_INT(pthread_create(&threads[i], NULL, reader, NULL), 0);

    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* At least a second, and enough swaps to matter even under valgrind. */
    while (seconds_since(&t0) < 1.0 || g < 8) {
        keystore *next = generation_store(++g), *old;

        old = rcu_xchg_pointer(&g_ks, next);
        synchronize_rcu();
        keystore_free(old);
    }
    atomic_store(&g_stop, true);
    for (int i = 0; i < READERS; i++)
        CHECK_INT(pthread_join(threads[i], NULL), 0);
    g_ks = keystore_free(g_ks);

    printf("rcu: %llu generations published, %lu reads, %lu generation changes seen, %lu "
           "wrong\n",
           (unsigned long long)g, atomic_load(&g_reads), atomic_load(&g_generations_seen),
           atomic_load(&g_wrong));
    CHECK_INT(atomic_load(&g_wrong), 0);
    CHECK(atomic_load(&g_reads) > 0);
    CHECK(g > 2);
    /* Each reader starts at "generation 0": more than READERS changes means at least one
     * reader saw a second generation. */
    CHECK(atomic_load(&g_generations_seen) > READERS);
}

int main(void)
{
    test_code_names();
    test_codes();
    test_scopes();
    test_rotation_grace();
    test_absent_nullable();
    test_legacy_v1();
    test_lookups();
    test_verify_fields();
    test_bad_builds();
    test_empty();
    test_big_build();
    test_rcu_swap();
    return 0;
}
