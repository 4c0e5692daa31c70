/* s3-response: what the S3 store reads of an answer besides a 200 GET's body: the ETag
 * header, an error body kept up to a bound, and the Code and Message elements of that
 * body. Pure functions of the bytes libcurl hands over, so they are tested and fuzzed
 * without a server. */
#pragma once

#include <stddef.h>

/* An error answer's body: text[0..len), NUL-terminated once anything was kept (text NULL
 * until then). It may echo what was sent: wiped when freed. */
typedef struct s3_error_body {
    char *text;
    size_t len, alloc;
} s3_error_body;

/* Keeps what fits of data[0..n) in b up to max bytes in all; the rest is dropped. The
 * buffer (max + 1 bytes) is allocated with the first byte kept. Returns 0 or -ENOMEM. */
int s3_error_body_append(s3_error_body *b, const char *data, size_t n, size_t max);

/* Wipes and frees what b holds; b is left empty. */
void s3_error_body_done(s3_error_body *b);

/* Reads one header line line[0..n) as libcurl hands it (CRLF included, no NUL): a status
 * line ("HTTP/…", as after a 100 Continue) starts a new answer and forgets *etag; an
 * "ETag:" line (any case) replaces *etag with its value, trimmed, quotes kept (NULL if
 * empty or out of memory: the answer is then one without a version). Others are ignored. */
void s3_response_header(const char *line, size_t n, char **etag);

/* The text of the first <tag>…</tag> in the NUL-terminated body (NULL: none), each byte
 * outside printable ASCII as a space, cut to max - 1 bytes, into ret[0..max), NUL-
 * terminated; "" if absent. max must be at least 1, tag at most 28 bytes. */
void s3_xml_element(const char *body, const char *tag, char *ret, size_t max);
