/* errors: -errno codes to Varlink error names, CLI exit codes and words, in one table. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "errors.h"
#include "macro.h"

static const struct {
    int err;
    const char *varlink;
    int exit_code;
    const char *words;
} table[] = {
    {-ENOKEY, "io.heare.AuthAdmin.KeyNotFound", EXIT_REFUSED, "key not found"},
    {-EPERM, "io.heare.AuthAdmin.PermissionDenied", EXIT_REFUSED, "permission denied"},
    {-ESTALE, "io.heare.AuthAdmin.Conflict", EXIT_REFUSED,
     "store changed concurrently, retries exhausted"},
    {-EINVAL, "org.varlink.service.InvalidParameter", EXIT_USAGE, "invalid parameter"},
    {-EMSGSIZE, "io.heare.Auth.MessageTooLarge", EXIT_UNREACHABLE, "message too large"},
    {-EPROTO, "io.heare.Auth.InvalidMessage", EXIT_UNREACHABLE, "invalid message"},
    {-ENOMEDIUM, "org.varlink.service.InterfaceNotFound", EXIT_USAGE, "interface not found"},
    {-EOPNOTSUPP, "org.varlink.service.MethodNotFound", EXIT_USAGE, "method not found"},
    {-EBADMSG, "io.heare.AuthAdmin.StoreUnavailable", EXIT_UNREACHABLE, "store document rejected"},
};

static const char store_unavailable[] = "io.heare.AuthAdmin.StoreUnavailable";

const char *errors_varlink_name(int err)
{
    for (size_t i = 0; i < ELEMENTSOF(table); i++)
        if (table[i].err == err)
            return table[i].varlink;
    return store_unavailable;
}

int errors_from_varlink_name(const char *name)
{
    if (!name)
        return -EIO;
    for (size_t i = 0; i < ELEMENTSOF(table); i++)
        if (strcmp(table[i].varlink, name) == 0)
            return table[i].err;
    /* Names other programs may answer with that mean the same. */
    if (strcmp(name, "org.varlink.service.PermissionDenied") == 0)
        return -EPERM;
    if (strcmp(name, "org.varlink.service.InvalidParameter") == 0)
        return -EINVAL;
    return -EIO;
}

int errors_exit_code(int err)
{
    if (err >= 0)
        return EXIT_OK;
    for (size_t i = 0; i < ELEMENTSOF(table); i++)
        if (table[i].err == err)
            return table[i].exit_code;
    return EXIT_UNREACHABLE;
}

const char *errors_str(int err)
{
    for (size_t i = 0; i < ELEMENTSOF(table); i++)
        if (table[i].err == err)
            return table[i].words;
    return strerror(-err);
}

int errors_fail(char **reterr, int err, const char *fmt, ...)
{
    if (reterr) {
        va_list ap;
        char *s = NULL;

        errno = -err; /* for %m */
        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
            s = NULL;
        va_end(ap);
        *reterr = s;
    }
    return err;
}
