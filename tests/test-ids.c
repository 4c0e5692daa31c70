/* test-ids: base62, CRC32, id and secret shapes, the MALFORMED rules, CSPRNG uniformity. */
#include <errno.h>
#include <string.h>

#include "check.h"
#include "ids.h"
#include "macro.h"

static void test_base62(void)
{
    static const struct {
        uint64_t v;
        size_t width;
        const char *want; /* NULL: -ERANGE */
    } cases[] = {
        {0, 8, "00000000"},
        {61, 8, "0000000z"},
        {62, 8, "00000010"},
        {3843, 2, "zz"},
        {3844, 2, NULL},
        {1761669918, 8, "001vDmow"},
        {218340105584895ull, 8, "zzzzzzzz"}, /* 62^8 - 1 */
        {218340105584896ull, 8, NULL},       /* 62^8 */
        {0xFFFFFFFFu, 6, "4gfFC3"},
        {UINT64_MAX, 11, "LygHa16AHYF"},
        {UINT64_MAX, 10, NULL},
        {1, 0, NULL},
    };

    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        char out[16];
        memset(out, '#', sizeof(out));
        int r = ids_base62_encode(cases[i].v, cases[i].width, out);
        if (!cases[i].want) {
            CHECK_INT(r, -ERANGE);
            continue;
        }
        CHECK_INT(r, 0);
        CHECK(out[cases[i].width] == '#'); /* no NUL, nothing past width */
        out[cases[i].width] = '\0';
        CHECK_STR(out, cases[i].want);
    }
    CHECK(memcmp(ids_base62_alphabet,
                 "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", 62) == 0);
}

static void test_crc32(void)
{
    CHECK_INT(ids_crc32("123456789", 9), 0xCBF43926u);
    CHECK_INT(ids_crc32("", 0), 0);
    CHECK_INT(ids_crc32("a", 1), 0xE8B7BE43u);
    CHECK_INT(ids_crc32("The quick brown fox jumps over the lazy dog", 43), 0x414FA339u);
}

static bool is_b62(char c)
{
    return memchr(ids_base62_alphabet, c, 62) != NULL;
}

static void test_new_ids(void)
{
    const int64_t now = 1761669918; /* 2025-10-28T16:45:18Z, "001vDmow" */
    char id[IDS_KEY_ID_LEN + 1], id2[IDS_KEY_ID_LEN + 1];
    char sec[IDS_SECRET_LEN + 1], sec2[IDS_SECRET_LEN + 1];

    CHECK_INT(ids_new_key_id(now, id), 0);
    CHECK_INT(strlen(id), IDS_KEY_ID_LEN);
    CHECK_INT(IDS_KEY_ID_LEN, 23);
    CHECK(strncmp(id, "key_0001vDmow", 13) == 0);
    for (size_t i = 4; i < IDS_KEY_ID_LEN; i++)
        CHECK(is_b62(id[i]));
    CHECK(ids_is_key_id(id));
    CHECK_INT(ids_new_key_id(now, id2), 0);
    CHECK(strcmp(id, id2) != 0);

    CHECK_INT(ids_new_secret(now, sec), 0);
    CHECK_INT(strlen(sec), IDS_SECRET_LEN);
    CHECK_INT(IDS_SECRET_LEN, 43);
    CHECK(strncmp(sec, "sec_1001vDmow", 13) == 0);
    for (size_t i = 4; i < IDS_SECRET_LEN; i++)
        CHECK(is_b62(sec[i]));
    CHECK_INT(ids_check_presented(sec, strlen(sec)), 0);
    CHECK_INT(ids_new_secret(now, sec2), 0);
    CHECK(strcmp(sec, sec2) != 0);

    /* The checksum is the CRC32 of the 37 characters before it. */
    char want[IDS_CHECKSUM_LEN];
    CHECK_INT(ids_base62_encode(ids_crc32(sec, 37), IDS_CHECKSUM_LEN, want), 0);
    CHECK(memcmp(want, sec + 37, IDS_CHECKSUM_LEN) == 0);

    CHECK_INT(ids_new_key_id(-1, id), -ERANGE);
    CHECK_INT(ids_new_secret(218340105584896ll, sec), -ERANGE);
}

/* Any one-character change after "sec_1" must be caught by the base62 check or the CRC
 * (CRC32 detects every single-byte error). Changes inside "sec_1" turn it into another
 * shape, which goes to the lookup. */
static void test_single_changes(void)
{
    static const char others[] = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
    char sec[IDS_SECRET_LEN + 1];

    for (int round = 0; round < 20; round++) {
        CHECK_INT(ids_new_secret(1761669918 + round, sec), 0);
        for (size_t pos = 5; pos < IDS_SECRET_LEN; pos++) {
            char orig = sec[pos];
            for (size_t k = 0; k < 62 + strlen(others); k++) {
                char c = k < 62 ? ids_base62_alphabet[k] : others[k - 62];
                if (c == orig)
                    continue;
                sec[pos] = c;
                if (ids_check_presented(sec, IDS_SECRET_LEN) != -EINVAL) {
                    fprintf(stderr, "change at %zu to '%c' not caught\n", pos, c);
                    exit(1);
                }
            }
            sec[pos] = orig;
        }
        CHECK_INT(ids_check_presented(sec, IDS_SECRET_LEN), 0);
        /* One character dropped or added. */
        CHECK_INT(ids_check_presented(sec, IDS_SECRET_LEN - 1), -EINVAL);
        char longer[IDS_SECRET_LEN + 2];
        memcpy(longer, sec, IDS_SECRET_LEN);
        longer[IDS_SECRET_LEN] = 'a';
        CHECK_INT(ids_check_presented(longer, IDS_SECRET_LEN + 1), -EINVAL);
    }
}

static void test_presented_table(void)
{
    char good[IDS_SECRET_LEN + 1];
    CHECK_INT(ids_new_secret(1761669918, good), 0);

    char bad_crc[IDS_SECRET_LEN + 1];
    memcpy(bad_crc, good, sizeof(bad_crc));
    bad_crc[IDS_SECRET_LEN - 1] = bad_crc[IDS_SECRET_LEN - 1] == 'a' ? 'b' : 'a';

    char bad_char[IDS_SECRET_LEN + 1];
    memcpy(bad_char, good, sizeof(bad_char));
    bad_char[20] = '-';

    static char long513[513], long512[512];
    memset(long513, 'a', sizeof(long513));
    for (size_t i = 0; i < sizeof(long512); i++)
        long512[i] = (char)(0x21 + i % (0x7f - 0x21));

    const struct {
        const char *name;
        const char *key;
        size_t len;
        int want;
    } cases[] = {
        {"empty", "", 0, -EINVAL},
        {"513 bytes", long513, 513, -EINVAL},
        {"space", "sec_0001 vDmowg2tzwvpaFL", 24, -EINVAL},
        {"leading space", " hello", 6, -EINVAL},
        {"tab", "hello\tworld", 11, -EINVAL},
        {"newline", "hello\n", 6, -EINVAL},
        {"NUL", "hel\0lo", 6, -EINVAL},
        {"0x7f", "hello\x7f", 6, -EINVAL},
        {"0x80", "hello\x80", 6, -EINVAL},
        {"0xff", "\xff", 1, -EINVAL},
        {"sec_1 short", "sec_1001vDmow", 13, -EINVAL},
        {"sec_1 alone", "sec_1", 5, -EINVAL},
        {"bad checksum", bad_crc, IDS_SECRET_LEN, -EINVAL},
        {"non-base62 char", bad_char, IDS_SECRET_LEN, -EINVAL},
        {"generated", good, IDS_SECRET_LEN, 0},
        {"legacy sample", "sec_0001vDmowg2tzwvpaFL", 23, 0},
        {"512 printable bytes", long512, 512, 0},
        {"hello", "hello", 5, 0},
        {"one char", "x", 1, 0},
        {"sec_ alone", "sec_", 4, 0},
        {"sec_2 shape", "sec_2001vDmowg2tzwvpaFL", 23, 0},
        {"key id", "key_0001vDmowdgLBqEcDYe", 23, 0},
    };

    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        int r = ids_check_presented(cases[i].key, cases[i].len);
        if (r != cases[i].want) {
            fprintf(stderr, "case '%s': got %d, expected %d\n", cases[i].name, r, cases[i].want);
            exit(1);
        }
    }
    CHECK_INT(ids_check_presented(NULL, 3), -EINVAL);
}

static void test_is_key_id(void)
{
    static char k64[4 + 64 + 1], k65[4 + 65 + 1];
    memcpy(k64, "key_", 4);
    memset(k64 + 4, 'A', 64);
    memcpy(k65, "key_", 4);
    memset(k65 + 4, 'A', 65);

    CHECK(ids_is_key_id("key_0001vDmowdgLBqEcDYe"));
    CHECK(ids_is_key_id("key_a"));
    CHECK(ids_is_key_id(k64));
    CHECK(!ids_is_key_id(k65));
    CHECK(!ids_is_key_id("key_"));
    CHECK(!ids_is_key_id("key"));
    CHECK(!ids_is_key_id(""));
    CHECK(!ids_is_key_id(NULL));
    CHECK(!ids_is_key_id("Key_abc"));
    CHECK(!ids_is_key_id("sec_abc"));
    CHECK(!ids_is_key_id("key_ab-c"));
    CHECK(!ids_is_key_id("key_abc "));
    CHECK(!ids_is_key_id("key_ab/c"));
}

static void test_uniformity(void)
{
    enum { N = 620000 };
    static char buf[N];
    size_t count[62] = {0};

    CHECK_INT(ids_random_base62(buf, N), 0);
    for (size_t i = 0; i < N; i++) {
        const char *p = memchr(ids_base62_alphabet, buf[i], 62);
        CHECK(p != NULL);
        count[p - ids_base62_alphabet]++;
    }
    for (size_t k = 0; k < 62; k++) {
        if (count[k] < 9000 || count[k] > 11000) {
            fprintf(stderr, "symbol '%c' drawn %zu times of %d\n", ids_base62_alphabet[k], count[k],
                    N);
            exit(1);
        }
    }
    CHECK_INT(ids_random_base62(buf, 0), 0);
}

int main(void)
{
    test_base62();
    test_crc32();
    test_new_ids();
    test_single_changes();
    test_presented_table();
    test_is_key_id();
    test_uniformity();
    return 0;
}
