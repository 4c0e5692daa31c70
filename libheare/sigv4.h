/* sigv4: AWS Signature Version 4 for header-based authentication (the Authorization
 * header), computed with OpenSSL. It knows nothing of HTTP transport: the caller lists
 * every header it will send and wants signed, and sends exactly those values.
 *
 * Why not libcurl's CURLOPT_AWS_SIGV4: the Debian 12 libcurl (7.88) hashes a payload only
 * when it is given through CURLOPT_POSTFIELDS and leaves x-amz-content-sha256 and
 * x-amz-security-token to the caller anyway, so half of the work stays here; which of our
 * headers it signs (If-Match, If-None-Match, x-amz-server-side-encryption) and how it
 * canonicalizes them has changed between curl releases; and its signature cannot be
 * checked against AWS's published example values for a fixed date, key and request
 * without a server. Signing here takes ~100 lines, is the same on every libcurl, and
 * tests/test-sigv4.c checks it against those values. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define SIGV4_HEX_LEN 64
#define SIGV4_DATE_LEN 16 /* "20130524T000000Z" */

typedef struct sigv4_header {
    const char *name;  /* any case; signed lowercased */
    const char *value; /* signed trimmed, inner runs of spaces as one */
} sigv4_header;

typedef struct sigv4_request {
    const char *method;       /* "GET", "PUT" */
    const char *path;         /* canonical URI: already URI-encoded (sigv4_uri_encode) */
    const char *query;        /* canonical query string (sorted, encoded), "" or NULL: none */
    const sigv4_header *headers; /* every signed header: at least host, x-amz-date and
                                  * x-amz-content-sha256 (S3 requires it) */
    size_t n_headers;
    const char *payload_hash; /* hex SHA-256 of the body, as in x-amz-content-sha256 */
} sigv4_request;

typedef struct sigv4_key {
    const char *access_key_id;
    const char *secret_access_key;
    const char *region;  /* "us-east-1" */
    const char *service; /* "s3" */
} sigv4_key;

/* The canonical request (AWS's step 1) and the signed-headers list ("host;x-amz-date").
 * Both caller-freed. Returns 0, -EINVAL for a header name that is empty, not a token, or
 * given twice, or -ENOMEM. */
int sigv4_canonical_request(const sigv4_request *req, char **ret_canonical,
                            char **ret_signed_headers);

/* The string to sign (step 2) for amz_date "YYYYMMDDTHHMMSSZ". Caller frees. */
int sigv4_string_to_sign(const char *amz_date, const char *region, const char *service,
                         const char *canonical_request, char **ret);

/* The whole Authorization header value: "AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…,
 * Signature=…". amz_date must equal the x-amz-date header given in req. The derived
 * signing key is wiped before returning. Caller frees. -EINVAL as above or for a malformed
 * amz_date, -ENOMEM. */
int sigv4_authorization(const sigv4_request *req, const sigv4_key *key, const char *amz_date,
                        char **ret_authorization);

/* Lowercase hex SHA-256 of buf[0..len). */
void sigv4_sha256_hex(const void *buf, size_t len, char ret[SIGV4_HEX_LEN + 1]);

/* t (UTC) as "YYYYMMDDTHHMMSSZ". Returns 0 or -EOVERFLOW. */
int sigv4_amz_date(time_t t, char ret[SIGV4_DATE_LEN + 1]);

/* URI-encodes s as SigV4 wants: every byte but A-Z a-z 0-9 - . _ ~ as %XX (uppercase);
 * '/' kept when keep_slash (an S3 object key in a path). NULL on OOM. */
char *sigv4_uri_encode(const char *s, bool keep_slash);
