/* test-errors: the one table from -errno to Varlink error name, CLI exit code and words. */
#include <errno.h>
#include <string.h>

#include "check.h"
#include "errors.h"
#include "macro.h"

static void test_table(void)
{
    static const struct {
        int err;
        const char *varlink;
        int exit_code;
        const char *words;
    } cases[] = {
        {-ENOKEY, "io.heare.AuthAdmin.KeyNotFound", EXIT_REFUSED, "key not found"},
        {-EPERM, "io.heare.AuthAdmin.PermissionDenied", EXIT_REFUSED, "permission denied"},
        {-ESTALE, "io.heare.AuthAdmin.Conflict", EXIT_REFUSED, "concurrently"},
        {-EINVAL, "org.varlink.service.InvalidParameter", EXIT_USAGE, "invalid parameter"},
        {-EMSGSIZE, "io.heare.Auth.MessageTooLarge", EXIT_UNREACHABLE, "too large"},
        {-EPROTO, "io.heare.Auth.InvalidMessage", EXIT_UNREACHABLE, "invalid message"},
        {-EBADMSG, "io.heare.AuthAdmin.StoreUnavailable", EXIT_UNREACHABLE, "rejected"},
        {-ENOMEDIUM, "org.varlink.service.InterfaceNotFound", EXIT_USAGE, "interface not found"},
        {-EOPNOTSUPP, "org.varlink.service.MethodNotFound", EXIT_USAGE, "method not found"},
    };

    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        CHECK_STR(errors_varlink_name(cases[i].err), cases[i].varlink);
        CHECK_INT(errors_exit_code(cases[i].err), cases[i].exit_code);
        CHECK(check_contains(errors_str(cases[i].err), cases[i].words));
        /* Every name but the shared StoreUnavailable maps back to its own code. */
        if (cases[i].err != -EBADMSG)
            CHECK_INT(errors_from_varlink_name(cases[i].varlink), cases[i].err);
    }
}

static void test_other_codes(void)
{
    static const int others[] = {-EIO, -ECONNREFUSED, -ETIMEDOUT, -ENOENT, -ENOMEM, -1000};

    for (size_t i = 0; i < ELEMENTSOF(others); i++) {
        CHECK_STR(errors_varlink_name(others[i]), "io.heare.AuthAdmin.StoreUnavailable");
        CHECK_INT(errors_exit_code(others[i]), EXIT_UNREACHABLE);
        CHECK(errors_str(others[i]) != NULL);
    }
    CHECK_STR(errors_str(-ECONNREFUSED), strerror(ECONNREFUSED));
    CHECK_INT(errors_exit_code(0), EXIT_OK);
    CHECK_INT(errors_exit_code(5), EXIT_OK);
    CHECK_INT(EXIT_OK, 0);
    CHECK_INT(EXIT_REFUSED, 1);
    CHECK_INT(EXIT_USAGE, 2);
    CHECK_INT(EXIT_UNREACHABLE, 3);
}

static void test_from_name(void)
{
    CHECK_INT(errors_from_varlink_name("io.heare.AuthAdmin.StoreUnavailable"), -EBADMSG);
    CHECK_INT(errors_from_varlink_name("org.varlink.service.PermissionDenied"), -EPERM);
    CHECK_INT(errors_from_varlink_name("org.varlink.service.InvalidParameter"), -EINVAL);
    CHECK_INT(errors_from_varlink_name("com.example.Whatever"), -EIO);
    CHECK_INT(errors_from_varlink_name(""), -EIO);
    CHECK_INT(errors_from_varlink_name(NULL), -EIO);
    /* Names are matched exactly, not by prefix or case. */
    CHECK_INT(errors_from_varlink_name("io.heare.AuthAdmin.KeyNotFoundX"), -EIO);
    CHECK_INT(errors_from_varlink_name("io.heare.authadmin.keynotfound"), -EIO);
}

int main(void)
{
    test_table();
    test_other_codes();
    test_from_name();
    return 0;
}
