/* test-json-scan: the flat-object scanner against the full path (jansson, then
 * json-lenient for the valid JSON jansson refuses). Whatever the scanner takes, the full
 * path reads as the same object; the scanner never changes the message; it takes the plain
 * forms clients write, and leaves the rest (escaped NULs, lone surrogates, numbers beyond
 * a double) to the full path, which reads them. */
#include <errno.h>
#include <string.h>

#include "check.h"
#include "json-lenient.h"
#include "json-scan.h"
#include "json-util.h"

#define MAX_MEMBERS 3

/* Scans msg[0..len) as a whole message (white space after the object allowed): the number
 * of members, or -1. */
static int scan_whole(char *msg, size_t len, json_flat_member *m)
{
    json_scanner s = {msg, msg + len};
    int n = json_scan_flat_object(&s, m, MAX_MEMBERS);
    json_scan_space(&s);
    return n >= 0 && s.p == s.end ? n : -1;
}

/* The daemon's full path for a body the scanner left: jansson, then json-lenient. */
static json_t *full_path(const char *msg, size_t len, json_t **ret_marker)
{
    json_error_t err;
    json_t *v = json_loadb(msg, len, JSON_DECODE_ANY, &err);
    *ret_marker = NULL;
    if (!v && json_lenient_load(msg, len, 0, &v, ret_marker) < 0)
        return NULL;
    return v;
}

/* If the scanner takes msg, the full path must read the same members and values. Returns
 * 1 if the scanner took it. */
static int check_against_jansson(const char *msg, size_t len)
{
    char buf[256];
    json_flat_member m[MAX_MEMBERS];

    CHECK(len <= sizeof(buf));
    memcpy(buf, msg, len);
    int n = scan_whole(buf, len, m);
    CHECK(memcmp(buf, msg, len) == 0); /* nothing changed, taken or not */
    if (n < 0)
        return 0;

    json_t *marker;
    _cleanup_json_ json_t *v = full_path(msg, len, &marker);
    CHECK(marker == NULL);
    if (!json_is_object(v) || json_object_size(v) != (size_t)n)
        fprintf(stderr, "scanner took %d members of what jansson reads otherwise: %.*s\n", n,
                (int)len, msg);
    CHECK(json_is_object(v));
    CHECK_INT((int)json_object_size(v), n);
    for (int i = 0; i < n; i++) {
        char name[256];
        memcpy(name, m[i].name, m[i].name_len);
        name[m[i].name_len] = '\0';
        json_t *value = json_object_get(v, name);
        CHECK(json_is_string(value));
        CHECK_INT((int)json_string_length(value), (int)m[i].value_len);
        CHECK(memcmp(json_string_value(value), m[i].value, m[i].value_len) == 0);
    }
    return 1;
}

static void test_plain_forms(void)
{
    static const struct {
        const char *msg;
        int n;
    } cases[] = {
        {"{\"api_key\":\"sec_0abc\"}", 1},
        {"{\"api_key\": \"sec_0abc\"}", 1},          /* Python's json.dumps */
        {" {\r\n\t\"api_key\" : \"sec_0abc\" , \"scope\":\"a.b\" }\n", 2},
        {"{\"scope\":\"a.b\",\"api_key\":\"sec_0abc\"}", 2},
        {"{}", 0},
        {"{\"a\":\"\",\"b\":\"\",\"c\":\"\"}", 3},
        {"{\"a\":\"1\",\"b\":\"2\",\"c\":\"3\",\"d\":\"4\"}", -1}, /* over the maximum */
        {"{\"a\":\"1\",\"a\":\"2\"}", -1},                         /* a repeated name */
        {"{\"api_key\":\"sec_\\u0030\"}", -1},                    /* an escape */
        {"{\"api_key\":null}", -1},
        {"{\"api_key\":\"sec\"} x", -1},
        {"{\"api_key\":\"caf\xc3\xa9\"}", -1},                    /* not ASCII */
        {"[\"api_key\"]", -1},
        {"{\"api_key\":\"sec\",}", -1},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        char buf[128];
        json_flat_member m[MAX_MEMBERS];
        size_t len = strlen(cases[i].msg);
        memcpy(buf, cases[i].msg, len);
        CHECK_INT(scan_whole(buf, len, m), cases[i].n);
        check_against_jansson(cases[i].msg, len);
    }
}

/* Every byte of some objects replaced by bytes that matter to a JSON reader, or dropped,
 * and each result cut at every length. */
static void test_mutations(void)
{
    static const char *const seeds[] = {
        "{\"api_key\":\"sec_0abcdef\"}",
        "{ \"api_key\" : \"sec_0abc\", \"scope\" : \"docs.read\" }",
        "{\"a\":\"1\",\"b\":\"2\",\"c\":\"3\"}",
        "{\"api_key\":\"sec_\\u0000\",\"scope\":\"\\ud800\"}",
        "{\"api_key\":\"sec_0\",\"scope\":1e999999}",
    };
    static const char subst[] = {'"', '\\', '{', '}', '[', ':', ',', ' ', '\n', 'x', '0',
                                 '\0', '\x01', (char)0x80, (char)0xc3, 'n', 'u'};
    char msg[128];
    size_t taken = 0, tried = 0;

    for (size_t c = 0; c < ELEMENTSOF(seeds); c++) {
        size_t len = strlen(seeds[c]);
        for (size_t pos = 0; pos < len; pos++)
            for (size_t k = 0; k <= ELEMENTSOF(subst); k++) {
                size_t n = len;
                memcpy(msg, seeds[c], len);
                if (k == ELEMENTSOF(subst))
                    memmove(msg + pos, msg + pos + 1, --n - pos);
                else
                    msg[pos] = subst[k];
                for (size_t cut = 0; cut <= n; cut++) {
                    taken += (size_t)check_against_jansson(msg, cut);
                    tried++;
                }
            }
    }
    /* The mutations keep many objects whole (a changed letter, an added space). */
    CHECK(taken > 300);
    CHECK(taken < tried);
}

/* Valid JSON that jansson refuses: the scanner leaves each untouched, and the full path
 * reads it, api_key as a string of its real length (with NULs for \u0000 and lone
 * surrogates: MALFORMED) or as the marker (not a string: 422). */
static void test_jansson_refuses(void)
{
    static const struct {
        const char *msg;
        int key_len; /* -1: api_key is the marker */
    } cases[] = {
        {"{\"api_key\":\"sec_\\u0000abc\"}", 8},
        {"{\"api_key\":\"\\u0000\"}", 1},
        {"{\"api_key\":\"sec_\\ud800\"}", 5},
        {"{\"api_key\":\"\\udc00sec\"}", 4},
        {"{\"api_key\":\"sec\\uDBFF\\u0041\"}", 5},
        {"{\"api_key\":1e999999}", -1},
        {"{\"api_key\":-1e999999}", -1},
        {"{\"api_key\":123456789012345678901234567890}", -1},
        {"{\"api_key\":\"sec_0abc\",\"scope\":\"a\\u0000b\"}", 8},
        {"{\"api_key\":\"sec_0abc\",\"scope\":1e999999}", 8},
        {"{\"api_key\":\"sec_0abc\",\"x\":123456789012345678901234567890}", 8},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        char buf[128];
        json_flat_member m[MAX_MEMBERS];
        size_t len = strlen(cases[i].msg);
        json_error_t err;
        /* Not through %s: with -fsanitize=undefined GCC 12 believes that argument may be
         * NULL (-Wformat-overflow), which -Werror turns into a failed build. */
        fprintf(stderr, "jansson refuses %zu: ", i);
        fwrite(cases[i].msg, 1, len, stderr);
        fputc('\n', stderr);
        memcpy(buf, cases[i].msg, len);
        CHECK_INT(scan_whole(buf, len, m), -1);
        CHECK(memcmp(buf, cases[i].msg, len) == 0);
        CHECK(json_loadb(cases[i].msg, len, JSON_DECODE_ANY, &err) == NULL);

        json_t *marker;
        _cleanup_json_ json_t *v = full_path(cases[i].msg, len, &marker);
        CHECK(json_is_object(v));
        const json_t *key = json_object_get(v, "api_key");
        if (cases[i].key_len < 0) {
            CHECK(marker != NULL && key == marker);
        } else {
            CHECK(json_is_string(key));
            CHECK_INT((int)json_string_length(key), cases[i].key_len);
        }
    }
}

int main(void)
{
    test_plain_forms();
    test_mutations();
    test_jansson_refuses();
    fprintf(stderr, "ok\n");
    return 0;
}
