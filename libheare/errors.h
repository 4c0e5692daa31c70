/* errors: the one table that turns a -errno code into words, a Varlink error name and a
 * CLI exit code. Every module returns 0 (or a count) on success and -errno on failure:
 *
 *   -ENOKEY      key id not found                 io.heare.AuthAdmin.KeyNotFound     exit 1
 *   -EPERM       peer not allowed (admin)         io.heare.AuthAdmin.PermissionDenied exit 1
 *   -ESTALE      store changed under us, retries  io.heare.AuthAdmin.Conflict         exit 1
 *                exhausted (conditional write)
 *   -EINVAL      bad parameter                    org.varlink.service.InvalidParameter exit 2
 *   -EMSGSIZE    message over 64 KiB              io.heare.Auth.MessageTooLarge      exit 3
 *   -EPROTO      not a Varlink message            io.heare.Auth.InvalidMessage       exit 3
 *   -EBADMSG     store document rejected (schema) io.heare.AuthAdmin.StoreUnavailable exit 3
 *   -ENOMEDIUM   interface not found              org.varlink.service.InterfaceNotFound exit 2
 *   -EOPNOTSUPP  method not found                 org.varlink.service.MethodNotFound exit 2
 *   anything else (EIO, ECONNREFUSED, ETIMEDOUT…)  io.heare.AuthAdmin.StoreUnavailable exit 3
 */
#pragma once

enum {
    EXIT_OK = 0,          /* success, key valid */
    EXIT_REFUSED = 1,     /* key invalid, key not found, operation refused */
    EXIT_USAGE = 2,       /* usage error */
    EXIT_UNREACHABLE = 3, /* daemon or store unreachable */
};

/* Qualified Varlink error name for err (< 0). Static string. */
const char *errors_varlink_name(int err);

/* The -errno code for a Varlink error name; unknown names map to -EIO. */
int errors_from_varlink_name(const char *name);

/* CLI exit code for err: 0 for err >= 0. */
int errors_exit_code(int err);

/* Words for err, e.g. "key not found". Static string. */
const char *errors_str(int err);

/* Fills *reterr (if reterr is non-NULL; the caller frees it) with the formatted message, in
 * which %m stands for the words of err, and returns err. */
int errors_fail(char **reterr, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
