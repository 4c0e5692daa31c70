/* test-varlink: message framing (NUL and line mode, the 64 KiB limit) and call parsing. */
#include <errno.h>
#include <string.h>

#include "ascii.h"
#include "check.h"
#include "json-util.h"
#include "varlink.h"

struct frame_case {
    const char *name;
    const char *buf;
    size_t len;
    varlink_framing framing_in;
    int ret;
    size_t msg_len;
    size_t consumed;
    varlink_framing framing_out;
};

#define S(s) s, sizeof(s) - 1

static const struct frame_case frame_cases[] = {
    {"nul message", S("{\"a\":1}\0"), VARLINK_FRAMING_UNKNOWN, 1, 7, 8, VARLINK_FRAMING_NUL},
    {"line message", S("{\"a\":1}\n"), VARLINK_FRAMING_UNKNOWN, 1, 7, 8, VARLINK_FRAMING_LINE},
    {"partial, unknown", S("{\"a\":"), VARLINK_FRAMING_UNKNOWN, 0, 0, 0, VARLINK_FRAMING_UNKNOWN},
    {"partial, nul", S("{\"a\":"), VARLINK_FRAMING_NUL, 0, 0, 0, VARLINK_FRAMING_NUL},
    {"empty", "", 0, VARLINK_FRAMING_UNKNOWN, 0, 0, 0, VARLINK_FRAMING_UNKNOWN},
    {"two pipelined nul", S("{\"a\":1}\0{\"b\":2}\0"), VARLINK_FRAMING_UNKNOWN, 1, 7, 8,
     VARLINK_FRAMING_NUL},
    {"two pipelined lines", S("{}\n{}\n"), VARLINK_FRAMING_UNKNOWN, 1, 2, 3, VARLINK_FRAMING_LINE},
    {"nul mode, newline inside", S("{\"a\":\n1}\0"), VARLINK_FRAMING_NUL, 1, 8, 9,
     VARLINK_FRAMING_NUL},
    {"nul mode, newline before nul", S("{}\n\0"), VARLINK_FRAMING_NUL, 1, 3, 4,
     VARLINK_FRAMING_NUL},
    {"nul mode, newline only, partial", S("{}\n"), VARLINK_FRAMING_NUL, 0, 0, 0,
     VARLINK_FRAMING_NUL},
    {"line mode, nul is a byte", S("{}\0{}\n"), VARLINK_FRAMING_LINE, 1, 5, 6,
     VARLINK_FRAMING_LINE},
    {"line mode, nul only, partial", S("{}\0"), VARLINK_FRAMING_LINE, 0, 0, 0,
     VARLINK_FRAMING_LINE},
    {"unknown, first terminator decides (newline)", S("{}\n\0"), VARLINK_FRAMING_UNKNOWN, 1, 2, 3,
     VARLINK_FRAMING_LINE},
    {"unknown, first terminator decides (nul)", S("{}\0\n"), VARLINK_FRAMING_UNKNOWN, 1, 2, 3,
     VARLINK_FRAMING_NUL},
};

static void test_frame_table(void)
{
    for (size_t i = 0; i < ELEMENTSOF(frame_cases); i++) {
        const struct frame_case *t = &frame_cases[i];
        varlink_framing f = t->framing_in;
        size_t msg_len = 12345, consumed = 54321;

        fprintf(stderr, "frame: %s\n", t->name);
        CHECK_INT(varlink_frame_next(t->buf, t->len, &f, &msg_len, &consumed), t->ret);
        CHECK_INT(f, t->framing_out);
        if (t->ret == 1) {
            CHECK_INT(msg_len, t->msg_len);
            CHECK_INT(consumed, t->consumed);
        } else {
            /* Out-parameters are written only on success. */
            CHECK_INT(msg_len, 12345);
            CHECK_INT(consumed, 54321);
        }
    }
}

/* A buffer of n '{' bytes (never a terminator), plus room for one more byte. */
static char *filler(size_t n)
{
    char *b = malloc(n + 2);
    CHECK(b);
    memset(b, '{', n + 2);
    return b;
}

static void test_frame_limits(void)
{
    const size_t max = VARLINK_MESSAGE_MAX;
    varlink_framing f;
    size_t msg_len, consumed;
    _cleanup_free_ char *b = filler(max + 1);

    /* Exactly 64 KiB plus its terminator: accepted, in both framings. */
    b[max] = '\0';
    f = VARLINK_FRAMING_UNKNOWN;
    CHECK_INT(varlink_frame_next(b, max + 1, &f, &msg_len, &consumed), 1);
    CHECK_INT(msg_len, max);
    CHECK_INT(consumed, max + 1);
    CHECK_INT(f, VARLINK_FRAMING_NUL);

    b[max] = '\n';
    f = VARLINK_FRAMING_UNKNOWN;
    CHECK_INT(varlink_frame_next(b, max + 1, &f, &msg_len, &consumed), 1);
    CHECK_INT(msg_len, max);
    CHECK_INT(f, VARLINK_FRAMING_LINE);

    /* 64 KiB without a terminator yet: may still complete. */
    f = VARLINK_FRAMING_NUL;
    CHECK_INT(varlink_frame_next(b, max, &f, &msg_len, &consumed), 0);

    /* 64 KiB + 1 without a terminator: can only become too long. */
    b[max] = '{';
    f = VARLINK_FRAMING_UNKNOWN;
    CHECK_INT(varlink_frame_next(b, max + 1, &f, &msg_len, &consumed), -EMSGSIZE);
    CHECK_INT(f, VARLINK_FRAMING_UNKNOWN);
    f = VARLINK_FRAMING_NUL;
    CHECK_INT(varlink_frame_next(b, max + 1, &f, &msg_len, &consumed), -EMSGSIZE);
    f = VARLINK_FRAMING_LINE;
    CHECK_INT(varlink_frame_next(b, max + 1, &f, &msg_len, &consumed), -EMSGSIZE);

    /* 64 KiB + 1 with its terminator present. */
    b[max + 1] = '\0';
    f = VARLINK_FRAMING_UNKNOWN;
    CHECK_INT(varlink_frame_next(b, max + 2, &f, &msg_len, &consumed), -EMSGSIZE);
    f = VARLINK_FRAMING_NUL;
    CHECK_INT(varlink_frame_next(b, max + 2, &f, &msg_len, &consumed), -EMSGSIZE);
    b[max + 1] = '\n';
    f = VARLINK_FRAMING_LINE;
    CHECK_INT(varlink_frame_next(b, max + 2, &f, &msg_len, &consumed), -EMSGSIZE);

    /* A terminator far beyond the window is not searched for. */
    _cleanup_free_ char *big = filler(4 * max);
    big[4 * max] = '\0';
    f = VARLINK_FRAMING_NUL;
    CHECK_INT(varlink_frame_next(big, 4 * max + 1, &f, &msg_len, &consumed), -EMSGSIZE);
}

/* After the first message decided line mode, a NUL no longer ends a message. */
static void test_frame_line_locked(void)
{
    const char stream[] = "{\"method\":\"a.B\"}\n{\"x\":1}\0{\"y\":2}\n";
    size_t len = sizeof(stream) - 1, off = 0, msg_len, consumed;
    varlink_framing f = VARLINK_FRAMING_UNKNOWN;

    CHECK_INT(varlink_frame_next(stream, len, &f, &msg_len, &consumed), 1);
    CHECK_INT(f, VARLINK_FRAMING_LINE);
    CHECK_INT(msg_len, strlen("{\"method\":\"a.B\"}"));
    off += consumed;

    CHECK_INT(varlink_frame_next(stream + off, len - off, &f, &msg_len, &consumed), 1);
    CHECK_INT(f, VARLINK_FRAMING_LINE);
    CHECK_INT(msg_len, strlen("{\"x\":1}") + 1 + strlen("{\"y\":2}"));
    off += consumed;
    CHECK_INT(off, len);

    CHECK_INT(varlink_frame_next(stream + off, 0, &f, &msg_len, &consumed), 0);

    /* NUL mode, likewise locked: a '\n' right after the first message is whitespace. */
    const char nul_stream[] = "{}\0\n{}\0";
    f = VARLINK_FRAMING_UNKNOWN;
    CHECK_INT(varlink_frame_next(nul_stream, sizeof(nul_stream) - 1, &f, &msg_len, &consumed), 1);
    CHECK_INT(f, VARLINK_FRAMING_NUL);
    CHECK_INT(varlink_frame_next(nul_stream + consumed, sizeof(nul_stream) - 1 - consumed, &f,
                                 &msg_len, &consumed),
              1);
    CHECK_INT(msg_len, 3);
}

static void test_terminator(void)
{
    CHECK_INT(varlink_terminator(VARLINK_FRAMING_UNKNOWN), '\0');
    CHECK_INT(varlink_terminator(VARLINK_FRAMING_NUL), '\0');
    CHECK_INT(varlink_terminator(VARLINK_FRAMING_LINE), '\n');
}

static void test_split_method(void)
{
    size_t iface_len = 0;
    const char *m = NULL;

    CHECK_INT(varlink_split_method("io.heare.Auth.Verify", &iface_len, &m), 0);
    CHECK_INT(iface_len, strlen("io.heare.Auth"));
    CHECK_STR(m, "Verify");
    CHECK_INT(varlink_split_method("a.B", &iface_len, &m), 0);
    CHECK_INT(iface_len, 1);
    CHECK_STR(m, "B");

    static const char *const bad[] = {"", "Verify", ".Verify", "io.heare.Auth.", "."};
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        iface_len = 99;
        CHECK_INT(varlink_split_method(bad[i], &iface_len, &m), -EINVAL);
        CHECK_INT(iface_len, 99);
    }
    CHECK_INT(varlink_split_method(NULL, &iface_len, &m), -EINVAL);
}

static void test_call_good(void)
{
    varlink_call call;
    const char *reason = NULL;
    const char msg1[] = "{\"method\": \"io.heare.Auth.Verify\", \"parameters\": {\"key\": \"k\"}}";

    CHECK_INT(varlink_call_parse(msg1, strlen(msg1), &call, &reason), 0);
    CHECK_STR(call.method, "io.heare.Auth.Verify");
    CHECK(json_is_object(call.parameters));
    CHECK_STR(json_string_value(json_object_get(call.parameters, "key")), "k");
    CHECK_INT(call.flags, 0);
    varlink_call_done(&call);
    CHECK(call.message == NULL);

    /* Absent parameters: an empty object owned by the call; unknown members ignored;
     * a trailing newline (NUL mode) is whitespace. */
    const char msg2[] = "{\"method\":\"org.varlink.service.GetInfo\",\"more\":true,\"x\":[1]}\n";
    CHECK_INT(varlink_call_parse(msg2, strlen(msg2), &call, &reason), 0);
    CHECK(json_is_object(call.parameters));
    CHECK_INT(json_object_size(call.parameters), 0);
    CHECK(json_object_get(call.message, "parameters") == call.parameters);
    CHECK_INT(call.flags, VARLINK_CALL_MORE);
    varlink_call_done(&call);

    const char msg3[] = "{\"method\":\"a.B\",\"oneway\":true,\"more\":false}";
    CHECK_INT(varlink_call_parse(msg3, strlen(msg3), &call, &reason), 0);
    CHECK_INT(call.flags, VARLINK_CALL_ONEWAY);
    varlink_call_done(&call);

    /* Only len bytes are parsed, even if more follow. */
    const char msg4[] = "{\"method\":\"a.B\"}garbage";
    CHECK_INT(varlink_call_parse(msg4, strlen("{\"method\":\"a.B\"}"), &call, &reason), 0);
    varlink_call_done(&call);

    varlink_call_done(NULL);
}

struct bad_call {
    const char *msg;
    size_t len; /* 0: strlen(msg) */
    const char *reason;
};

static const struct bad_call bad_calls[] = {
    {"", 0, "not JSON"},
    {"   ", 0, "not JSON"},
    {"{", 0, "not JSON"},
    {"{\"method\":\"a.B\"} {}", 0, "not JSON"},
    {"{\"method\":\"a.B\"}x", 0, "not JSON"},
    {"{\"method\":\"a.B\",}", 0, "not JSON"},
    {"{\"method\":\"a\xff.B\"}", 0, "not JSON"},
    {"{\"method\":\"a.B\"}\0", sizeof("{\"method\":\"a.B\"}\0") - 1, "not JSON"},
    /* jansson drops a NUL right after a number or a literal (found by fuzz-json-lenient) */
    {"{\"method\":\"a.B\",\"oneway\":true\0}", sizeof("{\"method\":\"a.B\",\"oneway\":true\0}") - 1,
     "not JSON"},
    {"{\"method\":\"a.B\",\"x\":1\0}", sizeof("{\"method\":\"a.B\",\"x\":1\0}") - 1, "not JSON"},
    {"{\"method\":\"a.B\",\"method\":\"a.C\"}", 0, "duplicate member name"},
    {"[]", 0, "not a JSON object"},
    {"[{\"method\":\"a.B\"}]", 0, "not a JSON object"},
    {"42", 0, "not a JSON object"},
    {"\"a.B\"", 0, "not a JSON object"},
    {"null", 0, "not a JSON object"},
    {"{}", 0, "method missing"},
    {"{\"parameters\":{}}", 0, "method missing"},
    {"{\"method\":null}", 0, "method is not a string"},
    {"{\"method\":42}", 0, "method is not a string"},
    {"{\"method\":[\"a.B\"]}", 0, "method is not a string"},
    {"{\"method\":\"\"}", 0, "method is not a qualified name"},
    {"{\"method\":\"Verify\"}", 0, "method is not a qualified name"},
    {"{\"method\":\".Verify\"}", 0, "method is not a qualified name"},
    {"{\"method\":\"io.heare.Auth.\"}", 0, "method is not a qualified name"},
    {"{\"method\":\"a.B\",\"parameters\":[]}", 0, "parameters is not an object"},
    {"{\"method\":\"a.B\",\"parameters\":\"x\"}", 0, "parameters is not an object"},
    {"{\"method\":\"a.B\",\"oneway\":1}", 0, "oneway is not a boolean"},
    {"{\"method\":\"a.B\",\"oneway\":null}", 0, "oneway is not a boolean"},
    {"{\"method\":\"a.B\",\"more\":\"true\"}", 0, "more is not a boolean"},
    {"{\"method\":\"a.B\",\"more\":0}", 0, "more is not a boolean"},
    {"{\"method\":\"a.B\",\"oneway\":true,\"more\":true}", 0, "oneway and more both set"},
    {"{\"method\":\"a.B\",\"upgrade\":1}", 0, "upgrade is not a boolean"},
    {"{\"method\":\"a.B\",\"upgrade\":null}", 0, "upgrade is not a boolean"},
    {"{\"method\":\"a.B\",\"upgrade\":\"true\"}", 0, "upgrade is not a boolean"},
    {"{\"method\":\"a.B\",\"parameters\":false}", 0, "parameters is not an object"},
    {"{\"method\":\"a.B\",\"parameters\":null,\"parameters\":{}}", 0, "duplicate member name"},
    /* what jansson refuses but is no JSON either stays "not JSON" */
    {"{\"method\":\"a.B\",\"x\":\"\\u0000\\x\"}", 0, "not JSON"},
    {"{\"method\":\"a.B\",\"x\":1e999999,}", 0, "not JSON"},
    {"{\"method\":\"a.B\",\"x\":\"\xed\xa0\x80\"}", 0, "not JSON"},
    {"{\"method\":\"a.B\",\"x\":1e999999}\f", 0, "not JSON"},
    {"{\"method\":\"a.B\",\"x\":1e999999,\"x\":1}", 0, "duplicate member name"},
    {"{\"method\":\"a.B\",\"parameters\":{\"k\":\"\\u0000\",\"k\":\"a\"}}", 0,
     "duplicate member name"},
    /* valid, read, and still no call */
    {"{\"method\":1e999999}", 0, "method is not a string"},
    {"{\"method\":\"a.B\",\"parameters\":123456789012345678901234567890}", 0,
     "parameters is not an object"},
    {"{\"method\":\"a.B\",\"oneway\":1e999999}", 0, "oneway is not a boolean"},
    {"{\"method\\u0000\":\"a.B\"}", 0, "method missing"},
};

static void test_call_bad(void)
{
    for (size_t i = 0; i < ELEMENTSOF(bad_calls); i++) {
        const struct bad_call *t = &bad_calls[i];
        size_t len = t->len ? t->len : strlen(t->msg);
        varlink_call call = {.method = "untouched"};
        const char *reason = NULL;

        fprintf(stderr, "bad call %zu: %s\n", i, t->reason);
        CHECK_INT(varlink_call_parse(t->msg, len, &call, &reason), -EPROTO);
        CHECK_STR(reason, t->reason);
        CHECK_STR(call.method, "untouched");
        CHECK(call.message == NULL);
    }
}

/* Valid JSON that jansson refuses: both scanners leave it untouched, and the full parser
 * reads it (lenient) into the call the daemon answers from: a key with a NUL of its real
 * length (MALFORMED), a number as the unfit marker (InvalidParameter), a method name with a
 * NUL of its real length (MethodNotFound). */
static void test_call_jansson_refuses(void)
{
    static const struct {
        const char *msg;
        size_t method_len;
        const char *param; /* a parameter to look at, or NULL */
        int param_len;     /* its string length, or -1: the marker */
    } cases[] = {
        {"{\"method\":\"io.heare.Auth.Verify\",\"parameters\":{\"key\":\"sec_\\u0000x\"}}", 20,
         "key", 6},
        {"{\"method\":\"io.heare.Auth.Verify\",\"parameters\":{\"key\":\"\\ud800\"}}", 20, "key", 1},
        {"{\"method\":\"io.heare.Auth.Verify\",\"parameters\":{\"key\":\"a\\udfff\"}}", 20, "key", 2},
        {"{\"method\":\"io.heare.Auth.Verify\",\"parameters\":{\"key\":1e999999}}", 20, "key", -1},
        {"{\"method\":\"io.heare.Auth.Verify\",\"parameters\":{\"key\":"
         "123456789012345678901234567890}}", 20, "key", -1},
        {"{\"method\":\"io.heare.Auth.Verify\",\"parameters\":{\"key\":\"k\",\"scope\":1e999999}}",
         20, "scope", -1},
        {"{\"method\":\"io.heare.Auth.Verify\",\"parameters\":{\"key\":\"k\",\"nope\":-1e999}}", 20,
         "nope", -1},
        {"{\"method\":\"io.heare.AuthAdmin.RotateKey\",\"parameters\":{\"id\":\"key_a\","
         "\"grace_seconds\":123456789012345678901234567890}}", 28, "grace_seconds", -1},
        {"{\"method\":\"io.heare.Auth.Verify\\u0000\",\"parameters\":{\"key\":\"k\"}}", 21, "key", 1},
        {"{\"method\":\"\\u0000\"}", 1, NULL, 0},
        {"{\"method\":\"a.B\",\"ignored\":1e999999}", 3, NULL, 0},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        char buf[256];
        size_t len = strlen(cases[i].msg);
        varlink_simple_call sc;
        varlink_call call;
        const char *reason = NULL;

        /* Not through %s: with -fsanitize=undefined GCC 12 believes that argument may be
         * NULL (-Wformat-overflow), which -Werror turns into a failed build. */
        fprintf(stderr, "jansson refuses %zu: ", i);
        fwrite(cases[i].msg, 1, len, stderr);
        fputc('\n', stderr);
        memcpy(buf, cases[i].msg, len + 1);
        CHECK_INT(varlink_call_scan_simple(buf, len, &sc), 0);
        CHECK(memcmp(buf, cases[i].msg, len + 1) == 0);
        /* the compact form too, after a leading space (see test_scan_compact) */
        char spaced[258] = " ";
        memcpy(spaced + 1, cases[i].msg, len + 1);
        CHECK_INT(varlink_call_scan_simple(spaced, len + 1, &sc), 0);

        CHECK_INT(varlink_call_parse(cases[i].msg, len, &call, &reason), 0);
        CHECK(call.lenient);
        CHECK_INT(call.method_len, cases[i].method_len);
        if (cases[i].param) {
            const json_t *v = json_object_get(call.parameters, cases[i].param);
            if (cases[i].param_len < 0) {
                CHECK(call.unfit != NULL && v == call.unfit);
            } else {
                CHECK(json_is_string(v));
                CHECK_INT(json_string_length(v), cases[i].param_len);
            }
        }
        varlink_call_done(&call);
    }

    /* What jansson reads is not read leniently. */
    const char plain[] = "{\"method\":\"a.B\",\"parameters\":{\"key\":\"\\u0041\"}}";
    varlink_call call;
    const char *reason = NULL;
    CHECK_INT(varlink_call_parse(plain, strlen(plain), &call, &reason), 0);
    CHECK(!call.lenient && call.unfit == NULL);
    CHECK_INT(call.method_len, 3);
    varlink_call_done(&call);
}

/* The scanner takes only plain calls, NUL-terminates their strings in place, and leaves
 * every other message byte for byte as it was (the full parser then judges it). */
static void test_scan_simple(void)
{
    char good[] = " { \"parameters\" : {\"key\": \"sec_0abc\", \"scope\":\"a.b\"},"
                  "\"method\":\"io.heare.Auth.Verify\" } ";
    varlink_simple_call sc;

    CHECK_INT(varlink_call_scan_simple(good, strlen(good), &sc), 1);
    CHECK_STR(sc.method, "io.heare.Auth.Verify");
    CHECK_INT(sc.n_params, 2);
    CHECK_STR(sc.params[0].name, "key");
    CHECK_STR(sc.params[0].value, "sec_0abc");
    CHECK_INT(sc.params[0].value_len, 8);
    CHECK_STR(sc.params[1].name, "scope");
    CHECK_STR(sc.params[1].value, "a.b");
    varlink_simple_call_undo(&sc);
    CHECK_STR(good, " { \"parameters\" : {\"key\": \"sec_0abc\", \"scope\":\"a.b\"},"
                    "\"method\":\"io.heare.Auth.Verify\" } ");

    char none[] = "{\"method\":\"a.B\"}";
    CHECK_INT(varlink_call_scan_simple(none, strlen(none), &sc), 1);
    CHECK_INT(sc.n_params, 0);
    char empty[] = "{\"method\":\"a.B\",\"parameters\":{}}";
    CHECK_INT(varlink_call_scan_simple(empty, strlen(empty), &sc), 1);
    CHECK_INT(sc.n_params, 0);
    /* null parameters are none (the reference Go implementation sends them) */
    char null[] = "{\"method\":\"a.B\",\"parameters\":null}";
    CHECK_INT(varlink_call_scan_simple(null, strlen(null), &sc), 1);
    CHECK_INT(sc.n_params, 0);
    CHECK_INT(sc.n_nuls, 1);
    varlink_simple_call_undo(&sc);
    CHECK_STR(null, "{\"method\":\"a.B\",\"parameters\":null}");
    char null_spaced[] = "{ \"parameters\" : null , \"method\" : \"a.B\" }";
    CHECK_INT(varlink_call_scan_simple(null_spaced, strlen(null_spaced), &sc), 1);
    CHECK_INT(sc.n_params, 0);
    CHECK_STR(sc.method, "a.B");

    static const char *const refused[] = {
        "",
        "{}",
        "[]",
        "{\"method\":\"Verify\"}",                                    /* not qualified */
        "{\"method\":\"a.B\",\"method\":\"a.B\"}",                      /* duplicate */
        "{\"method\":\"a.B\",\"parameters\":{\"k\":\"1\",\"k\":\"2\"}}",  /* duplicate */
        "{\"method\":\"a.B\",\"oneway\":true}",                       /* flags */
        "{\"method\":\"a.B\",\"more\":false}",
        "{\"method\":\"a.B\",\"parameters\":{\"k\":null}}",          /* not a string */
        "{\"method\":\"a.B\",\"parameters\":{\"k\":1}}",
        "{\"method\":\"a.B\",\"parameters\":{\"k\":\"a\\\"b\"}}",     /* escape */
        "{\"method\":\"a.B\",\"parameters\":{\"k\":\"\xc3\xa9\"}}",    /* non-ASCII */
        "{\"method\":\"a.B\",\"parameters\":{\"k\":\"a\tb\"}}",        /* control */
        "{\"method\":\"a.B\",\"parameters\":{\"a\":\"1\",\"b\":\"2\",\"c\":\"3\",\"d\":\"4\","
        "\"e\":\"5\"}}",                                               /* too many */
        "{\"method\":\"a.B\"} x",                                      /* trailing */
        "{\"method\":\"a.B\",}",
        "{\"method\":\"a.B\"",
        "{\"method\":\"a.B",
        "{\"parameters\":{}}",                                         /* no method */
        "{\"method\":\"a.B\",\"parameters\":nul}",                     /* not null */
        "{\"method\":\"a.B\",\"parameters\":nullx}",
        "{\"method\":\"a.B\",\"parameters\":NULL}",
        "{\"method\":\"a.B\",\"parameters\":null,\"parameters\":{}}", /* duplicate */
        "{\"method\":\"a.B\",\"parameters\":null,\"parameters\":null}",
        "{\"parameters\":null,\"method\":\"a.B\",\"parameters\":null}",
        "{\"parameters\":null}",                                       /* no method */
        "{\"method\":\"a.B\",\"upgrade\":true}",                       /* flags */
    };
    for (size_t i = 0; i < ELEMENTSOF(refused); i++) {
        char buf[256];
        size_t len = strlen(refused[i]);
        memcpy(buf, refused[i], len + 1);
        fprintf(stderr, "refused %zu: %s\n", i, refused[i]);
        CHECK_INT(varlink_call_scan_simple(buf, len, &sc), 0);
        CHECK(memcmp(buf, refused[i], len + 1) == 0);
    }
}

/* The fast path and the full parser agree: whatever varlink_call_scan_simple() takes,
 * varlink_call_parse() reads as the same call (method, string parameters, no flags), and the
 * scan leaves the message as it was once undone. Returns the scanner's answer. */
static int check_scan_agrees_with_parse(const char *msg, size_t len)
{
    char buf[512];
    varlink_simple_call sc;
    varlink_call call;
    const char *reason = NULL;

    CHECK(len <= sizeof(buf));
    memcpy(buf, msg, len);
    int r = varlink_call_scan_simple(buf, len, &sc);
    if (r != 1) {
        CHECK(memcmp(buf, msg, len) == 0);
        return r;
    }
    /* Parsed once: a second parse into call would lose the first one's message. */
    int parsed = varlink_call_parse(msg, len, &call, &reason);
    if (parsed != 0)
        fprintf(stderr, "scanned, but the full parser says %s: %.*s\n", reason, (int)len, msg);
    CHECK_INT(parsed, 0);
    CHECK_INT(call.flags, 0);
    CHECK(!call.lenient);
    CHECK_INT(call.method_len, sc.method_len);
    CHECK(memcmp(call.method, sc.method, sc.method_len) == 0);
    CHECK_INT(json_object_size(call.parameters), sc.n_params);
    for (size_t i = 0; i < sc.n_params; i++) {
        const json_t *v = json_object_get(call.parameters, sc.params[i].name);
        CHECK(json_is_string(v));
        CHECK_INT(json_string_length(v), sc.params[i].value_len);
        CHECK(memcmp(json_string_value(v), sc.params[i].value, sc.params[i].value_len) == 0);
    }
    varlink_call_done(&call);
    varlink_simple_call_undo(&sc);
    CHECK(memcmp(buf, msg, len) == 0);
    return r;
}

/* The call grammar of Varlink: "parameters" null or absent is an empty object, unknown
 * members are ignored wherever they are and whatever they hold, the flags are read, and
 * "upgrade" is reported for the caller to refuse. The fast path takes the plain ones. */
static void test_call_conformance(void)
{
    static const struct {
        const char *msg;
        const char *method;
        unsigned flags;
        size_t n_params;
        int scanned; /* what varlink_call_scan_simple() answers */
    } cases[] = {
        {"{\"method\":\"a.B\",\"parameters\":null}", "a.B", 0, 0, 1},
        {"{\"method\":\"a.B\"}", "a.B", 0, 0, 1},
        {"{\"method\":\"a.B\",\"parameters\":{}}", "a.B", 0, 0, 1},
        {" { \"method\" : \"a.B\" , \"parameters\" : null } ", "a.B", 0, 0, 1},
        {"{\"parameters\":null,\"method\":\"a.B\"}", "a.B", 0, 0, 1},
        {"{\"parameters\":\tnull\n,\"method\":\"a.B\"}\n", "a.B", 0, 0, 1},
        {"{\"method\":\"io.heare.Auth.Verify\",\"parameters\":{\"key\":\"sec_x\"}}",
         "io.heare.Auth.Verify", 0, 1, 1},
        {"{\"method\":\"org.varlink.service.GetInfo\",\"parameters\":null}",
         "org.varlink.service.GetInfo", 0, 0, 1},
        {"{\"method\":\"a.B\",\"parameters\":null,\"oneway\":true}", "a.B", VARLINK_CALL_ONEWAY, 0,
         0},
        {"{\"method\":\"a.B\",\"parameters\":null,\"more\":true}", "a.B", VARLINK_CALL_MORE, 0, 0},
        {"{\"method\":\"a.B\",\"upgrade\":true}", "a.B", VARLINK_CALL_UPGRADE, 0, 0},
        {"{\"method\":\"a.B\",\"upgrade\":false}", "a.B", 0, 0, 0},
        {"{\"method\":\"a.B\",\"upgrade\":true,\"oneway\":true}", "a.B",
         VARLINK_CALL_UPGRADE | VARLINK_CALL_ONEWAY, 0, 0},
        {"{\"method\":\"a.B\",\"upgrade\":true,\"more\":true,\"parameters\":null}", "a.B",
         VARLINK_CALL_UPGRADE | VARLINK_CALL_MORE, 0, 0},
        {"{\"method\":\"a.B\",\"oneway\":false,\"more\":false,\"upgrade\":false,"
         "\"parameters\":null}",
         "a.B", 0, 0, 0},
        /* unknown members, vendor extensions among them */
        {"{\"method\":\"a.B\",\"parameters\":{\"k\":\"v\"},\"org.example.vendor\":{\"trace\":"
         "[1,{\"x\":null}]},\"x\":null,\"y\":1.5,\"z\":\"s\",\"w\":[]}",
         "a.B", 0, 1, 0},
        {"{\"x\":{\"method\":\"a.C\",\"parameters\":[]},\"method\":\"a.B\"}", "a.B", 0, 0, 0},
        {"{\"method\":\"a.B\",\"continues\":true,\"error\":\"a.E\"}", "a.B", 0, 0, 0},
        {"{\"method\":\"a.B\",\"Parameters\":[1],\"METHOD\":2}", "a.B", 0, 0, 0},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        size_t len = strlen(cases[i].msg);
        varlink_call call;
        const char *reason = NULL;

        fprintf(stderr, "conformance %zu: %s\n", i, cases[i].msg);
        CHECK_INT(check_scan_agrees_with_parse(cases[i].msg, len), cases[i].scanned);
        CHECK_INT(varlink_call_parse(cases[i].msg, len, &call, &reason), 0);
        CHECK_STR(call.method, cases[i].method);
        CHECK_INT(call.flags, cases[i].flags);
        CHECK(json_is_object(call.parameters));
        CHECK_INT(json_object_size(call.parameters), cases[i].n_params);
        /* what the call holds is the object the handlers read, owned by the message */
        CHECK(json_object_get(call.message, "parameters") == call.parameters);
        varlink_call_done(&call);
    }
}

/* Scans msg (len bytes) into a printable summary of the result, and undoes the scan. */
static void scan_summary(const char *msg, size_t len, char *out, size_t cap)
{
    char buf[300];
    varlink_simple_call sc;
    int n;

    memcpy(buf, msg, len);
    int r = varlink_call_scan_simple(buf, len, &sc);
    n = snprintf(out, cap, "%d", r);
    if (r == 1) {
        n += snprintf(out + n, cap - (size_t)n, " %s/%zu nuls %zu", sc.method, sc.method_len,
                      sc.n_nuls);
        for (size_t i = 0; i < sc.n_params; i++)
            n += snprintf(out + n, cap - (size_t)n, " %s=%s/%zu", sc.params[i].name,
                          sc.params[i].value, sc.params[i].value_len);
        varlink_simple_call_undo(&sc);
    }
    CHECK(memcmp(buf, msg, len) == 0);
}

/* The compact form ("method" first, no white space) is read by literal compares: it must
 * take and refuse exactly what the general scanner does, which reads the same message
 * after a leading space. Every byte of some compact calls is replaced by bytes that
 * matter to either. */
static void test_scan_compact(void)
{
    static const char *const calls[] = {
        "{\"method\":\"io.heare.Auth.Verify\",\"parameters\":{\"key\":\"sec_0abcdef\"}}",
        "{\"method\":\"a.B\",\"parameters\":{\"k\":\"1\",\"s\":\"x.y\"}}",
        "{\"method\":\"a.B\",\"parameters\":{}}",
        "{\"method\":\"a.B\"}",
        "{\"method\":\"a.B\",\"parameters\":{\"a\":\"1\",\"b\":\"2\",\"c\":\"3\",\"d\":\"4\"}}",
        "{\"method\":\"a.B\",\"parameters\":{\"key\":\"\\u0000\"}}",
        "{\"method\":\"a.B\",\"parameters\":{\"key\":1e999999}}",
        "{\"method\":\"org.varlink.service.GetInfo\",\"parameters\":null}",
    };
    static const char subst[] = {'"', '\\', '{', '}', ':', ',', ' ', '.', 'x', 'k', '\0',
                                 '\t', (char)0x80, 'n', 'u', 'l'};
    char msg[300], spaced[301], a[512], b[512];
    size_t compact_taken = 0;

    for (size_t c = 0; c < ELEMENTSOF(calls); c++) {
        size_t len = strlen(calls[c]);
        for (size_t pos = 0; pos <= len; pos++)
            for (size_t k = 0; k <= ELEMENTSOF(subst); k++) {
                size_t n = len;
                memcpy(msg, calls[c], len);
                if (pos == len) { /* and one cut short at every length */
                    if (k > 0)
                        continue;
                } else if (k == ELEMENTSOF(subst))
                    memmove(msg + pos, msg + pos + 1, --n - pos); /* a byte less */
                else
                    msg[pos] = subst[k];
                for (size_t cut = (pos == len ? 0 : n); cut <= n; cut++) {
                    spaced[0] = ' ';
                    memcpy(spaced + 1, msg, cut);
                    scan_summary(msg, cut, a, sizeof(a));
                    scan_summary(spaced, cut + 1, b, sizeof(b));
                    check_scan_agrees_with_parse(msg, cut);
                    if (strcmp(a, b) != 0)
                        fprintf(stderr, "compact %s / general %s: %.*s\n", a, b, (int)cut, msg);
                    CHECK_STR(a, b);
                    compact_taken += a[0] == '1';
                }
            }
    }
    CHECK(compact_taken > 100);
}

/* The word-at-a-time tests of ascii.h agree with a byte-by-byte reference for every byte
 * value at every position of every length up to 24, whatever the alignment: the span of
 * plain bytes (the scanner, the log) and "all graphic" ('!' … '~', a presented key). */
static bool plain_byte(unsigned char c)
{
    return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
}

static void test_ascii(void)
{
    char buf[40];

    for (size_t len = 0; len <= 24; len++)
        for (size_t pos = 0; pos < len; pos++)
            for (unsigned v = 0; v < 256; v++)
                for (size_t align = 0; align < 8; align += 3) {
                    char *s = buf + align;
                    size_t want = 0;
                    memset(buf, 'a', sizeof(buf));
                    s[pos] = (char)v;
                    while (want < len && plain_byte((unsigned char)s[want]))
                        want++;
                    CHECK_INT(ascii_plain_span(s, len), want);
                    CHECK_INT(ascii_all_graphic(s, len), v >= 0x21 && v <= 0x7e);
                }
    CHECK_INT(ascii_all_graphic("", 0), 1);
}

/* utf8_sequence_len() takes exactly the non-ASCII characters jansson takes: every lead
 * byte with every second byte, every third byte under 3- and 4-byte leads, a good and a
 * bad fourth byte, and every sequence cut short. */
static bool jansson_takes(const unsigned char *s, size_t n)
{
    json_t *j = json_stringn((const char *)s, n);
    json_decref(j);
    return j != NULL;
}

static void test_utf8(void)
{
    static const unsigned char fourth[] = {0x80, 0x41};

    for (unsigned a = 0x80; a < 256; a++)
        for (unsigned b = 0; b < 256; b++)
            for (unsigned c = 0; c < (a >= 0xe0 && a < 0xf5 ? 256u : 1u); c++)
                for (size_t k = 0; k < ELEMENTSOF(fourth); k++) {
                    unsigned char s[4] = {(unsigned char)a, (unsigned char)b,
                                          (unsigned char)(a >= 0xe0 ? c : 0x80), fourth[k]};
                    size_t want = 0;
                    /* The shortest prefix jansson takes is the character. */
                    for (size_t n = 2; n <= 4 && !want; n++)
                        if (jansson_takes(s, n))
                            want = n;
                    CHECK_INT(utf8_sequence_len(s, 4), want);
                    for (size_t n = 1; n < want; n++)
                        CHECK_INT(utf8_sequence_len(s, n), 0);
                }
}

int main(void)
{
    test_ascii();
    test_utf8();
    test_frame_table();
    test_frame_limits();
    test_frame_line_locked();
    test_terminator();
    test_split_method();
    test_call_good();
    test_call_bad();
    test_call_jansson_refuses();
    test_call_conformance();
    test_scan_simple();
    test_scan_compact();
    fprintf(stderr, "ok\n");
    return 0;
}
