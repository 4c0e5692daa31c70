/* ids: heare-ids key ids and secrets (SPEC §2): base62, CRC32 checksum, CSPRNG, and the
 * MALFORMED rules for a presented key. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IDS_TIMESTAMP_LEN 8
#define IDS_KEY_ENTROPY_LEN 10
#define IDS_SECRET_ENTROPY_LEN 24
#define IDS_CHECKSUM_LEN 6
/* "key_" + generation + timestamp + entropy */
#define IDS_KEY_ID_LEN (4 + 1 + IDS_TIMESTAMP_LEN + IDS_KEY_ENTROPY_LEN)
/* "sec_" + generation "1" + timestamp + entropy + checksum */
#define IDS_SECRET_LEN (4 + 1 + IDS_TIMESTAMP_LEN + IDS_SECRET_ENTROPY_LEN + IDS_CHECKSUM_LEN)
/* A presented key longer than this is MALFORMED before anything else looks at it. */
#define IDS_PRESENTED_MAX 512

/* The base62 alphabet, 0-9A-Za-z in that order. */
extern const char ids_base62_alphabet[62];

/* Writes v in base62 into out[0..width), left-padded with '0'. Returns 0, or -ERANGE if v
 * needs more than width digits. No NUL is written. */
int ids_base62_encode(uint64_t v, size_t width, char *out);

/* Fills out[0..n) with uniformly random base62 characters from getrandom(2) (rejection
 * sampling, no modulo bias). Returns 0 or -errno. No NUL is written. */
int ids_random_base62(char *out, size_t n);

/* CRC-32 (IEEE 802.3, the one zlib and Python's zlib.crc32 compute) of p[0..n). */
uint32_t ids_crc32(const void *p, size_t n);

/* New key id "key_0<ts8><10 random>" for creation time now. ret gets a NUL-terminated id.
 * Returns 0 or -errno. */
int ids_new_key_id(int64_t now, char ret[IDS_KEY_ID_LEN + 1]);

/* New secret "sec_1<ts8><24 random><crc6>". ret gets a NUL-terminated secret; the caller
 * wipes it. Returns 0 or -errno. */
int ids_new_secret(int64_t now, char ret[IDS_SECRET_LEN + 1]);

/* Checks a presented key (not NUL-terminated) against the MALFORMED rules: empty, longer
 * than IDS_PRESENTED_MAX, a byte outside printable ASCII (0x21..0x7e), or a generation-1
 * secret ("sec_1…") that is not exactly IDS_SECRET_LEN base62 characters after the prefix
 * with a matching checksum. Anything else (legacy "sec_0…", unknown shapes) is left to the
 * lookup. Returns 0 if it may be looked up, -EINVAL if MALFORMED. */
int ids_check_presented(const char *key, size_t len);
/* The part of it that needs no checksum: length 1..IDS_PRESENTED_MAX, printable ASCII. A
 * key that passes it may be looked up; only a miss needs ids_check_presented() to tell
 * MALFORMED from NOT_FOUND. Returns 0 or -EINVAL. */
int ids_check_shape(const char *key, size_t len);

/* True if s is a syntactically valid key id: "key_" followed by 1..64 base62 characters. */
bool ids_is_key_id(const char *s);
