/* test-secret: SHA-256 vectors, hex round trip, strict unhex, digest comparison, wiping. */
#include <errno.h>
#include <string.h>

#include "check.h"
#include "macro.h"
#include "secret.h"

static void test_digest(void)
{
    static const struct {
        const char *in;
        const char *hex;
    } vectors[] = {
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };

    for (size_t i = 0; i < ELEMENTSOF(vectors); i++) {
        uint8_t d[SECRET_DIGEST_LEN];
        char hex[SECRET_HEX_LEN + 1];
        secret_digest(vectors[i].in, strlen(vectors[i].in), d);
        secret_hex(d, hex);
        CHECK_STR(hex, vectors[i].hex);
    }

    /* Only n bytes count, not the NUL-terminated length. */
    uint8_t a[SECRET_DIGEST_LEN], b[SECRET_DIGEST_LEN];
    secret_digest("abcdef", 3, a);
    secret_digest("abc", 3, b);
    CHECK(memcmp(a, b, SECRET_DIGEST_LEN) == 0);
}

static void test_hex_round_trip(void)
{
    uint8_t d[SECRET_DIGEST_LEN], back[SECRET_DIGEST_LEN];
    char hex[SECRET_HEX_LEN + 1];

    for (size_t i = 0; i < SECRET_DIGEST_LEN; i++)
        d[i] = (uint8_t)(i * 37 + 0xA5);
    secret_hex(d, hex);
    CHECK_INT(strlen(hex), SECRET_HEX_LEN);
    CHECK_INT(secret_unhex(hex, back), 0);
    CHECK(memcmp(d, back, SECRET_DIGEST_LEN) == 0);

    memset(d, 0xFF, sizeof(d));
    secret_hex(d, hex);
    CHECK_STR(hex, "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff");
    memset(d, 0, sizeof(d));
    secret_hex(d, hex);
    CHECK_STR(hex, "0000000000000000000000000000000000000000000000000000000000000000");
}

static void test_unhex_bad(void)
{
    static const char good[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    static const struct {
        const char *name;
        const char *s;
    } bad[] = {
        {"empty", ""},
        {"uppercase", "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"},
        {"one uppercase", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015aD"},
        {"63 chars", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a"},
        {"65 chars", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad0"},
        {"non-hex g", "ga7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"space", "ba7816bf8f01cfea414140de5dae2223 00361a396177a9cb410ff61f20015ad"},
        {"0x prefix", "0xa7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"NULL", NULL},
    };
    uint8_t d[SECRET_DIGEST_LEN], orig[SECRET_DIGEST_LEN];

    memset(d, 0x5A, sizeof(d));
    memcpy(orig, d, sizeof(d));
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        int r = secret_unhex(bad[i].s, d);
        if (r != -EINVAL) {
            fprintf(stderr, "unhex '%s': got %d, expected -EINVAL\n", bad[i].name, r);
            exit(1);
        }
        /* ret_ is written only on success. */
        CHECK(memcmp(d, orig, sizeof(d)) == 0);
    }
    CHECK_INT(secret_unhex(good, d), 0);
    CHECK_INT(d[0], 0xba);
    CHECK_INT(d[31], 0xad);

    /* Every byte value in every position: taken exactly when it is a lowercase hex digit,
     * and then read as one. */
    for (size_t pos = 0; pos < SECRET_HEX_LEN; pos++)
        for (int c = 1; c < 256; c++) {
            char s[SECRET_HEX_LEN + 1];
            const char *digits = "0123456789abcdef";
            const char *at = strchr(digits, c);
            memcpy(s, good, sizeof(s));
            s[pos] = (char)c;
            int r = secret_unhex(s, d);
            CHECK_INT(r, at ? 0 : -EINVAL);
            if (at) {
                unsigned v = (unsigned)(at - digits);
                CHECK_INT(pos % 2 ? d[pos / 2] & 0xf : d[pos / 2] >> 4, v);
            }
        }
}

static void test_equal(void)
{
    uint8_t a[SECRET_DIGEST_LEN], b[SECRET_DIGEST_LEN];

    secret_digest("sec_one", 7, a);
    secret_digest("sec_one", 7, b);
    CHECK(secret_digest_equal(a, b));
    secret_digest("sec_two", 7, b);
    CHECK(!secret_digest_equal(a, b));
    memcpy(b, a, sizeof(a));
    b[SECRET_DIGEST_LEN - 1] ^= 1;
    CHECK(!secret_digest_equal(a, b));
    b[SECRET_DIGEST_LEN - 1] ^= 1;
    b[0] ^= 0x80;
    CHECK(!secret_digest_equal(a, b));
    /* A difference in any bit of any byte (the comparison goes a word at a time). */
    for (size_t i = 0; i < SECRET_DIGEST_LEN; i++)
        for (int bit = 0; bit < 8; bit++) {
            memcpy(b, a, sizeof(a));
            b[i] ^= (uint8_t)(1u << bit);
            CHECK(!secret_digest_equal(a, b));
        }
    memcpy(b, a, sizeof(a));
    CHECK(secret_digest_equal(a, b));
}

static void test_wipe(void)
{
    char buf[8] = "secret!";

    secret_wipe(buf, 4);
    CHECK(memcmp(buf, "\0\0\0\0et!", 8) == 0);
    secret_wipe(NULL, 4);
    secret_wipe(buf, 0);

    char *s = strdup("sec_1abc");
    CHECK(s != NULL);
    CHECK(erase_and_free(s) == NULL);
    CHECK(erase_and_free(NULL) == NULL);
    {
        _cleanup_erase_ char *t = strdup("sec_0001vDmowg2tzwvpaFL");
        CHECK(t != NULL);
    }
}

int main(void)
{
    test_digest();
    test_hex_round_trip();
    test_unhex_bad();
    test_equal();
    test_wipe();
    return 0;
}
