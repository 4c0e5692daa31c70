/* test-json-scan: the flat-object scanner against jansson. Whatever the scanner takes,
 * jansson reads as the same object; the scanner never changes the message; and it takes
 * the plain forms clients write. */
#include <string.h>

#include "check.h"
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

/* If the scanner takes msg, jansson must read the same members and values. Returns 1 if
 * the scanner took it. */
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

    json_error_t err;
    _cleanup_json_ json_t *v = json_loadb(msg, len, JSON_DECODE_ANY, &err);
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

int main(void)
{
    test_plain_forms();
    test_mutations();
    fprintf(stderr, "ok\n");
    return 0;
}
