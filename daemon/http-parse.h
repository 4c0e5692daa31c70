/* http-parse: the parts of an HTTP request the front reads itself rather than through h2o:
 * the POST /verify body's fast path, the request head's framing, a query parameter and a
 * bearer token. Pure functions of their bytes (no h2o), so the unit tests and the fuzz
 * targets reach them without a server. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* The body as clients write it, {"api_key":"…"} with an optional "scope" string, read in
 * place: true, with the key and scope NUL-terminated where their closing quotes were
 * (*ret_scope NULL without one). False, with the body untouched, for anything else, which
 * jansson then judges. */
bool http_scan_verify_body(char *body, size_t len, char **ret_key, size_t *ret_key_len,
                           const char **ret_scope);

/* Reads again the HTTP/1 request head at the start of head[0..len), the bytes h2o parsed
 * for the request of this method: false (refuse) for more than one Content-Length, for
 * Transfer-Encoding with Content-Length, for a folded header line, or if no complete head
 * for this method is there. */
bool http_framing_ok(const char *head, size_t len, const char *method, size_t method_len);

/* The raw value of the first name=value in query[0..len) (the text after '?', parameters
 * split on '&'): a pointer into query and *ret_len, or NULL if absent. */
const char *http_query_find(const char *query, size_t len, const char *name, size_t *ret_len);

/* Decodes %XX and '+' of v[0..len) into out, which has room for len + 1 bytes, and
 * NUL-terminates it. False if the decoded value holds a NUL (no C string can carry it). */
bool http_query_decode(const char *v, size_t len, char *out);

/* The token of an "Authorization: Bearer <token>" value v[0..len) ("bearer" in any case,
 * spaces around the token dropped): true with *ret pointing into v, so that the caller can
 * wipe it; false if v is not that or the token is empty. */
bool http_bearer_token(char *v, size_t len, char **ret, size_t *ret_len);
