/* fuzz-http: what the HTTP front reads itself (daemon/http-parse.c). The first byte picks
 * the method for the framing check and the query parameter's name; every reader then runs
 * on the rest: the POST /verify body's fast path (which must agree with jansson on whatever
 * it takes), the request head's framing, the query string, and the bearer token. */
#include <jansson.h>

#include "fuzz.h"
#include "json-util.h"
#include "http-parse.h"

static void check_body(const uint8_t *data, size_t n)
{
    char *body = fuzz_copy(data, n);
    char *key = NULL;
    size_t key_len = 0;
    const char *scope = NULL;

    if (http_scan_verify_body(body, n, &key, &key_len, &scope)) {
        json_error_t err;
        json_t *o = json_util_loadb((const char *)data, n, JSON_REJECT_DUPLICATES, &err);
        FUZZ_ASSERT(json_is_object(o));
        const json_t *k = json_object_get(o, "api_key"), *s = json_object_get(o, "scope");
        FUZZ_ASSERT(json_object_size(o) == 1 + (s != NULL));
        FUZZ_ASSERT(json_is_string(k) && json_string_length(k) == key_len);
        FUZZ_ASSERT(key > body && key + key_len < body + n && key[key_len] == '\0');
        FUZZ_ASSERT(memcmp(json_string_value(k), key, key_len) == 0);
        if (s) {
            FUZZ_ASSERT(json_is_string(s) && scope != NULL);
            FUZZ_ASSERT(strcmp(json_string_value(s), scope) == 0);
        } else
            FUZZ_ASSERT(scope == NULL);
        json_decref(o);
    } else
        FUZZ_ASSERT(n == 0 || memcmp(body, data, n) == 0);
    free(body);
}

static void check_framing(const uint8_t *data, size_t n, const char *method)
{
    char *head = fuzz_copy(data, n);
    if (http_framing_ok(head, n, method, strlen(method))) {
        /* Only a whole head passes: its empty line is there. */
        FUZZ_ASSERT(memmem(head, n, "\n\n", 2) || memmem(head, n, "\n\r\n", 3));
        FUZZ_ASSERT(memmem(head, n, method, strlen(method)));
    }
    free(head);
}

static void check_query(const uint8_t *data, size_t n, const char *name)
{
    char *q = fuzz_copy(data, n);
    size_t len = SIZE_MAX;
    const char *v = http_query_find(q, n, name, &len);
    if (v) {
        FUZZ_ASSERT(v > q && v <= q + n && len <= (size_t)(q + n - v));
        FUZZ_ASSERT(v[-1] == '=' && (v + len == q + n || v[len] == '&'));
        size_t name_len = strlen(name);
        FUZZ_ASSERT((size_t)(v - q) >= name_len + 1 &&
                    memcmp(v - 1 - name_len, name, name_len) == 0);
        FUZZ_ASSERT(v - 1 - name_len == q || v[-2 - (ptrdiff_t)name_len] == '&');
        FUZZ_ASSERT(!memchr(v, '&', len));
        char *out = fuzz_malloc(len + 1);
        if (http_query_decode(v, len, out))
            FUZZ_ASSERT(strlen(out) <= len);
        free(out);
    }
    free(q);
}

static void check_bearer(const uint8_t *data, size_t n)
{
    char *v = fuzz_copy(data, n), *tok = NULL;
    size_t len = 0;
    if (http_bearer_token(v, n, &tok, &len)) {
        FUZZ_ASSERT(n > 7 && tok >= v + 7 && len > 0 && tok + len <= v + n);
        FUZZ_ASSERT(tok[0] != ' ' && tok[len - 1] != ' ');
    }
    free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const methods[] = {"GET", "POST", "HEAD", "PUT"};
    static const char *const names[] = {"scope", "s", "api_key", "x"};
    fuzz_input in = {data, size};
    uint8_t pick = fuzz_byte(&in);

    check_body(in.p, in.n);
    check_framing(in.p, in.n, methods[pick & 3]);
    check_query(in.p, in.n, names[(pick >> 2) & 3]);
    check_bearer(in.p, in.n);
    return 0;
}
