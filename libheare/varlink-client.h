/* varlink-client: a blocking Varlink client with a timeout on every wait, for the CLI and
 * the PAM module. Safe inside any host process: SOCK_CLOEXEC, MSG_NOSIGNAL, no globals,
 * no signal handlers. */
#pragma once

#include <stdbool.h>

#include <jansson.h>

typedef struct varlink_client varlink_client;

/* Connects to the Unix socket at path, giving up after timeout_ms (also the budget for each
 * later call). Returns 0, or -errno (-ENOENT/-ECONNREFUSED: nobody there, -EACCES, -ETIMEDOUT). */
int varlink_client_connect(const char *path, int timeout_ms, varlink_client **ret);

/* Sets the budget of each later call (and _next) to timeout_ms (> 0), so a caller can fit
 * connect and call into one total deadline (the PAM module). Returns 0 or -EINVAL. */
int varlink_client_set_timeout(varlink_client *c, int timeout_ms);

/* Closes the connection. NULL is fine. Returns NULL. */
varlink_client *varlink_client_free(varlink_client *c);
static inline void varlink_client_freep(varlink_client **c)
{
    varlink_client_free(*c);
}

/* Sends {"method", "parameters", "oneway"/"more"} (flags: VARLINK_CALL_* from varlink.h;
 * params may be NULL for {}) and, unless oneway, reads the first reply. Returns:
 *   0  reply received: *ret_params (caller owns; {} if absent), *ret_error NULL;
 *      *ret_continues (may be NULL) true if more replies follow (read with _next)
 *   1  error reply: *ret_error (caller frees) the qualified error name, *ret_params its
 *      parameters
 *   -errno on I/O failure, timeout (-ETIMEDOUT), or a reply that is not Varlink (-EPROTO). */
int varlink_client_call(varlink_client *c, const char *method, const json_t *params,
                        unsigned flags, json_t **ret_params, char **ret_error,
                        bool *ret_continues);

/* Reads the next reply of a "more" call; same returns as varlink_client_call. */
int varlink_client_next(varlink_client *c, json_t **ret_params, char **ret_error,
                        bool *ret_continues);
