/* test-http-parse: the HTTP request parsing the front does itself (daemon/http-parse.c):
 * the /verify body's fast path, the framing check of a request head, query parameters and
 * bearer tokens, each with a table of inputs it must refuse. */
#include <string.h>

#include "check.h"
#include "http-parse.h"
#include "macro.h"

static void test_verify_body(void)
{
    static const struct {
        const char *body, *key, *scope;
    } good[] = {
        {"{\"api_key\":\"sec_x\"}", "sec_x", NULL},
        {" { \"scope\" : \"a.b\" , \"api_key\" : \"k\" } \n", "k", "a.b"},
        {"{\"api_key\":\"\"}", "", NULL},
    };
    /* Each is left to jansson, untouched. */
    static const char *const bad[] = {
        "",
        "{}",
        "{\"scope\":\"s\"}",
        "{\"api_key\":\"k\",\"other\":\"x\"}",
        "{\"api_key\":\"k\",\"api_key\":\"j\"}",
        "{\"api_key\":\"k\\n\"}",
        "{\"api_key\":1}",
        "{\"api_key\":\"k\"} x",
        "{\"api_key\":\"k\"",
        "[\"api_key\"]",
        "{\"api_key\":\"k\",\"scope\":\"s\",\"x\":\"y\"}",
        "{\"api_key\":\"k\xc3\xa9\"}",
    };

    for (size_t i = 0; i < ELEMENTSOF(good); i++) {
        char *body = strdup(good[i].body), *key = NULL;
        const char *scope = "unset";
        size_t len = 0;
        CHECK(body != NULL);
        CHECK(http_scan_verify_body(body, strlen(good[i].body), &key, &len, &scope));
        CHECK_INT(len, strlen(good[i].key));
        CHECK_STR(key, good[i].key);
        if (good[i].scope)
            CHECK_STR(scope, good[i].scope);
        else
            CHECK(scope == NULL);
        free(body);
    }
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        char *body = strdup(bad[i]), *key = NULL;
        const char *scope = NULL;
        size_t len = 0;
        CHECK(body != NULL);
        fprintf(stderr, "bad body: %s\n", bad[i]);
        CHECK(!http_scan_verify_body(body, strlen(bad[i]), &key, &len, &scope));
        CHECK_STR(body, bad[i]);
        free(body);
    }
}

static void test_framing(void)
{
    static const struct {
        const char *head, *method;
        bool ok;
    } cases[] = {
        {"POST /verify HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", "POST", true},
        {"\r\n\r\nGET / HTTP/1.1\nHost: x\n\n", "GET", true},
        {"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", true},
        {"POST / HTTP/1.1\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\n", "POST", false},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", "POST",
         false},
        {"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", "GET", false},
        {"GET / HTTP/1.1\r\nX: a\r\n\tfolded\r\n\r\n", "GET", false},
        {"GET / HTTP/1.1\r\nno colon\r\n\r\n", "GET", false},
        {"GET / HTTP/1.1\r\nHost: x\r\n", "GET", false}, /* no end of head */
        {"GET / HTTP/1.1", "GET", false},                /* no request line end */
        {"POST / HTTP/1.1\r\n\r\n", "GET", false},       /* another request's head */
        {"", "GET", false},
    };

    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        fprintf(stderr, "framing: %zu\n", i);
        CHECK(http_framing_ok(cases[i].head, strlen(cases[i].head), cases[i].method,
                              strlen(cases[i].method)) == cases[i].ok);
    }
}

static void test_query(void)
{
    static const struct {
        const char *query, *name, *decoded; /* NULL: absent or refused */
    } cases[] = {
        {"scope=documents.read", "scope", "documents.read"},
        {"a=1&scope=a%20b+c%41&scope=2", "scope", "a b cA"},
        {"scopes=x&scope=", "scope", ""},
        {"xscope=1", "scope", NULL},
        {"scope", "scope", NULL},
        {"scope=%00", "scope", NULL},      /* a NUL: no C string */
        {"scope=%zz%4", "scope", "%zz%4"}, /* not escapes: kept */
        {"", "scope", NULL},
        {"&&scope=1&", "scope", "1"},
    };

    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        size_t len = 0;
        const char *v =
            http_query_find(cases[i].query, strlen(cases[i].query), cases[i].name, &len);
        char out[64];
        fprintf(stderr, "query: %s\n", cases[i].query);
        if (!cases[i].decoded && !v)
            continue;
        CHECK(v != NULL && len < sizeof(out));
        bool ok = http_query_decode(v, len, out);
        if (cases[i].decoded) {
            CHECK(ok);
            CHECK_STR(out, cases[i].decoded);
        } else
            CHECK(!ok);
    }
}

static void test_bearer(void)
{
    static const struct {
        const char *value, *token; /* NULL: refused */
    } cases[] = {
        {"Bearer sec_x", "sec_x"}, {"bearer   sec_x  ", "sec_x"},
        {"BEARER k", "k"},         {"Bearer ", NULL},
        {"Bearer     ", NULL},     {"Basic abc", NULL},
        {"Bearersec_x", NULL},     {"", NULL},
    };

    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        char *v = strdup(cases[i].value), *tok = NULL;
        size_t len = 0;
        CHECK(v != NULL);
        bool ok = http_bearer_token(v, strlen(v), &tok, &len);
        CHECK(ok == (cases[i].token != NULL));
        if (ok) {
            CHECK_INT(len, strlen(cases[i].token));
            CHECK(memcmp(tok, cases[i].token, len) == 0);
            CHECK(tok > v && tok + len <= v + strlen(v)); /* the caller's bytes, to wipe */
        }
        free(v);
    }
}

int main(void)
{
    test_verify_body();
    test_framing();
    test_query();
    test_bearer();
    printf("http-parse: ok\n");
    return 0;
}
