/* secret: SHA-256 digests of secrets, constant-time comparison, hex, and wiping. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SECRET_DIGEST_LEN 32
#define SECRET_HEX_LEN (2 * SECRET_DIGEST_LEN)

/* ret = SHA-256(s[0..n)). */
void secret_digest(const char *s, size_t n, uint8_t ret[SECRET_DIGEST_LEN]);

/* Constant-time comparison of two digests. */
bool secret_digest_equal(const uint8_t a[SECRET_DIGEST_LEN], const uint8_t b[SECRET_DIGEST_LEN]);

/* Lowercase hex of d, NUL-terminated. */
void secret_hex(const uint8_t d[SECRET_DIGEST_LEN], char ret[SECRET_HEX_LEN + 1]);

/* Parses exactly 64 lowercase hex characters (NUL-terminated s). Returns 0 or -EINVAL. */
int secret_unhex(const char *s, uint8_t ret[SECRET_DIGEST_LEN]);

/* Wipes n bytes at p so the compiler cannot drop it (explicit_bzero). NULL is fine. */
void secret_wipe(void *p, size_t n);

/* Wipes the NUL-terminated string s and frees it. NULL is fine. Returns NULL. */
void *erase_and_free(char *s);
static inline void erase_and_freep(char **s)
{
    erase_and_free(*s);
}
#define _cleanup_erase_ _cleanup_(erase_and_freep)
