/* heare-auth-internal: what the CLI and the PAM module, which link the client code
 * statically, see beyond the public API of heare-auth.h. Not exported from the shared
 * library. */
#pragma once

#include <jansson.h>

#include "heare-auth.h"

/* The qualified Varlink error name of the last call's error reply (that call returned
 * -EINVAL or -EPROTO), or NULL. Owned by c, valid until its next call. */
const char *heare_auth__error_name(const heare_auth *c);

/* The parameters of the last call's reply (or error reply), as the daemon sent them (the
 * result points into them), or NULL. Borrowed: valid until the next call on c. */
const json_t *heare_auth__reply(const heare_auth *c);

static inline void heare_auth_closep(heare_auth **c)
{
    heare_auth_close(*c);
}
