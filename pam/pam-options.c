/* pam-options: parses and checks the module arguments of pam_heare_auth.so. */
#include <errno.h>
#include <string.h>
#include <sys/un.h>

#include "pam-options.h"

#define SCOPE_MAX 256
#define FIELD_MAX 128

/* If arg is "<name>=<value>", returns the value; else NULL. */
static const char *value_of(const char *arg, const char *name)
{
    size_t n = strlen(name);
    return strncmp(arg, name, n) == 0 && arg[n] == '=' ? arg + n + 1 : NULL;
}

static bool printable_ascii(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= max || s[n] <= ' ' || s[n] > '~')
            return false;
    return n > 0;
}

/* Decimal digits only, in [1, max]; no sign, no spaces, no overflow. */
static int parse_timeout(const char *s, int max, int *ret)
{
    long v = 0;

    if (!*s)
        return -EINVAL;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -EINVAL;
        v = v * 10 + (*s - '0');
        if (v > max)
            return -ERANGE;
    }
    if (v < 1)
        return -ERANGE;
    *ret = (int)v;
    return 0;
}

static int fail(const char *arg, const char *reason, const char **ret_bad, const char **ret_reason)
{
    *ret_bad = arg;
    *ret_reason = reason;
    return -EINVAL;
}

int pam_options_parse(int argc, const char *const *argv, pam_options *ret, const char **ret_bad,
                      const char **ret_reason)
{
    pam_options o = {
        .socket = PAM_OPTIONS_DEFAULT_SOCKET,
        .user_match = USER_MATCH_METADATA,
        .user_field = PAM_OPTIONS_DEFAULT_USER_FIELD,
        .timeout_ms = PAM_OPTIONS_DEFAULT_TIMEOUT_MS,
        .authtok = AUTHTOK_PROMPT,
    };
    const char *v;

    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];

        if (!a)
            return fail("(null)", "missing argument", ret_bad, ret_reason);

        if (strcmp(a, "debug") == 0)
            o.debug = true;
        else if (strcmp(a, "use_first_pass") == 0)
            o.authtok = AUTHTOK_USE_FIRST_PASS;
        else if (strcmp(a, "try_first_pass") == 0)
            o.authtok = AUTHTOK_TRY_FIRST_PASS;
        else if ((v = value_of(a, "socket"))) {
            if (v[0] != '/')
                return fail(a, "the socket must be an absolute path", ret_bad, ret_reason);
            if (strlen(v) >= sizeof(((struct sockaddr_un *)0)->sun_path))
                return fail(a, "the socket path is too long for a Unix socket", ret_bad,
                            ret_reason);
            o.socket = v;
        } else if ((v = value_of(a, "scope"))) {
            if (!printable_ascii(v, SCOPE_MAX))
                return fail(a, "the scope must be 1-256 printable ASCII characters", ret_bad,
                            ret_reason);
            o.scope = v;
        } else if ((v = value_of(a, "user_match"))) {
            if (strcmp(v, "none") == 0)
                o.user_match = USER_MATCH_NONE;
            else if (strcmp(v, "name") == 0)
                o.user_match = USER_MATCH_NAME;
            else if (strncmp(v, "metadata:", 9) == 0) {
                if (!printable_ascii(v + 9, FIELD_MAX))
                    return fail(a, "the metadata field must be 1-128 printable ASCII characters",
                                ret_bad, ret_reason);
                o.user_match = USER_MATCH_METADATA;
                o.user_field = v + 9;
            } else
                return fail(a, "user_match must be none, name or metadata:FIELD", ret_bad,
                            ret_reason);
        } else if ((v = value_of(a, "timeout_ms"))) {
            if (parse_timeout(v, PAM_OPTIONS_MAX_TIMEOUT_MS, &o.timeout_ms) < 0)
                return fail(a, "timeout_ms must be a whole number of milliseconds, 1-60000",
                            ret_bad, ret_reason);
        } else
            return fail(a, "unknown option", ret_bad, ret_reason);
    }

    *ret = o;
    return 0;
}
