/* test-json-lenient: the reader of valid JSON that jansson refuses. What jansson reads, it
 * reads the same; the classes jansson refuses (an escaped NUL, lone surrogates, numbers
 * beyond int64 and double) it reads as json-lenient.h says; everything that is not JSON
 * it refuses with the error it must give; and it never takes what yajl refuses. */
#include <errno.h>
#include <string.h>

#include <yajl/yajl_parse.h>

#include "check.h"
#include "json-lenient.h"
#include "json-util.h"

/* A compact rendering in member order, the marker as '#'. */
static void render(const json_t *v, const json_t *marker, char *out, size_t cap, size_t *off)
{
    const char *name;
    const json_t *m;
    size_t i;
    int n = 0;

#define PUT(...)                                                                                   \
    do {                                                                                           \
        n = snprintf(out + *off, cap - *off, __VA_ARGS__);                                         \
        CHECK(n >= 0 && (size_t)n < cap - *off);                                                   \
        *off += (size_t)n;                                                                         \
    } while (0)
    if (marker && v == marker) {
        PUT("#");
        return;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        PUT("{");
        i = 0;
        json_object_foreach((json_t *)v, name, m) {
            _cleanup_json_ json_t *k = json_string(name);
            char *ks = json_dumps(k, JSON_ENCODE_ANY);
            PUT("%s%s:", i++ ? "," : "", ks);
            free(ks);
            render(m, marker, out, cap, off);
        }
        PUT("}");
        return;
    case JSON_ARRAY:
        PUT("[");
        json_array_foreach(v, i, m) {
            if (i)
                PUT(",");
            render(m, marker, out, cap, off);
        }
        PUT("]");
        return;
    default: {
        char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
        CHECK(s != NULL);
        PUT("%s", s);
        free(s);
        return;
    }
    }
#undef PUT
}

static void check_good(const char *text, size_t len, unsigned flags, const char *want,
                       bool want_marker)
{
    json_t *v = NULL, *marker = (json_t *)&v;
    char got[1024];
    size_t off = 0;

    fprintf(stderr, "good: %.*s\n", (int)len, text);
    CHECK_INT(json_lenient_load(text, len, flags, &v, &marker), 0);
    CHECK(v != NULL);
    CHECK_INT(marker != NULL, want_marker);
    render(v, marker, got, sizeof(got), &off);
    CHECK_STR(got, want);
    json_decref(v);
}

static void test_good(void)
{
    static const struct {
        const char *text;
        const char *want;
        bool marker;
    } cases[] = {
        /* an escaped NUL: the string keeps its length */
        {"{\"key\":\"sec_\\u0000abc\"}", "{\"key\":\"sec_\\u0000abc\"}", false},
        {"\"\\u0000\"", "\"\\u0000\"", false},
        /* lone surrogates become NULs; a pair is its character */
        {"[\"\\ud800\",\"a\\udc00b\",\"\\uDBFF\\u0041\"]",
         "[\"\\u0000\",\"a\\u0000b\",\"\\u0000A\"]", false},
        {"\"\\ud83d\\ude00\"", "\"\xf0\x9f\x98\x80\"", false},
        {"\"\\ud800\\ud800\\udc00\"", "\"\\u0000\xf0\x90\x80\x80\"", false},
        /* numbers jansson cannot hold are the marker; the rest are what jansson reads */
        {"{\"a\":1e999999,\"b\":123456789012345678901234567890,\"c\":-1e400,\"d\":1}",
         "{\"a\":#,\"b\":#,\"c\":#,\"d\":1}", true},
        {"[-9223372036854775808,9223372036854775807,9223372036854775808]",
         "[-9223372036854775808,9223372036854775807,#]", true},
        {"[1e-400,0.5,-0,1E2,2.5e+1]", "[0.0,0.5,0,100.0,25.0]", false},
        /* a name jansson cannot hold: as written, with the marker for its value */
        {"{\"key\\u0000x\":\"v\",\"ok\":\"\\u00e9\"}", "{\"key\\\\u0000x\":#,\"ok\":\"\xc3\xa9\"}",
         true},
        /* literals, nesting, white space, escapes */
        {" \t\r\n{\"a\" : [true, false, null, {}, []] , \"b\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"} \n",
         "{\"a\":[true,false,null,{},[]],\"b\":\"\\\"\\\\/\\b\\f\\n\\r\\t\"}", false},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++)
        check_good(cases[i].text, strlen(cases[i].text), JSON_LENIENT_REJECT_DUPLICATES,
                   cases[i].want, cases[i].marker);

    /* Without the flag a repeated name is not an error: the last one counts, as in jansson. */
    check_good("{\"a\":1e999,\"a\":2}", strlen("{\"a\":1e999,\"a\":2}"), 0, "{\"a\":2}", true);
}

static void test_bad(void)
{
    static const struct {
        const char *text;
        int err;
        size_t len; /* 0: strlen(text) */
    } cases[] = {
        {"", -EPROTO, 0},
        {"   ", -EPROTO, 0},
        {"{", -EPROTO, 0},
        {"{\"a\":\"\\u0000\"", -EPROTO, 0},                 /* cut short */
        {"{\"a\":\"\\u0000\"} x", -EPROTO, 0},              /* trailing bytes */
        {"{\"a\":\"\\u0000\"} {}", -EPROTO, 0},             /* two values */
        {"{\"a\":\"\\u0000\",}", -EPROTO, 0},               /* trailing comma */
        {"[1e999,]", -EPROTO, 0},
        {"{\"a\":\"\\x\"}", -EPROTO, 0},                    /* unknown escape */
        {"{\"a\":\"\\u12\"}", -EPROTO, 0},                  /* short \u */
        {"{\"a\":\"\\u12g4\"}", -EPROTO, 0},
        {"{\"a\":\"\t\\u0000\"}", -EPROTO, 0},              /* a raw control byte */
        {"{\"a\":\"\xff\\u0000\"}", -EPROTO, 0},            /* not UTF-8 */
        {"{\"a\":\"\xed\xa0\x80\\u0000\"}", -EPROTO, 0},    /* a surrogate in UTF-8: yajl takes it */
        {"{\"a\":\"\xc0\xaf\\u0000\"}", -EPROTO, 0},        /* overlong */
        {"{\"a\":01}", -EPROTO, 0},
        {"{\"a\":1.}", -EPROTO, 0},
        {"{\"a\":.5}", -EPROTO, 0},
        {"{\"a\":+1}", -EPROTO, 0},
        {"{\"a\":1e}", -EPROTO, 0},
        {"{\"a\":-}", -EPROTO, 0},
        {"{\"a\":1e999999,\"b\":tru}", -EPROTO, 0},
        {"{\"a\":NaN}", -EPROTO, 0},
        {"{\"a\":\"\\u0000\"}\f", -EPROTO, 0},              /* yajl's white space, not JSON's */
        {"{\"a\":\"\\u0000\"}\v", -EPROTO, 0},
        {"/* c */ {\"a\":\"\\u0000\"}", -EPROTO, 0},
        {"{\"a\":\"\\u0000\"}\0", -EPROTO, sizeof("{\"a\":\"\\u0000\"}")},
        {"{'a':1e999}", -EPROTO, 0},
        {"{\"a\":1e999,\"a\":2}", -EEXIST, 0},
        {"{\"a\\u0000\":1,\"a\\u0000\":2}", -EEXIST, 0},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        json_t *v = (json_t *)cases, *marker = (json_t *)cases;
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].text);
        fprintf(stderr, "bad %zu: %s\n", i, cases[i].text);
        CHECK_INT(json_lenient_load(cases[i].text, len, JSON_LENIENT_REJECT_DUPLICATES, &v,
                                    &marker),
                  cases[i].err);
        CHECK(v == (json_t *)cases && marker == (json_t *)cases); /* untouched */
    }
}

/* jansson's limit, and so this reader's: 2048 levels are read, 2049 are not. */
static void test_depth(void)
{
    static char text[2 * 2049 + 32];
    for (size_t levels = 2048; levels <= 2049; levels++) {
        size_t n = 0;
        for (size_t i = 0; i < levels; i++)
            text[n++] = '[';
        n += (size_t)snprintf(text + n, sizeof(text) - n, "1e999");
        for (size_t i = 0; i < levels; i++)
            text[n++] = ']';
        json_t *v = NULL, *marker = NULL;
        int r = json_lenient_load(text, n, 0, &v, &marker);
        CHECK_INT(r, levels == 2048 ? 0 : -E2BIG);
        json_decref(v);
    }
}

static bool yajl_takes(const char *text, size_t len)
{
    yajl_handle h = yajl_alloc(NULL, NULL, NULL);
    CHECK(h != NULL);
    bool ok = yajl_parse(h, (const unsigned char *)text, len) == yajl_status_ok &&
              yajl_complete_parse(h) == yajl_status_ok;
    yajl_free(h);
    return ok;
}

/* Every byte of some texts replaced by bytes that matter to a JSON reader, or dropped, and
 * each result cut at every length: whatever jansson reads, this reads the same, with no
 * marker; whatever yajl refuses, this refuses. */
static void test_against_jansson_and_yajl(void)
{
    static const char *const seeds[] = {
        "{\"method\":\"io.heare.Auth.Verify\",\"parameters\":{\"key\":\"sec_\\u0000\"}}",
        "{\"a\":[1,-2.5e3,true,null],\"b\":\"\\ud800\\udc00\\u00e9\"}",
        "{\"n\":123456789012345678901234567890,\"x\":1e999999}",
        "[\"\\ud800\",{\"k\\u0000\":{}}]",
    };
    static const char subst[] = {'"', '\\', '{', '}', '[', ']', ':', ',', ' ', 'u', '0', 'd',
                                 '8', 'e', '.', '-', '\0', '\x01', (char)0x80, (char)0xc3};
    char msg[256];
    size_t read = 0, jansson_read = 0, tried = 0;

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
                    json_error_t err;
                    json_t *v = NULL, *marker = NULL;
                    _cleanup_json_ json_t *j =
                        json_loadb(msg, cut, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);
                    int r = json_lenient_load(msg, cut, JSON_LENIENT_REJECT_DUPLICATES, &v,
                                              &marker);
                    tried++;
                    if (j) {
                        if (r != 0 || !json_equal(j, v) || marker)
                            fprintf(stderr, "jansson reads otherwise: %.*s\n", (int)cut, msg);
                        CHECK_INT(r, 0);
                        CHECK(json_equal(j, v));
                        CHECK(marker == NULL);
                        jansson_read++;
                    }
                    if (r == 0) {
                        if (!yajl_takes(msg, cut))
                            fprintf(stderr, "read what yajl refuses: %.*s\n", (int)cut, msg);
                        CHECK(yajl_takes(msg, cut));
                        read++;
                    }
                    json_decref(v);
                }
            }
    }
    /* The mutations keep many texts whole, and many of those are what jansson refuses. */
    CHECK(jansson_read > 100);
    CHECK(read > jansson_read + 100);
    CHECK(read < tried);
}

static void test_holds_unfit(void)
{
    json_t *v = NULL, *marker = NULL;
    const char text[] = "{\"s\":\"a\\u0000\",\"t\":\"ok\",\"o\":{\"x\":[\"b\\u0000\"]},"
                        "\"n\":1e999,\"m\":{\"y\":[1,{\"z\":1e999}]},\"p\":[1,\"q\",{}]}";
    CHECK_INT(json_lenient_load(text, strlen(text), 0, &v, &marker), 0);
    CHECK(marker != NULL);
    /* a top-level string is the caller's to judge unless asked */
    CHECK(!json_lenient_holds_unfit(json_object_get(v, "s"), marker, true));
    CHECK(json_lenient_holds_unfit(json_object_get(v, "s"), marker, false));
    CHECK(!json_lenient_holds_unfit(json_object_get(v, "t"), marker, false));
    CHECK(json_lenient_holds_unfit(json_object_get(v, "o"), marker, true));
    CHECK(json_lenient_holds_unfit(json_object_get(v, "n"), marker, true));
    CHECK(json_lenient_holds_unfit(json_object_get(v, "m"), marker, true));
    CHECK(!json_lenient_holds_unfit(json_object_get(v, "p"), marker, true));
    json_decref(v);
}

int main(void)
{
    test_good();
    test_bad();
    test_depth();
    test_against_jansson_and_yajl();
    test_holds_unfit();
    fprintf(stderr, "ok\n");
    return 0;
}
