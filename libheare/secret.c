/* secret: SHA-256 digests of secrets, constant-time comparison, hex and wiping. */
/* The one-shot SHA256() of OpenSSL 3 fetches the algorithm and allocates a context on
 * every call; the low-level interface hashes on the stack, which is what the verify path
 * wants. */
#define OPENSSL_SUPPRESS_DEPRECATED

#include <errno.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>

#include <openssl/sha.h>

#include "secret.h"

void secret_digest(const char *s, size_t n, uint8_t ret[SECRET_DIGEST_LEN])
{
    SHA256_CTX ctx;

    SHA256_Init(&ctx);
    SHA256_Update(&ctx, s, n);
    SHA256_Final(ret, &ctx);
    /* The context holds state derived from the secret. */
    explicit_bzero(&ctx, sizeof(ctx));
}

bool secret_digest_equal(const uint8_t a[SECRET_DIGEST_LEN], const uint8_t b[SECRET_DIGEST_LEN])
{
    /* What CRYPTO_memcmp does, a word instead of a byte at a time (it ran 230 instructions
     * on every lookup that found its digest slot): the differences are ORed together with
     * no early exit, so the time does not depend on where the digests differ. The empty asm
     * keeps the compiler from reasoning about diff inside the loop. */
    uint64_t diff = 0;
    for (size_t i = 0; i < SECRET_DIGEST_LEN; i += sizeof(uint64_t)) {
        uint64_t x, y;
        memcpy(&x, a + i, sizeof(x));
        memcpy(&y, b + i, sizeof(y));
        diff |= x ^ y;
        __asm__("" : "+r"(diff));
    }
    return diff == 0;
}

void secret_hex(const uint8_t d[SECRET_DIGEST_LEN], char ret[SECRET_HEX_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";

    for (size_t i = 0; i < SECRET_DIGEST_LEN; i++) {
        ret[2 * i] = hex[d[i] >> 4];
        ret[2 * i + 1] = hex[d[i] & 0xF];
    }
    ret[SECRET_HEX_LEN] = '\0';
}

/* One more than the value of a lowercase hex digit, 0 for any other byte: a table, as a
 * million-key store has 64 million digits to read at start. */
static const uint8_t unhex_table[256] = {
    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,
    ['6'] = 7,  ['7'] = 8,  ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12,
    ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
};

int secret_unhex(const char *s, uint8_t ret[SECRET_DIGEST_LEN])
{
    uint8_t d[SECRET_DIGEST_LEN];
    bool ok = true;

    /* Uppercase is refused so that one digest has exactly one spelling in the store. */
    if (!s || strnlen(s, SECRET_HEX_LEN + 1) != SECRET_HEX_LEN)
        return -EINVAL;
    for (size_t i = 0; i < SECRET_DIGEST_LEN; i++) {
        uint8_t hi = unhex_table[(unsigned char)s[2 * i]];
        uint8_t lo = unhex_table[(unsigned char)s[2 * i + 1]];
        ok &= hi != 0 && lo != 0;
        /* Masked before the shift: for a byte that is no digit hi - 1 is -1, and shifting a
         * negative value is undefined (the result is not used then, but computed). */
        d[i] = (uint8_t)(((hi - 1) & 0xf) << 4 | ((lo - 1) & 0xf));
    }
    if (!ok)
        return -EINVAL;
    memcpy(ret, d, sizeof(d));
    return 0;
}

void secret_wipe(void *p, size_t n)
{
    if (p && n > 0)
        explicit_bzero(p, n);
}

void *erase_and_free(char *s)
{
    if (s) {
        secret_wipe(s, strlen(s));
        free(s);
    }
    return NULL;
}
