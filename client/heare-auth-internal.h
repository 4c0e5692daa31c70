/* heare-auth-internal: what the CLI and the PAM module, which link the client code
 * statically, see beyond the public API of heare-auth.h. Not exported from the shared
 * library. */
#pragma once

#include <stddef.h>

#include <jansson.h>

#include "heare-auth.h"

/* The qualified Varlink error name of the last call's error reply (that call returned
 * -EINVAL or -EPROTO), or NULL. Owned by c, valid until its next call. */
const char *heare_auth__error_name(const heare_auth *c);

/* The last reply (or error reply) as the daemon sent it, without its NUL, or NULL. Owned by
 * c, valid until its next call. */
const char *heare_auth__reply_text(const heare_auth *c, size_t *ret_len);

/* The parameters of the last reply (or error reply) as a JSON tree, in the daemon's order
 * (heare-auth-json.c: the library itself does without jansson). Returns a new reference,
 * or NULL if there is no reply or it cannot be parsed. */
json_t *heare_auth__reply(const heare_auth *c);

static inline void heare_auth_closep(heare_auth **c)
{
    heare_auth_close(*c);
}
