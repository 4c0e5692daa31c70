/* heare-auth.h: the client library for services that verify API keys with heare-authd, over
 * its verify socket (io.heare.Auth.Verify). See heare-auth(3).
 *
 * A client is one connection, used by one thread at a time (one client per thread). The
 * library keeps no global state, installs no signal handlers and never logs. */
#ifndef HEARE_AUTH_H
#define HEARE_AUTH_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct heare_auth heare_auth; /* one connection to the verify socket */

typedef struct heare_auth_result {
    int valid;                 /* 1 or 0 */
    const char *code;          /* "VALID", "NOT_FOUND", ... */
    const char *key_id, *name; /* NULL when absent */
    const char *metadata_json; /* the metadata object as JSON text, or NULL */
    const char *const *scopes; /* NULL-terminated, or NULL */
    const char *expires_at;    /* RFC 3339, or NULL */
    long long retry_after_ms;  /* -1 when absent */
} heare_auth_result;           /* valid until the next call on the client */

/* Makes a client for the socket at socket_path (NULL: $HEARE_AUTH_VERIFY_SOCKET, else
 * /run/heare-auth/verify.sock); timeout_ms (<= 0: 1000) bounds each later call. It does not
 * connect: the first call does. Returns 0 with *ret, or a negative errno (-EINVAL,
 * -ENAMETOOLONG, -ENOMEM). */
int heare_auth_open(heare_auth **ret, const char *socket_path, int timeout_ms);

/* Verifies key, with scope (NULL: none) required. Returns 0 when the daemon answered (any
 * code) and fills *ret, else a negative errno: -ETIMEDOUT, -ECONNREFUSED, -ENOENT, -EACCES,
 * -EPROTO (bad reply), -EINVAL (bad argument). */
int heare_auth_verify(heare_auth *c, const char *key, const char *scope, heare_auth_result *ret);

typedef struct heare_auth_request {
    const char *key, *scope, *require, *user_agent, *client_address; /* NULL: absent */
} heare_auth_request;

/* Verify with everything it takes; the same returns as heare_auth_verify. */
int heare_auth_verify_request(heare_auth *c, const heare_auth_request *req,
                              heare_auth_result *ret);

/* Closes the connection and frees the client. NULL is fine. */
void heare_auth_close(heare_auth *c);

/* Words for a return of the calls above (0 or a negative errno). Never NULL; static. */
const char *heare_auth_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif
