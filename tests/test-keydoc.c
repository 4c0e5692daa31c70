/* test-keydoc: the keys.json codec — v1 conversion, v2 round trips, schema errors. */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "json-util.h"
#include "keydoc.h"
#include "macro.h"

#define SHA_A "\"50f95e9d053f3ba4ed2c0025e2bf7095a676b5fc8493daf265a864af020c2c17\""
#define SHA_B "\"cea08853fb039aa227f6f0ea0a4a6ff07aec81bed5fef1091681acb378a10db5\""
#define T0 "\"2025-10-28T16:45:18Z\""
#define SECRETS_A "[{\"sha256\":" SHA_A ",\"created_at\":" T0 ",\"expires_at\":null}]"
#define SECRETS_B "[{\"sha256\":" SHA_B ",\"created_at\":" T0 ",\"expires_at\":null}]"

/* A v2 key with every member spelled out, so each bad case changes exactly one. */
#define KEY(id, name, created, meta, scopes, exp, dis, rl, secrets)                                \
    "{\"id\":" id ",\"name\":" name ",\"created_at\":" created ",\"metadata\":" meta               \
    ",\"scopes\":" scopes ",\"expires_at\":" exp ",\"disabled\":" dis ",\"rate_limit\":" rl        \
    ",\"secrets\":" secrets "}"
#define ID_A "\"key_0001vDmowdgLBqEcDYe\""
#define ID_B "\"key_0002wRotatedKeyAb\""
#define GOOD_A KEY(ID_A, "\"A\"", T0, "{}", "[]", "null", "false", "null", SECRETS_A)
#define GOOD_B KEY(ID_B, "\"B\"", T0, "{}", "[]", "null", "false", "null", SECRETS_B)
#define V2(keys) "{\"version\":2,\"keys\":[" keys "]}"

#define V1_SAMPLE                                                                                  \
    "{\n"                                                                                          \
    "  \"keys\": [\n"                                                                              \
    "    {\n"                                                                                      \
    "      \"id\": \"key_0001vDmowdgLBqEcDYe\",\n"                                                 \
    "      \"secret\": \"sec_0001vDmowg2tzwvpaFL\",\n"                                             \
    "      \"name\": \"MyService\",\n"                                                             \
    "      \"created_at\": \"2025-10-28T16:45:18.123456\",\n"                                      \
    "      \"metadata\": {\n"                                                                      \
    "        \"team\": \"payments\"\n"                                                             \
    "      }\n"                                                                                    \
    "    }\n"                                                                                      \
    "  ]\n"                                                                                        \
    "}\n"

/* What V1_SAMPLE must become, byte for byte. */
#define V1_CONVERTED                                                                               \
    "{\n"                                                                                          \
    "  \"version\": 2,\n"                                                                          \
    "  \"keys\": [\n"                                                                              \
    "    {\n"                                                                                      \
    "      \"id\": \"key_0001vDmowdgLBqEcDYe\",\n"                                                 \
    "      \"name\": \"MyService\",\n"                                                             \
    "      \"created_at\": \"2025-10-28T16:45:18Z\",\n"                                            \
    "      \"metadata\": {\n"                                                                      \
    "        \"team\": \"payments\"\n"                                                             \
    "      },\n"                                                                                   \
    "      \"scopes\": [],\n"                                                                      \
    "      \"expires_at\": null,\n"                                                                \
    "      \"disabled\": false,\n"                                                                 \
    "      \"rate_limit\": null,\n"                                                                \
    "      \"secrets\": [\n"                                                                       \
    "        {\n"                                                                                  \
    "          \"sha256\": " SHA_A ",\n"                                                           \
    "          \"created_at\": \"2025-10-28T16:45:18Z\",\n"                                        \
    "          \"expires_at\": null\n"                                                             \
    "        }\n"                                                                                  \
    "      ]\n"                                                                                    \
    "    }\n"                                                                                      \
    "  ]\n"                                                                                        \
    "}\n"

/* Unknown members everywhere, already in keydoc_dump()'s layout so the round trip must give
 * back the same bytes. */
#define V2_UNKNOWN                                                                                 \
    "{\n"                                                                                          \
    "  \"comment\": \"written by hand\",\n"                                                        \
    "  \"version\": 2,\n"                                                                          \
    "  \"keys\": [\n"                                                                              \
    "    {\n"                                                                                      \
    "      \"id\": \"key_0001vDmowdgLBqEcDYe\",\n"                                                 \
    "      \"owner\": {\n"                                                                         \
    "        \"team\": \"ops\",\n"                                                                 \
    "        \"pager\": [\n"                                                                       \
    "          1,\n"                                                                               \
    "          2.5,\n"                                                                             \
    "          true\n"                                                                             \
    "        ]\n"                                                                                  \
    "      },\n"                                                                                   \
    "      \"name\": \"MyService\",\n"                                                             \
    "      \"created_at\": \"2025-10-28T16:45:18Z\",\n"                                            \
    "      \"metadata\": {},\n"                                                                    \
    "      \"scopes\": [\n"                                                                        \
    "        \"documents.read\"\n"                                                                 \
    "      ],\n"                                                                                   \
    "      \"expires_at\": \"2030-01-01T00:00:00Z\",\n"                                            \
    "      \"disabled\": false,\n"                                                                 \
    "      \"rate_limit\": {\n"                                                                    \
    "        \"per_second\": 50,\n"                                                                \
    "        \"window\": \"1s\",\n"                                                                \
    "        \"burst\": 100\n"                                                                     \
    "      },\n"                                                                                   \
    "      \"secrets\": [\n"                                                                       \
    "        {\n"                                                                                  \
    "          \"note\": \"first\",\n"                                                             \
    "          \"sha256\": " SHA_A ",\n"                                                           \
    "          \"created_at\": \"2025-10-28T16:45:18Z\",\n"                                        \
    "          \"expires_at\": null,\n"                                                            \
    "          \"origin\": null\n"                                                                 \
    "        }\n"                                                                                  \
    "      ],\n"                                                                                   \
    "      \"zz_last\": 0\n"                                                                       \
    "    }\n"                                                                                      \
    "  ],\n"                                                                                       \
    "  \"zz_trailer\": {\n"                                                                        \
    "    \"a\": null\n"                                                                            \
    "  }\n"                                                                                        \
    "}\n"

static char *dump(const json_t *doc)
{
    char *buf = NULL;
    size_t len = 0;

    CHECK_INT(keydoc_dump(doc, &buf, &len), 0);
    CHECK_INT(len, strlen(buf));
    CHECK(len > 0 && buf[len - 1] == '\n');
    return buf;
}

static json_t *parse_ok(const char *text, bool want_v1)
{
    json_t *doc = NULL;
    char *err = NULL;
    bool v1 = !want_v1;
    int r = keydoc_parse(text, strlen(text), &doc, &v1, &err);

    if (r != 0)
        fprintf(stderr, "unexpected parse error: %s\n", err ? err : "(none)");
    CHECK_INT(r, 0);
    CHECK(err == NULL);
    CHECK(doc != NULL);
    CHECK_INT(v1, want_v1);
    CHECK_INT(keydoc_validate(doc, NULL), 0);
    return doc;
}

/* Reads tests/data/<name> next to this source file (meson compiles it from the build root,
 * which is the parent of the test binary's directory). */
static char *read_data(const char *name, size_t *ret_len)
{
    char exe[PATH_MAX], path[PATH_MAX * 2];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    _cleanup_free_ char *src = strdup(__FILE__);
    FILE *f;
    char *buf;
    long size;

    CHECK(n > 0 && src);
    exe[n] = '\0';
    if (src[0] == '/')
        snprintf(path, sizeof(path), "%s/data/%s", dirname(src), name);
    else
        snprintf(path, sizeof(path), "%s/../%s/data/%s", dirname(exe), dirname(src), name);
    f = fopen(path, "re");
    if (!f)
        fprintf(stderr, "cannot open %s: %m\n", path);
    CHECK(f != NULL);
    CHECK_INT(fseek(f, 0, SEEK_END), 0);
    size = ftell(f);
    CHECK(size > 0);
    rewind(f);
    buf = malloc((size_t)size + 1);
    CHECK(buf != NULL);
    CHECK_INT(fread(buf, 1, (size_t)size, f), size);
    buf[size] = '\0';
    fclose(f);
    *ret_len = (size_t)size;
    return buf;
}

static void test_v1_sample(void)
{
    _cleanup_json_ json_t *doc = parse_ok(V1_SAMPLE, true), *again = NULL;
    _cleanup_free_ char *out = dump(doc), *out2 = NULL, *file = NULL;
    json_t *key = keydoc_find_key(doc, "key_0001vDmowdgLBqEcDYe", NULL);
    const char *first;
    size_t len;

    CHECK(key != NULL);
    CHECK(json_object_get(key, "secret") == NULL);
    CHECK_STR(json_string_value(
                  json_object_get(json_array_get(json_object_get(key, "secrets"), 0), "sha256")),
              "50f95e9d053f3ba4ed2c0025e2bf7095a676b5fc8493daf265a864af020c2c17");
    CHECK_STR(json_string_value(json_object_get(key, "created_at")), "2025-10-28T16:45:18Z");
    CHECK_STR(json_string_value(json_object_get(json_object_get(key, "metadata"), "team")),
              "payments");
    /* "version" is the first member. */
    first = json_object_iter_key(json_object_iter(doc));
    CHECK_STR(first, "version");
    CHECK(!check_contains(out, "sec_0001"));
    CHECK(!check_contains(out, "\"secret\""));
    CHECK_STR(out, V1_CONVERTED);

    /* The converted document is a stable v2 document. */
    again = parse_ok(out, false);
    out2 = dump(again);
    CHECK_STR(out2, out);

    /* The shipped sample file is the same document. */
    file = read_data("v1-sample.json", &len);
    CHECK_STR(file, V1_SAMPLE);
}

static void test_v1_variants(void)
{
    /* "version": 1, an offset in created_at, no metadata, unknown members in place, and an
     * explicit v2 field that must not be overwritten by a default. */
    static const char text[] =
        "{\"version\":1,\"note\":\"x\",\"keys\":[{\"id\":\"key_A\",\"secret\":\"sec_0001one\","
        "\"name\":\"one\",\"created_at\":\"2025-10-28T18:45:18.5+02:00\",\"owner\":\"me\","
        "\"disabled\":true},{\"id\":\"key_B\",\"secret\":\"sec_0001two\",\"name\":\"two\","
        "\"created_at\":\"2025-10-28 16:45:18\",\"metadata\":null}],\"tail\":1}";
    _cleanup_json_ json_t *doc = parse_ok(text, true);
    _cleanup_free_ char *compact = json_dumps(doc, JSON_PRESERVE_ORDER);
    json_t *b = keydoc_find_key(doc, "key_B", NULL);
    size_t idx = 99;

    CHECK(compact != NULL);
    CHECK(check_contains(compact, "{\"version\": 2, \"note\": \"x\", \"keys\": [{\"id\": "
                                  "\"key_A\", \"name\": \"one\", \"created_at\": "
                                  "\"2025-10-28T16:45:18Z\", \"owner\": \"me\", \"disabled\": "
                                  "true, \"metadata\": {}, \"scopes\": [], \"expires_at\": null, "
                                  "\"rate_limit\": null, \"secrets\": [{\"sha256\": \""));
    CHECK(check_contains(compact, "], \"tail\": 1}"));
    CHECK(!check_contains(compact, "sec_0001"));
    CHECK(b != NULL);
    CHECK(json_is_object(json_object_get(b, "metadata")));
    CHECK_INT(json_object_size(json_object_get(b, "metadata")), 0);
    CHECK(keydoc_find_key(doc, "key_B", &idx) == b);
    CHECK_INT(idx, 1);
    CHECK(keydoc_find_key(doc, "key_C", NULL) == NULL);
}

static void test_v2_sample(void)
{
    size_t len;
    _cleanup_free_ char *file = read_data("v2-sample.json", &len), *out = NULL;
    _cleanup_json_ json_t *doc = NULL;
    char *err = NULL;
    bool v1 = true;

    CHECK_INT(keydoc_parse(file, len, &doc, &v1, &err), 0);
    CHECK(!v1);
    CHECK_INT(json_array_size(json_object_get(doc, "keys")), 2);
    out = dump(doc);
    CHECK_STR(out, file);
}

static void test_unknown_members(void)
{
    _cleanup_json_ json_t *doc = parse_ok(V2_UNKNOWN, false);
    _cleanup_free_ char *out = dump(doc);

    CHECK_STR(out, V2_UNKNOWN);
}

/* Nullable members ("expires_at" of a key or a secret, "rate_limit") may be left out: that
 * means null, and the document is written back without them. */
static void test_absent_nullable(void)
{
    static const char text[] =
        "{\n  \"version\": 2,\n  \"keys\": [\n    {\n      \"id\": \"key_A\",\n      \"name\": "
        "\"A\",\n      \"created_at\": \"2025-10-28T16:45:18Z\",\n      \"metadata\": {},\n      "
        "\"scopes\": [],\n      \"disabled\": false,\n      \"secrets\": [\n        {\n          "
        "\"sha256\": " SHA_A
        ",\n          \"created_at\": \"2025-10-28T16:45:18Z\"\n        }\n      "
        "]\n    }\n  ]\n}\n";
    _cleanup_json_ json_t *doc = parse_ok(text, false);
    _cleanup_free_ char *out = dump(doc);

    CHECK_STR(out, text);
}

static void test_new_and_validate(void)
{
    _cleanup_json_ json_t *doc = keydoc_new();
    _cleanup_free_ char *out = NULL;
    char *err = NULL;

    CHECK(doc != NULL);
    CHECK_INT(keydoc_validate(doc, &err), 0);
    out = dump(doc);
    CHECK_STR(out, "{\n  \"version\": 2,\n  \"keys\": []\n}\n");
    CHECK(keydoc_find_key(doc, "key_A", NULL) == NULL);

    CHECK(keydoc_is_scope("documents.read"));
    CHECK(keydoc_is_scope("*"));
    CHECK(!keydoc_is_scope(""));
    CHECK(!keydoc_is_scope("a b"));
    CHECK(!keydoc_is_scope("a\tb"));
    CHECK(!keydoc_is_scope("caf\xc3\xa9"));
    CHECK(!keydoc_is_scope(NULL));
}

typedef struct bad_case {
    const char *text;
    const char *want; /* substring of the error message */
} bad_case;

/* 257 bytes: one over KEYDOC_NAME_MAX (with its quotes). */
#define NAME_257                                                                                   \
    "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"           \
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"             \
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"             \
    "xxxxxxxxxxxxxxxxx\""

static const bad_case bad_cases[] = {
    /* whole document */
    {"", "$: empty document"},
    {"{\"version\": 2,", "line 1 column"},
    {"{\"version\": 2, \"keys\": [}", "line 1 column 25"},
    {"[1, 2]", "$: not a JSON object"},
    {"42", "$: not a JSON object"},
    {"{\"version\": 3, \"keys\": []}", "$.version: unsupported version 3"},
    {"{\"version\": 0, \"keys\": []}", "$.version: unsupported version 0"},
    {"{\"version\": \"2\", \"keys\": []}", "$.version: not an integer"},
    {"{\"version\": 2}", "$.keys: missing"},
    {"{\"version\": 2, \"keys\": {}}", "$.keys: not an array"},
    {"{\"keys\": 5}", "$.keys: not an array"},
    {V2("1"), "keys[0]: not an object"},
    {V2(GOOD_A ",[]"), "keys[1]: not an object"},
    /* id */
    {V2("{\"name\":\"A\"}"), "keys[0]: id: missing"},
    {V2(KEY("7", "\"A\"", T0, "{}", "[]", "null", "false", "null", SECRETS_A)),
     "keys[0]: id: not a string"},
    {V2(KEY("\"key_\"", "\"A\"", T0, "{}", "[]", "null", "false", "null", SECRETS_A)),
     "keys[0]: id: not a key id"},
    {V2(KEY("\"key_a-b\"", "\"A\"", T0, "{}", "[]", "null", "false", "null", SECRETS_A)),
     "keys[0]: id: not a key id"},
    {V2(GOOD_A "," GOOD_B "," KEY(ID_A, "\"C\"", T0, "{}", "[]", "null", "false", "null",
                                  "[{\"sha256\":\""
                                  "0000000000000000000000000000000000000000000000000000000000000000"
                                  "\",\"created_at\":" T0 ",\"expires_at\":null}]")),
     "keys[2] (key_0001vDmowdgLBqEcDYe): duplicate id (also keys[0])"},
    /* name */
    {V2("{\"id\":" ID_A "}"), "keys[0] (key_0001vDmowdgLBqEcDYe): name: missing"},
    {V2(KEY(ID_A, "\"\"", T0, "{}", "[]", "null", "false", "null", SECRETS_A)),
     "keys[0] (key_0001vDmowdgLBqEcDYe): name: empty"},
    {V2(KEY(ID_A, "[]", T0, "{}", "[]", "null", "false", "null", SECRETS_A)), "name: not a string"},
    {V2(KEY(ID_A, NAME_257, T0, "{}", "[]", "null", "false", "null", SECRETS_A)),
     "name: longer than 256 bytes"},
    /* created_at */
    {V2(KEY(ID_A, "\"A\"", "\"yesterday\"", "{}", "[]", "null", "false", "null", SECRETS_A)),
     "keys[0] (key_0001vDmowdgLBqEcDYe): created_at: not an RFC 3339 time"},
    {V2(KEY(ID_A, "\"A\"", "\"2025-10-28T16:45:18\"", "{}", "[]", "null", "false", "null",
            SECRETS_A)),
     "created_at: not an RFC 3339 time"},
    {V2(KEY(ID_A, "\"A\"", "1761669918", "{}", "[]", "null", "false", "null", SECRETS_A)),
     "created_at: not an RFC 3339 time"},
    /* metadata, scopes */
    {V2(KEY(ID_A, "\"A\"", T0, "[]", "[]", "null", "false", "null", SECRETS_A)),
     "metadata: not an object"},
    {V2(KEY(ID_A, "\"A\"", T0, "null", "[]", "null", "false", "null", SECRETS_A)),
     "metadata: not an object"},
    {V2(KEY(ID_A, "\"A\"", T0, "{}", "\"a\"", "null", "false", "null", SECRETS_A)),
     "scopes: not an array"},
    {V2(KEY(ID_A, "\"A\"", T0, "{}", "[\"\"]", "null", "false", "null", SECRETS_A)),
     "scopes[0]: empty"},
    {V2(KEY(ID_A, "\"A\"", T0, "{}", "[\"a\",\"a b\"]", "null", "false", "null", SECRETS_A)),
     "scopes[1]: not printable ASCII without spaces"},
    {V2(KEY(ID_A, "\"A\"", T0, "{}", "[3]", "null", "false", "null", SECRETS_A)),
     "scopes[0]: not a string"},
    /* expires_at, disabled */
    {V2(KEY(ID_A, "\"A\"", T0, "{}", "[]", "\"2025-13-01T00:00:00Z\"", "false", "null", SECRETS_A)),
     "keys[0] (key_0001vDmowdgLBqEcDYe): expires_at: not null or an RFC 3339 time"},
    {V2(KEY(ID_A, "\"A\"", T0, "{}", "[]", "0", "false", "null", SECRETS_A)),
     "expires_at: not null or an RFC 3339 time"},
    {V2(KEY(ID_A, "\"A\"", T0, "{}", "[]", "null", "\"no\"", "null", SECRETS_A)),
     "disabled: not a boolean"},
    {V2(KEY(ID_A, "\"A\"", T0, "{}", "[]", "null", "0", "null", SECRETS_A)),
     "disabled: not a boolean"},
    /* rate_limit */
    {V2(KEY(ID_A, "\"A\"", T0, "{}", "[]", "null", "false", "5", SECRETS_A)),
     "rate_limit: not null or an object"},
    {V2(KEY(ID_A, "\"A\"", T0, "{}", "[]", "null", "false", "{\"per_second\":0,\"burst\":1}",
            SECRETS_A)),
     "rate_limit.per_second: out of range 1..1000000000"},
    {V2(KEY(ID_A, "\"A\"", T0, "{}", "[]", "null", "false",
            "{\"per_second\":1,\"burst\":1000000001}", SECRETS_A)),
     "rate_limit.burst: out of range"},
    {V2(KEY(ID_A, "\"A\"", T0, "{}", "[]", "null", "false", "{\"per_second\":1}", SECRETS_A)),
     "rate_limit.burst: missing"},
    {V2(KEY(ID_A, "\"A\"", T0, "{}", "[]", "null", "false", "{\"per_second\":1.5,\"burst\":2}",
            SECRETS_A)),
     "rate_limit.per_second: not an integer"},
    /* secrets */
    {V2(KEY(ID_A, "\"A\"", T0, "{}", "[]", "null", "false", "null", "[]")),
     "keys[0] (key_0001vDmowdgLBqEcDYe): secrets: empty"},
    {V2(KEY(ID_A, "\"A\"", T0, "{}", "[]", "null", "false", "null", "{}")),
     "secrets: not an array"},
    {V2(KEY(ID_A, "\"A\"", T0, "{}", "[]", "null", "false", "null", "[\"x\"]")),
     "secrets[0]: not an object"},
    {V2(KEY(ID_A, "\"A\"", T0, "{}", "[]", "null", "false", "null",
            "[{\"created_at\":" T0 ",\"expires_at\":null}]")),
     "secrets[0].sha256: missing"},
    {V2(KEY(ID_A, "\"A\"", T0, "{}", "[]", "null", "false", "null",
            "[{\"sha256\":\"50F95E9D053F3BA4ED2C0025E2BF7095A676B5FC8493DAF265A864AF020C2C17\","
            "\"created_at\":" T0 ",\"expires_at\":null}]")),
     "keys[0] (key_0001vDmowdgLBqEcDYe): secrets[0].sha256: not 64 lowercase hex"},
    {V2(KEY(ID_A, "\"A\"", T0, "{}", "[]", "null", "false", "null",
            "[{\"sha256\":\"50f9\",\"created_at\":" T0 ",\"expires_at\":null}]")),
     "secrets[0].sha256: not 64 lowercase hex"},
    {V2(KEY(ID_A, "\"A\"", T0, "{}", "[]", "null", "false", "null",
            "[{\"sha256\":" SHA_A ",\"created_at\":\"x\",\"expires_at\":null}]")),
     "secrets[0].created_at: not an RFC 3339 time"},
    {V2(KEY(ID_A, "\"A\"", T0, "{}", "[]", "null", "false", "null",
            "[{\"sha256\":" SHA_A ",\"expires_at\":null}]")),
     "secrets[0].created_at: missing"},
    /* required members that are not nullable */
    {V2("{\"id\":" ID_A ",\"name\":\"A\",\"metadata\":{},\"scopes\":[],\"disabled\":false,"
        "\"secrets\":" SECRETS_A "}"),
     "keys[0] (key_0001vDmowdgLBqEcDYe): created_at: missing"},
    {V2("{\"id\":" ID_A ",\"name\":\"A\",\"created_at\":" T0 ",\"scopes\":[],\"disabled\":false,"
        "\"secrets\":" SECRETS_A "}"),
     "keys[0] (key_0001vDmowdgLBqEcDYe): metadata: missing"},
    {V2("{\"id\":" ID_A ",\"name\":\"A\",\"created_at\":" T0 ",\"metadata\":{},\"disabled\":false,"
        "\"secrets\":" SECRETS_A "}"),
     "keys[0] (key_0001vDmowdgLBqEcDYe): scopes: missing"},
    {V2("{\"id\":" ID_A ",\"name\":\"A\",\"created_at\":" T0 ",\"metadata\":{},\"scopes\":[],"
        "\"secrets\":" SECRETS_A "}"),
     "keys[0] (key_0001vDmowdgLBqEcDYe): disabled: missing"},
    {V2("{\"id\":" ID_A ",\"name\":\"A\",\"created_at\":" T0 ",\"metadata\":{},\"scopes\":[],"
        "\"disabled\":false}"),
     "keys[0] (key_0001vDmowdgLBqEcDYe): secrets: missing"},
    {V2(KEY(ID_A, "\"A\"", T0, "{}", "[]", "null", "false", "null",
            "[{\"sha256\":" SHA_A ",\"created_at\":" T0 ",\"expires_at\":true}]")),
     "secrets[0].expires_at: not null or an RFC 3339 time"},
    {V2(GOOD_A "," KEY(ID_B, "\"B\"", T0, "{}", "[]", "null", "false", "null",
                       "[{\"sha256\":" SHA_B ",\"created_at\":" T0 ",\"expires_at\":null},"
                       "{\"sha256\":" SHA_A ",\"created_at\":" T0 ",\"expires_at\":null}]")),
     "keys[1] (key_0002wRotatedKeyAb): secrets[1].sha256: duplicate secret (also "
     "key_0001vDmowdgLBqEcDYe)"},
    {V2(KEY(ID_A, "\"A\"", T0, "{}", "[]", "null", "false", "null",
            "[{\"sha256\":" SHA_A ",\"created_at\":" T0 ",\"expires_at\":null},"
            "{\"sha256\":" SHA_A ",\"created_at\":" T0 ",\"expires_at\":null}]")),
     "keys[0] (key_0001vDmowdgLBqEcDYe): secrets[1].sha256: duplicate secret (also "
     "key_0001vDmowdgLBqEcDYe)"},
    /* version 1 */
    {"{\"keys\":[{\"id\":\"key_A\",\"name\":\"A\",\"created_at\":\"2025-10-28T16:45:18\"}]}",
     "keys[0] (key_A): secret: missing (version 1 key)"},
    {"{\"keys\":[{\"id\":\"key_A\",\"secret\":\"sec_0001good\",\"name\":\"A\","
     "\"created_at\":\"2025-10-28T16:45:18\"},{\"id\":\"key_B\",\"name\":\"B\","
     "\"created_at\":\"2025-10-28T16:45:18\"}]}",
     "keys[1] (key_B): secret: missing (version 1 key)"},
    {"{\"keys\":[{\"id\":\"key_A\",\"secret\":\"\",\"name\":\"A\","
     "\"created_at\":\"2025-10-28T16:45:18\"}]}",
     "keys[0] (key_A): secret: not a non-empty string"},
    {"{\"keys\":[{\"id\":\"key_A\",\"secret\":\"sec_0001good\",\"name\":\"A\","
     "\"created_at\":\"28/10/2025\"}]}",
     "keys[0] (key_A): created_at: not an RFC 3339 time"},
    {"{\"keys\":[{\"id\":\"key_A\",\"secret\":\"sec_0001good\",\"name\":\"A\"}]}",
     "keys[0] (key_A): created_at: missing"},
    {"{\"keys\":[{\"id\":\"key_A\",\"secret\":\"sec_0001good\",\"name\":\"\","
     "\"created_at\":\"2025-10-28T16:45:18\"}]}",
     "keys[0] (key_A): name: empty"},
    {"{\"keys\":[{\"id\":\"key_A\",\"secret\":\"sec_0001same\",\"name\":\"A\","
     "\"created_at\":\"2025-10-28T16:45:18\"},{\"id\":\"key_B\",\"secret\":\"sec_0001same\","
     "\"name\":\"B\",\"created_at\":\"2025-10-28T16:45:18\"}]}",
     "keys[1] (key_B): secrets[0].sha256: duplicate secret (also key_A)"},
    {"{\"keys\":[{\"id\":\"key_A\",\"secret\":\"sec_0001x\",\"name\":\"A\","
     "\"created_at\":\"2025-10-28T16:45:18\"},{\"id\":\"key_A\",\"secret\":\"sec_0001y\","
     "\"name\":\"B\",\"created_at\":\"2025-10-28T16:45:18\"}]}",
     "keys[1] (key_A): duplicate id (also keys[0])"},
    /* a secret pasted into "id" must not be echoed */
    {"{\"keys\":[{\"id\":\"sec_0001vDmowg2tzwvpaFL\",\"secret\":\"sec_0001vDmowg2tzwvpaFL\","
     "\"name\":\"A\",\"created_at\":\"2025-10-28T16:45:18\"}]}",
     "keys[0]: id: not a key id"},
};

static void test_bad_documents(void)
{
    for (size_t i = 0; i < ELEMENTSOF(bad_cases); i++) {
        const bad_case *c = &bad_cases[i];
        json_t *doc = NULL;
        _cleanup_free_ char *err = NULL;
        bool v1 = false;
        int r = keydoc_parse(c->text, strlen(c->text), &doc, &v1, &err);

        if (r != -EBADMSG || !check_contains(err, c->want))
            fprintf(stderr, "case %zu: %s\n  got %d \"%s\", want \"%s\"\n", i, c->text, r,
                    err ? err : "(null)", c->want);
        CHECK_INT(r, -EBADMSG);
        CHECK(doc == NULL);
        CHECK(check_contains(err, c->want));
        /* Never a plaintext secret in a message. */
        CHECK(!check_contains(err, "sec_0001"));
    }
}

/* A NUL byte is no JSON anywhere; jansson alone drops one right after a number or a
 * literal, which fuzz-json-lenient found. */
static void test_nul_byte(void)
{
    static const char text[] = "{\"version\": 2\0, \"keys\": [],\n \"x\": true\0}";
    json_t *doc = NULL;
    _cleanup_free_ char *err = NULL;

    CHECK_INT(keydoc_parse(text, sizeof(text) - 1, &doc, NULL, &err), -EBADMSG);
    CHECK(doc == NULL);
    CHECK(check_contains(err, "line 1 column 14: NUL byte"));
}

/* keydoc_validate on trees built in memory, with reterr NULL and set. */
static void test_validate_trees(void)
{
    _cleanup_json_ json_t *arr = json_array(), *doc = parse_ok(V2(GOOD_A), false);
    _cleanup_free_ char *err = NULL;
    json_t *key;

    CHECK_INT(keydoc_validate(arr, &err), -EBADMSG);
    CHECK_STR(err, "$: not a JSON object");
    err = mfree(err);
    CHECK_INT(keydoc_validate(NULL, NULL), -EBADMSG);

    /* A mutation that breaks the schema is caught after the fact. */
    key = keydoc_find_key(doc, "key_0001vDmowdgLBqEcDYe", NULL);
    CHECK(key != NULL);
    CHECK_INT(json_object_set_new(key, "disabled", json_string("yes")), 0);
    CHECK_INT(keydoc_validate(doc, NULL), -EBADMSG);
    CHECK_INT(keydoc_validate(doc, &err), -EBADMSG);
    CHECK_STR(err, "keys[0] (key_0001vDmowdgLBqEcDYe): disabled: not a boolean");
    err = mfree(err);
    CHECK_INT(json_object_set_new(key, "disabled", json_true()), 0);
    CHECK_INT(keydoc_validate(doc, &err), 0);
    CHECK(err == NULL);

    /* Version 1 is only an input format. */
    CHECK_INT(json_object_set_new(doc, "version", json_integer(1)), 0);
    CHECK_INT(keydoc_validate(doc, &err), -EBADMSG);
    CHECK_STR(err, "$.version: unsupported version 1");
}

/* Many keys: the uniqueness checks are hash sets, not quadratic scans. */
static void test_many_keys(void)
{
    _cleanup_json_ json_t *doc = keydoc_new();
    json_t *keys = json_object_get(doc, "keys");
    _cleanup_free_ char *err = NULL;
    const size_t n = 20000;

    for (size_t i = 0; i < n; i++) {
        char id[32], hex[65];
        snprintf(id, sizeof(id), "key_%zu", i);
        snprintf(hex, sizeof(hex), "%064zx", i);
        CHECK_INT(json_array_append_new(
                      keys, json_pack("{s:s, s:s, s:s, s:{}, s:[], s:n, s:b, s:n, s:[{s:s, s:s, "
                                      "s:n}]}",
                                      "id", id, "name", "n", "created_at", "2025-01-01T00:00:00Z",
                                      "metadata", "scopes", "expires_at", "disabled", 0,
                                      "rate_limit", "secrets", "sha256", hex, "created_at",
                                      "2025-01-01T00:00:00Z", "expires_at")),
                  0);
    }
    CHECK_INT(keydoc_validate(doc, &err), 0);
    /* Collide the last key's secret with key 123's. */
    CHECK_INT(json_object_set_new(
                  json_array_get(json_object_get(json_array_get(keys, n - 1), "secrets"), 0),
                  "sha256",
                  json_string("000000000000000000000000000000000000000000000000000000000000007b")),
              0);
    CHECK_INT(keydoc_validate(doc, &err), -EBADMSG);
    CHECK_STR(err, "keys[19999] (key_19999): secrets[0].sha256: duplicate secret (also key_123)");
}

int main(void)
{
    test_v1_sample();
    test_v1_variants();
    test_v2_sample();
    test_unknown_members();
    test_absent_nullable();
    test_new_and_validate();
    test_bad_documents();
    test_nul_byte();
    test_validate_trees();
    test_many_keys();
    printf("keydoc: %zu bad documents checked\n", ELEMENTSOF(bad_cases));
    return 0;
}
