/* test-pam-options: the PAM module's argument parser: defaults, every option, and a table of
 * bad arguments, each refused with the argument named and a reason. */
#include <errno.h>
#include <string.h>

#include "check.h"
#include "macro.h"
#include "pam-options.h"

static pam_options parse_ok(int argc, const char *const *argv)
{
    pam_options o;
    const char *bad = NULL, *reason = NULL;
    int r = pam_options_parse(argc, argv, &o, &bad, &reason);
    if (r != 0)
        fprintf(stderr, "refused \"%s\": %s\n", bad ? bad : "?", reason ? reason : "?");
    CHECK_INT(r, 0);
    return o;
}

static void test_defaults(void)
{
    pam_options o = parse_ok(0, NULL);
    CHECK_STR(o.socket, "/run/heare-auth/verify.sock");
    CHECK(o.scope == NULL);
    CHECK_INT(o.user_match, USER_MATCH_METADATA);
    CHECK_STR(o.user_field, "unix_user");
    CHECK_INT(o.timeout_ms, 2000);
    CHECK_INT(o.authtok, AUTHTOK_PROMPT);
    CHECK(!o.debug);
}

static void test_every_option(void)
{
    const char *argv[] = {"socket=/tmp/x.sock", "scope=ssh.login", "user_match=name",
                          "timeout_ms=60000",   "use_first_pass",  "debug"};
    pam_options o = parse_ok(ELEMENTSOF(argv), argv);
    CHECK_STR(o.socket, "/tmp/x.sock");
    CHECK_STR(o.scope, "ssh.login");
    CHECK_INT(o.user_match, USER_MATCH_NAME);
    CHECK_INT(o.timeout_ms, 60000);
    CHECK_INT(o.authtok, AUTHTOK_USE_FIRST_PASS);
    CHECK(o.debug);

    const char *argv2[] = {"user_match=none", "try_first_pass", "timeout_ms=1"};
    o = parse_ok(ELEMENTSOF(argv2), argv2);
    CHECK_INT(o.user_match, USER_MATCH_NONE);
    CHECK_INT(o.authtok, AUTHTOK_TRY_FIRST_PASS);
    CHECK_INT(o.timeout_ms, 1);

    const char *argv3[] = {"user_match=metadata:login", "user_match=metadata:owner"};
    o = parse_ok(ELEMENTSOF(argv3), argv3);
    CHECK_INT(o.user_match, USER_MATCH_METADATA);
    CHECK_STR(o.user_field, "owner"); /* the last one counts */

    /* A path one byte short of sun_path's size still fits with its NUL. */
    char path[128] = "socket=/";
    memset(path + 8, 'a', 106);
    path[8 + 106] = '\0';
    const char *argv4[] = {path};
    o = parse_ok(1, argv4);
    CHECK_INT(strlen(o.socket), 107);
}

static void test_bad(void)
{
    static const struct {
        const char *arg;
        const char *reason; /* a word the reason must contain */
    } table[] = {
        {"", "unknown"},
        {"nodebug", "unknown"},
        {"Debug", "unknown"},
        {"socket", "unknown"},
        {"use_authtok", "unknown"},
        {"timeout=5", "unknown"},
        {"socket=", "absolute"},
        {"socket=run/verify.sock", "absolute"},
        {"scope=", "scope"},
        {"scope=a b", "scope"},
        {"scope=caf\xc3\xa9", "scope"},
        {"user_match=", "user_match"},
        {"user_match=metadata", "user_match"},
        {"user_match=metadata:", "metadata field"},
        {"user_match=Name", "user_match"},
        {"timeout_ms=", "timeout_ms"},
        {"timeout_ms=0", "timeout_ms"},
        {"timeout_ms=-5", "timeout_ms"},
        {"timeout_ms=+5", "timeout_ms"},
        {"timeout_ms=5s", "timeout_ms"},
        {"timeout_ms= 5", "timeout_ms"},
        {"timeout_ms=60001", "timeout_ms"},
        {"timeout_ms=99999999999999999999999", "timeout_ms"},
    };

    for (size_t i = 0; i < ELEMENTSOF(table); i++) {
        const char *argv[] = {"debug", table[i].arg};
        pam_options o;
        const char *bad = NULL, *reason = NULL;
        CHECK_INT(pam_options_parse(2, argv, &o, &bad, &reason), -EINVAL);
        CHECK(bad == table[i].arg);
        if (!check_contains(reason, table[i].reason)) {
            fprintf(stderr, "\"%s\": reason \"%s\" lacks \"%s\"\n", table[i].arg, reason,
                    table[i].reason);
            exit(1);
        }
    }

    /* Too long for a Unix socket address. */
    char path[160] = "socket=/";
    memset(path + 8, 'a', 107);
    path[8 + 107] = '\0';
    const char *argv[] = {path};
    pam_options o;
    const char *bad = NULL, *reason = NULL;
    CHECK_INT(pam_options_parse(1, argv, &o, &bad, &reason), -EINVAL);
    CHECK(check_contains(reason, "too long"));

    /* A NULL argument (a broken caller) is refused, not dereferenced. */
    const char *argv_null[] = {NULL};
    CHECK_INT(pam_options_parse(1, argv_null, &o, &bad, &reason), -EINVAL);
}

int main(void)
{
    test_defaults();
    test_every_option();
    test_bad();
    fprintf(stderr, "ok\n");
    return 0;
}
