/* test-keyops: AuthAdmin operations on a document — create, update, rotate, delete, rendering,
 * and a table of bad parameters that must leave the document untouched. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

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
#define NOW_TEXT "2025-10-28T16:46:40Z"
#define S_A "sec_0001vDmowg2tzwvpaFL"

static const char base_doc[] =
    "{\"comment\": \"top\", \"version\": 2, \"keys\": [{\"id\": \"key_A\", \"owner\": \"ops\", "
    "\"name\": \"A\", \"created_at\": \"2025-10-28T16:45:18Z\", \"metadata\": {\"team\": "
    "\"payments\"}, \"scopes\": [\"documents.read\"], \"expires_at\": null, \"disabled\": false, "
    "\"rate_limit\": null, \"secrets\": [{\"sha256\": "
    "\"50f95e9d053f3ba4ed2c0025e2bf7095a676b5fc8493daf265a864af020c2c17\", \"created_at\": "
    "\"2025-10-28T16:45:18Z\", \"expires_at\": null, \"note\": \"legacy\"}], \"zz\": 1}]}";

typedef int (*op_fn)(json_t *doc, const json_t *params, int64_t now, json_t **ret_reply,
                     const char **reterr_param);

static json_t *load(const char *text)
{
    json_t *doc = NULL;
    _cleanup_free_ char *err = NULL;

    CHECK_INT(keydoc_parse(text, strlen(text), &doc, NULL, &err), 0);
    return doc;
}

static char *dump(const json_t *doc)
{
    char *buf = NULL;
    size_t len;

    CHECK_INT(keydoc_dump(doc, &buf, &len), 0);
    return buf;
}

static void check_valid(const json_t *doc)
{
    _cleanup_free_ char *err = NULL;
    int r = keydoc_validate(doc, &err);

    if (r < 0)
        fprintf(stderr, "document invalid after op: %s\n", err);
    CHECK_INT(r, 0);
}

/* Runs op with params given as JSON text; expects success and returns the reply. */
static json_t *run_ok(op_fn op, json_t *doc, const char *params_text, int64_t now)
{
    _cleanup_json_ json_t *params = json_loads(params_text, 0, NULL);
    json_t *reply = NULL;
    const char *param = NULL;
    int r;

    CHECK(params != NULL);
    r = op(doc, params, now, &reply, &param);
    if (r < 0)
        fprintf(stderr, "%s: %d (%s)\n", params_text, r, param ? param : "-");
    CHECK_INT(r, 0);
    CHECK(reply != NULL);
    check_valid(doc);
    return reply;
}

static verify_code verify_in(const json_t *doc, const char *secret, const char *scope, int64_t now)
{
    _cleanup_(keystore_freep) keystore *ks = NULL;
    _cleanup_free_ char *err = NULL;

    CHECK_INT(keystore_new((json_t *)doc, 1, &ks, &err), 0);
    return keystore_verify(ks, secret, strlen(secret), scope, now, NULL);
}

/* The member names of an object, comma-separated, in order. */
static char *member_names(const json_t *o)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    const char *name;
    json_t *v;
    bool first = true;

    CHECK(f != NULL);
    json_object_foreach((json_t *)o, name, v)
    {
        fprintf(f, "%s%s", first ? "" : ",", name);
        first = false;
    }
    fclose(f);
    return out;
}

static void check_key_reply(const json_t *key)
{
    _cleanup_free_ char *names = member_names(key);

    CHECK_STR(names, "id,name,created_at,metadata,scopes,expires_at,disabled,rate_limit,secrets,"
                     "verifications,last_used_at");
    CHECK_INT(json_integer_value(json_object_get(key, "verifications")), 0);
    CHECK(json_is_null(json_object_get(key, "last_used_at")));
}

static void test_create(void)
{
    _cleanup_json_ json_t *doc = load(base_doc), *reply = NULL, *reply2 = NULL;
    _cleanup_free_ char *out = NULL, *names = NULL;
    const json_t *key, *stored;
    const char *secret, *id;

    reply = run_ok(keyops_create, doc,
                   "{\"name\": \"svc\", \"metadata\": {\"team\": \"x\", \"n\": [1]}, \"scopes\": "
                   "[\"documents.*\", \"admin.read\"], \"expires_at\": "
                   "\"2030-01-01T00:00:00.5+01:00\", \"rate_limit\": {\"burst\": 10, "
                   "\"per_second\": 5}}",
                   NOW);
    names = member_names(reply);
    CHECK_STR(names, "key,secret");
    key = json_object_get(reply, "key");
    check_key_reply(key);
    secret = json_string_value(json_object_get(reply, "secret"));
    id = json_string_value(json_object_get(key, "id"));
    CHECK(secret && id);
    CHECK_INT(strlen(secret), IDS_SECRET_LEN);
    CHECK(strncmp(secret, "sec_1", 5) == 0);
    CHECK_INT(ids_check_presented(secret, strlen(secret)), 0);
    CHECK_INT(strlen(id), IDS_KEY_ID_LEN);
    CHECK(ids_is_key_id(id));
    CHECK_STR(json_string_value(json_object_get(key, "name")), "svc");
    CHECK_STR(json_string_value(json_object_get(key, "created_at")), NOW_TEXT);
    CHECK_STR(json_string_value(json_object_get(key, "expires_at")), "2029-12-31T23:00:00Z");
    CHECK_INT(json_integer_value(json_object_get(key, "secrets")), 1);
    CHECK_INT(json_integer_value(json_object_get(json_object_get(key, "rate_limit"), "burst")), 10);
    CHECK(json_is_false(json_object_get(key, "disabled")));

    /* The stored key: members in the documented order, no plaintext anywhere. */
    CHECK_INT(json_array_size(json_object_get(doc, "keys")), 2);
    stored = keydoc_find_key(doc, id, NULL);
    CHECK(stored != NULL);
    free(names);
    names = member_names(stored);
    CHECK_STR(names, "id,name,created_at,metadata,scopes,expires_at,disabled,rate_limit,secrets");
    free(names);
    names = member_names(json_object_get(stored, "rate_limit"));
    CHECK_STR(names, "per_second,burst");
    free(names);
    names = member_names(json_array_get(json_object_get(stored, "secrets"), 0));
    CHECK_STR(names, "sha256,created_at,expires_at");
    CHECK_STR(json_string_value(json_object_get(
                  json_array_get(json_object_get(stored, "secrets"), 0), "created_at")),
              NOW_TEXT);
    out = dump(doc);
    CHECK(!check_contains(out, secret));
    CHECK(!check_contains(out, "sec_1"));
    /* The reply's metadata is a copy, not a share of the stored tree. */
    CHECK(json_object_get(key, "metadata") != json_object_get(stored, "metadata"));
    CHECK(json_equal(json_object_get(key, "metadata"), json_object_get(stored, "metadata")));

    /* create + keystore: the secret works, with its scopes. */
    CHECK_INT(verify_in(doc, secret, NULL, NOW), VERIFY_VALID);
    CHECK_INT(verify_in(doc, secret, "documents.write", NOW), VERIFY_VALID);
    CHECK_INT(verify_in(doc, secret, "billing", NOW), VERIFY_FORBIDDEN);
    CHECK_INT(verify_in(doc, S_A, NULL, NOW), VERIFY_VALID);

    /* Defaults, and JSON null meaning "not given". */
    reply2 = run_ok(keyops_create, doc,
                    "{\"name\": \"min\", \"metadata\": null, \"scopes\": null, \"expires_at\": "
                    "null, \"rate_limit\": null}",
                    NOW);
    key = json_object_get(reply2, "key");
    check_key_reply(key);
    CHECK_INT(json_object_size(json_object_get(key, "metadata")), 0);
    CHECK_INT(json_array_size(json_object_get(key, "scopes")), 0);
    CHECK(json_is_null(json_object_get(key, "expires_at")));
    CHECK(json_is_null(json_object_get(key, "rate_limit")));
    CHECK(strcmp(json_string_value(json_object_get(key, "id")), id) != 0);
    CHECK(strcmp(json_string_value(json_object_get(reply2, "secret")), secret) != 0);
    CHECK_INT(json_array_size(json_object_get(doc, "keys")), 3);
    CHECK_INT(verify_in(doc, json_string_value(json_object_get(reply2, "secret")), NULL, NOW),
              VERIFY_VALID);

    /* A name of exactly 256 bytes is fine. */
    {
        char params[400];
        char name[KEYDOC_NAME_MAX + 1];
        _cleanup_json_ json_t *r3 = NULL;

        memset(name, 'n', KEYDOC_NAME_MAX);
        name[KEYDOC_NAME_MAX] = '\0';
        snprintf(params, sizeof(params), "{\"name\": \"%s\"}", name);
        r3 = run_ok(keyops_create, doc, params, NOW);
        CHECK_INT(json_string_length(json_object_get(json_object_get(r3, "key"), "name")),
                  KEYDOC_NAME_MAX);
    }
}

static void test_update(void)
{
    _cleanup_json_ json_t *doc = load(base_doc), *reply = NULL;
    _cleanup_free_ char *names = NULL;
    json_t *key;

    reply = run_ok(keyops_update, doc,
                   "{\"id\": \"key_A\", \"name\": \"A2\", \"metadata\": {\"team\": \"ops\"}, "
                   "\"scopes\": [\"x.*\"], \"expires_at\": \"2030-01-01T00:00:00Z\", "
                   "\"disabled\": true, \"rate_limit\": {\"per_second\": 1, \"burst\": 2}, "
                   "\"clear_expiry\": false, \"clear_rate_limit\": false}",
                   NOW);
    check_key_reply(json_object_get(reply, "key"));
    CHECK_STR(json_string_value(json_object_get(json_object_get(reply, "key"), "name")), "A2");
    key = keydoc_find_key(doc, "key_A", NULL);
    CHECK(key != NULL);
    /* Unknown members stay where they were. */
    names = member_names(key);
    CHECK_STR(names, "id,owner,name,created_at,metadata,scopes,expires_at,disabled,rate_limit,"
                     "secrets,zz");
    CHECK_STR(json_string_value(json_object_get(key, "owner")), "ops");
    CHECK_STR(json_string_value(json_object_get(key, "name")), "A2");
    CHECK_STR(json_string_value(json_object_get(json_object_get(key, "metadata"), "team")), "ops");
    CHECK_STR(json_string_value(json_array_get(json_object_get(key, "scopes"), 0)), "x.*");
    CHECK_STR(json_string_value(json_object_get(key, "expires_at")), "2030-01-01T00:00:00Z");
    CHECK(json_is_true(json_object_get(key, "disabled")));
    CHECK_INT(json_integer_value(json_object_get(json_object_get(key, "rate_limit"), "burst")), 2);
    /* Secrets are not an update's business. */
    CHECK_STR(json_string_value(
                  json_object_get(json_array_get(json_object_get(key, "secrets"), 0), "note")),
              "legacy");
    CHECK_INT(verify_in(doc, S_A, NULL, NOW), VERIFY_DISABLED);
    json_decref(reply);

    /* Only what is given changes. */
    reply = run_ok(keyops_update, doc, "{\"id\": \"key_A\", \"disabled\": false}", NOW);
    key = keydoc_find_key(doc, "key_A", NULL);
    CHECK_STR(json_string_value(json_object_get(key, "name")), "A2");
    CHECK_STR(json_string_value(json_object_get(key, "expires_at")), "2030-01-01T00:00:00Z");
    CHECK_INT(verify_in(doc, S_A, "x.y", NOW), VERIFY_VALID);
    CHECK_INT(verify_in(doc, S_A, "documents.read", NOW), VERIFY_FORBIDDEN);
    json_decref(reply);

    reply = run_ok(keyops_update, doc,
                   "{\"id\": \"key_A\", \"clear_expiry\": true, \"clear_rate_limit\": true, "
                   "\"name\": null}",
                   NOW);
    key = keydoc_find_key(doc, "key_A", NULL);
    CHECK(json_is_null(json_object_get(key, "expires_at")));
    CHECK(json_is_null(json_object_get(key, "rate_limit")));
    CHECK_STR(json_string_value(json_object_get(key, "name")), "A2");
    json_decref(reply);

    /* An expiry in the past is allowed and takes effect. */
    reply = run_ok(keyops_update, doc,
                   "{\"id\": \"key_A\", \"expires_at\": \"2020-01-01T00:00:00Z\"}", NOW);
    CHECK_INT(verify_in(doc, S_A, NULL, NOW), VERIFY_EXPIRED);
    json_decref(reply);

    /* No change at all is a valid update. */
    reply = run_ok(keyops_update, doc, "{\"id\": \"key_A\"}", NOW);
}

static const char *secret_expiry(const json_t *key, size_t i)
{
    return json_string_value(
        json_object_get(json_array_get(json_object_get(key, "secrets"), i), "expires_at"));
}

static void test_rotate(void)
{
    _cleanup_json_ json_t *doc = load(base_doc), *reply = NULL;
    const char *s1, *s2;
    char *s1_copy;
    json_t *key;

    /* Default grace: both secrets verify for a day. */
    reply = run_ok(keyops_rotate, doc, "{\"id\": \"key_A\"}", NOW);
    check_key_reply(json_object_get(reply, "key"));
    s1 = json_string_value(json_object_get(reply, "secret"));
    CHECK(s1 && strncmp(s1, "sec_1", 5) == 0);
    CHECK_INT(json_integer_value(json_object_get(json_object_get(reply, "key"), "secrets")), 2);
    key = keydoc_find_key(doc, "key_A", NULL);
    CHECK_INT(json_array_size(json_object_get(key, "secrets")), 2);
    CHECK_STR(secret_expiry(key, 0), "2025-10-29T16:46:40Z");
    CHECK(secret_expiry(key, 1) == NULL);
    CHECK_STR(json_string_value(
                  json_object_get(json_array_get(json_object_get(key, "secrets"), 0), "note")),
              "legacy");
    CHECK_INT(verify_in(doc, S_A, NULL, NOW), VERIFY_VALID);
    CHECK_INT(verify_in(doc, s1, NULL, NOW), VERIFY_VALID);
    CHECK_INT(verify_in(doc, S_A, NULL, NOW + 86400), VERIFY_EXPIRED);
    CHECK_INT(verify_in(doc, s1, NULL, NOW + 86400), VERIFY_VALID);
    s1_copy = strdup(s1);
    CHECK(s1_copy != NULL);
    json_decref(reply);

    /* Grace 0: every older secret ends now. */
    reply = run_ok(keyops_rotate, doc, "{\"id\": \"key_A\", \"grace_seconds\": 0}", NOW + 10);
    s2 = json_string_value(json_object_get(reply, "secret"));
    CHECK(s2 && strcmp(s2, s1_copy) != 0);
    key = keydoc_find_key(doc, "key_A", NULL);
    CHECK_INT(json_array_size(json_object_get(key, "secrets")), 3);
    /* The day of grace left to the first secret is cut to now + 0. */
    CHECK_STR(secret_expiry(key, 0), "2025-10-28T16:46:50Z");
    CHECK_STR(secret_expiry(key, 1), "2025-10-28T16:46:50Z");
    CHECK(secret_expiry(key, 2) == NULL);
    CHECK_INT(json_integer_value(json_object_get(json_object_get(reply, "key"), "secrets")), 1);
    CHECK_INT(verify_in(doc, s1_copy, NULL, NOW + 10), VERIFY_EXPIRED);
    CHECK_INT(verify_in(doc, s2, NULL, NOW + 10), VERIFY_VALID);
    free(s1_copy);
    json_decref(reply);

    /* A longer grace never extends an expiry already set sooner. */
    reply =
        run_ok(keyops_rotate, doc, "{\"id\": \"key_A\", \"grace_seconds\": 315360000}", NOW + 20);
    key = keydoc_find_key(doc, "key_A", NULL);
    CHECK_STR(secret_expiry(key, 0), "2025-10-28T16:46:50Z");
    CHECK_STR(secret_expiry(key, 1), "2025-10-28T16:46:50Z");
    CHECK_STR(secret_expiry(key, 2), "2035-10-26T16:47:00Z");
    CHECK(secret_expiry(key, 3) == NULL);
}

static void test_delete(void)
{
    _cleanup_json_ json_t *doc = load(base_doc), *reply = NULL, *created = NULL;
    _cleanup_json_ json_t *params = NULL;
    const char *param = NULL;
    json_t *r2 = NULL;
    char id[64];

    created = run_ok(keyops_create, doc, "{\"name\": \"b\"}", NOW);
    snprintf(id, sizeof(id), "%s",
             json_string_value(json_object_get(json_object_get(created, "key"), "id")));
    reply = run_ok(keyops_delete, doc, "{\"id\": \"key_A\"}", NOW);
    CHECK(json_is_object(reply));
    CHECK_INT(json_object_size(reply), 0);
    CHECK(keydoc_find_key(doc, "key_A", NULL) == NULL);
    CHECK(keydoc_find_key(doc, id, NULL) != NULL);
    CHECK_INT(json_array_size(json_object_get(doc, "keys")), 1);
    /* All its secrets go with it. */
    CHECK_INT(verify_in(doc, S_A, NULL, NOW), VERIFY_NOT_FOUND);
    CHECK_INT(verify_in(doc, json_string_value(json_object_get(created, "secret")), NULL, NOW),
              VERIFY_VALID);

    params = json_pack("{s:s}", "id", "key_A");
    CHECK_INT(keyops_delete(doc, params, NOW, &r2, &param), -ENOKEY);
    CHECK(r2 == NULL);
}

/* A key stored without its nullable members: rotate and update still work, render says null. */
static void test_absent_nullable(void)
{
    static const char text[] =
        "{\"version\": 2, \"keys\": [{\"id\": \"key_A\", \"name\": \"A\", \"created_at\": "
        "\"2025-10-28T16:45:18Z\", \"metadata\": {}, \"scopes\": [], \"disabled\": false, "
        "\"secrets\": [{\"sha256\": "
        "\"50f95e9d053f3ba4ed2c0025e2bf7095a676b5fc8493daf265a864af020c2c17\", \"created_at\": "
        "\"2025-10-28T16:45:18Z\"}]}]}";
    _cleanup_json_ json_t *doc = load(text), *r1 = NULL, *r2 = NULL, *r3 = NULL;
    json_t *key = keydoc_find_key(doc, "key_A", NULL);

    r1 = keyops_render_key(key, NOW);
    CHECK(r1 != NULL);
    check_key_reply(r1);
    CHECK(json_is_null(json_object_get(r1, "expires_at")));
    CHECK(json_is_null(json_object_get(r1, "rate_limit")));
    CHECK_INT(json_integer_value(json_object_get(r1, "secrets")), 1);

    r2 = run_ok(keyops_rotate, doc, "{\"id\": \"key_A\", \"grace_seconds\": 0}", NOW);
    key = keydoc_find_key(doc, "key_A", NULL);
    CHECK_STR(secret_expiry(key, 0), NOW_TEXT);
    CHECK_INT(verify_in(doc, S_A, NULL, NOW), VERIFY_EXPIRED);
    CHECK_INT(verify_in(doc, json_string_value(json_object_get(r2, "secret")), NULL, NOW),
              VERIFY_VALID);

    r3 = run_ok(keyops_update, doc, "{\"id\": \"key_A\", \"clear_expiry\": true}", NOW);
    key = keydoc_find_key(doc, "key_A", NULL);
    CHECK(json_is_null(json_object_get(key, "expires_at")));
}

static void test_render(void)
{
    _cleanup_json_ json_t *doc = load(base_doc), *reply = NULL, *r1 = NULL, *r2 = NULL;
    const json_t *key;

    reply = run_ok(keyops_rotate, doc, "{\"id\": \"key_A\", \"grace_seconds\": 100}", NOW);
    key = keydoc_find_key(doc, "key_A", NULL);
    r1 = keyops_render_key(key, NOW + 99);
    r2 = keyops_render_key(key, NOW + 100);
    CHECK(r1 && r2);
    check_key_reply(r1);
    CHECK_INT(json_integer_value(json_object_get(r1, "secrets")), 2);
    CHECK_INT(json_integer_value(json_object_get(r2, "secrets")), 1);
    CHECK_STR(json_string_value(json_object_get(r1, "id")), "key_A");
    CHECK_STR(json_string_value(json_object_get(r1, "created_at")), "2025-10-28T16:45:18Z");
    CHECK(json_equal(json_object_get(r1, "metadata"), json_object_get(key, "metadata")));
    CHECK(json_equal(json_object_get(r1, "scopes"), json_object_get(key, "scopes")));
    CHECK(json_is_null(json_object_get(r1, "rate_limit")));
    CHECK(json_is_false(json_object_get(r1, "disabled")));
    /* Unknown members of the stored key are not part of the Key type. */
    CHECK(json_object_get(r1, "owner") == NULL);
    CHECK(keyops_render_key(NULL, NOW) == NULL);
}

typedef struct bad_param {
    op_fn op;
    const char *params;
    int want_r;
    const char *want_param; /* NULL: not checked (-ENOKEY) */
} bad_param;

/* 257 bytes: one over KEYDOC_NAME_MAX. */
#define NAME_257                                                                                   \
    "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn"   \
    "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn"   \
    "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn"

static const bad_param bad_params[] = {
    /* CreateKey */
    {keyops_create, "{}", -EINVAL, "name"},
    {keyops_create, "{\"name\": \"x\", \"foo\": 1}", -EINVAL, "foo"},
    {keyops_create, "{\"foo\": 1, \"name\": \"x\"}", -EINVAL, "foo"},
    {keyops_create, "{\"name\": \"\"}", -EINVAL, "name"},
    {keyops_create, "{\"name\": 5}", -EINVAL, "name"},
    {keyops_create, "{\"name\": null}", -EINVAL, "name"},
    {keyops_create, "{\"name\": \"" NAME_257 "\"}", -EINVAL, "name"},
    {keyops_create, "{\"name\": \"x\", \"metadata\": []}", -EINVAL, "metadata"},
    {keyops_create, "{\"name\": \"x\", \"metadata\": \"team=x\"}", -EINVAL, "metadata"},
    {keyops_create, "{\"name\": \"x\", \"scopes\": [\"a b\"]}", -EINVAL, "scopes"},
    {keyops_create, "{\"name\": \"x\", \"scopes\": [\"ok\", \"\"]}", -EINVAL, "scopes"},
    {keyops_create, "{\"name\": \"x\", \"scopes\": [1]}", -EINVAL, "scopes"},
    {keyops_create, "{\"name\": \"x\", \"scopes\": \"a\"}", -EINVAL, "scopes"},
    {keyops_create, "{\"name\": \"x\", \"scopes\": [\"caf\\u00e9\"]}", -EINVAL, "scopes"},
    {keyops_create, "{\"name\": \"x\", \"expires_at\": \"tomorrow\"}", -EINVAL, "expires_at"},
    {keyops_create, "{\"name\": \"x\", \"expires_at\": \"2030-01-01T00:00:00\"}", -EINVAL,
     "expires_at"},
    {keyops_create, "{\"name\": \"x\", \"expires_at\": \"2030-02-30T00:00:00Z\"}", -EINVAL,
     "expires_at"},
    {keyops_create, "{\"name\": \"x\", \"expires_at\": 1893456000}", -EINVAL, "expires_at"},
    {keyops_create, "{\"name\": \"x\", \"rate_limit\": {\"per_second\": 0, \"burst\": 1}}", -EINVAL,
     "rate_limit"},
    {keyops_create, "{\"name\": \"x\", \"rate_limit\": {\"per_second\": 1}}", -EINVAL,
     "rate_limit"},
    {keyops_create,
     "{\"name\": \"x\", \"rate_limit\": {\"per_second\": 1, \"burst\": 2, \"window\": 1}}", -EINVAL,
     "rate_limit"},
    {keyops_create, "{\"name\": \"x\", \"rate_limit\": {\"per_second\": 1000000001, \"burst\": 2}}",
     -EINVAL, "rate_limit"},
    {keyops_create, "{\"name\": \"x\", \"rate_limit\": {\"per_second\": 1, \"burst\": 2.0}}",
     -EINVAL, "rate_limit"},
    {keyops_create, "{\"name\": \"x\", \"rate_limit\": 5}", -EINVAL, "rate_limit"},
    {keyops_create, "{\"name\": \"x\", \"id\": \"key_A\"}", -EINVAL, "id"},
    {keyops_create, "{\"name\": \"x\", \"clear_expiry\": true}", -EINVAL, "clear_expiry"},
    {keyops_create, "[]", -EINVAL, "parameters"},
    /* UpdateKey */
    {keyops_update, "{}", -EINVAL, "id"},
    {keyops_update, "{\"id\": 7}", -EINVAL, "id"},
    {keyops_update, "{\"id\": null}", -EINVAL, "id"},
    {keyops_update, "{\"id\": \"nope\"}", -EINVAL, "id"},
    {keyops_update, "{\"id\": \"key_\"}", -EINVAL, "id"},
    {keyops_update, "{\"id\": \"key_A\", \"foo\": 1}", -EINVAL, "foo"},
    {keyops_update, "{\"id\": \"key_A\", \"name\": \"\"}", -EINVAL, "name"},
    {keyops_update, "{\"id\": \"key_A\", \"name\": 5}", -EINVAL, "name"},
    {keyops_update, "{\"id\": \"key_A\", \"scopes\": [\"a b\"]}", -EINVAL, "scopes"},
    {keyops_update, "{\"id\": \"key_A\", \"expires_at\": \"tomorrow\"}", -EINVAL, "expires_at"},
    {keyops_update,
     "{\"id\": \"key_A\", \"expires_at\": \"2030-01-01T00:00:00Z\", \"clear_expiry\": true}",
     -EINVAL, "clear_expiry"},
    {keyops_update,
     "{\"id\": \"key_A\", \"clear_expiry\": true, \"expires_at\": \"2030-01-01T00:00:00Z\"}",
     -EINVAL, "clear_expiry"},
    {keyops_update,
     "{\"id\": \"key_A\", \"rate_limit\": {\"per_second\": 1, \"burst\": 1}, "
     "\"clear_rate_limit\": true}",
     -EINVAL, "clear_rate_limit"},
    {keyops_update, "{\"id\": \"key_A\", \"disabled\": \"yes\"}", -EINVAL, "disabled"},
    {keyops_update, "{\"id\": \"key_A\", \"disabled\": 1}", -EINVAL, "disabled"},
    {keyops_update, "{\"id\": \"key_A\", \"clear_expiry\": 1}", -EINVAL, "clear_expiry"},
    {keyops_update, "{\"id\": \"key_A\", \"clear_rate_limit\": \"true\"}", -EINVAL,
     "clear_rate_limit"},
    {keyops_update, "{\"id\": \"key_A\", \"rate_limit\": {\"per_second\": 0, \"burst\": 1}}",
     -EINVAL, "rate_limit"},
    {keyops_update, "{\"id\": \"key_A\", \"grace_seconds\": 1}", -EINVAL, "grace_seconds"},
    {keyops_update, "{\"id\": \"key_A\", \"secrets\": []}", -EINVAL, "secrets"},
    {keyops_update, "{\"id\": \"key_Unknown\"}", -ENOKEY, NULL},
    {keyops_update, "{\"id\": \"key_Unknown\", \"name\": \"\"}", -EINVAL, "name"},
    /* RotateKey */
    {keyops_rotate, "{\"id\": \"key_A\", \"grace_seconds\": -1}", -EINVAL, "grace_seconds"},
    {keyops_rotate, "{\"id\": \"key_A\", \"grace_seconds\": 315360001}", -EINVAL, "grace_seconds"},
    {keyops_rotate, "{\"id\": \"key_A\", \"grace_seconds\": 1.5}", -EINVAL, "grace_seconds"},
    {keyops_rotate, "{\"id\": \"key_A\", \"grace_seconds\": \"10\"}", -EINVAL, "grace_seconds"},
    {keyops_rotate, "{\"id\": 7}", -EINVAL, "id"},
    {keyops_rotate, "{\"grace_seconds\": 10}", -EINVAL, "id"},
    {keyops_rotate, "{\"id\": \"key_A\", \"name\": \"x\"}", -EINVAL, "name"},
    {keyops_rotate, "{\"id\": \"key_Unknown\"}", -ENOKEY, NULL},
    /* DeleteKey */
    {keyops_delete, "{}", -EINVAL, "id"},
    {keyops_delete, "{\"id\": 7}", -EINVAL, "id"},
    {keyops_delete, "{\"id\": \"key_A\", \"yes\": true}", -EINVAL, "yes"},
    {keyops_delete, "{\"id\": \"key_Unknown\"}", -ENOKEY, NULL},
};

static void test_bad_params(void)
{
    _cleanup_json_ json_t *doc = load(base_doc);
    _cleanup_free_ char *before = dump(doc);

    for (size_t i = 0; i < ELEMENTSOF(bad_params); i++) {
        const bad_param *c = &bad_params[i];
        _cleanup_json_ json_t *params = json_loads(c->params, 0, NULL);
        _cleanup_free_ char *after = NULL;
        json_t *reply = NULL;
        const char *param = NULL;
        int r;

        CHECK(params != NULL);
        r = c->op(doc, params, NOW, &reply, &param);
        if (r != c->want_r || (c->want_param && !(param && strcmp(param, c->want_param) == 0)))
            fprintf(stderr, "case %zu: %s\n  got %d \"%s\", want %d \"%s\"\n", i, c->params, r,
                    param ? param : "(null)", c->want_r, c->want_param ? c->want_param : "(any)");
        CHECK_INT(r, c->want_r);
        if (c->want_param)
            CHECK_STR(param, c->want_param);
        CHECK(reply == NULL);
        after = dump(doc);
        CHECK_STR(after, before);
    }
    printf("keyops: %zu bad parameter sets checked\n", ELEMENTSOF(bad_params));
}

/* The unknown member's name comes from params itself, and stays valid while params lives. */
static void test_unknown_param_borrowed(void)
{
    _cleanup_json_ json_t *doc = load(base_doc);
    _cleanup_json_ json_t *params = json_pack("{s:s, s:i}", "name", "x", "surprise", 1);
    const char *param = NULL;
    json_t *reply = NULL;

    CHECK_INT(keyops_create(doc, params, NOW, &reply, &param), -EINVAL);
    CHECK_STR(param, "surprise");
    CHECK(json_object_iter_at(params, "surprise") != NULL);
    CHECK(param == json_object_iter_key(json_object_iter_at(params, "surprise")));
}

/* A document whose "keys" is not an array is refused without being touched. */
static void test_bad_document(void)
{
    _cleanup_json_ json_t *doc = json_pack("{s:i, s:{}}", "version", 2, "keys");
    _cleanup_json_ json_t *params = json_pack("{s:s}", "name", "x");
    const char *param = NULL;
    json_t *reply = NULL;

    CHECK_INT(keyops_create(doc, params, NOW, &reply, &param), -EBADMSG);
    CHECK(reply == NULL);
    CHECK_INT(json_object_size(json_object_get(doc, "keys")), 0);
}

int main(void)
{
    test_create();
    test_update();
    test_rotate();
    test_delete();
    test_render();
    test_absent_nullable();
    test_bad_params();
    test_unknown_param_borrowed();
    test_bad_document();
    return 0;
}
